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

/// The exit status and JSON report of a finished `meshgate check --output json`.
pub fn check_report(out: &std::process::Output) -> (Option<i32>, serde_json::Value) {
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

/// The checks named `name` in a `meshgate check` JSON report, in order.
pub fn checks<'a>(report: &'a serde_json::Value, name: &str) -> Vec<&'a serde_json::Value> {
    report["checks"]
        .as_array()
        .map(|all| all.iter().filter(|c| c["check"] == name).collect())
        .unwrap_or_default()
}
