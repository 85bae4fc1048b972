//! The installed list (SPEC §5, §11): what the workspace's container
//! holds, with each plugin's receipt (digest and provenance).

use std::collections::HashMap;
use std::sync::Arc;

use super::container::{Operation, container_failure, running_container};
use crate::app::error::AppError;
use crate::app::restart::Restarter;
use crate::domain::manifest::Manifest;
use crate::domain::name::PluginName;
use crate::domain::receipt::Receipt;
use crate::domain::workspace::Workspace;
use crate::ports::container::{ContainerEngine, WorkspaceConfigs};
use crate::ports::receipts::ReceiptStore;

/// Lists a workspace's installed plugins.
#[derive(Clone)]
pub struct InstalledPlugins {
    pub(super) engine: Arc<dyn ContainerEngine>,
    pub(super) configs: Arc<dyn WorkspaceConfigs>,
    pub(super) receipts: Arc<dyn ReceiptStore>,
    /// A listing waits for a restart of the workspace in progress.
    pub(super) restarts: Restarter,
}

impl InstalledPlugins {
    /// The plugins installed in the workspace's container, each with its
    /// receipt (None for plugins put there by something else). A stopped
    /// container has none; one being restarted by this service is waited
    /// for, so a listing never answers `[]` for it.
    pub async fn list(
        &self,
        workspace: &Workspace,
    ) -> Result<Vec<(Manifest, Option<Receipt>)>, AppError> {
        self.restarts.wait_for_restart(&workspace.id).await;
        let Some(container) = running_container(self.engine.as_ref(), workspace).await? else {
            return Ok(Vec::new());
        };
        let entries = self
            .configs
            .installed(&container)
            .await
            .map_err(|e| container_failure(e, Operation::List))?;
        let mut receipts: HashMap<PluginName, Receipt> = match self
            .receipts
            .receipts(&workspace.id)
            .await
        {
            Ok(receipts) => receipts
                .into_iter()
                .map(|r| (r.plugin.clone(), r))
                .collect(),
            Err(e) => {
                tracing::error!(workspace = %workspace.id, error = ?e, "could not read receipts; digests omitted");
                HashMap::new()
            }
        };
        Ok(entries
            .into_iter()
            .map(|entry| {
                let receipt = receipts.remove(&entry.name);
                (
                    Manifest::from_yaml(entry.name, entry.manifest_yaml.as_deref()),
                    receipt,
                )
            })
            .collect())
    }
}

#[cfg(test)]
#[path = "installed_tests.rs"]
mod tests;
