#!/usr/bin/env bash
# Prints the absolute path of a node_modules directory holding what the Node example
# client (examples/node/denylist_client.js) needs — @grpc/grpc-js and @grpc/proto-loader
# at the versions of examples/node/package-lock.json — installing them if necessary.
# Used by the sidecar's integration tests (sidecar/tests/integration/clients.rs) and
# handy by hand:
#
#   scripts/node-grpc.sh >/dev/null && node examples/node/denylist_client.js status
#
# Order of preference:
#   1. $DENYLIST_NODE_MODULES, if set (used as is, after checking it holds both packages;
#      run the client with NODE_PATH set to it);
#   2. examples/node/node_modules, once `npm ci` has installed the current
#      package-lock.json there (a stamp file inside records which lock file);
#   3. otherwise: `npm ci` in examples/node (exact versions from the committed lock file;
#      no install scripts run: none of these packages needs one).
#
# Needs node >= 18.3 (the client uses util.parseArgs) and, to install, npm.
# Quiet on success: only the path goes to stdout; progress goes to stderr.
# Idempotent, and safe to run from parallel test processes: the install runs under the
# lock (flock on .tools/.install.lock) the repository's other tool installers take.
# Exit status: 0 with the path on stdout; 3 when node or the packages cannot be found or
# installed (the message on stderr says why and what to do).
set -euo pipefail

MIN_MAJOR=18
MIN_MINOR=3

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXAMPLE="$ROOT/examples/node"
LOCKFILE="$EXAMPLE/package-lock.json"
MODULES="$EXAMPLE/node_modules"
STAMP="$MODULES/.denylist-node-grpc"
TOOLS="$ROOT/.tools"

fail() {
    echo "node-grpc.sh: error: $*" >&2
    exit 3
}

# Succeeds when node_modules directory "$1" holds both packages the client requires.
has_packages() {
    [[ -r "$1/@grpc/grpc-js/package.json" && -r "$1/@grpc/proto-loader/package.json" ]]
}

command -v node >/dev/null 2>&1 ||
    fail "node is not installed: Node.js >= $MIN_MAJOR.$MIN_MINOR is needed to run the Node gRPC client tests
       (on Debian/Ubuntu: apt-get install nodejs npm)."
NODE_VERSION="$(node --version 2>/dev/null)" || fail "node --version failed"
if ! node -e "
    const [major, minor] = process.versions.node.split('.').map(Number);
    process.exit(major > $MIN_MAJOR || (major === $MIN_MAJOR && minor >= $MIN_MINOR) ? 0 : 1);
"; then
    fail "node $NODE_VERSION is too old: Node.js >= $MIN_MAJOR.$MIN_MINOR is needed"
fi

# 1. An explicit choice.
if [[ -n "${DENYLIST_NODE_MODULES:-}" ]]; then
    has_packages "$DENYLIST_NODE_MODULES" ||
        fail "DENYLIST_NODE_MODULES=$DENYLIST_NODE_MODULES lacks @grpc/grpc-js or @grpc/proto-loader"
    cd "$DENYLIST_NODE_MODULES" && pwd
    exit 0
fi

# What the stamp holds: the lock file it was installed from, so a version bump in
# package-lock.json triggers a new install.
[[ -r "$LOCKFILE" ]] || fail "$LOCKFILE is missing"
WANTED="$(sha256sum "$LOCKFILE" | awk '{print $1}')"

installed() {
    has_packages "$MODULES" && [[ -r "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$WANTED" ]]
}

# 2. Already installed.
if installed; then
    echo "$MODULES"
    exit 0
fi

# 3. Install, under the lock shared with the repository's other installers.
command -v npm >/dev/null 2>&1 ||
    fail "npm is not installed: it is needed to install @grpc/grpc-js for the Node gRPC client tests
       (on Debian/Ubuntu: apt-get install npm), or set DENYLIST_NODE_MODULES to a node_modules
       directory that has @grpc/grpc-js and @grpc/proto-loader."
command -v flock >/dev/null 2>&1 || fail "flock (util-linux) is needed to install the Node packages safely"

mkdir -p "$TOOLS"
exec 9>"$TOOLS/.install.lock"
flock 9
if ! installed; then
    echo "node-grpc.sh: installing $EXAMPLE/package-lock.json (npm ci)" >&2
    (cd "$EXAMPLE" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >&2 ||
        fail "npm ci in $EXAMPLE failed (no network, or no access to the npm registry?).
       Run it yourself, or set DENYLIST_NODE_MODULES to a node_modules directory that has
       @grpc/grpc-js and @grpc/proto-loader."
    has_packages "$MODULES" || fail "npm ci in $EXAMPLE did not install @grpc/grpc-js and @grpc/proto-loader"
    # Written last and atomically: a stamp means a complete install.
    echo "$WANTED" >"$STAMP.tmp"
    mv -f "$STAMP.tmp" "$STAMP"
fi
echo "$MODULES"
