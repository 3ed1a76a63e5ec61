//! Name → endpoints: the static `endpoints` map first, else DNS. Only names that passed the
//! allowlist get here.
//!
//! DNS goes through hickory's async resolver (servers from `/etc/resolv.conf`, or `dns_servers`),
//! always as an FQDN with a trailing dot so `ndots`/search never applies; every A and AAAA record
//! is an endpoint (a headless service gives its pods, a ClusterIP service one address). Answers
//! are cached per name for their TTL clamped to `[dns_min_ttl, dns_max_ttl]`; a name in use whose
//! answer expired is served from the stale answer while one background query refreshes it, so
//! traffic never waits on a refresh; names unused for `dns_idle_timeout` are dropped. NXDOMAIN and
//! empty answers fail at once (503) and are cached for `dns_min_ttl`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio::time::Instant;

use super::Address;
use crate::target::Target;

/// Why a target has no endpoints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The name resolved to nothing.
    #[error("no endpoints for {0}")]
    NoEndpoints(String),
    /// The name does not exist (NXDOMAIN).
    #[error("{0} does not exist (NXDOMAIN)")]
    NxDomain(String),
    /// Discovery says the service does not exist (Destination `NoEndpoints{exists: false}`).
    #[error("{0} is not a known service")]
    NotFound(String),
    /// The Destination API refuses the name (`InvalidArgument`, `FailedPrecondition`), or its
    /// profile has neither a service name nor an endpoint: 404 `bad gateway domain`.
    #[error("{name}: the destination controller refuses it: {reason}")]
    Rejected {
        /// The target.
        name: String,
        /// The controller's message.
        reason: String,
    },
    /// No answer from the Destination API in time.
    #[error("discover {name}: {reason}")]
    Unavailable {
        /// The target.
        name: String,
        /// The last failure.
        reason: String,
    },
    /// The resolver failed (no server answered, …).
    #[error("resolve {name}: {reason}")]
    Dns {
        /// The target.
        name: String,
        /// The resolver's message.
        reason: String,
    },
}

/// The endpoints of one target, shared by every caller.
pub type Endpoints = Arc<[Address]>;

/// A target's endpoints and until when they hold.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The addresses.
    pub endpoints: Endpoints,
    /// When to ask again: the DNS answer's expiry; `None` for static endpoints (never).
    pub valid_until: Option<Instant>,
}

/// Static endpoints of one name, per port.
type PortMap = Vec<(u16, Endpoints)>;

/// How DNS answers are used.
#[derive(Clone, Debug)]
pub struct DnsOptions {
    /// Shortest time an answer is kept (also how long a failure is remembered).
    pub min_ttl: Duration,
    /// Longest time an answer is kept.
    pub max_ttl: Duration,
    /// Names unused this long are dropped from the cache.
    pub idle_timeout: Duration,
    /// Name servers (`ip:port`); empty means `/etc/resolv.conf`.
    pub servers: Vec<SocketAddr>,
}

impl Default for DnsOptions {
    fn default() -> Self {
        Self {
            min_ttl: Duration::from_secs(5),
            max_ttl: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(600),
            servers: Vec::new(),
        }
    }
}

/// Resolves targets to socket addresses.
pub struct Resolver {
    statics: HashMap<String, PortMap>,
    dns: Option<Arc<Dns>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("statics", &self.statics)
            .field("dns", &self.dns.is_some())
            .finish()
    }
}

struct Dns {
    resolver: TokioResolver,
    options: DnsOptions,
    cache: Mutex<HashMap<Arc<str>, Entry>>,
}

struct Entry {
    answer: Result<Arc<[IpAddr]>, Error>,
    valid_until: Instant,
    last_used: Instant,
    refreshing: bool,
}

impl Resolver {
    /// A resolver with static endpoints for some targets; the rest go to DNS.
    pub fn new(
        statics: impl IntoIterator<Item = (Target, Vec<Address>)>,
        options: DnsOptions,
    ) -> Self {
        let map = Self::static_map(statics);
        let dns = match build_resolver(&options) {
            Ok(resolver) => Some(Arc::new(Dns {
                resolver,
                options,
                cache: Mutex::new(HashMap::new()),
            })),
            Err(e) => {
                tracing::warn!(error = %e, "no DNS resolver: only static endpoints will resolve");
                None
            }
        };
        Self { statics: map, dns }
    }

    /// A resolver that knows only `statics` and never queries DNS (everything else fails with
    /// "no DNS resolver configured"): for fuzzing and for sealed test setups.
    pub fn statics_only(statics: impl IntoIterator<Item = (Target, Vec<Address>)>) -> Self {
        Self {
            statics: Self::static_map(statics),
            dns: None,
        }
    }

    fn static_map(
        statics: impl IntoIterator<Item = (Target, Vec<Address>)>,
    ) -> HashMap<String, PortMap> {
        let mut map: HashMap<String, PortMap> = HashMap::new();
        for (target, addrs) in statics {
            map.entry(target.name().to_owned())
                .or_default()
                .push((target.port(), addrs.into()));
        }
        map
    }

    /// Whether `target` has static endpoints.
    pub fn has_static(&self, target: &Target) -> bool {
        self.statics
            .get(target.name())
            .is_some_and(|ports| ports.iter().any(|(p, _)| *p == target.port()))
    }

    /// The endpoints of `name:port`.
    ///
    /// # Errors
    /// `NoEndpoints`, `NxDomain` or `Dns`. Cancel-safe.
    pub async fn resolve(&self, name: &str, port: u16) -> Result<Resolved, Error> {
        if let Some(ports) = self.statics.get(name)
            && let Some((_, addrs)) = ports.iter().find(|(p, _)| *p == port)
        {
            return Ok(Resolved {
                endpoints: addrs.clone(),
                valid_until: None,
            });
        }
        let Some(dns) = &self.dns else {
            return Err(Error::Dns {
                name: name.to_owned(),
                reason: "no DNS resolver configured".to_owned(),
            });
        };
        let (ips, valid_until) = dns.clone().ips(name).await?;
        Ok(Resolved {
            endpoints: ips
                .iter()
                .map(|ip| Address::plain(SocketAddr::new(*ip, port)))
                .collect(),
            valid_until: Some(valid_until),
        })
    }
}

fn build_resolver(options: &DnsOptions) -> Result<TokioResolver, String> {
    let mut builder = if options.servers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| format!("read /etc/resolv.conf: {e}"))?
    } else {
        let servers = options
            .servers
            .iter()
            .map(|addr| {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, Vec::new(), servers),
            TokioRuntimeProvider::default(),
        )
    };
    let opts = builder.options_mut();
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    // A cluster DNS answers in milliseconds; when it is down, callers get a 503 within seconds
    // rather than after hickory's default 5 s × 2 attempts per server and protocol.
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 2;
    opts.positive_min_ttl = Some(options.min_ttl);
    opts.positive_max_ttl = Some(options.max_ttl);
    opts.negative_min_ttl = Some(options.min_ttl);
    opts.negative_max_ttl = Some(options.min_ttl);
    builder.build().map_err(|e| e.to_string())
}

impl Dns {
    /// The addresses of `name` and until when they hold: cached, stale while a refresh runs
    /// (already expired, so the caller asks again soon), or queried now.
    async fn ips(self: Arc<Self>, name: &str) -> Result<(Arc<[IpAddr]>, Instant), Error> {
        let now = Instant::now();
        {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = cache.get_mut(name) {
                entry.last_used = now;
                if now < entry.valid_until {
                    return entry.answer.clone().map(|ips| (ips, entry.valid_until));
                }
                if let Ok(stale) = &entry.answer {
                    // Serve the stale answer; one background query refreshes it.
                    if !entry.refreshing {
                        entry.refreshing = true;
                        let (dns, name) = (self.clone(), Arc::<str>::from(name));
                        tokio::spawn(async move {
                            let (answer, valid_until) = dns.query(&name).await;
                            dns.store(name, answer, valid_until);
                        });
                    }
                    return Ok((stale.clone(), now));
                }
            }
        }
        let (answer, valid_until) = self.query(name).await;
        self.store(Arc::from(name), answer.clone(), valid_until);
        answer.map(|ips| (ips, valid_until))
    }

    async fn query(&self, name: &str) -> (Result<Arc<[IpAddr]>, Error>, Instant) {
        let fqdn = format!("{name}.");
        let now = Instant::now();
        let failed_until = now + self.options.min_ttl;
        match self.resolver.lookup_ip(fqdn.as_str()).await {
            Ok(lookup) => {
                let ips: Arc<[IpAddr]> = lookup.iter().collect();
                if ips.is_empty() {
                    return (Err(Error::NoEndpoints(name.to_owned())), failed_until);
                }
                let ttl = Instant::from_std(lookup.valid_until())
                    .saturating_duration_since(now)
                    .clamp(self.options.min_ttl, self.options.max_ttl);
                tracing::debug!(name, endpoints = ips.len(), ?ttl, "resolved");
                (Ok(ips), now + ttl)
            }
            Err(e) if e.is_nx_domain() => (Err(Error::NxDomain(name.to_owned())), failed_until),
            Err(e) if e.is_no_records_found() => {
                (Err(Error::NoEndpoints(name.to_owned())), failed_until)
            }
            Err(e) => (
                Err(Error::Dns {
                    name: name.to_owned(),
                    reason: e.to_string(),
                }),
                failed_until,
            ),
        }
    }

    fn store(&self, name: Arc<str>, answer: Result<Arc<[IpAddr]>, Error>, valid_until: Instant) {
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        // A failed refresh keeps the last good answer until the next attempt.
        let answer = match (answer, cache.get(&name)) {
            (
                Err(e),
                Some(Entry {
                    answer: Ok(old), ..
                }),
            ) => {
                tracing::warn!(name = &*name, error = %e, "DNS refresh failed; keeping the last answer");
                Ok(old.clone())
            }
            (answer, _) => answer,
        };
        let idle = self.options.idle_timeout;
        cache.retain(|_, e| now.saturating_duration_since(e.last_used) < idle);
        let last_used = cache.get(&name).map_or(now, |e| e.last_used);
        cache.insert(
            name,
            Entry {
                answer,
                valid_until,
                last_used,
                refreshing: false,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Suffixes;

    #[tokio::test]
    async fn static_endpoints_override_dns() {
        let target = Target::parse("web.ns.svc.cluster.local:80", &Suffixes::default()).unwrap();
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let resolver = Resolver::new(
            [(target, vec![Address::plain(addr)])],
            DnsOptions::default(),
        );
        let resolved = resolver
            .resolve("web.ns.svc.cluster.local", 80)
            .await
            .unwrap();
        assert_eq!(&*resolved.endpoints, &[Address::plain(addr)]);
        assert_eq!(resolved.valid_until, None, "static endpoints never expire");
    }
}
