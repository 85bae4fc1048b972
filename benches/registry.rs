//! Registry index benchmarks (issue 13), against the real server binary
//! run as its own process:
//!
//!     cargo bench --bench registry                 # listing and memory
//!     cargo bench --bench registry -- listing      # the wrk rows only
//!     cargo bench --bench registry -- memory       # the 10k-plugin RSS rows only
//!     cargo bench --bench registry -- auth         # the wrk rows plus the auth ceiling
//!
//! Listing: a registry of 500 small plugins; once the index has settled
//! (`/metrics`: `plugin_registry_plugins` = 500 and
//! `plugin_registry_prepack_pending` = 0),
//! `wrk -t2 -c64 -d15s --latency --timeout 10s` against `GET /plugins`,
//! `GET /workspaces/:id/plugins/available` (an `external` workspace, with
//! its own token) and `GET /healthz` (the ceiling: no registry, no store),
//! in turns, `BENCH_ROUNDS` rounds (default 3); with `auth`, also
//! `GET /workspaces/:id` with the same token (what `available` costs
//! without the registry). Memory: the server's RSS once a registry of
//! 10,000 small plugins has settled, minus its RSS with an empty registry,
//! each a fresh process, `BENCH_MEMORY_ROUNDS` pairs (default 3); started
//! with `PLUGIN_REGISTRY_PREPACK=false` unless `BENCH_MEMORY_PREPACK=true`
//! (packing 10,000 plugins ahead of time takes minutes).
//!
//! Knobs: `BENCH_WRK_DURATION` (default `15s`), `BENCH_SETTLE_TIMEOUT_S`
//! (default 180). Needs `wrk` and `curl` on PATH; fails without them.
//! wrk shares the machine's cores with the server: the numbers are the
//! pair's, on loopback.

pub mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Server, Spread, env_knob, get, load_average, rss_kib};

const LISTED: usize = 500;
const MEMORY_PLUGINS: usize = 10_000;
const WORKSPACE: &str = "bench-external";

/// A small plugin as the registry holds many: a manifest with every
/// field, one rule, one skill. A third declare no runtime (every runtime),
/// a third `external` among theirs, a third not: the `external`
/// workspace's listing keeps two thirds.
fn write_small_plugin(root: &Path, i: usize) {
    let name = format!("plugin-{i:05}");
    let dir = root.join(&name);
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::create_dir_all(dir.join(format!("skills/skill-{i}"))).unwrap();
    let runtimes = match i % 3 {
        0 => "",
        1 => "runtimes: [claude_code, external]\n",
        _ => "runtimes: [claude_code, hermes]\n",
    };
    std::fs::write(
        dir.join("plugin.yaml"),
        format!(
            "name: {name}\nversion: 1.{}.{}\ndescription: Bench plugin {i}, one of many small registry entries\n\
             author: bench\ntags: [bench, small]\nskills: [skill-{i}]\nrules: [style.md]\n{runtimes}",
            i / 100,
            i % 100
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("rules/style.md"),
        format!("Plugin {i}: keep answers short and cite files by path.\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join(format!("skills/skill-{i}/SKILL.md")),
        format!("---\nname: skill-{i}\ndescription: A bench skill\n---\n\nDo the thing {i}.\n"),
    )
    .unwrap();
}

fn write_registry(root: &Path, plugins: usize) {
    for i in 0..plugins {
        write_small_plugin(root, i);
    }
}

/// What one wrk run reports.
#[derive(Debug, Clone, Copy)]
struct WrkRun {
    requests_per_sec: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    /// Non-2xx/3xx responses plus socket errors (connect, read, write,
    /// timeout).
    errors: u64,
}

/// A wrk duration (`812.00us`, `4.10ms`, `1.02s`, `1.50m`) in ms.
fn wrk_ms(raw: &str) -> f64 {
    let split = raw
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or_else(|| panic!("wrk latency {raw:?} has no unit"));
    let (value, unit) = raw.split_at(split);
    let value: f64 = value
        .parse()
        .unwrap_or_else(|_| panic!("wrk latency {raw:?}"));
    value
        * match unit {
            "us" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 60e3,
            "h" => 3600e3,
            _ => panic!("wrk latency unit {unit:?} in {raw:?}"),
        }
}

/// Parses `wrk --latency` output: Requests/sec, the latency
/// distribution's 50/90/99 %, and every error line.
fn parse_wrk(out: &str) -> WrkRun {
    let field = |prefix: &str| -> Option<&str> {
        out.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    };
    let percentile = |p: &str| {
        wrk_ms(field(&format!("{p}%")).unwrap_or_else(|| {
            panic!("no {p}% latency in wrk's output (was --latency given?):\n{out}")
        }))
    };
    let requests_per_sec = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{out}"));
    let non_2xx: u64 = field("Non-2xx or 3xx responses:")
        .map(|v| v.parse().unwrap())
        .unwrap_or(0);
    // "Socket errors: connect 0, read 0, write 0, timeout 12"
    let socket: u64 = field("Socket errors:")
        .map(|v| {
            v.split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    WrkRun {
        requests_per_sec,
        p50_ms: percentile("50"),
        p90_ms: percentile("90"),
        p99_ms: percentile("99"),
        errors: non_2xx + socket,
    }
}

fn wrk(url: &str, duration: &str, headers: &[String]) -> WrkRun {
    let mut cmd = Command::new("wrk");
    // wrk gives up on a request after 2 s by default and leaves it out of
    // the latency distribution; the listings took longer than that before
    // issue 13 on a loaded machine, so their p99 would read low.
    cmd.args([
        "-t2",
        "-c64",
        "-d",
        duration,
        "--latency",
        "--timeout",
        "10s",
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output().expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wrk {url}: {}{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_wrk(&text)
}

/// The number of plugins in a JSON listing.
fn listed(body: &str) -> usize {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or_else(|| panic!("not a JSON list: {body:.200}"))
}

fn listing(auth_ceiling: bool) {
    let plugins = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    write_registry(plugins.path(), LISTED);
    let server = Server::start(data.path(), plugins.path(), &[]);
    let settled = server.wait_settled(LISTED);
    server.register_workspace(WORKSPACE, "external");
    let token = server.issue_token(WORKSPACE);
    let auth = format!("Authorization: Bearer {token}");

    let base = &server.base;
    let mut rows: Vec<(&str, String, Vec<String>, &str)> = vec![
        (
            "`GET /plugins`",
            format!("{base}/plugins"),
            vec![],
            "≥ 10,000/s, p99 < 10 ms",
        ),
        (
            "`GET /workspaces/:id/plugins/available` (`external`, workspace token)",
            format!("{base}/workspaces/{WORKSPACE}/plugins/available"),
            vec![auth.clone()],
            "",
        ),
        (
            "`GET /healthz` (ceiling)",
            format!("{base}/healthz"),
            vec![],
            "",
        ),
    ];
    if auth_ceiling {
        // The same token check as `available`, no registry: what that row
        // can reach at most.
        rows.push((
            "`GET /workspaces/:id` (same token; auth ceiling)",
            format!("{base}/workspaces/{WORKSPACE}"),
            vec![auth.clone()],
            "",
        ));
    }
    // Each endpoint answers what it should before it is timed.
    let all = get(&rows[0].1, &[]).expect("GET /plugins");
    assert_eq!(listed(&all), LISTED, "GET /plugins");
    let available = get(&rows[1].1, &[&auth]).expect("GET available");
    let expected = (0..LISTED).filter(|i| i % 3 != 2).count();
    assert_eq!(listed(&available), expected, "GET available");

    let rounds: usize = env_knob("BENCH_ROUNDS", 3);
    let duration: String = env_knob("BENCH_WRK_DURATION", "15s".to_owned());
    let load_before = load_average();
    let mut runs: Vec<Vec<WrkRun>> = vec![Vec::new(); rows.len()];
    for _ in 0..rounds {
        for (row, (_, url, headers, _)) in rows.iter().enumerate() {
            runs[row].push(wrk(url, &duration, headers));
        }
    }
    let rss = rss_kib(server.pid(), "VmRSS:");

    println!(
        "\nListing, {LISTED} small plugins, index settled {:.1} s after start; \
         `wrk -t2 -c64 -d{duration} --latency --timeout 10s`, {rounds} rounds in turns; \
         load average {load_before} before, {} after; server RSS after: {:.1} MiB\n",
        settled.as_secs_f64(),
        load_average(),
        rss as f64 / 1024.0
    );
    println!(
        "| endpoint | requests/s: median (min–max) | p50 | p90 | p99: median (min–max) | errors | goal |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let ms = |v: f64| {
        let digits = if v < 10.0 {
            2
        } else if v < 100.0 {
            1
        } else {
            0
        };
        format!("{v:.digits$} ms")
    };
    for ((label, _, _, goal), runs) in rows.iter().zip(&runs) {
        let rps = Spread::of(runs.iter().map(|r| r.requests_per_sec));
        let p50 = Spread::of(runs.iter().map(|r| r.p50_ms));
        let p90 = Spread::of(runs.iter().map(|r| r.p90_ms));
        let p99 = Spread::of(runs.iter().map(|r| r.p99_ms));
        let errors: u64 = runs.iter().map(|r| r.errors).sum();
        println!(
            "| {label} | {} | {} | {} | {} | {errors} | {goal} |",
            rps.show(|v| format!("{v:.0}")),
            ms(p50.median),
            ms(p90.median),
            p99.show(ms),
        );
    }
    println!(
        "\nrerun: cargo bench --bench registry -- {}",
        if auth_ceiling { "auth" } else { "listing" }
    );
}

/// One fresh server on a registry: its RSS in bytes once the registry has
/// settled and again after one `GET /plugins`, and the time it took to
/// settle.
struct Footprint {
    settled: f64,
    listed: f64,
    settle_time: Duration,
}

fn footprint(registry: &Path, plugins: usize, prepack: bool) -> Footprint {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(
        data.path(),
        registry,
        &[("PLUGIN_REGISTRY_PREPACK", prepack.to_string())],
    );
    let settle_time = server.wait_settled(plugins);
    // Let whatever finished settling hand back its buffers.
    std::thread::sleep(Duration::from_millis(500));
    let settled = rss_kib(server.pid(), "VmRSS:") * 1024;
    let body = get(&format!("{}/plugins", server.base), &[]).expect("GET /plugins");
    assert_eq!(listed(&body), plugins, "GET /plugins");
    std::thread::sleep(Duration::from_millis(500));
    let after_listing = rss_kib(server.pid(), "VmRSS:") * 1024;
    Footprint {
        settled: settled as f64,
        listed: after_listing as f64,
        settle_time,
    }
}

fn memory() {
    let empty = tempfile::tempdir().unwrap();
    let full = tempfile::tempdir().unwrap();
    write_registry(full.path(), MEMORY_PLUGINS);
    let rounds: usize = env_knob("BENCH_MEMORY_ROUNDS", 3);
    // Packing ahead of time goes one plugin at a time behind requests:
    // 10,000 take minutes, far beyond this bench's budget, so by default
    // the rows are the index's own; `BENCH_MEMORY_PREPACK=true` waits for
    // the packing too.
    let prepack: bool = env_knob("BENCH_MEMORY_PREPACK", false);
    let load_before = load_average();
    let mut empties = Vec::new();
    let mut fulls = Vec::new();
    for _ in 0..rounds {
        empties.push(footprint(empty.path(), 0, prepack));
        fulls.push(footprint(full.path(), MEMORY_PLUGINS, prepack));
    }
    let n = MEMORY_PLUGINS as f64;
    let per_plugin = |rss: fn(&Footprint) -> f64| {
        Spread::of(
            empties
                .iter()
                .zip(&fulls)
                .map(|(e, f)| (rss(f) - rss(e)) / n),
        )
        .show(|v| format!("{v:.0} B"))
    };
    let mib = |v: f64| format!("{:.1} MiB", v / f64::from(1 << 20));
    let rss =
        |of: &[Footprint], pick: fn(&Footprint) -> f64| Spread::of(of.iter().map(pick)).show(mib);
    println!(
        "\nMemory, {rounds} rounds (each a fresh server on an empty registry, then one on {MEMORY_PLUGINS} small plugins), \
         PLUGIN_REGISTRY_PREPACK={prepack}; load average {load_before} before, {} after\n",
        load_average()
    );
    println!(
        "| measure | empty registry | {MEMORY_PLUGINS} plugins | ({MEMORY_PLUGINS} − empty) / {MEMORY_PLUGINS} |"
    );
    println!("| --- | --- | --- | --- |");
    println!(
        "| RSS once settled, median (min–max) | {} | {} | {} per plugin |",
        rss(&empties, |f| f.settled),
        rss(&fulls, |f| f.settled),
        per_plugin(|f| f.settled)
    );
    println!(
        "| RSS after one `GET /plugins` | {} | {} | {} per plugin |",
        rss(&empties, |f| f.listed),
        rss(&fulls, |f| f.listed),
        per_plugin(|f| f.listed)
    );
    println!(
        "| time from start to settled | {} | {} | |",
        Spread::of(empties.iter().map(|f| f.settle_time.as_secs_f64()))
            .show(|v| format!("{v:.2} s")),
        Spread::of(fulls.iter().map(|f| f.settle_time.as_secs_f64())).show(|v| format!("{v:.2} s")),
    );
    println!(
        "\nrerun: {}cargo bench --bench registry -- memory",
        if prepack {
            "BENCH_MEMORY_PREPACK=true "
        } else {
            ""
        }
    );
}

fn main() {
    common::require_tools(&["wrk", "curl"]);
    // `cargo bench` passes `--bench`; the rest names the parts to run:
    // `listing` and `memory` by default, `auth` adds the auth ceiling row
    // to the listing table (15 s more per round, so not by default).
    let mut parts: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    for part in &parts {
        assert!(
            ["listing", "memory", "auth"].contains(&part.as_str()),
            "unknown part {part:?}: the parts are `listing`, `memory` and `auth`"
        );
    }
    if parts.is_empty() {
        parts = vec!["listing".into(), "memory".into()];
    }
    let wants = |part: &str| parts.iter().any(|p| p == part);
    if wants("listing") || wants("auth") {
        listing(wants("auth"));
    }
    if wants("memory") {
        memory();
    }
}
