#!/usr/bin/env bash
# Prints the absolute path of `promtool` (Prometheus's rule checker and unit-test
# runner), installing Debian's `prometheus` package if needed. Used by the monitoring
# tests (tests/tests/monitoring.rs) and handy by hand:
#
#   "$(scripts/promtool.sh)" test rules deploy/monitoring/alerts.test.yaml
#
# Order of preference:
#   1. $PROMTOOL, if set (used as is: you asked for it);
#   2. a promtool on PATH;
#   3. as root with apt-get: `apt-get install --no-install-recommends prometheus`
#      (Debian ships promtool in that package; `apt-get update` first when the package
#      is not known yet). Debian's policy-rc.d decides whether the server is started;
#      only promtool is used here.
#
# Quiet on success: only the path goes to stdout; progress goes to stderr.
# Idempotent, and safe to run from parallel test processes: the install runs under a
# lock (flock), and apt waits for a dpkg lock held by anyone else.
# Exit status: 0 with the path on stdout; 3 when no promtool can be found or installed
# (the message on stderr says why and what to do).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

fail() {
    echo "promtool.sh: error: $*" >&2
    exit 3
}

absolute() {
    local dir
    dir="$(cd "$(dirname "$1")" && pwd)"
    echo "$dir/$(basename "$1")"
}

# 1. An explicit choice.
if [[ -n "${PROMTOOL:-}" ]]; then
    [[ -x "$PROMTOOL" ]] || fail "PROMTOOL=$PROMTOOL is not an executable file"
    absolute "$PROMTOOL"
    exit 0
fi

# 2. On PATH.
if ON_PATH="$(command -v promtool 2>/dev/null)"; then
    absolute "$ON_PATH"
    exit 0
fi

# 3. Debian's package, as root.
HOW="Install Prometheus's promtool (Debian/Ubuntu: apt-get install prometheus; or a release
       from https://prometheus.io/download/) and put it on PATH or set PROMTOOL=/path/to/promtool."
command -v apt-get >/dev/null 2>&1 || fail "no promtool on PATH and no apt-get to install one.
       $HOW"
[[ "$(id -u)" -eq 0 ]] || fail "no promtool on PATH, and installing Debian's prometheus package needs root.
       $HOW"
command -v flock >/dev/null 2>&1 || fail "flock (util-linux) is needed to install promtool safely"

mkdir -p "$ROOT/.tools"
exec 9>"$ROOT/.tools/.promtool-install.lock"
flock 9
# Another test process may have installed it while this one waited for the lock.
if ! command -v promtool >/dev/null 2>&1; then
    candidate() { apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ { print $2 }'; }
    if [[ -z "$(candidate)" || "$(candidate)" == "(none)" ]]; then
        echo "promtool.sh: the prometheus package is not known to apt; running apt-get update" >&2
        apt-get update -qq >&2 || fail "apt-get update failed (no network?). $HOW"
        [[ -n "$(candidate)" && "$(candidate)" != "(none)" ]] ||
            fail "apt has no prometheus package for this system. $HOW"
    fi
    echo "promtool.sh: installing Debian's prometheus package ($(candidate)) for promtool" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=300 prometheus >&2 ||
        fail "apt-get install prometheus failed. $HOW"
fi
ON_PATH="$(command -v promtool 2>/dev/null)" ||
    fail "the prometheus package is installed but promtool is not on PATH. $HOW"
absolute "$ON_PATH"
