//! `volume_faults`'s operations and model (see `volume_faults.rs`) on a volume whose flash is a
//! zoned NOR store: the same 90 blocks as two zones of 9 sectors and 45 blocks, one zone's map
//! in RAM, so that most requests mount a zone again. Beyond `volume_faults`'s promise (no read
//! returns other than the last acknowledged content, no request fails while the other member
//! is in sync), a zone mounted again must find its blocks as it left them or report it: a zone
//! that changed while out of RAM fails the flash member (never an older block served), and a
//! zone that lost nothing must never read as changed (that would fail a healthy flash).
#![no_main]

use libfuzzer_sys::fuzz_target;
use raid1_embedded::nor::ZonedNorStore;
use raid1_embedded::sim::NorSim;

#[path = "common/faults.rs"]
mod faults;
#[path = "common/lost_bit.rs"]
mod lost_bit;
#[path = "common/volume.rs"]
mod volume;

/// The NOR member: two zones of 9 sectors of 4 KiB and 45 blocks, one in RAM.
type Nor<'a> = ZonedNorStore<NorSim<'a, 4, { volume::SECTOR }>, 2, 45, 9, 1>;
const NOR_SECTORS: usize = 18;

fuzz_target!(|data: &[u8]| faults::run(data));
