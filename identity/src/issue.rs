//! CA operations with rcgen: trust anchors (roots), issuers (intermediates) and leaves, all ECDSA
//! P-256. Used by `meshgate certs`, `meshgate demo` and the tests.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls::crypto::aws_lc_rs;
use rustls_pki_types::pem::PemObject;
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
    issuer: Issuer<'static, KeyPair>,
    /// The private key as PKCS#8 PEM (the `Issuer` owns the key itself).
    key_pem: String,
    cert: CertificateDer<'static>,
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
        let cert = params.self_signed(&key)?.der().clone();
        Ok(Self::assemble(params, key, cert, Vec::new()))
    }

    fn assemble(
        params: CertificateParams,
        key: KeyPair,
        cert: CertificateDer<'static>,
        chain: Vec<CertificateDer<'static>>,
    ) -> Self {
        Self {
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
            cert,
            chain,
        }
    }

    /// Loads a CA from its certificate PEM (the CA first, then any intermediates above it that
    /// leaves must carry) and its private key PEM, as `certs issuer` and `certs leaf` read them.
    ///
    /// # Errors
    /// Bad PEM, a key that is not the certificate's, or a certificate that is not a CA.
    pub fn from_pem(cert_what: &str, cert_pem: &str, key_pem: &str) -> Result<Self, Error> {
        let parse = |reason: String| Error::Parse {
            what: cert_what.to_owned(),
            reason,
        };
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| parse(format!("bad PEM: {e}")))?;
        let cert = certs.first().cloned().ok_or(Error::NoPem {
            what: cert_what.to_owned(),
            kind: "CERTIFICATE",
        })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert)
            .map_err(|e| parse(format!("not an X.509 certificate: {e}")))?;
        if !parsed.is_ca() {
            return Err(parse(
                "not a CA certificate (basicConstraints CA:FALSE)".to_owned(),
            ));
        }
        let key = KeyPair::from_pem(key_pem).map_err(|e| Error::Parse {
            what: "CA private key".to_owned(),
            reason: e.to_string(),
        })?;
        if key.public_key_raw() != parsed.public_key().subject_public_key.data.as_ref() {
            return Err(Error::KeyMismatch);
        }
        // A self-signed CA is a root: leaves never carry it. Otherwise the file's certificates
        // (this issuer and any intermediates above it) follow every leaf it signs.
        let self_signed = parsed.subject() == parsed.issuer();
        let chain = if self_signed { Vec::new() } else { certs };
        let key_pem = key.serialize_pem();
        let issuer = Issuer::from_ca_cert_der(&cert, key).map_err(|e| parse(e.to_string()))?;
        Ok(Self {
            issuer,
            key_pem,
            cert,
            chain,
        })
    }

    /// Creates an issuer (intermediate CA, path length 0) signed by this CA.
    ///
    /// # Errors
    /// When key generation or signing fails.
    pub fn issuer(&self, common_name: &str, validity: Validity) -> Result<Self, Error> {
        let params = ca_params(common_name, validity, 0)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer)?.der().clone();
        let mut chain = vec![cert.clone()];
        chain.extend(self.chain.iter().cloned());
        Ok(Self::assemble(params, key, cert, chain))
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

    /// Signs a certificate signing request as Linkerd's identity service does: the CSR's
    /// subject and SANs, EKU serverAuth + clientAuth, `validity`. Returns the leaf followed by
    /// this CA's chain.
    ///
    /// # Errors
    /// A CSR that does not parse or whose signature does not verify, or signing failure.
    pub fn sign_csr(
        &self,
        csr_der: &[u8],
        validity: Validity,
    ) -> Result<Vec<CertificateDer<'static>>, Error> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_der(&csr_der.to_vec().into())?;
        csr.params.not_before = validity.not_before.into();
        csr.params.not_after = validity.not_after.into();
        csr.params.serial_number = Some(random_serial()?);
        csr.params.is_ca = IsCa::ExplicitNoCa;
        csr.params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        csr.params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        csr.params.use_authority_key_identifier_extension = true;
        let cert = csr.signed_by(&self.issuer)?;
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.chain.iter().cloned());
        Ok(chain)
    }

    /// This CA's own certificate.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// This CA's own certificate as PEM.
    pub fn cert_pem(&self) -> String {
        pem("CERTIFICATE", &self.cert)
    }

    /// This CA's certificate followed by the intermediates above it (empty above a root), as PEM:
    /// what an issuer's `ca.crt`/`issuer.crt` file holds.
    pub fn chain_pem(&self) -> String {
        if self.chain.is_empty() {
            return self.cert_pem();
        }
        self.chain
            .iter()
            .map(|der| pem("CERTIFICATE", der))
            .collect()
    }

    /// This CA's private key as PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.key_pem.clone()
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
