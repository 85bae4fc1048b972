//! The real Docker engine for tests: the test image (built once per test
//! process by `scripts/test-image.sh`), throwaway containers removed on
//! drop even when a test panics, and [`EngineProxy`], a loopback TCP proxy
//! in front of the engine that forwards, stalls or cuts connections to
//! inject engine faults.
//!
//! Verification goes through the `docker` CLI, not the adapter under test.
//! Never stop or restart the engine itself: other tests share it.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::task::{JoinHandle, JoinSet};
use workspace_plugins::adapters::docker::DockerEngine;
use workspace_plugins::domain::workspace::ContainerName;

const HOW_TO_START: &str = "start it with `bash scripts/services.sh` (or `bash scripts/docker.sh`), \
     or point DOCKER_HOST at a running engine";

/// `DOCKER_HOST` as the tests see it (unset or empty: the default socket).
pub fn docker_host() -> Option<String> {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.trim().is_empty())
}

/// The image test containers run (see `scripts/test-image.sh`).
pub fn test_image() -> String {
    std::env::var("WP_TEST_IMAGE").unwrap_or_else(|_| "workspace-plugins-test:busybox".to_owned())
}

/// Fails the test, saying how to start it, when the engine is not
/// reachable; otherwise makes sure the test image exists (once per
/// process). Tests needing Docker call this first: they never skip.
pub fn require_docker() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let info = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .output()
            .map_err(|e| format!("cannot run the docker CLI ({e}); {HOW_TO_START}"))?;
        if !info.status.success() {
            return Err(format!(
                "the Docker engine is not reachable: {}; {HOW_TO_START}",
                String::from_utf8_lossy(&info.stderr).trim()
            ));
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test-image.sh");
        let built = Command::new("bash")
            .arg(script)
            .output()
            .map_err(|e| format!("cannot run {script}: {e}"))?;
        if !built.status.success() {
            return Err(format!(
                "{script} failed: {}",
                String::from_utf8_lossy(&built.stderr).trim()
            ));
        }
        Ok(())
    });
    if let Err(message) = ready {
        panic!("{message}");
    }
}

/// The adapter on the engine the CLI uses, with a generous call timeout
/// (the test machine is shared).
pub fn engine() -> DockerEngine {
    require_docker();
    DockerEngine::new(docker_host().as_deref(), Duration::from_secs(30)).expect("docker engine")
}

/// Runs the docker CLI; panics with its stderr when it fails.
pub fn docker(args: &[&str]) -> String {
    let out = docker_output(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
}

pub fn docker_output(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker CLI")
}

/// A uniquely named container of the test image, removed (`docker rm -f`)
/// when dropped, panics included.
pub struct TestContainer {
    pub name: String,
    pub id: String,
}

impl TestContainer {
    /// A running container.
    pub fn running() -> Self {
        Self::create(&[], true)
    }

    /// A container that was created but never started.
    pub fn created() -> Self {
        Self::create(&[], false)
    }

    /// A container with extra `docker create` options (e.g. `--user 0`).
    pub fn create(options: &[&str], start: bool) -> Self {
        require_docker();
        let name = unique_name();
        let image = test_image();
        let mut args = vec![
            "create",
            "--name",
            &name,
            "--label",
            "workspace-plugins-test=1",
        ];
        args.extend_from_slice(options);
        args.push(&image);
        let id = docker(&args);
        let container = Self { name, id };
        if start {
            docker(&["start", &container.name]);
        }
        container
    }

    pub fn container_name(&self) -> ContainerName {
        ContainerName::parse(&self.name).expect("valid container name")
    }

    /// `docker exec` as root; the raw output.
    pub fn exec_output(&self, argv: &[&str]) -> Output {
        let mut args = vec!["exec", "-u", "0", self.name.as_str()];
        args.extend_from_slice(argv);
        docker_output(&args)
    }

    /// Runs a shell script as the agent (`1000:1000`), as a hostile agent
    /// would; the raw output.
    pub fn exec_agent(&self, script: &str) -> Output {
        docker_output(&[
            "exec",
            "-u",
            "1000:1000",
            self.name.as_str(),
            "sh",
            "-c",
            script,
        ])
    }

    /// Runs a constant shell script as root; its stdout, panicking on failure.
    pub fn sh(&self, script: &str) -> String {
        let out = self.exec_output(&["sh", "-c", script]);
        assert!(
            out.status.success(),
            "{script:?} failed in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    /// A file's bytes, read with `cat` through the CLI.
    pub fn cat(&self, path: &str) -> Vec<u8> {
        let out = self.exec_output(&["cat", path]);
        assert!(out.status.success(), "cat {path} failed");
        out.stdout
    }

    /// `docker inspect --format`.
    pub fn inspect(&self, format: &str) -> String {
        docker(&["inspect", "--format", format, &self.name])
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.name])
            .output();
    }
}

/// `wp-test-<random>`: a name no other test (or test run) uses.
pub fn unique_name() -> String {
    format!("wp-test-{:016x}", rand::random::<u64>())
}

/// What an [`EngineProxy`] does with each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forwards both ways, unchanged.
    Forward,
    /// Accepts and reads, never connects upstream, never answers.
    Stall,
    /// Forwards, but cuts the connection (both ways) once this many bytes
    /// of the request (client to engine) have gone through on it. Small
    /// calls pass, a large upload breaks mid-stream.
    DropAfter(usize),
    /// Forwards, but once this many request bytes have gone through on a
    /// connection, swallows the rest and never answers: an engine that
    /// stops answering mid-upload.
    StallAfter(usize),
}

/// A TCP proxy on 127.0.0.1 in front of the engine the CLI uses: point a
/// `DockerEngine` at [`EngineProxy::docker_host`]. Dropping it stops the
/// listener and cuts every connection.
pub struct EngineProxy {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl EngineProxy {
    pub async fn start(mode: ProxyMode) -> Self {
        let upstream = Upstream::from_docker_host(docker_host().as_deref());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            // Connection tasks live in this set, so aborting the accept
            // task (on drop) aborts them too.
            let mut tasks = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((client, _)) = accepted else { continue };
                        counter.fetch_add(1, Ordering::SeqCst);
                        tasks.spawn(serve(client, upstream.clone(), mode));
                    }
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                }
            }
        });
        Self {
            addr,
            connections,
            task,
        }
    }

    /// `tcp://127.0.0.1:<port>`, for `DOCKER_HOST` or `DockerEngine::new`.
    pub fn docker_host(&self) -> String {
        format!("tcp://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug, Clone)]
enum Upstream {
    Unix(PathBuf),
    Tcp(String),
}

impl Upstream {
    fn from_docker_host(host: Option<&str>) -> Self {
        match host {
            None => Self::Unix(PathBuf::from("/var/run/docker.sock")),
            Some(h) => {
                if let Some(path) = h.strip_prefix("unix://") {
                    Self::Unix(PathBuf::from(path))
                } else if let Some(addr) = h
                    .strip_prefix("tcp://")
                    .or_else(|| h.strip_prefix("http://"))
                {
                    Self::Tcp(addr.trim_end_matches('/').to_owned())
                } else {
                    panic!("EngineProxy cannot forward to DOCKER_HOST={h:?}")
                }
            }
        }
    }

    async fn connect(&self) -> io::Result<Box<dyn Io>> {
        Ok(match self {
            Self::Unix(path) => Box::new(UnixStream::connect(path).await?),
            Self::Tcp(addr) => Box::new(TcpStream::connect(addr).await?),
        })
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn serve(mut client: TcpStream, upstream: Upstream, mode: ProxyMode) {
    match mode {
        ProxyMode::Stall => {
            // Read (so the client's writes never block) and never answer.
            let _ = tokio::io::copy(&mut client, &mut tokio::io::sink()).await;
        }
        ProxyMode::Forward => {
            let Ok(mut engine) = upstream.connect().await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
        }
        ProxyMode::DropAfter(limit) => {
            let Ok(engine) = upstream.connect().await else {
                return;
            };
            let limit = limit as u64;
            let (mut client_read, mut client_write) = client.into_split();
            let (mut engine_read, mut engine_write) = tokio::io::split(engine);
            let down = tokio::io::copy(&mut engine_read, &mut client_write);
            let mut limited = (&mut client_read).take(limit);
            let up = tokio::io::copy(&mut limited, &mut engine_write);
            tokio::pin!(down, up);
            tokio::select! {
                sent = &mut up => {
                    // Under the limit: the client finished sending; let the
                    // answer through. At the limit: return, dropping (and so
                    // closing) both connections.
                    if sent.unwrap_or(limit) < limit {
                        let _ = (&mut down).await;
                    }
                }
                _ = &mut down => {}
            }
        }
        ProxyMode::StallAfter(limit) => {
            let Ok(engine) = upstream.connect().await else {
                return;
            };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut engine_read, mut engine_write) = tokio::io::split(engine);
            // Both directions live in this task, so dropping the proxy
            // (which aborts it) closes the engine connection too.
            let down = tokio::io::copy(&mut engine_read, &mut client_write);
            let up = async {
                let mut sent = 0usize;
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match client_read.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if sent + n > limit {
                        // Swallow what the client still sends; answer nothing.
                        let _ = tokio::io::copy(&mut client_read, &mut tokio::io::sink()).await;
                        std::future::pending::<()>().await;
                    }
                    if engine_write.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    sent += n;
                }
            };
            tokio::pin!(down, up);
            tokio::select! {
                () = &mut up => { let _ = (&mut down).await; }
                _ = &mut down => {}
            }
        }
    }
}
