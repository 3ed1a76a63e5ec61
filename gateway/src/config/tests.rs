use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshgate-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn creds() -> Overrides {
    vec![
        ("cert", "/c.crt".into()),
        ("key", "/c.key".into()),
        ("trust_anchors", "/ca.crt".into()),
    ]
}

#[test]
fn config_defaults_are_linkerd_ports() {
    let c = Config::load(None, &env(&[]), &creds()).unwrap();
    assert_eq!(c.listen.port(), 4143);
    assert_eq!(c.admin_listen.port(), 4191);
    assert_eq!(c.gateway_suffixes, vec!["svc.cluster.local"]);
    assert_eq!(c.detect_timeout, Duration::from_secs(10));
}

#[test]
fn config_env_overrides_file_and_flags_override_env() {
    let file = write(
        "precedence",
        "listen: 127.0.0.1:1000\nadmin_listen: 127.0.0.1:1001\nlog: debug\n",
    );
    let e = env(&[
        (ENV_LISTEN, "127.0.0.1:2000"),
        (
            "LINKERD2_PROXY_INBOUND_GATEWAY_SUFFIXES",
            "svc.east.local.,svc.west.local",
        ),
        ("LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT", "500ms"),
    ]);
    let mut flags = creds();
    flags.push(("log", "warn".into()));
    let c = Config::load(Some(&file), &e, &flags).unwrap();
    assert_eq!(c.listen, "127.0.0.1:2000".parse().unwrap());
    assert_eq!(c.admin_listen, "127.0.0.1:1001".parse().unwrap());
    assert_eq!(
        c.gateway_suffixes,
        vec!["svc.east.local.", "svc.west.local"]
    );
    assert_eq!(c.detect_timeout, Duration::from_millis(500));
    assert_eq!(c.log, "warn");
}

#[test]
fn meshgate_env_wins_over_linkerd_env() {
    let e = env(&[(ENV_LOG, "debug"), ("LINKERD2_PROXY_LOG", "trace")]);
    assert_eq!(Config::load(None, &e, &creds()).unwrap().log, "debug");
}

#[test]
fn endpoints_flag_lists_several_addresses_per_name() {
    let mut flags = creds();
    flags.push((
        "endpoints",
        "a.ns.svc.cluster.local:80=127.0.0.1:1,a.ns.svc.cluster.local:80=127.0.0.1:2,b.ns.svc.cluster.local:81=127.0.0.1:3".into(),
    ));
    let c = Config::load(None, &env(&[]), &flags).unwrap();
    assert_eq!(c.endpoints["a.ns.svc.cluster.local:80"].len(), 2);
    assert_eq!(
        c.endpoints["b.ns.svc.cluster.local:81"],
        vec!["127.0.0.1:3".parse().unwrap()]
    );
}

#[test]
fn config_check_reports_every_error() {
    let file = write(
        "bad",
        "listen: not-an-address\nbogus: 1\nconnect_timeout: soon\nmax_connections: -3\ngateway_suffixes: ['bad suffix']\nendpoints:\n  web.ns.svc.cluster.local: ['127.0.0.1:1']\n  10.0.0.1:80: []\n",
    );
    let problems = Config::load(Some(&file), &env(&[]), &Vec::new())
        .unwrap_err()
        .0;
    let text = problems.join("\n");
    for needle in [
        "listen",
        "unknown key bogus",
        "connect_timeout",
        "max_connections",
        "gateway_suffixes",
        "\"web.ns.svc.cluster.local\" must be name:port",
        "\"10.0.0.1:80\" has no addresses",
        "no credentials",
        "no trust anchors",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn yaml_syntax_error_is_reported_with_the_file() {
    let file = write("syntax", "listen: [\n");
    let problems = Config::load(Some(&file), &env(&[]), &creds())
        .unwrap_err()
        .0;
    assert!(problems[0].contains("config.yaml"), "{problems:?}");
}

#[test]
fn identity_dir_supplies_cert_key_and_anchors() {
    let flags = vec![("identity_dir", "/var/run/meshgate/tls".to_string())];
    let c = Config::load(None, &env(&[]), &flags).unwrap();
    let (cert, key, anchors) = c.credential_paths();
    assert_eq!(cert.unwrap(), Path::new("/var/run/meshgate/tls/tls.crt"));
    assert_eq!(key.unwrap(), Path::new("/var/run/meshgate/tls/tls.key"));
    assert_eq!(anchors.unwrap(), Path::new("/var/run/meshgate/tls/ca.crt"));
}

#[test]
fn effective_config_roundtrips_through_yaml() {
    let c = Config::load(None, &env(&[]), &creds()).unwrap();
    let file = write("roundtrip", &c.to_yaml());
    assert_eq!(
        Config::load(Some(&file), &env(&[]), &Vec::new()).unwrap(),
        c
    );
}

#[test]
fn linkerd_proxy_environment_configures_a_gateway_pod() {
    let e = env(&[
        ("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "[::]:4143"),
        ("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", "[::]:4191"),
        (
            "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ),
        (
            "LINKERD2_PROXY_IDENTITY_LOCAL_NAME",
            "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local",
        ),
        (
            "LINKERD2_PROXY_INBOUND_GATEWAY_SUFFIXES",
            "svc.cluster.local.",
        ),
        ("LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT", "2s"),
        ("LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD", "30s"),
        ("LINKERD2_PROXY_LOG", "warn,linkerd=info"),
        ("LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED", "true"),
        ("LINKERD2_PROXY_METRICS_RETAIN_IDLE", "5m"),
        (ENV_CERT, "/c.crt"),
        (ENV_KEY, "/c.key"),
    ]);
    let c = Config::load(None, &e, &Vec::new()).unwrap();
    assert_eq!(c.listen, "[::]:4143".parse().unwrap());
    assert_eq!(c.admin_listen, "[::]:4191".parse().unwrap());
    assert!(
        c.trust_anchors_pem
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    assert_eq!(
        c.identity_name.as_deref(),
        Some("linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local")
    );
    assert_eq!(c.gateway_suffixes, vec!["svc.cluster.local."]);
    assert_eq!(c.detect_timeout, Duration::from_secs(2));
    assert_eq!(c.shutdown_grace_period, Duration::from_secs(30));
    assert_eq!(c.log, "warn,linkerd=info");
    assert!(c.shutdown_endpoint_enabled);
    assert_eq!(c.metrics_retain_idle, Duration::from_secs(300));
}

#[test]
fn bad_boolean_and_identity_name_are_reported() {
    let e = env(&[
        (ENV_SHUTDOWN_ENDPOINT_ENABLED, "perhaps"),
        (ENV_IDENTITY_NAME, "not a name"),
    ]);
    let problems = Config::load(None, &e, &creds()).unwrap_err().0.join("\n");
    assert!(
        problems.contains("MESHGATE_SHUTDOWN_ENDPOINT_ENABLED"),
        "{problems}"
    );
    assert!(problems.contains("identity_name"), "{problems}");
}
