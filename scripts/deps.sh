# scripts/deps.sh: the Debian packages Pilus builds and runs with. SOURCE it;
# it only defines a function.
#
#   pilus_build_deps   clang-19 (BPF C), libbpf-dev (bpf_helpers.h), iproute2
#                      (`ip`, used by the lab and the tests), protobuf-compiler
#                      (`protoc`, for etcd-client's build script) and
#                      etcd-server (the cluster store's tests run a real etcd
#                      3.4 in their own namespaces) and iperf3 (TCP_STREAM
#                      of the observability benchmark); installs only what
#                      is missing, so a second run costs nothing.

# shellcheck shell=bash
pilus_build_deps() {
  local need=()
  command -v clang-19 >/dev/null 2>&1 || command -v clang >/dev/null 2>&1 || need+=(clang-19)
  [ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
  command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
  command -v iperf3 >/dev/null 2>&1 || need+=(iperf3)
  [ ${#need[@]} -eq 0 ] && return 0
  echo "== installing: ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  # The package's service would serve etcd on the root namespace's
  # localhost; the tests start their own etcd inside their namespaces, so
  # the service we just installed is stopped again (where systemd runs it).
  if [[ " ${need[*]} " == *" etcd-server "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now etcd >/dev/null 2>&1 || true
  fi
}
