//! The container engine (SPEC §6): one source of truth for "is this
//! workspace's container running?".

use async_trait::async_trait;

use crate::domain::workspace::ContainerName;
use crate::ports::BoxError;

/// The three outcomes of a container lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Running; the engine's id for the container.
    Running { id: String },
    /// The container does not exist or is not running.
    Stopped,
    /// The engine could not answer (timeout, socket error, daemon down).
    /// Never to be treated as `Stopped`: callers must not take a
    /// destructive path on it.
    Unknown,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine did not answer in time or could not be reached.
    #[error("container engine unavailable")]
    Unavailable(#[source] BoxError),
    #[error("container engine error")]
    Other(#[source] BoxError),
}

#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait ContainerEngine: Send + Sync {
    /// Whether the engine answers at all (readiness).
    async fn ping(&self) -> Result<(), EngineError>;

    /// The state of the named container; errors are `Unknown`, logged by
    /// the adapter as such.
    async fn state(&self, container: &ContainerName) -> ContainerState;
}
