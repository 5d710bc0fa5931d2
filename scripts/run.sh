#!/usr/bin/env bash
# Runs the service on a laptop: api (:8080), projector and validator (:8081) in one
# process on the embedded backend under ./data. Installs the C build prerequisites of
# the bundled librdkafka when they are missing (Debian), then builds and starts.
#
#   scripts/run.sh [session-ledger arguments, default: dev]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/deps.sh build
if [ $# -eq 0 ]; then
  set -- dev
fi
exec cargo run --release -p session-ledger -- "$@"
