# Shared by scripts/bench-http.sh and scripts/bench-peer.sh (sourced, not run): wrk and
# curl present, the release binary built, a free loopback port, and `session-ledger
# dev` started as a new user would. The caller defines `log` and `work` (a scratch
# directory it removes) and stops "$pid" on exit.

# wrk (installed with apt-get when missing), curl, and target/release/session-ledger.
bench_prerequisites() {
  if ! command -v wrk >/dev/null 2>&1; then
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo)
    log "installing wrk (apt-get)"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >&2
  fi
  command -v curl >/dev/null 2>&1 || { log "curl is needed"; exit 1; }
  bin=target/release/session-ledger
  [ -x "$bin" ] || { log "$bin missing: cargo build --release -p session-ledger"; exit 1; }
}

free_port() {
  local port
  for _ in $(seq 100); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
  log "no free port"
  exit 1
}

# Starts `session-ledger dev` (embedded backend, default settings, data under
# $work/data, log in $work/dev.log) on free ports and waits until it is ready. Sets
# pid, api, validator and service_token (the one credential, for both scopes).
start_dev() {
  local api_port validator_port projector_port
  api_port="$(free_port)"
  validator_port="$(free_port)"
  projector_port="$(free_port)"
  service_token="bench-$(date +%s)-$RANDOM$RANDOM"
  LEDGER_DATA_DIR="$work/data" LEDGER_SERVICE_TOKEN="$service_token" \
    LEDGER_API_ADDR="127.0.0.1:$api_port" LEDGER_VALIDATOR_ADDR="127.0.0.1:$validator_port" \
    LEDGER_PROJECTOR_ADDR="127.0.0.1:$projector_port" \
    "$bin" dev >"$work/dev.log" 2>&1 &
  pid=$!
  api="http://127.0.0.1:$api_port"
  validator="http://127.0.0.1:$validator_port"
  for _ in $(seq 300); do
    if curl -fsS "$validator/readyz" >/dev/null 2>&1 && curl -fsS "$api/healthz" >/dev/null 2>&1; then
      break
    fi
    kill -0 "$pid" 2>/dev/null || { cat "$work/dev.log" >&2; log "session-ledger dev exited"; exit 1; }
    sleep 0.1
  done
  log "session-ledger dev up (pid $pid): api $api, validator $validator"
}
