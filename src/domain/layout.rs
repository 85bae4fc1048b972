//! The in-container layout (SPEC §1, §5 "In-container layout"): where the
//! agent's configuration lives, who owns it, and which entries of
//! `/configs/plugins` are plugins. How an adapter acts on it (and keeps
//! the untrusted agent from turning its actions, SPEC §6) is the adapter's
//! business.

use crate::domain::name::PluginName;

/// The agent's configuration root; everything the service does in a
/// container stays under it.
pub const CONFIGS_DIR: &str = "/configs";
pub const PLUGINS_DIR: &str = "/configs/plugins";
pub const SKILLS_DIR: &str = "/configs/skills";
pub const CLAUDE_MD: &str = "/configs/CLAUDE.md";

/// The uid:gid the agent runs as; installed files belong to it, and every
/// action under `/configs` runs with its privileges (SPEC §1, §6).
pub const AGENT_UID: u64 = 1000;
pub const AGENT_GID: u64 = 1000;

/// An entry of `/configs/plugins` that is a plugin: names starting with
/// `.` never are (delivery leftovers `.<name>.staging-…`, `.<name>.old-…`),
/// nor invalid names.
pub fn plugin_entry(entry: &str) -> Option<PluginName> {
    if entry.starts_with('.') {
        return None;
    }
    PluginName::parse(entry).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_entries_and_invalid_names_are_never_plugins() {
        for entry in [
            ".demo.staging-1",
            ".demo.old-2",
            "",
            "bad\\name",
            "a\nb",
            "..",
        ] {
            assert_eq!(plugin_entry(entry), None, "{entry:?}");
        }
        assert_eq!(plugin_entry("alpha").unwrap().as_str(), "alpha");
        assert_eq!(plugin_entry("Repo.Name").unwrap().as_str(), "Repo.Name");
    }
}
