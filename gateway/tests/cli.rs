//! The `meshgate` binary's command line: `run --check` and exit status 64 on bad configuration.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::process::Command;

use identity::testing::TestCa;
use support::{assert_mentions, identity_dir, meshgate, temp_dir};

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
    assert_mentions(
        &stderr,
        &[
            "listen",
            "connect_timeout",
            "unknown key unknown_knob",
            "gateway_suffixes is empty",
            "must be name:port",
            "no credentials",
            "no trust anchors",
        ],
    );
}

#[test]
fn check_on_a_destination_that_would_go_in_plaintext_exits_64() {
    let out = meshgate()
        .args(["run", "--check", "--cert", "/c.crt", "--key", "/c.key"])
        .args(["--trust-anchors", "/ca.crt"])
        .env(
            "LINKERD2_PROXY_DESTINATION_SVC_ADDR",
            "linkerd-dst-headless.linkerd.svc.cluster.local.:8086",
        )
        .env(
            "LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES",
            "svc.cluster.local.,bad name",
        )
        .env("LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT", "0s")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_mentions(
        &stderr,
        &[
            "is not a loopback address: set destination_svc_name",
            "destination_profile_suffixes",
            "discovery_idle_timeout must be greater than zero",
        ],
    );
    // Loopback in plaintext is allowed, as linkerd2-proxy allows it; a bad name is not.
    let out = meshgate()
        .args(["run", "--check", "--cert", "/c.crt", "--key", "/c.key"])
        .args(["--trust-anchors", "/ca.crt"])
        .env("LINKERD2_PROXY_DESTINATION_SVC_ADDR", "127.0.0.1:8086")
        .env("LINKERD2_PROXY_DESTINATION_SVC_NAME", "not a name")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert_mentions(
        &String::from_utf8_lossy(&out.stderr),
        &["destination_svc_name \"not a name\""],
    );
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

fn certs(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    meshgate()
        .current_dir(dir)
        .arg("certs")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn certs_root_issuer_leaf_chain_verify_and_serve() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = temp_dir("certs");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let gateway_id =
        "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local";
    for args in [
        &["root"][..],
        &[
            "issuer",
            "--ca",
            "ca.crt",
            "--ca-key",
            "ca.key",
            "--not-after",
            "8760h",
        ],
        &[
            "leaf",
            "--ca",
            "issuer.crt",
            "--ca-key",
            "issuer.key",
            "--identity",
            gateway_id,
            "--spiffe",
            "spiffe://cluster.local/ns/linkerd-multicluster/sa/linkerd-gateway",
            "--ttl",
            "24h",
        ],
    ] {
        let out = certs(&dir, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for key in ["ca.key", "issuer.key", "tls.key"] {
        let mode = std::fs::metadata(dir.join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    // webpki, always: the leaf file (leaf + issuer) validates against the root with its key.
    let anchors =
        identity::TrustAnchors::from_pem("ca.crt", &std::fs::read(dir.join("ca.crt")).unwrap())
            .unwrap();
    let creds =
        identity::Credentials::load(&dir.join("tls.crt"), &dir.join("tls.key"), &anchors).unwrap();
    assert_eq!(creds.identity().as_str(), gateway_id);
    // OpenSSL, when present.
    if Command::new("openssl").arg("version").output().is_ok() {
        let out = Command::new("openssl")
            .current_dir(&dir)
            .args([
                "verify",
                "-CAfile",
                "ca.crt",
                "-untrusted",
                "issuer.crt",
                "tls.crt",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl verify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new("openssl")
            .current_dir(&dir)
            .args(["verify", "-CAfile", "ca.crt", "issuer.crt"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl verify issuer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The gateway accepts the files as they are.
    std::fs::copy(dir.join("ca.crt"), dir.join("ca-bundle.crt")).unwrap();
    let out = meshgate()
        .args(["run", "--check", "--cert"])
        .arg(dir.join("tls.crt"))
        .arg("--key")
        .arg(dir.join("tls.key"))
        .arg("--trust-anchors")
        .arg(dir.join("ca-bundle.crt"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Existing files are not overwritten without --force.
    let out = certs(&dir, &["root"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
}

#[test]
fn certs_bundle_deduplicates_and_inspect_explains_a_foreign_root() {
    let dir = temp_dir("bundle");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for args in [
        &["root", "--cert", "old.crt", "--key", "old.key"][..],
        &[
            "root",
            "--cert",
            "new.crt",
            "--key",
            "new.key",
            "--name",
            "root-2.linkerd.cluster.local",
        ],
        &["issuer", "--ca", "new.crt", "--ca-key", "new.key"],
    ] {
        assert!(certs(&dir, args).status.success(), "{args:?}");
    }
    let out = certs(&dir, &["bundle", "old.crt", "new.crt", "old.crt"]);
    assert!(out.status.success());
    let pem = String::from_utf8(out.stdout).unwrap();
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2, "deduplicated");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already in the bundle"));
    std::fs::write(dir.join("bundle.crt"), &pem).unwrap();

    let out = certs(&dir, &["inspect", "issuer.crt", "--bundle", "bundle.crt"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("chains to bundle.crt: yes"), "{text}");
    assert!(text.contains("intermediate CA (issuer)"), "{text}");
    assert!(text.contains("days left"), "{text}");

    let out = certs(&dir, &["inspect", "issuer.crt", "--bundle", "old.crt"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("issued by CN=root-2.linkerd.cluster.local, which is not in the bundle"),
        "{text}"
    );
}

#[test]
fn check_on_a_bad_policy_file_exits_64_naming_each_problem() {
    let ca = TestCa::new("policy.mesh");
    let dir = identity_dir("policy", &ca.leaf("gw.policy.mesh"), &ca.anchors_pem());
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        "default: maybe\nrules:\n  - name: a\n    clients: []\n    targets: [{}]\n",
    )
    .unwrap();
    let out = meshgate()
        .args(["run", "--check", "--identity-dir"])
        .arg(&dir)
        .arg("--policy")
        .arg(&policy)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("default \"maybe\""), "{stderr}");
    assert!(
        stderr.contains("needs at least one client pattern"),
        "{stderr}"
    );
}

#[test]
fn manifests_with_bad_options_exit_64_naming_each_problem() {
    let out = meshgate()
        .args([
            "manifests",
            "--replicas",
            "0",
            "--namespace",
            "Not_A_Label",
            "--load-balancer-source-range",
            "10.0.0.0/40",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(out.stdout.is_empty(), "nothing rendered");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_mentions(
        &stderr,
        &["--replicas", "--namespace", "--load-balancer-source-range"],
    );
}

#[test]
fn the_configuration_reference_in_docs_is_up_to_date() {
    let out = meshgate().arg("config-reference").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let rendered = String::from_utf8(out.stdout).unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == rendered,
        "docs/configuration.md is out of date: run `cargo run -- config-reference > docs/configuration.md`"
    );
    // It is generated from the code: every key and every subcommand is in it.
    assert_mentions(
        &rendered,
        &[
            "| `drain_delay` | `5s` | `MESHGATE_DRAIN_DELAY` |",
            "### `meshgate manifests`",
            "### `meshgate check`",
            "`--remote HOST:PORT`",
        ],
    );
}

#[test]
fn bad_flag_values_exit_64_naming_every_flag_with_its_form() {
    let out = meshgate()
        .args([
            "run",
            "--check",
            "--endpoint",
            "bad",
            "--endpoint",
            "web.ns.svc.cluster.local:80=127.0.0.1:8080",
            "--log-format",
            "xml",
            "--listen",
            "nowhere",
            "--dns-min-ttl",
            "soon",
        ])
        .env("MESHGATE_MAX_CONNECTIONS", "many")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_mentions(
        &stderr,
        &[
            "--endpoint: expected NAME:PORT=IP:PORT",
            "--log-format: expected text or json, got \"xml\"",
            "--listen: expected an address",
            "--dns-min-ttl: expected a duration",
            "MESHGATE_MAX_CONNECTIONS: expected a whole number",
            "no credentials",
        ],
    );
}

#[test]
fn the_demo_walks_every_step_and_reaches_its_meshed_service_over_mtls() {
    let out = meshgate().arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_mentions(
        &stdout,
        &[
            "demo: every step behaved as expected",
            "pod proxy: 1 mTLS connection(s), caller linkerd-gateway.linkerd-multicluster",
            "SNI frontend.test.serviceaccount.identity.linkerd.cluster.local",
            "store.test.svc.cluster.local:8080 split 50/50 by its profile -> local pods",
            "outbound_profile_backend_weight{authority=\"store.test.svc.cluster.local:8080\",backend=\"store-west.test.svc.cluster.local:8080\"} 500",
            "ready: yes",
        ],
    );
}
