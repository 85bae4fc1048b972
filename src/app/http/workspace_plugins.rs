//! `/workspaces/:id/plugins…`: install, uninstall, installed list,
//! available and compatibility (SPEC §5), and update (§11). The workspace's token or the
//! admin token.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use crate::app::error::AppError;
use crate::app::http::ApiTags;
use crate::app::http::dto::PluginInfo;
use crate::app::http::extract::{Caller, JsonBody};
use crate::app::http::problem::{Container, ContainerAndAllowlist, Problem};
use crate::app::http::rendered::{RenderCache, RenderedJson};
use crate::app::usecases::UseCases;
use crate::app::usecases::install::Installed;
use crate::app::usecases::update::{Revisioned, Updated};
use crate::domain::runtime::Runtime;

/// The per-workspace plugin routes; `available` is rendered once per
/// registry generation and runtime.
#[derive(Default)]
pub struct WorkspacePluginsApi {
    available: RenderCache,
}

/// What to install.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(example, skip_serializing_if_is_none)]
pub struct InstallRequest {
    /// `<scheme>://<spec>`, e.g. `local://my-plugin`, or a bare registry name.
    pub source: Option<String>,
    /// Optional SHA-256 (64 hex) the staged `plugin.yaml` must have.
    pub sha256: Option<String>,
}

impl poem_openapi::types::Example for InstallRequest {
    fn example() -> Self {
        Self {
            source: Some("local://hello-world".into()),
            sha256: None,
        }
    }
}

/// The outcome of an install.
#[derive(Debug, Object)]
pub struct InstallResult {
    /// `installed`, or `unchanged` when the same content was already there
    /// (nothing copied, no restart).
    pub status: String,
    pub plugin: String,
    /// The normalized source.
    pub source: String,
    /// The plugin's `h1:` content digest.
    pub digest: String,
}

/// A revision and the content digest it had.
#[derive(Debug, Object)]
pub struct RevisionDigest {
    /// The commit a `github` ref resolved to, the archive sha256 of an
    /// `https` source; null for `local` (or a receipt from before
    /// revisions were recorded).
    #[oai(nullable)]
    pub revision: Option<String>,
    /// The `h1:` content digest.
    pub digest: String,
}

impl RevisionDigest {
    fn new(r: Revisioned) -> Self {
        Self {
            revision: r.revision,
            digest: r.digest.to_string(),
        }
    }
}

/// The outcome of an update: the install answer, what it was and is now,
/// and the file-level diff.
#[derive(Debug, Object)]
pub struct UpdateResult {
    /// `installed`, `unchanged` (the same content was already there:
    /// nothing copied, no restart) or `dry_run` (staged and diffed only).
    pub status: String,
    pub plugin: String,
    /// The normalized source, from the install record.
    pub source: String,
    /// The staged plugin's `h1:` digest (`to.digest`).
    pub digest: String,
    /// What the install record said.
    pub from: RevisionDigest,
    /// What the source gave now.
    pub to: RevisionDigest,
    /// Paths the new tree has and the recorded one had not (sorted, at most 100).
    pub added: Vec<String>,
    /// Paths the recorded tree had and the new one has not (sorted, at most 100).
    pub removed: Vec<String>,
    /// Paths in both whose content differs (sorted, at most 100).
    pub changed: Vec<String>,
    /// A path list was cut at 100.
    pub truncated: bool,
    /// False when the install record is from before per-file digests were
    /// recorded: the path lists are then empty, and only `from.digest`
    /// against `to.digest` tells whether the content changed.
    pub files_recorded: bool,
}

impl UpdateResult {
    fn new(updated: Updated) -> Self {
        let status = match &updated.installed {
            Some(Installed::Installed { .. }) => "installed",
            Some(Installed::Unchanged { .. }) => "unchanged",
            None => "dry_run",
        };
        let files_recorded = updated.diff.is_some();
        let diff = updated.diff.unwrap_or_default();
        Self {
            status: status.into(),
            plugin: updated.plugin.to_string(),
            source: updated.source,
            digest: updated.to.digest.to_string(),
            from: RevisionDigest::new(updated.from),
            to: RevisionDigest::new(updated.to),
            added: diff.added,
            removed: diff.removed,
            changed: diff.changed,
            truncated: diff.truncated,
            files_recorded,
        }
    }
}

/// The outcome of an uninstall.
#[derive(Debug, Object)]
pub struct UninstallResult {
    /// Always `uninstalled`.
    pub status: String,
    pub plugin: String,
}

/// An installed plugin.
#[derive(Debug, Object)]
pub struct InstalledPlugin {
    pub name: String,
    pub version: String,
    pub description: String,
    pub author: String,
    pub tags: Vec<String>,
    pub skills: Vec<String>,
    pub runtimes: Vec<String>,
    /// Whether it supports the workspace's current runtime.
    pub supported_on_runtime: bool,
    /// The `h1:` digest from its install receipt; null when something
    /// else put it there.
    #[oai(nullable)]
    pub digest: Option<String>,
    /// The normalized source it was installed from; null without a receipt.
    #[oai(nullable)]
    pub source: Option<String>,
    /// The commit a `github` ref resolved to, the archive sha256 of an
    /// `https` source; null for `local`, without a receipt, or on a
    /// receipt from before revisions were recorded.
    #[oai(nullable)]
    pub revision: Option<String>,
    /// When it was installed; null without a receipt.
    #[oai(nullable)]
    pub installed_at: Option<DateTime<Utc>>,
    /// `admin` or the id of the token that installed it; null without a
    /// receipt.
    #[oai(nullable)]
    pub installed_by: Option<String>,
}

/// The preflight for a runtime change.
#[derive(Debug, Object)]
pub struct CompatibilityReport {
    /// The runtime asked about, normalized.
    pub target_runtime: String,
    pub compatible: Vec<PluginInfo>,
    pub incompatible: Vec<PluginInfo>,
    pub all_compatible: bool,
}

#[OpenApi(tag = "ApiTags::WorkspacePlugins")]
impl WorkspacePluginsApi {
    /// List the plugins installed in the workspace
    ///
    /// Empty when the container is not running.
    #[oai(
        path = "/workspaces/:id/plugins",
        method = "get",
        operation_id = "listInstalled"
    )]
    async fn installed(
        &self,
        app: Data<&Arc<UseCases>>,
        caller: Caller,
        id: Path<String>,
    ) -> Result<Json<Vec<InstalledPlugin>>, Problem<Container>> {
        let (_, workspace) = app.access.authorize_workspace(&caller.0, &id).await?;
        let runtime = &workspace.spec.runtime;
        let listed = app.installed.list(&workspace).await?;
        Ok(Json(
            listed
                .into_iter()
                .map(|(m, receipt)| InstalledPlugin {
                    supported_on_runtime: m.supports(runtime),
                    digest: receipt.as_ref().map(|r| r.digest.to_string()),
                    revision: receipt
                        .as_ref()
                        .and_then(|r| r.revision().map(str::to_owned)),
                    installed_at: receipt.as_ref().map(|r| r.installed_at),
                    installed_by: receipt.as_ref().map(|r| r.installed_by.clone()),
                    source: receipt.map(|r| r.source),
                    name: m.name.to_string(),
                    version: m.version,
                    description: m.description,
                    author: m.author,
                    tags: m.tags,
                    skills: m.skills,
                    runtimes: m.runtimes,
                })
                .collect(),
        ))
    }

    /// List the registry plugins the workspace's runtime supports
    #[oai(
        path = "/workspaces/:id/plugins/available",
        method = "get",
        operation_id = "listAvailable"
    )]
    async fn available(
        &self,
        app: Data<&Arc<UseCases>>,
        caller: Caller,
        id: Path<String>,
    ) -> Result<RenderedJson<Vec<PluginInfo>>, Problem> {
        let (_, workspace) = app.access.authorize_workspace(&caller.0, &id).await?;
        let runtime = &workspace.spec.runtime;
        let catalog = app.registry.catalog().await?;
        Ok(self
            .available
            .get_or_render(catalog.generation, runtime.as_str(), || {
                catalog
                    .supporting(Some(runtime))
                    .map(|m| PluginInfo::from_manifest(m.clone(), Some(runtime)))
                    .collect()
            }))
    }

    /// Preflight a runtime change: which installed plugins keep working
    #[oai(
        path = "/workspaces/:id/plugins/compatibility",
        method = "get",
        operation_id = "checkCompatibility"
    )]
    async fn compatibility(
        &self,
        app: Data<&Arc<UseCases>>,
        caller: Caller,
        id: Path<String>,
        /// The runtime to switch to.
        runtime: Query<Option<String>>,
    ) -> Result<Json<CompatibilityReport>, Problem<Container>> {
        let (_, workspace) = app.access.authorize_workspace(&caller.0, &id).await?;
        let raw = runtime
            .0
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .ok_or(AppError::RuntimeRequired)?;
        let target = Runtime::parse(raw).map_err(|_| AppError::InvalidRuntime)?;
        let report = app.compatibility.check(&workspace, target).await?;
        let all_compatible = report.all_compatible();
        let target = report.target_runtime.clone();
        let info = |list: Vec<crate::domain::manifest::Manifest>| {
            list.into_iter()
                .map(|m| PluginInfo::from_manifest(m, Some(&target)))
                .collect()
        };
        Ok(Json(CompatibilityReport {
            target_runtime: report.target_runtime.to_string(),
            compatible: info(report.compatible),
            incompatible: info(report.incompatible),
            all_compatible,
        }))
    }

    /// Install a plugin into the workspace container
    ///
    /// Stages the source, checks policy, copies it into
    /// `/configs/plugins/<name>` atomically and restarts the workspace
    /// (debounced). External workspaces get 422: they pull via download.
    #[oai(
        path = "/workspaces/:id/plugins",
        method = "post",
        operation_id = "installPlugin"
    )]
    async fn install(
        &self,
        app: Data<&Arc<UseCases>>,
        caller: Caller,
        id: Path<String>,
        body: JsonBody<InstallRequest>,
    ) -> Result<Json<InstallResult>, Problem<ContainerAndAllowlist>> {
        let (principal, workspace) = app.access.authorize_workspace(&caller.0, &id).await?;
        let limit = app.body_max_bytes();
        let read_body = async move {
            let req = body.read(limit).await?;
            Ok((req.source, req.sha256))
        };
        let (status, plugin, source, digest) = match app
            .install
            .install(&principal, &workspace, read_body)
            .await?
        {
            Installed::Installed {
                plugin,
                source,
                digest,
            } => ("installed", plugin, source, digest),
            Installed::Unchanged {
                plugin,
                source,
                digest,
            } => ("unchanged", plugin, source, digest),
        };
        Ok(Json(InstallResult {
            status: status.into(),
            plugin: plugin.to_string(),
            source,
            digest: digest.to_string(),
        }))
    }

    /// Uninstall a plugin from the workspace container
    ///
    /// Strips its memory blocks from CLAUDE.md, removes its declared
    /// skills and its directory, then restarts the workspace (debounced).
    #[oai(
        path = "/workspaces/:id/plugins/:name",
        method = "delete",
        operation_id = "uninstallPlugin"
    )]
    async fn uninstall(
        &self,
        app: Data<&Arc<UseCases>>,
        caller: Caller,
        id: Path<String>,
        name: Path<String>,
    ) -> Result<Json<UninstallResult>, Problem<Container>> {
        uninstall_named(&app, &caller, &id, &name).await
    }

    // The router matches a literal segment before `:name`, so a plugin named
    // like one of the workspace's fixed routes (`GET …/plugins/lock`) would
    // answer 405 to its uninstall. These route that DELETE to the uninstall
    // above; hidden, so the document keeps one `uninstallPlugin` operation.

    #[oai(
        path = "/workspaces/:id/plugins/available",
        method = "delete",
        operation_id = "uninstallPlugin",
        hidden
    )]
    async fn uninstall_available(
        &self,
        app: Data<&Arc<UseCases>>,
        caller: Caller,
        id: Path<String>,
    ) -> Result<Json<UninstallResult>, Problem<Container>> {
        uninstall_named(&app, &caller, &id, "available").await
    }

    #[oai(
        path = "/workspaces/:id/plugins/compatibility",
        method = "delete",
        operation_id = "uninstallPlugin",
        hidden
    )]
    async fn uninstall_compatibility(
        &self,
        app: Data<&Arc<UseCases>>,
        caller: Caller,
        id: Path<String>,
    ) -> Result<Json<UninstallResult>, Problem<Container>> {
        uninstall_named(&app, &caller, &id, "compatibility").await
    }

    #[oai(
        path = "/workspaces/:id/plugins/lock",
        method = "delete",
        operation_id = "uninstallPlugin",
        hidden
    )]
    async fn uninstall_lock(
        &self,
        app: Data<&Arc<UseCases>>,
        caller: Caller,
        id: Path<String>,
    ) -> Result<Json<UninstallResult>, Problem<Container>> {
        uninstall_named(&app, &caller, &id, "lock").await
    }

    #[oai(
        path = "/workspaces/:id/plugins/outdated",
        method = "delete",
        operation_id = "uninstallPlugin",
        hidden
    )]
    async fn uninstall_outdated(
        &self,
        app: Data<&Arc<UseCases>>,
        caller: Caller,
        id: Path<String>,
    ) -> Result<Json<UninstallResult>, Problem<Container>> {
        uninstall_named(&app, &caller, &id, "outdated").await
    }

    /// Update a plugin from its install record's source
    ///
    /// Re-installs from the receipt's source through the whole install path
    /// (runtime guard, staging, allowlist, atomic delivery, restart) and
    /// names what changed. `dry_run=true` stages and diffs only: nothing is
    /// delivered, restarted or recorded. No receipt → 404.
    #[oai(
        path = "/workspaces/:id/plugins/:name/update",
        method = "post",
        operation_id = "updatePlugin"
    )]
    async fn update(
        &self,
        app: Data<&Arc<UseCases>>,
        caller: Caller,
        id: Path<String>,
        name: Path<String>,
        /// Stage and diff only (`true` or `false`, default `false`).
        dry_run: Query<Option<bool>>,
    ) -> Result<Json<UpdateResult>, Problem<ContainerAndAllowlist>> {
        let (principal, workspace) = app.access.authorize_workspace(&caller.0, &id).await?;
        let dry_run = dry_run.0.unwrap_or(false);
        let updated = app
            .update
            .update(&principal, &workspace, &name, dry_run)
            .await?;
        Ok(Json(UpdateResult::new(updated)))
    }
}

/// `DELETE /workspaces/:id/plugins/<name>`, whichever route matched it.
async fn uninstall_named(
    app: &Arc<UseCases>,
    caller: &Caller,
    id: &str,
    name: &str,
) -> Result<Json<UninstallResult>, Problem<Container>> {
    let (principal, workspace) = app.access.authorize_workspace(&caller.0, id).await?;
    let plugin = app
        .uninstall
        .uninstall(&principal, &workspace, name)
        .await?;
    Ok(Json(UninstallResult {
        status: "uninstalled".into(),
        plugin: plugin.to_string(),
    }))
}
