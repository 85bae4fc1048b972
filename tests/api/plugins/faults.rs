use reqwest::Method;
use serde_json::json;

use super::{Registry, World, world};
use crate::support::app::{ADMIN_TOKEN, Options, json, spawn_app_with};
use crate::support::docker::{EngineProxy, ProxyMode, TestContainer};

fn big_plugin(registry: &Registry, name: &str, marker: &str) {
    let payload = "x".repeat(4 * 1024 * 1024);
    registry.plugin(
        name,
        &[
            ("plugin.yaml", "version: 1.0.0\n"),
            ("marker.txt", marker),
            ("blob.bin", &payload),
        ],
    );
}

/// An app of its own (own database) on the same registry, whose engine
/// calls go through `docker_host` with `engine_timeout`.
async fn app_via(
    registry: &Registry,
    docker_host: &str,
    engine_timeout: &str,
    extra: &[&str],
) -> crate::support::app::TestApp {
    let mut args = vec![
        "--docker-host".to_owned(),
        docker_host.to_owned(),
        "--plugin-engine-timeout".into(),
        engine_timeout.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    spawn_app_with(Options {
        plugins_dir: Some(registry.path()),
        extra_args: args,
        ..Options::default()
    })
    .await
}

/// A workspace with plugin `big` v1 installed, and v2 in the registry.
async fn v1_installed_v2_waiting() -> World {
    let registry = Registry::new();
    big_plugin(&registry, "big", "v1");
    let w = world(registry).await;
    assert_eq!(super::install(&w.app, "big").await.0, 200);
    big_plugin(&w.registry, "big", "v2");
    w
}

async fn bind_workspace(app: &crate::support::app::TestApp, container: &TestContainer) {
    app.create_workspace(
        "ws-1",
        json!({"name": "A", "runtime": "x", "container": container.name}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_engine_is_503_engine_unavailable_with_retry_after_and_not_ready() {
    let registry = Registry::new();
    registry.plugin("demo", &[("plugin.yaml", "version: 1.0.0\n")]);
    let container = TestContainer::running();
    let app = app_via(&registry, "unix:///nonexistent/docker.sock", "1s", &[]).await;
    bind_workspace(&app, &container).await;
    let resp = app
        .req(Method::POST, "/workspaces/ws-1/plugins", Some(ADMIN_TOKEN))
        .json(&json!({"source": "demo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["retry-after"], "5");
    assert_eq!(
        json(resp).await,
        (503, json!({"error": "container engine unavailable"}))
    );
    for path in [
        "/workspaces/ws-1/plugins",
        "/workspaces/ws-1/plugins/compatibility?runtime=x",
    ] {
        let (status, body) = app.call(Method::GET, path, Some(ADMIN_TOKEN), None).await;
        assert_eq!(
            (status, body),
            (503, json!({"error": "container engine unavailable"})),
            "{path}"
        );
    }
    let (status, body) = app
        .call(
            Method::DELETE,
            "/workspaces/ws-1/plugins/demo",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(
        (status, body),
        (503, json!({"error": "container engine unavailable"})),
        "never treated as stopped"
    );
    let (status, body) = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (status, body),
        (
            503,
            json!({"database": "ok", "container_engine": "unavailable", "shutting_down": false})
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_engine_is_unknown_not_stopped() {
    let registry = Registry::new();
    registry.plugin("demo", &[("plugin.yaml", "version: 1.0.0\n")]);
    let container = TestContainer::running();
    let proxy = EngineProxy::start(ProxyMode::Stall).await;
    let app = app_via(&registry, &proxy.docker_host(), "1s", &[]).await;
    bind_workspace(&app, &container).await;
    let (status, body) = super::install(&app, "demo").await;
    assert_eq!(
        (status, body),
        (503, json!({"error": "container engine unavailable"}))
    );
    assert_eq!(container.sh("ls -A /configs/plugins"), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_mid_copy_leaves_the_previous_version_intact() {
    let w = v1_installed_v2_waiting().await;
    // Small calls pass; the 4 MiB upload is cut after 1 MiB.
    let proxy = EngineProxy::start(ProxyMode::DropAfter(1024 * 1024)).await;
    let faulty = app_via(&w.registry, &proxy.docker_host(), "1s", &[]).await;
    bind_workspace(&faulty, &w.container).await;
    let (status, body) = super::install(&faulty, "big").await;
    // A cut connection is the engine going away (503), not a copy that
    // the engine refused (500); the body carries no internal detail.
    assert_eq!(
        (status, body),
        (503, json!({"error": "container engine unavailable"}))
    );
    assert_eq!(
        w.container.cat("/configs/plugins/big/marker.txt"),
        b"v1",
        "the previous version stays"
    );
    // The next operation cleans the half-copied staging directory.
    let (status, _) = super::install(&w.app, "big").await;
    assert_eq!(status, 200);
    assert_eq!(w.container.cat("/configs/plugins/big/marker.txt"), b"v2");
    assert_eq!(w.container.sh("ls -A /configs/plugins"), "big");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_firing_mid_copy_is_504_and_the_previous_version_stays() {
    let w = v1_installed_v2_waiting().await;
    // The engine answers small calls, then stops answering mid-upload;
    // the install deadline (2 s) is shorter than the engine timeout (10 s).
    let proxy = EngineProxy::start(ProxyMode::StallAfter(1024 * 1024)).await;
    let slow = app_via(
        &w.registry,
        &proxy.docker_host(),
        "10s",
        &["--plugin-install-fetch-timeout", "2s"],
    )
    .await;
    bind_workspace(&slow, &w.container).await;
    let (status, body) = super::install(&slow, "big").await;
    assert_eq!(
        (status, body),
        (
            504,
            json!({"error": "plugin install timed out", "source": "local://big"})
        )
    );
    // The daemon holds the container while an upload is open: closing the
    // stalled connection (as a dead peer's would be) releases it.
    drop(slow);
    drop(proxy);
    assert_eq!(w.container.cat("/configs/plugins/big/marker.txt"), b"v1");
    let listing = w.container.sh("ls /configs/plugins");
    assert_eq!(listing, "big", "only the old version is visible");
}
