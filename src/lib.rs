//! workspace-plugins: installs, removes and serves plugins for AI-agent
//! workspaces. See ARCHITECTURE.md for the map of this crate.

pub mod adapters;
pub mod app;
pub mod domain;
pub mod ports;
