#!/usr/bin/env bash
# Prints the absolute path of a Python interpreter that can run the Python example
# client (examples/python/denylist_client.py), installing what it needs if necessary.
# Used by the sidecar's integration tests (sidecar/tests/integration/clients.rs) and
# handy by hand:
#
#   "$(scripts/python-grpc.sh)" examples/python/denylist_client.py status
#
# Order of preference:
#   1. $DENYLIST_PYTHON, if set (used as is, after checking it imports grpc and grpc_tools);
#   2. <repo>/.tools/venv/bin/python, once examples/python/requirements.txt is installed
#      there (a stamp file in the venv records which requirements.txt was installed);
#   3. otherwise: create <repo>/.tools/venv with `python3 -m venv` (the virtualenv
#      scripts/nats-server.sh also uses) and `pip install -r examples/python/requirements.txt`.
#
# Quiet on success: only the path goes to stdout; progress goes to stderr.
# Idempotent, and safe to run from parallel test processes: the install runs under the
# lock (flock on .tools/.install.lock) that scripts/nats-server.sh and
# deploy/scripts/ensure-python-tool.sh take for the same virtualenv.
# Exit status: 0 with the path on stdout; 3 when no usable interpreter can be found or
# set up (the message on stderr says why and what to do).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQUIREMENTS="$ROOT/examples/python/requirements.txt"
VENV="${DENYLIST_TOOLS_VENV:-$ROOT/.tools/venv}"
VENV_PYTHON="$VENV/bin/python"
STAMP="$VENV/.denylist-python-grpc"

fail() {
    echo "python-grpc.sh: error: $*" >&2
    exit 3
}

# Succeeds when "$1" imports everything the client needs.
can_run_client() {
    "$1" -c 'import grpc, grpc_tools.protoc, google.protobuf.json_format' >/dev/null 2>&1
}

# What the stamp holds: the requirements it was installed from, so editing
# requirements.txt (a version bump) triggers a new install.
[[ -r "$REQUIREMENTS" ]] || fail "$REQUIREMENTS is missing"
WANTED="$(sha256sum "$REQUIREMENTS" | awk '{print $1}')"

installed() {
    [[ -x "$VENV_PYTHON" ]] && [[ -r "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$WANTED" ]] &&
        can_run_client "$VENV_PYTHON"
}

# 1. An explicit choice.
if [[ -n "${DENYLIST_PYTHON:-}" ]]; then
    can_run_client "$DENYLIST_PYTHON" ||
        fail "DENYLIST_PYTHON=$DENYLIST_PYTHON cannot import grpc and grpc_tools: run
       $DENYLIST_PYTHON -m pip install -r $REQUIREMENTS"
    if [[ "$DENYLIST_PYTHON" == */* ]]; then
        echo "$(cd "$(dirname "$DENYLIST_PYTHON")" && pwd)/$(basename "$DENYLIST_PYTHON")"
    else
        command -v "$DENYLIST_PYTHON"
    fi
    exit 0
fi

# 2. The repository's virtualenv, already set up.
if installed; then
    echo "$VENV_PYTHON"
    exit 0
fi

# 3. Set it up, under the lock shared with the other scripts that install into it.
command -v python3 >/dev/null 2>&1 ||
    fail "python3 is not installed: it is needed to run the Python gRPC client tests.
       Install python3 (with venv), or set DENYLIST_PYTHON to an interpreter that has
       the packages of $REQUIREMENTS."
command -v flock >/dev/null 2>&1 || fail "flock (util-linux) is needed to install the Python packages safely"

mkdir -p "$(dirname "$VENV")"
exec 9>"$(dirname "$VENV")/.install.lock"
flock 9
if ! installed; then
    echo "python-grpc.sh: installing $REQUIREMENTS into $VENV" >&2
    if [[ ! -x "$VENV/bin/pip" ]]; then
        python3 -m venv "$VENV" >&2 ||
            fail "python3 -m venv $VENV failed (on Debian/Ubuntu: apt-get install python3-venv),
       or set DENYLIST_PYTHON to an interpreter that has the packages of $REQUIREMENTS."
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS" >&2 ||
        fail "pip install -r $REQUIREMENTS failed (no network, or no access to PyPI?).
       Install them yourself and set DENYLIST_PYTHON=/path/to/python."
    can_run_client "$VENV_PYTHON" ||
        fail "$VENV_PYTHON cannot import grpc and grpc_tools after installing $REQUIREMENTS"
    # Written last and atomically: a stamp means a complete install.
    echo "$WANTED" >"$STAMP.tmp"
    mv -f "$STAMP.tmp" "$STAMP"
fi
echo "$VENV_PYTHON"
