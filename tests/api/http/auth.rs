use reqwest::Method;
use serde_json::json;

use crate::support::app::{ADMIN_TOKEN, Options, TestApp, json, spawn_app, spawn_app_with};

async fn two_workspaces(app: &TestApp) -> (String, String) {
    app.create_workspace("ws-1", json!({"name": "One", "runtime": "x"}))
        .await;
    app.create_workspace("ws-2", json!({"name": "Two", "runtime": "x"}))
        .await;
    let (_, one) = app.issue_token("ws-1").await;
    let (_, two) = app.issue_token("ws-2").await;
    (one, two)
}

async fn get_with_header(
    app: &TestApp,
    path: &str,
    header: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut rb = app.client.get(app.url(path));
    if let Some(value) = header {
        rb = rb.header("authorization", value);
    }
    json(rb.send().await.unwrap()).await
}

#[tokio::test]
async fn a_missing_token_says_so_and_every_bad_token_gets_one_indistinguishable_401() {
    let app = spawn_app().await;
    let (one, two) = two_workspaces(&app).await;
    let (revoked_id, revoked) = app.issue_token("ws-1").await;
    app.call(
        Method::DELETE,
        &format!("/workspaces/ws-1/tokens/{revoked_id}"),
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    app.create_workspace(
        "gone",
        json!({"name": "G", "runtime": "x", "status": "removed"}),
    )
    .await;
    let (_, removed) = app.issue_token("gone").await;

    for header in [None, Some(""), Some("Bearer"), Some("Bearer   ")] {
        let (status, body) = get_with_header(&app, "/workspaces/ws-1", header).await;
        assert_eq!(
            (status, body),
            (401, json!({"error": "missing auth token"})),
            "{header:?}"
        );
    }
    let bad = [
        "Bearer wrong".to_owned(),
        format!("Bearer {two}"),
        format!("Bearer {revoked}"),
        format!("Basic {one}"),
        format!("Bearer {one}x"),
    ];
    for header in &bad {
        let (status, body) = get_with_header(&app, "/workspaces/ws-1", Some(header)).await;
        assert_eq!(
            (status, body),
            (401, json!({"error": "invalid auth token"})),
            "{header}"
        );
    }
    let (status, body) =
        get_with_header(&app, "/workspaces/gone", Some(&format!("Bearer {removed}"))).await;
    assert_eq!(
        (status, body),
        (401, json!({"error": "invalid auth token"})),
        "a removed workspace's token is dead"
    );
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let (status, body) =
            get_with_header(&app, "/workspaces/ws-1", Some(&format!("{scheme} {one}"))).await;
        assert_eq!(status, 200, "{scheme}: {body}");
        assert_eq!(body["id"], "ws-1");
    }
}

#[tokio::test]
async fn an_unknown_workspace_is_404_only_for_the_admin() {
    let app = spawn_app().await;
    let (one, _) = two_workspaces(&app).await;
    let (status, body) = app
        .call(Method::GET, "/workspaces/nope", Some(&one), None)
        .await;
    assert_eq!(
        (status, body),
        (401, json!({"error": "invalid auth token"}))
    );
    let (status, body) = app.admin_get("/workspaces/nope").await;
    assert_eq!(
        (status, body),
        (404, json!({"error": "workspace not found"}))
    );
}

#[tokio::test]
async fn a_workspace_token_on_an_admin_route_is_403_and_changes_nothing() {
    let app = spawn_app().await;
    let (one, _) = two_workspaces(&app).await;
    let routes = [
        (
            Method::PUT,
            "/workspaces/ws-1",
            Some(json!({"name": "Hacked", "runtime": "x"})),
        ),
        (Method::DELETE, "/workspaces/ws-1", None),
        (Method::GET, "/workspaces", None),
        (Method::POST, "/workspaces/ws-1/tokens", None),
        (Method::GET, "/workspaces/ws-1/tokens", None),
        (
            Method::DELETE,
            "/workspaces/ws-1/tokens/tok_000000000000000000000000",
            None,
        ),
        (Method::GET, "/orgs/ws-1/plugins/allowlist", None),
        (
            Method::PUT,
            "/orgs/ws-1/plugins/allowlist",
            Some(json!({"plugins": ["x"]})),
        ),
    ];
    for (method, path, body) in routes {
        let (status, error) = app
            .call(method.clone(), path, Some(&one), body.clone())
            .await;
        assert_eq!(
            (status, error),
            (403, json!({"error": "admin token required"})),
            "{method} {path}"
        );
        let (status, error) = app
            .call(method.clone(), path, Some("wrong"), body.clone())
            .await;
        assert_eq!(
            (status, error),
            (401, json!({"error": "invalid auth token"})),
            "{method} {path}"
        );
        let (status, error) = app.call(method.clone(), path, None, body).await;
        assert_eq!(
            (status, error),
            (401, json!({"error": "missing auth token"})),
            "{method} {path}"
        );
    }
    let (_, record) = app.admin_get("/workspaces/ws-1").await;
    assert_eq!(record["name"], "One");
    let (_, tokens) = app.admin_get("/workspaces/ws-1/tokens").await;
    assert_eq!(tokens.as_array().unwrap().len(), 1);
    let (_, list) = app.admin_get("/orgs/ws-1/plugins/allowlist").await;
    assert_eq!(list["plugins"], json!([]));
}

#[tokio::test]
async fn auth_comes_before_the_body_is_read() {
    let app = spawn_app().await;
    let resp = app
        .req(Method::PUT, "/workspaces/ws-1", None)
        .body(vec![b'x'; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(
        json(resp).await,
        (401, json!({"error": "missing auth token"}))
    );
}

#[tokio::test]
async fn tokenless_workspaces_need_the_opt_in_and_no_live_token() {
    let closed = spawn_app().await;
    closed
        .create_workspace("open", json!({"name": "O", "runtime": "x"}))
        .await;
    let (status, _) = closed
        .call(Method::GET, "/workspaces/open", None, None)
        .await;
    assert_eq!(status, 401, "off by default");

    let app = spawn_app_with(Options {
        extra_args: vec!["--plugin-allow-tokenless-workspaces".into(), "true".into()],
        ..Options::default()
    })
    .await;
    app.create_workspace("open", json!({"name": "O", "runtime": "x"}))
        .await;
    app.create_workspace("guarded", json!({"name": "G", "runtime": "x"}))
        .await;
    app.issue_token("guarded").await;
    let (status, body) = app.call(Method::GET, "/workspaces/open", None, None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .call(Method::GET, "/workspaces/guarded", None, None)
        .await;
    assert_eq!(
        (status, body),
        (401, json!({"error": "missing auth token"}))
    );
    let (status, body) = app
        .call(Method::GET, "/workspaces/unknown", None, None)
        .await;
    assert_eq!(
        (status, body),
        (401, json!({"error": "missing auth token"})),
        "no record: admin only"
    );
    let (status, _) = app.call(Method::GET, "/workspaces", None, None).await;
    assert_eq!(status, 401, "admin routes still need the admin token");
}

#[tokio::test]
async fn store_failures_fail_closed_without_leaking_details() {
    let app = spawn_app().await;
    let (one, _) = two_workspaces(&app).await;
    app.store.set_broken(true);
    let (status, body) = app
        .call(Method::GET, "/workspaces/ws-1", Some(&one), None)
        .await;
    assert_eq!((status, body), (500, json!({"error": "auth check failed"})));
    let (status, body) = app.admin_get("/workspaces/ws-1").await;
    assert_eq!(
        (status, body),
        (500, json!({"error": "workspace lookup failed"}))
    );
    let (status, body) = app.call(Method::GET, "/workspaces", Some(&one), None).await;
    assert_eq!(
        (status, body),
        (500, json!({"error": "auth check failed"})),
        "admin route, workspace token"
    );
    let (status, body) = app.admin_get("/workspaces").await;
    assert_eq!((status, body), (500, json!({"error": "internal error"})));
    app.store.set_broken(false);
    let (status, _) = app
        .call(Method::GET, "/workspaces/ws-1", Some(&one), None)
        .await;
    assert_eq!(status, 200);
}
