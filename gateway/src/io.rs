//! `Metered<T>`: a socket wrapper that counts bytes read and written into a [`ByteMeter`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::{ByteMeter, ConnRecord};

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
