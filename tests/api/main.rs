//! HTTP-level tests: the real server on a loopback port, a real client.

#[path = "../support/mod.rs"]
mod support;

mod allowlist;
mod auth;
mod download;
mod health;
mod openapi;
mod plugins;
mod transport;
mod workspaces;
