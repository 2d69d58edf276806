//! The RAID1 state machine: [`Array`], its public contract, and the main loop.
//!
//! This file holds the struct and every public call in quinn-proto's order (construction,
//! inputs, commands, outputs, getters); each dispatches to the file that holds the md concept,
//! named as in the kernel's drivers/md (raid1.c, md.c, md-bitmap.c). Every file adds its own
//! `impl Array` block, as smoltcp splits its `Interface`:
//!
//! | file | md concept | kernel functions |
//! |---|---|---|
//! | `assemble.rs` | assembly | analyze_sbs, md_run, super_1_validate; mdadm's most_recent |
//! | `personality.rs` | membership changes | raid1_add_disk, raid1_remove_disk, raid1_reshape, remove_and_add_spares |
//! | `resize.rs` | the array's size | update_size, raid1_resize, md_bitmap_resize |
//! | `rdev.rs` | a member | md_rdev, is_badblock, rdev_clear_badblocks |
//! | `r1bio.rs` | a logical request | r1bio, raid1_read_request, raid1_write_request, raid1_end_*_request, raid_end_bio_io |
//! | `barrier.rs` | barriers and freeze | wait_barrier, allow_barrier, raise_barrier, lower_barrier, freeze_array |
//! | `read_balance.rs` | which mirror serves a read | read_balance, choose_*_rdev |
//! | `read_error.rs` | read-error retry and write-back | handle_read_error, fix_read_error |
//! | `md_error.rs` | member failure | md_error, raid1_error |
//! | `superblock.rs` | superblock rounds, events | md_update_sb, super_written |
//! | `safe_mode.rs` | clean / dirty | md_write_start, md_write_end, md_safemode_timeout, __md_stop_writes |
//! | `read_only.rs` | read-only | md_set_readonly, the `ro` checks |
//! | `replacement.rs` | replacement | want_replacement, raid1_add_disk's replacement branch, raid1_spare_active |
//! | `flush.rs` | internal flushes | REQ_PREFLUSH of md_super_write, the flush before clean / clear |
//! | `bitmap.rs` | write-intent bitmap | md_bitmap_startwrite, md_bitmap_unplug, md_bitmap_daemon_work |
//! | `sync.rs` | the sync job | md_do_sync, md_check_recovery's choice |
//! | `sync_request.rs` | one sync window | raid1_sync_request, end_sync_read, process_checks, sync_request_write |
//! | `events.rs` | monitor events | md_new_event |
//! | `timers.rs` | deadlines | safemode_timer, bitmap daemon_sleep, sync speed throttling |
//! | `write_behind.rs` | write-behind | R1BIO_BehindIO in raid1_write_request / raid1_end_write_request, the bitmap's behind_writes |
//! | `tags.rs` | command tags | (bi_private) |

#[cfg(feature = "bad-block-log")]
use crate::badblocks::BadBlockError;
use crate::badblocks::{self, BadBlocks, BadRange, Run};
use crate::error::{AssembleError, ConfigError, ReconfigError, SubmitError, TagError};
use crate::planted::{self, Bug};
use crate::types::*;

mod assemble;
mod barrier;
mod bitmap;
mod events;
mod flush;
mod md_error;
mod personality;
mod r1bio;
mod rdev;
mod read_balance;
mod read_error;
mod read_only;
mod replacement;
mod resize;
mod safe_mode;
mod slots;
mod superblock;
mod sync;
mod sync_request;
mod tags;
mod timers;
mod write_behind;

use barrier::Barrier;
use bitmap::Bitmap;
use events::EventQueue;
use flush::{FLUSH_BITMAP, FLUSH_CLEAN, InternalFlush};
use r1bio::{Op, Phase, R1Bio, answer_op};
use rdev::Member;
use read_only::ReadOnly;
pub use resize::{MAX_ARRAY_SECTORS, MAX_BITMAP_CHUNK_SECTORS};
use slots::{MAX_SLOTS, SlotSet};
pub use superblock::same_table;
use superblock::{META_RETRIES, SbUpdate};
use sync::{SyncJob, SyncWindow, WPhase};
use tags::*;
use timers::Timers;

/// The bit of member `m` in a member set (`u32`; `M` is at most 32).
fn bit(m: usize) -> u32 {
    1u32 << (m as u32 & 31)
}

/// What [`Array::progress_marker`] returns.
type Marker = (u32, u32, u32, u32, u32, u32, Sector, bool);

/// Whether two progress markers are equal: every field compared, the differences ORed together
/// (less code on a 32-bit microcontroller than a branch per field).
fn same(a: &Marker, b: &Marker) -> bool {
    // Destructured whole: a field added to the marker cannot be left out of the comparison.
    let (a0, a1, a2, a3, a4, a5, a6, a7) = *a;
    let (b0, b1, b2, b3, b4, b5, b6, b7) = *b;
    (Sector::from(a0 ^ b0 | a1 ^ b1 | a2 ^ b2 | a3 ^ b3 | a4 ^ b4 | a5 ^ b5)
        | (a6 ^ b6)
        | Sector::from(a7 ^ b7))
        == 0
}

/// How many members set `s` holds. (Out of line on bare metal: a microcontroller without a
/// population count instruction spends a dozen instructions on each inlined `count_ones`;
/// hosts have one instruction for it.)
#[cfg_attr(target_os = "none", inline(never))]
fn count(s: u32) -> u32 {
    s.count_ones()
}

/// A RAID1 array: the whole engine. `M` members, `R` logical requests in flight or queued, `S`
/// sync windows. The bitmap bits live in caller storage (`'b`).
///
/// See the crate documentation for the calling contract.
#[derive(Debug)]
pub struct Array<'b, const M: usize, const R: usize, const S: usize> {
    cfg: Config,
    /// The latest time an input brought (time never goes backwards).
    now: Instant,
    /// The deadlines [`Array::poll_timeout`] reports (array/timers.rs).
    timers: Timers,
    // Members (md_rdev, array/rdev.rs).
    raid_disks: u16,
    members: [Member; M],
    /// Each member's bad blocks (lent by the frontend, validated, data-area relative).
    bad: [BadBlocks<'b>; M],
    // Requests (r1bio, array/r1bio.rs) and their barriers (array/barrier.rs).
    reqs: [R1Bio<M>; R],
    /// Slots in use (not `Free`).
    live: SlotSet,
    /// Slots a pass of the main loop must step: every live slot except those waiting for their
    /// member I/O (a superset: a slot found waiting is taken out then).
    ready: SlotSet,
    /// Slots that may hold member I/O not yet handed out (a superset, pruned when polled).
    queued: SlotSet,
    /// Counts every change of a request's or a sync window's phase (and a window's position):
    /// the main loop runs another pass while it moves, without scanning the tables. Only
    /// compared before and after one pass, which moves far fewer than 2^32 times: it wraps, and
    /// 32 bits cost less code than 64 on a microcontroller.
    moves: u32,
    /// Queued (not yet polled) request member ops.
    req_queued: u32,
    /// Requests in a read fix (array/read_error.rs).
    fixing: u16,
    /// Barrier buckets and freeze.
    barrier: Barrier,
    // The array's recorded state (mddev) and how it gets on disk.
    events: u64,
    events_cleared: u64,
    /// md's can_decrease_events: the last round was a pure clean -> dirty bump of a complete,
    /// in-sync array, so a pure dirty -> clean round right after it may decrement instead.
    can_decrease_events: bool,
    /// The last bumping round was such a roll-back: the value above is on disk on no member
    /// any more (or on one that missed the roll-back), so a round recording a real change skips
    /// it (+2) and never gives the same number to two different member tables.
    rolled_back: bool,
    dirty: bool,
    dirty_gen: u64,
    /// Superblock generation that records the latest member failure: no write is acknowledged
    /// before it is on disk (md's Blocked device).
    fail_gen: u64,
    resync_cp: Sector,
    /// `request_clean` asked for a clean stop: also clear the bitmap bits of clean chunks.
    clean_requested: bool,
    broken: bool,
    /// Superblock rounds (md_update_sb, array/superblock.rs).
    sb: SbUpdate<M>,
    /// The internal flush (before marking clean, before clearing bitmap bits; array/flush.rs).
    flush: InternalFlush,
    /// The write-intent bitmap (array/bitmap.rs).
    bitmap: Bitmap<'b>,
    // Sync (array/sync.rs, array/sync_request.rs).
    sync: SyncJob,
    windows: [SyncWindow<M>; S],
    check_requested: Option<SyncAction>,
    /// md's `sync_speed_max` (sectors per second); 0: no limit (a plain word, not an `Option`
    /// of one: less code on a 32-bit microcontroller).
    sync_rate: u64,
    /// md's `sync_speed_min`: the rate a sync falls back to while logical requests are in the
    /// table (sectors per second); 0: the sync ignores them.
    sync_rate_min: u64,
    sync_blocked: bool,
    /// md's `sync_action` = `frozen`: no sync action starts until it is cleared.
    sync_frozen: bool,
    /// Read-only (md's `ro`), asked for and in effect (array/read_only.rs).
    ro: ReadOnly,
    /// md's `sync_min` / `sync_max`: the range a check or repair covers.
    sync_min: Sector,
    sync_max: Sector,
    mismatch_cnt: u64,
    /// Monitor events not yet polled (array/events.rs).
    event_q: EventQueue,
    /// Write-behind as asked for and as on disk (array/write_behind.rs).
    wb: write_behind::WriteBehind,
}

/// How a member joins with [`Array::add_member`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddMember {
    /// A new device: spare, fully recovered if a slot is free.
    New,
    /// A device that was a member before, with what its own superblock says. It takes its old
    /// slot back if free; with a bitmap and `events >= events_cleared` only bitmap-dirty chunks
    /// are recovered, otherwise everything.
    ReAdd {
        /// Its slot (`dev_roles[dev_number]` of its own superblock).
        slot: u16,
        /// Its `events`.
        events: u64,
        /// Its WriteMostly flag.
        write_mostly: bool,
        /// Its superblock carried no `recovery_offset` (it was fully in sync when it left). A
        /// member that left mid-recovery is rebuilt in full.
        was_in_sync: bool,
    },
}

/// A snapshot of the array for status displays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArrayStatus {
    /// Slots.
    pub raid_disks: u16,
    /// In-sync members.
    pub in_sync: u16,
    /// Event counter.
    pub events: u64,
    /// Superblock says dirty.
    pub dirty: bool,
    /// Resync checkpoint (MAX when consistent).
    pub resync_offset: Sector,
    /// Running sync action and its position.
    pub sync: Option<(SyncAction, Sector, Sector)>,
    /// Freeze depth.
    pub frozen: u16,
    /// Sync actions are frozen (md's `sync_action` = `frozen`): none starts.
    pub sync_frozen: bool,
    /// Read-only asked for: writes and discards are refused ([`SubmitError::ReadOnly`]).
    pub read_only_asked: bool,
    /// Read-only in effect: the array is clean on disk and nothing is written to any member.
    pub read_only: bool,
    /// md's `sync_min`: where the next check or repair starts.
    pub sync_min: Sector,
    /// md's `sync_max`: where it ends (`MAX_SECTOR`: the end of the array).
    pub sync_max: Sector,
    /// Writes acknowledged whose write-behind writes are still going on (md's
    /// `behind_writes`).
    pub behind_writes: u16,
    /// Last in-sync member has seen errors.
    pub broken: bool,
    /// Logical requests in the table (waiting, running, or done but not polled).
    pub requests: u16,
    /// Monitor events dropped because the queue was full.
    pub events_lost: u64,
    /// `events_cleared`: array events when bitmap bits were last cleared.
    pub events_cleared: u64,
    /// Metadata not yet on disk: a superblock or bitmap round queued or in flight, an internal
    /// flush (before marking clean or clearing bits), or a requested clean not yet started. A
    /// clean stop is complete when the array is quiesced, not dirty, and this is false.
    pub metadata_pending: bool,
}

/// The fields of an empty array, but `cfg` and what [`Array::take_config`] derives from it:
/// one list for the literal of [`Array::blank`] (`literal`) and for the reset in place of
/// [`Array::reset`] (`assign`), which must agree.
macro_rules! empty_array {
    ($how:ident $target:expr) => {
        empty_array!(@$how $target;
            now: Instant(0),
            timers: Timers::NEW,
            raid_disks: 0,
            members: [Member::ABSENT; M],
            bad: [const { BadBlocks::empty() }; M],
            reqs: [R1Bio::FREE; R],
            live: SlotSet::EMPTY,
            ready: SlotSet::EMPTY,
            queued: SlotSet::EMPTY,
            moves: 0,
            req_queued: 0,
            fixing: 0,
            barrier: Barrier::NEW,
            events: 0,
            events_cleared: 0,
            can_decrease_events: false,
            rolled_back: false,
            dirty: false,
            dirty_gen: 0,
            fail_gen: 0,
            resync_cp: MAX_SECTOR,
            clean_requested: false,
            broken: false,
            sb: SbUpdate::NEW,
            flush: InternalFlush::NEW,
            bitmap: Bitmap::NEW,
            sync: SyncJob::IDLE,
            windows: [SyncWindow::FREE; S],
            check_requested: None,
            sync_rate: 0,
            sync_rate_min: 0,
            sync_blocked: false,
            sync_frozen: false,
            sync_min: 0,
            sync_max: MAX_SECTOR,
            ro: ReadOnly {
                asked: false,
                on: false,
            },
            mismatch_cnt: 0,
            event_q: EventQueue::NEW,
            wb: write_behind::WriteBehind {
                target: 0,
                round: 0,
                disk: 0,
                live: 0,
            }
        )
    };
    (@literal $cfg:expr; $($field:ident: $value:expr),* $(,)?) => {
        Array { cfg: $cfg, $($field: $value),* }
    };
    (@assign $this:expr; $($field:ident: $value:expr),* $(,)?) => {
        $($this.$field = $value;)*
    };
}

impl<'b, const M: usize, const R: usize, const S: usize> Array<'b, M, R, S> {
    // ----------------------------------------------------------------------------------------
    // Construction: mdadm --create, or assembly from the superblocks found (array/assemble.rs).

    /// Checks every configuration limit of an array of this type for `cfg`.
    pub(super) fn check_config(cfg: &Config) -> Result<(), ConfigError> {
        if M == 0 || M > MAX_MEMBERS {
            return Err(ConfigError::Members(M));
        }
        if R == 0 || R > MAX_SLOTS {
            return Err(ConfigError::Inflight(R));
        }
        if S == 0 || S > 0xFFFF {
            return Err(ConfigError::SyncWindows(S));
        }
        if cfg.data_sectors == 0 || cfg.data_sectors > MAX_ARRAY_SECTORS {
            return Err(ConfigError::DataSectors(cfg.data_sectors));
        }
        if cfg.barrier_unit_shift > 40 {
            return Err(ConfigError::BarrierUnitShift(cfg.barrier_unit_shift));
        }
        let unit = 1u64 << cfg.barrier_unit_shift;
        if cfg.max_request_sectors == 0 || u64::from(cfg.max_request_sectors) > unit {
            return Err(ConfigError::MaxRequestSectors(cfg.max_request_sectors));
        }
        if cfg.sync_window_sectors == 0 || u64::from(cfg.sync_window_sectors) > unit {
            return Err(ConfigError::SyncWindowSectors(cfg.sync_window_sectors));
        }
        if cfg.bitmap_chunk_sectors != 0 && !cfg.bitmap_chunk_sectors.is_power_of_two() {
            return Err(ConfigError::BitmapChunkSectors(cfg.bitmap_chunk_sectors));
        }
        if cfg.bitmap_page_bytes == 0 {
            return Err(ConfigError::BitmapPageBytes(cfg.bitmap_page_bytes));
        }
        if cfg.bitmap_daemon_ns == 0 {
            return Err(ConfigError::BitmapDaemon);
        }
        if cfg.read_only && cfg!(not(feature = "read-only")) {
            return Err(ConfigError::ReadOnly);
        }
        Ok(())
    }

    /// An empty array for `cfg`, which [`Array::check_config`] accepted. (Infallible, so that
    /// the array is built where it goes rather than in a `Result` moved there.)
    pub(super) const fn blank(cfg: Config) -> Self {
        let mut a = empty_array!(literal cfg);
        a.take_config(cfg);
        a
    }

    /// Make this array [`Array::blank`] for `cfg` in its place, field by field: neither an
    /// empty array built on the stack and copied here nor a constant image of one in flash.
    fn reset(&mut self, cfg: Config) {
        empty_array!(assign self);
        self.take_config(cfg);
    }

    /// Take `cfg` and what an empty array derives from it (read-only asked and in effect, the
    /// write-behind limit).
    const fn take_config(&mut self, cfg: Config) {
        self.cfg = cfg;
        self.ro = ReadOnly {
            asked: cfg.read_only,
            on: cfg.read_only,
        };
        self.wb.target = cfg.write_behind;
        self.wb.disk = cfg.write_behind;
    }

    /// Bytes of caller storage the bitmap needs (for each of `bits` and `hot`), 0 without one.
    pub fn bitmap_bytes(cfg: &Config) -> usize {
        if cfg.bitmap_chunk_sectors == 0 {
            return 0;
        }
        let chunks = cfg.data_sectors.div_ceil(cfg.bitmap_chunk_sectors);
        usize::try_from(chunks.div_ceil(8)).unwrap_or(usize::MAX)
    }

    /// Creates a new array (mdadm --create): the first `raid_disks` of `members` take slots
    /// 0.., the rest are spares. Without `assume_clean` a full resync follows (with a bitmap,
    /// every bit is set first, as mdadm writes an all-ones bitmap). The initial superblocks (and
    /// bitmap) are queued for writing.
    pub fn create(
        cfg: Config,
        bitmap: Option<(&'b mut [u8], &'b mut [u8])>,
        raid_disks: u16,
        members: &[MemberId],
        assume_clean: bool,
    ) -> Result<Self, ConfigError> {
        Self::check_config(&cfg)?;
        let mut a = Self::blank(cfg);
        let (bits, hot) = match bitmap {
            Some((b, h)) => (Some(b), Some(h)),
            None => (None, None),
        };
        a.attach_bitmap(bits, hot)?;
        if members.is_empty() || members.len() > M {
            return Err(ConfigError::MemberList(members.len()));
        }
        if raid_disks == 0 || usize::from(raid_disks) > members.len() {
            return Err(ConfigError::RaidDisks(raid_disks));
        }
        a.raid_disks = raid_disks;
        for (n, id) in members.iter().enumerate() {
            let Some(m) = a.members.get_mut(usize::from(id.0)) else {
                return Err(ConfigError::MemberList(n));
            };
            if !matches!(m.state, MemberState::Absent) {
                return Err(ConfigError::MemberList(n));
            }
            if n < usize::from(raid_disks) {
                m.state = MemberState::InSync;
                m.role = Role::Active(n as u16);
            } else {
                m.state = MemberState::Spare;
                m.role = Role::Spare;
            }
        }
        a.resync_cp = if assume_clean || raid_disks == 1 {
            MAX_SECTOR
        } else {
            0
        };
        if let Some(bits) = a.bitmap.bits.as_deref_mut() {
            let fill = if assume_clean { 0 } else { 0xFF };
            bits.iter_mut().for_each(|b| *b = fill);
        }
        a.mark_all_bitmap_pages();
        a.want_sb();
        a.pump();
        Ok(a)
    }

    /// Assembles an array from the superblocks found on the devices (index = [`MemberId`]),
    /// choosing the freshest members as md does (§1.7 of the format notes): the highest `events`
    /// among members with an active role is the reference; a member is in sync if its events are
    /// at most one behind, both its own and the reference's role table give it the same active
    /// slot, and it is not mid-recovery. Older active members are re-added (bitmap-guided if
    /// `events >= events_cleared`), spares stay spares. `bitmap` holds the bitwise OR of the
    /// bitmaps of every member found: a member that missed page writes (it failed, or a crash cut
    /// a round short) must not hide a dirty chunk; extra bits only cost resync time.
    pub fn assemble(
        cfg: Config,
        bitmap: Option<(&'b mut [u8], &'b mut [u8])>,
        found: &[Option<SuperblockState<M>>; M],
        policy: StartPolicy,
    ) -> Result<Self, AssembleError> {
        let mut a = Self::empty();
        a.assemble_in(cfg, bitmap, found, policy, Self::no_lists())?;
        Ok(a)
    }

    /// [`Array::assemble`] for members with bad-block logs: `bad_blocks[i]` is member `i`'s
    /// list (data-area relative, sorted, non-overlapping, at most [`crate::MAX_BAD_BLOCKS`]
    /// entries; see [`Array::set_bad_blocks`]). The lists are in force before the first read or
    /// sync window is planned. A refused list is [`AssembleError::BadBlocks`].
    #[cfg(feature = "bad-block-log")]
    pub fn assemble_with_bad_blocks(
        cfg: Config,
        bitmap: Option<(&'b mut [u8], &'b mut [u8])>,
        found: &[Option<SuperblockState<M>>; M],
        policy: StartPolicy,
        bad_blocks: [BadBlocks<'b>; M],
    ) -> Result<Self, AssembleError> {
        let mut a = Self::empty();
        a.assemble_in(cfg, bitmap, found, policy, bad_blocks)?;
        Ok(a)
    }

    /// An array without members: every request fails, nothing is written. A place for an
    /// array to be assembled into with [`Array::reassemble`], where an array is too large to
    /// be moved around (a microcontroller's stack).
    pub const fn empty() -> Self {
        Self::blank(Config::new(0))
    }

    /// [`Array::assemble`] into this array's place: afterwards it holds what `assemble` would
    /// return, built where it stays rather than moved there (a copy of the array on the stack
    /// for each move otherwise). Whatever it held before is forgotten; on error it is
    /// [`Array::empty`].
    pub fn reassemble(
        &mut self,
        cfg: Config,
        bitmap: Option<(&'b mut [u8], &'b mut [u8])>,
        found: &[Option<SuperblockState<M>>; M],
        policy: StartPolicy,
    ) -> Result<(), AssembleError> {
        self.assemble_in(cfg, bitmap, found, policy, Self::no_lists())
    }

    fn no_lists() -> [BadBlocks<'b>; M] {
        core::array::from_fn(|_| BadBlocks::empty())
    }

    /// The assemblies, in this array's place: checked, emptied for `cfg`, assembled; emptied
    /// again if refused.
    fn assemble_in(
        &mut self,
        cfg: Config,
        bitmap: Option<(&'b mut [u8], &'b mut [u8])>,
        found: &[Option<SuperblockState<M>>; M],
        policy: StartPolicy,
        bad_blocks: [BadBlocks<'b>; M],
    ) -> Result<(), AssembleError> {
        let run = match Self::check_config(&cfg) {
            Ok(()) => {
                self.reset(cfg);
                Self::md_run(self, cfg, bitmap, found, policy, bad_blocks)
            }
            Err(e) => Err(AssembleError::Config(e)),
        };
        if run.is_err() {
            self.reset(Config::new(0));
        }
        run
    }

    /// The member whose superblock defines the array: the highest `events` among members whose
    /// own superblock says active and in sync.
    pub fn choose_freshest(found: &[Option<SuperblockState<M>>; M]) -> Option<u8> {
        Self::most_recent(found)
    }

    // ----------------------------------------------------------------------------------------
    // Inputs: a logical request, the result of a command, the clock.

    /// Submits a logical request. `Err(Busy)` when every slot is taken.
    pub fn submit(&mut self, now: Instant, req: Request) -> Result<(), SubmitError> {
        self.tick(now);
        if req.op != RequestOp::Flush {
            if req.sectors == 0 || req.sectors > self.cfg.max_request_sectors {
                return Err(SubmitError::BadLength(req.sectors));
            }
            let end = req.sector.saturating_add(Sector::from(req.sectors));
            if end > self.cfg.data_sectors {
                return Err(SubmitError::OutOfRange(end));
            }
        }
        if self.in_sync_count() == 0 {
            return Err(SubmitError::Broken);
        }
        if self.ro.asked() && matches!(req.op, RequestOp::Write | RequestOp::Discard) {
            return Err(SubmitError::ReadOnly);
        }
        self.alloc_r1bio(req)?;
        self.pump();
        Ok(())
    }

    /// Reports the result of a command from [`Array::poll_io`].
    pub fn complete(&mut self, now: Instant, t: Tag, res: IoResult) -> Result<(), TagError> {
        self.tick(now);
        let (class, generation, index, member) = untag(t);
        let mi = usize::from(member);
        let ok = res == IoResult::Ok;
        // Each handler refuses a tag that names nothing in flight (`None`) before it changes
        // anything; `quick`: other member I/O of the same request or window is still busy.
        let handled = match class {
            CLASS_REQ => self.end_request_io(generation, index, mi, ok),
            CLASS_SYNC => self.end_sync_io(generation, index, mi, ok),
            CLASS_SB => self.super_written(generation, mi, ok).map(|()| false),
            CLASS_SB_PREFLUSH => self.preflush_done(generation, mi, ok).map(|()| false),
            CLASS_BM => self
                .bitmap_page_written(generation, index, mi, ok)
                .map(|()| false),
            CLASS_FLUSH => self.end_flush(mi, ok).map(|()| false),
            _ => None,
        };
        let Some(quick) = handled else {
            return Err(TagError::Unknown(t.0));
        };
        if let Some(m) = self.members.get_mut(mi) {
            m.in_flight = m.in_flight.saturating_sub(1);
        }
        // A rate-limited sync window that became due must be started by a pump.
        let sync_due = self.sync.action.is_some() && self.timers.sync_next <= self.now;
        if quick && !sync_due {
            // Other members of the same request or window are still busy: nothing else can move
            // (timers are the frontend's to fire), except that the array may now be drained.
            self.note_quiesced();
        } else {
            self.pump();
        }
        Ok(())
    }

    /// Answers an [`IoCmd::Compare`].
    pub fn complete_compare(&mut self, now: Instant, t: Tag, equal: bool) -> Result<(), TagError> {
        self.tick(now);
        let (class, generation, index, member) = untag(t);
        if class != CLASS_CMP || self.end_compare(generation, index, member, equal).is_none() {
            return Err(TagError::Unknown(t.0));
        }
        self.pump();
        Ok(())
    }

    /// Advances time: fires the safe-mode, bitmap-daemon and sync-rate timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        if self.timers.take_bitmap_daemon(now) {
            self.bitmap_daemon();
        }
        self.pump();
    }

    // ----------------------------------------------------------------------------------------
    // Commands: freeze, membership, member flags, sync, clean stop.

    /// Freezes the array: new requests and sync wait; in-flight I/O drains. Nested and concurrent
    /// freezes are counted: the array thaws when every freeze has been undone.
    pub fn freeze(&mut self) -> Result<(), ReconfigError> {
        self.barrier.frozen = self
            .barrier
            .frozen
            .checked_add(1)
            .ok_or(ReconfigError::FreezeOverflow)?;
        self.pump();
        Ok(())
    }

    /// Undoes one [`Array::freeze`].
    pub fn unfreeze(&mut self) -> Result<(), ReconfigError> {
        self.barrier.frozen = self
            .barrier
            .frozen
            .checked_sub(1)
            .ok_or(ReconfigError::NotFrozen)?;
        if self.barrier.frozen == 0 {
            self.barrier.quiesced_reported = false;
        }
        self.pump();
        Ok(())
    }

    /// Marks a member faulty (mdadm --fail). Refused for the last in-sync member, and for the
    /// last one that does not lag while others do (after a crash with write-behind, until the
    /// resync ends: the lagging ones may lack acknowledged writes).
    pub fn fail_member(&mut self, now: Instant, id: MemberId) -> Result<(), ReconfigError> {
        self.tick(now);
        let i = usize::from(id.0);
        let m = self.members.get(i).ok_or(ReconfigError::NoSuchMember(id))?;
        if !m.present() {
            return Err(ReconfigError::WrongState(id));
        }
        if m.in_sync() && self.in_sync_count() == 1 {
            return Err(ReconfigError::LastInSync(id));
        }
        if self.last_up_to_date(i) {
            return Err(ReconfigError::LastUpToDate(id));
        }
        self.fail_internal(i);
        self.pump();
        Ok(())
    }

    /// Adds a device at position `id` (hot-add / re-add). Requires [`Array::is_quiesced`].
    pub fn add_member(&mut self, id: MemberId, how: AddMember) -> Result<(), ReconfigError> {
        let i = usize::from(id.0);
        let m = self.members.get(i).ok_or(ReconfigError::NoSuchMember(id))?;
        if !self.is_quiesced() {
            return Err(ReconfigError::NotQuiesced);
        }
        if self.ro.asked() {
            return Err(ReconfigError::ReadOnly);
        }
        if !matches!(m.state, MemberState::Absent) {
            return Err(ReconfigError::Occupied(id));
        }
        self.place_member(i, how);
        self.interrupt_sync();
        self.sync_blocked = false;
        self.want_sb();
        self.pump();
        Ok(())
    }

    /// Removes a faulty or spare (or not-in-sync) member. Requires [`Array::is_quiesced`]. After
    /// `Ok` the engine never names this device again; the frontend may close it.
    pub fn remove_member(&mut self, id: MemberId) -> Result<(), ReconfigError> {
        let i = usize::from(id.0);
        let m = *self.members.get(i).ok_or(ReconfigError::NoSuchMember(id))?;
        if !self.is_quiesced() {
            return Err(ReconfigError::NotQuiesced);
        }
        if self.ro.asked() {
            return Err(ReconfigError::ReadOnly);
        }
        match m.state {
            MemberState::Absent => return Err(ReconfigError::WrongState(id)),
            MemberState::InSync => return Err(ReconfigError::MemberBusy(id)),
            _ => {}
        }
        if m.in_flight != 0 && !planted::on(Bug::FreezeNoDrain) {
            return Err(ReconfigError::MemberBusy(id));
        }
        self.raid1_remove_disk(i);
        self.pump();
        Ok(())
    }

    /// Changes `raid_disks` (mdadm --grow -n). Requires [`Array::is_quiesced`]. Shrinking packs the
    /// active members into the lowest slots; growing leaves new slots for spares to recover into.
    pub fn set_raid_disks(&mut self, n: u16) -> Result<(), ReconfigError> {
        if !self.is_quiesced() {
            return Err(ReconfigError::NotQuiesced);
        }
        if self.ro.asked() {
            return Err(ReconfigError::ReadOnly);
        }
        let active = self
            .members
            .iter()
            .filter(|m| matches!(m.role, Role::Active(_)) && m.present())
            .count();
        // Two members share a slot while one replaces the other: md refuses to reshape then.
        if let Some(r) = self
            .members
            .iter()
            .position(|m| m.present() && m.replacement)
            .filter(|_| cfg!(feature = "replacement"))
        {
            return Err(ReconfigError::Replacing(MemberId(r as u8)));
        }
        if n == 0 || usize::from(n) > M || usize::from(n) < active {
            return Err(ReconfigError::RaidDisks(n));
        }
        self.raid1_reshape(n);
        self.interrupt_sync();
        self.sync_blocked = false;
        self.want_sb();
        self.pump();
        Ok(())
    }

    /// Sets or clears md's FailFast on member `id` (recorded in its superblock): an I/O error on
    /// it then fails it at once, with no read fix and no bad-block record, unless it is the last
    /// in-sync member (md retries that one normally). For members whose errors mean "gone", such
    /// as remote ones.
    pub fn set_failfast(&mut self, id: MemberId, on: bool) -> Result<(), ReconfigError> {
        self.set_member_flag(id, on, |m| &mut m.failfast)
    }

    /// Sets or clears WriteMostly on a member (mdadm --write-mostly / sysfs `state`): it is read
    /// only when no other member can serve the range. Recorded in its superblock.
    /// While a region waits for its resync, the change orders the sources only once the resync
    /// has ended: the source of that region's reads stays the member it was.
    pub fn set_write_mostly(&mut self, id: MemberId, on: bool) -> Result<(), ReconfigError> {
        self.set_member_flag(id, on, |m| &mut m.write_mostly)?;
        if self.resync_cp == MAX_SECTOR || planted::on(Bug::WmMovesSource) {
            self.settle_rank_wm();
        }
        Ok(())
    }

    /// Asks for a superblock round though nothing changed, so that every present member's
    /// superblock (and bitmap header) is written again as the array would write it now: for
    /// a frontend that assembled a member from a copy of its superblock because the
    /// superblock itself was damaged (torn by a power cut as it was rewritten), which would
    /// otherwise stay damaged on the member until the next change. The round counts as a
    /// change (`events` goes up). Refused while read-only: nothing may be written.
    pub fn rewrite_superblocks(&mut self) -> Result<(), ReconfigError> {
        if self.ro.asked() {
            return Err(ReconfigError::ReadOnly);
        }
        self.want_sb();
        self.pump();
        Ok(())
    }

    /// Sets a present member's superblock flag (`flag` picks it); a change is recorded in a
    /// superblock round.
    fn set_member_flag(
        &mut self,
        id: MemberId,
        on: bool,
        flag: fn(&mut Member) -> &mut bool,
    ) -> Result<(), ReconfigError> {
        let m = self
            .members
            .get_mut(usize::from(id.0))
            .ok_or(ReconfigError::NoSuchMember(id))?;
        if !m.present() {
            return Err(ReconfigError::WrongState(id));
        }
        let f = flag(m);
        if *f != on {
            *f = on;
            self.want_sb();
            self.pump();
        }
        Ok(())
    }

    /// Lends member `id`'s bad-block list (sectors relative to its data area; sorted,
    /// non-overlapping, non-empty entries inside the data area, at most
    /// [`crate::MAX_BAD_BLOCKS`]; spare room in the storage lets a write clear the middle of an
    /// entry). Reads and sync never use a listed sector of that member as their source (md's
    /// read_balance); successful writes remove what they wrote. [`BadBlocks::empty`] clears it. Allowed while the
    /// member is not readable (absent, spare, faulty: e.g. before [`Array::add_member`]) or while
    /// the array is quiesced; otherwise [`BadBlockError::NotQuiesced`], because reads already
    /// planned would not honour it. Nothing is written: the on-disk log is the frontend's.
    #[cfg(feature = "bad-block-log")]
    pub fn set_bad_blocks(
        &mut self,
        id: MemberId,
        list: BadBlocks<'b>,
    ) -> Result<(), BadBlockError> {
        let i = usize::from(id.0);
        let Some(m) = self.members.get(i) else {
            return Err(BadBlockError::NoSuchMember(id));
        };
        let readable = matches!(
            m.state,
            MemberState::InSync | MemberState::Recovering { .. }
        );
        if readable && !self.is_quiesced() {
            return Err(BadBlockError::NotQuiesced(id));
        }
        badblocks::validate(id, &list, self.cfg.data_sectors)?;
        if let Some(b) = self.bad.get_mut(i) {
            *b = list;
        }
        Ok(())
    }

    /// Requests a check (count mismatches) or, with `repair`, a repair pass.
    pub fn start_check(&mut self, repair: bool) -> Result<(), ReconfigError> {
        if self.sync.action.is_some() || self.check_requested.is_some() {
            return Err(ReconfigError::SyncBusy);
        }
        self.check_requested = Some(if repair {
            SyncAction::Repair
        } else {
            SyncAction::Check
        });
        // As md: asking for a check or repair clears `frozen`.
        self.sync_frozen = false;
        self.sync_blocked = false;
        self.pump();
        Ok(())
    }

    /// md's `sync_min` / `sync_max`: the next check or repair covers `[min, max)` (`max` =
    /// `MAX_SECTOR` for the end). An interrupted one (idle, frozen, a failure) moves `min` to
    /// where it got to, so asking again resumes it; one that ends forgets the range. Refused
    /// while a check or repair runs or is asked for, or with `min > max`.
    pub fn set_sync_range(&mut self, min: Sector, max: Sector) -> Result<(), ReconfigError> {
        let checking = matches!(
            self.sync.action,
            Some(SyncAction::Check | SyncAction::Repair)
        );
        if checking || self.check_requested.is_some() {
            return Err(ReconfigError::SyncBusy);
        }
        if min > max {
            return Err(ReconfigError::SyncRange { min, max });
        }
        self.sync_min = min;
        self.sync_max = max;
        Ok(())
    }

    /// md's `sync_action` = `frozen` (`true`) or back to `idle` (`false`): while frozen no sync
    /// action starts, and the running one stops at its checkpoint (resync and recovery resume
    /// from it once unfrozen; a check or repair ends). Not recorded on disk, as in md.
    pub fn set_sync_frozen(&mut self, frozen: bool) {
        self.sync_frozen = frozen;
        if frozen {
            self.interrupt_sync();
        }
        self.pump();
    }

    /// md's `sync_action` = `idle` while a sync runs: it stops at its checkpoint. A check or
    /// repair ends; a resync or recovery starts again from the checkpoint (unless frozen).
    pub fn stop_sync(&mut self) {
        self.interrupt_sync();
        self.pump();
    }

    /// Limits sync I/O to `sectors_per_sec` (None: unlimited): md's `sync_speed_max`.
    pub fn set_sync_rate(&mut self, sectors_per_sec: Option<u64>) {
        self.sync_rate = sectors_per_sec.unwrap_or(0);
    }

    /// md's `sync_speed_min`: while logical requests are in the table the sync slows down to
    /// `sectors_per_sec` (or to the maximum, if that is lower), so that it yields to the array's
    /// users as md's resync does when the array is not idle; it runs at the maximum again when
    /// they are gone. `None`: the sync does not slow down for requests.
    pub fn set_sync_rate_min(&mut self, sectors_per_sec: Option<u64>) {
        self.sync_rate_min = sectors_per_sec.unwrap_or(0);
    }

    /// The rate the next sync window starts at: the minimum while requests are in the table,
    /// else the maximum (md_do_sync's `is_mddev_idle` / `speed_min` test).
    /// 0 for no limit.
    pub(super) fn sync_rate_now(&self) -> u64 {
        let (min, max) = (self.sync_rate_min, self.sync_rate);
        if min != 0 && self.live.len() != 0 && (max == 0 || min < max) {
            min
        } else {
            max
        }
    }

    /// Clean stop (md's `__md_stop_writes`): as soon as writes drain, without waiting for the
    /// safe mode delay or the bitmap daemon, flushes every member, then marks the array clean and
    /// clears the bitmap bits of every chunk not written since (md's `md_bitmap_flush`): one
    /// superblock round (clean, `events_cleared` advanced), then the changed bitmap pages. Bits
    /// stay while the array is degraded (a re-add needs them) or a sync runs or is pending.
    /// Freeze first to stop new writes; [`ArrayStatus::metadata_pending`] turns false when
    /// everything is on disk.
    pub fn request_clean(&mut self, now: Instant) {
        self.tick(now);
        self.timers.safe_mode = Some(now);
        self.clean_requested = true;
        self.pump();
    }

    // ----------------------------------------------------------------------------------------
    // Outputs: drain after every input or command.

    /// Next command for the frontend. Call until `None` after every input.
    pub fn poll_io(&mut self) -> Option<IoCmd<M>> {
        // Metadata first: the flushes superblock writes wait for, superblocks, bitmap pages,
        // internal flushes; then sync windows, then request member I/O.
        if let Some(c) = self.poll_preflush() {
            return Some(c);
        }
        if let Some(c) = self.poll_superblock() {
            return Some(c);
        }
        if let Some(c) = self.poll_bitmap_page() {
            return Some(c);
        }
        if let Some(c) = self.poll_flush() {
            return Some(c);
        }
        if let Some(c) = self.poll_sync_io() {
            return Some(c);
        }
        self.poll_request_io()
    }

    /// Next finished logical request.
    pub fn poll_completion(&mut self) -> Option<Completion> {
        self.next_completion()
    }

    /// Next monitor event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.event_q.pop()
    }

    /// When the engine next wants [`Array::handle_timeout`] (safe mode, bitmap daemon, sync rate).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers
            .poll_timeout(self.now, self.sync.action.is_some())
    }

    // ----------------------------------------------------------------------------------------
    // Getters.

    /// Checks the engine's own indexes against its tables: `Err` names the first disagreement.
    /// For simulators and tests (it scans every slot); a correct engine always returns `Ok`.
    pub fn audit(&self) -> Result<(), &'static str> {
        self.audit_slots()
    }

    /// Status snapshot.
    pub fn status(&self) -> ArrayStatus {
        ArrayStatus {
            raid_disks: self.raid_disks,
            in_sync: self.in_sync_count(),
            events: self.events,
            dirty: self.dirty,
            resync_offset: self.resync_cp,
            sync: self.sync.action.map(|a| (a, self.sync.pos, self.sync.end)),
            frozen: self.barrier.frozen,
            sync_frozen: self.sync_frozen,
            read_only_asked: self.ro.asked(),
            read_only: self.ro.on(),
            sync_min: self.sync_min,
            sync_max: self.sync_max,
            behind_writes: self.acked_behind(),
            broken: self.broken,
            requests: self.live.len() as u16,
            events_lost: self.event_q.lost,
            events_cleared: self.events_cleared,
            metadata_pending: self.metadata_pending(),
        }
    }

    /// See [`ArrayStatus::metadata_pending`].
    fn metadata_pending(&self) -> bool {
        self.sb.wanted > self.sb.done
            || self.sb.round.is_some()
            || self.bitmap.dirty != 0
            || self.bitmap.round_pages != 0
            || self.flush.purpose != 0
            || (self.clean_requested && self.timers.safe_mode.is_some())
            || self.stop_checkpoint_due()
    }

    /// The member a resync copies from now, also the source of reads of a region not yet
    /// resynced: md's first in-sync mirror in slot order; with write-behind, members that
    /// may lack acknowledged writes (WriteMostly) last.
    pub fn sync_source(&self) -> Option<MemberId> {
        self.first_in_sync_by_slot(0).map(|i| MemberId(i as u8))
    }

    /// The member that serves reads of `sector` while it is not yet resynced: the first by
    /// the resync's order among the members in sync and those rebuilt past it (bad blocks and
    /// write-behind lag aside). It stays the same as a rebuild goes on, and the resync after
    /// the rebuild copies from it.
    pub fn read_source(&self, sector: Sector) -> Option<MemberId> {
        self.first_holding(sector).map(|i| MemberId(i as u8))
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Public view of member `id` (`None` if out of range).
    pub fn member(&self, id: MemberId) -> Option<MemberInfo> {
        self.members.get(usize::from(id.0)).map(|m| MemberInfo {
            state: m.state,
            role: m.role,
            write_mostly: m.write_mostly,
            failfast: m.failfast,
            in_flight: m.in_flight,
            corrected_read_errors: m.corrected,
            replacement: m.replacement,
            want_replacement: m.want_replacement,
        })
    }

    /// Frozen, and no request or sync I/O holds a member: reconfiguration is allowed.
    pub fn is_quiesced(&self) -> bool {
        if self.barrier.frozen == 0 {
            return false;
        }
        if planted::on(Bug::FreezeNoDrain) {
            return true;
        }
        self.drained()
    }

    /// `mismatch_cnt` of the last check / repair, in sectors.
    pub fn mismatch_cnt(&self) -> u64 {
        self.mismatch_cnt
    }

    /// Bytes of bitmap page `page` (LSB-first md layout), to copy when a
    /// [`IoCmd::BitmapPage`] is polled.
    pub fn bitmap_page(&self, page: u32) -> &[u8] {
        let Some(bits) = self.bitmap.bits.as_deref() else {
            return &[];
        };
        let size = self.cfg.bitmap_page_bytes as usize;
        let start = (page as usize).saturating_mul(size);
        let end = start
            .saturating_add(size)
            .min(bits.len())
            .min(self.bitmap_used_bytes());
        bits.get(start..end).unwrap_or(&[])
    }

    /// Whether chunk `chunk` is set in the in-memory bitmap.
    pub fn bitmap_bit(&self, chunk: Sector) -> bool {
        self.bitmap
            .bits
            .as_deref()
            .is_some_and(|bits| bitmap::get_bit(bits, chunk))
    }

    /// The superblock the engine would write to `id` now (for `--examine`-like displays and for
    /// a frontend that writes superblocks at stop).
    pub fn superblock_for(&self, id: MemberId) -> Option<SuperblockState<M>> {
        let i = usize::from(id.0);
        self.members.get(i)?;
        let snap = self.snapshot();
        Some(self.render_sb(&snap, i))
    }

    /// Member `id`'s bad-block list now (as lent, less what successful writes cleared; empty
    /// if none or out of range).
    pub fn bad_blocks(&self, id: MemberId) -> &[BadRange] {
        self.bad
            .get(usize::from(id.0))
            .map_or(&[], |b| b.as_slice())
    }

    // ----------------------------------------------------------------------------------------
    // The main loop (md's raid1d and md_check_recovery): moves every state machine as far as it
    // can go.

    /// Runs every state machine until nothing moves (at most eight passes): superblock and
    /// bitmap rounds, requests, internal flushes, sync.
    pub(super) fn pump(&mut self) {
        self.timers.sync_unserved = false;
        self.timers.safe_mode_unserved = false;
        for _ in 0..8 {
            let before = self.progress_marker();
            // Read-only: nothing is written to a member (md skips md_update_sb and runs no
            // sync thread while `ro`); what was asked for waits until read-write.
            if !self.ro.on() {
                self.pump_superblock();
                self.pump_bitmap();
            }
            self.settle_write_behind();
            self.pump_requests();
            self.pump_flush();
            if !self.ro.on() {
                self.pump_sync();
            }
            self.settle_read_only();
            if same(&self.progress_marker(), &before) {
                break;
            }
        }
        self.note_quiesced();
    }

    /// A fingerprint of the state the pump's passes move; an unchanged one ends the pump.
    /// (A tuple, compared field by field: an array of words would be compared by a call to
    /// memcmp, a fifth of the cost of a request.)
    fn progress_marker(&self) -> Marker {
        (
            self.moves,
            // The superblock and bitmap generations by their low words: they only grow, by a
            // few in a pass, so a pass that moves one moves its low word.
            self.sb.done as u32,
            self.sb.wanted as u32,
            self.bitmap.done as u32,
            self.req_queued,
            self.flush.outstanding,
            // A sync job can reach its end by skipping clean chunks: finish it in the same pump.
            self.sync.pos,
            self.sync.action.is_some(),
        )
    }
}
