//! Typed errors. Each names the field and the value that are wrong.

use crate::badblocks::BadBlockError;
use crate::types::{MemberId, Sector};

/// Why a configuration or a member list was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `MEMBERS` is 0 or above [`crate::MAX_MEMBERS`].
    Members(usize),
    /// `INFLIGHT` is 0 or above 65535.
    Inflight(usize),
    /// `SYNC` is 0 or above 65535.
    SyncWindows(usize),
    /// `data_sectors` is 0.
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
    /// `fail`/`remove`: nothing to do in that state.
    WrongState(MemberId),
    /// `set_raid_disks`: 0, above `MEMBERS`, or fewer than the active members.
    RaidDisks(u16),
    /// `unfreeze` without a matching `freeze`.
    NotFrozen,
    /// Too many nested freezes (65535).
    FreezeOverflow,
    /// `start_check`: another sync action is pending or running.
    SyncBusy,
}
