#!/usr/bin/env bash
# Footprint of the firmware examples, built as firmware would be (opt-level "z", fat LTO, one
# codegen unit; the workspace's release profile stays as it is): `size` of the ELF and its
# flash attributed to each part.
#
# The measured firmware is sd_firmware: a device whose volume was made at the factory, built
# without the `format` feature, over embedded-sdmmc's SPI `SdCard` driver (talking to an SD card
# emulated at the wire level) and the NOR block store (over the simulated chip). mirror_failover
# (which formats its volume, over simulated block devices) follows, as the figure earlier
# measurements were taken on.
#
# Code (.text) is attributed through the line tables of the debug information (the release
# profile keeps them; they do not change the code): each 2-byte unit of code goes to the
# innermost inlined frame that lies in a crate of this workspace, in the example or in the
# card driver, so code of the engine inlined into the binding counts for the engine, and code
# of the simulated or emulated chips inlined into the binding counts for the chips. Code with
# no such frame (the core library, compiler builtins, the runtime) stays in its own line.
# Read-only data (.rodata) and the vector table have no line tables: they are attributed by
# symbol name, and what has no symbol is a line of its own. The lines add up to the flash size.
#
# The RAM figures (object sizes, stack high-water marks) are printed by the examples
# themselves under qemu, see run-qemu-examples.sh.
#
# FOOTPRINT_BUILD_STD=1 builds the core library from source with the immediate-abort panic
# strategy (nightly toolchain with rust-src), as size-sensitive firmware may be built: a panic
# is a trap instruction, without its message, location or formatting code.
set -euo pipefail
cd "$(dirname "$0")/.."
target=thumbv7em-none-eabihf
dir="${CARGO_TARGET_DIR:-target}/footprint"
cargo=(cargo)
if [[ ${FOOTPRINT_BUILD_STD:-0} == 1 ]]; then
    dir="$dir-build-std"
    cargo=(cargo +nightly -Z build-std=core)
    export RUSTFLAGS="-Zunstable-options -Cpanic=immediate-abort"
fi

measure() {
    local example=$1
    shift
    CARGO_TARGET_DIR="$dir" CARGO_PROFILE_RELEASE_OPT_LEVEL=z CARGO_PROFILE_RELEASE_LTO=fat \
        CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
        "${cargo[@]}" build -q --release --locked -p raid1-embedded --target "$target" \
        --example "$example" "$@"
    local elf="$dir/$target/release/examples/$example"
    echo "== $example ($*)"
    size -A "$elf" | grep -E '^(section|\.vector_table|\.text|\.rodata|\.data|\.bss) '
    attribute "$elf" "$example"
}

attribute() {
python3 - "$1" "$PWD" "$2" <<'PY'
import collections, os, subprocess, sys

elf, root, example = sys.argv[1], sys.argv[2], sys.argv[3]
ENGINE, MD = "raid1-core (engine)", "raid1-superblock (md metadata)"
NOR, BINDING = "raid1-embedded NOR block layer", "raid1-embedded volume binding"
SIM, EXAMPLE = "simulated chips (not shipped)", "example scenario (not shipped)"
LOG, REST = "defmt + semihosting", "core library, runtime, vectors"
CARD = "emulated SPI SD card (not shipped)"
DRIVER = "embedded-sdmmc SdCard driver (shipped, not core + binding)"


def by_path(path):
    """The part a source file belongs to, None for files outside the workspace's crates."""
    rel = os.path.relpath(os.path.join(root, path), root)
    if rel.startswith("raid1-core/"):
        return ENGINE
    if rel.startswith("raid1-superblock/"):
        return MD
    if rel.startswith("raid1-embedded/src/nor") or rel == "raid1-embedded/src/crc.rs":
        return NOR
    if rel == "raid1-embedded/src/sim.rs" or rel.startswith("raid1-testkit/"):
        return SIM
    if rel.startswith("raid1-embedded/src/"):
        return BINDING
    if rel.startswith("raid1-embedded/examples/spi_sd/"):
        return CARD
    if rel.startswith("raid1-embedded/examples/"):
        return EXAMPLE
    if "/embedded-sdmmc-" in path:
        return DRIVER
    if "defmt" in rel or "semihosting" in rel:
        return LOG
    return None


def by_name(name):
    if "raid1_core" in name:
        return ENGINE
    if "raid1_superblock" in name:
        return MD
    if any(s in name for s in ("NorSim", "SdSim", "sim::", "..sim..", "raid1_testkit")):
        return SIM
    if "NorBlockStore" in name or "nor::" in name:
        return NOR
    if "raid1_embedded" in name:
        return BINDING
    if "spi_sd" in name:
        return CARD
    if example in name:
        return EXAMPLE
    if "embedded_sdmmc" in name:
        return DRIVER
    if "defmt" in name or "semihosting" in name:
        return LOG
    return REST


sections = {}
for line in subprocess.run(["size", "-A", elf], capture_output=True, text=True, check=True).stdout.splitlines():
    f = line.split()
    if len(f) == 3 and f[0].startswith("."):
        sections[f[0]] = (int(f[2]), int(f[1]))
parts = collections.Counter()
start, length = sections[".text"]
query = "".join(f"0x{a:x}\n" for a in range(start, start + length, 2))
frames = subprocess.run(["llvm-symbolizer", "--obj=" + elf], input=query,
                        capture_output=True, text=True, check=True).stdout
units = 0
for block in frames.split("\n\n"):
    lines = block.strip().splitlines()
    if not lines:
        continue
    units += 1
    # Pairs of lines (function, file:line:column), the innermost inlined frame first.
    part = next((p for p in (by_path(lines[i].rsplit(":", 2)[0]) for i in range(1, len(lines), 2)) if p), REST)
    parts[part] += 2
if units * 2 != length + (length % 2):
    sys.exit(f"footprint: {units} code units symbolized, .text has {length} bytes")
start, length = sections[".rodata"]
named = 0
nm = subprocess.run(["nm", "-S", elf], capture_output=True, text=True, check=True).stdout
for line in nm.splitlines():
    f = line.split(None, 3)
    if len(f) == 4 and start <= int(f[0], 16) < start + length:
        parts[by_name(f[3])] += int(f[1], 16)
        named += int(f[1], 16)
parts["read-only data without a symbol (strings, tables)"] += length - named
parts[REST] += sections[".vector_table"][1]
for key, size in parts.most_common():
    print(f"{size:7d} B  {key}")
shipped = sum(v for k, v in parts.items() if k.startswith("raid1"))
print(f"{shipped:7d} B  core + binding (raid1-core, raid1-superblock, raid1-embedded)")
PY
}

measure sd_firmware --no-default-features --features sector32
measure mirror_failover
