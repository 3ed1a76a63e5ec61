//! `meshgate check`: a preflight for operators. Locally it checks what `meshgate run` would
//! start with — the configuration, the policy, the trust anchors, that the credentials chain to
//! them and name the identity the Service announces, how many days each certificate has left,
//! and that the ports can be bound; with `destination_svc_addr`, that the Destination controller
//! is reached and proves its identity, and with `--lookup` what it answers for a target
//! (`check/control.rs`). With `--remote` it is a mesh client of a running gateway
//! (`check/remote.rs`).
//!
//! Every check reports `ok`, `warn` or `fail`; any `fail` makes the command exit 1.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use clap::{Args, ValueEnum};
use identity::inspect::{self, Lifetime};
use identity::{Credentials, TrustAnchors, identity_of_cert};
use rustls::pki_types::CertificateDer;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::app;
use crate::config::{Config, Problems};

mod control;
mod remote;

pub use remote::remote;

/// Issuers and anchors with fewer days left than this are a warning (as `linkerd check`).
const CA_WARN_DAYS: f64 = 60.0;
/// A leaf with less than this share of its lifetime left is a warning (renewal should have
/// happened: Linkerd renews at 70 %, the cert-manager setup of `meshgate manifests` at ~48 %).
const LEAF_WARN_SHARE: f64 = 0.2;

/// How the report is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned lines for a person.
    Human,
    /// One JSON object for scripts.
    Json,
}

/// `meshgate check`'s own flags (the configuration flags are `meshgate run`'s).
#[derive(Clone, Debug, Args)]
pub struct CheckArgs {
    /// The identity the gateway is announced as (the Service's
    /// `mirror.linkerd.io/gateway-identity`) [default: the configured identity_name; with
    /// `--remote` and no identity_name, the identity of the configured certificate, as when a
    /// gateway is checked with its own configuration].
    #[arg(long)]
    pub gateway_identity: Option<String>,
    /// Check a running gateway at HOST:PORT as a mesh client instead of the local setup;
    /// `--cert`/`--key` (or `--identity-dir`) are then the client's credentials and
    /// `--trust-anchors` the bundle the gateway must chain to.
    #[arg(long, value_name = "HOST:PORT")]
    pub remote: Option<String>,
    /// The running gateway's admin port for `/ready` [default: the remote host, port 4191].
    #[arg(long, value_name = "HOST:PORT", requires = "remote")]
    pub remote_admin: Option<String>,
    /// With `--remote`: send `GET /` for this target (NAME:PORT) as a Linkerd proxy does
    /// (transport header, HTTP/1) and report whether the gateway routed it.
    #[arg(long, value_name = "NAME:PORT", requires = "remote")]
    pub target: Option<String>,
    /// Without `--remote`, with `destination_svc_addr` set: ask the Destination controller for
    /// this target's profile and endpoints (NAME:PORT) and report what it answers.
    #[arg(long, value_name = "NAME:PORT", conflicts_with = "remote")]
    pub lookup: Option<String>,
    /// Deadline for each network step.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub output: Output,
}

/// A check's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but needs attention soon.
    Warn,
    /// Would not work.
    Fail,
}

/// One check.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What was checked, e.g. `credentials` or `leaf expiry`.
    pub check: String,
    /// The outcome.
    pub status: Status,
    /// One line for a person.
    pub detail: String,
    /// Machine-readable facts (days left, negotiated parameters, status codes).
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub facts: Map<String, Value>,
}

/// Every check, in the order run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The checks.
    pub checks: Vec<Check>,
}

impl Report {
    fn push(&mut self, check: &str, status: Status, detail: impl Into<String>) -> &mut Check {
        self.checks.push(Check {
            check: check.to_owned(),
            status,
            detail: detail.into(),
            facts: Map::new(),
        });
        self.checks.last_mut().unwrap_or_else(|| unreachable!())
    }

    /// Whether no check failed (warnings pass).
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    fn fail(&mut self, check: &str, detail: impl Into<String>) {
        self.push(check, Status::Fail, detail);
    }

    /// Aligned lines for a person, then a verdict.
    pub fn render(&self) -> String {
        let width = self.checks.iter().map(|c| c.check.len()).max().unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            let status = match c.status {
                Status::Ok => "ok",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            let _ = writeln!(out, "{status:<4}  {:<width$}  {}", c.check, c.detail);
        }
        let count = |s| self.checks.iter().filter(|c| c.status == s).count();
        let (failed, warned) = (count(Status::Fail), count(Status::Warn));
        let _ = match (failed, warned) {
            (0, 0) => writeln!(out, "\nall {} checks passed", self.checks.len()),
            (0, w) => writeln!(out, "\npassed, with {w} warning(s)"),
            (f, _) => writeln!(out, "\n{f} check(s) failed"),
        };
        out
    }

    /// The report as one JSON object: `{"ok": …, "checks": […]}`.
    pub fn to_json(&self) -> String {
        let report = json!({"ok": self.ok(), "checks": self.checks});
        serde_json::to_string_pretty(&report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// Checks the local setup: `config` as `meshgate run` would load it, and the Destination
/// controller it names.
pub async fn local(config: Result<Config, Problems>, args: &CheckArgs) -> Report {
    let mut report = Report::default();
    let config = match config {
        Ok(config) => {
            report.push("config", Status::Ok, "valid");
            config
        }
        Err(problems) => {
            report.fail("config", problems.0.join("; "));
            return report;
        }
    };
    if config.policy.is_some() {
        match app::load_policy(&config) {
            Ok(_) => report.push("policy", Status::Ok, "loaded"),
            Err(problems) => report.push("policy", Status::Fail, problems.0.join("; ")),
        };
    }
    let anchors = anchors(&config, &mut report);
    let expected = args
        .gateway_identity
        .clone()
        .or_else(|| config.identity_name.clone());
    if let Some(addr) = &config.identity_svc_addr {
        certify_setup(&config, addr, &mut report);
    } else if let Some(anchors) = &anchors {
        let identity = credentials(&config, anchors, &mut report);
        if let Some(identity) = identity {
            compare_identity(&identity, expected.as_deref(), &mut report);
        }
    }
    for (what, addr) in [
        ("listen", config.listen),
        ("admin_listen", config.admin_listen),
    ] {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => report.push("port", Status::Ok, format!("{what} {addr} can be bound")),
            Err(e) => report.push(
                "port",
                Status::Fail,
                format!("{what} {addr} cannot be bound: {e}"),
            ),
        };
    }
    control::destination(&config, args, &mut report).await;
    report
}

/// The trust anchors `run` would load, and each one's expiry.
fn anchors(config: &Config, report: &mut Report) -> Option<TrustAnchors> {
    let loaded = app::anchor_source(config).and_then(|source| {
        source
            .load()
            .map(|a| (a, source.what()))
            .map_err(|e| e.to_string())
    });
    match loaded {
        Ok((anchors, what)) => {
            let n = anchors.anchors().len();
            report
                .push(
                    "trust anchors",
                    Status::Ok,
                    format!("{n} root(s) from {what}"),
                )
                .facts
                .insert("roots".to_owned(), json!(n));
            for anchor in anchors.anchors() {
                expiry(report, "anchor expiry", &anchor.der, false);
            }
            Some(anchors)
        }
        Err(e) => {
            report.fail("trust anchors", e);
            None
        }
    }
}

/// The credential files: that they chain to the anchors with a matching key, and each
/// certificate's expiry. Returns the leaf's identity.
fn credentials(config: &Config, anchors: &TrustAnchors, report: &mut Report) -> Option<String> {
    let (Some(cert), Some(key), _) = config.credential_paths() else {
        report.fail("credentials", "no certificate and key configured");
        return None;
    };
    let (cert_what, key_what) = (cert.display().to_string(), key.display().to_string());
    let files = std::fs::read(&cert)
        .map_err(|e| format!("{cert_what}: {e}"))
        .and_then(|chain| {
            Ok((
                chain,
                std::fs::read(&key).map_err(|e| format!("{key_what}: {e}"))?,
            ))
        });
    let (chain_pem, key_pem) = match files {
        Ok(files) => files,
        Err(e) => {
            report.fail("credentials", e);
            return None;
        }
    };
    match Credentials::from_pem(&cert_what, &chain_pem, &key_what, &key_pem, anchors) {
        Ok(_) => report.push(
            "credentials",
            Status::Ok,
            format!("{cert_what} chains to the trust anchors; the key matches"),
        ),
        Err(e) => report.push("credentials", Status::Fail, format!("{cert_what}: {e}")),
    };
    // Expiry of every certificate in the file, even when the chain does not verify: an expired
    // leaf is the usual reason.
    let chain = inspect::read_pem(&cert_what, &chain_pem).ok()?;
    for (i, der) in chain.iter().enumerate() {
        let what = if i == 0 {
            "leaf expiry"
        } else {
            "issuer expiry"
        };
        expiry(report, what, der, i == 0);
    }
    chain
        .first()
        .and_then(identity_of_cert)
        .map(|id| id.to_string())
}

/// Credentials from Linkerd's identity service: what can be checked without asking it.
fn certify_setup(config: &Config, addr: &str, report: &mut Report) {
    let token = &config.identity_token_file;
    match std::fs::metadata(token) {
        Ok(_) => report.push(
            "credentials",
            Status::Ok,
            format!(
                "issued by Linkerd's identity service {addr} ({}) for {}; token {} readable",
                config.identity_svc_name,
                config.identity_name.as_deref().unwrap_or("?"),
                token.display()
            ),
        ),
        Err(e) => report.push(
            "credentials",
            Status::Fail,
            format!(
                "Linkerd's identity service needs the token {}: {e}",
                token.display()
            ),
        ),
    };
}

fn compare_identity(actual: &str, expected: Option<&str>, report: &mut Report) {
    let check = match expected {
        None => report.push(
            "identity",
            Status::Warn,
            format!(
                "the certificate names {actual}; not compared (pass --gateway-identity, the \
                 Service's mirror.linkerd.io/gateway-identity)"
            ),
        ),
        Some(expected) if expected.trim_end_matches('.').eq_ignore_ascii_case(actual) => {
            report.push("identity", Status::Ok, format!("{actual}, as announced"))
        }
        Some(expected) => report.push(
            "identity",
            Status::Fail,
            format!(
                "the certificate names {actual}, but the gateway is announced as {expected}: \
                 remote proxies will refuse it"
            ),
        ),
    };
    check.facts.insert("identity".to_owned(), json!(actual));
}

/// One certificate's remaining lifetime.
fn expiry(report: &mut Report, check: &str, der: &CertificateDer<'_>, leaf: bool) {
    let Ok(cert) = inspect::Report::of(check, der) else {
        report.fail(check, "not an X.509 certificate");
        return;
    };
    let name = cert.identity.as_deref().unwrap_or(&cert.subject);
    let until = cert.not_after_text();
    let (status, detail, days_left) = match cert.lifetime(SystemTime::now()) {
        Lifetime::NotYetValid => (
            Status::Fail,
            format!("{name}: not valid until {}", cert.not_before_text()),
            None,
        ),
        Lifetime::Expired { days_ago } => (
            Status::Fail,
            format!("{name}: expired {until}"),
            Some(-days_ago),
        ),
        Lifetime::Valid {
            days_left,
            share_left,
        } => {
            let soon = if leaf {
                share_left < LEAF_WARN_SHARE
            } else {
                days_left < CA_WARN_DAYS
            };
            (
                if soon { Status::Warn } else { Status::Ok },
                format!("{name}: {days_left:.1} days left (until {until})"),
                Some(days_left),
            )
        }
    };
    let facts = &mut report.push(check, status, detail).facts;
    facts.insert("subject".to_owned(), json!(cert.subject));
    if let Some(days) = days_left {
        facts.insert("days_left".to_owned(), json!((days * 10.0).round() / 10.0));
    }
    facts.insert("not_after".to_owned(), json!(until));
}
