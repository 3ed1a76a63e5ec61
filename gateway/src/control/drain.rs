//! The drain: `/ready` turns 503 first, the listener keeps accepting for `drain_delay` (so load
//! balancers and remote probes notice), then connections are told to finish (HTTP/2 GOAWAY,
//! HTTP/1 close after the in-flight request, opaque streams run to their end) within the grace
//! period. Open connections are counted by the listener's permits.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};

use super::readiness::Readiness;

/// The drain signal and the connection permits it waits for.
pub struct Drain {
    signal: watch::Sender<bool>,
    permits: Arc<Semaphore>,
    max_connections: usize,
}

impl Drain {
    /// A drain over `max_connections` permits; the receiver turns true when connections must
    /// finish.
    pub fn new(max_connections: usize) -> (Self, watch::Receiver<bool>) {
        let (signal, receiver) = watch::channel(false);
        let drain = Self {
            signal,
            permits: Arc::new(Semaphore::new(max_connections)),
            max_connections,
        };
        (drain, receiver)
    }

    /// The permits the listener takes, one per open connection.
    pub fn permits(&self) -> Arc<Semaphore> {
        self.permits.clone()
    }

    /// Drains: not ready at once, connections told to finish after `delay`, and waits until every
    /// permit is back or `grace` (from the start) is over. Returns whether all finished in time.
    pub async fn run(&self, readiness: &Readiness, delay: Duration, grace: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + grace;
        readiness.set_draining();
        tokio::time::sleep(delay.min(grace)).await;
        tracing::info!("listener closed; finishing open connections");
        self.signal_now();
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        tokio::time::timeout_at(deadline, self.permits.acquire_many(all))
            .await
            .is_ok()
    }

    /// Tells every connection to finish now (no delay, no waiting).
    pub fn signal_now(&self) {
        let _ = self.signal.send(true);
    }
}
