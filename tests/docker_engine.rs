//! `DockerEngine` against the real Docker engine (SPEC §5 "Engine calls",
//! §6): container state, copying trees in, reading and writing files,
//! execs, restarts, and an engine that cannot answer. Needs a running
//! engine (`bash scripts/services.sh`); fails, never skips, without one.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::docker::{EngineProxy, ProxyMode, TestContainer, engine, require_docker, unique_name};
use workspace_plugins::adapters::docker::DockerEngine;
use workspace_plugins::domain::workspace::ContainerName;
use workspace_plugins::ports::container::{
    ContainerEngine, ContainerFile, ContainerState, EngineError, ReadFileError,
};

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
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

fn assert_unavailable<T: std::fmt::Debug>(result: Result<T, EngineError>) {
    assert!(
        matches!(result, Err(EngineError::Unavailable(_))),
        "expected Unavailable, got {result:?}"
    );
}

fn assert_other<T: std::fmt::Debug>(result: Result<T, EngineError>) {
    assert!(
        matches!(result, Err(EngineError::Other(_))),
        "expected Other, got {result:?}"
    );
}

// --- state -------------------------------------------------------------

#[tokio::test]
async fn running_container_is_running_with_its_engine_id() {
    let c = TestContainer::running();
    let engine = engine();
    engine.ping().await.expect("ping");
    assert_eq!(
        engine.state(&c.container_name()).await,
        ContainerState::Running { id: c.id.clone() }
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

#[tokio::test]
async fn missing_engine_socket_is_unknown_never_stopped() {
    let engine =
        DockerEngine::new(Some("unix:///nonexistent.sock"), Duration::from_secs(5)).unwrap();
    let name = ContainerName::parse("ws-0123456789ab").unwrap();
    assert_eq!(engine.state(&name).await, ContainerState::Unknown);
    assert_unavailable(engine.ping().await);
    assert_unavailable(engine.exec("abc", &argv(&["true"])).await);
    assert_unavailable(engine.restart("abc").await);
    let tree = plugin_tree();
    assert_unavailable(
        engine
            .copy_dir_in("abc", tree.path(), "/configs/plugins/demo")
            .await,
    );
}

#[tokio::test]
async fn refused_engine_port_is_unknown_never_stopped() {
    let engine = DockerEngine::new(Some("tcp://127.0.0.1:1"), Duration::from_secs(5)).unwrap();
    let name = ContainerName::parse("ws-0123456789ab").unwrap();
    assert_eq!(engine.state(&name).await, ContainerState::Unknown);
    assert_unavailable(engine.ping().await);
    let read = engine.read_file("abc", "/configs/CLAUDE.md", 1024).await;
    assert!(
        matches!(
            read,
            Err(ReadFileError::Engine(EngineError::Unavailable(_)))
        ),
        "{read:?}"
    );
}

#[tokio::test]
async fn stalled_engine_is_unknown_within_the_call_timeout() {
    require_docker();
    let proxy = EngineProxy::start(ProxyMode::Stall).await;
    let timeout = Duration::from_millis(500);
    let engine = DockerEngine::new(Some(&proxy.docker_host()), timeout).unwrap();
    let name = ContainerName::parse("ws-0123456789ab").unwrap();

    let started = Instant::now();
    assert_eq!(engine.state(&name).await, ContainerState::Unknown);
    let took = started.elapsed();
    assert!(
        took >= timeout && took < timeout * 4,
        "state took {took:?} with a {timeout:?} call timeout"
    );

    let tree = plugin_tree();
    let started = Instant::now();
    assert_unavailable(
        engine
            .copy_dir_in("abc", tree.path(), "/configs/plugins/demo")
            .await,
    );
    assert!(
        started.elapsed() < timeout * 4,
        "copy took {:?}",
        started.elapsed()
    );
    assert_unavailable(engine.ping().await);
    assert!(proxy.connections() >= 3, "the calls did reach the proxy");
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
        ContainerState::Running { id: c.id.clone() }
    );
    // Exec upgrades the connection: it must survive the proxy too.
    let out = engine
        .exec(&c.id, &argv(&["echo", "through"]))
        .await
        .unwrap();
    assert_eq!(
        (out.exit_code, out.stdout.as_slice()),
        (0, b"through\n".as_slice())
    );
    let tree = plugin_tree();
    engine
        .copy_dir_in(&c.id, tree.path(), "/configs/plugins/demo")
        .await
        .unwrap();
    assert_eq!(
        c.sh("cat /configs/plugins/demo/rules/always.md"),
        "Be careful."
    );
    assert!(proxy.connections() >= 4);
}

#[tokio::test]
async fn upload_cut_mid_stream_is_unavailable() {
    let c = TestContainer::running();
    let proxy = EngineProxy::start(ProxyMode::DropAfter(64 * 1024)).await;
    let engine = DockerEngine::new(Some(&proxy.docker_host()), Duration::from_secs(30)).unwrap();
    // Small calls fit under the cut...
    assert_eq!(
        engine.state(&c.container_name()).await,
        ContainerState::Running { id: c.id.clone() }
    );
    // ...a 300 KB tree does not.
    let tree = plugin_tree();
    assert_unavailable(
        engine
            .copy_dir_in(&c.id, tree.path(), "/configs/plugins/demo")
            .await,
    );
}

// --- copy_dir_in ---------------------------------------------------------

#[tokio::test]
async fn copy_dir_in_copies_a_nested_tree_owned_by_the_agent() {
    let c = TestContainer::running();
    let tree = plugin_tree();
    engine()
        .copy_dir_in(&c.id, tree.path(), "/configs/plugins/demo")
        .await
        .unwrap();

    // Same entries...
    let listing = c.sh(
        "cd /configs/plugins/demo && find . -mindepth 1 -type d | sed 's|$|/|'; \
         cd /configs/plugins/demo && find . -type f",
    );
    let mut remote: Vec<String> = listing
        .lines()
        .map(|l| l.trim_start_matches("./").to_owned())
        .collect();
    remote.sort();
    assert_eq!(remote, local_listing(tree.path()));
    // ...same bytes...
    for file in remote.iter().filter(|p| !p.ends_with('/')) {
        assert_eq!(
            c.cat(&format!("/configs/plugins/demo/{file}")),
            fs::read(tree.path().join(file)).unwrap(),
            "{file} differs"
        );
    }
    // ...every entry the agent's, modes normalized.
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
}

#[tokio::test]
async fn copy_dir_in_keeps_the_agent_owner_when_the_container_user_is_root() {
    // The engine's copyUIDGID option would chown to the container's User
    // (root here): ownership must come from the archive instead.
    let c = TestContainer::create(&["--user", "0"], true);
    let tree = plugin_tree();
    engine()
        .copy_dir_in(&c.id, tree.path(), "/configs/plugins/demo")
        .await
        .unwrap();
    let owners = c.sh("find /configs/plugins/demo -exec stat -c '%u:%g' {} + | sort -u");
    assert_eq!(owners, "1000:1000");
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
async fn copy_dir_in_streams_a_large_tree_in_bounded_memory() {
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

    // Reset the peak-RSS mark, so what the copy adds to it shows: a 50 MiB
    // tree buffered whole would add at least 50 MiB.
    fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    let before = proc_status_kib("VmRSS:");
    engine()
        .copy_dir_in(&c.id, &root, "/configs/plugins/big")
        .await
        .unwrap();
    let grew_kib = proc_status_kib("VmHWM:").saturating_sub(before);
    assert!(
        grew_kib < 20 * 1024,
        "peak memory grew by {grew_kib} KiB while copying 50 MiB"
    );
    let remote = c.sh("sha256sum /configs/plugins/big/model.bin");
    assert_eq!(remote.split_whitespace().next(), Some(expected.as_str()));
}

#[tokio::test]
async fn copy_dir_in_refuses_symlinks_and_special_files_before_sending() {
    let c = TestContainer::running();
    let engine = engine();

    let tree = plugin_tree();
    std::os::unix::fs::symlink("/etc/shadow", tree.path().join("rules/leak.md")).unwrap();
    assert_other(
        engine
            .copy_dir_in(&c.id, tree.path(), "/configs/plugins/demo")
            .await,
    );

    let tree = plugin_tree();
    let fifo = tree.path().join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    assert_other(
        engine
            .copy_dir_in(&c.id, tree.path(), "/configs/plugins/demo")
            .await,
    );

    let out = c.exec_output(&["test", "-e", "/configs/plugins/demo"]);
    assert!(!out.status.success(), "nothing may reach the container");
}

#[tokio::test]
async fn copy_dir_in_under_a_missing_parent_is_an_engine_error() {
    let c = TestContainer::running();
    let tree = plugin_tree();
    assert_other(
        engine()
            .copy_dir_in(&c.id, tree.path(), "/no/such/dir/demo")
            .await,
    );
}

// --- read_file / write_file ------------------------------------------------

#[tokio::test]
async fn read_file_returns_content_mode_and_owner() {
    let c = TestContainer::running();
    c.sh("printf 'line\\000two\\n' > /configs/CLAUDE.md \
         && chown 1000:1000 /configs/CLAUDE.md && chmod 640 /configs/CLAUDE.md");
    let file = engine()
        .read_file(&c.id, "/configs/CLAUDE.md", 9)
        .await
        .unwrap();
    assert_eq!(
        file,
        ContainerFile {
            content: b"line\0two\n".to_vec(),
            mode: 0o640,
            uid: 1000,
            gid: 1000,
        }
    );
}

#[tokio::test]
async fn read_file_of_a_missing_path_or_a_directory_is_not_found() {
    let c = TestContainer::running();
    let engine = engine();
    for path in [
        "/configs/CLAUDE.md",
        "/configs/plugins",
        "/no/such/dir/file",
    ] {
        let read = engine.read_file(&c.id, path, 1 << 20).await;
        assert!(
            matches!(read, Err(ReadFileError::NotFound)),
            "{path}: {read:?}"
        );
    }
}

#[tokio::test]
async fn read_file_past_the_bound_is_too_large() {
    let c = TestContainer::running();
    c.sh("head -c 100 /dev/zero > /configs/big.md");
    let engine = engine();
    let read = engine.read_file(&c.id, "/configs/big.md", 99).await;
    assert!(matches!(read, Err(ReadFileError::TooLarge)), "{read:?}");
    let read = engine
        .read_file(&c.id, "/configs/big.md", 100)
        .await
        .unwrap();
    assert_eq!(read.content.len(), 100);
}

#[tokio::test]
async fn read_file_in_a_missing_container_is_an_engine_error_not_a_missing_file() {
    require_docker();
    let read = engine()
        .read_file(&unique_name(), "/configs/CLAUDE.md", 1024)
        .await;
    assert!(
        matches!(read, Err(ReadFileError::Engine(EngineError::Other(_)))),
        "{read:?}"
    );
}

#[tokio::test]
async fn write_file_sets_the_given_owner_and_mode() {
    // A container whose configured user is the agent: the written file
    // must still get the owner asked for, not the container's user.
    let c = TestContainer::create(&["--user", "1000"], true);
    let engine = engine();

    let file = ContainerFile {
        content: b"# memory\n".to_vec(),
        mode: 0o600,
        uid: 0,
        gid: 0,
    };
    engine
        .write_file(&c.id, "/configs/new.md", &file)
        .await
        .unwrap();
    assert_eq!(c.sh("stat -c '%u:%g %a' /configs/new.md"), "0:0 600");
    assert_eq!(c.cat("/configs/new.md"), b"# memory\n");

    // Replacing an existing file.
    c.sh("echo old > /configs/CLAUDE.md \
         && chown 1000:1000 /configs/CLAUDE.md && chmod 644 /configs/CLAUDE.md");
    let file = ContainerFile {
        content: b"new\n".to_vec(),
        mode: 0o640,
        uid: 1234,
        gid: 5678,
    };
    engine
        .write_file(&c.id, "/configs/CLAUDE.md", &file)
        .await
        .unwrap();
    assert_eq!(
        c.sh("stat -c '%u:%g %a' /configs/CLAUDE.md"),
        "1234:5678 640"
    );
    assert_eq!(c.cat("/configs/CLAUDE.md"), b"new\n");
}

#[tokio::test]
async fn a_file_read_and_written_back_keeps_owner_and_mode() {
    let c = TestContainer::running();
    c.sh("echo '# Plugin: p / rule: a.md' > /configs/CLAUDE.md \
         && chown 1000:1000 /configs/CLAUDE.md && chmod 664 /configs/CLAUDE.md");
    let engine = engine();
    let mut file = engine
        .read_file(&c.id, "/configs/CLAUDE.md", 1 << 20)
        .await
        .unwrap();
    file.content = b"user text\n".to_vec();
    engine
        .write_file(&c.id, "/configs/CLAUDE.md", &file)
        .await
        .unwrap();
    assert_eq!(
        c.sh("stat -c '%u:%g %a' /configs/CLAUDE.md"),
        "1000:1000 664"
    );
    assert_eq!(c.cat("/configs/CLAUDE.md"), b"user text\n");
}

#[tokio::test]
async fn a_write_cut_off_mid_upload_leaves_the_old_file_whole() {
    let c = TestContainer::running();
    c.sh("echo 'old memory' > /configs/CLAUDE.md");
    let proxy = EngineProxy::start(ProxyMode::DropAfter(256 * 1024)).await;
    let cut = DockerEngine::new(Some(&proxy.docker_host()), Duration::from_secs(30)).unwrap();
    let file = ContainerFile {
        content: vec![b'x'; 1 << 20],
        mode: 0o644,
        uid: 1000,
        gid: 1000,
    };
    assert_unavailable(cut.write_file(&c.id, "/configs/CLAUDE.md", &file).await);
    let kept = c.cat("/configs/CLAUDE.md");
    assert!(
        kept == b"old memory\n",
        "CLAUDE.md now holds {} other bytes",
        kept.len()
    );

    // The next write replaces the leftover partial file and leaves none.
    let file = ContainerFile {
        content: b"new memory\n".to_vec(),
        ..file
    };
    engine()
        .write_file(&c.id, "/configs/CLAUDE.md", &file)
        .await
        .unwrap();
    assert_eq!(c.cat("/configs/CLAUDE.md"), b"new memory\n");
    assert_eq!(c.sh("ls -A /configs"), "CLAUDE.md\nplugins\nskills");
}

#[tokio::test]
async fn a_write_over_a_directory_fails_and_leaves_no_partial_file() {
    let c = TestContainer::running();
    c.sh("mkdir /configs/CLAUDE.md && echo kept > /configs/CLAUDE.md/inner");
    let file = ContainerFile {
        content: b"new\n".to_vec(),
        mode: 0o644,
        uid: 1000,
        gid: 1000,
    };
    let result = engine()
        .write_file(&c.id, "/configs/CLAUDE.md", &file)
        .await;
    assert_other(result);
    assert_eq!(c.sh("ls -A /configs/CLAUDE.md"), "inner");
    assert_eq!(c.sh("ls -A /configs"), "CLAUDE.md\nplugins\nskills");
}

// --- exec ------------------------------------------------------------------

#[tokio::test]
async fn exec_reports_exit_code_and_both_outputs() {
    let c = TestContainer::running();
    let out = engine()
        .exec(
            &c.id,
            &argv(&["sh", "-c", "echo out; echo err >&2; exit 3"]),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 3);
    assert!(!out.success());
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
}

#[tokio::test]
async fn exec_passes_argv_verbatim() {
    let c = TestContainer::running();
    let engine = engine();
    let weird = "a b\"c";
    let out = engine
        .exec(
            &c.id,
            &argv(&["touch", &format!("/tmp/{weird}"), "/tmp/$(id)"]),
        )
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    let names = c.sh("ls /tmp");
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(names, ["$(id)", weird]);

    let out = engine
        .exec(&c.id, &argv(&["echo", "$HOME; rm -rf / *"]))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"$HOME; rm -rf / *\n");
}

#[tokio::test]
async fn exec_runs_as_root_whatever_the_container_user() {
    let c = TestContainer::create(&["--user", "1000"], true);
    let out = engine().exec(&c.id, &argv(&["id", "-u"])).await.unwrap();
    assert_eq!(out.stdout, b"0\n");
}

#[tokio::test]
async fn exec_output_is_capped_and_the_process_still_finishes() {
    let c = TestContainer::running();
    let out = engine()
        .exec(&c.id, &argv(&["head", "-c", "3000000", "/dev/zero"]))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0);
    assert_eq!(out.stdout.len(), 1024 * 1024);
}

#[tokio::test]
async fn exec_of_a_missing_command_fails_with_a_nonzero_exit() {
    let c = TestContainer::running();
    let out = engine()
        .exec(&c.id, &argv(&["/no/such/command"]))
        .await
        .unwrap();
    assert_ne!(out.exit_code, 0, "{out:?}");
}

#[tokio::test]
async fn exec_in_a_stopped_container_is_an_engine_error() {
    let c = TestContainer::created();
    assert_other(engine().exec(&c.id, &argv(&["true"])).await);
}

// --- restart -----------------------------------------------------------------

#[tokio::test]
async fn restart_starts_the_container_again() {
    let c = TestContainer::running();
    let before = c.inspect("{{.State.StartedAt}}");
    let engine = engine();
    engine.restart(&c.id).await.unwrap();
    let after = c.inspect("{{.State.StartedAt}}");
    assert_ne!(before, after);
    assert_eq!(
        engine.state(&c.container_name()).await,
        ContainerState::Running { id: c.id.clone() }
    );
}

#[tokio::test]
async fn restart_of_a_missing_container_is_an_engine_error() {
    require_docker();
    assert_other(engine().restart(&unique_name()).await);
}
