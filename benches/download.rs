//! Download benchmarks (issue 6), against the real server binary run as
//! its own process so its memory can be read from /proc:
//!
//!     cargo bench --bench download
//!
//! Needs `tar`, `gzip`, `zstd` and (for the nginx row) `nginx` on PATH.
//! Prints a Markdown table for benches/RESULTS.md; every row is a ratio
//! measured in this one run on the same 100 MiB plugin.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "bench-admin-token-0123456789";
const PLUGIN: &str = "big";
const SIZE: usize = 100 << 20;

/// 100 MiB in 64 files: half pseudo-random, half repetitive text, so both
/// compressors have real work.
fn write_plugin(root: &Path) {
    let dir = root.join(PLUGIN);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("plugin.yaml"), "version: 1.0.0\n").unwrap();
    let per_file = SIZE / 64;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for i in 0..64 {
        let mut bytes = Vec::with_capacity(per_file);
        if i % 2 == 0 {
            while bytes.len() < per_file {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                bytes.extend_from_slice(&state.to_le_bytes());
            }
        } else {
            while bytes.len() < per_file {
                bytes.extend_from_slice(
                    format!(
                        "line {} of a plugin rule file, fairly ordinary text\n",
                        bytes.len()
                    )
                    .as_bytes(),
                );
            }
        }
        bytes.truncate(per_file);
        std::fs::write(dir.join(format!("data/part-{i:02}")), bytes).unwrap();
    }
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_ready(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(out) = Command::new("curl")
            .args(["-sf", &format!("{base}/healthz")])
            .output()
            && out.status.success()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("server at {base} did not start");
}

/// Times `curl` fetching `url` to /dev/null (bytes counted, nothing kept).
fn curl(url: &str, headers: &[&str]) -> Duration {
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

fn shell(script: &str) -> Duration {
    let started = Instant::now();
    let status = Command::new("sh").args(["-c", script]).status().unwrap();
    assert!(status.success(), "{script}");
    started.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(data: &Path, plugins: &Path) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_workspace-plugins"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PLUGIN_LISTEN", format!("127.0.0.1:{port}"))
        .env("PLUGIN_DATA_DIR", data)
        .env("PLUGINS_DIR", plugins)
        .env("PLUGIN_ADMIN_TOKEN", ADMIN)
        // A 100 MiB plugin is just over the default cap.
        .env("PLUGIN_INSTALL_MAX_DIR_BYTES", (2 * SIZE).to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server binary");
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base);
    Server { child, base }
}

/// nginx on a free loopback port serving `root`; stopped on drop.
struct Nginx {
    port: u16,
    child: Child,
    _conf_dir: tempfile::TempDir,
}

impl Nginx {
    fn serve(root: &Path) -> Self {
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
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        Self {
            port,
            child,
            _conf_dir: conf_dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    let plugins = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    write_plugin(plugins.path());
    let server = start_server(data.path(), plugins.path());
    let pid = server.child.id();
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss_kib(pid, "VmRSS:");
    let put = Command::new("curl")
        .args([
            "-sf",
            "-o",
            "/dev/null",
            "-X",
            "PUT",
            "-H",
            &format!("Authorization: Bearer {ADMIN}"),
            "-d",
            r#"{"name":"bench","runtime":"external"}"#,
        ])
        .arg(format!("{}/workspaces/bench", server.base))
        .status()
        .unwrap();
    assert!(put.success());
    let url = format!("{}/workspaces/bench/plugins/{PLUGIN}/download", server.base);
    let zst_url = format!("{url}?format=tar.zst");

    // First downloads of never-seen content: a rewritten manifest gives the
    // directory a new fingerprint, an emptied cache forces a pack; so each
    // round stages (copy + hash), packs and streams.
    let cache_dir = data.path().join("cache");
    let clear_cache = |ext: &str| {
        for entry in std::fs::read_dir(&cache_dir).unwrap() {
            let path = entry.unwrap().path();
            if path.to_string_lossy().ends_with(ext) {
                std::fs::remove_file(path).unwrap();
            }
        }
    };
    let never_seen = |url: &str| {
        let manifest = plugins.path().join(PLUGIN).join("plugin.yaml");
        std::fs::write(&manifest, std::fs::read(&manifest).unwrap()).unwrap();
        clear_cache(".tar.gz");
        clear_cache(".tar.zst");
        curl(url, &[])
    };
    let first_gz = median((0..3).map(|_| never_seen(&url)).collect());
    let first_zst = median((0..3).map(|_| never_seen(&zst_url)).collect());
    // An unchanged plugin in a format not packed yet: no copy, no re-hash
    // (the directory's fingerprint vouches for its digest), pack + stream.
    curl(&url, &[]);
    let new_format_zst = median(
        (0..5)
            .map(|_| {
                clear_cache(".tar.zst");
                curl(&zst_url, &[])
            })
            .collect(),
    );
    // The same work on the command line: tar and compress the tree.
    let dir = plugins.path().display().to_string();
    let cli_gz = median(
        (0..3)
            .map(|_| {
                shell(&format!(
                    "tar -C {dir}/{PLUGIN} -cf - . | gzip -1 > /dev/null"
                ))
            })
            .collect(),
    );
    let cli_zst = median(
        (0..3)
            .map(|_| {
                shell(&format!(
                    "tar -C {dir}/{PLUGIN} -cf - . | zstd -1 -q > /dev/null"
                ))
            })
            .collect(),
    );
    // Cached downloads, and nginx serving the same cached tarball from
    // disk: samples taken in turns, so drift in machine load hits both.
    let cache_file = std::fs::read_dir(data.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .expect("cached archive");
    let nginx = Command::new("nginx")
        .arg("-v")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| Nginx::serve(cache_file.parent().unwrap()));
    let file_url = nginx.as_ref().map(|n| {
        format!(
            "http://127.0.0.1:{}/{}",
            n.port,
            cache_file.file_name().unwrap().to_string_lossy()
        )
    });
    let mut cached = Vec::new();
    let mut served = Vec::new();
    for _ in 0..15 {
        cached.push(curl(&url, &[]));
        if let Some(file_url) = &file_url {
            served.push(curl(file_url, &[]));
        }
    }
    let cached_gz = median(cached);
    let nginx_row = nginx.map(|_| median(served));
    // Every policy check, no body: what each download costs before its
    // first byte.
    let etag_of = {
        let out = Command::new("curl")
            .args(["-sf", "-o", "/dev/null", "-D", "-", "-H"])
            .arg(format!("Authorization: Bearer {ADMIN}"))
            .arg(&url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| {
                l.strip_prefix("etag: ")
                    .or_else(|| l.strip_prefix("ETag: "))
            })
            .expect("an ETag")
            .trim()
            .to_owned()
    };
    let if_none_match = format!("If-None-Match: {etag_of}");
    let status = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {ADMIN}"))
        .args(["-H", &if_none_match])
        .arg(&url)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&status.stdout),
        "304",
        "the revalidation row must time a 304, not a download"
    );
    let revalidated = median((0..15).map(|_| curl(&url, &[&if_none_match])).collect());

    // 64 concurrent cached downloads; peak RSS over the run.
    // Reset the kernel's high-water mark so the peak is this burst's, not
    // the packing rounds' above.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before_burst = rss_kib(pid, "VmHWM:");
    let children: Vec<Child> = (0..64)
        .map(|_| {
            Command::new("curl")
                .args([
                    "-sf",
                    "-o",
                    "/dev/null",
                    "-H",
                    &format!("Authorization: Bearer {ADMIN}"),
                ])
                .arg(&url)
                .spawn()
                .unwrap()
        })
        .collect();
    let mut peak = 0;
    let mut children = children;
    while children.iter_mut().any(|c| c.try_wait().unwrap().is_none()) {
        peak = peak.max(rss_kib(pid, "VmRSS:"));
        std::thread::sleep(Duration::from_millis(20));
    }
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let peak = peak.max(rss_kib(pid, "VmHWM:")).max(before_burst);

    let mib = |d: Duration| SIZE as f64 / (1 << 20) as f64 / d.as_secs_f64();
    println!("| measure | this service | reference | ratio | goal |");
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| first download, tar.gz (stage + pack + stream) vs `tar -c \\| gzip -1` | {} ({:.0} MiB/s) | {} | {:.2}× | ≥ 0.9× |",
        secs(first_gz),
        mib(first_gz),
        secs(cli_gz),
        cli_gz.as_secs_f64() / first_gz.as_secs_f64()
    );
    println!(
        "| tar.zst of an unchanged plugin, not yet packed (pack + stream) vs `tar -c \\| zstd -1` | {} ({:.0} MiB/s) | {} | {:.2}× | ≥ 0.9× |",
        secs(new_format_zst),
        mib(new_format_zst),
        secs(cli_zst),
        cli_zst.as_secs_f64() / new_format_zst.as_secs_f64()
    );
    println!(
        "| first download, tar.zst (stage + pack + stream) vs `tar -c \\| zstd -1` | {} ({:.0} MiB/s) | {} | {:.2}× | ≥ 0.9× |",
        secs(first_zst),
        mib(first_zst),
        secs(cli_zst),
        cli_zst.as_secs_f64() / first_zst.as_secs_f64()
    );
    println!(
        "| cached vs first download (tar.gz) | {} | {} | {:.1}× faster | ≥ 10× |",
        secs(cached_gz),
        secs(first_gz),
        first_gz.as_secs_f64() / cached_gz.as_secs_f64()
    );
    println!(
        "| 304 revalidation (auth, every policy check, no body) | {} | | | |",
        secs(revalidated)
    );
    match nginx_row {
        Some(n) => println!(
            "| cached download vs nginx serving the same file | {} | {} | {:.2}× | ≥ 0.8× |",
            secs(cached_gz),
            secs(n),
            n.as_secs_f64() / cached_gz.as_secs_f64()
        ),
        None => println!(
            "| cached download vs nginx | not measured: nginx not installed | | | ≥ 0.8× |"
        ),
    }
    println!(
        "| peak RSS during 64 concurrent downloads, above idle | {} MiB ({} MiB above idle when the burst began) | | | ≤ 64 MiB |",
        peak.saturating_sub(idle) / 1024,
        before_burst.saturating_sub(idle) / 1024
    );
    println!(
        "| idle RSS | {:.1} MiB | | | ≤ 30 MiB |",
        idle as f64 / 1024.0
    );
    println!("\nrerun: cargo bench --bench download");
}
