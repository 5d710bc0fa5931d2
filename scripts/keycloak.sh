#!/usr/bin/env bash
# Keycloak on loopback, the peer that scripts/bench-peer.sh measures Session Ledger
# against (refresh-token grant and RFC 7662 introspection).
#
# Usage: scripts/keycloak.sh start | stop | status | url
#
#   start   fetch org.keycloak:keycloak-quarkus-dist (the zip, once, from Maven
#           Central with `mvn dependency:copy`, or with curl when Maven is missing),
#           unzip it, run `kc.sh start-dev` (dev mode: HTTP, its embedded H2
#           database) on 127.0.0.1:$LEDGER_KEYCLOAK_PORT with a bootstrap admin and a
#           fixed heap, wait until it answers, then create through the admin REST API
#           (when missing) the benchmark's realms, client and user (below). Prints
#           the base URL on stdout. Already running: prints the URL and only makes
#           sure the realms exist.
#   stop    SIGTERM to kc.sh (it forwards it to the JVM, which shuts down cleanly),
#           SIGKILL to its process group after LEDGER_KEYCLOAK_STOP_TIMEOUT seconds.
#   status  "up URL" (exit 0) or "down" (exit 1).
#   url     the base URL of the running server (exit 1 when none).
#
# What start creates (idempotent; a realm that exists is left as it is):
#   realm `bench`           Keycloak's defaults for refresh tokens (no rotation: a
#                           refresh token stays usable after a refresh)
#   realm `bench-rotating`  revokeRefreshToken=true, refreshTokenMaxReuse=0: every
#                           refresh token works once, as Session Ledger's do
#   in each: confidential client `bench` (secret `bench-secret`, direct access
#   grants, i.e. the password grant, no browser flow; an audience mapper puts
#   `bench` in its access tokens' `aud`, since Keycloak 26 introspects a token only
#   for a client in its audience) and user `bench` (password `bench`). Both realms
#   have access tokens of 1 h and sessions of 10 h, so the tokens a benchmark
#   collects stay valid for the whole run (the defaults are 5 min and 30 min idle);
#   nothing else is changed from Keycloak's defaults.
#
# Needs: Java 17+ (default /usr/lib/jvm/java-17-openjdk-amd64 when present, else
# $JAVA_HOME or `java` on PATH), Maven 3 or curl, unzip, curl, setsid.
# Everything lives in $LEDGER_KEYCLOAK_HOME (default ~/.cache/session-ledger/keycloak):
#   keycloak-<version>/     the unpacked distribution (its H2 database in data/h2)
#   keycloak.log            the server's output; keycloak.pid, port
# The zip is fetched into the Maven repository of scripts/services.sh
# ($LEDGER_SERVICES_JARS/m2, default ~/.cache/session-ledger/services/m2).
#
# Knobs: LEDGER_KEYCLOAK_VERSION (default 26.7.3), LEDGER_KEYCLOAK_PORT (8180),
# LEDGER_KEYCLOAK_HEAP (default 512m: -Xms = -Xmx), LEDGER_KEYCLOAK_JAVA_HOME,
# LEDGER_KEYCLOAK_START_TIMEOUT (default 600 s; the first start builds the server
# and creates the database, several minutes on 2 busy cores),
# LEDGER_KEYCLOAK_STOP_TIMEOUT (default 60 s), LEDGER_KEYCLOAK_ADMIN /
# LEDGER_KEYCLOAK_ADMIN_PASSWORD (the bootstrap admin, default admin / admin).
set -euo pipefail

KC_HOME="${LEDGER_KEYCLOAK_HOME:-${HOME:?set HOME or LEDGER_KEYCLOAK_HOME}/.cache/session-ledger/keycloak}"
VERSION="${LEDGER_KEYCLOAK_VERSION:-26.7.3}"
PORT="${LEDGER_KEYCLOAK_PORT:-8180}"
HEAP="${LEDGER_KEYCLOAK_HEAP:-512m}"
START_TIMEOUT="${LEDGER_KEYCLOAK_START_TIMEOUT:-600}"
STOP_TIMEOUT="${LEDGER_KEYCLOAK_STOP_TIMEOUT:-60}"
ADMIN="${LEDGER_KEYCLOAK_ADMIN:-admin}"
ADMIN_PASSWORD="${LEDGER_KEYCLOAK_ADMIN_PASSWORD:-admin}"
M2_REPO="${LEDGER_SERVICES_JARS:-${LEDGER_SERVICES_HOME:-$HOME/.cache/session-ledger/services}}/m2"
DIST="$KC_HOME/keycloak-$VERSION"
PID_FILE="$KC_HOME/keycloak.pid"
PORT_FILE="$KC_HOME/port"
LOG_FILE="$KC_HOME/keycloak.log"
CLIENT=bench
CLIENT_SECRET=bench-secret
USER_NAME=bench
USER_PASSWORD=bench

if [ -n "${LEDGER_KEYCLOAK_JAVA_HOME:-}" ]; then
  JAVA_HOME_KC="$LEDGER_KEYCLOAK_JAVA_HOME"
elif [ -x /usr/lib/jvm/java-17-openjdk-amd64/bin/java ]; then
  JAVA_HOME_KC=/usr/lib/jvm/java-17-openjdk-amd64
else
  JAVA_HOME_KC="${JAVA_HOME:-}"
fi

log() { echo "keycloak.sh: $*" >&2; }
die() { log "$*"; exit 1; }

running_pid() {
  [ -f "$PID_FILE" ] || return 1
  local pid
  pid="$(cat "$PID_FILE")"
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  # A recycled pid would not be running Keycloak's launcher or JVM.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qE 'kc\.sh|QuarkusEntryPoint|quarkus-run' ||
    return 1
  echo "$pid"
}

base_url() { echo "http://127.0.0.1:$(cat "$PORT_FILE")"; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

fetch() {
  [ -x "$DIST/bin/kc.sh" ] && return 0
  local zip="$M2_REPO/org/keycloak/keycloak-quarkus-dist/$VERSION/keycloak-quarkus-dist-$VERSION.zip"
  if [ ! -s "$zip" ]; then
    if command -v mvn >/dev/null 2>&1; then
      log "fetching org.keycloak:keycloak-quarkus-dist:$VERSION:zip from Maven Central (once)"
      mkdir -p "$M2_REPO"
      # dependency:copy resolves the artifact into the local repository (where it is
      # unzipped from below); the copy it makes in a scratch directory is dropped.
      mvn -q -B -Dstyle.color=never -Dmaven.repo.local="$M2_REPO" \
        org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
        -Dartifact="org.keycloak:keycloak-quarkus-dist:$VERSION:zip" \
        -DoutputDirectory="$KC_HOME/fetch.partial" 2>&1 |
        sed -e 's/\x1b\[[0-9;]*m//g' -e '/^[[:space:]]*$/d' >&2 ||
        die "Maven could not fetch keycloak-quarkus-dist $VERSION (see above)"
      rm -rf "$KC_HOME/fetch.partial"
    else
      log "fetching keycloak-quarkus-dist $VERSION from repo.maven.apache.org with curl (once)"
      mkdir -p "$(dirname "$zip")"
      curl -fsSL -o "$zip.partial" \
        "https://repo.maven.apache.org/maven2/org/keycloak/keycloak-quarkus-dist/$VERSION/keycloak-quarkus-dist-$VERSION.zip" ||
        die "could not download keycloak-quarkus-dist $VERSION"
      mv "$zip.partial" "$zip"
    fi
  fi
  command -v unzip >/dev/null 2>&1 || die "unzip is needed"
  log "unpacking into $DIST"
  rm -rf "$KC_HOME/unpack.partial"
  mkdir -p "$KC_HOME/unpack.partial"
  unzip -q "$zip" -d "$KC_HOME/unpack.partial"
  rm -rf "$DIST"
  mv "$KC_HOME/unpack.partial/keycloak-$VERSION" "$DIST"
  rm -rf "$KC_HOME/unpack.partial"
}

# admin_token: an access token of the bootstrap admin (master realm, admin-cli).
admin_token() {
  curl -fsS "$(base_url)/realms/master/protocol/openid-connect/token" \
    -d grant_type=password -d client_id=admin-cli \
    --data-urlencode "username=$ADMIN" --data-urlencode "password=$ADMIN_PASSWORD" |
    sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p'
}

# admin_post TOKEN PATH JSON: POST to the admin API; 201 created, 409 already there.
admin_post() {
  local code
  code="$(curl -sS -o "$KC_HOME/admin-answer" -w '%{http_code}' -X POST \
    "$(base_url)/admin$2" -H "Authorization: Bearer $1" \
    -H 'Content-Type: application/json' -d "$3")"
  case "$code" in
    201 | 204 | 409) ;;
    *) die "POST /admin$2 answered $code: $(cat "$KC_HOME/admin-answer")" ;;
  esac
}

setup_realm() { # TOKEN REALM EXTRA_REALM_JSON
  local token="$1" realm="$2" extra="$3"
  admin_post "$token" /realms "{\"realm\":\"$realm\",\"enabled\":true,
    \"accessTokenLifespan\":3600,\"ssoSessionIdleTimeout\":36000,
    \"ssoSessionMaxLifespan\":36000$extra}"
  admin_post "$token" "/realms/$realm/clients" "{\"clientId\":\"$CLIENT\",\"enabled\":true,
    \"protocol\":\"openid-connect\",\"publicClient\":false,
    \"clientAuthenticatorType\":\"client-secret\",\"secret\":\"$CLIENT_SECRET\",
    \"directAccessGrantsEnabled\":true,\"standardFlowEnabled\":false,
    \"serviceAccountsEnabled\":false,
    \"protocolMappers\":[{\"name\":\"audience $CLIENT\",\"protocol\":\"openid-connect\",
      \"protocolMapper\":\"oidc-audience-mapper\",
      \"config\":{\"included.client.audience\":\"$CLIENT\",\"access.token.claim\":\"true\",
        \"introspection.token.claim\":\"true\"}}]}"
  admin_post "$token" "/realms/$realm/users" "{\"username\":\"$USER_NAME\",\"enabled\":true,
    \"email\":\"$USER_NAME@example.com\",\"emailVerified\":true,
    \"firstName\":\"Bench\",\"lastName\":\"User\",
    \"credentials\":[{\"type\":\"password\",\"value\":\"$USER_PASSWORD\",\"temporary\":false}]}"
  # The user can log in with the password grant.
  curl -fsS "$(base_url)/realms/$realm/protocol/openid-connect/token" \
    -u "$CLIENT:$CLIENT_SECRET" -d grant_type=password \
    -d "username=$USER_NAME" -d "password=$USER_PASSWORD" | grep -q '"refresh_token"' ||
    die "password grant in realm $realm failed"
}

setup() {
  local token
  token="$(admin_token)"
  [ -n "$token" ] || die "no admin token (bootstrap admin $ADMIN)"
  setup_realm "$token" bench ""
  setup_realm "$token" bench-rotating ',"revokeRefreshToken":true,"refreshTokenMaxReuse":0'
  log "realms bench and bench-rotating ready (client $CLIENT, user $USER_NAME)"
}

start() {
  if running_pid >/dev/null; then
    setup
    base_url
    return
  fi
  port_in_use "$PORT" && die "127.0.0.1:$PORT is in use (LEDGER_KEYCLOAK_PORT picks another)"
  command -v curl >/dev/null 2>&1 || die "curl is needed"
  command -v setsid >/dev/null 2>&1 || die "setsid (util-linux) is needed"
  mkdir -p "$KC_HOME"
  fetch
  local java="${JAVA_HOME_KC:+$JAVA_HOME_KC/bin/}java"
  "$java" -version >/dev/null 2>&1 || die "java not found (set LEDGER_KEYCLOAK_JAVA_HOME)"
  log "starting Keycloak $VERSION (start-dev, 127.0.0.1:$PORT, heap $HEAP, $("$java" -version 2>&1 | head -n 1)); log: $LOG_FILE"
  echo "$PORT" >"$PORT_FILE"
  # JAVA_OPTS_KC_HEAP replaces kc.sh's heap default (-Xms64m -Xmx512m, or 70 % of
  # the memory in a container) and nothing else.
  JAVA_HOME="$JAVA_HOME_KC" JAVA_OPTS_KC_HEAP="-Xms$HEAP -Xmx$HEAP" \
    KC_BOOTSTRAP_ADMIN_USERNAME="$ADMIN" KC_BOOTSTRAP_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
    setsid "$DIST/bin/kc.sh" start-dev --http-host=127.0.0.1 --http-port="$PORT" \
    </dev/null >"$LOG_FILE" 2>&1 &
  echo $! >"$PID_FILE"
  local deadline=$((SECONDS + START_TIMEOUT))
  until curl -fsS "$(base_url)/realms/master" >/dev/null 2>&1; do
    if ! running_pid >/dev/null; then
      tail -n 40 "$LOG_FILE" >&2
      die "Keycloak exited during start-up (log above)"
    fi
    [ "$SECONDS" -lt "$deadline" ] || { tail -n 40 "$LOG_FILE" >&2; die "not ready after ${START_TIMEOUT}s"; }
    sleep 1
  done
  log "up (pid $(cat "$PID_FILE")) after ${SECONDS}s"
  setup
  base_url
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    log "not running"
    rm -f "$PID_FILE"
    return
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then
    log "still running after ${STOP_TIMEOUT}s: SIGKILL to its process group"
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE"
  log "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if running_pid >/dev/null; then echo "up $(base_url)"; else echo down; exit 1; fi ;;
  url) running_pid >/dev/null && base_url ;;
  *) sed -n '5,18p' "$0" >&2; exit 2 ;;
esac
