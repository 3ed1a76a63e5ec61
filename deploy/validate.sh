#!/usr/bin/env bash
# Renders every variant of `meshgate manifests` and validates each with `kubernetes-validate
# --strict` against the oldest and newest Kubernetes versions it bundles that we support.
# Usage: deploy/validate.sh MESHGATE_BINARY [KUBERNETES_VALIDATE]
# Fails on any finding except the two custom resources kubernetes-validate has no schema for
# (cert-manager's Certificate, the Prometheus operator's PodMonitor); gateway/tests/manifests.rs
# checks those field by field.
set -euo pipefail
meshgate="$(realpath "$1")"
validate="${2:-kubernetes-validate}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Credentials made at run time for the variants that embed them.
identity=meshgate.meshgate.serviceaccount.identity.linkerd.cluster.local
(cd "$work" && "$meshgate" certs root >/dev/null 2>&1 \
  && "$meshgate" certs issuer --ca ca.crt --ca-key ca.key >/dev/null 2>&1 \
  && "$meshgate" certs leaf --ca issuer.crt --ca-key issuer.key --identity "$identity" >/dev/null 2>&1)

variants=(
  "default|"
  "secret-embedded|--identity secret --credentials-dir $work"
  "secret-existing|--identity secret"
  "cert-manager-bundle|--trust-anchors $work/ca.crt --cluster-issuer mesh-ca"
  "linkerd-identity|--identity linkerd --trust-anchors $work/ca.crt"
  "options|--namespace mc --name gw --cluster-domain example.org --trust-domain mesh.example --replicas 3 --max-replicas 9 --target-cpu 60 --external-traffic-policy local --load-balancer-source-range 203.0.113.0/24 --load-balancer-source-range 2001:db8::/32 --load-balancer-class example.com/internal --no-pod-monitor --shutdown-grace-period 2m --drain-delay 10s --image registry.example/meshgate:0.1.0"
)
failed=0
for variant in "${variants[@]}"; do
  name="${variant%%|*}"
  read -r -a flags <<<"${variant#*|}"
  "$meshgate" manifests "${flags[@]}" >"$work/$name.yaml"
  for version in 1.33 1.37; do
    out="$("$validate" --strict -k "$version" - <"$work/$name.yaml" 2>&1)" || failed=1
    unexpected="$(grep -v -e '^INFO ' \
      -e "^WARN - Couldn't find schema for kind Certificate with api version cert-manager.io/v1 " \
      -e "^WARN - Couldn't find schema for kind PodMonitor with api version monitoring.coreos.com/v1 " \
      <<<"$out" || true)"
    passed="$(grep -c '^INFO .* passed' <<<"$out" || true)"
    if [[ -n "$unexpected" ]]; then
      failed=1
      printf '%s (k8s %s): FAILED\n%s\n' "$name" "$version" "$unexpected"
    else
      printf '%s (k8s %s): %s objects passed\n' "$name" "$version" "$passed"
    fi
  done
done
exit "$failed"
