//! Prometheus metrics: requests by route, method and status, and
//! latencies. Every label value comes from a fixed set, so no request,
//! however odd its method or path, adds a series: the method is one of the
//! standard ones or `other`; the route is the operation id (for a 405, the
//! operation ids of the path it hit), the route pattern of the few routes
//! outside the API (`/metrics`, `/docs`, `/openapi.json`), or `unmatched`.
//! Two gauges follow the registry index: `plugin_registry_plugins` and
//! `plugin_registry_prepack_pending` (set when scraped).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use poem::PathPattern;
use poem::http::Method;
use poem::{Endpoint, IntoResponse, Request, Response};
use poem_openapi::OperationId;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// The route label of a request no route matched.
pub const UNMATCHED: &str = "unmatched";

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    registry_plugins: IntGauge,
    prepack_pending: IntGauge,
    /// API route patterns (as the router names them) → the operation ids
    /// served there, joined by `|`: the route label of a 405.
    operations: Arc<HashMap<String, String>>,
}

/// The method label: a standard method, else `other`.
fn method_label(method: &Method) -> &'static str {
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
        Method::PATCH,
        Method::CONNECT,
        Method::TRACE,
    ];
    STANDARD
        .iter()
        .find(|m| *m == method)
        .map_or("other", Method::as_str)
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["method", "route", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route and method",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["method", "route"],
        )?;
        let registry_plugins = IntGauge::new(
            "plugin_registry_plugins",
            "Plugins in the local registry's index",
        )?;
        let prepack_pending = IntGauge::new(
            "plugin_registry_prepack_pending",
            "Registry plugins waiting to be packed ahead of time, or being packed",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(registry_plugins.clone()))?;
        registry.register(Box::new(prepack_pending.clone()))?;
        Ok(Self {
            registry,
            requests,
            latency,
            registry_plugins,
            prepack_pending,
            operations: Arc::new(super::operations_by_route()),
        })
    }

    /// The route label of a response (see the module comment).
    fn route_label(&self, response: &Response) -> String {
        if let Some(op) = response.data::<OperationId>() {
            return op.0.to_owned();
        }
        // A request no route matched carries an empty pattern, or none.
        match response.data::<PathPattern>().filter(|p| !p.0.is_empty()) {
            Some(pattern) => self
                .operations
                .get(&*pattern.0)
                .cloned()
                .unwrap_or_else(|| pattern.0.to_string()),
            None => UNMATCHED.to_owned(),
        }
    }

    /// Sets the registry gauges (read when scraped).
    pub fn set_registry(&self, plugins: usize, prepack_pending: usize) {
        self.registry_plugins
            .set(i64::try_from(plugins).unwrap_or(i64::MAX));
        self.prepack_pending
            .set(i64::try_from(prepack_pending).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "could not encode metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests
            .with_label_values(&[method, route, &status.to_string()])
            .inc();
        self.latency
            .with_label_values(&[method, route])
            .observe(seconds);
    }
}

/// Middleware body: times the request and counts its final status.
pub async fn record<E: Endpoint>(
    metrics: Metrics,
    next: std::sync::Arc<E>,
    req: Request,
) -> poem::Result<Response> {
    let method = method_label(req.method());
    let started = Instant::now();
    let response = match next.call(req).await {
        Ok(output) => output.into_response(),
        Err(err) => super::json_error(err),
    };
    let route = metrics.route_label(&response);
    metrics.observe(
        method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_standard_ones_are_other() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        for odd in ["get", "PROPFIND", "XQZ", "BREW"] {
            let method = Method::from_bytes(odd.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "other", "{odd}");
        }
    }

    #[test]
    fn every_api_route_has_its_operation_ids() {
        let metrics = Metrics::new().unwrap();
        let label = |pattern: &str| {
            let mut response = Response::default();
            response.set_data(PathPattern(pattern.into()));
            metrics.route_label(&response)
        };
        assert_eq!(label("/plugins"), "listPlugins");
        assert_eq!(
            label("/workspaces/:param0"),
            "putWorkspace|getWorkspace|deleteWorkspace"
        );
        assert_eq!(
            label("/workspaces/:param0/plugins/:param1/download"),
            "downloadPlugin"
        );
        // Routes outside the API keep their (fixed) pattern.
        assert_eq!(label("/metrics"), "/metrics");
        assert_eq!(metrics.route_label(&Response::default()), UNMATCHED);
        assert_eq!(label(""), UNMATCHED);
        // Every operation of the document is reachable through a route.
        let document: serde_json::Value =
            serde_json::from_str(&super::super::openapi_json()).unwrap();
        let documented = document["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|ops| ops.as_object().unwrap().values())
            .filter_map(|op| op["operationId"].as_str())
            .count();
        let labelled = metrics
            .operations
            .values()
            .map(|ops| ops.split('|').count())
            .sum::<usize>();
        assert_eq!(labelled, documented);
    }
}
