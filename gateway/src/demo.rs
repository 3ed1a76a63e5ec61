//! `meshgate demo`: the whole topology on loopback with a throw-away PKI — two local services, the
//! gateway, a trusted caller (HTTP/2 by authority, HTTP/1.1 by `l5d-dst-override`), a refused
//! caller of a foreign trust anchor — then a summary. The backend and client are reused by tests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use identity::issue::{Ca, Issued, LeafSpec, Validity};
use identity::{Credentials, TrustAnchors, tls_config};
use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::app;
use crate::config::Config;

/// The gateway identity the demo (and a default Linkerd install) uses.
pub const GATEWAY_ID: &str =
    "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local";
/// The trusted caller's identity.
pub const CLIENT_ID: &str = "web.east.serviceaccount.identity.linkerd.cluster.local";
/// The demo's two local services.
pub const SERVICES: [&str; 2] = [
    "podinfo.test.svc.cluster.local:9898",
    "frontend.test.svc.cluster.local:8080",
];

const DAY: Duration = Duration::from_secs(86_400);

/// A local HTTP/1 + HTTP/2 service: `GET` answers `<name> <method> <path>` and echoes what the
/// gateway set in `x-seen-*` headers; any request with a body gets the body streamed back.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl Backend {
    /// Starts a backend on `127.0.0.1:0` on the current runtime.
    ///
    /// # Errors
    /// When it cannot bind.
    pub async fn start(name: &'static str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let service =
                        service_fn(
                            move |req| async move { Ok::<_, Infallible>(answer(name, req)) },
                        );
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, connections })
    }

    /// How many connections it has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

fn answer(name: &str, req: Request<Incoming>) -> Response<BoxBody<Bytes, hyper::Error>> {
    let mut seen = Vec::new();
    for header in ["l5d-client-id", "forwarded", "host", "l5d-dst-override"] {
        let values: Vec<&str> = req
            .headers()
            .get_all(header)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if !values.is_empty() {
            seen.push((format!("x-seen-{header}"), values.join(", ")));
        }
    }
    seen.push(("x-seen-version".to_owned(), format!("{:?}", req.version())));
    let has_body = req.headers().contains_key(http::header::CONTENT_LENGTH)
        || req.headers().contains_key(http::header::TRANSFER_ENCODING)
        || req.version() == http::Version::HTTP_2 && req.method() != http::Method::GET;
    let mut response = if has_body {
        Response::new(req.into_body().boxed())
    } else {
        let text = format!("{name}: {} {}\n", req.method(), req.uri().path());
        Response::new(
            Full::new(Bytes::from(text))
                .map_err(|never| match never {})
                .boxed(),
        )
    };
    for (header, value) in seen {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(header.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

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

    /// Opens an HTTP/1.1 connection.
    ///
    /// # Errors
    /// As [`MtlsClient::connect`], or an HTTP handshake failure.
    pub async fn http1(
        &self,
    ) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        let tls = self.connect().await?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(send)
    }

    /// Opens an HTTP/2 connection.
    ///
    /// # Errors
    /// As [`MtlsClient::connect`], or an HTTP/2 handshake failure.
    pub async fn http2(
        &self,
    ) -> anyhow::Result<hyper::client::conn::http2::SendRequest<Full<Bytes>>> {
        let tls = self.connect().await?;
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(send)
    }
}

/// The demo's PKI, written to a directory so `curl` can use it.
pub struct DemoPki {
    /// Where the PEM files are.
    pub dir: PathBuf,
    /// Trust anchors.
    pub anchors: TrustAnchors,
    /// The gateway's leaf.
    pub gateway: Issued,
    /// The trusted caller's leaf.
    pub client: Issued,
    /// A caller under a foreign trust anchor.
    pub foreign: Issued,
    /// The foreign caller's trust anchor.
    pub foreign_anchors: TrustAnchors,
}

impl DemoPki {
    /// Creates a root, an issuer and leaves, and writes them to `dir`.
    ///
    /// # Errors
    /// When generation or writing fails.
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        let root = Ca::root("root.linkerd.cluster.local", Validity::from_now(365 * DAY))?;
        let issuer = root.issuer(
            "identity.linkerd.cluster.local",
            Validity::from_now(30 * DAY),
        )?;
        let leaf = |ca: &Ca, identity: &str| {
            ca.leaf(&LeafSpec {
                identity,
                spiffe: None,
                validity: Validity::from_now(DAY),
            })
        };
        let gateway = leaf(&issuer, GATEWAY_ID)?;
        let client = leaf(&issuer, CLIENT_ID)?;
        let foreign_root = Ca::root("root.other-mesh.example", Validity::from_now(365 * DAY))?;
        let foreign = leaf(&foreign_root, "intruder.other-mesh.example")?;
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let write = |name: &str, text: &str, private: bool| -> anyhow::Result<()> {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
            if private {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
            Ok(())
        };
        write("ca.crt", &root.cert_pem(), false)?;
        write("gateway.crt", &gateway.chain_pem, false)?;
        write("gateway.key", &gateway.key_pem, true)?;
        write("client.crt", &client.chain_pem, false)?;
        write("client.key", &client.key_pem, true)?;
        write("foreign.crt", &foreign.chain_pem, false)?;
        write("foreign.key", &foreign.key_pem, true)?;
        let anchors = TrustAnchors::from_pem("demo root", root.cert_pem().as_bytes())?;
        let foreign_anchors =
            TrustAnchors::from_der("foreign root", vec![foreign_root.cert_der().clone()])?;
        Ok(Self {
            dir: dir.to_owned(),
            anchors,
            gateway,
            client,
            foreign,
            foreign_anchors,
        })
    }
}

/// Options of `meshgate demo`.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Keep serving after the walk-through and print `curl` commands.
    pub serve: bool,
    /// Data listener (default `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// Admin listener (default `127.0.0.1:0`).
    pub admin_listen: SocketAddr,
}

/// Runs the demo; returns whether every step behaved as expected.
///
/// # Errors
/// When the topology cannot be set up.
pub async fn run(options: DemoOptions) -> anyhow::Result<bool> {
    let dir = std::env::temp_dir().join(format!("meshgate-demo-{}", std::process::id()));
    let pki = DemoPki::create(&dir)?;
    let podinfo = Backend::start("podinfo").await?;
    let frontend = Backend::start("frontend").await?;
    let mut config = Config {
        listen: options.listen,
        admin_listen: options.admin_listen,
        cert: Some(dir.join("gateway.crt")),
        key: Some(dir.join("gateway.key")),
        trust_anchors: Some(dir.join("ca.crt")),
        ..Config::default()
    };
    config
        .endpoints
        .insert(SERVICES[0].to_owned(), vec![podinfo.addr]);
    config
        .endpoints
        .insert(SERVICES[1].to_owned(), vec![frontend.addr]);
    let bound = app::bind(&config).await?;
    println!(
        "meshgate demo: gateway {} on {} (admin {})",
        bound.identity, bound.data_addr, bound.admin_addr
    );
    println!(
        "  services: {} -> {}, {} -> {}",
        SERVICES[0], podinfo.addr, SERVICES[1], frontend.addr
    );
    println!("  PKI in {}\n", dir.display());

    let mut ok = true;
    let client_creds = pki.client.credentials(&pki.anchors)?;
    let alpn_h2 = [tls_config::ALPN_H2];
    let alpn_h1 = [tls_config::ALPN_HTTP1];
    let trusted_h2 = MtlsClient::new(
        Some(&client_creds),
        &pki.anchors,
        GATEWAY_ID,
        bound.data_addr,
        &alpn_h2,
    )?;
    let trusted_h1 = MtlsClient::new(
        Some(&client_creds),
        &pki.anchors,
        GATEWAY_ID,
        bound.data_addr,
        &alpn_h1,
    )?;

    let mut h2 = trusted_h2.http2().await?;
    for i in 0..3 {
        let req =
            Request::get(format!("http://{}/podinfo/{i}", SERVICES[0])).body(Full::default())?;
        ok &= report(
            &format!("HTTP/2  :authority {}", SERVICES[0]),
            {
                h2.ready().await?;
                h2.send_request(req).await
            },
            200,
        )
        .await;
    }
    let mut h1 = trusted_h1.http1().await?;
    let req = Request::get("/frontend")
        .header("host", "ignored.example")
        .header("l5d-dst-override", SERVICES[1])
        .body(Full::default())?;
    ok &= report(
        &format!("HTTP/1.1 l5d-dst-override {}", SERVICES[1]),
        {
            h1.ready().await?;
            h1.send_request(req).await
        },
        200,
    )
    .await;
    let req = Request::get("/")
        .header(
            "l5d-dst-override",
            "kubernetes.default.svc.cluster.local.evil.com",
        )
        .body(Full::default())?;
    ok &= report(
        "HTTP/1.1 outside the allowed suffixes",
        {
            h1.ready().await?;
            h1.send_request(req).await
        },
        404,
    )
    .await;

    let foreign_creds = pki.foreign.credentials(&pki.foreign_anchors)?;
    let intruder = MtlsClient::new(
        Some(&foreign_creds),
        &pki.anchors,
        GATEWAY_ID,
        bound.data_addr,
        &alpn_h1,
    )?;
    let refused = match intruder.http1().await {
        Err(e) => {
            println!("  refused  caller of a foreign trust anchor: {e}");
            true
        }
        Ok(mut send) => {
            let req = Request::get("/")
                .header("l5d-dst-override", SERVICES[0])
                .body(Full::default())?;
            let result = send.send_request(req).await;
            println!(
                "  refused  caller of a foreign trust anchor: {}",
                result
                    .as_ref()
                    .map_or_else(|e| e.to_string(), |r| format!("UNEXPECTED {}", r.status()))
            );
            result.is_err()
        }
    };
    ok &= refused;

    println!("\nmetrics (http://{}/metrics):", bound.admin_addr);
    for line in bound.metrics.encode().lines() {
        let interesting = (line.starts_with("request_total") || line.starts_with("response_total"))
            || (line.starts_with("gateway_handshakes_refused_total") && !line.ends_with(" 0"));
        if interesting {
            println!("  {line}");
        }
    }
    println!(
        "\nready: {}",
        bound
            .readiness
            .check()
            .map_or_else(|e| format!("no ({e})"), |()| "yes".to_owned())
    );
    println!(
        "{}",
        if ok {
            "demo: every step behaved as expected"
        } else {
            "demo: SOME STEPS FAILED"
        }
    );

    if options.serve {
        print_curl(&pki.dir, &bound);
        tokio::signal::ctrl_c().await?;
    }
    bound.drain(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ok)
}

async fn report(what: &str, result: hyper::Result<Response<Incoming>>, expect: u16) -> bool {
    match result {
        Ok(response) => {
            let status = response.status();
            let error = response
                .headers()
                .get("l5d-proxy-error")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let client_id = response
                .headers()
                .get("x-seen-l5d-client-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let detail = match (error, client_id) {
                (Some(e), _) => format!("l5d-proxy-error: {e}"),
                (None, Some(id)) => format!(
                    "{} (backend saw l5d-client-id {id})",
                    String::from_utf8_lossy(&body).trim()
                ),
                (None, None) => String::from_utf8_lossy(&body).trim().to_owned(),
            };
            println!("  {}  {what} -> {detail}", status.as_u16());
            status == StatusCode::from_u16(expect).unwrap_or(StatusCode::OK)
        }
        Err(e) => {
            println!("  ERR  {what} -> {e}");
            false
        }
    }
}

fn print_curl(dir: &Path, bound: &app::Bound) {
    let d = dir.display();
    let port = bound.data_addr.port();
    println!("\nServing until Ctrl-C. Try:");
    for service in SERVICES {
        println!(
            "  curl --cacert {d}/ca.crt --cert {d}/client.crt --key {d}/client.key \\\n    --resolve {GATEWAY_ID}:{port}:127.0.0.1 -H 'l5d-dst-override: {service}' https://{GATEWAY_ID}:{port}/"
        );
    }
    println!(
        "  curl --cacert {d}/ca.crt --cert {d}/foreign.crt --key {d}/foreign.key --resolve {GATEWAY_ID}:{port}:127.0.0.1 https://{GATEWAY_ID}:{port}/   # refused"
    );
    println!("  curl http://{}/ready", bound.admin_addr);
    println!("  curl http://{}/metrics", bound.admin_addr);
}
