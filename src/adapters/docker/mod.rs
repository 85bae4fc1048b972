//! The Docker engine adapter: [`DockerEngine`] implements the
//! [`ContainerEngine`] port (state, readiness, restarts) and the
//! [`WorkspaceConfigs`](crate::ports::container::WorkspaceConfigs) port
//! (everything done in the agent's `/configs`, in `configs.rs`) with
//! bollard. Invariant: no bollard type leaves this module; engine errors
//! become the port's meaning-level variants here.
//!
//! Every call is bounded by the call timeout (SPEC §5 "Engine calls"). A
//! call that runs out, or cannot reach the engine at all, is `Unavailable`
//! (and `state` answers `Unknown`): callers must never mistake it for a
//! stopped container (SPEC §6). A container that stops under an exec is
//! `NotRunning`.
//!
//! Agent-safe by construction (SPEC §6): every exec runs as the agent
//! (`1000:1000`), never as root, so whatever the agent planted under
//! `/configs` only ever leads where the agent could go itself; files are
//! created by that user, so they belong to it. The archive endpoints (which
//! act as root and resolve paths the agent controls) are not used.
//!
//! API version: bollard 0.21 joins each absolute request path onto its
//! versioned base URL, which drops the `/v1.xx` prefix, so requests are
//! unversioned and the engine answers in its own current version. That is
//! why no version negotiation is done (bollard's `negotiate_version` sends
//! `/v1.53/version`, which an older engine such as 20.10 refuses). The
//! fields read here (state flags, exec exit codes) are stable across
//! engine versions.

mod archive;
mod configs;
mod exec;
mod tree_hash;

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::query_parameters::RestartContainerOptionsBuilder;

use crate::domain::workspace::ContainerName;
use crate::ports::container::{ContainerEngine, ContainerId, ContainerState, EngineError};

/// The engine's socket when no `DOCKER_HOST` is given.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// The stop timeout of a restart (capped at half the call timeout, so the
/// restart still fits in the call).
const RESTART_STOP_SECS: u64 = 5;

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
            Err(_) => Err(timed_out(what, self.call_timeout).into()),
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
            (true, Some(id)) => Ok(ContainerState::Running {
                id: ContainerId::new(id),
            }),
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

    /// Whether the container with this id is running now; used to tell a
    /// container that stopped under an exec from one that failed in it.
    async fn still_running(&self, id: &ContainerId) -> bool {
        matches!(
            self.bounded("inspecting container", self.inspect_state(id.as_str()))
                .await,
            Ok(ContainerState::Running { .. })
        )
    }

    async fn restart_container(&self, id: &ContainerId) -> Result<(), EngineError> {
        let docker = self.client()?;
        let stop_secs = RESTART_STOP_SECS.min(self.call_timeout.as_secs() / 2);
        let options = RestartContainerOptionsBuilder::default()
            .t(i32::try_from(stop_secs).unwrap_or(0))
            .build();
        docker
            .restart_container(id.as_str(), Some(options))
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
            Err(e) => {
                tracing::warn!(
                    container = name,
                    error = %chain(&e),
                    "container engine did not answer; container state unknown"
                );
                ContainerState::Unknown
            }
        }
    }

    async fn restart(&self, container: &ContainerId) -> Result<(), EngineError> {
        self.bounded("restarting container", self.restart_container(container))
            .await
    }
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

fn timed_out(what: &str, after: Duration) -> EngineError {
    EngineError::Unavailable(Box::new(Failure(format!(
        "{what}: no answer within {after:?}"
    ))))
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
