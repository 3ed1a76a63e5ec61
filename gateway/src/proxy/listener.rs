//! The data listener's accept loop: accept under a connection limit, spawn `conn::serve` per
//! connection. The accept loop only accepts; handshakes run in the spawned tasks.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::conn;
use super::context::Shared;
use crate::metrics::Refused;
use crate::socket::after_accept_error;

/// Accepts until `drain` turns true. Over `permits`, new connections are closed at once and
/// counted as `max_connections` refusals. On descriptor exhaustion it backs off for a second.
pub async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    mut drain: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = drain.wait_for(|draining| *draining) => return,
        };
        let (tcp, remote) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                after_accept_error(&e, "data", &shared.metrics).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if shared.metrics.refuse(Refused::MaxConnections) {
                tracing::warn!(%remote, "connection refused: max_connections reached");
            }
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(conn::serve(shared.clone(), tcp, remote, Some(permit)));
    }
}
