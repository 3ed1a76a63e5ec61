//! Dialling one endpoint: a TCP connect under the connect deadline, with the upstream socket
//! options, then for a meshed pod mTLS as the gateway's identity, and for its inbound port a
//! transport header (spec §6.4, §7, §16).
//!
//! - Unmeshed endpoint: plaintext TCP to `addr`.
//! - Meshed endpoint (`identity`): TLS 1.3 to `addr`, SNI = the pod's identity, no ALPN (a pod
//!   proxy offers none on application ports), the gateway's current certificate as client
//!   certificate; the pod's certificate must chain to the trust anchors and be valid for that
//!   identity, else the connection is dropped before any request byte is written.
//! - Meshed endpoint with `opaque_port`: the same to `IP:opaque_port` with ALPN exactly
//!   `transport.l5d.io/v1`, then the header `{port: <addr's port>, name: none, protocol}` (a name
//!   would make the pod's proxy act as a gateway and refuse; `protocol` is none for an endpoint
//!   hinted opaque). An endpoint with an `authority_override` is another gateway: its header
//!   names that authority.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use identity::tls_config;
use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConfig};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{Address, ConnectError, Hint};
use crate::transport_header::{self, SessionProtocol, TransportHeader};

/// The client TLS configurations of new upstream connections, rebuilt whenever the gateway's
/// credentials or trust anchors change (open connections keep theirs).
pub struct ClientTls {
    /// Application ports: no ALPN.
    app: Arc<ClientConfig>,
    /// A pod proxy's inbound port: ALPN `transport.l5d.io/v1`.
    transport: Arc<ClientConfig>,
}

impl ClientTls {
    /// Configs presenting `credentials` and trusting `anchors` (TLS 1.3, the server side's
    /// suites and groups; sessions resumed per endpoint).
    ///
    /// # Errors
    /// When rustls refuses the key or the anchors.
    pub fn new(
        credentials: &identity::Credentials,
        anchors: &identity::TrustAnchors,
    ) -> Result<Self, identity::Error> {
        let app = tls_config::client_config(Some(credentials), anchors, &[])?;
        let transport = tls_config::client_config(
            Some(credentials),
            anchors,
            &[tls_config::ALPN_TRANSPORT_HEADER],
        )?;
        Ok(Self {
            app: Arc::new(app),
            transport: Arc::new(transport),
        })
    }

    /// Configs presenting no certificate (for a check that only talks plaintext).
    ///
    /// # Errors
    /// When rustls refuses the anchors.
    pub fn without_identity(anchors: &identity::TrustAnchors) -> Result<Self, identity::Error> {
        let app = tls_config::client_config(None, anchors, &[])?;
        let transport =
            tls_config::client_config(None, anchors, &[tls_config::ALPN_TRANSPORT_HEADER])?;
        Ok(Self {
            app: Arc::new(app),
            transport: Arc::new(transport),
        })
    }
}

/// Why an upstream TLS handshake was refused; the `tls_*` reasons of
/// `outbound_connect_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsRefusal {
    /// The pod's certificate chains to the anchors but is not valid for the identity expected.
    IdentityMismatch,
    /// The pod's certificate does not chain to the trust anchors.
    Untrusted,
    /// The pod's certificate has expired (or is not valid yet).
    Expired,
    /// The pod sent an alert: it refused the gateway's certificate (or the handshake).
    PeerRefused,
    /// The pod's inbound port did not agree on `transport.l5d.io/v1`.
    NoAlpn,
    /// The handshake did not finish within the connect deadline.
    Timeout,
    /// Another handshake failure (not TLS, connection closed, protocol error).
    Protocol,
}

impl TlsRefusal {
    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            TlsRefusal::IdentityMismatch => "tls_identity_mismatch",
            TlsRefusal::Untrusted => "tls_untrusted",
            TlsRefusal::Expired => "tls_expired",
            TlsRefusal::PeerRefused => "tls_peer_refused",
            TlsRefusal::NoAlpn => "tls_no_alpn",
            TlsRefusal::Timeout => "tls_timeout",
            TlsRefusal::Protocol => "tls_error",
        }
    }

    fn of(error: &io::Error) -> Self {
        use CertificateError as C;
        let tls = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match tls {
            Some(rustls::Error::InvalidCertificate(cert)) => match cert {
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    TlsRefusal::IdentityMismatch
                }
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. } => TlsRefusal::Expired,
                _ => TlsRefusal::Untrusted,
            },
            Some(rustls::Error::AlertReceived(_)) => TlsRefusal::PeerRefused,
            _ => TlsRefusal::Protocol,
        }
    }
}

/// A connection to an endpoint: plaintext or mTLS.
pub enum Io {
    /// An unmeshed endpoint.
    Plain(TcpStream),
    /// A meshed pod (boxed: the TLS state is large, and made once per connection).
    Tls(Box<TlsStream<TcpStream>>),
}

/// Dials `address` within `timeout`: TCP, then mTLS as `tls` presents it for a meshed endpoint,
/// then the transport header announcing `protocol` when it goes to the pod's inbound port.
///
/// # Errors
/// `Refused`, `Timeout`, or `Tls` with the refusal reason. Cancel-safe.
pub(super) async fn dial(
    address: &Address,
    tls: &ClientTls,
    protocol: SessionProtocol,
    timeout: Duration,
) -> Result<Io, ConnectError> {
    let Some(identity) = &address.identity else {
        return tcp(address.addr, timeout).await.map(Io::Plain);
    };
    let inbound = address.opaque_port;
    let addr = inbound.map_or(address.addr, |port| {
        SocketAddr::new(address.addr.ip(), port)
    });
    let tcp = tcp(addr, timeout).await?;
    let refused = |reason, detail: String| ConnectError::Tls {
        addr,
        identity: identity.as_str().into(),
        reason,
        detail,
    };
    let config = match inbound {
        Some(_) => tls.transport.clone(),
        None => tls.app.clone(),
    };
    let name = ServerName::try_from(identity.as_str().to_owned()).map_err(|e| {
        refused(
            TlsRefusal::Protocol,
            format!("identity is not a TLS name: {e}"),
        )
    })?;
    let handshake = TlsConnector::from(config).connect(name, tcp);
    let mut stream = match tokio::time::timeout(timeout, handshake).await {
        Err(_) => {
            return Err(refused(
                TlsRefusal::Timeout,
                format!(
                    "no handshake within {}",
                    humantime::format_duration(timeout)
                ),
            ));
        }
        Ok(Err(e)) => return Err(refused(TlsRefusal::of(&e), super::chain(&e))),
        Ok(Ok(stream)) => stream,
    };
    if inbound.is_some() {
        if stream.get_ref().1.alpn_protocol() != Some(tls_config::ALPN_TRANSPORT_HEADER) {
            return Err(refused(
                TlsRefusal::NoAlpn,
                "the inbound port did not negotiate transport.l5d.io/v1".to_owned(),
            ));
        }
        // An endpoint hinted opaque takes the bytes as they are: no session protocol, whatever
        // the caller spoke (spec §5.3).
        let protocol = match address.hint {
            Some(Hint::Opaque) => SessionProtocol::Opaque,
            _ => protocol,
        };
        // To a pod: its own port and no name. To another gateway (a mirror of a mirror): the
        // name and port it must route to.
        let header = transport_header::encode(&match &address.authority_override {
            None => TransportHeader {
                port: address.addr.port(),
                name: None,
                protocol,
            },
            Some(target) => TransportHeader {
                port: target.port(),
                name: Some(target.name().to_owned()),
                protocol,
            },
        });
        let written = async {
            stream.write_all(&header).await?;
            stream.flush().await
        };
        match tokio::time::timeout(timeout, written).await {
            Ok(Ok(())) => {}
            Ok(Err(source)) => return Err(ConnectError::Refused { addr, source }),
            Err(_) => return Err(ConnectError::Timeout(timeout)),
        }
    }
    Ok(Io::Tls(Box::new(stream)))
}

/// A TCP connection to `addr` within `timeout`, `TCP_NODELAY` set (requests are written whole,
/// so Nagle would only add a round trip of delay).
///
/// # Errors
/// `Refused` with the socket error, or `Timeout`. Cancel-safe.
pub(super) async fn tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => {
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        }
        Ok(Err(source)) => Err(ConnectError::Refused { addr, source }),
        Err(_) => Err(ConnectError::Timeout(timeout)),
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(tcp) => tcp.is_write_vectored(),
            Io::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}
