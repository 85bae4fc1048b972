//! Download for external agents (SPEC §5 Download): the staged plugin as a
//! deterministic tarball. Every policy check runs on every request; what a
//! repeated download of unchanged content skips is the work: re-packing
//! (content-addressed cache) and, for the local registry, re-hashing while
//! the directory's fingerprint is unchanged. A registry plugin is never
//! copied: it is checked and hashed where it lies and packed from there,
//! and a pack that finds it changed is dropped before it is cached and the
//! plugin staged again.
//!
//! [`Downloader::prepare`] does the same work ahead of time for a
//! registry plugin that appeared or changed (packing ahead of time, see
//! `prepack`), so its first download is a cached one.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::allowlist::AllowlistGate;
use super::content::{Content, ContentResolver, Resolved};
use super::staging::{FetchSlot, Stager};
use crate::app::error::AppError;
use crate::domain::digest::TreeDigest;
use crate::domain::name::PluginName;
use crate::domain::policy::check_name_matches;
use crate::domain::source::Source;
use crate::domain::staging::require_source;
use crate::domain::workspace::Workspace;
use crate::ports::archives::{ArchiveLease, ArchiveStore, PackError, PackJob, PackedArchive};
use crate::ports::registry::PluginRegistry;

/// The archive formats a download serves.
pub use crate::ports::archives::ArchiveKind;

/// What a download serves when neither `?format=` nor `Accept` asks for
/// another (the original's SDK reads gzip); what is packed ahead of time.
pub const DEFAULT_FORMAT: ArchiveKind = ArchiveKind::TarGz;

/// Rounds of staging a plugin that keeps changing under the packer before
/// giving up.
const PACK_ROUNDS: usize = 3;

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
            _ => DEFAULT_FORMAT,
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
            .map_err(|e| AppError::PackFailed(PackError::Failed(Box::new(e))))?;
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
    pub(super) content: ContentResolver,
    pub(super) stager: Stager,
    pub(super) allowlist: AllowlistGate,
    pub(super) registry: Arc<dyn PluginRegistry>,
    pub(super) archives: Arc<dyn ArchiveStore>,
    pub(super) fetch_timeout: Duration,
}

/// What packing ahead of time did for one plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// Packed and cached: its first download is a cached one.
    Packed,
    /// Already in the cache (the same content under another name, or
    /// packed by a download meanwhile).
    AlreadyPacked,
    /// The cache is full; packing ahead of time never evicts.
    CacheFull,
}

impl Downloader {
    /// Packs resolved content in `kind`: the archive, and the fetch slot
    /// whose disk holds it when the cache could not take it; `None` when a
    /// tree read in place changed meanwhile (nothing was cached).
    async fn pack(
        &self,
        resolved: &Resolved,
        kind: ArchiveKind,
        deadline: Instant,
        may_evict: bool,
    ) -> Result<Option<(PackedArchive, Option<FetchSlot>)>, AppError> {
        let (job, slot) = match &resolved.content {
            Content::Staged(staged) => {
                // Packed on the staging's own slot.
                let (dir, check) = match &staged.tree.in_place {
                    Some(place) => (place.dir.clone(), Some(place.check.clone())),
                    None => (staged.dir.path().to_owned(), None),
                };
                (
                    PackJob {
                        dir,
                        digest: resolved.digest.clone(),
                        kind,
                        disk: staged.slot.disk().clone(),
                        check,
                        may_evict,
                    },
                    staged.slot.clone(),
                )
            }
            Content::Remembered { name, fingerprint } => {
                let slot = self.stager.slots().acquire(deadline).await?;
                (
                    PackJob {
                        dir: self.registry.plugin_dir(name),
                        digest: resolved.digest.clone(),
                        kind,
                        disk: slot.disk().clone(),
                        check: Some(self.registry.unchanged_since(name, fingerprint)),
                        may_evict,
                    },
                    slot,
                )
            }
        };
        match self.archives.pack_job(job).await {
            // A cached archive's disk is the cache's: the slot is done.
            Ok(archive) => {
                let slot = (!archive.cached).then_some(slot);
                Ok(Some((archive, slot)))
            }
            Err(PackError::Changed) => Ok(None),
            Err(e) => Err(AppError::PackFailed(e)),
        }
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
        for round in 0..PACK_ROUNDS {
            // A plugin that changed under the packer is staged afresh, so
            // every check runs on what is served.
            let resolved = self.content.resolve(&source, deadline, round > 0).await?;
            check_name_matches(&resolved.name, &requested).map_err(AppError::NameMismatch)?;
            self.allowlist.enforce(workspace, &resolved.name).await?;
            let tag = etag(&resolved.digest, kind);
            let source_text = source.redacted();
            if matches_if_none_match(if_none_match, &tag) {
                return Ok(Download::NotModified {
                    name: resolved.name,
                    source: source_text,
                    etag: tag,
                });
            }
            let packed = match self.archives.cached(&resolved.digest, kind).await {
                Some(archive) => Some((archive, None)),
                None => self.pack(&resolved, kind, deadline, true).await?,
            };
            if let Some((archive, slot)) = packed {
                return Ok(Download::Archive {
                    name: resolved.name,
                    source: source_text,
                    etag: tag,
                    kind,
                    archive,
                    slot,
                });
            }
        }
        Err(AppError::PackFailed(PackError::Changed))
    }

    /// Packs registry plugin `name` in [`DEFAULT_FORMAT`] ahead of time,
    /// through the same staging pipeline (caps, hostile-tree refusals) a
    /// download runs, never evicting an archive to make room. Nothing is
    /// served: the policy checks of a download run when it comes.
    pub async fn prepare(&self, name: &PluginName) -> Result<Prepared, AppError> {
        if !self.archives.has_room() {
            return Ok(Prepared::CacheFull);
        }
        let source = Source::local(name);
        let deadline = Instant::now() + self.fetch_timeout;
        for round in 0..PACK_ROUNDS {
            let resolved = self.content.resolve(&source, deadline, round > 0).await?;
            if self
                .archives
                .cached(&resolved.digest, DEFAULT_FORMAT)
                .await
                .is_some()
            {
                return Ok(Prepared::AlreadyPacked);
            }
            match self
                .pack(&resolved, DEFAULT_FORMAT, deadline, false)
                .await?
            {
                Some((archive, _)) if archive.cached => return Ok(Prepared::Packed),
                Some(_) => return Ok(Prepared::CacheFull),
                None => {}
            }
        }
        Err(AppError::PackFailed(PackError::Changed))
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

    /// A check that always says the tree changed.
    struct Moved;

    impl crate::ports::staging::TreeCheck for Moved {
        fn unchanged(&self) -> Result<bool, crate::ports::BoxError> {
            Ok(false)
        }
    }

    #[tokio::test]
    async fn a_remembered_plugin_changed_while_packed_is_never_served_and_is_staged_again() {
        let digest = crate::domain::digest::tree_digest(&[]);
        let mut registry = MockPluginRegistry::new();
        registry
            .expect_fingerprint()
            .returning(|_| Ok(Some("before".to_owned())));
        let remembered = digest.clone();
        registry
            .expect_known_digest()
            .times(1)
            .withf(|name, fp| name.as_str() == "careful-bash" && fp == "before")
            .returning(move |_, _| Some(remembered.clone()));
        registry
            .expect_plugin_dir()
            .returning(|n| PathBuf::from("/registry").join(n.as_str()));
        registry
            .expect_unchanged_since()
            .times(1)
            .returning(|_, _| Arc::new(Moved));
        let mut archives = MockArchiveStore::new();
        archives.expect_cached().times(1).returning(|_, _| None);
        let packed_digest = digest.clone();
        archives
            .expect_pack_job()
            .times(1)
            .withf(move |job| {
                job.dir == std::path::Path::new("/registry/careful-bash")
                    && job.digest == packed_digest
                    && job.kind == ArchiveKind::TarZst
                    && job.may_evict
                    && job.check.as_ref().is_some_and(|c| !c.unchanged().unwrap())
            })
            .returning(|_| Err(PackError::Changed));
        let mut allowlists = MockAllowlistStore::new();
        allowlists.expect_allowlist().returning(|_| Ok(vec![]));
        let app = Ports {
            registry: Arc::new(registry),
            archives: Arc::new(archives),
            allowlists: Arc::new(allowlists),
            ..Ports::default()
        }
        .into_app();

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
        // The second round stages afresh (no `local` resolver here, so it
        // stops there): never the archive of a moving directory.
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

    #[tokio::test]
    async fn packing_ahead_of_time_stops_when_the_cache_is_full() {
        let mut archives = MockArchiveStore::new();
        archives.expect_has_room().returning(|| false);
        archives.expect_pack_job().never();
        let app = Ports {
            archives: Arc::new(archives),
            ..Ports::default()
        }
        .into_app();
        let name = PluginName::parse("careful-bash").unwrap();
        assert_eq!(
            app.download.prepare(&name).await.unwrap(),
            Prepared::CacheFull
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
