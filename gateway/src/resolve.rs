//! Name → endpoints: the static `endpoints` map first, else DNS (an FQDN query with a trailing
//! dot, so resolv.conf `ndots`/search never applies). Only names that passed the allowlist get here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::target::Target;

/// Why a target has no endpoints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The name resolved to nothing.
    #[error("no endpoints for {0}")]
    NoEndpoints(String),
    /// The resolver failed (NXDOMAIN, no server, …).
    #[error("resolve {name}: {reason}")]
    Dns {
        /// The target.
        name: String,
        /// The resolver's message.
        reason: String,
    },
}

/// The addresses of one target, shared by every caller.
pub type Endpoints = Arc<[SocketAddr]>;

/// Static endpoints of one name, per port.
type PortMap = Vec<(u16, Endpoints)>;

/// Resolves targets to socket addresses.
#[derive(Debug, Default)]
pub struct Resolver {
    statics: HashMap<String, PortMap>,
}

impl Resolver {
    /// A resolver with static endpoints for some targets; the rest go to DNS.
    pub fn new(statics: impl IntoIterator<Item = (Target, Vec<SocketAddr>)>) -> Self {
        let mut map: HashMap<String, PortMap> = HashMap::new();
        for (target, addrs) in statics {
            map.entry(target.name().to_owned())
                .or_default()
                .push((target.port(), addrs.into()));
        }
        Self { statics: map }
    }

    /// The endpoints of `name:port`.
    ///
    /// # Errors
    /// `NoEndpoints` or `Dns`. Cancel-safe.
    pub async fn resolve(&self, name: &str, port: u16) -> Result<Endpoints, Error> {
        if let Some(ports) = self.statics.get(name)
            && let Some((_, addrs)) = ports.iter().find(|(p, _)| *p == port)
        {
            return Ok(addrs.clone());
        }
        let fqdn = format!("{name}.");
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((fqdn.as_str(), port))
            .await
            .map_err(|e| Error::Dns {
                name: name.to_owned(),
                reason: e.to_string(),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(Error::NoEndpoints(format!("{name}:{port}")));
        }
        Ok(addrs.into())
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
        let resolver = Resolver::new([(target, vec![addr])]);
        assert_eq!(
            &*resolver
                .resolve("web.ns.svc.cluster.local", 80)
                .await
                .unwrap(),
            &[addr]
        );
    }
}
