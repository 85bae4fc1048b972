//! The HTTP layer (poem + poem-openapi): routes, extractors, the error
//! mapping, CORS and metrics. Handlers parse, call a use case, and shape
//! the answer: they hold only [`UseCases`], never a port.

pub mod allowlist;
pub mod audit;
pub mod download;
pub mod dto;
pub mod extract;
pub mod file_body;
pub mod health;
pub mod metrics;
pub mod plugins;
pub mod problem;
pub mod records;
pub mod rendered;
pub mod transport;
pub mod workspace_plugins;
pub mod workspaces;

use std::sync::Arc;

use poem::PathPattern;
use poem::http::{Method, StatusCode, header};
use poem::middleware::Cors;
use poem::{Endpoint, EndpointExt, IntoResponse, Response, Route, get, handler};
use poem_openapi::{OpenApiService, Tags};

use crate::app::http::metrics::Metrics;
use crate::app::http::problem::{ErrorBody, Problem};
use crate::app::usecases::UseCases;

#[derive(Tags)]
pub enum ApiTags {
    /// The local plugin registry and source schemes
    Plugins,
    /// Workspace records and tokens
    Workspaces,
    /// Plugins in a workspace: install, uninstall, list
    WorkspacePlugins,
    /// Org plugin allowlists
    Allowlist,
    /// The audit log of state-changing requests
    Audit,
    /// Liveness and readiness
    Health,
}

type Apis = (
    plugins::PluginsApi,
    workspaces::WorkspacesApi,
    workspace_plugins::WorkspacePluginsApi,
    records::RecordsApi,
    download::DownloadApi,
    allowlist::AllowlistApi,
    audit::AuditApi,
    health::HealthApi,
);

/// The OpenAPI service; also what generates `openapi/openapi.json`.
pub fn openapi_service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            plugins::PluginsApi::default(),
            workspaces::WorkspacesApi,
            workspace_plugins::WorkspacePluginsApi::default(),
            records::RecordsApi,
            download::DownloadApi,
            allowlist::AllowlistApi,
            audit::AuditApi,
            health::HealthApi,
        ),
        "workspace-plugins",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Installs, removes and serves plugins for AI-agent workspaces. \
         Errors are JSON objects with an `error` message.",
    )
}

/// API route patterns, as poem's router names them (`/workspaces/:param0`)
/// → the operation ids served there, joined by `|` in declaration order.
pub(crate) fn operations_by_route() -> std::collections::HashMap<String, String> {
    use poem_openapi::OpenApi as _;
    let mut routes = std::collections::HashMap::new();
    for api in Apis::meta() {
        for path in api.paths {
            // poem-openapi routes `/{id}/…/{name}` as `/:param0/…/:param1`.
            let mut params = 0;
            let pattern = path
                .path
                .split('/')
                .map(|segment| {
                    if segment.starts_with('{') && segment.ends_with('}') {
                        params += 1;
                        format!(":param{}", params - 1)
                    } else {
                        segment.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            let ops = path
                .operations
                .iter()
                .filter_map(|op| op.operation_id)
                .collect::<Vec<_>>()
                .join("|");
            // Two APIs may serve one path: its label names all of them.
            routes
                .entry(pattern)
                .and_modify(|all: &mut String| {
                    all.push('|');
                    all.push_str(&ops);
                })
                .or_insert(ops);
        }
    }
    routes
}

/// The OpenAPI document as committed in `openapi/openapi.json`.
pub fn openapi_json() -> String {
    openapi_service().spec()
}

/// Errors poem raises before a handler runs (no route, bad parameter, …)
/// become the same JSON as the handlers' own errors.
pub(crate) fn json_error(err: poem::Error) -> Response {
    let pattern = err.data::<PathPattern>().cloned();
    let operation = err.data::<poem_openapi::OperationId>().copied();
    let status = err.status();
    let mut response = if err.is::<poem_openapi::error::ParseParamError>() {
        <Problem>::new(StatusCode::BAD_REQUEST, ErrorBody::new(err.to_string())).into_response()
    } else if err.has_source() && status.is_client_error() {
        let message = match status {
            StatusCode::NOT_FOUND => "no such route (see /docs)".to_owned(),
            StatusCode::METHOD_NOT_ALLOWED => {
                "method not allowed for this route (see /docs)".to_owned()
            }
            _ => status
                .canonical_reason()
                .unwrap_or("bad request")
                .to_lowercase(),
        };
        <Problem>::new(status, ErrorBody::new(message)).into_response()
    } else if status.is_server_error() && err.has_source() {
        tracing::error!(error = %err, "unhandled error");
        <Problem>::new(status, ErrorBody::new("internal error")).into_response()
    } else {
        err.into_response()
    };
    if let Some(pattern) = pattern {
        response.set_data(pattern);
    }
    if let Some(operation) = operation {
        response.set_data(operation);
    }
    response
}

#[handler]
async fn metrics_endpoint(
    metrics: poem::web::Data<&Metrics>,
    app: poem::web::Data<&Arc<UseCases>>,
) -> Response {
    // An unreadable registry lists nothing.
    let plugins = app.registry.catalog().await.map_or(0, |c| c.plugins.len());
    metrics.set_registry(plugins, app.prepack.pending());
    Response::builder()
        .header(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )
        .body(metrics.render())
}

/// The whole HTTP application, ready to serve.
pub fn app(
    use_cases: Arc<UseCases>,
    cors_origins: &[String],
    metrics: Metrics,
) -> impl Endpoint + 'static {
    let api = openapi_service();
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    let cors = Cors::new()
        .allow_origins(cors_origins.iter().map(String::as_str))
        .allow_credentials(true)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
        ])
        .expose_headers([
            header::CONTENT_DISPOSITION.as_str(),
            header::ETAG.as_str(),
            "X-Plugin-Name",
            "X-Plugin-Source",
        ]);
    let recorder = metrics.clone();
    Route::new()
        .nest("/", api)
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .at("/metrics", get(metrics_endpoint))
        .data(use_cases)
        .data(metrics)
        .catch_all_error(|err| async move { json_error(err) })
        .around(move |next, req| metrics::record(recorder.clone(), next, req))
        .with(cors)
}
