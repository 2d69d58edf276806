//! The NOR block store, written once: `nor.rs` includes this file as `nor::blocking` (over the
//! blocking flash traits, `async` and `.await` removed by `#[io]`) and as `nor::asynch` (over
//! the async ones). The design and its power-loss argument: `docs/EMBEDDED.md`, "NOR member".

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum SectorKind {
    /// Valid header: slots `0..next_free` are used, the rest are blank.
    Active,
    /// No valid header (blank, torn erase, torn header, retired): erase before use.
    NeedsErase,
    /// An erase or header program failed in this session: not used until the next mount.
    Bad,
}

/// A sector's state in RAM: 8 bytes (the kind and a flag share a word with the erase count).
#[derive(Debug, Clone, Copy)]
struct SectorState {
    next_free: u16,
    live: u16,
    /// The erase count in the low 28 bits, [`HELD`] in bit 28, [`RETIRE_USED`] in bit 29, the
    /// kind in the top 2.
    erase: u32,
}

/// Erase counts kept in RAM (far beyond any NOR part's endurance).
const ERASE_COUNT_MASK: u32 = (1 << 28) - 1;
/// A sector that holds the record of damage the mount found (a broken header, an entry
/// beyond correction): not erased, nor collected, until the caller has acted on the damage
/// ([`NorBlockStore::release_damage`]).
const HELD: u32 = 1 << 28;
/// An active sector whose retire unit is not blank (see [`RETIRE_SLACK`]): it is erased
/// without programming that unit again.
const RETIRE_USED: u32 = 1 << 29;

const _: () = assert!(core::mem::size_of::<SectorState>() == 8);

impl SectorState {
    const fn new(kind: SectorKind, erase_count: u32) -> Self {
        SectorState {
            next_free: 0,
            live: 0,
            erase: erase_count & ERASE_COUNT_MASK | (kind as u32) << 30,
        }
    }

    const fn kind(&self) -> SectorKind {
        match self.erase >> 30 {
            0 => SectorKind::Active,
            1 => SectorKind::NeedsErase,
            _ => SectorKind::Bad,
        }
    }

    const fn erase_count(&self) -> u32 {
        self.erase & ERASE_COUNT_MASK
    }

    const fn retire_used(&self) -> bool {
        self.erase & RETIRE_USED != 0
    }

    const fn held(&self) -> bool {
        self.erase & HELD != 0
    }

    /// Active with a free slot left (of `n` per sector).
    fn has_room(&self, n: u16) -> bool {
        self.kind() == SectorKind::Active && self.next_free < n
    }

    /// Active, with some slots used and some free: the sector being filled.
    fn begun(&self, n: u16) -> bool {
        self.has_room(n) && self.next_free > 0
    }

    /// Active with every slot used (or closed).
    fn full(&self, n: u16) -> bool {
        self.kind() == SectorKind::Active && self.next_free == n
    }

    /// Full and not held as the record of damage: a candidate for collection.
    fn collectable(&self, n: u16) -> bool {
        self.full(n) && !self.held()
    }
}

/// What an entry says, after the retries for read bit flips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Blank,
    /// Programmed, but torn: no body that checks, and no commit.
    Dead,
    /// A body that checks, not committed (most reads of the commit unit are blank): the
    /// power went before the commit, or while it was programmed.
    Uncommitted {
        block: u32,
        seq: u32,
        data_crc: u32,
    },
    Committed {
        block: u32,
        seq: u32,
        data_crc: u32,
        /// Most reads found the commit unit all zero. Not firm: a commit torn half way, or one
        /// that lost bits, which may not read the same at the next mount.
        firm: bool,
    },
    /// Committed (the commit unit is programmed), but the body fails its CRC beyond what one
    /// flipped bit explains: an acknowledged entry whose block and sequence are unknown.
    Damaged {
        /// Most reads found the commit unit all zero: the body was programmed and read back
        /// whole before it (no torn program leaves this), so bits were lost since.
        firm: bool,
    },
}

/// What a sector header says, after the retries for read bit flips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header {
    /// Valid and active: the erase count, whether the retire unit shows a few zero bits, and
    /// whether either unit reads otherwise than as programmed (a few bits off: the sector is
    /// kept, but takes no new copy, see `scan`).
    Live(u32, bool, bool),
    /// Blank, torn, retired or never finished: erase before use.
    Erase,
    /// The ACTIVE pattern over a (nearly) blank retire unit, but a body that fails its CRC
    /// beyond correction: a live sector whose header was damaged since, or one whose erase
    /// the power cut after its blocks were all copied. Erased before use; whether it held
    /// anything that is not elsewhere is decided after the scan (see `judge_broken`).
    Broken,
}

/// 512-byte blocks with in-place rewrite semantics over NOR flash, power-safe.
///
/// `BLOCKS` is the number of logical blocks offered, `SECTORS` the number of erase sectors
/// used from the start of the flash. RAM: `2 * BLOCKS + 8 * SECTORS` bytes plus a few words.
/// Requires `BLOCKS < (SECTORS - 2) * slots_per_sector` so that garbage collection always
/// has a victim that fits in the reserve.
pub struct NorBlockStore<F: NorFlash, const BLOCKS: usize, const SECTORS: usize> {
    flash: F,
    map: [u16; BLOCKS],
    sectors: [SectorState; SECTORS],
    slots_per_sector: u16,
    data_start: u32,
    next_seq: u32,
    wear_spread: u32,
    stats: NorStats,
    /// Free slots of the active sectors: what `sectors` says, kept as it changes, so that a
    /// write does not sum the whole table (see `bookkeeping_holds`).
    free: u32,
    /// The sector `alloc_slot` fills, while it is the lowest-numbered one begun and not full
    /// ([`NO_SECTOR`]: look it up).
    open: u16,
    /// Whether the sector table changed (an erase, a sector filled or closed, a mount, a new
    /// spread) since `level_wear` last found nothing to do: until it does, the answer stands.
    wear_due: bool,
    /// The slot whose commit unit a write began to program, (block, slot), until the map
    /// takes it or a retry commits a newer copy: found at the next call when the write stopped
    /// before that (its async future dropped, a read error in its read-back, or a commit
    /// program that failed or did not read back, with no retry committed), and decided then
    /// as a mount would (see `resolve`). Such a commit may read committed at the next mount.
    pending: Option<(u32, u16)>,
    /// The slot a program took and had not finished with when its call stopped (an async
    /// caller's future dropped): finished or given back by the next call (see `resume`).
    /// Without it, every dropped program used a slot up until its sector was collected, and
    /// a caller whose writes kept timing out while collections ran used the reserve up for
    /// good: no sector had as few live blocks as there were free slots.
    ///
    /// Room for one in the async store, none in the blocking one ([`CLAIMS`]).
    claimed: [Option<Claim>; CLAIMS],
    /// False after a failed [`Self::remount`]: the map and the sector table are not the
    /// flash's, so nothing is read or written.
    mounted: bool,
}

/// A program in a fresh slot: what it writes there, and whether it is a garbage
/// collection's copy of a block (whose data are still at the block's mapped slot).
#[derive(Debug, Clone, Copy)]
struct Claim {
    block: u32,
    slot: u16,
    seq: u32,
    data_crc: u32,
    moving: bool,
}

/// How many undecided copies one scan keeps: those with the highest sequence numbers. A
/// power cut leaves one write undecided, and the mount after it settles it, so the copies
/// that still need it are the newest; older ones are stale copies of settled blocks.
const UNDECIDED: usize = 4;

/// The copies a scan found undecided: (block, sequence number) of each copy that is
/// uncommitted or committed by a commit unit that is not all zero, the newest kept.
struct Undecided {
    found: [(u32, u32); UNDECIDED],
    len: usize,
    /// A sector whose header needed a correction (the first one found).
    worn_header: Option<usize>,
    /// Sectors whose header is [`Header::Broken`] (the first [`BROKEN`] found).
    broken: [u16; BROKEN],
    broken_len: usize,
}

/// How many sectors with a broken header one scan judges; one more is counted as damage
/// without a look (a power cut breaks at most the header of the sector it was erasing).
const BROKEN: usize = 2;

impl Undecided {
    const fn new() -> Self {
        Undecided {
            found: [(0, 0); UNDECIDED],
            len: 0,
            worn_header: None,
            broken: [0; BROKEN],
            broken_len: 0,
        }
    }

    fn note(&mut self, block: u32, seq: u32) {
        if self.len < UNDECIDED {
            self.found[self.len] = (block, seq);
            self.len += 1;
        } else if let Some(oldest) = self.found.iter_mut().min_by_key(|(_, s)| *s) {
            if oldest.1 < seq {
                *oldest = (block, seq);
            }
        }
    }
}

type Res<T, F> = Result<T, NorError<<F as embedded_storage::nor_flash::ErrorType>::Error>>;

#[io]
impl<F: NorFlash, const BLOCKS: usize, const SECTORS: usize> NorBlockStore<F, BLOCKS, SECTORS> {
    /// Slots per erase sector for this flash.
    pub const SLOTS_PER_SECTOR: usize = sector_layout(F::ERASE_SIZE).1;

    /// Mount the store: scan every sector header and entry, rebuild the block map, and
    /// finish any garbage collection a power loss interrupted. A blank flash mounts as an
    /// all-zero store. Programs nothing, unless the last write before a power loss was left
    /// undecided (see `settle`) or space must be reclaimed later. On failure the flash
    /// driver comes back with the error; a mirror then takes [`Self::unmounted`] over it, so
    /// that the volume opens from its other member.
    pub async fn mount(flash: F) -> Result<Self, Refused<NorError<F::Error>, F>> {
        Self::try_mount(flash)
            .await
            .map_err(|(error, driver)| Refused { error, driver })
    }

    /// A store over `flash` that is not mounted: every read and write fails with
    /// [`NorError::NotMounted`] until [`Self::remount`] succeeds. For a flash whose mount
    /// failed at boot (a bus or a part failing for a while): the mirror opens from the card
    /// alone with it, and `Mirror::rejoin` of the flash mounts it again and rewrites it in
    /// full. Refused only for a geometry that does not fit the flash.
    pub fn unmounted(flash: F) -> Result<Self, Refused<NorError<F::Error>, F>> {
        match Self::misfit(flash.capacity()) {
            Some(error) => Err(Refused {
                error,
                driver: flash,
            }),
            None => Ok(Self::blank(flash)),
        }
    }

    async fn try_mount(flash: F) -> Result<Self, (NorError<F::Error>, F)> {
        if let Some(error) = Self::misfit(flash.capacity()) {
            return Err((error, flash));
        }
        let mut store = Self::blank(flash);
        store.mounted = true;
        if let Err(e) = store.recover::<false>(None, true).await {
            return Err((e, store.flash));
        }
        if let Some(NorWarning::TightProvisioning(p)) = store.warning() {
            crate::log::log_warn!(
                "nor: {=u32} blocks of at most {=u32}: a collection may copy {=u32} blocks to free one slot",
                p.blocks,
                p.max_blocks,
                p.worst_copies
            );
        }
        crate::log::log_debug!(
            "nor: mounted, {=u32} free slots, next sequence {=u32}",
            store.free_slots() as u32,
            store.next_seq
        );
        Ok(store)
    }

    /// Why this store's geometry does not fit a flash of `capacity` bytes, if it does not.
    pub(super) fn misfit(capacity: usize) -> Option<NorError<F::Error>> {
        let slots = sector_layout(F::ERASE_SIZE).1;
        let geometry = |what, value: usize| NorError::Geometry {
            what,
            value: value as u32,
        };
        if F::ERASE_SIZE % BLOCK_LEN != 0 || slots == 0 {
            Some(geometry("ERASE_SIZE", F::ERASE_SIZE))
        } else if F::WRITE_SIZE == 0 || 16 % F::WRITE_SIZE != 0 {
            Some(geometry("WRITE_SIZE", F::WRITE_SIZE))
        } else if F::READ_SIZE == 0 || 16 % F::READ_SIZE != 0 {
            Some(geometry("READ_SIZE", F::READ_SIZE))
        } else if capacity < SECTORS * F::ERASE_SIZE {
            Some(geometry("capacity", capacity))
        } else if SECTORS < 3 || SECTORS * slots > MAX_SLOTS {
            Some(geometry("SECTORS", SECTORS))
        } else if BLOCKS == 0 || BLOCKS >= (SECTORS - 2) * slots {
            Some(geometry("BLOCKS", BLOCKS))
        } else {
            None
        }
    }

    /// A store over `flash`, not mounted, whose geometry was checked ([`Self::misfit`]).
    pub(super) fn blank(flash: F) -> Self {
        let (meta, slots) = sector_layout(F::ERASE_SIZE);
        NorBlockStore {
            flash,
            map: [NO_SLOT; BLOCKS],
            sectors: [SectorState::new(SectorKind::NeedsErase, 0); SECTORS],
            slots_per_sector: slots as u16,
            data_start: (meta * BLOCK_LEN) as u32,
            next_seq: 1,
            wear_spread: WEAR_SPREAD,
            stats: NorStats::default(),
            free: 0,
            open: NO_SECTOR,
            wear_due: true,
            pending: None,
            claimed: [None; CLAIMS],
            mounted: false,
        }
    }

    /// What a mount does after the scan: settle the undecided writes it found, and renew a
    /// worn header. Returns the map's fingerprint as the scan left it when `FINGERPRINT` (0
    /// otherwise: a firmware that mounts one store does not carry the code); when it is not
    /// `expect`, nothing is written. `guard`: see [`Self::scan`].
    async fn recover<const FINGERPRINT: bool>(
        &mut self,
        expect: Option<u32>,
        guard: bool,
    ) -> Res<u32, F> {
        let undecided = self.scan(guard).await?;
        let scanned = if FINGERPRINT {
            self.map_fingerprint()
        } else {
            0
        };
        if FINGERPRINT && expect.is_some_and(|e| e != scanned) {
            return Ok(scanned);
        }
        self.settle(&undecided).await?;
        self.renew(undecided.worn_header).await?;
        Ok(scanned)
    }

    /// A CRC-32C of the map: which slot holds each block's newest copy. A mount whose scan
    /// finds the flash as this store left it (nothing pending, see [`Self::quiesce`]) maps
    /// every block to the same slot: the writes since the last mount wrote their decisions
    /// down, and a collection's copies are newer than what they copied.
    pub(super) fn map_fingerprint(&self) -> u32 {
        self.map
            .iter()
            .fold(0, |crc, slot| crc32c_update(crc, &slot.to_le_bytes()))
    }

    /// Decide a write left pending (a dropped future, a failed read-back), as the next read
    /// or write would: afterwards the map is what a mount would find.
    pub(super) async fn quiesce(&mut self) -> Res<(), F> {
        if !self.mounted {
            return Err(NorError::NotMounted);
        }
        self.resolve().await
    }

    /// Mount the store again in place, as [`Self::mount`] does after a reset: the map, the
    /// sector table and the counters are rebuilt from the flash. Sectors given up in this
    /// session (an erase or a header program that failed, see [`Self::gave_up_sectors`]) are
    /// erased again when needed, as after a reboot. What the last mount decided and only the
    /// map remembered (an undecided write whose settling failed) is decided again, so a
    /// caller that mirrors this store rewrites every block from the other copy afterwards. On
    /// failure every read and write fails with [`NorError::NotMounted`] until a remount
    /// succeeds.
    pub async fn remount(&mut self) -> Res<(), F> {
        self.remount_with::<false>(None, true).await.map(|_| ())
    }

    /// [`Self::remount`], and the fingerprint of the map as the scan of the flash left it,
    /// before the mount wrote anything down (see [`Self::map_fingerprint`]). When that is not
    /// `expect`, the mount writes nothing (what changed stays on the flash for the next mount
    /// to find) and is not to be used. `guard`: see [`Self::scan`].
    pub(super) async fn remount_scanned(
        &mut self,
        expect: Option<u32>,
        guard: bool,
    ) -> Res<u32, F> {
        self.remount_with::<true>(expect, guard).await
    }

    async fn remount_with<const FINGERPRINT: bool>(
        &mut self,
        expect: Option<u32>,
        guard: bool,
    ) -> Res<u32, F> {
        self.map = [NO_SLOT; BLOCKS];
        self.sectors = [SectorState::new(SectorKind::NeedsErase, 0); SECTORS];
        self.next_seq = 1;
        self.stats = NorStats::default();
        self.free = 0;
        self.open = NO_SECTOR;
        self.wear_due = true;
        self.pending = None;
        self.claimed = [None; CLAIMS];
        self.mounted = false;
        let scanned = self.recover::<FINGERPRINT>(expect, guard).await?;
        self.mounted = true;
        Ok(scanned)
    }

    /// Whether an erase or a header program failed in this session and left a sector out of
    /// use until the next mount (or [`Self::remount`]): a part that failed for a while may
    /// have used up its free space this way.
    pub fn gave_up_sectors(&self) -> bool {
        self.sectors.iter().any(|s| s.kind() == SectorKind::Bad)
    }

    /// [`Self::remount`] when sectors were given up in this session
    /// ([`Self::gave_up_sectors`]) or the last mount failed (the store serves nothing until
    /// one succeeds): `Ok(true)` when it mounted again, `Ok(false)` when there was nothing to
    /// take up.
    pub async fn remount_if_needed(&mut self) -> Res<bool, F> {
        if self.mounted && !self.gave_up_sectors() {
            return Ok(false);
        }
        crate::log::log_warn!("nor: sectors given up, or not mounted: mounting again");
        self.remount().await?;
        Ok(true)
    }

    /// Give the flash driver back.
    pub fn into_inner(self) -> F {
        self.flash
    }

    /// The flash driver (for fault injection in tests).
    pub fn flash_mut(&mut self) -> &mut F {
        &mut self.flash
    }

    /// Number of logical blocks.
    pub const fn num_blocks(&self) -> u32 {
        BLOCKS as u32
    }

    /// Set the erase-count spread that triggers static wear leveling (default
    /// [`WEAR_SPREAD`]; `u32::MAX` turns it off). A smaller spread evens wear more tightly at
    /// the cost of more relocations.
    pub fn set_wear_spread(&mut self, spread: u32) {
        self.wear_spread = spread;
        self.wear_due = true;
    }

    /// Work counters since mount.
    pub fn stats(&self) -> NorStats {
        self.stats
    }

    /// How much room this store's configuration leaves its garbage collection.
    pub const fn provisioning(&self) -> Provisioning {
        provisioning(BLOCKS, SECTORS, F::ERASE_SIZE)
    }

    /// What the caller should know of the configuration: `Some` when it mounts but sits at
    /// the edge of the capacity rule (also logged at mount).
    pub const fn warning(&self) -> Option<NorWarning> {
        self.provisioning().warning()
    }

    /// True when the mount found a committed entry or a live sector header that fails its CRC
    /// beyond correction. The block it belonged to is unknown, so some block may read as an
    /// older version than the one acknowledged: the caller must rewrite every block from
    /// another copy (the mirror recovers the whole NOR member from the SD card) before it
    /// trusts this store's content again.
    pub fn damaged(&self) -> bool {
        self.stats.damaged != 0
    }

    /// The caller has acted on the damage the mount found ([`Self::damaged`]): the blocks are
    /// being rewritten from another copy, and that is recorded where the next mount will find
    /// it (a mirror's metadata on this store, marking it as rebuilt in full), or the caller
    /// keeps this store as it is. Until then the sectors that hold the record of the damage
    /// (a broken header, an entry beyond correction) are neither erased nor collected: a
    /// collection that made room by erasing one could wipe the only record, and a power cut
    /// before the caller's own record then left a store that mounted clean and served the
    /// older copy, or zeros (the `nor_zones` fuzz target; the case of the mirror is
    /// `a_cut_while_a_damaged_flash_is_rewritten_loses_no_sector`). Held sectors cost room:
    /// a store at the edge of the capacity rule may answer `NoSpace` until this is called.
    /// [`Self::damaged`] stays true until the next mount.
    pub fn release_damage(&mut self) {
        for s in self.sectors.iter_mut() {
            s.erase &= !HELD;
        }
        self.wear_due = true;
    }

    /// Whether some sector is held as the record of damage (see [`Self::release_damage`]).
    pub fn holds_damage(&self) -> bool {
        self.sectors.iter().any(|s| s.held())
    }

    /// Free slots in sectors that are ready to be programmed.
    pub fn free_slots(&self) -> usize {
        self.free as usize
    }

    /// Free slots of sector state `s`: what it adds to [`Self::free_slots`].
    fn free_in(&self, s: &SectorState) -> u32 {
        if s.kind() == SectorKind::Active {
            u32::from(self.slots_per_sector.saturating_sub(s.next_free))
        } else {
            0
        }
    }

    /// Free slots of the whole table, counted from scratch.
    fn count_free(&self) -> u32 {
        self.sectors.iter().map(|s| self.free_in(s)).sum()
    }

    /// Change the state of sector `s`, and what follows from the table: the free count, and
    /// that wear leveling must look again. (The sector being filled stays: no state set here
    /// is begun and not full, so the lowest such sector is still the one it was.)
    fn set_sector(&mut self, s: usize, state: SectorState) {
        self.free = self.free - self.free_in(&self.sectors[s]) + self.free_in(&state);
        self.sectors[s] = state;
        self.wear_due = true;
    }

    /// Whether what the store keeps beside its sector table agrees with a count from scratch:
    /// the free slots, the sector being filled (when it is still begun and not full, the
    /// lowest-numbered such sector), and wear leveling's "nothing to do" (its search finds
    /// nothing). For tests: the writes rely on these instead of searching the table.
    #[doc(hidden)]
    pub fn bookkeeping_holds(&self) -> bool {
        let n = self.slots_per_sector;
        let begun = |s: &SectorState| s.begun(n);
        // A kept sector that is full, or no longer active, is looked up again: fine. One still
        // begun must be the lowest-numbered such sector, the one a search would find.
        let open_ok = !self.sectors.get(usize::from(self.open)).is_some_and(begun)
            || self.sectors.iter().position(begun) == Some(usize::from(self.open));
        // Wear leveling skips its search until the table changes: only right while the
        // search would find nothing.
        let wear_ok = self.wear_due || self.wear_victim().is_none();
        self.count_free() == self.free && open_ok && wear_ok
    }

    /// Read logical block `block`. A block never written reads as zeros.
    pub async fn read_block(&mut self, block: u32, buf: &mut [u8; BLOCK_LEN]) -> Res<(), F> {
        self.mapped(block)?;
        self.resolve().await?;
        self.read_mapped(block, buf).await
    }

    /// [`Self::read_block`] of a block in range, with nothing pending.
    async fn read_mapped(&mut self, block: u32, buf: &mut [u8; BLOCK_LEN]) -> Res<(), F> {
        let slot = self.map[block as usize];
        if slot == NO_SLOT {
            buf.fill(0);
            return Ok(());
        }
        let corrected = self.stats.corrected;
        let Some((_, data_crc)) = self.mapped_entry(block, slot).await? else {
            return Err(NorError::Corrupt { block });
        };
        self.read_data(slot, data_crc, block, buf).await?;
        if self.stats.corrected != corrected {
            // The entry needed a correction: write the block again, so that a second flip in
            // that entry cannot make it uncorrectable. Best effort: the read itself has
            // succeeded.
            self.refresh(block, buf).await;
        }
        Ok(())
    }

    /// Write `block` again (best effort). Out of line, so that the read path's frame does not
    /// carry the write path's.
    #[inline(never)]
    async fn refresh(&mut self, block: u32, data: &[u8; BLOCK_LEN]) {
        if self.write_placed(block, data).await.is_ok() {
            self.stats.refreshed = self.stats.refreshed.wrapping_add(1);
        }
    }

    /// Write logical block `block`. When this returns `Ok`, the block is durable.
    pub async fn write_block(&mut self, block: u32, data: &[u8; BLOCK_LEN]) -> Res<(), F> {
        self.mapped(block)?;
        self.resolve().await?;
        self.write_placed(block, data).await
    }

    /// [`Self::write_block`] of a block in range, with nothing pending.
    async fn write_placed(&mut self, block: u32, data: &[u8; BLOCK_LEN]) -> Res<(), F> {
        self.place(block, data).await?;
        self.stats.host_writes = self.stats.host_writes.wrapping_add(1);
        Ok(())
    }

    /// Decide the slot a write left pending (see `pending`) as a mount decides a copy: a
    /// committed one is the block's copy (and, when its commit is not firm, written again so
    /// that the next mount cannot read it otherwise); an uncommitted one is written over with
    /// the block's older copy, for the same reason. Without this, a dropped write that had
    /// programmed its commit read as the old version until the next mount and as the new one
    /// after it. Best effort, as `settle` is.
    #[inline(never)]
    async fn resolve(&mut self) -> Res<(), F> {
        if let Some(claim) = self.claimed.first().copied().flatten() {
            // Cleared only once done: a call dropped in here leaves it for the next one
            // (finishing a copy again programs only what still reads blank).
            self.resume(claim).await?;
            self.claimed = [None; CLAIMS];
        }
        // Taken only once its entry is read: a future dropped during that read leaves it
        // pending for the next call (taken before, it was lost, and the write read as the
        // old version until the next mount and as the new one after it).
        let Some((block, slot)) = self.pending else {
            return Ok(());
        };
        let entry = self.read_entry(slot).await?;
        self.pending = None;
        let (seq, firm) = match entry {
            Entry::Committed {
                block: b,
                seq,
                firm,
                ..
            } if b == block => {
                self.map_to(block, slot);
                (seq, firm)
            }
            Entry::Uncommitted { block: b, seq, .. } if b == block => (seq, false),
            _ => return Ok(()),
        };
        if !firm {
            let mut undecided = Undecided::new();
            undecided.note(block, seq);
            self.settle(&undecided).await?;
        }
        Ok(())
    }

    /// Finish what a dropped call left in the slot it took (see `claimed`). A garbage
    /// collection's copy is finished: its data are read again where the block is mapped, and
    /// what of the slot still reads blank is programmed (the entry, the data, the commit),
    /// then read back, as any copy. A host write's data went with its caller: its slot is
    /// given back when it reads blank and is the last one taken in its sector; one programmed
    /// in part stays used (and one whose commit began is `pending`).
    ///
    /// A unit is programmed here only when two reads agree that it is blank: a future dropped
    /// while the part programmed it leaves it programmed or not begun (a drop is not a power
    /// cut, which can leave weak cells that read erased; the mount never uses such a slot).
    async fn resume(&mut self, claim: Claim) -> Res<(), F> {
        let Claim {
            block,
            slot,
            seq,
            data_crc,
            moving,
        } = claim;
        let n = self.slots_per_sector;
        let s = self.sector_of(slot);
        let from = self.map[block as usize];
        if moving && from != NO_SLOT && self.sector_of(from) != s {
            let mut buf = [0u8; BLOCK_LEN];
            match self.read_data(from, data_crc, block, &mut buf).await {
                Ok(()) => {}
                // A copy that failed its CRC moves under one it cannot match (see `collect`).
                Err(NorError::Corrupt { .. }) if !crc32c(&buf) == data_crc => {}
                Err(NorError::Corrupt { .. }) => return Ok(()),
                Err(e) => return Err(e),
            }
            let body = sealed([block, seq, data_crc]);
            // A copy that does not read back, or a program that fails, leaves the slot used
            // (as in `program_slot`); the collection goes on in other slots when it runs again.
            match self.program_units(block, slot, &body, &buf, true).await? {
                Ok(true) => {
                    self.took(block, slot);
                    self.stats.relocations = self.stats.relocations.wrapping_add(1);
                }
                Ok(false) => self.stats.failed_ops = self.stats.failed_ops.wrapping_add(1),
                Err(e) => match self.check_op(Err(e)) {
                    Err(NorError::Flash(_)) => {}
                    other => return other,
                },
            }
            return Ok(());
        }
        let state = self.sectors[s];
        if self.pending == Some((block, slot))
            || state.kind() != SectorKind::Active
            || state.next_free != slot % n + 1
            || !self
                .range_is_blank(self.entry_addr(slot), ENTRY_LEN as u32)
                .await?
            || !self
                .range_is_blank(self.data_addr(slot), BLOCK_LEN as u32)
                .await?
        {
            return Ok(());
        }
        self.sectors[s].next_free -= 1;
        self.free += 1;
        Ok(())
    }

    /// `slot` holds a copy of `block` that `program_units` committed and read back: the map
    /// takes it, and the decision that commit left pending (this very slot's) is made. Only
    /// that one: a decision pending for another slot or block stays for `resolve`.
    fn took(&mut self, block: u32, slot: u16) {
        if self.pending == Some((block, slot)) {
            self.pending = None;
        }
        self.map_to(block, slot);
    }

    /// `slot` holds the newest copy of `block`: map it there, and move the live count.
    fn map_to(&mut self, block: u32, slot: u16) {
        let old = self.map[block as usize];
        if old != NO_SLOT {
            let s = self.sector_of(old);
            self.sectors[s].live -= 1;
        }
        self.map[block as usize] = slot;
        let s = self.sector_of(slot);
        self.sectors[s].live += 1;
    }

    /// Make room and program `data` as the newest copy of `block`.
    async fn place(&mut self, block: u32, data: &[u8; BLOCK_LEN]) -> Res<(), F> {
        self.ensure_free().await?;
        self.level_wear().await?;
        self.program_slot(block, data, crc32c(data), false).await
    }

    /// The sequence number and data CRC of `slot`, the copy of `block` the map holds. The
    /// mount decided that it is committed: a commit unit that now reads otherwise (a torn
    /// commit whose cells read unstable) does not undo that decision.
    async fn mapped_entry(&mut self, block: u32, slot: u16) -> Res<Option<(u32, u32)>, F> {
        Ok(match self.read_entry(slot).await? {
            Entry::Committed {
                block: b,
                seq,
                data_crc,
                ..
            }
            | Entry::Uncommitted {
                block: b,
                seq,
                data_crc,
            } if b == block => Some((seq, data_crc)),
            _ => None,
        })
    }

    /// Write down the fate of the writes the mount found undecided: a block whose newest copy
    /// is uncommitted, or committed by a commit unit that is not all zero, is written again
    /// with what this mount reads for it (the older copy, or the newer one). A torn commit
    /// may read committed at one mount and not at the next; without this, a block served as
    /// new could read as old later (and the old copy may be erased by then), or the reverse.
    /// Best effort: a block that cannot be read or written is left (the map still serves
    /// the decided copy for this session).
    async fn settle(&mut self, undecided: &Undecided) -> Res<(), F> {
        let mut buf = [0u8; BLOCK_LEN];
        for &(block, seq) in &undecided.found[..undecided.len] {
            let Some(&slot) = self.map.get(block as usize) else {
                continue;
            };
            if slot != NO_SLOT {
                match self.mapped_entry(block, slot).await? {
                    Some((current, _)) if current > seq => continue,
                    _ => {}
                }
            }
            match self.read_mapped(block, &mut buf).await {
                Ok(()) => {}
                Err(NorError::Flash(e)) => return Err(NorError::Flash(e)),
                Err(_) => continue,
            }
            match self.place(block, &buf).await {
                Ok(()) => self.stats.settled = self.stats.settled.wrapping_add(1),
                Err(NorError::Flash(e)) => return Err(NorError::Flash(e)),
                Err(_) => crate::log::log_warn!("nor: block {=u32} left undecided", block),
            }
        }
        Ok(())
    }

    /// Collect sector `s`, whose header needed a correction, so that it gets a fresh header:
    /// a second flip in the old one would make it uncorrectable, and the sector's blocks
    /// would be lost (the entries are safe: a block read through a corrected entry is written
    /// again). Only when its live blocks fit outside it once the reserve is made; otherwise
    /// the next mount tries again.
    async fn renew(&mut self, worn: Option<usize>) -> Res<(), F> {
        let Some(s) = worn.filter(|&s| !self.sectors[s].held()) else {
            return Ok(());
        };
        let n = self.slots_per_sector;
        let before = self.sectors[s].erase_count();
        // Like any collection: its live blocks must fit elsewhere (the reserve is made first,
        // and the sector's own slots come back when it is erased).
        let room = usize::from(self.sectors[s].live) + 1;
        // Free slots outside the sector: its own may not take copies of its blocks.
        let elsewhere = |st: &Self| {
            let own = &st.sectors[s];
            st.free_slots() - usize::from(n.saturating_sub(own.next_free))
        };
        let mut made = self.ensure_free().await;
        for _ in 0..SECTORS {
            if made.is_err() || elsewhere(self) >= room {
                break;
            }
            made = self.collect_one().await;
        }
        match made {
            Ok(()) => {}
            Err(NorError::Flash(e)) => return Err(NorError::Flash(e)),
            // Opportunistic: no room now; the next mount tries again.
            Err(_) => return Ok(()),
        }
        let state = self.sectors[s];
        let collected = state.kind() != SectorKind::Active || state.erase_count() != before;
        if !collected && elsewhere(self) >= room {
            self.set_sector(
                s,
                SectorState {
                    next_free: n,
                    ..state
                },
            );
            match self.collect(s).await {
                Ok(()) => {}
                Err(NorError::Flash(e)) => return Err(NorError::Flash(e)),
                Err(_) => return Ok(()),
            }
        }
        let state = self.sectors[s];
        if state.kind() == SectorKind::Active && state.erase_count() != before {
            self.stats.renewed = self.stats.renewed.wrapping_add(1);
        }
        Ok(())
    }

    /// Whether the header body of sector `s`, just read as corrected, fails its CRC on every
    /// one of [`READ_TRIES`] more reads: a bit lost for good, not a read flip.
    async fn header_worn(&mut self, s: usize) -> Res<bool, F> {
        let mut body = [0u8; 16];
        for _ in 0..READ_TRIES {
            self.flash
                .read((s * F::ERASE_SIZE) as u32, &mut body)
                .await
                .map_err(NorError::Flash)?;
            if is_sealed(&body) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn mapped(&self, block: u32) -> Res<u16, F> {
        if !self.mounted {
            return Err(NorError::NotMounted);
        }
        match self.map.get(block as usize) {
            Some(&slot) => Ok(slot),
            None => Err(NorError::OutOfRange {
                block,
                blocks: BLOCKS as u32,
            }),
        }
    }

    /// The geometry word of a sector header: slots per sector, and the data's first block.
    fn geometry(&self) -> u32 {
        u32::from(self.slots_per_sector) | (self.data_start / BLOCK_LEN as u32) << 16
    }

    fn sector_of(&self, slot: u16) -> usize {
        usize::from(slot / self.slots_per_sector)
    }

    fn entry_addr(&self, slot: u16) -> u32 {
        let n = self.slots_per_sector;
        let sector = u32::from(slot / n);
        sector * F::ERASE_SIZE as u32
            + (SECTOR_HEADER_LEN + usize::from(slot % n) * ENTRY_LEN) as u32
    }

    fn data_addr(&self, slot: u16) -> u32 {
        let n = self.slots_per_sector;
        let sector = u32::from(slot / n);
        sector * F::ERASE_SIZE as u32 + self.data_start + u32::from(slot % n) * BLOCK_LEN as u32
    }

    /// Read every sector header and entry and rebuild the map, the sector states and the next
    /// sequence number. Returns the writes it found undecided (see [`Self::settle`]). With
    /// `guard`, the first blank slot of each sector is left unused (it may be a torn program
    /// that reads blank, see below); without, the flash is known to hold no torn program (the
    /// store left it in this power session with every program done or failed and moved past:
    /// a zone mounted again).
    async fn scan(&mut self, guard: bool) -> Res<Undecided, F> {
        let n = self.slots_per_sector;
        let mut max_seq = 0u32;
        let mut undecided = Undecided::new();
        for s in 0..SECTORS {
            let corrected = self.stats.corrected;
            let (erase_count, retire_used, worn) = match self.read_header(s).await? {
                Header::Live(count, retire_used, worn) => (count, retire_used, worn),
                Header::Erase => continue,
                Header::Broken => {
                    if undecided.broken_len < BROKEN {
                        undecided.broken[undecided.broken_len] = s as u16;
                        undecided.broken_len += 1;
                    } else {
                        self.note_damage("sector header", s as u16 * n);
                    }
                    continue;
                }
            };
            if self.stats.corrected != corrected
                && undecided.worn_header.is_none()
                && self.header_worn(s).await?
            {
                undecided.worn_header = Some(s);
            }
            self.sectors[s] = SectorState::new(SectorKind::Active, erase_count);
            if retire_used {
                self.sectors[s].erase |= RETIRE_USED;
            }
            let mut next_free = 0u16;
            for i in 0..n {
                let slot = s as u16 * n + i;
                let entry = self.read_entry(slot).await?;
                if entry == Entry::Blank {
                    continue;
                }
                next_free = i + 1;
                if matches!(entry, Entry::Damaged { .. }) {
                    self.note_damage("entry", slot);
                    continue;
                }
                match entry {
                    // The next write must be newer than any copy on flash, committed or not:
                    // a torn commit that reads committed at a later mount must not tie with
                    // (or beat) a write made after it.
                    Entry::Uncommitted { block, seq, .. } => {
                        undecided.note(block, seq);
                        max_seq = max_seq.max(seq);
                    }
                    Entry::Committed {
                        block,
                        seq,
                        firm: false,
                        ..
                    } => undecided.note(block, seq),
                    _ => {}
                }
                let Entry::Committed { block, seq, .. } = entry else {
                    continue;
                };
                max_seq = max_seq.max(seq);
                if self.newer_than_mapped(block, seq).await? {
                    self.map[block as usize] = slot;
                }
            }
            // The free tail must really be blank: an interrupted erase can leave a sector that
            // still looks active over garbage. If it is not, no slot of it is used until it
            // has been collected and erased again.
            //
            // Nor is a slot used in a sector whose units are a few bits off: it is kept for
            // what it holds, but it may be a victim whose retire was torn, or whose erase was
            // torn after that, and such bits may read otherwise at the next mount (torn cells
            // read unstable), which may then take the sector for retired and drop it. Its
            // blocks were all copied before its retire began, so only a new copy there would
            // be lost. Closed, it is collected and erased like any full sector.
            //
            // The first blank slot may be where the power cut a program whose cells now read
            // erased (a weakly programmed torn entry reads blank at random): it is not used
            // before its sector is erased, so that no unit is programmed twice. Being the
            // guard, it is not what decides whether the rest is open: its unstable cells
            // closed the sector, and when that sector held the last free slots (a cut while a
            // collection filled it), no collection could run again, and the store answered
            // every write with `NoSpace` for good.
            let skip = u16::from(guard);
            let open = !worn && self.tail_is_blank(s, next_free + skip).await?;
            self.sectors[s].next_free = if open { (next_free + skip).min(n) } else { n };
        }
        self.next_seq = max_seq.wrapping_add(1);
        self.free = self.count_free();
        for i in 0..BLOCKS {
            let slot = self.map[i];
            if slot != NO_SLOT {
                let s = self.sector_of(slot);
                self.sectors[s].live += 1;
            }
        }
        self.judge_broken(&undecided).await?;
        Ok(undecided)
    }

    /// Whether a committed copy of `block` numbered `seq` is newer than the one the map holds
    /// (or the map holds none). False for a block out of range.
    async fn newer_than_mapped(&mut self, block: u32, seq: u32) -> Res<bool, F> {
        let Some(&current) = self.map.get(block as usize) else {
            return Ok(false);
        };
        Ok(current == NO_SLOT
            || match self.mapped_entry(block, current).await? {
                Some((old, _)) => seq > old,
                None => true,
            })
    }

    /// A sector with a broken header (see [`Header::Broken`]) is damage when one of its
    /// entries that check is committed and newer than the copy the scan mapped for its block:
    /// that block now reads as an older version. Otherwise it held nothing that is not
    /// elsewhere (an erase torn in its header, after its blocks were copied, or a sector that
    /// held nothing): a false alarm made the mirror recover its whole NOR member. Entries that
    /// fail their CRC are not counted (an erase torn in random bytes leaves many), unless their
    /// commit unit is whole: a sector whose header lost two bits and whose one entry lost two
    /// more read as holding nothing, and its block silently went back a version (the
    /// `nor_rot` fuzz target). An erase torn early enough to leave 128 commit bits programmed
    /// leaves the ACTIVE pattern and the retire units too, which is no broken header.
    async fn judge_broken(&mut self, undecided: &Undecided) -> Res<(), F> {
        let n = self.slots_per_sector;
        for &s in &undecided.broken[..undecided.broken_len] {
            let mut damaged = false;
            for i in 0..n {
                let (block, seq) = match self.read_entry(s * n + i).await? {
                    Entry::Committed { block, seq, .. } => (block, seq),
                    Entry::Damaged { firm: true } if !damaged => {
                        self.note_damage("sector header", s * n + i);
                        damaged = true;
                        continue;
                    }
                    _ => continue,
                };
                // Numbered above it, so that no later write ties with it.
                self.next_seq = self.next_seq.max(seq.wrapping_add(1));
                if !damaged && self.newer_than_mapped(block, seq).await? {
                    self.note_damage("sector header", s * n);
                    damaged = true;
                }
            }
        }
        Ok(())
    }

    /// Whether `[addr, +want.len())` reads `want` (in one of [`READ_TRIES`] reads: a read flip
    /// is not a failed program).
    async fn reads_back(&mut self, addr: u32, want: &[u8]) -> Res<bool, F> {
        let mut got = [0u8; 16];
        let got = got.get_mut(..want.len()).ok_or(NorError::Unverified)?;
        for _ in 0..READ_TRIES {
            self.flash.read(addr, got).await.map_err(NorError::Flash)?;
            if got == want {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether `len` bytes from `addr` read all 0xFF. Each chunk is read until two reads agree
    /// (at most 3): a read flip can make a chunk with one zero bit left (a torn erase or
    /// program, under an erase the part dropped) read blank, and one read that says blank
    /// let a program land on that word.
    async fn range_is_blank(&mut self, addr: u32, len: u32) -> Res<bool, F> {
        let mut chunk = [0u8; 32];
        for off in (0..len).step_by(chunk.len()) {
            let (mut blank, mut not) = (0u8, 0u8);
            while blank < 2 && not < 2 {
                self.flash
                    .read(addr + off, &mut chunk)
                    .await
                    .map_err(NorError::Flash)?;
                if chunk.iter().all(|&b| b == 0xFF) {
                    blank += 1;
                } else {
                    not += 1;
                    self.stats.reread = self.stats.reread.wrapping_add(1);
                }
            }
            if not == 2 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether the entries and the data of slots `first..n` of sector `s` read all 0xFF. The
    /// scan saw those entries blank, but took a blank read at its word: a program torn after
    /// its first bits, with a read flip over them, reads blank once (and a later program
    /// there would land on unerased cells); here each piece is read until two reads agree.
    async fn tail_is_blank(&mut self, s: usize, first: u16) -> Res<bool, F> {
        let n = self.slots_per_sector;
        let entries = u32::from(n.saturating_sub(first)) * ENTRY_LEN as u32;
        if first < n
            && !self
                .range_is_blank(self.entry_addr(s as u16 * n + first), entries)
                .await?
        {
            return Ok(false);
        }
        for i in first..n {
            if !self
                .range_is_blank(self.data_addr(s as u16 * n + i), BLOCK_LEN as u32)
                .await?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Read a sector header: its erase count when the header is valid and active, and
    /// whether its retire unit shows zero bits (at most [`RETIRE_SLACK`]: more is a retired
    /// sector). A header body with one flipped bit is corrected; the ACTIVE pattern tolerates
    /// [`ACTIVE_SLACK`] bits off. A sector whose retire unit is (nearly) blank and whose
    /// ACTIVE pattern is there, but whose header body cannot be corrected, is
    /// [`Header::Broken`]: it may have been live, and is never silently dropped.
    async fn read_header(&mut self, s: usize) -> Res<Header, F> {
        let addr = (s * F::ERASE_SIZE) as u32;
        let mut raw = [0u8; SECTOR_HEADER_LEN];
        let mut damaged = false;
        // Reads whose units were exactly as programmed, and what the last other one showed.
        let mut clean = 0;
        let mut off = (0, 0);
        for attempt in 1..=READ_TRIES {
            self.flash
                .read(addr, &mut raw)
                .await
                .map_err(NorError::Flash)?;
            if raw.iter().all(|&b| b == 0xFF) {
                return Ok(Header::Erase);
            }
            let units = (
                zero_ones_distance(&raw[32..48], &[0xFF; 16]),
                zero_ones_distance(&raw[16..20], &ACTIVE),
            );
            if units == (0, 0) {
                clean += 1;
            } else {
                off = units;
            }
            // Units a few bits off are most likely a read flip: read again before judging
            // them. Units exactly as programmed are believed on two reads, not one: the cells
            // of a torn retire read unstable, and may show every bit it programmed as erased
            // on one read (a sector taken for pristine then takes new copies, which a later
            // mount that reads it as retired drops).
            if clean < 2 && attempt < READ_TRIES {
                if units != (0, 0) {
                    self.stats.reread = self.stats.reread.wrapping_add(1);
                }
                continue;
            }
            let (mut retire, distance) = if clean >= 2 { (0, 0) } else { off };
            if retire > RETIRE_SLACK {
                // Retired: erase before use.
                return Ok(Header::Erase);
            }
            // The second retire unit (see `erase_sector`): programmed, the sector was retired
            // whatever the first says; a few zero bits count as the first's do.
            match self.second_retire(s).await? {
                Some(bits) if bits > RETIRE_SLACK => return Ok(Header::Erase),
                Some(bits) => retire += bits,
                None => {}
            }
            // An ACTIVE pattern beyond its slack: torn or never finished (erase before use),
            // unless the slots hold entries: then the sector was live and its header decayed
            // (bits lost from its first byte on: the `volume_faults` fuzz target), and
            // dropping it would serve older copies of its blocks. Judged below as any header:
            // live if its body stands, broken (damage) if not.
            if distance > ACTIVE_SLACK && self.entries_blank(s).await? {
                return Ok(Header::Erase);
            }
            let mut body = [0u8; 16];
            body.copy_from_slice(&raw[..16]);
            let geometry = self.geometry();
            let fixed = Self::check_or_correct(&mut body);
            if fixed == Some(true) {
                self.stats.corrected = self.stats.corrected.wrapping_add(1);
            }
            if fixed.is_some() && word(&body, 0) == MAGIC && word(&body, 4) == geometry {
                // An ACTIVE pattern a few bits off, or a retire unit with a few zero bits, is
                // a header torn in its last bytes, a retire torn in its first or an erase torn
                // near its end (nothing in the sector that is not elsewhere: erase it again),
                // or units that lost or gained bits later (the sector was used: keep it, a
                // rollback otherwise). Decided by the entries: a sector that holds anything
                // holds an entry, and one whose entries all read blank holds nothing.
                if (distance != 0 || retire != 0) && self.entries_blank(s).await? {
                    return Ok(Header::Erase);
                }
                if retire != 0 {
                    self.stats.corrected = self.stats.corrected.wrapping_add(1);
                }
                return Ok(Header::Live(
                    word(&body, 8),
                    retire != 0,
                    distance != 0 || retire != 0,
                ));
            }
            damaged = true;
            self.stats.reread = self.stats.reread.wrapping_add(1);
        }
        // A retired sector whose erase tore the header is no broken live one.
        if damaged
            && self
                .second_retire(s)
                .await?
                .is_none_or(|bits| bits <= RETIRE_SLACK)
        {
            return Ok(Header::Broken);
        }
        Ok(Header::Erase)
    }

    /// Whether every entry of sector `s` reads blank. Not the first alone: a sector in use may
    /// have a blank first slot with copies after it (a program of that slot the part dropped,
    /// which a write then retried in the next; or the guard a mount skips after a torn first
    /// program that reads blank), and a lost bit in its units then made a mount drop the
    /// sector, and serve an older copy of its blocks (the `volume_faults` fuzz target).
    async fn entries_blank(&mut self, s: usize) -> Res<bool, F> {
        let n = self.slots_per_sector;
        for i in 0..n {
            if self.read_entry(s as u16 * n + i).await? != Entry::Blank {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The zero bits of sector `s`'s second retire unit, the last 16 bytes of its metadata
    /// pages (see `erase_sector`), as two reads of at most three agree: `None` when blank.
    /// One read that differs (a read flip) does not decide.
    async fn second_retire(&mut self, s: usize) -> Res<Option<u32>, F> {
        let addr = (s * F::ERASE_SIZE) as u32 + self.data_start - 16;
        let mut unit = [0u8; 16];
        let mut seen = [u32::MAX; READ_TRIES];
        for k in 0..READ_TRIES {
            self.flash
                .read(addr, &mut unit)
                .await
                .map_err(NorError::Flash)?;
            let bits = zero_ones_distance(&unit, &[0xFF; 16]);
            if seen[..k].contains(&bits) {
                return Ok((bits != 0).then_some(bits));
            }
            seen[k] = bits;
            self.stats.reread = self.stats.reread.wrapping_add(u32::from(k > 0));
        }
        // Three different counts: the unit reads unstable (a torn program): taken as
        // programmed as far as the most it showed.
        Ok(seen.iter().copied().max().filter(|&b| b != 0))
    }

    /// Whether `body` (12 bytes and their CRC-32C) checks, after flipping back at most one
    /// bit. CRC-32C's Hamming distance over 128 bits is far above 3, so a single flip is
    /// located without ambiguity and a double flip is never mistaken for one.
    /// `Some(false)`: it checks as read; `Some(true)`: it checks with one bit flipped back
    /// (done in `body`); `None`: it does not check.
    fn check_or_correct(body: &mut [u8; 16]) -> Option<bool> {
        if is_sealed(body) {
            return Some(false);
        }
        for bit in 0..128 {
            body[bit / 8] ^= 1 << (bit % 8);
            if is_sealed(body) {
                return Some(true);
            }
            body[bit / 8] ^= 1 << (bit % 8);
        }
        None
    }

    fn note_damage(&mut self, what: &'static str, slot: u16) {
        let _ = (what, slot);
        crate::log::log_warn!(
            "nor: {=str} at slot {=u16} fails its CRC beyond correction",
            what,
            slot
        );
        self.stats.damaged = self.stats.damaged.wrapping_add(1);
        let s = self.sector_of(slot);
        self.sectors[s].erase |= HELD;
    }

    /// Read and classify an entry. A read that is clean (blank; a commit unit blank under a
    /// programmed body; a commit unit all zero under a body that checks) decides alone. Any
    /// other read is repeated, and the reads vote: committed when the commit unit has a zero
    /// bit in most reads (a commit torn half way counts, and so does one that lost bits to
    /// charge loss: its data was complete before the commit started), blank when most reads
    /// are all ones. The vote keeps a read flip from changing the answer from one scan to the
    /// next. A committed entry's body is corrected when one bit flipped, damaged when more did.
    async fn read_entry(&mut self, slot: u16) -> Res<Entry, F> {
        let addr = self.entry_addr(slot);
        let mut raw = [0u8; ENTRY_LEN];
        let (mut reads, mut committed, mut blank, mut full) = (0u8, 0u8, 0u8, 0u8);
        // The body as read (it checks), or else as corrected from one read (then `fixed`).
        let mut body: Option<[u8; 16]> = None;
        let mut fixed = false;
        for _ in 0..READ_TRIES {
            self.flash
                .read(addr, &mut raw)
                .await
                .map_err(NorError::Flash)?;
            reads += 1;
            let commit_zeros: u32 = raw[16..].iter().map(|b| b.count_zeros()).sum();
            let body_zeros: u32 = raw[..16].iter().map(|b| b.count_zeros()).sum();
            let mut b = [0u8; 16];
            b.copy_from_slice(&raw[..16]);
            let clean = match (body_zeros, commit_zeros) {
                (0, 0) => true,
                (z, 0) => z > 1,
                (_, 128) => is_sealed(&b),
                _ => false,
            };
            if body_zeros + commit_zeros == 0 {
                blank += 1;
            } else if body_zeros > 0 {
                // (A commit over a blank body is a body program the part dropped; the write
                // was read back, found wanting and retried elsewhere: dead, not damage.)
                if commit_zeros > 0 {
                    committed += 1;
                }
                if commit_zeros == 128 {
                    full += 1;
                }
                match Self::check_or_correct(&mut b) {
                    Some(false) if body.is_none() || fixed => (body, fixed) = (Some(b), false),
                    Some(true) if body.is_none() => (body, fixed) = (Some(b), true),
                    _ => {}
                }
            }
            if clean && reads == 1 {
                break;
            }
            self.stats.reread = self.stats.reread.wrapping_add(1);
        }
        let firm = 2 * full > reads;
        Ok(if 2 * blank > reads {
            Entry::Blank
        } else if 2 * committed > reads {
            // Counted as corrected only when no read gave the body as it should be: a read
            // flip is not a bit lost for good.
            if fixed {
                self.stats.corrected = self.stats.corrected.wrapping_add(1);
            }
            match body {
                Some(b) => Entry::Committed {
                    block: word(&b, 0),
                    seq: word(&b, 4),
                    data_crc: word(&b, 8),
                    firm,
                },
                None => Entry::Damaged { firm },
            }
        } else {
            match body {
                Some(b) => Entry::Uncommitted {
                    block: word(&b, 0),
                    seq: word(&b, 4),
                    data_crc: word(&b, 8),
                },
                None => Entry::Dead,
            }
        })
    }

    async fn read_data(
        &mut self,
        slot: u16,
        data_crc: u32,
        block: u32,
        buf: &mut [u8; BLOCK_LEN],
    ) -> Res<(), F> {
        let addr = self.data_addr(slot);
        for _ in 0..READ_TRIES {
            self.flash.read(addr, buf).await.map_err(NorError::Flash)?;
            if crc32c(buf) == data_crc {
                return Ok(());
            }
            self.stats.reread = self.stats.reread.wrapping_add(1);
        }
        Err(NorError::Corrupt { block })
    }

    /// The free slots a host write needs before it takes one: a sector's worth for the copies
    /// of the next collection's victim, one for the write, and two for the slots a power cut
    /// during that collection uses up (the torn one, and the blank one after it that the next
    /// mount passes over: see `scan`). With one sector's worth and one, a cut at the end of a
    /// collection that started with one slot to spare left its victim with more live blocks
    /// than there were free slots, and no other sector fitted either: the store answered
    /// `NoSpace` for good (`dropped_calls_among_power_cuts_at_the_capacity_edge_keep_every_block`
    /// in `tests/nor_async.rs`). Costs about a tenth more copies at the capacity edge.
    ///
    /// The two come out of what the configuration leaves beyond the capacity rule's minimum
    /// (`2 * n + 1` slots not live): at the rule's edge, or one slot short of it, the reserve
    /// stays a sector's worth and one, and one or none of the two (with one slot per sector,
    /// as on 1 KiB pages, a reserve beyond the slots that are never live left every write
    /// `NoSpace`).
    fn reserve(&self) -> usize {
        let n = usize::from(self.slots_per_sector);
        let spare = (SECTORS * n - BLOCKS).saturating_sub(2 * n + 1);
        n + 1 + spare.min(2)
    }

    /// Make sure one host write can proceed and still leave the reserve for garbage
    /// collection (see `reserve`).
    async fn ensure_free(&mut self) -> Res<(), F> {
        let reserve = self.reserve();
        let mut last_error = None;
        for _ in 0..2 * SECTORS {
            if self.free_slots() >= reserve {
                return Ok(());
            }
            let step = match self
                .sectors
                .iter()
                .position(|s| s.kind() == SectorKind::NeedsErase && !s.held())
            {
                Some(s) => self.erase_sector(s).await,
                None => self.collect_one().await,
            };
            match step {
                Ok(()) => {}
                // A failed erase leaves that sector bad for this session: try another.
                Err(e @ (NorError::Flash(_) | NorError::Unverified)) => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        if self.free_slots() >= reserve {
            return Ok(());
        }
        Err(last_error.unwrap_or(NorError::NoSpace))
    }

    /// Static wear leveling (see [`WEAR_SPREAD`]): collect the least-erased full sector when
    /// the spread of erase counts is too wide and its live blocks fit in the free slots with
    /// the reserve left intact. A collection like any other, so just as power-safe.
    async fn level_wear(&mut self) -> Res<(), F> {
        if !self.wear_due {
            return Ok(());
        }
        let Some(cold) = self.wear_victim() else {
            self.wear_due = false;
            return Ok(());
        };
        let state = self.sectors[cold];
        // Make room first with ordinary collections (a sector with fewer live blocks). The
        // copies leave a sector's worth and one: enough for the next collection after a cut.
        let room = usize::from(state.live) + usize::from(self.slots_per_sector) + 1;
        for _ in 0..SECTORS {
            if self.free_slots() >= room {
                break;
            }
            match self.collect_one().await {
                Ok(()) => {}
                // Opportunistic: no room now, try again at a later write.
                Err(NorError::NoSpace) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        if self.free_slots() < room || self.sectors[cold].kind() != SectorKind::Active {
            return Ok(());
        }
        crate::log::log_debug!("nor: wear leveling moves sector {=u32}", cold as u32);
        self.stats.leveled = self.stats.leveled.wrapping_add(1);
        self.collect(cold).await
    }

    /// The sector static wear leveling would move: the least-erased full sector, when the
    /// most-erased active one has been erased more than the spread beyond it.
    fn wear_victim(&self) -> Option<usize> {
        let n = self.slots_per_sector;
        let cold = (0..SECTORS)
            .filter(|&s| self.sectors[s].collectable(n))
            .min_by_key(|&s| self.sectors[s].erase_count())?;
        let hottest = self
            .sectors
            .iter()
            .filter(|s| s.kind() == SectorKind::Active)
            .map(|s| s.erase_count())
            .max()
            .unwrap_or(0);
        let spread = hottest.saturating_sub(self.sectors[cold].erase_count());
        (spread > self.wear_spread).then_some(cold)
    }

    /// Garbage-collect the full sector with the fewest live slots.
    async fn collect_one(&mut self) -> Res<(), F> {
        let n = self.slots_per_sector;
        let victim = (0..SECTORS)
            .filter(|&s| self.sectors[s].collectable(n))
            .min_by_key(|&s| (self.sectors[s].live, self.sectors[s].erase_count()));
        let fits = victim.is_some_and(|v| usize::from(self.sectors[v].live) <= self.free_slots());
        if !fits {
            if let Some(begun) = self.begun_victim() {
                // Closed first, so that its blocks are not copied into its own free slots.
                let state = self.sectors[begun];
                self.set_sector(
                    begun,
                    SectorState {
                        next_free: n,
                        ..state
                    },
                );
                return self.collect(begun).await;
            }
        }
        match victim {
            Some(victim) => self.collect(victim).await,
            None => Err(NorError::NoSpace),
        }
    }

    /// A sector begun and not full whose used slots are not all live, and whose live blocks
    /// fit in the free slots of the other sectors: the one with the most dead slots. The way
    /// out when no full sector's live blocks fit in the free slots. Interrupted programs
    /// (power cuts, whose torn slot and the blank one after it are not used again, and
    /// programs dropped in a part) use up slots of the sector being filled; enough of them
    /// left every full sector with more live blocks than there were free slots, all of those
    /// in that sector, and over its dead slots the store answered `NoSpace` for good.
    fn begun_victim(&self) -> Option<usize> {
        let n = self.slots_per_sector;
        let free = self.free_slots();
        (0..SECTORS)
            .filter(|&s| {
                let st = &self.sectors[s];
                let free_in = usize::from(n - st.next_free);
                st.begun(n)
                    && !st.held()
                    && st.live < st.next_free
                    && usize::from(st.live) + free_in <= free
            })
            .max_by_key(|&s| self.sectors[s].next_free - self.sectors[s].live)
    }

    /// Copy the live blocks of `victim` to free slots, then retire and erase it.
    #[inline(never)]
    async fn collect(&mut self, victim: usize) -> Res<(), F> {
        let n = self.slots_per_sector;
        if usize::from(self.sectors[victim].live) > self.free_slots() {
            return Err(NorError::NoSpace);
        }
        let mut buf = [0u8; BLOCK_LEN];
        for i in 0..n {
            if self.sectors[victim].live == 0 {
                break;
            }
            let slot = victim as u16 * n + i;
            let entry = self.read_entry(slot).await?;
            let block = match entry {
                // The mount decided the map's copy: an uncommitted read of it is a torn commit
                // reading unstable.
                Entry::Committed { block, .. } | Entry::Uncommitted { block, .. } => block,
                // An entry that rotted since the mount: the map still knows its block.
                Entry::Damaged { .. } => match self.map.iter().position(|&m| m == slot) {
                    Some(b) => b as u32,
                    None => continue,
                },
                Entry::Blank | Entry::Dead => continue,
            };
            if self.map.get(block as usize) != Some(&slot) {
                continue;
            }
            // A copy that fails its CRC moves as it is, under a CRC it cannot match, so that it
            // keeps reading as `Corrupt` (never as zeros or an older version) until rewritten.
            let crc = match entry {
                Entry::Committed { data_crc, .. } | Entry::Uncommitted { data_crc, .. } => {
                    match self.read_data(slot, data_crc, block, &mut buf).await {
                        Ok(()) => data_crc,
                        Err(NorError::Corrupt { .. }) => !crc32c(&buf),
                        Err(e) => return Err(e),
                    }
                }
                _ => {
                    self.flash
                        .read(self.data_addr(slot), &mut buf)
                        .await
                        .map_err(NorError::Flash)?;
                    !crc32c(&buf)
                }
            };
            if crc != crc32c(&buf) {
                crate::log::log_warn!(
                    "nor: block {=u32} unreadable during garbage collection",
                    block
                );
            }
            self.program_slot(block, &buf, crc, true).await?;
            self.stats.relocations = self.stats.relocations.wrapping_add(1);
        }
        self.erase_sector(victim).await
    }

    /// Retire (when active), erase, and write a fresh header. A failure leaves the sector
    /// bad for this session (the next mount sees no valid header and erases it again). A
    /// call dropped before it ends (an async caller's timeout) leaves it to be erased again
    /// by the next call that needs room: marked bad for the session, every dropped erase
    /// took a sector out of use until the next mount, and writes that kept timing out while
    /// a collection ran ran the store out of room.
    async fn erase_sector(&mut self, s: usize) -> Res<(), F> {
        let result = self.erase_sector_once(s).await;
        if result.is_err() {
            let count = self.sectors[s].erase_count();
            self.set_sector(s, SectorState::new(SectorKind::Bad, count));
        }
        result
    }

    /// [`Self::erase_sector`] until it ends.
    async fn erase_sector_once(&mut self, s: usize) -> Res<(), F> {
        let base = (s * F::ERASE_SIZE) as u32;
        let was_active = self.sectors[s].kind() == SectorKind::Active;
        // A retire unit that is not blank already says "not active" as far as it can: it is
        // never programmed twice.
        let retire = was_active && !self.sectors[s].retire_used();
        // The erase count of a sector without a valid header is unknown: it takes the highest
        // count of the active sectors, and does not add one, so that a blank part whose
        // sectors are put to use one after the other does not ratchet the counts up (static
        // wear leveling would then move cold data on every write).
        let count = if was_active {
            self.sectors[s].erase_count().wrapping_add(1)
        } else {
            self.sectors
                .iter()
                .filter(|s| s.kind() == SectorKind::Active)
                .map(|s| s.erase_count())
                .max()
                .unwrap_or(0)
        };
        self.set_sector(s, SectorState::new(SectorKind::NeedsErase, count));
        if retire {
            // Make the header invalid first, so a torn erase can never look active. Twice: the
            // retire unit after the header, and a second one in the last 16 bytes of the
            // metadata pages (never used by entries: they end at least 16 bytes before). An
            // erase torn so that it wiped exactly the first unit and spared the header, with
            // entries after it half wiped (a committed entry that fails its CRC, which the
            // mount reports as damage), leaves the second one: a middle range that wipes both
            // wipes every entry between them too, and the tail check sees what it left.
            let retired = self.flash.write(base + 32, &[0u8; 16]).await;
            self.check_op(retired)?;
            let retired = self
                .flash
                .write(base + self.data_start - 16, &[0u8; 16])
                .await;
            self.check_op(retired)?;
        }
        // A failed erase may be transient: try again before giving the sector up.
        let mut tries = 0;
        loop {
            tries += 1;
            let erased = self.flash.erase(base, base + F::ERASE_SIZE as u32).await;
            match self.check_op(erased) {
                // Read back: a part that drops an erase without an error would leave old
                // content under the new header.
                Ok(()) if self.range_is_blank(base, F::ERASE_SIZE as u32).await? => break,
                Ok(()) if tries < ERASE_TRIES => {
                    self.stats.failed_ops = self.stats.failed_ops.wrapping_add(1);
                }
                Ok(()) => return Err(NorError::Unverified),
                Err(NorError::Flash(_)) if tries < ERASE_TRIES => {}
                Err(e) => return Err(e),
            }
        }
        self.stats.erases = self.stats.erases.wrapping_add(1);
        let mut header = [0xFFu8; 32];
        header[..16].copy_from_slice(&sealed([MAGIC, self.geometry(), count]));
        header[16..20].copy_from_slice(&ACTIVE);
        // The body first, read back, then the active unit, in two programs: a part may land
        // one program's bytes in any order when the power goes, and the ACTIVE pattern must
        // never stand over an incomplete body (that reads as a damaged live sector). A
        // program the part dropped leaves its range blank: program it again.
        let mut tries = 0;
        loop {
            tries += 1;
            let written = self.flash.write(base, &header[..16]).await;
            self.check_op(written)?;
            if self.reads_back(base, &header[..16]).await? {
                break;
            }
            self.stats.failed_ops = self.stats.failed_ops.wrapping_add(1);
            if tries == PROGRAM_TRIES || !self.range_is_blank(base, 16).await? {
                return Err(NorError::Unverified);
            }
        }
        let mut tries = 0;
        loop {
            tries += 1;
            let written = self.flash.write(base + 16, &header[16..]).await;
            self.check_op(written)?;
            if self.read_header(s).await? == Header::Live(count, false, false) {
                break;
            }
            self.stats.failed_ops = self.stats.failed_ops.wrapping_add(1);
            if tries == PROGRAM_TRIES || !self.range_is_blank(base + 16, 16).await? {
                return Err(NorError::Unverified);
            }
        }
        self.set_sector(s, SectorState::new(SectorKind::Active, count));
        Ok(())
    }

    /// Count a failed program or erase. Alignment and bounds errors are bugs of this layer's
    /// geometry checks and are reported as such, never retried.
    fn check_op(&mut self, result: Result<(), F::Error>) -> Res<(), F> {
        let Err(e) = result else {
            return Ok(());
        };
        self.stats.failed_ops = self.stats.failed_ops.wrapping_add(1);
        match e.kind() {
            NorFlashErrorKind::NotAligned => Err(NorError::Geometry {
                what: "access alignment",
                value: 0,
            }),
            NorFlashErrorKind::OutOfBounds => Err(NorError::Geometry {
                what: "access bounds",
                value: 0,
            }),
            _ => Err(NorError::Flash(e)),
        }
    }

    /// A free slot: the next one of the lowest-numbered sector begun and not full, else the
    /// first of the least-erased empty sector. The sector being filled is kept (`open`), so
    /// that the table is searched once per sector filled, not once per write. It stays the
    /// lowest-numbered begun sector while it is not full: only this function (on it) and the
    /// mount begin a sector, and the mount starts with none kept.
    fn alloc_slot(&mut self) -> Option<u16> {
        let n = self.slots_per_sector;
        let kept = self
            .sectors
            .get(usize::from(self.open))
            .is_some_and(|s| s.begun(n));
        let sector = if kept {
            usize::from(self.open)
        } else {
            let begun = self.sectors.iter().position(|s| s.begun(n));
            begun.or_else(|| {
                (0..SECTORS)
                    .filter(|&i| self.sectors[i].has_room(n))
                    .min_by_key(|&i| self.sectors[i].erase_count())
            })?
        };
        self.open = sector as u16;
        self.free -= 1;
        let state = &mut self.sectors[sector];
        let slot = sector as u16 * n + state.next_free;
        state.next_free += 1;
        if state.next_free == n {
            self.wear_due = true;
        }
        Some(slot)
    }

    /// Program `data` as the newest copy of `block` in a fresh slot: entry body and data,
    /// read back, then the commit unit, read back. A failed program or read-back consumes the
    /// slot and is retried in the next one. `moving`: a garbage collection's copy of a block
    /// (see `claimed`).
    async fn program_slot(
        &mut self,
        block: u32,
        data: &[u8; BLOCK_LEN],
        data_crc: u32,
        moving: bool,
    ) -> Res<(), F> {
        let mut last: Option<NorError<F::Error>> = None;
        for _ in 0..PROGRAM_TRIES {
            let Some(slot) = self.alloc_slot() else {
                return Err(NorError::NoSpace);
            };
            let seq = self.next_seq;
            self.next_seq = seq.wrapping_add(1);
            let body = sealed([block, seq, data_crc]);
            if let Some(claimed) = self.claimed.first_mut() {
                *claimed = Some(Claim {
                    block,
                    slot,
                    seq,
                    data_crc,
                    moving,
                });
            }
            let result = self.program_units(block, slot, &body, data, false).await;
            self.claimed = [None; CLAIMS];
            match result? {
                Ok(true) => {
                    self.took(block, slot);
                    return Ok(());
                }
                Ok(false) => {
                    self.stats.failed_ops = self.stats.failed_ops.wrapping_add(1);
                    last = Some(NorError::Unverified);
                }
                Err(e) => match self.check_op(Err(e)) {
                    Err(NorError::Flash(e)) => last = Some(NorError::Flash(e)),
                    other => return other,
                },
            }
        }
        Err(last.unwrap_or(NorError::NoSpace))
    }

    /// Program a slot's three units in order: the entry body and the data, read back before
    /// the commit unit, which is read back in turn. `Ok(true)`: the slot is the committed
    /// copy; `Ok(false)`: a read-back found a program the part dropped or got wrong without
    /// an error; `Err`: a program failed. A dropped data program never stands committed:
    /// such a copy read as `Corrupt`, or was skipped for the older copy, which the live counts
    /// did not hold, so that garbage collection could erase it (an acknowledged write lost).
    /// `resume`: a unit that does not read blank is not programmed again (see `resume`).
    async fn program_units(
        &mut self,
        block: u32,
        slot: u16,
        body: &[u8; 16],
        data: &[u8; BLOCK_LEN],
        resume: bool,
    ) -> Res<Result<bool, F::Error>, F> {
        let entry = self.entry_addr(slot);
        if !resume || self.range_is_blank(entry, 16).await? {
            if let Err(e) = self.flash.write(entry, body).await {
                return Ok(Err(e));
            }
        }
        let at = self.data_addr(slot);
        if !resume || self.range_is_blank(at, BLOCK_LEN as u32).await? {
            if let Err(e) = self.flash.write(at, data).await {
                return Ok(Err(e));
            }
        }
        if !self.verify_slot(slot, body, data).await? {
            return Ok(Ok(false));
        }
        // From here on the slot may stand committed at the next mount, whatever this returns
        // (a commit program torn or failed, one that does not read back): it is pending until
        // the map takes it, or a retry commits a newer copy. (It was let go when the commit
        // program failed, and a block served as the old version until the next mount read as
        // the new one after it.) A decision pending for another slot is given up here: it is an
        // earlier try of this write, which this newer copy outranks however it is decided, or
        // a copy of what its block already held (a collection's move, a settling write), which
        // reads the same either way (a host write's decision is made before anything else is
        // programmed, see `resolve`).
        self.pending = Some((block, slot));
        if !resume || self.range_is_blank(entry + 16, 16).await? {
            if let Err(e) = self.flash.write(entry + 16, &[0u8; 16]).await {
                return Ok(Err(e));
            }
        }
        Ok(Ok(self.reads_back(entry + 16, &[0u8; 16]).await?))
    }

    /// Whether `slot` reads back as the copy just programmed, before its commit: its entry
    /// body and its data, byte for byte (each piece read up to 3 times, for read flips).
    /// Plain comparisons in one small buffer: this runs at the bottom of the deepest write
    /// path.
    async fn verify_slot(
        &mut self,
        slot: u16,
        body: &[u8; 16],
        data: &[u8; BLOCK_LEN],
    ) -> Res<bool, F> {
        if !self.reads_back(self.entry_addr(slot), body).await? {
            return Ok(false);
        }
        let mut chunk = [0u8; 32];
        let addr = self.data_addr(slot);
        for (i, want) in data.chunks(chunk.len()).enumerate() {
            let at = addr + (i * chunk.len()) as u32;
            let mut same = false;
            for _ in 0..READ_TRIES {
                self.flash
                    .read(at, &mut chunk)
                    .await
                    .map_err(NorError::Flash)?;
                if chunk[..] == *want {
                    same = true;
                    break;
                }
                self.stats.reread = self.stats.reread.wrapping_add(1);
            }
            if !same {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
