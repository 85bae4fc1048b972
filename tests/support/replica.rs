//! The real server binary as a child process on a database and a plugins
//! directory the test chooses, so several replicas can share them (SPEC
//! §12), and signalled as an orchestrator does: `SIGTERM`, `SIGINT`,
//! `SIGKILL`. Each replica has its own data directory (staging, download
//! cache), as replicas do.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::{Child, Command};

use super::docker::require_docker;

pub const ADMIN_TOKEN: &str = "replica-admin-token-0123456789abcdef";

/// One server process, killed when dropped.
pub struct Replica {
    child: Child,
    pub addr: String,
    pub base: String,
    pub client: reqwest::Client,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// The binary with no `PLUGIN_*`, `DATABASE_URL` or `PLUGINS_DIR` of the
/// test's environment.
fn command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_workspace-plugins"));
    for (key, _) in std::env::vars() {
        if key.starts_with("PLUGIN_") || key == "DATABASE_URL" || key == "PLUGINS_DIR" {
            cmd.env_remove(key);
        }
    }
    cmd.env("NO_COLOR", "1").env("RUST_LOG", "info");
    cmd
}

/// Runs the binary with `settings` and returns how it ended and its
/// stderr, for settings that must stop start-up.
pub async fn refused_start(settings: &[(&str, &str)]) -> (ExitStatus, String) {
    let out = command()
        .envs(settings.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run the workspace-plugins binary");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Replica {
    /// Starts a replica on `database_url` and `plugins_dir` with extra
    /// `settings`, and waits until `/readyz` answers 200.
    pub async fn start(database_url: &str, plugins_dir: &Path, settings: &[(&str, &str)]) -> Self {
        require_docker();
        let dir = tempfile::tempdir().expect("replica temp dir");
        let log = dir.path().join("server.log");
        let file = std::fs::File::create(&log).expect("log file");
        let addr = format!("127.0.0.1:{}", free_port());
        let child = command()
            .env("PLUGIN_LISTEN", &addr)
            .env("PLUGIN_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("PLUGIN_DATA_DIR", dir.path().join("data"))
            .env("DATABASE_URL", database_url)
            .env("PLUGINS_DIR", plugins_dir)
            .envs(settings.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the workspace-plugins binary");
        let mut replica = Self {
            child,
            base: format!("http://{addr}"),
            addr,
            client: reqwest::Client::new(),
            log,
            _dir: dir,
        };
        replica.wait_ready().await;
        replica
    }

    async fn wait_ready(&mut self) {
        let Self {
            child,
            client,
            base,
            log,
            ..
        } = self;
        super::wait_until_ready(
            client,
            base,
            || child.try_wait().ok().flatten(),
            || std::fs::read_to_string(&*log).unwrap_or_default(),
        )
        .await;
    }

    /// Sends `signal` (`TERM`, `INT`, `KILL`) to the server process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the server is running");
        let status = std::process::Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {signal} {pid} failed");
    }

    /// How the process ended; fails the test if it is still running after
    /// `limit`.
    pub async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("wait for the server"),
            Err(_) => panic!(
                "the server was still running {limit:?} later:\n{}",
                self.log()
            ),
        }
    }

    /// Whether a new TCP connection to the server is refused.
    pub async fn refuses_connections(&self) -> bool {
        tokio::net::TcpStream::connect(&self.addr).await.is_err()
    }

    /// Polls until new connections are refused: the server closed its
    /// listener.
    pub async fn wait_refusing(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.refuses_connections().await {
            assert!(
                Instant::now() < deadline,
                "connections were still accepted {limit:?} later:\n{}",
                self.log()
            );
            // Polls the listener's closing: the signal is handled
            // asynchronously, and nothing announces it but the socket.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An admin request with an optional JSON body: the status and the
    /// JSON answer (`Null` when there is none).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request to the server");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates workspace `id` on `container`.
    pub async fn put_workspace(&self, id: &str, container: &str) {
        let (status, body) = self
            .admin(
                reqwest::Method::PUT,
                &format!("/workspaces/{id}"),
                Some(serde_json::json!({
                    "name": id, "runtime": "claude_code", "container": container
                })),
            )
            .await;
        assert!(matches!(status, 200 | 201), "{status} {body}");
    }
}
