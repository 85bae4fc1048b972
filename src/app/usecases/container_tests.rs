//! The one mapping of container failures, as install, the installed list
//! and uninstall answer them.

use crate::app::testing::{answer, workspace};
use crate::app::usecases::test_fixtures::*;
use crate::ports::container::{ConfigsError, DeliveryError, EngineError, RemovalError};
use crate::ports::container::{MockWorkspaceConfigs, PluginMemory};
use crate::ports::receipts::MockReceiptStore;

#[tokio::test]
async fn a_container_that_stops_under_any_configs_call_is_503_not_running() {
    fn not_running() -> ConfigsError {
        ConfigsError::Engine(EngineError::NotRunning)
    }
    let expected = (503, "workspace container not running".to_owned(), Some(5));

    // Install: the "unchanged" check, then a delivery either way it ends.
    let mut configs = MockWorkspaceConfigs::new();
    configs
        .expect_is_installed()
        .returning(|_, _| Err(not_running()));
    configs.expect_deliver().never();
    // The receipt stays: nothing in the container changed.
    let h = to_delivery(receipts_with(Some(demo_digest())), configs);
    let state = h.app();
    assert_eq!(answer(install_demo(&state).await), expected, "is_installed");

    for outcome in [DeliveryError::NotPlaced, DeliveryError::Unknown] {
        let mut configs = MockWorkspaceConfigs::new();
        configs
            .expect_deliver()
            .returning(move |_, _, _| Err(outcome(not_running())));
        let h = to_delivery(receipts_with(None), configs);
        let state = h.app();
        assert_eq!(answer(install_demo(&state).await), expected, "deliver");
        assert_eq!(state.restarts().pending_count(), 0);
    }

    // Listing.
    let mut configs = MockWorkspaceConfigs::new();
    configs.expect_installed().returning(|_| Err(not_running()));
    let state = listing_state(configs, MockReceiptStore::new());
    assert_eq!(
        answer(installed(&state, &workspace("ws1", "x", "online")).await),
        expected,
        "installed"
    );

    // Uninstall: reading (the receipt stays), then removing.
    let mut configs = MockWorkspaceConfigs::new();
    configs
        .expect_read_plugin_memory()
        .returning(|_, _| Err(not_running()));
    configs.expect_remove().never();
    let state = uninstall_state(configs, receipts_without_any());
    assert_eq!(answer(uninstall_demo(&state).await), expected, "read");

    let mut configs = MockWorkspaceConfigs::new();
    configs
        .expect_read_plugin_memory()
        .returning(|_, _| Ok(Some(PluginMemory::default())));
    configs
        .expect_remove()
        .returning(|_, _| Err(RemovalError::Configs(not_running())));
    let state = uninstall_state(configs, dropping_receipts());
    assert_eq!(answer(uninstall_demo(&state).await), expected, "remove");
    assert_eq!(state.restarts().pending_count(), 0);
}

#[tokio::test]
async fn other_configs_failures_are_the_operations_own_500() {
    let failures: [fn() -> ConfigsError; 4] = [
        || ConfigsError::UnsafeLayout("/configs/plugins does not resolve to itself"),
        || ConfigsError::TooLarge("container output"),
        || ConfigsError::Failed("exit 7: tar: short read".into()),
        || ConfigsError::Engine(EngineError::Other("engine said 500".into())),
    ];
    for failure in failures {
        let mut configs = MockWorkspaceConfigs::new();
        configs
            .expect_deliver()
            .returning(move |_, _, _| Err(DeliveryError::NotPlaced(failure())));
        let h = to_delivery(receipts_with(None), configs);
        let state = h.app();
        let got = answer(install_demo(&state).await);
        assert_eq!(
            got,
            (500, "failed to copy plugin to container".into(), None)
        );

        let mut configs = MockWorkspaceConfigs::new();
        configs
            .expect_installed()
            .returning(move |_| Err(failure()));
        let state = listing_state(configs, MockReceiptStore::new());
        let got = answer(installed(&state, &workspace("ws1", "x", "online")).await);
        assert_eq!(got, (500, "failed to list installed plugins".into(), None));

        let mut configs = MockWorkspaceConfigs::new();
        configs
            .expect_read_plugin_memory()
            .returning(move |_, _| Err(failure()));
        let state = uninstall_state(configs, receipts_without_any());
        let got = answer(uninstall_demo(&state).await);
        assert_eq!(got, (500, "failed to remove plugin".into(), None));
    }
}

/// Receipts that hold none: an uninstall reads the plugin's (for its
/// audit event) before it touches the container.
fn receipts_without_any() -> MockReceiptStore {
    let mut receipts = MockReceiptStore::new();
    receipts.expect_receipt().returning(|_, _| Ok(None));
    receipts
}
