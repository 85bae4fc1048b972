//! Use cases on a workspace's plugins (SPEC §5): install, uninstall, the
//! installed list and the compatibility preflight. Each step is a domain
//! rule or a port call, in the order of the spec.

use std::collections::HashMap;

use tokio::time::{Instant, timeout_at};

use crate::app::auth::Principal;
use crate::app::error::AppError;
use crate::app::restart::WorkspaceGuard;
use crate::app::staging::{Staged, stage_in_place};
use crate::app::state::AppState;
use crate::domain::digest::TreeDigest;
use crate::domain::manifest::Manifest;
use crate::domain::memory::strip_memory_blocks;
use crate::domain::name::PluginName;
use crate::domain::policy::check_allowlist;
use crate::domain::receipt::Receipt;
use crate::domain::runtime::{
    Compatibility, PushOperation, Runtime, partition_compatibility, runtime_guard,
};
use crate::domain::workspace::Workspace;
use crate::ports::container::{
    ConfigsError, ContainerId, ContainerState, DeliveryError, EngineError, MemoryFile, Removal,
    RemovalError,
};

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

/// Which operation a container failure interrupted: it decides the 5xx
/// that is not about the engine itself.
#[derive(Debug, Clone, Copy)]
enum Operation {
    Deliver,
    List,
    Remove,
}

/// The one place container failures become answers (SPEC §5, §6): the
/// engine gone is 503 `container engine unavailable`, the container
/// stopping under the operation is 503 `workspace container not running`
/// (both with `Retry-After`), anything else (an unsafe layout the agent
/// made, an oversize answer, a failure inside the container) is the
/// operation's own 500.
fn container_failure(e: ConfigsError, operation: Operation) -> AppError {
    match e {
        ConfigsError::Engine(e @ EngineError::Unavailable(_)) => AppError::EngineUnavailable(e),
        ConfigsError::Engine(EngineError::NotRunning) => AppError::ContainerNotRunning,
        other => {
            let cause: crate::ports::BoxError = Box::new(other);
            match operation {
                Operation::Deliver => AppError::CopyFailed(cause),
                Operation::List => AppError::ListFailed(cause),
                Operation::Remove => AppError::RemoveFailed(cause),
            }
        }
    }
}

/// SPEC §6: running → its id; stopped and unknown are distinct 503s.
async fn running_container(
    state: &AppState,
    workspace: &Workspace,
) -> Result<Option<ContainerId>, AppError> {
    match state.engine.state(&workspace.container_name()).await {
        ContainerState::Running { id } => Ok(Some(id)),
        ContainerState::Stopped => Ok(None),
        ContainerState::Unknown => Err(AppError::EngineUnavailable(EngineError::Unavailable(
            "container state unknown".into(),
        ))),
    }
}

async fn require_running(state: &AppState, workspace: &Workspace) -> Result<ContainerId, AppError> {
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
    // One install per workspace at a time, from the fetch on: a burst at
    // one workspace waits here holding no fetch slot, so it cannot take
    // every slot away from the other tenants (SPEC §4 step 8).
    let Ok(serialized) = timeout_at(deadline, state.locks.lock(&workspace.id)).await else {
        let source_text = source
            .as_deref()
            .and_then(|s| crate::domain::source::Source::parse(s).ok())
            .map(|s| s.redacted())
            .unwrap_or_default();
        return Err(AppError::InstallTimedOut { source_text });
    };
    let staged = stage_in_place(state, source.as_deref(), sha256.as_deref(), deadline).await?;
    enforce_allowlist(state, workspace, &staged.name).await?;
    let container = require_running(state, workspace).await?;
    // The delivery runs to its end (or its deadline) even when the client
    // goes away, so the receipt it leaves always says what is in place.
    let delivery = tokio::spawn(deliver(
        serialized,
        state.clone(),
        principal.actor(),
        workspace.clone(),
        container,
        staged,
        deadline,
    ));
    delivery
        .await
        .map_err(|e| AppError::internal(format!("delivery task failed: {e}")))?
}

async fn deliver(
    serialized: WorkspaceGuard,
    state: AppState,
    actor: String,
    workspace: Workspace,
    container: ContainerId,
    staged: Staged,
    deadline: Instant,
) -> Result<Installed, AppError> {
    let source_text = staged.source.redacted();
    let name = staged.name.clone();
    let result = match timeout_at(
        deadline,
        deliver_in_place(&state, actor, &workspace, &container, &staged),
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
/// (SPEC §6 "receipts never claim what the container does not hold").
async fn deliver_in_place(
    state: &AppState,
    actor: String,
    workspace: &Workspace,
    container: &ContainerId,
    staged: &Staged,
) -> Result<Installed, AppError> {
    let name = &staged.name;
    let source = staged.source.redacted();

    let previous = state
        .receipts
        .receipt(&workspace.id, name)
        .await
        .map_err(AppError::Store)?;
    if let Some(previous) = previous.as_ref().filter(|r| r.matches(&staged.digest))
        && state
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
        state
            .receipts
            .delete_receipt(&workspace.id, name)
            .await
            .map_err(AppError::Store)?;
    }
    let delivered = match &staged.tree.in_place {
        Some(tree) => state.configs.deliver_in_place(container, name, tree).await,
        None => {
            state
                .configs
                .deliver(container, name, staged.dir.path())
                .await
        }
    };
    match delivered {
        Ok(()) => {}
        Err(DeliveryError::NotPlaced(e)) => {
            // The previous version is still there: so is its receipt.
            if let Some(previous) = &previous
                && let Err(store) = state.receipts.put_receipt(previous).await
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
        installed_by: actor,
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

/// Uninstall (SPEC §5), after auth and the workspace record, under the
/// same deadline as an install.
pub async fn uninstall(
    state: &AppState,
    workspace: &Workspace,
    raw_name: &str,
) -> Result<PluginName, AppError> {
    runtime_guard(&workspace.spec.runtime, PushOperation::Uninstall).map_err(AppError::Guard)?;
    let name = PluginName::parse(raw_name).map_err(|_| AppError::InvalidPluginName)?;
    let container = require_running(state, workspace).await?;
    let deadline = Instant::now() + state.policy.fetch_timeout;
    // Like a delivery, a removal runs to its end even without its client.
    let removal = tokio::spawn({
        let state = state.clone();
        let workspace = workspace.clone();
        async move {
            match timeout_at(deadline, remove(&state, &workspace, &container, &name)).await {
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

async fn remove(
    state: &AppState,
    workspace: &Workspace,
    container: &ContainerId,
    name: &PluginName,
) -> Result<(), AppError> {
    let _serialized = state.locks.lock(&workspace.id).await;
    let Some(memory) = state
        .configs
        .read_plugin_memory(container, name)
        .await
        .map_err(|e| container_failure(e, Operation::Remove))?
    else {
        drop_receipt(state, workspace, name).await;
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
    drop_receipt(state, workspace, name).await;
    match state.configs.remove(container, &removal).await {
        Ok(()) => {}
        Err(RemovalError::NotInstalled) => return Err(AppError::NotInstalled(name.clone())),
        Err(RemovalError::Incomplete(cause)) => return Err(AppError::RemoveFailed(cause)),
        Err(RemovalError::Configs(e)) => return Err(container_failure(e, Operation::Remove)),
    }
    state.restarts.request(workspace);
    tracing::info!(workspace = %workspace.id, plugin = %name, "plugin uninstalled");
    Ok(())
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

async fn drop_receipt(state: &AppState, workspace: &Workspace, name: &PluginName) {
    if let Err(e) = state.receipts.delete_receipt(&workspace.id, name).await {
        tracing::error!(workspace = %workspace.id, plugin = %name, error = ?e, "could not delete install receipt");
    }
}

/// The plugins installed in the workspace's container, with the digest of
/// their receipt (None for plugins put there by something else). A
/// stopped container has none; one being restarted by this service is
/// waited for, so a listing never answers `[]` for it.
pub async fn installed(
    state: &AppState,
    workspace: &Workspace,
) -> Result<Vec<(Manifest, Option<TreeDigest>)>, AppError> {
    state.restarts.wait_for_restart(&workspace.id).await;
    let Some(container) = running_container(state, workspace).await? else {
        return Ok(Vec::new());
    };
    let entries = state
        .configs
        .installed(&container)
        .await
        .map_err(|e| container_failure(e, Operation::List))?;
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
    Ok(entries
        .into_iter()
        .map(|entry| {
            let digest = digests.get(&entry.name).cloned();
            (
                Manifest::from_yaml(entry.name, entry.manifest_yaml.as_deref()),
                digest,
            )
        })
        .collect())
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
