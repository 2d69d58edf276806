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
//! or waits, and a write over the same range waits for it (md's serialization of writes to
//! write-behind members). At most `write_behind` writes are behind at once; beyond that writes
//! wait for every member, as without write-behind. Only a member whose own superblock on disk
//! says WriteMostly is written behind, and it stays so on disk while behind writes to it are in
//! flight, so an assembly after a crash knows which members may lack acknowledged writes.

use super::*;

/// Write-behind's settings and bookkeeping.
#[derive(Clone, Copy, Debug)]
pub(super) struct WriteBehind {
    /// The limit asked for ([`Array::set_write_behind`]); `cfg.write_behind` follows it once
    /// the bitmap headers say so (turning it on) or at once (a new limit, turning it off).
    pub(super) target: u16,
    /// Superblock generation whose round writes `target` into the headers.
    pub(super) round: u64,
    /// The last non-zero limit the headers carry: they keep it while a write is behind or a
    /// member lags, so that an assembly after a crash knows to avoid those as sources.
    pub(super) disk: u16,
    /// Requests in the table with behind writes (`behind != 0`), to skip the scans.
    pub(super) live: u16,
}

impl<'b, const M: usize, const R: usize, const S: usize> Array<'b, M, R, S> {
    /// The members a write fanned out now may leave behind: in-sync WriteMostly members whose
    /// disk says WriteMostly, when write-behind is on, the array has a bitmap, fewer than
    /// `write_behind` writes are behind and a member that is not WriteMostly, in sync here and
    /// on its disk, takes the write too.
    pub(super) fn behind_members(&self) -> u32 {
        // Without the feature no write is ever left behind: every write waits for every
        // member (what md does with no write-behind limit).
        if cfg!(not(feature = "write-behind")) {
            return 0;
        }
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
            // Only a member whose own superblock on disk already says WriteMostly is written
            // behind, and only a fast member holds the write for it.
            if m.write_mostly && self.sb.wm_landed & bit(i) != 0 {
                slow |= bit(i);
            } else if self.fast_member(i) {
                fast = true;
            }
        }
        if fast { slow } else { 0 }
    }

    /// A member that holds a write for the behind ones: in sync and not WriteMostly, here and
    /// on its own disk (after a crash, assembly takes it as the source of what the behind
    /// members may lack only if its superblock says so).
    fn fast_member(&self, i: usize) -> bool {
        self.members
            .get(i)
            .is_some_and(|m| m.in_sync() && !m.write_mostly)
            && self.sb.wm_landed & bit(i) == 0
            && self.sb.in_sync_landed & bit(i) != 0
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
        if cfg!(not(feature = "write-behind")) || self.wb.live == 0 {
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
    /// in sync here and on its disk with a bad-block log on disk that lists none of the range,
    /// every failure record and table change so far is on disk, and every behind write was
    /// handed out (the frontend keeps a buffer for the member I/O it has). Otherwise it ends as
    /// any write, once all members answered.
    pub(super) fn ack_behind(&mut self, ri: usize) {
        if cfg!(not(feature = "write-behind")) {
            return;
        }
        let Some(r) = self.reqs.get(ri).copied() else {
            return;
        };
        if r.phase != Phase::Run || r.req.op != RequestOp::Write || r.acked {
            return;
        }
        let mut in_sync_ok = false;
        for (i, o) in r.ops.iter().enumerate() {
            if r.behind & bit(i) != 0 {
                // Not before the frontend has the behind write: it frees the request's buffer
                // at the acknowledgement unless a member I/O it handed out still uses it.
                if matches!(o, Op::Queued(_)) {
                    return;
                }
                continue;
            }
            match o {
                Op::Idle => {}
                // A member whose log on disk lists part of the range bad holds a copy that an
                // assembly after a crash would not read (its list says so until a superblock
                // with the shorter log lands): it does not vouch for the write.
                Op::Ok => {
                    in_sync_ok |= self.fast_member(i)
                        && self.log_clear_on_disk(i, r.req.sector, r.req.sectors)
                }
                _ => return,
            }
        }
        // Every change of the member table asked for is on disk too: during a round that
        // records one, an assembly after a crash might take only the behind members as in sync.
        if !in_sync_ok
            || self.with_failure_records(r.need_sb) > self.sb.durable
            || self.sb.change > self.sb.durable
        {
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
            .filter(|r| r.phase != Phase::Free && r.acked())
            .count() as u16
    }

    /// Members with a behind write still queued or in flight.
    pub(super) fn behind_members_pending(&self) -> u32 {
        if cfg!(not(feature = "write-behind")) || self.wb.live == 0 {
            return 0;
        }
        self.reqs
            .iter()
            .filter(|r| r.phase != Phase::Free && r.behind != 0)
            .fold(0, |acc, r| acc | self.behind_pending(r))
    }

    /// md's `--grow --write-behind` (the bitmap's `backlog`): at most `n` writes behind, 0 for
    /// none. Turning it on takes effect once the superblock round that writes the limit into
    /// every bitmap header is on disk (an assembly after a crash then knows that WriteMostly
    /// members may lack acknowledged writes); a new limit or turning it off takes effect at
    /// once, and the headers keep the old limit while writes are behind or members lag.
    ///
    /// Errors: no bitmap, the array is read-only.
    #[cfg(feature = "write-behind")]
    pub fn set_write_behind(&mut self, n: u16) -> Result<(), ReconfigError> {
        if self.bitmap.bits.is_none() {
            return Err(ReconfigError::Bitmap { present: false });
        }
        if self.ro.asked() {
            return Err(ReconfigError::ReadOnly);
        }
        if n == self.wb.target {
            return Ok(());
        }
        self.wb.target = n;
        if n == 0 || self.cfg.write_behind != 0 {
            self.cfg.write_behind = n;
        }
        self.want_sb();
        self.wb.round = self.sb.wanted;
        self.pump();
        Ok(())
    }

    /// The limit the bitmap headers carry now.
    pub(super) fn write_behind_on_disk(&self) -> u16 {
        if self.wb.target != 0 {
            self.wb.target
        } else if self.wb.live != 0 || self.sb.lagging != 0 {
            self.wb.disk.max(1)
        } else {
            0
        }
    }

    /// Turns write-behind on once the headers saying so are on disk; asks for the round that
    /// writes 0 once nothing relies on the old limit any more.
    pub(super) fn settle_write_behind(&mut self) {
        if self.wb.target != 0 {
            self.wb.disk = self.wb.target;
            if self.cfg.write_behind == 0 && self.sb.durable >= self.wb.round {
                self.cfg.write_behind = self.wb.target;
            }
        } else if self.wb.disk != 0 && self.wb.live == 0 && self.sb.lagging == 0 {
            self.wb.disk = 0;
            self.want_sb();
        }
    }
}
