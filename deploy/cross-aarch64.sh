#!/usr/bin/env bash
# Cross-compile trellis-node for a 64-bit Raspberry Pi (aarch64-unknown-linux-gnu) with
# Debian's cross toolchain, then check the result: `file` must say ARM aarch64, and
# where qemu-user is installed the binary must answer `--version` under emulation.
#
#   deploy/cross-aarch64.sh            build, strip, check; binary in dist/
#
# The first run compiles RocksDB for aarch64 (long on two cores); later runs are
# incremental (CARGO_TARGET_DIR defaults to ~/.cache/trellis/target-aarch64).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

TARGET=aarch64-unknown-linux-gnu
PACKAGES=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu clang libclang-dev file qemu-user)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_AARCH64:-$HOME/.cache/trellis/target-aarch64}"

say() { printf '[cross-aarch64] %s\n' "$*"; }

missing=()
for package in "${PACKAGES[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        say "missing packages: ${missing[*]}"
        say "install them with: sudo apt-get install -y ${missing[*]}"
        exit 1
    fi
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"

# The C and C++ parts (RocksDB, mimalloc) use the cross compilers; bindgen reads the
# aarch64 headers from the cross sysroot.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu="--sysroot=/usr/aarch64-linux-gnu"

say "cargo build --release --target $TARGET -p trellis-node --bin trellis-node"
cargo build --release --target "$TARGET" -p trellis-node --bin trellis-node

mkdir -p dist
out=dist/trellis-node-aarch64
aarch64-linux-gnu-strip -o "$out" "$CARGO_TARGET_DIR/$TARGET/release/trellis-node"
description=$(file -b "$out")
say "file: $description"
[[ $description == *"ARM aarch64"* ]] || { say "not an aarch64 binary"; exit 1; }
if command -v qemu-aarch64 >/dev/null 2>&1; then
    version=$(qemu-aarch64 -L /usr/aarch64-linux-gnu "$out" --version)
    say "under qemu-aarch64: $version"
    [[ $version == trellis-node* ]] || { say "the binary did not answer --version"; exit 1; }
fi
say "stripped size: $(stat -c %s "$out") bytes ($out)"
