//! Workspace restarts after install and uninstall (SPEC §5 "Restarts"): a
//! debounce per workspace, so N operations in a burst cost one restart
//! `PLUGIN_RESTART_DELAY` after the last; restarts still pending at
//! shutdown are carried out before the process exits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::name::WorkspaceId;
use crate::domain::workspace::{ContainerName, Workspace};
use crate::ports::container::{ContainerEngine, ContainerState};

#[derive(Clone)]
pub struct Restarter {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<dyn ContainerEngine>,
    delay: Duration,
    pending: Mutex<HashMap<WorkspaceId, Pending>>,
}

#[derive(Clone)]
struct Pending {
    generation: u64,
    container: ContainerName,
}

impl Restarter {
    pub fn new(engine: Arc<dyn ContainerEngine>, delay: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                engine,
                delay,
                pending: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<WorkspaceId, Pending>> {
        // A poisoned map only means a panic mid-update of plain data.
        self.inner.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for a restart of the workspace; a later request within the
    /// delay replaces this one. Skipped for paused, hibernated and removed
    /// workspaces.
    pub fn request(&self, workspace: &Workspace) {
        if !workspace.accepts_restarts() {
            tracing::info!(workspace = %workspace.id, status = %workspace.spec.status, "restart skipped for this status");
            return;
        }
        let generation = {
            let mut pending = self.pending();
            let entry = pending.entry(workspace.id.clone()).or_insert(Pending {
                generation: 0,
                container: workspace.container_name(),
            });
            entry.generation += 1;
            entry.container = workspace.container_name();
            entry.generation
        };
        let this = self.clone();
        let id = workspace.id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(this.inner.delay).await;
            let due = {
                let mut pending = this.pending();
                match pending.get(&id) {
                    Some(p) if p.generation == generation => pending.remove(&id),
                    _ => None,
                }
            };
            if let Some(p) = due {
                this.restart_now(&id, &p.container).await;
            }
        });
    }

    async fn restart_now(&self, id: &WorkspaceId, container: &ContainerName) {
        match self.inner.engine.state(container).await {
            ContainerState::Running { id: cid } => match self.inner.engine.restart(&cid).await {
                Ok(()) => tracing::info!(workspace = %id, "workspace restarted"),
                Err(e) => tracing::error!(workspace = %id, error = ?e, "workspace restart failed"),
            },
            ContainerState::Stopped => {
                tracing::info!(workspace = %id, "restart skipped: container not running")
            }
            ContainerState::Unknown => {
                tracing::error!(workspace = %id, "restart skipped: container engine unavailable")
            }
        }
    }

    /// Carries out every pending restart now (graceful shutdown).
    pub async fn flush(&self) {
        let due: Vec<(WorkspaceId, Pending)> = self.pending().drain().collect();
        let restarts = due.iter().map(|(id, p)| self.restart_now(id, &p.container));
        futures_util::future::join_all(restarts).await;
    }

    /// How many workspaces wait for a restart.
    pub fn pending_count(&self) -> usize {
        self.pending().len()
    }
}

/// Serializes operations on one workspace: two installs both land, and an
/// install and an uninstall of the same plugin never interleave.
#[derive(Clone, Default)]
pub struct WorkspaceLocks {
    locks: Arc<Mutex<HashMap<WorkspaceId, Arc<tokio::sync::Mutex<()>>>>>,
}

impl WorkspaceLocks {
    pub async fn lock(&self, id: &WorkspaceId) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(id.clone()).or_default().clone()
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::container::MockContainerEngine;

    fn workspace(id: &str, status: &str) -> Workspace {
        crate::app::testing::workspace(id, "x", status)
    }

    fn engine_expecting(restarts: usize) -> MockContainerEngine {
        let mut engine = MockContainerEngine::new();
        engine
            .expect_state()
            .returning(|_| ContainerState::Running { id: "cid".into() });
        engine
            .expect_restart()
            .times(restarts)
            .returning(|_| Ok(()));
        engine
    }

    #[tokio::test(start_paused = true)]
    async fn requests_within_the_delay_coalesce_into_one_restart() {
        let restarter = Restarter::new(Arc::new(engine_expecting(1)), Duration::from_secs(2));
        let ws = workspace("ws1", "online");
        for _ in 0..5 {
            restarter.request(&ws);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(restarter.pending_count(), 1);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(restarter.pending_count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn paused_hibernated_and_removed_workspaces_are_not_restarted() {
        let restarter = Restarter::new(Arc::new(engine_expecting(0)), Duration::from_secs(1));
        for status in ["paused", "hibernated", "removed"] {
            restarter.request(&workspace("ws1", status));
        }
        assert_eq!(restarter.pending_count(), 0);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn pending_restarts_are_carried_out_at_shutdown() {
        let restarter = Restarter::new(Arc::new(engine_expecting(2)), Duration::from_secs(60));
        restarter.request(&workspace("a", "online"));
        restarter.request(&workspace("b", "online"));
        restarter.flush().await;
        assert_eq!(restarter.pending_count(), 0);
        tokio::time::sleep(Duration::from_secs(61)).await;
    }

    #[tokio::test]
    async fn a_workspace_lock_serializes_and_other_workspaces_proceed() {
        let locks = WorkspaceLocks::default();
        let a = WorkspaceId::parse("a").unwrap();
        let guard = locks.lock(&a).await;
        let again = tokio::time::timeout(Duration::from_millis(50), locks.lock(&a)).await;
        assert!(again.is_err(), "second lock of the same workspace waits");
        let b = tokio::time::timeout(
            Duration::from_millis(50),
            locks.lock(&WorkspaceId::parse("b").unwrap()),
        )
        .await;
        assert!(b.is_ok(), "another workspace is not blocked");
        drop(guard);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), locks.lock(&a))
                .await
                .is_ok()
        );
    }
}
