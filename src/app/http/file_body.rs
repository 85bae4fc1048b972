//! Streams a finished file (a packed archive) as a response body with
//! bounded memory: at most two chunks per connection held by the server,
//! read into reused buffers; the next read waits while two are held.
//!
//! `tokio::fs::File` hands every read to the blocking pool, a thread hop
//! per chunk that halves throughput on a fast loopback. Cached archives are
//! usually in the page cache, so on Linux each chunk is first read inline
//! with `RWF_NOWAIT` (which never blocks: it fails with `EAGAIN` when the
//! data would need the disk); only then does the read go to the blocking
//! pool.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::Stream;
use futures_util::task::AtomicWaker;
use tokio::task::JoinHandle;

/// Bytes read per chunk: few syscalls, small per-connection memory.
pub const CHUNK: usize = 64 * 1024;

/// Chunks handed to the server and not yet dropped by it. hyper either
/// copies a chunk into its own bounded write buffer and drops it at once
/// (what it does over poem's connections, which are not vectored), or
/// queues the chunk itself until written; this bound keeps the second case
/// from queueing every chunk read. 64 KiB chunks: 128 KiB ones measured
/// half again as much peak memory under 64 concurrent downloads, for no
/// gain in speed.
const MAX_IN_FLIGHT: usize = 2;

pub struct FileBody {
    file: Arc<File>,
    offset: u64,
    remaining: u64,
    pending: Option<JoinHandle<(Vec<u8>, io::Result<usize>)>>,
    /// Cleared when the filesystem refuses `RWF_NOWAIT`.
    try_inline: bool,
    chunks: Arc<InFlight>,
}

/// What a connection's chunks share with the body that read them.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    /// Woken when a chunk has been written out.
    waker: AtomicWaker,
    /// Buffers of chunks written out, read into again (no allocation, no
    /// zeroing per chunk).
    spare: Mutex<Vec<Vec<u8>>>,
}

/// One chunk of the file; dropping it (the server wrote it) frees a slot
/// and hands its buffer back.
struct Chunk {
    buf: Vec<u8>,
    filled: usize,
    chunks: Arc<InFlight>,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.filled]
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if let Ok(mut spare) = self.chunks.spare.lock() {
            spare.push(buf);
        }
        self.chunks.count.fetch_sub(1, Ordering::AcqRel);
        self.chunks.waker.wake();
    }
}

impl FileBody {
    /// Streams exactly `len` bytes of `file` from its start; a file that
    /// turns out shorter ends the stream with an error, never short.
    pub fn new(file: File, len: u64) -> Self {
        Self {
            file: Arc::new(file),
            offset: 0,
            remaining: len,
            pending: None,
            try_inline: cfg!(target_os = "linux"),
            chunks: Arc::default(),
        }
    }

    /// A buffer of the next chunk's length, reused when one is spare.
    fn buffer(&self) -> Vec<u8> {
        let len = usize::try_from(self.remaining).map_or(CHUNK, |r| r.min(CHUNK));
        let spare = self.chunks.spare.lock().ok().and_then(|mut s| s.pop());
        let mut buf = spare.unwrap_or_default();
        buf.resize(len, 0);
        buf
    }

    /// The chunk read from the page cache without blocking, if it is there.
    #[cfg(target_os = "linux")]
    fn read_inline(&mut self, mut buf: Vec<u8>) -> Result<(Vec<u8>, io::Result<usize>), Vec<u8>> {
        use rustix::io::{Errno, ReadWriteFlags, preadv2};
        match preadv2(
            &*self.file,
            &mut [io::IoSliceMut::new(&mut buf)],
            self.offset,
            ReadWriteFlags::NOWAIT,
        ) {
            Ok(n) => Ok((buf, Ok(n))),
            Err(Errno::AGAIN) => Err(buf),
            Err(Errno::OPNOTSUPP | Errno::INVAL | Errno::NOSYS) => {
                self.try_inline = false;
                Err(buf)
            }
            Err(e) => Ok((buf, Err(e.into()))),
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn read_inline(&mut self, buf: Vec<u8>) -> Result<(Vec<u8>, io::Result<usize>), Vec<u8>> {
        Err(buf)
    }

    fn read_blocking(&self, mut buf: Vec<u8>) -> JoinHandle<(Vec<u8>, io::Result<usize>)> {
        let file = Arc::clone(&self.file);
        let offset = self.offset;
        tokio::task::spawn_blocking(move || {
            let read = file.read_at(&mut buf, offset);
            (buf, read)
        })
    }

    fn advance(&mut self, (buf, read): (Vec<u8>, io::Result<usize>)) -> Option<io::Result<Bytes>> {
        let filled = match read {
            Ok(0) => {
                self.remaining = 0;
                return Some(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(n) => n,
            Err(e) => {
                self.remaining = 0;
                return Some(Err(e));
            }
        };
        self.offset += filled as u64;
        self.remaining = self.remaining.saturating_sub(filled as u64);
        self.chunks.count.fetch_add(1, Ordering::AcqRel);
        Some(Ok(Bytes::from_owner(Chunk {
            buf,
            filled,
            chunks: Arc::clone(&self.chunks),
        })))
    }

    /// True when as many chunks as allowed are still unwritten; the task is
    /// then woken when one is.
    fn must_wait(&self, cx: &Context<'_>) -> bool {
        let full = || self.chunks.count.load(Ordering::Acquire) >= MAX_IN_FLIGHT;
        if !full() {
            return false;
        }
        self.chunks.waker.register(cx.waker());
        // Checked again: a chunk dropped before `register` woke nobody.
        full()
    }
}

impl Stream for FileBody {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(pending) = &mut this.pending {
            let read = ready!(Pin::new(pending).poll(cx))
                .unwrap_or_else(|e| (Vec::new(), Err(io::Error::other(e))));
            this.pending = None;
            return Poll::Ready(this.advance(read));
        }
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        if this.must_wait(cx) {
            return Poll::Pending;
        }
        let mut buf = this.buffer();
        if this.try_inline {
            match this.read_inline(buf) {
                Ok(read) => return Poll::Ready(this.advance(read)),
                Err(unused) => buf = unused,
            }
        }
        this.pending = Some(this.read_blocking(buf));
        // Poll once so the join handle registers this task's waker.
        self.poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::io::Write;

    async fn collect(body: FileBody) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    fn file_with(bytes: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        file
    }

    #[tokio::test]
    async fn streams_exactly_the_file_across_chunk_boundaries() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let body = FileBody::new(file_with(&bytes), len as u64);
            assert_eq!(collect(body).await.unwrap(), bytes, "len {len}");
        }
    }

    #[tokio::test]
    async fn the_blocking_path_streams_the_same_bytes() {
        let bytes: Vec<u8> = (0..2 * CHUNK + 5).map(|i| (i % 13) as u8).collect();
        let mut body = FileBody::new(file_with(&bytes), bytes.len() as u64);
        body.try_inline = false;
        assert_eq!(collect(body).await.unwrap(), bytes);
    }

    #[tokio::test]
    async fn no_chunk_is_read_while_two_are_still_unwritten() {
        use futures_util::FutureExt;
        let bytes: Vec<u8> = (0..5 * CHUNK).map(|i| (i % 7) as u8).collect();
        let mut body = FileBody::new(file_with(&bytes), bytes.len() as u64);
        let first = body.next().await.unwrap().unwrap();
        let second = body.next().await.unwrap().unwrap();
        assert!(body.next().now_or_never().is_none(), "a third must wait");
        drop(first);
        let third = body.next().await.unwrap().unwrap();
        assert_eq!(third[..], bytes[2 * CHUNK..3 * CHUNK]);
        drop((second, third));
        let rest = collect(body).await.unwrap();
        assert_eq!(rest[..], bytes[3 * CHUNK..]);
    }

    #[tokio::test]
    async fn a_file_shorter_than_promised_ends_in_an_error_not_a_short_body() {
        let body = FileBody::new(file_with(b"short"), 10);
        let error = collect(body).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
}
