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
