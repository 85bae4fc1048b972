//! Outdated (SPEC §11): for each receipt of a workspace, whether its
//! source offers something else now. A ref is looked up in the server's
//! ref list only; a registry plugin's digest is the remembered one while
//! its directory is unchanged, else it is staged in place (through
//! `content`, as a download does); pinned sources are not looked up. The
//! comparison is the domain's `check_update`.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use super::content::{Content, ContentResolver};
use crate::app::error::AppError;
use crate::domain::manifest::Manifest;
use crate::domain::receipt::Receipt;
use crate::domain::source::Source;
use crate::domain::staging::StagingError;
use crate::domain::updates::{Unavailable, UpdateCheck, Upstream, check_update};
use crate::domain::workspace::Workspace;
use crate::ports::receipts::ReceiptStore;
use crate::ports::resolver::RevisionNow;

/// Sources looked up at once for one request; the fetch slots bound them
/// across requests.
const LOOKUPS_AT_ONCE: usize = 4;

/// One receipt and what its source offers now.
#[derive(Debug, Clone)]
pub struct OutdatedEntry {
    pub receipt: Receipt,
    pub check: UpdateCheck,
}

/// Compares receipts with what their sources offer now.
#[derive(Clone)]
pub struct OutdatedCheck {
    pub(super) receipts: std::sync::Arc<dyn ReceiptStore>,
    pub(super) content: ContentResolver,
    /// Bounds the whole answer, as one fetch is bounded.
    pub(super) fetch_timeout: Duration,
}

impl OutdatedCheck {
    /// Outdated (SPEC §11), after auth and the workspace record: one entry
    /// per receipt, sorted by plugin name, all under one fetch deadline.
    pub async fn check(&self, workspace: &Workspace) -> Result<Vec<OutdatedEntry>, AppError> {
        let receipts = self
            .receipts
            .receipts(&workspace.id)
            .await
            .map_err(AppError::Store)?;
        let deadline = Instant::now() + self.fetch_timeout;
        Ok(futures_util::stream::iter(receipts)
            .map(|receipt| async move {
                let upstream = self.upstream(&receipt, deadline).await;
                let check = check_update(&receipt, upstream);
                OutdatedEntry { receipt, check }
            })
            .buffered(LOOKUPS_AT_ONCE)
            .collect()
            .await)
    }

    /// What the receipt's source offers now.
    async fn upstream(&self, receipt: &Receipt, deadline: Instant) -> Upstream {
        let Ok(source) = Source::parse(&receipt.source) else {
            return Upstream::Unavailable(Unavailable::Unsupported);
        };
        let found = match self.content.stager.revision_now(&source, deadline).await {
            Ok(RevisionNow::Pinned) => Ok(Upstream::Pinned),
            Ok(RevisionNow::At(revision)) => Ok(Upstream::Revision(revision)),
            Ok(RevisionNow::ContentOnly) => self.content_now(&source, deadline).await,
            Err(e) => Err(e),
        };
        found.unwrap_or_else(|e| {
            let why = unavailable(&e);
            tracing::info!(workspace = %receipt.workspace_id, plugin = %receipt.plugin, source = %source.redacted(), error = %e, reason = ?why, "outdated: source unavailable");
            Upstream::Unavailable(why)
        })
    }

    /// A source with no revision of its own: its content's digest now, and
    /// the version its `plugin.yaml` declares.
    async fn content_now(&self, source: &Source, deadline: Instant) -> Result<Upstream, AppError> {
        let resolved = self.content.resolve(source, deadline, false).await?;
        let version = match &resolved.content {
            Content::Staged(staged) => {
                Manifest::from_yaml(staged.name.clone(), staged.tree.plugin_yaml.as_deref()).version
            }
            // Unchanged since it was last hashed: as the registry lists it.
            Content::Remembered { name, .. } => self
                .content
                .registry
                .list()
                .await
                .map_err(AppError::Registry)?
                .plugins
                .iter()
                .find(|m| &m.name == name)
                .map(|m| m.version.clone())
                .unwrap_or_default(),
        };
        Ok(Upstream::Content {
            digest: resolved.digest,
            version,
        })
    }
}

/// The leak-free reason for a lookup that failed (its cause is logged).
fn unavailable(error: &AppError) -> Unavailable {
    match error {
        AppError::Staging(StagingError::NotFound { .. }) => Unavailable::Gone,
        AppError::Staging(StagingError::Timeout { .. }) => Unavailable::TimedOut,
        AppError::TooManyFetches => Unavailable::Busy,
        AppError::Staging(
            StagingError::NoResolver { .. }
            | StagingError::InvalidName { .. }
            | StagingError::InvalidSpec { .. }
            | StagingError::Unparsable
            | StagingError::SourceRequired,
        ) => Unavailable::Unsupported,
        AppError::Staging(StagingError::FetchFailed { .. }) => Unavailable::Unreachable,
        AppError::Staging(_) => Unavailable::Refused,
        _ => Unavailable::Unreachable,
    }
}

#[cfg(test)]
#[path = "outdated_tests.rs"]
mod tests;
