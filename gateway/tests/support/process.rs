//! The harness of the process tests: the real `meshgate run` with the demo PKI, a slow HTTP
//! service and an opaque echo, and a plain admin client.

use std::collections::HashSet;
use std::convert::Infallible;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gateway::cli::client::MtlsClient;
use gateway::cli::demo::{self, DemoPki};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub const SERVICE: &str = "slow.test.svc.cluster.local:8080";
pub const ECHO: (&str, u16) = ("echo.test.svc.cluster.local", 7777);

/// A service that takes 20 ms per request and remembers the `x-req` ids it received.
pub struct SlowBackend {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<HashSet<String>>>,
}

pub async fn slow_backend() -> SlowBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let record = record.clone();
                    async move {
                        // `/slow` outlasts the drain delay of the test below.
                        let work = if req.uri().path() == "/slow" {
                            5000
                        } else {
                            20
                        };
                        if let Some(id) = req.headers().get("x-req") {
                            let id = id.to_str().unwrap_or_default().to_owned();
                            record.lock().unwrap().insert(id);
                        }
                        // A service's own work, not synchronisation.
                        tokio::time::sleep(Duration::from_millis(work)).await;
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                            b"done\n",
                        ))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    SlowBackend { addr, seen }
}

/// The gateway process, its addresses from its "serving" log line, and its stderr lines.
pub struct Gateway {
    pub child: Child,
    pub data: SocketAddr,
    pub admin: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

/// Starts `meshgate run` with the demo PKI, the two services, `env`, and when given a limit on
/// open file descriptors.
pub fn start_gateway(
    pki: &DemoPki,
    backend: SocketAddr,
    echo: SocketAddr,
    env: &[(&str, &str)],
    fd_limit: Option<u32>,
) -> Gateway {
    let dir = &pki.dir;
    let mut cmd = match fd_limit {
        Some(limit) => {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", &format!("ulimit -n {limit} && exec \"$0\" \"$@\"")])
                .arg(env!("CARGO_BIN_EXE_meshgate"));
            cmd
        }
        None => Command::new(env!("CARGO_BIN_EXE_meshgate")),
    };
    let mut child = super::without_gateway_env(&mut cmd)
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--cert")
        .arg(dir.join("gateway.crt"))
        .arg("--key")
        .arg(dir.join("gateway.key"))
        .arg("--trust-anchors")
        .arg(dir.join("ca.crt"))
        .args(["--endpoint", &format!("{SERVICE}={backend}")])
        .args(["--endpoint", &format!("{}:{}={echo}", ECHO.0, ECHO.1)])
        .args(["--log", "info"])
        .envs(env.iter().copied())
        .env("MESHGATE_WORKERS", "2")
        // Plain logs must come from the gateway seeing a pipe, not from the test's NO_COLOR.
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("meshgate serving") {
                let _ = tx.send(line.clone());
            }
            lines.lock().unwrap().push(line);
        }
    });
    let serving = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the gateway logs its addresses");
    assert!(
        !serving.contains('\x1b'),
        "colour codes in a log written to a pipe: {serving:?}"
    );
    let field = |name: &str| -> SocketAddr {
        let start = serving.find(name).unwrap() + name.len();
        let rest = &serving[start..];
        let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
        rest[..end].parse().unwrap()
    };
    Gateway {
        data: field("data_addr="),
        admin: field("admin_addr="),
        child,
        log,
    }
}

/// A fresh demo PKI in its own directory, the slow service and the opaque echo service.
pub async fn services(name: &str) -> (PathBuf, DemoPki, SlowBackend, demo::Backend) {
    let dir = std::env::temp_dir().join(format!("meshgate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pki = DemoPki::create(&dir).unwrap();
    let backend = slow_backend().await;
    let echo = demo::Backend::start_tcp_echo().await.unwrap();
    (dir, pki, backend, echo)
}

/// The process is ours: end it if the test stops early.
impl Drop for Gateway {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET path` on the admin port, plaintext; `None` when the gateway does not answer.
pub async fn admin_get(admin: SocketAddr, path: &str) -> Option<(StatusCode, String)> {
    let tcp = tokio::net::TcpStream::connect(admin).await.ok()?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "admin")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = send.send_request(req).await.ok()?;
    let status = response.status();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

pub async fn ready_status(admin: SocketAddr) -> Option<StatusCode> {
    admin_get(admin, "/ready").await.map(|(status, _)| status)
}

/// A trusted caller of the gateway at `data` (the demo PKI's client leaf) offering `alpn`.
pub fn trusted_client(pki: &DemoPki, data: SocketAddr, alpn: &[&[u8]]) -> MtlsClient {
    let creds = pki.client.credentials(&pki.anchors).unwrap();
    MtlsClient::new(Some(&creds), &pki.anchors, demo::GATEWAY_ID, data, alpn).unwrap()
}
