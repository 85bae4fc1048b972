//! The hostile-input corpus (`tests/api/hostile/README.md`) through the real
//! install endpoint: every input must be refused with its exact 4xx before
//! the container step, write nothing outside the staging root, and leave
//! the staging root empty. Inputs the contract accepts (oversized or broken
//! manifests) must get past staging, to the container step (503: the
//! workspace's container does not exist).

use crate::support;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;
use support::app::{ADMIN_TOKEN, Options, spawn_app_with};
use support::git::GitServer;
use support::hostile::{
    Case, Expect, Input, corpus, same_trees, tar_gz_of, wait_until_empty, write_local,
};
use support::https::{HttpsServer, sha256_hex};

/// `PLUGIN_INSTALL_MAX_DIR_BYTES` for this binary: small, so bombs stop fast.
const CAP: u64 = 1 << 20;

/// Every path under `dir`, except the database files (SQLite touches them
/// on every request).
fn snapshot(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with("test.db") {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Files a hostile archive tried to plant, looked for everywhere a
/// traversal from the staging directory could have reached.
fn escaped_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut places: Vec<PathBuf> = data_dir.ancestors().map(Path::to_path_buf).collect();
    places.push(PathBuf::from("/tmp"));
    places
        .iter()
        .filter_map(|dir| fs::read_dir(dir).ok())
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .chain(snapshot(data_dir))
        .filter(|p| p.to_string_lossy().contains("wp-escape"))
        .collect()
}

struct Prepared {
    case: Case,
    source: String,
}

fn prepare(
    cases: Vec<Case>,
    corpus_dir: &Path,
    registry: &Path,
    server: &HttpsServer,
) -> Vec<Prepared> {
    let archives = corpus_dir.join("archives");
    fs::create_dir_all(&archives).unwrap();
    cases
        .into_iter()
        .map(|case| {
            let source = match &case.input {
                Input::Archive { file, bytes } => {
                    let path = archives.join(file);
                    fs::write(&path, bytes).unwrap();
                    server.serve(&format!("/{file}"), fs::read(&path).unwrap())
                }
                Input::WrongDigest { file, bytes } => {
                    let path = archives.join(file);
                    fs::write(&path, bytes).unwrap();
                    let pinned = server.serve(&format!("/{file}"), fs::read(&path).unwrap());
                    let (url, _) = pinned.split_once('#').unwrap();
                    format!("{url}#sha256={}", sha256_hex(b"something else"))
                }
                Input::Local { name, make } => {
                    let dir = registry.join(name);
                    fs::create_dir(&dir).unwrap();
                    make(&dir);
                    format!("local://{name}")
                }
                Input::LocalSymlinkedRoot { name } => {
                    let real = corpus_dir.join("outside-the-registry");
                    fs::create_dir_all(&real).unwrap();
                    fs::write(real.join("plugin.yaml"), "name: outside\n").unwrap();
                    std::os::unix::fs::symlink(&real, registry.join(name)).unwrap();
                    format!("local://{name}")
                }
            };
            Prepared { case, source }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_input_is_refused_before_the_container_step_and_leaves_nothing_behind() {
    let generated = Instant::now();
    let corpus_dir = tempfile::tempdir().unwrap();
    let registry = corpus_dir.path().join("registry");
    fs::create_dir(&registry).unwrap();
    let server = HttpsServer::start().await;
    let cases = corpus(CAP);
    assert!(cases.len() >= 40, "the corpus has {} cases", cases.len());
    let prepared = prepare(cases, corpus_dir.path(), &registry, &server);
    eprintln!(
        "corpus of {} cases generated in {:?}",
        prepared.len(),
        generated.elapsed()
    );

    let ca = server.write_ca(corpus_dir.path());
    let app = spawn_app_with(Options {
        plugins_dir: Some(registry.clone()),
        extra_args: vec![
            "--plugin-https-allowed-hosts".into(),
            "localhost".into(),
            "--plugin-https-ca-file".into(),
            ca.display().to_string(),
            "--plugin-install-max-dir-bytes".into(),
            CAP.to_string(),
            // The data dir must change only by what each request does:
            // packing the registry's plugins ahead of time would add
            // cache entries of its own (it has its own tests).
            "--plugin-registry-prepack".into(),
            "false".into(),
        ],
        ..Options::default()
    })
    .await;
    app.create_workspace(
        "hostile",
        json!({"name": "hostile", "runtime": "claude_code", "container": "wp-hostile-no-such-container"}),
    )
    .await;
    let staging_root = app.data_dir.path().join("staging");

    let mut failures = Vec::new();
    for Prepared { case, source } in &prepared {
        let before = snapshot(app.data_dir.path());
        let started = Instant::now();
        let (status, body) = app
            .call(
                reqwest::Method::POST,
                "/workspaces/hostile/plugins",
                Some(ADMIN_TOKEN),
                Some(json!({ "source": source })),
            )
            .await;
        let elapsed = started.elapsed();
        wait_until_empty(&staging_root).await;
        let mut problems = Vec::new();
        match &case.expect {
            Expect::Error(code, message) => {
                if status != *code || body["error"] != message.as_str() {
                    problems.push(format!("expected {code} {message:?}, got {status} {body}"));
                }
                if body["source"] != source.as_str() {
                    problems.push(format!("source not echoed: {body}"));
                }
            }
            Expect::Staged => {
                if status != 503 {
                    problems.push(format!(
                        "expected staging to pass (503 at the container), got {status} {body}"
                    ));
                }
            }
        }
        let left: Vec<_> = fs::read_dir(&staging_root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        if !left.is_empty() {
            problems.push(format!("staging root not empty: {left:?}"));
        }
        let after = snapshot(app.data_dir.path());
        if before != after {
            problems.push(format!("data dir changed: {before:?} -> {after:?}"));
        }
        let escaped = escaped_files(app.data_dir.path());
        if !escaped.is_empty() {
            problems.push(format!("files outside the staging root: {escaped:?}"));
        }
        eprintln!(
            "{:<40} {status} {:>8.1?} {}",
            case.name, elapsed, body["error"]
        );
        if !problems.is_empty() {
            failures.push((case.name, problems));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // Accepted, but the manifest counts as unparsable: only the name is known.
    let (status, listing) = app.call(reqwest::Method::GET, "/plugins", None, None).await;
    assert_eq!(status, 200);
    for name in ["l-big-manifest", "l-invalid-utf8-manifest"] {
        let entry = listing
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {listing}"));
        assert_eq!(entry["version"], "", "{entry}");
    }
}

/// `PLUGIN_INSTALL_MAX_ENTRIES` for the test below.
const MAX_ENTRIES: u64 = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_hostile_tree_gets_the_same_answer_from_a_local_directory_an_https_tarball_and_git()
 {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry");
    fs::create_dir(&registry).unwrap();
    let https = HttpsServer::start().await;
    let git = GitServer::start().await;
    let ca = https.write_ca(dir.path());
    let app = spawn_app_with(Options {
        plugins_dir: Some(registry.clone()),
        extra_args: vec![
            "--plugin-https-allowed-hosts".into(),
            "localhost".into(),
            "--plugin-https-ca-file".into(),
            ca.display().to_string(),
            "--plugin-github-base-url".into(),
            git.base_url.clone(),
            "--plugin-install-max-dir-bytes".into(),
            CAP.to_string(),
            "--plugin-install-max-entries".into(),
            MAX_ENTRIES.to_string(),
        ],
        ..Options::default()
    })
    .await;
    app.create_workspace(
        "same",
        json!({"name": "same", "runtime": "claude_code", "container": "wp-same-no-such-container"}),
    )
    .await;
    let staging_root = app.data_dir.path().join("staging");

    let mut failures = Vec::new();
    let trees = same_trees(CAP, MAX_ENTRIES);
    for tree in &trees {
        let mut sources = Vec::new();
        if tree.local {
            let plugin = registry.join(tree.name);
            fs::create_dir(&plugin).unwrap();
            write_local(&plugin, &tree.entries);
            sources.push(format!("local://{}", tree.name));
        }
        sources.push(https.serve(&format!("/{}.tar.gz", tree.name), tar_gz_of(&tree.entries)));
        let repo = git.repo("hostile", tree.name);
        let root = repo.tree_of(&tree.entries);
        repo.commit_tree(&root, "v1");
        sources.push(format!("github://hostile/{}#v1", tree.name));

        for source in &sources {
            let (status, body) = app
                .call(
                    reqwest::Method::POST,
                    "/workspaces/same/plugins",
                    Some(ADMIN_TOKEN),
                    Some(json!({ "source": source })),
                )
                .await;
            eprintln!("{:<28} {status} {} ({source})", tree.name, body["error"]);
            let Expect::Error(code, message) = &tree.expect else {
                unreachable!("every tree here is refused")
            };
            if status != *code
                || body["error"] != message.as_str()
                || body["source"] != source.as_str()
            {
                failures.push(format!(
                    "{}: {source}: expected {code} {message:?}, got {status} {body}",
                    tree.name
                ));
            }
            wait_until_empty(&staging_root).await;
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        trees.iter().filter(|t| t.local).count() >= 5,
        "every tree a directory can hold is tried locally"
    );
}

#[tokio::test]
async fn the_corpus_names_are_unique_and_cover_every_kind_of_input() {
    let cases = corpus(CAP);
    let mut names: Vec<_> = cases.iter().map(|c| c.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "duplicate case names");
    for status in [400, 413, 422] {
        assert!(
            cases
                .iter()
                .any(|c| matches!(&c.expect, Expect::Error(s, _) if *s == status)),
            "no case expects {status}"
        );
    }
    assert!(cases.iter().any(|c| c.expect == Expect::Staged));
    assert!(cases.iter().any(|c| matches!(c.input, Input::Local { .. })));
}
