//! The application: use cases over the ports, the HTTP layer, settings
//! and wiring. No business rule lives here: it calls the domain.

pub mod error;
pub mod http;
pub mod restart;
pub mod server;
pub mod settings;
#[cfg(test)]
pub mod testing;
pub mod usecases;

/// The current time as stored: microseconds, the finest precision every
/// supported database keeps, so responses do not depend on the backend.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}
