//! `Credentials`: the gateway's leaf, intermediates and private key, loaded from PEM and validated
//! (key matches, chain verifies to the anchors, identity present) before anything uses them.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Error, IdentityName, TrustAnchors, identity_of_cert, tls_config};

/// A validated leaf + chain + key.
#[derive(Debug)]
pub struct Credentials {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    identity: IdentityName,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl Clone for Credentials {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            identity: self.identity.clone(),
            not_before: self.not_before,
            not_after: self.not_after,
        }
    }
}

impl Credentials {
    /// Reads `cert` (leaf first, then intermediates) and `key` PEM files and validates them
    /// against `anchors` at the current time.
    ///
    /// # Errors
    /// Unreadable files, bad PEM, a key that does not match, no identity, or a chain that does not
    /// verify (including expiry).
    pub fn load(cert: &Path, key: &Path, anchors: &TrustAnchors) -> Result<Self, Error> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| Error::Read {
                path: p.to_owned(),
                source,
            })
        };
        let chain_pem = read(cert)?;
        let key_pem = read(key)?;
        Self::from_pem(
            &cert.display().to_string(),
            &chain_pem,
            &key.display().to_string(),
            &key_pem,
            anchors,
        )
    }

    /// Parses PEM text and validates it; see [`Credentials::load`].
    ///
    /// # Errors
    /// As [`Credentials::load`].
    pub fn from_pem(
        cert_what: &str,
        chain_pem: &[u8],
        key_what: &str,
        key_pem: &[u8],
        anchors: &TrustAnchors,
    ) -> Result<Self, Error> {
        Self::from_pem_at(
            cert_what,
            chain_pem,
            key_what,
            key_pem,
            anchors,
            SystemTime::now(),
        )
    }

    /// As [`Credentials::from_pem`], validated at time `now`.
    ///
    /// # Errors
    /// As [`Credentials::load`].
    pub fn from_pem_at(
        cert_what: &str,
        chain_pem: &[u8],
        key_what: &str,
        key_pem: &[u8],
        anchors: &TrustAnchors,
        now: SystemTime,
    ) -> Result<Self, Error> {
        let chain = crate::pem::read_pem(cert_what, chain_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| Error::Parse {
            what: key_what.to_owned(),
            reason: format!("no usable private key: {e}"),
        })?;
        Self::new(chain, key, anchors, now)
    }

    /// Validates DER material at time `now`.
    ///
    /// # Errors
    /// As [`Credentials::load`].
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        anchors: &TrustAnchors,
        now: SystemTime,
    ) -> Result<Self, Error> {
        let provider = tls_config::provider();
        let leaf = chain.first().ok_or(Error::NoPem {
            what: "certificate chain".to_owned(),
            kind: "CERTIFICATE",
        })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| Error::Parse {
            what: "leaf certificate".to_owned(),
            reason: e.to_string(),
        })?;
        check_key_matches(&provider, &key, parsed.public_key().raw)?;
        let identity = identity_of_cert(leaf).ok_or(Error::NoIdentity)?;
        crate::verify::verify_chain(&provider, &chain, anchors, now)?;
        let validity = parsed.validity();
        Ok(Self {
            not_before: unix_to_system(validity.not_before.timestamp()),
            not_after: unix_to_system(validity.not_after.timestamp()),
            chain,
            key,
            identity,
        })
    }

    /// The leaf followed by its intermediates.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The private key.
    pub fn key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }

    /// The identity named by the leaf (first DNS or URI SAN).
    pub fn identity(&self) -> &IdentityName {
        &self.identity
    }

    /// When the leaf starts being valid.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// When the leaf expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }
}

fn check_key_matches(
    provider: &CryptoProvider,
    key: &PrivateKeyDer<'static>,
    cert_spki: &[u8],
) -> Result<(), Error> {
    let signing = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| Error::Parse {
            what: "private key".to_owned(),
            reason: e.to_string(),
        })?;
    match signing.public_key() {
        Some(spki) if spki.as_ref() == cert_spki => Ok(()),
        Some(_) => Err(Error::KeyMismatch),
        // The provider cannot tell the public key: rustls checks again when it builds a config.
        None => Ok(()),
    }
}

fn unix_to_system(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestCa;

    #[test]
    fn valid_leaf_loads_with_its_identity_and_expiry() {
        let ca = TestCa::new("creds.mesh");
        let leaf = ca.leaf("gateway.creds.mesh");
        let creds = Credentials::from_pem(
            "crt",
            leaf.chain_pem.as_bytes(),
            "key",
            leaf.key_pem.as_bytes(),
            &ca.anchors(),
        )
        .unwrap();
        assert_eq!(creds.identity().as_str(), "gateway.creds.mesh");
        assert_eq!(creds.chain().len(), 2, "leaf + issuer");
        assert!(creds.not_after() > SystemTime::now());
    }

    #[test]
    fn key_of_another_certificate_is_refused() {
        let ca = TestCa::new("creds.mesh");
        let leaf = ca.leaf("a.creds.mesh");
        let other = ca.leaf("b.creds.mesh");
        let err = Credentials::from_pem(
            "crt",
            leaf.chain_pem.as_bytes(),
            "key",
            other.key_pem.as_bytes(),
            &ca.anchors(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::KeyMismatch), "{err}");
    }

    #[test]
    fn leaf_of_another_anchor_is_refused_with_a_plain_reason() {
        let ca = TestCa::new("creds.mesh");
        let other = TestCa::new("other.mesh");
        let leaf = other.leaf("a.other.mesh");
        let err = leaf.credentials(&ca.anchors()).unwrap_err();
        assert!(
            err.to_string().contains("not in the trust-anchor bundle"),
            "{err}"
        );
    }

    #[test]
    fn expired_leaf_is_refused() {
        let ca = TestCa::new("creds.mesh");
        let err = ca
            .expired_leaf("a.creds.mesh")
            .credentials(&ca.anchors())
            .unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
    }

    #[test]
    fn missing_key_pem_is_reported() {
        let ca = TestCa::new("creds.mesh");
        let leaf = ca.leaf("a.creds.mesh");
        let err = Credentials::from_pem(
            "crt",
            leaf.chain_pem.as_bytes(),
            "tls.key",
            b"",
            &ca.anchors(),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("tls.key:"), "{err}");
    }
}
