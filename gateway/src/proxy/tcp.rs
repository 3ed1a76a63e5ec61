//! Opaque forwarding: after the transport header, bytes are copied both ways until each side has
//! closed its half (half-close preserved); a reset or EOF after data is a normal ending. With
//! the access log on, each session gets a line when it ends.

use std::net::SocketAddr;
use std::sync::Arc;

use identity::IdentityName;
use tokio::io::{AsyncRead, AsyncWrite};

use super::context::Shared;
use super::error::Error;
use crate::access_log::Entry;
use crate::target::Target;
use crate::upstream::Endpoint;

/// Copies between `downstream` (from `peer` at `remote`) and a new connection to `target` until
/// both directions end.
///
/// # Errors
/// Connect failures, and I/O failures of the copy (a reset or EOF is reported too, as `Io`, and
/// the edge treats it as a normal end: [`Error::is_normal_end`]).
pub async fn proxy<IO>(
    shared: &Shared,
    downstream: &mut IO,
    target: &Target,
    (peer, remote): (&IdentityName, SocketAddr),
) -> Result<(), Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let entry = shared
        .access_log
        .as_ref()
        .map(|_| Box::new(Entry::new(Arc::from(peer.as_str()), remote, None)));
    let start = std::time::Instant::now();
    let mut answered: Answered = (None, None);
    let result = session(shared, downstream, target, peer, &mut answered).await;
    if let (Some(log), Some(mut entry)) = (&shared.access_log, entry) {
        entry.target = target.authority().clone();
        if let Some(endpoint) = &answered.0 {
            entry.endpoint = Some(endpoint.address().addr);
            entry.upstream_tls = endpoint.address().identity.is_some();
        }
        if let Some((sent, received)) = answered.1 {
            (entry.bytes_in, entry.bytes_out) = (Some(sent), received);
        }
        if let Err(e) = &result
            && !e.is_normal_end()
        {
            (entry.error, entry.blame) = (Some(e.reason()), Some(e.blame().as_str()));
        }
        entry.duration_ms = start.elapsed().as_secs_f64() * 1000.0;
        log.write(entry);
    }
    result
}

/// What answered a session, and the bytes each way once it ended cleanly.
type Answered = (Option<Arc<Endpoint>>, Option<(u64, u64)>);

async fn session<IO>(
    shared: &Shared,
    downstream: &mut IO,
    target: &Target,
    peer: &IdentityName,
    answered: &mut Answered,
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
    let (endpoint, mut upstream) = shared.upstream.connect(&balancer).await?;
    answered.0 = Some(endpoint);
    let (sent, received) = tokio::io::copy_bidirectional(downstream, &mut upstream)
        .await
        .map_err(Error::Io)?;
    answered.1 = Some((sent, received));
    tracing::debug!(%target, sent, received, "opaque session ended");
    Ok(())
}
