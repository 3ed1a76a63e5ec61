//! Linkerd's Destination API as the source of endpoints and profiles (spec §5.2–§5.3), for the
//! names under `destination_profile_suffixes`; static `endpoints` still win.
//!
//! - One HTTP/2 connection to the controller (`destination_svc_addr`) carries every stream. With
//!   `destination_svc_name` it is mTLS as the gateway's own identity and the controller must
//!   prove that name; without one only a loopback address is allowed (plaintext).
//! - `Get` per target authority (`endpoints.rs`): one stream per balancer while the balancer is
//!   used, closed after `discovery_idle_timeout` without a request and opened again on the next.
//!   `Add` / `Remove` / `NoEndpoints` update the balancer in place.
//! - `GetProfile` per logical target (`profile.rs`): the weighted split over backend
//!   authorities (`dst_overrides`), route timeouts, and the `endpoint` of a per-pod name.
//! - A stream that fails is opened again with backoff (100 ms doubling to 60 s, ±10 %); what it
//!   last said keeps serving meanwhile. A request waits at most `discovery_timeout` for a
//!   target's first answer (then 503).
//! - Every stream sends `destination_context` as its context token, unchanged.

pub mod convert;
mod endpoints;
pub(super) mod profile;
pub(super) mod stream;

pub(in crate::upstream) use stream::ensure;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use identity::IdentityName;
use identity::grpc::Channel;
use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use linkerd2_proxy_api::destination::{DestinationProfile, GetDestination, Update};
use tokio::sync::watch;

use super::{Address, ClientTls, connect};
use crate::metrics::{MethodLabels, Metrics};
use crate::target::{Suffixes, Target};
use crate::transport_header::SessionProtocol;

/// How meshgate reads a `GetProfile` answer for `target`: the backends and their weights (the
/// service itself when there is no split; none for a per-pod endpoint, which is returned), and
/// the timeout of the route `method` and `path` match.
///
/// # Errors
/// Why requests to `target` would get 404 (no service name and no endpoint), or a bad endpoint.
pub fn explain_profile(
    target: &Target,
    message: DestinationProfile,
    method: &http::Method,
    path: &str,
) -> Result<Explained, String> {
    let profile = profile::Profile::of(target, message)?;
    Ok(Explained {
        backends: profile
            .backends
            .iter()
            .map(|b| (b.target.clone(), b.weight))
            .collect(),
        endpoint: profile
            .endpoint
            .as_ref()
            .and_then(|b| b.endpoints().first().map(|e| e.address.clone())),
        timeout: profile.route_timeout(method, path),
    })
}

/// [`explain_profile`]'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explained {
    /// Backends and weights.
    pub backends: Vec<(Target, u32)>,
    /// The per-pod endpoint, for a name that is not a service.
    pub endpoint: Option<Address>,
    /// The matched route's timeout.
    pub timeout: Option<Duration>,
}

/// How the Destination client is set up.
#[derive(Clone, Debug)]
pub struct Options {
    /// The controller, `host:port`.
    pub addr: String,
    /// The controller's identity (mTLS); `None`: plaintext, loopback only.
    pub name: Option<IdentityName>,
    /// The context token sent with every lookup.
    pub context: String,
    /// Names looked up here (the rest use static endpoints or DNS).
    pub suffixes: Suffixes,
    /// A stream unused this long is closed.
    pub idle_timeout: Duration,
    /// How long a request waits for a target's first answer.
    pub wait: Duration,
}

/// Whether the controller was ever reached: `Err` with the last failure until it is.
pub type Reached = Result<(), String>;

/// The Destination client: one controller connection, shared by every stream.
pub struct Destination {
    options: Options,
    origin: http::Uri,
    tls: watch::Receiver<Arc<ClientTls>>,
    connect_timeout: Duration,
    metrics: Arc<Metrics>,
    channel: tokio::sync::Mutex<Option<Channel>>,
    reached: watch::Sender<Reached>,
    jitter: AtomicU64,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Destination {
    /// A client of the controller in `options` (nothing is dialled until the first lookup or
    /// [`Destination::connect`]).
    ///
    /// # Errors
    /// An address that is not `host:port`.
    pub fn new(
        options: Options,
        tls: watch::Receiver<Arc<ClientTls>>,
        connect_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let origin = format!("http://{}", options.addr)
            .parse()
            .map_err(|e| format!("destination_svc_addr {:?}: {e}", options.addr))?;
        Ok(Self {
            options,
            origin,
            tls,
            connect_timeout,
            metrics,
            channel: tokio::sync::Mutex::new(None),
            reached: watch::channel(Err("the destination controller was not reached yet".into())).0,
            jitter: AtomicU64::new(0x853c_49e6_748f_ea9b),
        })
    }

    /// Whether `target`'s name is looked up here.
    pub fn covers(&self, target: &Target) -> bool {
        self.options.suffixes.allows(target.name())
    }

    /// The options in use.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Follows whether the controller was ever reached (for `/ready`).
    pub fn reached(&self) -> watch::Receiver<Reached> {
        self.reached.subscribe()
    }

    /// Connects to the controller now (at startup, so `/ready` and the log tell at once whether
    /// it is reachable).
    ///
    /// # Errors
    /// Why the controller could not be reached.
    pub async fn connect(&self) -> Result<(), String> {
        self.channel().await.map(drop)
    }

    /// Opens a `Get` stream for `target`.
    ///
    /// # Errors
    /// The controller is unreachable (`Unavailable`), or refused the stream.
    pub async fn get(&self, target: &Target) -> Result<tonic::Streaming<Update>, tonic::Status> {
        const METHOD: &str = "Get";
        self.opened(METHOD);
        let mut client =
            DestinationClient::with_origin(self.stream_channel(METHOD).await?, self.origin.clone());
        match client.get(self.lookup(target)).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(self.ended(METHOD, status)),
        }
    }

    /// Opens a `GetProfile` stream for `target`.
    ///
    /// # Errors
    /// As [`Destination::get`].
    pub async fn get_profile(
        &self,
        target: &Target,
    ) -> Result<tonic::Streaming<DestinationProfile>, tonic::Status> {
        const METHOD: &str = "GetProfile";
        self.opened(METHOD);
        let mut client =
            DestinationClient::with_origin(self.stream_channel(METHOD).await?, self.origin.clone());
        match client.get_profile(self.lookup(target)).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(self.ended(METHOD, status)),
        }
    }

    fn lookup(&self, target: &Target) -> GetDestination {
        GetDestination {
            scheme: "k8s".to_owned(),
            path: target.authority().to_string(),
            context_token: self.options.context.clone(),
        }
    }

    fn opened(&self, method: &'static str) {
        self.metrics
            .destination
            .requests
            .get_or_create(&MethodLabels { method })
            .inc();
    }

    /// Counts a stream that ended with `status`; returns it.
    pub(super) fn ended(&self, method: &'static str, status: tonic::Status) -> tonic::Status {
        self.metrics.destination.ended(method, status.code());
        status
    }

    async fn stream_channel(&self, method: &'static str) -> Result<Channel, tonic::Status> {
        self.channel()
            .await
            .map_err(|e| self.ended(method, tonic::Status::unavailable(e)))
    }

    /// The controller connection: the open one, else a new one.
    async fn channel(&self) -> Result<Channel, String> {
        let mut slot = self.channel.lock().await;
        if let Some(channel) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(channel.clone());
        }
        match self.dial().await {
            Ok(channel) => {
                *slot = Some(channel.clone());
                self.reached.send_if_modified(|reached| {
                    let first = reached.is_err();
                    *reached = Ok(());
                    first
                });
                tracing::info!(addr = %self.options.addr, identity = ?self.options.name.as_ref().map(IdentityName::as_str), "destination controller connected");
                Ok(channel)
            }
            Err(e) => {
                self.reached.send_if_modified(|reached| match reached {
                    Err(last) => {
                        *last = e.clone();
                        true
                    }
                    Ok(()) => false,
                });
                Err(e)
            }
        }
    }

    async fn dial(&self) -> Result<Channel, String> {
        let failed = |e: String| format!("destination controller {}: {e}", self.options.addr);
        let addrs: Vec<SocketAddr> = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::lookup_host(self.options.addr.as_str()),
        )
        .await
        .map_err(|_| failed("name lookup timed out".to_owned()))?
        .map_err(|e| failed(format!("name lookup: {e}")))?
        .collect();
        let tls = self.tls.borrow().clone();
        let mut last = failed("the name has no addresses".to_owned());
        for addr in addrs {
            let address = match &self.options.name {
                Some(name) => Address::meshed(addr, name.clone()),
                None => Address::plain(addr),
            };
            let io =
                match connect::dial(&address, &tls, SessionProtocol::Http2, self.connect_timeout)
                    .await
                {
                    Ok(io) => io,
                    Err(e) => {
                        last = failed(e.to_string());
                        continue;
                    }
                };
            let (channel, conn) = Channel::handshake(TokioIo::new(io))
                .await
                .map_err(|e| failed(format!("HTTP/2: {}", super::chain(&e))))?;
            let addr_text = self.options.addr.clone();
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::warn!(addr = %addr_text, error = %super::chain(&e), "destination controller connection ended");
                }
            });
            return Ok(channel);
        }
        Err(last)
    }

    /// The delay before retry `attempt` (0-based), jittered.
    pub fn backoff(&self, attempt: u32) -> Duration {
        // xorshift: the jitter only has to decorrelate streams that failed together.
        let mut x = self.jitter.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.jitter.store(x, Ordering::Relaxed);
        retry_delay(attempt, x)
    }
}

/// 100 ms doubling per attempt up to 60 s, spread by ±10 % from `random`.
fn retry_delay(attempt: u32, random: u64) -> Duration {
    let base = Duration::from_millis(100)
        .saturating_mul(1u32 << attempt.min(10))
        .min(Duration::from_secs(60));
    let spread = (random % 2001) as f64 / 10_000.0 - 0.1;
    base.mul_f64(1.0 + spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_100ms_to_a_minute_with_jitter() {
        let ms = |attempt, random| retry_delay(attempt, random).as_millis();
        assert_eq!(ms(0, 1000), 100, "no spread in the middle");
        assert_eq!(ms(0, 0), 90);
        assert_eq!(ms(0, 2000), 110);
        assert_eq!(ms(3, 1000), 800);
        assert_eq!(ms(30, 1000), 60_000, "capped");
        assert!((54_000..=66_000).contains(&ms(30, 12_345)));
    }
}
