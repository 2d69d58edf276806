//! The zoned NOR store, written once as `store.rs` is and included beside it in
//! `nor::blocking` and `nor::asynch`. The design: `docs/EMBEDDED.md`, "Zones".

use super::store::NorBlockStore;
use super::*;

#[io]
impl<F: NorFlash> ReadNorFlash for Window<F> {
    const READ_SIZE: usize = F::READ_SIZE;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let (flash, at) = self.at(offset, bytes.len())?;
        flash.read(at, bytes).await.map_err(WindowError::Flash)
    }

    fn capacity(&self) -> usize {
        self.len as usize
    }
}

#[io]
impl<F: NorFlash> NorFlash for Window<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let len = to.checked_sub(from).ok_or(WindowError::OutOfBounds)?;
        let (flash, at) = self.at(from, len as usize)?;
        flash.erase(at, at + len).await.map_err(WindowError::Flash)
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let (flash, at) = self.at(offset, bytes.len())?;
        flash.write(at, bytes).await.map_err(WindowError::Flash)
    }
}

/// What the zoned store keeps of a zone whether or not its map is in RAM.
#[derive(Debug, Clone, Copy)]
struct ZoneInfo {
    /// The map's fingerprint when the zone last left RAM (see `map_fingerprint`); meaningful
    /// with [`SEEN`].
    fingerprint: u32,
    flags: u8,
}

/// The zone was mounted since the store was: `fingerprint` holds.
const SEEN: u8 = 1;
/// The store's mount found damage in the zone (see [`NorBlockStore::damaged`]).
const DAMAGED: u8 = 2;
/// Mounted again, the zone mapped its blocks otherwise than when it left RAM: nothing of it
/// is served until the store is mounted again.
const CHANGED: u8 = 4;
/// The caller acted on the damage ([`ZonedNorStore::release_damage`]): the zone's sectors
/// that hold its record are released whenever the zone is mounted.
const RELEASED: u8 = 8;
/// A program or erase of the zone failed since the store was mounted (or a write left
/// pending could not be decided): its flash may hold a torn program, so its mounts leave the
/// first blank slot of each sector unused, as the mount after a power cut does.
const TORN: u8 = 16;

/// No zone: a cache entry that holds none.
const NO_ZONE: u16 = u16::MAX;

/// One zone's map and sector table in RAM.
struct Cached<F: NorFlash, const BLOCKS: usize, const SECTORS: usize> {
    /// The zone it holds, [`NO_ZONE`] while none is mounted in it.
    zone: u16,
    /// When it last served a request (the store's clock), for the choice of the next one to
    /// give up.
    used: u32,
    store: NorBlockStore<Window<F>, BLOCKS, SECTORS>,
}

/// 512-byte blocks over a NOR flash too large for one map in RAM: the flash is cut into
/// `ZONES` zones of `ZONE_SECTORS` erase sectors, each a [`NorBlockStore`] of `ZONE_BLOCKS`
/// blocks with its own sectors (so block `b` lives in zone `b / ZONE_BLOCKS`, and garbage
/// collection and wear leveling stay within a zone). The maps and sector tables of
/// `CACHED` zones are held in RAM at a time; a request to another zone gives up the one
/// least recently used and mounts its own, scanning its sectors only.
///
/// RAM: `CACHED * (2 * ZONE_BLOCKS + 8 * ZONE_SECTORS)` bytes plus 8 bytes per zone and a
/// few words per cached zone, instead of `2 * blocks + 8 * sectors` for one store over the
/// whole part.
///
/// A zone mounted again must map its blocks as it did when it left RAM: a fingerprint of its
/// map (4 bytes per zone) is kept for that. A bit lost on the flash in between (which, in a
/// store that keeps its map, makes the one block whose entry lost it read as
/// [`NorError::Corrupt`]) could hide a block's newest copy and serve an older one; the
/// block is unknown, so the zone answers [`NorError::ZoneChanged`] until [`Self::remount`].
/// The on-flash format of each zone is the one of [`NorBlockStore`].
pub struct ZonedNorStore<
    F: NorFlash,
    const ZONES: usize,
    const ZONE_BLOCKS: usize,
    const ZONE_SECTORS: usize,
    const CACHED: usize,
> {
    /// The zones in RAM. The flash driver is in the window of one of them, the one that used
    /// it last: a future dropped during an operation leaves it there.
    cache: [Cached<F, ZONE_BLOCKS, ZONE_SECTORS>; CACHED],
    zones: [ZoneInfo; ZONES],
    clock: u32,
    /// The counters of the zones given up, since the mount.
    given_up: NorStats,
    /// Zone mounts since the store was mounted, the first ones included.
    zone_mounts: u32,
    /// False until a mount succeeds: nothing is read or written.
    mounted: bool,
}

type Res<T, F> = Result<T, NorError<<F as embedded_storage::nor_flash::ErrorType>::Error>>;

#[io]
impl<
    F: NorFlash,
    const ZONES: usize,
    const ZONE_BLOCKS: usize,
    const ZONE_SECTORS: usize,
    const CACHED: usize,
> ZonedNorStore<F, ZONES, ZONE_BLOCKS, ZONE_SECTORS, CACHED>
{
    /// Bytes of flash one zone takes.
    const ZONE_BYTES: usize = ZONE_SECTORS * F::ERASE_SIZE;

    /// Mount the store: every zone in turn, as [`NorBlockStore::mount`] mounts a store
    /// (settling what a power cut left undecided, finding damage), each map left behind but
    /// for the last `CACHED`. On failure the flash driver comes back with the error.
    pub async fn mount(flash: F) -> Result<Self, Refused<NorError<F::Error>, F>> {
        let mut store = Self::unmounted(flash)?;
        match store.mount_all().await {
            Ok(()) => Ok(store),
            Err(error) => Err(Refused {
                error,
                driver: store.into_inner(),
            }),
        }
    }

    /// A store over `flash` that is not mounted: every read and write fails with
    /// [`NorError::NotMounted`] until [`Self::remount`] succeeds (see
    /// [`NorBlockStore::unmounted`]). Refused only for a geometry that does not fit the flash.
    pub fn unmounted(flash: F) -> Result<Self, Refused<NorError<F::Error>, F>> {
        let geometry = |what, value: usize| NorError::Geometry {
            what,
            value: value as u32,
        };
        let span = ZONES.checked_mul(Self::ZONE_BYTES);
        let refused = if ZONES == 0 || ZONES >= usize::from(NO_ZONE) {
            Some(geometry("ZONES", ZONES))
        } else if CACHED == 0 {
            Some(geometry("CACHED", CACHED))
        } else if ZONE_BLOCKS
            .checked_mul(ZONES)
            .is_none_or(|b| b > u32::MAX as usize)
        {
            Some(geometry("ZONE_BLOCKS", ZONE_BLOCKS))
        } else if span.is_none_or(|s| s > flash.capacity() || s > u32::MAX as usize) {
            Some(geometry("capacity", flash.capacity()))
        } else {
            None
        };
        if let Some(error) = refused {
            return Err(Refused {
                error,
                driver: flash,
            });
        }
        if let Some(error) =
            NorBlockStore::<Window<F>, ZONE_BLOCKS, ZONE_SECTORS>::misfit(Self::ZONE_BYTES)
        {
            return Err(Refused {
                error: unwindow(error),
                driver: flash,
            });
        }
        // The driver goes to the first cache entry's window, the others start without it.
        let mut driver = Some(flash);
        let cache = core::array::from_fn(|_| Cached {
            zone: NO_ZONE,
            used: 0,
            store: NorBlockStore::blank(Window {
                flash: driver.take(),
                base: 0,
                len: Self::ZONE_BYTES as u32,
            }),
        });
        let store = ZonedNorStore {
            cache,
            zones: [ZoneInfo {
                fingerprint: 0,
                flags: 0,
            }; ZONES],
            clock: 0,
            given_up: NorStats::default(),
            zone_mounts: 0,
            mounted: false,
        };
        Ok(store)
    }

    /// Mount every zone in turn; what each found is kept in its [`ZoneInfo`].
    async fn mount_all(&mut self) -> Res<(), F> {
        self.mounted = false;
        for zone in 0..ZONES {
            self.load(zone).await?;
        }
        self.mounted = true;
        Ok(())
    }

    /// Mount the store again in place, as [`Self::mount`] does after a reset: every zone is
    /// scanned afresh and the fingerprints taken anew. A zone that had changed
    /// ([`NorError::ZoneChanged`]) is served again as this mount finds it, and counts as
    /// damage ([`Self::damaged`]): the caller rewrites every block from the other copy. On
    /// failure every read and write fails with [`NorError::NotMounted`] until a remount
    /// succeeds.
    pub async fn remount(&mut self) -> Res<(), F> {
        for info in self.zones.iter_mut() {
            // The scan finds what damage it finds again; a change is not found by a scan.
            info.flags = if info.flags & CHANGED != 0 {
                DAMAGED
            } else {
                0
            };
        }
        for entry in self.cache.iter_mut() {
            entry.zone = NO_ZONE;
        }
        self.given_up = NorStats::default();
        self.zone_mounts = 0;
        self.mount_all().await
    }

    /// The cache entry that holds `zone`, mounting it there (in place of the zone least
    /// recently used) when none does.
    async fn load(&mut self, zone: usize) -> Res<usize, F> {
        self.clock = self.clock.wrapping_add(1);
        let clock = self.clock;
        if let Some(i) = self.cache.iter().position(|c| usize::from(c.zone) == zone) {
            self.cache[i].used = clock;
            return Ok(i);
        }
        let info = self.zones[zone];
        if info.flags & CHANGED != 0 {
            return Err(NorError::ZoneChanged { zone: zone as u32 });
        }
        // An empty entry, else the one used least recently (by age, so that the clock may
        // wrap).
        let i = match self.cache.iter().position(|c| c.zone == NO_ZONE) {
            Some(i) => i,
            None => {
                let age = |c: &Cached<F, ZONE_BLOCKS, ZONE_SECTORS>| clock.wrapping_sub(c.used);
                let mut oldest = 0;
                for (i, c) in self.cache.iter().enumerate() {
                    if age(c) > age(&self.cache[oldest]) {
                        oldest = i;
                    }
                }
                oldest
            }
        };
        self.give_up(i).await;
        self.hand_to(i);
        let entry = &mut self.cache[i];
        entry.store.flash_mut().base = (zone * Self::ZONE_BYTES) as u32;
        let expect = (info.flags & SEEN != 0).then_some(info.fingerprint);
        // A zone that left RAM with every program done (or failed and moved past, none torn)
        // holds no torn program: its mount does not waste a slot per sector on a guard. At
        // one mount per request to another zone, the guards took slots faster than the
        // collections freed them, and a power cut on top left a zone with fewer free slots
        // than its cheapest victim's live blocks: `NoSpace` for good (the volume sweep over
        // zones).
        let guard = info.flags & SEEN == 0 || info.flags & TORN != 0;
        let scanned = entry
            .store
            .remount_scanned(expect, guard)
            .await
            .map_err(unwindow)?;
        self.zone_mounts = self.zone_mounts.wrapping_add(1);
        let info = &mut self.zones[zone];
        if info.flags & SEEN == 0 {
            info.flags |= SEEN;
            if entry.store.damaged() {
                info.flags |= DAMAGED;
            }
        } else if scanned != info.fingerprint {
            info.flags |= CHANGED;
            crate::log::log_warn!(
                "nor: zone {=u32} does not map its blocks as it did: not served until a remount",
                zone as u32
            );
            self.given_up = add_stats(self.given_up, entry.store.stats());
            return Err(NorError::ZoneChanged { zone: zone as u32 });
        }
        if info.flags & RELEASED != 0 {
            entry.store.release_damage();
        }
        entry.zone = zone as u16;
        entry.used = clock;
        Ok(i)
    }

    /// Let cache entry `i` go of its zone: the write it left pending decided, the fingerprint
    /// of its map kept.
    async fn give_up(&mut self, i: usize) {
        let zone = self.cache[i].zone;
        if zone == NO_ZONE {
            return;
        }
        self.hand_to(i);
        let entry = &mut self.cache[i];
        // Best effort: a pending write that cannot be decided now is decided by the next
        // mount of the zone, and if that differs from the map, the zone reads as changed.
        // The entry keeps its zone until the fingerprint is taken: a future dropped here
        // leaves the zone in RAM as it was, not a zone whose fingerprint is stale.
        let quiet = entry.store.quiesce().await.is_ok();
        let info = &mut self.zones[usize::from(zone)];
        info.fingerprint = entry.store.map_fingerprint();
        if !quiet || entry.store.stats().failed_ops != 0 {
            info.flags |= TORN;
        }
        entry.zone = NO_ZONE;
        self.given_up = add_stats(self.given_up, entry.store.stats());
    }

    /// Move the flash driver to cache entry `i`'s window.
    fn hand_to(&mut self, i: usize) {
        if self.cache[i].store.flash_mut().flash.is_some() {
            return;
        }
        let mut driver = None;
        for entry in self.cache.iter_mut() {
            driver = driver.or(entry.store.flash_mut().flash.take());
        }
        self.cache[i].store.flash_mut().flash = driver;
    }

    /// The zone of `block` and its number there.
    fn locate(&self, block: u32) -> Res<(usize, u32), F> {
        let zone = block as usize / ZONE_BLOCKS;
        if !self.mounted {
            return Err(NorError::NotMounted);
        }
        if zone >= ZONES {
            return Err(NorError::OutOfRange {
                block,
                blocks: self.num_blocks(),
            });
        }
        Ok((zone, block % ZONE_BLOCKS as u32))
    }

    /// A zone store's error, with the block numbered as the caller numbers it.
    fn error(zone: usize, e: NorError<WindowError<F::Error>>) -> NorError<F::Error> {
        match unwindow(e) {
            NorError::Corrupt { block } => NorError::Corrupt {
                block: (zone * ZONE_BLOCKS) as u32 + block,
            },
            e => e,
        }
    }

    /// Read logical block `block`. A block never written reads as zeros.
    pub async fn read_block(&mut self, block: u32, buf: &mut [u8; BLOCK_LEN]) -> Res<(), F> {
        let (zone, local) = self.locate(block)?;
        let i = self.load(zone).await?;
        self.hand_to(i);
        let result = self.cache[i].store.read_block(local, buf).await;
        result.map_err(|e| Self::error(zone, e))
    }

    /// Write logical block `block`. When this returns `Ok`, the block is durable.
    pub async fn write_block(&mut self, block: u32, data: &[u8; BLOCK_LEN]) -> Res<(), F> {
        let (zone, local) = self.locate(block)?;
        let i = self.load(zone).await?;
        self.hand_to(i);
        let result = self.cache[i].store.write_block(local, data).await;
        result.map_err(|e| Self::error(zone, e))
    }

    /// Number of logical blocks: `ZONES * ZONE_BLOCKS`.
    pub const fn num_blocks(&self) -> u32 {
        (ZONES * ZONE_BLOCKS) as u32
    }

    /// True when the mount found damage in some zone (see [`NorBlockStore::damaged`]), or a
    /// zone changed while its map was not in RAM ([`NorError::ZoneChanged`]) since the
    /// store was mounted or remounted before this one: some block may read as an older
    /// version than the one acknowledged, and the caller must rewrite every block from
    /// another copy before it trusts this store's content again.
    pub fn damaged(&self) -> bool {
        self.zones
            .iter()
            .any(|z| z.flags & (DAMAGED | CHANGED) != 0)
    }

    /// The caller acted on the damage: see [`NorBlockStore::release_damage`]. Zones out of RAM
    /// release theirs when they are mounted again.
    pub fn release_damage(&mut self) {
        for info in self.zones.iter_mut() {
            info.flags |= RELEASED;
        }
        for c in self.cache.iter_mut().filter(|c| c.zone != NO_ZONE) {
            c.store.release_damage();
        }
    }

    /// Whether a zone in RAM holds sectors as the record of damage (see
    /// [`NorBlockStore::release_damage`]).
    pub fn holds_damage(&self) -> bool {
        self.cache
            .iter()
            .any(|c| c.zone != NO_ZONE && c.store.holds_damage())
    }

    /// True when some zone changed while its map was not in RAM and is not served
    /// ([`NorError::ZoneChanged`]) until [`Self::remount`].
    pub fn zone_changed(&self) -> bool {
        self.zones.iter().any(|z| z.flags & CHANGED != 0)
    }

    /// Whether a zone in RAM gave up sectors in this session (see
    /// [`NorBlockStore::gave_up_sectors`]). A zone that leaves RAM erases them again when
    /// needed at its next mount.
    pub fn gave_up_sectors(&self) -> bool {
        self.cache
            .iter()
            .any(|c| c.zone != NO_ZONE && c.store.gave_up_sectors())
    }

    /// [`Self::remount`] when a zone gave up sectors ([`Self::gave_up_sectors`]) or changed
    /// ([`Self::zone_changed`]), or the last mount failed (the store serves nothing until one
    /// succeeds): `Ok(true)` when it mounted again, and then every block is to be rewritten
    /// from the other copy.
    pub async fn remount_if_needed(&mut self) -> Res<bool, F> {
        if self.mounted && !self.gave_up_sectors() && !self.zone_changed() {
            return Ok(false);
        }
        crate::log::log_warn!(
            "nor: a zone gave sectors up or changed, or not mounted: mounting again"
        );
        self.remount().await?;
        Ok(true)
    }

    /// Work counters since the mount, of every zone (a zone's mount is counted each time).
    pub fn stats(&self) -> NorStats {
        self.cache
            .iter()
            .filter(|c| c.zone != NO_ZONE)
            .fold(self.given_up, |sum, c| add_stats(sum, c.store.stats()))
    }

    /// Zone mounts since the store was mounted (the first mount of each zone included): the
    /// cost of a cache too small for the access pattern.
    pub fn zone_mounts(&self) -> u32 {
        self.zone_mounts
    }

    /// How much room each zone's configuration leaves its garbage collection.
    pub const fn provisioning(&self) -> Provisioning {
        provisioning(ZONE_BLOCKS, ZONE_SECTORS, F::ERASE_SIZE)
    }

    /// `Some` when each zone mounts but sits at the edge of the capacity rule (see
    /// [`NorBlockStore::warning`]).
    pub const fn warning(&self) -> Option<NorWarning> {
        self.provisioning().warning()
    }

    /// Whether the bookkeeping of every zone in RAM agrees with a count from scratch (see
    /// [`NorBlockStore::bookkeeping_holds`]). For tests.
    #[doc(hidden)]
    pub fn bookkeeping_holds(&self) -> bool {
        self.cache
            .iter()
            .all(|c| c.zone == NO_ZONE || c.store.bookkeeping_holds())
    }

    /// Give the flash driver back.
    pub fn into_inner(mut self) -> F {
        self.hand_to(0);
        match self.cache[0].store.flash_mut().flash.take() {
            Some(driver) => driver,
            None => unreachable!("the driver is always in one window"),
        }
    }

    /// The flash driver (for fault injection in tests).
    pub fn flash_mut(&mut self) -> &mut F {
        self.hand_to(0);
        match self.cache[0].store.flash_mut().flash.as_mut() {
            Some(driver) => driver,
            None => unreachable!("the driver is always in one window"),
        }
    }
}

/// Counters added field by field.
fn add_stats(a: NorStats, b: NorStats) -> NorStats {
    NorStats {
        host_writes: a.host_writes.wrapping_add(b.host_writes),
        relocations: a.relocations.wrapping_add(b.relocations),
        erases: a.erases.wrapping_add(b.erases),
        leveled: a.leveled.wrapping_add(b.leveled),
        failed_ops: a.failed_ops.wrapping_add(b.failed_ops),
        reread: a.reread.wrapping_add(b.reread),
        corrected: a.corrected.wrapping_add(b.corrected),
        refreshed: a.refreshed.wrapping_add(b.refreshed),
        settled: a.settled.wrapping_add(b.settled),
        renewed: a.renewed.wrapping_add(b.renewed),
        damaged: a.damaged.wrapping_add(b.damaged),
    }
}
