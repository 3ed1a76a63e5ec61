//! Forwarded header values for loop detection: never panics; our own element is always found.
#![no_main]

use gateway::proxy::forwarded;
use libfuzzer_sys::fuzz_target;

const GW: &str = "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local";

fuzz_target!(|data: &[u8]| {
    let _ = forwarded::names_by(data, GW);
    let mut with_ours = data.to_vec();
    with_ours.extend_from_slice(b", ");
    with_ours.extend_from_slice(forwarded::element(GW, "c", "h").as_bytes());
    assert!(forwarded::names_by(&with_ours, GW));
});
