#!/usr/bin/env bash
# Generates the NATS users of the DENYLIST account as nkeys (Ed25519), with python3 and
# nothing else (no `nk` or `nsc` needed).
#
#   deploy/scripts/gen-nats-nkeys.sh [--out DIR]      (default DIR: ./nats-nkeys)
#
# Writes, for each user sidecar, security, admin, heartbeat and receiver:
#   DIR/<user>.nk    the seed (SU...): the secret the client signs with; mode 0600
#   DIR/<user>.pub   the public key (U...): what the server's config names
# and prints the kubectl commands that create the Secrets the manifests expect:
#   nats-users                  (denylist-system)  the public keys, read by nats.conf
#   denylist-stream-admin-nats  (denylist-system)  admin.nk, for the stream-init Job
#   denylist-heartbeat-nats     (denylist-system)  heartbeat.nk, for `denylistctl heartbeat`
#   denylist-receiver-nats      (denylist-system)  receiver.nk, for `denylist-receiver`
#   denylist-sidecar-nats       (each app namespace) sidecar.nk, mounted into every sidecar
# security.nk belongs to the security team (their denylistctl); keep it out of the cluster.
set -euo pipefail

OUT="./nats-nkeys"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        -h | --help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
command -v python3 >/dev/null || { echo "error: python3 is required" >&2; exit 2; }
mkdir -p "$OUT"
umask 077

python3 - "$OUT" <<'PY'
# nkeys: base32(prefix || key || crc16-xmodem little-endian), no padding.
# Ed25519 public key from seed per RFC 8032, in plain Python (only key generation, no signing).
import base64, hashlib, os, sys

P = 2**255 - 19
D = -121665 * pow(121666, P - 2, P) % P
def add(a, b):
    (x1, y1, z1, t1), (x2, y2, z2, t2) = a, b
    A = (y1 - x1) * (y2 - x2) % P; B = (y1 + x1) * (y2 + x2) % P
    C = 2 * t1 * t2 * D % P; Dd = 2 * z1 * z2 % P
    E, F, G, H = B - A, Dd - C, Dd + C, B + A
    return (E * F % P, G * H % P, F * G % P, E * H % P)
def mul(s, pt):
    q = (0, 1, 1, 0)
    while s:
        if s & 1:
            q = add(q, pt)
        pt = add(pt, pt)
        s >>= 1
    return q
GY = 4 * pow(5, P - 2, P) % P
def recover_x(y):
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * pow(2, (P - 1) // 4, P) % P
    return P - x if x & 1 else x
GX = recover_x(GY)
BASE = (GX, GY, 1, GX * GY % P)
def public_key(seed):
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    x, y, z, _ = mul(a, BASE)
    zi = pow(z, P - 2, P)
    x, y = x * zi % P, y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")

def crc16(data):
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc.to_bytes(2, "little")
def encode(raw):
    return base64.b32encode(raw + crc16(raw)).decode().rstrip("=")

USER, SEED = 20 << 3, 18 << 3
out = sys.argv[1]
for name in ("sidecar", "security", "admin", "heartbeat", "receiver"):
    seed = os.urandom(32)
    seed_text = encode(bytes([SEED | (USER >> 5), (USER & 31) << 3]) + seed)
    public = encode(bytes([USER]) + public_key(seed))
    with open(f"{out}/{name}.nk", "w") as f:
        f.write(seed_text)
    with open(f"{out}/{name}.pub", "w") as f:
        f.write(public)
PY
chmod 0644 "$OUT"/*.pub

cat <<MSG
wrote $OUT/{sidecar,security,admin,heartbeat,receiver}.{nk,pub}

Create the Secrets (replace denylist-example with each namespace that runs sidecars):
  kubectl -n denylist-system create secret generic nats-users \\
      --from-file=sidecar.pub=$OUT/sidecar.pub --from-file=security.pub=$OUT/security.pub --from-file=admin.pub=$OUT/admin.pub --from-file=heartbeat.pub=$OUT/heartbeat.pub --from-file=receiver.pub=$OUT/receiver.pub
  kubectl -n denylist-system create secret generic denylist-stream-admin-nats --from-file=admin.nk=$OUT/admin.nk
  kubectl -n denylist-system create secret generic denylist-heartbeat-nats --from-file=heartbeat.nk=$OUT/heartbeat.nk
  kubectl -n denylist-system create secret generic denylist-receiver-nats --from-file=receiver.nk=$OUT/receiver.nk
  kubectl -n denylist-example create secret generic denylist-sidecar-nats --from-file=sidecar.nk=$OUT/sidecar.nk
Give $OUT/security.nk to the security team, then delete the seeds you no longer need.
MSG
