//! Members: md's md_rdev (drivers/md/md.h) and its bad-block lookups (is_badblock,
//! rdev_clear_badblocks in md.c).
//!
//! A member position holds a device's state (absent, spare, in sync, recovering, faulty), its
//! slot (`raid_disk`), WriteMostly, the I/O counters read balancing and quiescence look at, and
//! whether it has data writes not yet flushed. Its bad-block list is lent by the frontend
//! ([`BadBlocks`]); reads and sync never take a listed sector as a source, successful writes
//! clear what they wrote.

use super::*;

/// One member position (md's md_rdev).
#[derive(Clone, Copy, Debug)]
pub(super) struct Member {
    pub(super) state: MemberState,
    pub(super) role: Role,
    pub(super) write_mostly: bool,
    /// WriteMostly as the source order of a region not yet resynced sees it
    /// ([`Array::source_rank`]): the flag when that region began (an assembly, a grow, a write
    /// that failed on the last in-sync member), kept until the resync ends, so that toggling
    /// WriteMostly meanwhile does not move the source and a sector read twice with no write
    /// in between cannot read differently (simulator seed 19009350).
    pub(super) rank_wm: bool,
    /// md's FailFast: an error fails it at once unless it is the last in-sync member.
    pub(super) failfast: bool,
    /// Commands issued to it and not completed (data, flushes, metadata).
    pub(super) in_flight: u32,
    /// Request I/O queued or in flight (md's nr_pending), for read balancing.
    pub(super) pending: u32,
    /// Where its last read ended: a read starting there stays on it (sequential affinity).
    pub(super) next_seq: Sector,
    /// Read errors corrected by writing good data back.
    pub(super) corrected: u32,
    /// A non-FUA data write completed on this member after the last flush issued to it: a
    /// superblock must not be written over it before a flush (md's PREFLUSH).
    pub(super) unflushed: bool,
    /// A write took sectors off its bad-block list since the last superblock preflush issued to
    /// it: the log that no longer lists them must not land before that write is durable, so its
    /// superblock write (which carries the log) waits for another preflush. (Only a preflush
    /// clears it: it is the one flush known to complete before the superblock write.)
    pub(super) made_good: bool,
    /// md's Replacement: rebuilt to take over the slot of the in-sync member holding the same
    /// role (array/replacement.rs).
    pub(super) replacement: bool,
    /// md's WantReplacement: a spare is to be rebuilt as its replacement.
    pub(super) want_replacement: bool,
    /// The spare that `replace` named for it (mdadm's `--with`), if any.
    pub(super) replace_with: Option<u8>,
}

impl Member {
    /// An empty position.
    pub(super) const ABSENT: Member = Member {
        state: MemberState::Absent,
        role: Role::Faulty,
        write_mostly: false,
        rank_wm: false,
        failfast: false,
        in_flight: 0,
        pending: 0,
        next_seq: 0,
        corrected: 0,
        unflushed: false,
        made_good: false,
        replacement: false,
        want_replacement: false,
        replace_with: None,
    };
    /// A device is there and not faulty.
    pub(super) fn present(&self) -> bool {
        !matches!(self.state, MemberState::Absent | MemberState::Faulty)
    }
    /// In sync.
    pub(super) fn in_sync(&self) -> bool {
        matches!(self.state, MemberState::InSync)
    }
    /// Holds valid data for `[sector, end)`.
    pub(super) fn readable(&self, end: Sector) -> bool {
        match self.state {
            MemberState::InSync => true,
            MemberState::Recovering {
                recovery_offset, ..
            } => recovery_offset >= end,
            _ => false,
        }
    }
    /// Receives writes (in-sync or recovering).
    pub(super) fn writable(&self) -> bool {
        matches!(
            self.state,
            MemberState::InSync | MemberState::Recovering { .. }
        )
    }
}

impl<'b, const M: usize, const R: usize, const S: usize> Array<'b, M, R, S> {
    /// In-sync members.
    pub(super) fn in_sync_count(&self) -> u16 {
        self.members.iter().filter(|m| m.in_sync()).count() as u16
    }

    /// Whether member `i` is the last in-sync member that does not lag while others do (after
    /// a crash with write-behind, until the resync ends: the lagging ones may lack
    /// acknowledged writes, so this one holds the only copy of some). Neither `fail_member`
    /// nor a FailFast read error fails it.
    pub(super) fn last_up_to_date(&self, i: usize) -> bool {
        let up_to_date = |j: usize, x: &Member| x.in_sync() && self.sb.lagging & bit(j) == 0;
        self.members.get(i).is_some_and(|m| up_to_date(i, m))
            && !self
                .members
                .iter()
                .enumerate()
                .any(|(j, x)| j != i && up_to_date(j, x))
            && !planted::on(Bug::TrustLagging)
    }

    /// Every member's WriteMostly counts for the source order again (`Member::rank_wm`): no
    /// region is waiting for its resync, or one begins now.
    pub(super) fn settle_rank_wm(&mut self) {
        for m in self.members.iter_mut() {
            m.rank_wm = m.write_mostly;
        }
    }

    /// Fewer in-sync members than slots.
    pub(super) fn degraded(&self) -> bool {
        self.in_sync_count() < self.raid_disks
    }

    /// What member `i` holds at `sector` (at most `len` sectors): good or bad, and how far.
    pub(super) fn run_at(&self, i: usize, sector: Sector, len: u32) -> Run {
        if planted::on(Bug::IgnoreBadBlocks) {
            // Planted bug: every member looks good everywhere.
            return Run::Good(len);
        }
        // Without the feature no list is ever lent: every member is good everywhere.
        if cfg!(not(feature = "bad-block-log")) {
            return Run::Good(len);
        }
        match self.bad.get(i).map(|b| b.as_slice()) {
            Some(list) if !list.is_empty() => badblocks::run_at(list, sector, len),
            _ => Run::Good(len),
        }
    }

    /// Whether member `i` lists none of `[sector, +len)` as bad.
    pub(super) fn good_for(&self, i: usize, sector: Sector, len: u32) -> bool {
        matches!(self.run_at(i, sector, len), Run::Good(n) if n >= len)
    }

    /// A write of `[sector, +sectors)` failed on member `i`: records the range in its bad-block
    /// list (md's narrow_write_error, which keeps the member) and asks for the superblock round
    /// that writes the log. Returns false, recording nothing, when the member is not written to,
    /// has no log (no storage lent) or its log is full: the member must then fail.
    /// Without the `bad-block-log` feature no member has a log: always false.
    pub(super) fn record_bad(&mut self, i: usize, sector: Sector, sectors: u32) -> bool {
        if !self.note_bad(i, sector, sectors) {
            return false;
        }
        // md sets WantReplacement on a member that saw a write error: a spare, when there is
        // one, is rebuilt to take over from it.
        if let Some(m) = self
            .members
            .get_mut(i)
            .filter(|_| cfg!(feature = "replacement"))
        {
            m.want_replacement = true;
        }
        true
    }

    /// Records `[sector, +sectors)` in member `i`'s bad-block list (md's rdev_set_badblocks)
    /// and asks for the superblock round that writes the log. False, recording nothing, as
    /// `record_bad`.
    pub(super) fn note_bad(&mut self, i: usize, sector: Sector, sectors: u32) -> bool {
        if cfg!(not(feature = "bad-block-log"))
            || !self.members.get(i).is_some_and(|m| m.writable())
        {
            return false;
        }
        let Some(b) = self.bad.get_mut(i) else {
            return false;
        };
        if !b.record(sector, sectors) {
            return false;
        }
        self.want_sb();
        self.emit(Event::BadBlocksRecorded {
            member: MemberId(i as u8),
            sector,
            sectors,
        });
        true
    }

    /// Whether member `i`'s bad-block log on disk lists nothing in `[sector, +sectors)`: none
    /// of it is on its list here, and no sector taken off the list since is missing from the
    /// log its last superblock write put on disk (`SbUpdate::log_stale`).
    pub(super) fn log_clear_on_disk(&self, i: usize, sector: Sector, sectors: u32) -> bool {
        !cfg!(feature = "bad-block-log")
            || planted::on(Bug::BehindOverStaleLog)
            || (self.sb.log_stale & bit(i) == 0
                && self.run_at(i, sector, sectors) == Run::Good(sectors))
    }

    /// A write (or discard, or sync write) of `[sector, +sectors)` succeeded on member `i`:
    /// those sectors hold good data now (md's R1BIO_MadeGood / rdev_clear_badblocks).
    pub(super) fn clear_bad(&mut self, i: usize, sector: Sector, sectors: u32) {
        if cfg!(not(feature = "bad-block-log")) {
            return;
        }
        if let Some(b) = self.bad.get_mut(i) {
            if !b.as_slice().is_empty() && b.clear(sector, sectors) {
                if let Some(m) = self.members.get_mut(i) {
                    m.made_good = true;
                }
                self.sb.log_stale |= bit(i);
                self.sb.log_sent &= !bit(i);
            }
        }
    }
}
