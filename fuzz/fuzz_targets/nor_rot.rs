//! raid1-embedded's NOR block store under random operations, power cuts and programmed bits
//! lost for good, against a model: `nor_model` with lost bits, and the store's promise about
//! them (docs/EMBEDDED.md, "Corruption"): a block reads as its last acknowledged version or
//! fails with `Corrupt`, never as an older version or zeros, unless the mount reported damage
//! (`damaged()`: the caller must then rewrite every block from another copy).
//!
//! The operations are `nor_model`'s (writes, remounts, power cuts armed a few flash
//! operations ahead, dropped programs and erases, read flips, torn programs out of order or
//! reading unstable) and one more: a programmed bit anywhere in the flash reads erased from
//! now on (a cell that lost its charge), at most four per input (the store claims to correct
//! one bit per entry or header and to keep a sector whose ACTIVE pattern lost up to eight).
//! After every cut or remount every block is checked; no program may hit a word that is not
//! erased, and nothing may panic. The run is `nor_model`'s (`common/nor.rs`), with bits to
//! lose.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common/nor.rs"]
mod nor;

fuzz_target!(|data: &[u8]| nor::run(data, 4, false));
