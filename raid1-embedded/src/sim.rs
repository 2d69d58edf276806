//! RAM-backed simulators of the two member kinds, with fault injection, for host tests and
//! for the firmware examples (no_std, no alloc: the caller provides the storage).
//!
//! - [`NorSim`] implements `NorFlash` with NOR semantics: erase sets a sector to 0xFF, a
//!   program may only clear bits (AND), a program onto a word that is not erased is counted
//!   in [`NorSimStats::unerased_programs`] (a double write by the layer above), alignment is
//!   enforced, and each sector counts its erases.
//! - [`BusyFlash`] puts any blocking `NorFlash` (a [`NorSim`]) behind the async flash traits
//!   of embedded-storage-async, each program and erase waiting a number of polls first, as a
//!   driver that awaits the chip's busy flag lets other tasks run.
//! - [`SdSim`] implements embedded-sdmmc's `BlockDevice` with card removal, read/write
//!   errors and torn block writes. Its faults are raid1-testkit's `FaultyMember`, the member
//!   fault model the simulator's disks use too (a removed card is a dead member; the
//!   countdowns of [`SdFaults`] count written blocks and read commands).
//!
//! Power loss is a countdown of operations: the operation that takes it to zero is torn, and
//! every later operation fails with `PowerLost` until [`NorSim::power_cycle`] /
//! [`SdSim::power_cycle`]. The NOR flash keeps faults of its own (program and erase
//! countdowns, wear, bit flips, a broken part), which are not a member's sector faults.

use core::cell::RefCell;
use embedded_sdmmc::{Block, BlockCount, BlockDevice, BlockIdx};
use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// The PRNG and the operation countdown are raid1-testkit's, shared with the simulator.
pub use raid1_testkit::{Countdown, Rng};
use raid1_testkit::{FaultyMember, Health, MemberError};

/// Errors of the NOR simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NorSimError {
    /// Offset or length not aligned to READ_SIZE / WRITE_SIZE / ERASE_SIZE.
    NotAligned,
    /// Access beyond the capacity.
    OutOfBounds,
    /// Power was lost; nothing works until `power_cycle`.
    PowerLost,
    /// An injected program failure (the words may be partly programmed).
    ProgramFailed,
    /// An injected erase failure or a worn-out sector (content undefined).
    EraseFailed,
}

impl NorFlashError for NorSimError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            NorSimError::NotAligned => NorFlashErrorKind::NotAligned,
            NorSimError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            _ => NorFlashErrorKind::Other,
        }
    }
}

/// Faults armed on a [`NorSim`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NorFaults {
    /// Power loss: counts programs and erases; the one that fires is torn.
    pub power_loss: Countdown,
    /// A program that fails (partly programmed) and returns `ProgramFailed`.
    pub fail_program: Countdown,
    /// An erase that fails (sector undefined) and returns `EraseFailed`.
    pub fail_erase: Countdown,
    /// Every `flip_period`-th read returns one flipped bit (0: never). Transient.
    pub flip_period: u32,
    /// Erases a sector survives; later erases fail (0: unlimited).
    pub endurance: u32,
    /// While set, every program and erase fails without touching the chip (a dead part or a
    /// broken bus); reads still work.
    pub broken: bool,
    /// While set, every erase fails without touching the chip and programs still work (a
    /// part whose erase stopped working for a while, such as one held in erase suspend).
    pub erase_broken: bool,
    /// A program that returns `Ok` but changes nothing (a part that drops a command).
    pub silent_program: Countdown,
    /// An erase that returns `Ok` but changes nothing.
    pub silent_erase: Countdown,
    /// A torn program (power loss, failure) lands out of order: each byte of it fully, partly
    /// or not at all, instead of a prefix.
    pub out_of_order_tears: bool,
    /// The bytes a torn program touched read unstable until their sector is next erased:
    /// each read may return any of their programmed bits as still erased (weakly programmed
    /// cells). At most [`UNSTABLE_RANGES`] such ranges are kept, the oldest dropped.
    pub unstable_tears: bool,
    /// With `unstable_tears`, the programmed bits of a torn range read erased on every read
    /// (cells too weak to sense), the worst case of what a layer above must not program over.
    pub weak_tears_read_erased: bool,
    /// A torn erase (power loss) wipes exactly this byte range of its sector (offsets from
    /// the sector's start) and nothing else, instead of a shape drawn at random: for a test
    /// that needs one shape.
    pub torn_erase_wipes: Option<(usize, usize)>,
}

/// How many torn ranges a [`NorSim`] keeps reading unstable.
pub const UNSTABLE_RANGES: usize = 4;

/// Operation counters of a [`NorSim`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NorSimStats {
    /// Program operations.
    pub programs: u32,
    /// Erase operations.
    pub erases: u32,
    /// Read operations.
    pub reads: u32,
    /// Bits flipped on reads.
    pub flips: u32,
    /// Erases interrupted by a power loss.
    pub torn_erases: u32,
    /// Programs that hit a word neither erased nor left alone (0xFF): a double write by the
    /// layer above. The simulator ANDs, as real NOR does, and counts it here.
    pub unerased_programs: u32,
    /// Reads that returned weakly programmed bits of a torn program as erased
    /// (`unstable_tears`).
    pub weak_reads: u32,
    /// Programs onto the unerased words of a torn program that reads unstable (counted here,
    /// not in `unerased_programs`): such a range may read erased on every read, so a layer
    /// above cannot always tell it from erased flash.
    pub weak_overprograms: u32,
}

/// A NOR flash in caller-provided RAM. `WRITE` and `ERASE` are the program and erase
/// granularities in bytes; `mem.len()` must be a multiple of `ERASE` and `wear` must have one
/// counter per erase sector.
pub struct NorSim<'a, const WRITE: usize, const ERASE: usize> {
    mem: &'a mut [u8],
    wear: &'a mut [u32],
    /// Armed faults.
    pub faults: NorFaults,
    /// Counters.
    pub stats: NorSimStats,
    rng: Rng,
    powered: bool,
    /// Byte ranges left by torn programs that read unstable (`unstable_tears`).
    unstable: [Option<(usize, usize)>; UNSTABLE_RANGES],
}

impl<'a, const WRITE: usize, const ERASE: usize> NorSim<'a, WRITE, ERASE> {
    /// A simulator over `mem` (left as it is: fill it with 0xFF for a blank chip).
    pub fn new(mem: &'a mut [u8], wear: &'a mut [u32], seed: u64) -> Self {
        NorSim {
            mem,
            wear,
            faults: NorFaults::default(),
            stats: NorSimStats::default(),
            rng: Rng::new(seed),
            powered: true,
            unstable: [None; UNSTABLE_RANGES],
        }
    }

    /// Restore power after a power loss (the content stays as the loss left it).
    pub fn power_cycle(&mut self) {
        self.powered = true;
        self.faults.power_loss = Countdown::OFF;
    }

    /// True when power is on.
    pub fn powered(&self) -> bool {
        self.powered
    }

    /// Cut the power with no program or erase under way: every operation fails until
    /// [`Self::power_cycle`].
    pub fn power_off(&mut self) {
        self.powered = false;
    }

    /// Erase count of each sector.
    pub fn wear(&self) -> &[u32] {
        self.wear
    }

    /// The raw content.
    pub fn memory(&self) -> &[u8] {
        self.mem
    }

    /// The raw content, to corrupt it for good (charge loss, disturb) in tests.
    pub fn memory_mut(&mut self) -> &mut [u8] {
        self.mem
    }

    fn range(
        &self,
        offset: u32,
        len: usize,
        align: usize,
    ) -> Result<core::ops::Range<usize>, NorSimError> {
        let start = offset as usize;
        if !start.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(NorSimError::NotAligned);
        }
        let end = start.checked_add(len).ok_or(NorSimError::OutOfBounds)?;
        if end > self.mem.len() {
            return Err(NorSimError::OutOfBounds);
        }
        Ok(start..end)
    }

    /// Program `bytes[..cut]` fully and a random subset of the cleared bits of byte `cut`; or,
    /// with `out_of_order_tears`, each byte fully, partly or not at all. With `unstable_tears`
    /// the range reads unstable from now on.
    fn program_partly(&mut self, start: usize, bytes: &[u8]) {
        if self.faults.out_of_order_tears {
            for (i, &b) in bytes.iter().enumerate() {
                let mask = match self.rng.below(3) {
                    0 => 0,
                    1 => 0xFF,
                    _ => self.rng.next_u64() as u8,
                };
                self.mem[start + i] &= b | mask;
            }
        } else {
            let cut = self.rng.below(bytes.len() as u64 + 1) as usize;
            for (i, &b) in bytes.iter().enumerate().take(cut) {
                self.mem[start + i] &= b;
            }
            if let Some(&b) = bytes.get(cut) {
                let mask = self.rng.next_u64() as u8;
                self.mem[start + cut] &= b | mask;
            }
        }
        if self.faults.unstable_tears && !bytes.is_empty() {
            let range = (start, start + bytes.len());
            match self.unstable.iter_mut().find(|r| r.is_none()) {
                Some(free) => *free = Some(range),
                None => {
                    self.unstable.rotate_left(1);
                    self.unstable[UNSTABLE_RANGES - 1] = Some(range);
                }
            }
        }
    }

    /// A read of `[offset, +bytes.len())` returned: the bytes of unstable ranges in it may
    /// show programmed bits as erased.
    fn weak_bits(&mut self, offset: usize, bytes: &mut [u8]) {
        let end = offset + bytes.len();
        let mut weak = false;
        for (s, e) in self.unstable.iter().flatten().copied() {
            for i in s.max(offset)..e.min(end) {
                let up = if self.faults.weak_tears_read_erased {
                    !self.mem[i]
                } else {
                    self.rng.next_u64() as u8 & !self.mem[i]
                };
                bytes[i - offset] |= up;
                weak |= up != 0;
            }
        }
        if weak {
            self.stats.weak_reads += 1;
        }
    }

    /// Leave a sector undefined, in one of the ways an interrupted erase can: untouched, a
    /// prefix, a suffix or a middle part erased, or each byte erased, unchanged or with
    /// random bits set.
    fn erase_partly(&mut self, range: core::ops::Range<usize>) {
        let cut = range.start + self.rng.below(range.len() as u64 + 1) as usize;
        let end = cut + self.rng.below((range.end - cut) as u64 + 1) as usize;
        match self.rng.below(5) {
            0 => {}
            1 => self.mem[range.start..cut].fill(0xFF),
            2 => self.mem[cut..range.end].fill(0xFF),
            3 => self.mem[cut..end].fill(0xFF),
            _ => {
                for i in range {
                    self.mem[i] = match self.rng.below(3) {
                        0 => 0xFF,
                        1 => self.mem[i],
                        _ => self.mem[i] | self.rng.next_u64() as u8,
                    };
                }
            }
        }
    }
}

impl<const WRITE: usize, const ERASE: usize> ErrorType for NorSim<'_, WRITE, ERASE> {
    type Error = NorSimError;
}

impl<const WRITE: usize, const ERASE: usize> ReadNorFlash for NorSim<'_, WRITE, ERASE> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), NorSimError> {
        if !self.powered {
            return Err(NorSimError::PowerLost);
        }
        let range = self.range(offset, bytes.len(), 1)?;
        bytes.copy_from_slice(&self.mem[range.clone()]);
        if self.unstable.iter().any(Option::is_some) {
            self.weak_bits(range.start, bytes);
        }
        self.stats.reads += 1;
        let period = self.faults.flip_period;
        if period != 0 && self.stats.reads.is_multiple_of(period) && !bytes.is_empty() {
            let bit = self.rng.below(bytes.len() as u64 * 8) as usize;
            bytes[bit / 8] ^= 1 << (bit % 8);
            self.stats.flips += 1;
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.mem.len()
    }
}

impl<const WRITE: usize, const ERASE: usize> NorFlash for NorSim<'_, WRITE, ERASE> {
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = ERASE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), NorSimError> {
        if !self.powered {
            return Err(NorSimError::PowerLost);
        }
        if to < from {
            return Err(NorSimError::OutOfBounds);
        }
        let range = self.range(from, (to - from) as usize, ERASE)?;
        if self.faults.broken || self.faults.erase_broken {
            return Err(NorSimError::EraseFailed);
        }
        let mut sector = range.start;
        while sector < range.end {
            let this = sector..sector + ERASE;
            self.stats.erases += 1;
            let index = sector / ERASE;
            if let Some(w) = self.wear.get_mut(index) {
                *w += 1;
            }
            if self.faults.power_loss.tick() {
                match self.faults.torn_erase_wipes {
                    Some((from, to)) => self.mem[this.start + from..this.start + to].fill(0xFF),
                    None => self.erase_partly(this),
                }
                self.stats.torn_erases += 1;
                self.powered = false;
                return Err(NorSimError::PowerLost);
            }
            let worn = self.faults.endurance != 0
                && self
                    .wear
                    .get(index)
                    .is_some_and(|&w| w > self.faults.endurance);
            if self.faults.fail_erase.tick() || worn {
                self.erase_partly(this);
                return Err(NorSimError::EraseFailed);
            }
            if self.faults.silent_erase.tick() {
                sector += ERASE;
                continue;
            }
            for r in self.unstable.iter_mut() {
                if r.is_some_and(|(s, e)| s < this.end && this.start < e) {
                    *r = None;
                }
            }
            self.mem[this].fill(0xFF);
            sector += ERASE;
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), NorSimError> {
        if !self.powered {
            return Err(NorSimError::PowerLost);
        }
        let range = self.range(offset, bytes.len(), WRITE)?;
        if self.faults.broken {
            return Err(NorSimError::ProgramFailed);
        }
        let unerased = self.mem[range.clone()]
            .chunks(WRITE)
            .zip(bytes.chunks(WRITE))
            .any(|(word, new)| !word.iter().all(|&b| b == 0xFF) && !new.iter().all(|&b| b == 0xFF));
        if unerased {
            // Real NOR ANDs silently; count it so tests can insist it never happens.
            let weak = self
                .unstable
                .iter()
                .flatten()
                .any(|&(s, e)| s < range.end && range.start < e);
            if weak {
                self.stats.weak_overprograms += 1;
            } else {
                self.stats.unerased_programs += 1;
            }
        }
        self.stats.programs += 1;
        if self.faults.power_loss.tick() {
            self.program_partly(range.start, bytes);
            self.powered = false;
            return Err(NorSimError::PowerLost);
        }
        if self.faults.fail_program.tick() {
            self.program_partly(range.start, bytes);
            return Err(NorSimError::ProgramFailed);
        }
        if self.faults.silent_program.tick() {
            return Ok(());
        }
        for (m, &b) in self.mem[range].iter_mut().zip(bytes) {
            *m &= b;
        }
        Ok(())
    }
}

/// Errors of the SD card simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SdSimError {
    /// No card in the slot.
    Removed,
    /// Power was lost; nothing works until `power_cycle`.
    PowerLost,
    /// An injected read error.
    ReadFailed,
    /// An injected write error (the blocks may be partly written).
    WriteFailed,
    /// Access beyond the card.
    OutOfRange,
}

impl core::fmt::Display for SdSimError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self, f)
    }
}

impl core::error::Error for SdSimError {}

/// Faults armed on an [`SdSim`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SdFaults {
    /// Power loss: counts written blocks; the one that fires is torn (old, new, a mix, erased,
    /// or reading as an error until written).
    pub power_loss: Countdown,
    /// A read command that fails.
    pub fail_read: Countdown,
    /// A written block that fails (torn like a power loss, but power stays on).
    pub fail_write: Countdown,
    /// A multi-block write returns while the card still programs its last block (what
    /// embedded-sdmmc 0.10's `SdCard` does: it sends the stop token and returns without
    /// waiting for the card to be ready). The block lands when the next command arrives, and
    /// is lost if the power goes first.
    pub early_multi_block_ack: bool,
    /// After `insert`, every command fails until `mark_card_uninit` (a driver that still
    /// holds the previous card's state, as embedded-sdmmc's `SdCard` does).
    pub reinit_on_insert: bool,
}

/// Operation counters of an [`SdSim`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SdSimStats {
    /// Blocks read.
    pub blocks_read: u32,
    /// Blocks written.
    pub blocks_written: u32,
}

struct SdState<'a> {
    blocks: &'a mut [Block],
    /// The card's faults: raid1-testkit's model of one member (a removed card is a dead
    /// member), with the countdowns of [`SdFaults`] and a sticky read error per block for the
    /// first [`SD_TORN_UNREADABLE`] blocks (where a tear may leave one).
    member: FaultyMember<[u8; SD_TORN_UNREADABLE]>,
    stats: SdSimStats,
    rng: Rng,
    /// The last block of a multi-block write, still being programmed.
    pending: Option<(usize, Block)>,
    early_ack: bool,
    reinit_on_insert: bool,
    /// The card was inserted again and the driver was not told.
    stale_driver: bool,
}

/// The blocks at the start of an [`SdSim`] card (a volume's metadata: its data starts at
/// `volume::DATA_OFFSET`, 24) where a torn write may leave a block that reads as an error until
/// it is written. A data block torn so is not modelled: where the other member holds it in
/// sync the volume reads it there and rewrites it (md's read-error repair); where no member
/// does (the write in flight was to the card alone), it reads as an error, as on a card
/// without a mirror, and a recovery from the card stops there (md's rule).
pub const SD_TORN_UNREADABLE: usize = 24;

/// An SD card in caller-provided RAM, behind embedded-sdmmc's `BlockDevice` (`&self`
/// methods, so the state sits in a `RefCell`).
pub struct SdSim<'a> {
    state: RefCell<SdState<'a>>,
}

impl<'a> SdSim<'a> {
    /// A card over `blocks` (left as they are).
    pub fn new(blocks: &'a mut [Block], seed: u64) -> Self {
        SdSim {
            state: RefCell::new(SdState {
                blocks,
                member: FaultyMember::new([0; SD_TORN_UNREADABLE]),
                stats: SdSimStats::default(),
                rng: Rng::new(seed),
                pending: None,
                early_ack: false,
                reinit_on_insert: false,
                stale_driver: false,
            }),
        }
    }

    /// Arm faults (replacing those armed before).
    pub fn set_faults(&self, faults: SdFaults) {
        let mut st = self.state.borrow_mut();
        st.member.power_loss = faults.power_loss;
        st.member.fail_read = faults.fail_read;
        st.member.fail_write = faults.fail_write;
        st.early_ack = faults.early_multi_block_ack;
        st.reinit_on_insert = faults.reinit_on_insert;
    }

    /// Arm (or with `Countdown::OFF` disarm) one failed read, the other faults left as they
    /// are.
    pub fn set_fail_read(&self, at: Countdown) {
        self.state.borrow_mut().member.fail_read = at;
    }

    /// The driver forgets the previous card: the next command initialises the card again.
    pub fn mark_card_uninit(&self) {
        self.state.borrow_mut().stale_driver = false;
    }

    /// Pull the card out: every access fails with `Removed`.
    pub fn remove(&self) {
        self.state.borrow_mut().member.health = Health::Dead;
    }

    /// Put the card back (with whatever it holds).
    pub fn insert(&self) {
        let mut st = self.state.borrow_mut();
        st.member.health = Health::Healthy;
        st.stale_driver = st.reinit_on_insert;
    }

    /// Put in a different card: its content is random bytes. What the card taken out still
    /// had (a block torn unreadable, a block it was still programming) stays with it.
    pub fn replace_with_new_card(&self) {
        let mut st = self.state.borrow_mut();
        let SdState { blocks, rng, .. } = &mut *st;
        for block in blocks.iter_mut() {
            rng.fill(&mut block.contents);
        }
        st.member.forget_unit_faults();
        st.pending = None;
        st.member.health = Health::Healthy;
        st.stale_driver = st.reinit_on_insert;
    }

    /// Restore power after a power loss. A block the card was still programming is lost.
    pub fn power_cycle(&self) {
        let mut st = self.state.borrow_mut();
        st.pending = None;
        st.member.power_cycle();
    }

    /// True when power is on.
    pub fn powered(&self) -> bool {
        self.state.borrow().member.powered()
    }

    /// Counters.
    pub fn stats(&self) -> SdSimStats {
        self.state.borrow().stats
    }

    /// Make `block` read as an error until it is written (within the first
    /// [`SD_TORN_UNREADABLE`] blocks; elsewhere nothing changes). Returns whether it does.
    pub fn add_read_error(&self, block: usize) -> bool {
        self.state
            .borrow_mut()
            .member
            .add_read_errors(block as u64, 1);
        self.unreadable(block)
    }

    /// Whether `block` reads as an error until it is written (a tear left it so).
    pub fn unreadable(&self, block: usize) -> bool {
        self.state.borrow().member.unreadable(block as u64)
    }

    /// Whether a block whose write of `new` over `old` the power cut may read `got` (the
    /// model of [`SdFaults::power_loss`]'s tear, for checkers): each byte old or new, or
    /// erased. (A tear that leaves the block unreadable is seen as a read error.)
    pub fn torn_may_read(got: &Block, old: &Block, new: &Block) -> bool {
        let g = &got.contents;
        g.iter()
            .zip(old.contents.iter().zip(new.contents.iter()))
            .all(|(&g, (&o, &n))| g == o || g == n)
            || g.iter().all(|&b| b == 0)
            || g.iter().all(|&b| b == 0xFF)
    }

    /// Run `f` on the raw blocks (to inspect or corrupt them in tests).
    pub fn with_blocks<R>(&self, f: impl FnOnce(&mut [Block]) -> R) -> R {
        f(self.state.borrow_mut().blocks)
    }
}

/// The card's answer to a refused command.
fn sd_error(e: MemberError) -> SdSimError {
    match e {
        MemberError::Dead => SdSimError::Removed,
        MemberError::PowerLost => SdSimError::PowerLost,
        MemberError::ReadFailed | MemberError::MediaError => SdSimError::ReadFailed,
        MemberError::WriteFailed => SdSimError::WriteFailed,
    }
}

impl SdState<'_> {
    fn check(&mut self, start: BlockIdx, count: usize) -> Result<usize, SdSimError> {
        self.member.available().map_err(sd_error)?;
        if self.stale_driver {
            return Err(SdSimError::Removed);
        }
        // A new command waits for the card to finish the block it still programs.
        if let Some((at, block)) = self.pending.take() {
            self.blocks[at] = block;
        }
        let first = start.0 as usize;
        match first.checked_add(count) {
            Some(end) if end <= self.blocks.len() => Ok(first),
            _ => Err(SdSimError::OutOfRange),
        }
    }

    /// Leave `old` as it was, replace it, mix a prefix of `new` into it, leave it erased (a
    /// card's controller that lost the block's page mid-program reads it as its erased state,
    /// all zeros or all ones as the card's DATA_STAT_AFTER_ERASE says), or leave it reading as
    /// an error until it is written again (the page's ECC fails; within the first
    /// [`SD_TORN_UNREADABLE`] blocks, elsewhere the block is left old).
    fn tear(&mut self, index: usize, new: &Block) {
        match self.rng.below(5) {
            0 => {}
            4 => {
                self.member.add_read_errors(index as u64, 1);
            }
            1 => self.blocks[index] = new.clone(),
            2 => {
                let erased = if self.rng.below(2) == 0 { 0x00 } else { 0xFF };
                self.blocks[index].contents.fill(erased);
            }
            _ => {
                let cut = self.rng.below(Block::LEN as u64) as usize;
                self.blocks[index].contents[..cut].copy_from_slice(&new.contents[..cut]);
            }
        }
    }
}

impl BlockDevice for SdSim<'_> {
    type Error = SdSimError;

    fn read(&self, blocks: &mut [Block], start: BlockIdx) -> Result<(), SdSimError> {
        let mut st = self.state.borrow_mut();
        let first = st.check(start, blocks.len())?;
        let SdState { member, rng, .. } = &mut *st;
        member
            .read(rng, first as u64, blocks.len() as u64)
            .map_err(sd_error)?;
        for (i, b) in blocks.iter_mut().enumerate() {
            *b = st.blocks[first + i].clone();
        }
        st.stats.blocks_read += blocks.len() as u32;
        Ok(())
    }

    fn write(&self, blocks: &[Block], start: BlockIdx) -> Result<(), SdSimError> {
        let mut st = self.state.borrow_mut();
        let first = st.check(start, blocks.len())?;
        let SdState { member, rng, .. } = &mut *st;
        let (landed, failure) = match member.write(rng, first as u64, blocks.len() as u64) {
            Ok(()) => (blocks.len(), None),
            Err(f) => (f.landed as usize, Some(f)),
        };
        // Acknowledged while the card still programs the last block: it lands with the next
        // command.
        let early = failure.is_none() && st.early_ack && blocks.len() > 1;
        let landed_now = if early { landed - 1 } else { landed };
        for (i, b) in blocks.iter().enumerate().take(landed_now) {
            st.blocks[first + i] = b.clone();
        }
        st.stats.blocks_written += landed as u32;
        if early {
            st.pending = Some((first + landed_now, blocks[landed_now].clone()));
        }
        let Some(f) = failure else {
            return Ok(());
        };
        if f.torn {
            st.stats.blocks_written += 1;
            st.tear(first + landed, &blocks[landed]);
        }
        Err(sd_error(f.error))
    }

    fn num_blocks(&self) -> Result<BlockCount, SdSimError> {
        let st = self.state.borrow();
        if st.member.health == Health::Dead || st.stale_driver {
            return Err(SdSimError::Removed);
        }
        Ok(BlockCount(st.blocks.len() as u32))
    }
}

/// A simulated chip that can tell whether it still has power.
pub trait Chip {
    /// Whether the chip is powered (a power-loss countdown reached zero: it is not).
    fn chip_powered(&mut self) -> bool;
}

impl Chip for crate::volume::SdMember<SdSim<'_>> {
    fn chip_powered(&mut self) -> bool {
        self.dev.powered()
    }
}

impl<const W: usize, const E: usize, const B: usize, const S: usize> Chip
    for crate::nor::NorBlockStore<NorSim<'_, W, E>, B, S>
{
    fn chip_powered(&mut self) -> bool {
        self.flash_mut().powered()
    }
}

impl<
    const W: usize,
    const E: usize,
    const Z: usize,
    const ZB: usize,
    const ZS: usize,
    const C: usize,
> Chip for crate::nor::ZonedNorStore<NorSim<'_, W, E>, Z, ZB, ZS, C>
{
    fn chip_powered(&mut self) -> bool {
        self.flash_mut().powered()
    }
}

/// A member on a board whose power goes for every chip at once: it stops working for good
/// once the shared flag drops, and drops it when its own simulated chip loses power (for
/// power-cut sweeps and fuzzing of the whole volume).
pub struct Powered<'p, M> {
    /// The member.
    pub inner: M,
    /// The board's power, shared by its members.
    pub power: &'p core::cell::Cell<bool>,
}

impl<M: crate::volume::Member + Chip> Powered<'_, M> {
    fn run<T>(
        &mut self,
        op: impl FnOnce(&mut M) -> Result<T, crate::volume::MemberFault>,
    ) -> Result<T, crate::volume::MemberFault> {
        if !self.power.get() {
            return Err(crate::volume::MemberFault);
        }
        let r = op(&mut self.inner);
        if !self.inner.chip_powered() {
            self.power.set(false);
            return Err(crate::volume::MemberFault);
        }
        r
    }
}

impl<M: crate::volume::Member + Chip> crate::volume::Member for Powered<'_, M> {
    fn read(
        &mut self,
        sector: u64,
        blocks: &mut [Block],
    ) -> Result<(), crate::volume::MemberFault> {
        self.run(|m| m.read(sector, blocks))
    }

    fn write(&mut self, sector: u64, blocks: &[Block]) -> Result<(), crate::volume::MemberFault> {
        self.run(|m| m.write(sector, blocks))
    }

    fn sectors(&mut self) -> Result<u64, crate::volume::MemberFault> {
        self.run(|m| m.sectors())
    }

    fn reinit(&mut self) {
        self.inner.reinit()
    }

    fn refresh(&mut self) -> Result<bool, crate::volume::MemberFault> {
        self.run(|m| m.refresh())
    }

    fn damaged(&self) -> bool {
        self.inner.damaged()
    }
}

/// A blocking `NorFlash` behind embedded-storage-async's `NorFlash`: each program and erase
/// first waits `busy_polls` polls (the future returns `Pending` and wakes itself), as an async
/// driver waits for the chip's busy flag and lets the executor run other tasks meanwhile;
/// then it runs on the inner flash. Reads do not wait. With `busy_polls` 0 every call
/// completes at its first poll.
pub struct BusyFlash<F> {
    /// The flash that does the work.
    pub flash: F,
    /// Polls each program and erase waits.
    pub busy_polls: u32,
    /// Polls each read waits (0: reads complete at once).
    pub read_polls: u32,
    /// Polls answered `Pending` so far.
    pub waits: u32,
}

impl<F> BusyFlash<F> {
    /// `flash` whose programs and erases each wait `busy_polls` polls.
    pub const fn new(flash: F, busy_polls: u32) -> Self {
        BusyFlash {
            flash,
            busy_polls,
            read_polls: 0,
            waits: 0,
        }
    }

    /// Reads wait `polls` polls too (a read over DMA): an async caller can then be dropped
    /// between any two flash operations.
    pub const fn with_read_polls(mut self, polls: u32) -> Self {
        self.read_polls = polls;
        self
    }

    async fn busy(&mut self) {
        let polls = self.busy_polls;
        Wait(polls).await;
        self.waits = self.waits.wrapping_add(polls);
    }
}

/// A future that returns `Pending` (waking itself) `n` times, then `Ready`: an operation in
/// flight (a DMA transfer, a busy chip) for async examples and tests; `Wait(1)` gives the
/// executor's other tasks a turn.
pub struct Wait(pub u32);

impl core::future::Future for Wait {
    type Output = ();
    fn poll(
        mut self: core::pin::Pin<&mut Self>,
        cx: &mut core::task::Context<'_>,
    ) -> core::task::Poll<()> {
        if self.0 == 0 {
            return core::task::Poll::Ready(());
        }
        self.0 -= 1;
        cx.waker().wake_by_ref();
        core::task::Poll::Pending
    }
}

impl<F: ErrorType> ErrorType for BusyFlash<F> {
    type Error = F::Error;
}

impl<F: NorFlash> embedded_storage_async::nor_flash::ReadNorFlash for BusyFlash<F> {
    const READ_SIZE: usize = F::READ_SIZE;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), F::Error> {
        Wait(self.read_polls).await;
        self.flash.read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.flash.capacity()
    }
}

impl<F: NorFlash> embedded_storage_async::nor_flash::NorFlash for BusyFlash<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), F::Error> {
        self.busy().await;
        self.flash.erase(from, to)
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), F::Error> {
        self.busy().await;
        self.flash.write(offset, bytes)
    }
}
