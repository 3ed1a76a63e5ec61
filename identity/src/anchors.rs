//! `TrustAnchors`: a PEM bundle of one or more root certificates, as a rustls root store plus a
//! per-anchor report (subject, expiry) for readiness, metrics and `certs inspect`.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::Error;

/// The trust anchors of the mesh: every peer certificate must chain to one of them.
///
/// Several roots are the normal case during a rotation (old root + new root).
#[derive(Clone, Debug)]
pub struct TrustAnchors {
    store: Arc<RootCertStore>,
    info: Arc<[AnchorInfo]>,
}

/// What a bundle holds, one entry per usable root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnchorInfo {
    /// The subject distinguished name, e.g. `CN=root.linkerd.cluster.local`.
    pub subject: String,
    /// Expiry, in seconds since the Unix epoch.
    pub not_after_unix: i64,
    /// The certificate itself.
    pub der: CertificateDer<'static>,
}

impl TrustAnchors {
    /// Parses a PEM bundle. Certificates that fail to parse are skipped with a warning (as Linkerd
    /// does); a bundle without a single usable root is an error.
    ///
    /// # Errors
    /// `NoPem` when there is no usable certificate, `Parse` when the PEM framing is broken.
    pub fn from_pem(what: &str, pem: &[u8]) -> Result<Self, Error> {
        let mut ders = Vec::new();
        for item in CertificateDer::pem_slice_iter(pem) {
            let der = item.map_err(|e| Error::Parse {
                what: what.to_owned(),
                reason: format!("bad PEM: {e}"),
            })?;
            ders.push(der);
        }
        Self::from_der(what, ders)
    }

    /// Builds the anchors from DER certificates; unusable ones are skipped with a warning.
    ///
    /// # Errors
    /// `NoPem` when none is usable.
    pub fn from_der(what: &str, certs: Vec<CertificateDer<'static>>) -> Result<Self, Error> {
        let mut store = RootCertStore::empty();
        let mut info = Vec::new();
        for der in certs {
            let parsed = match x509_parser::parse_x509_certificate(&der) {
                Ok((_, cert)) => AnchorInfo {
                    subject: cert.subject().to_string(),
                    not_after_unix: cert.validity().not_after.timestamp(),
                    der: der.clone(),
                },
                Err(e) => {
                    tracing::warn!(bundle = what, error = %e, "skipping unparsable trust anchor");
                    continue;
                }
            };
            if let Err(e) = store.add(der.clone()) {
                tracing::warn!(bundle = what, error = %e, "skipping unusable trust anchor");
                continue;
            }
            info.push(parsed);
        }
        if info.is_empty() {
            return Err(Error::NoPem {
                what: what.to_owned(),
                kind: "usable CERTIFICATE",
            });
        }
        Ok(Self {
            store: Arc::new(store),
            info: info.into(),
        })
    }

    /// The rustls root store.
    pub fn root_store(&self) -> Arc<RootCertStore> {
        self.store.clone()
    }

    /// One entry per usable root, in bundle order.
    pub fn anchors(&self) -> &[AnchorInfo] {
        &self.info
    }

    /// The latest expiry among the anchors, in seconds since the Unix epoch: until then at
    /// least one root can still vouch for a peer.
    pub fn latest_expiry_unix(&self) -> i64 {
        self.info
            .iter()
            .map(|a| a.not_after_unix)
            .max()
            .unwrap_or(i64::MIN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_expiry_is_the_longest_lived_root_of_a_rotation_bundle() {
        use crate::issue::{Ca, Validity};
        use std::time::Duration;
        let day = Duration::from_secs(86_400);
        let old = Ca::root("old.root", Validity::from_now(day)).unwrap();
        let new = Ca::root("new.root", Validity::from_now(300 * day)).unwrap();
        let bundle = format!("{}{}", old.cert_pem(), new.cert_pem());
        let anchors = TrustAnchors::from_pem("bundle", bundle.as_bytes()).unwrap();
        assert_eq!(anchors.anchors().len(), 2);
        assert_eq!(
            anchors.latest_expiry_unix(),
            anchors.anchors()[1].not_after_unix
        );
        assert!(anchors.anchors()[0].not_after_unix < anchors.anchors()[1].not_after_unix);
    }

    #[test]
    fn empty_bundle_is_rejected() {
        assert!(matches!(
            TrustAnchors::from_pem("empty", b""),
            Err(Error::NoPem { .. })
        ));
    }

    #[test]
    fn garbage_certificate_is_skipped_and_alone_is_rejected() {
        let pem = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(TrustAnchors::from_pem("garbage", pem).is_err());
    }
}
