//! Write-behind: md's R1BIO_BehindIO (drivers/md/raid1.c, raid1_write_request and
//! raid1_end_write_request) and the bitmap's `behind_writes` limit (md-bitmap.c).
//!
//! With a bitmap and [`Config::write_behind`] set, a write to a WriteMostly member may end
//! after the write is acknowledged: the acknowledgement comes once every other member answered,
//! each successfully, at least one of them in sync, and every failure record so far is on disk.
//! The request keeps its slot, its barrier and its bitmap bits until the behind writes end, so
//! the array is not marked clean and no bit is cleared before the WriteMostly member has the
//! data; after a crash the bits resync the chunk from a member that is not WriteMostly (resync
//! and reads of a region not yet resynced prefer those, as md's sync source does). A read never
//! goes to a member while a behind write over its range is in flight there: it goes elsewhere
//! or waits. At most `write_behind` writes are behind at once; beyond that writes wait for
//! every member, as without write-behind.

use super::*;

impl<'b, const M: usize, const R: usize, const S: usize> Array<'b, M, R, S> {
    /// The members a write fanned out now may leave behind: in-sync WriteMostly members, when
    /// write-behind is on, the array has a bitmap, fewer than `write_behind` writes are behind
    /// and an in-sync member that is not WriteMostly takes the write too.
    pub(super) fn behind_members(&self) -> u32 {
        let limit = usize::from(self.cfg.write_behind);
        if limit == 0 || self.bitmap.bits.is_none() || self.behind_in_flight() >= limit {
            return 0;
        }
        let mut slow = 0u32;
        let mut fast = false;
        for (i, m) in self.members.iter().enumerate() {
            if !m.in_sync() {
                continue;
            }
            if m.write_mostly {
                slow |= bit(i);
            } else {
                fast = true;
            }
        }
        if fast { slow } else { 0 }
    }

    /// Writes whose behind member I/O is still queued or in flight (md's `behind_writes`).
    fn behind_in_flight(&self) -> usize {
        self.reqs
            .iter()
            .filter(|r| r.phase != Phase::Free && r.behind != 0 && self.behind_pending(r) != 0)
            .count()
    }

    /// Members of `r.behind` whose write is still queued or in flight.
    fn behind_pending(&self, r: &R1Bio<M>) -> u32 {
        let mut pending = 0u32;
        for (i, o) in r.ops.iter().enumerate() {
            if r.behind & bit(i) != 0 && matches!(o, Op::Queued(_) | Op::InFlight(_)) {
                pending |= bit(i);
            }
        }
        pending
    }

    /// Members with a behind write over `[sector, +sectors)` still queued or in flight: a read
    /// there could return the old data.
    pub(super) fn behind_over(&self, sector: Sector, sectors: u32) -> u32 {
        if self.cfg.write_behind == 0 {
            return 0;
        }
        let mut members = 0u32;
        for r in self.reqs.iter() {
            if r.phase != Phase::Free && r.behind != 0 && r.overlaps(sector, sectors) {
                members |= self.behind_pending(r);
            }
        }
        members
    }

    /// Request `ri` may be acknowledged while its behind writes go on (raid1_end_write_request's
    /// "maybe we can return now"): every other member answered, each successfully, one of them
    /// in sync, and every failure record so far is on disk. Otherwise it ends as any write, once
    /// all members answered.
    pub(super) fn ack_behind(&mut self, ri: usize) {
        let Some(r) = self.reqs.get(ri).copied() else {
            return;
        };
        if r.phase != Phase::Run || r.req.op != RequestOp::Write || r.acked {
            return;
        }
        let mut in_sync_ok = false;
        for (i, o) in r.ops.iter().enumerate() {
            if r.behind & bit(i) != 0 {
                continue;
            }
            match o {
                Op::Idle => {}
                Op::Ok => in_sync_ok |= self.members.get(i).is_some_and(|m| m.in_sync()),
                _ => return,
            }
        }
        if !in_sync_ok || self.with_failure_records(r.need_sb) > self.sb.durable {
            return;
        }
        if let Some(x) = self.reqs.get_mut(ri) {
            x.acked = true;
            self.moves = self.moves.wrapping_add(1);
        }
    }

    /// Requests acknowledged while their behind writes go on.
    pub(super) fn acked_behind(&self) -> u16 {
        self.reqs
            .iter()
            .filter(|r| r.phase != Phase::Free && r.acked)
            .count() as u16
    }
}
