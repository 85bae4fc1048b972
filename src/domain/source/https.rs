//! The `https` grammar (SPEC §3, **\[beyond\]**): a pinned tarball on an
//! allowed host, and the host allow-list the resolver also applies to
//! redirects.

use super::SpecError;
use super::host::parse_host_port;

/// The grammar of an `https` spec, given as the `hint` of its 400.
pub const HTTPS_GRAMMAR: &str = "https://<host>[:<port>]/<path>.(tar.gz|tgz|tar.zst)[?<query>]#sha256=<64 hex> \
     (no user info such as user:pass@)";

/// The 422 for an https source without `#sha256=` (SPEC §3).
pub const HTTPS_UNPINNED_MESSAGE: &str =
    "https sources must be pinned: add #sha256=<hex of the archive>";

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

/// Whether `host` (no port; `[..]` around an IPv6 address optional) is one
/// of `allowed_hosts`, case-insensitively. The https resolver applies the
/// same rule to every redirect target (SPEC §3).
pub fn host_is_allowed(host: &str, allowed_hosts: &[String]) -> bool {
    allowed_hosts.iter().any(|allowed| same_host(allowed, host))
}

/// Host equality for the allow-list: ASCII case-insensitive, surrounding
/// whitespace and IPv6 brackets ignored.
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
    use crate::domain::source::Source;
    use proptest::prelude::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|h| (*h).to_owned()).collect()
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

    proptest! {
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
    }
}
