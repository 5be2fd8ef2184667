#!/usr/bin/env bash
# The README's first command: on a fresh Debian machine, installs what is
# missing, builds Pilus (release), and runs `pilus lab demo` — an etcd and
# two nodes with their agents, six pods attached through pilus-cni, traffic
# and the tunnel, a policy that denies and says why, a ClusterIP service
# over a backend on each node, a pod reaching the outside from its node's
# address (masquerade), and teardown. Everything lives in network namespaces
# (198.18.0.0/15) and is removed at the end. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/demo.sh: run as root (network namespaces and eBPF need it)" >&2
  exit 1
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "scripts/demo.sh: cargo is missing; install Rust 1.95 (https://rustup.rs)" >&2
  exit 1
fi
source scripts/deps.sh
pilus_build_deps
echo "== building (cargo build --release --bins)" >&2
cargo build --release --bins --quiet
exec target/release/pilus lab demo
