//! Arbitrary bytes as what an authenticated caller sends on an HTTP connection, through the
//! gateway's real HTTP session (hyper server, admission, routing, policy, error responses) over an
//! in-memory stream. The gateway must not panic, must finish once the caller has finished, and
//! whatever it answers on an HTTP/1 connection starts as an HTTP/1 response. Upstream is a closed
//! loopback port and DNS is off, so no input reaches anything outside the process.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use gateway::config::Config;
use gateway::control::policy::{self, Policy};
use gateway::metrics::Metrics;
use gateway::proxy::context::{Discovery, Handles, Shared};
use gateway::proxy::http::{Routing, serve};
use identity::testing::TestCa;
use identity::{IdentityName, tls_config};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct World {
    rt: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    peer: IdentityName,
    /// The senders behind `shared.tls` and `shared.drain`, kept so their receivers stay open.
    _senders: (
        tokio::sync::watch::Sender<Arc<rustls::ServerConfig>>,
        tokio::sync::watch::Sender<bool>,
    ),
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let ca = TestCa::new("fuzz.mesh");
        let gateway: IdentityName = "gateway.fuzz.mesh".parse().expect("identity");
        let tls = tls_config::server_config(&ca.credentials("gateway.fuzz.mesh"), &ca.anchors(), &[])
            .expect("tls config");
        // Port 9 on loopback: nothing listens, every connect is refused at once.
        let mut config = Config {
            header_read_timeout: Duration::from_millis(200),
            connect_timeout: Duration::from_millis(200),
            pool_idle_timeout: Duration::from_secs(1),
            detect_timeout: Duration::from_secs(1),
            ..Config::default()
        };
        config.endpoints.insert(
            "web.ns.svc.cluster.local:80".to_owned(),
            vec!["127.0.0.1:9".parse().expect("addr")],
        );
        let (tls_tx, tls_rx) = tokio::sync::watch::channel(Arc::new(tls));
        let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
        let handles = Handles {
            identity: gateway,
            tls: tls_rx,
            upstream_tls: tokio::sync::watch::channel(Arc::new(
                gateway::upstream::ClientTls::new(&ca.credentials("gateway.fuzz.mesh"), &ca.anchors())
                    .expect("client tls"),
            ))
            .1,
            metrics: Arc::new(Metrics::new()),
            policy: Arc::new(policy::Current::new(Policy::default())),
            drain: drain_rx,
            tracing: None,
        };
        let shared = Arc::new(
            Shared::new(&config, handles, Discovery::StaticOnly).expect("context"),
        );
        World {
            rt,
            shared,
            peer: "web.fuzz.mesh".parse().expect("identity"),
            _senders: (tls_tx, drain_tx),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let world = world();
    world.rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let session = tokio::spawn(serve(
            world.shared.clone(),
            server,
            (world.peer.clone(), std::net::SocketAddr::from(([127, 0, 0, 1], 1))),
            Routing::PerRequest,
            // As an ALPN `http/1.1` caller meets it: hyper's HTTP/1 alone, with parking.
            true,
        ));
        let exchange = async {
            // Write while reading, so large answers cannot block the writer.
            let (mut read, mut write) = tokio::io::split(&mut client);
            let writer = async {
                let _ = write.write_all(data).await;
                let _ = write.shutdown().await;
            };
            let mut answer = Vec::new();
            let reader = read.read_to_end(&mut answer);
            let (_, _) = tokio::join!(writer, reader);
            answer
        };
        let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .expect("the session ends once the caller has finished");
        let _ = tokio::time::timeout(Duration::from_secs(10), session)
            .await
            .expect("the session task ends");
        if !answer.is_empty() && !data.starts_with(b"PRI * HTTP/2.0") {
            assert!(answer.starts_with(b"HTTP/1."), "{:?}", String::from_utf8_lossy(&answer[..answer.len().min(64)]));
        }
    });
});
