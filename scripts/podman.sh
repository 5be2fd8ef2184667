# scripts/podman.sh: podman (Debian bookworm, 4.3) driving a Pilus CNI plugin.
# SOURCE this file (from tests and other scripts); it only defines functions.
#
# Owns: installing podman/runc/busybox-static, an isolated podman setup under
# a directory DIR (config, storage, state, locks, events, CNI conflists; the
# system's /etc/containers/*.conf, /var/lib/containers/storage and
# /etc/cni/net.d are never used), the test image localhost/pilus-busybox:latest
# built from busybox-static, and tearing all of it down again (containers,
# netns, mounts, DIR). Outside DIR podman 4.3 still uses fixed paths:
# /run/netns/netns-UUID and /run/runc/ID while a container lives,
# /var/lib/cni/results (libcni cache, emptied by DEL) and
# /var/lib/containers/cache/blob-info-cache-v1.boltdb (written by import).
#
# Functions
#   podman_install          apt-get podman runc busybox-static containernetworking-plugins
#                           (only what is missing; --no-install-recommends so netavark is
#                           never installed; containernetworking-plugins only satisfies the
#                           container-network-stack dependency, its plugins are never used)
#   podman_env DIR          write DIR/{containers,storage,registries}.conf and the default
#                           conflist DIR/net.d/pilus.conflist; export PODMAN_DIR,
#                           CONTAINERS_CONF, CONTAINERS_STORAGE_CONF, CONTAINERS_REGISTRIES_CONF
#   podman_conflist NAME PLUGIN_JSON...
#                           write DIR/net.d/NAME.conflist (cniVersion 1.0.0) with those
#                           plugin objects, e.g. one per label set (see below)
#   pmn ARGS...             podman ARGS, inside $PILUS_PODMAN_NETNS if set; use it instead
#                           of bare `podman`
#   podman_image            import localhost/pilus-busybox:latest (CMD /bin/sh) and
#                           localhost/pilus-pause:latest (CMD /pause, pods' infra) from
#                           /bin/busybox of busybox-static (scripts/rootfs.sh) into DIR's
#                           storage (no-op if there)
#   podman_cleanup [DIR]    remove every container of DIR's storage, the netns podman made
#                           for them, leftover processes/mounts, and DIR; never fails (trap-safe)
#
# Variables the caller sets
#   PILUS_CNI_BIN_DIR   (required before podman_env) the ONLY directory podman searches for
#                       CNI plugins (containers.conf cni_plugin_dirs). Put pilus-cni there and
#                       never the reference plugins (bridge, ...), so podman cannot build its
#                       default 10.88.0.0/16 bridge even by mistake.
#   PILUS_CNI_TYPE      plugin type of the default `pilus` network (default: pilus-cni)
#   PILUS_PODMAN_NETNS  optional netns name (/run/netns/NAME) or path. pmn then runs podman
#                       under `nsenter --net=...`, so the plugin (ADD and DEL) and conmon's
#                       exit cleanup run in that netns and the host side of the pod veth can
#                       live there instead of the root netns. Every pmn call must see the same
#                       value, and podman_cleanup must run before that netns is deleted.
#   PILUS_PODMAN_DRIVER storage driver (default overlay; vfs if DIR is on a fs overlay refuses)
#
# Facts of podman 4.3 with the CNI backend (checked on this machine):
#   * the plugin is executed by the podman process itself (ADD), or by whichever podman
#     process tears the network down (DEL: `podman rm`, `podman stop`, or conmon's exit
#     command `podman container cleanup`), in that process's netns and mount namespace.
#   * CNI_ARGS = "IgnoreUnknown=1;K8S_POD_NAME=<container name>" plus, appended, whatever
#     CNI_ARGS holds in podman's environment, then MAC=... / IP=... from
#     `--network pilus:mac=...,ip=...`. No K8S_POD_NAMESPACE, no labels, no annotations.
#   * stdin is the plugin object of the conflist verbatim (plus name, cniVersion, and
#     runtimeConfig.{portMappings,aliases} if the plugin declares those capabilities), so
#     labels reach the plugin only through a static "args":{"cni":{"labels":[...]}} in the
#     conflist: one network per label set, written with podman_conflist.
#   * DEL gets the ADD-time netconf and CNI_ARGS from libcni's cache
#     (/var/lib/cni/results/NET-CONTAINERID-IFNAME; that directory is fixed in 4.3).
#   * root without CAP_SYS_RESOURCE: podman's default container rlimits (nofile and nproc
#     1048576) exceed the hard limits it runs under, so runc fails with "error setting
#     rlimit type 7 (nofile) / type 6 (nproc): operation not permitted". default_ulimits
#     is therefore nofile = this shell's hard limit, nproc <= 4096. A `--ulimit` flag
#     replaces ALL of default_ulimits: pass both nofile and nproc with it.
#   * with `--network NET:ip=...` podman replaces the plugin's capabilities by {"ips":true}
#     and drops runtimeConfig on ADD (DEL still gets the original ones): rely on `args`.
#   * env: ADD inherits the whole environment of the podman process; DEL run by conmon's
#     exit command gets only PATH, HOME, CONTAINERS_CONF and XDG_RUNTIME_DIR. Everything the
#     plugin needs (e.g. the agent's socket) must come through the netconf, not env.
#   * DEL runs in the netns of whichever podman tears down: after `podman rm` from another
#     netns than `podman run`, it is a race between `rm` and conmon's cleanup. Hence one
#     PILUS_PODMAN_NETNS for all pmn calls; a plugin's DEL should tolerate either netns.
#   * `ip netns exec NS podman` does NOT work (it remounts /sys, runc then fails with "no
#     cgroup mount found in mountinfo"); `nsenter --net` (pmn) does.
#   * pods (pmn pod create --network pilus): one ADD for the infra container,
#     K8S_POD_NAME = the pod's name, CNI_CONTAINERID = the infra container's ID.
#   * busybox sleep as PID 1 ignores SIGTERM: use `pmn rm -f -t 0` (else it waits 10 s).
#   * crun cannot run containers on this kernel's hybrid cgroups: runtime = runc.

# shellcheck shell=bash
# shellcheck source=scripts/rootfs.sh
source "$(dirname "${BASH_SOURCE[0]}")/rootfs.sh"
PILUS_PODMAN_IMAGE=${PILUS_PODMAN_IMAGE:-localhost/pilus-busybox:latest}
# Same rootfs, CMD /pause: the infra container of pods (podman pod create).
PILUS_PODMAN_PAUSE_IMAGE=${PILUS_PODMAN_PAUSE_IMAGE:-localhost/pilus-pause:latest}

podman_install() {
  local need=()
  command -v podman >/dev/null 2>&1 || need+=(podman)
  command -v runc >/dev/null 2>&1 || need+=(runc)
  command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
  dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
  # podman -> golang-github-containers-common needs a container-network-stack: take the
  # CNI one (its binaries in /usr/lib/cni stay unused), never netavark.
  dpkg -s containernetworking-plugins >/dev/null 2>&1 || need+=(containernetworking-plugins)
  [ ${#need[@]} -eq 0 ] && return 0
  echo "podman_install: installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${need[@]}" >/dev/null
}

# _podman_limit KIND CAP: this shell's hard limit for ulimit -KIND, at most CAP.
_podman_limit() {
  local v
  v=$(ulimit -H "-$1")
  if [ "$v" = unlimited ] || [ "$v" -gt "$2" ]; then v=$2; fi
  echo "$v"
}

podman_env() {
  local dir=${1:?podman_env DIR}
  if [ -z "${PILUS_CNI_BIN_DIR:-}" ] || [ ! -d "$PILUS_CNI_BIN_DIR" ]; then
    echo "podman_env: set PILUS_CNI_BIN_DIR to the directory holding the CNI plugin" >&2
    return 1
  fi
  if [ -e "$PILUS_CNI_BIN_DIR/bridge" ]; then
    echo "podman_env: $PILUS_CNI_BIN_DIR holds the bridge plugin; podman could build its" \
      "default network with it. Point PILUS_CNI_BIN_DIR at a directory with pilus-cni only" >&2
    return 1
  fi
  mkdir -p "$dir"/{net.d,storage,run,tmp}
  dir=$(cd "$dir" && pwd)
  local bin nofile nproc
  bin=$(cd "$PILUS_CNI_BIN_DIR" && pwd)
  nofile=$(_podman_limit n 1048576)
  # podman lowers its own RLIMIT_NPROC to 32768 (see /proc/PID/limits of podman and
  # conmon), so the shell's hard limit may already be too high for runc; the container's
  # uid 0 is exempt from RLIMIT_NPROC anyway.
  nproc=$(_podman_limit u 4096)
  cat >"$dir/containers.conf" <<EOF
# Written by scripts/podman.sh podman_env; CONTAINERS_CONF makes podman read only this file.
[containers]
# runc may not raise rlimits above this shell's hard limits (no CAP_SYS_RESOURCE here).
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
log_driver = "k8s-file"

[network]
network_backend = "cni"
cni_plugin_dirs = ["$bin"]
network_config_dir = "$dir/net.d"
# A container without --network joins pilus; should pilus.conflist be missing, podman
# would synthesise a bridge network, which fails: no bridge plugin in cni_plugin_dirs.
default_network = "pilus"
default_subnet = "198.18.255.0/24"
default_subnet_pools = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$dir/run/events.log"
lock_type = "file"
tmp_dir = "$dir/run/libpod"
static_dir = "$dir/storage/libpod"
volume_path = "$dir/storage/volumes"
image_copy_tmp_dir = "$dir/tmp"
# Pods: the infra container runs /pause of our own image (podman would otherwise build
# a pause image from catatonit, which is not installed). podman_image imports it.
infra_image = "$PILUS_PODMAN_PAUSE_IMAGE"
EOF
  cat >"$dir/storage.conf" <<EOF
# Written by scripts/podman.sh podman_env.
[storage]
driver = "${PILUS_PODMAN_DRIVER:-overlay}"
graphroot = "$dir/storage"
runroot = "$dir/run/storage"
EOF
  cat >"$dir/registries.conf" <<EOF
# Written by scripts/podman.sh podman_env: no registry is reachable; never search one.
unqualified-search-registries = []
short-name-mode = "disabled"
EOF
  export PODMAN_DIR=$dir
  export CONTAINERS_CONF=$dir/containers.conf
  export CONTAINERS_STORAGE_CONF=$dir/storage.conf
  export CONTAINERS_REGISTRIES_CONF=$dir/registries.conf
  [ -f "$dir/net.d/pilus.conflist" ] ||
    podman_conflist pilus "{\"type\":\"${PILUS_CNI_TYPE:-pilus-cni}\"}"
}

# podman_conflist NAME PLUGIN_JSON...: e.g.
#   podman_conflist pilus-web '{"type":"pilus-cni","args":{"cni":{"labels":[{"key":"app","value":"web"}]}}}'
#   pmn run --network pilus-web ...
podman_conflist() {
  local name=${1:?podman_conflist NAME PLUGIN_JSON...}
  shift
  [ $# -gt 0 ] || { echo "podman_conflist: no plugin object" >&2; return 1; }
  [ -n "${PODMAN_DIR:-}" ] || { echo "podman_conflist: run podman_env first" >&2; return 1; }
  local plugins
  plugins=$(IFS=,; echo "$*")
  printf '{"cniVersion":"1.0.0","name":"%s","plugins":[%s]}\n' "$name" "$plugins" \
    >"$PODMAN_DIR/net.d/$name.conflist.tmp"
  mv "$PODMAN_DIR/net.d/$name.conflist.tmp" "$PODMAN_DIR/net.d/$name.conflist"
}

_podman_netns_path() {
  local ns=${PILUS_PODMAN_NETNS:-}
  [ -z "$ns" ] && return 0
  case $ns in /*) echo "$ns" ;; *) echo "/run/netns/$ns" ;; esac
}

pmn() {
  if [ -z "${PODMAN_DIR:-}" ] || [ "${CONTAINERS_CONF:-}" != "$PODMAN_DIR/containers.conf" ]; then
    echo "pmn: run podman_env DIR first" >&2
    return 125
  fi
  if [ ! -f "$PODMAN_DIR/net.d/pilus.conflist" ]; then
    echo "pmn: $PODMAN_DIR/net.d/pilus.conflist is missing" >&2
    return 125
  fi
  local ns
  ns=$(_podman_netns_path)
  if [ -n "$ns" ]; then
    nsenter --net="$ns" podman "$@"
  else
    podman "$@"
  fi
}

podman_image() {
  pmn image exists "$PILUS_PODMAN_IMAGE" && pmn image exists "$PILUS_PODMAN_PAUSE_IMAGE" &&
    return 0
  local root
  root=$(mktemp -d "$PODMAN_DIR/tmp/rootfs.XXXXXX")
  busybox_rootfs "$root"
  local rc=0
  tar -C "$root" -cf "$root.tar" . &&
    pmn import -q --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin' \
      "$root.tar" "$PILUS_PODMAN_IMAGE" >/dev/null &&
    pmn import -q --change 'CMD ["/pause"]' --change 'ENV PATH=/bin' \
      "$root.tar" "$PILUS_PODMAN_PAUSE_IMAGE" >/dev/null || rc=$?
  rm -rf "$root" "$root.tar"
  return $rc
}

podman_cleanup() {
  local dir=${1:-${PODMAN_DIR:-}}
  [ -n "$dir" ] && [ -d "$dir" ] || return 0
  dir=$(cd "$dir" && pwd) || return 0
  (
    set +e
    export CONTAINERS_CONF=$dir/containers.conf CONTAINERS_STORAGE_CONF=$dir/storage.conf
    export CONTAINERS_REGISTRIES_CONF=$dir/registries.conf
    run() {
      local ns
      ns=$(_podman_netns_path)
      if [ -n "$ns" ] && [ -e "$ns" ]; then nsenter --net="$ns" podman "$@"; else podman "$@"; fi
    }
    ids=() netns=()
    if [ -f "$dir/containers.conf" ] && command -v podman >/dev/null 2>&1; then
      mapfile -t ids < <(run ps -aq --no-trunc 2>/dev/null)
      if [ ${#ids[@]} -gt 0 ]; then
        mapfile -t netns < <(run inspect --format '{{.NetworkSettings.SandboxKey}}' "${ids[@]}" 2>/dev/null)
        run pod rm -af -t 0 >/dev/null 2>&1
        run rm -af -t 0 >/dev/null 2>&1
      fi
    fi
    # Container IDs also from storage, in case podman's database is gone or broken.
    local d id pid ns m
    for d in "$dir"/storage/*-containers/*/; do
      [ -d "$d" ] && ids+=("$(basename "$d")")
    done
    for id in "${ids[@]}"; do
      [ -n "$id" ] || continue
      # The OCI spec names the netns podman made for the container.
      mapfile -t -O "${#netns[@]}" netns < <(grep -ho '/run/netns/netns-[0-9a-f-]*' \
        "$dir"/storage/*-containers/"$id"/userdata/config.json 2>/dev/null)
      if [ -d "/run/runc/$id" ]; then
        runc kill "$id" KILL >/dev/null 2>&1
        runc delete --force "$id" >/dev/null 2>&1
      fi
      rm -f /var/lib/cni/results/*-"$id"-* 2>/dev/null
    done
    # conmon processes of this DIR (conmon --exit-dir DIR/run/libpod/exits ...), by pid.
    for pid in /proc/[0-9]*; do
      pid=${pid#/proc/}
      [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = conmon ] || continue
      tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--exit-dir $dir/" &&
        kill -9 "$pid" 2>/dev/null
    done
    for ns in "${netns[@]}"; do
      case $ns in /run/netns/netns-*) ;; *) continue ;; esac
      [ -e "$ns" ] || continue
      umount "$ns" 2>/dev/null || umount -l "$ns" 2>/dev/null
      rm -f "$ns"
    done
    # Mounts under DIR (overlay merged dirs, shm), deepest first.
    awk -v p="$dir/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
      while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
    rm -rf --one-file-system "$dir" 2>/dev/null
  )
  [ "${PODMAN_DIR:-}" = "$dir" ] &&
    unset PODMAN_DIR CONTAINERS_CONF CONTAINERS_STORAGE_CONF CONTAINERS_REGISTRIES_CONF
  return 0
}
