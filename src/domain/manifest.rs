//! `plugin.yaml`, read leniently (SPEC §2).
//!
//! Real plugins carry many fields this service does not know, and some get
//! the known ones wrong; one bad field must not hide the whole plugin, so
//! each field is read on its own and a wrong type counts as absent.

use serde::Serialize;
use serde_norway::Value;

use crate::domain::name::PluginName;
use crate::domain::runtime::Runtime;

/// Manifests larger than this are treated as unparsable: the file is
/// read into memory and a plugin has no business shipping a huge one.
pub const MANIFEST_MAX_BYTES: usize = 256 * 1024;

/// What the service knows of a plugin: its directory name plus the
/// manifest fields it reports. Strings default to `""`, lists to `[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    pub name: PluginName,
    pub version: String,
    pub description: String,
    pub author: String,
    pub tags: Vec<String>,
    pub skills: Vec<String>,
    pub runtimes: Vec<String>,
    /// Informational only: memory blocks come from the `rules/*.md` files.
    pub rules: Vec<String>,
}

impl Manifest {
    /// A plugin known only by its directory name (no or unparsable manifest).
    pub fn bare(name: PluginName) -> Self {
        Self {
            name,
            version: String::new(),
            description: String::new(),
            author: String::new(),
            tags: Vec::new(),
            skills: Vec::new(),
            runtimes: Vec::new(),
            rules: Vec::new(),
        }
    }

    /// Reads `plugin.yaml` for the plugin in directory `name`. The directory
    /// name always wins over the manifest's own `name:`. `None`, oversized or
    /// unparsable YAML, or a document that is not a mapping, yield
    /// [`Manifest::bare`].
    pub fn from_yaml(name: PluginName, yaml: Option<&[u8]>) -> Self {
        let mut manifest = Self::bare(name);
        let Some(bytes) = yaml else {
            return manifest;
        };
        if bytes.len() > MANIFEST_MAX_BYTES {
            return manifest;
        }
        // serde_norway bounds recursion and alias repetition, which is what
        // keeps a "billion laughs" document from expanding without limit.
        let Ok(Value::Mapping(map)) = serde_norway::from_slice::<Value>(bytes) else {
            return manifest;
        };
        let string = |key: &str| match map.get(key) {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        let list = |key: &str| match map.get(key) {
            Some(Value::Sequence(items)) => items
                .iter()
                .filter_map(|item| match item {
                    Value::String(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        manifest.version = string("version");
        manifest.description = string("description");
        manifest.author = string("author");
        manifest.tags = list("tags");
        manifest.skills = list("skills");
        manifest.runtimes = list("runtimes");
        manifest.rules = list("rules");
        manifest
    }

    /// A plugin that declares no runtimes supports every runtime
    /// ("unspecified, try it"); otherwise names compare with `-` == `_`.
    pub fn supports(&self, runtime: &Runtime) -> bool {
        self.runtimes.is_empty() || self.runtimes.iter().any(|r| runtime.matches(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> PluginName {
        PluginName::parse(s).unwrap()
    }

    fn parse(yaml: &str) -> Manifest {
        Manifest::from_yaml(name("dir-name"), Some(yaml.as_bytes()))
    }

    #[test]
    fn reads_every_known_field_and_ignores_unknown_ones() {
        let m = parse(
            "name: other\nversion: 1.2.0\ndescription: d\nauthor: a\ntags: [x, y]\n\
             skills: [s1]\nruntimes: [claude_code]\nrules: [r.md]\nhooks: {pre: x}\nsha256: abc\n",
        );
        assert_eq!(m.name.as_str(), "dir-name", "the directory name wins");
        assert_eq!(m.version, "1.2.0");
        assert_eq!(m.description, "d");
        assert_eq!(m.author, "a");
        assert_eq!(m.tags, ["x", "y"]);
        assert_eq!(m.skills, ["s1"]);
        assert_eq!(m.runtimes, ["claude_code"]);
        assert_eq!(m.rules, ["r.md"]);
    }

    #[test]
    fn a_wrong_typed_field_counts_as_absent_and_lists_keep_their_strings() {
        type Check = fn(&Manifest) -> bool;
        let cases: &[(&str, Check)] = &[
            ("version: 1.0", |m| m.version.is_empty()),
            ("description: [a]", |m| m.description.is_empty()),
            ("author: {x: 1}", |m| m.author.is_empty()),
            ("tags: single", |m| m.tags.is_empty()),
            ("skills: [a, 1, {b: c}, d, null]", |m| {
                m.skills == ["a", "d"]
            }),
            ("runtimes: 3", |m| m.runtimes.is_empty()),
            ("version: 2.0.0\ntags: 7", |m| {
                m.version == "2.0.0" && m.tags.is_empty()
            }),
        ];
        for (yaml, check) in cases {
            assert!(check(&parse(yaml)), "case {yaml:?}: {:?}", parse(yaml));
        }
    }

    #[test]
    fn missing_or_unparsable_manifest_yields_a_bare_plugin() {
        let bare = Manifest::bare(name("dir-name"));
        assert_eq!(Manifest::from_yaml(name("dir-name"), None), bare);
        for yaml in [
            "",
            "just a string",
            "- a\n- b",
            "key: [unclosed",
            "\u{0}\u{1}",
            "42",
        ] {
            assert_eq!(parse(yaml), bare, "case {yaml:?}");
        }
        let invalid_utf8: &[u8] = &[b'n', b':', b' ', 0xff, 0xfe];
        assert_eq!(
            Manifest::from_yaml(name("dir-name"), Some(invalid_utf8)),
            bare
        );
    }

    #[test]
    fn an_oversized_manifest_is_unparsable() {
        let mut yaml = String::from("version: 1.0.0\ndescription: \"");
        yaml.push_str(&"x".repeat(MANIFEST_MAX_BYTES));
        yaml.push_str("\"\n");
        assert_eq!(parse(&yaml), Manifest::bare(name("dir-name")));
    }

    #[test]
    fn an_alias_bomb_is_unparsable_not_expanded() {
        let mut yaml = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let mut prev = 'a';
        for label in 'b'..='j' {
            yaml.push_str(&format!(
                "{label}: &{label} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
            prev = label;
        }
        yaml.push_str("version: 1.0.0\n");
        assert_eq!(parse(&yaml), Manifest::bare(name("dir-name")));
    }

    #[test]
    fn runtime_support_follows_the_declared_list() {
        let none = parse("version: 1.0.0");
        let some = parse("runtimes: [claude-code, hermes]");
        let rt = |s: &str| Runtime::parse(s).unwrap();
        assert!(
            none.supports(&rt("anything")),
            "declares none = supports all"
        );
        assert!(some.supports(&rt("claude_code")), "'-' and '_' are equal");
        assert!(some.supports(&rt("hermes")));
        assert!(!some.supports(&rt("langgraph")));
    }
}
