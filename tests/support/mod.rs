//! Shared test harness: the real server, real databases, a real Docker
//! engine.
//!
//! Each test binary declares it `pub mod support`: its public items are
//! the binaries' shared library, not linted per binary (as a crate's would
//! not be), while private items stay linted. A helper no binary uses any
//! more is deleted.

pub mod app;
pub mod db;
pub mod docker;
pub mod git;
pub mod hostile;
pub mod hostile_container;
pub mod https;
pub mod replica;

/// Waits up to 60 s for the server process at `base` to answer `/readyz`
/// with a success; panics with its log when it exits first or never does.
/// `exited` reports the child's exit status once it has one.
pub async fn wait_until_ready(
    client: &reqwest::Client,
    base: &str,
    mut exited: impl FnMut() -> Option<std::process::ExitStatus>,
    log: impl Fn() -> String,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(status) = exited() {
            panic!("the server exited during start-up ({status}):\n{}", log());
        }
        let ready = client
            .get(format!("{base}/readyz"))
            .timeout(std::time::Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server was not ready within 60 s:\n{}",
            log()
        );
        // Polled: the child process announces nothing when it listens.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
