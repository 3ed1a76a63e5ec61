//! [feature `testing`] A throw-away PKI for tests, benches and fuzzing: a root, an issuer and leaves
//! (valid, expired, not yet valid), plus a foreign root for "unknown CA" cases.

#![allow(clippy::expect_used)] // test helpers panic on a broken crypto provider, by design

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};

use crate::issue::{Ca, Issued, LeafSpec, Validity};
use crate::{Credentials, TrustAnchors};

const DAY: Duration = Duration::from_secs(86_400);

/// A root (trust anchor) and an issuer signed by it.
pub struct TestCa {
    root: Ca,
    issuer: Ca,
}

impl TestCa {
    /// A new PKI whose root is `root.<domain>` and issuer `identity.<domain>`.
    ///
    /// # Panics
    /// If rcgen fails, which only happens on a broken crypto provider.
    pub fn new(domain: &str) -> Self {
        let root = Ca::root(&format!("root.{domain}"), Validity::from_now(365 * DAY))
            .expect("root certificate");
        let issuer = root
            .issuer(&format!("identity.{domain}"), Validity::from_now(30 * DAY))
            .expect("issuer certificate");
        Self { root, issuer }
    }

    /// The trust anchors (the root only).
    pub fn anchors(&self) -> TrustAnchors {
        TrustAnchors::from_pem("test root", self.anchors_pem().as_bytes()).expect("test anchors")
    }

    /// The root certificate as PEM.
    pub fn anchors_pem(&self) -> String {
        self.root.cert_pem()
    }

    /// The root CA.
    pub fn root(&self) -> &Ca {
        &self.root
    }

    /// A leaf valid for one day, chained through the issuer.
    pub fn leaf(&self, identity: &str) -> Issued {
        self.leaf_with(identity, Validity::from_now(DAY))
    }

    /// A leaf with an explicit validity window.
    pub fn leaf_with(&self, identity: &str, validity: Validity) -> Issued {
        self.issuer
            .leaf(&LeafSpec {
                identity,
                spiffe: None,
                validity,
            })
            .expect("leaf certificate")
    }

    /// A leaf that expired an hour ago.
    pub fn expired_leaf(&self, identity: &str) -> Issued {
        let now = SystemTime::now();
        self.leaf_with(
            identity,
            Validity {
                not_before: now - DAY,
                not_after: now - Duration::from_secs(3600),
            },
        )
    }

    /// A leaf that becomes valid in an hour.
    pub fn future_leaf(&self, identity: &str) -> Issued {
        let now = SystemTime::now();
        self.leaf_with(
            identity,
            Validity {
                not_before: now + Duration::from_secs(3600),
                not_after: now + DAY,
            },
        )
    }

    /// Validated credentials for `identity`.
    pub fn credentials(&self, identity: &str) -> Credentials {
        self.leaf(identity)
            .credentials(&self.anchors())
            .expect("test credentials")
    }
}

/// Runs a TLS handshake between `client` and `server` in memory (no sockets) and returns the
/// server side, or the server's error. A client-side failure ends the exchange early, leaving the
/// server to report what it saw.
///
/// # Errors
/// The server's rustls error (a refused client certificate, for instance).
///
/// # Panics
/// If `server_name` is not a valid name or buffers cannot be moved, which means a broken test.
pub fn in_memory_handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    server_name: &str,
) -> Result<ServerConnection, rustls::Error> {
    let name = ServerName::try_from(server_name.to_owned()).expect("server name");
    let mut client = ClientConnection::new(client, name).expect("client connection");
    let mut server = ServerConnection::new(server).expect("server connection");
    let mut buf = Vec::with_capacity(8192);
    // A TLS 1.3 mutual handshake takes two round trips; a few more cover post-handshake tickets.
    for _ in 0..4 {
        buf.clear();
        while client.wants_write() {
            client.write_tls(&mut buf).expect("client write");
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).expect("server read");
        }
        server.process_new_packets()?;
        buf.clear();
        while server.wants_write() {
            server.write_tls(&mut buf).expect("server write");
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).expect("client read");
        }
        if client.process_new_packets().is_err()
            || !(client.is_handshaking() || server.is_handshaking())
        {
            break;
        }
    }
    Ok(server)
}
