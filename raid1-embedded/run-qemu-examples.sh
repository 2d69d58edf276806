#!/usr/bin/env bash
# Build every firmware example of raid1-embedded for the Cortex-M4F target, run each one under
# qemu-system-arm (mps2-an386, semihosting) with a timeout, decode its defmt output with
# defmt-print, and fail when any example exits non-zero or times out.
#
# sd_firmware is the firmware of a device whose volume was made at the factory: it is built
# without the `format` feature and with 32-bit sectors (`sector32`), and its host side (the factory, with `format`) first writes the
# SD card's and the NOR flash's images, which QEMU's generic loader puts into the board's PSRAM
# (0x21000000, outside memory.x) where the firmware's emulated card and flash read them.
set -euo pipefail
cd "$(dirname "$0")/.."
target=thumbv7em-none-eabihf
export DEFMT_LOG="${DEFMT_LOG:-info}"
tdir="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -p raid1-embedded --target "$target" --examples
cargo build --release --locked -p raid1-embedded --target "$target" --no-default-features \
    --features sector32 --example sd_firmware
cargo build --release --locked -p raid1-embedded --example sd_firmware
images="$tdir/sd_firmware-images"
mkdir -p "$images"
rm -f "$images/sd.img" "$images/nor.img"
"$tdir/release/examples/sd_firmware" factory "$images/sd.img" "$images/nor.img" ||
    { echo "FAIL: the sd_firmware factory could not make the images" >&2; exit 1; }
dir="$tdir/$target/release/examples"
status=0
ran=0
for src in raid1-embedded/examples/*.rs; do
    name=$(basename "$src" .rs)
    elf="$dir/$name"
    echo "---- $name"
    extra=()
    if [[ $name == sd_firmware ]]; then
        extra=(-device "loader,file=$images/sd.img,addr=0x21000000,force-raw=on"
            -device "loader,file=$images/nor.img,addr=0x21080000,force-raw=on")
    fi
    set +e
    timeout "${QEMU_TIMEOUT:-120}" qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic \
        -semihosting-config enable=on,target=native "${extra[@]}" -kernel "$elf" |
        defmt-print -e "$elf"
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
