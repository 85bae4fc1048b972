//! [`FsStaging`]: staging directories under `<data-dir>/staging`.

use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use rand::RngCore;
use sha2::{Digest as _, Sha256};

use super::parallel::map_items;
use crate::domain::digest::{FileDigest, INTEGRITY_MANIFEST, IntegrityManifest, LegacyTreeHasher};
use crate::domain::manifest::MANIFEST_MAX_BYTES;
use crate::domain::staging::{UnsafeEntry, check_entry_path, escape_path};
use crate::ports::staging::{StagedTree, StagingArea, StagingAreaError, StagingDir};

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

struct Entry {
    rel: String,
    abs: PathBuf,
    len: u64,
}

fn collect(dir: &Path, rel: &Path, out: &mut Vec<Entry>) -> Result<(), StagingAreaError> {
    for entry in fs::read_dir(dir.join(rel)).map_err(io)? {
        let entry = entry.map_err(io)?;
        let rel_path = rel.join(entry.file_name());
        let raw = rel_path.as_os_str().as_bytes();
        let Some(clean) = check_entry_path(raw).map_err(StagingAreaError::Unsafe)? else {
            continue;
        };
        let meta = fs::symlink_metadata(entry.path()).map_err(io)?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            return Err(StagingAreaError::Unsafe(UnsafeEntry::Symlink(escape_path(
                raw,
            ))));
        } else if kind.is_dir() {
            collect(dir, &rel_path, out)?;
        } else if kind.is_file() && meta.nlink() == 1 {
            out.push(Entry {
                rel: clean,
                abs: entry.path(),
                len: meta.len(),
            });
        } else {
            return Err(StagingAreaError::Unsafe(UnsafeEntry::SpecialFile(
                escape_path(raw),
            )));
        }
    }
    Ok(())
}

const HASH_CHUNK: usize = 64 * 1024;

/// One file read once: its digest, its length, and its bytes when it is
/// one of the manifests the checks read (`manifest.json`, `plugin.yaml`).
struct HashedFile {
    digest: FileDigest,
    len: u64,
    kept: Option<Vec<u8>>,
}

fn hash_file(
    entry: &Entry,
    buf: &mut [u8],
    mut legacy: Option<&mut LegacyTreeHasher>,
) -> Result<HashedFile, StagingAreaError> {
    let mut file = fs::File::open(&entry.abs).map_err(io)?;
    let keep = (entry.rel == INTEGRITY_MANIFEST || entry.rel == "plugin.yaml")
        && file.metadata().map_err(io)?.len() <= MANIFEST_MAX_BYTES as u64;
    let mut kept = keep.then(Vec::new);
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    loop {
        let n = file.read(buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let Some(legacy) = legacy.as_deref_mut() {
            legacy.update(&buf[..n]);
        }
        if let Some(kept) = kept.as_mut() {
            kept.extend_from_slice(&buf[..n]);
        }
        len += n as u64;
    }
    Ok(HashedFile {
        digest: FileDigest {
            path: entry.rel.clone(),
            sha256: hasher.finalize().into(),
        },
        len,
        kept,
    })
}

/// Hashes every file, in `entries` order.
fn hash_files(entries: &[Entry]) -> Result<Vec<HashedFile>, StagingAreaError> {
    let bytes = entries.iter().map(|e| e.len).sum();
    map_items(entries, bytes, |entry| {
        hash_file(entry, &mut vec![0u8; HASH_CHUNK], None)
    })
}

fn inspect_blocking(dir: &Path) -> Result<StagedTree, StagingAreaError> {
    let mut entries = Vec::new();
    collect(dir, Path::new(""), &mut entries)?;
    // Both digests are defined over paths sorted bytewise, which is not
    // the order of a directory walk ("a-b" < "a/b").
    entries.sort_by(|a, b| a.rel.as_bytes().cmp(b.rel.as_bytes()));
    // The legacy digest is a second full SHA-256 pass: only pay for it
    // when the root manifest.json asks for it.
    let need_legacy = entries
        .iter()
        .find(|e| e.rel == INTEGRITY_MANIFEST)
        .and_then(|e| fs::read(&e.abs).ok())
        .and_then(|bytes| IntegrityManifest::parse(&bytes).ok())
        .is_some_and(|m| m.sha256.is_some());
    let mut legacy_sha256 = None;
    let hashed = if need_legacy {
        // The legacy digest is one stream over every file in order.
        let mut legacy = LegacyTreeHasher::new();
        let mut buf = vec![0u8; HASH_CHUNK];
        let hashed = entries
            .iter()
            .map(|entry| {
                let feeds = legacy.begin_file(&entry.rel);
                hash_file(entry, &mut buf, feeds.then_some(&mut legacy))
            })
            .collect::<Result<Vec<_>, _>>()?;
        legacy_sha256 = Some(legacy.finish_hex());
        hashed
    } else {
        hash_files(&entries)?
    };
    let mut files = Vec::with_capacity(hashed.len());
    let mut total_bytes = 0u64;
    let mut manifest_json = None;
    let mut plugin_yaml = None;
    for file in hashed {
        total_bytes += file.len;
        match file.kept {
            Some(kept) if file.digest.path == INTEGRITY_MANIFEST => manifest_json = Some(kept),
            Some(kept) => plugin_yaml = Some(kept),
            None => {}
        }
        files.push(file.digest);
    }
    // An oversized manifest.json is still present: it must fail the
    // integrity check as unparsable rather than be skipped.
    if manifest_json.is_none() && files.iter().any(|f| f.path == INTEGRITY_MANIFEST) {
        manifest_json = Some(Vec::new());
    }
    Ok(StagedTree {
        files,
        total_bytes,
        legacy_sha256,
        manifest_json,
        plugin_yaml,
    })
}

#[async_trait]
impl StagingArea for FsStaging {
    async fn create(&self) -> Result<StagingDir, StagingAreaError> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let path = self.root.join(hex::encode(nonce));
        fs::create_dir(&path).map_err(io)?;
        Ok(StagingDir::new(path))
    }

    async fn inspect(&self, dir: &Path) -> Result<StagedTree, StagingAreaError> {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || inspect_blocking(&dir))
            .await
            .map_err(|e| StagingAreaError::Io(Box::new(e)))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::digest::{sha256, tree_digest};

    #[tokio::test]
    async fn opening_removes_leftovers_and_dirs_are_removed_on_drop() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("old/sub")).unwrap();
        fs::write(root.path().join("stray"), "x").unwrap();
        let staging = FsStaging::open(root.path()).unwrap();
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
        let dir = staging.create().await.unwrap();
        fs::write(dir.path().join("f"), "x").unwrap();
        let path = dir.path().to_owned();
        let cancel = dir.cancellation();
        drop(dir);
        assert!(!path.exists());
        assert!(
            cancel.is_cancelled(),
            "a fetch still writing is told to stop"
        );
    }

    #[tokio::test]
    async fn inspect_hashes_in_bytewise_path_order_and_keeps_the_manifests() {
        let root = tempfile::tempdir().unwrap();
        let staging = FsStaging::open(root.path()).unwrap();
        let dir = staging.create().await.unwrap();
        fs::create_dir(dir.path().join("a")).unwrap();
        fs::write(dir.path().join("a/b"), "slash").unwrap();
        fs::write(dir.path().join("a-b"), "dash").unwrap();
        fs::write(dir.path().join("plugin.yaml"), "version: 1.0.0\n").unwrap();
        let declared = hex::encode(sha256(b"a-b\0dasha/b\0slashplugin.yaml\0version: 1.0.0\n"));
        fs::write(
            dir.path().join("manifest.json"),
            format!(r#"{{"sha256":"{declared}"}}"#),
        )
        .unwrap();
        let tree = staging.inspect(dir.path()).await.unwrap();
        let paths: Vec<&str> = tree.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a-b", "a/b", "manifest.json", "plugin.yaml"]);
        assert_eq!(tree.total_bytes, 5 + 4 + 15 + 77);
        assert_eq!(tree.plugin_yaml.as_deref(), Some(&b"version: 1.0.0\n"[..]));
        assert!(tree.manifest_json.is_some());
        assert_eq!(
            tree.plugin_yaml_sha256(),
            Some(&sha256(b"version: 1.0.0\n"))
        );
        assert_eq!(
            tree.legacy_sha256,
            Some(declared),
            "computed because manifest.json declares it"
        );
        assert_eq!(
            tree_digest(&tree.files),
            tree_digest(
                &tree.files[..2]
                    .iter()
                    .chain(&tree.files[3..])
                    .cloned()
                    .collect::<Vec<_>>()
            )
        );
    }

    #[tokio::test]
    async fn a_tree_large_enough_for_several_hashing_threads_keeps_its_order_and_digests() {
        let root = tempfile::tempdir().unwrap();
        let staging = FsStaging::open(root.path()).unwrap();
        let dir = staging.create().await.unwrap();
        let mut expected = Vec::new();
        fs::create_dir(dir.path().join("a")).unwrap();
        // Uneven sizes, so threads finish out of order; "a-NN" sorts before
        // "a/NN" bytewise though the walk meets them the other way round.
        for i in 0..12u8 {
            let content = vec![i; (1 << 20) + usize::from(i) * 4099];
            let rel = if i % 2 == 0 {
                format!("a/{i:02}")
            } else {
                format!("a-{i:02}")
            };
            fs::write(dir.path().join(&rel), &content).unwrap();
            expected.push((rel, sha256(&content), content.len() as u64));
        }
        fs::write(dir.path().join("plugin.yaml"), "version: 2.0.0\n").unwrap();
        expected.push(("plugin.yaml".into(), sha256(b"version: 2.0.0\n"), 15));
        expected.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let total: u64 = expected.iter().map(|e| e.2).sum();
        assert!(total >= crate::adapters::fs::parallel::PARALLEL_FROM_BYTES);

        let tree = staging.inspect(dir.path()).await.unwrap();
        let got: Vec<(&str, [u8; 32])> = tree
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.sha256))
            .collect();
        let want: Vec<(&str, [u8; 32])> = expected.iter().map(|e| (e.0.as_str(), e.1)).collect();
        assert_eq!(got, want);
        assert_eq!(tree.total_bytes, expected.iter().map(|e| e.2).sum::<u64>());
        assert_eq!(tree.plugin_yaml.as_deref(), Some(&b"version: 2.0.0\n"[..]));
        assert_eq!(tree.legacy_sha256, None);
    }

    #[tokio::test]
    async fn inspect_refuses_symlinks_and_special_files() {
        let root = tempfile::tempdir().unwrap();
        let staging = FsStaging::open(root.path()).unwrap();
        let dir = staging.create().await.unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("passwd")).unwrap();
        let err = staging.inspect(dir.path()).await.unwrap_err();
        assert_eq!(err.to_string(), "plugin contains a symlink: passwd");
    }
}
