//! Memory blocks: the always-on text an agent runtime appends to
//! `/configs/CLAUDE.md` when it installs a plugin, and how uninstall takes it
//! out again (SPEC §2 "Memory blocks", §10 item 1).
//!
//! The service never writes these blocks itself; the runtime's installer
//! does. This module models that writer exactly ([`memory_chunk`],
//! [`append_memory_chunk`]) so that uninstall can first try to remove the
//! very bytes the runtime wrote, and only then fall back to looser,
//! marker-driven removal for blocks the user edited or whose files are gone
//! ([`strip_memory_blocks`]).
//!
//! CLAUDE.md and the plugin's files both come from the workspace container,
//! which the agent controls (SPEC §6): uninstall may face a 16 MiB CLAUDE.md
//! full of marker lines against thousands of rule files. So stripping costs
//! time linear in the size of CLAUDE.md plus the sources (up to sorting the
//! candidate marker lines), and memory linear in CLAUDE.md.
//!
//! Pure domain code: std only, no I/O. The caller reads the plugin's files
//! out of the container (using [`is_memory_source`] to pick them) and reads
//! and writes CLAUDE.md; this module only transforms text.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, RandomState};
use std::ops::Range;

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

/// CLAUDE.md as the agent runtime leaves it after installing `plugin` over
/// `existing` (SPEC §2): unchanged when the plugin has no block or when the
/// chunk's first marker line is already in the file; otherwise a newline if
/// a non-empty file lacks a final one, then [`memory_chunk`].
///
/// The service never calls this on a container; it is the model that the
/// uninstall steps are tested (and fuzzed) against.
pub fn append_memory_chunk(existing: &str, plugin: &str, files: &[PluginText]) -> String {
    let Some(chunk) = memory_chunk(plugin, files) else {
        return existing.to_owned();
    };
    let first_marker = chunk.find('\n').map_or(chunk.as_str(), |end| &chunk[..end]);
    if existing.contains(first_marker) {
        return existing.to_owned();
    }
    let mut written = String::with_capacity(existing.len() + 1 + chunk.len());
    written.push_str(existing);
    if !existing.is_empty() && !existing.ends_with('\n') {
        written.push('\n');
    }
    written.push_str(&chunk);
    written
}

/// Removes `plugin`'s memory blocks from the text of CLAUDE.md, in the three
/// steps of SPEC §2: the exact chunk at a line start (first occurrence); then
/// per block, for blocks whose file still exists in `files` and whose
/// trimmed content is followed by one of the four terminators; then the
/// fallback for every remaining block whose first line starts with
/// "# Plugin: <plugin> /". Everything else is kept byte for byte; no newline
/// is added.
///
/// `files` are the plugin's installed files, read before they are deleted;
/// pass an empty slice when they are gone (only the fallback applies then).
/// If a path occurs twice in `files` (a directory cannot hold that), step 2
/// uses the first.
pub fn strip_memory_blocks(claude_md: &str, plugin: &str, files: &[PluginText]) -> String {
    strip_measured(claude_md, plugin, files, &Fingerprinter::random()).0
}

/// [`strip_memory_blocks`] plus the bytes it examined, hashed, compared and
/// copied ([`Work`]).
///
/// Why that stays linear: every step walks CLAUDE.md line by line once.
/// Candidate positions are line starts whose whole line is a marker, and a
/// marker line names at most one source, so there is at most one candidate
/// per line. Whether a candidate's text equals its source is decided by
/// fingerprints computed in one more pass ([`Fingerprinter::matches`]), never
/// by comparing from each candidate (which costs candidates x source size
/// when marker lines repeat inside a body). Bytes are compared only to
/// confirm a fingerprint match, and a confirmed match is removed, so no byte
/// is confirmed twice.
fn strip_measured(
    claude_md: &str,
    plugin: &str,
    files: &[PluginText],
    fingerprints: &Fingerprinter,
) -> (String, usize) {
    let mut work = Work::default();
    work.add(
        files
            .iter()
            .map(|file| file.path.len() + file.content.len())
            .sum(),
    );
    let chunk = memory_chunk(plugin, files);
    let exact = strip_exact_chunk(claude_md, chunk.as_deref(), fingerprints, &mut work);
    let unedited = strip_unedited_blocks(&exact, plugin, files, fingerprints, &mut work);
    let remaining = strip_remaining_blocks(&unedited, plugin, &mut work);
    (remaining.into_owned(), work.bytes)
}

/// Bytes examined, hashed, compared or copied by one strip. Only tests read
/// it: they bound it by a small multiple of the input size, which pins the
/// linear cost without timing anything.
#[derive(Debug, Default)]
struct Work {
    bytes: usize,
}

impl Work {
    fn add(&mut self, bytes: usize) {
        self.bytes = self.bytes.saturating_add(bytes);
    }
}

/// The two kinds of memory block, in the order the runtime writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

/// One line of a text: where it starts, its content without the `\n`, and
/// where the next line starts.
struct Line<'t> {
    start: usize,
    content: &'t str,
    next: usize,
}

impl Line<'_> {
    fn has_newline(&self) -> bool {
        self.next > self.start + self.content.len()
    }
}

fn lines(text: &str) -> impl Iterator<Item = Line<'_>> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= text.len() {
            return None;
        }
        let next = next_line_start(text, start);
        let whole = &text[start..next];
        let line = Line {
            start,
            content: whole.strip_suffix('\n').unwrap_or(whole),
            next,
        };
        start = next;
        Some(line)
    })
}

/// A text minus the ranges removed from it, in order; copied only once
/// something is removed, so the usual uninstall (step 1 takes the chunk,
/// steps 2 and 3 find nothing) holds CLAUDE.md twice at most.
struct Edited<'t> {
    text: &'t str,
    kept: Option<String>,
    copied_to: usize,
}

impl<'t> Edited<'t> {
    fn new(text: &'t str) -> Self {
        Self {
            text,
            kept: None,
            copied_to: 0,
        }
    }

    /// Removes `range`, which must start at or after the previous range's end.
    fn remove(&mut self, range: Range<usize>, work: &mut Work) {
        let text = self.text;
        let kept = self
            .kept
            .get_or_insert_with(|| String::with_capacity(text.len()));
        kept.push_str(&text[self.copied_to..range.start]);
        work.add(range.start - self.copied_to);
        self.copied_to = range.end;
    }

    fn finish(self, work: &mut Work) -> Cow<'t, str> {
        match self.kept {
            None => Cow::Borrowed(self.text),
            Some(mut kept) => {
                kept.push_str(&self.text[self.copied_to..]);
                work.add(self.text.len() - self.copied_to);
                Cow::Owned(kept)
            }
        }
    }
}

/// Step 1: the runtime wrote the chunk in one piece, so when the files are
/// unchanged and nobody edited the chunk, removing exactly those bytes
/// restores the file as it was before install.
fn strip_exact_chunk<'t>(
    text: &'t str,
    chunk: Option<&str>,
    fingerprints: &Fingerprinter,
    work: &mut Work,
) -> Cow<'t, str> {
    let Some(chunk) = chunk else {
        return Cow::Borrowed(text);
    };
    // The chunk opens with its first marker line, so an occurrence at a line
    // start is a line equal to that marker (a quote mid-line is not one).
    let first_marker = chunk.find('\n').map_or(chunk, |end| &chunk[..end]);
    let candidates: Vec<(usize, usize)> = lines(text)
        .inspect(|line| work.add(line.next - line.start))
        .filter(|line| line.content == first_marker && line.start + chunk.len() <= text.len())
        .map(|line| (line.start, 0))
        .collect();
    let pattern = Pattern::new(fingerprints, chunk, work);
    let matches = fingerprints.matches(text.as_bytes(), &[pattern], &candidates, work);
    let mut edited = Edited::new(text);
    for (&(start, _), matched) in candidates.iter().zip(matches) {
        let end = start + chunk.len();
        if matched && confirm(text, start..end, chunk, work) {
            edited.remove(start..end, work);
            break;
        }
    }
    edited.finish(work)
}

/// Step 2: blocks whose own text is intact are removed exactly, even when
/// the text around them was edited (so step 1 could not match). A block
/// the user extended is not intact: its content is followed by the user's
/// line instead of a terminator, so it is left to step 3, which removes it
/// whole.
fn strip_unedited_blocks<'t>(
    text: &'t str,
    plugin: &str,
    files: &[PluginText],
    fingerprints: &Fingerprinter,
    work: &mut Work,
) -> Cow<'t, str> {
    let own_prefix = format!("{MARKER_START}{plugin} / ");
    // One body per marker line, so that a line is one candidate at most.
    let mut by_marker: HashMap<(BlockKind, &str), usize> = HashMap::new();
    let mut blocks: Vec<KnownBlock<'_>> = Vec::new();
    for source in sources(files) {
        if let Entry::Vacant(slot) = by_marker.entry((source.kind, source.name)) {
            slot.insert(blocks.len());
            blocks.push(KnownBlock {
                marker_len: source.marker(plugin).len(),
                body: source.body,
                pattern: Pattern::new(fingerprints, source.body, work),
            });
        }
    }
    if blocks.is_empty() {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    // (where the body would start, which block) for every marker line of a
    // known block that is followed by "\n" and leaves room for a terminator.
    let mut candidates: Vec<(usize, usize)> = Vec::new();
    for line in lines(text) {
        work.add(line.next - line.start);
        let Some(index) = known_marker(line.content, &own_prefix, &by_marker) else {
            continue;
        };
        if !line.has_newline() || bytes.get(line.next) != Some(&b'\n') {
            continue;
        }
        let body_start = line.next + 1;
        if removal_end(bytes, body_start + blocks[index].body.len()).is_some() {
            candidates.push((body_start, index));
        }
    }
    let patterns: Vec<Pattern> = blocks.iter().map(|block| block.pattern).collect();
    let matches = fingerprints.matches(bytes, &patterns, &candidates, work);
    let mut edited = Edited::new(text);
    // Removed so far up to here: a marker inside a removed block is gone
    // with it, as if the file had been rewritten block by block.
    let mut removed_to = 0;
    for (&(body_start, index), matched) in candidates.iter().zip(matches) {
        let block = &blocks[index];
        let start = body_start - 2 - block.marker_len;
        let body_end = body_start + block.body.len();
        if start < removed_to || !matched || !confirm(text, body_start..body_end, block.body, work)
        {
            continue;
        }
        if let Some(end) = removal_end(bytes, body_end) {
            edited.remove(start..end, work);
            removed_to = end;
        }
    }
    edited.finish(work)
}

/// A source step 2 looks for: its marker line's length, its trimmed content
/// and that content's fingerprint.
struct KnownBlock<'a> {
    marker_len: usize,
    body: &'a str,
    pattern: Pattern,
}

/// Which known block a line is the exact marker line of.
fn known_marker(
    line: &str,
    own_prefix: &str,
    by_marker: &HashMap<(BlockKind, &str), usize>,
) -> Option<usize> {
    let labelled = line.strip_prefix(own_prefix)?;
    let key = if let Some(name) = labelled.strip_prefix("rule: ") {
        (BlockKind::Rule, name)
    } else {
        (BlockKind::Fragment, labelled.strip_prefix("fragment: ")?)
    };
    by_marker.get(&key).copied()
}

/// Where step 2's removal ends when a block's content ends at `body_end`:
/// the four terminators of SPEC §2 (`\n\n` takes one more blank line, `\n`
/// then end of file or `\n` then another marker line take the `\n`, end of
/// file takes nothing), `None` for anything else.
fn removal_end(bytes: &[u8], body_end: usize) -> Option<usize> {
    if body_end == bytes.len() {
        return Some(body_end);
    }
    if bytes.get(body_end) != Some(&b'\n') {
        return None;
    }
    let after = &bytes[body_end + 1..];
    if after.is_empty() || after.starts_with(MARKER_START.as_bytes()) {
        Some(body_end + 1)
    } else if after.starts_with(b"\n") {
        Some(body_end + 2)
    } else {
        None
    }
}

/// Whether `text[range]` is `expected`, after fingerprints said so.
fn confirm(text: &str, range: Range<usize>, expected: &str, work: &mut Work) -> bool {
    work.add(expected.len());
    text.as_bytes().get(range) == Some(expected.as_bytes())
}

/// Step 3: edited blocks and blocks whose files are gone can only be found
/// by their marker; the extent is a heuristic (up to the second blank line)
/// that never eats into another plugin's block.
fn strip_remaining_blocks<'t>(text: &'t str, plugin: &str, work: &mut Work) -> Cow<'t, str> {
    let own_marker = format!("{MARKER_START}{plugin} /");
    let mut edited = Edited::new(text);
    // Blank lines seen since the last marker of `plugin`, while inside one
    // of its blocks.
    let mut blanks_in_block: Option<u8> = None;
    for line in lines(text) {
        work.add(line.next - line.start);
        let removed = if line.content.starts_with(&own_marker) {
            // A marker of the same plugin starts a new block, even inside one.
            blanks_in_block = Some(0);
            true
        } else if let Some(blanks) = blanks_in_block {
            if line.content.starts_with(MARKER_START) {
                blanks_in_block = None;
                false
            } else {
                if is_blank(line.content) {
                    blanks_in_block = (blanks == 0).then_some(1);
                }
                true
            }
        } else {
            false
        };
        if removed {
            edited.remove(line.start..line.next, work);
        }
    }
    edited.finish(work)
}

/// The Mersenne prime 2^61 - 1: products fit in a u128 and reduce with a
/// shift and an add.
const MODULUS: u64 = (1 << 61) - 1;

/// Polynomial fingerprints of byte strings modulo [`MODULUS`]. The base is
/// drawn per strip, so text crafted to collide for one base (CLAUDE.md and
/// the plugin's files are the agent's) does not collide for the next. A
/// collision costs one comparison of bytes, never a wrong result: every
/// fingerprint match is confirmed before anything is removed.
struct Fingerprinter {
    base: u64,
}

/// A string looked for in the text: its length, its fingerprint and
/// base^length (what shifts a prefix fingerprint past it).
#[derive(Debug, Clone, Copy)]
struct Pattern {
    len: usize,
    fingerprint: u64,
    shift: u64,
}

impl Pattern {
    fn new(fingerprints: &Fingerprinter, text: &str, work: &mut Work) -> Self {
        Self {
            len: text.len(),
            fingerprint: fingerprints.extend(0, text.as_bytes(), work),
            shift: fingerprints.power(text.len()),
        }
    }
}

impl Fingerprinter {
    fn random() -> Self {
        let seed = RandomState::new().hash_one("memory block fingerprints");
        Self {
            base: 256 + seed % (MODULUS - 256),
        }
    }

    /// `a * b mod MODULUS` for `a, b < MODULUS`; the result is below
    /// MODULUS because the product is below MODULUS^2.
    fn multiply(a: u64, b: u64) -> u64 {
        let product = u128::from(a) * u128::from(b);
        let low = (product as u64) & MODULUS;
        let high = (product >> 61) as u64;
        Self::reduce(low + high)
    }

    /// `x mod MODULUS` for `x < 2 * MODULUS`.
    fn reduce(x: u64) -> u64 {
        if x >= MODULUS { x - MODULUS } else { x }
    }

    /// The fingerprint of `prefix` followed by `bytes`, given `prefix`'s.
    fn extend(&self, mut fingerprint: u64, bytes: &[u8], work: &mut Work) -> u64 {
        work.add(bytes.len());
        for &byte in bytes {
            fingerprint = Self::reduce(Self::multiply(fingerprint, self.base) + u64::from(byte));
        }
        fingerprint
    }

    fn power(&self, mut exponent: usize) -> u64 {
        let mut result = 1;
        let mut square = self.base;
        while exponent > 0 {
            if exponent & 1 == 1 {
                result = Self::multiply(result, square);
            }
            square = Self::multiply(square, square);
            exponent >>= 1;
        }
        result
    }

    /// For each candidate `(position, pattern index)`, whether the text at
    /// `position` has the pattern's fingerprint (a match may still be a
    /// collision: confirm it). Candidates must be sorted by position and fit
    /// in the text. One pass over the text, plus sorting the candidates by
    /// where their patterns end; memory is a few words per candidate.
    fn matches(
        &self,
        text: &[u8],
        patterns: &[Pattern],
        candidates: &[(usize, usize)],
        work: &mut Work,
    ) -> Vec<bool> {
        let end_of = |candidate: usize| {
            let (position, pattern) = candidates[candidate];
            position + patterns[pattern].len
        };
        let mut by_end: Vec<usize> = (0..candidates.len()).collect();
        by_end.sort_unstable_by_key(|&candidate| end_of(candidate));
        // Prefix fingerprint of the text at each candidate's position.
        let mut at_start = vec![0; candidates.len()];
        let mut matched = vec![false; candidates.len()];
        let (mut starts, mut ends) = (0, 0);
        let (mut fingerprint, mut done) = (0, 0);
        while ends < by_end.len() {
            let next_start = candidates.get(starts).map(|&(position, _)| position);
            let next_end = end_of(by_end[ends]);
            let position = next_start.map_or(next_end, |start| start.min(next_end));
            fingerprint = self.extend(fingerprint, &text[done..position], work);
            done = position;
            // Starts first: an empty pattern starts and ends at one position.
            while candidates
                .get(starts)
                .is_some_and(|&(start, _)| start == position)
            {
                at_start[starts] = fingerprint;
                starts += 1;
            }
            while by_end
                .get(ends)
                .is_some_and(|&candidate| end_of(candidate) == position)
            {
                let candidate = by_end[ends];
                let pattern = &patterns[candidates[candidate].1];
                let shifted = Self::multiply(at_start[candidate], pattern.shift);
                let range = Self::reduce(fingerprint + MODULUS - shifted);
                matched[candidate] = range == pattern.fingerprint;
                ends += 1;
            }
        }
        matched
    }
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
        // A file added to the plugin after install changes the re-derived
        // chunk, so step 1 misses and the per-block step must do the work.
        let mut updated = files.clone();
        updated.push(text("added-later.md", "new"));
        let texts = generated_user_texts();
        assert!(texts.len() > 400, "generated {} texts", texts.len());
        for user in &texts {
            let written = append_memory_chunk(user, "p", &files);
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

    /// Plugin `s`: single-paragraph and multi-line rules, and a fragment, so
    /// the fallback's extent (up to the second blank line) covers whole
    /// edited blocks.
    fn plugin_s() -> Vec<PluginText> {
        vec![
            text("rules/one.md", "One\n"),
            text("rules/two.md", "Two a\nTwo b\n"),
            text("notes.md", "  Note\n"),
        ]
    }

    const MO: &str = "# Plugin: s / rule: one.md";
    const MT: &str = "# Plugin: s / rule: two.md";
    const MN: &str = "# Plugin: s / fragment: notes.md";
    const Q_BLOCK: &str = "# Plugin: q / rule: x.md\n\nq body";

    #[test]
    fn writer_appends_the_chunk_once_after_a_final_newline() {
        let files = plugin_s();
        let chunk = memory_chunk("s", &files).expect("blocks");
        let cases = [
            ("empty file", String::new(), chunk.clone()),
            (
                "final newline",
                "user\n".to_owned(),
                format!("user\n{chunk}"),
            ),
            (
                "no final newline",
                "user".to_owned(),
                format!("user\n{chunk}"),
            ),
            ("crlf", "user\r\n".to_owned(), format!("user\r\n{chunk}")),
            (
                "trailing carriage return",
                "user\r".to_owned(),
                format!("user\r\n{chunk}"),
            ),
            (
                "first marker line already there",
                format!("user\n{MO}\n\nedited\n"),
                format!("user\n{MO}\n\nedited\n"),
            ),
            (
                "first marker line quoted mid-line",
                format!("see {MO} here"),
                format!("see {MO} here"),
            ),
            (
                "only a later marker there",
                format!("{MN}\n\nNote\n"),
                format!("{MN}\n\nNote\n{chunk}"),
            ),
        ];
        for (case, existing, expected) in cases {
            assert_eq!(
                append_memory_chunk(&existing, "s", &files),
                expected,
                "case {case}"
            );
        }
        assert_eq!(
            append_memory_chunk("user", "s", &[text("README.md", "docs only")]),
            "user",
            "no block, nothing written"
        );
    }

    #[test]
    fn edited_and_intact_blocks_follow_spec_steps_two_and_three() {
        let cases = [
            (
                "user lines added after a matching rule body, mid-file: the whole block goes",
                format!("top\n{MO}\n\nOne\nadded 1\nadded 2\n\nbottom\n"),
                "top\nbottom\n".to_owned(),
            ),
            (
                "user line added after a matching rule body at end of file",
                format!("top\n{MO}\n\nOne\nadded\n"),
                "top\n".to_owned(),
            ),
            (
                "user line added at end of file without final newline",
                format!("top\n{MO}\n\nOne\nadded"),
                "top\n".to_owned(),
            ),
            (
                "user line inserted after the first matching line of a multi-line rule",
                format!("top\n{MT}\n\nTwo a\nadded\nTwo b\n\nbottom\n"),
                "top\nbottom\n".to_owned(),
            ),
            (
                "user text appended to a body line",
                format!("top\n{MO}\n\nOne more\n\nbottom\n"),
                "top\nbottom\n".to_owned(),
            ),
            // SPEC's `\n\n` terminator: what follows a blank line after an
            // intact body is the user's own text, kept like text appended
            // after the runtime's chunk.
            (
                "intact body then a blank line then user text",
                format!("top\n{MO}\n\nOne\n\nuser paragraph\n"),
                "top\nuser paragraph\n".to_owned(),
            ),
            (
                "intact body then more blank lines: one is taken",
                format!("top\n{MO}\n\nOne\n\n\n\nbottom\n"),
                "top\n\n\nbottom\n".to_owned(),
            ),
            (
                "intact block at end of file with final newline",
                format!("top\n{MO}\n\nOne\n"),
                "top\n".to_owned(),
            ),
            (
                "intact block at end of file without final newline",
                format!("top\n{MO}\n\nOne"),
                "top\n".to_owned(),
            ),
            (
                "intact block directly followed by another plugin's block",
                format!("top\n{MO}\n\nOne\n{Q_BLOCK}\n"),
                format!("top\n{Q_BLOCK}\n"),
            ),
            (
                "adjacent blocks of the plugin, the first edited",
                format!("top\n{MO}\n\nOne edited\n\n{MT}\n\nTwo a\nTwo b\n\nbottom\n"),
                "top\nbottom\n".to_owned(),
            ),
            (
                "adjacent blocks of the plugin, the second edited",
                format!("top\n{MO}\n\nOne\n\n{MT}\n\nTwo a\nedited\n\nbottom\n"),
                "top\nbottom\n".to_owned(),
            ),
            (
                "adjacent blocks without a blank line between them",
                format!("top\n{MO}\n\nOne\n{MT}\n\nTwo a\nTwo b\n"),
                "top\n".to_owned(),
            ),
            (
                "another plugin's block between two of the plugin's blocks",
                format!("top\n{MO}\n\nOne\n\n{Q_BLOCK}\n\n{MT}\n\nTwo a\nTwo b\n"),
                format!("top\n{Q_BLOCK}\n\n"),
            ),
            (
                "another plugin's block right after an edited block stops the fallback",
                format!("top\n{MO}\n\nOne\nadded\n{Q_BLOCK}\n"),
                format!("top\n{Q_BLOCK}\n"),
            ),
            (
                "whitespace-only line after the body is no terminator but is blank",
                format!("top\n{MO}\n\nOne\n  \nbottom\n"),
                "top\nbottom\n".to_owned(),
            ),
            (
                "whitespace-only line after the marker is no exact block but is blank",
                format!("top\n{MO}\n \t\nOne\n\nbottom\n"),
                "top\nbottom\n".to_owned(),
            ),
            (
                "marker line with trailing whitespace is no exact block",
                format!("top\n{MO} \n\nOne\n\nbottom\n"),
                "top\nbottom\n".to_owned(),
            ),
            (
                "crlf block is just bytes: no exact block, crlf lines are blank",
                format!("top\r\n{MO}\r\n\r\nOne\r\n\r\nbottom\r\n"),
                "top\r\nbottom\r\n".to_owned(),
            ),
            (
                "marker of a file that is gone",
                "top\n# Plugin: s / rule: gone.md\n\nOne\n\nbottom\n".to_owned(),
                "top\nbottom\n".to_owned(),
            ),
            (
                "marker without any body at end of file",
                format!("top\n{MO}\n"),
                "top\n".to_owned(),
            ),
        ];
        for (case, input, expected) in cases {
            assert_eq!(
                strip_memory_blocks(&input, "s", &plugin_s()),
                expected,
                "case {case}"
            );
            // The fast path must agree with the literal reading of SPEC §2.
            assert_eq!(
                reference_strip(&input, "s", &plugin_s()),
                expected,
                "reference, case {case}"
            );
        }
    }

    #[test]
    fn crlf_rule_content_round_trips_through_writer_and_strip() {
        let files = [
            text("rules/crlf.md", "\r\nfirst\r\n\r\nsecond\r\n"),
            text("notes.md", "note\r\n"),
        ];
        for user in ["", "a\r\nb\r\n", "a\r\n\r\n", "a\r", "line\n"] {
            let written = append_memory_chunk(user, "c", &files);
            assert!(written.contains("first\r\n\r\nsecond\n\n"), "{written:?}");
            let expected = if user.is_empty() || user.ends_with('\n') {
                user.to_owned()
            } else {
                format!("{user}\n")
            };
            assert_eq!(
                strip_memory_blocks(&written, "c", &files),
                expected,
                "user {user:?}"
            );
            // Per block: an extra file changes the chunk, so step 1 misses.
            let mut updated = files.to_vec();
            updated.push(text("later.md", "later"));
            assert_eq!(
                strip_memory_blocks(&written, "c", &updated),
                expected,
                "per block, user {user:?}"
            );
        }
    }

    #[test]
    fn a_marker_inside_a_removed_block_goes_with_it() {
        // one.md quotes two.md's whole block; only one.md's block is in the
        // file, with user text around it so step 1 cannot match.
        let files = [
            text("rules/one.md", &format!("One\n{MT}\n\nTwo")),
            text("rules/two.md", "Two"),
        ];
        let input = format!("top\n{MO}\n\nOne\n{MT}\n\nTwo\n\nbottom\n");
        assert_eq!(strip_memory_blocks(&input, "s", &files), "top\nbottom\n");
    }

    #[test]
    fn fingerprint_collisions_never_remove_text_that_differs() {
        // Base 1 makes a fingerprint the sum of the bytes, so "a\n\nb" and
        // "b\n\na" collide: only the byte comparison tells them apart.
        let colliding = Fingerprinter { base: 1 };
        let marker = "# Plugin: c / rule: r.md";
        let files = [text("rules/r.md", "a\n\nb")];
        // With an extra file the chunk differs, so step 2 is what runs.
        let mut with_extra = files.to_vec();
        with_extra.push(text("rules/z.md", "zz"));
        let swapped = format!("{marker}\n\nb\n\na\n\nkept\n");
        for files in [&files[..], &with_extra[..]] {
            let (stripped, _) = strip_measured(&swapped, "c", files, &colliding);
            // Neither step 1 nor step 2 may take the swapped block; the
            // fallback removes it up to its second blank line.
            assert_eq!(stripped, "a\n\nkept\n", "files {files:?}");
        }
        let intact = format!("{marker}\n\na\n\nb\n\nkept\n");
        let (stripped, _) = strip_measured(&intact, "c", &with_extra, &colliding);
        assert_eq!(stripped, "kept\n");
    }

    /// How much work a quadratic strip would do on these inputs, against
    /// what this one may do: a small multiple of CLAUDE.md plus sources.
    fn assert_linear_work(claude_md: &str, plugin: &str, files: &[PluginText]) -> String {
        let size = claude_md.len()
            + files
                .iter()
                .map(|f| f.path.len() + f.content.len())
                .sum::<usize>();
        let (stripped, work) = strip_measured(claude_md, plugin, files, &Fingerprinter::random());
        assert!(
            work <= 8 * size,
            "stripping examined {work} bytes for an input of {size} bytes"
        );
        stripped
    }

    #[test]
    fn work_stays_linear_when_marker_lines_repeat_inside_a_rule_body() {
        // Every marker line in CLAUDE.md is a candidate of step 2, and the
        // text after each one matches the body for thousands of lines before
        // it differs: comparing from each candidate costs lines x body.
        let repeats = 4_000;
        let unit = format!("{MO}\n\n");
        let body = format!("{}end", unit.repeat(repeats));
        let files = [text("rules/one.md", &body)];
        let claude_md = format!("top\n{}tail\n\nbottom\n", unit.repeat(repeats));
        let stripped = assert_linear_work(&claude_md, "s", &files);
        // Nothing is intact, so the fallback takes every block.
        assert_eq!(stripped, "top\nbottom\n");
    }

    #[test]
    fn work_stays_linear_when_the_chunk_recurs_off_line_starts() {
        // A chunk with a short period: searching for it from every
        // occurrence that is not at a line start rescans the chunk each time.
        let period = format!("{MO}\n\nx");
        let repeats = 4_000;
        let body = format!("x{}{MO}", period.repeat(repeats - 1));
        let files = [text("rules/one.md", &body)];
        let chunk = memory_chunk("s", &files).expect("blocks");
        assert_eq!(chunk, format!("{}{MO}\n", period.repeat(repeats)));
        let claude_md = format!("y{}{MO}\n", period.repeat(2 * repeats));
        let stripped = assert_linear_work(&claude_md, "s", &files);
        assert_eq!(stripped, claude_md, "no marker starts a line");
    }

    #[test]
    fn a_16_mib_claude_md_against_2000_rule_files_is_stripped_with_linear_work() {
        // The hostile shape of issue 10: CLAUDE.md is nothing but the
        // plugin's marker lines, cycling through 2,000 rules, each rule
        // quoting the next 20 markers so every candidate nearly matches.
        let rules = 2_000;
        let marker = |rule: usize| format!("# Plugin: s / rule: r{:04}.md", rule % rules);
        let files: Vec<PluginText> = (0..rules)
            .map(|rule| {
                let quoted: String = (1..=20)
                    .map(|next| format!("{}\n\n", marker(rule + next)))
                    .collect();
                text(&format!("rules/r{rule:04}.md"), &format!("{quoted}end"))
            })
            .collect();
        let cycle: String = (0..rules)
            .map(|rule| format!("{}\n\n", marker(rule)))
            .collect();
        let mut claude_md = String::from("top\n");
        while claude_md.len() + cycle.len() <= 16 * 1024 * 1024 {
            claude_md.push_str(&cycle);
        }
        claude_md.push_str("tail\n\nbottom\n");
        let stripped = assert_linear_work(&claude_md, "s", &files);
        assert_eq!(stripped, "top\nbottom\n");
    }

    /// The three steps of SPEC §2 read literally, compared from every
    /// candidate: quadratic on hostile input, so only for small tests.
    fn reference_strip(text: &str, plugin: &str, files: &[PluginText]) -> String {
        let mut text = text.to_owned();
        if let Some(chunk) = memory_chunk(plugin, files) {
            let at = text
                .match_indices(&chunk)
                .map(|(at, _)| at)
                .find(|&at| at == 0 || text.as_bytes()[at - 1] == b'\n');
            // match_indices skips overlapping occurrences: look at every start.
            let at = at.or_else(|| {
                (0..text.len()).find(|&at| {
                    (at == 0 || text.as_bytes()[at - 1] == b'\n')
                        && text.as_bytes()[at..].starts_with(chunk.as_bytes())
                })
            });
            if let Some(at) = at {
                text.replace_range(at..at + chunk.len(), "");
            }
        }
        let mut firsts: Vec<Source<'_>> = Vec::new();
        for source in sources(files) {
            if !firsts
                .iter()
                .any(|s| s.kind == source.kind && s.name == source.name)
            {
                firsts.push(source);
            }
        }
        let mut kept = String::new();
        let mut pos = 0;
        'lines: while pos < text.len() {
            let next = next_line_start(&text, pos);
            let marker = text[pos..next].strip_suffix('\n');
            for source in &firsts {
                if marker != Some(source.marker(plugin).as_str()) {
                    continue;
                }
                let Some(rest) = text[next..]
                    .strip_prefix('\n')
                    .and_then(|r| r.strip_prefix(source.body))
                else {
                    continue;
                };
                let body_end = next + 1 + source.body.len();
                let end = if rest.starts_with("\n\n") {
                    body_end + 2
                } else if rest == "\n" || rest.starts_with("\n# Plugin: ") {
                    body_end + 1
                } else if rest.is_empty() {
                    body_end
                } else {
                    continue;
                };
                pos = end;
                continue 'lines;
            }
            kept.push_str(&text[pos..next]);
            pos = next;
        }
        let own = format!("# Plugin: {plugin} /");
        let mut out = String::new();
        let mut blanks: Option<u8> = None;
        for line in kept.split_inclusive('\n') {
            let content = line.strip_suffix('\n').unwrap_or(line);
            if content.starts_with(&own) {
                blanks = Some(0);
            } else if let Some(seen) = blanks {
                if content.starts_with("# Plugin: ") {
                    blanks = None;
                    out.push_str(line);
                } else if is_blank(content) {
                    blanks = (seen == 0).then_some(1);
                }
            } else {
                out.push_str(line);
            }
        }
        out
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Lines a CLAUDE.md or a rule file may hold: user text, markers of
        /// other plugins (some whose names extend `p`), blank and
        /// whitespace-only lines, carriage returns, and arbitrary text.
        fn line() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(String::new()),
                Just("  ".to_owned()),
                Just("\t\r".to_owned()),
                Just("\r".to_owned()),
                Just("# Notes".to_owned()),
                Just("# Plugin: q / rule: a.md".to_owned()),
                Just("# Plugin: pp / rule: a.md".to_owned()),
                Just("# Plugin: p-2 / fragment: notes.md".to_owned()),
                Just("# Plugin: ".to_owned()),
                Just("see # Plugin: p / rule: b.md".to_owned()),
                "[a-z #:/.\r\t]{0,12}",
                any::<String>(),
            ]
        }

        fn text_of_lines() -> impl Strategy<Value = String> {
            (proptest::collection::vec(line(), 0..12), any::<bool>()).prop_map(
                |(lines, final_newline)| {
                    let mut joined = lines.join("\n");
                    if final_newline {
                        joined.push('\n');
                    }
                    joined
                },
            )
        }

        /// Plugin files whose content may itself hold the plugin's markers.
        fn plugin_files() -> impl Strategy<Value = Vec<PluginText>> {
            let path = prop_oneof![
                Just("rules/a.md"),
                Just("rules/b.md"),
                Just("CLAUDE.md"),
                Just("notes.md"),
                Just("README.md"),
                Just("plugin.yaml"),
            ];
            let content = prop_oneof![
                text_of_lines(),
                Just("# Plugin: p / rule: a.md\n\nquoted".to_owned()),
                Just("\r\nbody\r\n\r\nmore\r\n".to_owned()),
            ];
            proptest::collection::vec((path, content), 0..6).prop_map(|files| {
                files
                    .into_iter()
                    .map(|(path, content)| text(path, &content))
                    .collect()
            })
        }

        /// Texts made of `p`'s own blocks (intact, edited, orphaned) mixed
        /// with the lines above, for comparing against the reference.
        fn text_with_own_blocks(
            files: Vec<PluginText>,
        ) -> impl Strategy<Value = (String, Vec<PluginText>)> {
            let piece = prop_oneof![
                line(),
                Just("# Plugin: p / rule: a.md".to_owned()),
                Just("# Plugin: p / rule: b.md".to_owned()),
                Just("# Plugin: p / fragment: CLAUDE.md".to_owned()),
                Just("# Plugin: p / fragment: gone.md".to_owned()),
            ];
            let bodies: Vec<String> = sources(&files).map(|s| s.body.to_owned()).collect();
            let body = if bodies.is_empty() {
                Just(String::new()).boxed()
            } else {
                proptest::sample::select(bodies).boxed()
            };
            (
                proptest::collection::vec(prop_oneof![piece, body], 0..16),
                any::<bool>(),
            )
                .prop_map(move |(pieces, final_newline)| {
                    let mut joined = pieces.join("\n");
                    if final_newline {
                        joined.push('\n');
                    }
                    (joined, files.clone())
                })
        }

        fn has_own_marker_line(text: &str, plugin: &str) -> bool {
            let own = format!("# Plugin: {plugin} /");
            text.split('\n').any(|line| line.starts_with(&own))
        }

        proptest! {
            #[test]
            fn strip_after_the_writer_restores_the_prior_file(
                original in text_of_lines(),
                files in plugin_files(),
            ) {
                // A line starting with the plugin's marker is, by design,
                // taken for one of its blocks; the writer never makes one.
                prop_assume!(!has_own_marker_line(&original, "p"));
                let written = append_memory_chunk(&original, "p", &files);
                // The writer's newline stays: "x" and "x\n" both become
                // "x\n" plus the chunk, so no uninstall can tell them apart.
                let expected = if written == original || original.is_empty() || original.ends_with('\n') {
                    original.clone()
                } else {
                    format!("{original}\n")
                };
                prop_assert_eq!(strip_memory_blocks(&written, "p", &files), expected);
            }

            #[test]
            fn strip_agrees_with_the_literal_reading_of_the_spec(
                (claude_md, files) in plugin_files().prop_flat_map(text_with_own_blocks),
            ) {
                prop_assert_eq!(
                    strip_memory_blocks(&claude_md, "p", &files),
                    reference_strip(&claude_md, "p", &files)
                );
            }
        }
    }
}
