//! The Docker engine adapter: [`DockerEngine`] implements the
//! [`ContainerEngine`] port with bollard. Invariant: no bollard type leaves
//! this module; engine errors become the port's meaning-level variants here.
//!
//! Every call is bounded by the call timeout (SPEC §5 "Engine calls"). A
//! call that runs out, or cannot reach the engine at all, is `Unavailable`
//! (and `state` answers `Unknown`): callers must never mistake it for a
//! stopped container (SPEC §6).
//!
//! Ownership of copied files comes from the tar headers, which the engine
//! keeps when extracting as root. The archive endpoint's `copyUIDGID`
//! option is deliberately not used: despite its name it makes the engine
//! chown every entry to the container's configured `User` (moby
//! `daemon/archive_tarcopyoptions_unix.go`), so a container configured to
//! run as root would get root-owned plugin files.
//!
//! API version: bollard 0.21 joins each absolute request path onto its
//! versioned base URL, which drops the `/v1.xx` prefix, so requests are
//! unversioned and the engine answers in its own current version. That is
//! why no version negotiation is done (bollard's `negotiate_version` sends
//! `/v1.53/version`, which an older engine such as 20.10 refuses). The
//! fields read here (state flags, exec exit codes, archives) are stable
//! across engine versions.

mod archive;

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, RestartContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt;

use self::archive::SingleFileError;
use crate::domain::workspace::ContainerName;
use crate::ports::container::{
    ContainerEngine, ContainerFile, ContainerState, EngineError, ExecOutput, ReadFileError,
};

/// The engine's socket when no `DOCKER_HOST` is given.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// How much of each exec output stream is kept; the rest is drained and
/// dropped so the process is never blocked on a full pipe.
const EXEC_OUTPUT_CAP: usize = 1024 * 1024;
/// The stop timeout of a restart (capped at half the call timeout, so the
/// restart still fits in the call).
const RESTART_STOP_SECS: u64 = 5;
/// The user execs run as: root, so removals work whoever owns the files.
const EXEC_USER: &str = "0";

/// A [`ContainerEngine`] backed by a Docker (or Docker-compatible) engine.
pub struct DockerEngine {
    host: Host,
    call_timeout: Duration,
    /// Connected on first use: a local socket that does not exist yet (the
    /// engine starts after the service) is an unavailable engine, not a
    /// start-up failure.
    client: OnceLock<Docker>,
}

#[derive(Debug, Clone)]
enum Host {
    Unix(String),
    Http(String),
}

impl fmt::Debug for DockerEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerEngine")
            .field("host", &self.host)
            .field("call_timeout", &self.call_timeout)
            .finish()
    }
}

impl DockerEngine {
    /// An engine at `docker_host` (`unix://<path>`, `tcp://<host>:<port>` or
    /// `http://<host>:<port>`; `None` or empty: the local default socket).
    /// Nothing is contacted here; an unreachable engine shows up on the
    /// first call as `Unavailable`.
    ///
    /// Errors: `Other` for an unsupported address or a zero timeout.
    pub fn new(docker_host: Option<&str>, call_timeout: Duration) -> Result<Self, EngineError> {
        if call_timeout.is_zero() {
            return Err(other("the engine call timeout must be positive"));
        }
        let host = match docker_host.map(str::trim).filter(|h| !h.is_empty()) {
            None => Host::Unix(DEFAULT_SOCKET.to_owned()),
            Some(h) => {
                if let Some(path) = h.strip_prefix("unix://").filter(|p| !p.is_empty()) {
                    Host::Unix(path.to_owned())
                } else if ["tcp://", "http://"]
                    .iter()
                    .any(|s| h.strip_prefix(s).is_some_and(|rest| !rest.is_empty()))
                {
                    Host::Http(h.to_owned())
                } else {
                    return Err(other(format!(
                        "unsupported DOCKER_HOST {h:?} (use unix:///path/to/docker.sock, \
                         tcp://host:port or http://host:port)"
                    )));
                }
            }
        };
        Ok(Self {
            host,
            call_timeout,
            client: OnceLock::new(),
        })
    }

    fn client(&self) -> Result<Docker, EngineError> {
        if let Some(client) = self.client.get() {
            return Ok(client.clone());
        }
        // bollard's own per-request timeout is whole seconds; keep it past
        // ours so ours is the one that fires.
        let secs = self.call_timeout.as_secs() + 1;
        let connected = match &self.host {
            Host::Unix(path) => Docker::connect_with_unix(path, secs, bollard::API_DEFAULT_VERSION),
            Host::Http(addr) => Docker::connect_with_http(addr, secs, bollard::API_DEFAULT_VERSION),
        };
        let client = connected.map_err(|e| engine_error("connecting", e))?;
        Ok(self.client.get_or_init(|| client).clone())
    }

    /// Runs one engine call under the call timeout.
    async fn bounded<T, E, F>(&self, what: &'static str, call: F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
        E: From<EngineError>,
    {
        match tokio::time::timeout(self.call_timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(EngineError::Unavailable(Box::new(Failure(format!(
                "{what}: no answer within {:?}",
                self.call_timeout
            ))))
            .into()),
        }
    }

    async fn inspect_state(&self, name: &str) -> Result<ContainerState, EngineError> {
        let docker = self.client()?;
        let inspected = match docker.inspect_container(name, None).await {
            Ok(inspected) => inspected,
            Err(e) if status(&e) == Some(404) => {
                tracing::debug!(container = name, "no such container; stopped");
                return Ok(ContainerState::Stopped);
            }
            Err(e) => return Err(engine_error("inspecting container", e)),
        };
        let state = inspected.state.unwrap_or_default();
        // Paused and restarting containers report Running too, but nothing
        // can be done inside them now.
        let running = state.running == Some(true)
            && state.paused != Some(true)
            && state.restarting != Some(true);
        match (running, inspected.id) {
            (true, Some(id)) => Ok(ContainerState::Running { id }),
            (true, None) => Err(other("engine reported a running container without an id")),
            (false, _) => {
                tracing::debug!(
                    container = name,
                    status = ?state.status,
                    "container not running; stopped"
                );
                Ok(ContainerState::Stopped)
            }
        }
    }

    async fn upload_tree(
        &self,
        container_id: &str,
        local_dir: &Path,
        dest_dir: &str,
    ) -> Result<(), EngineError> {
        let (parent, name) = split_dest(dest_dir)?;
        let docker = self.client()?;
        let root = local_dir.to_owned();
        // Planning only reads metadata, but a large tree is still disk I/O:
        // keep it off the async workers. It refuses symlinks and special
        // files before anything reaches the engine.
        let entries =
            tokio::task::spawn_blocking(move || crate::adapters::tartree::plan_tree(&root))
                .await
                .map_err(|e| other(format!("planning the copy: {e}")))?
                .map_err(|e| EngineError::Other(Box::new(e)))?;
        let tree = archive::stream_tree_tar(local_dir.to_owned(), name.to_owned(), entries, now());
        let options = UploadToContainerOptionsBuilder::default()
            .path(parent)
            .no_overwrite_dir_non_dir("true")
            .build();
        let uploaded = docker
            .upload_to_container(
                container_id,
                Some(options),
                bollard::body_try_stream(tree.body),
            )
            .await;
        // A failing tar writer aborts the body, which the engine sees as a
        // broken upload: report the writer's error, the real cause.
        if let Some(cause) = tree.failure.get() {
            return Err(other(format!("packing {}: {cause}", local_dir.display())));
        }
        uploaded.map_err(|e| engine_error("uploading archive", e))
    }

    async fn download_file(
        &self,
        container_id: &str,
        path: &str,
        max_bytes: u64,
    ) -> Result<ContainerFile, ReadFileError> {
        split_dest(path)?;
        let docker = self.client()?;
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let stream = docker.download_from_container(container_id, Some(options));
        match archive::read_single_file(Box::pin(stream), max_bytes).await {
            Ok(file) => Ok(file),
            Err(SingleFileError::NotFound) => Err(ReadFileError::NotFound),
            Err(SingleFileError::TooLarge) => Err(ReadFileError::TooLarge),
            Err(SingleFileError::Malformed(why)) => {
                Err(other(format!("reading archive of {path}: {why}")).into())
            }
            // A 404 for the path is "no such file"; one for the container
            // is not, and must not read as an absent file.
            Err(SingleFileError::Source(e))
                if status(&e) == Some(404) && !no_such_container(&e) =>
            {
                Err(ReadFileError::NotFound)
            }
            Err(SingleFileError::Source(e)) => Err(engine_error("downloading archive", e).into()),
        }
    }

    /// Uploads the file beside its destination under a fixed partial name,
    /// then renames it into place: the engine's extraction unlinks an
    /// existing file before writing the new one, so uploading straight to
    /// `path` would leave it missing or truncated if the upload broke off.
    /// A leftover partial file is simply overwritten by the next write.
    async fn replace_file(
        &self,
        container_id: &str,
        path: &str,
        file: &ContainerFile,
    ) -> Result<(), EngineError> {
        let (parent, name) = split_dest(path)?;
        let partial_name = format!(".{name}.partial");
        let partial = format!("{}/{partial_name}", parent.trim_end_matches('/'));
        self.upload_file(container_id, parent, &partial_name, file)
            .await?;
        // `-T`: a directory at `path` is an error, not a place to move into.
        let argv = ["mv", "-fT", "--", partial.as_str(), path].map(str::to_owned);
        let out = self.run_exec(container_id, &argv).await?;
        if out.exit_code != 0 {
            let argv = ["rm", "-f", "--", partial.as_str()].map(str::to_owned);
            if let Err(e) = self.run_exec(container_id, &argv).await {
                tracing::warn!(file = %partial, error = %e, "could not remove partial file");
            }
            return Err(other(format!(
                "renaming {partial} to {path} failed ({}): {}",
                out.exit_code,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    async fn upload_file(
        &self,
        container_id: &str,
        parent: &str,
        name: &str,
        file: &ContainerFile,
    ) -> Result<(), EngineError> {
        let docker = self.client()?;
        let tar = archive::single_file_tar(name, file, now())
            .map_err(|e| other(format!("packing {parent}/{name}: {e}")))?;
        let options = UploadToContainerOptionsBuilder::default()
            .path(parent)
            .no_overwrite_dir_non_dir("true")
            .build();
        docker
            .upload_to_container(container_id, Some(options), bollard::body_full(tar.into()))
            .await
            .map_err(|e| engine_error("uploading file", e))
    }

    async fn run_exec(
        &self,
        container_id: &str,
        argv: &[String],
    ) -> Result<ExecOutput, EngineError> {
        if argv.is_empty() {
            return Err(other("exec needs a command"));
        }
        let docker = self.client()?;
        let config = ExecConfig {
            cmd: Some(argv.to_vec()),
            attach_stdin: Some(false),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            user: Some(EXEC_USER.to_owned()),
            ..Default::default()
        };
        let exec = docker
            .create_exec(container_id, config)
            .await
            .map_err(|e| engine_error("creating exec", e))?;
        let started = docker
            .start_exec(
                &exec.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(|e| engine_error("starting exec", e))?;
        let mut out = ExecOutput::default();
        if let StartExecResults::Attached { mut output, .. } = started {
            while let Some(frame) = output.next().await {
                use bollard::container::LogOutput;
                match frame.map_err(|e| engine_error("reading exec output", e))? {
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        keep(&mut out.stdout, &message)
                    }
                    LogOutput::StdErr { message } => keep(&mut out.stderr, &message),
                    LogOutput::StdIn { .. } => {}
                }
            }
        }
        // The output ends when the process does, but the engine may record
        // the exit code a moment later.
        loop {
            let inspected = docker
                .inspect_exec(&exec.id)
                .await
                .map_err(|e| engine_error("inspecting exec", e))?;
            match (inspected.running, inspected.exit_code) {
                (Some(true), _) => tokio::time::sleep(Duration::from_millis(10)).await,
                (_, Some(code)) => {
                    out.exit_code = code;
                    return Ok(out);
                }
                (_, None) => return Err(other("exec ended without an exit code")),
            }
        }
    }

    async fn restart_container(&self, container_id: &str) -> Result<(), EngineError> {
        let docker = self.client()?;
        let stop_secs = RESTART_STOP_SECS.min(self.call_timeout.as_secs() / 2);
        let options = RestartContainerOptionsBuilder::default()
            .t(i32::try_from(stop_secs).unwrap_or(0))
            .build();
        docker
            .restart_container(container_id, Some(options))
            .await
            .map_err(|e| engine_error("restarting container", e))
    }
}

#[async_trait]
impl ContainerEngine for DockerEngine {
    async fn ping(&self) -> Result<(), EngineError> {
        self.bounded("ping", async {
            self.client()?
                .ping()
                .await
                .map(drop)
                .map_err(|e| engine_error("ping", e))
        })
        .await
    }

    async fn state(&self, container: &ContainerName) -> ContainerState {
        let name = container.as_str();
        match self
            .bounded("inspecting container", self.inspect_state(name))
            .await
        {
            Ok(state) => state,
            Err(EngineError::Unavailable(e)) => {
                tracing::warn!(
                    container = name,
                    error = %e,
                    "container engine unavailable; container state unknown"
                );
                ContainerState::Unknown
            }
            Err(EngineError::Other(e)) => {
                tracing::warn!(
                    container = name,
                    error = %e,
                    "container engine error; container state unknown"
                );
                ContainerState::Unknown
            }
        }
    }

    async fn copy_dir_in(
        &self,
        container_id: &str,
        local_dir: &Path,
        dest_dir: &str,
    ) -> Result<(), EngineError> {
        self.bounded(
            "copying into container",
            self.upload_tree(container_id, local_dir, dest_dir),
        )
        .await
    }

    async fn read_file(
        &self,
        container_id: &str,
        path: &str,
        max_bytes: u64,
    ) -> Result<ContainerFile, ReadFileError> {
        self.bounded(
            "reading file",
            self.download_file(container_id, path, max_bytes),
        )
        .await
    }

    async fn write_file(
        &self,
        container_id: &str,
        path: &str,
        file: &ContainerFile,
    ) -> Result<(), EngineError> {
        self.bounded("writing file", self.replace_file(container_id, path, file))
            .await
    }

    async fn exec(&self, container_id: &str, argv: &[String]) -> Result<ExecOutput, EngineError> {
        self.bounded("exec", self.run_exec(container_id, argv))
            .await
    }

    async fn restart(&self, container_id: &str) -> Result<(), EngineError> {
        self.bounded("restarting container", self.restart_container(container_id))
            .await
    }
}

fn keep(buf: &mut Vec<u8>, chunk: &[u8]) {
    let room = EXEC_OUTPUT_CAP.saturating_sub(buf.len());
    buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
}

/// Splits an absolute container path into its parent directory and last
/// component, the shape the archive endpoint needs (it extracts into a
/// directory). `.` and `..` components are refused rather than resolved.
fn split_dest(path: &str) -> Result<(&str, &str), EngineError> {
    let trimmed = path.trim_end_matches('/');
    let bad = || other(format!("invalid container path {path:?}"));
    if !path.starts_with('/') || trimmed.is_empty() {
        return Err(bad());
    }
    if trimmed.split('/').any(|c| c == "." || c == "..") {
        return Err(bad());
    }
    let (parent, name) = trimmed.rsplit_once('/').ok_or_else(bad)?;
    if name.is_empty() {
        return Err(bad());
    }
    Ok((if parent.is_empty() { "/" } else { parent }, name))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn status(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn no_such_container(e: &BollardError) -> bool {
    matches!(e, BollardError::DockerResponseServerError { message, .. }
        if message.to_ascii_lowercase().contains("no such container"))
}

/// Translates a bollard error: anything that means the engine could not be
/// reached or did not answer is `Unavailable`; an answer (an error status,
/// a bad body) is `Other`. The text is kept, the bollard type is not.
fn engine_error(what: &str, e: BollardError) -> EngineError {
    let unreachable = matches!(
        e,
        BollardError::RequestTimeoutError
            | BollardError::IOError { .. }
            | BollardError::HyperResponseError { .. }
            | BollardError::HyperLegacyError { .. }
            | BollardError::SocketNotFoundError(_)
    );
    let failure = Box::new(Failure(format!("{what}: {}", chain(&e))));
    if unreachable {
        EngineError::Unavailable(failure)
    } else {
        EngineError::Other(failure)
    }
}

fn chain(e: &dyn StdError) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

fn other(message: impl Into<String>) -> EngineError {
    EngineError::Other(Box::new(Failure(message.into())))
}

/// An engine failure as text: what was being done and the driver's chain.
#[derive(Debug)]
struct Failure(String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Failure {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dest_paths_split_into_parent_and_name() {
        assert_eq!(
            split_dest("/configs/plugins/p").unwrap(),
            ("/configs/plugins", "p")
        );
        assert_eq!(
            split_dest("/configs/plugins/p/").unwrap(),
            ("/configs/plugins", "p")
        );
        assert_eq!(split_dest("/top").unwrap(), ("/", "top"));
        for bad in [
            "",
            "/",
            "relative/p",
            "/configs/../etc",
            "/configs/.",
            "/a/./b",
        ] {
            assert!(split_dest(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn engine_addresses_are_checked_without_connecting() {
        let t = Duration::from_secs(1);
        assert!(DockerEngine::new(None, t).is_ok());
        assert!(DockerEngine::new(Some(""), t).is_ok());
        assert!(DockerEngine::new(Some("unix:///nonexistent.sock"), t).is_ok());
        assert!(DockerEngine::new(Some("tcp://127.0.0.1:2375"), t).is_ok());
        assert!(DockerEngine::new(Some("http://127.0.0.1:2375"), t).is_ok());
        for bad in ["ftp://x", "unix://", "tcp://", "/var/run/docker.sock"] {
            assert!(
                matches!(DockerEngine::new(Some(bad), t), Err(EngineError::Other(_))),
                "{bad:?} accepted"
            );
        }
        assert!(DockerEngine::new(None, Duration::ZERO).is_err());
    }

    #[tokio::test]
    async fn a_missing_socket_is_an_unknown_state_not_a_stopped_one() {
        let engine =
            DockerEngine::new(Some("unix:///nonexistent.sock"), Duration::from_secs(1)).unwrap();
        let name = ContainerName::parse("ws-0123456789ab").unwrap();
        assert_eq!(engine.state(&name).await, ContainerState::Unknown);
        assert!(matches!(
            engine.ping().await,
            Err(EngineError::Unavailable(_))
        ));
    }
}
