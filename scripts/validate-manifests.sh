#!/usr/bin/env bash
# Renders every kustomize overlay under deploy/overlays with `kubectl kustomize` and
# validates every rendered document offline against the Kubernetes OpenAPI schema with
# `kubernetes-validate` (strict: unknown fields are errors). Exits non-zero on any invalid
# manifest, on a kind without a schema that is not allowlisted, or if a tool is missing.
#
#   scripts/validate-manifests.sh                 # every overlay, Kubernetes 1.29 and 1.33
#   K8S_VERSIONS="1.33.0" scripts/validate-manifests.sh
#   DENYLIST_DEPLOY_DIR=/some/copy/of/deploy scripts/validate-manifests.sh   # another tree
#
# The dev overlay needs webhook certificates: they are generated with
# deploy/scripts/gen-webhook-certs.sh into a scratch copy of deploy/, never into the tree.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Native sidecars are on by default from 1.29; 1.33 is the version the injector is built for.
K8S_VERSIONS="${K8S_VERSIONS:-1.29.0 1.33.0}"
# Custom resources have no schema in kubernetes-validate; these kinds are skipped, by name.
ALLOWLIST=(
    "cert-manager.io/v1 Certificate"
    "cert-manager.io/v1 Issuer"
    "monitoring.coreos.com/v1 PodMonitor"
    "monitoring.coreos.com/v1 PrometheusRule"
    "networking.istio.io/v1 ServiceEntry"
    "security.istio.io/v1 AuthorizationPolicy"
    "traefik.io/v1alpha1 Middleware"
)
# Manifests outside the overlays that are validated as they are.
DEPLOY="${DENYLIST_DEPLOY_DIR:-$ROOT/deploy}"
EXTRA=(
    "$DEPLOY/istio/ext-authz.yaml"
    "$DEPLOY/ingress-nginx/ingress.yaml"
    "$DEPLOY/traefik/middleware.yaml"
)

if ! command -v kubectl >/dev/null 2>&1; then
    cat >&2 <<'MSG'
error: kubectl is not installed. It renders the overlays (kustomize is built in).
Install it, e.g. on Debian/Ubuntu from the Kubernetes package repository
(https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/): apt-get install kubectl
MSG
    exit 2
fi
KV="$("$ROOT/deploy/scripts/ensure-python-tool.sh" kubernetes-validate)" || exit 3
PY="$(dirname "$KV")/python"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cp -r "$DEPLOY" "$WORK/deploy"
rm -rf "$WORK/deploy/injector" "$WORK/deploy/overlays/dev/certs"
bash "$WORK/deploy/scripts/gen-webhook-certs.sh" --out "$WORK/deploy/overlays/dev/certs" >/dev/null

echo "allowlisted kinds (custom resources, no schema; skipped):"
printf '  %s\n' "${ALLOWLIST[@]}"

failures=0
validate() { # name file
    local name="$1" file="$2" split="$WORK/split-$1"
    mkdir -p "$split"
    # One file per document; allowlisted kinds are reported and left out.
    if ! "$PY" - "$file" "$split" "${ALLOWLIST[@]}" <<'PY'; then
import sys, yaml
src, out, allow = sys.argv[1], sys.argv[2], set(sys.argv[3:])
n = 0
with open(src) as f:
    for doc in yaml.safe_load_all(f):
        if not doc:
            continue
        kind = f"{doc.get('apiVersion')} {doc.get('kind')}"
        name = doc.get("metadata", {}).get("name")
        if kind in allow:
            print(f"  skipped (allowlisted) {kind} {name}")
            continue
        n += 1
        with open(f"{out}/{n:03d}.yaml", "w") as o:
            yaml.safe_dump(doc, o)
PY
        echo "FAIL $name: cannot split the rendered documents" >&2
        failures=$((failures + 1))
        return
    fi
    local docs
    docs=$(find "$split" -name '*.yaml' | wc -l)
    if [[ $docs -eq 0 ]]; then
        echo "ok   $name: only allowlisted kinds"
        return
    fi
    for version in $K8S_VERSIONS; do
        local report
        report="$("$KV" --strict --kubernetes-version "$version" "$split"/*.yaml 2>&1)" && status=0 || status=$?
        local passed
        passed=$(grep -c '^INFO .* passed ' <<<"$report" || true)
        if [[ $status -ne 0 || $passed -ne $docs ]] || grep -qE '^(ERROR|WARN)' <<<"$report"; then
            echo "FAIL $name against Kubernetes $version ($passed of $docs documents passed):" >&2
            grep -vE '^INFO' <<<"$report" >&2 || true
            failures=$((failures + 1))
        else
            echo "ok   $name: $docs documents valid against Kubernetes $version"
        fi
    done
}

# deploy/monitoring is its own kustomization (rules, PodMonitor, dashboard ConfigMap).
for overlay in "$WORK"/deploy/overlays/*/ "$WORK"/deploy/monitoring/; do
    name="$(basename "$overlay")"
    if ! kubectl kustomize "$overlay" >"$WORK/$name.yaml" 2>"$WORK/$name.err"; then
        echo "FAIL $name: kubectl kustomize failed:" >&2
        cat "$WORK/$name.err" >&2
        failures=$((failures + 1))
        continue
    fi
    validate "$name" "$WORK/$name.yaml"
done
for file in "${EXTRA[@]}"; do
    validate "$(basename "$file" .yaml)" "$file"
done

if [[ $failures -ne 0 ]]; then
    echo "manifest validation FAILED ($failures problem(s))" >&2
    exit 1
fi
echo "all manifests valid"
