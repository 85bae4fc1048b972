//! The service's own workspace records (SPEC §8): create or update,
//! list by pages, remove (admin).

use std::sync::Arc;

use super::access::Principal;
use super::audit::AuditTrail;
use crate::app::error::AppError;
use crate::domain::audit::{AuditAction, AuditOutcome};
use crate::domain::name::WorkspaceId;
use crate::domain::workspace::{Workspace, WorkspaceInput, WorkspaceSpec};
use crate::ports::store::{StoreError, WorkspaceStore};

/// Whether a `put` created the record or updated it.
pub use crate::ports::store::Upserted;

/// One page of workspaces, sorted by id.
#[derive(Debug)]
pub struct Page {
    pub workspaces: Vec<Workspace>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<WorkspaceId>,
}

/// Workspace records.
#[derive(Clone)]
pub struct Workspaces {
    store: Arc<dyn WorkspaceStore>,
    audit: AuditTrail,
}

impl Workspaces {
    pub fn new(store: Arc<dyn WorkspaceStore>, audit: AuditTrail) -> Self {
        Self { store, audit }
    }

    /// Validates the fields, then creates or updates the record; a
    /// container another record claims is refused. Audited (SPEC §11).
    pub async fn put(
        &self,
        id: &WorkspaceId,
        input: WorkspaceInput<'_>,
    ) -> Result<(Workspace, Upserted), AppError> {
        let draft = AuditTrail::draft(AuditAction::WorkspacePut, &Principal::Admin, Some(id));
        let result = self.upsert(id, input).await;
        self.audit
            .conclude(draft, &result, |(_, upserted)| {
                Some(match upserted {
                    Upserted::Created => (AuditOutcome::Ok, 201),
                    Upserted::Updated => (AuditOutcome::Ok, 200),
                })
            })
            .await;
        result
    }

    async fn upsert(
        &self,
        id: &WorkspaceId,
        input: WorkspaceInput<'_>,
    ) -> Result<(Workspace, Upserted), AppError> {
        let spec = WorkspaceSpec::validate(id, input).map_err(AppError::InvalidField)?;
        self.store
            .upsert_workspace(id, &spec, crate::app::now())
            .await
            .map_err(|e| match e {
                StoreError::ContainerTaken { container, owner } => {
                    AppError::ContainerTaken { container, owner }
                }
                e => AppError::Store(e),
            })
    }

    /// At most `limit` records after `after`.
    pub async fn list(&self, after: Option<WorkspaceId>, limit: u64) -> Result<Page, AppError> {
        // One more than asked tells whether another page exists.
        let mut page = self
            .store
            .list_workspaces(after, limit + 1)
            .await
            .map_err(AppError::Store)?;
        let more = page.len() as u64 > limit;
        page.truncate(limit as usize);
        let next_cursor = more.then(|| page.last().map(|w| w.id.clone())).flatten();
        Ok(Page {
            workspaces: page,
            next_cursor,
        })
    }

    /// Removes the record and its tokens; installed plugin files stay.
    /// Audited (SPEC §11).
    pub async fn delete(&self, id: &WorkspaceId) -> Result<(), AppError> {
        let draft = AuditTrail::draft(AuditAction::WorkspaceDelete, &Principal::Admin, Some(id));
        let result = match self.store.delete_workspace(id).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(AppError::WorkspaceNotFound),
            Err(e) => Err(AppError::Store(e)),
        };
        self.audit
            .conclude(draft, &result, |()| Some((AuditOutcome::Ok, 204)))
            .await;
        result
    }
}

#[cfg(test)]
mod tests {
    use mockall::predicate::*;

    use super::*;
    use crate::app::testing::workspace;
    use crate::domain::workspace::ContainerName;
    use crate::ports::store::MockWorkspaceStore;

    fn id(s: &str) -> WorkspaceId {
        WorkspaceId::parse(s).unwrap()
    }

    fn valid() -> WorkspaceInput<'static> {
        WorkspaceInput {
            name: Some("W"),
            runtime: Some("claude_code"),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_page_asks_for_one_more_record_to_know_whether_another_follows() {
        let mut store = MockWorkspaceStore::new();
        store
            .expect_list_workspaces()
            .with(eq(None), eq(3))
            .returning(|_, _| {
                Ok(["a", "b", "c"]
                    .map(|id| workspace(id, "x", "online"))
                    .to_vec())
            });
        store
            .expect_list_workspaces()
            .with(eq(Some(id("b"))), eq(3))
            .returning(|_, _| Ok(vec![workspace("c", "x", "online")]));
        let workspaces = Workspaces::new(Arc::new(store), crate::app::testing::recorded_trail().0);

        let first = workspaces.list(None, 2).await.unwrap();
        let ids: Vec<_> = first.workspaces.iter().map(|w| w.id.to_string()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(first.next_cursor, Some(id("b")));

        let last = workspaces.list(first.next_cursor, 2).await.unwrap();
        assert_eq!(last.workspaces.len(), 1);
        assert_eq!(last.next_cursor, None, "no page after the last");
    }

    #[tokio::test]
    async fn invalid_fields_are_refused_before_the_store() {
        let mut store = MockWorkspaceStore::new();
        store.expect_upsert_workspace().never();
        let workspaces = Workspaces::new(Arc::new(store), crate::app::testing::recorded_trail().0);
        let err = workspaces
            .put(
                &id("ws-1"),
                WorkspaceInput {
                    status: Some("sleeping"),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, AppError::InvalidField(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_container_another_record_claims_is_a_conflict_and_other_store_errors_are_internal() {
        let mut store = MockWorkspaceStore::new();
        store
            .expect_upsert_workspace()
            .with(eq(id("ws-1")), always(), always())
            .returning(|_, _, _| {
                Err(StoreError::ContainerTaken {
                    container: ContainerName::parse("shared").unwrap(),
                    owner: id("ws-0"),
                })
            });
        store
            .expect_upsert_workspace()
            .returning(|_, _, _| Err(StoreError::Unavailable("down".into())));
        let workspaces = Workspaces::new(Arc::new(store), crate::app::testing::recorded_trail().0);
        let err = workspaces.put(&id("ws-1"), valid()).await.unwrap_err();
        assert!(
            matches!(err, AppError::ContainerTaken { ref owner, .. } if owner.as_str() == "ws-0"),
            "{err:?}"
        );
        let err = workspaces.put(&id("ws-2"), valid()).await.unwrap_err();
        assert!(matches!(err, AppError::Store(_)), "{err:?}");
    }

    #[tokio::test]
    async fn deleting_an_unknown_workspace_is_not_found() {
        let mut store = MockWorkspaceStore::new();
        store.expect_delete_workspace().returning(|_| Ok(false));
        let err = Workspaces::new(Arc::new(store), crate::app::testing::recorded_trail().0)
            .delete(&id("ws-1"))
            .await
            .unwrap_err();
        assert!(matches!(err, AppError::WorkspaceNotFound), "{err:?}");
    }
}
