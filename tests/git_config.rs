//! libgit2 reads the host's git configuration (`~/.gitconfig`, XDG,
//! `/etc/gitconfig`) unless told not to; a `url.<base>.insteadOf` there
//! would make a `github://` source come from another repository. A binary
//! of its own: the test points `HOME` at such a configuration before
//! libgit2 starts, which tests running beside it must not see.

pub mod support;

use support::git::GitServer;
use workspace_plugins::adapters::git::GitResolver;
use workspace_plugins::ports::resolver::{FetchLimits, SourceResolver};

#[tokio::test]
async fn the_hosts_git_config_never_redirects_a_fetch() {
    let home = tempfile::tempdir().unwrap();
    // SAFETY: the only test of this binary, before any thread reads the
    // environment and before libgit2 (which reads HOME) starts.
    unsafe {
        std::env::set_var("HOME", home.path());
        std::env::set_var("XDG_CONFIG_HOME", home.path());
    }
    let server = GitServer::start().await;
    for (repo, version) in [("demo", "1.0.0"), ("impostor", "6.6.6")] {
        let r = server.repo("acme", repo);
        r.write("plugin.yaml", format!("version: {version}\n"))
            .commit(repo);
        r.tag("v1").publish();
    }
    std::fs::write(
        home.path().join(".gitconfig"),
        format!(
            "[url \"{base}/acme/impostor.git\"]\n\tinsteadOf = {base}/acme/demo.git\n",
            base = server.base_url
        ),
    )
    .unwrap();

    let resolver = GitResolver::new(&server.base_url, None, None).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let limits = FetchLimits::new(1 << 20, 10_000);
    resolver
        .fetch("acme/demo#v1", dest.path(), &limits)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(dest.path().join("plugin.yaml")).unwrap(),
        "version: 1.0.0\n"
    );
}
