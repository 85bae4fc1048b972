//! Plugin sources: `<scheme>://<spec>` (SPEC §3) and the grammars the
//! built-in resolvers enforce before any disk or network access (SPEC §4
//! steps 1–4, and the https refusals that come before any fetch).
//!
//! [`Source::parse`] only splits and normalizes: scheme grammar, lower-cased
//! scheme, non-empty spec, bare name = `local`. Each resolver then checks its
//! own spec with [`parse_local_spec`], [`GithubSpec::parse`] or
//! [`HttpsSpec::parse`]. A source is echoed in responses and logs only through
//! [`Source::redacted`] (also its `Display` and `Debug`), which drops user
//! info so a credential pasted into a URL is never repeated back.
//!
//! Pure: std, thiserror and serde only. No I/O, no async, no framework types.

use std::fmt;
use std::str::FromStr;

use crate::domain::name::PluginName;

/// The scheme a bare name (no `://`) stands for.
pub const LOCAL_SCHEME: &str = "local";

/// The grammar of a `github` spec, given as the `hint` of its 400.
pub const GITHUB_GRAMMAR: &str = "github://<owner>/<repo>[#<ref>] \
     (owner and repo: [A-Za-z0-9][A-Za-z0-9_.-]{0,99}; \
     ref: a tag, branch or 40-hex commit sha matching [A-Za-z0-9_.][A-Za-z0-9_./-]{0,254})";

/// The grammar of an `https` spec, given as the `hint` of its 400.
pub const HTTPS_GRAMMAR: &str = "https://<host>[:<port>]/<path>.(tar.gz|tgz|tar.zst)[?<query>]#sha256=<64 hex> \
     (no user info such as user:pass@)";

/// The 422 for an https source without `#sha256=` (SPEC §3).
pub const HTTPS_UNPINNED_MESSAGE: &str =
    "https sources must be pinned: add #sha256=<hex of the archive>";

/// Why a `source` string is not a source at all (SPEC §4 steps 1–2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// Absent, or empty after trimming: 400.
    #[error("'source' is required (e.g. \"local://my-plugin\" or \"github://owner/repo\")")]
    Missing,
    /// Not `<scheme>://<spec>` with a valid scheme and a non-empty spec: 400.
    #[error("invalid plugin source")]
    Unparsable,
}

/// A parsed plugin source `<scheme>://<spec>` (SPEC §3): input trimmed,
/// scheme lower-cased, spec non-empty, a bare name meaning `local://<name>`.
///
/// Invariant: `scheme` matches `[a-z][a-z0-9+.-]*`; `spec` is non-empty and
/// has no surrounding whitespace. The spec may hold user info; only
/// [`Source::spec`] hands it out, for the resolver.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Source {
    scheme: String,
    spec: String,
}

impl Source {
    /// Parses a `source` string (SPEC §3, §4 steps 1–2).
    ///
    /// Errors: [`SourceError::Missing`] when the input is empty after
    /// trimming; [`SourceError::Unparsable`] when the part before `://` is not
    /// `[A-Za-z][A-Za-z0-9+.-]*` (empty included, as in `://x`) or nothing
    /// follows `://`.
    pub fn parse(input: &str) -> Result<Self, SourceError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(SourceError::Missing);
        }
        let Some((scheme, spec)) = input.split_once("://") else {
            return Ok(Self {
                scheme: LOCAL_SCHEME.to_owned(),
                spec: input.to_owned(),
            });
        };
        if !is_scheme(scheme) || spec.is_empty() {
            return Err(SourceError::Unparsable);
        }
        Ok(Self {
            scheme: scheme.to_ascii_lowercase(),
            spec: spec.to_owned(),
        })
    }

    /// `local://<name>`: the default source of a download (SPEC §5).
    pub fn local(name: &PluginName) -> Self {
        Self {
            scheme: LOCAL_SCHEME.to_owned(),
            spec: name.as_str().to_owned(),
        }
    }

    /// The lower-cased scheme, the key of the resolver registry.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The spec exactly as given (user info included): for the resolver
    /// only, never for responses or logs.
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// The normalized `scheme://spec` with user info removed: what responses
    /// echo as `source` and what logs print.
    ///
    /// For `http`, `https` and `*+http(s)` schemes, everything up to the last
    /// `@` of the authority is removed; so is everything up to the last `@`
    /// before `?`/`#` when the text before the first `/` is not a plausible
    /// `host[:port]` (a password holding `/`). For other schemes, a
    /// `user:pass@` (an `@` with a `:` before it) before the first `/` is
    /// removed, so `clawhub://name@version` keeps its meaning. Valid specs
    /// are never altered, and the result is stable under re-parsing.
    pub fn redacted(&self) -> String {
        format!(
            "{}://{}",
            self.scheme,
            redact_spec(&self.scheme, &self.spec)
        )
    }
}

impl fmt::Display for Source {
    /// Same as [`Source::redacted`]: never prints user info.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}",
            self.scheme,
            redact_spec(&self.scheme, &self.spec)
        )
    }
}

impl fmt::Debug for Source {
    /// Redacted like `Display`, so `{:?}` in a log line cannot leak either.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("scheme", &self.scheme)
            .field("spec", &redact_spec(&self.scheme, &self.spec))
            .finish()
    }
}

impl FromStr for Source {
    type Err = SourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// URL scheme grammar `[A-Za-z][A-Za-z0-9+.-]*`.
fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-'))
}

/// Schemes whose spec is an http(s) URL without its `scheme://`.
fn is_http_like(scheme: &str) -> bool {
    ["http", "https"]
        .iter()
        .any(|h| scheme == *h || scheme.strip_suffix(h).is_some_and(|p| p.ends_with('+')))
}

/// The spec with user info removed, repeated until none is left so that
/// redaction is idempotent. A spec that was nothing but user info becomes
/// `@`, keeping the echoed source non-empty and re-parsable.
fn redact_spec<'a>(scheme: &str, spec: &'a str) -> &'a str {
    let user_info_end: fn(&str) -> Option<usize> = if is_http_like(scheme) {
        http_user_info_end
    } else {
        generic_user_info_end
    };
    let mut rest = spec;
    while let Some(end) = user_info_end(rest) {
        rest = &rest[end..];
    }
    if rest.is_empty() { "@" } else { rest }
}

/// Where the user info of an http(s) spec ends (just past its `@`), if any.
fn http_user_info_end(spec: &str) -> Option<usize> {
    let authority_end = spec.find(['/', '\\', '?', '#']).unwrap_or(spec.len());
    let authority = &spec[..authority_end];
    if let Some(at) = authority.rfind('@') {
        return Some(at + 1);
    }
    // `user:pa/ss@host`: the password's `/` ends the authority early. Such an
    // authority is no `host[:port]`, so treat it as user info if an `@`
    // follows anywhere before the query or fragment.
    if is_plausible_host_port(authority) {
        return None;
    }
    let before_query = spec.find(['?', '#']).unwrap_or(spec.len());
    spec[..before_query].rfind('@').map(|at| at + 1)
}

/// Where a `user:pass@` before the first `/` of a non-http spec ends.
fn generic_user_info_end(spec: &str) -> Option<usize> {
    let authority = spec.split('/').next().unwrap_or(spec);
    let at = authority.rfind('@')?;
    authority[..at].contains(':').then_some(at + 1)
}

/// `host[:digits]` or `[ipv6][:digits]`, loosely (for redaction only).
fn is_plausible_host_port(authority: &str) -> bool {
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if let Some(bracketed) = authority.strip_prefix('[') {
        return match bracketed.split_once(']') {
            Some((ip, port)) => {
                is_ipv6_text(ip) && (port.is_empty() || port.strip_prefix(':').is_some_and(digits))
            }
            None => false,
        };
    }
    let (host, port) = authority.split_once(':').unwrap_or((authority, ""));
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~' | b'%'))
        && digits(port)
}

fn is_ipv6_text(ip: &str) -> bool {
    ip.contains(':')
        && ip
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
}

/// A spec its resolver's grammar rejects, or an https policy refusal that
/// comes before any network access (SPEC §4 step 4, §3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A `local` name that breaks the name rules or the registry pattern:
    /// 400 `invalid plugin name`.
    #[error("invalid plugin name")]
    InvalidName,
    /// Any other grammar error: 400 `invalid plugin source`, with `hint`
    /// giving the grammar.
    #[error("invalid plugin source")]
    Invalid {
        /// The resolver's grammar, e.g. [`GITHUB_GRAMMAR`].
        hint: &'static str,
    },
    /// An https policy refusal: 422 with `message` as the error text.
    #[error("{message}")]
    Refused {
        /// The full, user-facing error text.
        message: String,
    },
}

/// Checks a `local` spec: it must be a registry name (SPEC §2, §3).
///
/// Errors: [`SpecError::InvalidName`].
pub fn parse_local_spec(spec: &str) -> Result<PluginName, SpecError> {
    PluginName::parse_registry(spec).map_err(|_| SpecError::InvalidName)
}

/// A checked `github` spec: `<owner>/<repo>[#<ref>]` (SPEC §3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GithubSpec {
    /// The repository owner, `[A-Za-z0-9][A-Za-z0-9_.-]{0,99}`.
    pub owner: String,
    /// The repository name, same grammar as the owner; also the plugin name.
    pub repo: String,
    /// The tag, branch or commit sha to fetch; `None` is unpinned.
    ///
    /// It may hold `/` and `..` (branch names do): never use it as a path.
    pub reference: Option<String>,
}

impl GithubSpec {
    /// Checks a `github` spec against its grammar (SPEC §3).
    ///
    /// Errors: [`SpecError::Invalid`] with [`GITHUB_GRAMMAR`] as the hint,
    /// e.g. for `a/b/c#v1`, `o/r#-x` and `o/r#` (an empty ref).
    pub fn parse(spec: &str) -> Result<Self, SpecError> {
        let invalid = || SpecError::Invalid {
            hint: GITHUB_GRAMMAR,
        };
        let (path, reference) = match spec.split_once('#') {
            Some((path, reference)) => (path, Some(reference)),
            None => (spec, None),
        };
        let (owner, repo) = path.split_once('/').ok_or_else(invalid)?;
        if !is_github_segment(owner) || !is_github_segment(repo) {
            return Err(invalid());
        }
        if reference.is_some_and(|r| !is_git_ref(r)) {
            return Err(invalid());
        }
        Ok(Self {
            owner: owner.to_owned(),
            repo: repo.to_owned(),
            reference: reference.map(str::to_owned),
        })
    }

    /// Whether a ref was given; unpinned specs are refused (422) unless the
    /// operator allows them (SPEC §4 step 5).
    pub fn is_pinned(&self) -> bool {
        self.reference.is_some()
    }

    /// Whether the ref is a full commit sha: exactly 40 hex characters.
    pub fn is_commit_sha(&self) -> bool {
        self.reference
            .as_deref()
            .is_some_and(|r| r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    /// The plugin name a github source yields: the repo name. The caller
    /// still re-validates it (SPEC §4 step 7).
    pub fn plugin_name(&self) -> &str {
        &self.repo
    }
}

impl fmt::Display for GithubSpec {
    /// `owner/repo[#ref]`, the spec as it parses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.repo)?;
        match &self.reference {
            Some(reference) => write!(f, "#{reference}"),
            None => Ok(()),
        }
    }
}

/// `[A-Za-z0-9][A-Za-z0-9_.-]{0,99}`.
fn is_github_segment(s: &str) -> bool {
    let bytes = s.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            first.is_ascii_alphanumeric()
                && rest.len() <= 99
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        }
        None => false,
    }
}

/// `[A-Za-z0-9_.][A-Za-z0-9_./-]{0,254}`: never empty, never starting
/// with `-` (so it cannot be taken for a git option).
fn is_git_ref(s: &str) -> bool {
    let bytes = s.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_alphanumeric() || matches!(first, b'_' | b'.'))
                && rest.len() <= 254
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-'))
        }
        None => false,
    }
}

/// The compression of an https tarball, from its file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArchiveFormat {
    /// `.tar.gz` or `.tgz`.
    TarGz,
    /// `.tar.zst`.
    TarZst,
}

/// Archive extensions, longest match first, with their formats.
const ARCHIVE_EXTENSIONS: [(&str, ArchiveFormat); 3] = [
    (".tar.gz", ArchiveFormat::TarGz),
    (".tgz", ArchiveFormat::TarGz),
    (".tar.zst", ArchiveFormat::TarZst),
];

/// A checked `https` spec (SPEC §3, **\[beyond\]**): a pinned tarball on an
/// allowed host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpsSpec {
    /// The host, lower-cased (`[..]` kept around an IPv6 address).
    pub host: String,
    /// The explicit port, if any.
    pub port: Option<u16>,
    /// The path (starting with `/`) and the `?query`, if any, as given.
    pub path_and_query: String,
    /// The pinned SHA-256 of the archive, 64 lower-case hex characters.
    pub sha256: String,
    /// How the archive is compressed.
    pub format: ArchiveFormat,
}

impl HttpsSpec {
    /// Checks an `https` spec (everything after `https://`) against
    /// `<host>[:<port>]/<path>.(tar.gz|tgz|tar.zst)[?<query>]#sha256=<64 hex>`
    /// and the host allow-list, in this order (SPEC §3):
    ///
    /// 1. grammar, user info included → [`SpecError::Invalid`] with
    ///    [`HTTPS_GRAMMAR`]; a `#sha256=` whose value is not 64 hex
    ///    characters is a grammar error too;
    /// 2. no `#sha256=` fragment → [`SpecError::Refused`] with
    ///    [`HTTPS_UNPINNED_MESSAGE`];
    /// 3. host not in `allowed_hosts` (case-insensitive, port ignored) →
    ///    [`SpecError::Refused`] `https source host "<host>" is not allowed`.
    pub fn parse(spec: &str, allowed_hosts: &[String]) -> Result<Self, SpecError> {
        let invalid = || SpecError::Invalid {
            hint: HTTPS_GRAMMAR,
        };
        let (url, fragment) = match spec.split_once('#') {
            Some((url, fragment)) => (url, Some(fragment)),
            None => (spec, None),
        };

        let authority_end = url.find(['/', '?', '\\']).unwrap_or(url.len());
        let (authority, path_and_query) = url.split_at(authority_end);
        if authority.contains('@') || !path_and_query.starts_with('/') {
            return Err(invalid());
        }
        let (host, port) = parse_host_port(authority).ok_or_else(invalid)?;
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        if !is_url_text(path, b"/") || query.is_some_and(|q| q.is_empty() || !is_url_text(q, b"/?"))
        {
            return Err(invalid());
        }
        let file_name = path.rsplit('/').next().unwrap_or(path);
        let (stem, format) = split_archive_name(file_name).ok_or_else(invalid)?;
        if stem.is_empty() {
            return Err(invalid());
        }

        let digest = fragment.and_then(|f| {
            f.get(..7)
                .filter(|key| key.eq_ignore_ascii_case("sha256="))
                .map(|_| &f[7..])
        });
        let Some(digest) = digest else {
            return Err(SpecError::Refused {
                message: HTTPS_UNPINNED_MESSAGE.to_owned(),
            });
        };
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid());
        }

        let host = host.to_ascii_lowercase();
        if !host_is_allowed(&host, allowed_hosts) {
            return Err(SpecError::Refused {
                message: format!("https source host \"{host}\" is not allowed"),
            });
        }

        Ok(Self {
            host,
            port,
            path_and_query: path_and_query.to_owned(),
            sha256: digest.to_ascii_lowercase(),
            format,
        })
    }

    /// The URL to fetch: `https://host[:port]/path[?query]`, without the
    /// fragment.
    pub fn url(&self) -> String {
        match self.port {
            Some(port) => format!("https://{}:{port}{}", self.host, self.path_and_query),
            None => format!("https://{}{}", self.host, self.path_and_query),
        }
    }

    /// The archive's file name without its extension: the plugin name
    /// unless the archive holds one top-level directory (SPEC §3). The
    /// caller still re-validates it (SPEC §4 step 7).
    pub fn archive_stem(&self) -> &str {
        let path = self
            .path_and_query
            .split('?')
            .next()
            .unwrap_or(&self.path_and_query);
        let file_name = path.rsplit('/').next().unwrap_or(path);
        split_archive_name(file_name).map_or(file_name, |(stem, _)| stem)
    }
}

/// `name.tar.gz` → (`name`, TarGz), and so on.
fn split_archive_name(file_name: &str) -> Option<(&str, ArchiveFormat)> {
    ARCHIVE_EXTENSIONS
        .iter()
        .find_map(|(ext, format)| file_name.strip_suffix(ext).map(|stem| (stem, *format)))
}

/// `host[:port]` with a DNS-style or bracketed IPv6 host and a port in
/// 1..=65535 when present.
fn parse_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if authority.starts_with('[') {
        let close = authority.find(']')?;
        let (host, rest) = authority.split_at(close + 1);
        if !is_ipv6_text(&host[1..host.len() - 1]) {
            return None;
        }
        (host, rest)
    } else {
        let colon = authority.find(':').unwrap_or(authority.len());
        let (host, rest) = authority.split_at(colon);
        if !is_dns_host(host) {
            return None;
        }
        (host, rest)
    };
    if port.is_empty() {
        return Some((host, None));
    }
    let digits = port.strip_prefix(':')?;
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = digits.parse().ok()?;
    (port != 0).then_some((host, Some(port)))
}

/// Dot-separated non-empty labels of `[A-Za-z0-9_-]`, at most 253 bytes.
fn is_dns_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        })
}

/// RFC 3986 `pchar`s (plus the `extra` bytes), with `%` only as the start
/// of a `%XX` escape.
fn is_url_text(s: &str, extra: &[u8]) -> bool {
    let bytes = s.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let escape = bytes.get(i + 1..i + 3);
            if !escape.is_some_and(|e| e.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
            continue;
        }
        let ok =
            b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) || extra.contains(&b);
        if !ok {
            return false;
        }
        i += 1;
    }
    true
}

/// Host equality for the allow-list: ASCII case-insensitive, surrounding
/// whitespace and IPv6 brackets ignored.
/// Whether `host` (no port; `[..]` around an IPv6 address optional) is one
/// of `allowed_hosts`, case-insensitively. The https resolver applies the
/// same rule to every redirect target (SPEC §3).
pub fn host_is_allowed(host: &str, allowed_hosts: &[String]) -> bool {
    allowed_hosts.iter().any(|allowed| same_host(allowed, host))
}

fn same_host(allowed: &str, host: &str) -> bool {
    let bare = |h: &str| {
        let h = h.trim();
        h.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(h)
            .to_owned()
    };
    bare(allowed).eq_ignore_ascii_case(&bare(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|h| (*h).to_owned()).collect()
    }

    #[test]
    fn sources_parse_into_lower_case_scheme_and_spec() {
        // (input, Ok((scheme, spec)) or error)
        type Want = Result<(&'static str, &'static str), SourceError>;
        let cases: &[(&str, Want)] = &[
            ("local://my-plugin", Ok(("local", "my-plugin"))),
            ("  local://my-plugin \n", Ok(("local", "my-plugin"))),
            ("my-plugin", Ok(("local", "my-plugin"))),
            ("\tmy-plugin  ", Ok(("local", "my-plugin"))),
            ("My Plugin", Ok(("local", "My Plugin"))),
            ("a/b", Ok(("local", "a/b"))),
            ("github://o/r", Ok(("github", "o/r"))),
            ("GitHub://Owner/Repo#v1", Ok(("github", "Owner/Repo#v1"))),
            ("LOCAL://x", Ok(("local", "x"))),
            (
                "HTTPS://h/x.tgz#sha256=ab",
                Ok(("https", "h/x.tgz#sha256=ab")),
            ),
            ("git+ssh://h/r", Ok(("git+ssh", "h/r"))),
            ("a.b-c://x", Ok(("a.b-c", "x"))),
            ("clawhub://name@1.2.3", Ok(("clawhub", "name@1.2.3"))),
            ("unknown://whatever", Ok(("unknown", "whatever"))),
            ("x://a://b", Ok(("x", "a://b"))),
            ("x:// spaced", Ok(("x", " spaced"))),
            ("", Err(SourceError::Missing)),
            ("   ", Err(SourceError::Missing)),
            ("\n\t", Err(SourceError::Missing)),
            ("github://", Err(SourceError::Unparsable)),
            ("github://   ", Err(SourceError::Unparsable)),
            ("://x", Err(SourceError::Unparsable)),
            ("://", Err(SourceError::Unparsable)),
            ("1http://x", Err(SourceError::Unparsable)),
            ("-x://y", Err(SourceError::Unparsable)),
            ("gi_thub://o/r", Err(SourceError::Unparsable)),
            ("git hub://o/r", Err(SourceError::Unparsable)),
            ("gïthub://o/r", Err(SourceError::Unparsable)),
            ("a/b://c", Err(SourceError::Unparsable)),
        ];
        for (input, want) in cases {
            let got = Source::parse(input);
            let got = got.as_ref().map(|s| (s.scheme(), s.spec()));
            assert_eq!(got, want.as_ref().copied(), "input {input:?}");
        }
    }

    #[test]
    fn bare_name_means_local_source() {
        let source = Source::parse("my-plugin").unwrap();
        assert_eq!(source, Source::parse("local://my-plugin").unwrap());
        assert_eq!(source.to_string(), "local://my-plugin");
    }

    #[test]
    fn scheme_is_echoed_lower_case() {
        let source = Source::parse(" GitHub://Owner/Repo#Main ").unwrap();
        assert_eq!(source.to_string(), "github://Owner/Repo#Main");
        assert_eq!(source.redacted(), "github://Owner/Repo#Main");
    }

    #[test]
    fn local_source_for_a_plugin_name() {
        let name = PluginName::parse("my-plugin").unwrap();
        let source = Source::local(&name);
        assert_eq!((source.scheme(), source.spec()), ("local", "my-plugin"));
        assert_eq!(source.to_string(), "local://my-plugin");
        assert_eq!("local://my-plugin".parse::<Source>(), Ok(source));
    }

    #[test]
    fn source_errors_carry_the_contract_messages() {
        assert_eq!(
            SourceError::Missing.to_string(),
            "'source' is required (e.g. \"local://my-plugin\" or \"github://owner/repo\")"
        );
        assert_eq!(SourceError::Unparsable.to_string(), "invalid plugin source");
    }

    #[test]
    fn redaction_removes_user_info_and_nothing_else() {
        let cases = [
            (
                format!("https://h.example/x.tgz#sha256={HEX}"),
                format!("https://h.example/x.tgz#sha256={HEX}"),
            ),
            (
                format!("https://user:pass@h.example/x.tgz#sha256={HEX}"),
                format!("https://h.example/x.tgz#sha256={HEX}"),
            ),
            (
                "HTTPS://token@h.example:8443/x.tgz".into(),
                "https://h.example:8443/x.tgz".into(),
            ),
            ("https://a@b@h/x.tgz".into(), "https://h/x.tgz".into()),
            ("https://user:pass@h".into(), "https://h".into()),
            ("https://user:pass@h?q=1".into(), "https://h?q=1".into()),
            ("https://user:pass@".into(), "https://@".into()),
            ("https://@h/x.tgz".into(), "https://h/x.tgz".into()),
            (
                "https://user:pa/ss@h/x.tgz".into(),
                "https://h/x.tgz".into(),
            ),
            (
                "https://user:pa\\ss@h/x.tgz".into(),
                "https://h/x.tgz".into(),
            ),
            (
                "https://h/scoped/@org/pkg.tgz".into(),
                "https://h/scoped/@org/pkg.tgz".into(),
            ),
            (
                "https://h:8443/pkg@1.0.tgz".into(),
                "https://h:8443/pkg@1.0.tgz".into(),
            ),
            (
                "https://[::1]:8443/a@b.tgz".into(),
                "https://[::1]:8443/a@b.tgz".into(),
            ),
            (
                "https://h/x.tgz?sig=a@b".into(),
                "https://h/x.tgz?sig=a@b".into(),
            ),
            ("http://u:p@h/x".into(), "http://h/x".into()),
            (
                "git+https://tok@h/r.git".into(),
                "git+https://h/r.git".into(),
            ),
            ("git+ssh://user:pw@h/r".into(), "git+ssh://h/r".into()),
            ("git+ssh://git@h/r".into(), "git+ssh://git@h/r".into()),
            ("github://user:tok@o/r".into(), "github://o/r".into()),
            ("github://o/r#v1".into(), "github://o/r#v1".into()),
            ("clawhub://name@1.2.3".into(), "clawhub://name@1.2.3".into()),
            ("local://my-plugin".into(), "local://my-plugin".into()),
        ];
        for (input, want) in cases {
            let source = Source::parse(&input).unwrap();
            assert_eq!(source.redacted(), want, "input {input:?}");
            assert_eq!(source.to_string(), want, "input {input:?}");
        }
    }

    #[test]
    fn debug_output_never_shows_user_info() {
        let source = Source::parse("https://user:s3cret@h/x.tgz").unwrap();
        let debug = format!("{source:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(!debug.contains("user"), "{debug}");
        assert!(debug.contains("h/x.tgz"), "{debug}");
        // The resolver still sees the spec as given.
        assert_eq!(source.spec(), "user:s3cret@h/x.tgz");
    }

    #[test]
    fn local_specs_must_be_registry_names() {
        let cases: &[(&str, Result<&str, SpecError>)] = &[
            ("my-plugin", Ok("my-plugin")),
            ("a.b_c-9", Ok("a.b_c-9")),
            ("My-Plugin", Err(SpecError::InvalidName)),
            ("plügin", Err(SpecError::InvalidName)),
            ("../etc", Err(SpecError::InvalidName)),
            ("a/b", Err(SpecError::InvalidName)),
            ("..", Err(SpecError::InvalidName)),
            ("a..b", Err(SpecError::InvalidName)),
            ("x\0y", Err(SpecError::InvalidName)),
            ("with space", Err(SpecError::InvalidName)),
        ];
        for (spec, want) in cases {
            let got = parse_local_spec(spec);
            assert_eq!(
                got.as_ref().map(PluginName::as_str),
                want.as_ref().copied(),
                "spec {spec:?}"
            );
        }
    }

    #[test]
    fn github_specs_follow_the_grammar() {
        let sha = "0123456789abcdef0123456789ABCDEF01234567";
        let long_ref = format!("v{}", "1".repeat(254));
        let too_long_ref = format!("v{}", "1".repeat(255));
        let long_owner = format!("o{}", "w".repeat(99));
        let too_long_owner = format!("o{}", "w".repeat(100));
        let invalid = Err(SpecError::Invalid {
            hint: GITHUB_GRAMMAR,
        });
        // (spec, Ok((owner, repo, ref, pinned, commit sha)) or error)
        type Want<'a> = Result<(&'a str, &'a str, Option<&'a str>, bool, bool), SpecError>;
        let cases: Vec<(String, Want<'_>)> = vec![
            ("o/r".into(), Ok(("o", "r", None, false, false))),
            (
                "Owner-1/re.po_2".into(),
                Ok(("Owner-1", "re.po_2", None, false, false)),
            ),
            (
                "o/r#v1.0.0".into(),
                Ok(("o", "r", Some("v1.0.0"), true, false)),
            ),
            ("o/r#main".into(), Ok(("o", "r", Some("main"), true, false))),
            (
                "o/r#feature/x-y".into(),
                Ok(("o", "r", Some("feature/x-y"), true, false)),
            ),
            ("o/r#_tmp".into(), Ok(("o", "r", Some("_tmp"), true, false))),
            (
                "o/r#.hidden".into(),
                Ok(("o", "r", Some(".hidden"), true, false)),
            ),
            (format!("o/r#{sha}"), Ok(("o", "r", Some(sha), true, true))),
            (
                format!("o/r#{}", &sha[..39]),
                Ok(("o", "r", Some(&sha[..39]), true, false)),
            ),
            (
                format!("o/r#{sha}0"),
                Ok((
                    "o",
                    "r",
                    Some("0123456789abcdef0123456789ABCDEF012345670"),
                    true,
                    false,
                )),
            ),
            (
                format!("o/r#{long_ref}"),
                Ok(("o", "r", Some(long_ref.as_str()), true, false)),
            ),
            (
                format!("{long_owner}/r"),
                Ok((long_owner.as_str(), "r", None, false, false)),
            ),
            ("a/b/c#v1".into(), invalid.clone()),
            ("a/b/c".into(), invalid.clone()),
            ("o/r#-x".into(), invalid.clone()),
            ("o/r#".into(), invalid.clone()),
            ("o/r#v1#v2".into(), invalid.clone()),
            ("o/r#v 1".into(), invalid.clone()),
            ("o/r#v1~".into(), invalid.clone()),
            (format!("o/r#{too_long_ref}"), invalid.clone()),
            (format!("{too_long_owner}/r"), invalid.clone()),
            ("o".into(), invalid.clone()),
            ("o/".into(), invalid.clone()),
            ("/r".into(), invalid.clone()),
            ("o//r".into(), invalid.clone()),
            ("-o/r".into(), invalid.clone()),
            ("o/.r".into(), invalid.clone()),
            ("o/..".into(), invalid.clone()),
            ("o/_r".into(), invalid.clone()),
            ("o/r!".into(), invalid.clone()),
            ("user:tok@o/r".into(), invalid.clone()),
            ("ö/r".into(), invalid.clone()),
            ("#v1".into(), invalid.clone()),
        ];
        for (spec, want) in cases {
            let got = GithubSpec::parse(&spec);
            let got = got.as_ref().map(|g| {
                (
                    g.owner.as_str(),
                    g.repo.as_str(),
                    g.reference.as_deref(),
                    g.is_pinned(),
                    g.is_commit_sha(),
                )
            });
            assert_eq!(got, want.as_ref().copied(), "spec {spec:?}");
        }
    }

    #[test]
    fn github_plugin_name_is_the_repo_name() {
        let spec = GithubSpec::parse("Molecule-AI/molecule-ai-plugin-superpowers#v1").unwrap();
        assert_eq!(spec.plugin_name(), "molecule-ai-plugin-superpowers");
        assert_eq!(
            spec.to_string(),
            "Molecule-AI/molecule-ai-plugin-superpowers#v1"
        );
        assert_eq!(GithubSpec::parse("o/r").unwrap().to_string(), "o/r");
    }

    #[test]
    fn github_grammar_errors_map_to_invalid_plugin_source() {
        let err = GithubSpec::parse("o/r#").unwrap_err();
        assert_eq!(err.to_string(), "invalid plugin source");
    }

    #[test]
    fn https_specs_follow_the_grammar_and_policy() {
        let allowed = hosts(&["h.example", "Mirror.Example", "127.0.0.1", "[::1]"]);
        let upper = HEX.to_ascii_uppercase();
        let invalid = Err(SpecError::Invalid {
            hint: HTTPS_GRAMMAR,
        });
        let unpinned = Err(SpecError::Refused {
            message: HTTPS_UNPINNED_MESSAGE.to_owned(),
        });
        let not_allowed = |host: &str| {
            Err(SpecError::Refused {
                message: format!("https source host \"{host}\" is not allowed"),
            })
        };
        // (spec, Ok((url, stem, format)) or error)
        type Want = Result<(String, String, ArchiveFormat), SpecError>;
        let ok = |url: &str, stem: &str, format| -> Want {
            Ok((url.to_owned(), stem.to_owned(), format))
        };
        let cases: Vec<(String, Want)> = vec![
            (
                format!("h.example/p/x.tar.gz#sha256={HEX}"),
                ok("https://h.example/p/x.tar.gz", "x", ArchiveFormat::TarGz),
            ),
            (
                format!("h.example/x.tgz#sha256={HEX}"),
                ok("https://h.example/x.tgz", "x", ArchiveFormat::TarGz),
            ),
            (
                format!("h.example/my-plugin-1.0.tar.zst#sha256={HEX}"),
                ok(
                    "https://h.example/my-plugin-1.0.tar.zst",
                    "my-plugin-1.0",
                    ArchiveFormat::TarZst,
                ),
            ),
            (
                format!("H.EXAMPLE/x.tgz#sha256={HEX}"),
                ok("https://h.example/x.tgz", "x", ArchiveFormat::TarGz),
            ),
            (
                format!("mirror.example/x.tgz#sha256={HEX}"),
                ok("https://mirror.example/x.tgz", "x", ArchiveFormat::TarGz),
            ),
            (
                format!("h.example:8443/x.tgz#sha256={HEX}"),
                ok("https://h.example:8443/x.tgz", "x", ArchiveFormat::TarGz),
            ),
            (
                format!("127.0.0.1:1/x.tgz#sha256={HEX}"),
                ok("https://127.0.0.1:1/x.tgz", "x", ArchiveFormat::TarGz),
            ),
            (
                format!("[::1]:65535/x.tgz#sha256={HEX}"),
                ok("https://[::1]:65535/x.tgz", "x", ArchiveFormat::TarGz),
            ),
            (
                format!("h.example/x.tgz?token=a%2Fb&v=1#sha256={HEX}"),
                ok(
                    "https://h.example/x.tgz?token=a%2Fb&v=1",
                    "x",
                    ArchiveFormat::TarGz,
                ),
            ),
            (format!("h.example/dl?/x.tgz#sha256={HEX}"), invalid.clone()),
            (
                format!("h.example/@scope/x.tgz#sha256={HEX}"),
                ok("https://h.example/@scope/x.tgz", "x", ArchiveFormat::TarGz),
            ),
            (
                format!("h.example/x.tgz#SHA256={upper}"),
                ok("https://h.example/x.tgz", "x", ArchiveFormat::TarGz),
            ),
            // user info is a grammar error, whatever else is wrong
            (
                format!("user:pass@h.example/x.tgz#sha256={HEX}"),
                invalid.clone(),
            ),
            ("user:pass@h.example/x.tgz".into(), invalid.clone()),
            (
                format!("token@h.example/x.tgz#sha256={HEX}"),
                invalid.clone(),
            ),
            (
                format!("user:pa/ss@h.example/x.tgz#sha256={HEX}"),
                invalid.clone(),
            ),
            // pinning
            ("h.example/x.tgz".into(), unpinned.clone()),
            ("h.example/x.tgz#v1".into(), unpinned.clone()),
            ("other.example/x.tgz".into(), unpinned.clone()),
            ("h.example/x.tgz#sha256=".into(), invalid.clone()),
            (
                format!("h.example/x.tgz#sha256={}", &HEX[..63]),
                invalid.clone(),
            ),
            (format!("h.example/x.tgz#sha256={HEX}0"), invalid.clone()),
            (
                format!("h.example/x.tgz#sha256={}g", &HEX[..63]),
                invalid.clone(),
            ),
            // host policy comes last
            (
                format!("other.example/x.tgz#sha256={HEX}"),
                not_allowed("other.example"),
            ),
            (
                format!("Other.Example:8443/x.tgz#sha256={HEX}"),
                not_allowed("other.example"),
            ),
            (
                format!("h.example.evil/x.tgz#sha256={HEX}"),
                not_allowed("h.example.evil"),
            ),
            // other grammar errors
            (format!("h.example/x.zip#sha256={HEX}"), invalid.clone()),
            (format!("h.example/x.tar#sha256={HEX}"), invalid.clone()),
            (format!("h.example/x.tar.bz2#sha256={HEX}"), invalid.clone()),
            (format!("h.example/x.TGZ#sha256={HEX}"), invalid.clone()),
            (format!("h.example/x.tgz/#sha256={HEX}"), invalid.clone()),
            (format!("h.example/.tgz#sha256={HEX}"), invalid.clone()),
            (format!("h.example/x.tgz?#sha256={HEX}"), invalid.clone()),
            (format!("h.example#sha256={HEX}"), invalid.clone()),
            (format!("h.example?x.tgz#sha256={HEX}"), invalid.clone()),
            (format!("/x.tgz#sha256={HEX}"), invalid.clone()),
            (format!("h.example:/x.tgz#sha256={HEX}"), invalid.clone()),
            (format!("h.example:0/x.tgz#sha256={HEX}"), invalid.clone()),
            (
                format!("h.example:65536/x.tgz#sha256={HEX}"),
                invalid.clone(),
            ),
            (format!("h.example:80a/x.tgz#sha256={HEX}"), invalid.clone()),
            (format!("h..example/x.tgz#sha256={HEX}"), invalid.clone()),
            (format!("h.example\\x.tgz#sha256={HEX}"), invalid.clone()),
            (format!("h.example/a b.tgz#sha256={HEX}"), invalid.clone()),
            (format!("h.example/a%zz.tgz#sha256={HEX}"), invalid.clone()),
            (format!("h.example/ä.tgz#sha256={HEX}"), invalid.clone()),
            (format!("[::1/x.tgz#sha256={HEX}"), invalid.clone()),
            (format!("[zz]/x.tgz#sha256={HEX}"), invalid.clone()),
            (
                format!("https://h.example/x.tgz#sha256={HEX}"),
                invalid.clone(),
            ),
        ];
        for (spec, want) in cases {
            let got = HttpsSpec::parse(&spec, &allowed)
                .map(|h| (h.url(), h.archive_stem().to_owned(), h.format));
            assert_eq!(got, want, "spec {spec:?}");
        }
    }

    #[test]
    fn https_spec_fields_are_normalized() {
        let upper = HEX.to_ascii_uppercase();
        let spec = HttpsSpec::parse(
            &format!("H.Example:8443/p/x.tar.zst?a=1#sha256={upper}"),
            &hosts(&[" h.example "]),
        )
        .unwrap();
        assert_eq!(
            spec,
            HttpsSpec {
                host: "h.example".into(),
                port: Some(8443),
                path_and_query: "/p/x.tar.zst?a=1".into(),
                sha256: HEX.into(),
                format: ArchiveFormat::TarZst,
            }
        );
        assert_eq!(spec.url(), "https://h.example:8443/p/x.tar.zst?a=1");
    }

    #[test]
    fn https_sources_are_refused_when_no_host_is_allowed() {
        let err = HttpsSpec::parse(&format!("h.example/x.tgz#sha256={HEX}"), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "https source host \"h.example\" is not allowed"
        );
        let err = HttpsSpec::parse("h.example/x.tgz", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "https sources must be pinned: add #sha256=<hex of the archive>"
        );
    }

    #[test]
    fn https_user_info_is_refused_and_never_echoed() {
        let source = Source::parse(&format!(
            "https://alice:s3cret@h.example/x.tgz#sha256={HEX}"
        ))
        .unwrap();
        let err = HttpsSpec::parse(source.spec(), &hosts(&["h.example"])).unwrap_err();
        assert_eq!(
            err,
            SpecError::Invalid {
                hint: HTTPS_GRAMMAR
            }
        );
        assert_eq!(err.to_string(), "invalid plugin source");
        let echoed = source.to_string();
        assert_eq!(echoed, format!("https://h.example/x.tgz#sha256={HEX}"));
        assert!(!echoed.contains("s3cret") && !echoed.contains("alice"));
        assert!(!HTTPS_GRAMMAR.contains("s3cret"));
    }

    #[test]
    fn archive_stem_tolerates_edited_fields() {
        let mut spec = HttpsSpec::parse(
            &format!("h.example/x.tgz#sha256={HEX}"),
            &hosts(&["h.example"]),
        )
        .unwrap();
        spec.path_and_query = "/dir/".into();
        assert_eq!(spec.archive_stem(), "");
        spec.path_and_query = "/dir/name.zip?x=/y.tgz".into();
        assert_eq!(spec.archive_stem(), "name.zip");
    }

    /// Source-like strings: optional whitespace, an optional scheme of any
    /// case (sometimes invalid), and a spec with URL punctuation.
    fn source_candidates() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ \t]{0,2}([A-Za-z0-9+._-]{0,6}://)?[A-Za-z0-9:/@#?.% _-]{0,30}[ \t\n]{0,2}",
            "(https|HTTPS|github|local|git\\+https|x)://[a-z:@/]{0,6}[@/:]{0,3}[a-z.]{0,8}",
            any::<String>(),
        ]
    }

    proptest! {
        #[test]
        fn sources_are_stable_through_display(input in source_candidates()) {
            if let Ok(first) = Source::parse(&input) {
                let echoed = first.to_string();
                let second = Source::parse(&echoed);
                prop_assert!(second.is_ok(), "{echoed:?} does not re-parse");
                let Ok(second) = second else { unreachable!() };
                prop_assert_eq!(second.scheme(), first.scheme());
                prop_assert_eq!(second.to_string(), echoed.clone());
                if first.redacted() == format!("{}://{}", first.scheme(), first.spec()) {
                    // No user info: the echo is the source itself.
                    prop_assert_eq!(&second, &first);
                    prop_assert_eq!(second.spec(), first.spec());
                }
            }
        }

        #[test]
        fn redaction_drops_every_authority_user_info(
            user in "[A-Za-z0-9._~-]{1,12}",
            pass in "[A-Za-z0-9._~!$&'()*+,;=-]{1,12}",
            host in "[a-z0-9]{1,10}(\\.[a-z0-9]{1,10}){0,2}",
            path in "(/[A-Za-z0-9._-]{1,8}){0,3}",
        ) {
            let input = format!("https://{user}:{pass}@{host}{path}/x.tgz#sha256={HEX}");
            let echoed = Source::parse(&input).map(|s| s.to_string());
            prop_assert_eq!(echoed, Ok(format!("https://{host}{path}/x.tgz#sha256={HEX}")));
        }

        #[test]
        fn spec_parsers_never_panic(input in source_candidates()) {
            let _ = parse_local_spec(&input);
            let _ = GithubSpec::parse(&input);
            let _ = HttpsSpec::parse(&input, &hosts(&["h.example"]));
        }

        #[test]
        fn valid_https_specs_round_trip_through_url(
            host in "[a-z0-9]{1,10}(\\.[a-z0-9-]{1,10}){0,2}",
            port in proptest::option::of(1u16..),
            dirs in "(/[A-Za-z0-9._~@-]{1,8}){0,3}",
            stem in "[A-Za-z0-9][A-Za-z0-9._-]{0,12}",
            ext in prop_oneof![Just(".tar.gz"), Just(".tgz"), Just(".tar.zst")],
            query in proptest::option::of("[A-Za-z0-9=&%/?]{1,10}".prop_filter("well-formed escapes", |q| is_url_text(q, b"/?"))),
        ) {
            let port_text = port.map(|p| format!(":{p}")).unwrap_or_default();
            let query_text = query.map(|q| format!("?{q}")).unwrap_or_default();
            let url = format!("{host}{port_text}{dirs}/{stem}{ext}{query_text}");
            let spec = HttpsSpec::parse(&format!("{url}#sha256={HEX}"), std::slice::from_ref(&host));
            prop_assert!(spec.is_ok(), "{url:?} refused: {spec:?}");
            let Ok(spec) = spec else { unreachable!() };
            prop_assert_eq!(spec.url(), format!("https://{url}"));
            prop_assert_eq!(spec.archive_stem(), stem.as_str());
            prop_assert_eq!(spec.port, port);
            let again = HttpsSpec::parse(&format!("{}#sha256={}", &spec.url()["https://".len()..], spec.sha256), &[host]);
            prop_assert_eq!(again, Ok(spec));
        }

        #[test]
        fn valid_github_specs_round_trip_through_display(
            owner in "[A-Za-z0-9][A-Za-z0-9_.-]{0,20}",
            repo in "[A-Za-z0-9][A-Za-z0-9_.-]{0,20}",
            reference in proptest::option::of("[A-Za-z0-9_.][A-Za-z0-9_./-]{0,30}"),
        ) {
            let text = match &reference {
                Some(r) => format!("{owner}/{repo}#{r}"),
                None => format!("{owner}/{repo}"),
            };
            let spec = GithubSpec::parse(&text);
            prop_assert!(spec.is_ok(), "{text:?} refused");
            let Ok(spec) = spec else { unreachable!() };
            prop_assert_eq!(spec.to_string(), text);
            prop_assert_eq!(spec.plugin_name(), repo.as_str());
            prop_assert_eq!(spec.is_pinned(), reference.is_some());
        }
    }
}
