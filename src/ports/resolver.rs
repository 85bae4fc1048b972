//! Source resolvers (SPEC §3), registered by scheme. Adding a scheme is one
//! adapter implementing [`SourceResolver`] and one `register` call.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;

use crate::domain::source::SpecError;
use crate::domain::staging::{OverBudget, UnsafeEntry};
use crate::ports::BoxError;
use crate::ports::staging::WrittenTree;

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

/// The disk one fetch slot may hold at once (SPEC §4 step 8): its staged
/// tree and every temporary file of the fetch or packing it runs (a git
/// pack, an https archive, a cache temporary file, an archive served
/// without entering the cache). Charged before bytes are written, released
/// when a temporary file is gone; shared by clones.
#[derive(Debug, Clone)]
pub struct DiskAllowance(Arc<DiskUse>);

#[derive(Debug)]
struct DiskUse {
    cap: u64,
    used: AtomicU64,
    peak: AtomicU64,
}

impl DiskAllowance {
    pub fn new(cap: u64) -> Self {
        Self(Arc::new(DiskUse {
            cap,
            used: AtomicU64::new(0),
            peak: AtomicU64::new(0),
        }))
    }

    /// No bound beyond the caller's own caps (resolvers used on their own).
    pub fn unlimited() -> Self {
        Self::new(u64::MAX)
    }

    /// Records `bytes` more on disk; refused (and not recorded) past the cap.
    pub fn charge(&self, bytes: u64) -> Result<(), OverBudget> {
        let cap = self.0.cap;
        let used = self
            .0
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= cap)
            })
            .map_err(|_| OverBudget)?;
        self.0.peak.fetch_max(used + bytes, Ordering::AcqRel);
        Ok(())
    }

    /// `bytes` charged earlier are gone from disk.
    pub fn release(&self, bytes: u64) {
        let _ = self
            .0
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    pub fn used(&self) -> u64 {
        self.0.used.load(Ordering::Acquire)
    }

    /// The most ever charged at once.
    pub fn peak(&self) -> u64 {
        self.0.peak.load(Ordering::Acquire)
    }

    pub fn cap(&self) -> u64 {
        self.0.cap
    }
}

/// Bounds every fetch honours while it writes.
#[derive(Debug, Clone)]
pub struct FetchLimits {
    /// Cap on the sum of regular files' lengths, enforced while writing.
    pub max_bytes: u64,
    /// Cap on the files and directories written, enforced while writing.
    pub max_entries: u64,
    pub cancel: Cancellation,
    /// The fetch slot's disk, which the tree and temporary files share.
    pub disk: DiskAllowance,
    /// The caller can read a tree staged in place (see
    /// [`InPlace`](crate::ports::staging::InPlace)): a resolver whose
    /// source is a local directory may then check and hash it where it
    /// lies instead of copying it.
    pub in_place: bool,
}

impl FetchLimits {
    /// Limits with a fresh cancellation flag and no disk bound beyond the
    /// caps themselves.
    pub fn new(max_bytes: u64, max_entries: u64) -> Self {
        Self {
            max_bytes,
            max_entries,
            cancel: Cancellation::new(),
            disk: DiskAllowance::unlimited(),
            in_place: false,
        }
    }
}

/// What a fetch staged: the plugin's name (re-validated by the caller),
/// what the staging writer wrote, and which revision of the source it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub name: String,
    pub tree: WrittenTree,
    /// The immutable revision the spec resolved to, recorded as the
    /// install's provenance (SPEC §11): the full commit id for a git ref,
    /// the archive's sha256 for a pinned archive; `None` for a source
    /// with no revision of its own (a local directory).
    pub revision: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The plugin, repository or ref does not exist.
    #[error("plugin not found")]
    NotFound,
    /// The tree exceeded `FetchLimits::max_bytes` (or the fetch its disk
    /// allowance) while being written.
    #[error("staged plugin exceeds size limit")]
    TooLarge,
    /// The tree exceeded `FetchLimits::max_entries` while being written.
    #[error("staged plugin has too many entries")]
    TooManyEntries,
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

/// What a spec points at now (SPEC §11 `outdated`), as its resolver
/// tells without fetching any content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevisionNow {
    /// The spec names one immutable revision (a full commit sha, an archive
    /// pinned by its sha256): it never moves.
    Pinned,
    /// The spec follows a ref (a tag, a branch, the default branch), which
    /// points at this revision now (a full commit id).
    At(String),
    /// The source has no revision of its own (a local directory): only
    /// its content, staged and hashed, tells whether it changed.
    ContentOnly,
}

#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait SourceResolver: Send + Sync {
    /// The scheme this resolver serves, lower-case.
    fn scheme(&self) -> &'static str;

    /// Checks `spec` against the scheme's grammar; no disk or network.
    fn check_spec(&self, spec: &str) -> Result<SpecCheck, SpecError>;

    /// Fetches the plugin into `dest` (an empty directory the caller owns
    /// and removes on error) through the staging writer, and returns the
    /// plugin's name, which the caller re-validates, with what was written.
    async fn fetch(
        &self,
        spec: &str,
        dest: &Path,
        limits: &FetchLimits,
    ) -> Result<Fetched, FetchError>;

    /// The revision `spec` points at now, reading as little as its scheme
    /// allows (for a git ref: the server's ref list, no object), honouring
    /// `cancel`.
    ///
    /// Errors: [`FetchError::NotFound`] when the repository or ref is gone;
    /// [`FetchError::Cancelled`]; [`FetchError::Other`] for anything else
    /// (its text is logged, never shown).
    async fn revision_now(
        &self,
        spec: &str,
        cancel: &Cancellation,
    ) -> Result<RevisionNow, FetchError>;
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
    fn a_disk_allowance_refuses_past_its_cap_records_the_peak_and_is_shared() {
        let disk = DiskAllowance::new(10);
        let clone = disk.clone();
        assert_eq!(disk.charge(6), Ok(()));
        assert_eq!(clone.charge(5), Err(OverBudget), "refused, not recorded");
        assert_eq!(clone.charge(4), Ok(()));
        assert_eq!((disk.used(), disk.peak()), (10, 10));
        disk.release(7);
        assert_eq!((clone.used(), clone.peak()), (3, 10));
        assert_eq!(DiskAllowance::unlimited().charge(u64::MAX), Ok(()));
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
