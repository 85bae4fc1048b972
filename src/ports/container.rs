//! The container side of a workspace (SPEC §5 "In-container layout", §6).
//!
//! Two ports, both speaking intent rather than mechanism:
//! * [`ContainerEngine`] — the one source of truth for "is this
//!   workspace's container running?" (running / stopped / unknown), plus
//!   readiness and restarts;
//! * [`WorkspaceConfigs`] — what the use cases do in the agent's `/configs`
//!   of a running container: deliver a staged tree atomically, tell whether
//!   a plugin is installed, list installed manifests, hash an installed
//!   tree, read what an uninstall needs, remove a plugin. Leftovers of interrupted deliveries
//!   are cleaned by every delivery and removal.
//!
//! The agent in the container is untrusted (SPEC §6): an adapter must make
//! every read, write and delete under `/configs` agent-safe (nothing
//! outside `/configs` changes, nothing is done with more privilege than the
//! agent's own) and bounded (a bounded amount read, a bounded number of
//! engine calls). How is the adapter's business: scripts, exit codes and
//! stderr never cross this port.

use std::path::Path;

use async_trait::async_trait;

use crate::domain::drift::InstalledTree;
use crate::domain::memory::PluginText;
use crate::domain::name::PluginName;
use crate::domain::workspace::ContainerName;
use crate::ports::BoxError;
use crate::ports::staging::InPlace;

/// The engine's id of a running container, as [`ContainerEngine::state`]
/// found it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerId(String);

impl ContainerId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ContainerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The three outcomes of a container lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Running; the engine's id for the container.
    Running { id: ContainerId },
    /// The container does not exist or is not running.
    Stopped,
    /// The engine could not answer (timeout, socket error, daemon down).
    /// Never to be treated as `Stopped`: callers must not take a
    /// destructive path on it.
    Unknown,
}

/// Why an engine call failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine did not answer in time or could not be reached.
    #[error("container engine unavailable")]
    Unavailable(#[source] BoxError),
    /// The container stopped, or is being restarted, under the operation.
    #[error("container not running")]
    NotRunning,
    /// The engine answered with an error.
    #[error("container engine error")]
    Other(#[source] BoxError),
}

#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait ContainerEngine: Send + Sync {
    /// Whether the engine answers at all (readiness).
    async fn ping(&self) -> Result<(), EngineError>;

    /// The state of the named container. Errors and timeouts are
    /// `Unknown`, logged by the adapter as such (never as "stopped").
    async fn state(&self, container: &ContainerName) -> ContainerState;

    /// Restarts the container (a stopped one is started).
    async fn restart(&self, container: &ContainerId) -> Result<(), EngineError>;
}

/// Why an operation in `/configs` failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigsError {
    /// The engine failed (unreachable, timed out, container not running).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// `/configs` is not laid out as SPEC §5 says (e.g. `/configs/plugins`
    /// is a symlink): the agent changed it, and nothing was done there.
    #[error("unsafe layout under /configs: {0}")]
    UnsafeLayout(&'static str),
    /// The container's answer was larger than the operation's bound; it was
    /// not read on.
    #[error("answer too large: {0}")]
    TooLarge(&'static str),
    /// The operation failed inside the container.
    #[error("failed inside the container")]
    Failed(#[source] BoxError),
}

/// Why a delivery failed, and what is in place now.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Nothing changed: the previous version (or nothing) is in place.
    #[error("delivery failed; previous version in place")]
    NotPlaced(#[source] ConfigsError),
    /// Cut off before its outcome was known (engine gone or timed out
    /// mid-way): the old or the new version is in place, never a mix, but
    /// which one is unknown.
    #[error("delivery outcome unknown")]
    Unknown(#[source] ConfigsError),
}

/// Why a removal failed.
#[derive(Debug, thiserror::Error)]
pub enum RemovalError {
    /// No `/configs/plugins/<name>/` directory.
    #[error("plugin not installed")]
    NotInstalled,
    /// A step inside the container failed (skills, the plugin directory,
    /// `sync`): the plugin may be partly removed.
    #[error("plugin removal incomplete")]
    Incomplete(#[source] BoxError),
    /// Nothing could be done (engine, layout).
    #[error(transparent)]
    Configs(#[from] ConfigsError),
}

/// A plugin directory found under `/configs/plugins`, with its
/// `plugin.yaml` when that is a small regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledEntry {
    pub name: PluginName,
    pub manifest_yaml: Option<Vec<u8>>,
}

/// The agent's memory file (`/configs/CLAUDE.md`) as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryFile {
    pub content: Vec<u8>,
    /// Permission bits, kept when the file is rewritten.
    pub mode: u32,
}

/// What an uninstall reads before it deletes anything (SPEC §5 uninstall
/// steps 6–7), each part bounded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PluginMemory {
    /// `plugin.yaml`, when it is a small regular file.
    pub manifest_yaml: Option<Vec<u8>>,
    /// The plugin's memory-source files (`rules/*.md`, root `*.md`) that
    /// are regular UTF-8 files within the bounds.
    pub sources: Vec<PluginText>,
    /// `/configs/CLAUDE.md`: `None` when missing, not a regular file, or
    /// over its bound (then its blocks stay: stripping is best-effort).
    pub memory_file: Option<MemoryFile>,
}

/// What a removal does, in SPEC order: rewrite the memory file, remove
/// the skills, remove the plugin directory, flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub plugin: PluginName,
    /// The new content of `/configs/CLAUDE.md` (mode kept), when it changes.
    pub memory_file: Option<MemoryFile>,
    /// Skill directories under `/configs/skills` to remove.
    pub skills: Vec<PluginName>,
}

/// How much reading an installed tree back may take: the staging caps
/// (SPEC §4 step 8), since no staged plugin is larger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeReadLimits {
    /// Sum of the regular files' lengths.
    pub max_bytes: u64,
    /// Files, directories and other entries.
    pub max_entries: u64,
}

/// The agent's `/configs` in a running workspace container.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait WorkspaceConfigs: Send + Sync {
    /// Delivers the staged tree at `tree` as `/configs/plugins/<plugin>/`,
    /// owned by the agent (1000:1000), replacing any previous version
    /// atomically: a reader sees the old version, briefly nothing, or the
    /// new one. Leftovers of interrupted deliveries are removed first.
    async fn deliver(
        &self,
        container: &ContainerId,
        plugin: &PluginName,
        tree: &Path,
    ) -> Result<(), DeliveryError>;

    /// [`deliver`](Self::deliver) for a tree staged in place (a local
    /// plugin read where it lies): its check runs once every file was read
    /// and before the new version is placed, and a tree that changed is
    /// never placed (`NotPlaced`: what is in place was not what was
    /// hashed). An adapter that cannot check before placing keeps this
    /// default: it delivers, then checks, and a change leaves the outcome
    /// `Unknown`, so no receipt claims the tree.
    async fn deliver_in_place(
        &self,
        container: &ContainerId,
        plugin: &PluginName,
        tree: &InPlace,
    ) -> Result<(), DeliveryError> {
        self.deliver(container, plugin, &tree.dir).await?;
        match tree.check.unchanged() {
            Ok(true) => Ok(()),
            Ok(false) => Err(DeliveryError::Unknown(ConfigsError::Failed(
                "the tree changed while it was being delivered".into(),
            ))),
            Err(e) => Err(DeliveryError::Unknown(ConfigsError::Failed(e))),
        }
    }

    /// Whether `/configs/plugins/<plugin>/` is a directory.
    async fn is_installed(
        &self,
        container: &ContainerId,
        plugin: &PluginName,
    ) -> Result<bool, ConfigsError>;

    /// The plugins installed under `/configs/plugins`, sorted by name; dot
    /// entries and invalid names are never plugins. Errors: `TooLarge` for
    /// more entries or manifest bytes than the bound.
    async fn installed(&self, container: &ContainerId)
    -> Result<Vec<InstalledEntry>, ConfigsError>;

    /// Hashes the installed tree of `plugin` (SPEC §11 `verify`): the
    /// SHA-256 of every regular file under `/configs/plugins/<plugin>/`;
    /// `None` when that is not a directory. Symlinks and special files are
    /// listed, never read nor followed; a tree past `limits` is read only
    /// up to them (`complete` false).
    async fn hash_installed(
        &self,
        container: &ContainerId,
        plugin: &PluginName,
        limits: &TreeReadLimits,
    ) -> Result<Option<InstalledTree>, ConfigsError>;

    /// What an uninstall of `plugin` needs to read; `None` when it is not
    /// installed.
    async fn read_plugin_memory(
        &self,
        container: &ContainerId,
        plugin: &PluginName,
    ) -> Result<Option<PluginMemory>, ConfigsError>;

    /// Carries out a removal (see [`Removal`]); leftovers of interrupted
    /// deliveries are removed too.
    async fn remove(&self, container: &ContainerId, removal: &Removal) -> Result<(), RemovalError>;
}
