//! Credentials from Linkerd's identity service (`io.linkerd.proxy.identity.Identity/Certify`):
//! an ECDSA P-256 key and a CSR naming the local identity are made once; each `Certify` call
//! sends the service-account token with the CSR over TLS and gets back a leaf and its
//! intermediates, which are validated against the trust anchors like any other credentials.
//! Refresh is due at 70 % of the remaining lifetime, clamped to `[min_refresh, max_refresh]`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use linkerd2_proxy_api::identity::identity_client::IdentityClient;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tonic::codegen::http;

use crate::source::Material;
use crate::{Credentials, IdentityName, TrustAnchors, tls_config};

pub use linkerd2_proxy_api::identity::{CertifyRequest, CertifyResponse};

/// How to reach the identity service and what to ask it for.
#[derive(Clone, Debug)]
pub struct CertifyConfig {
    /// `host:port` of the identity service (`LINKERD2_PROXY_IDENTITY_SVC_ADDR`).
    pub svc_addr: String,
    /// The identity service's own TLS identity (`LINKERD2_PROXY_IDENTITY_SVC_NAME`).
    pub svc_name: String,
    /// The service-account token file, read before every call (projected tokens rotate).
    pub token_file: PathBuf,
    /// The identity to ask for (`LINKERD2_PROXY_IDENTITY_LOCAL_NAME`).
    pub local_name: IdentityName,
    /// Earliest refresh (`LINKERD2_PROXY_IDENTITY_MIN_REFRESH`, 10 s), also the retry delay.
    pub min_refresh: Duration,
    /// Latest refresh (`LINKERD2_PROXY_IDENTITY_MAX_REFRESH`, 24 h).
    pub max_refresh: Duration,
    /// Per-call deadline (connect, handshake and RPC).
    pub timeout: Duration,
    /// `LINKERD2_PROXY_IDENTITY_DIR`: when it holds `key.p8` (the PKCS#8 ECDSA P-256 key
    /// Linkerd's proxy-identity helper writes), that key is used; otherwise one is generated.
    pub key_dir: Option<PathBuf>,
}

/// Why a `Certify` call failed.
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    /// The token file could not be read.
    #[error("read token {path}: {source}")]
    Token {
        /// The token file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No TCP or TLS connection to the identity service.
    #[error("connect to identity service {addr}: {reason}")]
    Connect {
        /// The service address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The RPC failed (the service's gRPC status, or HTTP/2 trouble).
    #[error("Certify: {0}")]
    Rpc(String),
    /// The service answered with something unusable.
    #[error("Certify returned unusable credentials: {0}")]
    Invalid(String),
    /// The call took longer than the configured timeout.
    #[error("Certify timed out after {0:?}")]
    Timeout(Duration),
}

/// A client of the identity service holding the key and CSR it certifies.
pub struct Certifier {
    config: CertifyConfig,
    key: PrivateKeyDer<'static>,
    csr: Vec<u8>,
    tls: Arc<rustls::ClientConfig>,
    anchors: TrustAnchors,
}

impl std::fmt::Debug for Certifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certifier")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Certifier {
    /// Generates the key and CSR (DNS SAN = the local name, as Linkerd's CA requires).
    ///
    /// # Errors
    /// Key or CSR generation failure, or a TLS config rustls refuses.
    pub fn new(config: CertifyConfig, anchors: TrustAnchors) -> Result<Self, crate::Error> {
        let key = match config.key_dir.as_ref().map(|dir| dir.join("key.p8")) {
            Some(path) if path.exists() => {
                let der = std::fs::read(&path).map_err(|source| crate::Error::Read {
                    path: path.clone(),
                    source,
                })?;
                KeyPair::try_from(der.as_slice()).map_err(|e| crate::Error::Parse {
                    what: path.display().to_string(),
                    reason: format!("not a PKCS#8 key: {e}"),
                })?
            }
            _ => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?,
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, config.local_name.as_str());
        params.subject_alt_names = if config.local_name.is_uri() {
            vec![SanType::URI(config.local_name.as_str().try_into()?)]
        } else {
            vec![SanType::DnsName(config.local_name.as_str().try_into()?)]
        };
        let csr = params.serialize_request(&key)?.der().to_vec();
        let tls = tls_config::client_config(None, &anchors, &[tls_config::ALPN_H2])?;
        Ok(Self {
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            csr,
            tls: Arc::new(tls),
            anchors,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CertifyConfig {
        &self.config
    }

    /// The CSR sent on every call (DER).
    pub fn csr_der(&self) -> &[u8] {
        &self.csr
    }

    /// One `Certify` call: the returned leaf and intermediates, validated with our key against
    /// the anchors.
    ///
    /// # Errors
    /// See [`CertifyError`].
    pub async fn certify(&self) -> Result<Material, CertifyError> {
        let timeout = self.config.timeout;
        tokio::time::timeout(timeout, self.call())
            .await
            .map_err(|_| CertifyError::Timeout(timeout))?
    }

    async fn call(&self) -> Result<Material, CertifyError> {
        // A few hundred bytes from a projected volume: read inline.
        let token =
            std::fs::read(&self.config.token_file).map_err(|source| CertifyError::Token {
                path: self.config.token_file.clone(),
                source,
            })?;
        let connect = |reason: String| CertifyError::Connect {
            addr: self.config.svc_addr.clone(),
            reason,
        };
        let tcp = tokio::net::TcpStream::connect(&self.config.svc_addr)
            .await
            .map_err(|e| connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(self.config.svc_name.clone())
            .map_err(|e| connect(format!("bad identity service name: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| connect(format!("TLS: {e}")))?;
        let (channel, conn) = crate::grpc::Channel::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| connect(format!("HTTP/2: {e}")))?;
        let driver = tokio::spawn(conn);
        let origin: http::Uri = format!("https://{}", self.config.svc_name)
            .parse()
            .map_err(|e| connect(format!("bad identity service name: {e}")))?;
        let mut client = IdentityClient::with_origin(channel, origin);
        let request = CertifyRequest {
            identity: self.config.local_name.to_string(),
            token,
            certificate_signing_request: self.csr.clone(),
        };
        let result = client.certify(request).await.map_err(|status| {
            CertifyError::Rpc(format!("{:?}: {}", status.code(), status.message()))
        });
        driver.abort();
        self.accept(result?.into_inner(), SystemTime::now())
    }

    /// Validates a response at `now`.
    fn accept(&self, response: CertifyResponse, now: SystemTime) -> Result<Material, CertifyError> {
        if let Some(until) = response.valid_until
            && until.seconds <= crate::source::unix_seconds(now)
        {
            return Err(CertifyError::Invalid(
                "valid_until is already in the past".to_owned(),
            ));
        }
        let mut chain = vec![der_or_pem(response.leaf_certificate)?];
        for intermediate in response.intermediate_certificates {
            chain.push(der_or_pem(intermediate)?);
        }
        let credentials = Credentials::new(chain, self.key.clone_key(), &self.anchors, now)
            .map_err(|e| CertifyError::Invalid(e.to_string()))?;
        if credentials.identity() != &self.config.local_name {
            return Err(CertifyError::Invalid(format!(
                "the certificate names {}, not {}",
                credentials.identity(),
                self.config.local_name
            )));
        }
        Ok(Material {
            anchors: self.anchors.clone(),
            credentials,
        })
    }

    /// When to refresh credentials that expire at `expiry`: 70 % of the time left, clamped.
    pub fn refresh_in(&self, expiry: SystemTime, now: SystemTime) -> Duration {
        refresh_delay(
            expiry,
            now,
            self.config.min_refresh,
            self.config.max_refresh,
        )
    }
}

/// 70 % of the lifetime left at `now`, clamped to `[min, max]` (spec §3).
pub fn refresh_delay(
    expiry: SystemTime,
    now: SystemTime,
    min: Duration,
    max: Duration,
) -> Duration {
    let left = expiry.duration_since(now).unwrap_or_default();
    left.mul_f64(0.7).clamp(min, max.max(min))
}

/// Linkerd's identity service sends DER; PEM is accepted too.
fn der_or_pem(bytes: Vec<u8>) -> Result<CertificateDer<'static>, CertifyError> {
    if bytes.starts_with(b"-----BEGIN") {
        return CertificateDer::from_pem_slice(&bytes)
            .map_err(|e| CertifyError::Invalid(format!("bad PEM certificate: {e}")));
    }
    if bytes.is_empty() {
        return Err(CertifyError::Invalid("empty certificate".to_owned()));
    }
    Ok(CertificateDer::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_is_70_percent_of_the_time_left_clamped() {
        let now = SystemTime::now();
        let (min, max) = (Duration::from_secs(10), Duration::from_secs(86_400));
        let hour = Duration::from_secs(3600);
        assert_eq!(refresh_delay(now + 10 * hour, now, min, max), 7 * hour);
        assert_eq!(
            refresh_delay(now + Duration::from_secs(5), now, min, max),
            min
        );
        assert_eq!(
            refresh_delay(now - hour, now, min, max),
            min,
            "expired: soon"
        );
        assert_eq!(refresh_delay(now + 100 * hour, now, min, max), max);
    }

    #[test]
    fn messages_use_linkerds_field_numbers() {
        use prost::Message as _;
        let request = CertifyRequest {
            identity: "a".to_owned(),
            token: b"t".to_vec(),
            certificate_signing_request: b"c".to_vec(),
        };
        // field 1 string "a", field 2 bytes "t", field 3 bytes "c".
        assert_eq!(
            request.encode_to_vec(),
            [0x0a, 1, b'a', 0x12, 1, b't', 0x1a, 1, b'c']
        );
        let response =
            CertifyResponse::decode(&[0x0a, 1, 1, 0x12, 1, 2, 0x12, 1, 3, 0x1a, 2, 0x08, 5][..])
                .unwrap();
        assert_eq!(response.leaf_certificate, [1]);
        assert_eq!(response.intermediate_certificates, [vec![2], vec![3]]);
        assert_eq!(response.valid_until.unwrap().seconds, 5);
    }

    use crate::testing::{IdentityServer, TestCa};

    const LOCAL: &str =
        "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local";

    fn token_file(tag: &str, token: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "meshgate-certify-{tag}-{}.token",
            std::process::id()
        ));
        std::fs::write(&path, token).unwrap();
        path
    }

    /// A config for `LOCAL` with Linkerd's refresh bounds.
    fn config(svc_addr: String, svc_name: String, token_file: PathBuf) -> CertifyConfig {
        CertifyConfig {
            svc_addr,
            svc_name,
            token_file,
            local_name: LOCAL.parse().unwrap(),
            min_refresh: Duration::from_secs(10),
            max_refresh: Duration::from_secs(86_400),
            timeout: Duration::from_secs(10),
            key_dir: None,
        }
    }

    /// A config that is never used to call anything.
    fn offline() -> CertifyConfig {
        config(
            "127.0.0.1:1".to_owned(),
            "identity.certify.mesh".to_owned(),
            PathBuf::from("/nonexistent"),
        )
    }

    fn certifier(server: &IdentityServer, ca: &TestCa, token: PathBuf) -> Certifier {
        let config = config(server.addr.to_string(), server.name.clone(), token);
        Certifier::new(config, ca.anchors()).unwrap()
    }

    #[tokio::test]
    async fn certify_returns_validated_credentials_for_the_local_name() {
        let ca = Arc::new(TestCa::new("certify.mesh"));
        let server =
            IdentityServer::start(ca.clone(), b"sa-token", Duration::from_secs(3600)).await;
        let certifier = certifier(&server, &ca, token_file("ok", b"sa-token"));
        let material = certifier.certify().await.unwrap();
        assert_eq!(material.credentials.identity().as_str(), LOCAL);
        assert_eq!(material.credentials.chain().len(), 2, "leaf + issuer");
        let left = material
            .credentials
            .not_after()
            .duration_since(SystemTime::now())
            .unwrap();
        assert!(left <= Duration::from_secs(3600) && left > Duration::from_secs(3000));
        // A renewal is a new certificate for the same key.
        let again = certifier.certify().await.unwrap();
        assert_ne!(
            again.credentials.chain()[0],
            material.credentials.chain()[0]
        );
        assert_eq!(server.calls(), 2);
    }

    #[tokio::test]
    async fn service_errors_and_bad_tokens_are_reported_and_a_retry_succeeds() {
        let ca = Arc::new(TestCa::new("certify.mesh"));
        let server = IdentityServer::start(ca.clone(), b"good", Duration::from_secs(3600)).await;
        let bad = certifier(&server, &ca, token_file("bad", b"wrong"));
        let err = bad.certify().await.unwrap_err();
        assert!(err.to_string().contains("Unauthenticated"), "{err}");

        let good = certifier(&server, &ca, token_file("retry", b"good"));
        server.fail_next(1);
        let err = good.certify().await.unwrap_err();
        assert!(err.to_string().contains("Unavailable"), "{err}");
        assert!(good.certify().await.is_ok(), "the retry succeeds");
    }

    #[tokio::test]
    async fn a_service_signed_by_another_root_is_refused() {
        let ca = Arc::new(TestCa::new("certify.mesh"));
        let other = TestCa::new("other.mesh");
        let server = IdentityServer::start(ca.clone(), b"t", Duration::from_secs(3600)).await;
        let certifier = certifier(&server, &other, token_file("foreign", b"t"));
        let err = certifier.certify().await.unwrap_err();
        assert!(matches!(err, CertifyError::Connect { .. }), "{err}");
    }

    #[test]
    fn an_expired_or_foreign_answer_is_refused() {
        let ca = TestCa::new("certify.mesh");
        let certifier = Certifier::new(offline(), ca.anchors()).unwrap();
        let chain = ca
            .issuer()
            .sign_csr(
                certifier.csr_der(),
                crate::issue::Validity::from_now(Duration::from_secs(60)),
            )
            .unwrap();
        let response = |until: i64| CertifyResponse {
            leaf_certificate: chain[0].to_vec(),
            intermediate_certificates: vec![chain[1].to_vec()],
            valid_until: Some(prost_types::Timestamp {
                seconds: until,
                nanos: 0,
            }),
        };
        let now = SystemTime::now();
        let unix = crate::source::unix_seconds(now);
        assert!(certifier.accept(response(unix + 60), now).is_ok());
        assert!(matches!(
            certifier.accept(response(unix - 1), now),
            Err(CertifyError::Invalid(_))
        ));
        let other = TestCa::new("other.mesh");
        let foreign = other
            .issuer()
            .sign_csr(
                certifier.csr_der(),
                crate::issue::Validity::from_now(Duration::from_secs(60)),
            )
            .unwrap();
        let err = certifier
            .accept(
                CertifyResponse {
                    leaf_certificate: foreign[0].to_vec(),
                    intermediate_certificates: vec![foreign[1].to_vec()],
                    valid_until: None,
                },
                now,
            )
            .unwrap_err();
        assert!(err.to_string().contains("trust anchors"), "{err}");
    }

    #[test]
    fn a_key_from_the_identity_dir_is_used_for_the_csr() {
        let ca = TestCa::new("certify.mesh");
        let dir = std::env::temp_dir().join(format!("meshgate-keydir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        std::fs::write(dir.join("key.p8"), key.serialize_der()).unwrap();
        let config = CertifyConfig {
            key_dir: Some(dir.clone()),
            ..offline()
        };
        let certifier = Certifier::new(config, ca.anchors()).unwrap();
        let csr =
            rcgen::CertificateSigningRequestParams::from_der(&certifier.csr_der().to_vec().into())
                .unwrap();
        use rcgen::PublicKeyData as _;
        assert_eq!(csr.public_key.der_bytes(), key.der_bytes());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
