use std::sync::Arc;

use super::*;
use crate::app::testing::{RecordedAudit, workspace};
use crate::app::usecases::test_fixtures::*;
use crate::domain::audit::AuditOutcome;
use crate::domain::digest::{FileDigest, sha256};
use crate::domain::receipt::Provenance;
use crate::ports::container::MockWorkspaceConfigs;
use crate::ports::receipts::MockReceiptStore;

fn file(path: &str, content: &str) -> FileDigest {
    FileDigest {
        path: path.into(),
        sha256: sha256(content.as_bytes()),
    }
}

/// A receipt of the demo plugin installed from `fake://demo`, with its
/// files when `files` is given.
fn recorded(files: Option<Vec<FileDigest>>) -> MockReceiptStore {
    let mut receipts = MockReceiptStore::new();
    receipts.expect_receipt().returning(move |_, _| {
        let mut r = receipt(other_digest());
        r.source = "fake://demo".into();
        r.provenance = files.clone().map(|files| Provenance {
            revision: Some("old".into()),
            version: "0.9.0".into(),
            files,
        });
        Ok(Some(r))
    });
    receipts
}

#[tokio::test]
async fn a_dry_run_stages_and_diffs_and_touches_no_container_receipt_or_log() {
    // No expectations on the configs: any call into the container panics.
    let mut h = to_delivery(
        recorded(Some(vec![file("plugin.yaml", "old"), file("gone.md", "x")])),
        MockWorkspaceConfigs::new(),
    );
    let audit = Arc::new(RecordedAudit::default());
    h.ports.audit = audit.clone();
    let state = h.app();
    let updated = state
        .update
        .update(
            &Principal::Admin,
            &workspace("ws1", "claude_code", "online"),
            "demo",
            true,
        )
        .await
        .unwrap();
    assert_eq!(updated.installed, None);
    assert_eq!(updated.from.revision.as_deref(), Some("old"));
    assert_eq!(updated.to.revision.as_deref(), Some(FAKE_REVISION));
    assert_eq!(updated.to.digest, demo_digest());
    let diff = updated.diff.unwrap();
    assert_eq!(diff.changed, ["plugin.yaml"]);
    assert_eq!(diff.removed, ["gone.md"]);
    assert!(diff.added.is_empty());
    assert!(audit.events().is_empty(), "a dry run writes no event");
    assert!(
        !state
            .restarts()
            .restart_pending(&crate::domain::name::WorkspaceId::parse("ws1").unwrap())
    );
}

#[tokio::test]
async fn an_old_receipt_without_files_updates_and_says_its_diff_is_unknown() {
    let h = to_delivery(recorded(None), MockWorkspaceConfigs::new());
    let updated = h
        .app()
        .update
        .update(
            &Principal::Admin,
            &workspace("ws1", "claude_code", "online"),
            "demo",
            true,
        )
        .await
        .unwrap();
    assert_eq!(updated.diff, None);
    assert_eq!(updated.from.revision, None);
}

#[tokio::test]
async fn no_receipt_is_no_install_record_recorded_as_a_failed_update_unless_a_dry_run() {
    let mut h = to_delivery(receipts_with(None), MockWorkspaceConfigs::new());
    let audit = Arc::new(RecordedAudit::default());
    h.ports.audit = audit.clone();
    let state = h.app();
    let ws = workspace("ws1", "claude_code", "online");
    for dry_run in [true, false] {
        let result = state
            .update
            .update(&Principal::Admin, &ws, "demo", dry_run)
            .await;
        assert!(
            matches!(result, Err(AppError::NoInstallRecord(ref n)) if n.as_str() == "demo"),
            "{result:?}"
        );
    }
    assert!(
        !h.fetched.load(std::sync::atomic::Ordering::SeqCst),
        "nothing fetched"
    );
    let events = audit.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].action, events[0].outcome, events[0].status),
        (AuditAction::Update, AuditOutcome::Failed, 404)
    );
    assert_eq!(events[0].plugin.as_ref().map(|p| p.as_str()), Some("demo"));
}
