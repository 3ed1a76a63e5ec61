//! CA operations with rcgen: trust anchors (roots), issuers (intermediates) and leaves, all ECDSA
//! P-256. Used by `meshgate certs`, `meshgate demo` and the tests.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
    SerialNumber,
};
use rustls::crypto::aws_lc_rs;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::{Credentials, Error, TrustAnchors};

/// Linkerd's allowance for clock skew on issued certificates (`not_before` is set this far back).
pub const CLOCK_SKEW: Duration = Duration::from_secs(20);

/// A certificate's validity window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// Not valid before this instant.
    pub not_before: SystemTime,
    /// Not valid after this instant.
    pub not_after: SystemTime,
}

impl Validity {
    /// Valid from [`CLOCK_SKEW`] ago for `ttl` from now.
    pub fn from_now(ttl: Duration) -> Self {
        let now = SystemTime::now();
        Self {
            not_before: now - CLOCK_SKEW,
            not_after: now + ttl,
        }
    }
}

/// A certificate authority: a root (trust anchor) or an issuer (intermediate) with its key.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// This CA's certificate followed by its parents, excluding the root: what a leaf it signs
    /// must send after itself. Empty for a root.
    chain: Vec<CertificateDer<'static>>,
}

/// A newly issued leaf certificate and its key.
pub struct Issued {
    /// The leaf followed by the intermediates a peer needs to reach the root.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's PKCS#8 private key.
    pub key: PrivateKeyDer<'static>,
    /// `chain` as PEM, leaf first.
    pub chain_pem: String,
    /// `key` as PKCS#8 PEM.
    pub key_pem: String,
}

/// What a leaf certifies.
#[derive(Clone, Debug)]
pub struct LeafSpec<'a> {
    /// The identity name, written as the DNS SAN (and the subject CN).
    pub identity: &'a str,
    /// An optional URI SAN (for example `spiffe://cluster.local/ns/x/sa/y`), after the DNS SAN.
    pub spiffe: Option<&'a str>,
    /// Validity window.
    pub validity: Validity,
}

impl Ca {
    /// Creates a self-signed root (trust anchor) named `common_name`.
    ///
    /// # Errors
    /// When key generation or signing fails.
    pub fn root(common_name: &str, validity: Validity) -> Result<Self, Error> {
        let params = ca_params(common_name, validity, 1)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        Ok(Self {
            issuer: CertifiedIssuer::self_signed(params, key)?,
            chain: Vec::new(),
        })
    }

    /// Creates an issuer (intermediate CA, path length 0) signed by this CA.
    ///
    /// # Errors
    /// When key generation or signing fails.
    pub fn issuer(&self, common_name: &str, validity: Validity) -> Result<Self, Error> {
        let params = ca_params(common_name, validity, 0)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let issuer = CertifiedIssuer::signed_by(params, key, &self.issuer)?;
        let mut chain = vec![issuer.der().clone()];
        chain.extend(self.chain.iter().cloned());
        Ok(Self { issuer, chain })
    }

    /// Issues a leaf for `spec.identity` with EKU serverAuth + clientAuth.
    ///
    /// # Errors
    /// When the identity is not a valid DNS SAN, or signing fails.
    pub fn leaf(&self, spec: &LeafSpec<'_>) -> Result<Issued, Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(spec.identity);
        params.subject_alt_names = vec![SanType::DnsName(spec.identity.try_into()?)];
        if let Some(uri) = spec.spiffe {
            params.subject_alt_names.push(SanType::URI(uri.try_into()?));
        }
        params.not_before = spec.validity.not_before.into();
        params.not_after = spec.validity.not_after.into();
        params.serial_number = Some(random_serial()?);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.chain.iter().cloned());
        let chain_pem = chain.iter().map(|der| pem("CERTIFICATE", der)).collect();
        Ok(Issued {
            chain,
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            chain_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// This CA's own certificate.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        self.issuer.der()
    }

    /// This CA's own certificate as PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// This CA's private key as PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }
}

impl Issued {
    /// Validates the issued material against `anchors` now.
    ///
    /// # Errors
    /// As [`Credentials::new`].
    pub fn credentials(&self, anchors: &TrustAnchors) -> Result<Credentials, Error> {
        Credentials::new(
            self.chain.clone(),
            self.key.clone_key(),
            anchors,
            SystemTime::now(),
        )
    }
}

fn ca_params(name: &str, validity: Validity, path_len: u8) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = validity.not_before.into();
    params.not_after = validity.not_after.into();
    params.serial_number = Some(random_serial()?);
    params.use_authority_key_identifier_extension = path_len == 0;
    Ok(params)
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

/// A positive 128-bit serial from the provider's secure random source (RFC 5280 §4.1.2.2).
fn random_serial() -> Result<SerialNumber, Error> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| Error::Generate(rcgen::Error::RingUnspecified))?;
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

/// PEM-encodes DER (`label` is `CERTIFICATE`, `PRIVATE KEY`, …).
pub fn pem(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der.to_vec()))
}
