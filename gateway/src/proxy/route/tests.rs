use proptest::prelude::*;

use super::*;

const GATEWAY: &str = "gateway.mc.serviceaccount.identity.linkerd.cluster.local";
const CALLER: &str = "web.east.serviceaccount.identity.linkerd.cluster.local";

fn id(s: &str) -> IdentityName {
    s.parse().unwrap()
}

struct World {
    gateway: IdentityName,
    suffixes: Suffixes,
    policy: Policy,
}

impl World {
    fn new(policy: &str) -> Self {
        Self {
            gateway: id(GATEWAY),
            suffixes: Suffixes::default(),
            policy: if policy.is_empty() {
                Policy::default()
            } else {
                Policy::from_yaml("policy", policy).unwrap()
            },
        }
    }

    fn decide(
        &self,
        peer: &str,
        source: Source<'_>,
        forwarded: &[&str],
    ) -> Result<Decision, Error> {
        let snapshot = Snapshot {
            gateway: &self.gateway,
            suffixes: &self.suffixes,
            policy: &self.policy,
        };
        decide(
            &id(peer),
            source,
            forwarded.iter().map(|f| f.as_bytes()),
            &snapshot,
        )
    }
}

const DENY_BUT_WEB: &str = r#"
default: deny
rules:
  - name: web-only
    clients: ["web.east.serviceaccount.identity.linkerd.cluster.local"]
    targets: [{service: web}]
"#;

#[test]
fn decide_allows_an_authenticated_caller_by_default() {
    let world = World::new("");
    let decision = world
        .decide(
            CALLER,
            Source::Authority("web.ns.svc.cluster.local:8080"),
            &[],
        )
        .unwrap();
    assert_eq!(
        &**decision.target.authority(),
        "web.ns.svc.cluster.local:8080"
    );
    assert_eq!(decision.allowed, Allowed::default());
    assert!(!decision.audit_denied);
}

#[test]
fn decide_refuses_the_gateway_itself_and_its_own_forwarded_element() {
    let world = World::new("");
    let source = Source::Authority("web.ns.svc.cluster.local:80");
    assert_eq!(world.decide(GATEWAY, source, &[]), Err(Error::Loop));
    let looped = format!("by=other;for=x, by={GATEWAY};for={CALLER}");
    assert_eq!(world.decide(CALLER, source, &[&looped]), Err(Error::Loop));
    let elsewhere = "by=other.gateway;for=x";
    assert!(world.decide(CALLER, source, &[elsewhere]).is_ok());
}

#[test]
fn decide_reads_each_target_source() {
    let world = World::new("");
    let header = Target::parse("a.ns.svc.cluster.local:1", &world.suffixes).unwrap();
    let cases = [
        (Source::Checked(Ok(&header)), "a.ns.svc.cluster.local:1"),
        (
            Source::Override(b"B.ns.svc.cluster.local.:2"),
            "b.ns.svc.cluster.local:2",
        ),
        (
            Source::Authority("c.ns.svc.cluster.local:3"),
            "c.ns.svc.cluster.local:3",
        ),
        (
            Source::Host(b"d.ns.svc.cluster.local"),
            "d.ns.svc.cluster.local:80",
        ),
    ];
    for (source, expected) in cases {
        let decision = world.decide(CALLER, source, &[]).unwrap();
        assert_eq!(&**decision.target.authority(), expected, "{source:?}");
    }
    assert_eq!(
        world.decide(CALLER, Source::Nothing, &[]),
        Err(Error::NoTarget)
    );
    assert_eq!(
        world.decide(
            CALLER,
            Source::Override(b"\xff.ns.svc.cluster.local:1"),
            &[]
        ),
        Err(Error::TargetNotText)
    );
    let refused = target::Error::NotAllowed;
    assert_eq!(
        world.decide(CALLER, Source::Checked(Err(&refused)), &[]),
        Err(Error::Target(target::Error::NotAllowed))
    );
}

#[test]
fn decide_refuses_names_outside_the_allowlist_before_authorizing() {
    let world = World::new(DENY_BUT_WEB);
    for outside in ["evil.example.com:80", "127.0.0.1:80", "localhost:80"] {
        let result = world.decide(CALLER, Source::Authority(outside), &[]);
        assert!(
            matches!(result, Err(Error::Target(ref e)) if e.is_bad_domain()),
            "{outside}: {result:?}"
        );
    }
}

#[test]
fn decide_applies_the_policy_and_names_what_was_denied() {
    let world = World::new(DENY_BUT_WEB);
    let allowed = world
        .decide(
            CALLER,
            Source::Authority("web.ns.svc.cluster.local:80"),
            &[],
        )
        .unwrap();
    assert_eq!(allowed.allowed.kind, "rule");
    assert_eq!(&*allowed.allowed.name.0, "web-only");
    let denied = world
        .decide(
            CALLER,
            Source::Authority("db.ns.svc.cluster.local:5432"),
            &[],
        )
        .unwrap_err();
    assert_eq!(
        match &denied {
            Error::Unauthorized { target, .. } => Some(&**target.authority()),
            _ => None,
        },
        Some("db.ns.svc.cluster.local:5432")
    );
    let other = "api.east.serviceaccount.identity.linkerd.cluster.local";
    assert!(
        world
            .decide(other, Source::Authority("web.ns.svc.cluster.local:80"), &[])
            .is_err()
    );
}

#[test]
fn decide_lets_audit_mode_denials_through_marked() {
    let world = World::new(&format!("mode: audit\n{DENY_BUT_WEB}"));
    let decision = world
        .decide(
            CALLER,
            Source::Authority("db.ns.svc.cluster.local:5432"),
            &[],
        )
        .unwrap();
    assert!(decision.audit_denied);
    assert_eq!(decision.allowed.kind, "audit");
}

mod props {
    use super::*;

    fn label() -> impl Strategy<Value = String> {
        "[a-z]([a-z0-9-]{0,5}[a-z0-9])?"
    }

    proptest! {
        /// `decide` agrees with a naive model: loop by identity, then the allowlist (a DNS
        /// name under `svc.cluster.local`), then `Forwarded` by this gateway, then the policy
        /// (web-only for one caller).
        #[test]
        fn decide_matches_a_naive_model(
            service in label(),
            namespace in label(),
            port in 1u16..,
            outside in any::<bool>(),
            peer_is_gateway in any::<bool>(),
            peer_is_caller in any::<bool>(),
            looped in any::<bool>(),
        ) {
            let world = World::new(DENY_BUT_WEB);
            let domain = if outside { "example.com" } else { "svc.cluster.local" };
            let authority = format!("{service}.{namespace}.{domain}:{port}");
            let peer = match (peer_is_gateway, peer_is_caller) {
                (true, _) => GATEWAY,
                (false, true) => CALLER,
                (false, false) => "api.east.serviceaccount.identity.linkerd.cluster.local",
            };
            let forwarded = if looped { format!("by={GATEWAY}") } else { "by=x".to_owned() };
            let result = world.decide(peer, Source::Authority(&authority), &[&forwarded]);
            let expected = if peer_is_gateway {
                "loop"
            } else if outside {
                "bad domain"
            } else if looped {
                "loop"
            } else if peer_is_caller && service == "web" {
                "allowed"
            } else {
                "denied"
            };
            let got = match &result {
                Err(Error::Loop) => "loop",
                Err(Error::Target(e)) if e.is_bad_domain() => "bad domain",
                Err(Error::Unauthorized { .. }) => "denied",
                Ok(_) => "allowed",
                Err(other) => panic!("{authority}: unexpected {other:?}"),
            };
            prop_assert_eq!(got, expected, "{} from {}", authority, peer);
            if let Ok(decision) = result {
                prop_assert_eq!(&**decision.target.authority(), authority.as_str());
            }
        }

        /// Arbitrary header bytes never panic and never produce a target outside the allowlist.
        #[test]
        fn decide_never_accepts_outside_the_allowlist(value in proptest::collection::vec(any::<u8>(), 0..64)) {
            let world = World::new("");
            if let Ok(decision) = world.decide(CALLER, Source::Override(&value), &[]) {
                prop_assert!(world.suffixes.allows(decision.target.name()));
            }
        }
    }
}
