//! Outdated and update (SPEC §11) against the real server, a real
//! container and the loopback git server: a moved tag is `outdated` and an
//! update installs its new commit; a dry run changes nothing in the
//! container and restarts nothing; registry plugins compare digests;
//! pinned and unreachable sources; and a plugin named like a fixed route
//! still uninstalls.

use reqwest::Method;
use serde_json::{Value, json};

use super::{Registry, World, install, world_with};
use crate::support;
use support::app::ADMIN_TOKEN;
use support::git::GitServer;

async fn outdated(w: &World) -> Value {
    let (status, body) = w
        .app
        .call(
            Method::GET,
            "/workspaces/ws-1/plugins/outdated",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["workspace_id"], "ws-1");
    body
}

fn entry<'a>(report: &'a Value, plugin: &str) -> &'a Value {
    report["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["plugin"] == plugin)
        .unwrap_or_else(|| panic!("{plugin} not in {report}"))
}

async fn update(w: &World, name: &str, query: &str) -> (u16, Value) {
    w.app
        .call(
            Method::POST,
            &format!("/workspaces/ws-1/plugins/{name}/update{query}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await
}

fn cat(w: &World, path: &str) -> String {
    String::from_utf8(w.container.cat(path)).unwrap()
}

fn revision_of(list: &Value, name: &str) -> Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| e["revision"].clone())
        .unwrap_or_else(|| panic!("{name} not in {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_tag_is_outdated_a_dry_run_changes_nothing_and_an_update_installs_the_new_commit() {
    let git = GitServer::start().await;
    let repo = git.repo("acme", "gitplug");
    repo.write("plugin.yaml", "version: 1.0.0\n")
        .write("rules/a.md", "rule one\n")
        .write("old.txt", "old\n");
    let first = repo.commit("one");
    repo.tag("v1").publish();
    let pinned = git.repo("acme", "pinplug");
    pinned.write("plugin.yaml", "version: 0.1.0\n");
    let pinned_commit = pinned.commit("pinned");
    pinned.publish();

    let mut w = world_with(
        Registry::new(),
        "300ms",
        &["--plugin-github-base-url", &git.base_url],
    )
    .await;
    for source in [
        "github://acme/gitplug#v1".to_owned(),
        format!("github://acme/pinplug#{pinned_commit}"),
    ] {
        let (status, body) = install(&w.app, &source).await;
        assert_eq!(status, 200, "{source}: {body}");
    }
    w.restarts_done().await;

    let report = outdated(&w).await;
    let git_entry = entry(&report, "gitplug");
    assert_eq!(git_entry["status"], "current", "{report}");
    assert_eq!(git_entry["installed"]["revision"], first.as_str());
    assert_eq!(git_entry["available"]["revision"], first.as_str());
    assert_eq!(git_entry["installed"]["version"], "1.0.0");
    let pin_entry = entry(&report, "pinplug");
    assert_eq!(pin_entry["status"], "pinned");
    assert_eq!(pin_entry["available"], Value::Null);

    // The tag moves to a new commit on the server.
    repo.write("plugin.yaml", "version: 2.0.0\n")
        .write("rules/a.md", "rule one, revised\n")
        .write("new.txt", "new\n");
    std::fs::remove_file(repo.work.path().join("old.txt")).unwrap();
    let second = repo.commit("two");
    repo.git(&["tag", "-f", "-a", "-m", "v1 moved", "v1"]);
    repo.publish();
    let requests_before = git.requests().len();

    let report = outdated(&w).await;
    let git_entry = entry(&report, "gitplug");
    assert_eq!(git_entry["status"], "outdated", "{report}");
    assert_eq!(git_entry["installed"]["revision"], first.as_str());
    assert_eq!(git_entry["available"]["revision"], second.as_str());
    assert_eq!(git_entry["available"]["digest"], Value::Null);
    assert_eq!(git_entry["reason"], Value::Null);
    let asked: Vec<String> = git.requests()[requests_before..].to_vec();
    assert!(
        !asked.is_empty()
            && asked
                .iter()
                .all(|r| r.starts_with("GET ") && r.contains("/info/refs")),
        "only the ref list is read, no objects: {asked:?}"
    );

    // A dry run stages and diffs, and changes nothing.
    let (status, dry) = update(&w, "gitplug", "?dry_run=true").await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["status"], "dry_run");
    assert_eq!(dry["from"]["revision"], first.as_str());
    assert_eq!(dry["to"]["revision"], second.as_str());
    assert_ne!(dry["from"]["digest"], dry["to"]["digest"]);
    assert_eq!(dry["added"], json!(["new.txt"]));
    assert_eq!(dry["removed"], json!(["old.txt"]));
    assert_eq!(dry["changed"], json!(["plugin.yaml", "rules/a.md"]));
    assert_eq!(dry["files_recorded"], true);
    assert_eq!(cat(&w, "/configs/plugins/gitplug/old.txt"), "old\n");
    assert_eq!(
        cat(&w, "/configs/plugins/gitplug/plugin.yaml"),
        "version: 1.0.0\n"
    );
    w.no_restart();
    let (_, list) = w.app.admin_get("/workspaces/ws-1/plugins").await;
    assert_eq!(
        revision_of(&list, "gitplug"),
        first.as_str(),
        "no receipt written"
    );
    assert!(
        !w.app
            .audit_summary()
            .await
            .iter()
            .any(|(a, _, _)| a == "update"),
        "a dry run writes no event"
    );

    let (status, updated) = update(&w, "gitplug", "").await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["status"], "installed");
    assert_eq!(updated["to"], dry["to"]);
    assert_eq!(updated["changed"], dry["changed"]);
    assert_eq!(updated["digest"], updated["to"]["digest"]);
    assert_eq!(
        cat(&w, "/configs/plugins/gitplug/plugin.yaml"),
        "version: 2.0.0\n"
    );
    assert!(
        !w.container
            .exec_output(&["test", "-e", "/configs/plugins/gitplug/old.txt"])
            .status
            .success()
    );
    w.restarted_once().await;
    let (_, list) = w.app.admin_get("/workspaces/ws-1/plugins").await;
    assert_eq!(revision_of(&list, "gitplug"), second.as_str());
    let rows = w.app.audit_rows().await;
    let event = &rows[0];
    assert_eq!(
        (&event["action"], &event["outcome"], &event["plugin"]),
        (&json!("update"), &json!("ok"), &json!("gitplug")),
        "{rows:?}"
    );
    assert_eq!(event["source"], "github://acme/gitplug#v1");
    assert_eq!(entry(&outdated(&w).await, "gitplug")["status"], "current");

    // Updated again with nothing new: unchanged, no restart.
    let (status, again) = update(&w, "gitplug", "").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["status"], "unchanged");
    assert_eq!(again["added"], json!([]));
    w.no_restart();

    // The git server goes away: unavailable, with a reason that names
    // neither its address nor anything it said.
    let base_url = git.base_url.clone();
    drop(git);
    let report = outdated(&w).await;
    let gone = entry(&report, "gitplug");
    assert_eq!(gone["status"], "unavailable", "{report}");
    assert_eq!(gone["available"], Value::Null);
    let reason = gone["reason"].as_str().unwrap();
    let port = base_url.rsplit(':').next().unwrap();
    for leak in ["127.0.0.1", port, "http", "/", "acme"] {
        assert!(!reason.contains(leak), "{reason:?} leaks {leak:?}");
    }
    assert_eq!(entry(&report, "pinplug")["status"], "pinned", "no lookup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_plugin_is_current_until_it_changes_and_updates_from_the_registry() {
    let registry = Registry::new();
    registry.plugin(
        "demo",
        &[("plugin.yaml", "version: 1.0.0\n"), ("a.md", "a")],
    );
    let w = world_with(registry, "1h", &[]).await;
    let (status, body) = install(&w.app, "demo").await;
    assert_eq!(status, 200, "{body}");

    let report = outdated(&w).await;
    let demo = entry(&report, "demo");
    assert_eq!(demo["status"], "current", "{report}");
    assert_eq!(demo["available"]["digest"], body["digest"]);
    assert_eq!(demo["available"]["revision"], Value::Null);
    assert_eq!(demo["available"]["version"], "1.0.0");

    w.registry.plugin(
        "demo",
        &[
            ("plugin.yaml", "version: 1.1.0\n"),
            ("a.md", "a"),
            ("b.md", "b"),
        ],
    );
    let report = outdated(&w).await;
    let demo = entry(&report, "demo");
    assert_eq!(demo["status"], "outdated", "{report}");
    assert_ne!(demo["available"]["digest"], body["digest"]);
    assert_eq!(demo["available"]["version"], "1.1.0");

    let (status, updated) = update(&w, "demo", "?dry_run=false").await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["status"], "installed");
    assert_eq!(updated["from"]["revision"], Value::Null);
    assert_eq!(updated["from"]["digest"], body["digest"]);
    assert_eq!(updated["to"]["digest"], demo["available"]["digest"]);
    assert_eq!(updated["added"], json!(["b.md"]));
    assert_eq!(updated["changed"], json!(["plugin.yaml"]));
    assert_eq!(cat(&w, "/configs/plugins/demo/b.md"), "b");
    assert_eq!(entry(&outdated(&w).await, "demo")["status"], "current");

    // Gone from the registry: unavailable, naming no path.
    std::fs::remove_dir_all(w.registry.path().join("demo")).unwrap();
    let report = outdated(&w).await;
    let demo = entry(&report, "demo");
    assert_eq!(demo["status"], "unavailable", "{report}");
    let reason = demo["reason"].as_str().unwrap();
    assert!(!reason.contains('/'), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_without_an_install_record_is_404_and_bad_input_is_400() {
    let w = world_with(Registry::new(), "1h", &[]).await;
    let (status, body) = update(&w, "ghost", "").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "plugin \"ghost\" has no install record");
    let (status, body) = update(&w, "ghost", "?dry_run=true").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = update(&w, "a%5Cb", "").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid plugin name");
    let (status, body) = update(&w, "ghost", "?dry_run=maybe").await;
    assert_eq!(status, 400, "{body}");
    let events = w.app.audit_summary().await;
    assert_eq!(
        events
            .iter()
            .filter(|(a, _, _)| a == "update")
            .map(|(_, o, s)| (o.as_str(), *s))
            .collect::<Vec<_>>(),
        [("failed", 400), ("failed", 404)],
        "only the update that was not a dry run is recorded: {events:?}"
    );
    let (status, _) = w
        .app
        .call(Method::GET, "/workspaces/ws-1/plugins/outdated", None, None)
        .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_named_like_a_fixed_route_uninstalls_with_delete() {
    let registry = Registry::new();
    for name in ["lock", "outdated", "available", "compatibility"] {
        registry.plugin(name, &[("plugin.yaml", "version: 1.0.0\n")]);
    }
    let w = world_with(registry, "1h", &[]).await;
    for name in ["lock", "outdated", "available", "compatibility"] {
        let (status, body) = install(&w.app, name).await;
        assert_eq!(status, 200, "{name}: {body}");
        let (status, body) = w
            .app
            .call(
                Method::DELETE,
                &format!("/workspaces/ws-1/plugins/{name}"),
                Some(ADMIN_TOKEN),
                None,
            )
            .await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body, json!({"status": "uninstalled", "plugin": name}));
        assert!(
            !w.container
                .exec_output(&["test", "-e", &format!("/configs/plugins/{name}")])
                .status
                .success(),
            "{name} removed"
        );
    }
    let (status, _) = w
        .app
        .call(Method::DELETE, "/workspaces/ws-1/plugins/lock", None, None)
        .await;
    assert_eq!(status, 401, "auth first, as on every workspace route");
}
