//! [`FsArchiveStore`]: the download cache under `<data-dir>/cache` (SPEC §5
//! Download): deterministic tarballs keyed by content digest and format,
//! written to a temporary file and renamed into place (never a partial
//! entry), evicted least-recently-used beyond `PLUGIN_CACHE_MAX_BYTES`.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine as _;

use crate::adapters::tartree::{plan_tree, write_tree_tar};
use crate::domain::digest::TreeDigest;
use crate::ports::archives::{ArchiveKind, ArchiveStore, PackError, PackedArchive};

/// Compression levels: downloads favour speed (SPEC goals compare with
/// `gzip -1` and `zstd -1`).
const GZIP_LEVEL: u32 = 1;
const ZSTD_LEVEL: i32 = 1;

#[derive(Default)]
struct Index {
    entries: HashMap<String, Entry>,
    total: u64,
    clock: u64,
}

struct Entry {
    len: u64,
    last_used: u64,
}

pub struct FsArchiveStore {
    root: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
    packing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
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
    PackError(e.into())
}

impl FsArchiveStore {
    /// Opens the cache directory, dropping unfinished temporary files and
    /// indexing what is there (oldest modification first).
    pub fn open(root: impl Into<PathBuf>, max_bytes: u64) -> std::io::Result<Self> {
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
            index.total += len;
            index.entries.insert(
                name,
                Entry {
                    len,
                    last_used: index.clock,
                },
            );
        }
        let store = Self {
            root,
            max_bytes,
            index: Mutex::new(index),
            packing: Mutex::new(HashMap::new()),
        };
        store.evict(None);
        Ok(store)
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes least-recently-used entries until the cache fits, never
    /// `keep` (the entry about to be served).
    fn evict(&self, keep: Option<&str>) {
        let mut index = self.index();
        while index.total > self.max_bytes {
            let victim = index
                .entries
                .iter()
                .filter(|(name, _)| Some(name.as_str()) != keep)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(name, _)| name.clone());
            let Some(victim) = victim else { break };
            if let Some(entry) = index.entries.remove(&victim) {
                index.total -= entry.len;
            }
            // An archive being streamed stays readable through its open
            // handle: removing the name is safe.
            if let Err(e) = fs::remove_file(self.root.join(&victim)) {
                tracing::warn!(file = %victim, error = %e, "could not evict cache entry");
            }
        }
    }

    fn lookup(&self, name: &str) -> Option<PackedArchive> {
        let mut index = self.index();
        index.clock += 1;
        let clock = index.clock;
        let entry = index.entries.get_mut(name)?;
        entry.last_used = clock;
        let len = entry.len;
        Some(PackedArchive {
            path: self.root.join(name),
            len,
        })
    }

    /// Drops `name` from the index; true when it was there.
    fn forget(&self, name: &str) -> bool {
        let mut index = self.index();
        let Some(entry) = index.entries.remove(name) else {
            return false;
        };
        index.total -= entry.len;
        true
    }

    pub fn total_bytes(&self) -> u64 {
        self.index().total
    }
}

/// Writes the deterministic tarball of `dir` to `out`, compressed.
pub fn pack_tree(dir: &Path, kind: ArchiveKind, out: fs::File) -> std::io::Result<fs::File> {
    let entries = plan_tree(dir).map_err(std::io::Error::other)?;
    match kind {
        ArchiveKind::TarGz => {
            let encoder = flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
            write_tree_tar(encoder, dir, None, &entries, 0)?.finish()
        }
        ArchiveKind::TarZst => {
            let mut encoder = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
            // Compression dominates packing: use the cores. zstd's threaded
            // mode gives the same bytes for any worker count >= 1 (but not
            // the same as its unthreaded mode), so it is always on: a strong
            // ETag must mean the same bytes on every machine.
            let workers = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
            encoder.multithread(workers.max(1))?;
            write_tree_tar(encoder, dir, None, &entries, 0)?.finish()
        }
    }
}

#[async_trait]
impl ArchiveStore for FsArchiveStore {
    async fn cached(&self, digest: &TreeDigest, kind: ArchiveKind) -> Option<PackedArchive> {
        let name = file_name(digest, kind);
        let found = self.lookup(&name)?;
        // Someone removed the file behind our back: forget it.
        if !found.path.is_file() {
            self.forget(&name);
            return None;
        }
        Some(found)
    }

    async fn discard(&self, digest: &TreeDigest, kind: ArchiveKind) {
        let name = file_name(digest, kind);
        if self.forget(&name) {
            // Streams already open keep reading through their handles.
            if let Err(e) = fs::remove_file(self.root.join(&name)) {
                tracing::warn!(file = %name, error = %e, "could not discard cache entry");
            }
        }
    }

    async fn pack(
        &self,
        dir: &Path,
        digest: &TreeDigest,
        kind: ArchiveKind,
    ) -> Result<PackedArchive, PackError> {
        let name = file_name(digest, kind);
        // One pack per key at a time: 64 clients asking for the same new
        // plugin wait for one packer instead of packing 64 times.
        let lock = {
            let mut packing = self.packing.lock().unwrap_or_else(|e| e.into_inner());
            packing.entry(name.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        if let Some(found) = self.cached(digest, kind).await {
            return Ok(found);
        }
        let tmp = self
            .root
            .join(format!("tmp-{:016x}-{name}", rand::random::<u64>()));
        let final_path = self.root.join(&name);
        let dir = dir.to_owned();
        let tmp_for_pack = tmp.clone();
        let packed = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            let file = fs::File::create_new(&tmp_for_pack)?;
            let mut file = pack_tree(&dir, kind, file)?;
            file.flush()?;
            let len = file.metadata()?.len();
            fs::rename(&tmp_for_pack, &final_path)?;
            Ok(len)
        })
        .await
        .map_err(pack_error)
        .and_then(|r| r.map_err(pack_error));
        let len = match packed {
            Ok(len) => len,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        {
            let mut index = self.index();
            index.clock += 1;
            let clock = index.clock;
            if let Some(old) = index.entries.insert(
                name.clone(),
                Entry {
                    len,
                    last_used: clock,
                },
            ) {
                index.total -= old.len;
            }
            index.total += len;
        }
        self.evict(Some(&name));
        Ok(PackedArchive {
            path: self.root.join(&name),
            len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::digest::{FileDigest, sha256, tree_digest};

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
                let archive = store.pack(dir.path(), &digest, kind).await.unwrap();
                assert_eq!(archive.len, fs::metadata(&archive.path).unwrap().len());
                packed.push(fs::read(&archive.path).unwrap());
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
            .pack(dir.path(), &digest, ArchiveKind::TarZst)
            .await
            .unwrap();
        store.discard(&digest, ArchiveKind::TarZst).await;
        assert!(store.cached(&digest, ArchiveKind::TarZst).await.is_none());
        assert!(!packed.path.exists());
        assert_eq!(store.total_bytes(), 0);
        store.discard(&digest, ArchiveKind::TarZst).await;
    }

    #[tokio::test]
    async fn packed_entries_are_relative_sorted_owned_by_the_agent_with_mtime_zero() {
        let cache = tempfile::tempdir().unwrap();
        let store = FsArchiveStore::open(cache.path(), 1 << 30).unwrap();
        let (dir, digest) = tree_with("rule");
        let packed = store
            .pack(dir.path(), &digest, ArchiveKind::TarGz)
            .await
            .unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
            fs::File::open(&packed.path).unwrap(),
        ));
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
            .pack(trees["p"].0.path(), &digest("p"), ArchiveKind::TarGz)
            .await
            .unwrap()
            .len;
        let store = FsArchiveStore::open(cache.path(), one * 2).unwrap();
        for tag in ["a", "b"] {
            store
                .pack(trees[tag].0.path(), &digest(tag), ArchiveKind::TarGz)
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
            .pack(trees["c"].0.path(), &digest("c"), ArchiveKind::TarGz)
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
        assert!(
            store
                .pack(dir.path(), &tree_with("rule").1, ArchiveKind::TarGz)
                .await
                .is_err()
        );
        assert_eq!(fs::read_dir(cache.path()).unwrap().count(), 0);
    }
}
