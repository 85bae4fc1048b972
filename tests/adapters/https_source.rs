//! The `https://…#sha256=` source (SPEC §3) against a loopback HTTPS
//! server whose self-signed certificate is trusted through
//! PLUGIN_HTTPS_CA_FILE. Refusals go through the real install endpoint
//! (they must come before the container step; every error body carries
//! `source`); successful stagings are inspected through the pipeline itself
//! (the use cases' `staging()`, built from the same settings), since
//! the tree never reaches a container here.

use crate::support;

use std::path::Path;
use std::time::Duration;

use clap::Parser;
use serde_json::{Value, json};
use support::app::{ADMIN_TOKEN, Options, TestApp, spawn_app_with};
use support::hostile::{Tar, gzip, wait_until_empty, zstd};
use support::https::{HttpsServer, Route, sha256_hex};
use workspace_plugins::app::server;
use workspace_plugins::app::settings::Settings;
use workspace_plugins::app::usecases::UseCases;

const WS: &str = "ws-https";

struct World {
    server: HttpsServer,
    app: TestApp,
    pipeline: UseCases,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// The server; an app allowing `hosts` that trusts the server's CA; and a
/// pipeline built from the same settings.
async fn world(hosts: &str) -> World {
    let server = HttpsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = server.write_ca(dir.path());
    let extra_args: Vec<String> = vec![
        "--plugin-https-allowed-hosts".into(),
        hosts.into(),
        "--plugin-https-ca-file".into(),
        ca.display().to_string(),
    ];
    let app = spawn_app_with(Options {
        plugins_dir: None,
        extra_args: extra_args.clone(),
        ..Options::default()
    })
    .await;
    app.create_workspace(WS, json!({"name": "https", "runtime": "claude_code"}))
        .await;
    let data = tempfile::tempdir().unwrap();
    let mut args = vec![
        "workspace-plugins".to_owned(),
        "--plugin-data-dir".into(),
        data.path().display().to_string(),
        "--plugin-admin-token".into(),
        ADMIN_TOKEN.into(),
    ];
    args.extend(extra_args);
    let settings = Settings::try_parse_from(args).unwrap().normalized();
    let pipeline = server::use_cases(&settings).await.unwrap();
    World {
        server,
        app,
        pipeline,
        _dirs: (dir, data),
    }
}

/// POST /workspaces/WS/plugins: (status, JSON body).
async fn install(app: &TestApp, source: &str) -> (u16, Value) {
    app.call(
        reqwest::Method::POST,
        &format!("/workspaces/{WS}/plugins"),
        Some(ADMIN_TOKEN),
        Some(json!({ "source": source })),
    )
    .await
}

/// Runs the staging pipeline: the plugin name and its files' contents.
async fn staged(w: &World, source: &str) -> (String, Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let staged = w
        .pipeline
        .staging()
        .stage(Some(source), None, deadline)
        .await
        .unwrap_or_else(|e| panic!("{source}: {e}"));
    let mut files = serde_json::Map::new();
    read_tree(staged.dir.path(), Path::new(""), &mut files);
    (staged.name.as_str().to_owned(), Value::Object(files))
}

fn read_tree(root: &Path, rel: &Path, out: &mut serde_json::Map<String, Value>) {
    for entry in std::fs::read_dir(root.join(rel)).unwrap() {
        let entry = entry.unwrap();
        let rel = rel.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        assert!(kind.is_dir() || kind.is_file(), "{rel:?}");
        if kind.is_dir() {
            read_tree(root, &rel, out);
        } else {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            out.insert(rel.display().to_string(), Value::from(text));
        }
    }
}

/// Waits for the staging root to empty: directories are removed in the
/// background once a request is answered.
async fn staging_empties(app: &TestApp) {
    wait_until_empty(&app.data_dir.path().join("staging")).await;
}

fn plugin_tar(prefix: &str) -> Vec<u8> {
    Tar::new()
        .file(
            &format!("{prefix}plugin.yaml"),
            b"name: ignored\nversion: 1.2.3\n",
        )
        .file(&format!("{prefix}rules/style.md"), b"be brief")
        .file(
            &format!("{prefix}skills/s/SKILL.md"),
            b"---\nname: s\n---\n",
        )
        .finish()
}

fn expected_tree() -> Value {
    json!({
        "plugin.yaml": "name: ignored\nversion: 1.2.3\n",
        "rules/style.md": "be brief",
        "skills/s/SKILL.md": "---\nname: s\n---\n",
    })
}

fn assert_error(status: u16, body: &Value, code: u16, message: &str, source: &str) {
    assert_eq!(status, code, "{body}");
    assert_eq!(body["error"], message, "{body}");
    assert_eq!(
        body["source"], source,
        "every error body carries source: {body}"
    );
}

#[tokio::test]
async fn good_tar_gz_tgz_and_tar_zst_archives_stage_the_right_tree() {
    let w = world("localhost").await;
    let tar = plugin_tar("");
    for (file, name, bytes) in [
        ("/dl/flat-gz.tar.gz", "flat-gz", gzip(&tar)),
        ("/dl/flat-tgz.tgz?token=abc", "flat-tgz", gzip(&tar)),
        ("/dl/flat-zst.tar.zst", "flat-zst", zstd(&tar)),
    ] {
        let source = w.server.serve(file, bytes);
        assert_eq!(
            staged(&w, &source).await,
            (name.to_owned(), expected_tree()),
            "{file}"
        );
        // Through the API: staged, then stopped at the (missing) container.
        let (status, body) = install(&w.app, &source).await;
        assert_eq!(status, 503, "{file}: {body}");
    }
    staging_empties(&w.app).await;
}

#[tokio::test]
async fn the_name_is_the_single_top_level_directory_else_the_archive_stem() {
    let w = world("localhost").await;
    let nested = w
        .server
        .serve("/v1/release.tar.gz", gzip(&plugin_tar("inner-name/")));
    assert_eq!(
        staged(&w, &nested).await,
        ("inner-name".to_owned(), expected_tree()),
        "the directory's contents are the plugin root"
    );

    let two_tops = Tar::new()
        .file("a/plugin.yaml", b"x")
        .file("b/plugin.yaml", b"y")
        .finish();
    let stem = w.server.serve("/stem-name.tar.gz", gzip(&two_tops));
    assert_eq!(
        staged(&w, &stem).await,
        (
            "stem-name".to_owned(),
            json!({"a/plugin.yaml": "x", "b/plugin.yaml": "y"})
        )
    );

    let flat = w.server.serve(
        "/flat-name.tgz",
        gzip(&Tar::new().file("README.md", b"r").finish()),
    );
    assert_eq!(
        staged(&w, &flat).await,
        ("flat-name".to_owned(), json!({"README.md": "r"}))
    );

    // A stem that is no plugin name is caught by the pipeline's re-check.
    let bad = w.server.serve(
        "/bad..name.tar.gz",
        gzip(&Tar::new().file("x", b"x").finish()),
    );
    let (status, body) = install(&w.app, &bad).await;
    assert_error(
        status,
        &body,
        400,
        "resolver returned invalid plugin name",
        &bad,
    );
}

#[tokio::test]
async fn an_unpinned_source_or_a_host_not_allowed_is_refused_without_network_access() {
    let w = world("localhost").await;
    let good = w.server.serve("/p.tar.gz", gzip(&plugin_tar("")));
    let unpinned = good.split_once('#').unwrap().0.to_owned();
    let (status, body) = install(&w.app, &unpinned).await;
    assert_error(
        status,
        &body,
        422,
        "https sources must be pinned: add #sha256=<hex of the archive>",
        &unpinned,
    );

    let other_host = good.replace("localhost", "127.0.0.1");
    let (status, body) = install(&w.app, &other_host).await;
    assert_error(
        status,
        &body,
        422,
        "https source host \"127.0.0.1\" is not allowed",
        &other_host,
    );
    assert!(w.server.requests().is_empty(), "{:?}", w.server.requests());

    // Nothing allowed at all (the default) refuses every host too.
    let closed = spawn_app_with(Options::default()).await;
    closed
        .create_workspace(WS, json!({"name": "https", "runtime": "claude_code"}))
        .await;
    let (status, body) = install(&closed, &good).await;
    assert_error(
        status,
        &body,
        422,
        "https source host \"localhost\" is not allowed",
        &good,
    );
    assert!(w.server.requests().is_empty());
}

#[tokio::test]
async fn a_digest_mismatch_is_refused_before_anything_is_unpacked() {
    let w = world("localhost").await;
    let good = w.server.serve("/p.tar.gz", gzip(&plugin_tar("")));
    let tampered = format!(
        "{}#sha256={}",
        good.split_once('#').unwrap().0,
        sha256_hex(b"another archive")
    );
    let (status, body) = install(&w.app, &tampered).await;
    assert_error(status, &body, 422, "archive sha256 mismatch", &tampered);
    staging_empties(&w.app).await;
    assert_eq!(w.server.requests(), ["/p.tar.gz"]);
    // The digest compares case-insensitively as hex.
    let upper = format!(
        "{}#SHA256={}",
        good.split_once('#').unwrap().0,
        good.split_once("sha256=").unwrap().1.to_uppercase()
    );
    assert_eq!(staged(&w, &upper).await.0, "p");
}

#[tokio::test]
async fn upstream_errors_map_to_404_502_and_413() {
    let w = world("localhost").await;
    let pin = format!("#sha256={}", sha256_hex(b"x"));
    let port = w.server.port;
    let missing = format!("https://localhost:{port}/missing.tar.gz{pin}");
    let (status, body) = install(&w.app, &missing).await;
    assert_error(
        status,
        &body,
        404,
        &format!("plugin not found at {missing}"),
        &missing,
    );

    w.server.route("/broken.tar.gz", Route::Status(500));
    let broken = format!("https://localhost:{port}/broken.tar.gz{pin}");
    let (status, body) = install(&w.app, &broken).await;
    assert_error(
        status,
        &body,
        502,
        "failed to fetch plugin from https",
        &broken,
    );

    w.server
        .route("/huge.tar.gz", Route::ClaimLength(u64::MAX / 2));
    let huge = format!("https://localhost:{port}/huge.tar.gz{pin}");
    let (status, body) = install(&w.app, &huge).await;
    assert_error(
        status,
        &body,
        413,
        "staged plugin exceeds size limit",
        &huge,
    );
    staging_empties(&w.app).await;
}

#[tokio::test]
async fn a_server_whose_certificate_is_not_trusted_is_a_fetch_failure() {
    let server = HttpsServer::start().await;
    let app = spawn_app_with(Options {
        plugins_dir: None,
        extra_args: vec!["--plugin-https-allowed-hosts".into(), "localhost".into()],
        ..Options::default()
    })
    .await;
    app.create_workspace(WS, json!({"name": "https", "runtime": "claude_code"}))
        .await;
    let source = server.serve("/p.tar.gz", gzip(&plugin_tar("")));
    let (status, body) = install(&app, &source).await;
    assert_error(
        status,
        &body,
        502,
        "failed to fetch plugin from https",
        &source,
    );
}

#[tokio::test]
async fn redirects_are_followed_only_to_allowed_hosts_over_https() {
    let archive = gzip(&plugin_tar(""));
    let digest = sha256_hex(&archive);

    // Allowed: localhost -> 127.0.0.1, both on the list.
    let w = world("localhost,127.0.0.1").await;
    let port = w.server.port;
    w.server.serve("/real/p.tar.gz", archive.clone());
    w.server.route(
        "/moved/p.tar.gz",
        Route::Redirect(format!("https://127.0.0.1:{port}/real/p.tar.gz")),
    );
    let source = format!("https://localhost:{port}/moved/p.tar.gz#sha256={digest}");
    assert_eq!(staged(&w, &source).await, ("p".to_owned(), expected_tree()));
    assert_eq!(w.server.requests(), ["/moved/p.tar.gz", "/real/p.tar.gz"]);

    // Refused: 127.0.0.1 is not on this app's list, though it would answer.
    let w = world("localhost").await;
    let port = w.server.port;
    w.server.serve("/real/p.tar.gz", archive.clone());
    w.server.route(
        "/moved/p.tar.gz",
        Route::Redirect(format!("https://127.0.0.1:{port}/real/p.tar.gz")),
    );
    w.server.route(
        "/downgrade/p.tar.gz",
        Route::Redirect(format!("http://localhost:{port}/real/p.tar.gz")),
    );
    let source = format!("https://localhost:{port}/moved/p.tar.gz#sha256={digest}");
    let (status, body) = install(&w.app, &source).await;
    assert_error(
        status,
        &body,
        422,
        "https source host \"127.0.0.1\" is not allowed",
        &source,
    );
    let source = format!("https://localhost:{port}/downgrade/p.tar.gz#sha256={digest}");
    let (status, body) = install(&w.app, &source).await;
    assert_error(
        status,
        &body,
        422,
        "https source redirected to a non-https url",
        &source,
    );
    assert_eq!(
        w.server.requests(),
        ["/moved/p.tar.gz", "/downgrade/p.tar.gz"],
        "the refused targets were never requested"
    );
    staging_empties(&w.app).await;
}

#[tokio::test]
async fn user_info_is_invalid_and_never_echoed() {
    let w = world("localhost").await;
    let port = w.server.port;
    let pin = format!("#sha256={}", sha256_hex(b"x"));
    let source = format!("https://user:s3cret@localhost:{port}/p.tar.gz{pin}");
    let (status, body) = install(&w.app, &source).await;
    assert_error(
        status,
        &body,
        400,
        "invalid plugin source",
        &format!("https://localhost:{port}/p.tar.gz{pin}"),
    );
    assert!(
        body["hint"].as_str().unwrap().contains("#sha256="),
        "{body}"
    );
    assert!(!body.to_string().contains("s3cret"), "{body}");
    assert!(w.server.requests().is_empty());
}
