# scripts/deps.sh: the Debian packages Pilus builds and runs with. SOURCE it;
# it only defines a function.
#
#   pilus_build_deps   clang-19 (BPF C), libbpf-dev (bpf_helpers.h), iproute2
#                      (`ip`, used by the lab and the tests), protobuf-compiler
#                      (`protoc`, for etcd-client's build script) and
#                      etcd-server (the cluster store's tests run a real etcd
#                      3.4 in their own namespaces), iptables (the
#                      `iptables` configuration of `pilus bench traffic`,
#                      run by the bench tests) and prometheus (Debian's
#                      Prometheus 2.42 and promtool: the metrics tests check
#                      pilusd's exposition and scrape it with a real server);
#                      installs only what is missing, so a second run costs
#                      nothing.

# shellcheck shell=bash
pilus_build_deps() {
  local need=()
  command -v clang-19 >/dev/null 2>&1 || command -v clang >/dev/null 2>&1 || need+=(clang-19)
  [ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
  command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
  command -v iptables-restore >/dev/null 2>&1 || need+=(iptables)
  local lean=()
  { command -v prometheus && command -v promtool; } >/dev/null 2>&1 || lean+=(prometheus)
  [ ${#need[@]} -eq 0 ] && [ ${#lean[@]} -eq 0 ] && return 0
  echo "== installing: ${need[*]} ${lean[*]}" >&2
  apt-get update -qq
  if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  # Without recommends: prometheus recommends prometheus-node-exporter, one
  # more service nobody here wants.
  if [ ${#lean[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${lean[@]}" >/dev/null
  fi
  # The packages' services would serve etcd and Prometheus on the root
  # namespace's localhost; the tests start their own inside their
  # namespaces, so the services we just installed are stopped again (where
  # systemd runs them).
  [ -d /run/systemd/system ] || return 0
  local pkg
  for pkg in "${need[@]}" "${lean[@]}"; do
    case $pkg in
      etcd-server) systemctl disable --now etcd >/dev/null 2>&1 || true ;;
      prometheus) systemctl disable --now prometheus >/dev/null 2>&1 || true ;;
    esac
  done
}
