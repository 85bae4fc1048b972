//! The domain core: the rules of SPEC.md as small types and pure functions.
//!
//! Invariant: nothing here does I/O or names an adapter crate (tokio, poem,
//! sea_orm, bollard, git2); the ports and the app depend on this, never the
//! other way round.

pub mod audit;
pub mod compatibility;
pub mod digest;
pub mod drift;
pub mod layout;
pub mod manifest;
pub mod memory;
pub mod name;
pub mod policy;
pub mod receipt;
pub mod runtime;
pub mod source;
pub mod staging;
pub mod token;
pub mod updates;
pub mod workspace;
