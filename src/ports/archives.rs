//! Packed plugin archives for download (SPEC §5 Download step 6): a
//! content-addressed cache of deterministic tarballs, keyed by the plugin's
//! `h1` digest and the format.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::domain::digest::TreeDigest;
use crate::ports::BoxError;

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

/// A packed archive on disk, ready to stream with its exact length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedArchive {
    pub path: PathBuf,
    pub len: u64,
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
    /// returns it. Concurrent packs of the same key happen once.
    async fn pack(
        &self,
        dir: &Path,
        digest: &TreeDigest,
        kind: ArchiveKind,
    ) -> Result<PackedArchive, PackError>;

    /// Drops the entry for this content and format, if any (it was packed
    /// from a directory that changed while being read).
    async fn discard(&self, digest: &TreeDigest, kind: ArchiveKind);
}
