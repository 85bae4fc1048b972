//! `github://` sources against a real git smart-HTTP server on loopback
//! (`git http-backend` behind the test server of `support::git`): the
//! resolver on its own, and the staging pipeline (SPEC §4) of use cases from
//! `server::use_cases`, whose answers are mapped to HTTP statuses exactly
//! as the API maps them.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use workspace_plugins::adapters::git::GitResolver;
use workspace_plugins::app::error::AppError;
use workspace_plugins::app::http::problem::Problem;
use workspace_plugins::app::server;
use workspace_plugins::app::settings::Settings;
use workspace_plugins::app::usecases::UseCases;
use workspace_plugins::app::usecases::staging::Staged;
use workspace_plugins::domain::staging::UnsafeEntry;
use workspace_plugins::ports::resolver::{FetchError, FetchLimits, SourceResolver, SpecCheck};

use support::git::{GitServer, Repo, ServerOptions};
use support::hostile::wait_until_empty;

const TOKEN: &str = "ghp_s3cret-test-token-0123456789";

fn limits(max_bytes: u64) -> FetchLimits {
    FetchLimits::new(max_bytes, 10_000)
}

fn resolver(server: &GitServer, token: Option<&str>) -> GitResolver {
    GitResolver::new(&server.base_url, token.map(str::to_owned), None).expect("resolver")
}

/// Fetches `spec` into a fresh directory; returns it with the result.
async fn fetch_with(
    resolver: &GitResolver,
    spec: &str,
    limits: &FetchLimits,
) -> (tempfile::TempDir, Result<String, FetchError>) {
    let parent = tempfile::tempdir().unwrap();
    let dest = parent.path().join("stage");
    std::fs::create_dir(&dest).unwrap();
    let result = resolver.fetch(spec, &dest, limits).await.map(|f| f.name);
    let leftovers: Vec<_> = std::fs::read_dir(parent.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["stage"], "the git work dir is gone: {spec}");
    (parent, result)
}

async fn fetch(
    resolver: &GitResolver,
    spec: &str,
) -> (tempfile::TempDir, Result<String, FetchError>) {
    fetch_with(resolver, spec, &limits(1024 * 1024)).await
}

fn read(dir: &tempfile::TempDir, path: &str) -> String {
    std::fs::read_to_string(dir.path().join("stage").join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every path of the staged tree, sorted (`/`-separated, dirs end in `/`).
fn listing(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, rel: &str, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(root.join(rel)).unwrap() {
            let entry = entry.unwrap();
            let name = format!("{rel}{}", entry.file_name().to_string_lossy());
            if entry.file_type().unwrap().is_dir() {
                out.push(format!("{name}/"));
                walk(root, &format!("{name}/"), out);
            } else {
                out.push(name);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out);
    out.sort();
    out
}

fn mode(dir: &tempfile::TempDir, path: &str) -> u32 {
    std::fs::metadata(dir.path().join("stage").join(path))
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

/// The history most tests use, published as `acme/demo`:
///
/// ```text
/// c1 (tag v1.0.0, annotated; lightweight tag light)  version 1, run.sh executable
/// c2                                                  version 2 (no ref points here)
/// c3 (main)                                           version 3
/// c4 (branch feature/x, from c2)                      version 2, feature.md
/// ```
struct Demo {
    repo: Repo,
    c1: String,
    c2: String,
    c3: String,
    c4: String,
}

fn demo(server: &GitServer, owner: &str, name: &str) -> Demo {
    let repo = server.repo(owner, name);
    repo.write("plugin.yaml", "version: 1.0.0\n")
        .write("rules/a.md", "rule one\n")
        .write_exec("bin/run.sh", "#!/bin/sh\necho hi\n");
    let c1 = repo.commit("one");
    repo.tag("v1.0.0").lightweight_tag("light");
    repo.write("plugin.yaml", "version: 2.0.0\n");
    let c2 = repo.commit("two");
    repo.write("plugin.yaml", "version: 3.0.0\n");
    let c3 = repo.commit("three");
    repo.git(&["checkout", "--quiet", "-b", "feature/x", &c2]);
    repo.write("feature.md", "feature\n");
    let c4 = repo.commit("four");
    repo.checkout("main").publish();
    Demo {
        repo,
        c1,
        c2,
        c3,
        c4,
    }
}

#[tokio::test]
async fn the_grammar_is_checked_without_io_and_pinned_means_a_ref() {
    let r = GitResolver::new("http://127.0.0.1:9", None, None).unwrap();
    assert_eq!(r.scheme(), "github");
    assert_eq!(r.check_spec("o/r#v1"), Ok(SpecCheck { pinned: true }));
    assert_eq!(r.check_spec("o/r"), Ok(SpecCheck { pinned: false }));
    for bad in ["a/b/c#v1", "o/r#-x", "o/r#", "o", "-o/r"] {
        assert!(r.check_spec(bad).is_err(), "{bad}");
    }
}

/// A self-signed CA (P-256), only ever parsed here.
const TEST_CA_PEM: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBnzCCAUWgAwIBAgIUSaSvOXyOuBaakk1x7Cv7rbMzpNUwCgYIKoZIzj0EAwIw\n\
JDEiMCAGA1UEAwwZd29ya3NwYWNlLXBsdWdpbnMgdGVzdCBDQTAgFw0yNjExMjUw\n\
MzU2NDZaGA8yMTI2MTEwMTAzNTY0NlowJDEiMCAGA1UEAwwZd29ya3NwYWNlLXBs\n\
dWdpbnMgdGVzdCBDQTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABFbkUftFLF9m\n\
rEbOqHgZldJTH26uYQpkbuePeQk+LrORZJLLhVmIKE+pF8Gj/kUPa+mYDz4KSBWw\n\
aC1wXPnlBGejUzBRMB0GA1UdDgQWBBTHomwXiXfvuk2bhzjYXa8KnKNwsDAfBgNV\n\
HSMEGDAWgBTHomwXiXfvuk2bhzjYXa8KnKNwsDAPBgNVHRMBAf8EBTADAQH/MAoG\n\
CCqGSM49BAMCA0gAMEUCIA5cNDksY0bYtNi0WomvplLKGg52SPrrL17bJBD7bXlD\n\
AiEAtiiBSROUpkhWpBk7GI1oRqC8TKJ/IivCEB5xqj3o4MU=\n\
-----END CERTIFICATE-----\n";

#[tokio::test]
async fn a_ca_file_is_trusted_or_start_up_fails_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("ca.pem");
    std::fs::write(&good, TEST_CA_PEM).unwrap();
    GitResolver::new("https://git.example", None, Some(&good)).expect("a PEM CA loads");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    for bad in [garbage, dir.path().join("missing.pem")] {
        let err = GitResolver::new("https://git.example", None, Some(&bad)).unwrap_err();
        assert!(err.to_string().contains("PLUGIN_HTTPS_CA_FILE"), "{err}");
    }
}

#[tokio::test]
async fn a_tag_stages_its_tree_without_git_and_keeps_the_executable_bit() {
    let server = GitServer::start().await;
    let d = demo(&server, "acme", "demo");
    let r = resolver(&server, None);
    let (dir, result) = fetch(&r, "acme/demo#v1.0.0").await;
    assert_eq!(result.unwrap(), "demo");
    assert_eq!(
        listing(&dir.path().join("stage")),
        ["bin/", "bin/run.sh", "plugin.yaml", "rules/", "rules/a.md"],
        "the tree of c1 ({}), no .git",
        d.c1
    );
    assert_eq!(read(&dir, "plugin.yaml"), "version: 1.0.0\n");
    assert_eq!(read(&dir, "rules/a.md"), "rule one\n");
    assert_eq!(mode(&dir, "bin/run.sh"), 0o755);
    assert_eq!(mode(&dir, "plugin.yaml"), 0o644);

    let (dir, result) = fetch(&r, "acme/demo#light").await;
    assert_eq!(result.unwrap(), "demo", "a lightweight tag too");
    assert_eq!(read(&dir, "plugin.yaml"), "version: 1.0.0\n");
}

#[tokio::test]
async fn a_branch_stages_its_tip_including_branches_with_slashes() {
    let server = GitServer::start().await;
    demo(&server, "acme", "demo");
    let r = resolver(&server, None);
    let (dir, result) = fetch(&r, "acme/demo#main").await;
    result.unwrap();
    assert_eq!(read(&dir, "plugin.yaml"), "version: 3.0.0\n");
    let (dir, result) = fetch(&r, "acme/demo#feature/x").await;
    result.unwrap();
    assert_eq!(read(&dir, "plugin.yaml"), "version: 2.0.0\n");
    assert_eq!(read(&dir, "feature.md"), "feature\n");
    assert!(!dir.path().join("stage/.git").exists());
}

#[tokio::test]
async fn full_shas_stage_their_commit_at_a_tip_or_deep_in_history() {
    let server = GitServer::start().await;
    let d = demo(&server, "acme", "demo");
    let r = resolver(&server, None);
    // c3 and c4 are branch tips and c1 is tagged: fetched through their
    // ref at depth 1. c2 is no ref's tip, and plain http-backend does not
    // advertise allow-*-sha1-in-want: it takes the fetch-all-refs fallback.
    for (sha, version) in [
        (&d.c3, "3.0.0"),
        (&d.c4, "2.0.0"),
        (&d.c1, "1.0.0"),
        (&d.c2, "2.0.0"),
    ] {
        let (dir, result) = fetch(&r, &format!("acme/demo#{sha}")).await;
        assert_eq!(result.unwrap(), "demo", "{sha}");
        assert_eq!(read(&dir, "plugin.yaml"), format!("version: {version}\n"));
        assert_eq!(dir.path().join("stage/feature.md").exists(), sha == &d.c4);
        assert_eq!(mode(&dir, "bin/run.sh"), 0o755);
    }
    assert_eq!(
        advertisements(&server),
        3 * 2 + 3,
        "tips: ls-remote and fetch; c2: ls-remote, the by-sha attempt \
         libgit2 refuses, the fallback: {:?}",
        server.requests()
    );
    let upper = d.c2.to_ascii_uppercase();
    let (dir, result) = fetch(&r, &format!("acme/demo#{upper}")).await;
    result.unwrap();
    assert_eq!(
        read(&dir, "plugin.yaml"),
        "version: 2.0.0\n",
        "hex is case-free"
    );
}

/// How many times the server advertised refs (one per git connection).
fn advertisements(server: &GitServer) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET") && r.contains("/info/refs"))
        .count()
}

#[tokio::test]
async fn a_sha_is_fetched_directly_when_the_server_allows_reachable_wants() {
    let server = GitServer::start().await;
    let d = demo(&server, "acme", "open");
    d.repo
        .server_config("uploadpack.allowReachableSHA1InWant", "true");
    let r = resolver(&server, None);
    let (dir, result) = fetch(&r, &format!("acme/open#{}", d.c2)).await;
    assert_eq!(result.unwrap(), "open");
    assert_eq!(read(&dir, "plugin.yaml"), "version: 2.0.0\n");
    // Two ref advertisements (the ls-remote, the depth-1 fetch by sha);
    // the fallback would have made a third.
    assert_eq!(advertisements(&server), 2, "{:?}", server.requests());
}

#[tokio::test]
async fn missing_repositories_refs_and_commits_are_not_found() {
    let server = GitServer::start().await;
    demo(&server, "acme", "demo");
    let r = resolver(&server, None);
    for spec in [
        "acme/nope#v1.0.0",
        "nobody/demo#main",
        "acme/demo#v9.9.9",
        "acme/demo#no-such-branch",
        "acme/demo#0123456789abcdef0123456789abcdef01234567",
    ] {
        let (dir, result) = fetch(&r, spec).await;
        assert!(
            matches!(result, Err(FetchError::NotFound)),
            "{spec}: {result:?}"
        );
        assert!(listing(&dir.path().join("stage")).is_empty(), "{spec}");
    }
}

#[tokio::test]
async fn unpinned_specs_fetch_the_default_branch() {
    let server = GitServer::start().await;
    demo(&server, "acme", "demo");
    let (dir, result) = fetch(&resolver(&server, None), "acme/demo").await;
    result.unwrap();
    assert_eq!(read(&dir, "plugin.yaml"), "version: 3.0.0\n");
}

#[tokio::test]
async fn a_private_repository_needs_the_token_which_is_never_shown() {
    let server = GitServer::start_with(ServerOptions {
        token: Some(TOKEN.into()),
        ..Default::default()
    })
    .await;
    demo(&server, "acme", "private");

    // No token: the server's 401 is, to us, a repository we cannot see.
    let anonymous = resolver(&server, None);
    let (_dir, result) = fetch(&anonymous, "acme/private#v1.0.0").await;
    assert!(matches!(result, Err(FetchError::NotFound)), "{result:?}");

    // A wrong token: an operator problem (502), not "not found".
    let wrong = resolver(&server, Some("wrong-token"));
    let (_dir, result) = fetch(&wrong, "acme/private#v1.0.0").await;
    let err = result.unwrap_err();
    assert!(matches!(err, FetchError::Other(_)), "{err:?}");

    let authorized = resolver(&server, Some(TOKEN));
    let (dir, result) = fetch(&authorized, "acme/private#v1.0.0").await;
    assert_eq!(result.unwrap(), "private");
    assert_eq!(read(&dir, "plugin.yaml"), "version: 1.0.0\n");

    // The token appears in no error and no Debug output.
    let mut shown = vec![
        format!("{authorized:?}"),
        format!("{err}"),
        format!("{err:?}"),
    ];
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(&err);
    while let Some(c) = cause {
        shown.push(c.to_string());
        cause = c.source();
    }
    for spec in ["acme/private#nope", "acme/missing#v1", "acme/private"] {
        let (_dir, result) = fetch(&authorized, spec).await;
        shown.push(format!("{:?}", result.map_err(|e| format!("{e} {e:?}"))));
    }
    for text in &shown {
        assert!(!text.contains(TOKEN), "token leaked: {text}");
    }
    // And it was sent in a header, never in a URL.
    assert!(server.requests().iter().all(|r| !r.contains(TOKEN)));
}

#[tokio::test]
async fn symlinks_and_submodules_are_refused() {
    let server = GitServer::start().await;
    let repo = server.repo("acme", "links");
    repo.write("plugin.yaml", "version: 1.0.0\n")
        .write("docs/readme.md", "x")
        .symlink("docs/passwd", "/etc/passwd");
    repo.commit("link");
    repo.tag("v1");
    let sub = server.repo("acme", "subs");
    sub.write("plugin.yaml", "version: 1.0.0\n");
    let base = sub.commit("base");
    sub.git(&[
        "update-index",
        "--add",
        "--cacheinfo",
        &format!("160000,{base},vendor"),
    ]);
    sub.git(&["commit", "--quiet", "-m", "submodule"]);
    sub.tag("v1");
    repo.publish();
    sub.publish();

    let r = resolver(&server, None);
    let (_dir, result) = fetch(&r, "acme/links#v1").await;
    match result {
        Err(FetchError::Unsafe(UnsafeEntry::Symlink(path))) => assert_eq!(path, "docs/passwd"),
        other => panic!("expected a symlink refusal: {other:?}"),
    }
    let (_dir, result) = fetch(&r, "acme/subs#v1").await;
    match result {
        Err(FetchError::Unsafe(UnsafeEntry::SpecialFile(path))) => assert_eq!(path, "vendor"),
        other => panic!("expected a special-file refusal: {other:?}"),
    }
}

/// Incompressible bytes, so a pack is about as large as the file.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

#[tokio::test]
async fn a_tree_over_the_cap_stops_at_the_cap() {
    let server = GitServer::start().await;
    let repo = server.repo("acme", "big");
    repo.write("a.bin", noise(6_000, 1))
        .write("b.bin", noise(6_000, 2));
    repo.commit("big");
    repo.tag("v1").publish();
    let r = resolver(&server, None);
    let (dir, result) = fetch_with(&r, "acme/big#v1", &limits(10_000)).await;
    assert!(matches!(result, Err(FetchError::TooLarge)), "{result:?}");
    let written: u64 = listing(&dir.path().join("stage"))
        .iter()
        .map(|p| {
            std::fs::metadata(dir.path().join("stage").join(p))
                .unwrap()
                .len()
        })
        .sum();
    assert!(
        written <= 10_000,
        "never more than the cap on disk: {written}"
    );
    let (_dir, result) = fetch_with(&r, "acme/big#v1", &limits(12_000)).await;
    result.expect("exactly at the cap is fine");
}

#[tokio::test]
async fn a_cancelled_fetch_stops() {
    let server = GitServer::start_with(ServerOptions {
        throttle: Some((4 * 1024, Duration::from_millis(20))),
        ..Default::default()
    })
    .await;
    let repo = server.repo("acme", "slow");
    repo.write("big.bin", noise(2 * 1024 * 1024, 3));
    repo.commit("big");
    repo.tag("v1").publish();
    let r = resolver(&server, None);

    let cancelled = limits(1 << 30);
    cancelled.cancel.cancel();
    let (_dir, result) = fetch_with(&r, "acme/slow#v1", &cancelled).await;
    assert!(matches!(result, Err(FetchError::Cancelled)), "{result:?}");
    assert!(server.requests().is_empty(), "nothing was sent");

    // Mid-transfer: cancelled once the server was asked for the pack,
    // which trickles in (about 10 s in full); the transfer-progress
    // callback sees the flag and aborts.
    let l = limits(1 << 30);
    let cancel = l.cancel.clone();
    let asked = async {
        server
            .wait_for_requests(|r| r.iter().any(|line| line.starts_with("POST ")))
            .await;
        cancel.cancel();
    };
    let started = Instant::now();
    let ((_dir, result), ()) = tokio::join!(fetch_with(&r, "acme/slow#v1", &l), asked);
    assert!(matches!(result, Err(FetchError::Cancelled)), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "stopped promptly: {:?}",
        started.elapsed()
    );
}

// ---- the staging pipeline (SPEC §4), as install and download run it ----

struct Pipeline {
    app: UseCases,
    data_dir: tempfile::TempDir,
}

async fn pipeline(server: &GitServer, extra: &[&str]) -> Pipeline {
    let data_dir = tempfile::tempdir().unwrap();
    let db_url = format!(
        "sqlite://{}?mode=rwc",
        data_dir.path().join("test.db").display()
    );
    let data = data_dir.path().display().to_string();
    let plugins = support::app::repo_plugins_dir().display().to_string();
    let mut args = vec![
        "workspace-plugins",
        "--database-url",
        &db_url,
        "--plugin-admin-token",
        support::app::ADMIN_TOKEN,
        "--plugin-data-dir",
        &data,
        "--plugins-dir",
        &plugins,
        "--plugin-github-base-url",
        &server.base_url,
    ];
    args.extend_from_slice(extra);
    let settings = Settings::try_parse_from(args)
        .expect("settings")
        .normalized();
    let app = server::use_cases(&settings).await.expect("use cases");
    Pipeline { app, data_dir }
}

impl Pipeline {
    fn staging_root(&self) -> std::path::PathBuf {
        self.data_dir.path().join("staging")
    }

    fn staging_entries(&self) -> Vec<String> {
        std::fs::read_dir(self.staging_root())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    async fn stage(&self, source: &str, within: Duration) -> Result<Staged, Problem> {
        self.app
            .staging()
            .stage(Some(source), None, tokio::time::Instant::now() + within)
            .await
            .map_err(|e: AppError| Problem::from(e))
    }
}

fn status(result: &Result<Staged, Problem>) -> u16 {
    match result {
        Ok(_) => 200,
        Err(p) => p.status().as_u16(),
    }
}

#[tokio::test]
async fn the_pipeline_stages_github_sources_and_maps_fetch_errors() {
    let server = GitServer::start().await;
    let d = demo(&server, "acme", "demo");
    let p = pipeline(&server, &[]).await;
    let long = Duration::from_secs(60);

    let staged = p.stage("github://acme/demo#v1.0.0", long).await.unwrap();
    assert_eq!(staged.name.as_str(), "demo");
    assert_eq!(staged.source.redacted(), "github://acme/demo#v1.0.0");
    let paths: Vec<&str> = staged.tree.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["bin/run.sh", "plugin.yaml", "rules/a.md"]);
    assert_eq!(
        staged.tree.plugin_yaml.as_deref(),
        Some(&b"version: 1.0.0\n"[..])
    );
    let by_sha = p
        .stage(&format!("GitHub://acme/demo#{}", d.c1), long)
        .await
        .unwrap();
    assert_eq!(by_sha.digest, staged.digest, "same tree, same digest");
    drop((staged, by_sha));
    wait_until_empty(&p.staging_root()).await;

    for (source, expected) in [
        ("github://acme/missing#v1", 404),
        ("github://acme/demo#v404", 404),
        ("github://acme/demo", 422),
        ("github://acme/demo/x#v1", 400),
        ("github://acme/demo#-x", 400),
    ] {
        let result = p.stage(source, long).await;
        assert_eq!(status(&result), expected, "{source}: {result:?}");
        wait_until_empty(&p.staging_root()).await;
    }
    let unpinned = p.stage("github://acme/demo", long).await.unwrap_err();
    assert!(
        unpinned.body().error.contains("PLUGIN_ALLOW_UNPINNED=true"),
        "{:?}",
        unpinned.body()
    );
}

#[tokio::test]
async fn unpinned_sources_stage_when_the_operator_allows_them() {
    let server = GitServer::start().await;
    demo(&server, "acme", "demo");
    let p = pipeline(&server, &["--plugin-allow-unpinned", "true"]).await;
    let staged = p
        .stage("github://acme/demo", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        staged.tree.plugin_yaml.as_deref(),
        Some(&b"version: 3.0.0\n"[..])
    );
}

#[tokio::test]
async fn hostile_and_oversized_repositories_are_refused_and_leave_nothing() {
    let server = GitServer::start().await;
    let repo = server.repo("acme", "big");
    repo.write("a.bin", noise(30_000, 4));
    repo.commit("big");
    repo.tag("v1");
    repo.symlink("link", "/etc/passwd");
    repo.commit("link");
    repo.tag("v2").publish();
    let p = pipeline(&server, &["--plugin-install-max-dir-bytes", "20000"]).await;
    let long = Duration::from_secs(60);

    let too_large = p.stage("github://acme/big#v1", long).await.unwrap_err();
    assert_eq!(too_large.status().as_u16(), 413);
    assert_eq!(too_large.body().error, "staged plugin exceeds size limit");
    wait_until_empty(&p.staging_root()).await;

    let p = pipeline(&server, &[]).await;
    let symlink = p.stage("github://acme/big#v2", long).await.unwrap_err();
    assert_eq!(symlink.status().as_u16(), 400);
    assert_eq!(symlink.body().error, "plugin contains a symlink: link");
    wait_until_empty(&p.staging_root()).await;
}

#[tokio::test]
async fn a_wrong_token_is_a_502_that_shows_neither_token_nor_cause() {
    let server = GitServer::start_with(ServerOptions {
        token: Some(TOKEN.into()),
        ..Default::default()
    })
    .await;
    demo(&server, "acme", "private");
    let p = pipeline(&server, &["--plugin-github-token", "not-the-token"]).await;
    let err = p
        .stage("github://acme/private#v1.0.0", Duration::from_secs(60))
        .await
        .unwrap_err();
    assert_eq!(err.status().as_u16(), 502);
    assert_eq!(err.body().error, "failed to fetch plugin from github");
    let body = format!("{:?}", err.body());
    assert!(
        !body.contains("not-the-token") && !body.contains("rejected"),
        "{body}"
    );

    let p = pipeline(&server, &["--plugin-github-token", TOKEN]).await;
    let staged = p
        .stage("github://acme/private#v1.0.0", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(staged.name.as_str(), "private");
}

#[tokio::test]
async fn a_stalled_server_times_out_promptly_and_the_fetch_cleans_up() {
    let stall = Duration::from_secs(3);
    let server = GitServer::start_with(ServerOptions {
        stall: Some(stall),
        ..Default::default()
    })
    .await;
    demo(&server, "acme", "demo");
    let p = pipeline(&server, &[]).await;
    let started = Instant::now();
    let err = p
        .stage("github://acme/demo#v1.0.0", Duration::from_millis(500))
        .await
        .unwrap_err();
    let answered = started.elapsed();
    assert_eq!(err.status().as_u16(), 504, "{err:?}");
    assert!(answered < Duration::from_secs(2), "promptly: {answered:?}");
    assert_eq!(server.requests().len(), 1, "the request reached the server");

    // The fetch thread is still blocked on the socket; when the server
    // hangs up it sees the cancellation, removes its work dir and returns.
    let deadline = Instant::now() + stall + Duration::from_secs(10);
    while !p.staging_entries().is_empty() {
        assert!(
            Instant::now() < deadline,
            "staging root still holds {:?}",
            p.staging_entries()
        );
        // Polled: nothing announces the blocked fetch's end.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_git_bomb_is_refused_as_too_many_entries_in_seconds_not_at_the_deadline() {
    let server = GitServer::start().await;
    let repo = server.repo("acme", "bomb");
    // One empty blob, ten names for it, then ten levels of ten references
    // to the level below: 10^10 files from a dozen objects.
    let blob = repo.blob(b"");
    let names: Vec<Vec<u8>> = (0..10).map(|i| format!("e{i}").into_bytes()).collect();
    let mut tree = repo.mktree(
        &names
            .iter()
            .map(|n| ("100644", "blob", blob.clone(), n.clone()))
            .collect::<Vec<_>>(),
    );
    for _ in 0..10 {
        tree = repo.mktree(
            &names
                .iter()
                .map(|n| ("040000", "tree", tree.clone(), n.clone()))
                .collect::<Vec<_>>(),
        );
    }
    repo.commit_tree(&tree, "v1");
    let packed = support::git::git(&repo.bare, &["count-objects", "-v"]);
    let objects_kib: u64 = packed
        .lines()
        .filter_map(|l| l.strip_prefix("size-pack: ").or(l.strip_prefix("size: ")))
        .map(|v| v.trim().parse::<u64>().unwrap())
        .sum();
    assert!(objects_kib < 64, "a few KB of objects: {packed}");

    // The default entry cap (10000), and a deadline far away.
    let p = pipeline(&server, &[]).await;
    let started = Instant::now();
    let err = p
        .stage("github://acme/bomb#v1", Duration::from_secs(120))
        .await
        .unwrap_err();
    let answered = started.elapsed();
    assert_eq!(err.status().as_u16(), 413, "{:?}", err.body());
    assert_eq!(err.body().error, "staged plugin has too many entries");
    assert_eq!(err.body().source.as_deref(), Some("github://acme/bomb#v1"));
    assert!(answered < Duration::from_secs(30), "promptly: {answered:?}");
    wait_until_empty(&p.staging_root()).await;
}

/// Sends `request` and returns its status, `Retry-After` and JSON body.
async fn answer(request: reqwest::RequestBuilder) -> (u16, Option<String>, serde_json::Value) {
    let response = request.send().await.expect("request");
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, body) = support::app::json(response).await;
    (status, retry_after, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_past_the_concurrency_limit_wait_briefly_then_get_429_with_retry_after() {
    use support::app::{ADMIN_TOKEN, Options, spawn_app_with};
    // The server accepts each request, then says nothing: a fetch that
    // reaches it holds its slot.
    let server = GitServer::start_with(ServerOptions {
        stall: Some(Duration::from_secs(60)),
        ..Default::default()
    })
    .await;
    demo(&server, "acme", "demo");
    let app = spawn_app_with(Options {
        extra_args: vec![
            "--plugin-github-base-url".into(),
            server.base_url.clone(),
            "--plugin-max-concurrent-fetches".into(),
            "2".into(),
        ],
        ..Options::default()
    })
    .await;
    // Three tenants: installs into one workspace wait for each other
    // before they stage, so only installs into different workspaces
    // compete for the slots.
    for i in 0..3 {
        app.create_workspace(
            &format!("busy{i}"),
            serde_json::json!({"name": "busy", "runtime": "claude_code", "container": format!("wp-busy-{i}-no-such-container")}),
        )
        .await;
    }
    let install = |i: usize| {
        app.req(
            reqwest::Method::POST,
            &format!("/workspaces/busy{i}/plugins"),
            Some(ADMIN_TOKEN),
        )
        .json(&serde_json::json!({"source": "github://acme/demo#v1.0.0"}))
    };
    let holders: Vec<_> = (0..2).map(|i| tokio::spawn(install(i).send())).collect();
    // Both slots are taken once the server has accepted both fetches.
    server.wait_for_requests(|r| r.len() >= 2).await;

    let started = Instant::now();
    let (status, retry_after, body) = answer(install(2)).await;
    let waited = started.elapsed();
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "too many plugin fetches in progress");
    assert_eq!(retry_after.as_deref(), Some("5"));
    assert!(
        waited >= workspace_plugins::app::usecases::staging::FETCH_SLOT_WAIT
            && waited < Duration::from_secs(15),
        "waited briefly for a slot: {waited:?}"
    );
    // A download that must stage (not packed ahead of time, as registry
    // plugins are) waits for a slot the same way.
    let (status, retry_after, body) = answer(app.req(
        reqwest::Method::GET,
        "/workspaces/busy2/plugins/demo/download?source=github://acme/demo%23v1.0.0",
        Some(ADMIN_TOKEN),
    ))
    .await;
    assert_eq!(
        (status, retry_after.as_deref(), body["error"].as_str()),
        (429, Some("5"), Some("too many plugin fetches in progress"))
    );
    assert_eq!(
        server.requests().len(),
        2,
        "the refused requests never reached the server"
    );
    for holder in holders {
        holder.abort();
    }
}
