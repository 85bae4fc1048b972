//! The staging area (SPEC §4): fresh directories under `<data-dir>/staging`
//! that resolvers fetch into, and the inspection of what they fetched.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::domain::digest::FileDigest;
use crate::ports::BoxError;
use crate::ports::resolver::Cancellation;

/// A staging directory, removed when dropped (error paths, cancellation,
/// or after the caller is done). Dropping also raises its cancellation
/// flag so a blocking fetch still writing into it stops.
#[derive(Debug)]
pub struct StagingDir {
    path: PathBuf,
    cancel: Cancellation,
}

impl StagingDir {
    /// Takes ownership of an existing, empty directory.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            cancel: Cancellation::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn cancellation(&self) -> Cancellation {
        self.cancel.clone()
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove staging directory");
        }
    }
}

/// What a staged tree holds, as the pipeline's checks need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedTree {
    /// Every regular file with its SHA-256, sorted by path (bytewise).
    pub files: Vec<FileDigest>,
    /// Sum of the regular files' lengths.
    pub total_bytes: u64,
    /// The legacy `manifest.json` `sha256` of the tree; computed only when
    /// the root `manifest.json` declares one (it doubles the hashing).
    pub legacy_sha256: Option<String>,
    /// The root `manifest.json`, when present (bounded; larger is unparsable).
    pub manifest_json: Option<Vec<u8>>,
    /// The root `plugin.yaml`, when present and within the manifest cap.
    pub plugin_yaml: Option<Vec<u8>>,
}

impl StagedTree {
    /// The SHA-256 of the root `plugin.yaml`, when there is one.
    pub fn plugin_yaml_sha256(&self) -> Option<&[u8; 32]> {
        self.files
            .iter()
            .find(|f| f.path == "plugin.yaml")
            .map(|f| &f.sha256)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StagingAreaError {
    /// The tree holds an entry staging refuses (defence in depth: the
    /// resolvers already refuse them while writing).
    #[error(transparent)]
    Unsafe(crate::domain::staging::UnsafeEntry),
    #[error("staging area error")]
    Io(#[source] BoxError),
}

#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait StagingArea: Send + Sync {
    /// A fresh, empty directory for one fetch.
    async fn create(&self) -> Result<StagingDir, StagingAreaError>;

    /// Hashes and measures the tree in `dir`.
    async fn inspect(&self, dir: &Path) -> Result<StagedTree, StagingAreaError>;
}
