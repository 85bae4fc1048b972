//! What every request handler shares: the ports and the policy settings.

use std::sync::Arc;

use crate::domain::policy::AllowlistFailure;
use crate::domain::token::TokenHash;
use crate::ports::registry::PluginRegistry;
use crate::ports::resolver::ResolverRegistry;
use crate::ports::store::{AllowlistStore, StoreHealth, TokenStore, WorkspaceStore};

/// Policy knobs from the settings, as the use cases need them.
#[derive(Debug, Clone)]
pub struct Policy {
    pub body_max_bytes: u64,
    pub allow_tokenless_workspaces: bool,
    pub allowlist_failure: AllowlistFailure,
}

/// The ports and policy behind the HTTP layer.
#[derive(Clone)]
pub struct AppState {
    pub workspaces: Arc<dyn WorkspaceStore>,
    pub tokens: Arc<dyn TokenStore>,
    pub allowlists: Arc<dyn AllowlistStore>,
    pub store_health: Arc<dyn StoreHealth>,
    pub registry: Arc<dyn PluginRegistry>,
    pub resolvers: ResolverRegistry,
    /// Only the hash of the admin token is kept in memory.
    pub admin_token: TokenHash,
    pub policy: Policy,
}
