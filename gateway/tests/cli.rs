//! The `meshgate` binary's command line: `run --check` and exit status 64 on bad configuration.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use identity::testing::TestCa;

fn meshgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshgate"));
    // The test's own environment must not configure the gateway under test.
    for (key, _) in std::env::vars() {
        if key.starts_with("MESHGATE_") || key.starts_with("LINKERD2_PROXY_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshgate-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A mounted-secret style directory: `tls.crt` and `tls.key` of `leaf`, `ca.crt` = `anchors_pem`.
fn identity_dir(name: &str, leaf: &identity::issue::Issued, anchors_pem: &str) -> PathBuf {
    let dir = temp_dir(name);
    std::fs::write(dir.join("tls.crt"), &leaf.chain_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &leaf.key_pem).unwrap();
    std::fs::write(dir.join("ca.crt"), anchors_pem).unwrap();
    dir
}

#[test]
fn check_on_a_bad_file_exits_64_naming_each_problem() {
    let dir = temp_dir("bad");
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "listen: nowhere\nconnect_timeout: soon\nunknown_knob: 1\ngateway_suffixes: []\nendpoints:\n  web.ns.svc.cluster.local: ['127.0.0.1:1']\n",
    )
    .unwrap();
    let out = meshgate()
        .args(["run", "--check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "listen",
        "connect_timeout",
        "unknown key unknown_knob",
        "gateway_suffixes is empty",
        "must be name:port",
        "no credentials",
        "no trust anchors",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
}

#[test]
fn check_on_unusable_credentials_exits_64() {
    let ca = TestCa::new("cli.mesh");
    let other = TestCa::new("other.mesh");
    let dir = identity_dir("creds", &other.leaf("gateway.cli.mesh"), &ca.anchors_pem());
    let out = meshgate()
        .args(["run", "--check", "--identity-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not chain to the trust anchors"),
        "{stderr}"
    );
}

#[test]
fn check_on_a_good_config_prints_the_effective_config() {
    let ca = TestCa::new("cli.mesh");
    let dir = identity_dir("good", &ca.leaf("gateway.cli.mesh"), &ca.anchors_pem());
    let out = meshgate()
        .args(["run", "--check", "--identity-dir"])
        .arg(&dir)
        .args([
            "--endpoint",
            "web.ns.svc.cluster.local:80=127.0.0.1:8080",
            "--listen",
            "127.0.0.1:14143",
        ])
        .env(
            "MESHGATE_GATEWAY_SUFFIXES",
            "svc.cluster.local,svc.east.local",
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("listen: 127.0.0.1:14143"), "{stdout}");
    assert!(stdout.contains("web.ns.svc.cluster.local:80"), "{stdout}");
    assert!(stdout.contains("svc.east.local"), "{stdout}");
}

#[test]
fn check_refuses_a_certificate_for_another_identity() {
    let ca = TestCa::new("cli.mesh");
    let dir = identity_dir("name", &ca.leaf("someone-else.cli.mesh"), &ca.anchors_pem());
    let out = meshgate()
        .args(["run", "--check", "--identity-dir"])
        .arg(&dir)
        .env("LINKERD2_PROXY_IDENTITY_LOCAL_NAME", "gateway.cli.mesh")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("someone-else.cli.mesh") && stderr.contains("gateway.cli.mesh"),
        "{stderr}"
    );
}

#[test]
fn run_with_unusable_credentials_exits_64_before_binding() {
    let ca = TestCa::new("cli.mesh");
    let other = TestCa::new("other.mesh");
    let dir = identity_dir(
        "run",
        &other.expired_leaf("gateway.cli.mesh"),
        &ca.anchors_pem(),
    );
    let out = meshgate()
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--identity-dir",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not chain"));
}
