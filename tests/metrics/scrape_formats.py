#!/usr/bin/env python3
"""Scrapes a running `meshgate demo --serve` in both exposition formats and parses each answer
with the reference parsers of the Python `prometheus_client` package: Prometheus text 0.0.4
(no Accept header) and OpenMetrics 1.0.0 (Prometheus's own Accept header).

Usage: tests/metrics/scrape_formats.py MESHGATE_BINARY   (needs `pip install prometheus-client`)
Exits 0 when both parse and carry the families dashboards need; bounded to ~30 s.
"""

import re
import signal
import subprocess
import sys
import urllib.request

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
# family (as the parser names it) -> type.
EXPECTED = {
    "tcp_open": "counter",
    "request": "counter",
    "response_latency_ms": "histogram",
    "gateway_handshakes_refused": "counter",
    "process_cpu_seconds": "counter",
    "process_start_time_seconds": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_resident_memory_bytes": "gauge",
    "proxy_build_info": "gauge",
}


def scrape(admin, accept):
    req = urllib.request.Request(f"http://{admin}/metrics")
    if accept:
        req.add_header("Accept", accept)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.headers["Content-Type"], resp.read().decode("utf-8")


def check(name, families, content_type, want_type):
    if content_type != want_type:
        sys.exit(f"{name}: Content-Type {content_type!r}, want {want_type!r}")
    by_name = {f.name: f for f in families}
    for family, kind in EXPECTED.items():
        found = by_name.get(family)
        if found is None:
            sys.exit(f"{name}: no family {family} in {sorted(by_name)}")
        if found.type != kind:
            sys.exit(f"{name}: {family} is {found.type}, want {kind}")
        if not found.samples:
            sys.exit(f"{name}: {family} has no samples")
    build = by_name["proxy_build_info"].samples[0]
    if build.value != 1 or build.labels.get("vendor") != "meshgate":
        sys.exit(f"{name}: proxy_build_info {build}")
    print(f"{name}: {len(families)} families parse; {content_type}")


def main():
    demo = subprocess.Popen(
        [sys.argv[1], "demo", "--serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        admin = None
        for line in demo.stdout:
            match = re.search(r"\(admin ([0-9.]+:[0-9]+)\)", line)
            if match:
                admin = match.group(1)
            if line.startswith("Serving until Ctrl-C"):
                break
        if admin is None:
            sys.exit("meshgate demo did not print its admin address")
        content_type, text = scrape(admin, None)
        check("prometheus 0.0.4", list(parse_text(text)), content_type,
              "text/plain; version=0.0.4; charset=utf-8")
        content_type, text = scrape(admin, PROMETHEUS_ACCEPT)
        check("openmetrics 1.0.0", list(parse_openmetrics(text)), content_type,
              "application/openmetrics-text; version=1.0.0; charset=utf-8")
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=10)
        except subprocess.TimeoutExpired:
            demo.kill()


if __name__ == "__main__":
    main()
