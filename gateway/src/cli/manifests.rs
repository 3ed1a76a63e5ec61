//! `meshgate manifests`: the Kubernetes objects that run meshgate as a cluster's multicluster
//! gateway, rendered as YAML for `kubectl apply -f -` (the way `linkerd multicluster install`
//! is used). Every input is validated before anything is rendered, so a value can never break
//! out of its place in the YAML; bad input names every problem and exits 64.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

mod validate;

use validate::validate;

use clap::{Args, FromArgMatches as _, ValueEnum};
use identity::{Credentials, IdentityName, TrustAnchors};

use crate::config::{Problems, env_name};

/// The data port (Linkerd's `mc-gateway`).
pub const GATEWAY_PORT: u16 = 4143;
/// The admin port (Linkerd's `mc-probe`: `/ready`, `/live`, `/metrics`).
pub const ADMIN_PORT: u16 = 4191;
/// The pod's user and group (as Linkerd's gateway).
pub const UID: u32 = 2103;
/// Where the credentials are mounted in the pod.
pub const IDENTITY_MOUNT: &str = "/var/run/meshgate/identity";
/// Where a trust-anchor bundle from a ConfigMap is mounted.
pub const ANCHORS_MOUNT: &str = "/var/run/meshgate/trust-anchors";
/// Where the projected service-account token for Linkerd's identity service is mounted.
pub const TOKEN_MOUNT: &str = "/var/run/secrets/tokens";

/// Where the gateway's certificate comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IdentityMode {
    /// A cert-manager `Certificate` from a `ClusterIssuer` writes the Secret; the gateway reloads
    /// it on renewal.
    CertManager,
    /// A `kubernetes.io/tls` Secret you create from `meshgate certs` output (embedded when
    /// `--credentials-dir` is given).
    Secret,
    /// Linkerd's identity service issues and renews it (`Certify` with the pod's token).
    Linkerd,
}

/// Where the gateway finds the pods behind a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DiscoveryMode {
    /// Linkerd's Destination API (endpoints, identities, protocol hints, profiles and splits),
    /// as Linkerd's own gateway: mTLS to `linkerd-dst-headless` as the gateway's identity.
    Linkerd,
    /// Cluster DNS only (no meshed-pod identities, a ClusterIP service is one address).
    Dns,
}

/// `externalTrafficPolicy` of the LoadBalancer Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TrafficPolicy {
    /// Any node forwards (may hop once more, hides the caller's address).
    Cluster,
    /// Only nodes running a gateway pod receive traffic (keeps the caller's address).
    Local,
}

/// What `meshgate manifests` renders.
#[derive(Clone, Debug, Args)]
pub struct Options {
    /// Namespace for every object (created by the output).
    #[arg(long, default_value = "meshgate")]
    pub namespace: String,
    /// Name of the Deployment, Service and ServiceAccount; with the namespace it makes the
    /// gateway's identity.
    #[arg(long, default_value = "meshgate")]
    pub name: String,
    /// The cluster's DNS domain: targets must end in `svc.<cluster-domain>.`.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The mesh's identity trust domain (`linkerd install --identity-trust-domain`).
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// Where the gateway's certificate comes from.
    #[arg(long, value_enum, default_value = "cert-manager")]
    pub identity: IdentityMode,
    /// Where the gateway finds endpoints.
    #[arg(long, value_enum, default_value = "linkerd")]
    pub discovery: DiscoveryMode,
    /// The namespace of Linkerd's control plane (its identity and destination services).
    #[arg(long, default_value = "linkerd")]
    pub control_plane_namespace: String,
    /// cert-manager `ClusterIssuer` that signs the gateway's certificate (a CA issuer backed by
    /// the trust anchor or an issuer chaining to it).
    #[arg(long, default_value = "linkerd-trust-anchor")]
    pub cluster_issuer: String,
    /// Trust-anchor bundle (PEM) to ship as a ConfigMap; required with `--identity linkerd`,
    /// otherwise it replaces the Secret's `ca.crt` (use it for a bundle of several roots).
    #[arg(long, value_name = "FILE")]
    pub trust_anchors: Option<PathBuf>,
    /// With `--identity secret`: a directory with `tls.crt`, `tls.key` and `ca.crt` (from
    /// `meshgate certs`) to embed as the Secret. Without it the Secret must exist.
    #[arg(long, value_name = "DIR")]
    pub credentials_dir: Option<PathBuf>,
    /// Pods to run (also the autoscaler's minimum).
    #[arg(long, default_value_t = 2)]
    pub replicas: u32,
    /// The autoscaler's maximum.
    #[arg(long, default_value_t = 10)]
    pub max_replicas: u32,
    /// Average CPU use, in percent of the request, the autoscaler aims for.
    #[arg(long, default_value_t = 70)]
    pub target_cpu: u32,
    /// Container image.
    #[arg(long, default_value = concat!("meshgate:", env!("CARGO_PKG_VERSION")))]
    pub image: String,
    /// How long a drain may take; the pod's terminationGracePeriodSeconds is 10 s more.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub shutdown_grace_period: Duration,
    /// How long the pod keeps accepting after it turns unready, so the load balancer and the
    /// remote probe see it leave before connections are refused.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain_delay: Duration,
    /// The Service's `externalTrafficPolicy`.
    #[arg(long, value_enum)]
    pub external_traffic_policy: Option<TrafficPolicy>,
    /// CIDR allowed to reach the load balancer (repeatable; the linked clusters' egress).
    #[arg(long = "load-balancer-source-range", value_name = "CIDR")]
    pub load_balancer_source_ranges: Vec<String>,
    /// The Service's `loadBalancerClass`.
    #[arg(long)]
    pub load_balancer_class: Option<String>,
    /// Leave out the PodMonitor (clusters without the Prometheus operator's CRDs).
    #[arg(long)]
    pub no_pod_monitor: bool,
}

/// The flags' defaults: the options of a bare `meshgate manifests` (one place declares them).
impl Default for Options {
    fn default() -> Self {
        let command = Self::augment_args(clap::Command::new("manifests"));
        command
            .try_get_matches_from(["manifests"])
            .and_then(|matches| Self::from_arg_matches(&matches))
            .unwrap_or_else(|e| panic!("the flags' defaults parse: {e}"))
    }
}

impl Options {
    /// The identity the gateway's certificate names, and the Service announces in
    /// `mirror.linkerd.io/gateway-identity`.
    pub fn gateway_identity(&self) -> String {
        format!(
            "{}.{}.serviceaccount.identity.linkerd.{}",
            self.name, self.namespace, self.trust_domain
        )
    }
}

/// Files read for the rendering, validated.
struct Inputs {
    anchors_pem: Option<String>,
    /// `tls.crt`, `tls.key`, `ca.crt`.
    credentials: Option<[String; 3]>,
}

/// Renders every object as one multi-document YAML stream.
///
/// # Errors
/// Every problem with the options and the files they name.
pub fn render(options: &Options) -> Result<String, Problems> {
    let inputs = validate(options)?;
    let mut out = String::new();
    let o = options;
    let id = o.gateway_identity();
    let header = format!(
        "# meshgate {} — multicluster gateway {}/{} ({})\n",
        env!("CARGO_PKG_VERSION"),
        o.namespace,
        o.name,
        id
    );
    out.push_str(&header);
    let meta = |kind_name: &str| {
        format!(
            "metadata:\n  name: {kind_name}\n  namespace: {ns}\n  labels:\n{labels}",
            ns = o.namespace,
            labels = labels(o, "    ")
        )
    };
    // Namespace and ServiceAccount.
    let _ = write!(
        out,
        "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n{labels}  annotations:\n    linkerd.io/inject: disabled\n",
        ns = o.namespace,
        labels = labels(o, "    ")
    );
    let _ = write!(
        out,
        "---\napiVersion: v1\nkind: ServiceAccount\n{}automountServiceAccountToken: false\n",
        meta(&o.name)
    );
    // Credentials.
    let secret = format!("{}-identity", o.name);
    let anchors_cm = format!("{}-trust-anchors", o.name);
    match o.identity {
        IdentityMode::CertManager => {
            let _ = write!(
                out,
                "---\napiVersion: cert-manager.io/v1\nkind: Certificate\n{meta}spec:\n  secretName: {secret}\n  duration: 48h\n  renewBefore: 25h\n  commonName: {id}\n  dnsNames:\n    - {id}\n  isCA: false\n  privateKey:\n    algorithm: ECDSA\n    size: 256\n    encoding: PKCS8\n    rotationPolicy: Always\n  usages:\n    - digital signature\n    - server auth\n    - client auth\n  issuerRef:\n    group: cert-manager.io\n    kind: ClusterIssuer\n    name: {issuer}\n",
                meta = meta(&o.name),
                issuer = o.cluster_issuer
            );
        }
        IdentityMode::Secret => {
            if let Some([crt, key, ca]) = &inputs.credentials {
                let _ = write!(
                    out,
                    "---\napiVersion: v1\nkind: Secret\n{meta}type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{crt}  tls.key: |\n{key}  ca.crt: |\n{ca}",
                    meta = meta(&secret),
                    crt = indent(crt, "    "),
                    key = indent(key, "    "),
                    ca = indent(ca, "    ")
                );
            }
        }
        IdentityMode::Linkerd => {}
    }
    if let Some(pem) = &inputs.anchors_pem {
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: ConfigMap\n{meta}data:\n  ca-bundle.crt: |\n{pem}",
            meta = meta(&anchors_cm),
            pem = indent(pem, "    ")
        );
    }
    out.push_str(&deployment(o, &inputs, &id, &secret, &anchors_cm));
    out.push_str(&service(o, &id));
    let _ = write!(
        out,
        "---\napiVersion: policy/v1\nkind: PodDisruptionBudget\n{meta}spec:\n  maxUnavailable: 1\n  selector:\n    matchLabels:\n{selector}",
        meta = meta(&o.name),
        selector = selector(o, "      ")
    );
    let _ = write!(
        out,
        "---\napiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\n{meta}spec:\n  scaleTargetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: {name}\n  minReplicas: {min}\n  maxReplicas: {max}\n  metrics:\n    - type: Resource\n      resource:\n        name: cpu\n        target:\n          type: Utilization\n          averageUtilization: {cpu}\n  behavior:\n    scaleDown:\n      stabilizationWindowSeconds: 300\n",
        meta = meta(&o.name),
        name = o.name,
        min = o.replicas,
        max = o.max_replicas,
        cpu = o.target_cpu
    );
    if !o.no_pod_monitor {
        let _ = write!(
            out,
            "---\napiVersion: monitoring.coreos.com/v1\nkind: PodMonitor\n{meta}spec:\n  selector:\n    matchLabels:\n{selector}  podMetricsEndpoints:\n    - port: admin\n      path: /metrics\n      interval: 10s\n",
            meta = meta(&o.name),
            selector = selector(o, "      ")
        );
    }
    Ok(out)
}

fn deployment(o: &Options, inputs: &Inputs, id: &str, secret: &str, anchors_cm: &str) -> String {
    let grace = o.shutdown_grace_period.as_secs() + 10;
    let mut args = vec![
        "run".to_owned(),
        format!("--gateway-suffixes=svc.{}.", o.cluster_domain),
    ];
    let mut env = vec![
        (env_name("identity_name"), id.to_owned()),
        (
            env_name("shutdown_grace_period"),
            humantime::format_duration(o.shutdown_grace_period).to_string(),
        ),
        (
            env_name("drain_delay"),
            humantime::format_duration(o.drain_delay).to_string(),
        ),
    ];
    let mut mounts = String::new();
    let mut volumes = String::new();
    // A volume (its source as YAML lines under the name) and its read-only mount.
    let mut volume = |name: &str, path: &str, source: &str| {
        let _ = write!(
            mounts,
            "            - name: {name}\n              mountPath: {path}\n              readOnly: true\n"
        );
        let _ = write!(volumes, "        - name: {name}\n{source}");
    };
    match o.identity {
        IdentityMode::CertManager | IdentityMode::Secret => {
            args.push(format!("--identity-dir={IDENTITY_MOUNT}"));
            volume(
                "identity",
                IDENTITY_MOUNT,
                &format!("          secret:\n            secretName: {secret}\n"),
            );
        }
        IdentityMode::Linkerd => {
            env.push((
                "LINKERD2_PROXY_IDENTITY_SVC_ADDR".to_owned(),
                format!(
                    "linkerd-identity-headless.{}.svc.{}.:8080",
                    o.control_plane_namespace, o.cluster_domain
                ),
            ));
            env.push((
                "LINKERD2_PROXY_IDENTITY_SVC_NAME".to_owned(),
                format!(
                    "linkerd-identity.{}.serviceaccount.identity.linkerd.{}",
                    o.control_plane_namespace, o.trust_domain
                ),
            ));
            env.push((
                "LINKERD2_PROXY_IDENTITY_TOKEN_FILE".to_owned(),
                format!("{TOKEN_MOUNT}/linkerd-identity-token"),
            ));
            volume(
                "linkerd-identity-token",
                TOKEN_MOUNT,
                "          projected:\n            sources:\n              - serviceAccountToken:\n                  audience: identity.l5d.io\n                  expirationSeconds: 86400\n                  path: linkerd-identity-token\n",
            );
        }
    }
    if o.discovery == DiscoveryMode::Linkerd {
        let cp = &o.control_plane_namespace;
        env.push((
            "LINKERD2_PROXY_DESTINATION_SVC_ADDR".to_owned(),
            format!("linkerd-dst-headless.{cp}.svc.{}.:8086", o.cluster_domain),
        ));
        env.push((
            "LINKERD2_PROXY_DESTINATION_SVC_NAME".to_owned(),
            format!(
                "linkerd-destination.{cp}.serviceaccount.identity.linkerd.{}",
                o.trust_domain
            ),
        ));
        // The context token Linkerd's injector writes (the caller's namespace), escaped for the
        // double-quoted YAML value.
        env.push((
            "LINKERD2_PROXY_DESTINATION_CONTEXT".to_owned(),
            format!("{{\\\"ns\\\":\\\"{}\\\"}}", o.namespace),
        ));
        env.push((
            "LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES".to_owned(),
            format!("svc.{}.", o.cluster_domain),
        ));
    }
    if inputs.anchors_pem.is_some() {
        args.push(format!("--trust-anchors={ANCHORS_MOUNT}/ca-bundle.crt"));
        volume(
            "trust-anchors",
            ANCHORS_MOUNT,
            &format!("          configMap:\n            name: {anchors_cm}\n"),
        );
    }
    let args: String = args
        .iter()
        .map(|a| format!("            - {a}\n"))
        .collect();
    let env: String = env
        .iter()
        .map(|(name, value)| {
            format!("            - name: {name}\n              value: \"{value}\"\n")
        })
        .collect();
    format!(
        "---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {ns}
  labels:
{labels}spec:
  replicas: {replicas}
  selector:
    matchLabels:
{selector}  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
  template:
    metadata:
      labels:
{pod_labels}      annotations:
        linkerd.io/inject: disabled
    spec:
      serviceAccountName: {name}
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: {grace}
      securityContext:
        runAsNonRoot: true
        runAsUser: {UID}
        runAsGroup: {UID}
        seccompProfile:
          type: RuntimeDefault
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: topology.kubernetes.io/zone
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
{spread_selector}        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
{spread_selector}      containers:
        - name: meshgate
          image: \"{image}\"
          imagePullPolicy: IfNotPresent
          args:
{args}          env:
{env}          ports:
            - name: mc-gateway
              containerPort: {GATEWAY_PORT}
              protocol: TCP
            - name: admin
              containerPort: {ADMIN_PORT}
              protocol: TCP
          readinessProbe:
            httpGet:
              path: /ready
              port: admin
            periodSeconds: 3
            failureThreshold: 2
          livenessProbe:
            httpGet:
              path: /live
              port: admin
            periodSeconds: 10
            failureThreshold: 3
          resources:
            requests:
              cpu: 100m
              memory: 64Mi
            limits:
              memory: 512Mi
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            runAsNonRoot: true
            runAsUser: {UID}
            capabilities:
              drop:
                - ALL
          volumeMounts:
{mounts}      volumes:
{volumes}",
        name = o.name,
        ns = o.namespace,
        labels = labels(o, "    "),
        replicas = o.replicas,
        selector = selector(o, "      "),
        pod_labels = labels(o, "        "),
        spread_selector = selector(o, "              "),
        image = o.image,
    )
}

fn service(o: &Options, id: &str) -> String {
    let mut extra = String::new();
    if let Some(policy) = o.external_traffic_policy {
        let policy = match policy {
            TrafficPolicy::Cluster => "Cluster",
            TrafficPolicy::Local => "Local",
        };
        let _ = writeln!(extra, "  externalTrafficPolicy: {policy}");
    }
    if !o.load_balancer_source_ranges.is_empty() {
        extra.push_str("  loadBalancerSourceRanges:\n");
        for range in &o.load_balancer_source_ranges {
            let _ = writeln!(extra, "    - \"{range}\"");
        }
    }
    if let Some(class) = &o.load_balancer_class {
        let _ = writeln!(extra, "  loadBalancerClass: \"{class}\"");
    }
    format!(
        "---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {ns}
  labels:
{labels}  annotations:
    mirror.linkerd.io/gateway-identity: {id}
    mirror.linkerd.io/multicluster-gateway: \"true\"
    mirror.linkerd.io/probe-path: /ready
    mirror.linkerd.io/probe-period: \"3\"
spec:
  type: LoadBalancer
  selector:
{selector}  ports:
    - name: mc-gateway
      port: {GATEWAY_PORT}
      targetPort: mc-gateway
      protocol: TCP
    - name: mc-probe
      port: {ADMIN_PORT}
      targetPort: admin
      protocol: TCP
{extra}",
        name = o.name,
        ns = o.namespace,
        labels = labels(o, "    "),
        selector = selector(o, "    "),
    )
}

fn labels(o: &Options, pad: &str) -> String {
    format!(
        "{pad}app.kubernetes.io/name: meshgate\n{pad}app.kubernetes.io/instance: {name}\n{pad}app.kubernetes.io/component: multicluster-gateway\n{pad}app.kubernetes.io/version: \"{version}\"\n",
        name = o.name,
        version = env!("CARGO_PKG_VERSION")
    )
}

fn selector(o: &Options, pad: &str) -> String {
    format!(
        "{pad}app.kubernetes.io/name: meshgate\n{pad}app.kubernetes.io/instance: {name}\n",
        name = o.name
    )
}

/// PEM text as a YAML block scalar's lines.
fn indent(text: &str, pad: &str) -> String {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| format!("{pad}{}\n", line.trim_end()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::validate::{is_cidr, is_label, is_qualified_name, is_subdomain};
    use super::*;

    #[test]
    fn names_and_ranges_are_checked() {
        assert!(is_label("meshgate"));
        assert!(!is_label("Meshgate"));
        assert!(!is_label("-a"));
        assert!(!is_label(&"a".repeat(64)));
        assert!(is_subdomain("cluster.local"));
        assert!(!is_subdomain("cluster..local"));
        assert!(!is_subdomain("cluster.local."));
        assert!(is_cidr("10.0.0.0/8"));
        assert!(is_cidr("2001:db8::/32"));
        assert!(!is_cidr("10.0.0.0/33"));
        assert!(!is_cidr("10.0.0.0/08"));
        assert!(!is_cidr("10.0.0.0"));
        assert!(!is_cidr("10.0.0.0/8\n- x"));
        assert!(is_qualified_name("example.com/lb"));
        assert!(is_qualified_name("lb"));
        assert!(!is_qualified_name("example.com/"));
        assert!(!is_qualified_name("a\"b"));
    }

    #[test]
    fn every_bad_option_is_reported_at_once() {
        let options = Options {
            namespace: "Bad_NS".to_owned(),
            cluster_domain: "a..b".to_owned(),
            replicas: 3,
            max_replicas: 2,
            image: "x\ny".to_owned(),
            load_balancer_source_ranges: vec!["10.0.0.0/99".to_owned()],
            load_balancer_class: Some("a b".to_owned()),
            drain_delay: Duration::from_secs(90),
            identity: IdentityMode::Linkerd,
            ..Options::default()
        };
        let problems = render(&options).expect_err("invalid").0;
        for flag in [
            "--namespace",
            "--cluster-domain",
            "--max-replicas",
            "--image",
            "--load-balancer-source-range",
            "--load-balancer-class",
            "--drain-delay",
            "--trust-anchors",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(flag)),
                "{flag} not reported in {problems:#?}"
            );
        }
    }
}
