#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs, then runs every check.
# Fails loudly: the first failing step stops the run with its name and a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
start=$(date +%s)
step() { printf '\n==== %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }
trap 'echo; echo "FAILED during: ${current:-setup} (after $(( $(date +%s) - start ))s)" >&2' ERR

current="setup"; step "$current"
bash scripts/setup.sh

current="format"; step "$current"
cargo fmt --all -- --check

current="clippy"; step "$current"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The engine and the binding as firmware builds them (no default features, 32-bit sectors).
cargo clippy --locked -p raid1-core --no-default-features --features sector32 --lib \
    --test reduced_features --test sector32 --test replacement_on_disk -- -D warnings
cargo clippy --locked -p raid1-core --features sector32 --test no_panic -- -D warnings
cargo clippy --locked --all-targets -p raid1-embedded --features sector32 -- -D warnings

current="documentation: a broken or private link is an error"; step "$current"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked -q

current="bare-metal build of the no_std crates (thumbv7em-none-eabihf, no alloc)"; step "$current"
cargo build --release --locked --target thumbv7em-none-eabihf -p raid1-superblock -p raid1-core -p raid1-testkit

current="unit and integration tests"; step "$current"
# The simulator's seeds test runs 200 seeds here: the simulator step below runs 2000 of them,
# at both sector widths, with their statistics.
RAID1_SIM_TEST_SEEDS=200 cargo test --workspace --locked --release

current="the engine and the binding as firmware builds them (no default features, 32-bit sectors)"; step "$current"
cargo test --locked --release -p raid1-core --no-default-features --features sector32 \
    --test reduced_features --test sector32 --test replacement_on_disk
# Random API calls with hostile values, with overflow checks on (a debug build), at both sector
# widths: an arithmetic overflow is a panic here, not a silent wrap.
cargo test --locked -p raid1-core --test no_panic
cargo test --locked -p raid1-core --features sector32 --test no_panic
# The binding's tests again, built as firmware: the test files that reach the volume or the
# engine. The NOR layer's own (nor_powerloss, nor_async, ...) have no sector arithmetic: they
# build to the same code at both widths and ran above.
firmware_tests=(--lib)
for f in raid1-embedded/tests/*.rs; do
    # Any path into the volume module (`volume::`, or `volume` in a braced import) or the
    # engine: a file that reaches either is never left out.
    if grep -qE 'raid1_core|volume(::|[,}])' "$f"; then
        firmware_tests+=(--test "$(basename "$f" .rs)")
    fi
done
echo "${firmware_tests[*]}"
cargo test --locked --release -p raid1-embedded --features sector32 "${firmware_tests[@]}"

current="deterministic simulator: 2000 seeds"; step "$current"
seeds=${SIM_SEEDS:-2000}
stats64=$(mktemp)
out=$(cargo run --release --locked -q -p raid1-sim -- --seeds "$seeds" 2>"$stats64" | tail -1)
echo "$out"; cat "$stats64"
[[ "$out" == "seeds: $seeds, violations: 0" ]]

# The engine as firmware builds it (32-bit sectors) must run the same seeds the same way: the
# same violations (none) and the same counts of everything (requests, crashes, syncs, faults).
current="deterministic simulator with 32-bit sectors: the same seeds, the same run"; step "$current"
stats32=$(mktemp)
out=$(cargo run --release --locked -q -p raid1-sim --features sector32 -- --seeds "$seeds" \
    2>"$stats32" | tail -1)
echo "$out"; cat "$stats32"
[[ "$out" == "seeds: $seeds, violations: 0" ]]
diff <(sed 's/ in [0-9.]*m\?s$//' "$stats64") <(sed 's/ in [0-9.]*m\?s$//' "$stats32")

current="fuzz every parser of untrusted bytes"; step "$current"
bash scripts/fuzz.sh

current="firmware under qemu-system-arm"; step "$current"
bash raid1-embedded/run-qemu-examples.sh

echo
echo "all checks passed in $(( $(date +%s) - start ))s"
