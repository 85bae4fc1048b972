//! The storage adapter: SeaORM over SQLite (embedded default) or
//! PostgreSQL, behind the store ports. No SeaORM type leaves this module.

mod entities;
mod migration;
mod store;

pub use store::SeaOrmStore;
