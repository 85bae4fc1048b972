//! Install receipts (SPEC §5 "Receipts").

use async_trait::async_trait;

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

    /// Deletes the receipt; false when there was none.
    async fn delete_receipt(
        &self,
        workspace: &WorkspaceId,
        plugin: &PluginName,
    ) -> Result<bool, StoreError>;
}
