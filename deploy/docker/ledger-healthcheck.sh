#!/bin/bash
# ledger-healthcheck [PORT] [PATH]
#
# Exits 0 when GET http://127.0.0.1:PORT/PATH answers 200, 1 otherwise. For compose
# healthchecks in the runtime image, which has no curl: it uses bash's /dev/tcp.
# Defaults: port 8080, path /readyz.
set -u
port="${1:-8080}"
path="${2:-/readyz}"

if ! exec 3<>"/dev/tcp/127.0.0.1/${port}"; then
  echo "ledger-healthcheck: nothing listening on 127.0.0.1:${port}" >&2
  exit 1
fi
printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' \
  "$path" "$port" >&3
if ! IFS= read -r -t 5 status <&3; then
  echo "ledger-healthcheck: no answer from 127.0.0.1:${port}${path}" >&2
  exit 1
fi
exec 3<&-
case "$status" in
  "HTTP/1."?" 200 "*) exit 0 ;;
esac
echo "ledger-healthcheck: ${path}: ${status%$'\r'}" >&2
exit 1
