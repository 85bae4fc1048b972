//! Use-case tests for install, uninstall and the installed list over
//! mocked ports: every branch, the order of the checks, and the intents
//! the use cases ask of the container ports (never scripts).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::FutureExt;
use mockall::Sequence;
use mockall::predicate::*;
use tokio::sync::Notify;

use super::*;
use crate::adapters::fs::{FsStaging, StagingWriter};
use crate::app::auth::Principal;
use crate::app::http::problem::Problem;
use crate::app::testing::{Ports, workspace};
use crate::domain::digest::{FileDigest, sha256, tree_digest};
use crate::domain::memory::PluginText;
use crate::domain::name::WorkspaceId;
use crate::domain::policy::{AllowlistFailure, AllowlistRefusal};
use crate::domain::source::SpecError;
use crate::domain::staging::StagingError;
use crate::ports::container::{
    InstalledEntry, MockContainerEngine, MockWorkspaceConfigs, PluginMemory, WorkspaceConfigs,
};
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

fn demo() -> PluginName {
    PluginName::parse("demo").unwrap()
}

fn cid() -> ContainerId {
    ContainerId::new("cid")
}

fn demo_digest() -> TreeDigest {
    tree_digest(&[FileDigest {
        path: "plugin.yaml".into(),
        sha256: sha256(YAML.as_bytes()),
    }])
}

/// A digest no staged tree of these tests has.
fn other_digest() -> TreeDigest {
    tree_digest(&[FileDigest {
        path: "plugin.yaml".into(),
        sha256: sha256(b"version: 0.9.0\n"),
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

/// A harness that stages the demo plugin, passes the allowlist and finds
/// the container running: what happens next is up to the test's
/// receipts and configs.
fn to_delivery(receipts: MockReceiptStore, configs: impl WorkspaceConfigs + 'static) -> Harness {
    let mut h = harness(FakeResolver::plugin(&[("plugin.yaml", YAML)]));
    h.ports.allowlists = Arc::new(open_allowlist());
    h.ports.engine = Arc::new(running_engine());
    h.ports.receipts = Arc::new(receipts);
    h.ports.configs = Arc::new(configs);
    h
}

fn open_allowlist() -> MockAllowlistStore {
    let mut allowlists = MockAllowlistStore::new();
    allowlists.expect_allowlist().returning(|_| Ok(vec![]));
    allowlists
}

fn running_engine() -> MockContainerEngine {
    let mut engine = MockContainerEngine::new();
    engine
        .expect_state()
        .returning(|_| ContainerState::Running { id: cid() });
    engine
}

fn engine_in(state: ContainerState) -> MockContainerEngine {
    let mut engine = MockContainerEngine::new();
    engine.expect_state().returning(move |_| state.clone());
    engine
}

fn body(
    source: &str,
) -> impl std::future::Future<Output = Result<(Option<String>, Option<String>), AppError>> {
    let source = source.to_owned();
    async move { Ok((Some(source), None)) }
}

async fn install_demo(state: &AppState) -> Result<Installed, AppError> {
    install(
        state,
        &Principal::Admin,
        &workspace("ws1", "claude_code", "online"),
        body("fake://demo"),
    )
    .await
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

/// The HTTP answer an error becomes: status, message, `Retry-After`.
fn answer<T: std::fmt::Debug>(result: Result<T, AppError>) -> (u16, String, Option<u32>) {
    let error = result.expect_err("expected an error");
    let problem: Problem = Problem::from(error);
    let (status, message) = (problem.status().as_u16(), problem.body().error.clone());
    let response = poem::IntoResponse::into_response(problem);
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    (status, message, retry)
}

fn receipt(digest: TreeDigest) -> Receipt {
    Receipt {
        workspace_id: WorkspaceId::parse("ws1").unwrap(),
        plugin: demo(),
        source: "fake://previous".into(),
        digest,
        size_bytes: 1,
        installed_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        installed_by: "admin".into(),
    }
}

/// Receipts holding `previous` for the demo plugin, and nothing else
/// expected.
fn receipts_with(previous: Option<TreeDigest>) -> MockReceiptStore {
    let mut receipts = MockReceiptStore::new();
    receipts
        .expect_receipt()
        .returning(move |_, _| Ok(previous.clone().map(receipt)));
    receipts
}

// ------------------------------------------------ install: before the container

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

    // Allowed: staging passes and the install goes on to the container.
    let mut resolver = FakeResolver::plugin(&[("plugin.yaml", YAML)]);
    resolver.pinned = false;
    let mut h = harness(resolver);
    h.ports.policy.allow_unpinned = true;
    h.ports.allowlists = Arc::new(open_allowlist());
    h.ports.engine = Arc::new(engine_in(ContainerState::Stopped));
    let result = run_install(h, "fake://demo").await;
    assert!(
        matches!(result, Err(AppError::ContainerNotRunning)),
        "{result:?}"
    );
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
    // Refused and failed-closed installs never reach the engine: its mock
    // has no expectations.
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
            Err(AppError::Allowlist(AllowlistRefusal::NotAllowed(_)))
        ),
        "{result:?}"
    );

    let broken = || {
        let mut broken = MockAllowlistStore::new();
        broken
            .expect_allowlist()
            .returning(|_| Err(StoreError::Unavailable("down".into())));
        broken
    };
    let mut h = harness(FakeResolver::plugin(&[("plugin.yaml", YAML)]));
    h.ports.allowlists = Arc::new(broken());
    let result = run_install(h, "fake://demo").await;
    assert_eq!(
        answer(result),
        (503, "allowlist unavailable".into(), Some(5)),
        "fails closed"
    );

    // Configured open: the install goes on to the container.
    let mut h = harness(FakeResolver::plugin(&[("plugin.yaml", YAML)]));
    h.ports.allowlists = Arc::new(broken());
    h.ports.policy.allowlist_failure = AllowlistFailure::Open;
    h.ports.engine = Arc::new(engine_in(ContainerState::Stopped));
    let result = run_install(h, "fake://demo").await;
    assert!(
        matches!(result, Err(AppError::ContainerNotRunning)),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_stopped_or_unknown_container_is_a_distinct_503_and_nothing_is_delivered() {
    for (state, expected) in [
        (ContainerState::Stopped, "workspace container not running"),
        (ContainerState::Unknown, "container engine unavailable"),
    ] {
        let mut h = harness(FakeResolver::plugin(&[("plugin.yaml", YAML)]));
        h.ports.allowlists = Arc::new(open_allowlist());
        h.ports.engine = Arc::new(engine_in(state.clone()));
        let mut configs = MockWorkspaceConfigs::new();
        configs.expect_is_installed().never();
        configs.expect_deliver().never();
        h.ports.configs = Arc::new(configs);
        let result = run_install(h, "fake://demo").await;
        assert_eq!(
            answer(result),
            (503, expected.to_owned(), Some(5)),
            "{state:?}"
        );
    }
}

// ------------------------------------------------------- install: delivery

#[tokio::test]
async fn an_identical_reinstall_is_unchanged_delivers_nothing_and_does_not_restart() {
    let mut configs = MockWorkspaceConfigs::new();
    configs
        .expect_is_installed()
        .with(eq(cid()), eq(demo()))
        .times(1)
        .returning(|_, _| Ok(true));
    configs.expect_deliver().never();
    // No receipt is dropped or written: the receipts mock expects neither.
    let h = to_delivery(receipts_with(Some(demo_digest())), configs);
    let state = h.ports.into_state();
    let result = install_demo(&state).await;
    assert_eq!(
        result.unwrap(),
        Installed::Unchanged {
            plugin: demo(),
            source: "fake://demo".into(),
            digest: demo_digest()
        }
    );
    assert_eq!(state.restarts.pending_count(), 0);
}

#[tokio::test]
async fn a_matching_receipt_without_its_directory_is_delivered_again() {
    let mut seq = Sequence::new();
    let mut configs = MockWorkspaceConfigs::new();
    let mut receipts = receipts_with(Some(demo_digest()));
    configs
        .expect_is_installed()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(false));
    receipts
        .expect_delete_receipt()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(true));
    configs
        .expect_deliver()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(()));
    receipts
        .expect_put_receipt()
        .withf(|r| r.digest == demo_digest())
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    let h = to_delivery(receipts, configs);
    let state = h.ports.into_state();
    let result = install_demo(&state).await;
    assert!(
        matches!(result, Ok(Installed::Installed { .. })),
        "{result:?}"
    );
    assert_eq!(state.restarts.pending_count(), 1);
}

#[tokio::test]
async fn a_new_install_delivers_the_staged_tree_records_a_receipt_and_requests_a_restart() {
    let mut seq = Sequence::new();
    let mut configs = MockWorkspaceConfigs::new();
    configs
        .expect_deliver()
        .withf(|container, plugin, tree| {
            *container == cid()
                && *plugin == demo()
                && std::fs::read_to_string(tree.join("plugin.yaml"))
                    .ok()
                    .as_deref()
                    == Some(YAML)
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(()));
    let mut receipts = receipts_with(None);
    receipts
        .expect_put_receipt()
        .withf(|r| {
            r.workspace_id.as_str() == "ws1"
                && r.plugin == demo()
                && r.source == "fake://demo"
                && r.digest == demo_digest()
                && r.size_bytes == YAML.len() as u64
                && r.installed_by == "tok_070707070707070707070707"
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    let h = to_delivery(receipts, configs);
    let state = h.ports.into_state();
    let principal = Principal::Workspace(crate::domain::token::TokenId::from_random([7; 12]));
    let result = install(
        &state,
        &principal,
        &workspace("ws1", "x", "online"),
        body("fake://demo"),
    )
    .await;
    assert_eq!(
        result.unwrap(),
        Installed::Installed {
            plugin: demo(),
            source: "fake://demo".into(),
            digest: demo_digest()
        }
    );
    assert_eq!(state.restarts.pending_count(), 1, "a restart is scheduled");
}

#[tokio::test]
async fn a_changed_reinstall_drops_the_old_receipt_before_it_delivers() {
    let mut seq = Sequence::new();
    let mut receipts = receipts_with(Some(other_digest()));
    let mut configs = MockWorkspaceConfigs::new();
    // A different digest needs no look at the container first.
    configs.expect_is_installed().never();
    receipts
        .expect_delete_receipt()
        .with(always(), eq(demo()))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(true));
    configs
        .expect_deliver()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(()));
    receipts
        .expect_put_receipt()
        .withf(|r| r.digest == demo_digest())
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    let h = to_delivery(receipts, configs);
    let state = h.ports.into_state();
    assert!(install_demo(&state).await.is_ok());
    assert_eq!(state.restarts.pending_count(), 1);
}

#[tokio::test]
async fn a_delivery_not_placed_restores_the_previous_receipt_and_is_500() {
    let mut seq = Sequence::new();
    let mut receipts = receipts_with(Some(other_digest()));
    let mut configs = MockWorkspaceConfigs::new();
    receipts
        .expect_delete_receipt()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(true));
    configs
        .expect_deliver()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| {
            Err(DeliveryError::NotPlaced(ConfigsError::Failed(
                "tar: write error at /configs/plugins".into(),
            )))
        });
    receipts
        .expect_put_receipt()
        .with(eq(receipt(other_digest())))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    let h = to_delivery(receipts, configs);
    let state = h.ports.into_state();
    let result = install_demo(&state).await;
    assert_eq!(
        answer(result),
        (500, "failed to copy plugin to container".into(), None)
    );
    assert_eq!(state.restarts.pending_count(), 0);
}

#[tokio::test]
async fn a_delivery_not_placed_without_a_previous_receipt_writes_none() {
    let mut configs = MockWorkspaceConfigs::new();
    configs.expect_deliver().times(1).returning(|_, _, _| {
        Err(DeliveryError::NotPlaced(ConfigsError::UnsafeLayout(
            "/configs/plugins does not resolve to itself",
        )))
    });
    // Neither deleted nor written: the receipts mock expects neither.
    let h = to_delivery(receipts_with(None), configs);
    let state = h.ports.into_state();
    let result = install_demo(&state).await;
    assert_eq!(
        answer(result),
        (500, "failed to copy plugin to container".into(), None)
    );
    assert_eq!(state.restarts.pending_count(), 0);
}

/// A failure to inject, and the status and message it must become.
type FailureCase = (fn() -> ConfigsError, (u16, &'static str));

#[tokio::test]
async fn a_delivery_of_unknown_outcome_leaves_no_receipt() {
    let cases: [FailureCase; 2] = [
        (
            || ConfigsError::Failed("exec output cut".into()),
            (500, "failed to copy plugin to container"),
        ),
        (
            || ConfigsError::Engine(EngineError::Unavailable("no answer within 10s".into())),
            (503, "container engine unavailable"),
        ),
    ];
    for (cause, (status, message)) in cases {
        let mut seq = Sequence::new();
        let mut receipts = receipts_with(Some(other_digest()));
        let mut configs = MockWorkspaceConfigs::new();
        receipts
            .expect_delete_receipt()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(true));
        configs
            .expect_deliver()
            .times(1)
            .in_sequence(&mut seq)
            .returning(move |_, _, _| Err(DeliveryError::Unknown(cause())));
        receipts.expect_put_receipt().never();
        let h = to_delivery(receipts, configs);
        let state = h.ports.into_state();
        let (got_status, got_message, _) = answer(install_demo(&state).await);
        assert_eq!((got_status, got_message.as_str()), (status, message));
        assert_eq!(state.restarts.pending_count(), 0);
    }
}

// ------------------------------------------- one mapping of container failures

#[tokio::test]
async fn a_container_that_stops_under_any_configs_call_is_503_not_running() {
    fn not_running() -> ConfigsError {
        ConfigsError::Engine(EngineError::NotRunning)
    }
    let expected = (503, "workspace container not running".to_owned(), Some(5));

    // Install: the "unchanged" check, then a delivery either way it ends.
    let mut configs = MockWorkspaceConfigs::new();
    configs
        .expect_is_installed()
        .returning(|_, _| Err(not_running()));
    configs.expect_deliver().never();
    // The receipt stays: nothing in the container changed.
    let h = to_delivery(receipts_with(Some(demo_digest())), configs);
    let state = h.ports.into_state();
    assert_eq!(answer(install_demo(&state).await), expected, "is_installed");

    for outcome in [DeliveryError::NotPlaced, DeliveryError::Unknown] {
        let mut configs = MockWorkspaceConfigs::new();
        configs
            .expect_deliver()
            .returning(move |_, _, _| Err(outcome(not_running())));
        let h = to_delivery(receipts_with(None), configs);
        let state = h.ports.into_state();
        assert_eq!(answer(install_demo(&state).await), expected, "deliver");
        assert_eq!(state.restarts.pending_count(), 0);
    }

    // Listing.
    let mut configs = MockWorkspaceConfigs::new();
    configs.expect_installed().returning(|_| Err(not_running()));
    let state = listing_state(configs, MockReceiptStore::new());
    assert_eq!(
        answer(installed(&state, &workspace("ws1", "x", "online")).await),
        expected,
        "installed"
    );

    // Uninstall: reading (the receipt stays), then removing.
    let mut configs = MockWorkspaceConfigs::new();
    configs
        .expect_read_plugin_memory()
        .returning(|_, _| Err(not_running()));
    configs.expect_remove().never();
    let state = uninstall_state(configs, MockReceiptStore::new());
    assert_eq!(answer(uninstall_demo(&state).await), expected, "read");

    let mut configs = MockWorkspaceConfigs::new();
    configs
        .expect_read_plugin_memory()
        .returning(|_, _| Ok(Some(PluginMemory::default())));
    configs
        .expect_remove()
        .returning(|_, _| Err(RemovalError::Configs(not_running())));
    let state = uninstall_state(configs, dropping_receipts());
    assert_eq!(answer(uninstall_demo(&state).await), expected, "remove");
    assert_eq!(state.restarts.pending_count(), 0);
}

#[tokio::test]
async fn other_configs_failures_are_the_operations_own_500() {
    let failures: [fn() -> ConfigsError; 4] = [
        || ConfigsError::UnsafeLayout("/configs/plugins does not resolve to itself"),
        || ConfigsError::TooLarge("container output"),
        || ConfigsError::Failed("exit 7: tar: short read".into()),
        || ConfigsError::Engine(EngineError::Other("engine said 500".into())),
    ];
    for failure in failures {
        let mut configs = MockWorkspaceConfigs::new();
        configs
            .expect_deliver()
            .returning(move |_, _, _| Err(DeliveryError::NotPlaced(failure())));
        let h = to_delivery(receipts_with(None), configs);
        let state = h.ports.into_state();
        let got = answer(install_demo(&state).await);
        assert_eq!(
            got,
            (500, "failed to copy plugin to container".into(), None)
        );

        let mut configs = MockWorkspaceConfigs::new();
        configs
            .expect_installed()
            .returning(move |_| Err(failure()));
        let state = listing_state(configs, MockReceiptStore::new());
        let got = answer(installed(&state, &workspace("ws1", "x", "online")).await);
        assert_eq!(got, (500, "failed to list installed plugins".into(), None));

        let mut configs = MockWorkspaceConfigs::new();
        configs
            .expect_read_plugin_memory()
            .returning(move |_, _| Err(failure()));
        let state = uninstall_state(configs, MockReceiptStore::new());
        let got = answer(uninstall_demo(&state).await);
        assert_eq!(got, (500, "failed to remove plugin".into(), None));
    }
}

// ------------------------------------------ install: deadline and cancellation

/// Configs whose `deliver` and `remove` announce themselves on `started`
/// and then wait for `release` (forever, if it never comes) before
/// answering as `inner` says.
struct Held {
    inner: MockWorkspaceConfigs,
    started: Arc<Notify>,
    release: Arc<Notify>,
}

impl Held {
    fn new(inner: MockWorkspaceConfigs) -> Self {
        Self {
            inner,
            started: Arc::new(Notify::new()),
            release: Arc::new(Notify::new()),
        }
    }

    async fn hold(&self) {
        self.started.notify_one();
        self.release.notified().await;
    }
}

#[async_trait]
impl WorkspaceConfigs for Held {
    async fn deliver(
        &self,
        container: &ContainerId,
        plugin: &PluginName,
        tree: &Path,
    ) -> Result<(), DeliveryError> {
        self.hold().await;
        self.inner.deliver(container, plugin, tree).await
    }

    async fn is_installed(&self, c: &ContainerId, p: &PluginName) -> Result<bool, ConfigsError> {
        self.inner.is_installed(c, p).await
    }

    async fn installed(&self, c: &ContainerId) -> Result<Vec<InstalledEntry>, ConfigsError> {
        self.inner.installed(c).await
    }

    async fn read_plugin_memory(
        &self,
        c: &ContainerId,
        p: &PluginName,
    ) -> Result<Option<PluginMemory>, ConfigsError> {
        self.inner.read_plugin_memory(c, p).await
    }

    async fn remove(&self, c: &ContainerId, removal: &Removal) -> Result<(), RemovalError> {
        self.hold().await;
        self.inner.remove(c, removal).await
    }
}

/// Whether `notify` holds a permit now (the held call started).
fn fired(notify: &Notify) -> bool {
    notify.notified().now_or_never().is_some()
}

#[tokio::test]
async fn the_deadline_firing_during_the_delivery_is_504_with_no_receipt_and_no_restart() {
    let mut receipts = receipts_with(Some(other_digest()));
    receipts
        .expect_delete_receipt()
        .times(1)
        .returning(|_, _| Ok(true));
    receipts.expect_put_receipt().never();
    // Never released: the delivery outlives the deadline.
    let held = Held::new(MockWorkspaceConfigs::new());
    let started = held.started.clone();
    let mut h = to_delivery(receipts, held);
    h.ports.policy.fetch_timeout = Duration::from_secs(1);
    let state = h.ports.into_state();
    let result = install_demo(&state).await;
    assert!(fired(&started), "the deadline fired during the delivery");
    match result {
        Err(AppError::InstallTimedOut { ref source_text }) => {
            assert_eq!(source_text, "fake://demo")
        }
        ref other => panic!("{other:?}"),
    }
    assert_eq!(answer(result).0, 504);
    assert_eq!(state.restarts.pending_count(), 0);
}

#[tokio::test]
async fn a_client_gone_mid_delivery_still_gets_the_receipt_written_when_it_completes() {
    let (written, mut receipt_written) = tokio::sync::mpsc::unbounded_channel();
    let mut receipts = receipts_with(None);
    receipts.expect_put_receipt().times(1).returning(move |r| {
        let _ = written.send(r.clone());
        Ok(())
    });
    let mut inner = MockWorkspaceConfigs::new();
    inner.expect_deliver().times(1).returning(|_, _, _| Ok(()));
    let held = Held::new(inner);
    let (started, release) = (held.started.clone(), held.release.clone());
    let h = to_delivery(receipts, held);
    let state = h.ports.into_state();

    let mut client = Box::pin(install_demo(&state));
    tokio::select! {
        result = &mut client => panic!("the install ended before its delivery was held: {result:?}"),
        () = started.notified() => {}
    }
    drop(client);
    release.notify_one();

    let receipt = tokio::time::timeout(Duration::from_secs(30), receipt_written.recv())
        .await
        .expect("the delivery ran to its end without its client")
        .expect("a receipt");
    assert_eq!((receipt.plugin, receipt.digest), (demo(), demo_digest()));
}

// --------------------------------------------------------------- uninstall

fn uninstall_state(
    configs: impl WorkspaceConfigs + 'static,
    receipts: MockReceiptStore,
) -> AppState {
    Ports {
        engine: Arc::new(running_engine()),
        configs: Arc::new(configs),
        receipts: Arc::new(receipts),
        ..Ports::default()
    }
    .into_state()
}

async fn uninstall_demo(state: &AppState) -> Result<PluginName, AppError> {
    uninstall(state, &workspace("ws1", "x", "online"), "demo").await
}

/// Receipts that expect the demo plugin's to be dropped once.
fn dropping_receipts() -> MockReceiptStore {
    let mut receipts = MockReceiptStore::new();
    receipts
        .expect_delete_receipt()
        .with(always(), eq(demo()))
        .times(1)
        .returning(|_, _| Ok(true));
    receipts
}

fn memory_with_manifest(yaml: &str) -> PluginMemory {
    PluginMemory {
        manifest_yaml: Some(yaml.as_bytes().to_vec()),
        ..PluginMemory::default()
    }
}

#[tokio::test]
async fn uninstall_refuses_external_workspaces_and_bad_names_before_the_engine() {
    let mut engine = MockContainerEngine::new();
    engine.expect_state().never();
    let state = Ports {
        engine: Arc::new(engine),
        ..Ports::default()
    }
    .into_state();
    let result = uninstall(&state, &workspace("ws1", "external", "online"), "../x").await;
    assert!(
        matches!(result, Err(AppError::Guard(_))),
        "the guard comes before the name: {result:?}"
    );
    let result = uninstall(&state, &workspace("ws1", "x", "online"), "../x").await;
    assert!(matches!(result, Err(AppError::InvalidPluginName)));
}

#[tokio::test]
async fn uninstall_in_a_stopped_or_unknown_container_is_a_distinct_503_and_reads_nothing() {
    for (state, expected) in [
        (ContainerState::Stopped, "workspace container not running"),
        (ContainerState::Unknown, "container engine unavailable"),
    ] {
        let mut configs = MockWorkspaceConfigs::new();
        configs.expect_read_plugin_memory().never();
        configs.expect_remove().never();
        let app = Ports {
            engine: Arc::new(engine_in(state.clone())),
            configs: Arc::new(configs),
            ..Ports::default()
        }
        .into_state();
        assert_eq!(
            answer(uninstall_demo(&app).await),
            (503, expected.to_owned(), Some(5)),
            "{state:?}"
        );
    }
}

#[tokio::test]
async fn uninstall_of_a_plugin_that_is_not_there_is_404_drops_a_stale_receipt_and_does_not_restart()
{
    let mut configs = MockWorkspaceConfigs::new();
    configs
        .expect_read_plugin_memory()
        .with(eq(cid()), eq(demo()))
        .times(1)
        .returning(|_, _| Ok(None));
    configs.expect_remove().never();
    let state = uninstall_state(configs, dropping_receipts());
    let result = uninstall_demo(&state).await;
    assert_eq!(
        answer(result),
        (404, "plugin \"demo\" is not installed".into(), None)
    );
    assert_eq!(state.restarts.pending_count(), 0);
}

#[tokio::test]
async fn a_plugin_gone_between_the_read_and_the_removal_is_404_without_restart() {
    let mut configs = MockWorkspaceConfigs::new();
    configs
        .expect_read_plugin_memory()
        .returning(|_, _| Ok(Some(PluginMemory::default())));
    configs
        .expect_remove()
        .times(1)
        .returning(|_, _| Err(RemovalError::NotInstalled));
    let state = uninstall_state(configs, dropping_receipts());
    assert_eq!(answer(uninstall_demo(&state).await).0, 404);
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
async fn uninstall_reads_first_then_asks_for_the_stripped_claude_md_the_valid_skills_and_a_restart()
{
    const P: &str = "molecule-ai-plugin-superpowers";
    let plugin = PluginName::parse(P).unwrap();
    let mut seq = Sequence::new();
    let mut configs = MockWorkspaceConfigs::new();
    let mut receipts = MockReceiptStore::new();
    configs
        .expect_read_plugin_memory()
        .with(eq(cid()), eq(plugin.clone()))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| {
            // As the adapter reads it: sources sorted, README left out.
            Ok(Some(PluginMemory {
                manifest_yaml: Some(fixture(&format!("plugins/{P}/plugin.yaml")).into_bytes()),
                sources: ["CLAUDE.md", "known-issues.md"]
                    .into_iter()
                    .map(|file| PluginText {
                        path: file.into(),
                        content: fixture(&format!("plugins/{P}/{file}")),
                    })
                    .collect(),
                memory_file: Some(MemoryFile {
                    content: fixture("CLAUDE.before.md").into_bytes(),
                    mode: 0o640,
                }),
            }))
        });
    receipts
        .expect_delete_receipt()
        .with(always(), eq(plugin.clone()))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(true));
    let expected = Removal {
        plugin: plugin.clone(),
        memory_file: Some(MemoryFile {
            content: fixture("CLAUDE.after-uninstall-molecule-ai-plugin-superpowers.md")
                .into_bytes(),
            mode: 0o640,
        }),
        skills: [
            "executing-plans",
            "systematic-debugging",
            "test-driven-development",
            "verification-before-completion",
            "writing-plans",
        ]
        .into_iter()
        .map(|s| PluginName::parse(s).unwrap())
        .collect(),
    };
    configs
        .expect_remove()
        .with(eq(cid()), eq(expected))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    let state = uninstall_state(configs, receipts);
    let name = uninstall(&state, &workspace("ws1", "x", "online"), P)
        .await
        .unwrap();
    assert_eq!(name, plugin);
    assert_eq!(state.restarts.pending_count(), 1);
}

#[tokio::test]
async fn a_half_deleted_plugin_still_uninstalls_and_invalid_skills_are_never_paths() {
    let cases = [
        // No manifest left: no skills, still removed.
        (PluginMemory::default(), vec![]),
        (
            memory_with_manifest("skills: [../../etc, ok-skill, 'a/b', '..', '.', '', 7]\n"),
            vec![PluginName::parse("ok-skill").unwrap()],
        ),
        // A manifest that does not parse declares no skills.
        (memory_with_manifest("skills: [unclosed\n"), vec![]),
    ];
    for (memory, skills) in cases {
        let mut configs = MockWorkspaceConfigs::new();
        configs
            .expect_read_plugin_memory()
            .return_once(move |_, _| Ok(Some(memory)));
        let expected = Removal {
            plugin: demo(),
            memory_file: None,
            skills: skills.clone(),
        };
        configs
            .expect_remove()
            .with(always(), eq(expected))
            .times(1)
            .returning(|_, _| Ok(()));
        let state = uninstall_state(configs, dropping_receipts());
        assert_eq!(uninstall_demo(&state).await.unwrap(), demo(), "{skills:?}");
        assert_eq!(state.restarts.pending_count(), 1);
    }
}

#[tokio::test]
async fn claude_md_is_rewritten_only_when_a_block_of_the_plugin_goes_keeping_its_mode() {
    let rule = PluginText {
        path: "rules/a.md".into(),
        content: "Be careful.\n".into(),
    };
    // As the runtime's writer appends it (SPEC §2).
    let with_block = "user notes\n# Plugin: demo / rule: a.md\n\nBe careful.\n";
    let cases: [(&[u8], Option<&[u8]>); 3] = [
        (with_block.as_bytes(), Some(b"user notes\n")),
        // No block of this plugin: left as it is.
        (b"user notes\n# Plugin: other / rule: a.md\n\nx\n", None),
        // Not UTF-8: left as it is, the removal still happens.
        (b"\xff\xfe notes\n", None),
    ];
    for (before, after) in cases {
        let memory = PluginMemory {
            manifest_yaml: None,
            sources: vec![rule.clone()],
            memory_file: Some(MemoryFile {
                content: before.to_vec(),
                mode: 0o600,
            }),
        };
        let mut configs = MockWorkspaceConfigs::new();
        configs
            .expect_read_plugin_memory()
            .return_once(move |_, _| Ok(Some(memory)));
        let expected = Removal {
            plugin: demo(),
            memory_file: after.map(|content| MemoryFile {
                content: content.to_vec(),
                mode: 0o600,
            }),
            skills: vec![],
        };
        configs
            .expect_remove()
            .with(always(), eq(expected))
            .times(1)
            .returning(|_, _| Ok(()));
        let state = uninstall_state(configs, dropping_receipts());
        let result = uninstall_demo(&state).await;
        assert!(
            result.is_ok(),
            "{:?}: {result:?}",
            String::from_utf8_lossy(before)
        );
    }
}

#[tokio::test]
async fn an_incomplete_removal_is_500_drops_the_receipt_and_does_not_restart() {
    let mut configs = MockWorkspaceConfigs::new();
    configs
        .expect_read_plugin_memory()
        .returning(|_, _| Ok(Some(memory_with_manifest("skills: [review]\n"))));
    configs.expect_remove().times(1).returning(|_, _| {
        Err(RemovalError::Incomplete(
            "rm: can't remove '/configs/plugins/demo/root-owned': Permission denied".into(),
        ))
    });
    let state = uninstall_state(configs, dropping_receipts());
    let result = uninstall_demo(&state).await;
    assert_eq!(
        answer(result),
        (500, "failed to remove plugin".into(), None)
    );
    assert_eq!(state.restarts.pending_count(), 0);
}

#[tokio::test]
async fn the_uninstall_deadline_is_504_with_the_receipt_dropped_and_no_restart() {
    let mut inner = MockWorkspaceConfigs::new();
    inner
        .expect_read_plugin_memory()
        .returning(|_, _| Ok(Some(PluginMemory::default())));
    // Never released: the removal outlives the deadline.
    let held = Held::new(inner);
    let started = held.started.clone();
    let state = Ports {
        engine: Arc::new(running_engine()),
        configs: Arc::new(held),
        receipts: Arc::new(dropping_receipts()),
        policy: crate::app::state::Policy {
            fetch_timeout: Duration::from_millis(500),
            ..Ports::default().policy
        },
        ..Ports::default()
    }
    .into_state();
    let result = uninstall_demo(&state).await;
    assert!(fired(&started), "the deadline fired during the removal");
    assert_eq!(
        answer(result),
        (504, "plugin uninstall timed out".into(), None)
    );
    assert_eq!(state.restarts.pending_count(), 0);
}

// ----------------------------------------------------------- installed list

fn listing_state(configs: impl WorkspaceConfigs + 'static, receipts: MockReceiptStore) -> AppState {
    uninstall_state(configs, receipts)
}

#[tokio::test]
async fn a_stopped_container_lists_nothing_without_asking_it() {
    let mut configs = MockWorkspaceConfigs::new();
    configs.expect_installed().never();
    let state = Ports {
        engine: Arc::new(engine_in(ContainerState::Stopped)),
        configs: Arc::new(configs),
        ..Ports::default()
    }
    .into_state();
    let listed = installed(&state, &workspace("ws1", "x", "online"))
        .await
        .unwrap();
    assert!(listed.is_empty());

    let state = Ports {
        engine: Arc::new(engine_in(ContainerState::Unknown)),
        ..Ports::default()
    }
    .into_state();
    let result = installed(&state, &workspace("ws1", "x", "online")).await;
    assert_eq!(answer(result).0, 503, "unknown is never an empty list");
}

#[tokio::test]
async fn the_listing_pairs_manifests_with_receipt_digests_and_survives_a_receipt_outage() {
    let entries = || {
        Ok(vec![
            InstalledEntry {
                name: demo(),
                manifest_yaml: Some(b"version: 2.0.0\n".to_vec()),
            },
            InstalledEntry {
                name: PluginName::parse("hand-made").unwrap(),
                manifest_yaml: None,
            },
        ])
    };
    let mut configs = MockWorkspaceConfigs::new();
    configs
        .expect_installed()
        .with(eq(cid()))
        .returning(move |_| entries());
    let mut receipts = MockReceiptStore::new();
    receipts
        .expect_receipts()
        .times(1)
        .returning(|_| Ok(vec![receipt(demo_digest())]));
    let state = listing_state(configs, receipts);
    let listed = installed(&state, &workspace("ws1", "x", "online"))
        .await
        .unwrap();
    let seen: Vec<(&str, &str, Option<&TreeDigest>)> = listed
        .iter()
        .map(|(m, d)| (m.name.as_str(), m.version.as_str(), d.as_ref()))
        .collect();
    assert_eq!(
        seen,
        [
            ("demo", "2.0.0", Some(&demo_digest())),
            ("hand-made", "", None)
        ]
    );

    let mut configs = MockWorkspaceConfigs::new();
    configs.expect_installed().returning(move |_| entries());
    let mut receipts = MockReceiptStore::new();
    receipts
        .expect_receipts()
        .returning(|_| Err(StoreError::Unavailable("down".into())));
    let state = listing_state(configs, receipts);
    let listed = installed(&state, &workspace("ws1", "x", "online"))
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|(_, d)| d.is_none()), "digests omitted");
}

#[tokio::test]
async fn an_install_waiting_for_its_workspace_fetches_nothing_until_the_workspace_is_free() {
    let h = to_delivery(MockReceiptStore::new(), MockWorkspaceConfigs::new());
    let fetched = h.fetched.clone();
    let state = h.ports.into_state();
    let ws = workspace("ws1", "claude_code", "online");
    let held = state.locks.lock(&ws.id).await;
    let waiting = install(&state, &Principal::Admin, &ws, body("fake://demo"));
    tokio::pin!(waiting);
    // Given ample time to stage (it takes milliseconds here), it stays
    // blocked on the workspace: no staging and so no fetch slot is taken
    // by an install that cannot deliver yet.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), waiting.as_mut())
            .await
            .is_err()
    );
    assert!(!fetched.load(Ordering::SeqCst), "fetched while waiting");
    drop(held);
    let _ = waiting.await;
    assert!(
        fetched.load(Ordering::SeqCst),
        "fetched once the workspace was free"
    );
}
