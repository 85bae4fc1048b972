//! Packed plugin archives for download (SPEC §5 Download step 6): a
//! content-addressed cache of deterministic tarballs, keyed by the plugin's
//! `h1` digest and the format.

use std::path::Path;

use async_trait::async_trait;

use crate::domain::digest::TreeDigest;
use crate::ports::BoxError;
use crate::ports::resolver::DiskAllowance;

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
#[error("failed to pack plugin")]
pub struct PackError(#[source] pub BoxError);

#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait ArchiveStore: Send + Sync {
    /// The cached archive for this content and format, if any.
    async fn cached(&self, digest: &TreeDigest, kind: ArchiveKind) -> Option<PackedArchive>;

    /// Packs the tree at `dir` (whose digest is `digest`) into the cache and
    /// returns it. Concurrent packs of the same key happen once. The
    /// temporary file is charged to `disk` while it is written, and stays
    /// charged when the cache cannot take it (`cached: false`).
    async fn pack(
        &self,
        dir: &Path,
        digest: &TreeDigest,
        kind: ArchiveKind,
        disk: &DiskAllowance,
    ) -> Result<PackedArchive, PackError>;

    /// Drops the entry for this content and format, if any (it was packed
    /// from a directory that changed while being read).
    async fn discard(&self, digest: &TreeDigest, kind: ArchiveKind);
}
