//! Org policy (SPEC §5, §7): the allowlist decision and the name-mismatch
//! rule of downloads.

use crate::domain::name::PluginName;

/// How the allowlist behaves when the store cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowlistFailure {
    /// Refuse (the default): a store outage must not open the gate.
    Closed,
    /// Allow, as the original did; an explicit operator choice.
    Open,
}

/// Why the allowlist refused a plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowlistRefusal {
    #[error("plugin \"{0}\" is not in the org allowlist")]
    NotAllowed(PluginName),
    #[error("allowlist unavailable")]
    Unavailable,
}

/// The org allowlist decision. `entries` is the org's list as read from the
/// store, or `None` when the store failed. An empty list allows every
/// plugin.
pub fn check_allowlist(
    entries: Option<&[PluginName]>,
    plugin: &PluginName,
    on_failure: AllowlistFailure,
) -> Result<(), AllowlistRefusal> {
    match entries {
        None => match on_failure {
            AllowlistFailure::Open => Ok(()),
            AllowlistFailure::Closed => Err(AllowlistRefusal::Unavailable),
        },
        Some([]) => Ok(()),
        Some(list) if list.contains(plugin) => Ok(()),
        Some(_) => Err(AllowlistRefusal::NotAllowed(plugin.clone())),
    }
}

/// The source resolved to another plugin than the URL names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("source resolved to plugin \"{resolved}\" but URL requested \"{requested}\"")]
pub struct NameMismatch {
    pub resolved: PluginName,
    pub requested: PluginName,
}

/// The name-mismatch rule: a download for `:name` must deliver `:name`, so
/// an agent never unpacks one plugin under another's name.
pub fn check_name_matches(
    resolved: &PluginName,
    requested: &PluginName,
) -> Result<(), NameMismatch> {
    if resolved == requested {
        Ok(())
    } else {
        Err(NameMismatch {
            resolved: resolved.clone(),
            requested: requested.clone(),
        })
    }
}

/// Normalizes an allowlist as sent: every entry a valid plugin name (else
/// the first bad one is returned as sent), duplicates collapsed, sorted.
pub fn normalize_allowlist(entries: &[String]) -> Result<Vec<PluginName>, String> {
    let mut names = entries
        .iter()
        .map(|entry| PluginName::parse(entry).map_err(|_| entry.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    names.sort();
    names.dedup();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> PluginName {
        PluginName::parse(s).unwrap()
    }

    #[test]
    fn the_allowlist_decides_by_entries_and_failure_mode() {
        use AllowlistFailure::{Closed, Open};
        let list = [n("a"), n("b")];
        type Case<'a> = (
            Option<&'a [PluginName]>,
            &'a str,
            AllowlistFailure,
            Result<(), AllowlistRefusal>,
        );
        let cases: &[Case] = &[
            (Some(&[]), "x", Closed, Ok(())),
            (Some(&list), "a", Closed, Ok(())),
            (
                Some(&list),
                "x",
                Closed,
                Err(AllowlistRefusal::NotAllowed(n("x"))),
            ),
            (
                Some(&list),
                "x",
                Open,
                Err(AllowlistRefusal::NotAllowed(n("x"))),
            ),
            (None, "x", Closed, Err(AllowlistRefusal::Unavailable)),
            (None, "x", Open, Ok(())),
        ];
        for (entries, plugin, mode, expected) in cases {
            assert_eq!(
                &check_allowlist(*entries, &n(plugin), *mode),
                expected,
                "{plugin} {mode:?}"
            );
        }
        assert_eq!(
            AllowlistRefusal::NotAllowed(n("x")).to_string(),
            "plugin \"x\" is not in the org allowlist"
        );
    }

    #[test]
    fn a_download_must_resolve_to_the_requested_name() {
        assert_eq!(check_name_matches(&n("a"), &n("a")), Ok(()));
        let err = check_name_matches(&n("repo"), &n("wanted")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "source resolved to plugin \"repo\" but URL requested \"wanted\""
        );
    }

    #[test]
    fn allowlists_are_validated_deduplicated_and_sorted() {
        let sent = ["b", "a", "b"].map(String::from);
        let names = normalize_allowlist(&sent).unwrap();
        assert_eq!(names, [n("a"), n("b")]);
        let bad = ["a", "../etc", "b/c"].map(String::from);
        assert_eq!(normalize_allowlist(&bad), Err("../etc".to_owned()));
        assert_eq!(normalize_allowlist(&[]), Ok(vec![]));
    }
}
