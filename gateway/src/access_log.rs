//! The access log: one JSON line per HTTP request and per opaque session, off by default, to
//! stderr or a file. An opaque session's line has `"protocol": "opaque"`, no method, path or
//! status, and the bytes each way (`bytes_in`: from the caller).
//!
//! Entries are handed to a writer thread through a bounded queue (`access_log_buffer` lines):
//! the request path never formats JSON or waits on the disk; when the queue is full the entry
//! is dropped and counted in `gateway_access_log_dropped_total`. The writer formats each line
//! and writes in batches: what queued in the 100 ms after a batch's first line, in writes of up
//! to 64 KiB.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::mpsc::{self, SyncSender, TrySendError};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

/// Where lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sink {
    /// The process's standard error.
    Stderr,
    /// A file, appended to.
    File(PathBuf),
}

impl std::str::FromStr for Sink {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "" => Err("an access log needs stderr or a file path".to_owned()),
            "stderr" => Ok(Sink::Stderr),
            path => Ok(Sink::File(PathBuf::from(path))),
        }
    }
}

impl std::fmt::Display for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sink::Stderr => f.write_str("stderr"),
            Sink::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// How much of the request URI a line keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UriDetail {
    /// None.
    Off,
    /// The path, without the query (which may carry secrets).
    #[default]
    Path,
    /// Path and query.
    Full,
}

impl UriDetail {
    /// The name in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            UriDetail::Off => "off",
            UriDetail::Path => "path",
            UriDetail::Full => "full",
        }
    }
}

impl std::str::FromStr for UriDetail {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "off" => Ok(UriDetail::Off),
            "path" => Ok(UriDetail::Path),
            "full" => Ok(UriDetail::Full),
            other => Err(format!("{other:?} is not one of off, path, full")),
        }
    }
}

/// One request or opaque session, as logged.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    /// When the request arrived (RFC 3339, UTC, milliseconds).
    #[serde(serialize_with = "rfc3339")]
    pub time: std::time::SystemTime,
    /// `http`, or `opaque` for an opaque session.
    pub protocol: &'static str,
    /// The caller's identity.
    #[serde(serialize_with = "text")]
    pub client_id: std::sync::Arc<str>,
    /// The caller's address.
    pub source: std::net::SocketAddr,
    /// The target `name:port` (empty when none was acceptable).
    #[serde(serialize_with = "text")]
    pub target: std::sync::Arc<str>,
    /// The endpoint that answered (absent when none did).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<std::net::SocketAddr>,
    /// Whether the endpoint was reached over mTLS.
    pub upstream_tls: bool,
    /// The request method (absent for an opaque session).
    #[serde(serialize_with = "method", skip_serializing_if = "Option::is_none")]
    pub method: Option<http::Method>,
    /// The path (or path and query), per `access_log_uri`; absent when off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The HTTP status sent downstream (absent for an opaque session).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Request body bytes, from `content-length` (absent when not given); an opaque session's
    /// bytes from the caller (absent when it ended in an error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    /// Response body bytes sent downstream; an opaque session's bytes to the caller.
    pub bytes_out: u64,
    /// From the request's arrival to the end of its response body (an opaque session: to its
    /// end), in milliseconds.
    pub duration_ms: f64,
    /// Why the gateway answered instead of the service (the metric reason), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// Who is to blame for that: `downstream`, `upstream` or `local`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blame: Option<&'static str>,
    /// The W3C trace id of the request's `traceparent`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

fn rfc3339<S: serde::Serializer>(time: &std::time::SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*time))
}

fn text<S: serde::Serializer>(text: &std::sync::Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(text)
}

fn method<S: serde::Serializer>(method: &Option<http::Method>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(method.as_ref().map_or("", http::Method::as_str))
}

impl Entry {
    /// An entry for a request from `client_id` at `source` arriving now (`method`: `None` for
    /// an opaque session).
    pub fn new(
        client_id: std::sync::Arc<str>,
        source: std::net::SocketAddr,
        method: Option<http::Method>,
    ) -> Self {
        Self {
            time: std::time::SystemTime::now(),
            protocol: if method.is_some() { "http" } else { "opaque" },
            client_id,
            source,
            target: std::sync::Arc::from(""),
            endpoint: None,
            upstream_tls: false,
            method,
            path: None,
            status: None,
            bytes_in: None,
            bytes_out: 0,
            duration_ms: 0.0,
            error: None,
            blame: None,
            trace_id: None,
        }
    }
}

/// A running access log.
pub struct AccessLog {
    queue: SyncSender<Box<Entry>>,
    dropped: Counter,
    /// How much of the URI lines keep.
    pub uri: UriDetail,
}

impl AccessLog {
    /// Starts the writer of `sink` with a queue of `capacity` lines.
    ///
    /// # Errors
    /// A file that cannot be opened for appending, or a thread that cannot start.
    pub fn start(
        sink: &Sink,
        capacity: usize,
        uri: UriDetail,
        dropped: Counter,
    ) -> std::io::Result<Self> {
        let mut out: Box<dyn std::io::Write + Send> = match sink {
            Sink::Stderr => Box::new(std::io::stderr()),
            Sink::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (queue, entries) = mpsc::sync_channel::<Box<Entry>>(capacity.max(1));
        std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || {
                const BATCH: usize = 64 * 1024;
                const LINGER: std::time::Duration = std::time::Duration::from_millis(100);
                let mut batch: Vec<u8> = Vec::with_capacity(BATCH);
                let mut flush = |batch: &mut Vec<u8>| {
                    let _ = out.write_all(batch);
                    let _ = out.flush();
                    batch.clear();
                };
                let add = |batch: &mut Vec<u8>, entry: Box<Entry>| {
                    if serde_json::to_writer(&mut *batch, &*entry).is_ok() {
                        batch.push(b'\n');
                    }
                };
                // Idle, the thread waits for a line; then it sleeps for the linger and takes
                // everything queued meanwhile. A sender wakes it once per batch, not per line
                // (a wake per request would cost the data plane a context switch each).
                while let Ok(first) = entries.recv() {
                    add(&mut batch, first);
                    std::thread::sleep(LINGER);
                    loop {
                        match entries.try_recv() {
                            Ok(entry) => {
                                add(&mut batch, entry);
                                if batch.len() >= BATCH {
                                    flush(&mut batch);
                                }
                            }
                            Err(mpsc::TryRecvError::Empty) => break,
                            Err(mpsc::TryRecvError::Disconnected) => {
                                flush(&mut batch);
                                return;
                            }
                        }
                    }
                    flush(&mut batch);
                }
            })?;
        Ok(Self {
            queue,
            dropped,
            uri,
        })
    }

    /// Queues `entry`; drops and counts it when the queue is full.
    pub fn write(&self, entry: Box<Entry>) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.queue.try_send(entry)
        {
            self.dropped.inc();
        }
    }
}

/// The trace id of a W3C `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`).
pub fn trace_id(traceparent: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(traceparent).ok()?;
    let mut parts = text.trim().split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id != "0".repeat(32))
        .then(|| id.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_come_from_valid_traceparents_only() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            trace_id(format!("00-{id}-00f067aa0ba902b7-01").as_bytes()).as_deref(),
            Some(id)
        );
        assert_eq!(
            trace_id(b"00-0000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(
            trace_id(b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id(b"garbage"), None);
        assert_eq!(trace_id(&[0xff, 0xfe]), None);
    }

    #[test]
    fn a_full_queue_drops_and_counts_lines_and_written_lines_are_json() {
        let path = std::env::temp_dir().join(format!("meshgate-access-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let dropped = Counter::default();
        let log = AccessLog::start(
            &Sink::File(path.clone()),
            1,
            UriDetail::Path,
            dropped.clone(),
        )
        .unwrap();
        let mut entry = Entry::new(
            std::sync::Arc::from("web.east"),
            "127.0.0.1:1".parse().unwrap(),
            Some(http::Method::GET),
        );
        entry.status = Some(200);
        // Far more lines than the queue holds, faster than a file takes them.
        for _ in 0..20_000 {
            log.write(Box::new(entry.clone()));
        }
        assert!(dropped.get() > 0, "a full queue drops");
        drop(log);
        let written = gateway_eventually(|| {
            std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .count() as u64
                + dropped.get()
                == 20_000
        });
        assert!(written, "every line is written or counted");
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["client_id"], "web.east");
            assert_eq!(v["status"], 200);
        }
        let _ = std::fs::remove_file(&path);
    }

    /// Polls a condition of the writer thread for up to 5 s (the thread owns the timing).
    fn gateway_eventually(mut check: impl FnMut() -> bool) -> bool {
        for _ in 0..500 {
            if check() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    }
}
