//! `meshgate certs inspect`: what a certificate file holds, and whether it chains to a bundle —
//! with a plain-language reason when it does not.

use std::fmt::Write as _;
use std::time::SystemTime;

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::X509Certificate;

pub use crate::pem::read_pem;
use crate::{Error, TrustAnchors, identity_of_cert, tls_config};

/// Where a moment falls in a certificate's validity period.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Lifetime {
    /// Before `not_before`.
    NotYetValid,
    /// Within the period.
    Valid {
        /// Days until `not_after`.
        days_left: f64,
        /// The share of the whole lifetime still left, 0 to 1.
        share_left: f64,
    },
    /// After `not_after`.
    Expired {
        /// Days since `not_after`.
        days_ago: f64,
    },
}

/// One certificate, described.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Subject DN, e.g. `CN=root.linkerd.cluster.local`.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    /// Subject alternative names as `DNS:…`, `URI:…`, `IP:…`, `email:…`.
    pub sans: Vec<String>,
    /// The identity a Linkerd proxy would read from it (first DNS or URI SAN), for leaves.
    pub identity: Option<String>,
    /// A CA certificate (basicConstraints CA:TRUE).
    pub is_ca: bool,
    /// Self-signed (subject = issuer): a root.
    pub self_signed: bool,
    /// Not before, Unix seconds.
    pub not_before: i64,
    /// Not after, Unix seconds.
    pub not_after: i64,
}

impl Report {
    /// Describes one DER certificate.
    ///
    /// # Errors
    /// `Parse` when it is not an X.509 certificate.
    pub fn of(what: &str, der: &CertificateDer<'_>) -> Result<Self, Error> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| Error::Parse {
            what: what.to_owned(),
            reason: format!("not an X.509 certificate: {e}"),
        })?;
        let is_ca = cert.is_ca();
        Ok(Self {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: cert.raw_serial_as_string().replace(':', ""),
            sans: sans(&cert),
            identity: if is_ca {
                None
            } else {
                identity_of_cert(der).map(|id| id.to_string())
            },
            is_ca,
            self_signed: cert.subject() == cert.issuer(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// What the certificate is, in a word.
    pub fn kind(&self) -> &'static str {
        match (self.is_ca, self.self_signed) {
            (true, true) => "root CA (trust anchor)",
            (true, false) => "intermediate CA (issuer)",
            (false, _) => "leaf",
        }
    }

    /// Where `now` falls in the validity period.
    pub fn lifetime(&self, now: SystemTime) -> Lifetime {
        let now = crate::source::unix_seconds(now);
        let days = |seconds: i64| seconds as f64 / 86_400.0;
        if now > self.not_after {
            Lifetime::Expired {
                days_ago: days(now - self.not_after),
            }
        } else if now < self.not_before {
            Lifetime::NotYetValid
        } else {
            Lifetime::Valid {
                days_left: days(self.not_after - now),
                share_left: days(self.not_after - now)
                    / days((self.not_after - self.not_before).max(1)),
            }
        }
    }

    /// `not_before` as RFC 3339 text.
    pub fn not_before_text(&self) -> String {
        rfc3339(self.not_before)
    }

    /// `not_after` as RFC 3339 text.
    pub fn not_after_text(&self) -> String {
        rfc3339(self.not_after)
    }

    /// Human-readable lines, as `certs inspect` prints them.
    pub fn render(&self, now: SystemTime) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "  kind:      {}", self.kind());
        let _ = writeln!(out, "  subject:   {}", self.subject);
        let _ = writeln!(out, "  issuer:    {}", self.issuer);
        let _ = writeln!(out, "  serial:    {}", self.serial);
        if !self.sans.is_empty() {
            let _ = writeln!(out, "  SANs:      {}", self.sans.join(", "));
        }
        if let Some(id) = &self.identity {
            let _ = writeln!(out, "  identity:  {id}");
        }
        let _ = writeln!(
            out,
            "  valid:     {} → {}",
            rfc3339(self.not_before),
            rfc3339(self.not_after)
        );
        let state = match self.lifetime(now) {
            Lifetime::Expired { days_ago } => format!("EXPIRED {days_ago:.1} days ago"),
            Lifetime::NotYetValid => "NOT VALID YET".to_owned(),
            Lifetime::Valid { days_left, .. } => format!("{days_left:.1} days left"),
        };
        let _ = writeln!(out, "  status:    {state}");
        out
    }
}

/// Whether `chain` (a leaf or a CA first, then the intermediates it carries) chains to
/// `anchors` at `now`.
///
/// # Errors
/// A plain-language reason: who issued it and what the bundle holds instead, expiry, a
/// signature that does not match a same-named anchor.
pub fn chains_to(
    chain: &[CertificateDer<'static>],
    anchors: &TrustAnchors,
    now: SystemTime,
) -> Result<(), String> {
    let first = chain.first().ok_or("no certificate")?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(first).map_err(|e| format!("unparsable: {e}"))?;
    let held = anchors
        .anchors()
        .iter()
        .map(|a| a.subject.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    if !cert.is_ca() {
        return crate::verify::verify_chain(&tls_config::provider(), chain, anchors, now).map_err(
            |e| match e {
                Error::Untrusted(reason) if reason.starts_with("unknown issuer") => format!(
                    "it was issued by {} and no chain from it reaches an anchor in the bundle \
                     (the bundle holds: {held}); add that issuer's root to the bundle, or \
                     include the missing intermediate after the leaf",
                    cert.issuer()
                ),
                other => other.to_string(),
            },
        );
    }
    // A CA certificate: it is an anchor itself, or is signed by one (directly, or through the
    // intermediates that follow it in the file).
    let now_unix = crate::source::unix_seconds(now);
    if anchors.anchors().iter().any(|a| a.der == *first) {
        if now_unix > cert.validity().not_after.timestamp() {
            return Err("it is in the bundle but has expired".to_owned());
        }
        return Ok(());
    }
    let mut current = cert;
    let mut rest = chain[1..].iter();
    loop {
        if now_unix > current.validity().not_after.timestamp() {
            return Err(format!("{} has expired", current.subject()));
        }
        let same_name = anchors
            .anchors()
            .iter()
            .filter_map(|a| x509_parser::parse_x509_certificate(&a.der).ok())
            .filter(|(_, a)| a.subject() == current.issuer())
            .collect::<Vec<_>>();
        if same_name
            .iter()
            .any(|(_, a)| current.verify_signature(Some(a.public_key())).is_ok())
        {
            return Ok(());
        }
        if !same_name.is_empty() {
            return Err(format!(
                "the bundle has an anchor named {}, but it did not sign {}: it is a different \
                 root with the same name (a regenerated root?)",
                current.issuer(),
                current.subject()
            ));
        }
        let Some(next) = rest.next() else {
            return Err(format!(
                "it was issued by {}, which is not in the bundle (the bundle holds: {held})",
                current.issuer()
            ));
        };
        let (_, parent) =
            x509_parser::parse_x509_certificate(next).map_err(|e| format!("unparsable: {e}"))?;
        if current.verify_signature(Some(parent.public_key())).is_err() {
            return Err(format!(
                "{} is followed by {}, which did not sign it",
                current.subject(),
                parent.subject()
            ));
        }
        current = parent;
    }
}

fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(d) => Some(format!("DNS:{d}")),
            GeneralName::URI(u) => Some(format!("URI:{u}")),
            GeneralName::RFC822Name(e) => Some(format!("email:{e}")),
            GeneralName::IPAddress(ip) => Some(match ip.len() {
                4 => format!(
                    "IP:{}",
                    std::net::Ipv4Addr::from([ip[0], ip[1], ip[2], ip[3]])
                ),
                16 => {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(ip);
                    format!("IP:{}", std::net::Ipv6Addr::from(b))
                }
                _ => "IP:?".to_owned(),
            }),
            _ => None,
        })
        .collect()
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{unix}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issue::{Ca, LeafSpec, Validity};
    use std::time::Duration;

    const DAY: Duration = Duration::from_secs(86_400);

    fn leaf_of(ca: &Ca, id: &str) -> Vec<CertificateDer<'static>> {
        ca.leaf(&LeafSpec {
            identity: id,
            spiffe: Some("spiffe://mesh.test/ns/a/sa/b"),
            validity: Validity::from_now(DAY),
        })
        .unwrap()
        .chain
    }

    #[test]
    fn lifetime_places_a_moment_in_the_validity_period() {
        let root = Ca::root("root.mesh.test", Validity::from_now(10 * DAY)).unwrap();
        let report = Report::of("root", root.cert_der()).unwrap();
        let now = SystemTime::now();
        let Lifetime::Valid {
            days_left,
            share_left,
        } = report.lifetime(now + 6 * DAY)
        else {
            panic!("valid on day 6");
        };
        assert!((3.9..=4.1).contains(&days_left), "{days_left}");
        assert!((0.35..=0.45).contains(&share_left), "{share_left}");
        assert_eq!(report.lifetime(now - DAY), Lifetime::NotYetValid);
        let Lifetime::Expired { days_ago } = report.lifetime(now + 12 * DAY) else {
            panic!("expired on day 12");
        };
        assert!((1.9..=2.1).contains(&days_ago), "{days_ago}");
    }

    #[test]
    fn reports_name_kind_sans_identity_and_validity() {
        let root = Ca::root("root.mesh.test", Validity::from_now(10 * DAY)).unwrap();
        let issuer = root
            .issuer("issuer.mesh.test", Validity::from_now(5 * DAY))
            .unwrap();
        let chain = leaf_of(&issuer, "web.a.serviceaccount.identity.mesh.test");
        let leaf = Report::of("leaf", &chain[0]).unwrap();
        assert_eq!(leaf.kind(), "leaf");
        assert_eq!(
            leaf.identity.as_deref(),
            Some("web.a.serviceaccount.identity.mesh.test")
        );
        assert_eq!(
            leaf.sans,
            [
                "DNS:web.a.serviceaccount.identity.mesh.test",
                "URI:spiffe://mesh.test/ns/a/sa/b"
            ]
        );
        assert_eq!(leaf.issuer, "CN=issuer.mesh.test");
        let text = leaf.render(SystemTime::now());
        assert!(text.contains("days left"), "{text}");
        assert_eq!(
            Report::of("root", root.cert_der()).unwrap().kind(),
            "root CA (trust anchor)"
        );
        assert_eq!(
            Report::of("issuer", issuer.cert_der()).unwrap().kind(),
            "intermediate CA (issuer)"
        );
    }

    #[test]
    fn leaf_issuer_and_root_chain_to_their_bundle() {
        let root = Ca::root("root.mesh.test", Validity::from_now(10 * DAY)).unwrap();
        let issuer = root
            .issuer("issuer.mesh.test", Validity::from_now(5 * DAY))
            .unwrap();
        let anchors = TrustAnchors::from_pem("b", root.cert_pem().as_bytes()).unwrap();
        let now = SystemTime::now();
        assert_eq!(
            chains_to(&leaf_of(&issuer, "a.mesh.test"), &anchors, now),
            Ok(())
        );
        assert_eq!(
            chains_to(&[issuer.cert_der().clone()], &anchors, now),
            Ok(())
        );
        assert_eq!(chains_to(&[root.cert_der().clone()], &anchors, now), Ok(()));
    }

    #[test]
    fn foreign_and_same_named_roots_are_explained() {
        let root = Ca::root("root.mesh.test", Validity::from_now(10 * DAY)).unwrap();
        let twin = Ca::root("root.mesh.test", Validity::from_now(10 * DAY)).unwrap();
        let other = Ca::root("other.mesh.test", Validity::from_now(10 * DAY)).unwrap();
        let issuer = root
            .issuer("issuer.mesh.test", Validity::from_now(5 * DAY))
            .unwrap();
        let now = SystemTime::now();
        let other_bundle = TrustAnchors::from_pem("b", other.cert_pem().as_bytes()).unwrap();
        let why = chains_to(&[issuer.cert_der().clone()], &other_bundle, now).unwrap_err();
        assert!(why.contains("issued by CN=root.mesh.test"), "{why}");
        assert!(why.contains("CN=other.mesh.test"), "{why}");
        let why = chains_to(&leaf_of(&issuer, "a.mesh.test"), &other_bundle, now).unwrap_err();
        assert!(why.contains("issued by CN=issuer.mesh.test"), "{why}");

        let twin_bundle = TrustAnchors::from_pem("b", twin.cert_pem().as_bytes()).unwrap();
        let why = chains_to(&[issuer.cert_der().clone()], &twin_bundle, now).unwrap_err();
        assert!(why.contains("different root with the same name"), "{why}");
        let why = chains_to(&leaf_of(&issuer, "a.mesh.test"), &twin_bundle, now).unwrap_err();
        assert!(why.contains("different key"), "{why}");
    }

    #[test]
    fn expired_issuer_is_reported_as_expired() {
        let root = Ca::root("root.mesh.test", Validity::from_now(10 * DAY)).unwrap();
        let issuer = root
            .issuer("issuer.mesh.test", Validity::from_now(DAY))
            .unwrap();
        let anchors = TrustAnchors::from_pem("b", root.cert_pem().as_bytes()).unwrap();
        let later = SystemTime::now() + 2 * DAY;
        let why = chains_to(&[issuer.cert_der().clone()], &anchors, later).unwrap_err();
        assert!(why.contains("expired"), "{why}");
    }
}
