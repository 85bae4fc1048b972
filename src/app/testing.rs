//! Test doubles for use-case tests: an `AppState` over mocked ports,
//! where each test sets only the expectations it is about.

use std::sync::Arc;
use std::time::Duration;

use crate::app::restart::{Restarter, WorkspaceLocks};
use crate::app::state::{AppState, Policy};
use crate::domain::name::WorkspaceId;
use crate::domain::policy::AllowlistFailure;
use crate::domain::token::TokenHash;
use crate::domain::workspace::{Workspace, WorkspaceInput, WorkspaceSpec};
use crate::ports::container::{
    ContainerEngine, MockContainerEngine, MockWorkspaceConfigs, WorkspaceConfigs,
};
use crate::ports::receipts::{MockReceiptStore, ReceiptStore};
use crate::ports::registry::{MockPluginRegistry, PluginRegistry};
use crate::ports::resolver::ResolverRegistry;
use crate::ports::staging::{MockStagingArea, StagingArea};
use crate::ports::store::{
    AllowlistStore, MockAllowlistStore, MockStoreHealth, MockTokenStore, MockWorkspaceStore,
    TokenStore, WorkspaceStore,
};

pub const ADMIN: &str = "admin-secret";

/// The ports of a test state; unset ones are mocks with no expectations
/// (any call to them fails the test).
pub struct Ports {
    pub workspaces: Arc<dyn WorkspaceStore>,
    pub tokens: Arc<dyn TokenStore>,
    pub allowlists: Arc<dyn AllowlistStore>,
    pub receipts: Arc<dyn ReceiptStore>,
    pub staging: Arc<dyn StagingArea>,
    pub engine: Arc<dyn ContainerEngine>,
    pub configs: Arc<dyn WorkspaceConfigs>,
    pub resolvers: ResolverRegistry,
    pub archives: Arc<dyn crate::ports::archives::ArchiveStore>,
    pub registry: Arc<dyn PluginRegistry>,
    pub policy: Policy,
    pub restart_delay: Duration,
}

impl Default for Ports {
    fn default() -> Self {
        Self {
            workspaces: Arc::new(MockWorkspaceStore::new()),
            tokens: Arc::new(MockTokenStore::new()),
            allowlists: Arc::new(MockAllowlistStore::new()),
            receipts: Arc::new(MockReceiptStore::new()),
            staging: Arc::new(MockStagingArea::new()),
            engine: Arc::new(MockContainerEngine::new()),
            configs: Arc::new(MockWorkspaceConfigs::new()),
            resolvers: ResolverRegistry::new(),
            archives: Arc::new(crate::ports::archives::MockArchiveStore::new()),
            registry: Arc::new(MockPluginRegistry::new()),
            policy: Policy {
                body_max_bytes: 1024,
                allow_tokenless_workspaces: false,
                allowlist_failure: AllowlistFailure::Closed,
                fetch_timeout: Duration::from_secs(30),
                max_dir_bytes: 1024 * 1024,
                max_entries: 1000,
                allow_unpinned: false,
            },
            restart_delay: Duration::from_secs(3600),
        }
    }
}

impl Ports {
    pub fn into_state(self) -> AppState {
        let locks = WorkspaceLocks::default();
        let restarts = Restarter::new(
            self.engine.clone(),
            self.workspaces.clone(),
            locks.clone(),
            self.restart_delay,
        );
        AppState {
            workspaces: self.workspaces,
            tokens: self.tokens,
            allowlists: self.allowlists,
            receipts: self.receipts,
            store_health: Arc::new(MockStoreHealth::new()),
            registry: self.registry,
            resolvers: self.resolvers,
            staging: self.staging,
            restarts,
            engine: self.engine,
            configs: self.configs,
            locks,
            archives: self.archives,
            local_digests: Default::default(),
            fetch_slots: crate::app::staging::FetchSlots::new(4, u64::MAX),
            admin_token: TokenHash::of(ADMIN),
            policy: self.policy,
        }
    }
}

/// A workspace record with the given runtime and status.
pub fn workspace(id: &str, runtime: &str, status: &str) -> Workspace {
    let wid = WorkspaceId::parse(id).unwrap();
    let spec = WorkspaceSpec::validate(
        &wid,
        WorkspaceInput {
            name: Some("W"),
            runtime: Some(runtime),
            status: Some(status),
            ..Default::default()
        },
    )
    .unwrap();
    let now = crate::app::now();
    Workspace {
        id: wid,
        spec,
        created_at: now,
        updated_at: now,
    }
}
