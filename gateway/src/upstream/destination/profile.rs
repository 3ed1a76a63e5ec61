//! A `GetProfile` stream feeds one logical target's [`Profiles`]: where its requests go (the
//! weighted `dst_overrides` split, else the service itself, else a per-pod `endpoint`) and the
//! route timeouts.
//!
//! Honoured: `fully_qualified_name`, `dst_overrides`, `endpoint`, `routes[].condition` (path
//! regex, method, all/any/not) with `routes[].timeout`. Ignored: `opaque_protocol` (the
//! caller's transport header already says whether a session is opaque, and opaque sessions use
//! the split too), retries (`is_retryable`, `retry_budget`), `response_classes`, route
//! `metrics_labels`.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use linkerd2_proxy_api::destination::request_match::Match;
use linkerd2_proxy_api::destination::{DestinationProfile, RequestMatch};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

use super::stream::{Usage, Watched, first_answer, rejects_name};
use super::{Destination, convert};
use crate::metrics::{Label, SplitLabels, UpdateLabels};
use crate::target::{Suffixes, Target};
use crate::upstream::balance::Balancer;
use crate::upstream::{Preference, discover};

/// One logical target's profile, as the last `GetProfile` message said.
pub(in crate::upstream) struct Profiles {
    target: Target,
    usage: Usage,
    state: Mutex<State>,
    changed: Notify,
}

enum State {
    /// No profile yet; the last failure to ask, if any.
    Pending(Option<String>),
    /// The profile in force.
    Ready(Arc<Profile>),
    /// The controller refuses the name, or the profile names nothing to send to.
    Rejected(String),
}

/// Where a target's requests go, and their route timeouts.
pub(in crate::upstream) struct Profile {
    /// The weighted backends (the split, or the service alone); empty with `endpoint`.
    pub(in crate::upstream) backends: Vec<Backend>,
    /// The per-pod endpoint of a name that is not a service (headless pod DNS, a mirror).
    pub(in crate::upstream) endpoint: Option<Arc<Balancer>>,
    /// Routes, first match wins.
    routes: Vec<RouteRule>,
    total: u64,
}

/// One backend of a split: a service authority with its own balancer (from `Get`).
pub(in crate::upstream) struct Backend {
    /// Its `name:port`.
    pub(in crate::upstream) target: Target,
    /// Its share.
    pub(in crate::upstream) weight: u32,
    /// Its balancer, found on first use.
    pub(in crate::upstream) balancer: OnceLock<Arc<Balancer>>,
    /// `outbound_split_requests_total{authority, backend}`, bound on first use.
    pub(in crate::upstream) requests: OnceLock<prometheus_client::metrics::counter::Counter>,
}

struct RouteRule {
    condition: Condition,
    timeout: Option<Duration>,
}

/// A profile route's request match.
enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Path(regex::Regex),
    Method(http::Method),
    /// A match the gateway cannot evaluate (a bad regex, an unknown method): never matches.
    Never,
}

impl Profiles {
    /// The profile of `target`, unknown yet.
    pub(in crate::upstream) fn new(target: Target) -> Self {
        Self {
            target,
            usage: Usage::default(),
            state: Mutex::new(State::Pending(None)),
            changed: Notify::new(),
        }
    }

    /// The profile in force, waiting up to `wait` for the first.
    ///
    /// # Errors
    /// `Rejected` (404), or `Unavailable` when none came in time.
    pub(in crate::upstream) async fn current(
        &self,
        wait: Duration,
    ) -> Result<Arc<Profile>, discover::Error> {
        let name = || self.target.to_string();
        let answered = first_answer(&self.changed, wait, || {
            match &*self.state.lock().unwrap_or_else(PoisonError::into_inner) {
                State::Ready(profile) => Ok(Ok(profile.clone())),
                State::Rejected(reason) => Ok(Err(discover::Error::Rejected {
                    name: name(),
                    reason: reason.clone(),
                })),
                State::Pending(last) => Err(last.clone()),
            }
        })
        .await;
        answered.unwrap_or_else(|last| {
            Err(discover::Error::Unavailable {
                name: name(),
                reason: last.unwrap_or_else(|| {
                    format!(
                        "no profile from the destination controller within {}",
                        humantime::format_duration(wait)
                    )
                }),
            })
        })
    }

    fn set(&self, state: State) {
        let mut current = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(state, State::Pending(_)) && !matches!(*current, State::Pending(_)) {
            return; // a failure to ask keeps the last answer
        }
        *current = state;
        drop(current);
        self.changed.notify_waiters();
    }
}

impl Profile {
    /// The timeout of the first route `method` and `path` match.
    pub(in crate::upstream) fn route_timeout(
        &self,
        method: &http::Method,
        path: &str,
    ) -> Option<Duration> {
        self.routes
            .iter()
            .find(|route| route.condition.matches(method, path))
            .and_then(|route| route.timeout)
    }

    /// The backend a request with `random` goes to, by weight.
    pub(in crate::upstream) fn backend(&self, random: u64) -> Option<&Backend> {
        if self.total == 0 {
            return None;
        }
        let mut point = random % self.total;
        self.backends.iter().find(|backend| {
            let weight = u64::from(backend.weight);
            if point < weight {
                return true;
            }
            point -= weight;
            false
        })
    }

    /// A configured split: only backends, no routes.
    pub(in crate::upstream) fn of_split(split: &[crate::upstream::split::Weighted]) -> Self {
        let backends: Vec<Backend> = split
            .iter()
            .filter(|b| b.weight > 0)
            .map(|b| Backend {
                target: b.to.clone(),
                weight: b.weight,
                balancer: OnceLock::new(),
                requests: OnceLock::new(),
            })
            .collect();
        Self {
            total: backends.iter().map(|b| u64::from(b.weight)).sum(),
            backends,
            endpoint: None,
            routes: Vec::new(),
        }
    }

    /// The profile `message` describes for `target`.
    ///
    /// # Errors
    /// Neither a service name nor an endpoint: nothing to send to (404).
    pub(super) fn of(target: &Target, message: DestinationProfile) -> Result<Self, String> {
        let routes = message
            .routes
            .into_iter()
            .map(|route| RouteRule {
                condition: route.condition.map_or(Condition::Never, Condition::of),
                timeout: route
                    .timeout
                    .and_then(|t| Duration::try_from(t).ok())
                    .filter(|t| !t.is_zero()),
            })
            .collect();
        let mut profile = Self {
            backends: Vec::new(),
            endpoint: None,
            routes,
            total: 0,
        };
        let logical = message.fully_qualified_name.trim_end_matches('.');
        if logical.is_empty() {
            let Some(endpoint) = message.endpoint else {
                return Err("the profile names no service and no endpoint".to_owned());
            };
            let address = convert::address(&endpoint)?;
            let balancer = Balancer::new(
                target,
                Preference::Auto,
                None,
                Gauge::default(),
                Gauge::default(),
            );
            balancer.update(&[address].into_iter().collect(), None);
            profile.endpoint = Some(Arc::new(balancer));
            return Ok(profile);
        }
        let backend = |authority: &str, weight: u32| -> Result<Backend, String> {
            Ok(Backend {
                target: Target::parse(authority, &Suffixes::all())
                    .map_err(|e| format!("backend {authority:?}: {e}"))?,
                weight,
                balancer: OnceLock::new(),
                requests: OnceLock::new(),
            })
        };
        for split in &message.dst_overrides {
            match backend(&split.authority, split.weight) {
                Ok(b) if b.weight > 0 => profile.backends.push(b),
                Ok(_) => {}
                Err(e) => tracing::warn!(%target, error = %e, "profile backend left out"),
            }
        }
        if profile.backends.is_empty() {
            profile
                .backends
                .push(backend(&format!("{logical}:{}", target.port()), 1)?);
        }
        profile.total = profile.backends.iter().map(|b| u64::from(b.weight)).sum();
        Ok(profile)
    }
}

impl Condition {
    fn of(m: RequestMatch) -> Self {
        let all = |seq: Vec<RequestMatch>| seq.into_iter().map(Condition::of).collect();
        match m.r#match {
            Some(Match::All(seq)) => Condition::All(all(seq.matches)),
            Some(Match::Any(seq)) => Condition::Any(all(seq.matches)),
            Some(Match::Not(inner)) => Condition::Not(Box::new(Condition::of(*inner))),
            // Linkerd anchors the regex at both ends.
            Some(Match::Path(path)) => regex::Regex::new(&format!("^(?:{})$", path.regex))
                .map_or(Condition::Never, Condition::Path),
            Some(Match::Method(method)) => {
                http::Method::try_from(method).map_or(Condition::Never, Condition::Method)
            }
            None => Condition::Never,
        }
    }

    fn matches(&self, method: &http::Method, path: &str) -> bool {
        match self {
            Condition::All(all) => all.iter().all(|c| c.matches(method, path)),
            Condition::Any(any) => any.iter().any(|c| c.matches(method, path)),
            Condition::Not(inner) => !inner.matches(method, path),
            Condition::Path(regex) => regex.is_match(path),
            Condition::Method(m) => m == method,
            Condition::Never => false,
        }
    }
}

impl Watched for Profiles {
    type Message = DestinationProfile;
    type Seen = ();
    const METHOD: &'static str = "GetProfile";

    fn target(&self) -> &Target {
        &self.target
    }

    fn usage(&self) -> &Usage {
        &self.usage
    }

    async fn open(
        &self,
        destination: &Destination,
    ) -> Result<tonic::Streaming<DestinationProfile>, tonic::Status> {
        destination.get_profile(&self.target).await
    }

    fn apply(&self, destination: &Destination, (): &mut (), message: DestinationProfile) {
        let metrics = &destination.metrics.destination;
        metrics
            .updates
            .get_or_create(&UpdateLabels { kind: "profile" })
            .inc();
        let authority = Label(self.target.authority().clone());
        let old = match &*self.state.lock().unwrap_or_else(PoisonError::into_inner) {
            State::Ready(profile) => profile.backends.iter().map(|b| b.target.clone()).collect(),
            _ => Vec::new(),
        };
        for backend in old {
            metrics.splits.remove(&SplitLabels {
                authority: authority.clone(),
                backend: Label(backend.authority().clone()),
            });
        }
        match Profile::of(&self.target, message) {
            Ok(profile) => {
                if profile.backends.len() > 1 {
                    for b in &profile.backends {
                        metrics
                            .splits
                            .get_or_create(&SplitLabels {
                                authority: authority.clone(),
                                backend: Label(b.target.authority().clone()),
                            })
                            .set(i64::from(b.weight));
                    }
                }
                tracing::debug!(target = %self.target, backends = profile.backends.len(), endpoint = profile.endpoint.is_some(), "destination profile");
                self.set(State::Ready(Arc::new(profile)));
            }
            Err(reason) => {
                tracing::info!(target = %self.target, %reason, "destination profile unusable");
                self.set(State::Rejected(reason));
            }
        }
    }

    fn refused(&self, status: &tonic::Status) {
        let reason = format!("{:?}: {}", status.code(), status.message());
        self.set(if rejects_name(status) {
            State::Rejected(reason)
        } else {
            State::Pending(Some(format!("destination GetProfile: {reason}")))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linkerd2_proxy_api::destination::{PathMatch, Route, WeightedAddr, request_match};
    use linkerd2_proxy_api::http_types::HttpMethod;

    fn target() -> Target {
        Target::parse("web.ns.svc.cluster.local:80", &Suffixes::all()).unwrap()
    }

    fn split(parts: &[(&str, u32)]) -> DestinationProfile {
        crate::cli::demo::controller::split("web.ns.svc.cluster.local", parts)
    }

    fn shares(profile: &Profile) -> Vec<(String, usize)> {
        let mut counts: Vec<(String, usize)> = profile
            .backends
            .iter()
            .map(|b| (b.target.to_string(), 0))
            .collect();
        for i in 0..1000u64 {
            let chosen = profile
                .backend(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 7)
                .unwrap();
            let slot = profile
                .backends
                .iter()
                .position(|b| std::ptr::eq(b, chosen))
                .unwrap();
            counts[slot].1 += 1;
        }
        counts
    }

    #[test]
    fn a_split_sends_requests_by_weight_and_zero_weight_backends_none() {
        let p = Profile::of(
            &target(),
            split(&[
                ("web.ns.svc.cluster.local.:80", 500),
                ("web-east.ns.svc.cluster.local:80", 500),
                ("web-west.ns.svc.cluster.local:80", 0),
            ]),
        )
        .unwrap();
        let counts = shares(&p);
        assert_eq!(
            counts.len(),
            2,
            "the zero-weight backend is not a candidate"
        );
        assert_eq!(counts[0].0, "web.ns.svc.cluster.local:80");
        assert!((400..=600).contains(&counts[0].1), "{counts:?}");
    }

    #[test]
    fn a_service_without_a_split_is_its_own_backend() {
        let p = Profile::of(&target(), split(&[])).unwrap();
        assert_eq!(p.backends.len(), 1);
        assert_eq!(p.backends[0].target, target());
        assert!(p.endpoint.is_none());
    }

    #[test]
    fn a_pod_name_goes_to_the_profile_endpoint_and_nothing_is_refused() {
        let pod = DestinationProfile {
            endpoint: Some(WeightedAddr {
                addr: Some(
                    "10.1.0.7:80"
                        .parse::<std::net::SocketAddr>()
                        .unwrap()
                        .into(),
                ),
                weight: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        let p = Profile::of(&target(), pod).unwrap();
        assert!(p.backends.is_empty());
        assert!(p.endpoint.is_some());
        let e = Profile::of(&target(), DestinationProfile::default())
            .err()
            .unwrap();
        assert!(e.contains("no service and no endpoint"), "{e}");
    }

    #[test]
    fn the_first_matching_route_sets_the_timeout() {
        let path = |regex: &str| RequestMatch {
            r#match: Some(Match::Path(PathMatch {
                regex: regex.to_owned(),
            })),
        };
        let method = |m: http::Method| RequestMatch {
            r#match: Some(Match::Method(HttpMethod::from(m))),
        };
        let route = |condition, ms| Route {
            condition: Some(condition),
            timeout: Some(prost_types::Duration {
                seconds: 0,
                nanos: ms * 1_000_000,
            }),
            ..Default::default()
        };
        let mut profile = split(&[]);
        profile.routes = vec![
            route(
                RequestMatch {
                    r#match: Some(Match::All(request_match::Seq {
                        matches: vec![path("/api/.*"), method(http::Method::POST)],
                    })),
                },
                100,
            ),
            route(path("/api/.*"), 200),
            route(path("(unclosed"), 300),
            route(
                RequestMatch {
                    r#match: Some(Match::Not(Box::new(path("/health")))),
                },
                400,
            ),
        ];
        let p = Profile::of(&target(), profile).unwrap();
        let ms = |m: http::Method, p_: &str| p.route_timeout(&m, p_).map(|d| d.as_millis());
        assert_eq!(ms(http::Method::POST, "/api/x"), Some(100));
        assert_eq!(ms(http::Method::GET, "/api/x"), Some(200));
        assert_eq!(
            ms(http::Method::GET, "/other"),
            Some(400),
            "a bad regex never matches"
        );
        assert_eq!(ms(http::Method::GET, "/health"), None);
        assert_eq!(
            ms(http::Method::GET, "/api"),
            Some(400),
            "anchored at both ends"
        );
    }
}
