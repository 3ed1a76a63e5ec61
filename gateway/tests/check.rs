//! `meshgate check` (local): the preflight's JSON report on good and bad setups — chains,
//! identities, expiry, ports, configuration, and the Linkerd-identity mode.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use identity::testing::TestCa;
use support::{identity_dir, meshgate, temp_dir};

/// `meshgate check … --output json`: the exit status and the report.
fn check_json(args: &[&std::ffi::OsStr]) -> (Option<i32>, serde_json::Value) {
    let out = meshgate()
        .args(["check", "--output", "json"])
        .args(args)
        .output()
        .unwrap();
    support::check_report(&out)
}

/// `name`'s statuses in a report, in order.
fn statuses(report: &serde_json::Value, name: &str) -> Vec<String> {
    support::checks(report, name)
        .iter()
        .map(|c| c["status"].as_str().unwrap().to_owned())
        .collect()
}

fn detail(report: &serde_json::Value, name: &str) -> String {
    support::checks(report, name)
        .iter()
        .map(|c| c["detail"].as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

const GATEWAY: &str = "gateway.mc.serviceaccount.identity.linkerd.cli.mesh";

#[test]
fn check_passes_a_good_setup_and_reports_days_left_of_each_certificate() {
    let ca = TestCa::new("cli.mesh");
    let dir = identity_dir("check-good", &ca.leaf(GATEWAY), &ca.anchors_pem());
    let (status, report) = check_json(&[
        "--identity-dir".as_ref(),
        dir.as_os_str(),
        "--gateway-identity".as_ref(),
        GATEWAY.as_ref(),
        "--listen=127.0.0.1:0".as_ref(),
        "--admin-listen=127.0.0.1:0".as_ref(),
    ]);
    assert_eq!(status, Some(0), "{report:#}");
    assert_eq!(report["ok"], true);
    for name in [
        "config",
        "trust anchors",
        "anchor expiry",
        "credentials",
        "leaf expiry",
        "identity",
    ] {
        assert_eq!(statuses(&report, name), ["ok"], "{name}: {report:#}");
    }
    // The test issuer lives 30 days: under the 60 days `linkerd check` also warns at; a warning
    // does not fail the check.
    assert_eq!(statuses(&report, "issuer expiry"), ["warn"]);
    assert_eq!(statuses(&report, "port"), ["ok", "ok"]);
    let leaf = support::checks(&report, "leaf expiry")[0];
    let days = leaf["facts"]["days_left"].as_f64().unwrap();
    assert!(
        days > 0.5 && days <= 1.0,
        "a 24h leaf has about a day left: {leaf}"
    );

    // The same, for a person.
    let out = meshgate()
        .arg("check")
        .arg("--identity-dir")
        .arg(&dir)
        .args(["--gateway-identity", GATEWAY])
        .args(["--listen=127.0.0.1:0", "--admin-listen=127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("passed, with 1 warning(s)"), "{text}");
    assert!(text.contains("WARN  issuer expiry"), "{text}");
    assert!(text.contains("days left"), "{text}");
}

#[test]
fn check_fails_on_a_foreign_chain_a_wrong_identity_and_a_taken_port() {
    let ca = TestCa::new("cli.mesh");
    let other = TestCa::new("other.mesh");
    let dir = identity_dir("check-bad", &other.leaf(GATEWAY), &ca.anchors_pem());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().map(|a| (a, taken)).unwrap();
    let (status, report) = check_json(&[
        "--identity-dir".as_ref(),
        dir.as_os_str(),
        "--gateway-identity".as_ref(),
        "meshgate.meshgate.serviceaccount.identity.linkerd.cli.mesh".as_ref(),
        format!("--listen={}", taken.0).as_ref(),
        "--admin-listen=127.0.0.1:0".as_ref(),
    ]);
    assert_eq!(status, Some(1), "{report:#}");
    assert_eq!(report["ok"], false);
    assert_eq!(statuses(&report, "credentials"), ["fail"]);
    assert!(
        detail(&report, "credentials").contains("does not chain to the trust anchors"),
        "{report:#}"
    );
    assert_eq!(statuses(&report, "identity"), ["fail"]);
    assert!(detail(&report, "identity").contains(GATEWAY), "{report:#}");
    assert_eq!(statuses(&report, "port"), ["fail", "ok"]);
}

#[test]
fn check_fails_on_an_expired_leaf_and_on_a_bad_config() {
    let ca = TestCa::new("cli.mesh");
    let dir = identity_dir(
        "check-expired",
        &ca.expired_leaf(GATEWAY),
        &ca.anchors_pem(),
    );
    let (status, report) = check_json(&[
        "--identity-dir".as_ref(),
        dir.as_os_str(),
        "--listen=127.0.0.1:0".as_ref(),
        "--admin-listen=127.0.0.1:0".as_ref(),
    ]);
    assert_eq!(status, Some(1), "{report:#}");
    assert_eq!(statuses(&report, "leaf expiry"), ["fail"]);
    assert!(
        detail(&report, "leaf expiry").contains("expired"),
        "{report:#}"
    );
    assert_eq!(statuses(&report, "credentials"), ["fail"]);
    // Without --gateway-identity or identity_name there is nothing to compare against.
    assert_eq!(statuses(&report, "identity"), ["warn"]);

    let (status, report) = check_json(&["--listen".as_ref(), "nowhere".as_ref()]);
    assert_eq!(status, Some(1), "{report:#}");
    assert_eq!(statuses(&report, "config"), ["fail"]);
    assert!(detail(&report, "config").contains("listen"), "{report:#}");
}

#[test]
fn check_with_linkerd_identity_checks_the_token_instead_of_files() {
    let ca = TestCa::new("cli.mesh");
    let dir = temp_dir("check-certify");
    let anchors = dir.join("ca.crt");
    std::fs::write(&anchors, ca.anchors_pem()).unwrap();
    let token = dir.join("token");
    let run = |token_exists: bool| {
        if token_exists {
            std::fs::write(&token, "a-token").unwrap();
        } else {
            let _ = std::fs::remove_file(&token);
        }
        let out = meshgate()
            .args([
                "check",
                "--output",
                "json",
                "--identity-svc-addr",
                "127.0.0.1:1",
            ])
            .arg("--trust-anchors")
            .arg(&anchors)
            .args(["--listen=127.0.0.1:0", "--admin-listen=127.0.0.1:0"])
            .env("LINKERD2_PROXY_IDENTITY_LOCAL_NAME", GATEWAY)
            .env("LINKERD2_PROXY_IDENTITY_TOKEN_FILE", &token)
            .output()
            .unwrap();
        support::check_report(&out)
    };
    let (status, report) = run(false);
    assert_eq!(status, Some(1), "{report:#}");
    assert_eq!(statuses(&report, "credentials"), ["fail"]);
    assert!(
        detail(&report, "credentials").contains("token"),
        "{report:#}"
    );
    let (status, report) = run(true);
    assert_eq!(status, Some(0), "{report:#}");
    assert_eq!(statuses(&report, "credentials"), ["ok"]);
    assert!(
        detail(&report, "credentials").contains(GATEWAY),
        "{report:#}"
    );
    assert_eq!(statuses(&report, "anchor expiry"), ["ok"]);
}

/// `meshgate check` run off the test's runtime (the controller answers on it).
async fn check_json_async(args: Vec<std::ffi::OsString>) -> (Option<i32>, serde_json::Value) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        check_json(&args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reaches_the_destination_controller_verifies_it_and_looks_up_a_target() {
    use gateway::cli::demo::Controller;
    use gateway::cli::demo::controller::{Endpoints, weighted};
    const CONTROLLER: &str = "linkerd-destination.linkerd.serviceaccount.identity.linkerd.cli.mesh";
    const WEB: &str = "web.test.svc.cluster.local:80";
    let ca = TestCa::new("cli.mesh");
    let dir = identity_dir("check-destination", &ca.leaf(GATEWAY), &ca.anchors_pem());
    let controller = Controller::start(Some((&ca.credentials(CONTROLLER), &ca.anchors())))
        .await
        .unwrap();
    controller.set_endpoints(
        WEB,
        Endpoints::Set(vec![weighted("10.1.0.5:80".parse().unwrap(), 1)]),
    );
    let args = |name: &str, lookup: &str| -> Vec<std::ffi::OsString> {
        vec![
            "--identity-dir".into(),
            dir.clone().into(),
            "--listen=127.0.0.1:0".into(),
            "--admin-listen=127.0.0.1:0".into(),
            format!("--destination-svc-addr={}", controller.addr).into(),
            "--lookup".into(),
            lookup.into(),
            "--timeout=2s".into(),
            "--config".into(),
            {
                let file = temp_dir(&format!("check-destination-{name}")).join("c.yaml");
                std::fs::write(&file, format!("destination_svc_name: {name}\n")).unwrap();
                file.into()
            },
        ]
    };
    let (status, report) = check_json_async(args(CONTROLLER, WEB)).await;
    assert_eq!(status, Some(0), "{report:#}");
    assert!(
        detail(&report, "destination").contains(&format!("it proved {CONTROLLER}")),
        "{report:#}"
    );
    assert!(
        detail(&report, "profile").contains("service web.test.svc.cluster.local"),
        "{report:#}"
    );
    assert_eq!(statuses(&report, "endpoints"), ["ok"]);
    assert!(detail(&report, "endpoints").contains("1 endpoint(s), 0 meshed"));

    let (status, report) =
        check_json_async(args(CONTROLLER, "gone.test.svc.cluster.local:80")).await;
    assert_eq!(status, Some(1));
    assert!(
        detail(&report, "endpoints").contains("no such service"),
        "{report:#}"
    );

    let wrong = "someone.linkerd.serviceaccount.identity.linkerd.cli.mesh";
    let (status, report) = check_json_async(args(wrong, WEB)).await;
    assert_eq!(status, Some(1));
    assert!(
        detail(&report, "destination").contains("identity mismatch"),
        "{report:#}"
    );
}
