#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian 12 machine. Idempotent.
# qemu-system-* and qemu-utils go in one apt-get call: otherwise apt removes the newer qemu-utils.
set -euo pipefail
cd "$(dirname "$0")/.."
need_apt=()
for pair in mdadm:mdadm qemu-system-x86_64:qemu-system-x86 qemu-system-arm:qemu-system-arm \
            qemu-io:qemu-utils fio:fio nbdfuse:libnbd-bin nbdkit:nbdkit fusermount3:fuse3 \
            xz:xz-utils zstd:zstd losetup:mount mkfs.ext4:e2fsprogs \
            fsck.fat:dosfstools sha256sum:coreutils mkfs.xfs:xfsprogs mkfs.btrfs:btrfs-progs \
            sfdisk:fdisk ip:iproute2 tc:iproute2 cryptsetup:cryptsetup-bin blkid:util-linux mkswap:util-linux \
            nbd-client:nbd-client e2fsck:e2fsprogs; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
done
if ((${#need_apt[@]})); then
  # qemu-system-* must come with qemu-utils in the same transaction.
  # On a machine with a newer (backports) qemu-utils, the bookworm qemu-system packages need the
  # matching bookworm qemu-utils: ask for that release explicitly and allow the downgrade.
  case " ${need_apt[*]} " in
    *qemu-system*) need_apt=("${need_apt[@]/qemu-utils/}"); need_apt+=(qemu-utils/bookworm) ;;
  esac
  echo "setup: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --allow-downgrades ${need_apt[*]} >/dev/null
fi
rustup target list --installed | grep -qx thumbv7em-none-eabihf || rustup target add thumbv7em-none-eabihf
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
# The firmware footprint built as size-sensitive firmware is (FOOTPRINT_BUILD_STD=1
# raid1-embedded/footprint.sh) rebuilds core from source.
rustup component list --toolchain nightly --installed | grep -q '^rust-src' \
    || rustup component add rust-src --toolchain nightly
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
command -v defmt-print >/dev/null 2>&1 || cargo install defmt-print --locked
# The Linux md oracle (a Debian kernel with md raid1 under qemu) sits beside the repository.
oracle=../shared/linux-md
[ -x "$oracle/setup" ] || { echo "setup: $oracle/setup not found: the kernel interoperability tests need it" >&2; exit 1; }
"$oracle/setup" >/dev/null
# The same oracle with a Debian 12 6.12 kernel (ublk and nbd), in a cache of its own, for
# tests/block_device.rs and scripts/bench/block-devices.sh.
bash scripts/linux-guest.sh setup
echo "setup: done"
