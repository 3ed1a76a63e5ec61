//! Trust-anchor bundles from arbitrary PEM-ish bytes: never panics; a bundle that loads has roots.
#![no_main]

use identity::TrustAnchors;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(anchors) = TrustAnchors::from_pem("fuzz", data) {
        assert!(!anchors.anchors().is_empty());
    }
});
