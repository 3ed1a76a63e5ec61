//! `IdentityName`: a peer identity in Linkerd's DNS form or as a URI (SPIFFE); parsing, no I/O.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// A mesh identity: the first DNS or URI SAN of a leaf certificate.
///
/// DNS form (Linkerd): `<sa>.<ns>.serviceaccount.identity.<linkerd-ns>.<trust-domain>`, stored
/// lower-case, no trailing dot. URI form: any `scheme://…` URI, typically `spiffe://…`.
/// Cloning is cheap (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityName(Arc<str>);

/// Why a string is not an identity name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty input.
    #[error("identity name is empty")]
    Empty,
    /// Longer than a DNS name may be.
    #[error("identity name is longer than 253 bytes")]
    TooLong,
    /// A DNS label is empty, longer than 63 bytes, or has a character outside `[a-z0-9-]`.
    #[error("identity name has an invalid DNS label {0:?}")]
    BadLabel(String),
    /// A URI identity with an empty or invalid scheme or body.
    #[error("identity URI {0:?} is malformed")]
    BadUri(String),
    /// A DNS name with a trailing dot (Linkerd skips such SANs).
    #[error("identity name {0:?} ends with a dot")]
    TrailingDot(String),
}

impl IdentityName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a URI identity (for example SPIFFE) rather than a DNS-form name.
    pub fn is_uri(&self) -> bool {
        self.0.contains("://")
    }

    /// Parses a DNS SAN value. Returns `Err` for names Linkerd would skip.
    ///
    /// # Errors
    /// Any [`NameError`] except `BadUri`.
    pub fn from_dns(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.ends_with('.') {
            return Err(NameError::TrailingDot(s.to_owned()));
        }
        if s.len() > 253 {
            return Err(NameError::TooLong);
        }
        for label in s.split('.') {
            if !is_dns_label(label) {
                return Err(NameError::BadLabel(label.to_owned()));
            }
        }
        Ok(Self(Arc::from(s.to_ascii_lowercase())))
    }

    /// Parses a URI SAN value (`scheme://rest`, no whitespace or control bytes).
    ///
    /// # Errors
    /// `Empty` or `BadUri`.
    pub fn from_uri(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        let bad = || NameError::BadUri(s.to_owned());
        let (scheme, rest) = s.split_once("://").ok_or_else(bad)?;
        let scheme_ok = scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !scheme_ok || rest.is_empty() || s.len() > 2048 {
            return Err(bad());
        }
        if s.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(bad());
        }
        Ok(Self(Arc::from(s)))
    }
}

/// Whether `label` is a DNS label of 1..=63 bytes of `[A-Za-z0-9-]` not starting or ending with `-`.
pub(crate) fn is_dns_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

impl FromStr for IdentityName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains("://") {
            Self::from_uri(s)
        } else {
            Self::from_dns(s)
        }
    }
}

impl fmt::Display for IdentityName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for IdentityName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityName({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linkerd_dns_identity_parses_lowercased() {
        let id: IdentityName = "Web.Default.serviceaccount.identity.linkerd.cluster.local"
            .parse()
            .unwrap();
        assert_eq!(
            id.as_str(),
            "web.default.serviceaccount.identity.linkerd.cluster.local"
        );
        assert!(!id.is_uri());
    }

    #[test]
    fn spiffe_uri_identity_parses() {
        let id: IdentityName = "spiffe://cluster.local/ns/default/sa/web".parse().unwrap();
        assert!(id.is_uri());
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/sa/web");
    }

    #[test]
    fn dns_identity_with_trailing_dot_is_rejected() {
        assert!(matches!(
            "a.b.".parse::<IdentityName>(),
            Err(NameError::TrailingDot(_))
        ));
    }

    #[test]
    fn bad_labels_are_rejected() {
        for bad in ["", "a..b", "-a.b", "a-.b", "a_b.c", "a b", &"x".repeat(64)] {
            assert!(bad.parse::<IdentityName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn malformed_uris_are_rejected() {
        for bad in [
            "://x",
            "spiffe://",
            "1x://a",
            "spiffe://a b",
            "spiffe://a\0",
        ] {
            assert!(bad.parse::<IdentityName>().is_err(), "{bad:?}");
        }
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn dns_identity_display_parse_roundtrip(labels in proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", 1..6)) {
                let s = labels.join(".");
                let id: IdentityName = s.parse().unwrap();
                let again: IdentityName = id.to_string().parse().unwrap();
                prop_assert_eq!(id, again);
            }

            #[test]
            fn spiffe_identity_display_parse_roundtrip(
                domain in "[a-z0-9]([a-z0-9-]{0,15}[a-z0-9])?(\\.[a-z0-9]{1,10}){0,3}",
                ns in "[a-z0-9-]{1,20}",
                sa in "[a-z0-9-]{1,20}",
            ) {
                let s = format!("spiffe://{domain}/ns/{ns}/sa/{sa}");
                let id: IdentityName = s.parse().unwrap();
                prop_assert!(id.is_uri());
                prop_assert_eq!(id.to_string(), s.clone());
                let again: IdentityName = id.to_string().parse().unwrap();
                prop_assert_eq!(id, again);
            }

            #[test]
            fn arbitrary_strings_never_panic(s in "\\PC{0,80}") {
                let _ = s.parse::<IdentityName>();
            }
        }
    }
}
