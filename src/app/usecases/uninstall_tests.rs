//! Uninstall over mocked ports: the order of its reads and removals, the
//! stripped memory file, and the receipt it drops.

use std::sync::Arc;
use std::time::Duration;

use mockall::Sequence;
use mockall::predicate::*;

use crate::app::error::AppError;
use crate::app::testing::{answer, policy, workspace};
use crate::app::usecases::test_fixtures::*;
use crate::app::usecases::{Policy, Ports, UseCases};
use crate::domain::memory::PluginText;
use crate::domain::name::PluginName;
use crate::ports::container::{ContainerState, Removal, RemovalError};
use crate::ports::container::{
    MemoryFile, MockContainerEngine, MockWorkspaceConfigs, PluginMemory,
};
use crate::ports::receipts::MockReceiptStore;

#[tokio::test]
async fn uninstall_refuses_external_workspaces_and_bad_names_before_the_engine() {
    let mut engine = MockContainerEngine::new();
    engine.expect_state().never();
    let state = Ports {
        engine: Arc::new(engine),
        ..Ports::default()
    }
    .into_app();
    let result = uninstall(&state, &workspace("ws1", "external", "online"), "../x").await;
    assert!(
        matches!(result, Err(AppError::Guard(_))),
        "the guard comes before the name: {result:?}"
    );
    let result = uninstall(&state, &workspace("ws1", "x", "online"), "../x").await;
    assert!(matches!(result, Err(AppError::InvalidPluginName)));
}

#[tokio::test]
async fn uninstall_in_a_stopped_or_unknown_container_is_a_distinct_503_and_reads_nothing() {
    for (state, expected) in [
        (ContainerState::Stopped, "workspace container not running"),
        (ContainerState::Unknown, "container engine unavailable"),
    ] {
        let mut configs = MockWorkspaceConfigs::new();
        configs.expect_read_plugin_memory().never();
        configs.expect_remove().never();
        let app = Ports {
            engine: Arc::new(engine_in(state.clone())),
            configs: Arc::new(configs),
            ..Ports::default()
        }
        .into_app();
        assert_eq!(
            answer(uninstall_demo(&app).await),
            (503, expected.to_owned(), Some(5)),
            "{state:?}"
        );
    }
}

#[tokio::test]
async fn uninstall_of_a_plugin_that_is_not_there_is_404_drops_a_stale_receipt_and_does_not_restart()
{
    let mut configs = MockWorkspaceConfigs::new();
    configs
        .expect_read_plugin_memory()
        .with(eq(cid()), eq(demo()))
        .times(1)
        .returning(|_, _| Ok(None));
    configs.expect_remove().never();
    let state = uninstall_state(configs, dropping_receipts());
    let result = uninstall_demo(&state).await;
    assert_eq!(
        answer(result),
        (404, "plugin \"demo\" is not installed".into(), None)
    );
    assert_eq!(state.restarts().pending_count(), 0);
}

#[tokio::test]
async fn a_plugin_gone_between_the_read_and_the_removal_is_404_without_restart() {
    let mut configs = MockWorkspaceConfigs::new();
    configs
        .expect_read_plugin_memory()
        .returning(|_, _| Ok(Some(PluginMemory::default())));
    configs
        .expect_remove()
        .times(1)
        .returning(|_, _| Err(RemovalError::NotInstalled));
    let state = uninstall_state(configs, dropping_receipts());
    assert_eq!(answer(uninstall_demo(&state).await).0, 404);
    assert_eq!(state.restarts().pending_count(), 0);
}

#[tokio::test]
async fn uninstall_reads_first_then_asks_for_the_stripped_claude_md_the_valid_skills_and_a_restart()
{
    const P: &str = "molecule-ai-plugin-superpowers";
    let plugin = PluginName::parse(P).unwrap();
    let mut seq = Sequence::new();
    let mut configs = MockWorkspaceConfigs::new();
    let mut receipts = MockReceiptStore::new();
    receipts
        .expect_receipt()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(None));
    configs
        .expect_read_plugin_memory()
        .with(eq(cid()), eq(plugin.clone()))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| {
            // As the adapter reads it: sources sorted, README left out.
            Ok(Some(PluginMemory {
                manifest_yaml: Some(fixture(&format!("plugins/{P}/plugin.yaml")).into_bytes()),
                sources: ["CLAUDE.md", "known-issues.md"]
                    .into_iter()
                    .map(|file| PluginText {
                        path: file.into(),
                        content: fixture(&format!("plugins/{P}/{file}")),
                    })
                    .collect(),
                memory_file: Some(MemoryFile {
                    content: fixture("CLAUDE.before.md").into_bytes(),
                    mode: 0o640,
                }),
            }))
        });
    let expected_plugin = plugin.clone();
    receipts
        .expect_delete_receipt()
        .withf(move |_, p, e| *p == expected_plugin && e.is_none())
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(true));
    let expected = Removal {
        plugin: plugin.clone(),
        memory_file: Some(MemoryFile {
            content: fixture("CLAUDE.after-uninstall-molecule-ai-plugin-superpowers.md")
                .into_bytes(),
            mode: 0o640,
        }),
        skills: [
            "executing-plans",
            "systematic-debugging",
            "test-driven-development",
            "verification-before-completion",
            "writing-plans",
        ]
        .into_iter()
        .map(|s| PluginName::parse(s).unwrap())
        .collect(),
    };
    configs
        .expect_remove()
        .with(eq(cid()), eq(expected))
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    let removed = plugin.clone();
    receipts
        .expect_delete_receipt()
        .withf(move |_, p, e| *p == removed && e.is_some())
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(false));
    let state = uninstall_state(configs, receipts);
    let name = uninstall(&state, &workspace("ws1", "x", "online"), P)
        .await
        .unwrap();
    assert_eq!(name, plugin);
    assert_eq!(state.restarts().pending_count(), 1);
}

#[tokio::test]
async fn a_half_deleted_plugin_still_uninstalls_and_invalid_skills_are_never_paths() {
    let cases = [
        // No manifest left: no skills, still removed.
        (PluginMemory::default(), vec![]),
        (
            memory_with_manifest("skills: [../../etc, ok-skill, 'a/b', '..', '.', '', 7]\n"),
            vec![PluginName::parse("ok-skill").unwrap()],
        ),
        // A manifest that does not parse declares no skills.
        (memory_with_manifest("skills: [unclosed\n"), vec![]),
    ];
    for (memory, skills) in cases {
        let mut configs = MockWorkspaceConfigs::new();
        configs
            .expect_read_plugin_memory()
            .return_once(move |_, _| Ok(Some(memory)));
        let expected = Removal {
            plugin: demo(),
            memory_file: None,
            skills: skills.clone(),
        };
        configs
            .expect_remove()
            .with(always(), eq(expected))
            .times(1)
            .returning(|_, _| Ok(()));
        let state = uninstall_state(configs, dropping_receipts());
        assert_eq!(uninstall_demo(&state).await.unwrap(), demo(), "{skills:?}");
        assert_eq!(state.restarts().pending_count(), 1);
    }
}

#[tokio::test]
async fn claude_md_is_rewritten_only_when_a_block_of_the_plugin_goes_keeping_its_mode() {
    let rule = PluginText {
        path: "rules/a.md".into(),
        content: "Be careful.\n".into(),
    };
    // As the runtime's writer appends it (SPEC §2).
    let with_block = "user notes\n# Plugin: demo / rule: a.md\n\nBe careful.\n";
    let cases: [(&[u8], Option<&[u8]>); 3] = [
        (with_block.as_bytes(), Some(b"user notes\n")),
        // No block of this plugin: left as it is.
        (b"user notes\n# Plugin: other / rule: a.md\n\nx\n", None),
        // Not UTF-8: left as it is, the removal still happens.
        (b"\xff\xfe notes\n", None),
    ];
    for (before, after) in cases {
        let memory = PluginMemory {
            manifest_yaml: None,
            sources: vec![rule.clone()],
            memory_file: Some(MemoryFile {
                content: before.to_vec(),
                mode: 0o600,
            }),
        };
        let mut configs = MockWorkspaceConfigs::new();
        configs
            .expect_read_plugin_memory()
            .return_once(move |_, _| Ok(Some(memory)));
        let expected = Removal {
            plugin: demo(),
            memory_file: after.map(|content| MemoryFile {
                content: content.to_vec(),
                mode: 0o600,
            }),
            skills: vec![],
        };
        configs
            .expect_remove()
            .with(always(), eq(expected))
            .times(1)
            .returning(|_, _| Ok(()));
        let state = uninstall_state(configs, dropping_receipts());
        let result = uninstall_demo(&state).await;
        assert!(
            result.is_ok(),
            "{:?}: {result:?}",
            String::from_utf8_lossy(before)
        );
    }
}

#[tokio::test]
async fn an_incomplete_removal_is_500_drops_the_receipt_and_does_not_restart() {
    let mut configs = MockWorkspaceConfigs::new();
    configs
        .expect_read_plugin_memory()
        .returning(|_, _| Ok(Some(memory_with_manifest("skills: [review]\n"))));
    configs.expect_remove().times(1).returning(|_, _| {
        Err(RemovalError::Incomplete(
            "rm: can't remove '/configs/plugins/demo/root-owned': Permission denied".into(),
        ))
    });
    let state = uninstall_state(configs, dropping_receipts());
    let result = uninstall_demo(&state).await;
    assert_eq!(
        answer(result),
        (500, "failed to remove plugin".into(), None)
    );
    assert_eq!(state.restarts().pending_count(), 0);
}

#[tokio::test]
async fn the_uninstall_deadline_is_504_with_the_receipt_dropped_and_no_restart() {
    let mut inner = MockWorkspaceConfigs::new();
    inner
        .expect_read_plugin_memory()
        .returning(|_, _| Ok(Some(PluginMemory::default())));
    // Never released: the removal outlives the deadline.
    let held = Held::new(inner);
    let started = held.started.clone();
    let state = Ports {
        engine: Arc::new(running_engine()),
        configs: Arc::new(held),
        receipts: Arc::new(dropping_receipts()),
        ..Ports::default()
    };
    let state = UseCases::build(
        state,
        Policy {
            fetch_timeout: Duration::from_millis(500),
            ..policy()
        },
    );
    let result = uninstall_demo(&state).await;
    assert!(fired(&started), "the deadline fired during the removal");
    assert_eq!(
        answer(result),
        (504, "plugin uninstall timed out".into(), None)
    );
    assert_eq!(state.restarts().pending_count(), 0);
}
