//! A `Get` stream feeds one balancer: `Add` and `Remove` change its endpoint set in place,
//! `NoEndpoints` empties it (503 at once; `exists: false` says the service is unknown).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use linkerd2_proxy_api::destination::{Update, update};

use super::stream::{Usage, Watched, rejects_name};
use super::{Destination, convert};
use crate::metrics::{DstLabels, UpdateLabels};
use crate::target::Target;
use crate::upstream::balance::{Answer, Balancer};
use crate::upstream::{Address, discover};

impl Watched for Balancer {
    type Message = Update;
    /// The stream's endpoint set.
    type Seen = BTreeMap<SocketAddr, Address>;
    const METHOD: &'static str = "Get";

    fn target(&self) -> &Target {
        Balancer::target(self)
    }

    fn usage(&self) -> &Usage {
        &self.usage
    }

    async fn open(
        &self,
        destination: &Destination,
    ) -> Result<tonic::Streaming<Update>, tonic::Status> {
        destination.get(Balancer::target(self)).await
    }

    fn apply(&self, destination: &Destination, endpoints: &mut Self::Seen, message: Update) {
        let Some(update) = message.update else {
            return;
        };
        let count = |kind| {
            destination
                .metrics
                .destination
                .updates
                .get_or_create(&UpdateLabels { kind })
                .inc();
        };
        let target = Balancer::target(self);
        let mut missing = false;
        match update {
            update::Update::Add(added) => {
                count("add");
                if !added.metric_labels.is_empty() {
                    self.set_dst_labels(DstLabels::of(&added.metric_labels));
                }
                for weighted in &added.addrs {
                    match convert::address(weighted) {
                        Ok(address) => {
                            endpoints.insert(address.addr, address);
                        }
                        Err(e) => {
                            tracing::warn!(%target, error = %e, "destination endpoint left out");
                        }
                    }
                }
            }
            update::Update::Remove(removed) => {
                count("remove");
                for addr in removed.addrs {
                    if let Ok(addr) = convert::socket_addr(Some(addr)) {
                        endpoints.remove(&addr);
                    }
                }
            }
            update::Update::NoEndpoints(none) => {
                count("no_endpoints");
                endpoints.clear();
                missing = !none.exists;
            }
        }
        tracing::debug!(%target, endpoints = endpoints.len(), "destination endpoints");
        let list: discover::Endpoints = endpoints.values().cloned().collect();
        self.update(&list, None);
        self.set_answer(if missing {
            Answer::Failed(discover::Error::NotFound(target.to_string()))
        } else {
            Answer::Ready
        });
    }

    fn refused(&self, status: &tonic::Status) {
        let target = Balancer::target(self);
        let reason = format!("{:?}: {}", status.code(), status.message());
        self.set_answer(if rejects_name(status) {
            Answer::Failed(discover::Error::Rejected {
                name: target.to_string(),
                reason,
            })
        } else {
            Answer::Pending(Some(format!("destination Get: {reason}")))
        });
    }
}
