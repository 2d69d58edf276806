//! Fault injection, and the scrub that checks what was planted:
//!
//! * member faults: a disk turns flaky on reads or writes, or dies (the kinds and rates the
//!   seed's swarm has on), through its `FaultyMember`; flaky disks heal at heal steps, quiet
//!   points and power cuts;
//! * sticky media errors: a range of sectors on one member fails every read until it is
//!   written (a write remaps it), so md's read-error write-back is exercised; invariant (l)
//!   checks that a read that hit one leaves the range readable on that member if it stays in
//!   sync, or lists it in that member's bad-block log: some cannot be remapped (writes over them
//!   fail too), and the failed write-back is recorded there, or fails the member without room.
//!   The simulator forgets them now and then (a drive remapping in the background);
//! * silent corruption: at a quiet point, a few sectors of one in-sync member (never the first,
//!   the resync and repair source) get values no write produces. Until they are repaired or
//!   overwritten everywhere they are a legitimate difference for (a), (b), (c), (d) and the
//!   oracles, and reads of them may return either value. A later quiet point scrubs: invariant
//!   (m) requires a `check` pass to issue no write and to count mismatches when the mirrors
//!   differ, and a `repair` pass to leave them identical;
//! * bad blocks over differing data: at a quiet point, a few sectors of one in-sync member get
//!   values no write produces and an entry in that disk's bad-block log, lent to the engine as
//!   md's read balancing gets it (and at every later assembly or re-add of that disk). The
//!   engine must never read those sectors while they are listed: invariant (c) catches a member
//!   read (request or sync) sent there, (a) a read that returns the planted value. The oracles
//!   on disk contents excuse a sector only on the disk that lists it, so a sync that copies the
//!   planted value elsewhere is caught too.
//!   A write clears the entry in the engine's list; a clean stop rewrites the log from that
//!   list (its writes are flushed by then), so the fault heals.
//!
//! All follow the fault atlas (`atlas.rs`): they are added only while it allows, and a disk
//! holding one counts as unhealthy (no other fault is added meanwhile).

use raid1_core::{
    BadBlocks, BadRange, Buffer, Event, MemberId, MemberState, RequestOp, SyncAction,
};
use raid1_core::{MAX_SECTOR, Sector};

use raid1_testkit::{Countdown, Health};

use crate::crash::Lender;
use crate::driver::{Sim, World};
use crate::flight::{Flight, FlightKind};
use crate::workload::LReq;
use crate::{M, Res};

impl Sim<'_> {
    /// A fault step: a member fault on a member the atlas allows (among the kinds the seed's
    /// swarm has on), or a sticky media error.
    pub(crate) fn inject_fault(&mut self) {
        if !self.atlas().may_add_fault() {
            return;
        }
        let attached: Vec<usize> = (0..M).filter(|&i| self.w.slot[i].is_some()).collect();
        let mi = attached[self.w.rng.below(attached.len() as u64) as usize];
        let d = self.w.slot[mi].unwrap_or(0);
        if !self.atlas().may_take(mi) {
            return;
        }
        let sw = &self.w.swarm;
        let kinds: Vec<Health> = [
            sw.flaky_reads.map(Health::FlakyReads),
            sw.flaky_writes.map(Health::FlakyWrites),
            sw.dead.then_some(Health::Dead),
        ]
        .into_iter()
        .flatten()
        .collect();
        let media = sw.media_errors;
        if kinds.is_empty() || self.w.rng.chance(media) {
            if media > 0 {
                self.inject_sticky(mi, d);
            }
            return;
        }
        let fault = kinds[self.w.rng.index(kinds.len())];
        self.log(|| format!("fault {fault:?} on member {mi} (disk {d})"));
        self.w.disks[d].member.health = fault;
    }

    /// A heal step (and every quiet point): flaky disks heal, dead ones stay dead; media
    /// errors are forgotten now and then.
    pub(crate) fn heal(&mut self) {
        for d in self.w.disks.iter_mut() {
            d.member.heal();
            d.member.fail_write = Countdown::OFF;
        }
        self.forget_sticky();
    }

    /// Marks 1-8 sectors of member `mi`'s disk `d` unreadable, and maybe unwritable too (a
    /// media error the drive cannot remap).
    pub(crate) fn inject_sticky(&mut self, mi: usize, d: usize) {
        let n = 1 + self.w.rng.below(8) as usize;
        let mut at = self.w.rng.below((self.w.sectors - n) as u64) as usize;
        if self.w.rng.chance(500) {
            // Where the hot spot of the workload will read it soon.
            at %= 64;
        }
        let unremappable = self.w.rng.chance(self.w.swarm.unremappable);
        self.log(|| {
            format!(
                "sticky media error {at}+{n} on member {mi} (disk {d}){}",
                if unremappable { ", unremappable" } else { "" }
            )
        });
        let member = &mut self.w.disks[d].member;
        member.add_read_errors(at as u64, n as u64);
        if unremappable {
            member.add_write_errors(at as u64, n as u64);
        }
    }

    /// Now and then while a recovery runs from one in-sync member (`Swarm::lost_media`): a
    /// sticky media error on 1-4 sectors of that member the recovery has not reached, the one
    /// copy of their data. The exception to atlas rule 1: this loss is the point, md's answer
    /// to it (a page recorded as bad on every member, the recovery going on) is what is
    /// checked, by oracle (p), by (a) (a read there may fail, never return another value) and
    /// by the oracles on what the disks hold. Drawn from the lost stream only.
    pub(crate) fn maybe_lose(&mut self) {
        if self.w.swarm.lost_media == 0 {
            return;
        }
        let Some((SyncAction::Recovery, pos, _)) = self.array.status().sync else {
            return;
        };
        let in_sync = self.in_sync_members();
        let [src] = in_sync[..] else {
            return;
        };
        let Some(d) = self.w.slot[src] else {
            return;
        };
        if self.atlas().unhealthy_member().is_some()
            || self.still_lagging() != 0
            || self.cut_torn().is_some()
            || !self.w.lost_side.chance(self.w.swarm.lost_media)
        {
            return;
        }
        let n = 1 + self.w.lost_side.below(4) as usize;
        let pos = u64::from(pos) as usize;
        if pos + n >= self.w.sectors {
            return;
        }
        let at = pos + self.w.lost_side.below((self.w.sectors - n - pos) as u64) as usize;
        self.log(|| {
            format!("lost: media error {at}+{n} on member {src} (disk {d}), the last copy")
        });
        self.w.disks[d].member.add_read_errors(at as u64, n as u64);
        self.w.fault_pages.extend((at..at + n).map(|s| s / 8));
        self.w.stats.lost += n as u64;
    }

    /// Right after an assembly with a resync pending: a sticky media error on the source
    /// member (the in-sync member in the lowest slot) at the first sector where the in-sync
    /// members differ, so that a read there goes through md's read-error path (read from
    /// another mirror, write back) while the mirrors still disagree, before the resync.
    pub(crate) fn aim_sticky_after_crash(&mut self) {
        if self.aim_sticky_at_lag() {
            return;
        }
        if self.array.status().resync_offset == MAX_SECTOR
            || self.atlas().unhealthy_member().is_some()
            || !self.w.rng.chance(self.w.swarm.aimed_media_error)
        {
            return;
        }
        self.aim_sticky_where_differs(u32::MAX, "");
    }

    /// Right after an assembly with members lagging ([`World::lagging`]), half the time: a
    /// sticky media error on the source member at the first sector where a lagging member
    /// holds other data, so that a read or the resync there meets the one copy of an
    /// acknowledged write unreadable while a lagging member's older copy is at hand. Drawn from
    /// the lag stream; returns whether it aimed one.
    fn aim_sticky_at_lag(&mut self) -> bool {
        let lagging = self.still_lagging();
        if lagging == 0 || self.atlas().unhealthy_member().is_some() || !self.w.lag_side.chance(500)
        {
            return false;
        }
        self.source_member()
            .is_some_and(|src| lagging & (1 << src) == 0)
            && self.aim_sticky_where_differs(lagging, ", where a lagging member differs")
    }

    /// A sticky media error on the source member at the first sector where an in-sync member
    /// of `against` (a mask) holds other data; `why` ends the trace line. Returns whether it
    /// aimed one.
    fn aim_sticky_where_differs(&mut self, against: u32, why: &str) -> bool {
        let Some(src) = self.source_member() else {
            return false;
        };
        let Some(d0) = self.w.slot[src] else {
            return false;
        };
        let others: Vec<usize> = self
            .in_sync_members()
            .into_iter()
            .filter(|&i| i != src && against & (1 << i) != 0)
            .filter_map(|i| self.w.slot[i])
            .collect();
        let differ = (0..self.w.sectors).find(|&s| {
            let v = self.w.disks[d0].read(s);
            others.iter().any(|&d| self.w.disks[d].read(s) != v)
        });
        let Some(at) = differ else { return false };
        self.log(|| format!("sticky media error {at}+1 on source member {src} (disk {d0}){why}"));
        self.w.disks[d0].member.add_read_errors(at as u64, 1);
        true
    }

    /// The simulator forgets a sticky error now and then (as if the drive remapped it in the
    /// background), so that one unlucky range does not hold every other fault back for good.
    pub(crate) fn forget_sticky(&mut self) {
        for d in 0..self.w.disks.len() {
            let member = &self.w.disks[d].member;
            let faults = member.read_errors() + member.write_errors();
            if faults > 0 && self.w.rng.chance(self.w.swarm.forget) {
                self.w.disks[d].member.forget_unit_faults();
            }
        }
    }

    /// Completing `f`, a member read, hit a sticky media error: records the hit on its logical
    /// read, if any.
    pub(crate) fn note_media_error(&mut self, f: &Flight) {
        if let FlightKind::Data {
            buffer: Buffer::Request { handle, .. },
            sector,
            sectors,
            ..
        } = &f.kind
        {
            if let Some(r) = self
                .w
                .reqs
                .values_mut()
                .find(|r| r.handle == *handle && r.op == RequestOp::Read)
            {
                r.sticky_hits.push((f.member, f.disk, *sector, *sectors));
            }
        }
    }

    /// (l): a logical read that succeeded after a sticky media error on a member that is still
    /// in sync must have rewritten the range that member failed to read (md's fix_read_error),
    /// or, where that write-back failed, listed it in the member's bad-block log (md's
    /// r1_sync_page_io). The rest of the request's range may be unreadable there too: it was
    /// served elsewhere, and that member never asked for it.
    pub(crate) fn check_read_error_repaired(&mut self, r: &LReq) -> Res<()> {
        for &(m, d, at, len) in &r.sticky_hits {
            let in_sync = self
                .array
                .member(MemberId(m as u8))
                .is_some_and(|i| i.state == MemberState::InSync);
            if self.w.slot[m] != Some(d) || !in_sync {
                continue;
            }
            self.w.stats.media_fixes += 1;
            let lo = at.max(r.sector) as usize;
            let hi = (at + u64::from(len)).min(r.sector + u64::from(r.sectors)) as usize;
            if let Some(k) = (lo..hi).find(|&s| {
                self.w.disks[d].member.unreadable(s as u64) && !self.lists_bad_in(m, s as u64, 1)
            }) {
                return Err(format!(
                    "(l) read {}+{} succeeded after a media error on in-sync member {m}, but \
                     sector {k} there is still unreadable (no write-back)",
                    r.sector, r.sectors
                ));
            }
        }
        Ok(())
    }

    /// Puts a value no write produces on disk `d` at sector `s`, durable at once (its cached
    /// writes are gone with it); returns the value.
    fn scribble(&mut self, d: usize, s: usize) -> u64 {
        let v = self.w.rng.next_u64() | 1 << 63;
        let disk = &mut self.w.disks[d];
        disk.durable[s] = v;
        disk.cache[s].clear();
        v
    }

    /// At a quiet point: silently corrupts 1-8 sectors of an in-sync member other than the
    /// first one.
    pub(crate) fn plant_corruption(&mut self) {
        let in_sync = self.in_sync_members();
        if !self.atlas().may_add_fault() {
            return;
        }
        let mi = in_sync[1 + self.w.rng.below(in_sync.len() as u64 - 1) as usize];
        let Some(d) = self.w.slot[mi] else { return };
        let n = 1 + self.w.rng.below(8) as usize;
        let at = self.w.rng.below((self.w.sectors - n) as u64) as usize;
        self.log(|| format!("silent corruption {at}+{n} on member {mi} (disk {d})"));
        for s in at..at + n {
            if self.w.corrupt[s].is_none() {
                self.w.corrupt[s] = Some(self.scribble(d, s));
            }
        }
        self.w.corrupt_disk = Some(d);
        self.w.stats.corruptions += 1;
    }

    /// (m): a check pass writes nothing and counts the differences; a repair pass leaves the
    /// in-sync members identical. Then forgets the corruption that no disk holds any more.
    pub(crate) fn scrub(&mut self) -> Res<()> {
        let in_sync = self.in_sync_members();
        let disks: Vec<usize> = in_sync.iter().filter_map(|&i| self.w.slot[i]).collect();
        // A member with bad blocks: check and repair skip its listed sectors (md's
        // sync_request), so the mirrors differ there whatever the pass reports.
        let sick = disks
            .iter()
            .any(|&d| self.w.disks[d].member.misbehaves() || !self.w.disks[d].bblog.is_empty())
            || in_sync
                .iter()
                .any(|&i| !self.array.bad_blocks(MemberId(i as u8)).is_empty());
        // A member waiting for recovery, or a spare about to replace a member that wants it:
        // md runs the recovery before any check, and its writes are not the check's.
        let member = |i: usize| self.array.member(MemberId(i as u8));
        let replacing = (0..M).any(|i| member(i).is_some_and(|m| m.want_replacement))
            && (0..M).any(|i| member(i).is_some_and(|m| m.state == MemberState::Spare));
        let recovery_pending = replacing
            || (0..self.w.slot.len()).any(|i| {
                member(i).is_some_and(|m| matches!(m.state, MemberState::Recovering { .. }))
            });
        if disks.len() < 2 || sick || recovery_pending || self.array.status().sync.is_some() {
            return Ok(());
        }
        let differ = (0..self.w.sectors).any(|s| {
            let v = self.w.disks[disks[0]].read(s);
            disks[1..].iter().any(|&d| self.w.disks[d].read(s) != v)
        });
        self.log(|| format!("scrub: check (mirrors differ: {differ})"));
        let writes = self.w.sync_writes;
        self.w.sync_end = None;
        // (m) judges a pass over the whole array.
        if self.array.set_sync_range(0, MAX_SECTOR).is_err() {
            return Ok(());
        }
        if self.array.start_check(false).is_err() {
            return Ok(());
        }
        self.drain_outputs()?;
        self.settle()?;
        let Some(Event::SyncFinished {
            action: SyncAction::Check,
            mismatches,
        }) = self.w.sync_end
        else {
            return Ok(());
        };
        if self.w.sync_writes != writes {
            return Err(format!(
                "(m) a check pass issued {} sync writes",
                self.w.sync_writes - writes
            ));
        }
        if differ != (mismatches > 0) || differ != (self.array.mismatch_cnt() > 0) {
            return Err(format!(
                "(m) check reported {mismatches} mismatched sectors (mismatch_cnt {}) while the \
                 in-sync members {} differ",
                self.array.mismatch_cnt(),
                if differ { "do" } else { "do not" }
            ));
        }
        if differ {
            self.w.stats.scrubs += 1;
        }
        self.log(|| "scrub: repair".into());
        self.w.sync_end = None;
        if self.array.set_sync_range(0, MAX_SECTOR).is_err()
            || self.array.start_check(true).is_err()
        {
            return Ok(());
        }
        self.drain_outputs()?;
        self.settle()?;
        if !matches!(
            self.w.sync_end,
            Some(Event::SyncFinished {
                action: SyncAction::Repair,
                ..
            })
        ) {
            return Ok(());
        }
        if self.array.status().resync_offset == MAX_SECTOR {
            self.compare_in_sync(true)
                .map_err(|e| format!("(m) after a repair pass: {e}"))?;
        }
        for s in 0..self.w.sectors {
            let Some(v) = self.w.corrupt[s] else { continue };
            let held = self
                .w
                .disks
                .iter()
                .any(|d| d.durable[s] == v || d.cache[s].iter().any(|e| e.0 == v));
            if !held {
                self.w.corrupt[s] = None;
            }
        }
        if let Some(d) = self.w.corrupt_disk {
            let disk = &self.w.disks[d];
            let holds = (0..self.w.sectors).any(|s| {
                self.w.corrupt[s]
                    .is_some_and(|v| disk.durable[s] == v || disk.cache[s].iter().any(|e| e.0 == v))
            });
            if !holds {
                self.w.corrupt_disk = None;
            }
        }
        Ok(())
    }
}

impl World {
    /// What a frontend lends at assembly: each attached disk's bad-block log.
    pub(crate) fn lent_logs<'a>(&self, lend: &mut Lender<'a>) -> Res<[BadBlocks<'a>; crate::M]> {
        let mut lists = core::array::from_fn(|_| BadBlocks::empty());
        for (list, d) in lists.iter_mut().zip(self.slot) {
            if let Some(d) = d {
                *list = lend.list(&self.log_in_array(d), self.swarm.bblog)?;
            }
        }
        Ok(lists)
    }

    /// Disk `d`'s log as a frontend lends it: what lies inside the array's data area now (a
    /// shrink leaves entries beyond the end in the log on disk; `raid1 run` drops them too).
    pub(crate) fn log_in_array(&self, d: usize) -> Vec<BadRange> {
        let end = self.sectors as Sector;
        self.disks[d]
            .bblog
            .iter()
            .filter(|b| b.start < end)
            .map(|b| BadRange {
                start: b.start,
                sectors: b.sectors.min((end - b.start) as u32),
            })
            .collect()
    }
}

impl Sim<'_> {
    /// Before disk `d` is added at position `i`: its log, lent as `raid1 re-add` lends it.
    pub(crate) fn lend_log_for_add(&mut self, i: usize, d: usize) -> Res<()> {
        let list = self
            .lend
            .list(&self.w.log_in_array(d), self.w.swarm.bblog)?;
        self.array
            .set_bad_blocks(MemberId(i as u8), list)
            .map_err(|e| format!("bad-block list for disk {d} at member {i} refused: {e}"))
    }

    /// Whether member `mi` lists a bad sector in `[sector, +sectors)` (a read it cannot serve).
    pub(crate) fn lists_bad_in(&self, mi: usize, sector: u64, sectors: u32) -> bool {
        let end = sector + u64::from(sectors);
        self.array
            .bad_blocks(MemberId(mi as u8))
            .iter()
            .any(|b| u64::from(b.start) < end && sector < u64::from(b.end()))
    }

    /// At a quiet point: 1-8 sectors of an in-sync member get planted values and a bad-block
    /// entry (its log on disk and the engine's list, lent while the array is quiesced).
    pub(crate) fn plant_bad_blocks(&mut self) -> Res<()> {
        let in_sync = self.in_sync_members();
        if !self.atlas().may_add_fault() || !self.lend.room_for(1, self.w.swarm.bblog) {
            return Ok(());
        }
        let mi = in_sync[self.w.rng.below(in_sync.len() as u64) as usize];
        let Some(d) = self.w.slot[mi] else {
            return Ok(());
        };
        let n = 1 + self.w.rng.below(8) as usize;
        let mut at = self.w.rng.below((self.w.sectors - n) as u64) as usize;
        if self.w.rng.chance(500) {
            // Where the hot spot of the workload will read it soon.
            at %= 64;
        }
        // The engine takes a new list of a readable member only while quiesced (reads it
        // planned already would not honour it).
        self.array
            .freeze()
            .map_err(|e| format!("freeze to plant bad blocks: {e}"))?;
        self.drain_outputs()?;
        if self.array.is_quiesced() {
            self.log(|| format!("bad blocks {at}+{n} on member {mi} (disk {d})"));
            for s in at..at + n {
                if self.w.corrupt[s].is_none() {
                    self.scribble(d, s);
                }
            }
            let entry = BadRange {
                start: at as Sector,
                sectors: n as u32,
            };
            self.w.disks[d].bblog = vec![entry];
            self.w.fault_pages.extend((at..at + n).map(|s| s / 8));
            let list = self.lend.list(&[entry], self.w.swarm.bblog)?;
            self.array
                .set_bad_blocks(MemberId(mi as u8), list)
                .map_err(|e| format!("bad-block list refused: {e}"))?;
            self.w.stats.bad_blocks += 1;
        }
        self.array
            .unfreeze()
            .map_err(|e| format!("unfreeze after planting bad blocks: {e}"))?;
        self.drain_outputs()
    }

    /// At a clean stop, once everything is flushed: every attached disk's log becomes the
    /// engine's list (what writes cleared is good data on disk now).
    pub(crate) fn rewrite_bad_block_logs(&mut self) {
        for i in 0..crate::M {
            let Some(d) = self.w.slot[i] else { continue };
            let list = self.array.bad_blocks(MemberId(i as u8)).to_vec();
            self.w.disks[d].bblog = list;
        }
    }
}
