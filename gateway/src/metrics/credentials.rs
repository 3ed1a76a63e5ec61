//! `control_identity_*`: the credentials in use, their refreshes and the trust anchors' expiry.

use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// `control_identity_*` families (Linkerd's names) and one expiry gauge per trust anchor.
#[derive(Default)]
pub struct IdentityMetrics {
    /// `control_identity_cert_expiration_timestamp_seconds`.
    pub cert_expiration: Gauge,
    /// `control_identity_cert_refresh_timestamp_seconds`.
    pub cert_refresh: Gauge,
    /// `control_identity_cert_refreshes_total{result}`.
    pub refreshes: Family<ResultLabels, Counter>,
    /// `control_identity_trust_anchor_expiration_timestamp_seconds{subject}`.
    pub anchor_expiration: Family<AnchorLabels, Gauge>,
}

/// `result="ok"|"error"`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// One trust anchor.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AnchorLabels {
    /// The anchor's subject DN.
    pub subject: String,
}

impl IdentityMetrics {
    /// Records credentials now in use: their expiry, this refresh, and the anchors' expiries
    /// (anchors no longer in the bundle disappear).
    pub fn installed(&self, not_after_unix: i64, anchors: &identity::TrustAnchors) {
        self.cert_expiration.set(not_after_unix);
        self.cert_refresh
            .set(identity::source::unix_seconds(SystemTime::now()));
        self.refreshes
            .get_or_create(&ResultLabels { result: "ok" })
            .inc();
        self.anchor_expiration.clear();
        for anchor in anchors.anchors() {
            self.anchor_expiration
                .get_or_create(&AnchorLabels {
                    subject: anchor.subject.clone(),
                })
                .set(anchor.not_after_unix);
        }
    }

    /// Records a refresh that failed (the credentials in use stay).
    pub fn failed(&self) {
        self.refreshes
            .get_or_create(&ResultLabels { result: "error" })
            .inc();
    }

    /// `control_identity_cert_refreshes_total{result}`.
    pub fn refresh_count(&self, result: &'static str) -> u64 {
        self.refreshes.get_or_create(&ResultLabels { result }).get()
    }
}
