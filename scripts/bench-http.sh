#!/usr/bin/env bash
# The HTTP rows of the benchmark, measured by external load generators: `wrk`
# against `session-ledger dev` (started as a new user would, a separate process, a
# throwaway data directory), and, with a Redis URL, `redis-benchmark` running
# `EXISTS` over the same loopback at the same connection count.
#
#   scripts/bench-http.sh [--redis URL] [--seconds S] [--connections C]
#                         [--threads T] [--sessions N] [--runs R] [--perf DIR]
#
# Per run: /healthz (the HTTP floor: routing, middleware, a tiny answer), RFC 7662
# introspection of one token repeated and of N distinct tokens, revocation lookups
# (GET /v1/revocations/{id}) of N sessions, and Redis EXISTS. Before the timed runs a
# short checked run makes sure every answer is a 200 and every token active
# (scripts/wrk/validator.lua). Prints a Markdown table on stdout: the median of the
# runs and their spread. Needs target/release/session-ledger (scripts/bench.sh builds
# it); installs wrk with apt-get when it is missing. With --perf DIR, the first run of
# each case is also recorded with `perf record -g` on the service's process:
# DIR/<case>.data, and the hottest symbols in DIR/<case>.txt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

redis_url=""
seconds=5
connections=32
threads=1
sessions=256
runs=3
perf_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --redis) redis_url="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --sessions) sessions="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --perf) perf_dir="$2"; shift 2 ;;
    -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "bench-http.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

log() { echo "bench-http.sh: $*" >&2; }

# shellcheck source=scripts/lib/bench-dev.sh
. scripts/lib/bench-dev.sh
bench_prerequisites

work="$(mktemp -d "${TMPDIR:-/tmp}/bench-http.XXXXXX")"
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

start_dev

log "opening $sessions sessions"
: >"$work/tokens"
: >"$work/sessions"
for i in $(seq "$sessions"); do
  answer="$(curl -fsS -X POST "$api/v1/sessions" -H "Authorization: Bearer $service_token" \
    -H 'Content-Type: application/json' -d "{\"subject\":\"user-$i\",\"client_id\":\"bench\"}")"
  sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p' <<<"$answer" >>"$work/tokens"
  sed -n 's/.*"session_id":"\([^"]*\)".*/\1/p' <<<"$answer" >>"$work/sessions"
done
head -n 1 "$work/tokens" >"$work/token"
[ "$(wc -l <"$work/tokens")" = "$sessions" ] || { log "could not read the tokens"; exit 1; }

# name|mode|file: the rows, in order.
cases=(
  "healthz|healthz|$work/token"
  "introspect-one|introspect|$work/token"
  "introspect-many|introspect|$work/tokens"
  "lookup-many|lookup|$work/sessions"
)

wrk_run() { # mode file seconds -> the WRK-SUMMARY line
  wrk -t"$threads" -c"$connections" -d"$3s" --timeout 5s -s scripts/wrk/validator.lua \
    "$validator" -- "$1" "$2" "$service_token" | grep '^WRK-SUMMARY'
}

field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$2"; }

for c in "${cases[@]}"; do
  IFS='|' read -r name mode file <<<"$c"
  summary="$(WRK_CHECK=1 wrk_run "$mode" "$file" 1)"
  if [ "$(field errors "$summary")" != 0 ] || [ "$(field mismatched "$summary")" != 0 ]; then
    log "checked run of $name failed: $summary"
    exit 1
  fi
done
log "checked runs: every answer 200, every token active"

redis_host="" redis_port=""
if [ -n "$redis_url" ]; then
  hostport="${redis_url#redis://}"
  redis_host="${hostport%:*}"
  redis_port="${hostport##*:}"
fi

declare -A rps p99 p50
for run in $(seq "$runs"); do
  for c in "${cases[@]}"; do
    IFS='|' read -r name mode file <<<"$c"
    perf=""
    if [ -n "$perf_dir" ] && [ "$run" = 1 ]; then
      mkdir -p "$perf_dir"
      perf record -q -F 999 -g -p "$pid" -o "$perf_dir/$name.data" -- sleep "$seconds" \
        >/dev/null 2>&1 &
      perf=$!
    fi
    summary="$(wrk_run "$mode" "$file" "$seconds")"
    if [ -n "$perf" ]; then
      wait "$perf" || log "perf record failed for $name"
      perf report -i "$perf_dir/$name.data" --no-children --sort dso,symbol \
        --percent-limit 0.5 --stdio 2>/dev/null | grep -E '^ +[0-9]' >"$perf_dir/$name.txt" || true
      log "profile of $name: $perf_dir/$name.txt"
    fi
    [ "$(field errors "$summary")" = 0 ] || { log "$name: errors: $summary"; exit 1; }
    r="$(awk -v n="$(field requests "$summary")" -v s="$(field seconds "$summary")" 'BEGIN { printf "%.0f", n / s }')"
    rps[$name]+="$r "
    p50[$name]+="$(field p50_us "$summary") "
    p99[$name]+="$(field p99_us "$summary") "
    log "run $run $name: $r req/s, p50 $(field p50_us "$summary") µs, p99 $(field p99_us "$summary") µs"
  done
  if [ -n "$redis_host" ]; then
    n=$((seconds * 150000))
    csv="$(redis-benchmark -h "$redis_host" -p "$redis_port" -c "$connections" --threads "$threads" \
      -n "$n" -r 1000000 --csv EXISTS 'jti:__rand_int__' | tail -n 1)"
    # "test","rps","avg","min","p50","p95","p99","max" (milliseconds)
    IFS=',' read -r _ r _ _ q50 _ q99 _ <<<"$(tr -d '"' <<<"$csv")"
    rps[redis]+="$(printf '%.0f' "$r") "
    p50[redis]+="$(awk -v v="$q50" 'BEGIN { printf "%.0f", v * 1000 }') "
    p99[redis]+="$(awk -v v="$q99" 'BEGIN { printf "%.0f", v * 1000 }') "
    log "run $run redis EXISTS: $r req/s, p50 $q50 ms, p99 $q99 ms"
  fi
done

# "median (min–max)" of a list of numbers, scaled by $2 and printed with $3 decimals.
spread() {
  tr ' ' '\n' <<<"$1" | grep . | sort -n | awk -v k="$2" -v d="$3" '
    { v[NR] = $1 * k }
    END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
          printf "%.*f (%.*f–%.*f)", d, m, d, v[1], d, v[NR] }'
}
median() {
  tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{ v[NR] = $1 }
    END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

describe() {
  case "$1" in
    healthz) echo "GET /healthz (the HTTP floor)" ;;
    introspect-one) echo "POST /oauth2/introspect, one token repeated" ;;
    introspect-many) echo "POST /oauth2/introspect, $sessions distinct tokens round robin" ;;
    lookup-many) echo "GET /v1/revocations/{id}, $sessions sessions round robin" ;;
    redis) echo "Redis EXISTS (redis-benchmark, random keys of 1 M)" ;;
  esac
}

echo "wrk -t$threads -c$connections -d${seconds}s against \`session-ledger dev\` (embedded backend, default settings);"
echo "$runs runs; median (min–max). Load average when done: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "| measurement | req/s | p50 ms | p99 ms | req/s vs /healthz |"
echo "|---|---|---|---|---|"
floor="$(median "${rps[healthz]}")"
rows=(healthz introspect-one introspect-many lookup-many)
[ -n "$redis_host" ] && rows+=(redis)
for name in "${rows[@]}"; do
  ratio="$(awk -v a="$(median "${rps[$name]}")" -v b="$floor" 'BEGIN { printf "%.2f", a / b }')"
  echo "| $(describe "$name") | $(spread "${rps[$name]}" 0.001 1)k | $(spread "${p50[$name]}" 0.001 2) | $(spread "${p99[$name]}" 0.001 2) | ${ratio}× |"
done
