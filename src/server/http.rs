//! The API listener's HTTP/1.1 server: hyper's connection builder driven directly (rather
//! than `axum::serve`), with WebSocket upgrades, the peer address for `ConnectInfo`,
//! `TCP_NODELAY`, and a graceful stop: on `stop` the listener closes, every connection
//! finishes its in-flight request and closes, and [`serve`] returns once all have.
//!
//! Why: hyper writes (and flushes) every response as soon as it is ready, so a client
//! pipelining N requests costs N `writev`s; hyper's `pipeline_flush` sends the answers to
//! everything one read brought in with one. That setting has one flaw: the automatic
//! `400` for a request hyper cannot parse stays in its buffer (it waits for the unparsed
//! bytes to be consumed) and the client would see a bare close. So the connection's socket
//! is shared ([`SharedTcp`]) and, when hyper gives up on a request it could not parse,
//! the server writes the `400` (or `431`) itself before closing.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::extract::ConnectInfo;
use axum::Router;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::admission::{IpLimits, Refusal};
use ipnet::IpNet;

/// What the listener enforces before a request reaches the router.
pub struct Limits {
    /// `server.max_request_head_bytes`.
    pub max_head_bytes: usize,
    /// Per-client-IP connection limits (`[admission]`), for peers that are not trusted
    /// proxies (a proxy's connections carry many clients; those are limited at the
    /// WebSocket upgrade by their forwarded address).
    pub ip_limits: Arc<IpLimits>,
    pub trusted_proxies: Vec<IpNet>,
}

/// Serves `router` on `listener` until `stop`, then drains the open connections.
pub async fn serve(listener: TcpListener, router: Router, stop: CancellationToken, limits: Limits) {
    let max_head_bytes = limits.max_head_bytes;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .pipeline_flush(true)
        // The read buffer: a request head larger than this gets 431 (hyper's default,
        // ~400 KB, let one slow unauthenticated client hold that much).
        .max_buf_size(max_head_bytes.max(8192))
        .timer(TokioTimer::new())
        // A client has this long to send a request's headers.
        .header_read_timeout(std::time::Duration::from_secs(30));
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little instead of
                    // spinning on the error.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let peer_ip = peer.ip();
        let guard = if limits.trusted_proxies.iter().any(|n| n.contains(&peer_ip)) {
            None
        } else {
            match limits.ip_limits.admit(peer_ip) {
                Ok(g) => Some(g),
                Err(refusal) => {
                    refusal.record();
                    tracker.spawn(refuse(tcp, refusal));
                    continue;
                }
            }
        };
        // A response is one write, and Nagle's algorithm would hold the next one (a
        // pipelined request's, or a WebSocket frame's) until the client's delayed ACK,
        // ~40 ms later.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let tcp = Arc::new(tcp);
        let malformed_body = Arc::new(AtomicU8::new(0));
        let svc = router.clone().map_request({
            let malformed_body = malformed_body.clone();
            move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                let flag = malformed_body.clone();
                req.map(|body| {
                    axum::body::Body::new(body.map_err(move |e| {
                        flag.store(framing_error(&e) as u8, Ordering::Relaxed);
                        e
                    }))
                })
            }
        });
        let conn = builder
            .serve_connection(
                TokioIo::new(SharedTcp(tcp.clone())),
                TowerToHyperService::new(svc),
            )
            .with_upgrades();
        let stop = stop.clone();
        tracker.spawn(async move {
            // The client's slot is held for the connection's life, upgrades included.
            let _slot = guard;
            let _counted = crate::telemetry::memory::ConnectionSlot::open();
            let mut conn = std::pin::pin!(conn);
            let r = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = &r {
                if e.is_parse() {
                    answer_parse_error(&tcp, e).await;
                } else {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
            } else {
                let framing = malformed_body.load(Ordering::Relaxed);
                if framing != BodyFraming::Fine as u8 {
                    // hyper stopped at a request body it could not decode and ended the
                    // connection without answering that request: answer it here.
                    answer_malformed_body(&tcp, framing == BodyFraming::TooLarge as u8).await;
                }
            }
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

/// Answers a request hyper could not parse (see the module documentation), then the
/// connection closes.
async fn answer_parse_error(tcp: &TcpStream, e: &hyper::Error) {
    let status = if e.is_parse_too_large() {
        "431 Request Header Fields Too Large"
    } else {
        "400 Bad Request"
    };
    tracing::debug!(error = %e, "unparseable request");
    let resp = format!("HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
    answer_and_close(tcp, resp.as_bytes(), 0).await;
}

/// How a request body's chunked framing failed, if it did.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum BodyFraming {
    /// Fine, or the client went away (nothing to answer).
    Fine = 0,
    /// Over one of hyper's limits (a chunk size or chunk extensions too large).
    TooLarge = 1,
    /// Not valid chunked encoding.
    Malformed = 2,
}

/// hyper reports a chunked body over its limits as invalid data and broken chunk syntax as
/// invalid input; a client that went away is neither.
fn framing_error(e: &hyper::Error) -> BodyFraming {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::InvalidData => BodyFraming::TooLarge,
                io::ErrorKind::InvalidInput => BodyFraming::Malformed,
                _ => BodyFraming::Fine,
            };
        }
        source = err.source();
    }
    BodyFraming::Fine
}

/// Answers a request whose chunked body hyper refused with `413 payload_too_large` (over a
/// limit, e.g. chunk extensions over 16 KiB) or `400 invalid_body` (broken chunk syntax),
/// then closes, reading what the client still sends for a moment so the answer is not lost
/// to a reset.
async fn answer_malformed_body(tcp: &TcpStream, too_large: bool) {
    tracing::debug!(
        too_large,
        "request body with malformed or oversized chunked framing"
    );
    let (status, title, code, detail) = if too_large {
        (
            413,
            "Payload Too Large",
            "payload_too_large",
            "the request body's chunked framing is over a limit",
        )
    } else {
        (
            400,
            "Bad Request",
            "invalid_body",
            "the request body is not valid chunked encoding",
        )
    };
    let resp = problem_answer(status, title, code, detail, None);
    answer_and_close(tcp, resp.as_bytes(), 1024 * 1024).await;
}

/// Answers a connection refused at `accept` with `429` and closes it, without reading a
/// request: the answer is written at once, then whatever the client sends meanwhile is
/// read and dropped for a moment so that closing does not reset the connection before the
/// client has read the answer.
async fn refuse(tcp: TcpStream, refusal: Refusal) {
    let resp = problem_answer(
        429,
        "Too Many Requests",
        refusal.code(),
        refusal.detail(),
        Some(refusal.retry_after_secs()),
    );
    answer_and_close(&tcp, resp.as_bytes(), 16 * 1024).await;
}

/// An `application/problem+json` answer that closes the connection, for the answers the
/// listener writes itself (no router behind them). `detail` must need no JSON escaping.
fn problem_answer(
    status: u16,
    title: &str,
    code: &str,
    detail: &str,
    retry_after: Option<u64>,
) -> String {
    let body = format!(
        "{{\"type\":\"about:blank\",\"title\":\"{title}\",\"status\":{status},\"code\":\"{code}\",\"detail\":\"{detail}\"}}"
    );
    let retry = retry_after.map_or(String::new(), |s| format!("retry-after: {s}\r\n"));
    format!(
        "HTTP/1.1 {status} {title}\r\ncontent-type: application/problem+json\r\n{retry}connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Writes an answer the listener makes itself, ends the write side, then reads and drops
/// up to `drain` bytes the client still sends (so that closing with unread data does not
/// reset the connection before the client has read the answer). At most half a second
/// (a second when nothing is drained); the caller then closes the connection.
async fn answer_and_close(tcp: &TcpStream, resp: &[u8], drain: usize) {
    let answer = async {
        let mut sent = 0;
        while sent < resp.len() {
            tcp.writable().await?;
            match tcp.try_write(&resp[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Write)?;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < drain {
            tcp.readable().await?;
            match tcp.try_read(&mut sink) {
                Ok(0) => break,
                Ok(n) => drained += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok::<(), io::Error>(())
    };
    let limit = if drain == 0 { 1000 } else { 500 };
    let _ = tokio::time::timeout(std::time::Duration::from_millis(limit), answer).await;
}

/// A connection's socket, shared between hyper (and, after an upgrade, the WebSocket) and
/// the task serving the connection.
pub struct SharedTcp(pub Arc<TcpStream>);

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // No half-close: the socket closes (FIN) when its last holder drops it, right
        // after — and after the serving task has had its chance to answer a request hyper
        // could not parse.
        Poll::Ready(Ok(()))
    }
}
