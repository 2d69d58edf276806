//! raid1-embedded's NOR block store under random operations and power cuts, against a model.
//!
//! The input is a list of operations: writes (of a block, with a version the model tracks),
//! remounts, power cuts armed a few flash operations ahead (the cut tears that program or
//! erase as the simulator does, in order or not, and may leave its cells reading unstable),
//! programs or erases that silently do nothing, and read flips.
//! After every cut the chip is powered again and the store mounted again, and every block must
//! read as its last acknowledged version (or, for the write in flight, its new one), and keep
//! reading what it read then. No program may hit a word that is not erased (other than the
//! cells of a torn program that read erased), and nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common/nor.rs"]
mod nor;

fuzz_target!(|data: &[u8]| nor::run(data, 0, false));
