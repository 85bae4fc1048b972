//! Tar archives as the engine's archive endpoint speaks them: the stream a
//! local tree is uploaded as, the one-entry archive a file is written as,
//! and the reader that takes one regular file out of a downloaded archive.
//!
//! Nothing here knows about bollard: the docker module hands in byte
//! streams and maps the outcomes to the port's errors.

use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::adapters::tartree::{TreeEntry, write_tree_tar};
use crate::ports::container::ContainerFile;

/// Chunks in flight between the tar writer and the upload: with `CHUNK`,
/// what a copy holds in memory whatever the size of the tree.
const CHANNEL_DEPTH: usize = 4;
/// Bound on extension headers (pax, GNU long names) before the entry, and
/// on their size: a well-formed answer has at most a couple of small ones.
const MAX_META_ENTRIES: usize = 8;
const MAX_META_BYTES: u64 = 64 * 1024;
const BLOCK: usize = 512;

/// The archive of a tree, produced on the blocking pool while it is being
/// uploaded. `failure` is set when the writer itself failed (as opposed to
/// the upload going away), so the caller can report the right cause.
pub(super) struct TreeStream {
    pub body: std::pin::Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>,
    pub failure: Arc<OnceLock<String>>,
}

/// Starts writing the tar of `entries` on the blocking pool, through a
/// bounded channel: memory stays at a few chunks however large the tree.
/// If the stream is dropped (upload failed or timed out) the writer stops
/// at its next chunk.
pub(super) fn stream_tree_tar(
    root: PathBuf,
    top: String,
    entries: Vec<TreeEntry>,
    mtime: u64,
) -> TreeStream {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_DEPTH);
    let failure = Arc::new(OnceLock::new());
    let writer_failure = Arc::clone(&failure);
    tokio::task::spawn_blocking(move || {
        let out = ChannelWriter { tx: tx.clone() };
        if let Err(e) = write_tree_tar(out, &root, Some(&top), &entries, mtime)
            && e.kind() != io::ErrorKind::BrokenPipe
        {
            let _ = writer_failure.set(e.to_string());
            // An error item aborts the request body, so the engine never
            // sees a well-formed but partial archive.
            let _ = tx.blocking_send(Err(e));
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    TreeStream {
        body: Box::pin(body),
        failure,
    }
}

struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "upload stopped"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A one-entry archive holding `file` as `name`, with its mode and owner.
pub(super) fn single_file_tar(name: &str, file: &ContainerFile, mtime: u64) -> io::Result<Vec<u8>> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_uid(file.uid);
    header.set_gid(file.gid);
    header.set_mode(file.mode & 0o7777);
    header.set_mtime(mtime);
    header.set_size(file.content.len() as u64);
    let mut builder = tar::Builder::new(Vec::with_capacity(file.content.len() + 3 * BLOCK));
    builder.append_data(&mut header, name, file.content.as_slice())?;
    builder.into_inner()
}

/// Why one file could not be taken out of an archive.
#[derive(Debug)]
pub(super) enum SingleFileError<E> {
    /// The archive is empty or its entry is not a regular file.
    NotFound,
    /// The file is larger than allowed.
    TooLarge,
    /// The archive is not what the engine sends for one file.
    Malformed(String),
    /// The byte stream failed.
    Source(E),
}

impl<E: fmt::Display> fmt::Display for SingleFileError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound => f.write_str("no regular file in archive"),
            Self::TooLarge => f.write_str("file too large"),
            Self::Malformed(why) => write!(f, "malformed archive: {why}"),
            Self::Source(e) => write!(f, "{e}"),
        }
    }
}

/// Reads the archive the engine sends for one path and returns its single
/// regular file. Reads only as far as it must: a directory answers
/// `NotFound` after its first header, a file over `max_bytes` answers
/// `TooLarge` before its content is read.
pub(super) async fn read_single_file<S, E>(
    stream: S,
    max_bytes: u64,
) -> Result<ContainerFile, SingleFileError<E>>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let mut reader = BlockReader {
        stream,
        buf: Vec::new(),
        start: 0,
    };
    let mut pax_size = None;
    let mut pax_uid = None;
    let mut pax_gid = None;
    for _ in 0..MAX_META_ENTRIES {
        let Some(block) = reader.block().await? else {
            return Err(SingleFileError::NotFound);
        };
        if block.iter().all(|b| *b == 0) {
            return Err(SingleFileError::NotFound);
        }
        let header = tar::Header::from_byte_slice(&block);
        let size = header.entry_size().map_err(malformed)?;
        match header.entry_type() {
            tar::EntryType::XHeader => {
                let data = reader.padded(size, MAX_META_BYTES).await?;
                for ext in tar::PaxExtensions::new(&data) {
                    let ext = ext.map_err(malformed)?;
                    let value = || -> Result<u64, SingleFileError<E>> {
                        ext.value()
                            .ok()
                            .and_then(|v| v.parse().ok())
                            .ok_or_else(|| SingleFileError::Malformed("bad pax value".into()))
                    };
                    match ext.key_bytes() {
                        b"size" => pax_size = Some(value()?),
                        b"uid" => pax_uid = Some(value()?),
                        b"gid" => pax_gid = Some(value()?),
                        _ => {}
                    }
                }
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => {
                reader.padded(size, MAX_META_BYTES).await?;
            }
            tar::EntryType::Regular => {
                let size = pax_size.unwrap_or(size);
                if size > max_bytes {
                    return Err(SingleFileError::TooLarge);
                }
                let content = reader.padded(size, max_bytes).await?;
                let file = ContainerFile {
                    content,
                    mode: header.mode().map_err(malformed)? & 0o7777,
                    uid: match pax_uid {
                        Some(uid) => uid,
                        None => header.uid().map_err(malformed)?,
                    },
                    gid: match pax_gid {
                        Some(gid) => gid,
                        None => header.gid().map_err(malformed)?,
                    },
                };
                return match reader.block().await? {
                    None => Ok(file),
                    Some(next) if next.iter().all(|b| *b == 0) => Ok(file),
                    Some(_) => Err(SingleFileError::Malformed(
                        "archive holds more than one entry".into(),
                    )),
                };
            }
            _ => return Err(SingleFileError::NotFound),
        }
    }
    Err(SingleFileError::Malformed(
        "too many extension headers".into(),
    ))
}

fn malformed<E>(e: impl fmt::Display) -> SingleFileError<E> {
    SingleFileError::Malformed(e.to_string())
}

struct BlockReader<S> {
    stream: S,
    buf: Vec<u8>,
    start: usize,
}

impl<S, E> BlockReader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    /// Buffers at least `n` bytes; false at end of stream before that.
    async fn fill(&mut self, n: usize) -> Result<bool, SingleFileError<E>> {
        while self.buf.len() - self.start < n {
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            match self.stream.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(SingleFileError::Source(e)),
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let out = &self.buf[self.start..self.start + n];
        self.start += n;
        out
    }

    /// The next header block; `None` at a clean end of stream.
    async fn block(&mut self) -> Result<Option<[u8; BLOCK]>, SingleFileError<E>> {
        if !self.fill(BLOCK).await? {
            return if self.buf.len() == self.start {
                Ok(None)
            } else {
                Err(SingleFileError::Malformed("truncated header".into()))
            };
        }
        let mut block = [0u8; BLOCK];
        block.copy_from_slice(self.take(BLOCK));
        Ok(Some(block))
    }

    /// `size` bytes of entry data (at most `limit`), skipping the padding
    /// to the next block.
    async fn padded(&mut self, size: u64, limit: u64) -> Result<Vec<u8>, SingleFileError<E>> {
        if size > limit {
            return Err(SingleFileError::Malformed(
                "extension header too large".into(),
            ));
        }
        let size = usize::try_from(size).map_err(malformed)?;
        let padded = size.div_ceil(BLOCK) * BLOCK;
        if !self.fill(padded).await? {
            return Err(SingleFileError::Malformed("truncated entry".into()));
        }
        let data = self.take(padded)[..size].to_vec();
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::adapters::tartree::{TreeError, plan_tree};
    use std::fs;
    use std::path::Path;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("skills/b")).unwrap();
        fs::create_dir_all(root.join("empty")).unwrap();
        fs::write(root.join("plugin.yaml"), "name: p\n").unwrap();
        fs::write(root.join("skills/b/SKILL.md"), "# b\n").unwrap();
        fs::write(root.join("run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    #[test]
    fn tree_tar_is_sorted_owned_by_the_agent_with_normalized_modes() {
        let dir = tree();
        let entries = plan_tree(dir.path()).unwrap();
        let mut out = Vec::new();
        write_tree_tar(&mut out, dir.path(), Some("p"), &entries, 0).unwrap();

        let mut archive = tar::Archive::new(out.as_slice());
        let seen: Vec<(String, u64, u64, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    h.mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("p".to_owned(), 1000, 1000, 0o755),
                ("p/empty".to_owned(), 1000, 1000, 0o755),
                ("p/plugin.yaml".to_owned(), 1000, 1000, 0o644),
                ("p/run.sh".to_owned(), 1000, 1000, 0o755),
                ("p/skills".to_owned(), 1000, 1000, 0o755),
                ("p/skills/b".to_owned(), 1000, 1000, 0o755),
                ("p/skills/b/SKILL.md".to_owned(), 1000, 1000, 0o644),
            ]
        );
    }

    #[test]
    fn long_paths_survive_the_tree_tar() {
        let dir = tempfile::tempdir().unwrap();
        let deep = "d".repeat(60);
        fs::create_dir_all(dir.path().join(&deep).join(&deep)).unwrap();
        fs::write(dir.path().join(&deep).join(&deep).join("f"), "x").unwrap();
        let entries = plan_tree(dir.path()).unwrap();
        let mut out = Vec::new();
        write_tree_tar(&mut out, dir.path(), Some("p"), &entries, 0).unwrap();
        let mut archive = tar::Archive::new(out.as_slice());
        let last = archive.entries().unwrap().last().unwrap().unwrap();
        assert_eq!(
            last.path().unwrap(),
            Path::new("p").join(&deep).join(&deep).join("f")
        );
    }

    #[test]
    fn symlinks_in_the_local_tree_are_refused() {
        let dir = tree();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("skills/leak")).unwrap();
        let err = plan_tree(dir.path()).unwrap_err();
        assert!(
            matches!(err, TreeError::Symlink(ref p) if p == "skills/leak"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn tree_stream_yields_the_same_archive() {
        let dir = tree();
        let entries = plan_tree(dir.path()).unwrap();
        let mut expected = Vec::new();
        write_tree_tar(&mut expected, dir.path(), Some("p"), &entries, 7).unwrap();

        let streamed = stream_tree_tar(dir.path().to_owned(), "p".into(), entries, 7);
        let chunks: Vec<Bytes> = streamed.body.map(|c| c.unwrap()).collect().await;
        assert_eq!(chunks.concat(), expected);
        assert!(streamed.failure.get().is_none());
    }

    fn chunked(
        archive: Vec<u8>,
        size: usize,
    ) -> impl Stream<Item = Result<Bytes, io::Error>> + Unpin {
        let chunks: Vec<_> = archive
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures_util::stream::iter(chunks)
    }

    fn file(content: &[u8]) -> ContainerFile {
        ContainerFile {
            content: content.to_vec(),
            mode: 0o640,
            uid: 1000,
            gid: 1001,
        }
    }

    #[tokio::test]
    async fn a_single_file_reads_back_whatever_the_chunking() {
        let archive = single_file_tar("CLAUDE.md", &file(b"hello\n"), 0).unwrap();
        for size in [1, 7, 512, 4096] {
            let got = read_single_file(chunked(archive.clone(), size), 6)
                .await
                .unwrap();
            assert_eq!(got, file(b"hello\n"));
        }
    }

    #[tokio::test]
    async fn a_file_over_the_bound_is_too_large() {
        let archive = single_file_tar("f", &file(b"hello\n"), 0).unwrap();
        let err = read_single_file(chunked(archive, 100), 5)
            .await
            .unwrap_err();
        assert!(matches!(err, SingleFileError::TooLarge), "{err}");
    }

    #[tokio::test]
    async fn a_directory_or_an_empty_archive_is_not_found() {
        let dir = tree();
        let entries = plan_tree(dir.path()).unwrap();
        let mut out = Vec::new();
        write_tree_tar(&mut out, dir.path(), Some("p"), &entries, 0).unwrap();
        let err = read_single_file(chunked(out, 512), 1 << 20)
            .await
            .unwrap_err();
        assert!(matches!(err, SingleFileError::NotFound), "{err}");

        let err = read_single_file(chunked(Vec::new(), 512), 10)
            .await
            .unwrap_err();
        assert!(matches!(err, SingleFileError::NotFound), "{err}");
    }

    #[tokio::test]
    async fn pax_owner_overrides_the_header() {
        let mut builder = tar::Builder::new(Vec::new());
        let records = b"15 uid=3000000\n10 gid=42\n";
        let mut pax = tar::Header::new_ustar();
        pax.set_entry_type(tar::EntryType::XHeader);
        pax.set_size(records.len() as u64);
        builder
            .append_data(&mut pax, "PaxHeader/f", records.as_slice())
            .unwrap();
        let mut header = tar::Header::new_ustar();
        header.set_size(2);
        header.set_mode(0o600);
        builder
            .append_data(&mut header, "f", b"hi".as_slice())
            .unwrap();
        let archive = builder.into_inner().unwrap();

        let got = read_single_file(chunked(archive, 100), 10).await.unwrap();
        assert_eq!((got.uid, got.gid, got.mode), (3_000_000, 42, 0o600));
    }

    #[tokio::test]
    async fn a_second_entry_is_malformed() {
        let mut builder = tar::Builder::new(Vec::new());
        for name in ["a", "b"] {
            let mut header = tar::Header::new_gnu();
            header.set_size(1);
            builder
                .append_data(&mut header, name, b"x".as_slice())
                .unwrap();
        }
        let archive = builder.into_inner().unwrap();
        let err = read_single_file(chunked(archive, 100), 10)
            .await
            .unwrap_err();
        assert!(matches!(err, SingleFileError::Malformed(_)), "{err}");
    }
}
