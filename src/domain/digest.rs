//! Digests of a staged plugin tree (SPEC §4 steps 9–10): the `h1` dirhash
//! that identifies a plugin, the legacy `sha256` of `manifest.json`, and the
//! caller's `sha256` of `plugin.yaml`.

use std::fmt;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// The integrity manifest is the root `manifest.json`; it never hashes itself.
pub const INTEGRITY_MANIFEST: &str = "manifest.json";

/// A regular file of a staged tree: its path relative to the plugin root
/// (`/`-separated) and the SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    pub path: String,
    pub sha256: [u8; 32],
}

/// The `h1:` dirhash (the format of Go modules and Terraform): the identity
/// of a plugin's content, used for "unchanged" installs and ETags.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TreeDigest(String);

impl TreeDigest {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Accepts a stored `h1:<base64 of 32 bytes>` value.
    pub fn parse(s: &str) -> Option<Self> {
        let b64 = s.strip_prefix("h1:")?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        (bytes.len() == 32).then(|| Self(s.to_owned()))
    }
}

impl fmt::Display for TreeDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `h1:` + base64 of SHA-256 over `"<hex sha256>  <path>\n"` per regular
/// file except the root `manifest.json`, sorted by path (bytewise).
pub fn tree_digest(files: &[FileDigest]) -> TreeDigest {
    let mut sorted: Vec<&FileDigest> = files
        .iter()
        .filter(|f| f.path != INTEGRITY_MANIFEST)
        .collect();
    sorted.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let mut hasher = Sha256::new();
    for file in sorted {
        hasher.update(file_line(file));
    }
    TreeDigest(format!(
        "h1:{}",
        base64::engine::general_purpose::STANDARD.encode(hasher.finalize())
    ))
}

/// One dirhash line: `"<hex sha256>  <path>\n"`.
fn file_line(file: &FileDigest) -> String {
    format!("{}  {}\n", hex::encode(file.sha256), file.path)
}

/// A file list as dirhash lines (the input of [`tree_digest`]), sorted by
/// path: how a receipt keeps the files that made its digest (SPEC §11).
/// Paths never hold control characters (SPEC §4), so a line is one file.
pub fn file_list_text(files: &[FileDigest]) -> String {
    let mut sorted: Vec<&FileDigest> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    sorted.into_iter().map(file_line).collect()
}

/// Reads back [`file_list_text`]; `None` when a line is not a dirhash line.
pub fn parse_file_list(text: &str) -> Option<Vec<FileDigest>> {
    let mut files = Vec::new();
    for line in text.split_terminator('\n') {
        let (hex_part, path) = (line.get(..64)?, line.get(64..)?.strip_prefix("  ")?);
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut sha256).ok()?;
        if path.is_empty() {
            return None;
        }
        files.push(FileDigest {
            path: path.to_owned(),
            sha256,
        });
    }
    Some(files)
}

/// The legacy `sha256` of `manifest.json`: SHA-256 over
/// `<path>\0<bytes>` of every regular file except the root `manifest.json`.
/// Files must be fed in bytewise path order; the caller streams the bytes.
#[derive(Default)]
pub struct LegacyTreeHasher {
    hasher: Sha256,
}

impl LegacyTreeHasher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the next file. Returns false (and hashes nothing for it) for
    /// the root `manifest.json`, whose bytes must then not be fed.
    pub fn begin_file(&mut self, path: &str) -> bool {
        if path == INTEGRITY_MANIFEST {
            return false;
        }
        self.hasher.update(path.as_bytes());
        self.hasher.update([0u8]);
        true
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    pub fn finish_hex(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

/// The fields of a root `manifest.json` that the integrity check uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IntegrityManifest {
    pub sha256: Option<String>,
    pub digest: Option<String>,
}

/// `manifest.json` is unparsable, has a non-string field, or does not match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin manifest integrity check failed")]
pub struct IntegrityError;

impl IntegrityManifest {
    pub fn parse(bytes: &[u8]) -> Result<Self, IntegrityError> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| IntegrityError)?;
        let object = value.as_object().ok_or(IntegrityError)?;
        let field = |key: &str| match object.get(key) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(IntegrityError),
        };
        Ok(Self {
            sha256: field("sha256")?,
            digest: field("digest")?,
        })
    }

    /// Each field present must match the staged tree (both when both are).
    pub fn verify(
        &self,
        legacy_sha256_hex: &str,
        digest: &TreeDigest,
    ) -> Result<(), IntegrityError> {
        let sha256_ok = self
            .sha256
            .as_ref()
            .is_none_or(|expected| expected.eq_ignore_ascii_case(legacy_sha256_hex));
        let digest_ok = self
            .digest
            .as_ref()
            .is_none_or(|expected| expected == digest.as_str());
        if sha256_ok && digest_ok {
            Ok(())
        } else {
            Err(IntegrityError)
        }
    }
}

/// The caller's `sha256` of `plugin.yaml`: 64 hex characters, kept as sent
/// (it is echoed in the mismatch message) and compared case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerSha256(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallerSha256Error {
    #[error("invalid sha256 (expected 64 hex characters)")]
    Invalid,
    #[error("sha256 check failed: plugin.yaml not found in staged plugin")]
    PluginYamlMissing,
    #[error("sha256 mismatch: expected {expected}, got {got}")]
    Mismatch { expected: String, got: String },
}

impl CallerSha256 {
    pub fn parse(s: &str) -> Result<Self, CallerSha256Error> {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(CallerSha256Error::Invalid)
        }
    }

    /// Checks the staged `plugin.yaml`'s SHA-256 (None: no such file).
    pub fn check(&self, plugin_yaml_sha256: Option<&[u8; 32]>) -> Result<(), CallerSha256Error> {
        let actual = plugin_yaml_sha256.ok_or(CallerSha256Error::PluginYamlMissing)?;
        let got = hex::encode(actual);
        if got.eq_ignore_ascii_case(&self.0) {
            Ok(())
        } else {
            Err(CallerSha256Error::Mismatch {
                expected: self.0.clone(),
                got,
            })
        }
    }
}

/// SHA-256 of a byte string, for callers that hash whole small files.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &str) -> FileDigest {
        FileDigest {
            path: path.into(),
            sha256: sha256(content.as_bytes()),
        }
    }

    #[test]
    fn tree_digest_matches_the_go_dirhash_h1_format() {
        // Computed independently with the Go dirhash algorithm:
        // printf '%s  %s\n' $(sha256 a) a.txt ... | sha256sum | base64.
        let files = [file("b/c.txt", "c\n"), file("a.txt", "a\n")];
        let mut lines = String::new();
        for (path, content) in [("a.txt", "a\n"), ("b/c.txt", "c\n")] {
            lines.push_str(&format!(
                "{}  {}\n",
                hex::encode(sha256(content.as_bytes())),
                path
            ));
        }
        let expected = format!(
            "h1:{}",
            base64::engine::general_purpose::STANDARD.encode(sha256(lines.as_bytes()))
        );
        assert_eq!(tree_digest(&files).as_str(), expected);
    }

    #[test]
    fn a_file_list_round_trips_through_its_dirhash_lines_sorted_by_path() {
        let files = [
            file("b/c d.txt", "c"),
            file("a", "a"),
            file("manifest.json", "{}"),
        ];
        let text = file_list_text(&files);
        assert!(text.starts_with(&format!("{}  a\n", hex::encode(sha256(b"a")))));
        let parsed = parse_file_list(&text).unwrap();
        let paths: Vec<&str> = parsed.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a", "b/c d.txt", "manifest.json"]);
        assert_eq!(tree_digest(&parsed), tree_digest(&files));
        assert_eq!(parse_file_list(""), Some(vec![]));
    }

    #[test]
    fn a_file_list_line_that_is_not_a_dirhash_line_is_refused() {
        let hex = hex::encode(sha256(b"a"));
        for bad in [
            "zz  a\n".to_owned(),
            format!("{hex} a\n"),
            format!("{hex}  \n"),
            format!("{}  a\n", &hex[..62]),
            format!("{}  a\n", hex.replace('a', "g")),
        ] {
            assert_eq!(parse_file_list(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tree_digest_ignores_input_order_and_the_root_manifest_json() {
        let a = [file("x", "1"), file("y/z", "2")];
        let b = [
            file("y/z", "2"),
            file("manifest.json", "{}"),
            file("x", "1"),
        ];
        assert_eq!(tree_digest(&a), tree_digest(&b));
        let nested = [
            file("x", "1"),
            file("y/z", "2"),
            file("y/manifest.json", "{}"),
        ];
        assert_ne!(
            tree_digest(&a),
            tree_digest(&nested),
            "only the root one is skipped"
        );
        assert_ne!(
            tree_digest(&a),
            tree_digest(&[file("x", "1"), file("y/z", "3")])
        );
    }

    #[test]
    fn tree_digest_round_trips_through_parse() {
        let d = tree_digest(&[file("a", "b")]);
        assert_eq!(TreeDigest::parse(d.as_str()), Some(d));
        for bad in ["", "h1:", "h1:abc", "h2:AAAA", "sha256:x"] {
            assert_eq!(TreeDigest::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn legacy_sha256_hashes_path_nul_bytes_and_skips_the_root_manifest() {
        let mut h = LegacyTreeHasher::new();
        assert!(h.begin_file("a.txt"));
        h.update(b"he");
        h.update(b"llo");
        assert!(!h.begin_file("manifest.json"));
        assert!(h.begin_file("b/c"));
        h.update(b"x");
        let expected = hex::encode(sha256(b"a.txt\0hellob/c\0x"));
        assert_eq!(h.finish_hex(), expected);
    }

    #[test]
    fn integrity_manifest_fields_must_each_match() {
        let digest = tree_digest(&[file("a", "1")]);
        let legacy = "ab".repeat(32);
        let ok = [
            "{}".to_owned(),
            r#"{"name": "x"}"#.to_owned(),
            format!(r#"{{"sha256": "{}"}}"#, legacy.to_uppercase()),
            format!(r#"{{"digest": "{digest}"}}"#),
            format!(r#"{{"sha256": "{legacy}", "digest": "{digest}"}}"#),
        ];
        for json in ok {
            let m = IntegrityManifest::parse(json.as_bytes()).unwrap();
            assert_eq!(m.verify(&legacy, &digest), Ok(()), "{json}");
        }
        let mismatched = [
            format!(r#"{{"sha256": "{}"}}"#, "cd".repeat(32)),
            r#"{"digest": "h1:AAAA"}"#.to_owned(),
            format!(r#"{{"sha256": "{legacy}", "digest": "h1:x"}}"#),
        ];
        for json in mismatched {
            let m = IntegrityManifest::parse(json.as_bytes()).unwrap();
            assert_eq!(m.verify(&legacy, &digest), Err(IntegrityError), "{json}");
        }
    }

    #[test]
    fn an_unparsable_or_non_string_integrity_manifest_fails() {
        for json in [
            "",
            "not json",
            "[]",
            r#"{"sha256": 1}"#,
            r#"{"digest": null}"#,
            "{} x",
        ] {
            assert_eq!(
                IntegrityManifest::parse(json.as_bytes()),
                Err(IntegrityError),
                "{json}"
            );
        }
    }

    #[test]
    fn caller_sha256_must_be_64_hex_and_match_plugin_yaml() {
        let yaml = sha256(b"name: x\n");
        let hexed = hex::encode(yaml);
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(63), &"a".repeat(65)] {
            assert_eq!(
                CallerSha256::parse(bad),
                Err(CallerSha256Error::Invalid),
                "{bad}"
            );
        }
        let upper = CallerSha256::parse(&hexed.to_uppercase()).unwrap();
        assert_eq!(
            upper.check(Some(&yaml)),
            Ok(()),
            "compared case-insensitively"
        );
        assert_eq!(upper.check(None), Err(CallerSha256Error::PluginYamlMissing));
        let other = CallerSha256::parse(&"A".repeat(64)).unwrap();
        let err = other.check(Some(&yaml)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("sha256 mismatch: expected {}, got {hexed}", "A".repeat(64))
        );
    }
}
