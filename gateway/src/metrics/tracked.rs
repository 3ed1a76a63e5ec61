//! `Tracked`: a family whose label sets are evicted when idle, and the coarse clock that marks
//! them used without reading the system clock per request.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::family::{Family, MetricConstructor};

/// A family whose label sets are removed once unused for the retention period, so label sets
/// that grow with callers × targets stay bounded (Linkerd's `METRICS_RETAIN_IDLE`).
pub struct Tracked<L, M, C = fn() -> M> {
    pub(super) family: Family<L, M, C>,
    used: RwLock<HashMap<L, AtomicU64>>,
    clock: Arc<CoarseClock>,
}

/// Unix seconds, advanced by the eviction sweep: marking a label set as used reads an atomic
/// instead of the system clock on every request.
#[derive(Debug)]
pub struct CoarseClock(AtomicU64);

impl CoarseClock {
    pub(super) fn new() -> Self {
        Self(AtomicU64::new(unix_now()))
    }

    pub(super) fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub(super) fn tick(&self) -> u64 {
        let now = unix_now();
        self.0.store(now, Ordering::Relaxed);
        now
    }
}

impl<L, M, C> Tracked<L, M, C>
where
    L: Clone + Eq + Hash,
    C: MetricConstructor<M>,
{
    pub(super) fn new(family: Family<L, M, C>, clock: &Arc<CoarseClock>) -> Self {
        Self {
            family,
            used: RwLock::new(HashMap::new()),
            clock: clock.clone(),
        }
    }

    /// The metric for `labels`, created if needed, marked as used now.
    pub fn get(&self, labels: &L) -> impl std::ops::Deref<Target = M> + '_ {
        self.touch(labels);
        self.family.get_or_create(labels)
    }

    /// A shared handle to the metric for `labels` (counts on it stay exported while in use).
    pub fn get_owned(&self, labels: &L) -> M
    where
        M: Clone,
    {
        self.touch(labels);
        self.family.get_or_create_owned(labels)
    }

    fn touch(&self, labels: &L) {
        let now = self.clock.now();
        if let Some(at) = self
            .used
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(labels)
        {
            // Store only on change: most requests find the mark already current.
            if at.load(Ordering::Relaxed) != now {
                at.store(now, Ordering::Relaxed);
            }
            return;
        }
        self.used
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(labels.clone())
            .or_insert_with(|| AtomicU64::new(now))
            .store(now, Ordering::Relaxed);
    }

    /// Removes label sets unused since `cutoff` (Unix seconds) for which `keep` is false.
    pub(super) fn evict(&self, cutoff: u64, keep: impl Fn(&L) -> bool) -> usize {
        let mut used = self.used.write().unwrap_or_else(PoisonError::into_inner);
        let before = used.len();
        used.retain(|labels, at| {
            let retain = at.load(Ordering::Relaxed) >= cutoff || keep(labels);
            if !retain {
                self.family.remove(labels);
            }
            retain
        });
        before - used.len()
    }

    /// How many label sets are exported.
    pub fn len(&self) -> usize {
        self.used
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no label set is exported.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
