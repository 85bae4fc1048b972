//! Packed plugin archives for download (SPEC §5 Download step 6): a
//! content-addressed cache of deterministic tarballs, keyed by the plugin's
//! `h1` digest and the format.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::digest::TreeDigest;
use crate::ports::BoxError;
use crate::ports::resolver::DiskAllowance;
use crate::ports::staging::TreeCheck;

/// The compressed tarball formats served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArchiveKind {
    TarGz,
    TarZst,
}

impl ArchiveKind {
    pub fn extension(self) -> &'static str {
        match self {
            Self::TarGz => "tar.gz",
            Self::TarZst => "tar.zst",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::TarGz => "application/gzip",
            Self::TarZst => "application/zstd",
        }
    }
}

/// A packed archive, open and ready to stream with its exact length.
#[derive(Debug)]
pub struct PackedArchive {
    pub file: std::fs::File,
    pub len: u64,
    /// False when the cache could not take the archive (it is larger than
    /// the cache, or the cache is full of archives being streamed): it is
    /// served once from a file with no name, whose bytes stay charged to
    /// the packer's disk allowance, so the caller keeps its fetch slot
    /// until the stream ends.
    pub cached: bool,
    /// Keeps the archive's bytes counted by the cache while it is streamed
    /// (an entry evicted meanwhile still holds its disk); drop it with the
    /// stream.
    pub lease: ArchiveLease,
}

/// Opaque: what a streamed archive keeps alive until its stream ends.
#[derive(Default)]
pub struct ArchiveLease(pub Option<Box<dyn Send + Sync>>);

impl std::fmt::Debug for ArchiveLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ArchiveLease(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// A tree read in place changed while it was packed: nothing was
    /// cached; stage it again.
    #[error("the plugin changed while it was packed")]
    Changed,
    #[error("failed to pack plugin")]
    Failed(#[source] BoxError),
}

/// One pack: the tree at `dir`, whose digest is `digest`, in `kind`.
#[derive(Clone)]
pub struct PackJob {
    pub dir: PathBuf,
    pub digest: TreeDigest,
    pub kind: ArchiveKind,
    /// The temporary file is charged here while it is written, and stays
    /// charged when the cache cannot take it (`cached: false`).
    pub disk: DiskAllowance,
    /// For a tree read in place: run once every file has been read, before
    /// the archive is cached ([`PackError::Changed`] when it fails).
    pub check: Option<Arc<dyn TreeCheck>>,
    /// Whether older archives may be evicted to make room. Packing ahead of
    /// time never evicts: it stops when the cache is full.
    pub may_evict: bool,
}

#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait ArchiveStore: Send + Sync {
    /// The cached archive for this content and format, if any.
    async fn cached(&self, digest: &TreeDigest, kind: ArchiveKind) -> Option<PackedArchive>;

    /// Packs `job` into the cache and returns it. Concurrent packs of the
    /// same key happen once.
    async fn pack_job(&self, job: PackJob) -> Result<PackedArchive, PackError>;

    /// Packs the tree at `dir` (not read in place), evicting as needed.
    async fn pack(
        &self,
        dir: &Path,
        digest: &TreeDigest,
        kind: ArchiveKind,
        disk: &DiskAllowance,
    ) -> Result<PackedArchive, PackError> {
        self.pack_job(PackJob {
            dir: dir.to_owned(),
            digest: digest.clone(),
            kind,
            disk: disk.clone(),
            check: None,
            may_evict: true,
        })
        .await
    }

    /// Whether an archive would be cached now without evicting another.
    fn has_room(&self) -> bool;

    /// Drops the entry for this content and format, if any (it was packed
    /// from a directory that changed while being read).
    async fn discard(&self, digest: &TreeDigest, kind: ArchiveKind);
}
