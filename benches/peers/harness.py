#!/usr/bin/env python3
"""Side-by-side benchmark of the gateway hop (run through run.sh).

meshgate, nginx, HAProxy, Caddy and Envoy are configured as mTLS gateways with the same PKI,
client-certificate verification and routing on `l5d-dst-override`; an nginx that answers itself
over mTLS (routes nothing) is the practical limit. Each gateway is pinned to CPU 0 with one
worker; the load generator (oha) and the backend (nginx) share CPU 1. Workloads run interleaved
(every target once per repetition, in a rotating order) and the medians are reported.
"""

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path

GATEWAY_CORE = "0"
LOAD_CORE = 1
SERVICE = "svc.bench.svc.cluster.local:80"
SERVICE_H2 = "svc-h2.bench.svc.cluster.local:80"
# The same backend behind a meshed pod: meshgate dials the pod over mTLS as its own identity.
SERVICE_MESHED = "svc-meshed.bench.svc.cluster.local:80"
POD_ID, POD_PORT = "pod.bench.local", 19007
BACKEND_H1, BACKEND_H2 = 18080, 18081
PORTS = {"meshgate": 19001, "nginx": 19002, "haproxy": 19003, "caddy": 19004, "envoy": 19005, "terminator": 19006}
MESHGATE_ADMIN = 19101
PEERS = ["nginx", "haproxy", "caddy", "envoy"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

WORKLOADS = {
    "A": ("HTTP/1.1 keep-alive, 64 connections, small responses", ["-c", "64"], "/", SERVICE),
    "B": ("HTTP/2, 4 connections x 32 streams, small responses, to the HTTP/1-only backend",
          ["--http2", "-c", "4", "-p", "32"], "/", SERVICE),
    "B-h2c": ("as B, to the backend's h2c port (HTTP/2 end to end)", ["--http2", "-c", "4", "-p", "32"], "/", SERVICE_H2),
    "C-full": ("a new mTLS connection per request, 8 at a time, session resumption off on every target",
               ["-c", "8", "--disable-keepalive"], "/", SERVICE),
    "C-resumed": ("a new mTLS connection per request, 8 at a time, session resumption on on every target",
                  ["-c", "8", "--disable-keepalive"], "/", SERVICE),
    "D": ("1 MiB responses, 8 connections", ["-c", "8"], "/1m", SERVICE),
    "E": ("fixed 5,000 req/s, 64 connections, latency corrected for coordinated omission",
          ["-c", "64", "-q", "5000", "--latency-correction"], "/", SERVICE),
}
# Which workloads run with session resumption on everywhere (the targets are restarted for them).
RESUMED = {"C-resumed"}

# meshgate only (the peers' configs route no meshed service): the gateway -> meshed pod hop over
# mTLS, against A and D, whose hop is plaintext. The pod is nginx terminating mTLS (verifying the
# gateway's certificate) in front of the same backend, on the load core.
MESHED_WORKLOADS = {
    "M": ("as A, the upstream hop mTLS to a meshed pod", ["-c", "64"], "/", SERVICE_MESHED),
    "MD": ("as D, the upstream hop mTLS to a meshed pod", ["-c", "8"], "/1m", SERVICE_MESHED),
}

# meshgate only: what a Linkerd client proxy sends a gateway (benches/src/bin/l5d-load.rs): mTLS
# with SNI = the gateway identity and ALPN transport.l5d.io/v1, a transport header, HTTP/2 with
# l5d-orig-proto: HTTP/1.1, many streams over a few connections; forwarded to the HTTP/1 backend
# (G, G3) or to the meshed pod over mTLS (H). No peer speaks it: compare with B's peers.
L5D_WORKLOADS = {
    "G": ("Linkerd client: transport header + HTTP/2 (l5d-orig-proto), 4 connections x 32 streams, to the HTTP/1 backend",
          ["--connections", "4", "--streams", "32"], "/", SERVICE),
    "H": ("as G, the gateway -> meshed pod hop over mTLS", ["--connections", "4", "--streams", "32"], "/", SERVICE_MESHED),
    "G3": ("as G, 1 MiB responses, 4 connections x 2 streams", ["--connections", "4", "--streams", "2"], "/1m", SERVICE),
}


def run(*argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


# === PKI ===

def make_pki(d: Path):
    """ECDSA P-256 root -> issuer -> leaves (gateway, client), plus a foreign root and client."""
    def key(name):
        run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", str(d / f"{name}.key"))

    def ext(name, text):
        (d / f"{name}.ext").write_text(text)
        return str(d / f"{name}.ext")

    def sign(name, issuer, extensions, days=30):
        run("openssl", "req", "-new", "-key", str(d / f"{name}.key"), "-subj", f"/CN={name}.bench.local",
            "-out", str(d / f"{name}.csr"))
        run("openssl", "x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / f"{issuer}.crt"),
            "-CAkey", str(d / f"{issuer}.key"), "-CAcreateserial", "-days", str(days), "-sha256",
            "-extfile", ext(name, extensions), "-out", str(d / f"{name}.crt"))

    for root in ["root", "foreign-root"]:
        key(root)
        run("openssl", "req", "-x509", "-new", "-key", str(d / f"{root}.key"), "-subj", f"/CN={root}.bench.local",
            "-days", "365", "-sha256", "-addext", "basicConstraints=critical,CA:TRUE,pathlen:1",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", str(d / f"{root}.crt"))
    key("issuer")
    sign("issuer", "root", "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n")
    leaf = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n"
    for name, issuer, sans in [("gateway", "issuer", "DNS:gateway.bench.local,IP:127.0.0.1"),
                               ("pod", "issuer", f"DNS:{POD_ID}"),
                               ("client", "issuer", "DNS:client.bench.local"),
                               ("foreign", "foreign-root", "DNS:intruder.other.example")]:
        key(name)
        sign(name, issuer, leaf + f"subjectAltName={sans}\n", days=2)
        chain = (d / f"{name}.crt").read_text() + ((d / "issuer.crt").read_text() if issuer == "issuer" else "")
        (d / f"{name}.chain").write_text(chain)
    (d / "gateway.pem").write_text((d / "gateway.chain").read_text() + (d / "gateway.key").read_text())
    (d / "1m.bin").write_bytes(os.urandom(1 << 20))


# === configurations ===

def nginx(d: Path, name: str, servers: str) -> str:
    """One nginx instance: one worker, no daemon, long keep-alive, `servers` inside `http`."""
    return f"""
worker_processes 1; daemon off; pid {d}/{name}.pid; error_log {d}/{name}.err warn; worker_rlimit_nofile 40000;
events {{ worker_connections 20000; }}
http {{
  access_log off; keepalive_requests 10000000; keepalive_timeout 300s;
{servers}
}}"""


# A small answer at `/`, the 1 MiB file at `/1m`.
ANSWERS = 'location / {{ return 200 "ok\\n"; }} location = /1m {{ alias {d}/1m.bin; }}'


def nginx_backend(d: Path) -> str:
    answers = ANSWERS.format(d=d)
    return nginx(d, "backend", f"""
  server {{ listen 127.0.0.1:{BACKEND_H1}; {answers} }}
  server {{ listen 127.0.0.1:{BACKEND_H2} http2; {answers} }}""")


def tls_nginx(d: Path, resume: bool) -> str:
    sessions = ("ssl_session_tickets on; ssl_session_cache shared:SSL:20m; ssl_session_timeout 1h;" if resume
                else "ssl_session_tickets off; ssl_session_cache off;")
    return (f"ssl_certificate {d}/gateway.chain; ssl_certificate_key {d}/gateway.key;\n"
            f"ssl_client_certificate {d}/root.crt; ssl_verify_client on; ssl_verify_depth 2;\n"
            f"ssl_protocols TLSv1.3; {sessions}")


def nginx_gateway(d: Path, resume: bool) -> str:
    # nginx cannot proxy HTTP/2 upstream except by grpc_pass, which speaks plain HTTP/2 as well.
    return nginx(d, "nginx", f"""
  upstream backend {{ server 127.0.0.1:{BACKEND_H1}; keepalive 128; }}
  upstream backend_h2 {{ server 127.0.0.1:{BACKEND_H2}; keepalive 128; }}
  map $http_l5d_dst_override $routed {{ "{SERVICE}" 1; "{SERVICE_H2}" 2; default 0; }}
  server {{ listen 127.0.0.1:{PORTS['nginx']} ssl http2; {tls_nginx(d, resume)}
    location / {{ if ($routed = 0) {{ return 404; }} if ($routed = 2) {{ rewrite ^ /h2c$uri last; }}
      proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header l5d-client-id $ssl_client_s_dn; proxy_max_temp_file_size 0; }}
    location /h2c/ {{ internal; rewrite ^/h2c(.*)$ $1 break;
      grpc_pass grpc://backend_h2; grpc_set_header l5d-client-id $ssl_client_s_dn; }} }}""")


def nginx_terminator(d: Path, resume: bool) -> str:
    return nginx(d, "terminator", f"""
  server {{ listen 127.0.0.1:{PORTS['terminator']} ssl http2; {tls_nginx(d, resume)}
    {ANSWERS.format(d=d)} }}""")


def nginx_pod(d: Path) -> str:
    """A meshed pod's proxy: mTLS as POD_ID (no ALPN), the caller's certificate verified, then the
    backend over plaintext keep-alive."""
    return nginx(d, "pod", f"""
  upstream app {{ server 127.0.0.1:{BACKEND_H1}; keepalive 128; }}
  server {{ listen 127.0.0.1:{POD_PORT} ssl; ssl_certificate {d}/pod.chain; ssl_certificate_key {d}/pod.key;
    ssl_client_certificate {d}/root.crt; ssl_verify_client on; ssl_verify_depth 2; ssl_protocols TLSv1.3;
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_max_temp_file_size 0; }} }}""")


def haproxy_gateway(d: Path, resume: bool) -> str:
    sessions = "" if resume else " no-tls-tickets\n  tune.ssl.cachesize 0"
    return f"""
global
  nbthread 1
  # Two descriptors per connection under this machine's hard limit of 20,000.
  maxconn 9950
  ssl-default-bind-options ssl-min-ver TLSv1.3{sessions}
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  option http-keep-alive
frontend gateway
  bind 127.0.0.1:{PORTS['haproxy']} ssl crt {d}/gateway.pem ca-file {d}/root.crt verify required alpn h2,http/1.1
  http-request return status 404 unless {{ req.hdr(l5d-dst-override) -m str {SERVICE} {SERVICE_H2} }}
  http-request set-header l5d-client-id %[ssl_c_s_dn(cn)]
  use_backend service_h2 if {{ req.hdr(l5d-dst-override) -m str {SERVICE_H2} }}
  default_backend service
backend service
  http-reuse always
  server backend 127.0.0.1:{BACKEND_H1}
backend service_h2
  http-reuse always
  server backend 127.0.0.1:{BACKEND_H2} proto h2
"""


def caddy_gateway(d: Path) -> str:
    return f"""{{
  auto_https off
  admin off
  servers {{
    strict_sni_host insecure_off
  }}
}}
# No host: one TLS policy (with client_auth) for every SNI, including none (clients by IP).
https://:{PORTS['caddy']} {{
  tls {d}/gateway.chain {d}/gateway.key {{
    protocols tls1.3
    client_auth {{
      mode require_and_verify
      trusted_ca_cert_file {d}/root.crt
    }}
  }}
  @routed header l5d-dst-override {SERVICE}
  @routed2 header l5d-dst-override {SERVICE_H2}
  handle @routed {{
    reverse_proxy 127.0.0.1:{BACKEND_H1}
  }}
  handle @routed2 {{
    reverse_proxy h2c://127.0.0.1:{BACKEND_H2}
  }}
  handle {{
    respond 404
  }}
}}
"""


def envoy_gateway(d: Path, resume: bool) -> str:
    routes = "".join(f"""
              - match: {{prefix: "/", headers: [{{name: l5d-dst-override, string_match: {{exact: "{s}"}}}}]}}
                route: {{cluster: {c}}}""" for s, c in ((SERVICE, "backend"), (SERVICE_H2, "backend_h2")))
    sessions = "" if resume else """
          disable_stateless_session_resumption: true
          disable_stateful_session_resumption: true"""
    return f"""
static_resources:
  listeners:
  - address: {{socket_address: {{address: 127.0.0.1, port_value: {PORTS['envoy']}}}}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true{sessions}
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_params: {{tls_minimum_protocol_version: TLSv1_3}}
            tls_certificates: [{{certificate_chain: {{filename: {d}/gateway.chain}}, private_key: {{filename: {d}/gateway.key}}}}]
            validation_context: {{trusted_ca: {{filename: {d}/root.crt}}}}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: gateway
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:{routes}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: backend
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {BACKEND_H1}}}}}}}}}]}}]
  - name: backend_h2
    connect_timeout: 1s
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: backend_h2
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {BACKEND_H2}}}}}}}}}]}}]
"""


def caddy_json(d: Path, resume: bool) -> Path:
    """The Caddyfile adapted to JSON, where session tickets can be switched off (the Caddyfile has
    no such option)."""
    (d / "Caddyfile").write_text(caddy_gateway(d))
    config = json.loads(run("caddy", "adapt", "--config", str(d / "Caddyfile"), "--adapter", "caddyfile").stdout)
    if not resume:
        config.setdefault("apps", {}).setdefault("tls", {})["session_tickets"] = {"disabled": True}
    path = d / f"caddy-{'resume' if resume else 'full'}.json"
    path.write_text(json.dumps(config))
    return path


def commands(d: Path, args, resume: bool = True) -> dict:
    """name -> (argv, env) for every gateway; `resume`: whether they let callers resume TLS
    sessions (tickets or a cache), or make every connection a full handshake."""
    tag = "resume" if resume else "full"
    files = {"backend.conf": nginx_backend(d), "pod.conf": nginx_pod(d), f"nginx-{tag}.conf": nginx_gateway(d, resume),
             f"terminator-{tag}.conf": nginx_terminator(d, resume), f"haproxy-{tag}.cfg": haproxy_gateway(d, resume),
             f"envoy-{tag}.yaml": envoy_gateway(d, resume)}
    for name, text in files.items():
        (d / name).write_text(text)
    caddy = caddy_json(d, resume) if shutil.which("caddy") else d / "no-caddy.json"
    meshgate = [args.meshgate, "run", "--listen", f"127.0.0.1:{PORTS['meshgate']}",
                "--admin-listen", f"127.0.0.1:{MESHGATE_ADMIN}", "--cert", f"{d}/gateway.chain",
                "--key", f"{d}/gateway.key", "--trust-anchors", f"{d}/root.crt", "--log", "warn",
                # HTTP/2 callers of the HTTP/1-only backend: meshgate learns that it speaks only
                # HTTP/1 (upstream_protocol auto) and translates.
                "--endpoint", f"{SERVICE}=127.0.0.1:{BACKEND_H1}",
                "--endpoint", f"{SERVICE_H2}=127.0.0.1:{BACKEND_H2}",
                "--endpoint", f"{SERVICE_MESHED}=127.0.0.1:{POD_PORT};identity={POD_ID}"]
    base = dict(os.environ)
    return {
        # header_read_timeout is also meshgate's keep-alive limit: 300 s, as the peers'.
        "meshgate": (meshgate, {**base, "MESHGATE_WORKERS": "1", "MESHGATE_SHUTDOWN_GRACE_PERIOD": "1s",
                                "MESHGATE_HEADER_READ_TIMEOUT": "300s",
                                "MESHGATE_TLS_SESSION_TICKETS": "true" if resume else "false"}),
        "nginx": (["nginx", "-p", str(d), "-e", f"{d}/nginx.err", "-c", f"{d}/nginx-{tag}.conf"], base),
        "haproxy": (["haproxy", "-db", "-f", f"{d}/haproxy-{tag}.cfg"], base),
        "caddy": (["caddy", "run", "--config", str(caddy)],
                  {**base, "GOMAXPROCS": "1", "HOME": str(d), "XDG_DATA_HOME": str(d), "XDG_CONFIG_HOME": str(d)}),
        "envoy": ([args.envoy, "-c", f"{d}/envoy-{tag}.yaml", "--concurrency", "1", "--disable-hot-restart",
                   "-l", "error", "--base-id", "7"], base),
        "terminator": (["nginx", "-p", str(d), "-e", f"{d}/terminator.err", "-c", f"{d}/terminator-{tag}.conf"], base),
    }


# === processes ===

class Proc:
    """A process we started, pinned to a core; its CPU time and RSS include its children."""

    def __init__(self, name, argv, env, core, log: Path):
        self.name = name
        self.log = open(log, "w")
        self.popen = subprocess.Popen(["taskset", "-c", str(core), *argv], env=env, stdout=self.log,
                                      stderr=subprocess.STDOUT, start_new_session=True)

    def pids(self):
        children = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                ppid = int(stat[stat.rindex(")") + 2:].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
        found, todo = [], [self.popen.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def cpu_seconds(self):
        """(user, system) CPU seconds of the process tree."""
        user = system = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            user, system = user + int(fields[11]), system + int(fields[12])  # utime, stime
        return user / CLK_TCK, system / CLK_TCK

    def rss_kib(self):
        total = 0
        for pid in self.pids():
            try:
                pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
            except OSError:
                continue
            total += pages * PAGE // 1024
        return total

    def stop(self):
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self.log.close()


def wait_port(port, proc: Proc, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.popen.poll() is not None:
            raise SystemExit(f"{proc.name} exited with {proc.popen.returncode}; see its log")
        try:
            import socket
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{proc.name} did not listen on {port}")


# === load ===

def curl_status(d: Path, port, cert=None):
    # HTTP/1.1: the plain service behind every gateway is an HTTP/1 backend (meshgate forwards
    # HTTP/2 as HTTP/2, so its HTTP/2 workload uses the backend's h2c port).
    argv = ["curl", "-s", "--http1.1", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "--cacert", f"{d}/root.crt",
            "--resolve", f"gateway.bench.local:{port}:127.0.0.1", "-H", f"l5d-dst-override: {SERVICE}"]
    if cert:
        argv += ["--cert", f"{d}/{cert}.chain", "--key", f"{d}/{cert}.key"]
    result = subprocess.run(argv + [f"https://gateway.bench.local:{port}/"], capture_output=True, text=True)
    return result.stdout.strip() or "000"


def oha(d: Path, port, workload, seconds):
    _, opts, path, service = {**WORKLOADS, **MESHED_WORKLOADS}[workload]
    argv = ["oha", "-z", f"{seconds}s", "--no-tui", "--output-format", "json", "--cert", f"{d}/client.chain",
            "--key", f"{d}/client.key", "--cacert", f"{d}/root.crt", "-H", f"l5d-dst-override: {service}",
            *opts, f"https://127.0.0.1:{port}{path}"]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"oha failed: {result.stderr[-500:]}")
    return json.loads(result.stdout)


def measure(d, proc, port, workload, seconds):
    user0, sys0 = proc.cpu_seconds()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = oha(d, port, workload, seconds)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user1, sys1 = proc.cpu_seconds()
    client = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cpu, kernel = (user1 - user0) + (sys1 - sys0), sys1 - sys0
    codes = report.get("statusCodeDistribution", {})
    ok = int(codes.get("200", 0))
    # Requests still in flight when the run's time is up are cancelled by oha, not failed.
    failed = sum(int(n) for code, n in codes.items() if code != "200") + sum(
        int(n) for error, n in report.get("errorDistribution", {}).items() if "deadline" not in error)
    summary, pct = report["summary"], report.get("latencyPercentiles", {})
    elapsed = summary.get("total") or seconds
    ms = lambda key: (pct.get(key) or 0) * 1000
    return {"rps": ok / elapsed, "ok": ok, "failed": failed, "p50": ms("p50"), "p99": ms("p99"),
            "p999": ms("p99.9"), "cpu_us": cpu * 1e6 / ok if ok else float("nan"),
            "sys_us": kernel * 1e6 / ok if ok else float("nan"),
            "mib_s": (summary.get("sizePerSec") or 0) / (1 << 20),
            # oha's own CPU per response: in C a full handshake costs the client about as much as
            # the server, and the client shares its core with the backend.
            "client_cpu_us": client * 1e6 / ok if ok else float("nan")}


def l5d_load(d: Path, port, workload, seconds, load_bin):
    """One run of the Linkerd-client load generator; adds its own CPU time per response."""
    _, opts, path, service = L5D_WORKLOADS[workload]
    argv = ["taskset", "-c", str(LOAD_CORE), load_bin, "load", "--addr", f"127.0.0.1:{port}",
            "--server-name", "gateway.bench.local", "--ca", f"{d}/root.crt", "--cert", f"{d}/client.chain",
            "--key", f"{d}/client.key", "--target", service, "--path", path, "--seconds", str(seconds), *opts]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(argv, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"l5d-load failed: {result.stderr[-500:]}")
    out = json.loads(result.stdout)
    client = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out["client_cpu_us"] = client * 1e6 / out["ok"] if out["ok"] else float("nan")
    return out


def measure_l5d(d, proc, port, workload, seconds, load_bin):
    user0, sys0 = proc.cpu_seconds()
    out = l5d_load(d, port, workload, seconds, load_bin)
    user1, sys1 = proc.cpu_seconds()
    cpu, kernel = (user1 - user0) + (sys1 - sys0), sys1 - sys0
    ok = out["ok"]
    out["cpu_us"] = cpu * 1e6 / ok if ok else float("nan")
    out["sys_us"] = kernel * 1e6 / ok if ok else float("nan")
    return out


def tls_probe(d: Path, port, load_bin):
    """What a target negotiates with a rustls client (oha's library and defaults): TLS version,
    key exchange group, and whether a second connection with the same session cache resumed."""
    argv = [load_bin, "probe", "--addr", f"127.0.0.1:{port}", "--server-name", "gateway.bench.local",
            "--ca", f"{d}/root.crt", "--cert", f"{d}/client.chain", "--key", f"{d}/client.key",
            "--dst-override", SERVICE]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        return {"version": "?", "group": "?", "second": f"error: {result.stderr.strip()[-120:]}"}
    first, second = json.loads(result.stdout)
    return {"version": first["version"], "group": first["group"], "second": second["handshake"]}


async def hold_connections(d: Path, port, count):
    """Opens `count` mTLS connections, each after one HTTP/1.1 request (as a real caller leaves
    them: the buffers a request needed have been touched), then idle; returns them (the caller
    closes)."""
    ctx = ssl.create_default_context(cafile=str(d / "root.crt"))
    ctx.load_cert_chain(str(d / "client.chain"), str(d / "client.key"))
    ctx.set_alpn_protocols(["http/1.1"])
    limit = asyncio.Semaphore(100)
    writers = []

    async def one():
        async with limit:
            connect = asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="gateway.bench.local")
            reader, writer = await asyncio.wait_for(connect, timeout=10)
            writer.write(f"GET / HTTP/1.1\r\nHost: {SERVICE}\r\nl5d-dst-override: {SERVICE}\r\n\r\n".encode())
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            if not head.startswith(b"HTTP/1.1 200"):
                writer.close()
                raise RuntimeError(f"the request before idling got {head[:40]!r}")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await asyncio.wait_for(reader.readexactly(length), timeout=10)
            writers.append((reader, writer))

    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, Exception)]
    # Idle means idle: let the server finish its side of the last handshakes and every target's
    # idle handling act (meshgate parks an HTTP/1 connection after 250–500 ms without traffic).
    await asyncio.sleep(2.5)
    return writers, errors


def memory(d, proc, port, fresh_kib):
    """RSS fresh from start, and the growth per idle mTLS connection held open (each after one
    request)."""
    idle = proc.rss_kib()
    out = {"idle_kib": fresh_kib, "before_kib": idle}
    for count in (1000, 10000):
        loop = asyncio.new_event_loop()
        writers, errors = loop.run_until_complete(hold_connections(d, port, count))
        out[f"rss_{count}_kib"] = proc.rss_kib()
        # Held = still open when measured (a target that closed idle connections frees them).
        out[f"held_{count}"] = sum(1 for reader, _ in writers if not reader.at_eof())
        out[f"errors_{count}"] = len(errors) + len(writers) - out[f"held_{count}"]
        for _, writer in writers:
            writer.close()
        loop.run_until_complete(asyncio.sleep(0.5))
        loop.close()
        time.sleep(1.0)
    held = max(out["held_10000"], 1)
    out["kib_per_conn"] = (out["rss_10000_kib"] - idle) / held
    return out


# === report ===

def meshed_hop(d, meshgate, args):
    """A vs M and D vs MD on meshgate, interleaved, with the stand-in pod running."""
    pod = Proc("pod", ["nginx", "-p", str(d), "-e", f"{d}/pod.err", "-c", f"{d}/pod.conf"],
               dict(os.environ), LOAD_CORE, d / "pod.log")
    samples = {wl: [] for wl in ("A", "M", "D", "MD")}
    try:
        wait_port(POD_PORT, pod)
        for _ in range(args.reps):
            for wl in samples:
                sample = measure(d, meshgate, PORTS["meshgate"], wl, args.seconds)
                samples[wl].append(sample)
                print(f"meshed-hop {wl:3} {sample['rps']:10,.0f} req/s  cpu {sample['cpu_us']:7.1f} µs/req", flush=True)
    finally:
        pod.stop()
    return {wl: median_rows(s) for wl, s in samples.items()}


def median_rows(samples):
    keys = samples[0].keys()
    return {k: statistics.median(s[k] for s in samples) for k in keys}


def fmt(x, digits=1):
    return "n/a" if x != x else f"{x:,.{digits}f}"


def report(saved, args, versions):
    results, mem, refusals, tls = saved["results"], saved["memory"], saved["refusals"], saved["tls"]
    lines = ["# Side-by-side results", "",
             f"Generated on {time.strftime('%Y-%m-%d', time.gmtime(saved['started']))} by `{saved.get('command', 'run.sh')}` "
             f"(through `benches/peers/run.sh`; {args.reps} interleaved repetitions of {args.seconds} s per workload and target; medians).", "",
             "Machine: " + machine_facts(), "",
             "Each gateway runs pinned to CPU 0 with one worker (meshgate `MESHGATE_WORKERS=1`, nginx "
             "`worker_processes 1`, HAProxy `nbthread 1`, Caddy `GOMAXPROCS=1`, Envoy `--concurrency 1`); "
             "the load generator and the backend (nginx: `return 200` and a 1 MiB file, HTTP/1.1 on one port, "
             "h2c on another) share CPU 1. Every gateway routes on `l5d-dst-override` to the same HTTP/1-only "
             "backend port (B-h2c: to the h2c port), with the same certificates and client-certificate "
             "verification. CPU µs/request is the gateway process tree's user+system time over the requests "
             "answered 200 (\"of it kernel\": the system part, mostly loopback TCP and the wake-ups it causes). "
             "`terminator` is an nginx that answers itself over mTLS (routes nothing): the practical limit.", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    lines += ["## TLS as negotiated", "",
              "A rustls client with oha's library and defaults (`l5d-load probe`: aws-lc-rs, key shares "
              "X25519MLKEM768 and X25519 offered) connects twice with one session cache; \"second\" is how the "
              "second connection's handshake went, with the target's resumption off (every workload but "
              "C-resumed) and on (C-resumed).", "",
              "| target | version | key exchange | second connection, resumption off | second connection, resumption on |",
              "|---|---|---|---|---|"]
    for name in ["meshgate", *PEERS, "terminator"]:
        t = tls.get(name, {})
        full, resumed = t.get("full", {}), t.get("resumed", {})
        lines.append(f"| {name} | {full.get('version', '?')} | {full.get('group', '?')} | {full.get('second', '?')} | {resumed.get('second', '?')} |")
    lines += ["", "A different key exchange is different TLS work: X25519MLKEM768 (a post-quantum hybrid) costs "
              "an ML-KEM-768 encapsulation on top of X25519 and ~2.2 KB more in the handshake; where the "
              "groups differ, C compares unequal work, and says so here.", ""]
    lines += ["## Refusals", "", "| target | no client cert | foreign client cert |", "|---|---|---|"]
    for name, (no_cert, foreign) in refusals.items():
        lines.append(f"| {name} | {no_cert} | {foreign} |")
    lines += ["", "A refusal is any answer but 200 (000 = the handshake failed).", ""]
    for wl, (desc, *_rest) in WORKLOADS.items():
        if wl not in results:
            continue
        lines += workload_table(wl, desc, results[wl])
    lines += l5d_table(results.get("l5d"), results.get("B"))
    lines += meshed_table(results.get("meshed"))
    lines += workers_table(results.get("workers"))
    lines += targets_table(results, mem)
    lines += ["Why the missed targets are missed, with the profiles and how to reproduce them: "
              "[PROFILE.md](PROFILE.md).", ""]
    lines += ["## F: memory", "",
              "Measured on a freshly restarted target (resumption on, the default); every connection does one "
              "HTTP/1.1 request, then idles.", "",
              "| target | idle RSS MiB (fresh) | RSS before the connections MiB | with 1,000 idle mTLS conns MiB | with 10,000 MiB | KiB per idle conn | held / errors (10k) |",
              "|---|---|---|---|---|---|---|"]
    for name in ["meshgate", *PEERS, "terminator"]:
        m = mem[name]
        lines.append(f"| {name} | {fmt(m['idle_kib'] / 1024)} | {fmt(m['before_kib'] / 1024)} | {fmt(m['rss_1000_kib'] / 1024)} | {fmt(m['rss_10000_kib'] / 1024)} "
                     f"| {fmt(m['kib_per_conn'])} | {m['held_10000']} / {m['errors_10000']} |")
    lines.append("")
    return "\n".join(lines)


def workload_table(wl, desc, rows):
    best_rps = max(rows[p]["rps"] for p in PEERS)
    best_cpu = min(rows[p]["cpu_us"] for p in PEERS if rows[p]["cpu_us"] == rows[p]["cpu_us"])
    lines = [f"## {wl}: {desc}", ""]
    extra = " MiB/s |" if wl == "D" else (" p99.9 ms |" if wl == "E" else "")
    lines.append(f"| target | req/s | p50 ms | p99 ms |{extra} CPU µs/req | of it kernel | req/s ÷ best peer | CPU ÷ best peer | failed |")
    lines.append("|---|---|---|---|" + ("---|" if extra else "") + "---|---|---|---|---|")
    for name in ["meshgate", *PEERS, "terminator"]:
        r = rows[name]
        cells = [name, fmt(r["rps"], 0), fmt(r["p50"], 3), fmt(r["p99"], 3)]
        if wl == "D":
            cells.append(fmt(r["mib_s"], 0))
        if wl == "E":
            cells.append(fmt(r["p999"], 3))
        cells += [fmt(r["cpu_us"]), fmt(r.get("sys_us", float("nan"))), fmt(r["rps"] / best_rps, 2),
                  fmt(r["cpu_us"] / best_cpu, 2), str(int(r["failed"]))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def l5d_table(l5d, b_rows):
    """G, H, G3: meshgate behind a Linkerd client; B's best peer for reference."""
    if not l5d:
        return []
    out = ["## G, H, G3: a Linkerd client proxy's traffic (meshgate only)", "",
           "`benches/src/bin/l5d-load.rs` does what a Linkerd proxy does to a gateway: mTLS with SNI = the "
           "gateway identity and ALPN `transport.l5d.io/v1`, a transport header naming the target (session "
           "protocol HTTP/2), then HTTP/2 with `l5d-orig-proto: HTTP/1.1` and the proxy's default windows "
           "(64 KiB per stream, 1 MiB per connection). meshgate forwards G and G3 to the HTTP/1 backend, H "
           "over mTLS to the meshed pod (an nginx terminating mTLS as `pod.bench.local`, on the load core). "
           "No peer speaks the transport protocol: the closest peer workload is B (HTTP/2 callers, the same "
           "HTTP/1 backend), whose best peer is shown. \"client µs/resp\" is the load generator's own CPU per "
           "response: what the gateway's HTTP/2 behaviour (frame sizes, window updates, flushes) costs the caller.", "",
           "| workload | req/s | p50 ms | p99 ms | MiB/s | CPU µs/req | of it kernel | client µs/resp | failed |",
           "|---|---|---|---|---|---|---|---|---|"]
    for wl in L5D_WORKLOADS:
        if wl in l5d:
            r = l5d[wl]
            out.append(f"| {wl} | {fmt(r['rps'], 0)} | {fmt(r['p50'], 3)} | {fmt(r['p99'], 3)} | {fmt(r['mib_s'], 0)} | "
                       f"{fmt(r['cpu_us'])} | {fmt(r['sys_us'])} | {fmt(r['client_cpu_us'])} | {int(r['failed'])} |")
    if b_rows:
        name = min(PEERS, key=lambda p: b_rows[p]["cpu_us"])
        r = b_rows[name]
        out.append(f"| B, best peer ({name}) | {fmt(r['rps'], 0)} | {fmt(r['p50'], 3)} | {fmt(r['p99'], 3)} | — | "
                   f"{fmt(r['cpu_us'])} | {fmt(r['sys_us'])} | — (oha) | {int(r['failed'])} |")
    return out + [""]


def workers_table(workers):
    if not workers:
        return []
    out = ["## Two workers (meshgate)", "",
           "A (oha) and G (l5d-load) on a fresh meshgate with one worker pinned to CPU 0, and with "
           "`MESHGATE_WORKERS=2` on both CPUs, which it then shares with the load generator and the backend.", "",
           "| workload | workers | req/s | p99 ms | CPU µs/req | of it kernel |", "|---|---|---|---|---|---|"]
    for wl in ("A", "G"):
        for w in (1, 2):
            r = workers.get(f"{w} {wl}")
            if r:
                out.append(f"| {wl} | {w} | {fmt(r['rps'], 0)} | {fmt(r['p99'], 3)} | {fmt(r['cpu_us'])} | {fmt(r['sys_us'])} |")
    return out + [""]


def meshed_table(meshed):
    """meshgate's upstream hop in plaintext (A, D) against mTLS to a meshed pod (M, MD)."""
    if not meshed:
        return []
    out = ["## M: the gateway -> meshed pod hop over mTLS (meshgate only)", "",
           "The same backend behind an nginx that terminates mTLS as the pod's identity and verifies the "
           "gateway's certificate (a meshed pod's proxy); meshgate dials it with its own certificate, SNI = "
           "the pod identity, pooled like plaintext connections. The peers' configurations route no meshed "
           "service. The pod runs on the load core: CPU µs/request is meshgate's alone.", "",
           "| workload | upstream hop | req/s | p50 ms | p99 ms | MiB/s | CPU µs/req | of it kernel |",
           "|---|---|---|---|---|---|---|---|"]
    for wl, hop in (("A", "plaintext"), ("M", "mTLS"), ("D", "plaintext"), ("MD", "mTLS")):
        if wl in meshed:
            r = meshed[wl]
            out.append(f"| {wl} | {hop} | {fmt(r['rps'], 0)} | {fmt(r['p50'], 3)} | {fmt(r['p99'], 3)} | "
                       f"{fmt(r['mib_s'], 0)} | {fmt(r['cpu_us'])} | {fmt(r['sys_us'])} |")
    return out + [""]


def targets_table(results, mem):
    """The performance issue's targets, each against the best peer of this run."""
    def best(wl, key, pick):
        return pick(results[wl][p][key] for p in PEERS)

    def row(goal, value, limit, ok):
        return f"| {goal} | {value} | {limit} | {'met' if ok else 'missed'} |"

    m = {wl: results[wl]["meshgate"] for wl in WORKLOADS if wl in results}
    out = ["## Targets", "", "| target | meshgate | limit (from the best peer) | result |", "|---|---|---|---|"]
    cpu = best("A", "cpu_us", min)
    out.append(row("A: CPU µs/req ≤ 0.80× best peer", fmt(m["A"]["cpu_us"]), fmt(0.8 * cpu), m["A"]["cpu_us"] <= 0.8 * cpu))
    for wl, factor in (("C-full", 1.5), ("C-resumed", 1.3)):
        rps = best(wl, "rps", max)
        out.append(row(f"{wl}: connections/s ≥ {factor}× best peer", fmt(m[wl]["rps"], 0), fmt(factor * rps, 0), m[wl]["rps"] >= factor * rps))
    mib = best("D", "mib_s", max)
    out.append(row("D: MiB/s ≥ best peer", fmt(m["D"]["mib_s"], 0), fmt(mib, 0), m["D"]["mib_s"] >= mib))
    for key, name in (("p99", "p99"), ("p999", "p99.9")):
        lim = best("E", key, min)
        out.append(row(f"E: {name} ≤ best peer", fmt(m["E"][key], 3), fmt(lim, 3), m["E"][key] <= lim))
    per = min(mem[p]["kib_per_conn"] for p in PEERS)
    out.append(row("F: KiB per idle mTLS conn (after a request) ≤ 0.8× best peer", fmt(mem["meshgate"]["kib_per_conn"]),
                   fmt(0.8 * per), mem["meshgate"]["kib_per_conn"] <= 0.8 * per))
    out.append(row("F: idle RSS ≤ 10 MiB", fmt(mem["meshgate"]["idle_kib"] / 1024), "10.0", mem["meshgate"]["idle_kib"] <= 10 * 1024))
    return out + [""]


def machine_facts():
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return f"{os.cpu_count()} CPUs ({model}), {int(mem) // 1024 // 1024} GiB, Linux {platform.release()}"


def versions(args):
    def first(argv):
        r = subprocess.run(argv, capture_output=True, text=True)
        return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else "?"
    return {"meshgate": first([args.meshgate, "--version"]).split()[-1], "nginx": first(["nginx", "-v"]).split("/")[-1],
            "HAProxy": first(["haproxy", "-v"]).split()[2], "Caddy": first(["caddy", "version"]).split()[0],
            "Envoy": first([args.envoy, "--version"]).split("version:")[-1].split("/")[1] if "/" in first([args.envoy, "--version"]) else "?",
            "oha": first(["oha", "--version"]).split()[-1]}


def start_all(d, cmds, names, tag, settle=1.0):
    procs = {}
    for name in names:
        argv, env = cmds[name]
        procs[name] = Proc(name, argv, env, GATEWAY_CORE, d / f"{name}-{tag}.log")
        wait_port(PORTS[name], procs[name])
    time.sleep(settle)
    return procs


def interleaved(d, procs, workloads, args, samples):
    """Every target once per repetition and workload, in a rotating order."""
    names = list(procs)
    for rep in range(args.reps):
        for wl in workloads:
            order = names[rep % len(names):] + names[:rep % len(names)]
            for name in order:
                sample = measure(d, procs[name], PORTS[name], wl, args.seconds)
                samples[wl][name].append(sample)
                print(f"rep {rep + 1} {wl:9} {name:10} {sample['rps']:10,.0f} req/s  cpu {sample['cpu_us']:7.1f} µs/req (kernel {sample['sys_us']:5.1f})"
                      f"  p99 {sample['p99']:.3f} ms  failed {sample['failed']}", flush=True)


def l5d_runs(d, meshgate, workloads, args):
    """G, H, G3 on meshgate, interleaved, with the stand-in pod running (for H)."""
    pod = Proc("pod", ["nginx", "-p", str(d), "-e", f"{d}/pod.err", "-c", f"{d}/pod.conf"],
               dict(os.environ), LOAD_CORE, d / "pod-l5d.log")
    samples = {wl: [] for wl in workloads}
    try:
        wait_port(POD_PORT, pod)
        for rep in range(args.reps):
            for wl in workloads:
                sample = measure_l5d(d, meshgate, PORTS["meshgate"], wl, args.seconds, args.load)
                samples[wl].append(sample)
                print(f"rep {rep + 1} {wl:3} meshgate {sample['rps']:10,.0f} req/s  cpu {sample['cpu_us']:7.1f} µs/req"
                      f"  client {sample['client_cpu_us']:7.1f} µs/resp  {sample['mib_s']:7.0f} MiB/s  failed {sample['failed']}", flush=True)
    finally:
        pod.stop()
    return {wl: median_rows(s) for wl, s in samples.items()}


def workers_compare(d, args):
    """A and G on meshgate with 1 worker (pinned to the gateway core) and with 2 workers (both
    cores, shared with the load generator and the backend), interleaved; fresh process each."""
    samples = {(w, wl): [] for w in (1, 2) for wl in ("A", "G")}
    argv, env = commands(d, args, resume=False)["meshgate"]
    for rep in range(args.reps):
        for workers in (1, 2):
            proc = Proc("meshgate", argv, {**env, "MESHGATE_WORKERS": str(workers)},
                        GATEWAY_CORE if workers == 1 else "0,1", d / f"meshgate-w{workers}.log")
            try:
                wait_port(PORTS["meshgate"], proc)
                time.sleep(0.5)
                for wl in ("A", "G"):
                    if wl == "A":
                        sample = measure(d, proc, PORTS["meshgate"], wl, args.seconds)
                    else:
                        sample = measure_l5d(d, proc, PORTS["meshgate"], wl, args.seconds, args.load)
                    samples[(workers, wl)].append(sample)
                    print(f"rep {rep + 1} workers {workers} {wl} {sample['rps']:10,.0f} req/s  cpu {sample['cpu_us']:7.1f} µs/req", flush=True)
            finally:
                proc.stop()
    return {f"{w} {wl}": median_rows(s) for (w, wl), s in samples.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", required=True)
    parser.add_argument("--meshgate", required=True)
    parser.add_argument("--load", help="the l5d-load binary (benches/src/bin/l5d-load.rs)",
                        default=str(Path(__file__).resolve().parents[2] / "target/release/l5d-load"))
    parser.add_argument("--envoy", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workloads", default=",".join([*WORKLOADS, *L5D_WORKLOADS]),
                        help="comma-separated (default: all)")
    parser.add_argument("--only", default="", help="comma-separated targets (default: all)")
    parser.add_argument("--no-meshed", action="store_true", help="skip M/MD")
    parser.add_argument("--no-memory", action="store_true", help="skip F")
    parser.add_argument("--no-workers", action="store_true", help="skip the 1-vs-2-worker runs")
    parser.add_argument("--report-from", help="rewrite --out from a results.json of an earlier run")
    args = parser.parse_args()
    if args.report_from:
        saved = json.loads(Path(args.report_from).read_text())
        text = report(saved, args, versions(args))
        Path(args.out).write_text(text)
        return print(text)
    started = time.time()
    d = Path(args.work) / "run"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    os.sched_setaffinity(0, {LOAD_CORE})
    make_pki(d)
    asked = args.workloads.split(",")
    unknown = [w for w in asked if w not in WORKLOADS and w not in L5D_WORKLOADS]
    if unknown:
        raise SystemExit(f"unknown workloads: {unknown}")
    names = [n for n in PORTS if not args.only or n in args.only.split(",")]
    saved = {"started": started, "results": {}, "tls": {}, "refusals": {}, "memory": {}, "command": " ".join(sys.argv)}
    commands(d, args)  # writes the backend's and the pod's configurations
    backend = Proc("backend", ["nginx", "-p", str(d), "-e", f"{d}/backend.err", "-c", f"{d}/backend.conf"],
                   dict(os.environ), LOAD_CORE, d / "backend.log")
    procs = {}
    try:
        wait_port(BACKEND_H1, backend)
        for resume in (False, True):
            phase = "resumed" if resume else "full"
            oha_wls = [w for w in asked if w in WORKLOADS and (w in RESUMED) == resume]
            l5d_wls = [w for w in asked if w in L5D_WORKLOADS] if not resume and "meshgate" in names else []
            meshed = not resume and not args.no_meshed and "meshgate" in names
            procs = start_all(d, commands(d, args, resume), names, phase)
            for name in names:
                saved["tls"].setdefault(name, {})[phase] = tls_probe(d, PORTS[name], args.load)
                print(f"{name}: resumption {'on' if resume else 'off'}: {saved['tls'][name][phase]}", flush=True)
            if not resume:
                for name in names:
                    trusted = curl_status(d, PORTS[name], "client")
                    saved["refusals"][name] = (curl_status(d, PORTS[name]), curl_status(d, PORTS[name], "foreign"))
                    print(f"{name}: trusted {trusted}, no cert {saved['refusals'][name][0]}, foreign {saved['refusals'][name][1]}", flush=True)
                    if trusted != "200" or "200" in saved["refusals"][name]:
                        raise SystemExit(f"{name} is not configured as an mTLS gateway")
            samples = {wl: {n: [] for n in names} for wl in oha_wls}
            interleaved(d, procs, oha_wls, args, samples)
            saved["results"].update({wl: {n: median_rows(s) for n, s in per.items()} for wl, per in samples.items()})
            if l5d_wls:
                saved["results"]["l5d"] = l5d_runs(d, procs["meshgate"], l5d_wls, args)
            if meshed:
                saved["results"]["meshed"] = meshed_hop(d, procs["meshgate"], args)
            for proc in procs.values():
                proc.stop()
            procs = {}
        if "meshgate" in names and not args.no_workers:
            saved["results"]["workers"] = workers_compare(d, args)
        cmds = commands(d, args)
        for name in [] if args.no_memory else names:
            # F on a freshly started process: memory the workloads left behind (allocator
            # caches, pools) would hide what an idle connection costs.
            procs = start_all(d, cmds, [name], "f")
            saved["memory"][name] = memory(d, procs[name], PORTS[name], procs[name].rss_kib())
            m = saved["memory"][name]
            print(f"F {name:10} idle {m['idle_kib'] / 1024:.1f} MiB, {m['kib_per_conn']:.1f} KiB/conn", flush=True)
            procs[name].stop()
            procs = {}
        (Path(args.work) / "results.json").write_text(json.dumps(saved, indent=1))
        if set(names) == set(PORTS) and set(asked) == set(WORKLOADS) | set(L5D_WORKLOADS) and not (
                args.no_meshed or args.no_memory or args.no_workers):
            text = report(saved, args, versions(args))
            Path(args.out).write_text(text)
            print(text)
        else:
            print(f"a partial run: results in {Path(args.work) / 'results.json'}, {args.out} not written")
    finally:
        for proc in [*procs.values(), backend]:
            proc.stop()


if __name__ == "__main__":
    sys.exit(main())
