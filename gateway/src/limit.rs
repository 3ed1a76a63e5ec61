//! Per-caller rate limits: token buckets keyed by rule and caller identity (a rule may also name
//! one target). A request takes one token from the bucket of every rule it matches; when one is
//! empty it is refused with 429 and the time until a token is back (`Retry-After`).
//!
//! Text form of a rule (flags, env): `CLIENT[@TARGET]=RATE[/BURST]`, where `CLIENT` is an
//! identity or `*` (each caller its own bucket), `TARGET` a `name:port`, `RATE` requests per
//! second and `BURST` the bucket's size (default: one second of `RATE`). YAML: a map
//! `{client, target, rate, burst}`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::target::Target;

/// One rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// The caller identity it applies to; `None` for every caller (each its own bucket).
    pub client: Option<String>,
    /// The target it applies to; `None` for every target.
    pub target: Option<String>,
    /// Requests per second.
    pub rate: f64,
    /// Bucket size (the burst allowed after a quiet time).
    pub burst: u32,
}

impl std::str::FromStr for Rule {
    type Err = String;

    /// Parses `CLIENT[@TARGET]=RATE[/BURST]`.
    ///
    /// # Errors
    /// A missing part, a rate that is not a positive number, a burst under 1.
    fn from_str(text: &str) -> Result<Self, String> {
        let (who, amount) = text
            .split_once('=')
            .ok_or_else(|| format!("rate limit {text:?} must be CLIENT[@TARGET]=RATE[/BURST]"))?;
        let (client, target) = match who.trim().split_once('@') {
            Some((client, target)) => (client.trim(), Some(target.trim().to_ascii_lowercase())),
            None => (who.trim(), None),
        };
        let (rate, burst) = match amount.trim().split_once('/') {
            Some((rate, burst)) => (rate.trim(), Some(burst.trim())),
            None => (amount.trim(), None),
        };
        let rate: f64 = rate
            .parse()
            .ok()
            .filter(|r: &f64| r.is_finite() && *r > 0.0)
            .ok_or_else(|| {
                format!("rate {rate:?} must be a positive number of requests per second")
            })?;
        let burst = match burst {
            Some(b) => b
                .parse::<u32>()
                .ok()
                .filter(|b| *b >= 1)
                .ok_or_else(|| format!("burst {b:?} must be a whole number ≥ 1"))?,
            None => rate.ceil().clamp(1.0, f64::from(u32::MAX)) as u32,
        };
        if client.is_empty() {
            return Err(format!(
                "rate limit {text:?} names no client (an identity or *)"
            ));
        }
        let rule = Rule {
            client: (client != "*").then(|| client.to_ascii_lowercase()),
            target,
            rate,
            burst,
        };
        rule.check()?;
        Ok(rule)
    }
}

impl Rule {
    /// Checks the fields together.
    ///
    /// # Errors
    /// A bad identity or target.
    pub fn check(&self) -> Result<(), String> {
        if let Some(client) = &self.client
            && client.parse::<identity::IdentityName>().is_err()
        {
            return Err(format!(
                "rate limit client {client:?} is not an identity (or *)"
            ));
        }
        if let Some(target) = &self.target
            && (!target.contains(':')
                || Target::parse(target, &crate::target::Suffixes::all()).is_err())
        {
            return Err(format!("rate limit target {target:?} is not name:port"));
        }
        if !(self.rate.is_finite() && self.rate > 0.0) || self.burst == 0 {
            return Err("a rate limit needs a positive rate and a burst ≥ 1".to_owned());
        }
        Ok(())
    }

    /// The rule's name in metrics and logs: its text form.
    pub fn label(&self) -> String {
        self.to_string()
    }

    fn matches(&self, client: &str, target: &Target) -> bool {
        self.client.as_deref().is_none_or(|c| c == client)
            && self
                .target
                .as_deref()
                .is_none_or(|t| t == &**target.authority())
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.client.as_deref().unwrap_or("*"))?;
        if let Some(target) = &self.target {
            write!(f, "@{target}")?;
        }
        write!(f, "={}/{}", self.rate, self.burst)
    }
}

/// A token bucket: `tokens` as of `at`.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Every rule and its buckets.
pub struct RateLimits {
    rules: Vec<(Rule, Arc<str>)>,
    buckets: Mutex<HashMap<(usize, Arc<str>), Bucket>>,
}

impl fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.rules.iter().map(|(_, label)| label))
            .finish()
    }
}

/// A refusal: the rule that refused, and when a token is back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limited {
    /// The rule's label.
    pub rule: Arc<str>,
    /// How long until the request would pass.
    pub retry_after: Duration,
}

impl RateLimits {
    /// The limits of `rules`.
    pub fn new(rules: &[Rule]) -> Self {
        Self {
            rules: rules
                .iter()
                .map(|r| (r.clone(), Arc::from(r.label())))
                .collect(),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether there are any rules (requests skip the check when there are none).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Takes a token for `client`'s request to `target` from every rule it matches.
    ///
    /// # Errors
    /// The first rule whose bucket is empty (no token is taken from any rule then).
    pub fn take(&self, client: &str, target: &Target) -> Result<(), Limited> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let client: Arc<str> = Arc::from(client);
        let matching: Vec<usize> = (0..self.rules.len())
            .filter(|i| self.rules[*i].0.matches(&client, target))
            .collect();
        // Refill and check every matching bucket first, then take: a refusal costs nothing.
        for &i in &matching {
            let rule = &self.rules[i].0;
            let bucket = buckets.entry((i, client.clone())).or_insert(Bucket {
                tokens: f64::from(rule.burst),
                at: now,
            });
            let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * rule.rate).min(f64::from(rule.burst));
            bucket.at = now;
            if bucket.tokens < 1.0 {
                return Err(Limited {
                    rule: self.rules[i].1.clone(),
                    retry_after: Duration::from_secs_f64((1.0 - bucket.tokens) / rule.rate),
                });
            }
        }
        for &i in &matching {
            if let Some(bucket) = buckets.get_mut(&(i, client.clone())) {
                bucket.tokens -= 1.0;
            }
        }
        // Buckets full again are the same as none: drop them now and then (bounded memory).
        if buckets.len() > 4096 {
            let rules = &self.rules;
            buckets.retain(|(i, _), b| {
                let rule = &rules[*i].0;
                let full = b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rule.rate;
                full < f64::from(rule.burst)
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Suffixes;

    const A: &str = "web.east.serviceaccount.identity.linkerd.cluster.local";
    const B: &str = "api.east.serviceaccount.identity.linkerd.cluster.local";

    fn target(t: &str) -> Target {
        Target::parse(t, &Suffixes::all()).unwrap()
    }

    #[test]
    fn rules_parse_from_text_and_say_what_is_wrong() {
        let r: Rule = format!("{A}@web.ns.svc.cluster.local:80=50/100")
            .parse()
            .unwrap();
        assert_eq!(r.client.as_deref(), Some(A));
        assert_eq!(r.target.as_deref(), Some("web.ns.svc.cluster.local:80"));
        assert_eq!((r.rate, r.burst), (50.0, 100));
        assert_eq!(r.to_string().parse::<Rule>().unwrap(), r);
        let r: Rule = "*=2.5".parse().unwrap();
        assert_eq!(
            (r.client, r.burst),
            (None, 3),
            "burst: a second of the rate"
        );
        for (text, says) in [
            ("*", "must be CLIENT"),
            ("*=0", "positive"),
            ("*=x", "positive"),
            ("*=5/0", "burst"),
            ("=5", "names no client"),
            ("not an identity=5", "not an identity"),
            ("*@nowhere=5", "not name:port"),
        ] {
            let e = text.parse::<Rule>().unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_allows_its_burst_then_its_rate_per_caller() {
        let limits = RateLimits::new(&[format!("{A}=10/5").parse().unwrap()]);
        let web = target("web.ns.svc.cluster.local:80");
        for _ in 0..5 {
            assert!(limits.take(A, &web).is_ok());
        }
        let refused = limits.take(A, &web).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        assert!(
            limits.take(B, &web).is_ok(),
            "another caller is not limited"
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(limits.take(A, &web).is_ok(), "a token is back after 1/rate");
        assert!(limits.take(A, &web).is_err());
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..5 {
            assert!(
                limits.take(A, &web).is_ok(),
                "refilled to the burst, no more"
            );
        }
        assert!(limits.take(A, &web).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn every_caller_gets_its_own_bucket_and_a_target_rule_only_counts_its_target() {
        let limits = RateLimits::new(&[
            "*=1/1".parse().unwrap(),
            format!("{A}@web.ns.svc.cluster.local:80=100/1")
                .parse()
                .unwrap(),
        ]);
        let (web, api) = (
            target("web.ns.svc.cluster.local:80"),
            target("api.ns.svc.cluster.local:80"),
        );
        assert!(limits.take(A, &api).is_ok());
        assert!(limits.take(B, &api).is_ok(), "* is per caller");
        let e = limits.take(A, &web).unwrap_err();
        assert_eq!(&*e.rule, "*=1/1", "the first empty bucket refuses");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(limits.take(A, &web).is_ok());
        tokio::time::advance(Duration::from_secs(1)).await;
        // The * bucket is full again, the target rule's was not charged by the refusal.
        assert!(limits.take(A, &web).is_ok());
    }
}
