//! Install receipts (SPEC §5 "Receipts", §11): what was installed, from
//! where, with which content digest, by whom, and its provenance.

use chrono::{DateTime, Utc};

use crate::domain::digest::{FileDigest, TreeDigest};
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
    /// What the install recorded of where the content came from (SPEC
    /// §11); `None` for receipts written before provenance was recorded.
    pub provenance: Option<Provenance>,
}

/// Where an installed plugin's content came from, and what it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// The commit a `github` ref resolved to, the archive's sha256 for an
    /// `https` source; `None` for a source with no revision (`local`).
    pub revision: Option<String>,
    /// `version` from `plugin.yaml`; `""` when it has none.
    pub version: String,
    /// Every regular file with its SHA-256, sorted by path: the list that
    /// made `digest`, so drift can name paths.
    pub files: Vec<FileDigest>,
}

impl Receipt {
    /// The "unchanged" rule: the same content is already installed (the
    /// caller also checks that the directory is still there).
    pub fn matches(&self, digest: &TreeDigest) -> bool {
        &self.digest == digest
    }

    /// The recorded revision, if any.
    pub fn revision(&self) -> Option<&str> {
        self.provenance.as_ref()?.revision.as_deref()
    }

    /// The recorded version; `None` on a receipt from before provenance.
    pub fn version(&self) -> Option<&str> {
        self.provenance.as_ref().map(|p| p.version.as_str())
    }
}
