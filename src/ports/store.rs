//! The service's own records (SPEC §8): workspaces, tokens, org allowlists.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::name::{PluginName, WorkspaceId};
use crate::domain::token::{TokenHash, TokenId, TokenRecord};
use crate::domain::workspace::{ContainerName, Workspace, WorkspaceSpec};
use crate::ports::BoxError;

/// What a store can fail with. Stores never answer "not found" as an
/// error: absence is an `Option` or a `bool`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or did not answer.
    #[error("store unavailable")]
    Unavailable(#[source] BoxError),
    /// A write conflicted with existing data (e.g. a duplicate key).
    #[error("store conflict")]
    Conflict(#[source] BoxError),
    /// The record's container is already the container of `owner`, another
    /// record that is not `removed` (SPEC §6); nothing was written.
    #[error("container \"{container}\" already belongs to workspace \"{owner}\"")]
    ContainerTaken {
        container: ContainerName,
        owner: WorkspaceId,
    },
    /// Anything else the database reported.
    #[error("store error")]
    Other(#[source] BoxError),
}

/// Whether `upsert_workspace` created the record or updated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    Created,
    Updated,
}

#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait WorkspaceStore: Send + Sync {
    /// The record for `id`, if any.
    async fn workspace(&self, id: &WorkspaceId) -> Result<Option<Workspace>, StoreError>;

    /// Creates or replaces the settable fields of `id`'s record at `now`.
    /// [`StoreError::ContainerTaken`] when the record would hold another
    /// live record's container; of two racing writes that would share one,
    /// exactly one succeeds.
    async fn upsert_workspace(
        &self,
        id: &WorkspaceId,
        spec: &WorkspaceSpec,
        now: DateTime<Utc>,
    ) -> Result<(Workspace, Upserted), StoreError>;

    /// Up to `limit` records with ids strictly after `after`, sorted by id.
    async fn list_workspaces(
        &self,
        after: Option<WorkspaceId>,
        limit: u64,
    ) -> Result<Vec<Workspace>, StoreError>;

    /// Removes the record and, in the same transaction, its tokens.
    /// Returns false when there was no record.
    async fn delete_workspace(&self, id: &WorkspaceId) -> Result<bool, StoreError>;
}

#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores a new token (its hash only) if its workspace has a record;
    /// false, and nothing stored, when it has none. A token inserted while
    /// its workspace is being deleted is deleted with it: it never outlives
    /// the record, nor comes back with a new record of the same id.
    async fn insert_token(&self, token: &TokenRecord) -> Result<bool, StoreError>;

    /// The token whose secret hashes to `hash`, revoked or not.
    async fn token_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError>;

    /// The workspace's tokens, oldest first.
    async fn tokens(&self, workspace: &WorkspaceId) -> Result<Vec<TokenRecord>, StoreError>;

    /// Revokes a token of `workspace`; false when it has no such token.
    async fn revoke_token(&self, workspace: &WorkspaceId, id: &TokenId)
    -> Result<bool, StoreError>;

    /// Records a successful use.
    async fn touch_token(&self, id: &TokenId, at: DateTime<Utc>) -> Result<(), StoreError>;

    /// Whether the workspace has at least one token that is not revoked.
    async fn has_live_token(&self, workspace: &WorkspaceId) -> Result<bool, StoreError>;
}

/// One entry of an org allowlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowlistEntry {
    pub plugin_name: PluginName,
    pub enabled_by: String,
    pub enabled_at: DateTime<Utc>,
}

#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait AllowlistStore: Send + Sync {
    /// The org's entries sorted by plugin name; empty when it has none.
    async fn allowlist(&self, org: &WorkspaceId) -> Result<Vec<AllowlistEntry>, StoreError>;

    /// Replaces the org's list atomically: on any failure the old list
    /// stays, and concurrent replacements of one org apply one after the
    /// other (the result is one of the lists, never a merge). Entries that
    /// stay keep their `enabled_by` and `enabled_at`.
    /// `plugins` must be free of duplicates (`normalize_allowlist`);
    /// duplicates are a `Conflict`.
    async fn replace_allowlist(
        &self,
        org: &WorkspaceId,
        plugins: &[PluginName],
        enabled_by: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<AllowlistEntry>, StoreError>;
}

/// Readiness of the database behind the stores.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait StoreHealth: Send + Sync {
    async fn ping(&self) -> Result<(), StoreError>;
}
