#!/usr/bin/env bash
# Instructions the engine executes per logical request, counted by callgrind: a figure that,
# unlike criterion's nanoseconds, does not move with the machine's load.
#
#   scripts/bench/core-instructions.sh     # prints one line per case
#
# Runs raid1-core's `requests` benchmark binary outside criterion (RAID1_CORE_CASE /
# RAID1_CORE_ROUNDS, see raid1-core/benches/requests.rs) twice per case, with N and 2N rounds,
# and divides the difference in instructions by N × depth: set-up and the one write that
# dirties the array cancel out. Needs valgrind.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
command -v valgrind >/dev/null || { echo "core-instructions.sh: valgrind is missing" >&2; exit 2; }
bin=$(cargo bench -q -p raid1-core --bench requests --no-run --message-format=json \
    --manifest-path "$repo/Cargo.toml" 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="requests" and m.get("executable"):
        print(m["executable"])')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
count() { # case rounds -> instructions
    RAID1_CORE_CASE=$1 RAID1_CORE_ROUNDS=$2 valgrind --tool=callgrind \
        --callgrind-out-file="$work/out" "$bin" >/dev/null 2>"$work/err" || {
        cat "$work/err" >&2
        exit 1
    }
    sed -n 's/^summary: //p' "$work/out"
}
printf '%-16s %12s\n' case instr/request
for members in 2 3; do
    for op in read write; do
        for depth in 1 32; do
            n=$((64000 / depth))
            a=$(count "$members-$op-$depth" "$n")
            b=$(count "$members-$op-$depth" $((2 * n)))
            printf '%-16s %12d\n' "$members-$op-qd$depth" $(((b - a) / (n * depth)))
        done
    done
done
