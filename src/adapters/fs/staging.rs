//! [`FsStaging`]: staging directories under `<data-dir>/staging`, and the
//! inspection of a staged tree from the staging writer's record of it
//! (nothing walks the directory: what was written is what is hashed).
//! Directories are removed on the blocking pool, never on an async worker.

use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use rand::RngCore;
use sha2::{Digest as _, Sha256};

use super::parallel::map_items;
use crate::domain::digest::{FileDigest, INTEGRITY_MANIFEST, IntegrityManifest, LegacyTreeHasher};
use crate::domain::manifest::MANIFEST_MAX_BYTES;
use crate::ports::staging::{
    DirRemover, Kept, StagedTree, StagingArea, StagingAreaError, StagingDir, WrittenFile,
    WrittenTree, remove_now,
};

#[derive(Debug, Clone)]
pub struct FsStaging {
    root: PathBuf,
}

fn io(e: std::io::Error) -> StagingAreaError {
    StagingAreaError::Io(Box::new(e))
}

impl FsStaging {
    /// Opens the staging root, removing leftovers of an earlier run (a
    /// crash or kill can leave directories no guard removed).
    pub fn open(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        for entry in fs::read_dir(&root)? {
            let path = entry?.path();
            let removed = if path.is_dir() && !path.is_symlink() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            if let Err(e) = removed {
                tracing::warn!(path = %path.display(), error = %e, "could not remove staging leftover");
            }
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// Removes staging directories on the blocking pool (a tree of thousands
/// of files takes a while to unlink), then drops what was kept with the
/// directory: the fetch slot is freed only once the disk is, so leftovers
/// being removed count against the slots and cannot pile up. Outside a
/// runtime (start-up, plain tests) the removal runs in place.
struct BlockingRemover;

impl DirRemover for BlockingRemover {
    fn remove(&self, path: PathBuf, kept: Vec<Kept>) {
        let work = move || {
            remove_now(&path);
            drop(kept);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(work);
            }
            Err(_) => work(),
        }
    }
}

const HASH_CHUNK: usize = 64 * 1024;

/// Opens a staged file for reading; staging wrote only regular files, so
/// a symlink here would be a bug, and is never followed. A tree staged in
/// place could have one swapped in since its walk: never followed either,
/// and a FIFO never blocks (its check then reports the change).
fn open_staged(dir: &Path, rel: &str) -> Result<fs::File, StagingAreaError> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(dir.join(rel))
        .map_err(io)
}

/// Reads at most `cap` bytes of a staged file: `None` when it is longer.
fn read_capped(dir: &Path, rel: &str, cap: u64) -> Result<Option<Vec<u8>>, StagingAreaError> {
    let mut bytes = Vec::new();
    open_staged(dir, rel)?
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    Ok((bytes.len() as u64 <= cap).then_some(bytes))
}

/// Streams a staged file of the recorded length through `sink`.
fn read_file(
    dir: &Path,
    file: &WrittenFile,
    buf: &mut [u8],
    mut sink: impl FnMut(&[u8]),
) -> Result<(), StagingAreaError> {
    let mut input = open_staged(dir, &file.path)?;
    let mut len = 0u64;
    loop {
        let n = input.read(buf).map_err(io)?;
        if n == 0 {
            break;
        }
        sink(&buf[..n]);
        len += n as u64;
    }
    if len != file.len {
        return Err(io(std::io::Error::other(format!(
            "staged file {} changed size",
            file.path
        ))));
    }
    Ok(())
}

fn sha256_of(dir: &Path, file: &WrittenFile) -> Result<[u8; 32], StagingAreaError> {
    if let Some(sha256) = file.sha256 {
        return Ok(sha256);
    }
    let mut hasher = Sha256::new();
    read_file(dir, file, &mut vec![0u8; HASH_CHUNK], |b| hasher.update(b))?;
    Ok(hasher.finalize().into())
}

fn inspect_blocking(dir: &Path, written: WrittenTree) -> Result<StagedTree, StagingAreaError> {
    let in_place = written.in_place;
    let dir = in_place.as_ref().map_or(dir, |place| place.dir.as_path());
    let mut files = written.files;
    // Both digests are defined over paths sorted bytewise, which is not
    // the order of a directory walk ("a-b" < "a/b").
    files.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let total_bytes = files.iter().map(|f| f.len).sum();
    let root_file = |name: &str| files.iter().find(|f| f.path == name);
    // Read with a cap: a larger manifest.json is still present, and must
    // fail the integrity check as unparsable rather than be skipped.
    let manifest_json = match root_file(INTEGRITY_MANIFEST) {
        Some(_) => Some(
            read_capped(dir, INTEGRITY_MANIFEST, MANIFEST_MAX_BYTES as u64)?.unwrap_or_default(),
        ),
        None => None,
    };
    let plugin_yaml = match root_file("plugin.yaml") {
        Some(f) if f.len <= MANIFEST_MAX_BYTES as u64 => {
            read_capped(dir, "plugin.yaml", MANIFEST_MAX_BYTES as u64)?
        }
        _ => None,
    };
    // Files the writer copied in the kernel are hashed here, on a few
    // threads for large trees.
    let sha256s = map_items(&files, total_bytes, |f| sha256_of(dir, f))?;
    // The legacy digest is a second full pass, one stream over every file
    // in order: only paid for when the root manifest.json asks for it.
    let need_legacy = manifest_json
        .as_deref()
        .and_then(|bytes| IntegrityManifest::parse(bytes).ok())
        .is_some_and(|m| m.sha256.is_some());
    let legacy_sha256 = if need_legacy {
        let mut legacy = LegacyTreeHasher::new();
        let mut buf = vec![0u8; HASH_CHUNK];
        for file in &files {
            if legacy.begin_file(&file.path) {
                read_file(dir, file, &mut buf, |b| legacy.update(b))?;
            }
        }
        Some(legacy.finish_hex())
    } else {
        None
    };
    Ok(StagedTree {
        files: files
            .into_iter()
            .zip(sha256s)
            .map(|(f, sha256)| FileDigest {
                path: f.path,
                sha256,
            })
            .collect(),
        total_bytes,
        legacy_sha256,
        manifest_json,
        plugin_yaml,
        in_place,
    })
}

#[async_trait]
impl StagingArea for FsStaging {
    async fn create(&self) -> Result<StagingDir, StagingAreaError> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let path = self.root.join(hex::encode(nonce));
        fs::create_dir(&path).map_err(io)?;
        Ok(StagingDir::with_remover(path, Arc::new(BlockingRemover)))
    }

    async fn inspect(
        &self,
        dir: &Path,
        written: WrittenTree,
    ) -> Result<StagedTree, StagingAreaError> {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || inspect_blocking(&dir, written))
            .await
            .map_err(|e| StagingAreaError::Io(Box::new(e)))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::fs::StagingWriter;
    use crate::domain::digest::{sha256, tree_digest};
    use crate::ports::resolver::{FetchError, FetchLimits};

    /// Writes `files` through the staging writer; `copied` ones the way a
    /// local copy does (no digest recorded).
    fn write(dir: &Path, files: &[(&str, &[u8])], copied: bool) -> WrittenTree {
        let limits = FetchLimits::new(1 << 30, 1000);
        let mut writer = StagingWriter::new(dir, &limits);
        let src = tempfile::tempdir().unwrap();
        for (i, (path, content)) in files.iter().enumerate() {
            if copied {
                let from = src.path().join(i.to_string());
                fs::write(&from, content).unwrap();
                writer
                    .plan_copy(path.as_bytes(), false, content.len() as u64, from)
                    .unwrap();
            } else {
                writer
                    .file(path.as_bytes(), false, *content, |e| {
                        FetchError::Other(Box::new(e))
                    })
                    .unwrap();
            }
        }
        writer.finish().unwrap()
    }

    #[tokio::test]
    async fn opening_removes_leftovers_and_dirs_are_removed_off_the_worker_then_release_what_they_kept()
     {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("old/sub")).unwrap();
        fs::write(root.path().join("stray"), "x").unwrap();
        let staging = FsStaging::open(root.path()).unwrap();
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
        let mut dir = staging.create().await.unwrap();
        fs::write(dir.path().join("f"), "x").unwrap();
        let path = dir.path().to_owned();
        let cancel = dir.cancellation();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        struct Signal(Option<tokio::sync::oneshot::Sender<()>>);
        impl Drop for Signal {
            fn drop(&mut self) {
                if let Some(tx) = self.0.take() {
                    let _ = tx.send(());
                }
            }
        }
        dir.keep_until_removed(Signal(Some(tx)));
        drop(dir);
        assert!(
            cancel.is_cancelled(),
            "a fetch still writing is told to stop"
        );
        rx.await.unwrap();
        assert!(!path.exists(), "removed before what it kept is released");
    }

    #[tokio::test]
    async fn inspect_hashes_in_bytewise_path_order_and_keeps_the_manifests() {
        let root = tempfile::tempdir().unwrap();
        let staging = FsStaging::open(root.path()).unwrap();
        let declared = hex::encode(sha256(b"a-b\0dasha/b\0slashplugin.yaml\0version: 1.0.0\n"));
        let manifest = format!(r#"{{"sha256":"{declared}"}}"#);
        for copied in [false, true] {
            let dir = staging.create().await.unwrap();
            let written = write(
                dir.path(),
                &[
                    ("a/b", b"slash"),
                    ("a-b", b"dash"),
                    ("plugin.yaml", b"version: 1.0.0\n"),
                    ("manifest.json", manifest.as_bytes()),
                ],
                copied,
            );
            let tree = staging.inspect(dir.path(), written).await.unwrap();
            let paths: Vec<&str> = tree.files.iter().map(|f| f.path.as_str()).collect();
            assert_eq!(paths, ["a-b", "a/b", "manifest.json", "plugin.yaml"]);
            assert_eq!(tree.total_bytes, 5 + 4 + 15 + 77);
            assert_eq!(tree.plugin_yaml.as_deref(), Some(&b"version: 1.0.0\n"[..]));
            assert_eq!(tree.manifest_json.as_deref(), Some(manifest.as_bytes()));
            assert_eq!(
                tree.plugin_yaml_sha256(),
                Some(&sha256(b"version: 1.0.0\n"))
            );
            assert_eq!(
                tree.legacy_sha256,
                Some(declared.clone()),
                "computed because manifest.json declares it"
            );
            assert_eq!(tree.files[0].sha256, sha256(b"dash"));
        }
    }

    #[tokio::test]
    async fn an_oversized_manifest_json_is_read_no_further_than_the_cap() {
        let root = tempfile::tempdir().unwrap();
        let staging = FsStaging::open(root.path()).unwrap();
        let dir = staging.create().await.unwrap();
        let huge = vec![b' '; MANIFEST_MAX_BYTES + 1];
        let written = write(dir.path(), &[("manifest.json", &huge)], false);
        let tree = staging.inspect(dir.path(), written).await.unwrap();
        assert_eq!(
            tree.manifest_json.as_deref(),
            Some(&b""[..]),
            "present, and unparsable"
        );
        assert_eq!(tree.legacy_sha256, None);
    }

    #[tokio::test]
    async fn a_tree_large_enough_for_several_hashing_threads_keeps_its_order_and_digests() {
        let root = tempfile::tempdir().unwrap();
        let staging = FsStaging::open(root.path()).unwrap();
        let dir = staging.create().await.unwrap();
        let mut expected = Vec::new();
        // Uneven sizes, so threads finish out of order; "a-NN" sorts before
        // "a/NN" bytewise though the writer meets them the other way round.
        for i in 0..12u8 {
            let content = vec![i; (1 << 20) + usize::from(i) * 4099];
            let rel = if i % 2 == 0 {
                format!("a/{i:02}")
            } else {
                format!("a-{i:02}")
            };
            expected.push((rel, content));
        }
        expected.push(("plugin.yaml".into(), b"version: 2.0.0\n".to_vec()));
        let files: Vec<(&str, &[u8])> = expected
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_slice()))
            .collect();
        let written = write(dir.path(), &files, true);
        let total: u64 = expected.iter().map(|e| e.1.len() as u64).sum();
        assert!(total >= crate::adapters::fs::parallel::PARALLEL_FROM_BYTES);
        expected.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));

        let tree = staging.inspect(dir.path(), written).await.unwrap();
        let got: Vec<(&str, [u8; 32])> = tree
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.sha256))
            .collect();
        let want: Vec<(&str, [u8; 32])> = expected
            .iter()
            .map(|e| (e.0.as_str(), sha256(&e.1)))
            .collect();
        assert_eq!(got, want);
        assert_eq!(tree.total_bytes, total);
        assert_eq!(tree.plugin_yaml.as_deref(), Some(&b"version: 2.0.0\n"[..]));
        assert_eq!(tree.legacy_sha256, None);
        assert_eq!(
            tree_digest(&tree.files),
            tree_digest(
                &want
                    .iter()
                    .map(|(p, s)| FileDigest {
                        path: (*p).to_owned(),
                        sha256: *s
                    })
                    .collect::<Vec<_>>()
            )
        );
    }
}
