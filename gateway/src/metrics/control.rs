//! `control_destination_*`: the Destination client's calls and what they answered, and the
//! profile splits in effect (`outbound_profile_backend_weight`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Label;

/// The Destination client's families.
#[derive(Default)]
pub struct DestinationMetrics {
    /// `control_destination_request_total{method}`: streams opened.
    pub requests: Family<MethodLabels, Counter>,
    /// `control_destination_response_total{method, classification, grpc_status}`: streams
    /// ended (or refused), by their gRPC status.
    pub responses: Family<GrpcLabels, Counter>,
    /// `control_destination_updates_total{kind}`: messages received.
    pub updates: Family<UpdateLabels, Counter>,
    /// `outbound_profile_backend_weight{authority, backend}`: each backend's weight in the
    /// target's profile split (absent without a split).
    pub splits: Family<SplitLabels, Gauge>,
    /// `outbound_split_requests_total{authority, backend}`: requests and opaque sessions each
    /// backend of a split was chosen for.
    pub split_requests: Family<SplitLabels, Counter>,
}

/// `method="Get"|"GetProfile"`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct MethodLabels {
    /// The gRPC method.
    pub method: &'static str,
}

/// One ended stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct GrpcLabels {
    /// The gRPC method.
    pub method: &'static str,
    /// `success` (the controller closed it with OK) or `failure`.
    pub classification: &'static str,
    /// The numeric gRPC status.
    pub grpc_status: i32,
}

/// One kind of message.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct UpdateLabels {
    /// `add`, `remove`, `no_endpoints` or `profile`.
    pub kind: &'static str,
}

/// One backend of a split.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SplitLabels {
    /// The logical target (`name:port`).
    pub authority: Label,
    /// The backend's `name:port`.
    pub backend: Label,
}

/// One failover event.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FailoverLabels {
    /// The target (`name:port`).
    pub authority: Label,
    /// `failover` or `failback`.
    pub event: &'static str,
    /// Where its traffic goes now: the target, a fallback target, or `gateway:<addr>`.
    pub backend: Label,
}

impl DestinationMetrics {
    /// Registers the families in `r`.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "control_destination_request",
            "Destination streams opened, by method",
            self.requests.clone(),
        );
        r.register(
            "control_destination_response",
            "Destination streams ended or refused, by method and gRPC status",
            self.responses.clone(),
        );
        r.register(
            "control_destination_updates",
            "Destination messages received, by kind",
            self.updates.clone(),
        );
        r.register(
            "outbound_profile_backend_weight",
            "Weight of each backend in a target's traffic split (config splits or dst_overrides)",
            self.splits.clone(),
        );
        r.register(
            "outbound_split_requests",
            "Requests and opaque sessions sent to each backend of a split",
            self.split_requests.clone(),
        );
    }

    /// Counts a stream that ended or was refused with `code`.
    pub fn ended(&self, method: &'static str, code: tonic::Code) {
        self.responses
            .get_or_create(&GrpcLabels {
                method,
                classification: if code == tonic::Code::Ok {
                    "success"
                } else {
                    "failure"
                },
                grpc_status: code as i32,
            })
            .inc();
    }
}
