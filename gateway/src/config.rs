//! The `Config` tree, every key declared once in [`keys!`] below: its YAML name, type, default,
//! doc, the Linkerd variables it honours (besides its own `MESHGATE_<KEY>`), its `run` flag and
//! the check its value must pass. The loader (defaults ← YAML file ← environment ← flags), the
//! validation, `run --check`, the clap flags and `docs/configuration.md` all read that table.
//!
//! Layering is clap + serde alone (no figment): clap takes every flag as text and the table
//! parses it, so a bad flag is reported with the file's and the environment's problems, all at
//! once, with exit 64, naming the key as the user wrote it (`--endpoint`, `MESHGATE_LOG`,
//! `config.yaml: listen`) and the form it expects.

mod load;
mod validate;
mod value;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use value::Value;

use crate::access_log::{Sink, UriDetail};
use crate::limit::Rule;
use crate::target::DEFAULT_SUFFIX;
use crate::upstream::failover::Fallback;
use crate::upstream::split::Weighted;
use crate::upstream::{Address, Preference};

/// The largest `max_header_list_size` accepted (1 MiB).
pub const MAX_HEADER_LIST_SIZE_LIMIT: usize = 1024 * 1024;

/// Exit status for a bad configuration (`EX_USAGE`, as Linkerd uses).
pub const EXIT_BAD_CONFIG: i32 = 64;

/// `--config`: the YAML file (not a key of the file itself).
pub const ENV_CONFIG: &str = "MESHGATE_CONFIG";

/// Where environment variables come from; tests pass a `HashMap`, the binary the process env.
pub trait EnvSource {
    /// The value of `name`, if set and valid UTF-8.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvSource for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// One key of the table.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    /// The YAML name (also the field's).
    pub name: &'static str,
    /// The doc comment, one entry per line.
    pub doc: &'static [&'static str],
    /// The form a value is written in.
    pub form: &'static str,
    /// The `LINKERD2_PROXY_*` variables honoured too (after `MESHGATE_<KEY>`).
    pub linkerd: &'static [&'static str],
    /// The `run` flag (`--<flag>`), if it has one.
    pub flag: Option<&'static str>,
    /// Whether the flag may repeat (values accumulate).
    pub repeatable: bool,
    /// The value must not be printed (`run --check`, the startup log).
    pub elided: bool,
}

impl Key {
    /// The doc comment as one line.
    pub fn doc(&self) -> String {
        self.doc
            .iter()
            .map(|line| line.trim())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The first sentence of the doc (flag help).
    pub fn summary(&self) -> String {
        let doc = self.doc();
        match doc.find(". ") {
            Some(end) => doc[..=end].to_owned(),
            None => doc,
        }
    }

    /// The environment variables that set it, first set wins: `MESHGATE_<KEY>`, then Linkerd's.
    pub fn env(&self) -> Vec<String> {
        std::iter::once(env_name(self.name))
            .chain(self.linkerd.iter().map(|v| (*v).to_owned()))
            .collect()
    }
}

/// The key named `name`.
pub fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// The `MESHGATE_*` variable of `name` (for manifests that set it).
pub fn env_name(name: &str) -> String {
    format!("MESHGATE_{}", name.to_ascii_uppercase())
}

macro_rules! first {
    () => {
        None
    };
    ($flag:literal) => {
        Some($flag)
    };
}

macro_rules! present {
    () => {
        false
    };
    ($($t:tt)+) => {
        true
    };
}

/// Declares every key once; generates `Config`, its `Default`, [`KEYS`] and the per-key
/// parse, check and print dispatch.
macro_rules! keys {
    ($(
        $(#[doc = $doc:literal])+
        $name:ident: $ty:ty = $default:expr
            $(, linkerd [$($alias:literal),* $(,)?])?
            $(, flag $flag:literal)?
            $(, check $check:path)?
            $(, elided $elided:ident)?;
    )*) => {
        /// The whole configuration of `meshgate run`. Every field is a YAML key of the same name;
        /// see [`KEYS`] for its environment variables and flag.
        #[derive(Clone, Debug, PartialEq)]
        pub struct Config {
            $( $(#[doc = $doc])+ pub $name: $ty, )*
        }

        impl Default for Config {
            fn default() -> Self {
                Self { $( $name: $default, )* }
            }
        }

        /// Every key, in the order documented.
        pub const KEYS: &[Key] = &[$(
            Key {
                name: stringify!($name),
                doc: &[$($doc),+],
                form: <$ty as Value>::FORM,
                linkerd: &[$($($alias),*)?],
                flag: first!($($flag)?),
                repeatable: <$ty as Value>::REPEATABLE,
                elided: present!($($elided)?),
            },
        )*];

        impl Config {
            /// Sets `key` from `raw`; `Err` with the reason when it does not parse. `false` when
            /// the key is unknown.
            fn set(&mut self, key: &str, raw: load::Raw) -> Option<Result<(), String>> {
                match key {
                    $( stringify!($name) => Some(raw.parse::<$ty>().map(|v| self.$name = v)), )*
                    _ => None,
                }
            }

            /// The value of `key` as YAML.
            pub fn yaml_of(&self, key: &str) -> serde_norway::Value {
                match key {
                    $( stringify!($name) => self.$name.to_yaml(), )*
                    _ => serde_norway::Value::Null,
                }
            }

            /// The per-key checks (ranges, non-zero durations), naming the key.
            fn check_keys(&self, problems: &mut Vec<String>) {
                $($(
                    if let Err(e) = $check(&self.$name) {
                        problems.push(format!("{} {e}", stringify!($name)));
                    }
                )?)*
            }
        }
    };
}

keys! {
    /// Data listener (mTLS from remote proxies).
    listen: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 4143)),
        linkerd ["LINKERD2_PROXY_INBOUND_LISTEN_ADDR"], flag "listen";
    /// Admin listener (`/ready`, `/live`, `/metrics`).
    admin_listen: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 4191)),
        linkerd ["LINKERD2_PROXY_ADMIN_LISTEN_ADDR"], flag "admin-listen";
    /// The gateway's certificate chain (leaf first), PEM.
    cert: Option<PathBuf> = None, flag "cert";
    /// The gateway's private key, PEM (PKCS#8, SEC1 or PKCS#1).
    key: Option<PathBuf> = None, flag "key";
    /// The trust-anchor bundle, PEM, one or more roots.
    trust_anchors: Option<PathBuf> = None, flag "trust-anchors";
    /// The trust-anchor bundle as PEM text (`LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS`).
    trust_anchors_pem: Option<String> = None,
        linkerd ["LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS"], elided yes;
    /// A directory holding `tls.crt`, `tls.key` and `ca.crt` (a mounted `kubernetes.io/tls` secret).
    identity_dir: Option<PathBuf> = None, flag "identity-dir";
    /// The gateway's identity; when set, the certificate must name it
    /// (`LINKERD2_PROXY_IDENTITY_LOCAL_NAME`).
    identity_name: Option<String> = None,
        linkerd ["LINKERD2_PROXY_IDENTITY_LOCAL_NAME"], check validate::identity_name;
    /// How often the credential files are checked for changes.
    credentials_poll_interval: Duration = Duration::from_secs(2), check validate::positive;
    /// Linkerd's identity service (`host:port`); when set, credentials come from `Certify`
    /// instead of files.
    identity_svc_addr: Option<String> = None,
        linkerd ["LINKERD2_PROXY_IDENTITY_SVC_ADDR"], flag "identity-svc-addr";
    /// The identity service's TLS identity.
    identity_svc_name: String =
        "linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local".to_owned(),
        linkerd ["LINKERD2_PROXY_IDENTITY_SVC_NAME"];
    /// The service-account token sent to the identity service.
    identity_token_file: PathBuf = PathBuf::from("/var/run/secrets/tokens/linkerd-identity-token"),
        linkerd ["LINKERD2_PROXY_IDENTITY_TOKEN_FILE"];
    /// Where Linkerd's proxy-identity helper left `key.p8` (used for the CSR when present).
    identity_key_dir: Option<PathBuf> = None, linkerd ["LINKERD2_PROXY_IDENTITY_DIR"];
    /// Earliest certificate refresh (and the retry delay after an error).
    identity_min_refresh: Duration = Duration::from_secs(10),
        linkerd ["LINKERD2_PROXY_IDENTITY_MIN_REFRESH"], check validate::positive;
    /// Latest certificate refresh.
    identity_max_refresh: Duration = Duration::from_secs(24 * 3600),
        linkerd ["LINKERD2_PROXY_IDENTITY_MAX_REFRESH"];
    /// The authorization policy file (YAML); watched for changes.
    policy: Option<PathBuf> = None, flag "policy";
    /// DNS suffixes targets must end with; `.` allows every name.
    gateway_suffixes: Vec<String> = vec![DEFAULT_SUFFIX.to_owned()],
        linkerd ["LINKERD2_PROXY_INBOUND_GATEWAY_SUFFIXES"], flag "gateway-suffixes";
    /// Static endpoints: `name:port` → endpoints (`IP:PORT`, or a meshed pod with its identity,
    /// protocol hint and inbound port). Overrides DNS for those targets.
    endpoints: BTreeMap<String, Vec<Address>> = BTreeMap::new(), flag "endpoint";
    /// Deadline for the TLS handshake (and, for header sessions, the transport header).
    detect_timeout: Duration = Duration::from_secs(10),
        linkerd ["LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT"], check validate::positive;
    /// Shortest time a DNS answer is kept (and how long a failed lookup is remembered).
    dns_min_ttl: Duration = Duration::from_secs(5), flag "dns-min-ttl", check validate::positive;
    /// Longest time a DNS answer is kept.
    dns_max_ttl: Duration = Duration::from_secs(300), flag "dns-max-ttl";
    /// DNS servers (`ip:port`); empty means `/etc/resolv.conf`.
    dns_servers: Vec<SocketAddr> = Vec::new();
    /// Linkerd's Destination service (`host:port`, e.g.
    /// `linkerd-dst-headless.linkerd.svc.cluster.local.:8086`); when set, names under
    /// `destination_profile_suffixes` are discovered there instead of DNS.
    destination_svc_addr: Option<String> = None,
        linkerd ["LINKERD2_PROXY_DESTINATION_SVC_ADDR"], flag "destination-svc-addr";
    /// The Destination service's identity: it is reached over mTLS as the gateway's identity and
    /// must prove this name. Without it only a loopback address is allowed (plaintext).
    destination_svc_name: Option<String> = None,
        linkerd ["LINKERD2_PROXY_DESTINATION_SVC_NAME"], check validate::identity_name;
    /// The context token sent with every lookup, unchanged (the injector's JSON).
    destination_context: String = String::new(),
        linkerd ["LINKERD2_PROXY_DESTINATION_CONTEXT"];
    /// Names looked up with the Destination service (the rest use static endpoints or DNS).
    destination_profile_suffixes: Vec<String> = vec!["svc.cluster.local.".to_owned()],
        linkerd ["LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES"];
    /// How long a Destination stream may go unused before it is closed (reopened on the next
    /// request; its last answer keeps serving).
    discovery_idle_timeout: Duration = Duration::from_secs(5),
        linkerd ["LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT"], check validate::positive;
    /// How long a request waits for a target's first answer from the Destination service
    /// before it fails with 503.
    discovery_timeout: Duration = Duration::from_secs(3),
        linkerd ["LINKERD2_PROXY_OUTBOUND_HTTP_FAILFAST_TIMEOUT"], check validate::positive;
    /// Deadline for one upstream TCP connect.
    connect_timeout: Duration = Duration::from_secs(1),
        linkerd ["LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT"], check validate::positive;
    /// How long an idle pooled upstream connection is kept.
    pool_idle_timeout: Duration = Duration::from_secs(10), check validate::positive;
    /// Most downstream connections open at once; more are refused and counted.
    max_connections: usize = 100_000, check validate::at_least_one;
    /// Most requests in flight at once (until their response body ends); more get 503 `load shed`.
    max_in_flight_requests: usize = 100_000,
        linkerd ["LINKERD2_PROXY_INBOUND_MAX_IN_FLIGHT"], check validate::at_least_one;
    /// Largest header section accepted, in bytes (names + values + 32 per field); more gets 431.
    max_header_list_size: usize = 64 * 1024, check validate::header_list_size;
    /// Most concurrent HTTP/2 streams per downstream connection.
    max_concurrent_streams: u32 = 1000, check validate::at_least_one_u32;
    /// Deadline for an HTTP/1 request's headers (also how long an idle keep-alive connection
    /// may wait for its next request).
    header_read_timeout: Duration = Duration::from_secs(10), check validate::positive;
    /// Deadline for the upstream's response headers, for every target; none when unset.
    response_timeout: Option<Duration> = None, check validate::positive_if_set;
    /// Per-target response deadlines (`name:port` → duration), overriding `response_timeout`.
    response_timeouts: BTreeMap<String, Duration> = BTreeMap::new();
    /// Per-target HTTP version upstream (`name:port` → `auto`, `http1` or `http2`): `auto` takes
    /// the endpoint's hint, else what it was learned to speak, else the request's own version.
    upstream_protocol: BTreeMap<String, Preference> = BTreeMap::new();
    /// Traffic splits (`name:port` → weighted backend targets): the target's requests and
    /// opaque sessions are divided by weight over the backends, each with its own endpoints.
    /// Wins over a Destination profile's `dst_overrides` for the same target.
    splits: BTreeMap<String, Vec<Weighted>> = BTreeMap::new(), flag "split";
    /// Ordered fallbacks per target (`name:port` → other targets, or other clusters' gateways
    /// by address and identity): while the target has no endpoint in service, its requests and
    /// new opaque sessions go to the first fallback that has one.
    failover: BTreeMap<String, Vec<Fallback>> = BTreeMap::new();
    /// How long a failed-over target must serve again before its traffic goes back to it.
    failover_hold_down: Duration = Duration::from_secs(30), check validate::positive;
    /// Per-caller rate limits: token buckets by caller identity (`*`: each caller its own), and
    /// optionally one target; a request over a limit gets 429 with `Retry-After`.
    rate_limits: Vec<Rule> = Vec::new(), flag "rate-limit";
    /// Whether callers get TLS 1.3 session tickets (one per handshake): a returning caller then
    /// resumes without the certificate exchange and signatures, which is most of a handshake's
    /// CPU on both sides. On by default: Linkerd's proxies and most clients resume, and the
    /// tickets are sealed with keys that rotate and die with a credential reload. Off makes every
    /// connection a full handshake (to compare with peers that do not resume, or by policy).
    tls_session_tickets: bool = true;
    /// Keep HTTP/1 header-name case end to end, for legacy peers that depend on it. Off by
    /// default, as in HAProxy and Envoy: names are case-insensitive (RFC 9110), Linkerd's
    /// proxies carry HTTP/1 between clusters as HTTP/2, which lowercases them anyway, and keeping
    /// the case costs two extra header maps per request (about 3 µs, benches/PROFILE.md).
    preserve_header_case: bool = false;
    /// Whether HTTP/1.1 `CONNECT` is tunnelled to the target (else 405).
    http_connect: bool = false;
    /// How long a drain may take before the process exits anyway.
    shutdown_grace_period: Duration = Duration::from_secs(120),
        linkerd ["LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD"];
    /// How long the listener keeps accepting after a drain starts (`/ready` is already 503), so
    /// load balancers and the remote probe see the gateway go away before connections are refused.
    /// Capped at `shutdown_grace_period`.
    drain_delay: Duration = Duration::from_secs(5);
    /// Whether `POST /shutdown` (loopback only) may start a drain.
    shutdown_endpoint_enabled: bool = false,
        linkerd ["LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED"];
    /// How long a metric label set may go unused before it is dropped.
    metrics_retain_idle: Duration = Duration::from_secs(600),
        linkerd ["LINKERD2_PROXY_METRICS_RETAIN_IDLE"], check validate::positive;
    /// Data-plane worker threads (default: the number of cores).
    workers: Option<usize> = None, check validate::workers;
    /// Log filter, e.g. `info` or `meshgate=debug,info`.
    log: String = "info".to_owned(), linkerd ["LINKERD2_PROXY_LOG"], flag "log",
        check validate::log_filter;
    /// Log format: `text` or `json`.
    log_format: LogFormat = LogFormat::Text, linkerd ["LINKERD2_PROXY_LOG_FORMAT"],
        flag "log-format";
    /// The access log: `stderr` or a file (appended to); one JSON line per HTTP request. Off
    /// when unset.
    access_log: Option<Sink> = None, flag "access-log";
    /// How much of the request URI access-log lines keep: `off`, `path` (no query) or `full`.
    access_log_uri: UriDetail = UriDetail::Path;
    /// Access-log lines queued for the writer; past it lines are dropped and counted.
    access_log_buffer: usize = 10_000, check validate::at_least_one;
    /// An OpenTelemetry collector (`host:port`, OTLP/gRPC, plaintext): a server span per sampled
    /// request is exported there. Tracing is off when unset (trace headers still pass through).
    trace_collector_addr: Option<String> = None,
        linkerd ["LINKERD2_PROXY_TRACE_COLLECTOR_SVC_ADDR"], check validate::host_port_if_set;
    /// Share of requests without a sampled parent context that start a trace (a parent's
    /// sampled flag is always followed): `0.01` or `1%`.
    trace_sampling: f64 = 0.01;
    /// The `service.name` of exported spans.
    trace_service_name: String = "meshgate".to_owned(),
        linkerd ["LINKERD2_PROXY_TRACE_SERVICE_NAME"];
    /// Spans queued for export; past it spans are dropped (and counted), never traffic slowed.
    trace_buffer: usize = 2048, check validate::at_least_one;
}

/// Values given on the command line, as `(key, text)` pairs in flag order; they win over all else.
pub type Overrides = Vec<(&'static str, String)>;

/// Every problem found while loading or validating; printed one per line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<String>);

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for problem in &self.0 {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Parses one target's split as the policy file gives it (the config's YAML forms).
///
/// # Errors
/// What is wrong with it.
pub fn split_from_yaml(value: serde_norway::Value) -> Result<Vec<Weighted>, String> {
    <Vec<Weighted> as value::Value>::from_yaml(value)
}

/// Parses one target's fallbacks as the policy file gives them (the config's YAML forms).
///
/// # Errors
/// What is wrong with them.
pub fn fallbacks_from_yaml(value: serde_norway::Value) -> Result<Vec<Fallback>, String> {
    <Vec<Fallback> as value::Value>::from_yaml(value)
}

#[cfg(test)]
mod tests;
