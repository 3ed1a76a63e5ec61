//! What a Linkerd client proxy does to a gateway, as a load generator, plus a TLS probe.
//!
//! `l5d-load load` is workloads G, H and G3 of the side-by-side harness: mTLS with SNI = the
//! gateway's identity and ALPN `transport.l5d.io/v1`, a transport header naming the target with
//! session protocol HTTP/2, then HTTP/2 carrying many concurrent streams over a few connections,
//! each request marked `l5d-orig-proto: HTTP/1.1` (an application's HTTP/1 upgraded by its
//! proxy), with the proxy's default windows (64 KiB per stream, 1 MiB per connection). It prints
//! one JSON object: requests answered 200, failures, req/s, latency percentiles and MiB/s.
//!
//! `l5d-load probe` connects twice with one client configuration (the session cache of a
//! client that resumes, as oha's does: rustls with aws-lc-rs, the same defaults) and prints the
//! TLS version, key exchange group and handshake kind of each connection.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use gateway::transport_header::{self, SessionProtocol, TransportHeader};
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Linkerd's proxy-to-gateway ALPN.
const TRANSPORT_ALPN: &[u8] = b"transport.l5d.io/v1";
/// linkerd2-proxy's default HTTP/2 client windows.
const STREAM_WINDOW: u32 = 65_535;
const CONNECTION_WINDOW: u32 = 1 << 20;
/// A request not answered in this long counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(about = "A Linkerd client proxy's traffic to a gateway (load), or a TLS probe")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Transport header + HTTP/2 with l5d-orig-proto, many streams over a few connections.
    Load(Load),
    /// Two connections with one session cache: version, key exchange, full or resumed.
    Probe(Probe),
}

#[derive(Args)]
struct Tls {
    /// The gateway's address.
    #[arg(long)]
    addr: SocketAddr,
    /// SNI and the name the gateway's certificate must carry.
    #[arg(long)]
    server_name: String,
    /// Trust anchors (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// The client's certificate chain (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// The client's key (PEM).
    #[arg(long)]
    key: PathBuf,
}

#[derive(Args)]
struct Load {
    #[command(flatten)]
    tls: Tls,
    /// The target, `name:port`, written in the transport header and as `:authority`.
    #[arg(long)]
    target: String,
    /// The request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Connections to the gateway.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Concurrent streams per connection.
    #[arg(long, default_value_t = 32)]
    streams: usize,
    /// How long to send requests.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[derive(Args)]
struct Probe {
    #[command(flatten)]
    tls: Tls,
    /// `l5d-dst-override` of the HTTP/1.1 request made on each connection (after which a TLS 1.3
    /// server has sent its tickets).
    #[arg(long)]
    dst_override: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("l5d-load: cannot start a runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Load(load) => run_load(load).await,
            Command::Probe(probe) => run_probe(probe).await,
        }
    });
    match result {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("l5d-load: {error}");
            ExitCode::FAILURE
        }
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn client_config(tls: &Tls, alpn: &[u8]) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&tls.ca)? {
        roots.add(cert?)?;
    }
    let chain = CertificateDer::pem_file_iter(&tls.cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)?;
    // oha's rustls has its default features, so it offers X25519MLKEM768 first (with an X25519
    // share); this workspace's rustls is built without `prefer-post-quantum`: say it explicitly.
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    use rustls::crypto::aws_lc_rs::kx_group as kx;
    provider.kx_groups = vec![kx::X25519MLKEM768, kx::X25519, kx::SECP256R1, kx::SECP384R1];
    let provider = Arc::new(provider);
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}

async fn connect(
    tls: &Tls,
    config: &Arc<rustls::ClientConfig>,
) -> Result<TlsStream<TcpStream>, Error> {
    let tcp = TcpStream::connect(tls.addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(tls.server_name.clone())?;
    Ok(TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await?)
}

async fn run_load(load: Load) -> Result<String, Error> {
    let (_, port) = load
        .target
        .rsplit_once(':')
        .ok_or("--target must be name:port")?;
    let header = TransportHeader {
        port: port.parse()?,
        name: Some(
            load.target
                .rsplit_once(':')
                .map_or("", |(n, _)| n)
                .to_owned(),
        ),
        protocol: SessionProtocol::Http2,
    };
    let config = client_config(&load.tls, TRANSPORT_ALPN)?;
    let mut senders = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        let mut tls = connect(&load.tls, &config).await?;
        tls.write_all(&transport_header::encode(&header)).await?;
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Empty<Bytes>>(TokioIo::new(tls))
            .await?;
        tokio::spawn(connection);
        senders.push(sender);
    }
    let uri: hyper::Uri = format!("http://{}{}", load.target, load.path).parse()?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(load.seconds);
    let mut tasks = Vec::new();
    for sender in &senders {
        for _ in 0..load.streams {
            let mut sender = sender.clone();
            let uri = uri.clone();
            tasks.push(tokio::spawn(async move {
                let mut tally = Tally::default();
                while Instant::now() < deadline {
                    let request = Request::get(uri.clone())
                        .header("l5d-orig-proto", "HTTP/1.1")
                        .body(Empty::<Bytes>::new());
                    let Ok(request) = request else { break };
                    let sent = Instant::now();
                    let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
                        let response = sender.send_request(request).await?;
                        let status = response.status();
                        let body = response.into_body().collect().await?.to_bytes();
                        Ok::<_, Error>((status, body.len()))
                    })
                    .await;
                    match answer {
                        Ok(Ok((status, bytes))) if status == 200 => {
                            tally.ok += 1;
                            tally.bytes += bytes as u64;
                            let micros = sent.elapsed().as_micros();
                            tally.micros.push(u32::try_from(micros).unwrap_or(u32::MAX));
                        }
                        _ => tally.failed += 1,
                    }
                }
                tally
            }));
        }
    }
    let mut all = Tally::default();
    for task in tasks {
        let tally = task.await?;
        all.ok += tally.ok;
        all.failed += tally.failed;
        all.bytes += tally.bytes;
        all.micros.extend(tally.micros);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.micros.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.micros.is_empty() {
            return 0.0;
        }
        let i = ((all.micros.len() as f64 * p).ceil() as usize).clamp(1, all.micros.len()) - 1;
        f64::from(all.micros[i]) / 1000.0
    };
    Ok(serde_json::json!({
        "ok": all.ok,
        "failed": all.failed,
        "seconds": elapsed,
        "rps": all.ok as f64 / elapsed,
        "mib_s": all.bytes as f64 / elapsed / f64::from(1u32 << 20),
        "p50": pct(0.50),
        "p99": pct(0.99),
        "p999": pct(0.999),
    })
    .to_string())
}

#[derive(Default)]
struct Tally {
    ok: u64,
    failed: u64,
    bytes: u64,
    micros: Vec<u32>,
}

async fn run_probe(probe: Probe) -> Result<String, Error> {
    let config = client_config(&probe.tls, b"http/1.1")?;
    let mut connections = Vec::new();
    for _ in 0..2 {
        let tls = connect(&probe.tls, &config).await?;
        let (_, session) = tls.get_ref();
        let version = session
            .protocol_version()
            .map_or("?".to_owned(), |v| format!("{v:?}"));
        let group = session
            .negotiated_key_exchange_group()
            .map_or("none".to_owned(), |g| format!("{:?}", g.name()));
        let kind = session
            .handshake_kind()
            .map_or("?".to_owned(), |k| format!("{k:?}"));
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tls)).await?;
        let driver = tokio::spawn(connection);
        let request = Request::get("/")
            .header("host", &probe.dst_override)
            .header("l5d-dst-override", &probe.dst_override)
            .body(Empty::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        drop(sender);
        // The connection ends once the request is answered and the sender is gone; the
        // server's tickets, sent after its handshake, have been read by then.
        let _ = tokio::time::timeout(Duration::from_secs(2), driver).await;
        connections.push(serde_json::json!({
            "version": version, "group": group, "handshake": kind, "status": status,
        }));
    }
    Ok(serde_json::Value::Array(connections).to_string())
}
