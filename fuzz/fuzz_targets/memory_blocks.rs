//! Memory-block stripping (SPEC §2) on arbitrary CLAUDE.md text and plugin
//! files. The input is NUL-separated: the plugin's name, CLAUDE.md, then
//! path and content pairs (so seeds are readable files).
//!
//! Properties: never a panic; stripping deletes whole lines only, leaves
//! no line starting with the plugin's marker and is idempotent; other
//! plugins' marker lines survive (when the plugin's files quote none);
//! and strip(writer(original)) == original (plus the newline the writer
//! adds to a file that lacks one) for any original without a line starting
//! with the plugin's marker.
#![no_main]

use libfuzzer_sys::fuzz_target;
use workspace_plugins::domain::memory::{PluginText, append_memory_chunk, strip_memory_blocks};
use workspace_plugins::domain::name::PluginName;

const MARKER_START: &str = "# Plugin: ";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut fields = text.split('\0');
    let plugin = fields.next().unwrap_or_default();
    let claude_md = fields.next().unwrap_or_default();
    let mut files = Vec::new();
    while let (Some(path), Some(content)) = (fields.next(), fields.next()) {
        files.push(PluginText {
            path: path.to_owned(),
            content: content.to_owned(),
        });
    }

    let stripped = strip_memory_blocks(claude_md, plugin, &files);
    // The properties speak of marker lines, which only a real plugin name
    // (no newline, no control character) can form.
    if PluginName::parse(plugin).is_err() {
        return;
    }
    let own_marker = format!("{MARKER_START}{plugin} /");
    let is_own = |line: &str| line.starts_with(&own_marker);

    assert!(
        is_line_subsequence(&stripped, claude_md),
        "stripping did more than delete whole lines"
    );
    assert!(
        !stripped.split('\n').any(is_own),
        "a marker line of the plugin survived"
    );
    assert_eq!(
        strip_memory_blocks(&stripped, plugin, &files),
        stripped,
        "not idempotent"
    );
    if !files.iter().any(|file| file.content.contains(MARKER_START)) {
        let others = |text: &str| {
            text.split('\n')
                .filter(|line| line.starts_with(MARKER_START) && !is_own(line))
                .count()
        };
        assert_eq!(
            others(&stripped),
            others(claude_md),
            "another plugin's marker line was removed"
        );
    }

    if !claude_md.split('\n').any(is_own) {
        let written = append_memory_chunk(claude_md, plugin, &files);
        let expected = if written == claude_md || claude_md.is_empty() || claude_md.ends_with('\n')
        {
            claude_md.to_owned()
        } else {
            format!("{claude_md}\n")
        };
        assert_eq!(
            strip_memory_blocks(&written, plugin, &files),
            expected,
            "strip(writer(original)) is not the original"
        );
    }
});

/// Whether `kept` is `text` with some whole lines (each with its `\n`)
/// deleted.
fn is_line_subsequence(kept: &str, text: &str) -> bool {
    let mut lines = text.split_inclusive('\n');
    kept.split_inclusive('\n')
        .all(|line| lines.any(|candidate| candidate == line))
}
