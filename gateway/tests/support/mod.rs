//! What the tests of the `meshgate` binary share.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

pub mod process;

use std::path::PathBuf;
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

/// The `meshgate` binary, without the caller's gateway environment.
pub fn meshgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshgate"));
    without_gateway_env(&mut cmd);
    cmd
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshgate-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Asserts that `text` contains every needle.
pub fn assert_mentions(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

/// A mounted-secret style directory: `tls.crt` and `tls.key` of `leaf`, `ca.crt` = `anchors_pem`.
pub fn identity_dir(name: &str, leaf: &identity::issue::Issued, anchors_pem: &str) -> PathBuf {
    let dir = temp_dir(name);
    std::fs::write(dir.join("tls.crt"), &leaf.chain_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &leaf.key_pem).unwrap();
    std::fs::write(dir.join("ca.crt"), anchors_pem).unwrap();
    dir
}
