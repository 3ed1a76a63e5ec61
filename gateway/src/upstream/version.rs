//! Which HTTP version a request is sent in, per endpoint, and the request rewritten for it.
//!
//! 1. An upgrade (WebSocket) stays HTTP/1.1.
//! 2. Else the target's `upstream_protocol` override, else the endpoint's hint (`h2`, `http1`),
//!    else what the endpoint was learned to speak only, decides.
//! 3. Else the request's own version is tried. When a plaintext endpoint answers the HTTP/2
//!    preface with anything but SETTINGS, or an HTTP/1 request with a SETTINGS frame, it speaks
//!    only the other version: that is remembered for [`LEARNED_FOR`] and the request is sent
//!    again in that version (safe: the endpoint never parsed it as a request).
//!
//! HTTP/1 requests sent as HTTP/2 to a meshed pod carry `l5d-orig-proto` (spec §6.2), so its
//! proxy hands the application HTTP/1 again. A request that needs HTTP/2 (gRPC, `te: trailers`)
//! is not translated to HTTP/1; it fails with [`Untranslatable`].

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{CONNECTION, HOST, HeaderName, TE, UPGRADE};
use http::{HeaderMap, HeaderValue, Version};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Hint;

/// How long an endpoint is remembered to speak only one version.
pub const LEARNED_FOR: Duration = Duration::from_secs(300);

/// `l5d-orig-proto`: the HTTP/1 version of a request sent as HTTP/2 between proxies.
pub static L5D_ORIG_PROTO: HeaderName = HeaderName::from_static("l5d-orig-proto");

/// An HTTP version on the wire upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wire {
    /// HTTP/1.1 (or 1.0).
    Http1,
    /// HTTP/2, prior knowledge (h2c, or inside mTLS).
    Http2,
}

impl Wire {
    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Wire::Http1 => "http1",
            Wire::Http2 => "http2",
        }
    }

    fn other(self) -> Self {
        match self {
            Wire::Http1 => Wire::Http2,
            Wire::Http2 => Wire::Http1,
        }
    }
}

/// A target's `upstream_protocol` override.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Preference {
    /// Hints, learning, else the request's version.
    #[default]
    Auto,
    /// Always HTTP/1.1.
    Http1,
    /// Always HTTP/2 (prior knowledge).
    Http2,
}

impl Preference {
    /// The name in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            Preference::Auto => "auto",
            Preference::Http1 => "http1",
            Preference::Http2 => "http2",
        }
    }
}

impl std::str::FromStr for Preference {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(Preference::Auto),
            "http1" => Ok(Preference::Http1),
            "http2" => Ok(Preference::Http2),
            other => Err(format!("{other:?} is not one of auto, http1, http2")),
        }
    }
}

/// A request that cannot be sent in the only version the endpoint speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Untranslatable(pub &'static str);

/// What a request needs of the upstream version, read once before an endpoint is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needs {
    /// The version it arrived in (after an `l5d-orig-proto` downgrade).
    pub version: Version,
    /// An HTTP/1.1 upgrade: must stay HTTP/1.
    pub upgrade: bool,
    /// gRPC or `te: trailers`: must stay HTTP/2.
    pub trailers: bool,
}

impl Needs {
    /// The needs of a request with `headers` in `version`: `upgrade` when it asks for one,
    /// `grpc` when its content type is gRPC (the HTTP layer has already looked).
    pub fn of(version: Version, headers: &HeaderMap, upgrade: bool, grpc: bool) -> Self {
        let trailers = grpc || headers.get(TE).is_some_and(|te| te == "trailers");
        Self {
            version,
            upgrade,
            trailers,
        }
    }

    fn wire(self) -> Wire {
        if self.version == Version::HTTP_2 {
            Wire::Http2
        } else {
            Wire::Http1
        }
    }
}

/// What one endpoint was seen to speak.
#[derive(Debug, Default)]
pub struct Learned {
    state: Mutex<LearnedState>,
}

#[derive(Debug, Default)]
struct LearnedState {
    /// It speaks only this version, until then.
    only: Option<(Wire, Instant)>,
    /// It answered in HTTP/1 (so an HTTP/1 request needs no probe).
    http1: bool,
    /// It answered in HTTP/2.
    http2: bool,
}

impl Learned {
    /// The version it speaks only, while that is remembered; once forgotten, what it answered
    /// is forgotten too, so both versions are probed again (it may have been redeployed).
    pub fn only(&self, now: Instant) -> Option<Wire> {
        self.view(Wire::Http1, now).0
    }

    /// Remembers that it speaks only `wire`, for [`LEARNED_FOR`] from `now`.
    pub fn speaks_only(&self, wire: Wire, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.only = Some((wire, now + LEARNED_FOR));
    }

    /// Records that it answered in `wire`.
    pub fn answered(&self, wire: Wire) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match wire {
            Wire::Http1 => state.http1 = true,
            Wire::Http2 => state.http2 = true,
        }
    }

    /// Whether it answered in `wire` (one lock with [`Learned::only`]: `(only, answered)`).
    fn view(&self, wire: Wire, now: Instant) -> (Option<Wire>, bool) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.only.is_some_and(|(_, until)| now >= until) {
            *state = LearnedState::default();
        }
        let answered = match wire {
            Wire::Http1 => state.http1,
            Wire::Http2 => state.http2,
        };
        (state.only.map(|(wire, _)| wire), answered)
    }
}

/// The version to send a request in, and whether a new connection must probe that the endpoint
/// speaks it (plaintext endpoints only: a pod's proxy speaks both).
///
/// # Errors
/// A request that needs HTTP/2 to an endpoint that speaks only HTTP/1.
pub fn choose(
    needs: Needs,
    preference: Preference,
    hint: Option<Hint>,
    meshed: bool,
    learned: &Learned,
    now: Instant,
) -> Result<(Wire, bool), Untranslatable> {
    if needs.upgrade {
        return Ok((Wire::Http1, false));
    }
    let fixed = match (preference, hint) {
        (Preference::Http1, _) => Some((Wire::Http1, false)),
        (Preference::Http2, _) => Some((Wire::Http2, false)),
        (Preference::Auto, Some(Hint::H2)) => Some((Wire::Http2, false)),
        (Preference::Auto, Some(Hint::Http1)) => Some((Wire::Http1, false)),
        (Preference::Auto, _) if meshed => Some((needs.wire(), false)),
        (Preference::Auto, _) => None,
    };
    let (wire, probe) = fixed.unwrap_or_else(|| match learned.view(needs.wire(), now) {
        (Some(only), _) => (only, false),
        (None, answered) => (needs.wire(), !answered),
    });
    if wire == Wire::Http1 && needs.trailers && needs.wire() == Wire::Http2 {
        return Err(Untranslatable(
            "the service speaks only HTTP/1 and the request needs HTTP/2 (gRPC or trailers)",
        ));
    }
    Ok((wire, probe))
}

/// The version a probe showed instead of the one tried, if any: an answer to the HTTP/2 preface
/// that is not a SETTINGS frame (a status line, an HTTP/0.9-style error page, a close) is not an
/// HTTP/2 server; a SETTINGS frame in answer to an HTTP/1 request is one.
pub fn fallback(tried: Wire, first: First) -> Option<Wire> {
    match (tried, first) {
        (Wire::Http2, First::Http1 | First::Closed | First::Other)
        | (Wire::Http1, First::Http2) => Some(tried.other()),
        _ => None,
    }
}

/// Rewrites a request (hop-by-hop headers already gone) for `wire`: HTTP/1 in origin form with
/// `Host`, in its HTTP/1 version; HTTP/2 with the authority in the URI and no `Host`, with
/// `l5d-orig-proto` when an HTTP/1 request goes to a meshed pod as HTTP/2.
///
/// # Errors
/// Only when `authority` and the request path do not make a URI (not for checked targets).
pub fn shape(
    parts: &mut http::request::Parts,
    wire: Wire,
    authority: &http::uri::Authority,
    host: &HeaderValue,
    meshed: bool,
) -> Result<(), http::Error> {
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let mut uri = http::uri::Parts::default();
    uri.path_and_query = Some(path);
    match wire {
        Wire::Http1 => {
            parts.headers.remove(&L5D_ORIG_PROTO);
            parts.headers.insert(HOST, host.clone());
            if parts.version == Version::HTTP_2 {
                parts.version = Version::HTTP_11;
            }
        }
        Wire::Http2 => {
            uri.scheme = Some(http::uri::Scheme::HTTP);
            uri.authority = Some(authority.clone());
            parts.headers.remove(HOST);
            if parts.version != Version::HTTP_2 {
                // Only an upgrade carries these here, and upgrades stay HTTP/1.
                parts.headers.remove(CONNECTION);
                parts.headers.remove(UPGRADE);
                if meshed {
                    let value = if parts.version == Version::HTTP_10 {
                        "HTTP/1.0"
                    } else {
                        "HTTP/1.1"
                    };
                    parts
                        .headers
                        .insert(&L5D_ORIG_PROTO, HeaderValue::from_static(value));
                } else {
                    // Only a proxy may say this; a caller's own value is not relayed.
                    parts.headers.remove(&L5D_ORIG_PROTO);
                }
                parts.version = Version::HTTP_2;
            }
        }
    }
    parts.uri = http::Uri::from_parts(uri)?;
    Ok(())
}

/// The first bytes an endpoint sent on a new connection, classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum First {
    /// `HTTP/…`: an HTTP/1 status line.
    Http1,
    /// An HTTP/2 SETTINGS frame on stream 0.
    Http2,
    /// It closed without a byte.
    Closed,
    /// Anything else.
    Other,
}

impl First {
    /// Classifies up to the first 9 bytes (`closed`: the stream ended there).
    pub fn of(bytes: &[u8], closed: bool) -> Self {
        if bytes.is_empty() && closed {
            First::Closed
        } else if bytes.starts_with(b"HTTP/") {
            First::Http1
        } else if bytes.len() >= 9 && bytes[3] == 0x4 && bytes[5..9] == [0, 0, 0, 0] {
            First::Http2
        } else {
            First::Other
        }
    }
}

/// What a [`Sniff`]ed stream read first, shared with the sender side.
#[derive(Debug, Default)]
pub struct Sniffed {
    first: OnceLock<First>,
    ready: Notify,
}

impl Sniffed {
    /// What was read first, once known.
    pub fn get(&self) -> Option<First> {
        self.first.get().copied()
    }

    /// Waits until the first bytes (or EOF) were read, at most `timeout`.
    pub async fn wait(&self, timeout: Duration) -> Option<First> {
        let notified = self.ready.notified();
        if let Some(first) = self.get() {
            return Some(first);
        }
        let _ = tokio::time::timeout(timeout, notified).await;
        self.get()
    }

    fn set(&self, first: First) {
        if self.first.set(first).is_ok() {
            self.ready.notify_waiters();
        }
    }
}

/// The first bytes of a stream, taken as they arrive until they say what the server speaks.
#[derive(Clone, Debug, Default)]
pub struct Head {
    bytes: [u8; 9],
    len: usize,
}

impl Head {
    /// Adds what one read returned (`closed`: the stream ended or failed); the classification once
    /// nine bytes (a frame header), an HTTP/1 status line's start or the end have been seen.
    pub fn push(&mut self, new: &[u8], closed: bool) -> Option<First> {
        let take = new.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + take].copy_from_slice(&new[..take]);
        self.len += take;
        let head = &self.bytes[..self.len];
        let decided = closed || self.len == self.bytes.len() || head.starts_with(b"HTTP/");
        decided.then(|| First::of(head, closed))
    }

    /// The classification when the stream ends now.
    pub fn end(&self) -> First {
        First::of(&self.bytes[..self.len], true)
    }
}

/// A stream that notes the first bytes it reads (to tell HTTP/1 from HTTP/2 servers).
pub struct Sniff<IO> {
    io: IO,
    head: Head,
    sniffed: Option<Arc<Sniffed>>,
}

impl<IO> Sniff<IO> {
    /// Wraps `io`; when `probe`, the returned handle learns what it reads first (else the wrapper
    /// only passes bytes through).
    pub fn new(io: IO, probe: bool) -> (Self, Option<Arc<Sniffed>>) {
        let sniffed = probe.then(|| Arc::new(Sniffed::default()));
        let sniff = Self {
            io,
            head: Head::default(),
            sniffed: sniffed.clone(),
        };
        (sniff, sniffed)
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Sniff<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if let (Some(sniffed), Poll::Ready(outcome)) = (&this.sniffed, &result) {
            let new = &buf.filled()[before..];
            let closed = outcome.is_err() || new.is_empty();
            if let Some(first) = this.head.push(new, closed) {
                sniffed.set(first);
                this.sniffed = None;
            }
        }
        result
    }
}

impl<IO> Drop for Sniff<IO> {
    fn drop(&mut self) {
        // Dropped before the first bytes (a write failed: the endpoint reset the connection):
        // it ended without saying anything of its own.
        if let Some(sniffed) = self.sniffed.take() {
            sniffed.set(self.head.end());
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Sniff<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
