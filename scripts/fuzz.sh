#!/usr/bin/env bash
# Builds the two fuzz crates (keys/fuzz, controller/fuzz) and runs every fuzz target for
# SEALKIT_FUZZ_SECONDS seconds (default 15) over its committed corpus; fails on any crash,
# timeout or out-of-memory. See docs/fuzzing.md. With CARGO_TARGET_DIR set (CI), each crate
# builds in $CARGO_TARGET_DIR/fuzz-<crate>, so the cache outside the clone keeps it.
#
# cargo-fuzz needs nightly compiler features: RUSTC_BOOTSTRAP=1 lets the stable toolchain build
# them. cargo-fuzz is installed when missing. New inputs go to a temporary directory, so the
# committed corpora are never modified; a crashing input is left in <crate>/fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${SEALKIT_FUZZ_SECONDS:-15}
export RUSTC_BOOTSTRAP=1
export CARGO_INCREMENTAL=0

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# Release build with debug assertions (so overflow checks) and no sanitizer: both libraries are
# #![forbid(unsafe_code)], and AddressSanitizer would halve the executions per second.
build=(-O -a -s none)

# The largest input each target is given (bytes): a sealed value, a SOPS file, a manifest.
max_len() {
  case "$1" in
    sops_enc_value | gotemplate | sealed_blob_open) echo 512 ;;
    openssh_key) echo 1024 ;;
    sops_*) echo 2048 ;;
    *) echo 4096 ;;
  esac
}

work=$(mktemp -d -t sealkit-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
failed=()
for crate in keys controller; do
  dir=$crate/fuzz
  tdir=()
  if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    tdir=(--target-dir "$CARGO_TARGET_DIR/fuzz-$crate")
  fi
  echo "== build $dir"
  (cd "$dir" && cargo fuzz build "${build[@]}" "${tdir[@]}")
  for t in $(cd "$dir" && cargo fuzz list); do
    corpus=$dir/corpus/$t
    if [ ! -d "$corpus" ]; then
      echo "!! $t: no committed corpus at $corpus" >&2
      failed+=("$t (no corpus)")
      continue
    fi
    mkdir -p "$work/$t"
    echo "== $t: ${secs}s over $(find "$corpus" -type f | wc -l) inputs"
    # `cargo fuzz run` exits non-zero on a crash, a timeout or running out of memory.
    if ! (cd "$dir" && cargo fuzz run "${build[@]}" "${tdir[@]}" "$t" "$work/$t" "corpus/$t" -- \
      -max_total_time="$secs" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 >"$work/$t.log" 2>&1); then
      tail -n 40 "$work/$t.log" >&2
      failed+=("$t")
      continue
    fi
    grep -E '^stat::number_of_executed_units|^Done' "$work/$t.log" | tr '\n' ' '
    echo
  done
done

if ((${#failed[@]})); then
  echo "!! fuzzing failed: ${failed[*]} (inputs in keys/fuzz/artifacts, controller/fuzz/artifacts)" >&2
  exit 1
fi
echo "fuzz: every target ran ${secs}s without a finding"
