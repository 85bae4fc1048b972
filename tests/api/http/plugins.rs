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

/// How long a test waits for the server's registry index to catch up.
const INDEX_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

fn write_plugin(root: &std::path::Path, name: &str, version: &str) {
    fs::create_dir_all(root.join(name).join("rules")).unwrap();
    fs::write(
        root.join(name).join("plugin.yaml"),
        format!("version: {version}\nruntimes: [claude_code]\n"),
    )
    .unwrap();
}

/// Polls `path` until its listing reads `expected` (`name@version`).
async fn until_listed(app: &crate::support::app::TestApp, path: &str, expected: &[&str]) {
    let give_up = std::time::Instant::now() + INDEX_DEADLINE;
    loop {
        let (status, body) = app.admin_get(path).await;
        assert_eq!(status, 200, "{body}");
        let listed: Vec<String> = body
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                format!(
                    "{}@{}",
                    p["name"].as_str().unwrap(),
                    p["version"].as_str().unwrap()
                )
            })
            .collect();
        if listed == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < give_up,
            "{path} never listed {expected:?}: {listed:?}"
        );
        // Polls the server's index, which follows the directory on its own.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Adds, changes (same size, mtime restored), renames and removes plugins
/// while the server runs: each shows in both listings.
async fn listings_follow_the_registry(extra_args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_plugin(root, "alpha", "1.0.0");
    let app = spawn_app_with(Options {
        plugins_dir: Some(root.to_owned()),
        extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        ..Options::default()
    })
    .await;
    app.create_workspace("ws-1", json!({"name": "w", "runtime": "claude-code"}))
        .await;
    let available = "/workspaces/ws-1/plugins/available";
    until_listed(&app, "/plugins", &["alpha@1.0.0"]).await;
    until_listed(&app, available, &["alpha@1.0.0"]).await;

    write_plugin(root, "beta", "2.0.0");
    until_listed(&app, "/plugins", &["alpha@1.0.0", "beta@2.0.0"]).await;

    let yaml = root.join("alpha/plugin.yaml");
    let mtime = fs::metadata(&yaml).unwrap().modified().unwrap();
    fs::write(&yaml, "version: 1.0.1\nruntimes: [claude_code]\n").unwrap();
    fs::File::options()
        .write(true)
        .open(&yaml)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    until_listed(&app, "/plugins", &["alpha@1.0.1", "beta@2.0.0"]).await;
    until_listed(&app, available, &["alpha@1.0.1", "beta@2.0.0"]).await;

    fs::rename(root.join("beta"), root.join("gamma")).unwrap();
    until_listed(&app, "/plugins", &["alpha@1.0.1", "gamma@2.0.0"]).await;

    fs::remove_dir_all(root.join("alpha")).unwrap();
    until_listed(&app, "/plugins", &["gamma@2.0.0"]).await;
    until_listed(&app, available, &["gamma@2.0.0"]).await;
}

#[tokio::test]
async fn listings_follow_the_registry_live_through_notifications() {
    // The re-scan never comes: what the listings show, notifications told.
    listings_follow_the_registry(&["--plugin-registry-rescan", "1h"]).await;
}

#[tokio::test]
async fn listings_follow_the_registry_by_rescanning_when_notifications_are_off() {
    listings_follow_the_registry(&[
        "--plugin-registry-watch",
        "false",
        "--plugin-registry-rescan",
        "100ms",
    ])
    .await;
}

#[tokio::test]
async fn the_metrics_count_the_indexed_plugins() {
    let app = spawn_app().await;
    let resp = app.client.get(app.url("/metrics")).send().await.unwrap();
    let text = resp.text().await.unwrap();
    assert!(text.contains("plugin_registry_plugins 3"), "{text}");
    assert!(text.contains("plugin_registry_prepack_pending "), "{text}");
}
