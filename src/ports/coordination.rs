//! What replicas sharing one database coordinate through it (SPEC §12):
//! exclusive holds on a workspace, the pending restarts, and the
//! generated admin token.
//!
//! Intent only: whether a hold is an in-process lock (SQLite, one
//! process) or a database lock every replica sees (PostgreSQL) is the
//! adapter's business.

use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::name::WorkspaceId;
use crate::domain::token::TokenHash;
use crate::domain::workspace::ContainerName;
use crate::ports::BoxError;
use crate::ports::store::StoreError;

/// Why a workspace could not be held.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    /// The deadline passed while another holder kept the workspace.
    #[error("timed out waiting for the workspace")]
    TimedOut,
    /// The database that keeps the holds could not be reached.
    #[error("workspace lock unavailable")]
    Unavailable(#[source] BoxError),
}

/// An exclusive hold on one workspace; dropping it releases the workspace
/// (so does the end of the process that holds it).
#[must_use = "the workspace is released when the hold is dropped"]
pub struct WorkspaceHold {
    _held: Box<dyn Send + Sync>,
}

impl WorkspaceHold {
    /// A hold that lasts as long as `held` does.
    pub fn new(held: impl Send + Sync + 'static) -> Self {
        Self {
            _held: Box::new(held),
        }
    }
}

#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait WorkspaceLocks: Send + Sync {
    /// Holds `workspace` exclusively, across every replica sharing the
    /// database: waits while anyone else holds it, at most until
    /// `deadline` ([`HoldError::TimedOut`]). Two holds of one workspace
    /// never overlap; holds of other workspaces do not wait.
    async fn hold(
        &self,
        workspace: &WorkspaceId,
        deadline: Option<Instant>,
    ) -> Result<WorkspaceHold, HoldError>;
}

/// A restart asked for and not carried out yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRestart {
    pub workspace: WorkspaceId,
    /// The container named by the last request.
    pub container: ContainerName,
    /// When it comes due: the last request's time plus the delay.
    pub due_at: DateTime<Utc>,
    /// Bumped by every request, so a restart carried out from an older
    /// reading does not forget a request that came after it.
    pub generation: i64,
    /// Attempts that failed so far.
    pub attempts: i32,
}

/// The pending restarts, one per workspace, shared by every replica.
/// Carrying one out is decided while holding its workspace
/// ([`WorkspaceLocks::hold`]): that hold is the claim, so two replicas
/// never carry out the same restart, and a replica that dies drops it.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait RestartQueue: Send + Sync {
    /// Asks for a restart of `workspace` at `due`, replacing the due time
    /// of one already pending (the debounce) and resetting its attempts.
    async fn request_restart(
        &self,
        workspace: &WorkspaceId,
        container: &ContainerName,
        due: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Every pending restart, soonest due first.
    async fn pending_restarts(&self) -> Result<Vec<PendingRestart>, StoreError>;

    /// The workspace's pending restart, if any.
    async fn pending_restart(
        &self,
        workspace: &WorkspaceId,
    ) -> Result<Option<PendingRestart>, StoreError>;

    /// The restart read as `generation` was carried out: forgotten, unless
    /// a request came after that reading. Answers whether a restart of the
    /// workspace is still pending.
    async fn finish_restart(
        &self,
        workspace: &WorkspaceId,
        generation: i64,
    ) -> Result<bool, StoreError>;

    /// The restart read as `generation` failed: tried again at `due`, one
    /// more attempt counted (unless a request came after that reading).
    async fn retry_restart(
        &self,
        workspace: &WorkspaceId,
        generation: i64,
        due: DateTime<Utc>,
    ) -> Result<(), StoreError>;
}

/// The generated admin token (SPEC §8, §12), kept as its hash only.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait AdminTokenStore: Send + Sync {
    /// Keeps `hash` as the admin token's unless one is kept already;
    /// answers the one kept (of two racing first starts, one wins).
    async fn adopt_admin_token(&self, hash: &TokenHash) -> Result<TokenHash, StoreError>;

    /// The kept admin token's hash, if any.
    async fn admin_token(&self) -> Result<Option<TokenHash>, StoreError>;

    /// Forgets the kept hash if it is still `hash` (a first start that
    /// could not write the secret file takes its token back).
    async fn forget_admin_token(&self, hash: &TokenHash) -> Result<(), StoreError>;
}
