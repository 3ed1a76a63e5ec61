#!/usr/bin/env bash
# Scan meshgate's data port with Debian's testssl.sh and summarise the result.
#
#   tests/tls/testssl.sh [MESHGATE_BIN]        # default: target/release/meshgate (repo root)
#   TLS_MD=tests/TLS.md tests/tls/testssl.sh /tmp/tls-meshgate   # also refresh tests/TLS.md
#
# What it does, all on loopback and with nothing left running afterwards:
#   1. installs testssl.sh if missing (apt-get install -y testssl.sh, the Debian bookworm package);
#   2. makes a throw-away PKI with the binary itself (`meshgate certs root|issuer|leaf`);
#   3. starts `meshgate run` on two free 127.0.0.1 ports and waits for /ready = 200;
#   4. runs its own openssl s_client probes (client-certificate enforcement, TLS 1.2 refused,
#      cipher choice under two client orders, session resumption and the NewSessionTicket);
#   5. runs testssl: protocols (-p), cipher categories (-s), server preference (-P), forward
#      secrecy (-f), server defaults incl. tickets/resumption (-S), all vulnerabilities (-U) and
#      ciphers per protocol (-E), with a client certificate (see CLIENT CERTIFICATE below);
#   6. parses testssl's JSON (tests/tls/testssl_report.py): counts by severity, every finding of
#      LOW or worse, the gate below, and a Markdown summary printed at the end (and spliced into
#      $TLS_MD between the "testssl.sh generated" markers when TLS_MD is set).
#
# Exit status: 0 clean; 1 a real weakness (a gated LOW+ finding, or a probe showing that a client
# without a valid certificate or a TLS 1.2 client is accepted); 2 the scan is incomplete or could
# not run (meshgate did not start, testssl failed/timed out, WARN findings, expected ids missing).
#
# CLIENT CERTIFICATE. meshgate refuses every handshake without a client certificate chaining to
# the trust anchors (TLS 1.3 alert 116 certificate_required, sent after the server's Finished).
# Scanned without one, testssl 3.0.8 (bookworm) depends on a race: if its first `s_client` exits
# before the alert arrives (status 0), it does not notice client authentication at all, cannot
# detect the service (no BREACH check, Ticketbleed "not applicable") and reports "no session
# resumption" only because every handshake is torn down before the server issues tickets; if the
# alert wins (status 1), its client-auth detection (which looks for a TLS 1.2 "Master-Key" line)
# fails and it aborts with "Your OpenSSL cannot connect". Either way the scan that counts is the
# one WITH a client certificate (TESTSSL_COMPARE=1 shows the other for reference).
# testssl 3.2 has `--mtls FILE` (cert+key PEM); 3.0.8 has no such option, so for it the script
# points testssl at a small `openssl` wrapper (--openssl) that adds `-cert/-key` to every
# `openssl s_client` call. Socket-based checks (protocols, cipher lists,
# Heartbleed, CCS, ROBOT, ...) only need the ServerHello and are unaffected either way.
# The client leaf is issued directly by the trust anchor so that sending the leaf alone
# (what s_client -cert and --mtls do) is enough for meshgate to verify it.
#
# TICKETS. In TLS 1.3 with client authentication the server can only issue NewSessionTicket after
# it has the client's Finished, i.e. after s_client has already read EOF from testssl's </dev/null
# and hung up; testssl 3.0.8 then mostly sees no ticket ("no -- no lifetime advertised") at
# random. The wrapper therefore holds stdin open for $TESTSSL_STDIN_DELAY seconds (default 0.5)
# when it is /dev/null, long enough for the tickets to arrive on loopback.
#
# Environment:
#   TESTSSL_CLIENT_CERT  auto (default: --mtls if testssl has it, else the wrapper) | native |
#                        wrapper | none (scan without a client certificate)
#   TESTSSL_COMPARE=1    also scan without a client certificate and list what differs
#   TESTSSL_OUT=DIR      where to keep PKI, logs, JSON and summary (default: a new /tmp dir, kept)
#   TESTSSL_STDIN_DELAY  seconds, see TICKETS (default 0.5)
#   TLS_MD=FILE          splice the generated Markdown into FILE
#   MESHGATE_TLS_IDENTITY  gateway identity (default gateway.tls.serviceaccount.identity.linkerd.cluster.local)

set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if [[ -n "${1:-}" ]]; then
  bin="$1"                                   # relative to the current directory
  [[ "$bin" = /* ]] || bin="$PWD/$bin"
else
  bin="$root/target/release/meshgate"
fi
mode="${TESTSSL_CLIENT_CERT:-auto}"
compare="${TESTSSL_COMPARE:-0}"
stdin_delay="${TESTSSL_STDIN_DELAY:-0.5}"
gw_id="${MESHGATE_TLS_IDENTITY:-gateway.tls.serviceaccount.identity.linkerd.cluster.local}"
client_id="scanner.tls.serviceaccount.identity.linkerd.cluster.local"

log() { printf '[testssl.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }

# ---------------------------------------------------------------------------------------------
# Findings of LOW or worse that are NOT about the TLS configuration. They are listed (and
# counted) in the report, but do not fail the run. Matched against the id's first word (testssl
# appends " <hostCert#N>" when a server has several certificates). Anything not listed here that
# is LOW or worse fails the run, so a new kind of finding is never silently ignored.
excluded_ids=(
  # Trust: the chain ends in a throw-away private root (passed with --add-ca, but testssl also
  # checks its Mozilla/Apple/Java/Microsoft stores) and mesh identities are not DNS host names.
  cert_trust
  cert_chain_of_trust
  # Lifetime: Linkerd leaves live 24 h by design and are rotated automatically; "expires in < 30
  # days" / "< 60 days" is the point of the design, not a weakness. (A cert generated by this
  # script is always fresh.)
  cert_expirationStatus
  cert_notAfter
  cert_notBefore
  cert_validityPeriod
  cert_extlifeSpan
  # Revocation: the mesh PKI has no CRL/OCSP (short-lived leaves instead); no public responder
  # exists for a private CA, and OCSP stapling / must-staple are browser-PKI features.
  cert_revocation
  cert_crlDistributionPoints
  cert_ocspURL
  cert_ocspRevoked
  cert_crlRevoked
  cert_mustStapleExtension
  OCSP_stapling
  # Certificate Transparency and DNS CAA only exist for publicly trusted certificates / DNS names.
  certificate_transparency
  DNS_CAArecord
  # EV / eTLS are certificate-policy informational checks.
  cert_certificatePolicies_EV
  cert_eTLS
  # HTTP response headers of whatever answers "GET /" through the gateway (only run with -h):
  # application level, and meshgate is not a browser-facing site.
  HSTS HSTS_time HSTS_subdomains HSTS_preload HPKP HPKP_error HPKP_notice
  banner_server banner_application banner_reverseproxy security_headers cookie_count
  cookie_secure cookie_httponly HTTP_status_code HTTP_clock_skew HTTP_headerAge
  # testssl >= 3.2 rating: derived from the findings above (a private root caps it at "T");
  # the weaknesses it would reflect are gated through their own ids.
  overall_grade final_score grade_cap_reason_1 grade_cap_reason_2 grade_cap_reason_3
  grade_cap_reason_4 grade_cap_reason_5 grade_cap_warning_1 grade_cap_warning_2
)

# ids a complete scan must contain ("a|b": either name, testssl 3.0 | 3.2 spelling). SWEET32:
# testssl 3.0.8 files it as CRIME_TLS on a TLS 1.3-only server; testssl_report.py renames it.
required_ids=(
  SSLv2 SSLv3 TLS1 TLS1_1 TLS1_2 TLS1_3
  cipherlist_NULL cipherlist_aNULL cipherlist_EXPORT cipherlist_LOW cipherlist_3DES_IDEA
  "cipherlist_AVERAGE|cipherlist_OBSOLETED" cipherlist_STRONG
  "PFS|FS" cipher_order TLS_session_ticket sessionresumption_ticket sessionresumption_ID
  heartbleed CCS ticketbleed ROBOT secure_renego secure_client_renego CRIME_TLS POODLE_SSL
  fallback_SCSV SWEET32 FREAK DROWN LOGJAM BEAST LUCKY13 RC4
)

# ---------------------------------------------------------------------------------------------
# 1. testssl.sh
sudo_=()
[[ "$(id -u)" -eq 0 ]] || sudo_=(sudo)
find_testssl() { command -v testssl.sh || command -v testssl || true; }
testssl="$(find_testssl)"
if [[ -z "$testssl" ]]; then
  log "installing testssl.sh (Debian package)"
  if ! "${sudo_[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y testssl.sh >&2; then
    "${sudo_[@]}" apt-get update >&2
    "${sudo_[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y testssl.sh >&2
  fi
  testssl="$(find_testssl)"
  [[ -n "$testssl" ]] || die "testssl.sh is not installed"
fi
testssl_version="$("$testssl" --version 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' \
  | awk '/testssl +[0-9]/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\.[0-9]/) { print $i; exit } }')"
testssl_pkg="$(dpkg-query -W -f '${Version}' testssl.sh 2>/dev/null || true)"
openssl_bin="$(command -v openssl)" || die "openssl not found"
openssl_version="$("$openssl_bin" version)"
log "using $testssl: testssl ${testssl_version:-?}${testssl_pkg:+ (Debian package testssl.sh $testssl_pkg)}, $openssl_version"

has_mtls=0
grep -q -- '--mtls' "$testssl" && has_mtls=1
case "$mode" in
  auto) if [[ $has_mtls -eq 1 ]]; then mode=native; else mode=wrapper; fi ;;
  native) [[ $has_mtls -eq 1 ]] || die "this testssl ($testssl_version) has no --mtls; use TESTSSL_CLIENT_CERT=wrapper" ;;
  wrapper|none) ;;
  *) die "TESTSSL_CLIENT_CERT must be auto, native, wrapper or none" ;;
esac

[[ -x "$bin" ]] || die "meshgate binary not found or not executable: $bin"
command -v curl >/dev/null || die "curl not found"
command -v python3 >/dev/null || die "python3 not found"

out="${TESTSSL_OUT:-}"
if [[ -z "$out" ]]; then out="$(mktemp -d /tmp/meshgate-testssl.XXXXXX)"; else mkdir -p "$out"; fi
out="$(cd "$out" && pwd)"
log "output directory: $out"

# ---------------------------------------------------------------------------------------------
# Only what this script started is stopped, by PID.
meshgate_pid=""
scan_pid=""
cleanup() {
  local rc=$?
  if [[ -n "$scan_pid" ]] && kill -0 "$scan_pid" 2>/dev/null; then
    kill "$scan_pid" 2>/dev/null || true
    wait "$scan_pid" 2>/dev/null || true
  fi
  if [[ -n "$meshgate_pid" ]] && kill -0 "$meshgate_pid" 2>/dev/null; then
    kill "$meshgate_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$meshgate_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$meshgate_pid" 2>/dev/null || true
    wait "$meshgate_pid" 2>/dev/null || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# 2. Throw-away PKI
pki="$out/pki"
rm -rf "$pki"
mkdir -p "$pki"
(
  cd "$pki"
  "$bin" certs root --cert ca.crt --key ca.key
  "$bin" certs issuer --ca ca.crt --ca-key ca.key --cert issuer.crt --key issuer.key
  "$bin" certs leaf --ca issuer.crt --ca-key issuer.key --ttl 24h --identity "$gw_id" \
    --cert gateway.crt --key gateway.key
  # The scanner's leaf, issued by the root itself (see CLIENT CERTIFICATE above).
  "$bin" certs leaf --ca ca.crt --ca-key ca.key --ttl 24h --identity "$client_id" \
    --cert client.crt --key client.key
  # A client of a foreign trust anchor: must be refused.
  "$bin" certs root --name foreign.root.example --cert foreign-ca.crt --key foreign-ca.key
  "$bin" certs leaf --ca foreign-ca.crt --ca-key foreign-ca.key --ttl 24h --identity "$client_id" \
    --cert foreign.crt --key foreign.key
) >"$out/pki.log" 2>&1 || { cat "$out/pki.log" >&2; die "meshgate certs failed"; }
cat "$pki/client.crt" "$pki/client.key" >"$pki/client-mtls.pem"
chmod 600 "$pki/client-mtls.pem"

# The openssl wrapper: holds stdin open a little (TICKETS) and, in wrapper mode, adds the client
# certificate to s_client. Every other openssl command passes through unchanged.
wrapper="$out/openssl"
cert_args=""
[[ "$mode" == wrapper ]] && cert_args="-cert $pki/client-mtls.pem -key $pki/client-mtls.pem"
make_wrapper() { # $1 = path, $2 = extra s_client args
  cat >"$1" <<EOF
#!/bin/sh
# generated by tests/tls/testssl.sh
if [ "\$1" = s_client ]; then
  shift
  if [ "\$(readlink /proc/\$\$/fd/0 2>/dev/null)" = /dev/null ]; then
    sleep $stdin_delay | "$openssl_bin" s_client $2 "\$@"
    exit \$?
  fi
  exec "$openssl_bin" s_client $2 "\$@"
fi
exec "$openssl_bin" "\$@"
EOF
  chmod +x "$1"
}
make_wrapper "$wrapper" "$cert_args"
make_wrapper "$out/openssl-delay" ""

# ---------------------------------------------------------------------------------------------
# 3. meshgate on two free loopback ports
read -r port admin_port < <(python3 - <<'EOF'
import socket
socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
for s in socks:
    s.close()
EOF
)
meshgate_args=(run --cert "$pki/gateway.crt" --key "$pki/gateway.key" --trust-anchors "$pki/ca.crt"
  --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin_port" --log warn)
log "starting $bin ${meshgate_args[*]}"
"$bin" "${meshgate_args[@]}" >"$out/meshgate.log" 2>&1 &
meshgate_pid=$!
ready=0
for _ in $(seq 150); do
  kill -0 "$meshgate_pid" 2>/dev/null || { cat "$out/meshgate.log" >&2; die "meshgate exited"; }
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$admin_port/ready" || true)"
  if [[ "$code" == 200 ]]; then ready=1; break; fi
  sleep 0.2
done
[[ $ready -eq 1 ]] || { cat "$out/meshgate.log" >&2; die "meshgate not ready after 30 s"; }
log "meshgate ready: data 127.0.0.1:$port, admin 127.0.0.1:$admin_port (pid $meshgate_pid)"

# ---------------------------------------------------------------------------------------------
# 4. Own probes with openssl s_client
probes="$out/probes"
mkdir -p "$probes"
sclient() { # $1 = output file, rest = s_client args
  local f="$1"; shift
  { sleep "$stdin_delay"; } | timeout 20 "$openssl_bin" s_client -connect "127.0.0.1:$port" \
    -servername "$gw_id" -CAfile "$pki/ca.crt" "$@" >"$f" 2>&1 || true
}
negotiated() { sed -n 's/^\(New\|Reused\), \(TLSv[0-9.]*\), Cipher is \(.*\)$/\2 \3/p' "$1" | head -1; }
alert() { grep -o 'alert [a-z ]*' "$1" | head -1 || true; }
cli=(-cert "$pki/client.crt" -key "$pki/client.key")

sclient "$probes/valid.txt" "${cli[@]}" -sess_out "$probes/session.pem"
sclient "$probes/resume.txt" "${cli[@]}" -sess_in "$probes/session.pem"
sclient "$probes/nocert.txt"
sclient "$probes/foreign.txt" -cert "$pki/foreign.crt" -key "$pki/foreign.key"
sclient "$probes/tls12.txt" "${cli[@]}" -tls1_2
sclient "$probes/alpn.txt" "${cli[@]}" -alpn transport.l5d.io/v1,h2,http/1.1
sclient "$probes/order-a.txt" "${cli[@]}" -tls1_3 \
  -ciphersuites TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256
sclient "$probes/order-b.txt" "${cli[@]}" -tls1_3 \
  -ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256

valid_ok=0
if [[ -n "$(negotiated "$probes/valid.txt")" ]] && [[ -z "$(alert "$probes/valid.txt")" ]] \
   && grep -q 'Verify return code: 0' "$probes/valid.txt"; then valid_ok=1; fi
resumed=0
grep -q '^Reused, TLSv1.3' "$probes/resume.txt" && resumed=1
ticket_lifetime=""; ticket_len=""
if [[ -s "$probes/session.pem" ]]; then
  sess_text="$("$openssl_bin" sess_id -in "$probes/session.pem" -text -noout 2>/dev/null || true)"
  ticket_lifetime="$(sed -n 's/.*ticket lifetime hint: \([0-9]*\).*/\1/p' <<<"$sess_text" | head -1)"
  ticket_len="$(awk '/TLS session ticket:/ { on = 1; next }
                     on && /^ *[0-9a-f]+ - / { sub(/^ *[0-9a-f]+ - /, ""); s = substr($0, 1, 47);
                                               gsub(/-/, " ", s); n += split(s, a, " "); next }
                     on { exit } END { print n + 0 }' <<<"$sess_text")"
fi
tickets_received="$(grep -c 'Post-Handshake New Session Ticket arrived' "$probes/valid.txt" || true)"

cat >"$out/probes.env" <<EOF
probe_valid_ok=$valid_ok
probe_valid=$(negotiated "$probes/valid.txt")
probe_valid_alert=$(alert "$probes/valid.txt")
probe_nocert_negotiated=$(negotiated "$probes/nocert.txt")
probe_nocert_alert=$(alert "$probes/nocert.txt")
probe_foreign_alert=$(alert "$probes/foreign.txt")
probe_tls12=$(negotiated "$probes/tls12.txt")
probe_tls12_alert=$(alert "$probes/tls12.txt")
probe_alpn=$(sed -n 's/^ALPN protocol: //p' "$probes/alpn.txt" | head -1)
probe_order_a=$(negotiated "$probes/order-a.txt")
probe_order_b=$(negotiated "$probes/order-b.txt")
probe_tickets_received=$tickets_received
probe_ticket_lifetime=$ticket_lifetime
probe_ticket_len=$ticket_len
probe_resumed=$resumed
EOF
log "probes: $(tr '\n' ' ' <"$out/probes.env")"

# ---------------------------------------------------------------------------------------------
# 5. testssl
run_testssl() { # $1 = label, $2 = none|native|wrapper
  local label="$1" how="$2"
  local args=(--quiet --color 0 --warnings batch --connect-timeout 10 --openssl-timeout 10
    -n none --ip 127.0.0.1 --add-ca "$pki/ca.crt"
    -p -s -P -f -S -U -E
    --jsonfile "$out/testssl-$label.json" --logfile "$out/testssl-$label.log")
  case "$how" in
    native) args+=(--mtls "$pki/client-mtls.pem" --openssl "$out/openssl-delay") ;;
    wrapper) args+=(--openssl "$wrapper") ;;
    # No wrapper without a client certificate: with stdin held open s_client waits for
    # meshgate's certificate_required alert and fails, and testssl 3.0.8 (whose client-auth
    # detection looks for a TLS 1.2 "Master-Key") then gives up: "Your OpenSSL cannot connect".
    none) args+=(--openssl "$openssl_bin") ;;
  esac
  rm -f "$out/testssl-$label.json" "$out/testssl-$label.log"
  printf '%q ' timeout 900 "$testssl" "${args[@]}" "$gw_id:$port" >"$out/testssl-$label.cmd"
  log "testssl ($label): $(cat "$out/testssl-$label.cmd")"
  local rc=0
  timeout 900 "$testssl" "${args[@]}" "$gw_id:$port" >"$out/testssl-$label.txt" 2>&1 &
  scan_pid=$!
  wait "$scan_pid" || rc=$?
  scan_pid=""
  echo "$rc" >"$out/testssl-$label.rc"
  log "testssl ($label) exit status $rc"
}

primary="mtls"
[[ "$mode" == none ]] && primary="nocert"
if [[ "$primary" == mtls ]]; then run_testssl mtls "$mode"; else run_testssl nocert none; fi
if [[ "$compare" == 1 && "$primary" == mtls ]]; then run_testssl nocert none; fi

# ---------------------------------------------------------------------------------------------
# 6. Report
report_args=(--json "$out/testssl-$primary.json" --rc "$(cat "$out/testssl-$primary.rc")"
  --cmd "$(cat "$out/testssl-$primary.cmd")" --probes "$out/probes.env" --md-out "$out/summary.md")
[[ -f "$out/testssl-nocert.json" && "$primary" == mtls ]] && report_args+=(--compare "$out/testssl-nocert.json")
for id in "${excluded_ids[@]}"; do report_args+=(--exclude "$id"); done
for id in "${required_ids[@]}"; do report_args+=(--require "$id"); done

script_rel="${BASH_SOURCE[0]#"$root"/}"
invocation=""
for v in TESTSSL_CLIENT_CERT TESTSSL_COMPARE TESTSSL_STDIN_DELAY MESHGATE_TLS_IDENTITY TLS_MD; do
  [[ -n "${!v:-}" ]] && invocation+="$v=${!v} "
done
export REPORT_INVOCATION="${invocation}${script_rel} $*"
export REPORT_MESHGATE="$bin ($("$bin" --version 2>/dev/null || echo '?'), sha256 $(sha256sum "$bin" | cut -c1-16))"
export REPORT_TESTSSL="testssl ${testssl_version:-?}${testssl_pkg:+ (Debian package testssl.sh $testssl_pkg)}, $testssl"
export REPORT_OPENSSL="$openssl_version"
export REPORT_MODE="$mode"
export REPORT_HAS_MTLS="$has_mtls"
export REPORT_OUT="$out"
export REPORT_IDENTITY="$gw_id"
export REPORT_PORT="$port"

verdict=0
python3 "$here/testssl_report.py" "${report_args[@]}" || verdict=$?

echo
cat "$out/summary.md"

if [[ -n "${TLS_MD:-}" ]]; then
  python3 "$here/testssl_report.py" --splice "$out/summary.md" --into "$TLS_MD"
  log "updated $TLS_MD"
fi
log "artefacts kept in $out"
case $verdict in
  0) log "PASS: no weakness in the TLS configuration" ;;
  1) log "FAIL: weakness found (see above)" ;;
  *) log "INCOMPLETE: the scan could not be completed (see above)" ;;
esac
exit "$verdict"
