//! Ports: the narrow traits the domain and the use cases need from the
//! outside world, named for the role, not the technology.
//!
//! Invariant: only std, async-trait and domain types appear here; no adapter
//! crate type crosses a port. Each trait is mockable (mockall) for use-case
//! tests.

pub mod archives;
pub mod audit;
pub mod container;
pub mod coordination;
pub mod receipts;
pub mod registry;
pub mod resolver;
pub mod staging;
pub mod store;

/// The error type adapters box when no meaning-level variant fits.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
