//! Read balancing: which member serves a read (md's read_balance, drivers/md/raid1.c).
//!
//! The kernel's order, kept here: in a region not yet resynced only the first in-sync mirror is
//! authoritative (`choose_first_rdev`); otherwise a member with no bad block in the range and not
//! write-mostly, by sequential affinity then fewest pending requests (`choose_best_rdev`); else
//! the longest good prefix (`choose_bb_rdev`); write-mostly members last (`choose_slow_rdev`).
//! Bad-block lookups are `raid1_check_read_range`'s, through [`Array::run_at`].

use super::*;

impl<'b, const M: usize, const R: usize, const S: usize> Array<'b, M, R, S> {
    /// md's read_balance. Returns the member to read `[sector, +sectors)` from and how many
    /// sectors of it that member can serve (less than `sectors` when every candidate has a
    /// bad block in the range: the caller reads that prefix and balances the rest again).
    /// `None` when no member can serve even the first sector.
    pub(super) fn read_balance(
        &self,
        sector: Sector,
        sectors: u32,
        exclude: u32,
    ) -> Option<(usize, u32)> {
        let end = sector.saturating_add(Sector::from(sectors));
        // Not yet resynced: only the first in-sync mirror (slot order) is authoritative. As md's
        // choose_first_rdev, one whose first sector is bad is passed over for the next one,
        // which serves the good prefix it has.
        if self.resync_cp < end {
            // Write-behind after a crash: a lagging member may lack acknowledged writes in a
            // dirty chunk, so there it serves nothing while a member that does not lag holds
            // good data, even one that cannot serve this read now (excluded after an error):
            // the read fails rather than return what was overwritten (and the read-error path
            // would write it back over the good copy). Where no such member is left, or each
            // lists a bad block, the lagging copies are the best there are (`lag_risk`).
            let (shun, limit) = self.lag_risk(sector, sectors);
            // (rank, member, good sectors); no rank is u32::MAX (see `source_rank`).
            let mut best = (u32::MAX, 0, 0);
            for (i, m) in self.members.iter().enumerate() {
                if shun & bit(i) != 0 {
                    continue;
                }
                // A member being rebuilt serves what it holds already (md's choose_first_rdev
                // takes one whose recovery_offset is past the range): there it holds every
                // write the in-sync members took, and it may be the only good copy (a read
                // fix's write-back torn by a power cut on the member it rebuilds from,
                // `write_back`). It serves the prefix it holds, as a member with a bad block
                // does, so that each sector's source is the same whatever the read's range,
                // and stays the same as the rebuild goes on: the resync, once the rebuild is
                // done, copies from the member that ranks first.
                let held = self.held_from(m, sector, sectors);
                if let (true, true, Role::Active(s)) = (held > 0, exclude & bit(i) == 0, m.role) {
                    // The resync's own source order (`first_in_sync_by_slot`): with
                    // write-behind, members that may lack acknowledged writes last.
                    let key = self.source_rank(i, m, s);
                    let mut good = self.run_at(i, sector, sectors).good().min(held);
                    if self.sb.lagging & bit(i) != 0 {
                        good = good.min(limit);
                    }
                    if good > 0 && key < best.0 {
                        best = (key, i, good);
                    }
                }
            }
            return (best.0 != u32::MAX).then_some((best.1, best.2));
        }
        let ok = |i: usize, m: &Member| m.readable(end) && exclude & bit(i) == 0;
        let clean = |i: usize| self.run_at(i, sector, sectors) == Run::Good(sectors);
        // md's choose_best_rdev: members without a bad block in the range, not write-mostly.
        // Sequential affinity first.
        for (i, m) in self.members.iter().enumerate() {
            if ok(i, m) && !m.write_mostly && m.next_seq == sector && sector != 0 && clean(i) {
                return Some((i, sectors));
            }
        }
        // md's choose_best_rdev (fewest pending requests) then choose_bb_rdev (the longest
        // good prefix) among the members not write-mostly; then, as choose_slow_rdev, the same
        // two among all of them (write-mostly members as a last resort). (Without the
        // `bad-block-log` feature every member is good everywhere: the first loop takes the
        // first candidate, if any, and the second finds nothing.)
        for slow in [false, true] {
            let mut best: Option<(u32, usize)> = None;
            for (i, m) in self.members.iter().enumerate() {
                if ok(i, m)
                    && (slow || !m.write_mostly)
                    && best.is_none_or(|(p, _)| m.pending < p)
                    && clean(i)
                {
                    best = Some((m.pending, i));
                }
            }
            if let Some((_, i)) = best {
                return Some((i, sectors));
            }
            let mut longest: Option<(u32, usize)> = None;
            for (i, m) in self.members.iter().enumerate() {
                if cfg!(feature = "bad-block-log") && ok(i, m) && (slow || !m.write_mostly) {
                    let good = self.run_at(i, sector, sectors).good();
                    if good > 0 && longest.is_none_or(|(n, _)| good > n) {
                        longest = Some((good, i));
                    }
                }
            }
            if let Some((n, i)) = longest {
                return Some((i, n));
            }
        }
        None
    }

    /// How many sectors from `sector` (up to `sectors`) member `m` holds as a source of reads
    /// of a region not yet resynced: all of them in sync, those below its recovery_offset
    /// while it is rebuilt.
    fn held_from(&self, m: &Member, sector: Sector, sectors: u32) -> u32 {
        match m.state {
            MemberState::InSync => sectors,
            MemberState::Recovering {
                recovery_offset, ..
            } if recovery_offset > sector && !planted::on(Bug::FirstSkipsRebuilt) => {
                u32::try_from(recovery_offset - sector).map_or(sectors, |n| n.min(sectors))
            }
            _ => 0,
        }
    }

    /// The member that ranks first ([`Array::source_rank`]) among those holding `sector` as a
    /// source of reads of a region not yet resynced (bad blocks and lag aside).
    pub(super) fn first_holding(&self, sector: Sector) -> Option<usize> {
        self.first_ranked(|_, m| self.held_from(m, sector, 1) > 0)
    }

    /// The active member that `keep` takes and that ranks first ([`Array::source_rank`]).
    fn first_ranked(&self, keep: impl Fn(usize, &Member) -> bool) -> Option<usize> {
        let mut best = (u32::MAX, 0);
        for (i, m) in self.members.iter().enumerate() {
            if let (true, Role::Active(s)) = (keep(i, m), m.role) {
                let key = self.source_rank(i, m, s);
                if key < best.0 {
                    best = (key, i);
                }
            }
        }
        (best.0 != u32::MAX).then_some(best.1)
    }

    /// How member `i` ranks as the source of a resync and of reads of a region not yet
    /// resynced (lower first): a member that may lack acknowledged writes (WriteMostly when
    /// the array came up after a crash with write-behind, until the resync ends) last, then
    /// WriteMostly members (md's resync reads the first in-sync mirror that is not
    /// write-mostly), then by slot. WriteMostly ranks last whether or not write-behind is on
    /// now: the limit lives in the bitmap header, and an array whose bitmap was dropped during
    /// the resync that repairs a behind member's lag comes up after the next crash with no
    /// header to say so.
    /// The three keys are packed into one word (lagging, then WriteMostly, above the slot),
    /// which orders as the tuple of them would; it is below 2^18, never u32::MAX.
    pub(super) fn source_rank(&self, i: usize, m: &Member, slot: u16) -> u32 {
        if planted::on(Bug::BehindSource) {
            return u32::from(slot);
        }
        u32::from(self.sb.lagging & bit(i) != 0) << 17
            | u32::from(m.rank_wm) << 16
            | u32::from(slot)
    }

    /// Write-behind after a crash: whether the lagging members (`SbUpdate::lagging`) may serve
    /// `[sector, +sectors)`, where they may lack acknowledged writes when a chunk of it is
    /// dirty. Returns the members that must not (all the lagging ones when a member in sync
    /// that does not lag holds good data at `sector`, even one that cannot serve it now: a
    /// read error, a piece being fixed), and how many sectors a lagging member may serve:
    /// where every member that does not lag lists a bad block, the lagging copy is the best
    /// there is, up to where one of them is good again.
    pub(super) fn lag_risk(&self, sector: Sector, sectors: u32) -> (u32, u32) {
        if planted::on(Bug::TrustLagging)
            || self.sb.lagging == 0
            || !self.chunk_dirty(sector, sectors)
        {
            return (0, sectors);
        }
        let mut limit = sectors;
        for (i, m) in self.members.iter().enumerate() {
            if m.in_sync() && matches!(m.role, Role::Active(_)) && self.sb.lagging & bit(i) == 0 {
                match self.run_at(i, sector, sectors) {
                    Run::Good(_) => return (self.sb.lagging, 0),
                    Run::Bad(n) => limit = limit.min(n),
                }
            }
        }
        (0, limit)
    }

    /// The in-sync member outside `exclude` that ranks first as a source
    /// ([`Array::source_rank`]).
    pub(super) fn first_in_sync_by_slot(&self, exclude: u32) -> Option<usize> {
        self.first_ranked(|i, m| m.in_sync() && exclude & bit(i) == 0)
    }
}
