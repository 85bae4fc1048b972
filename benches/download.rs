//! Download benchmarks (issues 6 and 13), against the real server binary
//! run as its own process so its memory can be read from /proc:
//!
//!     cargo bench --bench download
//!     BENCH_SETTLE_MS=0 cargo bench --bench download   # never-seen plugins just written
//!
//! Needs `tar`, `gzip`, `zstd`, `sha256sum`, `bash`, `cp`, `curl`, `kill` and
//! `nginx` on PATH; fails without any of them. Prints a Markdown table for
//! benches/RESULTS.md; every row is measured in this one run on the same
//! 100 MiB plugin, in `BENCH_ROUNDS` rounds (default 5; the cached and 304
//! rows take 15 samples), the service's sample and the reference's taken
//! in turns, and shows the median and the range.
//!
//! Two servers: one started with `PLUGIN_REGISTRY_PREPACK=false`, so that
//! nothing is packed before it is asked for (the first, new-format and
//! never-seen rows, the cached and memory rows), and one with the default
//! settings, which packs registry plugins ahead of time in the default
//! format (issue 13): its row times the first download of a plugin once the
//! index has settled (`/metrics`: `plugin_registry_plugins` and
//! `plugin_registry_prepack_pending`; `BENCH_SETTLE_TIMEOUT_S`).
//!
//! Never-seen content is really new: each round copies the plugin under a
//! new name (fresh files and inodes, so no per-file digest is remembered)
//! with one file of its own (a new tree digest, so no archive is cached),
//! waits `BENCH_SETTLE_MS` (default 2500, as benches/install.rs), then
//! downloads it.

pub mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{
    ADMIN, Nginx, Server, Spread, curl, env_knob, load_average, ratios, require_tools, rss_kib,
    settle_ms, shell,
};

const PLUGIN: &str = "big";
const SIZE: usize = 100 << 20;

/// 100 MiB in 64 files: half pseudo-random, half repetitive text, so both
/// compressors have real work.
fn write_plugin(root: &Path) {
    let dir = root.join(PLUGIN);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("plugin.yaml"), "version: 1.0.0\n").unwrap();
    let per_file = SIZE / 64;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for i in 0..64 {
        let mut bytes = Vec::with_capacity(per_file);
        if i % 2 == 0 {
            while bytes.len() < per_file {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                bytes.extend_from_slice(&state.to_le_bytes());
            }
        } else {
            while bytes.len() < per_file {
                bytes.extend_from_slice(
                    format!(
                        "line {} of a plugin rule file, fairly ordinary text\n",
                        bytes.len()
                    )
                    .as_bytes(),
                );
            }
        }
        bytes.truncate(per_file);
        std::fs::write(dir.join(format!("data/part-{i:02}")), bytes).unwrap();
    }
}

/// A never-seen plugin: `from`/big copied to `to`/`name` (fresh files,
/// inodes and times) plus a file naming it (a tree digest of its own).
/// The copy is made next to the registry and renamed into it, as a
/// deployment publishes a plugin: the index never sees it half-copied, so
/// "settled" cannot be read before the last file is there.
fn fresh_copy(from: &Path, to: &Path, name: &str) {
    let outside = tempfile::tempdir_in(to.parent().expect("a registry with a parent")).unwrap();
    let staged = outside.path().join(name);
    let status = Command::new("cp")
        .arg("-r")
        .arg(from.join(PLUGIN))
        .arg(&staged)
        .status()
        .unwrap();
    assert!(status.success(), "cp -r of the plugin");
    std::fs::write(staged.join("copy.txt"), name).unwrap();
    std::fs::rename(&staged, to.join(name)).unwrap();
}

/// Times `curl` fetching `url` to /dev/null; also returns the bytes it got.
fn curl_sized(url: &str) -> (Duration, u64) {
    let started = Instant::now();
    let out = Command::new("curl")
        .args(["-sf", "-o", "/dev/null", "-w", "%{size_download}", "-H"])
        .arg(format!("Authorization: Bearer {ADMIN}"))
        .arg(url)
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert!(out.status.success(), "curl {url}");
    let size = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (elapsed, size)
}

/// Every `*.tar.gz` under `dir`, recursively, with its modification time.
fn archives(dir: &Path, out: &mut Vec<(std::path::PathBuf, std::time::SystemTime)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            archives(&entry.path(), out);
        } else if entry.file_name().to_string_lossy().ends_with(".tar.gz") {
            out.push((entry.path(), meta.modified().unwrap()));
        }
    }
}

/// `| measure | ours | reference | ratio | goal |` with spreads; the ratio
/// is reference / ours round by round (> 1: faster than the reference).
fn row(measure: &str, ours: &[Duration], reference: &[Duration], goal: &str) {
    let mib = SIZE as f64 / f64::from(1 << 20);
    let ours_spread = Spread::of_secs(ours);
    println!(
        "| {measure} | {} ({:.0} MiB/s) | {} | {} | {goal} |",
        ours_spread.show(|v| format!("{v:.3} s")),
        mib / ours_spread.median,
        Spread::of_secs(reference).show(|v| format!("{v:.3} s")),
        ratios(ours, reference).show(|v| format!("{v:.2}×")),
    );
}

fn register_bench_workspace(server: &Server) {
    server.register_workspace("bench", "external");
}

fn main() {
    require_tools(&[
        "tar",
        "gzip",
        "zstd",
        "sha256sum",
        "bash",
        "cp",
        "curl",
        "nginx",
        "kill",
    ]);
    let rounds: usize = env_knob("BENCH_ROUNDS", 5);
    let settle = Duration::from_millis(settle_ms());
    let load_before = load_average();
    let plugins = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    write_plugin(plugins.path());
    // A 100 MiB plugin (plus the never-seen copies' one file) is just over
    // the default cap.
    let cap = ("PLUGIN_INSTALL_MAX_DIR_BYTES", (2 * SIZE).to_string());
    let server = Server::start(
        data.path(),
        plugins.path(),
        &[cap.clone(), ("PLUGIN_REGISTRY_PREPACK", "false".to_owned())],
    );
    server.wait_settled(1);
    let pid = server.pid();
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss_kib(pid, "VmRSS:");
    register_bench_workspace(&server);
    let url = format!("{}/workspaces/bench/plugins/{PLUGIN}/download", server.base);
    let zst_url = format!("{url}?format=tar.zst");
    let dir = plugins.path().display().to_string();

    // First tar.gz downloads of a changed plugin: a rewritten manifest
    // gives the directory a new fingerprint, an emptied cache forces a
    // pack; so each round stages (copy, and hashes what the memo does not
    // vouch for: the manifest), packs and streams.
    let cache_dir = data.path().join("cache");
    let clear_cache = |ext: &str| {
        for entry in std::fs::read_dir(&cache_dir).unwrap() {
            let path = entry.unwrap().path();
            if path.to_string_lossy().ends_with(ext) {
                std::fs::remove_file(path).unwrap();
            }
        }
    };
    let mut first_gz = Vec::new();
    let mut cli_gz = Vec::new();
    for _ in 0..rounds {
        let manifest = plugins.path().join(PLUGIN).join("plugin.yaml");
        std::fs::write(&manifest, std::fs::read(&manifest).unwrap()).unwrap();
        clear_cache(".tar.gz");
        clear_cache(".tar.zst");
        first_gz.push(curl(&url, &[]));
        cli_gz.push(shell(&format!(
            "tar -C {dir}/{PLUGIN} -cf - . | gzip -1 > /dev/null"
        )));
    }
    // An unchanged plugin in a format not packed yet: no copy, no re-hash
    // (the directory's fingerprint vouches for its digest), pack + stream.
    curl(&url, &[]);
    let mut new_format_zst = Vec::new();
    let mut cli_zst = Vec::new();
    for _ in 0..rounds {
        clear_cache(".tar.zst");
        new_format_zst.push(curl(&zst_url, &[]));
        cli_zst.push(shell(&format!(
            "tar -C {dir}/{PLUGIN} -cf - . | zstd -1 -q > /dev/null"
        )));
    }
    // Never-seen content, tar.zst: a fresh copy each round, written
    // `BENCH_SETTLE_MS` before its download; the reference does the same
    // work on the same copy: read, hash every byte, compress.
    let mut never_seen_zst = Vec::new();
    let mut cli_hash_zst = Vec::new();
    for round in 0..rounds {
        let name = format!("fresh-{round}");
        fresh_copy(plugins.path(), plugins.path(), &name);
        std::thread::sleep(settle);
        never_seen_zst.push(curl(
            &format!(
                "{}/workspaces/bench/plugins/{name}/download?format=tar.zst",
                server.base
            ),
            &[],
        ));
        cli_hash_zst.push(shell(&format!(
            "tar -C {dir}/{name} -cf - . | tee >(sha256sum > /dev/null) | zstd -1 -q > /dev/null"
        )));
        std::fs::remove_dir_all(plugins.path().join(&name)).unwrap();
    }
    // Cached downloads, and nginx serving the same cached tarball from
    // disk: samples taken in turns, so drift in machine load hits both.
    let cache_file = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .expect("cached archive");
    let nginx = Nginx::serve(&cache_dir);
    let file_url = nginx.url(&cache_file.file_name().unwrap().to_string_lossy());
    let mut cached = Vec::new();
    let mut served = Vec::new();
    for _ in 0..15 {
        cached.push(curl(&url, &[]));
        served.push(curl(&file_url, &[]));
    }
    drop(nginx);
    // Every policy check, no body: what each download costs before its
    // first byte.
    let etag_of = {
        let out = Command::new("curl")
            .args(["-sf", "-o", "/dev/null", "-D", "-", "-H"])
            .arg(format!("Authorization: Bearer {ADMIN}"))
            .arg(&url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| {
                l.strip_prefix("etag: ")
                    .or_else(|| l.strip_prefix("ETag: "))
            })
            .expect("an ETag")
            .trim()
            .to_owned()
    };
    let if_none_match = format!("If-None-Match: {etag_of}");
    let status = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {ADMIN}"))
        .args(["-H", &if_none_match])
        .arg(&url)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&status.stdout),
        "304",
        "the revalidation row must time a 304, not a download"
    );
    let revalidated: Vec<Duration> = (0..15).map(|_| curl(&url, &[&if_none_match])).collect();

    // 64 concurrent cached downloads; peak RSS over the run.
    // Reset the kernel's high-water mark so the peak is this burst's, not
    // the packing rounds' above.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before_burst = rss_kib(pid, "VmHWM:");
    let children: Vec<Child> = (0..64)
        .map(|_| {
            Command::new("curl")
                .args([
                    "-sf",
                    "-o",
                    "/dev/null",
                    "-H",
                    &format!("Authorization: Bearer {ADMIN}"),
                ])
                .arg(&url)
                .spawn()
                .unwrap()
        })
        .collect();
    let mut peak = 0;
    let mut children = children;
    while children.iter_mut().any(|c| c.try_wait().unwrap().is_none()) {
        peak = peak.max(rss_kib(pid, "VmRSS:"));
        std::thread::sleep(Duration::from_millis(20));
    }
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let peak = peak.max(rss_kib(pid, "VmHWM:")).max(before_burst);
    drop(server);

    // The first download of a registry plugin once the index has settled,
    // on a server with the default settings: packed ahead of time in the
    // default format, so a cached one. Each round a fresh copy; nginx then
    // serves the archive the server cached for it.
    let registry = tempfile::tempdir().unwrap();
    let prepack_data = tempfile::tempdir().unwrap();
    let prepacking = Server::start(prepack_data.path(), registry.path(), &[cap]);
    prepacking.wait_settled(0);
    register_bench_workspace(&prepacking);
    let nginx = Nginx::serve(prepack_data.path());
    let mut settled_first = Vec::new();
    let mut settled_nginx = Vec::new();
    for round in 0..rounds {
        let name = format!("settled-{round}");
        let written = std::time::SystemTime::now();
        fresh_copy(plugins.path(), registry.path(), &name);
        prepacking.wait_settled(round + 1);
        let (ours, size) = curl_sized(&format!(
            "{}/workspaces/bench/plugins/{name}/download",
            prepacking.base
        ));
        let mut packed = Vec::new();
        archives(prepack_data.path(), &mut packed);
        let (archive, _) = packed
            .into_iter()
            .filter(|(_, modified)| *modified >= written)
            .max_by_key(|(_, modified)| *modified)
            .expect("no tar.gz archive written under the data directory for this round");
        let relative = archive.strip_prefix(prepack_data.path()).unwrap();
        let (theirs, their_size) = curl_sized(&nginx.url(&relative.to_string_lossy()));
        assert_eq!(
            size,
            their_size,
            "nginx must serve the archive the server sent ({})",
            archive.display()
        );
        settled_first.push(ours);
        settled_nginx.push(theirs);
    }
    drop(nginx);
    drop(prepacking);

    println!(
        "\nDownload of a 100 MiB plugin, {rounds} rounds (cached and 304: 15 samples); \
         never-seen copies settled {} ms; load average {load_before} before, {} after\n",
        settle.as_millis(),
        load_average()
    );
    println!(
        "| measure | this service: median (min–max) | reference: median (min–max) | ratio reference / service: median (min–max) | goal |"
    );
    println!("| --- | --- | --- | --- | --- |");
    row(
        "first download of a changed plugin, tar.gz (stage + pack + stream) vs `tar -c \\| gzip -1`",
        &first_gz,
        &cli_gz,
        "≥ 0.9×",
    );
    row(
        "tar.zst of an unchanged plugin, not yet packed (pack + stream) vs `tar -c \\| zstd -1`",
        &new_format_zst,
        &cli_zst,
        "≥ 0.9×",
    );
    row(
        &format!(
            "first download of never-seen content written {} ms before, tar.zst (hash + pack + stream) vs `tar -c \\| tee >(sha256sum) \\| zstd -1`",
            settle.as_millis()
        ),
        &never_seen_zst,
        &cli_hash_zst,
        "≥ 0.9×",
    );
    row(
        "first download once the index has settled (prepacked tar.gz) vs nginx serving the same file",
        &settled_first,
        &settled_nginx,
        "≥ 0.8×",
    );
    row(
        "cached download vs nginx serving the same file",
        &cached,
        &served,
        "≥ 0.8×",
    );
    let first_gz_median = Spread::of_secs(&first_gz).median;
    println!(
        "| cached vs first download (tar.gz), medians | {} | {:.3} s | {:.1}× faster | ≥ 10× |",
        Spread::of_secs(&cached).show(|v| format!("{v:.3} s")),
        first_gz_median,
        first_gz_median / Spread::of_secs(&cached).median
    );
    println!(
        "| 304 revalidation (auth, every policy check, no body) | {} | | | |",
        Spread::of_secs(&revalidated).show(|v| format!("{v:.3} s"))
    );
    println!(
        "| peak RSS during 64 concurrent downloads, above idle | {} MiB ({} MiB above idle when the burst began) | | | ≤ 64 MiB |",
        peak.saturating_sub(idle) / 1024,
        before_burst.saturating_sub(idle) / 1024
    );
    println!(
        "| idle RSS | {:.1} MiB | | | ≤ 30 MiB |",
        idle as f64 / 1024.0
    );
    println!(
        "\nrerun: cargo bench --bench download   (BENCH_SETTLE_MS=0 for never-seen copies just written)"
    );
}
