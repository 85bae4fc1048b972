//! Readiness: whether the database and the container engine answer, each
//! within a bound, so an orchestrator's probe never hangs on a dead one;
//! and whether the service is shutting down (SPEC §12: from the signal on,
//! never ready again).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::ports::container::ContainerEngine;
use crate::ports::store::StoreHealth;

/// How long each dependency has to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Which dependencies answered, and whether the service is shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dependencies {
    pub database: bool,
    pub container_engine: bool,
    pub shutting_down: bool,
}

impl Dependencies {
    /// Every dependency answered and the service is not shutting down.
    pub fn ready(&self) -> bool {
        self.database && self.container_engine && !self.shutting_down
    }
}

/// Asks the database and the container engine whether they answer. Clones
/// share one shutdown flag.
#[derive(Clone)]
pub struct ReadinessCheck {
    store: Arc<dyn StoreHealth>,
    engine: Arc<dyn ContainerEngine>,
    shutting_down: Arc<AtomicBool>,
}

impl ReadinessCheck {
    pub fn new(store: Arc<dyn StoreHealth>, engine: Arc<dyn ContainerEngine>) -> Self {
        Self {
            store,
            engine,
            shutting_down: Arc::new(AtomicBool::new(false)),
        }
    }

    /// From now on every check says "not ready" (graceful shutdown).
    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub async fn check(&self) -> Dependencies {
        // Read first: a check that overlaps the signal may report the
        // shutdown; one that starts after it always does.
        let shutting_down = self.shutting_down.load(Ordering::SeqCst);
        let database = match tokio::time::timeout(READY_TIMEOUT, self.store.ping()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = ?e, "readiness: database unavailable");
                false
            }
            Err(_) => {
                tracing::warn!("readiness: database did not answer in time");
                false
            }
        };
        let container_engine = match tokio::time::timeout(READY_TIMEOUT, self.engine.ping()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = ?e, "readiness: container engine unavailable");
                false
            }
            Err(_) => {
                tracing::warn!("readiness: container engine did not answer in time");
                false
            }
        };
        Dependencies {
            database,
            container_engine,
            shutting_down,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::container::{EngineError, MockContainerEngine};
    use crate::ports::store::{MockStoreHealth, StoreError};

    fn store(answer: fn() -> Result<(), StoreError>) -> MockStoreHealth {
        let mut store = MockStoreHealth::new();
        store.expect_ping().returning(answer);
        store
    }

    fn engine(answer: fn() -> Result<(), EngineError>) -> MockContainerEngine {
        let mut engine = MockContainerEngine::new();
        engine.expect_ping().returning(answer);
        engine
    }

    fn check(store: MockStoreHealth, engine: MockContainerEngine) -> ReadinessCheck {
        ReadinessCheck::new(Arc::new(store), Arc::new(engine))
    }

    #[tokio::test]
    async fn ready_only_when_both_the_database_and_the_engine_answer() {
        let up = check(store(|| Ok(())), engine(|| Ok(()))).check().await;
        assert!(up.ready());

        let db_down = check(
            store(|| Err(StoreError::Unavailable("down".into()))),
            engine(|| Ok(())),
        )
        .check()
        .await;
        assert_eq!(
            db_down,
            Dependencies {
                database: false,
                container_engine: true,
                shutting_down: false,
            }
        );
        assert!(!db_down.ready());

        let engine_down = check(
            store(|| Ok(())),
            engine(|| Err(EngineError::Unavailable("no socket".into()))),
        )
        .check()
        .await;
        assert_eq!(
            engine_down,
            Dependencies {
                database: true,
                container_engine: false,
                shutting_down: false,
            }
        );
        assert!(!engine_down.ready());
    }

    #[tokio::test]
    async fn after_shut_down_no_check_is_ready_and_every_clone_knows() {
        let readiness = check(store(|| Ok(())), engine(|| Ok(())));
        let probe = readiness.clone();
        assert!(probe.check().await.ready());
        readiness.shut_down();
        let got = probe.check().await;
        assert_eq!(
            got,
            Dependencies {
                database: true,
                container_engine: true,
                shutting_down: true,
            }
        );
        assert!(!got.ready());
    }

    /// A store whose ping never answers.
    struct Hanging;

    #[async_trait::async_trait]
    impl StoreHealth for Hanging {
        async fn ping(&self) -> Result<(), StoreError> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_database_that_never_answers_is_unavailable_after_the_bound() {
        let readiness = ReadinessCheck::new(Arc::new(Hanging), Arc::new(engine(|| Ok(()))));
        let started = tokio::time::Instant::now();
        let got = readiness.check().await;
        assert!(!got.database && got.container_engine, "{got:?}");
        assert_eq!(started.elapsed(), READY_TIMEOUT);
    }
}
