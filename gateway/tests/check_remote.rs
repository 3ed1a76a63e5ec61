//! `meshgate check --remote` against a running `meshgate run`: handshake parameters, the
//! gateway's identity (given, or the configured one), `/ready` over mTLS and routing.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use gateway::cli::demo::{self, DemoPki};
use gateway::testing::eventually;
use http::StatusCode;
use support::checks;
use support::process::{Gateway, SERVICE, ready_status, services, start_gateway};

/// `meshgate check --remote … --output json` against `gw` as the demo's client, expecting
/// `identity`; returns the exit status and report.
async fn remote_check(
    pki: &DemoPki,
    gw: &Gateway,
    identity: &str,
    target: &str,
) -> (Option<i32>, serde_json::Value) {
    remote_check_as(
        pki,
        gw,
        "client",
        &["--gateway-identity", identity, "--target", target],
        &[],
    )
    .await
}

/// `meshgate check --remote … --output json` against `gw` with the demo PKI's `creds`
/// (`client` or `gateway`) and `args`, `env` added.
async fn remote_check_as(
    pki: &DemoPki,
    gw: &Gateway,
    creds: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Option<i32>, serde_json::Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshgate"));
    support::without_gateway_env(&mut cmd)
        .args(["check", "--output", "json", "--remote"])
        .arg(gw.data.to_string())
        .arg("--remote-admin")
        .arg(gw.admin.to_string())
        .args(args)
        .arg("--cert")
        .arg(pki.dir.join(format!("{creds}.crt")))
        .arg("--key")
        .arg(pki.dir.join(format!("{creds}.key")))
        .arg("--trust-anchors")
        .arg(pki.dir.join("ca.crt"))
        .envs(env.iter().copied());
    // The backend runs on this test's runtime: wait for the check off its threads.
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    support::check_report(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_remote_reports_the_handshake_readiness_and_routing_of_a_running_gateway() {
    let (dir, pki, backend, echo) = services("check").await;
    let gw = start_gateway(&pki, backend.addr, echo.addr, &[], None);
    let ready = eventually(Duration::from_secs(30), || async {
        ready_status(gw.admin).await == Some(StatusCode::OK)
    })
    .await;
    assert!(ready, "the gateway becomes ready");

    let (status, report) = remote_check(&pki, &gw, demo::GATEWAY_ID, SERVICE).await;
    assert_eq!(status, Some(0), "{report:#}");
    assert_eq!(report["ok"], true);
    let handshake = &checks(&report, "handshake")[0]["facts"];
    assert_eq!(handshake["tls_version"], "TLSv1_3");
    assert_eq!(handshake["alpn"], "transport.l5d.io/v1");
    assert_eq!(handshake["gateway_identity"], demo::GATEWAY_ID);
    assert!(
        handshake["cipher_suite"]
            .as_str()
            .unwrap()
            .starts_with("TLS13_"),
        "{handshake}"
    );
    assert_eq!(checks(&report, "ready")[0]["facts"]["status"], 200);
    let route = checks(&report, "route")[0];
    assert_eq!(route["status"], "ok", "{route}");
    assert_eq!(route["facts"]["status"], 200);

    // A target outside the allowlist: the gateway refuses it, and check says so.
    let (status, report) = remote_check(&pki, &gw, demo::GATEWAY_ID, "api.example.com:443").await;
    assert_eq!(status, Some(1), "{report:#}");
    assert_eq!(report["ok"], false);
    let route = checks(&report, "route")[0];
    assert_eq!(route["status"], "fail");
    assert!(
        route["detail"]
            .as_str()
            .unwrap()
            .contains("bad gateway domain"),
        "{route}"
    );

    // Announced under another identity: remote proxies would refuse the gateway.
    let wrong = "other.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local";
    let (status, report) = remote_check(&pki, &gw, wrong, SERVICE).await;
    assert_eq!(status, Some(1), "{report:#}");
    let handshake = checks(&report, "handshake")[0];
    assert_eq!(handshake["status"], "fail");
    assert!(
        handshake["detail"]
            .as_str()
            .unwrap()
            .contains(demo::GATEWAY_ID),
        "the error names the identity the gateway presented: {handshake}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_remote_without_gateway_identity_expects_the_configured_identity() {
    let (dir, pki, backend, echo) = services("check-configured").await;
    let gw = start_gateway(&pki, backend.addr, echo.addr, &[], None);
    let handshake = |report: &serde_json::Value| checks(report, "handshake")[0].clone();

    // identity_name (here from Linkerd's variable) is what the gateway must present.
    let env = [("LINKERD2_PROXY_IDENTITY_LOCAL_NAME", demo::GATEWAY_ID)];
    let (status, report) = remote_check_as(&pki, &gw, "client", &[], &env).await;
    assert_eq!(status, Some(0), "{report:#}");
    let check = handshake(&report);
    assert_eq!(
        check["facts"]["expected_identity"],
        demo::GATEWAY_ID,
        "{check}"
    );
    assert_eq!(check["facts"]["expected_from"], "identity_name", "{check}");

    // A configured identity_name the gateway does not have fails the handshake.
    let wrong = "other.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local";
    let env = [("MESHGATE_IDENTITY_NAME", wrong)];
    let (status, report) = remote_check_as(&pki, &gw, "client", &[], &env).await;
    assert_eq!(status, Some(1), "{report:#}");
    let check = handshake(&report);
    assert_eq!(check["status"], "fail", "{check}");
    assert_eq!(check["facts"]["expected_identity"], wrong, "{check}");
    // --gateway-identity wins over identity_name.
    let args = ["--gateway-identity", demo::GATEWAY_ID];
    let (status, report) = remote_check_as(&pki, &gw, "client", &args, &env).await;
    assert_eq!(status, Some(0), "{report:#}");
    assert_eq!(
        handshake(&report)["facts"]["expected_from"],
        "--gateway-identity"
    );

    // Without either, a gateway checked with its own configuration expects its certificate's.
    let (status, report) = remote_check_as(&pki, &gw, "gateway", &[], &[]).await;
    assert_eq!(status, Some(0), "{report:#}");
    let check = handshake(&report);
    assert_eq!(
        check["facts"]["gateway_identity"],
        demo::GATEWAY_ID,
        "{check}"
    );
    assert_eq!(
        check["facts"]["expected_from"], "the configured certificate",
        "{check}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
