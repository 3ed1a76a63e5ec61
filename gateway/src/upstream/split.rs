//! A configured traffic split: a target's requests (and opaque sessions) divided by weight over
//! backend targets, each with its own balancer — the same mechanism as a profile's
//! `dst_overrides`, for clusters without a control plane or to override it.
//!
//! Text form (flags, env): `TO:PORT*WEIGHT+TO:PORT*WEIGHT` (a weight of 1 when `*WEIGHT` is left
//! out). YAML: a list of `{to: NAME:PORT, weight: N}` maps or of the text form.

use std::fmt;

use crate::target::Target;

/// One backend of a split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Weighted {
    /// The backend target.
    pub to: Target,
    /// Its share relative to the others (0: none).
    pub weight: u32,
}

impl std::str::FromStr for Weighted {
    type Err = String;

    /// Parses `NAME:PORT[*WEIGHT]`.
    ///
    /// # Errors
    /// A target that is not `NAME:PORT` or a weight that is not a number.
    fn from_str(text: &str) -> Result<Self, String> {
        let (to, weight) = match text.trim().rsplit_once('*') {
            Some((to, weight)) => (
                to.trim(),
                weight
                    .trim()
                    .parse()
                    .map_err(|_| format!("weight {weight:?} is not a number"))?,
            ),
            None => (text.trim(), 1),
        };
        let to = Target::configured(to).map_err(|e| format!("split backend {to:?}: {e}"))?;
        Ok(Self { to, weight })
    }
}

impl fmt::Display for Weighted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}*{}", self.to, self.weight)
    }
}

/// Checks a whole split: at least one backend with a weight, no backend twice.
///
/// # Errors
/// What is wrong with it.
pub fn check(split: &[Weighted]) -> Result<(), String> {
    if split.iter().all(|b| b.weight == 0) {
        return Err("no backend has a weight".to_owned());
    }
    for (i, b) in split.iter().enumerate() {
        if split[..i].iter().any(|a| a.to == b.to) {
            return Err(format!("{} is named twice", b.to));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn backends_parse_with_and_without_weights() {
        let b: Weighted = "podinfo-v2.test.svc.cluster.local:9898*10".parse().unwrap();
        assert_eq!(b.to.to_string(), "podinfo-v2.test.svc.cluster.local:9898");
        assert_eq!(b.weight, 10);
        let b: Weighted = " web.ns.svc.cluster.local.:80 ".parse().unwrap();
        assert_eq!(
            (b.to.to_string().as_str(), b.weight),
            ("web.ns.svc.cluster.local:80", 1)
        );
        for (text, says) in [
            ("web.ns.svc.cluster.local", "must be name:port"),
            ("web.ns.svc.cluster.local:80*x", "not a number"),
            ("10.0.0.1:80*5", "IP address"),
            ("web.ns.svc.cluster.local:0*5", "port"),
        ] {
            let e = text.parse::<Weighted>().unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn a_split_needs_a_weight_and_distinct_backends() {
        let b = |t: &str| t.parse::<Weighted>().unwrap();
        assert!(
            check(&[
                b("a.ns.svc.cluster.local:80*0"),
                b("b.ns.svc.cluster.local:80*1")
            ])
            .is_ok()
        );
        let e = check(&[b("a.ns.svc.cluster.local:80*0")]).unwrap_err();
        assert!(e.contains("no backend has a weight"), "{e}");
        let e = check(&[
            b("a.ns.svc.cluster.local:80*1"),
            b("a.ns.svc.cluster.local:80*2"),
        ])
        .unwrap_err();
        assert!(e.contains("named twice"), "{e}");
    }

    proptest! {
        #[test]
        fn the_text_form_round_trips(name in "[a-z]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z]([a-z0-9-]{0,8}[a-z0-9])?){1,3}", port in 1u16.., weight in any::<u32>()) {
            let text = format!("{name}:{port}*{weight}");
            let parsed: Weighted = text.parse().unwrap();
            prop_assert_eq!(parsed.to_string(), text);
        }
    }
}
