//! [`SeaOrmStore`]: the workspace, token and allowlist stores.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectOptions, ConnectionTrait, Database,
    DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, SqlErr, SqliteTransactionMode, Statement, TransactionOptions,
    TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

use super::entities::{allowlist_entry, audit_event, receipt, token, workspace};
use super::migration::Migrator;
use crate::adapters::keyed::LocalWorkspaceLocks;
use crate::domain::audit::{AuditEvent, AuditFilter, AuditRecord};
use crate::domain::digest::{TreeDigest, file_list_text, parse_file_list};
use crate::domain::name::{PluginName, WorkspaceId};
use crate::domain::receipt::{Provenance, Receipt};
use crate::domain::runtime::Runtime;
use crate::domain::token::{TokenHash, TokenId, TokenRecord};
use crate::domain::workspace::{ContainerName, Workspace, WorkspaceSpec};
use crate::ports::audit::AuditLog;
use crate::ports::receipts::ReceiptStore;
use crate::ports::store::{
    AllowlistEntry, AllowlistStore, StoreError, StoreHealth, TokenStore, Upserted, WorkspaceStore,
};

/// The database-backed stores.
#[derive(Clone)]
pub struct SeaOrmStore {
    db: DatabaseConnection,
    /// PostgreSQL only: the connections workspace holds keep their
    /// advisory-lock transactions on (`coordination.rs`).
    lock_db: Option<DatabaseConnection>,
    /// Holds of workspaces in this process, in front of the advisory lock.
    local_locks: LocalWorkspaceLocks,
}

/// Connections of the lock pool: one per workspace held (or awaited) by
/// this replica at a time, since a replica queues its own holders of one
/// workspace in process.
const LOCK_CONNECTIONS: u32 = 32;

pub(super) fn map_err(e: DbErr) -> StoreError {
    if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) {
        return StoreError::Conflict(Box::new(e));
    }
    match e {
        DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => StoreError::Unavailable(Box::new(e)),
        other => StoreError::Other(Box::new(other)),
    }
}

/// How many times a workspace write is tried when a concurrent write of
/// the same id or container won the race: each retry re-reads what won.
const UPSERT_ATTEMPTS: usize = 3;

/// The first key of the per-org advisory lock that serializes allowlist
/// replacements on PostgreSQL: an arbitrary constant ("wpal") that keeps
/// these locks apart from any other advisory lock on the server.
const ALLOWLIST_LOCK_CLASS: i32 = 0x7770_616c;

/// A row that does not convert back into a domain value: the database was
/// written by something else, or by a buggy version of this service.
pub(super) fn corrupt(what: &str, id: &str) -> StoreError {
    StoreError::Other(format!("stored {what} {id:?} is invalid").into())
}

impl SeaOrmStore {
    /// Connects to `url` (`sqlite://…` or `postgres://…`) and runs the
    /// migrations. SQLite files are created when missing.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let url = if url.starts_with("sqlite:") && !url.contains("mode=") {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}mode=rwc")
        } else {
            url.to_owned()
        };
        let mut options = ConnectOptions::new(url.clone());
        options
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(5))
            .sqlx_logging(false);
        let db = Database::connect(options.clone()).await.map_err(map_err)?;
        Migrator::up(&db, None).await.map_err(map_err)?;
        let lock_db = if db.get_database_backend() == DbBackend::Postgres {
            options.max_connections(LOCK_CONNECTIONS).min_connections(0);
            Some(Database::connect(options).await.map_err(map_err)?)
        } else {
            None
        };
        Ok(Self {
            db,
            lock_db,
            local_locks: LocalWorkspaceLocks::default(),
        })
    }

    pub(super) fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    pub(super) fn lock_db(&self) -> Option<&DatabaseConnection> {
        self.lock_db.as_ref()
    }

    pub(super) fn local_locks(&self) -> &LocalWorkspaceLocks {
        &self.local_locks
    }
}

impl SeaOrmStore {
    /// A transaction that will write. On SQLite it takes the write lock at
    /// `BEGIN`, so what it reads cannot change before it writes; PostgreSQL
    /// transactions lock what they need explicitly.
    async fn begin_write(&self) -> Result<DatabaseTransaction, StoreError> {
        self.db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await
            .map_err(map_err)
    }

    async fn try_upsert(
        &self,
        id: &WorkspaceId,
        spec: &WorkspaceSpec,
        now: DateTime<Utc>,
    ) -> Result<(Workspace, Upserted), StoreError> {
        let txn = self.begin_write().await?;
        // The unique index on the claim is what holds under a race; this
        // read names the owner for the answer (a write that lost the race
        // is retried and lands here).
        if let Some(container) = spec.claimed_container(id) {
            let owner = workspace::Entity::find()
                .filter(workspace::Column::ContainerClaim.eq(container.as_str()))
                .filter(workspace::Column::Id.ne(id.as_str()))
                .one(&txn)
                .await
                .map_err(map_err)?;
            if let Some(owner) = owner {
                let owner =
                    WorkspaceId::parse(&owner.id).map_err(|_| corrupt("workspace", &owner.id))?;
                return Err(StoreError::ContainerTaken { container, owner });
            }
        }
        let existing = workspace::Entity::find_by_id(id.as_str())
            .one(&txn)
            .await
            .map_err(map_err)?;
        let (row, outcome) = match existing {
            Some(old) => {
                let row = workspace_row(id, spec, old.created_at, now);
                (row.update(&txn).await.map_err(map_err)?, Upserted::Updated)
            }
            None => {
                let row = workspace_row(id, spec, now, now);
                (row.insert(&txn).await.map_err(map_err)?, Upserted::Created)
            }
        };
        txn.commit().await.map_err(map_err)?;
        Ok((Workspace::try_from(row)?, outcome))
    }
}

impl TryFrom<workspace::Model> for Workspace {
    type Error = StoreError;

    fn try_from(row: workspace::Model) -> Result<Self, StoreError> {
        let bad = || corrupt("workspace", &row.id);
        let id = WorkspaceId::parse(&row.id).map_err(|_| bad())?;
        let spec = WorkspaceSpec {
            runtime: Runtime::parse(&row.runtime).map_err(|_| bad())?,
            parent_id: row
                .parent_id
                .as_deref()
                .map(WorkspaceId::parse)
                .transpose()
                .map_err(|_| bad())?,
            container: row
                .container
                .as_deref()
                .map(ContainerName::parse)
                .transpose()
                .map_err(|_| bad())?,
            status: row.status.parse().map_err(|_| bad())?,
            name: row.name,
        };
        Ok(Workspace {
            id,
            spec,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

impl TryFrom<token::Model> for TokenRecord {
    type Error = StoreError;

    fn try_from(row: token::Model) -> Result<Self, StoreError> {
        let bad = || corrupt("token", &row.id);
        Ok(TokenRecord {
            id: TokenId::parse(&row.id).ok_or_else(bad)?,
            workspace_id: WorkspaceId::parse(&row.workspace_id).map_err(|_| bad())?,
            hash: TokenHash::from_hex(&row.hash).ok_or_else(bad)?,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            revoked: row.revoked,
        })
    }
}

impl TryFrom<allowlist_entry::Model> for AllowlistEntry {
    type Error = StoreError;

    fn try_from(row: allowlist_entry::Model) -> Result<Self, StoreError> {
        Ok(AllowlistEntry {
            plugin_name: PluginName::parse(&row.plugin_name)
                .map_err(|_| corrupt("allowlist entry", &row.plugin_name))?,
            enabled_by: row.enabled_by,
            enabled_at: row.enabled_at,
        })
    }
}

fn workspace_row(
    id: &WorkspaceId,
    spec: &WorkspaceSpec,
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> workspace::ActiveModel {
    workspace::ActiveModel {
        id: Set(id.as_str().to_owned()),
        name: Set(spec.name.clone()),
        runtime: Set(spec.runtime.as_str().to_owned()),
        parent_id: Set(spec.parent_id.as_ref().map(|p| p.as_str().to_owned())),
        container: Set(spec.container.as_ref().map(|c| c.as_str().to_owned())),
        status: Set(spec.status.as_str().to_owned()),
        created_at: Set(created_at),
        updated_at: Set(now),
        container_claim: Set(spec.claimed_container(id).map(|c| c.as_str().to_owned())),
    }
}

#[async_trait]
impl WorkspaceStore for SeaOrmStore {
    async fn workspace(&self, id: &WorkspaceId) -> Result<Option<Workspace>, StoreError> {
        workspace::Entity::find_by_id(id.as_str())
            .one(&self.db)
            .await
            .map_err(map_err)?
            .map(Workspace::try_from)
            .transpose()
    }

    async fn upsert_workspace(
        &self,
        id: &WorkspaceId,
        spec: &WorkspaceSpec,
        now: DateTime<Utc>,
    ) -> Result<(Workspace, Upserted), StoreError> {
        let mut attempt = 1;
        loop {
            match self.try_upsert(id, spec, now).await {
                // A concurrent write won: a create of the same id (this
                // request then updates the record it created) or a claim
                // of the same container (the retry names its owner).
                Err(StoreError::Conflict(_)) if attempt < UPSERT_ATTEMPTS => attempt += 1,
                other => return other,
            }
        }
    }

    async fn list_workspaces(
        &self,
        after: Option<WorkspaceId>,
        limit: u64,
    ) -> Result<Vec<Workspace>, StoreError> {
        let mut query = workspace::Entity::find().order_by_asc(workspace::Column::Id);
        if let Some(after) = &after {
            query = query.filter(workspace::Column::Id.gt(after.as_str()));
        }
        query
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(map_err)?
            .into_iter()
            .map(Workspace::try_from)
            .collect()
    }

    async fn delete_workspace(&self, id: &WorkspaceId) -> Result<bool, StoreError> {
        // The tokens go with the record (`ON DELETE CASCADE`), including
        // one whose insert is racing this delete: its foreign-key check
        // either waits for this delete and fails, or holds the record until
        // it commits and is then deleted with it.
        let deleted = workspace::Entity::delete_by_id(id.as_str())
            .exec(&self.db)
            .await
            .map_err(map_err)?;
        Ok(deleted.rows_affected > 0)
    }
}

#[async_trait]
impl TokenStore for SeaOrmStore {
    async fn insert_token(&self, t: &TokenRecord) -> Result<bool, StoreError> {
        let inserted = token::ActiveModel {
            id: Set(t.id.as_str().to_owned()),
            workspace_id: Set(t.workspace_id.as_str().to_owned()),
            hash: Set(t.hash.to_hex()),
            created_at: Set(t.created_at),
            last_used_at: Set(t.last_used_at),
            revoked: Set(t.revoked),
        }
        .insert(&self.db)
        .await;
        match inserted {
            Ok(_) => Ok(true),
            // The workspace has no record (any more): see `delete_workspace`.
            Err(e) if matches!(e.sql_err(), Some(SqlErr::ForeignKeyConstraintViolation(_))) => {
                Ok(false)
            }
            Err(e) => Err(map_err(e)),
        }
    }

    async fn token_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        token::Entity::find()
            .filter(token::Column::Hash.eq(hash.to_hex()))
            .one(&self.db)
            .await
            .map_err(map_err)?
            .map(TokenRecord::try_from)
            .transpose()
    }

    async fn tokens(&self, workspace: &WorkspaceId) -> Result<Vec<TokenRecord>, StoreError> {
        token::Entity::find()
            .filter(token::Column::WorkspaceId.eq(workspace.as_str()))
            .order_by_asc(token::Column::CreatedAt)
            .order_by_asc(token::Column::Id)
            .all(&self.db)
            .await
            .map_err(map_err)?
            .into_iter()
            .map(TokenRecord::try_from)
            .collect()
    }

    async fn revoke_token(
        &self,
        workspace: &WorkspaceId,
        id: &TokenId,
    ) -> Result<bool, StoreError> {
        let result = token::Entity::update_many()
            .col_expr(token::Column::Revoked, Expr::value(true))
            .filter(token::Column::Id.eq(id.as_str()))
            .filter(token::Column::WorkspaceId.eq(workspace.as_str()))
            .exec(&self.db)
            .await
            .map_err(map_err)?;
        Ok(result.rows_affected > 0)
    }

    async fn touch_token(&self, id: &TokenId, at: DateTime<Utc>) -> Result<(), StoreError> {
        token::Entity::update_many()
            .col_expr(token::Column::LastUsedAt, Expr::value(at))
            .filter(token::Column::Id.eq(id.as_str()))
            .exec(&self.db)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn has_live_token(&self, workspace: &WorkspaceId) -> Result<bool, StoreError> {
        let live = token::Entity::find()
            .filter(token::Column::WorkspaceId.eq(workspace.as_str()))
            .filter(token::Column::Revoked.eq(false))
            .one(&self.db)
            .await
            .map_err(map_err)?;
        Ok(live.is_some())
    }
}

async fn read_allowlist<C: ConnectionTrait>(
    db: &C,
    org: &WorkspaceId,
) -> Result<Vec<AllowlistEntry>, StoreError> {
    allowlist_entry::Entity::find()
        .filter(allowlist_entry::Column::OrgId.eq(org.as_str()))
        .order_by_asc(allowlist_entry::Column::PluginName)
        .all(db)
        .await
        .map_err(map_err)?
        .into_iter()
        .map(AllowlistEntry::try_from)
        .collect()
}

#[async_trait]
impl AllowlistStore for SeaOrmStore {
    async fn allowlist(&self, org: &WorkspaceId) -> Result<Vec<AllowlistEntry>, StoreError> {
        read_allowlist(&self.db, org).await
    }

    async fn replace_allowlist(
        &self,
        org: &WorkspaceId,
        plugins: &[PluginName],
        enabled_by: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<AllowlistEntry>, StoreError> {
        let txn = self.begin_write().await?;
        if txn.get_database_backend() == DbBackend::Postgres {
            // READ COMMITTED lets two replacements read the same old list
            // and merge their writes: one at a time per org, each reading
            // the list the previous one committed.
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                [ALLOWLIST_LOCK_CLASS.into(), org.as_str().into()],
            ))
            .await
            .map_err(map_err)?;
        }
        let existing: BTreeMap<String, AllowlistEntry> = read_allowlist(&txn, org)
            .await?
            .into_iter()
            .map(|e| (e.plugin_name.as_str().to_owned(), e))
            .collect();
        let stale: Vec<&String> = existing
            .keys()
            .filter(|name| !plugins.iter().any(|p| p.as_str() == name.as_str()))
            .collect();
        if !stale.is_empty() {
            allowlist_entry::Entity::delete_many()
                .filter(allowlist_entry::Column::OrgId.eq(org.as_str()))
                .filter(allowlist_entry::Column::PluginName.is_in(stale.iter().map(|s| s.as_str())))
                .exec(&txn)
                .await
                .map_err(map_err)?;
        }
        let fresh = plugins
            .iter()
            .filter(|p| !existing.contains_key(p.as_str()))
            .map(|p| allowlist_entry::ActiveModel {
                org_id: Set(org.as_str().to_owned()),
                plugin_name: Set(p.as_str().to_owned()),
                enabled_by: Set(enabled_by.to_owned()),
                enabled_at: Set(now),
            })
            .collect::<Vec<_>>();
        if !fresh.is_empty() {
            allowlist_entry::Entity::insert_many(fresh)
                .exec(&txn)
                .await
                .map_err(map_err)?;
        }
        let stored = read_allowlist(&txn, org).await?;
        // Dropping the transaction without commit rolls it back, so any
        // error above leaves the old list in place.
        txn.commit().await.map_err(map_err)?;
        Ok(stored)
    }
}

#[async_trait]
impl StoreHealth for SeaOrmStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.db
            .ping()
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))
    }
}

impl TryFrom<receipt::Model> for Receipt {
    type Error = StoreError;

    fn try_from(row: receipt::Model) -> Result<Self, StoreError> {
        let bad = || corrupt("receipt", &row.plugin_name);
        // A receipt written before provenance was recorded has none of it.
        let provenance = match (row.version, row.files.as_deref()) {
            (Some(version), Some(files)) => Some(Provenance {
                revision: row.revision,
                version,
                files: parse_file_list(files).ok_or_else(bad)?,
            }),
            _ => None,
        };
        Ok(Receipt {
            workspace_id: WorkspaceId::parse(&row.workspace_id).map_err(|_| bad())?,
            plugin: PluginName::parse(&row.plugin_name).map_err(|_| bad())?,
            digest: TreeDigest::parse(&row.digest).ok_or_else(bad)?,
            size_bytes: u64::try_from(row.size_bytes).map_err(|_| bad())?,
            source: row.source,
            installed_at: row.installed_at,
            installed_by: row.installed_by,
            provenance,
        })
    }
}

#[async_trait]
impl ReceiptStore for SeaOrmStore {
    async fn put_receipt<'e>(
        &self,
        r: &Receipt,
        event: Option<&'e AuditEvent>,
    ) -> Result<(), StoreError> {
        let row = receipt::ActiveModel {
            workspace_id: Set(r.workspace_id.as_str().to_owned()),
            plugin_name: Set(r.plugin.as_str().to_owned()),
            source: Set(r.source.clone()),
            digest: Set(r.digest.as_str().to_owned()),
            size_bytes: Set(i64::try_from(r.size_bytes).unwrap_or(i64::MAX)),
            installed_at: Set(r.installed_at),
            installed_by: Set(r.installed_by.clone()),
            revision: Set(r.revision().map(str::to_owned)),
            version: Set(r.version().map(str::to_owned)),
            files: Set(r.provenance.as_ref().map(|p| file_list_text(&p.files))),
        };
        let txn = self.begin_write().await?;
        receipt::Entity::insert(row)
            .on_conflict(
                sea_orm::sea_query::OnConflict::columns([
                    receipt::Column::WorkspaceId,
                    receipt::Column::PluginName,
                ])
                .update_columns([
                    receipt::Column::Source,
                    receipt::Column::Digest,
                    receipt::Column::SizeBytes,
                    receipt::Column::InstalledAt,
                    receipt::Column::InstalledBy,
                    receipt::Column::Revision,
                    receipt::Column::Version,
                    receipt::Column::Files,
                ])
                .to_owned(),
            )
            .exec(&txn)
            .await
            .map_err(map_err)?;
        append_event(&txn, event).await?;
        txn.commit().await.map_err(map_err)
    }

    async fn receipt(
        &self,
        workspace: &WorkspaceId,
        plugin: &PluginName,
    ) -> Result<Option<Receipt>, StoreError> {
        receipt::Entity::find_by_id((workspace.as_str().to_owned(), plugin.as_str().to_owned()))
            .one(&self.db)
            .await
            .map_err(map_err)?
            .map(Receipt::try_from)
            .transpose()
    }

    async fn receipts(&self, workspace: &WorkspaceId) -> Result<Vec<Receipt>, StoreError> {
        receipt::Entity::find()
            .filter(receipt::Column::WorkspaceId.eq(workspace.as_str()))
            .order_by_asc(receipt::Column::PluginName)
            .all(&self.db)
            .await
            .map_err(map_err)?
            .into_iter()
            .map(Receipt::try_from)
            .collect()
    }

    async fn installations(
        &self,
        plugin: &PluginName,
        digest: Option<TreeDigest>,
        after: Option<WorkspaceId>,
        limit: u64,
    ) -> Result<Vec<Receipt>, StoreError> {
        let mut query = receipt::Entity::find()
            .filter(receipt::Column::PluginName.eq(plugin.as_str()))
            .order_by_asc(receipt::Column::WorkspaceId);
        if let Some(digest) = &digest {
            query = query.filter(receipt::Column::Digest.eq(digest.as_str()));
        }
        if let Some(after) = &after {
            query = query.filter(receipt::Column::WorkspaceId.gt(after.as_str()));
        }
        query
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(map_err)?
            .into_iter()
            .map(Receipt::try_from)
            .collect()
    }

    async fn delete_receipt<'e>(
        &self,
        workspace: &WorkspaceId,
        plugin: &PluginName,
        event: Option<&'e AuditEvent>,
    ) -> Result<bool, StoreError> {
        let txn = self.begin_write().await?;
        let result = receipt::Entity::delete_by_id((
            workspace.as_str().to_owned(),
            plugin.as_str().to_owned(),
        ))
        .exec(&txn)
        .await
        .map_err(map_err)?;
        append_event(&txn, event).await?;
        txn.commit().await.map_err(map_err)?;
        Ok(result.rows_affected > 0)
    }
}

/// Appends `event`, if any, on `db` (the receipt change's transaction, or
/// the connection).
async fn append_event<C: ConnectionTrait>(
    db: &C,
    event: Option<&AuditEvent>,
) -> Result<(), StoreError> {
    let Some(e) = event else { return Ok(()) };
    audit_event::ActiveModel {
        id: sea_orm::ActiveValue::NotSet,
        at: Set(e.at),
        actor: Set(e.actor.clone()),
        action: Set(e.action.as_str().to_owned()),
        workspace_id: Set(e.workspace_id.as_ref().map(|w| w.as_str().to_owned())),
        plugin: Set(e.plugin.as_ref().map(|p| p.as_str().to_owned())),
        source: Set(e.source().map(str::to_owned)),
        digest: Set(e.digest.as_ref().map(|d| d.as_str().to_owned())),
        outcome: Set(e.outcome.as_str().to_owned()),
        status: Set(i32::from(e.status)),
    }
    .insert(db)
    .await
    .map_err(map_err)?;
    Ok(())
}

impl TryFrom<audit_event::Model> for AuditRecord {
    type Error = StoreError;

    fn try_from(row: audit_event::Model) -> Result<Self, StoreError> {
        let id = row.id.to_string();
        let bad = || corrupt("audit event", &id);
        let mut event = AuditEvent::new(
            row.at,
            row.actor,
            row.action.parse().map_err(|()| bad())?,
            row.outcome.parse().map_err(|()| bad())?,
            u16::try_from(row.status).map_err(|_| bad())?,
        )
        .stored(row.source);
        event.workspace_id = row
            .workspace_id
            .as_deref()
            .map(WorkspaceId::parse)
            .transpose()
            .map_err(|_| bad())?;
        event.plugin = row
            .plugin
            .as_deref()
            .map(PluginName::parse)
            .transpose()
            .map_err(|_| bad())?;
        event.digest = row
            .digest
            .as_deref()
            .map(|d| TreeDigest::parse(d).ok_or_else(bad))
            .transpose()?;
        Ok(AuditRecord { id: row.id, event })
    }
}

#[async_trait]
impl AuditLog for SeaOrmStore {
    async fn append(&self, event: &AuditEvent) -> Result<(), StoreError> {
        append_event(&self.db, Some(event)).await
    }

    async fn events(
        &self,
        filter: &AuditFilter,
        limit: u64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        use audit_event::Column as C;
        let mut query = audit_event::Entity::find().order_by_desc(C::Id);
        if let Some(workspace) = &filter.workspace {
            query = query.filter(C::WorkspaceId.eq(workspace.as_str()));
        }
        if let Some(plugin) = &filter.plugin {
            query = query.filter(C::Plugin.eq(plugin.as_str()));
        }
        if let Some(action) = filter.action {
            query = query.filter(C::Action.eq(action.as_str()));
        }
        if let Some(since) = filter.since {
            query = query.filter(C::At.gte(since));
        }
        if let Some(before) = filter.before {
            query = query.filter(C::Id.lt(before.before_id()));
        }
        query
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(map_err)?
            .into_iter()
            .map(AuditRecord::try_from)
            .collect()
    }

    async fn forget_before(&self, cutoff: DateTime<Utc>, batch: u64) -> Result<u64, StoreError> {
        use audit_event::Column as C;
        let txn = self.begin_write().await?;
        let ids: Vec<i64> = audit_event::Entity::find()
            .select_only()
            .column(C::Id)
            .filter(C::At.lt(cutoff))
            .order_by_asc(C::Id)
            .limit(batch)
            .into_tuple()
            .all(&txn)
            .await
            .map_err(map_err)?;
        if ids.is_empty() {
            return Ok(0);
        }
        let deleted = audit_event::Entity::delete_many()
            .filter(C::Id.is_in(ids))
            .exec(&txn)
            .await
            .map_err(map_err)?;
        txn.commit().await.map_err(map_err)?;
        Ok(deleted.rows_affected)
    }
}
