//! raid1-embedded's mirrored volume under the faults `volume_model` leaves out, one member at a
//! time, against a model: no read may ever return other than the last acknowledged content, and
//! no request may fail while the other member is in sync.
//!
//! The input is a seed byte, then pairs of operation and argument. Besides what `volume_model`
//! does (writes, reads, ticks, the card pulled and put back, budgeted steps, power cuts armed a
//! few operations ahead or between two operations), an operation may:
//! - fail the card's next read command (and maybe cut the power at one of the next card writes:
//!   the read fix's write-back of what the flash gave), also while the flash is being rebuilt,
//!   or one of the blocks of a write to it;
//! - fail a NOR program or erase, or every one (the member fails), or every erase (sectors
//!   given up until the store mounts again), or make one do nothing while returning `Ok`, in
//!   a write;
//! - bring the NOR member back after such a failure (`rejoin`: a store that gave sectors up
//!   mounts again, a flash whose md superblock lost a bit is rewritten in full);
//! - lose a programmed bit of the NOR flash for good (a 0 reading 1: charge lost), anywhere
//!   in the flash: data, entries, sector headers, the retire units; or, whatever the card's
//!   state, in the block that holds the flash's md bitmap sector (its superblock stands);
//! - put another card (random blocks) in the slot and report its insertion, with no command
//!   in between: beside a flash in sync it must be rebuilt in full; when the card held the
//!   only copy in sync it must be refused (`WrongCard`, no read served from it), and the
//!   volume's card put back must serve again;
//! - scrub (check or repair; after a whole one with both members in sync, every sector must
//!   read from the flash: what lost a bit was rewritten), mark the volume clean, close it and
//!   open it again.
//!
//! A fault that can take a member away is injected only while the other member is in sync,
//! and only within the operation that carries it (a countdown left armed could fire later,
//! when that is no longer so). Once the flash has lost a bit, the card stays in and its reads
//! and writes do not fail for the rest of the input: with the card gone, a lost bit in a
//! sector header may lose the blocks whose only copy is there, and a card read that fails
//! where the flash lost a bit has no copy left to serve; no mirror can help either. The seed
//! byte turns on torn programs that read unstable, torn programs that land out of order,
//! transient read flips, and a card driver that must be told of each insertion (as
//! embedded-sdmmc's `SdCard`: until then every command fails).
#![no_main]

use libfuzzer_sys::fuzz_target;
use raid1_embedded::nor::NorBlockStore;
use raid1_embedded::sim::NorSim;

#[path = "common/faults.rs"]
mod faults;
#[path = "common/lost_bit.rs"]
mod lost_bit;
#[path = "common/volume.rs"]
mod volume;

/// The NOR member: one store over 16 sectors of 4 KiB, 90 blocks.
type Nor<'a> =
    NorBlockStore<NorSim<'a, 4, { volume::SECTOR }>, { volume::NOR_BLOCKS }, NOR_SECTORS>;
const NOR_SECTORS: usize = 16;

fuzz_target!(|data: &[u8]| faults::run(data));
