//! Use-case tests for install and uninstall over mocked ports: every
//! branch, and the order of the checks.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use mockall::Sequence;
use mockall::predicate::*;

use super::*;
use crate::adapters::fs::{FsStaging, StagingWriter};
use crate::app::auth::Principal;
use crate::app::testing::{Ports, workspace};
use crate::domain::digest::{FileDigest, sha256, tree_digest};
use crate::domain::source::SpecError;
use crate::domain::staging::StagingError;
use crate::ports::container::{ContainerEngine, ContainerFile, ExecOutput, MockContainerEngine};
use crate::ports::receipts::MockReceiptStore;
use crate::ports::resolver::{FetchError, FetchLimits, Fetched, SourceResolver, SpecCheck};
use crate::ports::store::{AllowlistEntry, MockAllowlistStore, StoreError};

/// A resolver that writes a fixed tree, fails, or dawdles.
struct FakeResolver {
    files: Vec<(&'static str, Vec<u8>)>,
    name: &'static str,
    pinned: bool,
    fail: Option<fn() -> FetchError>,
    delay: Duration,
    fetched: Arc<AtomicBool>,
}

impl FakeResolver {
    fn plugin(files: &[(&'static str, &str)]) -> Self {
        Self {
            files: files
                .iter()
                .map(|(p, c)| (*p, c.as_bytes().to_vec()))
                .collect(),
            name: "demo",
            pinned: true,
            fail: None,
            delay: Duration::ZERO,
            fetched: Arc::new(AtomicBool::new(false)),
        }
    }
}

#[async_trait]
impl SourceResolver for FakeResolver {
    fn scheme(&self) -> &'static str {
        "fake"
    }

    fn check_spec(&self, spec: &str) -> Result<SpecCheck, SpecError> {
        if spec.starts_with("Bad") {
            return Err(SpecError::InvalidName);
        }
        Ok(SpecCheck {
            pinned: self.pinned,
        })
    }

    async fn fetch(
        &self,
        _spec: &str,
        dest: &Path,
        limits: &FetchLimits,
    ) -> Result<Fetched, FetchError> {
        self.fetched.store(true, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        if let Some(fail) = self.fail {
            return Err(fail());
        }
        let mut writer = StagingWriter::new(dest, limits);
        for (path, content) in &self.files {
            writer.file(path.as_bytes(), false, content.as_slice(), |e| {
                FetchError::Other(Box::new(e))
            })?;
        }
        Ok(Fetched {
            name: self.name.to_owned(),
            tree: writer.finish()?,
        })
    }
}

/// Which staging refusal a case expects.
type Expect = fn(&StagingError) -> bool;

const YAML: &str = "version: 1.0.0\nskills: [review, ../evil]\n";

fn demo_digest() -> crate::domain::digest::TreeDigest {
    tree_digest(&[FileDigest {
        path: "plugin.yaml".into(),
        sha256: sha256(YAML.as_bytes()),
    }])
}

struct Harness {
    ports: Ports,
    _staging_root: tempfile::TempDir,
    fetched: Arc<AtomicBool>,
}

fn harness(resolver: FakeResolver) -> Harness {
    let root = tempfile::tempdir().unwrap();
    let fetched = resolver.fetched.clone();
    let mut ports = Ports {
        staging: Arc::new(FsStaging::open(root.path()).unwrap()),
        ..Ports::default()
    };
    ports.resolvers.register(Arc::new(resolver));
    Harness {
        ports,
        _staging_root: root,
        fetched,
    }
}

fn open_allowlist() -> MockAllowlistStore {
    let mut allowlists = MockAllowlistStore::new();
    allowlists.expect_allowlist().returning(|_| Ok(vec![]));
    allowlists
}

fn ok_exec() -> ExecOutput {
    ExecOutput::default()
}

fn failed_exec() -> ExecOutput {
    ExecOutput {
        exit_code: 1,
        stdout: vec![],
        stderr: b"boom at /secret/path".to_vec(),
    }
}

fn running(engine: &mut MockContainerEngine) {
    engine
        .expect_state()
        .returning(|_| ContainerState::Running { id: "cid".into() });
}

fn body(
    source: &str,
) -> impl std::future::Future<Output = Result<(Option<String>, Option<String>), AppError>> {
    let source = source.to_owned();
    async move { Ok((Some(source), None)) }
}

async fn run_install(h: Harness, source: &str) -> Result<Installed, AppError> {
    let state = h.ports.into_state();
    install(
        &state,
        &Principal::Admin,
        &workspace("ws1", "claude_code", "online"),
        body(source),
    )
    .await
}

fn staging_error(result: Result<Installed, AppError>) -> StagingError {
    match result {
        Err(AppError::Staging(e)) => e,
        other => panic!("expected a staging error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_runtime_guard_answers_before_the_body_is_read() {
    let h = harness(FakeResolver::plugin(&[("plugin.yaml", YAML)]));
    let state = h.ports.into_state();
    let body_read = Arc::new(AtomicBool::new(false));
    let flag = body_read.clone();
    let read_body = async move {
        flag.store(true, Ordering::SeqCst);
        Err(AppError::InvalidBody)
    };
    let result = install(
        &state,
        &Principal::Admin,
        &workspace("ws1", "external", "online"),
        read_body,
    )
    .await;
    assert!(matches!(result, Err(AppError::Guard(_))), "{result:?}");
    assert!(
        !body_read.load(Ordering::SeqCst),
        "an invalid body never decides an external workspace's answer"
    );
}

#[tokio::test]
async fn a_bad_body_is_refused_before_anything_is_fetched() {
    let h = harness(FakeResolver::plugin(&[]));
    let fetched = h.fetched.clone();
    let state = h.ports.into_state();
    let result = install(
        &state,
        &Principal::Admin,
        &workspace("ws1", "x", "online"),
        async { Err(AppError::InvalidBody) },
    )
    .await;
    assert!(matches!(result, Err(AppError::InvalidBody)));
    assert!(!fetched.load(Ordering::SeqCst));
}

#[tokio::test]
async fn pipeline_refusals_before_the_fetch_come_in_spec_order() {
    let cases: [(&str, Option<&str>, Expect); 5] = [
        ("  ", None, |e| matches!(e, StagingError::SourceRequired)),
        ("9bad://x", None, |e| matches!(e, StagingError::Unparsable)),
        (
            "oci://x",
            None,
            |e| matches!(e, StagingError::NoResolver { available, .. } if available == &["fake"]),
        ),
        ("fake://Bad", Some("zz"), |e| {
            matches!(e, StagingError::InvalidName { .. })
        }),
        ("fake://ok", Some("zz"), |e| {
            matches!(e, StagingError::CallerSha256 { .. })
        }),
    ];
    for (source, sha, expected) in cases {
        let h = harness(FakeResolver::plugin(&[("plugin.yaml", YAML)]));
        let fetched = h.fetched.clone();
        let state = h.ports.into_state();
        let sha = sha.map(String::from);
        let src = source.to_owned();
        let result = install(
            &state,
            &Principal::Admin,
            &workspace("ws1", "x", "online"),
            async move { Ok((Some(src), sha)) },
        )
        .await;
        let err = staging_error(result);
        assert!(expected(&err), "{source}: {err:?}");
        assert!(
            !fetched.load(Ordering::SeqCst),
            "{source}: refused before any fetch"
        );
    }
}

#[tokio::test]
async fn an_unpinned_source_is_422_unless_allowed() {
    let mut resolver = FakeResolver::plugin(&[("plugin.yaml", YAML)]);
    resolver.pinned = false;
    let err = staging_error(run_install(harness(resolver), "fake://demo").await);
    assert!(matches!(err, StagingError::Unpinned { .. }));
}

#[tokio::test]
async fn fetch_failures_map_to_404_502_and_504_without_the_cause() {
    let cases: [(fn() -> FetchError, Expect); 3] = [
        (
            || FetchError::NotFound,
            |e| matches!(e, StagingError::NotFound { .. }),
        ),
        (
            || FetchError::Other("token=s3cret /srv/x".into()),
            |e| matches!(e, StagingError::FetchFailed { .. }),
        ),
        (
            || FetchError::TooLarge,
            |e| matches!(e, StagingError::TooLarge { .. }),
        ),
    ];
    for (fail, expected) in cases {
        let mut resolver = FakeResolver::plugin(&[]);
        resolver.fail = Some(fail);
        let err = staging_error(run_install(harness(resolver), "fake://demo").await);
        assert!(expected(&err), "{err:?}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
    let mut slow = FakeResolver::plugin(&[("plugin.yaml", YAML)]);
    slow.delay = Duration::from_secs(5);
    let mut h = harness(slow);
    h.ports.policy.fetch_timeout = Duration::from_millis(50);
    let err = staging_error(run_install(h, "fake://demo").await);
    assert!(matches!(err, StagingError::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn staged_trees_are_checked_for_name_size_integrity_and_caller_digest() {
    let mut bad_name = FakeResolver::plugin(&[("plugin.yaml", YAML)]);
    bad_name.name = "../escape";
    let err = staging_error(run_install(harness(bad_name), "fake://demo").await);
    assert!(matches!(
        err,
        StagingError::ResolverReturnedInvalidName { .. }
    ));

    let mut h = harness(FakeResolver::plugin(&[("big", &"x".repeat(2048))]));
    h.ports.policy.max_dir_bytes = 1024;
    assert!(matches!(
        staging_error(run_install(h, "fake://demo").await),
        StagingError::TooLarge { .. }
    ));

    let tampered = FakeResolver::plugin(&[
        ("plugin.yaml", YAML),
        ("manifest.json", r#"{"digest":"h1:AAAA"}"#),
    ]);
    assert!(matches!(
        staging_error(run_install(harness(tampered), "fake://demo").await),
        StagingError::Integrity { .. }
    ));

    let h = harness(FakeResolver::plugin(&[("plugin.yaml", YAML)]));
    let state = h.ports.into_state();
    let sha = Some("0".repeat(64));
    let result = install(
        &state,
        &Principal::Admin,
        &workspace("ws1", "x", "online"),
        async move { Ok((Some("fake://demo".into()), sha)) },
    )
    .await;
    let err = staging_error(result);
    assert!(
        err.to_string()
            .starts_with("sha256 mismatch: expected 0000"),
        "{err}"
    );
}

#[tokio::test]
async fn the_allowlist_refuses_and_fails_closed_unless_configured_open() {
    let mut h = harness(FakeResolver::plugin(&[("plugin.yaml", YAML)]));
    let mut allowlists = MockAllowlistStore::new();
    allowlists.expect_allowlist().returning(|_| {
        Ok(vec![AllowlistEntry {
            plugin_name: PluginName::parse("other").unwrap(),
            enabled_by: "admin".into(),
            enabled_at: crate::app::now(),
        }])
    });
    h.ports.allowlists = Arc::new(allowlists);
    let result = run_install(h, "fake://demo").await;
    assert!(
        matches!(
            result,
            Err(AppError::Allowlist(
                crate::domain::policy::AllowlistRefusal::NotAllowed(_)
            ))
        ),
        "{result:?}"
    );

    let mut h = harness(FakeResolver::plugin(&[("plugin.yaml", YAML)]));
    let mut broken = MockAllowlistStore::new();
    broken
        .expect_allowlist()
        .returning(|_| Err(StoreError::Unavailable("down".into())));
    h.ports.allowlists = Arc::new(broken);
    let result = run_install(h, "fake://demo").await;
    assert!(
        matches!(
            result,
            Err(AppError::Allowlist(
                crate::domain::policy::AllowlistRefusal::Unavailable
            ))
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_stopped_or_unknown_container_is_a_distinct_503_and_nothing_is_copied() {
    for (state_, expect_stopped) in [
        (ContainerState::Stopped, true),
        (ContainerState::Unknown, false),
    ] {
        let mut h = harness(FakeResolver::plugin(&[("plugin.yaml", YAML)]));
        h.ports.allowlists = Arc::new(open_allowlist());
        let mut engine = MockContainerEngine::new();
        let s = state_.clone();
        engine.expect_state().returning(move |_| s.clone());
        engine.expect_copy_dir_in().never();
        engine.expect_exec().never();
        h.ports.engine = Arc::new(engine);
        let result = run_install(h, "fake://demo").await;
        if expect_stopped {
            assert!(
                matches!(result, Err(AppError::ContainerNotRunning)),
                "{result:?}"
            );
        } else {
            assert!(
                matches!(result, Err(AppError::EngineUnavailable(_))),
                "{result:?}"
            );
        }
    }
}

fn receipts_with(digest: Option<crate::domain::digest::TreeDigest>) -> MockReceiptStore {
    let mut receipts = MockReceiptStore::new();
    receipts.expect_receipt().returning(move |ws, plugin| {
        Ok(digest.clone().map(|digest| Receipt {
            workspace_id: ws.clone(),
            plugin: plugin.clone(),
            source: "fake://demo".into(),
            digest,
            size_bytes: 1,
            installed_at: crate::app::now(),
            installed_by: "admin".into(),
        }))
    });
    receipts
}

#[tokio::test]
async fn an_identical_reinstall_is_unchanged_copies_nothing_and_does_not_restart() {
    let mut h = harness(FakeResolver::plugin(&[("plugin.yaml", YAML)]));
    h.ports.allowlists = Arc::new(open_allowlist());
    h.ports.receipts = Arc::new(receipts_with(Some(demo_digest())));
    let mut engine = MockContainerEngine::new();
    running(&mut engine);
    engine
        .expect_exec()
        .withf(|_, argv| argv == layout::cleanup_leftovers_argv().as_slice())
        .times(1)
        .returning(|_, _| Ok(ok_exec()));
    engine
        .expect_exec()
        .withf(|_, argv| argv[0] == "test")
        .times(1)
        .returning(|_, _| Ok(ok_exec()));
    engine.expect_copy_dir_in().never();
    engine.expect_restart().never();
    h.ports.engine = Arc::new(engine);
    let state = h.ports.into_state();
    let result = install(
        &state,
        &Principal::Admin,
        &workspace("ws1", "x", "online"),
        body("fake://demo"),
    )
    .await;
    assert_eq!(
        result.unwrap(),
        Installed::Unchanged {
            plugin: PluginName::parse("demo").unwrap(),
            source: "fake://demo".into(),
            digest: demo_digest()
        }
    );
    assert_eq!(state.restarts.pending_count(), 0);
}

fn delivering_engine(copy_ok: bool, swap_ok: bool, seq: &mut Sequence) -> MockContainerEngine {
    let mut engine = MockContainerEngine::new();
    running(&mut engine);
    engine
        .expect_exec()
        .withf(|_, argv| argv == layout::cleanup_leftovers_argv().as_slice())
        .times(1)
        .in_sequence(seq)
        .returning(|_, _| Ok(ok_exec()));
    engine
        .expect_exec()
        .withf(|_, argv| argv == layout::ensure_plugins_dir_argv().as_slice())
        .times(1)
        .in_sequence(seq)
        .returning(|_, _| Ok(ok_exec()));
    engine
        .expect_copy_dir_in()
        .withf(|cid, _, dest| cid == "cid" && dest.starts_with("/configs/plugins/.demo.staging-"))
        .times(1)
        .in_sequence(seq)
        .returning(move |_, local, _| {
            assert!(
                local.join("plugin.yaml").is_file(),
                "the staged tree is copied"
            );
            if copy_ok {
                Ok(())
            } else {
                Err(EngineError::Other("disk full at /var/lib/docker".into()))
            }
        });
    if copy_ok {
        engine
            .expect_exec()
            .withf(|_, argv| {
                argv.len() == 7 && argv[0] == "sh" && argv[5] == "/configs/plugins/demo"
            })
            .times(1)
            .in_sequence(seq)
            .returning(move |_, _| Ok(if swap_ok { ok_exec() } else { failed_exec() }));
    }
    engine
}

#[tokio::test]
async fn a_new_install_copies_to_staging_swaps_records_a_receipt_and_requests_a_restart() {
    let mut h = harness(FakeResolver::plugin(&[("plugin.yaml", YAML)]));
    h.ports.allowlists = Arc::new(open_allowlist());
    let mut receipts = receipts_with(None);
    receipts
        .expect_put_receipt()
        .withf(|r| {
            r.plugin.as_str() == "demo"
                && r.digest == demo_digest()
                && r.installed_by == "tok_070707070707070707070707"
        })
        .times(1)
        .returning(|_| Ok(()));
    h.ports.receipts = Arc::new(receipts);
    let mut seq = Sequence::new();
    h.ports.engine = Arc::new(delivering_engine(true, true, &mut seq));
    let state = h.ports.into_state();
    let principal = Principal::Workspace(crate::domain::token::TokenId::from_random([7; 12]));
    let result = install(
        &state,
        &principal,
        &workspace("ws1", "x", "online"),
        body("fake://demo"),
    )
    .await;
    assert!(
        matches!(result, Ok(Installed::Installed { .. })),
        "{result:?}"
    );
    assert_eq!(state.restarts.pending_count(), 1, "a restart is scheduled");
}

#[tokio::test]
async fn a_failed_copy_or_swap_is_500_with_no_receipt_and_no_restart() {
    for (copy_ok, swap_ok) in [(false, true), (true, false)] {
        let mut h = harness(FakeResolver::plugin(&[("plugin.yaml", YAML)]));
        h.ports.allowlists = Arc::new(open_allowlist());
        let mut receipts = receipts_with(None);
        receipts.expect_put_receipt().never();
        h.ports.receipts = Arc::new(receipts);
        let mut seq = Sequence::new();
        h.ports.engine = Arc::new(delivering_engine(copy_ok, swap_ok, &mut seq));
        let state = h.ports.into_state();
        let result = install(
            &state,
            &Principal::Admin,
            &workspace("ws1", "x", "online"),
            body("fake://demo"),
        )
        .await;
        assert!(
            matches!(result, Err(AppError::CopyFailed(_))),
            "{copy_ok} {swap_ok}: {result:?}"
        );
        assert_eq!(state.restarts.pending_count(), 0);
    }
}

/// An engine whose copy takes longer than any deadline in these tests.
struct SlowCopy(MockContainerEngine);

#[async_trait]
impl ContainerEngine for SlowCopy {
    async fn ping(&self) -> Result<(), EngineError> {
        self.0.ping().await
    }
    async fn state(&self, c: &crate::domain::workspace::ContainerName) -> ContainerState {
        self.0.state(c).await
    }
    async fn copy_dir_in(&self, _: &str, _: &Path, _: &str) -> Result<(), EngineError> {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(())
    }
    async fn read_file(&self, c: &str, p: &str, m: u64) -> Result<ContainerFile, ReadFileError> {
        self.0.read_file(c, p, m).await
    }
    async fn write_file(&self, c: &str, p: &str, f: &ContainerFile) -> Result<(), EngineError> {
        self.0.write_file(c, p, f).await
    }
    async fn exec(&self, c: &str, argv: &[String]) -> Result<ExecOutput, EngineError> {
        self.0.exec(c, argv).await
    }
    async fn restart(&self, c: &str) -> Result<(), EngineError> {
        self.0.restart(c).await
    }
}

#[tokio::test]
async fn the_deadline_firing_during_the_copy_is_504_and_never_swaps() {
    let mut h = harness(FakeResolver::plugin(&[("plugin.yaml", YAML)]));
    h.ports.allowlists = Arc::new(open_allowlist());
    h.ports.receipts = Arc::new(receipts_with(None));
    h.ports.policy.fetch_timeout = Duration::from_millis(300);
    let mut engine = MockContainerEngine::new();
    running(&mut engine);
    engine
        .expect_exec()
        .withf(|_, argv| argv[0] != "sh" || argv[2].contains("for d in"))
        .returning(|_, _| Ok(ok_exec()));
    h.ports.engine = Arc::new(SlowCopy(engine));
    let result = run_install(h, "fake://demo").await;
    match result {
        Err(AppError::InstallTimedOut { source_text }) => assert_eq!(source_text, "fake://demo"),
        other => panic!("{other:?}"),
    }
}

// ------------------------------------------------------------- uninstall

fn uninstall_state(engine: MockContainerEngine, receipts: MockReceiptStore) -> AppState {
    Ports {
        engine: Arc::new(engine),
        receipts: Arc::new(receipts),
        ..Ports::default()
    }
    .into_state()
}

#[tokio::test]
async fn uninstall_refuses_external_workspaces_and_bad_names_before_the_engine() {
    let mut engine = MockContainerEngine::new();
    engine.expect_state().never();
    let state = uninstall_state(engine, MockReceiptStore::new());
    let result = uninstall(&state, &workspace("ws1", "external", "online"), "../x").await;
    assert!(
        matches!(result, Err(AppError::Guard(_))),
        "the guard comes before the name: {result:?}"
    );
    let result = uninstall(&state, &workspace("ws1", "x", "online"), "../x").await;
    assert!(matches!(result, Err(AppError::InvalidPluginName)));
}

#[tokio::test]
async fn uninstall_of_a_plugin_that_is_not_there_is_404_without_restart() {
    let mut engine = MockContainerEngine::new();
    running(&mut engine);
    engine
        .expect_exec()
        .withf(|_, a| a[0] == "sh")
        .returning(|_, _| Ok(ok_exec()));
    engine
        .expect_exec()
        .withf(|_, a| a[0] == "test")
        .returning(|_, _| Ok(failed_exec()));
    let state = uninstall_state(engine, MockReceiptStore::new());
    let result = uninstall(&state, &workspace("ws1", "x", "online"), "demo").await;
    assert!(
        matches!(result, Err(AppError::NotInstalled(_))),
        "{result:?}"
    );
    assert_eq!(state.restarts.pending_count(), 0);
}

fn fixture(rel: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/memory-blocks/{rel}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[tokio::test]
async fn uninstall_reads_first_strips_claude_md_removes_valid_skills_and_the_dir_then_restarts() {
    const P: &str = "molecule-ai-plugin-superpowers";
    let dir = format!("/configs/plugins/{P}");
    let mut engine = MockContainerEngine::new();
    let mut seq = Sequence::new();
    running(&mut engine);
    engine
        .expect_exec()
        .withf(|_, a| a == layout::cleanup_leftovers_argv().as_slice())
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(ok_exec()));
    engine
        .expect_exec()
        .withf(|_, a| a[0] == "test")
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(ok_exec()));
    engine
        .expect_read_file()
        .with(eq("cid"), eq(format!("{dir}/plugin.yaml")), always())
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| {
            Ok(ContainerFile {
                content: fixture(&format!("plugins/{P}/plugin.yaml")).into_bytes(),
                mode: 0o644,
                uid: 1000,
                gid: 1000,
            })
        });
    engine
        .expect_exec()
        .withf(|_, a| a[0] == "sh" && a[2].contains("rules/*.md"))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| {
            Ok(ExecOutput {
                exit_code: 0,
                stdout: b"CLAUDE.md\nREADME.md\nknown-issues.md\n".to_vec(),
                stderr: vec![],
            })
        });
    for file in ["CLAUDE.md", "known-issues.md"] {
        engine
            .expect_read_file()
            .with(eq("cid"), eq(format!("{dir}/{file}")), always())
            .times(1)
            .in_sequence(&mut seq)
            .returning(move |_, _, _| {
                Ok(ContainerFile {
                    content: fixture(&format!("plugins/{P}/{file}")).into_bytes(),
                    mode: 0o644,
                    uid: 1000,
                    gid: 1000,
                })
            });
    }
    engine
        .expect_read_file()
        .with(eq("cid"), eq("/configs/CLAUDE.md"), always())
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| {
            Ok(ContainerFile {
                content: fixture("CLAUDE.before.md").into_bytes(),
                mode: 0o640,
                uid: 1000,
                gid: 1000,
            })
        });
    engine
        .expect_write_file()
        .withf(|_, path, f| {
            path == "/configs/CLAUDE.md"
                && f.content
                    == fixture("CLAUDE.after-uninstall-molecule-ai-plugin-superpowers.md")
                        .as_bytes()
                && (f.mode, f.uid, f.gid) == (0o640, 1000, 1000)
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(()));
    let skills = [
        "executing-plans",
        "systematic-debugging",
        "test-driven-development",
        "verification-before-completion",
        "writing-plans",
    ];
    engine
        .expect_exec()
        .withf(move |_, a| {
            let expected: Vec<String> = skills
                .iter()
                .map(|s| format!("/configs/skills/{s}"))
                .collect();
            a.len() > 3 && a[..3] == ["rm", "-rf", "--"] && a[3..] == expected[..]
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(ok_exec()));
    let d = dir.clone();
    engine
        .expect_exec()
        .withf(move |_, a| a == layout::remove_argv(std::slice::from_ref(&d)).as_slice())
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(ok_exec()));
    engine
        .expect_exec()
        .withf(|_, a| a == ["sync"])
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(ok_exec()));
    let mut receipts = MockReceiptStore::new();
    receipts
        .expect_delete_receipt()
        .times(1)
        .returning(|_, _| Ok(true));
    let state = uninstall_state(engine, receipts);
    let name = uninstall(&state, &workspace("ws1", "x", "online"), P)
        .await
        .unwrap();
    assert_eq!(name.as_str(), P);
    assert_eq!(state.restarts.pending_count(), 1);
}

#[tokio::test]
async fn a_half_deleted_plugin_still_uninstalls_and_invalid_skills_are_never_paths() {
    let mut engine = MockContainerEngine::new();
    running(&mut engine);
    engine
        .expect_exec()
        .withf(|_, a| a[0] == "sh" || a[0] == "test" || a[0] == "sync")
        .returning(|_, _| Ok(ok_exec()));
    engine
        .expect_read_file()
        .withf(|_, p, _| p.ends_with("plugin.yaml"))
        .returning(|_, _, _| {
            Ok(ContainerFile {
                content: b"skills: [../../etc, ok-skill, 'a/b']\n".to_vec(),
                mode: 0o644,
                uid: 1000,
                gid: 1000,
            })
        });
    engine
        .expect_read_file()
        .withf(|_, p, _| p == "/configs/CLAUDE.md")
        .returning(|_, _, _| Err(ReadFileError::NotFound));
    engine.expect_write_file().never();
    engine
        .expect_exec()
        .withf(|_, a| a[0] == "rm" && a.len() == 4)
        .times(2)
        .returning(|_, a| {
            assert!(
                a[3] == "/configs/skills/ok-skill" || a[3] == "/configs/plugins/demo",
                "{a:?}"
            );
            Ok(ok_exec())
        });
    let mut receipts = MockReceiptStore::new();
    receipts.expect_delete_receipt().returning(|_, _| Ok(false));
    let state = uninstall_state(engine, receipts);
    assert!(
        uninstall(&state, &workspace("ws1", "x", "online"), "demo")
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_failed_removal_is_500_and_keeps_the_receipt() {
    let mut engine = MockContainerEngine::new();
    running(&mut engine);
    engine
        .expect_exec()
        .withf(|_, a| a[0] == "sh" || a[0] == "test")
        .returning(|_, _| Ok(ok_exec()));
    engine
        .expect_read_file()
        .returning(|_, _, _| Err(ReadFileError::NotFound));
    engine
        .expect_exec()
        .withf(|_, a| a[0] == "rm")
        .returning(|_, _| Ok(failed_exec()));
    let mut receipts = MockReceiptStore::new();
    receipts.expect_delete_receipt().never();
    let state = uninstall_state(engine, receipts);
    let result = uninstall(&state, &workspace("ws1", "x", "online"), "demo").await;
    assert!(
        matches!(result, Err(AppError::RemoveFailed(_))),
        "{result:?}"
    );
    assert_eq!(state.restarts.pending_count(), 0);
}
