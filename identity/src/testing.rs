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

impl TestCa {
    /// The issuer CA (signs leaves and CSRs).
    pub fn issuer(&self) -> &Ca {
        &self.issuer
    }
}

/// An in-process Linkerd identity service: answers `Certify` over TLS + HTTP/2 by signing the
/// CSR with a [`TestCa`]'s issuer, if the token matches. It can be told to fail calls.
pub struct IdentityServer {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Its TLS identity (`LINKERD2_PROXY_IDENTITY_SVC_NAME`).
    pub name: String,
    state: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

struct ServerState {
    ca: Arc<TestCa>,
    token: Vec<u8>,
    lifetime: Duration,
    calls: std::sync::atomic::AtomicUsize,
    failures_left: std::sync::atomic::AtomicUsize,
    issued: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl IdentityServer {
    /// Starts serving on `127.0.0.1:0`; issued leaves live for `lifetime`; calls must carry
    /// `token`.
    pub async fn start(ca: Arc<TestCa>, token: &[u8], lifetime: Duration) -> Self {
        let name = "linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local";
        let creds = ca.credentials(name);
        let mut tls = ServerConfig::builder_with_provider(crate::tls_config::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_no_client_auth()
            .with_single_cert(creds.chain().to_vec(), creds.key().clone_key())
            .expect("identity server certificate");
        tls.alpn_protocols = vec![crate::tls_config::ALPN_H2.to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind identity server");
        let addr = listener.local_addr().expect("identity server address");
        let state = Arc::new(ServerState {
            ca,
            token: token.to_vec(),
            lifetime,
            calls: 0.into(),
            failures_left: 0.into(),
            issued: std::sync::Mutex::new(Vec::new()),
        });
        let serving = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, state) = (acceptor.clone(), serving.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move {
                            let mut grpc =
                                tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                            Ok::<_, std::convert::Infallible>(
                                grpc.unary(CertifyService(state), req).await,
                            )
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        Self {
            addr,
            name: name.to_owned(),
            state,
            task,
        }
    }

    /// `Certify` calls answered so far (successful or not).
    pub fn calls(&self) -> usize {
        self.state.calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Makes the next `n` calls fail with `UNAVAILABLE`.
    pub fn fail_next(&self, n: usize) {
        self.state
            .failures_left
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// The leaves issued so far (DER), oldest first.
    pub fn issued(&self) -> Vec<Vec<u8>> {
        self.state
            .issued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for IdentityServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct CertifyService(Arc<ServerState>);

impl tonic::server::UnaryService<crate::certify::CertifyRequest> for CertifyService {
    type Response = crate::certify::CertifyResponse;
    type Future = std::future::Ready<Result<tonic::Response<Self::Response>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<crate::certify::CertifyRequest>) -> Self::Future {
        use std::sync::atomic::Ordering;
        let state = &self.0;
        state.calls.fetch_add(1, Ordering::SeqCst);
        let failing = state
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        std::future::ready(if failing {
            Err(tonic::Status::unavailable("identity service told to fail"))
        } else {
            self.certify(request.into_inner())
        })
    }
}

impl CertifyService {
    fn certify(
        &self,
        request: crate::certify::CertifyRequest,
    ) -> Result<tonic::Response<crate::certify::CertifyResponse>, tonic::Status> {
        let state = &self.0;
        if request.token != state.token {
            return Err(tonic::Status::unauthenticated("bad token"));
        }
        let validity = Validity::from_now(state.lifetime);
        let chain = state
            .ca
            .issuer()
            .sign_csr(&request.certificate_signing_request, validity)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let leaf = chain[0].to_vec();
        state
            .issued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(leaf.clone());
        let until = crate::source::unix_seconds(validity.not_after);
        Ok(tonic::Response::new(crate::certify::CertifyResponse {
            leaf_certificate: leaf,
            intermediate_certificates: chain[1..].iter().map(|c| c.to_vec()).collect(),
            valid_until: Some(prost_types::Timestamp {
                seconds: until,
                nanos: 0,
            }),
        }))
    }
}
