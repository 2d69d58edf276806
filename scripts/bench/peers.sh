#!/usr/bin/env bash
# raid1 run next to single-file NBD servers, in one run, on the same /dev/shm members:
#
#   scripts/bench/peers.sh          # as root; prints a markdown table and the ratios
#
# Servers: `raid1 run` on 2 members, `raid1 run --degraded-ok` on the first member alone,
# qemu-nbd (`--cache=none --aio=io_uring`) and nbdkit's file plugin (`cache=none`) on the first
# member. Each with 1 and with 4 connections (fio's nbd engine: one connection per job; 4 jobs
# at QD8 each, so the total stays QD32). Workloads: 4k randread, 4k randwrite, 1M read, 1M
# write. Also the server's CPU time (utime + stime from /proc) per GiB moved. Figures only:
# nothing here asserts a time.
#
# Environment: PEERS_SECONDS (default 5), PEERS_SIZE_MIB (default 512), RAID1 (the binary;
# default built here with `cargo build --release -p raid1-cli`), PEERS_OUT (default
# target/bench-peers: fio JSON, cpu.tsv, results.md).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
secs=${PEERS_SECONDS:-5}
mib=${PEERS_SIZE_MIB:-512}
out=${PEERS_OUT:-$repo/target/bench-peers}
if [[ -z "${RAID1:-}" ]]; then
    cargo build --release -q -p raid1-cli --manifest-path "$repo/Cargo.toml"
    RAID1=$repo/target/release/raid1
fi
for t in fio qemu-nbd nbdkit python3; do
    command -v "$t" >/dev/null || { echo "peers.sh: $t is missing" >&2; exit 2; }
done

shm=$(mktemp -d /dev/shm/raid1-peers.XXXXXX)
export RAID1_RUN_DIR=$shm/run
mkdir -p "$out" "$RAID1_RUN_DIR"
rm -f "$out"/*.json "$out"/cpu.tsv
pid=""
stop() {
    if [[ -n "$pid" ]]; then
        "$RAID1" stop peers >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=""
    fi
}
trap 'stop; rm -rf "$shm"' EXIT

# Members written once (unwritten extents would read without I/O); 8 MiB for md's metadata.
for i in 0 1; do
    dd if=/dev/zero of="$shm/m$i" bs=1M count=$((mib + 8)) status=none
done

ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }

serve_and_measure() { # NAME, then the server command (its last words)
    local name=$1
    shift
    rm -f "$shm/sock"
    "$@" &
    pid=$!
    while ! python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])" \
        "$shm/sock" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { echo "peers.sh: $name did not start" >&2; exit 2; }
        sleep 0.1
    done
    local wl bs conns t0
    for conns in 1 4; do
        for wl in randread randwrite read write; do
            case $wl in rand*) bs=4k ;; *) bs=1M ;; esac
            t0=$(ticks)
            fio --name=peers --ioengine=nbd --uri="nbd+unix:///?socket=$shm/sock" --rw="$wl" \
                --bs="$bs" --numjobs="$conns" --iodepth=$((32 / conns)) --group_reporting \
                --size=$((mib - 8))M --time_based --runtime="$secs" --randseed=42 \
                --output-format=json --output="$out/$name.c$conns.$wl.json" >/dev/null
            printf '%s\t%s\t%s\t%s\n' "$name" "$conns" "$wl" "$(($(ticks) - t0))" >>"$out/cpu.tsv"
        done
    done
    if [[ $name == raid1* ]]; then "$RAID1" stop peers >/dev/null; fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
}

"$RAID1" create -l1 -n2 --assume-clean --force -N peers -b none "$shm/m0" "$shm/m1" >/dev/null 2>&1
serve_and_measure raid1 "$RAID1" run --name peers --nbd "unix:$shm/sock" "$shm/m0" "$shm/m1"
"$RAID1" create -l1 -n2 --assume-clean --force -N peers -b none "$shm/m0" "$shm/m1" >/dev/null 2>&1
serve_and_measure raid1-1 "$RAID1" run --name peers --nbd "unix:$shm/sock" --degraded-ok "$shm/m0"
serve_and_measure qemu-nbd qemu-nbd -f raw -e 8 -t --cache=none --aio=io_uring -k "$shm/sock" "$shm/m0"
serve_and_measure nbdkit nbdkit -f -U "$shm/sock" file "$shm/m0" cache=none

python3 - "$out" "$(getconf CLK_TCK)" "$secs" <<'EOF' | tee "$out/results.md"
import json, sys
out, hz, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3]
servers = ["raid1", "raid1-1", "qemu-nbd", "nbdkit"]
wls = [("randread", "4k randread"), ("randwrite", "4k randwrite"), ("read", "1M read"), ("write", "1M write")]
cpu = {}
for line in open(f"{out}/cpu.tsv"):
    name, conns, wl, t = line.split()
    cpu[(name, int(conns), wl)] = int(t) / hz
fig = {}
for s in servers:
    for c in (1, 4):
        for wl, _ in wls:
            j = json.load(open(f"{out}/{s}.c{c}.{wl}.json"))["jobs"][0]
            side = j["read"] if "read" in wl else j["write"]
            gib = side["io_bytes"] / 2**30
            fig[(s, c, wl)] = (side["iops"], side["bw"] / 1024, cpu[(s, c, wl)] / gib if gib else None)
def cell(v, wl):
    return f"{v[0] / 1000:.1f} k" if wl.startswith("rand") else f"{v[1]:.0f}"
print(f"IOPS for 4k, MiB/s for 1M; {secs} s per run, QD32 in all (4 connections: QD8 each).\n")
print("| workload | conns | " + " | ".join(servers) + " | raid1 / best peer | raid1 / raid1-1 |")
print("|---|---:|" + "---:|" * (len(servers) + 2))
ratios = []
for wl, label in wls:
    for c in (1, 4):
        k = 0 if wl.startswith("rand") else 1
        peer = max(fig[("qemu-nbd", c, wl)][k], fig[("nbdkit", c, wl)][k])
        r_peer = fig[("raid1", c, wl)][k] / peer if peer else float("nan")
        r_deg = fig[("raid1", c, wl)][k] / fig[("raid1-1", c, wl)][k]
        ratios.append((wl, c, r_peer, r_deg))
        print(f"| {label} | {c} | " + " | ".join(cell(fig[(s, c, wl)], wl) for s in servers)
              + f" | {r_peer:.2f} | {r_deg:.2f} |")
print("\nServer CPU seconds per GiB moved:\n")
print("| workload | conns | " + " | ".join(servers) + " |")
print("|---|---:|" + "---:|" * len(servers))
for wl, label in wls:
    for c in (1, 4):
        print(f"| {label} | {c} | " + " | ".join(
            "–" if fig[(s, c, wl)][2] is None else f"{fig[(s, c, wl)][2]:.2f}" for s in servers) + " |")
goals = {"randread": 1.5, "randwrite": 1.2, "read": 1.5, "write": 1.2}
print("\nTargets (issue 11): raid1 on 2 members against the better peer; writes on 2 members against 1:\n")
print("| ratio | conns | measured | target | reached |")
print("|---|---:|---:|---:|---|")
for wl, c, r_peer, r_deg in ratios:
    print(f"| {wl} / better of qemu-nbd, nbdkit | {c} | {r_peer:.2f} | {goals[wl]} | {'yes' if r_peer >= goals[wl] else '**no**'} |")
for wl, c, r_peer, r_deg in ratios:
    if "write" in wl:
        print(f"| {wl}: 2 members / 1 member | {c} | {r_deg:.2f} | 0.9 | {'yes' if r_deg >= 0.9 else '**no**'} |")
EOF
