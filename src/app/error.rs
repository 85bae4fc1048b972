//! The app's one error enum. Use cases return it; `http::problem` maps it to
//! a status and a JSON body in exactly one place.

use crate::domain::policy::{AllowlistRefusal, NameMismatch};
use crate::domain::runtime::GuardRefusal;
use crate::domain::staging::StagingError;
use crate::domain::workspace::FieldError;
use crate::ports::registry::RegistryError;
use crate::ports::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("missing auth token")]
    MissingToken,
    #[error("invalid auth token")]
    InvalidToken,
    #[error("admin token required")]
    AdminRequired,
    #[error("auth check failed")]
    AuthCheckFailed(#[source] StoreError),
    #[error("workspace not found")]
    WorkspaceNotFound,
    #[error("workspace lookup failed")]
    WorkspaceLookupFailed(#[source] StoreError),

    #[error("invalid workspace id (expected [A-Za-z0-9][A-Za-z0-9_-]{{0,63}})")]
    InvalidWorkspaceId,
    #[error("{0}")]
    InvalidField(FieldError),
    #[error("invalid plugin name")]
    InvalidPluginName,
    #[error("invalid plugin name in allowlist")]
    InvalidAllowlistEntry(String),
    #[error("'plugins' is required (send [] to allow all)")]
    PluginsRequired,
    #[error("'runtime' is required (e.g. ?runtime=claude_code)")]
    RuntimeRequired,
    #[error("invalid runtime (expected [a-z0-9][a-z0-9_-]{{0,63}})")]
    InvalidRuntime,
    #[error("invalid query parameter: {0}")]
    InvalidQuery(String),
    #[error("token not found")]
    TokenNotFound,
    #[error("container \"{container}\" already belongs to workspace \"{owner}\"")]
    ContainerTaken {
        container: crate::domain::workspace::ContainerName,
        owner: crate::domain::name::WorkspaceId,
    },

    #[error("invalid request body")]
    InvalidBody,
    #[error("request body too large (limit {0} bytes)")]
    BodyTooLarge(u64),
    #[error("request body timed out: send it without pauses")]
    BodyTimedOut,

    #[error(transparent)]
    Staging(StagingError),
    #[error(transparent)]
    Guard(GuardRefusal),
    #[error(transparent)]
    Allowlist(AllowlistRefusal),
    #[error(transparent)]
    NameMismatch(NameMismatch),

    #[error("container engine unavailable")]
    EngineUnavailable(#[source] crate::ports::container::EngineError),
    #[error("workspace container not running")]
    ContainerNotRunning,
    #[error("plugin install timed out")]
    InstallTimedOut { source_text: String },
    #[error("plugin uninstall timed out")]
    UninstallTimedOut,
    #[error("failed to copy plugin to container")]
    CopyFailed(#[source] crate::ports::BoxError),
    #[error("failed to remove plugin")]
    RemoveFailed(#[source] crate::ports::BoxError),
    #[error("failed to list installed plugins")]
    ListFailed(#[source] crate::ports::BoxError),
    #[error("failed to read the installed plugin")]
    VerifyFailed(#[source] crate::ports::BoxError),
    #[error("plugin \"{0}\" is not installed")]
    NotInstalled(crate::domain::name::PluginName),
    #[error("plugin \"{0}\" has no install record")]
    NoInstallRecord(crate::domain::name::PluginName),

    #[error("too many plugin fetches in progress")]
    TooManyFetches,

    #[error("unsupported format (use tar.gz or tar.zst)")]
    UnsupportedFormat,
    #[error("failed to pack plugin")]
    PackFailed(#[source] crate::ports::archives::PackError),

    #[error("failed to list plugins")]
    Registry(#[source] RegistryError),
    #[error("internal error")]
    Store(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] crate::ports::BoxError),
}

impl AppError {
    pub fn internal(e: impl Into<crate::ports::BoxError>) -> Self {
        Self::Internal(e.into())
    }

    /// A workspace that could not be held (SPEC §12): `timed_out` when the
    /// request's deadline passed while another holder had it, else the
    /// database that keeps the holds is unavailable.
    pub fn not_held(
        e: crate::ports::coordination::HoldError,
        timed_out: impl FnOnce() -> AppError,
    ) -> Self {
        match e {
            crate::ports::coordination::HoldError::TimedOut => timed_out(),
            crate::ports::coordination::HoldError::Unavailable(cause) => {
                Self::Store(StoreError::Unavailable(cause))
            }
        }
    }
}
