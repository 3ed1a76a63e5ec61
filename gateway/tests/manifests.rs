//! `meshgate manifests`: the rendered YAML parsed into typed Kubernetes objects (k8s-openapi),
//! checked for what the cluster and Linkerd's service mirror rely on: ports, probes,
//! annotations, security context, and that every reference between the objects resolves.
//! (`kubernetes-validate --strict` checks the schemas in `.ci/run`.)

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use gateway::cli::manifests::{self, IdentityMode, Options, TrafficPolicy};
use identity::testing::TestCa;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodSpec, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize as _;
use serde_norway::Value;

/// One rendering, split by kind.
#[derive(Default)]
struct Objects {
    namespace: Vec<Namespace>,
    service_account: Vec<ServiceAccount>,
    deployment: Vec<Deployment>,
    service: Vec<Service>,
    pdb: Vec<PodDisruptionBudget>,
    hpa: Vec<HorizontalPodAutoscaler>,
    secret: Vec<Secret>,
    config_map: Vec<ConfigMap>,
    /// cert-manager `Certificate` and Prometheus operator `PodMonitor`: no typed bindings.
    custom: Vec<(String, Value)>,
}

fn parse(yaml: &str) -> Objects {
    let mut out = Objects::default();
    for document in serde_norway::Deserializer::from_str(yaml) {
        let value = Value::deserialize(document).expect("valid YAML");
        if value.is_null() {
            continue;
        }
        let kind = value["kind"].as_str().expect("kind").to_owned();
        match kind.as_str() {
            "Namespace" => out.namespace.push(typed(value)),
            "ServiceAccount" => out.service_account.push(typed(value)),
            "Deployment" => out.deployment.push(typed(value)),
            "Service" => out.service.push(typed(value)),
            "PodDisruptionBudget" => out.pdb.push(typed(value)),
            "HorizontalPodAutoscaler" => out.hpa.push(typed(value)),
            "Secret" => out.secret.push(typed(value)),
            "ConfigMap" => out.config_map.push(typed(value)),
            "Certificate" | "PodMonitor" => out.custom.push((kind, value)),
            other => panic!("unexpected kind {other}"),
        }
    }
    out
}

/// PEM with LF line ends, as YAML block scalars carry it.
fn lf(pem: &str) -> String {
    pem.replace("\r\n", "\n")
}

fn typed<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_norway::from_value(value).expect("matches the typed object")
}

fn render(options: &Options) -> (String, Objects) {
    let yaml = manifests::render(options).expect("valid options");
    let objects = parse(&yaml);
    (yaml, objects)
}

fn one<'a, T>(items: &'a [T], what: &str) -> &'a T {
    assert_eq!(items.len(), 1, "exactly one {what}");
    &items[0]
}

fn custom<'a>(objects: &'a Objects, kind: &str) -> Option<&'a Value> {
    let mut found = objects.custom.iter().filter(|(k, _)| k == kind);
    let first = found.next().map(|(_, v)| v);
    assert!(found.next().is_none(), "more than one {kind}");
    first
}

fn pod(deployment: &Deployment) -> &PodSpec {
    deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
}

fn container(deployment: &Deployment) -> &Container {
    one(&pod(deployment).containers, "container")
}

fn env(container: &Container) -> BTreeMap<String, String> {
    container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

fn args(container: &Container) -> Vec<String> {
    container.args.clone().unwrap_or_default()
}

/// The container port a named port resolves to.
fn container_port(container: &Container, port: &IntOrString) -> i32 {
    match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => {
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .unwrap_or_else(|| panic!("no container port named {name}"))
                .container_port
        }
    }
}

/// Where a volume is mounted, by the volume's name.
fn mount_path(deployment: &Deployment, volume: &str) -> String {
    container(deployment)
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == volume)
        .unwrap_or_else(|| panic!("volume {volume} not mounted"))
        .mount_path
        .clone()
}

/// The common checks every variant must pass; returns the gateway identity announced.
fn check_common(options: &Options, objects: &Objects) -> String {
    let ns = &options.namespace;
    assert_eq!(
        one(&objects.namespace, "Namespace")
            .metadata
            .name
            .as_deref(),
        Some(ns.as_str())
    );
    let sa = one(&objects.service_account, "ServiceAccount");
    assert_eq!(sa.automount_service_account_token, Some(false));

    let deployment = one(&objects.deployment, "Deployment");
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(
        spec.replicas,
        Some(i32::try_from(options.replicas).unwrap())
    );
    let template = spec.template.metadata.as_ref().unwrap();
    let pod_labels = template.labels.clone().unwrap();
    let selector = spec.selector.match_labels.clone().unwrap();
    assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
    assert_eq!(
        template.annotations.as_ref().unwrap()["linkerd.io/inject"],
        "disabled"
    );
    let pod = pod(deployment);
    assert_eq!(pod.service_account_name, sa.metadata.name);
    // Spread across zones and nodes, selecting this Deployment's pods.
    let spread: Vec<_> = pod.topology_spread_constraints.iter().flatten().collect();
    let keys: Vec<_> = spread.iter().map(|c| c.topology_key.as_str()).collect();
    assert_eq!(
        keys,
        ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    );
    for constraint in spread {
        let labels = constraint
            .label_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref();
        assert_eq!(labels, Some(&selector));
    }
    // Security: non-root 2103, read-only root, no privilege escalation, no capabilities.
    let pod_security = pod.security_context.as_ref().unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(pod_security.run_as_user, Some(2103));
    assert_eq!(pod_security.run_as_group, Some(2103));
    let container = container(deployment);
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(
        security.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_owned()][..])
    );
    // Ports and probes: data 4143, admin 4191 with /ready and /live.
    let ports: Vec<_> = container
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap(), p.container_port))
        .collect();
    assert_eq!(
        ports,
        [("mc-gateway".to_owned(), 4143), ("admin".to_owned(), 4191)]
    );
    let readiness = container
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(readiness.path.as_deref(), Some("/ready"));
    assert_eq!(container_port(container, &readiness.port), 4191);
    let liveness = container
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(liveness.path.as_deref(), Some("/live"));
    assert_eq!(container_port(container, &liveness.port), 4191);
    // The autoscaler needs a CPU request; a memory limit bounds a leak.
    let resources = container.resources.as_ref().unwrap();
    assert!(resources.requests.as_ref().unwrap().contains_key("cpu"));
    assert!(resources.limits.as_ref().unwrap().contains_key("memory"));
    // The pod outlives the drain: kubelet's grace > the gateway's own grace period > the delay.
    let env = env(container);
    let grace = humantime::parse_duration(&env["MESHGATE_SHUTDOWN_GRACE_PERIOD"]).unwrap();
    let delay = humantime::parse_duration(&env["MESHGATE_DRAIN_DELAY"]).unwrap();
    assert_eq!(grace, options.shutdown_grace_period);
    assert!(delay < grace);
    let kubelet_grace = pod.termination_grace_period_seconds.unwrap();
    assert!(
        Duration::from_secs(u64::try_from(kubelet_grace).unwrap()) > grace,
        "terminationGracePeriodSeconds {kubelet_grace} is not longer than the drain {grace:?}"
    );
    assert!(
        args(container).contains(&format!(
            "--gateway-suffixes=svc.{}.",
            options.cluster_domain
        )),
        "{:?}",
        args(container)
    );

    // The Service: LoadBalancer, Linkerd's port names, the mirror's annotations.
    let service = one(&objects.service, "Service");
    let service_spec = service.spec.as_ref().unwrap();
    assert_eq!(service_spec.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(service_spec.selector.as_ref(), Some(&selector));
    let service_ports: Vec<_> = service_spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            (
                p.name.clone().unwrap(),
                p.port,
                container_port(container, p.target_port.as_ref().unwrap()),
            )
        })
        .collect();
    assert_eq!(
        service_ports,
        [
            ("mc-gateway".to_owned(), 4143, 4143),
            ("mc-probe".to_owned(), 4191, 4191)
        ]
    );
    let annotations = service.metadata.annotations.clone().unwrap();
    assert_eq!(
        annotations["mirror.linkerd.io/multicluster-gateway"],
        "true"
    );
    assert_eq!(annotations["mirror.linkerd.io/probe-path"], "/ready");
    assert_eq!(annotations["mirror.linkerd.io/probe-period"], "3");
    let identity = annotations["mirror.linkerd.io/gateway-identity"].clone();
    assert_eq!(
        identity,
        format!(
            "{}.{}.serviceaccount.identity.linkerd.{}",
            options.name, options.namespace, options.trust_domain
        )
    );
    // The pod insists on the identity the Service announces.
    assert_eq!(env["MESHGATE_IDENTITY_NAME"], identity);

    let pdb = one(&objects.pdb, "PodDisruptionBudget");
    let pdb_spec = pdb.spec.as_ref().unwrap();
    assert_eq!(pdb_spec.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(
        pdb_spec.selector.as_ref().unwrap().match_labels.as_ref(),
        Some(&selector)
    );

    let hpa = one(&objects.hpa, "HorizontalPodAutoscaler");
    let hpa_spec = hpa.spec.as_ref().unwrap();
    assert_eq!(hpa_spec.scale_target_ref.kind, "Deployment");
    assert_eq!(
        Some(&hpa_spec.scale_target_ref.name),
        deployment.metadata.name.as_ref()
    );
    assert_eq!(hpa_spec.min_replicas, spec.replicas);
    assert!(hpa_spec.max_replicas >= spec.replicas.unwrap());
    let metric = one(hpa_spec.metrics.as_deref().unwrap(), "metric");
    let resource = metric.resource.as_ref().unwrap();
    assert_eq!(resource.name, "cpu");
    assert_eq!(resource.target.type_, "Utilization");

    for object in [
        &sa.metadata,
        &deployment.metadata,
        &service.metadata,
        &pdb.metadata,
    ] {
        assert_eq!(object.namespace.as_deref(), Some(ns.as_str()));
    }
    match custom(objects, "PodMonitor") {
        Some(monitor) => {
            let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
            assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
            let port = IntOrString::String(endpoint["port"].as_str().unwrap().to_owned());
            assert_eq!(container_port(container, &port), 4191);
            let monitor_selector: BTreeMap<String, String> =
                serde_norway::from_value(monitor["spec"]["selector"]["matchLabels"].clone())
                    .unwrap();
            assert_eq!(monitor_selector, selector);
        }
        None => assert!(options.no_pod_monitor),
    }
    identity
}

/// The secret volume's Secret name and the directory the gateway reads it from.
fn identity_volume(deployment: &Deployment) -> (String, String) {
    let volume = pod(deployment)
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "identity")
        .expect("an identity volume");
    let secret = volume.secret.as_ref().unwrap().secret_name.clone().unwrap();
    (secret, mount_path(deployment, "identity"))
}

#[test]
fn the_default_rendering_runs_two_gateways_with_cert_manager_credentials() {
    let options = Options::default();
    let (_, objects) = render(&options);
    let identity = check_common(&options, &objects);
    assert_eq!(
        identity,
        "meshgate.meshgate.serviceaccount.identity.linkerd.cluster.local"
    );
    let deployment = one(&objects.deployment, "Deployment");
    assert_eq!(deployment.spec.as_ref().unwrap().replicas, Some(2));
    // cert-manager writes the Secret the pod mounts, for the identity the Service announces.
    let certificate = custom(&objects, "Certificate").expect("a Certificate");
    let spec = &certificate["spec"];
    assert_eq!(spec["duration"].as_str(), Some("48h"));
    assert_eq!(spec["renewBefore"].as_str(), Some("25h"));
    assert_eq!(spec["issuerRef"]["kind"].as_str(), Some("ClusterIssuer"));
    assert_eq!(spec["dnsNames"][0].as_str(), Some(identity.as_str()));
    let usages: Vec<_> = spec["usages"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(usages.contains(&"server auth") && usages.contains(&"client auth"));
    let (secret, dir) = identity_volume(deployment);
    assert_eq!(spec["secretName"].as_str(), Some(secret.as_str()));
    assert!(args(container(deployment)).contains(&format!("--identity-dir={dir}")));
    assert!(objects.secret.is_empty() && objects.config_map.is_empty());
    assert!(env(container(deployment)).contains_key("LINKERD2_PROXY_DESTINATION_SVC_ADDR"));
    // With DNS discovery, no Destination settings.
    let options = Options {
        discovery: gateway::cli::manifests::DiscoveryMode::Dns,
        ..Options::default()
    };
    let (_, objects) = render(&options);
    let env = env(container(one(&objects.deployment, "Deployment")));
    assert!(!env.keys().any(|k| k.contains("DESTINATION")), "{env:?}");
}

#[test]
fn the_linkerd_identity_variant_with_every_service_option() {
    let ca = TestCa::new("example.org");
    let anchors =
        std::env::temp_dir().join(format!("meshgate-manifests-{}.crt", std::process::id()));
    std::fs::write(&anchors, ca.anchors_pem()).unwrap();
    let options = Options {
        namespace: "mc".to_owned(),
        name: "gw".to_owned(),
        cluster_domain: "example.org".to_owned(),
        trust_domain: "mesh.example".to_owned(),
        identity: IdentityMode::Linkerd,
        control_plane_namespace: "l5d".to_owned(),
        trust_anchors: Some(anchors.clone()),
        replicas: 3,
        max_replicas: 6,
        external_traffic_policy: Some(TrafficPolicy::Local),
        load_balancer_source_ranges: vec!["203.0.113.0/24".to_owned(), "2001:db8::/32".to_owned()],
        load_balancer_class: Some("example.com/internal".to_owned()),
        no_pod_monitor: true,
        ..Options::default()
    };
    let (_, objects) = render(&options);
    std::fs::remove_file(&anchors).unwrap();
    check_common(&options, &objects);
    assert!(custom(&objects, "Certificate").is_none() && objects.secret.is_empty());
    let deployment = one(&objects.deployment, "Deployment");
    let container = container(deployment);
    let env = env(container);
    assert_eq!(
        env["LINKERD2_PROXY_IDENTITY_SVC_ADDR"],
        "linkerd-identity-headless.l5d.svc.example.org.:8080"
    );
    assert_eq!(
        env["LINKERD2_PROXY_IDENTITY_SVC_NAME"],
        "linkerd-identity.l5d.serviceaccount.identity.linkerd.mesh.example"
    );
    // Discovery through Linkerd's Destination API, reached over mTLS as the gateway.
    assert_eq!(
        env["LINKERD2_PROXY_DESTINATION_SVC_ADDR"],
        "linkerd-dst-headless.l5d.svc.example.org.:8086"
    );
    assert_eq!(
        env["LINKERD2_PROXY_DESTINATION_SVC_NAME"],
        "linkerd-destination.l5d.serviceaccount.identity.linkerd.mesh.example"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&env["LINKERD2_PROXY_DESTINATION_CONTEXT"])
            .unwrap(),
        serde_json::json!({"ns": "mc"}),
        "the context token is JSON naming the gateway's namespace"
    );
    assert_eq!(
        env["LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES"],
        "svc.example.org."
    );
    // The token Linkerd's identity service accepts: projected, audience identity.l5d.io.
    let token = pod(deployment)
        .volumes
        .iter()
        .flatten()
        .find_map(|v| v.projected.as_ref())
        .and_then(|p| p.sources.as_ref())
        .and_then(|s| s[0].service_account_token.as_ref())
        .expect("a projected token");
    assert_eq!(token.audience.as_deref(), Some("identity.l5d.io"));
    let token_file = format!(
        "{}/{}",
        mount_path(deployment, "linkerd-identity-token"),
        token.path
    );
    assert_eq!(env["LINKERD2_PROXY_IDENTITY_TOKEN_FILE"], token_file);
    // The trust anchors ship as a ConfigMap the gateway reads.
    let config_map = one(&objects.config_map, "ConfigMap");
    let bundle = &config_map.data.as_ref().unwrap()["ca-bundle.crt"];
    assert_eq!(
        bundle.trim(),
        lf(&ca.anchors_pem()).trim(),
        "the bundle is shipped verbatim"
    );
    let anchors_dir = mount_path(deployment, "trust-anchors");
    assert!(args(container).contains(&format!("--trust-anchors={anchors_dir}/ca-bundle.crt")));
    let service = one(&objects.service, "Service").spec.as_ref().unwrap();
    assert_eq!(service.external_traffic_policy.as_deref(), Some("Local"));
    assert_eq!(
        service.load_balancer_source_ranges.as_deref(),
        Some(&["203.0.113.0/24".to_owned(), "2001:db8::/32".to_owned()][..])
    );
    assert_eq!(
        service.load_balancer_class.as_deref(),
        Some("example.com/internal")
    );
    let hpa = one(&objects.hpa, "HorizontalPodAutoscaler")
        .spec
        .as_ref()
        .unwrap();
    assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(3), 6));
}

#[test]
fn the_secret_variant_embeds_credentials_that_name_the_gateway() {
    let ca = TestCa::new("cluster.local");
    let identity = Options::default().gateway_identity();
    let leaf = ca.leaf(&identity);
    let dir =
        std::env::temp_dir().join(format!("meshgate-manifests-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tls.crt"), &leaf.chain_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &leaf.key_pem).unwrap();
    std::fs::write(dir.join("ca.crt"), ca.anchors_pem()).unwrap();
    let options = Options {
        identity: IdentityMode::Secret,
        credentials_dir: Some(dir.clone()),
        ..Options::default()
    };
    let (_, objects) = render(&options);
    check_common(&options, &objects);
    let secret = one(&objects.secret, "Secret");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let data = secret.string_data.as_ref().unwrap();
    assert_eq!(data["tls.crt"].trim(), lf(&leaf.chain_pem).trim());
    assert_eq!(data["tls.key"].trim(), lf(&leaf.key_pem).trim());
    assert_eq!(data["ca.crt"].trim(), lf(&ca.anchors_pem()).trim());
    let (secret_name, _) = identity_volume(one(&objects.deployment, "Deployment"));
    assert_eq!(secret.metadata.name.as_ref(), Some(&secret_name));
    assert!(custom(&objects, "Certificate").is_none());

    // A leaf for another identity is refused: the mirror would reject the gateway.
    let other = ca.leaf("someone.else.serviceaccount.identity.linkerd.cluster.local");
    std::fs::write(dir.join("tls.crt"), &other.chain_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &other.key_pem).unwrap();
    let problems = manifests::render(&options).expect_err("wrong identity").0;
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(problems[0].contains("someone.else"), "{problems:?}");
}

#[test]
fn deploy_holds_the_default_rendering() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/meshgate.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let rendered = manifests::render(&Options::default()).unwrap();
    assert!(
        committed == rendered,
        "deploy/meshgate.yaml is out of date: run `cargo run -- manifests > deploy/meshgate.yaml`"
    );
}
