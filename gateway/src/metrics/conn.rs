//! The connection recorder: `ConnRecord` counts a transport's open, bytes and close;
//! `ByteMeter` holds byte counts until the labels are known; `Metered<T>` is the socket wrapper
//! that feeds them.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Metrics;
use super::labels::{CloseLabels, TcpLabels};

/// One connection's transport metrics; dropping it records the close.
pub struct ConnRecord {
    pub(super) metrics: Arc<Metrics>,
    pub(super) labels: TcpLabels,
    /// `tcp_read_bytes_total` for this connection's labels.
    pub read: Counter,
    /// `tcp_write_bytes_total` for this connection's labels.
    pub write: Counter,
    pub(super) errno: &'static str,
}

impl ConnRecord {
    /// Marks the connection as ended by an error of kind `errno`.
    pub fn set_error(&mut self, errno: &'static str) {
        self.errno = errno;
    }
}

impl Drop for ConnRecord {
    fn drop(&mut self) {
        self.metrics.tcp_open_connections.get(&self.labels).dec();
        self.metrics
            .tcp_close
            .get(&CloseLabels {
                tcp: self.labels.clone(),
                errno: self.errno,
            })
            .inc();
    }
}

/// Byte counts of a socket before its labels are known (during the handshake), then forwarded
/// to the bound counters. Shared between the socket wrapper and the connection task.
#[derive(Debug, Default)]
pub struct ByteMeter {
    read: AtomicU64,
    write: AtomicU64,
    bound: std::sync::OnceLock<(Counter, Counter)>,
}

impl ByteMeter {
    /// Records `n` bytes read.
    pub fn add_read(&self, n: usize) {
        match self.bound.get() {
            Some((read, _)) => {
                read.inc_by(n as u64);
            }
            None => {
                self.read.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }

    /// Records `n` bytes written.
    pub fn add_write(&self, n: usize) {
        match self.bound.get() {
            Some((_, write)) => {
                write.inc_by(n as u64);
            }
            None => {
                self.write.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }

    /// From now on counts go to `record`'s counters; what was counted so far is added to them.
    pub fn bind(&self, record: &ConnRecord) {
        if self
            .bound
            .set((record.read.clone(), record.write.clone()))
            .is_ok()
        {
            record.read.inc_by(self.read.swap(0, Ordering::Relaxed));
            record.write.inc_by(self.write.swap(0, Ordering::Relaxed));
        }
    }
}

/// An I/O object whose traffic is counted.
pub struct Metered<T> {
    inner: T,
    meter: Arc<ByteMeter>,
    /// Held when this socket owns its transport record (upstream): dropping it counts the close.
    _record: Option<ConnRecord>,
}

impl<T> Metered<T> {
    /// Wraps `inner`, counting into `meter` (bound later by the owner of the connection).
    pub fn new(inner: T, meter: Arc<ByteMeter>) -> Self {
        Self {
            inner,
            meter,
            _record: None,
        }
    }

    /// Wraps `inner`, counting into `record`, which is dropped (and its close counted) with it.
    pub fn with_record(inner: T, record: ConnRecord) -> Self {
        let meter = Arc::new(ByteMeter::default());
        meter.bind(&record);
        Self {
            inner,
            meter,
            _record: Some(record),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.meter.add_read(n);
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.meter.add_write(n);
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = poll {
            self.meter.add_write(n);
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Metrics, TcpLabels};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn metered_counts_both_directions() {
        let metrics = Arc::new(Metrics::new());
        let record = metrics.open_connection(TcpLabels::inbound("c"));
        let meter = Arc::new(ByteMeter::default());
        meter.bind(&record);
        let (a, mut b) = tokio::io::duplex(64);
        let mut metered = Metered::new(a, meter);
        metered.write_all(b"hello").await.unwrap();
        b.write_all(b"abc").await.unwrap();
        let mut buf = [0u8; 5];
        b.read_exact(&mut buf).await.unwrap();
        let mut got = [0u8; 3];
        metered.read_exact(&mut got).await.unwrap();
        assert_eq!(record.write.get(), 5);
        assert_eq!(record.read.get(), 3);
    }
}
