#!/usr/bin/env bash
# The array as a block device, in the ublk guest (scripts/linux-guest.sh: a Debian 12 6.12
# kernel under qemu), one run:
#
#   scripts/bench/block-devices.sh      # as root; prints a markdown table and the ratios
#
# Targets, each a block device in the guest measured with the same fio jobs (io_uring,
# O_DIRECT, QD32, one job): /dev/ublkb0 served by `raid1 run --ublk` (2 members), /dev/nbd0
# through nbd-client on the same raid1's NBD export (the same process serves both), and
# /dev/nbd1 through nbd-client on qemu-nbd (`--cache=none --aio=io_uring`) serving a third
# disk alone. Workloads: 1M write, 1M read, 4k randwrite, 4k randread. The guest is emulated
# (TCG when the host has no usable KVM): only the ratios mean anything.
#
# Environment: BENCH_SECONDS (default 5), BENCH_SIZE_MIB (default 256, each disk),
# BENCH_QUEUES (default 1: `raid1 run --queues`), BENCH_OUT (default target/bench-block: the
# guest's output, fio terse lines, results.md).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
secs=${BENCH_SECONDS:-5}
mib=${BENCH_SIZE_MIB:-256}
queues=${BENCH_QUEUES:-1}
out=${BENCH_OUT:-$repo/target/bench-block}
mkdir -p "$out"
bash "$repo/scripts/linux-guest.sh" setup
CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release -q -p raid1-cli --target x86_64-unknown-linux-gnu --manifest-path "$repo/Cargo.toml"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/share"
cp "$repo/target/x86_64-unknown-linux-gnu/release/raid1" "$work/share/"
bash "$repo/scripts/linux-guest.sh" tools "$work/share/tools" fio nbd-client qemu-nbd
for d in a b c; do truncate -s "${mib}M" "$work/$d.img"; done
cat >"$work/script.sh" <<GUEST
export PATH=/mnt/host/tools/bin:/mnt/host:\$PATH RAID1_RUN_DIR=/run/raid1
modprobe -a ublk_drv nbd
raid1 create --level 1 --raid-devices 2 --name b --assume-clean /dev/vda /dev/vdb >/dev/null 2>&1
raid1 run --daemon --ublk --ublk-id 0 --queues $queues /dev/vda /dev/vdb >/dev/null
nbd-client -unix /run/raid1/b.nbd /dev/nbd0 -N b -b 4096 -t 30 >/dev/null
qemu-nbd -f raw -t -e 4 -x q --cache=none --aio=io_uring -k /tmp/q.sock /dev/vdc &
while [ ! -S /tmp/q.sock ]; do sleep 0.1; done
nbd-client -unix /tmp/q.sock /dev/nbd1 -N q -b 4096 -t 30 >/dev/null
for w in "write 1M" "read 1M" "randwrite 4k" "randread 4k"; do
  set -- \$w
  for dev in ublkb0 nbd0 nbd1; do
    line=\$(fio --name=\$1-\$2 --filename=/dev/\$dev --ioengine=io_uring --direct=1 --iodepth=32 \
      --rw=\$1 --bs=\$2 --time_based --runtime=$secs --numjobs=1 --minimal 2>&1 | tail -1)
    echo "BENCH \$dev \$1-\$2 \$line"
  done
done
nbd-client -d /dev/nbd0 >/dev/null; nbd-client -d /dev/nbd1 >/dev/null
raid1 stop b
GUEST
t0=$(date +%s)
bash "$repo/scripts/linux-guest.sh" run --smp 2 --mem 1024 --timeout 900 --share "$work/share" \
  "$work/a.img" "$work/b.img" "$work/c.img" -- "$work/script.sh" | tee "$out/guest.log" | grep '^BENCH' >"$out/fio.txt"
echo "guest run: $(( $(date +%s) - t0 )) s"
# terse v3: field 7/8 read KiB/s and IOPS, 48/49 write KiB/s and IOPS (after "BENCH dev job")
python3 - "$out/fio.txt" "$secs" "$queues" <<'PY' | tee "$out/results.md"
import sys
rows = {}
for l in open(sys.argv[1]):
    p = l.split()
    dev, job, f = p[1], p[2], p[3].split(';')
    rd = job.startswith(('read', 'randread'))
    kib, iops = (float(f[6]), float(f[7])) if rd else (float(f[47]), float(f[48]))
    big = job.endswith('1M')
    rows.setdefault(job, {})[dev] = kib / 1024 if big else iops / 1000
print(f"fio, {sys.argv[2]} s per run, io_uring O_DIRECT QD32, one job; ublk queues: {sys.argv[3]}\n")
print("| workload | ublk (raid1) | nbd (raid1) | nbd (qemu-nbd) | ublk / nbd raid1 | ublk / qemu-nbd | nbd raid1 / qemu-nbd |")
print("|---|---:|---:|---:|---:|---:|---:|")
for job, r in rows.items():
    u, n, q = r.get('ublkb0', 0), r.get('nbd0', 0), r.get('nbd1', 0)
    unit = 'MiB/s' if job.endswith('1M') else 'k IOPS'
    ratio = lambda a, b: f"{a / b:.2f}" if b else "-"
    print(f"| {job} ({unit}) | {u:.1f} | {n:.1f} | {q:.1f} | {ratio(u, n)} | {ratio(u, q)} | {ratio(n, q)} |")
PY
