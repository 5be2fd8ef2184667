# scripts/containerd.sh: containerd (Debian bookworm, 1.6) and `ctr run --cni` driving a
# Pilus CNI plugin. SOURCE this file (from tests and other scripts); it only defines
# functions.
#
# Owns: installing containerd, a containerd of our own under a directory DIR (its config,
# root, state, gRPC socket, runc root, IO fifos and CNI conflists all inside DIR; the
# system's /etc/containerd, /var/lib/containerd and /run/containerd/containerd.sock are
# never used), the test image localhost/pilus-busybox:latest built from busybox-static,
# and tearing all of it down again (tasks, containers, shims, mounts, cgroups, DIR).
# Outside DIR containerd 1.6 and ctr still use fixed paths: the shims' sockets in
# /run/containerd/s/, the cgroup /NAMESPACE/ID of each container, and libcni's cache
# /var/lib/cni/results/NETWORK-NAMESPACE-ID-IFNAME from ADD to DEL (containerd_cleanup
# removes all three).
#
# Functions
#   containerd_install      apt-get containerd, runc, util-linux, busybox-static (only what
#                           is missing); a system containerd that the package would start
#                           (systemd hosts) is stopped and disabled, and /etc/cni/net.d is
#                           made if missing (see ctrn)
#   containerd_env DIR      write DIR/config.toml; export CONTAINERD_DIR, CONTAINERD_ADDRESS
#                           (DIR/containerd.sock) and CONTAINERD_NAMESPACE (default
#                           pilus-test)
#   containerd_start        start containerd with DIR/config.toml (log DIR/containerd.log,
#                           pid DIR/containerd.pid) and wait until it answers
#   containerd_conflist NAME PLUGIN_JSON...
#                           write DIR/net.d/NAME.conflist; `ctr run --cni` uses the FIRST
#                           conflist in name order only, so keep one
#   ctrn ARGS...            ctr --address DIR/containerd.sock ARGS, inside $PILUS_CTR_NETNS
#                           if set, in a private mount namespace where /etc/cni/net.d is
#                           DIR/net.d and /opt/cni/bin is $PILUS_CNI_BIN_DIR (see below)
#   ctr_run ARGS...         ctrn run --runc-root DIR/runc --fifo-dir DIR/fifo ARGS
#   containerd_image        import localhost/pilus-busybox:latest (CMD /bin/sh), a docker
#                           archive of scripts/rootfs.sh's tree (no-op if there)
#   containerd_cleanup [DIR] kill and delete every task and container, stop containerd and
#                           its shims, unmount, remove the cgroups and sockets, remove DIR;
#                           never fails (trap-safe)
#
# Variables the caller sets
#   PILUS_CNI_BIN_DIR   (required for ctrn) the directory holding the CNI plugin; ctr
#                       sees it as /opt/cni/bin. Never put the reference plugins there.
#   PILUS_CTR_NETNS     optional netns name (/run/netns/NAME) or path: ctr, and so the
#                       plugin's ADD and DEL, run there (the host side of the pod veth
#                       lives there). containerd itself stays in the root netns.
#   CONTAINERD_NAMESPACE the containerd namespace (ctr's -n; default pilus-test)
#
# Facts of containerd 1.6.20 and `ctr run --cni` (checked on this machine):
#   * ctr, not containerd, runs the plugin: ADD after the task is created and before it
#     starts, in ctr's own netns, mount namespace and environment. Its CNI directories are
#     go-cni's defaults, /etc/cni/net.d and /opt/cni/bin, with no flag to change them:
#     ctrn bind-mounts DIR/net.d and the plugin directory over them in a private mount
#     namespace (the system's /etc/cni/net.d may hold podman's 10.88.0.0/16 bridge).
#   * CNI_CONTAINERID = "NAMESPACE-ID" (ambiguous: both may hold '-'), CNI_NETNS =
#     /proc/PID/ns/net of the task's init process (`runc init`, not yet started), whose
#     parent is the shim `containerd-shim-runc-v2 -namespace NS -id ID -address SOCKET`,
#     CNI_IFNAME = eth0, CNI_ARGS empty, CNI_PATH = /opt/cni/bin:/usr/lib/cni (Debian adds
#     the second). stdin is the conflist's plugin object with name and cniVersion: no
#     labels, no annotations, no runtimeConfig. DEL gets CNI_NETNS empty and prevResult.
#   * `ctr run --label k=v` sets a container label AND an OCI annotation (the bundle's
#     config.json lists labels and --annotation values together).
#   * the container and its labels (`ctr run --label`) are in containerd's metadata
#     before ADD: `ctr -n NAMESPACE containers info ID` answers at ADD time.
#   * DEL: only a foreground `ctr run --cni` calls it, when its task exits. `ctr run -d
#     --cni` never does, nor `ctr task rm` / `ctr container rm` (1.6): the endpoint of a
#     detached container stays until a CNI DEL by hand (docs/runtimes.md).
#   * busybox sleep as PID 1 ignores SIGTERM: stop test tasks with `ctrn task kill -s KILL`.

# shellcheck shell=bash
# shellcheck source=scripts/rootfs.sh
source "$(dirname "${BASH_SOURCE[0]}")/rootfs.sh"
PILUS_CTR_IMAGE=${PILUS_CTR_IMAGE:-localhost/pilus-busybox:latest}

containerd_install() {
  local need=()
  { command -v containerd && command -v ctr; } >/dev/null 2>&1 || need+=(containerd)
  command -v runc >/dev/null 2>&1 || need+=(runc)
  { command -v nsenter && command -v unshare; } >/dev/null 2>&1 || need+=(util-linux)
  dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
  if [ ${#need[@]} -gt 0 ]; then
    echo "containerd_install: installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${need[@]}" >/dev/null
    # The package enables and starts containerd.service on /run/containerd where systemd
    # runs; nothing here uses it, and it must not hold the system paths.
    if [ -d /run/systemd/system ] && [[ " ${need[*]} " == *" containerd "* ]]; then
      systemctl disable --now containerd.service >/dev/null 2>&1 || true
    fi
  fi
  # ctr 1.6 reads CNI configurations from /etc/cni/net.d only; ctrn mounts over it, so
  # it must exist (podman's package makes it too).
  [ -d /etc/cni/net.d ] || mkdir -p /etc/cni/net.d
}

containerd_env() {
  local dir=${1:?containerd_env DIR}
  mkdir -p "$dir"/{root,state,net.d,runc,fifo,tmp}
  dir=$(cd "$dir" && pwd)
  # Unix socket paths are limited to 108 bytes; shims add their own.
  if [ ${#dir} -gt 80 ]; then
    echo "containerd_env: $dir is too long for containerd's socket paths" >&2
    return 1
  fi
  cat >"$dir/config.toml" <<EOF
# Written by scripts/containerd.sh containerd_env: a containerd of its own, under $dir.
version = 2
root = "$dir/root"
state = "$dir/state"
# CRI (Kubernetes) would load CNI from the system's directories; the opt plugin
# (/opt/containerd) and the snapshotters this machine lacks are of no use here. (The v1
# runtime stays: 1.6's tasks service will not load without it.)
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "$dir/containerd.sock"

[ttrpc]
  address = ""

[debug]
  address = ""

[metrics]
  address = ""
EOF
  export CONTAINERD_DIR=$dir
  export CONTAINERD_ADDRESS=$dir/containerd.sock
  export CONTAINERD_NAMESPACE=${CONTAINERD_NAMESPACE:-pilus-test}
}

containerd_start() {
  [ -n "${CONTAINERD_DIR:-}" ] || { echo "containerd_start: run containerd_env first" >&2; return 1; }
  local pid i
  if [ -f "$CONTAINERD_DIR/containerd.pid" ]; then
    pid=$(cat "$CONTAINERD_DIR/containerd.pid")
    if kill -0 "$pid" 2>/dev/null; then return 0; fi
  fi
  setsid containerd --config "$CONTAINERD_DIR/config.toml" \
    >"$CONTAINERD_DIR/containerd.log" 2>&1 </dev/null &
  echo $! >"$CONTAINERD_DIR/containerd.pid"
  for i in $(seq 100); do
    ctr --address "$CONTAINERD_ADDRESS" version >/dev/null 2>&1 && return 0
    kill -0 "$(cat "$CONTAINERD_DIR/containerd.pid")" 2>/dev/null || break
    sleep 0.1
  done
  echo "containerd_start: containerd did not answer on $CONTAINERD_ADDRESS:" >&2
  tail -20 "$CONTAINERD_DIR/containerd.log" >&2
  return 1
}

containerd_conflist() {
  local name=${1:?containerd_conflist NAME PLUGIN_JSON...}
  shift
  [ $# -gt 0 ] || { echo "containerd_conflist: no plugin object" >&2; return 1; }
  [ -n "${CONTAINERD_DIR:-}" ] || { echo "containerd_conflist: run containerd_env first" >&2; return 1; }
  local plugins
  plugins=$(IFS=,; echo "$*")
  printf '{"cniVersion":"1.0.0","name":"%s","plugins":[%s]}\n' "$name" "$plugins" \
    >"$CONTAINERD_DIR/net.d/$name.conflist.tmp"
  mv "$CONTAINERD_DIR/net.d/$name.conflist.tmp" "$CONTAINERD_DIR/net.d/$name.conflist"
}

_ctr_netns_path() {
  local ns=${PILUS_CTR_NETNS:-}
  [ -z "$ns" ] && return 0
  case $ns in /*) echo "$ns" ;; *) echo "/run/netns/$ns" ;; esac
}

ctrn() {
  if [ -z "${CONTAINERD_DIR:-}" ]; then
    echo "ctrn: run containerd_env DIR first" >&2
    return 125
  fi
  if [ -z "${PILUS_CNI_BIN_DIR:-}" ] || [ ! -d "$PILUS_CNI_BIN_DIR" ]; then
    echo "ctrn: set PILUS_CNI_BIN_DIR to the directory holding the CNI plugin" >&2
    return 125
  fi
  if [ ! -d /etc/cni/net.d ]; then
    echo "ctrn: /etc/cni/net.d is missing (containerd_install makes it)" >&2
    return 125
  fi
  local bin ns
  bin=$(cd "$PILUS_CNI_BIN_DIR" && pwd)
  ns=$(_ctr_netns_path)
  # /opt may lack cni/bin: a tmpfs over /opt (seen only by this ctr and its plugins)
  # gives the mount point.
  local mounts="mount --bind '$CONTAINERD_DIR/net.d' /etc/cni/net.d &&
    mount -t tmpfs -o size=1m,mode=755 pilus-ctr-opt /opt && mkdir -p /opt/cni/bin &&
    mount --bind '$bin' /opt/cni/bin &&
    exec ctr --address '$CONTAINERD_ADDRESS' --namespace '$CONTAINERD_NAMESPACE' \"\$@\""
  if [ -n "$ns" ]; then
    nsenter --net="$ns" unshare --mount --propagation private sh -c "$mounts" ctrn "$@"
  else
    unshare --mount --propagation private sh -c "$mounts" ctrn "$@"
  fi
}

ctr_run() {
  ctrn run --runc-root "$CONTAINERD_DIR/runc" --fifo-dir "$CONTAINERD_DIR/fifo" "$@"
}

containerd_image() {
  ctrn image ls -q 2>/dev/null | grep -qxF "$PILUS_CTR_IMAGE" && return 0
  local tmp diff cfg rc=0
  tmp=$(mktemp -d "$CONTAINERD_DIR/tmp/image.XXXXXX")
  mkdir "$tmp/rootfs"
  busybox_rootfs "$tmp/rootfs"
  tar -C "$tmp/rootfs" -cf "$tmp/layer.tar" .
  diff=$(sha256sum "$tmp/layer.tar" | cut -d' ' -f1)
  # A docker archive (what `docker save` writes): manifest.json, the image config named
  # by its digest, one uncompressed layer.
  printf '{"architecture":"%s","os":"linux","config":{"Cmd":["/bin/sh"],"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$(dpkg --print-architecture)" "$diff" >"$tmp/config.json"
  cfg=$(sha256sum "$tmp/config.json" | cut -d' ' -f1)
  mv "$tmp/config.json" "$tmp/$cfg.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["layer.tar"]}]' \
    "$cfg" "$PILUS_CTR_IMAGE" >"$tmp/manifest.json"
  tar -C "$tmp" -cf "$tmp/image.tar" manifest.json "$cfg.json" layer.tar &&
    ctrn image import "$tmp/image.tar" >/dev/null || rc=$?
  rm -rf "$tmp"
  return $rc
}

containerd_cleanup() {
  local dir=${1:-${CONTAINERD_DIR:-}}
  [ -n "$dir" ] && [ -d "$dir" ] || return 0
  dir=$(cd "$dir" && pwd) || return 0
  (
    set +e
    local sock=$dir/containerd.sock c n id pid addr m cg
    c() { timeout 10 ctr --address "$sock" "$@"; }
    local shim_sockets=() cgroups=()
    # Shims' sockets and the tasks' cgroups, read before the tasks go.
    for addr in "$dir"/state/io.containerd.runtime.v2.task/*/*/address; do
      [ -f "$addr" ] && shim_sockets+=("$(sed 's|^unix://||' "$addr")")
    done
    for n in "$dir"/state/io.containerd.runtime.v2.task/*/; do
      [ -d "$n" ] && cgroups+=("$(basename "$n")")
    done
    if [ -S "$sock" ]; then
      for n in $(c namespaces ls -q 2>/dev/null); do
        for id in $(c -n "$n" tasks ls -q 2>/dev/null); do
          c -n "$n" tasks kill -s KILL "$id" >/dev/null 2>&1
        done
        for id in $(c -n "$n" tasks ls -q 2>/dev/null); do
          c -n "$n" tasks delete -f "$id" >/dev/null 2>&1
        done
        for id in $(c -n "$n" containers ls -q 2>/dev/null); do
          c -n "$n" containers delete "$id" >/dev/null 2>&1
          # libcni's cache of an ADD whose DEL never came (ctr run -d, a killed ctr).
          rm -f /var/lib/cni/results/*-"$n-$id"-* 2>/dev/null
        done
        cgroups+=("$n")
      done
    fi
    if [ -f "$dir/containerd.pid" ]; then
      pid=$(cat "$dir/containerd.pid")
      if [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(command -v containerd)" ]; then
        kill "$pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
      fi
    fi
    # Shims of this containerd (containerd-shim-runc-v2 ... -address DIR/containerd.sock),
    # and their runc containers, by pid.
    local comm
    for pid in /proc/[0-9]*; do
      pid=${pid#/proc/}
      comm=
      read -r comm 2>/dev/null <"/proc/$pid/comm"
      case $comm in containerd-shim*) ;; *) continue ;; esac
      tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-address $sock " &&
        kill -9 "$pid" 2>/dev/null
    done
    if [ -d "$dir/runc" ]; then
      for id in $(runc --root "$dir/runc" list -q 2>/dev/null); do
        runc --root "$dir/runc" kill "$id" KILL >/dev/null 2>&1
        runc --root "$dir/runc" delete --force "$id" >/dev/null 2>&1
      done
      for n in "$dir"/runc/*/; do
        [ -d "$n" ] || continue
        for id in $(runc --root "$n" list -q 2>/dev/null); do
          runc --root "$n" delete --force "$id" >/dev/null 2>&1
        done
      done
    fi
    for addr in "${shim_sockets[@]}"; do
      case $addr in /run/containerd/s/*) rm -f "$addr" ;; esac
    done
    rmdir /run/containerd/s /run/containerd 2>/dev/null
    # ctr's default cgroup is /NAMESPACE/ID in every hierarchy: remove what is empty.
    for n in "${cgroups[@]}"; do
      for cg in /sys/fs/cgroup/*/"$n" /sys/fs/cgroup/"$n"; do
        [ -d "$cg" ] || continue
        find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
      done
    done
    # Mounts under DIR (snapshots, rootfs), deepest first.
    awk -v p="$dir/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
      while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
    rm -rf --one-file-system "$dir" 2>/dev/null
  )
  [ "${CONTAINERD_DIR:-}" = "$dir" ] &&
    unset CONTAINERD_DIR CONTAINERD_ADDRESS
  return 0
}
