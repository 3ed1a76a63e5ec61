//! `meshgate demo`: the whole topology on loopback with a throw-away PKI — two local services, the
//! gateway, a trusted caller (HTTP/2 by authority, HTTP/1.1 by `l5d-dst-override`), a refused
//! caller of a foreign trust anchor — then a summary. The backend and client are reused by tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use identity::issue::{Ca, Issued, LeafSpec, Validity};
use identity::{TrustAnchors, tls_config};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

mod backend;
pub mod controller;
mod pod;

pub use backend::{Backend, Speaks};
pub use controller::Controller;
pub use pod::{MeshedPod, PodPort, Seen};

use crate::app;
use crate::cli::client::{MtlsClient, http2_on};
use crate::config::Config;
use crate::transport_header::{SessionProtocol, TransportHeader};

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
/// The identity of the meshed service's pod (`frontend`, behind a stand-in pod proxy).
pub const POD_ID: &str = "frontend.test.serviceaccount.identity.linkerd.cluster.local";
/// The demo's opaque TCP echo service.
pub const ECHO_SERVICE: (&str, u16) = ("echo.test.svc.cluster.local", 7777);
/// The demo's split service: its profile (from the embedded Destination controller) sends half
/// its traffic to its local pods and half to the mirror of the west cluster's.
pub const SPLIT: (&str, &str) = (
    "store.test.svc.cluster.local:8080",
    "store-west.test.svc.cluster.local:8080",
);

/// The demo's failover service: served by local pods (from the embedded controller) and, when
/// they are gone, by the west cluster's gateway.
pub const FAILOVER: &str = "cart.test.svc.cluster.local:8080";
/// The identity of the west cluster's gateway (a second gateway in the demo process).
pub const WEST_GATEWAY_ID: &str =
    "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.west.cluster.local";
/// How long `cart`'s pods must be back before its traffic returns (the demo's hold-down).
const HOLD_DOWN: Duration = Duration::from_secs(1);

const DAY: Duration = Duration::from_secs(86_400);

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
    /// The meshed service's pod leaf.
    pub pod: Issued,
    /// The west cluster's gateway's leaf.
    pub west: Issued,
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
        let pod = leaf(&issuer, POD_ID)?;
        let west = leaf(&issuer, WEST_GATEWAY_ID)?;
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
            pod,
            west,
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

/// Header sessions: HTTP/2 with the target fixed by the header, and an opaque TCP echo.
async fn header_steps(client: &MtlsClient) -> anyhow::Result<bool> {
    let header = TransportHeader {
        port: 9898,
        name: Some("podinfo.test.svc.cluster.local".to_owned()),
        protocol: SessionProtocol::Http2,
    };
    let mut h2 = http2_on(client.connect_with_header(&header).await?).await?;
    // The header decides the target; the request's own authority does not.
    let req = Request::get("http://web.east.svc.cluster.local/via-header").body(Full::default())?;
    let mut ok = report(
        "header http/2   podinfo.test.svc.cluster.local:9898",
        h2.send_request(req).await,
        200,
    )
    .await;

    let (name, port) = ECHO_SERVICE;
    let header = TransportHeader {
        port,
        name: Some(name.to_owned()),
        protocol: SessionProtocol::Opaque,
    };
    let sent = b"ping through the gateway";
    let mut echoed = Vec::new();
    let exchange = async {
        let mut stream = client.connect_with_header(&header).await?;
        stream.write_all(sent).await?;
        stream.shutdown().await?;
        stream.read_to_end(&mut echoed).await
    };
    let echoed_ok = exchange.await.is_ok() && echoed == sent;
    println!(
        "  {}  header opaque {name}:{port} -> echoed {:?} and closed after our half-close",
        if echoed_ok { "ok " } else { "ERR" },
        String::from_utf8_lossy(&echoed)
    );
    ok &= echoed_ok;
    Ok(ok)
}

/// Plain mTLS HTTP: HTTP/2 routed by `:authority`, HTTP/1.1 by `l5d-dst-override`, and a name
/// outside the allowlist.
async fn plain_steps(h2_client: &MtlsClient, h1_client: &MtlsClient) -> anyhow::Result<bool> {
    let mut ok = true;
    let mut h2 = h2_client.http2().await?;
    for i in 0..3 {
        let req =
            Request::get(format!("http://{}/podinfo/{i}", SERVICES[0])).body(Full::default())?;
        h2.ready().await?;
        ok &= report(
            &format!("HTTP/2   :authority {}", SERVICES[0]),
            h2.send_request(req).await,
            200,
        )
        .await;
    }
    let mut h1 = h1_client.http1().await?;
    let req = Request::get("/frontend")
        .header("host", "ignored.example")
        .header("l5d-dst-override", SERVICES[1])
        .body(Full::default())?;
    h1.ready().await?;
    ok &= report(
        &format!("HTTP/1.1 l5d-dst-override {}", SERVICES[1]),
        h1.send_request(req).await,
        200,
    )
    .await;
    let outside = "kubernetes.default.svc.cluster.local.evil.com";
    let req = Request::get("/")
        .header("l5d-dst-override", outside)
        .body(Full::default())?;
    h1.ready().await?;
    ok &= report(
        &format!("HTTP/1.1 l5d-dst-override {outside}"),
        h1.send_request(req).await,
        404,
    )
    .await;
    Ok(ok)
}

/// The meshed service's pod proxy saw the gateway's identity over mTLS, with its own as SNI.
fn meshed_step(pod: &MeshedPod) -> bool {
    let seen = pod.seen();
    let ok = !seen.is_empty()
        && seen.iter().all(|s| {
            s.client_id.as_deref() == Some(GATEWAY_ID) && s.sni.as_deref() == Some(POD_ID)
        });
    println!(
        "  {}  {}'s pod proxy: {} mTLS connection(s), caller {}, SNI {}",
        if ok { "ok " } else { "ERR" },
        SERVICES[1],
        seen.len(),
        seen.first()
            .and_then(|s| s.client_id.as_deref())
            .unwrap_or("none"),
        seen.first()
            .and_then(|s| s.sni.as_deref())
            .unwrap_or("none"),
    );
    ok
}

/// The split service, 100 requests over one HTTP/2 connection: counts per backend.
async fn split_step(client: &MtlsClient) -> anyhow::Result<bool> {
    let (service, west) = SPLIT;
    let mut h2 = client.http2().await?;
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..100 {
        h2.ready().await?;
        let req = Request::get(format!("http://{service}/")).body(Full::default())?;
        let response = h2.send_request(req).await?;
        let ok = response.status() == StatusCode::OK;
        let body = response.into_body().collect().await?.to_bytes();
        let name = if ok {
            String::from_utf8_lossy(&body)
                .split(':')
                .next()
                .unwrap_or_default()
                .to_owned()
        } else {
            "failed".to_owned()
        };
        *counts.entry(name).or_default() += 1;
    }
    let local = counts.get("store").copied().unwrap_or(0);
    let remote = counts.get("store-west").copied().unwrap_or(0);
    let ok = local + remote == 100 && local >= 25 && remote >= 25;
    println!(
        "  {}  {service} split 50/50 by its profile -> local pods {local}, {west} {remote} (of 100)",
        if ok { "ok " } else { "ERR" },
    );
    Ok(ok)
}

/// `n` requests to `service` over one HTTP/2 connection: answers per backend name.
async fn tally(
    client: &MtlsClient,
    service: &str,
    n: usize,
) -> anyhow::Result<std::collections::BTreeMap<String, usize>> {
    let mut h2 = client.http2().await?;
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..n {
        h2.ready().await?;
        let req = Request::get(format!("http://{service}/")).body(Full::default())?;
        let response = h2.send_request(req).await?;
        let ok = response.status() == StatusCode::OK;
        let body = response.into_body().collect().await?.to_bytes();
        let name = match ok {
            true => String::from_utf8_lossy(&body)
                .split(':')
                .next()
                .unwrap_or_default()
                .to_owned(),
            false => "failed".to_owned(),
        };
        *counts.entry(name).or_default() += 1;
    }
    Ok(counts)
}

/// `cart`: served locally; its pods go away (the controller says no endpoints) and its traffic
/// fails over to the west cluster's gateway; they come back and, after the hold-down, so does
/// the traffic.
async fn failover_step(
    client: &MtlsClient,
    controller: &Controller,
    cart: &Backend,
) -> anyhow::Result<bool> {
    use controller::{Endpoints, weighted};
    let local = tally(client, FAILOVER, 10).await?;
    controller.set_endpoints(FAILOVER, Endpoints::Set(Vec::new()));
    // The gateway hears of it over its Get stream: the first requests may still go local.
    let mut west = tally(client, FAILOVER, 1).await?;
    for _ in 0..50 {
        if west.contains_key("cart-west") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        west = tally(client, FAILOVER, 1).await?;
    }
    let west = tally(client, FAILOVER, 10).await?;
    controller.set_endpoints(FAILOVER, Endpoints::Set(vec![weighted(cart.addr, 1)]));
    let held = tally(client, FAILOVER, 1).await?;
    let mut back = held.clone();
    let started = tokio::time::Instant::now();
    while !back.contains_key("cart") && started.elapsed() < HOLD_DOWN * 5 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        back = tally(client, FAILOVER, 1).await?;
    }
    let back = tally(client, FAILOVER, 10).await?;
    let count = |t: &std::collections::BTreeMap<String, usize>, name: &str| {
        t.get(name).copied().unwrap_or(0)
    };
    let ok = count(&local, "cart") == 10
        && count(&west, "cart-west") == 10
        && count(&held, "cart-west") == 1
        && count(&back, "cart") == 10;
    println!(
        "  {}  {FAILOVER}: local pods {}/10; pods gone -> west gateway {}/10 (mTLS as {GATEWAY_ID}, transport header); pods back -> still west during the {} hold-down, then local {}/10",
        if ok { "ok " } else { "ERR" },
        count(&local, "cart"),
        count(&west, "cart-west"),
        humantime::format_duration(HOLD_DOWN),
        count(&back, "cart"),
    );
    Ok(ok)
}

/// The west cluster's gateway: serves `cart` from its own backend.
async fn west_gateway(pki: &DemoPki, cart_west: &Backend) -> anyhow::Result<app::Bound> {
    let mut config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Config::default()
    };
    config
        .endpoints
        .insert(FAILOVER.to_owned(), vec![cart_west.addr.into()]);
    let identity = app::LoadedIdentity {
        anchors: pki.anchors.clone(),
        credentials: pki.west.credentials(&pki.anchors)?,
        reload: app::Reload::Static,
    };
    app::start(&config, identity, None).await
}

/// A caller whose certificate chains to another trust anchor is refused at the handshake.
async fn refused_step(intruder: &MtlsClient) -> anyhow::Result<bool> {
    let outcome = match intruder.http1().await {
        Err(e) => Err(format!("{e:#}")),
        Ok(mut send) => {
            let req = Request::get("/")
                .header("l5d-dst-override", SERVICES[0])
                .body(Full::default())?;
            send.send_request(req)
                .await
                .map(|r| r.status())
                .map_err(|e| crate::upstream::chain(&e))
        }
    };
    match outcome {
        Err(e) => {
            println!("  ok   refused at the handshake ({e})");
            Ok(true)
        }
        Ok(status) => {
            println!("  ERR  answered {status}");
            Ok(false)
        }
    }
}

/// The embedded Destination controller: `store` split 50/50 between its own endpoints and
/// `store-west`'s (two backends it returns).
async fn split_controller() -> anyhow::Result<(Controller, [Backend; 2])> {
    use controller::{Endpoints, Profile, weighted};
    let (service, west) = SPLIT;
    let store = [
        Backend::start("store").await?,
        Backend::start("store-west").await?,
    ];
    let controller = Controller::start(None).await?;
    controller.set_endpoints(service, Endpoints::Set(vec![weighted(store[0].addr, 1)]));
    controller.set_endpoints(west, Endpoints::Set(vec![weighted(store[1].addr, 1)]));
    // What Linkerd's controller labels an endpoint set with: the HTTP metrics get them as dst_*.
    controller.set_labels(service, &[("namespace", "test"), ("service", "store")]);
    controller.set_labels(west, &[("namespace", "test"), ("service", "store-west")]);
    controller.set_profile(
        service,
        Profile::Set(Box::new(controller::split(
            "store.test.svc.cluster.local",
            &[(service, 500), (west, 500)],
        ))),
    );
    Ok((controller, store))
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
    // `frontend` is meshed: its pod's proxy (a stand-in) terminates mTLS as POD_ID.
    let pod = MeshedPod::start(
        &pki.pod.credentials(&pki.anchors)?,
        &pki.anchors,
        PodPort::App,
        frontend.addr,
    )
    .await?;
    let echo = Backend::start_tcp_echo().await?;
    let (controller, store) = split_controller().await?;
    let (cart, cart_west) = (
        Backend::start("cart").await?,
        Backend::start("cart-west").await?,
    );
    controller.set_endpoints(
        FAILOVER,
        controller::Endpoints::Set(vec![controller::weighted(cart.addr, 1)]),
    );
    let west = west_gateway(&pki, &cart_west).await?;
    let mut config = Config {
        listen: options.listen,
        admin_listen: options.admin_listen,
        cert: Some(dir.join("gateway.crt")),
        key: Some(dir.join("gateway.key")),
        trust_anchors: Some(dir.join("ca.crt")),
        destination_svc_addr: Some(controller.addr.to_string()),
        failover_hold_down: HOLD_DOWN,
        ..Config::default()
    };
    config.failover.insert(
        FAILOVER.to_owned(),
        vec![
            format!("gateway={};identity={WEST_GATEWAY_ID}", west.data_addr)
                .parse()
                .map_err(anyhow::Error::msg)?,
        ],
    );
    config
        .endpoints
        .insert(SERVICES[0].to_owned(), vec![podinfo.addr.into()]);
    let mut meshed = crate::upstream::Address::meshed(pod.addr, POD_ID.parse()?);
    meshed.hint = Some(crate::upstream::Hint::H2);
    config
        .endpoints
        .insert(SERVICES[1].to_owned(), vec![meshed]);
    let (echo_name, echo_port) = ECHO_SERVICE;
    config
        .endpoints
        .insert(format!("{echo_name}:{echo_port}"), vec![echo.addr.into()]);
    let bound = app::bind(&config, None).await?;
    println!(
        "meshgate demo: gateway {} on {} (admin {})",
        bound.identity, bound.data_addr, bound.admin_addr
    );
    println!("  services: {} -> {}", SERVICES[0], podinfo.addr);
    println!(
        "            {} -> {} (meshed: mTLS to its pod proxy as {POD_ID}, h2)",
        SERVICES[1], pod.addr
    );
    println!(
        "            {}:{} -> {} (opaque TCP echo)",
        ECHO_SERVICE.0, ECHO_SERVICE.1, echo.addr
    );
    println!(
        "            {} -> split by a Destination controller on {}: {} (local) / {} ({})",
        SPLIT.0, controller.addr, store[0].addr, store[1].addr, SPLIT.1
    );
    println!(
        "            {FAILOVER} -> {} (local pods), failing over to the west gateway {} ({WEST_GATEWAY_ID}) -> {}",
        cart.addr, west.data_addr, cart_west.addr
    );
    println!("  PKI in {}\n", dir.display());

    let client = pki.client.credentials(&pki.anchors)?;
    let connect = |alpn: &[&[u8]]| {
        MtlsClient::new(
            Some(&client),
            &pki.anchors,
            GATEWAY_ID,
            bound.data_addr,
            alpn,
        )
    };
    println!("As a Linkerd proxy (ALPN transport.l5d.io/v1 + transport header):");
    let mut ok = header_steps(&connect(&[tls_config::ALPN_TRANSPORT_HEADER])?).await?;
    println!("As a plain mTLS HTTP client:");
    ok &= plain_steps(
        &connect(&[tls_config::ALPN_H2])?,
        &connect(&[tls_config::ALPN_HTTP1])?,
    )
    .await?;
    ok &= meshed_step(&pod);
    println!("As Linkerd's gateway, discovering through the Destination API:");
    ok &= split_step(&connect(&[tls_config::ALPN_H2])?).await?;
    ok &= failover_step(&connect(&[tls_config::ALPN_H2])?, &controller, &cart).await?;
    println!("As a caller of another mesh:");
    let foreign = pki.foreign.credentials(&pki.foreign_anchors)?;
    ok &= refused_step(&MtlsClient::new(
        Some(&foreign),
        &pki.anchors,
        GATEWAY_ID,
        bound.data_addr,
        &[tls_config::ALPN_HTTP1],
    )?)
    .await?;

    println!("\nmetrics (http://{}/metrics):", bound.admin_addr);
    for line in bound.metrics.encode().lines() {
        let interesting = (line.starts_with("request_total")
            || line.starts_with("outbound_profile_backend_weight")
            || line.starts_with("gateway_failover_events_total")
            || line.starts_with("response_total")
            || line.starts_with("inbound_tcp_transport_header_connections_total"))
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
    bound.drain(Duration::ZERO, Duration::from_secs(5)).await;
    west.drain(Duration::ZERO, Duration::from_secs(5)).await;
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
