#!/usr/bin/env bash
# Writes prometheusrule.yaml: a Prometheus Operator PrometheusRule carrying exactly the
# rule groups of alerts.yaml (its `groups:` and everything after, indented under `spec:`).
# Run it after editing alerts.yaml; tests/tests/monitoring.rs fails while they differ.
#
#   deploy/monitoring/generate-prometheusrule.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$HERE/alerts.yaml"
OUT="$HERE/prometheusrule.yaml"

grep -q '^groups:' "$SRC" || { echo "generate-prometheusrule.sh: no top-level 'groups:' in $SRC" >&2; exit 1; }

{
    cat <<'HEADER'
# Generated from alerts.yaml by generate-prometheusrule.sh: edit alerts.yaml, then run
# the script. The Prometheus Operator loads it when its `ruleSelector` (and
# `ruleNamespaceSelector`) select it: kube-prometheus-stack selects by the label
# `release: <its Helm release>`, so add that label (kustomize `labels:`) if yours does.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: denylist-sidecar
  namespace: denylist-system
  labels:
    app.kubernetes.io/name: denylist-sidecar
    app.kubernetes.io/part-of: denylist
spec:
HEADER
    # From `groups:` on, each non-empty line indented by two spaces.
    sed -n '/^groups:/,$p' "$SRC" | sed 's/^\(.\)/  \1/'
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
