#!/usr/bin/env bash
# A mirror across a network boundary, one run (as root: it makes two network namespaces
# joined by veth, the array in one, its second member served by nbdkit in the other):
#
#   scripts/bench/remote.sh      # prints a markdown table
#
# One writer at queue depth 1 through the array's NBD export: 200 writes of 64 KiB, then
# 200 reads. Rows: two local image files (the baseline, measured in the same run), then the
# second member an NBD export with 0, 1 and 10 ms added to each request (nbdkit's delay
# filter: this host's kernel has no sch_netem for tc netem), without and with write-behind
# (the remote member write-mostly, --write-behind 256). The last column is the writes/s
# ratio against the baseline.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo test --release --locked -q -p raid1-cli --test remote_members bench_remote_delay \
  -- --ignored --nocapture 2>&1 | grep '^|'
