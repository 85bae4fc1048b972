//! Uninstall (SPEC §5): read what the plugin put in the container, strip
//! its memory blocks, remove its skills and directory under the
//! workspace's lock, drop its receipt, and ask for a restart.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, timeout_at};

use super::access::Principal;
use super::audit::AuditTrail;
use super::container::{Operation, container_failure, require_running};
use crate::app::error::AppError;
use crate::app::restart::Restarter;
use crate::domain::audit::{AuditAction, AuditEvent, AuditOutcome};
use crate::domain::manifest::Manifest;
use crate::domain::memory::strip_memory_blocks;
use crate::domain::name::PluginName;
use crate::domain::runtime::{PushOperation, runtime_guard};
use crate::domain::workspace::Workspace;
use crate::ports::container::{
    ContainerEngine, ContainerId, MemoryFile, Removal, RemovalError, WorkspaceConfigs,
};
use crate::ports::coordination::WorkspaceLocks;
use crate::ports::receipts::ReceiptStore;

/// Removes plugins from workspace containers.
#[derive(Clone)]
pub struct Uninstaller {
    pub(super) engine: Arc<dyn ContainerEngine>,
    pub(super) configs: Arc<dyn WorkspaceConfigs>,
    pub(super) receipts: Arc<dyn ReceiptStore>,
    pub(super) audit: AuditTrail,
    pub(super) restarts: Restarter,
    pub(super) locks: Arc<dyn WorkspaceLocks>,
    /// The same deadline as an install's.
    pub(super) fetch_timeout: Duration,
}

impl Uninstaller {
    /// Uninstall (SPEC §5), after auth and the workspace record, under the
    /// same deadline as an install. Its audit event (SPEC §11) goes with
    /// the receipt's deletion when the plugin is removed, and on its own
    /// otherwise.
    pub async fn uninstall(
        &self,
        principal: &Principal,
        workspace: &Workspace,
        raw_name: &str,
    ) -> Result<PluginName, AppError> {
        let mut draft = AuditTrail::draft(AuditAction::Uninstall, principal, Some(&workspace.id));
        let result = self.run(workspace, raw_name, &mut draft).await;
        // A removal is recorded with its receipt's deletion (`remove`).
        self.audit.conclude(draft, &result, |_| None).await;
        result
    }

    async fn run(
        &self,
        workspace: &Workspace,
        raw_name: &str,
        draft: &mut AuditEvent,
    ) -> Result<PluginName, AppError> {
        runtime_guard(&workspace.spec.runtime, PushOperation::Uninstall)
            .map_err(AppError::Guard)?;
        let name = PluginName::parse(raw_name).map_err(|_| AppError::InvalidPluginName)?;
        draft.plugin = Some(name.clone());
        let container = require_running(self.engine.as_ref(), workspace).await?;
        let deadline = Instant::now() + self.fetch_timeout;
        // Like a delivery, a removal runs to its end even without its client.
        let removal = tokio::spawn({
            let this = self.clone();
            let workspace = workspace.clone();
            let draft = draft.clone();
            async move {
                match timeout_at(
                    deadline,
                    this.remove(&workspace, &container, &name, draft, deadline),
                )
                .await
                {
                    Ok(result) => result.map(|()| name),
                    Err(_) => {
                        tracing::warn!(workspace = %workspace.id, "uninstall deadline fired");
                        Err(AppError::UninstallTimedOut)
                    }
                }
            }
        });
        removal
            .await
            .map_err(|e| AppError::internal(format!("removal task failed: {e}")))?
    }

    /// The removal under the workspace's lock; on success the receipt's
    /// deletion carries `draft`, completed with the receipt's source and
    /// digest (what was removed).
    async fn remove(
        &self,
        workspace: &Workspace,
        container: &ContainerId,
        name: &PluginName,
        draft: AuditEvent,
        deadline: Instant,
    ) -> Result<(), AppError> {
        let _serialized = self
            .locks
            .hold(&workspace.id, Some(deadline.into_std()))
            .await
            .map_err(|e| AppError::not_held(e, || AppError::UninstallTimedOut))?;
        let mut event = draft;
        match self.receipts.receipt(&workspace.id, name).await {
            Ok(Some(receipt)) => {
                event = event.with_recorded_source(&receipt.source);
                event.digest = Some(receipt.digest);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(workspace = %workspace.id, plugin = %name, error = ?e, "could not read the receipt for the audit event");
            }
        }
        let Some(memory) = self
            .configs
            .read_plugin_memory(container, name)
            .await
            .map_err(|e| container_failure(e, Operation::Remove))?
        else {
            self.drop_receipt(workspace, name).await;
            return Err(AppError::NotInstalled(name.clone()));
        };
        let manifest = Manifest::from_yaml(name.clone(), memory.manifest_yaml.as_deref());
        let mut skills = Vec::new();
        for skill in &manifest.skills {
            match PluginName::parse(skill) {
                Ok(skill) => skills.push(skill),
                Err(_) => tracing::warn!(plugin = %name, skill, "skipping invalid skill name"),
            }
        }
        let removal = Removal {
            plugin: name.clone(),
            memory_file: stripped_memory_file(workspace, name, &memory),
            skills,
        };
        // From here the directory may change, so its receipt can no longer be
        // trusted, whatever the outcome.
        self.drop_receipt(workspace, name).await;
        match self.configs.remove(container, &removal).await {
            Ok(()) => {}
            Err(RemovalError::NotInstalled) => return Err(AppError::NotInstalled(name.clone())),
            Err(RemovalError::Incomplete(cause)) => return Err(AppError::RemoveFailed(cause)),
            Err(RemovalError::Configs(e)) => return Err(container_failure(e, Operation::Remove)),
        }
        // The receipt went above, before the container was touched; this
        // deletion confirms it, in one transaction with the event.
        let event = AuditTrail::succeeded(&event, AuditOutcome::Ok, 200);
        if let Err(e) = self
            .receipts
            .delete_receipt(&workspace.id, name, Some(&event))
            .await
        {
            tracing::error!(workspace = %workspace.id, plugin = %name, actor = %event.actor, action = %event.action, error = ?e, "could not record the uninstall and its audit event");
        }
        self.restarts.request(workspace).await;
        tracing::info!(workspace = %workspace.id, plugin = %name, "plugin uninstalled");
        Ok(())
    }

    async fn drop_receipt(&self, workspace: &Workspace, name: &PluginName) {
        if let Err(e) = self
            .receipts
            .delete_receipt(&workspace.id, name, None)
            .await
        {
            tracing::error!(workspace = %workspace.id, plugin = %name, error = ?e, "could not delete install receipt");
        }
    }
}

/// CLAUDE.md without the plugin's blocks (SPEC §2), or `None` when it
/// stays as it is (missing, over its bound, not UTF-8, or no block).
fn stripped_memory_file(
    workspace: &Workspace,
    name: &PluginName,
    memory: &crate::ports::container::PluginMemory,
) -> Option<MemoryFile> {
    let file = memory.memory_file.as_ref()?;
    let Ok(text) = std::str::from_utf8(&file.content) else {
        tracing::warn!(workspace = %workspace.id, "CLAUDE.md is not UTF-8; memory blocks left in place");
        return None;
    };
    let stripped = strip_memory_blocks(text, name.as_str(), &memory.sources);
    (stripped != text).then(|| MemoryFile {
        content: stripped.into_bytes(),
        mode: file.mode,
    })
}

#[cfg(test)]
#[path = "uninstall_tests.rs"]
mod tests;
