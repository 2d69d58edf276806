#!/usr/bin/env bash
# Do two mirrors serve more random reads than one when the members are the bottleneck?
#
#   scripts/bench/read-balance.sh        # as root (FUSE); prints IOPS of 2 members, of 1, the ratio
#
# Each member is an image file served by nbdkit with one thread and the delay filter (every
# read waits RB_DELAY), presented to raid1 as a file by nbdfuse: a device that serves one
# request at a time. fio's nbd engine reads 4 KiB at random at QD32 from `raid1 run` on both
# members, then from `raid1 run --degraded-ok` on the first one alone. raid1-core's read
# balance (md's choose_best_rdev: fewest pending, sequential affinity first) should keep both
# members busy: about twice the reads of one. Figures only; nothing here asserts a time.
#
# Environment: RB_DELAY (default 2ms), RB_SECONDS (default 10), RAID1 (the binary; default
# built here with `cargo build --release -p raid1-cli`).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
delay=${RB_DELAY:-2ms}
secs=${RB_SECONDS:-10}
if [[ -z "${RAID1:-}" ]]; then
    cargo build --release -q -p raid1-cli --manifest-path "$repo/Cargo.toml"
    RAID1=$repo/target/release/raid1
fi
for t in nbdkit nbdfuse fio fusermount3; do
    command -v "$t" >/dev/null || { echo "read-balance.sh: $t is missing" >&2; exit 2; }
done

work=$(mktemp -d)
export RAID1_RUN_DIR=$work/run
pids=()
cleanup() {
    "$RAID1" stop rb >/dev/null 2>&1 || true
    for m in "$work"/fuse*; do fusermount3 -u "$m" 2>/dev/null || true; done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Two 64 MiB members, created as a clean 2-mirror array, then each behind nbdkit + nbdfuse.
for i in 0 1; do truncate -s 64M "$work/m$i"; done
"$RAID1" create -l1 -n2 --assume-clean -N rb -b none "$work/m0" "$work/m1" >/dev/null
for i in 0 1; do
    nbdkit -f --exit-with-parent -t 1 -U "$work/s$i" --filter=delay file "$work/m$i" \
        rdelay="$delay" >/dev/null 2>&1 &
    pids+=($!)
    while [[ ! -S "$work/s$i" ]]; do sleep 0.05; done
    mkdir -p "$work/fuse$i"
    nbdfuse "$work/fuse$i/disk" "nbd+unix:///?socket=$work/s$i" 2>/dev/null &
    pids+=($!)
    while [[ "$(stat -c %s "$work/fuse$i/disk" 2>/dev/null || echo 0)" != $((64 << 20)) ]]; do
        sleep 0.05
    done
done

iops() { # the array's members...
    "$RAID1" run --name rb --nbd "unix:$work/rb.nbd" --daemon "$@" >/dev/null
    fio --name=rb --ioengine=nbd --uri="nbd+unix:///?socket=$work/rb.nbd" --rw=randread \
        --bs=4k --iodepth=32 --size=60M --time_based --runtime="$secs" \
        --output-format=json --output="$work/fio.json" >/dev/null
    "$RAID1" stop rb >/dev/null
    python3 -c "import json; print(round(json.load(open('$work/fio.json'))['jobs'][0]['read']['iops']))"
}

two=$(iops "$work/fuse0/disk" "$work/fuse1/disk")
one=$(iops --degraded-ok "$work/fuse0/disk")
echo "4k randread QD32, members serving one request at a time, $delay per read, ${secs} s:"
echo "  2 members: $two IOPS"
echo "  1 member:  $one IOPS"
python3 -c "print(f'  ratio: {$two / max($one, 1):.2f}x (target >= 1.8x)')"
