#![allow(dead_code)]
//! Shared test harness: the real server, real databases, a real Docker
//! engine.

pub mod app;
pub mod db;
pub mod docker;
pub mod git;
pub mod hostile;
pub mod hostile_container;
pub mod https;
