//! The compatibility preflight for a runtime change (SPEC §5): which
//! installed plugins keep working on the target runtime.

use super::installed::InstalledPlugins;
use crate::app::error::AppError;
use crate::domain::runtime::{Compatibility, Runtime, partition_compatibility};
use crate::domain::workspace::Workspace;

/// Partitions a workspace's installed plugins by a target runtime.
#[derive(Clone)]
pub struct CompatibilityCheck {
    pub(super) installed: InstalledPlugins,
}

impl CompatibilityCheck {
    /// The preflight for a runtime change (SPEC §5).
    pub async fn check(
        &self,
        workspace: &Workspace,
        target: Runtime,
    ) -> Result<Compatibility, AppError> {
        let plugins = self.installed.list(workspace).await?;
        Ok(partition_compatibility(
            plugins.into_iter().map(|(m, _)| m).collect(),
            target,
        ))
    }
}
