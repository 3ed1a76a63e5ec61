//! Opaque forwarding: after the transport header, bytes are copied both ways until each side has
//! closed its half (half-close preserved); a reset or EOF after data is a normal ending.

use tokio::io::{AsyncRead, AsyncWrite};

use super::context::Shared;
use super::error::Error;
use crate::target::Target;

/// Copies between `downstream` and a new connection to `target` until both directions end.
///
/// # Errors
/// Connect failures, and I/O failures of the copy (a reset or EOF is reported too, as `Io`, and
/// the edge treats it as a normal end: [`Error::is_normal_end`]).
pub async fn proxy<IO>(shared: &Shared, downstream: &mut IO, target: &Target) -> Result<(), Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let service = shared.upstream.service(target);
    let (balancer, _) = shared.upstream.select(&service, None).await?;
    let mut upstream = shared.upstream.connect(&balancer).await?;
    let (sent, received) = tokio::io::copy_bidirectional(downstream, &mut upstream)
        .await
        .map_err(Error::Io)?;
    tracing::debug!(%target, sent, received, "opaque session ended");
    Ok(())
}
