//! Destination messages as a controller may send them: decoding and reading them never panics;
//! every endpoint accepted passes its own checks and survives the text form; a profile read
//! gives positive weights or a per-pod endpoint.
#![no_main]

use gateway::target::{Suffixes, Target};
use gateway::upstream::Address;
use gateway::upstream::destination::{convert, explain_profile};
use libfuzzer_sys::fuzz_target;
use linkerd2_proxy_api::destination::{DestinationProfile, Update, update};
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let target = Target::parse("web.ns.svc.cluster.local:80", &Suffixes::all()).expect("target");
    if let Ok(Update {
        update: Some(update::Update::Add(set)),
    }) = Update::decode(data)
    {
        for weighted in &set.addrs {
            if let Ok(address) = convert::address(weighted) {
                assert!(address.check().is_ok());
                assert!(address.weight > 0);
                let text = address.to_string();
                assert_eq!(text.parse::<Address>().as_ref(), Ok(&address), "{text}");
            }
        }
    }
    if let Ok(profile) = DestinationProfile::decode(data) {
        let path = String::from_utf8_lossy(data);
        if let Ok(explained) = explain_profile(&target, profile, &http::Method::GET, &path) {
            assert!(explained.backends.iter().all(|(_, weight)| *weight > 0));
            assert!(explained.endpoint.is_some() != !explained.backends.is_empty());
        }
    }
});
