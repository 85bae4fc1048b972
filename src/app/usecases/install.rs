//! Install (SPEC §5): stage the source, pass the org allowlist, deliver
//! into the running container under the workspace's lock, keep the
//! receipt true, and ask for a restart. Each step is a domain rule or a
//! port call, in the order of the spec.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, timeout_at};

use super::access::Principal;
use super::allowlist::AllowlistGate;
use super::audit::AuditTrail;
use super::container::{Operation, container_failure, require_running};
use super::staging::{Staged, Stager};
use crate::app::error::AppError;
use crate::app::restart::Restarter;
use crate::domain::audit::{AuditAction, AuditEvent, AuditOutcome};
use crate::domain::digest::TreeDigest;
use crate::domain::manifest::Manifest;
use crate::domain::name::PluginName;
use crate::domain::receipt::{Provenance, Receipt};
use crate::domain::runtime::{PushOperation, runtime_guard};
use crate::domain::source::Source;
use crate::domain::workspace::Workspace;
use crate::ports::container::{ContainerEngine, ContainerId, DeliveryError, WorkspaceConfigs};
use crate::ports::coordination::{WorkspaceHold, WorkspaceLocks};
use crate::ports::receipts::ReceiptStore;

/// What an install did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    Installed {
        plugin: PluginName,
        source: String,
        digest: TreeDigest,
    },
    /// The same content was already there: nothing copied, no restart.
    Unchanged {
        plugin: PluginName,
        source: String,
        digest: TreeDigest,
    },
}

/// Installs plugins into workspace containers.
#[derive(Clone)]
pub struct Installer {
    pub(super) stager: Stager,
    pub(super) allowlist: AllowlistGate,
    pub(super) engine: Arc<dyn ContainerEngine>,
    pub(super) configs: Arc<dyn WorkspaceConfigs>,
    pub(super) receipts: Arc<dyn ReceiptStore>,
    pub(super) audit: AuditTrail,
    pub(super) restarts: Restarter,
    pub(super) locks: Arc<dyn WorkspaceLocks>,
    /// Bounds fetching and delivering one plugin.
    pub(super) fetch_timeout: Duration,
}

impl Installer {
    /// Install (SPEC §5), after auth and the workspace record. `read_body`
    /// is called only once the runtime guard has passed. Its audit event
    /// (SPEC §11) goes with the receipt when the plugin is placed, and on
    /// its own otherwise.
    pub async fn install<F>(
        &self,
        principal: &Principal,
        workspace: &Workspace,
        read_body: F,
    ) -> Result<Installed, AppError>
    where
        F: std::future::Future<Output = Result<(Option<String>, Option<String>), AppError>>,
    {
        self.install_as(AuditAction::Install, principal, workspace, read_body)
            .await
            .map(|(installed, _)| installed)
    }

    /// [`Installer::install`], recorded as `action` (an update re-installs
    /// through here, recorded as [`AuditAction::Update`]), with the
    /// provenance of what was staged (what an update diffs).
    pub async fn install_as<F>(
        &self,
        action: AuditAction,
        principal: &Principal,
        workspace: &Workspace,
        read_body: F,
    ) -> Result<(Installed, Provenance), AppError>
    where
        F: std::future::Future<Output = Result<(Option<String>, Option<String>), AppError>>,
    {
        let mut draft = AuditTrail::draft(action, principal, Some(&workspace.id));
        let result = self.run(workspace, read_body, &mut draft).await;
        self.audit
            .conclude(draft, &result, |(installed, _)| match installed {
                // Recorded with its receipt (`deliver_in_place`).
                Installed::Installed { .. } => None,
                Installed::Unchanged { .. } => Some((AuditOutcome::Unchanged, 200)),
            })
            .await;
        result
    }

    /// Every step of the install path short of the container (the runtime
    /// guard, the staging pipeline, the allowlist) for `source`, delivering
    /// nothing and writing no event: what an update's dry run shows. Waits
    /// for an install in progress at the workspace, like an install.
    pub async fn stage_only(
        &self,
        workspace: &Workspace,
        source: &str,
    ) -> Result<Staged, AppError> {
        // A draft nobody concludes: a dry run writes no event.
        let mut draft = AuditTrail::draft(AuditAction::Update, &Principal::Admin, None);
        let read_body = async { Ok((Some(source.to_owned()), None)) };
        let (_serialized, staged, _) = self.prepare(workspace, read_body, &mut draft).await?;
        Ok(staged)
    }

    /// The install; `draft` learns the source, plugin and digest as they
    /// become known.
    async fn run<F>(
        &self,
        workspace: &Workspace,
        read_body: F,
        draft: &mut AuditEvent,
    ) -> Result<(Installed, Provenance), AppError>
    where
        F: std::future::Future<Output = Result<(Option<String>, Option<String>), AppError>>,
    {
        let (serialized, staged, deadline) = self.prepare(workspace, read_body, draft).await?;
        let container = require_running(self.engine.as_ref(), workspace).await?;
        let provenance = provenance(&staged);
        // The delivery runs to its end (or its deadline) even when the client
        // goes away, so the receipt it leaves always says what is in place.
        let delivery = tokio::spawn(self.clone().deliver(
            serialized,
            draft.clone(),
            workspace.clone(),
            container,
            staged,
            deadline,
        ));
        let installed = delivery
            .await
            .map_err(|e| AppError::internal(format!("delivery task failed: {e}")))??;
        Ok((installed, provenance))
    }

    /// The guard, the body, the workspace's lock, the staging pipeline and
    /// the allowlist, in the spec's order: the staged plugin, with the lock
    /// it holds and its deadline.
    async fn prepare<F>(
        &self,
        workspace: &Workspace,
        read_body: F,
        draft: &mut AuditEvent,
    ) -> Result<(WorkspaceHold, Staged, Instant), AppError>
    where
        F: std::future::Future<Output = Result<(Option<String>, Option<String>), AppError>>,
    {
        runtime_guard(&workspace.spec.runtime, PushOperation::Install).map_err(AppError::Guard)?;
        let (source, sha256) = read_body.await?;
        if let Some(parsed) = source.as_deref().and_then(|s| Source::parse(s).ok()) {
            *draft = draft.clone().with_source(&parsed);
        }
        let deadline = Instant::now() + self.fetch_timeout;
        // One install per workspace at a time, from the fetch on: a burst at
        // one workspace waits here holding no fetch slot, so it cannot take
        // every slot away from the other tenants (SPEC §4 step 8).
        let serialized = self
            .locks
            .hold(&workspace.id, Some(deadline.into_std()))
            .await
            .map_err(|e| {
                AppError::not_held(e, || AppError::InstallTimedOut {
                    source_text: source
                        .as_deref()
                        .and_then(|s| Source::parse(s).ok())
                        .map(|s| s.redacted())
                        .unwrap_or_default(),
                })
            })?;
        let staged = self
            .stager
            .stage_in_place(source.as_deref(), sha256.as_deref(), deadline)
            .await?;
        draft.plugin = Some(staged.name.clone());
        draft.digest = Some(staged.digest.clone());
        self.allowlist.enforce(workspace, &staged.name).await?;
        Ok((serialized, staged, deadline))
    }

    async fn deliver(
        self,
        serialized: WorkspaceHold,
        draft: AuditEvent,
        workspace: Workspace,
        container: ContainerId,
        staged: Staged,
        deadline: Instant,
    ) -> Result<Installed, AppError> {
        let source_text = staged.source.redacted();
        let name = staged.name.clone();
        let result = match timeout_at(
            deadline,
            self.deliver_in_place(&draft, &workspace, &container, &staged),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(workspace = %workspace.id, plugin = %name, "install deadline fired during delivery");
                Err(AppError::InstallTimedOut { source_text })
            }
        };
        drop(serialized);
        result
    }

    /// Delivery; the caller holds the workspace's lock. The receipt is taken away before
    /// the container is touched and written back only once the outcome is
    /// known: after a cut-off delivery there is no receipt, never a wrong one
    /// (SPEC §6 "receipts never claim what the container does not hold"),
    /// together with the request's audit event.
    async fn deliver_in_place(
        &self,
        draft: &AuditEvent,
        workspace: &Workspace,
        container: &ContainerId,
        staged: &Staged,
    ) -> Result<Installed, AppError> {
        let name = &staged.name;
        let source = staged.source.redacted();

        let previous = self
            .receipts
            .receipt(&workspace.id, name)
            .await
            .map_err(AppError::Store)?;
        if let Some(previous) = previous.as_ref().filter(|r| r.matches(&staged.digest))
            && self
                .configs
                .is_installed(container, name)
                .await
                .map_err(|e| container_failure(e, Operation::Deliver))?
        {
            tracing::debug!(workspace = %workspace.id, plugin = %name, installed_from = %previous.source, "unchanged");
            return Ok(Installed::Unchanged {
                plugin: name.clone(),
                source,
                digest: staged.digest.clone(),
            });
        }
        if previous.is_some() {
            self.receipts
                .delete_receipt(&workspace.id, name, None)
                .await
                .map_err(AppError::Store)?;
        }
        let delivered = match &staged.tree.in_place {
            Some(tree) => self.configs.deliver_in_place(container, name, tree).await,
            None => {
                self.configs
                    .deliver(container, name, staged.dir.path())
                    .await
            }
        };
        match delivered {
            Ok(()) => {}
            Err(DeliveryError::NotPlaced(e)) => {
                // The previous version is still there: so is its receipt.
                if let Some(previous) = &previous
                    && let Err(store) = self.receipts.put_receipt(previous, None).await
                {
                    tracing::error!(workspace = %workspace.id, plugin = %name, error = ?store, "could not restore the previous receipt");
                }
                return Err(container_failure(e, Operation::Deliver));
            }
            Err(DeliveryError::Unknown(e)) => {
                tracing::error!(workspace = %workspace.id, plugin = %name, error = ?e, "delivery cut off; receipt dropped");
                return Err(container_failure(e, Operation::Deliver));
            }
        }

        let receipt = Receipt {
            workspace_id: workspace.id.clone(),
            plugin: name.clone(),
            source: source.clone(),
            digest: staged.digest.clone(),
            size_bytes: staged.tree.total_bytes,
            installed_at: crate::app::now(),
            installed_by: draft.actor.clone(),
            provenance: Some(provenance(staged)),
        };
        let event = AuditTrail::succeeded(draft, AuditOutcome::Ok, 200);
        // The plugin is in place: a lost receipt only costs the next
        // "unchanged" shortcut and the listed digest, so it is not fatal.
        // Its event is lost with it (one transaction), and logged here.
        if let Err(e) = self.receipts.put_receipt(&receipt, Some(&event)).await {
            tracing::error!(workspace = %workspace.id, plugin = %name, actor = %event.actor, action = %event.action, error = ?e, "could not record install receipt and its audit event");
        }
        self.restarts.request(workspace).await;
        tracing::info!(workspace = %workspace.id, plugin = %name, %source, digest = %staged.digest, "plugin installed");
        Ok(Installed::Installed {
            plugin: name.clone(),
            source,
            digest: staged.digest.clone(),
        })
    }
}

/// What a receipt records of where the staged content came from (SPEC §11).
fn provenance(staged: &Staged) -> Provenance {
    let manifest = Manifest::from_yaml(staged.name.clone(), staged.tree.plugin_yaml.as_deref());
    Provenance {
        revision: staged.revision.clone(),
        version: manifest.version,
        files: staged.tree.files.clone(),
    }
}

#[cfg(test)]
#[path = "install_tests.rs"]
mod tests;
