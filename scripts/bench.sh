#!/usr/bin/env bash
# Runs the benchmark: builds `ledger-bench` and `session-ledger` in release, starts a
# throwaway redis-server on loopback for the baseline (scripts/redis.sh, installs it
# when missing), runs the benchmark against it, then the HTTP rows with external load
# generators (scripts/bench-http.sh: wrk against `session-ledger dev`,
# redis-benchmark against the same Redis), and stops Redis again.
#
#   scripts/bench.sh [ledger-bench flags]     e.g. --families 1000000 --seconds 5
#   scripts/bench.sh --only kafka-refresh --refresh-concurrency 64
#                                             row 4 on Kafka + Cassandra alone, in
#                                             every setting of the fence (no wrk part)
#   scripts/bench.sh --regions [N]            the two-region figures instead (below)
#   scripts/bench.sh --keycloak [flags]       Keycloak as a peer instead (below)
#
# The tables go to stdout, progress to stderr; `ledger-bench --help` lists the
# sizes, `scripts/bench-http.sh --help` the wrk settings (LEDGER_BENCH_HTTP_ARGS
# passes flags to it, e.g. "--runs 5"; LEDGER_BENCH_HTTP=off skips it).
# docs/BENCHMARKS.md records a run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# --regions [N]: two regions on loopback (scripts/services.sh up --regions 2: east
# Kafka 9092, west Kafka 9192, MirrorMaker 2, one Cassandra). Runs the two-region
# test binary on the real `session-ledger` binaries (debug build, as in CI) with N
# timed signouts (default 200): it prints the cross-region revocation propagation
# (east's signout answer -> active:false from west's validator, p50/p99/max) and the
# convergence time after a link cut of LEDGER_REGION_CUT (default 60s) with traffic in
# both regions (LEDGER_REGION_CUT_MODE: `stop` stops MirrorMaker, then starts it
# again; `pause` freezes it with SIGSTOP, like a network partition, then lets it go on).
if [ "${1:-}" = --regions ]; then
  samples="${2:-200}"
  export LEDGER_REGION_CUT="${LEDGER_REGION_CUT:-60s}"
  scripts/services.sh up --regions 2 >&2
  # The binary the test runs (it only builds it when missing): current, not stale.
  cargo build -p session-ledger >&2
  LEDGER_REGION_SAMPLES="$samples" cargo test -p ledger-tests --test regions \
    two_regions -- --nocapture 2>&1 | grep -E "propagation|converged|link cut|test result"
  exit "${PIPESTATUS[0]}"
fi

# --keycloak [flags]: Keycloak's refresh-token grant and introspection next to ours
# (scripts/bench-peer.sh, which starts Keycloak with scripts/keycloak.sh; the flags
# go to it, see scripts/bench-peer.sh --help). Builds only `session-ledger`.
if [ "${1:-}" = --keycloak ]; then
  shift
  cargo build --release -p session-ledger >&2
  exec scripts/bench-peer.sh "$@"
fi

cargo build --release -p ledger-bench -p session-ledger >&2

started=0
stop_redis() {
  if [ "$started" = 1 ]; then
    scripts/redis.sh stop || true
  fi
}
trap stop_redis EXIT
if url="$(scripts/redis.sh url 2>/dev/null)"; then
  echo "bench.sh: using the running Redis at $url" >&2
else
  started=1
  url="$(scripts/redis.sh start)"
fi

# Kafka and Cassandra rows when the services are up (scripts/services.sh up).
kafka=()
if scripts/services.sh status >/dev/null 2>&1; then
  # The ports scripts/services.sh was told to use (LEDGER_KAFKA_PORT, LEDGER_CQL_PORT).
  kafka=(--kafka "127.0.0.1:${LEDGER_KAFKA_PORT:-9092}" --cql "127.0.0.1:${LEDGER_CQL_PORT:-9042}")
else
  echo "bench.sh: Kafka/Cassandra not up; run scripts/services.sh up for the Kafka rows" >&2
fi

target/release/ledger-bench --redis "$url" "${kafka[@]}" "$@"

only=0
for arg in "$@"; do
  case "$arg" in --only | --only=*) only=1 ;; esac
done
if [ "${LEDGER_BENCH_HTTP:-on}" != off ] && [ "$only" = 0 ]; then
  echo
  # shellcheck disable=SC2086 # flags, split on purpose
  scripts/bench-http.sh --redis "$url" ${LEDGER_BENCH_HTTP_ARGS:-}
fi
