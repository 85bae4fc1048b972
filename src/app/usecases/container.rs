//! What install, uninstall and the installed list share about the
//! workspace's container: whether it runs, and the one mapping of its
//! failures to answers.

use crate::app::error::AppError;
use crate::domain::workspace::Workspace;
use crate::ports::container::{
    ConfigsError, ContainerEngine, ContainerId, ContainerState, EngineError,
};

/// Which operation a container failure interrupted: it decides the 5xx
/// that is not about the engine itself.
#[derive(Debug, Clone, Copy)]
pub(super) enum Operation {
    Deliver,
    List,
    Remove,
    Verify,
}

/// The one place container failures become answers (SPEC §5, §6): the
/// engine gone is 503 `container engine unavailable`, the container
/// stopping under the operation is 503 `workspace container not running`
/// (both with `Retry-After`), anything else (an unsafe layout the agent
/// made, an oversize answer, a failure inside the container) is the
/// operation's own 500.
pub(super) fn container_failure(e: ConfigsError, operation: Operation) -> AppError {
    match e {
        ConfigsError::Engine(e @ EngineError::Unavailable(_)) => AppError::EngineUnavailable(e),
        ConfigsError::Engine(EngineError::NotRunning) => AppError::ContainerNotRunning,
        other => {
            let cause: crate::ports::BoxError = Box::new(other);
            match operation {
                Operation::Deliver => AppError::CopyFailed(cause),
                Operation::List => AppError::ListFailed(cause),
                Operation::Remove => AppError::RemoveFailed(cause),
                Operation::Verify => AppError::VerifyFailed(cause),
            }
        }
    }
}

/// SPEC §6: running → its id; stopped and unknown are distinct 503s.
pub(super) async fn running_container(
    engine: &dyn ContainerEngine,
    workspace: &Workspace,
) -> Result<Option<ContainerId>, AppError> {
    match engine.state(&workspace.container_name()).await {
        ContainerState::Running { id } => Ok(Some(id)),
        ContainerState::Stopped => Ok(None),
        ContainerState::Unknown => Err(AppError::EngineUnavailable(EngineError::Unavailable(
            "container state unknown".into(),
        ))),
    }
}

pub(super) async fn require_running(
    engine: &dyn ContainerEngine,
    workspace: &Workspace,
) -> Result<ContainerId, AppError> {
    running_container(engine, workspace)
        .await?
        .ok_or(AppError::ContainerNotRunning)
}

#[cfg(test)]
#[path = "container_tests.rs"]
mod tests;
