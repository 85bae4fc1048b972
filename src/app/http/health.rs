//! Liveness, readiness and metrics: unauthenticated, for orchestrators.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use crate::app::http::ApiTags;
use crate::app::usecases::UseCases;

pub struct HealthApi;

/// The process is up.
#[derive(Debug, Object)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// What the service depends on, each `ok` or `unavailable`, and whether it
/// is shutting down (SIGTERM: never ready again).
#[derive(Debug, Object)]
pub struct Readiness {
    pub database: String,
    pub container_engine: String,
    pub shutting_down: bool,
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// Every dependency answers.
    #[oai(status = 200)]
    Ready(Json<Readiness>),
    /// A dependency does not answer, or the service is shutting down.
    #[oai(status = 503)]
    NotReady(Json<Readiness>, #[oai(header = "Retry-After")] u32),
}

fn word(ok: bool) -> String {
    if ok { "ok" } else { "unavailable" }.to_owned()
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness: the process is up
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> Json<Health> {
        Json(Health {
            status: "ok".into(),
        })
    }

    /// Readiness: the database and the container engine answer, no shutdown under way
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self, app: Data<&Arc<UseCases>>) -> ReadyResponse {
        let ready = app.readiness.check().await;
        let body = Readiness {
            database: word(ready.database),
            container_engine: word(ready.container_engine),
            shutting_down: ready.shutting_down,
        };
        if ready.ready() {
            ReadyResponse::Ready(Json(body))
        } else {
            ReadyResponse::NotReady(Json(body), 5)
        }
    }
}
