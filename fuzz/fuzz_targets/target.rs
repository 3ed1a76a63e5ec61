//! Authorities → Target: never panics, never accepts a name outside the allowlist, an IP
//! literal or localhost.
#![no_main]

use gateway::target::{Suffixes, Target};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let suffixes = Suffixes::new(["svc.cluster.local"]).expect("static suffix");
    if let Ok(target) = Target::parse(text, &suffixes) {
        let name = target.name();
        assert!(name == "svc.cluster.local" || name.ends_with(".svc.cluster.local"), "{name}");
        assert!(!name.ends_with('.') && name.to_ascii_lowercase() == name);
        assert!(name.parse::<std::net::Ipv4Addr>().is_err());
        assert!(target.port() > 0);
        // What we format must parse back to the same target.
        assert_eq!(Target::parse(&target.to_string(), &suffixes).ok(), Some(target));
    }
    let any = Suffixes::new(["."]).expect("static suffix");
    if let Ok(target) = Target::parse(text, &any) {
        assert!(target.name() != "localhost" && !target.name().ends_with(".localhost"));
        assert!(target.name().parse::<std::net::IpAddr>().is_err());
    }
});
