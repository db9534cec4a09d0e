#!/usr/bin/env bash
# Runs the cargo-fuzz (libFuzzer) targets of fuzz/ for a bounded time each.
#
#   scripts/fuzz.sh                 every target, FUZZ_SECONDS (default 60) each
#   scripts/fuzz.sh verify_token    one target
#   FUZZ_SECONDS=10 scripts/fuzz.sh CI: a brief run of each
#
# Environment:
#   FUZZ_SECONDS   time per target, seconds (default 60)
#   FUZZ_TIMEOUT   seconds one input may take before it counts as a hang (default 10)
#   FUZZ_RSS_MB    memory limit per process, MB (default 2048)
#
# New inputs libFuzzer finds go to fuzz/target/corpus/<target> (not committed; kept
# to warm the next run); the committed seeds in fuzz/corpus/<target> are read only.
# A crash, hang, leak or out-of-memory input is saved under fuzz/artifacts/<target>/;
# the script prints its path and how to reproduce it, and exits non-zero.
#
# Needs a nightly toolchain (sanitizers); installs cargo-fuzz when it is missing.
# Builds in fuzz/target, apart from the main target directory (the flags differ), so
# CARGO_TARGET_DIR is ignored here.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=${FUZZ_SECONDS:-60}
timeout=${FUZZ_TIMEOUT:-10}
rss_mb=${FUZZ_RSS_MB:-2048}
all_targets=(verify_token event_decoders snapshot_open revocations_file config_parse receiver_signal local_state)

die() { echo "fuzz: $*" >&2; exit 2; }

[[ $seconds =~ ^[1-9][0-9]*$ ]] || die "FUZZ_SECONDS must be a positive whole number, not '$seconds'"

if (($# > 0)); then
  targets=("$@")
  for t in "${targets[@]}"; do
    [[ " ${all_targets[*]} " == *" $t "* ]] || die "unknown target '$t' (targets: ${all_targets[*]})"
  done
else
  targets=("${all_targets[@]}")
fi

command -v cargo >/dev/null || die "cargo not found; install Rust from https://rustup.rs"
command -v rustup >/dev/null || die "rustup not found: cargo-fuzz needs a nightly toolchain (https://rustup.rs)"
rustup run nightly rustc --version >/dev/null 2>&1 ||
  die "no nightly toolchain (libFuzzer's sanitizers need one): rustup toolchain install nightly"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz (cargo install cargo-fuzz --locked)"
  cargo install cargo-fuzz --locked </dev/null || die "could not install cargo-fuzz"
fi

# The fuzz crate has its own target directory: sanitizer builds cannot share the main one.
unset CARGO_TARGET_DIR

echo "==> building ${targets[*]} (cargo +nightly fuzz build)"
for t in "${targets[@]}"; do
  cargo +nightly fuzz build "$t" </dev/null || die "building $t failed (see above); nothing was fuzzed"
done
# Run the binaries just built rather than `cargo fuzz run`, which rebuilds first: a
# tree edited during a long run must not change (or break) the targets halfway.
host=$(rustup run nightly rustc -vV | sed -n 's/^host: //p')
bin_dir="$root/fuzz/target/$host/release"

failed=()
for t in "${targets[@]}"; do
  work="$root/fuzz/target/corpus/$t"
  artifacts="$root/fuzz/artifacts/$t"
  log="$root/fuzz/target/$t.log"
  mkdir -p "$work" "$artifacts"
  before=$(find "$artifacts" -type f | sort)
  extra=()
  # A token may be 8 KiB (the default bound): let inputs pass it.
  [[ $t == verify_token ]] && extra+=(-max_len=12288)
  echo "==> $t: ${seconds}s"
  # The first corpus directory receives new inputs: the uncommitted one.
  set +e
  "$bin_dir/$t" -artifact_prefix="$artifacts/" \
    -max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb="$rss_mb" \
    -print_final_stats=1 "${extra[@]}" "$work" "$root/fuzz/corpus/$t" </dev/null >"$log" 2>&1
  status=$?
  set -e
  # The last progress line (coverage, corpus) and the final stats.
  grep -aE '^#[0-9]+' "$log" | tail -n 1 || true
  grep -aE '^(Done [0-9]+ runs|stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|SUMMARY)|ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|panicked at' "$log" || true
  after=$(find "$artifacts" -type f | sort)
  new=$(comm -13 <(echo "$before") <(echo "$after") | sed '/^$/d')
  if ((status != 0)) || [[ -n $new ]]; then
    failed+=("$t")
    echo "fuzz: $t FAILED (exit $status); full log: $log" >&2
    while read -r artifact; do
      [[ -n $artifact ]] || continue
      echo "  reproducer: $artifact" >&2
      echo "  replay:     cargo +nightly fuzz run $t $artifact" >&2
    done <<<"$new"
  fi
done

if ((${#failed[@]} > 0)); then
  echo "fuzz: failures in ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ${targets[*]}: no crash, hang or leak in ${seconds}s each"
