# scripts/rootfs.sh: the root filesystem of the test containers, made from busybox-static
# (no registry is reachable). SOURCE it; it only defines a function. podman.sh and
# containerd.sh package the same tree as an image, each in its runtime's way.
#
#   busybox_rootfs DIR   fill DIR with /bin/busybox and its applets, /etc/{passwd,group},
#                        the usual empty directories and /pause (the pods' infra process)

# shellcheck shell=bash
busybox_rootfs() {
  local root=${1:?busybox_rootfs DIR} a
  mkdir -p "$root"/{bin,etc,dev,proc,sys,tmp,root,run,var/tmp}
  chmod 1777 "$root/tmp" "$root/var/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for a in $("$root/bin/busybox" --list); do
    [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' \
    >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  # Infra process of `pmn pod create` (containers.conf infra_command): exits on SIGTERM,
  # unlike a bare sleep as PID 1, so pods stop at once.
  printf '#!/bin/sh\ntrap "exit 0" TERM INT\nwhile :; do sleep 3600 & wait $!; done\n' \
    >"$root/pause"
  chmod 755 "$root/pause"
}
