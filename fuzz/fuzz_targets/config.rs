//! Config YAML: never panics; an accepted config validates and re-renders to the same config.
#![no_main]

use gateway::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = Config::from_yaml(text) {
        assert!(config.validate().0.is_empty());
        assert_eq!(Config::from_yaml(&config.to_yaml()).ok(), Some(config));
    }
});
