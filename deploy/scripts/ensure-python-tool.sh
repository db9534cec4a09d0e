#!/usr/bin/env bash
# Prints the path of a working `kubernetes-validate` (PyPI), installing it first into the
# repository's virtualenv (.tools/venv) if it is not there yet.
#
#   deploy/scripts/ensure-kubernetes-validate.sh      -> /path/to/.tools/venv/bin/kubernetes-validate
#
# Used by scripts/validate-manifests.sh and the injector's tests. The install runs under a
# lock, so parallel test processes do not race each other into a half-built virtualenv.
# KUBERNETES_VALIDATE=/path/to/binary skips all of this. Exit status 3: cannot install.
set -euo pipefail

VERSION="1.37.0"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${DENYLIST_TOOLS_VENV:-$ROOT/.tools/venv}"
BIN="$VENV/bin/kubernetes-validate"

if [[ -n "${KUBERNETES_VALIDATE:-}" ]]; then
    echo "$KUBERNETES_VALIDATE"
    exit 0
fi

works() { [[ -x "$BIN" ]] && "$BIN" --version >/dev/null 2>&1; }

if ! works; then
    mkdir -p "$(dirname "$VENV")"
    exec 9>"$(dirname "$VENV")/.kubernetes-validate.lock"
    flock 9
    if ! works; then
        echo "installing kubernetes-validate $VERSION into $VENV" >&2
        if ! { [[ -x "$VENV/bin/pip" ]] || python3 -m venv "$VENV" >&2; } ||
            ! "$VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$VERSION" >&2 ||
            ! works; then
            echo "error: cannot install kubernetes-validate $VERSION (needs python3 with venv and access to PyPI)." >&2
            echo "       Install it yourself: python3 -m venv $VENV && $VENV/bin/pip install kubernetes-validate==$VERSION" >&2
            exit 3
        fi
    fi
fi
echo "$BIN"
