//! One sync window: md's raid1_sync_request, end_sync_read, process_checks,
//! fix_sync_read_error, sync_request_write and end_sync_write (drivers/md/raid1.c).
//!
//! A window waits in `Raise` for its bucket to drain, then is worked in pieces on which every
//! in-sync member is wholly good or wholly bad (md cuts its sync request at the next bad-block
//! transition). Resync and recovery read one source (the first in-sync member, slot order; the
//! next one if that read fails) and write the targets; check and repair read every good in-sync
//! member, ask the frontend to compare each with the reference, count mismatches and (repair)
//! rewrite the differing ones. Sync writes are FUA.

use super::*;

/// The piece, in sectors, a sync read no member could answer is retried in before what fails
/// is recorded as bad (md's fix_sync_read_error works a page at a time: 4 KiB).
const LOST_GRAIN: u32 = 8;

impl<'b, const M: usize, const R: usize, const S: usize> Array<'b, M, R, S> {
    /// Moves window `wi` as far as it can go: raise (raid1_sync_request), read, compare
    /// (end_sync_read, process_checks, fix_sync_read_error), write (sync_request_write,
    /// end_sync_write).
    pub(super) fn step_window(&mut self, wi: usize, action: SyncAction) {
        let Some(&SyncWindow {
            phase,
            sector: w_sector,
            sectors: w_sectors,
            ops: w_ops,
            outstanding,
            tried: w_tried,
            cmp_pending,
            write_to,
            end: w_end,
            ..
        }) = self.windows.get(wi)
        else {
            return;
        };
        let end = w_sector + Sector::from(w_sectors);
        match phase {
            WPhase::Free => {}
            WPhase::Raise => {
                if self.sync.interrupted {
                    self.close_window(wi);
                    return;
                }
                let b = self.sector_bucket(w_sector);
                if self.barrier.frozen > 0
                    || self.barrier.buckets.get(b).is_some_and(|x| x.pending > 0)
                {
                    return;
                }
                // The window is worked in pieces on which every in-sync member is wholly good or
                // wholly bad (md's sync_request cuts its request at the next good/bad
                // transition): a member's bad blocks are never a source, never compared.
                let mut sector = w_sector;
                let mut tried = w_tried;
                loop {
                    let left = u32::try_from(w_end.saturating_sub(sector)).unwrap_or(u32::MAX);
                    if left == 0 {
                        self.close_window(wi);
                        return;
                    }
                    let narrow = self.windows.get(wi).is_some_and(|x| x.narrow);
                    let mut len = left;
                    if narrow {
                        len = len.min(LOST_GRAIN - (sector % Sector::from(LOST_GRAIN)) as u32);
                    }
                    let mut in_sync = 0u32;
                    let mut good = 0u32;
                    for (i, m) in self.members.iter().enumerate() {
                        if m.in_sync() {
                            let run = self.run_at(i, sector, left);
                            len = len.min(run.len().max(1));
                            in_sync |= bit(i);
                            if matches!(run, Run::Good(_)) {
                                good |= bit(i);
                            }
                        }
                    }
                    // A resync or recovery never reads a lagging member where it may lack
                    // acknowledged writes while one that does not lag holds good data there
                    // (`lag_risk`): its data would be written over the copies that have them
                    // (the member that failed the read among them). (The piece is cut where
                    // any in-sync member turns good or bad, so no limit applies.)
                    let shun = match action {
                        SyncAction::Check | SyncAction::Repair => 0,
                        _ => self.lag_risk(sector, len).0,
                    };
                    // The members to read: every good one (check, repair), else the source.
                    let reads = match action {
                        SyncAction::Check | SyncAction::Repair => good,
                        _ => self.first_in_sync(tried | !good | shun).map_or(0, bit),
                    };
                    if reads != 0 {
                        if let Some(x) = self.windows.get_mut(wi) {
                            x.sector = sector;
                            x.sectors = len;
                            x.tried = tried;
                            for (i, o) in x.ops.iter_mut().enumerate() {
                                *o = if reads & bit(i) != 0 {
                                    Op::Queued(MemberOp::Read)
                                } else {
                                    Op::Idle
                                };
                            }
                            x.outstanding = count(reads) as u16;
                            x.phase = WPhase::Read;
                            self.moves = self.moves.wrapping_add(1);
                        }
                        return;
                    }
                    // Nothing to read the piece from: every in-sync member left to try (a lagging
                    // one shunned is not) lists it as bad, or each one's read of it failed. A check
                    // or repair has nothing to compare there and moves on. A resync or recovery
                    // does what md does (raid1_sync_request, fix_sync_read_error): a piece that
                    // failed to read is first retried page by page, then a page no member can
                    // read, or one every source lists as bad, is recorded as bad on the members
                    // it was to be written to, and on those whose read of it failed, and the sync
                    // goes on: the rebuilt member never serves data it did not receive, and no
                    // read returns what nobody could read. Where that cannot be recorded (no log,
                    // or a full one) the sync stops, as md's recovery_disabled; it is tried again
                    // at the next reconfiguration. (Without the `bad-block-log` feature no list
                    // is lent, so nothing is read only because every member left lists it bad,
                    // and nothing can be recorded: the sync stops.)
                    let bad_only = cfg!(feature = "bad-block-log") && in_sync & !tried & !shun != 0;
                    let moves_on = match action {
                        SyncAction::Check | SyncAction::Repair => bad_only,
                        _ if cfg!(not(feature = "bad-block-log")) => false,
                        _ if tried != 0
                            && !narrow
                            && len > LOST_GRAIN
                            && !planted::on(Bug::LostWide) =>
                        {
                            if let Some(x) = self.windows.get_mut(wi) {
                                x.narrow = true;
                                x.tried = 0;
                                self.moves = self.moves.wrapping_add(1);
                            }
                            tried = 0;
                            continue;
                        }
                        _ => {
                            let failed = if tried != 0 { tried | shun } else { 0 };
                            self.record_lost(sector, len, in_sync & failed)
                        }
                    };
                    if !moves_on {
                        self.sync.interrupted = true;
                        self.sync_blocked = true;
                        self.close_window(wi);
                        return;
                    }
                    sector = sector.saturating_add(Sector::from(len));
                    tried = 0;
                    if let Some(x) = self.windows.get_mut(wi) {
                        x.sector = sector;
                        self.moves = self.moves.wrapping_add(1);
                        x.sectors = 0;
                        x.tried = 0;
                    }
                }
            }
            WPhase::Read if outstanding == 0 => {
                match action {
                    SyncAction::Check | SyncAction::Repair => {
                        // (slot, member) of the reference: the lowest slot (u16::MAX for none),
                        // u32::MAX while no read succeeded.
                        let mut ref_member = (u32::MAX, 0);
                        let mut failed = 0u32;
                        let mut okm = 0u32;
                        for (i, o) in w_ops.iter().enumerate() {
                            let slot = match self.members.get(i).map(|m| m.role) {
                                Some(Role::Active(s)) => s,
                                _ => u16::MAX,
                            };
                            match o {
                                Op::Ok => {
                                    okm |= bit(i);
                                    if u32::from(slot) < ref_member.0 {
                                        ref_member = (u32::from(slot), i);
                                    }
                                }
                                Op::Err => failed |= bit(i),
                                _ => {}
                            }
                        }
                        let (reference, r) = ref_member;
                        if reference == u32::MAX {
                            self.sync.interrupted = true;
                            self.sync_blocked = true;
                            self.close_window(wi);
                            return;
                        }
                        let others = okm & !bit(r);
                        self.sync.mismatches = self
                            .sync
                            .mismatches
                            .saturating_add(u64::from(w_sectors) * u64::from(count(failed)));
                        if let Some(x) = self.windows.get_mut(wi) {
                            x.src = r as u8;
                            x.cmp_issue = others;
                            x.cmp_pending = others;
                            x.write_to = failed;
                            x.ops = [Op::Idle; M];
                            x.phase = WPhase::Compare;
                            self.moves = self.moves.wrapping_add(1);
                        }
                    }
                    _ => {
                        let src = w_ops.iter().position(|o| matches!(o, Op::Ok | Op::Err));
                        let Some(src) = src else {
                            self.close_window(wi);
                            return;
                        };
                        if matches!(w_ops.get(src), Some(Op::Err)) {
                            // Try another source; the failed one gets the good data written back.
                            if let Some(x) = self.windows.get_mut(wi) {
                                x.tried |= bit(src);
                                x.phase = WPhase::Raise;
                                self.moves = self.moves.wrapping_add(1);
                                x.ops = [Op::Idle; M];
                            }
                            self.step_window(wi, action);
                            return;
                        }
                        let mut targets = 0u32;
                        for (i, m) in self.members.iter().enumerate() {
                            if i == src {
                                continue;
                            }
                            let want = match action {
                                SyncAction::Recovery => {
                                    matches!(m.state, MemberState::Recovering { recovery_offset, .. } if recovery_offset < end)
                                        || (w_tried & bit(i) != 0 && m.in_sync())
                                }
                                // md's resync leaves an in-sync member's bad blocks alone (no
                                // bio at all for it there); it writes the rest.
                                _ => {
                                    m.writable()
                                        && !(m.in_sync()
                                            && matches!(
                                                self.run_at(i, w_sector, w_sectors),
                                                Run::Bad(_)
                                            ))
                                }
                            };
                            if want {
                                targets |= bit(i);
                            }
                        }
                        if let Some(x) = self.windows.get_mut(wi) {
                            x.src = src as u8;
                            x.write_to = targets;
                            x.ops = [Op::Idle; M];
                            x.phase = WPhase::Compare;
                            self.moves = self.moves.wrapping_add(1);
                        }
                    }
                }
                self.step_window(wi, action);
            }
            WPhase::Compare if cmp_pending == 0 => {
                let mut n = 0;
                let mut in_sync = false;
                for (i, m) in self.members.iter().enumerate() {
                    in_sync |= write_to & bit(i) != 0 && m.writable() && m.in_sync();
                }
                // A write to an in-sync member (resync, repair) may fail and tear its block in
                // a chunk no write marked: failed, the member keeps that block, and a re-add
                // guided by the bitmap would skip the chunk. Its bits go to disk before the
                // write goes out, as a request's do: set once the failure is known instead,
                // they could land after the superblock recording it, and a power cut in
                // between re-added the member in sync over the torn block.
                let need_bm = if in_sync {
                    self.bitmap_start_write(w_sector, w_sectors)
                } else {
                    0
                };
                if let Some(x) = self.windows.get_mut(wi) {
                    for (i, o) in x.ops.iter_mut().enumerate() {
                        *o = if write_to & bit(i) != 0
                            && self.members.get(i).is_some_and(|m| m.writable())
                        {
                            n += 1;
                            Op::Queued(MemberOp::Write)
                        } else {
                            Op::Idle
                        };
                    }
                    x.need_bm = need_bm;
                    x.outstanding = n;
                    x.phase = WPhase::Write;
                    self.moves = self.moves.wrapping_add(1);
                }
                if n == 0 {
                    self.finish_piece(wi, action);
                }
            }
            WPhase::Write if outstanding == 0 => {
                for (i, o) in w_ops.iter().enumerate() {
                    match o {
                        // A member failed here keeps what the write left (its old block, or
                        // one the write tore): an in-sync one in a chunk whose bits are on
                        // disk (see `Compare`), a recovering one beyond its recovery offset.
                        Op::Err => {
                            self.fail_internal(i);
                        }
                        // Written from a source with good data there (md's end_sync_write
                        // marks it made good).
                        Op::Ok => self.clear_bad(i, w_sector, w_sectors),
                        _ => {}
                    }
                }
                self.finish_piece(wi, action);
            }
            _ => {}
        }
    }

    /// The piece in progress of a sync window is done: go on with the rest of the window (a
    /// bad-block transition cut it), or close it.
    fn finish_piece(&mut self, wi: usize, action: SyncAction) {
        let Some(&SyncWindow {
            sector,
            sectors,
            end,
            ..
        }) = self.windows.get(wi)
        else {
            return;
        };
        let next = sector.saturating_add(Sector::from(sectors));
        // Without the `bad-block-log` feature a piece is always the whole rest of its window.
        if cfg!(not(feature = "bad-block-log")) || self.sync.interrupted || next >= end {
            self.close_window(wi);
            return;
        }
        if let Some(x) = self.windows.get_mut(wi) {
            let generation = x.generation.wrapping_add(1);
            let narrow = x.narrow;
            *x = SyncWindow::FREE;
            x.narrow = narrow;
            x.generation = generation;
            x.phase = WPhase::Raise;
            self.moves = self.moves.wrapping_add(1);
            x.sector = next;
            x.sectors = u32::try_from(end - next).unwrap_or(u32::MAX);
            x.end = end;
        }
        self.step_window(wi, action);
    }

    /// Closes window `wi` and lowers its barrier: that of the barrier unit it was raised in.
    /// A window never crosses a unit, but its `sector` moves with its pieces, and a bad-block
    /// piece skipped at its end leaves it at `end`, the next unit's first sector (lowering
    /// there left the window's own unit barred for good: soak seed 9004427). `end - 1` is
    /// always in the window's unit.
    fn close_window(&mut self, wi: usize) {
        let Some(&SyncWindow { sector, end, .. }) = self.windows.get(wi) else {
            return;
        };
        let raised_in = if planted::on(Bug::BarrierAtPiece) {
            sector
        } else {
            end.saturating_sub(1)
        };
        self.lower_barrier(raised_in);
        if let Some(w) = self.windows.get_mut(wi) {
            w.phase = WPhase::Free;
            self.moves = self.moves.wrapping_add(1);
        }
    }

    /// No member could give `[sector, +sectors)` to a resync or recovery: records it as bad on
    /// every member it was to be written to (a member being rebuilt below the piece's end) and
    /// on the in-sync members in `failed` (whose read of it failed, or that were shunned as
    /// lagging: a stale copy must not be served either). Returns false if any record failed:
    /// the sync cannot pass the piece.
    fn record_lost(&mut self, sector: Sector, sectors: u32, failed: u32) -> bool {
        let end = sector.saturating_add(Sector::from(sectors));
        let mut ok = true;
        for i in 0..self.members.len() {
            let to = match self.members.get(i).map(|m| m.state) {
                Some(MemberState::Recovering {
                    recovery_offset, ..
                }) => recovery_offset < end,
                Some(MemberState::InSync) => failed & bit(i) != 0,
                _ => false,
            };
            if to && !planted::on(Bug::LostUnrecorded) {
                ok &= self.note_bad(i, sector, sectors);
            }
        }
        ok
    }

    /// The source: the in-sync member outside `exclude` in the lowest slot, one that is not
    /// WriteMostly first (md's raid1_sync_request takes a WriteMostly member only when no
    /// other can serve: with write-behind it may lack acknowledged writes after a crash).
    fn first_in_sync(&self, exclude: u32) -> Option<usize> {
        self.first_in_sync_by_slot(exclude)
    }

    /// Member `mi` answered member I/O of sync window `index` (end_sync_read / end_sync_write):
    /// `None` if no such I/O is in flight (nothing changed), else whether other member I/O of
    /// the window is still busy.
    pub(super) fn end_sync_io(
        &mut self,
        generation: u16,
        index: usize,
        mi: usize,
        ok: bool,
    ) -> Option<bool> {
        let w = self.windows.get_mut(index)?;
        if w.generation != generation || w.phase == WPhase::Free {
            return None;
        }
        answer_op(&mut w.ops, &mut w.outstanding, mi, ok).map(|(_, quick)| quick)
    }

    /// Next compare or member I/O of a sync window.
    pub(super) fn poll_sync_io(&mut self) -> Option<IoCmd<M>> {
        let bm_done = self.bitmap.done;
        for (wi, w) in self.windows.iter_mut().enumerate() {
            // Writes wait for the round carrying their bits (`step_window`, `Compare`).
            if w.phase == WPhase::Free
                || w.phase == WPhase::Raise
                || (w.phase == WPhase::Write
                    && bm_done < w.need_bm
                    && !planted::on(Bug::WriteBeforeSyncBits))
            {
                continue;
            }
            if w.phase == WPhase::Compare && w.cmp_issue != 0 {
                let other = w.cmp_issue.trailing_zeros() as usize;
                w.cmp_issue &= !bit(other);
                return Some(IoCmd::Compare {
                    tag: tag(CLASS_CMP, w.generation, wi as u32, other as u8),
                    a: Buffer::Sync {
                        window: wi as u16,
                        member: MemberId(w.src),
                    },
                    b: Buffer::Sync {
                        window: wi as u16,
                        member: MemberId(other as u8),
                    },
                    sectors: w.sectors,
                });
            }
            for mi in 0..M {
                let Some(Op::Queued(op)) = w.ops.get(mi).copied() else {
                    continue;
                };
                if let Some(o) = w.ops.get_mut(mi) {
                    *o = Op::InFlight(op);
                }
                if let Some(m) = self.members.get_mut(mi) {
                    m.in_flight += 1;
                }
                let bufm = if op == MemberOp::Read {
                    mi as u8
                } else {
                    w.src
                };
                return Some(IoCmd::Member(MemberIo {
                    tag: tag(CLASS_SYNC, w.generation, wi as u32, mi as u8),
                    member: MemberId(mi as u8),
                    op,
                    sector: w.sector,
                    sectors: w.sectors,
                    buffer: Buffer::Sync {
                        window: wi as u16,
                        member: MemberId(bufm),
                    },
                    fua: op == MemberOp::Write,
                }));
            }
        }
        None
    }

    /// The frontend compared member `member`'s buffer of window `index` with the reference's
    /// (process_checks' memcmp): a difference counts the piece as mismatched and, in a repair,
    /// makes the member a write target. `None` if no such compare is pending.
    pub(super) fn end_compare(
        &mut self,
        generation: u16,
        index: usize,
        member: u8,
        equal: bool,
    ) -> Option<()> {
        let b = bit(usize::from(member));
        let w = self.windows.get_mut(index)?;
        if w.generation != generation || w.phase != WPhase::Compare || w.cmp_pending & b == 0 {
            return None;
        }
        w.cmp_pending &= !b;
        if !equal {
            self.sync.mismatches = self.sync.mismatches.saturating_add(u64::from(w.sectors));
            if matches!(self.sync.action, Some(SyncAction::Repair)) {
                w.write_to |= b;
            }
        }
        Some(())
    }
}
