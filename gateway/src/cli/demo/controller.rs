//! A stand-in for Linkerd's Destination controller (the demo's traffic split, the tests'
//! discovery): the `linkerd2-proxy-api` server trait over HTTP/2, plaintext or mTLS as the
//! controller's identity, answering `Get` and `GetProfile` from what its owner sets.
//!
//! - `Get`: the first message is the whole set (`Add`, or `NoEndpoints{exists: true}` when
//!   empty); later changes go as `Remove` and `Add` of the difference. An unknown authority gets
//!   `NoEndpoints{exists: false}`.
//! - `GetProfile`: the profile set for the authority, else `{fully_qualified_name: <name>}`
//!   (what the controller says of a plain service); changes are sent as they are made.
//! - Either can be told to refuse an authority with a gRPC code.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use hyper_util::rt::{TokioExecutor, TokioIo};
use identity::{Credentials, TrustAnchors, identity_of_cert, tls_config};
use linkerd2_proxy_api::destination::destination_server::{Destination, DestinationServer};
use linkerd2_proxy_api::destination::{
    AddrSet, DestinationProfile, GetDestination, NoEndpoints, ProtocolHint, TlsIdentity, Update,
    WeightedAddr, WeightedAddrSet, WeightedDst, protocol_hint, tls_identity, update,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tonic::codegen::tokio_stream::Stream;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;

/// What `Get` answers for one authority.
#[derive(Clone, Debug, PartialEq)]
pub enum Endpoints {
    /// These endpoints (an empty set is `NoEndpoints{exists: true}`).
    Set(Vec<WeightedAddr>),
    /// `NoEndpoints{exists: false}`: no such service.
    Unknown,
    /// The stream fails with this code.
    Refuse(tonic::Code),
}

/// What `GetProfile` answers for one authority.
#[derive(Clone, Debug, PartialEq)]
pub enum Profile {
    /// This profile.
    Set(Box<DestinationProfile>),
    /// The stream fails with this code.
    Refuse(tonic::Code),
}

#[derive(Default)]
struct State {
    endpoints: Mutex<HashMap<String, watch::Sender<Endpoints>>>,
    profiles: Mutex<HashMap<String, watch::Sender<Profile>>>,
    gets: AtomicUsize,
    profile_gets: AtomicUsize,
    contexts: Mutex<Vec<String>>,
    labels: Mutex<HashMap<String, HashMap<String, String>>>,
    callers: Mutex<Vec<Option<String>>>,
}

/// A running stand-in controller.
pub struct Controller {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    tls: Option<TlsAcceptor>,
    task: tokio::task::JoinHandle<()>,
}

impl Controller {
    /// Starts a controller on `127.0.0.1:0`: plaintext, or mTLS presenting `tls`'s credentials
    /// and requiring a client certificate from its anchors.
    ///
    /// # Errors
    /// When rustls refuses the credentials or it cannot bind.
    pub async fn start(tls: Option<(&Credentials, &TrustAnchors)>) -> anyhow::Result<Self> {
        let tls = match tls {
            Some((credentials, anchors)) => Some(TlsAcceptor::from(Arc::new(
                tls_config::server_config(credentials, anchors, &[])?,
            ))),
            None => None,
        };
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let task = tokio::spawn(serve(listener, tls.clone(), state.clone()));
        Ok(Self {
            addr,
            state,
            tls,
            task,
        })
    }

    /// Stops answering: the listener closes and every open stream fails (a controller restart
    /// or crash, as the gateway sees it).
    pub fn stop(&self) {
        self.task.abort();
    }

    /// Starts answering again on the same address, with the same state.
    ///
    /// # Errors
    /// When the address cannot be bound again.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let listener = TcpListener::bind(self.addr).await?;
        self.task = tokio::spawn(serve(listener, self.tls.clone(), self.state.clone()));
        Ok(())
    }

    /// Sets what `Get` answers for `authority` (`name:port`), sending the change to open streams.
    pub fn set_endpoints(&self, authority: &str, endpoints: Endpoints) {
        set(&self.state.endpoints, authority, endpoints, || {
            Endpoints::Unknown
        });
    }

    /// Sets the metric labels of `authority`'s endpoint set (sent with every `Add` from now on).
    pub fn set_labels(&self, authority: &str, labels: &[(&str, &str)]) {
        self.state
            .labels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                authority.to_owned(),
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            );
    }

    /// Sets what `GetProfile` answers for `authority`, sending it to open streams.
    pub fn set_profile(&self, authority: &str, profile: Profile) {
        set(&self.state.profiles, authority, profile, || {
            Profile::Set(Box::default())
        });
    }

    /// `Get` streams opened so far.
    pub fn gets(&self) -> usize {
        self.state.gets.load(Ordering::SeqCst)
    }

    /// `GetProfile` streams opened so far.
    pub fn profile_gets(&self) -> usize {
        self.state.profile_gets.load(Ordering::SeqCst)
    }

    /// The context tokens lookups carried, in order.
    pub fn contexts(&self) -> Vec<String> {
        self.state
            .contexts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The client identity of each connection (`None`: plaintext).
    pub fn callers(&self) -> Vec<Option<String>> {
        self.state
            .callers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A `WeightedAddr` of `addr` with `weight` and nothing else (an unmeshed pod).
pub fn weighted(addr: SocketAddr, weight: u32) -> WeightedAddr {
    WeightedAddr {
        addr: Some(addr.into()),
        weight,
        ..WeightedAddr::default()
    }
}

/// A meshed pod's `WeightedAddr`: its proxy's `identity`, an HTTP/2 or opaque hint, and its
/// inbound port for opaque transport.
pub fn meshed(
    addr: SocketAddr,
    identity: &str,
    hint: Option<protocol_hint::Protocol>,
    inbound_port: Option<u16>,
) -> WeightedAddr {
    WeightedAddr {
        tls_identity: Some(TlsIdentity {
            strategy: Some(tls_identity::Strategy::DnsLikeIdentity(
                tls_identity::DnsLikeIdentity {
                    name: identity.to_owned(),
                },
            )),
            server_name: None,
        }),
        protocol_hint: Some(ProtocolHint {
            protocol: hint,
            opaque_transport: inbound_port.map(|port| protocol_hint::OpaqueTransport {
                inbound_port: u32::from(port),
            }),
        }),
        ..weighted(addr, 10_000)
    }
}

/// The profile of service `name` (`fully_qualified_name`) splitting its traffic over `backends`
/// (`dst_overrides`: authority and weight).
pub fn split(name: &str, backends: &[(&str, u32)]) -> DestinationProfile {
    DestinationProfile {
        fully_qualified_name: name.to_owned(),
        dst_overrides: backends
            .iter()
            .map(|(authority, weight)| WeightedDst {
                authority: (*authority).to_owned(),
                weight: *weight,
                backend_ref: None,
            })
            .collect(),
        ..DestinationProfile::default()
    }
}

fn set<T: Clone>(
    map: &Mutex<HashMap<String, watch::Sender<T>>>,
    authority: &str,
    value: T,
    default: impl FnOnce() -> T,
) {
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    map.entry(authority.to_owned())
        .or_insert_with(|| watch::channel(default()).0)
        .send_replace(value);
}

fn watch_of<T: Clone>(
    map: &Mutex<HashMap<String, watch::Sender<T>>>,
    authority: &str,
    default: impl FnOnce() -> T,
) -> watch::Receiver<T> {
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    map.entry(authority.to_owned())
        .or_insert_with(|| watch::channel(default()).0)
        .subscribe()
}

async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, state: Arc<State>) {
    // Connections live in this set: aborting the task (stop) drops them all.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Ok((tcp, _)) = accepted else {
            return;
        };
        let (tls, state) = (tls.clone(), state.clone());
        connections.spawn(async move {
            let service = DestinationServer::from_arc(Arc::new(Answers(state.clone())));
            let service = hyper::service::service_fn(move |req| {
                let mut service = service.clone();
                async move { tonic::codegen::Service::call(&mut service, req).await }
            });
            let http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            let result = match tls {
                None => {
                    record(&state, None);
                    http2.serve_connection(TokioIo::new(tcp), service).await
                }
                Some(acceptor) => {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let caller = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .and_then(|leaf| identity_of_cert(leaf))
                        .map(|name| name.to_string());
                    record(&state, caller);
                    http2.serve_connection(TokioIo::new(tls), service).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller connection ended");
            }
        });
    }
}

fn record(state: &State, caller: Option<String>) {
    state
        .callers
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(caller);
}

struct Answers(Arc<State>);

type Replies<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;

impl Answers {
    fn lookup(&self, request: tonic::Request<GetDestination>) -> String {
        let lookup = request.into_inner();
        self.0
            .contexts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(lookup.context_token);
        lookup.path
    }
}

#[tonic::async_trait]
impl Destination for Answers {
    type GetStream = Replies<Update>;
    type GetProfileStream = Replies<DestinationProfile>;

    async fn get(
        &self,
        request: tonic::Request<GetDestination>,
    ) -> Result<tonic::Response<Self::GetStream>, tonic::Status> {
        self.0.gets.fetch_add(1, Ordering::SeqCst);
        let authority = self.lookup(request);
        let mut watch = watch_of(&self.0.endpoints, &authority, || Endpoints::Unknown);
        let (tx, rx) = mpsc::channel(16);
        let state = self.0.clone();
        tokio::spawn(async move {
            let mut last: HashMap<SocketAddr, WeightedAddr> = HashMap::new();
            let mut first = true;
            loop {
                let current = watch.borrow_and_update().clone();
                let labels = state
                    .labels
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&authority)
                    .cloned()
                    .unwrap_or_default();
                for message in updates(&mut last, current, first, labels) {
                    let end = message.is_err();
                    if tx.send(message).await.is_err() || end {
                        return;
                    }
                }
                first = false;
                tokio::select! {
                    changed = watch.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_profile(
        &self,
        request: tonic::Request<GetDestination>,
    ) -> Result<tonic::Response<Self::GetProfileStream>, tonic::Status> {
        self.0.profile_gets.fetch_add(1, Ordering::SeqCst);
        let authority = self.lookup(request);
        let name = authority
            .rsplit_once(':')
            .map_or(authority.as_str(), |(name, _)| name)
            .to_owned();
        let mut watch = watch_of(&self.0.profiles, &authority, || {
            Profile::Set(Box::new(DestinationProfile {
                fully_qualified_name: name,
                ..DestinationProfile::default()
            }))
        });
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let message = match watch.borrow_and_update().clone() {
                    Profile::Set(profile) => Ok(*profile),
                    Profile::Refuse(code) => Err(tonic::Status::new(code, "told to refuse")),
                };
                let end = message.is_err();
                if tx.send(message).await.is_err() || end {
                    return;
                }
                tokio::select! {
                    changed = watch.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// The messages that take a stream from `last` to `current` (`first`: the stream's opening,
/// which always says something).
fn updates(
    last: &mut HashMap<SocketAddr, WeightedAddr>,
    current: Endpoints,
    first: bool,
    metric_labels: HashMap<String, String>,
) -> Vec<Result<Update, tonic::Status>> {
    let message = |u| Ok(Update { update: Some(u) });
    match current {
        Endpoints::Refuse(code) => vec![Err(tonic::Status::new(code, "told to refuse"))],
        Endpoints::Unknown => {
            last.clear();
            vec![message(update::Update::NoEndpoints(NoEndpoints {
                exists: false,
            }))]
        }
        Endpoints::Set(addrs) => {
            let next: HashMap<SocketAddr, WeightedAddr> = addrs
                .into_iter()
                .filter_map(|w| {
                    let addr = SocketAddr::try_from(w.addr?).ok()?;
                    Some((addr, w))
                })
                .collect();
            if next.is_empty() {
                last.clear();
                return vec![message(update::Update::NoEndpoints(NoEndpoints {
                    exists: true,
                }))];
            }
            let removed: Vec<_> = last
                .keys()
                .filter(|addr| !next.contains_key(addr))
                .map(|addr| (*addr).into())
                .collect();
            let added: Vec<_> = next
                .iter()
                .filter(|(addr, w)| last.get(addr) != Some(w))
                .map(|(_, w)| w.clone())
                .collect();
            *last = next;
            let mut out = Vec::new();
            if !removed.is_empty() {
                out.push(message(update::Update::Remove(AddrSet { addrs: removed })));
            }
            if !added.is_empty() || first {
                out.push(message(update::Update::Add(WeightedAddrSet {
                    addrs: added,
                    metric_labels,
                })));
            }
            out
        }
    }
}
