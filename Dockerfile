# syntax=docker/dockerfile:1
#
# The session-ledger image: one binary, three roles (`api`, `projector`, `validator`;
# `dev` runs all of them on the embedded backend).
#
#   docker build -t session-ledger:local .
#   docker run --rm session-ledger:local --help
#
# Needs BuildKit (the default builder since Docker 23): the cache mounts keep the
# cargo registry and target/ between builds, so a code change rebuilds only the
# workspace crates. See deploy/README.md for the compose stack and Kubernetes.

########################################################################## builder
FROM rust:1-bookworm AS builder

# rdkafka builds its bundled librdkafka with its own configure + make; zlib1g-dev for
# its compression support. (Most are in the rust image already; listed so the build
# does not depend on that.)
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc make pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY schemas ./schemas

# The binary is copied out of the cache-mounted target/ in the same step (a cache
# mount is not part of the layer).
RUN --mount=type=cache,id=session-ledger-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=session-ledger-cargo-git,target=/usr/local/cargo/git \
    --mount=type=cache,id=session-ledger-target,target=/src/target \
    cargo build --release --locked -p session-ledger \
 && install -m 0755 target/release/session-ledger /usr/local/bin/session-ledger

########################################################################## runtime
FROM debian:bookworm-slim

# ca-certificates: TLS to brokers, CQL nodes, a JWKS or an OTLP collector over https.
# No curl: the compose healthchecks use ledger-healthcheck (bash's /dev/tcp, below);
# Kubernetes probes are httpGet and need nothing in the image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 ledger \
 && useradd --system --uid 10001 --gid ledger --home-dir /var/lib/session-ledger \
      --no-create-home --shell /usr/sbin/nologin ledger \
 && install -d -o ledger -g ledger -m 0700 /var/lib/session-ledger /var/lib/session-ledger/keys \
      /var/lib/session-ledger/keys/seal

COPY --from=builder /usr/local/bin/session-ledger /usr/local/bin/session-ledger
COPY --chmod=0755 deploy/docker/ledger-healthcheck.sh /usr/local/bin/ledger-healthcheck

# Fails the build if a shared library the binary links against is missing here.
RUN session-ledger --version

# In a container the listeners must not be bound to loopback only. The data
# directory holds the keys (and the SQLite files of the embedded backend).
ENV LEDGER_API_ADDR=0.0.0.0:8080 \
    LEDGER_VALIDATOR_ADDR=0.0.0.0:8081 \
    LEDGER_DATA_DIR=/var/lib/session-ledger

# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
WORKDIR /var/lib/session-ledger
EXPOSE 8080 8081

# The binary shuts down gracefully on SIGINT (Ctrl-C); as PID 1 it would ignore the
# default SIGTERM and be killed after the grace period instead.
STOPSIGNAL SIGINT

ENTRYPOINT ["session-ledger"]
CMD ["--help"]
