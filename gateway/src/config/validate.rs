//! Validation: each key's own check (declared with the key) and the rules across keys; every
//! problem is reported, none stops the others.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{Config, MAX_HEADER_LIST_SIZE_LIMIT, Problems};
use crate::target::{Suffixes, Target};
use crate::upstream::destination;

impl Config {
    /// Checks the combined values; returns every problem (empty when valid).
    pub fn validate(&self) -> Problems {
        let mut problems = Vec::new();
        self.check_keys(&mut problems);
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
        if let Err(e) = self.destination_options() {
            problems.extend(e);
        }
        if self.dns_min_ttl > self.dns_max_ttl {
            problems.push("dns_min_ttl is longer than dns_max_ttl".to_owned());
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
        for name in self.splits.keys() {
            if let Some(suffixes) = &suffixes
                && Target::parse(name, suffixes).is_err()
            {
                problems.push(format!("splits: {name:?} is not a usable target"));
            }
        }
        for (name, fallbacks) in &self.failover {
            if let Some(suffixes) = &suffixes
                && Target::parse(name, suffixes).is_err()
            {
                problems.push(format!("failover: {name:?} is not a usable target"));
            }
            if let Err(e) = crate::upstream::failover::check(Some(name), fallbacks) {
                problems.push(format!("failover: {name:?}: {e}"));
            }
        }
        for name in self.upstream_protocol.keys() {
            if let Some(suffixes) = &suffixes
                && Target::parse(name, suffixes).is_err()
            {
                problems.push(format!(
                    "upstream_protocol: {name:?} is not a usable target"
                ));
            }
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

    /// Tracing's options, when `trace_collector_addr` is set.
    pub fn trace_options(&self) -> Option<crate::telemetry::Options> {
        self.trace_collector_addr
            .as_ref()
            .map(|collector| crate::telemetry::Options {
                collector: collector.clone(),
                sampling: self.trace_sampling,
                service_name: self.trace_service_name.clone(),
                buffer: self.trace_buffer,
            })
    }

    /// The Destination client's options, when `destination_svc_addr` is set.
    ///
    /// # Errors
    /// Every problem: an address that is not `host:port`, a non-loopback address without
    /// `destination_svc_name` (linkerd2-proxy refuses it too: lookups would cross the network
    /// in plaintext), a bad name, bad suffixes.
    pub fn destination_options(&self) -> Result<Option<destination::Options>, Vec<String>> {
        let Some(addr) = &self.destination_svc_addr else {
            return Ok(None);
        };
        let mut problems = Vec::new();
        let host = match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                Some(host.trim_start_matches('[').trim_end_matches(']'))
            }
            _ => {
                problems.push(format!("destination_svc_addr {addr:?} must be host:port"));
                None
            }
        };
        let name = match &self.destination_svc_name {
            Some(name) => name
                .parse::<identity::IdentityName>()
                .map_err(|e| problems.push(format!("destination_svc_name {name:?}: {e}")))
                .ok(),
            None => None,
        };
        let loopback = host.is_none_or(|host| {
            host.eq_ignore_ascii_case("localhost")
                || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        });
        if self.destination_svc_name.is_none() && !loopback {
            problems.push(format!(
                "destination_svc_addr {addr:?} is not a loopback address: set \
                 destination_svc_name (LINKERD2_PROXY_DESTINATION_SVC_NAME), the controller's \
                 identity, so lookups go over mTLS"
            ));
        }
        let suffixes = Suffixes::new(&self.destination_profile_suffixes)
            .map_err(|_| {
                problems.push(format!(
                    "destination_profile_suffixes {:?}: every entry must be a DNS suffix or \".\"",
                    self.destination_profile_suffixes
                ));
            })
            .ok();
        let (Some(suffixes), true) = (suffixes, problems.is_empty()) else {
            return Err(problems);
        };
        Ok(Some(destination::Options {
            addr: addr.clone(),
            name,
            context: self.destination_context.clone(),
            suffixes,
            idle_timeout: self.discovery_idle_timeout,
            wait: self.discovery_timeout,
        }))
    }
}

/// A duration that must not be zero.
pub(super) fn positive(value: &Duration) -> Result<(), String> {
    if value.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(())
}

/// An optional `host:port` (a name or an IP, a port above 0).
pub(super) fn host_port_if_set(value: &Option<String>) -> Result<(), String> {
    match value.as_deref().map(|v| v.rsplit_once(':')) {
        None => Ok(()),
        Some(Some((host, port)))
            if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) =>
        {
            Ok(())
        }
        Some(_) => Err("must be host:port".to_owned()),
    }
}

/// An optional duration that, when set, must not be zero.
pub(super) fn positive_if_set(value: &Option<Duration>) -> Result<(), String> {
    value.as_ref().map_or(Ok(()), positive)
}

/// A count that must be at least one.
pub(super) fn at_least_one(value: &usize) -> Result<(), String> {
    if *value == 0 {
        return Err("must be at least 1".to_owned());
    }
    Ok(())
}

/// A count that must be at least one.
pub(super) fn at_least_one_u32(value: &u32) -> Result<(), String> {
    at_least_one(&(*value as usize))
}

/// `max_header_list_size`: 1 KiB to 1 MiB.
pub(super) fn header_list_size(value: &usize) -> Result<(), String> {
    if !(1024..=MAX_HEADER_LIST_SIZE_LIMIT).contains(value) {
        return Err(format!(
            "{value} must be between 1024 and {MAX_HEADER_LIST_SIZE_LIMIT} (1 MiB)"
        ));
    }
    Ok(())
}

/// `workers`: 1 to 1024 when set.
pub(super) fn workers(value: &Option<usize>) -> Result<(), String> {
    match value {
        Some(workers) if !(1..=1024).contains(workers) => {
            Err(format!("{workers} must be within 1..=1024"))
        }
        _ => Ok(()),
    }
}

/// `identity_name`: a DNS or URI identity when set.
pub(super) fn identity_name(value: &Option<String>) -> Result<(), String> {
    match value {
        Some(name) if name.parse::<identity::IdentityName>().is_err() => {
            Err(format!("{name:?} is not a DNS or URI identity"))
        }
        _ => Ok(()),
    }
}

/// `log`: a filter `tracing` accepts.
pub(super) fn log_filter(value: &String) -> Result<(), String> {
    tracing_subscriber::EnvFilter::try_new(value)
        .map(|_| ())
        .map_err(|e| format!("{value:?}: {e}"))
}
