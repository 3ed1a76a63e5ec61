//! `meshgate check --remote`: a mesh client of a running gateway. The TLS handshake (what was
//! negotiated, who answered, against the identity the gateway must present), `/ready` over mTLS
//! as the remote service mirror probes it, and whether a request for a named target is routed.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use identity::tls_config::{ALPN_HTTP1, ALPN_TRANSPORT_HEADER};
use identity::{Credentials, identity_of_cert};
use serde_json::json;

use super::{CheckArgs, Report, Status, anchors, expiry};
use crate::cli::client::{MtlsClient, http1_on};
use crate::config::{Config, Problems};
use crate::transport_header::{SessionProtocol, TransportHeader};

/// Checks a running gateway as a mesh client with the credentials `config` names.
pub async fn remote(config: Result<Config, Problems>, args: &CheckArgs) -> Report {
    let mut report = Report::default();
    let Some(remote) = &args.remote else {
        report.fail("remote", "--remote is needed");
        return report;
    };
    let config = match config {
        Ok(config) => config,
        Err(problems) => {
            report.fail("client credentials", problems.0.join("; "));
            return report;
        }
    };
    let Some(anchors) = anchors(&config, &mut report) else {
        return report;
    };
    let client_creds = match config.credential_paths() {
        (Some(cert), Some(key), _) => match Credentials::load(&cert, &key, &anchors) {
            Ok(creds) => {
                report.push(
                    "client credentials",
                    Status::Ok,
                    format!("{} ({})", creds.identity(), cert.display()),
                );
                creds
            }
            Err(e) => {
                report.fail("client credentials", format!("{}: {e}", cert.display()));
                return report;
            }
        },
        _ => {
            report.fail(
                "client credentials",
                "no --cert and --key (or --identity-dir)",
            );
            return report;
        }
    };
    let (gateway_id, expected_from) = expected_identity(args, &config, &client_creds);
    let deadline = args.timeout;
    let Some(data) = resolve(remote, deadline, "handshake", &mut report).await else {
        return report;
    };
    let mesh_client = |addr, alpn: &[&[u8]]| {
        MtlsClient::new(Some(&client_creds), &anchors, &gateway_id, addr, alpn)
    };
    // What a Linkerd proxy offers the gateway; used again for the routed request.
    let data_client = match mesh_client(data, &[ALPN_TRANSPORT_HEADER]) {
        Ok(client) => client,
        Err(e) => {
            report.fail("handshake", format!("{e:#}"));
            return report;
        }
    };
    match tokio::time::timeout(deadline, data_client.connect()).await {
        Ok(Ok(tls)) => {
            let (_, conn) = tls.get_ref();
            let version = conn.protocol_version().map(|v| format!("{v:?}"));
            let suite = conn
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()));
            let group = conn
                .negotiated_key_exchange_group()
                .map(|g| format!("{:?}", g.name()));
            let alpn = conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned());
            let peer = conn.peer_certificates().and_then(|c| c.first());
            let identity = peer.and_then(identity_of_cert).map(|i| i.to_string());
            let check = report.push(
                "handshake",
                Status::Ok,
                format!(
                    "{data}: {} {} {}, ALPN {}, gateway identity {}",
                    version.as_deref().unwrap_or("?"),
                    suite.as_deref().unwrap_or("?"),
                    group.as_deref().unwrap_or("?"),
                    alpn.as_deref().unwrap_or("none"),
                    identity.as_deref().unwrap_or("?")
                ),
            );
            for (key, value) in [
                ("tls_version", version),
                ("cipher_suite", suite),
                ("key_exchange", group),
                ("alpn", alpn),
                ("gateway_identity", identity),
                ("expected_identity", Some(gateway_id.clone())),
                ("expected_from", Some(expected_from.to_owned())),
            ] {
                check.facts.insert(key.to_owned(), json!(value));
            }
            if let Some(peer) = peer {
                expiry(&mut report, "gateway certificate expiry", peer, true);
            }
        }
        Ok(Err(e)) => {
            let check = report.push(
                "handshake",
                Status::Fail,
                format!("{data} (expecting {gateway_id}, from {expected_from}): {e}"),
            );
            check
                .facts
                .insert("expected_identity".to_owned(), json!(gateway_id));
            check
                .facts
                .insert("expected_from".to_owned(), json!(expected_from));
        }
        Err(_) => report.fail(
            "handshake",
            format!("{data}: no answer within {deadline:?}"),
        ),
    }
    // `/ready` over mTLS, as the remote service mirror's probe reaches it.
    let admin = args
        .remote_admin
        .clone()
        .unwrap_or_else(|| format!("{}:4191", host_of(remote)));
    if let Some(addr) = resolve(&admin, deadline, "ready", &mut report).await {
        let probe = async {
            let client = mesh_client(addr, &[ALPN_HTTP1])?;
            let send = http1_on(client.connect().await?).await?;
            get(send, "/ready", "admin").await
        };
        match tokio::time::timeout(deadline, probe).await {
            Ok(Ok((status, _, body))) => {
                let ok = status == http::StatusCode::OK;
                let check = report.push(
                    "ready",
                    if ok { Status::Ok } else { Status::Fail },
                    format!("GET https://{addr}/ready: {status} {}", first_line(&body)),
                );
                check
                    .facts
                    .insert("status".to_owned(), json!(status.as_u16()));
            }
            Ok(Err(e)) => report.fail("ready", format!("GET https://{addr}/ready: {e:#}")),
            Err(_) => report.fail("ready", format!("{addr}: no answer within {deadline:?}")),
        }
    }
    if let Some(target) = &args.target {
        route(&mut report, target, &data_client, deadline).await;
    }
    report
}

/// The identity the remote gateway must present, and where it came from: `--gateway-identity`,
/// else the configured `identity_name`, else the identity of the configured certificate (a
/// gateway checked with its own configuration).
fn expected_identity(
    args: &CheckArgs,
    config: &Config,
    client: &Credentials,
) -> (String, &'static str) {
    match (&args.gateway_identity, &config.identity_name) {
        (Some(id), _) => (id.clone(), "--gateway-identity"),
        (None, Some(id)) => (id.clone(), "identity_name"),
        (None, None) => (client.identity().to_string(), "the configured certificate"),
    }
}

/// `GET /` for `target` through the gateway, with the transport header a Linkerd proxy sends.
async fn route(report: &mut Report, target: &str, client: &MtlsClient, deadline: Duration) {
    let Some((name, port)) = target
        .rsplit_once(':')
        .and_then(|(name, port)| Some((name, port.parse::<u16>().ok()?)))
    else {
        report.fail("route", format!("--target {target:?}: must be NAME:PORT"));
        return;
    };
    let header = TransportHeader {
        port,
        name: Some(name.to_owned()),
        protocol: SessionProtocol::Http1,
    };
    let attempt = async {
        let send = http1_on(client.connect_with_header(&header).await?).await?;
        get(send, "/", target).await
    };
    match tokio::time::timeout(deadline, attempt).await {
        Ok(Ok((status, proxy_error, body))) => {
            let check = match proxy_error {
                Some(error) => report.push(
                    "route",
                    Status::Fail,
                    format!("{target}: the gateway answered {status} ({error})"),
                ),
                None => report.push(
                    "route",
                    Status::Ok,
                    format!(
                        "{target}: routed, the service answered {status} {}",
                        first_line(&body)
                    ),
                ),
            };
            check
                .facts
                .insert("status".to_owned(), json!(status.as_u16()));
        }
        Ok(Err(e)) => report.fail("route", format!("{target}: {e:#}")),
        Err(_) => report.fail("route", format!("{target}: no answer within {deadline:?}")),
    }
}

/// One GET; returns the status, `l5d-proxy-error` and the body.
async fn get(
    mut send: crate::cli::client::Http1Sender,
    path: &str,
    host: &str,
) -> anyhow::Result<(http::StatusCode, Option<String>, String)> {
    let request = Request::get(path).header("host", host);
    let response = send
        .send_request(request.body(Full::new(Bytes::new()))?)
        .await?;
    let status = response.status();
    let proxy_error = response
        .headers()
        .get("l5d-proxy-error")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let body = response.into_body().collect().await?.to_bytes();
    Ok((
        status,
        proxy_error,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

async fn resolve(
    addr: &str,
    deadline: Duration,
    check: &str,
    report: &mut Report,
) -> Option<SocketAddr> {
    match tokio::time::timeout(deadline, tokio::net::lookup_host(addr)).await {
        Ok(Ok(mut addrs)) => {
            let found = addrs.next();
            if found.is_none() {
                report.fail(check, format!("{addr}: no address"));
            }
            found
        }
        Ok(Err(e)) => {
            report.fail(check, format!("{addr}: {e}"));
            None
        }
        Err(_) => {
            report.fail(check, format!("{addr}: not resolved within {deadline:?}"));
            None
        }
    }
}

/// The host part of HOST:PORT (brackets kept for IPv6).
fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(host, _)| host)
}

fn first_line(body: &str) -> &str {
    body.lines().next().unwrap_or("").trim()
}
