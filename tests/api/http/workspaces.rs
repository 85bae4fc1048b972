use reqwest::Method;
use serde_json::{Value, json};

use crate::support::app::{ADMIN_TOKEN, json, spawn_app};

fn redact(v: &Value) -> Value {
    let mut v = v.clone();
    for key in ["created_at", "updated_at"] {
        if v.get(key).is_some() {
            v[key] = json!("[timestamp]");
        }
    }
    v
}

#[tokio::test]
async fn put_creates_then_updates_and_keeps_created_at() {
    let app = spawn_app().await;
    let (status, created) = app
        .call(Method::PUT, "/workspaces/ws-1", Some(ADMIN_TOKEN), Some(json!({
            "name": "Agent one", "runtime": "claude-code", "parent_id": "org-1", "container": "box.1"
        })))
        .await;
    assert_eq!(status, 201);
    insta::assert_json_snapshot!("workspace_created", redact(&created));
    let (status, updated) = app
        .call(Method::PUT, "/workspaces/ws-1", Some(ADMIN_TOKEN), Some(json!({
            "name": "Agent one", "runtime": "hermes", "status": "paused", "unknown_field": [1, 2]
        })))
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["created_at"], created["created_at"]);
    assert_eq!(updated["runtime"], "hermes");
    assert_eq!(updated["status"], "paused");
    assert_eq!(
        updated["parent_id"],
        Value::Null,
        "a PUT replaces the record's settable fields"
    );
    let (_, read) = app.admin_get("/workspaces/ws-1").await;
    assert_eq!(read, updated);
}

#[tokio::test]
async fn every_bad_field_is_a_400_naming_it_and_changes_nothing() {
    let app = spawn_app().await;
    let original = app
        .create_workspace("ws-1", json!({"name": "A", "runtime": "x"}))
        .await;
    let long = "n".repeat(201);
    let cases = [
        (json!({"runtime": "x"}), "name"),
        (json!({"name": "", "runtime": "x"}), "name"),
        (json!({"name": long, "runtime": "x"}), "name"),
        (json!({"name": "A"}), "runtime"),
        (json!({"name": "A", "runtime": "Not Valid"}), "runtime"),
        (
            json!({"name": "A", "runtime": "x", "parent_id": "ws-1"}),
            "parent_id",
        ),
        (
            json!({"name": "A", "runtime": "x", "parent_id": "../etc"}),
            "parent_id",
        ),
        (
            json!({"name": "A", "runtime": "x", "container": "/etc"}),
            "container",
        ),
        (
            json!({"name": "A", "runtime": "x", "status": "gone"}),
            "status",
        ),
    ];
    for (body, field) in cases {
        let (status, error) = app
            .call(
                Method::PUT,
                "/workspaces/ws-1",
                Some(ADMIN_TOKEN),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(error["field"], field, "{body}: {error}");
        assert!(error["error"].as_str().unwrap().contains(field));
    }
    let (_, after) = app.admin_get("/workspaces/ws-1").await;
    assert_eq!(after, original, "nothing changed in the store");
}

#[tokio::test]
async fn malformed_bodies_are_400_and_oversized_ones_413_and_change_nothing() {
    let app = spawn_app().await;
    let raw_cases: [&[u8]; 8] = [
        b"",
        b"{bad",
        b"{\"name\":\"A\",\"runtime\":\"x\"} trailing",
        b"{\"name\":\"A\",\"runtime\":\"x\"}{}",
        b"[]",
        b"\"string\"",
        b"{\"name\": 5, \"runtime\": \"x\"}",
        b"\xff\xfe",
    ];
    for raw in raw_cases {
        let resp = app
            .req(Method::PUT, "/workspaces/ws-1", Some(ADMIN_TOKEN))
            .header("content-type", "application/json")
            .body(raw.to_vec())
            .send()
            .await
            .unwrap();
        let (status, body) = json(resp).await;
        assert_eq!(
            (status, body),
            (400, json!({"error": "invalid request body"})),
            "{raw:?}"
        );
    }
    let big = format!(
        "{{\"name\":\"A\",\"runtime\":\"x\",\"pad\":\"{}\"}}",
        " ".repeat(70_000)
    );
    let resp = app
        .req(Method::PUT, "/workspaces/ws-1", Some(ADMIN_TOKEN))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(
        json(resp).await,
        (
            413,
            json!({"error": "request body too large (limit 65536 bytes)"})
        )
    );
    let (status, _) = app.admin_get("/workspaces/ws-1").await;
    assert_eq!(status, 404, "no record was created by any bad request");
}

#[tokio::test]
async fn bad_workspace_ids_are_400() {
    let app = spawn_app().await;
    let long = "a".repeat(65);
    for id in ["-x", "_x", "a.b", long.as_str(), "%C3%A9"] {
        let (status, body) = app
            .call(
                Method::PUT,
                &format!("/workspaces/{id}"),
                Some(ADMIN_TOKEN),
                Some(json!({"name": "A", "runtime": "x"})),
            )
            .await;
        assert_eq!(status, 400, "{id}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("invalid workspace id"),
            "{body}"
        );
        let (status, _) = app.admin_get(&format!("/workspaces/{id}")).await;
        assert_eq!(status, 400, "GET {id}");
    }
    let (_, page) = app.admin_get("/workspaces").await;
    assert_eq!(page["workspaces"], json!([]));
}

#[tokio::test]
async fn listing_pages_by_id_with_a_cursor_that_ends_in_null() {
    let app = spawn_app().await;
    for id in ["e", "a", "c", "b", "d"] {
        app.create_workspace(id, json!({"name": id, "runtime": "x"}))
            .await;
    }
    let mut seen = Vec::new();
    let mut path = "/workspaces?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let (status, page) = app.admin_get(&path).await;
        assert_eq!(status, 200);
        pages += 1;
        seen.extend(
            page["workspaces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/workspaces?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    assert_eq!(pages, 3);
    let (_, exact) = app.admin_get("/workspaces?limit=5").await;
    assert_eq!(
        exact["next_cursor"],
        Value::Null,
        "no cursor when the last page is exactly full"
    );
    for bad in ["limit=0", "limit=501", "limit=abc", "cursor=-bad"] {
        let (status, body) = app.admin_get(&format!("/workspaces?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

#[tokio::test]
async fn delete_removes_the_record_and_kills_its_tokens() {
    let app = spawn_app().await;
    app.create_workspace("ws-1", json!({"name": "A", "runtime": "x"}))
        .await;
    let (_, secret) = app.issue_token("ws-1").await;
    let resp = app
        .req(Method::DELETE, "/workspaces/ws-1", Some(ADMIN_TOKEN))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        204,
        "DELETE with Content-Type and no body is accepted"
    );
    let (status, body) = app
        .call(Method::GET, "/workspaces/ws-1", Some(&secret), None)
        .await;
    assert_eq!(
        (status, body),
        (401, json!({"error": "invalid auth token"}))
    );
    let (status, body) = app
        .call(Method::DELETE, "/workspaces/ws-1", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(
        (status, body),
        (404, json!({"error": "workspace not found"}))
    );
}

#[tokio::test]
async fn tokens_are_shown_once_listed_without_secrets_and_revocable() {
    let app = spawn_app().await;
    app.create_workspace("ws-1", json!({"name": "A", "runtime": "x"}))
        .await;
    let (id, secret) = app.issue_token("ws-1").await;
    assert!(secret.len() >= 43, "at least 256 bits: {secret}");
    let (status, _) = app
        .call(Method::GET, "/workspaces/ws-1", Some(&secret), None)
        .await;
    assert_eq!(status, 200);
    let (status, list) = app.admin_get("/workspaces/ws-1/tokens").await;
    assert_eq!(status, 200);
    assert!(!list.to_string().contains(&secret), "never the secret");
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["revoked"], false);
    assert!(
        list[0]["last_used_at"].is_string(),
        "use is recorded: {list}"
    );
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/workspaces/ws-1/tokens/{id}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (_, list) = app.admin_get("/workspaces/ws-1/tokens").await;
    assert_eq!(list[0]["revoked"], true);
    for missing in ["tok_000000000000000000000000", "not-a-token-id"] {
        let (status, body) = app
            .call(
                Method::DELETE,
                &format!("/workspaces/ws-1/tokens/{missing}"),
                Some(ADMIN_TOKEN),
                None,
            )
            .await;
        assert_eq!((status, body), (404, json!({"error": "token not found"})));
    }
    let (status, _) = app
        .call(
            Method::POST,
            "/workspaces/nope/tokens",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 404, "no token for a workspace that does not exist");
}

#[tokio::test]
async fn concurrent_creates_of_one_id_give_one_201_and_no_error() {
    let app = spawn_app().await;
    let calls = (0..8).map(|i| {
        app.call(
            Method::PUT,
            "/workspaces/racy",
            Some(ADMIN_TOKEN),
            Some(json!({"name": format!("n{i}"), "runtime": "x"})),
        )
    });
    let results = futures_util::future::join_all(calls).await;
    let statuses: Vec<u16> = results.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        7,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_container_of_another_live_record_is_a_409_and_changes_nothing() {
    let app = spawn_app().await;
    let owner = app
        .create_workspace(
            "owner",
            json!({"name": "A", "runtime": "x", "container": "ws-newcomer"}),
        )
        .await;
    // "newcomer" defaults to ws-newcomer, the owner's explicit container.
    let conflict = json!({
        "error": "container \"ws-newcomer\" already belongs to workspace \"owner\""
    });
    assert_eq!(
        app.call(
            Method::PUT,
            "/workspaces/newcomer",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "B", "runtime": "x"})),
        )
        .await,
        (409, conflict.clone())
    );
    assert_eq!(app.admin_get("/workspaces/newcomer").await.0, 404);
    // An existing record may not move into it either, and keeps its fields.
    let other = app
        .create_workspace("other", json!({"name": "C", "runtime": "x"}))
        .await;
    let (status, body) = app
        .call(
            Method::PUT,
            "/workspaces/other",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "C2", "runtime": "y", "container": "ws-newcomer"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(app.admin_get("/workspaces/other").await.1, other);

    // Updating a record in its own container is fine.
    let (status, updated) = app
        .call(
            Method::PUT,
            "/workspaces/owner",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "A2", "runtime": "x", "container": "ws-newcomer"})),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["created_at"], owner["created_at"]);

    // A removed record's container can be taken.
    let (status, _) = app
        .call(
            Method::PUT,
            "/workspaces/owner",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "A2", "runtime": "x", "container": "ws-newcomer", "status": "removed"})),
        )
        .await;
    assert_eq!(status, 200);
    app.create_workspace("newcomer", json!({"name": "B", "runtime": "x"}))
        .await;
}

#[tokio::test]
async fn a_token_of_a_deleted_workspace_does_not_come_back_with_a_new_record() {
    let app = spawn_app().await;
    app.create_workspace("ws-1", json!({"name": "A", "runtime": "x"}))
        .await;
    let (_, secret) = app.issue_token("ws-1").await;
    let (status, _) = app
        .call(Method::DELETE, "/workspaces/ws-1", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        app.call(
            Method::POST,
            "/workspaces/ws-1/tokens",
            Some(ADMIN_TOKEN),
            None
        )
        .await,
        (404, json!({"error": "workspace not found"}))
    );
    app.create_workspace("ws-1", json!({"name": "A", "runtime": "x"}))
        .await;
    assert_eq!(
        app.call(Method::GET, "/workspaces/ws-1", Some(&secret), None)
            .await,
        (401, json!({"error": "invalid auth token"}))
    );
    assert_eq!(
        app.admin_get("/workspaces/ws-1/tokens").await,
        (200, json!([]))
    );
}
