//! Target names that try to escape the allowlist — IP literals in every notation, `localhost`,
//! the admin port, look-alike suffixes, percent-encoding, overlong labels, NUL bytes — sent as
//! `l5d-dst-override`, as the HTTP/2 `:authority`, and in transport headers. Each is refused with
//! 400 or 404 (or the opaque stream closed), and none is ever resolved or connected to: the DNS
//! server the gateway uses sees no query and the backend no connection.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use gateway::transport_header::{SessionProtocol, TransportHeader};
use http::Request;
use http_body_util::Full;
use support::{CLIENT_ID, H1, H2, Harness, L5D, collect, header_http1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOSTILE: &[&str] = &[
    "127.0.0.1:8080",
    "127.0.0.1:4191",
    "10.0.0.1.:80",
    "2130706433:80",
    "0177.0.0.1:80",
    "0x7f.0.0.1:80",
    "0x7f000001:80",
    "[::1]:8080",
    "[::ffff:127.0.0.1]:80",
    "[fe80::1%25eth0]:80",
    "::1",
    "localhost:4191",
    "LOCALHOST:4143",
    "admin.localhost:4191",
    "localhost.:80",
    "svc.cluster.local.evil.com:80",
    "web.ns.svc.cluster.local.evil.com:80",
    "web.ns.svc.cluster.local.evil.com.:80",
    "web.ns.svc.cluster.localx:80",
    "web.ns.xsvc.cluster.local:80",
    "web.ns.svc.cluster.local%2eevil.com:80",
    "web%2ens.svc.cluster.local:80",
    "evil.com:80",
    "EVIL.COM.:80",
    "user@web.ns.svc.cluster.local:80",
    "web.ns.svc.cluster.local:80@evil.com",
    "web..svc.cluster.local:80",
    "web.ns.svc.cluster.local..:80",
    "-web.ns.svc.cluster.local:80",
    "web.ns.svc.cluster.local:0",
    "web.ns.svc.cluster.local:65536",
    "web.ns.svc.cluster.local:+80",
];

fn overlong() -> Vec<String> {
    vec![
        format!("{}.ns.svc.cluster.local:80", "a".repeat(64)),
        format!("{}svc.cluster.local:80", "abcdefghi.".repeat(26)),
    ]
}

async fn harness() -> (Harness, std::net::UdpSocket) {
    // The only DNS server the gateway may use: it must never receive a query.
    let dns = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    dns.set_nonblocking(true).unwrap();
    let dns_addr = dns.local_addr().unwrap();
    let h = Harness::start(|c| c.dns_servers = vec![dns_addr]).await;
    (h, dns)
}

fn assert_untouched(h: &Harness, dns: &std::net::UdpSocket) {
    let mut buf = [0u8; 512];
    let query = dns.recv_from(&mut buf);
    assert!(
        query
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "a hostile name reached DNS: {query:?}"
    );
    assert_eq!(
        h.backend.connections(),
        0,
        "a hostile name was connected to"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_override_and_authority_names_are_refused_unresolved() {
    let (h, dns) = harness().await;
    let h1 = h.client(CLIENT_ID, H1);
    let h2 = h.client(CLIENT_ID, H2);
    let mut names: Vec<String> = HOSTILE.iter().map(|s| (*s).to_owned()).collect();
    names.extend(overlong());
    for name in &names {
        // As l5d-dst-override over HTTP/1.1 (a new connection: refusals may close it).
        let req = Request::get("/")
            .header("host", "gateway")
            .header("l5d-dst-override", name.as_str())
            .body(Full::<Bytes>::default())
            .unwrap();
        let mut send = h1.http1().await.unwrap();
        let answer = collect(send.send_request(req).await.unwrap()).await;
        assert!(
            [400, 404].contains(&answer.status.as_u16()),
            "override {name:?}: {}",
            answer.status
        );
        // As the HTTP/2 :authority, where the URI can carry it.
        if let Ok(uri) = format!("https://{name}/").parse::<http::Uri>() {
            let req = Request::get(uri).body(Full::<Bytes>::default()).unwrap();
            let mut send = h2.http2().await.unwrap();
            match send.send_request(req).await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    assert!([400, 404].contains(&status), "authority {name:?}: {status}");
                }
                // The gateway's HTTP/2 codec refused the stream before it was a request.
                Err(e) => assert!(e.to_string().contains("stream"), "{name:?}: {e}"),
            }
        }
    }
    // A NUL byte cannot be put in a header through an HTTP library; send it raw.
    let mut tls = h1.connect().await.unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nl5d-dst-override: web\0.ns.svc.cluster.local:80\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 400 "),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert_untouched(&h, &dns);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_transport_header_names_are_refused_unresolved() {
    let (h, dns) = harness().await;
    let client = h.client(CLIENT_ID, L5D);
    let mut names: Vec<String> = HOSTILE
        .iter()
        .map(|s| {
            // The transport header carries the port apart from the name.
            match s.rsplit_once(':') {
                Some((name, port)) if port.trim_start_matches('+').parse::<u32>().is_ok() => name,
                _ => s,
            }
        })
        // Entries whose only fault is the port name a real service here.
        .filter(|name| !name.is_empty() && *name != "web.ns.svc.cluster.local")
        .map(str::to_owned)
        .collect();
    names.push("web\0.ns.svc.cluster.local".to_owned());
    names.push(format!("{}.ns.svc.cluster.local", "a".repeat(64)));
    let mut refused_headers = 0;
    let mut opaque_sessions = 0;
    for name in &names {
        // HTTP/1 in the session: every request refused.
        let header = TransportHeader {
            port: 8080,
            name: Some(name.clone()),
            protocol: SessionProtocol::Http1,
        };
        let mut send = header_http1(&client, &header).await;
        let req = Request::get("/")
            .header("host", "x")
            .body(Full::<Bytes>::default())
            .unwrap();
        match send.send_request(req).await {
            Ok(response) => {
                let status = response.status().as_u16();
                assert!([400, 404].contains(&status), "header {name:?}: {status}");
            }
            // A name that is not even DNS syntax makes the header itself invalid: the
            // connection is refused before any session (counted below).
            Err(_) => refused_headers += 1,
        }
        // Opaque: the stream is closed without a byte from anywhere.
        let header = TransportHeader {
            port: 4191,
            name: Some(name.clone()),
            protocol: SessionProtocol::Opaque,
        };
        let mut tls = client.connect_with_header(&header).await.unwrap();
        let _ = tls.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await;
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "opaque {name:?}: the stream is closed");
        assert!(got.is_empty(), "opaque {name:?}: {got:?}");
        opaque_sessions += 1;
    }
    // Each name refused at the header was refused for both its sessions.
    let m = &h.gateway.metrics;
    assert!(refused_headers > 0 && opaque_sessions == names.len());
    assert!(
        support::eventually(support::SOON, || async {
            m.refused_count("bad_transport_header") == 2 * refused_headers
        })
        .await,
        "{} refused headers, expected {}",
        m.refused_count("bad_transport_header"),
        2 * refused_headers
    );
    assert_untouched(&h, &dns);
}
