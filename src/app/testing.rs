//! Test doubles for use-case tests: the use cases built over mocked
//! ports by the same builder as the server's, where each test sets only
//! the expectations it is about.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::adapters::keyed::LocalWorkspaceLocks;
use crate::app::error::AppError;
use crate::app::http::problem::Problem;
use crate::app::usecases::{Policy, Ports, UseCases};
use crate::domain::audit::{AuditEvent, AuditFilter, AuditRecord};
use crate::domain::name::WorkspaceId;
use crate::domain::policy::AllowlistFailure;
use crate::domain::token::TokenHash;
use crate::domain::workspace::ContainerName;
use crate::domain::workspace::{Workspace, WorkspaceInput, WorkspaceSpec};
use crate::ports::archives::MockArchiveStore;
use crate::ports::audit::AuditLog;
use crate::ports::container::{MockContainerEngine, MockWorkspaceConfigs};
use crate::ports::coordination::{PendingRestart, RestartQueue};
use crate::ports::receipts::MockReceiptStore;
use crate::ports::registry::MockPluginRegistry;
use crate::ports::resolver::ResolverRegistry;
use crate::ports::staging::MockStagingArea;
use crate::ports::store::StoreError;
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
            audit: Arc::new(RecordedAudit::default()),
            registry: Arc::new(MockPluginRegistry::new()),
            resolvers: ResolverRegistry::new(),
            staging: Arc::new(MockStagingArea::new()),
            engine: Arc::new(MockContainerEngine::new()),
            configs: Arc::new(MockWorkspaceConfigs::new()),
            archives: Arc::new(MockArchiveStore::new()),
            locks: Arc::new(LocalWorkspaceLocks::default()),
            restart_queue: Arc::new(MemoryRestartQueue::default()),
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
        audit_retention: Duration::from_secs(86400),
        error_status: crate::app::http::problem::status_of,
    }
}

/// An audit log in memory: what use-case tests read their events from
/// (keep a clone of the `Arc` given to [`Ports::audit`]).
#[derive(Default)]
pub struct RecordedAudit(Mutex<Vec<AuditEvent>>);

impl RecordedAudit {
    /// Every event appended so far, oldest first.
    pub fn events(&self) -> Vec<AuditEvent> {
        self.0.lock().unwrap().clone()
    }
}

#[async_trait]
impl AuditLog for RecordedAudit {
    async fn append(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.0.lock().unwrap().push(event.clone());
        Ok(())
    }

    async fn events(
        &self,
        filter: &AuditFilter,
        limit: u64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let events = self.0.lock().unwrap();
        Ok(events
            .iter()
            .enumerate()
            .map(|(i, e)| (i as i64 + 1, e))
            .rev()
            .filter(|(id, e)| {
                filter.before.is_none_or(|c| *id < c.before_id())
                    && filter.action.is_none_or(|a| a == e.action)
                    && filter
                        .workspace
                        .as_ref()
                        .is_none_or(|w| e.workspace_id.as_ref() == Some(w))
                    && filter
                        .plugin
                        .as_ref()
                        .is_none_or(|p| e.plugin.as_ref() == Some(p))
                    && filter.since.is_none_or(|s| e.at >= s)
            })
            .take(limit as usize)
            .map(|(id, e)| AuditRecord {
                id,
                event: e.clone(),
            })
            .collect())
    }

    async fn forget_before(&self, cutoff: DateTime<Utc>, batch: u64) -> Result<u64, StoreError> {
        let mut events = self.0.lock().unwrap();
        let old = events
            .iter()
            .filter(|e| e.at < cutoff)
            .count()
            .min(batch as usize);
        let mut left = old;
        events.retain(|e| {
            let forget = left > 0 && e.at < cutoff;
            left -= usize::from(forget);
            !forget
        });
        Ok(old as u64)
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

/// An audit trail over a fresh [`RecordedAudit`], and that log.
pub fn recorded_trail() -> (crate::app::usecases::audit::AuditTrail, Arc<RecordedAudit>) {
    let log = Arc::new(RecordedAudit::default());
    (
        crate::app::usecases::audit::AuditTrail::new(
            log.clone(),
            crate::app::http::problem::status_of,
        ),
        log,
    )
}

/// The restart queue in memory, with the database's semantics (one
/// pending restart per workspace, generations), for use-case tests.
#[derive(Default)]
pub struct MemoryRestartQueue {
    rows: Mutex<std::collections::BTreeMap<WorkspaceId, PendingRestart>>,
}

impl MemoryRestartQueue {
    fn rows(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<WorkspaceId, PendingRestart>> {
        self.rows.lock().unwrap()
    }
}

#[async_trait]
impl RestartQueue for MemoryRestartQueue {
    async fn request_restart(
        &self,
        workspace: &WorkspaceId,
        container: &ContainerName,
        due: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut rows = self.rows();
        let generation = rows.get(workspace).map_or(1, |p| p.generation + 1);
        rows.insert(
            workspace.clone(),
            PendingRestart {
                workspace: workspace.clone(),
                container: container.clone(),
                due_at: due,
                generation,
                attempts: 0,
            },
        );
        Ok(())
    }

    async fn pending_restarts(&self) -> Result<Vec<PendingRestart>, StoreError> {
        let mut all: Vec<_> = self.rows().values().cloned().collect();
        all.sort_by_key(|p| p.due_at);
        Ok(all)
    }

    async fn pending_restart(
        &self,
        workspace: &WorkspaceId,
    ) -> Result<Option<PendingRestart>, StoreError> {
        Ok(self.rows().get(workspace).cloned())
    }

    async fn finish_restart(
        &self,
        workspace: &WorkspaceId,
        generation: i64,
    ) -> Result<bool, StoreError> {
        let mut rows = self.rows();
        if rows
            .get(workspace)
            .is_some_and(|p| p.generation == generation)
        {
            rows.remove(workspace);
        }
        Ok(rows.contains_key(workspace))
    }

    async fn retry_restart(
        &self,
        workspace: &WorkspaceId,
        generation: i64,
        due: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if let Some(p) = self
            .rows()
            .get_mut(workspace)
            .filter(|p| p.generation == generation)
        {
            p.due_at = due;
            p.attempts += 1;
        }
        Ok(())
    }
}
