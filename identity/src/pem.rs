//! PEM framing: the certificates of a PEM file, in order, with a reason when there are none.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::Error;

/// Every certificate in a PEM file, in order.
///
/// # Errors
/// Broken PEM framing, no certificate at all, or a certificate that does not parse.
pub fn read_pem(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Parse {
            what: what.to_owned(),
            reason: format!("bad PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(Error::NoPem {
            what: what.to_owned(),
            kind: "CERTIFICATE",
        });
    }
    Ok(certs)
}
