//! The accept loop under [`super::serve`]: hyper's HTTP/1 connection with a
//! timer, so that no client holds the server by being slow or by being many.
//!
//! `axum::serve` (0.8) builds hyper-util's `auto::Builder` without a timer:
//! hyper's default `header_read_timeout` of 30 s needs one and is skipped
//! without it (`Time::check`: "has default, but no timer set"), the auto
//! builder's version sniffing waits for a first byte with no deadline, idle
//! keep-alive connections stay open for good, no write has a deadline, and
//! every accepted connection gets a task with no cap. Here:
//! - headers must arrive within `--client-timeout` of the connection or of the
//!   previous response (hyper's `header_read_timeout` with a [`TokioTimer`]):
//!   a silent, slow or idle keep-alive connection is closed after it;
//! - the body gets the same deadline in the handler (`POST /v1/stylize`
//!   answers 408 when its form is not in by then);
//! - at most `--max-connections` live connections (a [`Semaphore`]); one more
//!   is answered a canned 503 if it can be written at once, and closed, never
//!   queued (`adain_connections_refused_total` in `/metrics`);
//! - a write that makes no progress for `--client-timeout` (a client that
//!   does not read its answer) fails, and the connection is closed;
//! - on shutdown the listener is dropped first, idle connections close,
//!   requests in flight finish.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::Service;

use super::AppState;

/// One live connection, shared by its task and (as a request extension) by a
/// WebSocket it upgrades to: the connection counts against
/// `--max-connections` until both are done.
#[derive(Clone)]
pub struct LiveConnection(#[allow(dead_code)] Arc<Live>);

pub struct Live {
    _permit: OwnedSemaphorePermit,
    state: Arc<AppState>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.state
            .metrics
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a connection over the cap gets, if the socket takes it at once.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\n\
content-length: 60\r\n\r\n{\"error\": \"server busy: too many connections, retry in 1 s\"}";

/// Accepts until `stop` resolves, then stops accepting (the listener is
/// dropped), asks every connection to finish its request in flight and close,
/// and returns when they have.
pub async fn run(
    listener: TcpListener,
    router: Router,
    state: Arc<AppState>,
    stop: impl Future<Output = ()>,
) {
    let cap = Arc::new(Semaphore::new(state.config.max_connections));
    // `true` once shutting down; each connection task holds a receiver,
    // so the sender's `closed()` is "every connection is done"
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut stop = std::pin::pin!(stop);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // out of file descriptors and the like: wait, do not spin
                    tracing::error!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let Ok(permit) = cap.clone().try_acquire_owned() else {
            refuse(stream, &state);
            continue;
        };
        state
            .metrics
            .connections_open
            .fetch_add(1, Ordering::Relaxed);
        let live = LiveConnection(Arc::new(Live {
            _permit: permit,
            state: state.clone(),
        }));
        tokio::spawn(connection(
            stream,
            router.clone(),
            live,
            state.config.client_timeout,
            stop_rx.clone(),
        ));
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    stop_tx.closed().await;
}

async fn connection(
    stream: TcpStream,
    router: Router,
    live: LiveConnection,
    client_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let metrics_state = live.0.state.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(live.clone());
        router.clone().call(req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(client_timeout);
    let conn = builder
        .serve_connection(
            TokioIo::new(WriteDeadline::new(stream, client_timeout)),
            service,
        )
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    if e.is_timeout() || stalled_write(&e) {
                        metrics_state.metrics.client_timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::debug!("connection: {e}");
                }
                break;
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                conn.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
    }
}

/// A socket whose writes fail once they have made no progress for `limit`:
/// a client that stops reading cannot hold its connection, and the answer
/// buffered for it, for longer than that.
struct WriteDeadline {
    io: TcpStream,
    limit: Duration,
    /// Set while a write is pending; cleared by any progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WriteDeadline {
    fn new(io: TcpStream, limit: Duration) -> WriteDeadline {
        WriteDeadline {
            io,
            limit,
            stalled: None,
        }
    }

    /// `r` from a write: progress clears the deadline; pending starts it (or
    /// fails once it has passed).
    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.limit;
                let sleep = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client read nothing for --client-timeout",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A connection over `--max-connections`: whatever request already arrived
/// is read (so that closing sends a FIN, not a reset that would discard the
/// answer), a 503 written if the socket takes it now, and the socket closed.
/// Nothing waits: a flood of connections costs a few syscalls each.
fn refuse(stream: TcpStream, state: &AppState) {
    let n = state
        .metrics
        .connections_refused
        .fetch_add(1, Ordering::Relaxed);
    if n.is_multiple_of(1000) {
        tracing::warn!(
            "--max-connections {} reached: refusing connections ({} so far)",
            state.config.max_connections,
            n + 1
        );
    }
    let mut buf = [0u8; 8192];
    let _ = stream.try_read(&mut buf);
    let _ = stream.try_write(BUSY);
    if let Ok(s) = stream.into_std() {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
}

/// A [`WriteDeadline`] that passed, somewhere in `e`'s sources.
fn stalled_write(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = s.source();
    }
    false
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_busy_answer_declares_its_length() {
        let s = std::str::from_utf8(super::BUSY).unwrap();
        let (head, body) = s.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(v["error"]
            .as_str()
            .unwrap()
            .contains("too many connections"));
    }
}
