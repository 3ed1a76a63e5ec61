//! Where traffic goes: per target a balancer over the endpoints discovery gives, per endpoint a
//! pool of connections. `Upstream` is the one handle the data path holds.
//!
//! ```text
//! service    a target's profile: split, route timeouts (Destination)   upstream/destination/
//! traffic    configured splits and failover (config + policy file)  upstream/{split,failover}.rs
//! discover   static endpoints, else Destination `Get`, else DNS   upstream/discover.rs
//! balance    P2C over peak-EWMA, ejection with backoff            upstream/balance.rs
//! pool       HTTP/1 keep-alive pool, one HTTP/2 connection        upstream/pool.rs
//! connect    TCP; mTLS to meshed pods (+ transport header)         upstream/connect.rs
//! version    which HTTP version per endpoint, the rewrite, probing upstream/version.rs
//! ```
//!
//! Retries: a failed connect is retried once on another endpoint; a pooled connection that turns
//! out closed before the request was written is replaced once. A request is never retried after
//! bytes of it were sent, except the first request to an endpoint that answered it with an
//! HTTP/2 SETTINGS frame: it never parsed the request, which goes again as HTTP/2 (`version`).

mod address;
pub mod balance;
mod body;
mod connect;
pub mod destination;
pub mod discover;
mod error;
pub mod failover;
mod pool;
pub mod split;
pub mod version;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use tokio::sync::watch;
use tokio::time::Instant;

pub use address::{Address, Hint};
pub use balance::{Balancer, Endpoint};
pub use body::Body;
pub use connect::{ClientTls, Io, TlsRefusal};
pub use destination::Destination;
use destination::profile::{Profile, Profiles};
pub use discover::Resolver;
pub use error::{ConnectError, Error, chain};
use failover::{Event, Failover, Fallback};
use pool::Conn;
pub use pool::buffer_for;
pub use version::{Needs, Preference, Untranslatable, Wire};
use version::{Sniff, Sniffed};

use crate::metrics::{
    AuthorityLabels, ConnectErrorLabels, FailoverLabels, Label, Metered, Metrics, SplitLabels,
    TcpLabels,
};
use crate::target::Target;
use crate::transport_header::SessionProtocol;

/// How the upstream side behaves.
#[derive(Clone, Debug)]
pub struct Options {
    /// Deadline for one TCP connect.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Write HTTP/1 header names in the case they arrived in.
    pub preserve_header_case: bool,
    /// Largest response header section accepted (HTTP/1 buffer, HTTP/2 header list).
    pub max_header_list_size: usize,
    /// Per-target HTTP version overrides, by lower-case `name:port`.
    pub protocols: HashMap<String, Preference>,
    /// Configured traffic splits, by lower-case `name:port`.
    pub splits: HashMap<String, Vec<split::Weighted>>,
    /// Configured failover fallbacks, by lower-case `name:port`.
    pub failover: HashMap<String, Vec<Fallback>>,
    /// How long a primary must serve again before traffic fails back to it.
    pub failover_hold_down: Duration,
}

/// The splits and failover in effect: the config's, with the policy file's on top (replaced at
/// each reload of the file).
#[derive(Debug, Default)]
struct Traffic {
    splits: HashMap<String, Vec<split::Weighted>>,
    failover: HashMap<String, Vec<Fallback>>,
}

impl Traffic {
    /// The config's (`options`), with `splits` and `failover` replacing its entries per target.
    fn of(
        options: &Options,
        splits: &HashMap<String, Vec<split::Weighted>>,
        failover: &HashMap<String, Vec<Fallback>>,
    ) -> Self {
        let mut traffic = Self {
            splits: options.splits.clone(),
            failover: options.failover.clone(),
        };
        traffic
            .splits
            .extend(splits.iter().map(|(k, v)| (k.clone(), v.clone())));
        traffic
            .failover
            .extend(failover.iter().map(|(k, v)| (k.clone(), v.clone())));
        traffic
    }
}

/// A per-target map keyed as targets are looked up: by their `name:port` authority (lower case,
/// no trailing dot); a key that is not a target stays as written, lower-cased.
pub fn by_authority<'a, V: Clone + 'a>(
    map: impl IntoIterator<Item = (&'a String, &'a V)>,
) -> HashMap<String, V> {
    map.into_iter()
        .map(|(name, value)| {
            let key = Target::configured(name)
                .map_or_else(|_| name.to_ascii_lowercase(), |t| t.authority().to_string());
            (key, value.clone())
        })
        .collect()
}

/// How a target is named upstream: the URI authority (HTTP/2) and `Host` (HTTP/1).
#[derive(Clone, Debug)]
pub struct Names {
    /// `name:port`.
    pub authority: http::uri::Authority,
    /// `Host` (the name alone for port 80).
    pub host: http::HeaderValue,
}

impl Error {
    /// An exchange failure described by `error` and its sources.
    pub fn exchange(error: &dyn std::error::Error) -> Self {
        Self::Exchange(chain(error))
    }
}

/// [`version::shape`] for a checked target (whose names always make a URI).
fn shape(
    parts: &mut http::request::Parts,
    wire: Wire,
    names: &Names,
    meshed: bool,
) -> Result<(), Error> {
    version::shape(parts, wire, &names.authority, &names.host, meshed)
        .map_err(|_| Error::Exchange("a checked target does not make a URI".to_owned()))
}

/// A logical target: its own balancer and, when the Destination API covers it, its profile
/// (which may send its requests elsewhere: a split, a per-pod endpoint).
pub struct Service {
    direct: Arc<Balancer>,
    profiles: Option<Arc<Profiles>>,
    /// What the operator configured for it, rebuilt when that changes.
    managed: Mutex<Managed>,
}

/// A target's configured split (which wins over the profile's) and failover, as of one version
/// of the traffic configuration.
#[derive(Clone, Default)]
struct Managed {
    version: u64,
    split: Option<Arc<Profile>>,
    failover: Option<Arc<Failover>>,
}

impl Service {
    /// The target.
    pub fn target(&self) -> &Target {
        self.direct.target()
    }
}

/// Every target's balancer, built once.
pub struct Upstream {
    resolver: Resolver,
    destination: Option<Arc<Destination>>,
    options: Options,
    /// The client TLS of new connections to meshed endpoints (follows credential reloads).
    tls: watch::Receiver<Arc<ClientTls>>,
    metrics: Arc<Metrics>,
    balancers: Mutex<HashMap<Arc<str>, Arc<Balancer>>>,
    services: Mutex<HashMap<Arc<str>, Arc<Service>>>,
    /// Splits and failover in effect, and a version bumped at each change (from 1).
    traffic: RwLock<Arc<Traffic>>,
    traffic_version: AtomicU64,
    seed: AtomicU64,
}

impl Upstream {
    /// Builds the upstream side.
    pub fn new(
        resolver: Resolver,
        destination: Option<Arc<Destination>>,
        options: Options,
        tls: watch::Receiver<Arc<ClientTls>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let traffic = Traffic::of(&options, &HashMap::new(), &HashMap::new());
        Self {
            resolver,
            destination,
            options,
            tls,
            metrics,
            balancers: Mutex::new(HashMap::new()),
            services: Mutex::new(HashMap::new()),
            traffic: RwLock::new(Arc::new(traffic)),
            traffic_version: AtomicU64::new(1),
            seed: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
        }
    }

    /// Puts `splits` and `failover` (the policy file's, by lower-case `name:port`) on top of the
    /// config's, for new requests and sessions. Failover starts again from each target's
    /// primary.
    pub fn set_traffic(
        &self,
        splits: &HashMap<String, Vec<split::Weighted>>,
        failover: &HashMap<String, Vec<Fallback>>,
    ) {
        let traffic = Traffic::of(&self.options, splits, failover);
        *self.traffic.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(traffic);
        self.traffic_version.fetch_add(1, Ordering::AcqRel);
    }

    /// The Destination client, when one is configured.
    pub fn destination(&self) -> Option<&Arc<Destination>> {
        self.destination.as_ref()
    }

    /// The Destination client if it covers `target` (and no static endpoints do).
    fn discovered_by(&self, target: &Target) -> Option<&Arc<Destination>> {
        self.destination
            .as_ref()
            .filter(|d| d.covers(target) && !self.resolver.has_static(target))
    }

    /// The logical target `target`, created on first use.
    pub fn service(&self, target: &Target) -> Arc<Service> {
        if let Some(service) = self
            .services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(target.authority())
        {
            return service.clone();
        }
        let service = Arc::new(Service {
            direct: self.balancer(target),
            profiles: self
                .discovered_by(target)
                .map(|_| Arc::new(Profiles::new(target.clone()))),
            managed: Mutex::new(Managed::default()),
        });
        self.services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(target.authority().clone())
            .or_insert(service)
            .clone()
    }

    /// Where a request to `service` goes (`route`: its method and path, for the profile's
    /// route timeouts; `None` for opaque sessions): the balancer, and the route's timeout. With
    /// failover configured, a fallback while the primary does not serve (never a gateway that
    /// `came_through` says the request passed).
    ///
    /// # Errors
    /// The profile is refused (404) or did not come in time (503), and no fallback serves.
    pub async fn select(
        &self,
        service: &Service,
        route: Option<(&http::Method, &str)>,
        came_through: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<(Arc<Balancer>, Option<Duration>), ConnectError> {
        let managed = self.managed(service);
        let primary = self.primary(service, managed.split.as_ref(), route).await;
        let Some(failover) = managed.failover else {
            return primary;
        };
        self.fail_over(service, &failover, primary, came_through)
            .await
    }

    /// The service's configured split and failover, rebuilt after a change.
    fn managed(&self, service: &Service) -> Managed {
        let version = self.traffic_version.load(Ordering::Acquire);
        let mut managed = service
            .managed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if managed.version == version {
            return managed.clone();
        }
        let traffic = self
            .traffic
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let target = service.target();
        let authority = Label(target.authority().clone());
        if let Some(old) = &managed.split {
            for b in &old.backends {
                self.metrics.destination.splits.remove(&SplitLabels {
                    authority: authority.clone(),
                    backend: Label(b.target.authority().clone()),
                });
            }
        }
        let split = traffic.splits.get(&**target.authority()).map(|split| {
            let profile = Profile::of_split(split);
            for b in &profile.backends {
                self.metrics
                    .destination
                    .splits
                    .get_or_create(&SplitLabels {
                        authority: authority.clone(),
                        backend: Label(b.target.authority().clone()),
                    })
                    .set(i64::from(b.weight));
            }
            Arc::new(profile)
        });
        let failover = traffic
            .failover
            .get(&**target.authority())
            .map(|fallbacks| {
                let fallbacks = fallbacks
                    .iter()
                    .map(|f| (f.clone(), self.fallback_balancer(target, f)))
                    .collect();
                Arc::new(Failover::new(fallbacks, self.options.failover_hold_down))
            });
        *managed = Managed {
            version,
            split,
            failover,
        };
        managed.clone()
    }

    /// A fallback's balancer: a local target's own, or a gateway's with its one endpoint. Both
    /// live with every other balancer (kept across reloads, their idle connections swept).
    fn fallback_balancer(&self, target: &Target, fallback: &Fallback) -> Arc<Balancer> {
        let (addr, identity, to) = match fallback {
            Fallback::Local(to) => return self.balancer(to),
            Fallback::Gateway {
                addr,
                identity,
                target: to,
            } => (addr, identity, to.as_ref().unwrap_or(target)),
        };
        let label: Arc<str> = fallback.label().into();
        let balancer = self
            .balancers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            // Not a `name:port`, so never a target's own key.
            .entry(format!("{label} {to}").into())
            .or_insert_with(|| {
                let labels = AuthorityLabels {
                    authority: Label(label),
                };
                Arc::new(Balancer::new(
                    to,
                    Preference::default(),
                    None,
                    self.metrics.endpoints.get_or_create_owned(&labels),
                    self.metrics.pool_idle.get_or_create_owned(&labels),
                ))
            })
            .clone();
        // A changed identity replaces the endpoint; the same one keeps its connections.
        balancer.update(
            &Arc::from([Fallback::gateway_address(*addr, identity, to)]),
            None,
        );
        balancer
    }

    /// Failover for one request: moves the service's active choice on what serves now, and
    /// picks for this request the active one, or when it is a gateway the request came through
    /// the first other fallback that serves, else the primary.
    async fn fail_over(
        &self,
        service: &Service,
        failover: &Failover,
        primary: Result<(Arc<Balancer>, Option<Duration>), ConnectError>,
        came_through: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<(Arc<Balancer>, Option<Duration>), ConnectError> {
        let now = Instant::now();
        let primary_serves = match &primary {
            Ok((balancer, _)) => self.refresh(balancer).await.is_ok() && balancer.serving(),
            Err(_) => false,
        };
        if primary_serves && failover.active() == 0 {
            return primary;
        }
        if let Ok((balancer, _)) = &primary
            && !primary_serves
        {
            self.probe(failover, balancer, now);
        }
        let mut serving = Vec::with_capacity(failover.fallbacks.len() + 1);
        serving.push(primary_serves);
        for (_, balancer) in &failover.fallbacks {
            serving.push(self.refresh(balancer).await.is_ok() && balancer.serving());
        }
        let (event, active) = {
            let mut state = failover
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let event = state.advance(
                now,
                failover.hold_down,
                failover.fallbacks.len(),
                &mut |i| serving[i],
            );
            (event, state.active())
        };
        if let Some(event) = event {
            self.failover_event(service, failover, event);
        }
        let choice = if active == 0 || !failover.loops(active, came_through) {
            active
        } else {
            (1..=failover.fallbacks.len())
                .find(|&i| serving[i] && !failover.loops(i, came_through))
                .unwrap_or(0)
        };
        match choice {
            0 => primary,
            i => {
                let timeout = primary.ok().and_then(|(_, timeout)| timeout);
                Ok((failover.fallbacks[i - 1].1.clone(), timeout))
            }
        }
    }

    /// Logs and counts a failover event.
    fn failover_event(&self, service: &Service, failover: &Failover, event: Event) {
        let target = service.target();
        let name = |i: usize| match i {
            0 => target.to_string(),
            i => failover.fallbacks[i - 1].0.label(),
        };
        let (kind, from, to) = match event {
            Event::Failover { from, to } => ("failover", from, to),
            Event::Failback { from } => ("failback", from, 0),
        };
        let (from, to) = (name(from), name(to));
        match kind {
            "failover" => {
                tracing::warn!(%target, %from, %to, "failover: the primary does not serve")
            }
            _ => {
                tracing::info!(%target, %from, %to, "failback: the primary served for the hold-down")
            }
        }
        self.metrics
            .failover_events
            .get_or_create(&FailoverLabels {
                authority: Label(target.authority().clone()),
                event: kind,
                backend: Label(to.into()),
            })
            .inc();
    }

    /// While failed over, tries one connect to an ejected endpoint of the primary whose backoff
    /// ran out (in the background, one at a time): nothing else would send it traffic to find
    /// out that it is back. A success puts it back in service; a failure ejects it for longer.
    fn probe(&self, failover: &Failover, balancer: &Arc<Balancer>, now: Instant) {
        let Some(endpoint) = balancer.probe_candidate(now) else {
            return;
        };
        let Some(probing) = failover.start_probe() else {
            return;
        };
        let tls = self.tls.borrow().clone();
        let timeout = self.options.connect_timeout;
        tokio::spawn(async move {
            let _probing = probing;
            let dialled =
                connect::dial(&endpoint.address, &tls, SessionProtocol::Opaque, timeout).await;
            match dialled {
                Ok(_) => endpoint.restore(),
                Err(e) => {
                    let backoff = endpoint.eject();
                    tracing::debug!(addr = %endpoint.address.addr, error = %e, ?backoff, "failover probe failed");
                }
            }
        });
    }

    /// The primary's choice: the configured split, else the profile's, else the target's own
    /// balancer.
    async fn primary(
        &self,
        service: &Service,
        split: Option<&Arc<Profile>>,
        route: Option<(&http::Method, &str)>,
    ) -> Result<(Arc<Balancer>, Option<Duration>), ConnectError> {
        let profile = match (split, &service.profiles, &self.destination) {
            (Some(split), _, _) => split.clone(),
            (None, Some(profiles), Some(destination)) => {
                destination::ensure(destination, profiles);
                profiles.current(destination.options().wait).await?
            }
            _ => return Ok((service.direct.clone(), None)),
        };
        let timeout = route.and_then(|(method, path)| profile.route_timeout(method, path));
        if let Some(endpoint) = &profile.endpoint {
            return Ok((endpoint.clone(), timeout));
        }
        let backend = profile
            .backend(self.random())
            .ok_or_else(|| discover::Error::Rejected {
                name: service.target().to_string(),
                reason: "the profile has no backend".to_owned(),
            })?;
        let balancer = backend
            .balancer
            .get_or_init(|| self.balancer(&backend.target))
            .clone();
        if profile.backends.len() > 1 {
            backend
                .requests
                .get_or_init(|| {
                    self.metrics
                        .destination
                        .split_requests
                        .get_or_create_owned(&SplitLabels {
                            authority: Label(service.target().authority().clone()),
                            backend: Label(backend.target.authority().clone()),
                        })
                })
                .inc();
        }
        Ok((balancer, timeout))
    }

    /// The balancer of `target`, created on first use.
    pub fn balancer(&self, target: &Target) -> Arc<Balancer> {
        self.balancers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(target.authority().clone())
            .or_insert_with(|| {
                let labels = AuthorityLabels {
                    authority: Label(target.authority().clone()),
                };
                let preference = self
                    .options
                    .protocols
                    .get(&**target.authority())
                    .copied()
                    .unwrap_or_default();
                Arc::new(Balancer::new(
                    target,
                    preference,
                    self.discovered_by(target).cloned(),
                    self.metrics.endpoints.get_or_create_owned(&labels),
                    self.metrics.pool_idle.get_or_create_owned(&labels),
                ))
            })
            .clone()
    }

    /// Sends `req` to one of the balancer's endpoints in the HTTP version that endpoint takes
    /// (`version` module): `req` has lost its hop-by-hop headers and is rewritten here for the
    /// version chosen, with `names` for its URI and `Host`.
    ///
    /// # Errors
    /// Resolution, connect (after one retry on another endpoint), a request the endpoint's only
    /// version cannot carry, or the exchange itself.
    pub async fn send(
        &self,
        balancer: &Arc<Balancer>,
        req: Request<Incoming>,
        needs: Needs,
        names: &Names,
        answered_by: &mut Option<Arc<Endpoint>>,
    ) -> Result<Response<Incoming>, Error> {
        let waited = Instant::now();
        self.refresh(balancer).await?;
        let (endpoint, (wire, conn)) = self
            .with_retry(balancer, |endpoint| async move {
                self.conn(balancer, &endpoint, needs).await
            })
            .await?;
        self.metrics
            .connection_wait
            .observe(waited.elapsed().as_secs_f64() * 1000.0);
        *answered_by = Some(endpoint.clone());
        let pending = endpoint.start_request();
        let start = Instant::now();
        let meshed = endpoint.address.identity.is_some();
        let (mut parts, body) = req.into_parts();
        shape(&mut parts, wire, names, meshed)?;
        let result = match conn {
            Conn::Http1(send, None) => {
                let req = Request::from_parts(parts, Body::direct(body));
                self.send_http1(balancer, &endpoint, send, req).await
            }
            Conn::Http1(send, Some(sniffed)) => {
                self.probe_http1(balancer, &endpoint, send, &sniffed, parts, body, names)
                    .await
            }
            Conn::Http2(mut send) => send
                .send_request(Request::from_parts(parts, Body::direct(body)))
                .await
                .map_err(|e| Error::exchange(&e)),
        };
        drop(pending);
        let mut response = result?;
        endpoint.observe(start.elapsed());
        if wire == Wire::Http2 && needs.version != http::Version::HTTP_2 {
            // The pod's proxy says which HTTP/1 version answered; the caller gets its own back.
            response.headers_mut().remove(&version::L5D_ORIG_PROTO);
        }
        Ok(response)
    }

    async fn send_http1(
        &self,
        balancer: &Balancer,
        endpoint: &Arc<Endpoint>,
        mut send: http1::SendRequest<Body>,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, Error> {
        let exchange = |e: hyper::Error| Error::exchange(&e);
        let response = match send.try_send_request(req).await {
            Ok(response) => response,
            Err(mut e) => match e.take_message() {
                // Never written (the pooled connection closed under us): once more, fresh.
                Some(req) => {
                    let mut fresh = self.http1_conn(balancer, endpoint).await?;
                    fresh.ready().await.map_err(exchange)?;
                    let response = fresh.send_request(req).await.map_err(exchange)?;
                    endpoint.pool.put_idle(fresh, &balancer.idle_count);
                    return Ok(response);
                }
                None => return Err(exchange(e.into_error())),
            },
        };
        // Ready again once this response's body has been read; idle until then.
        endpoint.pool.put_idle(send, &balancer.idle_count);
        Ok(response)
    }

    /// The first HTTP/1 request on a new connection to an endpoint not yet seen to answer
    /// HTTP/1: its body is taped, and when the endpoint turns out to speak only HTTP/2 (it
    /// answered with a SETTINGS frame, never parsing the request) it goes again as HTTP/2.
    #[allow(clippy::too_many_arguments)]
    async fn probe_http1(
        &self,
        balancer: &Balancer,
        endpoint: &Arc<Endpoint>,
        mut send: http1::SendRequest<Body>,
        sniffed: &Sniffed,
        parts: http::request::Parts,
        body: Incoming,
        names: &Names,
    ) -> Result<Response<Incoming>, Error> {
        let mut again = http::Request::new(());
        *again.method_mut() = parts.method.clone();
        *again.uri_mut() = parts.uri.clone();
        *again.version_mut() = parts.version;
        *again.headers_mut() = parts.headers.clone();
        let (taped, replay) = Body::taped(body);
        let error = match send.send_request(Request::from_parts(parts, taped)).await {
            Ok(response) => {
                endpoint.learned.answered(Wire::Http1);
                endpoint.pool.put_idle(send, &balancer.idle_count);
                return Ok(response);
            }
            Err(e) => e,
        };
        let Some(mut send) = self.http2_instead(balancer, endpoint, sniffed).await? else {
            return Err(Error::exchange(&error));
        };
        let body = replay.again().ok_or_else(|| {
            Error::Exchange(format!(
                "the service speaks only HTTP/2 and the request body was over {} KiB to send again",
                body::TAPE_LIMIT / 1024
            ))
        })?;
        let (mut parts, ()) = again.into_parts();
        shape(&mut parts, Wire::Http2, names, false)?;
        send.send_request(Request::from_parts(parts, body))
            .await
            .map_err(|e| Error::exchange(&e))
    }

    /// A byte stream to one of the balancer's endpoints (opaque sessions, CONNECT): TCP, or mTLS
    /// to a meshed pod (through its inbound port with a transport header when it has one).
    ///
    /// # Errors
    /// Resolution, or connect failure after one retry on another endpoint.
    pub async fn connect(
        &self,
        balancer: &Arc<Balancer>,
    ) -> Result<(Arc<Endpoint>, Metered<Io>), ConnectError> {
        self.refresh(balancer).await?;
        self.with_retry(balancer, |endpoint| async move {
            self.dial(balancer, &endpoint, SessionProtocol::Opaque)
                .await
        })
        .await
    }

    /// Brings the balancer's endpoints up to date with discovery once its last answer has
    /// expired (static endpoints never do): no resolution on the request path otherwise.
    async fn refresh(&self, balancer: &Arc<Balancer>) -> Result<(), ConnectError> {
        if let Some(destination) = &balancer.destination {
            destination::ensure(destination, balancer);
            return Ok(balancer.answered(destination.options().wait).await?);
        }
        if balancer.is_fresh(Instant::now()) {
            return Ok(());
        }
        let target = balancer.target();
        let resolved = self.resolver.resolve(target.name(), target.port()).await?;
        balancer.update(&resolved.endpoints, resolved.valid_until);
        Ok(())
    }

    /// Runs `attempt` on a chosen endpoint and, when it fails (nothing of a request has been
    /// sent yet), once more on another endpoint.
    async fn with_retry<T, E, F, Fut>(
        &self,
        balancer: &Balancer,
        mut attempt: F,
    ) -> Result<(Arc<Endpoint>, T), E>
    where
        F: FnMut(Arc<Endpoint>) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        E: From<ConnectError>,
    {
        let first = balancer.first(self.random())?;
        let error = match attempt(first.clone()).await {
            Ok(value) => return Ok((first, value)),
            Err(e) => e,
        };
        match balancer.pick(self.random(), Some(&first)) {
            Some(second) if !Arc::ptr_eq(&first, &second) => {
                let value = attempt(second.clone()).await?;
                Ok((second, value))
            }
            _ => Err(error),
        }
    }

    /// A connection to `endpoint` for a request with `needs`, in the version it takes.
    async fn conn(
        &self,
        balancer: &Balancer,
        endpoint: &Arc<Endpoint>,
        needs: Needs,
    ) -> Result<(Wire, Conn), Error> {
        let address = &endpoint.address;
        let choose = || {
            version::choose(
                needs,
                balancer.preference,
                address.hint,
                address.identity.is_some(),
                &endpoint.learned,
                Instant::now(),
            )
            .map_err(Error::Untranslatable)
        };
        let (mut wire, mut probe) = choose()?;
        if wire == Wire::Http2 {
            if let Some(send) = self.http2_conn(balancer, endpoint, probe).await? {
                return Ok((Wire::Http2, Conn::Http2(send)));
            }
            // It answered the HTTP/2 preface in HTTP/1 (learned and counted): choose again.
            (wire, probe) = choose()?;
            if wire == Wire::Http2 {
                return Err(Error::Exchange(
                    "the service answered the HTTP/2 preface in HTTP/1".to_owned(),
                ));
            }
        }
        let idle_timeout = self.options.pool_idle_timeout;
        if let Some(send) = endpoint.pool.take_idle(idle_timeout, &balancer.idle_count) {
            return Ok((Wire::Http1, Conn::Http1(send, None)));
        }
        let exchange = |e: hyper::Error| Error::exchange(&e);
        let io = self
            .dial(balancer, endpoint, SessionProtocol::Http1)
            .await?;
        let (io, sniffed) = Sniff::new(io, probe);
        let mut send = pool::http1_handshake(io, &self.options)
            .await
            .map_err(exchange)?;
        if let Err(e) = send.ready().await {
            // An h2c-only service may answer the connection with SETTINGS and close it before
            // the request is written: nothing was sent, so it goes as HTTP/2 straight away.
            let instead = match &sniffed {
                Some(sniffed) => self.http2_instead(balancer, endpoint, sniffed).await?,
                None => None,
            };
            return match instead {
                Some(send) => Ok((Wire::Http2, Conn::Http2(send))),
                None => Err(exchange(e)),
            };
        }
        Ok((Wire::Http1, Conn::Http1(send, sniffed)))
    }

    /// The endpoint's HTTP/2 connection, made when there is none; `probe`: a new plaintext
    /// connection first waits for the endpoint's first bytes, and `None` means it answered in
    /// HTTP/1 (or closed) — it speaks only HTTP/1, which is now learned and counted.
    async fn http2_conn(
        &self,
        balancer: &Balancer,
        endpoint: &Arc<Endpoint>,
        probe: bool,
    ) -> Result<Option<http2::SendRequest<Body>>, Error> {
        let mut slot = endpoint.pool.http2.lock().await;
        if let Some((send, used)) = slot.as_mut().filter(|(s, _)| !s.is_closed()) {
            *used = Instant::now();
            return Ok(Some(send.clone()));
        }
        if probe && endpoint.learned.only(Instant::now()) == Some(Wire::Http1) {
            // A request probing at the same time found out while this one waited for the slot.
            return Ok(None);
        }
        let io = self
            .dial(balancer, endpoint, SessionProtocol::Http2)
            .await?;
        let (io, sniffed) = Sniff::new(io, probe);
        let send = pool::http2_handshake(io, &self.options)
            .await
            .map_err(|e| Error::exchange(&e))?;
        if let Some(sniffed) = sniffed {
            // An HTTP/2 server sends its SETTINGS at once; an HTTP/1 one answers the preface
            // with a status line or an error page, or closes.
            let first = sniffed.wait(self.options.connect_timeout).await;
            tracing::debug!(addr = %endpoint.address.addr, ?first, "HTTP/2 probe");
            match first {
                Some(first) if version::fallback(Wire::Http2, first).is_some() => {
                    self.fell_back(balancer, endpoint, Wire::Http1);
                    return Ok(None);
                }
                Some(version::First::Http2) => endpoint.learned.answered(Wire::Http2),
                _ => {}
            }
        }
        *slot = Some((send.clone(), Instant::now()));
        Ok(Some(send))
    }

    /// After an HTTP/1 probe failed: when the endpoint had answered with an HTTP/2 SETTINGS
    /// frame it speaks only HTTP/2 (learned and counted), and this is its HTTP/2 connection.
    async fn http2_instead(
        &self,
        balancer: &Balancer,
        endpoint: &Arc<Endpoint>,
        sniffed: &Sniffed,
    ) -> Result<Option<http2::SendRequest<Body>>, Error> {
        let first = sniffed.wait(self.options.connect_timeout).await;
        if first.and_then(|first| version::fallback(Wire::Http1, first)) != Some(Wire::Http2) {
            return Ok(None);
        }
        self.fell_back(balancer, endpoint, Wire::Http2);
        match self.http2_conn(balancer, endpoint, false).await? {
            Some(send) => Ok(Some(send)),
            None => Err(Error::Exchange(
                "the service answered neither HTTP/1 nor HTTP/2".to_owned(),
            )),
        }
    }

    /// Records that `endpoint` speaks only `wire`: remembered, counted, logged.
    fn fell_back(&self, balancer: &Balancer, endpoint: &Endpoint, wire: Wire) {
        endpoint.learned.speaks_only(wire, Instant::now());
        self.metrics
            .version_fallback(&balancer.authority, wire.label());
        tracing::info!(
            target = &*balancer.authority.0,
            addr = %endpoint.address.addr,
            speaks = wire.label(),
            "endpoint speaks only one HTTP version; remembered"
        );
    }

    async fn http1_conn(
        &self,
        balancer: &Balancer,
        endpoint: &Arc<Endpoint>,
    ) -> Result<http1::SendRequest<Body>, Error> {
        let io = self
            .dial(balancer, endpoint, SessionProtocol::Http1)
            .await?;
        pool::http1_handshake(io, &self.options)
            .await
            .map_err(|e| Error::exchange(&e))
    }

    /// Closes connections idle for `pool_idle_timeout` or longer, for every target, whether or
    /// not it gets traffic again: expired HTTP/1 pool entries and unused HTTP/2 connections
    /// (streams still open on one keep it alive until they end). Returns how many were closed.
    pub fn sweep_idle(&self) -> usize {
        let max_idle = self.options.pool_idle_timeout;
        let balancers: Vec<Arc<Balancer>> = self
            .balancers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        balancers
            .iter()
            .flat_map(|balancer| {
                balancer
                    .endpoints()
                    .into_iter()
                    .map(move |endpoint| endpoint.pool.sweep(max_idle, &balancer.idle_count))
            })
            .sum()
    }

    /// A connection to `endpoint` (TCP, or mTLS to a meshed pod), counted as a `peer="dst"`
    /// transport; failure is counted by reason and ejects the endpoint, success clears its
    /// ejection.
    async fn dial(
        &self,
        balancer: &Balancer,
        endpoint: &Endpoint,
        protocol: SessionProtocol,
    ) -> Result<Metered<Io>, ConnectError> {
        let address = &endpoint.address;
        let tls = self.tls.borrow().clone();
        match connect::dial(address, &tls, protocol, self.options.connect_timeout).await {
            Ok(io) => {
                endpoint.restore();
                let labels = TcpLabels::outbound(
                    balancer.authority.clone(),
                    address.identity.as_ref().map(|id| id.as_str()),
                    address.addr,
                );
                let record = self.metrics.open_connection(labels);
                Ok(Metered::with_record(io, record))
            }
            Err(e) => {
                self.metrics
                    .connect_errors
                    .get(&ConnectErrorLabels {
                        authority: balancer.authority.clone(),
                        reason: e.label(),
                    })
                    .inc();
                let backoff = endpoint.eject();
                let addr = address.addr;
                tracing::warn!(target = &*balancer.authority.0, %addr, error = %e, ?backoff, "endpoint ejected");
                self.metrics.endpoint_ejected(&balancer.authority);
                Err(e)
            }
        }
    }

    /// A cheap pseudo-random number (xorshift) for the two choices.
    fn random(&self) -> u64 {
        let mut x = self
            .seed
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x
    }
}
