//! A power-safe 512-byte block layer over SPI NOR flash: [`NorBlockStore`] over
//! `embedded_storage::nor_flash::NorFlash`, and [`asynch::NorBlockStore`] over
//! `embedded_storage_async::nor_flash::NorFlash` for async executors (a flash driver that
//! awaits the end of a program or erase lets other tasks run meanwhile).
//!
//! NOR flash cannot rewrite in place: a bit goes 1 -> 0 by programming and back only by
//! erasing a whole erase sector. [`NorBlockStore`] therefore never rewrites a block where it
//! is: every write goes to a fresh *slot*, and a per-slot entry (logical block, sequence
//! number, CRCs) says which slot holds the newest copy. The design, its on-flash layout and
//! its power-loss argument are in `docs/EMBEDDED.md` ("NOR member").
//!
//! On-flash layout of one erase sector of `E` bytes, holding `n` data slots after `m`
//! metadata pages of 512 bytes (E = 4096 gives m = 1, n = 7):
//!
//! ```text
//! 0   sector header   magic "R1NS", geometry (n | m << 16), erase count, CRC-32C   16 B
//! 16  active unit     ACTIVE pattern, programmed after the header reads back       16 B
//! 32  retire unit     all zero, programmed just before the sector is erased         16 B
//! 48  entry[i]        block, sequence, data CRC, entry CRC (16 B) + commit (16 B)    32 B each
//! m*512 - 16          second retire unit, all zero, programmed after the first       16 B
//! m*512 + i*512       data of slot i                                                512 B each
//! ```
//!
//! A write programs, in this order: the entry body, the 512 data bytes, the commit unit (16
//! zero bytes). Only a slot whose commit unit reads all-zero and whose entry CRC matches
//! counts. When `write_block` returns `Ok`, the block is durable: there is no volatile cache,
//! `flush` has nothing to do.

use crate::crc::{crc32c, crc32c_update};
use embedded_storage::nor_flash::{NorFlashError, NorFlashErrorKind};

// The store is written once, async, in `nor/store.rs`, and included twice: in `blocking`, over
// the blocking flash traits, with every `async` and `.await` removed (`raid1_bisync::blocking`
// on its items), and in `asynch`, over the async ones, as written. The two are the same code
// on the same on-flash format.

/// The store over a blocking flash driver (`embedded_storage::nor_flash::NorFlash`); its
/// [`NorBlockStore`] is the one this module re-exports.
#[path = "nor"]
pub mod blocking {
    use super::*;
    use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
    use raid1_bisync::blocking as io;
    /// A call runs to its end (or returns): nothing is left for the next one to finish, and
    /// the store keeps no room for it.
    const CLAIMS: usize = 0;
    #[allow(clippy::duplicate_mod)] // the point: the same file, with the blocking traits
    mod store;
    #[allow(clippy::duplicate_mod)]
    mod zoned;
    pub use store::NorBlockStore;
    pub use zoned::ZonedNorStore;
}

/// The store over an async flash driver (`embedded_storage_async::nor_flash::NorFlash`): the
/// same store as [`blocking`], whose methods that touch the flash are `async`.
#[path = "nor"]
pub mod asynch {
    use super::*;
    use embedded_storage_async::nor_flash::{NorFlash, ReadNorFlash};
    use raid1_bisync::asynchronous as io;
    /// A caller may drop a call's future between any two flash operations (a timeout): the
    /// store remembers the slot the call's program took (`claimed` in `store.rs`).
    const CLAIMS: usize = 1;
    #[allow(clippy::duplicate_mod)] // the point: the same file, with the async traits
    mod store;
    #[allow(clippy::duplicate_mod)]
    mod zoned;
    pub use store::NorBlockStore;
    pub use zoned::ZonedNorStore;
}

pub use blocking::{NorBlockStore, ZonedNorStore};

/// Bytes in one logical block.
pub const BLOCK_LEN: usize = 512;
/// Bytes of metadata per data slot on flash.
pub const ENTRY_LEN: usize = 32;
/// Bytes of the sector header area (header, active unit, retire unit).
pub const SECTOR_HEADER_LEN: usize = 48;

const MAGIC: u32 = u32::from_le_bytes(*b"R1NS");
const ACTIVE: [u8; 4] = [0xA5, 0x3C, 0x5A, 0xC3];
const NO_SLOT: u16 = u16::MAX;
/// No sector (the store's `open` hint unset).
const NO_SECTOR: u16 = u16::MAX;
/// Highest number of slots the `u16` map can address.
const MAX_SLOTS: usize = (u16::MAX - 1) as usize;
/// Bits of the ACTIVE pattern that may be off in a sector that holds data.
const ACTIVE_SLACK: u32 = 8;
/// Zero bits the retire unit may show in a sector that holds data: bits it gained for good (a
/// disturb), or a retire program torn in its first bits (a victim's blocks are all copied
/// before its retire unit is programmed, so keeping such a sector as it is loses nothing).
/// More is a retired sector, or one whose erase was torn.
const RETIRE_SLACK: u32 = 8;
const READ_TRIES: usize = 3;
const PROGRAM_TRIES: usize = 4;
const ERASE_TRIES: usize = 3;
/// Static wear leveling: when the most-erased active sector has been erased this many times
/// more than the least-erased full one (which holds cold data), the cold one is collected, so
/// that its data moves to worn sectors and it takes its share of the erases.
pub const WEAR_SPREAD: u32 = 32;

/// Failures of the NOR block layer. `E` is the flash driver's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NorError<E> {
    /// The flash driver failed (after the retries this layer does).
    Flash(E),
    /// The flash geometry does not fit this store: `what` names the parameter.
    Geometry {
        /// The parameter that is wrong.
        what: &'static str,
        /// Its value.
        value: u32,
    },
    /// `block` is not below the store's block count `blocks`.
    OutOfRange {
        /// The block asked for.
        block: u32,
        /// The number of blocks of the store.
        blocks: u32,
    },
    /// No slot can be freed: too many erase sectors failed.
    NoSpace,
    /// The flash reported a program or an erase done, but reading back showed it was not (a
    /// part that silently ignores commands), on every retry.
    Unverified,
    /// The newest copy of `block` (its data, or its committed entry) fails its CRC on every
    /// read attempt: the block is not returned, never an older version or zeros. Rewriting the
    /// block heals it.
    Corrupt {
        /// The logical block.
        block: u32,
    },
    /// The store is not mounted (a mount in place, [`NorBlockStore::remount`], failed, or it
    /// was made with [`NorBlockStore::unmounted`]): nothing is read or written until a mount
    /// succeeds.
    NotMounted,
    /// A [`ZonedNorStore`] zone, mounted again to serve a request, did not map its blocks as
    /// it did when it left RAM: a bit lost on the flash since hid a block's newest copy (or
    /// a decision the last mount took for a torn write could not be written down). Which
    /// block is not known, so no block of the zone is served, never an older version, until
    /// the store is mounted again ([`ZonedNorStore::remount`]) and every block rewritten from
    /// the other copy.
    ZoneChanged {
        /// The zone.
        zone: u32,
    },
}

impl<E: NorFlashError> core::fmt::Display for NorError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            // In words: the kind the driver reports, never its `Debug` value.
            NorError::Flash(e) => write!(f, "flash error: {}", e.kind()),
            NorError::Geometry { what, value } => {
                write!(f, "flash geometry: {what} = {value} does not fit")
            }
            NorError::OutOfRange { block, blocks } => {
                write!(f, "block {block} is beyond the {blocks} blocks")
            }
            NorError::NoSpace => write!(f, "no free slot can be reclaimed"),
            NorError::Unverified => write!(f, "the flash did not do what it acknowledged"),
            NorError::Corrupt { block } => write!(f, "block {block} fails its CRC"),
            NorError::NotMounted => write!(f, "the store is not mounted: its last mount failed"),
            NorError::ZoneChanged { zone } => {
                write!(f, "zone {zone} no longer reads as it was left")
            }
        }
    }
}

impl<E: NorFlashError> core::error::Error for NorError<E> {}

/// Counters of the work the store did, for write-amplification figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NorStats {
    /// Blocks written by the caller.
    pub host_writes: u32,
    /// Blocks moved by garbage collection.
    pub relocations: u32,
    /// Sectors erased.
    pub erases: u32,
    /// Collections of a cold sector by static wear leveling.
    pub leveled: u32,
    /// Program or erase operations that failed and were retried elsewhere.
    pub failed_ops: u32,
    /// Reads that failed a CRC and were repeated.
    pub reread: u32,
    /// Entries and sector headers whose CRC failed and that one flipped bit explained: read
    /// as corrected.
    pub corrected: u32,
    /// Blocks written again because their entry needed a correction when read.
    pub refreshed: u32,
    /// Blocks written again at mount because their newest write was undecided (a torn or
    /// weak commit unit): see [`NorBlockStore::mount`].
    pub settled: u32,
    /// Sectors collected at mount because their header needed a correction (so that it is
    /// written afresh).
    pub renewed: u32,
    /// Committed entries and sector headers found at mount whose CRC failed beyond
    /// correction. See [`NorBlockStore::damaged`].
    pub damaged: u32,
}

/// The slot layout that an erase sector of `erase_size` bytes gets: (metadata pages, slots).
pub const fn sector_layout(erase_size: usize) -> (usize, usize) {
    let pages = erase_size / BLOCK_LEN;
    let mut meta = 1;
    while meta < pages {
        let slots = pages - meta;
        if SECTOR_HEADER_LEN + slots * ENTRY_LEN <= meta * BLOCK_LEN {
            return (meta, slots);
        }
        meta += 1;
    }
    (pages, 0)
}

/// How much room a store's configuration leaves its garbage collection: see [`provisioning`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Provisioning {
    /// Logical blocks offered (`BLOCKS`).
    pub blocks: u32,
    /// The most blocks the capacity rule accepts: `(SECTORS - 2) * slots_per_sector - 1`.
    pub max_blocks: u32,
    /// Slots per erase sector.
    pub slots_per_sector: u32,
    /// The live blocks a garbage collection copies in the worst case (the live blocks spread
    /// evenly over the full sectors), to free `slots_per_sector - worst_copies` slots.
    pub worst_copies: u32,
}

impl Provisioning {
    /// True when a collection may, in the worst case, free a single slot for all its copies:
    /// the configuration sits at the edge of the capacity rule, where one host write can
    /// cost `slots_per_sector - 1` relocations and an erase. Fewer `blocks` (or more sectors)
    /// lower [`Provisioning::worst_copies`].
    pub const fn tight(&self) -> bool {
        self.worst_copies + 1 >= self.slots_per_sector
    }

    /// [`NorWarning::TightProvisioning`] when [`Provisioning::tight`].
    pub const fn warning(self) -> Option<NorWarning> {
        if self.tight() {
            Some(NorWarning::TightProvisioning(self))
        } else {
            None
        }
    }
}

/// Something a mount found that works but that the caller should know of
/// ([`NorBlockStore::warning`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NorWarning {
    /// The store is provisioned at the edge of the capacity rule ([`Provisioning::tight`]).
    TightProvisioning(Provisioning),
}

/// The provisioning of `blocks` logical blocks over `sectors` erase sectors of `erase_size`
/// bytes. When a collection is due, fewer than two sectors' worth of slots are free, so at
/// least `sectors - 2` sectors are full and one of them holds at most `blocks / (sectors - 2)`
/// live blocks: that is the worst case a collection copies. A `const fn`, so firmware can
/// check its configuration at build time.
pub const fn provisioning(blocks: usize, sectors: usize, erase_size: usize) -> Provisioning {
    let slots = sector_layout(erase_size).1;
    let full = sectors.saturating_sub(2);
    Provisioning {
        blocks: blocks as u32,
        max_blocks: (full * slots).saturating_sub(1) as u32,
        slots_per_sector: slots as u32,
        worst_copies: match blocks.checked_div(full) {
            Some(copies) => copies as u32,
            None => 0,
        },
    }
}

/// A constructor or mount that failed, with the driver it was given, so that the caller keeps
/// its hardware (to retry, to format, or to use it otherwise).
pub struct Refused<E, D> {
    /// Why it failed.
    pub error: E,
    /// The driver, handed back.
    pub driver: D,
}

impl<E: core::fmt::Debug, D> core::fmt::Debug for Refused<E, D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Refused")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

/// One zone of a flash, as the zone's [`NorBlockStore`] sees it: addresses from 0 to `len`,
/// `base` bytes into the chip. A [`ZonedNorStore`] owns the one driver and lends it to the
/// window of the zone that runs an operation; a window without it fails every access.
struct Window<F> {
    flash: Option<F>,
    base: u32,
    len: u32,
}

impl<F> Window<F> {
    /// The driver and the chip's address of `[offset, offset + n)`, when the range lies in
    /// the window and the driver is here.
    fn at<E>(&mut self, offset: u32, n: usize) -> Result<(&mut F, u32), WindowError<E>> {
        match (offset as usize).checked_add(n) {
            Some(end) if end <= self.len as usize => match self.flash.as_mut() {
                Some(flash) => Ok((flash, self.base + offset)),
                None => Err(WindowError::Lent),
            },
            _ => Err(WindowError::OutOfBounds),
        }
    }
}

/// A [`Window`]'s failures: the driver's, or an access it refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WindowError<E> {
    Flash(E),
    /// Beyond the zone (a bug of the store's geometry checks).
    OutOfBounds,
    /// The driver was lent to another zone (a bug of the zoned store).
    Lent,
}

impl<E: NorFlashError> NorFlashError for WindowError<E> {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            WindowError::Flash(e) => e.kind(),
            WindowError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            WindowError::Lent => NorFlashErrorKind::Other,
        }
    }
}

impl<F: embedded_storage::nor_flash::ErrorType> embedded_storage::nor_flash::ErrorType
    for Window<F>
{
    type Error = WindowError<F::Error>;
}

/// A zone store's error as the zoned store's caller sees it: the driver's own error, or
/// what the zone's store said.
fn unwindow<E>(e: NorError<WindowError<E>>) -> NorError<E> {
    match e {
        NorError::Flash(WindowError::Flash(e)) => NorError::Flash(e),
        NorError::Flash(WindowError::OutOfBounds) => NorError::Geometry {
            what: "zone bounds",
            value: 0,
        },
        NorError::Flash(WindowError::Lent) => NorError::NotMounted,
        NorError::Geometry { what, value } => NorError::Geometry { what, value },
        NorError::OutOfRange { block, blocks } => NorError::OutOfRange { block, blocks },
        NorError::NoSpace => NorError::NoSpace,
        NorError::Unverified => NorError::Unverified,
        NorError::Corrupt { block } => NorError::Corrupt { block },
        NorError::NotMounted => NorError::NotMounted,
        NorError::ZoneChanged { zone } => NorError::ZoneChanged { zone },
    }
}

/// The little-endian word at `i` of `raw`; 0 past its end (every caller reads within a buffer
/// of fixed length, so never).
fn word(raw: &[u8], i: usize) -> u32 {
    match raw.get(i..i + 4) {
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// Three little-endian words and their CRC-32C: a sector header's body or an entry's.
fn sealed(words: [u32; 3]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (dst, w) in out.chunks_exact_mut(4).zip(words) {
        dst.copy_from_slice(&w.to_le_bytes());
    }
    let crc = crc32c(&out[..12]);
    out[12..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Whether `body` is as [`sealed`] writes one: its last word the CRC-32C of the first three.
fn is_sealed(body: &[u8; 16]) -> bool {
    word(body, 12) == crc32c(&body[..12])
}

/// Number of bits in which `a` and `b` differ.
fn zero_ones_distance(a: &[u8], b: &[u8]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}
