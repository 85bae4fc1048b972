//! The API against the real server: the HTTP surface on a loopback port
//! with a real client (`http`), install, uninstall and listings against a
//! real Docker engine (`plugins`), the hostile-input and hostile-container
//! corpora (`hostile`, `hostile_container`), and the on-demand soak
//! (`soak`, ignored).

#[path = "../support/mod.rs"]
pub mod support;

mod http {
    mod allowlist;
    mod audit;
    mod auth;
    mod download;
    mod health;
    mod openapi;
    mod plugins;
    mod transport;
    mod workspaces;
}
mod hostile;
mod hostile_container;
mod plugins;
mod replicas;
mod shutdown;
mod soak;
