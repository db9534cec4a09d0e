#!/usr/bin/env bash
# Prints the absolute path of a usable nginx (one with the auth_request module),
# installing Debian's package if needed. Used by the forward-auth integration tests
# (sidecar/tests/integration/forward_auth.rs) and handy by hand:
#
#   "$(scripts/nginx.sh)" -V
#
# Order of preference:
#   1. $NGINX, if set (used as is: you asked for it);
#   2. an nginx on PATH, then /usr/sbin/nginx (where Debian puts it, often not on a
#      non-root PATH);
#   3. otherwise, when root on Debian/Ubuntu: `apt-get install nginx` (bookworm's
#      `nginx` package has auth_request built in; `nginx-light` and `nginx-core` are
#      only transitional names for it there), running `apt-get update` first when the
#      package lists do not know the package.
#
# The package's post-install script would start a system nginx on port 80: when no
# /usr/sbin/policy-rc.d forbids that already, one is put in place for the install and
# removed after, so nothing is left running.
#
# Quiet on success: only the path goes to stdout; progress goes to stderr.
# Idempotent, and safe to run from parallel test processes: the install runs under a
# lock (flock).
# Exit status: 0 with the path on stdout; 3 when no usable nginx can be found or
# installed (the message on stderr says why and what to do).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

fail() {
    echo "nginx.sh: error: $*" >&2
    exit 3
}

# Succeeds when "$1 -V" lists the auth_request module (nginx prints -V on stderr).
usable() {
    "$1" -V 2>&1 | grep -q -- '--with-http_auth_request_module'
}

absolute() {
    local dir
    dir="$(cd "$(dirname "$1")" && pwd)"
    echo "$dir/$(basename "$1")"
}

# Prints the first usable nginx among PATH and /usr/sbin/nginx; fails quietly if none.
find_nginx() {
    local candidate
    for candidate in "$(command -v nginx 2>/dev/null || true)" /usr/sbin/nginx; do
        if [[ -n "$candidate" && -x "$candidate" ]] && usable "$candidate"; then
            absolute "$candidate"
            return 0
        fi
    done
    return 1
}

# 1. An explicit choice.
if [[ -n "${NGINX:-}" ]]; then
    [[ -x "$NGINX" ]] || fail "NGINX=$NGINX is not an executable file"
    usable "$NGINX" || fail "NGINX=$NGINX has no auth_request module (see its -V)"
    absolute "$NGINX"
    exit 0
fi

# 2. Already installed.
if find_nginx; then
    exit 0
fi

# 3. Install Debian's package, under a lock so parallel callers do not race for dpkg.
HOW="install nginx with the auth_request module (Debian/Ubuntu: apt-get install nginx)
       and put it on PATH, or set NGINX=/path/to/nginx."
[[ "$(id -u)" -eq 0 ]] || fail "no usable nginx on PATH or at /usr/sbin/nginx, and not root to install one: $HOW"
command -v apt-get >/dev/null 2>&1 || fail "no usable nginx, and no apt-get to install one: $HOW"
command -v flock >/dev/null 2>&1 || fail "flock (util-linux) is needed to install nginx safely: $HOW"

mkdir -p "$ROOT/.tools"
exec 9>"$ROOT/.tools/.nginx-install.lock"
flock 9
if find_nginx; then # another caller installed it while we waited
    exit 0
fi

POLICY=/usr/sbin/policy-rc.d
if [[ ! -e "$POLICY" ]]; then
    printf '#!/bin/sh\n# nginx.sh: no service starts during the install\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    trap 'rm -f "$POLICY"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
if ! apt-cache show nginx >/dev/null 2>&1; then
    echo "nginx.sh: apt-get update (the package lists do not know nginx yet)" >&2
    apt-get update -qq >&2 || fail "apt-get update failed (no network?): $HOW"
fi
echo "nginx.sh: apt-get install nginx" >&2
apt-get install -y -qq --no-install-recommends nginx >&2 ||
    fail "apt-get install nginx failed: $HOW"
find_nginx || fail "nginx was installed but has no auth_request module: $HOW"
