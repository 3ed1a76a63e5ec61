//! [feature `testing`] A throw-away PKI for tests, benches and fuzzing: a root, an issuer and leaves
//! (valid, expired, not yet valid), plus a foreign root for "unknown CA" cases.

#![allow(clippy::expect_used)] // test helpers panic on a broken crypto provider, by design

use std::time::{Duration, SystemTime};

use crate::issue::{Ca, Issued, LeafSpec, Validity};
use crate::{Credentials, TrustAnchors};

const DAY: Duration = Duration::from_secs(86_400);

/// A root (trust anchor) and an issuer signed by it.
pub struct TestCa {
    root: Ca,
    issuer: Ca,
}

impl TestCa {
    /// A new PKI whose root is `root.<domain>` and issuer `identity.<domain>`.
    ///
    /// # Panics
    /// If rcgen fails, which only happens on a broken crypto provider.
    pub fn new(domain: &str) -> Self {
        let root = Ca::root(&format!("root.{domain}"), Validity::from_now(365 * DAY))
            .expect("root certificate");
        let issuer = root
            .issuer(&format!("identity.{domain}"), Validity::from_now(30 * DAY))
            .expect("issuer certificate");
        Self { root, issuer }
    }

    /// The trust anchors (the root only).
    pub fn anchors(&self) -> TrustAnchors {
        TrustAnchors::from_pem("test root", self.anchors_pem().as_bytes()).expect("test anchors")
    }

    /// The root certificate as PEM.
    pub fn anchors_pem(&self) -> String {
        self.root.cert_pem()
    }

    /// The root CA.
    pub fn root(&self) -> &Ca {
        &self.root
    }

    /// A leaf valid for one day, chained through the issuer.
    pub fn leaf(&self, identity: &str) -> Issued {
        self.leaf_with(identity, Validity::from_now(DAY))
    }

    /// A leaf with an explicit validity window.
    pub fn leaf_with(&self, identity: &str, validity: Validity) -> Issued {
        self.issuer
            .leaf(&LeafSpec {
                identity,
                spiffe: None,
                validity,
            })
            .expect("leaf certificate")
    }

    /// A leaf that expired an hour ago.
    pub fn expired_leaf(&self, identity: &str) -> Issued {
        let now = SystemTime::now();
        self.leaf_with(
            identity,
            Validity {
                not_before: now - DAY,
                not_after: now - Duration::from_secs(3600),
            },
        )
    }

    /// A leaf that becomes valid in an hour.
    pub fn future_leaf(&self, identity: &str) -> Issued {
        let now = SystemTime::now();
        self.leaf_with(
            identity,
            Validity {
                not_before: now + Duration::from_secs(3600),
                not_after: now + DAY,
            },
        )
    }

    /// Validated credentials for `identity`.
    pub fn credentials(&self, identity: &str) -> Credentials {
        self.leaf(identity)
            .credentials(&self.anchors())
            .expect("test credentials")
    }
}
