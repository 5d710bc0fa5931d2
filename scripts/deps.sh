#!/usr/bin/env bash
# Installs what building and testing Session Ledger needs and a fresh Debian machine
# may lack: a C toolchain, make, pkg-config and zlib headers (librdkafka is built from
# source by the rdkafka crate), Java 17 and Maven (Kafka and Cassandra for the tests).
# Does nothing when everything is present. Needs root (or sudo) to install.
#
#   scripts/deps.sh         everything the tests need
#   scripts/deps.sh build   only what building needs (no Java, no Maven)
set -euo pipefail

missing=()
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
[ -e /usr/include/zlib.h ] || missing+=(zlib1g-dev)
if [ "${1:-}" != build ]; then
  command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null 2>&1 || missing+=(maven)
fi
command -v cargo >/dev/null 2>&1 || {
  echo "deps: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
}

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "deps: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
