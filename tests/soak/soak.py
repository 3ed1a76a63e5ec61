#!/usr/bin/env python3
"""Bounded soak test of meshgate on loopback (Python 3 standard library, oha and nginx).

What it does, all on 127.0.0.1 and for a fixed time (`--seconds`, default 600):

* makes a throw-away PKI with `meshgate certs` (root, issuer, a gateway leaf and a client leaf);
* lays the gateway's credentials out as the kubelet mounts a Secret: `tls.crt`, `tls.key`,
  `ca.crt` are symlinks to `..data/<file>`, `..data` is a symlink to a timestamped directory;
* starts nginx (HTTP/1 on one port, h2c prior knowledge on another), an asyncio TCP echo server
  and `meshgate run --identity-dir ...` with static endpoints for the three services;
* sends traffic at fixed rates through the gateway's data port with the client certificate:
  HTTP/1.1 keep-alive (oha), HTTP/2 (oha --http2), a new TLS handshake per request
  (oha --disable-keepalive) and opaque sessions (ALPN transport.l5d.io/v1 + transport header,
  a few KiB echoed back and compared);
* rotates the gateway leaf every `--rotate-every` seconds the way the kubelet updates a Secret
  (new timestamped directory, `..data_tmp` symlink, rename over `..data`, old directory removed)
  and measures how long until a new handshake gets the new leaf;
* samples the gateway's RSS, open descriptors and a few `/metrics` values every 10 s;
* prints a markdown report (and writes it to `--out`); exits 1 if any request or session failed,
  a rotation was not observed or the gateway died.

Only processes this script started are stopped, by PID (their own process groups), also on
Ctrl-C, SIGTERM or an error.
"""

import argparse
import asyncio
import base64
import collections
import datetime
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OHA = "/root/.cargo/bin/oha"
NGINX = "/usr/sbin/nginx"

GATEWAY_ID = "gateway.soak.serviceaccount.identity.linkerd.cluster.local"
CLIENT_ID = "client.soak.serviceaccount.identity.linkerd.cluster.local"
SVC_H1 = "web.soak.svc.cluster.local:80"
SVC_H2 = "web-h2.soak.svc.cluster.local:80"
SVC_ECHO = ("echo.soak.svc.cluster.local", 7777)
ALPN_TRANSPORT = "transport.l5d.io/v1"
PREFACE = b"transport.l5d.io/v1\r\n\r\n"

SAMPLE_EVERY = 10.0
# Metric families sampled (summed over their label sets, except the labels kept below).
METRICS = {
    "tcp_open_connections": "peer",
    "control_identity_cert_refreshes_total": "result",
    "gateway_handshakes_refused_total": "reason",
    "inbound_tcp_errors_total": "error",
    "outbound_connect_errors_total": "reason",
    "gateway_requests_shed_total": None,
    "outbound_pool_idle_connections": None,
}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# === processes ===

class Procs:
    """Every process this script started; stopped by PID (each runs in its own process group)."""

    def __init__(self):
        self.items = []  # (name, Popen)

    def start(self, name, argv, stdout, stderr=subprocess.STDOUT, env=None):
        popen = subprocess.Popen(argv, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                                 env=env, start_new_session=True)
        self.items.append((name, popen))
        return popen

    def stop_all(self):
        for name, popen in reversed(self.items):
            if popen.poll() is not None:
                continue
            try:
                os.killpg(popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.time() + 10
        for name, popen in reversed(self.items):
            try:
                popen.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                log(f"{name} (pid {popen.pid}) did not stop on SIGTERM; SIGKILL")
                try:
                    os.killpg(popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                popen.wait(timeout=5)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, popen, name, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if popen.poll() is not None:
            raise SystemExit(f"{name} exited with status {popen.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{name} did not listen on 127.0.0.1:{port} within {seconds} s")


# === PKI and the Secret-like directory ===

def run(*argv):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, argv))} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def make_pki(meshgate, pki: Path):
    run(meshgate, "certs", "root", "--cert", pki / "ca.crt", "--key", pki / "ca.key")
    run(meshgate, "certs", "issuer", "--ca", pki / "ca.crt", "--ca-key", pki / "ca.key",
        "--cert", pki / "issuer.crt", "--key", pki / "issuer.key")
    run(meshgate, "certs", "leaf", "--ca", pki / "issuer.crt", "--ca-key", pki / "issuer.key",
        "--identity", CLIENT_ID, "--cert", pki / "client.crt", "--key", pki / "client.key")


def issue_gateway_leaf(meshgate, pki: Path, out: Path):
    run(meshgate, "certs", "leaf", "--ca", pki / "issuer.crt", "--ca-key", pki / "issuer.key",
        "--identity", GATEWAY_ID, "--cert", out / "tls.crt", "--key", out / "tls.key")


def leaf_fingerprint(chain: Path):
    """SHA-256 of the first certificate (the leaf) in a PEM chain."""
    text = chain.read_text()
    start = text.index("-----BEGIN CERTIFICATE-----") + len("-----BEGIN CERTIFICATE-----")
    end = text.index("-----END CERTIFICATE-----", start)
    return hashlib.sha256(base64.b64decode("".join(text[start:end].split()))).hexdigest()


class SecretDir:
    """A directory laid out as the kubelet's AtomicWriter lays out a mounted Secret."""

    def __init__(self, meshgate, pki: Path, path: Path):
        self.meshgate, self.pki, self.path = meshgate, pki, path
        path.mkdir()
        self.current = None

    def _new_version(self):
        now = datetime.datetime.now(datetime.timezone.utc)
        name = now.strftime("..%Y_%m_%d_%H_%M_%S.") + str(random.randrange(10**9))
        d = self.path / name
        d.mkdir()
        issue_gateway_leaf(self.meshgate, self.pki, d)
        shutil.copyfile(self.pki / "ca.crt", d / "ca.crt")
        for f in ("tls.crt", "ca.crt"):
            os.chmod(d / f, 0o644)
        os.chmod(d, 0o755)
        return name

    def install(self):
        """First version: ..data and the user-visible symlinks."""
        name = self._new_version()
        os.symlink(name, self.path / "..data")
        for f in ("tls.crt", "tls.key", "ca.crt"):
            os.symlink(f"..data/{f}", self.path / f)
        self.current = name
        return leaf_fingerprint(self.path / name / "tls.crt")

    def rotate(self):
        """A new version, swapped in atomically; the old directory removed. Returns (fp, swap time)."""
        name = self._new_version()
        fingerprint = leaf_fingerprint(self.path / name / "tls.crt")
        tmp = self.path / "..data_tmp"
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(name, tmp)
        os.replace(tmp, self.path / "..data")
        swapped = time.monotonic()
        old, self.current = self.current, name
        shutil.rmtree(self.path / old)
        return fingerprint, swapped


# === backends ===

def nginx_conf(d: Path, h1, h2):
    # Small 200 answers; long keep-alive so the gateway's pool is what decides reuse.
    answer = 'location / { return 200 "ok\\n"; }'
    return f"""
worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/nginx.err warn; worker_rlimit_nofile 8192;
events {{ worker_connections 4096; }}
http {{
  access_log off; keepalive_requests 10000000; keepalive_timeout 300s;
  client_body_temp_path {d}/nginx-tmp; proxy_temp_path {d}/nginx-tmp; fastcgi_temp_path {d}/nginx-tmp;
  uwsgi_temp_path {d}/nginx-tmp; scgi_temp_path {d}/nginx-tmp;
  server {{ listen 127.0.0.1:{h1}; {answer} }}
  server {{ listen 127.0.0.1:{h2} http2; {answer} }}
}}
"""


async def echo_handler(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


# === clients ===

def client_ssl(pki: Path, alpn):
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    ctx.set_alpn_protocols([alpn])
    return ctx


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def transport_header(name, port):
    """Linkerd's transport header for an opaque session (no session_protocol field)."""
    raw = name.encode()
    message = b"\x08" + varint(port) + b"\x12" + varint(len(raw)) + raw
    return PREFACE + struct.pack(">I", len(message)) + message


async def opaque_session(ctx, port, stats):
    payload = os.urandom(random.randint(2048, 8192))
    writer = None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=GATEWAY_ID), timeout=10)
        alpn = writer.get_extra_info("ssl_object").selected_alpn_protocol()
        if alpn != ALPN_TRANSPORT:
            raise RuntimeError(f"ALPN negotiated {alpn!r}")
        writer.write(transport_header(*SVC_ECHO) + payload)
        await writer.drain()
        got = await asyncio.wait_for(reader.readexactly(len(payload)), timeout=10)
        if got != payload:
            raise RuntimeError("echoed bytes differ")
        stats["ok"] += 1
    except Exception as e:  # noqa: BLE001 - every failure is counted by kind
        kind = type(e).__name__
        if isinstance(e, asyncio.IncompleteReadError):
            kind = f"IncompleteReadError (got {len(e.partial)} of {e.expected} bytes)"
        elif str(e):
            kind += f": {str(e)[:120]}"
        stats["failed"] += 1
        stats["errors"][kind] += 1
        if stats["failed"] <= 20:
            log(f"opaque session failed: {kind}")
    finally:
        if writer is not None:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), timeout=5)
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


async def opaque_load(ctx, port, rate, until, stats):
    tasks = set()
    interval = 1.0 / rate
    next_at = time.monotonic()
    while next_at < until:
        delay = next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(tasks) >= 200:
            stats["skipped"] += 1  # the client itself is saturated; not counted as a gateway failure
        else:
            task = asyncio.create_task(opaque_session(ctx, port, stats))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        stats["started"] += 1
        next_at += interval
    if tasks:
        await asyncio.wait(tasks, timeout=30)


async def presented_leaf(ctx, port):
    """SHA-256 of the leaf the gateway presents on a new handshake."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=GATEWAY_ID), timeout=10)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return hashlib.sha256(der).hexdigest()
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), timeout=5)
        except Exception:  # noqa: BLE001
            pass


def oha_argv(args, pki, port, service, extra, rate, json_out):
    return [OHA, "-z", f"{args.seconds}s", "-q", str(rate), "--no-tui", "--output-format", "json",
            "-o", str(json_out), "-t", "10s",
            "--cert", str(pki / "client.crt"), "--key", str(pki / "client.key"), "--cacert", str(pki / "ca.crt"),
            "--connect-to", f"{GATEWAY_ID}:{port}:127.0.0.1:{port}",
            "-H", f"l5d-dst-override: {service}", *extra, f"https://{GATEWAY_ID}:{port}/"]


def oha_result(kind, path: Path, returncode, stderr_path: Path):
    if returncode != 0 or not path.exists() or path.stat().st_size == 0:
        err = stderr_path.read_text()[-800:] if stderr_path.exists() else ""
        return {"kind": kind, "total": 0, "ok": 0, "failed": 1, "cancelled": 0,
                "errors": {f"oha exited {returncode}: {err.strip()}": 1}, "codes": {}, "p50": None, "p99": None, "rps": 0}
    report = json.loads(path.read_text())
    codes = {k: int(v) for k, v in report.get("statusCodeDistribution", {}).items()}
    errors = {k: int(v) for k, v in report.get("errorDistribution", {}).items()}
    # Requests still in flight when the run's time is up are cancelled by oha, not failed.
    cancelled = sum(n for e, n in errors.items() if "deadline" in e)
    failed = sum(n for c, n in codes.items() if c != "200") + sum(n for e, n in errors.items() if "deadline" not in e)
    pct = report.get("latencyPercentiles", {})
    summary = report.get("summary", {})
    return {"kind": kind, "total": sum(codes.values()) + sum(errors.values()), "ok": codes.get("200", 0),
            "failed": failed, "cancelled": cancelled, "codes": codes, "errors": errors,
            "p50": (pct.get("p50") or 0) * 1000, "p99": (pct.get("p99") or 0) * 1000,
            "rps": summary.get("requestsPerSec") or 0}


# === sampling ===

def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def proc_status(pid):
    rss = None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def scrape(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = collections.Counter()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        try:
            head, value = line.rsplit(" ", 1)
            value = float(value)
        except ValueError:
            continue
        name, _, labels = head.partition("{")
        if name not in METRICS:
            continue
        keep = METRICS[name]
        key = name
        if keep:
            for part in labels.rstrip("}").split(","):
                k, _, v = part.partition("=")
                if k == keep:
                    key = f'{name}{{{keep}="{v.strip(chr(34))}"}}'
        out[key] += value
    return out


async def sample(gw, admin, t0):
    rss, fds = proc_status(gw.pid)
    try:
        metrics = await asyncio.to_thread(scrape, admin)
    except Exception as e:  # noqa: BLE001
        log(f"metrics scrape failed: {e}")
        metrics = {}
    return {"t": time.monotonic() - t0, "rss": rss, "fds": fds, "cpu": cpu_seconds(gw.pid), "metrics": dict(metrics)}


# === the run ===

async def soak(args, work, pki, secret, procs, gw, ports, initial_fp):
    state = {"samples": [], "rotations": [], "gateway_died": None}
    data_port, admin = ports["listen"], ports["admin"]
    echo = await asyncio.start_server(echo_handler, "127.0.0.1", ports["echo"])
    ctx_probe = client_ssl(pki, "http/1.1")

    # Before load: the leaf in use and the idle baseline.
    seen = await presented_leaf(ctx_probe, data_port)
    if seen != initial_fp:
        raise SystemExit(f"gateway presents leaf {seen[:16]}, expected {initial_fp[:16]}")
    state["idle_start"] = await sample(gw, admin, time.monotonic())
    log(f"idle: RSS {state['idle_start']['rss']} KiB, {state['idle_start']['fds']} fds")

    t0 = time.monotonic()
    until = t0 + args.seconds
    oha_runs = {
        "HTTP/1.1 keep-alive": (SVC_H1, ["-c", "16"], args.h1_rate),
        "HTTP/2": (SVC_H2, ["--http2", "-c", "2", "-p", "16"], args.h2_rate),
        "new TLS handshake per request": (SVC_H1, ["-c", "8", "--disable-keepalive"], args.handshake_rate),
    }
    ohas = {}
    for i, (kind, (service, extra, rate)) in enumerate(oha_runs.items()):
        out, err = work / f"oha-{i}.json", work / f"oha-{i}.err"
        popen = procs.start(f"oha {kind}", oha_argv(args, pki, data_port, service, extra, rate, out),
                            stdout=subprocess.DEVNULL, stderr=open(err, "w"))
        ohas[kind] = (popen, out, err, rate)
    log(f"load started for {args.seconds} s: HTTP/1 {args.h1_rate}/s, HTTP/2 {args.h2_rate}/s, "
        f"handshakes {args.handshake_rate}/s, opaque {args.opaque_rate}/s; rotation every {args.rotate_every} s")

    opaque_stats = {"ok": 0, "failed": 0, "started": 0, "skipped": 0, "errors": collections.Counter()}
    opaque_ctx = client_ssl(pki, ALPN_TRANSPORT)
    opaque_task = asyncio.create_task(opaque_load(opaque_ctx, data_port, args.opaque_rate, until, opaque_stats))

    async def sampler():
        next_at = t0
        while next_at <= until + 0.5:
            await asyncio.sleep(max(0, next_at - time.monotonic()))
            if gw.poll() is not None:
                state["gateway_died"] = f"exited with status {gw.returncode} at t={time.monotonic() - t0:.0f}s"
                log(f"gateway {state['gateway_died']}")
                return
            s = await sample(gw, admin, t0)
            state["samples"].append(s)
            conns = {k: v for k, v in s["metrics"].items() if k.startswith("tcp_open_connections")}
            log(f"t={s['t']:5.0f}s RSS {s['rss']} KiB, fds {s['fds']}, "
                + ", ".join(f"{k.split('{')[1].rstrip('}')} {int(v)}" for k, v in sorted(conns.items())))
            next_at += SAMPLE_EVERY

    async def rotator():
        k = 1
        while t0 + k * args.rotate_every < until:
            await asyncio.sleep(max(0, t0 + k * args.rotate_every - time.monotonic()))
            if gw.poll() is not None:
                return
            fp, swapped = await asyncio.to_thread(secret.rotate)
            rot = {"n": k, "at": swapped - t0, "fingerprint": fp, "observed": None, "probes": 0, "probe_errors": 0}
            state["rotations"].append(rot)
            deadline = swapped + args.observe_timeout
            while time.monotonic() < deadline:
                rot["probes"] += 1
                try:
                    seen = await presented_leaf(ctx_probe, data_port)
                except Exception as e:  # noqa: BLE001
                    rot["probe_errors"] += 1
                    log(f"rotation {k}: probe handshake failed: {e}")
                    seen = None
                if seen == fp:
                    rot["observed"] = time.monotonic() - swapped
                    break
                await asyncio.sleep(0.25)
            if rot["observed"] is None:
                log(f"rotation {k} at t={rot['at']:.0f}s: new leaf {fp[:16]} NOT presented within {args.observe_timeout} s")
            else:
                log(f"rotation {k} at t={rot['at']:.0f}s: new leaf {fp[:16]} presented after {rot['observed']:.2f} s")
            k += 1

    sampler_task = asyncio.create_task(sampler())
    rotator_task = asyncio.create_task(rotator())

    # Wait for the oha runs (bounded: their own -z plus a margin).
    results = {}
    for kind, (popen, out, err, rate) in ohas.items():
        while popen.poll() is None and time.monotonic() < until + 60:
            await asyncio.sleep(0.5)
        if popen.poll() is None:
            log(f"oha ({kind}) still running 60 s after its deadline; stopping it")
            os.killpg(popen.pid, signal.SIGTERM)
            await asyncio.to_thread(popen.wait, 10)
        results[kind] = oha_result(kind, out, popen.returncode, err)
        results[kind]["rate"] = rate
    await opaque_task
    await sampler_task
    await asyncio.wait_for(rotator_task, timeout=args.observe_timeout + 30)
    results["opaque (transport header, echo)"] = {
        "kind": "opaque", "rate": args.opaque_rate, "total": opaque_stats["ok"] + opaque_stats["failed"],
        "ok": opaque_stats["ok"], "failed": opaque_stats["failed"], "cancelled": opaque_stats["skipped"],
        "codes": {}, "errors": dict(opaque_stats["errors"]), "p50": None, "p99": None,
        "rps": (opaque_stats["ok"] + opaque_stats["failed"]) / args.seconds}
    state["results"] = results
    state["load_seconds"] = time.monotonic() - t0

    # After load: let pooled and keep-alive connections close (pool idle timeout 10 s), then measure.
    if gw.poll() is None:
        await asyncio.sleep(args.settle)
        state["idle_end"] = await sample(gw, admin, t0)
        log(f"idle after load: RSS {state['idle_end']['rss']} KiB, {state['idle_end']['fds']} fds")
    else:
        state["gateway_died"] = state["gateway_died"] or f"exited with status {gw.returncode}"
    echo.close()
    await echo.wait_closed()
    return state


# === report ===

def slope_kib_per_min(points):
    """Least-squares slope of (seconds, KiB) in KiB per minute."""
    if len(points) < 3:
        return float("nan")
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    sxy = sum((t - mx) * (v - my) for t, v in points)
    return sxy / sxx * 60 if sxx else float("nan")


def machine():
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1])
    return f"{os.cpu_count()} CPUs ({model}), {mem / 1024 / 1024:.1f} GiB, Linux {platform.release()}"


def fmt_ms(x):
    return "–" if x is None else f"{x:.2f}"


def report(args, state, started, versions, gateway_log: Path, argv):
    res, samples, rots = state.get("results", {}), state["samples"], state["rotations"]
    lines = ["# meshgate soak", "",
             f"- command: `{argv}`",
             f"- started: {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(started))}, "
             f"load for {args.seconds} s ({state.get('load_seconds', 0):.0f} s measured)",
             f"- machine: {machine()}; load average at the end {os.getloadavg()[0]:.2f}",
             f"- versions: {versions}", ""]
    if state["gateway_died"]:
        lines += [f"**The gateway died: {state['gateway_died']}.**", ""]
    lines += ["## Traffic", "",
              "| traffic | rate/s | requests | 200 / ok | failed | cancelled at the end | p50 ms | p99 ms |",
              "|---|---|---|---|---|---|---|---|"]
    for kind, r in res.items():
        lines.append(f"| {kind} | {r['rate']} | {r['total']:,} | {r['ok']:,} | {r['failed']:,} | {r['cancelled']:,} "
                     f"| {fmt_ms(r['p50'])} | {fmt_ms(r['p99'])} |")
    lines.append("")
    lines.append("Failed = any status other than 200 or any error other than a request cut off by oha's "
                 "deadline at the end of the run (those are \"cancelled\"); opaque: a session whose bytes "
                 "did not come back identical (\"cancelled\" there = sessions the client skipped "
                 "because 200 were already in flight).")
    lines.append("")
    for kind, r in res.items():
        bad_codes = {c: n for c, n in r["codes"].items() if c != "200"}
        if bad_codes or r["errors"]:
            lines.append(f"- {kind}: status codes {r['codes'] or '{}'}, errors {r['errors'] or '{}'}")
    lines += ["", "## Certificate rotation", "",
              f"Every {args.rotate_every} s a new gateway leaf (same identity) is written to a new timestamped "
              "directory and `..data` is swapped atomically (kubelet style); the old directory is removed. "
              "Observed = a new TLS handshake on the data port receives the new leaf (SHA-256 compared).", "",
              "| # | swapped at (s) | new leaf (SHA-256) | presented after (s) | probe handshakes (failed) |",
              "|---|---|---|---|---|"]
    for r in rots:
        obs = f"{r['observed']:.2f}" if r["observed"] is not None else f"**not within {args.observe_timeout} s**"
        lines.append(f"| {r['n']} | {r['at']:.0f} | `{r['fingerprint'][:16]}` | {obs} | {r['probes']} ({r['probe_errors']}) |")
    observed = [r["observed"] for r in rots if r["observed"] is not None]
    lines += ["", f"Rotations done: {len(rots)}, observed: {len(observed)}"
              + (f", time to observe min {min(observed):.2f} s / max {max(observed):.2f} s." if observed else "."), ""]

    lines += ["## Gateway process", ""]
    rss = [s["rss"] for s in samples if s["rss"]]
    half = [(s["t"], s["rss"]) for s in samples if s["t"] >= args.seconds / 2]
    slope = slope_kib_per_min(half)
    whole = slope_kib_per_min([(s["t"], s["rss"]) for s in samples])
    idle0, idle1 = state.get("idle_start"), state.get("idle_end")
    fds = [s["fds"] for s in samples]
    lines += ["| measure | value |", "|---|---|"]
    if idle0:
        lines.append(f"| RSS idle before load | {idle0['rss'] / 1024:.1f} MiB ({idle0['rss']:,} KiB) |")
    if rss:
        lines += [f"| RSS at load start (t=0) | {rss[0] / 1024:.1f} MiB ({rss[0]:,} KiB) |",
                  f"| RSS last sample under load | {rss[-1] / 1024:.1f} MiB ({rss[-1]:,} KiB) |",
                  f"| RSS max | {max(rss) / 1024:.1f} MiB ({max(rss):,} KiB) |"]
    if idle1:
        lines.append(f"| RSS idle after load (+{args.settle:.0f} s) | {idle1['rss'] / 1024:.1f} MiB ({idle1['rss']:,} KiB) |")
    lines += [f"| RSS slope, second half (least squares, {len(half)} samples) | {slope:+.1f} KiB/min |",
              f"| RSS slope, whole run | {whole:+.1f} KiB/min |"]
    if idle0:
        lines.append(f"| open fds idle before load | {idle0['fds']} |")
    if fds:
        lines.append(f"| open fds under load (min / max) | {min(fds)} / {max(fds)} |")
    if idle1:
        lines.append(f"| open fds idle after load | {idle1['fds']} |")
    if idle0 and idle1:
        used = idle1["cpu"] - idle0["cpu"]
        lines.append(f"| CPU time used (user + system) | {used:.1f} s ({100 * used / max(1, state.get('load_seconds', 1)):.0f} % of one core over the load) |")
    lines.append("")

    keys = sorted({k for s in [idle0, *samples, idle1] if s for k in s["metrics"]})
    if keys:
        lines += ["## Metrics (gateway /metrics)", "", "| metric | idle before | last under load | idle after |",
                  "|---|---|---|---|"]
        last = samples[-1]["metrics"] if samples else {}
        for k in keys:
            cells = [(s or {}).get("metrics", {}).get(k) for s in (idle0,)] + [last.get(k)] + [(idle1 or {}).get("metrics", {}).get(k)]
            lines.append(f"| `{k}` | " + " | ".join("–" if c is None else f"{c:g}" for c in cells) + " |")
        lines.append("")

    log_lines = gateway_log.read_text(errors="replace").splitlines() if gateway_log.exists() else []
    lines += ["## Gateway log (`--log warn`)", "", f"{len(log_lines)} lines."]
    if log_lines:
        lines += ["", "```text", *log_lines[:30], *(["…"] if len(log_lines) > 30 else []), "```"]
    lines.append("")

    lines += ["## Samples (every 10 s)", "", "| t (s) | RSS KiB | fds | tcp_open_connections (src / dst) |", "|---|---|---|---|"]
    for s in samples:
        m = s["metrics"]
        src, dst = (m.get(f'tcp_open_connections{{peer="{peer}"}}') for peer in ("src", "dst"))
        src, dst = ("–" if v is None else f"{v:g}" for v in (src, dst))
        lines.append(f"| {s['t']:.0f} | {s['rss']:,} | {s['fds']} | {src} / {dst} |")
    lines.append("")

    failed = sum(r["failed"] for r in res.values())
    problems = []
    if failed:
        problems.append(f"{failed} failed requests/sessions")
    if len(observed) != len(rots):
        problems.append(f"{len(rots) - len(observed)} rotations not observed")
    if not rots:
        problems.append("no rotation done")
    if state["gateway_died"]:
        problems.append("the gateway died")
    if not res:
        problems.append("no traffic results")
    lines += ["## Verdict", "", ("FAIL: " + "; ".join(problems)) if problems else "PASS: no failed request or "
              "session, every rotation observed.", ""]
    return "\n".join(lines), problems


def versions(meshgate):
    def first(argv):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        text = (r.stdout + r.stderr).strip()
        return text.splitlines()[0] if text else "?"
    return f"{first([meshgate, '--version'])}, {first([OHA, '--version'])}, {first([NGINX, '-v'])}, Python {platform.python_version()}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meshgate", default=str(REPO / "target/release/meshgate"))
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--out", help="also write the markdown report here")
    parser.add_argument("--rotate-every", type=float, help="seconds between rotations (default: 60, or seconds/4 if shorter)")
    parser.add_argument("--observe-timeout", type=float, default=30.0, help="how long a rotation may take to show")
    parser.add_argument("--h1-rate", type=int, default=300)
    parser.add_argument("--h2-rate", type=int, default=300)
    parser.add_argument("--handshake-rate", type=int, default=30)
    parser.add_argument("--opaque-rate", type=int, default=20)
    parser.add_argument("--settle", type=float, default=15.0, help="idle seconds after the load before the last sample")
    parser.add_argument("--work", help="working directory (default: a new one under /tmp, kept for its logs)")
    args = parser.parse_args()
    if args.rotate_every is None:
        args.rotate_every = min(60.0, args.seconds / 4)

    missing = [p for p in (OHA, NGINX) if not os.access(p, os.X_OK)]
    if not os.access(args.meshgate, os.X_OK):
        missing.append(args.meshgate)
    if missing:
        print("soak.py needs these executables, which are missing: " + ", ".join(missing)
              + "\n  oha: cargo install oha --version 1.16.0 --locked; nginx: apt-get install nginx;"
              " meshgate: cargo build --release (or --meshgate PATH)", file=sys.stderr)
        return 2

    started = time.time()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="meshgate-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"working directory {work}")
    pki = work / "pki"
    pki.mkdir()
    (work / "nginx-tmp").mkdir()
    procs = Procs()

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    gateway_log = work / "meshgate.log"
    try:
        make_pki(args.meshgate, pki)
        secret = SecretDir(args.meshgate, pki, work / "identity")
        initial_fp = secret.install()
        ports = {k: free_port() for k in ("listen", "admin", "h1", "h2", "echo")}
        (work / "nginx.conf").write_text(nginx_conf(work, ports["h1"], ports["h2"]))
        nginx = procs.start("nginx", [NGINX, "-p", str(work), "-e", str(work / "nginx.err"), "-c", str(work / "nginx.conf")],
                            stdout=open(work / "nginx.log", "w"))
        wait_port(ports["h1"], nginx, "nginx")
        wait_port(ports["h2"], nginx, "nginx")
        gw_argv = [args.meshgate, "run", "--identity-dir", str(secret.path),
                   "--listen", f"127.0.0.1:{ports['listen']}", "--admin-listen", f"127.0.0.1:{ports['admin']}",
                   "--log", "warn",
                   "--endpoint", f"{SVC_H1}=127.0.0.1:{ports['h1']}",
                   "--endpoint", f"{SVC_H2}=127.0.0.1:{ports['h2']}",
                   "--endpoint", f"{SVC_ECHO[0]}:{SVC_ECHO[1]}=127.0.0.1:{ports['echo']}"]
        env = {**os.environ, "MESHGATE_SHUTDOWN_GRACE_PERIOD": "2s"}
        for k in [k for k in env if k.startswith("LINKERD2_PROXY_") or (k.startswith("MESHGATE_") and k != "MESHGATE_SHUTDOWN_GRACE_PERIOD")]:
            del env[k]
        gw = procs.start("meshgate", gw_argv, stdout=open(gateway_log, "w"), env=env)
        log(f"meshgate pid {gw.pid}: {' '.join(gw_argv)}")
        deadline = time.time() + 30
        while True:
            if gw.poll() is not None:
                raise SystemExit(f"meshgate exited with {gw.returncode}: {gateway_log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ports['admin']}/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise SystemExit("meshgate /ready did not answer 200 within 30 s")
            time.sleep(0.2)
        log("meshgate ready")
        state = asyncio.run(soak(args, work, pki, secret, procs, gw, ports, initial_fp))
        text, problems = report(args, state, started, versions(args.meshgate), gateway_log,
                                " ".join(["tests/soak/soak.py", *sys.argv[1:]]))
        (work / "report.md").write_text(text)
        (work / "state.json").write_text(json.dumps(state, indent=1, default=str))
        if args.out:
            Path(args.out).write_text(text)
        print(text)
        log(f"logs and raw results in {work}")
        return 1 if problems else 0
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); stopping what was started")
        return 130
    finally:
        procs.stop_all()


if __name__ == "__main__":
    sys.exit(main())
