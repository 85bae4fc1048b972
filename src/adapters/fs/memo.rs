//! The per-file digest memo (git's "racy-git" rule): the SHA-256 of a
//! registry file, kept by the identity and timestamps of its inode, so a
//! local plugin installed again is not hashed again where it did not
//! change. Used by [`super::StagingWriter::in_place`] only: a copy is
//! made of new inodes. Downloads keep their own whole-tree memo by
//! fingerprint (`LocalDigests`): their misses stage a copy, which this
//! memo cannot serve.
//!
//! An entry is keyed by what `fstat` says of the file as opened (device,
//! inode, size, mtime and ctime in nanoseconds), so what was hashed is what
//! is keyed. The inode change time cannot be set from user space and every
//! write, `utimes` or rename moves it, so the same (inode, ctime) means the
//! same bytes — except for writes through a shared `mmap`, which may leave
//! the timestamps alone (the registry fingerprint has the same limit), and
//! a clock set back onto the exact nanosecond of an earlier change.
//!
//! A write stamps the file when it starts, not when its bytes land, and
//! two writes within one clock tick leave the same stamp: a file whose
//! ctime is within [`RECENT`] of now is neither served from nor stored in
//! the memo, and one whose key moved while it was hashed is not stored.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A file whose inode changed less than this ago may still have a write
/// in flight, or get another write with the same timestamp: its metadata
/// cannot vouch for its bytes.
pub(super) const RECENT: Duration = Duration::from_secs(2);

/// Entries kept at most: about 100 bytes each, so the memo stays under
/// ~12 MiB whatever the size of the registry.
pub(super) const MEMO_MAX_ENTRIES: usize = 100_000;

/// When the inode of `meta` last changed; a time before the epoch or out
/// of range reads as the epoch (old, so looked at by its key alone).
pub(super) fn changed_at(meta: &Metadata) -> SystemTime {
    let since_epoch = Duration::new(
        u64::try_from(meta.ctime()).unwrap_or(0),
        u32::try_from(meta.ctime_nsec()).unwrap_or(0),
    );
    UNIX_EPOCH.checked_add(since_epoch).unwrap_or(UNIX_EPOCH)
}

/// What must be unchanged for a memoised digest to hold, besides the
/// inode's identity (the map's key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &Metadata) -> (Inode, Self) {
        (
            (meta.dev(), meta.ino()),
            Self {
                size: meta.len(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                ctime: (meta.ctime(), meta.ctime_nsec()),
            },
        )
    }
}

/// An inode: (device, inode number).
type Inode = (u64, u64);

/// The memo's table: one digest per inode, with what it was taken under.
type Entries = HashMap<Inode, (Stamp, [u8; 32])>;

/// Digests of files by inode and timestamps (module docs). One entry per
/// inode: a rewritten file replaces its own entry. Full, it is cleared:
/// a registry larger than the cap is hashed as if there were no memo,
/// never served a wrong digest.
pub struct DigestMemo {
    entries: Mutex<Entries>,
    max_entries: usize,
    recent: Duration,
    /// Files hashed through the memo because it could not serve them.
    hashed: AtomicU64,
}

impl Default for DigestMemo {
    fn default() -> Self {
        Self::new(MEMO_MAX_ENTRIES, RECENT)
    }
}

impl std::fmt::Debug for DigestMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestMemo")
            .field("entries", &self.len())
            .field("max_entries", &self.max_entries)
            .finish_non_exhaustive()
    }
}

impl DigestMemo {
    /// A memo of at most `max_entries` entries that leaves files changed
    /// within `recent` alone.
    pub fn new(max_entries: usize, recent: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            max_entries,
            recent,
            hashed: AtomicU64::new(0),
        }
    }

    /// The SHA-256 of the open file `before` describes (its `fstat`): the
    /// memoised one when its key is unchanged and old enough, else
    /// `hash()`, stored when `after()` (an `fstat` once hashed) still
    /// gives the same key.
    pub(super) fn sha256<E>(
        &self,
        before: &Metadata,
        hash: impl FnOnce() -> Result<[u8; 32], E>,
        after: impl FnOnce() -> Option<Metadata>,
    ) -> Result<[u8; 32], E> {
        let now = SystemTime::now();
        let settled = changed_at(before)
            .checked_add(self.recent)
            .is_some_and(|quiet_from| quiet_from < now);
        let (inode, stamp) = Stamp::of(before);
        if settled
            && let Some(sha256) = self
                .lock()
                .get(&inode)
                .and_then(|(memo, sha256)| (*memo == stamp).then_some(*sha256))
        {
            return Ok(sha256);
        }
        let sha256 = hash()?;
        self.hashed.fetch_add(1, Ordering::Relaxed);
        // A write that started while the file was hashed moved its ctime.
        if settled && after().is_some_and(|meta| Stamp::of(&meta) == (inode, stamp)) {
            let mut entries = self.lock();
            if entries.len() >= self.max_entries && !entries.contains_key(&inode) {
                entries.clear();
            }
            entries.insert(inode, (stamp, sha256));
        }
        Ok(sha256)
    }

    /// How many files the memo had to hash, since it was made.
    pub fn hashed(&self) -> u64 {
        self.hashed.load(Ordering::Relaxed)
    }

    /// How many digests it holds.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;

    /// Hashes `path` through `memo` the way staging does: `fstat` of the
    /// open file before and after.
    fn sha256(memo: &DigestMemo, path: &Path) -> [u8; 32] {
        let file = fs::File::open(path).unwrap();
        let before = file.metadata().unwrap();
        memo.sha256(
            &before,
            || Ok::<_, ()>(crate::domain::digest::sha256(&fs::read(path).unwrap())),
            || file.metadata().ok(),
        )
        .unwrap()
    }

    /// A file whose last change is a few clock ticks old, so a later
    /// change gets another timestamp.
    fn settled_file(dir: &Path, name: &str, content: &[u8]) -> std::path::PathBuf {
        let path = dir.join(name);
        fs::write(&path, content).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        path
    }

    #[test]
    fn an_unchanged_file_is_served_from_the_memo_not_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = settled_file(dir.path(), "a", b"alpha");
        let memo = DigestMemo::new(10, Duration::ZERO);
        let sha = crate::domain::digest::sha256(b"alpha");
        assert_eq!(sha256(&memo, &path), sha);
        assert_eq!(sha256(&memo, &path), sha);
        assert_eq!(sha256(&memo, &path), sha);
        assert_eq!(memo.hashed(), 1);
        assert_eq!(memo.len(), 1);
    }

    #[test]
    fn a_file_rewritten_with_its_size_and_mtime_restored_is_hashed_again_as_its_ctime_moved() {
        let dir = tempfile::tempdir().unwrap();
        let path = settled_file(dir.path(), "a", b"alpha");
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        let memo = DigestMemo::new(10, Duration::ZERO);
        sha256(&memo, &path);
        sha256(&memo, &path);
        assert_eq!(memo.hashed(), 1, "memoised");

        fs::write(&path, b"ALPHA").unwrap();
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!((meta.len(), meta.modified().unwrap()), (5, mtime));
        assert_eq!(
            sha256(&memo, &path),
            crate::domain::digest::sha256(b"ALPHA")
        );
        assert_eq!(memo.hashed(), 2);
        assert_eq!(memo.len(), 1, "the rewritten file replaced its own entry");
    }

    #[test]
    fn a_recently_changed_file_is_never_memoised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        fs::write(&path, b"alpha").unwrap();
        let memo = DigestMemo::default();
        sha256(&memo, &path);
        sha256(&memo, &path);
        assert_eq!(memo.hashed(), 2);
        assert!(memo.is_empty());
    }

    #[test]
    fn a_file_that_changed_while_it_was_hashed_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = settled_file(dir.path(), "a", b"alpha");
        let memo = DigestMemo::new(10, Duration::ZERO);
        let file = fs::File::open(&path).unwrap();
        let before = file.metadata().unwrap();
        let hashed = memo.sha256(
            &before,
            || {
                fs::write(&path, b"ALPHA").unwrap();
                Ok::<_, ()>([0; 32])
            },
            || file.metadata().ok(),
        );
        assert_eq!(hashed, Ok([0; 32]));
        assert!(memo.is_empty());
    }

    #[test]
    fn the_memo_stays_within_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let memo = DigestMemo::new(3, Duration::ZERO);
        let paths: Vec<_> = (0..7)
            .map(|i| {
                let path = dir.path().join(i.to_string());
                fs::write(&path, i.to_string()).unwrap();
                path
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        for (i, path) in paths.iter().enumerate() {
            assert_eq!(
                sha256(&memo, path),
                crate::domain::digest::sha256(i.to_string().as_bytes())
            );
            assert!(memo.len() <= 3, "{} entries", memo.len());
        }
        assert_eq!(memo.hashed(), 7);
        assert!(!memo.is_empty());
    }
}
