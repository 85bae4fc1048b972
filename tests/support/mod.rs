//! Shared test harness: the real server, real databases, a real Docker
//! engine.
//!
//! Each test binary declares it `pub mod support`: its public items are
//! the binaries' shared library, not linted per binary (as a crate's would
//! not be), while private items stay linted. A helper no binary uses any
//! more is deleted.

pub mod app;
pub mod db;
pub mod docker;
pub mod git;
pub mod hostile;
pub mod hostile_container;
pub mod https;
pub mod replica;
