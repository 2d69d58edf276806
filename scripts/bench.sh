#!/usr/bin/env bash
# Benchmarks of `raid1 run` side by side with its peers, in one run, on the same members.
#
#   scripts/bench.sh                                   # as root; prints the table, writes results
#   BENCH_SECONDS=10 BENCH_SIZE=1G BENCH_REPEAT=3 BENCH_KINDS="file loop" scripts/bench.sh
#
# For each repetition and each member kind (`file`: two image files on the file system that holds
# BENCH_DIR, written with dd first; `loop`: two loop devices over files in /dev/shm):
#   1. fio io_uring O_DIRECT on one member, then on both members at once (one job per member, the
#      same randseed, so both see the same offsets: the two-member raw ceiling is the slower job);
#   2. `raid1 create --assume-clean` on the two members, `raid1 run --nbd unix:SOCK`, fio's nbd engine;
#   3. `qemu-nbd --cache=none --aio=io_uring` on the first member alone, fio's nbd engine
#      (2 and 3 swap order on every other repetition);
#   4. resync: `raid1 create` without --assume-clean, time `raid1 run` until `raid1 wait` returns;
#      then a raw copy of BENCH_SIZE from one member to the other with dd O_DIRECT, at the resync's
#      block size (64 KiB, one sync window), at 1 MiB, and at 64 KiB with O_DSYNC writes (the
#      resync's writes are FUA).
# Workloads: 4k randread, 4k randwrite, 1M sequential read, 1M sequential write, all at QD32.
# Figures only: nothing here asserts a time. The ratios against the targets of docs/PERFORMANCE.md
# are computed from the medians of this run (scripts/bench/report.py).
#
# Environment:
#   BENCH_SECONDS  runtime of each fio run (default 10)
#   BENCH_SIZE     bytes of each member's working area (default 1G; K/M/G suffixes)
#   BENCH_REPEAT   repetitions, medians are reported (default 3)
#   BENCH_KINDS    member kinds to run (default "file loop")
#   BENCH_DIR      directory for the `file` members (default target/bench-members in the repository)
#   BENCH_OUT      where the results go (default target/bench): fio JSON, results.json, results.md
#   RAID1          the raid1 binary (default: built here with `cargo build --release -p raid1-cli`)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_SIZE=${BENCH_SIZE:-1G}
BENCH_REPEAT=${BENCH_REPEAT:-3}
BENCH_KINDS=${BENCH_KINDS:-file loop}
BENCH_DIR=${BENCH_DIR:-$repo/target/bench-members}
BENCH_OUT=${BENCH_OUT:-$repo/target/bench}

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 2; }

[ "$(id -u)" = 0 ] || die "run as root (loop devices)"
for tool in fio qemu-nbd losetup dd python3 numfmt; do
    command -v "$tool" >/dev/null || die "$tool is missing (scripts/setup.sh installs it)"
done
fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd engine"

size_bytes=$(numfmt --from=iec "$BENCH_SIZE") || die "BENCH_SIZE=$BENCH_SIZE is not a size"
[ $((size_bytes % 1048576)) = 0 ] || die "BENCH_SIZE must be a whole number of MiB"
size_mib=$((size_bytes / 1048576))
# The metadata (1.2: superblock, bad-block log, bitmap, then data at 2 MiB) comes on top.
member_mib=$((size_mib + 8))

if [ -z "${RAID1:-}" ]; then
    log "building raid1 (cargo build --release -p raid1-cli)"
    cargo build --release -q -p raid1-cli
    target_dir=${CARGO_TARGET_DIR:-$repo/target}
    RAID1=$target_dir/release/raid1
fi
[ -x "$RAID1" ] || die "no raid1 binary at $RAID1"

mkdir -p "$BENCH_OUT" "$BENCH_DIR"
rm -f "$BENCH_OUT"/*.json "$BENCH_OUT"/events.tsv
work=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
shm=$(mktemp -d /dev/shm/raid1-bench.XXXXXX)
export RAID1_RUN_DIR=$work/run
mkdir -p "$RAID1_RUN_DIR"
events=$BENCH_OUT/events.tsv

# ---- clean-up: servers, loop devices, member files; on exit, failure or signal ----
server_pid=""
server_kind=""
loops=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    stop_server || true
    local dev
    for dev in "${loops[@]}"; do
        losetup -d "$dev" 2>/dev/null || true
    done
    rm -rf "$work" "$shm"
    if [ "$status" != 0 ]; then log "failed (status $status); servers stopped, loop devices detached"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_server() {
    [ -n "$server_pid" ] || return 0
    if [ "$server_kind" = raid1 ]; then
        "$RAID1" stop bench >/dev/null 2>&1 || kill "$server_pid" 2>/dev/null || true
    else
        kill "$server_pid" 2>/dev/null || true
    fi
    local i
    for i in $(seq 100); do
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
    server_kind=""
}

# Wait until a unix socket accepts (the server is ready).
wait_socket() {
    local sock=$1 i
    for i in $(seq 300); do
        if [ -S "$sock" ] && python3 - "$sock" <<'EOF' 2>/dev/null; then return 0; fi
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.close()
EOF
        kill -0 "$server_pid" 2>/dev/null || die "the server exited before serving ($sock)"
        sleep 0.1
    done
    die "no server on $sock after 30 s"
}

loadavg() { cut -d' ' -f1 /proc/loadavg; }

# ---- members ----
make_members() {
    local kind=$1 a b
    case $kind in
        file)
            a=$work/member0.img
            b=$work/member1.img
            ;;
        loop)
            a=$shm/member0.img
            b=$shm/member1.img
            ;;
        *) die "unknown member kind $kind" ;;
    esac
    local f
    for f in "$a" "$b"; do
        # Written, not fallocated: unwritten extents read without I/O and give false figures.
        dd if=/dev/zero of="$f" bs=1M count="$member_mib" oflag=direct status=none 2>/dev/null ||
            dd if=/dev/zero of="$f" bs=1M count="$member_mib" status=none
    done
    if [ "$kind" = loop ]; then
        local la lb
        la=$(losetup -f --show "$a")
        loops+=("$la")
        lb=$(losetup -f --show "$b")
        loops+=("$lb")
        m0=$la
        m1=$lb
    else
        m0=$a
        m1=$b
    fi
}

drop_members() {
    local kind=$1 dev
    if [ "$kind" = loop ]; then
        for dev in "$m0" "$m1"; do
            losetup -d "$dev"
        done
        loops=()
        rm -f "$shm"/member*.img
    else
        rm -f "$work"/member*.img
    fi
}

# ---- fio ----
workloads="randread randwrite read write"
wl_bs() { case $1 in rand*) echo 4k ;; *) echo 1M ;; esac; }

fio_common() {
    local wl=$1
    echo --rw="$wl" --bs="$(wl_bs "$wl")" --iodepth=32 --runtime="$BENCH_SECONDS" --time_based \
        --size="$size_bytes" --randseed=42 --output-format=json
}

# run_fio TAG WORKLOAD ARGS...: fio's JSON goes to $BENCH_OUT/TAG.json, one line to events.tsv.
run_fio() {
    local tag=$1 wl=$2
    shift 2
    local load
    load=$(loadavg)
    # shellcheck disable=SC2046
    fio $(fio_common "$wl") "$@" --output="$BENCH_OUT/$tag.json" >/dev/null ||
        die "fio failed: $tag"
    printf 'fio\t%s\t%s\t%s\n' "$tag" "$load" "$(loadavg)" >>"$events"
}

raw_phase() {
    local rep=$1 kind=$2 wl
    for wl in $workloads; do
        log "rep $rep $kind: raw one member, $wl"
        run_fio "r$rep.$kind.raw1.$wl" "$wl" --ioengine=io_uring --direct=1 --name=m0 --filename="$m0"
        log "rep $rep $kind: raw both members, $wl"
        run_fio "r$rep.$kind.raw2.$wl" "$wl" --ioengine=io_uring --direct=1 \
            --name=m0 --filename="$m0" --name=m1 --filename="$m1"
    done
}

nbd_fio_all() {
    local rep=$1 kind=$2 target=$3 sock=$4 wl
    for wl in $workloads; do
        log "rep $rep $kind: $target over NBD, $wl"
        run_fio "r$rep.$kind.$target.$wl" "$wl" --ioengine=nbd --uri="nbd+unix:///?socket=$sock" --name=nbd
    done
}

raid1_phase() {
    local rep=$1 kind=$2 sock=$work/raid1.sock
    "$RAID1" create -l 1 -n 2 --assume-clean --force -N bench --homehost '<none>' "$m0" "$m1" \
        >/dev/null 2>"$work/create.err" || die "raid1 create: $(cat "$work/create.err")"
    "$RAID1" run --nbd "unix:$sock" --name bench "$m0" "$m1" 2>>"$BENCH_OUT/raid1-run.log" &
    server_pid=$!
    server_kind=raid1
    wait_socket "$sock"
    nbd_fio_all "$rep" "$kind" raid1 "$sock"
    stop_server
}

qemu_phase() {
    local rep=$1 kind=$2 sock=$work/qemu.sock
    rm -f "$sock"
    qemu-nbd -f raw -e 4 -t --cache=none --aio=io_uring -k "$sock" "$m0" 2>>"$BENCH_OUT/qemu-nbd.log" &
    server_pid=$!
    server_kind=qemu
    wait_socket "$sock"
    nbd_fio_all "$rep" "$kind" qemu "$sock"
    stop_server
}

now_ns() { date +%s%N; }

resync_phase() {
    local rep=$1 kind=$2 sock=$work/raid1.sock t0 t1 array_bytes load
    "$RAID1" create -l 1 -n 2 --force -N bench --homehost '<none>' --json "$m0" "$m1" \
        >"$work/create.json" 2>"$work/create.err" || die "raid1 create: $(cat "$work/create.err")"
    array_bytes=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["array_bytes"])' \
        "$work/create.json")
    log "rep $rep $kind: initial resync of $((array_bytes / 1048576)) MiB (raid1 run + raid1 wait)"
    load=$(loadavg)
    t0=$(now_ns)
    "$RAID1" run --nbd "unix:$sock" --name bench --sync-speed-max 0 "$m0" "$m1" \
        2>>"$BENCH_OUT/raid1-run.log" &
    server_pid=$!
    server_kind=raid1
    wait_socket "$sock"
    "$RAID1" wait bench >/dev/null || die "raid1 wait failed"
    t1=$(now_ns)
    printf 'resync\tr%s.%s.resync\t%s\t%s\t%s\t%s\n' "$rep" "$kind" "$load" "$(loadavg)" \
        "$array_bytes" "$((t1 - t0))" >>"$events"
    stop_server
    # The resync's writes are FUA (RWF_DSYNC), so the dsync copy is the like-for-like reference.
    local bs count oflag name
    for variant in 64 1024 64dsync; do
        bs=${variant%dsync}
        oflag=direct
        [ "$bs" = "$variant" ] || oflag=direct,dsync
        count=$((size_mib * 1024 / bs))
        log "rep $rep $kind: raw copy of $size_mib MiB, dd bs=${bs}k oflag=$oflag"
        load=$(loadavg)
        t0=$(now_ns)
        dd if="$m0" of="$m1" bs="${bs}k" count="$count" iflag=direct oflag="$oflag" conv=notrunc \
            status=none
        t1=$(now_ns)
        name=copy${bs}k${variant#"$bs"}
        printf 'copy\tr%s.%s.%s\t%s\t%s\t%s\t%s\n' "$rep" "$kind" "$name" "$load" "$(loadavg)" \
            "$size_bytes" "$((t1 - t0))" >>"$events"
    done
}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "kernel: $(uname -r)"
    echo "cpus: $(nproc) ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
    echo "memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
    echo "file members on: $(df --output=source,fstype "$BENCH_DIR" | tail -1 | tr -s ' ')"
    echo "fio: $(fio --version)"
    echo "qemu-nbd: $(qemu-nbd --version | head -1)"
    echo "raid1: $("$RAID1" --version)"
    echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "settings: BENCH_SECONDS=$BENCH_SECONDS BENCH_SIZE=$BENCH_SIZE BENCH_REPEAT=$BENCH_REPEAT BENCH_KINDS=$BENCH_KINDS"
} >"$BENCH_OUT/machine.txt"
: >"$BENCH_OUT/raid1-run.log"
: >"$BENCH_OUT/qemu-nbd.log"
printf 'start\t-\t%s\t-\n' "$(loadavg)" >"$events"

for rep in $(seq "$BENCH_REPEAT"); do
    for kind in $BENCH_KINDS; do
        make_members "$kind"
        raw_phase "$rep" "$kind"
        if [ $((rep % 2)) = 1 ]; then
            raid1_phase "$rep" "$kind"
            qemu_phase "$rep" "$kind"
        else
            qemu_phase "$rep" "$kind"
            raid1_phase "$rep" "$kind"
        fi
        resync_phase "$rep" "$kind"
        drop_members "$kind"
    done
done
printf 'end\t-\t%s\t-\n' "$(loadavg)" >>"$events"

python3 "$repo/scripts/bench/report.py" "$BENCH_OUT"
log "results: $BENCH_OUT/results.md, $BENCH_OUT/results.json (fio JSON beside them)"
