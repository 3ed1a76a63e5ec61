//! Failover: a target's ordered fallbacks, used while its primary (its split or profile's choice,
//! else its own endpoints) cannot serve — no endpoints, or every endpoint ejected after failed
//! connects. A fallback is another local target, or another cluster's gateway reached exactly as
//! a Linkerd proxy reaches one: mTLS as this gateway's identity to the gateway's address (SNI and
//! verified identity = the gateway's), ALPN `transport.l5d.io/v1`, a transport header naming the
//! target.
//!
//! Traffic goes back to the primary once it has served (had endpoints in service) for the whole
//! hold-down, so a primary that comes and goes does not flap traffic. While failed over, an
//! ejected primary endpoint whose backoff ran out is probed with a connect in the background:
//! nothing else would send it traffic to find out that it is back.
//!
//! A request never fails over to a gateway it came through: neither the caller's identity nor
//! one named `by=` in its `Forwarded` headers (two clusters failing over to each other would
//! otherwise pass a request back and forth).
//!
//! Text form (flags, env): `NAME:PORT` for a local target, `gateway=IP:PORT;identity=NAME` (and
//! `;target=NAME:PORT` to name another target than the failed one) for a gateway; a list joined by
//! `+`. YAML: a list of those strings or of `{to: NAME:PORT}` / `{gateway, identity, target}` maps.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use identity::IdentityName;
use tokio::time::Instant;

use super::Address;
use super::balance::Balancer;
use crate::target::Target;

/// One fallback as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// Another target of this cluster.
    Local(Target),
    /// Another cluster's gateway.
    Gateway {
        /// Its address (its port 4143).
        addr: SocketAddr,
        /// Its identity: dialled as SNI, required of its certificate.
        identity: IdentityName,
        /// What its transport header names (by default the failed target itself).
        target: Option<Target>,
    },
}

impl Fallback {
    /// The endpoint a gateway fallback is, for a request to `target`.
    pub fn gateway_address(addr: SocketAddr, identity: &IdentityName, target: &Target) -> Address {
        Address {
            opaque_port: Some(addr.port()),
            authority_override: Some(target.clone()),
            ..Address::meshed(addr, identity.clone())
        }
    }

    /// How it shows in logs and metrics: the target, or `gateway:<addr>`.
    pub fn label(&self) -> String {
        match self {
            Fallback::Local(target) => target.to_string(),
            Fallback::Gateway { addr, .. } => format!("gateway:{addr}"),
        }
    }
}

impl std::str::FromStr for Fallback {
    type Err = String;

    /// Parses `NAME:PORT` or `gateway=IP:PORT;identity=NAME[;target=NAME:PORT]`.
    ///
    /// # Errors
    /// What is wrong, naming the text.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if !text.starts_with("gateway=") {
            return Target::configured(text)
                .map(Fallback::Local)
                .map_err(|e| format!("fallback {text:?}: {e}"));
        }
        let (mut addr, mut identity, mut target) = (None, None, None);
        for field in text.split(';').map(str::trim).filter(|f| !f.is_empty()) {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| format!("fallback field {field:?} is not key=value"))?;
            match key.trim() {
                "gateway" => {
                    addr = Some(value.trim().parse::<SocketAddr>().map_err(|_| {
                        format!("fallback gateway {value:?} is not an IP:PORT address")
                    })?);
                }
                "identity" => {
                    identity = Some(IdentityName::from_dns(value.trim()).map_err(|e| {
                        format!("fallback identity {value:?} is not an identity: {e}")
                    })?);
                }
                "target" => {
                    target = Some(
                        Target::configured(value)
                            .map_err(|e| format!("fallback target {value:?}: {e}"))?,
                    );
                }
                other => {
                    return Err(format!(
                        "fallback field {other:?} is not one of gateway, identity, target"
                    ));
                }
            }
        }
        let addr = addr.ok_or("a gateway fallback needs gateway=IP:PORT")?;
        if addr.port() == 0 {
            return Err(format!("fallback gateway {addr}: port 0"));
        }
        let identity = identity.ok_or_else(|| {
            format!("gateway fallback {addr} needs identity=NAME (the gateway's identity)")
        })?;
        Ok(Fallback::Gateway {
            addr,
            identity,
            target,
        })
    }
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fallback::Local(target) => write!(f, "{target}"),
            Fallback::Gateway {
                addr,
                identity,
                target,
            } => {
                write!(f, "gateway={addr};identity={}", identity.as_str())?;
                match target {
                    Some(target) => write!(f, ";target={target}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Checks a target's fallback list: not empty, not the target itself, nothing twice.
///
/// # Errors
/// What is wrong with it.
pub fn check(target: Option<&str>, fallbacks: &[Fallback]) -> Result<(), String> {
    if fallbacks.is_empty() {
        return Err("no fallback".to_owned());
    }
    for (i, f) in fallbacks.iter().enumerate() {
        if let (Fallback::Local(to), Some(target)) = (f, target)
            && to
                .authority()
                .eq_ignore_ascii_case(target.trim_end_matches('.'))
        {
            return Err(format!("{to} falls over to itself"));
        }
        if fallbacks[..i].contains(f) {
            return Err(format!("{f} is named twice"));
        }
    }
    Ok(())
}

/// A change of where a target's traffic goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// From the primary or a fallback that stopped serving to fallback `to` (1-based).
    Failover {
        /// Where traffic went from (0: the primary).
        from: usize,
        /// The fallback it goes to now.
        to: usize,
    },
    /// Back to the primary after it served for the whole hold-down.
    Failback {
        /// The fallback traffic left.
        from: usize,
    },
}

/// Where a target's traffic goes: index 0 is the primary, `i` the i-th fallback.
#[derive(Debug, Default)]
pub struct State {
    active: usize,
    /// Since when the primary has served without a break while a fallback was active.
    healthy_since: Option<Instant>,
}

impl State {
    /// Which choice is active.
    pub fn active(&self) -> usize {
        self.active
    }

    /// Moves the active choice on what `serving` says of each (0..=`fallbacks`) at `now`, and
    /// says when it changed. The primary is taken back after it served for `hold_down` in a row.
    pub fn advance(
        &mut self,
        now: Instant,
        hold_down: Duration,
        fallbacks: usize,
        serving: &mut dyn FnMut(usize) -> bool,
    ) -> Option<Event> {
        if self.active == 0 {
            if serving(0) {
                return None;
            }
            let to = (1..=fallbacks).find(|&i| serving(i))?;
            self.active = to;
            self.healthy_since = None;
            return Some(Event::Failover { from: 0, to });
        }
        if serving(0) {
            let since = *self.healthy_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= hold_down {
                let from = self.active;
                self.active = 0;
                self.healthy_since = None;
                return Some(Event::Failback { from });
            }
        } else {
            self.healthy_since = None;
        }
        if serving(self.active) {
            return None;
        }
        // The active fallback stopped serving too: the first other one that serves.
        let from = self.active;
        let to = (1..=fallbacks).find(|&i| i != from && serving(i))?;
        self.active = to;
        Some(Event::Failover { from, to })
    }
}

/// The probe slot of a failover, held by the running probe.
pub(super) struct Probing(Arc<AtomicBool>);

impl Drop for Probing {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// One target's failover at run time: its fallbacks' balancers and where traffic goes now.
pub struct Failover {
    /// The fallbacks, in order, each with its balancer (a gateway's: its one endpoint).
    pub(super) fallbacks: Vec<(Fallback, Arc<Balancer>)>,
    /// Time the primary must serve before traffic goes back to it.
    pub(super) hold_down: Duration,
    pub(super) state: Mutex<State>,
    /// A probe of the primary's ejected endpoints is running.
    probing: Arc<AtomicBool>,
}

impl Failover {
    /// Fallbacks with their balancers, starting on the primary.
    pub(super) fn new(fallbacks: Vec<(Fallback, Arc<Balancer>)>, hold_down: Duration) -> Self {
        Self {
            fallbacks,
            hold_down,
            state: Mutex::new(State::default()),
            probing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Which choice is active (0: the primary).
    pub(super) fn active(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .active()
    }

    /// Takes the probe slot (given back when the guard drops); `None` while a probe runs.
    pub(super) fn start_probe(&self) -> Option<Probing> {
        (!self.probing.swap(true, Ordering::AcqRel)).then(|| Probing(self.probing.clone()))
    }

    /// Whether choice `i` (≥ 1) is a gateway a request came through (`came_through`: says so of
    /// an identity).
    pub(super) fn loops(&self, i: usize, came_through: &(dyn Fn(&str) -> bool + Sync)) -> bool {
        matches!(
            self.fallbacks.get(i.wrapping_sub(1)),
            Some((Fallback::Gateway { identity, .. }, _)) if came_through(identity.as_str())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fallbacks_parse_as_local_targets_or_gateways() {
        let f: Fallback = "podinfo-backup.test.svc.cluster.local:9898"
            .parse()
            .unwrap();
        assert_eq!(f.label(), "podinfo-backup.test.svc.cluster.local:9898");
        let f: Fallback = "gateway=10.0.0.7:4143; identity=linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local"
            .parse()
            .unwrap();
        let Fallback::Gateway {
            addr,
            identity,
            target,
        } = &f
        else {
            panic!("{f:?}");
        };
        assert_eq!(addr.to_string(), "10.0.0.7:4143");
        assert!(identity.as_str().starts_with("linkerd-gateway."));
        assert!(target.is_none());
        assert_eq!(f.label(), "gateway:10.0.0.7:4143");
        for (text, says) in [
            ("web.ns.svc.cluster.local", "must be name:port"),
            ("10.0.0.1:80", "IP address"),
            ("gateway=10.0.0.1:4143", "needs identity"),
            ("gateway=gw.example:4143;identity=a.b", "not an IP:PORT"),
            ("gateway=10.0.0.1:0;identity=a.b", "port 0"),
            ("gateway=10.0.0.1:4143;identity=a.b;tls=yes", "not one of"),
            (
                "gateway=10.0.0.1:4143;identity=a.b;target=x",
                "fallback target",
            ),
        ] {
            let e = text.parse::<Fallback>().unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn a_gateway_fallback_is_dialled_like_a_linkerd_proxy_reaches_a_gateway() {
        let target = Target::configured("web.ns.svc.cluster.local:80").unwrap();
        let identity = IdentityName::from_dns("gw.west.example").unwrap();
        let a = Fallback::gateway_address("10.0.0.7:4143".parse().unwrap(), &identity, &target);
        assert_eq!(a.identity.as_ref(), Some(&identity));
        assert_eq!(a.opaque_port, Some(4143));
        assert_eq!(a.authority_override.as_ref(), Some(&target));
        assert!(a.check().is_ok(), "{:?}", a.check());
    }

    #[test]
    fn a_fallback_list_is_checked() {
        let f = |t: &str| t.parse::<Fallback>().unwrap();
        let target = Some("web.ns.svc.cluster.local:80");
        assert!(check(target, &[f("backup.ns.svc.cluster.local:80")]).is_ok());
        assert!(check(target, &[]).unwrap_err().contains("no fallback"));
        let e = check(target, &[f("web.ns.svc.cluster.local:80")]).unwrap_err();
        assert!(e.contains("itself"), "{e}");
        let e = check(
            target,
            &[
                f("backup.ns.svc.cluster.local:80"),
                f("backup.ns.svc.cluster.local:80"),
            ],
        )
        .unwrap_err();
        assert!(e.contains("named twice"), "{e}");
    }

    /// Runs `advance` with the serving flags in `serving` (index 0: the primary).
    fn step(state: &mut State, now: Instant, serving: &[bool]) -> Option<Event> {
        state.advance(now, Duration::from_secs(10), serving.len() - 1, &mut |i| {
            serving[i]
        })
    }

    #[test]
    fn fails_over_in_order_and_back_only_after_the_hold_down() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut state = State::default();
        assert_eq!(step(&mut state, t0, &[true, true, true]), None);
        assert_eq!(state.active(), 0);
        // The primary stops: the first fallback that serves.
        assert_eq!(
            step(&mut state, t0, &[false, false, true]),
            Some(Event::Failover { from: 0, to: 2 })
        );
        // Nothing serves: traffic stays where it is.
        assert_eq!(step(&mut state, t0 + s(1), &[false, false, false]), None);
        assert_eq!(state.active(), 2);
        // The primary is back, but not for long enough.
        assert_eq!(step(&mut state, t0 + s(2), &[true, true, true]), None);
        assert_eq!(step(&mut state, t0 + s(11), &[true, true, true]), None);
        // A break restarts the hold-down.
        assert_eq!(step(&mut state, t0 + s(12), &[false, true, true]), None);
        assert_eq!(step(&mut state, t0 + s(13), &[true, true, true]), None);
        assert_eq!(step(&mut state, t0 + s(22), &[true, true, true]), None);
        assert_eq!(state.active(), 2);
        assert_eq!(
            step(&mut state, t0 + s(23), &[true, true, true]),
            Some(Event::Failback { from: 2 })
        );
        assert_eq!(state.active(), 0);
    }

    #[test]
    fn a_failing_fallback_hands_over_to_the_next() {
        let t0 = Instant::now();
        let mut state = State::default();
        assert_eq!(
            step(&mut state, t0, &[false, true, true]),
            Some(Event::Failover { from: 0, to: 1 })
        );
        assert_eq!(
            step(&mut state, t0, &[false, false, true]),
            Some(Event::Failover { from: 1, to: 2 })
        );
        assert_eq!(
            step(&mut state, t0, &[false, true, false]),
            Some(Event::Failover { from: 2, to: 1 })
        );
    }

    proptest! {
        #[test]
        fn the_text_form_round_trips(a in any::<[u8; 4]>(), port in 1u16.., with_target in any::<bool>()) {
            let mut text = format!(
                "gateway={}:{port};identity=gw.west.example",
                std::net::Ipv4Addr::from(a)
            );
            if with_target {
                text.push_str(";target=web.ns.svc.cluster.local:80");
            }
            let parsed: Fallback = text.parse().unwrap();
            prop_assert_eq!(parsed.to_string(), text);
        }

        #[test]
        fn the_active_choice_always_exists(steps in proptest::collection::vec((any::<[bool; 3]>(), 0u64..20), 1..40)) {
            let mut state = State::default();
            let mut now = Instant::now();
            for (serving, later) in steps {
                now += Duration::from_secs(later);
                let before = state.active();
                let event = step(&mut state, now, &serving);
                prop_assert!(state.active() <= 2);
                if event.is_none() {
                    prop_assert_eq!(state.active(), before);
                }
                if let Some(Event::Failover { to, .. }) = event {
                    prop_assert!(serving[to]);
                }
            }
        }
    }
}
