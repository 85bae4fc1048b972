use reqwest::Method;
use serde_json::{Value, json};

use super::{Registry, owners, world, world_restarting};
use crate::support::app::ADMIN_TOKEN;

fn demo(registry: &Registry, version: &str) {
    registry.plugin(
        "demo",
        &[
            (
                "plugin.yaml",
                &format!(
                    "name: demo\nversion: {version}\nruntimes: [claude_code]\nskills: [helper]\n"
                ),
            ),
            ("rules/style.md", "Be brief."),
            (
                "skills/helper/SKILL.md",
                "---\nname: helper\ndescription: helps\n---\nbody\n",
            ),
            (&format!("only-in-{version}.txt"), version),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_copies_the_plugin_owned_by_the_agent_and_restarts_once() {
    let registry = Registry::new();
    demo(&registry, "1.0.0");
    let mut w = world_restarting(registry).await;
    let (status, body) = super::install(&w.app, "demo").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "installed");
    assert_eq!(body["plugin"], "demo");
    assert_eq!(body["source"], "local://demo");
    assert!(body["digest"].as_str().unwrap().starts_with("h1:"));
    // Looked at once the restart is over: an exec racing the restart
    // would be killed with it.
    w.restarted_once().await;
    assert_eq!(
        w.container.cat("/configs/plugins/demo/rules/style.md"),
        b"Be brief."
    );
    assert_eq!(
        w.container.cat("/configs/plugins/demo/only-in-1.0.0.txt"),
        b"1.0.0"
    );
    for line in owners(&w.container, "/configs/plugins/demo") {
        assert!(line.starts_with("1000:1000 "), "{line}");
    }
    let leftovers = w.container.sh("ls -A /configs/plugins");
    assert_eq!(leftovers, "demo", "no staging or old directories remain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinstalling_the_same_content_is_unchanged_and_does_not_restart() {
    let registry = Registry::new();
    demo(&registry, "1.0.0");
    let mut w = world_restarting(registry).await;
    let (_, first) = super::install(&w.app, "local://demo").await;
    w.restarted_once().await;
    let (status, second) = super::install(&w.app, "local://demo").await;
    assert_eq!(status, 200);
    assert_eq!(second["status"], "unchanged");
    assert_eq!(second["digest"], first["digest"]);
    w.no_restart();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_replaces_the_old_one_without_stale_files() {
    let registry = Registry::new();
    demo(&registry, "1.0.0");
    let w = world(registry).await;
    super::install(&w.app, "demo").await;
    demo(&w.registry, "2.0.0");
    let (status, body) = super::install(&w.app, "demo").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("installed")));
    let files = w
        .container
        .sh("cd /configs/plugins/demo && find . -type f | sort");
    assert_eq!(
        files,
        "./only-in-2.0.0.txt\n./plugin.yaml\n./rules/style.md\n./skills/helper/SKILL.md"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_installed_list_reports_manifest_info_digest_and_runtime_support() {
    let registry = Registry::new();
    demo(&registry, "1.0.0");
    registry.plugin("hermes-only", &[("plugin.yaml", "runtimes: [hermes]\n")]);
    let w = world(registry).await;
    let (_, installed) = super::install(&w.app, "demo").await;
    super::install(&w.app, "hermes-only").await;
    // Put there by something else: listed, without a digest. Dot entries
    // and files are never plugins.
    w.container.sh("mkdir -p /configs/plugins/manual /configs/plugins/.x.staging-1 && touch /configs/plugins/file");
    let (status, list) = w
        .app
        .call(
            Method::GET,
            "/workspaces/ws-1/plugins",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{list}");
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["demo", "hermes-only", "manual"]);
    assert_eq!(list[0]["digest"], installed["digest"]);
    assert_eq!(list[0]["version"], "1.0.0");
    assert_eq!(list[0]["supported_on_runtime"], true);
    assert_eq!(list[1]["supported_on_runtime"], false);
    assert_eq!(list[2]["digest"], Value::Null);
    assert_eq!(list[2]["skills"], json!([]));

    let (status, report) = w
        .app
        .call(
            Method::GET,
            "/workspaces/ws-1/plugins/compatibility?runtime=hermes",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["target_runtime"], "hermes");
    assert_eq!(report["all_compatible"], false);
    let incompatible: Vec<&str> = report["incompatible"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(incompatible, ["demo"]);
    let (status, _) = w
        .app
        .call(
            Method::GET,
            "/workspaces/ws-1/plugins/compatibility",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 400, "runtime is required");

    let (status, available) = w
        .app
        .call(
            Method::GET,
            "/workspaces/ws-1/plugins/available",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let names: Vec<&str> = available
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["demo"],
        "filtered to the workspace's runtime (claude_code)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_container_lists_nothing_is_compatible_and_refuses_installs() {
    let registry = Registry::new();
    demo(&registry, "1.0.0");
    let w = world(registry).await;
    crate::support::docker::docker(&["stop", "-t", "1", &w.container.name]);
    let (status, list) = w
        .app
        .call(
            Method::GET,
            "/workspaces/ws-1/plugins",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!((status, list), (200, json!([])));
    let (status, report) = w
        .app
        .call(
            Method::GET,
            "/workspaces/ws-1/plugins/compatibility?runtime=x",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        report,
        json!({"target_runtime": "x", "compatible": [], "incompatible": [], "all_compatible": true})
    );
    let (status, body) = super::install(&w.app, "demo").await;
    assert_eq!(
        (status, body),
        (503, json!({"error": "workspace container not running"}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_workspaces_are_told_to_pull_even_with_a_bad_body() {
    let w = world(Registry::new()).await;
    w.app
        .create_workspace("ext", json!({"name": "Remote", "runtime": "external"}))
        .await;
    let resp = w
        .app
        .req(Method::POST, "/workspaces/ext/plugins", Some(ADMIN_TOKEN))
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (status, body) = crate::support::app::json(resp).await;
    assert_eq!(status, 422);
    assert_eq!(
        body["error"],
        "plugin install via push is not supported for external runtimes"
    );
    assert!(body["hint"].as_str().unwrap().contains("/download"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installs_of_different_plugins_at_once_both_land_with_one_restart() {
    let registry = Registry::new();
    demo(&registry, "1.0.0");
    registry.plugin("other", &[("plugin.yaml", "version: 0.1.0\n")]);
    let mut w = world_restarting(registry).await;
    let (a, b) = tokio::join!(
        super::install(&w.app, "demo"),
        super::install(&w.app, "other")
    );
    assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
    assert_eq!(w.container.sh("ls /configs/plugins"), "demo\nother");
    // Coalesced: one restart, and none other to come.
    w.restarted_once().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_refusals_change_nothing_in_the_container() {
    let registry = Registry::new();
    demo(&registry, "1.0.0");
    let w = world(registry).await;
    w.app
        .call(
            Method::PUT,
            "/orgs/ws-1/plugins/allowlist",
            Some(ADMIN_TOKEN),
            Some(json!({"plugins": ["other"]})),
        )
        .await;
    let (status, body) = super::install(&w.app, "demo").await;
    assert_eq!(
        (status, body),
        (
            403,
            json!({"error": "plugin \"demo\" is not in the org allowlist"})
        )
    );
    let (status, body) = super::install(&w.app, "local://Nope").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid plugin name"))
    );
    let (status, body) = super::install(&w.app, "local://missing").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = w
        .app
        .call(
            Method::POST,
            "/workspaces/ws-1/plugins",
            Some(ADMIN_TOKEN),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(w.container.sh("ls -A /configs/plugins"), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_plugin_rewritten_while_it_is_installed_is_not_placed_and_keeps_the_previous_receipt()
 {
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let registry = Registry::new();
    demo(&registry, "1.0.0");
    let w = world(registry).await;
    let (status, first) = super::install(&w.app, "demo").await;
    assert_eq!(status, 200, "{first}");
    // Version 2, one file of which is rewritten in place, same size,
    // without pause, for the whole install: installs read a local plugin
    // where it lies, so what they hashed is not what they would deliver.
    demo(&w.registry, "2.0.0");
    let big = w.registry.path().join("demo/big.bin");
    std::fs::write(&big, vec![0u8; 4 << 20]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let rewrites = Arc::new(AtomicU64::new(0));
    let rewriter = std::thread::spawn({
        let (stop, rewrites) = (stop.clone(), rewrites.clone());
        move || {
            let file = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
            while !stop.load(Ordering::SeqCst) {
                let n = rewrites.fetch_add(1, Ordering::SeqCst);
                file.write_all_at(&[n as u8; 4096], (n % 1024) * 4096)
                    .unwrap();
            }
        }
    });
    let (status, body) = super::install(&w.app, "demo").await;
    stop.store(true, Ordering::SeqCst);
    rewriter.join().unwrap();
    assert!(rewrites.load(Ordering::SeqCst) > 0);
    assert_eq!(
        (status, &body),
        (500, &json!({"error": "failed to copy plugin to container"}))
    );
    // The previous version, whole, and its receipt.
    let files = w
        .container
        .sh("cd /configs/plugins/demo && find . -type f | sort");
    assert_eq!(
        files,
        "./only-in-1.0.0.txt\n./plugin.yaml\n./rules/style.md\n./skills/helper/SKILL.md"
    );
    assert_eq!(w.container.sh("ls -A /configs/plugins"), "demo");
    let (_, list) = w
        .app
        .call(
            Method::GET,
            "/workspaces/ws-1/plugins",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(list[0]["digest"], first["digest"], "{list}");

    // Left alone, the same tree installs, and its receipt is its digest.
    let (status, second) = super::install(&w.app, "demo").await;
    assert_eq!(
        (status, second["status"].as_str()),
        (200, Some("installed"))
    );
    assert_ne!(second["digest"], first["digest"]);
    assert_eq!(
        w.container.sh("wc -c < /configs/plugins/demo/big.bin"),
        (4 << 20).to_string()
    );
}
