use std::fs;

use reqwest::Method;
use serde_json::json;

use crate::support::app::{Options, spawn_app, spawn_app_with};

#[tokio::test]
async fn the_registry_lists_the_shipped_examples_sorted() {
    let app = spawn_app().await;
    let (status, body) = app.call(Method::GET, "/plugins", None, None).await;
    assert_eq!(status, 200);
    insta::assert_json_snapshot!("registry_listing", body);
}

#[tokio::test]
async fn a_runtime_filter_keeps_plugins_that_support_it() {
    let app = spawn_app().await;
    let names = |body: serde_json::Value| -> Vec<String> {
        body.as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, hermes) = app
        .call(Method::GET, "/plugins?runtime=hermes", None, None)
        .await;
    assert_eq!(names(hermes), ["careful-bash", "hello-world"]);
    let (_, cc) = app
        .call(Method::GET, "/plugins?runtime=claude-code", None, None)
        .await;
    assert_eq!(
        names(cc),
        ["careful-bash", "code-review", "hello-world"],
        "- and _ are equal"
    );
    let (_, blank) = app.call(Method::GET, "/plugins?runtime=", None, None).await;
    assert_eq!(names(blank).len(), 3, "an empty runtime is no filter");
    let (status, body) = app
        .call(Method::GET, "/plugins?runtime=Bad%20One", None, None)
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid runtime")
    );
}

#[tokio::test]
async fn the_registry_skips_files_symlinks_and_bad_names_and_tolerates_bad_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir(root.join("good")).unwrap();
    fs::write(
        root.join("good/plugin.yaml"),
        "version: [not, a, string]\ndescription: ok\n",
    )
    .unwrap();
    fs::create_dir(root.join("broken-yaml")).unwrap();
    fs::write(root.join("broken-yaml/plugin.yaml"), "key: [unclosed").unwrap();
    fs::create_dir(root.join("Upper")).unwrap();
    fs::write(root.join("stray-file"), "x").unwrap();
    std::os::unix::fs::symlink(root.join("good"), root.join("linked")).unwrap();
    let app = spawn_app_with(Options {
        plugins_dir: Some(root.to_owned()),
        ..Options::default()
    })
    .await;
    let (status, body) = app.call(Method::GET, "/plugins", None, None).await;
    assert_eq!(status, 200);
    let empty = json!({"author": "", "description": "", "runtimes": [], "skills": [], "tags": [], "version": ""});
    let mut broken = empty.clone();
    broken["name"] = json!("broken-yaml");
    let mut good = empty;
    good["name"] = json!("good");
    good["description"] = json!("ok");
    assert_eq!(body, json!([broken, good]));
}

#[tokio::test]
async fn an_empty_registry_is_an_empty_list() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(Options {
        plugins_dir: Some(dir.path().to_owned()),
        ..Options::default()
    })
    .await;
    assert_eq!(
        app.call(Method::GET, "/plugins", None, None).await,
        (200, json!([]))
    );
}

#[tokio::test]
async fn a_missing_registry_directory_lists_no_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(Options {
        plugins_dir: Some(dir.path().join("not-created")),
        ..Options::default()
    })
    .await;
    assert_eq!(
        app.call(Method::GET, "/plugins", None, None).await,
        (200, json!([]))
    );
    app.create_workspace("ws-1", json!({"name": "w", "runtime": "claude-code"}))
        .await;
    assert_eq!(
        app.admin_get("/workspaces/ws-1/plugins/available").await,
        (200, json!([]))
    );
}

#[tokio::test]
async fn sources_lists_the_registered_schemes() {
    let app = spawn_app().await;
    let resp = app
        .client
        .get(app.url("/plugins/sources"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body, json!({"schemes": ["github", "https", "local"]}));
}
