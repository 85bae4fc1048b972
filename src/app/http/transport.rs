//! The HTTP/1.1 transport under the poem application: how connections are
//! accepted, how long a client may take, and what it gets when it sends
//! something that is not HTTP.
//!
//! poem's own `Server` offers only an inactivity timeout that does not end
//! a stalled request, and no connection bound, so the accept loop lives
//! here, on hyper's HTTP/1 connection (the same one poem uses):
//!
//! * at most `max_connections` connections are open; more wait in the
//!   kernel's listen backlog (they are not accepted, hence not refused)
//!   until one closes;
//! * the request line and headers must arrive within
//!   `header_read_timeout` (hyper's header-read timer; it also bounds how
//!   long a kept-alive connection waits for its next request), or the
//!   connection is closed;
//! * a request body that pauses, or a client that stops reading a
//!   response, for `body_idle_timeout` ends the request: the body read
//!   fails (408) or the write does, and the connection is closed;
//! * a request hyper cannot parse (bad request line, a path that is not
//!   valid, oversize headers) gets the same JSON error body as every
//!   other error instead of hyper's empty one;
//! * on shutdown the listener is closed at once and requests in flight get
//!   up to the grace period to finish (see [`serve`]).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use poem::http::header::CONNECTION;
use poem::http::uri::Scheme;
use poem::http::{HeaderValue, StatusCode};
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Addr, Body, Endpoint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::app::http::problem::transport_error_json;

/// The request line and headers of one request, at most (→ 431).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// How long the accept loop rests after a failed accept (e.g. out of file
/// descriptors) instead of spinning on it.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The error of a request body read that waited `body_idle_timeout` for
/// data: the extractor answers 408 on it.
pub const BODY_IDLE_KIND: io::ErrorKind = io::ErrorKind::TimedOut;

/// What a client may cost (SPEC §6: bounded open connections).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains
/// (SPEC §12), all within `grace` of the signal:
///
/// 1. the listener is closed: new connections are refused;
/// 2. requests in flight run on, and connections already open may still
///    send one request each, answered with `connection: close`, until no
///    request is running;
/// 3. every connection is then closed once its response is written (idle
///    ones at once);
/// 4. what still runs when the grace is over is cut.
pub async fn serve<E>(
    listener: TcpListener,
    app: E,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> io::Result<()>
where
    E: Endpoint + 'static,
{
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, max_connections = limits.max_connections, "listening");
    let app = Arc::new(app);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let stop = CancellationToken::new();
    let requests = Arc::new(InFlight::default());
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // A slot first: over the bound the next connection stays in the
        // backlog, costing this process nothing.
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        while let Some(done) = connections.try_join_next() {
            log_panic(done);
        }
        connections.spawn(connection(
            stream,
            local,
            remote,
            Handler {
                app: app.clone(),
                requests: requests.clone(),
            },
            limits,
            stop.clone(),
            permit,
        ));
    }
    let deadline = Instant::now() + grace;
    // Closing the socket refuses new connections (and resets those still
    // in the kernel's backlog).
    drop(listener);
    requests.draining.store(true, Ordering::SeqCst);
    tracing::info!(
        running = requests.running(),
        open = connections.len(),
        grace = %humantime::format_duration(grace),
        "shutting down: no new connections; requests in flight may finish"
    );
    if tokio::time::timeout_at(deadline, requests.none_running())
        .await
        .is_err()
    {
        tracing::warn!(
            running = requests.running(),
            "shutdown grace period over: cutting the requests still running"
        );
    }
    stop.cancel();
    let drained = tokio::time::timeout_at(deadline, async {
        while let Some(done) = connections.join_next().await {
            log_panic(done);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "shutdown grace period over: closing the remaining connections"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// The requests being handled, and whether the server drains.
#[derive(Default)]
struct InFlight {
    running: watch::Sender<usize>,
    draining: AtomicBool,
}

impl InFlight {
    fn start(self: &Arc<Self>) -> Running {
        self.running.send_modify(|n| *n += 1);
        Running(self.clone())
    }

    fn running(&self) -> usize {
        *self.running.borrow()
    }

    /// Returns once no request is running.
    async fn none_running(&self) {
        let mut running = self.running.subscribe();
        // The sender lives in `self`, so the wait cannot fail.
        let _ = running.wait_for(|n| *n == 0).await;
    }
}

/// One request being handled (until its handler has answered; a response
/// body still streaming is covered by the connection's own drain).
struct Running(Arc<InFlight>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.send_modify(|n| *n -= 1);
    }
}

/// The application and the count of its requests, shared by connections.
struct Handler<E> {
    app: Arc<E>,
    requests: Arc<InFlight>,
}

fn log_panic(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!(error = %e, "a connection task panicked");
    }
}

async fn connection<E>(
    stream: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
    handler: Handler<E>,
    limits: Limits,
    stop: CancellationToken,
    _slot: OwnedSemaphorePermit,
) where
    E: Endpoint + 'static,
{
    let idle = limits.body_idle_timeout;
    let service = hyper::service::service_fn(move |req: poem::http::Request<Incoming>| {
        let app = handler.app.clone();
        let requests = handler.requests.clone();
        async move {
            let _running = requests.start();
            let has_body = !req.body().is_end_stream();
            let mut req = poem::Request::from((
                req,
                LocalAddr(Addr::SocketAddr(local)),
                RemoteAddr(Addr::SocketAddr(remote)),
                Scheme::HTTP,
            ));
            if has_body {
                let body = req.take_body().into_bytes_stream();
                req.set_body(Body::from_bytes_stream(IdleBody::new(Box::pin(body), idle)));
            }
            let mut response = hyper::Response::from(app.get_response(req).await);
            if requests.draining.load(Ordering::SeqCst) {
                // Draining: this connection serves no further request.
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(response)
        }
    });
    let io = TokioIo::new(ClientIo::new(stream, idle));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(MAX_HEADER_BYTES)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stop.cancelled() => {
            // Finish the response being written, then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(remote = %remote, error = %e, "connection closed on an error");
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// A request body that fails once no data has come for `idle`.
struct IdleBody {
    inner: ByteStream,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    failed: bool,
}

impl IdleBody {
    fn new(inner: ByteStream, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            failed: false,
        }
    }
}

impl Stream for IdleBody {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        // Data that has arrived wins over a timer that has run out.
        if let Poll::Ready(item) = this.inner.as_mut().poll_next(cx) {
            this.timer.as_mut().reset(Instant::now() + this.idle);
            return Poll::Ready(item);
        }
        ready!(this.timer.as_mut().poll(cx));
        this.failed = true;
        Poll::Ready(Some(Err(io::Error::new(
            BODY_IDLE_KIND,
            "no request body data within the body idle timeout",
        ))))
    }
}

/// The client's socket as hyper sees it: a write the client does not
/// read for `idle` fails, and hyper's own answer to an unparsable request
/// is replaced by a JSON one.
struct ClientIo {
    inner: TcpStream,
    idle: Duration,
    /// Armed while a write waits for the client to read.
    stalled: Option<Pin<Box<Sleep>>>,
    /// A replacement response being written in place of hyper's.
    replacing: Option<Replacement>,
}

struct Replacement {
    bytes: Vec<u8>,
    written: usize,
    /// The length of the buffer it replaces: what hyper is told was written.
    replaces: usize,
}

impl ClientIo {
    fn new(inner: TcpStream, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            stalled: None,
            replacing: None,
        }
    }

    /// A write's outcome, failing it once the client has not read for
    /// `idle` while it waits.
    fn progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        attempt: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match attempt {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let idle = self.idle;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                ready!(timer.as_mut().poll(cx));
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client stopped reading the response",
                )))
            }
        }
    }

    fn poll_send(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let attempt = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(cx, attempt)
    }

    /// Writes what is left of the replacement, if any.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(mut replacement) = self.replacing.take() else {
            return Poll::Ready(Ok(()));
        };
        while replacement.written < replacement.bytes.len() {
            let rest = &replacement.bytes[replacement.written..];
            match self.poll_send(cx, rest) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => replacement.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    self.replacing = Some(replacement);
                    return Poll::Pending;
                }
            }
        }
        // Kept until hyper's next write of the buffer it replaces, which
        // is then reported written.
        self.replacing = Some(replacement);
        Poll::Ready(Ok(()))
    }
}

/// hyper's own answer to a request it could not parse: a bare head (status
/// line, `content-length: 0`, maybe `date`) with status 400, 414 or 431 and
/// nothing else in the buffer. The application never answers an error
/// without a JSON body, so nothing it writes looks like this.
fn automatic_error_status(buf: &[u8]) -> Option<StatusCode> {
    let head = std::str::from_utf8(buf).ok()?.strip_suffix("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let code = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))?
        .get(..3)?;
    let status = match code {
        "400" => StatusCode::BAD_REQUEST,
        "414" => StatusCode::URI_TOO_LONG,
        "431" => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        _ => return None,
    };
    let mut empty = false;
    for line in lines {
        let line = line.to_ascii_lowercase();
        if line == "content-length: 0" {
            empty = true;
        } else if !(line.starts_with("date: ") || line == "connection: close") {
            return None;
        }
    }
    empty.then_some(status)
}

/// The JSON answer that replaces hyper's bare one.
fn replacement(status: StatusCode) -> Option<Vec<u8>> {
    let body = transport_error_json(status, MAX_HEADER_BYTES)?;
    Some(
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len(),
        )
        .into_bytes(),
    )
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none()
            && let Some(bytes) = automatic_error_status(buf).and_then(replacement)
        {
            this.replacing = Some(Replacement {
                bytes,
                written: 0,
                replaces: buf.len(),
            });
        }
        if this.replacing.is_some() {
            ready!(this.poll_replacement(cx))?;
            let replaces = this.replacing.take().map_or(0, |r| r.replaces);
            return Poll::Ready(Ok(replaces));
        }
        this.poll_send(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // hyper's bare error head is one buffer; anything longer is a
        // response of the application, passed through as it is.
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next())
            && (this.replacing.is_some() || automatic_error_status(only).is_some())
        {
            return Pin::new(this).poll_write(cx, only);
        }
        let attempt = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progress(cx, attempt)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bare_400_414_or_431_head_is_hypers_own_answer() {
        let date = "date: Tue, 01 Dec 2026 10:00:00 GMT";
        for (head, expected) in [
            (
                format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n{date}\r\n\r\n"),
                Some(StatusCode::BAD_REQUEST),
            ),
            (
                "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n".into(),
                Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            ),
            (
                format!("HTTP/1.0 414 URI Too Long\r\n{date}\r\ncontent-length: 0\r\n\r\n"),
                Some(StatusCode::URI_TOO_LONG),
            ),
            // The application's errors carry a body and a content type.
            (
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 30\r\n\r\n".into(),
                None,
            ),
            // A head followed by a body is not a bare head.
            (
                "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}".into(),
                None,
            ),
            (
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".into(),
                None,
            ),
            (
                "HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n".into(),
                None,
            ),
            ("HTTP/1.1 400 Bad Request\r\n\r\n".into(), None),
            (String::new(), None),
        ] {
            assert_eq!(automatic_error_status(head.as_bytes()), expected, "{head:?}");
        }
    }

    #[test]
    fn the_replacement_is_a_complete_json_response_that_closes() {
        let bytes = replacement(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("\r\ncontent-type: application/json"));
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())));
        assert!(head.contains("\r\nconnection: close"));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(json["error"].as_str().unwrap().contains("65536"), "{json}");
        assert_eq!(replacement(StatusCode::NOT_FOUND), None);
    }
}
