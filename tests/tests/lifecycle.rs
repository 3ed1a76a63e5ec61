//! Identity lifecycle, black-box: credential files rotated under traffic, trust-anchor rotation,
//! bad files refused while the old material keeps serving, Kubernetes `..data` swaps, readiness
//! on expiry, and credentials from a Linkerd identity service (Certify) with renewal and retry.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use gateway::app::{self, Bound, LoadedIdentity, Reload};
use gateway::cli::client::MtlsClient;
use gateway::cli::demo::Backend;
use gateway::config::Config;
use identity::issue::Validity;
use identity::source::{AnchorSource, FileSource};
use identity::testing::{IdentityServer, TestCa};
use identity::{Credentials, TrustAnchors};
use support::secret::SecretDir;
use support::{GATEWAY_ID, H1, SERVICE, SOON, admin_get, assert_refused, eventually, routed_get};

const CLIENT: &str = "web.east.serviceaccount.identity.linkerd.cluster.local";

struct Gateway {
    bound: Bound,
    _backend: Backend,
}

async fn start(config: impl FnOnce(&mut Config)) -> Gateway {
    start_with(config, None).await
}

/// As [`start`], with `identity` instead of the credentials the config names.
async fn start_with(config: impl FnOnce(&mut Config), identity: Option<LoadedIdentity>) -> Gateway {
    let backend = Backend::start("podinfo").await.unwrap();
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        credentials_poll_interval: Duration::from_millis(10),
        ..Config::default()
    };
    c.endpoints
        .insert(SERVICE.to_owned(), vec![backend.addr.into()]);
    config(&mut c);
    let bound = match identity {
        Some(identity) => app::start(&c, identity, None).await,
        None => app::bind(&c, None).await,
    };
    Gateway {
        bound: bound.unwrap(),
        _backend: backend,
    }
}

async fn start_from_dir(dir: &Path) -> Gateway {
    let dir = dir.to_owned();
    start(move |c| c.identity_dir = Some(dir)).await
}

fn client(gw: &Gateway, creds: &Credentials, anchors: &TrustAnchors) -> MtlsClient {
    MtlsClient::new(Some(creds), anchors, GATEWAY_ID, gw.bound.data_addr, H1).unwrap()
}

/// The leaf the gateway presents on a new handshake.
async fn served_leaf(client: &MtlsClient) -> Vec<u8> {
    let tls = client.connect().await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

async fn answered(client: &MtlsClient) -> bool {
    match client.http1().await {
        Ok(mut send) => {
            matches!(send.send_request(routed_get(SERVICE)).await, Ok(r) if r.status() == 200)
        }
        Err(_) => false,
    }
}

async fn refreshes(gw: &Gateway, result: &str) -> u64 {
    let prefix = format!("control_identity_cert_refreshes_total{{result=\"{result}\"}} ");
    support::metric(gw.bound.admin_addr, &prefix).await
}

fn bundle(cas: &[&TestCa]) -> String {
    cas.iter().map(|ca| ca.anchors_pem()).collect()
}

fn anchors(cas: &[&TestCa]) -> TrustAnchors {
    TrustAnchors::from_pem("bundle", bundle(cas).as_bytes()).unwrap()
}

#[tokio::test]
async fn leaf_rotates_under_live_traffic_without_a_failed_request() {
    let ca = TestCa::new("rotate.mesh");
    let mut dir = SecretDir::new("rotate");
    dir.publish(&ca.leaf(GATEWAY_ID), &ca.anchors_pem());
    let gw = start_from_dir(&dir.root).await;
    let client = Arc::new(client(&gw, &ca.credentials(CLIENT), &ca.anchors()));

    let stop = Arc::new(AtomicBool::new(false));
    let hammer = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, 0u32);
            while !stop.load(Ordering::Relaxed) {
                // A new connection every few requests: handshakes across the swap, too.
                let Ok(mut send) = client.http1().await else {
                    failed += 1;
                    continue;
                };
                for _ in 0..4 {
                    match send.send_request(routed_get(SERVICE)).await {
                        Ok(r) if r.status() == 200 => ok += 1,
                        _ => failed += 1,
                    }
                }
            }
            (ok, failed)
        })
    };
    let next = ca.leaf(GATEWAY_ID);
    dir.publish(&next, &ca.anchors_pem());
    let new_serial = next.chain[0].to_vec();
    assert!(
        eventually(SOON, || async { served_leaf(&client).await == new_serial }).await,
        "new handshakes never saw the new leaf"
    );
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = hammer.await.unwrap();
    assert_eq!(
        failed, 0,
        "{failed} requests failed during the rotation ({ok} ok)"
    );
    assert!(ok > 0);
    assert_eq!(refreshes(&gw, "ok").await, 2, "the start and one reload");
}

#[tokio::test]
async fn trust_anchor_rotation_adds_a_root_then_drops_the_old_one() {
    let old = TestCa::new("old.mesh");
    let new = TestCa::new("new.mesh");
    let mut dir = SecretDir::new("anchors");
    dir.publish(&old.leaf(GATEWAY_ID), &old.anchors_pem());
    let gw = start_from_dir(&dir.root).await;
    // Callers trust both roots for the gateway's certificate, as during a real rotation.
    let both = anchors(&[&old, &new]);
    let old_caller = client(&gw, &old.credentials(CLIENT), &both);
    let new_caller = client(&gw, &new.credentials(CLIENT), &both);
    assert!(answered(&old_caller).await);
    assert_refused(&new_caller).await;

    // Step 1: old root + new root.
    dir.publish(&old.leaf(GATEWAY_ID), &bundle(&[&old, &new]));
    assert!(
        eventually(SOON, || answered(&new_caller)).await,
        "new root never trusted"
    );
    assert!(answered(&old_caller).await);

    // Step 2: the gateway's leaf from the new issuer, and only the new root.
    dir.publish(&new.leaf(GATEWAY_ID), &new.anchors_pem());
    assert!(
        eventually(SOON, || async { !answered(&old_caller).await }).await,
        "old root still trusted"
    );
    assert_refused(&old_caller).await;
    assert!(answered(&new_caller).await);
    let (_, text) = admin_get(gw.bound.admin_addr, "/metrics").await;
    let gauges: Vec<_> = text
        .lines()
        .filter(|l| l.starts_with("control_identity_trust_anchor_expiration_timestamp_seconds{"))
        .collect();
    assert_eq!(gauges.len(), 1, "one gauge per anchor in use: {gauges:?}");
    assert!(gauges[0].contains("CN=root.new.mesh"), "{gauges:?}");
}

#[tokio::test]
async fn a_bad_key_or_a_corrupt_certificate_is_refused_and_the_old_leaf_keeps_serving() {
    let ca = TestCa::new("bad.mesh");
    let mut dir = SecretDir::new("bad");
    let first = ca.leaf(GATEWAY_ID);
    dir.publish(&first, &ca.anchors_pem());
    let gw = start_from_dir(&dir.root).await;
    let caller = client(&gw, &ca.credentials(CLIENT), &ca.anchors());
    let serial = first.chain[0].to_vec();

    dir.overwrite("tls.key", &ca.leaf(GATEWAY_ID).key_pem);
    assert!(eventually(SOON, || async { refreshes(&gw, "error").await == 1 }).await);
    assert_eq!(served_leaf(&caller).await, serial);
    assert!(answered(&caller).await);

    dir.overwrite(
        "tls.crt",
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    );
    assert!(eventually(SOON, || async { refreshes(&gw, "error").await == 2 }).await);
    assert_eq!(served_leaf(&caller).await, serial);
    assert!(answered(&caller).await);
    assert_eq!(refreshes(&gw, "ok").await, 1, "nothing was swapped in");
    assert_eq!(admin_get(gw.bound.admin_addr, "/ready").await.0, 200);
}

#[tokio::test]
async fn explicit_cert_and_key_files_replaced_by_rename_are_reloaded() {
    let ca = TestCa::new("files.mesh");
    let dir = SecretDir::new("files");
    let (cert, key, anchors_file) = (
        dir.root.join("a.crt"),
        dir.root.join("a.key"),
        dir.root.join("roots.pem"),
    );
    let first = ca.leaf(GATEWAY_ID);
    std::fs::write(&cert, &first.chain_pem).unwrap();
    std::fs::write(&key, &first.key_pem).unwrap();
    std::fs::write(&anchors_file, ca.anchors_pem()).unwrap();
    let gw = {
        let (cert, key, anchors_file) = (cert.clone(), key.clone(), anchors_file.clone());
        start(move |c| {
            c.cert = Some(cert);
            c.key = Some(key);
            c.trust_anchors = Some(anchors_file);
        })
        .await
    };
    let caller = client(&gw, &ca.credentials(CLIENT), &ca.anchors());
    let next = ca.leaf(GATEWAY_ID);
    for (path, text) in [(&key, &next.key_pem), (&cert, &next.chain_pem)] {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
    let serial = next.chain[0].to_vec();
    assert!(eventually(SOON, || async { served_leaf(&caller).await == serial }).await);
}

#[tokio::test]
async fn ready_is_503_while_the_leaf_in_use_has_expired_and_200_after_a_reload() {
    // No waiting for a certificate to run out: the gateway loaded its leaf 10 s ago, when it was
    // valid; it expired 5 s ago. (The test CA is valid from 20 s ago.)
    let ca = TestCa::new("expiry.mesh");
    let now = SystemTime::now();
    let short = ca.leaf_with(
        GATEWAY_ID,
        Validity {
            not_before: now - Duration::from_secs(15),
            not_after: now - Duration::from_secs(5),
        },
    );
    let mut dir = SecretDir::new("expiry");
    dir.publish(&short, &ca.anchors_pem());
    let source = FileSource {
        cert: dir.root.join("tls.crt"),
        key: dir.root.join("tls.key"),
        anchors: AnchorSource::File(dir.root.join("ca.crt")),
    };
    let (material, watcher) = source
        .load_and_watch_at(now - Duration::from_secs(10))
        .unwrap();
    let identity = LoadedIdentity {
        anchors: material.anchors,
        credentials: material.credentials,
        reload: Reload::Files {
            watcher: Box::new(watcher),
            interval: Duration::from_millis(10),
        },
    };
    let gw = start_with(|_| {}, Some(identity)).await;
    let (status, body) = admin_get(gw.bound.admin_addr, "/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("certificate expired"), "{body}");
    // A valid leaf brings it back without a restart.
    dir.publish(&ca.leaf(GATEWAY_ID), &ca.anchors_pem());
    assert!(
        eventually(SOON, || async {
            admin_get(gw.bound.admin_addr, "/ready").await.0 == 200
        })
        .await
    );
}

#[tokio::test]
async fn credentials_come_from_certify_and_are_renewed_after_an_error() {
    let ca = Arc::new(TestCa::new("certify.mesh"));
    // Leaves live 1.5 s: renewal is due after ~1 s (70 %), and retries 50 ms after an error.
    let server = IdentityServer::start(ca.clone(), b"sa-token", Duration::from_millis(1500)).await;
    let dir = SecretDir::new("certify");
    let token = dir.root.join("token");
    std::fs::write(&token, "sa-token").unwrap();
    let roots = dir.root.join("roots.pem");
    std::fs::write(&roots, ca.anchors_pem()).unwrap();
    let gw = {
        let (addr, name) = (server.addr.to_string(), server.name.clone());
        start(move |c| {
            c.identity_svc_addr = Some(addr);
            c.identity_svc_name = name;
            c.identity_token_file = token;
            c.identity_name = Some(GATEWAY_ID.to_owned());
            c.trust_anchors = Some(roots);
            c.identity_min_refresh = Duration::from_millis(50);
        })
        .await
    };
    assert_eq!(server.calls(), 1);
    let caller = client(&gw, &ca.credentials(CLIENT), &ca.anchors());
    // The first leaf, or already its renewal (due after ~1 s) on a slow machine.
    assert!(server.issued().contains(&served_leaf(&caller).await));
    assert!(answered(&caller).await);
    server.fail_next(1);
    assert!(
        eventually(SOON, || async {
            gw.bound.metrics.identity.refresh_count("error") == 1
        })
        .await,
        "the failed renewal was not counted"
    );
    assert!(
        eventually(SOON, || async {
            gw.bound.metrics.identity.refresh_count("ok") >= 2
        })
        .await,
        "no renewal after the error"
    );
    let issued = server.issued();
    assert!(issued.len() >= 2);
    assert!(
        eventually(SOON, || async {
            issued.contains(&served_leaf(&caller).await) && served_leaf(&caller).await != issued[0]
        })
        .await,
        "new handshakes never saw a renewed leaf"
    );
    assert!(answered(&caller).await);
}
