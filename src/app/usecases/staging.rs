//! The staging pipeline (SPEC §4), in order, shared by install and
//! download: parse, resolve, grammar, pin, take a fetch slot, fetch under
//! the deadline, re-validate, size, integrity, caller digest. Every rule is
//! a domain function; this module only sequences them around the ports.
//!
//! Fetch slots (`PLUGIN_MAX_CONCURRENT_FETCHES`) bound how many stagings
//! and packings run at once, and each carries the disk allowance its
//! staged tree and temporary files share. A slot is held while its staging
//! directory exists (it is released only once the directory is removed),
//! so stagings cannot pile up on disk whatever their callers do.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::{Instant, timeout_at};

use crate::app::error::AppError;
use crate::domain::digest::{CallerSha256, TreeDigest, tree_digest};
use crate::domain::name::PluginName;
use crate::domain::source::Source;
use crate::domain::staging::{
    StagingError, check_caller_sha256, check_integrity, check_pinned, check_returned_name,
    grammar_refusal, require_source,
};
use crate::ports::resolver::{
    Cancellation, DiskAllowance, FetchError, FetchLimits, ResolverRegistry, RevisionNow,
    SourceResolver, SpecCheck,
};
use crate::ports::staging::{StagedTree, StagingArea, StagingAreaError, StagingDir};

/// How long a request waits for a fetch slot before it is refused (429).
pub const FETCH_SLOT_WAIT: Duration = Duration::from_secs(3);

/// The `PLUGIN_MAX_CONCURRENT_FETCHES` slots.
#[derive(Debug, Clone)]
pub struct FetchSlots {
    semaphore: Arc<Semaphore>,
    slots: usize,
    wait: Duration,
    disk_per_slot: u64,
}

/// One slot: while any clone lives, one staging or packing may run, and
/// hold at most its disk allowance.
#[derive(Debug, Clone)]
pub struct FetchSlot(Arc<SlotInner>);

#[derive(Debug)]
struct SlotInner {
    _permit: OwnedSemaphorePermit,
    disk: DiskAllowance,
}

impl FetchSlot {
    /// The disk this slot's work may hold at once.
    pub fn disk(&self) -> &DiskAllowance {
        &self.0.disk
    }
}

impl FetchSlots {
    /// `slots` slots, each allowed `disk_per_slot` bytes on disk.
    pub fn new(slots: usize, disk_per_slot: u64) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(slots)),
            slots,
            wait: FETCH_SLOT_WAIT,
            disk_per_slot,
        }
    }

    /// Takes a slot, waiting at most [`FETCH_SLOT_WAIT`] (and never past
    /// `deadline`); none free by then → [`AppError::TooManyFetches`].
    pub async fn acquire(&self, deadline: Instant) -> Result<FetchSlot, AppError> {
        let until = deadline.min(Instant::now() + self.wait);
        match timeout_at(until, self.semaphore.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(FetchSlot(Arc::new(SlotInner {
                _permit: permit,
                disk: DiskAllowance::new(self.disk_per_slot),
            }))),
            _ => Err(AppError::TooManyFetches),
        }
    }

    /// Slots free right now.
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }

    /// True when no slot is taken: background work waits for this.
    pub fn idle(&self) -> bool {
        self.available() == self.slots
    }
}

/// A staged plugin. The directory is removed when this is dropped, off the
/// async workers, and its fetch slot freed after that.
#[derive(Debug)]
pub struct Staged {
    pub name: PluginName,
    pub source: Source,
    pub digest: TreeDigest,
    /// What the source resolved to (the resolver's `Fetched::revision`).
    pub revision: Option<String>,
    pub tree: StagedTree,
    pub dir: StagingDir,
    /// The fetch slot the staging holds; packing the tree uses its disk
    /// allowance.
    pub slot: FetchSlot,
}

fn staging(e: StagingError) -> AppError {
    AppError::Staging(e)
}

/// Raises a fetch's cancellation flag when the request stops waiting for
/// it (deadline, client gone).
struct CancelOnDrop(Option<Cancellation>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = self.0.take() {
            cancel.cancel();
        }
    }
}

/// What a staging may hold and fetch (`PLUGIN_INSTALL_MAX_DIR_BYTES`,
/// `PLUGIN_INSTALL_MAX_ENTRIES`, `PLUGIN_ALLOW_UNPINNED`).
#[derive(Debug, Clone, Copy)]
pub struct StagingLimits {
    /// Cap on a staged plugin, enforced while writing.
    pub max_dir_bytes: u64,
    /// Cap on a staged plugin's files and directories, enforced while writing.
    pub max_entries: u64,
    pub allow_unpinned: bool,
}

/// The staging pipeline, shared by install and download: the resolvers,
/// the staging area and the fetch slots it runs on.
#[derive(Clone)]
pub struct Stager {
    resolvers: ResolverRegistry,
    area: Arc<dyn StagingArea>,
    slots: FetchSlots,
    limits: StagingLimits,
}

impl Stager {
    pub fn new(
        resolvers: ResolverRegistry,
        area: Arc<dyn StagingArea>,
        slots: FetchSlots,
        limits: StagingLimits,
    ) -> Self {
        Self {
            resolvers,
            area,
            slots,
            limits,
        }
    }

    /// The fetch slots stagings (and packings) take.
    pub fn slots(&self) -> &FetchSlots {
        &self.slots
    }

    /// Runs steps 1–10 of SPEC §4; `deadline` bounds the wait for a fetch slot,
    /// the fetch and the inspection (→ 504 when it fires). The tree is a copy
    /// in the staging directory.
    pub async fn stage(
        &self,
        source: Option<&str>,
        sha256: Option<&str>,
        deadline: Instant,
    ) -> Result<Staged, AppError> {
        self.stage_with(source, sha256, deadline, false).await
    }

    /// [`Self::stage`], for a caller that reads the tree through
    /// [`Staged::tree`]`.in_place` when set: a local plugin is then checked
    /// and hashed where it lies, not copied, and must be read with its check.
    pub async fn stage_in_place(
        &self,
        source: Option<&str>,
        sha256: Option<&str>,
        deadline: Instant,
    ) -> Result<Staged, AppError> {
        self.stage_with(source, sha256, deadline, true).await
    }

    /// What `source` points at now (SPEC §11 `outdated`), without staging
    /// it: its resolver's grammar first, then a fetch slot, under
    /// `deadline`, like any fetch. Errors are the pipeline's (§4 steps 3,
    /// 4, 6 and 8's 429).
    pub async fn revision_now(
        &self,
        source: &Source,
        deadline: Instant,
    ) -> Result<RevisionNow, AppError> {
        let (resolver, _) = self.resolver_for(source)?;
        let slot = self.slots.acquire(deadline).await?;
        let cancel = Cancellation::new();
        let mut cancel_on_drop = CancelOnDrop(Some(cancel.clone()));
        let (tx, rx) = oneshot::channel();
        let spec = source.spec().to_owned();
        // Its own task, holding the slot until the lookup has ended, even
        // when the deadline stopped waiting for it.
        tokio::spawn(async move {
            let answer = resolver.revision_now(&spec, &cancel).await;
            drop(slot);
            let _ = tx.send(answer);
        });
        let answer = match timeout_at(deadline, rx).await {
            Err(_) => {
                return Err(staging(StagingError::Timeout {
                    source_text: source.redacted(),
                }));
            }
            Ok(Err(_)) => {
                return Err(AppError::internal(
                    "the lookup task ended without an answer",
                ));
            }
            Ok(Ok(answer)) => answer,
        };
        cancel_on_drop.0 = None;
        answer.map_err(|e| fetch_refusal(source, e))
    }

    /// The resolver of `source`'s scheme, and what its grammar says of the
    /// spec (SPEC §4 steps 3 and 4).
    fn resolver_for(
        &self,
        source: &Source,
    ) -> Result<(Arc<dyn SourceResolver>, SpecCheck), AppError> {
        let Some(resolver) = self.resolvers.get(source.scheme()) else {
            return Err(staging(StagingError::NoResolver {
                source_text: source.redacted(),
                available: self.resolvers.schemes(),
            }));
        };
        let check = resolver
            .check_spec(source.spec())
            .map_err(|e| staging(grammar_refusal(source, e)))?;
        Ok((resolver, check))
    }

    async fn stage_with(
        &self,
        source: Option<&str>,
        sha256: Option<&str>,
        deadline: Instant,
        in_place: bool,
    ) -> Result<Staged, AppError> {
        let source = require_source(source).map_err(staging)?;
        let (resolver, check) = self.resolver_for(&source)?;
        check_pinned(&source, check.pinned, self.limits.allow_unpinned).map_err(staging)?;
        let caller_sha256 = sha256
            .map(CallerSha256::parse)
            .transpose()
            .map_err(|error| {
                staging(StagingError::CallerSha256 {
                    source_text: source.redacted(),
                    error,
                })
            })?;

        let slot = self.slots.acquire(deadline).await?;
        let mut dir = self.area.create().await.map_err(AppError::internal)?;
        dir.keep_until_removed(slot.clone());
        let limits = FetchLimits {
            max_bytes: self.limits.max_dir_bytes,
            max_entries: self.limits.max_entries,
            cancel: dir.cancellation(),
            disk: slot.disk().clone(),
            in_place,
        };
        let timed_out = || {
            staging(StagingError::Timeout {
                source_text: source.redacted(),
            })
        };
        // The fetch runs as its own task, which owns the staging directory
        // until the fetch has stopped writing: a fetch abandoned at the
        // deadline (or by a client that left) is told to stop, and its
        // directory, with the slot, is removed only once it has.
        let mut cancel_on_drop = CancelOnDrop(Some(limits.cancel.clone()));
        let (tx, rx) = oneshot::channel();
        let spec = source.spec().to_owned();
        tokio::spawn(async move {
            let fetched = resolver.fetch(&spec, dir.path(), &limits).await;
            // Nobody waiting: `dir` is dropped here, after the fetch.
            let _ = tx.send((fetched, dir));
        });
        let (fetched, dir) = match timeout_at(deadline, rx).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(_)) => return Err(AppError::internal("the fetch task ended without an answer")),
            Ok(Ok(done)) => done,
        };
        cancel_on_drop.0 = None;
        let fetched = fetched.map_err(|e| fetch_refusal(&source, e))?;
        let name = check_returned_name(&source, &fetched.name).map_err(staging)?;
        let revision = fetched.revision;
        let tree = timeout_at(deadline, self.area.inspect(dir.path(), fetched.tree))
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| match e {
                StagingAreaError::Io(e) => AppError::Internal(e),
            })?;
        if tree.total_bytes > self.limits.max_dir_bytes {
            return Err(staging(StagingError::TooLarge {
                source_text: source.redacted(),
            }));
        }
        let digest = tree_digest(&tree.files);
        check_integrity(
            &source,
            tree.manifest_json.as_deref(),
            tree.legacy_sha256.as_deref(),
            &digest,
        )
        .map_err(staging)?;
        check_caller_sha256(&source, caller_sha256.as_ref(), tree.plugin_yaml_sha256())
            .map_err(staging)?;
        Ok(Staged {
            name,
            source,
            digest,
            revision,
            tree,
            dir,
            slot,
        })
    }
}

/// Step 6's answers. The resolver's own error goes to the log only: it can
/// hold paths, tokens or upstream bodies.
fn fetch_refusal(source: &Source, error: FetchError) -> AppError {
    let source_text = source.redacted();
    staging(match error {
        FetchError::NotFound => StagingError::NotFound { source_text },
        FetchError::TooLarge => StagingError::TooLarge { source_text },
        FetchError::TooManyEntries => StagingError::TooManyEntries { source_text },
        FetchError::Unsafe(entry) => entry.into_staging_error(source),
        FetchError::Refused(message) => StagingError::Refused {
            source_text,
            message,
        },
        FetchError::Cancelled => StagingError::Timeout { source_text },
        FetchError::Other(cause) => {
            tracing::warn!(source = %source_text, error = %cause, "fetch failed");
            StagingError::FetchFailed {
                source_text,
                scheme: source.scheme().to_owned(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_fetch_keeps_its_message_and_echoes_the_redacted_source() {
        let source = Source::parse("https://u:p@h.test/p.tar.gz").unwrap();
        let refusal = fetch_refusal(
            &source,
            FetchError::Refused("archive sha256 mismatch".into()),
        );
        let AppError::Staging(error) = refusal else {
            panic!("not a staging error: {refusal:?}");
        };
        assert_eq!(error.to_string(), "archive sha256 mismatch");
        assert_eq!(error.source_echo(), Some("https://h.test/p.tar.gz"));
        assert!(matches!(error, StagingError::Refused { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_a_few_seconds_for_a_fetch_slot_then_is_refused() {
        let slots = FetchSlots::new(2, 100);
        let far = Instant::now() + Duration::from_secs(600);
        let first = slots.acquire(far).await.unwrap();
        let second = slots.acquire(far).await.unwrap();
        assert_eq!(slots.available(), 0);
        let started = Instant::now();
        assert!(matches!(
            slots.acquire(far).await,
            Err(AppError::TooManyFetches)
        ));
        assert_eq!(started.elapsed(), FETCH_SLOT_WAIT);
        // A slot lives while any clone does.
        let kept = first.clone();
        drop(first);
        assert_eq!(slots.available(), 0);
        drop(kept);
        let third = slots.acquire(far).await.unwrap();
        assert_eq!(third.disk().cap(), 100, "each slot has its own allowance");
        drop((second, third));
        assert_eq!(slots.available(), 2);
        // Never waits past the request's own deadline.
        let started = Instant::now();
        let _all: Vec<_> = [slots.acquire(far).await, slots.acquire(far).await]
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let soon = Instant::now() + Duration::from_millis(500);
        assert!(slots.acquire(soon).await.is_err());
        assert_eq!(started.elapsed(), Duration::from_millis(500));
    }
}
