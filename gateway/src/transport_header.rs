//! Linkerd's transport header (`transport.l5d.io/v1`), sans-IO: a 23-byte preface, a big-endian
//! u32 length, then a protobuf `Header{port, name, session_protocol}` (spec §4). `decode` works on
//! whatever bytes have arrived and says when it needs more; `PrefixedIo` replays what followed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The preface every header starts with.
pub const PREFACE: &[u8; 23] = b"transport.l5d.io/v1\r\n\r\n";
/// The largest protobuf message accepted (Linkerd's 64 KiB read buffer).
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;
/// Preface + length.
const FIXED_LEN: usize = PREFACE.len() + 4;

/// The session protocol the header announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionProtocol {
    /// HTTP/1.x on the stream.
    Http1,
    /// HTTP/2 (prior knowledge) on the stream.
    Http2,
    /// No protocol: opaque TCP.
    Opaque,
}

impl SessionProtocol {
    /// Linkerd's `session_protocol` metric label value.
    pub fn label(self) -> &'static str {
        match self {
            SessionProtocol::Http1 => "http/1",
            SessionProtocol::Http2 => "http/2",
            SessionProtocol::Opaque => "",
        }
    }
}

/// A decoded, checked transport header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportHeader {
    /// Target port, 1..=65535.
    pub port: u16,
    /// Target name; `None` when absent (empty).
    pub name: Option<String>,
    /// What follows the header.
    pub protocol: SessionProtocol,
}

/// Why bytes are not a transport header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The stream does not start with the preface (or ended before a header).
    #[error("connection did not include a transport header")]
    NoHeader,
    /// The declared message length is over [`MAX_MESSAGE_LEN`].
    #[error("transport header length {0} exceeds {MAX_MESSAGE_LEN}")]
    TooLong(usize),
    /// The protobuf message does not decode.
    #[error("transport header is not a valid message: {0}")]
    Malformed(String),
    /// The port is outside 1..=65535.
    #[error("invalid port value {0}")]
    BadPort(i32),
    /// The name is not a DNS name.
    #[error("transport header name is not a valid DNS name")]
    BadName,
}

mod proto {
    //! The protobuf schema of `transport.l5d.io.Header` (prost-derive, no protoc).

    /// `transport.l5d.io.Header`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Header {
        #[prost(int32, tag = "1")]
        pub(super) port: i32,
        #[prost(string, tag = "2")]
        pub(super) name: String,
        #[prost(message, optional, tag = "3")]
        pub(super) session_protocol: Option<SessionProtocol>,
    }

    /// `transport.l5d.io.SessionProtocol`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct SessionProtocol {
        #[prost(oneof = "Kind", tags = "1, 2")]
        pub(super) kind: Option<Kind>,
    }

    /// The `kind` oneof.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum Kind {
        #[prost(message, tag = "1")]
        Http1(Empty),
        #[prost(message, tag = "2")]
        Http2(Empty),
    }

    /// `SessionProtocol.Http1` / `.Http2`: empty messages.
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub(super) struct Empty {}
}

/// Decodes a header from the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, else the header and how many bytes it used.
///
/// # Errors
/// `NoHeader` as soon as the bytes so far differ from the preface; `TooLong`, `Malformed`,
/// `BadPort`, `BadName` once the message is complete.
pub fn decode(buf: &[u8]) -> Result<Option<(TransportHeader, usize)>, Error> {
    let seen = buf.len().min(PREFACE.len());
    if buf[..seen] != PREFACE[..seen] {
        return Err(Error::NoHeader);
    }
    if buf.len() < FIXED_LEN {
        return Ok(None);
    }
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(&buf[PREFACE.len()..FIXED_LEN]);
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len > MAX_MESSAGE_LEN {
        return Err(Error::TooLong(len));
    }
    let Some(message) = buf.get(FIXED_LEN..FIXED_LEN + len) else {
        return Ok(None);
    };
    let header = proto::Header::decode(message).map_err(|e| Error::Malformed(e.to_string()))?;
    let port = u16::try_from(header.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or(Error::BadPort(header.port))?;
    let name = match header.name.as_str() {
        "" => None,
        name if is_dns_name(name) => Some(header.name),
        _ => return Err(Error::BadName),
    };
    let protocol = match header.session_protocol.and_then(|p| p.kind) {
        Some(proto::Kind::Http1(_)) => SessionProtocol::Http1,
        Some(proto::Kind::Http2(_)) => SessionProtocol::Http2,
        None => SessionProtocol::Opaque,
    };
    Ok(Some((
        TransportHeader {
            port,
            name,
            protocol,
        },
        FIXED_LEN + len,
    )))
}

/// Encodes `header` with its preface, as a Linkerd proxy writes it before any payload.
pub fn encode(header: &TransportHeader) -> Vec<u8> {
    let kind = match header.protocol {
        SessionProtocol::Http1 => Some(proto::Kind::Http1(proto::Empty {})),
        SessionProtocol::Http2 => Some(proto::Kind::Http2(proto::Empty {})),
        SessionProtocol::Opaque => None,
    };
    let message = proto::Header {
        port: i32::from(header.port),
        name: header.name.clone().unwrap_or_default(),
        session_protocol: kind.map(|kind| proto::SessionProtocol { kind: Some(kind) }),
    };
    let body = message.encode_to_vec();
    let mut out = Vec::with_capacity(FIXED_LEN + body.len());
    out.extend_from_slice(PREFACE);
    // infallible: an encoded Header of a u16 port and a DNS name is far below 4 GiB.
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// A DNS name as Linkerd's `dns::Name` accepts it: labels of `[A-Za-z0-9-_]`, 1..=63 bytes, at
/// most 253 bytes, an optional trailing dot.
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Reads a header from `io`; returns it and `io` wrapped so the bytes read past the header are
/// replayed first. The caller bounds the time (the detect deadline).
///
/// # Errors
/// The decode error, `NoHeader` on EOF before a complete header, or the I/O error.
pub async fn read<IO>(mut io: IO) -> Result<(TransportHeader, PrefixedIo<IO>), ReadError>
where
    IO: AsyncRead + Unpin,
{
    // Most headers are well under 256 bytes; grow only when the declared length asks for it.
    let mut buf = BytesMut::with_capacity(512);
    loop {
        if let Some((header, used)) = decode(&buf)? {
            buf.advance(used);
            return Ok((header, PrefixedIo::new(buf.freeze(), io)));
        }
        if buf.capacity() == buf.len() {
            buf.reserve(buf.len().max(512));
        }
        if io.read_buf(&mut buf).await? == 0 {
            return Err(ReadError::Header(Error::NoHeader));
        }
    }
}

/// A failure to read a header.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The bytes are not a valid header.
    #[error(transparent)]
    Header(#[from] Error),
    /// The stream failed.
    #[error("reading transport header: {0}")]
    Io(#[from] io::Error),
}

/// An I/O object that first yields `prefix`, then reads from `inner`; writes go to `inner`.
#[derive(Debug)]
pub struct PrefixedIo<IO> {
    prefix: Bytes,
    inner: IO,
}

impl<IO> PrefixedIo<IO> {
    /// Replays `prefix` before `inner`.
    pub fn new(prefix: Bytes, inner: IO) -> Self {
        Self { prefix, inner }
    }

    /// The bytes not replayed yet, and the stream.
    pub fn into_parts(self) -> (Bytes, IO) {
        (self.prefix, self.inner)
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for PrefixedIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for PrefixedIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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
mod tests;
