use reqwest::Method;
use serde_json::json;

use crate::support::app::{json, spawn_app};

#[tokio::test]
async fn healthz_and_readyz_answer_without_a_token() {
    let app = spawn_app().await;
    assert_eq!(
        app.call(Method::GET, "/healthz", None, None).await,
        (200, json!({"status": "ok"}))
    );
    assert_eq!(
        app.call(Method::GET, "/readyz", None, None).await,
        (
            200,
            json!({"database": "ok", "container_engine": "ok", "shutting_down": false})
        )
    );
}

#[tokio::test]
async fn readyz_is_503_with_retry_after_when_the_database_does_not_answer() {
    let app = spawn_app().await;
    app.store.set_broken(true);
    let resp = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.headers()["retry-after"], "5");
    assert_eq!(
        json(resp).await,
        (
            503,
            json!({"database": "unavailable", "container_engine": "ok", "shutting_down": false})
        )
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_pattern_and_status() {
    let app = spawn_app().await;
    app.call(Method::GET, "/plugins", None, None).await;
    app.call(Method::GET, "/workspaces/some-id", None, None)
        .await;
    app.call(Method::GET, "/no/such/route", None, None).await;
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"http_requests_total{method="GET",route="listPlugins",status="200"} 1"#,
        r#"http_requests_total{method="GET",route="getWorkspace",status="401"} 1"#,
        r#"http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in:\n{text}");
    }
    assert!(text.contains("http_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = spawn_app().await;
    assert_eq!(
        app.call(Method::GET, "/nope", None, None).await,
        (404, json!({"error": "no such route (see /docs)"}))
    );
    assert_eq!(
        app.call(Method::PATCH, "/plugins", None, None).await,
        (
            405,
            json!({"error": "method not allowed for this route (see /docs)"})
        )
    );
}

#[tokio::test]
async fn cors_lets_the_canvas_origins_in_with_credentials() {
    let app = spawn_app().await;
    let resp = app
        .client
        .request(Method::OPTIONS, app.url("/workspaces/ws-1"))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "DELETE")
        .header(
            "access-control-request-headers",
            "authorization, if-none-match",
        )
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "http://localhost:3000");
    assert_eq!(h["access-control-allow-credentials"], "true");
    let resp = app
        .client
        .get(app.url("/plugins"))
        .header("origin", "http://localhost:3001")
        .send()
        .await
        .unwrap();
    let exposed = resp.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    for header in [
        "content-disposition",
        "etag",
        "x-plugin-name",
        "x-plugin-source",
    ] {
        assert!(exposed.contains(header), "{exposed}");
    }
    let resp = app
        .client
        .request(Method::OPTIONS, app.url("/plugins"))
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
}
