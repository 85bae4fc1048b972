//! Plugin names and workspace ids: the two identifiers the service turns
//! into file paths and container names (SPEC §2, §8).
//!
//! Both are newtypes made only by their parsers, so a value in hand has
//! already passed its rule. A [`PluginName`] is safe to join onto a
//! directory: it is exactly one normal path component and can never climb
//! out of that directory.
//!
//! Pure: std, thiserror and serde only. No I/O, no async, no framework types.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Component, Path};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest plugin name accepted, in bytes (SPEC §2).
pub const PLUGIN_NAME_MAX_BYTES: usize = 128;

/// Longest workspace id accepted, in characters (SPEC §8).
pub const WORKSPACE_ID_MAX_LEN: usize = 64;

/// How many leading characters of a workspace id name its default
/// container (SPEC §1).
const CONTAINER_ID_PREFIX_LEN: usize = 12;

/// Why a string is not a plugin name (SPEC §2).
///
/// Every variant maps to the same 400 `invalid plugin name` at the HTTP
/// edge; the variants exist for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginNameError {
    /// The name is the empty string.
    #[error("plugin name is empty")]
    Empty,
    /// The name is longer than 128 bytes.
    #[error("plugin name is longer than {PLUGIN_NAME_MAX_BYTES} bytes")]
    TooLong,
    /// The name holds a control character (NUL included).
    #[error("plugin name contains a control character")]
    ControlCharacter,
    /// The name holds `/` or `\`.
    #[error("plugin name contains a path separator ('/' or '\\')")]
    Separator,
    /// The name is `.` or `..`, which are never names.
    #[error("plugin name cannot be \".\" or \"..\"")]
    DotName,
    /// The name holds `..` somewhere.
    #[error("plugin name contains \"..\"")]
    DotDot,
    /// The name is not its own base name (defence in depth: the rules
    /// above already imply it on every platform the service runs on).
    #[error("plugin name is not a single path component")]
    NotBaseName,
    /// The name is a valid path component but not a registry name.
    #[error("plugin name must match ^[a-z0-9][a-z0-9._-]{{0,127}}$ (e.g. \"my-plugin\")")]
    NotRegistryName,
}

/// A plugin name that is safe to use as one path component (SPEC §2).
///
/// Invariant: non-empty, at most 128 bytes, no control characters, no `/`,
/// `\` or `..`, not `.`, and equal to its own base name. So
/// `dir.join(name)` is always a direct child of `dir`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PluginName(String);

impl PluginName {
    /// Parses a plugin name under the path-component rules of SPEC §2:
    /// non-empty, at most 128 bytes, no control characters (NUL included),
    /// no `/`, `\` or `..`, equal to its own base name; `.` and `..` never.
    ///
    /// This is the rule for names that come from resolvers and from
    /// installed plugins; names taken from the local registry must also
    /// pass [`PluginName::parse_registry`].
    pub fn parse(s: &str) -> Result<Self, PluginNameError> {
        if s.is_empty() {
            return Err(PluginNameError::Empty);
        }
        if s.len() > PLUGIN_NAME_MAX_BYTES {
            return Err(PluginNameError::TooLong);
        }
        if s.chars().any(char::is_control) {
            return Err(PluginNameError::ControlCharacter);
        }
        if s.contains(['/', '\\']) {
            return Err(PluginNameError::Separator);
        }
        if s == "." || s == ".." {
            return Err(PluginNameError::DotName);
        }
        if s.contains("..") {
            return Err(PluginNameError::DotDot);
        }
        if !is_own_base_name(s) {
            return Err(PluginNameError::NotBaseName);
        }
        Ok(Self(s.to_owned()))
    }

    /// Parses a name from the local registry: [`PluginName::parse`] plus
    /// the registry pattern `^[a-z0-9][a-z0-9._-]{0,127}$` (SPEC §2).
    pub fn parse_registry(s: &str) -> Result<Self, PluginNameError> {
        let name = Self::parse(s)?;
        if is_registry_name(s) {
            Ok(name)
        } else {
            Err(PluginNameError::NotRegistryName)
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `Path::new(s)` is exactly one normal component spelled `s`: what Go's
/// `filepath.Base(s) == s` checks in the original, stated for std's paths.
fn is_own_base_name(s: &str) -> bool {
    let mut components = Path::new(s).components();
    matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(c)), None) if c == OsStr::new(s)
    )
}

/// Hand-written `^[a-z0-9][a-z0-9._-]{0,127}$`.
fn is_registry_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_lowercase() || first.is_ascii_digit())
                && rest.len() < PLUGIN_NAME_MAX_BYTES
                && rest.iter().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
        }
        None => false,
    }
}

impl fmt::Display for PluginName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for PluginName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for PluginName {
    type Err = PluginNameError;

    /// Same as [`PluginName::parse`] (not the registry rule).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for PluginName {
    type Error = PluginNameError;

    /// Same as [`PluginName::parse`], reusing the allocation.
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)?;
        Ok(Self(s))
    }
}

impl From<PluginName> for String {
    fn from(name: PluginName) -> Self {
        name.0
    }
}

/// Why a string is not a workspace id (SPEC §8).
///
/// Every variant maps to 400 `invalid workspace id` at the HTTP edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkspaceIdError {
    /// The id is the empty string.
    #[error("invalid workspace id: empty")]
    Empty,
    /// The id is longer than 64 characters.
    #[error("invalid workspace id: longer than {WORKSPACE_ID_MAX_LEN} characters")]
    TooLong,
    /// The first character is not an ASCII letter or digit.
    #[error("invalid workspace id: must start with a letter or digit")]
    InvalidStart,
    /// A character outside `[A-Za-z0-9_-]`.
    #[error("invalid workspace id: only letters, digits, '_' and '-' are allowed")]
    InvalidCharacter,
}

/// A workspace id: `[A-Za-z0-9][A-Za-z0-9_-]{0,63}` (SPEC §8).
///
/// Invariant: ASCII only, so byte and character positions agree.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WorkspaceId(String);

impl WorkspaceId {
    /// Parses a workspace id under `[A-Za-z0-9][A-Za-z0-9_-]{0,63}`.
    pub fn parse(s: &str) -> Result<Self, WorkspaceIdError> {
        let Some((first, rest)) = s.as_bytes().split_first() else {
            return Err(WorkspaceIdError::Empty);
        };
        if !first.is_ascii_alphanumeric() {
            return Err(WorkspaceIdError::InvalidStart);
        }
        if !rest
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        {
            return Err(WorkspaceIdError::InvalidCharacter);
        }
        if s.len() > WORKSPACE_ID_MAX_LEN {
            return Err(WorkspaceIdError::TooLong);
        }
        Ok(Self(s.to_owned()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The container name used when the workspace record names none:
    /// `ws-` + the first 12 characters of the id (SPEC §1).
    pub fn container_default(&self) -> String {
        let prefix: String = self.0.chars().take(CONTAINER_ID_PREFIX_LEN).collect();
        format!("ws-{prefix}")
    }
}

impl fmt::Display for WorkspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for WorkspaceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for WorkspaceId {
    type Err = WorkspaceIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for WorkspaceId {
    type Error = WorkspaceIdError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)?;
        Ok(Self(s))
    }
}

impl From<WorkspaceId> for String {
    fn from(id: WorkspaceId) -> Self {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::de::IntoDeserializer;
    use serde::de::value::{Error as DeError, StringDeserializer};

    #[test]
    fn plugin_names_follow_the_path_component_rules() {
        let max = "a".repeat(128);
        let too_long = "a".repeat(129);
        // 64 two-byte characters: 128 bytes, allowed.
        let max_unicode = "é".repeat(64);
        let cases: &[(&str, Result<(), PluginNameError>)] = &[
            ("my-plugin", Ok(())),
            ("molecule-ai-plugin-superpowers", Ok(())),
            ("a", Ok(())),
            ("a.b", Ok(())),
            (".hidden", Ok(())),
            ("trailing.", Ok(())),
            ("Upper_Case", Ok(())),
            ("with space", Ok(())),
            ("ünïcödé", Ok(())),
            ("名前", Ok(())),
            ("a:b", Ok(())),
            (&max, Ok(())),
            (&max_unicode, Ok(())),
            ("", Err(PluginNameError::Empty)),
            (&too_long, Err(PluginNameError::TooLong)),
            ("x\0y", Err(PluginNameError::ControlCharacter)),
            ("tab\there", Err(PluginNameError::ControlCharacter)),
            ("line\n", Err(PluginNameError::ControlCharacter)),
            ("del\u{7f}", Err(PluginNameError::ControlCharacter)),
            ("c1\u{85}", Err(PluginNameError::ControlCharacter)),
            ("a/b", Err(PluginNameError::Separator)),
            ("/abs", Err(PluginNameError::Separator)),
            ("trailing/", Err(PluginNameError::Separator)),
            ("a\\b", Err(PluginNameError::Separator)),
            ("../x", Err(PluginNameError::Separator)),
            (".", Err(PluginNameError::DotName)),
            ("..", Err(PluginNameError::DotName)),
            ("a..b", Err(PluginNameError::DotDot)),
            ("...", Err(PluginNameError::DotDot)),
            ("x..", Err(PluginNameError::DotDot)),
        ];
        for (input, want) in cases {
            let got = PluginName::parse(input);
            assert_eq!(
                got.as_ref().map(|_| ()),
                want.as_ref().map(|_| ()),
                "input {input:?}"
            );
            if let Ok(name) = got {
                assert_eq!(name.as_str(), *input);
            }
        }
    }

    #[test]
    fn too_long_is_checked_in_bytes_not_characters() {
        // 65 two-byte characters: 130 bytes but only 65 chars.
        let s = "é".repeat(65);
        assert_eq!(PluginName::parse(&s), Err(PluginNameError::TooLong));
    }

    #[test]
    fn registry_names_also_match_the_registry_pattern() {
        let max = "a".repeat(128);
        let too_long = "a".repeat(129);
        let cases: &[(&str, Result<(), PluginNameError>)] = &[
            ("my-plugin", Ok(())),
            ("a", Ok(())),
            ("0", Ok(())),
            ("9lives", Ok(())),
            ("a.b_c-d", Ok(())),
            ("trailing-", Ok(())),
            (&max, Ok(())),
            (&too_long, Err(PluginNameError::TooLong)),
            ("", Err(PluginNameError::Empty)),
            ("a/b", Err(PluginNameError::Separator)),
            ("a..b", Err(PluginNameError::DotDot)),
            (".", Err(PluginNameError::DotName)),
            ("x\0y", Err(PluginNameError::ControlCharacter)),
            ("My-Plugin", Err(PluginNameError::NotRegistryName)),
            ("A", Err(PluginNameError::NotRegistryName)),
            ("ünïcödé", Err(PluginNameError::NotRegistryName)),
            ("名前", Err(PluginNameError::NotRegistryName)),
            (".hidden", Err(PluginNameError::NotRegistryName)),
            ("-dash", Err(PluginNameError::NotRegistryName)),
            ("_under", Err(PluginNameError::NotRegistryName)),
            ("with space", Err(PluginNameError::NotRegistryName)),
            ("a:b", Err(PluginNameError::NotRegistryName)),
            ("a+b", Err(PluginNameError::NotRegistryName)),
        ];
        for (input, want) in cases {
            let got = PluginName::parse_registry(input).map(|_| ());
            assert_eq!(&got, want, "input {input:?}");
        }
    }

    #[test]
    fn unicode_passes_parse_but_fails_parse_registry() {
        assert!(PluginName::parse("plügin").is_ok());
        assert_eq!(
            PluginName::parse_registry("plügin"),
            Err(PluginNameError::NotRegistryName)
        );
    }

    #[test]
    fn plugin_name_conversions_agree_with_parse() {
        let name = PluginName::parse("my-plugin").unwrap();
        assert_eq!(name.to_string(), "my-plugin");
        assert_eq!(AsRef::<str>::as_ref(&name), "my-plugin");
        assert_eq!("my-plugin".parse::<PluginName>(), Ok(name.clone()));
        assert_eq!(
            PluginName::try_from("my-plugin".to_owned()),
            Ok(name.clone())
        );
        assert_eq!(String::from(name), "my-plugin");
        assert_eq!("a/b".parse::<PluginName>(), Err(PluginNameError::Separator));
        assert_eq!(
            PluginName::try_from("..".to_owned()),
            Err(PluginNameError::DotName)
        );
    }

    #[test]
    fn plugin_names_deserialize_only_through_parse() {
        let ok: StringDeserializer<DeError> = "my-plugin".to_owned().into_deserializer();
        assert_eq!(
            PluginName::deserialize(ok).unwrap(),
            PluginName::parse("my-plugin").unwrap()
        );
        let bad: StringDeserializer<DeError> = "../etc".to_owned().into_deserializer();
        assert!(PluginName::deserialize(bad).is_err());
    }

    #[test]
    fn plugin_name_errors_read_as_lowercase_sentences() {
        for err in [
            PluginNameError::Empty,
            PluginNameError::TooLong,
            PluginNameError::ControlCharacter,
            PluginNameError::Separator,
            PluginNameError::DotName,
            PluginNameError::DotDot,
            PluginNameError::NotBaseName,
            PluginNameError::NotRegistryName,
        ] {
            let msg = err.to_string();
            assert!(msg.starts_with("plugin name "), "{msg}");
            assert!(!msg.ends_with('.'), "{msg}");
        }
        assert_eq!(
            PluginNameError::NotRegistryName.to_string(),
            "plugin name must match ^[a-z0-9][a-z0-9._-]{0,127}$ (e.g. \"my-plugin\")"
        );
    }

    #[test]
    fn workspace_ids_follow_the_id_rule() {
        let max = format!("a{}", "b".repeat(63));
        let too_long = format!("a{}", "b".repeat(64));
        let cases: &[(&str, Result<(), WorkspaceIdError>)] = &[
            ("a", Ok(())),
            ("Z", Ok(())),
            ("7", Ok(())),
            ("ws_1-A", Ok(())),
            ("0f8e2c3a-1b2c-4d5e-8f90-123456789abc", Ok(())),
            (&max, Ok(())),
            ("", Err(WorkspaceIdError::Empty)),
            (&too_long, Err(WorkspaceIdError::TooLong)),
            ("-a", Err(WorkspaceIdError::InvalidStart)),
            ("_a", Err(WorkspaceIdError::InvalidStart)),
            (".a", Err(WorkspaceIdError::InvalidStart)),
            ("é", Err(WorkspaceIdError::InvalidStart)),
            ("a.b", Err(WorkspaceIdError::InvalidCharacter)),
            ("a/b", Err(WorkspaceIdError::InvalidCharacter)),
            ("a b", Err(WorkspaceIdError::InvalidCharacter)),
            ("aé", Err(WorkspaceIdError::InvalidCharacter)),
            ("a\0", Err(WorkspaceIdError::InvalidCharacter)),
        ];
        for (input, want) in cases {
            let got = WorkspaceId::parse(input);
            assert_eq!(
                got.as_ref().map(|_| ()),
                want.as_ref().map(|_| ()),
                "input {input:?}"
            );
            if let Ok(id) = got {
                assert_eq!(id.as_str(), *input);
                assert_eq!(id.to_string(), *input);
                assert_eq!(input.parse::<WorkspaceId>(), Ok(id.clone()));
                assert_eq!(WorkspaceId::try_from(input.to_string()), Ok(id));
            }
        }
    }

    #[test]
    fn default_container_is_ws_dash_and_the_first_twelve_characters() {
        let cases = [
            ("0f8e2c3a-1b2c-4d5e-8f90-123456789abc", "ws-0f8e2c3a-1b2"),
            ("abcdefghijkl", "ws-abcdefghijkl"),
            ("abcdefghijklm", "ws-abcdefghijkl"),
            ("short", "ws-short"),
            ("a", "ws-a"),
        ];
        for (id, want) in cases {
            assert_eq!(
                WorkspaceId::parse(id).unwrap().container_default(),
                want,
                "id {id:?}"
            );
        }
    }

    #[test]
    fn workspace_ids_deserialize_only_through_parse() {
        let ok: StringDeserializer<DeError> = "ws-1".to_owned().into_deserializer();
        assert_eq!(WorkspaceId::deserialize(ok).unwrap().as_str(), "ws-1");
        let bad: StringDeserializer<DeError> = "-ws".to_owned().into_deserializer();
        assert!(WorkspaceId::deserialize(bad).is_err());
    }

    /// Strings that probe the rules: short runs of dots and slashes,
    /// path punctuation, control characters, a few non-ASCII letters, and
    /// arbitrary text.
    fn name_candidates() -> impl Strategy<Value = String> {
        prop_oneof![
            "[./\\\\a]{1,3}",
            "[a-z0-9._-]{0,140}",
            "[a./\\\\ \\x00\\x1f\\x7f~:é]{0,8}",
            any::<String>(),
        ]
    }

    proptest! {
        #[test]
        fn accepted_names_never_leave_the_plugins_dir(s in name_candidates()) {
            if let Ok(name) = PluginName::parse(&s) {
                let base = Path::new("/plugins");
                let joined = base.join(name.as_str());
                prop_assert_eq!(joined.components().count(), base.components().count() + 1);
                prop_assert!(joined.starts_with(base));
                prop_assert_eq!(joined.parent(), Some(base));
                prop_assert_eq!(joined.file_name(), Some(OsStr::new(name.as_str())));
                let last = joined.components().next_back();
                prop_assert!(matches!(last, Some(Component::Normal(_))));
            }
        }

        #[test]
        fn every_registry_name_is_also_a_plugin_name(s in name_candidates()) {
            if let Ok(name) = PluginName::parse_registry(&s) {
                prop_assert_eq!(PluginName::parse(&s), Ok(name));
            }
        }

        #[test]
        fn names_matching_the_registry_pattern_without_dot_dot_are_accepted(
            s in "[a-z0-9][a-z0-9._-]{0,127}"
        ) {
            prop_assert_eq!(PluginName::parse_registry(&s).is_ok(), !s.contains(".."));
        }

        #[test]
        fn plugin_names_round_trip_through_display(s in name_candidates()) {
            if let Ok(name) = PluginName::parse(&s) {
                prop_assert_eq!(name.to_string().parse::<PluginName>(), Ok(name));
            }
        }

        #[test]
        fn workspace_ids_round_trip_and_name_a_short_container(s in "[A-Za-z0-9_-]{0,70}") {
            if let Ok(id) = WorkspaceId::parse(&s) {
                prop_assert_eq!(id.to_string().parse::<WorkspaceId>(), Ok(id.clone()));
                let container = id.container_default();
                prop_assert!(container.len() <= 3 + CONTAINER_ID_PREFIX_LEN);
                prop_assert!(s.starts_with(&container[3..]));
            }
        }
    }
}
