//! What a `host[:port]` is: the one answer for both the https grammar
//! (which refuses anything else) and redaction (which takes an authority
//! that is not one for user info whose password holds a `/`). One parser
//! keeps them from drifting apart: were redaction's idea of a host looser
//! than the grammar's, an authority the grammar refuses could still be
//! kept in an echo, and a credential with it.

/// `host[:port]` with a DNS-style or bracketed IPv6 host and a port in
/// 1..=65535 when present.
pub(super) fn parse_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
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

/// Hex digits, `:` and `.` (an IPv4 tail), with at least one `:`.
fn is_ipv6_text(ip: &str) -> bool {
    ip.contains(':')
        && ip
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_dns_names_or_bracketed_ipv6_with_an_optional_port() {
        let long_label = "a".repeat(63);
        let too_long_label = "a".repeat(64);
        let long_host = vec!["a"; 127].join(".");
        let too_long_host = format!("{long_host}.ab");
        // (authority, Some((host, port)) or refused)
        type Want<'a> = Option<(&'a str, Option<u16>)>;
        let cases: Vec<(&str, Want<'_>)> = vec![
            ("h.example", Some(("h.example", None))),
            ("H.Example", Some(("H.Example", None))),
            ("my_host-1", Some(("my_host-1", None))),
            ("127.0.0.1", Some(("127.0.0.1", None))),
            ("h.example:1", Some(("h.example", Some(1)))),
            ("h.example:08443", Some(("h.example", Some(8443)))),
            ("h.example:65535", Some(("h.example", Some(65535)))),
            ("[::1]", Some(("[::1]", None))),
            (
                "[::ffff:1.2.3.4]:443",
                Some(("[::ffff:1.2.3.4]", Some(443))),
            ),
            (&long_label, Some((&long_label, None))),
            (&long_host, Some((&long_host, None))),
            ("", None),
            (":443", None),
            ("h.example:", None),
            ("h.example:0", None),
            ("h.example:65536", None),
            ("h.example:000443", None),
            ("h.example:80a", None),
            ("h.example:-1", None),
            ("h..example", None),
            (".h.example", None),
            ("h.example.", None),
            ("h~x", None),
            ("h%41", None),
            ("user:pass", None),
            ("user:12@h", None),
            ("ä.example", None),
            (&too_long_label, None),
            (&too_long_host, None),
            ("[::1", None),
            ("[]", None),
            ("[zz]", None),
            ("[1.2.3.4]", None),
            ("[::1]x", None),
            ("[::1]:", None),
        ];
        for (authority, want) in cases {
            assert_eq!(parse_host_port(authority), want, "authority {authority:?}");
        }
    }
}
