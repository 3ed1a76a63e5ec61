//! Server-side mTLS: the handshake under the detect deadline, in the connection's task; the
//! caller's identity and the negotiated session protocol come out, or a refusal reason.

use std::sync::Arc;

use identity::{IdentityName, Refusal, cert_expired, identity_of_cert};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::error::Error;

/// What the client asked to speak, from ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    /// `transport.l5d.io/v1`: a transport header follows the handshake.
    TransportHeader,
    /// `h2`.
    H2,
    /// `http/1.1`.
    Http1,
    /// Nothing negotiated: HTTP, version detected from the first bytes.
    None,
}

/// A finished, authenticated handshake.
pub struct Accepted<IO> {
    /// The decrypted stream.
    pub stream: TlsStream<IO>,
    /// The caller's identity (first DNS/URI SAN of its leaf).
    pub peer: IdentityName,
    /// The negotiated protocol.
    pub alpn: Alpn,
    /// The SNI the client sent, if any (for logs).
    pub sni: Option<String>,
}

/// Runs the server handshake on `io`, finishing by `deadline`.
///
/// # Errors
/// `Handshake` with the [`Refusal`] reason: timeout, not TLS, no/bad client certificate,
/// protocol failure.
///
/// Cancel-safe in the sense that dropping the future drops the connection.
pub async fn accept<IO>(
    io: IO,
    config: Arc<ServerConfig>,
    deadline: Instant,
) -> Result<Accepted<IO>, Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = TlsAcceptor::from(config).accept(io);
    let stream = match tokio::time::timeout_at(deadline, handshake).await {
        Err(_) => {
            return Err(refused(
                Refusal::Timeout,
                "no handshake before the detect deadline".to_owned(),
            ));
        }
        Ok(Err(e)) => return Err(classify(&e)),
        Ok(Ok(stream)) => stream,
    };
    let (_, conn) = stream.get_ref();
    let leaf = conn.peer_certificates().and_then(|certs| certs.first());
    // A resumed session was verified when it began; its certificate may have expired since.
    if conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
        && leaf.is_some_and(cert_expired)
    {
        return Err(refused(
            Refusal::Expired,
            "resumed session of an expired client certificate".to_owned(),
        ));
    }
    let peer = leaf.and_then(identity_of_cert).ok_or_else(|| {
        refused(
            Refusal::NoIdentity,
            "client certificate names no identity".to_owned(),
        )
    })?;
    let alpn = match conn.alpn_protocol() {
        Some(identity::tls_config::ALPN_TRANSPORT_HEADER) => Alpn::TransportHeader,
        Some(identity::tls_config::ALPN_H2) => Alpn::H2,
        Some(identity::tls_config::ALPN_HTTP1) => Alpn::Http1,
        _ => Alpn::None,
    };
    let sni = conn.server_name().map(str::to_owned);
    Ok(Accepted {
        stream,
        peer,
        alpn,
        sni,
    })
}

/// Names why a handshake failed, from the I/O error tokio-rustls returns.
fn classify(err: &std::io::Error) -> Error {
    match err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => refused(Refusal::from_tls_error(tls), tls.to_string()),
        None => refused(
            Refusal::Protocol,
            format!("connection ended during handshake: {err}"),
        ),
    }
}

fn refused(refusal: Refusal, detail: String) -> Error {
    Error::Handshake { refusal, detail }
}
