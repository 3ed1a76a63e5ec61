//! Dialling one endpoint: a TCP connect under the connect deadline, with the upstream socket
//! options. (mTLS origination to meshed endpoints lands here next.)

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::ConnectError;

/// A TCP connection to `addr` within `timeout`, `TCP_NODELAY` set (requests are written whole,
/// so Nagle would only add a round trip of delay).
///
/// # Errors
/// `Refused` with the socket error, or `Timeout`. Cancel-safe.
pub(super) async fn tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => {
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        }
        Ok(Err(source)) => Err(ConnectError::Refused { addr, source }),
        Err(_) => Err(ConnectError::Timeout(timeout)),
    }
}
