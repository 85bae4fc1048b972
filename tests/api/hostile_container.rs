//! The hostile-container corpus (`tests/api/hostile_container/README.md`,
//! SPEC §6 "The workspace container is untrusted"): in a fresh container
//! per case, the agent (uid 1000) plants symlinks, FIFOs, hard links to a
//! huge sparse file, huge trees or a manifest naming system directories,
//! or swaps paths for symlinks in a loop, before and during an install,
//! reinstall, uninstall, listing, compatibility check or download. After
//! each case, whatever the service answered:
//!
//! 1. nothing outside `/configs` changed (`/proc`, `/sys`, `/dev` aside):
//!    paths, modes, owners, sizes, mtimes, link targets and contents;
//! 2. nothing under `/configs` became owned by anyone but 1000:1000;
//! 3. the answer came within the deadline and is one SPEC §5 allows for
//!    the route (2xx, or 4xx/5xx with its message), and a 200 is true of
//!    the container;
//! 4. the server's RSS grew by less than 64 MiB (and, behind an engine
//!    proxy, one operation opened a bounded number of engine connections).
//!
//! The server is the real binary, one per group of cases, with short
//! deadlines; the invariants are checked from outside (the docker CLI as
//! root in the container), so they hold whatever the mechanism.

use crate::support;

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use support::hostile_container::{Case, Group, Limits, Op, Outcome, Server, report, write_plugin};

/// `PLUGIN_INSTALL_FETCH_TIMEOUT` of the servers here: the deadline of a
/// whole install (issue 10: uninstall gets one "like install").
const DEADLINE: Duration = Duration::from_secs(30);

const LIMITS: Limits = Limits {
    deadline: DEADLINE,
    margin: Duration::from_secs(5),
    rss_growth_kib: 64 * 1024,
    engine_connections: 64,
};

/// The registry every group serves: `demo` (a rule, a fragment, a skill),
/// and plugins named like system directories of the container.
fn registry() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("registry dir");
    let root = dir.path();
    write_plugin(
        root,
        "demo",
        &[
            (
                "plugin.yaml",
                "name: demo\nversion: 1.0.0\ndescription: a demo\nskills: [demo-skill]\nruntimes: [claude_code]\n",
            ),
            ("rules/a.md", "Always be kind.\n"),
            ("notes.md", "A fragment.\n"),
            (
                "skills/demo-skill/SKILL.md",
                "---\nname: demo-skill\ndescription: demo\n---\nDo the demo.\n",
            ),
        ],
    );
    write_plugin(
        root,
        "etc",
        &[
            ("plugin.yaml", "name: etc\nskills: [etc]\n"),
            ("rules/r.md", "The etc rule.\n"),
            (
                "skills/etc/SKILL.md",
                "---\nname: etc\ndescription: x\n---\n",
            ),
        ],
    );
    write_plugin(
        root,
        "sbin",
        &[
            ("plugin.yaml", "name: sbin\n"),
            ("tool", "#!/bin/sh\necho tool\n"),
        ],
    );
    dir
}

/// Starts a server for `cases`, runs them `concurrency` at a time (one at
/// a time makes the RSS and connection figures each case's own), and
/// fails listing every case that broke an invariant.
async fn run_group(group: &str, cases: Vec<Case>, concurrency: usize, count_connections: bool) {
    let registry = registry();
    let server = Server::start(
        registry.path(),
        &[
            ("PLUGIN_ENGINE_TIMEOUT", "5s"),
            ("PLUGIN_INSTALL_FETCH_TIMEOUT", "30s"),
            // Restarts would stop the containers (and the race loops)
            // under the probes; they are the soak's business.
            ("PLUGIN_RESTART_DELAY", "1h"),
        ],
        count_connections,
    )
    .await;
    let runner = Group {
        server: &server,
        registry: registry.path(),
        exclusive: concurrency == 1,
        limits: LIMITS,
    };
    let outcomes: Vec<Outcome> = futures_util::stream::iter(cases.iter().enumerate())
        .map(|(i, case)| {
            let runner = &runner;
            async move { runner.run(case, &format!("hc-{i}")).await }
        })
        .buffered(concurrency)
        .collect()
        .await;
    report(group, &outcomes, &server);
}

/// Shell fragments the agent runs (as 1000:1000).
mod agent {
    /// Plants plugin `name` the way the agent could (no receipt, so an
    /// install over it delivers and swaps), with one rule `rules/a.md`
    /// and `yaml` as the rest of its manifest.
    pub fn plant(name: &str, yaml: &str) -> String {
        format!(
            "mkdir -p /configs/plugins/{name}/rules\n\
             printf 'name: {name}\\n{yaml}\\n' > /configs/plugins/{name}/plugin.yaml\n\
             printf 'Always be kind.\\n' > /configs/plugins/{name}/rules/a.md"
        )
    }

    /// `CLAUDE.md` holding user text and `demo`'s memory block, so an
    /// uninstall of `demo` has something to rewrite.
    pub const CLAUDE_WITH_DEMO_BLOCK: &str = "printf 'user text\\n\\n# Plugin: demo / rule: a.md\\n\\nAlways be kind.\\n' > /configs/CLAUDE.md";

    pub fn symlink(target: &str, path: &str) -> String {
        format!("rm -rf {path} && ln -s {target} {path}")
    }

    pub fn fifo(path: &str) -> String {
        format!("rm -rf {path} && mkfifo {path}")
    }

    /// `path` becomes a hard link to a 1 GiB sparse file the agent made.
    pub fn hard_link_to_1gib(path: &str) -> String {
        format!(
            "[ -e /configs/.huge ] || truncate -s 1G /configs/.huge\n\
             rm -rf {path} && ln /configs/.huge {path}"
        )
    }
}

use agent::{CLAUDE_WITH_DEMO_BLOCK, fifo, hard_link_to_1gib, plant, symlink};

/// `/configs`, `/configs/plugins`, `/configs/skills`, `CLAUDE.md`, a
/// plugin's directory, its manifest or its skills as symlinks.
fn symlink_cases() -> Vec<Case> {
    vec![
        // The test image's `/` is root's, so only root can replace
        // `/configs` itself: done here as an image whose /configs the agent
        // controls would allow.
        Case::new("configs-is-a-symlink-to-root", Op::install("demo"))
            .root("rm -rf /configs && ln -s / /configs"),
        Case::new("configs-is-a-symlink-to-an-agent-dir-in-tmp", Op::uninstall("demo"))
            .root(
                "mkdir -p /tmp/agent-configs/plugins/demo /tmp/agent-configs/skills/demo-skill\n\
                 printf 'name: demo\\nskills: [demo-skill]\\n' > /tmp/agent-configs/plugins/demo/plugin.yaml\n\
                 chown -R 1000:1000 /tmp/agent-configs\n\
                 rm -rf /configs && ln -s /tmp/agent-configs /configs",
            ),
        Case::new("configs-is-a-symlink-to-root-download", Op::download("demo"))
            .root("rm -rf /configs && ln -s / /configs")
            .expect(200),
        Case::new("plugins-is-a-symlink-to-root-install-etc", Op::install("etc"))
            .agent(&symlink("/", "/configs/plugins")),
        Case::new("plugins-is-a-symlink-to-etc-install", Op::install("demo"))
            .agent(&symlink("/etc", "/configs/plugins")),
        Case::new("plugins-is-a-symlink-to-root-uninstall-etc", Op::uninstall("etc"))
            .agent(&symlink("/", "/configs/plugins")),
        Case::new("plugins-is-a-symlink-to-root-listing", Op::List)
            .agent(&symlink("/", "/configs/plugins")),
        Case::new(
            "plugins-is-a-symlink-to-etc-compatibility",
            Op::compatibility("langgraph"),
        )
        .agent(&symlink("/etc", "/configs/plugins")),
        Case::new("plugins-is-a-symlink-to-root-download-etc", Op::download("etc"))
            .agent(&symlink("/", "/configs/plugins"))
            .expect(200),
        Case::new("skills-is-a-symlink-to-root-skills-etc", Op::uninstall("demo"))
            .agent(&plant("demo", "skills: [etc]"))
            .agent(&symlink("/", "/configs/skills")),
        Case::new("skills-is-a-symlink-to-root-skills-bin", Op::uninstall("demo"))
            .agent(&plant("demo", "skills: [bin, tmp]"))
            .agent(&symlink("/", "/configs/skills")),
        Case::new("skills-is-a-symlink-to-root-skills-dotdot", Op::uninstall("demo"))
            .agent(&plant("demo", "skills: [\"../..\", \"..\", \"/etc\", \"x/../../etc\", \".\"]"))
            .agent(&symlink("/", "/configs/skills")),
        Case::new("skills-is-a-symlink-to-etc-skills-passwd", Op::uninstall("demo"))
            .agent(&plant("demo", "skills: [passwd, group, hosts]"))
            .agent(&symlink("/etc", "/configs/skills")),
        Case::new("skill-dir-is-a-symlink-to-etc", Op::uninstall("demo"))
            .agent(&plant("demo", "skills: [demo-skill]"))
            .agent(&symlink("/etc", "/configs/skills/demo-skill")),
        Case::new("claude-md-is-a-symlink-to-etc-passwd", Op::uninstall("demo"))
            .agent(&plant("demo", ""))
            .agent(&symlink("/etc/passwd", "/configs/CLAUDE.md")),
        Case::new("claude-md-is-a-symlink-to-etc", Op::uninstall("demo"))
            .agent(&plant("demo", ""))
            .agent(&symlink("/etc", "/configs/CLAUDE.md")),
        Case::new("claude-md-is-a-symlink-to-root", Op::uninstall("demo"))
            .agent(&plant("demo", ""))
            .agent(&symlink("/", "/configs/CLAUDE.md")),
        // The agent may write /tmp itself; the service must not write
        // through the link (the invariant is "nothing outside /configs").
        Case::new(
            "claude-md-is-a-symlink-to-a-file-outside-configs",
            Op::uninstall("demo"),
        )
        .agent(&plant("demo", ""))
        .agent(
            "printf 'user text\\n\\n# Plugin: demo / rule: a.md\\n\\nAlways be kind.\\n' > /tmp/agent-notes.md",
        )
        .agent(&symlink("/tmp/agent-notes.md", "/configs/CLAUDE.md")),
        Case::new("plugin-dir-is-a-symlink-to-etc-uninstall", Op::uninstall("demo"))
            .agent(CLAUDE_WITH_DEMO_BLOCK)
            .agent(&symlink("/etc", "/configs/plugins/demo")),
        Case::new("plugin-dir-is-a-symlink-to-root-reinstall", Op::install("demo"))
            .agent(&symlink("/", "/configs/plugins/demo")),
        Case::new("plugin-yaml-is-a-symlink-naming-etc-as-skill", Op::uninstall("demo"))
            .agent(&plant("demo", ""))
            .agent("printf 'name: demo\\nskills: [etc]\\n' > /tmp/agent-manifest.yaml")
            .agent(&symlink(
                "/tmp/agent-manifest.yaml",
                "/configs/plugins/demo/plugin.yaml",
            ))
            .agent(&symlink("/", "/configs/skills")),
        Case::new("plugin-yaml-is-a-symlink-to-etc-passwd-listing", Op::List)
            .agent(&plant("demo", ""))
            .agent(&symlink("/etc/passwd", "/configs/plugins/demo/plugin.yaml")),
        Case::new("rules-dir-is-a-symlink-to-etc", Op::uninstall("demo"))
            .agent(&plant("demo", ""))
            .agent(CLAUDE_WITH_DEMO_BLOCK)
            .agent(&symlink("/etc", "/configs/plugins/demo/rules")),
    ]
}

/// Plugins named like system directories, root-owned files a runtime left
/// in a plugin directory, and a missing or non-directory `plugins/`.
fn name_and_owner_cases() -> Vec<Case> {
    /// What a runtime running as root could leave in a plugin directory.
    const ROOT_OWNED_LEFTOVERS: &str = "mkdir -p /configs/plugins/demo/__pycache__/deep\n\
         touch /configs/plugins/demo/__pycache__/deep/x.pyc /configs/plugins/demo/root.lock\n\
         chown -R 0:0 /configs/plugins/demo/__pycache__ /configs/plugins/demo/root.lock";
    vec![
        Case::new(
            "plugin-named-etc-installs-inside-configs",
            Op::install("etc"),
        )
        .expect(200),
        Case::new(
            "plugin-named-etc-uninstalls-only-its-skill",
            Op::uninstall("etc"),
        )
        .preinstall("etc")
        .agent("mkdir -p /configs/skills/etc && echo skill > /configs/skills/etc/SKILL.md")
        .expect(200),
        Case::new(
            "plugin-named-sbin-with-plugins-symlinked-to-root",
            Op::install("sbin"),
        )
        .agent(&symlink("/", "/configs/plugins")),
        Case::new(
            "root-owned-files-in-plugin-dir-uninstall",
            Op::uninstall("demo"),
        )
        .preinstall("demo")
        .root(ROOT_OWNED_LEFTOVERS),
        Case::new(
            "root-owned-files-in-plugin-dir-reinstall",
            Op::install("demo"),
        )
        .agent(&plant("demo", ""))
        .root(ROOT_OWNED_LEFTOVERS),
        Case::new("plugins-dir-removed-install", Op::install("demo"))
            .agent("rm -rf /configs/plugins"),
        Case::new("plugins-dir-is-a-file-install", Op::install("demo"))
            .agent("rm -rf /configs/plugins && echo not-a-dir > /configs/plugins"),
        Case::new("plugins-dir-is-a-file-listing", Op::List)
            .agent("rm -rf /configs/plugins && echo not-a-dir > /configs/plugins"),
    ]
}

/// FIFOs where files are expected, hard links to a 1 GiB sparse file,
/// and a 16 MiB `CLAUDE.md` against 2,000 rule files.
fn special_file_cases() -> Vec<Case> {
    /// Plugin `big` with 2,000 rule files, and a 16 MiB CLAUDE.md made of
    /// its blocks, each edited by the user (so only the fallback step of
    /// SPEC §2 can remove them).
    const BIG_PLUGIN_AND_16MIB_CLAUDE_MD: &str = "mkdir -p /configs/plugins/big/rules\n\
         printf 'name: big\\n' > /configs/plugins/big/plugin.yaml\n\
         i=0\n\
         while [ $i -lt 2000 ]; do\n\
           printf 'rule %s\\n' $i > /configs/plugins/big/rules/r$i.md\n\
           printf '# Plugin: big / rule: r%s.md\\n\\nrule %s, edited by the user\\n\\n' $i $i >> /configs/.chunk\n\
           i=$((i+1))\n\
         done\n\
         : > /configs/.claude\n\
         while [ $(stat -c %s /configs/.claude) -lt 16777216 ]; do cat /configs/.chunk >> /configs/.claude; done\n\
         head -c 16777216 /configs/.claude > /configs/CLAUDE.md\n\
         rm /configs/.chunk /configs/.claude";
    vec![
        Case::new("plugin-yaml-is-a-fifo-uninstall", Op::uninstall("demo"))
            .agent(&plant("demo", ""))
            .agent(&fifo("/configs/plugins/demo/plugin.yaml")),
        Case::new("plugin-yaml-is-a-fifo-listing", Op::List)
            .agent(&plant("demo", ""))
            .agent(&fifo("/configs/plugins/demo/plugin.yaml")),
        Case::new(
            "plugin-yaml-is-a-fifo-compatibility",
            Op::compatibility("langgraph"),
        )
        .agent(&plant("demo", ""))
        .agent(&fifo("/configs/plugins/demo/plugin.yaml")),
        Case::new("plugin-yaml-is-a-fifo-reinstall", Op::install("demo"))
            .agent(&plant("demo", ""))
            .agent(&fifo("/configs/plugins/demo/plugin.yaml")),
        Case::new("claude-md-is-a-fifo-uninstall", Op::uninstall("demo"))
            .agent(&plant("demo", ""))
            .agent(&fifo("/configs/CLAUDE.md")),
        Case::new("rule-file-is-a-fifo-uninstall", Op::uninstall("demo"))
            .agent(&plant("demo", ""))
            .agent(CLAUDE_WITH_DEMO_BLOCK)
            .agent(&fifo("/configs/plugins/demo/rules/a.md")),
        Case::new(
            "plugin-yaml-hard-links-a-1gib-sparse-file-listing",
            Op::List,
        )
        .agent(&plant("demo", ""))
        .agent(&hard_link_to_1gib("/configs/plugins/demo/plugin.yaml")),
        Case::new(
            "plugin-yaml-hard-links-a-1gib-sparse-file-uninstall",
            Op::uninstall("demo"),
        )
        .agent(&plant("demo", ""))
        .agent(&hard_link_to_1gib("/configs/plugins/demo/plugin.yaml")),
        Case::new(
            "claude-md-hard-links-a-1gib-sparse-file-uninstall",
            Op::uninstall("demo"),
        )
        .agent(&plant("demo", ""))
        .agent(&hard_link_to_1gib("/configs/CLAUDE.md")),
        Case::new(
            "rule-file-hard-links-a-1gib-sparse-file-uninstall",
            Op::uninstall("demo"),
        )
        .agent(&plant("demo", ""))
        .agent(CLAUDE_WITH_DEMO_BLOCK)
        .agent(&hard_link_to_1gib("/configs/plugins/demo/rules/a.md")),
        Case::new(
            "claude-md-of-16mib-against-2000-rule-files-uninstall",
            Op::uninstall("big"),
        )
        .agent(BIG_PLUGIN_AND_16MIB_CLAUDE_MD),
    ]
}

/// 100,000 directories under `/configs/plugins` (on a tmpfs `/configs`:
/// an overlay upper dir that large takes minutes to remove).
fn huge_tree_cases() -> Vec<Case> {
    const HUNDRED_THOUSAND_DIRS: &str =
        "cd /configs/plugins && seq 1 100000 | sed 's/^/p/' | xargs mkdir";
    vec![
        Case::new("100k-entries-under-plugins-listing", Op::List)
            .tmpfs_configs()
            .agent(HUNDRED_THOUSAND_DIRS),
        Case::new("100k-entries-under-plugins-install", Op::install("demo"))
            .tmpfs_configs()
            .agent(HUNDRED_THOUSAND_DIRS),
        Case::new(
            "100k-entries-under-plugins-compatibility",
            Op::compatibility("langgraph"),
        )
        .tmpfs_configs()
        .agent(HUNDRED_THOUSAND_DIRS),
    ]
}

/// The agent swaps a path for a symlink to `/` in a tight loop, started
/// before the operation and stopped after it.
fn race_cases() -> Vec<Case> {
    /// Alternates `path` between the agent's real directory and a symlink
    /// to `/` (counting the swaps, see `Race`).
    fn swap_for_root(path: &str) -> String {
        format!(
            "mv {path} {path}.real; ln -s / {path} && swapped=$((swapped+1)); sleep 0.01; \
             rm -f {path}; mv {path}.real {path}"
        )
    }
    vec![
        Case::new(
            "race-skills-swapped-for-root-symlink-during-uninstall",
            Op::uninstall("demo"),
        )
        .agent(&plant("demo", "skills: [etc, bin]"))
        .agent("mkdir -p /configs/skills/etc /configs/skills/bin")
        .race(&swap_for_root("/configs/skills")),
        Case::new(
            "race-plugin-dir-swapped-for-root-symlink-during-uninstall",
            Op::uninstall("demo"),
        )
        .agent(&plant("demo", ""))
        .race(&swap_for_root("/configs/plugins/demo")),
        // Path-by-path removers re-resolve `demo/sub/...` for every entry:
        // `sub` swapped for a link to `/` turns `sub/etc/passwd` into
        // `/etc/passwd`.
        Case::new(
            "race-plugin-subdir-swapped-for-root-symlink-during-uninstall",
            Op::uninstall("demo"),
        )
        .agent(&plant("demo", ""))
        .agent(
            "for d in etc bin tmp; do mkdir -p /configs/plugins/demo/sub/$d; \
             for f in passwd group hosts busybox sh ls a b c d e f g h; do \
             echo x > /configs/plugins/demo/sub/$d/$f; done; done",
        )
        .race(&swap_for_root("/configs/plugins/demo/sub")),
        Case::new(
            "race-plugin-dir-swapped-for-root-symlink-during-reinstall",
            Op::install("demo"),
        )
        .agent(&plant("demo", ""))
        .race(&swap_for_root("/configs/plugins/demo")),
        Case::new(
            "race-plugins-swapped-for-root-symlink-during-install-etc",
            Op::install("etc"),
        )
        .race(&swap_for_root("/configs/plugins")),
        Case::new(
            "race-claude-md-swapped-for-outside-symlink-during-uninstall",
            Op::uninstall("demo"),
        )
        .agent(&plant("demo", ""))
        .agent(CLAUDE_WITH_DEMO_BLOCK)
        .agent("cp /configs/CLAUDE.md /tmp/agent-notes.md")
        .race(
            "mv /configs/CLAUDE.md /configs/CLAUDE.md.real; \
             ln -s /tmp/agent-notes.md /configs/CLAUDE.md && swapped=$((swapped+1)); \
             sleep 0.01; rm -f /configs/CLAUDE.md; mv /configs/CLAUDE.md.real /configs/CLAUDE.md",
        ),
    ]
}

fn all_cases() -> Vec<Case> {
    [
        symlink_cases(),
        name_and_owner_cases(),
        special_file_cases(),
        huge_tree_cases(),
        race_cases(),
    ]
    .concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn symlinked_configs_paths_never_lead_the_service_outside_configs() {
    run_group("symlinks", symlink_cases(), 3, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn system_directory_names_and_root_owned_files_stay_inside_configs() {
    run_group("names and owners", name_and_owner_cases(), 3, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifos_and_huge_files_are_answered_in_time_with_bounded_memory() {
    run_group("special files", special_file_cases(), 1, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_thousand_plugin_dirs_cost_bounded_engine_calls_and_memory() {
    run_group("huge trees", huge_tree_cases(), 1, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paths_swapped_for_symlinks_during_an_operation_never_escape_configs() {
    run_group("races", race_cases(), 1, true).await;
}

#[test]
fn the_readme_lists_every_case_and_the_corpus_is_large_enough() {
    let readme = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/hostile_container/README.md"),
    )
    .expect("tests/api/hostile_container/README.md");
    let cases = all_cases();
    assert!(cases.len() >= 25, "only {} cases", cases.len());
    let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "duplicate case names");
    let missing: Vec<&str> = names
        .into_iter()
        .filter(|n| !readme.contains(&format!("`{n}`")))
        .collect();
    assert!(missing.is_empty(), "not in the README: {missing:?}");
}
