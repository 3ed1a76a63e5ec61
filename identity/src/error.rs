//! The error type of the identity crate.

use std::path::PathBuf;

/// What went wrong while loading or validating certificates and keys.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// PEM text held no item of the expected kind.
    #[error("{what}: no {kind} found in PEM")]
    NoPem {
        /// What was being loaded (a file name or a description).
        what: String,
        /// `CERTIFICATE`, `PRIVATE KEY`, …
        kind: &'static str,
    },
    /// PEM or DER could not be parsed.
    #[error("{what}: {reason}")]
    Parse {
        /// What was being loaded.
        what: String,
        /// Why it could not be parsed.
        reason: String,
    },
    /// The private key does not belong to the leaf certificate.
    #[error("the private key does not match the certificate's public key")]
    KeyMismatch,
    /// The leaf has no DNS or URI SAN that is a valid identity.
    #[error("the certificate has no DNS or URI subject alternative name usable as an identity")]
    NoIdentity,
    /// The chain does not verify to the trust anchors.
    #[error("the certificate does not chain to the trust anchors: {0}")]
    Untrusted(String),
    /// A rustls configuration could not be built.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// rcgen refused to make a certificate.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
}
