//! A mesh client of the gateway, as a remote Linkerd proxy or a plain mTLS HTTP client is: mTLS
//! with a chosen identity and ALPN, optionally a transport header, then HTTP/1.1 or HTTP/2.
//! `check --remote`, `demo` and the tests use it.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use identity::{Credentials, TrustAnchors, tls_config};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::transport_header::{self, TransportHeader};

/// An mTLS client of the gateway, as a remote proxy or a plain mTLS HTTP client would be.
#[derive(Clone)]
pub struct MtlsClient {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    addr: SocketAddr,
}

impl MtlsClient {
    /// A client presenting `credentials` (none: no client certificate) that trusts `anchors`
    /// and expects the gateway to be `gateway_id`, offering `alpn`.
    ///
    /// # Errors
    /// When the identity is not a valid server name or rustls refuses the key.
    pub fn new(
        credentials: Option<&Credentials>,
        anchors: &TrustAnchors,
        gateway_id: &str,
        addr: SocketAddr,
        alpn: &[&[u8]],
    ) -> anyhow::Result<Self> {
        let config = tls_config::client_config(credentials, anchors, alpn)?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name: ServerName::try_from(gateway_id.to_owned())
                .context("gateway identity as server name")?,
            addr,
        })
    }

    /// Connects and completes the handshake.
    ///
    /// # Errors
    /// Connect or handshake failure (for a refused client: an alert from the gateway, or EOF).
    pub async fn connect(&self) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await?;
        Ok(tls)
    }

    /// Connects and writes `header` first, as a Linkerd proxy does after negotiating
    /// `transport.l5d.io/v1` (the client must offer that ALPN).
    ///
    /// # Errors
    /// As [`MtlsClient::connect`], or a write failure.
    pub async fn connect_with_header(
        &self,
        header: &TransportHeader,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let mut tls = self.connect().await?;
        tls.write_all(&transport_header::encode(header)).await?;
        Ok(tls)
    }

    /// Opens an HTTP/1.1 connection.
    ///
    /// # Errors
    /// As [`MtlsClient::connect`], or an HTTP handshake failure.
    pub async fn http1(&self) -> anyhow::Result<Http1Sender> {
        http1_on(self.connect().await?).await
    }

    /// Opens an HTTP/2 connection.
    ///
    /// # Errors
    /// As [`MtlsClient::connect`], or an HTTP/2 handshake failure.
    pub async fn http2(&self) -> anyhow::Result<Http2Sender> {
        http2_on(self.connect().await?).await
    }
}

/// Sends HTTP/1.1 requests on one connection.
pub type Http1Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;
/// Sends HTTP/2 requests on one connection.
pub type Http2Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// Speaks HTTP/1.1 on `io` (a driver task is spawned).
///
/// # Errors
/// The HTTP handshake failure.
pub async fn http1_on<IO>(io: IO) -> anyhow::Result<Http1Sender>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    Ok(send)
}

/// Speaks HTTP/2 (prior knowledge) on `io` (a driver task is spawned).
///
/// # Errors
/// The HTTP/2 handshake failure.
pub async fn http2_on<IO>(io: IO) -> anyhow::Result<Http2Sender>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
    tokio::spawn(conn);
    Ok(send)
}
