//! Response and request bodies shared by several resources.

use poem_openapi::Object;

use crate::app::error::AppError;
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

/// A page's size when the client names none.
const DEFAULT_PAGE: u64 = 100;
/// The largest page a client may ask for.
const MAX_PAGE: u64 = 500;

/// The message of a `cursor` that no page handed out.
pub const CURSOR_REFUSAL: &str = "cursor is not a value returned as next_cursor";

/// A list route's `limit`: 1–500, default 100.
pub fn page_limit(raw: Option<&str>) -> Result<u64, AppError> {
    match raw {
        None => Ok(DEFAULT_PAGE),
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                AppError::InvalidQuery("limit must be a whole number from 1 to 500".into())
            }),
    }
}
