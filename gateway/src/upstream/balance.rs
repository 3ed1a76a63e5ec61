//! Choosing an endpoint of one target: power of two choices over peak-EWMA round-trip time
//! (default 30 ms, decay 10 s) times the requests pending on the endpoint, with the discovery
//! answer kept until it expires.
//!
//! Endpoints with discovery weights that differ are sampled in proportion to their weight (both
//! candidates, with replacement), and the second replaces the first only when it costs less than
//! half as much: with even load the split follows the weights, and an endpoint that is clearly
//! slower or busier still loses.
//!
//! An endpoint whose connect fails is ejected: skipped for a backoff (1 s, doubling up to 60 s),
//! then tried again; a success resets it. When every endpoint is ejected, all are tried (better
//! a probe than a certain failure).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::destination::Destination;
use super::destination::stream::{Usage, first_answer};
use super::discover::{self, Endpoints};
use super::pool::Pool;
use super::version::{Learned, Preference};
use super::{Address, ConnectError};
use crate::metrics::{DstLabels, Label};
use crate::target::Target;

/// RTT assumed for an endpoint never measured.
const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// How fast old RTT samples fade.
const DECAY: Duration = Duration::from_secs(10);
/// First ejection backoff.
const EJECT_MIN: Duration = Duration::from_secs(1);
/// Longest ejection backoff.
const EJECT_MAX: Duration = Duration::from_secs(60);

/// The endpoints of one target, their load and their connections; shared by every session that
/// talks to the target (sessions keep theirs with their route).
pub struct Balancer {
    target: Target,
    pub(super) authority: Label,
    /// The target's `upstream_protocol`.
    pub(super) preference: Preference,
    state: Mutex<BalancerState>,
    /// `outbound_endpoints{authority}`.
    endpoint_count: Gauge,
    /// `outbound_pool_idle_connections{authority}`.
    pub(super) idle_count: Gauge,
    /// Where the endpoints come from: the Destination API (a `Get` stream), or `None` for
    /// static endpoints and DNS.
    pub(super) destination: Option<Arc<Destination>>,
    /// Its last use and its `Get` stream.
    pub(super) usage: Usage,
    /// The `dst_*` labels discovery gave its endpoint set.
    dst: Mutex<DstLabels>,
    /// Woken when the answer changes.
    changed: Notify,
}

/// What discovery has said about a target so far.
#[derive(Clone, Debug)]
pub(super) enum Answer {
    /// Nothing yet; the last failure to ask, if any.
    Pending(Option<String>),
    /// Endpoints (possibly none).
    Ready,
    /// A definite failure (the service does not exist, the name is refused).
    Failed(discover::Error),
}

struct BalancerState {
    /// The resolver's answer these endpoints were built from.
    from: Option<Endpoints>,
    /// Until when that answer holds (`None`: static, forever); asked again after.
    until: Option<Instant>,
    endpoints: Vec<Arc<Endpoint>>,
    /// Whether the endpoints' weights differ (then P2C samples by weight).
    weighted: bool,
    answer: Answer,
}

/// One endpoint: its load, its health, its connections.
pub struct Endpoint {
    /// Where it is and what its proxy needs.
    pub(super) address: Address,
    pending: AtomicUsize,
    rtt: Mutex<PeakEwma>,
    ejection: Mutex<Ejection>,
    /// Its connections.
    pub(super) pool: Pool,
    /// What HTTP versions it was seen to speak.
    pub(super) learned: Learned,
}

struct PeakEwma {
    value_ns: f64,
    at: Instant,
}

#[derive(Default)]
struct Ejection {
    until: Option<Instant>,
    backoff: Duration,
}

// === impl Balancer ===

impl Balancer {
    /// The target it balances.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// A balancer of `target` with no endpoints yet (the first request resolves them).
    pub(super) fn new(
        target: &Target,
        preference: Preference,
        destination: Option<Arc<Destination>>,
        endpoint_count: Gauge,
        idle_count: Gauge,
    ) -> Self {
        Self {
            target: target.clone(),
            authority: Label(target.authority().clone()),
            preference,
            state: Mutex::new(BalancerState {
                from: None,
                until: None,
                endpoints: Vec::new(),
                weighted: false,
                answer: Answer::Pending(None),
            }),
            endpoint_count,
            idle_count,
            destination,
            usage: Usage::default(),
            dst: Mutex::new(DstLabels::default()),
            changed: Notify::new(),
        }
    }

    /// The `dst_*` labels of its endpoints (for the HTTP metrics).
    pub fn dst_labels(&self) -> DstLabels {
        self.dst
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sets the `dst_*` labels discovery gave.
    pub(super) fn set_dst_labels(&self, labels: DstLabels) {
        *self.dst.lock().unwrap_or_else(PoisonError::into_inner) = labels;
    }

    /// Records what discovery said and wakes the requests waiting for a first answer.
    pub(super) fn set_answer(&self, answer: Answer) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.answer = match (&state.answer, answer) {
            // A failure to ask changes nothing once there was an answer.
            (Answer::Ready | Answer::Failed(_), Answer::Pending(_)) => return,
            (_, answer) => answer,
        };
        drop(state);
        self.changed.notify_waiters();
    }

    /// Waits up to `wait` for discovery's first answer.
    ///
    /// # Errors
    /// The answer was a failure, or none came in time (`Unavailable`, with the last reason).
    pub(super) async fn answered(&self, wait: Duration) -> Result<(), discover::Error> {
        let answered = first_answer(&self.changed, wait, || {
            match &self
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .answer
            {
                Answer::Ready => Ok(Ok(())),
                Answer::Failed(e) => Ok(Err(e.clone())),
                Answer::Pending(last) => Err(last.clone()),
            }
        })
        .await;
        answered.unwrap_or_else(|last| {
            Err(discover::Error::Unavailable {
                name: self.authority.0.to_string(),
                reason: last.unwrap_or_else(|| {
                    format!(
                        "no answer from the destination controller within {}",
                        humantime::format_duration(wait)
                    )
                }),
            })
        })
    }

    /// Whether the endpoints hold: static ones always, DNS answers until their TTL.
    pub(super) fn is_fresh(&self, now: Instant) -> bool {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.from.is_some() && state.until.is_none_or(|until| now < until)
    }

    /// Rebuilds the endpoint list when the resolver's answer changed, keeping the state of
    /// endpoints that remain.
    pub(super) fn update(&self, endpoints: &Endpoints, until: Option<Instant>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.until = until;
        if state
            .from
            .as_ref()
            .is_some_and(|from| Arc::ptr_eq(from, endpoints) || **from == **endpoints)
        {
            return;
        }
        let old = std::mem::take(&mut state.endpoints);
        for gone in old.iter().filter(|e| !endpoints.contains(&e.address)) {
            let idle = gone.pool.idle_len();
            self.idle_count.dec_by(i64::try_from(idle).unwrap_or(0));
        }
        state.endpoints = endpoints
            .iter()
            .map(|address| {
                old.iter()
                    .find(|e| e.address == *address)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Endpoint::new(address.clone())))
            })
            .collect();
        state.weighted = endpoints
            .first()
            .is_some_and(|first| endpoints.iter().any(|e| e.weight != first.weight));
        state.from = Some(endpoints.clone());
        self.endpoint_count
            .set(i64::try_from(state.endpoints.len()).unwrap_or(i64::MAX));
    }

    /// Whether it can serve: it has endpoints and one of them is in service (never failed a
    /// connect, or connected since). Ejected endpoints whose backoff ran out are still tried by
    /// P2C, but do not count here until a connect succeeds.
    pub(super) fn serving(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        matches!(state.answer, Answer::Ready | Answer::Pending(_))
            && state.endpoints.iter().any(|e| e.in_service())
    }

    /// An endpoint out of service whose ejection backoff ran out by `now`: one to probe.
    pub(super) fn probe_candidate(&self, now: Instant) -> Option<Arc<Endpoint>> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state
            .endpoints
            .iter()
            .find(|e| !e.in_service() && !e.is_ejected(now))
            .cloned()
    }

    /// The endpoint for a new request, or `NoEndpoints`.
    pub(super) fn first(&self, random: u64) -> Result<Arc<Endpoint>, ConnectError> {
        self.pick(random, None).ok_or_else(|| {
            ConnectError::Resolve(discover::Error::NoEndpoints(self.authority.0.to_string()))
        })
    }

    /// The endpoints in use now (for the idle sweep).
    pub(super) fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .endpoints
            .clone()
    }

    /// Power of two choices among endpoints not ejected (all of them when every one is), never
    /// `avoid` when there is another. Allocates nothing: candidates are counted, then indexed.
    pub(super) fn pick(&self, random: u64, avoid: Option<&Arc<Endpoint>>) -> Option<Arc<Endpoint>> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let all = &state.endpoints;
        if let [only] = all.as_slice() {
            return Some(only.clone());
        }
        let now = Instant::now();
        let allowed = |e: &&Arc<Endpoint>| avoid.is_none_or(|a| !Arc::ptr_eq(a, e));
        let healthy = |e: &&Arc<Endpoint>| allowed(e) && !e.is_ejected(now);
        let choose = |filter: &dyn Fn(&&Arc<Endpoint>) -> bool| -> Option<Arc<Endpoint>> {
            if state.weighted {
                return weighted_pair(all, filter, random).map(|(a, b)| {
                    if b.cost(now) * 2.0 < a.cost(now) {
                        b
                    } else {
                        a
                    }
                    .clone()
                });
            }
            let n = all.iter().filter(|e| filter(e)).count() as u64;
            let nth = |i: u64| all.iter().filter(|e| filter(e)).nth(i as usize);
            match n {
                0 => None,
                1 => nth(0).cloned(),
                _ => {
                    let a = random % n;
                    let mut b = (random >> 32) % (n - 1);
                    if b >= a {
                        b += 1;
                    }
                    let (ea, eb) = (nth(a)?, nth(b)?);
                    Some(if ea.cost(now) <= eb.cost(now) { ea } else { eb }.clone())
                }
            }
        };
        choose(&healthy)
            .or_else(|| choose(&allowed))
            .or_else(|| avoid.cloned())
    }
}

/// Two endpoints passing `filter`, each drawn in proportion to its weight (independently, so
/// possibly the same one) from the two halves of `random`.
fn weighted_pair<'a>(
    all: &'a [Arc<Endpoint>],
    filter: &dyn Fn(&&Arc<Endpoint>) -> bool,
    random: u64,
) -> Option<(&'a Arc<Endpoint>, &'a Arc<Endpoint>)> {
    let total: u64 = all
        .iter()
        .filter(|e| filter(e))
        .map(|e| u64::from(e.address.weight))
        .sum();
    let draw = |half: u64| {
        // Multiply-shift: a uniform point in [0, total) from 32 random bits.
        let mut point = ((u128::from(half & 0xffff_ffff) * u128::from(total)) >> 32) as u64;
        all.iter().filter(|e| filter(e)).find(|e| {
            let weight = u64::from(e.address.weight);
            if point < weight {
                return true;
            }
            point -= weight;
            false
        })
    };
    Some((draw(random)?, draw(random >> 32)?))
}

// === impl Endpoint ===

impl Endpoint {
    /// Where it is and what its proxy needs.
    pub fn address(&self) -> &Address {
        &self.address
    }

    fn new(address: Address) -> Self {
        Self {
            address,
            pending: AtomicUsize::new(0),
            rtt: Mutex::new(PeakEwma {
                value_ns: DEFAULT_RTT.as_nanos() as f64,
                at: Instant::now(),
            }),
            ejection: Mutex::new(Ejection::default()),
            pool: Pool::default(),
            learned: Learned::default(),
        }
    }

    /// Peak-EWMA RTT × (pending + 1): the load P2C compares.
    fn cost(&self, now: Instant) -> f64 {
        let rtt = self.rtt.lock().unwrap_or_else(PoisonError::into_inner);
        let decayed = rtt.decayed(now);
        decayed * (self.pending.load(Ordering::Relaxed) + 1) as f64
    }

    /// Takes a response time into the peak-EWMA estimate.
    pub(super) fn observe(&self, sample: Duration) {
        let now = Instant::now();
        let mut rtt = self.rtt.lock().unwrap_or_else(PoisonError::into_inner);
        let sample = sample.as_nanos() as f64;
        rtt.value_ns = if sample > rtt.value_ns {
            sample // peak: a slow response counts at once
        } else {
            let w = (-(now.saturating_duration_since(rtt.at).as_secs_f64()) / DECAY.as_secs_f64())
                .exp();
            rtt.value_ns * w + sample * (1.0 - w)
        };
        rtt.at = now;
    }

    fn is_ejected(&self, now: Instant) -> bool {
        self.ejection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .until
            .is_some_and(|until| now < until)
    }

    /// Whether it never failed a connect, or connected since.
    fn in_service(&self) -> bool {
        self.ejection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .until
            .is_none()
    }

    /// Skips the endpoint for a doubling backoff; returns it.
    pub(super) fn eject(&self) -> Duration {
        let mut ejection = self.ejection.lock().unwrap_or_else(PoisonError::into_inner);
        ejection.backoff = (ejection.backoff * 2).clamp(EJECT_MIN, EJECT_MAX);
        ejection.until = Some(Instant::now() + ejection.backoff);
        ejection.backoff
    }

    /// Puts the endpoint back in service after a successful connect.
    pub(super) fn restore(&self) {
        let mut ejection = self.ejection.lock().unwrap_or_else(PoisonError::into_inner);
        if ejection.until.is_some() {
            tracing::info!(addr = %self.address.addr, "endpoint back in service");
        }
        *ejection = Ejection::default();
    }

    /// Counts a request in flight on this endpoint until the guard drops.
    pub(super) fn start_request(&self) -> Pending<'_> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        Pending(self)
    }
}

/// A request in flight on an endpoint (raises its P2C cost).
pub(super) struct Pending<'a>(&'a Endpoint);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PeakEwma {
    fn decayed(&self, now: Instant) -> f64 {
        // Without samples the estimate drifts back toward the default.
        let w =
            (-(now.saturating_duration_since(self.at).as_secs_f64()) / DECAY.as_secs_f64()).exp();
        self.value_ns * w + DEFAULT_RTT.as_nanos() as f64 * (1.0 - w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balancer(addrs: &[&str]) -> Balancer {
        let target = Target::parse(
            "web.ns.svc.cluster.local:80",
            &crate::target::Suffixes::default(),
        )
        .unwrap();
        let b = Balancer::new(
            &target,
            Preference::Auto,
            None,
            Gauge::default(),
            Gauge::default(),
        );
        let endpoints: Endpoints = addrs
            .iter()
            .map(|a| Address::plain(a.parse().unwrap()))
            .collect();
        b.update(&endpoints, None);
        b
    }

    fn endpoint(b: &Balancer, i: usize) -> Arc<Endpoint> {
        b.state.lock().unwrap().endpoints[i].clone()
    }

    #[tokio::test]
    async fn p2c_prefers_the_faster_endpoint() {
        let b = balancer(&["10.0.0.1:80", "10.0.0.2:80"]);
        endpoint(&b, 0).observe(Duration::from_millis(1));
        endpoint(&b, 1).observe(Duration::from_millis(200));
        let mut fast = 0;
        for i in 0..1000u64 {
            if b.pick(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), None)
                .unwrap()
                .address
                == endpoint(&b, 0).address
            {
                fast += 1;
            }
        }
        assert_eq!(fast, 1000, "with two endpoints both are always compared");
    }

    #[tokio::test]
    async fn weights_split_even_load_in_proportion() {
        let b = balancer(&[]);
        let mut light: Address = "10.0.0.1:80".parse().unwrap();
        let mut heavy: Address = "10.0.0.2:80".parse().unwrap();
        (light.weight, heavy.weight) = (1, 3);
        b.update(&[light.clone(), heavy].into_iter().collect(), None);
        let picks = |b: &Balancer| {
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            (0..4000)
                .filter(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    b.pick(seed, None).unwrap().address == light
                })
                .count()
        };
        let share = picks(&b);
        assert!(
            (800..1200).contains(&share),
            "1:3 gives about 1000 of 4000: {share}"
        );
        // A clearly busier heavy endpoint loses whenever the light one is drawn too:
        // 1/16 + 6/16 of the picks.
        endpoint(&b, 1).pending.store(10, Ordering::Relaxed);
        let share = picks(&b);
        assert!((1550..1950).contains(&share), "load still counts: {share}");
    }

    #[tokio::test]
    async fn pending_requests_raise_the_cost() {
        let b = balancer(&["10.0.0.1:80", "10.0.0.2:80"]);
        endpoint(&b, 0).pending.store(10, Ordering::Relaxed);
        assert_eq!(b.pick(7, None).unwrap().address, endpoint(&b, 1).address);
    }

    #[tokio::test]
    async fn ejected_endpoints_are_skipped_until_all_are() {
        let b = balancer(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
        endpoint(&b, 0).eject();
        endpoint(&b, 1).eject();
        for i in 0..50u64 {
            assert_eq!(
                b.pick(i * 7919, None).unwrap().address,
                endpoint(&b, 2).address
            );
        }
        endpoint(&b, 2).eject();
        let picked = b.pick(3, None).unwrap();
        assert!(
            b.state
                .lock()
                .unwrap()
                .endpoints
                .iter()
                .any(|e| Arc::ptr_eq(e, &picked))
        );
        assert_eq!(
            endpoint(&b, 0).eject(),
            Duration::from_secs(2),
            "backoff doubles"
        );
        endpoint(&b, 0).restore();
        assert!(!endpoint(&b, 0).is_ejected(Instant::now()));
    }

    #[tokio::test]
    async fn an_avoided_endpoint_is_not_picked_when_another_exists() {
        let b = balancer(&["10.0.0.1:80", "10.0.0.2:80"]);
        let first = endpoint(&b, 0);
        for i in 0..50u64 {
            assert_eq!(
                b.pick(i, Some(&first)).unwrap().address,
                endpoint(&b, 1).address
            );
        }
        let single = balancer(&["10.0.0.9:80"]);
        let only = endpoint(&single, 0);
        assert!(Arc::ptr_eq(&single.pick(1, Some(&only)).unwrap(), &only));
    }

    #[tokio::test]
    async fn static_answers_stay_fresh_and_dns_answers_expire() {
        let b = balancer(&["10.0.0.1:80"]);
        let now = Instant::now();
        assert!(
            b.is_fresh(now + Duration::from_secs(3600)),
            "static: never re-resolved"
        );
        let same: Endpoints = ["10.0.0.1:80".parse().unwrap()].into_iter().collect();
        b.update(&same, Some(now + Duration::from_secs(5)));
        assert!(b.is_fresh(now));
        assert!(
            !b.is_fresh(now + Duration::from_secs(5)),
            "asked again at the TTL"
        );
    }

    #[tokio::test]
    async fn a_new_answer_keeps_the_state_of_remaining_endpoints() {
        let b = balancer(&["10.0.0.1:80", "10.0.0.2:80"]);
        let kept = endpoint(&b, 1);
        kept.eject();
        let next: Endpoints = ["10.0.0.2:80", "10.0.0.3:80"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        b.update(&next, None);
        assert!(Arc::ptr_eq(&endpoint(&b, 0), &kept));
        assert_eq!(b.state.lock().unwrap().endpoints.len(), 2);
    }
}
