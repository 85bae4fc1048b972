//! Shutdown of the real binary (SPEC §12): `SIGTERM` and Ctrl-C drain
//! within `PLUGIN_SHUTDOWN_GRACE` and exit 0; `SIGKILL` mid-install leaves a
//! whole version in the container and no receipt that lies; and two
//! replicas serve the same download byte for byte.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::docker::{TestContainer, docker};
use crate::support::git::{GitServer, ServerOptions};
use crate::support::hostile_container::{container_tree, h1_digest, local_tree, write_plugin};
use crate::support::replica::{ADMIN_TOKEN, Replica, refused_start};

/// The status, lower-cased head and body of one response read from a raw
/// connection (a `content-length` body), leaving the connection open.
async fn read_response(stream: &mut TcpStream) -> (u16, String, Value) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf).await.expect("read a response");
        assert!(n > 0, "closed before a whole response: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
        let status: u16 = head[9..12].parse().expect("status code");
        if status == 100 {
            raw.drain(..end + 4);
            continue;
        }
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |l| l.trim().parse().expect("content-length"));
        let body = &raw[end + 4..];
        if body.len() >= length {
            let json = serde_json::from_slice(&body[..length]).unwrap_or(Value::Null);
            return (status, head, json);
        }
    }
}

/// Reads up to and including a `100 Continue` interim response.
async fn read_continue(stream: &mut TcpStream) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await.expect("read 100");
    assert!(line.starts_with("HTTP/1.1 100"), "{line:?}");
    line.clear();
    reader
        .read_line(&mut line)
        .await
        .expect("read the blank line");
    assert_eq!(line, "\r\n");
    assert!(
        reader.buffer().is_empty(),
        "nothing beyond the interim answer"
    );
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n")
}

fn started_at(container: &TestContainer) -> String {
    container.inspect("{{.State.StartedAt}}")
}

#[tokio::test]
async fn a_bad_shutdown_grace_stops_start_up_naming_the_setting() {
    for value in ["soon", "-1s", "5 parsecs"] {
        let (status, stderr) = refused_start(&[("PLUGIN_SHUTDOWN_GRACE", value)]).await;
        assert!(!status.success(), "{value}: started");
        assert!(
            stderr.contains("PLUGIN_SHUTDOWN_GRACE"),
            "{value}: {stderr}"
        );
    }
}

/// The install's request body is held back by the client after the server
/// said `100 Continue`: the handler is provably running when the signal
/// arrives, and ends only when the test sends the rest.
#[tokio::test]
async fn sigterm_refuses_new_connections_turns_not_ready_and_lets_an_install_in_flight_finish() {
    let db = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}?mode=rwc", db.path().join("p.db").display());
    let registry = tempfile::tempdir().unwrap();
    let plugin = write_plugin(
        registry.path(),
        "drained",
        &[("plugin.yaml", "name: drained\n"), ("notes.md", "landed\n")],
    );
    let container = TestContainer::running();
    let mut server = Replica::start(
        &database,
        registry.path(),
        &[
            ("PLUGIN_SHUTDOWN_GRACE", "60s"),
            // Due as soon as the install answers: carried out before exit,
            // by the debounce or by the shutdown's flush.
            ("PLUGIN_RESTART_DELAY", "50ms"),
        ],
    )
    .await;
    server.put_workspace("drain", &container.name).await;
    let before = started_at(&container);

    // A kept-alive connection, used once before the signal.
    let mut probe = TcpStream::connect(&server.addr).await.unwrap();
    probe.write_all(get("/readyz").as_bytes()).await.unwrap();
    let (status, _, body) = read_response(&mut probe).await;
    assert_eq!((status, &body["shutting_down"]), (200, &json!(false)));

    // The install: head sent, body held until the server asks for it.
    let install_body = json!({"source": "local://drained"}).to_string();
    let mut install = TcpStream::connect(&server.addr).await.unwrap();
    let head = format!(
        "POST /workspaces/drain/plugins HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
        install_body.len()
    );
    install.write_all(head.as_bytes()).await.unwrap();
    read_continue(&mut install).await;

    server.signal("TERM");
    server.wait_refusing(Duration::from_secs(10)).await;

    // Not ready from the signal on, while the install still runs; the
    // answer closes the connection.
    probe.write_all(get("/readyz").as_bytes()).await.unwrap();
    let (status, head, body) = read_response(&mut probe).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["shutting_down"], json!(true), "{body}");
    assert!(head.contains("\r\nconnection: close"), "{head}");

    install.write_all(install_body.as_bytes()).await.unwrap();
    let (status, head, answer) = read_response(&mut install).await;
    assert_eq!(status, 200, "{answer}\n{}", server.log());
    assert_eq!(answer["digest"], json!(h1_digest(&plugin)));
    assert!(head.contains("\r\nconnection: close"), "{head}");

    let exit = server.exit_within(Duration::from_secs(60)).await;
    assert!(exit.success(), "{exit}\n{}", server.log());
    let (tree, _) = container_tree(&container.name, "/configs/plugins/drained")
        .await
        .unwrap();
    assert_eq!(tree, local_tree(&plugin));
    assert_ne!(
        started_at(&container),
        before,
        "the restart the install asked for was carried out before exit"
    );
}

/// Ctrl-C while a git server says nothing: the install is cut when the
/// grace is over (its client gets no answer), and the process exits 0
/// then, not when the fetch would have ended.
#[tokio::test]
async fn ctrl_c_cuts_an_install_still_running_when_the_grace_is_over_and_exits_0() {
    let git = GitServer::start_with(ServerOptions {
        stall: Some(Duration::from_secs(300)),
        ..ServerOptions::default()
    })
    .await;
    let db = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}?mode=rwc", db.path().join("p.db").display());
    let registry = tempfile::tempdir().unwrap();
    let container = TestContainer::running();
    let grace = Duration::from_secs(2);
    let mut server = Replica::start(
        &database,
        registry.path(),
        &[
            ("PLUGIN_SHUTDOWN_GRACE", "2s"),
            ("PLUGIN_GITHUB_BASE_URL", &git.base_url),
        ],
    )
    .await;
    server.put_workspace("cut", &container.name).await;

    let install = {
        let client = server.client.clone();
        let url = format!("{}/workspaces/cut/plugins", server.base);
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"source": "github://acme/silent#v1.0.0"}))
                .send()
                .await
        })
    };
    git.wait_for_requests(|requests| !requests.is_empty()).await;

    let signalled = Instant::now();
    server.signal("INT");
    server.wait_refusing(Duration::from_secs(10)).await;
    let exit = server.exit_within(Duration::from_secs(30)).await;
    let took = signalled.elapsed();
    assert!(exit.success(), "{exit}\n{}", server.log());
    assert!(
        took >= grace && took < grace + Duration::from_secs(10),
        "exited {took:?} after the signal, grace {grace:?}\n{}",
        server.log()
    );
    let answer = install.await.unwrap();
    assert!(answer.is_err(), "the cut install got an answer: {answer:?}");
    assert!(
        server.log().contains("shutdown grace period over"),
        "{}",
        server.log()
    );
}

/// What to watch for in the container before the kill, as a shell test.
struct Moment {
    what: &'static str,
    seen: &'static str,
}

/// `SIGKILL` of the real binary at two moments of an update (the new
/// version being extracted beside the old one; the new one just swapped
/// in, its receipt perhaps not yet written): the container holds one whole
/// version, and a receipt, if one is left, describes exactly that one.
#[tokio::test]
async fn sigkill_mid_install_leaves_a_whole_version_and_no_receipt_that_lies() {
    let db = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}?mode=rwc", db.path().join("p.db").display());
    let registry = tempfile::tempdir().unwrap();
    let versions = tempfile::tempdir().unwrap();
    let container = TestContainer::running();
    let settings = [("PLUGIN_RESTART_DELAY", "1h")];
    let moments = [
        Moment {
            what: "extracting",
            seen: "ls -A /configs/plugins | grep -q '^\\.bulky\\.staging-'",
        },
        Moment {
            what: "swapped in",
            seen: "[ -f /configs/plugins/bulky/marker-$1 ]",
        },
    ];
    for (round, moment) in moments.iter().enumerate() {
        // The old version (small), then a large new one to kill into.
        let old_dir = version(versions.path(), &format!("old{round}"), 2);
        let new_dir = version(versions.path(), &format!("new{round}"), 4000);
        let mut server = Replica::start(&database, registry.path(), &settings).await;
        server.put_workspace("killed", &container.name).await;
        swap_into_registry(registry.path(), &old_dir);
        listed_as(&server, &format!("old{round}")).await;
        let (status, body) = server
            .admin(
                Method::POST,
                "/workspaces/killed/plugins",
                Some(json!({"source": "local://bulky"})),
            )
            .await;
        assert_eq!(status, 200, "{body}\n{}", server.log());

        swap_into_registry(registry.path(), &new_dir);
        listed_as(&server, &format!("new{round}")).await;
        let mut watcher = tokio::process::Command::new("docker")
            .args(["exec", &container.name, "sh", "-c"])
            .arg(format!(
                "echo watching; until {}; do :; done; echo seen",
                moment.seen
            ))
            .args(["watcher", &format!("new{round}")])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
        assert_eq!(
            lines.next_line().await.unwrap().as_deref(),
            Some("watching")
        );
        let mut install = {
            let client = server.client.clone();
            let url = format!("{}/workspaces/killed/plugins", server.base);
            tokio::spawn(async move {
                client
                    .post(url)
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&json!({"source": "local://bulky"}))
                    .send()
                    .await
            })
        };
        let seen = tokio::time::timeout(Duration::from_secs(120), async {
            tokio::select! {
                line = lines.next_line() => Ok(line),
                answer = &mut install => Err(answer),
            }
        })
        .await;
        assert!(
            matches!(&seen, Ok(Ok(Ok(Some(line)))) if line == "seen"),
            "{}: {seen:?}\n{}",
            moment.what,
            server.log()
        );
        server.signal("KILL");
        let exit = server.exit_within(Duration::from_secs(10)).await;
        assert!(!exit.success());
        install.abort();

        settle(&container).await;
        let (tree, _) = container_tree(&container.name, "/configs/plugins/bulky")
            .await
            .unwrap();
        let held = if tree == local_tree(&old_dir) {
            &old_dir
        } else {
            assert_eq!(
                tree,
                local_tree(&new_dir),
                "{}: neither the old nor the new version",
                moment.what
            );
            &new_dir
        };

        // A fresh process on the same database reads the receipt.
        let server = Replica::start(&database, registry.path(), &settings).await;
        let (status, listed) = server
            .admin(Method::GET, "/workspaces/killed/plugins", None)
            .await;
        assert_eq!(status, 200, "{listed}");
        let entry = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "bulky")
            .unwrap_or_else(|| panic!("bulky is not listed: {listed}"));
        if !entry["digest"].is_null() {
            assert_eq!(
                entry["digest"],
                json!(h1_digest(held)),
                "{}: the receipt describes another version than the container holds",
                moment.what
            );
        }
        drop(server);
        drop(watcher);
    }
}

/// A plugin `bulky` version `tag` of `files` files, kept under `versions`
/// (the registry gets a copy with [`swap_into_registry`]).
fn version(versions: &Path, tag: &str, files: usize) -> PathBuf {
    let dir = versions.join(tag);
    let mut content: Vec<(String, String)> = vec![
        (
            "plugin.yaml".into(),
            format!("name: bulky\nversion: {tag}\n"),
        ),
        (format!("marker-{tag}"), format!("{tag}\n")),
    ];
    for i in 0..files {
        content.push((
            format!("files/{i:05}.md"),
            format!("{tag} {i}\n").repeat(32),
        ));
    }
    for (rel, text) in &content {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

/// Polls until the replica's registry index lists `bulky` at `version`.
async fn listed_as(server: &Replica, version: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, listed) = server.admin(Method::GET, "/plugins", None).await;
        let current = listed.as_array().and_then(|all| {
            all.iter()
                .find(|p| p["name"] == "bulky")
                .map(|p| p["version"].clone())
        });
        if current == Some(json!(version)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "bulky not listed at {version}: {listed}"
        );
        // Polls the registry index following the directory's change.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Replaces the registry's `bulky` with a copy of `version`, renamed into
/// place.
fn swap_into_registry(registry: &Path, version: &Path) {
    let staged = registry.join(".bulky.next");
    let _ = std::fs::remove_dir_all(&staged);
    copy_dir(version, &staged);
    let live = registry.join("bulky");
    let _ = std::fs::remove_dir_all(&live);
    std::fs::rename(&staged, &live).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Polls until the delivery script the killed server started in the
/// container has ended: no staging or set-aside directory is left.
async fn settle(container: &TestContainer) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = docker(&[
            "exec",
            &container.name,
            "sh",
            "-c",
            "ls -A /configs/plugins | grep -c '^\\.bulky\\.' || true",
        ]);
        if left.trim() == "0" {
            return;
        }
        assert!(Instant::now() < deadline, "delivery leftovers stay: {left}");
        // Polls the container: the engine ends the orphaned delivery on
        // its own once the killed client's stream is closed.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two replicas on one PostgreSQL database and one plugins directory, each
/// with its own data directory (staging, cache): the same download has the
/// same bytes and `ETag` from both, in both formats (SPEC §12).
#[tokio::test]
async fn two_replicas_serve_the_same_bytes_and_etag_for_the_same_download() {
    let database = crate::support::db::postgres_url().await;
    let registry = tempfile::tempdir().unwrap();
    let plugin = version(registry.path(), "shared", 40);
    std::fs::rename(&plugin, registry.path().join("bulky")).unwrap();
    let first = Replica::start(&database, registry.path(), &[]).await;
    let second = Replica::start(&database, registry.path(), &[]).await;
    first
        .put_workspace("twins", "wp-test-no-such-container")
        .await;
    for format in ["tar.gz", "tar.zst"] {
        let mut answers = Vec::new();
        for replica in [&first, &second] {
            let resp = replica
                .client
                .get(format!(
                    "{}/workspaces/twins/plugins/bulky/download?format={format}",
                    replica.base
                ))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{format}\n{}", replica.log());
            let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
            answers.push((etag, resp.bytes().await.unwrap()));
        }
        assert!(
            answers[0].0.ends_with(&format!(".{format}\"")),
            "{}",
            answers[0].0
        );
        assert_eq!(answers[0].0, answers[1].0, "{format}: ETags differ");
        assert!(answers[0].1 == answers[1].1, "{format}: bytes differ");
    }
}
