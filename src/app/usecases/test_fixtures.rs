//! Fixtures shared by the use-case tests of install, uninstall and the
//! installed list: a fake resolver, mocked ports in the usual states, and
//! configs that hold a call until released.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::FutureExt;
use mockall::predicate::*;
use tokio::sync::Notify;

use crate::adapters::fs::{FsStaging, StagingWriter};
use crate::app::error::AppError;
use crate::app::testing::{policy, workspace};
use crate::app::usecases::access::Principal;
use crate::app::usecases::install::Installed;
use crate::app::usecases::{Policy, Ports, UseCases};
use crate::domain::digest::TreeDigest;
use crate::domain::digest::{FileDigest, sha256, tree_digest};
use crate::domain::drift::InstalledTree;
use crate::domain::manifest::Manifest;
use crate::domain::name::PluginName;
use crate::domain::name::WorkspaceId;
use crate::domain::receipt::Receipt;
use crate::domain::source::SpecError;
use crate::domain::staging::StagingError;
use crate::domain::workspace::Workspace;
use crate::ports::container::TreeReadLimits;
use crate::ports::container::{
    ConfigsError, ContainerId, ContainerState, DeliveryError, Removal, RemovalError,
};
use crate::ports::container::{
    InstalledEntry, MockContainerEngine, MockWorkspaceConfigs, PluginMemory, WorkspaceConfigs,
};
use crate::ports::receipts::MockReceiptStore;
use crate::ports::resolver::{
    Cancellation, FetchError, FetchLimits, Fetched, RevisionNow, SourceResolver, SpecCheck,
};
use crate::ports::store::MockAllowlistStore;

/// The revision [`FakeResolver`] reports it fetched.
pub(super) const FAKE_REVISION: &str = "0123456789abcdef0123456789abcdef01234567";

/// A resolver that writes a fixed tree, fails, or dawdles.
pub(super) struct FakeResolver {
    pub(super) files: Vec<(&'static str, Vec<u8>)>,
    pub(super) name: &'static str,
    pub(super) pinned: bool,
    pub(super) fail: Option<fn() -> FetchError>,
    pub(super) delay: Duration,
    pub(super) fetched: Arc<AtomicBool>,
    /// What the fetch reports it resolved to.
    pub(super) revision: Option<String>,
}

impl FakeResolver {
    pub(super) fn plugin(files: &[(&'static str, &str)]) -> Self {
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
            revision: Some(FAKE_REVISION.into()),
        }
    }
}

#[async_trait]
impl SourceResolver for FakeResolver {
    fn scheme(&self) -> &'static str {
        "fake"
    }

    /// The revision it would fetch, as a ref that moves.
    async fn revision_now(
        &self,
        _spec: &str,
        _cancel: &Cancellation,
    ) -> Result<RevisionNow, FetchError> {
        if let Some(fail) = self.fail {
            return Err(fail());
        }
        Ok(self
            .revision
            .clone()
            .map_or(RevisionNow::ContentOnly, RevisionNow::At))
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
            revision: self.revision.clone(),
        })
    }
}

/// Which staging refusal a case expects.
pub(super) type Expect = fn(&StagingError) -> bool;

pub(super) const YAML: &str = "version: 1.0.0\nskills: [review, ../evil]\n";

pub(super) fn demo() -> PluginName {
    PluginName::parse("demo").unwrap()
}

pub(super) fn cid() -> ContainerId {
    ContainerId::new("cid")
}

pub(super) fn demo_digest() -> TreeDigest {
    tree_digest(&[FileDigest {
        path: "plugin.yaml".into(),
        sha256: sha256(YAML.as_bytes()),
    }])
}

/// A digest no staged tree of these tests has.
pub(super) fn other_digest() -> TreeDigest {
    tree_digest(&[FileDigest {
        path: "plugin.yaml".into(),
        sha256: sha256(b"version: 0.9.0\n"),
    }])
}

pub(super) struct Harness {
    pub(super) ports: Ports,
    pub(super) policy: Policy,
    pub(super) _staging_root: tempfile::TempDir,
    pub(super) fetched: Arc<AtomicBool>,
}

impl Harness {
    pub(super) fn app(&self) -> UseCases {
        UseCases::build(self.ports.clone(), self.policy.clone())
    }
}

pub(super) async fn install<F>(
    app: &UseCases,
    principal: &Principal,
    workspace: &Workspace,
    read_body: F,
) -> Result<Installed, AppError>
where
    F: std::future::Future<Output = Result<(Option<String>, Option<String>), AppError>>,
{
    app.install.install(principal, workspace, read_body).await
}

pub(super) async fn uninstall(
    app: &UseCases,
    workspace: &Workspace,
    raw_name: &str,
) -> Result<PluginName, AppError> {
    app.uninstall
        .uninstall(&Principal::Admin, workspace, raw_name)
        .await
}

pub(super) async fn installed(
    app: &UseCases,
    workspace: &Workspace,
) -> Result<Vec<(Manifest, Option<Receipt>)>, AppError> {
    app.installed.list(workspace).await
}

pub(super) fn harness(resolver: FakeResolver) -> Harness {
    let root = tempfile::tempdir().unwrap();
    let fetched = resolver.fetched.clone();
    let mut ports = Ports {
        staging: Arc::new(FsStaging::open(root.path()).unwrap()),
        ..Ports::default()
    };
    ports.resolvers.register(Arc::new(resolver));
    Harness {
        ports,
        policy: policy(),
        _staging_root: root,
        fetched,
    }
}

/// A harness that stages the demo plugin, passes the allowlist and finds
/// the container running: what happens next is up to the test's
/// receipts and configs.
pub(super) fn to_delivery(
    receipts: MockReceiptStore,
    configs: impl WorkspaceConfigs + 'static,
) -> Harness {
    let mut h = harness(FakeResolver::plugin(&[("plugin.yaml", YAML)]));
    h.ports.allowlists = Arc::new(open_allowlist());
    h.ports.engine = Arc::new(running_engine());
    h.ports.receipts = Arc::new(receipts);
    h.ports.configs = Arc::new(configs);
    h
}

pub(super) fn open_allowlist() -> MockAllowlistStore {
    let mut allowlists = MockAllowlistStore::new();
    allowlists.expect_allowlist().returning(|_| Ok(vec![]));
    allowlists
}

pub(super) fn running_engine() -> MockContainerEngine {
    let mut engine = MockContainerEngine::new();
    engine
        .expect_state()
        .returning(|_| ContainerState::Running { id: cid() });
    engine
}

pub(super) fn engine_in(state: ContainerState) -> MockContainerEngine {
    let mut engine = MockContainerEngine::new();
    engine.expect_state().returning(move |_| state.clone());
    engine
}

pub(super) fn body(
    source: &str,
) -> impl std::future::Future<Output = Result<(Option<String>, Option<String>), AppError>> {
    let source = source.to_owned();
    async move { Ok((Some(source), None)) }
}

pub(super) async fn install_demo(state: &UseCases) -> Result<Installed, AppError> {
    install(
        state,
        &Principal::Admin,
        &workspace("ws1", "claude_code", "online"),
        body("fake://demo"),
    )
    .await
}

pub(super) async fn run_install(h: Harness, source: &str) -> Result<Installed, AppError> {
    let state = h.app();
    install(
        &state,
        &Principal::Admin,
        &workspace("ws1", "claude_code", "online"),
        body(source),
    )
    .await
}

pub(super) fn staging_error(result: Result<Installed, AppError>) -> StagingError {
    match result {
        Err(AppError::Staging(e)) => e,
        other => panic!("expected a staging error, got {other:?}"),
    }
}

pub(super) fn receipt(digest: TreeDigest) -> Receipt {
    Receipt {
        workspace_id: WorkspaceId::parse("ws1").unwrap(),
        plugin: demo(),
        source: "fake://previous".into(),
        digest,
        size_bytes: 1,
        installed_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        installed_by: "admin".into(),
        provenance: None,
    }
}

/// Receipts holding `previous` for the demo plugin, and nothing else
/// expected.
pub(super) fn receipts_with(previous: Option<TreeDigest>) -> MockReceiptStore {
    let mut receipts = MockReceiptStore::new();
    receipts
        .expect_receipt()
        .returning(move |_, _| Ok(previous.clone().map(receipt)));
    receipts
}

/// A failure to inject, and the status and message it must become.
pub(super) type FailureCase = (fn() -> ConfigsError, (u16, &'static str));

/// Configs whose `deliver` and `remove` announce themselves on `started`
/// and then wait for `release` (forever, if it never comes) before
/// answering as `inner` says.
pub(super) struct Held {
    pub(super) inner: MockWorkspaceConfigs,
    pub(super) started: Arc<Notify>,
    pub(super) release: Arc<Notify>,
}

impl Held {
    pub(super) fn new(inner: MockWorkspaceConfigs) -> Self {
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

    async fn hash_installed(
        &self,
        c: &ContainerId,
        p: &PluginName,
        limits: &TreeReadLimits,
    ) -> Result<Option<InstalledTree>, ConfigsError> {
        self.inner.hash_installed(c, p, limits).await
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
pub(super) fn fired(notify: &Notify) -> bool {
    notify.notified().now_or_never().is_some()
}

pub(super) fn uninstall_state(
    configs: impl WorkspaceConfigs + 'static,
    receipts: MockReceiptStore,
) -> UseCases {
    Ports {
        engine: Arc::new(running_engine()),
        configs: Arc::new(configs),
        receipts: Arc::new(receipts),
        ..Ports::default()
    }
    .into_app()
}

pub(super) async fn uninstall_demo(state: &UseCases) -> Result<PluginName, AppError> {
    uninstall(state, &workspace("ws1", "x", "online"), "demo").await
}

/// Receipts that expect the demo plugin's to be dropped once before the
/// container is touched, and at most once more, with the audit event,
/// when it is removed.
pub(super) fn dropping_receipts() -> MockReceiptStore {
    let mut receipts = MockReceiptStore::new();
    receipts.expect_receipt().returning(|_, _| Ok(None));
    receipts
        .expect_delete_receipt()
        .withf(|_, p, e| *p == demo() && e.is_none())
        .times(1)
        .returning(|_, _, _| Ok(true));
    receipts
        .expect_delete_receipt()
        .withf(|_, p, e| *p == demo() && e.is_some())
        .times(0..=1)
        .returning(|_, _, _| Ok(false));
    receipts
}

pub(super) fn memory_with_manifest(yaml: &str) -> PluginMemory {
    PluginMemory {
        manifest_yaml: Some(yaml.as_bytes().to_vec()),
        ..PluginMemory::default()
    }
}

pub(super) fn fixture(rel: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/memory-blocks/{rel}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

pub(super) fn listing_state(
    configs: impl WorkspaceConfigs + 'static,
    receipts: MockReceiptStore,
) -> UseCases {
    uninstall_state(configs, receipts)
}
