//! The access log: one JSON line per HTTP request, off by default, to stderr or a file.
//!
//! Lines are handed to a writer thread through a bounded queue (`access_log_buffer` lines):
//! the request path never waits on the disk; when the queue is full the line is dropped and
//! counted in `gateway_access_log_dropped_total`.

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

/// One request, as logged.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Entry {
    /// When the request arrived (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// The caller's identity.
    pub client_id: String,
    /// The caller's address.
    pub source: String,
    /// The target `name:port` (empty when none was acceptable).
    pub target: String,
    /// The endpoint that answered (empty when none did).
    pub endpoint: String,
    /// Whether the endpoint was reached over mTLS.
    pub upstream_tls: bool,
    /// The request method.
    pub method: String,
    /// The path (or path and query), per `access_log_uri`; absent when off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The HTTP status sent downstream.
    pub status: u16,
    /// Request body bytes, from `content-length` (absent when not given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    /// Response body bytes sent downstream.
    pub bytes_out: u64,
    /// From the request's arrival to the end of its response body, in milliseconds.
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

/// A running access log.
pub struct AccessLog {
    queue: SyncSender<String>,
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
        let (queue, lines) = mpsc::sync_channel::<String>(capacity.max(1));
        std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || {
                let mut buffered = std::io::BufWriter::new(&mut out);
                while let Ok(line) = lines.recv() {
                    let _ = buffered.write_all(line.as_bytes());
                    // Write out whenever the queue is empty: lines are not held back long.
                    while let Ok(more) = lines.try_recv() {
                        let _ = buffered.write_all(more.as_bytes());
                    }
                    let _ = buffered.flush();
                }
            })?;
        Ok(Self {
            queue,
            dropped,
            uri,
        })
    }

    /// Queues `entry`'s line; drops and counts it when the queue is full.
    pub fn write(&self, entry: &Entry) {
        let Ok(mut line) = serde_json::to_string(entry) else {
            return;
        };
        line.push('\n');
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.queue.try_send(line)
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
        let entry = Entry {
            client_id: "web.east".to_owned(),
            status: 200,
            ..Entry::default()
        };
        // Far more lines than the queue holds, faster than a file takes them.
        for _ in 0..20_000 {
            log.write(&entry);
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
