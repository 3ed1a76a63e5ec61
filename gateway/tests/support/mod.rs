//! What the tests of the `meshgate` binary share.

#![allow(dead_code, unreachable_pub)]

use std::process::Command;

/// Removes the caller's `MESHGATE_*` and `LINKERD2_PROXY_*` variables from `cmd`: the test's own
/// environment must not configure the gateway under test.
pub fn without_gateway_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars() {
        if key.starts_with("MESHGATE_") || key.starts_with("LINKERD2_PROXY_") {
            cmd.env_remove(key);
        }
    }
    cmd
}
