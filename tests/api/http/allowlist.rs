use reqwest::Method;
use serde_json::{Value, json};

use crate::support::app::{ADMIN_TOKEN, spawn_app};

fn redact(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(items) = v["plugins"].as_array_mut() {
        for item in items {
            item["enabled_at"] = json!("[timestamp]");
        }
    }
    v
}

#[tokio::test]
async fn an_org_without_entries_allows_all() {
    let app = spawn_app().await;
    let (status, body) = app.admin_get("/orgs/org-1/plugins/allowlist").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"org_id": "org-1", "plugins": [], "allow_all": true})
    );
}

#[tokio::test]
async fn put_replaces_sorted_deduplicated_and_keeps_entries_that_stay() {
    let app = spawn_app().await;
    let put = |body: Value| {
        app.call(
            Method::PUT,
            "/orgs/org-1/plugins/allowlist",
            Some(ADMIN_TOKEN),
            Some(body),
        )
    };
    let (status, first) = put(json!({"plugins": ["zeta", "alpha", "zeta"]})).await;
    assert_eq!(status, 200);
    insta::assert_json_snapshot!("allowlist_after_put", redact(&first));
    let alpha_at = first["plugins"][0]["enabled_at"].clone();
    let (status, second) =
        put(json!({"plugins": ["beta", "alpha"], "enabled_by": "ops@example.com"})).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = second["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["plugin_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    assert_eq!(
        second["plugins"][0]["enabled_at"], alpha_at,
        "alpha stayed: keeps enabled_at"
    );
    assert_eq!(second["plugins"][0]["enabled_by"], "admin");
    assert_eq!(second["plugins"][1]["enabled_by"], "ops@example.com");
    let (_, read) = app.admin_get("/orgs/org-1/plugins/allowlist").await;
    assert_eq!(read, second, "PUT answers like GET");
    let (_, other_org) = app.admin_get("/orgs/org-2/plugins/allowlist").await;
    assert_eq!(other_org["allow_all"], true, "orgs are independent");
    let (status, cleared) = put(json!({"plugins": []})).await;
    assert_eq!(status, 200);
    assert_eq!(cleared["allow_all"], true);
}

#[tokio::test]
async fn bad_allowlists_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let path = "/orgs/org-1/plugins/allowlist";
    let (_, before) = app
        .call(
            Method::PUT,
            path,
            Some(ADMIN_TOKEN),
            Some(json!({"plugins": ["keep"]})),
        )
        .await;
    let cases = [
        (
            json!({"plugins": ["ok", "../etc"]}),
            json!({"error": "invalid plugin name in allowlist", "plugin_name": "../etc"}),
        ),
        (
            json!({"plugins": ["a/b"]}),
            json!({"error": "invalid plugin name in allowlist", "plugin_name": "a/b"}),
        ),
        (
            json!({"plugins": [".."]}),
            json!({"error": "invalid plugin name in allowlist", "plugin_name": ".."}),
        ),
        (
            json!({"plugins": [""]}),
            json!({"error": "invalid plugin name in allowlist", "plugin_name": ""}),
        ),
        (
            json!({}),
            json!({"error": "'plugins' is required (send [] to allow all)"}),
        ),
        (
            json!({"plugins": null}),
            json!({"error": "'plugins' is required (send [] to allow all)"}),
        ),
        (
            json!({"plugins": "x"}),
            json!({"error": "invalid request body"}),
        ),
        (
            json!({"plugins": [1]}),
            json!({"error": "invalid request body"}),
        ),
        (
            json!({"plugins": ["x"], "enabled_by": ""}),
            json!({"error": "enabled_by must be 1-200 characters without control characters", "field": "enabled_by"}),
        ),
    ];
    for (body, expected) in cases {
        let (status, error) = app
            .call(Method::PUT, path, Some(ADMIN_TOKEN), Some(body.clone()))
            .await;
        assert_eq!((status, error), (400, expected), "{body}");
    }
    let (_, after) = app.admin_get(path).await;
    assert_eq!(after, before);
    let (status, _) = app.admin_get("/orgs/-bad/plugins/allowlist").await;
    assert_eq!(status, 400);
}
