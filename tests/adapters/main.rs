//! The adapters against their real components: Docker (`docker_engine`),
//! SQLite and PostgreSQL (`storage`), a git smart-HTTP server (`github`)
//! and an HTTPS server (`https_source`).

#[path = "../support/mod.rs"]
pub mod support;

mod docker_engine;
mod github;
mod https_source;
mod storage;
