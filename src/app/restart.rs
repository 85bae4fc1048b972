//! Workspace restarts after install and uninstall (SPEC §5 "Restarts",
//! §12): a debounce per workspace, so N operations in a burst cost one
//! restart `PLUGIN_RESTART_DELAY` after the last, wherever they ran.
//!
//! The pending restarts live in the database ([`RestartQueue`]), shared by
//! every replica: a request sets its workspace's due time (the last one
//! wins), and a restart is carried out by whichever replica first holds
//! the workspace ([`WorkspaceLocks`]) once it is due: under the hold it
//! re-reads the pending restart, carries it out, and forgets it; the next
//! holder finds nothing left. The hold is the claim, so a replica that
//! dies mid-way leaves the restart pending for the others, and
//! [`Restarter::sweep`] (run every [`SWEEP_INTERVAL`] by the server) finds
//! restarts other replicas asked for, or left behind. A failed attempt is
//! pushed back in the queue with backoff, so its retries survive the
//! replica too. Restarts still pending at shutdown are carried out before
//! the process exits ([`Restarter::flush`]).
//!
//! A restart re-reads the workspace record (a workspace paused or
//! removed in the meantime is not restarted). While it runs, this
//! replica's listings wait for it ([`Restarter::wait_for_restart`]), so a
//! listing never mistakes the service's own restart for a stopped
//! container.
//!
//! Every restart this replica carries out is reported once, with how it
//! ended, to subscribers ([`Restarter::subscribe`]), and
//! [`Restarter::restart_pending`] tells whether one this replica asked for
//! is still to come: observers (the integration tests) see a restart
//! happen, or know none will, without watching the clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use crate::adapters::keyed::KeyedLocks;
use crate::domain::name::WorkspaceId;
use crate::domain::workspace::{ContainerName, Workspace};
use crate::ports::container::{ContainerEngine, ContainerId, ContainerState};
use crate::ports::coordination::{PendingRestart, RestartQueue, WorkspaceLocks};
use crate::ports::store::WorkspaceStore;

/// Attempts of one due restart, and the wait before the first retry
/// (doubled each time): about half a minute in all.
const RESTART_ATTEMPTS: i32 = 5;
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// How often a replica looks for due restarts it did not ask for itself:
/// asked for by another replica, or left by one that died.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Events a subscriber may fall behind by before it misses some.
const EVENT_BUFFER: usize = 64;

#[derive(Clone)]
pub struct Restarter {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<dyn ContainerEngine>,
    workspaces: Arc<dyn WorkspaceStore>,
    locks: Arc<dyn WorkspaceLocks>,
    queue: Arc<dyn RestartQueue>,
    delay: Duration,
    first_retry: Duration,
    clock: Clock,
    local: Mutex<Local>,
    /// Held for writing while a restart runs; listings pass through it.
    running: KeyedLocks<WorkspaceId, tokio::sync::RwLock<()>>,
    events: broadcast::Sender<RestartEvent>,
}

/// Due times are wall-clock instants shared with other replicas; they are
/// read through tokio's clock (wall time at start plus the time elapsed
/// since), so tests with paused time see restarts come due as they advance
/// it.
struct Clock {
    wall: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl Clock {
    fn new() -> Self {
        Self {
            wall: Utc::now(),
            start: tokio::time::Instant::now(),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.start.elapsed()).unwrap_or_default();
        self.wall + elapsed
    }
}

/// What this replica knows of its own restarts.
#[derive(Default)]
struct Local {
    /// Workspaces this replica asked to restart, with the request's
    /// number, until it sees the restart carried out (here or elsewhere).
    requested: HashMap<WorkspaceId, u64>,
    /// Numbers requests in order, so a sweep forgets only requests older
    /// than what it read.
    requests: u64,
    /// Restarts this replica is carrying out (holding, or waiting for,
    /// their workspace), per workspace.
    underway: HashMap<WorkspaceId, usize>,
}

/// How one try at a workspace's pending restart ended.
enum Carried {
    /// Not due yet (pushed back by a later request), or not reachable now:
    /// left in the queue.
    NotDue,
    /// Nothing pending any more: carried out elsewhere.
    Gone,
    /// Failed and pushed back by this long.
    Retrying(Duration),
    /// Carried out here; `still_pending` when a later request keeps one
    /// in the queue.
    Ended {
        outcome: RestartOutcome,
        still_pending: bool,
    },
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
        locks: Arc<dyn WorkspaceLocks>,
        queue: Arc<dyn RestartQueue>,
        delay: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                engine,
                workspaces,
                locks,
                queue,
                delay,
                first_retry: FIRST_RETRY,
                clock: Clock::new(),
                local: Mutex::default(),
                running: KeyedLocks::default(),
                events: broadcast::channel(EVENT_BUFFER).0,
            }),
        }
    }

    fn local(&self) -> std::sync::MutexGuard<'_, Local> {
        // A poisoned map only means a panic mid-update of plain data.
        self.inner.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// Asks for a restart of the workspace `PLUGIN_RESTART_DELAY` from now;
    /// a later request within the delay, from any replica, replaces this
    /// one. Skipped for paused, hibernated and removed workspaces. Returns
    /// once the request is in the database, so a replica that dies right
    /// after leaves it to the others.
    pub async fn request(&self, workspace: &Workspace) {
        if !workspace.accepts_restarts() {
            tracing::info!(workspace = %workspace.id, status = %workspace.spec.status, "restart skipped for this status");
            return;
        }
        let id = workspace.id.clone();
        {
            let mut local = self.local();
            local.requests += 1;
            let number = local.requests;
            local.requested.insert(id.clone(), number);
        }
        let due = self.now() + chrono::Duration::from_std(self.inner.delay).unwrap_or_default();
        if let Err(e) = self
            .inner
            .queue
            .request_restart(&id, &workspace.container_name(), due)
            .await
        {
            tracing::error!(workspace = %id, error = ?e, "could not record the restart; the workspace is not restarted");
            self.local().requested.remove(&id);
            let _ = self.inner.events.send(RestartEvent {
                workspace: id,
                outcome: RestartOutcome::Failed,
            });
            return;
        }
        self.carry_out_after(id, self.inner.delay);
    }

    /// Tries the workspace's restart once `after` has passed.
    fn carry_out_after(&self, id: WorkspaceId, after: Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            this.carry_out(&id, false).await;
        });
    }

    /// Carries out the workspace's pending restart if it is due (or now,
    /// when `now`), holding the workspace; reports how it ended.
    async fn carry_out(&self, id: &WorkspaceId, now: bool) {
        *self.local().underway.entry(id.clone()).or_default() += 1;
        let carried = self.carry_out_held(id, now).await;
        let event = {
            let mut local = self.local();
            if let Some(count) = local.underway.get_mut(id) {
                *count -= 1;
                if *count == 0 {
                    local.underway.remove(id);
                }
            }
            match carried {
                Carried::NotDue => None,
                Carried::Gone => {
                    local.requested.remove(id);
                    None
                }
                Carried::Retrying(wait) => {
                    self.carry_out_after(id.clone(), wait);
                    None
                }
                Carried::Ended {
                    outcome,
                    still_pending,
                } => {
                    if !still_pending {
                        local.requested.remove(id);
                    }
                    Some(outcome)
                }
            }
        };
        // Announced after the bookkeeping, so a subscriber that hears of
        // it and asks `restart_pending` sees only restarts still to come.
        // No subscriber is the normal case: the events are for observers.
        if let Some(outcome) = event {
            let _ = self.inner.events.send(RestartEvent {
                workspace: id.clone(),
                outcome,
            });
        }
    }

    /// Under the workspace's hold: an operation that ran meanwhile and
    /// asked again pushed the due time back, so this one is not due and
    /// the later request's timer carries it out.
    async fn carry_out_held(&self, id: &WorkspaceId, now: bool) -> Carried {
        let _held = match self.inner.locks.hold(id, None).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(workspace = %id, error = ?e, "could not hold the workspace for its restart; left for the next sweep");
                return Carried::NotDue;
            }
        };
        let pending = match self.inner.queue.pending_restart(id).await {
            Ok(Some(pending)) => pending,
            Ok(None) => return Carried::Gone,
            Err(e) => {
                tracing::warn!(workspace = %id, error = ?e, "could not read the pending restart; left for the next sweep");
                return Carried::NotDue;
            }
        };
        if !now && pending.due_at > self.now() {
            return Carried::NotDue;
        }
        let outcome = self
            .attempt(id, &pending.container, pending.attempts > 0)
            .await;
        if outcome == RestartOutcome::Failed {
            if let Some(wait) = self.retry_wait(&pending, now) {
                return self.push_back(&pending, wait).await;
            }
            tracing::error!(workspace = %id, attempts = pending.attempts + 1, "workspace restart failed; giving up");
        }
        let still_pending = match self
            .inner
            .queue
            .finish_restart(id, pending.generation)
            .await
        {
            Ok(still) => still,
            Err(e) => {
                // Left in the queue: carried out once more, not lost.
                tracing::warn!(workspace = %id, error = ?e, "could not forget the restart carried out");
                true
            }
        };
        Carried::Ended {
            outcome,
            still_pending,
        }
    }

    /// The wait before the next attempt of a failed restart; none when
    /// attempts are used up. At shutdown (`now`) the restart is left in
    /// the queue for another replica, or the next start, to try.
    fn retry_wait(&self, pending: &PendingRestart, now: bool) -> Option<Duration> {
        let next = pending.attempts + 1;
        if now {
            return Some(self.inner.first_retry);
        }
        (next < RESTART_ATTEMPTS).then(|| {
            self.inner.first_retry
                * 2u32.saturating_pow(u32::try_from(pending.attempts).unwrap_or(0))
        })
    }

    async fn push_back(&self, pending: &PendingRestart, wait: Duration) -> Carried {
        let due = self.now() + chrono::Duration::from_std(wait).unwrap_or_default();
        if let Err(e) = self
            .inner
            .queue
            .retry_restart(&pending.workspace, pending.generation, due)
            .await
        {
            tracing::warn!(workspace = %pending.workspace, error = ?e, "could not push the failed restart back; the next sweep retries it");
        }
        Carried::Retrying(wait)
    }

    /// One restart; the caller holds the workspace. A retry also starts a
    /// container found stopped: the failed attempt may have stopped it.
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

    /// Carries out now, once each, every restart this replica asked for
    /// that is still pending (graceful shutdown). One that fails stays in
    /// the database for another replica, or the next start.
    pub async fn flush(&self) {
        let ids: Vec<WorkspaceId> = self.local().requested.keys().cloned().collect();
        let restarts = ids.iter().map(|id| self.carry_out(id, true));
        futures_util::future::join_all(restarts).await;
    }

    /// Carries out every due restart this replica is not already on:
    /// asked for by other replicas, or left by one that died (or by this
    /// replica's previous run). Forgets requests of this replica that
    /// were carried out elsewhere.
    pub async fn sweep(&self) {
        let before = self.local().requests;
        let pending = match self.inner.queue.pending_restarts().await {
            Ok(pending) => pending,
            Err(e) => {
                tracing::warn!(error = ?e, "could not read the pending restarts");
                return;
            }
        };
        let now = self.now();
        let due: Vec<WorkspaceId> = {
            let mut local = self.local();
            let Local {
                requested,
                underway,
                ..
            } = &mut *local;
            requested.retain(|id, number| {
                *number > before
                    || underway.contains_key(id)
                    || pending.iter().any(|p| &p.workspace == id)
            });
            pending
                .into_iter()
                .filter(|p| p.due_at <= now && !underway.contains_key(&p.workspace))
                .map(|p| p.workspace)
                .collect()
        };
        for id in due {
            let this = self.clone();
            tokio::spawn(async move { this.carry_out(&id, false).await });
        }
    }

    /// Sweeps every [`SWEEP_INTERVAL`], for as long as the server serves.
    pub async fn run(self) {
        loop {
            self.sweep().await;
            tokio::time::sleep(SWEEP_INTERVAL).await;
        }
    }

    /// How many workspaces this replica asked to restart and has not seen
    /// restarted yet.
    pub fn pending_count(&self) -> usize {
        self.local().requested.len()
    }

    /// Whether a restart of the workspace this replica asked for is still
    /// to come: waiting for its delay, retrying, or under way and not yet
    /// reported. Decided before an install or uninstall answers, so "no
    /// restart" can be checked right after the answer.
    pub fn restart_pending(&self, id: &WorkspaceId) -> bool {
        let local = self.local();
        local.requested.contains_key(id) || local.underway.contains_key(id)
    }

    /// Every restart this replica carries out from now on, once it has
    /// ended.
    pub fn subscribe(&self) -> broadcast::Receiver<RestartEvent> {
        self.inner.events.subscribe()
    }

    /// Returns once no restart of the workspace is running here.
    pub async fn wait_for_restart(&self, id: &WorkspaceId) {
        let gate = self.inner.running.get(id);
        drop(gate.read().await);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::keyed::LocalWorkspaceLocks;
    use crate::app::testing::MemoryRestartQueue;
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
            Arc::new(LocalWorkspaceLocks::default()),
            Arc::new(MemoryRestartQueue::default()),
            Duration::from_secs(delay),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn requests_within_the_delay_coalesce_into_one_restart() {
        let restarter = restarter(engine_expecting(1), store("online"), 2);
        let ws = workspace("ws1", "online");
        for _ in 0..5 {
            restarter.request(&ws).await;
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
            restarter.request(&workspace("ws1", status)).await;
        }
        assert_eq!(restarter.pending_count(), 0);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_workspace_paused_before_its_restart_fires_is_not_restarted() {
        let restarter = restarter(engine_expecting(0), store("paused"), 1);
        restarter.request(&workspace("ws1", "online")).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(restarter.pending_count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn pending_restarts_are_carried_out_at_shutdown() {
        let restarter = restarter(engine_expecting(2), store("online"), 60);
        restarter.request(&workspace("a", "online")).await;
        restarter.request(&workspace("b", "online")).await;
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
        restarter.request(&workspace("ws1", "online")).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_failure_does_not_cancel_the_restart() {
        let mut store = MockWorkspaceStore::new();
        store
            .expect_workspace()
            .returning(|_| Err(StoreError::Unavailable("down".into())));
        let restarter = restarter(engine_expecting(1), Arc::new(store), 1);
        restarter.request(&workspace("ws1", "online")).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_waits_for_the_operation_holding_the_workspace() {
        let locks = LocalWorkspaceLocks::default();
        let restarter = Restarter::new(
            Arc::new(engine_expecting(1)),
            store("online"),
            Arc::new(locks.clone()),
            Arc::new(MemoryRestartQueue::default()),
            Duration::from_secs(1),
        );
        let id = WorkspaceId::parse("ws1").unwrap();
        let held = locks.hold(&id, None).await.unwrap();
        restarter.request(&workspace("ws1", "online")).await;
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
            restarter.request(&ws).await;
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
        restarter.request(&paused).await;
        assert!(!restarter.restart_pending(&paused.id));
    }

    #[tokio::test(start_paused = true)]
    async fn a_skipped_restart_is_reported_as_skipped() {
        let restarter = restarter(engine_expecting(0), store("paused"), 1);
        let mut events = restarter.subscribe();
        restarter.request(&workspace("ws1", "online")).await;
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
        restarter.request(&ws).await;
        // Between attempts the restart is pushed back in the queue, where
        // another replica could take it up.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(restarter.pending_count(), 1);
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
        restarter.request(&workspace("a", "online")).await;
        restarter.flush().await;
        assert_eq!(
            next_event(&mut events),
            Some(event("a", RestartOutcome::Done))
        );
        assert!(!restarter.restart_pending(&WorkspaceId::parse("a").unwrap()));
    }
}
