//! Plain data types shared by the engine and its frontends.

/// A sector number, in 512-byte units.
#[cfg(not(feature = "sector32"))]
pub type Sector = u64;
/// A sector number, in 512-byte units (32 bits: arrays up to 2 TiB).
#[cfg(feature = "sector32")]
pub type Sector = u32;

/// "No limit" / "fully consistent" marker for `resync_offset` and `recovery_offset` (md's MaxSector).
pub const MAX_SECTOR: Sector = Sector::MAX;

/// Most members an [`crate::Array`] may be instantiated with (member sets are `u32` masks).
pub const MAX_MEMBERS: usize = 32;

/// Number of barrier buckets. Barrier units (`1 << Config::barrier_unit_shift` sectors) are hashed
/// onto them by `unit % BARRIER_BUCKETS`, as md hashes its 64 MiB units onto 1024 buckets.
pub const BARRIER_BUCKETS: usize = 64;

/// Capacity of the monitor event queue; older events are dropped (and counted) when it overflows.
pub const EVENT_QUEUE: usize = 16;

/// Most bitmap pages the engine tracks (dirty pages are a `u64` mask).
pub const MAX_BITMAP_PAGES: usize = 64;

/// Index of a member device in the frontend's device table (`0..MEMBERS`). It is also the md
/// `dev_number` the frontend writes into that device's superblock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId(pub u8);

/// Role of a member in the array, as in md's `dev_roles[]` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Active in slot `n` (`0..raid_disks`), in sync or being recovered.
    Active(u16),
    /// A spare (0xFFFF on disk).
    Spare,
    /// Failed or removed (0xFFFE on disk).
    Faulty,
}

impl Role {
    /// The md on-disk encoding of this role.
    pub const fn to_raw(self) -> u16 {
        match self {
            Role::Active(n) => n,
            Role::Spare => 0xFFFF,
            Role::Faulty => 0xFFFE,
        }
    }

    /// Decodes an md `dev_roles[]` entry (0xFFFD "journal" and other reserved values are `Faulty`).
    pub const fn from_raw(raw: u16) -> Role {
        match raw {
            0xFFFF => Role::Spare,
            0xFF00..=0xFFFE => Role::Faulty,
            n => Role::Active(n),
        }
    }
}

/// Monotonic time in nanoseconds, supplied by the frontend. The engine never reads a clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Instant(pub u64);

impl Instant {
    /// `self + ns`, saturating. Never inlined: the 64-bit saturating sum is larger than a call
    /// on a 32-bit microcontroller, and it is used in many places.
    #[inline(never)]
    pub const fn after(self, ns: u64) -> Instant {
        Instant(self.0.saturating_add(ns))
    }
}

/// Identifies one command the engine handed out with [`crate::Array::poll_io`]; the frontend gives
/// it back with the result. Opaque; stale or unknown tags are rejected with a typed error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tag(pub u64);

/// The operation of a member I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberOp {
    /// Read `sectors` into the buffer.
    Read,
    /// Write `sectors` from the buffer.
    Write,
    /// Make every write this member completed before the flush was issued durable.
    Flush,
    /// Discard (trim) the range; the frontend must make it read back as zeroes.
    Discard,
}

/// A data buffer named by the engine. The engine never touches data: it only says which buffer a
/// member I/O reads into or writes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buffer {
    /// The buffer of a logical request (the handle the frontend passed to `submit`), starting
    /// `offset` sectors into it.
    Request {
        /// The frontend's handle.
        handle: u32,
        /// Offset into that buffer, in sectors.
        offset: u32,
    },
    /// A sync buffer lent by the frontend: one per (sync window, member), each at least
    /// `Config::sync_window_sectors` long.
    Sync {
        /// Sync window index, `0..SYNC`.
        window: u16,
        /// The member whose data this buffer holds.
        member: MemberId,
    },
    /// No data (flush).
    None,
}

/// One member I/O the frontend must issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberIo {
    /// Give it back to [`crate::Array::complete`].
    pub tag: Tag,
    /// Target device.
    pub member: MemberId,
    /// What to do.
    pub op: MemberOp,
    /// First sector, **relative to the member's data area** (the frontend adds `data_offset`).
    pub sector: Sector,
    /// Length in sectors (0 for a flush).
    pub sectors: u32,
    /// Data buffer.
    pub buffer: Buffer,
    /// Force unit access: the write is durable when it completes.
    pub fua: bool,
}

/// What the engine wants written to one member's superblock. The frontend renders it into the
/// md v1.x layout (raid1-superblock) on top of the static fields it already holds for the array
/// (uuid, name, data offset, size, ...). Always written durably (FUA or write + flush).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SuperblockState<const M: usize> {
    /// Event counter.
    pub events: u64,
    /// `raid_disks`.
    pub raid_disks: u16,
    /// `size`: sectors of each member's data area the array uses (md's `dev_sectors`, mdadm's
    /// "Used Dev Size"; for RAID1 also the array's size). It changes with
    /// [`crate::Array::resize`], and the bitmap header's `sync_size` with it.
    pub size: Sector,
    /// `resync_offset`: [`MAX_SECTOR`] when clean, 0 while the array is active (dirty), the resync
    /// checkpoint after a clean stop in the middle of a resync.
    pub resync_offset: Sector,
    /// `dev_roles[]`, indexed by [`MemberId`].
    pub roles: [Role; M],
    /// The member this superblock belongs to (`dev_number`).
    pub this_member: MemberId,
    /// `recovery_offset` (feature RECOVERY_OFFSET) while this member is being recovered.
    pub recovery_offset: Option<Sector>,
    /// Feature RECOVERY_BITMAP: the recovery of this member is bitmap-guided (re-add).
    pub recovery_bitmap: bool,
    /// The bitmap's `events_cleared` (also goes into the bitmap superblock).
    pub events_cleared: u64,
    /// Whether the array has a write-intent bitmap (feature bit 0x1).
    pub bitmap: bool,
    /// WriteMostly flag of this member.
    pub write_mostly: bool,
    /// FailFast flag of this member (devflag 0x2).
    pub failfast: bool,
    /// Feature REPLACEMENT: this member is being rebuilt to replace the member that holds the
    /// same slot (it also has a `recovery_offset`).
    pub replacement: bool,
    /// The bitmap header's `write_behind` (md's write-behind limit; 0 for none).
    pub write_behind: u16,
}

impl<const M: usize> SuperblockState<M> {
    /// A superblock with every role `Faulty`, for building test fixtures.
    pub const fn empty(this_member: MemberId) -> Self {
        SuperblockState {
            events: 0,
            raid_disks: 0,
            size: 0,
            resync_offset: MAX_SECTOR,
            roles: [Role::Faulty; M],
            this_member,
            recovery_offset: None,
            recovery_bitmap: false,
            events_cleared: 0,
            bitmap: false,
            write_mostly: false,
            failfast: false,
            replacement: false,
            write_behind: 0,
        }
    }

    /// This member's own role according to its own superblock.
    pub fn own_role(&self) -> Role {
        self.roles
            .get(usize::from(self.this_member.0))
            .copied()
            .unwrap_or(Role::Faulty)
    }

    /// Whether this superblock says its member is in sync: an active slot and no recovery
    /// offset (what an assembly from it would place in sync, the reference agreeing).
    pub fn says_in_sync(&self) -> bool {
        matches!(self.own_role(), Role::Active(_)) && self.recovery_offset.is_none()
    }
}

/// A command for the frontend, from [`crate::Array::poll_io`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoCmd<const M: usize> {
    /// Data I/O on a member.
    Member(MemberIo),
    /// Write this superblock to `member` durably, together with its bad-block log when the
    /// member has one: the list [`crate::Array::bad_blocks`] gives for it now (copied now, as md's
    /// md_update_sb fills the log page), the BAD_BLOCKS feature set iff that list is non-empty.
    /// Both land before the command is completed.
    Superblock {
        /// Give it back to [`crate::Array::complete`].
        tag: Tag,
        /// Target device.
        member: MemberId,
        /// Content.
        state: SuperblockState<M>,
    },
    /// Write bitmap page `page` (bytes from [`crate::Array::bitmap_page`], copied now) to
    /// `member` durably, at `bitmap offset + 256 + page * bitmap_page_bytes`.
    BitmapPage {
        /// Give it back to [`crate::Array::complete`].
        tag: Tag,
        /// Target device.
        member: MemberId,
        /// Page index.
        page: u32,
    },
    /// Compare the first `sectors` sectors of two sync buffers (check / repair) and answer with
    /// [`crate::Array::complete_compare`].
    Compare {
        /// Give it back to [`crate::Array::complete_compare`].
        tag: Tag,
        /// Reference buffer.
        a: Buffer,
        /// Other buffer.
        b: Buffer,
        /// Length to compare.
        sectors: u32,
    },
}

/// Result of a member I/O, reported by the frontend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoResult {
    /// Done.
    Ok,
    /// The device reported an error.
    Error,
}

/// Logical request kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestOp {
    /// Read into the buffer.
    Read,
    /// Write from the buffer.
    Write,
    /// Flush: every write completed before it was submitted is durable when it completes.
    Flush,
    /// Discard: the range reads back as zeroes afterwards.
    Discard,
}

/// A logical request from the frontend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// The frontend's id, returned in the [`Completion`].
    pub id: u64,
    /// Kind.
    pub op: RequestOp,
    /// First array sector (ignored for flush).
    pub sector: Sector,
    /// Length in sectors (0 for flush).
    pub sectors: u32,
    /// The frontend's buffer handle (ignored for flush and discard).
    pub buffer: u32,
    /// Write with FUA semantics: durable on every member when acknowledged.
    pub fua: bool,
}

/// Outcome of a logical request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Success.
    Ok,
    /// I/O error: no in-sync member could serve it.
    IoError,
    /// A write or discard that waited (for an unfreeze or its barrier) while the array was
    /// made read-only: it was never started (md answers EROFS).
    ReadOnly,
}

/// A finished logical request, from [`crate::Array::poll_completion`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The id given at submit.
    pub id: u64,
    /// Result.
    pub outcome: Outcome,
}

/// The kind of background synchronisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncAction {
    /// Copy the first in-sync mirror to the others (after an unclean shutdown).
    Resync,
    /// Rebuild recovering members from in-sync ones.
    Recovery,
    /// Compare the mirrors, count mismatches.
    Check,
    /// Compare the mirrors, rewrite the differing ones from the first.
    Repair,
}

/// Monitor events, from [`crate::Array::poll_event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A member was marked faulty.
    MemberFailed(MemberId),
    /// The array runs with fewer in-sync members than `raid_disks`.
    Degraded {
        /// In-sync members.
        in_sync: u16,
        /// Slots.
        raid_disks: u16,
    },
    /// An I/O error hit the last in-sync member: it stays, the error goes to the caller.
    LastMemberError(MemberId),
    /// A write failed on a member with a bad-block log: the range was recorded in its log
    /// instead of failing it (md's narrow_write_error). The write is acknowledged only once the
    /// superblock round that writes the log is on disk.
    BadBlocksRecorded {
        /// The member.
        member: MemberId,
        /// First sector recorded (relative to the data area).
        sector: Sector,
        /// Sectors recorded.
        sectors: u32,
    },
    /// A recovered member became in sync.
    SpareActive(MemberId),
    /// A replacement became in sync and took over the slot of the member it replaced, which
    /// is now faulty (md's raid1_spare_active with a replacement).
    Replaced {
        /// The member that left (faulty now, to be removed).
        old: MemberId,
        /// The replacement, now in sync in its slot.
        new: MemberId,
    },
    /// A sync action started.
    SyncStarted(SyncAction),
    /// Progress checkpoint.
    SyncProgress {
        /// Action.
        action: SyncAction,
        /// Sectors done (position).
        done: Sector,
        /// End.
        total: Sector,
    },
    /// A sync action ran to its end.
    SyncFinished {
        /// Action.
        action: SyncAction,
        /// `mismatch_cnt` (sectors) for check / repair.
        mismatches: u64,
    },
    /// A sync action stopped early (member failure, reconfiguration, no source left).
    SyncInterrupted(SyncAction),
    /// The array became quiesced (frozen and nothing in flight).
    Quiesced,
    /// The array is marked clean on disk.
    MarkedClean,
}

/// Assembly policy for an array that is missing members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartPolicy {
    /// Start only if every member the freshest superblock lists as working is present (mdadm's
    /// default; md shows "active, FAILED, Not Started" otherwise).
    RequireAll,
    /// Start degraded as long as one in-sync member is present (`mdadm --run`).
    AllowDegraded,
}

/// Static configuration of an array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Size of every member's data area, in sectors (md `size`).
    pub data_sectors: Sector,
    /// Largest logical request accepted, in sectors. Must not exceed one barrier unit.
    pub max_request_sectors: u32,
    /// Barrier unit is `1 << barrier_unit_shift` sectors (md: 17 = 64 MiB).
    pub barrier_unit_shift: u8,
    /// Bitmap chunk in sectors (power of two), or 0 for no bitmap.
    pub bitmap_chunk_sectors: Sector,
    /// Bytes per bitmap page as written to disk (4096 on Linux).
    pub bitmap_page_bytes: u32,
    /// Delay after the last write before the array is marked clean (md: 200 ms).
    pub safe_mode_delay_ns: u64,
    /// Bitmap daemon period (md: 5 s); not 0. [`crate::Array::set_bitmap_daemon`] changes it
    /// on a running array.
    pub bitmap_daemon_ns: u64,
    /// Sectors per sync request (md: 128); the frontend's sync buffers must hold this much.
    pub sync_window_sectors: u32,
    /// Write a sync checkpoint at least every this many sectors.
    pub sync_checkpoint_sectors: Sector,
    /// Start read-only (md's `--readonly` / `start_ro`): no write or discard is accepted and
    /// nothing is written to any member (no superblock, bitmap or sync) until
    /// `Array::set_read_only(false)`. Refused ([`crate::ConfigError::ReadOnly`]) without the
    /// `read-only` feature.
    pub read_only: bool,
    /// md's write-behind (the bitmap's `write_behind`, mdadm `--write-behind=N`): at most this
    /// many writes at once may be acknowledged before their WriteMostly members have them; 0
    /// for none. Only with a bitmap (its bits cover what a WriteMostly member may lack). A
    /// member I/O's buffer stays in use until that I/O completes, even after its request was
    /// acknowledged.
    pub write_behind: u16,
}

impl Config {
    /// md-like defaults for an array of `data_sectors`.
    pub const fn new(data_sectors: Sector) -> Config {
        Config {
            data_sectors,
            max_request_sectors: 2048,
            barrier_unit_shift: 17,
            bitmap_chunk_sectors: 0,
            bitmap_page_bytes: 4096,
            safe_mode_delay_ns: 200_000_000,
            bitmap_daemon_ns: 5_000_000_000,
            sync_window_sectors: 128,
            sync_checkpoint_sectors: 1 << 20,
            read_only: false,
            write_behind: 0,
        }
    }
}

/// State of one member as the engine sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    /// No device in this position.
    Absent,
    /// A spare without a slot.
    Spare,
    /// Active and in sync.
    InSync,
    /// Active in a slot, rebuilt up to `recovery_offset`.
    Recovering {
        /// Sectors below this are valid.
        recovery_offset: Sector,
        /// Only bitmap-dirty chunks are copied (re-add).
        bitmap: bool,
    },
    /// Failed; kept until removed.
    Faulty,
}

/// Public view of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// State.
    pub state: MemberState,
    /// Role.
    pub role: Role,
    /// WriteMostly: read only as a last resort.
    pub write_mostly: bool,
    /// FailFast: an I/O error fails it at once (no bad-block record, no read fix) unless it is
    /// the last in-sync member.
    pub failfast: bool,
    /// Member I/O in flight (issued by `poll_io`, not yet completed).
    pub in_flight: u32,
    /// Read errors corrected on this member.
    pub corrected_read_errors: u32,
    /// md's Replacement: it is being rebuilt to take over from the in-sync member that holds
    /// the same slot (feature REPLACEMENT in its superblock).
    pub replacement: bool,
    /// md's WantReplacement: asked for by `Array::replace` or set by a write error recorded in
    /// its bad-block log; a spare is rebuilt as its replacement when one is there. Never set
    /// without the `replacement` feature.
    pub want_replacement: bool,
}
