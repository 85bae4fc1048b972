//! Update (SPEC §11): re-install a plugin from its receipt's source
//! through the whole install path (the `Installer`: guard, staging
//! pipeline, allowlist, atomic delivery, receipt, restart), recorded as
//! `update`, and say what changed: the revisions and digests before and
//! after, and the file-level diff (the domain's `diff_files`) between the
//! receipt's files and the staged tree's. A dry run stages and diffs only.

use std::sync::Arc;

use super::access::Principal;
use super::audit::AuditTrail;
use super::install::{Installed, Installer};
use crate::app::error::AppError;
use crate::domain::audit::AuditAction;
use crate::domain::digest::{FileDigest, TreeDigest};
use crate::domain::drift::{PathDiff, diff_files};
use crate::domain::name::PluginName;
use crate::domain::receipt::Receipt;
use crate::domain::workspace::Workspace;
use crate::ports::receipts::ReceiptStore;

/// A revision and the content it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revisioned {
    pub revision: Option<String>,
    pub digest: TreeDigest,
}

/// What an update did, or (dry run) would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Updated {
    /// The install's answer; `None` for a dry run (nothing delivered).
    pub installed: Option<Installed>,
    pub plugin: PluginName,
    /// The receipt's source, normalized.
    pub source: String,
    /// What the receipt recorded.
    pub from: Revisioned,
    /// What was staged from the source now.
    pub to: Revisioned,
    /// From the receipt's files to the staged tree's; `None` when the
    /// receipt is from before files were recorded (only the digests tell).
    pub diff: Option<PathDiff>,
}

/// Re-installs plugins from their receipts' sources.
#[derive(Clone)]
pub struct Updater {
    pub(super) install: Installer,
    pub(super) receipts: Arc<dyn ReceiptStore>,
    pub(super) audit: AuditTrail,
}

impl Updater {
    /// Update (SPEC §11), after auth and the workspace record. No receipt
    /// → [`AppError::NoInstallRecord`]. Every update writes one `update`
    /// event (with its receipt when it delivered); a dry run writes none
    /// and restarts nothing.
    pub async fn update(
        &self,
        principal: &Principal,
        workspace: &Workspace,
        raw_name: &str,
        dry_run: bool,
    ) -> Result<Updated, AppError> {
        let receipt = self.receipt(workspace, raw_name).await;
        if receipt.is_err() && !dry_run {
            let mut draft = AuditTrail::draft(AuditAction::Update, principal, Some(&workspace.id));
            draft.plugin = PluginName::parse(raw_name).ok();
            self.audit.conclude(draft, &receipt, |_| None).await;
        }
        let receipt = receipt?;
        let from = Revisioned {
            revision: receipt.revision().map(str::to_owned),
            digest: receipt.digest.clone(),
        };
        let before = receipt.provenance.as_ref().map(|p| p.files.as_slice());
        if dry_run {
            let staged = self.install.stage_only(workspace, &receipt.source).await?;
            return Ok(Updated {
                installed: None,
                plugin: staged.name.clone(),
                source: staged.source.redacted(),
                to: Revisioned {
                    revision: staged.revision.clone(),
                    digest: staged.digest.clone(),
                },
                diff: diff(before, &staged.tree.files),
                from,
            });
        }
        let source = receipt.source.clone();
        let read_body = async move { Ok((Some(source), None)) };
        let (installed, staged) = self
            .install
            .install_as(AuditAction::Update, principal, workspace, read_body)
            .await?;
        let (plugin, source, digest) = match &installed {
            Installed::Installed {
                plugin,
                source,
                digest,
            }
            | Installed::Unchanged {
                plugin,
                source,
                digest,
            } => (plugin.clone(), source.clone(), digest.clone()),
        };
        Ok(Updated {
            plugin,
            source,
            to: Revisioned {
                revision: staged.revision,
                digest,
            },
            diff: diff(before, &staged.files),
            from,
            installed: Some(installed),
        })
    }

    /// The plugin's receipt in the workspace.
    async fn receipt(&self, workspace: &Workspace, raw_name: &str) -> Result<Receipt, AppError> {
        let name = PluginName::parse(raw_name).map_err(|_| AppError::InvalidPluginName)?;
        self.receipts
            .receipt(&workspace.id, &name)
            .await
            .map_err(AppError::Store)?
            .ok_or(AppError::NoInstallRecord(name))
    }
}

fn diff(before: Option<&[FileDigest]>, after: &[FileDigest]) -> Option<PathDiff> {
    before.map(|before| diff_files(before, after))
}

#[cfg(test)]
#[path = "update_tests.rs"]
mod tests;
