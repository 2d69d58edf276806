//! Member failure: md's md_error and raid1_error (drivers/md/md.c, raid1.c).
//!
//! A member that fails an I/O is marked faulty, the failure is recorded in a superblock round
//! that every write acknowledged afterwards waits for (md's `Blocked` rdev and
//! `MD_SB_CHANGE_PENDING`), its queued I/O is cancelled and any sync is interrupted
//! (`MD_RECOVERY_INTR`). The last in-sync member is never failed (raid1_error's "don't fail the
//! last drive"): the array is marked broken and the error goes to the caller instead.

use super::*;

impl<'b, const M: usize, const R: usize, const S: usize> Array<'b, M, R, S> {
    /// Marks member `i` faulty unless it is the last in-sync one. Returns whether it failed.
    pub(super) fn fail_internal(&mut self, i: usize) -> bool {
        let last = self.in_sync_count() == 1;
        let Some(m) = self.members.get_mut(i) else {
            return false;
        };
        if !m.present() {
            return false;
        }
        if m.in_sync() && last {
            self.broken = true;
            self.emit(Event::LastMemberError(MemberId(i as u8)));
            return false;
        }
        self.mark_faulty(i);
        self.emit(Event::MemberFailed(MemberId(i as u8)));
        let in_sync = self.in_sync_count();
        self.emit(Event::Degraded {
            in_sync,
            raid_disks: self.raid_disks,
        });
        true
    }

    /// Marks member `i` faulty (it is present): a replacement being rebuilt for its slot takes
    /// the slot over, the change is recorded in a superblock round that every write
    /// acknowledged from now on waits for, its queued I/O is cancelled and any sync interrupted.
    pub(super) fn mark_faulty(&mut self, i: usize) {
        let Some(m) = self.members.get_mut(i) else {
            return;
        };
        let role = m.role;
        let replacement = m.replacement;
        m.state = MemberState::Faulty;
        m.role = Role::Faulty;
        m.replacement = false;
        m.want_replacement = false;
        m.replace_with = None;
        if cfg!(feature = "replacement") && !replacement {
            self.promote_replacement(role);
        }
        self.want_sb();
        self.fail_gen = self.sb.wanted;
        // Cancel queued (not yet issued) ops on it.
        self.withdraw_queued_metadata(i);
        for (ri, r) in self.reqs.iter_mut().enumerate() {
            if let Some(Op::Queued(_)) = r.ops.get(i) {
                if let Some(o) = r.ops.get_mut(i) {
                    *o = Op::Err;
                }
                r.outstanding = r.outstanding.saturating_sub(1);
                self.ready.insert(ri);
                self.req_queued = self.req_queued.saturating_sub(1);
                if let Some(m) = self.members.get_mut(i) {
                    m.pending = m.pending.saturating_sub(1);
                }
            }
        }
        for w in self.windows.iter_mut() {
            if let Some(Op::Queued(_)) = w.ops.get(i) {
                if let Some(o) = w.ops.get_mut(i) {
                    *o = Op::Err;
                }
                w.outstanding = w.outstanding.saturating_sub(1);
            }
        }
        self.interrupt_sync();
        self.sync_blocked = false;
    }

    /// A metadata write (superblock, its preflush, a bitmap page) failed on member `i`: fails
    /// the member, and returns true when it could not because it is the last in-sync member,
    /// so the round is on no disk that assembly trusts.
    pub(super) fn metadata_write_failed_on_last(&mut self, i: usize) -> bool {
        !self.fail_internal(i) && self.members.get(i).is_some_and(|m| m.in_sync())
    }

    /// Withdraws the superblock, preflush, internal flush and bitmap writes queued (not yet
    /// polled) for member `i`.
    pub(super) fn withdraw_queued_metadata(&mut self, i: usize) {
        let b = bit(i);
        if (self.sb.issue | self.sb.preflush_issue | self.sb.deferred | self.sb.after_first) & b
            != 0
        {
            self.sb.issue &= !b;
            self.sb.preflush_issue &= !b;
            self.sb.deferred &= !b;
            self.sb.after_first &= !b;
            self.sb.outstanding = self.sb.outstanding.saturating_sub(1);
        }
        if self.flush.issue & b != 0 {
            self.flush.issue &= !b;
            self.flush.outstanding = self.flush.outstanding.saturating_sub(1);
        }
        for p in self.bitmap.issue.iter_mut() {
            if *p & b != 0 {
                *p &= !b;
                self.bitmap.outstanding = self.bitmap.outstanding.saturating_sub(1);
            }
        }
    }
}
