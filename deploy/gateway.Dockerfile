# syntax=docker/dockerfile:1
# The trellis-gateway image. Build from the repository root:
#   docker build -f deploy/gateway.Dockerfile -t trellis-gateway .
# (docker-compose.yml does this for the gateway service.)
#
# NOTE: the gateway service is not built yet; today the binary only answers --help
# and --version, and exits with status 2 when started (see README.md, Roadmap).

# --- build ------------------------------------------------------------------------
FROM rust:1.95.0-bookworm AS builder
# C/C++ toolchain for RocksDB, clang/libclang for bindgen, D-Bus headers for BLE.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        clang libclang-dev pkg-config libdbus-1-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p trellis-gateway \
    && install -m 0755 target/release/trellis-gateway /usr/local/bin/trellis-gateway

# --- run --------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates libdbus-1-3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/trellis-gateway \
        --create-home --shell /usr/sbin/nologin trellis
COPY --from=builder /usr/local/bin/trellis-gateway /usr/local/bin/trellis-gateway
USER trellis
WORKDIR /var/lib/trellis-gateway
ENTRYPOINT ["/usr/local/bin/trellis-gateway"]
