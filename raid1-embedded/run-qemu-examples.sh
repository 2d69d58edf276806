#!/usr/bin/env bash
# Build every firmware example of raid1-embedded for the Cortex-M4F target, run each one under
# qemu-system-arm (mps2-an386, semihosting) with a timeout, decode its defmt output with
# defmt-print, and fail when any example exits non-zero or times out.
set -euo pipefail
cd "$(dirname "$0")/.."
target=thumbv7em-none-eabihf
export DEFMT_LOG="${DEFMT_LOG:-info}"
cargo build --release --locked -p raid1-embedded --target "$target" --examples
dir="${CARGO_TARGET_DIR:-target}/$target/release/examples"
status=0
ran=0
for src in raid1-embedded/examples/*.rs; do
    name=$(basename "$src" .rs)
    elf="$dir/$name"
    echo "---- $name"
    set +e
    timeout "${QEMU_TIMEOUT:-120}" qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic \
        -semihosting-config enable=on,target=native -kernel "$elf" | defmt-print -e "$elf"
    codes=("${PIPESTATUS[@]}")
    set -e
    code=${codes[0]}
    ran=$((ran + 1))
    if [[ $code -ne 0 ]]; then
        echo "FAIL: $name exited with status $code (124: timeout)" >&2
        status=1
    elif [[ ${codes[1]} -ne 0 ]]; then
        echo "FAIL: defmt-print could not decode the output of $name" >&2
        status=1
    else
        echo "ok: $name exited with status 0"
    fi
done
[[ $ran -gt 0 ]] || { echo "no example found" >&2; exit 1; }
exit $status
