//! Why a request could not be forwarded upstream: no connection (nothing sent), or the exchange
//! failed; and the error-chain text both use.

use std::net::SocketAddr;
use std::time::Duration;

use super::discover;
use super::{TlsRefusal, Untranslatable};

/// Why an upstream connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The target has no endpoints.
    #[error(transparent)]
    Resolve(#[from] discover::Error),
    /// Every endpoint tried refused or reset the connection.
    #[error("connect to {addr}: {source}")]
    Refused {
        /// The last endpoint tried.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The connect did not finish in time.
    #[error("connect timed out after {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// A meshed endpoint's TLS handshake failed; nothing of a request was sent.
    #[error("{}", tls_message(*.reason, addr, identity, detail))]
    Tls {
        /// Where the handshake went.
        addr: SocketAddr,
        /// The identity the endpoint had to prove.
        identity: Box<str>,
        /// Why it failed.
        reason: TlsRefusal,
        /// rustls' words.
        detail: String,
    },
}

fn tls_message(reason: TlsRefusal, addr: &SocketAddr, identity: &str, detail: &str) -> String {
    match reason {
        TlsRefusal::IdentityMismatch => {
            format!("upstream identity mismatch: {addr} is not {identity} ({detail})")
        }
        _ => format!("upstream TLS to {addr} as {identity} failed: {detail}"),
    }
}

impl ConnectError {
    /// The `reason` of `outbound_connect_errors_total`.
    pub fn label(&self) -> &'static str {
        match self {
            ConnectError::Resolve(_) => "unresolved",
            ConnectError::Refused { .. } => "refused",
            ConnectError::Timeout(_) => "timeout",
            ConnectError::Tls { reason, .. } => reason.label(),
        }
    }
}

/// Why a request could not be forwarded on the upstream side.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection could be made (nothing of the request was sent).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The connection failed during the exchange (reset, EOF, protocol error), with the error
    /// and its sources `: `-separated.
    #[error("upstream: {0}")]
    Exchange(String),
    /// The request cannot go in the only HTTP version the endpoint speaks.
    #[error(transparent)]
    Untranslatable(#[from] Untranslatable),
}

/// An error and its sources, `: `-separated (hyper's errors say little without their sources).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
