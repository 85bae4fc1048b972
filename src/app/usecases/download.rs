//! Download for external agents (SPEC §5 Download): the staged plugin as a
//! deterministic tarball. Every policy check runs on every request; what a
//! repeated download of unchanged content skips is the work: re-packing
//! (content-addressed cache) and, for the local registry, re-copying and
//! re-hashing while the directory's fingerprint is unchanged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::allowlist::AllowlistGate;
use super::staging::{FetchSlot, Staged, Stager};
use crate::app::error::AppError;
use crate::domain::digest::TreeDigest;
use crate::domain::name::PluginName;
use crate::domain::policy::check_name_matches;
use crate::domain::source::{Source, parse_local_spec};
use crate::domain::staging::require_source;
use crate::domain::workspace::Workspace;
use crate::ports::archives::{ArchiveLease, ArchiveStore, PackedArchive};
use crate::ports::registry::PluginRegistry;

/// The archive formats a download serves.
pub use crate::ports::archives::ArchiveKind;

/// Digests of local plugins by directory fingerprint: the download use
/// case's own memo.
#[derive(Default)]
pub(super) struct LocalDigests {
    by_name: Mutex<HashMap<PluginName, (String, TreeDigest)>>,
}

impl LocalDigests {
    fn get(&self, name: &PluginName, fingerprint: &str) -> Option<TreeDigest> {
        let map = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        map.get(name)
            .filter(|(fp, _)| fp == fingerprint)
            .map(|(_, digest)| digest.clone())
    }

    fn put(&self, name: PluginName, fingerprint: String, digest: TreeDigest) {
        let mut map = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(name, (fingerprint, digest));
    }
}

/// The format asked for: `?format=` wins, else `Accept: application/zstd`,
/// else gzip (what the original's SDK reads).
pub fn negotiate_format(
    format: Option<&str>,
    accept: Option<&str>,
) -> Result<ArchiveKind, AppError> {
    match format.map(str::trim).filter(|f| !f.is_empty()) {
        Some("tar.gz") | Some("tgz") => Ok(ArchiveKind::TarGz),
        Some("tar.zst") => Ok(ArchiveKind::TarZst),
        Some(_) => Err(AppError::UnsupportedFormat),
        None => Ok(match accept {
            Some(a)
                if a.split(',')
                    .any(|t| t.trim().starts_with("application/zstd")) =>
            {
                ArchiveKind::TarZst
            }
            _ => ArchiveKind::TarGz,
        }),
    }
}

/// A strong ETag naming the content and the format.
pub fn etag(digest: &TreeDigest, kind: ArchiveKind) -> String {
    format!("\"{}.{}\"", digest, kind.extension())
}

/// `If-None-Match`: `*` or any listed tag (weak or strong) equal to ours.
pub fn matches_if_none_match(header: Option<&str>, etag: &str) -> bool {
    let Some(header) = header else { return false };
    header
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// What a download answers.
#[derive(Debug)]
pub enum Download {
    NotModified {
        name: PluginName,
        source: String,
        etag: String,
    },
    Archive {
        name: PluginName,
        source: String,
        etag: String,
        kind: ArchiveKind,
        archive: PackedArchive,
        /// The fetch slot whose disk holds an archive the cache could not
        /// take: kept until the stream ends.
        slot: Option<FetchSlot>,
    },
}

/// What a streamed archive keeps alive until its stream ends: the cache's
/// lease on its bytes and, for an archive the cache could not take, the
/// fetch slot whose disk holds it.
pub struct StreamGuard {
    _lease: ArchiveLease,
    _slot: Option<FetchSlot>,
}

impl Download {
    /// The archive's open file, its exact length, and what must live as
    /// long as it is streamed; `None` for a 304.
    pub fn take_stream(&mut self) -> Result<Option<(std::fs::File, u64, StreamGuard)>, AppError> {
        let Self::Archive { archive, slot, .. } = self else {
            return Ok(None);
        };
        let file = archive
            .file
            .try_clone()
            .map_err(|e| AppError::PackFailed(crate::ports::archives::PackError(Box::new(e))))?;
        let guard = StreamGuard {
            _lease: std::mem::take(&mut archive.lease),
            _slot: slot.take(),
        };
        Ok(Some((file, archive.len, guard)))
    }
}

/// What a download asks for, as the request gave it.
#[derive(Debug, Clone, Copy, Default)]
pub struct DownloadRequest<'a> {
    /// The plugin name in the path.
    pub name: &'a str,
    /// `?source=`; default `local://<name>`.
    pub source: Option<&'a str>,
    /// `?format=`.
    pub format: Option<&'a str>,
    /// The `Accept` header.
    pub accept: Option<&'a str>,
    /// The `If-None-Match` header.
    pub if_none_match: Option<&'a str>,
}

/// Serves plugins as tarballs.
#[derive(Clone)]
pub struct Downloader {
    pub(super) stager: Stager,
    pub(super) allowlist: AllowlistGate,
    pub(super) registry: Arc<dyn PluginRegistry>,
    pub(super) archives: Arc<dyn ArchiveStore>,
    pub(super) local_digests: Arc<LocalDigests>,
    pub(super) fetch_timeout: Duration,
}

/// Content to pack: a staged copy, or (for a local plugin whose directory
/// is unchanged since it was hashed: same fingerprint) the registry
/// directory itself, with no copy and no re-hashing.
enum Content {
    Staged(Box<Staged>),
    Unchanged {
        name: PluginName,
        fingerprint: String,
    },
}

impl Downloader {
    /// Resolves content: the memoized digest of an unchanged local plugin, or
    /// (first time, after a change, or with `fresh`) the staging pipeline.
    async fn resolve(
        &self,
        source: &Source,
        deadline: Instant,
        fresh: bool,
    ) -> Result<(PluginName, TreeDigest, Content), AppError> {
        let local = (source.scheme() == "local")
            .then(|| parse_local_spec(source.spec()).ok())
            .flatten();
        let fingerprint = match &local {
            Some(name) => self
                .registry
                .fingerprint(name)
                .await
                .map_err(AppError::Registry)?,
            None => None,
        };
        if let (Some(name), Some(fp), false) = (&local, &fingerprint, fresh)
            && let Some(digest) = self.local_digests.get(name, fp)
        {
            return Ok((
                name.clone(),
                digest,
                Content::Unchanged {
                    name: name.clone(),
                    fingerprint: fp.clone(),
                },
            ));
        }
        // The source goes to the pipeline as given, user info included, so its
        // grammar check refuses a credential exactly as install does (the
        // redacted form would silently drop it and fetch anyway).
        let given = format!("{}://{}", source.scheme(), source.spec());
        let staged = self.stager.stage(Some(&given), None, deadline).await?;
        if let (Some(name), Some(fp)) = (local, fingerprint) {
            self.local_digests.put(name, fp, staged.digest.clone());
        }
        Ok((
            staged.name.clone(),
            staged.digest.clone(),
            Content::Staged(Box::new(staged)),
        ))
    }

    /// Download (SPEC §5), after auth and the workspace record.
    pub async fn download(
        &self,
        workspace: &Workspace,
        request: DownloadRequest<'_>,
    ) -> Result<Download, AppError> {
        // The name rule comes before the format (SPEC §5 Download step 2).
        let requested = PluginName::parse(request.name).map_err(|_| AppError::InvalidPluginName)?;
        let kind = negotiate_format(request.format, request.accept)?;
        let if_none_match = request.if_none_match;
        let source = match request.source.map(str::trim).filter(|s| !s.is_empty()) {
            Some(s) => require_source(Some(s)).map_err(AppError::Staging)?,
            None => Source::local(&requested),
        };
        let deadline = Instant::now() + self.fetch_timeout;
        // At most two rounds: a directory that changed under the packer is
        // staged afresh, and a staged copy never changes.
        let mut fresh = false;
        loop {
            let (resolved, digest, content) = self.resolve(&source, deadline, fresh).await?;
            check_name_matches(&resolved, &requested).map_err(AppError::NameMismatch)?;
            self.allowlist.enforce(workspace, &resolved).await?;
            let tag = etag(&digest, kind);
            let source_text = source.redacted();
            if matches_if_none_match(if_none_match, &tag) {
                return Ok(Download::NotModified {
                    name: resolved,
                    source: source_text,
                    etag: tag,
                });
            }
            let (archive, slot) = match self.archives.cached(&digest, kind).await {
                Some(archive) => (archive, None),
                None => match &content {
                    Content::Staged(staged) => {
                        // Packed on the staging's own slot.
                        let archive = self
                            .archives
                            .pack(staged.dir.path(), &digest, kind, staged.slot.disk())
                            .await
                            .map_err(AppError::PackFailed)?;
                        (archive, Some(staged.slot.clone()))
                    }
                    Content::Unchanged { name, fingerprint } => {
                        let slot = self.stager.slots().acquire(deadline).await?;
                        let archive = self
                            .archives
                            .pack(&self.registry.plugin_dir(name), &digest, kind, slot.disk())
                            .await
                            .map_err(AppError::PackFailed)?;
                        let after = self
                            .registry
                            .fingerprint(name)
                            .await
                            .map_err(AppError::Registry)?;
                        if after.as_ref() != Some(fingerprint) {
                            // Changed while being packed: the entry may mix old
                            // and new bytes. Drop it and stage the new content,
                            // so every check runs on it.
                            self.archives.discard(&digest, kind).await;
                            fresh = true;
                            continue;
                        }
                        (archive, Some(slot))
                    }
                },
            };
            // A cached archive's disk is the cache's: the slot is done.
            let slot = slot.filter(|_| !archive.cached);
            return Ok(Download::Archive {
                name: resolved,
                source: source_text,
                etag: tag,
                kind,
                archive,
                slot,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::testing::workspace;
    use crate::app::usecases::Ports;
    use crate::ports::archives::MockArchiveStore;
    use crate::ports::registry::MockPluginRegistry;
    use crate::ports::store::MockAllowlistStore;
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_plugin_changed_while_packed_is_discarded_and_staged_again() {
        let name = PluginName::parse("careful-bash").unwrap();
        let digest = crate::domain::digest::tree_digest(&[]);
        let mut registry = MockPluginRegistry::new();
        // Unchanged when looked up, changed once the packer is done.
        let calls = Arc::new(AtomicUsize::new(0));
        registry.expect_fingerprint().returning(move |_| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            Ok(Some(if n == 0 { "before" } else { "after" }.to_owned()))
        });
        registry
            .expect_plugin_dir()
            .returning(|n| PathBuf::from("/registry").join(n.as_str()));
        let mut archives = MockArchiveStore::new();
        archives.expect_cached().times(1).returning(|_, _| None);
        let packed_digest = digest.clone();
        archives
            .expect_pack()
            .times(1)
            .withf(move |dir, d, kind, _| {
                dir == std::path::Path::new("/registry/careful-bash")
                    && *d == packed_digest
                    && *kind == ArchiveKind::TarZst
            })
            .returning(|_, _, _, _| {
                Ok(PackedArchive {
                    file: tempfile::tempfile().unwrap(),
                    len: 0,
                    cached: true,
                    lease: Default::default(),
                })
            });
        let discarded = digest.clone();
        archives
            .expect_discard()
            .times(1)
            .withf(move |d, kind| *d == discarded && *kind == ArchiveKind::TarZst)
            .returning(|_, _| ());
        let mut allowlists = MockAllowlistStore::new();
        allowlists.expect_allowlist().returning(|_| Ok(vec![]));
        let app = Ports {
            registry: Arc::new(registry),
            archives: Arc::new(archives),
            allowlists: Arc::new(allowlists),
            ..Ports::default()
        }
        .into_app();
        app.download
            .local_digests
            .put(name.clone(), "before".into(), digest.clone());

        let outcome = app
            .download
            .download(
                &workspace("ws", "external", "online"),
                DownloadRequest {
                    name: "careful-bash",
                    format: Some("tar.zst"),
                    ..DownloadRequest::default()
                },
            )
            .await;
        // The second round stages (no `local` resolver here, so it stops
        // there): never the archive packed from a moving directory.
        assert!(
            matches!(
                outcome,
                Err(AppError::Staging(
                    crate::domain::staging::StagingError::NoResolver { .. }
                ))
            ),
            "{outcome:?}"
        );
    }

    #[test]
    fn format_comes_from_the_query_then_accept_then_gzip() {
        let cases = [
            (None, None, ArchiveKind::TarGz),
            (None, Some("application/zstd"), ArchiveKind::TarZst),
            (
                None,
                Some("application/gzip, application/zstd;q=0.9"),
                ArchiveKind::TarZst,
            ),
            (None, Some("*/*"), ArchiveKind::TarGz),
            (Some("tar.gz"), Some("application/zstd"), ArchiveKind::TarGz),
            (Some("tar.zst"), None, ArchiveKind::TarZst),
            (Some(""), None, ArchiveKind::TarGz),
        ];
        for (format, accept, expected) in cases {
            assert_eq!(
                negotiate_format(format, accept).ok(),
                Some(expected),
                "{format:?} {accept:?}"
            );
        }
        assert!(matches!(
            negotiate_format(Some("zip"), None),
            Err(AppError::UnsupportedFormat)
        ));
    }

    #[test]
    fn if_none_match_accepts_lists_weak_tags_and_star() {
        let tag = "\"h1:abc=.tar.gz\"";
        assert!(matches_if_none_match(Some(tag), tag));
        assert!(matches_if_none_match(
            Some("\"x\", W/\"h1:abc=.tar.gz\""),
            tag
        ));
        assert!(matches_if_none_match(Some("*"), tag));
        assert!(!matches_if_none_match(Some("\"h1:abc=.tar.zst\""), tag));
        assert!(!matches_if_none_match(None, tag));
    }
}
