use std::path::PathBuf;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::app::{ADMIN_TOKEN, TestApp, spawn_app};
use crate::support::docker::TestContainer;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi/openapi.json")
}

/// The committed document is the API's contract: it must equal what the
/// code generates. Regenerate with `UPDATE_OPENAPI=1 cargo test openapi`.
///
/// On drift, insta prints the difference line by line: the committed file
/// (kept a plain document for clients and `scripts/conformance`) is handed
/// to insta as the stored snapshot through a temporary copy, so there is
/// no second copy in the repository. The verdict is the plain comparison
/// below, so insta's own update modes cannot make a drift pass.
#[test]
fn the_committed_openapi_document_matches_the_code() {
    let generated = workspace_plugins::app::http::openapi_json();
    let path = committed_path();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("{generated}\n")).unwrap();
    }
    let committed = std::fs::read_to_string(&path).expect("openapi/openapi.json is committed");
    let matches = committed.trim_end() == generated.trim_end();
    if !matches {
        show_drift(&committed, &generated);
    }
    assert!(
        matches,
        "openapi/openapi.json differs from the code (diff above): run `UPDATE_OPENAPI=1 cargo test openapi` and commit it"
    );
}

/// Prints insta's diff of the committed document (-) against the
/// generated one (+).
fn show_drift(committed: &str, generated: &str) {
    let stored = tempfile::tempdir().unwrap();
    std::fs::write(
        stored.path().join("openapi.snap"),
        format!("---\nsource: openapi/openapi.json\n---\n{committed}"),
    )
    .unwrap();
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(stored.path());
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    // insta's own update hints would only rewrite the temporary copy.
    settings.set_description(
        "openapi/openapi.json (-) against the code (+); update with `UPDATE_OPENAPI=1 cargo test openapi`, not insta",
    );
    // insta fails by panicking; caught, so the test's own message (how to
    // update the document) comes last.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        settings.bind(|| insta::assert_snapshot!("openapi", generated));
    }));
}

#[tokio::test]
async fn the_server_serves_the_same_document_and_the_docs_page() {
    let app = spawn_app().await;
    let served: serde_json::Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let generated: serde_json::Value =
        serde_json::from_str(&workspace_plugins::app::http::openapi_json()).unwrap();
    assert_eq!(served, generated);
    assert!(served["paths"]["/workspaces/{id}"]["get"]["security"].is_array());
    assert!(
        served["paths"]["/plugins"]["get"].get("security").is_none(),
        "/plugins is open"
    );
    let docs = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger"));
}

/// The document, parsed; it equals the committed one (test above).
fn document() -> Value {
    serde_json::from_str(&workspace_plugins::app::http::openapi_json()).expect("JSON")
}

/// Resolves a local `$ref`.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("a local $ref");
            doc.pointer(pointer)
                .unwrap_or_else(|| panic!("{reference} is not in the document"))
        }
        None => schema,
    }
}

/// Checks `value` against the subset of JSON Schema the generated document
/// uses (types, `nullable`, `required`, properties, items); the failures
/// name the JSON path.
fn check(doc: &Value, schema: &Value, value: &Value, path: &str, failures: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if value.is_null() {
        if schema["nullable"] != true {
            failures.push(format!("{path} is null but not documented as nullable"));
        }
        return;
    }
    let matches = match schema["type"].as_str() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("boolean") => value.is_boolean(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        _ => true,
    };
    if !matches {
        failures.push(format!("{path}: {value} is not of type {}", schema["type"]));
        return;
    }
    if let Some(object) = value.as_object() {
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().expect("required names are strings");
            if !object.contains_key(name) {
                failures.push(format!("{path}.{name} is required but missing"));
            }
        }
        for (name, field) in object {
            if let Some(field_schema) = schema["properties"].get(name) {
                check(
                    doc,
                    field_schema,
                    field,
                    &format!("{path}.{name}"),
                    failures,
                );
            }
        }
    }
    if let Some(items) = value.as_array() {
        for (i, item) in items.iter().enumerate() {
            check(
                doc,
                &schema["items"],
                item,
                &format!("{path}[{i}]"),
                failures,
            );
        }
    }
}

/// Sends a request and asserts that the answer is one the document
/// declares for `template`: its status (exact, else the range), content
/// type, required headers and body schema. Returns the status, body and
/// headers.
async fn conforming(
    app: &TestApp,
    method: Method,
    template: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let doc = document();
    let mut request = app.req(method.clone(), path, Some(ADMIN_TOKEN));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    let operation = &doc["paths"][template][method.as_str().to_lowercase()];
    assert!(
        operation.is_object(),
        "{method} {template} is not documented"
    );
    let range = format!("{}XX", status / 100);
    let declared = [status.to_string(), range]
        .into_iter()
        .find_map(|key| operation["responses"].get(&key))
        .unwrap_or_else(|| panic!("{method} {path}: {status} is not documented"));
    for (name, header) in declared["headers"].as_object().into_iter().flatten() {
        if header["required"] == true {
            assert!(
                headers.contains_key(name.as_str()),
                "{method} {path}: {status} lacks the documented header {name}"
            );
        }
    }
    let Some(content) = declared["content"].as_object() else {
        assert!(
            bytes.is_empty(),
            "{method} {path}: {status} has no documented body"
        );
        return (status, Value::Null, headers);
    };
    let content_type = headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media = content.get(content_type).unwrap_or_else(|| {
        panic!("{method} {path}: {status} as {content_type:?} is not documented")
    });
    let value: Value = serde_json::from_slice(&bytes).expect("a JSON body");
    let mut failures = Vec::new();
    check(&doc, &media["schema"], &value, "$", &mut failures);
    assert!(
        failures.is_empty(),
        "{method} {path} ({status}) breaks its documented schema: {failures:?}\n{value}"
    );
    (status, value, headers)
}

/// Found by schemathesis (`scripts/conformance`): fields sent as `null`
/// were documented as plain strings.
#[tokio::test]
async fn records_tokens_and_pages_with_nulls_match_the_document() {
    let app = spawn_app().await;
    let ws = "/workspaces/{id}";
    let (status, record, _) = conforming(
        &app,
        Method::PUT,
        ws,
        "/workspaces/ws-1",
        Some(json!({"name": "A", "runtime": "claude_code"})),
    )
    .await;
    assert_eq!(
        (status, &record["parent_id"], &record["container"]),
        (201, &Value::Null, &Value::Null)
    );
    conforming(&app, Method::GET, ws, "/workspaces/ws-1", None).await;
    let (_, page, _) = conforming(&app, Method::GET, "/workspaces", "/workspaces", None).await;
    assert_eq!(page["next_cursor"], Value::Null);
    let tokens = "/workspaces/{id}/tokens";
    conforming(&app, Method::POST, tokens, "/workspaces/ws-1/tokens", None).await;
    let (_, list, _) = conforming(&app, Method::GET, tokens, "/workspaces/ws-1/tokens", None).await;
    assert_eq!(list[0]["last_used_at"], Value::Null);
    let (status, _, _) = conforming(&app, Method::GET, ws, "/workspaces/nope", None).await;
    assert_eq!(status, 404);
}

/// A plugin some other tool put into the container has no receipt: its
/// `digest` is `null`, as documented.
#[tokio::test]
async fn an_untracked_installed_plugin_has_a_documented_null_digest() {
    let app = spawn_app().await;
    let container = TestContainer::running();
    container.sh(
        "mkdir -p /configs/plugins/untracked && printf 'name: untracked\\n' > /configs/plugins/untracked/plugin.yaml && chown -R 1000:1000 /configs/plugins/untracked",
    );
    app.create_workspace(
        "ws-1",
        json!({"name": "A", "runtime": "claude_code", "container": container.name}),
    )
    .await;
    let (status, list, _) = conforming(
        &app,
        Method::GET,
        "/workspaces/{id}/plugins",
        "/workspaces/ws-1/plugins",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["name"], "untracked");
    assert_eq!(list[0]["digest"], Value::Null);
}

/// A 503 is documented per route, with `Retry-After` and the dependency
/// states it names; routes that never send one do not document it.
#[tokio::test]
async fn a_dependency_503_is_documented_where_it_is_sent_and_only_there() {
    let app = spawn_app().await;
    app.create_workspace(
        "ws-1",
        json!({"name": "A", "runtime": "claude_code", "container": "wp-test-no-such-container"}),
    )
    .await;
    let cases = [
        (
            Method::DELETE,
            "/workspaces/{id}/plugins/{name}",
            "/workspaces/ws-1/plugins/hello-world",
            None,
        ),
        (
            Method::POST,
            "/workspaces/{id}/plugins",
            "/workspaces/ws-1/plugins",
            Some(json!({"source": "local://hello-world"})),
        ),
        (
            Method::GET,
            "/workspaces/{id}/plugins/{name}/verify",
            "/workspaces/ws-1/plugins/hello-world/verify",
            None,
        ),
    ];
    let doc = document();
    for (method, template, path, body) in cases {
        let (status, error, headers) = conforming(&app, method.clone(), template, path, body).await;
        assert_eq!(status, 503, "{error}");
        assert_eq!(headers["retry-after"], "5");
        let documented =
            &doc["paths"][template][method.as_str().to_lowercase()]["responses"]["503"];
        let quoted = format!("`{}`", error["error"].as_str().unwrap());
        assert!(
            documented["description"]
                .as_str()
                .unwrap()
                .contains(&quoted),
            "{method} {template}: {quoted} is not a documented 503 state"
        );
    }
    for (template, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap();
            let sends_503 = matches!(
                id,
                "listInstalled"
                    | "checkCompatibility"
                    | "installPlugin"
                    | "uninstallPlugin"
                    | "verifyPlugin"
                    | "updatePlugin"
                    | "downloadPlugin"
                    | "readyz"
            );
            assert_eq!(
                operation["responses"].get("503").is_some(),
                sends_503,
                "{method} {template}"
            );
        }
    }
}
