//! Identities, trust anchors and credentials for meshgate: everything about certificates —
//! loading, validating, reloading, issuing, inspecting, and obtaining them from Linkerd's identity
//! service (the only sockets this crate opens).
//!
//! Glossary:
//! - **trust anchor**: a root CA certificate every mesh member trusts. A *bundle* holds one or more
//!   (several during a rotation: old root + new root).
//! - **issuer**: an intermediate CA signed by a trust anchor; it signs the leaves.
//! - **leaf**: a workload's own certificate (the gateway's, or a caller's), with its identity in a SAN.
//! - **identity name**: the first DNS or URI SAN of a leaf, e.g.
//!   `linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local` or
//!   `spiffe://cluster.local/ns/default/sa/web`.
//! - **credentials**: a leaf, its intermediates and its private key, validated against the anchors.

#![forbid(unsafe_code)]

mod anchors;
pub mod certify;
mod credentials;
mod error;
pub mod grpc;
pub mod inspect;
pub mod issue;
mod name;
mod pem;
pub mod source;
pub mod tls_config;
mod verify;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use anchors::{AnchorInfo, TrustAnchors};
pub use credentials::Credentials;
pub use error::Error;
pub use name::{IdentityName, NameError};
pub use verify::{ClientVerifier, Refusal, cert_expired, identity_of_cert};
