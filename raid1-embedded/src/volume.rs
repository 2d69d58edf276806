//! The mirrored volume: raid1-core's engine driving two members, member 0 an SD card (reads
//! are served from it) and member 1 the NOR flash block store (write-mostly).
//!
//! Each member carries md v1.2 metadata (raid1-superblock), so a card pulled from the device
//! reads with `mdadm --examine` / `raid1 examine` on a Linux host:
//!
//! ```text
//! sector 0..8     unused (4 KiB, as md v1.2 leaves it)
//! sector 8        md v1.2 superblock (max_dev = 2, feature: bitmap)
//! sector 16       internal write-intent bitmap: bitmap superblock (256 B) + bits (<= 256 B)
//! sector 24..     data (DATA_OFFSET)
//! ```
//!
//! The binding is synchronous: a read or write issues the engine's member I/O at once and
//! returns when the logical request is complete. Long work (the initial resync of a new
//! volume, a resync after a power loss, a recovery after a card is reinserted or replaced, a
//! scrub) advances only in bounded steps: [`Mirror::step`] issues at most the number of sync
//! commands it is given and returns its [`Progress`], so firmware can feed a watchdog or yield
//! to other tasks in between. [`Mirror::open`], [`Mirror::format`], [`Mirror::sd_inserted`]
//! and [`Mirror::scrub`] are blocking wrappers that step until the work is done; the `_begin`
//! variants return as soon as the work is set up.

use core::cell::RefCell;
use embedded_sdmmc::{Block, BlockCount, BlockDevice, BlockIdx};
use embedded_storage::nor_flash::NorFlash;
use raid1_core::{
    AddMember, Array, AssembleError, Buffer, Config, ConfigError, Event, Instant, IoCmd, IoResult,
    MemberOp, Outcome, ReconfigError, Request, RequestOp, Role, Sector, StartPolicy, SubmitError,
    SuperblockState, bridge,
};
use raid1_superblock::{
    BitmapState, BitmapSuperblock, FeatureMap, FixedFields, MdTime, SetName, Superblock, Uuid,
};

use crate::nor::{NorBlockStore, NorWarning, Refused, ZonedNorStore};
// The engine's names that the volume's API uses ([`Health`], [`Progress`], [`SD`], [`NOR`]),
// so that firmware can name them without depending on raid1-core itself.
pub use raid1_core::{MemberId, MemberState, SyncAction};

pub mod asynch;
mod machine;

#[cfg(feature = "format")]
use machine::Plan;
use machine::{Ask, Asker, Core, Job, Join, Mount, Task};

/// Sector of the md v1.2 superblock on each member.
pub const SUPERBLOCK_SECTOR: u64 = 8;
/// Sector of the card's copy of its superblock, written just before the superblock in every
/// round that needs it (outside md's areas: Linux neither reads nor writes it). A power cut
/// that tears the superblock leaves the copy whole, and the mount reads it then (only then: a
/// superblock wiped or overwritten is not torn, see [`raid1_superblock::FixedFields`]).
pub const SUPERBLOCK_COPY_SECTOR: u64 = 9;
/// Sector of the bitmap (superblock + 8 sectors).
pub const BITMAP_SECTOR: u64 = 16;
/// First data sector on each member.
pub const DATA_OFFSET: u64 = 24;
/// The SD card's member id (md `dev_number` 0).
pub const SD: MemberId = MemberId(0);
/// The NOR flash member's id (md `dev_number` 1).
pub const NOR: MemberId = MemberId(1);
/// Logical requests the engine tracks at once.
pub const REQUESTS: usize = 2;
/// Bytes of bitmap bits at most (they share one sector with the 256-byte bitmap superblock).
pub const BITMAP_BYTES: usize = 256;
const MAX_DEV: u32 = 2;
const MAX_REQUEST_SECTORS: u32 = 64;
/// Rounds without any command to issue (each lets 1 ms of engine time pass, so that waiting
/// timers fire) before a request or a blocking wrapper gives up with `Stalled`.
const IDLE_ROUNDS: u32 = 100_000;
/// Sync commands a blocking wrapper issues per step.
const BLOCKING_STEP: u32 = 64;
/// Engine time between two sync windows. The engine starts a new window as soon as one is
/// free and the pacing allows, ahead of requests waiting at the barrier; a request advances
/// the engine clock by 1 ns, so with this pace a read or write waits for at most the window in
/// flight, and `step` (which lets this much time pass) moves the sync on.
const SYNC_PACE_NS: u64 = 1_000;

/// A member failed an I/O (removed card, device error, power loss).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MemberFault;

/// A block device the mirror can use as a member.
pub trait Member {
    /// Read `blocks.len()` sectors starting at `sector`.
    fn read(&mut self, sector: u64, blocks: &mut [Block]) -> Result<(), MemberFault>;
    /// Write `blocks.len()` sectors starting at `sector`; durable when this returns.
    fn write(&mut self, sector: u64, blocks: &[Block]) -> Result<(), MemberFault>;
    /// Size in sectors.
    fn sectors(&mut self) -> Result<u64, MemberFault>;
    /// The device was (re)inserted: forget what the driver knew of the previous card, so that
    /// the next command initialises it again. Nothing to do for a soldered device.
    fn reinit(&mut self) {}
    /// The device is about to be brought back ([`Mirror::rejoin`]): one that gave up part of
    /// its medium in this session (a NOR store's sectors whose erase failed) takes it up
    /// again. `Ok(true)` when it did so by mounting again, which may decide some block anew:
    /// the mirror then rewrites it in full. The default does nothing.
    fn refresh(&mut self) -> Result<bool, MemberFault> {
        Ok(false)
    }
    /// True when the device knows that some of its blocks may hold older data than was
    /// acknowledged (see [`NorBlockStore::damaged`]): the mirror then recovers it in full.
    fn damaged(&self) -> bool {
        false
    }
    /// The mirror acted on [`Member::damaged`]: the device's rewrite in full is recorded in
    /// its metadata, or the device is kept as it is. A NOR store holds the record of its
    /// damage until then (see [`NorBlockStore::release_damage`]). The default does nothing.
    fn release_damage(&mut self) {}
    /// Something the device's mount found that works but that the firmware should know of
    /// (see [`NorBlockStore::warning`]); [`Health::warning`] passes it on.
    fn warning(&self) -> Option<NorWarning> {
        None
    }
}

/// An SD card (any embedded-sdmmc `BlockDevice`) as a member.
///
/// Every block is written with its own single-block write: embedded-sdmmc's `SdCard` waits
/// until the card is no longer busy and checks the card's status (CMD13) after a single-block
/// write, but returns from a multi-block write as soon as the stop token is sent, while the
/// card may still be programming. A write is acknowledged only when it is durable.
pub struct SdMember<D: BlockDevice> {
    /// The card driver.
    pub dev: D,
    reinit: Option<fn(&D)>,
}

impl<D: BlockDevice> SdMember<D> {
    /// A card whose driver needs nothing when a card is inserted again.
    pub const fn new(dev: D) -> Self {
        SdMember { dev, reinit: None }
    }

    /// A card whose driver must be told when a card is inserted again (embedded-sdmmc's
    /// `SdCard::mark_card_uninit`): [`Mirror::sd_inserted`] calls `reinit` before it probes
    /// the card, so that the card's metadata is read and its recovery is bitmap-guided.
    pub const fn with_reinit(dev: D, reinit: fn(&D)) -> Self {
        SdMember {
            dev,
            reinit: Some(reinit),
        }
    }

    /// The driver.
    pub fn into_inner(self) -> D {
        self.dev
    }
}

impl<SPI, DELAY> SdMember<embedded_sdmmc::SdCard<SPI, DELAY>>
where
    SPI: embedded_hal::spi::SpiDevice<u8>,
    DELAY: embedded_hal::delay::DelayNs,
{
    /// An embedded-sdmmc SPI card, re-initialised on every insertion.
    pub fn sd_card(card: embedded_sdmmc::SdCard<SPI, DELAY>) -> Self {
        Self::with_reinit(card, embedded_sdmmc::SdCard::mark_card_uninit)
    }
}

impl<D: BlockDevice> Member for SdMember<D> {
    fn read(&mut self, sector: u64, blocks: &mut [Block]) -> Result<(), MemberFault> {
        let idx = u32::try_from(sector).map_err(|_| MemberFault)?;
        self.dev
            .read(blocks, BlockIdx(idx))
            .map_err(|_| MemberFault)
    }

    fn write(&mut self, sector: u64, blocks: &[Block]) -> Result<(), MemberFault> {
        let idx = u32::try_from(sector).map_err(|_| MemberFault)?;
        for (i, b) in blocks.iter().enumerate() {
            let at = idx.checked_add(i as u32).ok_or(MemberFault)?;
            self.dev
                .write(core::slice::from_ref(b), BlockIdx(at))
                .map_err(|_| MemberFault)?;
        }
        Ok(())
    }

    fn reinit(&mut self) {
        if let Some(f) = self.reinit {
            f(&self.dev);
        }
    }

    fn sectors(&mut self) -> Result<u64, MemberFault> {
        self.dev
            .num_blocks()
            .map(|c| u64::from(c.0))
            .map_err(|_| MemberFault)
    }
}

/// Each block of a request at `sector` through `op`, a NOR store's read or write of one
/// block (blocks are numbered as sectors), until one fails.
fn by_block<B>(
    sector: u64,
    blocks: impl IntoIterator<Item = B>,
    mut op: impl FnMut(u32, B) -> bool,
) -> Result<(), MemberFault> {
    for (i, b) in blocks.into_iter().enumerate() {
        let n = u32::try_from(sector + i as u64).map_err(|_| MemberFault)?;
        if !op(n, b) {
            return Err(MemberFault);
        }
    }
    Ok(())
}

impl<F: NorFlash, const BLOCKS: usize, const SECTORS: usize> Member
    for NorBlockStore<F, BLOCKS, SECTORS>
{
    fn read(&mut self, sector: u64, blocks: &mut [Block]) -> Result<(), MemberFault> {
        by_block(sector, blocks.iter_mut(), |n, b| {
            self.read_block(n, &mut b.contents).is_ok()
        })
    }

    fn write(&mut self, sector: u64, blocks: &[Block]) -> Result<(), MemberFault> {
        by_block(sector, blocks, |n, b| {
            self.write_block(n, &b.contents).is_ok()
        })
    }

    fn sectors(&mut self) -> Result<u64, MemberFault> {
        Ok(BLOCKS as u64)
    }

    fn refresh(&mut self) -> Result<bool, MemberFault> {
        self.remount_if_needed().map_err(|_| MemberFault)
    }

    fn damaged(&self) -> bool {
        NorBlockStore::damaged(self)
    }

    fn release_damage(&mut self) {
        NorBlockStore::release_damage(self)
    }

    fn warning(&self) -> Option<NorWarning> {
        NorBlockStore::warning(self)
    }
}

/// The zoned NOR store as the mirror's NOR member: a zone that changed while its map was out
/// of RAM fails its reads and writes (the engine then fails the member, when the card is in
/// sync), and [`Mirror::rejoin`] mounts the store again and rewrites it in full.
impl<
    F: NorFlash,
    const ZONES: usize,
    const ZONE_BLOCKS: usize,
    const ZONE_SECTORS: usize,
    const CACHED: usize,
> Member for ZonedNorStore<F, ZONES, ZONE_BLOCKS, ZONE_SECTORS, CACHED>
{
    fn read(&mut self, sector: u64, blocks: &mut [Block]) -> Result<(), MemberFault> {
        by_block(sector, blocks.iter_mut(), |n, b| {
            self.read_block(n, &mut b.contents).is_ok()
        })
    }

    fn write(&mut self, sector: u64, blocks: &[Block]) -> Result<(), MemberFault> {
        by_block(sector, blocks, |n, b| {
            self.write_block(n, &b.contents).is_ok()
        })
    }

    fn sectors(&mut self) -> Result<u64, MemberFault> {
        Ok(u64::from(self.num_blocks()))
    }

    fn refresh(&mut self) -> Result<bool, MemberFault> {
        self.remount_if_needed().map_err(|_| MemberFault)
    }

    fn damaged(&self) -> bool {
        ZonedNorStore::damaged(self)
    }

    fn release_damage(&mut self) {
        ZonedNorStore::release_damage(self)
    }

    fn warning(&self) -> Option<NorWarning> {
        ZonedNorStore::warning(self)
    }
}

/// Failures of the mirrored volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeError {
    /// No in-sync member could serve the request.
    Io,
    /// The request is beyond the volume (`end` is its end sector).
    OutOfRange {
        /// End sector of the request.
        end: u64,
    },
    /// Neither member holds metadata of this volume, or the members are too small.
    NoVolume,
    /// The volume is not mounted: its mount was refused. Nothing is read or written; the
    /// members go back to the caller (`into_members`) for another mount.
    NotMounted,
    /// The engine refused the configuration.
    Config(ConfigError),
    /// The engine refused to assemble.
    Assemble(AssembleError),
    /// The engine refused a reconfiguration.
    Reconfig(ReconfigError),
    /// The engine did not finish a request although every I/O was done (a bug).
    Stalled,
    /// A member could not be read while its metadata was probed (a card inserted but not
    /// answering): it was left out rather than recovered in full.
    Probe,
    /// Another long operation (a recovery, resync or scrub) is running.
    Busy,
    /// The member brought back is smaller than the volume (a card put back that is not the
    /// one taken out): it was left out, nothing written to it.
    TooSmall,
    /// The card inserted is not the volume's, which held the only copy in sync: it is neither
    /// read nor written, and the volume's I/O fails until its card is put back
    /// ([`Health::wrong_card`]). A rebuild of the flash that this stopped starts again when
    /// the volume's card is reported inserted again (or at [`Mirror::rejoin`] of the flash).
    /// A card in that place whose metadata fails to read is fenced the same way, with
    /// [`VolumeError::Probe`]: it may be the volume's; report its insertion again.
    WrongCard,
    /// A blocking [`Mirror::rejoin`] or [`Mirror::sd_inserted`] ended with the member not in
    /// sync: it failed again during its rebuild, or the rebuild stopped where its source
    /// failed to read ([`Mirror::health`] says which). A later rejoin tries again.
    NotRebuilt,
    /// The member brought back ran on without the member in sync now, whose failure its
    /// metadata records: each took writes the other lacks (the volume was opened from one
    /// while the other could not be read, md's start from what it has). It was left out and
    /// nothing was written to it: rebuilding it would destroy the writes only it holds
    /// ([`Health::split_brain`]). A mount that meets the two takes md's reference (the copy
    /// with more events) and keeps the other out the same way. [`Mirror::rejoin_over`]
    /// rewrites it from the volume once the firmware chose to let its writes go.
    SplitBrain,
}

/// Written out by hand, not through `Debug`: a firmware that prints its errors links only
/// these strings and the `Display` of the one nested error it prints.
impl core::fmt::Display for VolumeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("mirrored volume: ")?;
        match self {
            VolumeError::Io => f.write_str("no in-sync member could serve the request"),
            VolumeError::OutOfRange { end } => {
                write!(f, "request ending at sector {end} is beyond the volume")
            }
            VolumeError::NoVolume => {
                f.write_str("no member holds this volume, or one is too small")
            }
            VolumeError::NotMounted => f.write_str("the volume is not mounted: its mount failed"),
            VolumeError::Config(e) => write!(f, "configuration: {e}"),
            VolumeError::Assemble(e) => write!(f, "assembly: {e}"),
            VolumeError::Reconfig(e) => write!(f, "reconfiguration: {e}"),
            VolumeError::Stalled => f.write_str("the engine stalled with all I/O done"),
            VolumeError::Probe => f.write_str("a member could not be read while it was probed"),
            VolumeError::Busy => f.write_str("a recovery, resync or scrub is running"),
            VolumeError::TooSmall => f.write_str("the member is smaller than the volume"),
            VolumeError::WrongCard => {
                f.write_str("the card inserted is not the volume's, which held its only copy")
            }
            VolumeError::NotRebuilt => {
                f.write_str("the member is not in sync: it or its source failed in its rebuild")
            }
            VolumeError::SplitBrain => {
                f.write_str("the member ran on without the volume's copy: each has writes apart")
            }
        }
    }
}

impl core::error::Error for VolumeError {}

impl embedded_io::Error for VolumeError {
    fn kind(&self) -> embedded_io::ErrorKind {
        match self {
            VolumeError::OutOfRange { .. } => embedded_io::ErrorKind::InvalidInput,
            _ => embedded_io::ErrorKind::Other,
        }
    }
}

/// Caller storage the engine borrows: the bitmap bits, its scratch map, and the sync buffers.
/// `BITMAP` bytes of bits each (at most [`BITMAP_BYTES`]): a new volume gets the smallest chunk
/// (at least 4 KiB) whose bits fit, so a small `BITMAP` trades RAM for recovery granularity.
/// `WINDOW` is the sync window in sectors (at least 1): each sync command moves up to `WINDOW`
/// sectors, and each member gets a buffer of that size.
pub struct MirrorStorage<const BITMAP: usize = BITMAP_BYTES, const WINDOW: usize = 1> {
    bits: [u8; BITMAP],
    hot: [u8; BITMAP],
    sync: [[Block; WINDOW]; 2],
}

impl<const BITMAP: usize, const WINDOW: usize> MirrorStorage<BITMAP, WINDOW> {
    /// Zeroed storage: `2 * BITMAP + 1024 * WINDOW` bytes.
    pub const fn new() -> Self {
        MirrorStorage {
            bits: [0; BITMAP],
            hot: [0; BITMAP],
            sync: [const { [const { Block { contents: [0; 512] } }; WINDOW] }; 2],
        }
    }
}

impl<const BITMAP: usize, const WINDOW: usize> MirrorStorage<BITMAP, WINDOW> {
    /// The bitmap's bits, its scratch map, and the sync buffers (member 0's window, then
    /// member 1's).
    fn split(&mut self) -> (&mut [u8], &mut [u8], &mut [Block]) {
        let MirrorStorage { bits, hot, sync } = self;
        (bits, hot, sync.as_flattened_mut())
    }
}

impl<const BITMAP: usize, const WINDOW: usize> Default for MirrorStorage<BITMAP, WINDOW> {
    fn default() -> Self {
        Self::new()
    }
}

/// Identity of a new volume.
#[derive(Debug, Clone, Copy)]
pub struct VolumeIdentity {
    /// md array UUID.
    pub uuid: [u8; 16],
    /// md array name (at most 32 bytes).
    pub name: &'static str,
    /// Creation time, seconds since the epoch.
    pub ctime: u64,
}

/// Timers of the volume: how long after the last write the array is marked clean on disk,
/// and how often the bitmap daemon clears the bits of chunks no longer written. Longer delays
/// cost fewer metadata writes to a slow, steady writer (a logger) and a larger resync after a
/// power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Milliseconds without writes before the array is marked clean (md: 200).
    pub clean_delay_ms: u32,
    /// Period of the bitmap daemon, in milliseconds (md: 5000); 0 is refused, as md refuses it.
    pub bitmap_daemon_ms: u32,
}

impl Options {
    /// md's timers: clean after 200 ms, bitmap daemon every 5 s.
    pub const MD: Options = Options {
        clean_delay_ms: 200,
        bitmap_daemon_ms: 5000,
    };
}

impl Default for Options {
    fn default() -> Self {
        Options::MD
    }
}

/// Where the long work of the volume stands, returned by [`Mirror::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The sync action running (resync, recovery, check, repair), if any.
    pub action: Option<SyncAction>,
    /// Sectors of it done.
    pub done: u64,
    /// Sectors it covers.
    pub total: u64,
    /// Sync commands issued by this step.
    pub commands: u32,
    /// Work remains: a sync runs or is about to start, or metadata is not yet on disk.
    pub busy: bool,
}

/// What the volume looks like now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// Fewer members in sync than slots.
    pub degraded: bool,
    /// State of the SD member.
    pub sd: MemberState,
    /// State of the NOR member.
    pub nor: MemberState,
    /// md event counter.
    pub events: u64,
    /// Bitmap chunks marked dirty.
    pub dirty_chunks: u32,
    /// Sectors copied by recoveries and resyncs since mount.
    pub synced_sectors: u64,
    /// Sectors the last scrub found different (md's `mismatch_cnt`).
    pub mismatches: u64,
    /// Read errors corrected since mount by rewriting the block from the other member.
    pub corrected: u32,
    /// What the NOR member's mount warned of (a store provisioned at the edge of its
    /// capacity rule), if anything.
    pub warning: Option<NorWarning>,
    /// The NOR store found damage at its mount that it could not place
    /// ([`NorBlockStore::damaged`]), and the card was not as fresh (stale, being rebuilt, or
    /// absent): the NOR member was kept as the volume's freshest copy rather than rewritten
    /// from the card, and some block may read older than acknowledged. (With a card as fresh,
    /// the NOR member is rewritten from it in full instead, and this is false.)
    pub nor_damaged: bool,
    /// The card in the slot is not known to be the volume's card, which held the only copy in
    /// sync: another card, or one whose metadata failed to read at its insertion (see
    /// [`VolumeError::WrongCard`]). It is neither read nor written: put the volume's card back
    /// and report its insertion.
    pub wrong_card: bool,
    /// A member ran on without the member in sync now and holds writes the volume never took
    /// (split brain, see [`VolumeError::SplitBrain`]): it is kept out, nothing written to it,
    /// until [`Mirror::rejoin_over`] rewrites it from the volume.
    pub split_brain: bool,
    /// A card was reported inserted and is not known yet for the card in place (its check
    /// failed to read it, or an async call that made it was dropped before it decided): no
    /// command reaches it until its insertion is reported again and it is read.
    pub card_unchecked: bool,
}

/// Static metadata of the volume, the same on both members.
#[derive(Debug, Clone, Copy)]
struct Meta {
    uuid: Uuid,
    name: SetName,
    ctime: MdTime,
    data_sectors: Sector,
    chunk_sectors: Sector,
    member_sectors: [u64; 2],
}

/// The buffer of the one logical request in progress.
enum ReqBuf<'x> {
    Read(&'x mut [Block]),
    Write(&'x [Block]),
    None,
}

struct Inner<'b, A: Member, B: Member> {
    core: Core<'b>,
    sd: A,
    nor: B,
    pos: u64,
}

/// What closing a volume gives: its members, with the error if the close failed.
pub type Closed<A, B> = Result<(A, B), Refused<VolumeError, (A, B)>>;

/// The mirrored volume over an SD member `A` and a NOR member `B`. Implements embedded-sdmmc's
/// `BlockDevice` (so `VolumeManager` mounts a FAT filesystem on it) and embedded-io
/// `Read`/`Write`/`Seek` for raw byte access.
pub struct Mirror<'b, A: Member, B: Member> {
    inner: RefCell<Inner<'b, A, B>>,
}

fn config(meta: &Meta, window: usize, opts: &Options) -> Config {
    let mut cfg = Config::new(meta.data_sectors);
    cfg.max_request_sectors = MAX_REQUEST_SECTORS;
    cfg.bitmap_chunk_sectors = meta.chunk_sectors;
    cfg.bitmap_page_bytes = BITMAP_BYTES as u32;
    cfg.sync_window_sectors = window.clamp(1, MAX_REQUEST_SECTORS as usize) as u32;
    cfg.sync_checkpoint_sectors = 64;
    cfg.safe_mode_delay_ns = u64::from(opts.clean_delay_ms) * 1_000_000;
    cfg.bitmap_daemon_ns = u64::from(opts.bitmap_daemon_ms) * 1_000_000;
    cfg
}

/// Whether a member of `sectors` sectors holds the volume `meta` describes.
fn fits(sectors: u64, meta: &Meta) -> bool {
    sectors >= DATA_OFFSET + u64::from(meta.data_sectors)
}

/// The smallest power-of-two chunk (at least 4 KiB) whose bits fit in `bytes` bytes.
fn chunk_for(data_sectors: Sector, bytes: usize) -> Sector {
    let mut chunk: Sector = 8;
    while data_sectors.div_ceil(chunk) > (bytes.clamp(1, BITMAP_BYTES) * 8) as Sector {
        chunk *= 2;
    }
    chunk
}

/// The static fields of the volume as one member's metadata records them.
#[derive(Debug, Clone, Copy)]
struct Found {
    uuid: Uuid,
    name: SetName,
    ctime: MdTime,
    size: Sector,
    chunk_sectors: Sector,
}

/// The state and static fields that a member's superblock records, when it is one this
/// binding wrote for member `id`; the bitmap's part is filled in by [`add_bitmap`]. Its own
/// frame: the whole parsed superblock is not kept.
#[inline(never)]
fn parse_superblock(block: &Block, id: MemberId) -> Option<(SuperblockState<2>, Found)> {
    let sb = Superblock::<2>::parse(&block.contents).ok()?;
    if sb.dev_number != u32::from(id.0) || sb.data_offset != DATA_OFFSET {
        return None;
    }
    let state = bridge::read_state(&sb, None).ok()?;
    let found = Found {
        uuid: sb.set_uuid,
        name: sb.set_name,
        ctime: sb.ctime,
        size: state.size,
        chunk_sectors: 0,
    };
    Some((state, found))
}

/// Whether `block`, which [`parse_superblock`] refused, is a superblock of member `id` torn by
/// a power cut as it was rewritten: md's magic and version, this member's number and data
/// offset and a volume's UUID (fields that every round writes alike, so that any mix of an
/// old and a new superblock keeps them) but a checksum that does not match. Its UUID then;
/// `Some(None)` for a block that reads blank, all zeros or all ones (an SD card reads a block
/// whose program a power cut stopped as its erased state; `mdadm --zero-superblock` writes
/// zeros too: the mount tells them apart, see `Mount::choose`); `None` for anything else: a
/// superblock whose magic was wiped (`wipefs`) or overwritten, which must not be taken for
/// this volume's.
#[inline(never)]
fn torn_superblock(block: &Block, id: MemberId) -> Option<Option<Uuid>> {
    let b = &block.contents;
    if b.iter().all(|&x| x == b[0]) && (b[0] == 0 || b[0] == 0xFF) {
        return Some(None);
    }
    let f = FixedFields::read(b)?;
    let torn = f.dev_number == u32::from(id.0)
        && f.data_offset == DATA_OFFSET
        && f.super_offset == SUPERBLOCK_SECTOR
        && !f.checksum_ok;
    torn.then_some(Some(f.set_uuid))
}

/// What the bitmap sector adds to [`parse_superblock`]'s result: `events_cleared` (the one
/// field of the state that the bridge takes from the bitmap) and the chunk size. A sector
/// that could not be read (`None`) or is not the bitmap of the same array (torn by a power
/// cut as it was rewritten: the card writes it in place) leaves the chunk unknown (0: the
/// mount takes the other member's) and sets `events_cleared` to the member's events, so that
/// a peer that fell behind is recovered in full: the bits that said what it missed are gone.
/// The member keeps what its superblock says; before (2026-12-05) it was taken for a new one
/// and rebuilt in full from its peer, which lost the block the peer could not read (a flash
/// block that rotted). False in that case.
#[inline(never)]
fn add_bitmap(probed: &mut (SuperblockState<2>, Found), bitmap: Option<&Block>) -> bool {
    match bitmap.map(|b| BitmapSuperblock::parse(&b.contents)) {
        Some(Ok(bm)) if bm.uuid == probed.1.uuid && bm.chunksize >= 512 => {
            probed.0.events_cleared = bm.events_cleared;
            probed.1.chunk_sectors = Sector::from(bm.chunksize / 512);
            true
        }
        _ => {
            crate::log::log_warn!("mirror: a member's bitmap sector is unreadable");
            probed.0.events_cleared = probed.0.events;
            probed.1.chunk_sectors = 0;
            false
        }
    }
}

/// The members, with the error if `closed` is one: what a close gives back.
fn give_back<A, B>(driver: (A, B), closed: Result<(), VolumeError>) -> Closed<A, B> {
    match closed {
        Ok(()) => Ok(driver),
        Err(error) => Err(Refused { error, driver }),
    }
}

#[cfg(feature = "format")]
fn refused<A, B>(error: VolumeError, sd: A, nor: B) -> Refused<VolumeError, (A, B)> {
    Refused {
        error,
        driver: (sd, nor),
    }
}

/// Answer `q`'s questions from the members until it has none.
fn answer<'m>(sd: &'m mut dyn Member, nor: &'m mut dyn Member, q: &mut dyn Asker) {
    let mut block = [Block::new()];
    while let Some(ask) = q.next() {
        let dev = if ask.member() == SD {
            &mut *sd
        } else {
            &mut *nor
        };
        let got = match ask {
            Ask::Read(_, sector) => dev.read(sector, &mut block).map(|()| 0),
            Ask::Size(_) => dev.sectors(),
        };
        q.answer(got.ok(), &block[0]);
    }
}

/// Runs of at most `MAX_REQUEST_SECTORS` of `len` sectors from `sector` on: each run's first
/// sector and its blocks.
fn runs(sector: u64, len: usize) -> impl Iterator<Item = (u64, core::ops::Range<usize>)> {
    let max = MAX_REQUEST_SECTORS as usize;
    (0..len)
        .step_by(max)
        .map(move |d| (sector + d as u64, d..(d + max).min(len)))
}

impl<'b, A: Member, B: Member> Mirror<'b, A, B> {
    /// Write fresh metadata of a new volume to both members, copy the SD card's data area to
    /// the NOR member (md's initial resync) and mark the volume clean; the members come back,
    /// to be mounted with [`Mirror::open`]. Blocking: [`Mirror::create`] and [`Mirror::step`]
    /// do the same in bounded steps. On failure the members come back with the error.
    #[cfg(feature = "format")]
    pub fn format<const BM: usize, const W: usize>(
        sd: A,
        nor: B,
        storage: &'b mut MirrorStorage<BM, W>,
        id: VolumeIdentity,
    ) -> Result<(A, B), Refused<VolumeError, (A, B)>> {
        let vol = Self::create(sd, nor, storage, id, Options::MD)?;
        if let Err(e) = vol.finish() {
            return Err(vol.refuse(e));
        }
        vol.close()
    }

    /// Write fresh metadata of a new volume to both members and return it mounted, with its
    /// initial resync (the SD card's data area copied to the NOR member) still to run in
    /// [`Mirror::step`]. Reads and writes are served meanwhile.
    #[cfg(feature = "format")]
    pub fn create<const BM: usize, const W: usize>(
        sd: A,
        nor: B,
        storage: &'b mut MirrorStorage<BM, W>,
        id: VolumeIdentity,
        opts: Options,
    ) -> Result<Self, Refused<VolumeError, (A, B)>> {
        let (mut sd, mut nor) = (sd, nor);
        let sizes = match (sd.sectors(), nor.sectors()) {
            (Ok(a), Ok(b)) => [a, b],
            _ => return Err(refused(VolumeError::NoVolume, sd, nor)),
        };
        let smallest = sizes[0].min(sizes[1]);
        if smallest <= DATA_OFFSET + 8 || W == 0 {
            return Err(refused(VolumeError::NoVolume, sd, nor));
        }
        // A member larger than this build's sectors hold gives the largest array it can.
        let data_sectors = Sector::try_from(smallest - DATA_OFFSET)
            .unwrap_or(Sector::MAX)
            .min(raid1_core::MAX_ARRAY_SECTORS);
        let meta = Meta {
            uuid: Uuid(id.uuid),
            name: SetName::build(None, id.name.as_bytes()),
            ctime: MdTime::from_seconds(id.ctime),
            data_sectors,
            chunk_sectors: chunk_for(data_sectors, BM),
            member_sectors: sizes,
        };
        let MirrorStorage { bits, hot, sync } = storage;
        let array = match Array::create(
            config(&meta, W, &opts),
            Some((&mut bits[..], &mut hot[..])),
            2,
            &[SD, NOR],
            false,
        ) {
            Ok(a) => a,
            Err(e) => return Err(refused(VolumeError::Config(e), sd, nor)),
        };
        let core = Core::new(array, sync.as_flattened_mut(), meta);
        // The flash is write-mostly from the start: reads go to the card. Frozen, the
        // metadata goes out but the resync waits for `step`.
        Self::mounted(core, sd, nor, Task::setup(Plan::KEEP))
    }

    /// The volume over `core`, once `setup` (adding members, the write-mostly flag) has run.
    #[cfg(feature = "format")]
    #[inline(never)]
    fn mounted(
        core: Core<'b>,
        sd: A,
        nor: B,
        setup: Task,
    ) -> Result<Self, Refused<VolumeError, (A, B)>> {
        let vol = Mirror {
            inner: RefCell::new(Inner {
                core,
                sd,
                nor,
                pos: 0,
            }),
        };
        let mut setup = setup;
        let set_up = vol.lock().run(&mut setup, &mut ReqBuf::None);
        match set_up {
            Ok(()) => Ok(vol),
            Err(e) => Err(vol.refuse(e)),
        }
    }

    /// The volume before its mount: members, sync buffers and an empty engine.
    fn unmounted(sd: A, nor: B, sync: &'b mut [Block]) -> Self {
        Mirror {
            inner: RefCell::new(Inner {
                core: Core::unmounted(sync),
                sd,
                nor,
                pos: 0,
            }),
        }
    }

    /// Mount the volume from the members' metadata (the freshest superblock wins, as md
    /// assembles). A member without this volume's metadata (a new card) is added as a spare
    /// and fully recovered; one that is stale is re-added and recovered from the bitmap. The
    /// NOR member is write-mostly. Blocking: returns when the resync or recovery is done; see
    /// [`Mirror::assemble`] for the bounded variant. On failure the members come back.
    ///
    /// The volume is moved to the caller once, and the stack holds a copy of it on the way
    /// ([`Mirror::open_in`] builds it in a place the caller owns instead).
    pub fn open<const BM: usize, const W: usize>(
        sd: A,
        nor: B,
        storage: &'b mut MirrorStorage<BM, W>,
    ) -> Result<Self, Refused<VolumeError, (A, B)>> {
        let vol = Self::assemble(sd, nor, storage, Options::MD)?;
        match vol.finish() {
            Ok(()) => Ok(vol),
            Err(e) => Err(vol.refuse(e)),
        }
    }

    /// [`Mirror::open`] without the wait: the volume is mounted and serves reads and writes
    /// at once; its resync or recovery runs in [`Mirror::step`].
    pub fn assemble<const BM: usize, const W: usize>(
        sd: A,
        nor: B,
        storage: &'b mut MirrorStorage<BM, W>,
        opts: Options,
    ) -> Result<Self, Refused<VolumeError, (A, B)>> {
        let (bits, hot, sync) = storage.split();
        let vol = Self::unmounted(sd, nor, sync);
        let mounted = vol.lock().mount(bits, hot, opts);
        match mounted {
            Ok(()) => Ok(vol),
            Err(e) => Err(vol.refuse(e)),
        }
    }

    /// [`Mirror::open`] into `place`, which the caller owns (a `static`, or a local of a
    /// long-lived frame): the volume is built there and never moved, so the mount needs
    /// about the stack of a write rather than copies of the volume (it holds the engine, a few
    /// KiB). On failure the place holds the volume unmounted (its engine has no members:
    /// every request fails): `place.take()` and [`Mirror::into_members`] give the members
    /// back.
    pub fn open_in<'p, const BM: usize, const W: usize>(
        place: &'p mut Option<Self>,
        sd: A,
        nor: B,
        storage: &'b mut MirrorStorage<BM, W>,
    ) -> Result<&'p mut Self, VolumeError> {
        let vol = Self::assemble_in(place, sd, nor, storage, Options::MD)?;
        vol.finish()?;
        Ok(vol)
    }

    /// [`Mirror::assemble`] into `place`, as [`Mirror::open_in`] is [`Mirror::open`].
    pub fn assemble_in<'p, const BM: usize, const W: usize>(
        place: &'p mut Option<Self>,
        sd: A,
        nor: B,
        storage: &'b mut MirrorStorage<BM, W>,
        opts: Options,
    ) -> Result<&'p mut Self, VolumeError> {
        let (bits, hot, sync) = storage.split();
        let vol = Self::place(place, sd, nor, sync);
        vol.lock().mount(bits, hot, opts)?;
        Ok(vol)
    }

    /// The unmounted volume, in `place`. Its own frame: the volume on its way there is not
    /// on the stack of the mount.
    #[inline(never)]
    fn place<'p>(
        place: &'p mut Option<Self>,
        sd: A,
        nor: B,
        sync: &'b mut [Block],
    ) -> &'p mut Self {
        place.insert(Self::unmounted(sd, nor, sync))
    }

    /// Advance the long work (resync, recovery, scrub) by at most `budget` sync commands
    /// (each moves one sync window), issuing the metadata writes due on the way, and say where
    /// it stands. Returns quickly: call it from the main loop or a task, between other work.
    pub fn step(&self, budget: u32) -> Result<Progress, VolumeError> {
        let mut inner = self.lock();
        let mut task = Task::step(budget);
        inner.run(&mut task, &mut ReqBuf::None)?;
        Ok(inner.core.progress(task.commands()))
    }

    /// Step until no long work remains (the blocking wrapper of [`Mirror::step`]).
    pub fn finish(&self) -> Result<(), VolumeError> {
        let mut idle = 0;
        loop {
            let p = self.step(BLOCKING_STEP)?;
            if !p.busy {
                return Ok(());
            }
            if p.commands != 0 {
                idle = 0;
                continue;
            }
            // Nothing to issue yet: let engine time pass so that waiting timers fire.
            idle += 1;
            if idle > IDLE_ROUNDS {
                return Err(VolumeError::Stalled);
            }
            self.lock().core.idle_tick();
        }
    }

    /// Mark the volume clean on both members (writes drained, bitmap bits of idle chunks
    /// cleared, the superblocks say clean) and give the members back. A sync still running
    /// is checkpointed, not finished: the next mount resumes it. On failure the members come
    /// back with the error.
    pub fn close(self) -> Result<(A, B), Refused<VolumeError, (A, B)>> {
        let closed = self.clean();
        self.hand_back(closed)
    }

    /// What [`Mirror::close`] does before it gives the members back: the volume is clean on
    /// both members when this returns, and stays mounted (the next write marks it dirty
    /// again). Before a power-down that the firmware sees coming, say.
    #[inline(never)]
    pub fn clean(&self) -> Result<(), VolumeError> {
        let mut inner = self.lock();
        let cleaned = inner.run(&mut Task::close(), &mut ReqBuf::None);
        // The close froze the array; the volume stays mounted.
        cleaned.and(inner.core.thaw())
    }

    /// [`Mirror::close`] for the volume in `place` (see [`Mirror::open_in`]), which is empty
    /// afterwards; `None` when it was already. The volume is not moved before it is clean.
    pub fn close_in(place: &mut Option<Self>) -> Option<Closed<A, B>> {
        let closed = place.as_ref()?.clean();
        Self::hand_back_in(place, closed)
    }

    /// [`Mirror::hand_back`] for the volume in `place`, which is empty afterwards. Its own
    /// frame: the members on their way out are not on the stack of the close's I/O.
    #[inline(never)]
    fn hand_back_in(
        place: &mut Option<Self>,
        closed: Result<(), VolumeError>,
    ) -> Option<Closed<A, B>> {
        let driver = place.take().map(Self::into_members)?;
        Some(give_back(driver, closed))
    }

    /// The members, with the error if `closed` is one.
    #[inline(never)]
    fn hand_back(
        self,
        closed: Result<(), VolumeError>,
    ) -> Result<(A, B), Refused<VolumeError, (A, B)>> {
        give_back(self.into_members(), closed)
    }

    /// The volume's state, borrowed in this one place: a call from inside
    /// [`Mirror::with_members`] panics here. One borrow site instead of one per method keeps
    /// the panic paths (a call and a source location each) out of every method.
    #[inline(never)]
    fn lock(&self) -> core::cell::RefMut<'_, Inner<'b, A, B>> {
        self.inner.borrow_mut()
    }

    fn refuse(self, error: VolumeError) -> Refused<VolumeError, (A, B)> {
        Refused {
            error,
            driver: self.into_members(),
        }
    }

    /// Compare the two members over the whole volume (md's `check`; with `repair`, md's
    /// `repair`, which rewrites the NOR member from the card where they differ). Blocks that a
    /// member cannot read (a NOR block that fails its CRC) are rewritten from the other member
    /// either way. Returns the sectors found different. Blocking: see [`Mirror::scrub_begin`].
    pub fn scrub(&self, repair: bool) -> Result<u64, VolumeError> {
        self.scrub_begin(repair)?;
        self.finish()?;
        Ok(self.lock().core.mismatches())
    }

    /// Start a scrub (see [`Mirror::scrub`]) that runs in [`Mirror::step`]; the sectors found
    /// different are in [`Health::mismatches`] once it is done.
    pub fn scrub_begin(&self, repair: bool) -> Result<(), VolumeError> {
        let mut inner = self.lock();
        inner.core.scrub_start(repair)?;
        inner.pump()
    }

    /// Health of the volume.
    pub fn health(&self) -> Health {
        let inner = self.lock();
        inner.core.health(inner.nor.warning())
    }

    /// Advance the clock (nanoseconds, monotonic) and run the timers that are due: marking the
    /// array clean after idle, clearing bitmap bits. Issues their metadata writes, and at most
    /// one sync command of a running resync or recovery (that is [`Mirror::step`]'s job).
    pub fn tick(&self, now_ns: u64) -> Result<(), VolumeError> {
        let mut inner = self.lock();
        inner.core.tick(now_ns);
        inner.pump()
    }

    /// The SD card was pulled out (card-detect): fail it now instead of at the next error.
    /// Refused (`Reconfig(LastInSync)`) when the card holds the only copy in sync (the flash
    /// failed, or is being rebuilt from it): md never fails its last member; the volume keeps
    /// the card, its I/O fails until the card is put back and its insertion reported
    /// ([`Mirror::sd_inserted`] checks that it is the same card).
    pub fn sd_removed(&self) -> Result<(), VolumeError> {
        let mut inner = self.lock();
        inner.core.sd_removed()?;
        inner.pump()
    }

    /// A card was inserted: tell its driver (see [`SdMember::with_reinit`]) and re-add it
    /// (bitmap-guided recovery of the dirty chunks when it is this volume's card and not too
    /// stale; full recovery for a new card). Returns when the recovery is done
    /// ([`VolumeError::NotRebuilt`] when the card did not end in sync); see
    /// [`Mirror::sd_inserted_begin`] for the bounded variant.
    pub fn sd_inserted(&self) -> Result<(), VolumeError> {
        self.sd_inserted_begin()?;
        self.finish_rebuild(SD)
    }

    /// The wait of a blocking rejoin: [`Mirror::finish`], then whether member `id` ended in
    /// sync.
    fn finish_rebuild(&self, id: MemberId) -> Result<(), VolumeError> {
        self.finish()?;
        match self.lock().core.state(id) {
            MemberState::InSync => Ok(()),
            _ => Err(VolumeError::NotRebuilt),
        }
    }

    /// [`Mirror::sd_inserted`] without the wait: the recovery runs in [`Mirror::step`].
    ///
    /// The volume may hold a card in place still (in sync or being rebuilt) when it hears of
    /// the insertion: the card was swapped between two commands. The card in the slot is
    /// checked first: the same card (its superblock carries the events of the last one it
    /// took) is left as it is; another is rebuilt in full when the flash is in sync, and
    /// refused with [`VolumeError::WrongCard`] otherwise: then the card held the only copy in
    /// sync, and the volume's I/O fails until its card is put back and its insertion reported.
    /// A card whose metadata fails to read is not known to be the volume's: beside a flash in
    /// sync it is failed and refused ([`VolumeError::Probe`]); in place of the only copy it is
    /// fenced as another card is, with [`VolumeError::Probe`], until an insertion reads it.
    ///
    /// The volume's own card back in place starts again a rebuild of the flash that stopped
    /// while it was away (the rebuild's reads of it failed): md restarts a stopped recovery
    /// at the next reconfiguration, and the card's return is one.
    pub fn sd_inserted_begin(&self) -> Result<(), VolumeError> {
        let mut inner = self.lock();
        inner.sd.reinit();
        inner.core.card_inserted();
        inner.rejoin_begin(SD, Join::Inserted)
    }

    /// Bring a failed member back (the SD card after reinsertion, or the NOR flash after a
    /// transient failure): re-added and recovered from the bitmap when it carries this
    /// volume's metadata and left in sync, otherwise added as new and fully recovered. A flash
    /// whose store gave sectors up in this session (a part whose erases failed for a while)
    /// mounts again first and is recovered in full, as is a flash whose md superblock cannot
    /// be read. A member in sync, or being rebuilt, is left alone; one whose rebuild stopped
    /// (its source failed to read) is taken out and joins again. Returns when the recovery is
    /// done: [`VolumeError::NotRebuilt`] when the member did not end in sync.
    pub fn rejoin(&self, id: MemberId) -> Result<(), VolumeError> {
        self.rejoin_begin(id)?;
        self.finish_rebuild(id)
    }

    /// [`Mirror::rejoin`] without the wait: the recovery runs in [`Mirror::step`]. A card
    /// that cannot be read (or gives no size), or a flash whose store fails to mount again, is
    /// refused with [`VolumeError::Probe`] and stays out; a card smaller than the volume is
    /// refused with [`VolumeError::TooSmall`], nothing written to it; so is a member whose
    /// metadata records the member in sync now as failed ([`VolumeError::SplitBrain`]: it
    /// holds writes the volume never took). The same holds for [`Mirror::sd_inserted_begin`].
    pub fn rejoin_begin(&self, id: MemberId) -> Result<(), VolumeError> {
        self.lock().rejoin_begin(id, Join::Back)
    }

    /// Bring member `id` back rewritten in full from the volume, whatever its metadata says:
    /// for a member refused as a split brain ([`VolumeError::SplitBrain`],
    /// [`Health::split_brain`]) once the firmware chose to let go of the writes only it holds.
    /// Returns when the rebuild is done ([`VolumeError::NotRebuilt`] when the member did not
    /// end in sync). A member in sync or being rebuilt is left alone.
    pub fn rejoin_over(&self, id: MemberId) -> Result<(), VolumeError> {
        self.rejoin_over_begin(id)?;
        self.finish_rebuild(id)
    }

    /// [`Mirror::rejoin_over`] without the wait: the rebuild runs in [`Mirror::step`].
    pub fn rejoin_over_begin(&self, id: MemberId) -> Result<(), VolumeError> {
        self.lock().rejoin_begin(id, Join::Over)
    }

    /// Give the members back.
    pub fn into_members(self) -> (A, B) {
        let inner = self.inner.into_inner();
        (inner.sd, inner.nor)
    }

    /// Run `f` on the members (fault injection in tests and examples).
    pub fn with_members<R>(&self, f: impl FnOnce(&mut A, &mut B) -> R) -> R {
        let mut inner = self.lock();
        let Inner { sd, nor, .. } = &mut *inner;
        f(sd, nor)
    }

    /// Volume size in sectors.
    pub fn sectors(&self) -> u64 {
        u64::from(self.lock().core.meta.data_sectors)
    }

    /// Read sectors starting at `sector`.
    pub fn read_sectors(&self, sector: u64, blocks: &mut [Block]) -> Result<(), VolumeError> {
        let mut inner = self.lock();
        for (at, run) in runs(sector, blocks.len()) {
            inner.request(RequestOp::Read, at, ReqBuf::Read(&mut blocks[run]))?;
        }
        Ok(())
    }

    /// Write sectors starting at `sector`; acknowledged (durable on every in-sync member) when
    /// this returns `Ok`.
    pub fn write_sectors(&self, sector: u64, blocks: &[Block]) -> Result<(), VolumeError> {
        let mut inner = self.lock();
        for (at, run) in runs(sector, blocks.len()) {
            inner.request(RequestOp::Write, at, ReqBuf::Write(&blocks[run]))?;
        }
        Ok(())
    }
}

impl<'b, A: Member, B: Member> Inner<'b, A, B> {
    /// Mount over the bitmap storage `bits` and `hot`: probe the members, assemble the engine
    /// in its place, add the members the assembly left out.
    fn mount(
        &mut self,
        bits: &'b mut [u8],
        hot: &'b mut [u8],
        opts: Options,
    ) -> Result<(), VolumeError> {
        let mut setup = self.assemble_engine(bits, hot, opts)?;
        self.run(&mut setup, &mut ReqBuf::None)
    }

    /// The probes and the assembly of [`Inner::mount`], with the setup that follows. Its own
    /// frame: what the probes found is not on the stack of the setup's I/O.
    #[inline(never)]
    fn assemble_engine(
        &mut self,
        bits: &'b mut [u8],
        hot: &'b mut [u8],
        opts: Options,
    ) -> Result<Task, VolumeError> {
        let window = self.core.sync.len() / 2;
        // A store that gave sectors up (or whose mount failed) in this session, handed over
        // again without a reboot (a close, then an open), mounts again first, as a reboot's
        // would: it could take no more writes. A store that does not mount reads as none.
        let _ = self.nor.refresh();
        let mut mount = Mount::new(bits, hot, window, opts, self.nor.damaged());
        answer(&mut self.sd, &mut self.nor, &mut mount);
        mount.finish(&mut self.core)
    }

    /// Issue the commands `task` needs until it is over.
    fn run(&mut self, task: &mut Task, buf: &mut ReqBuf<'_>) -> Result<(), VolumeError> {
        while let Some(job) = self.core.next(task)? {
            let sync = self.issue(job, buf);
            task.issued(sync);
        }
        Ok(())
    }

    /// Probe member `id` and run its rejoin (see [`Core::rejoin`]).
    fn rejoin_begin(&mut self, id: MemberId, join: Join) -> Result<(), VolumeError> {
        let mut task = self.rejoin_plan(id, join)?;
        if let (None, Some(next)) = (&task, self.core.then_rejoin(join)) {
            task = self.rejoin_plan(next, Join::Back).unwrap_or(None);
        }
        match task {
            Some(mut task) => self.run(&mut task, &mut ReqBuf::None),
            None => Ok(()),
        }
    }

    /// Probe member `id` and plan its rejoin; `None` when it is in place (see
    /// [`Core::rejoin`]). Its own frame keeps the probed metadata off the stack of the
    /// recovery that follows.
    #[inline(never)]
    fn rejoin_plan(&mut self, id: MemberId, join: Join) -> Result<Option<Task>, VolumeError> {
        let Inner { core, sd, nor, .. } = self;
        let Some(mut rejoin) = core.rejoin(id, join)? else {
            return Ok(None);
        };
        if id == NOR && (nor.refresh().map_err(|_| VolumeError::Probe)? || nor.damaged()) {
            rejoin.in_full();
        }
        answer(sd, nor, &mut rejoin);
        core.rejoin_plan(rejoin)
    }

    /// Metadata and request I/O, and at most one sync command.
    fn pump(&mut self) -> Result<(), VolumeError> {
        self.run(&mut Task::pump(), &mut ReqBuf::None)
    }

    fn request(&mut self, op: RequestOp, sector: u64, buf: ReqBuf<'_>) -> Result<(), VolumeError> {
        let len = match &buf {
            ReqBuf::Read(b) => b.len(),
            ReqBuf::Write(b) => b.len(),
            ReqBuf::None => 0,
        };
        let mut task = self.core.submit(op, sector, len)?;
        self.run(&mut task, &mut { buf })
    }

    /// Carry out one command of the engine and complete it. Returns whether it was sync I/O.
    fn issue(&mut self, job: Job, buf: &mut ReqBuf<'_>) -> bool {
        let mut job = job;
        if self.core.needs_scratch(&job) {
            self.run_with_scratch(&mut job, buf);
        } else {
            self.run_job(&mut job, buf, &mut []);
        }
        let sync = self.core.job_finish(job);
        if self.core.take_release_nor() {
            self.nor.release_damage();
        }
        sync
    }

    /// [`Inner::run_job`] with a scratch block in a frame of its own, so that metadata
    /// blocks never nest on the stack of data I/O.
    #[inline(never)]
    fn run_with_scratch(&mut self, job: &mut Job, buf: &mut ReqBuf<'_>) {
        let mut scratch = [Block::new()];
        self.run_job(job, buf, &mut scratch);
    }

    fn run_job(&mut self, job: &mut Job, buf: &mut ReqBuf<'_>, scratch: &mut [Block]) {
        let Inner { core, sd, nor, .. } = self;
        while let Some(io) = core.job_next(job, scratch) {
            let dev: &mut dyn Member = if io.member == SD { sd } else { nor };
            let ok = if io.write {
                io.src(core.sync, buf, scratch)
                    .is_some_and(|s| dev.write(io.sector, s).is_ok())
            } else {
                io.dst(core.sync, buf, scratch)
                    .is_some_and(|d| dev.read(io.sector, d).is_ok())
            };
            job.done(ok);
        }
    }
}

/// The md v1.2 superblock of `member`: the volume's static fields, then the engine's state
/// through raid1-core's bridge.
fn render_superblock(
    meta: &Meta,
    member: MemberId,
    st: &SuperblockState<2>,
    block: &mut Block,
) -> Result<(), MemberFault> {
    {
        let mut sb = Superblock::<2>::new_raid1(
            meta.uuid,
            meta.name,
            meta.ctime,
            u32::from(st.raid_disks),
            u64::from(meta.data_sectors),
        );
        sb.feature_map = FeatureMap::BITMAP_OFFSET;
        sb.bitmap_offset = (BITMAP_SECTOR - SUPERBLOCK_SECTOR) as i32;
        sb.data_offset = DATA_OFFSET;
        let index = usize::from(member.0).min(1);
        sb.data_size = meta.member_sectors[index].saturating_sub(DATA_OFFSET);
        sb.super_offset = SUPERBLOCK_SECTOR;
        sb.dev_number = u32::from(member.0);
        let mut device_uuid = meta.uuid.0;
        device_uuid[15] ^= 0x5A ^ member.0;
        sb.device_uuid = Uuid(device_uuid);
        sb.max_dev = MAX_DEV;
        // Events, roles, raid_disks, resync and recovery offsets, WriteMostly (the NOR member:
        // reads are served from the SD card).
        bridge::apply_state(st, &mut sb, None).map_err(|_| MemberFault)?;
        sb.serialize(&mut block.contents)
            .map(|_| ())
            .map_err(|_| MemberFault)
    }
}

/// The bitmap sector: bitmap superblock (the static fields, then `st`'s events and
/// events_cleared through raid1-core's bridge) and all the bits.
fn render_bitmap(
    meta: &Meta,
    bits: &[u8],
    st: &SuperblockState<2>,
    block: &mut Block,
) -> Result<(), MemberFault> {
    let mut bm = BitmapSuperblock::new(meta.uuid, u64::from(meta.data_sectors));
    bm.chunksize = (u64::from(meta.chunk_sectors) * 512) as u32;
    bm.state = BitmapState::empty();
    bridge::apply_bitmap_state(st, &mut bm);
    *block = Block::new();
    bm.serialize(&mut block.contents).map_err(|_| MemberFault)?;
    let n = bits.len().min(BITMAP_BYTES);
    block.contents[256..256 + n].copy_from_slice(&bits[..n]);
    Ok(())
}

impl<A: Member, B: Member> BlockDevice for Mirror<'_, A, B> {
    type Error = VolumeError;

    fn read(&self, blocks: &mut [Block], start: BlockIdx) -> Result<(), VolumeError> {
        self.read_sectors(u64::from(start.0), blocks)
    }

    fn write(&self, blocks: &[Block], start: BlockIdx) -> Result<(), VolumeError> {
        self.write_sectors(u64::from(start.0), blocks)
    }

    fn num_blocks(&self) -> Result<BlockCount, VolumeError> {
        Ok(BlockCount(
            u32::try_from(self.sectors()).unwrap_or(u32::MAX),
        ))
    }
}

impl<A: Member, B: Member> embedded_io::ErrorType for Mirror<'_, A, B> {
    type Error = VolumeError;
}

impl<A: Member, B: Member> embedded_io::Read for Mirror<'_, A, B> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, VolumeError> {
        let pos = self.inner.get_mut().pos;
        let size = self.sectors() * 512;
        if pos >= size || buf.is_empty() {
            return Ok(0);
        }
        let mut block = [Block::new()];
        self.read_sectors(pos / 512, &mut block)?;
        let off = (pos % 512) as usize;
        let n = buf.len().min(512 - off).min((size - pos) as usize);
        buf[..n].copy_from_slice(&block[0].contents[off..off + n]);
        self.inner.get_mut().pos = pos + n as u64;
        Ok(n)
    }
}

impl<A: Member, B: Member> embedded_io::Write for Mirror<'_, A, B> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, VolumeError> {
        let pos = self.inner.get_mut().pos;
        let size = self.sectors() * 512;
        if buf.is_empty() {
            return Ok(0);
        }
        if pos >= size {
            return Err(VolumeError::OutOfRange { end: pos / 512 + 1 });
        }
        let off = (pos % 512) as usize;
        let n = buf.len().min(512 - off).min((size - pos) as usize);
        let mut block = [Block::new()];
        if n != 512 {
            self.read_sectors(pos / 512, &mut block)?;
        }
        block[0].contents[off..off + n].copy_from_slice(&buf[..n]);
        self.write_sectors(pos / 512, &block)?;
        self.inner.get_mut().pos = pos + n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), VolumeError> {
        // Writes are durable when acknowledged; nothing is cached.
        Ok(())
    }
}

impl<A: Member, B: Member> embedded_io::Seek for Mirror<'_, A, B> {
    fn seek(&mut self, pos: embedded_io::SeekFrom) -> Result<u64, VolumeError> {
        let size = self.sectors() * 512;
        let inner = self.inner.get_mut();
        let new = match pos {
            embedded_io::SeekFrom::Start(p) => Some(p),
            embedded_io::SeekFrom::End(d) => size.checked_add_signed(d),
            embedded_io::SeekFrom::Current(d) => inner.pos.checked_add_signed(d),
        };
        let new = new.ok_or(VolumeError::OutOfRange { end: 0 })?;
        inner.pos = new;
        Ok(new)
    }
}
