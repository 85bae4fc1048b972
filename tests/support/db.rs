//! Databases for integration tests: a fresh SQLite file, or a fresh
//! PostgreSQL database on the server named by `TEST_DATABASE_URL`.
//!
//! A missing PostgreSQL fails the test with a message saying how to start
//! it: tests never skip silently (STYLE §7).
//!
//! Test databases are throwaway: each is named `wp_test_<unix seconds>_<hex>`,
//! and the first call in a process drops those older than an hour, so
//! runs clean up after earlier ones without racing concurrent ones.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};

/// The server used when `TEST_DATABASE_URL` is unset; `scripts/services.sh`
/// sets it up.
pub const DEFAULT_TEST_DATABASE_URL: &str =
    "postgres://workspace_plugins:workspace_plugins@127.0.0.1:5432/postgres";

const TEST_DB_PREFIX: &str = "wp_test_";
const STALE_AFTER_SECS: u64 = 60 * 60;

static STALE_DROPPED: AtomicBool = AtomicBool::new(false);

/// A URL for a new SQLite file under `dir` (created on first connect).
pub fn sqlite_url(dir: &Path) -> String {
    let file = dir.join(format!(
        "store-{}.db",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    format!("sqlite://{}", file.display())
}

/// Creates a fresh, empty PostgreSQL database and returns its URL.
///
/// # Panics
/// When the server behind `TEST_DATABASE_URL` (default
/// [`DEFAULT_TEST_DATABASE_URL`]) cannot be reached or refuses to create
/// the database.
pub async fn postgres_url() -> String {
    let base = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_TEST_DATABASE_URL.to_owned());
    let admin = connect(&base).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {}: {e}\n\
             run scripts/services.sh (as root) or set TEST_DATABASE_URL \
             to a server where this role may CREATE DATABASE",
            redact(&base)
        )
    });

    if !STALE_DROPPED.swap(true, Ordering::SeqCst) {
        drop_stale_databases(&admin).await;
    }

    let name = format!(
        "{TEST_DB_PREFIX}{}_{}",
        unix_now(),
        hex::encode(rand::random::<[u8; 6]>())
    );
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot create test database {name} on {}: {e}\n\
                 the role needs CREATEDB (run scripts/services.sh or set TEST_DATABASE_URL)",
                redact(&base)
            )
        });
    let _ = admin.close().await;
    with_database(&base, &name)
}

/// Runs raw SQL (one or more statements) against `url`, e.g. to install a
/// trigger that makes the next write fail.
///
/// # Panics
/// When the database cannot be reached or the SQL fails.
pub async fn execute(url: &str, sql: &str) {
    let db = connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", redact(url)));
    db.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("SQL failed on {}: {e}\n{sql}", redact(url)));
    let _ = db.close().await;
}

/// A connection of its own to `url`, e.g. to hold a transaction open
/// while the store under test works on another connection.
///
/// # Panics
/// When the database cannot be reached.
pub async fn connection(url: &str) -> DatabaseConnection {
    connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", redact(url)))
}

async fn connect(url: &str) -> Result<DatabaseConnection, sea_orm::DbErr> {
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    Database::connect(options).await
}

/// Best effort: another process may be dropping the same databases, and a
/// database still in use by a long run is simply left for next time.
async fn drop_stale_databases(admin: &DatabaseConnection) {
    let Ok(rows) = admin
        .query_all_raw(sea_orm::Statement::from_string(
            admin.get_database_backend(),
            format!("SELECT datname FROM pg_database WHERE datname LIKE '{TEST_DB_PREFIX}%'"),
        ))
        .await
    else {
        return;
    };
    let cutoff = unix_now().saturating_sub(STALE_AFTER_SECS);
    for row in rows {
        let Ok(name) = row.try_get_by::<String, _>(0) else {
            continue;
        };
        let created = name
            .strip_prefix(TEST_DB_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if created.is_some_and(|created| created < cutoff) {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// `base` with its database (the URL path) replaced by `name`; the query
/// string, if any, is kept.
fn with_database(base: &str, name: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (base, None),
    };
    let authority_start = head.find("://").map_or(0, |i| i + 3);
    let authority_end = head[authority_start..]
        .find('/')
        .map_or(head.len(), |i| authority_start + i);
    match query {
        Some(query) => format!("{}/{name}?{query}", &head[..authority_end]),
        None => format!("{}/{name}", &head[..authority_end]),
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    match authority.rfind('@') {
        Some(at) => {
            let user = authority[..at].split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme_end], &rest[at..])
        }
        None => url.to_owned(),
    }
}
