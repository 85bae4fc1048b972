//! [`SeaOrmStore`] as what replicas coordinate through (SPEC §12): holds
//! on a workspace, the pending restarts and the generated admin token.
//!
//! A hold is first taken in this process ([`LocalWorkspaceLocks`]): that
//! is the whole of it on SQLite, where one process owns the database. On
//! PostgreSQL the holder then takes a transaction-level advisory lock on
//! the workspace's key, on a connection of a small pool kept for locks
//! (so holders never starve the queries they run while holding), and
//! keeps that transaction open until the hold is dropped: the lock goes
//! with the transaction, or with the session when the process dies.

use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, Statement, TransactionTrait,
};
use sha2::{Digest, Sha256};

use super::entities::{pending_restart, service_secret};
use super::store::{SeaOrmStore, corrupt, map_err};
use crate::adapters::keyed::LocalHold;
use crate::domain::name::WorkspaceId;
use crate::domain::token::TokenHash;
use crate::domain::workspace::ContainerName;
use crate::ports::coordination::{
    AdminTokenStore, HoldError, PendingRestart, RestartQueue, WorkspaceHold, WorkspaceLocks,
};
use crate::ports::store::StoreError;

/// The admin token's row in `service_secrets`.
const ADMIN_TOKEN: &str = "admin-token";

/// The advisory lock key of a workspace: a stable 64-bit hash of its id
/// (the first 8 bytes of a SHA-256 under a prefix of this service's own),
/// the same in every replica and every release.
pub fn workspace_lock_key(id: &WorkspaceId) -> i64 {
    let digest = Sha256::new()
        .chain_update(b"workspace-plugins/workspace-lock\0")
        .chain_update(id.as_str().as_bytes())
        .finalize();
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(key)
}

/// A PostgreSQL hold: the transaction holding the advisory lock, then
/// this process's hold. Dropped, it rolls the transaction back (which
/// releases the lock) before letting the next local holder in.
struct PgHold {
    txn: Option<DatabaseTransaction>,
    local: Option<LocalHold>,
}

impl Drop for PgHold {
    fn drop(&mut self) {
        let (txn, local) = (self.txn.take(), self.local.take());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Some(txn) = txn {
                        // A failed rollback means a dead connection: its
                        // session, and the lock with it, is gone too.
                        let _ = txn.rollback().await;
                    }
                    drop(local);
                });
            }
            // No runtime left (process exit): the session ends with it.
            Err(_) => drop((txn, local)),
        }
    }
}

impl SeaOrmStore {
    /// The advisory lock of `workspace` in a new transaction on the lock
    /// pool, waiting at most until `deadline` (PostgreSQL's `lock_timeout`
    /// bounds the wait on the server too, so a holder that gave up never
    /// takes the lock later).
    async fn advisory_hold(
        &self,
        lock_db: &sea_orm::DatabaseConnection,
        workspace: &WorkspaceId,
        deadline: Option<Instant>,
    ) -> Result<DatabaseTransaction, HoldError> {
        let unavailable = |e: sea_orm::DbErr| HoldError::Unavailable(Box::new(e));
        let timed_out = || deadline.is_some_and(|d| Instant::now() >= d);
        let txn = match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), lock_db.begin())
                .await
                .map_err(|_| HoldError::TimedOut)?,
            None => lock_db.begin().await,
        }
        .map_err(unavailable)?;
        let timeout_ms = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now()).as_millis();
                if left == 0 {
                    return Err(HoldError::TimedOut);
                }
                left
            }
            None => 0,
        };
        txn.execute_unprepared(&format!("SET LOCAL lock_timeout = {timeout_ms}"))
            .await
            .map_err(unavailable)?;
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [workspace_lock_key(workspace).into()],
        ))
        .await
        .map_err(|e| {
            if timed_out() {
                HoldError::TimedOut
            } else {
                unavailable(e)
            }
        })?;
        Ok(txn)
    }
}

#[async_trait]
impl WorkspaceLocks for SeaOrmStore {
    async fn hold(
        &self,
        workspace: &WorkspaceId,
        deadline: Option<Instant>,
    ) -> Result<WorkspaceHold, HoldError> {
        let local = self.local_locks().hold_local(workspace, deadline).await?;
        let Some(lock_db) = self.lock_db() else {
            return Ok(WorkspaceHold::new(local));
        };
        let txn = self.advisory_hold(lock_db, workspace, deadline).await?;
        Ok(WorkspaceHold::new(PgHold {
            txn: Some(txn),
            local: Some(local),
        }))
    }
}

impl TryFrom<pending_restart::Model> for PendingRestart {
    type Error = StoreError;

    fn try_from(row: pending_restart::Model) -> Result<Self, StoreError> {
        let bad = || corrupt("pending restart", &row.workspace_id);
        Ok(PendingRestart {
            workspace: WorkspaceId::parse(&row.workspace_id).map_err(|_| bad())?,
            container: ContainerName::parse(&row.container).map_err(|_| bad())?,
            due_at: row.due_at,
            generation: row.generation,
            attempts: row.attempts,
        })
    }
}

#[async_trait]
impl RestartQueue for SeaOrmStore {
    async fn request_restart(
        &self,
        workspace: &WorkspaceId,
        container: &ContainerName,
        due: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        use pending_restart::Column as C;
        let row = pending_restart::ActiveModel {
            workspace_id: Set(workspace.as_str().to_owned()),
            container: Set(container.as_str().to_owned()),
            due_at: Set(due),
            generation: Set(1),
            attempts: Set(0),
        };
        // One statement: of concurrent requests each bumps the generation,
        // and the last one's due time stands (the debounce).
        pending_restart::Entity::insert(row)
            .on_conflict(
                OnConflict::column(C::WorkspaceId)
                    .update_columns([C::Container, C::DueAt, C::Attempts])
                    .value(
                        C::Generation,
                        Expr::col((pending_restart::Entity, C::Generation)).add(1),
                    )
                    .to_owned(),
            )
            .exec_without_returning(self.db())
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn pending_restarts(&self) -> Result<Vec<PendingRestart>, StoreError> {
        pending_restart::Entity::find()
            .order_by_asc(pending_restart::Column::DueAt)
            .all(self.db())
            .await
            .map_err(map_err)?
            .into_iter()
            .map(PendingRestart::try_from)
            .collect()
    }

    async fn pending_restart(
        &self,
        workspace: &WorkspaceId,
    ) -> Result<Option<PendingRestart>, StoreError> {
        pending_restart::Entity::find_by_id(workspace.as_str())
            .one(self.db())
            .await
            .map_err(map_err)?
            .map(PendingRestart::try_from)
            .transpose()
    }

    async fn finish_restart(
        &self,
        workspace: &WorkspaceId,
        generation: i64,
    ) -> Result<bool, StoreError> {
        use pending_restart::Column as C;
        let deleted = pending_restart::Entity::delete_many()
            .filter(C::WorkspaceId.eq(workspace.as_str()))
            .filter(C::Generation.eq(generation))
            .exec(self.db())
            .await
            .map_err(map_err)?;
        if deleted.rows_affected > 0 {
            return Ok(false);
        }
        Ok(self.pending_restart(workspace).await?.is_some())
    }

    async fn retry_restart(
        &self,
        workspace: &WorkspaceId,
        generation: i64,
        due: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        use pending_restart::Column as C;
        pending_restart::Entity::update_many()
            .col_expr(C::DueAt, Expr::value(due))
            .col_expr(C::Attempts, Expr::col(C::Attempts).add(1))
            .filter(C::WorkspaceId.eq(workspace.as_str()))
            .filter(C::Generation.eq(generation))
            .exec(self.db())
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

#[async_trait]
impl AdminTokenStore for SeaOrmStore {
    async fn adopt_admin_token(&self, hash: &TokenHash) -> Result<TokenHash, StoreError> {
        let row = service_secret::ActiveModel {
            name: Set(ADMIN_TOKEN.to_owned()),
            hash: Set(hash.to_hex()),
            created_at: Set(Utc::now()),
        };
        // Insert unless kept already: of racing first starts, one row wins
        // and every one of them answers it.
        service_secret::Entity::insert(row)
            .on_conflict(
                OnConflict::column(service_secret::Column::Name)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(self.db())
            .await
            .map_err(map_err)?;
        self.admin_token()
            .await?
            .ok_or_else(|| StoreError::Other("the admin token row vanished".into()))
    }

    async fn admin_token(&self) -> Result<Option<TokenHash>, StoreError> {
        service_secret::Entity::find_by_id(ADMIN_TOKEN)
            .one(self.db())
            .await
            .map_err(map_err)?
            .map(|row| TokenHash::from_hex(&row.hash).ok_or_else(|| corrupt("secret", &row.name)))
            .transpose()
    }

    async fn forget_admin_token(&self, hash: &TokenHash) -> Result<(), StoreError> {
        service_secret::Entity::delete_many()
            .filter(service_secret::Column::Name.eq(ADMIN_TOKEN))
            .filter(service_secret::Column::Hash.eq(hash.to_hex()))
            .exec(self.db())
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workspace_lock_key_is_stable_and_differs_per_workspace() {
        let a = WorkspaceId::parse("ws-a").unwrap();
        let b = WorkspaceId::parse("ws-b").unwrap();
        assert_eq!(workspace_lock_key(&a), workspace_lock_key(&a));
        assert_ne!(workspace_lock_key(&a), workspace_lock_key(&b));
        // Pinned: replicas of different releases must agree on the key.
        assert_eq!(workspace_lock_key(&a), KEY_OF_WS_A);
    }

    const KEY_OF_WS_A: i64 = -7_891_846_505_591_882_228;
}
