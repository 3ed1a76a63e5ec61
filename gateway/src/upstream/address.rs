//! One endpoint as discovery describes it: where it listens and, for a meshed pod, what its proxy
//! needs — the identity to dial it as (mTLS, verified), a protocol hint and the proxy's inbound
//! port for opaque traffic. Static endpoints and (next) Linkerd's Destination API fill the same
//! type (`tls_identity`, `protocol_hint`, `opaque_transport.inbound_port`).
//!
//! Text form (flags, env, and YAML strings): `IP:PORT` for an unmeshed endpoint, else
//! `IP:PORT;identity=NAME;protocol=h2|http1|opaque;opaque_port=PORT;weight=N;authority_override=NAME:PORT`
//! (fields in any order).

use std::fmt;
use std::net::SocketAddr;

use identity::IdentityName;

use crate::target::{Suffixes, Target};

/// An endpoint: its address, and for a meshed pod its proxy's identity and hints.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    /// Where the service listens.
    pub addr: SocketAddr,
    /// A meshed pod's identity: dial it over mTLS (SNI = this name) and require its certificate
    /// to carry it. `None`: plaintext.
    pub identity: Option<IdentityName>,
    /// What the endpoint speaks, when known.
    pub hint: Option<Hint>,
    /// The pod proxy's inbound port: opaque traffic goes there with a transport header (the only
    /// way into a port its policy marks opaque). Needs `identity`.
    pub opaque_port: Option<u16>,
    /// Its share of the target's traffic relative to the other endpoints (discovery's weight;
    /// 1 when not given, never 0).
    pub weight: u32,
    /// The endpoint is another gateway (a mirror of a mirror): the transport header to it names
    /// this `name:port` instead of giving only the port. Needs `opaque_port`.
    pub authority_override: Option<Target>,
}

/// What an endpoint is known to speak (Linkerd's `protocol_hint`, or the operator's word).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hint {
    /// HTTP/2: HTTP/1 requests are sent as HTTP/2 (with `l5d-orig-proto` to a meshed pod).
    H2,
    /// HTTP/1 only: HTTP/2 requests are translated to HTTP/1.1.
    Http1,
    /// The port is opaque to its proxy: traffic goes through `opaque_port` when there is one.
    Opaque,
}

impl Hint {
    /// The name in configs: `h2`, `http1`, `opaque`.
    pub fn as_str(self) -> &'static str {
        match self {
            Hint::H2 => "h2",
            Hint::Http1 => "http1",
            Hint::Opaque => "opaque",
        }
    }
}

impl std::str::FromStr for Hint {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "h2" => Ok(Hint::H2),
            "http1" => Ok(Hint::Http1),
            "opaque" => Ok(Hint::Opaque),
            other => Err(format!(
                "protocol {other:?} is not one of h2, http1, opaque"
            )),
        }
    }
}

impl Address {
    /// A plaintext endpoint at `addr` with no hints.
    pub fn plain(addr: SocketAddr) -> Self {
        Self {
            addr,
            identity: None,
            hint: None,
            opaque_port: None,
            weight: 1,
            authority_override: None,
        }
    }

    /// A meshed endpoint at `addr` whose proxy has `identity`.
    pub fn meshed(addr: SocketAddr, identity: IdentityName) -> Self {
        Self {
            identity: Some(identity),
            ..Self::plain(addr)
        }
    }

    /// Checks that the fields make sense together.
    ///
    /// # Errors
    /// An `opaque_port` without an identity (the pod proxy's inbound port requires mTLS), or
    /// port 0.
    pub fn check(&self) -> Result<(), String> {
        if self.addr.port() == 0 {
            return Err(format!("{}: port 0", self.addr));
        }
        match (self.opaque_port, &self.identity) {
            (Some(0), _) => Err(format!("{}: opaque_port 0", self.addr)),
            (Some(_), None) => Err(format!(
                "{}: opaque_port needs an identity (a pod proxy's inbound port requires mTLS)",
                self.addr
            )),
            _ if self.weight == 0 => Err(format!("{}: weight 0", self.addr)),
            _ if self.authority_override.is_some() && self.opaque_port.is_none() => Err(format!(
                "{}: authority_override needs opaque_port (it is sent in a transport header)",
                self.addr
            )),
            _ => Ok(()),
        }
    }

    /// Sets one field by its config name.
    ///
    /// # Errors
    /// An unknown field or a bad value.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "identity" => {
                let name = IdentityName::from_dns(value)
                    .map_err(|e| format!("identity {value:?} is not an identity: {e}"))?;
                self.identity = Some(name);
            }
            "protocol" => self.hint = Some(value.parse()?),
            "opaque_port" => {
                let port = value
                    .parse()
                    .map_err(|_| format!("opaque_port {value:?} is not a port"))?;
                self.opaque_port = Some(port);
            }
            "weight" => {
                self.weight = value
                    .parse()
                    .map_err(|_| format!("weight {value:?} is not a number"))?;
            }
            "authority_override" => {
                let target = Target::parse(value, &Suffixes::all())
                    .map_err(|e| format!("authority_override {value:?}: {e}"))?;
                self.authority_override = Some(target);
            }
            other => {
                return Err(format!(
                    "unknown endpoint field {other:?} (addr, identity, protocol, opaque_port, \
                     weight, authority_override)"
                ));
            }
        }
        Ok(())
    }

    /// Whether only the address is set (written as a bare `IP:PORT`).
    pub fn is_plain(&self) -> bool {
        self.identity.is_none()
            && self.hint.is_none()
            && self.opaque_port.is_none()
            && self.weight == 1
            && self.authority_override.is_none()
    }
}

impl std::str::FromStr for Address {
    type Err = String;

    /// Parses the text form (see the module docs).
    ///
    /// # Errors
    /// A bad address, an unknown field, a bad identity, hint or port, or fields that do not go
    /// together.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut fields = text.split(';').map(str::trim);
        let addr = fields.next().unwrap_or_default();
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP:PORT address"))?;
        let mut address = Address::plain(addr);
        for field in fields.filter(|f| !f.is_empty()) {
            let (key, value) = field
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| format!("{field:?} is not key=value"))?;
            address.set(key, value)?;
        }
        address.check()?;
        Ok(address)
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Self {
        Self::plain(addr)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr)?;
        if let Some(identity) = &self.identity {
            write!(f, ";identity={identity}")?;
        }
        if let Some(hint) = self.hint {
            write!(f, ";protocol={}", hint.as_str())?;
        }
        if let Some(port) = self.opaque_port {
            write!(f, ";opaque_port={port}")?;
        }
        if self.weight != 1 {
            write!(f, ";weight={}", self.weight)?;
        }
        if let Some(authority) = &self.authority_override {
            write!(f, ";authority_override={authority}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    const POD: &str = "podinfo.test.serviceaccount.identity.linkerd.cluster.local";

    #[test]
    fn a_bare_address_is_an_unmeshed_endpoint() {
        let a = Address::from_str("10.0.0.12:9898").unwrap();
        assert_eq!(a, Address::plain("10.0.0.12:9898".parse().unwrap()));
        assert!(a.is_plain());
        assert_eq!(a.to_string(), "10.0.0.12:9898");
    }

    #[test]
    fn a_meshed_endpoint_carries_identity_hint_and_inbound_port() {
        let a = Address::from_str(&format!(
            "10.0.0.13:9898; identity={POD};protocol=h2;opaque_port=4143"
        ))
        .unwrap();
        assert_eq!(a.identity.as_ref().map(|i| i.as_str()), Some(POD));
        assert_eq!(a.hint, Some(Hint::H2));
        assert_eq!(a.opaque_port, Some(4143));
        assert_eq!(Address::from_str(&a.to_string()).unwrap(), a);
    }

    #[test]
    fn bad_fields_are_named() {
        for (text, says) in [
            ("nowhere", "not an IP:PORT"),
            ("10.0.0.1:80;protocol=h3", "h3"),
            (
                "10.0.0.1:80;colour=blue",
                "unknown endpoint field \"colour\"",
            ),
            ("10.0.0.1:80;opaque_port=4143", "needs an identity"),
            ("10.0.0.1:80;identity=a b", "not an identity"),
            ("10.0.0.1:80;identity", "not key=value"),
            ("10.0.0.1:0", "port 0"),
            ("10.0.0.1:80;weight=0", "weight 0"),
            ("10.0.0.1:80;weight=x", "not a number"),
            (
                "10.0.0.1:80;identity=p.ns.serviceaccount.identity.linkerd.cluster.local;\
                 authority_override=a.b:80",
                "needs opaque_port",
            ),
        ] {
            let e = Address::from_str(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    proptest! {
        #[test]
        fn the_text_form_round_trips(
            ip in any::<[u8; 4]>(), port in 1u16.., meshed in any::<bool>(),
            hint in proptest::option::of(prop_oneof![Just(Hint::H2), Just(Hint::Http1), Just(Hint::Opaque)]),
            inbound in proptest::option::of(1u16..), weight in 1u32..,
            chained in any::<bool>(),
        ) {
            let mut a = Address::plain(SocketAddr::from((ip, port)));
            if meshed {
                a.identity = Some(IdentityName::from_dns(POD).unwrap());
                a.opaque_port = inbound;
                if chained && inbound.is_some() {
                    a.authority_override =
                        Some(Target::parse("web.east.svc.cluster.local:80", &Suffixes::all()).unwrap());
                }
            }
            a.hint = hint;
            a.weight = weight;
            prop_assert_eq!(Address::from_str(&a.to_string()).unwrap(), a);
        }
    }
}
