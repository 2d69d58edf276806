//! The workload: random logical reads, writes, flushes and discards submitted to the array,
//! and what the simulator checks when each one completes.

use raid1_core::Sector;
use raid1_core::{Buffer, MemberOp, Outcome, Request, RequestOp, SubmitError};

use crate::driver::Sim;
use crate::flight::FlightKind;
use crate::{R, Res};

#[derive(Clone, Debug)]
pub(crate) struct LReq {
    pub(crate) op: RequestOp,
    pub(crate) sector: u64,
    pub(crate) sectors: u32,
    pub(crate) handle: u32,
    pub(crate) fua: bool,
    /// Reads: allowed values per sector.
    pub(crate) allowed: Vec<Vec<u64>>,
    /// Flush: ack sequence at submit.
    pub(crate) flush_seq: u64,
    /// Errors per disk when it was submitted.
    pub(crate) errs_at_submit: Vec<u64>,
    /// Reads: the member reads (member, disk, first sector, sectors) that failed this request
    /// on a sticky media error.
    pub(crate) sticky_hits: Vec<(usize, usize, u64, u32)>,
    /// Reads: per sector, the pinned answer at submit (invariant (n)).
    pub(crate) pins: Vec<Option<u64>>,
    /// Reads: whether an in-sync member listed a bad block in the range at submit (a write
    /// may clear the list before the read completes; the source was chosen before that).
    pub(crate) bad_at_submit: bool,
    /// Read-only switches so far when it was submitted, or `u64::MAX` if read-only was asked
    /// then: a read error while read-only is served without the write-back, so (l) does not
    /// apply and a sector the mirrors do not agree on yet (a region not resynced) may read
    /// differently from another mirror, as in md, so (n) does not either.
    pub(crate) ro_at_submit: u64,
}

impl Sim<'_> {
    /// Submits a random request of kind `op` (1-16 sectors, sometimes in the hot spot, never a
    /// write over a write in flight) and records what it may return.
    pub(crate) fn submit(&mut self, op: RequestOp) -> Res<()> {
        let sectors = 1 + self.w.rng.below(16) as u32;
        let mut sector = self.w.rng.below(self.w.sectors as u64 - sectors as u64 + 1);
        if self.w.rng.chance(self.w.swarm.hot) {
            // Sequential or hot-spot traffic.
            sector = (sector % 64) & !7;
        }
        // A sector a power cut tore inside waits for its resync: now and then read it (the
        // engine must serve it from the member that holds it; the cut-tear stream draws).
        if let Some((_, s, _)) = self.pending_tear() {
            if op == RequestOp::Read && self.w.tear_side.chance(300) {
                sector = (s as u64).min(self.w.sectors as u64 - u64::from(sectors));
            }
        }
        if matches!(op, RequestOp::Write | RequestOp::Discard) {
            // Concurrent overlapping writes are undefined (as on any block device): avoid them.
            if self.w.shadow.writing(sector..sector + u64::from(sectors)) {
                return Ok(());
            }
        }
        let id = self.w.next_id;
        let handle = self.alloc_buf();
        let fua = op == RequestOp::Write && self.w.rng.chance(self.w.swarm.fua);
        let req = Request {
            id,
            op,
            sector: sector as Sector,
            sectors: if op == RequestOp::Flush { 0 } else { sectors },
            buffer: handle,
            fua,
        };
        // Writes acknowledged while their write-behind writes go on still hold a slot.
        let in_table = self.w.reqs.len() + usize::from(self.array.status().behind_writes);
        match self.array.submit(self.t(), req) {
            Err(SubmitError::Busy) => {
                self.w.free_bufs.push(handle);
                if in_table < R {
                    return Err(format!(
                        "(e) Busy with only {in_table} of {R} requests in the table"
                    ));
                }
                return Ok(());
            }
            Err(SubmitError::ReadOnly) if self.array.status().read_only_asked => {
                self.w.free_bufs.push(handle);
                if !matches!(op, RequestOp::Write | RequestOp::Discard) {
                    return Err(format!("(ro) a {op:?} refused as read-only"));
                }
                return Ok(());
            }
            Err(e) => return Err(format!("submit refused {req:?}: {e:?}")),
            Ok(()) => {
                if in_table >= R {
                    return Err(format!(
                        "(e) accepted request {} beyond capacity {R}",
                        in_table + 1
                    ));
                }
            }
        }
        self.w.next_id += 1;
        self.log(|| format!("submit {id} {op:?} {sector}+{sectors} fua={fua}"));
        let mut l = LReq {
            op,
            sector,
            sectors,
            handle,
            fua,
            allowed: Vec::new(),
            flush_seq: self.w.shadow.ack_seq(),
            errs_at_submit: self.w.errs.clone(),
            sticky_hits: Vec::new(),
            pins: Vec::new(),
            ro_at_submit: if self.array.status().read_only_asked {
                u64::MAX
            } else {
                self.w.ro_toggles
            },
            bad_at_submit: op == RequestOp::Read
                && self
                    .in_sync_members()
                    .iter()
                    .any(|&i| self.lists_bad_in(i, sector, sectors)),
        };
        match op {
            RequestOp::Read => {
                for s in sector..sector + u64::from(sectors) {
                    let mut a = self.w.shadow.readable(s as usize);
                    // A corrupted sector may be read from the corrupted mirror until repaired.
                    a.extend(self.w.corrupt[s as usize]);
                    l.allowed.push(a);
                    l.pins.push(self.pinned(s as usize));
                }
            }
            RequestOp::Write | RequestOp::Discard => {
                for j in 0..sectors as usize {
                    let v = if op == RequestOp::Discard {
                        0
                    } else {
                        (id << 20) | (sector + j as u64)
                    };
                    self.w.bufs[handle as usize][j] = v;
                    let s = sector as usize + j;
                    self.w.pins[s] = None;
                    self.w.shadow.write_submitted(s, v);
                    // Reads in flight over this sector may see the new value.
                    for (_, r) in self.w.reqs.iter_mut() {
                        if r.op == RequestOp::Read
                            && (r.sector..r.sector + u64::from(r.sectors)).contains(&(s as u64))
                        {
                            r.allowed[s - r.sector as usize].push(v);
                        }
                    }
                }
            }
            RequestOp::Flush => {}
        }
        self.w.reqs.insert(id, l);
        self.drain_outputs()
    }

    /// A free request buffer's handle.
    pub(crate) fn alloc_buf(&mut self) -> u32 {
        if let Some(h) = self.w.free_bufs.pop() {
            return h;
        }
        self.w.bufs.push(vec![0; 16]);
        (self.w.bufs.len() - 1) as u32
    }

    /// A logical request completed: checks its outcome and brings the shadow up to date.
    pub(crate) fn logical_done(&mut self, id: u64, outcome: Outcome) -> Res<()> {
        let r = self
            .w
            .reqs
            .remove(&id)
            .ok_or_else(|| format!("completion for unknown request {id}"))?;
        self.w.stats.completed += 1;
        self.log(|| {
            format!(
                "done {id} {:?} {}+{}: {outcome:?}",
                r.op, r.sector, r.sectors
            )
        });
        if outcome == Outcome::ReadOnly {
            // Never started: it changed nothing (the shadow keeps both values possible).
            if !matches!(r.op, RequestOp::Write | RequestOp::Discard) {
                return Err(format!("(ro) a {:?} ended as read-only", r.op));
            }
            for j in 0..r.sectors as usize {
                self.w.shadow.write_failed(r.sector as usize + j);
            }
            self.w.free_bufs.push(r.handle);
            return Ok(());
        }
        if outcome != Outcome::Ok {
            if self.failure_excused(&r) {
                self.log(|| {
                    format!(
                        "{:?} {}+{} failed: every in-sync member erred",
                        r.op, r.sector, r.sectors
                    )
                });
                if matches!(r.op, RequestOp::Write | RequestOp::Discard) {
                    for j in 0..r.sectors as usize {
                        self.w.shadow.write_failed(r.sector as usize + j);
                    }
                }
                self.w.free_bufs.push(r.handle);
                return Ok(());
            }
            return Err(format!(
                "(a) {:?} {}+{} failed although an in-sync member is healthy (in sync: {:?})",
                r.op,
                r.sector,
                r.sectors,
                self.in_sync_members()
            ));
        }
        match r.op {
            RequestOp::Read => {
                let ro_touched =
                    r.ro_at_submit != self.w.ro_toggles || self.array.status().read_only_asked;
                if !ro_touched {
                    self.check_read_error_repaired(&r)?;
                }
                // Where a member lists bad blocks in the range, md's source for each sector
                // depends on where the read starts (choose_first_rdev passes over a member whose
                // first sector is bad): (n) pins only reads clear of every list.
                let clear_of_bad = !r.bad_at_submit
                    && !ro_touched
                    && !self
                        .in_sync_members()
                        .iter()
                        .any(|&i| self.lists_bad_in(i, r.sector, r.sectors));
                self.check_read_answer(id, &r, clear_of_bad)?;
                let vals: Vec<u64> = self.w.bufs[r.handle as usize][..r.sectors as usize].to_vec();
                for (j, v) in vals.into_iter().enumerate().filter(|_| clear_of_bad) {
                    self.pin_read(r.sector as usize + j, v);
                }
            }
            RequestOp::Write | RequestOp::Discard => {
                // Its member writes still in flight are behind (write-behind; none without).
                let behind = self.array.status().behind_writes != 0;
                for f in self.w.flights.iter_mut().filter(|_| behind) {
                    if let FlightKind::Data {
                        op: MemberOp::Write | MemberOp::Discard,
                        buffer: Buffer::Request { handle, .. },
                        ..
                    } = f.kind
                    {
                        f.behind |= handle == r.handle;
                    }
                }
                self.w.shadow.acknowledged();
                for j in 0..r.sectors as usize {
                    let s = r.sector as usize + j;
                    let v = if r.op == RequestOp::Discard {
                        0
                    } else {
                        self.w.bufs[r.handle as usize][j]
                    };
                    self.w.shadow.written(s, v, r.fua);
                }
            }
            RequestOp::Flush => {
                self.w.shadow.flushed(r.flush_seq);
            }
        }
        if matches!(r.op, RequestOp::Write | RequestOp::Flush) {
            self.aim_crash(30);
        }
        if r.op == RequestOp::Write {
            self.aim_crash_behind(r.fua);
        }
        match r.op {
            RequestOp::Flush => {
                self.oracle_record_durable(&format!("at the acknowledgement of flush {id}"))?
            }
            RequestOp::Write if r.fua => {
                self.oracle_record_durable(&format!("at the acknowledgement of FUA write {id}"))?
            }
            _ => {}
        }
        self.w.free_bufs.push(r.handle);
        Ok(())
    }
}
