//! The staging pipeline's rules (SPEC §4), as pure decisions. The app runs
//! them in the order of §4 around the resolvers; adapters use the
//! hostile-tree rules while they unpack or copy.

use crate::domain::digest::{CallerSha256, CallerSha256Error, IntegrityManifest, TreeDigest};
use crate::domain::name::PluginName;
use crate::domain::source::{Source, SourceError, SpecError};

/// Everything the pipeline can refuse, in the words of SPEC §4. `source_text`
/// is the normalized source with any credential removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StagingError {
    #[error("'source' is required (e.g. \"local://my-plugin\" or \"github://owner/repo\")")]
    SourceRequired,
    #[error("invalid plugin source")]
    Unparsable,
    #[error("failed to resolve plugin source")]
    NoResolver {
        source_text: String,
        available: Vec<String>,
    },
    #[error("invalid plugin name")]
    InvalidName { source_text: String },
    #[error("invalid plugin source")]
    InvalidSpec {
        source_text: String,
        hint: &'static str,
    },
    #[error("{message}")]
    Refused {
        source_text: String,
        message: String,
    },
    #[error(
        "unpinned github source: pin a ref (github://owner/repo#<tag, branch or commit sha>) \
         or let the operator set PLUGIN_ALLOW_UNPINNED=true"
    )]
    Unpinned { source_text: String },
    #[error("plugin not found at {source_text}")]
    NotFound { source_text: String },
    #[error("fetching the plugin timed out")]
    Timeout { source_text: String },
    #[error("failed to fetch plugin from {scheme}")]
    FetchFailed { source_text: String, scheme: String },
    #[error("resolver returned invalid plugin name")]
    ResolverReturnedInvalidName { source_text: String },
    #[error("staged plugin exceeds size limit")]
    TooLarge { source_text: String },
    #[error("staged plugin has too many entries")]
    TooManyEntries { source_text: String },
    #[error("plugin contains an unsafe path: {path}")]
    UnsafePath { source_text: String, path: String },
    #[error("plugin contains a symlink: {path}")]
    Symlink { source_text: String, path: String },
    #[error("plugin contains a special file: {path}")]
    SpecialFile { source_text: String, path: String },
    #[error("plugin manifest integrity check failed")]
    Integrity { source_text: String },
    #[error("{error}")]
    CallerSha256 {
        source_text: String,
        error: CallerSha256Error,
    },
}

impl StagingError {
    /// The normalized source the error is about, where §4 echoes one.
    pub fn source_echo(&self) -> Option<&str> {
        match self {
            Self::SourceRequired | Self::Unparsable => None,
            Self::NoResolver { source_text, .. }
            | Self::InvalidName { source_text }
            | Self::InvalidSpec { source_text, .. }
            | Self::Refused { source_text, .. }
            | Self::Unpinned { source_text }
            | Self::NotFound { source_text }
            | Self::Timeout { source_text }
            | Self::FetchFailed { source_text, .. }
            | Self::ResolverReturnedInvalidName { source_text }
            | Self::TooLarge { source_text }
            | Self::TooManyEntries { source_text }
            | Self::UnsafePath { source_text, .. }
            | Self::Symlink { source_text, .. }
            | Self::SpecialFile { source_text, .. }
            | Self::Integrity { source_text }
            | Self::CallerSha256 { source_text, .. } => Some(source_text),
        }
    }
}

/// Steps 1–2: a source is required and must parse.
pub fn require_source(input: Option<&str>) -> Result<Source, StagingError> {
    Source::parse(input.unwrap_or("")).map_err(|e| match e {
        SourceError::Missing => StagingError::SourceRequired,
        _ => StagingError::Unparsable,
    })
}

/// Step 4: a resolver's grammar error, in the pipeline's words.
pub fn grammar_refusal(source: &Source, error: SpecError) -> StagingError {
    let source_text = source.redacted();
    match error {
        SpecError::InvalidName => StagingError::InvalidName { source_text },
        SpecError::Invalid { hint } => StagingError::InvalidSpec { source_text, hint },
        SpecError::Refused { message } => StagingError::Refused {
            source_text,
            message,
        },
    }
}

/// Step 5: unpinned sources move under the caller's feet; refuse them
/// unless the operator opted in.
pub fn check_pinned(
    source: &Source,
    pinned: bool,
    allow_unpinned: bool,
) -> Result<(), StagingError> {
    if pinned || allow_unpinned {
        Ok(())
    } else {
        Err(StagingError::Unpinned {
            source_text: source.redacted(),
        })
    }
}

/// Step 7: the name a resolver returns is re-validated; it becomes a path.
pub fn check_returned_name(source: &Source, name: &str) -> Result<PluginName, StagingError> {
    PluginName::parse(name).map_err(|_| StagingError::ResolverReturnedInvalidName {
        source_text: source.redacted(),
    })
}

/// Step 8's cap, charged as bytes are written so that an oversized archive
/// or a decompression bomb stops at the cap instead of filling the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeBudget {
    cap: u64,
    used: u64,
}

/// The staged tree would exceed the size cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("staged plugin exceeds size limit")]
pub struct OverBudget;

impl SizeBudget {
    pub fn new(cap: u64) -> Self {
        Self { cap, used: 0 }
    }

    /// Records `bytes` more of regular-file content.
    pub fn charge(&mut self, bytes: u64) -> Result<(), OverBudget> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.cap {
            Err(OverBudget)
        } else {
            Ok(())
        }
    }

    pub fn used(&self) -> u64 {
        self.used
    }

    pub fn cap(&self) -> u64 {
        self.cap
    }
}

/// Step 9: the root `manifest.json`, when there is one, must match.
pub fn check_integrity(
    source: &Source,
    manifest_json: Option<&[u8]>,
    legacy_sha256_hex: Option<&str>,
    digest: &TreeDigest,
) -> Result<(), StagingError> {
    let Some(bytes) = manifest_json else {
        return Ok(());
    };
    IntegrityManifest::parse(bytes)
        .and_then(|m| m.verify(legacy_sha256_hex.unwrap_or_default(), digest))
        .map_err(|_| StagingError::Integrity {
            source_text: source.redacted(),
        })
}

/// Step 10: the caller's `sha256` of `plugin.yaml`, when sent.
pub fn check_caller_sha256(
    source: &Source,
    expected: Option<&CallerSha256>,
    plugin_yaml_sha256: Option<&[u8; 32]>,
) -> Result<(), StagingError> {
    match expected {
        None => Ok(()),
        Some(expected) => {
            expected
                .check(plugin_yaml_sha256)
                .map_err(|error| StagingError::CallerSha256 {
                    source_text: source.redacted(),
                    error,
                })
        }
    }
}

/// A tree entry the hostile-tree rules refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsafeEntry {
    #[error("plugin contains an unsafe path: {0}")]
    Path(String),
    #[error("plugin contains a symlink: {0}")]
    Symlink(String),
    #[error("plugin contains a special file: {0}")]
    SpecialFile(String),
}

impl UnsafeEntry {
    pub fn into_staging_error(self, source: &Source) -> StagingError {
        let source_text = source.redacted();
        match self {
            Self::Path(path) => StagingError::UnsafePath { source_text, path },
            Self::Symlink(path) => StagingError::Symlink { source_text, path },
            Self::SpecialFile(path) => StagingError::SpecialFile { source_text, path },
        }
    }
}

/// Renders an entry path for a message: never raw control bytes.
pub fn escape_path(raw: &[u8]) -> String {
    match std::str::from_utf8(raw) {
        Ok(s) => s.escape_debug().to_string(),
        Err(_) => raw.escape_ascii().to_string(),
    }
}

/// The path rule for an entry of a staged tree: relative, no `..`, valid
/// UTF-8, no control character and no `\` (a harmless byte here, but a
/// separator to an external agent unpacking the download on Windows, where
/// `..\..\x` climbs out). Returns the path with `.` and empty
/// components dropped (`/`-separated), or `None` for the root itself.
pub fn check_entry_path(raw: &[u8]) -> Result<Option<String>, UnsafeEntry> {
    let unsafe_path = || UnsafeEntry::Path(escape_path(raw));
    let text = std::str::from_utf8(raw).map_err(|_| unsafe_path())?;
    if text.starts_with('/') || text.contains('\\') || text.chars().any(char::is_control) {
        return Err(unsafe_path());
    }
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(unsafe_path()),
            part => parts.push(part),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::digest::{FileDigest, sha256, tree_digest};

    fn src(s: &str) -> Source {
        Source::parse(s).unwrap()
    }

    #[test]
    fn a_missing_or_blank_source_is_required_and_garbage_is_unparsable() {
        assert_eq!(require_source(None), Err(StagingError::SourceRequired));
        assert_eq!(
            require_source(Some("  \t")),
            Err(StagingError::SourceRequired)
        );
        assert_eq!(
            require_source(Some("1x://y")),
            Err(StagingError::Unparsable)
        );
        assert_eq!(
            require_source(Some("local://")),
            Err(StagingError::Unparsable)
        );
        assert_eq!(
            require_source(Some(" my-plugin ")).unwrap().redacted(),
            "local://my-plugin"
        );
    }

    #[test]
    fn grammar_errors_keep_their_kind_and_echo_the_source() {
        let s = src("github://a/b/c#v1");
        let cases = [
            (SpecError::InvalidName, "invalid plugin name"),
            (SpecError::Invalid { hint: "h" }, "invalid plugin source"),
            (
                SpecError::Refused {
                    message: "no".into(),
                },
                "no",
            ),
        ];
        for (error, message) in cases {
            let refusal = grammar_refusal(&s, error);
            assert_eq!(refusal.to_string(), message);
            assert_eq!(refusal.source_echo(), Some("github://a/b/c#v1"));
        }
    }

    #[test]
    fn unpinned_sources_are_refused_unless_allowed() {
        let s = src("github://o/r");
        assert!(check_pinned(&s, true, false).is_ok());
        assert!(check_pinned(&s, false, true).is_ok());
        let err = check_pinned(&s, false, false).unwrap_err();
        assert!(
            err.to_string().contains("PLUGIN_ALLOW_UNPINNED=true"),
            "says how to override"
        );
        assert!(err.to_string().contains("#"), "says how to pin");
    }

    #[test]
    fn a_resolver_returned_name_is_revalidated() {
        let s = src("local://x");
        assert_eq!(check_returned_name(&s, "x").unwrap().as_str(), "x");
        for bad in ["", "..", "a/b", "a\0b"] {
            assert!(matches!(
                check_returned_name(&s, bad),
                Err(StagingError::ResolverReturnedInvalidName { .. })
            ));
        }
    }

    #[test]
    fn the_size_budget_allows_the_cap_and_refuses_one_byte_more() {
        let mut budget = SizeBudget::new(10);
        assert_eq!(budget.charge(4), Ok(()));
        assert_eq!(budget.charge(6), Ok(()));
        assert_eq!(budget.charge(1), Err(OverBudget));
        let mut huge = SizeBudget::new(u64::MAX - 1);
        assert_eq!(huge.charge(u64::MAX), Err(OverBudget), "no overflow");
    }

    #[test]
    fn integrity_is_checked_only_when_a_manifest_json_exists() {
        let s = src("local://x");
        let digest = tree_digest(&[FileDigest {
            path: "a".into(),
            sha256: sha256(b"1"),
        }]);
        assert_eq!(check_integrity(&s, None, Some("00"), &digest), Ok(()));
        let good = format!(r#"{{"digest":"{digest}"}}"#);
        assert_eq!(
            check_integrity(&s, Some(good.as_bytes()), None, &digest),
            Ok(())
        );
        assert!(matches!(
            check_integrity(&s, Some(b"{"), Some("00"), &digest),
            Err(StagingError::Integrity { .. })
        ));
    }

    #[test]
    fn the_caller_sha256_is_checked_only_when_sent() {
        let s = src("local://x");
        let yaml = sha256(b"x");
        assert_eq!(check_caller_sha256(&s, None, None), Ok(()));
        let sent = CallerSha256::parse(&hex::encode(yaml)).unwrap();
        assert_eq!(check_caller_sha256(&s, Some(&sent), Some(&yaml)), Ok(()));
        let err = check_caller_sha256(&s, Some(&sent), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sha256 check failed: plugin.yaml not found in staged plugin"
        );
    }

    #[test]
    fn hostile_entry_paths_are_refused_with_escaped_text() {
        let good: &[(&[u8], Option<&str>)] = &[
            (b"a/b.md", Some("a/b.md")),
            (b"./a//b/", Some("a/b")),
            (b"./", None),
            (b"dir/..x/file", Some("dir/..x/file")),
            ("ünï/cödé".as_bytes(), Some("ünï/cödé")),
        ];
        for (raw, expected) in good {
            assert_eq!(
                check_entry_path(raw),
                Ok(expected.map(String::from)),
                "{raw:?}"
            );
        }
        let bad: &[(&[u8], &str)] = &[
            (b"../x", "../x"),
            (b"a/../../x", "a/../../x"),
            (b"/etc/passwd", "/etc/passwd"),
            (b"a\nb", "a\\nb"),
            (b"a\0b", "a\\0b"),
            (b"a\x1bb", "a\\u{1b}b"),
            (b"\xff\xfe", "\\xff\\xfe"),
            (b"..\\..\\x", "..\\\\..\\\\x"),
            (b"a\\b", "a\\\\b"),
        ];
        for (raw, shown) in bad {
            assert_eq!(
                check_entry_path(raw),
                Err(UnsafeEntry::Path((*shown).to_owned())),
                "{raw:?}"
            );
        }
    }
}
