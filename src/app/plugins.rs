//! Use cases on a workspace's plugins (SPEC §5): install, uninstall, the
//! installed list and the compatibility preflight. Each step is a domain
//! rule or a port call, in the order of the spec.

use std::collections::HashMap;

use rand::RngCore;
use tokio::time::{Instant, timeout_at};

use crate::app::auth::Principal;
use crate::app::error::AppError;
use crate::app::staging::{Staged, stage};
use crate::app::state::AppState;
use crate::domain::digest::TreeDigest;
use crate::domain::layout;
use crate::domain::manifest::{MANIFEST_MAX_BYTES, Manifest};
use crate::domain::memory::{PluginText, is_memory_source, strip_memory_blocks};
use crate::domain::name::PluginName;
use crate::domain::policy::check_allowlist;
use crate::domain::receipt::Receipt;
use crate::domain::runtime::{
    Compatibility, PushOperation, Runtime, partition_compatibility, runtime_guard,
};
use crate::domain::workspace::Workspace;
use crate::ports::container::{ContainerState, EngineError, ReadFileError};

/// A memory-source file larger than this is not read (and its block is
/// left to the fallback step of the stripping rules).
const MEMORY_FILE_MAX_BYTES: u64 = 1024 * 1024;
/// CLAUDE.md larger than this is left alone rather than read whole.
const CLAUDE_MD_MAX_BYTES: u64 = 16 * 1024 * 1024;

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

fn engine(e: EngineError) -> AppError {
    match e {
        EngineError::Unavailable(_) => AppError::EngineUnavailable(e),
        EngineError::Other(cause) => AppError::Internal(cause),
    }
}

/// SPEC §6: running → its id; stopped and unknown are distinct 503s.
async fn running_container(
    state: &AppState,
    workspace: &Workspace,
) -> Result<Option<String>, AppError> {
    match state.engine.state(&workspace.container_name()).await {
        ContainerState::Running { id } => Ok(Some(id)),
        ContainerState::Stopped => Ok(None),
        ContainerState::Unknown => Err(AppError::EngineUnavailable(EngineError::Unavailable(
            "container state unknown".into(),
        ))),
    }
}

async fn require_running(state: &AppState, workspace: &Workspace) -> Result<String, AppError> {
    running_container(state, workspace)
        .await?
        .ok_or(AppError::ContainerNotRunning)
}

/// The org allowlist for `plugin` (SPEC §5 install step 6, download 5).
pub async fn enforce_allowlist(
    state: &AppState,
    workspace: &Workspace,
    plugin: &PluginName,
) -> Result<(), AppError> {
    let entries = match state.allowlists.allowlist(workspace.org_id()).await {
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
    check_allowlist(entries.as_deref(), plugin, state.policy.allowlist_failure)
        .map_err(AppError::Allowlist)
}

/// Removes leftovers of interrupted deliveries; a failure is logged, not
/// fatal, unless the engine itself is gone.
async fn clean_leftovers(state: &AppState, container: &str) -> Result<(), AppError> {
    let out = state
        .engine
        .exec(container, &layout::cleanup_leftovers_argv())
        .await
        .map_err(engine)?;
    if !out.success() {
        tracing::warn!(container, stderr = %String::from_utf8_lossy(&out.stderr), "could not remove delivery leftovers");
    }
    Ok(())
}

async fn is_dir(state: &AppState, container: &str, path: &str) -> Result<bool, AppError> {
    let out = state
        .engine
        .exec(container, &layout::is_dir_argv(path))
        .await
        .map_err(engine)?;
    Ok(out.success())
}

fn random_nonce() -> String {
    let mut bytes = [0u8; 8];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Install (SPEC §5), after auth and the workspace record. `read_body`
/// is called only once the runtime guard has passed.
pub async fn install<F>(
    state: &AppState,
    principal: &Principal,
    workspace: &Workspace,
    read_body: F,
) -> Result<Installed, AppError>
where
    F: std::future::Future<Output = Result<(Option<String>, Option<String>), AppError>>,
{
    runtime_guard(&workspace.spec.runtime, PushOperation::Install).map_err(AppError::Guard)?;
    let (source, sha256) = read_body.await?;
    let deadline = Instant::now() + state.policy.fetch_timeout;
    let staged = stage(state, source.as_deref(), sha256.as_deref(), deadline).await?;
    enforce_allowlist(state, workspace, &staged.name).await?;
    let container = require_running(state, workspace).await?;
    let source_text = staged.source.redacted();
    match timeout_at(
        deadline,
        deliver(state, principal, workspace, &container, &staged),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(workspace = %workspace.id, plugin = %staged.name, "install deadline fired during delivery");
            Err(AppError::InstallTimedOut { source_text })
        }
    }
}

async fn deliver(
    state: &AppState,
    principal: &Principal,
    workspace: &Workspace,
    container: &str,
    staged: &Staged,
) -> Result<Installed, AppError> {
    let _serialized = state.locks.lock(&workspace.id).await;
    let name = &staged.name;
    let source = staged.source.redacted();
    clean_leftovers(state, container).await?;

    let receipt = state
        .receipts
        .receipt(&workspace.id, name)
        .await
        .map_err(AppError::Store)?;
    if receipt.is_some_and(|r| r.matches(&staged.digest))
        && is_dir(state, container, &layout::plugin_dir(name)).await?
    {
        return Ok(Installed::Unchanged {
            plugin: name.clone(),
            source,
            digest: staged.digest.clone(),
        });
    }

    let mkdir = state
        .engine
        .exec(container, &layout::ensure_plugins_dir_argv())
        .await
        .map_err(engine)?;
    if !mkdir.success() {
        return Err(AppError::CopyFailed(
            format!(
                "mkdir plugins dir: {}",
                String::from_utf8_lossy(&mkdir.stderr)
            )
            .into(),
        ));
    }
    let nonce = random_nonce();
    let staging_dir = layout::staging_dir(name, &nonce);
    if let Err(e) = state
        .engine
        .copy_dir_in(container, staged.dir.path(), &staging_dir)
        .await
    {
        // Whatever half-copy is left is a dot-entry, removed next time.
        return Err(match e {
            EngineError::Unavailable(_) => AppError::EngineUnavailable(e),
            EngineError::Other(cause) => AppError::CopyFailed(cause),
        });
    }
    let swap = state
        .engine
        .exec(container, &layout::swap_argv(name, &nonce))
        .await
        .map_err(engine)?;
    if !swap.success() {
        return Err(AppError::CopyFailed(
            format!("swap into place: {}", String::from_utf8_lossy(&swap.stderr)).into(),
        ));
    }

    let receipt = Receipt {
        workspace_id: workspace.id.clone(),
        plugin: name.clone(),
        source: source.clone(),
        digest: staged.digest.clone(),
        size_bytes: staged.tree.total_bytes,
        installed_at: crate::app::now(),
        installed_by: principal.actor(),
    };
    // The plugin is in place: a lost receipt only costs the next
    // "unchanged" shortcut and the listed digest, so it is not fatal.
    if let Err(e) = state.receipts.put_receipt(&receipt).await {
        tracing::error!(workspace = %workspace.id, plugin = %name, error = ?e, "could not record install receipt");
    }
    state.restarts.request(workspace);
    tracing::info!(workspace = %workspace.id, plugin = %name, %source, digest = %staged.digest, "plugin installed");
    Ok(Installed::Installed {
        plugin: name.clone(),
        source,
        digest: staged.digest.clone(),
    })
}

/// Reads a small file; absent, too large or unreadable → None (the
/// callers treat those as "no such file"), engine gone → 503.
async fn read_optional(
    state: &AppState,
    container: &str,
    path: &str,
    max: u64,
) -> Result<Option<Vec<u8>>, AppError> {
    match state.engine.read_file(container, path, max).await {
        Ok(file) => Ok(Some(file.content)),
        Err(ReadFileError::NotFound) | Err(ReadFileError::TooLarge) => Ok(None),
        Err(ReadFileError::Engine(e @ EngineError::Unavailable(_))) => {
            Err(AppError::EngineUnavailable(e))
        }
        Err(ReadFileError::Engine(e)) => {
            tracing::warn!(container, path, error = ?e, "could not read file from container");
            Ok(None)
        }
    }
}

/// The plugin's memory-source files, read before anything is deleted.
async fn memory_sources(
    state: &AppState,
    container: &str,
    name: &PluginName,
) -> Result<Vec<PluginText>, AppError> {
    let listing = state
        .engine
        .exec(container, &layout::list_markdown_argv(name))
        .await
        .map_err(engine)?;
    let mut texts = Vec::new();
    for rel in String::from_utf8_lossy(&listing.stdout).lines() {
        if !is_memory_source(rel) {
            continue;
        }
        let path = layout::plugin_file(name, rel);
        if let Some(bytes) = read_optional(state, container, &path, MEMORY_FILE_MAX_BYTES).await?
            && let Ok(content) = String::from_utf8(bytes)
        {
            texts.push(PluginText {
                path: rel.to_owned(),
                content,
            });
        }
    }
    Ok(texts)
}

/// Strips the plugin's blocks from CLAUDE.md, keeping owner and mode.
/// Best-effort: a missing file is fine, a failure is logged.
async fn strip_claude_md(
    state: &AppState,
    container: &str,
    name: &PluginName,
    texts: &[PluginText],
) -> Result<(), AppError> {
    let file = match state
        .engine
        .read_file(container, layout::CLAUDE_MD, CLAUDE_MD_MAX_BYTES)
        .await
    {
        Ok(file) => file,
        Err(ReadFileError::NotFound) => return Ok(()),
        Err(ReadFileError::Engine(e @ EngineError::Unavailable(_))) => {
            return Err(AppError::EngineUnavailable(e));
        }
        Err(e) => {
            tracing::warn!(container, error = ?e, "CLAUDE.md not readable; memory blocks left in place");
            return Ok(());
        }
    };
    let Ok(text) = std::str::from_utf8(&file.content) else {
        tracing::warn!(
            container,
            "CLAUDE.md is not UTF-8; memory blocks left in place"
        );
        return Ok(());
    };
    let stripped = strip_memory_blocks(text, name.as_str(), texts);
    if stripped == text {
        return Ok(());
    }
    let mut updated = file.clone();
    updated.content = stripped.into_bytes();
    if let Err(e) = state
        .engine
        .write_file(container, layout::CLAUDE_MD, &updated)
        .await
    {
        tracing::warn!(container, error = ?e, "could not write CLAUDE.md; memory blocks left in place");
    }
    Ok(())
}

/// Uninstall (SPEC §5), after auth and the workspace record.
pub async fn uninstall(
    state: &AppState,
    workspace: &Workspace,
    raw_name: &str,
) -> Result<PluginName, AppError> {
    runtime_guard(&workspace.spec.runtime, PushOperation::Uninstall).map_err(AppError::Guard)?;
    let name = PluginName::parse(raw_name).map_err(|_| AppError::InvalidPluginName)?;
    let container = require_running(state, workspace).await?;
    let _serialized = state.locks.lock(&workspace.id).await;
    clean_leftovers(state, &container).await?;
    let dir = layout::plugin_dir(&name);
    if !is_dir(state, &container, &dir).await? {
        return Err(AppError::NotInstalled(name));
    }
    let manifest_yaml = read_optional(
        state,
        &container,
        &layout::plugin_file(&name, "plugin.yaml"),
        MANIFEST_MAX_BYTES as u64,
    )
    .await?;
    let manifest = Manifest::from_yaml(name.clone(), manifest_yaml.as_deref());
    let texts = memory_sources(state, &container, &name).await?;
    strip_claude_md(state, &container, &name, &texts).await?;

    let mut skill_dirs = Vec::new();
    for skill in &manifest.skills {
        match PluginName::parse(skill) {
            Ok(skill) => skill_dirs.push(layout::skill_dir(&skill)),
            Err(_) => tracing::warn!(plugin = %name, skill, "skipping invalid skill name"),
        }
    }
    if !skill_dirs.is_empty() {
        let out = state
            .engine
            .exec(&container, &layout::remove_argv(&skill_dirs))
            .await
            .map_err(engine)?;
        if !out.success() {
            tracing::warn!(plugin = %name, stderr = %String::from_utf8_lossy(&out.stderr), "could not remove skills");
        }
    }
    let removed = state
        .engine
        .exec(&container, &layout::remove_argv(std::slice::from_ref(&dir)))
        .await
        .map_err(engine)?;
    if !removed.success() {
        return Err(AppError::RemoveFailed(
            String::from_utf8_lossy(&removed.stderr).into_owned().into(),
        ));
    }
    match state.engine.exec(&container, &layout::sync_argv()).await {
        Ok(out) if out.success() => {}
        other => {
            tracing::warn!(plugin = %name, result = ?other.map(|o| o.exit_code), "sync failed")
        }
    }
    if let Err(e) = state.receipts.delete_receipt(&workspace.id, &name).await {
        tracing::error!(workspace = %workspace.id, plugin = %name, error = ?e, "could not delete install receipt");
    }
    state.restarts.request(workspace);
    tracing::info!(workspace = %workspace.id, plugin = %name, "plugin uninstalled");
    Ok(name)
}

/// The plugins installed in the workspace's container, with the digest of
/// their receipt (None for plugins put there by something else). A
/// stopped container has none.
pub async fn installed(
    state: &AppState,
    workspace: &Workspace,
) -> Result<Vec<(Manifest, Option<TreeDigest>)>, AppError> {
    let Some(container) = running_container(state, workspace).await? else {
        return Ok(Vec::new());
    };
    let listing = state
        .engine
        .exec(&container, &layout::list_plugins_argv())
        .await
        .map_err(engine)?;
    if !listing.success() {
        return Err(AppError::ListFailed(
            String::from_utf8_lossy(&listing.stderr).into_owned().into(),
        ));
    }
    let names = layout::parse_plugin_listing(&listing.stdout);
    let reads = names.iter().map(|name| {
        let path = layout::plugin_file(name, "plugin.yaml");
        let container = container.clone();
        async move { read_optional(state, &container, &path, MANIFEST_MAX_BYTES as u64).await }
    });
    let manifests = futures_util::future::join_all(reads).await;
    let digests: HashMap<PluginName, TreeDigest> = match state
        .receipts
        .receipts(&workspace.id)
        .await
    {
        Ok(receipts) => receipts.into_iter().map(|r| (r.plugin, r.digest)).collect(),
        Err(e) => {
            tracing::error!(workspace = %workspace.id, error = ?e, "could not read receipts; digests omitted");
            HashMap::new()
        }
    };
    names
        .into_iter()
        .zip(manifests)
        .map(|(name, yaml)| {
            let yaml = yaml?;
            let digest = digests.get(&name).cloned();
            Ok((Manifest::from_yaml(name, yaml.as_deref()), digest))
        })
        .collect()
}

/// The preflight for a runtime change (SPEC §5).
pub async fn compatibility(
    state: &AppState,
    workspace: &Workspace,
    target: Runtime,
) -> Result<Compatibility, AppError> {
    let plugins = installed(state, workspace).await?;
    Ok(partition_compatibility(
        plugins.into_iter().map(|(m, _)| m).collect(),
        target,
    ))
}

#[cfg(test)]
#[path = "plugins_tests.rs"]
mod tests;
