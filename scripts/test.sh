#!/usr/bin/env bash
# Runs the whole test suite: installs build prerequisites, starts Apache Kafka and
# Apache Cassandra (scripts/services.sh), runs every test of the workspace against
# them, fuzzes the parsers of hostile input (scripts/fuzz.sh), and stops the services
# it started. One build serves all test binaries.
#
#   scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/deps.sh

started=0
regions_started=0
stop_services() {
  if [ "$started" = 1 ]; then
    scripts/services.sh down || true
  elif [ "$regions_started" = 1 ]; then
    # Only the second region and the link, which this run started.
    scripts/services.sh down-regions || true
  fi
}
trap stop_services EXIT
# Two regions (tests/regions.rs): the default Kafka is "east",
# a second one "west", linked by MirrorMaker 2.
if ! scripts/services.sh status >/dev/null 2>&1; then
  started=1
  # Fresh: every test run leaves topics and keyspaces behind, and hundreds of them
  # slow Cassandra and Kafka down run after run. Services already up are used as
  # they are.
  scripts/services.sh up --fresh --regions 2
elif ! scripts/services.sh status --regions 2 >/dev/null 2>&1; then
  # East and Cassandra run already (and are left alone): start only what is missing.
  regions_started=1
  scripts/services.sh up --regions 2
fi

export LEDGER_KAFKA_BROKERS="${LEDGER_KAFKA_BROKERS:-127.0.0.1:9092}"
export LEDGER_SCYLLA_NODES="${LEDGER_SCYLLA_NODES:-127.0.0.1:9042}"
cargo test --workspace "$@"
# Then the parsers of hostile input under coverage-guided fuzzing, 30 s per target
# (LEDGER_FUZZ_SECONDS; 0 skips).
scripts/fuzz.sh
