//! What the benches share: the real server binary started as its own
//! process (so its memory can be read from /proc), nginx on loopback, the
//! wait for the registry index to settle, timing with `curl` and `wrk`,
//! and the spread of several rounds.
//!
//! Each bench declares it `pub mod common`: its public items are the
//! benches' shared library, not linted per bench (as in `tests/support`).
//! Every tool a bench needs is checked up front with [`require_tools`]: a
//! missing one fails the bench, it never skips a row.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN: &str = "bench-admin-token-0123456789";

/// Panics naming every tool of `tools` that is not an executable on PATH.
pub fn require_tools(tools: &[&str]) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| {
            !dirs.iter().any(|dir| {
                std::fs::metadata(dir.join(tool)).is_ok_and(|m| {
                    m.is_file()
                        && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
                })
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "this bench needs {missing:?} on PATH (e.g. `apt-get install {}`); it measures nothing without them",
        missing.join(" ")
    );
}

/// `BENCH_<name>` parsed, else `default`; a value that does not parse
/// fails the bench rather than silently measuring something else.
pub fn env_knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(raw) => raw
            .parse()
            .unwrap_or_else(|_| panic!("{name}={raw:?} does not parse")),
        Err(_) => default,
    }
}

/// How long a plugin waits between being written and its first
/// download: `BENCH_SETTLE_MS`, default 2500 (as benches/install.rs).
pub fn settle_ms() -> u64 {
    env_knob("BENCH_SETTLE_MS", 2500)
}

/// The machine's load average as `/proc/loadavg` gives it (1, 5, 15 min).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS:`, `VmHWM:`).
pub fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real server binary on a free loopback port with its own data
/// directory; killed on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
    spawned: Instant,
}

impl Server {
    /// Starts the server on `plugins` with `env` added to the bench's
    /// defaults, and waits until `/healthz` answers.
    pub fn start(data: &Path, plugins: &Path, env: &[(&str, String)]) -> Self {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_workspace-plugins"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PLUGIN_LISTEN", format!("127.0.0.1:{port}"))
            .env("PLUGIN_DATA_DIR", data)
            .env("PLUGINS_DIR", plugins)
            .env("PLUGIN_ADMIN_TOKEN", ADMIN)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (key, value) in env {
            cmd.env(key, value);
        }
        let spawned = Instant::now();
        let child = cmd.spawn().expect("server binary");
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            spawned,
        };
        server.wait_ready();
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if get(&format!("{}/healthz", self.base), &[]).is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("server at {} did not start", self.base);
    }

    /// Registers workspace `id` with `runtime` through the admin API.
    pub fn register_workspace(&self, id: &str, runtime: &str) {
        let body = serde_json::json!({"name": id, "runtime": runtime}).to_string();
        let out = Command::new("curl")
            .args(["-sf", "-o", "/dev/null", "-X", "PUT", "-H"])
            .arg(format!("Authorization: Bearer {ADMIN}"))
            .args(["-d", &body])
            .arg(format!("{}/workspaces/{id}", self.base))
            .status()
            .unwrap();
        assert!(out.success(), "PUT /workspaces/{id} failed");
    }

    /// Issues a token to workspace `id` (admin) and returns its secret.
    pub fn issue_token(&self, id: &str) -> String {
        let out = Command::new("curl")
            .args(["-sf", "-X", "POST", "-H"])
            .arg(format!("Authorization: Bearer {ADMIN}"))
            .arg(format!("{}/workspaces/{id}/tokens", self.base))
            .output()
            .unwrap();
        assert!(out.status.success(), "POST /workspaces/{id}/tokens failed");
        let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        body["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {body}"))
            .to_owned()
    }

    /// Waits until the registry index has settled: `/metrics` reports
    /// `plugin_registry_plugins` = `plugins` and
    /// `plugin_registry_prepack_pending` = 0. Returns how long after the
    /// process was started it was seen settled.
    /// Fails after `BENCH_SETTLE_TIMEOUT_S` (default 180) naming the gauge
    /// that is missing or off.
    pub fn wait_settled(&self, plugins: usize) -> Duration {
        let timeout = Duration::from_secs(env_knob("BENCH_SETTLE_TIMEOUT_S", 180));
        let started = Instant::now();
        loop {
            let text = get(&format!("{}/metrics", self.base), &[]).unwrap_or_default();
            let indexed = gauge(&text, "plugin_registry_plugins");
            let pending = gauge(&text, "plugin_registry_prepack_pending");
            if indexed == Some(plugins as f64) && pending == Some(0.0) {
                return self.spawned.elapsed();
            }
            if started.elapsed() > timeout {
                let show =
                    |v: Option<f64>| v.map_or("absent from /metrics".to_owned(), |v| v.to_string());
                panic!(
                    "the registry index did not settle within {timeout:?} \
                     (BENCH_SETTLE_TIMEOUT_S): plugin_registry_plugins is {} (want {plugins}), \
                     plugin_registry_prepack_pending is {} (want 0); both are gauges of issue 13's index",
                    show(indexed),
                    show(pending)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of an unlabelled gauge in Prometheus text, if present.
pub fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
}

/// The body of a successful GET, or `None`.
pub fn get(url: &str, headers: &[&str]) -> Option<String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sf", "--max-time", "10"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Times `curl` fetching `url` to /dev/null with the admin token.
pub fn curl(url: &str, headers: &[&str]) -> Duration {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sf",
        "-o",
        "/dev/null",
        "-H",
        &format!("Authorization: Bearer {ADMIN}"),
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let started = Instant::now();
    let status = cmd.arg(url).status().unwrap();
    assert!(status.success(), "curl {url}");
    started.elapsed()
}

/// Times `script` run by bash (process substitution needs bash).
pub fn shell(script: &str) -> Duration {
    let started = Instant::now();
    let status = Command::new("bash")
        .args(["-o", "pipefail", "-c", script])
        .status()
        .unwrap();
    assert!(status.success(), "{script}");
    started.elapsed()
}

/// nginx on a free loopback port serving `root`; stopped on drop.
pub struct Nginx {
    pub port: u16,
    child: Child,
    _conf_dir: tempfile::TempDir,
}

impl Nginx {
    pub fn serve(root: &Path) -> Self {
        let conf_dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = format!(
            "daemon off; worker_processes 1; pid {pid}; error_log {log} warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{ access_log off; sendfile on; server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n",
            pid = conf_dir.path().join("nginx.pid").display(),
            log = conf_dir.path().join("error.log").display(),
            root = root.display(),
        );
        let conf_path = conf_dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("nginx")
            .args(["-p", &conf_dir.path().display().to_string(), "-c"])
            .arg(&conf_path)
            // Its workers would hold a pipe on the bench's output open.
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            port,
            child,
            _conf_dir: conf_dir,
        }
    }

    /// The URL of `file` (under the served root).
    pub fn url(&self, file: &str) -> String {
        format!("http://127.0.0.1:{}/{file}", self.port)
    }
}

impl Drop for Nginx {
    /// SIGTERM, not SIGKILL: the master then stops its worker, which a
    /// killed master would leave running.
    fn drop(&mut self) {
        // The child is not waited for yet, so its pid is still ours.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Several rounds of one measure: the median and the whole range, never
/// the best round alone.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(samples: impl IntoIterator<Item = f64>) -> Self {
        let mut v: Vec<f64> = samples.into_iter().collect();
        assert!(!v.is_empty(), "a spread of no samples");
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len().is_multiple_of(2) {
            (v[mid - 1] + v[mid]) / 2.0
        } else {
            v[mid]
        };
        Self {
            min: v[0],
            median,
            max: v[v.len() - 1],
        }
    }

    pub fn of_secs(samples: &[Duration]) -> Self {
        Self::of(samples.iter().map(Duration::as_secs_f64))
    }

    /// `median (min–max)`, each formatted by `f`.
    pub fn show(&self, f: impl Fn(f64) -> String) -> String {
        format!("{} ({}–{})", f(self.median), f(self.min), f(self.max))
    }
}

/// The ratio `reference / ours` round by round (both lists in the same
/// order, one pair per round): > 1 means faster than the reference.
pub fn ratios(ours: &[Duration], reference: &[Duration]) -> Spread {
    assert_eq!(ours.len(), reference.len());
    Spread::of(
        ours.iter()
            .zip(reference)
            .map(|(o, r)| r.as_secs_f64() / o.as_secs_f64()),
    )
}
