//! Provenance and drift (SPEC §11) against the real server and a real
//! container: receipts' provenance for `local`, `github` (the loopback git
//! server) and `https` sources, the lock, fleet-wide installations, and
//! `verify` naming what changed inside the container, including what a
//! hostile agent plants there.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::{Registry, world, world_with};
use crate::support;
use support::app::{ADMIN_TOKEN, TestApp};
use support::docker::TestContainer;
use support::git::GitServer;
use support::hostile::{Tar, gzip};
use support::https::{HttpsServer, sha256_hex};

fn demo(registry: &Registry, version: &str) {
    registry.plugin(
        "demo",
        &[
            ("plugin.yaml", &format!("name: demo\nversion: {version}\n")),
            ("rules/style.md", "Be brief."),
            ("skills/helper/SKILL.md", "---\nname: helper\n---\nbody\n"),
            ("notes.txt", version),
        ],
    );
}

async fn get(app: &TestApp, path: &str, token: &str) -> (u16, Value) {
    app.call(Method::GET, path, Some(token), None).await
}

async fn verify(app: &TestApp, name: &str) -> Value {
    let (status, body) = get(
        app,
        &format!("/workspaces/ws-1/plugins/{name}/verify"),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn entry<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_record_the_revision_version_and_installer_of_local_github_and_https_sources() {
    let git = GitServer::start().await;
    let repo = git.repo("acme", "gitplug");
    repo.write("plugin.yaml", "version: 1.0.0\n")
        .write("rules/a.md", "rule\n");
    let commit = repo.commit("one");
    repo.tag("v1.0.0").publish();
    let https = HttpsServer::start().await;
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = https.write_ca(ca_dir.path()).display().to_string();
    let archive = gzip(
        &Tar::new()
            .file("plugin.yaml", b"version: 3.1.4\n")
            .file("README.md", b"r")
            .finish(),
    );
    let archive_sha = sha256_hex(&archive);
    let https_source = https.serve("/dl/webplug.tar.gz", archive);

    let registry = Registry::new();
    demo(&registry, "1.0.0");
    let w = world_with(
        registry,
        "1h",
        &[
            "--plugin-github-base-url",
            &git.base_url,
            "--plugin-https-allowed-hosts",
            "localhost",
            "--plugin-https-ca-file",
            &ca,
        ],
    )
    .await;
    let (token_id, token) = w.app.issue_token("ws-1").await;
    let before = chrono::Utc::now();
    let (status, body) = w
        .app
        .call(
            Method::POST,
            "/workspaces/ws-1/plugins",
            Some(&token),
            Some(json!({"source": "github://acme/gitplug#v1.0.0"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for source in ["local://demo", https_source.as_str()] {
        let (status, body) = super::install(&w.app, source).await;
        assert_eq!(status, 200, "{source}: {body}");
    }

    let (status, list) = get(&w.app, "/workspaces/ws-1/plugins", ADMIN_TOKEN).await;
    assert_eq!(status, 200, "{list}");
    let gitplug = entry(&list, "gitplug");
    assert_eq!(gitplug["source"], "github://acme/gitplug#v1.0.0");
    assert_eq!(gitplug["revision"], commit, "the commit the tag named");
    assert_eq!(gitplug["installed_by"], token_id.as_str());
    let at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(gitplug["installed_at"].clone()).unwrap();
    assert!(at >= before - chrono::Duration::seconds(1), "{at} {before}");
    let local = entry(&list, "demo");
    assert_eq!(local["source"], "local://demo");
    assert_eq!(local["revision"], Value::Null, "local has no revision");
    assert_eq!(local["installed_by"], "admin");
    let web = entry(&list, "webplug");
    assert_eq!(web["revision"], archive_sha.as_str());
    assert_eq!(web["version"], "3.1.4");

    let (status, lock) = get(&w.app, "/workspaces/ws-1/plugins/lock", &token).await;
    assert_eq!(status, 200, "{lock}");
    assert_eq!(lock["workspace_id"], "ws-1");
    let names: Vec<&str> = lock["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["demo", "gitplug", "webplug"], "sorted by name");
    assert_eq!(lock["plugins"][1]["revision"], commit);
    assert_eq!(lock["plugins"][1]["digest"], gitplug["digest"]);
    assert_eq!(lock["plugins"][0]["source"], "local://demo");

    let (status, page) = get(&w.app, "/plugins/gitplug/installations", ADMIN_TOKEN).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["installations"][0]["version"], "1.0.0");
    assert_eq!(page["installations"][0]["installed_by"], token_id.as_str());
    assert_eq!(page["installations"][0]["revision"], commit);
    assert_eq!(page["next_cursor"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installations_find_exactly_the_workspaces_at_a_digest_page_by_page() {
    let registry = Registry::new();
    demo(&registry, "1.0.0");
    let w = world(registry).await;
    let others = [TestContainer::running(), TestContainer::running()];
    for (id, container) in ["ws-2", "ws-3"].iter().zip(&others) {
        w.app
            .create_workspace(
                id,
                json!({"name": "Agent", "runtime": "claude-code", "container": container.name}),
            )
            .await;
    }
    let install_in = |ws: &'static str| {
        let app = &w.app;
        async move {
            let (status, body) = app
                .call(
                    Method::POST,
                    &format!("/workspaces/{ws}/plugins"),
                    Some(ADMIN_TOKEN),
                    Some(json!({"source": "demo"})),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body["digest"].as_str().unwrap().to_owned()
        }
    };
    let v1 = install_in("ws-1").await;
    assert_eq!(install_in("ws-3").await, v1);
    demo(&w.registry, "2.0.0");
    let v2 = install_in("ws-2").await;
    assert_ne!(v1, v2);

    let ids = |page: &Value| -> Vec<String> {
        page["installations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["workspace_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let at_v1 = format!("/plugins/demo/installations?digest={}", urlencode(&v1));
    let (status, page) = get(&w.app, &at_v1, ADMIN_TOKEN).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), ["ws-1", "ws-3"], "exactly the workspaces at v1");
    assert!(
        page["installations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["digest"] == v1.as_str())
    );

    // All of them, one per page, by workspace id.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/plugins/demo/installations?limit=1".to_owned(),
            Some(c) => format!("/plugins/demo/installations?limit=1&cursor={c}"),
        };
        let (status, page) = get(&w.app, &path, ADMIN_TOKEN).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["ws-1", "ws-2", "ws-3"]);
    let (_, page) = get(&w.app, "/plugins/nothing-here/installations", ADMIN_TOKEN).await;
    assert_eq!(page, json!({"installations": [], "next_cursor": null}));

    for (query, message) in [
        ("limit=0", "limit must be a whole number from 1 to 500"),
        ("limit=501", "limit must be a whole number from 1 to 500"),
        (
            "cursor=ws-1",
            "cursor is not a value returned as next_cursor",
        ),
        (
            "digest=sha256:abc",
            "digest must be an h1 digest as installs report it (h1:<base64 of a SHA-256>)",
        ),
    ] {
        let (status, body) = get(
            &w.app,
            &format!("/plugins/demo/installations?{query}"),
            ADMIN_TOKEN,
        )
        .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(
            body["error"],
            format!("invalid query parameter: {message}"),
            "{query}"
        );
    }
    let (status, body) = get(&w.app, "/plugins/..%2Fetc/installations", ADMIN_TOKEN).await;
    assert_eq!(status, 400, "{body}");
    let (_, token) = w.app.issue_token("ws-1").await;
    let (status, body) = get(&w.app, "/plugins/demo/installations", &token).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("admin token required"))
    );
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_files_edited_added_and_removed_inside_the_container() {
    let registry = Registry::new();
    demo(&registry, "1.0.0");
    let w = world(registry).await;
    let (status, installed) = super::install(&w.app, "demo").await;
    assert_eq!(status, 200, "{installed}");
    let ok = verify(&w.app, "demo").await;
    assert_eq!(
        ok,
        json!({
            "plugin": "demo", "status": "ok",
            "expected_digest": installed["digest"], "actual_digest": installed["digest"],
            "added": [], "removed": [], "changed": [], "truncated": false,
        })
    );

    // The agent edits, adds and removes files.
    w.container.sh(
        "cd /configs/plugins/demo && echo edited >> rules/style.md && echo new > rules/new.md \
         && rm notes.txt && mkdir -p extra && echo x > extra/x",
    );
    let drift = verify(&w.app, "demo").await;
    assert_eq!(drift["status"], "modified", "{drift}");
    assert_eq!(drift["changed"], json!(["rules/style.md"]));
    assert_eq!(drift["added"], json!(["extra/x", "rules/new.md"]));
    assert_eq!(drift["removed"], json!(["notes.txt"]));
    assert_eq!(drift["expected_digest"], installed["digest"]);
    assert_ne!(drift["actual_digest"], installed["digest"]);

    // A workspace token verifies its own workspace.
    let (_, token) = w.app.issue_token("ws-1").await;
    let (status, _) = get(&w.app, "/workspaces/ws-1/plugins/demo/verify", &token).await;
    assert_eq!(status, 200);

    // The directory gone: missing; a directory nobody installed: untracked.
    w.container.sh("rm -rf /configs/plugins/demo && mkdir -p /configs/plugins/handmade && echo h > /configs/plugins/handmade/plugin.yaml");
    let missing = verify(&w.app, "demo").await;
    assert_eq!(
        (missing["status"].as_str(), &missing["actual_digest"]),
        (Some("missing"), &Value::Null)
    );
    let untracked = verify(&w.app, "handmade").await;
    assert_eq!(untracked["status"], "untracked");
    assert_eq!(untracked["expected_digest"], Value::Null);
    assert!(
        untracked["actual_digest"]
            .as_str()
            .unwrap()
            .starts_with("h1:")
    );
    let (status, body) = get(
        &w.app,
        "/workspaces/ws-1/plugins/nothing/verify",
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("plugin \"nothing\" is not installed"))
    );
    let (status, _) = get(
        &w.app,
        "/workspaces/ws-1/plugins/..%2Fetc/verify",
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_never_follows_a_symlink_or_opens_a_fifo_the_agent_planted_and_stops_at_the_caps() {
    let registry = Registry::new();
    demo(&registry, "1.0.0");
    let w = world_with(registry, "1h", &["--plugin-install-max-dir-bytes", "65536"]).await;
    let (status, body) = super::install(&w.app, "demo").await;
    assert_eq!(status, 200, "{body}");
    let agent = |script: &str| {
        let out = w.container.exec_agent(script);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    // Files swapped for a symlink out of /configs and for a FIFO nobody
    // writes: listed as changed, never read, so no digest and no wait.
    agent(
        "cd /configs/plugins/demo && rm notes.txt && ln -s /etc/passwd notes.txt \
         && rm rules/style.md && mkfifo rules/style.md && ln -s /etc etc-link",
    );
    let started = Instant::now();
    let drift = verify(&w.app, "demo").await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "never waited on the FIFO"
    );
    assert_eq!(drift["status"], "modified", "{drift}");
    assert_eq!(drift["changed"], json!(["notes.txt", "rules/style.md"]));
    assert_eq!(
        drift["added"],
        json!(["etc-link"]),
        "the link, not what is behind it"
    );
    assert_eq!(drift["actual_digest"], Value::Null);
    assert!(!drift.to_string().contains("passwd\""), "{drift}");

    // A file larger than any staged plugin: read up to the cap, no further.
    agent("head -c 1048576 /dev/zero > /configs/plugins/demo/huge");
    let drift = verify(&w.app, "demo").await;
    assert_eq!(
        (drift["status"].as_str(), drift["truncated"].as_bool()),
        (Some("modified"), Some(true)),
        "{drift}"
    );
    assert_eq!(
        drift["removed"],
        json!([]),
        "what was not read is not removed"
    );

    // The plugin directory swapped for a symlink to /etc, then for a FIFO:
    // it is not a directory, so there is nothing to read.
    agent("cd /configs/plugins && rm -rf demo && ln -s /etc demo");
    let drift = verify(&w.app, "demo").await;
    assert_eq!(drift["status"], "missing", "{drift}");
    assert_eq!(
        (drift["added"].clone(), drift["changed"].clone()),
        (json!([]), json!([]))
    );
    agent("cd /configs/plugins && rm demo && mkfifo demo");
    assert_eq!(verify(&w.app, "demo").await["status"], "missing");
    // /configs/plugins itself a symlink: refused, nothing read there.
    agent("cd /configs && mv plugins real && ln -s /etc plugins");
    let (status, body) = get(&w.app, "/workspaces/ws-1/plugins/demo/verify", ADMIN_TOKEN).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (500, Some("failed to read the installed plugin")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_of_a_stopped_container_is_503_like_every_container_route() {
    let registry = Registry::new();
    demo(&registry, "1.0.0");
    let w = world(registry).await;
    super::install(&w.app, "demo").await;
    support::docker::docker(&["stop", "-t", "0", &w.container.name]);
    let (status, body) = get(&w.app, "/workspaces/ws-1/plugins/demo/verify", ADMIN_TOKEN).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("workspace container not running"))
    );
    // The lock reads receipts only: the container need not run.
    let (status, lock) = get(&w.app, "/workspaces/ws-1/plugins/lock", ADMIN_TOKEN).await;
    assert_eq!(status, 200);
    assert_eq!(lock["plugins"][0]["name"], "demo");
}
