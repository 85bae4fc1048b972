//! Tar archives as they cross the container boundary: the stream a staged
//! tree is delivered as (over an exec's stdin), and the reader of what a
//! reading script sends back (`tar -c` output, several archives possibly
//! concatenated by `find -exec … +`).
//!
//! Nothing here knows about bollard: the docker module hands in and takes
//! out bytes and maps the outcomes to the port's errors.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;

use crate::adapters::tartree::{TreeEntry, write_tree_tar};
use crate::ports::staging::TreeCheck;

/// Chunks in flight between the tar writer and the exec's stdin: with the
/// writer's 64 KiB buffer, what a delivery holds in memory whatever the
/// size of the tree.
const CHANNEL_DEPTH: usize = 4;

/// The archive of a tree, produced on the blocking pool while it is being
/// sent. `failure` is set when the writer itself failed (as opposed to the
/// receiver going away), so the caller can report the right cause.
pub(super) struct TreeStream {
    pub body: std::pin::Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>,
    pub failure: Arc<OnceLock<String>>,
}

/// Starts writing the tar of `entries` (paths relative to the tree's root)
/// on the blocking pool, through a bounded channel, with the empty file
/// `seal` as its last entry. `check` (a tree read in place) runs after the
/// last file and before the seal: a tree that changed gets no seal. If the
/// stream is dropped the writer stops at its next chunk.
pub(super) fn stream_tree_tar(
    root: PathBuf,
    entries: Vec<TreeEntry>,
    mtime: u64,
    seal: String,
    check: Option<Arc<dyn TreeCheck>>,
) -> TreeStream {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_DEPTH);
    let failure = Arc::new(OnceLock::new());
    let writer_failure = Arc::clone(&failure);
    tokio::task::spawn_blocking(move || {
        let out = ChannelWriter { tx: tx.clone() };
        if let Err(e) = write_tree_tar(
            out,
            &root,
            None,
            &entries,
            mtime,
            Some(&seal),
            check.as_deref(),
        ) && e.kind() != io::ErrorKind::BrokenPipe
        {
            let _ = writer_failure.set(e.to_string());
            // An error item stops the sender before the seal, so the
            // container never takes a partial tree for a whole one.
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
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "receiver stopped"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A regular file found in a reading script's archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ReadFile {
    /// The entry's path with any leading `./` removed.
    pub path: String,
    pub mode: u32,
    pub content: Vec<u8>,
}

/// The regular files of `bytes`, one or more tar archives back to back.
/// Other entry types (a path the agent swapped for a FIFO or a symlink
/// between the script's check and its `tar`) are skipped; so are files
/// over `max_file` and non-UTF-8 paths. The input is already bounded by
/// the caller, so this only ever walks that many bytes.
pub(super) fn read_files(bytes: &[u8], max_file: u64) -> io::Result<Vec<ReadFile>> {
    let mut archive = tar::Archive::new(bytes);
    archive.set_ignore_zeros(true);
    let mut files = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type() != tar::EntryType::Regular || entry.size() > max_file {
            continue;
        }
        let Ok(path) = std::str::from_utf8(&entry.path_bytes()).map(str::to_owned) else {
            continue;
        };
        let path = path.strip_prefix("./").unwrap_or(&path).to_owned();
        let mode = entry.header().mode()? & 0o7777;
        let mut content = Vec::with_capacity(entry.size() as usize);
        io::Read::read_to_end(&mut entry, &mut content)?;
        files.push(ReadFile {
            path,
            mode,
            content,
        });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::adapters::tartree::{TreeError, plan_tree, write_tree_tar};
    use futures_util::StreamExt;
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
    fn a_directory_swapped_for_a_symlink_after_planning_is_never_followed() {
        let dir = tree();
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir_all(outside.path().join("b")).unwrap();
        fs::write(outside.path().join("b/SKILL.md"), "host secret\n").unwrap();
        let entries = plan_tree(dir.path()).unwrap();
        // The tree changes under the reader: `skills` now leads outside.
        fs::rename(dir.path().join("skills"), dir.path().join("skills.old")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("skills")).unwrap();

        let mut out = Vec::new();
        let error =
            write_tree_tar(&mut out, dir.path(), Some("p"), &entries, 0, None, None).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ELOOP), "{error}");
        let sent = String::from_utf8_lossy(&out);
        assert!(!sent.contains("host secret"), "read through the symlink");
    }

    #[test]
    fn tree_tar_is_sorted_owned_by_the_agent_with_normalized_modes() {
        let dir = tree();
        let entries = plan_tree(dir.path()).unwrap();
        let mut out = Vec::new();
        write_tree_tar(&mut out, dir.path(), Some("p"), &entries, 0, None, None).unwrap();

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
        write_tree_tar(&mut out, dir.path(), Some("p"), &entries, 0, None, None).unwrap();
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
        write_tree_tar(
            &mut expected,
            dir.path(),
            None,
            &entries,
            7,
            Some("seal"),
            None,
        )
        .unwrap();

        let streamed = stream_tree_tar(dir.path().to_owned(), entries, 7, "seal".into(), None);
        let chunks: Vec<Bytes> = streamed.body.map(|c| c.unwrap()).collect().await;
        assert_eq!(chunks.concat(), expected);
        assert!(streamed.failure.get().is_none());
    }

    /// A tree check that answers `unchanged`, counts its calls, and
    /// expects `skills/b/SKILL.md` to hash to `expected` when set.
    struct Check {
        unchanged: bool,
        calls: std::sync::atomic::AtomicUsize,
        expected: Option<[u8; 32]>,
    }

    impl TreeCheck for Check {
        fn unchanged(&self) -> Result<bool, crate::ports::BoxError> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(self.unchanged)
        }

        fn expected_sha256(&self, path: &str) -> Option<[u8; 32]> {
            self.expected.filter(|_| path == "skills/b/SKILL.md")
        }
    }

    #[tokio::test]
    async fn a_recent_file_read_in_place_is_verified_by_its_bytes_as_it_is_streamed() {
        let dir = tree();
        let entries = plan_tree(dir.path()).unwrap();
        let sha = crate::domain::digest::sha256;
        for (expected, whole) in [(sha(b"# b\n"), true), (sha(b"# b, half-written"), false)] {
            let check = Arc::new(Check {
                unchanged: true,
                calls: Default::default(),
                expected: Some(expected),
            });
            let streamed = stream_tree_tar(
                dir.path().to_owned(),
                entries.clone(),
                7,
                "seal".into(),
                Some(check),
            );
            let items: Vec<io::Result<Bytes>> = streamed.body.collect().await;
            assert_eq!(items.iter().all(Result::is_ok), whole);
            assert_eq!(
                streamed.failure.get().map(String::as_str),
                (!whole).then_some(crate::adapters::tartree::TREE_CHANGED)
            );
        }
    }

    #[tokio::test]
    async fn a_tree_read_in_place_is_checked_before_its_seal_and_is_cut_there_when_it_changed() {
        let dir = tree();
        let entries = plan_tree(dir.path()).unwrap();
        for unchanged in [true, false] {
            let check = Arc::new(Check {
                unchanged,
                calls: Default::default(),
                expected: None,
            });
            let streamed = stream_tree_tar(
                dir.path().to_owned(),
                entries.clone(),
                7,
                "seal".into(),
                Some(check.clone()),
            );
            let items: Vec<io::Result<Bytes>> = streamed.body.collect().await;
            assert_eq!(check.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
            let (bytes, errors): (Vec<_>, Vec<_>) = items.into_iter().partition(Result::is_ok);
            let bytes: Vec<u8> = bytes.into_iter().flat_map(|b| b.unwrap()).collect();
            let mut names = Vec::new();
            let mut archive = tar::Archive::new(bytes.as_slice());
            for entry in archive.entries().unwrap() {
                let Ok(entry) = entry else { break };
                names.push(entry.path().unwrap().display().to_string());
            }
            if unchanged {
                assert!(errors.is_empty());
                assert!(names.contains(&"skills/b/SKILL.md".to_owned()), "{names:?}");
                assert_eq!(names.last().map(String::as_str), Some("seal"));
                assert!(streamed.failure.get().is_none());
            } else {
                assert_eq!(errors.len(), 1, "the stream ends in an error");
                assert!(!names.contains(&"seal".to_owned()), "{names:?}");
                assert_eq!(
                    streamed.failure.get().map(String::as_str),
                    Some(crate::adapters::tartree::TREE_CHANGED)
                );
            }
        }
    }

    #[test]
    fn concatenated_archives_read_back_as_regular_files_only() {
        let mut one = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o600);
        h.set_entry_type(tar::EntryType::Regular);
        one.append_data(&mut h, "./a/plugin.yaml", &b"x: 1"[..3])
            .unwrap();
        let mut fifo = tar::Header::new_gnu();
        fifo.set_entry_type(tar::EntryType::Fifo);
        fifo.set_size(0);
        one.append_data(&mut fifo, "./b/plugin.yaml", io::empty())
            .unwrap();
        let mut bytes = one.into_inner().unwrap();
        let mut two = tar::Builder::new(Vec::new());
        let mut big = tar::Header::new_gnu();
        big.set_size(10);
        big.set_entry_type(tar::EntryType::Regular);
        two.append_data(&mut big, "c/plugin.yaml", &[b'y'; 10][..])
            .unwrap();
        let mut small = tar::Header::new_gnu();
        small.set_size(1);
        small.set_mode(0o644);
        small.set_entry_type(tar::EntryType::Regular);
        two.append_data(&mut small, "configs/CLAUDE.md", &b"z"[..])
            .unwrap();
        bytes.extend(two.into_inner().unwrap());

        let files = read_files(&bytes, 5).unwrap();
        assert_eq!(
            files,
            vec![
                ReadFile {
                    path: "a/plugin.yaml".into(),
                    mode: 0o600,
                    content: b"x: ".to_vec()
                },
                ReadFile {
                    path: "configs/CLAUDE.md".into(),
                    mode: 0o644,
                    content: b"z".to_vec()
                },
            ]
        );
        assert!(read_files(&[], 5).unwrap().is_empty());
    }
}
