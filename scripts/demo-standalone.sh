#!/usr/bin/env bash
# The standalone demo (no NATS): start one sidecar, verify two users' tokens, revoke one user,
# and watch the sidecar reject that user's token (and only that one).
#
# Needs only a Rust toolchain. Everything it creates lives in $DEMO_DIR
# (default /tmp/denylist-demo) and is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "demo: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }

DEMO_DIR=${DEMO_DIR:-/tmp/denylist-demo}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}/debug
ISS=https://auth.demo.example
KEY=examples/standalone/keys/demo-es256-private.pem

echo "==> building the sidecar and the demo client (debug build; the first build takes a few minutes)"
cargo build --quiet -p denylist-sidecar --bin denylist-sidecar --example demo_client
client() { "$TARGET/examples/demo_client" "$@"; }

rm -rf "$DEMO_DIR" && mkdir -p "$DEMO_DIR"
SOCK=$DEMO_DIR/sidecar.sock
REVOCATIONS=$DEMO_DIR/revocations.jsonl
: > "$REVOCATIONS"

echo "==> starting denylist-sidecar (config: examples/standalone/config.toml, socket: $SOCK)"
DENYLIST_SOCKET=$SOCK DENYLIST_REVOCATIONS_FILE=$REVOCATIONS \
  "$TARGET/denylist-sidecar" --config examples/standalone/config.toml --tcp "" --admin "" \
  >"$DEMO_DIR/sidecar.log" 2>&1 &
PID=$!
cleanup() {
  kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  rm -rf "$DEMO_DIR"
}
trap cleanup EXIT
if ! client wait-ready --socket "$SOCK" --timeout-secs 30; then
  echo "demo: the sidecar did not become ready; its log:" >&2
  cat "$DEMO_DIR/sidecar.log" >&2
  exit 1
fi

ALICE=$(client mint --key "$KEY" --kid demo-2026 --iss "$ISS" --sub alice --aud orders-api)
BOB=$(client mint --key "$KEY" --kid demo-2026 --iss "$ISS" --sub bob --aud orders-api)
echo
echo "==> two tokens, signed by the demo issuer (alice's, abbreviated): ${ALICE:0:60}..."
echo "    a service asks its sidecar over the Unix socket: Verifier/Verify { token }"
echo
echo "alice:"; client verify --socket "$SOCK" "$ALICE"
echo "bob:";   client verify --socket "$SOCK" "$BOB"

echo
echo "==> 2 AM: alice's account is hijacked. Revoke every token issued to alice until now:"
NOW_MS=$(($(date +%s%N) / 1000000))
LINE="{\"event_id\":\"demo-revoke-alice\",\"action\":\"revoke\",\"kind\":\"subject\",\"issuer\":\"$ISS\",\"targets\":[\"alice\"],\"reason\":\"account takeover (demo)\",\"actor\":\"security-oncall\",\"created_at_ms\":$NOW_MS}"
echo "    $LINE >> revocations.jsonl"
echo "$LINE" >> "$REVOCATIONS"
START=$(date +%s%N)
for _ in $(seq 1 100); do
  if client verify --socket "$SOCK" "$ALICE" | grep -q REASON_REVOKED; then break; fi
done
END=$(date +%s%N)
echo "    enforced after $(( (END - START) / 1000000 )) ms (standalone mode polls the file every 200 ms)"
echo
echo "alice:"; client verify --socket "$SOCK" "$ALICE"
echo "bob:";   client verify --socket "$SOCK" "$BOB"
echo
echo "==> done. The sidecar's log is below; it stops and its socket is removed on exit."
tail -n 5 "$DEMO_DIR/sidecar.log"
