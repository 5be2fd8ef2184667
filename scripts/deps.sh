# scripts/deps.sh: the Debian packages Pilus builds and runs with. SOURCE it;
# it only defines a function.
#
#   pilus_build_deps   clang-19 (BPF C), libbpf-dev (bpf_helpers.h), iproute2
#                      (`ip`, used by the lab and the tests); installs only what
#                      is missing, so a second run costs nothing.

# shellcheck shell=bash
pilus_build_deps() {
  local need=()
  command -v clang-19 >/dev/null 2>&1 || command -v clang >/dev/null 2>&1 || need+=(clang-19)
  [ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  [ ${#need[@]} -eq 0 ] && return 0
  echo "== installing: ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
}
