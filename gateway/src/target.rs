//! `Target { name, port }`: where a request or stream wants to go, parsed from an authority
//! (`l5d-dst-override`, `:authority`, `Host`) and checked against the DNS-suffix allowlist.
//! Pure: no DNS, no I/O. IP literals and `localhost` never pass.

use std::fmt;
use std::sync::Arc;

/// The default allowlist: local Kubernetes services.
pub const DEFAULT_SUFFIX: &str = "svc.cluster.local";

/// A validated destination: a lower-case DNS name without trailing dot, and a port in 1..=65535.
///
/// Held as one shared `name:port` string, so labels, URIs and logs borrow it without allocating.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    authority: Arc<str>,
    name_len: usize,
    port: u16,
}

/// Why an authority is not an acceptable target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No host in the authority.
    #[error("target has no host")]
    Empty,
    /// The port is not a number in 1..=65535.
    #[error("target port {0:?} is invalid")]
    BadPort(String),
    /// The host is not a DNS name (bad characters, empty or overlong labels, too long).
    #[error("target host is not a valid DNS name")]
    BadName,
    /// The host is an IP address (any notation), which the gateway never forwards to.
    #[error("target is an IP address")]
    IpLiteral,
    /// `localhost` or a name under it.
    #[error("target is localhost")]
    Localhost,
    /// The name is not under any allowed suffix.
    #[error("bad gateway domain")]
    NotAllowed,
}

impl Error {
    /// Whether the target is well-formed but outside the allowlist (404 `bad gateway domain`),
    /// rather than malformed (400).
    pub fn is_bad_domain(&self) -> bool {
        matches!(
            self,
            Error::IpLiteral | Error::Localhost | Error::NotAllowed
        )
    }
}

/// The DNS suffixes targets must end with, on a label boundary. `.` allows every DNS name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suffixes {
    any: bool,
    suffixes: Vec<String>,
}

impl Suffixes {
    /// Builds the allowlist; each entry is lower-cased and stripped of leading/trailing dots.
    ///
    /// # Errors
    /// `BadName` for an entry that is not a DNS name (or `.`).
    pub fn new<I, S>(entries: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut any = false;
        let mut suffixes = Vec::new();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry == "." {
                any = true;
                continue;
            }
            let entry = entry.trim_matches('.').to_ascii_lowercase();
            if entry.is_empty() {
                continue;
            }
            if !is_dns_name(&entry) {
                return Err(Error::BadName);
            }
            suffixes.push(entry);
        }
        Ok(Self { any, suffixes })
    }

    /// Every DNS name (`.`): for names the control plane gave, which the caller never chose.
    pub fn all() -> Self {
        Self {
            any: true,
            suffixes: Vec::new(),
        }
    }

    /// Whether the allowlist admits no name at all.
    pub fn is_empty(&self) -> bool {
        !self.any && self.suffixes.is_empty()
    }

    /// Whether `name` (lower-case, no trailing dot) is under an allowed suffix.
    pub fn allows(&self, name: &str) -> bool {
        self.any
            || self.suffixes.iter().any(|suffix| {
                name == suffix
                    || (name.len() > suffix.len()
                        && name.ends_with(suffix.as_str())
                        && name.as_bytes()[name.len() - suffix.len() - 1] == b'.')
            })
    }
}

impl Default for Suffixes {
    fn default() -> Self {
        Self {
            any: false,
            suffixes: vec![DEFAULT_SUFFIX.to_owned()],
        }
    }
}

impl Target {
    /// Parses `host[:port]` (port 80 when absent) and checks it against `suffixes`.
    ///
    /// # Errors
    /// `Empty`, `BadPort` and `BadName` for malformed input (400), `IpLiteral`, `Localhost` and
    /// `NotAllowed` for names the gateway refuses (404).
    pub fn parse(authority: &str, suffixes: &Suffixes) -> Result<Self, Error> {
        let (host, port) = split_port(authority)?;
        Self::from_parts(host, port, suffixes)
    }

    /// A target the operator names (splits, failover): `name:port` with the port written out,
    /// under any suffix.
    ///
    /// # Errors
    /// No port (`must be name:port`), or what [`Target::parse`] refuses.
    pub fn configured(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.rsplit_once(':').is_none() {
            return Err("must be name:port".to_owned());
        }
        Self::parse(text, &Suffixes::all()).map_err(|e| e.to_string())
    }

    /// Checks a host and port given separately (the transport header carries them so).
    ///
    /// # Errors
    /// As [`Target::parse`].
    pub fn from_parts(host: &str, port: u16, suffixes: &Suffixes) -> Result<Self, Error> {
        if port == 0 {
            return Err(Error::BadPort("0".to_owned()));
        }
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.is_empty() {
            return Err(Error::Empty);
        }
        if host.starts_with('[') || host.contains(':') {
            return Err(Error::IpLiteral);
        }
        if !is_dns_name(host) {
            return Err(Error::BadName);
        }
        let name = host.to_ascii_lowercase();
        if looks_like_ip(&name) {
            return Err(Error::IpLiteral);
        }
        if name == "localhost" || name.ends_with(".localhost") {
            return Err(Error::Localhost);
        }
        if !suffixes.allows(&name) {
            return Err(Error::NotAllowed);
        }
        Ok(Self {
            authority: Arc::from(format!("{name}:{port}")),
            name_len: name.len(),
            port,
        })
    }

    /// The DNS name, lower-case, without a trailing dot.
    pub fn name(&self) -> &str {
        &self.authority[..self.name_len]
    }

    /// `name:port`, shared (for metric labels, URIs and caches).
    pub fn authority(&self) -> &Arc<str> {
        &self.authority
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The authority as written in `Host` and `Forwarded: host=`: the name alone for port 80,
    /// else `name:port`.
    pub fn host_header(&self) -> &str {
        if self.port == 80 {
            self.name()
        } else {
            &self.authority
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.authority)
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({self})")
    }
}

/// Splits `host[:port]`; bracketed IPv6 keeps its brackets in the host.
fn split_port(authority: &str) -> Result<(&str, u16), Error> {
    if authority.is_empty() {
        return Err(Error::Empty);
    }
    let port_sep = if authority.starts_with('[') {
        // `[v6]` or `[v6]:port`: only a colon after the closing bracket separates a port.
        authority
            .find(']')
            .and_then(|close| authority[close..].find(':').map(|i| close + i))
    } else if authority.matches(':').count() > 1 {
        // An unbracketed IPv6 literal: no port to split.
        None
    } else {
        authority.rfind(':')
    };
    match port_sep {
        None => Ok((authority, 80)),
        Some(i) => Ok((&authority[..i], parse_port(&authority[i + 1..])?)),
    }
}

fn parse_port(s: &str) -> Result<u16, Error> {
    let bad = || Error::BadPort(s.chars().take(16).collect());
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match s.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(bad()),
    }
}

/// A DNS name of at most 253 bytes whose labels are 1..=63 bytes of `[A-Za-z0-9-]` (underscore
/// allowed, as in SRV-style names) not starting or ending with `-`.
fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            let bytes = label.as_bytes();
            !bytes.is_empty()
                && bytes.len() <= 63
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
                && bytes[0] != b'-'
                && bytes[bytes.len() - 1] != b'-'
        })
}

/// Whether a syntactically valid DNS name is really an IPv4 address in some notation: dotted
/// decimal, a single 32-bit number, octal (`0177.0.0.1`) or hex (`0x7f.1`). No real top-level
/// domain is numeric, so a numeric last label is enough to refuse.
fn looks_like_ip(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    let numeric = |label: &str| {
        label.bytes().all(|b| b.is_ascii_digit())
            || label
                .strip_prefix("0x")
                .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    numeric(last)
}

#[cfg(test)]
mod tests;
