//! The installed list over mocked ports.

use std::sync::Arc;

use mockall::predicate::*;

use crate::app::testing::{answer, workspace};
use crate::app::usecases::Ports;
use crate::app::usecases::test_fixtures::*;
use crate::domain::digest::TreeDigest;
use crate::domain::name::PluginName;
use crate::ports::container::ContainerState;
use crate::ports::container::{InstalledEntry, MockWorkspaceConfigs};
use crate::ports::receipts::MockReceiptStore;
use crate::ports::store::StoreError;

#[tokio::test]
async fn a_stopped_container_lists_nothing_without_asking_it() {
    let mut configs = MockWorkspaceConfigs::new();
    configs.expect_installed().never();
    let state = Ports {
        engine: Arc::new(engine_in(ContainerState::Stopped)),
        configs: Arc::new(configs),
        ..Ports::default()
    }
    .into_app();
    let listed = installed(&state, &workspace("ws1", "x", "online"))
        .await
        .unwrap();
    assert!(listed.is_empty());

    let state = Ports {
        engine: Arc::new(engine_in(ContainerState::Unknown)),
        ..Ports::default()
    }
    .into_app();
    let result = installed(&state, &workspace("ws1", "x", "online")).await;
    assert_eq!(answer(result).0, 503, "unknown is never an empty list");
}

#[tokio::test]
async fn the_listing_pairs_manifests_with_receipt_digests_and_survives_a_receipt_outage() {
    let entries = || {
        Ok(vec![
            InstalledEntry {
                name: demo(),
                manifest_yaml: Some(b"version: 2.0.0\n".to_vec()),
            },
            InstalledEntry {
                name: PluginName::parse("hand-made").unwrap(),
                manifest_yaml: None,
            },
        ])
    };
    let mut configs = MockWorkspaceConfigs::new();
    configs
        .expect_installed()
        .with(eq(cid()))
        .returning(move |_| entries());
    let mut receipts = MockReceiptStore::new();
    receipts
        .expect_receipts()
        .times(1)
        .returning(|_| Ok(vec![receipt(demo_digest())]));
    let state = listing_state(configs, receipts);
    let listed = installed(&state, &workspace("ws1", "x", "online"))
        .await
        .unwrap();
    let seen: Vec<(&str, &str, Option<&TreeDigest>)> = listed
        .iter()
        .map(|(m, r)| {
            (
                m.name.as_str(),
                m.version.as_str(),
                r.as_ref().map(|r| &r.digest),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("demo", "2.0.0", Some(&demo_digest())),
            ("hand-made", "", None)
        ]
    );

    let mut configs = MockWorkspaceConfigs::new();
    configs.expect_installed().returning(move |_| entries());
    let mut receipts = MockReceiptStore::new();
    receipts
        .expect_receipts()
        .returning(|_| Err(StoreError::Unavailable("down".into())));
    let state = listing_state(configs, receipts);
    let listed = installed(&state, &workspace("ws1", "x", "online"))
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|(_, r)| r.is_none()), "receipts omitted");
}
