use std::fs;
use std::process::Command;

use reqwest::Method;
use serde_json::json;

use crate::support::app::{
    ADMIN_TOKEN, Options, TestApp, json, repo_plugins_dir, spawn_app, spawn_app_with,
};

const PATH: &str = "/workspaces/ext/plugins/careful-bash/download";

async fn external(app: &TestApp) -> String {
    app.create_workspace("ext", json!({"name": "Remote", "runtime": "external"}))
        .await;
    app.issue_token("ext").await.1
}

/// An app whose registry is a copy of the repo's `careful-bash`, free to
/// change (the TempDir must outlive the app).
async fn app_over_a_registry_copy() -> (tempfile::TempDir, TestApp) {
    let registry = tempfile::tempdir().unwrap();
    let copied = Command::new("cp")
        .arg("-r")
        .arg(repo_plugins_dir().join("careful-bash"))
        .arg(registry.path())
        .status()
        .unwrap();
    assert!(copied.success());
    let app = spawn_app_with(Options {
        plugins_dir: Some(registry.path().to_owned()),
        ..Options::default()
    })
    .await;
    (registry, app)
}

async fn get(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut rb = app.req(Method::GET, path, token);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await.unwrap()
}

/// Unpacks with the system tar and lists `path<TAB>content` of every file.
fn unpack(bytes: &[u8], zstd: bool) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a");
    fs::write(&archive, bytes).unwrap();
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let mut cmd = Command::new("tar");
    if zstd {
        cmd.arg("--zstd");
    } else {
        cmd.arg("-z");
    }
    let status = cmd
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    listing(&out)
}

fn listing(root: &std::path::Path) -> Vec<String> {
    let mut files = Vec::new();
    fn walk(root: &std::path::Path, dir: &std::path::Path, files: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, files);
            } else {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                files.push(format!("{rel}\t{}", fs::read_to_string(&path).unwrap()));
            }
        }
    }
    walk(root, root, &mut files);
    files.sort();
    files
}

#[tokio::test]
async fn an_external_agent_downloads_exactly_the_plugins_files_as_gzip_and_zstd() {
    let app = spawn_app().await;
    let token = external(&app).await;
    let expected = listing(&repo_plugins_dir().join("careful-bash"));
    let resp = get(
        &app,
        PATH,
        Some(&token),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["content-type"], "application/gzip");
    assert_eq!(
        h["content-disposition"],
        "attachment; filename=\"careful-bash.tar.gz\""
    );
    assert_eq!(h["x-plugin-name"], "careful-bash");
    assert_eq!(h["x-plugin-source"], "local://careful-bash");
    assert_eq!(h["vary"], "Accept");
    assert!(
        h.get("content-encoding").is_none(),
        "the SDK reads the raw body as tar.gz"
    );
    let etag = h["etag"].to_str().unwrap().to_owned();
    assert!(
        etag.starts_with("\"h1:") && etag.ends_with(".tar.gz\""),
        "{etag}"
    );
    let gz = resp.bytes().await.unwrap();
    assert_eq!(h["content-length"].to_str().unwrap(), gz.len().to_string());
    assert_eq!(unpack(&gz, false), expected);

    let resp = get(&app, PATH, Some(&token), &[("accept", "application/zstd")]).await;
    assert_eq!(resp.headers()["content-type"], "application/zstd");
    assert_eq!(
        resp.headers()["content-disposition"],
        "attachment; filename=\"careful-bash.tar.zst\""
    );
    assert!(
        resp.headers()["etag"]
            .to_str()
            .unwrap()
            .ends_with(".tar.zst\"")
    );
    assert_eq!(unpack(&resp.bytes().await.unwrap(), true), expected);
    let resp = get(&app, &format!("{PATH}?format=tar.zst"), Some(&token), &[]).await;
    assert_eq!(resp.headers()["content-type"], "application/zstd");

    let again = get(&app, PATH, Some(&token), &[])
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(again, gz, "the same tree always gives the same bytes");
}

#[tokio::test]
async fn a_matching_etag_is_304_without_a_body_and_a_changed_plugin_gets_a_new_etag() {
    let (registry, app) = app_over_a_registry_copy().await;
    let token = external(&app).await;
    let first = get(&app, PATH, Some(&token), &[]).await;
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let resp = get(&app, PATH, Some(&token), &[("if-none-match", &etag)]).await;
    assert_eq!(resp.status(), 304);
    assert_eq!(resp.headers()["etag"].to_str().unwrap(), etag);
    assert!(resp.bytes().await.unwrap().is_empty());
    fs::write(
        registry.path().join("careful-bash/rules/extra.md"),
        "new rule",
    )
    .unwrap();
    let resp = get(&app, PATH, Some(&token), &[("if-none-match", &etag)]).await;
    assert_eq!(resp.status(), 200, "the content changed, so the ETag did");
    assert_ne!(resp.headers()["etag"].to_str().unwrap(), etag);
}

#[tokio::test]
async fn a_file_rewritten_behind_an_unchanged_fingerprint_is_staged_anew_never_served_stale() {
    let (registry, app) = app_over_a_registry_copy().await;
    let token = external(&app).await;
    let first = get(&app, PATH, Some(&token), &[]).await;
    assert_eq!(first.status(), 200);
    let gz_etag = first.headers()["etag"].to_str().unwrap().to_owned();

    // Same size, mode and modification time: the directory's fingerprint
    // cannot tell, only the bytes can.
    let plugin = registry.path().join("careful-bash");
    let file = plugin.join("rules/no-rm-rf.md");
    let before = fs::metadata(&file).unwrap();
    let mut bytes = fs::read(&file).unwrap();
    let last = bytes.len() - 2;
    bytes[last] = if bytes[last] == b'x' { b'y' } else { b'x' };
    fs::write(&file, &bytes).unwrap();
    fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(before.modified().unwrap())
        .unwrap();
    assert_eq!(fs::metadata(&file).unwrap().len(), before.len());

    let resp = get(&app, &format!("{PATH}?format=tar.zst"), Some(&token), &[]).await;
    assert_eq!(resp.status(), 200);
    let zst_etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(
        zst_etag.trim_end_matches(".tar.zst\""),
        gz_etag.trim_end_matches(".tar.gz\""),
        "the ETag names the new content"
    );
    assert_eq!(
        unpack(&resp.bytes().await.unwrap(), true),
        listing(&plugin),
        "the archive holds the new bytes"
    );
}

#[tokio::test]
async fn bad_tokens_are_401_and_auth_comes_before_the_name() {
    let app = spawn_app().await;
    let token = external(&app).await;
    app.create_workspace("other", json!({"name": "O", "runtime": "x"}))
        .await;
    let (_, other) = app.issue_token("other").await;
    let (revoked_id, revoked) = app.issue_token("ext").await;
    app.call(
        Method::DELETE,
        &format!("/workspaces/ext/tokens/{revoked_id}"),
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    for bad in ["wrong", other.as_str(), revoked.as_str()] {
        let resp = get(
            &app,
            "/workspaces/ext/plugins/..%5C/download",
            Some(bad),
            &[],
        )
        .await;
        assert_eq!(
            json(resp).await,
            (401, json!({"error": "invalid auth token"}))
        );
    }
    let resp = get(&app, PATH, None, &[]).await;
    assert_eq!(
        json(resp).await,
        (401, json!({"error": "missing auth token"}))
    );
    let resp = get(
        &app,
        "/workspaces/ext/plugins/a%5Cb/download",
        Some(&token),
        &[],
    )
    .await;
    assert_eq!(
        json(resp).await,
        (400, json!({"error": "invalid plugin name"}))
    );
    let resp = get(
        &app,
        "/workspaces/nope/plugins/careful-bash/download",
        Some(ADMIN_TOKEN),
        &[],
    )
    .await;
    assert_eq!(
        json(resp).await,
        (404, json!({"error": "workspace not found"}))
    );
    let resp = get(&app, PATH, Some(ADMIN_TOKEN), &[]).await;
    assert_eq!(resp.status(), 200, "the admin token works too");
}

#[tokio::test]
async fn the_name_mismatch_rule_then_the_allowlist_refuse() {
    let app = spawn_app().await;
    let token = external(&app).await;
    let resp = get(
        &app,
        &format!("{PATH}?source=local://hello-world"),
        Some(&token),
        &[],
    )
    .await;
    assert_eq!(
        json(resp).await,
        (
            400,
            json!({
                "error": "source resolved to plugin \"hello-world\" but URL requested \"careful-bash\"",
                "resolved_name": "hello-world",
                "requested_name": "careful-bash"
            })
        )
    );
    app.call(
        Method::PUT,
        "/orgs/ext/plugins/allowlist",
        Some(ADMIN_TOKEN),
        Some(json!({"plugins": ["hello-world"]})),
    )
    .await;
    let resp = get(&app, PATH, Some(&token), &[]).await;
    assert_eq!(
        json(resp).await,
        (
            403,
            json!({"error": "plugin \"careful-bash\" is not in the org allowlist"})
        )
    );
    let resp = get(&app, &format!("{PATH}?format=zip"), Some(&token), &[]).await;
    assert_eq!(
        json(resp).await,
        (
            400,
            json!({"error": "unsupported format (use tar.gz or tar.zst)"})
        )
    );
    let resp = get(
        &app,
        "/workspaces/ext/plugins/absent/download",
        Some(&token),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn a_store_failure_is_500_auth_check_failed() {
    let app = spawn_app().await;
    let token = external(&app).await;
    app.store.set_broken(true);
    let resp = get(&app, PATH, Some(&token), &[]).await;
    assert_eq!(
        json(resp).await,
        (500, json!({"error": "auth check failed"}))
    );
}

#[tokio::test]
async fn a_packing_failure_is_a_clean_500_never_a_200() {
    let app = spawn_app_with(Options {
        failing_archives: true,
        ..Options::default()
    })
    .await;
    let token = external(&app).await;
    let resp = get(&app, PATH, Some(&token), &[]).await;
    assert_eq!(
        json(resp).await,
        (500, json!({"error": "failed to pack plugin"}))
    );
}

#[tokio::test]
async fn a_source_with_user_info_is_refused_like_install_and_never_echoed() {
    let app = spawn_app().await;
    let token = external(&app).await;
    app.create_workspace("box", json!({"name": "Box", "runtime": "claude-code"}))
        .await;
    let pin = "0".repeat(64);
    for (source, message) in [
        (
            format!("https://user:pass@plugins.example/careful-bash.tar.gz#sha256={pin}"),
            "invalid plugin source",
        ),
        // Read as a plugin name, which cannot hold `:` or `@`.
        (
            "local://user:pass@careful-bash".to_owned(),
            "invalid plugin name",
        ),
    ] {
        let installed = app
            .call(
                Method::POST,
                "/workspaces/box/plugins",
                Some(ADMIN_TOKEN),
                Some(json!({ "source": source })),
            )
            .await;
        let resp = app
            .req(Method::GET, PATH, Some(&token))
            .query(&[("source", &source)])
            .send()
            .await
            .unwrap();
        let downloaded = json(resp).await;
        assert_eq!(downloaded, installed, "{source}");
        let (status, body) = downloaded;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], message, "{body}");
        let echoed = body["source"].as_str().unwrap();
        assert!(
            !echoed.contains("user") && !echoed.contains("pass"),
            "{echoed}"
        );
    }
}
