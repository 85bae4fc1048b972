//! The compatibility preflight for a runtime change (SPEC §5): which
//! installed plugins keep working on the target runtime.

use super::installed::InstalledPlugins;
use crate::app::error::AppError;
use crate::domain::compatibility::{Compatibility, partition_compatibility};
use crate::domain::runtime::Runtime;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::app::testing::workspace;
    use crate::app::usecases::Ports;
    use crate::domain::name::PluginName;
    use crate::ports::container::{
        ContainerId, ContainerState, InstalledEntry, MockContainerEngine, MockWorkspaceConfigs,
    };
    use crate::ports::receipts::MockReceiptStore;

    #[tokio::test]
    async fn the_installed_plugins_are_split_by_whether_they_support_the_target() {
        let mut engine = MockContainerEngine::new();
        engine
            .expect_state()
            .returning(|_| ContainerState::Running {
                id: ContainerId::new("cid"),
            });
        let mut configs = MockWorkspaceConfigs::new();
        configs.expect_installed().returning(|_| {
            Ok([
                ("claude-only", "runtimes: [claude_code]\n"),
                ("any", "version: 1.0.0\n"),
                ("codex-only", "runtimes: [codex]\n"),
            ]
            .map(|(name, yaml)| InstalledEntry {
                name: PluginName::parse(name).unwrap(),
                manifest_yaml: Some(yaml.as_bytes().to_vec()),
            })
            .to_vec())
        });
        let mut receipts = MockReceiptStore::new();
        receipts.expect_receipts().returning(|_| Ok(vec![]));
        let app = Ports {
            engine: Arc::new(engine),
            configs: Arc::new(configs),
            receipts: Arc::new(receipts),
            ..Ports::default()
        }
        .into_app();
        let report = app
            .compatibility
            .check(
                &workspace("ws1", "claude_code", "online"),
                Runtime::parse("codex").unwrap(),
            )
            .await
            .unwrap();
        let names = |list: &[crate::domain::manifest::Manifest]| {
            list.iter().map(|m| m.name.to_string()).collect::<Vec<_>>()
        };
        assert_eq!(names(&report.compatible), ["any", "codex-only"]);
        assert_eq!(names(&report.incompatible), ["claude-only"]);
        assert!(!report.all_compatible());
    }
}
