//! [`FsStaging`]: staging directories under `<data-dir>/staging`.

use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use rand::RngCore;
use sha2::{Digest as _, Sha256};

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
            });
        } else {
            return Err(StagingAreaError::Unsafe(UnsafeEntry::SpecialFile(
                escape_path(raw),
            )));
        }
    }
    Ok(())
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
    let mut legacy = LegacyTreeHasher::new();
    let mut files = Vec::with_capacity(entries.len());
    let mut total_bytes = 0u64;
    let mut manifest_json = None;
    let mut plugin_yaml = None;
    let mut buf = vec![0u8; 64 * 1024];
    for entry in entries {
        let mut file = fs::File::open(&entry.abs).map_err(io)?;
        let feeds_legacy = need_legacy && legacy.begin_file(&entry.rel);
        let keep = (entry.rel == INTEGRITY_MANIFEST || entry.rel == "plugin.yaml")
            && file.metadata().map_err(io)?.len() <= MANIFEST_MAX_BYTES as u64;
        let mut kept = Vec::new();
        let mut hasher = Sha256::new();
        loop {
            let n = file.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            if feeds_legacy {
                legacy.update(&buf[..n]);
            }
            if keep {
                kept.extend_from_slice(&buf[..n]);
            }
            total_bytes += n as u64;
        }
        if keep && entry.rel == INTEGRITY_MANIFEST {
            manifest_json = Some(kept);
        } else if keep {
            plugin_yaml = Some(kept);
        }
        files.push(FileDigest {
            path: entry.rel,
            sha256: hasher.finalize().into(),
        });
    }
    // An oversized manifest.json is still present: it must fail the
    // integrity check as unparsable rather than be skipped.
    if manifest_json.is_none() && files.iter().any(|f| f.path == INTEGRITY_MANIFEST) {
        manifest_json = Some(Vec::new());
    }
    Ok(StagedTree {
        files,
        total_bytes,
        legacy_sha256: need_legacy.then(|| legacy.finish_hex()),
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
    async fn inspect_refuses_symlinks_and_special_files() {
        let root = tempfile::tempdir().unwrap();
        let staging = FsStaging::open(root.path()).unwrap();
        let dir = staging.create().await.unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("passwd")).unwrap();
        let err = staging.inspect(dir.path()).await.unwrap_err();
        assert_eq!(err.to_string(), "plugin contains a symlink: passwd");
    }
}
