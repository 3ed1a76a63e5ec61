#!/usr/bin/env python3
"""Summarise a testssl.sh JSON file for tests/tls/testssl.sh (see there).

    testssl_report.py --json scan.json --rc N --cmd CMD --probes probes.env --md-out summary.md
                      [--compare other.json] [--exclude ID ...] [--require ID|ALT ...]
    testssl_report.py --splice summary.md --into tests/TLS.md

Exit status of the first form: 0 clean, 1 weakness, 2 incomplete scan.
Also reads REPORT_* variables from the environment (set by testssl.sh) for the header.
"""

import argparse
import datetime
import json
import os
import sys

SEVERITIES = ["OK", "INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL", "WARN", "DEBUG"]
BAD = {"LOW", "MEDIUM", "HIGH", "CRITICAL"}

BEGIN = "<!-- BEGIN testssl.sh generated: do not edit by hand, rerun tests/tls/testssl.sh with TLS_MD set -->"
END = "<!-- END testssl.sh generated -->"

VULN_IDS = [
    "heartbleed", "CCS", "ticketbleed", "ROBOT", "secure_renego", "secure_client_renego",
    "CRIME_TLS", "BREACH", "POODLE_SSL", "fallback_SCSV", "SWEET32", "FREAK", "DROWN",
    "DROWN_hint", "LOGJAM", "LOGJAM-common_primes", "BEAST", "LUCKY13", "RC4", "winshock",
    "opossum", "GREASE",
]

# Plain explanations of findings that are not OK/INFO, by id (first word).
EXPLAIN = {
    "cert_trust": "testssl compares the certificate's names with the name scanned. The script "
        "scans by the gateway's identity (sent as SNI), so this appears only if the identity "
        "and the certificate disagree. Mesh identities are not DNS host names; certificate "
        "naming, not a TLS setting.",
    "cert_chain_of_trust": "The chain ends in the throw-away private root made by the script; "
        "testssl also tries its public root stores (Mozilla, Apple, Java, Microsoft), which do "
        "not contain it. Expected for any mesh PKI; not a TLS setting.",
    "cert_expirationStatus": "The gateway leaf is valid for 24 h (Linkerd's leaf lifetime; "
        "meshgate reloads rotated credentials). testssl flags anything that expires within 30 "
        "days. By design, not a weakness.",
    "cert_notAfter": "Same as cert_expirationStatus: the 24 h leaf lifetime is flagged because "
        "it ends within 30 days. By design.",
    "cert_notBefore": "Certificate start date; certificate issuance, not a TLS setting.",
    "cert_validityPeriod": "Leaf lifetime against the browser limits (398/825 days); "
        "certificate issuance, not a TLS setting.",
    "cert_revocation": "The leaf names neither a CRL distribution point nor an OCSP responder. "
        "Linkerd's PKI has no revocation service and relies on short-lived (24 h) leaves "
        "instead; a private CA has no public responder anyway. Not a TLS setting.",
    "cert_crlDistributionPoints": "No CRL distribution point in the leaf; see cert_revocation.",
    "cert_ocspURL": "No OCSP URI in the leaf; see cert_revocation.",
    "OCSP_stapling": "No OCSP response stapled; there is no OCSP responder in a mesh PKI.",
    "cert_mustStapleExtension": "No OCSP must-staple extension; browser-PKI feature.",
    "certificate_transparency": "Certificate Transparency only exists for publicly trusted "
        "certificates.",
    "DNS_CAArecord": "DNS CAA records only exist for public DNS names.",
    "TLS_session_ticket": "The NewSessionTicket lifetime hint is longer than a day; testssl "
        "wants ticket keys rotated at least daily so that resumed sessions keep forward "
        "secrecy. A real configuration finding (ticketer lifetime).",
    "cipher_order": "testssl's verdict on whether the server imposes its own cipher order.",
    "sessionresumption_ticket": "testssl could not test ticket resumption (connect problem or "
        "client authentication).",
    "sessionresumption_ID": "testssl could not test resumption by session ID (connect problem "
        "or client authentication).",
    "service": "testssl's service detection (HTTP or not); DEBUG lines are diagnostics only.",
    "scanProblem": "testssl hit a problem while scanning: the scan is incomplete.",
    "engine_problem": "testssl's openssl binary lacks a feature: the scan is incomplete.",
    "optimal_proto": "testssl could not find a protocol to connect with.",
    "cert_serialNumberLen": "Certificate serial number shorter than 64 bits; issuance "
        "(meshgate certs), gated because it is cheap to fix.",
    "cert_keySize": "Key size of the server certificate below testssl's recommendation.",
    "cert_signatureAlgorithm": "Weak signature algorithm on the server certificate.",
}


def first_word(ident):
    return ident.split()[0] if ident else ident


def load(path):
    with open(path) as f:
        data = json.load(f)
    if isinstance(data, dict):  # --jsonfile-pretty layout
        found = []
        for scan in data.get("scanResult", []):
            for key, val in scan.items():
                if isinstance(val, list):
                    found.extend(x for x in val if isinstance(x, dict) and "id" in x)
        data = found
    data = [x for x in data if isinstance(x, dict) and "id" in x]
    for x in data:
        # testssl 3.0.8 bug: on a TLS 1.3-only server run_sweet32() writes its result under the
        # previous check's id (CRIME_TLS); its CVEs give it away.
        if x["id"] == "CRIME_TLS" and "CVE-2016-2183" in x.get("cve", ""):
            x["id"] = "SWEET32"
            x["finding"] += " (filed as CRIME_TLS by testssl 3.0.8)"
    return data


def read_env(path):
    env = {}
    if path and os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.rstrip("\n")
                if "=" in line:
                    k, v = line.split("=", 1)
                    env[k] = v
    return env


def md_escape(text):
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


class Scan:
    def __init__(self, findings):
        self.findings = findings

    def get(self, ident):
        return [f for f in self.findings if first_word(f["id"]) == ident]

    def text(self, *idents, default="(not reported)"):
        for ident in idents:
            got = self.get(ident)
            if got:
                return "; ".join(dict.fromkeys(f["finding"].strip() for f in got))
        return default

    def sev(self, ident):
        got = self.get(ident)
        return got[0]["severity"] if got else "-"


def summarise(args):
    probes = read_env(args.probes)
    excluded = set(args.exclude or [])
    problems = []      # incomplete-scan reasons
    weaknesses = []    # real weaknesses

    try:
        scan = Scan(load(args.json))
    except (OSError, ValueError) as err:
        scan = Scan([])
        problems.append(f"testssl JSON unreadable: {err}")

    if args.rc not in (None, 0):
        if args.rc == 124:
            problems.append("testssl timed out (timeout 900)")
        else:
            problems.append(f"testssl exit status {args.rc} (non-zero: some checks failed to run)")

    for req in args.require or []:
        alts = req.split("|")
        if not any(scan.get(a) for a in alts):
            problems.append(f"expected finding `{req}` missing from the JSON")

    warns = [f for f in scan.findings if f["severity"] == "WARN"]
    for f in warns:
        problems.append(f"WARN `{f['id']}`: {f['finding']}")

    if probes.get("probe_valid_ok") != "1":
        problems.append("probe: a client with a valid certificate could not complete a handshake "
                        f"({probes.get('probe_valid') or 'no handshake'} "
                        f"{probes.get('probe_valid_alert', '')})")

    bad = [f for f in scan.findings if f["severity"] in BAD]
    gated = [f for f in bad if first_word(f["id"]) not in excluded]
    for f in gated:
        weaknesses.append(f"{f['severity']} `{f['id']}`: {f['finding']}")

    # Probes that show a real weakness.
    if probes.get("probe_nocert_negotiated") and not probes.get("probe_nocert_alert"):
        weaknesses.append("probe: a client WITHOUT a certificate completed the handshake and was "
                          "not refused")
    if not probes.get("probe_foreign_alert"):
        weaknesses.append("probe: a client certificate from a foreign trust anchor was not refused")
    if probes.get("probe_tls12", "").startswith("TLSv1.2"):
        weaknesses.append("probe: a TLS 1.2 client was accepted")

    verdict = 1 if weaknesses else (2 if problems else 0)

    md = render(args, scan, probes, bad, excluded, problems, weaknesses, verdict)
    with open(args.md_out, "w") as f:
        f.write(md)

    # Console summary (stderr so that stdout stays the Markdown printed by the shell script).
    counts = {s: 0 for s in SEVERITIES}
    for f in scan.findings:
        counts[f["severity"]] = counts.get(f["severity"], 0) + 1
    print("[testssl_report] counts: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v),
          file=sys.stderr)
    for f in bad:
        tag = "excluded" if first_word(f["id"]) in excluded else "GATED"
        print(f"[testssl_report] {f['severity']:8} {tag:8} {f['id']}: {f['finding']}", file=sys.stderr)
    for w in weaknesses:
        print(f"[testssl_report] WEAKNESS: {w}", file=sys.stderr)
    for p in problems:
        print(f"[testssl_report] INCOMPLETE: {p}", file=sys.stderr)
    return verdict


def render(args, scan, probes, bad, excluded, problems, weaknesses, verdict):
    env = os.environ
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = []
    w = out.append
    verdict_text = {0: "PASS: no weakness in the TLS configuration",
                    1: "FAIL: weakness found",
                    2: "INCOMPLETE: the scan could not be completed"}[verdict]

    w(f"### Run of {now}\n")
    w(f"- Command: `{env.get('REPORT_INVOCATION', 'tests/tls/testssl.sh').strip()}`")
    w(f"- meshgate: `{env.get('REPORT_MESHGATE', '?')}`, listening on 127.0.0.1:"
      f"{env.get('REPORT_PORT', '?')}, identity `{env.get('REPORT_IDENTITY', '?')}`")
    w(f"- Scanner: {env.get('REPORT_TESTSSL', '?')}; {env.get('REPORT_OPENSSL', '?')}")
    mode = env.get("REPORT_MODE", "?")
    mode_text = {
        "wrapper": "with a client certificate, added to every `openssl s_client` call by an "
                   "`--openssl` wrapper (this testssl has no `--mtls`)",
        "native": "with a client certificate via testssl's `--mtls`",
        "none": "WITHOUT a client certificate (TESTSSL_CLIENT_CERT=none): incomplete by design",
    }.get(mode, mode)
    w(f"- Client certificate: {mode_text}")
    w(f"- testssl command: `{args.cmd.strip()}` (exit status {args.rc})")
    w(f"- Artefacts (JSON, logs, PKI): `{env.get('REPORT_OUT', '?')}`")
    w(f"- **Verdict: {verdict_text}**\n")

    # ---- summary
    w("#### Summary\n")
    w("| | testssl | own probe (openssl s_client) |")
    w("|---|---|---|")
    protos = []
    for ident, name in [("SSLv2", "SSLv2"), ("SSLv3", "SSLv3"), ("TLS1", "TLS 1.0"),
                        ("TLS1_1", "TLS 1.1"), ("TLS1_2", "TLS 1.2"), ("TLS1_3", "TLS 1.3")]:
        t = scan.text(ident, default="?")
        protos.append(f"{name}: {t}")
    tls12 = probes.get("probe_tls12") or f"refused ({probes.get('probe_tls12_alert') or 'no handshake'})"
    w(f"| Protocols | {md_escape('; '.join(protos))} | forced TLS 1.2: {md_escape(tls12)} |")
    w(f"| ALPN / NPN | ALPN h2: {md_escape(scan.text('ALPN_HTTP2'))}; ALPN: "
      f"{md_escape(scan.text('ALPN'))}; NPN: {md_escape(scan.text('NPN'))} | "
      f"client offering transport.l5d.io/v1, h2, http/1.1 gets: "
      f"{md_escape(probes.get('probe_alpn') or 'none')} |")
    per_proto = [f["finding"].split() for f in scan.findings
                 if first_word(f["id"]).startswith("cipher-") or first_word(f["id"]).startswith("cipher_x")]
    suites = []
    for parts in per_proto:
        names = [p for p in parts if p.startswith("TLS_")]
        if names:
            suites.append(names[-1])
    suites = list(dict.fromkeys(suites))
    w(f"| Cipher suites | {md_escape(', '.join(suites) or scan.text('PFS_ciphers', 'FS_ciphers'))} | "
      f"handshake with a valid client cert: {md_escape(probes.get('probe_valid') or '-')} |")
    cats = []
    for ident in ["cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW",
                  "cipherlist_3DES_IDEA", "cipherlist_AVERAGE", "cipherlist_OBSOLETED",
                  "cipherlist_STRONG"]:
        if scan.get(ident):
            cats.append(f"{ident.replace('cipherlist_', '')}: {scan.text(ident)}")
    w(f"| Cipher categories | {md_escape('; '.join(cats))} | |")
    w(f"| Forward secrecy | {md_escape(scan.text('PFS', 'FS'))}; curves: "
      f"{md_escape(scan.text('PFS_ECDHE_curves', 'FS_ECDHE_curves'))} | |")
    order_a = probes.get("probe_order_a", "")
    order_b = probes.get("probe_order_b", "")
    server_order = None
    if order_a and order_b:
        server_order = order_a == order_b
    w(f"| Server cipher order | {md_escape(scan.text('cipher_order'))} ({scan.sev('cipher_order')}); "
      f"negotiated: {md_escape(scan.text('cipher_negotiated'))} | "
      f"client offers ChaCha20 first → {md_escape(order_a or '-')}; AES-128 first → "
      f"{md_escape(order_b or '-')}: "
      f"{'server order' if server_order else ('client order' if server_order is False else '?')} |")
    w(f"| Session tickets | RFC 5077 hint: {md_escape(scan.text('TLS_session_ticket'))}; "
      f"session ID: {md_escape(scan.text('SSL_sessionID_support'))} | "
      f"{probes.get('probe_tickets_received', '?')} NewSessionTicket(s) after the handshake; "
      f"lifetime hint {probes.get('probe_ticket_lifetime') or '-'} s; ticket "
      f"{probes.get('probe_ticket_len') or '-'} bytes |")
    resumed = probes.get("probe_resumed") == "1"
    w(f"| Session resumption | tickets: {md_escape(scan.text('sessionresumption_ticket'))}; "
      f"ID: {md_escape(scan.text('sessionresumption_ID'))} | "
      f"reconnect with the saved session: {'resumed (Reused, TLSv1.3)' if resumed else 'NOT resumed'} |")
    nocert = probes.get("probe_nocert_alert") or (
        "ACCEPTED" if probes.get("probe_nocert_negotiated") else "no handshake")
    foreign = probes.get("probe_foreign_alert") or "NOT refused"
    w(f"| Client certificate | {md_escape(scan.text('clientAuth', default='(not reported by this testssl)'))} | "
      f"none → refused ({md_escape(nocert)}); foreign trust anchor → refused ({md_escape(foreign)}) |")
    w(f"| Server certificate | {md_escape(scan.text('cert_signatureAlgorithm'))}, "
      f"{md_escape(scan.text('cert_keySize'))}; trust: {md_escape(scan.text('cert_trust'))}; "
      f"chain: {md_escape(scan.text('cert_chain_of_trust'))} | |")
    w("")

    # ---- vulnerabilities
    w("#### Vulnerability checks (-U)\n")
    w("| check | severity | CVE | result |")
    w("|---|---|---|---|")
    seen = set()
    for f in scan.findings:
        ident = first_word(f["id"])
        if ident in VULN_IDS or ident.startswith("BEAST_") or f.get("cve"):
            key = (f["id"], f["finding"])
            if key in seen:
                continue
            seen.add(key)
            w(f"| {md_escape(f['id'])} | {f['severity']} | {md_escape(f.get('cve', ''))} | "
              f"{md_escape(f['finding'])} |")
    w("")

    # ---- counts
    counts = {}
    for f in scan.findings:
        counts[f["severity"]] = counts.get(f["severity"], 0) + 1
    w("#### Findings by severity\n")
    shown = [s for s in SEVERITIES if s in counts or s in ("OK", "INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL", "WARN")]
    shown += [s for s in counts if s not in shown]
    w("| " + " | ".join(shown) + " |")
    w("|" + "---|" * len(shown))
    w("| " + " | ".join(str(counts.get(s, 0)) for s in shown) + " |")
    w("")

    # ---- every finding that is not OK/INFO
    others = [f for f in scan.findings if f["severity"] not in ("OK", "INFO")]
    w("#### Every finding other than OK/INFO\n")
    if not others:
        w("None.\n")
    else:
        w("| id | severity | finding | gate | explanation |")
        w("|---|---|---|---|---|")
        for f in others:
            ident = first_word(f["id"])
            if f["severity"] in BAD:
                gate = "excluded (not TLS config)" if ident in excluded else "**FAILS the run**"
            elif f["severity"] == "WARN":
                gate = "**scan incomplete**"
            else:
                gate = "-"
            w(f"| {md_escape(f['id'])} | {f['severity']} | {md_escape(f['finding'])} | {gate} | "
              f"{md_escape(EXPLAIN.get(ident, 'No explanation on file: review it.'))} |")
        w("")

    # ---- gate
    if weaknesses or problems:
        w("#### What failed\n")
        for x in weaknesses:
            w(f"- weakness: {md_escape(x)}")
        for x in problems:
            w(f"- incomplete: {md_escape(x)}")
        w("")

    # ---- result-dependent notes
    notes = []
    if server_order is False:
        notes.append(
            "**No server cipher order.** The server takes the client's preference (rustls "
            "`ignore_client_order = false`, the default): a client offering ChaCha20 first gets "
            f"{order_a or '?'}, one offering AES-128 first gets {order_b or '?'}. testssl rates "
            "this INFO for a TLS 1.3-only server whose every suite is AEAD with forward secrecy, so "
            "it is not a weakness and does not fail the run. With `ignore_client_order = true` both "
            "probes should get the server's first suite (TLS_AES_128_GCM_SHA256 in meshgate's "
            "provider order) and testssl should report a server cipher order.")
    elif server_order:
        notes.append(
            f"**Server cipher order.** Both client orders negotiate {order_a}: the server imposes "
            "its own preference (rustls `ignore_client_order = true`).")
    lifetime = probes.get("probe_ticket_lifetime") or ""
    tlen = probes.get("probe_ticket_len") or ""
    if resumed:
        if lifetime == "86400" and tlen == "32":
            kind = ("These are rustls's **stateful** resumption tickets: a 32-byte id into the "
                    "per-process `ServerSessionMemoryCache` (the default `session_storage`, 256 "
                    "entries), announced with rustls's fixed 86400 s lifetime. Resumption works, but "
                    "only against the same process and while the entry survives in the cache. A "
                    "stateless ticketer (aws-lc-rs `Ticketer`) would announce 43200 s and send much "
                    "longer tickets (the encrypted session state).")
        elif tlen and tlen != "32":
            kind = (f"The {tlen}-byte tickets with a {lifetime or '?'} s lifetime are consistent "
                    "with a **stateless** ticketer (encrypted session state; rustls/aws-lc-rs "
                    "`Ticketer` announces 43200 s).")
        else:
            kind = ""
        notes.append("**Session resumption works** (TLS 1.3 PSK resumption from a "
                     "NewSessionTicket; the 'session ID' and 'ticket' rows of testssl are TLS 1.2 "
                     "notions, in TLS 1.3 both mean this). " + kind)
    else:
        notes.append("**No session resumption**: reconnecting with the saved session did not "
                     "resume. " + ("No NewSessionTicket arrived." if probes.get(
                         "probe_tickets_received") in ("0", "") else ""))
    if scan.text("TLS_session_ticket").startswith("no") and resumed:
        notes.append("testssl's 'Session Ticket RFC 5077 hint: no' contradicts the probe; this "
                     "happens when its s_client hangs up before the post-handshake tickets "
                     "arrive (see TICKETS in testssl.sh; raise TESTSSL_STDIN_DELAY).")
    if notes:
        w("#### Notes on this run\n")
        for n in notes:
            w(f"- {n}")
        w("")

    # ---- comparison with the scan without a client certificate
    if args.compare:
        try:
            other = Scan(load(args.compare))
        except (OSError, ValueError) as err:
            other = None
            w(f"Comparison scan unreadable: {err}\n")
        aborted = other is not None and [
            f for f in other.findings
            if f["id"] in ("optimal_proto", "scanProblem") or
            (f["id"] == "scanTime" and f["severity"] == "WARN")]
        if aborted:
            w("#### Same scan without a client certificate\n")
            w("testssl gave up: " + "; ".join(md_escape(f["finding"]) for f in aborted) +
              " (meshgate answered its ClientHello and then refused the missing certificate; "
              "see the notes above the generated section).\n")
        elif other is not None:
            w("#### Same scan without a client certificate: what differs\n")
            w("| id | with client cert | without |")
            w("|---|---|---|")

            def index(s):
                d = {}
                for f in s.findings:
                    if first_word(f["id"]) in ("cert", "scanTime", "cert_notBefore", "cert_notAfter") \
                            or f["id"].startswith("cert_fingerprint") or f["id"].startswith("cert_serial"):
                        continue
                    d.setdefault(f["id"], []).append(f"{f['severity']} {f['finding'].strip()}")
                return {k: "; ".join(v) for k, v in d.items()}

            a, b = index(scan), index(other)
            for ident in list(dict.fromkeys(list(a) + list(b))):
                if a.get(ident) != b.get(ident):
                    w(f"| {md_escape(ident)} | {md_escape(a.get(ident, '(absent)'))} | "
                      f"{md_escape(b.get(ident, '(absent)'))} |")
            w("")
    return "\n".join(out) + "\n"


def splice(block_path, target):
    with open(block_path) as f:
        block = f.read().rstrip("\n") + "\n"
    new = f"{BEGIN}\n{block}{END}\n"
    if os.path.exists(target):
        with open(target) as f:
            text = f.read()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            text = head + new + tail.lstrip("\n")
        else:
            text = text.rstrip("\n") + "\n\n" + new
    else:
        text = "# TLS scan of meshgate's data port\n\n" + new
    with open(target, "w") as f:
        f.write(text)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--json")
    p.add_argument("--rc", type=int)
    p.add_argument("--cmd", default="")
    p.add_argument("--probes")
    p.add_argument("--md-out")
    p.add_argument("--compare")
    p.add_argument("--exclude", action="append")
    p.add_argument("--require", action="append")
    p.add_argument("--splice")
    p.add_argument("--into")
    args = p.parse_args()
    if args.splice:
        splice(args.splice, args.into)
        return 0
    if not args.json or not args.md_out:
        p.error("--json and --md-out are required")
    return summarise(args)


if __name__ == "__main__":
    sys.exit(main())
