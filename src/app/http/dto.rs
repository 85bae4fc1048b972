//! Response and request bodies shared by several resources.

use poem_openapi::Object;

use crate::domain::manifest::Manifest;
use crate::domain::runtime::Runtime;

/// A plugin's manifest info. Strings default to `""`, lists to `[]`.
#[derive(Debug, Clone, Object)]
pub struct PluginInfo {
    /// The plugin's directory name (always wins over the manifest's `name:`).
    pub name: String,
    pub version: String,
    pub description: String,
    pub author: String,
    pub tags: Vec<String>,
    /// Skills the plugin declares (agentskills.io).
    pub skills: Vec<String>,
    /// Runtimes the plugin declares; empty means every runtime.
    pub runtimes: Vec<String>,
    /// Whether the plugin supports the workspace's runtime (where computed).
    #[oai(skip_serializing_if_is_none)]
    pub supported_on_runtime: Option<bool>,
}

impl PluginInfo {
    pub fn from_manifest(m: Manifest, runtime: Option<&Runtime>) -> Self {
        Self {
            supported_on_runtime: runtime.map(|r| m.supports(r)),
            name: m.name.to_string(),
            version: m.version,
            description: m.description,
            author: m.author,
            tags: m.tags,
            skills: m.skills,
            runtimes: m.runtimes,
        }
    }
}
