//! Install receipts (SPEC §5 "Receipts", §11 provenance).

use async_trait::async_trait;

use crate::domain::digest::TreeDigest;
use crate::domain::name::{PluginName, WorkspaceId};
use crate::domain::receipt::Receipt;
use crate::ports::store::StoreError;

#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait ReceiptStore: Send + Sync {
    /// Records (or replaces) the receipt of an install.
    async fn put_receipt(&self, receipt: &Receipt) -> Result<(), StoreError>;

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

    /// Deletes the receipt; false when there was none.
    async fn delete_receipt(
        &self,
        workspace: &WorkspaceId,
        plugin: &PluginName,
    ) -> Result<bool, StoreError>;
}
