//! `meshgate check` of the control plane, when `destination_svc_addr` is set: the Destination
//! controller is reached (over mTLS as the gateway, its identity verified, when
//! `destination_svc_name` is set), and with `--lookup NAME:PORT` a `GetProfile` and a `Get` for
//! that target answer within the timeout.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::watch;

use super::{CheckArgs, Report, Status};
use crate::app;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::target::{Suffixes, Target};
use crate::upstream::destination::explain_profile;
use crate::upstream::{ClientTls, Destination};
use linkerd2_proxy_api::destination::update;

/// Adds the control-plane checks to `report`.
pub(super) async fn destination(config: &Config, args: &CheckArgs, report: &mut Report) {
    let options = match config.destination_options() {
        Ok(Some(options)) => options,
        Ok(None) => return,
        Err(problems) => return report.fail("destination", problems.join("; ")),
    };
    // The client TLS the gateway would use: its own credentials (only files can be read here;
    // Certify's are issued at run time).
    let tls = match app::load_identity(config) {
        Ok(loaded) => {
            ClientTls::new(&loaded.credentials, &loaded.anchors).map_err(|e| e.to_string())
        }
        Err(problems) => Err(problems.0.join("; ")),
    };
    let tls = match (tls, &options.name) {
        (Ok(tls), _) => tls,
        (Err(e), Some(_)) => {
            return report.fail(
                "destination",
                format!("mTLS to the controller needs the gateway's credentials: {e}"),
            );
        }
        // Plaintext to loopback needs no credentials.
        (Err(_), None) => {
            let anchors =
                app::anchor_source(config).and_then(|s| s.load().map_err(|e| e.to_string()));
            match anchors.and_then(|a| ClientTls::without_identity(&a).map_err(|e| e.to_string())) {
                Ok(tls) => tls,
                Err(e) => return report.fail("destination", e),
            }
        }
    };
    let (addr, name) = (options.addr.clone(), options.name.clone());
    let destination = match Destination::new(
        options,
        watch::channel(Arc::new(tls)).1,
        args.timeout,
        Arc::new(Metrics::new()),
    ) {
        Ok(d) => d,
        Err(e) => return report.fail("destination", e),
    };
    match tokio::time::timeout(args.timeout, destination.connect()).await {
        Ok(Ok(())) => {
            let how = match &name {
                Some(name) => format!("over mTLS; it proved {name}"),
                None => "in plaintext (loopback)".to_owned(),
            };
            report.push("destination", Status::Ok, format!("{addr} reached {how}"));
        }
        Ok(Err(e)) => return report.fail("destination", e),
        Err(_) => {
            return report.fail(
                "destination",
                format!("{addr}: no connection within {:?}", args.timeout),
            );
        }
    }
    if let Some(lookup) = &args.lookup {
        match Target::parse(lookup, &Suffixes::all()) {
            Ok(target) => look_up(&destination, &target, args, report).await,
            Err(e) => report.fail("lookup", format!("{lookup:?}: {e}")),
        }
    }
}

async fn look_up(
    destination: &Destination,
    target: &Target,
    args: &CheckArgs,
    report: &mut Report,
) {
    let deadline = args.timeout;
    let profile = async {
        let mut stream = destination
            .get_profile(target)
            .await
            .map_err(|s| describe(&s))?;
        stream
            .message()
            .await
            .map_err(|s| describe(&s))?
            .ok_or_else(|| "the stream closed without a profile".to_owned())
    };
    match tokio::time::timeout(deadline, profile).await {
        Ok(Ok(profile)) => {
            let name = profile.fully_qualified_name.clone();
            // As the gateway reads it.
            match explain_profile(target, profile, &http::Method::GET, "/") {
                Ok(explained) => {
                    let detail = match (&explained.endpoint, explained.backends.as_slice()) {
                        (Some(endpoint), _) => format!("a per-pod endpoint {endpoint}"),
                        (None, [_]) => format!("service {}", name.trim_end_matches('.')),
                        (None, backends) => format!(
                            "service {}, split {}",
                            name.trim_end_matches('.'),
                            backends
                                .iter()
                                .map(|(t, w)| format!("{t} ({w})"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                    report.push("profile", Status::Ok, format!("{target}: {detail}"));
                }
                Err(e) => {
                    report.push(
                        "profile",
                        Status::Warn,
                        format!("{target}: {e}: requests get 404"),
                    );
                }
            }
        }
        Ok(Err(e)) => report.fail("profile", format!("{target}: {e}")),
        Err(_) => report.fail(
            "profile",
            format!("{target}: no answer within {deadline:?}"),
        ),
    }
    let endpoints = async {
        let mut stream = destination.get(target).await.map_err(|s| describe(&s))?;
        stream
            .message()
            .await
            .map_err(|s| describe(&s))?
            .and_then(|u| u.update)
            .ok_or_else(|| "the stream closed without an answer".to_owned())
    };
    match tokio::time::timeout(deadline, endpoints).await {
        Ok(Ok(update::Update::Add(set))) => {
            let meshed = set
                .addrs
                .iter()
                .filter(|a| a.tls_identity.is_some())
                .count();
            report
                .push(
                    "endpoints",
                    Status::Ok,
                    format!("{target}: {} endpoint(s), {meshed} meshed", set.addrs.len()),
                )
                .facts
                .insert("endpoints".to_owned(), json!(set.addrs.len()));
        }
        Ok(Ok(update::Update::NoEndpoints(none))) => report.fail(
            "endpoints",
            if none.exists {
                format!("{target}: the service has no endpoints")
            } else {
                format!("{target}: no such service")
            },
        ),
        Ok(Ok(update::Update::Remove(_))) => {
            report.fail(
                "endpoints",
                format!("{target}: the first answer was a removal"),
            );
        }
        Ok(Err(e)) => report.fail("endpoints", format!("{target}: {e}")),
        Err(_) => report.fail(
            "endpoints",
            format!("{target}: no answer within {deadline:?}"),
        ),
    }
}

fn describe(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}
