//! The soak of issues 10 and 11 (item 7): three rounds of 200 concurrent
//! installs and uninstalls of 30 registry plugins at one container
//! workspace, with `PLUGIN_RESTART_DELAY=200ms`, so the service's own
//! debounced restarts stop the container under operations in flight.
//! Afterwards every answer was one the contract allows (no 5xx other than
//! a 503 with `Retry-After`), the container holds no delivery leftovers,
//! every installed directory equals its registry copy, the installed list
//! (and its receipts' digests) agrees with the container, and the restarts
//! were coalesced, counted from the engine's events.
//!
//! It takes minutes (every operation on the workspace is serialized, so a
//! round is 200 operations in a row, restarts included), so like the
//! benches it runs on demand, not in `scripts/test`:
//!
//!     cargo test --test api soak -- --ignored --nocapture
//!
//! Figures are printed; `benches/RESULTS.md` ("Soak") records a run.

use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::docker::{TestContainer, docker_output};
use support::hostile_container::{
    Answer, Op, ROOT, Server, container_tree, exec, h1_digest, local_tree, write_plugin,
};

const PLUGINS: usize = 30;
const REQUESTS_PER_ROUND: usize = 200;
const ROUNDS: usize = 3;
/// How long one request may take: the whole round queues on the
/// workspace's lock, restarts included.
const REQUEST_LIMIT: Duration = Duration::from_secs(240);

fn plugin_name(i: usize) -> String {
    format!("soak-{i:02}")
}

/// 30 small plugins, each with a manifest, a rule, a skill and a data file
/// of its own size, so a mixed-up delivery shows in the comparison.
fn registry() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("registry dir");
    for i in 0..PLUGINS {
        let name = plugin_name(i);
        let yaml = format!("name: {name}\nversion: 1.0.{i}\nskills: [{name}-skill]\n");
        let rule = format!("Rule of {name}.\n");
        let skill = format!("---\nname: {name}-skill\ndescription: x\n---\n");
        let data = format!("{name}\n").repeat(100 + 37 * i);
        write_plugin(
            dir.path(),
            &name,
            &[
                ("plugin.yaml", yaml.as_str()),
                ("rules/rule.md", rule.as_str()),
                (&format!("skills/{name}-skill/SKILL.md"), skill.as_str()),
                ("data/blob.txt", data.as_str()),
            ],
        );
    }
    dir
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// The container's engine events between `since` and `until` (unix
/// seconds), as (action, unix seconds).
fn events(container: &str, since: f64, until: f64) -> Vec<(String, f64)> {
    let out = docker_output(&[
        "events",
        "--filter",
        &format!("container={container}"),
        "--since",
        &format!("{since:.3}"),
        "--until",
        &format!("{until:.3}"),
        "--format",
        "{{.Action}} {{.TimeNano}}",
    ]);
    assert!(
        out.status.success(),
        "docker events: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let (action, nanos) = line.split_once(' ')?;
            Some((action.to_owned(), nanos.parse::<f64>().ok()? / 1e9))
        })
        .collect()
}

/// Waits until the container runs and neither it nor the service has done
/// anything for a while (the last answer and the last engine event lie
/// 1.5 s back, well past the 200 ms restart delay); the time it did.
async fn wait_until_quiet(container: &TestContainer, since: f64, last_answer: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = unix_now();
        let last_event = events(&container.name, since, now)
            .last()
            .map_or(since, |(_, at)| *at);
        let running = container.inspect("{{.State.Running}}") == "true";
        if running && now - last_event.max(last_answer) > 1.5 {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the container did not settle within 120 s (running: {running})"
        );
        // Polled: the server is another process, whose restarts are seen
        // only in the engine's events.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `Ok(kind)` for an answer the contract allows under a restart storm,
/// `Err` otherwise.
fn classify(op: &Op, answer: &Answer) -> Result<&'static str, String> {
    let error = answer.error();
    match (op, answer.status) {
        (Op::Install(name), 200) if answer.json["plugin"] == name.as_str() => {
            match answer.json["status"].as_str() {
                Some("installed") => return Ok("200 installed"),
                Some("unchanged") => return Ok("200 unchanged"),
                _ => {}
            }
        }
        (Op::Uninstall(name), 200)
            if answer.json["status"] == "uninstalled" && answer.json["plugin"] == name.as_str() =>
        {
            return Ok("200 uninstalled");
        }
        (Op::Uninstall(name), 404)
            if error == Some(format!("plugin \"{name}\" is not installed").as_str()) =>
        {
            return Ok("404 not installed");
        }
        // SPEC §4 step 8: past the fetch slots a request waits a few
        // seconds, then is told to come back.
        (Op::Install(_), 429)
            if answer.retry_after.is_some()
                && error == Some("too many plugin fetches in progress") =>
        {
            return Ok("429 too many fetches");
        }
        (_, 503) if answer.retry_after.is_some() => match error {
            Some("workspace container not running") => return Ok("503 not running"),
            Some("container engine unavailable") => return Ok("503 engine unavailable"),
            _ => {}
        },
        _ => {}
    }
    let kind = match op {
        Op::Install(_) => "install",
        Op::Uninstall(_) => "uninstall",
        _ => "other",
    };
    let what = error.map_or_else(
        || String::from_utf8_lossy(&answer.body[..answer.body.len().min(80)]).into_owned(),
        str::to_owned,
    );
    let retry = if answer.retry_after.is_some() {
        ""
    } else {
        ", no Retry-After"
    };
    Err(format!("{kind} {} {what}{retry}", answer.status))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a soak of several minutes: cargo test --test api soak -- --ignored --nocapture"]
async fn concurrent_installs_and_uninstalls_through_restarts_answer_per_spec_and_leave_the_container_true()
 {
    let registry = registry();
    let server = Server::start(
        registry.path(),
        &[
            ("PLUGIN_RESTART_DELAY", "200ms"),
            ("PLUGIN_ENGINE_TIMEOUT", "10s"),
        ],
        false,
    )
    .await;
    let container = tokio::task::spawn_blocking(TestContainer::running)
        .await
        .expect("container");
    server
        .put_workspace("soak", &container.name)
        .await
        .expect("workspace");

    let mut rng = StdRng::seed_from_u64(0x50a6);
    let since = unix_now();
    let started = Instant::now();
    let mut tally: BTreeMap<&'static str, usize> = BTreeMap::new();
    // Answers outside the contract, by kind.
    let mut outside: BTreeMap<String, usize> = BTreeMap::new();
    let mut slowest = Duration::ZERO;
    for round in 0..ROUNDS {
        let ops: Vec<Op> = (0..REQUESTS_PER_ROUND)
            .map(|_| {
                let name = plugin_name(rng.random_range(0..PLUGINS));
                if rng.random_bool(0.6) {
                    Op::Install(name)
                } else {
                    Op::Uninstall(name)
                }
            })
            .collect();
        let round_started = Instant::now();
        let answers = futures_util::future::join_all(
            ops.iter().map(|op| server.call("soak", op, REQUEST_LIMIT)),
        )
        .await;
        for (op, answer) in ops.iter().zip(answers) {
            match answer {
                Ok(answer) => {
                    slowest = slowest.max(answer.elapsed);
                    match classify(op, &answer) {
                        Ok(kind) => *tally.entry(kind).or_default() += 1,
                        Err(kind) => *outside.entry(kind).or_default() += 1,
                    }
                }
                Err(e) => {
                    eprintln!("round {round}: {e}");
                    *outside.entry("no answer".to_owned()).or_default() += 1;
                }
            }
        }
        eprintln!(
            "round {round}: {REQUESTS_PER_ROUND} requests in {:.1} s",
            round_started.elapsed().as_secs_f64()
        );
    }
    let wall = started.elapsed();
    let last_answer = unix_now();
    let quiet = wait_until_quiet(&container, since, last_answer).await;
    let events = events(&container.name, since, quiet);
    let count = |action: &str| events.iter().filter(|(a, _)| a == action).count();
    let (restarts, starts, dies) = (count("restart"), count("start"), count("die"));
    let changes = tally.get("200 installed").copied().unwrap_or(0)
        + tally.get("200 uninstalled").copied().unwrap_or(0);

    let outside_count: usize = outside.values().sum();
    let list = |counts: &mut dyn Iterator<Item = (&str, usize)>| {
        counts
            .map(|(kind, n)| format!("{n}× {kind}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let allowed = list(&mut tally.iter().map(|(k, n)| (*k, *n)));
    let refused = list(&mut outside.iter().map(|(k, n)| (k.as_str(), *n)));
    // One Markdown row for benches/RESULTS.md.
    eprintln!(
        "| {} | {:.0} s | {:.1} s | {allowed} | {outside_count}: {refused} | {changes} | \
         {restarts} ({starts} start, {dies} die) |",
        ROUNDS * REQUESTS_PER_ROUND,
        wall.as_secs_f64(),
        slowest.as_secs_f64(),
    );

    let mut problems = Vec::new();
    if outside_count > 0 {
        problems.push(format!(
            "{outside_count} answers outside the contract: {refused}"
        ));
    }

    // Delivery leftovers and the installed directories, as root.
    let listing = exec(&container.name, ROOT, "ls -A /configs/plugins", &[])
        .await
        .expect("list /configs/plugins");
    let mut in_container = Vec::new();
    for entry in listing.lines() {
        if entry.starts_with('.') {
            problems.push(format!("leftover in /configs/plugins: {entry}"));
        } else {
            in_container.push(entry.to_owned());
        }
    }
    for name in &in_container {
        let Some(index) = (0..PLUGINS).find(|i| plugin_name(*i) == *name) else {
            problems.push(format!("/configs/plugins/{name} is not a registry plugin"));
            continue;
        };
        let local = local_tree(&registry.path().join(plugin_name(index)));
        match container_tree(&container.name, &format!("/configs/plugins/{name}")).await {
            Ok((tree, foreign)) => {
                if tree != local {
                    problems.push(format!(
                        "/configs/plugins/{name} differs from its registry copy: {tree:?}"
                    ));
                }
                if !foreign.is_empty() {
                    problems.push(format!(
                        "/configs/plugins/{name} has entries not owned by 1000:1000: {foreign:?}"
                    ));
                }
            }
            Err(e) => problems.push(e),
        }
    }

    // The installed list (and the receipts behind its digests) agrees.
    match server.call("soak", &Op::List, REQUEST_LIMIT).await {
        Ok(answer) if answer.status == 200 => {
            let listed: BTreeMap<String, String> = answer
                .json
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap_or("").to_owned(),
                        p["digest"].as_str().unwrap_or("null").to_owned(),
                    )
                })
                .collect();
            let names: Vec<&String> = listed.keys().collect();
            let mut expected = in_container.clone();
            expected.sort();
            if names != expected.iter().collect::<Vec<_>>() {
                problems.push(format!(
                    "the installed list {names:?} disagrees with the container {expected:?}"
                ));
            }
            for (name, digest) in &listed {
                let want = h1_digest(&registry.path().join(name));
                if *digest != want {
                    problems.push(format!(
                        "{name} is listed with digest {digest}, its content is {want}"
                    ));
                }
            }
        }
        Ok(answer) => problems.push(format!("the final listing answered {}", answer.summary())),
        Err(e) => problems.push(e),
    }

    // Coalesced: a restart follows a quiet spell of 200 ms, so the bursts
    // cause a few restarts, not one per change.
    if restarts == 0 {
        problems.push("no restart was observed: the engine events are not being read".into());
    }
    if restarts * 10 > changes.max(10) {
        problems.push(format!(
            "{restarts} restarts for {changes} changes: not coalesced"
        ));
    }

    let log = server.log_tail(20);
    tokio::task::spawn_blocking(move || drop(container))
        .await
        .expect("remove the container");
    assert!(
        problems.is_empty(),
        "{}\n--- server log (tail) ---\n{log}",
        problems.join("\n")
    );
}
