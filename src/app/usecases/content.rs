//! What a source's content is now, and its `h1` digest, doing as little
//! as it can: a registry plugin whose directory still has the fingerprint
//! its digest was remembered by is not read again; otherwise the staging
//! pipeline stages it (in place for a registry plugin) and, for a registry
//! plugin whose every file was settled, remembers the digest. Download and
//! `outdated` (SPEC §11) both ask here: one home for that rule.

use std::sync::Arc;

use tokio::time::Instant;

use super::staging::{Staged, Stager};
use crate::app::error::AppError;
use crate::domain::digest::TreeDigest;
use crate::domain::name::PluginName;
use crate::domain::source::{Source, parse_local_spec};
use crate::ports::registry::PluginRegistry;

/// Resolved content: a staged tree (a copy, or a registry plugin staged in
/// place), or a registry plugin whose directory still has the fingerprint
/// its digest was remembered by.
pub(super) enum Content {
    Staged(Box<Staged>),
    Remembered {
        name: PluginName,
        fingerprint: String,
    },
}

/// A source resolved to content and its digest.
pub(super) struct Resolved {
    pub(super) name: PluginName,
    pub(super) digest: TreeDigest,
    pub(super) content: Content,
}

/// Resolves sources to content and digests.
#[derive(Clone)]
pub struct ContentResolver {
    pub(super) stager: Stager,
    pub(super) registry: Arc<dyn PluginRegistry>,
}

impl ContentResolver {
    /// Resolves content: the remembered digest of an unchanged registry
    /// plugin, or (first time, after a change, or with `fresh`) the staging
    /// pipeline, in place for a registry plugin.
    pub(super) async fn resolve(
        &self,
        source: &Source,
        deadline: Instant,
        fresh: bool,
    ) -> Result<Resolved, AppError> {
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
            && let Some(digest) = self.registry.known_digest(name, fp)
        {
            return Ok(Resolved {
                name: name.clone(),
                digest,
                content: Content::Remembered {
                    name: name.clone(),
                    fingerprint: fp.clone(),
                },
            });
        }
        // The source goes to the pipeline as given, user info included, so its
        // grammar check refuses a credential exactly as install does (the
        // redacted form would silently drop it and fetch anyway).
        let given = format!("{}://{}", source.scheme(), source.spec());
        let staged = self
            .stager
            .stage_in_place(Some(&given), None, deadline)
            .await?;
        // Remembered only when the metadata vouches for every byte hashed
        // (a file changed just before may have had a write in flight).
        let settled = staged
            .tree
            .in_place
            .as_ref()
            .is_some_and(|place| place.check.settled());
        if let (Some(name), Some(fp), true) = (local, fingerprint, settled) {
            self.registry.record_digest(&name, &fp, &staged.digest);
        }
        Ok(Resolved {
            name: staged.name.clone(),
            digest: staged.digest.clone(),
            content: Content::Staged(Box::new(staged)),
        })
    }
}
