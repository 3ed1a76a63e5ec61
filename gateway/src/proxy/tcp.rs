//! Opaque forwarding: after the transport header, bytes are copied both ways until each side has
//! closed its half (half-close preserved); a reset after data is a normal ending.

use tokio::io::{AsyncRead, AsyncWrite};

use super::context::Shared;
use super::error::Error;
use crate::target::Target;

/// Copies between `downstream` and a new connection to `target` until both directions end.
/// Returns the bytes copied (downstream → upstream, upstream → downstream).
///
/// # Errors
/// Connect failures; I/O errors after the copy started are logged by the caller.
pub async fn proxy<IO>(
    shared: &Shared,
    downstream: &mut IO,
    target: &Target,
) -> Result<(u64, u64), Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let balancer = shared.upstream.balancer(target);
    let mut upstream = shared.upstream.connect(&balancer).await?;
    tokio::io::copy_bidirectional(downstream, &mut upstream)
        .await
        .map_err(|e| Error::Upstream(e.to_string()))
}
