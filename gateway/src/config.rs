//! The `Config` tree: defaults, a YAML file, `MESHGATE_*` / `LINKERD2_PROXY_*` environment and
//! CLI flags (in rising precedence), and `validate()` that reports every problem at once.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_norway::{Mapping, Value};

use crate::target::{DEFAULT_SUFFIX, Suffixes, Target};

/// The largest `max_header_list_size` accepted (1 MiB).
pub const MAX_HEADER_LIST_SIZE_LIMIT: usize = 1024 * 1024;

/// Exit status for a bad configuration (`EX_USAGE`, as Linkerd uses).
pub const EXIT_BAD_CONFIG: i32 = 64;

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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The whole configuration of `meshgate run`. Every field is a YAML key of the same name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Data listener (mTLS from remote proxies).
    pub listen: SocketAddr,
    /// Admin listener (`/ready`, `/live`, `/metrics`).
    pub admin_listen: SocketAddr,
    /// The gateway's certificate chain (leaf first), PEM.
    pub cert: Option<PathBuf>,
    /// The gateway's private key, PEM (PKCS#8, SEC1 or PKCS#1).
    pub key: Option<PathBuf>,
    /// The trust-anchor bundle, PEM, one or more roots.
    pub trust_anchors: Option<PathBuf>,
    /// The trust-anchor bundle as PEM text (`LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_anchors_pem: Option<String>,
    /// A directory holding `tls.crt`, `tls.key` and `ca.crt` (a mounted `kubernetes.io/tls` secret).
    pub identity_dir: Option<PathBuf>,
    /// The gateway's identity; when set, the certificate must name it
    /// (`LINKERD2_PROXY_IDENTITY_LOCAL_NAME`).
    pub identity_name: Option<String>,
    /// How often the credential files are checked for changes.
    #[serde(with = "humantime_serde")]
    pub credentials_poll_interval: Duration,
    /// Linkerd's identity service (`host:port`); when set, credentials come from `Certify`
    /// instead of files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_svc_addr: Option<String>,
    /// The identity service's TLS identity.
    pub identity_svc_name: String,
    /// The service-account token sent to the identity service.
    pub identity_token_file: PathBuf,
    /// Where Linkerd's proxy-identity helper left `key.p8` (used for the CSR when present).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_key_dir: Option<PathBuf>,
    /// Earliest certificate refresh (and the retry delay after an error).
    #[serde(with = "humantime_serde")]
    pub identity_min_refresh: Duration,
    /// Latest certificate refresh.
    #[serde(with = "humantime_serde")]
    pub identity_max_refresh: Duration,
    /// The authorization policy file (YAML); watched for changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PathBuf>,
    /// DNS suffixes targets must end with; `.` allows every name.
    pub gateway_suffixes: Vec<String>,
    /// Static endpoints: `name:port` → addresses. Overrides DNS for those targets.
    pub endpoints: BTreeMap<String, Vec<SocketAddr>>,
    /// Deadline for the TLS handshake (and, for header sessions, the transport header).
    #[serde(with = "humantime_serde")]
    pub detect_timeout: Duration,
    /// Shortest time a DNS answer is kept (and how long a failed lookup is remembered).
    #[serde(with = "humantime_serde")]
    pub dns_min_ttl: Duration,
    /// Longest time a DNS answer is kept.
    #[serde(with = "humantime_serde")]
    pub dns_max_ttl: Duration,
    /// DNS servers (`ip:port`); empty means `/etc/resolv.conf`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_servers: Vec<SocketAddr>,
    /// Deadline for one upstream TCP connect.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long an idle pooled upstream connection is kept.
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// Most downstream connections open at once; more are refused and counted.
    pub max_connections: usize,
    /// Most requests in flight at once (until their response body ends); more get 503 `load shed`.
    pub max_in_flight_requests: usize,
    /// Largest header section accepted, in bytes (names + values + 32 per field); more gets 431.
    pub max_header_list_size: usize,
    /// Most concurrent HTTP/2 streams per downstream connection.
    pub max_concurrent_streams: u32,
    /// Deadline for an HTTP/1 request's headers (also how long an idle keep-alive connection
    /// may wait for its next request).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Deadline for the upstream's response headers, for every target; none when unset.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub response_timeout: Option<Duration>,
    /// Per-target response deadlines (`name:port` → duration), overriding `response_timeout`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub response_timeouts: BTreeMap<String, humantime_serde::Serde<Duration>>,
    /// Keep HTTP/1 header-name case end to end (legacy peers depend on it).
    pub preserve_header_case: bool,
    /// Whether HTTP/1.1 `CONNECT` is tunnelled to the target (else 405).
    pub http_connect: bool,
    /// How long a drain may take before the process exits anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace_period: Duration,
    /// How long the listener keeps accepting after a drain starts (`/ready` is already 503), so
    /// load balancers and the remote probe see the gateway go away before connections are refused.
    /// Capped at `shutdown_grace_period`.
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
    /// Whether `POST /shutdown` (loopback only) may start a drain.
    pub shutdown_endpoint_enabled: bool,
    /// How long a metric label set may go unused before it is dropped.
    #[serde(with = "humantime_serde")]
    pub metrics_retain_idle: Duration,
    /// Data-plane worker threads (default: the number of cores).
    pub workers: Option<usize>,
    /// Log filter, e.g. `info` or `meshgate=debug,info`.
    pub log: String,
    /// Log format.
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 4143)),
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 4191)),
            cert: None,
            key: None,
            trust_anchors: None,
            trust_anchors_pem: None,
            identity_dir: None,
            identity_name: None,
            credentials_poll_interval: Duration::from_secs(2),
            identity_svc_addr: None,
            identity_svc_name:
                "linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local".to_owned(),
            identity_token_file: PathBuf::from("/var/run/secrets/tokens/linkerd-identity-token"),
            identity_key_dir: None,
            identity_min_refresh: Duration::from_secs(10),
            identity_max_refresh: Duration::from_secs(24 * 3600),
            policy: None,
            gateway_suffixes: vec![DEFAULT_SUFFIX.to_owned()],
            endpoints: BTreeMap::new(),
            detect_timeout: Duration::from_secs(10),
            dns_min_ttl: Duration::from_secs(5),
            dns_max_ttl: Duration::from_secs(300),
            dns_servers: Vec::new(),
            connect_timeout: Duration::from_secs(1),
            pool_idle_timeout: Duration::from_secs(10),
            max_connections: 100_000,
            max_in_flight_requests: 100_000,
            max_header_list_size: 64 * 1024,
            max_concurrent_streams: 1000,
            header_read_timeout: Duration::from_secs(10),
            response_timeout: None,
            response_timeouts: BTreeMap::new(),
            preserve_header_case: true,
            http_connect: false,
            shutdown_grace_period: Duration::from_secs(120),
            drain_delay: Duration::from_secs(5),
            shutdown_endpoint_enabled: false,
            metrics_retain_idle: Duration::from_secs(600),
            workers: None,
            log: "info".to_owned(),
            log_format: LogFormat::Text,
        }
    }
}

/// How a key's value is written in an environment variable or a flag.
#[derive(Clone, Copy)]
enum Shape {
    /// Taken as a string (addresses, paths, durations, PEM text).
    Text,
    /// A non-negative integer.
    Number,
    /// A comma-separated list.
    List,
    /// Comma-separated `name:port=ip:port` pairs; one name may repeat.
    Endpoints,
    /// `true` or `false`.
    Bool,
}

/// Every key: YAML name, shape, environment variables (first set wins).
const KEYS: &[(&str, Shape, &[&str])] = &[
    (
        "listen",
        Shape::Text,
        &[ENV_LISTEN, "LINKERD2_PROXY_INBOUND_LISTEN_ADDR"],
    ),
    (
        "admin_listen",
        Shape::Text,
        &[ENV_ADMIN_LISTEN, "LINKERD2_PROXY_ADMIN_LISTEN_ADDR"],
    ),
    ("cert", Shape::Text, &[ENV_CERT]),
    ("key", Shape::Text, &[ENV_KEY]),
    ("trust_anchors", Shape::Text, &[ENV_TRUST_ANCHORS]),
    (
        "trust_anchors_pem",
        Shape::Text,
        &["LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS"],
    ),
    ("identity_dir", Shape::Text, &[ENV_IDENTITY_DIR]),
    (
        "identity_name",
        Shape::Text,
        &[ENV_IDENTITY_NAME, "LINKERD2_PROXY_IDENTITY_LOCAL_NAME"],
    ),
    (
        "credentials_poll_interval",
        Shape::Text,
        &[ENV_CREDENTIALS_POLL_INTERVAL],
    ),
    (
        "identity_svc_addr",
        Shape::Text,
        &[ENV_IDENTITY_SVC_ADDR, "LINKERD2_PROXY_IDENTITY_SVC_ADDR"],
    ),
    (
        "identity_svc_name",
        Shape::Text,
        &["LINKERD2_PROXY_IDENTITY_SVC_NAME"],
    ),
    (
        "identity_token_file",
        Shape::Text,
        &["LINKERD2_PROXY_IDENTITY_TOKEN_FILE"],
    ),
    (
        "identity_key_dir",
        Shape::Text,
        &["LINKERD2_PROXY_IDENTITY_DIR"],
    ),
    (
        "identity_min_refresh",
        Shape::Text,
        &["LINKERD2_PROXY_IDENTITY_MIN_REFRESH"],
    ),
    (
        "identity_max_refresh",
        Shape::Text,
        &["LINKERD2_PROXY_IDENTITY_MAX_REFRESH"],
    ),
    ("policy", Shape::Text, &[ENV_POLICY]),
    (
        "shutdown_endpoint_enabled",
        Shape::Bool,
        &[
            ENV_SHUTDOWN_ENDPOINT_ENABLED,
            "LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED",
        ],
    ),
    (
        "metrics_retain_idle",
        Shape::Text,
        &[
            ENV_METRICS_RETAIN_IDLE,
            "LINKERD2_PROXY_METRICS_RETAIN_IDLE",
        ],
    ),
    (
        "gateway_suffixes",
        Shape::List,
        &[
            ENV_GATEWAY_SUFFIXES,
            "LINKERD2_PROXY_INBOUND_GATEWAY_SUFFIXES",
        ],
    ),
    ("endpoints", Shape::Endpoints, &[ENV_ENDPOINTS]),
    (
        "detect_timeout",
        Shape::Text,
        &[ENV_DETECT_TIMEOUT, "LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT"],
    ),
    ("dns_min_ttl", Shape::Text, &["MESHGATE_DNS_MIN_TTL"]),
    ("dns_max_ttl", Shape::Text, &["MESHGATE_DNS_MAX_TTL"]),
    ("dns_servers", Shape::List, &["MESHGATE_DNS_SERVERS"]),
    (
        "connect_timeout",
        Shape::Text,
        &[
            ENV_CONNECT_TIMEOUT,
            "LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT",
        ],
    ),
    ("pool_idle_timeout", Shape::Text, &[ENV_POOL_IDLE_TIMEOUT]),
    ("max_connections", Shape::Number, &[ENV_MAX_CONNECTIONS]),
    (
        "max_in_flight_requests",
        Shape::Number,
        &[
            "MESHGATE_MAX_IN_FLIGHT_REQUESTS",
            "LINKERD2_PROXY_INBOUND_MAX_IN_FLIGHT",
        ],
    ),
    (
        "max_header_list_size",
        Shape::Number,
        &["MESHGATE_MAX_HEADER_LIST_SIZE"],
    ),
    (
        "max_concurrent_streams",
        Shape::Number,
        &["MESHGATE_MAX_CONCURRENT_STREAMS"],
    ),
    (
        "header_read_timeout",
        Shape::Text,
        &["MESHGATE_HEADER_READ_TIMEOUT"],
    ),
    (
        "response_timeout",
        Shape::Text,
        &["MESHGATE_RESPONSE_TIMEOUT"],
    ),
    (
        "preserve_header_case",
        Shape::Bool,
        &["MESHGATE_PRESERVE_HEADER_CASE"],
    ),
    ("http_connect", Shape::Bool, &["MESHGATE_HTTP_CONNECT"]),
    (
        "shutdown_grace_period",
        Shape::Text,
        &[
            ENV_SHUTDOWN_GRACE_PERIOD,
            "LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD",
        ],
    ),
    ("drain_delay", Shape::Text, &[ENV_DRAIN_DELAY]),
    ("workers", Shape::Number, &[ENV_WORKERS]),
    ("log", Shape::Text, &[ENV_LOG, "LINKERD2_PROXY_LOG"]),
    (
        "log_format",
        Shape::Text,
        &[ENV_LOG_FORMAT, "LINKERD2_PROXY_LOG_FORMAT"],
    ),
];

/// The environment variables that set `key`, first set wins (empty for YAML-only keys).
pub fn env_vars(key: &str) -> &'static [&'static str] {
    KEYS.iter().find(|k| k.0 == key).map_or(&[], |k| k.2)
}

/// `--listen`.
pub const ENV_LISTEN: &str = "MESHGATE_LISTEN";
/// `--admin-listen`.
pub const ENV_ADMIN_LISTEN: &str = "MESHGATE_ADMIN_LISTEN";
/// `--cert`.
pub const ENV_CERT: &str = "MESHGATE_CERT";
/// `--key`.
pub const ENV_KEY: &str = "MESHGATE_KEY";
/// `--trust-anchors`.
pub const ENV_TRUST_ANCHORS: &str = "MESHGATE_TRUST_ANCHORS";
/// `--identity-dir`.
pub const ENV_IDENTITY_DIR: &str = "MESHGATE_IDENTITY_DIR";
/// The gateway's expected identity.
pub const ENV_IDENTITY_NAME: &str = "MESHGATE_IDENTITY_NAME";
/// Credential file poll interval.
pub const ENV_CREDENTIALS_POLL_INTERVAL: &str = "MESHGATE_CREDENTIALS_POLL_INTERVAL";
/// `--identity-svc-addr`.
pub const ENV_IDENTITY_SVC_ADDR: &str = "MESHGATE_IDENTITY_SVC_ADDR";
/// `--policy`.
pub const ENV_POLICY: &str = "MESHGATE_POLICY";
/// Enables `POST /shutdown`.
pub const ENV_SHUTDOWN_ENDPOINT_ENABLED: &str = "MESHGATE_SHUTDOWN_ENDPOINT_ENABLED";
/// Metric label-set retention.
pub const ENV_METRICS_RETAIN_IDLE: &str = "MESHGATE_METRICS_RETAIN_IDLE";
/// `--gateway-suffixes`.
pub const ENV_GATEWAY_SUFFIXES: &str = "MESHGATE_GATEWAY_SUFFIXES";
/// `--endpoint` (comma-separated).
pub const ENV_ENDPOINTS: &str = "MESHGATE_ENDPOINTS";
/// Handshake + detect deadline.
pub const ENV_DETECT_TIMEOUT: &str = "MESHGATE_DETECT_TIMEOUT";
/// Upstream connect deadline.
pub const ENV_CONNECT_TIMEOUT: &str = "MESHGATE_CONNECT_TIMEOUT";
/// Upstream pool idle timeout.
pub const ENV_POOL_IDLE_TIMEOUT: &str = "MESHGATE_POOL_IDLE_TIMEOUT";
/// Connection limit.
pub const ENV_MAX_CONNECTIONS: &str = "MESHGATE_MAX_CONNECTIONS";
/// Drain deadline.
pub const ENV_SHUTDOWN_GRACE_PERIOD: &str = "MESHGATE_SHUTDOWN_GRACE_PERIOD";
/// Accepting time after a drain starts.
pub const ENV_DRAIN_DELAY: &str = "MESHGATE_DRAIN_DELAY";
/// Worker threads.
pub const ENV_WORKERS: &str = "MESHGATE_WORKERS";
/// `--log`.
pub const ENV_LOG: &str = "MESHGATE_LOG";
/// `--log-format`.
pub const ENV_LOG_FORMAT: &str = "MESHGATE_LOG_FORMAT";
/// `--config`.
pub const ENV_CONFIG: &str = "MESHGATE_CONFIG";

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

impl Config {
    /// Loads defaults ← `file` (YAML) ← environment ← `overrides`, then validates.
    ///
    /// # Errors
    /// Every problem at once: unreadable file, YAML syntax, unknown keys, bad values, and the
    /// checks of [`Config::validate`].
    pub fn load(
        file: Option<&Path>,
        env: &impl EnvSource,
        overrides: &Overrides,
    ) -> Result<Config, Problems> {
        let mut config = Config::default();
        let mut problems = Vec::new();
        if let Some(path) = file {
            match std::fs::read_to_string(path) {
                Ok(text) => config.apply_yaml(&path.display().to_string(), &text, &mut problems),
                Err(e) => problems.push(format!("config file {}: {e}", path.display())),
            }
        }
        for (key, shape, vars) in KEYS {
            if let Some((var, text)) = vars.iter().find_map(|v| env.get(v).map(|t| (*v, t))) {
                config.apply(key, text_value(*shape, &text), var, &mut problems);
            }
        }
        for (key, text) in overrides {
            let shape = KEYS
                .iter()
                .find(|k| k.0 == *key)
                .map_or(Shape::Text, |k| k.1);
            config.apply(
                key,
                text_value(shape, text),
                &format!("--{}", key.replace('_', "-")),
                &mut problems,
            );
        }
        config.finish(problems)
    }

    /// Parses YAML text alone (no environment, no flags) and validates it.
    ///
    /// # Errors
    /// Every problem, as [`Config::load`].
    pub fn from_yaml(text: &str) -> Result<Config, Problems> {
        let mut config = Config::default();
        let mut problems = Vec::new();
        config.apply_yaml("config", text, &mut problems);
        config.finish(problems)
    }

    /// Adds the problems of [`Config::validate`] to `problems`; the config if there are none.
    fn finish(self, mut problems: Vec<String>) -> Result<Config, Problems> {
        problems.extend(self.validate().0);
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(Problems(problems))
        }
    }

    fn apply_yaml(&mut self, what: &str, text: &str, problems: &mut Vec<String>) {
        let value: Value = match serde_norway::from_str(text) {
            Ok(Value::Null) => return,
            Ok(v) => v,
            Err(e) => return problems.push(format!("{what}: {e}")),
        };
        let Value::Mapping(map) = value else {
            return problems.push(format!("{what}: the top level must be a mapping of keys"));
        };
        for (key, value) in map {
            match key.as_str() {
                Some(key) if KEYS.iter().any(|k| k.0 == key) => {
                    self.apply(key, value, &format!("{what}: {key}"), problems)
                }
                _ => problems.push(format!(
                    "{what}: unknown key {} (known keys: {})",
                    serde_norway::to_string(&key).unwrap_or_default().trim(),
                    KEYS.iter().map(|k| k.0).collect::<Vec<_>>().join(", ")
                )),
            }
        }
    }

    /// Sets one key from a YAML value, recording a problem (naming `source`) when it does not fit.
    fn apply(&mut self, key: &str, value: Value, source: &str, problems: &mut Vec<String>) {
        fn set<T: DeserializeOwned>(
            slot: &mut T,
            value: Value,
            source: &str,
            problems: &mut Vec<String>,
        ) {
            match serde_norway::from_value(value) {
                Ok(v) => *slot = v,
                Err(e) => problems.push(format!("{source}: {e}")),
            }
        }
        match key {
            "listen" => set(&mut self.listen, value, source, problems),
            "admin_listen" => set(&mut self.admin_listen, value, source, problems),
            "cert" => set(&mut self.cert, value, source, problems),
            "key" => set(&mut self.key, value, source, problems),
            "trust_anchors" => set(&mut self.trust_anchors, value, source, problems),
            "trust_anchors_pem" => set(&mut self.trust_anchors_pem, value, source, problems),
            "identity_dir" => set(&mut self.identity_dir, value, source, problems),
            "identity_name" => set(&mut self.identity_name, value, source, problems),
            "credentials_poll_interval" => {
                set_duration(&mut self.credentials_poll_interval, value, source, problems)
            }
            "identity_svc_addr" => set(&mut self.identity_svc_addr, value, source, problems),
            "identity_svc_name" => set(&mut self.identity_svc_name, value, source, problems),
            "identity_token_file" => set(&mut self.identity_token_file, value, source, problems),
            "identity_key_dir" => set(&mut self.identity_key_dir, value, source, problems),
            "identity_min_refresh" => {
                set_duration(&mut self.identity_min_refresh, value, source, problems)
            }
            "identity_max_refresh" => {
                set_duration(&mut self.identity_max_refresh, value, source, problems)
            }
            "policy" => set(&mut self.policy, value, source, problems),
            "shutdown_endpoint_enabled" => {
                set(&mut self.shutdown_endpoint_enabled, value, source, problems)
            }
            "metrics_retain_idle" => {
                set_duration(&mut self.metrics_retain_idle, value, source, problems)
            }
            "gateway_suffixes" => set(&mut self.gateway_suffixes, value, source, problems),
            "endpoints" => set(&mut self.endpoints, value, source, problems),
            "detect_timeout" => set_duration(&mut self.detect_timeout, value, source, problems),
            "connect_timeout" => set_duration(&mut self.connect_timeout, value, source, problems),
            "dns_min_ttl" => set_duration(&mut self.dns_min_ttl, value, source, problems),
            "dns_max_ttl" => set_duration(&mut self.dns_max_ttl, value, source, problems),
            "dns_servers" => set(&mut self.dns_servers, value, source, problems),
            "pool_idle_timeout" => {
                set_duration(&mut self.pool_idle_timeout, value, source, problems)
            }
            "max_connections" => set(&mut self.max_connections, value, source, problems),
            "max_in_flight_requests" => {
                set(&mut self.max_in_flight_requests, value, source, problems)
            }
            "max_header_list_size" => set(&mut self.max_header_list_size, value, source, problems),
            "max_concurrent_streams" => {
                set(&mut self.max_concurrent_streams, value, source, problems)
            }
            "header_read_timeout" => {
                set_duration(&mut self.header_read_timeout, value, source, problems)
            }
            "response_timeout" => {
                let mut d = Duration::ZERO;
                set_duration(&mut d, value, source, problems);
                self.response_timeout = Some(d);
            }
            "response_timeouts" => set(&mut self.response_timeouts, value, source, problems),
            "preserve_header_case" => set(&mut self.preserve_header_case, value, source, problems),
            "http_connect" => set(&mut self.http_connect, value, source, problems),
            "shutdown_grace_period" => {
                set_duration(&mut self.shutdown_grace_period, value, source, problems)
            }
            "drain_delay" => set_duration(&mut self.drain_delay, value, source, problems),
            "workers" => set(&mut self.workers, value, source, problems),
            "log" => set(&mut self.log, value, source, problems),
            "log_format" => set(&mut self.log_format, value, source, problems),
            other => problems.push(format!("{source}: unknown key {other}")),
        }
    }

    /// Checks the combined values; returns every problem (empty when valid).
    pub fn validate(&self) -> Problems {
        let mut problems = Vec::new();
        // Port 0 asks for two different ephemeral ports, so only a fixed port can collide.
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            problems.push(format!("listen and admin_listen are both {}", self.listen));
        }
        match (&self.identity_dir, &self.cert, &self.key) {
            _ if self.identity_svc_addr.is_some() => {
                if self.identity_dir.is_some() || self.cert.is_some() || self.key.is_some() {
                    problems.push(
                        "identity_svc_addr and credential files are both set: use one source of \
                         credentials"
                            .to_owned(),
                    );
                }
                if self.identity_name.is_none() {
                    problems.push(
                        "identity_svc_addr needs identity_name \
                         (LINKERD2_PROXY_IDENTITY_LOCAL_NAME): the identity to ask for"
                            .to_owned(),
                    );
                }
                if self.identity_min_refresh > self.identity_max_refresh {
                    problems.push(
                        "identity_min_refresh is longer than identity_max_refresh".to_owned(),
                    );
                }
            }
            (Some(_), None, None) | (None, Some(_), Some(_)) => {}
            (Some(_), _, _) => problems.push(
                "identity_dir and cert/key are both set: use one source of credentials".to_owned(),
            ),
            (None, Some(_), None) => problems.push("cert is set but key is not".to_owned()),
            (None, None, Some(_)) => problems.push("key is set but cert is not".to_owned()),
            (None, None, None) => problems.push(
                "no credentials: set --cert and --key (with --trust-anchors), or --identity-dir"
                    .to_owned(),
            ),
        }
        if self.identity_dir.is_none()
            && self.trust_anchors.is_none()
            && self.trust_anchors_pem.is_none()
        {
            problems.push(
                "no trust anchors: set --trust-anchors (or LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS)"
                    .to_owned(),
            );
        }
        let suffixes = match Suffixes::new(&self.gateway_suffixes) {
            Ok(s) if s.is_empty() => {
                problems
                    .push("gateway_suffixes is empty: no target would ever be allowed".to_owned());
                None
            }
            Ok(s) => Some(s),
            Err(_) => {
                problems.push(format!(
                    "gateway_suffixes {:?}: every entry must be a DNS suffix or \".\"",
                    self.gateway_suffixes
                ));
                None
            }
        };
        for (name, addrs) in &self.endpoints {
            match (name.rsplit_once(':'), &suffixes) {
                (Some(_), Some(suffixes)) => {
                    if let Err(e) = Target::parse(name, suffixes) {
                        problems.push(format!("endpoints: {name:?} is not a usable target: {e}"));
                    }
                }
                (None, _) => problems.push(format!("endpoints: {name:?} must be name:port")),
                _ => {}
            }
            if addrs.is_empty() {
                problems.push(format!("endpoints: {name:?} has no addresses"));
            }
        }
        for (key, value) in [
            ("detect_timeout", self.detect_timeout),
            ("connect_timeout", self.connect_timeout),
            ("pool_idle_timeout", self.pool_idle_timeout),
            ("metrics_retain_idle", self.metrics_retain_idle),
            ("credentials_poll_interval", self.credentials_poll_interval),
            ("header_read_timeout", self.header_read_timeout),
            ("dns_min_ttl", self.dns_min_ttl),
            ("identity_min_refresh", self.identity_min_refresh),
        ] {
            if value.is_zero() {
                problems.push(format!("{key} must be greater than zero"));
            }
        }
        if self.dns_min_ttl > self.dns_max_ttl {
            problems.push("dns_min_ttl is longer than dns_max_ttl".to_owned());
        }
        if self.max_in_flight_requests == 0 {
            problems.push("max_in_flight_requests must be at least 1".to_owned());
        }
        if self.max_concurrent_streams == 0 {
            problems.push("max_concurrent_streams must be at least 1".to_owned());
        }
        if !(1024..=MAX_HEADER_LIST_SIZE_LIMIT).contains(&self.max_header_list_size) {
            problems.push(format!(
                "max_header_list_size {} must be between 1024 and {MAX_HEADER_LIST_SIZE_LIMIT} (1 MiB)",
                self.max_header_list_size
            ));
        }
        if self.response_timeout.is_some_and(|d| d.is_zero()) {
            problems.push("response_timeout must be greater than zero".to_owned());
        }
        for (name, timeout) in &self.response_timeouts {
            if timeout.is_zero() {
                problems.push(format!(
                    "response_timeouts: {name:?} must be greater than zero"
                ));
            }
            if let Some(suffixes) = &suffixes
                && Target::parse(name, suffixes).is_err()
            {
                problems.push(format!(
                    "response_timeouts: {name:?} is not a usable target"
                ));
            }
        }
        if self.max_connections == 0 {
            problems.push("max_connections must be at least 1".to_owned());
        }

        if let Some(workers) = self.workers
            && !(1..=1024).contains(&workers)
        {
            problems.push(format!("workers {workers} must be within 1..=1024"));
        }
        if let Some(name) = &self.identity_name
            && name.parse::<identity::IdentityName>().is_err()
        {
            problems.push(format!(
                "identity_name {name:?} is not a DNS or URI identity"
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log) {
            problems.push(format!("log {:?}: {e}", self.log));
        }
        Problems(problems)
    }

    /// The certificate, key and trust-anchor sources after applying `identity_dir`.
    pub fn credential_paths(&self) -> (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>) {
        match &self.identity_dir {
            Some(dir) => (
                Some(dir.join("tls.crt")),
                Some(dir.join("tls.key")),
                self.trust_anchors
                    .clone()
                    .or_else(|| Some(dir.join("ca.crt"))),
            ),
            None => (
                self.cert.clone(),
                self.key.clone(),
                self.trust_anchors.clone(),
            ),
        }
    }

    /// The allowlist. Valid after [`Config::validate`] passed.
    ///
    /// # Errors
    /// When an entry is not a DNS suffix.
    pub fn suffixes(&self) -> Result<Suffixes, crate::target::Error> {
        Suffixes::new(&self.gateway_suffixes)
    }

    /// The effective configuration as YAML (PEM text elided).
    pub fn to_yaml(&self) -> String {
        let mut shown = self.clone();
        if shown.trust_anchors_pem.is_some() {
            shown.trust_anchors_pem =
                Some("<PEM from LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS>".to_owned());
        }
        serde_norway::to_string(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

fn set_duration(slot: &mut Duration, value: Value, source: &str, problems: &mut Vec<String>) {
    let text = match value {
        Value::String(s) => s,
        // A bare number is taken as seconds.
        Value::Number(n) if n.as_u64().is_some() => format!("{n}s"),
        other => {
            return problems.push(format!(
                "{source}: expected a duration such as \"10s\" or \"500ms\", got {}",
                serde_norway::to_string(&other).unwrap_or_default().trim()
            ));
        }
    };
    match humantime::parse_duration(text.trim()) {
        Ok(d) => *slot = d,
        Err(e) => problems.push(format!("{source}: {text:?} is not a duration: {e}")),
    }
}

/// Turns an env or flag string into the YAML value its key expects.
fn text_value(shape: Shape, text: &str) -> Value {
    let list = || text.split(',').map(str::trim).filter(|s| !s.is_empty());
    match shape {
        Shape::Text => Value::String(text.to_owned()),
        Shape::Number => text
            .trim()
            .parse::<u64>()
            .map(|n| Value::Number(n.into()))
            .unwrap_or_else(|_| Value::String(text.to_owned())),
        Shape::Bool => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Value::Bool(true),
            "false" | "0" | "no" | "" => Value::Bool(false),
            _ => Value::String(text.to_owned()),
        },
        Shape::List => Value::Sequence(list().map(|s| Value::String(s.to_owned())).collect()),
        Shape::Endpoints => {
            let mut map = Mapping::new();
            for pair in list() {
                let (name, addr) = pair.split_once('=').unwrap_or((pair, ""));
                let entry = map
                    .entry(Value::String(name.trim().to_owned()))
                    .or_insert_with(|| Value::Sequence(Vec::new()));
                if let Value::Sequence(addrs) = entry {
                    addrs.push(Value::String(addr.trim().to_owned()));
                }
            }
            Value::Mapping(map)
        }
    }
}

#[cfg(test)]
mod tests;
