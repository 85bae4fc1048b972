//! Adapters: the only place infrastructure crates (SeaORM, bollard, git2,
//! reqwest, the filesystem) appear. Each implements ports and converts its own
//! types and errors into domain ones at the boundary.

pub mod db;
pub mod docker;
pub mod fs;
pub mod git;
pub mod https;
pub mod keyed;
pub(crate) mod tartree;
