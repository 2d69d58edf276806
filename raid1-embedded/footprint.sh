#!/usr/bin/env bash
# Footprint of the firmware example mirror_failover, built as firmware would be (opt-level "z",
# fat LTO, one codegen unit; the workspace's release profile stays as it is): `size` of the ELF
# and the code attributed to each crate by symbol name (inlining blurs the borders a little).
# The RAM figures (object sizes, stack high-water marks) are printed by the example itself
# under qemu, see run-qemu-examples.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
target=thumbv7em-none-eabihf
dir="${CARGO_TARGET_DIR:-target}/footprint"
CARGO_TARGET_DIR="$dir" CARGO_PROFILE_RELEASE_OPT_LEVEL=z CARGO_PROFILE_RELEASE_LTO=fat \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
    cargo build -q --release --locked -p raid1-embedded --target "$target" --example mirror_failover
elf="$dir/$target/release/examples/mirror_failover"
size -A "$elf" | grep -E '^(section|\.vector_table|\.text|\.rodata|\.data|\.bss) '
nm -S --size-sort -C "$elf" | python3 -c '
import sys, collections
parts = collections.Counter()
for line in sys.stdin:
    f = line.split(None, 3)
    if len(f) < 4 or f[2] not in "tTrR":
        continue
    size, name = int(f[1], 16), f[3]
    if "raid1_core" in name: key = "raid1-core (engine)"
    elif "raid1_superblock" in name: key = "raid1-superblock (md metadata)"
    elif "NorSim" in name or "SdSim" in name or "sim::" in name or "..sim.." in name or "raid1_testkit" in name: key = "simulated chips (not shipped)"
    elif "NorBlockStore" in name or "nor::" in name: key = "raid1-embedded NOR block layer"
    elif "raid1_embedded" in name: key = "raid1-embedded volume binding"
    elif "mirror_failover" in name: key = "example scenario (not shipped)"
    elif "defmt" in name or "semihosting" in name: key = "defmt + semihosting"
    else: key = "core library, runtime, vectors"
    parts[key] += size
for key, size in parts.most_common():
    print(f"{size:7d} B  {key}")
shipped = sum(v for k, v in parts.items() if k.startswith("raid1"))
print(f"{shipped:7d} B  core + binding (raid1-core, raid1-superblock, raid1-embedded)")
'
