//! Streams a finished file (a packed archive) as a response body with
//! bounded memory: one chunk in flight per connection.
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
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::Stream;
use tokio::task::JoinHandle;

/// Bytes read per chunk: few syscalls, small per-connection memory.
pub const CHUNK: usize = 64 * 1024;

pub struct FileBody {
    file: Arc<File>,
    offset: u64,
    remaining: u64,
    pending: Option<JoinHandle<io::Result<Vec<u8>>>>,
    /// Cleared when the filesystem refuses `RWF_NOWAIT`.
    try_inline: bool,
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
        }
    }

    fn next_len(&self) -> usize {
        usize::try_from(self.remaining).map_or(CHUNK, |r| r.min(CHUNK))
    }

    /// The chunk read from the page cache without blocking, if it is there.
    #[cfg(target_os = "linux")]
    fn read_inline(&mut self) -> Option<io::Result<Vec<u8>>> {
        use rustix::io::{Errno, ReadWriteFlags, preadv2};
        let mut buf = vec![0u8; self.next_len()];
        match preadv2(
            &*self.file,
            &mut [io::IoSliceMut::new(&mut buf)],
            self.offset,
            ReadWriteFlags::NOWAIT,
        ) {
            Ok(n) => {
                buf.truncate(n);
                Some(Ok(buf))
            }
            Err(Errno::AGAIN) => None,
            Err(Errno::OPNOTSUPP | Errno::INVAL | Errno::NOSYS) => {
                self.try_inline = false;
                None
            }
            Err(e) => Some(Err(e.into())),
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn read_inline(&mut self) -> Option<io::Result<Vec<u8>>> {
        None
    }

    fn read_blocking(&self) -> JoinHandle<io::Result<Vec<u8>>> {
        let file = Arc::clone(&self.file);
        let (offset, len) = (self.offset, self.next_len());
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len];
            let n = file.read_at(&mut buf, offset)?;
            buf.truncate(n);
            Ok(buf)
        })
    }

    fn advance(&mut self, read: io::Result<Vec<u8>>) -> Option<io::Result<Bytes>> {
        let chunk = match read {
            Ok(chunk) if chunk.is_empty() => {
                self.remaining = 0;
                return Some(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(chunk) => chunk,
            Err(e) => {
                self.remaining = 0;
                return Some(Err(e));
            }
        };
        self.offset += chunk.len() as u64;
        self.remaining = self.remaining.saturating_sub(chunk.len() as u64);
        Some(Ok(Bytes::from(chunk)))
    }
}

impl Stream for FileBody {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(pending) = &mut this.pending {
            let read =
                ready!(Pin::new(pending).poll(cx)).unwrap_or_else(|e| Err(io::Error::other(e)));
            this.pending = None;
            return Poll::Ready(this.advance(read));
        }
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        if this.try_inline
            && let Some(read) = this.read_inline()
        {
            return Poll::Ready(this.advance(read));
        }
        this.pending = Some(this.read_blocking());
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
    async fn a_file_shorter_than_promised_ends_in_an_error_not_a_short_body() {
        let body = FileBody::new(file_with(b"short"), 10);
        let error = collect(body).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
}
