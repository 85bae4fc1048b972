//! Hashes a plugin directory as it streams out of the container as
//! `tar -c` output, without keeping it: each regular file's bytes go
//! through SHA-256 as they arrive. Symlinks, hard links, FIFOs and devices
//! are archived by `tar` as what they are, never opened nor followed, and
//! are only listed here. Everything is bounded while it streams: the
//! regular files' bytes and the entries by the staging caps, long names
//! and pax records by small constants; past a bound the read stops.

use sha2::{Digest as _, Sha256};

use super::exec::StdoutSink;
use crate::domain::digest::FileDigest;
use crate::domain::drift::InstalledTree;
use crate::ports::container::TreeReadLimits;

const BLOCK: usize = 512;
/// A GNU long name, or a pax header block, larger than this is refused:
/// no path of a staged plugin comes near it.
const META_MAX_BYTES: u64 = 64 * 1024;
/// After the end marker `tar` pads its last record (10 KiB for GNU tar);
/// more than this is not a tar's padding.
const TRAILING_MAX_BYTES: u64 = 64 * 1024;

/// Why a stream could not be read as a tar archive.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("installed tree stream: {0}")]
pub(super) struct Malformed(&'static str);

enum State {
    /// Collecting the next 512-byte header in `block`.
    Header,
    /// Hashing a regular file's bytes, then skipping its padding.
    File {
        path: String,
        remaining: u64,
        padding: u64,
        hasher: Sha256,
    },
    /// Collecting a GNU long name or pax record into `meta`.
    Meta {
        pax: bool,
        remaining: u64,
        padding: u64,
    },
    /// Skipping bytes not needed (other entries' data, padding).
    Skip { remaining: u64 },
    /// Past the end-of-archive marker, or stopped at a bound or an error.
    Done,
}

/// A [`StdoutSink`] that hashes a `tar -c` stream of one plugin directory.
pub(super) struct TreeHasher {
    limits: TreeReadLimits,
    state: State,
    block: Vec<u8>,
    meta: Vec<u8>,
    long_name: Option<Vec<u8>>,
    files: Vec<FileDigest>,
    others: Vec<String>,
    entries: u64,
    bytes: u64,
    /// The read stopped at a bound: what follows is unknown.
    over_bound: bool,
    ended: bool,
    /// Bytes seen after the end marker.
    trailing: u64,
    malformed: Option<&'static str>,
}

impl TreeHasher {
    pub(super) fn new(limits: TreeReadLimits) -> Self {
        Self {
            limits,
            state: State::Header,
            block: Vec::with_capacity(BLOCK),
            meta: Vec::new(),
            long_name: None,
            files: Vec::new(),
            others: Vec::new(),
            entries: 0,
            bytes: 0,
            over_bound: false,
            ended: false,
            trailing: 0,
            malformed: None,
        }
    }

    /// What was read. `whole`: the script read the tree to its end; then
    /// an archive cut short is an error, not a partial tree.
    pub(super) fn finish(self, whole: bool) -> Result<InstalledTree, Malformed> {
        if let Some(why) = self.malformed {
            return Err(Malformed(why));
        }
        let complete = whole && !self.over_bound;
        // `tar` always ends its archive with the end marker.
        if complete && !self.ended {
            return Err(Malformed("archive cut short"));
        }
        Ok(InstalledTree {
            files: self.files,
            others: self.others,
            complete,
        })
    }

    fn fail(&mut self, why: &'static str) -> bool {
        self.malformed = Some(why);
        self.state = State::Done;
        false
    }

    fn stop_at_bound(&mut self) -> bool {
        self.over_bound = true;
        self.state = State::Done;
        false
    }

    /// One entry more; false past the entries bound.
    fn count_entry(&mut self) -> bool {
        self.entries += 1;
        self.entries <= self.limits.max_entries
    }

    fn header(&mut self) -> bool {
        let block = std::mem::take(&mut self.block);
        if block.iter().all(|b| *b == 0) {
            // The end-of-archive marker (two zero blocks; one is enough to
            // know no entry follows).
            self.ended = true;
            self.state = State::Done;
            return true;
        }
        let header = tar::Header::from_byte_slice(&block);
        if !checksum_ok(header) {
            return self.fail("bad header checksum");
        }
        let Ok(size) = header.entry_size() else {
            return self.fail("bad entry size");
        };
        let padding = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        let kind = header.entry_type();
        let raw_path = self
            .long_name
            .take()
            .unwrap_or_else(|| header.path_bytes().into_owned());
        self.state = match kind {
            tar::EntryType::GNULongName | tar::EntryType::XHeader => {
                if size > META_MAX_BYTES {
                    return self.fail("long name or pax record over its bound");
                }
                self.meta.clear();
                State::Meta {
                    pax: kind == tar::EntryType::XHeader,
                    remaining: size,
                    padding,
                }
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::GNULongLink => {
                if size > META_MAX_BYTES {
                    return self.fail("long link or global record over its bound");
                }
                State::Skip {
                    remaining: size + padding,
                }
            }
            _ => {
                let Some(path) = relative_path(&raw_path) else {
                    // The root itself.
                    return {
                        self.state = State::Skip {
                            remaining: size + padding,
                        };
                        true
                    };
                };
                if !self.count_entry() {
                    return self.stop_at_bound();
                }
                match kind {
                    tar::EntryType::Regular | tar::EntryType::Continuous => {
                        self.bytes = self.bytes.saturating_add(size);
                        if self.bytes > self.limits.max_bytes {
                            return self.stop_at_bound();
                        }
                        State::File {
                            path,
                            remaining: size,
                            padding,
                            hasher: Sha256::new(),
                        }
                    }
                    tar::EntryType::Directory => State::Skip {
                        remaining: size + padding,
                    },
                    // Symlinks, hard links, FIFOs, devices, sparse files:
                    // listed, never read (a sparse file's data is skipped).
                    _ => {
                        self.others.push(path);
                        State::Skip {
                            remaining: size + padding,
                        }
                    }
                }
            }
        };
        true
    }

    /// A complete GNU long name or pax record is in `meta`.
    fn meta_done(&mut self, pax: bool) -> bool {
        let meta = std::mem::take(&mut self.meta);
        if !pax {
            let name = meta.split(|b| *b == 0).next().unwrap_or_default();
            self.long_name = Some(name.to_vec());
            return true;
        }
        match pax_path(&meta) {
            Ok(Some(path)) => self.long_name = Some(path),
            Ok(None) => {}
            Err(why) => return self.fail(why),
        }
        true
    }
}

impl StdoutSink for TreeHasher {
    fn take(&mut self, mut chunk: &[u8]) -> bool {
        while !chunk.is_empty() {
            match &mut self.state {
                State::Done => {
                    if self.malformed.is_some() || self.over_bound {
                        return false;
                    }
                    // What follows the end marker (the second zero block,
                    // tar's record padding) is counted, not read.
                    self.trailing += chunk.len() as u64;
                    if self.trailing > TRAILING_MAX_BYTES {
                        return self.fail("output after the end of the archive");
                    }
                    return true;
                }
                State::Header => {
                    let take = (BLOCK - self.block.len()).min(chunk.len());
                    self.block.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    if self.block.len() == BLOCK && !self.header() {
                        return false;
                    }
                }
                State::File {
                    path,
                    remaining,
                    padding,
                    hasher,
                } => {
                    let take = (*remaining).min(chunk.len() as u64) as usize;
                    hasher.update(&chunk[..take]);
                    *remaining -= take as u64;
                    chunk = &chunk[take..];
                    if *remaining == 0 {
                        let file = FileDigest {
                            path: std::mem::take(path),
                            sha256: std::mem::take(hasher).finalize().into(),
                        };
                        self.files.push(file);
                        self.state = State::Skip {
                            remaining: *padding,
                        };
                    }
                }
                State::Meta {
                    pax,
                    remaining,
                    padding,
                } => {
                    let take = (*remaining).min(chunk.len() as u64) as usize;
                    self.meta.extend_from_slice(&chunk[..take]);
                    *remaining -= take as u64;
                    chunk = &chunk[take..];
                    if *remaining == 0 {
                        let (pax, padding) = (*pax, *padding);
                        self.state = State::Skip { remaining: padding };
                        if !self.meta_done(pax) {
                            return false;
                        }
                    }
                }
                State::Skip { remaining } => {
                    let take = (*remaining).min(chunk.len() as u64) as usize;
                    *remaining -= take as u64;
                    chunk = &chunk[take..];
                    if *remaining == 0 {
                        self.state = State::Header;
                    }
                }
            }
            // A zero-length entry is complete as soon as its header is.
            if let State::File {
                remaining: 0,
                padding,
                ..
            } = &self.state
            {
                let padding = *padding;
                if let State::File { path, hasher, .. } =
                    std::mem::replace(&mut self.state, State::Skip { remaining: padding })
                {
                    self.files.push(FileDigest {
                        path,
                        sha256: hasher.finalize().into(),
                    });
                }
            }
            if let State::Skip { remaining: 0 } = self.state {
                self.state = State::Header;
            }
        }
        true
    }
}

/// The header's checksum field matches its bytes, as `tar` computes it.
fn checksum_ok(header: &tar::Header) -> bool {
    let mut computed = header.clone();
    computed.set_cksum();
    matches!((header.cksum(), computed.cksum()), (Ok(a), Ok(b)) if a == b)
}

/// The `path` record of a pax header, if any.
fn pax_path(records: &[u8]) -> Result<Option<Vec<u8>>, &'static str> {
    let mut rest = records;
    let mut path = None;
    while !rest.is_empty() {
        let space = rest
            .iter()
            .position(|b| *b == b' ')
            .ok_or("bad pax record")?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|n| n.parse().ok())
            .filter(|n| *n > space + 1 && *n <= rest.len())
            .ok_or("bad pax record length")?;
        let record = &rest[space + 1..len - 1];
        if let Some(value) = record.strip_prefix(b"path=") {
            path = Some(value.to_vec());
        }
        rest = &rest[len..];
    }
    Ok(path)
}

/// The entry's path relative to the plugin root (`./a/b` → `a/b`); `None`
/// for the root itself. A name that is not UTF-8 is shown with
/// replacement characters: it can only be an addition.
fn relative_path(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let mut path = text.as_ref();
    while let Some(rest) = path.strip_prefix("./") {
        path = rest;
    }
    let path = path.trim_end_matches('/');
    (!path.is_empty() && path != ".").then(|| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::digest::sha256;

    fn limits() -> TreeReadLimits {
        TreeReadLimits {
            max_bytes: 1 << 20,
            max_entries: 100,
        }
    }

    fn append(
        builder: &mut tar::Builder<Vec<u8>>,
        path: &str,
        kind: tar::EntryType,
        content: &[u8],
    ) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        if kind == tar::EntryType::Symlink {
            h.set_size(0);
            builder.append_link(&mut h, path, "/etc").unwrap();
        } else {
            builder.append_data(&mut h, path, content).unwrap();
        }
    }

    fn archive(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, content) in entries {
            append(&mut builder, path, *kind, content);
        }
        builder.into_inner().unwrap()
    }

    /// Feeds `bytes` in chunks of `size`, as an exec's frames arrive.
    fn hash(bytes: &[u8], size: usize, limits: TreeReadLimits) -> (bool, TreeHasher) {
        let mut hasher = TreeHasher::new(limits);
        let mut all = true;
        for chunk in bytes.chunks(size) {
            if !hasher.take(chunk) {
                all = false;
                break;
            }
        }
        (all, hasher)
    }

    fn tree() -> Vec<u8> {
        let long = format!("./{}/deep.md", "d".repeat(150));
        use tar::EntryType as T;
        archive(&[
            ("./", T::Directory, b""),
            ("./plugin.yaml", T::Regular, b"name: p\n"),
            ("./rules/", T::Directory, b""),
            ("./rules/a.md", T::Regular, &[7u8; 1500]),
            ("./empty", T::Regular, b""),
            (&long, T::Regular, b"deep"),
            ("./link", T::Symlink, b""),
            ("./fifo", T::Fifo, b""),
        ])
    }

    #[test]
    fn every_regular_file_is_hashed_in_any_chunking_and_others_are_only_listed() {
        let bytes = tree();
        for size in [1, 7, 512, 4096, bytes.len()] {
            let (all, hasher) = hash(&bytes, size, limits());
            assert!(all, "chunks of {size}");
            let tree = hasher.finish(true).unwrap();
            assert!(tree.complete);
            let files: Vec<(&str, [u8; 32])> = tree
                .files
                .iter()
                .map(|f| (f.path.as_str(), f.sha256))
                .collect();
            let long = format!("{}/deep.md", "d".repeat(150));
            assert_eq!(
                files,
                [
                    ("plugin.yaml", sha256(b"name: p\n")),
                    ("rules/a.md", sha256(&[7u8; 1500])),
                    ("empty", sha256(b"")),
                    (long.as_str(), sha256(b"deep")),
                ],
                "chunks of {size}"
            );
            assert_eq!(tree.others, ["link", "fifo"]);
        }
    }

    #[test]
    fn a_tree_past_the_byte_or_entry_bound_stops_reading_and_is_incomplete() {
        let bytes = tree();
        let (all, hasher) = hash(
            &bytes,
            512,
            TreeReadLimits {
                max_bytes: 1000,
                max_entries: 100,
            },
        );
        assert!(!all, "the read stops at the bound");
        let tree = hasher.finish(true).unwrap();
        assert!(!tree.complete);
        assert_eq!(tree.files.len(), 1, "only what came before the bound");

        let (all, hasher) = hash(
            &bytes,
            512,
            TreeReadLimits {
                max_bytes: 1 << 20,
                max_entries: 2,
            },
        );
        assert!(!all);
        assert!(!hasher.finish(true).unwrap().complete);
    }

    #[test]
    fn a_stream_cut_mid_entry_is_an_error_unless_the_script_said_it_stopped_short() {
        let bytes = tree();
        let cut = &bytes[..BLOCK * 4 + 100];
        let (_, hasher) = hash(cut, 512, limits());
        assert!(hasher.finish(true).is_err());
        let (_, hasher) = hash(cut, 512, limits());
        assert!(!hasher.finish(false).unwrap().complete);
    }

    #[test]
    fn garbage_and_oversized_long_names_are_refused_not_read_on() {
        let (all, hasher) = hash(&[b'x'; 2048], 512, limits());
        assert!(!all);
        assert_eq!(
            hasher.finish(true).unwrap_err(),
            Malformed("bad header checksum")
        );

        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(META_MAX_BYTES + 1);
        h.set_cksum();
        let (all, hasher) = hash(h.as_bytes(), 512, limits());
        assert!(!all);
        assert!(hasher.finish(true).is_err());
    }

    #[test]
    fn a_pax_path_names_the_next_entry() {
        let path = "x".repeat(120);
        let record = format!("path={path}\n");
        let len = record.len() + 4;
        let record = format!("{len} {record}");
        assert_eq!(record.len(), len);
        let mut builder = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(record.len() as u64);
        builder
            .append_data(&mut h, "PaxHeaders/x", record.as_bytes())
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(1);
        builder.append_data(&mut h, "short", &b"a"[..]).unwrap();
        let bytes = builder.into_inner().unwrap();
        let (_, hasher) = hash(&bytes, 100, limits());
        let tree = hasher.finish(true).unwrap();
        assert_eq!(tree.files[0].path, path);
    }
}
