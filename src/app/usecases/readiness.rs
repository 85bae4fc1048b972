//! Readiness: whether the database and the container engine answer, each
//! within a bound, so an orchestrator's probe never hangs on a dead one.

use std::sync::Arc;
use std::time::Duration;

use crate::ports::container::ContainerEngine;
use crate::ports::store::StoreHealth;

/// How long each dependency has to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Which dependencies answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dependencies {
    pub database: bool,
    pub container_engine: bool,
}

impl Dependencies {
    /// Every dependency answered.
    pub fn ready(&self) -> bool {
        self.database && self.container_engine
    }
}

/// Asks the database and the container engine whether they answer.
#[derive(Clone)]
pub struct ReadinessCheck {
    store: Arc<dyn StoreHealth>,
    engine: Arc<dyn ContainerEngine>,
}

impl ReadinessCheck {
    pub fn new(store: Arc<dyn StoreHealth>, engine: Arc<dyn ContainerEngine>) -> Self {
        Self { store, engine }
    }

    pub async fn check(&self) -> Dependencies {
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
                container_engine: true
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
                container_engine: false
            }
        );
        assert!(!engine_down.ready());
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
