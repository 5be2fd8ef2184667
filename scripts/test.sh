#!/usr/bin/env bash
# Runs every test tier of Pilus on a fresh Debian machine: installs what is
# missing (clang-19, libbpf-dev, iproute2, protobuf-compiler, etcd-server,
# prometheus; podman, runc, busybox-static and containerd for the
# container-runtime tests), then format, lints and `cargo test --workspace`.
# Tiers 2 and 3 load BPF programs and build network namespaces, so this must
# run as root; it fails loudly otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: run as root (BPF_PROG_TEST_RUN and network namespaces need it)" >&2
  exit 1
fi

source scripts/deps.sh
source scripts/podman.sh
source scripts/containerd.sh
pilus_build_deps
# The podman and containerd tests drive pilus-cni through real runtimes (runc; podman's
# CNI backend, `ctr run --cni`), each isolated under a scratch directory of its own.
podman_install
containerd_install

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo build (the real-traffic tests run pilusd and the pilus CLI)"
cargo build --workspace --bins
echo "== cargo test (tier 1: pure logic, tier 2: BPF_PROG_TEST_RUN, tier 3: real traffic)"
cargo test --workspace
