//! [`FsArchiveStore`]: the download cache under `<data-dir>/cache` (SPEC §5
//! Download): deterministic tarballs keyed by content digest and format,
//! written to a temporary file and renamed into place (never a partial
//! entry), evicted least-recently-used beyond `PLUGIN_CACHE_MAX_BYTES`.
//!
//! Disk accounting: the cache's total counts every archive it has on disk,
//! including those evicted or discarded while being streamed (their name
//! is gone, their bytes are not until the last stream closes), and never
//! exceeds the cap: an archive being streamed is not evicted to make room
//! (that would free nothing), and a new archive that does not fit is not
//! admitted but served once from a file with no name, charged to the
//! packer's disk allowance. A temporary file is charged to that allowance
//! as it is written.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use base64::Engine as _;

use crate::adapters::tartree::{TREE_CHANGED, plan_tree, write_tree_tar};
use crate::domain::digest::TreeDigest;
use crate::ports::archives::{
    ArchiveKind, ArchiveLease, ArchiveStore, PackError, PackJob, PackedArchive,
};
use crate::ports::resolver::DiskAllowance;
use crate::ports::staging::TreeCheck;

/// Compression levels: downloads favour speed (SPEC goals compare with
/// `gzip -1` and `zstd -1`).
const GZIP_LEVEL: u32 = 1;
const ZSTD_LEVEL: i32 = 1;

#[derive(Default)]
struct Index {
    entries: HashMap<String, Entry>,
    /// Archives no longer in the cache but still being streamed, by id.
    orphans: HashMap<u64, Entry>,
    /// Bytes of `entries` and `orphans`.
    total: u64,
    clock: u64,
    next_id: u64,
}

struct Entry {
    id: u64,
    len: u64,
    last_used: u64,
    /// Streams open on it.
    readers: usize,
}

struct Inner {
    root: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
    /// One packer per key; an entry lives while someone packs or waits.
    packing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

pub struct FsArchiveStore {
    inner: Arc<Inner>,
}

/// The cache file name of a key: the digest in URL-safe base64 (no `/`).
fn file_name(digest: &TreeDigest, kind: ArchiveKind) -> String {
    let b64 = digest.as_str().trim_start_matches("h1:");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_default();
    format!(
        "h1-{}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        kind.extension()
    )
}

fn pack_error(e: impl Into<crate::ports::BoxError>) -> PackError {
    PackError::Failed(e.into())
}

impl Inner {
    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes least-recently-used entries nobody streams until `needed`
    /// more bytes fit; false when they cannot.
    fn make_room(&self, index: &mut Index, needed: u64) -> bool {
        while index.total.saturating_add(needed) > self.max_bytes {
            let victim = index
                .entries
                .iter()
                .filter(|(_, e)| e.readers == 0)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(name, _)| name.clone());
            let Some(victim) = victim else { return false };
            if let Some(entry) = index.entries.remove(&victim) {
                index.total -= entry.len;
            }
            if let Err(e) = fs::remove_file(self.root.join(&victim)) {
                tracing::warn!(file = %victim, error = %e, "could not evict cache entry");
            }
        }
        true
    }

    /// Drops `name` from the cache; its bytes stay counted while streams
    /// still read it.
    fn forget(&self, index: &mut Index, name: &str) -> bool {
        let Some(entry) = index.entries.remove(name) else {
            return false;
        };
        if entry.readers == 0 {
            index.total -= entry.len;
        } else {
            index.orphans.insert(entry.id, entry);
        }
        true
    }

    /// A stream of entry `id` (named `name` when it was cached) ended.
    fn release_reader(&self, name: &str, id: u64) {
        let mut index = self.index();
        if let Some(entry) = index.entries.get_mut(name).filter(|e| e.id == id) {
            entry.readers -= 1;
            return;
        }
        if let Some(orphan) = index.orphans.get_mut(&id) {
            orphan.readers -= 1;
            if orphan.readers == 0 {
                let len = orphan.len;
                index.orphans.remove(&id);
                index.total -= len;
            }
        }
    }

    /// Opens the cached `name` for one more stream.
    fn open_cached(self: &Arc<Self>, name: &str) -> Option<PackedArchive> {
        let mut index = self.index();
        index.clock += 1;
        let clock = index.clock;
        let entry = index.entries.get_mut(name)?;
        entry.last_used = clock;
        // Opened under the lock, so no eviction unlinks it in between.
        match fs::File::open(self.root.join(name)) {
            Ok(file) => {
                entry.readers += 1;
                let (id, len) = (entry.id, entry.len);
                Some(PackedArchive {
                    file,
                    len,
                    cached: true,
                    lease: ArchiveLease(Some(Box::new(Reader {
                        inner: self.clone(),
                        name: name.to_owned(),
                        id,
                    }))),
                })
            }
            Err(e) => {
                // Removed behind our back: forget it.
                tracing::warn!(file = %name, error = %e, "cache entry unreadable; dropping it");
                self.forget(&mut index, name);
                None
            }
        }
    }

    /// Takes the finished temporary archive `tmp` (`charged` bytes of
    /// `disk`) into the cache as `name` (evicting others only when
    /// `may_evict`), or, when it cannot fit, hands it
    /// out as a file with no name that stays charged until its stream
    /// ends. On error the charge is the caller's to release.
    fn admit(
        self: &Arc<Self>,
        name: &str,
        tmp: &Path,
        len: u64,
        disk: &DiskAllowance,
        charged: u64,
        may_evict: bool,
    ) -> io::Result<PackedArchive> {
        let file = fs::File::open(tmp)?;
        let mut index = self.index();
        let fits = if may_evict {
            self.make_room(&mut index, len)
        } else {
            index.total.saturating_add(len) <= self.max_bytes
        };
        if !fits {
            drop(index);
            fs::remove_file(tmp)?;
            tracing::info!(file = %name, bytes = len, "cache full of archives being streamed: serving uncached");
            return Ok(PackedArchive {
                file,
                len,
                cached: false,
                lease: ArchiveLease(Some(Box::new(Charged {
                    disk: disk.clone(),
                    bytes: charged,
                }))),
            });
        }
        fs::rename(tmp, self.root.join(name))?;
        index.clock += 1;
        index.next_id += 1;
        let (clock, id) = (index.clock, index.next_id);
        if let Some(old) = index.entries.insert(
            name.to_owned(),
            Entry {
                id,
                len,
                last_used: clock,
                readers: 1,
            },
        ) {
            // Replaced (its file too, by the rename): still counted while
            // streamed.
            if old.readers == 0 {
                index.total -= old.len;
            } else {
                index.orphans.insert(old.id, old);
            }
        }
        index.total += len;
        drop(index);
        // Counted by the cache from now on.
        disk.release(charged);
        Ok(PackedArchive {
            file,
            len,
            cached: true,
            lease: ArchiveLease(Some(Box::new(Reader {
                inner: self.clone(),
                name: name.to_owned(),
                id,
            }))),
        })
    }
}

/// A stream of a cached archive.
struct Reader {
    inner: Arc<Inner>,
    name: String,
    id: u64,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.inner.release_reader(&self.name, self.id);
    }
}

/// Bytes charged to a disk allowance until dropped.
struct Charged {
    disk: DiskAllowance,
    bytes: u64,
}

impl Drop for Charged {
    fn drop(&mut self) {
        self.disk.release(self.bytes);
    }
}

/// A file that charges what is written to it to a disk allowance.
struct ChargedFile {
    file: fs::File,
    charge: Charged,
}

impl Write for ChargedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let asked = buf.len() as u64;
        self.charge
            .disk
            .charge(asked)
            .map_err(|_| io::Error::other("packing exceeds the fetch's disk allowance"))?;
        let written = self.file.write(buf);
        // Only what was written stays charged.
        let kept = written.as_ref().map_or(0, |&n| n as u64);
        self.charge.disk.release(asked - kept);
        self.charge.bytes += kept;
        written
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// One packer per key: waits for the key's lock; the map entry goes when
/// its last user is done.
struct KeyLock<'a> {
    map: &'a Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl<'a> KeyLock<'a> {
    fn new(map: &'a Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>, key: &str) -> Self {
        let lock = map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_owned())
            .or_default()
            .clone();
        Self {
            map,
            key: key.to_owned(),
            lock,
        }
    }
}

impl Drop for KeyLock<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        // Held by the map and by us only: nobody waits, nobody packs.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.key);
        }
    }
}

impl FsArchiveStore {
    /// Opens the cache directory, dropping unfinished temporary files and
    /// indexing what is there (oldest modification first).
    pub fn open(root: impl Into<PathBuf>, max_bytes: u64) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        let mut found = Vec::new();
        for entry in fs::read_dir(&root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.metadata()?;
            if name.starts_with("tmp-") || !meta.is_file() {
                let _ = fs::remove_file(entry.path());
                continue;
            }
            found.push((meta.modified()?, name, meta.len()));
        }
        found.sort();
        let mut index = Index::default();
        for (_, name, len) in found {
            index.clock += 1;
            index.next_id += 1;
            index.total += len;
            index.entries.insert(
                name,
                Entry {
                    id: index.next_id,
                    len,
                    last_used: index.clock,
                    readers: 0,
                },
            );
        }
        let inner = Arc::new(Inner {
            root,
            max_bytes,
            index: Mutex::new(index),
            packing: Mutex::new(HashMap::new()),
        });
        {
            let mut index = inner.index();
            inner.make_room(&mut index, 0);
        }
        Ok(Self { inner })
    }

    /// Bytes on disk the cache accounts for (entries and orphans).
    pub fn total_bytes(&self) -> u64 {
        self.inner.index().total
    }

    #[cfg(test)]
    fn packing_keys(&self) -> usize {
        self.inner
            .packing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

/// Writes the deterministic tarball of `dir` to `out`, compressed.
pub fn pack_tree<W: Write>(dir: &Path, kind: ArchiveKind, out: W) -> io::Result<W> {
    pack_tree_checked(dir, kind, out, None)
}

/// [`pack_tree`] of a tree read in place: `check` runs once every file was
/// read (and vouches for recently changed files by their bytes).
fn pack_tree_checked<W: Write>(
    dir: &Path,
    kind: ArchiveKind,
    out: W,
    check: Option<&dyn TreeCheck>,
) -> io::Result<W> {
    let entries = plan_tree(dir).map_err(io::Error::other)?;
    match kind {
        ArchiveKind::TarGz => {
            let encoder = flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
            write_tree_tar(encoder, dir, None, &entries, 0, None, check)?.finish()
        }
        ArchiveKind::TarZst => {
            let mut encoder = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
            // Compression dominates packing: use the cores. zstd's threaded
            // mode gives the same bytes for any worker count >= 1 (but not
            // the same as its unthreaded mode), so it is always on: a strong
            // ETag must mean the same bytes on every machine.
            let workers = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
            encoder.multithread(workers.max(1))?;
            write_tree_tar(encoder, dir, None, &entries, 0, None, check)?.finish()
        }
    }
}

#[async_trait]
impl ArchiveStore for FsArchiveStore {
    async fn cached(&self, digest: &TreeDigest, kind: ArchiveKind) -> Option<PackedArchive> {
        self.inner.open_cached(&file_name(digest, kind))
    }

    async fn discard(&self, digest: &TreeDigest, kind: ArchiveKind) {
        let name = file_name(digest, kind);
        let mut index = self.inner.index();
        if self.inner.forget(&mut index, &name) {
            // Streams already open keep reading through their handles.
            if let Err(e) = fs::remove_file(self.inner.root.join(&name)) {
                tracing::warn!(file = %name, error = %e, "could not discard cache entry");
            }
        }
    }

    async fn pack_job(&self, job: PackJob) -> Result<PackedArchive, PackError> {
        let PackJob {
            dir,
            digest,
            kind,
            disk,
            check,
            may_evict,
        } = job;
        let name = file_name(&digest, kind);
        // One pack per key at a time: 64 clients asking for the same new
        // plugin wait for one packer instead of packing 64 times.
        let key = KeyLock::new(&self.inner.packing, &name);
        let _packing = key.lock.clone().lock_owned().await;
        if let Some(found) = self.inner.open_cached(&name) {
            return Ok(found);
        }
        let tmp = self
            .inner
            .root
            .join(format!("tmp-{:016x}-{name}", rand::random::<u64>()));
        let inner = self.inner.clone();
        // Packing, admission and any eviction's unlinks run on the blocking
        // pool.
        tokio::task::spawn_blocking(move || -> Result<PackedArchive, PackError> {
            let packed = (|| {
                let out = ChargedFile {
                    file: fs::File::create_new(&tmp)?,
                    charge: Charged {
                        disk: disk.clone(),
                        bytes: 0,
                    },
                };
                let mut out = pack_tree_checked(&dir, kind, out, check.as_deref())?;
                out.flush()?;
                let len = out.file.metadata()?.len();
                // From here the admission decides who holds the charge.
                let charged = std::mem::take(&mut out.charge.bytes);
                inner
                    .admit(&name, &tmp, len, &disk, charged, may_evict)
                    .inspect_err(|_| disk.release(charged))
            })();
            packed.map_err(|e| {
                let _ = fs::remove_file(&tmp);
                // Any failure reading a tree in place (a file gone, grown,
                // swapped) is the tree changing when its check says so.
                let Some(check) = check.as_deref() else {
                    return pack_error(e);
                };
                if e.to_string() == TREE_CHANGED || matches!(check.unchanged(), Ok(false)) {
                    PackError::Changed
                } else {
                    pack_error(e)
                }
            })
        })
        .await
        .map_err(pack_error)?
    }

    fn has_room(&self) -> bool {
        self.inner.index().total < self.inner.max_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::digest::{FileDigest, sha256, tree_digest};
    use std::io::Read;

    fn disk() -> DiskAllowance {
        DiskAllowance::unlimited()
    }

    fn bytes_of(archive: PackedArchive) -> Vec<u8> {
        let mut bytes = Vec::new();
        (&archive.file).read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes.len() as u64, archive.len);
        bytes
    }

    /// Files in the cache directory.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A small plugin whose rule reads `rule`, and its digest.
    fn tree_with(rule: &str) -> (tempfile::TempDir, TreeDigest) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("rules")).unwrap();
        fs::write(dir.path().join("plugin.yaml"), "version: 1.0.0\n").unwrap();
        fs::write(dir.path().join("rules/a.md"), rule).unwrap();
        let digest = tree_digest(&[
            FileDigest {
                path: "plugin.yaml".into(),
                sha256: sha256(b"version: 1.0.0\n"),
            },
            FileDigest {
                path: "rules/a.md".into(),
                sha256: sha256(rule.as_bytes()),
            },
        ]);
        (dir, digest)
    }

    fn tree() -> tempfile::TempDir {
        tree_with("rule").0
    }

    #[tokio::test]
    async fn the_same_tree_always_packs_to_the_same_bytes() {
        for kind in [ArchiveKind::TarGz, ArchiveKind::TarZst] {
            let mut packed = Vec::new();
            for _ in 0..2 {
                let cache = tempfile::tempdir().unwrap();
                let store = FsArchiveStore::open(cache.path(), 1 << 30).unwrap();
                let (dir, digest) = tree_with("rule");
                let archive = store
                    .pack(dir.path(), &digest, kind, &disk())
                    .await
                    .unwrap();
                assert!(archive.cached);
                packed.push(bytes_of(archive));
            }
            assert_eq!(packed[0], packed[1], "{kind:?}");
        }
    }

    #[tokio::test]
    async fn a_discarded_entry_is_gone_from_the_index_and_the_disk() {
        let cache = tempfile::tempdir().unwrap();
        let store = FsArchiveStore::open(cache.path(), 1 << 30).unwrap();
        let (dir, digest) = tree_with("rule");
        let packed = store
            .pack(dir.path(), &digest, ArchiveKind::TarZst, &disk())
            .await
            .unwrap();
        drop(packed);
        store.discard(&digest, ArchiveKind::TarZst).await;
        assert!(store.cached(&digest, ArchiveKind::TarZst).await.is_none());
        assert!(names(cache.path()).is_empty());
        assert_eq!(store.total_bytes(), 0);
        store.discard(&digest, ArchiveKind::TarZst).await;
    }

    #[tokio::test]
    async fn packed_entries_are_relative_sorted_owned_by_the_agent_with_mtime_zero() {
        let cache = tempfile::tempdir().unwrap();
        let store = FsArchiveStore::open(cache.path(), 1 << 30).unwrap();
        let (dir, digest) = tree_with("rule");
        let packed = store
            .pack(dir.path(), &digest, ArchiveKind::TarGz, &disk())
            .await
            .unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(packed.file));
        let entries: Vec<(String, u64, u64, u32, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("plugin.yaml".to_owned(), 1000, 1000, 0o644, 0),
                ("rules".to_owned(), 1000, 1000, 0o755, 0),
                ("rules/a.md".to_owned(), 1000, 1000, 0o644, 0),
            ]
        );
    }

    #[tokio::test]
    async fn a_cached_entry_is_found_and_the_least_recently_used_is_evicted() {
        let cache = tempfile::tempdir().unwrap();
        // Three plugins whose archives have the same size.
        let trees: HashMap<&str, (tempfile::TempDir, TreeDigest)> =
            ["a", "b", "c", "p"].map(|tag| (tag, tree_with(tag))).into();
        let digest = |tag: &str| trees[tag].1.clone();
        let probe_dir = tempfile::tempdir().unwrap();
        let probe = FsArchiveStore::open(probe_dir.path(), 1 << 30).unwrap();
        let one = probe
            .pack(
                trees["p"].0.path(),
                &digest("p"),
                ArchiveKind::TarGz,
                &disk(),
            )
            .await
            .unwrap()
            .len;
        let store = FsArchiveStore::open(cache.path(), one * 2).unwrap();
        for tag in ["a", "b"] {
            store
                .pack(
                    trees[tag].0.path(),
                    &digest(tag),
                    ArchiveKind::TarGz,
                    &disk(),
                )
                .await
                .unwrap();
        }
        assert!(
            store
                .cached(&digest("a"), ArchiveKind::TarGz)
                .await
                .is_some(),
            "a is now the most recent"
        );
        assert!(
            store
                .cached(&digest("a"), ArchiveKind::TarZst)
                .await
                .is_none(),
            "formats are distinct keys"
        );
        store
            .pack(
                trees["c"].0.path(),
                &digest("c"),
                ArchiveKind::TarGz,
                &disk(),
            )
            .await
            .unwrap();
        assert!(
            store
                .cached(&digest("b"), ArchiveKind::TarGz)
                .await
                .is_none(),
            "b was least recently used"
        );
        assert!(
            store
                .cached(&digest("a"), ArchiveKind::TarGz)
                .await
                .is_some()
        );
        assert!(store.total_bytes() <= one * 2);
        let reopened = FsArchiveStore::open(cache.path(), one * 2).unwrap();
        assert!(
            reopened
                .cached(&digest("c"), ArchiveKind::TarGz)
                .await
                .is_some(),
            "the index survives a restart"
        );
    }

    #[tokio::test]
    async fn a_failed_pack_leaves_no_entry_and_no_temporary_file() {
        let cache = tempfile::tempdir().unwrap();
        let store = FsArchiveStore::open(cache.path(), 1 << 30).unwrap();
        let dir = tree();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("leak")).unwrap();
        let allowance = DiskAllowance::new(1 << 20);
        assert!(
            store
                .pack(
                    dir.path(),
                    &tree_with("rule").1,
                    ArchiveKind::TarGz,
                    &allowance
                )
                .await
                .is_err()
        );
        assert_eq!(fs::read_dir(cache.path()).unwrap().count(), 0);
        assert_eq!(allowance.used(), 0, "nothing stays charged");
    }

    #[tokio::test]
    async fn an_archive_being_streamed_is_never_evicted_and_one_that_cannot_fit_is_served_uncached()
    {
        let cache = tempfile::tempdir().unwrap();
        let trees: HashMap<&str, (tempfile::TempDir, TreeDigest)> =
            ["a", "b", "c"].map(|tag| (tag, tree_with(tag))).into();
        let digest = |tag: &str| trees[tag].1.clone();
        let probe_dir = tempfile::tempdir().unwrap();
        let one = FsArchiveStore::open(probe_dir.path(), 1 << 30)
            .unwrap()
            .pack(
                trees["a"].0.path(),
                &digest("a"),
                ArchiveKind::TarGz,
                &disk(),
            )
            .await
            .unwrap()
            .len;
        let store = FsArchiveStore::open(cache.path(), one * 2).unwrap();
        let pack = |tag: &'static str, allowance: DiskAllowance| {
            let (store, trees) = (&store, &trees);
            async move {
                store
                    .pack(
                        trees[tag].0.path(),
                        &trees[tag].1,
                        ArchiveKind::TarGz,
                        &allowance,
                    )
                    .await
                    .unwrap()
            }
        };
        let a = pack("a", disk()).await;
        let b = pack("b", disk()).await;
        assert!(a.cached && b.cached);

        // Both are being streamed: evicting either would free nothing.
        let allowance = DiskAllowance::new(1 << 20);
        let c = pack("c", allowance.clone()).await;
        assert!(!c.cached, "the cache is full of archives being streamed");
        assert_eq!(
            allowance.used(),
            c.len,
            "charged to the packer until its stream ends"
        );
        assert_eq!(store.total_bytes(), one * 2);
        assert!(
            store
                .cached(&digest("c"), ArchiveKind::TarGz)
                .await
                .is_none()
        );
        let uncached = bytes_of(c);
        assert_eq!(allowance.used(), 0);
        assert!(!uncached.is_empty());
        assert!(
            names(cache.path()).iter().all(|n| !n.starts_with("tmp-")),
            "{:?}",
            names(cache.path())
        );

        // `a` is discarded while streamed: no name, bytes still counted.
        store.discard(&digest("a"), ArchiveKind::TarGz).await;
        assert_eq!(names(cache.path()).len(), 1);
        assert_eq!(
            store.total_bytes(),
            one * 2,
            "a's stream still holds its disk"
        );
        drop(a);
        assert_eq!(store.total_bytes(), one);
        // Room now: c enters the cache, and b stays.
        let c = pack("c", disk()).await;
        assert!(c.cached);
        assert!(
            store
                .cached(&digest("b"), ArchiveKind::TarGz)
                .await
                .is_some()
        );
        drop((b, c));
        assert!(store.total_bytes() <= one * 2);
    }

    #[tokio::test]
    async fn the_per_key_packing_locks_are_gone_once_nobody_packs() {
        let cache = tempfile::tempdir().unwrap();
        let store = Arc::new(FsArchiveStore::open(cache.path(), 1 << 30).unwrap());
        let trees: Vec<(tempfile::TempDir, TreeDigest)> =
            (0..4).map(|i| tree_with(&format!("rule {i}"))).collect();
        let trees = Arc::new(trees);
        let mut tasks = Vec::new();
        for i in 0..16 {
            let (store, trees) = (store.clone(), trees.clone());
            tasks.push(tokio::spawn(async move {
                let (dir, digest) = &trees[i % 4];
                store
                    .pack(dir.path(), digest, ArchiveKind::TarGz, &disk())
                    .await
                    .unwrap()
                    .len
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(store.packing_keys(), 0);
        // A pack abandoned while it waits for the key leaves nothing either.
        let key = file_name(&trees[0].1, ArchiveKind::TarZst);
        let held = KeyLock::new(&store.inner.packing, &key);
        let guard = held.lock.clone().lock_owned().await;
        let unlimited = disk();
        let waiting = store.pack(
            trees[0].0.path(),
            &trees[0].1,
            ArchiveKind::TarZst,
            &unlimited,
        );
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), waiting)
                .await
                .is_err()
        );
        drop((guard, held));
        assert_eq!(store.packing_keys(), 0);
    }
}
