//! Verify over mocked ports: the order of its checks and what it asks of
//! the container (an intent, with the staging caps), never a script.

use std::sync::Arc;

use mockall::predicate::*;

use crate::app::testing::{answer, policy, workspace};
use crate::app::usecases::Ports;
use crate::app::usecases::test_fixtures::*;
use crate::domain::digest::{FileDigest, sha256, tree_digest};
use crate::domain::drift::{DriftStatus, InstalledTree};
use crate::domain::receipt::Provenance;
use crate::ports::container::{ConfigsError, ContainerState, MockWorkspaceConfigs, TreeReadLimits};
use crate::ports::receipts::MockReceiptStore;

fn files() -> Vec<FileDigest> {
    vec![FileDigest {
        path: "plugin.yaml".into(),
        sha256: sha256(YAML.as_bytes()),
    }]
}

fn receipts_of(provenance: bool) -> MockReceiptStore {
    let mut receipts = MockReceiptStore::new();
    receipts.expect_receipt().returning(move |_, _| {
        let mut r = receipt(tree_digest(&files()));
        r.provenance = provenance.then(|| Provenance {
            revision: None,
            version: "1.0.0".into(),
            files: files(),
        });
        Ok(Some(r))
    });
    receipts
}

fn no_receipt() -> MockReceiptStore {
    let mut receipts = MockReceiptStore::new();
    receipts.expect_receipt().returning(|_, _| Ok(None));
    receipts
}

fn configs_holding(tree: Option<InstalledTree>) -> MockWorkspaceConfigs {
    let mut configs = MockWorkspaceConfigs::new();
    let caps = TreeReadLimits {
        max_bytes: policy().max_dir_bytes,
        max_entries: policy().max_entries,
    };
    configs
        .expect_hash_installed()
        .with(eq(cid()), eq(demo()), eq(caps))
        .times(1)
        .returning(move |_, _, _| Ok(tree.clone()));
    configs
}

async fn verify_demo(
    state: &crate::app::usecases::UseCases,
) -> Result<crate::domain::drift::Drift, crate::app::error::AppError> {
    state
        .verify
        .verify(&workspace("ws1", "x", "online"), "demo")
        .await
}

#[tokio::test]
async fn an_edited_file_is_named_against_the_receipts_files_read_under_the_staging_caps() {
    let edited = InstalledTree {
        files: vec![FileDigest {
            path: "plugin.yaml".into(),
            sha256: sha256(b"edited"),
        }],
        others: vec![],
        complete: true,
    };
    let state = listing_state(configs_holding(Some(edited)), receipts_of(true));
    let drift = verify_demo(&state).await.unwrap();
    assert_eq!(drift.status, DriftStatus::Modified);
    assert_eq!(drift.changed, ["plugin.yaml"]);
    assert_eq!(drift.expected_digest, Some(tree_digest(&files())));
}

#[tokio::test]
async fn a_receipt_without_a_directory_is_missing_and_neither_is_not_installed() {
    let state = listing_state(configs_holding(None), receipts_of(true));
    assert_eq!(
        verify_demo(&state).await.unwrap().status,
        DriftStatus::Missing
    );

    let state = listing_state(configs_holding(None), no_receipt());
    assert_eq!(
        answer(verify_demo(&state).await),
        (404, "plugin \"demo\" is not installed".into(), None)
    );
}

#[tokio::test]
async fn a_directory_without_a_receipt_is_untracked_and_an_old_receipt_compares_digests() {
    let same = InstalledTree {
        files: files(),
        others: vec![],
        complete: true,
    };
    let state = listing_state(configs_holding(Some(same.clone())), no_receipt());
    assert_eq!(
        verify_demo(&state).await.unwrap().status,
        DriftStatus::Untracked
    );
    let state = listing_state(configs_holding(Some(same)), receipts_of(false));
    assert_eq!(verify_demo(&state).await.unwrap().status, DriftStatus::Ok);
}

#[tokio::test]
async fn a_bad_name_a_stopped_and_an_unknown_container_answer_before_the_container_is_read() {
    for (engine, expected) in [
        (
            ContainerState::Stopped,
            (503, "workspace container not running"),
        ),
        (
            ContainerState::Unknown,
            (503, "container engine unavailable"),
        ),
    ] {
        let mut configs = MockWorkspaceConfigs::new();
        configs.expect_hash_installed().never();
        let state = Ports {
            engine: Arc::new(engine_in(engine)),
            configs: Arc::new(configs),
            ..Ports::default()
        }
        .into_app();
        let (status, message, _) = answer(verify_demo(&state).await);
        assert_eq!((status, message.as_str()), expected);
    }
    let state = Ports::default().into_app();
    let result = state
        .verify
        .verify(&workspace("ws1", "x", "online"), "../etc")
        .await;
    assert_eq!(answer(result).0, 400);
}

#[tokio::test]
async fn a_layout_the_agent_broke_is_a_500_that_names_no_path() {
    let mut configs = MockWorkspaceConfigs::new();
    configs.expect_hash_installed().returning(|_, _, _| {
        Err(ConfigsError::UnsafeLayout(
            "the plugin's directory does not resolve to itself",
        ))
    });
    let state = listing_state(configs, receipts_of(true));
    assert_eq!(
        answer(verify_demo(&state).await),
        (500, "failed to read the installed plugin".into(), None)
    );
}
