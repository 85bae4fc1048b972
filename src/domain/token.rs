//! Bearer tokens (SPEC §7): only their SHA-256 is ever stored, and a
//! presented secret is compared by hash.

use std::fmt;

use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};

use crate::domain::name::WorkspaceId;

/// Secrets carry at least 256 bits of randomness.
pub const TOKEN_BYTES: usize = 32;

/// Whose secret it is: the prefix tells them apart at a glance (and to
/// secret scanners).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// `wpa_`: the admin token generated at first start.
    Admin,
    /// `wpt_`: a workspace token.
    Workspace,
}

/// A secret from [`TOKEN_BYTES`] random bytes supplied by the caller: the
/// kind's prefix, then the bytes as unpadded URL-safe base64.
pub fn secret_from_random(kind: SecretKind, bytes: [u8; TOKEN_BYTES]) -> String {
    use base64::Engine as _;
    let prefix = match kind {
        SecretKind::Admin => "wpa_",
        SecretKind::Workspace => "wpt_",
    };
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The SHA-256 of a token secret.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Comparison whose time does not depend on where the hashes differ.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

/// A token's public id (`tok_` + 24 hex), safe to list and log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenId(String);

impl TokenId {
    /// Builds an id from 12 random bytes supplied by the caller.
    pub fn from_random(bytes: [u8; 12]) -> Self {
        Self(format!("tok_{}", hex::encode(bytes)))
    }

    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix("tok_")?;
        (rest.len() == 24 && rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stored token, never with its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: TokenId,
    pub workspace_id: WorkspaceId,
    pub hash: TokenHash,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked: bool,
}

/// Reads `Authorization: Bearer <token>` (scheme case-insensitive).
/// `Bearer` with an empty token counts as missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    Missing,
    /// Present but not a bearer token; it can never be valid.
    Malformed,
    Bearer(String),
}

pub fn parse_authorization(header: Option<&str>) -> Presented {
    let Some(value) = header.map(str::trim) else {
        return Presented::Missing;
    };
    if value.is_empty() {
        return Presented::Missing;
    }
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Presented::Malformed;
    }
    let token = rest.trim();
    if token.is_empty() {
        Presented::Missing
    } else {
        Presented::Bearer(token.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_its_kinds_prefix_and_the_bytes_in_unpadded_url_safe_base64() {
        let workspace = secret_from_random(SecretKind::Workspace, [0xfb; TOKEN_BYTES]);
        assert_eq!(workspace, format!("wpt_{}-_s", "-_v7".repeat(10)));
        let admin = secret_from_random(SecretKind::Admin, [0; TOKEN_BYTES]);
        assert_eq!(admin, format!("wpa_{}", "A".repeat(43)));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_empty_counts_as_missing() {
        let cases = [
            (None, Presented::Missing),
            (Some(""), Presented::Missing),
            (Some("Bearer"), Presented::Missing),
            (Some("Bearer   "), Presented::Missing),
            (Some("Bearer abc"), Presented::Bearer("abc".into())),
            (Some("bearer abc"), Presented::Bearer("abc".into())),
            (Some("BEARER  abc "), Presented::Bearer("abc".into())),
            (Some("Basic dXNlcg=="), Presented::Malformed),
            (Some("abc"), Presented::Malformed),
        ];
        for (header, expected) in cases {
            assert_eq!(parse_authorization(header), expected, "{header:?}");
        }
    }

    #[test]
    fn token_hashes_compare_equal_only_for_the_same_secret() {
        let a = TokenHash::of("secret");
        assert!(a.matches(&TokenHash::of("secret")));
        assert!(!a.matches(&TokenHash::of("secreT")));
        assert_eq!(TokenHash::from_hex(&a.to_hex()), Some(a.clone()));
        assert_eq!(TokenHash::from_hex("zz"), None);
        assert_eq!(
            format!("{a:?}"),
            "TokenHash(..)",
            "debug output never shows the hash"
        );
    }

    #[test]
    fn token_ids_have_a_fixed_public_shape() {
        let id = TokenId::from_random([0xab; 12]);
        assert_eq!(id.as_str(), "tok_abababababababababababab");
        assert_eq!(TokenId::parse(id.as_str()), Some(id));
        for bad in [
            "",
            "tok_",
            "tok_ABABABABABABABABABABABAB",
            "abc_abababababababababababab",
            "tok_../x",
        ] {
            assert_eq!(TokenId::parse(bad), None, "{bad}");
        }
    }
}
