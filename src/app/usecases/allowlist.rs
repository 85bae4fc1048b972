//! Org plugin allowlists (SPEC §5): the admin's reading and replacing,
//! and the gate install and download pass through.

use std::sync::Arc;

use crate::app::error::AppError;
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
}

impl Allowlists {
    pub fn new(store: Arc<dyn AllowlistStore>) -> Self {
        Self { store }
    }

    /// The org's entries, sorted by plugin name; none allows every plugin.
    pub async fn get(&self, org: &WorkspaceId) -> Result<Vec<AllowlistEntry>, AppError> {
        self.store.allowlist(org).await.map_err(AppError::Store)
    }

    /// Replaces the org's allowlist atomically: every entry must be a
    /// valid plugin name, else nothing changes.
    pub async fn replace(
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
