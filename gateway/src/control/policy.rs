//! Authorization policy (`--policy FILE`): rules of caller identity patterns × target patterns
//! that allow, a default (`all-authenticated` or `deny`) for what no rule matches, and an `audit`
//! mode that allows what would be denied but counts and logs it. The file is YAML:
//!
//! ```yaml
//! default: deny              # or all-authenticated (the default without a file)
//! mode: enforce              # or audit
//! rules:
//!   - name: east-web
//!     clients:               # any of:
//!       - web.east.serviceaccount.identity.linkerd.cluster.local   # one identity
//!       - "*.east.serviceaccount.identity.linkerd.cluster.local"   # identities under a suffix
//!       - spiffe://east.example.org                                 # a SPIFFE trust domain
//!       - "*"                                                       # any authenticated caller
//!     targets:               # any of; each field optional
//!       - service: web       # first label of the target name
//!         namespace: prod    # second label (name.namespace.svc.<domain>)
//!         port: 8080
//! rate_limits:               # CLIENT[@NAME:PORT]=RATE[/BURST], added to the config's
//!   - "*.east.serviceaccount.identity.linkerd.cluster.local=100/200"   # not a pattern: one identity
//!   - "*=50"                 # every caller, each its own bucket of 50 requests per second
//! splits:                    # as the config's; a target here replaces the config's split
//!   podinfo.test.svc.cluster.local:9898:
//!     - {to: podinfo-v1.test.svc.cluster.local:9898, weight: 90}
//!     - {to: podinfo-v2.test.svc.cluster.local:9898, weight: 10}
//! failover:                  # as the config's; a target here replaces the config's fallbacks
//!   podinfo.test.svc.cluster.local:9898:
//!     - podinfo-backup.test.svc.cluster.local:9898
//!     - {gateway: "198.51.100.7:4143", identity: linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local}
//! ```
//!
//! The file is watched like the credential files: a changed file that parses replaces the
//! policy for new requests and connections; one that does not is refused with an error log and
//! a metric, and the policy in use stays.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use identity::IdentityName;
use identity::source::Settle;
use serde::Deserialize;
use tokio::time::Instant;

use crate::limit::RateLimits;
use crate::metrics::{Label, Metrics};
use crate::target::Target;
use crate::upstream::by_authority;
use crate::upstream::failover::Fallback;
use crate::upstream::split::Weighted;

/// What the policy decides for one caller and target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed by a rule (`authz_kind="rule"`) or the default (`authz_kind="default"`).
    Allow {
        /// `rule` or `default`.
        kind: &'static str,
        /// The rule's name, or the default's (`all-authenticated`).
        name: Label,
    },
    /// Denied.
    Deny,
    /// Denied by the policy, allowed because it is in audit mode.
    AuditDeny,
}

/// A loaded, validated policy.
#[derive(Clone, Debug)]
pub struct Policy {
    deny_by_default: bool,
    audit: bool,
    rules: Vec<Rule>,
    default_name: Label,
    /// The file's rate limits (their buckets start full at each reload).
    rate_limits: Arc<RateLimits>,
    /// The file's splits, by target authority (on top of the config's).
    splits: HashMap<String, Vec<Weighted>>,
    /// The file's failover, by target authority (on top of the config's).
    failover: HashMap<String, Vec<Fallback>>,
}

impl Default for Policy {
    /// `all-authenticated`: every caller that passed mTLS is allowed.
    fn default() -> Self {
        Self {
            deny_by_default: false,
            audit: false,
            rules: Vec::new(),
            default_name: Label::from("all-authenticated"),
            rate_limits: Arc::new(RateLimits::new(&[])),
            splits: HashMap::new(),
            failover: HashMap::new(),
        }
    }
}

#[derive(Clone, Debug)]
struct Rule {
    name: Label,
    clients: Vec<ClientPattern>,
    targets: Vec<TargetPattern>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum ClientPattern {
    Any,
    Exact(IdentityName),
    /// `.suffix` (with the leading dot): DNS identities strictly under it.
    Suffix(String),
    /// `spiffe://domain/`: URI identities in that trust domain.
    TrustDomain(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetPattern {
    service: Option<String>,
    namespace: Option<String>,
    port: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    rules: Vec<RuleFile>,
    #[serde(default)]
    rate_limits: Vec<String>,
    #[serde(default)]
    splits: BTreeMap<String, serde_norway::Value>,
    #[serde(default)]
    failover: BTreeMap<String, serde_norway::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: String,
    #[serde(default)]
    clients: Vec<String>,
    #[serde(default)]
    targets: Vec<TargetPattern>,
}

impl ClientPattern {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(Self::Any);
        }
        if let Some(suffix) = text.strip_prefix("*.") {
            let name: IdentityName = suffix
                .parse()
                .map_err(|e| format!("client pattern {text:?}: {e}"))?;
            if name.is_uri() {
                return Err(format!(
                    "client pattern {text:?}: a suffix must be a DNS name"
                ));
            }
            return Ok(Self::Suffix(format!(".{name}")));
        }
        if let Some(rest) = text.strip_prefix("spiffe://")
            && !rest.is_empty()
            && !rest.contains('/')
        {
            return Ok(Self::TrustDomain(format!(
                "spiffe://{}/",
                rest.to_ascii_lowercase()
            )));
        }
        text.parse()
            .map(Self::Exact)
            .map_err(|e| format!("client pattern {text:?}: {e}"))
    }

    fn matches(&self, client: &IdentityName) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(name) => name == client,
            Self::Suffix(suffix) => !client.is_uri() && client.as_str().ends_with(suffix.as_str()),
            Self::TrustDomain(prefix) => {
                client.is_uri()
                    && client.as_str().len() > prefix.len()
                    && client.as_str()[..prefix.len()].eq_ignore_ascii_case(prefix)
            }
        }
    }
}

impl TargetPattern {
    fn matches(&self, target: &Target) -> bool {
        let mut labels = target.name().split('.');
        let (service, namespace) = (labels.next(), labels.next());
        self.port.is_none_or(|p| p == target.port())
            && self.service.as_deref().is_none_or(|s| Some(s) == service)
            && self
                .namespace
                .as_deref()
                .is_none_or(|n| Some(n) == namespace)
    }
}

impl Policy {
    /// Parses a policy file's text, reporting every problem.
    ///
    /// # Errors
    /// YAML errors, unknown keys, bad values, bad patterns, unnamed or duplicate rules.
    pub fn from_yaml(what: &str, text: &str) -> Result<Self, Vec<String>> {
        let file: PolicyFile =
            serde_norway::from_str(text).map_err(|e| vec![format!("{what}: {e}")])?;
        let mut problems = Vec::new();
        let deny_by_default = match file.default.as_deref() {
            None | Some("all-authenticated") => false,
            Some("deny") => true,
            Some(other) => {
                problems.push(format!(
                    "{what}: default {other:?} must be all-authenticated or deny"
                ));
                false
            }
        };
        let audit = match file.mode.as_deref() {
            None | Some("enforce") => false,
            Some("audit") => true,
            Some(other) => {
                problems.push(format!("{what}: mode {other:?} must be enforce or audit"));
                false
            }
        };
        let mut rules: Vec<Rule> = Vec::new();
        for (i, rule) in file.rules.into_iter().enumerate() {
            let at = format!("{what}: rule {} ({:?})", i + 1, rule.name);
            if rule.name.trim().is_empty() {
                problems.push(format!("{at}: needs a name"));
            } else if rules.iter().any(|r| *r.name.0 == *rule.name) {
                problems.push(format!("{at}: the name is used twice"));
            }
            if rule.clients.is_empty() {
                problems.push(format!(
                    "{at}: needs at least one client pattern (\"*\" for any)"
                ));
            }
            if rule.targets.is_empty() {
                problems.push(format!(
                    "{at}: needs at least one target pattern ({{}} for any)"
                ));
            }
            let mut clients = Vec::new();
            for pattern in &rule.clients {
                match ClientPattern::parse(pattern) {
                    Ok(p) => clients.push(p),
                    Err(e) => problems.push(format!("{at}: {e}")),
                }
            }
            for target in &rule.targets {
                if target.port == Some(0) {
                    problems.push(format!("{at}: port 0 never matches"));
                }
            }
            rules.push(Rule {
                name: Label::from(rule.name.as_str()),
                clients,
                targets: rule.targets,
            });
        }
        let mut limits = Vec::new();
        for (i, text) in file.rate_limits.iter().enumerate() {
            match text.parse::<crate::limit::Rule>() {
                Ok(rule) => limits.push(rule),
                Err(e) => problems.push(format!("{what}: rate limit {}: {e}", i + 1)),
            }
        }
        let mut splits = BTreeMap::new();
        for (name, value) in file.splits {
            let parsed = Target::configured(&name)
                .and_then(|_| crate::config::split_from_yaml(value))
                .map(|split| splits.insert(name.clone(), split));
            if let Err(e) = parsed {
                problems.push(format!("{what}: splits: {name:?}: {e}"));
            }
        }
        let mut failover = BTreeMap::new();
        for (name, value) in file.failover {
            let parsed = Target::configured(&name)
                .and_then(|_| crate::config::fallbacks_from_yaml(value))
                .and_then(|list| {
                    crate::upstream::failover::check(Some(&name), &list)?;
                    failover.insert(name.clone(), list);
                    Ok(())
                });
            if let Err(e) = parsed {
                problems.push(format!("{what}: failover: {name:?}: {e}"));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            deny_by_default,
            audit,
            rules,
            rate_limits: Arc::new(RateLimits::new(&limits)),
            splits: by_authority(&splits),
            failover: by_authority(&failover),
            default_name: Label::from(if deny_by_default {
                "deny"
            } else {
                "all-authenticated"
            }),
        })
    }

    /// Reads and parses a policy file, keeping the bytes read (the baseline of [`watch`]).
    ///
    /// # Errors
    /// As [`Policy::from_yaml`], an unreadable file, or one that is not UTF-8.
    pub fn load(path: &Path) -> Result<Loaded, Vec<String>> {
        let what = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| vec![format!("{what}: {e}")])?;
        let policy = Self::from_bytes(&what, &bytes)?;
        Ok(Loaded { policy, bytes })
    }

    /// Parses a policy file's bytes.
    ///
    /// # Errors
    /// As [`Policy::from_yaml`], or bytes that are not UTF-8.
    pub fn from_bytes(what: &str, bytes: &[u8]) -> Result<Self, Vec<String>> {
        let text =
            std::str::from_utf8(bytes).map_err(|_| vec![format!("{what}: not UTF-8 text")])?;
        Self::from_yaml(what, text)
    }

    /// The file's rate limits.
    pub fn rate_limits(&self) -> &Arc<RateLimits> {
        &self.rate_limits
    }

    /// The file's splits, by target authority.
    pub fn splits(&self) -> &HashMap<String, Vec<Weighted>> {
        &self.splits
    }

    /// The file's failover, by target authority.
    pub fn failover(&self) -> &HashMap<String, Vec<Fallback>> {
        &self.failover
    }

    /// The policy's default (`all-authenticated` or `deny`): the `srv_name` metric label.
    pub fn default_name(&self) -> &Label {
        &self.default_name
    }

    /// The first rule allowing `client` to reach `target`, else the default.
    pub fn decide(&self, client: &IdentityName, target: &Target) -> Verdict {
        for rule in &self.rules {
            if rule.clients.iter().any(|c| c.matches(client))
                && rule.targets.iter().any(|t| t.matches(target))
            {
                return Verdict::Allow {
                    kind: "rule",
                    name: rule.name.clone(),
                };
            }
        }
        match (self.deny_by_default, self.audit) {
            (false, _) => Verdict::Allow {
                kind: "default",
                name: self.default_name.clone(),
            },
            (true, true) => Verdict::AuditDeny,
            (true, false) => Verdict::Deny,
        }
    }
}

/// A policy file as loaded at start: the policy, and the bytes it was parsed from.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The policy.
    pub policy: Policy,
    /// The file's bytes: what [`watch`] takes as already applied.
    pub bytes: Vec<u8>,
}

/// The policy in use, replaceable while the gateway runs. Readers keep a [`Snapshot`] and
/// refresh it when the version moved, so the request path reads one atomic and takes no lock.
#[derive(Debug, Default)]
pub struct Current {
    policy: RwLock<Arc<Policy>>,
    /// Bumped by every replacement.
    version: AtomicU64,
    /// When each caller × target denial was last logged.
    denials: Mutex<HashMap<CallerTarget, Instant>>,
    /// Told of each policy put in use ([`Current::follow`]).
    follower: std::sync::OnceLock<Follower>,
}

/// What [`Current::follow`] registered.
struct Follower(Box<dyn Fn(&Policy) + Send + Sync>);

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Follower")
    }
}

/// A caller identity and a target authority.
type CallerTarget = (Arc<str>, Arc<str>);

/// One reader's copy of the policy and the version it is of.
#[derive(Clone, Debug)]
pub struct Snapshot {
    version: u64,
    policy: Arc<Policy>,
}

/// Where a decision is enforced, for the deny counters and the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Session {
    /// An HTTP request (denied: 403).
    Http,
    /// An opaque TCP session (denied: closed).
    Tcp,
}

/// A denial is logged once per caller × target in this period (counted every time).
const DENIAL_LOG_PERIOD: Duration = Duration::from_secs(60);
/// Most caller × target pairs remembered for that; past it the oldest half is forgotten.
const DENIAL_LOG_ENTRIES: usize = 4096;

impl Current {
    /// Starts with `policy`.
    pub fn new(policy: Policy) -> Self {
        let current = Self::default();
        current.set(policy);
        current
    }

    /// The policy in use now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: self.version.load(Ordering::Acquire),
            policy: self
                .policy
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    /// Brings `snapshot` up to date when the policy was replaced since it was taken.
    pub fn refresh(&self, snapshot: &mut Snapshot) {
        if self.version.load(Ordering::Acquire) != snapshot.version {
            *snapshot = self.snapshot();
        }
    }

    /// Whether a denial of `client` reaching `target` should be logged now: once per pair per
    /// minute, so a denied caller retrying in a loop cannot flood the log.
    pub fn log_denial(&self, client: &Arc<str>, target: &Arc<str>) -> bool {
        let now = Instant::now();
        let mut denials = self.denials.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (client.clone(), target.clone());
        if let Some(last) = denials.get(&key)
            && now.saturating_duration_since(*last) < DENIAL_LOG_PERIOD
        {
            return false;
        }
        if denials.len() >= DENIAL_LOG_ENTRIES {
            denials.retain(|_, last| now.saturating_duration_since(*last) < DENIAL_LOG_PERIOD);
            if denials.len() >= DENIAL_LOG_ENTRIES {
                denials.clear();
            }
        }
        denials.insert(key, now);
        true
    }

    /// Has `apply` told of the policy in use now and of each one that replaces it (the parts
    /// applied elsewhere: splits and failover). Only the first call registers.
    pub fn follow(&self, apply: impl Fn(&Policy) + Send + Sync + 'static) {
        apply(&self.snapshot());
        let _ = self.follower.set(Follower(Box::new(apply)));
    }

    fn set(&self, policy: Policy) {
        let policy = Arc::new(policy);
        *self.policy.write().unwrap_or_else(PoisonError::into_inner) = policy.clone();
        self.version.fetch_add(1, Ordering::AcqRel);
        if let Some(follower) = self.follower.get() {
            (follower.0)(&policy);
        }
    }
}

impl std::ops::Deref for Snapshot {
    type Target = Policy;

    fn deref(&self) -> &Policy {
        &self.policy
    }
}

/// Polls the policy file every `interval`; a file that differs from `loaded` (the bytes the
/// policy in use was parsed from, [`Loaded::bytes`]) and parses replaces the policy. Comparing
/// against what was loaded, not against a first read of its own, applies a change made between
/// loading and the first poll.
pub async fn watch(
    path: PathBuf,
    loaded: Vec<u8>,
    current: Arc<Current>,
    metrics: Arc<Metrics>,
    interval: Duration,
) {
    let mut reads = Settle::new(Some(loaded));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Parsed only once the bytes are the same on two polls (a finished write).
        let Some(now) = reads.observe(std::fs::read(&path).ok()) else {
            continue;
        };
        let what = path.display().to_string();
        let parsed = match now {
            None => Err(vec![format!("{what}: cannot be read")]),
            Some(bytes) => Policy::from_bytes(&what, bytes),
        };
        match parsed {
            Ok(policy) => {
                tracing::info!(path = %path.display(), rules = policy.rules.len(), "policy reloaded");
                current.set(policy);
                metrics.policy_reloaded(true);
            }
            Err(problems) => {
                tracing::error!(problems = %problems.join("; "), "policy reload refused; the policy in use stays");
                metrics.policy_reloaded(false);
            }
        }
    }
}

#[cfg(test)]
mod tests;
