//! Install receipts (SPEC §5 "Receipts"): what was installed, from where,
//! with which content digest, by whom.

use chrono::{DateTime, Utc};

use crate::domain::digest::TreeDigest;
use crate::domain::name::{PluginName, WorkspaceId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub workspace_id: WorkspaceId,
    pub plugin: PluginName,
    /// The normalized source, credentials removed.
    pub source: String,
    pub digest: TreeDigest,
    pub size_bytes: u64,
    pub installed_at: DateTime<Utc>,
    /// `admin` or the id of the workspace token that installed it.
    pub installed_by: String,
}

impl Receipt {
    /// The "unchanged" rule: the same content is already installed (the
    /// caller also checks that the directory is still there).
    pub fn matches(&self, digest: &TreeDigest) -> bool {
        &self.digest == digest
    }
}
