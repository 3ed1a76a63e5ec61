//! `serve()`: the whole data path of one downstream connection, top to bottom.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::app::Shared;
use crate::forward;
use crate::io::Metered;
use crate::metrics::{ByteMeter, TcpLabels};
use crate::tls;

/// Handles one accepted connection: mTLS handshake under the detect deadline, then the HTTP
/// session. Refusals are counted and logged once here; the permit is released on return.
pub async fn serve(
    shared: Arc<Shared>,
    tcp: TcpStream,
    remote: SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    let meter = Arc::new(ByteMeter::default());
    let io = Metered::new(tcp, meter.clone());
    let accepted = match tls::accept(io, shared.tls.clone(), shared.detect_timeout).await {
        Ok(accepted) => accepted,
        Err((refusal, detail)) => {
            let reason = refusal.as_str();
            if shared.metrics.refuse(reason) {
                tracing::info!(%remote, reason, %detail, "connection refused (first time for this reason)");
            } else {
                tracing::debug!(%remote, reason, %detail, "connection refused");
            }
            return;
        }
    };
    let mut record = shared
        .metrics
        .open_connection(TcpLabels::inbound(accepted.peer.as_str()));
    meter.bind(&record);
    let peer = accepted.peer;
    tracing::debug!(%remote, %peer, sni = ?accepted.sni, alpn = ?accepted.alpn, "accepted");
    let drain = shared.drain.clone();
    if let Err(error) = forward::http::serve(shared, accepted.stream, peer.clone(), drain).await {
        record.set_error("EIO");
        tracing::debug!(%remote, %peer, %error, "connection ended with an error");
    }
}
