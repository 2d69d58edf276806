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
//! The binding is synchronous: every call issues the engine's member I/O at once and returns
//! when the logical request is complete. Recovery (after a card is reinserted or replaced)
//! runs inside [`Mirror::sd_inserted`] and copies only the chunks the bitmap marks dirty when
//! the card was a member before.

use core::cell::RefCell;
use embedded_sdmmc::{Block, BlockCount, BlockDevice, BlockIdx};
use embedded_storage::nor_flash::NorFlash;
use raid1_core::{
    AddMember, Array, AssembleError, Buffer, Config, ConfigError, Event, Instant, IoCmd, IoResult,
    MemberId, MemberOp, MemberState, Outcome, ReconfigError, Request, RequestOp, Role, StartPolicy,
    SubmitError, SuperblockState, bridge,
};
use raid1_superblock::{
    BitmapState, BitmapSuperblock, FeatureMap, MdTime, SetName, Superblock, Uuid,
};

use crate::nor::{NorBlockStore, NorError};

/// Sector of the md v1.2 superblock on each member.
pub const SUPERBLOCK_SECTOR: u64 = 8;
/// Sector of the bitmap (superblock + 8 sectors).
pub const BITMAP_SECTOR: u64 = 16;
/// First data sector on each member.
pub const DATA_OFFSET: u64 = 24;
/// The SD card's member id (md `dev_number` 0).
pub const SD: MemberId = MemberId(0);
/// The NOR flash member's id (md `dev_number` 1).
pub const NOR: MemberId = MemberId(1);
/// Logical requests the engine tracks at once.
pub const REQUESTS: usize = 8;
/// Bytes of bitmap bits at most (they share one sector with the 256-byte bitmap superblock).
pub const BITMAP_BYTES: usize = 256;
const MAX_DEV: u32 = 2;
const MAX_REQUEST_SECTORS: u32 = 64;
const PUMP_ROUNDS: usize = 100_000;

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
}

/// An SD card (any embedded-sdmmc `BlockDevice`) as a member.
pub struct SdMember<D: BlockDevice>(pub D);

impl<D: BlockDevice> Member for SdMember<D> {
    fn read(&mut self, sector: u64, blocks: &mut [Block]) -> Result<(), MemberFault> {
        let idx = u32::try_from(sector).map_err(|_| MemberFault)?;
        self.0.read(blocks, BlockIdx(idx)).map_err(|_| MemberFault)
    }

    fn write(&mut self, sector: u64, blocks: &[Block]) -> Result<(), MemberFault> {
        let idx = u32::try_from(sector).map_err(|_| MemberFault)?;
        self.0.write(blocks, BlockIdx(idx)).map_err(|_| MemberFault)
    }

    fn sectors(&mut self) -> Result<u64, MemberFault> {
        self.0
            .num_blocks()
            .map(|c| u64::from(c.0))
            .map_err(|_| MemberFault)
    }
}

impl<F: NorFlash, const BLOCKS: usize, const SECTORS: usize> Member
    for NorBlockStore<F, BLOCKS, SECTORS>
{
    fn read(&mut self, sector: u64, blocks: &mut [Block]) -> Result<(), MemberFault> {
        for (i, b) in blocks.iter_mut().enumerate() {
            let n = u32::try_from(sector + i as u64).map_err(|_| MemberFault)?;
            self.read_block(n, &mut b.contents)
                .map_err(|_: NorError<F::Error>| MemberFault)?;
        }
        Ok(())
    }

    fn write(&mut self, sector: u64, blocks: &[Block]) -> Result<(), MemberFault> {
        for (i, b) in blocks.iter().enumerate() {
            let n = u32::try_from(sector + i as u64).map_err(|_| MemberFault)?;
            self.write_block(n, &b.contents)
                .map_err(|_: NorError<F::Error>| MemberFault)?;
        }
        Ok(())
    }

    fn sectors(&mut self) -> Result<u64, MemberFault> {
        Ok(BLOCKS as u64)
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
    /// A member's metadata could not be rendered.
    Metadata(raid1_superblock::Error),
    /// The engine refused the configuration.
    Config(ConfigError),
    /// The engine refused to assemble.
    Assemble(AssembleError),
    /// The engine refused a reconfiguration.
    Reconfig(ReconfigError),
    /// The engine did not finish a request although every I/O was done (a bug).
    Stalled,
}

impl core::fmt::Display for VolumeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "mirrored volume: {self:?}")
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
pub struct MirrorStorage<const BITMAP: usize = BITMAP_BYTES> {
    bits: [u8; BITMAP],
    hot: [u8; BITMAP],
    sync: [Block; 2],
}

impl<const BITMAP: usize> MirrorStorage<BITMAP> {
    /// Zeroed storage: `2 * BITMAP + 1024` bytes.
    pub const fn new() -> Self {
        MirrorStorage {
            bits: [0; BITMAP],
            hot: [0; BITMAP],
            sync: [Block { contents: [0; 512] }, Block { contents: [0; 512] }],
        }
    }
}

impl<const BITMAP: usize> Default for MirrorStorage<BITMAP> {
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
}

/// Static metadata of the volume, the same on both members.
#[derive(Debug, Clone, Copy)]
struct Meta {
    uuid: Uuid,
    name: SetName,
    ctime: MdTime,
    data_sectors: u64,
    chunk_sectors: u64,
    member_sectors: [u64; 2],
}

/// The buffer of the one logical request in progress.
enum ReqBuf<'x> {
    Read(&'x mut [Block]),
    Write(&'x [Block]),
    None,
}

struct Inner<'b, A: Member, B: Member> {
    array: Array<'b, 2, REQUESTS, 1>,
    sd: A,
    nor: B,
    sync: &'b mut [Block; 2],
    meta: Meta,
    now: Instant,
    next_id: u64,
    pos: u64,
    synced_sectors: u64,
    events_seen: u32,
}

/// The mirrored volume over an SD member `A` and a NOR member `B`. Implements embedded-sdmmc's
/// `BlockDevice` (so `VolumeManager` mounts a FAT filesystem on it) and embedded-io
/// `Read`/`Write`/`Seek` for raw byte access.
pub struct Mirror<'b, A: Member, B: Member> {
    inner: RefCell<Inner<'b, A, B>>,
}

fn config(meta: &Meta) -> Config {
    let mut cfg = Config::new(meta.data_sectors);
    cfg.max_request_sectors = MAX_REQUEST_SECTORS;
    cfg.bitmap_chunk_sectors = meta.chunk_sectors;
    cfg.bitmap_page_bytes = BITMAP_BYTES as u32;
    cfg.sync_window_sectors = 1;
    cfg.sync_checkpoint_sectors = 64;
    cfg
}

/// The smallest power-of-two chunk (at least 4 KiB) whose bits fit in `bytes` bytes.
fn chunk_for(data_sectors: u64, bytes: usize) -> u64 {
    let mut chunk = 8u64;
    while data_sectors.div_ceil(chunk) > (bytes.clamp(1, BITMAP_BYTES) * 8) as u64 {
        chunk *= 2;
    }
    chunk
}

/// Write zeros over `sectors` sectors (its own frame keeps the zero block off the hot path).
#[inline(never)]
fn discard(dev: &mut dyn Member, at: u64, sectors: u32) -> bool {
    let zero = [Block::new()];
    (0..u64::from(sectors)).all(|i| dev.write(at + i, &zero).is_ok())
}

fn read_one(m: &mut dyn Member, sector: u64) -> Option<Block> {
    let mut b = [Block::new()];
    m.read(sector, &mut b).ok()?;
    let [b] = b;
    Some(b)
}

/// How a returning member joins: re-added (bitmap-guided recovery when it left in sync)
/// when it carries this volume's metadata, new otherwise. Its own frame keeps the parsed
/// metadata off the stack of the recovery that follows.
#[inline(never)]
fn rejoin_mode(dev: &mut dyn Member, id: MemberId, uuid: Uuid) -> AddMember {
    match probe(dev, id) {
        Some((st, found)) if found.uuid == uuid => match st.own_role() {
            Role::Active(slot) => AddMember::ReAdd {
                slot,
                events: st.events,
                write_mostly: st.write_mostly,
                was_in_sync: st.recovery_offset.is_none(),
            },
            _ => AddMember::New,
        },
        _ => AddMember::New,
    }
}

/// The static fields of the volume as one member's metadata records them.
#[derive(Debug, Clone, Copy)]
struct Found {
    uuid: Uuid,
    name: SetName,
    ctime: MdTime,
    size: u64,
    chunk_sectors: u64,
}

/// What one member's metadata says: its superblock state (raid1-core's bridge) and the static
/// fields. One block buffer, parsed in place: this runs on the recovery path.
#[inline(never)]
fn probe(m: &mut dyn Member, id: MemberId) -> Option<(SuperblockState<2>, Found)> {
    let mut block = [Block::new()];
    m.read(SUPERBLOCK_SECTOR, &mut block).ok()?;
    let sb = Superblock::<2>::parse(&block[0].contents).ok()?;
    if sb.dev_number != u32::from(id.0) || sb.data_offset != DATA_OFFSET {
        return None;
    }
    m.read(BITMAP_SECTOR, &mut block).ok()?;
    let bm = BitmapSuperblock::parse(&block[0].contents).ok()?;
    if bm.uuid != sb.set_uuid {
        return None;
    }
    let state = bridge::read_state(&sb, Some(&bm)).ok()?;
    let found = Found {
        uuid: sb.set_uuid,
        name: sb.set_name,
        ctime: sb.ctime,
        size: sb.size,
        chunk_sectors: u64::from(bm.chunksize / 512),
    };
    Some((state, found))
}

impl<'b, A: Member, B: Member> Mirror<'b, A, B> {
    /// Write fresh metadata of a new volume to both members and copy the SD card's data area to
    /// the NOR member (md's initial resync). Then mount it with [`Mirror::open`].
    pub fn format<const BM: usize>(
        sd: A,
        nor: B,
        storage: &'b mut MirrorStorage<BM>,
        id: VolumeIdentity,
    ) -> Result<(A, B), VolumeError> {
        let (mut sd, mut nor) = (sd, nor);
        let sizes = [
            sd.sectors().map_err(|_| VolumeError::NoVolume)?,
            nor.sectors().map_err(|_| VolumeError::NoVolume)?,
        ];
        let smallest = sizes[0].min(sizes[1]);
        if smallest <= DATA_OFFSET + 8 {
            return Err(VolumeError::NoVolume);
        }
        let data_sectors = smallest - DATA_OFFSET;
        let meta = Meta {
            uuid: Uuid(id.uuid),
            name: SetName::build(None, id.name.as_bytes()),
            ctime: MdTime::from_seconds(id.ctime),
            data_sectors,
            chunk_sectors: chunk_for(data_sectors, BM),
            member_sectors: sizes,
        };
        let MirrorStorage { bits, hot, sync } = storage;
        let array = Array::create(
            config(&meta),
            Some((&mut bits[..], &mut hot[..])),
            2,
            &[SD, NOR],
            false,
        )
        .map_err(VolumeError::Config)?;
        let mut array = array;
        // The flash is write-mostly from the start: reads go to the card.
        array
            .set_write_mostly(NOR, true)
            .map_err(VolumeError::Reconfig)?;
        let mut inner = Inner::new(array, sd, nor, sync, meta);
        inner.pump(&mut ReqBuf::None)?;
        // Mark clean on disk, so that the next mount does not resync again.
        inner.now = inner.now.after(1_000_000_000);
        inner.array.handle_timeout(inner.now);
        inner.array.request_clean(inner.now);
        inner.pump(&mut ReqBuf::None)?;
        Ok((inner.sd, inner.nor))
    }

    /// Mount the volume from the members' metadata (the freshest superblock wins, as md
    /// assembles). A member without this volume's metadata (a new card) is added as a spare
    /// and fully recovered; one that is stale is re-added and recovered from the bitmap. The
    /// NOR member is write-mostly.
    pub fn open<const BM: usize>(
        sd: A,
        nor: B,
        storage: &'b mut MirrorStorage<BM>,
    ) -> Result<Self, VolumeError> {
        let (mut sd, mut nor) = (sd, nor);
        let sd_meta = probe(&mut sd, SD);
        let nor_meta = probe(&mut nor, NOR);
        let mut found = [
            sd_meta.as_ref().map(|m| m.0),
            nor_meta.as_ref().map(|m| m.0),
        ];
        // Members must agree on the array: a foreign superblock counts as none.
        if let (Some(a), Some(b)) = (&sd_meta, &nor_meta) {
            if a.1.uuid != b.1.uuid {
                let older = if a.0.events >= b.0.events { 1 } else { 0 };
                found[older] = None;
            }
        }
        let fresh =
            Array::<2, REQUESTS, 1>::choose_freshest(&found).ok_or(VolumeError::NoVolume)?;
        let (_, fresh_meta) =
            if fresh == 0 { sd_meta } else { nor_meta }.ok_or(VolumeError::NoVolume)?;
        let sizes = [sd.sectors().unwrap_or(0), nor.sectors().unwrap_or(0)];
        let meta = Meta {
            uuid: fresh_meta.uuid,
            name: fresh_meta.name,
            ctime: fresh_meta.ctime,
            data_sectors: fresh_meta.size,
            chunk_sectors: fresh_meta.chunk_sectors,
            member_sectors: sizes,
        };
        let MirrorStorage { bits, hot, sync } = storage;
        // The bitmap is the OR of every member's bits: a member that missed page writes must
        // not hide a dirty chunk.
        let need = Array::<2, REQUESTS, 1>::bitmap_bytes(&config(&meta));
        if need > BM.min(BITMAP_BYTES) || meta.chunk_sectors == 0 {
            return Err(VolumeError::NoVolume);
        }
        bits.fill(0);
        for (i, found_here) in found.iter().enumerate() {
            if found_here.is_none() {
                continue;
            }
            let block = if i == 0 {
                read_one(&mut sd, BITMAP_SECTOR)
            } else {
                read_one(&mut nor, BITMAP_SECTOR)
            };
            if let Some(block) = block {
                for (b, &m) in bits[..need]
                    .iter_mut()
                    .zip(&block.contents[256..256 + need])
                {
                    *b |= m;
                }
            }
        }
        let array = Array::assemble(
            config(&meta),
            Some((&mut bits[..], &mut hot[..])),
            &found,
            StartPolicy::AllowDegraded,
        )
        .map_err(VolumeError::Assemble)?;
        let mut inner = Inner::new(array, sd, nor, sync, meta);
        inner.pump(&mut ReqBuf::None)?;
        // A member the assembly left out (new card, foreign or no metadata): add it.
        for id in [SD, NOR] {
            if inner
                .array
                .member(id)
                .is_some_and(|m| m.state == MemberState::Absent)
                && inner.present(id)
            {
                inner.array.freeze().map_err(VolumeError::Reconfig)?;
                inner.pump(&mut ReqBuf::None)?;
                let added = inner
                    .array
                    .add_member(id, AddMember::New)
                    .map_err(VolumeError::Reconfig);
                inner.array.unfreeze().map_err(VolumeError::Reconfig)?;
                added?;
                inner.pump(&mut ReqBuf::None)?;
            }
        }
        inner.keep_nor_write_mostly()?;
        Ok(Mirror {
            inner: RefCell::new(inner),
        })
    }

    /// Health of the volume.
    pub fn health(&self) -> Health {
        let inner = self.inner.borrow();
        let status = inner.array.status();
        let state = |id| {
            inner
                .array
                .member(id)
                .map_or(MemberState::Absent, |m| m.state)
        };
        let chunks = inner.meta.data_sectors.div_ceil(inner.meta.chunk_sectors);
        let dirty = (0..chunks).filter(|&c| inner.array.bitmap_bit(c)).count() as u32;
        Health {
            degraded: status.in_sync < status.raid_disks,
            sd: state(SD),
            nor: state(NOR),
            events: status.events,
            dirty_chunks: dirty,
            synced_sectors: inner.synced_sectors,
        }
    }

    /// Advance the clock (nanoseconds, monotonic) and run the timers that are due: marking the
    /// array clean after idle, clearing bitmap bits.
    pub fn tick(&self, now_ns: u64) -> Result<(), VolumeError> {
        let mut inner = self.inner.borrow_mut();
        if now_ns > inner.now.0 {
            inner.now = Instant(now_ns);
        }
        let now = inner.now;
        inner.array.handle_timeout(now);
        inner.pump(&mut ReqBuf::None)
    }

    /// The SD card was pulled out (card-detect): fail it now instead of at the next error.
    pub fn sd_removed(&self) -> Result<(), VolumeError> {
        let mut inner = self.inner.borrow_mut();
        let now = inner.now;
        match inner.array.fail_member(now, SD) {
            Ok(()) | Err(ReconfigError::WrongState(_)) => {}
            Err(e) => return Err(VolumeError::Reconfig(e)),
        }
        inner.pump(&mut ReqBuf::None)
    }

    /// A card was inserted: re-add it (bitmap-guided recovery of the dirty chunks when it is
    /// this volume's card and not too stale; full recovery for a new card). Returns when the
    /// recovery is done.
    pub fn sd_inserted(&self) -> Result<(), VolumeError> {
        self.rejoin(SD)
    }

    /// Bring a failed member back (the SD card after reinsertion, or the NOR flash after a
    /// transient failure): re-added and recovered from the bitmap when it carries this
    /// volume's metadata and left in sync, otherwise added as new and fully recovered. A member
    /// already in sync or recovering is left alone. Returns when the recovery is done.
    pub fn rejoin(&self, id: MemberId) -> Result<(), VolumeError> {
        let mut inner = self.inner.borrow_mut();
        let state = inner
            .array
            .member(id)
            .map_or(MemberState::Absent, |m| m.state);
        if matches!(state, MemberState::InSync | MemberState::Recovering { .. }) {
            return Ok(());
        }
        let uuid = inner.meta.uuid;
        let how = if id == SD {
            rejoin_mode(&mut inner.sd, id, uuid)
        } else {
            rejoin_mode(&mut inner.nor, id, uuid)
        };
        // Reconfiguration needs a quiesced array: freeze, drain, swap, unfreeze.
        inner.array.freeze().map_err(VolumeError::Reconfig)?;
        inner.pump(&mut ReqBuf::None)?;
        let swapped = inner.swap_in(id, state, how);
        inner.array.unfreeze().map_err(VolumeError::Reconfig)?;
        swapped?;
        inner.pump(&mut ReqBuf::None)
    }

    /// Give the members back.
    pub fn into_members(self) -> (A, B) {
        let inner = self.inner.into_inner();
        (inner.sd, inner.nor)
    }

    /// Run `f` on the members (fault injection in tests and examples).
    pub fn with_members<R>(&self, f: impl FnOnce(&mut A, &mut B) -> R) -> R {
        let mut inner = self.inner.borrow_mut();
        let Inner { sd, nor, .. } = &mut *inner;
        f(sd, nor)
    }

    /// Volume size in sectors.
    pub fn sectors(&self) -> u64 {
        self.inner.borrow().meta.data_sectors
    }

    /// Read sectors starting at `sector`.
    pub fn read_sectors(&self, sector: u64, blocks: &mut [Block]) -> Result<(), VolumeError> {
        let mut inner = self.inner.borrow_mut();
        let mut done = 0;
        while done < blocks.len() {
            let n = (blocks.len() - done).min(MAX_REQUEST_SECTORS as usize);
            inner.request(
                RequestOp::Read,
                sector + done as u64,
                ReqBuf::Read(&mut blocks[done..done + n]),
            )?;
            done += n;
        }
        Ok(())
    }

    /// Write sectors starting at `sector`; acknowledged (durable on every in-sync member) when
    /// this returns `Ok`.
    pub fn write_sectors(&self, sector: u64, blocks: &[Block]) -> Result<(), VolumeError> {
        let mut inner = self.inner.borrow_mut();
        let mut done = 0;
        while done < blocks.len() {
            let n = (blocks.len() - done).min(MAX_REQUEST_SECTORS as usize);
            inner.request(
                RequestOp::Write,
                sector + done as u64,
                ReqBuf::Write(&blocks[done..done + n]),
            )?;
            done += n;
        }
        Ok(())
    }
}

impl<'b, A: Member, B: Member> Inner<'b, A, B> {
    /// The running state of a volume whose engine was just created or assembled: the clock
    /// and request ids start over, nothing synced or seen yet.
    fn new(
        array: Array<'b, 2, REQUESTS, 1>,
        sd: A,
        nor: B,
        sync: &'b mut [Block; 2],
        meta: Meta,
    ) -> Self {
        Inner {
            array,
            sd,
            nor,
            sync,
            meta,
            now: Instant(1),
            next_id: 1,
            pos: 0,
            synced_sectors: 0,
            events_seen: 0,
        }
    }
}

impl<A: Member, B: Member> Inner<'_, A, B> {
    fn swap_in(
        &mut self,
        id: MemberId,
        state: MemberState,
        how: AddMember,
    ) -> Result<(), VolumeError> {
        if state != MemberState::Absent {
            self.array
                .remove_member(id)
                .map_err(VolumeError::Reconfig)?;
            self.pump(&mut ReqBuf::None)?;
        }
        self.array
            .add_member(id, how)
            .map_err(VolumeError::Reconfig)?;
        self.pump(&mut ReqBuf::None)?;
        self.keep_nor_write_mostly()
    }

    /// The NOR member is write-mostly whenever it is present (a member added as new starts
    /// without the flag).
    fn keep_nor_write_mostly(&mut self) -> Result<(), VolumeError> {
        let present = self
            .array
            .member(NOR)
            .is_some_and(|m| m.state != MemberState::Absent);
        if present && !self.array.member(NOR).is_some_and(|m| m.write_mostly) {
            self.array
                .set_write_mostly(NOR, true)
                .map_err(VolumeError::Reconfig)?;
            self.pump(&mut ReqBuf::None)?;
        }
        Ok(())
    }

    fn present(&mut self, id: MemberId) -> bool {
        if id == SD {
            self.sd.sectors().is_ok()
        } else {
            self.nor.sectors().is_ok()
        }
    }

    fn request(
        &mut self,
        op: RequestOp,
        sector: u64,
        mut buf: ReqBuf<'_>,
    ) -> Result<(), VolumeError> {
        let sectors = match &buf {
            ReqBuf::Read(b) => b.len(),
            ReqBuf::Write(b) => b.len(),
            ReqBuf::None => 0,
        } as u32;
        let id = self.next_id;
        self.next_id += 1;
        self.now = self.now.after(1);
        let req = Request {
            id,
            op,
            sector,
            sectors,
            buffer: 0,
            fua: false,
        };
        match self.array.submit(self.now, req) {
            Ok(()) => {}
            Err(SubmitError::OutOfRange(end)) => return Err(VolumeError::OutOfRange { end }),
            Err(_) => return Err(VolumeError::Io),
        }
        for _ in 0..PUMP_ROUNDS {
            self.pump(&mut buf)?;
            while let Some(done) = self.array.poll_completion() {
                if done.id == id {
                    return match done.outcome {
                        Outcome::Ok => Ok(()),
                        Outcome::IoError => Err(VolumeError::Io),
                    };
                }
            }
            // Nothing left to issue: let time pass so that waiting timers fire.
            self.now = self.now.after(1_000_000);
            let now = self.now;
            self.array.handle_timeout(now);
        }
        Err(VolumeError::Stalled)
    }

    /// Issue every command the engine has, until it has none.
    fn pump(&mut self, buf: &mut ReqBuf<'_>) -> Result<(), VolumeError> {
        for _ in 0..PUMP_ROUNDS {
            let Some(cmd) = self.array.poll_io() else {
                self.drain_events();
                return Ok(());
            };
            match cmd {
                IoCmd::Member(io) => {
                    let ok =
                        self.member_io(io.member, io.op, io.sector, io.sectors, io.buffer, buf);
                    if matches!(io.buffer, Buffer::Sync { .. }) && io.op == MemberOp::Write && ok {
                        self.synced_sectors += u64::from(io.sectors);
                    }
                    let res = if ok { IoResult::Ok } else { IoResult::Error };
                    let _ = self.array.complete(self.now, io.tag, res);
                }
                IoCmd::Superblock { tag, member, state } => {
                    // Two separate frames, so that their block buffers never nest on the stack.
                    let ok = self.write_superblock(member, &state).is_ok()
                        && self.write_bitmap(member, &state).is_ok();
                    let res = if ok { IoResult::Ok } else { IoResult::Error };
                    let _ = self.array.complete(self.now, tag, res);
                }
                IoCmd::BitmapPage { tag, member, .. } => {
                    // The header shares the sector with the bits: it is rewritten with the
                    // state the engine would write to this member now.
                    let ok = match self.array.superblock_for(member) {
                        Some(st) => self.write_bitmap(member, &st).is_ok(),
                        None => false,
                    };
                    let res = if ok { IoResult::Ok } else { IoResult::Error };
                    let _ = self.array.complete(self.now, tag, res);
                }
                IoCmd::Compare { tag, a, b, sectors } => {
                    let n = (sectors as usize).min(1);
                    let equal = match (a, b) {
                        (Buffer::Sync { member: ma, .. }, Buffer::Sync { member: mb, .. }) => {
                            let ia = usize::from(ma.0).min(1);
                            let ib = usize::from(mb.0).min(1);
                            self.sync[ia].contents[..n * 512] == self.sync[ib].contents[..n * 512]
                        }
                        _ => false,
                    };
                    let _ = self.array.complete_compare(self.now, tag, equal);
                }
            }
        }
        Err(VolumeError::Stalled)
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.array.poll_event() {
            self.events_seen = self.events_seen.wrapping_add(1);
            match event {
                Event::MemberFailed(m) => crate::log::log_warn!("mirror: member {=u8} failed", m.0),
                Event::Degraded {
                    in_sync,
                    raid_disks,
                } => {
                    crate::log::log_warn!(
                        "mirror: degraded, {=u16} of {=u16} in sync",
                        in_sync,
                        raid_disks
                    )
                }
                Event::SpareActive(m) => {
                    crate::log::log_info!("mirror: member {=u8} in sync again", m.0)
                }
                Event::SyncFinished { .. } => crate::log::log_info!("mirror: sync finished"),
                _ => {}
            }
            let _ = event;
        }
    }

    fn member_io(
        &mut self,
        member: MemberId,
        op: MemberOp,
        sector: u64,
        sectors: u32,
        buffer: Buffer,
        req: &mut ReqBuf<'_>,
    ) -> bool {
        let at = DATA_OFFSET + sector;
        let n = sectors as usize;
        let Inner { sd, nor, sync, .. } = self;
        let dev: &mut dyn Member = if member == SD { sd } else { nor };
        match op {
            MemberOp::Flush => true,
            MemberOp::Discard => discard(dev, at, sectors),
            MemberOp::Read => {
                let dst: Option<&mut [Block]> = match (buffer, req) {
                    (Buffer::Request { offset, .. }, ReqBuf::Read(b)) => {
                        b.get_mut(offset as usize..offset as usize + n)
                    }
                    (Buffer::Sync { member: m, .. }, _) => {
                        sync.get_mut(usize::from(m.0)..usize::from(m.0) + n)
                    }
                    _ => None,
                };
                dst.is_some_and(|d| dev.read(at, d).is_ok())
            }
            MemberOp::Write => {
                let src: Option<&[Block]> = match (buffer, req) {
                    (Buffer::Request { offset, .. }, ReqBuf::Write(b)) => {
                        b.get(offset as usize..offset as usize + n)
                    }
                    (Buffer::Request { offset, .. }, ReqBuf::Read(b)) => {
                        b.get(offset as usize..offset as usize + n)
                    }
                    (Buffer::Sync { member: m, .. }, _) => {
                        sync.get(usize::from(m.0)..usize::from(m.0) + n)
                    }
                    _ => None,
                };
                src.is_some_and(|s| dev.write(at, s).is_ok())
            }
        }
    }

    fn device(&mut self, member: MemberId) -> &mut dyn Member {
        if member == SD {
            &mut self.sd
        } else {
            &mut self.nor
        }
    }

    /// Render and write the md v1.2 superblock (the bitmap sector is written separately): the
    /// volume's static fields, then the engine's state through raid1-core's bridge.
    #[inline(never)]
    fn write_superblock(
        &mut self,
        member: MemberId,
        st: &SuperblockState<2>,
    ) -> Result<(), MemberFault> {
        let meta = self.meta;
        let mut sb = Superblock::<2>::new_raid1(
            meta.uuid,
            meta.name,
            meta.ctime,
            u32::from(st.raid_disks),
            meta.data_sectors,
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
        let mut block = [Block::new()];
        sb.serialize(&mut block[0].contents)
            .map_err(|_| MemberFault)?;
        self.device(member).write(SUPERBLOCK_SECTOR, &block)
    }

    /// Write the bitmap sector: bitmap superblock (the static fields, then `st`'s events and
    /// events_cleared through raid1-core's bridge) and all the bits.
    #[inline(never)]
    fn write_bitmap(
        &mut self,
        member: MemberId,
        st: &SuperblockState<2>,
    ) -> Result<(), MemberFault> {
        let meta = self.meta;
        let mut bm = BitmapSuperblock::new(meta.uuid, meta.data_sectors);
        bm.chunksize = (meta.chunk_sectors * 512) as u32;
        bm.state = BitmapState::empty();
        bridge::apply_bitmap_state(st, &mut bm);
        let mut block = [Block::new()];
        bm.serialize(&mut block[0].contents)
            .map_err(|_| MemberFault)?;
        let bits = self.array.bitmap_page(0);
        let n = bits.len().min(BITMAP_BYTES);
        block[0].contents[256..256 + n].copy_from_slice(&bits[..n]);
        self.device(member).write(BITMAP_SECTOR, &block)
    }
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
