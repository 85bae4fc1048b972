//! Harness for the hostile-container corpus
//! (`tests/api/hostile_container/README.md`) and the soak (`tests/api/soak.rs`):
//! the real server binary as a child process (so its memory is read from
//! `/proc/<pid>/status`), a generated local registry, and probes run inside
//! a workspace container through the docker CLI, never through the adapter
//! under test: a digest of the filesystem outside `/configs`, the entries
//! under `/configs` not owned by the agent, the tree of an installed plugin,
//! and loops the agent runs while an operation is in flight.
//!
//! The checks pin the contract's invariants (SPEC §6 "The workspace
//! container is untrusted"), not a mechanism: they look at the container
//! and at the answer only.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use super::docker::{EngineProxy, ProxyMode, TestContainer, require_docker};

pub const ADMIN_TOKEN: &str = "hostile-container-admin-token-0123456789";
/// The agent's uid:gid (SPEC §1).
pub const AGENT: &str = "1000:1000";
pub const ROOT: &str = "0";

/// The real `workspace-plugins` binary on a free loopback port, its own
/// temp data directory and SQLite database, killed when dropped.
pub struct Server {
    child: std::process::Child,
    pub base: String,
    pub client: reqwest::Client,
    /// RSS right after start-up and a warm-up round (see [`Server::warm_up`]).
    pub baseline_kib: u64,
    /// The engine proxy the server talks through, when it counts connections.
    proxy: Option<EngineProxy>,
    dir: tempfile::TempDir,
}

/// The server's open-file limit (production services run with limits of
/// this order). It keeps a server that opens one engine connection per
/// directory from exhausting the shared engine's own descriptors, which
/// other tests and sessions use.
const SERVER_NOFILE: u32 = 4096;

/// `VmRSS` and `VmHWM` of a process, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

impl Server {
    /// Starts the server with `PLUGINS_DIR=plugins_dir` and `settings`
    /// (SPEC §9 environment variables; every other `PLUGIN_*` variable of
    /// the test's environment is removed), waits for `/readyz`, then warms
    /// it up and records its baseline RSS. With `count_engine_connections`
    /// the server reaches the engine through an [`EngineProxy`], so
    /// [`Server::engine_connections`] counts what it opened.
    pub async fn start(
        plugins_dir: &Path,
        settings: &[(&str, &str)],
        count_engine_connections: bool,
    ) -> Self {
        require_docker();
        let dir = tempfile::tempdir().expect("server temp dir");
        let data_dir = dir.path().join("data");
        std::fs::create_dir(&data_dir).expect("data dir");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let port = free_port();
        let proxy = if count_engine_connections {
            Some(EngineProxy::start(ProxyMode::Forward).await)
        } else {
            None
        };
        // `exec` keeps the pid: /proc/<pid> is the server's. A hard limit
        // below ours is lower still, so a refused `ulimit` is fine.
        let mut cmd = std::process::Command::new("sh");
        cmd.args([
            "-c",
            &format!("ulimit -n {SERVER_NOFILE} 2>/dev/null; exec \"$0\""),
            env!("CARGO_BIN_EXE_workspace-plugins"),
        ]);
        for (key, _) in std::env::vars() {
            if key.starts_with("PLUGIN_") || key == "DATABASE_URL" || key == "PLUGINS_DIR" {
                cmd.env_remove(key);
            }
        }
        cmd.env("PLUGIN_LISTEN", format!("127.0.0.1:{port}"))
            .env("PLUGIN_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("PLUGIN_DATA_DIR", &data_dir)
            .env(
                "DATABASE_URL",
                format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("plugins.db").display()
                ),
            )
            .env("PLUGINS_DIR", plugins_dir)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .envs(settings.iter().copied())
            .envs(proxy.as_ref().map(|p| ("DOCKER_HOST", p.docker_host())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        let child = cmd.spawn().expect("spawn the workspace-plugins binary");
        let mut server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            baseline_kib: 0,
            proxy,
            dir,
        };
        server.wait_ready().await;
        server.warm_up().await;
        server.baseline_kib = server.memory().rss_kib;
        server
    }

    async fn wait_ready(&mut self) {
        let log = self.dir.path().join("server.log");
        let Self {
            child,
            client,
            base,
            ..
        } = self;
        super::wait_until_ready(
            client,
            base,
            || child.try_wait().ok().flatten(),
            || tail_of(&log, 40),
        )
        .await;
    }

    /// One round of the code paths every case uses (auth, the store, the
    /// engine, staging and packing), so lazily built state is not counted
    /// as a case's growth.
    async fn warm_up(&self) {
        self.put_workspace("warm-up", "wp-test-no-such-container")
            .await
            .expect("warm-up workspace");
        for path in [
            "/workspaces/warm-up/plugins",
            "/plugins",
            "/workspaces/warm-up/plugins/demo/download",
        ] {
            let _ = self
                .client
                .get(format!("{}{path}", self.base))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .and_then(|r| r.error_for_status());
        }
    }

    /// Engine connections the server opened so far (0 without a proxy).
    pub fn engine_connections(&self) -> usize {
        self.proxy.as_ref().map_or(0, EngineProxy::connections)
    }

    pub fn counts_engine_connections(&self) -> bool {
        self.proxy.is_some()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn memory(&self) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read the server's /proc status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        Memory {
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
        }
    }

    /// Resets the kernel's RSS high-water mark, so the next `VmHWM` is the
    /// peak of what follows (only meaningful when nothing else runs).
    pub fn reset_peak(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5")
            .expect("reset the server's VmHWM");
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail_of(&self.dir.path().join("server.log"), lines)
    }

    /// `PUT /workspaces/:id` bound to `container` (runtime `claude_code`).
    pub async fn put_workspace(&self, id: &str, container: &str) -> Result<(), String> {
        let resp = self
            .client
            .put(format!("{}/workspaces/{id}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"name": id, "runtime": "claude_code", "container": container}))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| format!("PUT /workspaces/{id}: {e}"))?;
        match resp.status().as_u16() {
            200 | 201 => Ok(()),
            s => Err(format!(
                "PUT /workspaces/{id}: {s} {}",
                resp.text().await.unwrap_or_default()
            )),
        }
    }

    /// Runs `op` on `workspace` as the admin; `Err` when no answer came
    /// within `limit`.
    pub async fn call(&self, workspace: &str, op: &Op, limit: Duration) -> Result<Answer, String> {
        let url = format!("{}{}", self.base, op.path(workspace));
        let request = match op {
            Op::Install(name) => self
                .client
                .post(url)
                .json(&json!({ "source": format!("local://{name}") })),
            Op::Uninstall(_) => self.client.delete(url),
            Op::List | Op::Compatibility(_) | Op::Download(_) => self.client.get(url),
        };
        let started = Instant::now();
        let resp = request
            .bearer_auth(ADMIN_TOKEN)
            .timeout(limit)
            .send()
            .await
            .map_err(|e| format!("{op}: no answer within {limit:?} ({e})"))?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header("retry-after");
        let content_type = header("content-type");
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("{op}: body cut within {limit:?} ({e})"))?
            .to_vec();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            json,
            body,
            retry_after,
            content_type,
            elapsed: started.elapsed(),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGKILL: pending restarts (of containers already removed) must
        // not run at shutdown.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An operation on a container workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `POST /workspaces/:id/plugins` with `local://<name>`.
    Install(String),
    /// `DELETE /workspaces/:id/plugins/<name>`.
    Uninstall(String),
    /// `GET /workspaces/:id/plugins`.
    List,
    /// `GET /workspaces/:id/plugins/compatibility?runtime=<runtime>`.
    Compatibility(String),
    /// `GET /workspaces/:id/plugins/<name>/download`.
    Download(String),
}

impl Op {
    pub fn install(name: &str) -> Self {
        Self::Install(name.to_owned())
    }
    pub fn uninstall(name: &str) -> Self {
        Self::Uninstall(name.to_owned())
    }
    pub fn compatibility(runtime: &str) -> Self {
        Self::Compatibility(runtime.to_owned())
    }
    pub fn download(name: &str) -> Self {
        Self::Download(name.to_owned())
    }

    pub fn path(&self, workspace: &str) -> String {
        let base = format!("/workspaces/{workspace}/plugins");
        match self {
            Self::Install(_) | Self::List => base,
            Self::Uninstall(name) => format!("{base}/{name}"),
            Self::Compatibility(runtime) => format!("{base}/compatibility?runtime={runtime}"),
            Self::Download(name) => format!("{base}/{name}/download"),
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Install(name) => write!(f, "install {name}"),
            Self::Uninstall(name) => write!(f, "uninstall {name}"),
            Self::List => write!(f, "listing"),
            Self::Compatibility(runtime) => write!(f, "compatibility {runtime}"),
            Self::Download(name) => write!(f, "download {name}"),
        }
    }
}

/// What the server answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub json: Value,
    pub body: Vec<u8>,
    pub retry_after: Option<String>,
    pub content_type: Option<String>,
    pub elapsed: Duration,
}

impl Answer {
    pub fn error(&self) -> Option<&str> {
        self.json["error"].as_str()
    }

    /// `<status> <error or status field>`, for reports.
    pub fn summary(&self) -> String {
        let what = self
            .error()
            .or_else(|| self.json["status"].as_str())
            .unwrap_or("");
        format!("{} {what}", self.status)
    }
}

/// Whether `answer` is one the contract allows for `op` (SPEC §5, §6):
/// a 2xx of the route's shape, or a 4xx/5xx with the route's message.
/// A 503 must carry `Retry-After`. A deadline on uninstall is issue 10's
/// ("uninstall has an overall deadline like install"); its 504 wording
/// mirrors install's.
pub fn spec_answer(op: &Op, answer: &Answer) -> Result<(), String> {
    let error = answer.error();
    let j = &answer.json;
    let allowed = match (answer.status, op) {
        (200, Op::Install(name)) => {
            matches!(j["status"].as_str(), Some("installed" | "unchanged")) && j["plugin"] == **name
        }
        (200, Op::Uninstall(name)) => j["status"] == "uninstalled" && j["plugin"] == **name,
        (200, Op::List) => j.as_array().is_some_and(|plugins| {
            plugins
                .iter()
                .all(|p| p["name"].is_string() && p["supported_on_runtime"].is_boolean())
        }),
        (200, Op::Compatibility(_)) => {
            j["compatible"].is_array()
                && j["incompatible"].is_array()
                && j["all_compatible"].is_boolean()
        }
        (200, Op::Download(_)) => {
            answer.content_type.as_deref() == Some("application/gzip")
                && answer.body.starts_with(&[0x1f, 0x8b])
        }
        (404, Op::Uninstall(name)) => {
            error == Some(format!("plugin \"{name}\" is not installed").as_str())
        }
        (500, Op::Install(_)) => error == Some("failed to copy plugin to container"),
        (500, Op::Uninstall(_)) => error == Some("failed to remove plugin"),
        (500, Op::List | Op::Compatibility(_)) => error == Some("failed to list installed plugins"),
        (503, Op::Install(_) | Op::Uninstall(_) | Op::List | Op::Compatibility(_)) => {
            matches!(
                error,
                Some("workspace container not running" | "container engine unavailable")
            ) && answer.retry_after.is_some()
        }
        (504, Op::Install(_)) => error == Some("plugin install timed out"),
        (504, Op::Uninstall(_)) => error == Some("plugin uninstall timed out"),
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        let body = String::from_utf8_lossy(&answer.body[..answer.body.len().min(300)]).into_owned();
        Err(format!(
            "{op}: {} {body} (Retry-After: {:?}) is not an answer SPEC §5 allows for this route",
            answer.status, answer.retry_after
        ))
    }
}

/// Runs `script` with `sh -c` in `container` as `user`, with `args` as
/// `$1…`; its stdout, or an error with stderr and the exit status.
pub async fn exec(
    container: &str,
    user: &str,
    script: &str,
    args: &[&str],
) -> Result<String, String> {
    let out = Command::new("docker")
        .args(["exec", "-u", user, container, "sh", "-c", script, "sh"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run docker exec: {e}"))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let code = out.status.code();
    let hint = if matches!(code, Some(126 | 127)) {
        " (the container's /bin/sh could not run: was /bin deleted?)"
    } else {
        ""
    };
    Err(format!(
        "exit {code:?}{hint}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// Every entry outside `/configs` (`/proc`, `/sys`, `/dev` excluded) with
/// its mode and owner, and for non-directories its size, mtime and link
/// target, then every regular file's sha256. Run as root with the
/// container's own busybox. A directory's mtime is left out: the engine's
/// own archive upload (`docker cp`) touches `/`, and what changes a
/// directory (an entry added, removed or renamed) shows as its own line.
const DIGEST_SCRIPT: &str = r#"set -e
skip='-path /proc -o -path /sys -o -path /dev -o -path /configs'
find / \( $skip \) -prune -o -type d -exec stat -c '%n|%f|%u:%g' {} + | sort
find / \( $skip \) -prune -o ! -type d -exec stat -c '%n|%f|%u:%g|%s|%Y|%N' {} + | sort
find / \( $skip \) -prune -o -type f -exec sha256sum {} + | sort
"#;

/// The filesystem outside `/configs`, one line per fact (see
/// [`DIGEST_SCRIPT`]), so a change can be shown as a diff.
pub async fn outside_configs(container: &str) -> Result<Vec<String>, String> {
    let text = exec(container, ROOT, DIGEST_SCRIPT, &[])
        .await
        .map_err(|e| format!("digest of the filesystem outside /configs failed: {e}"))?;
    Ok(text.lines().map(str::to_owned).collect())
}

/// Lines only in `before` (`-`) and only in `after` (`+`), at most `max`.
pub fn diff(before: &[String], after: &[String], max: usize) -> String {
    let b: BTreeSet<&String> = before.iter().collect();
    let a: BTreeSet<&String> = after.iter().collect();
    let mut out = String::new();
    let changes = b
        .difference(&a)
        .map(|l| ('-', l))
        .chain(a.difference(&b).map(|l| ('+', l)));
    for (n, (sign, line)) in changes.enumerate() {
        if n == max {
            out.push_str("\n  …");
            break;
        }
        let _ = write!(out, "\n  {sign} {line}");
    }
    out
}

/// Entries under `/configs` (not following a symlinked `/configs`) whose
/// owner is not `1000:1000`, keyed by `inode|uid:gid` (so a file that was
/// only moved, e.g. a root-owned leftover renamed aside with its plugin
/// directory, is not new), each with its path.
pub async fn foreign_owned(container: &str) -> Result<BTreeMap<String, String>, String> {
    let script =
        r#"find /configs \( ! -user 1000 -o ! -group 1000 \) -exec stat -c '%i|%u:%g %n' {} +"#;
    let text = exec(container, ROOT, script, &[])
        .await
        .map_err(|e| format!("owner scan of /configs failed: {e}"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(key, path)| (key.to_owned(), path.to_owned()))
        .collect())
}

/// A tree as `relative path -> sha256` for regular files, `dir` for
/// directories and `other` for anything else (paths start with `./`).
pub type Tree = BTreeMap<String, String>;

/// The tree at `dir` in the container (as root), and `foreign` entries
/// not owned by 1000:1000. Errors when `/configs`, `/configs/plugins` or
/// `dir` is a symlink or `dir` is not a directory.
pub async fn container_tree(container: &str, dir: &str) -> Result<(Tree, Vec<String>), String> {
    let script = r#"set -e
for p in /configs /configs/plugins "$1"; do
  if [ -L "$p" ]; then echo "$p is a symlink" >&2; exit 3; fi
done
cd "$1"
find . -type f -exec sha256sum {} +
find . -type d -exec printf 'dir  %s\n' {} +
find . ! -type f ! -type d -exec printf 'other  %s\n' {} +
find . \( ! -user 1000 -o ! -group 1000 \) -exec printf 'foreign  %s\n' {} +
"#;
    let text = exec(container, ROOT, script, &[dir])
        .await
        .map_err(|e| format!("reading {dir}: {e}"))?;
    let mut tree = Tree::new();
    let mut foreign = Vec::new();
    for line in text.lines() {
        let Some((kind, path)) = line.split_once("  ") else {
            continue;
        };
        match kind {
            "foreign" => foreign.push(path.to_owned()),
            _ => {
                tree.insert(path.to_owned(), kind.to_owned());
            }
        }
    }
    Ok((tree, foreign))
}

/// The same listing for a local directory.
pub fn local_tree(dir: &Path) -> Tree {
    fn walk(root: &Path, rel: &str, tree: &mut Tree) {
        tree.insert(rel.to_owned(), "dir".to_owned());
        for entry in std::fs::read_dir(root.join(rel)).expect("read registry dir") {
            let entry = entry.expect("registry entry");
            let child = format!("{rel}/{}", entry.file_name().to_string_lossy());
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                walk(root, &child, tree);
            } else if kind.is_file() {
                let bytes = std::fs::read(root.join(&child)).expect("read registry file");
                tree.insert(child, hex::encode(Sha256::digest(&bytes)));
            } else {
                tree.insert(child, "other".to_owned());
            }
        }
    }
    let mut tree = Tree::new();
    walk(dir, ".", &mut tree);
    tree
}

/// The `h1:` digest (SPEC §4 step 9) of a local plugin directory,
/// computed here independently of the service.
pub fn h1_digest(dir: &Path) -> String {
    use base64::Engine as _;
    let mut lines: Vec<(String, String)> = local_tree(dir)
        .into_iter()
        .filter(|(_, kind)| kind != "dir" && kind != "other")
        .map(|(path, sha)| (path.trim_start_matches("./").to_owned(), sha))
        .filter(|(path, _)| path != "manifest.json")
        .collect();
    lines.sort();
    let mut hasher = Sha256::new();
    for (path, sha) in &lines {
        hasher.update(format!("{sha}  {path}\n"));
    }
    format!(
        "h1:{}",
        base64::engine::general_purpose::STANDARD.encode(hasher.finalize())
    )
}

/// Writes plugin `name` into a registry directory.
pub fn write_plugin(registry: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let root = registry.join(name);
    for (rel, content) in files {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("plugin dir");
        std::fs::write(path, content).expect("plugin file");
    }
    root
}

/// A loop the agent runs in the container (as 1000:1000) while an
/// operation is in flight. Its body adds one to `$swapped` each time it
/// put its symlink in place, so a loop whose swaps all failed is seen.
/// Started after one full iteration; stopped by a flag file, so the loop
/// ends after a whole iteration.
pub struct Race {
    child: Child,
    stdout: BufReader<ChildStdout>,
    container: String,
    swapped_before: u64,
}

/// What a race loop did while the operation ran.
#[derive(Debug, Clone, Copy)]
pub struct RaceCount {
    pub iterations: u64,
    pub swaps: u64,
}

const RACE_STOP: &str = "/configs/.race-stop";

impl Race {
    pub async fn start(container: &str, body: &str) -> Result<Self, String> {
        let script = format!(
            "rm -f {RACE_STOP}\nswapped=0\n{{ {body}\n}} 2>/dev/null\necho \"started $swapped\"\n\
             n=0\nwhile [ ! -e {RACE_STOP} ]; do\n{{ {body}\n}} 2>/dev/null\nn=$((n+1))\ndone\n\
             echo \"$n $swapped\"\n"
        );
        let mut child = Command::new("docker")
            .args(["exec", "-u", AGENT, container, "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the race loop: {e}"))?;
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(20), stdout.read_line(&mut line)).await;
        match (read, line.trim().strip_prefix("started ")) {
            (Ok(Ok(_)), Some(swapped)) => Ok(Self {
                child,
                stdout,
                container: container.to_owned(),
                swapped_before: swapped.parse().unwrap_or(0),
            }),
            (other, _) => Err(format!("the race loop did not start: {other:?} {line:?}")),
        }
    }

    /// Stops the loop; what it did since it started.
    pub async fn stop(mut self) -> Result<RaceCount, String> {
        exec(&self.container, AGENT, "touch \"$1\"", &[RACE_STOP])
            .await
            .map_err(|e| format!("cannot stop the race loop: {e}"))?;
        let mut rest = String::new();
        let read = tokio::time::timeout(
            Duration::from_secs(20),
            self.stdout.read_to_string(&mut rest),
        )
        .await;
        let _ = self.child.kill().await;
        if !matches!(read, Ok(Ok(_))) {
            return Err(format!("the race loop did not stop: {read:?}"));
        }
        let mut numbers = rest.split_whitespace().map(str::parse::<u64>);
        match (numbers.next(), numbers.next()) {
            (Some(Ok(iterations)), Some(Ok(swapped))) => Ok(RaceCount {
                iterations,
                swaps: swapped.saturating_sub(self.swapped_before),
            }),
            _ => Err(format!("the race loop printed {rest:?}")),
        }
    }
}

/// One corpus case: what the agent (and, for what a runtime could leave,
/// root) does in a fresh container before the operation, and what it keeps
/// doing during it.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: &'static str,
    pub op: Op,
    /// Plugins installed through the service before anything else.
    pub preinstall: Vec<String>,
    /// Scripts run in order, each under `set -e`, as `(user, script)`:
    /// the agent (1000:1000), or root for what a runtime could leave.
    pub steps: Vec<(&'static str, String)>,
    /// The body of a loop the agent runs during the operation.
    pub race: Option<String>,
    /// `/configs` on a tmpfs volume (huge trees: fast to make and remove).
    pub tmpfs_configs: bool,
    /// The status the contract fixes for this case, beyond the route's set.
    pub expect: Option<u16>,
}

impl Case {
    pub fn new(name: &'static str, op: Op) -> Self {
        Self {
            name,
            op,
            preinstall: Vec::new(),
            steps: Vec::new(),
            race: None,
            tmpfs_configs: false,
            expect: None,
        }
    }
    pub fn preinstall(mut self, plugin: &str) -> Self {
        self.preinstall.push(plugin.to_owned());
        self
    }
    /// A setup script run as the agent.
    pub fn agent(mut self, script: &str) -> Self {
        self.steps.push((AGENT, script.to_owned()));
        self
    }
    /// A setup script run as root.
    pub fn root(mut self, script: &str) -> Self {
        self.steps.push((ROOT, script.to_owned()));
        self
    }
    pub fn race(mut self, body: &str) -> Self {
        self.race = Some(body.to_owned());
        self
    }
    pub fn tmpfs_configs(mut self) -> Self {
        self.tmpfs_configs = true;
        self
    }
    pub fn expect(mut self, status: u16) -> Self {
        self.expect = Some(status);
        self
    }
}

/// The bounds every case is held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The operation's deadline (the server runs with it).
    pub deadline: Duration,
    /// Slack for answering after the deadline fired.
    pub margin: Duration,
    /// Allowed RSS growth of the server.
    pub rss_growth_kib: u64,
    /// Engine connections one operation may open (servers behind a proxy).
    pub engine_connections: usize,
}

/// What a case did and which invariants it broke.
#[derive(Debug)]
pub struct Outcome {
    pub name: &'static str,
    pub op: Op,
    pub answer: Option<String>,
    pub elapsed: Option<Duration>,
    pub growth_kib: u64,
    pub engine_connections: Option<usize>,
    pub race: Option<RaceCount>,
    pub problems: Vec<String>,
}

const TMPFS_CONFIGS: &str = "type=volume,dst=/configs,volume-driver=local,\
volume-opt=type=tmpfs,volume-opt=device=tmpfs,\
\"volume-opt=o=size=2g,uid=1000,gid=1000,mode=0755\"";

/// Cases that share one server.
pub struct Group<'a> {
    pub server: &'a Server,
    /// The registry the server serves (to compare installed trees with).
    pub registry: &'a Path,
    /// Nothing else runs on the server during a case: the RSS peak is
    /// reset before the operation and read after it. Otherwise the peak is
    /// compared with the server's baseline, a bound on all concurrent
    /// cases at once.
    pub exclusive: bool,
    pub limits: Limits,
}

impl Group<'_> {
    /// Runs one case on a fresh container bound to workspace `workspace`.
    pub async fn run(&self, case: &Case, workspace: &str) -> Outcome {
        let tmpfs = case.tmpfs_configs;
        let container = tokio::task::spawn_blocking(move || {
            if tmpfs {
                TestContainer::create(&["--mount", TMPFS_CONFIGS], true)
            } else {
                TestContainer::running()
            }
        })
        .await
        .expect("create the container");
        let mut outcome = Outcome {
            name: case.name,
            op: case.op.clone(),
            answer: None,
            elapsed: None,
            growth_kib: 0,
            engine_connections: None,
            race: None,
            problems: Vec::new(),
        };
        if let Err(problem) = self
            .run_in(case, workspace, &container.name, &mut outcome)
            .await
        {
            outcome.problems.push(problem);
        }
        // `docker rm` blocks; keep it off the async workers.
        tokio::task::spawn_blocking(move || drop(container))
            .await
            .expect("remove the container");
        outcome
    }

    async fn run_in(
        &self,
        case: &Case,
        workspace: &str,
        container: &str,
        outcome: &mut Outcome,
    ) -> Result<(), String> {
        let server = self.server;
        let limits = self.limits;
        server.put_workspace(workspace, container).await?;
        if case.tmpfs_configs {
            exec(
                container,
                AGENT,
                "mkdir /configs/plugins /configs/skills",
                &[],
            )
            .await
            .map_err(|e| format!("setup: {e}"))?;
        }
        for plugin in &case.preinstall {
            let op = Op::Install(plugin.clone());
            let answer = server.call(workspace, &op, Duration::from_secs(60)).await?;
            if answer.status != 200 {
                return Err(format!("setup: {op} answered {}", answer.summary()));
            }
        }
        for (user, script) in &case.steps {
            exec(container, user, &format!("set -e\n{script}"), &[])
                .await
                .map_err(|e| format!("setup as {user}: {script:?}: {e}"))?;
        }
        let outside_before = outside_configs(container).await?;
        let owned_before = foreign_owned(container).await?;

        let race = match &case.race {
            Some(body) => Some(Race::start(container, body).await?),
            None => None,
        };
        if self.exclusive {
            server.reset_peak();
        }
        let rss_before = server.memory().rss_kib;
        let connections_before = server.engine_connections();
        let called = server
            .call(workspace, &case.op, limits.deadline + limits.margin)
            .await;
        let memory = server.memory();
        let connections = server.engine_connections() - connections_before;
        if let Some(race) = race {
            match race.stop().await {
                Ok(count) => {
                    outcome.race = Some(count);
                    if count.swaps == 0 {
                        outcome.problems.push(
                            "the race loop never put its symlink in place during the operation"
                                .to_owned(),
                        );
                    }
                }
                Err(e) => outcome.problems.push(e),
            }
        }

        let base = if self.exclusive {
            rss_before
        } else {
            server.baseline_kib
        };
        outcome.growth_kib = memory.hwm_kib.saturating_sub(base);
        if outcome.growth_kib >= limits.rss_growth_kib {
            outcome.problems.push(format!(
                "the server's RSS grew by {} MiB (peak {} MiB over {} MiB{})",
                outcome.growth_kib / 1024,
                memory.hwm_kib / 1024,
                base / 1024,
                if self.exclusive {
                    ""
                } else {
                    ", with this group's cases running concurrently"
                }
            ));
        }
        if server.counts_engine_connections() {
            outcome.engine_connections = Some(connections);
            if connections > limits.engine_connections {
                outcome.problems.push(format!(
                    "the operation opened {connections} engine connections (bound: {})",
                    limits.engine_connections
                ));
            }
        }

        match &called {
            Ok(answer) => {
                outcome.answer = Some(answer.summary());
                outcome.elapsed = Some(answer.elapsed);
                if answer.elapsed >= limits.deadline + limits.margin {
                    outcome.problems.push(format!(
                        "answered after {:?}, past the deadline {:?} + {:?}",
                        answer.elapsed, limits.deadline, limits.margin
                    ));
                }
                if let Err(e) = spec_answer(&case.op, answer) {
                    outcome.problems.push(e);
                }
                if let Some(expected) = case.expect
                    && answer.status != expected
                {
                    outcome
                        .problems
                        .push(format!("expected {expected}, got {}", answer.summary()));
                }
            }
            Err(e) => outcome.problems.push(e.clone()),
        }

        match outside_configs(container).await {
            Ok(after) if after == outside_before => {}
            Ok(after) => outcome.problems.push(format!(
                "the filesystem outside /configs changed:{}",
                diff(&outside_before, &after, 12)
            )),
            Err(e) => outcome.problems.push(e),
        }
        match foreign_owned(container).await {
            Ok(after) => {
                let new: Vec<String> = after
                    .iter()
                    .filter(|(key, _)| !owned_before.contains_key(*key))
                    .take(12)
                    .map(|(key, path)| format!("{path} ({})", key.split('|').nth(1).unwrap_or("")))
                    .collect();
                if !new.is_empty() {
                    outcome.problems.push(format!(
                        "entries under /configs now owned by someone other than 1000:1000: {new:?}"
                    ));
                }
            }
            Err(e) => outcome.problems.push(e),
        }
        // A race loop leaves the paths it swaps in whatever state it
        // stopped in, so what a 200 claims is checked only without one.
        if case.race.is_none()
            && let Ok(answer) = &called
        {
            check_effect(self.registry, case, answer, container, outcome).await;
        }
        Ok(())
    }
}

/// What a 200 claims must be true in the container: an install put the
/// registry's tree in place, owned by the agent, in a real directory; an
/// uninstall left no plugin directory behind.
async fn check_effect(
    registry: &Path,
    case: &Case,
    answer: &Answer,
    container: &str,
    outcome: &mut Outcome,
) {
    if answer.status != 200 {
        return;
    }
    match &case.op {
        Op::Install(name) if answer.json["status"] == "installed" => {
            let dir = format!("/configs/plugins/{name}");
            match container_tree(container, &dir).await {
                Ok((tree, foreign)) => {
                    if tree != local_tree(&registry.join(name)) {
                        outcome.problems.push(format!(
                            "answered installed, but {dir} differs from the registry's copy: \
                             {tree:?}"
                        ));
                    }
                    if !foreign.is_empty() {
                        outcome.problems.push(format!(
                            "installed files not owned by 1000:1000: {foreign:?}"
                        ));
                    }
                }
                Err(e) => outcome
                    .problems
                    .push(format!("answered installed, but {e}")),
            }
        }
        Op::Uninstall(name) => {
            let script =
                r#"p="/configs/plugins/$1"; if [ -e "$p" ] || [ -L "$p" ]; then echo present; fi"#;
            match exec(container, ROOT, script, &[name]).await {
                Ok(out) if out.trim().is_empty() => {}
                Ok(_) => outcome.problems.push(format!(
                    "answered uninstalled, but /configs/plugins/{name} is still there"
                )),
                Err(e) => outcome
                    .problems
                    .push(format!("checking the uninstall: {e}")),
            }
        }
        _ => {}
    }
}

/// Prints one line per case and panics listing every broken invariant.
pub fn report(group: &str, outcomes: &[Outcome], server: &Server) {
    eprintln!("== {group}");
    for o in outcomes {
        eprintln!(
            "{:<58} {:<22} {:<40} {:>7} {:>4} MiB{}{}{}",
            o.name,
            o.op.to_string(),
            o.answer.as_deref().unwrap_or("(no answer)"),
            o.elapsed
                .map(|d| format!("{:.2}s", d.as_secs_f64()))
                .unwrap_or_default(),
            o.growth_kib / 1024,
            o.engine_connections
                .map(|n| format!("  conn×{n}"))
                .unwrap_or_default(),
            o.race
                .map(|r| format!("  race: {} swaps in {} loops", r.swaps, r.iterations))
                .unwrap_or_default(),
            if o.problems.is_empty() {
                ""
            } else {
                "  FAILED"
            },
        );
    }
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.problems.is_empty())
        .map(|o| format!("{} ({}):\n  - {}", o.name, o.op, o.problems.join("\n  - ")))
        .collect();
    assert!(
        failed.is_empty(),
        "{group}: {} of {} cases broke an invariant:\n{}\n--- server log (tail) ---\n{}",
        failed.len(),
        outcomes.len(),
        failed.join("\n"),
        server.log_tail(30)
    );
}

/// The last `lines` lines of the log at `path` (read from its last 64 KiB).
fn tail_of(path: &std::path::Path, lines: usize) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
