#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of the parsers of hostile input:
# refresh tokens, access tokens, forms and the event decoder (fuzz/fuzz_targets/).
# Each target runs for LEDGER_FUZZ_SECONDS (default 30; 0 skips). A panic fails the run and
# leaves the input that caused it in fuzz/artifacts/<target>/; replay it with
# `cargo +nightly fuzz run --sanitizer none <target> fuzz/artifacts/<target>/<file>`.
# What the targets find grows fuzz/corpus/<target>/ (not committed).
#
#   scripts/fuzz.sh [target...]
#
# Needs the nightly toolchain (rustup) and cargo-fuzz, installed from crates.io when
# missing. The workspace has no `unsafe`, so the targets build without a sanitizer.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${LEDGER_FUZZ_SECONDS:-30}"
if [ "$seconds" = 0 ]; then
  echo "fuzz.sh: LEDGER_FUZZ_SECONDS=0, skipped" >&2
  exit 0
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing the nightly toolchain" >&2
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz from crates.io" >&2
  cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(refresh_token access_token form event)
fi
cargo +nightly fuzz build --sanitizer none
mkdir -p fuzz/target
for target in "${targets[@]}"; do
  echo "fuzz.sh: $target for ${seconds}s" >&2
  log="fuzz/target/$target.log"
  if ! cargo +nightly fuzz run --sanitizer none "$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz.sh: $target failed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E "^stat::number_of_executed_units|^Done " "$log" >&2 || true
done
echo "fuzz.sh: ${#targets[@]} targets, ${seconds}s each, no failure" >&2
