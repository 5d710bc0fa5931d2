#!/usr/bin/env bash
# A peer in the benchmark: Keycloak's refresh-token grant and RFC 7662 introspection
# next to Session Ledger's, on the same machine, in the same run, with the same load
# generator and settings (wrk, keep-alive, scripts/wrk/*.lua).
#
#   scripts/bench-peer.sh [--seconds S] [--connections C] [--threads T]
#                         [--sessions N] [--chains K] [--runs R] [--warmup W]
#
# Starts `session-ledger dev` (release build, embedded backend, default settings, a
# throwaway data directory) as its own process, and Keycloak with
# scripts/keycloak.sh start (dev mode, embedded H2 database; a Keycloak that is
# already running is used and left running, one this script started is stopped at
# the end). Then, per measurement and for both servers:
#   refresh     POST the token endpoint with grant_type=refresh_token, K chains
#               (default 2 × C): every client sends the refresh token of its last
#               answer (scripts/wrk/oauth.lua, mode chain). Ours rotates every
#               refresh token and fsyncs each refresh before answering; Keycloak
#               twice: realm bench-rotating (revokeRefreshToken on, so it rotates
#               too) and realm bench (its default: no rotation). A rotating chain
#               cannot survive the end of a wrk run (the answers in flight are
#               lost), so every wrk run of those gets K fresh sessions (ours: POST
#               /v1/sessions; Keycloak: the password grant).
#   introspect  one access token repeated, and N (default 256) distinct tokens
#               round robin; ours at the validator (scripts/wrk/validator.lua, the
#               service credential), Keycloak at .../token/introspect with the
#               client's credentials (scripts/wrk/oauth.lua).
# Before the timed runs every case gets a short checked run (every answer a 200,
# every token active, every refresh answered with a refresh token) and an unchecked
# warm-up of W seconds (default 10; the JVM compiles its hot code meanwhile). Then R
# (default 3) rounds, each timing every case for S seconds (default 5), ours and
# Keycloak's alternating, and counting each server process's CPU time (user +
# system, /proc/PID/stat) during its wrk run. Prints a Markdown table on stdout:
# req/s, p50/p99 latency and server CPU per request, each the median of the runs and
# their spread (min–max), and the ratios of the medians; progress on stderr.
# Needs target/release/session-ledger; installs wrk with apt-get when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=5
connections=32
threads=1
sessions=256
chains=""
runs=3
warmup=10
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --sessions) sessions="$2"; shift 2 ;;
    --chains) chains="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    -h | --help) sed -n '2,36p' "$0"; exit 0 ;;
    *) echo "bench-peer.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
chains="${chains:-$((2 * connections))}"

log() { echo "bench-peer.sh: $*" >&2; }

# shellcheck source=scripts/lib/bench-dev.sh
. scripts/lib/bench-dev.sh
bench_prerequisites

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"

work="$(mktemp -d "${TMPDIR:-/tmp}/bench-peer.XXXXXX")"
pid=""
stop_keycloak=0
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  if [ "$stop_keycloak" = 1 ]; then
    scripts/keycloak.sh stop || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# ---------------------------------------------------------------- Keycloak --

if kc="$(scripts/keycloak.sh url 2>/dev/null)"; then
  log "using the running Keycloak at $kc"
  scripts/keycloak.sh start >/dev/null # makes sure the realms exist
else
  stop_keycloak=1
  kc="$(scripts/keycloak.sh start)"
fi
kc_version="$(sed -n 's/.*Keycloak \([0-9][0-9.]*\) on JVM.*/\1/p' \
  "${LEDGER_KEYCLOAK_HOME:-$HOME/.cache/session-ledger/keycloak}/keycloak.log" | tail -n 1)"
kc_pid="$(cat "${LEDGER_KEYCLOAK_HOME:-$HOME/.cache/session-ledger/keycloak}/keycloak.pid")"
kc_java="$(tr '\0' '\n' <"/proc/$kc_pid/environ" 2>/dev/null |
  sed -n 's/^JAVA_HOME=//p')"
kc_java_version="$("${kc_java:+$kc_java/bin/}java" -version 2>&1 | head -n 1)"
kc_heap="$(for p in "$kc_pid" $(pgrep -P "$kc_pid" || true); do tr '\0' '\n' <"/proc/$p/cmdline" 2>/dev/null; done |
  grep -- '^-Xm[sx]' | sort -u | paste -sd ' ' || true)"
kc_auth="Basic $(printf '%s' bench:bench-secret | base64 -w0)"
kc_token_path=/protocol/openid-connect/token

# kc_grant REALM: one password grant; prints the answer.
kc_grant() {
  curl -fsS "$kc/realms/$1$kc_token_path" -H "Authorization: $kc_auth" \
    -d grant_type=password -d username=bench -d password=bench
}
json_field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" <<<"$2"; }

log "Keycloak: $sessions password grants in realm bench"
: >"$work/kc-tokens"
for _ in $(seq "$sessions"); do
  json_field access_token "$(kc_grant bench)" >>"$work/kc-tokens"
done
head -n 1 "$work/kc-tokens" >"$work/kc-token"
[ "$(wc -l <"$work/kc-tokens")" = "$sessions" ] || { log "could not read Keycloak's tokens"; exit 1; }
# The default realm's chains: its refresh tokens stay valid, so one set serves
# every wrk run.
log "Keycloak: $chains password grants for the refresh chains of realm bench"
: >"$work/kc-chains"
for _ in $(seq "$chains"); do
  json_field refresh_token "$(kc_grant bench)" >>"$work/kc-chains"
done

# ---------------------------------------------------------- Session Ledger --

start_dev

ours_open() { # SUBJECT: POST /v1/sessions; prints the answer.
  curl -fsS -X POST "$api/v1/sessions" -H "Authorization: Bearer $service_token" \
    -H 'Content-Type: application/json' -d "{\"subject\":\"$1\",\"client_id\":\"bench\"}"
}

log "Session Ledger: opening $sessions sessions"
: >"$work/ours-tokens"
for i in $(seq "$sessions"); do
  json_field access_token "$(ours_open "user-$i")" >>"$work/ours-tokens"
done
head -n 1 "$work/ours-tokens" >"$work/ours-token"
[ "$(wc -l <"$work/ours-tokens")" = "$sessions" ] || { log "could not read our tokens"; exit 1; }

# fresh_chains CASE: K new sessions for one wrk run of a rotating chain case.
fresh_chains() {
  local out i
  out="$(mktemp "$work/chains-$1.XXXXXX")"
  for i in $(seq "$chains"); do
    case "$1" in
      ours-refresh) json_field refresh_token "$(ours_open "chain-${out##*.}-$i")" >>"$out" ;;
      kc-refresh-rotating) json_field refresh_token "$(kc_grant bench-rotating)" >>"$out" ;;
    esac
  done
  [ "$(wc -l <"$out")" = "$chains" ] || { log "could not open the chains of $1"; exit 1; }
  echo "$out"
}

# ------------------------------------------------------------------ the runs --

# name|script|url|mode|path|lines|authorization|chain|server. Lines "fresh": new
# chains per wrk run. Ours and Keycloak's alternate.
cases=(
  "ours-refresh|oauth|$api|chain|/oauth2/token|fresh||1|ours"
  "kc-refresh-rotating|oauth|$kc|chain|/realms/bench-rotating$kc_token_path|fresh|$kc_auth|1|kc"
  "kc-refresh-default|oauth|$kc|chain|/realms/bench$kc_token_path|$work/kc-chains|$kc_auth|1|kc"
  "ours-introspect-one|validator|$validator|introspect||$work/ours-token|$service_token|0|ours"
  "kc-introspect-one|oauth|$kc|introspect|/realms/bench$kc_token_path/introspect|$work/kc-token|$kc_auth|0|kc"
  "ours-introspect-many|validator|$validator|introspect||$work/ours-tokens|$service_token|0|ours"
  "kc-introspect-many|oauth|$kc|introspect|/realms/bench$kc_token_path/introspect|$work/kc-tokens|$kc_auth|0|kc"
)

# The JVM's pid: kc.sh's child, or kc.sh itself once it has exec'd the JVM.
kc_jvm="$(pgrep -P "$kc_pid" java || echo "$kc_pid")"
# cpu_ticks PID: user + system CPU time of the process (all threads) in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
ticks_per_second="$(getconf CLK_TCK)"

# run_case CASE SECONDS: one wrk run. Sets `summary` (the WRK-SUMMARY line) and
# `cpu_s` (the server process's CPU seconds during the wrk run alone: new chains
# are opened before the count starts).
run_case() {
  local name script url mode path lines auth chain server server_pid before after
  IFS='|' read -r name script url mode path lines auth chain server <<<"$1"
  [ "$lines" = fresh ] && lines="$(fresh_chains "$name")"
  server_pid="$pid"
  [ "$server" = kc ] && server_pid="$kc_jvm"
  before="$(cpu_ticks "$server_pid")"
  if [ "$script" = validator ]; then
    summary="$(wrk -t"$threads" -c"$connections" -d"$2s" --timeout 5s \
      -s scripts/wrk/validator.lua "$url" -- "$mode" "$lines" "$auth" | grep '^WRK-SUMMARY')"
  else
    summary="$(WRK_CHAIN="$chain" wrk -t"$threads" -c"$connections" -d"$2s" --timeout 5s \
      -s scripts/wrk/oauth.lua "$url" -- "$mode" "$path" "$lines" "$auth" "$threads" |
      grep '^WRK-SUMMARY')"
  fi
  after="$(cpu_ticks "$server_pid")"
  cpu_s="$(awk -v a="$after" -v b="$before" -v t="$ticks_per_second" 'BEGIN { print (a - b) / t }')"
}

field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$2"; }
failed() { [ "$(field errors "$1")" != 0 ] || [ "$(field mismatched "$1")" != 0 ]; }

for c in "${cases[@]}"; do
  name="${c%%|*}"
  WRK_CHECK=1 run_case "$c" 1
  if failed "$summary"; then log "checked run of $name failed: $summary"; exit 1; fi
  log "checked $name: $(field requests "$summary") answers, all good; warming up ${warmup}s"
  run_case "$c" "$warmup"
  if failed "$summary"; then log "$name warm-up: errors: $summary"; exit 1; fi
done

declare -A rps p99 p50 cpu
for run in $(seq "$runs"); do
  for c in "${cases[@]}"; do
    name="${c%%|*}"
    run_case "$c" "$seconds"
    if failed "$summary"; then log "$name: errors: $summary"; exit 1; fi
    n="$(field requests "$summary")"
    r="$(awk -v n="$n" -v s="$(field seconds "$summary")" 'BEGIN { printf "%.0f", n / s }')"
    u="$(awk -v c="$cpu_s" -v n="$n" 'BEGIN { printf "%.0f", c * 1e6 / n }')"
    rps[$name]+="$r "
    p50[$name]+="$(field p50_us "$summary") "
    p99[$name]+="$(field p99_us "$summary") "
    cpu[$name]+="$u "
    log "run $run $name: $r req/s, p50 $(field p50_us "$summary") µs, p99 $(field p99_us "$summary") µs, server CPU $u µs/req"
  done
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

# "median (min–max)" of a list of numbers, scaled by $2, printed with $3 decimals.
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
cell() { # NAME: "req/s | p50 | p99 | CPU"
  echo "$(spread "${rps[$1]}" 1 0) | $(spread "${p50[$1]}" 0.001 2) | $(spread "${p99[$1]}" 0.001 2) | $(spread "${cpu[$1]}" 1 0)"
}
ratio() { # LIST_A LIST_B: median(A) / median(B)
  awk -v a="$(median "$1")" -v b="$(median "$2")" 'BEGIN { printf "%.1f", a / b }'
}
pair() { # OURS KEYCLOAK WHAT_OURS WHAT_KEYCLOAK MEASUREMENT
  echo "| $5 | ours: $3 | $(cell "$1") | $(ratio "${rps[$1]}" "${rps[$2]}")× | $(ratio "${cpu[$2]}" "${cpu[$1]}")× |"
  echo "| | Keycloak: $4 | $(cell "$2") | | |"
}

echo "wrk -t$threads -c$connections -d${seconds}s (keep-alive), $runs runs after a ${warmup}s warm-up per case;"
echo "median (min–max). Session Ledger: \`session-ledger dev\` (release, embedded backend, default"
echo "settings). Keycloak ${kc_version:-?} \`start-dev\` (embedded H2), $kc_java_version, ${kc_heap:-heap ?}."
echo "Both servers up for the whole run. Server CPU: the server process's user + system time"
echo "during the wrk run, per request. Load average before: $load_before; after: $load_after."
echo
echo "| measurement | server | req/s | p50 ms | p99 ms | server CPU µs per request | req/s, ours ÷ Keycloak | CPU per request, Keycloak ÷ ours |"
echo "|---|---|---|---|---|---|---|---|"
pair ours-refresh kc-refresh-rotating \
  "rotates every refresh token; each refresh durable (fsync, group commit) before its answer" \
  "realm with \"revoke refresh token\" on (max reuse 0), embedded H2" \
  "refresh, both rotating, $chains chains"
pair ours-refresh kc-refresh-default \
  "as above (the same runs)" \
  "its default: no rotation, the old refresh token stays valid; embedded H2" \
  "refresh, Keycloak's default, $chains chains"
pair ours-introspect-one kc-introspect-one \
  "Ed25519 token, verified-token cache, revocation view" \
  "RS256 token, checks the user session, re-runs the client's mappers" \
  "introspection (RFC 7662), one token repeated"
pair ours-introspect-many kc-introspect-many \
  "as above" "as above" \
  "introspection (RFC 7662), $sessions distinct tokens (one session each), round robin"
