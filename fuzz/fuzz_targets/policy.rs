//! Policy YAML: never panics; an accepted policy decides for any caller and target without
//! panicking.
#![no_main]

use gateway::control::policy::Policy;
use gateway::target::{Suffixes, Target};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(policy) = Policy::from_yaml("fuzz", text) {
        let suffixes = Suffixes::new(["svc.cluster.local"]).expect("suffix");
        let target = Target::parse("web.prod.svc.cluster.local:8080", &suffixes).expect("target");
        for client in ["a.b.serviceaccount.identity.linkerd.cluster.local", "spiffe://td/ns/a/sa/b"] {
            let _ = policy.decide(&client.parse().expect("identity"), &target);
        }
    }
});
