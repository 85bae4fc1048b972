//! `github://<owner>/<repo>[#<ref>]` (SPEC §3) as a [`SourceResolver`] over
//! libgit2 (git2), for GitHub or any git smart-HTTP server at
//! `PLUGIN_GITHUB_BASE_URL`.
//!
//! A fetch runs on the blocking pool: it creates a private bare repository
//! next to the staging directory (`<dest>.git-work`), fetches only the
//! commit the ref names (depth 1 where the server allows), then writes that
//! commit's *tree* into the staging directory by walking git objects, not by
//! checking out, through the one staging writer: so no `.git` ever lands
//! in staging, symlinks and submodules are refused instead of created,
//! every path passes the hostile-tree rule, the size cap is charged before
//! a blob is written and every entry counts against the entry cap (a
//! repeated subtree each time it appears). The bytes received are charged
//! to the fetch's disk allowance while the pack exists; the work directory
//! is removed before `fetch` returns, on every path.
//!
//! Secrets: the token is only ever handed to libgit2 through its
//! credentials callback (as `x-access-token:<token>`, GitHub's convention),
//! never placed in a URL, an error or a log line.
//!
//! Must not depend on `app`: settings arrive as plain values in
//! [`GitResolver::new`].

mod tree;

use std::cell::Cell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

use async_trait::async_trait;
use git2::{
    AutotagOption, Cred, CredentialType, Direction, ErrorClass, ErrorCode, FetchOptions, Oid,
    RemoteCallbacks, Repository,
};

use crate::domain::source::{GithubSpec, SpecError};
use crate::ports::resolver::{
    Cancellation, DiskAllowance, FetchError, FetchLimits, Fetched, RevisionNow, SourceResolver,
    SpecCheck,
};

/// How long libgit2 may wait for a TCP connection to the git server.
const CONNECT_TIMEOUT_MS: i32 = 15_000;
/// How long libgit2 may wait on one read or write to the git server: a
/// stalled server frees its thread after this, whatever the deadline.
const IO_TIMEOUT_MS: i32 = 60_000;
/// libgit2's `GIT_FETCH_DEPTH_UNSHALLOW`: full history, shallow roots lifted.
const UNSHALLOW: i32 = i32::MAX;
/// Where a fetched ref lands in the private repository.
const FETCHED_REF: &str = "refs/fetched/target";
/// The refspecs of the by-sha fallback: every branch and every tag.
const ALL_REFS: [&str; 2] = [
    "+refs/heads/*:refs/remotes/origin/*",
    "+refs/tags/*:refs/tags/*",
];

/// The git server's token, redacted from `Debug`.
#[derive(Clone)]
struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

/// The resolver could not be set up (start-up error).
#[derive(Debug, thiserror::Error)]
#[error("cannot trust the CA file {path} (PLUGIN_HTTPS_CA_FILE): {message}")]
pub struct GitSetupError {
    path: PathBuf,
    message: String,
}

/// `github://` sources fetched with libgit2 from `base_url`.
#[derive(Debug, Clone)]
pub struct GitResolver {
    base_url: String,
    token: Option<Token>,
}

impl GitResolver {
    /// A resolver fetching `<base_url>/<owner>/<repo>.git`.
    ///
    /// `ca_file` (PEM) is added to the roots libgit2 trusts, process-wide:
    /// with the OpenSSL backend `GIT_OPT_SET_SSL_CERT_LOCATIONS` loads it
    /// into the same store as the system roots, so it extends them (a
    /// private mirror) rather than replacing them.
    ///
    /// Errors: [`GitSetupError`] when `ca_file` cannot be loaded.
    pub fn new(
        base_url: &str,
        token: Option<String>,
        ca_file: Option<&Path>,
    ) -> Result<Self, GitSetupError> {
        configure_libgit2();
        if let Some(path) = ca_file {
            trust_ca_file(path)?;
        }
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            token: token.map(Token),
        })
    }

    fn repository_url(&self, spec: &GithubSpec) -> String {
        format!("{}/{}/{}.git", self.base_url, spec.owner, spec.repo)
    }
}

/// libgit2's options are C globals; they are written exactly once, before
/// the first resolver exists, so no fetch of ours reads them while they
/// change:
/// - the network timeouts;
/// - no system, XDG or global git configuration: the host's `~/.gitconfig`
///   could otherwise rewrite fetch URLs (`url.<base>.insteadOf`) or send
///   them through a proxy, so a `github://` source would come from
///   somewhere else than the service is configured to fetch from.
fn configure_libgit2() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use git2::ConfigLevel;
        // SAFETY: libgit2 reads these when it connects and when it opens
        // configuration. `Once` makes this the only write, and it happens
        // before any `GitResolver` (hence any libgit2 use of this service)
        // exists.
        let set = unsafe {
            git2::opts::set_server_connect_timeout_in_milliseconds(CONNECT_TIMEOUT_MS)
                .and_then(|()| git2::opts::set_server_timeout_in_milliseconds(IO_TIMEOUT_MS))
                .and_then(|()| {
                    [
                        ConfigLevel::System,
                        ConfigLevel::XDG,
                        ConfigLevel::Global,
                        ConfigLevel::ProgramData,
                    ]
                    .into_iter()
                    .try_for_each(|level| git2::opts::set_search_path(level, ""))
                })
        };
        if let Err(e) = set {
            tracing::warn!(error = %e, "could not configure libgit2");
        }
    });
}

fn trust_ca_file(path: &Path) -> Result<(), GitSetupError> {
    // Calls are serialized: OpenSSL's store is shared by every fetch.
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let setup_error = |message: String| GitSetupError {
        path: path.to_owned(),
        message,
    };
    if !path.is_file() {
        return Err(setup_error("not a readable file".into()));
    }
    // SAFETY: adds `path` to libgit2's global OpenSSL store. Serialized by
    // `LOCK`; OpenSSL locks the store itself against concurrent handshakes.
    unsafe { git2::opts::set_ssl_cert_file(path) }.map_err(|e| setup_error(e.message().into()))
}

#[async_trait]
impl SourceResolver for GitResolver {
    fn scheme(&self) -> &'static str {
        "github"
    }

    fn check_spec(&self, spec: &str) -> Result<SpecCheck, SpecError> {
        GithubSpec::parse(spec).map(|s| SpecCheck {
            pinned: s.is_pinned(),
        })
    }

    /// Errors: [`FetchError::NotFound`] for a missing repository or ref (and
    /// for a repository the server wants credentials for when no token is
    /// configured: GitHub answers 401 alike for private and missing
    /// repositories); [`FetchError::Unsafe`] for symlinks, submodules and
    /// hostile paths; [`FetchError::TooLarge`] past the cap or the disk
    /// allowance; [`FetchError::TooManyEntries`] past the entry cap;
    /// [`FetchError::Cancelled`]; anything else is [`FetchError::Other`].
    async fn fetch(
        &self,
        spec: &str,
        dest: &Path,
        limits: &FetchLimits,
    ) -> Result<Fetched, FetchError> {
        let spec = GithubSpec::parse(spec).map_err(|e| FetchError::Other(Box::new(e)))?;
        let job = FetchJob {
            url: self.repository_url(&spec),
            token: self.token.clone(),
            spec,
            dest: dest.to_path_buf(),
            limits: limits.clone(),
        };
        // Awaiting the join (rather than detaching) means that when this
        // future completes, the thread has stopped writing into `dest` and
        // removed its work directory. A caller that drops the future early
        // (deadline) raises `limits.cancel` as it removes `dest`.
        tokio::task::spawn_blocking(move || job.run())
            .await
            .map_err(|e| FetchError::Other(Box::new(e)))?
    }

    /// A full commit sha is pinned (no network); a tag, a branch or the
    /// default branch is looked up in the server's ref list alone, under
    /// the same credentials and network timeouts as a fetch.
    ///
    /// Errors: as [`Self::fetch`]'s `NotFound`, `Cancelled` and `Other`.
    async fn revision_now(
        &self,
        spec: &str,
        cancel: &Cancellation,
    ) -> Result<RevisionNow, FetchError> {
        let spec = GithubSpec::parse(spec).map_err(|e| FetchError::Other(Box::new(e)))?;
        if spec.is_commit_sha() {
            return Ok(RevisionNow::Pinned);
        }
        let job = ListJob {
            url: self.repository_url(&spec),
            token: self.token.clone(),
            spec,
            cancel: cancel.clone(),
        };
        tokio::task::spawn_blocking(move || job.run())
            .await
            .map_err(|e| FetchError::Other(Box::new(e)))?
    }
}

/// What the spec's ref names, once the server's advertisement is known.
enum Target {
    /// An advertised ref (`HEAD`, `refs/tags/…`, `refs/heads/…`).
    Ref(String),
    /// A full commit sha.
    Commit(Oid),
}

struct FetchJob {
    url: String,
    token: Option<Token>,
    spec: GithubSpec,
    dest: PathBuf,
    limits: FetchLimits,
}

impl FetchJob {
    fn run(self) -> Result<Fetched, FetchError> {
        if self.limits.cancel.is_cancelled() {
            return Err(FetchError::Cancelled);
        }
        // Declared first so it is dropped last, after the repository: the
        // pack's bytes stay charged until it is gone.
        let work = WorkDir::create(&self.dest, &self.limits.disk)?;
        let repo = Repository::init_bare(work.path()).map_err(other)?;
        let session = Session::new(self.token.as_ref(), &self.limits, &work);
        let commit = self.fetch_commit(&repo, &session)?;
        let tree = repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(other)?;
        let written = tree::write_tree(&repo, &tree, &self.dest, &self.limits)?;
        Ok(Fetched {
            name: self.spec.plugin_name().to_owned(),
            tree: written,
            revision: Some(commit.to_string()),
        })
    }

    /// Fetches what the spec names into `repo` and returns its commit.
    fn fetch_commit(&self, repo: &Repository, session: &Session<'_>) -> Result<Oid, FetchError> {
        let mut remote = repo.remote_anonymous(&self.url).map_err(other)?;
        // The advertisement answers "does the repository exist, may we read
        // it, is the ref a tag or a branch" before anything is downloaded.
        let advertised = advertised_refs(&mut remote, session)?;
        match target(&self.spec, &advertised)? {
            Target::Ref(name) => {
                fetch_ref(&mut remote, session, &name)?;
                repo.find_reference(FETCHED_REF)
                    .and_then(|r| r.peel_to_commit())
                    .map(|c| c.id())
                    .map_err(other)
            }
            Target::Commit(oid) => {
                // A sha some ref points at (an annotated tag through its
                // peeled `^{}` line) is fetched through that ref at depth 1,
                // which every server allows. The ref may have moved since
                // it was listed: then the sha is fetched on its own.
                let tip = advertised
                    .iter()
                    .find(|(_, o)| *o == oid)
                    .map(|(name, _)| name.trim_end_matches("^{}"));
                if let Some(name) = tip {
                    fetch_ref(&mut remote, session, name)?;
                    if let Ok(commit) = peel_to_commit(repo, oid) {
                        return Ok(commit);
                    }
                }
                self.fetch_sha(repo, &mut remote, session, oid)
            }
        }
    }

    /// A sha is fetched directly at depth 1 when the server allows wants of
    /// unadvertised objects (GitHub does); otherwise (plain `git
    /// http-backend`, whose upload-pack does not advertise
    /// `allow-*-sha1-in-want`) every branch and tag is fetched in full and
    /// the commit looked up among them.
    fn fetch_sha(
        &self,
        repo: &Repository,
        remote: &mut git2::Remote<'_>,
        session: &Session<'_>,
        oid: Oid,
    ) -> Result<Oid, FetchError> {
        let sha = oid.to_string();
        match session.fetch(remote, &[sha.as_str()], 1) {
            Ok(()) => {
                if let Ok(commit) = peel_to_commit(repo, oid) {
                    return Ok(commit);
                }
            }
            Err(e @ (FetchError::Cancelled | FetchError::TooLarge)) => return Err(e),
            Err(e) => {
                tracing::debug!(error = %error_chain(&e), "fetch by sha refused; fetching all refs");
            }
        }
        // Everything, unshallowing whatever an earlier depth-1 fetch into
        // this repository left shallow (what `git fetch --unshallow` sends).
        session.fetch(remote, &ALL_REFS, UNSHALLOW)?;
        match repo.find_object(oid, None) {
            Ok(object) => object
                .peel_to_commit()
                .map(|c| c.id())
                .map_err(|_| FetchError::NotFound),
            Err(e) if e.code() == ErrorCode::NotFound => Err(FetchError::NotFound),
            Err(e) => Err(other(e)),
        }
    }
}

/// The server's ref list: names and the ids they point at (an annotated
/// tag also as its peeled `<name>^{}` line).
fn advertised_refs(
    remote: &mut git2::Remote<'_>,
    session: &Session<'_>,
) -> Result<Vec<(String, Oid)>, FetchError> {
    let connection = remote
        .connect_auth(Direction::Fetch, Some(session.callbacks()), None)
        .map_err(|e| session.classify(e))?;
    let heads = connection.list().map_err(|e| session.classify(e))?;
    Ok(heads
        .iter()
        .map(|h| (h.name().to_owned(), h.oid()))
        .collect())
}

/// What `spec`'s ref names among the `advertised` refs: no ref is the
/// default branch (`HEAD`); a name is a tag first, then a branch, as git
/// resolves an ambiguous name.
fn target(spec: &GithubSpec, advertised: &[(String, Oid)]) -> Result<Target, FetchError> {
    let has = |name: &str| advertised.iter().any(|(a, _)| a == name);
    Ok(match spec.reference.as_deref() {
        None if has("HEAD") => Target::Ref("HEAD".into()),
        None => return Err(FetchError::NotFound),
        Some(sha) if spec.is_commit_sha() => Target::Commit(Oid::from_str(sha).map_err(other)?),
        Some(r) if has(&format!("refs/tags/{r}")) => Target::Ref(format!("refs/tags/{r}")),
        Some(r) if has(&format!("refs/heads/{r}")) => Target::Ref(format!("refs/heads/{r}")),
        Some(_) => return Err(FetchError::NotFound),
    })
}

/// The commit the advertised ref `name` points at: an annotated tag's
/// peeled line when the server lists one (what an install records), else
/// the id itself.
fn advertised_commit(advertised: &[(String, Oid)], name: &str) -> Option<Oid> {
    let peeled = format!("{name}^{{}}");
    let find = |wanted: &str| {
        advertised
            .iter()
            .find(|(a, _)| a == wanted)
            .map(|(_, oid)| *oid)
    };
    find(&peeled).or_else(|| find(name))
}

/// Reads the server's ref list only (what `git ls-remote` does): no
/// repository, no object fetched.
struct ListJob {
    url: String,
    token: Option<Token>,
    spec: GithubSpec,
    cancel: Cancellation,
}

impl ListJob {
    fn run(self) -> Result<RevisionNow, FetchError> {
        if self.cancel.is_cancelled() {
            return Err(FetchError::Cancelled);
        }
        let mut remote = git2::Remote::create_detached(self.url.as_str()).map_err(other)?;
        let session = Session::listing(self.token.as_ref(), &self.cancel);
        let advertised = advertised_refs(&mut remote, &session)?;
        match target(&self.spec, &advertised)? {
            Target::Commit(_) => Ok(RevisionNow::Pinned),
            Target::Ref(name) => advertised_commit(&advertised, &name)
                .map(|oid| RevisionNow::At(oid.to_string()))
                .ok_or(FetchError::NotFound),
        }
    }
}

/// Fetches the advertised ref `name` at depth 1 into [`FETCHED_REF`].
fn fetch_ref(
    remote: &mut git2::Remote<'_>,
    session: &Session<'_>,
    name: &str,
) -> Result<(), FetchError> {
    let refspec = format!("+{name}:{FETCHED_REF}");
    session.fetch(remote, &[&refspec], 1)
}

/// The commit `oid` names (itself, or the commit a tag object points at).
fn peel_to_commit(repo: &Repository, oid: Oid) -> Result<Oid, git2::Error> {
    repo.find_object(oid, None)
        .and_then(|o| o.peel_to_commit())
        .map(|c| c.id())
}

fn other(e: impl std::error::Error + Send + Sync + 'static) -> FetchError {
    FetchError::Other(Box::new(e))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// One fetch's conversation with the server: credentials, cancellation,
/// the download bound, and what happened, for classifying libgit2 errors
/// (which carry no HTTP status of their own beyond their message).
struct Session<'a> {
    token: Option<&'a Token>,
    cancel: &'a Cancellation,
    /// Bytes the download may take: the pack is compressed and, in the
    /// by-sha fallback, holds history, so it may exceed the tree; bounded
    /// so a huge repository cannot fill the disk before the tree cap runs.
    max_download: u64,
    /// Where the received bytes are charged while the pack is on disk;
    /// `None` when only the ref list is read (nothing is received).
    work: Option<&'a WorkDir>,
    credentials_asked: Cell<u32>,
    over_download: Cell<bool>,
}

impl<'a> Session<'a> {
    fn new(token: Option<&'a Token>, limits: &'a FetchLimits, work: &'a WorkDir) -> Self {
        Self {
            token,
            cancel: &limits.cancel,
            max_download: limits
                .max_bytes
                .saturating_mul(4)
                .saturating_add(1024 * 1024),
            work: Some(work),
            credentials_asked: Cell::new(0),
            over_download: Cell::new(false),
        }
    }

    /// A session that only reads the server's ref list.
    fn listing(token: Option<&'a Token>, cancel: &'a Cancellation) -> Self {
        Self {
            token,
            cancel,
            max_download: 0,
            work: None,
            credentials_asked: Cell::new(0),
            over_download: Cell::new(false),
        }
    }

    fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut callbacks = RemoteCallbacks::new();
        // libgit2 asks once per connection; asking again on the same
        // connection means the server refused the first answer.
        let mut asked_here = 0u32;
        callbacks.credentials(move |_url, _user, allowed| {
            asked_here += 1;
            self.credentials_asked.set(self.credentials_asked.get() + 1);
            match self.token {
                None => Err(git2::Error::from_str(
                    "the git server requires credentials and no token is configured",
                )),
                Some(_) if asked_here > 1 => Err(git2::Error::from_str(
                    "the git server rejected the configured token",
                )),
                Some(_) if !allowed.contains(CredentialType::USER_PASS_PLAINTEXT) => Err(
                    git2::Error::from_str("the git server asks for unsupported credentials"),
                ),
                Some(token) => Cred::userpass_plaintext("x-access-token", &token.0),
            }
        });
        // Counts are per fetch: each fetch writes a pack of its own.
        let mut charged_here = 0u64;
        callbacks.transfer_progress(move |progress| {
            let received = progress.received_bytes() as u64;
            let charged = self
                .work
                .is_some_and(|work| work.charge(received.saturating_sub(charged_here)).is_ok());
            if received > self.max_download || !charged {
                self.over_download.set(true);
            }
            charged_here = charged_here.max(received);
            !self.over_download.get() && !self.cancel.is_cancelled()
        });
        callbacks.sideband_progress(|_| !self.cancel.is_cancelled());
        callbacks
    }

    /// `depth` is 1 for the tip only, or [`UNSHALLOW`].
    fn fetch(
        &self,
        remote: &mut git2::Remote<'_>,
        refspecs: &[&str],
        depth: i32,
    ) -> Result<(), FetchError> {
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(self.callbacks())
            .download_tags(AutotagOption::None)
            .update_fetchhead(false)
            .depth(depth);
        remote
            .fetch(refspecs, Some(&mut options), None)
            .map_err(|e| self.classify(e))
    }

    fn classify(&self, e: git2::Error) -> FetchError {
        if self.cancel.is_cancelled() {
            return FetchError::Cancelled;
        }
        if self.over_download.get() {
            return FetchError::TooLarge;
        }
        // Without a token, a server that wants credentials is, to us, a
        // repository that does not exist: GitHub answers 401 alike for
        // missing and private repositories.
        if self.token.is_none() && self.credentials_asked.get() > 0 {
            return FetchError::NotFound;
        }
        let http_404 = e.class() == ErrorClass::Http && e.message().ends_with("status code: 404");
        if http_404 || (e.code() == ErrorCode::NotFound && e.class() != ErrorClass::Os) {
            return FetchError::NotFound;
        }
        other(e)
    }
}

/// The private repository next to the staging directory, removed on drop;
/// the packs received into it are charged to the fetch's disk allowance
/// until then.
struct WorkDir {
    path: PathBuf,
    disk: DiskAllowance,
    charged: Cell<u64>,
}

impl WorkDir {
    fn create(dest: &Path, disk: &DiskAllowance) -> Result<Self, FetchError> {
        let name = dest
            .file_name()
            .ok_or_else(|| FetchError::Other("staging directory has no file name".into()))?;
        let mut sibling = name.to_os_string();
        sibling.push(".git-work");
        let path = dest.with_file_name(sibling);
        std::fs::create_dir(&path).map_err(other)?;
        Ok(Self {
            path,
            disk: disk.clone(),
            charged: Cell::new(0),
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn charge(&self, bytes: u64) -> Result<(), crate::domain::staging::OverBudget> {
        self.disk.charge(bytes)?;
        self.charged.set(self.charged.get() + bytes);
        Ok(())
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                // Still on disk: it stays charged.
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove git work directory");
            }
            _ => self.disk.release(self.charged.get()),
        }
    }
}
