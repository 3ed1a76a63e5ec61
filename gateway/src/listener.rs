//! Listeners: bind with socket2, accept under a connection limit, spawn `conn::serve` per
//! connection. The accept loop only accepts; handshakes run in the spawned tasks.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::app::Shared;
use crate::conn;
use crate::metrics::Metrics;

/// Pending-connection queue length.
const BACKLOG: i32 = 1024;

/// Binds a non-blocking listening socket with `SO_REUSEADDR` (dual-stack for `[::]`).
///
/// # Errors
/// The socket error, e.g. address in use.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

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
            if shared.metrics.refuse("max_connections") {
                tracing::warn!(%remote, "connection refused: max_connections reached");
            }
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(conn::serve(shared.clone(), tcp, remote, permit));
    }
}

/// Handles a failed `accept`. Out of file descriptors (EMFILE/ENFILE): counted as
/// `gateway_handshakes_refused_total{reason="out_of_fds"}`, logged, and the loop pauses for a
/// second instead of spinning — the pending connections wait in the kernel's queue until
/// descriptors are free again. Anything else (a connection reset before it was accepted) is
/// skipped.
pub async fn after_accept_error(e: &io::Error, listener: &'static str, metrics: &Metrics) {
    // EMFILE (24) and ENFILE (23) on Linux.
    if matches!(e.raw_os_error(), Some(23 | 24)) {
        metrics.refuse("out_of_fds");
        tracing::error!(listener, error = %e, "accept failed: out of file descriptors; pausing 1s");
        tokio::time::sleep(Duration::from_secs(1)).await;
    } else {
        tracing::debug!(listener, error = %e, "accept failed");
    }
}
