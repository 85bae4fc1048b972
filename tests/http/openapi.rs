use std::path::PathBuf;

use crate::support::app::spawn_app;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi/openapi.json")
}

/// The committed document is the API's contract: it must equal what the
/// code generates. Regenerate with `UPDATE_OPENAPI=1 cargo test openapi`.
#[test]
fn the_committed_openapi_document_matches_the_code() {
    let generated = workspace_plugins::app::http::openapi_json();
    let path = committed_path();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("{generated}\n")).unwrap();
    }
    let committed = std::fs::read_to_string(&path).expect("openapi/openapi.json is committed");
    assert!(
        committed.trim_end() == generated.trim_end(),
        "openapi/openapi.json differs from the code: run `UPDATE_OPENAPI=1 cargo test openapi` and commit it"
    );
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
