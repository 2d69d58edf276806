//! raid1-embedded's zoned NOR store (`ZonedNorStore`, two zones of 6 sectors and 20 blocks,
//! one zone's map in RAM) under `nor_rot`'s operations (writes, power cuts, dropped programs
//! and erases, read flips, torn programs out of order or reading unstable, and up to four
//! programmed bits lost for good) and one more: every block read with the power on, without
//! a remount, which mounts the zones again over whatever was lost while they were out of RAM.
//! The promise: a block reads as its last acknowledged version or fails (`Corrupt`, or
//! `ZoneChanged` for a zone that changed while out of RAM), never as an older version or
//! zeros, unless a mount reported damage; a zone that lost nothing never reads as changed.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common/nor.rs"]
mod nor;

fuzz_target!(|data: &[u8]| nor::run(data, 4, true));
