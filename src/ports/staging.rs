//! The staging area (SPEC §4): fresh directories under `<data-dir>/staging`
//! that resolvers fetch into, and the inspection of what they fetched.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::digest::FileDigest;
use crate::ports::BoxError;
use crate::ports::resolver::Cancellation;

/// Something kept alive until a staging directory is gone (the fetch slot
/// that bounds how many exist at once).
pub type Kept = Box<dyn Any + Send + Sync>;

/// How a staging directory is removed once its owner is done with it. The
/// staging area's adapter provides one that keeps the removal off the
/// async workers.
pub trait DirRemover: Send + Sync {
    /// Removes `path` (whatever is left of it), then drops `kept`.
    fn remove(&self, path: PathBuf, kept: Vec<Kept>);
}

/// A staging directory, removed when dropped (error paths, cancellation,
/// or after the caller is done). Dropping also raises its cancellation
/// flag so a blocking fetch still writing into it stops.
pub struct StagingDir {
    path: PathBuf,
    cancel: Cancellation,
    remover: Option<Arc<dyn DirRemover>>,
    kept: Vec<Kept>,
}

impl std::fmt::Debug for StagingDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagingDir")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl StagingDir {
    /// Takes ownership of an existing, empty directory; it is removed on
    /// the dropping thread.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            cancel: Cancellation::new(),
            remover: None,
            kept: Vec::new(),
        }
    }

    /// Like [`StagingDir::new`], removed by `remover`.
    pub fn with_remover(path: PathBuf, remover: Arc<dyn DirRemover>) -> Self {
        let mut dir = Self::new(path);
        dir.remover = Some(remover);
        dir
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn cancellation(&self) -> Cancellation {
        self.cancel.clone()
    }

    /// Keeps `value` alive until the directory has been removed.
    pub fn keep_until_removed(&mut self, value: impl Any + Send + Sync) {
        self.kept.push(Box::new(value));
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        self.cancel.cancel();
        let kept = std::mem::take(&mut self.kept);
        let path = std::mem::take(&mut self.path);
        match self.remover.take() {
            Some(remover) => remover.remove(path, kept),
            None => remove_now(&path),
        }
    }
}

/// Removes a staging directory on this thread, logging a failure.
pub fn remove_now(path: &Path) {
    if let Err(e) = std::fs::remove_dir_all(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not remove staging directory");
    }
}

/// One regular file as the staging writer wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// Relative, `/`-separated, checked by the hostile-tree rules.
    pub path: String,
    pub len: u64,
    /// Its SHA-256 when the writer saw the bytes go by (files copied in
    /// the kernel are hashed afterwards).
    pub sha256: Option<[u8; 32]>,
}

/// What the staging writer wrote into a staging directory: the only
/// record of the tree (nothing walks the directory afterwards).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WrittenTree {
    /// Every regular file, in the order written.
    pub files: Vec<WrittenFile>,
    /// Files and directories written, the root excluded.
    pub entries: u64,
    /// Set when nothing was written because the tree was staged in place
    /// (a local plugin read where it lies): the files are under its `dir`.
    pub in_place: Option<InPlace>,
}

/// Whether a tree staged in place is still what was staged. Whoever reads
/// the tree after it was hashed asks this once done reading and before
/// using what it read.
pub trait TreeCheck: Send + Sync {
    /// `Ok(true)` when nothing in the tree changed since it was staged.
    fn unchanged(&self) -> Result<bool, BoxError>;

    /// The SHA-256 the file at `path` (relative, `/`-separated) must have
    /// as its reader reads it, for a file changed so shortly before it was
    /// staged that its metadata cannot vouch for its bytes (a write still
    /// in flight leaves no later trace in the metadata); `None` for the
    /// others, which `unchanged` covers.
    fn expected_sha256(&self, path: &str) -> Option<[u8; 32]> {
        let _ = path;
        None
    }

    /// True when no file needs [`Self::expected_sha256`]: every one changed
    /// long enough before staging that its metadata vouches for its bytes,
    /// so the tree's digest may be remembered by its metadata alone.
    fn settled(&self) -> bool {
        false
    }
}

/// A tree staged in place: checked and hashed under the staging writer's
/// rules where it lies, never copied. Its readers run `check` after
/// reading it, so a tree that changed meanwhile is never used as hashed.
#[derive(Clone)]
pub struct InPlace {
    pub dir: PathBuf,
    pub check: Arc<dyn TreeCheck>,
}

impl std::fmt::Debug for InPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InPlace")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Two records of the same directory are equal; the check is how it is
/// watched, not what it holds.
impl PartialEq for InPlace {
    fn eq(&self, other: &Self) -> bool {
        self.dir == other.dir
    }
}

impl Eq for InPlace {}

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
    /// Set for a tree staged in place: its files are there, not in the
    /// staging directory.
    pub in_place: Option<InPlace>,
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
    #[error("staging area error")]
    Io(#[source] BoxError),
}

#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait StagingArea: Send + Sync {
    /// A fresh, empty directory for one fetch.
    async fn create(&self) -> Result<StagingDir, StagingAreaError>;

    /// Hashes and measures the tree the writer wrote into `dir` (or staged
    /// in place, when `written.in_place` says so), as `written` records it.
    async fn inspect(
        &self,
        dir: &Path,
        written: WrittenTree,
    ) -> Result<StagedTree, StagingAreaError>;
}
