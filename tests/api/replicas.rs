//! Three replicas of the real binary on one PostgreSQL and one Docker
//! engine (SPEC §12): concurrent installs and uninstalls of one workspace
//! spread over them end with the container, the receipts and the listing
//! in agreement and one restart per quiet period; a replica killed with
//! `SIGKILL` mid-install leaves its pending restart to the others and the
//! container holding whole versions only.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sea_orm::{ConnectionTrait, Statement};

use crate::support::db;
use crate::support::docker::{TestContainer, docker};
use crate::support::hostile_container::{
    ROOT, Server, container_tree, exec, h1_digest, local_tree, write_plugin,
};

const RESTART_DELAY: Duration = Duration::from_secs(1);
const WORKSPACE: &str = "ws-replicas";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The replicas, started one after the other (each runs the migrations)
/// against one fresh PostgreSQL database.
async fn replicas(registry: &Path, database_url: &str, delay: Duration) -> Vec<Server> {
    let delay = format!("{}ms", delay.as_millis());
    let mut all = Vec::new();
    for _ in 0..3 {
        let settings = [
            ("DATABASE_URL", database_url),
            ("PLUGIN_RESTART_DELAY", delay.as_str()),
        ];
        all.push(Server::start(registry, &settings, false).await);
    }
    all
}

/// Restarts of `container` the engine reported since `since` (unix
/// seconds), through `docker events`.
fn engine_restarts(container: &str, since: u64) -> usize {
    let until = (unix_now() + 1).to_string();
    docker(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &until,
        "--filter",
        &format!("container={container}"),
        "--filter",
        "event=restart",
        "--format",
        "{{.Action}}",
    ])
    .lines()
    .filter(|l| l.trim() == "restart")
    .count()
}

/// One SQL answer column of the shared database.
async fn column(url: &str, sql: &str) -> Vec<String> {
    let conn = db::connection(url).await;
    conn.query_all_raw(Statement::from_string(conn.get_database_backend(), sql))
        .await
        .expect("query")
        .into_iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("text column"))
        .collect()
}

/// Returns once no restart is pending in the shared database.
async fn until_no_restart_is_pending(url: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if column(url, "SELECT workspace_id FROM pending_restarts")
            .await
            .is_empty()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "restarts still pending after {within:?}"
        );
        // Polled: the replicas announce nothing when they carry one out.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `/configs/plugins` holds: plugin directories, and any entry
/// starting with `.` (staging or old-version leftovers).
async fn plugins_in(container: &str) -> (BTreeSet<String>, Vec<String>) {
    let listing = exec(
        container,
        ROOT,
        "ls -A /configs/plugins 2>/dev/null || true",
        &[],
    )
    .await
    .expect("list /configs/plugins");
    let (hidden, plugins): (Vec<String>, Vec<String>) = listing
        .lines()
        .map(str::to_owned)
        .partition(|name| name.starts_with('.'));
    (plugins.into_iter().collect(), hidden)
}

/// Every receipt names a plugin the container holds whole, with the
/// registry's digest; every plugin in the container is whole and, when
/// `every_plugin_has_one`, has a receipt (a delivery cut by a dead
/// replica may leave a whole plugin with none: SPEC §5 lists it with no
/// digest).
async fn receipts_agree_with_the_container(
    url: &str,
    container: &str,
    registry: &Path,
    every_plugin_has_one: bool,
) -> BTreeSet<String> {
    let receipts: BTreeSet<String> = column(
        url,
        &format!("SELECT plugin_name FROM receipts WHERE workspace_id = '{WORKSPACE}'"),
    )
    .await
    .into_iter()
    .collect();
    let (plugins, _) = plugins_in(container).await;
    if every_plugin_has_one {
        assert_eq!(receipts, plugins, "receipts and container disagree");
    } else {
        assert!(
            receipts.is_subset(&plugins),
            "a receipt lies: {receipts:?} vs {plugins:?}"
        );
    }
    for name in &plugins {
        let (tree, _) = container_tree(container, &format!("/configs/plugins/{name}"))
            .await
            .expect("installed tree");
        assert_eq!(
            tree,
            local_tree(&registry.join(name)),
            "{name} is not a whole version"
        );
        let digest = column(
            url,
            &format!(
                "SELECT digest FROM receipts WHERE workspace_id = '{WORKSPACE}' AND plugin_name = '{name}'"
            ),
        )
        .await;
        if receipts.contains(name) {
            assert_eq!(digest, vec![h1_digest(&registry.join(name))]);
        }
    }
    plugins
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_operations_over_three_replicas_agree_and_restart_once_per_quiet_period() {
    let registry = tempfile::tempdir().expect("registry");
    for name in ["alpha", "beta"] {
        write_plugin(
            registry.path(),
            name,
            &[
                ("plugin.yaml", &format!("name: {name}\nversion: 1.0.0\n")),
                ("skills/s/SKILL.md", "# skill\n"),
            ],
        );
    }
    let url = db::postgres_url().await;
    let servers = replicas(registry.path(), &url, RESTART_DELAY).await;
    let container = TestContainer::running();
    servers[0]
        .put_workspace(WORKSPACE, &container.name)
        .await
        .expect("workspace");
    let since = unix_now();

    use crate::support::hostile_container::Op;
    let ops = (0..200).map(|i| {
        let server = &servers[i % servers.len()];
        let name = if i % 4 < 2 { "alpha" } else { "beta" };
        let op = if i % 2 == 0 {
            Op::install(name)
        } else {
            Op::uninstall(name)
        };
        async move {
            let answer = server
                .call(WORKSPACE, &op, Duration::from_secs(300))
                .await
                .expect("an answer");
            (op, answer.status, Instant::now())
        }
    });
    let mut answers = futures_util::future::join_all(ops).await;
    for (op, status, _) in &answers {
        assert!(
            matches!(status, 200 | 404),
            "{op}: {status} (only 200, or 404 for an uninstall of nothing)"
        );
    }
    until_no_restart_is_pending(&url, Duration::from_secs(120)).await;

    let installed =
        receipts_agree_with_the_container(&url, &container.name, registry.path(), true).await;
    let (_, leftovers) = plugins_in(&container.name).await;
    assert_eq!(leftovers, Vec::<String>::new(), "staging leftovers remain");
    let listed = servers[1]
        .call(WORKSPACE, &Op::List, Duration::from_secs(30))
        .await
        .expect("listing");
    let listed: BTreeSet<String> = listed
        .json
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(listed, installed, "the listing disagrees");

    // Quiet periods: gaps between changes longer than the delay (less a
    // margin for the time from a request to its answer).
    answers.retain(|(_, status, _)| *status == 200);
    answers.sort_by_key(|(_, _, at)| *at);
    let quiet = answers
        .windows(2)
        .filter(|w| w[1].2 - w[0].2 > RESTART_DELAY - Duration::from_millis(300))
        .count();
    let restarts = engine_restarts(&container.name, since);
    assert!(
        (1..=quiet + 1).contains(&restarts),
        "{restarts} restarts for {} quiet period(s)",
        quiet + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_install_leaves_its_restart_to_the_others_and_whole_versions() {
    let registry = tempfile::tempdir().expect("registry");
    write_plugin(
        registry.path(),
        "alpha",
        &[("plugin.yaml", "name: alpha\nversion: 1.0.0\n")],
    );
    // Large enough that its delivery is still under way when polled.
    let big: Vec<(String, String)> = (0..400)
        .map(|i| (format!("files/f{i}.txt"), format!("{i}\n").repeat(2_000)))
        .collect();
    let mut files: Vec<(&str, &str)> = big.iter().map(|(p, c)| (p.as_str(), c.as_str())).collect();
    files.push(("plugin.yaml", "name: big\nversion: 1.0.0\n"));
    write_plugin(registry.path(), "big", &files);
    let url = db::postgres_url().await;
    // A delay long enough that the first install's restart is still
    // pending when its replica dies.
    let servers = replicas(registry.path(), &url, Duration::from_secs(5)).await;
    let container = TestContainer::running();
    servers[0]
        .put_workspace(WORKSPACE, &container.name)
        .await
        .expect("workspace");
    let since = unix_now();

    use crate::support::hostile_container::Op;
    let first = servers[0]
        .call(WORKSPACE, &Op::install("alpha"), Duration::from_secs(60))
        .await
        .expect("install alpha");
    assert_eq!(first.status, 200);
    let victim = &servers[0];
    let big_install = Op::install("big");
    let install = victim.call(WORKSPACE, &big_install, Duration::from_secs(60));
    tokio::pin!(install);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        tokio::select! {
            answered = &mut install => panic!("the big install ended before it was seen under way: {answered:?}"),
            // Polled: the delivery announces nothing until it answers.
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        let (_, hidden) = plugins_in(&container.name).await;
        if hidden.iter().any(|h| h.starts_with(".big.")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the big install never reached the container"
        );
    }
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &victim.pid().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());

    until_no_restart_is_pending(&url, Duration::from_secs(60)).await;
    assert!(
        engine_restarts(&container.name, since) >= 1,
        "the dead replica's restart was carried out by another"
    );
    // The next operation on the workspace clears the dead replica's
    // leftovers (SPEC §5 "In-container layout").
    let again = servers[1]
        .call(WORKSPACE, &Op::install("alpha"), Duration::from_secs(60))
        .await
        .expect("install alpha again");
    assert_eq!(again.status, 200, "{}", again.summary());
    let installed =
        receipts_agree_with_the_container(&url, &container.name, registry.path(), false).await;
    assert!(installed.contains("alpha"));
}
