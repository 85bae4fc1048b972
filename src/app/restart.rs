//! Workspace restarts after install and uninstall (SPEC §5 "Restarts"): a
//! debounce per workspace, so N operations in a burst cost one restart
//! `PLUGIN_RESTART_DELAY` after the last; restarts still pending at
//! shutdown are carried out before the process exits.
//!
//! A due restart runs under the workspace's lock (never between the two
//! renames of a delivery), re-reads the workspace record (a workspace
//! paused or removed in the meantime is not restarted), and is retried
//! with backoff when the engine fails it, so a workspace is not left down.
//! While it runs, listings wait for it ([`Restarter::wait_for_restart`]),
//! so a listing never mistakes the service's own restart for a stopped
//! container.
//!
//! Every restart that comes due is reported once, with how it ended, to
//! subscribers ([`Restarter::subscribe`]), and
//! [`Restarter::restart_pending`] tells whether one is still to come:
//! observers (the integration tests) see a restart happen, or know none
//! will, without watching the clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::domain::name::WorkspaceId;
use crate::domain::workspace::{ContainerName, Workspace};
use crate::ports::container::{ContainerEngine, ContainerId, ContainerState};
use crate::ports::store::WorkspaceStore;

/// Attempts of one due restart, and the wait before the first retry
/// (doubled each time): about half a minute in all.
const RESTART_ATTEMPTS: u32 = 5;
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Events a subscriber may fall behind by before it misses some.
const EVENT_BUFFER: usize = 64;

#[derive(Clone)]
pub struct Restarter {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<dyn ContainerEngine>,
    workspaces: Arc<dyn WorkspaceStore>,
    locks: WorkspaceLocks,
    delay: Duration,
    first_retry: Duration,
    schedule: Mutex<Schedule>,
    /// Held for writing while a restart runs; listings pass through it.
    running: KeyedLocks<WorkspaceId, tokio::sync::RwLock<()>>,
    events: broadcast::Sender<RestartEvent>,
}

#[derive(Default)]
struct Schedule {
    /// Restarts waiting for their delay, one per workspace.
    pending: HashMap<WorkspaceId, Pending>,
    /// Restarts that came due and are not reported yet, per workspace
    /// (two while a retrying one backs off and the next comes due).
    underway: HashMap<WorkspaceId, usize>,
}

#[derive(Clone)]
struct Pending {
    generation: u64,
    container: ContainerName,
}

/// How a restart (or one attempt of it) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartOutcome {
    /// The engine restarted the container.
    Done,
    /// Not restarted: the workspace was paused, hibernated or removed
    /// meanwhile, or its container was not running.
    Skipped,
    /// Every attempt failed.
    Failed,
}

/// One restart that came due, and how it ended; superseded requests
/// (coalesced into a later one) are not reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartEvent {
    pub workspace: WorkspaceId,
    pub outcome: RestartOutcome,
}

impl Restarter {
    pub fn new(
        engine: Arc<dyn ContainerEngine>,
        workspaces: Arc<dyn WorkspaceStore>,
        locks: WorkspaceLocks,
        delay: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                engine,
                workspaces,
                locks,
                delay,
                first_retry: FIRST_RETRY,
                schedule: Mutex::default(),
                running: KeyedLocks::default(),
                events: broadcast::channel(EVENT_BUFFER).0,
            }),
        }
    }

    fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        // A poisoned map only means a panic mid-update of plain data.
        self.inner
            .schedule
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the workspace's pending restart if it is still `generation`,
    /// and counts it as under way.
    fn take_due(&self, id: &WorkspaceId, generation: u64) -> Option<Pending> {
        let mut schedule = self.schedule();
        if schedule.pending.get(id)?.generation != generation {
            return None;
        }
        let due = schedule.pending.remove(id);
        *schedule.underway.entry(id.clone()).or_default() += 1;
        due
    }

    /// A restart taken by [`Self::take_due`] ended: no longer under way,
    /// then announced, so a subscriber that hears of it and asks
    /// [`Self::restart_pending`] sees only restarts still to come.
    fn report(&self, id: &WorkspaceId, outcome: RestartOutcome) {
        {
            let mut schedule = self.schedule();
            if let Some(count) = schedule.underway.get_mut(id) {
                *count -= 1;
                if *count == 0 {
                    schedule.underway.remove(id);
                }
            }
        }
        // No subscriber is the normal case: the events are for observers.
        let _ = self.inner.events.send(RestartEvent {
            workspace: id.clone(),
            outcome,
        });
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
            let mut schedule = self.schedule();
            let entry = schedule
                .pending
                .entry(workspace.id.clone())
                .or_insert(Pending {
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
            this.restart_if_due(&id, generation).await;
        });
    }

    /// Carries out the restart asked for as `generation`, unless a later
    /// request replaced it. Decided under the workspace's lock: an
    /// operation that ran meanwhile and asked again (its delivery took
    /// longer than the delay) pushes the restart back instead of causing
    /// a second one.
    async fn restart_if_due(&self, id: &WorkspaceId, generation: u64) {
        let guard = self.inner.locks.lock(id).await;
        let Some(due) = self.take_due(id, generation) else {
            return;
        };
        let mut wait = self.inner.first_retry;
        let mut guard = Some(guard);
        for attempt in 1..=RESTART_ATTEMPTS {
            let serialized = match guard.take() {
                Some(held) => held,
                None => self.inner.locks.lock(id).await,
            };
            let outcome = self.attempt(id, &due.container, attempt > 1).await;
            drop(serialized);
            match outcome {
                RestartOutcome::Done | RestartOutcome::Skipped => {
                    return self.report(id, outcome);
                }
                RestartOutcome::Failed if attempt < RESTART_ATTEMPTS => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                RestartOutcome::Failed => {
                    tracing::error!(workspace = %id, attempts = RESTART_ATTEMPTS, "workspace restart failed; giving up");
                    self.report(id, outcome);
                }
            }
        }
    }

    /// One restart; the caller holds the workspace's lock. A retry also
    /// starts a container found stopped: the failed attempt may have
    /// stopped it.
    async fn attempt(
        &self,
        id: &WorkspaceId,
        fallback: &ContainerName,
        retry: bool,
    ) -> RestartOutcome {
        let gate = self.inner.running.get(id);
        let _running = gate.write().await;
        let container = match self.inner.workspaces.workspace(id).await {
            Ok(Some(workspace)) if workspace.accepts_restarts() => workspace.container_name(),
            Ok(Some(workspace)) => {
                tracing::info!(workspace = %id, status = %workspace.spec.status, "restart skipped for this status");
                return RestartOutcome::Skipped;
            }
            Ok(None) => {
                tracing::info!(workspace = %id, "restart skipped: workspace record gone");
                return RestartOutcome::Skipped;
            }
            Err(e) => {
                // The operation that asked for it was allowed; keep going
                // with the container it named.
                tracing::warn!(workspace = %id, error = ?e, "could not re-read the workspace before its restart");
                fallback.clone()
            }
        };
        let cid = match self.inner.engine.state(&container).await {
            ContainerState::Running { id } => id,
            ContainerState::Stopped if !retry => {
                tracing::info!(workspace = %id, "restart skipped: container not running");
                return RestartOutcome::Skipped;
            }
            // The engine takes a name where it takes an id; a restart of a
            // stopped container starts it.
            ContainerState::Stopped => ContainerId::new(container.as_str()),
            ContainerState::Unknown => {
                tracing::error!(workspace = %id, "restart failed: container engine unavailable");
                return RestartOutcome::Failed;
            }
        };
        match self.inner.engine.restart(&cid).await {
            Ok(()) => {
                tracing::info!(workspace = %id, "workspace restarted");
                RestartOutcome::Done
            }
            Err(e) => {
                tracing::error!(workspace = %id, error = ?e, "workspace restart failed");
                RestartOutcome::Failed
            }
        }
    }

    /// Carries out every pending restart now, once each (graceful shutdown).
    pub async fn flush(&self) {
        let due: Vec<(WorkspaceId, Pending)> = {
            let mut schedule = self.schedule();
            let due: Vec<_> = schedule.pending.drain().collect();
            for (id, _) in &due {
                *schedule.underway.entry(id.clone()).or_default() += 1;
            }
            due
        };
        let restarts = due.iter().map(|(id, p)| async move {
            let serialized = self.inner.locks.lock(id).await;
            let outcome = self.attempt(id, &p.container, false).await;
            drop(serialized);
            self.report(id, outcome);
        });
        futures_util::future::join_all(restarts).await;
    }

    /// How many workspaces wait for a restart.
    pub fn pending_count(&self) -> usize {
        self.schedule().pending.len()
    }

    /// Whether a restart of the workspace is still to come: asked for and
    /// waiting for its delay, or under way and not yet reported. Decided
    /// before an install or uninstall answers, so "no restart" can be
    /// checked right after the answer.
    pub fn restart_pending(&self, id: &WorkspaceId) -> bool {
        let schedule = self.schedule();
        schedule.pending.contains_key(id) || schedule.underway.contains_key(id)
    }

    /// Every restart that comes due from now on, once it has ended.
    pub fn subscribe(&self) -> broadcast::Receiver<RestartEvent> {
        self.inner.events.subscribe()
    }

    /// Returns once no restart of the workspace is running.
    pub async fn wait_for_restart(&self, id: &WorkspaceId) {
        let gate = self.inner.running.get(id);
        drop(gate.read().await);
    }
}

/// One lock per key, created on first use and dropped with its last
/// user, so the map holds only keys in use.
struct KeyedLocks<K, L> {
    map: Arc<Mutex<HashMap<K, Arc<L>>>>,
}

impl<K, L> Default for KeyedLocks<K, L> {
    fn default() -> Self {
        Self {
            map: Arc::default(),
        }
    }
}

impl<K, L> Clone for KeyedLocks<K, L> {
    fn clone(&self) -> Self {
        Self {
            map: Arc::clone(&self.map),
        }
    }
}

impl<K: Eq + Hash + Clone, L: Default> KeyedLocks<K, L> {
    fn get(&self, key: &K) -> KeyedLock<K, L> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let lock = Arc::clone(map.entry(key.clone()).or_default());
        KeyedLock {
            key: key.clone(),
            lock,
            map: Arc::clone(&self.map),
        }
    }

    fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A handle on one key's lock; the map entry goes when the last handle
/// does.
struct KeyedLock<K: Eq + Hash, L> {
    key: K,
    lock: Arc<L>,
    map: Arc<Mutex<HashMap<K, Arc<L>>>>,
}

impl<K: Eq + Hash, L> std::ops::Deref for KeyedLock<K, L> {
    type Target = Arc<L>;
    fn deref(&self) -> &Arc<L> {
        &self.lock
    }
}

impl<K: Eq + Hash, L> Drop for KeyedLock<K, L> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        // Handles are only made under this mutex: two counts (the map's
        // and ours) means nobody else holds or waits for the lock.
        if map
            .get(&self.key)
            .is_some_and(|l| Arc::ptr_eq(l, &self.lock) && Arc::strong_count(l) == 2)
        {
            map.remove(&self.key);
        }
    }
}

/// Serializes operations on one workspace: two installs both land, and an
/// install, an uninstall and a restart of the same workspace never
/// interleave. Entries of idle workspaces are dropped.
#[derive(Clone, Default)]
pub struct WorkspaceLocks {
    locks: KeyedLocks<WorkspaceId, tokio::sync::Mutex<()>>,
}

/// Held while one operation runs on a workspace.
pub struct WorkspaceGuard {
    // Field order: the guard is released before the handle is dropped.
    _guard: tokio::sync::OwnedMutexGuard<()>,
    _handle: KeyedLock<WorkspaceId, tokio::sync::Mutex<()>>,
}

impl WorkspaceLocks {
    pub async fn lock(&self, id: &WorkspaceId) -> WorkspaceGuard {
        let handle = self.locks.get(id);
        let guard = Arc::clone(&handle.lock).lock_owned().await;
        WorkspaceGuard {
            _guard: guard,
            _handle: handle,
        }
    }

    /// Workspaces with a lock held or awaited.
    pub fn in_use(&self) -> usize {
        self.locks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::container::{EngineError, MockContainerEngine};
    use crate::ports::store::{MockWorkspaceStore, StoreError};

    fn workspace(id: &str, status: &str) -> Workspace {
        crate::app::testing::workspace(id, "x", status)
    }

    /// A store that answers each workspace with `status`.
    fn store(status: &'static str) -> Arc<dyn WorkspaceStore> {
        let mut store = MockWorkspaceStore::new();
        store
            .expect_workspace()
            .returning(move |id| Ok(Some(workspace(id.as_str(), status))));
        Arc::new(store)
    }

    fn engine_expecting(restarts: usize) -> MockContainerEngine {
        let mut engine = MockContainerEngine::new();
        engine
            .expect_state()
            .returning(|_| ContainerState::Running {
                id: ContainerId::new("cid"),
            });
        engine
            .expect_restart()
            .times(restarts)
            .returning(|_| Ok(()));
        engine
    }

    fn restarter(
        engine: MockContainerEngine,
        store: Arc<dyn WorkspaceStore>,
        delay: u64,
    ) -> Restarter {
        Restarter::new(
            Arc::new(engine),
            store,
            WorkspaceLocks::default(),
            Duration::from_secs(delay),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn requests_within_the_delay_coalesce_into_one_restart() {
        let restarter = restarter(engine_expecting(1), store("online"), 2);
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
        let restarter = restarter(engine_expecting(0), store("online"), 1);
        for status in ["paused", "hibernated", "removed"] {
            restarter.request(&workspace("ws1", status));
        }
        assert_eq!(restarter.pending_count(), 0);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_workspace_paused_before_its_restart_fires_is_not_restarted() {
        let restarter = restarter(engine_expecting(0), store("paused"), 1);
        restarter.request(&workspace("ws1", "online"));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(restarter.pending_count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn pending_restarts_are_carried_out_at_shutdown() {
        let restarter = restarter(engine_expecting(2), store("online"), 60);
        restarter.request(&workspace("a", "online"));
        restarter.request(&workspace("b", "online"));
        restarter.flush().await;
        assert_eq!(restarter.pending_count(), 0);
        tokio::time::sleep(Duration::from_secs(61)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_restart_is_retried_until_the_container_runs_again() {
        let mut engine = MockContainerEngine::new();
        let mut states = mockall::Sequence::new();
        engine
            .expect_state()
            .times(1)
            .in_sequence(&mut states)
            .returning(|_| ContainerState::Running {
                id: ContainerId::new("cid"),
            });
        // The failed attempt left the container stopped (`Exited (128)`):
        // the retries start it again.
        engine
            .expect_state()
            .times(2)
            .in_sequence(&mut states)
            .returning(|_| ContainerState::Stopped);
        let mut calls = 0;
        engine.expect_restart().times(3).returning(move |_| {
            calls += 1;
            if calls < 3 {
                Err(EngineError::Other("engine refused to start it".into()))
            } else {
                Ok(())
            }
        });
        let restarter = restarter(engine, store("online"), 1);
        restarter.request(&workspace("ws1", "online"));
        tokio::time::sleep(Duration::from_secs(60)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_failure_does_not_cancel_the_restart() {
        let mut store = MockWorkspaceStore::new();
        store
            .expect_workspace()
            .returning(|_| Err(StoreError::Unavailable("down".into())));
        let restarter = restarter(engine_expecting(1), Arc::new(store), 1);
        restarter.request(&workspace("ws1", "online"));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_waits_for_the_operation_holding_the_workspace() {
        let locks = WorkspaceLocks::default();
        let restarter = Restarter::new(
            Arc::new(engine_expecting(1)),
            store("online"),
            locks.clone(),
            Duration::from_secs(1),
        );
        let id = WorkspaceId::parse("ws1").unwrap();
        let held = locks.lock(&id).await;
        restarter.request(&workspace("ws1", "online"));
        tokio::time::sleep(Duration::from_secs(5)).await;
        // Still waiting: the mock would panic on a restart beyond 1, and
        // the lock map shows the restart queued behind the operation.
        assert_eq!(locks.in_use(), 1);
        drop(held);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(locks.in_use(), 0, "the restart ran and released the lock");
    }

    /// The next event, without waiting: `None` when nothing was reported.
    fn next_event(events: &mut broadcast::Receiver<RestartEvent>) -> Option<RestartEvent> {
        match events.try_recv() {
            Ok(event) => Some(event),
            Err(broadcast::error::TryRecvError::Empty) => None,
            Err(e) => panic!("{e}"),
        }
    }

    /// The next event; fails (rather than hangs) when none comes within
    /// an hour of paused time.
    async fn reported(events: &mut broadcast::Receiver<RestartEvent>) -> RestartEvent {
        tokio::time::timeout(Duration::from_secs(3600), events.recv())
            .await
            .expect("a restart event")
            .unwrap()
    }

    fn event(id: &str, outcome: RestartOutcome) -> RestartEvent {
        RestartEvent {
            workspace: WorkspaceId::parse(id).unwrap(),
            outcome,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_coalesced_burst_is_reported_once_and_then_nothing_is_pending() {
        let restarter = restarter(engine_expecting(1), store("online"), 2);
        let mut events = restarter.subscribe();
        let ws = workspace("ws1", "online");
        for _ in 0..3 {
            restarter.request(&ws);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(restarter.restart_pending(&ws.id));
        assert_eq!(next_event(&mut events), None);
        assert_eq!(
            reported(&mut events).await,
            event("ws1", RestartOutcome::Done)
        );
        assert!(!restarter.restart_pending(&ws.id));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            next_event(&mut events),
            None,
            "superseded requests are silent"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_workspace_that_does_not_accept_restarts_has_none_pending() {
        let restarter = restarter(engine_expecting(0), store("online"), 1);
        let paused = workspace("ws1", "paused");
        restarter.request(&paused);
        assert!(!restarter.restart_pending(&paused.id));
    }

    #[tokio::test(start_paused = true)]
    async fn a_skipped_restart_is_reported_as_skipped() {
        let restarter = restarter(engine_expecting(0), store("paused"), 1);
        let mut events = restarter.subscribe();
        restarter.request(&workspace("ws1", "online"));
        assert_eq!(
            reported(&mut events).await,
            event("ws1", RestartOutcome::Skipped)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_that_keeps_failing_is_pending_until_reported_failed() {
        let mut engine = MockContainerEngine::new();
        engine.expect_state().returning(|_| ContainerState::Unknown);
        let restarter = restarter(engine, store("online"), 1);
        let mut events = restarter.subscribe();
        let ws = workspace("ws2", "online");
        restarter.request(&ws);
        // Between attempts the restart is off the schedule but not over.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(restarter.pending_count(), 0);
        assert!(
            restarter.restart_pending(&ws.id),
            "a retrying restart is still to come"
        );
        assert_eq!(
            reported(&mut events).await,
            event("ws2", RestartOutcome::Failed)
        );
        assert!(!restarter.restart_pending(&ws.id));
    }

    #[tokio::test(start_paused = true)]
    async fn restarts_carried_out_at_shutdown_are_reported() {
        let restarter = restarter(engine_expecting(1), store("online"), 60);
        let mut events = restarter.subscribe();
        restarter.request(&workspace("a", "online"));
        restarter.flush().await;
        assert_eq!(
            next_event(&mut events),
            Some(event("a", RestartOutcome::Done))
        );
        assert!(!restarter.restart_pending(&WorkspaceId::parse("a").unwrap()));
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

    #[tokio::test]
    async fn the_lock_map_holds_only_workspaces_in_use() {
        let locks = WorkspaceLocks::default();
        for i in 0..100 {
            let id = WorkspaceId::parse(&format!("ws{i}")).unwrap();
            drop(locks.lock(&id).await);
        }
        assert_eq!(locks.in_use(), 0);
        let id = WorkspaceId::parse("busy").unwrap();
        let held = locks.lock(&id).await;
        let waiter = {
            let locks = locks.clone();
            let id = id.clone();
            tokio::spawn(async move { drop(locks.lock(&id).await) })
        };
        tokio::task::yield_now().await;
        assert_eq!(locks.in_use(), 1);
        drop(held);
        waiter.await.unwrap();
        assert_eq!(locks.in_use(), 0, "the last user removes the entry");
    }
}
