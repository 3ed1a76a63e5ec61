//! IdentityName parsing: never panics; Display → parse roundtrips.
#![no_main]

use identity::IdentityName;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(name) = text.parse::<IdentityName>() {
        let again: IdentityName = name.to_string().parse().expect("display output parses");
        assert_eq!(again, name);
    }
});
