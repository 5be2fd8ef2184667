#!/usr/bin/env bash
# Runs every test tier of Pilus on a fresh Debian machine: installs what is
# missing (clang-19, libbpf-dev, iproute2), then format, lints and
# `cargo test --workspace`. Tiers 2 and 3 load BPF programs and build network
# namespaces, so this must run as root; it fails loudly otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: run as root (BPF_PROG_TEST_RUN and network namespaces need it)" >&2
  exit 1
fi

need=()
command -v clang-19 >/dev/null 2>&1 || need+=(clang-19)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo build (the real-traffic tests run pilusd and the pilus CLI)"
cargo build --workspace --bins
echo "== cargo test (tier 1: pure logic, tier 2: BPF_PROG_TEST_RUN, tier 3: real traffic)"
cargo test --workspace
