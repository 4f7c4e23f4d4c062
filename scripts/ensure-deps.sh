#!/usr/bin/env bash
# Make this machine ready to build and test Trellis, or say exactly what is missing.
#
#   scripts/ensure-deps.sh               build packages + services (Postgres, NATS JetStream)
#   scripts/ensure-deps.sh --build-only  build packages only (what `make demo` needs)
#
# Idempotent: it checks before it acts. It installs Debian packages with apt-get only
# when one is missing and it runs as root; otherwise it names the missing packages and
# the command that installs them, and exits 1. It starts Postgres and NATS only when
# they do not answer. Used by `make deps|build|test|demo` and by `.ci/run`.
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432
NATS_HOST=127.0.0.1
NATS_PORT=4222
NATS_STORE=/var/lib/nats-server
NATS_LOG=/var/log/nats-server.log
WAIT_SECONDS=20

# Needed to compile the workspace: a C/C++ toolchain (RocksDB), clang + libclang
# (bindgen), pkg-config + D-Bus headers (the BLE stack), curl (scripts, health checks).
BUILD_PACKAGES=(build-essential clang libclang-dev libdbus-1-dev pkg-config curl)
# Needed by the tests of the gateway side: the servers and the Postgres client tools.
SERVICE_PACKAGES=(nats-server postgresql postgresql-client)

say() { printf '[ensure-deps] %s\n' "$*"; }
die() { printf '[ensure-deps] ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,10s/^# \{0,1\}//p' "$0"
}

build_only=false
for arg in "$@"; do
    case "$arg" in
        --build-only) build_only=true ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $arg" ;;
    esac
done

# --- Debian packages ----------------------------------------------------------

installed() {
    # `postgresql-client` is a metapackage; any versioned client (postgresql-client-15)
    # gives the same tools, so accept that too rather than install the metapackage.
    if [[ "$1" == postgresql-client ]]; then
        dpkg-query -W -f='${db:Status-Abbrev}\n' 'postgresql-client-[0-9]*' 2>/dev/null \
            | grep -q '^ii' && return 0
    fi
    dpkg -s "$1" >/dev/null 2>&1
}

command -v dpkg >/dev/null 2>&1 \
    || die "dpkg not found: this script knows Debian/Ubuntu only. Install by hand: ${BUILD_PACKAGES[*]} ${SERVICE_PACKAGES[*]}"

wanted=("${BUILD_PACKAGES[@]}")
$build_only || wanted+=("${SERVICE_PACKAGES[@]}")

missing=()
for pkg in "${wanted[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
    say "Debian packages present: ${wanted[*]}"
elif ((EUID != 0)); then
    {
        echo "[ensure-deps] Missing Debian packages: ${missing[*]}"
        echo "[ensure-deps] Install them with:"
        echo "    sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}"
    } >&2
    exit 1
else
    say "Installing missing Debian packages: ${missing[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi

# --- Rust toolchain -------------------------------------------------------------

command -v cargo >/dev/null 2>&1 \
    || die "cargo not found. Install rustup (https://rustup.rs); rust-toolchain.toml pins the version."
say "Rust: $(cargo --version)"
if cargo nextest --version >/dev/null 2>&1; then
    say "cargo-nextest present: make test uses it"
else
    say "cargo-nextest not found: make test falls back to cargo test (optional: cargo install --locked cargo-nextest)"
fi

if $build_only; then
    say "Build dependencies ready (--build-only: Postgres and NATS not checked)."
    exit 0
fi

# --- Services -------------------------------------------------------------------

need_root_for() {
    ((EUID == 0)) && return 0
    echo "[ensure-deps] $1 is not running and starting it needs root. Start it with:" >&2
    echo "    sudo $2" >&2
    exit 1
}

pg_up() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }

if pg_up; then
    say "Postgres answers on $PG_HOST:$PG_PORT"
else
    # Several clusters may be installed; take the newest version.
    pg_version=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)
    [[ -n "$pg_version" ]] || die "no Postgres cluster under /etc/postgresql (create one: pg_createcluster --start <version> main)"
    start_pg=(pg_ctlcluster --skip-systemctl-redirect "$pg_version" main start)
    need_root_for "Postgres" "${start_pg[*]}"
    say "Starting Postgres: ${start_pg[*]}"
    # An already-running cluster that listens elsewhere makes this fail; the wait below reports it.
    "${start_pg[@]}" || say "pg_ctlcluster returned an error; waiting for the port anyway"
    for ((i = 0; i < WAIT_SECONDS; i++)); do
        pg_up && break
        sleep 1
    done
    pg_up || die "Postgres does not answer on $PG_HOST:$PG_PORT after ${WAIT_SECONDS}s (logs: /var/log/postgresql/)"
    say "Postgres answers on $PG_HOST:$PG_PORT"
fi

# Reads the INFO line a NATS server sends on connect; empty when nothing listens.
nats_info() {
    timeout 3 bash -c "exec 3<>/dev/tcp/$NATS_HOST/$NATS_PORT && IFS= read -r -t 2 line <&3 && printf '%s' \"\$line\"" 2>/dev/null || true
}

info=$(nats_info)
if [[ -z "$info" ]]; then
    start_nats=(start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server
        -- -a "$NATS_HOST" -p "$NATS_PORT" -js -sd "$NATS_STORE" -l "$NATS_LOG")
    need_root_for "NATS" "mkdir -p $NATS_STORE && ${start_nats[*]}"
    say "Starting NATS with JetStream: ${start_nats[*]}"
    mkdir -p "$NATS_STORE"
    "${start_nats[@]}"
    for ((i = 0; i < WAIT_SECONDS; i++)); do
        info=$(nats_info)
        [[ -n "$info" ]] && break
        sleep 1
    done
    [[ -n "$info" ]] || die "NATS does not answer on $NATS_HOST:$NATS_PORT after ${WAIT_SECONDS}s (log: $NATS_LOG)"
fi
if [[ "$info" != *'"jetstream":true'* ]]; then
    die "a NATS server answers on $NATS_HOST:$NATS_PORT but without JetStream; restart it with -js"
fi
say "NATS with JetStream answers on $NATS_HOST:$NATS_PORT"

say "All dependencies ready."
