//! Download for external agents (SPEC §5 Download): the staged plugin as a
//! deterministic tarball. Every policy check runs on every request; what a
//! repeated download of unchanged content skips is the work: re-packing
//! (content-addressed cache) and, for the local registry, re-copying and
//! re-hashing while the directory's fingerprint is unchanged.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::time::Instant;

use crate::app::error::AppError;
use crate::app::plugins::enforce_allowlist;
use crate::app::staging::{Staged, stage};
use crate::app::state::AppState;
use crate::domain::digest::TreeDigest;
use crate::domain::name::PluginName;
use crate::domain::policy::check_name_matches;
use crate::domain::source::{Source, parse_local_spec};
use crate::domain::staging::require_source;
use crate::domain::workspace::Workspace;
use crate::ports::archives::{ArchiveKind, PackedArchive};

/// Digests of local plugins by directory fingerprint.
#[derive(Default)]
pub struct LocalDigests {
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
    },
}

/// Resolves content: the memoized digest of an unchanged local plugin, or
/// the staging pipeline (whose directory then feeds the packer).
async fn resolve(
    state: &AppState,
    source: &Source,
    deadline: Instant,
) -> Result<(PluginName, TreeDigest, Option<Staged>), AppError> {
    let local = (source.scheme() == "local")
        .then(|| parse_local_spec(source.spec()).ok())
        .flatten();
    let fingerprint = match &local {
        Some(name) => state
            .registry
            .fingerprint(name)
            .await
            .map_err(AppError::Registry)?,
        None => None,
    };
    if let (Some(name), Some(fp)) = (&local, &fingerprint)
        && let Some(digest) = state.local_digests.get(name, fp)
    {
        return Ok((name.clone(), digest, None));
    }
    let staged = stage(state, Some(&source.to_string()), None, deadline).await?;
    if let (Some(name), Some(fp)) = (local, fingerprint) {
        state.local_digests.put(name, fp, staged.digest.clone());
    }
    Ok((staged.name.clone(), staged.digest.clone(), Some(staged)))
}

/// Download (SPEC §5), after auth and the workspace record.
pub async fn download(
    state: &AppState,
    workspace: &Workspace,
    raw_name: &str,
    source: Option<&str>,
    kind: ArchiveKind,
    if_none_match: Option<&str>,
) -> Result<Download, AppError> {
    let requested = PluginName::parse(raw_name).map_err(|_| AppError::InvalidPluginName)?;
    let source = match source.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => require_source(Some(s)).map_err(AppError::Staging)?,
        None => Source::local(&requested),
    };
    let deadline = Instant::now() + state.policy.fetch_timeout;
    let (resolved, digest, staged) = resolve(state, &source, deadline).await?;
    check_name_matches(&resolved, &requested).map_err(AppError::NameMismatch)?;
    enforce_allowlist(state, workspace, &resolved).await?;
    let tag = etag(&digest, kind);
    let source_text = source.redacted();
    if matches_if_none_match(if_none_match, &tag) {
        return Ok(Download::NotModified {
            name: resolved,
            source: source_text,
            etag: tag,
        });
    }
    let archive = match state.archives.cached(&digest, kind).await {
        Some(archive) => archive,
        None => {
            // A memoized digest whose archive was evicted: stage again.
            let staged = match staged {
                Some(staged) => staged,
                None => stage(state, Some(&source.to_string()), None, deadline).await?,
            };
            state
                .archives
                .pack(staged.dir.path(), &staged.digest, kind)
                .await
                .map_err(AppError::PackFailed)?
        }
    };
    Ok(Download::Archive {
        name: resolved,
        source: source_text,
        etag: tag,
        kind,
        archive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
