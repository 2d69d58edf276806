#!/usr/bin/env bash
# How fast the simulator catches each planted bug that its swarm catches: the simulator built
# once with every planted bug (raid1-core's `planted-bugs`, in the target directory
# `tests/bites.rs` uses), then, for each bug switched on by name (RAID1_PLANTED_BUG), SEEDS
# seeds (2,000 unless set) from seed 0. Prints, per bug, the seeds with a violation, which
# oracle or invariant reported each seed's first one, and how many of the first 20 seeds were
# caught. The table in docs/SIM.md ("Planted bugs: how fast they are caught") records the
# figures.
#
#   bash raid1-sim/catch-rates.sh [bug...]     (default: every bug in the list below)
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${SEEDS:-2000}
bugs=("$@")
if [[ ${#bugs[@]} == 0 ]]; then
    bugs=(ack-before-bitmap clear-bit-in-flight skip-failure-record early-ack freeze-no-drain
        ignore-bad-blocks log-before-made-good-flush write-while-read-only failfast-ignored
        resize-no-resync write-before-sync-bits read-from-failed read-during-fix fix-own-source
        write-back-unrecorded first-skips-rebuilt lost-unrecorded lost-wide rebuilt-sb-last)
fi
dir="${CARGO_TARGET_DIR:-target}/planted-bugs"
cargo build -q --release --locked -p raid1-sim --features raid1-core/planted-bugs --target-dir "$dir"
for bug in "${bugs[@]}"; do
    out=$(RAID1_PLANTED_BUG="$bug" "$dir/release/raid1-sim" --seeds "$seeds" 2>&1 || true)
    # A run that did not reach its summary (a name that is no bug's stops it) measured nothing.
    grep -q '^seeds: ' <<<"$out" || { printf '%s: the run did not finish\n%s\n' "$bug" "$out" >&2; exit 1; }
    caught=$(grep -c '^seed [0-9]*: violation' <<<"$out" || true)
    first20=$( (grep -E '^seed [0-9]+: violation' <<<"$out" || true) | awk '$2+0 < 20' | wc -l)
    by=$( (grep -oE '^seed [0-9]+: violation at step [0-9]+: (\([a-z]+\)|[a-z-]+)' <<<"$out" || true) |
        awk '{print $NF}' | sort | uniq -c | sort -rn | awk '{printf "%s%s %s", sep, $2, $1; sep=", "}')
    printf '%-32s %5s of %s  first 20: %2s  by: %s\n' "$bug" "$caught" "$seeds" "$first20" "${by:-}"
done
