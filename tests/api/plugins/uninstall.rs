use reqwest::Method;
use serde_json::json;

use super::{Registry, world, world_restarting};
use crate::support::app::ADMIN_TOKEN;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/memory-blocks");
const SUPERPOWERS: &str = "molecule-ai-plugin-superpowers";
const CAREFUL: &str = "molecule-ai-plugin-molecule-careful-bash";

fn fixture_registry() -> Registry {
    let registry = Registry::new();
    for name in [SUPERPOWERS, CAREFUL] {
        registry.copy_plugin(
            name,
            &std::path::Path::new(FIXTURES).join("plugins").join(name),
        );
    }
    registry
}

async fn uninstall(w: &super::World, name: &str) -> (u16, serde_json::Value) {
    w.app
        .call(
            Method::DELETE,
            &format!("/workspaces/ws-1/plugins/{name}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_restores_claude_md_byte_for_byte_removes_skills_and_keeps_owner_and_mode() {
    let mut w = world_restarting(fixture_registry()).await;
    for name in [SUPERPOWERS, CAREFUL] {
        let (status, body) = super::install(&w.app, name).await;
        assert_eq!(status, 200, "{body}");
    }
    w.restarts_done().await;
    // What the runtime wrote at start-up: CLAUDE.md with both plugins'
    // blocks (the real fixture), and the skills it copied out.
    let before = std::fs::read(format!("{FIXTURES}/CLAUDE.before.md")).unwrap();
    let expected = std::fs::read(format!(
        "{FIXTURES}/CLAUDE.after-uninstall-{SUPERPOWERS}.md"
    ))
    .unwrap();
    let staged = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(staged.path(), &before).unwrap();
    crate::support::docker::docker(&[
        "cp",
        staged.path().to_str().unwrap(),
        &format!("{}:/configs/CLAUDE.md", w.container.name),
    ]);
    w.container.sh(
        "chown 1000:1000 /configs/CLAUDE.md && chmod 640 /configs/CLAUDE.md && \
         mkdir -p /configs/skills/writing-plans /configs/skills/executing-plans /configs/skills/keep-me && \
         touch /configs/skills/writing-plans/SKILL.md && chown -R 1000:1000 /configs/skills",
    );

    let (status, body) = uninstall(&w, SUPERPOWERS).await;
    assert_eq!(
        (status, body),
        (200, json!({"status": "uninstalled", "plugin": SUPERPOWERS}))
    );
    // Looked at once the restart is over: an exec racing the restart
    // would be killed with it.
    w.restarted_once().await;
    assert_eq!(
        w.container.cat("/configs/CLAUDE.md"),
        expected,
        "CLAUDE.md round-trips byte for byte"
    );
    assert_eq!(
        w.container.sh("stat -c '%u:%g %a' /configs/CLAUDE.md"),
        "1000:1000 640"
    );
    assert_eq!(w.container.sh("ls /configs/skills"), "keep-me");
    assert_eq!(w.container.sh("ls -A /configs/plugins"), CAREFUL);
    let (_, list) = w
        .app
        .call(
            Method::GET,
            "/workspaces/ws-1/plugins",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_deleted_plugin_still_uninstalls() {
    let w = world(fixture_registry()).await;
    super::install(&w.app, CAREFUL).await;
    w.container.sh(&format!(
        "rm -f /configs/plugins/{CAREFUL}/plugin.yaml /configs/plugins/{CAREFUL}/*.md"
    ));
    let (status, _) = uninstall(&w, CAREFUL).await;
    assert_eq!(status, 200);
    assert_eq!(w.container.sh("ls -A /configs/plugins"), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_refusals_say_why() {
    let w = world(Registry::new()).await;
    assert_eq!(
        uninstall(&w, "absent").await,
        (404, json!({"error": "plugin \"absent\" is not installed"}))
    );
    // (`..` itself never reaches the server: HTTP clients normalize it away.)
    assert_eq!(uninstall(&w, &"n".repeat(129)).await.0, 400);
    assert_eq!(uninstall(&w, "a%5Cb").await.0, 400);
    assert_eq!(uninstall(&w, "a%01b").await.0, 400);
    w.app
        .create_workspace("ext", json!({"name": "Remote", "runtime": "external"}))
        .await;
    let (status, body) = w
        .app
        .call(
            Method::DELETE,
            "/workspaces/ext/plugins/demo",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        body["error"],
        "plugin uninstall via docker exec is not supported for external runtimes"
    );
    assert_eq!(
        body["hint"],
        "external workspaces manage their own plugin directory; remove it locally"
    );
}
