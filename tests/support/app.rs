//! `spawn_app()`: the real server on a random loopback port, with a real
//! SQLite database in a temp dir, and a store that can be broken on demand
//! to exercise the fail-closed paths (or only its receipt writes, to see
//! what an install or uninstall leaves in the audit log then).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use clap::Parser;
use serde_json::Value;
use tokio::sync::oneshot;
use workspace_plugins::adapters::db::SeaOrmStore;
use workspace_plugins::app::server;
use workspace_plugins::app::settings::Settings;
use workspace_plugins::app::usecases::UseCases;
use workspace_plugins::domain::audit::{AuditEvent, AuditFilter, AuditRecord};
use workspace_plugins::domain::digest::TreeDigest;
use workspace_plugins::domain::name::{PluginName, WorkspaceId};
use workspace_plugins::domain::receipt::Receipt;
use workspace_plugins::domain::token::{TokenHash, TokenId, TokenRecord};
use workspace_plugins::domain::workspace::{Workspace, WorkspaceSpec};
use workspace_plugins::ports::archives::{
    ArchiveKind, ArchiveStore, PackError, PackJob, PackedArchive,
};
use workspace_plugins::ports::audit::AuditLog;
use workspace_plugins::ports::receipts::ReceiptStore;
use workspace_plugins::ports::store::{
    AllowlistEntry, AllowlistStore, StoreError, StoreHealth, TokenStore, Upserted, WorkspaceStore,
};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A real store that fails every call while `broken` is set, and every
/// receipt write (with the audit event it carries) while
/// `receipt_writes_broken` is set.
pub struct BreakableStore {
    inner: SeaOrmStore,
    broken: AtomicBool,
    receipt_writes_broken: AtomicBool,
}

fn injected() -> StoreError {
    StoreError::Unavailable("injected failure at /secret/path".into())
}

impl BreakableStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.broken.load(Ordering::SeqCst) {
            Err(injected())
        } else {
            Ok(())
        }
    }

    fn check_receipt_write(&self) -> Result<(), StoreError> {
        self.check()?;
        if self.receipt_writes_broken.load(Ordering::SeqCst) {
            Err(injected())
        } else {
            Ok(())
        }
    }

    pub fn set_broken(&self, broken: bool) {
        self.broken.store(broken, Ordering::SeqCst);
    }

    /// Fails every receipt write; as in the real store, the audit event a
    /// write carries goes (or not) with it.
    pub fn set_receipt_writes_broken(&self, broken: bool) {
        self.receipt_writes_broken.store(broken, Ordering::SeqCst);
    }

    /// The real store underneath, never broken.
    pub fn inner(&self) -> &SeaOrmStore {
        &self.inner
    }
}

#[async_trait]
impl ReceiptStore for BreakableStore {
    async fn put_receipt<'e>(
        &self,
        receipt: &Receipt,
        event: Option<&'e AuditEvent>,
    ) -> Result<(), StoreError> {
        self.check_receipt_write()?;
        self.inner.put_receipt(receipt, event).await
    }
    async fn receipt(
        &self,
        workspace: &WorkspaceId,
        plugin: &PluginName,
    ) -> Result<Option<Receipt>, StoreError> {
        self.check()?;
        self.inner.receipt(workspace, plugin).await
    }
    async fn receipts(&self, workspace: &WorkspaceId) -> Result<Vec<Receipt>, StoreError> {
        self.check()?;
        self.inner.receipts(workspace).await
    }
    async fn installations(
        &self,
        plugin: &PluginName,
        digest: Option<TreeDigest>,
        after: Option<WorkspaceId>,
        limit: u64,
    ) -> Result<Vec<Receipt>, StoreError> {
        self.check()?;
        self.inner.installations(plugin, digest, after, limit).await
    }
    async fn delete_receipt<'e>(
        &self,
        workspace: &WorkspaceId,
        plugin: &PluginName,
        event: Option<&'e AuditEvent>,
    ) -> Result<bool, StoreError> {
        self.check_receipt_write()?;
        self.inner.delete_receipt(workspace, plugin, event).await
    }
}

#[async_trait]
impl AuditLog for BreakableStore {
    async fn append(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.check()?;
        self.inner.append(event).await
    }
    async fn events(
        &self,
        filter: &AuditFilter,
        limit: u64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.check()?;
        self.inner.events(filter, limit).await
    }
    async fn forget_before(&self, cutoff: DateTime<Utc>, batch: u64) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.forget_before(cutoff, batch).await
    }
}

#[async_trait]
impl WorkspaceStore for BreakableStore {
    async fn workspace(&self, id: &WorkspaceId) -> Result<Option<Workspace>, StoreError> {
        self.check()?;
        self.inner.workspace(id).await
    }
    async fn upsert_workspace(
        &self,
        id: &WorkspaceId,
        spec: &WorkspaceSpec,
        now: DateTime<Utc>,
    ) -> Result<(Workspace, Upserted), StoreError> {
        self.check()?;
        self.inner.upsert_workspace(id, spec, now).await
    }
    async fn list_workspaces(
        &self,
        after: Option<WorkspaceId>,
        limit: u64,
    ) -> Result<Vec<Workspace>, StoreError> {
        self.check()?;
        self.inner.list_workspaces(after, limit).await
    }
    async fn delete_workspace(&self, id: &WorkspaceId) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.delete_workspace(id).await
    }
}

#[async_trait]
impl TokenStore for BreakableStore {
    async fn insert_token(&self, token: &TokenRecord) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.insert_token(token).await
    }
    async fn token_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        self.check()?;
        self.inner.token_by_hash(hash).await
    }
    async fn tokens(&self, workspace: &WorkspaceId) -> Result<Vec<TokenRecord>, StoreError> {
        self.check()?;
        self.inner.tokens(workspace).await
    }
    async fn revoke_token(
        &self,
        workspace: &WorkspaceId,
        id: &TokenId,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.revoke_token(workspace, id).await
    }
    async fn touch_token(&self, id: &TokenId, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.check()?;
        self.inner.touch_token(id, at).await
    }
    async fn has_live_token(&self, workspace: &WorkspaceId) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.has_live_token(workspace).await
    }
}

#[async_trait]
impl AllowlistStore for BreakableStore {
    async fn allowlist(&self, org: &WorkspaceId) -> Result<Vec<AllowlistEntry>, StoreError> {
        self.check()?;
        self.inner.allowlist(org).await
    }
    async fn replace_allowlist(
        &self,
        org: &WorkspaceId,
        plugins: &[PluginName],
        enabled_by: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<AllowlistEntry>, StoreError> {
        self.check()?;
        self.inner
            .replace_allowlist(org, plugins, enabled_by, now)
            .await
    }
}

#[async_trait]
impl StoreHealth for BreakableStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.check()?;
        self.inner.ping().await
    }
}

/// Knobs a test may turn before the server starts.
#[derive(Default)]
pub struct Options {
    pub plugins_dir: Option<PathBuf>,
    pub extra_args: Vec<String>,
    /// Replace the download archive store with one whose packing fails.
    pub failing_archives: bool,
}

/// An archive store that finds nothing and fails every pack.
pub struct FailingArchives;

#[async_trait]
impl ArchiveStore for FailingArchives {
    async fn cached(&self, _: &TreeDigest, _: ArchiveKind) -> Option<PackedArchive> {
        None
    }
    async fn pack_job(&self, _: PackJob) -> Result<PackedArchive, PackError> {
        Err(PackError::Failed("disk full at /srv/secret".into()))
    }
    fn has_room(&self) -> bool {
        true
    }
    async fn discard(&self, _: &TreeDigest, _: ArchiveKind) {}
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub store: Arc<BreakableStore>,
    /// The server's use cases, e.g. to observe its restarts
    /// (`use_cases.restarts()`: `subscribe`, `restart_pending`).
    pub use_cases: Arc<UseCases>,
    pub data_dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn repo_plugins_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugins")
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp data dir");
    let plugins_dir = options.plugins_dir.unwrap_or_else(repo_plugins_dir);
    let db_url = format!(
        "sqlite://{}?mode=rwc",
        data_dir.path().join("test.db").display()
    );
    let mut args: Vec<String> = [
        "workspace-plugins",
        "--plugin-listen",
        "127.0.0.1:0",
        "--plugin-admin-token",
        ADMIN_TOKEN,
        "--database-url",
        &db_url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push("--plugin-data-dir".into());
    args.push(data_dir.path().display().to_string());
    args.push("--plugins-dir".into());
    args.push(plugins_dir.display().to_string());
    args.extend(options.extra_args);
    let settings = Settings::try_parse_from(args)
        .expect("test settings")
        .normalized();

    let opened = server::open_store(&settings).await.expect("store");
    let policy = server::policy(&settings, opened.as_ref())
        .await
        .expect("policy");
    let mut ports = server::ports_over(&settings, opened).await.expect("ports");
    let store = Arc::new(BreakableStore {
        inner: SeaOrmStore::connect(&db_url).await.expect("store"),
        broken: AtomicBool::new(false),
        receipt_writes_broken: AtomicBool::new(false),
    });
    ports.workspaces = store.clone();
    ports.tokens = store.clone();
    ports.allowlists = store.clone();
    ports.store_health = store.clone();
    ports.receipts = store.clone();
    ports.audit = store.clone();
    if options.failing_archives {
        ports.archives = Arc::new(FailingArchives);
    }
    let use_cases = Arc::new(UseCases::build(ports, policy));
    let bound = server::bind_with(&settings, use_cases.clone())
        .await
        .expect("bind");
    let addr = bound.local_addr().expect("local addr");
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(bound.serve(async {
        let _ = rx.await;
    }));
    TestApp {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        store,
        use_cases,
        data_dir,
        shutdown: Some(tx),
    }
}

/// A response's status and JSON body (Null when the body is empty).
pub async fn json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
    };
    (status, body)
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `host:port` of the server, for raw TCP clients.
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// A request with an optional bearer token.
    pub fn req(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let rb = self.client.request(method, self.url(path));
        match token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut rb = self.req(method, path, token);
        if let Some(body) = body {
            rb = rb.json(&body);
        }
        json(rb.send().await.expect("request")).await
    }

    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, Some(ADMIN_TOKEN), None)
            .await
    }

    /// Creates a workspace (admin) and returns its record.
    pub async fn create_workspace(&self, id: &str, body: Value) -> Value {
        let (status, record) = self
            .call(
                reqwest::Method::PUT,
                &format!("/workspaces/{id}"),
                Some(ADMIN_TOKEN),
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{record}");
        record
    }

    /// Issues a token (admin); returns (token id, secret).
    pub async fn issue_token(&self, id: &str) -> (String, String) {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &format!("/workspaces/{id}/tokens"),
                Some(ADMIN_TOKEN),
                None,
            )
            .await;
        assert_eq!(status, 201, "{body}");
        (
            body["id"].as_str().unwrap().to_owned(),
            body["token"].as_str().unwrap().to_owned(),
        )
    }
}

impl TestApp {
    /// Every audit event as stored, newest first, read with SQL (not through
    /// the API): what "grep the table" looks at.
    pub async fn audit_rows(&self) -> Vec<Value> {
        use sea_orm::{ConnectionTrait, Statement};
        let url = format!(
            "sqlite://{}?mode=ro",
            self.data_dir.path().join("test.db").display()
        );
        let conn = sea_orm::Database::connect(url)
            .await
            .expect("read the test database");
        let rows = conn
            .query_all_raw(Statement::from_string(
                conn.get_database_backend(),
                "SELECT id, at, actor, action, workspace_id, plugin, source, digest, outcome, status \
                 FROM audit_events ORDER BY id DESC",
            ))
            .await
            .expect("audit rows");
        rows.into_iter()
            .map(|row| {
                let text = |i: usize| row.try_get_by_index::<Option<String>>(i).expect("column");
                serde_json::json!({
                    "id": row.try_get_by_index::<i64>(0).expect("id"),
                    "at": text(1),
                    "actor": text(2),
                    "action": text(3),
                    "workspace_id": text(4),
                    "plugin": text(5),
                    "source": text(6),
                    "digest": text(7),
                    "outcome": text(8),
                    "status": row.try_get_by_index::<i32>(9).expect("status"),
                })
            })
            .collect()
    }

    /// `(action, outcome, status)` of every stored event, newest first.
    pub async fn audit_summary(&self) -> Vec<(String, String, i64)> {
        self.audit_rows()
            .await
            .into_iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap_or_default().to_owned(),
                    e["outcome"].as_str().unwrap_or_default().to_owned(),
                    e["status"].as_i64().unwrap_or_default(),
                )
            })
            .collect()
    }
}
