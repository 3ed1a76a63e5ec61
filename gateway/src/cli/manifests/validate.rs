//! Validation of every `manifests` input before anything is rendered (names, domains, CIDRs,
//! durations, credential files), so a value can never break out of its place in the YAML.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) fn validate(o: &Options) -> Result<Inputs, Problems> {
    let mut problems = Vec::new();
    for (flag, value) in [("--namespace", &o.namespace), ("--name", &o.name)] {
        if !is_label(value) {
            problems.push(format!(
                "{flag} {value:?}: must be a DNS label (a-z, 0-9, '-', at most 63 characters)"
            ));
        }
    }
    for (flag, value) in [
        ("--cluster-domain", &o.cluster_domain),
        ("--trust-domain", &o.trust_domain),
        ("--cluster-issuer", &o.cluster_issuer),
    ] {
        if !is_subdomain(value) {
            problems.push(format!(
                "{flag} {value:?}: must be a DNS name of lower-case labels"
            ));
        }
    }
    if is_label(&o.name)
        && is_label(&o.namespace)
        && is_subdomain(&o.trust_domain)
        && let Err(e) = IdentityName::from_dns(&o.gateway_identity())
    {
        problems.push(format!(
            "the gateway identity {} is not usable: {e}",
            o.gateway_identity()
        ));
    }
    if o.replicas == 0 {
        problems.push("--replicas must be at least 1".to_owned());
    }
    if o.max_replicas < o.replicas {
        problems.push(format!(
            "--max-replicas {} is below --replicas {}",
            o.max_replicas, o.replicas
        ));
    }
    if !(1..=100).contains(&o.target_cpu) {
        problems.push(format!(
            "--target-cpu {}: must be a percentage from 1 to 100",
            o.target_cpu
        ));
    }
    if o.image.is_empty()
        || !o
            .image
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"./:-_@".contains(&b))
    {
        problems.push(format!(
            "--image {:?}: must be an image reference (letters, digits, . / : - _ @)",
            o.image
        ));
    }
    if o.shutdown_grace_period < Duration::from_secs(1) {
        problems.push("--shutdown-grace-period must be at least 1s".to_owned());
    }
    if o.drain_delay >= o.shutdown_grace_period {
        problems.push(format!(
            "--drain-delay {} must be shorter than --shutdown-grace-period {}",
            humantime::format_duration(o.drain_delay),
            humantime::format_duration(o.shutdown_grace_period)
        ));
    }
    for range in &o.load_balancer_source_ranges {
        if !is_cidr(range) {
            problems.push(format!(
                "--load-balancer-source-range {range:?}: must be a CIDR such as 203.0.113.0/24"
            ));
        }
    }
    if let Some(class) = &o.load_balancer_class
        && !is_qualified_name(class)
    {
        problems.push(format!(
            "--load-balancer-class {class:?}: must be a qualified name such as example.com/lb"
        ));
    }
    let mut inputs = Inputs {
        anchors_pem: None,
        credentials: None,
    };
    let mut anchors = None;
    if let Some(path) = &o.trust_anchors {
        match std::fs::read_to_string(path) {
            Err(e) => problems.push(format!("--trust-anchors {}: {e}", path.display())),
            Ok(pem) => match TrustAnchors::from_pem(&path.display().to_string(), pem.as_bytes()) {
                Err(e) => problems.push(format!("--trust-anchors: {e}")),
                Ok(parsed) => {
                    anchors = Some(parsed);
                    inputs.anchors_pem = Some(pem);
                }
            },
        }
    } else if o.identity == IdentityMode::Linkerd {
        problems.push(
            "--identity linkerd needs --trust-anchors FILE: the mesh's trust-anchor bundle \
             (kubectl -n linkerd get cm linkerd-identity-trust-roots -o jsonpath='{.data.ca-bundle\\.crt}')"
                .to_owned(),
        );
    }
    match (&o.credentials_dir, o.identity) {
        (Some(dir), IdentityMode::Secret) => {
            match credentials_from(dir, anchors.as_ref(), &o.gateway_identity()) {
                Ok(files) => inputs.credentials = Some(files),
                Err(e) => problems.push(e),
            }
        }
        (Some(_), _) => {
            problems.push("--credentials-dir is only used with --identity secret".to_owned())
        }
        (None, _) => {}
    }
    if problems.is_empty() {
        Ok(inputs)
    } else {
        Err(Problems(problems))
    }
}

/// Reads and checks `tls.crt`, `tls.key`, `ca.crt`: they must chain to the anchors (the bundle
/// given, else `ca.crt`) and name the gateway's identity.
pub(super) fn credentials_from(
    dir: &std::path::Path,
    anchors: Option<&TrustAnchors>,
    identity: &str,
) -> Result<[String; 3], String> {
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file))
            .map_err(|e| format!("--credentials-dir: {}: {e}", dir.join(file).display()))
    };
    let (crt, key, ca) = (read("tls.crt")?, read("tls.key")?, read("ca.crt")?);
    let own;
    let anchors = match anchors {
        Some(anchors) => anchors,
        None => {
            own = TrustAnchors::from_pem("ca.crt", ca.as_bytes())
                .map_err(|e| format!("--credentials-dir: {e}"))?;
            &own
        }
    };
    let credentials = Credentials::from_pem(
        "tls.crt",
        crt.as_bytes(),
        "tls.key",
        key.as_bytes(),
        anchors,
    )
    .map_err(|e| format!("--credentials-dir: {e}"))?;
    if !credentials
        .identity()
        .as_str()
        .eq_ignore_ascii_case(identity)
    {
        return Err(format!(
            "--credentials-dir: tls.crt names {}, but the gateway's identity is {identity} \
             (meshgate certs leaf --identity {identity} …)",
            credentials.identity()
        ));
    }
    Ok([crt, key, ca])
}

/// An RFC 1123 label: what Kubernetes accepts as a namespace or object name here.
pub(super) fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub(super) fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

pub(super) fn is_cidr(s: &str) -> bool {
    let Some((ip, text)) = s.split_once('/') else {
        return false;
    };
    let (Ok(ip), Ok(prefix)) = (ip.parse::<IpAddr>(), text.parse::<u8>()) else {
        return false;
    };
    // "08" or "+8" parse as 8 but are not what Kubernetes accepts.
    prefix.to_string() == text && prefix <= if ip.is_ipv4() { 32 } else { 128 }
}

/// A Kubernetes qualified name: an optional DNS-subdomain prefix and `/`, then a name of
/// alphanumerics, `-`, `_`, `.` (at most 63, starting and ending alphanumeric).
pub(super) fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, s),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    name_ok && prefix.is_none_or(is_subdomain)
}
