//! Client-certificate verification: webpki chain check to the trust anchors, then an identity
//! (first DNS or URI SAN) is required. Also names the reason a handshake was refused.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::extensions::GeneralName;

use crate::{Error, IdentityName, TrustAnchors};

/// Verifies client certificates against the trust anchors and requires an identity SAN.
///
/// A client certificate is mandatory: a client without one fails the handshake with
/// `certificate_required`, which the caller sees as a TLS alert rather than a silent close.
///
/// Chains it has verified are remembered by their exact bytes: a returning caller (a Linkerd
/// proxy keeps its certificate for a day and reconnects often) skips chain building and the two
/// signature checks of a leaf and its issuer on a full handshake. The handshake's own signature
/// (proof of the key) is checked every time. An entry lasts until the first certificate of the
/// chain expires, at most [`REMEMBER_FOR`]; a new verifier (credentials or anchors reloaded)
/// starts empty.
#[derive(Debug)]
pub struct ClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    verified: Verified,
}

/// How long a verified chain is remembered at most.
pub(crate) const REMEMBER_FOR: u64 = 600;
/// How many chains are remembered (each a few KiB); when full, the expired go, else all.
const REMEMBERED: usize = 1024;

/// Chains verified recently: hash of the DER → the DER (compared in full on a hit) and the Unix
/// second after which the entry is not used.
#[derive(Debug, Default)]
struct Verified {
    hasher: RandomState,
    entries: Mutex<HashMap<u64, Remembered>>,
}

/// A verified chain's DER, and the Unix second from which it is not used.
type Remembered = (Vec<Vec<u8>>, u64);

impl Verified {
    fn key(&self, end_entity: &[u8], intermediates: &[CertificateDer<'_>]) -> u64 {
        self.hasher.hash_one((
            end_entity,
            intermediates.iter().map(|c| c.as_ref()).collect::<Vec<_>>(),
        ))
    }

    fn contains(
        &self,
        key: u64,
        end_entity: &[u8],
        intermediates: &[CertificateDer<'_>],
        now: u64,
    ) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(&key).is_some_and(|(chain, until)| {
            now < *until
                && chain.len() == 1 + intermediates.len()
                && chain[0] == end_entity
                && chain[1..]
                    .iter()
                    .zip(intermediates)
                    .all(|(a, b)| a.as_slice() == b.as_ref())
        })
    }

    fn insert(&self, key: u64, end_entity: &[u8], intermediates: &[CertificateDer<'_>], now: u64) {
        // The first expiry in the chain; a certificate that does not parse is not remembered.
        let mut until = now.saturating_add(REMEMBER_FOR);
        for der in std::iter::once(end_entity).chain(intermediates.iter().map(|c| c.as_ref())) {
            let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
                return;
            };
            let not_after = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
            until = until.min(not_after);
        }
        let chain = std::iter::once(end_entity.to_vec())
            .chain(intermediates.iter().map(|c| c.to_vec()))
            .collect();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= REMEMBERED {
            entries.retain(|_, (_, until)| now < *until);
            if entries.len() >= REMEMBERED {
                entries.clear();
            }
        }
        entries.insert(key, (chain, until));
    }
}

impl ClientVerifier {
    /// Builds a verifier for `anchors` using `provider`'s signature algorithms.
    ///
    /// # Errors
    /// `Untrusted` if rustls refuses the root store.
    pub fn new(anchors: &TrustAnchors, provider: Arc<CryptoProvider>) -> Result<Self, Error> {
        let inner = WebPkiClientVerifier::builder_with_provider(anchors.root_store(), provider)
            .build()
            .map_err(|e| Error::Untrusted(e.to_string()))?;
        Ok(Self {
            inner,
            verified: Verified::default(),
        })
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let key = self.verified.key(end_entity, intermediates);
        if self
            .verified
            .contains(key, end_entity, intermediates, now.as_secs())
        {
            return Ok(ClientCertVerified::assertion());
        }
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if identity_of_cert(end_entity).is_none() {
            // The chain is good but names nobody: refuse, so every accepted peer has an identity.
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        self.verified
            .insert(key, end_entity, intermediates, now.as_secs());
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The identity a certificate names: its first DNS SAN (without a trailing dot) or URI SAN that
/// parses; other SAN types are skipped. `None` when there is none or the DER does not parse.
pub fn identity_of_cert(der: &CertificateDer<'_>) -> Option<IdentityName> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::DNSName(dns) => IdentityName::from_dns(dns).ok(),
        GeneralName::URI(uri) => IdentityName::from_uri(uri).ok(),
        _ => None,
    })
}

/// Whether the certificate's validity window has ended (or the DER does not parse). A resumed
/// TLS session skips certificate verification, so the server checks this itself then.
pub fn cert_expired(der: &CertificateDer<'_>) -> bool {
    x509_parser::parse_x509_certificate(der).map_or(true, |(_, cert)| !cert.validity().is_valid())
}

/// Why a downstream connection was refused before any application byte; a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refusal {
    /// The client sent no certificate.
    NoClientCert,
    /// The client's chain does not lead to a trust anchor (or a signature is bad).
    UnknownCa,
    /// The client's certificate (or one in its chain) has expired.
    Expired,
    /// The client's certificate is not valid yet.
    NotYetValid,
    /// The client's certificate is not allowed for client authentication.
    BadEku,
    /// The client's certificate chains correctly but names no identity.
    NoIdentity,
    /// The handshake did not finish within the detect timeout.
    Timeout,
    /// The first bytes were not a TLS ClientHello.
    NotTls,
    /// The handshake failed for another protocol reason (alert, version, cipher, …).
    Protocol,
}

impl Refusal {
    /// Every reason, for pre-registering metric label values.
    pub const ALL: [Refusal; 9] = [
        Refusal::NoClientCert,
        Refusal::UnknownCa,
        Refusal::Expired,
        Refusal::NotYetValid,
        Refusal::BadEku,
        Refusal::NoIdentity,
        Refusal::Timeout,
        Refusal::NotTls,
        Refusal::Protocol,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NoClientCert => "no_client_cert",
            Refusal::UnknownCa => "unknown_ca",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::BadEku => "bad_eku",
            Refusal::NoIdentity => "no_identity",
            Refusal::Timeout => "timeout",
            Refusal::NotTls => "not_tls",
            Refusal::Protocol => "tls_error",
        }
    }

    /// Classifies a server-side rustls handshake error.
    pub fn from_tls_error(err: &rustls::Error) -> Refusal {
        use CertificateError as C;
        match err {
            rustls::Error::NoCertificatesPresented => Refusal::NoClientCert,
            rustls::Error::InvalidMessage(_) => Refusal::NotTls,
            rustls::Error::InvalidCertificate(cert) => match cert {
                C::Expired | C::ExpiredContext { .. } => Refusal::Expired,
                C::NotValidYet | C::NotValidYetContext { .. } => Refusal::NotYetValid,
                C::InvalidPurpose | C::InvalidPurposeContext { .. } => Refusal::BadEku,
                C::ApplicationVerificationFailure => Refusal::NoIdentity,
                _ => Refusal::UnknownCa,
            },
            _ => Refusal::Protocol,
        }
    }
}

/// Verifies `chain` (leaf first) to `anchors` at `now` for use as a TLS server certificate.
///
/// # Errors
/// `Untrusted` with webpki's reason.
pub(crate) fn verify_chain(
    provider: &CryptoProvider,
    chain: &[CertificateDer<'static>],
    anchors: &TrustAnchors,
    now: SystemTime,
) -> Result<(), Error> {
    let (leaf, intermediates) = chain.split_first().ok_or(Error::NoPem {
        what: "certificate chain".to_owned(),
        kind: "CERTIFICATE",
    })?;
    let ee = webpki::EndEntityCert::try_from(leaf).map_err(|e| Error::Untrusted(e.to_string()))?;
    let now = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
    let roots = anchors.root_store();
    ee.verify_for_usage(
        provider.signature_verification_algorithms.all,
        &roots.roots,
        intermediates,
        now,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| Error::Untrusted(describe_webpki(&e)))
}

fn describe_webpki(e: &webpki::Error) -> String {
    match e {
        webpki::Error::UnknownIssuer => {
            "unknown issuer (signed by a CA that is not in the trust-anchor bundle)".to_owned()
        }
        webpki::Error::CertExpired { .. } => "certificate expired".to_owned(),
        webpki::Error::CertNotValidYet { .. } => "certificate not valid yet".to_owned(),
        webpki::Error::InvalidSignatureForPublicKey => "a signature in the chain does not verify: \
            it reaches an anchor with the right name but a different key (a regenerated root \
            with the same name?)"
            .to_owned(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestCa;
    use crate::tls_config;

    /// Runs an in-memory handshake; the identity the server saw, or its error.
    fn handshake(
        server: &Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
    ) -> Result<Option<IdentityName>, rustls::Error> {
        let server =
            crate::testing::in_memory_handshake(server.clone(), client, "gateway.verify.mesh")?;
        Ok(server
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(identity_of_cert))
    }

    fn client_presenting(
        ca: &TestCa,
        leaf: Option<&crate::issue::Issued>,
    ) -> Arc<rustls::ClientConfig> {
        let builder = rustls::ClientConfig::builder_with_provider(tls_config::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(ca.anchors().root_store());
        Arc::new(match leaf {
            Some(leaf) => builder
                .with_client_auth_cert(leaf.chain.clone(), leaf.key.clone_key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        })
    }

    fn server(ca: &TestCa) -> Arc<rustls::ServerConfig> {
        Arc::new(
            tls_config::server_config(&ca.credentials("gateway.verify.mesh"), &ca.anchors(), &[])
                .unwrap(),
        )
    }

    #[test]
    fn mtls_accepts_peer_and_names_its_identity() {
        let ca = TestCa::new("verify.mesh");
        let leaf = ca.leaf("web.verify.mesh");
        let id = handshake(&server(&ca), client_presenting(&ca, Some(&leaf))).unwrap();
        assert_eq!(id.unwrap().as_str(), "web.verify.mesh");
    }

    #[test]
    fn mtls_refusals_are_classified() {
        let ca = TestCa::new("verify.mesh");
        let other = TestCa::new("other.mesh");
        let server = server(&ca);
        let foreign = other.leaf("web.other.mesh");
        let cases = [
            (None, Refusal::NoClientCert),
            (Some(ca.expired_leaf("web.verify.mesh")), Refusal::Expired),
            (
                Some(ca.future_leaf("web.verify.mesh")),
                Refusal::NotYetValid,
            ),
        ];
        for (leaf, expected) in cases {
            let err = handshake(&server, client_presenting(&ca, leaf.as_ref())).unwrap_err();
            assert_eq!(Refusal::from_tls_error(&err), expected, "{err}");
        }
        // The foreign client trusts our root (so it finishes its side); we do not trust its.
        let err = handshake(&server, client_presenting(&ca, Some(&foreign))).unwrap_err();
        assert_eq!(Refusal::from_tls_error(&err), Refusal::UnknownCa, "{err}");
    }

    fn verify(
        verifier: &ClientVerifier,
        leaf: &crate::issue::Issued,
        at: u64,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(at));
        verifier.verify_client_cert(&leaf.chain[0], &leaf.chain[1..], now)
    }

    fn unix_now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn a_remembered_chain_is_exactly_the_verified_one_and_never_outlives_its_validity() {
        let ca = TestCa::new("verify.mesh");
        let verifier = ClientVerifier::new(&ca.anchors(), tls_config::provider()).unwrap();
        let leaf = ca.leaf("web.verify.mesh");
        let now = unix_now();
        verify(&verifier, &leaf, now).unwrap();
        verify(&verifier, &leaf, now + 1).unwrap();
        assert_eq!(verifier.verified.entries.lock().unwrap().len(), 1);
        // Another leaf of the same name and a foreign chain are verified on their own.
        let foreign = TestCa::new("verify.mesh").leaf("web.verify.mesh");
        assert!(verify(&verifier, &foreign, now).is_err());
        assert!(verify(&verifier, &foreign, now).is_err());
        verify(&verifier, &ca.leaf("web.verify.mesh"), now).unwrap();
        assert_eq!(verifier.verified.entries.lock().unwrap().len(), 2);
        // A day later the leaf has expired: the remembered entry is not used, and webpki refuses.
        let err = verify(&verifier, &leaf, now + 2 * 86_400).unwrap_err();
        assert_eq!(Refusal::from_tls_error(&err), Refusal::Expired, "{err}");
        // Nor is an entry used after REMEMBER_FOR, though the chain is still valid then.
        let key = verifier.verified.key(&leaf.chain[0], &leaf.chain[1..]);
        assert!(!verifier.verified.contains(
            key,
            &leaf.chain[0],
            &leaf.chain[1..],
            now + REMEMBER_FOR + 1
        ));
        assert!(
            verifier
                .verified
                .contains(key, &leaf.chain[0], &leaf.chain[1..], now + 1)
        );
    }

    #[test]
    fn a_full_cache_drops_what_expired_and_keeps_working() {
        let ca = TestCa::new("verify.mesh");
        let verifier = ClientVerifier::new(&ca.anchors(), tls_config::provider()).unwrap();
        let leaf = ca.leaf("web.verify.mesh");
        let now = unix_now();
        {
            let mut entries = verifier.verified.entries.lock().unwrap();
            for i in 0..REMEMBERED as u64 {
                entries.insert(i, (Vec::new(), now - 1));
            }
        }
        verify(&verifier, &leaf, now).unwrap();
        assert_eq!(verifier.verified.entries.lock().unwrap().len(), 1);
        verify(&verifier, &leaf, now).unwrap();
    }

    #[test]
    fn refusal_labels_are_distinct() {
        let mut labels: Vec<_> = Refusal::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Refusal::ALL.len());
    }
}
