//! The connections of one endpoint: idle HTTP/1.1 keep-alive connections (newest reused first,
//! dropped after `pool_idle_timeout`) and one multiplexed HTTP/2 connection, and the client
//! handshakes that make them. Choosing the endpoint is `balance`'s; dialling it `connect`'s.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::Options;
use super::body::Body;
use super::version::Sniffed;

/// Most idle HTTP/1 connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 256;

/// An HTTP/1 read buffer that holds a header section of `max_header_list_size` plus the request
/// or status line (hyper's minimum is 8 KiB).
pub fn buffer_for(max_header_list_size: usize) -> usize {
    max_header_list_size.max(8192) + 8192
}

/// A connection ready for one request.
pub(super) enum Conn {
    /// A pooled or new HTTP/1.1 connection, taken out of the pool for the request; a new one
    /// that probes whether the endpoint speaks HTTP/1 carries what it reads first.
    Http1(http1::SendRequest<Body>, Option<Arc<Sniffed>>),
    /// A handle on the endpoint's shared HTTP/2 connection.
    Http2(http2::SendRequest<Body>),
}

/// One endpoint's connections.
#[derive(Default)]
pub(super) struct Pool {
    idle: Mutex<Vec<(http1::SendRequest<Body>, Instant)>>,
    /// The multiplexed HTTP/2 connection and when it was last handed out.
    pub(super) http2: tokio::sync::Mutex<Option<(http2::SendRequest<Body>, Instant)>>,
}

impl Pool {
    /// How many idle HTTP/1 connections it holds.
    pub(super) fn idle_len(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The sweep: drops pooled HTTP/1 connections idle for `max_idle` or longer and closed ones
    /// anywhere in the pool, and an HTTP/2 connection unused that long (a request taking it right
    /// now keeps it); returns how many were closed.
    pub(super) fn sweep(&self, max_idle: Duration, count: &Gauge) -> usize {
        let mut closed = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let expired = drop_expired(&mut idle, max_idle, count);
            let before = idle.len();
            idle.retain(|(send, _)| !send.is_closed());
            let gone = before - idle.len();
            count.dec_by(i64::try_from(gone).unwrap_or(0));
            expired + gone
        };
        if let Ok(mut slot) = self.http2.try_lock()
            && slot
                .as_ref()
                .is_some_and(|(send, used)| send.is_closed() || used.elapsed() >= max_idle)
        {
            *slot = None;
            closed += 1;
        }
        closed
    }

    /// An idle HTTP/1 connection ready for a request; closed and expired ones are dropped.
    pub(super) fn take_idle(
        &self,
        max_idle: Duration,
        count: &Gauge,
    ) -> Option<http1::SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        drop_expired(&mut idle, max_idle, count);
        // Newest first (warmest); busy ones (a response body still streaming) stay, closed
        // ones met on the way are dropped.
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            let (send, _) = &idle[i];
            if send.is_ready() {
                count.dec();
                return Some(idle.remove(i).0);
            }
            if send.is_closed() {
                count.dec();
                idle.remove(i);
            }
        }
        None
    }

    /// Returns a connection to the pool (it is ready again once its response body was read).
    pub(super) fn put_idle(&self, send: http1::SendRequest<Body>, count: &Gauge) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push((send, Instant::now()));
            count.inc();
        }
    }
}

/// Drops the entries idle for `max_idle` or longer: the oldest, at the front.
fn drop_expired(
    idle: &mut Vec<(http1::SendRequest<Body>, Instant)>,
    max_idle: Duration,
    count: &Gauge,
) -> usize {
    let now = Instant::now();
    let expired = idle
        .iter()
        .take_while(|(_, since)| now.saturating_duration_since(*since) >= max_idle)
        .count();
    idle.drain(..expired);
    count.dec_by(i64::try_from(expired).unwrap_or(0));
    expired
}

/// The HTTP/1.1 client handshake on `io`; the connection task is spawned (with upgrades, so a
/// WebSocket takes the connection over after a 101).
pub(super) async fn http1_handshake<IO>(
    io: IO,
    options: &Options,
) -> hyper::Result<http1::SendRequest<Body>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = http1::Builder::new()
        .preserve_header_case(options.preserve_header_case)
        .max_buf_size(buffer_for(options.max_header_list_size))
        .handshake(TokioIo::new(io))
        .await?;
    tokio::spawn(conn.with_upgrades());
    Ok(send)
}

/// The HTTP/2 client handshake (prior knowledge) on `io`; the connection task is spawned.
pub(super) async fn http2_handshake<IO>(
    io: IO,
    options: &Options,
) -> hyper::Result<http2::SendRequest<Body>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(options.max_header_list_size).unwrap_or(u32::MAX))
        .handshake(TokioIo::new(io))
        .await?;
    tokio::spawn(conn);
    Ok(send)
}
