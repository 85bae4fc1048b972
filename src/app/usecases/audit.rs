//! The audit log (SPEC §11): how each state-changing request's event is
//! drafted and concluded, the admin's reading of it (`GET /audit`), and
//! retention.
//!
//! A use case drafts its event when the request reaches it (who, what,
//! which workspace), fills in what it learns (plugin, source, digest), and
//! concludes it once: an install's or uninstall's success goes to the
//! receipt store with its receipt change (one transaction); everything
//! else is appended here on its own.

use std::sync::Arc;
use std::time::Duration;

use super::access::Principal;
use crate::app::error::AppError;
use crate::domain::audit::{
    AuditAction, AuditCursor, AuditEvent, AuditFilter, AuditOutcome, AuditRecord,
};
use crate::domain::digest::CallerSha256Error;
use crate::domain::name::WorkspaceId;
use crate::domain::policy::AllowlistRefusal;
use crate::domain::staging::StagingError;
use crate::ports::audit::AuditLog;

/// Events deleted per retention transaction: small enough that a sweep
/// never holds the database's write lock for long.
pub const RETENTION_BATCH: u64 = 500;

/// One page of events, newest first.
#[derive(Debug)]
pub struct AuditPage {
    pub events: Vec<AuditRecord>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<AuditCursor>,
}

/// The HTTP status a failed request answers with: what its event records.
/// The HTTP layer owns that table (`http::problem::status_of`); the
/// composition hands it in, so the use cases name no HTTP type.
pub type StatusOf = fn(&AppError) -> u16;

/// Writes and reads the audit log.
#[derive(Clone)]
pub struct AuditTrail {
    log: Arc<dyn AuditLog>,
    status_of: StatusOf,
}

/// Whether a policy refused the request (SPEC §11 "policy refusal": the
/// org allowlist, pinning, integrity) rather than it failing.
pub fn outcome_of(error: &AppError) -> AuditOutcome {
    match error {
        AppError::Allowlist(AllowlistRefusal::NotAllowed(_))
        | AppError::Staging(
            StagingError::Unpinned { .. }
            | StagingError::Refused { .. }
            | StagingError::Integrity { .. },
        ) => AuditOutcome::Refused,
        AppError::Staging(StagingError::CallerSha256 { error, .. })
            if !matches!(error, CallerSha256Error::Invalid) =>
        {
            AuditOutcome::Refused
        }
        _ => AuditOutcome::Failed,
    }
}

impl AuditTrail {
    pub fn new(log: Arc<dyn AuditLog>, status_of: StatusOf) -> Self {
        Self { log, status_of }
    }

    /// The event of a request by `principal` about `workspace`, before its
    /// outcome is known (concluded by [`AuditTrail::conclude`]).
    pub fn draft(
        action: AuditAction,
        principal: &Principal,
        workspace: Option<&WorkspaceId>,
    ) -> AuditEvent {
        let mut event = AuditEvent::new(
            crate::app::now(),
            principal.actor(),
            action,
            AuditOutcome::Failed,
            500,
        );
        event.workspace_id = workspace.cloned();
        event
    }

    /// `draft` as a success answered with `status`, stamped now.
    pub fn succeeded(draft: &AuditEvent, outcome: AuditOutcome, status: u16) -> AuditEvent {
        let mut event = draft.clone();
        event.at = crate::app::now();
        event.outcome = outcome;
        event.status = status;
        event
    }

    /// Records how a request ended: a failure as refused or failed with
    /// the status it answers; a success as `ok` (its status and outcome
    /// from `success`), unless `success` is `None` because its event went
    /// with a receipt change already.
    pub async fn conclude<T>(
        &self,
        draft: AuditEvent,
        result: &Result<T, AppError>,
        success: impl FnOnce(&T) -> Option<(AuditOutcome, u16)>,
    ) {
        let event = match result {
            Ok(value) => match success(value) {
                Some((outcome, status)) => Self::succeeded(&draft, outcome, status),
                None => return,
            },
            Err(error) => Self::succeeded(&draft, outcome_of(error), (self.status_of)(error)),
        };
        self.append(&event).await;
    }

    /// Appends an event on its own. The request's effect has happened (or
    /// failed) already, so a store error is logged, not answered.
    async fn append(&self, event: &AuditEvent) {
        if let Err(e) = self.log.append(event).await {
            tracing::error!(action = %event.action, outcome = %event.outcome, status = event.status, error = ?e, "could not append audit event");
        }
    }

    /// `GET /audit`: at most `limit` events matching `filter`, newest first.
    pub async fn page(&self, filter: &AuditFilter, limit: u64) -> Result<AuditPage, AppError> {
        // One more than asked tells whether another page exists.
        let mut events = self
            .log
            .events(filter, limit + 1)
            .await
            .map_err(AppError::Store)?;
        let more = events.len() as u64 > limit;
        events.truncate(limit as usize);
        let next_cursor = more
            .then(|| events.last().map(AuditCursor::after))
            .flatten();
        Ok(AuditPage {
            events,
            next_cursor,
        })
    }
}

/// Retention (`PLUGIN_AUDIT_RETENTION`): events older than `max_age` are
/// deleted in bounded batches, each its own short transaction, by a
/// background task; requests never wait for it.
#[derive(Clone)]
pub struct AuditRetention {
    log: Arc<dyn AuditLog>,
    max_age: Duration,
    batch: u64,
}

impl AuditRetention {
    pub fn new(log: Arc<dyn AuditLog>, max_age: Duration, batch: u64) -> Self {
        Self {
            log,
            max_age,
            batch,
        }
    }

    /// How often a sweep runs: a tenth of the retention, between 1 s and
    /// an hour, so nothing outlives it by more than a tenth (or an hour).
    pub fn period(&self) -> Duration {
        (self.max_age / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600))
    }

    /// Deletes every event older than the retention, batch by batch,
    /// yielding between batches; answers how many went.
    pub async fn sweep(&self) -> Result<u64, AppError> {
        let max_age = chrono::Duration::from_std(self.max_age).unwrap_or(chrono::Duration::MAX);
        let cutoff = crate::app::now()
            .checked_sub_signed(max_age)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let mut total = 0;
        loop {
            let deleted = self
                .log
                .forget_before(cutoff, self.batch)
                .await
                .map_err(AppError::Store)?;
            total += deleted;
            if deleted < self.batch {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Sweeps every [`AuditRetention::period`] until the task is dropped
    /// or aborted; a failed sweep is logged and tried again next period.
    pub async fn run(self) {
        let mut ticks = tokio::time::interval(self.period());
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match self.sweep().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "audit retention removed old events"),
                Err(e) => tracing::warn!(error = ?e, "audit retention sweep failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use chrono::{DateTime, Utc};

    use super::*;
    use crate::domain::name::PluginName;
    use crate::ports::audit::MockAuditLog;

    #[test]
    fn policy_refusals_are_refused_and_everything_else_failed() {
        let source_text = "github://o/r".to_owned();
        let refused = [
            AppError::Allowlist(AllowlistRefusal::NotAllowed(
                PluginName::parse("p").unwrap(),
            )),
            AppError::Staging(StagingError::Unpinned {
                source_text: source_text.clone(),
            }),
            AppError::Staging(StagingError::Integrity {
                source_text: source_text.clone(),
            }),
            AppError::Staging(StagingError::Refused {
                source_text: source_text.clone(),
                message: "https sources must be pinned".into(),
            }),
            AppError::Staging(StagingError::CallerSha256 {
                source_text: source_text.clone(),
                error: CallerSha256Error::PluginYamlMissing,
            }),
        ];
        for error in &refused {
            assert_eq!(outcome_of(error), AuditOutcome::Refused, "{error:?}");
        }
        let failed = [
            AppError::Allowlist(AllowlistRefusal::Unavailable),
            AppError::Staging(StagingError::NotFound { source_text }),
            AppError::ContainerNotRunning,
            AppError::WorkspaceNotFound,
            AppError::InvalidBody,
        ];
        for error in &failed {
            assert_eq!(outcome_of(error), AuditOutcome::Failed, "{error:?}");
        }
    }

    #[tokio::test]
    async fn a_failure_is_recorded_with_the_status_it_answers() {
        let appended = Arc::new(Mutex::new(Vec::new()));
        let mut log = MockAuditLog::new();
        let sink = appended.clone();
        log.expect_append().returning(move |e| {
            sink.lock().unwrap().push(e.clone());
            Ok(())
        });
        // The status table is the HTTP layer's; this one knows one refusal.
        let trail = AuditTrail::new(Arc::new(log), |e| match e {
            AppError::Allowlist(_) => 403,
            _ => 500,
        });
        let draft = AuditTrail::draft(AuditAction::Install, &Principal::Admin, None);
        let refused: Result<(), AppError> = Err(AppError::Allowlist(AllowlistRefusal::NotAllowed(
            PluginName::parse("p").unwrap(),
        )));
        trail.conclude(draft.clone(), &refused, |_| None).await;
        // A success recorded with its receipt change is not appended again.
        trail.conclude(draft.clone(), &Ok(()), |_| None).await;
        trail
            .conclude(draft, &Ok(()), |_| Some((AuditOutcome::Unchanged, 200)))
            .await;
        let appended = appended.lock().unwrap();
        let got: Vec<_> = appended.iter().map(|e| (e.outcome, e.status)).collect();
        assert_eq!(
            got,
            [(AuditOutcome::Refused, 403), (AuditOutcome::Unchanged, 200)]
        );
    }

    #[tokio::test]
    async fn retention_deletes_batch_by_batch_until_a_short_one() {
        let mut log = MockAuditLog::new();
        let mut left = 1200u64;
        let cutoffs = Arc::new(Mutex::new(Vec::<DateTime<Utc>>::new()));
        let seen = cutoffs.clone();
        log.expect_forget_before()
            .times(3)
            .returning(move |cutoff, batch| {
                seen.lock().unwrap().push(cutoff);
                let n = left.min(batch);
                left -= n;
                Ok(n)
            });
        let retention = AuditRetention::new(Arc::new(log), Duration::from_secs(3600), 500);
        let before = crate::app::now();
        assert_eq!(retention.sweep().await.unwrap(), 1200);
        let cutoffs = cutoffs.lock().unwrap();
        let expected = before - chrono::Duration::hours(1);
        assert!(
            cutoffs
                .iter()
                .all(|c| (*c - expected).num_seconds().abs() < 5),
            "{cutoffs:?}"
        );
    }

    #[test]
    fn retention_sweeps_ten_times_per_period_within_bounds() {
        let period = |age| AuditRetention::new(Arc::new(MockAuditLog::new()), age, 1).period();
        assert_eq!(
            period(Duration::from_secs(90 * 86400)),
            Duration::from_secs(3600)
        );
        assert_eq!(period(Duration::from_secs(600)), Duration::from_secs(60));
        assert_eq!(period(Duration::from_secs(2)), Duration::from_secs(1));
    }
}
