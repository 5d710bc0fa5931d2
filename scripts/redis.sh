#!/usr/bin/env bash
# A throwaway redis-server on loopback, for the benchmark's baseline (a `jti`
# blacklist in Redis, the approach Session Ledger is compared with).
#
# Usage: scripts/redis.sh start | stop | status | url
#
#   start   install redis-server with apt-get when it is missing, start it on
#           127.0.0.1 on a free port (no persistence), wait until it answers PING,
#           and print its URL (redis://127.0.0.1:PORT) on stdout.
#           Already running: prints the URL of the running one.
#   stop    stop the server this script started (SIGTERM by its pid, then SIGKILL
#           after LEDGER_REDIS_STOP_TIMEOUT seconds) and remove its state.
#   status  "up redis://…" (exit 0) or "down" (exit 1).
#   url     the URL of the running server (exit 1 when none).
#
# State (pid file, port, the server's working directory) lives in
# $LEDGER_REDIS_HOME (default ${TMPDIR:-/tmp}/session-ledger-redis), never in the
# work tree. Knobs: LEDGER_REDIS_MAXMEMORY (default 4gb),
# LEDGER_REDIS_START_TIMEOUT (default 30 s), LEDGER_REDIS_STOP_TIMEOUT (default 10 s).
set -euo pipefail

REDIS_HOME="${LEDGER_REDIS_HOME:-${TMPDIR:-/tmp}/session-ledger-redis}"
PID_FILE="$REDIS_HOME/redis.pid"
PORT_FILE="$REDIS_HOME/port"
LOG_FILE="$REDIS_HOME/redis.log"
MAXMEMORY="${LEDGER_REDIS_MAXMEMORY:-4gb}"
START_TIMEOUT="${LEDGER_REDIS_START_TIMEOUT:-30}"
STOP_TIMEOUT="${LEDGER_REDIS_STOP_TIMEOUT:-10}"

log() { echo "redis.sh: $*" >&2; }

install_if_missing() {
  if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    return
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    log "redis-server is not installed and apt-get is not available; install Redis 6+ by hand"
    exit 1
  fi
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    sudo=(sudo)
  fi
  log "installing redis-server (apt-get)"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >&2
  # The package starts a system-wide instance on 6379 where systemd runs; ours is
  # separate (own port, own directory), so that one is left alone.
}

running_pid() {
  [ -f "$PID_FILE" ] || return 1
  local pid
  pid="$(cat "$PID_FILE")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
  local port tries=0
  while [ "$tries" -lt 100 ]; do
    port=$((20000 + RANDOM % 40000))
    if ! port_in_use "$port"; then
      echo "$port"
      return
    fi
    tries=$((tries + 1))
  done
  log "no free port found"
  exit 1
}

url() {
  echo "redis://127.0.0.1:$(cat "$PORT_FILE")"
}

start() {
  if running_pid >/dev/null; then
    log "already running (pid $(cat "$PID_FILE"))"
    url
    return
  fi
  install_if_missing
  mkdir -p "$REDIS_HOME"
  rm -f "$PID_FILE"
  local port
  port="$(free_port)"
  echo "$port" >"$PORT_FILE"
  # No persistence: the blacklist is rebuilt by every benchmark run.
  redis-server --bind 127.0.0.1 --port "$port" --protected-mode yes \
    --save "" --appendonly no --dir "$REDIS_HOME" \
    --maxmemory "$MAXMEMORY" --maxmemory-policy noeviction \
    --daemonize yes --pidfile "$PID_FILE" --logfile "$LOG_FILE"
  local waited=0
  until redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; do
    if [ "$waited" -ge $((START_TIMEOUT * 10)) ]; then
      log "redis-server did not answer within ${START_TIMEOUT}s; see $LOG_FILE"
      exit 1
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  log "redis-server $(redis-server --version | awk '{print $3}') up on 127.0.0.1:$port (pid $(cat "$PID_FILE"))"
  url
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    log "not running"
    rm -f "$PID_FILE" "$PORT_FILE"
    return
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local waited=0
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$waited" -ge $((STOP_TIMEOUT * 10)) ]; then
      log "pid $pid ignored SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  rm -f "$PID_FILE" "$PORT_FILE"
  log "stopped (pid $pid)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if running_pid >/dev/null; then
      echo "up $(url)"
    else
      echo down
      exit 1
    fi
    ;;
  url)
    running_pid >/dev/null || exit 1
    url
    ;;
  *)
    echo "usage: $0 start | stop | status | url" >&2
    exit 2
    ;;
esac
