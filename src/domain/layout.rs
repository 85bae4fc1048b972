//! The in-container layout (SPEC §1, §5 "In-container layout") and the
//! argument vectors that act on it. Paths are built only from validated
//! names; scripts are constants that take their paths as positional
//! arguments, so no shell command is ever built from input.

use crate::domain::name::PluginName;

pub const PLUGINS_DIR: &str = "/configs/plugins";
pub const SKILLS_DIR: &str = "/configs/skills";
pub const CLAUDE_MD: &str = "/configs/CLAUDE.md";

/// `/configs/plugins/<name>`.
pub fn plugin_dir(name: &PluginName) -> String {
    format!("{PLUGINS_DIR}/{name}")
}

/// A file of an installed plugin; `rel` comes from the plugin's own
/// listing and is checked by the caller.
pub fn plugin_file(name: &PluginName, rel: &str) -> String {
    format!("{PLUGINS_DIR}/{name}/{rel}")
}

/// `/configs/skills/<skill>`: only for skill names that are valid names.
pub fn skill_dir(skill: &PluginName) -> String {
    format!("{SKILLS_DIR}/{skill}")
}

/// Where a delivery is written before it is renamed into place.
pub fn staging_dir(name: &PluginName, nonce: &str) -> String {
    format!("{PLUGINS_DIR}/.{name}.staging-{nonce}")
}

/// Where the previous version waits while the new one is renamed in.
pub fn old_dir(name: &PluginName, nonce: &str) -> String {
    format!("{PLUGINS_DIR}/.{name}.old-{nonce}")
}

/// An entry of `/configs/plugins` that is a plugin: names starting with
/// `.` never are (staging and old leftovers), nor invalid names.
pub fn plugin_entry(entry: &str) -> Option<PluginName> {
    if entry.starts_with('.') {
        return None;
    }
    PluginName::parse(entry).ok()
}

fn argv(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Swaps the staged directory into place: old version aside, new one in,
/// old one removed; if the new one cannot be moved in, the old one is put
/// back. A reader sees the old version, briefly nothing, or the new one.
const SWAP_SCRIPT: &str = r#"set -u
new="$1"; dst="$2"; old="$3"
if [ -e "$dst" ]; then mv -- "$dst" "$old" || exit 1; fi
if ! mv -- "$new" "$dst"; then
  if [ -e "$old" ]; then mv -- "$old" "$dst"; fi
  exit 1
fi
rm -rf -- "$old"
"#;

pub fn swap_argv(name: &PluginName, nonce: &str) -> Vec<String> {
    let mut v = argv(&["sh", "-c", SWAP_SCRIPT, "sh"]);
    v.extend([
        staging_dir(name, nonce),
        plugin_dir(name),
        old_dir(name, nonce),
    ]);
    v
}

/// Removes `.…staging-…` and `.…old-…` leftovers of interrupted deliveries.
const CLEANUP_SCRIPT: &str = r#"for d in "$1"/.*.staging-* "$1"/.*.old-*; do
  if [ -e "$d" ]; then rm -rf -- "$d" || exit 1; fi
done
"#;

pub fn cleanup_leftovers_argv() -> Vec<String> {
    argv(&["sh", "-c", CLEANUP_SCRIPT, "sh", PLUGINS_DIR])
}

/// Lists the directories directly under `/configs/plugins`, one per line
/// (creating the directory first, so a fresh container lists nothing).
const LIST_SCRIPT: &str = r#"mkdir -p -- "$1" && cd -- "$1" && for d in * .[!.]*; do
  if [ -d "$d" ] && [ ! -L "$d" ]; then printf '%s\n' "$d"; fi
done
"#;

pub fn list_plugins_argv() -> Vec<String> {
    argv(&["sh", "-c", LIST_SCRIPT, "sh", PLUGINS_DIR])
}

/// Parses the listing's output into plugin names, skipping non-plugins.
pub fn parse_plugin_listing(stdout: &[u8]) -> Vec<PluginName> {
    let mut names: Vec<PluginName> = String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(plugin_entry)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Makes sure `/configs/plugins` exists before a delivery writes into it.
pub fn ensure_plugins_dir_argv() -> Vec<String> {
    argv(&["mkdir", "-p", "--", PLUGINS_DIR])
}

/// Exit 0 when `path` is a directory.
pub fn is_dir_argv(path: &str) -> Vec<String> {
    argv(&["test", "-d", path])
}

/// The `.md` files a plugin may turn into memory blocks: at its root and
/// one level down (`rules/`), relative paths one per line.
const MARKDOWN_SCRIPT: &str = r#"cd -- "$1" || exit 1
for f in *.md rules/*.md; do
  if [ -f "$f" ] && [ ! -L "$f" ]; then printf '%s\n' "$f"; fi
done
"#;

pub fn list_markdown_argv(name: &PluginName) -> Vec<String> {
    argv(&["sh", "-c", MARKDOWN_SCRIPT, "sh"])
        .into_iter()
        .chain([plugin_dir(name)])
        .collect()
}

/// `rm -rf -- <paths>`.
pub fn remove_argv(paths: &[String]) -> Vec<String> {
    let mut v = argv(&["rm", "-rf", "--"]);
    v.extend(paths.iter().cloned());
    v
}

pub fn sync_argv() -> Vec<String> {
    argv(&["sync"])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> PluginName {
        PluginName::parse(s).unwrap()
    }

    #[test]
    fn paths_follow_the_in_container_layout() {
        assert_eq!(plugin_dir(&n("demo")), "/configs/plugins/demo");
        assert_eq!(
            plugin_file(&n("demo"), "rules/a.md"),
            "/configs/plugins/demo/rules/a.md"
        );
        assert_eq!(skill_dir(&n("review")), "/configs/skills/review");
        assert_eq!(
            staging_dir(&n("demo"), "ab12"),
            "/configs/plugins/.demo.staging-ab12"
        );
        assert_eq!(
            old_dir(&n("demo"), "ab12"),
            "/configs/plugins/.demo.old-ab12"
        );
    }

    #[test]
    fn dot_entries_and_invalid_names_are_never_plugins() {
        let listing = b"zeta\n.demo.staging-1\n.demo.old-2\nalpha\n\nbad\\name\nalpha\n";
        let names: Vec<String> = parse_plugin_listing(listing)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(names, ["alpha", "zeta"]);
    }

    #[test]
    fn scripts_are_constants_and_names_travel_as_arguments() {
        let hostile = n("x;rm -rf $HOME");
        let swap = swap_argv(&hostile, "n1");
        assert_eq!(swap[..2], ["sh", "-c"]);
        assert_eq!(swap[2], SWAP_SCRIPT, "the script never contains the name");
        assert!(!swap[2].contains("rm -rf $HOME"));
        assert_eq!(
            swap[4..],
            [
                "/configs/plugins/.x;rm -rf $HOME.staging-n1".to_owned(),
                "/configs/plugins/x;rm -rf $HOME".to_owned(),
                "/configs/plugins/.x;rm -rf $HOME.old-n1".to_owned(),
            ]
        );
        let md = list_markdown_argv(&hostile);
        assert_eq!(md[2], MARKDOWN_SCRIPT);
        assert_eq!(md.last().unwrap(), "/configs/plugins/x;rm -rf $HOME");
        assert_eq!(
            remove_argv(&["/a".into(), "-b".into()]),
            ["rm", "-rf", "--", "/a", "-b"]
        );
    }
}
