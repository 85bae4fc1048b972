//! The storage adapter against real databases (SPEC §7, §8): every case
//! runs once on SQLite and once on PostgreSQL, through the store ports.
//!
//! PostgreSQL must be running (`scripts/services.sh`, or point
//! `TEST_DATABASE_URL` at a server): without it the `postgres::` cases fail.

use crate::support;

use chrono::{DateTime, Duration, TimeZone, Utc};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, SqliteTransactionMode,
    Statement, TransactionOptions, TransactionTrait,
};
use tempfile::TempDir;

use support::db;
use workspace_plugins::adapters::db::SeaOrmStore;
use workspace_plugins::domain::audit::{
    AuditAction, AuditCursor, AuditEvent, AuditFilter, AuditOutcome, AuditRecord,
};
use workspace_plugins::domain::digest::{FileDigest, sha256, tree_digest};
use workspace_plugins::domain::name::{PluginName, WorkspaceId};
use workspace_plugins::domain::receipt::{Provenance, Receipt};
use workspace_plugins::domain::runtime::Runtime;
use workspace_plugins::domain::source::Source;
use workspace_plugins::domain::token::{TokenHash, TokenId, TokenRecord};
use workspace_plugins::domain::workspace::{
    ContainerName, Workspace, WorkspaceSpec, WorkspaceStatus,
};
use workspace_plugins::ports::audit::AuditLog;
use workspace_plugins::ports::coordination::{
    AdminTokenStore, HoldError, RestartQueue, WorkspaceLocks,
};
use workspace_plugins::ports::receipts::ReceiptStore;
use workspace_plugins::ports::store::{
    AllowlistEntry, AllowlistStore, StoreError, StoreHealth, TokenStore, Upserted, WorkspaceStore,
};

/// Which database a case runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database of one backend; the SQLite file lives as long
/// as this value.
struct TestDb {
    backend: Backend,
    url: String,
    _dir: Option<TempDir>,
}

impl TestDb {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self {
            backend: Backend::Sqlite,
            url: db::sqlite_url(dir.path()),
            _dir: Some(dir),
        }
    }

    async fn postgres() -> Self {
        Self {
            backend: Backend::Postgres,
            url: db::postgres_url().await,
            _dir: None,
        }
    }

    /// Connects (running the migrations), as the service does at start.
    async fn store(&self) -> SeaOrmStore {
        SeaOrmStore::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connect to {:?} test database: {e:?}", self.backend))
    }

    /// Makes every insert of the allowlist entry `plugin` fail.
    async fn fail_allowlist_inserts_of(&self, plugin: &str) {
        let sql = match self.backend {
            Backend::Sqlite => format!(
                "CREATE TRIGGER fail_{plugin} BEFORE INSERT ON allowlist_entries \
                 WHEN NEW.plugin_name = '{plugin}' \
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
            ),
            Backend::Postgres => format!(
                "CREATE FUNCTION fail_{plugin}() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN RAISE EXCEPTION 'injected failure'; END; $$; \
                 CREATE TRIGGER fail_{plugin} BEFORE INSERT ON allowlist_entries \
                 FOR EACH ROW WHEN (NEW.plugin_name = '{plugin}') \
                 EXECUTE FUNCTION fail_{plugin}();"
            ),
        };
        db::execute(&self.url, &sql).await;
    }

    /// Makes every `op` (`INSERT` or `DELETE`) on `table` fail until
    /// [`TestDb::allow_writes`] drops the trigger `name`.
    async fn fail_writes(&self, name: &str, op: &str, table: &str) {
        let sql = match self.backend {
            Backend::Sqlite => format!(
                "CREATE TRIGGER {name} BEFORE {op} ON {table} \
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
            ),
            Backend::Postgres => format!(
                "CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN RAISE EXCEPTION 'injected failure'; END; $$; \
                 CREATE TRIGGER {name} BEFORE {op} ON {table} \
                 FOR EACH ROW EXECUTE FUNCTION {name}();"
            ),
        };
        db::execute(&self.url, &sql).await;
    }

    async fn allow_writes(&self, name: &str, table: &str) {
        let sql = match self.backend {
            Backend::Sqlite => format!("DROP TRIGGER {name};"),
            Backend::Postgres => format!("DROP TRIGGER {name} ON {table};"),
        };
        db::execute(&self.url, &sql).await;
    }

    /// How many audit events the table holds, read with plain SQL.
    async fn audit_rows(&self) -> i64 {
        let conn = db::connection(&self.url).await;
        let row = conn
            .query_one_raw(Statement::from_string(
                conn.get_database_backend(),
                "SELECT COUNT(*) FROM audit_events",
            ))
            .await
            .expect("count")
            .expect("a row");
        row.try_get_by_index(0).expect("count")
    }

    /// Another connection to this database, in a write transaction: what
    /// it writes is not committed (and, on SQLite, holds the database's
    /// write lock) until the test commits it.
    async fn other_writer(&self) -> (DatabaseConnection, DatabaseTransaction) {
        let conn = db::connection(&self.url).await;
        let txn = conn
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await
            .expect("begin");
        (conn, txn)
    }

    /// Returns once a statement of another connection waits for a lock
    /// held by an open transaction. PostgreSQL shows it in
    /// `pg_stat_activity`; SQLite's write lock blocks any second writer
    /// whenever it starts, so there is nothing to wait for.
    async fn until_a_writer_waits_for_a_lock(&self) {
        if self.backend == Backend::Sqlite {
            return;
        }
        let watcher = db::connection(&self.url).await;
        let query = Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let row = watcher.query_one_raw(query.clone()).await.unwrap().unwrap();
            let waiting: i64 = row.try_get_by_index(0).unwrap();
            if waiting > 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no statement ever waited for the open transaction"
            );
            // Polled: PostgreSQL announces no lock waits.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// A URL of this backend where no database can be opened.
    fn unreachable_url(&self) -> String {
        match self.backend {
            Backend::Sqlite => {
                let dir = self._dir.as_ref().expect("sqlite temp dir");
                format!("sqlite://{}/no-such-dir/store.db", dir.path().display())
            }
            Backend::Postgres => "postgres://u:p@127.0.0.1:1/db".to_owned(),
        }
    }
}

/// Instantiates each listed case for one backend, as `<backend>::<case>`.
macro_rules! backend_tests {
    ($backend:ident: $($case:ident),+ $(,)?) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $case() {
                    use crate::storage::*;
                    $case(TestDb::$backend().await).await;
                }
            )+
        }
    };
}

/// Instantiates every listed case for every backend.
macro_rules! all_backends {
    ($($case:ident),+ $(,)?) => {
        backend_tests!(sqlite: $($case),+);
        backend_tests!(postgres: $($case),+);
    };
}

all_backends!(
    workspace_upsert_creates_then_updates,
    workspace_fields_round_trip,
    unknown_workspace_is_none,
    workspaces_list_in_id_order_in_pages_after_a_cursor,
    workspace_delete_answers_true_then_false,
    workspace_delete_removes_only_its_own_tokens,
    a_token_issued_after_its_workspace_was_deleted_is_refused_and_never_revived,
    a_token_insert_waiting_on_a_delete_is_refused,
    a_token_committed_while_a_delete_waits_is_deleted_with_its_workspace,
    a_container_belongs_to_one_live_record_at_a_time,
    racing_claims_of_one_container_leave_exactly_one_owner,
    concurrent_allowlist_replacements_end_as_exactly_one_of_the_lists,
    token_is_found_by_the_hash_of_its_secret,
    tokens_list_oldest_first_for_their_workspace_only,
    revoking_another_workspaces_token_changes_nothing,
    revoking_sets_revoked_and_ends_the_live_token,
    touching_a_token_records_its_last_use,
    duplicate_token_hash_or_id_is_a_conflict,
    allowlist_of_an_unknown_org_is_empty,
    allowlist_replace_answers_the_stored_list_sorted,
    allowlist_entries_that_stay_keep_who_and_when,
    allowlist_replace_with_nothing_clears_it,
    allowlists_of_orgs_are_independent,
    allowlist_replace_is_atomic,
    migrations_are_idempotent_and_keep_data,
    ping_answers_when_the_database_is_up,
    unreachable_database_is_unavailable,
    receipts_are_put_replaced_listed_and_deleted,
    receipts_keep_their_provenance_and_files,
    a_receipt_row_of_the_old_shape_still_reads_with_unknown_provenance,
    installations_list_a_plugins_workspaces_by_id_filtered_by_digest_in_pages,
    an_install_event_is_written_with_its_receipt_or_not_at_all,
    an_uninstall_event_is_written_with_its_receipt_deletion_or_not_at_all,
    audit_events_read_newest_first_filtered_and_paged_by_cursor,
    audit_retention_forgets_only_older_events_a_batch_at_a_time,
    audit_ids_are_never_reused_after_retention,
    a_workspace_hold_excludes_every_other_holder_until_dropped,
    a_due_restart_is_carried_out_exactly_once_by_concurrent_claimers,
    a_request_after_a_restart_was_read_keeps_one_pending,
    the_admin_token_is_kept_once_and_the_first_to_keep_it_wins,
);

/// PostgreSQL only: a SQLite database has one process, whose holds die
/// with it.
mod postgres_only {
    backend_tests!(postgres: a_workspace_hold_dies_with_its_holders_session);
}

// ---------------------------------------------------------------- helpers

/// A fixed instant with whole milliseconds, which both backends store
/// exactly (PostgreSQL keeps microseconds, SQLite the text chrono wrote).
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 10, 0, 0).unwrap() + Duration::milliseconds(250)
}

fn id(s: &str) -> WorkspaceId {
    WorkspaceId::parse(s).unwrap()
}

fn plugin(s: &str) -> PluginName {
    PluginName::parse(s).unwrap()
}

fn plugins(names: &[&str]) -> Vec<PluginName> {
    names.iter().map(|n| plugin(n)).collect()
}

fn spec(name: &str) -> WorkspaceSpec {
    WorkspaceSpec {
        name: name.to_owned(),
        runtime: Runtime::parse("claude-code").unwrap(),
        parent_id: None,
        container: None,
        status: WorkspaceStatus::Online,
    }
}

/// A token record for `workspace` and its secret.
fn token(workspace: &str, created_at: DateTime<Utc>) -> (TokenRecord, String) {
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let record = TokenRecord {
        id: TokenId::from_random(rand::random()),
        workspace_id: id(workspace),
        hash: TokenHash::of(&secret),
        created_at,
        last_used_at: None,
        revoked: false,
    };
    (record, secret)
}

/// Creates the record `ws` unless it exists.
async fn ensure_workspace(store: &SeaOrmStore, ws: &str) {
    if store.workspace(&id(ws)).await.unwrap().is_none() {
        store
            .upsert_workspace(&id(ws), &spec(ws), t0())
            .await
            .unwrap();
    }
}

/// Stores a token, creating its workspace's record first if needed.
async fn issue(store: &SeaOrmStore, token: &TokenRecord) {
    ensure_workspace(store, token.workspace_id.as_str()).await;
    assert!(
        store.insert_token(token).await.unwrap(),
        "token of an existing workspace stored"
    );
}

/// An error and all its sources, for asserting on the cause.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The ids of a page of workspaces, in order.
fn ids(page: Vec<Workspace>) -> Vec<String> {
    page.into_iter().map(|w| w.id.as_str().to_owned()).collect()
}

fn entry(name: &str, enabled_by: &str, enabled_at: DateTime<Utc>) -> AllowlistEntry {
    AllowlistEntry {
        plugin_name: plugin(name),
        enabled_by: enabled_by.to_owned(),
        enabled_at,
    }
}

// ------------------------------------------------------------- workspaces

async fn workspace_upsert_creates_then_updates(db: TestDb) {
    let store = db.store().await;
    let ws = id("ws-1");

    let (created, outcome) = store
        .upsert_workspace(&ws, &spec("first"), t0())
        .await
        .unwrap();
    assert_eq!(outcome, Upserted::Created);
    assert_eq!(created.id, ws);
    assert_eq!(created.spec, spec("first"));
    assert_eq!(created.created_at, t0());
    assert_eq!(created.updated_at, t0());

    let later = t0() + Duration::seconds(90) + Duration::milliseconds(5);
    let renamed = WorkspaceSpec {
        status: WorkspaceStatus::Paused,
        ..spec("second")
    };
    let (updated, outcome) = store.upsert_workspace(&ws, &renamed, later).await.unwrap();
    assert_eq!(outcome, Upserted::Updated);
    assert_eq!(updated.spec, renamed);
    assert_eq!(updated.created_at, t0(), "created_at is kept");
    assert_eq!(updated.updated_at, later, "updated_at moves");

    assert_eq!(store.workspace(&ws).await.unwrap(), Some(updated));
    assert_eq!(store.list_workspaces(None, 10).await.unwrap().len(), 1);
}

async fn workspace_fields_round_trip(db: TestDb) {
    let store = db.store().await;
    let ws = id("Child_ws-2");
    let name = "Agent \u{e9}\u{1F980} ".repeat(20);
    let full = WorkspaceSpec {
        name: name.clone(),
        runtime: Runtime::parse("my-runtime-2").unwrap(),
        parent_id: Some(id("org-1")),
        container: Some(ContainerName::parse("my.box_1-a").unwrap()),
        status: WorkspaceStatus::Provisioning,
    };
    let (answered, _) = store.upsert_workspace(&ws, &full, t0()).await.unwrap();
    let stored = store.workspace(&ws).await.unwrap().unwrap();
    assert_eq!(stored, answered);
    assert_eq!(stored.id, ws);
    assert_eq!(stored.spec.name, name);
    assert_eq!(
        stored.spec.runtime.as_str(),
        "my_runtime_2",
        "stored normalized"
    );
    assert_eq!(stored.spec.parent_id, Some(id("org-1")));
    assert_eq!(
        stored.spec.container.as_ref().unwrap().as_str(),
        "my.box_1-a"
    );
    assert_eq!(stored.spec.status, WorkspaceStatus::Provisioning);
    assert_eq!(stored.org_id(), &id("org-1"));

    // Every status survives the trip, and optional fields can be cleared.
    for (i, status) in WorkspaceStatus::ALL.into_iter().enumerate() {
        let at = t0() + Duration::seconds(i as i64 + 1);
        let cleared = WorkspaceSpec {
            status,
            ..spec("cleared")
        };
        store.upsert_workspace(&ws, &cleared, at).await.unwrap();
        let stored = store.workspace(&ws).await.unwrap().unwrap();
        assert_eq!(stored.spec, cleared, "{status}");
        assert_eq!(stored.spec.parent_id, None);
        assert_eq!(stored.spec.container, None);
        assert_eq!(stored.created_at, t0());
        assert_eq!(stored.updated_at, at);
    }
}

async fn unknown_workspace_is_none(db: TestDb) {
    let store = db.store().await;
    assert_eq!(store.workspace(&id("nobody")).await.unwrap(), None);
    store
        .upsert_workspace(&id("somebody"), &spec("s"), t0())
        .await
        .unwrap();
    assert_eq!(store.workspace(&id("nobody")).await.unwrap(), None);
    assert_eq!(
        store.workspace(&id("SOMEBODY")).await.unwrap(),
        None,
        "ids are case-sensitive"
    );
}

async fn workspaces_list_in_id_order_in_pages_after_a_cursor(db: TestDb) {
    let store = db.store().await;
    assert_eq!(store.list_workspaces(None, 2).await.unwrap(), vec![]);

    // Inserted out of order; ids mix case, digits, '-' and '_' so that the
    // database's order must be the byte order of the ids (as `Ord` on
    // `WorkspaceId` and SQLite have it). A PostgreSQL database with a
    // linguistic collation (e.g. en_US) orders these differently.
    let inserted = ["ws_b", "Ws-a", "ws-c", "0ws", "ws"];
    for (i, ws) in inserted.into_iter().enumerate() {
        let at = t0() + Duration::seconds(i as i64);
        store
            .upsert_workspace(&id(ws), &spec(ws), at)
            .await
            .unwrap();
    }
    let mut expected: Vec<WorkspaceId> = inserted.iter().map(|s| id(s)).collect();
    expected.sort();
    assert_eq!(
        expected.iter().map(WorkspaceId::as_str).collect::<Vec<_>>(),
        ["0ws", "Ws-a", "ws", "ws-c", "ws_b"]
    );

    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_workspaces(after.clone(), 2).await.unwrap();
        pages.push(ids(page.clone()));
        match page.last() {
            Some(last) if page.len() == 2 => after = Some(last.id.clone()),
            _ => break,
        }
    }
    assert_eq!(
        pages,
        vec![vec!["0ws", "Ws-a"], vec!["ws", "ws-c"], vec!["ws_b"],]
    );

    // Whole records come back, not just ids.
    let first = store.list_workspaces(None, 1).await.unwrap();
    assert_eq!(
        first,
        vec![store.workspace(&id("0ws")).await.unwrap().unwrap()]
    );
    assert_eq!(first[0].created_at, t0() + Duration::seconds(3));

    // The cursor is strictly-after and need not be an existing id.
    assert_eq!(
        ids(store.list_workspaces(Some(id("ws")), 10).await.unwrap()),
        ["ws-c", "ws_b"]
    );
    assert_eq!(
        ids(store.list_workspaces(Some(id("wr")), 1).await.unwrap()),
        ["ws"]
    );
    assert_eq!(
        ids(store.list_workspaces(Some(id("ws_b")), 10).await.unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(store.list_workspaces(None, 500).await.unwrap().len(), 5);
}

async fn workspace_delete_answers_true_then_false(db: TestDb) {
    let store = db.store().await;
    let ws = id("ws-1");
    store.upsert_workspace(&ws, &spec("w"), t0()).await.unwrap();
    store
        .upsert_workspace(&id("ws-2"), &spec("w2"), t0())
        .await
        .unwrap();

    assert!(store.delete_workspace(&ws).await.unwrap());
    assert_eq!(store.workspace(&ws).await.unwrap(), None);
    assert!(!store.delete_workspace(&ws).await.unwrap());
    assert!(!store.delete_workspace(&id("never")).await.unwrap());

    let left = store.list_workspaces(None, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, id("ws-2"));

    // The id can be used again, as a new record.
    let (_, outcome) = store
        .upsert_workspace(&ws, &spec("again"), t0() + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(outcome, Upserted::Created);
}

async fn workspace_delete_removes_only_its_own_tokens(db: TestDb) {
    let store = db.store().await;
    for ws in ["doomed", "other"] {
        store
            .upsert_workspace(&id(ws), &spec(ws), t0())
            .await
            .unwrap();
    }
    let (doomed_a, _) = token("doomed", t0());
    let (doomed_b, _) = token("doomed", t0() + Duration::seconds(1));
    let (kept, _) = token("other", t0());
    for t in [&doomed_a, &doomed_b, &kept] {
        issue(&store, t).await;
    }

    assert!(store.delete_workspace(&id("doomed")).await.unwrap());

    assert_eq!(store.token_by_hash(&doomed_a.hash).await.unwrap(), None);
    assert_eq!(store.token_by_hash(&doomed_b.hash).await.unwrap(), None);
    assert_eq!(store.tokens(&id("doomed")).await.unwrap(), vec![]);
    assert!(!store.has_live_token(&id("doomed")).await.unwrap());

    assert_eq!(
        store.token_by_hash(&kept.hash).await.unwrap(),
        Some(kept.clone())
    );
    assert_eq!(store.tokens(&id("other")).await.unwrap(), vec![kept]);
    assert!(store.has_live_token(&id("other")).await.unwrap());
}

async fn a_token_issued_after_its_workspace_was_deleted_is_refused_and_never_revived(db: TestDb) {
    let store = db.store().await;
    let ws = id("doomed");
    store.upsert_workspace(&ws, &spec("d"), t0()).await.unwrap();
    // The issuing request has found the record (its check)...
    assert!(store.workspace(&ws).await.unwrap().is_some());
    // ...then the delete commits, then the request inserts its token.
    assert!(store.delete_workspace(&ws).await.unwrap());
    let (late, secret) = token("doomed", t0());
    assert!(
        !store.insert_token(&late).await.unwrap(),
        "a token of a deleted workspace is refused"
    );
    assert_eq!(
        store.token_by_hash(&TokenHash::of(&secret)).await.unwrap(),
        None
    );

    // A new record with the same id starts with no tokens.
    store
        .upsert_workspace(&ws, &spec("d2"), t0())
        .await
        .unwrap();
    assert_eq!(store.tokens(&ws).await.unwrap(), vec![]);
    assert!(!store.has_live_token(&ws).await.unwrap());
    assert_eq!(store.token_by_hash(&late.hash).await.unwrap(), None);
}

/// The raw insert of a token row, as another writer would make it.
fn token_row(t: &TokenRecord) -> sea_orm::sea_query::InsertStatement {
    Query::insert()
        .into_table(Alias::new("tokens"))
        .columns(
            [
                "id",
                "workspace_id",
                "hash",
                "created_at",
                "last_used_at",
                "revoked",
            ]
            .map(Alias::new),
        )
        .values_panic([
            t.id.as_str().into(),
            t.workspace_id.as_str().into(),
            t.hash.to_hex().into(),
            t.created_at.into(),
            Option::<DateTime<Utc>>::None.into(),
            false.into(),
        ])
        .to_owned()
}

async fn a_token_insert_waiting_on_a_delete_is_refused(db: TestDb) {
    let store = db.store().await;
    let ws = id("doomed");
    store.upsert_workspace(&ws, &spec("d"), t0()).await.unwrap();
    let (_conn, delete) = db.other_writer().await;
    delete
        .execute(
            Query::delete()
                .from_table(Alias::new("workspaces"))
                .and_where(Expr::col(Alias::new("id")).eq("doomed")),
        )
        .await
        .unwrap();

    let (late, _) = token("doomed", t0());
    let inserting = tokio::spawn({
        let (store, late) = (store.clone(), late.clone());
        async move { store.insert_token(&late).await }
    });
    db.until_a_writer_waits_for_a_lock().await;
    delete.commit().await.unwrap();

    assert!(
        !inserting.await.unwrap().unwrap(),
        "refused after the delete"
    );
    assert_eq!(store.token_by_hash(&late.hash).await.unwrap(), None);
    store
        .upsert_workspace(&ws, &spec("d2"), t0())
        .await
        .unwrap();
    assert_eq!(store.tokens(&ws).await.unwrap(), vec![]);
}

async fn a_token_committed_while_a_delete_waits_is_deleted_with_its_workspace(db: TestDb) {
    let store = db.store().await;
    let ws = id("doomed");
    store.upsert_workspace(&ws, &spec("d"), t0()).await.unwrap();
    let (late, _) = token("doomed", t0());
    let (_conn, insert) = db.other_writer().await;
    insert.execute(&token_row(&late)).await.unwrap();

    let deleting = tokio::spawn({
        let (store, ws) = (store.clone(), ws.clone());
        async move { store.delete_workspace(&ws).await }
    });
    db.until_a_writer_waits_for_a_lock().await;
    insert.commit().await.unwrap();

    assert!(deleting.await.unwrap().unwrap());
    assert_eq!(
        store.token_by_hash(&late.hash).await.unwrap(),
        None,
        "the token went with its workspace"
    );
    store
        .upsert_workspace(&ws, &spec("d2"), t0())
        .await
        .unwrap();
    assert_eq!(store.tokens(&ws).await.unwrap(), vec![]);
    assert!(!store.has_live_token(&ws).await.unwrap());
}

fn in_container(name: &str, container: Option<&str>, status: WorkspaceStatus) -> WorkspaceSpec {
    WorkspaceSpec {
        container: container.map(|c| ContainerName::parse(c).unwrap()),
        status,
        ..spec(name)
    }
}

fn taken_by(err: StoreError) -> (String, String) {
    match err {
        StoreError::ContainerTaken { container, owner } => {
            (container.to_string(), owner.to_string())
        }
        other => panic!("not ContainerTaken: {other:?}"),
    }
}

async fn a_container_belongs_to_one_live_record_at_a_time(db: TestDb) {
    use WorkspaceStatus::{Online, Paused, Removed};
    let store = db.store().await;
    let first = in_container("a", Some("ws-b"), Online);
    store
        .upsert_workspace(&id("a"), &first, t0())
        .await
        .unwrap();

    // "b" defaults to ws-b: a's. Nothing is written.
    let err = store
        .upsert_workspace(&id("b"), &in_container("b", None, Online), t0())
        .await
        .unwrap_err();
    assert_eq!(taken_by(err), ("ws-b".into(), "a".into()));
    assert_eq!(store.workspace(&id("b")).await.unwrap(), None);
    // Nor may an existing record move into it; it keeps what it had.
    let (c, _) = store
        .upsert_workspace(&id("c"), &in_container("c", Some("box"), Online), t0())
        .await
        .unwrap();
    let err = store
        .upsert_workspace(&id("c"), &in_container("c2", Some("ws-b"), Online), t0())
        .await
        .unwrap_err();
    assert_eq!(taken_by(err), ("ws-b".into(), "a".into()));
    assert_eq!(store.workspace(&id("c")).await.unwrap(), Some(c));

    // A record's own container is no conflict, whatever its other fields.
    let paused = in_container("a2", Some("ws-b"), Paused);
    let (_, outcome) = store
        .upsert_workspace(&id("a"), &paused, t0())
        .await
        .unwrap();
    assert_eq!(outcome, Upserted::Updated);

    // A removed record holds nothing: its container can be reused...
    store
        .upsert_workspace(&id("a"), &in_container("a", Some("ws-b"), Removed), t0())
        .await
        .unwrap();
    store
        .upsert_workspace(&id("b"), &in_container("b", None, Online), t0())
        .await
        .unwrap();
    // ...and it cannot come back to life in a container taken since.
    let err = store
        .upsert_workspace(&id("a"), &first, t0())
        .await
        .unwrap_err();
    assert_eq!(taken_by(err), ("ws-b".into(), "b".into()));
    assert_eq!(
        store
            .workspace(&id("a"))
            .await
            .unwrap()
            .unwrap()
            .spec
            .status,
        Removed
    );
    // A deleted record frees its container.
    assert!(store.delete_workspace(&id("b")).await.unwrap());
    store
        .upsert_workspace(&id("a"), &first, t0())
        .await
        .unwrap();
}

async fn racing_claims_of_one_container_leave_exactly_one_owner(db: TestDb) {
    let store = db.store().await;
    for round in 0..3 {
        let container = format!("contested-{round}");
        let racers: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                let ws = id(&format!("r{round}-{i}"));
                let spec = in_container("r", Some(&container), WorkspaceStatus::Online);
                tokio::spawn(
                    async move { (ws.clone(), store.upsert_workspace(&ws, &spec, t0()).await) },
                )
            })
            .collect();
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for racer in racers {
            match racer.await.unwrap() {
                (ws, Ok(_)) => winners.push(ws.to_string()),
                (_, Err(e)) => losers.push(taken_by(e)),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?} {losers:?}");
        for (taken, owner) in losers {
            assert_eq!(
                (taken.as_str(), owner.as_str()),
                (container.as_str(), winners[0].as_str())
            );
        }
    }
}

// ----------------------------------------------------------------- tokens

async fn token_is_found_by_the_hash_of_its_secret(db: TestDb) {
    let store = db.store().await;
    let (record, secret) = token("ws-1", t0());
    issue(&store, &record).await;

    let found = store
        .token_by_hash(&TokenHash::of(&secret))
        .await
        .unwrap()
        .expect("found by the hash of its secret");
    assert_eq!(found, record);
    assert_eq!(found.hash.to_hex(), TokenHash::of(&secret).to_hex());
    assert_ne!(
        found.hash.to_hex(),
        secret,
        "the secret itself is not stored"
    );
    assert_eq!(found.created_at, t0());
    assert_eq!(found.last_used_at, None);
    assert!(!found.revoked);

    assert_eq!(
        store
            .token_by_hash(&TokenHash::of("not-a-token"))
            .await
            .unwrap(),
        None
    );
    // A near miss (one character changed) finds nothing either.
    let mut near = secret.clone();
    near.replace_range(0..1, if secret.starts_with('0') { "1" } else { "0" });
    assert_eq!(
        store.token_by_hash(&TokenHash::of(&near)).await.unwrap(),
        None
    );
}

async fn tokens_list_oldest_first_for_their_workspace_only(db: TestDb) {
    let store = db.store().await;
    assert_eq!(store.tokens(&id("ws-1")).await.unwrap(), vec![]);

    // Inserted newest first, with sub-second gaps.
    let (newest, _) = token("ws-1", t0() + Duration::seconds(2));
    let (middle, _) = token("ws-1", t0() + Duration::milliseconds(500));
    let (oldest, oldest_secret) = token("ws-1", t0());
    let (foreign, _) = token("ws-2", t0() - Duration::seconds(10));
    for t in [&newest, &middle, &oldest, &foreign] {
        issue(&store, t).await;
    }

    let listed = store.tokens(&id("ws-1")).await.unwrap();
    assert_eq!(listed, vec![oldest.clone(), middle, newest]);
    assert_eq!(listed[0].hash, TokenHash::of(&oldest_secret));
    assert!(
        listed.iter().all(|t| t.workspace_id == id("ws-1")),
        "only the workspace's own tokens"
    );
    assert_eq!(store.tokens(&id("ws-2")).await.unwrap(), vec![foreign]);
    assert_eq!(store.tokens(&id("ws-3")).await.unwrap(), vec![]);

    // Tokens issued in the same instant come in id order.
    let mut twins = vec![
        token("ws-4", t0()).0,
        token("ws-4", t0()).0,
        token("ws-4", t0()).0,
    ];
    for t in &twins {
        issue(&store, t).await;
    }
    twins.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
    assert_eq!(store.tokens(&id("ws-4")).await.unwrap(), twins);
}

async fn revoking_another_workspaces_token_changes_nothing(db: TestDb) {
    let store = db.store().await;
    let (theirs, _) = token("ws-2", t0());
    issue(&store, &theirs).await;

    assert!(
        !store.revoke_token(&id("ws-1"), &theirs.id).await.unwrap(),
        "not ws-1's token"
    );
    assert!(
        !store
            .revoke_token(&id("ws-2"), &TokenId::from_random([7; 12]))
            .await
            .unwrap(),
        "no such token"
    );
    assert_eq!(
        store.token_by_hash(&theirs.hash).await.unwrap(),
        Some(theirs.clone())
    );
    assert!(store.has_live_token(&id("ws-2")).await.unwrap());
}

async fn revoking_sets_revoked_and_ends_the_live_token(db: TestDb) {
    let store = db.store().await;
    let ws = id("ws-1");
    assert!(!store.has_live_token(&ws).await.unwrap(), "no tokens yet");

    let (first, _) = token("ws-1", t0());
    issue(&store, &first).await;
    assert!(store.has_live_token(&ws).await.unwrap());

    let (second, _) = token("ws-1", t0() + Duration::seconds(1));
    issue(&store, &second).await;

    assert!(store.revoke_token(&ws, &first.id).await.unwrap());
    let revoked = store.token_by_hash(&first.hash).await.unwrap().unwrap();
    assert_eq!(
        revoked,
        TokenRecord {
            revoked: true,
            ..first.clone()
        }
    );
    assert!(
        store.has_live_token(&ws).await.unwrap(),
        "the second token is still live"
    );

    assert!(store.revoke_token(&ws, &second.id).await.unwrap());
    assert!(!store.has_live_token(&ws).await.unwrap(), "all revoked");

    // Revoking again is harmless and still finds the token.
    assert!(store.revoke_token(&ws, &second.id).await.unwrap());
    let listed = store.tokens(&ws).await.unwrap();
    assert_eq!(
        listed.iter().map(|t| t.revoked).collect::<Vec<_>>(),
        [true, true]
    );

    // A token inserted already revoked is not live.
    let (dead, _) = token("ws-9", t0());
    issue(
        &store,
        &TokenRecord {
            revoked: true,
            ..dead
        },
    )
    .await;
    assert!(!store.has_live_token(&id("ws-9")).await.unwrap());
}

async fn touching_a_token_records_its_last_use(db: TestDb) {
    let store = db.store().await;
    let (record, _) = token("ws-1", t0());
    let (other, _) = token("ws-1", t0());
    issue(&store, &record).await;
    issue(&store, &other).await;

    let used = t0() + Duration::minutes(3) + Duration::milliseconds(125);
    store.touch_token(&record.id, used).await.unwrap();
    assert_eq!(
        store.token_by_hash(&record.hash).await.unwrap(),
        Some(TokenRecord {
            last_used_at: Some(used),
            ..record.clone()
        })
    );

    let again = used + Duration::seconds(1);
    store.touch_token(&record.id, again).await.unwrap();
    let touched = store.token_by_hash(&record.hash).await.unwrap().unwrap();
    assert_eq!(touched.last_used_at, Some(again));
    assert_eq!(touched.created_at, t0());
    assert!(!touched.revoked);

    assert_eq!(
        store.token_by_hash(&other.hash).await.unwrap(),
        Some(other),
        "other tokens are untouched"
    );
    // Touching an unknown token is not an error.
    store
        .touch_token(&TokenId::from_random([1; 12]), again)
        .await
        .unwrap();
}

async fn duplicate_token_hash_or_id_is_a_conflict(db: TestDb) {
    let store = db.store().await;
    ensure_workspace(&store, "ws-2").await;
    let (original, _) = token("ws-1", t0());
    issue(&store, &original).await;

    let same_hash = TokenRecord {
        id: TokenId::from_random([2; 12]),
        workspace_id: id("ws-2"),
        created_at: t0() + Duration::seconds(1),
        ..original.clone()
    };
    let err = store.insert_token(&same_hash).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

    let same_id = TokenRecord {
        hash: TokenHash::of("another secret"),
        ..original.clone()
    };
    let err = store.insert_token(&same_id).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

    assert_eq!(
        store.token_by_hash(&original.hash).await.unwrap(),
        Some(original.clone())
    );
    assert_eq!(store.tokens(&id("ws-1")).await.unwrap(), vec![original]);
    assert_eq!(store.tokens(&id("ws-2")).await.unwrap(), vec![]);
}

// -------------------------------------------------------------- allowlist

async fn allowlist_of_an_unknown_org_is_empty(db: TestDb) {
    let store = db.store().await;
    assert_eq!(store.allowlist(&id("org-1")).await.unwrap(), vec![]);
}

async fn allowlist_replace_answers_the_stored_list_sorted(db: TestDb) {
    let store = db.store().await;
    let org = id("org-1");
    let sent = plugins(&["zeta", "Alpha", "beta_1", "beta-2", "a.b", "9lives"]);

    let answered = store
        .replace_allowlist(&org, &sent, "alice", t0())
        .await
        .unwrap();
    // Byte order, as the domain sorts plugin names.
    let expected: Vec<AllowlistEntry> = ["9lives", "Alpha", "a.b", "beta-2", "beta_1", "zeta"]
        .into_iter()
        .map(|n| entry(n, "alice", t0()))
        .collect();
    assert_eq!(answered, expected);
    assert_eq!(store.allowlist(&org).await.unwrap(), expected);
}

async fn allowlist_entries_that_stay_keep_who_and_when(db: TestDb) {
    let store = db.store().await;
    let org = id("org-1");
    let t1 = t0() + Duration::hours(1) + Duration::milliseconds(1);

    store
        .replace_allowlist(&org, &plugins(&["keep-a", "drop", "keep-b"]), "alice", t0())
        .await
        .unwrap();
    let answered = store
        .replace_allowlist(&org, &plugins(&["new", "keep-b", "keep-a"]), "bob", t1)
        .await
        .unwrap();

    let expected = vec![
        entry("keep-a", "alice", t0()),
        entry("keep-b", "alice", t0()),
        entry("new", "bob", t1),
    ];
    assert_eq!(answered, expected);
    assert_eq!(store.allowlist(&org).await.unwrap(), expected);

    // Replacing with the same list changes nothing at all.
    let t2 = t1 + Duration::hours(1);
    let same = store
        .replace_allowlist(&org, &plugins(&["keep-a", "keep-b", "new"]), "carol", t2)
        .await
        .unwrap();
    assert_eq!(same, expected);
}

async fn allowlist_replace_with_nothing_clears_it(db: TestDb) {
    let store = db.store().await;
    let org = id("org-1");
    store
        .replace_allowlist(&org, &plugins(&["a", "b"]), "alice", t0())
        .await
        .unwrap();

    let answered = store
        .replace_allowlist(&org, &[], "bob", t0() + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(answered, vec![]);
    assert_eq!(store.allowlist(&org).await.unwrap(), vec![]);

    // An empty list stays empty, and can be filled again from scratch.
    assert_eq!(
        store
            .replace_allowlist(&org, &[], "bob", t0() + Duration::seconds(2))
            .await
            .unwrap(),
        vec![]
    );
    let t3 = t0() + Duration::seconds(3);
    assert_eq!(
        store
            .replace_allowlist(&org, &plugins(&["a"]), "carol", t3)
            .await
            .unwrap(),
        vec![entry("a", "carol", t3)],
        "a re-added entry is new: new who, new when"
    );
}

async fn allowlists_of_orgs_are_independent(db: TestDb) {
    let store = db.store().await;
    let (one, two) = (id("org-1"), id("org-2"));
    let t1 = t0() + Duration::seconds(1);

    store
        .replace_allowlist(&one, &plugins(&["shared", "only-one"]), "alice", t0())
        .await
        .unwrap();
    store
        .replace_allowlist(&two, &plugins(&["shared", "only-two"]), "bob", t1)
        .await
        .unwrap();
    assert_eq!(
        store.allowlist(&one).await.unwrap(),
        vec![
            entry("only-one", "alice", t0()),
            entry("shared", "alice", t0())
        ]
    );
    assert_eq!(
        store.allowlist(&two).await.unwrap(),
        vec![entry("only-two", "bob", t1), entry("shared", "bob", t1)]
    );

    store
        .replace_allowlist(&one, &[], "alice", t1)
        .await
        .unwrap();
    assert_eq!(store.allowlist(&one).await.unwrap(), vec![]);
    assert_eq!(
        store.allowlist(&two).await.unwrap(),
        vec![entry("only-two", "bob", t1), entry("shared", "bob", t1)],
        "clearing org-1 leaves org-2 alone"
    );
    assert_eq!(store.allowlist(&id("org-3")).await.unwrap(), vec![]);
}

async fn allowlist_replace_is_atomic(db: TestDb) {
    let store = db.store().await;
    let org = id("org-1");
    let before = store
        .replace_allowlist(&org, &plugins(&["x", "y"]), "alice", t0())
        .await
        .unwrap();
    assert_eq!(
        before,
        vec![entry("x", "alice", t0()), entry("y", "alice", t0())]
    );

    db.fail_allowlist_inserts_of("boom").await;

    // Deleting x and y succeeds, inserting a succeeds, boom fails: all of
    // it must be rolled back.
    let err = store
        .replace_allowlist(
            &org,
            &plugins(&["a", "boom"]),
            "mallory",
            t0() + Duration::seconds(1),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Other(_)), "{err:?}");
    assert!(
        error_chain(&err).contains("injected failure"),
        "failed because of the trigger: {}",
        error_chain(&err)
    );
    assert_eq!(store.allowlist(&org).await.unwrap(), before);

    // The failed attempt left nothing behind: the store still works.
    let t2 = t0() + Duration::seconds(2);
    assert_eq!(
        store
            .replace_allowlist(&org, &plugins(&["a", "y"]), "bob", t2)
            .await
            .unwrap(),
        vec![entry("a", "bob", t2), entry("y", "alice", t0())]
    );
}

async fn concurrent_allowlist_replacements_end_as_exactly_one_of_the_lists(db: TestDb) {
    let store = db.store().await;
    let org = id("org-1");
    for round in 0..3 {
        // Overlapping lists: entries that stay, go and come all race.
        let lists: Vec<Vec<PluginName>> = (0..12)
            .map(|i| {
                plugins(&[
                    "shared",
                    &format!("only-{i}"),
                    &format!("pair-{}", i / 2),
                    &format!("round-{round}"),
                ])
            })
            .collect();
        let writers: Vec<_> = lists
            .iter()
            .cloned()
            .map(|list| {
                let (store, org) = (store.clone(), org.clone());
                tokio::spawn(
                    async move { store.replace_allowlist(&org, &list, "admin", t0()).await },
                )
            })
            .collect();
        for writer in writers {
            writer.await.unwrap().unwrap();
        }
        let mut stored: Vec<String> = store
            .allowlist(&org)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.plugin_name.to_string())
            .collect();
        stored.sort();
        let one_of_them = lists.iter().any(|list| {
            let mut names: Vec<String> = list.iter().map(|p| p.to_string()).collect();
            names.sort();
            names == stored
        });
        assert!(one_of_them, "round {round}: a merge {stored:?}");
    }
}

// ------------------------------------------------------ migrations, health

async fn migrations_are_idempotent_and_keep_data(db: TestDb) {
    let first = db.store().await;
    let (ws, _) = first
        .upsert_workspace(&id("ws-1"), &spec("w"), t0())
        .await
        .unwrap();
    let (tok, _) = token("ws-1", t0());
    issue(&first, &tok).await;
    let list = first
        .replace_allowlist(&id("ws-1"), &plugins(&["p"]), "alice", t0())
        .await
        .unwrap();
    drop(first);

    // Connecting runs the migrations again, over a migrated database.
    let second = db.store().await;
    let third = db.store().await;
    for store in [&second, &third] {
        assert_eq!(
            store.workspace(&id("ws-1")).await.unwrap(),
            Some(ws.clone())
        );
        assert_eq!(
            store.token_by_hash(&tok.hash).await.unwrap(),
            Some(tok.clone())
        );
        assert_eq!(store.allowlist(&id("ws-1")).await.unwrap(), list);
    }
    let (_, outcome) = third
        .upsert_workspace(&id("ws-1"), &spec("w2"), t0() + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(outcome, Upserted::Updated);
}

async fn ping_answers_when_the_database_is_up(db: TestDb) {
    let store = db.store().await;
    store.ping().await.unwrap();
    store.ping().await.unwrap();
}

async fn unreachable_database_is_unavailable(db: TestDb) {
    let url = db.unreachable_url();
    let result = SeaOrmStore::connect(&url).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{url}: {:?}",
        result.err()
    );
}

// ---------------------------------------------------------------- receipts

fn receipt(workspace: &str, name: &str, content: &str, at: DateTime<Utc>) -> Receipt {
    Receipt {
        workspace_id: id(workspace),
        plugin: plugin(name),
        source: format!("local://{name}"),
        digest: tree_digest(&[FileDigest {
            path: "plugin.yaml".into(),
            sha256: sha256(content.as_bytes()),
        }]),
        size_bytes: content.len() as u64,
        installed_at: at,
        installed_by: "admin".into(),
        provenance: Some(Provenance {
            revision: Some(hex::encode(sha256(name.as_bytes()))),
            version: String::new(),
            files: vec![FileDigest {
                path: "plugin.yaml".into(),
                sha256: sha256(content.as_bytes()),
            }],
        }),
    }
}

async fn receipts_keep_their_provenance_and_files(db: TestDb) {
    let store = db.store().await;
    let mut r = receipt("ws", "p", "v1", t0());
    let files = vec![
        FileDigest {
            path: "a b/c.md".into(),
            sha256: sha256(b"c"),
        },
        FileDigest {
            path: "plugin.yaml".into(),
            sha256: sha256(b"v1"),
        },
    ];
    r.digest = tree_digest(&files);
    r.provenance = Some(Provenance {
        revision: Some("0123456789abcdef0123456789abcdef01234567".into()),
        version: "1.2.3".into(),
        files,
    });
    store.put_receipt(&r, None).await.unwrap();
    assert_eq!(
        store.receipt(&id("ws"), &plugin("p")).await.unwrap(),
        Some(r.clone())
    );
    // A local install has no revision; replacing keeps nothing of the old.
    let mut local = r.clone();
    local.provenance = Some(Provenance {
        revision: None,
        version: String::new(),
        files: vec![],
    });
    store.put_receipt(&local, None).await.unwrap();
    assert_eq!(
        store.receipt(&id("ws"), &plugin("p")).await.unwrap(),
        Some(local)
    );
}

async fn a_receipt_row_of_the_old_shape_still_reads_with_unknown_provenance(db: TestDb) {
    let store = db.store().await;
    let digest = receipt("ws", "old", "x", t0()).digest;
    // What the service wrote before receipts carried provenance.
    let sql = format!(
        "INSERT INTO receipts (workspace_id, plugin_name, source, digest, size_bytes, installed_at, installed_by) \
         VALUES ('ws', 'old', 'local://old', '{digest}', 1, '2026-11-25T10:00:00Z', 'admin')"
    );
    db::execute(&db.url, &sql).await;
    let old = store
        .receipt(&id("ws"), &plugin("old"))
        .await
        .unwrap()
        .expect("the old row reads");
    assert_eq!(old.provenance, None);
    assert_eq!((old.revision(), old.version()), (None, None));
    assert_eq!(old.digest, digest);
    assert_eq!(
        store.receipts(&id("ws")).await.unwrap(),
        std::slice::from_ref(&old)
    );
    assert_eq!(
        store
            .installations(&plugin("old"), None, None, 10)
            .await
            .unwrap(),
        [old]
    );
}

async fn installations_list_a_plugins_workspaces_by_id_filtered_by_digest_in_pages(db: TestDb) {
    let store = db.store().await;
    for (ws, content) in [
        ("ws-c", "v2"),
        ("ws-a", "v1"),
        ("ws-B", "v1"),
        ("ws-b", "v2"),
    ] {
        store
            .put_receipt(&receipt(ws, "p", content, t0()), None)
            .await
            .unwrap();
    }
    store
        .put_receipt(&receipt("ws-a", "other", "v1", t0()), None)
        .await
        .unwrap();
    let ids = |list: Vec<Receipt>| -> Vec<String> {
        list.into_iter()
            .map(|r| r.workspace_id.to_string())
            .collect()
    };
    let all = store
        .installations(&plugin("p"), None, None, 10)
        .await
        .unwrap();
    assert_eq!(ids(all), ["ws-B", "ws-a", "ws-b", "ws-c"], "bytewise by id");
    let v1 = receipt("x", "p", "v1", t0()).digest;
    let page = store
        .installations(&plugin("p"), Some(v1.clone()), None, 1)
        .await
        .unwrap();
    assert_eq!(ids(page), ["ws-B"]);
    let page = store
        .installations(&plugin("p"), Some(v1), Some(id("ws-B")), 1)
        .await
        .unwrap();
    assert_eq!(ids(page), ["ws-a"]);
    let rest = store
        .installations(&plugin("p"), None, Some(id("ws-b")), 10)
        .await
        .unwrap();
    assert_eq!(ids(rest), ["ws-c"]);
    assert!(
        store
            .installations(&plugin("nobody"), None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn receipts_are_put_replaced_listed_and_deleted(db: TestDb) {
    let store = db.store().await;
    assert_eq!(store.receipt(&id("ws"), &plugin("a")).await.unwrap(), None);
    let first = receipt("ws", "b", "v1", t0());
    store.put_receipt(&first, None).await.unwrap();
    store
        .put_receipt(&receipt("ws", "a", "x", t0()), None)
        .await
        .unwrap();
    store
        .put_receipt(&receipt("other", "a", "y", t0()), None)
        .await
        .unwrap();
    let mut second = receipt("ws", "b", "v2", t0() + Duration::seconds(5));
    second.installed_by = "tok_000000000000000000000001".into();
    store.put_receipt(&second, None).await.unwrap();
    assert_eq!(
        store.receipt(&id("ws"), &plugin("b")).await.unwrap(),
        Some(second.clone()),
        "replaced"
    );
    let listed = store.receipts(&id("ws")).await.unwrap();
    let names: Vec<&str> = listed.iter().map(|r| r.plugin.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(
        store
            .delete_receipt(&id("ws"), &plugin("b"), None)
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_receipt(&id("ws"), &plugin("b"), None)
            .await
            .unwrap()
    );
    assert_eq!(
        store.receipts(&id("other")).await.unwrap().len(),
        1,
        "other workspaces untouched"
    );
}

// ------------------------------------------------------------------- audit

fn event(
    action: AuditAction,
    workspace: &str,
    name: Option<&str>,
    at: DateTime<Utc>,
) -> AuditEvent {
    let mut e = AuditEvent::new(at, "admin".into(), action, AuditOutcome::Ok, 200);
    e.workspace_id = Some(id(workspace));
    e.plugin = name.map(plugin);
    e
}

async fn all_events(store: &SeaOrmStore) -> Vec<AuditEvent> {
    store
        .events(&AuditFilter::default(), 500)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect()
}

async fn an_install_event_is_written_with_its_receipt_or_not_at_all(db: TestDb) {
    let store = db.store().await;
    let first = receipt("ws", "a", "v1", t0());
    let mut installed = event(AuditAction::Install, "ws", Some("a"), t0());
    installed = installed.with_source(&Source::parse("local://a").unwrap());
    installed.digest = Some(first.digest.clone());
    store.put_receipt(&first, Some(&installed)).await.unwrap();
    assert_eq!(all_events(&store).await, [installed.clone()]);

    // The receipt's write fails: no event either.
    let second = receipt("ws", "a", "v2", t0() + Duration::seconds(1));
    db.fail_writes("fail_receipts", "INSERT", "receipts").await;
    let refused = store.put_receipt(&second, Some(&installed)).await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(db.audit_rows().await, 1, "no event without its receipt");
    db.allow_writes("fail_receipts", "receipts").await;

    // The event's write fails: the receipt is not replaced either.
    db.fail_writes("fail_audit", "INSERT", "audit_events").await;
    let refused = store.put_receipt(&second, Some(&installed)).await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(
        store.receipt(&id("ws"), &plugin("a")).await.unwrap(),
        Some(first),
        "no receipt change without its event"
    );
    // A receipt change with no event to go with it does not need the log.
    store.put_receipt(&second, None).await.unwrap();
    assert_eq!(
        store.receipt(&id("ws"), &plugin("a")).await.unwrap(),
        Some(second)
    );
}

async fn an_uninstall_event_is_written_with_its_receipt_deletion_or_not_at_all(db: TestDb) {
    let store = db.store().await;
    store
        .put_receipt(&receipt("ws", "a", "v1", t0()), None)
        .await
        .unwrap();
    let removed = event(AuditAction::Uninstall, "ws", Some("a"), t0());

    db.fail_writes("fail_audit", "INSERT", "audit_events").await;
    let refused = store
        .delete_receipt(&id("ws"), &plugin("a"), Some(&removed))
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(
        store
            .receipt(&id("ws"), &plugin("a"))
            .await
            .unwrap()
            .is_some(),
        "the receipt stays when its event cannot be written"
    );
    db.allow_writes("fail_audit", "audit_events").await;

    db.fail_writes("fail_receipts", "DELETE", "receipts").await;
    let refused = store
        .delete_receipt(&id("ws"), &plugin("a"), Some(&removed))
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(db.audit_rows().await, 0, "no event without its deletion");
    db.allow_writes("fail_receipts", "receipts").await;

    assert!(
        store
            .delete_receipt(&id("ws"), &plugin("a"), Some(&removed))
            .await
            .unwrap()
    );
    assert_eq!(all_events(&store).await, std::slice::from_ref(&removed));
    // Deleting what is gone still records its event (an uninstall whose
    // receipt went before the container was touched).
    assert!(
        !store
            .delete_receipt(&id("ws"), &plugin("a"), Some(&removed))
            .await
            .unwrap()
    );
    assert_eq!(db.audit_rows().await, 2);
}

async fn audit_events_read_newest_first_filtered_and_paged_by_cursor(db: TestDb) {
    let store = db.store().await;
    let at = |s| t0() + Duration::seconds(s);
    let mut token_issue = event(AuditAction::TokenIssue, "ws-2", None, at(3));
    token_issue.outcome = AuditOutcome::Ok;
    token_issue.status = 201;
    let mut refused = event(AuditAction::Install, "ws-1", Some("b"), at(2));
    refused.outcome = AuditOutcome::Refused;
    refused.status = 403;
    refused.actor = "tok_000000000000000000000001".into();
    let appended = [
        event(AuditAction::Install, "ws-1", Some("a"), at(0)),
        event(AuditAction::Uninstall, "ws-1", Some("a"), at(1)),
        refused.clone(),
        token_issue.clone(),
        event(AuditAction::Install, "ws-2", Some("a"), at(4)),
    ];
    for e in &appended {
        store.append(e).await.unwrap();
    }
    let read = |filter: AuditFilter, limit| {
        let store = store.clone();
        async move { store.events(&filter, limit).await.unwrap() }
    };
    let newest_first: Vec<_> = read(AuditFilter::default(), 10)
        .await
        .into_iter()
        .map(|r| r.event)
        .collect();
    let mut expected = appended.to_vec();
    expected.reverse();
    assert_eq!(newest_first, expected, "every field round-trips");

    let plugins = |records: Vec<AuditRecord>| -> Vec<(String, Option<String>)> {
        records
            .into_iter()
            .map(|r| {
                (
                    r.event.action.to_string(),
                    r.event.plugin.map(|p| p.to_string()),
                )
            })
            .collect()
    };
    let by_workspace = read(
        AuditFilter {
            workspace: Some(id("ws-1")),
            ..AuditFilter::default()
        },
        10,
    )
    .await;
    assert_eq!(
        plugins(by_workspace),
        [
            ("install".into(), Some("b".into())),
            ("uninstall".into(), Some("a".into())),
            ("install".into(), Some("a".into())),
        ]
    );
    let combined = read(
        AuditFilter {
            plugin: Some(plugin("a")),
            action: Some(AuditAction::Install),
            since: Some(at(1)),
            ..AuditFilter::default()
        },
        10,
    )
    .await;
    assert_eq!(plugins(combined), [("install".into(), Some("a".into()))]);

    // Two at a time, each page strictly older than the last.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = read(
            AuditFilter {
                before,
                ..AuditFilter::default()
            },
            2,
        )
        .await;
        if page.is_empty() {
            break;
        }
        before = page.last().map(AuditCursor::after);
        seen.extend(page.into_iter().map(|r| r.event));
    }
    assert_eq!(seen, expected);
}

async fn audit_retention_forgets_only_older_events_a_batch_at_a_time(db: TestDb) {
    let store = db.store().await;
    for s in 0..7 {
        store
            .append(&event(
                AuditAction::WorkspacePut,
                "ws",
                None,
                t0() + Duration::seconds(s),
            ))
            .await
            .unwrap();
    }
    let cutoff = t0() + Duration::seconds(5);
    assert_eq!(store.forget_before(cutoff, 2).await.unwrap(), 2);
    assert_eq!(store.forget_before(cutoff, 2).await.unwrap(), 2);
    assert_eq!(store.forget_before(cutoff, 2).await.unwrap(), 1);
    assert_eq!(store.forget_before(cutoff, 2).await.unwrap(), 0);
    let kept: Vec<_> = all_events(&store).await.into_iter().map(|e| e.at).collect();
    assert_eq!(
        kept,
        [t0() + Duration::seconds(6), t0() + Duration::seconds(5)],
        "an event exactly at the cutoff stays"
    );
}

async fn audit_ids_are_never_reused_after_retention(db: TestDb) {
    let store = db.store().await;
    let e = event(AuditAction::WorkspaceDelete, "ws", None, t0());
    store.append(&e).await.unwrap();
    store.append(&e).await.unwrap();
    let last = store.events(&AuditFilter::default(), 1).await.unwrap()[0].id;
    store
        .forget_before(t0() + Duration::seconds(1), 10)
        .await
        .unwrap();
    store.append(&e).await.unwrap();
    let next = store.events(&AuditFilter::default(), 1).await.unwrap()[0].id;
    assert!(
        next > last,
        "a cursor handed out before retention still means older: {last} then {next}"
    );
}

// ------------------------------------------------ replicas (SPEC §12)

impl TestDb {
    /// `n` replicas of the service on this database: separate stores
    /// (separate sessions) on PostgreSQL; on SQLite, where one process owns
    /// the database, clones of one store.
    async fn replicas(&self, n: usize) -> Vec<SeaOrmStore> {
        let first = self.store().await;
        let mut all = vec![first.clone()];
        for _ in 1..n {
            all.push(match self.backend {
                Backend::Postgres => self.store().await,
                Backend::Sqlite => first.clone(),
            });
        }
        all
    }
}

fn within(ms: u64) -> Option<std::time::Instant> {
    Some(std::time::Instant::now() + std::time::Duration::from_millis(ms))
}

async fn a_workspace_hold_excludes_every_other_holder_until_dropped(db: TestDb) {
    let replicas = db.replicas(2).await;
    let (a, b) = (&replicas[0], &replicas[1]);
    let ws = id("ws-held");
    let held = a.hold(&ws, None).await.expect("first hold");
    for holder in [a, b] {
        assert!(
            matches!(
                holder.hold(&ws, within(200)).await,
                Err(HoldError::TimedOut)
            ),
            "a second hold waits until its deadline, then gives up"
        );
    }
    let other = b.hold(&id("ws-other"), within(2_000)).await;
    assert!(other.is_ok(), "another workspace is not blocked");
    drop(other);
    drop(held);
    let again = b.hold(&ws, within(5_000)).await;
    assert!(again.is_ok(), "released when its holder is dropped");
    drop(again);
    // A holder that gave up never took the workspace behind anyone's back.
    assert!(a.hold(&ws, within(5_000)).await.is_ok());
}

async fn a_workspace_hold_dies_with_its_holders_session(db: TestDb) {
    let replicas = db.replicas(2).await;
    let ws = id("ws-dies");
    // Held and never dropped, as by a replica killed with SIGKILL.
    let _held_by_the_dead = replicas[0].hold(&ws, None).await.expect("hold");
    assert!(replicas[1].hold(&ws, within(200)).await.is_err());
    let key = workspace_plugins::adapters::db::workspace_lock_key(&ws);
    db::execute(
        &db.url,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_locks \
             WHERE locktype = 'advisory' AND granted \
             AND ((classid::bigint << 32) | objid::bigint) = {key}"
        ),
    )
    .await;
    assert!(
        replicas[1].hold(&ws, within(5_000)).await.is_ok(),
        "the lock went with its session"
    );
}

async fn a_due_restart_is_carried_out_exactly_once_by_concurrent_claimers(db: TestDb) {
    let replicas = db.replicas(4).await;
    let ws = id("ws-restart");
    let container = ContainerName::parse("agent-1").unwrap();
    replicas[0]
        .request_restart(&ws, &container, t0())
        .await
        .expect("request");
    let carried = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let claimers = (0..16).map(|i| {
        let store = replicas[i % replicas.len()].clone();
        let (ws, carried) = (ws.clone(), carried.clone());
        tokio::spawn(async move {
            let _held = store.hold(&ws, None).await.expect("hold");
            let Some(pending) = store.pending_restart(&ws).await.expect("read") else {
                return;
            };
            assert!(pending.due_at <= Utc::now());
            carried.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let still = store
                .finish_restart(&ws, pending.generation)
                .await
                .expect("finish");
            assert!(!still, "nothing asked for since");
        })
    });
    for claimer in futures_util::future::join_all(claimers).await {
        claimer.expect("claimer");
    }
    assert_eq!(carried.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(replicas[0].pending_restarts().await.unwrap(), vec![]);
}

async fn a_request_after_a_restart_was_read_keeps_one_pending(db: TestDb) {
    let store = db.store().await;
    let ws = id("ws-debounce");
    let container = ContainerName::parse("agent-1").unwrap();
    let t1 = t0() + Duration::seconds(2);
    store.request_restart(&ws, &container, t0()).await.unwrap();
    store.request_restart(&ws, &container, t1).await.unwrap();
    let read = store.pending_restart(&ws).await.unwrap().expect("pending");
    assert_eq!(
        (read.due_at, read.generation, read.attempts),
        (t1, 2, 0),
        "the last request's due time stands"
    );
    store
        .retry_restart(&ws, read.generation, t1 + Duration::seconds(1))
        .await
        .unwrap();
    let retried = store.pending_restart(&ws).await.unwrap().expect("pending");
    assert_eq!(
        (retried.attempts, retried.due_at),
        (1, t1 + Duration::seconds(1))
    );
    // Asked for again after `read`: carrying out `read` keeps the new one.
    let t2 = t1 + Duration::seconds(5);
    store.request_restart(&ws, &container, t2).await.unwrap();
    assert!(store.finish_restart(&ws, read.generation).await.unwrap());
    let later = store
        .pending_restart(&ws)
        .await
        .unwrap()
        .expect("still pending");
    assert_eq!((later.due_at, later.attempts), (t2, 0));
    assert!(!store.finish_restart(&ws, later.generation).await.unwrap());
    assert_eq!(store.pending_restart(&ws).await.unwrap(), None);
}

async fn the_admin_token_is_kept_once_and_the_first_to_keep_it_wins(db: TestDb) {
    let replicas = db.replicas(3).await;
    assert_eq!(replicas[0].admin_token().await.unwrap(), None);
    let racing = replicas.iter().enumerate().map(|(i, store)| {
        let store = store.clone();
        async move {
            store
                .adopt_admin_token(&TokenHash::of(&format!("secret-{i}")))
                .await
                .expect("adopt")
        }
    });
    let answers = futures_util::future::join_all(racing).await;
    let kept = replicas[1].admin_token().await.unwrap().expect("kept");
    assert!(
        answers.iter().all(|a| a.matches(&kept)),
        "every racer answers the one kept"
    );
    let other = TokenHash::of("not-the-kept-one");
    assert!(
        replicas[2]
            .adopt_admin_token(&other)
            .await
            .unwrap()
            .matches(&kept)
    );
    replicas[2].forget_admin_token(&other).await.unwrap();
    assert!(
        replicas[0].admin_token().await.unwrap().is_some(),
        "only the kept hash is forgotten"
    );
    replicas[2].forget_admin_token(&kept).await.unwrap();
    assert_eq!(replicas[0].admin_token().await.unwrap(), None);
}
