//! One set of migrations for SQLite and PostgreSQL, written with the
//! schema helpers only so both backends share them.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_initial::Migration),
            Box::new(m20261125_000002_receipts::Migration),
            Box::new(m20261201_000003_one_owner::Migration),
            Box::new(m20261202_000004_audit_log::Migration),
            Box::new(m20261215_000005_receipt_provenance::Migration),
            Box::new(m20261220_000006_replicas::Migration),
        ]
    }
}

#[derive(DeriveIden)]
enum Workspaces {
    Table,
    Id,
    Name,
    Runtime,
    ParentId,
    Container,
    Status,
    CreatedAt,
    UpdatedAt,
    ContainerClaim,
}

#[derive(DeriveIden)]
enum Tokens {
    Table,
    Id,
    WorkspaceId,
    Hash,
    CreatedAt,
    LastUsedAt,
    Revoked,
}

/// The rebuilt `tokens` of `m20261201_000003_one_owner`, before its rename.
#[derive(DeriveIden)]
enum TokensRebuilt {
    Table,
}

#[derive(DeriveIden)]
enum AllowlistEntries {
    Table,
    OrgId,
    PluginName,
    EnabledBy,
    EnabledAt,
}

/// A string key column that sorts and compares bytewise on every backend:
/// PostgreSQL's default collation follows the server's locale, which would
/// make pagination order (and `id > cursor`) differ from SQLite's.
fn key_string<T: IntoIden>(col: T, backend: sea_orm::DatabaseBackend) -> ColumnDef {
    let mut def = string(col);
    if backend == sea_orm::DatabaseBackend::Postgres {
        def.extra("COLLATE \"C\"");
    }
    def
}

#[derive(DeriveIden)]
enum Receipts {
    Table,
    WorkspaceId,
    PluginName,
    Source,
    Digest,
    SizeBytes,
    InstalledAt,
    InstalledBy,
    Revision,
    Version,
    Files,
}

mod m20261125_000002_receipts {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261125_000002_receipts"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            let backend = manager.get_database_backend();
            manager
                .create_table(
                    Table::create()
                        .table(Receipts::Table)
                        .if_not_exists()
                        .col(key_string(Receipts::WorkspaceId, backend))
                        .col(key_string(Receipts::PluginName, backend))
                        .col(string(Receipts::Source))
                        .col(string(Receipts::Digest))
                        .col(big_integer(Receipts::SizeBytes))
                        .col(timestamp_with_time_zone(Receipts::InstalledAt))
                        .col(string(Receipts::InstalledBy))
                        .primary_key(
                            Index::create()
                                .col(Receipts::WorkspaceId)
                                .col(Receipts::PluginName),
                        )
                        .to_owned(),
                )
                .await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_table(Table::drop().table(Receipts::Table).if_exists().to_owned())
                .await
        }
    }
}

mod m20261125_000001_initial {
    use super::*;

    pub struct Migration;

    // Named explicitly: the derive would name every migration in this
    // file after the file, and names are the migrations' identity.
    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261125_000001_initial"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            let backend = manager.get_database_backend();
            manager
                .create_table(
                    Table::create()
                        .table(Workspaces::Table)
                        .if_not_exists()
                        .col(key_string(Workspaces::Id, backend).primary_key())
                        .col(string(Workspaces::Name))
                        .col(string(Workspaces::Runtime))
                        .col(string_null(Workspaces::ParentId))
                        .col(string_null(Workspaces::Container))
                        .col(string(Workspaces::Status))
                        .col(timestamp_with_time_zone(Workspaces::CreatedAt))
                        .col(timestamp_with_time_zone(Workspaces::UpdatedAt))
                        .to_owned(),
                )
                .await?;
            manager
                .create_table(
                    Table::create()
                        .table(Tokens::Table)
                        .if_not_exists()
                        .col(string(Tokens::Id).primary_key())
                        .col(string(Tokens::WorkspaceId))
                        .col(string_uniq(Tokens::Hash))
                        .col(timestamp_with_time_zone(Tokens::CreatedAt))
                        .col(timestamp_with_time_zone_null(Tokens::LastUsedAt))
                        .col(boolean(Tokens::Revoked))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(
                    Index::create()
                        .name("idx_tokens_workspace_id")
                        .table(Tokens::Table)
                        .col(Tokens::WorkspaceId)
                        .if_not_exists()
                        .to_owned(),
                )
                .await?;
            manager
                .create_table(
                    Table::create()
                        .table(AllowlistEntries::Table)
                        .if_not_exists()
                        .col(key_string(AllowlistEntries::OrgId, backend))
                        .col(key_string(AllowlistEntries::PluginName, backend))
                        .col(string(AllowlistEntries::EnabledBy))
                        .col(timestamp_with_time_zone(AllowlistEntries::EnabledAt))
                        .primary_key(
                            Index::create()
                                .col(AllowlistEntries::OrgId)
                                .col(AllowlistEntries::PluginName),
                        )
                        .to_owned(),
                )
                .await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            for table in [
                AllowlistEntries::Table.into_iden(),
                Tokens::Table.into_iden(),
                Workspaces::Table.into_iden(),
            ] {
                manager
                    .drop_table(Table::drop().table(table).if_exists().to_owned())
                    .await?;
            }
            Ok(())
        }
    }
}

/// Every record owns what it refers to, and nothing is shared:
///
/// * `workspaces.container_claim` holds the effective container of a record
///   that is not `removed` (NULL otherwise), under a unique index, so two
///   live records never share a container (SPEC §6) even when two writes
///   race;
/// * `tokens.workspace_id` references `workspaces.id` with `ON DELETE
///   CASCADE`, so a token issued while its workspace is deleted either
///   fails to insert or is deleted with it, and never waits for a new
///   record with the same id. SQLite cannot add a foreign key to a table,
///   so `tokens` is rebuilt (on both backends: one path), keeping every
///   token whose workspace exists.
mod m20261201_000003_one_owner {
    use std::collections::HashSet;

    use sea_orm::ConnectionTrait;

    use super::*;
    use crate::domain::name::WorkspaceId;
    use crate::domain::workspace::{ContainerName, WorkspaceStatus, effective_container};

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261201_000003_one_owner"
        }
    }

    pub const CONTAINER_CLAIM_INDEX: &str = "idx_workspaces_container_claim";

    /// Claims each live record's effective container, oldest record first.
    /// Records that already share a container (allowed before) keep their
    /// data; only the oldest holds the claim, and the others get a 409 at
    /// their next `PUT` until their container is changed.
    async fn backfill_claims(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let rows = db
            .query_all(
                Query::select()
                    .columns([Workspaces::Id, Workspaces::Container, Workspaces::Status])
                    .from(Workspaces::Table)
                    .order_by(Workspaces::CreatedAt, Order::Asc)
                    .order_by(Workspaces::Id, Order::Asc),
            )
            .await?;
        let mut claimed = HashSet::new();
        for row in rows {
            let id: String = row.try_get("", "id")?;
            let container: Option<String> = row.try_get("", "container")?;
            let status: String = row.try_get("", "status")?;
            // Rows this service did not write are left unclaimed.
            let (Ok(parsed_id), Ok(status)) =
                (WorkspaceId::parse(&id), status.parse::<WorkspaceStatus>())
            else {
                continue;
            };
            if status == WorkspaceStatus::Removed {
                continue;
            }
            let explicit = container.as_deref().map(ContainerName::parse).transpose();
            let Ok(explicit) = explicit else { continue };
            let claim = effective_container(&parsed_id, explicit.as_ref());
            if !claimed.insert(claim.as_str().to_owned()) {
                continue;
            }
            db.execute(
                Query::update()
                    .table(Workspaces::Table)
                    .value(Workspaces::ContainerClaim, claim.as_str())
                    .and_where(Expr::col(Workspaces::Id).eq(id)),
            )
            .await?;
        }
        Ok(())
    }

    async fn rebuild_tokens(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        manager
            .create_table(
                Table::create()
                    .table(TokensRebuilt::Table)
                    .col(string(Tokens::Id).primary_key())
                    .col(key_string(Tokens::WorkspaceId, backend))
                    .col(string_uniq(Tokens::Hash))
                    .col(timestamp_with_time_zone(Tokens::CreatedAt))
                    .col(timestamp_with_time_zone_null(Tokens::LastUsedAt))
                    .col(boolean(Tokens::Revoked))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_tokens_workspace_id")
                            .from(TokensRebuilt::Table, Tokens::WorkspaceId)
                            .to(Workspaces::Table, Workspaces::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        let columns = || {
            [
                Tokens::Id,
                Tokens::WorkspaceId,
                Tokens::Hash,
                Tokens::CreatedAt,
                Tokens::LastUsedAt,
                Tokens::Revoked,
            ]
        };
        // Tokens of a workspace that no longer exists are dead already:
        // they are not carried over.
        let copy = Query::insert()
            .into_table(TokensRebuilt::Table)
            .columns(columns())
            .select_from(
                Query::select()
                    .columns(columns())
                    .from(Tokens::Table)
                    .and_where(
                        Expr::col(Tokens::WorkspaceId).in_subquery(
                            Query::select()
                                .column(Workspaces::Id)
                                .from(Workspaces::Table)
                                .to_owned(),
                        ),
                    )
                    .to_owned(),
            )
            .map_err(|e| DbErr::Migration(e.to_string()))?
            .to_owned();
        manager.exec_stmt(copy).await?;
        manager
            .drop_table(Table::drop().table(Tokens::Table).to_owned())
            .await?;
        manager
            .rename_table(
                Table::rename()
                    .table(TokensRebuilt::Table, Tokens::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_tokens_workspace_id")
                    .table(Tokens::Table)
                    .col(Tokens::WorkspaceId)
                    .to_owned(),
            )
            .await
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .alter_table(
                    Table::alter()
                        .table(Workspaces::Table)
                        .add_column(string_null(Workspaces::ContainerClaim))
                        .to_owned(),
                )
                .await?;
            backfill_claims(manager).await?;
            manager
                .create_index(
                    Index::create()
                        .name(CONTAINER_CLAIM_INDEX)
                        .table(Workspaces::Table)
                        .col(Workspaces::ContainerClaim)
                        .unique()
                        .to_owned(),
                )
                .await?;
            rebuild_tokens(manager).await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_index(
                    Index::drop()
                        .name(CONTAINER_CLAIM_INDEX)
                        .table(Workspaces::Table)
                        .to_owned(),
                )
                .await?;
            manager
                .alter_table(
                    Table::alter()
                        .table(Workspaces::Table)
                        .drop_column(Workspaces::ContainerClaim)
                        .to_owned(),
                )
                .await
        }
    }
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    At,
    Actor,
    Action,
    WorkspaceId,
    Plugin,
    Source,
    Digest,
    Outcome,
    Status,
}

/// The append-only audit log (SPEC §11). Ids grow with every append (never
/// reused: SQLite `AUTOINCREMENT`, a PostgreSQL sequence), so they order
/// the events and make the read cursor; indexes serve the filters of
/// `GET /audit` and retention's scan by time. Independent of every other
/// table: events outlive the workspaces, tokens and receipts they name.
mod m20261202_000004_audit_log {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261202_000004_audit_log"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            let backend = manager.get_database_backend();
            let mut workspace_id = key_string(AuditEvents::WorkspaceId, backend);
            workspace_id.null();
            let mut plugin = key_string(AuditEvents::Plugin, backend);
            plugin.null();
            manager
                .create_table(
                    Table::create()
                        .table(AuditEvents::Table)
                        .if_not_exists()
                        .col(big_pk_auto(AuditEvents::Id))
                        .col(timestamp_with_time_zone(AuditEvents::At))
                        .col(string(AuditEvents::Actor))
                        .col(string(AuditEvents::Action))
                        .col(workspace_id)
                        .col(plugin)
                        .col(text_null(AuditEvents::Source))
                        .col(string_null(AuditEvents::Digest))
                        .col(string(AuditEvents::Outcome))
                        .col(integer(AuditEvents::Status))
                        .to_owned(),
                )
                .await?;
            for (name, column) in [
                ("idx_audit_events_at", AuditEvents::At),
                ("idx_audit_events_workspace_id", AuditEvents::WorkspaceId),
                ("idx_audit_events_plugin", AuditEvents::Plugin),
            ] {
                manager
                    .create_index(
                        Index::create()
                            .name(name)
                            .table(AuditEvents::Table)
                            .col(column)
                            .if_not_exists()
                            .to_owned(),
                    )
                    .await?;
            }
            Ok(())
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_table(
                    Table::drop()
                        .table(AuditEvents::Table)
                        .if_exists()
                        .to_owned(),
                )
                .await
        }
    }
}

/// Receipts carry provenance (SPEC §11): `revision`, `version` and
/// `files` (the dirhash lines of the files that made the digest), all
/// nullable so receipts written before keep reading (as "unknown"); and
/// an index for the fleet-wide question "which workspaces have plugin P".
/// One column per `ALTER`: SQLite takes no more.
mod m20261215_000005_receipt_provenance {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261215_000005_receipt_provenance"
        }
    }

    pub const PLUGIN_INDEX: &str = "idx_receipts_plugin_workspace";

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            for column in [
                string_null(Receipts::Revision),
                string_null(Receipts::Version),
                text_null(Receipts::Files),
            ] {
                let mut column = column;
                manager
                    .alter_table(
                        Table::alter()
                            .table(Receipts::Table)
                            .add_column(&mut column)
                            .to_owned(),
                    )
                    .await?;
            }
            manager
                .create_index(
                    Index::create()
                        .name(PLUGIN_INDEX)
                        .table(Receipts::Table)
                        .col(Receipts::PluginName)
                        .col(Receipts::WorkspaceId)
                        .to_owned(),
                )
                .await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_index(
                    Index::drop()
                        .name(PLUGIN_INDEX)
                        .table(Receipts::Table)
                        .to_owned(),
                )
                .await?;
            for column in [Receipts::Files, Receipts::Version, Receipts::Revision] {
                manager
                    .alter_table(
                        Table::alter()
                            .table(Receipts::Table)
                            .drop_column(column)
                            .to_owned(),
                    )
                    .await?;
            }
            Ok(())
        }
    }
}

#[derive(DeriveIden)]
enum PendingRestarts {
    Table,
    WorkspaceId,
    Container,
    DueAt,
    Generation,
    Attempts,
}

#[derive(DeriveIden)]
enum ServiceSecrets {
    Table,
    Name,
    Hash,
    CreatedAt,
}

/// What replicas share besides the records (SPEC §12): the pending
/// restarts, one per workspace, and the generated admin token's hash.
mod m20261220_000006_replicas {
    use super::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m20261220_000006_replicas"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            let backend = manager.get_database_backend();
            manager
                .create_table(
                    Table::create()
                        .table(PendingRestarts::Table)
                        .if_not_exists()
                        .col(key_string(PendingRestarts::WorkspaceId, backend).primary_key())
                        .col(string(PendingRestarts::Container))
                        .col(timestamp_with_time_zone(PendingRestarts::DueAt))
                        .col(big_integer(PendingRestarts::Generation))
                        .col(integer(PendingRestarts::Attempts))
                        .to_owned(),
                )
                .await?;
            manager
                .create_table(
                    Table::create()
                        .table(ServiceSecrets::Table)
                        .if_not_exists()
                        .col(key_string(ServiceSecrets::Name, backend).primary_key())
                        .col(string(ServiceSecrets::Hash))
                        .col(timestamp_with_time_zone(ServiceSecrets::CreatedAt))
                        .to_owned(),
                )
                .await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_table(Table::drop().table(ServiceSecrets::Table).to_owned())
                .await?;
            manager
                .drop_table(Table::drop().table(PendingRestarts::Table).to_owned())
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, Database, DatabaseConnection};

    use super::*;

    async fn at_receipts() -> DatabaseConnection {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        Migrator::up(&db, Some(2)).await.unwrap();
        db
    }

    async fn column(db: &DatabaseConnection, sql: &str) -> Vec<(String, Option<String>)> {
        db.query_all_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            sql,
        ))
        .await
        .unwrap()
        .into_iter()
        .map(|row| {
            (
                row.try_get_by_index(0).unwrap(),
                row.try_get_by_index(1).unwrap(),
            )
        })
        .collect()
    }

    #[tokio::test]
    async fn receipt_provenance_keeps_older_receipts_with_unknown_provenance() {
        let db = at_receipts().await;
        db.execute_unprepared(
            "INSERT INTO receipts (workspace_id, plugin_name, source, digest, size_bytes, installed_at, installed_by) \
             VALUES ('ws', 'p', 'local://p', 'h1:x', 1, '2026-01-01T00:00:00Z', 'admin')",
        )
        .await
        .unwrap();

        Migrator::up(&db, None).await.unwrap();

        assert_eq!(
            column(&db, "SELECT plugin_name, revision FROM receipts").await,
            [("p".into(), None)]
        );
        assert_eq!(
            column(&db, "SELECT source, version || files FROM receipts").await,
            [("local://p".into(), None)]
        );
        // And the columns go again on the way down.
        Migrator::down(&db, Some(1)).await.unwrap();
        assert_eq!(
            column(&db, "SELECT plugin_name, source FROM receipts").await,
            [("p".into(), Some("local://p".into()))]
        );
    }

    #[tokio::test]
    async fn one_owner_claims_containers_oldest_first_and_drops_orphan_tokens() {
        let db = at_receipts().await;
        db.execute_unprepared(
            "INSERT INTO workspaces (id, name, runtime, parent_id, container, status, created_at, updated_at) VALUES \
             ('older', 'n', 'r', NULL, 'box', 'online', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z'), \
             ('newer', 'n', 'r', NULL, 'box', 'online', '2026-02-01T00:00:00Z', '2026-02-01T00:00:00Z'), \
             ('gone', 'n', 'r', NULL, 'box', 'removed', '2025-01-01T00:00:00Z', '2025-01-01T00:00:00Z'), \
             ('0123456789abcdef', 'n', 'r', NULL, NULL, 'paused', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z'); \
             INSERT INTO tokens (id, workspace_id, hash, created_at, last_used_at, revoked) VALUES \
             ('t1', 'older', 'h1', '2026-01-01T00:00:00Z', NULL, false), \
             ('t2', 'deleted-long-ago', 'h2', '2026-01-01T00:00:00Z', NULL, false);",
        )
        .await
        .unwrap();

        Migrator::up(&db, None).await.unwrap();

        assert_eq!(
            column(
                &db,
                "SELECT id, container_claim FROM workspaces ORDER BY id"
            )
            .await,
            [
                ("0123456789abcdef".into(), Some("ws-0123456789ab".into())),
                ("gone".into(), None),
                ("newer".into(), None),
                ("older".into(), Some("box".into())),
            ]
        );
        assert_eq!(
            column(&db, "SELECT id, workspace_id FROM tokens").await,
            [("t1".into(), Some("older".into()))]
        );
        // The rebuilt table enforces its owner and goes with it.
        let orphan = db
            .execute_unprepared(
                "INSERT INTO tokens (id, workspace_id, hash, created_at, last_used_at, revoked) \
                 VALUES ('t3', 'nobody', 'h3', '2026-01-01T00:00:00Z', NULL, false)",
            )
            .await;
        assert!(orphan.is_err(), "{orphan:?}");
        db.execute_unprepared("DELETE FROM workspaces WHERE id = 'older'")
            .await
            .unwrap();
        assert_eq!(column(&db, "SELECT id, workspace_id FROM tokens").await, []);
    }
}
