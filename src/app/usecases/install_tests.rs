//! Install over mocked ports: every branch, the order of the checks, and
//! the intents it asks of the container ports (never scripts).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mockall::Sequence;
use mockall::predicate::*;

use crate::app::error::AppError;
use crate::app::testing::{answer, workspace};
use crate::app::usecases::access::Principal;
use crate::app::usecases::install::Installed;
use crate::app::usecases::test_fixtures::*;
use crate::domain::audit::{AuditAction, AuditOutcome};
use crate::domain::digest::{FileDigest, sha256};
use crate::domain::name::PluginName;
use crate::domain::policy::{AllowlistFailure, AllowlistRefusal};
use crate::domain::receipt::Provenance;
use crate::domain::staging::StagingError;
use crate::ports::container::MockWorkspaceConfigs;
use crate::ports::container::{ConfigsError, ContainerState, DeliveryError, EngineError};
use crate::ports::receipts::MockReceiptStore;
use crate::ports::resolver::FetchError;
use crate::ports::store::{AllowlistEntry, MockAllowlistStore, StoreError};

#[tokio::test]
async fn the_runtime_guard_answers_before_the_body_is_read() {
    let h = harness(FakeResolver::plugin(&[("plugin.yaml", YAML)]));
    let state = h.app();
    let body_read = Arc::new(AtomicBool::new(false));
    let flag = body_read.clone();
    let read_body = async move {
        flag.store(true, Ordering::SeqCst);
        Err(AppError::InvalidBody)
    };
    let result = install(
        &state,
        &Principal::Admin,
        &workspace("ws1", "external", "online"),
        read_body,
    )
    .await;
    assert!(matches!(result, Err(AppError::Guard(_))), "{result:?}");
    assert!(
        !body_read.load(Ordering::SeqCst),
        "an invalid body never decides an external workspace's answer"
    );
}

#[tokio::test]
async fn a_bad_body_is_refused_before_anything_is_fetched() {
    let h = harness(FakeResolver::plugin(&[]));
    let fetched = h.fetched.clone();
    let state = h.app();
    let result = install(
        &state,
        &Principal::Admin,
        &workspace("ws1", "x", "online"),
        async { Err(AppError::InvalidBody) },
    )
    .await;
    assert!(matches!(result, Err(AppError::InvalidBody)));
    assert!(!fetched.load(Ordering::SeqCst));
}

#[tokio::test]
async fn pipeline_refusals_before_the_fetch_come_in_spec_order() {
    let cases: [(&str, Option<&str>, Expect); 5] = [
        ("  ", None, |e| matches!(e, StagingError::SourceRequired)),
        ("9bad://x", None, |e| matches!(e, StagingError::Unparsable)),
        (
            "oci://x",
            None,
            |e| matches!(e, StagingError::NoResolver { available, .. } if available == &["fake"]),
        ),
        ("fake://Bad", Some("zz"), |e| {
            matches!(e, StagingError::InvalidName { .. })
        }),
        ("fake://ok", Some("zz"), |e| {
            matches!(e, StagingError::CallerSha256 { .. })
        }),
    ];
    for (source, sha, expected) in cases {
        let h = harness(FakeResolver::plugin(&[("plugin.yaml", YAML)]));
        let fetched = h.fetched.clone();
        let state = h.app();
        let sha = sha.map(String::from);
        let src = source.to_owned();
        let result = install(
            &state,
            &Principal::Admin,
            &workspace("ws1", "x", "online"),
            async move { Ok((Some(src), sha)) },
        )
        .await;
        let err = staging_error(result);
        assert!(expected(&err), "{source}: {err:?}");
        assert!(
            !fetched.load(Ordering::SeqCst),
            "{source}: refused before any fetch"
        );
    }
}

#[tokio::test]
async fn an_unpinned_source_is_422_unless_allowed() {
    let mut resolver = FakeResolver::plugin(&[("plugin.yaml", YAML)]);
    resolver.pinned = false;
    let err = staging_error(run_install(harness(resolver), "fake://demo").await);
    assert!(matches!(err, StagingError::Unpinned { .. }));

    // Allowed: staging passes and the install goes on to the container.
    let mut resolver = FakeResolver::plugin(&[("plugin.yaml", YAML)]);
    resolver.pinned = false;
    let mut h = harness(resolver);
    h.policy.allow_unpinned = true;
    h.ports.allowlists = Arc::new(open_allowlist());
    h.ports.engine = Arc::new(engine_in(ContainerState::Stopped));
    let result = run_install(h, "fake://demo").await;
    assert!(
        matches!(result, Err(AppError::ContainerNotRunning)),
        "{result:?}"
    );
}

#[tokio::test]
async fn fetch_failures_map_to_404_502_and_504_without_the_cause() {
    let cases: [(fn() -> FetchError, Expect); 3] = [
        (
            || FetchError::NotFound,
            |e| matches!(e, StagingError::NotFound { .. }),
        ),
        (
            || FetchError::Other("token=s3cret /srv/x".into()),
            |e| matches!(e, StagingError::FetchFailed { .. }),
        ),
        (
            || FetchError::TooLarge,
            |e| matches!(e, StagingError::TooLarge { .. }),
        ),
    ];
    for (fail, expected) in cases {
        let mut resolver = FakeResolver::plugin(&[]);
        resolver.fail = Some(fail);
        let err = staging_error(run_install(harness(resolver), "fake://demo").await);
        assert!(expected(&err), "{err:?}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
    let mut slow = FakeResolver::plugin(&[("plugin.yaml", YAML)]);
    slow.delay = Duration::from_secs(5);
    let mut h = harness(slow);
    h.policy.fetch_timeout = Duration::from_millis(50);
    let err = staging_error(run_install(h, "fake://demo").await);
    assert!(matches!(err, StagingError::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn staged_trees_are_checked_for_name_size_integrity_and_caller_digest() {
    let mut bad_name = FakeResolver::plugin(&[("plugin.yaml", YAML)]);
    bad_name.name = "../escape";
    let err = staging_error(run_install(harness(bad_name), "fake://demo").await);
    assert!(matches!(
        err,
        StagingError::ResolverReturnedInvalidName { .. }
    ));

    let mut h = harness(FakeResolver::plugin(&[("big", &"x".repeat(2048))]));
    h.policy.max_dir_bytes = 1024;
    assert!(matches!(
        staging_error(run_install(h, "fake://demo").await),
        StagingError::TooLarge { .. }
    ));

    let tampered = FakeResolver::plugin(&[
        ("plugin.yaml", YAML),
        ("manifest.json", r#"{"digest":"h1:AAAA"}"#),
    ]);
    assert!(matches!(
        staging_error(run_install(harness(tampered), "fake://demo").await),
        StagingError::Integrity { .. }
    ));

    let h = harness(FakeResolver::plugin(&[("plugin.yaml", YAML)]));
    let state = h.app();
    let sha = Some("0".repeat(64));
    let result = install(
        &state,
        &Principal::Admin,
        &workspace("ws1", "x", "online"),
        async move { Ok((Some("fake://demo".into()), sha)) },
    )
    .await;
    let err = staging_error(result);
    assert!(
        err.to_string()
            .starts_with("sha256 mismatch: expected 0000"),
        "{err}"
    );
}

#[tokio::test]
async fn the_allowlist_refuses_and_fails_closed_unless_configured_open() {
    // Refused and failed-closed installs never reach the engine: its mock
    // has no expectations.
    let mut h = harness(FakeResolver::plugin(&[("plugin.yaml", YAML)]));
    let mut allowlists = MockAllowlistStore::new();
    allowlists.expect_allowlist().returning(|_| {
        Ok(vec![AllowlistEntry {
            plugin_name: PluginName::parse("other").unwrap(),
            enabled_by: "admin".into(),
            enabled_at: crate::app::now(),
        }])
    });
    h.ports.allowlists = Arc::new(allowlists);
    let result = run_install(h, "fake://demo").await;
    assert!(
        matches!(
            result,
            Err(AppError::Allowlist(AllowlistRefusal::NotAllowed(_)))
        ),
        "{result:?}"
    );

    let broken = || {
        let mut broken = MockAllowlistStore::new();
        broken
            .expect_allowlist()
            .returning(|_| Err(StoreError::Unavailable("down".into())));
        broken
    };
    let mut h = harness(FakeResolver::plugin(&[("plugin.yaml", YAML)]));
    h.ports.allowlists = Arc::new(broken());
    let result = run_install(h, "fake://demo").await;
    assert_eq!(
        answer(result),
        (503, "allowlist unavailable".into(), Some(5)),
        "fails closed"
    );

    // Configured open: the install goes on to the container.
    let mut h = harness(FakeResolver::plugin(&[("plugin.yaml", YAML)]));
    h.ports.allowlists = Arc::new(broken());
    h.policy.allowlist_failure = AllowlistFailure::Open;
    h.ports.engine = Arc::new(engine_in(ContainerState::Stopped));
    let result = run_install(h, "fake://demo").await;
    assert!(
        matches!(result, Err(AppError::ContainerNotRunning)),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_stopped_or_unknown_container_is_a_distinct_503_and_nothing_is_delivered() {
    for (state, expected) in [
        (ContainerState::Stopped, "workspace container not running"),
        (ContainerState::Unknown, "container engine unavailable"),
    ] {
        let mut h = harness(FakeResolver::plugin(&[("plugin.yaml", YAML)]));
        h.ports.allowlists = Arc::new(open_allowlist());
        h.ports.engine = Arc::new(engine_in(state.clone()));
        let mut configs = MockWorkspaceConfigs::new();
        configs.expect_is_installed().never();
        configs.expect_deliver().never();
        h.ports.configs = Arc::new(configs);
        let result = run_install(h, "fake://demo").await;
        assert_eq!(
            answer(result),
            (503, expected.to_owned(), Some(5)),
            "{state:?}"
        );
    }
}

#[tokio::test]
async fn an_identical_reinstall_is_unchanged_delivers_nothing_and_does_not_restart() {
    let mut configs = MockWorkspaceConfigs::new();
    configs
        .expect_is_installed()
        .with(eq(cid()), eq(demo()))
        .times(1)
        .returning(|_, _| Ok(true));
    configs.expect_deliver().never();
    // No receipt is dropped or written: the receipts mock expects neither.
    let h = to_delivery(receipts_with(Some(demo_digest())), configs);
    let state = h.app();
    let result = install_demo(&state).await;
    assert_eq!(
        result.unwrap(),
        Installed::Unchanged {
            plugin: demo(),
            source: "fake://demo".into(),
            digest: demo_digest()
        }
    );
    assert_eq!(state.restarts().pending_count(), 0);
}

#[tokio::test]
async fn a_matching_receipt_without_its_directory_is_delivered_again() {
    let mut seq = Sequence::new();
    let mut configs = MockWorkspaceConfigs::new();
    let mut receipts = receipts_with(Some(demo_digest()));
    configs
        .expect_is_installed()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(false));
    receipts
        .expect_delete_receipt()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(true));
    configs
        .expect_deliver()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(()));
    receipts
        .expect_put_receipt()
        .withf(|r, _| r.digest == demo_digest())
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    let h = to_delivery(receipts, configs);
    let state = h.app();
    let result = install_demo(&state).await;
    assert!(
        matches!(result, Ok(Installed::Installed { .. })),
        "{result:?}"
    );
    assert_eq!(state.restarts().pending_count(), 1);
}

#[tokio::test]
async fn a_new_install_delivers_the_staged_tree_records_a_receipt_with_its_provenance_and_requests_a_restart()
 {
    let mut seq = Sequence::new();
    let mut configs = MockWorkspaceConfigs::new();
    configs
        .expect_deliver()
        .withf(|container, plugin, tree| {
            *container == cid()
                && *plugin == demo()
                && std::fs::read_to_string(tree.join("plugin.yaml"))
                    .ok()
                    .as_deref()
                    == Some(YAML)
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(()));
    let mut receipts = receipts_with(None);
    receipts
        .expect_put_receipt()
        .withf(|r, event| {
            r.workspace_id.as_str() == "ws1"
                && r.plugin == demo()
                && r.source == "fake://demo"
                && r.digest == demo_digest()
                && r.size_bytes == YAML.len() as u64
                && r.installed_by == "tok_070707070707070707070707"
                && r.provenance
                    == Some(Provenance {
                        revision: Some(FAKE_REVISION.into()),
                        version: "1.0.0".into(),
                        files: vec![FileDigest {
                            path: "plugin.yaml".into(),
                            sha256: sha256(YAML.as_bytes()),
                        }],
                    })
                // Its audit event goes in the same write (SPEC §11).
                && event.is_some_and(|e| {
                    e.action == AuditAction::Install
                        && e.outcome == AuditOutcome::Ok
                        && e.status == 200
                        && e.actor == r.installed_by
                        && e.workspace_id.as_ref() == Some(&r.workspace_id)
                        && e.plugin.as_ref() == Some(&r.plugin)
                        && e.source() == Some("fake://demo")
                        && e.digest.as_ref() == Some(&r.digest)
                })
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    let h = to_delivery(receipts, configs);
    let state = h.app();
    let principal = Principal::Workspace(crate::domain::token::TokenId::from_random([7; 12]));
    let result = install(
        &state,
        &principal,
        &workspace("ws1", "x", "online"),
        body("fake://demo"),
    )
    .await;
    assert_eq!(
        result.unwrap(),
        Installed::Installed {
            plugin: demo(),
            source: "fake://demo".into(),
            digest: demo_digest()
        }
    );
    assert_eq!(
        state.restarts().pending_count(),
        1,
        "a restart is scheduled"
    );
}

#[tokio::test]
async fn a_changed_reinstall_drops_the_old_receipt_before_it_delivers() {
    let mut seq = Sequence::new();
    let mut receipts = receipts_with(Some(other_digest()));
    let mut configs = MockWorkspaceConfigs::new();
    // A different digest needs no look at the container first.
    configs.expect_is_installed().never();
    receipts
        .expect_delete_receipt()
        .withf(|_, p, e| *p == demo() && e.is_none())
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(true));
    configs
        .expect_deliver()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(()));
    receipts
        .expect_put_receipt()
        .withf(|r, _| r.digest == demo_digest())
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    let h = to_delivery(receipts, configs);
    let state = h.app();
    assert!(install_demo(&state).await.is_ok());
    assert_eq!(state.restarts().pending_count(), 1);
}

#[tokio::test]
async fn a_delivery_not_placed_restores_the_previous_receipt_and_is_500() {
    let mut seq = Sequence::new();
    let mut receipts = receipts_with(Some(other_digest()));
    let mut configs = MockWorkspaceConfigs::new();
    receipts
        .expect_delete_receipt()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(true));
    configs
        .expect_deliver()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| {
            Err(DeliveryError::NotPlaced(ConfigsError::Failed(
                "tar: write error at /configs/plugins".into(),
            )))
        });
    receipts
        .expect_put_receipt()
        .withf(|r, e| *r == receipt(other_digest()) && e.is_none())
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(()));
    let h = to_delivery(receipts, configs);
    let state = h.app();
    let result = install_demo(&state).await;
    assert_eq!(
        answer(result),
        (500, "failed to copy plugin to container".into(), None)
    );
    assert_eq!(state.restarts().pending_count(), 0);
}

#[tokio::test]
async fn a_delivery_not_placed_without_a_previous_receipt_writes_none() {
    let mut configs = MockWorkspaceConfigs::new();
    configs.expect_deliver().times(1).returning(|_, _, _| {
        Err(DeliveryError::NotPlaced(ConfigsError::UnsafeLayout(
            "/configs/plugins does not resolve to itself",
        )))
    });
    // Neither deleted nor written: the receipts mock expects neither.
    let h = to_delivery(receipts_with(None), configs);
    let state = h.app();
    let result = install_demo(&state).await;
    assert_eq!(
        answer(result),
        (500, "failed to copy plugin to container".into(), None)
    );
    assert_eq!(state.restarts().pending_count(), 0);
}

#[tokio::test]
async fn a_delivery_of_unknown_outcome_leaves_no_receipt() {
    let cases: [FailureCase; 2] = [
        (
            || ConfigsError::Failed("exec output cut".into()),
            (500, "failed to copy plugin to container"),
        ),
        (
            || ConfigsError::Engine(EngineError::Unavailable("no answer within 10s".into())),
            (503, "container engine unavailable"),
        ),
    ];
    for (cause, (status, message)) in cases {
        let mut seq = Sequence::new();
        let mut receipts = receipts_with(Some(other_digest()));
        let mut configs = MockWorkspaceConfigs::new();
        receipts
            .expect_delete_receipt()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Ok(true));
        configs
            .expect_deliver()
            .times(1)
            .in_sequence(&mut seq)
            .returning(move |_, _, _| Err(DeliveryError::Unknown(cause())));
        receipts.expect_put_receipt().never();
        let h = to_delivery(receipts, configs);
        let state = h.app();
        let (got_status, got_message, _) = answer(install_demo(&state).await);
        assert_eq!((got_status, got_message.as_str()), (status, message));
        assert_eq!(state.restarts().pending_count(), 0);
    }
}

#[tokio::test]
async fn the_deadline_firing_during_the_delivery_is_504_with_no_receipt_and_no_restart() {
    let mut receipts = receipts_with(Some(other_digest()));
    receipts
        .expect_delete_receipt()
        .times(1)
        .returning(|_, _, _| Ok(true));
    receipts.expect_put_receipt().never();
    // Never released: the delivery outlives the deadline.
    let held = Held::new(MockWorkspaceConfigs::new());
    let started = held.started.clone();
    let mut h = to_delivery(receipts, held);
    h.policy.fetch_timeout = Duration::from_secs(1);
    let state = h.app();
    let result = install_demo(&state).await;
    assert!(fired(&started), "the deadline fired during the delivery");
    match result {
        Err(AppError::InstallTimedOut { ref source_text }) => {
            assert_eq!(source_text, "fake://demo")
        }
        ref other => panic!("{other:?}"),
    }
    assert_eq!(answer(result).0, 504);
    assert_eq!(state.restarts().pending_count(), 0);
}

#[tokio::test]
async fn a_client_gone_mid_delivery_still_gets_the_receipt_written_when_it_completes() {
    let (written, mut receipt_written) = tokio::sync::mpsc::unbounded_channel();
    let mut receipts = receipts_with(None);
    receipts
        .expect_put_receipt()
        .times(1)
        .returning(move |r, _| {
            let _ = written.send(r.clone());
            Ok(())
        });
    let mut inner = MockWorkspaceConfigs::new();
    inner.expect_deliver().times(1).returning(|_, _, _| Ok(()));
    let held = Held::new(inner);
    let (started, release) = (held.started.clone(), held.release.clone());
    let h = to_delivery(receipts, held);
    let state = h.app();

    let mut client = Box::pin(install_demo(&state));
    tokio::select! {
        result = &mut client => panic!("the install ended before its delivery was held: {result:?}"),
        () = started.notified() => {}
    }
    drop(client);
    release.notify_one();

    let receipt = tokio::time::timeout(Duration::from_secs(30), receipt_written.recv())
        .await
        .expect("the delivery ran to its end without its client")
        .expect("a receipt");
    assert_eq!((receipt.plugin, receipt.digest), (demo(), demo_digest()));
}

#[tokio::test]
async fn an_install_waiting_for_its_workspace_fetches_nothing_until_the_workspace_is_free() {
    let h = to_delivery(MockReceiptStore::new(), MockWorkspaceConfigs::new());
    let fetched = h.fetched.clone();
    let state = h.app();
    let ws = workspace("ws1", "claude_code", "online");
    let held = state.locks().hold(&ws.id, None).await.unwrap();
    let waiting = install(&state, &Principal::Admin, &ws, body("fake://demo"));
    tokio::pin!(waiting);
    // Given ample time to stage (it takes milliseconds here), it stays
    // blocked on the workspace: no staging and so no fetch slot is taken
    // by an install that cannot deliver yet.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), waiting.as_mut())
            .await
            .is_err()
    );
    assert!(!fetched.load(Ordering::SeqCst), "fetched while waiting");
    drop(held);
    let _ = waiting.await;
    assert!(
        fetched.load(Ordering::SeqCst),
        "fetched once the workspace was free"
    );
}

#[tokio::test]
async fn an_update_reinstalls_through_the_install_path_recorded_as_update() {
    let mut configs = MockWorkspaceConfigs::new();
    configs.expect_is_installed().returning(|_, _| Ok(true));
    let mut h = to_delivery(receipts_with(Some(demo_digest())), configs);
    let audit = Arc::new(crate::app::testing::RecordedAudit::default());
    h.ports.audit = audit.clone();
    let state = h.app();
    let principal = Principal::Workspace(crate::domain::token::TokenId::from_random([7; 12]));
    let result = state
        .install
        .install_as(
            AuditAction::Update,
            &principal,
            &workspace("ws1", "claude_code", "online"),
            body("fake://demo"),
        )
        .await;
    assert!(
        matches!(result, Ok((Installed::Unchanged { .. }, _))),
        "{result:?}"
    );
    let events = audit.events();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(
        (e.action, e.outcome, e.status, e.actor.as_str()),
        (
            AuditAction::Update,
            AuditOutcome::Unchanged,
            200,
            "tok_070707070707070707070707"
        )
    );
    assert_eq!(e.source(), Some("fake://demo"));
    assert_eq!(e.digest, Some(demo_digest()));
}
