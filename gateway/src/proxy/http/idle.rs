//! HTTP/1 connections that give back their buffers while they idle.
//!
//! hyper keeps an 8 KiB read buffer and an 8 KiB write buffer for the life of an HTTP/1
//! connection: two thirds of what an idle keep-alive connection costs. When nothing is in flight,
//! everything written has been flushed and no byte has moved for [`RELEASE_IDLE`], the connection
//! is taken back from hyper (`into_parts`, with any bytes hyper read but did not parse) and waits
//! for its next request holding only its TLS state. The first byte of that request builds a new
//! hyper connection on the same stream. The keep-alive limit stays `header_read_timeout` from
//! the moment the connection went idle.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::{Error, InFlight, Session};
use crate::transport_header::PrefixedIo;

/// How long an HTTP/1 connection must be idle before it gives back hyper's buffers.
pub(super) const RELEASE_IDLE: Duration = Duration::from_millis(250);

/// Requests of one connection whose responses have not been sent in full.
#[derive(Debug, Default)]
pub(super) struct Busy(Arc<AtomicUsize>);

impl Busy {
    /// One more request in flight until the guard drops (with its response body).
    pub(super) fn enter(&self) -> BusyGuard {
        self.0.fetch_add(1, Relaxed);
        BusyGuard(self.0.clone())
    }

    fn idle(&self) -> bool {
        self.0.load(Relaxed) == 0
    }
}

/// Held by a request (then its response body) while it is in flight.
#[derive(Debug)]
pub(super) struct BusyGuard(Arc<AtomicUsize>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// What the stream under hyper did: a count of reads and writes that moved bytes, whether a
/// write is still unflushed, and whether nothing was read since the last write (a partly read
/// request head makes that false: such a connection is not parked, so the head's deadline holds).
/// One writer (the connection's task): plain loads and stores.
#[derive(Debug)]
struct Activity {
    moved: AtomicU64,
    unflushed: AtomicBool,
    quiet: AtomicBool,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            moved: AtomicU64::new(0),
            unflushed: AtomicBool::new(false),
            quiet: AtomicBool::new(true),
        }
    }
}

impl Activity {
    fn moved(&self) {
        self.moved
            .store(self.moved.load(Relaxed).wrapping_add(1), Relaxed);
    }
}

/// The stream hyper serves on, watched.
struct Watched<IO> {
    io: IO,
    activity: Arc<Activity>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.moved();
            self.activity.quiet.store(false, Relaxed);
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        if matches!(polled, Poll::Ready(Ok(()))) {
            self.activity.unflushed.store(false, Relaxed);
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<IO> Watched<IO> {
    fn wrote(&self, polled: &Poll<io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            self.activity.moved();
            self.activity.unflushed.store(true, Relaxed);
            self.activity.quiet.store(true, Relaxed);
        }
    }
}

/// Serves HTTP/1 on `io` until the peer closes, an error closes it, or the gateway drains;
/// releasing hyper's buffers whenever the connection idles.
pub(super) async fn serve<IO, S>(
    session: &Arc<Session>,
    builder: &http1::Builder,
    io: IO,
    service: S,
) -> Result<(), Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = InFlight> + Clone,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Arc::new(Activity::default());
    let mut drain = session.shared.drain.clone();
    let mut io = PrefixedIo::new(Bytes::new(), io);
    loop {
        let watched = Watched {
            io,
            activity: activity.clone(),
        };
        let mut conn = builder
            .serve_connection(TokioIo::new(watched), service.clone())
            .with_upgrades();
        let mut closing = false;
        let mut seen = activity.moved.load(Relaxed);
        loop {
            tokio::select! {
                result = &mut conn => return result.map_err(|e| Error::Http(e.into())),
                _ = session.close.notified(), if !closing => {
                    closing = true;
                    Pin::new(&mut conn).graceful_shutdown();
                }
                _ = drain.wait_for(|draining| *draining), if !closing => {
                    closing = true;
                    Pin::new(&mut conn).graceful_shutdown();
                }
                _ = tokio::time::sleep(RELEASE_IDLE), if !closing => {
                    let moved = activity.moved.load(Relaxed);
                    if moved == seen
                        && session.busy.idle()
                        && activity.quiet.load(Relaxed)
                        && !activity.unflushed.load(Relaxed)
                    {
                        break;
                    }
                    seen = moved;
                }
            }
        }
        // Idle: take the stream back. `None` only after an upgrade, which ended `conn` above.
        let Some(parts) = conn.into_parts() else {
            return Ok(());
        };
        let (prefix, mut inner) = parts.io.into_inner().io.into_parts();
        // An empty `read_buf` still owns hyper's whole read buffer: keep it only when it has
        // bytes to replay.
        let unparsed = join(parts.read_buf, prefix);
        if !unparsed.is_empty() {
            // Bytes hyper read but had not parsed (a pipelined request, read with the one
            // before). A new connection serves them; replaying them through the watched stream
            // makes it not quiet, so it is not parked again before it writes (a stalled head
            // keeps its deadline).
            io = PrefixedIo::new(unparsed, inner);
            continue;
        }
        drop(unparsed);
        let parked = Parked::new(&session.shared.metrics.parked);
        let keep_alive = session
            .shared
            .limits
            .header_read_timeout
            .saturating_sub(RELEASE_IDLE);
        let mut first = [0u8; 1];
        let woke = tokio::select! {
            read = tokio::time::timeout(keep_alive, inner.read(&mut first)) => {
                matches!(read, Ok(Ok(1)))
            }
            _ = session.close.notified() => false,
            _ = drain.wait_for(|draining| *draining) => false,
        };
        if !woke {
            // The peer closed or reset an idle connection, it idled past the keep-alive limit
            // (hyper closes it then too), or the gateway drains: a normal end.
            let _ = tokio::time::timeout(RELEASE_IDLE, inner.shutdown()).await;
            return Ok(());
        }
        drop(parked);
        io = PrefixedIo::new(Bytes::copy_from_slice(&first), inner);
    }
}

/// Counts a connection in `gateway_http1_parked_connections` while it lives.
struct Parked<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> Parked<'a> {
    fn new(gauge: &'a prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn join(first: Bytes, second: Bytes) -> Bytes {
    match (first.is_empty(), second.is_empty()) {
        (_, true) => first,
        (true, false) => second,
        (false, false) => {
            let mut joined = BytesMut::with_capacity(first.len() + second.len());
            joined.extend_from_slice(&first);
            joined.extend_from_slice(&second);
            joined.freeze()
        }
    }
}
