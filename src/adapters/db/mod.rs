//! The storage adapter: SeaORM over SQLite (embedded default) or
//! PostgreSQL, behind the store ports. No SeaORM type leaves this module.

mod coordination;
mod entities;
mod migration;
mod store;

pub use coordination::workspace_lock_key;
pub use store::SeaOrmStore;
