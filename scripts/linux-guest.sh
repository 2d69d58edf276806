#!/usr/bin/env bash
# A Linux guest with ublk and NBD for raid1's block-device tests and benchmarks: the linux-md
# oracle (../shared/linux-md beside the repository) built with a Debian 12 6.12 kernel (Debian 12's
# own 6.1 kernel has nbd.ko but no ublk), in a cache of its own so the default oracle is untouched.
#
#   linux-guest.sh setup               build (or check) the guest; prints nothing else on success
#   linux-guest.sh tools DIR TOOL...   copies host programs (with their libraries and loader) into
#                                      DIR/bin as wrappers runnable in the guest's busybox shell
#   linux-guest.sh run ARGS...         the oracle's run with this guest
#
# Env: RAID1_GUEST_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/linux-md-oracle-ublk),
#      RAID1_GUEST_KERNEL (a linux-image-...-unsigned package; default: the newest 6.12 one).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
oracle=$here/../../shared/linux-md
export LINUX_MD_CACHE=${RAID1_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/linux-md-oracle-ublk}
# Debian's 6.12 modules are xz-compressed: the oracle keys them by file name, so they are named
# with their suffix here (busybox modprobe in the guest loads them by module name).
export LINUX_MD_MODULES="virtio_blk.ko.xz md-mod.ko.xz raid1.ko.xz 9p.ko.xz 9pnet_virtio.ko.xz
  loop.ko.xz ext4.ko.xz crc32c_generic.ko.xz crc32c-intel.ko.xz ublk_drv.ko.xz nbd.ko.xz"

kernel_pkg() {
  local p
  p=$(apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$' 2>/dev/null |
    awk '{print $1}' | sort -V | tail -1)
  if [[ -z $p ]]; then
    apt-get update -qq >/dev/null
    p=$(apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$' |
      awk '{print $1}' | sort -V | tail -1)
  fi
  [[ -n $p ]] || { echo "linux-guest: no linux-image-6.12.*+deb12-amd64-unsigned package in the archive" >&2; exit 1; }
  echo "$p"
}

case ${1:-} in
  setup)
    [[ -x $oracle/setup ]] || { echo "linux-guest: the linux-md oracle is missing at $oracle" >&2; exit 1; }
    if [[ -z ${RAID1_GUEST_KERNEL:-} && -f $LINUX_MD_CACHE/kernel-pkg ]]; then
      RAID1_GUEST_KERNEL=$(<"$LINUX_MD_CACHE/kernel-pkg")
    fi
    export LINUX_MD_KERNEL_PKG=${RAID1_GUEST_KERNEL:-$(kernel_pkg)}
    "$oracle/setup" >/dev/null
    echo "$LINUX_MD_KERNEL_PKG" >"$LINUX_MD_CACHE/kernel-pkg"
    ;;
  tools)
    dir=$2; shift 2
    mkdir -p "$dir/bin" "$dir/lib" "$dir/libexec"
    for t in "$@"; do
      p=$(command -v "$t") || { echo "linux-guest: $t is not installed (scripts/setup.sh installs it)" >&2; exit 1; }
      cp -L "$p" "$dir/libexec/$t"
      for l in $(ldd "$p" | grep -o '/[^ ]*'); do cp -Ln "$l" "$dir/lib/" 2>/dev/null || true; done
      printf '#!/bin/sh\nd=/mnt/host/%s\nexec "$d/lib/ld-linux-x86-64.so.2" --library-path "$d/lib" "$d/libexec/%s" "$@"\n' \
        "${dir##*/}" "$t" >"$dir/bin/$t"
      chmod +x "$dir/bin/$t"
    done
    ;;
  run)
    shift
    export LINUX_MD_KERNEL_PKG=$(<"$LINUX_MD_CACHE/kernel-pkg")
    exec "$oracle/run" "$@"
    ;;
  *)
    sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
