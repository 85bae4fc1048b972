//! Source resolvers (SPEC §3), registered by scheme. Adding a scheme is one
//! adapter implementing [`SourceResolver`] and one `register` call.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;

use crate::domain::source::SpecError;
use crate::domain::staging::UnsafeEntry;
use crate::ports::BoxError;

/// What a resolver's grammar says of a spec, before any I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecCheck {
    /// False for specs that can change under the caller (e.g. no git ref).
    pub pinned: bool,
}

/// A flag the caller raises when it no longer wants the result (deadline,
/// client gone); blocking fetches poll it so their thread stops early.
#[derive(Debug, Clone, Default)]
pub struct Cancellation(Arc<AtomicBool>);

impl Cancellation {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Bounds every fetch honours while it writes.
#[derive(Debug, Clone)]
pub struct FetchLimits {
    /// Cap on the sum of regular files' lengths, enforced while writing.
    pub max_bytes: u64,
    pub cancel: Cancellation,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The plugin, repository or ref does not exist.
    #[error("plugin not found")]
    NotFound,
    /// The tree exceeded `FetchLimits::max_bytes` while being written.
    #[error("staged plugin exceeds size limit")]
    TooLarge,
    /// The tree holds an entry staging refuses.
    #[error(transparent)]
    Unsafe(UnsafeEntry),
    /// The source broke a rule of its scheme once fetched (e.g. the archive
    /// does not hash to its pinned digest): 422 with this user-facing text,
    /// which must name no path, token or upstream detail.
    #[error("{0}")]
    Refused(String),
    /// The caller cancelled the fetch.
    #[error("fetch cancelled")]
    Cancelled,
    /// Anything else; the cause is logged, never shown to clients.
    #[error("fetch failed")]
    Other(#[source] BoxError),
}

#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait SourceResolver: Send + Sync {
    /// The scheme this resolver serves, lower-case.
    fn scheme(&self) -> &'static str;

    /// Checks `spec` against the scheme's grammar; no disk or network.
    fn check_spec(&self, spec: &str) -> Result<SpecCheck, SpecError>;

    /// Fetches the plugin into `dest` (an empty directory the caller owns
    /// and removes on error) and returns the plugin's name, which the
    /// caller re-validates. Only directories and regular files are written.
    async fn fetch(
        &self,
        spec: &str,
        dest: &Path,
        limits: &FetchLimits,
    ) -> Result<String, FetchError>;
}

/// The registered resolvers, by scheme.
#[derive(Clone, Default)]
pub struct ResolverRegistry {
    by_scheme: BTreeMap<String, Arc<dyn SourceResolver>>,
}

impl ResolverRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `resolver` under its scheme, replacing any earlier one.
    pub fn register(&mut self, resolver: Arc<dyn SourceResolver>) {
        self.by_scheme
            .insert(resolver.scheme().to_ascii_lowercase(), resolver);
    }

    pub fn get(&self, scheme: &str) -> Option<Arc<dyn SourceResolver>> {
        self.by_scheme.get(scheme).cloned()
    }

    /// Registered schemes, sorted.
    pub fn schemes(&self) -> Vec<String> {
        self.by_scheme.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(scheme: &'static str) -> Arc<dyn SourceResolver> {
        let mut mock = MockSourceResolver::new();
        mock.expect_scheme().return_const(scheme);
        Arc::new(mock)
    }

    #[test]
    fn schemes_are_listed_sorted_and_looked_up_lower_case() {
        let mut registry = ResolverRegistry::new();
        for scheme in ["local", "github", "https"] {
            registry.register(resolver(scheme));
        }
        assert_eq!(registry.schemes(), ["github", "https", "local"]);
        assert!(registry.get("github").is_some());
        assert!(registry.get("oci").is_none());
    }

    #[test]
    fn cancellation_is_shared_between_clones() {
        let c = Cancellation::new();
        let seen_by_fetch = c.clone();
        assert!(!seen_by_fetch.is_cancelled());
        c.cancel();
        assert!(seen_by_fetch.is_cancelled());
    }
}
