#!/usr/bin/env bash
# Fuzzes every parser of untrusted bytes, and raid1-embedded's NOR store (nor_model; nor_rot
# adds programmed bits lost for good; nor_zones is nor_rot on the zoned store) and whole
# mirrored volume (volume_model; volume_faults adds member faults, lost flash bits, scrubs and
# closes; volume_zones is volume_faults on a zoned flash) under random operations and power
# cuts against a model, and the async volume with its futures dropped at random polls among
# card and flash events (volume_async), for a bounded time; fails loudly on any crash.
#   FUZZ_SECONDS  seconds per target (default 30)
#   FUZZ_TARGETS  space-separated subset of targets (default: all)
#   FUZZ_JOBS     targets fuzzed at once (default: the number of cores; each target runs
#                 one single-threaded process, so on 2 cores two at once halve the wall time
#                 and keep each one's executions)
# Seeds: metadata regions cut from whatever kernel-made fixtures exist (fixtures/*/*.img.zst,
# decompressed with the zstd CLI), plus seeds written by our own serialisers. Prints the number
# of executions of each target. Inputs that once crashed a target are kept under
# fuzz/regressions/<target>/ (named for what they found): each is run alone before that target
# is fuzzed. They do not seed the corpus: libFuzzer sizes its inputs by the longest seed, and
# their length (up to 255 bytes) cut nor_model's executions in 30 s from about 40 000 to 5 000.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-30}
targets=(${FUZZ_TARGETS:-superblock bitmap badblocks roundtrip nbd nbd_client nor_model nor_rot nor_zones volume_model volume_faults volume_zones volume_async})
corpus=fuzz/corpus
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

command -v zstd >/dev/null || { echo "fuzz.sh: the zstd CLI is required" >&2; exit 1; }
cargo +nightly fuzz --help >/dev/null 2>&1 || { echo "fuzz.sh: cargo-fuzz with nightly is required (scripts/setup.sh)" >&2; exit 1; }
for t in superblock roundtrip bitmap badblocks nbd nbd_client nor_model nor_rot nor_zones volume_model volume_faults volume_zones volume_async; do mkdir -p "$corpus/$t"; done

# 1. Seeds from the serialisers.
cargo run -q --release -p raid1-superblock --example fuzz_seeds -- "$corpus"

# 2. Seeds from fixtures: superblock (4 KiB) at the 1.1, 1.2 and 1.0 locations, and the bitmap
#    and bad-block log regions its offsets point to.
cut() { # image offset_bytes length out
  dd if="$1" of="$4" bs=512 iflag=skip_bytes,count_bytes skip="$2" count="$3" status=none
}
le32s() { od -An -t d4 -j "$2" -N 4 "$1" | tr -d ' '; }
nfix=0
shopt -s nullglob
for img in fixtures/*/*.img.zst; do
  case_name=$(basename "$(dirname "$img")")-$(basename "$img" .img.zst)
  raw="$scratch/img"
  zstd -q -d -f "$img" -o "$raw"
  size=$(stat -c %s "$raw")
  sectors=$((size / 512))
  (( sectors >= 24 )) || continue
  for so in 0 8 $(( (sectors - 16) & ~7 )); do
    sb="$scratch/sb"
    cut "$raw" $((so * 512)) 4096 "$sb"
    # Keep only locations holding the md magic (fc 4e 2b a9).
    [[ $(od -An -t x1 -N 4 "$sb" | tr -d ' ') == fc4e2ba9 ]] || continue
    cp "$sb" "$corpus/superblock/fixture-$case_name-$so"
    cp "$sb" "$corpus/roundtrip/fixture-$case_name-$so"
    nfix=$((nfix + 1))
    bmo=$(le32s "$sb" 96)
    if (( bmo != 0 )); then
      cut "$raw" $(((so + bmo) * 512)) 8192 "$corpus/bitmap/fixture-$case_name-$so"
    fi
    bbo=$(le32s "$sb" 188)
    if (( bbo != 0 )); then
      cut "$raw" $(((so + bbo) * 512)) 4096 "$corpus/badblocks/fixture-$case_name-$so"
    fi
  done
  rm -f "$raw"
done
# 3. A valid NBD client session for the nbd target: limits (12 bytes), client flags, NBD_OPT_GO
#    for export "" asking for block-size info, NBD_OPT_EXPORT_NAME, then a read, a write with its
#    payload, a flush and a disconnect.
python3 - "$corpus/nbd/session" <<'PY'
import struct, sys
s = struct.pack("<QI", 1 << 30, 1 << 25)[:12]
s += struct.pack(">I", 3)
go = struct.pack(">I", 0) + struct.pack(">HH", 1, 3)
s += struct.pack(">QII", 0x49484156454F5054, 7, len(go)) + go
s += struct.pack(">QII", 0x49484156454F5054, 1, 0)
req = lambda flags, kind, off, ln: struct.pack(">IHHQQI", 0x25609513, flags, kind, 7, off, ln)
s += req(0, 0, 4096, 4096) + req(1, 1, 0, 512) + b"\xab" * 512 + req(0, 3, 0, 0) + req(0, 2, 0, 0)
open(sys.argv[1], "wb").write(s)
PY
# 4. A NOR session for nor_model (pairs of operation and argument after a seed byte; see
#    fuzz/fuzz_targets/nor_model.rs): writes to a few blocks, a power cut 5 operations ahead, more
#    writes, a dropped program, writes, read flips every 7th read, a remount.
printf '\x07\x00\x01\x00\x02\x01\x03\x09\x05\x00\x04\x00\x05\x0b\x01\x00\x06\x00\x07\x0d\x02\x0e\x00\x00\x08' \
  >"$corpus/nor_model/session"
# 4b. The same session for nor_rot (fuzz/fuzz_targets/nor_rot.rs), with two bits lost: one in
#     a sector's metadata (operation 0x18), one anywhere (0x08), before the remount.
printf '\x07\x00\x01\x00\x02\x01\x03\x09\x05\x00\x04\x00\x05\x0b\x01\x18\x21\x08\x44\x0e\x00\x00\x08\x0f\x00' \
  >"$corpus/nor_rot/session"
# 4c. A session for nor_zones (fuzz/fuzz_targets/nor_zones.rs): writes to both zones, a bit
#     lost in a sector's metadata, writes, every block read without a remount (0x0f with the
#     argument's top bit), two more bits lost, a read of every block again, a remount.
printf '\x07\x00\x01\x00\x16\x00\x02\x18\x21\x00\x17\x0f\x80\x08\x44\x18\x07\x0f\x81\x00\x03\x0f\x00' \
  >"$corpus/nor_zones/session"
# 5. A volume session for volume_model (pairs of operation and argument after a seed byte; see
#    fuzz/fuzz_targets/volume_model.rs): writes, a tick, the card pulled, writes, the card back
#    and recovery steps, a NOR power cut 9 operations ahead, writes, a read.
printf '\x05\x00\x03\x01\x11\x04\x20\x09\x02\x0a\x00\x02\x07\x06\x30\x0b\x00\x0c\x03\x0d\x09\x00\x02\x01\x05\x08\x02' \
  >"$corpus/volume_model/session"
# 6. A session for volume_faults (fuzz/fuzz_targets/volume_faults.rs, after a seed byte that
#    turns on unstable and out-of-order tears): writes, a card read that fails in a read, a NOR
#    program that fails in a write, writes, the NOR member brought back and its recovery
#    stepped, a flash bit lost, a repair scrub, a close and open, writes, a read.
printf '\x03\x00\x05\x01\x11\x13\x21\x15\x02\x02\x30\x18\x00\x0f\x07\x19\x55\x1a\x03\x1c\x00\x04\x12\x0a\x12' \
  >"$corpus/volume_faults/session"
# 6b. The same session for volume_zones (fuzz/fuzz_targets/volume_zones.rs: volume_faults's
#     operations on a zoned flash).
cp "$corpus/volume_faults/session" "$corpus/volume_zones/session"
# 6c. A session for volume_async (fuzz/fuzz_targets/volume_async.rs, after a seed byte for a
#     card driver that must be reset at an insertion): writes, one dropped; a read; a step
#     dropped; the card pulled and reported; a write; the card put back, its insertion dropped;
#     a read; the sync to its end; a restart after a close; a read.
printf '\x01\x00\x05\x01\x90\x08\x03\x0a\x85\x0d\x00\x02\x11\x0e\x88\x09\x07\x15\x00\x16\x01\x08\x20' \
  >"$corpus/volume_async/session"
echo "fuzz.sh: $nfix superblock seeds from fixtures; ${seconds}s per target"

# 7. Fuzz: the targets built first (all in one cargo build, which uses every core; only those
#    of FUZZ_TARGETS when it is set), then FUZZ_JOBS targets at a time, each replaying its kept
#    regression inputs before it is fuzzed.
jobs=${FUZZ_JOBS:-$(nproc)}
if [[ -n ${FUZZ_TARGETS:-} ]]; then build=("${targets[@]}"); else build=(""); fi
for t in "${build[@]}"; do
  if ! cargo +nightly fuzz build $t >"$scratch/build.log" 2>&1; then
    tail -60 "$scratch/build.log" >&2
    echo "fuzz.sh: ${t:-every target}: the fuzz target does not build" >&2
    exit 1
  fi
done
# One target: its verdict in $scratch/<target>.verdict ("ok <execs>" or why it failed), its
# output in $scratch/<target>.log.
fuzz_one() {
  local t=$1 log="$scratch/$1.log" verdict="$scratch/$1.verdict"
  local regressions=(fuzz/regressions/"$t"/*)
  if ((${#regressions[@]})); then
    if ! cargo +nightly fuzz run "$t" "${regressions[@]}" >"$log" 2>&1; then
      echo "target $t fails again on a kept regression input (fuzz/regressions/$t)" >"$verdict"
      return 1
    fi
    echo "$t: ${#regressions[@]} regression input(s) pass" >"$scratch/$t.regressions"
  fi
  if ! cargo +nightly fuzz run "$t" "$corpus/$t" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    echo "target $t FAILED (crash or build error); artifacts under fuzz/artifacts/$t" >"$verdict"
    return 1
  fi
  local n
  n=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
  if [[ -z $n ]]; then
    echo "no exec count for $t" >"$verdict"
    return 1
  fi
  echo "ok $n" >"$verdict"
}
for t in "${targets[@]}"; do
  while (($(jobs -rp | wc -l) >= jobs)); do wait -n || true; done
  echo "==== fuzz $t"
  fuzz_one "$t" &
done
wait || true
declare -A execs
failed=0
for t in "${targets[@]}"; do
  [[ -f $scratch/$t.regressions ]] && cat "$scratch/$t.regressions"
  verdict=$(cat "$scratch/$t.verdict" 2>/dev/null || echo "target $t left no verdict")
  if [[ $verdict == ok\ * ]]; then
    execs[$t]=${verdict#ok }
    echo "$t: ${execs[$t]} executions in ${seconds}s"
  else
    tail -60 "$scratch/$t.log" >&2 || true
    echo "fuzz.sh: $verdict" >&2
    failed=1
  fi
done
((failed == 0)) || exit 1
echo "==== fuzz summary"
for t in "${targets[@]}"; do printf '%-12s %12s execs\n' "$t" "${execs[$t]}"; done
