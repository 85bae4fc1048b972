//! `GET /audit` and the events behind it (SPEC §11) through the real
//! server: one per state-changing request and per policy refusal, none for
//! reads, never a secret; filters, cursor, admin only.

use reqwest::Method;
use serde_json::{Value, json};

use crate::plugins::Registry;
use crate::support::app::{ADMIN_TOKEN, Options, TestApp, spawn_app, spawn_app_with};

async fn admin(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    app.call(method, path, Some(ADMIN_TOKEN), body).await
}

fn summary(rows: &[(&str, &str, i64)]) -> Vec<(String, String, i64)> {
    rows.iter()
        .map(|(a, o, s)| (a.to_string(), o.to_string(), *s))
        .collect()
}

/// Every secret the test handled must be absent from every stored column.
async fn assert_no_secret_stored(app: &TestApp, secrets: &[&str]) {
    let table = serde_json::to_string(&app.audit_rows().await).unwrap();
    for secret in secrets {
        assert!(
            !table.contains(secret),
            "{secret:?} found in the audit table: {table}"
        );
    }
}

#[tokio::test]
async fn every_admin_action_is_one_event_reads_are_none_and_no_secret_is_ever_stored() {
    let app = spawn_app().await;
    let mut secrets = vec![ADMIN_TOKEN.to_owned()];

    let (status, _) = admin(
        &app,
        Method::PUT,
        "/workspaces/ws-1",
        Some(json!({"name": "A", "runtime": "claude_code"})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = admin(
        &app,
        Method::PUT,
        "/workspaces/ws-1",
        Some(json!({"name": "B", "runtime": "claude_code"})),
    )
    .await;
    assert_eq!(status, 200);
    let (token_id, secret) = app.issue_token("ws-1").await;
    secrets.push(secret.clone());
    assert_no_secret_stored(
        &app,
        &secrets.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;

    // Reads record nothing, whoever reads.
    let before = app.audit_rows().await.len();
    for path in [
        "/workspaces/ws-1",
        "/workspaces",
        "/workspaces/ws-1/tokens",
        "/orgs/ws-1/plugins/allowlist",
        "/audit",
        "/plugins",
    ] {
        let (status, body) = app.admin_get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, _) = app
        .call(Method::GET, "/workspaces/ws-1", Some(&secret), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(app.audit_rows().await.len(), before, "reads are not events");

    let (status, _) = admin(
        &app,
        Method::PUT,
        "/orgs/ws-1/plugins/allowlist",
        Some(json!({"plugins": ["hello-world"]})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = admin(
        &app,
        Method::DELETE,
        &format!("/workspaces/ws-1/tokens/{token_id}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    // Failures of an action are events too, with the status they answered.
    let (status, _) = admin(
        &app,
        Method::DELETE,
        "/workspaces/ws-1/tokens/tok_000000000000000000000000",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = admin(
        &app,
        Method::PUT,
        "/orgs/ws-1/plugins/allowlist",
        Some(json!({"plugins": ["../etc"]})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = admin(&app, Method::DELETE, "/workspaces/ws-1", None).await;
    assert_eq!(status, 204);
    let (status, _) = admin(&app, Method::DELETE, "/workspaces/ws-1", None).await;
    assert_eq!(status, 404);

    assert_eq!(
        app.audit_summary().await,
        summary(&[
            ("workspace_delete", "failed", 404),
            ("workspace_delete", "ok", 204),
            ("allowlist_replace", "failed", 400),
            ("token_revoke", "failed", 404),
            ("token_revoke", "ok", 204),
            ("allowlist_replace", "ok", 200),
            ("token_issue", "ok", 201),
            ("workspace_put", "ok", 200),
            ("workspace_put", "ok", 201),
        ])
    );
    for row in app.audit_rows().await {
        assert_eq!(row["actor"], "admin", "{row}");
        assert_eq!(row["workspace_id"], "ws-1", "{row}");
    }
    assert_no_secret_stored(
        &app,
        &secrets.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
}

/// A registry with `hello` and `tampered` (its manifest.json does not match).
fn registry() -> Registry {
    let registry = Registry::new();
    registry.plugin("hello", &[("plugin.yaml", "name: hello\n")]);
    registry.plugin(
        "tampered",
        &[
            ("plugin.yaml", "name: tampered\n"),
            (
                "manifest.json",
                &format!("{{\"sha256\": \"{}\"}}", "0".repeat(64)),
            ),
        ],
    );
    registry
}

#[tokio::test]
async fn policy_refusals_of_an_install_are_refused_events_and_a_credential_never_lands() {
    let registry = registry();
    let app = spawn_app_with(Options {
        plugins_dir: Some(registry.path()),
        ..Options::default()
    })
    .await;
    app.create_workspace(
        "ws-1",
        json!({"name": "A", "runtime": "claude_code", "parent_id": "org-1"}),
    )
    .await;
    let (token_id, secret) = app.issue_token("ws-1").await;
    let (status, _) = admin(
        &app,
        Method::PUT,
        "/orgs/org-1/plugins/allowlist",
        Some(json!({"plugins": ["tampered"]})),
    )
    .await;
    assert_eq!(status, 200);
    let install = |source: &'static str| {
        app.call(
            Method::POST,
            "/workspaces/ws-1/plugins",
            Some(&secret),
            Some(json!({ "source": source })),
        )
    };
    // The allowlist, pinning and integrity refuse before any container is
    // needed (this workspace has none running).
    assert_eq!(install("local://hello").await.0, 403);
    assert_eq!(install("github://o/r").await.0, 422);
    assert_eq!(install("local://tampered").await.0, 422);
    let credential = "https://alice:s3cr3t-pass@h.example/p.tgz";
    let (status, body) = install("https://alice:s3cr3t-pass@h.example/p.tgz").await;
    assert_eq!(status, 400, "{body}");
    assert!(!body.to_string().contains("s3cr3t"), "{body}");

    let (status, page) = app.admin_get("/audit?workspace=ws-1&action=install").await;
    assert_eq!(status, 200, "{page}");
    let events = page["events"].as_array().unwrap();
    let got: Vec<(String, String, i64, Value, Value)> = events
        .iter()
        .map(|e| {
            (
                e["outcome"].as_str().unwrap().to_owned(),
                e["source"].as_str().unwrap_or("").to_owned(),
                e["status"].as_i64().unwrap(),
                e["plugin"].clone(),
                e["actor"].clone(),
            )
        })
        .collect();
    let actor = json!(token_id);
    assert_eq!(
        got,
        [
            (
                "failed".into(),
                "https://h.example/p.tgz".into(),
                400,
                Value::Null,
                actor.clone()
            ),
            (
                "refused".into(),
                "local://tampered".into(),
                422,
                Value::Null,
                actor.clone()
            ),
            (
                "refused".into(),
                "github://o/r".into(),
                422,
                Value::Null,
                actor.clone()
            ),
            (
                "refused".into(),
                "local://hello".into(),
                403,
                json!("hello"),
                actor.clone()
            ),
        ]
    );
    assert!(
        events[3]["digest"].as_str().unwrap().starts_with("h1:"),
        "{}",
        events[3]
    );
    assert_no_secret_stored(&app, &[&secret, ADMIN_TOKEN, "s3cr3t", credential]).await;
}

#[tokio::test]
async fn the_audit_log_is_admin_only() {
    let app = spawn_app().await;
    app.create_workspace("ws-1", json!({"name": "A", "runtime": "claude_code"}))
        .await;
    let (_, secret) = app.issue_token("ws-1").await;
    let (status, body) = app.call(Method::GET, "/audit", None, None).await;
    assert_eq!(
        (status, body["error"].clone()),
        (401, json!("missing auth token"))
    );
    let (status, body) = app.call(Method::GET, "/audit", Some(&secret), None).await;
    assert_eq!(
        (status, body["error"].clone()),
        (403, json!("admin token required"))
    );
    let (status, body) = app
        .call(Method::GET, "/audit", Some("not-a-token"), None)
        .await;
    assert_eq!(
        (status, body["error"].clone()),
        (401, json!("invalid auth token"))
    );
    // No route edits or deletes an event.
    for method in [Method::DELETE, Method::PUT, Method::POST, Method::PATCH] {
        let (status, _) = app
            .call(method.clone(), "/audit", Some(ADMIN_TOKEN), None)
            .await;
        assert_eq!(status, 405, "{method}");
    }
}

#[tokio::test]
async fn audit_pages_follow_the_cursor_newest_first_and_filters_combine() {
    let app = spawn_app().await;
    for id in ["ws-1", "ws-2", "ws-3"] {
        app.create_workspace(id, json!({"name": "A", "runtime": "claude_code"}))
            .await;
        app.issue_token(id).await;
    }
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/audit?limit=4&cursor={c}"),
            None => "/audit?limit=4".to_owned(),
        };
        let (status, page) = app.admin_get(&path).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        ids.extend(
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_i64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 2);
    assert_eq!(ids.len(), 6);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");

    let (_, page) = app
        .admin_get("/audit?workspace=ws-2&action=token_issue")
        .await;
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{page}");
    assert_eq!(events[0]["workspace_id"], "ws-2");
    assert_eq!(events[0]["status"], 201);
    assert_eq!(page["next_cursor"], Value::Null);
    let at = events[0]["at"].as_str().unwrap().to_owned();
    let (_, since) = app
        .admin_get(&format!("/audit?since={}", at.replace('+', "%2B")))
        .await;
    let newer: Vec<_> = since["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["workspace_id"].clone())
        .collect();
    assert!(newer.len() >= 2 && newer.len() < 6, "{since}");
    let (_, none) = app.admin_get("/audit?plugin=hello-world").await;
    assert_eq!(none, json!({"events": [], "next_cursor": null}));
}

#[tokio::test]
async fn bad_audit_filters_are_400_saying_what_each_takes() {
    let app = spawn_app().await;
    let cases = [
        (
            "workspace=bad%20id",
            "invalid query parameter: workspace must be a workspace id",
        ),
        (
            "plugin=..",
            "invalid query parameter: plugin must be a plugin name",
        ),
        (
            "action=drop",
            "invalid query parameter: action must be one of: install, update, uninstall, allowlist_replace, workspace_put, workspace_delete, token_issue, token_revoke",
        ),
        (
            "since=yesterday",
            "invalid query parameter: since must be an RFC 3339 time",
        ),
        (
            "limit=0",
            "invalid query parameter: limit must be a whole number from 1 to 500",
        ),
        (
            "limit=501",
            "invalid query parameter: limit must be a whole number from 1 to 500",
        ),
        (
            "cursor=1",
            "invalid query parameter: cursor is not a value returned as next_cursor",
        ),
        (
            "cursor=%27%20OR%201%3D1",
            "invalid query parameter: cursor is not a value returned as next_cursor",
        ),
    ];
    for (query, message) in cases {
        let (status, body) = app.admin_get(&format!("/audit?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.starts_with(message), "{query}: {error}");
    }
}

#[tokio::test]
async fn retention_removes_events_older_than_the_setting_in_the_background() {
    let app = spawn_app_with(Options {
        extra_args: vec!["--plugin-audit-retention".into(), "2s".into()],
        ..Options::default()
    })
    .await;
    app.create_workspace("ws-1", json!({"name": "A", "runtime": "claude_code"}))
        .await;
    assert_eq!(app.audit_rows().await.len(), 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !app.audit_rows().await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the event outlived its retention"
        );
        // Polls the table: retention sweeps every second with a 2 s setting.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
