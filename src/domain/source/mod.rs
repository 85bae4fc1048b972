//! Plugin sources: `<scheme>://<spec>` (SPEC §3) and the grammars the
//! built-in resolvers enforce before any disk or network access (SPEC §4
//! steps 1–4, and the https refusals that come before any fetch).
//!
//! [`Source::parse`] only splits and normalizes: scheme grammar, lower-cased
//! scheme, non-empty spec, bare name = `local`. Each resolver then checks its
//! own spec with [`parse_local_spec`], [`GithubSpec::parse`] or
//! [`HttpsSpec::parse`], one grammar per file (`local`, `github`, `https`;
//! `host` is what a `host[:port]` is, for the https grammar and for
//! redaction alike). A source is echoed in responses and logs only through
//! [`Source::redacted`] (also its `Display` and `Debug`), which drops user
//! info so a credential pasted into a URL is never repeated back.
//!
//! Pure: std, thiserror and serde only. No I/O, no async, no framework types.

use std::fmt;
use std::str::FromStr;

use crate::domain::name::PluginName;

mod github;
mod host;
mod https;
mod local;

// The grammars are reached through this module only, so callers name
// `domain::source::X` whichever file holds `X`.
pub use github::{GITHUB_GRAMMAR, GithubSpec};
pub use https::{ArchiveFormat, HTTPS_GRAMMAR, HTTPS_UNPINNED_MESSAGE, HttpsSpec, host_is_allowed};
pub use local::parse_local_spec;

/// The scheme a bare name (no `://`) stands for.
pub const LOCAL_SCHEME: &str = "local";

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
    /// before `?`/`#` when the text before the first `/` is not a
    /// `host[:port]` the https grammar accepts (a password holding `/`). For other schemes, a
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
    // authority is no `host[:port]` (the https grammar's), so treat it as
    // user info if an `@` follows anywhere before the query or fragment.
    if host::parse_host_port(authority).is_some() {
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
            // An authority the https grammar refuses is no host, so what
            // ends at a later `@` is taken for user info.
            ("https://h~x/a@b.tgz".into(), "https://b.tgz".into()),
            ("https://h:0/a@b.tgz".into(), "https://b.tgz".into()),
            // ...which is what catches a user name no host could have in
            // front of an all-digit password holding `/`.
            (
                "https://us~er:12/34@h/x.tgz".into(),
                "https://h/x.tgz".into(),
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
    }
}
