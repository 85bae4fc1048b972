use std::fs;
use std::process::Command;

use reqwest::Method;
use serde_json::json;

use crate::support::app::{
    ADMIN_TOKEN, Options, TestApp, json, repo_plugins_dir, spawn_app, spawn_app_with,
};

const PATH: &str = "/workspaces/ext/plugins/careful-bash/download";

async fn external(app: &TestApp) -> String {
    app.create_workspace("ext", json!({"name": "Remote", "runtime": "external"}))
        .await;
    app.issue_token("ext").await.1
}

/// An app whose registry is a copy of the repo's `careful-bash`, free to
/// change (the TempDir must outlive the app).
async fn app_over_a_registry_copy() -> (tempfile::TempDir, TestApp) {
    let registry = tempfile::tempdir().unwrap();
    let copied = Command::new("cp")
        .arg("-r")
        .arg(repo_plugins_dir().join("careful-bash"))
        .arg(registry.path())
        .status()
        .unwrap();
    assert!(copied.success());
    let app = spawn_app_with(Options {
        plugins_dir: Some(registry.path().to_owned()),
        ..Options::default()
    })
    .await;
    (registry, app)
}

async fn get(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut rb = app.req(Method::GET, path, token);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await.unwrap()
}

/// Unpacks with the system tar and lists `path<TAB>content` of every file.
fn unpack(bytes: &[u8], zstd: bool) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a");
    fs::write(&archive, bytes).unwrap();
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let mut cmd = Command::new("tar");
    if zstd {
        cmd.arg("--zstd");
    } else {
        cmd.arg("-z");
    }
    let status = cmd
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    listing(&out)
}

fn listing(root: &std::path::Path) -> Vec<String> {
    let mut files = Vec::new();
    fn walk(root: &std::path::Path, dir: &std::path::Path, files: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, files);
            } else {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                files.push(format!("{rel}\t{}", fs::read_to_string(&path).unwrap()));
            }
        }
    }
    walk(root, root, &mut files);
    files.sort();
    files
}

#[tokio::test]
async fn an_external_agent_downloads_exactly_the_plugins_files_as_gzip_and_zstd() {
    let app = spawn_app().await;
    let token = external(&app).await;
    let expected = listing(&repo_plugins_dir().join("careful-bash"));
    let resp = get(
        &app,
        PATH,
        Some(&token),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["content-type"], "application/gzip");
    assert_eq!(
        h["content-disposition"],
        "attachment; filename=\"careful-bash.tar.gz\""
    );
    assert_eq!(h["x-plugin-name"], "careful-bash");
    assert_eq!(h["x-plugin-source"], "local://careful-bash");
    assert_eq!(h["vary"], "Accept");
    assert!(
        h.get("content-encoding").is_none(),
        "the SDK reads the raw body as tar.gz"
    );
    let etag = h["etag"].to_str().unwrap().to_owned();
    assert!(
        etag.starts_with("\"h1:") && etag.ends_with(".tar.gz\""),
        "{etag}"
    );
    let gz = resp.bytes().await.unwrap();
    assert_eq!(h["content-length"].to_str().unwrap(), gz.len().to_string());
    assert_eq!(unpack(&gz, false), expected);

    let resp = get(&app, PATH, Some(&token), &[("accept", "application/zstd")]).await;
    assert_eq!(resp.headers()["content-type"], "application/zstd");
    assert_eq!(
        resp.headers()["content-disposition"],
        "attachment; filename=\"careful-bash.tar.zst\""
    );
    assert!(
        resp.headers()["etag"]
            .to_str()
            .unwrap()
            .ends_with(".tar.zst\"")
    );
    assert_eq!(unpack(&resp.bytes().await.unwrap(), true), expected);
    let resp = get(&app, &format!("{PATH}?format=tar.zst"), Some(&token), &[]).await;
    assert_eq!(resp.headers()["content-type"], "application/zstd");

    let again = get(&app, PATH, Some(&token), &[])
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(again, gz, "the same tree always gives the same bytes");
}

#[tokio::test]
async fn a_matching_etag_is_304_without_a_body_and_a_changed_plugin_gets_a_new_etag() {
    let (registry, app) = app_over_a_registry_copy().await;
    let token = external(&app).await;
    let first = get(&app, PATH, Some(&token), &[]).await;
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let resp = get(&app, PATH, Some(&token), &[("if-none-match", &etag)]).await;
    assert_eq!(resp.status(), 304);
    assert_eq!(resp.headers()["etag"].to_str().unwrap(), etag);
    assert!(resp.bytes().await.unwrap().is_empty());
    fs::write(
        registry.path().join("careful-bash/rules/extra.md"),
        "new rule",
    )
    .unwrap();
    let resp = get(&app, PATH, Some(&token), &[("if-none-match", &etag)]).await;
    assert_eq!(resp.status(), 200, "the content changed, so the ETag did");
    assert_ne!(resp.headers()["etag"].to_str().unwrap(), etag);
}

#[tokio::test]
async fn a_file_rewritten_behind_an_unchanged_fingerprint_is_staged_anew_never_served_stale() {
    let (registry, app) = app_over_a_registry_copy().await;
    let token = external(&app).await;
    let first = get(&app, PATH, Some(&token), &[]).await;
    assert_eq!(first.status(), 200);
    let gz_etag = first.headers()["etag"].to_str().unwrap().to_owned();

    // Same size, mode and modification time: the directory's fingerprint
    // cannot tell, only the bytes can.
    let plugin = registry.path().join("careful-bash");
    let file = plugin.join("rules/no-rm-rf.md");
    let before = fs::metadata(&file).unwrap();
    let mut bytes = fs::read(&file).unwrap();
    let last = bytes.len() - 2;
    bytes[last] = if bytes[last] == b'x' { b'y' } else { b'x' };
    fs::write(&file, &bytes).unwrap();
    fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(before.modified().unwrap())
        .unwrap();
    assert_eq!(fs::metadata(&file).unwrap().len(), before.len());

    let resp = get(&app, &format!("{PATH}?format=tar.zst"), Some(&token), &[]).await;
    assert_eq!(resp.status(), 200);
    let zst_etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(
        zst_etag.trim_end_matches(".tar.zst\""),
        gz_etag.trim_end_matches(".tar.gz\""),
        "the ETag names the new content"
    );
    assert_eq!(
        unpack(&resp.bytes().await.unwrap(), true),
        listing(&plugin),
        "the archive holds the new bytes"
    );
}

#[tokio::test]
async fn bad_tokens_are_401_and_auth_comes_before_the_name() {
    let app = spawn_app().await;
    let token = external(&app).await;
    app.create_workspace("other", json!({"name": "O", "runtime": "x"}))
        .await;
    let (_, other) = app.issue_token("other").await;
    let (revoked_id, revoked) = app.issue_token("ext").await;
    app.call(
        Method::DELETE,
        &format!("/workspaces/ext/tokens/{revoked_id}"),
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    for bad in ["wrong", other.as_str(), revoked.as_str()] {
        let resp = get(
            &app,
            "/workspaces/ext/plugins/..%5C/download",
            Some(bad),
            &[],
        )
        .await;
        assert_eq!(
            json(resp).await,
            (401, json!({"error": "invalid auth token"}))
        );
    }
    let resp = get(&app, PATH, None, &[]).await;
    assert_eq!(
        json(resp).await,
        (401, json!({"error": "missing auth token"}))
    );
    let resp = get(
        &app,
        "/workspaces/ext/plugins/a%5Cb/download",
        Some(&token),
        &[],
    )
    .await;
    assert_eq!(
        json(resp).await,
        (400, json!({"error": "invalid plugin name"}))
    );
    let resp = get(
        &app,
        "/workspaces/nope/plugins/careful-bash/download",
        Some(ADMIN_TOKEN),
        &[],
    )
    .await;
    assert_eq!(
        json(resp).await,
        (404, json!({"error": "workspace not found"}))
    );
    let resp = get(&app, PATH, Some(ADMIN_TOKEN), &[]).await;
    assert_eq!(resp.status(), 200, "the admin token works too");
}

#[tokio::test]
async fn the_name_mismatch_rule_then_the_allowlist_refuse() {
    let app = spawn_app().await;
    let token = external(&app).await;
    let resp = get(
        &app,
        &format!("{PATH}?source=local://hello-world"),
        Some(&token),
        &[],
    )
    .await;
    assert_eq!(
        json(resp).await,
        (
            400,
            json!({
                "error": "source resolved to plugin \"hello-world\" but URL requested \"careful-bash\"",
                "resolved_name": "hello-world",
                "requested_name": "careful-bash"
            })
        )
    );
    app.call(
        Method::PUT,
        "/orgs/ext/plugins/allowlist",
        Some(ADMIN_TOKEN),
        Some(json!({"plugins": ["hello-world"]})),
    )
    .await;
    let resp = get(&app, PATH, Some(&token), &[]).await;
    assert_eq!(
        json(resp).await,
        (
            403,
            json!({"error": "plugin \"careful-bash\" is not in the org allowlist"})
        )
    );
    let resp = get(&app, &format!("{PATH}?format=zip"), Some(&token), &[]).await;
    assert_eq!(
        json(resp).await,
        (
            400,
            json!({"error": "unsupported format (use tar.gz or tar.zst)"})
        )
    );
    let resp = get(
        &app,
        "/workspaces/ext/plugins/absent/download",
        Some(&token),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn a_store_failure_is_500_auth_check_failed() {
    let app = spawn_app().await;
    let token = external(&app).await;
    app.store.set_broken(true);
    let resp = get(&app, PATH, Some(&token), &[]).await;
    assert_eq!(
        json(resp).await,
        (500, json!({"error": "auth check failed"}))
    );
}

#[tokio::test]
async fn a_packing_failure_is_a_clean_500_never_a_200() {
    let app = spawn_app_with(Options {
        failing_archives: true,
        ..Options::default()
    })
    .await;
    let token = external(&app).await;
    let resp = get(&app, PATH, Some(&token), &[]).await;
    assert_eq!(
        json(resp).await,
        (500, json!({"error": "failed to pack plugin"}))
    );
}

// ---- the disk budget (ARCHITECTURE.md, "Disk") -------------------------

/// Bytes on disk under `dir`: every regular file (the SQLite files aside),
/// plus every file this process holds open there whose name is gone (an
/// archive evicted while streamed, an archive served uncached, an https
/// download), each inode once. The second number is the nameless part.
fn disk_held(dir: &std::path::Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut named = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file()
                && !entry.file_name().to_string_lossy().starts_with("test.db")
                && seen.insert((meta.dev(), meta.ino()))
            {
                named += meta.len();
            }
        }
    }
    let mut nameless = 0u64;
    let prefix = dir.display().to_string();
    for fd in fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(target) = fs::read_link(fd.path()) else {
            continue;
        };
        let target = target.display().to_string();
        if !(target.starts_with(&prefix) && target.ends_with(" (deleted)")) {
            continue;
        }
        if let Ok(meta) = fs::metadata(fd.path())
            && meta.is_file()
            && seen.insert((meta.dev(), meta.ino()))
        {
            nameless += meta.len();
        }
    }
    (named + nameless, nameless)
}

/// Starts a download and reads no further than the response head: the
/// server is left holding the stream (a tiny receive window keeps it from
/// writing far ahead). Returns the status and the open connection.
async fn start_download(base: &str, path: &str) -> (u16, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let status = String::from_utf8_lossy(&head)
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    (status, stream)
}

/// Samples [`disk_held`] on a thread until dropped; keeps the peak.
struct Sampler {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Sampler {
    fn start(dir: std::path::PathBuf) -> Self {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = done.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                peak = peak.max(disk_held(&dir).0);
                // The sampling period: nothing to wait for.
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            peak
        });
        Self {
            done,
            thread: Some(thread),
        }
    }

    fn peak(mut self) -> u64 {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_never_holds_more_than_the_cache_cap_plus_one_staging_budget_per_fetch_slot() {
    // Archives larger than what the kernel and the server buffer for a
    // client that stops reading, so a stream stays open while held.
    const PLUGIN_BYTES: usize = 8 << 20;
    const PLUGINS: usize = 10;
    const MAX_DIR_BYTES: u64 = 9 << 20;
    const MAX_ENTRIES: u64 = 64;
    const SLOTS: u64 = 2;
    // Two archives fit in the cache; a third does not.
    const CACHE: u64 = 5 * (PLUGIN_BYTES as u64) / 2;
    let registry = tempfile::tempdir().unwrap();
    for i in 0..PLUGINS {
        let dir = registry.path().join(format!("big-{i:02}"));
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("plugin.yaml"), format!("version: 1.0.{i}\n")).unwrap();
        fs::write(
            dir.join("data.bin"),
            crate::support::hostile::noise(PLUGIN_BYTES, i as u64),
        )
        .unwrap();
    }
    let app = spawn_app_with(Options {
        plugins_dir: Some(registry.path().to_owned()),
        extra_args: [
            ("--plugin-install-max-dir-bytes", MAX_DIR_BYTES),
            ("--plugin-install-max-entries", MAX_ENTRIES),
            ("--plugin-max-concurrent-fetches", SLOTS),
            ("--plugin-cache-max-bytes", CACHE),
        ]
        .iter()
        .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
        .collect(),
        ..Options::default()
    })
    .await;
    app.create_workspace("ext", json!({"name": "Remote", "runtime": "external"}))
        .await;
    let data_dir = app.data_dir.path().canonicalize().unwrap();
    let bound = CACHE
        + SLOTS * workspace_plugins::app::server::staging_disk_budget(MAX_DIR_BYTES, MAX_ENTRIES);
    let sampler = Sampler::start(data_dir.clone());
    let path = |i: usize| format!("/workspaces/ext/plugins/big-{i:02}/download");
    let mut held = Vec::new();

    // Two downloads: cached, and streamed to clients that stop reading.
    for i in 0..2 {
        let (status, stream) = start_download(&app.base, &path(i)).await;
        assert_eq!(status, 200);
        held.push(stream);
    }
    // Two more: the cache is full of archives being streamed (evicting
    // one would free nothing), so each is served uncached from a file with
    // no name, on a fetch slot held until its stream ends.
    for i in 2..4 {
        let (status, stream) = start_download(&app.base, &path(i)).await;
        assert_eq!(status, 200);
        held.push(stream);
    }
    let (total, nameless) = disk_held(&data_dir);
    assert!(
        nameless >= 2 * PLUGIN_BYTES as u64,
        "the uncached archives are held while streamed: {nameless}"
    );
    assert!(total <= bound, "{total} > {bound}");
    // The rest, at once: no slot comes free, each is refused.
    let refused: Vec<_> = (4..PLUGINS)
        .map(|i| {
            let (base, path) = (app.base.clone(), path(i));
            tokio::spawn(async move { start_download(&base, &path).await.0 })
        })
        .collect();
    for status in refused {
        assert_eq!(status.await.unwrap(), 429);
    }
    let (total, _) = disk_held(&data_dir);
    assert!(total <= bound, "{total} > {bound}");

    // Streams end: the uncached archives go, the slots come back.
    drop(held);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (total, nameless) = disk_held(&data_dir);
        if nameless == 0 && total <= CACHE {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {total} bytes, {nameless} without a name"
        );
        // Polled: nothing announces that a file's last handle closed.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, _) = start_download(&app.base, &path(PLUGINS - 1)).await;
    assert_eq!(status, 200);
    let peak = sampler.peak();
    eprintln!("peak {peak} bytes, bound {bound}");
    assert!(peak <= bound, "peak {peak} > {bound}");
}

#[tokio::test]
async fn a_source_with_user_info_is_refused_like_install_and_never_echoed() {
    let app = spawn_app().await;
    let token = external(&app).await;
    app.create_workspace("box", json!({"name": "Box", "runtime": "claude-code"}))
        .await;
    let pin = "0".repeat(64);
    for (source, message) in [
        (
            format!("https://user:pass@plugins.example/careful-bash.tar.gz#sha256={pin}"),
            "invalid plugin source",
        ),
        // Read as a plugin name, which cannot hold `:` or `@`.
        (
            "local://user:pass@careful-bash".to_owned(),
            "invalid plugin name",
        ),
    ] {
        let installed = app
            .call(
                Method::POST,
                "/workspaces/box/plugins",
                Some(ADMIN_TOKEN),
                Some(json!({ "source": source })),
            )
            .await;
        let resp = app
            .req(Method::GET, PATH, Some(&token))
            .query(&[("source", &source)])
            .send()
            .await
            .unwrap();
        let downloaded = json(resp).await;
        assert_eq!(downloaded, installed, "{source}");
        let (status, body) = downloaded;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], message, "{body}");
        let echoed = body["source"].as_str().unwrap();
        assert!(
            !echoed.contains("user") && !echoed.contains("pass"),
            "{echoed}"
        );
    }
}

/// The archives in the app's download cache, by file name.
fn cached_archives(app: &TestApp) -> Vec<(String, Vec<u8>)> {
    let mut found: Vec<_> = fs::read_dir(app.data_dir.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    found.sort();
    found
}

/// Waits for packing ahead of time to report on `plugin`.
async fn prepacked(
    events: &mut tokio::sync::broadcast::Receiver<
        workspace_plugins::app::usecases::prepack::PrepackEvent,
    >,
    plugin: &str,
) -> workspace_plugins::app::usecases::prepack::PrepackOutcome {
    let wait = async {
        loop {
            let event = events.recv().await.unwrap();
            if event.plugin.as_str() == plugin {
                return event.outcome;
            }
        }
    };
    // Packing waits for the plugin to hold still (2 s) first.
    tokio::time::timeout(std::time::Duration::from_secs(20), wait)
        .await
        .expect("packed ahead of time")
}

#[tokio::test]
async fn a_registry_plugin_is_packed_ahead_of_time_and_its_first_download_is_that_archive() {
    use workspace_plugins::app::usecases::download::Prepared;
    use workspace_plugins::app::usecases::prepack::PrepackOutcome;
    let (_registry, app) = app_over_a_registry_copy().await;
    let mut events = app.use_cases.prepack.subscribe();
    assert_eq!(
        prepacked(&mut events, "careful-bash").await,
        PrepackOutcome::Prepared(Prepared::Packed)
    );
    let cached = cached_archives(&app);
    assert_eq!(cached.len(), 1, "one archive, in the default format");
    let (file, bytes) = &cached[0];
    assert!(file.ends_with(".tar.gz"), "{file}");

    let token = external(&app).await;
    let resp = get(&app, PATH, Some(&token), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        &resp.bytes().await.unwrap()[..],
        &bytes[..],
        "the archive packed ahead of time"
    );
    assert_eq!(cached_archives(&app).len(), 1, "nothing packed again");
}

#[tokio::test]
async fn a_download_right_after_a_change_never_serves_what_was_packed_ahead_of_time() {
    let (registry, app) = app_over_a_registry_copy().await;
    let mut events = app.use_cases.prepack.subscribe();
    prepacked(&mut events, "careful-bash").await;
    let token = external(&app).await;
    let before = get(&app, PATH, Some(&token), &[]).await;
    let old_etag = before.headers()["etag"].to_str().unwrap().to_owned();

    // Same size and mtime, new bytes, and no time for the index to notice.
    let plugin = registry.path().join("careful-bash");
    let file = plugin.join("rules/no-rm-rf.md");
    let meta = fs::metadata(&file).unwrap();
    let mut bytes = fs::read(&file).unwrap();
    bytes[0] = if bytes[0] == b'#' { b'%' } else { b'#' };
    fs::write(&file, &bytes).unwrap();
    fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(meta.modified().unwrap())
        .unwrap();
    let resp = get(&app, PATH, Some(&token), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_ne!(resp.headers()["etag"].to_str().unwrap(), old_etag);
    assert_eq!(
        unpack(&resp.bytes().await.unwrap(), false),
        listing(&plugin)
    );
}

#[tokio::test]
async fn a_hostile_registry_plugin_is_never_packed_ahead_of_time() {
    use workspace_plugins::app::usecases::prepack::PrepackOutcome;
    let (registry, app) = app_over_a_registry_copy().await;
    let mut events = app.use_cases.prepack.subscribe();
    let plugin = registry.path().join("careful-bash");
    std::os::unix::fs::symlink("/etc/passwd", plugin.join("rules/leak.md")).unwrap();
    // Whichever look saw the symlink, the last report is a refusal.
    loop {
        if prepacked(&mut events, "careful-bash").await == PrepackOutcome::Failed {
            break;
        }
    }
    assert!(
        cached_archives(&app).is_empty(),
        "{:?}",
        cached_archives(&app).len()
    );
    let token = external(&app).await;
    let (status, body) = json(get(&app, PATH, Some(&token), &[]).await).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "plugin contains a symlink: rules/leak.md");
}
