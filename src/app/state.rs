//! What every request handler shares: the ports and the policy settings.

use std::sync::Arc;

use std::time::Duration;

use crate::app::download::LocalDigests;
use crate::app::restart::{Restarter, WorkspaceLocks};
use crate::app::staging::FetchSlots;
use crate::domain::policy::AllowlistFailure;
use crate::domain::token::TokenHash;
use crate::ports::archives::ArchiveStore;
use crate::ports::container::{ContainerEngine, WorkspaceConfigs};
use crate::ports::receipts::ReceiptStore;
use crate::ports::registry::PluginRegistry;
use crate::ports::resolver::ResolverRegistry;
use crate::ports::staging::StagingArea;
use crate::ports::store::{AllowlistStore, StoreHealth, TokenStore, WorkspaceStore};

/// Policy knobs from the settings, as the use cases need them.
#[derive(Debug, Clone)]
pub struct Policy {
    pub body_max_bytes: u64,
    pub allow_tokenless_workspaces: bool,
    pub allowlist_failure: AllowlistFailure,
    /// Bounds fetching (and, for install, delivering) a plugin.
    pub fetch_timeout: Duration,
    /// Cap on a staged plugin, enforced while writing.
    pub max_dir_bytes: u64,
    /// Cap on a staged plugin's files and directories, enforced while writing.
    pub max_entries: u64,
    pub allow_unpinned: bool,
}

/// The ports and policy behind the HTTP layer.
#[derive(Clone)]
pub struct AppState {
    pub workspaces: Arc<dyn WorkspaceStore>,
    pub tokens: Arc<dyn TokenStore>,
    pub allowlists: Arc<dyn AllowlistStore>,
    pub store_health: Arc<dyn StoreHealth>,
    pub receipts: Arc<dyn ReceiptStore>,
    pub registry: Arc<dyn PluginRegistry>,
    pub resolvers: ResolverRegistry,
    pub staging: Arc<dyn StagingArea>,
    pub engine: Arc<dyn ContainerEngine>,
    pub configs: Arc<dyn WorkspaceConfigs>,
    pub restarts: Restarter,
    pub locks: WorkspaceLocks,
    pub archives: Arc<dyn ArchiveStore>,
    pub local_digests: Arc<LocalDigests>,
    /// Stagings and packings at once (`PLUGIN_MAX_CONCURRENT_FETCHES`).
    pub fetch_slots: FetchSlots,
    /// Only the hash of the admin token is kept in memory.
    pub admin_token: TokenHash,
    pub policy: Policy,
}
