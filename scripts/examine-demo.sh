#!/usr/bin/env bash
# The first useful thing on a fresh machine: build `raid1` and examine the members of a RAID1
# array that the real Linux kernel wrote (a fixture), next to mdadm's own report of them.
set -euo pipefail
cd "$(dirname "$0")/.."
case_dir=fixtures/${1:-bitmap-dirty}
command -v zstd >/dev/null || { echo "demo: installing zstd"; apt-get install -y -qq zstd >/dev/null; }
cargo build --release -q -p raid1-cli
raid1=$(cargo metadata --format-version 1 --no-deps | sed 's/.*"target_directory":"\([^"]*\)".*/\1/')/release/raid1
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
members=()
for z in "$case_dir"/*.img.zst; do
  zstd -q -d "$z" -o "$work/$(basename "${z%.zst}")"; members+=("$work/$(basename "${z%.zst}")")
done
echo "# raid1 examine ${members[*]##*/}"
(cd "$work" && "$raid1" examine "${members[@]##*/}")
echo
echo "# raid1 examine-bitmap ${members[0]##*/}"
(cd "$work" && "$raid1" examine-bitmap "${members[0]##*/}")
echo
echo "# the same facts for scripts: raid1 examine --json ${members[0]##*/}"
(cd "$work" && "$raid1" examine --json "${members[0]##*/}") | head -32; echo "  ..."
echo
if command -v mdadm >/dev/null; then
  if diff <(cd "$work" && "$raid1" examine "${members[@]##*/}") <(cd "$work" && mdadm --examine "${members[@]##*/}"); then
    echo "# mdadm --examine prints exactly the same lines"
  else
    echo "# mdadm --examine differs (above)"; exit 1
  fi
fi
