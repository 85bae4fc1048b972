//! Verify (SPEC §11): re-read a plugin's installed tree through the
//! container port, under the staging caps, and compare it with its
//! receipt. The comparison is the domain's `compare_installed`.

use std::sync::Arc;

use super::container::{Operation, container_failure, require_running};
use crate::app::error::AppError;
use crate::app::restart::Restarter;
use crate::domain::drift::{Drift, Expected, compare_installed};
use crate::domain::name::PluginName;
use crate::domain::workspace::Workspace;
use crate::ports::container::{ContainerEngine, TreeReadLimits, WorkspaceConfigs};
use crate::ports::coordination::WorkspaceLocks;
use crate::ports::receipts::ReceiptStore;

/// Compares installed plugins with their receipts.
#[derive(Clone)]
pub struct Verifier {
    pub(super) engine: Arc<dyn ContainerEngine>,
    pub(super) configs: Arc<dyn WorkspaceConfigs>,
    pub(super) receipts: Arc<dyn ReceiptStore>,
    pub(super) restarts: Restarter,
    pub(super) locks: Arc<dyn WorkspaceLocks>,
    /// The staging caps: no staged plugin is larger.
    pub(super) limits: TreeReadLimits,
}

impl Verifier {
    /// Verify (SPEC §11), after auth and the workspace record. Runs under
    /// the workspace's lock, so an install or uninstall in progress is
    /// compared once it is done, never half-way.
    pub async fn verify(&self, workspace: &Workspace, raw_name: &str) -> Result<Drift, AppError> {
        let name = PluginName::parse(raw_name).map_err(|_| AppError::InvalidPluginName)?;
        self.restarts.wait_for_restart(&workspace.id).await;
        let container = require_running(self.engine.as_ref(), workspace).await?;
        let _serialized = self.locks.hold(&workspace.id, None).await.map_err(|e| {
            AppError::not_held(e, || AppError::internal("verify waited for no deadline"))
        })?;
        let receipt = self
            .receipts
            .receipt(&workspace.id, &name)
            .await
            .map_err(AppError::Store)?;
        let tree = self
            .configs
            .hash_installed(&container, &name, &self.limits)
            .await
            .map_err(|e| container_failure(e, Operation::Verify))?;
        let expected = receipt.as_ref().map(|r| Expected {
            digest: &r.digest,
            files: r.provenance.as_ref().map(|p| p.files.as_slice()),
        });
        compare_installed(expected, tree.as_ref()).ok_or(AppError::NotInstalled(name))
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
