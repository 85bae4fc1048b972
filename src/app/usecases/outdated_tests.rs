use std::sync::Arc;

use super::*;
use crate::app::testing::workspace;
use crate::app::usecases::test_fixtures::*;
use crate::domain::receipt::Provenance;
use crate::domain::updates::UpdateStatus;
use crate::ports::container::MockWorkspaceConfigs;
use crate::ports::receipts::MockReceiptStore;
use crate::ports::resolver::FetchError;

fn receipts(revision: &'static str) -> MockReceiptStore {
    let mut receipts = MockReceiptStore::new();
    receipts.expect_receipts().returning(move |_| {
        let mut r = receipt(demo_digest());
        r.source = "fake://demo".into();
        r.provenance = Some(Provenance {
            revision: Some(revision.into()),
            version: "1.0.0".into(),
            files: Vec::new(),
        });
        Ok(vec![r])
    });
    receipts
}

async fn status_of(h: Harness) -> UpdateStatus {
    let entries = h
        .app()
        .outdated
        .check(&workspace("ws1", "claude_code", "online"))
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    entries[0].check.status
}

#[tokio::test]
async fn a_ref_still_at_the_recorded_revision_is_current_and_a_moved_one_outdated() {
    let h = to_delivery(receipts(FAKE_REVISION), MockWorkspaceConfigs::new());
    assert_eq!(status_of(h).await, UpdateStatus::Current);
    let h = to_delivery(
        receipts("0000000000000000000000000000000000000000"),
        MockWorkspaceConfigs::new(),
    );
    assert_eq!(status_of(h).await, UpdateStatus::Outdated);
}

#[tokio::test]
async fn a_failed_lookup_is_unavailable_with_a_fixed_reason_never_an_error() {
    let mut resolver = FakeResolver::plugin(&[("plugin.yaml", YAML)]);
    resolver.fail = Some(|| FetchError::Other("secret-token https://internal/path".into()));
    let mut h = harness(resolver);
    h.ports.receipts = Arc::new(receipts(FAKE_REVISION));
    let status = status_of(h).await;
    assert_eq!(status, UpdateStatus::Unavailable(Unavailable::Unreachable));
    let reason = status.reason().unwrap();
    assert!(
        !reason.contains("secret") && !reason.contains("internal"),
        "{reason}"
    );
    let mut resolver = FakeResolver::plugin(&[("plugin.yaml", YAML)]);
    resolver.fail = Some(|| FetchError::NotFound);
    let mut h = harness(resolver);
    h.ports.receipts = Arc::new(receipts(FAKE_REVISION));
    assert_eq!(
        status_of(h).await,
        UpdateStatus::Unavailable(Unavailable::Gone)
    );
}
