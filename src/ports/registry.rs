//! The curated local registry (`PLUGINS_DIR`, SPEC §3 `local://`).

use std::path::PathBuf;

use async_trait::async_trait;

use crate::domain::manifest::Manifest;
use crate::domain::name::PluginName;
use crate::ports::BoxError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry directory could not be read.
    #[error("plugin registry unavailable")]
    Unavailable(#[source] BoxError),
}

#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait PluginRegistry: Send + Sync {
    /// Every valid plugin of the registry with its manifest info, sorted by
    /// name. Entries that are not plugins (files, symlinks, invalid names)
    /// are skipped and logged, never errors.
    async fn list(&self) -> Result<Vec<Manifest>, RegistryError>;

    /// A fingerprint of the plugin directory `name` (its paths, sizes,
    /// modification and change times), or None when there is no such
    /// plugin. Equal fingerprints let a download skip re-copying and
    /// re-hashing.
    async fn fingerprint(&self, name: &PluginName) -> Result<Option<String>, RegistryError>;

    /// Where the files of plugin `name` are: an unchanged plugin is packed
    /// from here (verified against its digest) instead of a staged copy.
    fn plugin_dir(&self, name: &PluginName) -> PathBuf;
}
