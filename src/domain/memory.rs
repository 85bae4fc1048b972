//! Memory blocks: the always-on text an agent runtime appends to
//! `/configs/CLAUDE.md` when it installs a plugin, and how uninstall takes it
//! out again (SPEC §2 "Memory blocks", §10 item 1).
//!
//! The service never writes these blocks itself; the runtime's installer
//! does. This module models that writer exactly ([`memory_chunk`]) so that
//! uninstall can first try to remove the very bytes the runtime wrote, and
//! only then fall back to looser, marker-driven removal for blocks the user
//! edited or whose files are gone ([`strip_memory_blocks`]).
//!
//! Pure domain code: std only, no I/O. The caller reads the plugin's files
//! out of the container (using [`is_memory_source`] to pick them) and reads
//! and writes CLAUDE.md; this module only transforms text.

/// A markdown file of a plugin, as read from the installed plugin directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginText {
    /// Path relative to the plugin root, with `/` separators, e.g. "rules/style.md" or "CLAUDE.md".
    pub path: String,
    /// The file's text, exactly as read.
    pub content: String,
}

/// Start of every marker line, whichever plugin wrote it.
const MARKER_START: &str = "# Plugin: ";

/// Root markdown files the runtime never turns into memory: they describe
/// the plugin's repository, not the agent's behaviour.
const SKIPPED_ROOT_STEMS: [&str; 4] = ["README", "CHANGELOG", "LICENSE", "CONTRIBUTING"];

/// Which files of a plugin become memory blocks: returns true for
/// `rules/<file>.md` (exactly one level under rules/) and for `<file>.md` at
/// the plugin root other than README/CHANGELOG/LICENSE/CONTRIBUTING
/// (case-insensitive stem). Used by the caller to decide which files to read
/// out of a container.
///
/// The `.md` suffix is case-sensitive, like the runtime's `*.md` glob on
/// Linux. Paths must already be normalised (no `./`, no empty segments).
pub fn is_memory_source(path: &str) -> bool {
    classify(path).is_some()
}

/// The chunk the agent runtime appends to CLAUDE.md when it installs
/// `plugin` (SPEC §2): blocks for rules (sorted by file name) then root
/// fragments (sorted by file name), files empty after trimming skipped,
/// joined with "\n\n", ending with exactly one "\n". None when there is no
/// block. Input order of `files` does not matter; files that are not memory
/// sources are ignored.
///
/// `plugin` is the plugin's directory name, which is what the runtime puts
/// in its markers (not the `name:` of `plugin.yaml`).
pub fn memory_chunk(plugin: &str, files: &[PluginText]) -> Option<String> {
    let mut sources: Vec<Source<'_>> = sources(files)
        .filter(|source| !source.body.is_empty())
        .collect();
    if sources.is_empty() {
        return None;
    }
    // Sorting on the whole tuple (not just the name) keeps the result
    // independent of input order even if a caller passes a path twice.
    sources.sort_unstable_by(|a, b| (a.kind, a.name, a.body).cmp(&(b.kind, b.name, b.body)));
    let blocks: Vec<String> = sources
        .iter()
        .map(|source| format!("{}\n\n{}", source.marker(plugin), source.body))
        .collect();
    let mut chunk = blocks.join("\n\n");
    chunk.push('\n');
    Some(chunk)
}

/// Removes `plugin`'s memory blocks from the text of CLAUDE.md, in the three
/// steps of SPEC §2: the exact chunk at a line start (first occurrence); then
/// per block, for blocks whose file still exists in `files`; then the
/// fallback for every remaining block whose first line starts with
/// "# Plugin: <plugin> /". Everything else is kept byte for byte; no newline
/// is added.
///
/// `files` are the plugin's installed files, read before they are deleted;
/// pass an empty slice when they are gone (only the fallback applies then).
pub fn strip_memory_blocks(claude_md: &str, plugin: &str, files: &[PluginText]) -> String {
    let text = strip_exact_chunk(claude_md, plugin, files);
    let text = strip_unedited_blocks(&text, plugin, files);
    strip_remaining_blocks(&text, plugin)
}

/// The two kinds of memory block, in the order the runtime writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum BlockKind {
    Rule,
    Fragment,
}

impl BlockKind {
    fn label(self) -> &'static str {
        match self {
            Self::Rule => "rule",
            Self::Fragment => "fragment",
        }
    }
}

/// One memory source file: its kind, its file name (what the marker shows)
/// and its content trimmed the way the runtime trims it.
#[derive(Debug, Clone, Copy)]
struct Source<'a> {
    kind: BlockKind,
    name: &'a str,
    body: &'a str,
}

impl Source<'_> {
    fn marker(&self, plugin: &str) -> String {
        format!(
            "{MARKER_START}{plugin} / {}: {}",
            self.kind.label(),
            self.name
        )
    }
}

/// The memory sources among `files`, including those empty after trimming
/// (the writer skips them, but a block may still name them after an edit).
fn sources(files: &[PluginText]) -> impl Iterator<Item = Source<'_>> {
    files.iter().filter_map(|file| {
        classify(&file.path).map(|(kind, name)| Source {
            kind,
            name,
            body: trim_like_python(&file.content),
        })
    })
}

/// Kind and file name of a memory source path, `None` for any other file.
fn classify(path: &str) -> Option<(BlockKind, &str)> {
    let mut segments = path.split('/');
    let first = segments.next()?;
    let second = segments.next();
    if segments.next().is_some() {
        return None;
    }
    match second {
        Some(name) if first == "rules" && name.ends_with(".md") => Some((BlockKind::Rule, name)),
        Some(_) => None,
        None => {
            let stem = first.strip_suffix(".md")?;
            let skipped = SKIPPED_ROOT_STEMS
                .iter()
                .any(|skip| stem.eq_ignore_ascii_case(skip));
            (!skipped).then_some((BlockKind::Fragment, first))
        }
    }
}

/// The runtime is Python and trims with `str.strip()`, whose whitespace is
/// Rust's `White_Space` plus the ASCII separators U+001C..U+001F; using the
/// same set keeps re-derived chunks byte-identical to what it wrote.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn trim_like_python(text: &str) -> &str {
    text.trim_matches(is_python_space)
}

/// A blank line is empty or whitespace only (so `\r` of a CRLF line counts).
fn is_blank(line: &str) -> bool {
    line.chars().all(is_python_space)
}

/// Byte index just past the line starting at `start` (past its `\n`, or the
/// end of the text for a last line without one).
fn next_line_start(text: &str, start: usize) -> usize {
    text[start..]
        .find('\n')
        .map_or(text.len(), |offset| start + offset + 1)
}

/// Step 1: the runtime wrote the chunk in one piece, so when the files are
/// unchanged and nobody edited the chunk, removing exactly those bytes
/// restores the file as it was before install.
fn strip_exact_chunk(text: &str, plugin: &str, files: &[PluginText]) -> String {
    let Some(chunk) = memory_chunk(plugin, files) else {
        return text.to_owned();
    };
    let mut from = 0;
    while let Some(offset) = text[from..].find(&chunk) {
        let at = from + offset;
        // A chunk the user quoted mid-line is not the one the runtime wrote.
        if at == 0 || text.as_bytes()[at - 1] == b'\n' {
            let mut stripped = String::with_capacity(text.len() - chunk.len());
            stripped.push_str(&text[..at]);
            stripped.push_str(&text[at + chunk.len()..]);
            return stripped;
        }
        // The chunk starts with the ASCII `#`, so `at + 1` is a char
        // boundary; stepping by one also finds overlapping occurrences.
        from = at + 1;
    }
    text.to_owned()
}

/// Step 2: blocks whose own text is intact are removed exactly, even when
/// the text around them was edited (so step 1 could not match).
fn strip_unedited_blocks(text: &str, plugin: &str, files: &[PluginText]) -> String {
    let sources: Vec<Source<'_>> = sources(files).collect();
    if sources.is_empty() {
        return text.to_owned();
    }
    let mut kept = String::with_capacity(text.len());
    let mut pos = 0;
    while pos < text.len() {
        if let Some(end) = unedited_block_end(text, pos, plugin, &sources) {
            pos = end;
            continue;
        }
        let next = next_line_start(text, pos);
        kept.push_str(&text[pos..next]);
        pos = next;
    }
    kept
}

/// If an unedited block of `plugin` starts at the line start `pos`, the
/// index where its removal ends (SPEC §2 step 2).
fn unedited_block_end(
    text: &str,
    pos: usize,
    plugin: &str,
    sources: &[Source<'_>],
) -> Option<usize> {
    let line_end = text[pos..].find('\n').map(|offset| pos + offset)?;
    let marker = &text[pos..line_end];
    let after_marker = line_end + 1;
    sources
        .iter()
        .filter(|source| source.marker(plugin) == marker)
        .find_map(|source| {
            let body_end = after_marker + 1 + source.body.len();
            let rest = text[after_marker..]
                .strip_prefix('\n')?
                .strip_prefix(source.body)?;
            if rest.starts_with("\n\n") {
                // Also drop the blank line that separated it from what follows.
                Some(body_end + 2)
            } else if rest == "\n" || rest.starts_with("\n# Plugin: ") {
                Some(body_end + 1)
            } else if rest.is_empty() {
                Some(body_end)
            } else {
                None
            }
        })
}

/// Step 3: edited blocks and blocks whose files are gone can only be found
/// by their marker; the extent is a heuristic (up to the second blank line)
/// that never eats into another plugin's block.
fn strip_remaining_blocks(text: &str, plugin: &str) -> String {
    let own_marker = format!("{MARKER_START}{plugin} /");
    let mut kept = String::with_capacity(text.len());
    // Blank lines seen since the last marker of `plugin`, while inside one
    // of its blocks.
    let mut blanks_in_block: Option<u8> = None;
    let mut pos = 0;
    while pos < text.len() {
        let next = next_line_start(text, pos);
        let line = &text[pos..next];
        let body = line.strip_suffix('\n').unwrap_or(line);
        if body.starts_with(&own_marker) {
            // A marker of the same plugin starts a new block, even inside one.
            blanks_in_block = Some(0);
        } else if let Some(blanks) = blanks_in_block {
            if body.starts_with(MARKER_START) {
                blanks_in_block = None;
                kept.push_str(line);
            } else if is_blank(body) {
                blanks_in_block = (blanks == 0).then_some(1);
            }
        } else {
            kept.push_str(line);
        }
        pos = next;
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/memory-blocks");
    const SUPERPOWERS: &str = "molecule-ai-plugin-superpowers";
    const CAREFUL_BASH: &str = "molecule-ai-plugin-molecule-careful-bash";
    /// The user text the fixture's CLAUDE.md started as (fixture README).
    const FIXTURE_USER_TEXT: &str = "# Team notes\n\nKeep answers short.\n";

    fn fixture(name: &str) -> String {
        let path = format!("{FIXTURES}/{name}");
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {path}: {err}"))
    }

    /// Every file of a fixture plugin, as the caller would pass it (including
    /// files that are not memory sources, which must be ignored).
    fn fixture_plugin(name: &str) -> Vec<PluginText> {
        fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<PluginText>) {
            let entries =
                std::fs::read_dir(dir).unwrap_or_else(|err| panic!("read {dir:?}: {err}"));
            for entry in entries {
                let path = entry.expect("directory entry").path();
                if path.is_dir() {
                    walk(root, &path, out);
                } else {
                    let relative = path.strip_prefix(root).expect("inside root");
                    let segments: Vec<String> = relative
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect();
                    out.push(PluginText {
                        path: segments.join("/"),
                        content: std::fs::read_to_string(&path).expect("utf-8 fixture"),
                    });
                }
            }
        }
        let root = std::path::PathBuf::from(format!("{FIXTURES}/plugins/{name}"));
        let mut files = Vec::new();
        walk(&root, &root, &mut files);
        assert!(!files.is_empty(), "fixture plugin {name} has no files");
        files
    }

    fn text(path: &str, content: &str) -> PluginText {
        PluginText {
            path: path.to_owned(),
            content: content.to_owned(),
        }
    }

    /// The runtime's writer (SPEC §2): nothing when the first marker line is
    /// already there, else a newline if the file lacks a final one, then the
    /// chunk.
    fn append_like_runtime(existing: &str, chunk: &str) -> String {
        let first_marker = chunk.lines().next().expect("chunk has a marker line");
        if existing.contains(first_marker) {
            return existing.to_owned();
        }
        let mut written = existing.to_owned();
        if !written.is_empty() && !written.ends_with('\n') {
            written.push('\n');
        }
        written.push_str(chunk);
        written
    }

    /// Two multi-paragraph rules: the inner blank line makes the fallback
    /// (which stops at the second blank line) distinguishable from an exact
    /// per-block removal.
    fn plugin_p() -> Vec<PluginText> {
        vec![
            text("rules/a.md", "A one\n\nA two\n"),
            text("rules/b.md", "\n  B one\n\nB two  \n\n"),
        ]
    }

    const BLOCK_A: &str = "# Plugin: p / rule: a.md\n\nA one\n\nA two";
    const BLOCK_B: &str = "# Plugin: p / rule: b.md\n\nB one\n\nB two";
    const Q_CHUNK: &str = "# Plugin: q / rule: x.md\n\nX one\n\nX two\n";

    #[test]
    fn memory_sources_are_rules_one_level_deep_and_root_markdown_except_repo_docs() {
        let cases = [
            ("rules/style.md", true),
            ("rules/README.md", true),
            ("rules/.hidden.md", true),
            ("CLAUDE.md", true),
            ("known-issues.md", true),
            ("README.md", false),
            ("readme.md", false),
            ("ReadMe.md", false),
            ("CHANGELOG.md", false),
            ("License.md", false),
            ("contributing.md", false),
            ("README-extra.md", true),
            ("rules/nested/deep.md", false),
            ("rules/style.txt", false),
            ("rules/style.MD", false),
            ("rules", false),
            ("rules/", false),
            ("docs/guide.md", false),
            ("skills/debug/SKILL.md", false),
            ("plugin.yaml", false),
            ("CLAUDE.MD", false),
            ("notes.md.bak", false),
            ("", false),
        ];
        for (path, expected) in cases {
            assert_eq!(is_memory_source(path), expected, "path {path:?}");
        }
    }

    #[test]
    fn fixture_chunk_is_exactly_what_the_runtime_wrote() {
        let before = fixture("CLAUDE.before.md");
        for plugin in [SUPERPOWERS, CAREFUL_BASH] {
            let chunk =
                memory_chunk(plugin, &fixture_plugin(plugin)).expect("fixture plugin has blocks");
            assert!(chunk.starts_with(&format!("# Plugin: {plugin} / fragment: CLAUDE.md\n\n")));
            assert!(
                before.contains(&format!("\n{chunk}")),
                "chunk of {plugin} not found verbatim at a line start in CLAUDE.before.md"
            );
        }
        // The runtime appended the two chunks one after the other, in install order.
        let superpowers = memory_chunk(SUPERPOWERS, &fixture_plugin(SUPERPOWERS)).expect("blocks");
        let careful = memory_chunk(CAREFUL_BASH, &fixture_plugin(CAREFUL_BASH)).expect("blocks");
        assert_eq!(before, format!("{FIXTURE_USER_TEXT}{superpowers}{careful}"));
    }

    #[test]
    fn fixture_uninstall_of_the_first_plugin_round_trips_byte_for_byte() {
        let before = fixture("CLAUDE.before.md");
        let expected = fixture("CLAUDE.after-uninstall-molecule-ai-plugin-superpowers.md");
        let stripped = strip_memory_blocks(&before, SUPERPOWERS, &fixture_plugin(SUPERPOWERS));
        assert_eq!(stripped, expected);
    }

    #[test]
    fn fixture_uninstall_of_both_plugins_leaves_only_the_user_text() {
        let after_first = fixture("CLAUDE.after-uninstall-molecule-ai-plugin-superpowers.md");
        let stripped =
            strip_memory_blocks(&after_first, CAREFUL_BASH, &fixture_plugin(CAREFUL_BASH));
        assert_eq!(stripped, FIXTURE_USER_TEXT);
    }

    #[test]
    fn fixture_uninstall_of_the_second_plugin_first_keeps_the_first_plugins_chunk() {
        let before = fixture("CLAUDE.before.md");
        let superpowers = memory_chunk(SUPERPOWERS, &fixture_plugin(SUPERPOWERS)).expect("blocks");
        let stripped = strip_memory_blocks(&before, CAREFUL_BASH, &fixture_plugin(CAREFUL_BASH));
        assert_eq!(stripped, format!("{FIXTURE_USER_TEXT}{superpowers}"));
        let stripped = strip_memory_blocks(&stripped, SUPERPOWERS, &fixture_plugin(SUPERPOWERS));
        assert_eq!(stripped, FIXTURE_USER_TEXT);
    }

    #[test]
    fn fixture_uninstall_with_files_gone_falls_back_to_markers() {
        // Without the files only the fallback runs: each block goes up to its
        // second blank line (its heading here), so this pins the heuristic on
        // real content, lossy as it is.
        let before = fixture("CLAUDE.before.md");
        let cut = [
            "# Plugin: molecule-ai-plugin-superpowers / fragment: CLAUDE.md\n\n# superpowers \u{2014} Agent Capability Extensions\n\n",
            "# Plugin: molecule-ai-plugin-superpowers / fragment: known-issues.md\n\n# Known Issues \u{2014} superpowers\n\n",
        ];
        let mut expected = before.clone();
        for piece in cut {
            assert_eq!(
                before.matches(piece).count(),
                1,
                "fixture holds {piece:?} once"
            );
            expected = expected.replacen(piece, "", 1);
        }
        assert_eq!(strip_memory_blocks(&before, SUPERPOWERS, &[]), expected);
    }

    #[test]
    fn chunk_lists_rules_then_fragments_each_sorted_by_file_name() {
        let files = [
            text("zeta.md", "Z"),
            text("rules/b.md", "B"),
            text("README.md", "readme is skipped"),
            text("Alpha.md", "  Alpha  \n"),
            text("rules/a.md", "\n\nA\n"),
            text("plugin.yaml", "name: p"),
            text("rules/nested/c.md", "nested is skipped"),
        ];
        let expected = "# Plugin: p / rule: a.md\n\nA\n\n\
                        # Plugin: p / rule: b.md\n\nB\n\n\
                        # Plugin: p / fragment: Alpha.md\n\nAlpha\n\n\
                        # Plugin: p / fragment: zeta.md\n\nZ\n";
        assert_eq!(memory_chunk("p", &files).as_deref(), Some(expected));
        let mut reversed = files.to_vec();
        reversed.reverse();
        assert_eq!(memory_chunk("p", &reversed).as_deref(), Some(expected));
    }

    #[test]
    fn chunk_skips_files_empty_after_trimming_and_is_none_without_blocks() {
        let cases: [(&[PluginText], Option<&str>); 5] = [
            (&[], None),
            (
                &[
                    text("README.md", "only docs"),
                    text("plugin.yaml", "name: p"),
                ],
                None,
            ),
            (
                &[text("rules/empty.md", " \n\t\n"), text("blank.md", "")],
                None,
            ),
            (
                &[text("rules/empty.md", "\n\n"), text("keep.md", "kept")],
                Some("# Plugin: p / fragment: keep.md\n\nkept\n"),
            ),
            (
                &[text("rules/r.md", "rule"), text("empty.md", "\r\n")],
                Some("# Plugin: p / rule: r.md\n\nrule\n"),
            ),
        ];
        for (files, expected) in cases {
            assert_eq!(
                memory_chunk("p", files).as_deref(),
                expected,
                "files {files:?}"
            );
        }
    }

    #[test]
    fn chunk_trims_content_like_python_str_strip() {
        let files = [text("rules/r.md", "\u{1f}\u{a0} body \u{2003}\u{1c}\n")];
        assert_eq!(
            memory_chunk("p", &files).as_deref(),
            Some("# Plugin: p / rule: r.md\n\nbody\n")
        );
    }

    #[test]
    fn exact_chunk_is_removed_only_at_a_line_start_and_only_once() {
        let files = [text("rules/r.md", "R")];
        let chunk = "# Plugin: p / rule: r.md\n\nR\n";
        let cases = [
            // Quoted mid-line: not a line start, and the marker line of the
            // quote does not start a line either, so nothing is removed.
            (format!("see {chunk}"), format!("see {chunk}")),
            (format!("user\n{chunk}"), "user\n".to_owned()),
            (chunk.to_owned(), String::new()),
            // Step 1 removes the first; the per-block step then takes the
            // second, which is an exact copy too.
            (format!("{chunk}{chunk}"), String::new()),
            (
                format!("see {chunk}tail\n{chunk}"),
                format!("see {chunk}tail\n"),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                strip_memory_blocks(&input, "p", &files),
                expected,
                "input {input:?}"
            );
        }
    }

    #[test]
    fn block_whose_neighbours_were_edited_is_removed_while_other_blocks_survive() {
        let input = format!(
            "user\n{BLOCK_A}\n\nuser note between blocks\n\n{BLOCK_B}\n{Q_CHUNK}user after\n"
        );
        let expected = format!("user\nuser note between blocks\n\n{Q_CHUNK}user after\n");
        assert_eq!(strip_memory_blocks(&input, "p", &plugin_p()), expected);
    }

    #[test]
    fn per_block_removal_covers_each_follow_up_of_the_block() {
        // The chunk of `plugin_p()` holds both blocks; each input holds only
        // block A, so step 1 cannot match and step 2 must remove it whole.
        let cases = [
            (
                "blank line then text",
                format!("user\n{BLOCK_A}\n\nafter\n"),
                "user\nafter\n".to_owned(),
            ),
            (
                "newline then end of file",
                format!("user\n{BLOCK_A}\n"),
                "user\n".to_owned(),
            ),
            (
                "newline then another plugin's marker",
                format!("user\n{BLOCK_A}\n{Q_CHUNK}"),
                format!("user\n{Q_CHUNK}"),
            ),
            (
                "end of file",
                format!("user\n{BLOCK_A}"),
                "user\n".to_owned(),
            ),
            (
                "blank line then more blank lines",
                format!("user\n{BLOCK_A}\n\n\n\nafter\n"),
                "user\n\n\nafter\n".to_owned(),
            ),
            // Not a follow-up of step 2: text appended to the block means it
            // was edited, so the fallback cuts at the second blank line.
            (
                "newline then appended text is left to the fallback",
                format!("user\n{BLOCK_A}\nappended\n"),
                "user\nA two\nappended\n".to_owned(),
            ),
        ];
        for (case, input, expected) in cases {
            assert_eq!(
                strip_memory_blocks(&input, "p", &plugin_p()),
                expected,
                "case {case}"
            );
        }
    }

    #[test]
    fn fallback_removes_edited_or_orphaned_blocks_up_to_the_second_blank_line() {
        let cases = [
            (
                "edited block",
                "user\n# Plugin: p / rule: a.md\n\nedited\n\nkept\n".to_owned(),
                "user\nkept\n".to_owned(),
            ),
            (
                "edited multi-paragraph block keeps what follows the second blank line",
                "user\n# Plugin: p / rule: a.md\n\nA one edited\n\nA two\n".to_owned(),
                "user\nA two\n".to_owned(),
            ),
            (
                "file gone",
                "user\n# Plugin: p / fragment: gone.md\n\ngone\n\nkept\n".to_owned(),
                "user\nkept\n".to_owned(),
            ),
            (
                "stops early at another plugin's marker and keeps it",
                format!("user\n# Plugin: p / rule: a.md\n\nedited\n{Q_CHUNK}"),
                format!("user\n{Q_CHUNK}"),
            ),
            (
                "whitespace-only lines are blank",
                "user\n# Plugin: p / rule: a.md\n  \nedited\n\t\r\nkept\n".to_owned(),
                "user\nkept\n".to_owned(),
            ),
            (
                "a new marker of the same plugin starts a new block",
                "user\n# Plugin: p / rule: a.md\n\nedited a\n# Plugin: p / rule: b.md\n\nedited b\n\nkept\n"
                    .to_owned(),
                "user\nkept\n".to_owned(),
            ),
            (
                "marker at end of file without newline",
                "user\n# Plugin: p / fragment: gone.md".to_owned(),
                "user\n".to_owned(),
            ),
            (
                "crlf block",
                "user\r\n# Plugin: p / rule: a.md\r\n\r\nedited\r\n\r\nkept\r\n".to_owned(),
                "user\r\nkept\r\n".to_owned(),
            ),
        ];
        for (case, input, expected) in cases {
            assert_eq!(
                strip_memory_blocks(&input, "p", &plugin_p()),
                expected,
                "case {case}"
            );
        }
    }

    #[test]
    fn other_plugins_and_user_text_are_kept_byte_for_byte() {
        let p_chunk = memory_chunk("p", &plugin_p()).expect("blocks");
        let cases = [
            (
                "no blocks of the plugin",
                format!("user\n{Q_CHUNK}"),
                format!("user\n{Q_CHUNK}"),
            ),
            ("empty file", String::new(), String::new()),
            (
                "only user text",
                "just notes".to_owned(),
                "just notes".to_owned(),
            ),
            (
                "between other plugins",
                format!("top\n{Q_CHUNK}{p_chunk}# Plugin: r / fragment: y.md\n\nY\n"),
                format!("top\n{Q_CHUNK}# Plugin: r / fragment: y.md\n\nY\n"),
            ),
            (
                "crlf user text",
                format!("line one\r\nline two\r\n{p_chunk}line three\r\n"),
                "line one\r\nline two\r\nline three\r\n".to_owned(),
            ),
            (
                "user text without final newline after the block",
                format!("{p_chunk}\ntrailing note"),
                "\ntrailing note".to_owned(),
            ),
            (
                "marker text that does not start a line",
                "quote: # Plugin: p / rule: a.md\n\nstays\n".to_owned(),
                "quote: # Plugin: p / rule: a.md\n\nstays\n".to_owned(),
            ),
        ];
        for (case, input, expected) in cases {
            assert_eq!(
                strip_memory_blocks(&input, "p", &plugin_p()),
                expected,
                "case {case}"
            );
        }
    }

    #[test]
    fn plugin_whose_name_prefixes_another_does_not_touch_its_blocks() {
        let same_files = [text("rules/r.md", "R")];
        let foo_bar = memory_chunk("foo-bar", &same_files).expect("blocks");
        let foo = memory_chunk("foo", &same_files).expect("blocks");
        let cases = [
            (format!("user\n{foo_bar}"), format!("user\n{foo_bar}")),
            (format!("user\n{foo}{foo_bar}"), format!("user\n{foo_bar}")),
            (format!("user\n{foo_bar}{foo}"), format!("user\n{foo_bar}")),
        ];
        for (input, expected) in cases {
            assert_eq!(
                strip_memory_blocks(&input, "foo", &same_files),
                expected,
                "input {input:?}"
            );
            // The fallback alone must respect the boundary as well.
            assert_eq!(
                strip_memory_blocks(&input, "foo", &[]),
                expected,
                "fallback, input {input:?}"
            );
        }
    }

    #[test]
    fn stripping_twice_equals_stripping_once() {
        let p_chunk = memory_chunk("p", &plugin_p()).expect("blocks");
        let inputs = [
            fixture("CLAUDE.before.md"),
            format!("user\n{p_chunk}{p_chunk}"),
            format!("user\n{BLOCK_A}\n\nnote\n\n{BLOCK_B}\n{Q_CHUNK}"),
            "user\n# Plugin: p / rule: a.md\n\nA one edited\n\nA two\n\n\nrest\n".to_owned(),
            "# Plugin: p / rule: a.md\n# Plugin: p / rule: a.md\n\n\n\n\n".to_owned(),
            format!("x\r\n# Plugin: p / rule: b.md\r\n\r\nB\r\n{p_chunk}"),
        ];
        for input in inputs {
            for (plugin, files) in [
                ("p", plugin_p()),
                ("p", Vec::new()),
                (SUPERPOWERS, fixture_plugin(SUPERPOWERS)),
            ] {
                let once = strip_memory_blocks(&input, plugin, &files);
                let twice = strip_memory_blocks(&once, plugin, &files);
                assert_eq!(twice, once, "plugin {plugin}, input {input:?}");
            }
        }
    }

    /// User texts built from lines that a user could plausibly write,
    /// including other plugins' markers, CRLF, blank and whitespace lines,
    /// with and without a final newline. None starts a line with p's marker:
    /// such a line would be (by design) taken for one of p's blocks.
    fn generated_user_texts() -> Vec<String> {
        let lines = [
            "",
            "# Notes",
            "  ",
            "text\r",
            "# Plugin: q / rule: x.md",
            "see # Plugin: p / rule: b.md",
        ];
        let mut level: Vec<Vec<&str>> = vec![Vec::new()];
        let mut bodies = level.clone();
        for _ in 0..3 {
            level = level
                .iter()
                .flat_map(|body| {
                    lines.iter().map(move |line| {
                        let mut longer = body.clone();
                        longer.push(*line);
                        longer
                    })
                })
                .collect();
            bodies.extend(level.iter().cloned());
        }
        let mut texts = Vec::new();
        for body in &bodies {
            let joined = body.join("\n");
            texts.push(format!("{joined}\n"));
            texts.push(joined);
        }
        texts.sort();
        texts.dedup();
        texts
    }

    #[test]
    fn stripping_what_the_runtime_appended_restores_the_user_text() {
        let files = plugin_p();
        let chunk = memory_chunk("p", &files).expect("blocks");
        // A file added to the plugin after install changes the re-derived
        // chunk, so step 1 misses and the per-block step must do the work.
        let mut updated = files.clone();
        updated.push(text("added-later.md", "new"));
        let texts = generated_user_texts();
        assert!(texts.len() > 400, "generated {} texts", texts.len());
        for user in &texts {
            let written = append_like_runtime(user, &chunk);
            assert_ne!(written, *user, "the writer appended to {user:?}");
            // The writer's own newline stays: uninstall never guesses whether
            // the user's file had one.
            let expected = if user.is_empty() || user.ends_with('\n') {
                user.clone()
            } else {
                format!("{user}\n")
            };
            assert_eq!(
                strip_memory_blocks(&written, "p", &files),
                expected,
                "user {user:?}"
            );
            assert_eq!(
                strip_memory_blocks(&written, "p", &updated),
                expected,
                "per block, user {user:?}"
            );
            // Text the user appended after the chunk survives too.
            let appended = format!("{written}{user}");
            assert_eq!(
                strip_memory_blocks(&appended, "p", &files),
                format!("{expected}{user}"),
                "appended, user {user:?}"
            );
        }
    }
}
