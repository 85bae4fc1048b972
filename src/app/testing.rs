//! Test doubles for use-case tests: the use cases built over mocked
//! ports by the same builder as the server's, where each test sets only
//! the expectations it is about.

use std::sync::Arc;
use std::time::Duration;

use crate::app::error::AppError;
use crate::app::http::problem::Problem;
use crate::app::usecases::{Policy, Ports, UseCases};
use crate::domain::name::WorkspaceId;
use crate::domain::policy::AllowlistFailure;
use crate::domain::token::TokenHash;
use crate::domain::workspace::{Workspace, WorkspaceInput, WorkspaceSpec};
use crate::ports::archives::MockArchiveStore;
use crate::ports::container::{MockContainerEngine, MockWorkspaceConfigs};
use crate::ports::receipts::MockReceiptStore;
use crate::ports::registry::MockPluginRegistry;
use crate::ports::resolver::ResolverRegistry;
use crate::ports::staging::MockStagingArea;
use crate::ports::store::{
    MockAllowlistStore, MockStoreHealth, MockTokenStore, MockWorkspaceStore,
};

pub const ADMIN: &str = "admin-secret";

/// Mocks with no expectations: any call to a port a test did not set up
/// fails it.
impl Default for Ports {
    fn default() -> Self {
        Self {
            workspaces: Arc::new(MockWorkspaceStore::new()),
            tokens: Arc::new(MockTokenStore::new()),
            allowlists: Arc::new(MockAllowlistStore::new()),
            store_health: Arc::new(MockStoreHealth::new()),
            receipts: Arc::new(MockReceiptStore::new()),
            registry: Arc::new(MockPluginRegistry::new()),
            resolvers: ResolverRegistry::new(),
            staging: Arc::new(MockStagingArea::new()),
            engine: Arc::new(MockContainerEngine::new()),
            configs: Arc::new(MockWorkspaceConfigs::new()),
            archives: Arc::new(MockArchiveStore::new()),
        }
    }
}

/// The policy of test apps: small caps, fail-closed allowlists, no
/// tokenless access, restarts far enough away that none runs in a test.
pub fn policy() -> Policy {
    Policy {
        admin_token: TokenHash::of(ADMIN),
        body_max_bytes: 1024,
        allow_tokenless_workspaces: false,
        allowlist_failure: AllowlistFailure::Closed,
        fetch_timeout: Duration::from_secs(30),
        max_dir_bytes: 1024 * 1024,
        max_entries: 1000,
        allow_unpinned: false,
        max_concurrent_fetches: 4,
        disk_per_fetch: u64::MAX,
        restart_delay: Duration::from_secs(3600),
        prepack: false,
    }
}

impl Ports {
    /// The use cases over these ports, with the test [`policy`].
    pub fn into_app(self) -> UseCases {
        UseCases::build(self, policy())
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

/// The HTTP answer an error becomes: status, message, `Retry-After`.
pub fn answer<T: std::fmt::Debug>(result: Result<T, AppError>) -> (u16, String, Option<u32>) {
    let error = result.expect_err("expected an error");
    let problem: Problem = Problem::from(error);
    let (status, message) = (problem.status().as_u16(), problem.body().error.clone());
    let response = poem::IntoResponse::into_response(problem);
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    (status, message, retry)
}
