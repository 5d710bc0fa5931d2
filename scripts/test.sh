#!/usr/bin/env bash
# Runs the whole test suite: installs build prerequisites, starts Apache Kafka and
# Apache Cassandra (scripts/services.sh), runs every test of the workspace against
# them, and stops the services it started. One build serves all test binaries.
#
#   scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/deps.sh

started=0
stop_services() {
  if [ "$started" = 1 ]; then
    scripts/services.sh down || true
  fi
}
trap stop_services EXIT
if ! scripts/services.sh status >/dev/null 2>&1; then
  started=1
  # Fresh: every test run leaves topics and keyspaces behind, and hundreds of them
  # slow Cassandra and Kafka down run after run. Services already up are used as
  # they are.
  scripts/services.sh up --fresh
fi

export LEDGER_KAFKA_BROKERS="${LEDGER_KAFKA_BROKERS:-127.0.0.1:9092}"
export LEDGER_SCYLLA_NODES="${LEDGER_SCYLLA_NODES:-127.0.0.1:9042}"
cargo test --workspace "$@"
