//! Destination messages → the gateway's types: a `WeightedAddr` becomes an [`Address`] (its
//! identity, protocol hint, inbound port, weight and authority override).

use std::net::SocketAddr;

use identity::IdentityName;
use linkerd2_proxy_api::destination::protocol_hint::Protocol;
use linkerd2_proxy_api::destination::tls_identity::Strategy;
use linkerd2_proxy_api::destination::{TlsIdentity, WeightedAddr};
use linkerd2_proxy_api::net::TcpAddress;

use crate::target::{Suffixes, Target};
use crate::upstream::{Address, Hint};

/// The endpoint `weighted` describes.
///
/// # Errors
/// No or a bad address, an identity that is not a name, or fields that do not go together (an
/// inbound port without an identity): the endpoint is left out, and the caller logs why.
pub fn address(weighted: &WeightedAddr) -> Result<Address, String> {
    let addr = socket_addr(weighted.addr)?;
    let mut address = Address::plain(addr);
    // Linkerd sends 10 000 for every pod; 0 means unset.
    address.weight = weighted.weight.max(1);
    if let Some(tls) = &weighted.tls_identity {
        address.identity = Some(identity(tls).map_err(|e| format!("{addr}: {e}"))?);
    }
    if let Some(hint) = &weighted.protocol_hint {
        address.hint = match hint.protocol {
            Some(Protocol::H2(_)) => Some(Hint::H2),
            Some(Protocol::Opaque(_)) => Some(Hint::Opaque),
            None => None,
        };
        if let Some(transport) = hint.opaque_transport {
            let port = u16::try_from(transport.inbound_port)
                .map_err(|_| format!("{addr}: inbound port {}", transport.inbound_port))?;
            address.opaque_port = Some(port);
        }
    }
    if let Some(over) = &weighted.authority_override {
        let target = Target::parse(&over.authority_override, &Suffixes::all()).map_err(|e| {
            format!(
                "{addr}: authority_override {:?}: {e}",
                over.authority_override
            )
        })?;
        address.authority_override = Some(target);
    }
    address.check()?;
    Ok(address)
}

/// A `TcpAddress` as a socket address.
///
/// # Errors
/// Missing, or not an IPv4/IPv6 address and port.
pub fn socket_addr(addr: Option<TcpAddress>) -> Result<SocketAddr, String> {
    let addr = addr.ok_or("an endpoint without an address")?;
    SocketAddr::try_from(addr).map_err(|e| format!("a bad endpoint address: {e}"))
}

/// The identity to dial an endpoint as: its DNS-like identity, or for a URI (SPIFFE) identity
/// the DNS-like server name it also carries.
fn identity(tls: &TlsIdentity) -> Result<IdentityName, String> {
    let name = match (&tls.strategy, &tls.server_name) {
        (Some(Strategy::DnsLikeIdentity(dns)), _) => &dns.name,
        (_, Some(server)) => &server.name,
        (Some(Strategy::UriLikeIdentity(uri)), None) => {
            return Err(format!("URI identity {:?} without a server name", uri.uri));
        }
        (None, None) => return Err("a TLS identity without a name".to_owned()),
    };
    IdentityName::from_dns(name).map_err(|e| format!("identity {name:?} is not a name: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use linkerd2_proxy_api::destination::{
        AuthorityOverride, ProtocolHint, protocol_hint, tls_identity,
    };

    const POD: &str = "web.ns.serviceaccount.identity.linkerd.cluster.local";

    fn weighted(addr: &str) -> WeightedAddr {
        WeightedAddr {
            addr: Some(addr.parse::<SocketAddr>().unwrap().into()),
            weight: 10_000,
            ..Default::default()
        }
    }

    fn tls(name: &str) -> TlsIdentity {
        TlsIdentity {
            strategy: Some(Strategy::DnsLikeIdentity(tls_identity::DnsLikeIdentity {
                name: name.to_owned(),
            })),
            server_name: None,
        }
    }

    #[test]
    fn an_endpoint_without_tls_is_plaintext() {
        let a = address(&weighted("10.1.0.5:8080")).unwrap();
        assert_eq!(a.addr, "10.1.0.5:8080".parse().unwrap());
        assert_eq!((a.identity, a.hint, a.opaque_port), (None, None, None));
        assert_eq!(a.weight, 10_000);
    }

    #[test]
    fn identity_hint_and_inbound_port_make_a_meshed_endpoint() {
        let mut w = weighted("[fd00::5]:8080");
        w.tls_identity = Some(tls(POD));
        w.protocol_hint = Some(ProtocolHint {
            protocol: Some(Protocol::H2(protocol_hint::H2 {})),
            opaque_transport: Some(protocol_hint::OpaqueTransport { inbound_port: 4143 }),
        });
        w.authority_override = Some(AuthorityOverride {
            authority_override: "web.ns.svc.cluster.local.:8080".to_owned(),
        });
        let a = address(&w).unwrap();
        assert_eq!(a.identity.unwrap().as_str(), POD);
        assert_eq!(a.hint, Some(Hint::H2));
        assert_eq!(a.opaque_port, Some(4143));
        assert_eq!(
            &**a.authority_override.unwrap().authority(),
            "web.ns.svc.cluster.local:8080",
            "the trailing dot goes"
        );
    }

    #[test]
    fn a_spiffe_identity_dials_its_server_name() {
        let mut w = weighted("10.1.0.5:8080");
        w.tls_identity = Some(TlsIdentity {
            strategy: Some(Strategy::UriLikeIdentity(tls_identity::UriLikeIdentity {
                uri: "spiffe://cluster.local/ns/ns/sa/web".to_owned(),
            })),
            server_name: Some(tls_identity::DnsLikeIdentity {
                name: POD.to_owned(),
            }),
        });
        assert_eq!(address(&w).unwrap().identity.unwrap().as_str(), POD);
    }

    #[test]
    fn unusable_endpoints_say_why() {
        let mut no_addr = weighted("10.1.0.5:80");
        no_addr.addr = None;
        let mut plaintext_inbound = weighted("10.1.0.5:80");
        plaintext_inbound.protocol_hint = Some(ProtocolHint {
            protocol: None,
            opaque_transport: Some(protocol_hint::OpaqueTransport { inbound_port: 4143 }),
        });
        let mut bad_name = weighted("10.1.0.5:80");
        bad_name.tls_identity = Some(tls("not a name"));
        let mut big_port = weighted("10.1.0.5:80");
        big_port.tls_identity = Some(tls(POD));
        big_port.protocol_hint = Some(ProtocolHint {
            protocol: None,
            opaque_transport: Some(protocol_hint::OpaqueTransport {
                inbound_port: 70_000,
            }),
        });
        for (w, says) in [
            (no_addr, "without an address"),
            (plaintext_inbound, "needs an identity"),
            (bad_name, "not a name"),
            (big_port, "inbound port 70000"),
        ] {
            let e = address(&w).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn whatever_the_controller_sends_an_accepted_endpoint_is_consistent(
            ip in proptest::prelude::any::<[u8; 4]>(), port in 0u32..70_000,
            weight in proptest::prelude::any::<u32>(),
            identity in proptest::option::of("[a-z0-9.-]{0,40}"),
            h2 in proptest::prelude::any::<bool>(),
            inbound in proptest::option::of(0u32..70_000),
            over in proptest::option::of("[a-z0-9.:-]{0,30}"),
        ) {
            let mut w = WeightedAddr {
                addr: Some(linkerd2_proxy_api::net::TcpAddress {
                    ip: Some(std::net::IpAddr::from(ip).into()),
                    port,
                }),
                weight,
                ..Default::default()
            };
            w.tls_identity = identity.map(|name| tls(&name));
            w.protocol_hint = Some(ProtocolHint {
                protocol: h2.then_some(Protocol::H2(protocol_hint::H2 {})),
                opaque_transport: inbound.map(|inbound_port| protocol_hint::OpaqueTransport { inbound_port }),
            });
            w.authority_override = over.map(|authority_override| AuthorityOverride { authority_override });
            if let Ok(a) = address(&w) {
                proptest::prop_assert!(a.check().is_ok());
                proptest::prop_assert!(a.weight >= 1);
                proptest::prop_assert_eq!(a.to_string().parse::<Address>(), Ok(a));
            }
        }
    }
}
