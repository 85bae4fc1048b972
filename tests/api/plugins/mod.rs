//! Install, uninstall, installed list and compatibility over HTTP against
//! a real Docker engine (a busybox test container per test).

#[path = "../support/mod.rs"]
mod support;

mod faults;
mod install;
mod uninstall;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use support::app::{Options, TestApp, spawn_app_with};
use support::docker::TestContainer;

/// A plugin registry in a temp dir; tests write the plugins they need.
pub struct Registry {
    pub dir: tempfile::TempDir,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// Writes `files` (relative path, content) as plugin `name`.
    pub fn plugin(&self, name: &str, files: &[(&str, &str)]) -> &Self {
        let root = self.dir.path().join(name);
        let _ = std::fs::remove_dir_all(&root);
        for (rel, content) in files {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        self
    }

    /// Copies a directory tree in as plugin `name`.
    pub fn copy_plugin(&self, name: &str, from: &Path) -> &Self {
        let status = std::process::Command::new("cp")
            .arg("-r")
            .arg(from)
            .arg(self.dir.path().join(name))
            .status()
            .unwrap();
        assert!(status.success());
        self
    }
}

/// The app with a test registry and short restart delay, plus a workspace
/// `ws-1` bound to a fresh running container.
pub struct World {
    pub app: TestApp,
    pub registry: Registry,
    pub container: TestContainer,
}

pub async fn world_with(registry: Registry, restart_delay: &str, extra_args: &[&str]) -> World {
    let container = TestContainer::running();
    let mut args: Vec<String> = vec![
        "--plugin-restart-delay".into(),
        restart_delay.into(),
        "--plugin-engine-timeout".into(),
        "5s".into(),
    ];
    args.extend(extra_args.iter().map(|s| s.to_string()));
    let app = spawn_app_with(Options {
        plugins_dir: Some(registry.path()),
        extra_args: args,
        ..Options::default()
    })
    .await;
    app.create_workspace(
        "ws-1",
        json!({"name": "Agent", "runtime": "claude-code", "container": container.name}),
    )
    .await;
    World {
        app,
        registry,
        container,
    }
}

/// Restarts are pushed an hour out, so the container never restarts
/// under a test that does not watch for it (pending restarts run at
/// shutdown, after the test).
pub async fn world(registry: Registry) -> World {
    world_with(registry, "1h", &[]).await
}

/// Restarts 300 ms after the last operation, for tests that assert them.
pub async fn world_restarting(registry: Registry) -> World {
    world_with(registry, "300ms", &[]).await
}

/// `POST /workspaces/ws-1/plugins` with `source`, as the admin.
pub async fn install(app: &TestApp, source: &str) -> (u16, serde_json::Value) {
    app.call(
        reqwest::Method::POST,
        "/workspaces/ws-1/plugins",
        Some(support::app::ADMIN_TOKEN),
        Some(json!({ "source": source })),
    )
    .await
}

/// Waits until the container's start time differs from `before` and it
/// runs again.
pub async fn wait_for_restart(container: &TestContainer, before: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if container.inspect("{{.State.StartedAt}}") != before
            && container.inspect("{{.State.Running}}") == "true"
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Lets any debounced restart fire (or not) before the next assertion.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

/// Every entry under `dir` with `uid:gid`, one per line, sorted.
pub fn owners(container: &TestContainer, dir: &str) -> Vec<String> {
    let out = container.exec_output(&["find", dir, "-exec", "stat", "-c", "%u:%g %n", "{}", "+"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    lines
}
