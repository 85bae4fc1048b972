//! Install, uninstall, installed list and compatibility over HTTP against
//! a real Docker engine (a busybox test container per test).

mod audit;
mod faults;
mod install;
mod provenance;
mod uninstall;
mod updates;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use tokio::sync::broadcast;
use workspace_plugins::app::restart::{RestartEvent, RestartOutcome};
use workspace_plugins::domain::name::WorkspaceId;

use crate::support;
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
/// `ws-1` bound to a fresh running container, and its restarts as the app
/// reports them.
pub struct World {
    pub app: TestApp,
    pub registry: Registry,
    pub container: TestContainer,
    restarts: broadcast::Receiver<RestartEvent>,
    /// The container's start time as of the last restart looked at.
    started: String,
}

pub async fn world_with(registry: Registry, restart_delay: &str, extra_args: &[&str]) -> World {
    let container = TestContainer::running();
    let started = container.inspect("{{.State.StartedAt}}");
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
    let restarts = app.use_cases.restarts().subscribe();
    app.create_workspace(
        "ws-1",
        json!({"name": "Agent", "runtime": "claude-code", "container": container.name}),
    )
    .await;
    World {
        app,
        registry,
        container,
        restarts,
        started,
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

impl World {
    fn workspace() -> WorkspaceId {
        WorkspaceId::parse("ws-1").unwrap()
    }

    /// The next restart of `ws-1` the app reports, once it has ended.
    async fn next_restart(&mut self) -> RestartOutcome {
        let next = async {
            loop {
                match self.restarts.recv().await {
                    Ok(event) if event.workspace == Self::workspace() => return event.outcome,
                    Ok(_) => {}
                    Err(e) => panic!("restart events: {e}"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), next)
            .await
            .expect("a restart of ws-1 within 30 s")
    }

    /// Waits for `ws-1`'s restart, then checks it was the only one: none
    /// other was reported, none is still to come, and the engine shows the
    /// container started anew and running.
    pub async fn restarted_once(&mut self) {
        assert_eq!(self.next_restart().await, RestartOutcome::Done);
        self.nothing_more_to_come();
        let started = self.container.inspect("{{.State.StartedAt}}");
        assert_ne!(started, self.started, "the container was started anew");
        assert_eq!(self.container.inspect("{{.State.Running}}"), "true");
        self.started = started;
    }

    /// Waits until every restart of `ws-1` asked for so far is done, for
    /// tests that do not pin how many it took.
    pub async fn restarts_done(&mut self) {
        assert_eq!(self.next_restart().await, RestartOutcome::Done);
        while self
            .app
            .use_cases
            .restarts()
            .restart_pending(&Self::workspace())
        {
            assert_eq!(self.next_restart().await, RestartOutcome::Done);
        }
        self.started = self.container.inspect("{{.State.StartedAt}}");
    }

    /// No restart of `ws-1` happened since the last one looked at, and
    /// none is to come (the app decides before it answers).
    pub fn no_restart(&mut self) {
        self.nothing_more_to_come();
        assert_eq!(
            self.container.inspect("{{.State.StartedAt}}"),
            self.started,
            "the engine saw no restart"
        );
    }

    /// No restart was reported since the last one looked at, and none is
    /// pending or under way.
    fn nothing_more_to_come(&mut self) {
        assert!(
            !self
                .app
                .use_cases
                .restarts()
                .restart_pending(&Self::workspace()),
            "a restart of ws-1 is still to come"
        );
        match self.restarts.try_recv() {
            Err(broadcast::error::TryRecvError::Empty) => {}
            other => panic!("unexpected restart: {other:?}"),
        }
    }
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
