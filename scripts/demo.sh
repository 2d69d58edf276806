#!/usr/bin/env bash
# The main job on a default: two image files become an md RAID1 mirror, served as a block device
# (/dev/ublkbN where the kernel has ublk; else over NBD, through nbdfuse and a loop device), with
# an ext4 filesystem on it; it says which it used. Then a member fails, a new one is added and rebuilt
# while the filesystem stays mounted, and everything is checked: files, fsck, and mdadm's view
# of the members. Run as root on Debian 12 (it installs the few packages it needs).
#   RAID1_DEMO_DIR   where the images go (default: target/demo), kept afterwards for a look
#   RAID1_DEMO_SIZE  size of each member image (default: 256M)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${RAID1_DEMO_DIR:-target/demo}
size=${RAID1_DEMO_SIZE:-256M}

need=()
for pair in mdadm:mdadm nbdfuse:libnbd-bin fusermount3:fuse3 qemu-io:qemu-utils mkfs.ext4:e2fsprogs losetup:mount; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if ((${#need[@]})); then
  echo "demo: installing ${need[*]}"
  apt-get -o DPkg::Lock::Timeout=300 update -qq && apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -q -p raid1-cli
raid1=$(cargo metadata --format-version 1 --no-deps | sed 's/.*"target_directory":"\([^"]*\)".*/\1/')/release/raid1

mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
export RAID1_RUN_DIR=$dir/run
mnt=$dir/mnt; fuse=$dir/fuse; loop=""
cleanup() {
  set +e
  mountpoint -q "$mnt" && umount "$mnt"
  [ -n "$loop" ] && losetup -d "$loop"
  mountpoint -q "$fuse/array" && fusermount3 -u "$fuse/array"
  [ -S "$RAID1_RUN_DIR/demo.sock" ] && "$raid1" stop demo >/dev/null 2>&1
}
trap cleanup EXIT
cleanup
rm -f "$dir"/{a,b,c}.img
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { say "$*"; "$@"; }

truncate -s "$size" "$dir/a.img" "$dir/b.img" "$dir/c.img"
cd "$dir"
run "$raid1" create --level 1 --raid-devices 2 --name demo a.img b.img

# ublk (Linux 6.0 and later, module ublk_drv) gives the block device directly; without it the
# NBD export becomes one through nbdfuse and a loop device.
ublk=
if [ "$(id -u)" = 0 ]; then
  [ -e /dev/ublk-control ] || modprobe ublk_drv 2>/dev/null || true
  [ -e /dev/ublk-control ] && ublk=1
fi
if [ -n "$ublk" ]; then
  echo "demo: this kernel has ublk: the array is served as /dev/ublkbN (and over NBD)"
  run "$raid1" run --daemon --ublk a.img b.img
else
  echo "demo: no ublk here (/dev/ublk-control missing, or not root): the array is served over NBD"
  run "$raid1" run --daemon a.img b.img
fi
run "$raid1" wait demo
run "$raid1" status

if [ -n "$ublk" ] || { [ -e /dev/fuse ] && [ "$(id -u)" = 0 ]; }; then
  mkdir -p "$fuse" "$mnt"
  if [ -n "$ublk" ]; then
    loop=""
    dev=$("$raid1" detail --json demo | sed 's/.*"ublk":"\([^"]*\)".*/\1/')
    echo "demo: the block device is $dev"
  else
    say "nbdfuse $fuse/array nbd+unix:///?socket=$RAID1_RUN_DIR/demo.nbd &   # the array as a file"
    touch "$fuse/array" 2>/dev/null || true
    nbdfuse "$fuse/array" "nbd+unix:///?socket=$RAID1_RUN_DIR/demo.nbd" &
    for _ in $(seq 100); do [ -s "$fuse/array" ] && break; sleep 0.1; done
    loop=$(losetup -f --show --direct-io=on "$fuse/array")
    dev=$loop
    echo "demo: the block device is $dev (a loop device over nbdfuse's file)"
  fi
  run mkfs.ext4 -q -F "$dev"
  run mount "$dev" "$mnt"
  say "write 64 files of 1 MiB"
  for i in $(seq 64); do head -c 1M /dev/urandom > "$mnt/file$i"; done
  (cd "$mnt" && sha256sum file* > "$dir/files.sha256"); sync
  run "$raid1" fail demo b.img
  run "$raid1" remove demo b.img
  say "write 16 more files on the degraded mirror"
  for i in $(seq 65 80); do head -c 1M /dev/urandom > "$mnt/file$i"; done
  (cd "$mnt" && sha256sum file* > "$dir/files.sha256"); sync
  run "$raid1" add demo c.img
  run "$raid1" wait demo
  run "$raid1" detail demo
  say "check every file, then fsck"
  (cd "$mnt" && sha256sum --quiet -c "$dir/files.sha256") && echo "80 files intact"
  umount "$mnt"; run e2fsck -fn "$dev"
  if [ -z "$ublk" ]; then
    losetup -d "$loop"; loop=""
    fusermount3 -u "$fuse/array"; wait
  fi
else
  echo "demo: no /dev/fuse or not root: writing through qemu-io instead of a filesystem"
  run qemu-io -f raw "nbd+unix:///?socket=$RAID1_RUN_DIR/demo.nbd" -c "write -P 0xab 0 16M"
  run "$raid1" fail demo b.img
  run "$raid1" remove demo b.img
  run "$raid1" add demo c.img
  run "$raid1" wait demo
  run qemu-io -f raw "nbd+unix:///?socket=$RAID1_RUN_DIR/demo.nbd" -c "read -P 0xab 0 16M"
fi
run "$raid1" stop demo
say "mdadm --examine a.img c.img | grep -E 'State|Events|Device Role|Array State'"
mdadm --examine a.img c.img | grep -E '^[^ ]|State|Events|Device Role|Array State'
say "cmp: the two in-sync members hold the same data"
off=$(mdadm --examine a.img | sed -n 's/.*Data Offset : \([0-9]*\) sectors/\1/p')
cmp <(tail -c +$((off * 512 + 1)) a.img) <(tail -c +$((off * 512 + 1)) c.img) && echo "a.img and c.img are identical over the data area"
echo; echo "demo: done; the images are in $dir"
