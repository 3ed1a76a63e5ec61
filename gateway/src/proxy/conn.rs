//! `serve()`: the whole data path of one downstream connection, top to bottom. The one place a
//! connection's failure is counted and logged.

use std::net::SocketAddr;
use std::sync::Arc;

use identity::IdentityName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::context::Shared;
use super::error::{Blame, Error};
use super::http::Routing;
use super::route::{self, Decision, Source};
use super::tls::{self, Alpn};
use super::{http, tcp};
use crate::control::policy::Session;
use crate::metrics::{
    AuthzLabels, ByteMeter, DenyLabels, Label, Metered, TcpLabels, TransportHeaderLabels,
};
use crate::target::Target;
use crate::transport_header::{self, SessionProtocol, TransportHeader};

/// Handles one accepted connection: mTLS handshake and (for `transport.l5d.io/v1`) the transport
/// header under one detect deadline, then an HTTP or opaque session. `permit` (the listener's
/// connection slot) is released on return. Generic over the stream so tests can drive it in
/// memory.
pub async fn serve<IO>(
    shared: Arc<Shared>,
    io: IO,
    remote: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _permit = permit;
    let deadline = Instant::now() + shared.detect_timeout;
    let meter = Arc::new(ByteMeter::default());
    let io = Metered::new(io, meter.clone());
    let config = shared.tls.borrow().clone();
    let accepted = match tls::accept(io, config, deadline).await {
        Ok(accepted) => accepted,
        Err(error) => return report(&shared, remote, None, &error),
    };
    let mut record = shared
        .metrics
        .open_connection(TcpLabels::inbound(accepted.peer.as_str()));
    meter.bind(&record);
    let peer = accepted.peer;
    tracing::debug!(%remote, %peer, sni = ?accepted.sni, alpn = ?accepted.alpn, "accepted");
    let result = match accepted.alpn {
        Alpn::TransportHeader => {
            match tokio::time::timeout_at(deadline, transport_header::read(accepted.stream)).await {
                Ok(Ok((header, io))) => header_session(&shared, io, &peer, remote, header).await,
                Ok(Err(e)) => Err(Error::TransportHeader(e)),
                Err(_) => Err(Error::TransportHeaderTimeout),
            }
        }
        Alpn::H2 | Alpn::Http1 | Alpn::None => {
            http::serve(
                shared.clone(),
                accepted.stream,
                (peer.clone(), remote),
                Routing::PerRequest,
                accepted.alpn == Alpn::Http1,
            )
            .await
        }
    };
    if let Err(error) = result
        && !error.is_normal_end()
    {
        record.set_error(error.errno());
        report(&shared, remote, Some(&peer), &error);
    }
}

/// Serves what a transport header announced: HTTP with the target fixed, or an opaque copy.
async fn header_session<IO>(
    shared: &Arc<Shared>,
    mut io: IO,
    peer: &IdentityName,
    remote: SocketAddr,
    header: TransportHeader,
) -> Result<(), Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let name = header.name.as_deref().unwrap_or_default();
    let client_id = Label::from(peer.as_str());
    shared
        .metrics
        .transport_headers
        .get(&TransportHeaderLabels {
            session_protocol: header.protocol.label(),
            target_port: header.port,
            target_name: Label::from(name),
            client_id: client_id.clone(),
        })
        .inc();
    // A gateway has no local application: a header must name a target. Parsed once for the
    // whole session.
    let target = match header.name.as_deref() {
        Some(name) => Target::from_parts(name, header.port, &shared.suffixes),
        None => Err(crate::target::Error::Empty),
    };
    match header.protocol {
        SessionProtocol::Http1 | SessionProtocol::Http2 => {
            http::serve(
                shared.clone(),
                io,
                (peer.clone(), remote),
                Routing::Fixed(target),
                header.protocol == SessionProtocol::Http1,
            )
            .await
        }
        SessionProtocol::Opaque => {
            let policy = shared.policy.snapshot();
            let snapshot = route::Snapshot {
                gateway: &shared.identity,
                suffixes: &shared.suffixes,
                policy: &policy,
            };
            let decided = route::decide(
                peer,
                Source::Checked(target.as_ref()),
                std::iter::empty(),
                &snapshot,
            );
            let decision = decided_or_counted(shared, Session::Tcp, peer, &client_id, decided)?;
            shared
                .metrics
                .tcp_authz_allow
                .get(&AuthzLabels::allowed(&decision.allowed, client_id))
                .inc();
            tcp::proxy(shared, &mut io, &decision.target, (peer, remote)).await
        }
    }
}

/// Counts and logs what the decision step said that is worth it (denials, enforced or audited;
/// once per caller × target per minute in the log) and passes the decision on.
///
/// # Errors
/// The decision's error.
pub(super) fn decided_or_counted(
    shared: &Shared,
    session: Session,
    peer: &IdentityName,
    client_id: &Label,
    decided: Result<Decision, route::Error>,
) -> Result<Decision, Error> {
    let (target, srv_name, mode) = match &decided {
        Ok(decision) if decision.audit_denied => (
            decision.target.authority(),
            &decision.allowed.srv_name,
            "audit",
        ),
        Err(route::Error::Unauthorized { target, srv_name }) => {
            (target.authority(), srv_name, "enforce")
        }
        _ => return decided.map_err(Error::from),
    };
    shared.metrics.authz_denied(
        session == Session::Http,
        &DenyLabels {
            srv_kind: "default",
            srv_name: srv_name.clone(),
            tls: "true",
            client_id: client_id.clone(),
            authority: Label(target.clone()),
            mode,
        },
    );
    if shared.policy.log_denial(&client_id.0, target) {
        let what = if mode == "audit" {
            "policy audit: would be denied (logged once per caller and target per minute)"
        } else {
            "denied by policy (logged once per caller and target per minute)"
        };
        tracing::info!(%peer, target = &**target, ?session, "{what}");
    }
    decided.map_err(Error::from)
}

/// Counts and logs a connection's failure once, at the level its blame picks; refusals before a
/// session are logged at info the first time per reason.
fn report(shared: &Shared, remote: SocketAddr, peer: Option<&IdentityName>, error: &Error) {
    if let Some(label) = error.tcp_error() {
        shared.metrics.tcp_error(label);
    }
    let peer = peer.map(IdentityName::as_str).unwrap_or_default();
    let reason = error.reason();
    if let Some(refusal) = error.refusal() {
        if shared.metrics.refuse(refusal) {
            tracing::info!(%remote, peer, reason, %error, "connection refused (first time for this reason)");
        } else {
            tracing::debug!(%remote, peer, reason, %error, "connection refused");
        }
        return;
    }
    match error.blame() {
        Blame::Downstream => tracing::debug!(%remote, peer, reason, %error, "connection ended"),
        Blame::Upstream => {
            tracing::warn!(%remote, peer, reason, %error, "connection failed upstream")
        }
        Blame::Local => tracing::error!(%remote, peer, reason, %error, "connection failed"),
    }
}

#[cfg(test)]
mod tests;
