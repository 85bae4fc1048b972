//! Install and uninstall events (SPEC §11) against a real container: each
//! success is written with its receipt change, so a failing receipt write
//! leaves no event; an unchanged re-install is an event of its own.

use reqwest::Method;
use serde_json::Value;

use super::{Registry, install, world};
use crate::support::app::ADMIN_TOKEN;

fn hello(registry: &Registry) {
    registry.plugin("hello", &[("plugin.yaml", "name: hello\nversion: 1.0.0\n")]);
}

async fn uninstall(app: &crate::support::app::TestApp) -> (u16, Value) {
    app.call(
        Method::DELETE,
        "/workspaces/ws-1/plugins/hello",
        Some(ADMIN_TOKEN),
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_unchanged_and_uninstall_are_events_with_source_and_digest() {
    let registry = Registry::new();
    hello(&registry);
    let w = world(registry).await;
    let (status, installed) = install(&w.app, "hello").await;
    assert_eq!(status, 200, "{installed}");
    let (status, again) = install(&w.app, "hello").await;
    assert_eq!((status, again["status"].as_str()), (200, Some("unchanged")));
    let (status, body) = uninstall(&w.app).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = uninstall(&w.app).await;
    assert_eq!(status, 404, "{body}");

    let (_, page) = w.app.admin_get("/audit?plugin=hello").await;
    let got: Vec<(&str, &str, i64, &str, &str)> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
                e["status"].as_i64().unwrap(),
                e["source"].as_str().unwrap_or("-"),
                e["digest"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    let digest = installed["digest"].as_str().unwrap();
    assert_eq!(
        got,
        [
            ("uninstall", "failed", 404, "-", "-"),
            ("uninstall", "ok", 200, "local://hello", digest),
            ("install", "unchanged", 200, "local://hello", digest),
            ("install", "ok", 200, "local://hello", digest),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receipt_write_leaves_no_event_of_the_install_or_the_uninstall() {
    let registry = Registry::new();
    hello(&registry);
    let w = world(registry).await;
    let before = w.app.audit_rows().await.len();
    w.app.store.set_receipt_writes_broken(true);
    // The plugin is placed and removed all the same (a lost receipt is not
    // fatal), but neither event is written without its receipt change.
    let (status, body) = install(&w.app, "hello").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        w.container.cat("/configs/plugins/hello/plugin.yaml"),
        b"name: hello\nversion: 1.0.0\n"
    );
    let (status, body) = uninstall(&w.app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        w.app.audit_rows().await.len(),
        before,
        "no event without its receipt"
    );

    w.app.store.set_receipt_writes_broken(false);
    let (status, _) = install(&w.app, "hello").await;
    assert_eq!(status, 200);
    assert_eq!(
        w.app.audit_summary().await[0],
        ("install".to_owned(), "ok".to_owned(), 200)
    );
}
