//! `DockerEngine` against the real Docker engine (SPEC §5 "Engine calls",
//! "In-container layout", §6): container state, readiness and restarts
//! (`ContainerEngine`), and every intent in the agent's `/configs`
//! (`WorkspaceConfigs`): deliver, is-installed, list, read a plugin's
//! memory, remove. The agent is untrusted: what it plants under `/configs`
//! must never lead the adapter outside it or past the agent's own rights.
//! Verification goes through the `docker` CLI, not the adapter. Needs a
//! running engine (`bash scripts/services.sh`); fails, never skips,
//! without one.

use crate::support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::docker::{
    EngineProxy, ProxyMode, TestContainer, docker_output, engine, require_docker, unique_name,
};
use workspace_plugins::adapters::docker::DockerEngine;
use workspace_plugins::domain::name::PluginName;
use workspace_plugins::domain::workspace::ContainerName;
use workspace_plugins::ports::container::{
    ConfigsError, ContainerEngine, ContainerId, ContainerState, DeliveryError, EngineError,
    MemoryFile, Removal, RemovalError, WorkspaceConfigs,
};

/// The adapter's bound on plugin directories per listing
/// (`configs::MAX_INSTALLED`).
const MAX_INSTALLED: usize = 1000;
/// The adapter's bound on `plugin.yaml` (`MANIFEST_MAX_BYTES`).
const MANIFEST_MAX: usize = 256 * 1024;
/// The adapter's bound on `/configs/CLAUDE.md` (`MEMORY_FILE_MAX_BYTES`).
const MEMORY_FILE_MAX: usize = 8 * 1024 * 1024;
/// The adapter's bound on one memory source (`SOURCE_MAX_BYTES`).
const SOURCE_MAX: usize = 1024 * 1024;

fn cid(c: &TestContainer) -> ContainerId {
    ContainerId::new(c.id.clone())
}

fn name(s: &str) -> PluginName {
    PluginName::parse(s).unwrap()
}

/// Runs a constant shell script as the agent (1000:1000), as the agent
/// itself would plant things; its stdout.
fn agent_sh(c: &TestContainer, script: &str) -> String {
    let out = docker_output(&["exec", "-u", "1000:1000", &c.name, "sh", "-c", script]);
    assert!(
        out.status.success(),
        "{script:?} failed as the agent: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
}

/// Whether a path exists (or is a dangling symlink) in the container.
fn exists(c: &TestContainer, path: &str) -> bool {
    c.exec_output(&["sh", "-c", "[ -e \"$1\" ] || [ -L \"$1\" ]", "sh", path])
        .status
        .success()
}

/// A digest of the container's filesystem outside `/configs` (names,
/// kinds, sizes, owners, modes, mtimes, and the bytes of regular files),
/// `/proc`, `/sys` and `/dev` excluded.
fn outside_configs(c: &TestContainer) -> String {
    c.sh(r#"prune='( -path /proc -o -path /sys -o -path /dev -o -path /configs ) -prune -o'
{ find / $prune -exec stat -c '%n|%F|%s|%u:%g|%a|%Y' {} + ; find / $prune -type f -exec md5sum {} + ; } | sort | md5sum"#)
}

/// A plugin-like tree: nested directories, an empty one, an executable
/// script, and a binary file large enough to span many stream chunks.
fn plugin_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("skills/review")).unwrap();
    fs::create_dir_all(root.join("rules")).unwrap();
    fs::create_dir_all(root.join("adapters/empty")).unwrap();
    fs::write(root.join("plugin.yaml"), "name: demo\nversion: 1.0.0\n").unwrap();
    fs::write(root.join("rules/always.md"), "Be careful.\n").unwrap();
    fs::write(
        root.join("skills/review/SKILL.md"),
        "---\nname: review\n---\n",
    )
    .unwrap();
    fs::write(root.join("adapters/install.sh"), "#!/bin/sh\necho ok\n").unwrap();
    fs::set_permissions(
        root.join("adapters/install.sh"),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(root.join("data.bin"), blob).unwrap();
    dir
}

/// A small tree of the given files.
fn tree_of(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let full = dir.path().join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, content).unwrap();
    }
    dir
}

/// Every path under `root`, relative, sorted, directories with a `/`.
fn local_listing(root: &Path) -> Vec<String> {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(root.join(rel)).unwrap() {
            let entry = entry.unwrap();
            let rel = rel.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                out.push(format!("{}/", rel.display()));
                walk(root, &rel, out);
            } else {
                out.push(rel.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, Path::new(""), &mut out);
    out.sort();
    out
}

/// The same listing of a directory in the container.
fn remote_listing(c: &TestContainer, dir: &str) -> Vec<String> {
    let listing = c.exec_output(&[
        "sh",
        "-c",
        "cd \"$1\" && find . -mindepth 1 -type d | sed 's|$|/|' && find . ! -type d",
        "sh",
        dir,
    ]);
    assert!(listing.status.success(), "listing {dir}");
    let mut out: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").to_owned())
        .collect();
    out.sort();
    out
}

/// The container's plugin directory holds exactly the local tree, byte
/// for byte.
fn assert_delivered(c: &TestContainer, local: &Path, remote: &str) {
    let listing = remote_listing(c, remote);
    assert_eq!(listing, local_listing(local), "{remote}");
    for file in listing.iter().filter(|p| !p.ends_with('/')) {
        assert!(
            c.cat(&format!("{remote}/{file}")) == fs::read(local.join(file)).unwrap(),
            "{remote}/{file} differs"
        );
    }
}

fn assert_unavailable<T: std::fmt::Debug>(result: Result<T, EngineError>) {
    assert!(
        matches!(result, Err(EngineError::Unavailable(_))),
        "expected Unavailable, got {result:?}"
    );
}

fn is_unavailable(e: &ConfigsError) -> bool {
    matches!(e, ConfigsError::Engine(EngineError::Unavailable(_)))
}

fn is_not_running(e: &ConfigsError) -> bool {
    matches!(e, ConfigsError::Engine(EngineError::NotRunning))
}

// --- state -------------------------------------------------------------

#[tokio::test]
async fn running_container_is_running_with_its_engine_id() {
    let c = TestContainer::running();
    let engine = engine();
    engine.ping().await.expect("ping");
    assert_eq!(
        engine.state(&c.container_name()).await,
        ContainerState::Running { id: cid(&c) }
    );
}

#[tokio::test]
async fn created_but_not_started_container_is_stopped() {
    let c = TestContainer::created();
    assert_eq!(
        engine().state(&c.container_name()).await,
        ContainerState::Stopped
    );
}

#[tokio::test]
async fn nonexistent_container_is_stopped() {
    require_docker();
    let name = ContainerName::parse(&unique_name()).unwrap();
    assert_eq!(engine().state(&name).await, ContainerState::Stopped);
}

#[tokio::test]
async fn paused_container_is_not_running() {
    let c = TestContainer::running();
    support::docker::docker(&["pause", &c.name]);
    assert_eq!(
        engine().state(&c.container_name()).await,
        ContainerState::Stopped
    );
}

// --- an engine that cannot answer ---------------------------------------

#[tokio::test]
async fn missing_engine_socket_is_unknown_never_stopped() {
    let engine =
        DockerEngine::new(Some("unix:///nonexistent.sock"), Duration::from_secs(5)).unwrap();
    let name = ContainerName::parse("ws-0123456789ab").unwrap();
    let container = ContainerId::new("abc");
    assert_eq!(engine.state(&name).await, ContainerState::Unknown);
    assert_unavailable(engine.ping().await);
    assert_unavailable(engine.restart(&container).await);
    let tree = plugin_tree();
    let delivered = engine.deliver(&container, &name_demo(), tree.path()).await;
    assert!(
        matches!(&delivered, Err(DeliveryError::NotPlaced(e)) if is_unavailable(e)),
        "{delivered:?}"
    );
    let listed = engine.installed(&container).await;
    assert!(matches!(&listed, Err(e) if is_unavailable(e)), "{listed:?}");
}

fn name_demo() -> PluginName {
    name("demo")
}

#[tokio::test]
async fn refused_engine_port_is_unknown_never_stopped() {
    let engine = DockerEngine::new(Some("tcp://127.0.0.1:1"), Duration::from_secs(5)).unwrap();
    let name = ContainerName::parse("ws-0123456789ab").unwrap();
    let container = ContainerId::new("abc");
    assert_eq!(engine.state(&name).await, ContainerState::Unknown);
    assert_unavailable(engine.ping().await);
    let read = engine.read_plugin_memory(&container, &name_demo()).await;
    assert!(matches!(&read, Err(e) if is_unavailable(e)), "{read:?}");
    let removed = engine.remove(&container, &removal("demo", None, &[])).await;
    assert!(
        matches!(&removed, Err(RemovalError::Configs(e)) if is_unavailable(e)),
        "{removed:?}"
    );
}

#[tokio::test]
async fn stalled_engine_is_unknown_within_the_call_timeout() {
    require_docker();
    let proxy = EngineProxy::start(ProxyMode::Stall).await;
    let timeout = Duration::from_millis(500);
    let engine = DockerEngine::new(Some(&proxy.docker_host()), timeout).unwrap();
    let name = ContainerName::parse("ws-0123456789ab").unwrap();
    let container = ContainerId::new("abc");

    let started = Instant::now();
    assert_eq!(engine.state(&name).await, ContainerState::Unknown);
    let took = started.elapsed();
    assert!(
        took >= timeout && took < timeout * 4,
        "state took {took:?} with a {timeout:?} call timeout"
    );

    let tree = plugin_tree();
    let started = Instant::now();
    let delivered = engine.deliver(&container, &name_demo(), tree.path()).await;
    assert!(
        matches!(&delivered, Err(DeliveryError::NotPlaced(e)) if is_unavailable(e)),
        "{delivered:?}"
    );
    assert!(
        started.elapsed() < timeout * 4,
        "deliver took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let checked = engine.is_installed(&container, &name_demo()).await;
    assert!(
        matches!(&checked, Err(e) if is_unavailable(e)),
        "{checked:?}"
    );
    assert!(started.elapsed() < timeout * 4);
    assert_unavailable(engine.ping().await);
    assert!(proxy.connections() >= 4, "the calls did reach the proxy");
}

// --- through a proxy ---------------------------------------------------

#[tokio::test]
async fn engine_behind_a_forwarding_proxy_works() {
    let c = TestContainer::running();
    let proxy = EngineProxy::start(ProxyMode::Forward).await;
    let engine = DockerEngine::new(Some(&proxy.docker_host()), Duration::from_secs(30)).unwrap();

    engine.ping().await.expect("ping through the proxy");
    assert_eq!(
        engine.state(&c.container_name()).await,
        ContainerState::Running { id: cid(&c) }
    );
    // Execs upgrade the connection and stream stdin: both must survive
    // the proxy.
    let tree = plugin_tree();
    engine
        .deliver(&cid(&c), &name_demo(), tree.path())
        .await
        .unwrap();
    assert_delivered(&c, tree.path(), "/configs/plugins/demo");
    let listed = engine.installed(&cid(&c)).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].manifest_yaml.as_deref(),
        Some(&b"name: demo\nversion: 1.0.0\n"[..])
    );
    assert!(proxy.connections() >= 3);
}

#[tokio::test]
async fn a_delivery_cut_mid_stream_leaves_the_old_version_whole() {
    let c = TestContainer::running();
    let old = tree_of(&[("plugin.yaml", "version: 1\n"), ("rules/old.md", "old\n")]);
    engine()
        .deliver(&cid(&c), &name_demo(), old.path())
        .await
        .unwrap();

    let proxy = EngineProxy::start(ProxyMode::DropAfter(64 * 1024)).await;
    let cut = DockerEngine::new(Some(&proxy.docker_host()), Duration::from_secs(30)).unwrap();
    // Small calls fit under the cut...
    assert_eq!(
        cut.state(&c.container_name()).await,
        ContainerState::Running { id: cid(&c) }
    );
    // ...a 300 KB tree does not.
    let new = plugin_tree();
    let delivered = cut.deliver(&cid(&c), &name_demo(), new.path()).await;
    // A cut connection is the engine failing, whether the seal was still
    // to be sent (not placed) or already written out (outcome unknown).
    assert!(
        matches!(
            &delivered,
            Err(DeliveryError::NotPlaced(e) | DeliveryError::Unknown(e)) if is_unavailable(e)
        ),
        "{delivered:?}"
    );
    // Without the seal the script never swaps: the old version, whole.
    assert_delivered(&c, old.path(), "/configs/plugins/demo");

    // The next delivery goes through and leaves no leftovers.
    engine()
        .deliver(&cid(&c), &name_demo(), new.path())
        .await
        .unwrap();
    assert_delivered(&c, new.path(), "/configs/plugins/demo");
    assert_eq!(c.sh("ls -A /configs/plugins"), "demo");
}

// --- deliver ---------------------------------------------------------------

/// `tree` staged in place by the local resolver, as an install stages a
/// registry plugin: with the fingerprint check it carries.
async fn staged_in_place(registry: &Path) -> workspace_plugins::ports::staging::InPlace {
    use workspace_plugins::adapters::fs::{LocalRegistry, LocalResolver};
    use workspace_plugins::ports::resolver::{FetchLimits, SourceResolver};
    let limits = FetchLimits {
        in_place: true,
        ..FetchLimits::new(1 << 30, 10_000)
    };
    let unused = tempfile::tempdir().unwrap();
    LocalResolver::new(LocalRegistry::new(registry))
        .fetch("demo", unused.path(), &limits)
        .await
        .unwrap()
        .tree
        .in_place
        .unwrap()
}

#[tokio::test]
async fn a_tree_read_in_place_is_placed_only_if_it_did_not_change_since_it_was_staged() {
    let c = TestContainer::running();
    let engine = engine();
    let old = tree_of(&[("plugin.yaml", "version: 1\n"), ("rules/old.md", "old\n")]);
    engine
        .deliver(&cid(&c), &name_demo(), old.path())
        .await
        .unwrap();
    let registry = tempfile::tempdir().unwrap();
    let plugin = registry.path().join("demo");
    fs::create_dir(&plugin).unwrap();
    fs::write(plugin.join("plugin.yaml"), "version: 2\n").unwrap();
    fs::write(plugin.join("data.bin"), vec![1u8; 300 * 1024]).unwrap();

    // Rewritten (same size) after it was staged and hashed: never placed.
    let place = staged_in_place(registry.path()).await;
    fs::write(plugin.join("data.bin"), vec![2u8; 300 * 1024]).unwrap();
    let delivered = engine
        .deliver_in_place(&cid(&c), &name_demo(), &place)
        .await;
    assert!(
        matches!(
            &delivered,
            Err(DeliveryError::NotPlaced(ConfigsError::Failed(_)))
        ),
        "{delivered:?}"
    );
    assert_delivered(&c, old.path(), "/configs/plugins/demo");
    assert_eq!(c.sh("ls -A /configs/plugins"), "demo", "no leftovers");

    // Unchanged since it was staged: placed from where it lies.
    let place = staged_in_place(registry.path()).await;
    engine
        .deliver_in_place(&cid(&c), &name_demo(), &place)
        .await
        .unwrap();
    assert_delivered(&c, &plugin, "/configs/plugins/demo");
    assert_eq!(c.sh("ls -A /configs/plugins"), "demo");
}

#[tokio::test]
async fn deliver_places_a_nested_tree_owned_by_the_agent_with_normalized_modes() {
    let c = TestContainer::running();
    let tree = plugin_tree();
    engine()
        .deliver(&cid(&c), &name_demo(), tree.path())
        .await
        .unwrap();

    assert_delivered(&c, tree.path(), "/configs/plugins/demo");
    let stats = c.sh("find /configs/plugins/demo -exec stat -c '%u:%g %a|%F|%n' {} +");
    for line in stats.lines() {
        let mut fields = line.splitn(3, '|');
        let (owner_mode, kind, path) = (
            fields.next().unwrap(),
            fields.next().unwrap(),
            fields.next().unwrap(),
        );
        let expected = if kind == "directory" || path.ends_with("install.sh") {
            "1000:1000 755"
        } else {
            "1000:1000 644"
        };
        assert_eq!(owner_mode, expected, "{path} ({kind})");
    }
    assert_eq!(stats.lines().count(), local_listing(tree.path()).len() + 1);
    assert_eq!(c.sh("ls -A /configs/plugins"), "demo", "no leftovers");
}

#[tokio::test]
async fn deliver_replaces_the_previous_version_with_no_stale_files_and_removes_leftovers() {
    let c = TestContainer::running();
    let engine = engine();
    let v1 = tree_of(&[
        ("plugin.yaml", "version: 1\n"),
        ("rules/gone-in-v2.md", "stale\n"),
        ("skills/a/SKILL.md", "a\n"),
    ]);
    engine
        .deliver(&cid(&c), &name_demo(), v1.path())
        .await
        .unwrap();
    // Leftovers of interrupted deliveries, of this plugin and another.
    agent_sh(
        &c,
        "cd /configs/plugins && mkdir -p .demo.staging-1/x .other.old-2 \
         && touch .demo.staging-1/x/f .demo.old-3 && ln -s / .other.staging-4",
    );
    let v2 = tree_of(&[
        ("plugin.yaml", "version: 2\n"),
        ("skills/b/SKILL.md", "b\n"),
    ]);
    engine
        .deliver(&cid(&c), &name_demo(), v2.path())
        .await
        .unwrap();
    assert_delivered(&c, v2.path(), "/configs/plugins/demo");
    assert_eq!(c.sh("ls -A /configs/plugins"), "demo");
}

#[tokio::test]
async fn deliver_over_a_symlinked_plugin_dir_replaces_the_link_and_leaves_its_target() {
    let c = TestContainer::running();
    agent_sh(
        &c,
        "mkdir -p /tmp/agent && echo mine > /tmp/agent/keep && ln -s /tmp/agent /configs/plugins/demo",
    );
    let before = outside_configs(&c);
    let tree = tree_of(&[("plugin.yaml", "version: 2\n")]);
    engine()
        .deliver(&cid(&c), &name_demo(), tree.path())
        .await
        .unwrap();
    assert_delivered(&c, tree.path(), "/configs/plugins/demo");
    assert_eq!(c.sh("ls -A /configs/plugins"), "demo");
    assert_eq!(outside_configs(&c), before, "/tmp/agent untouched");
}

#[tokio::test]
async fn deliver_into_a_container_whose_user_is_root_still_yields_agent_owned_files() {
    let c = TestContainer::create(&["--user", "0"], true);
    let tree = plugin_tree();
    engine()
        .deliver(&cid(&c), &name_demo(), tree.path())
        .await
        .unwrap();
    let owners = c.sh("find /configs/plugins -exec stat -c '%u:%g' {} + | sort -u");
    assert_eq!(owners, "1000:1000");
}

#[tokio::test]
async fn deliver_creates_a_missing_plugins_dir_as_the_agent() {
    let c = TestContainer::running();
    agent_sh(&c, "rm -rf /configs/plugins");
    let tree = tree_of(&[("plugin.yaml", "x: 1\n")]);
    engine()
        .deliver(&cid(&c), &name_demo(), tree.path())
        .await
        .unwrap();
    assert_eq!(
        c.sh("stat -c '%u:%g %a' /configs/plugins /configs/plugins/demo/plugin.yaml"),
        "1000:1000 755\n1000:1000 644"
    );
}

#[tokio::test]
async fn deliver_through_a_symlinked_plugins_dir_is_refused_and_writes_nothing() {
    let c = TestContainer::running();
    // A place the agent could write to itself: running as the agent is
    // not enough, the script must refuse to follow the symlink.
    agent_sh(
        &c,
        "mkdir /tmp/x && rm -rf /configs/plugins && ln -s /tmp/x /configs/plugins",
    );
    let before = outside_configs(&c);
    let tree = plugin_tree();
    let delivered = engine().deliver(&cid(&c), &name_demo(), tree.path()).await;
    assert!(
        matches!(
            &delivered,
            Err(DeliveryError::NotPlaced(ConfigsError::UnsafeLayout(_)))
        ),
        "{delivered:?}"
    );
    assert_eq!(c.sh("ls -A /tmp/x"), "");
    assert_eq!(
        outside_configs(&c),
        before,
        "nothing outside /configs changed"
    );
}

/// A field of /proc/self/status, in KiB.
fn proc_status_kib(field: &str) -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn deliver_streams_a_large_tree_in_bounded_memory() {
    const MIB: usize = 1024 * 1024;
    let c = TestContainer::running();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("big");
    fs::create_dir(&root).unwrap();
    let mut hasher = Sha256::new();
    let mut out = fs::File::create(root.join("model.bin")).unwrap();
    let mut chunk = vec![0u8; MIB];
    for n in 0..50 {
        for (i, b) in chunk.iter_mut().enumerate() {
            *b = (i % 253) as u8 ^ n as u8;
        }
        std::io::Write::write_all(&mut out, &chunk).unwrap();
        hasher.update(&chunk);
    }
    drop((out, chunk));
    let expected = hex::encode(hasher.finalize());

    // Reset the peak-RSS mark, so what the delivery adds to it shows: a
    // 50 MiB tree buffered whole would add at least 50 MiB.
    fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    let before = proc_status_kib("VmRSS:");
    engine()
        .deliver(&cid(&c), &name("big"), &root)
        .await
        .unwrap();
    let grew_kib = proc_status_kib("VmHWM:").saturating_sub(before);
    assert!(
        grew_kib < 20 * 1024,
        "peak memory grew by {grew_kib} KiB while delivering 50 MiB"
    );
    let remote = c.sh("sha256sum /configs/plugins/big/model.bin");
    assert_eq!(remote.split_whitespace().next(), Some(expected.as_str()));
}

#[tokio::test]
async fn deliver_refuses_local_symlinks_and_special_files_before_sending() {
    let c = TestContainer::running();
    let engine = engine();

    let tree = plugin_tree();
    std::os::unix::fs::symlink("/etc/shadow", tree.path().join("rules/leak.md")).unwrap();
    let delivered = engine.deliver(&cid(&c), &name_demo(), tree.path()).await;
    assert!(
        matches!(
            &delivered,
            Err(DeliveryError::NotPlaced(ConfigsError::Failed(_)))
        ),
        "{delivered:?}"
    );

    let tree = plugin_tree();
    let fifo = tree.path().join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let delivered = engine.deliver(&cid(&c), &name_demo(), tree.path()).await;
    assert!(
        matches!(
            &delivered,
            Err(DeliveryError::NotPlaced(ConfigsError::Failed(_)))
        ),
        "{delivered:?}"
    );
    assert_eq!(
        c.sh("ls -A /configs/plugins"),
        "",
        "nothing reached the container"
    );
}

// --- is_installed ------------------------------------------------------------

#[tokio::test]
async fn is_installed_is_true_only_for_a_real_plugin_directory() {
    let c = TestContainer::running();
    agent_sh(
        &c,
        "cd /configs/plugins && mkdir demo && touch file && ln -s demo linked \
         && ln -s /etc etc",
    );
    let engine = engine();
    for (plugin, expected) in [
        ("demo", true),
        ("file", false),
        ("linked", false),
        ("etc", false),
        ("missing", false),
    ] {
        let got = engine.is_installed(&cid(&c), &name(plugin)).await.unwrap();
        assert_eq!(got, expected, "{plugin}");
    }

    agent_sh(
        &c,
        "mv /configs/plugins /configs/real && ln -s real /configs/plugins",
    );
    let got = engine.is_installed(&cid(&c), &name_demo()).await;
    assert!(matches!(got, Err(ConfigsError::UnsafeLayout(_))), "{got:?}");
}

// --- installed -------------------------------------------------------------

#[tokio::test]
async fn installed_lists_plugin_dirs_sorted_with_their_manifests() {
    let c = TestContainer::running();
    agent_sh(
        &c,
        r#"cd /configs/plugins
mkdir zeta alpha beta .demo.staging-1 .hidden 'bad\name' "$(printf 'a\tb')" real
printf 'name: zeta\n' > zeta/plugin.yaml
printf 'name: alpha\n' > alpha/plugin.yaml
printf 'x: 1\n' > .demo.staging-1/plugin.yaml
printf 'x: 2\n' > 'bad\name/plugin.yaml'
ln -s real linked
ln -s /etc etc
touch not-a-dir
mkdir -p beta/nested && printf 'deep\n' > beta/nested/plugin.yaml"#,
    );
    let listed = engine().installed(&cid(&c)).await.unwrap();
    let seen: Vec<(&str, Option<&[u8]>)> = listed
        .iter()
        .map(|e| (e.name.as_str(), e.manifest_yaml.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            ("alpha", Some(&b"name: alpha\n"[..])),
            ("beta", None),
            ("real", None),
            ("zeta", Some(&b"name: zeta\n"[..])),
        ]
    );
}

#[tokio::test]
async fn installed_treats_a_fifo_a_symlink_or_an_oversized_plugin_yaml_as_no_manifest() {
    let c = TestContainer::running();
    agent_sh(
        &c,
        &format!(
            r#"cd /configs/plugins
mkdir fifo linked big edge ok
mkfifo fifo/plugin.yaml
ln -s /etc/passwd linked/plugin.yaml
{{ printf 'name: big\n'; head -c {big} /dev/zero | tr '\0' '#'; }} > big/plugin.yaml
{{ printf 'name: edge\n#'; head -c {edge} /dev/zero | tr '\0' '#'; }} > edge/plugin.yaml
printf 'name: ok\n' > ok/plugin.yaml"#,
            big = MANIFEST_MAX,
            // Exactly at the bound: still a manifest.
            edge = MANIFEST_MAX - "name: edge\n#".len(),
        ),
    );
    assert_eq!(
        c.sh("stat -c %s /configs/plugins/edge/plugin.yaml"),
        MANIFEST_MAX.to_string()
    );
    // A FIFO that were opened would block until the call timeout: the
    // answer would then be an error, not a listing.
    let listed = engine().installed(&cid(&c)).await.unwrap();
    let seen: Vec<(&str, Option<usize>)> = listed
        .iter()
        .map(|e| (e.name.as_str(), e.manifest_yaml.as_ref().map(Vec::len)))
        .collect();
    assert_eq!(
        seen,
        [
            ("big", None),
            ("edge", Some(MANIFEST_MAX)),
            ("fifo", None),
            ("linked", None),
            ("ok", Some(9)),
        ]
    );
}

#[tokio::test]
async fn installed_answers_too_large_past_the_bound_on_directories() {
    let c = TestContainer::running();
    agent_sh(
        &c,
        &format!(
            "cd /configs/plugins && i=0; while [ $i -lt {MAX_INSTALLED} ]; do mkdir p$i; i=$((i+1)); done"
        ),
    );
    let engine = engine();
    let listed = engine.installed(&cid(&c)).await.unwrap();
    assert_eq!(listed.len(), MAX_INSTALLED);

    agent_sh(&c, "mkdir /configs/plugins/one-more");
    let listed = engine.installed(&cid(&c)).await;
    assert!(
        matches!(listed, Err(ConfigsError::TooLarge(_))),
        "{listed:?}"
    );
}

#[tokio::test]
async fn installed_is_empty_without_a_plugins_dir_and_refuses_a_symlinked_one() {
    let c = TestContainer::running();
    agent_sh(&c, "rm -rf /configs/plugins");
    let engine = engine();
    assert!(engine.installed(&cid(&c)).await.unwrap().is_empty());

    agent_sh(
        &c,
        "mkdir -p /tmp/elsewhere/demo && ln -s /tmp/elsewhere /configs/plugins",
    );
    let listed = engine.installed(&cid(&c)).await;
    assert!(
        matches!(listed, Err(ConfigsError::UnsafeLayout(_))),
        "{listed:?}"
    );
}

#[tokio::test]
async fn a_plugin_yaml_the_agent_cannot_read_does_not_hide_the_other_plugins() {
    // A runtime running as root may have left one behind.
    let c = TestContainer::running();
    agent_sh(
        &c,
        "cd /configs/plugins && mkdir a b c && for p in a b c; do echo \"name: $p\" > $p/plugin.yaml; done",
    );
    c.sh("chown 0:0 /configs/plugins/b/plugin.yaml && chmod 600 /configs/plugins/b/plugin.yaml");
    let listed = engine().installed(&cid(&c)).await.unwrap();
    let seen: Vec<(&str, Option<&[u8]>)> = listed
        .iter()
        .map(|e| (e.name.as_str(), e.manifest_yaml.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            ("a", Some(&b"name: a\n"[..])),
            ("b", None),
            ("c", Some(&b"name: c\n"[..])),
        ]
    );
}

// --- read_plugin_memory ------------------------------------------------------

#[tokio::test]
async fn read_plugin_memory_returns_the_manifest_sorted_sources_and_claude_md_with_its_mode() {
    let c = TestContainer::running();
    agent_sh(
        &c,
        r#"cd /configs/plugins && mkdir -p demo/rules/nested demo/skills/x
cd demo
printf 'skills: [x]\n' > plugin.yaml
printf 'B\n' > rules/b.md
printf 'A\n' > rules/a.md
printf 'deep\n' > rules/nested/c.md
printf 'not md\n' > rules/notes.txt
printf 'frag\n' > CLAUDE.md
printf 'readme\n' > README.md
printf 'skill\n' > skills/x/SKILL.md
printf '# memory\n' > /configs/CLAUDE.md && chmod 640 /configs/CLAUDE.md"#,
    );
    let memory = engine()
        .read_plugin_memory(&cid(&c), &name_demo())
        .await
        .unwrap()
        .expect("installed");
    assert_eq!(memory.manifest_yaml.as_deref(), Some(&b"skills: [x]\n"[..]));
    let sources: Vec<(&str, &str)> = memory
        .sources
        .iter()
        .map(|s| (s.path.as_str(), s.content.as_str()))
        .collect();
    assert_eq!(
        sources,
        [
            ("CLAUDE.md", "frag\n"),
            ("rules/a.md", "A\n"),
            ("rules/b.md", "B\n")
        ]
    );
    assert_eq!(
        memory.memory_file,
        Some(MemoryFile {
            content: b"# memory\n".to_vec(),
            mode: 0o640
        })
    );
}

#[tokio::test]
async fn read_plugin_memory_of_a_plugin_that_is_not_installed_is_none() {
    let c = TestContainer::running();
    agent_sh(
        &c,
        "cd /configs/plugins && touch file && mkdir real && ln -s real linked",
    );
    let engine = engine();
    for plugin in ["missing", "file", "linked"] {
        let read = engine
            .read_plugin_memory(&cid(&c), &name(plugin))
            .await
            .unwrap();
        assert_eq!(read, None, "{plugin}");
    }
}

#[tokio::test]
async fn read_plugin_memory_ignores_symlinked_fifo_and_oversized_files() {
    let c = TestContainer::running();
    agent_sh(
        &c,
        &format!(
            r#"cd /configs/plugins && mkdir -p demo/rules && cd demo
ln -s /etc/passwd plugin.yaml
ln -s /etc/passwd rules/passwd.md
mkfifo rules/fifo.md
head -c {big_source} /dev/zero | tr '\0' 'x' > rules/big.md
printf 'kept\n' > rules/kept.md
ln -s /etc/passwd /configs/CLAUDE.md"#,
            big_source = SOURCE_MAX + 1,
        ),
    );
    let engine = engine();
    let memory = engine
        .read_plugin_memory(&cid(&c), &name_demo())
        .await
        .unwrap()
        .expect("installed");
    assert_eq!(memory.manifest_yaml, None);
    let paths: Vec<&str> = memory.sources.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["rules/kept.md"]);
    assert_eq!(memory.memory_file, None, "never /etc/passwd");

    // CLAUDE.md over its bound is left alone rather than read.
    agent_sh(
        &c,
        &format!(
            "rm /configs/CLAUDE.md && head -c {} /dev/zero | tr '\\0' 'x' > /configs/CLAUDE.md",
            MEMORY_FILE_MAX + 1
        ),
    );
    let memory = engine
        .read_plugin_memory(&cid(&c), &name_demo())
        .await
        .unwrap()
        .expect("installed");
    assert_eq!(memory.memory_file, None);
    assert_eq!(memory.sources.len(), 1);
}

#[tokio::test]
async fn a_memory_source_the_agent_cannot_read_does_not_stop_an_uninstall() {
    let c = TestContainer::running();
    agent_sh(
        &c,
        r#"cd /configs/plugins && mkdir -p demo/rules && cd demo
printf 'skills: [s]\n' > plugin.yaml
printf 'A\n' > rules/a.md
printf 'B\n' > rules/b.md
printf '# memory\n' > /configs/CLAUDE.md"#,
    );
    c.sh(
        "chown 0:0 /configs/plugins/demo/rules/a.md && chmod 600 /configs/plugins/demo/rules/a.md",
    );
    let memory = engine()
        .read_plugin_memory(&cid(&c), &name_demo())
        .await
        .unwrap()
        .expect("installed");
    assert_eq!(memory.manifest_yaml.as_deref(), Some(&b"skills: [s]\n"[..]));
    let paths: Vec<&str> = memory.sources.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["rules/b.md"]);
    assert!(memory.memory_file.is_some());
}

// --- remove ------------------------------------------------------------------

fn removal(plugin: &str, memory_file: Option<MemoryFile>, skills: &[&str]) -> Removal {
    Removal {
        plugin: name(plugin),
        memory_file,
        skills: skills.iter().map(|s| name(s)).collect(),
    }
}

#[tokio::test]
async fn remove_rewrites_claude_md_keeping_mode_and_owner_and_removes_only_the_named_skills() {
    let c = TestContainer::running();
    agent_sh(
        &c,
        r#"mkdir -p /configs/plugins/demo/rules /configs/skills/a /configs/skills/b /configs/skills/keep
touch /configs/skills/a/SKILL.md /configs/skills/keep/SKILL.md
printf 'old\n' > /configs/CLAUDE.md && chmod 640 /configs/CLAUDE.md
cd /configs/plugins && mkdir -p .demo.staging-1 && touch .other.old-2"#,
    );
    let memory = MemoryFile {
        content: b"user text\n".to_vec(),
        mode: 0o640,
    };
    engine()
        .remove(
            &cid(&c),
            &removal("demo", Some(memory), &["a", "b", "never-there"]),
        )
        .await
        .unwrap();
    assert_eq!(c.cat("/configs/CLAUDE.md"), b"user text\n");
    assert_eq!(
        c.sh("stat -c '%u:%g %a' /configs/CLAUDE.md"),
        "1000:1000 640"
    );
    assert_eq!(c.sh("ls -A /configs/skills"), "keep");
    assert_eq!(
        c.sh("ls -A /configs/plugins"),
        "",
        "the dir and the leftovers"
    );
    assert_eq!(
        c.sh("ls -A /configs"),
        "CLAUDE.md\nplugins\nskills",
        "no temporary file left"
    );
}

#[tokio::test]
async fn remove_without_a_new_memory_file_leaves_claude_md_alone() {
    let c = TestContainer::running();
    agent_sh(
        &c,
        "mkdir /configs/plugins/demo && printf 'keep\\n' > /configs/CLAUDE.md && chmod 600 /configs/CLAUDE.md",
    );
    let before = c.sh("stat -c '%i %Y %a' /configs/CLAUDE.md");
    engine()
        .remove(&cid(&c), &removal("demo", None, &[]))
        .await
        .unwrap();
    assert_eq!(c.sh("stat -c '%i %Y %a' /configs/CLAUDE.md"), before);
    assert!(!exists(&c, "/configs/plugins/demo"));
}

#[tokio::test]
async fn remove_replaces_a_symlinked_claude_md_and_never_writes_through_it() {
    let c = TestContainer::running();
    agent_sh(
        &c,
        "mkdir /configs/plugins/demo && ln -s /etc/passwd /configs/CLAUDE.md",
    );
    let before = outside_configs(&c);
    let memory = MemoryFile {
        content: b"rewritten\n".to_vec(),
        mode: 0o644,
    };
    let removed = engine()
        .remove(&cid(&c), &removal("demo", Some(memory), &[]))
        .await;
    assert_eq!(outside_configs(&c), before, "/etc/passwd untouched");
    assert!(removed.is_ok(), "{removed:?}");
    assert_eq!(
        c.sh("stat -c '%F %u:%g' /configs/CLAUDE.md"),
        "regular file 1000:1000"
    );
}

#[tokio::test]
async fn remove_with_skills_symlinked_to_root_leaves_etc_intact_and_is_an_error() {
    let c = TestContainer::running();
    agent_sh(
        &c,
        "rm -rf /configs/skills && ln -s / /configs/skills && mkdir /configs/plugins/demo",
    );
    let before = outside_configs(&c);
    let removed = engine()
        .remove(&cid(&c), &removal("demo", None, &["etc", "tmp", "bin"]))
        .await;
    assert_eq!(
        outside_configs(&c),
        before,
        "nothing outside /configs changed"
    );
    assert_eq!(c.sh("wc -l < /etc/passwd"), "2");
    assert!(
        matches!(
            removed,
            Err(RemovalError::Incomplete(_) | RemovalError::Configs(ConfigsError::UnsafeLayout(_)))
        ),
        "{removed:?}"
    );
}

#[tokio::test]
async fn remove_never_follows_a_symlinked_skills_dir_even_where_the_agent_could_delete() {
    // Running as the agent is not enough here: the script itself must
    // refuse to act through the symlink.
    let c = TestContainer::running();
    agent_sh(
        &c,
        "mkdir -p /tmp/agent/review && rm -rf /configs/skills \
         && ln -s /tmp/agent /configs/skills && mkdir /configs/plugins/demo",
    );
    let before = outside_configs(&c);
    let removed = engine()
        .remove(&cid(&c), &removal("demo", None, &["review"]))
        .await;
    assert!(
        matches!(
            removed,
            Err(RemovalError::Incomplete(_) | RemovalError::Configs(ConfigsError::UnsafeLayout(_)))
        ),
        "{removed:?}"
    );
    assert!(exists(&c, "/tmp/agent/review"));
    assert_eq!(outside_configs(&c), before);
}

#[tokio::test]
async fn root_owned_files_in_the_plugin_dir_make_remove_incomplete_and_harm_nothing() {
    let c = TestContainer::running();
    agent_sh(
        &c,
        "mkdir -p /configs/plugins/demo/cache && printf 'x\\n' > /configs/plugins/demo/plugin.yaml",
    );
    c.sh(
        "touch /configs/plugins/demo/cache/root-owned && chown -R 0:0 /configs/plugins/demo/cache",
    );
    let before = outside_configs(&c);
    let removed = engine().remove(&cid(&c), &removal("demo", None, &[])).await;
    assert!(
        matches!(removed, Err(RemovalError::Incomplete(_))),
        "{removed:?}"
    );
    assert_eq!(outside_configs(&c), before);
    assert_eq!(
        c.sh("find /configs/plugins/demo | sort"),
        "/configs/plugins/demo\n/configs/plugins/demo/cache\n/configs/plugins/demo/cache/root-owned",
        "the agent's own files went, the root-owned ones stayed"
    );
}

#[tokio::test]
async fn remove_of_a_plugin_that_is_not_installed_is_not_installed() {
    let c = TestContainer::running();
    agent_sh(
        &c,
        "touch /configs/plugins/file && mkdir /configs/real && ln -s ../real /configs/plugins/linked",
    );
    let engine = engine();
    for plugin in ["missing", "file", "linked"] {
        let removed = engine.remove(&cid(&c), &removal(plugin, None, &[])).await;
        assert!(
            matches!(removed, Err(RemovalError::NotInstalled)),
            "{plugin}: {removed:?}"
        );
    }
    assert!(exists(&c, "/configs/plugins/file"));
    assert!(exists(&c, "/configs/real"));
}

#[tokio::test]
async fn remove_through_a_symlinked_plugins_dir_is_refused() {
    let c = TestContainer::running();
    agent_sh(
        &c,
        "mkdir -p /tmp/x/demo && rm -rf /configs/plugins && ln -s /tmp/x /configs/plugins",
    );
    let removed = engine().remove(&cid(&c), &removal("demo", None, &[])).await;
    assert!(
        matches!(
            removed,
            Err(RemovalError::Configs(ConfigsError::UnsafeLayout(_)))
        ),
        "{removed:?}"
    );
    assert!(exists(&c, "/tmp/x/demo"));
}

// --- a container that is not running -------------------------------------------

#[tokio::test]
async fn configs_calls_in_a_stopped_or_missing_container_are_not_running() {
    let stopped = TestContainer::created();
    require_docker();
    let missing = ContainerId::new(unique_name());
    let engine = engine();
    for container in [cid(&stopped), missing] {
        let checked = engine.is_installed(&container, &name_demo()).await;
        assert!(
            matches!(&checked, Err(e) if is_not_running(e)),
            "{checked:?}"
        );
        let listed = engine.installed(&container).await;
        assert!(matches!(&listed, Err(e) if is_not_running(e)), "{listed:?}");
        let read = engine.read_plugin_memory(&container, &name_demo()).await;
        assert!(matches!(&read, Err(e) if is_not_running(e)), "{read:?}");
        let tree = tree_of(&[("plugin.yaml", "x: 1\n")]);
        let delivered = engine.deliver(&container, &name_demo(), tree.path()).await;
        assert!(
            matches!(&delivered, Err(DeliveryError::NotPlaced(e)) if is_not_running(e)),
            "{delivered:?}"
        );
        let removed = engine.remove(&container, &removal("demo", None, &[])).await;
        assert!(
            matches!(&removed, Err(RemovalError::Configs(e)) if is_not_running(e)),
            "{removed:?}"
        );
    }
}

// --- restart -----------------------------------------------------------------

#[tokio::test]
async fn restart_starts_the_container_again() {
    let c = TestContainer::running();
    let before = c.inspect("{{.State.StartedAt}}");
    let engine = engine();
    engine.restart(&cid(&c)).await.unwrap();
    let after = c.inspect("{{.State.StartedAt}}");
    assert_ne!(before, after);
    assert_eq!(
        engine.state(&c.container_name()).await,
        ContainerState::Running { id: cid(&c) }
    );
}

#[tokio::test]
async fn restart_of_a_stopped_container_starts_it() {
    let c = TestContainer::created();
    engine().restart(&cid(&c)).await.unwrap();
    assert_eq!(c.inspect("{{.State.Running}}"), "true");
}

#[tokio::test]
async fn restart_of_a_missing_container_is_an_engine_error() {
    require_docker();
    let restarted = engine().restart(&ContainerId::new(unique_name())).await;
    assert!(
        matches!(restarted, Err(EngineError::Other(_))),
        "{restarted:?}"
    );
}
