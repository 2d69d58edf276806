//! Typed errors. Each names the field and the value that are wrong.

use crate::badblocks::BadBlockError;
use crate::types::{MemberId, Sector};

/// Why a configuration or a member list was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `MEMBERS` is 0 or above [`crate::MAX_MEMBERS`].
    Members(usize),
    /// `INFLIGHT` (request slots) is 0 or above 256.
    Inflight(usize),
    /// `SYNC` is 0 or above 65535.
    SyncWindows(usize),
    /// `data_sectors` is 0 or above [`crate::MAX_ARRAY_SECTORS`].
    DataSectors(Sector),
    /// `barrier_unit_shift` is above 40.
    BarrierUnitShift(u8),
    /// `max_request_sectors` is 0 or larger than a barrier unit.
    MaxRequestSectors(u32),
    /// `sync_window_sectors` is 0 or larger than a barrier unit.
    SyncWindowSectors(u32),
    /// `bitmap_chunk_sectors` is not a power of two.
    BitmapChunkSectors(Sector),
    /// `bitmap_page_bytes` is 0.
    BitmapPageBytes(u32),
    /// `bitmap_daemon_ns` is 0 (md refuses a `daemon_sleep` of 0: the daemon would run
    /// without pause).
    BitmapDaemon,
    /// The bitmap storage is smaller than the bitmap (bytes needed).
    BitmapStorageTooSmall(usize),
    /// The bitmap needs more than [`crate::MAX_BITMAP_PAGES`] pages.
    BitmapTooManyPages(usize),
    /// A bitmap chunk size is configured but no storage was given, or the other way round.
    BitmapStorageMismatch,
    /// The member list is empty, too long, or names a member twice or out of range.
    MemberList(usize),
    /// `raid_disks` is 0, above `MEMBERS` or above the number of members given.
    RaidDisks(u16),
    /// `read_only` is set, and raid1-core was built without its `read-only` feature.
    ReadOnly,
}

/// Why [`crate::Array::assemble`] refused to start the array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssembleError {
    /// Bad configuration.
    Config(ConfigError),
    /// No candidate carries an active role.
    NoActiveMember,
    /// Not one in-sync member: the data is gone.
    NoInSyncMember,
    /// Members are missing and the policy is [`crate::StartPolicy::RequireAll`] ("active,
    /// FAILED, Not Started").
    NotStarted {
        /// In-sync members found.
        found: u16,
        /// Working members the freshest superblock lists.
        expected: u16,
    },
    /// The freshest superblock's `raid_disks` is 0 or above `MEMBERS`.
    RaidDisks(u16),
    /// A member's bad-block list was refused.
    BadBlocks(BadBlockError),
}

/// Why [`crate::bridge`] refused to convert between a superblock and the engine's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BridgeError {
    /// The superblock's `dev_number` is not a member position of this build (`0..members`).
    DevNumber {
        /// `dev_number` as on disk.
        dev_number: u32,
        /// Member positions of this build (`M`).
        members: usize,
    },
    /// The superblock's `raid_disks` is above 65535.
    RaidDisks(u32),
    /// The array's size is larger than the data area the member's superblock records.
    Size {
        /// The array's `size` (sectors).
        size: u64,
        /// The member's `data_size` (sectors).
        data_size: u64,
    },
    /// The superblock's `size` (sectors) is beyond what this build's sector numbers hold
    /// (feature `sector32`: 2^32 sectors, 2 TiB).
    Sectors(u64),
    /// A member holding a slot sits beyond the role entries the superblock can store.
    RoleCapacity {
        /// The member.
        member: MemberId,
        /// Role entries the superblock stores.
        capacity: usize,
    },
}

/// Why [`crate::Array::submit`] refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// Every in-flight slot is taken: retry after a completion.
    Busy,
    /// `sector + sectors` is beyond the data area (the value is the end sector).
    OutOfRange(Sector),
    /// `sectors` is 0 (for read/write/discard) or above `max_request_sectors`.
    BadLength(u32),
    /// The array has no in-sync member left.
    Broken,
    /// A write or discard while the array is read-only (`Array::set_read_only`, feature
    /// `read-only`).
    ReadOnly,
}

/// Why a completion was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagError {
    /// No command with this tag is in flight.
    Unknown(u64),
}

/// Why a reconfiguration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconfigError {
    /// The array must be frozen and drained first ([`crate::Array::is_quiesced`]).
    NotQuiesced,
    /// The member id is out of range.
    NoSuchMember(MemberId),
    /// `add`: the position is occupied.
    Occupied(MemberId),
    /// `remove`: the member is in sync (fail it first) or has I/O in flight.
    MemberBusy(MemberId),
    /// `fail`: it is the last in-sync member (md returns EBUSY).
    LastInSync(MemberId),
    /// `fail`: the other in-sync members may lack acknowledged writes (they were WriteMostly
    /// with write-behind at a crash, and the resync that repairs them has not ended): this is
    /// the last member that holds them all.
    LastUpToDate(MemberId),
    /// `remove_bitmap`: the member was WriteMostly with writes behind at a crash and may lack
    /// acknowledged writes until the resync ends; only the bitmap's header (its write-behind
    /// limit) tells an assembly after another crash so (md refuses to drop a bitmap while a
    /// resync runs).
    Lagging(MemberId),
    /// `fail`/`remove`: nothing to do in that state.
    WrongState(MemberId),
    /// `set_raid_disks`: 0, above `MEMBERS`, or fewer than the active members.
    RaidDisks(u16),
    /// `unfreeze` without a matching `freeze`.
    NotFrozen,
    /// Too many nested freezes (65535).
    FreezeOverflow,
    /// `start_check`: another sync action is pending or running; `resize`: a sync job runs
    /// (stop or freeze it first).
    SyncBusy,
    /// `add_member`, `remove_member`, `set_raid_disks`, `resize` on a read-only array: the change could
    /// not be recorded in the superblocks (make it read-write first).
    ReadOnly,
    /// `add_bitmap`: the array has a bitmap already; `remove_bitmap`: it has none.
    Bitmap {
        /// Whether the array has one.
        present: bool,
    },
    /// `add_bitmap`: the storage or the chunk size do not fit the array.
    BitmapConfig(ConfigError),
    /// `replace`: the member's slot already has a replacement being rebuilt (or, for
    /// `set_raid_disks`, some slot has one: the slots cannot be packed meanwhile).
    Replacing(MemberId),
    /// `replace`: the device named to rebuild onto is not a spare.
    NotSpare(MemberId),
    /// `resize`: the new size is 0 or above [`crate::MAX_ARRAY_SECTORS`].
    Size(Sector),
    /// `resize`: a request in the table touches sectors at or beyond the new end.
    ShrinkBusy {
        /// The new size asked for.
        sectors: Sector,
        /// The first sector at or beyond it that a request touches.
        sector: Sector,
    },
    /// `resize`: no bitmap chunk up to [`crate::MAX_BITMAP_CHUNK_SECTORS`] makes the bits fit
    /// the room the frontend has for them (or the engine's pages).
    BitmapRoom {
        /// Bytes of room given.
        room: u64,
    },
    /// `set_sync_range`: the start is beyond the end.
    SyncRange {
        /// Start asked for.
        min: Sector,
        /// End asked for.
        max: Sector,
    },
}

// Words for people: frontends print these (never the Debug form). Each names the field or the
// rule and the value.

use core::fmt;

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "member {}", self.0)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ConfigError::Members(n) => {
                write!(
                    f,
                    "{n} member positions (1 to {} supported)",
                    crate::MAX_MEMBERS
                )
            }
            ConfigError::Inflight(n) => write!(f, "{n} request slots (1 to 256 supported)"),
            ConfigError::SyncWindows(n) => write!(f, "{n} sync windows (1 to 65535 supported)"),
            ConfigError::DataSectors(0) => f.write_str("the data area is empty (0 sectors)"),
            ConfigError::DataSectors(n) => write!(
                f,
                "the data area of {n} sectors is above the largest array ({} sectors)",
                crate::MAX_ARRAY_SECTORS
            ),
            ConfigError::BarrierUnitShift(s) => {
                write!(f, "barrier unit of 2^{s} sectors (at most 2^40)")
            }
            ConfigError::MaxRequestSectors(n) => write!(
                f,
                "largest request of {n} sectors (must be 1 to a barrier unit)"
            ),
            ConfigError::SyncWindowSectors(n) => {
                write!(
                    f,
                    "sync window of {n} sectors (must be 1 to a barrier unit)"
                )
            }
            ConfigError::BitmapChunkSectors(n) => {
                write!(f, "bitmap chunk of {n} sectors is not a power of two")
            }
            ConfigError::BitmapPageBytes(_) => f.write_str("bitmap pages of 0 bytes"),
            ConfigError::BitmapDaemon => f.write_str("a bitmap daemon period of 0"),
            ConfigError::BitmapStorageTooSmall(n) => {
                write!(f, "bitmap storage too small: the bitmap needs {n} bytes")
            }
            ConfigError::BitmapTooManyPages(n) => write!(
                f,
                "the bitmap needs {n} pages (at most {} supported)",
                crate::MAX_BITMAP_PAGES
            ),
            ConfigError::BitmapStorageMismatch => {
                f.write_str("a bitmap chunk size without bitmap storage, or the other way round")
            }
            ConfigError::MemberList(n) => write!(
                f,
                "the member list ({n} given) is empty, too long, or names a member twice or out of range"
            ),
            ConfigError::RaidDisks(n) => write!(
                f,
                "raid_disks = {n} (must be at least 1 and at most the members given)"
            ),
            ConfigError::ReadOnly => {
                f.write_str("a read-only start, in a build without read-only support")
            }
        }
    }
}

impl fmt::Display for AssembleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AssembleError::Config(e) => write!(f, "configuration refused: {e}"),
            AssembleError::NoActiveMember => f.write_str("no device holds an active role"),
            AssembleError::NoInSyncMember => {
                f.write_str("no in-sync member: no device holds the array's data")
            }
            AssembleError::NotStarted { found, expected } => write!(
                f,
                "only {found} of the {expected} working members are present: not started"
            ),
            AssembleError::RaidDisks(n) => write!(
                f,
                "the freshest superblock's raid_disks = {n} is 0 or more than this build supports"
            ),
            AssembleError::BadBlocks(e) => write!(f, "bad-block log refused: {e}"),
        }
    }
}

impl fmt::Display for BridgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BridgeError::DevNumber {
                dev_number,
                members,
            } => write!(
                f,
                "dev_number = {dev_number} (this build handles dev_number 0..{members})"
            ),
            BridgeError::RaidDisks(n) => write!(f, "raid_disks = {n} (at most 65535)"),
            BridgeError::Size { size, data_size } => write!(
                f,
                "size = {size} sectors is more than the member's data_size = {data_size} sectors"
            ),
            BridgeError::Sectors(size) => write!(
                f,
                "size = {size} sectors is beyond the 2^32 sectors of this build (feature sector32)"
            ),
            BridgeError::RoleCapacity { member, capacity } => write!(
                f,
                "{member} holds a slot but the superblock stores only {capacity} role entries"
            ),
        }
    }
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SubmitError::Busy => f.write_str("every request slot is in use"),
            SubmitError::OutOfRange(end) => {
                write!(f, "the request ends at sector {end}, beyond the array")
            }
            SubmitError::BadLength(n) => write!(f, "a request of {n} sectors"),
            SubmitError::Broken => f.write_str("the array has no in-sync member left"),
            SubmitError::ReadOnly => f.write_str("the array is read-only"),
        }
    }
}

impl fmt::Display for TagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TagError::Unknown(t) => write!(f, "no command with tag {t:#x} is in flight"),
        }
    }
}

impl fmt::Display for ReconfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ReconfigError::NotQuiesced => f.write_str("the array is not quiesced yet"),
            ReconfigError::NoSuchMember(m) => write!(f, "there is no {m} position"),
            ReconfigError::Occupied(m) => write!(f, "{m} is already in use"),
            ReconfigError::MemberBusy(m) => {
                write!(f, "{m} is in sync or has I/O in flight (fail it first)")
            }
            ReconfigError::LastInSync(m) => {
                write!(
                    f,
                    "{m} is the last in-sync member: failing it would lose the array"
                )
            }
            ReconfigError::LastUpToDate(m) => write!(
                f,
                "{m} is the last member with every acknowledged write (the others were behind \
                 it at a crash and the resync has not repaired them yet): failing it would \
                 lose them"
            ),
            ReconfigError::Lagging(m) => write!(
                f,
                "{m} may lack acknowledged writes until the resync ends (it was written behind \
                 at a crash), and only the bitmap records that: wait for the resync to finish"
            ),
            ReconfigError::WrongState(m) => write!(f, "nothing to do: {m} is not in that state"),
            ReconfigError::RaidDisks(n) => write!(
                f,
                "raid_disks = {n} is 0, more than this build supports, or fewer than the active members"
            ),
            ReconfigError::NotFrozen => f.write_str("unfreeze without a freeze"),
            ReconfigError::FreezeOverflow => f.write_str("too many nested freezes"),
            ReconfigError::SyncBusy => f.write_str("another sync action is pending or running"),
            ReconfigError::Bitmap { present: true } => {
                f.write_str("the array has a bitmap already")
            }
            ReconfigError::Bitmap { present: false } => f.write_str("the array has no bitmap"),
            ReconfigError::BitmapConfig(e) => write!(f, "the new bitmap: {e}"),
            ReconfigError::ReadOnly => {
                f.write_str("the array is read-only (make it read-write first)")
            }
            ReconfigError::Size(n) => write!(
                f,
                "a size of {n} sectors (must be 1 to {} sectors)",
                crate::MAX_ARRAY_SECTORS
            ),
            ReconfigError::ShrinkBusy { sectors, sector } => write!(
                f,
                "cannot shrink to {sectors} sectors: a request still uses sector {sector}, \
                 beyond the new end"
            ),
            ReconfigError::BitmapRoom { room } => write!(
                f,
                "no bitmap chunk (up to 2 GiB) makes the bitmap fit its {room} bytes of room"
            ),
            ReconfigError::SyncRange { min, max } => {
                write!(f, "sync_min {min} is beyond sync_max {max}")
            }
            ReconfigError::Replacing(m) => {
                write!(f, "{m}'s slot already has a replacement being rebuilt")
            }
            ReconfigError::NotSpare(m) => write!(f, "{m} is not a spare"),
        }
    }
}

impl fmt::Display for BadBlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BadBlockError::NoSuchMember(m) => write!(f, "there is no {m} position"),
            BadBlockError::TooMany { member, entries } => write!(
                f,
                "{member}: {entries} bad-block entries (at most {})",
                crate::badblocks::MAX_BAD_BLOCKS
            ),
            BadBlockError::ZeroLength { member, index } => {
                write!(f, "{member}: bad-block entry {index} has length 0")
            }
            BadBlockError::OutOfRange { member, index, end } => write!(
                f,
                "{member}: bad-block entry {index} ends at sector {end}, beyond the data area"
            ),
            BadBlockError::Unsorted { member, index } => write!(
                f,
                "{member}: bad-block entry {index} starts before the previous one ends"
            ),
            BadBlockError::Storage {
                member,
                len,
                capacity,
            } => write!(
                f,
                "{member}: {len} bad-block entries said to be in storage for {capacity}"
            ),
            BadBlockError::NotQuiesced(m) => write!(
                f,
                "{m} may be read right now: its bad-block list changes only while it is not readable or the array is quiesced"
            ),
        }
    }
}
