//! What the receipts say across workspaces and within one (SPEC §11):
//! the fleet-wide installations of a plugin (the blast radius of a bad
//! digest) and a workspace's lock. Read from receipts only; no container
//! is asked.

use std::sync::Arc;

use crate::app::error::AppError;
use crate::domain::digest::TreeDigest;
use crate::domain::name::{PluginName, WorkspaceId};
use crate::domain::receipt::Receipt;
use crate::ports::receipts::ReceiptStore;

/// One page of a plugin's installations, by workspace id.
#[derive(Debug)]
pub struct InstallationsPage {
    pub installations: Vec<Receipt>,
    /// The last workspace of this page when another page follows.
    pub next_after: Option<WorkspaceId>,
}

/// Reads install receipts.
#[derive(Clone)]
pub struct InstallRecords {
    receipts: Arc<dyn ReceiptStore>,
}

impl InstallRecords {
    pub fn new(receipts: Arc<dyn ReceiptStore>) -> Self {
        Self { receipts }
    }

    /// Every workspace whose receipt names `plugin` (only those at
    /// `digest` when given), at most `limit` after `after`.
    pub async fn installations(
        &self,
        plugin: &PluginName,
        digest: Option<TreeDigest>,
        after: Option<WorkspaceId>,
        limit: u64,
    ) -> Result<InstallationsPage, AppError> {
        // One more than asked tells whether another page exists.
        let mut page = self
            .receipts
            .installations(plugin, digest, after, limit + 1)
            .await
            .map_err(AppError::Store)?;
        let more = page.len() as u64 > limit;
        page.truncate(limit as usize);
        let next_after = more
            .then(|| page.last().map(|r| r.workspace_id.clone()))
            .flatten();
        Ok(InstallationsPage {
            installations: page,
            next_after,
        })
    }

    /// The workspace's receipts, sorted by plugin name: what reproduces it.
    pub async fn lock(&self, workspace: &WorkspaceId) -> Result<Vec<Receipt>, AppError> {
        self.receipts
            .receipts(workspace)
            .await
            .map_err(AppError::Store)
    }
}

#[cfg(test)]
mod tests {
    use mockall::predicate::*;

    use super::*;
    use crate::ports::receipts::MockReceiptStore;
    use crate::ports::store::StoreError;

    fn id(s: &str) -> WorkspaceId {
        WorkspaceId::parse(s).unwrap()
    }

    fn receipt(ws: &str) -> Receipt {
        Receipt {
            workspace_id: id(ws),
            plugin: PluginName::parse("p").unwrap(),
            source: "local://p".into(),
            digest: crate::domain::digest::tree_digest(&[]),
            size_bytes: 0,
            installed_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            installed_by: "admin".into(),
            provenance: None,
        }
    }

    #[tokio::test]
    async fn a_page_of_installations_asks_for_one_more_to_know_whether_another_follows() {
        let plugin = PluginName::parse("p").unwrap();
        let digest = crate::domain::digest::tree_digest(&[]);
        let mut store = MockReceiptStore::new();
        store
            .expect_installations()
            .with(
                eq(plugin.clone()),
                eq(Some(digest.clone())),
                eq(None),
                eq(3),
            )
            .returning(|_, _, _, _| Ok(vec![receipt("a"), receipt("b"), receipt("c")]));
        store
            .expect_installations()
            .with(always(), eq(None), eq(Some(id("b"))), eq(3))
            .returning(|_, _, _, _| Ok(vec![receipt("c")]));
        let records = InstallRecords::new(Arc::new(store));
        let first = records
            .installations(&plugin, Some(digest), None, 2)
            .await
            .unwrap();
        assert_eq!(first.installations.len(), 2);
        assert_eq!(first.next_after, Some(id("b")));
        let last = records
            .installations(&plugin, None, first.next_after, 2)
            .await
            .unwrap();
        assert_eq!(last.installations.len(), 1);
        assert_eq!(last.next_after, None, "no page after the last");
    }

    #[tokio::test]
    async fn a_store_failure_is_an_internal_error_never_an_empty_answer() {
        let mut store = MockReceiptStore::new();
        store
            .expect_receipts()
            .returning(|_| Err(StoreError::Unavailable("down".into())));
        let records = InstallRecords::new(Arc::new(store));
        assert!(matches!(
            records.lock(&id("ws")).await,
            Err(AppError::Store(_))
        ));
    }
}
