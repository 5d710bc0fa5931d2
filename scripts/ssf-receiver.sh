#!/usr/bin/env bash
# Builds the SSF test receiver (tests/ssf-receiver, Go) and prints the binary's path.
# Its modules come from the Go module proxy, pinned by the committed go.sum.
#   scripts/ssf-receiver.sh            # build, print the path
#   scripts/ssf-receiver.sh create ... # build, then run it with these arguments
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "ssf-receiver: go is not installed (https://go.dev/doc/install)" >&2; exit 1; }
out="${CARGO_TARGET_DIR:-$root/target}/ssf-receiver/ssf-receiver"
mkdir -p "$(dirname "$out")"
(cd "$root/tests/ssf-receiver" && GOFLAGS=-mod=mod go build -o "$out" .)
if [ $# -eq 0 ]; then
  echo "$out"
else
  exec "$out" "$@"
fi
