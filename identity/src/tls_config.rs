//! rustls configurations for meshgate: one provider (aws-lc-rs), TLS 1.3, the suites and groups
//! Linkerd uses, mandatory client certificates on the server side.

use std::sync::Arc;

use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::{ClientConfig, ServerConfig};

use crate::{ClientVerifier, Credentials, Error, TrustAnchors};

/// ALPN protocol id of Linkerd's transport header.
pub const ALPN_TRANSPORT_HEADER: &[u8] = b"transport.l5d.io/v1";
/// ALPN protocol id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol id of HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The crypto provider: aws-lc-rs with TLS 1.3 suites AES-128-GCM, AES-256-GCM, ChaCha20 and
/// groups X25519MLKEM768, X25519, P-256, P-384, in Linkerd's order.
pub fn provider() -> Arc<CryptoProvider> {
    use aws_lc_rs::cipher_suite as cs;
    use aws_lc_rs::kx_group as kx;
    let mut provider = aws_lc_rs::default_provider();
    provider.cipher_suites = vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    provider.kx_groups = vec![kx::X25519MLKEM768, kx::X25519, kx::SECP256R1, kx::SECP384R1];
    Arc::new(provider)
}

/// A TLS 1.3 server config presenting `credentials`, requiring client certificates that chain to
/// `anchors`, offering `alpn` in order.
///
/// # Errors
/// When rustls refuses the key or the anchors.
pub fn server_config(
    credentials: &Credentials,
    anchors: &TrustAnchors,
    alpn: &[&[u8]],
) -> Result<ServerConfig, Error> {
    let provider = provider();
    let verifier = ClientVerifier::new(anchors, provider.clone())?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(credentials.chain().to_vec(), credentials.key().clone_key())?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // The server's suite order (AES-GCM first: hardware-accelerated here) over the client's.
    config.ignore_client_order = true;
    // Stateless resumption tickets (AEAD-sealed, keys rotated every 6 h): returning callers skip
    // the certificate exchange and signatures without the server keeping per-session state. Each
    // config has its own ticketer, so reloaded credentials or anchors invalidate every ticket.
    config.ticketer = aws_lc_rs::Ticketer::new()?;
    Ok(config)
}

/// A TLS 1.3 client config trusting `anchors`, presenting `credentials` when given.
///
/// # Errors
/// When rustls refuses the key.
pub fn client_config(
    credentials: Option<&Credentials>,
    anchors: &TrustAnchors,
    alpn: &[&[u8]],
) -> Result<ClientConfig, Error> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(anchors.root_store());
    let mut config = match credentials {
        Some(creds) => {
            builder.with_client_auth_cert(creds.chain().to_vec(), creds.key().clone_key())?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestCa, in_memory_handshake};
    use rustls::HandshakeKind;

    fn configs(ca: &TestCa) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let anchors = ca.anchors();
        let server = server_config(&ca.credentials("gateway.tls.mesh"), &anchors, &[ALPN_H2])
            .expect("server config");
        let client = client_config(Some(&ca.credentials("web.tls.mesh")), &anchors, &[ALPN_H2])
            .expect("client config");
        (Arc::new(server), Arc::new(client))
    }

    #[test]
    fn a_returning_client_resumes_and_keeps_its_identity() {
        let ca = TestCa::new("tls.mesh");
        let (server, client) = configs(&ca);
        let first = in_memory_handshake(server.clone(), client.clone(), "gateway.tls.mesh")
            .expect("full handshake");
        assert_eq!(first.handshake_kind(), Some(HandshakeKind::Full));
        let again =
            in_memory_handshake(server, client, "gateway.tls.mesh").expect("resumed handshake");
        assert_eq!(again.handshake_kind(), Some(HandshakeKind::Resumed));
        let peer = again.peer_certificates().and_then(|c| c.first()).cloned();
        assert_eq!(
            peer.as_ref()
                .and_then(crate::identity_of_cert)
                .map(|i| i.to_string()),
            Some("web.tls.mesh".to_owned())
        );
    }

    #[test]
    fn tickets_of_a_replaced_config_are_not_honoured() {
        let ca = TestCa::new("tls.mesh");
        let (server, client) = configs(&ca);
        in_memory_handshake(server, client.clone(), "gateway.tls.mesh").expect("full handshake");
        // Reloaded credentials make a new config: the old tickets no longer open a session.
        let (reloaded, _) = configs(&ca);
        let again = in_memory_handshake(reloaded, client, "gateway.tls.mesh").expect("handshake");
        assert_eq!(again.handshake_kind(), Some(HandshakeKind::Full));
    }

    #[test]
    fn the_server_picks_the_suite_whatever_the_client_prefers() {
        let ca = TestCa::new("tls.mesh");
        let (server, _) = configs(&ca);
        use aws_lc_rs::cipher_suite as cs;
        let mut chacha_first = (*provider()).clone();
        chacha_first.cipher_suites = vec![
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_AES_128_GCM_SHA256,
        ];
        let leaf = ca.leaf("web.tls.mesh");
        let client = ClientConfig::builder_with_provider(Arc::new(chacha_first))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("versions")
            .with_root_certificates(ca.anchors().root_store())
            .with_client_auth_cert(leaf.chain, leaf.key)
            .expect("client auth");
        let conn =
            in_memory_handshake(server, Arc::new(client), "gateway.tls.mesh").expect("handshake");
        assert_eq!(
            conn.negotiated_cipher_suite().map(|s| s.suite()),
            Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
        );
    }
}
