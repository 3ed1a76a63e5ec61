//! Opaque forwarding: after the transport header, bytes are copied both ways until each side has
//! closed its half (half-close preserved); a reset or EOF after data is a normal ending.

use identity::IdentityName;
use tokio::io::{AsyncRead, AsyncWrite};

use super::context::Shared;
use super::error::Error;
use crate::target::Target;

/// Copies between `downstream` and a new connection to `target` until both directions end.
///
/// # Errors
/// Connect failures, and I/O failures of the copy (a reset or EOF is reported too, as `Io`, and
/// the edge treats it as a normal end: [`Error::is_normal_end`]).
pub async fn proxy<IO>(
    shared: &Shared,
    downstream: &mut IO,
    target: &Target,
    peer: &IdentityName,
) -> Result<(), Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let service = shared.upstream.service(target);
    // A session never fails over back to the gateway it came from.
    let came_through = |gateway: &str| gateway.eq_ignore_ascii_case(peer.as_str());
    let (balancer, _) = shared
        .upstream
        .select(&service, None, &came_through)
        .await?;
    let mut upstream = shared.upstream.connect(&balancer).await?;
    let (sent, received) = tokio::io::copy_bidirectional(downstream, &mut upstream)
        .await
        .map_err(Error::Io)?;
    tracing::debug!(%target, sent, received, "opaque session ended");
    Ok(())
}
