# syntax=docker/dockerfile:1
# The trellis-node image. Build from the repository root:
#   docker build -f deploy/node.Dockerfile -t trellis-node .
# (docker-compose.yml does this for node-a and node-b.)

# --- build ------------------------------------------------------------------------
FROM rust:1.95.0-bookworm AS builder
# C/C++ toolchain for RocksDB, clang/libclang for bindgen, D-Bus headers for BLE.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        clang libclang-dev pkg-config libdbus-1-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The caches keep downloaded crates and compiled dependencies between builds; the
# binary is copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p trellis-node \
    && install -m 0755 target/release/trellis-node /usr/local/bin/trellis-node

# --- run --------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates libdbus-1-3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/trellis \
        --create-home --shell /usr/sbin/nologin trellis
COPY --from=builder /usr/local/bin/trellis-node /usr/local/bin/trellis-node
USER trellis
WORKDIR /var/lib/trellis
VOLUME ["/var/lib/trellis"]
ENV TRELLIS_DATA_DIR=/var/lib/trellis
# The local API (loopback unless TRELLIS_API__LISTEN and TRELLIS_API__TOKEN are set) and
# the mesh (libp2p TCP and QUIC).
EXPOSE 4680/tcp 4681/tcp 4681/udp
ENTRYPOINT ["/usr/local/bin/trellis-node"]
CMD ["run"]
