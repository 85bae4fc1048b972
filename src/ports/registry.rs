//! The curated local registry (`PLUGINS_DIR`, SPEC §3 `local://`, §5
//! listings).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::digest::TreeDigest;
use crate::domain::manifest::Manifest;
use crate::domain::name::PluginName;
use crate::domain::runtime::Runtime;
use crate::ports::BoxError;
use crate::ports::staging::TreeCheck;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry directory could not be read.
    #[error("plugin registry unavailable")]
    Unavailable(#[source] BoxError),
}

/// The registry's plugins as last seen, sorted by name. Cheap to clone:
/// every listing shares one.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Changes whenever the plugins (or any of their manifests) do: what
    /// was derived from one catalog holds for every catalog of the same
    /// generation.
    pub generation: u64,
    pub plugins: Arc<[Arc<Manifest>]>,
}

impl Catalog {
    /// A catalog of `plugins`, which must be sorted by name.
    pub fn new(generation: u64, plugins: Vec<Arc<Manifest>>) -> Self {
        Self {
            generation,
            plugins: plugins.into(),
        }
    }

    /// The plugins supporting `runtime` (all of them when `None`), in order.
    pub fn supporting<'a>(
        &'a self,
        runtime: Option<&'a Runtime>,
    ) -> impl Iterator<Item = &'a Manifest> + 'a {
        self.plugins
            .iter()
            .map(|m| m.as_ref())
            .filter(move |m| runtime.is_none_or(|r| m.supports(r)))
    }
}

#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait PluginRegistry: Send + Sync {
    /// Every valid plugin of the registry with its manifest info, sorted by
    /// name, as of at most a short, documented while ago (the registry is
    /// followed live). Entries that are not plugins (files, symlinks,
    /// invalid names) are skipped and logged, never errors.
    async fn list(&self) -> Result<Catalog, RegistryError>;

    /// A fingerprint of the plugin directory `name` as it is now (its
    /// paths, sizes, modification and change times), or None when there is
    /// no such plugin. Equal fingerprints let a download skip re-copying
    /// and re-hashing.
    async fn fingerprint(&self, name: &PluginName) -> Result<Option<String>, RegistryError>;

    /// Where the files of plugin `name` are: an unchanged plugin is packed
    /// from here (verified against its digest) instead of a staged copy.
    fn plugin_dir(&self, name: &PluginName) -> PathBuf;

    /// For a pack of plugin `name` read in place: the check that its
    /// directory still has `fingerprint`.
    fn unchanged_since(&self, name: &PluginName, fingerprint: &str) -> Arc<dyn TreeCheck>;

    /// The `h1` digest recorded for plugin `name` when its directory had
    /// `fingerprint`.
    fn known_digest(&self, name: &PluginName, fingerprint: &str) -> Option<TreeDigest>;

    /// Records that plugin `name`, with directory `fingerprint`, hashed to
    /// `digest`.
    fn record_digest(&self, name: &PluginName, fingerprint: &str, digest: &TreeDigest);

    /// Waits for the next plugin that appeared or changed (and then held
    /// still for a moment) since it was last handed out: what packing
    /// ahead of time works through.
    async fn next_changed(&self) -> PluginName;

    /// Plugins waiting to be handed out by [`Self::next_changed`].
    fn changed_pending(&self) -> usize;
}
