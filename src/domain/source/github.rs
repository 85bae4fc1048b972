//! The `github` grammar (SPEC §3): `<owner>/<repo>[#<ref>]`.

use std::fmt;

use super::SpecError;

/// The grammar of a `github` spec, given as the `hint` of its 400.
pub const GITHUB_GRAMMAR: &str = "github://<owner>/<repo>[#<ref>] \
     (owner and repo: [A-Za-z0-9][A-Za-z0-9_.-]{0,99}; \
     ref: a tag, branch or 40-hex commit sha matching [A-Za-z0-9_.][A-Za-z0-9_./-]{0,254})";

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    proptest! {
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
