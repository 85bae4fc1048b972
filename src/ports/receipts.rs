//! Install receipts (SPEC §5 "Receipts", §11 provenance).

use async_trait::async_trait;

use crate::domain::audit::AuditEvent;
use crate::domain::digest::TreeDigest;
use crate::domain::name::{PluginName, WorkspaceId};
use crate::domain::receipt::Receipt;
use crate::ports::store::StoreError;

#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait ReceiptStore: Send + Sync {
    /// Records (or replaces) the receipt of an install and appends `event`
    /// (SPEC §11) in the same transaction: both are written or neither.
    async fn put_receipt<'e>(
        &self,
        receipt: &Receipt,
        event: Option<&'e AuditEvent>,
    ) -> Result<(), StoreError>;

    /// The receipt of `plugin` in `workspace`, if any.
    async fn receipt(
        &self,
        workspace: &WorkspaceId,
        plugin: &PluginName,
    ) -> Result<Option<Receipt>, StoreError>;

    /// Every receipt of the workspace, sorted by plugin name.
    async fn receipts(&self, workspace: &WorkspaceId) -> Result<Vec<Receipt>, StoreError>;

    /// Up to `limit` receipts of `plugin` across workspaces, only those
    /// with `digest` when given, with workspace ids strictly after
    /// `after`, sorted by workspace id (bytewise).
    async fn installations(
        &self,
        plugin: &PluginName,
        digest: Option<TreeDigest>,
        after: Option<WorkspaceId>,
        limit: u64,
    ) -> Result<Vec<Receipt>, StoreError>;

    /// Deletes the receipt (false when there was none) and appends `event`
    /// in the same transaction: both are written or neither.
    async fn delete_receipt<'e>(
        &self,
        workspace: &WorkspaceId,
        plugin: &PluginName,
        event: Option<&'e AuditEvent>,
    ) -> Result<bool, StoreError>;
}
