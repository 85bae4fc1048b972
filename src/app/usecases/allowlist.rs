//! Org plugin allowlists (SPEC §5): the admin's reading and replacing,
//! and the gate install and download pass through.

use std::sync::Arc;

use super::access::Principal;
use super::audit::AuditTrail;
use crate::app::error::AppError;
use crate::domain::audit::{AuditAction, AuditOutcome};
use crate::domain::name::{PluginName, WorkspaceId};
use crate::domain::policy::{AllowlistFailure, check_allowlist, normalize_allowlist};
use crate::domain::workspace::{FieldError, Workspace};
use crate::ports::store::AllowlistStore;

/// One allowed plugin, as stored.
pub use crate::ports::store::AllowlistEntry;

/// Reading and replacing an org's allowlist (admin).
#[derive(Clone)]
pub struct Allowlists {
    store: Arc<dyn AllowlistStore>,
    audit: AuditTrail,
}

impl Allowlists {
    pub fn new(store: Arc<dyn AllowlistStore>, audit: AuditTrail) -> Self {
        Self { store, audit }
    }

    /// The org's entries, sorted by plugin name; none allows every plugin.
    pub async fn get(&self, org: &WorkspaceId) -> Result<Vec<AllowlistEntry>, AppError> {
        self.store.allowlist(org).await.map_err(AppError::Store)
    }

    /// Replaces the org's allowlist atomically: every entry must be a
    /// valid plugin name, else nothing changes. Audited (SPEC §11), the
    /// org as the event's workspace.
    pub async fn replace(
        &self,
        org: &WorkspaceId,
        plugins: Option<Vec<String>>,
        enabled_by: Option<String>,
    ) -> Result<Vec<AllowlistEntry>, AppError> {
        let draft = AuditTrail::draft(AuditAction::AllowlistReplace, &Principal::Admin, Some(org));
        let result = self.store_list(org, plugins, enabled_by).await;
        self.audit
            .conclude(draft, &result, |_| Some((AuditOutcome::Ok, 200)))
            .await;
        result
    }

    async fn store_list(
        &self,
        org: &WorkspaceId,
        plugins: Option<Vec<String>>,
        enabled_by: Option<String>,
    ) -> Result<Vec<AllowlistEntry>, AppError> {
        let plugins = plugins.ok_or(AppError::PluginsRequired)?;
        let names = normalize_allowlist(&plugins).map_err(AppError::InvalidAllowlistEntry)?;
        let enabled_by = check_enabled_by(enabled_by)?;
        self.store
            .replace_allowlist(org, &names, &enabled_by, crate::app::now())
            .await
            .map_err(AppError::Store)
    }
}

fn check_enabled_by(raw: Option<String>) -> Result<String, AppError> {
    let Some(by) = raw else {
        return Ok("admin".into());
    };
    let len = by.chars().count();
    if len == 0 || len > 200 || by.chars().any(char::is_control) {
        return Err(AppError::InvalidField(FieldError::new(
            "enabled_by",
            "enabled_by must be 1-200 characters without control characters",
        )));
    }
    Ok(by)
}

/// The org allowlist an install or download passes (SPEC §5 install step
/// 6, download 5); when the store cannot answer, `PLUGIN_ALLOWLIST_FAIL_OPEN`
/// decides.
#[derive(Clone)]
pub struct AllowlistGate {
    store: Arc<dyn AllowlistStore>,
    on_failure: AllowlistFailure,
}

impl AllowlistGate {
    pub fn new(store: Arc<dyn AllowlistStore>, on_failure: AllowlistFailure) -> Self {
        Self { store, on_failure }
    }

    pub async fn enforce(
        &self,
        workspace: &Workspace,
        plugin: &PluginName,
    ) -> Result<(), AppError> {
        let entries = match self.store.allowlist(workspace.org_id()).await {
            Ok(entries) => Some(
                entries
                    .into_iter()
                    .map(|e| e.plugin_name)
                    .collect::<Vec<_>>(),
            ),
            Err(e) => {
                tracing::error!(org = %workspace.org_id(), error = ?e, "allowlist lookup failed");
                None
            }
        };
        check_allowlist(entries.as_deref(), plugin, self.on_failure).map_err(AppError::Allowlist)
    }
}

#[cfg(test)]
mod tests {
    use mockall::predicate::*;

    use super::*;
    use crate::app::testing::workspace;
    use crate::domain::policy::AllowlistRefusal;
    use crate::ports::store::{MockAllowlistStore, StoreError};

    fn name(s: &str) -> PluginName {
        PluginName::parse(s).unwrap()
    }

    fn entry(plugin: &str) -> AllowlistEntry {
        AllowlistEntry {
            plugin_name: name(plugin),
            enabled_by: "admin".into(),
            enabled_at: crate::app::now(),
        }
    }

    fn failing() -> MockAllowlistStore {
        let mut store = MockAllowlistStore::new();
        store
            .expect_allowlist()
            .returning(|_| Err(StoreError::Unavailable("down".into())));
        store
    }

    #[tokio::test]
    async fn the_gate_reads_the_org_of_the_workspace_and_an_empty_list_allows_all() {
        let mut store = MockAllowlistStore::new();
        store
            .expect_allowlist()
            .with(eq(WorkspaceId::parse("org-1").unwrap()))
            .returning(|_| Ok(vec![entry("allowed")]));
        store
            .expect_allowlist()
            .with(eq(WorkspaceId::parse("solo").unwrap()))
            .returning(|_| Ok(vec![]));
        let gate = AllowlistGate::new(Arc::new(store), AllowlistFailure::Closed);
        let mut member = workspace("ws-1", "x", "online");
        member.spec.parent_id = Some(WorkspaceId::parse("org-1").unwrap());
        assert!(gate.enforce(&member, &name("allowed")).await.is_ok());
        let err = gate.enforce(&member, &name("other")).await.unwrap_err();
        assert!(
            matches!(err, AppError::Allowlist(AllowlistRefusal::NotAllowed(_))),
            "{err:?}"
        );
        let solo = workspace("solo", "x", "online");
        assert!(gate.enforce(&solo, &name("other")).await.is_ok());
    }

    #[tokio::test]
    async fn a_store_failure_fails_closed_unless_configured_open() {
        let ws = workspace("ws-1", "x", "online");
        let closed = AllowlistGate::new(Arc::new(failing()), AllowlistFailure::Closed);
        let err = closed.enforce(&ws, &name("any")).await.unwrap_err();
        assert!(
            matches!(err, AppError::Allowlist(AllowlistRefusal::Unavailable)),
            "{err:?}"
        );
        let open = AllowlistGate::new(Arc::new(failing()), AllowlistFailure::Open);
        assert!(open.enforce(&ws, &name("any")).await.is_ok());
    }

    #[tokio::test]
    async fn a_replacement_is_validated_whole_before_the_store_sees_it() {
        let mut store = MockAllowlistStore::new();
        store.expect_replace_allowlist().never();
        let lists = Allowlists::new(Arc::new(store), crate::app::testing::recorded_trail().0);
        let org = WorkspaceId::parse("org-1").unwrap();
        let err = lists.replace(&org, None, None).await.unwrap_err();
        assert!(matches!(err, AppError::PluginsRequired), "{err:?}");
        let err = lists
            .replace(&org, Some(vec!["ok".into(), "../bad".into()]), None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, AppError::InvalidAllowlistEntry(ref e) if e == "../bad"),
            "{err:?}"
        );
        for by in ["", "a\nb"] {
            let err = lists
                .replace(&org, Some(vec![]), Some(by.into()))
                .await
                .unwrap_err();
            assert!(matches!(err, AppError::InvalidField(_)), "{by:?}: {err:?}");
        }
    }

    #[tokio::test]
    async fn a_replacement_stores_sorted_unique_names_enabled_by_admin_by_default() {
        let mut store = MockAllowlistStore::new();
        store
            .expect_replace_allowlist()
            .withf(|_, names, by, _| names == [name("a"), name("b")] && by == "admin")
            .times(1)
            .returning(|_, _, _, _| Ok(vec![entry("a"), entry("b")]));
        let stored = Allowlists::new(Arc::new(store), crate::app::testing::recorded_trail().0)
            .replace(
                &WorkspaceId::parse("org-1").unwrap(),
                Some(vec!["b".into(), "a".into(), "b".into()]),
                None,
            )
            .await
            .unwrap();
        assert_eq!(stored.len(), 2);
    }
}
