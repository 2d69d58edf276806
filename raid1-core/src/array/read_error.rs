//! Read errors: md's fix_read_error and handle_read_error (drivers/md/raid1.c).
//!
//! A member read that fails sends its request into the fix phases: wait until no write, sync
//! window or other fix overlaps the range (md freezes the whole array for this,
//! `freeze_array` in handle_read_error; here only the range waits), re-read the piece from
//! another mirror, write the good data back to every mirror that failed (`fix_read_error`'s
//! write-back, FUA here), and count the correction. Writes wait while a fix overlaps them.

use super::*;

impl<'b, const M: usize, const R: usize, const S: usize> Array<'b, M, R, S> {
    /// Member `mi` failed the read piece of request `ri` (raid1_end_read_request handing the
    /// r1bio to handle_read_error): mark it tried and wait for the range to be free.
    pub(super) fn read_error(&mut self, ri: usize, mi: usize) {
        // FailFast: the member fails at once (md's raid1_end_read_request), unless it is the
        // last in-sync one, or the last one that does not lag after a crash with write-behind
        // (the others may lack acknowledged writes: served from them, the read would return
        // what was overwritten); the read is served elsewhere and nothing is written back to it.
        if self
            .members
            .get(mi)
            .is_some_and(|m| m.failfast && m.in_sync())
            && self.in_sync_count() > 1
            && (!self.last_up_to_date(mi) || planted::on(Bug::FailfastOverLag))
            && !self.ro.asked()
            && !planted::on(Bug::FailfastIgnored)
        {
            self.fail_internal(mi);
        }
        if let Some(x) = self.reqs.get_mut(ri) {
            x.tried |= bit(mi);
            x.last_failed = mi as u8;
            x.ops = [Op::Idle; M];
        }
        self.set_phase(ri, Phase::FixWait);
        self.step_request(ri);
    }

    /// Request `ri` waits to re-read: starts once no write, sync window or other fix overlaps it.
    pub(super) fn fix_wait(&mut self, ri: usize) {
        let Some(r) = self.reqs.get(ri).map(|r| r.req) else {
            return;
        };
        // Like md's freeze in handle_read_error: the write-back must not race a normal
        // write or a sync window over the same sectors.
        // Reads admitted before the error that are still out (or queued) over the range drain
        // first, as freeze_array drains them: one may be on its way to the member the
        // write-back is for.
        if self.overlapping_request(ri, r.sector, r.sectors)
            || self.overlapping_sync_io(r.sector, r.sectors)
        {
            return;
        }
        self.fix_read_next(ri);
    }

    /// Re-reads the piece of request `ri` from a mirror not yet tried (fix_read_error's read
    /// loop). None left: the request fails, and the array is broken if an in-sync member failed it.
    fn fix_read_next(&mut self, ri: usize) {
        let Some(r) = self.reqs.get(ri).copied() else {
            return;
        };
        if let Some(x) = self.reqs.get_mut(ri) {
            x.ops = [Op::Idle; M];
        }
        // The piece in progress; a member's bad blocks are never the source here either.
        let sector = r.req.sector.saturating_add(Sector::from(r.done));
        let mut pick = self.read_balance(sector, r.piece, r.tried);
        if pick.is_none() && !r.retried {
            // Every mirror failed once: like md's fix_read_error, which starts its scan at the
            // failing mirror, give each one more chance (errors are often transient).
            if let Some(x) = self.reqs.get_mut(ri) {
                x.retried = true;
            }
            pick = self
                .read_balance(sector, r.piece, bit(usize::from(r.last_failed)))
                .or_else(|| self.read_balance(sector, r.piece, 0));
        }
        match pick {
            Some((mi, n)) => {
                // Another member may serve only a prefix of the piece (bad blocks): fix that
                // prefix; the rest is read afterwards as the next piece.
                if let Some(x) = self.reqs.get_mut(ri) {
                    x.piece = n.min(x.piece);
                }
                self.queue_op(ri, mi, MemberOp::Read);
                self.set_phase(ri, Phase::FixRun);
            }
            None => {
                self.set_phase(ri, Phase::Run);
                for mi in 0..M {
                    if r.tried & bit(mi) != 0 && self.members.get(mi).is_some_and(|m| m.in_sync()) {
                        self.broken = true;
                        self.emit(Event::LastMemberError(MemberId(mi as u8)));
                        break;
                    }
                }
                self.finish(ri, Outcome::IoError)
            }
        }
    }

    /// The piece was re-read from a good mirror: write it back to the mirrors that failed it
    /// (fix_read_error's write-back).
    pub(super) fn write_back(&mut self, ri: usize, r: R1Bio<M>) {
        // Write the good data back to the mirrors that failed.
        if let Some(x) = self.reqs.get_mut(ri) {
            x.ops = [Op::Idle; M];
        }
        let sector = r.req.sector.saturating_add(Sector::from(r.done));
        let mut any = false;
        for mi in 0..M {
            // Read-only: the good data is served, nothing written back (md's IO_BLOCKED).
            if self.ro.asked() && !planted::on(Bug::WriteWhileReadOnly) {
                break;
            }
            // Not to the mirror the piece was re-read from (a retry of the one that failed
            // it): md writes back only to the mirrors scanned before the one that answered.
            // Its own data written back gains nothing, and a power cut may tear the block
            // while no other copy of it is trusted (the member being rebuilt has not got that
            // far).
            let source = matches!(r.ops.get(mi), Some(Op::Ok)) && !planted::on(Bug::FixOwnSource);
            if r.tried & bit(mi) != 0
                && !source
                && self.members.get(mi).is_some_and(|m| m.writable())
            {
                self.queue_op(ri, mi, MemberOp::Write);
                any = true;
            }
        }
        if any {
            // The write-back may fail and tear the block on a mirror that is then failed, in a
            // chunk no write marked: its bits go to disk before the write-back goes out
            // (`poll_request_io` holds it), so that a re-add guided by the bitmap copies the
            // piece again. Set once the failure is known, they could land after the superblock
            // recording it, and a power cut in between re-added the mirror in sync over the
            // torn block (md sets no bit here).
            let need_bm = self.bitmap_start_write(sector, r.piece);
            // The write-back may tear the block on the mirror it repairs (an SD card does not
            // write a sector whole), so it waits until the disks say that the member it was
            // re-read from holds the piece (md writes back at once): a superblock recording
            // its recovery_offset past the piece when it is being rebuilt, and any round
            // pending (one recording the end of its rebuild, say). Else, after a power cut,
            // the rebuild would start again from a checkpoint below the piece and copy the
            // torn block over the only good copy.
            let from_rebuilt = r.ops.iter().enumerate().any(|(mi, o)| {
                matches!(o, Op::Ok) && self.members.get(mi).is_some_and(|m| !m.in_sync())
            });
            if from_rebuilt && !planted::on(Bug::WriteBackUnrecorded) {
                self.want_sb();
            }
            let need_sb = self.sb.wanted;
            if let Some(x) = self.reqs.get_mut(ri) {
                x.need_bm = need_bm;
                x.need_sb = x.need_sb.max(need_sb);
            }
            self.set_phase(ri, Phase::FixWrite);
        } else {
            self.set_phase(ri, Phase::Run);
            self.piece_done(ri);
        }
    }

    /// The write-back answered: a mirror that failed it records the piece in its bad-block
    /// log and keeps its place, or fails when it has no room there (md's r1_sync_page_io:
    /// rdev_set_badblocks, else md_error); one that took it counts a corrected read error;
    /// the request goes on with its next piece.
    ///
    /// A mirror failed here may hold a block the failed write tore: the piece's bits went to
    /// disk before the write-back (`write_back`), so that a re-add guided by the bitmap copies
    /// the piece again.
    pub(super) fn write_back_done(&mut self, ri: usize, r: R1Bio<M>) {
        let mut need = 0;
        let sector = r.req.sector.saturating_add(Sector::from(r.done));
        for (mi, o) in r.ops.iter().enumerate() {
            match o {
                // The block may be torn there too: until the record is on disk, a power cut
                // brings the mirror back in sync over it. Every write and flush answered from
                // now on waits for the record, as for a failure (the simulator's torn
                // write-backs: a flush answered first, and a cut then served the torn block).
                Op::Err if self.record_bad(mi, sector, r.piece) => {
                    need = self.sb.wanted;
                    self.fail_gen = self.sb.wanted;
                }
                Op::Err if self.fail_internal(mi) => {
                    need = self.sb.wanted;
                }
                Op::Ok => {
                    if let Some(m) = self.members.get_mut(mi) {
                        m.corrected = m.corrected.saturating_add(1);
                    }
                }
                _ => {}
            }
        }
        self.set_phase(ri, Phase::Run);
        if let Some(x) = self.reqs.get_mut(ri) {
            x.need_sb = x.need_sb.max(need);
            // The bits were waited for before the write-back; nothing waits for them after.
            x.need_bm = 0;
        }
        self.piece_done(ri);
    }

    /// A read fix covers part of `[sector, +sectors)`: a write there waits (md freezes the array
    /// while fix_read_error runs).
    pub(super) fn overlaps_fixing(&self, sector: Sector, sectors: u32) -> bool {
        self.fixing > 0
            && self.reqs.iter().any(|r| {
                matches!(r.phase, Phase::FixWait | Phase::FixRun | Phase::FixWrite)
                    && r.overlaps(sector, sectors)
            })
    }

    /// Another request over the range holds the fix of request `me` back (one pass over the
    /// table): an admitted, unfinished write; a read already re-reading or writing back (fixes
    /// are serialised, as md serialises them under freeze_array); an admitted read with member
    /// I/O out or queued.
    fn overlapping_request(&self, me: usize, sector: Sector, sectors: u32) -> bool {
        self.reqs.iter().enumerate().any(|(i, r)| {
            i != me
                && r.overlaps(sector, sectors)
                && ((r.admitted && r.is_write() && r.phase != Phase::Done)
                    || matches!(r.phase, Phase::FixRun | Phase::FixWrite)
                    || (!planted::on(Bug::ReadDuringFix)
                        && r.admitted
                        && r.req.op == RequestOp::Read
                        && r.phase == Phase::Run
                        && r.outstanding != 0))
        })
    }

    /// A sync window with member I/O overlaps the range.
    fn overlapping_sync_io(&self, sector: Sector, sectors: u32) -> bool {
        let end = sector.saturating_add(Sector::from(sectors));
        self.windows.iter().any(|w| {
            !matches!(w.phase, WPhase::Free | WPhase::Raise)
                && w.sector < end
                && sector < w.sector.saturating_add(Sector::from(w.sectors))
        })
    }
}
