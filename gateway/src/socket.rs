//! Sockets: binding a listener (socket2: `SO_REUSEADDR`, dual-stack, backlog) and what an accept
//! loop does when `accept` fails. Shared by the data and admin listeners.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::metrics::{Metrics, Refused};

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

/// Handles a failed `accept`. Out of file descriptors (EMFILE/ENFILE): counted as
/// `gateway_handshakes_refused_total{reason="out_of_fds"}`, logged, and the loop pauses for a
/// second instead of spinning — the pending connections wait in the kernel's queue until
/// descriptors are free again. Anything else (a connection reset before it was accepted) is
/// skipped.
pub async fn after_accept_error(e: &io::Error, listener: &'static str, metrics: &Metrics) {
    // EMFILE (24) and ENFILE (23) on Linux.
    if matches!(e.raw_os_error(), Some(23 | 24)) {
        metrics.refuse(Refused::OutOfFds);
        tracing::error!(listener, error = %e, "accept failed: out of file descriptors; pausing 1s");
        tokio::time::sleep(Duration::from_secs(1)).await;
    } else {
        tracing::debug!(listener, error = %e, "accept failed");
    }
}
