//! `serve()`: the whole data path of one downstream connection, top to bottom.

use std::net::SocketAddr;
use std::sync::Arc;

use identity::IdentityName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::context::Shared;
use super::http::Routing;
use super::tls::{self, Alpn};
use super::transport_header::{self, SessionProtocol, TransportHeader};
use super::{error, http, tcp};
use crate::control::policy;
use crate::metrics::Metered;
use crate::metrics::{AuthzLabels, ByteMeter, Label, TcpLabels, TransportHeaderLabels};
use crate::target::Target;

/// Handles one accepted connection: mTLS handshake and (for `transport.l5d.io/v1`) the transport
/// header under one detect deadline, then an HTTP or opaque session. Refusals are counted and
/// logged once here; the permit is released on return.
pub async fn serve(
    shared: Arc<Shared>,
    tcp: TcpStream,
    remote: SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    let deadline = Instant::now() + shared.detect_timeout;
    let meter = Arc::new(ByteMeter::default());
    let io = Metered::new(tcp, meter.clone());
    let config = shared.tls.borrow().clone();
    let accepted = match tls::accept(io, config, deadline).await {
        Ok(accepted) => accepted,
        Err((refusal, detail)) => {
            let error = if refusal == identity::Refusal::Timeout {
                "tls detection timeout"
            } else {
                "unexpected"
            };
            return refuse(&shared, remote, refusal.as_str(), error, &detail);
        }
    };
    let mut record = shared
        .metrics
        .open_connection(TcpLabels::inbound(accepted.peer.as_str()));
    meter.bind(&record);
    let peer = accepted.peer;
    tracing::debug!(%remote, %peer, sni = ?accepted.sni, alpn = ?accepted.alpn, "accepted");
    let drain = shared.drain.clone();
    let result = match accepted.alpn {
        Alpn::TransportHeader => {
            let read =
                tokio::time::timeout_at(deadline, transport_header::read(accepted.stream)).await;
            let (header, io) = match read {
                Ok(Ok(pair)) => pair,
                Ok(Err(e)) => {
                    return refuse(
                        &shared,
                        remote,
                        "bad_transport_header",
                        "i/o",
                        &e.to_string(),
                    );
                }
                Err(_) => {
                    let detail = "no transport header before the detect deadline";
                    return refuse(&shared, remote, "timeout", "i/o", detail);
                }
            };
            header_session(&shared, io, &peer, header, remote).await
        }
        Alpn::H2 | Alpn::Http1 | Alpn::None => http::serve(
            shared.clone(),
            accepted.stream,
            peer.clone(),
            Routing::PerRequest,
            drain,
        )
        .await
        .map_err(|e| e.to_string()),
    };
    if let Err(error) = result {
        record.set_error("EIO");
        tracing::debug!(%remote, %peer, %error, "connection ended with an error");
    }
}

/// Serves what a transport header announced: HTTP with the target fixed, or an opaque copy.
async fn header_session<IO>(
    shared: &Arc<Shared>,
    mut io: IO,
    peer: &IdentityName,
    header: TransportHeader,
    remote: SocketAddr,
) -> Result<(), String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let name = header.name.as_deref().unwrap_or_default();
    shared
        .metrics
        .transport_headers
        .get(&TransportHeaderLabels {
            session_protocol: header.protocol.label(),
            target_port: header.port,
            target_name: Label::from(name),
            client_id: Label::from(peer.as_str()),
        })
        .inc();
    // A gateway has no local application: a header must name a target.
    let target = match header.name.as_deref() {
        Some(name) => Target::from_parts(name, header.port, &shared.suffixes),
        None => Err(crate::target::Error::Empty),
    };
    match header.protocol {
        SessionProtocol::Http1 | SessionProtocol::Http2 => {
            let drain = shared.drain.clone();
            http::serve(
                shared.clone(),
                io,
                peer.clone(),
                Routing::Fixed(target),
                drain,
            )
            .await
            .map_err(|e| e.to_string())
        }
        SessionProtocol::Opaque => {
            let target = match target {
                Ok(target) => target,
                Err(e) => {
                    let error = if e.is_bad_domain() {
                        "gateway domain invalid"
                    } else {
                        "unexpected"
                    };
                    shared.metrics.tcp_error(error);
                    tracing::debug!(%remote, %peer, target = name, error = %e, "opaque session refused");
                    return Ok(());
                }
            };
            if *peer == shared.identity {
                shared.metrics.tcp_error("gateway loop");
                tracing::debug!(%remote, %peer, "opaque session refused: gateway loop");
                return Ok(());
            }
            let client_id = Label::from(peer.as_str());
            let Some(allowed) = shared.policy.authorize(
                &shared.metrics,
                policy::Session::Tcp,
                (peer, &client_id),
                (&target, &Label(target.authority().clone())),
            ) else {
                return Ok(());
            };
            shared
                .metrics
                .tcp_authz_allow
                .get(&AuthzLabels::allowed(&allowed, client_id))
                .inc();
            match tcp::proxy(shared, &mut io, &target).await {
                Ok(_) => Ok(()),
                Err(e @ error::Error::Connect(_)) => {
                    shared.metrics.tcp_error("i/o");
                    tracing::warn!(%remote, %peer, %target, error = %e, "opaque session failed upstream");
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        }
    }
}

/// Counts and logs a connection refused before any session; info the first time per reason.
fn refuse(
    shared: &Shared,
    remote: SocketAddr,
    reason: &'static str,
    error: &'static str,
    detail: &str,
) {
    shared.metrics.tcp_error(error);
    if shared.metrics.refuse(reason) {
        tracing::info!(%remote, reason, %detail, "connection refused (first time for this reason)");
    } else {
        tracing::debug!(%remote, reason, %detail, "connection refused");
    }
}
