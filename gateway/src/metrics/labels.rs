//! Label sets of every family, with Linkerd's label names; values are shared strings so a label
//! set costs reference counts, not copies.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

/// Linkerd's latency buckets, in milliseconds.
pub const LATENCY_BUCKETS_MS: [f64; 25] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
    1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0, 50000.0,
];

/// A shared string label value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Label(pub Arc<str>);

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

impl From<&str> for Label {
    fn from(s: &str) -> Self {
        Label(Arc::from(s))
    }
}

/// `dst_*` labels from the Destination API's metric labels of the endpoints' set (e.g.
/// `dst_namespace`, `dst_service`); empty for static and DNS endpoints. Names are made valid
/// Prometheus names (`[a-zA-Z0-9_]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DstLabels(pub Option<DstPairs>);

/// `dst_*` label names and values, sorted by name.
pub type DstPairs = Arc<[(Box<str>, Box<str>)]>;

impl DstLabels {
    /// The labels of `metric_labels`, sorted by name.
    pub fn of<'a>(metric_labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> Self {
        let mut labels: Vec<(Box<str>, Box<str>)> = metric_labels
            .into_iter()
            .map(|(key, value)| {
                let key: String = key
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                (format!("dst_{key}").into(), value.as_str().into())
            })
            .collect();
        labels.sort();
        labels.dedup_by(|a, b| a.0 == b.0);
        Self((!labels.is_empty()).then(|| labels.into()))
    }
}

impl EncodeLabelSet for DstLabels {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeLabel as _;
        for (key, value) in self.0.iter().flat_map(|labels| labels.iter()) {
            (&**key, &**value).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// Labels of the HTTP families: Linkerd's gateway reports them on its outbound side.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabels {
    /// Always `outbound` (the gateway forwards through its outbound side, spec §9.1).
    pub direction: &'static str,
    /// The target, `name:port`; empty when the request named no acceptable target.
    pub authority: Label,
    /// Always `true`: every caller is mTLS-authenticated.
    pub tls: &'static str,
    /// The caller's identity.
    pub client_id: Label,
    /// What discovery says of the service answering (`dst_*`).
    #[prometheus(flatten)]
    pub dst: DstLabels,
}

/// `RouteLabels` plus the outcome.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResponseLabels {
    /// The route.
    #[prometheus(flatten)]
    pub route: RouteLabels,
    /// The HTTP status sent downstream.
    pub status_code: u16,
    /// `success` or `failure` (5xx).
    pub classification: &'static str,
}

/// `RouteLabels` plus the status (Linkerd's `response_latency_ms` has no classification).
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LatencyLabels {
    /// The route.
    #[prometheus(flatten)]
    pub route: RouteLabels,
    /// The HTTP status sent downstream.
    pub status_code: u16,
}

/// Labels of the transport families.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TcpLabels {
    /// `inbound` for accepted connections, `outbound` for upstream ones.
    pub direction: &'static str,
    /// `src` for accepted connections, `dst` for upstream ones.
    pub peer: &'static str,
    /// `true` for mTLS (downstream, meshed pods), `no_identity` for plain TCP to local services.
    pub tls: &'static str,
    /// Downstream: the caller's identity. Upstream: empty.
    pub client_id: Label,
    /// Upstream: the target `name:port`. Downstream: empty.
    pub authority: Label,
    /// Upstream to a meshed pod: the identity it proved. Otherwise empty.
    pub server_id: Label,
    /// Upstream: the endpoint's `IP:PORT`. Downstream: empty.
    pub target_addr: Label,
}

impl TcpLabels {
    /// An accepted, authenticated connection from `client_id`.
    pub fn inbound(client_id: &str) -> Self {
        Self {
            direction: "inbound",
            peer: "src",
            tls: "true",
            client_id: client_id.into(),
            authority: Label::default(),
            server_id: Label::default(),
            target_addr: Label::default(),
        }
    }

    /// A connection to endpoint `addr` of `authority`: mTLS (`tls="true"`) when it is a meshed
    /// pod that proved `server_id`, else plaintext (`no_identity`).
    pub fn outbound(authority: Label, server_id: Option<&str>, addr: SocketAddr) -> Self {
        Self {
            direction: "outbound",
            peer: "dst",
            tls: if server_id.is_some() {
                "true"
            } else {
                "no_identity"
            },
            client_id: Label::default(),
            authority,
            server_id: server_id.map(Label::from).unwrap_or_default(),
            target_addr: Label(addr.to_string().into()),
        }
    }
}

/// `tcp_close_total` labels: the transport labels plus how it ended.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CloseLabels {
    /// The connection.
    #[prometheus(flatten)]
    pub tcp: TcpLabels,
    /// `""` for a clean close, else the error kind.
    pub errno: &'static str,
}

/// Why a connection was refused before any session began: the `reason` of
/// `gateway_handshakes_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The TLS handshake was refused.
    Handshake(identity::Refusal),
    /// The transport header was malformed or the stream ended before it.
    TransportHeader,
    /// No transport header before the detect deadline (counted with handshake timeouts).
    TransportHeaderTimeout,
    /// `max_connections` were open.
    MaxConnections,
    /// `accept` failed for want of file descriptors.
    OutOfFds,
}

impl Refused {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Handshake(refusal) => refusal.as_str(),
            Refused::TransportHeader => "bad_transport_header",
            Refused::TransportHeaderTimeout => identity::Refusal::Timeout.as_str(),
            Refused::MaxConnections => "max_connections",
            Refused::OutOfFds => "out_of_fds",
        }
    }
}

/// `gateway_handshakes_refused_total` labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RefusalLabels {
    /// [`Refused::label`].
    pub reason: &'static str,
}

/// `inbound_tcp_transport_header_connections_total` labels, exactly Linkerd's (spec §9.3).
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TransportHeaderLabels {
    /// `http/1`, `http/2` or `""` (opaque).
    pub session_protocol: &'static str,
    /// The header's port.
    pub target_port: u16,
    /// The header's name, `""` when absent.
    pub target_name: Label,
    /// The caller's identity.
    pub client_id: Label,
}

/// `inbound_tcp_errors_total` labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Linkerd's error label: `gateway domain invalid`, `gateway loop`, `i/o`,
    /// `tls detection timeout`, `unexpected`, `failfast`, `loadshed`.
    pub error: &'static str,
}

/// Authorization counter labels: the server and authorization that decided (the default
/// `all-authenticated` policy until a policy file names others).
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AuthzLabels {
    /// `default`.
    pub srv_kind: &'static str,
    /// `all-authenticated`.
    pub srv_name: Label,
    /// `default`.
    pub authz_kind: &'static str,
    /// `all-authenticated`.
    pub authz_name: Label,
    /// Always `true`.
    pub tls: &'static str,
    /// The caller's identity.
    pub client_id: Label,
}

impl AuthzLabels {
    /// `client_id` allowed by `by`.
    pub fn allowed(by: &Allowed, client_id: Label) -> Self {
        Self {
            srv_kind: "default",
            srv_name: by.srv_name.clone(),
            authz_kind: by.kind,
            authz_name: by.name.clone(),
            tls: "true",
            client_id,
        }
    }
}

/// What allowed a request or connection: a policy rule or the policy's default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowed {
    /// The policy's default (`all-authenticated` or `deny`): the `srv_name` label.
    pub srv_name: Label,
    /// `rule` or `default`.
    pub kind: &'static str,
    /// The rule's name, or the default's.
    pub name: Label,
}

impl Default for Allowed {
    fn default() -> Self {
        Self {
            srv_name: Label::from("all-authenticated"),
            kind: "default",
            name: Label::from("all-authenticated"),
        }
    }
}

/// One target.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AuthorityLabels {
    /// `name:port`.
    pub authority: Label,
}

/// A failed upstream connect.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ConnectErrorLabels {
    /// `name:port`.
    pub authority: Label,
    /// `refused`, `timeout`, `unresolved`, or a `tls_*` refusal.
    pub reason: &'static str,
}

/// `rule`: a rate-limit rule's text form.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RuleLabels {
    /// The rule.
    pub rule: Label,
}

/// Labels of `outbound_http_version_fallbacks_total`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FallbackLabels {
    /// `name:port`.
    pub authority: Label,
    /// The version the endpoint speaks only: `http1` or `http2`.
    pub speaks: &'static str,
}

/// Labels of `inbound_{http,tcp}_authz_deny_total`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DenyLabels {
    /// `default`.
    pub srv_kind: &'static str,
    /// The policy's default.
    pub srv_name: Label,
    /// `true`.
    pub tls: &'static str,
    /// The caller.
    pub client_id: Label,
    /// The target refused.
    pub authority: Label,
    /// `enforce` (refused) or `audit` (allowed, would have been refused).
    pub mode: &'static str,
}
