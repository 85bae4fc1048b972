//! A real git smart-HTTP server on loopback: repositories made with the
//! `git` CLI in a temp dir, served by `git http-backend` (CGI) behind a
//! small HTTP/1.1 server written here with tokio.
//!
//! Each connection serves one request and is closed (`Connection: close`);
//! git clients reconnect. Modes: `token` requires `Authorization: Basic`
//! with that password (401 with a challenge otherwise); `stall` reads the
//! request, says nothing for that long, then hangs up; `throttle` sends the
//! response in small chunks with pauses, so a client sees a slow transfer.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// How the server behaves; the default is a plain, public server.
#[derive(Clone, Default)]
pub struct ServerOptions {
    /// Require `Authorization: Basic <any user>:<token>`.
    pub token: Option<String>,
    /// Read the request, then stall this long and hang up without answering.
    pub stall: Option<Duration>,
    /// Send responses in chunks of this many bytes, pausing between them.
    pub throttle: Option<(usize, Duration)>,
}

pub struct GitServer {
    /// `http://127.0.0.1:<port>`: the `PLUGIN_GITHUB_BASE_URL` of tests.
    pub base_url: String,
    /// `GIT_PROJECT_ROOT`: `<owner>/<repo>.git` bare repositories.
    pub root: tempfile::TempDir,
    requests: Arc<watch::Sender<Vec<String>>>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for GitServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl GitServer {
    pub async fn start() -> Self {
        Self::start_with(ServerOptions::default()).await
    }

    pub async fn start_with(options: ServerOptions) -> Self {
        require_git_http_backend();
        let root = tempfile::tempdir().expect("git project root");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(watch::Sender::new(Vec::new()));
        let (tx, mut rx) = oneshot::channel::<()>();
        let config = Arc::new(Config {
            root: root.path().to_owned(),
            options,
            requests: requests.clone(),
        });
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let config = config.clone();
                        tokio::spawn(async move {
                            if let Err(e) = serve(stream, &config).await {
                                eprintln!("git test server: {e}");
                            }
                        });
                    }
                }
            }
        });
        Self {
            base_url: format!("http://{addr}"),
            root,
            requests,
            shutdown: Some(tx),
        }
    }

    /// A new repository `<owner>/<repo>` on this server, with a working
    /// copy to build its history in.
    pub fn repo(&self, owner: &str, repo: &str) -> Repo {
        let bare = self.root.path().join(owner).join(format!("{repo}.git"));
        std::fs::create_dir_all(&bare).expect("bare dir");
        git(&bare, &["init", "--bare", "--quiet", "-b", "main"]);
        let work = tempfile::tempdir().expect("work dir");
        git(work.path(), &["init", "--quiet", "-b", "main"]);
        Repo { work, bare }
    }

    /// `METHOD /path?query` of every request received so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.borrow().clone()
    }

    /// Waits (up to 30 s) until the requests received so far (as
    /// [`Self::requests`] lists them) satisfy `until`.
    pub async fn wait_for_requests(&self, until: impl Fn(&[String]) -> bool) {
        let mut requests = self.requests.subscribe();
        let seen = tokio::time::timeout(Duration::from_secs(30), async {
            requests.wait_for(|r| until(r)).await.is_ok()
        });
        assert!(
            seen.await.unwrap_or(false),
            "not within 30 s: {:?}",
            self.requests()
        );
    }
}

/// Fails (never skips) when git or its http-backend is missing.
fn require_git_http_backend() {
    let exec_path = Command::new("git")
        .arg("--exec-path")
        .output()
        .expect("the git CLI is required for these tests: install git (apt-get install git)");
    let dir = String::from_utf8_lossy(&exec_path.stdout).trim().to_owned();
    assert!(
        Path::new(&dir).join("git-http-backend").exists(),
        "git http-backend not found in {dir}: install a full git (apt-get install git)"
    );
}

/// Runs git with a fixed identity and no user or system config.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs git with `input` on its standard input.
pub fn git_with_input(dir: &Path, args: &[&str], input: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run git");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input)
        .expect("git stdin");
    let out = child.wait_with_output().expect("git output");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A repository being built: edit the working copy, commit, tag, branch,
/// then `publish` to the served bare repository.
pub struct Repo {
    pub work: tempfile::TempDir,
    pub bare: PathBuf,
}

impl Repo {
    pub fn git(&self, args: &[&str]) -> String {
        git(self.work.path(), args)
    }

    pub fn write(&self, path: &str, content: impl AsRef<[u8]>) -> &Self {
        let full = self.work.path().join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(full, content).unwrap();
        self
    }

    pub fn write_exec(&self, path: &str, content: impl AsRef<[u8]>) -> &Self {
        use std::os::unix::fs::PermissionsExt;
        self.write(path, content);
        let full = self.work.path().join(path);
        std::fs::set_permissions(full, std::fs::Permissions::from_mode(0o755)).unwrap();
        self
    }

    pub fn symlink(&self, path: &str, target: &str) -> &Self {
        std::os::unix::fs::symlink(target, self.work.path().join(path)).unwrap();
        self
    }

    /// Commits everything and returns the commit's sha.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "--quiet", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    pub fn tag(&self, name: &str) -> &Self {
        self.git(&["tag", "-a", "-m", name, name]);
        self
    }

    pub fn lightweight_tag(&self, name: &str) -> &Self {
        self.git(&["tag", name]);
        self
    }

    pub fn checkout(&self, name: &str) -> &Self {
        self.git(&["checkout", "--quiet", name]);
        self
    }

    /// Pushes every branch and tag to the served repository.
    pub fn publish(&self) -> &Self {
        let bare = self.bare.display().to_string();
        self.git(&["push", "--quiet", "--force", &bare, "--all"]);
        self.git(&["push", "--quiet", "--force", &bare, "--tags"]);
        self
    }

    /// Writes a blob object; returns its id.
    pub fn blob(&self, content: &[u8]) -> String {
        git_with_input(self.work.path(), &["hash-object", "-w", "--stdin"], content)
    }

    /// Writes a tree object from `(mode, type, id, name)` entries, names
    /// taken as they are (`..`, newlines, anything git's porcelain would
    /// refuse; ids of gitlinks need not exist); returns its id.
    pub fn mktree(&self, entries: &[(&str, &str, String, Vec<u8>)]) -> String {
        let mut input = Vec::new();
        for (mode, kind, id, name) in entries {
            input.extend_from_slice(format!("{mode} {kind} {id}\t").as_bytes());
            input.extend_from_slice(name);
            input.push(0);
        }
        git_with_input(self.work.path(), &["mktree", "-z", "--missing"], &input)
    }

    /// Commits the tree object `tree` on `main` (no working copy
    /// involved), tags it `tag` and publishes it; returns the commit.
    pub fn commit_tree(&self, tree: &str, tag: &str) -> String {
        let commit = self.git(&["commit-tree", tree, "-m", tag]);
        self.git(&["update-ref", "refs/heads/main", &commit]);
        self.git(&["tag", "-a", "-m", tag, tag, &commit]);
        self.publish();
        commit
    }

    /// Writes `entries` (paths `/`-separated, parents implicit) as tree
    /// objects: a symlink is a `120000` blob, a special file a submodule
    /// (gitlink); returns the root tree's id.
    pub fn tree_of(&self, entries: &[(Vec<u8>, super::hostile::Node)]) -> String {
        use super::hostile::Node;
        use std::collections::BTreeMap;
        let mut leaves = Vec::new();
        let mut dirs: BTreeMap<Vec<u8>, Vec<(Vec<u8>, &Node)>> = BTreeMap::new();
        for (path, node) in entries {
            match path.iter().position(|&b| b == b'/') {
                Some(i) => dirs
                    .entry(path[..i].to_vec())
                    .or_default()
                    .push((path[i + 1..].to_vec(), node)),
                None => leaves.push((path.clone(), node)),
            }
        }
        self.tree_of_refs(leaves, dirs)
    }

    fn tree_of_refs(
        &self,
        leaves: Vec<(Vec<u8>, &super::hostile::Node)>,
        dirs: std::collections::BTreeMap<Vec<u8>, Vec<(Vec<u8>, &super::hostile::Node)>>,
    ) -> String {
        use super::hostile::Node;
        let mut blobs: std::collections::HashMap<Vec<u8>, String> = Default::default();
        let mut blob = |content: &[u8]| {
            blobs
                .entry(content.to_vec())
                .or_insert_with(|| self.blob(content))
                .clone()
        };
        let mut lines: Vec<(&str, &str, String, Vec<u8>)> = Vec::new();
        for (name, node) in leaves {
            lines.push(match node {
                Node::File(content) => ("100644", "blob", blob(content), name),
                Node::Symlink(target) => ("120000", "blob", blob(target.as_bytes()), name),
                Node::Special => ("160000", "commit", "1".repeat(40), name),
            });
        }
        for (name, children) in dirs {
            let mut sub_leaves = Vec::new();
            let mut sub_dirs: std::collections::BTreeMap<Vec<u8>, Vec<(Vec<u8>, &Node)>> =
                Default::default();
            for (path, node) in children {
                match path.iter().position(|&b| b == b'/') {
                    Some(i) => sub_dirs
                        .entry(path[..i].to_vec())
                        .or_default()
                        .push((path[i + 1..].to_vec(), node)),
                    None => sub_leaves.push((path, node)),
                }
            }
            lines.push((
                "040000",
                "tree",
                self.tree_of_refs(sub_leaves, sub_dirs),
                name,
            ));
        }
        self.mktree(&lines)
    }

    /// Sets a config value of the served repository (e.g.
    /// `uploadpack.allowReachableSHA1InWant`).
    pub fn server_config(&self, key: &str, value: &str) -> &Self {
        git(&self.bare, &["config", key, value]);
        self
    }
}

struct Config {
    root: PathBuf,
    options: ServerOptions,
    requests: Arc<watch::Sender<Vec<String>>>,
}

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

const MAX_HEAD_LINES: usize = 100;

async fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(bad("bad request line"));
    };
    let (method, target) = (method.to_owned(), target.to_owned());
    let mut headers = Vec::new();
    for _ in 0..MAX_HEAD_LINES {
        line.clear();
        reader.read_line(&mut line).await?;
        let trimmed = line.trim_end_matches(['\r', '\n']);
        if trimmed.is_empty() {
            let mut request = Request {
                method,
                target,
                headers,
                body: Vec::new(),
            };
            request.body = read_body(reader, &request).await?;
            return Ok(Some(request));
        }
        let (name, value) = trimmed.split_once(':').ok_or_else(|| bad("bad header"))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    Err(bad("too many headers"))
}

async fn read_body(
    reader: &mut BufReader<TcpStream>,
    request: &Request,
) -> std::io::Result<Vec<u8>> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let chunked = request
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if !chunked {
        let len: usize = match request.header("content-length") {
            Some(v) => v.parse().map_err(|_| bad("bad content-length"))?,
            None => 0,
        };
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).await?;
        return Ok(body);
    }
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).await?;
        let size_text = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the blank line.
            loop {
                line.clear();
                if reader.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).await?;
        line.clear();
        reader.read_line(&mut line).await?;
    }
}

async fn serve(stream: TcpStream, config: &Config) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let Some(request) = read_request(&mut reader).await? else {
        return Ok(());
    };
    config
        .requests
        .send_modify(|r| r.push(format!("{} {}", request.method, request.target)));
    let mut stream = reader.into_inner();
    if let Some(stall) = config.options.stall {
        // Plays a peer that went silent.
        tokio::time::sleep(stall).await;
        return Ok(());
    }
    if let Some(token) = &config.options.token
        && !authorized(&request, token)
    {
        let body = b"authentication required\n";
        let head = format!(
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
             Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        return stream.shutdown().await;
    }
    let (status, headers, body) = run_http_backend(&request, config).await?;
    let mut head = format!("HTTP/1.1 {status}\r\n");
    for (name, value) in &headers {
        if !name.eq_ignore_ascii_case("content-length") {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    stream.write_all(head.as_bytes()).await?;
    match config.options.throttle {
        Some((chunk, pause)) => {
            for piece in body.chunks(chunk.max(1)) {
                stream.write_all(piece).await?;
                stream.flush().await?;
                // Plays a slow link.
                tokio::time::sleep(pause).await;
            }
        }
        None => stream.write_all(&body).await?,
    }
    stream.shutdown().await
}

fn authorized(request: &Request, token: &str) -> bool {
    let Some(encoded) = request
        .header("authorization")
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let text = String::from_utf8_lossy(&decoded);
    text.split_once(':')
        .is_some_and(|(_, password)| password == token)
}

/// Runs `git http-backend` for one request; returns the status line text,
/// the CGI headers (without `Status`) and the body.
async fn run_http_backend(
    request: &Request,
    config: &Config,
) -> std::io::Result<(String, Vec<(String, String)>, Vec<u8>)> {
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((request.target.as_str(), ""));
    let mut command = tokio::process::Command::new("git");
    command
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", &config.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", &request.method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", request.body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(content_type) = request.header("content-type") {
        command.env("CONTENT_TYPE", content_type);
    }
    // http-backend inflates gzip request bodies itself when told.
    if let Some(encoding) = request.header("content-encoding") {
        command.env("HTTP_CONTENT_ENCODING", encoding);
    }
    if let Some(protocol) = request.header("git-protocol") {
        command.env("GIT_PROTOCOL", protocol);
    }
    if config.options.token.is_some() {
        command.env("REMOTE_USER", "x-access-token");
    }
    let mut child = command.spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let body = request.body.clone();
    // Written concurrently with reading stdout: a large body and a large
    // answer would otherwise deadlock on full pipes.
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let output = child.wait_with_output().await?;
    let _ = writer.await;
    if !output.stderr.is_empty() {
        eprintln!(
            "git http-backend: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(parse_cgi_output(&output.stdout))
}

fn parse_cgi_output(out: &[u8]) -> (String, Vec<(String, String)>, Vec<u8>) {
    let (head_end, body_start) = match find(out, b"\r\n\r\n") {
        Some(i) => (i, i + 4),
        None => match find(out, b"\n\n") {
            Some(i) => (i, i + 2),
            None => (out.len(), out.len()),
        },
    };
    let head = String::from_utf8_lossy(&out[..head_end]);
    let mut status = "200 OK".to_owned();
    let mut headers = Vec::new();
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("status") {
            status = value.to_owned();
        } else {
            headers.push((name.to_owned(), value.to_owned()));
        }
    }
    (status, headers, out[body_start..].to_vec())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
