//! Install latency against a real Docker engine, next to `docker cp` of the
//! same tree, for a 1 MiB and a 50 MiB plugin. Prints a Markdown table for
//! benches/RESULTS.md. Needs the engine and the test image:
//!
//!     bash scripts/services.sh && cargo bench --bench install
//!
//! The workspace is `paused`, so installs never restart the container and
//! only delivery is measured; every round changes one file so no install is
//! "unchanged". Each plugin is written 2.5 s before its rounds
//! (`BENCH_SETTLE_MS`, default 2500), so only the changed file is recent,
//! as for a registry plugin written earlier; `BENCH_SETTLE_MS=0` measures a
//! plugin written just before (see below).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use workspace_plugins::app::server;
use workspace_plugins::app::settings::Settings;

const ADMIN: &str = "bench-admin-token-0123456789";

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A plugin of `total` bytes in 16 files of pseudo-random (incompressible)
/// content under `dir/name`.
fn write_plugin(dir: &Path, name: &str, total: usize) {
    let root = dir.join(name);
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::write(root.join("plugin.yaml"), "version: 1.0.0\n").unwrap();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let per_file = total / 16;
    for i in 0..16 {
        let mut bytes = vec![0u8; per_file];
        for chunk in bytes.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let n = chunk.len();
            chunk.copy_from_slice(&state.to_le_bytes()[..n]);
        }
        std::fs::write(root.join(format!("data/part-{i:02}.bin")), bytes).unwrap();
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::main]
async fn main() {
    let status = Command::new("bash")
        .arg("scripts/test-image.sh")
        .status()
        .expect("bash");
    assert!(
        status.success(),
        "could not build the test image (is the Docker engine running? scripts/services.sh)"
    );
    let data = tempfile::tempdir().unwrap();
    let registry = tempfile::tempdir().unwrap();
    let settings = Settings::try_parse_from([
        "bench",
        "--plugin-listen",
        "127.0.0.1:0",
        "--plugin-admin-token",
        ADMIN,
        "--plugin-data-dir",
        data.path().to_str().unwrap(),
        "--plugins-dir",
        registry.path().to_str().unwrap(),
    ])
    .unwrap()
    .normalized();
    let bound = server::bind(&settings).await.expect("server");
    let base = format!("http://{}", bound.local_addr().unwrap());
    tokio::spawn(bound.serve(std::future::pending()));
    let client = reqwest::Client::new();

    let container = format!("wp-bench-{:08x}", rand::random::<u32>());
    docker(&[
        "run",
        "-d",
        "--name",
        &container,
        "workspace-plugins-test:busybox",
    ]);
    let created = client
        .put(format!("{base}/workspaces/bench"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"name": "bench", "runtime": "claude_code", "container": container, "status": "paused"}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());

    println!(
        "| plugin | install (median) | docker cp (median) | ratio install / docker cp | rounds |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for (label, bytes, rounds) in [("1 MiB", 1 << 20, 15), ("50 MiB", 50 << 20, 5)] {
        let name = format!("bench-{}", label.replace(' ', "").to_lowercase());
        write_plugin(registry.path(), &name, bytes);
        // `BENCH_SETTLE_MS`: wait this long after writing the plugin. A
        // registry file changed within 2 s of an install is verified by its
        // bytes as it is delivered (a second hash); waiting measures the
        // steady state of plugins written earlier.
        let settle_ms = std::env::var("BENCH_SETTLE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2500);
        std::thread::sleep(Duration::from_millis(settle_ms));
        let mut installs = Vec::new();
        let mut copies = Vec::new();
        for round in 0..=rounds {
            std::fs::write(
                registry.path().join(&name).join("round.txt"),
                round.to_string(),
            )
            .unwrap();
            let started = Instant::now();
            let resp = client
                .post(format!("{base}/workspaces/bench/plugins"))
                .bearer_auth(ADMIN)
                .json(&serde_json::json!({"source": name}))
                .send()
                .await
                .unwrap();
            let elapsed = started.elapsed();
            assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
            let src = registry.path().join(&name);
            let dest = format!("{container}:/tmp/cp-{round}");
            let started = Instant::now();
            docker(&["cp", src.to_str().unwrap(), &dest]);
            let cp = started.elapsed();
            docker(&["exec", &container, "rm", "-rf", &format!("/tmp/cp-{round}")]);
            // Round 0 warms caches and connections; it is not counted.
            if round > 0 {
                installs.push(elapsed);
                copies.push(cp);
            }
        }
        let (install, cp) = (median(installs), median(copies));
        println!(
            "| {label} | {:.1} ms | {:.1} ms | {:.2}× | {rounds} |",
            install.as_secs_f64() * 1e3,
            cp.as_secs_f64() * 1e3,
            install.as_secs_f64() / cp.as_secs_f64()
        );
    }
    docker(&["rm", "-f", &container]);
    println!("\nrerun: bash scripts/services.sh && cargo bench --bench install");
}
