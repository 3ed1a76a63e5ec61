//! A stand-in for a meshed pod's inbound proxy (the demo's meshed service, the tests' pods and
//! the benchmark's mTLS hop): it terminates mTLS as the pod's identity, requires a client
//! certificate from the trust anchors, records who called and how (client identity, SNI, ALPN,
//! transport header), then relays the bytes to the application behind it.
//!
//! Like a real pod proxy (spec §16), an application port offers no ALPN, and the inbound port
//! offers only `transport.l5d.io/v1` and reads a transport header first.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use identity::{Credentials, TrustAnchors, identity_of_cert, tls_config};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::transport_header::{self, TransportHeader};

/// Which port of the pod proxy it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodPort {
    /// An application port: TLS without ALPN, then the application's bytes.
    App,
    /// The inbound port (4143): ALPN `transport.l5d.io/v1`, a transport header, then the bytes.
    Inbound,
}

/// What one accepted connection showed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// The caller's identity from its certificate.
    pub client_id: Option<String>,
    /// The caller's leaf certificate (DER).
    pub client_leaf: Option<Vec<u8>>,
    /// The SNI the caller sent.
    pub sni: Option<String>,
    /// The ALPN protocol agreed.
    pub alpn: Option<Vec<u8>>,
    /// The transport header read (inbound port).
    pub header: Option<TransportHeader>,
}

/// A running stand-in pod.
pub struct MeshedPod {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl MeshedPod {
    /// Starts a pod on `127.0.0.1:0` presenting `credentials`, trusting `anchors` for callers, in
    /// front of the application at `app`.
    ///
    /// # Errors
    /// When rustls refuses the credentials or it cannot bind.
    pub async fn start(
        credentials: &Credentials,
        anchors: &TrustAnchors,
        port: PodPort,
        app: SocketAddr,
    ) -> anyhow::Result<Self> {
        let alpn: &[&[u8]] = match port {
            PodPort::App => &[],
            PodPort::Inbound => &[tls_config::ALPN_TRANSPORT_HEADER],
        };
        let config = tls_config::server_config(credentials, anchors, alpn)?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, record) = (acceptor.clone(), record.clone());
                tokio::spawn(async move {
                    if let Err(e) = relay(acceptor, tcp, port, app, record).await {
                        tracing::debug!(error = %e, "pod connection ended");
                    }
                });
            }
        });
        Ok(Self { addr, seen })
    }

    /// What every connection that finished its handshake showed, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

async fn relay(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    port: PodPort,
    app: SocketAddr,
    record: Arc<Mutex<Vec<Seen>>>,
) -> anyhow::Result<()> {
    let tls = acceptor.accept(tcp).await?;
    let (_, conn) = tls.get_ref();
    let leaf = conn.peer_certificates().and_then(|certs| certs.first());
    let mut seen = Seen {
        client_id: leaf.and_then(identity_of_cert).map(|id| id.to_string()),
        client_leaf: leaf.map(|der| der.to_vec()),
        sni: conn.server_name().map(str::to_owned),
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        header: None,
    };
    let mut upstream = TcpStream::connect(app).await?;
    let _ = upstream.set_nodelay(true);
    match port {
        PodPort::App => {
            push(&record, seen);
            let mut tls = tls;
            copy(&mut tls, &mut upstream).await
        }
        PodPort::Inbound => {
            let (header, mut io) = transport_header::read(tls).await?;
            seen.header = Some(header);
            push(&record, seen);
            copy(&mut io, &mut upstream).await
        }
    }
}

fn push(record: &Mutex<Vec<Seen>>, seen: Seen) {
    record
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(seen);
}

/// Both ways until each side has closed its write half (half-close passes through).
async fn copy<A, B>(a: &mut A, b: &mut B) -> anyhow::Result<()>
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::io::copy_bidirectional(a, b).await?;
    Ok(())
}
