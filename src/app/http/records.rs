//! Provenance and drift (SPEC §11): a plugin's installations across the
//! fleet (admin), a workspace's lock and outdated plugins, and the verify
//! of one installed plugin (the workspace's token or the admin token).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use crate::app::error::AppError;
use crate::app::http::ApiTags;
use crate::app::http::dto::{CURSOR_REFUSAL, page_limit};
use crate::app::http::extract::Caller;
use crate::app::http::problem::{Container, Problem};
use crate::app::usecases::UseCases;
use crate::app::usecases::outdated::OutdatedEntry;
use crate::domain::digest::TreeDigest;
use crate::domain::drift::Drift;
use crate::domain::name::{PluginName, WorkspaceId};

pub struct RecordsApi;

/// One workspace whose receipt names the plugin.
#[derive(Debug, Object)]
pub struct Installation {
    pub workspace_id: String,
    /// The normalized source it was installed from.
    pub source: String,
    /// The commit a `github` ref resolved to, the archive sha256 of an
    /// `https` source; null for `local` or a receipt from before
    /// revisions were recorded.
    #[oai(nullable)]
    pub revision: Option<String>,
    /// The `h1:` content digest.
    pub digest: String,
    /// `version` of its `plugin.yaml` (`""` when none); null on a receipt
    /// from before versions were recorded.
    #[oai(nullable)]
    pub version: Option<String>,
    pub installed_at: DateTime<Utc>,
    /// `admin` or the id of the token that installed it.
    pub installed_by: String,
}

/// A page of installations, by workspace id.
#[derive(Debug, Object)]
pub struct InstallationsPage {
    pub installations: Vec<Installation>,
    /// Pass as `cursor` for the next page; null at the end.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

/// What reproduces one plugin of the workspace.
#[derive(Debug, Object)]
pub struct LockedPlugin {
    pub name: String,
    pub source: String,
    #[oai(nullable)]
    pub revision: Option<String>,
    pub digest: String,
}

/// What another workspace needs to reproduce this one byte for byte.
#[derive(Debug, Object)]
pub struct Lock {
    pub workspace_id: String,
    /// Sorted by name.
    pub plugins: Vec<LockedPlugin>,
}

/// What an install record says is installed.
#[derive(Debug, Object)]
pub struct InstalledRevision {
    /// The commit a `github` ref resolved to, the archive sha256 of an
    /// `https` source; null for `local` or a receipt from before
    /// revisions were recorded.
    #[oai(nullable)]
    pub revision: Option<String>,
    /// The `h1:` content digest.
    pub digest: String,
    /// `version` of its `plugin.yaml` (`""` when none); null on a receipt
    /// from before versions were recorded.
    #[oai(nullable)]
    pub version: Option<String>,
}

/// What the source offers now, as far as it is known without staging it:
/// a ref's new commit has no digest or version yet.
#[derive(Debug, Object)]
pub struct AvailableRevision {
    /// The commit the ref points at now; null for `local`.
    #[oai(nullable)]
    pub revision: Option<String>,
    /// The `h1:` digest of the content now; null for a ref that moved.
    #[oai(nullable)]
    pub digest: Option<String>,
    /// `version` of the `plugin.yaml` now; null for a ref that moved.
    #[oai(nullable)]
    pub version: Option<String>,
}

/// One install record against its source.
#[derive(Debug, Object)]
pub struct OutdatedPlugin {
    pub plugin: String,
    /// The normalized source it was installed from.
    pub source: String,
    pub installed: InstalledRevision,
    /// Null when `pinned` or `unavailable`.
    #[oai(nullable)]
    pub available: Option<AvailableRevision>,
    /// `current`, `outdated`, `pinned` (a full commit sha or an `https`
    /// source never moves) or `unavailable` (see `reason`).
    pub status: String,
    /// Why the source could not be told (only with `unavailable`).
    #[oai(nullable)]
    pub reason: Option<String>,
}

/// Each install record of the workspace against what its source offers now.
#[derive(Debug, Object)]
pub struct OutdatedReport {
    pub workspace_id: String,
    /// Sorted by plugin name.
    pub plugins: Vec<OutdatedPlugin>,
}

impl OutdatedPlugin {
    fn new(entry: OutdatedEntry) -> Self {
        let OutdatedEntry { receipt, check } = entry;
        Self {
            plugin: receipt.plugin.to_string(),
            installed: InstalledRevision {
                revision: receipt.revision().map(str::to_owned),
                digest: receipt.digest.to_string(),
                version: receipt.version().map(str::to_owned),
            },
            source: receipt.source,
            available: check.available.map(|a| AvailableRevision {
                revision: a.revision,
                digest: a.digest.map(|d| d.to_string()),
                version: a.version,
            }),
            status: check.status.as_str().to_owned(),
            reason: check.status.reason().map(str::to_owned),
        }
    }
}

/// An installed plugin compared with its receipt.
#[derive(Debug, Object)]
pub struct Verification {
    pub plugin: String,
    /// `ok`, `modified`, `missing` (a receipt, no directory) or
    /// `untracked` (a directory, no receipt).
    pub status: String,
    /// The receipt's `h1:` digest; null without a receipt.
    #[oai(nullable)]
    pub expected_digest: Option<String>,
    /// The `h1:` digest of the directory as read; null when it is missing,
    /// was not read whole, or holds symlinks or special files.
    #[oai(nullable)]
    pub actual_digest: Option<String>,
    /// Paths in the directory the receipt does not name (sorted, at most 100).
    pub added: Vec<String>,
    /// Paths the receipt names that the directory lacks (sorted, at most 100).
    pub removed: Vec<String>,
    /// Paths whose content differs or that are no longer regular files
    /// (sorted, at most 100).
    pub changed: Vec<String>,
    /// A path list was cut at 100, or the directory was larger than any
    /// staged plugin and was not read whole.
    pub truncated: bool,
}

impl Verification {
    fn new(plugin: String, drift: Drift) -> Self {
        Self {
            plugin,
            status: drift.status.as_str().to_owned(),
            expected_digest: drift.expected_digest.map(|d| d.to_string()),
            actual_digest: drift.actual_digest.map(|d| d.to_string()),
            added: drift.added,
            removed: drift.removed,
            changed: drift.changed,
            truncated: drift.truncated,
        }
    }
}

/// Cursors are opaque to clients: the last workspace id of a page,
/// base64url-encoded.
fn encode_cursor(after: &WorkspaceId) -> String {
    URL_SAFE_NO_PAD.encode(after.as_str())
}

fn decode_cursor(raw: &str) -> Result<WorkspaceId, AppError> {
    URL_SAFE_NO_PAD
        .decode(raw)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|id| WorkspaceId::parse(&id).ok())
        .ok_or_else(|| AppError::InvalidQuery(CURSOR_REFUSAL.into()))
}

fn parse_digest(raw: &str) -> Result<TreeDigest, AppError> {
    TreeDigest::parse(raw.trim()).ok_or_else(|| {
        AppError::InvalidQuery(
            "digest must be an h1 digest as installs report it (h1:<base64 of a SHA-256>)".into(),
        )
    })
}

#[OpenApi(tag = "ApiTags::WorkspacePlugins")]
impl RecordsApi {
    /// Every workspace whose receipt names the plugin (admin)
    ///
    /// Sorted by workspace id; `digest` keeps those at one digest (the
    /// blast radius of a bad release); follow `next_cursor` for the next
    /// page. Read from receipts: no container is asked.
    #[oai(
        path = "/plugins/:name/installations",
        method = "get",
        operation_id = "listInstallations"
    )]
    async fn installations(
        &self,
        app: Data<&Arc<UseCases>>,
        caller: Caller,
        name: Path<String>,
        /// Only installations with this `h1:` digest.
        digest: Query<Option<String>>,
        /// 1–500, default 100.
        limit: Query<Option<String>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<InstallationsPage>, Problem> {
        app.access.authorize_admin(&caller.0).await?;
        let plugin = PluginName::parse(&name).map_err(|_| AppError::InvalidPluginName)?;
        let digest = digest.0.as_deref().map(parse_digest).transpose()?;
        let limit = page_limit(limit.0.as_deref())?;
        let after = cursor.0.as_deref().map(decode_cursor).transpose()?;
        let page = app
            .records
            .installations(&plugin, digest, after, limit)
            .await?;
        Ok(Json(InstallationsPage {
            installations: page
                .installations
                .into_iter()
                .map(|r| Installation {
                    workspace_id: r.workspace_id.to_string(),
                    revision: r.revision().map(str::to_owned),
                    version: r.version().map(str::to_owned),
                    source: r.source,
                    digest: r.digest.to_string(),
                    installed_at: r.installed_at,
                    installed_by: r.installed_by,
                })
                .collect(),
            next_cursor: page.next_after.as_ref().map(encode_cursor),
        }))
    }

    /// What reproduces the workspace's plugins byte for byte
    ///
    /// From the install receipts, sorted by name.
    #[oai(
        path = "/workspaces/:id/plugins/lock",
        method = "get",
        operation_id = "lockPlugins"
    )]
    async fn lock(
        &self,
        app: Data<&Arc<UseCases>>,
        caller: Caller,
        id: Path<String>,
    ) -> Result<Json<Lock>, Problem> {
        let (_, workspace) = app.access.authorize_workspace(&caller.0, &id).await?;
        let receipts = app.records.lock(&workspace.id).await?;
        Ok(Json(Lock {
            workspace_id: workspace.id.to_string(),
            plugins: receipts
                .into_iter()
                .map(|r| LockedPlugin {
                    name: r.plugin.to_string(),
                    revision: r.revision().map(str::to_owned),
                    source: r.source,
                    digest: r.digest.to_string(),
                })
                .collect(),
        }))
    }

    /// Which installed plugins their sources offer something newer for
    ///
    /// For each install record: a `github` tag or branch compares the
    /// commit it points at now (reading the git server's ref list only), a
    /// `local` plugin the registry's digest now; full commit shas and
    /// `https` sources are `pinned`. A source that cannot be looked up is
    /// `unavailable` with a `reason`. No container is asked.
    #[oai(
        path = "/workspaces/:id/plugins/outdated",
        method = "get",
        operation_id = "outdatedPlugins"
    )]
    async fn outdated(
        &self,
        app: Data<&Arc<UseCases>>,
        caller: Caller,
        id: Path<String>,
    ) -> Result<Json<OutdatedReport>, Problem> {
        let (_, workspace) = app.access.authorize_workspace(&caller.0, &id).await?;
        let entries = app.outdated.check(&workspace).await?;
        Ok(Json(OutdatedReport {
            workspace_id: workspace.id.to_string(),
            plugins: entries.into_iter().map(OutdatedPlugin::new).collect(),
        }))
    }

    /// Compare an installed plugin with its install receipt
    ///
    /// Re-reads `/configs/plugins/<name>` in the container (bounded by the
    /// staging caps; symlinks and special files are listed, never read)
    /// and names the added, removed and changed paths.
    #[oai(
        path = "/workspaces/:id/plugins/:name/verify",
        method = "get",
        operation_id = "verifyPlugin"
    )]
    async fn verify(
        &self,
        app: Data<&Arc<UseCases>>,
        caller: Caller,
        id: Path<String>,
        name: Path<String>,
    ) -> Result<Json<Verification>, Problem<Container>> {
        let (_, workspace) = app.access.authorize_workspace(&caller.0, &id).await?;
        let drift = app.verify.verify(&workspace, &name).await?;
        Ok(Json(Verification::new(name.0, drift)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_anything_else_is_refused() {
        let id = WorkspaceId::parse("ws-1").unwrap();
        assert_eq!(decode_cursor(&encode_cursor(&id)).unwrap(), id);
        for bad in ["ws-1", "!!!", "", &URL_SAFE_NO_PAD.encode("../x")] {
            assert!(decode_cursor(bad).is_err(), "{bad:?}");
        }
    }
}
