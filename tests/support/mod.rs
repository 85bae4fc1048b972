#![allow(dead_code)]
//! Shared test harness: the real server, real databases.

pub mod app;
pub mod docker;
