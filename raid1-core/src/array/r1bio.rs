//! The life of a logical request: md's r1bio (drivers/md/raid1.c).
//!
//! A request is admitted through its barrier buckets (`wait_barrier` / `wait_read_barrier`),
//! fanned out to the members (`raid1_read_request` / `raid1_write_request`), completed per member
//! (`raid1_end_read_request` / `raid1_end_write_request`) and ended once every member answered
//! (`raid_end_bio_io`), after the superblock recording any member failure it caused is on disk
//! (md's Blocked device, `handle_write_finished`). [`Array::step_request`] moves one request as
//! far as it can go; [`Array::pump_requests`] moves them all.

use super::*;

/// State of one member I/O slot inside a request or a sync window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Idle,
    Queued(MemberOp),
    InFlight(MemberOp),
    Ok,
    Err,
}

/// Member `mi`'s answer to its I/O in `ops` (a request's or a sync window's, md's
/// `bios[mirror]`): marks it done or failed and counts `outstanding` down. `None` if no I/O of
/// `mi` was in flight (nothing changed), else its kind and whether other I/O is still busy.
pub(super) fn answer_op(
    ops: &mut [Op],
    outstanding: &mut u16,
    mi: usize,
    ok: bool,
) -> Option<(MemberOp, bool)> {
    let op = ops.get_mut(mi)?;
    let Op::InFlight(kind) = *op else {
        return None;
    };
    *op = if ok { Op::Ok } else { Op::Err };
    *outstanding = outstanding.saturating_sub(1);
    Some((kind, *outstanding > 0))
}

/// Life of a logical request (md's r1bio).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Slot unused.
    Free,
    /// Waiting for unfreeze / the barrier of its bucket / an overlapping read fix.
    Wait,
    /// Write admitted; waiting for the dirty superblock and the bitmap pages.
    Meta,
    /// Member I/O queued or in flight.
    Run,
    /// Read error: waiting until no write overlaps, then re-read elsewhere.
    FixWait,
    /// Re-reading from another mirror.
    FixRun,
    /// Writing the good data back to the mirrors that failed the read.
    FixWrite,
    /// Waiting for the superblock that records a member failure.
    WaitSb,
    /// Read: the only member that can serve the piece has a write-behind write over it in
    /// flight; waiting for it (array/write_behind.rs).
    BehindWait,
    /// Finished; completion not yet polled.
    Done,
}

/// One logical request in the table (md's r1bio).
#[derive(Clone, Copy, Debug)]
pub(super) struct R1Bio<const M: usize> {
    pub(super) phase: Phase,
    pub(super) req: Request,
    /// Bumped at each reuse of the slot: a stale tag is refused.
    pub(super) generation: u16,
    /// Member I/O of the request (of the piece, for a read).
    pub(super) ops: [Op; M],
    /// Member I/O queued or in flight.
    pub(super) outstanding: u16,
    /// Past the freeze and the barrier: counted in its buckets' `pending` (wait_barrier).
    pub(super) admitted: bool,
    /// First barrier unit the request touches.
    pub(super) unit_lo: Sector,
    /// Last barrier unit the request touches.
    pub(super) unit_hi: Sector,
    /// Read: members that failed the piece (never its source again; written back).
    pub(super) tried: u32,
    /// Superblock generation that must be on disk before the request ends (the dirty mark, a
    /// member failure).
    pub(super) need_sb: u64,
    /// Write: bitmap round that must be on disk before the data goes out.
    pub(super) need_bm: u64,
    /// The result, once it ended.
    pub(super) outcome: Outcome,
    /// Its completion was handed back.
    pub(super) reported: bool,
    /// Planted bug `planted-bug-early-ack`: acknowledged before every member answered.
    pub(super) early_ack: bool,
    /// Read: every mirror failed the piece once and got one more try.
    pub(super) retried: bool,
    /// Read: the member that failed last (the retry starts there).
    pub(super) last_failed: u8,
    /// Read: sectors of the request already served (md splits a read at a member's bad
    /// blocks and retries the rest; here the pieces are read one after the other).
    pub(super) done: u32,
    /// Read: length of the piece being read, from `req.sector + done`.
    pub(super) piece: u32,
    /// Write: members written behind (WriteMostly, md's R1BIO_BehindIO).
    pub(super) behind: u32,
    /// Write: acknowledged before its behind writes ended (md's R1BIO_Returned).
    pub(super) acked: bool,
}

impl<const M: usize> R1Bio<M> {
    /// `acked`: never set without the `write-behind` feature (the compiler is told so).
    pub(super) fn acked(&self) -> bool {
        cfg!(feature = "write-behind") && self.acked
    }

    /// `behind`: always empty without the `write-behind` feature (the compiler is told so).
    pub(super) fn behind(&self) -> u32 {
        if cfg!(feature = "write-behind") {
            self.behind
        } else {
            0
        }
    }

    /// An unused slot.
    pub(super) const FREE: Self = R1Bio {
        phase: Phase::Free,
        req: Request {
            id: 0,
            op: RequestOp::Flush,
            sector: 0,
            sectors: 0,
            buffer: 0,
            fua: false,
        },
        generation: 0,
        ops: [Op::Idle; M],
        outstanding: 0,
        admitted: false,
        unit_lo: 0,
        unit_hi: 0,
        tried: 0,
        need_sb: 0,
        need_bm: 0,
        outcome: Outcome::Ok,
        reported: false,
        early_ack: false,
        retried: false,
        last_failed: 0,
        done: 0,
        piece: 0,
        behind: 0,
        acked: false,
    };

    /// A write or a discard: goes to every writable member and dirties the array.
    pub(super) fn is_write(&self) -> bool {
        matches!(self.req.op, RequestOp::Write | RequestOp::Discard)
    }

    /// The request's range meets `[sector, +sectors)`.
    pub(super) fn overlaps(&self, sector: Sector, sectors: u32) -> bool {
        let a0 = self.req.sector;
        let a1 = a0.saturating_add(Sector::from(self.req.sectors));
        let b1 = sector.saturating_add(Sector::from(sectors));
        a0 < b1 && sector < a1
    }
}

impl<'b, const M: usize, const R: usize, const S: usize> Array<'b, M, R, S> {
    /// Takes a free slot for `req` (md's alloc_r1bio), waiting for admission; `Busy` when
    /// every slot is taken.
    pub(super) fn alloc_r1bio(&mut self, req: Request) -> Result<(), SubmitError> {
        let Some(i) = self.live.first_absent(R) else {
            return Err(SubmitError::Busy);
        };
        let shift = self.cfg.barrier_unit_shift;
        let end = req
            .sector
            .saturating_add(Sector::from(req.sectors.max(1)))
            .saturating_sub(1);
        if let Some(r) = self.reqs.get_mut(i) {
            let generation = r.generation.wrapping_add(1);
            *r = R1Bio::FREE;
            r.generation = generation;
            r.phase = Phase::Wait;
            self.moves = self.moves.wrapping_add(1);
            r.req = req;
            r.unit_lo = req.sector >> shift;
            r.unit_hi = end >> shift;
            self.live.insert(i);
            self.ready.insert(i);
        }
        Ok(())
    }

    /// Moves every request as far as it can go.
    pub(super) fn pump_requests(&mut self) {
        let mut at = 0;
        while let Some(ri) = self.ready.next_from(at) {
            self.step_request(ri);
            at = ri + 1;
        }
    }

    /// Queues `op` of request `ri` on every writable member: whether there was one.
    fn queue_writable(&mut self, ri: usize, op: MemberOp) -> bool {
        let mut any = false;
        for mi in 0..M {
            if self.members.get(mi).is_some_and(|m| m.writable()) {
                self.queue_op(ri, mi, op);
                any = true;
            }
        }
        any
    }

    /// Moves request `ri` as far as it can go: admission (wait_barrier, freeze), a write's wait
    /// for the dirty superblock and its bitmap bits, fan-out, and the evaluation of the answers.
    pub(super) fn step_request(&mut self, ri: usize) {
        // Cheap exit for the common case (member I/O still outstanding) before copying the slot.
        let Some(r) = self.reqs.get(ri) else {
            return;
        };
        match r.phase {
            Phase::Free | Phase::Done => {
                self.ready.remove(ri);
                return;
            }
            Phase::Run | Phase::FixRun | Phase::FixWrite if r.outstanding != 0 => {
                // Back in `ready` when its member I/O answers (end_request_io).
                self.ready.remove(ri);
                return;
            }
            _ => {}
        }
        let r = *r;
        match r.phase {
            Phase::Wait => {
                if self.barrier.frozen > 0 {
                    return;
                }
                if r.is_write()
                    && (!self.barrier_free(r.unit_lo, r.unit_hi)
                        || self.overlaps_fixing(r.req.sector, r.req.sectors)
                        || self.behind_over(r.req.sector, r.req.sectors) != 0)
                {
                    return;
                }
                // A read waits too while a read fix covers part of it (md's freeze_array holds
                // every new request while fix_read_error runs): the member being fixed may be
                // the one it would be sent to, and a write-back that fails records the range as
                // bad there.
                if r.req.op == RequestOp::Read
                    && self.overlaps_fixing(r.req.sector, r.req.sectors)
                    && !planted::on(Bug::ReadDuringFix)
                {
                    return;
                }
                // A flush makes every acknowledged write durable: it waits for the behind
                // writes (a member's flush covers only the writes it completed).
                if r.req.op == RequestOp::Flush && self.behind_members_pending() != 0 {
                    return;
                }
                self.set_pending(r.unit_lo, r.unit_hi, true);
                if let Some(x) = self.reqs.get_mut(ri) {
                    x.admitted = true;
                }
                match r.req.op {
                    RequestOp::Read => self.read_next_piece(ri),
                    RequestOp::Flush => {
                        if self.queue_writable(ri, MemberOp::Flush) {
                            self.set_phase(ri, Phase::Run);
                        } else {
                            self.finish(ri, Outcome::IoError);
                        }
                    }
                    RequestOp::Write | RequestOp::Discard => {
                        self.md_write_start();
                        let need_bm = self.bitmap_start_write(r.req.sector, r.req.sectors);
                        if let Some(x) = self.reqs.get_mut(ri) {
                            x.need_sb = self.dirty_gen;
                            x.need_bm = need_bm;
                            x.phase = Phase::Meta;
                            self.moves = self.moves.wrapping_add(1);
                            self.ready.insert(ri);
                        }
                        self.step_request(ri);
                    }
                }
            }
            Phase::Meta => {
                // The dirty mark, the bitmap bits and the record of every failure so far must
                // be on disk before the data goes out.
                // Planted bugs: issue the write without waiting for its bitmap page round, or
                // for the record of a member's failure.
                let need_sb = self.with_failure_records(r.need_sb);
                let bm = if planted::on(Bug::AckBeforeBitmap) {
                    Some(true)
                } else {
                    self.bm_landed(r.need_bm)
                };
                match (self.sb_landed(need_sb), bm) {
                    (Some(true), Some(true)) => {}
                    (Some(false), _) | (_, Some(false)) => {
                        self.finish(ri, Outcome::IoError);
                        return;
                    }
                    _ => return,
                }
                let op = if r.req.op == RequestOp::Discard {
                    MemberOp::Discard
                } else {
                    MemberOp::Write
                };
                let any = self.queue_writable(ri, op);
                let behind = if op == MemberOp::Write {
                    self.behind_members()
                } else {
                    0
                };
                if let Some(x) = self.reqs.get_mut(ri) {
                    x.need_bm = 0;
                    x.behind = behind;
                }
                if behind != 0 {
                    self.wb.live += 1;
                }
                if any {
                    self.set_phase(ri, Phase::Run);
                } else {
                    self.finish(ri, Outcome::IoError);
                }
            }
            Phase::Run | Phase::FixRun | Phase::FixWrite if r.outstanding == 0 => self.evaluate(ri),
            Phase::FixWait => self.fix_wait(ri),
            Phase::BehindWait => self.read_next_piece(ri),
            // Read-only: no round runs until read-write, and no write is in the table to
            // protect (md completes without the record while `ro`).
            Phase::WaitSb if self.ro.on() => self.finish(ri, r.outcome),
            // A member that failed since (its record of bad blocks did not land on it, say) must
            // be recorded too before the acknowledgement (md waits until no superblock change
            // is pending at all).
            // A write's bitmap bits, and those of a read fix's write-back, are on disk before
            // the data goes out; `need_bm` is 0 by now.
            Phase::WaitSb => {
                match self.records_landed(self.with_failure_records(r.need_sb), r.need_bm) {
                    Some(true) => self.finish(ri, r.outcome),
                    Some(false) => self.finish(ri, Outcome::IoError),
                    None => {}
                }
            }
            _ => {}
        }
    }

    /// Queues member I/O `op` of request `ri` on member `mi` (counted in the member's
    /// `nr_pending`).
    pub(super) fn queue_op(&mut self, ri: usize, mi: usize, op: MemberOp) {
        if let Some(r) = self.reqs.get_mut(ri) {
            if let Some(o) = r.ops.get_mut(mi) {
                *o = Op::Queued(op);
                r.outstanding += 1;
                self.req_queued += 1;
                self.queued.insert(ri);
                if let Some(m) = self.members.get_mut(mi) {
                    m.pending += 1;
                }
            }
        }
    }

    /// Sets the phase of request `ri`, keeping `fixing` (requests in a read fix) counted.
    pub(super) fn set_phase(&mut self, ri: usize, p: Phase) {
        let Some(r) = self.reqs.get_mut(ri) else {
            return;
        };
        let was_fix = matches!(r.phase, Phase::FixWait | Phase::FixRun | Phase::FixWrite);
        let is_fix = matches!(p, Phase::FixWait | Phase::FixRun | Phase::FixWrite);
        r.phase = p;
        self.moves = self.moves.wrapping_add(1);
        self.ready.insert(ri);
        if was_fix && !is_fix {
            self.fixing = self.fixing.saturating_sub(1);
        } else if is_fix && !was_fix {
            self.fixing += 1;
        }
    }

    /// Plans the next piece of a read: the longest prefix of what is left that one member can
    /// serve from good blocks (md's read_balance with `max_sectors`; md splits the bio there and
    /// submits the rest again). The request fails with `IoError` when no member can serve the
    /// next sector; it succeeds once every piece was served.
    fn read_next_piece(&mut self, ri: usize) {
        let Some(r) = self.reqs.get(ri).copied() else {
            return;
        };
        let left = r.req.sectors.saturating_sub(r.done);
        if left == 0 {
            self.set_phase(ri, Phase::Run);
            self.after_errors(ri, r.need_sb, Outcome::Ok);
            return;
        }
        let sector = r.req.sector.saturating_add(Sector::from(r.done));
        // A member with a write-behind write over the range in flight may still hold the old
        // data (md waits for behind writes before reading a WriteMostly member). In a region
        // not yet resynced only the source is authoritative (the mirrors may differ there):
        // when that is the member, the read waits for it rather than read another mirror.
        let behind = self.behind_over(sector, left);
        let mut pick = self.read_balance(sector, left, behind);
        if behind != 0 {
            let end = sector.saturating_add(Sector::from(left));
            let unsynced = self.resync_cp < end && !planted::on(Bug::BehindReadElsewhere);
            // Where any member could serve it, passing over the ones with writes behind.
            let anywhere = if pick.is_none() || unsynced {
                self.read_balance(sector, left, 0)
            } else {
                None
            };
            if unsynced && anywhere.is_some_and(|(mi, _)| behind & bit(mi) != 0) {
                pick = None;
            }
            if pick.is_none() && anywhere.is_some() {
                if r.phase != Phase::BehindWait {
                    self.set_phase(ri, Phase::BehindWait);
                }
                return;
            }
        }
        match pick {
            Some((mi, n)) => {
                if let Some(x) = self.reqs.get_mut(ri) {
                    x.piece = n.clamp(1, left);
                    x.tried = 0;
                    x.retried = false;
                    x.ops = [Op::Idle; M];
                }
                self.queue_op(ri, mi, MemberOp::Read);
                self.set_phase(ri, Phase::Run);
            }
            None => {
                self.set_phase(ri, Phase::Run);
                self.after_errors(ri, r.need_sb, Outcome::IoError);
            }
        }
    }

    /// The read piece in progress was served: go on with the rest of the request.
    pub(super) fn piece_done(&mut self, ri: usize) {
        if let Some(x) = self.reqs.get_mut(ri) {
            x.done = x.done.saturating_add(x.piece).min(x.req.sectors);
            x.piece = 0;
        }
        self.read_next_piece(ri);
    }

    /// Next member I/O of a request (md's submit_bio_noacct of an r1bio's bios).
    pub(super) fn poll_request_io(&mut self) -> Option<IoCmd<M>> {
        if self.req_queued == 0 {
            return None;
        }
        let mut at = 0;
        let bm_done = self.bitmap.done;
        while let Some(ri) = self.queued.next_from(at) {
            at = ri + 1;
            let Some(r) = self.reqs.get_mut(ri) else {
                break;
            };
            if !r.ops.iter().any(|o| matches!(o, Op::Queued(_))) {
                self.queued.remove(ri);
                continue;
            }
            // A read fix's write-back waits for the round carrying its bits (`write_back`).
            if r.phase == Phase::FixWrite
                && bm_done < r.need_bm
                && !planted::on(Bug::WriteBeforeSyncBits)
            {
                continue;
            }
            // And for the superblock rounds pending when it was queued (one recording how far
            // the member it was re-read from is rebuilt, if it is: `write_back`).
            if r.phase == Phase::FixWrite && self.sb.done < r.need_sb {
                continue;
            }
            for mi in 0..M {
                let Some(Op::Queued(op)) = r.ops.get(mi).copied() else {
                    continue;
                };
                if let Some(o) = r.ops.get_mut(mi) {
                    *o = Op::InFlight(op);
                }
                self.req_queued = self.req_queued.saturating_sub(1);
                if let Some(m) = self.members.get_mut(mi) {
                    m.in_flight += 1;
                    if op == MemberOp::Flush {
                        m.unflushed = false;
                    }
                }
                let (sector, sectors, buffer) = match op {
                    // A read request (and the write-back of its fix) works on the piece.
                    _ if r.req.op == RequestOp::Read => (
                        r.req.sector.saturating_add(Sector::from(r.done)),
                        r.piece,
                        Buffer::Request {
                            handle: r.req.buffer,
                            offset: r.done,
                        },
                    ),
                    MemberOp::Flush => (0, 0, Buffer::None),
                    MemberOp::Discard => (r.req.sector, r.req.sectors, Buffer::None),
                    _ => (
                        r.req.sector,
                        r.req.sectors,
                        Buffer::Request {
                            handle: r.req.buffer,
                            offset: 0,
                        },
                    ),
                };
                let cmd = IoCmd::Member(MemberIo {
                    tag: tag(CLASS_REQ, r.generation, ri as u32, mi as u8),
                    member: MemberId(mi as u8),
                    op,
                    sector,
                    sectors,
                    buffer,
                    // A read-error write-back repairs a mirror outside the bitmap: durable at once.
                    fua: (r.req.fua || r.phase == Phase::FixWrite) && op == MemberOp::Write,
                });
                // A behind write handed out last: the request may be acknowledged now (the
                // frontend holds the buffer for the I/O it has).
                if r.behind() & bit(mi) != 0 && !r.acked() {
                    self.ack_behind(ri);
                }
                return Some(cmd);
            }
        }
        None
    }

    /// Member `mi` answered member I/O of request `index` (raid1_end_read_request /
    /// raid1_end_write_request): `None` if no such I/O is in flight (nothing changed), else
    /// whether other member I/O of the request is still busy.
    pub(super) fn end_request_io(
        &mut self,
        generation: u16,
        index: usize,
        mi: usize,
        ok: bool,
    ) -> Option<bool> {
        let r = self.reqs.get_mut(index)?;
        if r.generation != generation || r.phase == Phase::Free {
            return None;
        }
        let (kind, quick) = answer_op(&mut r.ops, &mut r.outstanding, mi, ok)?;
        self.ready.insert(index);
        let fua = (r.req.fua || r.phase == Phase::FixWrite) && kind == MemberOp::Write;
        if let Some(m) = self.members.get_mut(mi) {
            m.pending = m.pending.saturating_sub(1);
            if ok && kind == MemberOp::Read {
                m.next_seq = r
                    .req
                    .sector
                    .saturating_add(Sector::from(r.done) + Sector::from(r.piece));
            }
            match kind {
                MemberOp::Write | MemberOp::Discard if ok && !fua => m.unflushed = true,
                // A failed flush made nothing durable.
                MemberOp::Flush if !ok => m.unflushed = true,
                _ => {}
            }
        }
        if planted::on(Bug::EarlyAck) && ok && kind == MemberOp::Write && r.phase == Phase::Run {
            // Planted bug: acknowledge on the first member.
            r.early_ack = true;
        }
        let behind_op = r.behind() & bit(mi) != 0;
        if r.behind() != 0 && !r.acked() && quick {
            self.ack_behind(index);
        }
        // A behind write that ends may let a flush, a read or an overlapping write go on: the
        // main loop runs even if the request's other member I/O is still busy.
        Some(quick && !behind_op)
    }

    /// Every member I/O of request `ri` answered (raid1_end_read_request /
    /// raid1_end_write_request, then handle_read_error / handle_write_finished in raid1d).
    /// (It reads the slot itself: a copy passed in by `step_request` cost more code.)
    fn evaluate(&mut self, ri: usize) {
        let Some(r) = self.reqs.get(ri).copied() else {
            return;
        };
        match (r.req.op, r.phase) {
            (RequestOp::Read, Phase::Run | Phase::FixRun) => {
                // A member failed, or with the piece listed bad, while its read was out may
                // have answered with what a failed write left there (a sync window's write over
                // the same sectors fails and tears the block: reads do not wait for sync
                // windows): the piece is read again elsewhere, as after a read error (the good
                // data is written back to a member kept with the range listed, as md's
                // fix_read_error writes over listed sectors; none to a failed one). md returns
                // the data.
                let sector = r.req.sector.saturating_add(Sector::from(r.done));
                let failed = r.ops.iter().enumerate().position(|(mi, o)| {
                    matches!(o, Op::Err)
                        || (matches!(o, Op::Ok)
                            && !planted::on(Bug::ReadFromFailed)
                            && (self
                                .members
                                .get(mi)
                                .is_some_and(|m| m.state == MemberState::Faulty)
                                || !self.good_for(mi, sector, r.piece)))
                });
                if let Some(mi) = failed {
                    self.read_error(ri, mi);
                    return;
                }
                if r.tried == 0 {
                    self.piece_done(ri);
                    return;
                }
                self.write_back(ri, r);
            }
            (RequestOp::Read, Phase::FixWrite) => self.write_back_done(ri, r),
            _ => {
                // Write, discard, flush: all members answered.
                let mut need = 0;
                let mut ok_in_sync = false;
                for (mi, o) in r.ops.iter().enumerate() {
                    if matches!(o, Op::Ok) && r.is_write() {
                        self.clear_bad(mi, r.req.sector, r.req.sectors);
                    }
                    match o {
                        Op::Ok if self.members.get(mi).is_some_and(|m| m.in_sync()) => {
                            ok_in_sync = true
                        }
                        // A member with room in its bad-block log keeps its place: the range is
                        // recorded (md's narrow_write_error), else the member fails.
                        Op::Err
                            if r.is_write()
                                && !self.members.get(mi).is_some_and(|m| m.failfast)
                                && self.record_bad(mi, r.req.sector, r.req.sectors) =>
                        {
                            need = self.sb.wanted;
                            // Acknowledged already (write-behind): what comes after (a flush,
                            // a write) waits for the record, as for a failure.
                            if r.acked() {
                                self.fail_gen = self.sb.wanted;
                            }
                        }
                        Op::Err if self.fail_internal(mi) => need = self.sb.wanted,
                        _ => {}
                    }
                }
                let outcome = if ok_in_sync {
                    Outcome::Ok
                } else {
                    // The write failed on every in-sync member but may have reached a member
                    // being rebuilt: resync the range so the mirrors agree again.
                    if r.is_write() {
                        self.resync_cp = self.resync_cp.min(r.req.sector);
                    }
                    Outcome::IoError
                };
                // Planted bug: do not wait for the superblock recording a member's failure.
                let blocked = if planted::on(Bug::SkipFailureRecord) {
                    0
                } else {
                    need.max(self.fail_gen)
                };
                self.after_errors(ri, blocked, outcome);
            }
        }
    }

    /// Superblock generation `need`, or a later one that records every member failure so far
    /// (`fail_gen`): what a write waits for before it goes out or is answered.
    pub(super) fn with_failure_records(&self, need: u64) -> u64 {
        // Planted bug: do not wait for the superblock recording a member's failure.
        if planted::on(Bug::SkipFailureRecord) {
            need
        } else {
            need.max(self.fail_gen)
        }
    }

    /// Whether what a request waits for before its acknowledgement is on disk: superblock
    /// generation `need_sb` and bitmap generation `need_bm`. `Some(false)`: a round that was
    /// to carry it ended without landing.
    fn records_landed(&self, need_sb: u64, need_bm: u64) -> Option<bool> {
        match (self.sb_landed(need_sb), self.bm_landed(need_bm)) {
            (Some(true), Some(true)) => Some(true),
            (Some(false), _) | (_, Some(false)) => Some(false),
            _ => None,
        }
    }

    /// Ends request `ri` with `outcome` once superblock generation `need` (the record of a member
    /// failure) is on disk.
    fn after_errors(&mut self, ri: usize, need: u64, outcome: Outcome) {
        let need_bm = self.reqs.get(ri).map_or(0, |r| r.need_bm);
        if self.records_landed(need, need_bm) != Some(true) {
            if let Some(x) = self.reqs.get_mut(ri) {
                x.need_sb = need;
                x.outcome = outcome;
                x.phase = Phase::WaitSb;
                self.moves = self.moves.wrapping_add(1);
                self.ready.insert(ri);
            }
        } else {
            self.finish(ri, outcome);
        }
    }

    /// Ends request `ri` with `outcome` (md's raid_end_bio_io): releases its barrier buckets
    /// (allow_barrier) and, after a write, re-arms the safe-mode timer (md_write_end).
    pub(super) fn finish(&mut self, ri: usize, outcome: Outcome) {
        let Some(r) = self.reqs.get_mut(ri) else {
            return;
        };
        r.phase = Phase::Done;
        self.moves = self.moves.wrapping_add(1);
        r.outcome = outcome;
        let (admitted, lo, hi, write) = (r.admitted, r.unit_lo, r.unit_hi, r.is_write());
        r.admitted = false;
        if cfg!(feature = "write-behind") && core::mem::take(&mut r.behind) != 0 {
            self.wb.live = self.wb.live.saturating_sub(1);
        }
        // Acknowledged before its behind writes ended: nothing more to hand back.
        let gone = r.acked() && r.reported;
        if gone {
            r.phase = Phase::Free;
        }
        if admitted {
            self.set_pending(lo, hi, false);
        }
        if write {
            self.md_write_end();
        }
        if gone {
            self.release_slot(ri);
        }
    }

    /// The next finished request, handed back once (md's raid_end_bio_io / bio_endio of the
    /// master bio); a slot whose completion was handed back is freed.
    pub(super) fn next_completion(&mut self) -> Option<Completion> {
        let mut at = 0;
        while let Some(ri) = self.live.next_from(at) {
            at = ri + 1;
            let Some(r) = self.reqs.get_mut(ri) else {
                break;
            };
            let visible = match r.phase {
                Phase::Done => true,
                Phase::Free => false,
                _ => r.early_ack || r.acked(),
            };
            if visible && !r.reported {
                r.reported = true;
                let c = Completion {
                    id: r.req.id,
                    outcome: r.outcome,
                };
                if r.phase == Phase::Done {
                    r.phase = Phase::Free;
                    self.moves = self.moves.wrapping_add(1);
                    self.release_slot(ri);
                }
                return Some(c);
            }
            if planted::on(Bug::EarlyAck) && r.phase == Phase::Done && r.reported {
                // Planted bug only: a request acknowledged early is freed once it is done. (A
                // write acknowledged behind is freed by `finish`.)
                r.phase = Phase::Free;
                self.moves = self.moves.wrapping_add(1);
                self.release_slot(ri);
            }
        }
        None
    }

    /// Checks the slot sets against the table (for simulators and tests; nothing calls it on
    /// the hot path): `live` is exactly the used slots, `ready` holds every used slot that is
    /// not waiting for its member I/O, `queued` every slot with member I/O not handed out.
    pub(super) fn audit_slots(&self) -> Result<(), &'static str> {
        for (ri, r) in self.reqs.iter().enumerate() {
            if self.live.contains(ri) != (r.phase != Phase::Free) {
                return Err("the set of used request slots disagrees with the table");
            }
            let waits_for_io = r.outstanding != 0
                && matches!(r.phase, Phase::Run | Phase::FixRun | Phase::FixWrite);
            let idle = matches!(r.phase, Phase::Free | Phase::Done);
            if !idle && !waits_for_io && !self.ready.contains(ri) {
                return Err("a request that can move is missing from the ready set");
            }
            if r.ops.iter().any(|o| matches!(o, Op::Queued(_))) && !self.queued.contains(ri) {
                return Err("a request with queued member I/O is missing from the queued set");
            }
        }
        Ok(())
    }

    /// Slot `ri` turned `Free`: out of every slot set.
    fn release_slot(&mut self, ri: usize) {
        self.live.remove(ri);
        self.ready.remove(ri);
        self.queued.remove(ri);
    }
}
