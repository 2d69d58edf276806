//! The checkers: the invariants the simulator holds the engine to, and the ordering oracles.
//! docs/SIM.md states each one; the labels are the ones a violation report names.
//!
//! Here: (a) for reads and failed requests, (a) and (b) at quiet points, (c) on every member
//! read, (d) after every assembly, (g) whenever a superblock lands, (barrier) on every member
//! write, and the ordering oracles, checked at the instant the order matters (a command issued,
//! a metadata write landing, a flush acknowledged) instead of only after a power cut, which
//! catches an ordering slip only when a crash happens to fall inside its window:
//!
//! * (h) dirty and bit before data: when a member write of a logical write or discard is issued,
//!   every in-sync member's superblock on disk is dirty and (with a bitmap) its on-disk bitmap has
//!   the bits of the write's chunks set; when a sync window's write or a read fix's write-back
//!   goes to an in-sync member, the bits alone.
//! * (i) no bit cleared under a write: when a bitmap page lands, none of its clear bits names a
//!   chunk with a member write in flight.
//! * (j) a failure record is durable before the acknowledgement: at every flush (and FUA write)
//!   acknowledgement, a dry-run assembly of the superblocks on disk takes as in sync no member
//!   whose data could, after a power cut now, differ from every value the flush made legitimate.
//!   The same whenever a superblock lands (unless a failed write's tear still awaits its
//!   record, `Sim::torn_open`): a round landing on some members before others must not open a
//!   window in which a cut would assemble a member in sync over what it lacks.
//! * (k) clean means flushed: when a clean superblock (`resync_offset = MAX`) lands, the in-sync
//!   members could not come back from a power cut with different data.
//!
//! Each ordering oracle can be switched off (`--without h`) to measure what it alone catches.
//! Elsewhere, next to what they watch: (e) where commands are issued and requests submitted
//! (`flight.rs`, `workload.rs`, `reconf.rs`), (f) at a clean stop (`crash.rs`), (l) and (m) with
//! the faults they follow (`faults.rs`), and the shadow's own bookkeeping (`shadow.rs`).

use raid1_core::{
    Array, Buffer, MemberId, MemberIo, MemberOp, MemberState, RequestOp, StartPolicy,
    SuperblockState,
};
use raid1_core::{MAX_SECTOR, Sector};

use crate::driver::Sim;
use crate::flight::FlightKind;
use crate::workload::LReq;
use crate::{M, R, Res, S};

/// The oracles' labels, as used by `--without`.
pub const ORACLES: [&str; 4] = ["h", "i", "j", "k"];

impl Sim<'_> {
    /// Whether the ordering oracle `label` is on (`--without` switches it off).
    pub(crate) fn oracle_on(&self, label: &str) -> bool {
        !self.w.opts.without.iter().any(|w| w == label)
    }

    /// (o) the main loop runs to a fixed point: once the engine's outputs after an input are
    /// taken, an input that brings nothing new (a timer call at the same time, no timer due)
    /// yields no member command and no completion. A pass that ended the loop too early (a
    /// state change the loop did not count) would leave work for whichever input comes next.
    pub(crate) fn check_fixed_point(&mut self) -> Res<()> {
        self.array
            .audit()
            .map_err(|e| format!("(o) the engine's indexes disagree with its tables: {e}"))?;
        if self.w.sched.hold_steps != 0 {
            return Ok(());
        }
        if self.array.poll_timeout().is_some_and(|t| t.0 <= self.w.now) {
            return Ok(());
        }
        self.array.handle_timeout(self.t());
        if let Some(cmd) = self.array.poll_io() {
            return Err(format!(
                "(o) the main loop stopped before its fixed point: a call with nothing new \
                 issued {cmd:?}"
            ));
        }
        if let Some(c) = self.array.poll_completion() {
            return Err(format!(
                "(o) the main loop stopped before its fixed point: a call with nothing new \
                 completed request {}",
                c.id
            ));
        }
        Ok(())
    }

    /// (p) no sector is bad on every in-sync member (so that no read can return it) outside
    /// the pages a fault touched (`World::fault_pages`): the engine records a range as bad
    /// only where a member failed an I/O or bad blocks were lent, and a sync that no member
    /// can read a piece for records it a page at a time (md's fix_sync_read_error).
    pub(crate) fn check_holes(&self) -> Res<()> {
        let in_sync = self.in_sync_members();
        let Some((&first, rest)) = in_sync.split_first() else {
            return Ok(());
        };
        for b in self.array.bad_blocks(MemberId(first as u8)) {
            for s in u64::from(b.start)..u64::from(b.end()) {
                if rest.iter().all(|&i| self.lists_bad_in(i, s, 1))
                    && !self.w.fault_pages.contains(&(s as usize / 8))
                {
                    return Err(format!(
                        "(p) sector {s} is bad on every in-sync member ({in_sync:?}), and no \
                         fault touched its page"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Two values `disks` could hold at sector `s` after a power cut now that differ (planted
    /// corruption aside), if there are any; `vals` is scratch room.
    ///
    /// A sector a failed write tore whose record is not on disk yet is left out: metadata
    /// already in flight when the write failed lands whatever it carries, and no power is cut
    /// in that window (see `Sim::land_failed_write`). Acknowledgements are not excused: (j)
    /// holds every flush and write answered after the failure to its record.
    fn could_differ(&self, disks: &[usize], s: usize, vals: &mut Vec<u64>) -> Option<(u64, u64)> {
        vals.clear();
        for &d in disks {
            if !self.torn_unrecorded(d, s) {
                self.survivable_unplanted(d, s, vals);
            }
        }
        let first = *vals.first()?;
        vals.iter().find(|v| **v != first).map(|v| (first, *v))
    }

    /// Whether sector `s` of disk `d` was torn by a failed write whose record (the member's
    /// failure, or the sector on its bad-block log) is not known to be on disk. A member that a
    /// power cut now would bring back stale counts too: the other members' superblocks of the
    /// round carrying the record may land before its own, and until that one lands the torn
    /// sector is not in sync either way (a cut would rebuild the member).
    fn torn_unrecorded(&self, d: usize, s: usize) -> bool {
        !self.w.disks[d].logs_bad(s)
            && self
                .w
                .torn_open
                .iter()
                .any(|(dd, _, sectors)| *dd == d && sectors.contains(&s))
    }

    /// Whether a power cut now would bring member `mi`, on disk `d`, back in sync (the dry
    /// assembly of the disks as they are).
    pub(crate) fn in_sync_after_cut(&self, d: usize, mi: usize) -> bool {
        self.w.slot.get(mi) == Some(&Some(d))
            && self
                .dry_assemble(&self.w.slot)
                .is_some_and(|(_, st)| st[mi] == MemberState::InSync)
    }

    /// Values disk `d` may hold at sector `s` after a power cut now: its durable value, any of
    /// its unflushed ones, and any in-flight write over `s` (torn writes land sector by sector).
    pub(crate) fn survivable(&self, d: usize, s: usize, out: &mut Vec<u64>) {
        let disk = &self.w.disks[d];
        out.push(disk.durable[s]);
        out.extend(disk.cache[s].iter().map(|e| e.0));
        for f in &self.w.flights {
            if f.disk != d {
                continue;
            }
            if let FlightKind::Data {
                sector,
                sectors,
                data,
                op: op @ (MemberOp::Write | MemberOp::Discard),
                ..
            } = &f.kind
            {
                let lo = *sector as usize;
                if (lo..lo + *sectors as usize).contains(&s) {
                    out.push(if *op == MemberOp::Discard {
                        0
                    } else {
                        data[s - lo]
                    });
                }
            }
        }
    }

    /// `survivable`, less what disk `d` is excused for (planted corruption, sectors in its
    /// bad-block log): the values the in-sync mirrors must agree on.
    pub(crate) fn survivable_unplanted(&self, d: usize, s: usize, out: &mut Vec<u64>) {
        let from = out.len();
        self.survivable(d, s, out);
        let mut k = from;
        while k < out.len() {
            if self.excused(d, s, out[k]) {
                out.swap_remove(k);
            } else {
                k += 1;
            }
        }
    }

    /// Values disk `d`, assembled in sync, may legitimately hold at `s` after a power cut now
    /// (what invariant (d) accepts).
    pub(crate) fn legit_after_crash(&self, d: usize, s: usize, v: u64) -> bool {
        self.w.shadow.may_survive(s, v) || self.excused(d, s, v)
    }

    /// Whether a member command is the write of a logical write or discard (not a read-error
    /// write-back, not sync I/O).
    pub(crate) fn logical_write(
        &self,
        op: MemberOp,
        buffer: Buffer,
        sector: u64,
        sectors: u32,
    ) -> bool {
        match (op, buffer) {
            (MemberOp::Write, Buffer::Request { handle, .. }) => self
                .w
                .reqs
                .values()
                .any(|r| r.handle == handle && r.op == RequestOp::Write),
            (MemberOp::Discard, _) => {
                self.w.reqs.values().any(|r| {
                    r.op == RequestOp::Discard && r.sector == sector && r.sectors == sectors
                })
            }
            _ => false,
        }
    }

    /// (h): called when the engine hands out a member write.
    pub(crate) fn oracle_dirty_bit_before_data(&self, io: &MemberIo) -> Res<()> {
        if !self.oracle_on("h") {
            return Ok(());
        }
        // The writes of logical writes and discards; and a sync window's write or a read fix's
        // write-back to an in-sync member, which must wait for the bits of their chunks too
        // (a power cut may tear them, and only a set bit makes the assembly resync the chunk:
        // simulator bug 28), though not for a dirty superblock (nothing was acknowledged).
        let logical = self.logical_write(io.op, io.buffer, u64::from(io.sector), io.sectors);
        let to_in_sync = io.op == MemberOp::Write
            && self
                .array
                .member(io.member)
                .is_some_and(|m| m.state == MemberState::InSync);
        if !logical && !to_in_sync {
            return Ok(());
        }
        let chunk = u64::from(self.w.cfg.bitmap_chunk_sectors);
        for i in self.in_sync_members() {
            let Some(d) = self.w.slot[i] else { continue };
            let disk = &self.w.disks[d];
            // A member in sync here that neither its disk nor a superblock in flight to it
            // says is in sync cannot come back in sync from a power cut now: its recovery
            // ended before its first superblock landed (seed 950217 at 30,000 steps).
            if !disk.sb.is_some_and(|sb| sb.says_in_sync()) && !self.sb_in_flight_in_sync(d) {
                continue;
            }
            // A sync write or write-back waits for a round that was sent, not one that landed
            // everywhere: the last in-sync member kept while its metadata writes fail has no
            // bits on disk to wait for (soak seed 1317186: a dead disk, the array broken; a
            // logical write then fails instead).
            if !logical && self.w.meta_streak.get(d).is_some_and(Option::is_some) {
                continue;
            }
            match disk.sb {
                _ if !logical => {}
                Some(sb) if sb.resync_offset != MAX_SECTOR => {}
                sb => {
                    return Err(format!(
                        "(h) write {}+{} issued to member {} while in-sync member {i}'s \
                         superblock on disk is not dirty: {sb:?}",
                        io.sector, io.sectors, io.member.0
                    ));
                }
            }
            if chunk == 0 || io.sectors == 0 {
                continue;
            }
            let first = u64::from(io.sector) / chunk;
            let last = (u64::from(io.sector) + u64::from(io.sectors) - 1) / chunk;
            for c in first..=last {
                let set = disk
                    .bitmap
                    .get((c / 8) as usize)
                    .is_some_and(|b| b & (1 << (c % 8)) != 0);
                if !set {
                    return Err(format!(
                        "(h) write {}+{} issued to member {} while in-sync member {i}'s bitmap \
                         on disk has chunk {c} clear",
                        io.sector, io.sectors, io.member.0
                    ));
                }
            }
        }
        Ok(())
    }

    /// (i): called when bitmap page `page` (`bytes`, replacing `old`) has landed on member
    /// `member`.
    pub(crate) fn oracle_no_clear_under_write(
        &self,
        member: usize,
        page: u32,
        bytes: &[u8],
        old: &[u8],
    ) -> Res<()> {
        if !self.oracle_on("i") {
            return Ok(());
        }
        if self
            .array
            .member(MemberId(member as u8))
            .is_none_or(|m| m.state == MemberState::Faulty)
        {
            return Ok(());
        }
        let chunk = u64::from(self.w.cfg.bitmap_chunk_sectors);
        let first_chunk = u64::from(page) * u64::from(self.w.cfg.bitmap_page_bytes) * 8;
        for f in &self.w.flights {
            let FlightKind::Data {
                op: op @ (MemberOp::Write | MemberOp::Discard),
                sector,
                sectors,
                buffer,
                ..
            } = &f.kind
            else {
                continue;
            };
            // Logical writes only: a read-error write-back rewrites what the other mirrors
            // hold, a full recovery ignores the bitmap, and the daemon clears nothing while a
            // resync, check or repair runs or the array is degraded.
            if *sectors == 0 || !self.logical_write(*op, *buffer, *sector, *sectors) {
                continue;
            }
            for c in sector / chunk..=(sector + u64::from(*sectors) - 1) / chunk {
                let Some(rel) = c.checked_sub(first_chunk) else {
                    continue;
                };
                let Some(b) = bytes.get((rel / 8) as usize) else {
                    continue;
                };
                if b & (1 << (rel % 8)) == 0 {
                    return Err(format!(
                        "(i) bitmap page {page} with chunk {c} clear landed on member {member} \
                         while a write {sector}+{sectors} to member {} is in flight",
                        f.member
                    ));
                }
            }
        }
        // A bit going from set to clear promises that the in-sync mirrors agree durably on its
        // chunk (a resync after a power cut will skip it): no unflushed or in-flight write
        // there may differ between them.
        if self.array.status().resync_offset != MAX_SECTOR {
            return Ok(());
        }
        let disks = self.in_sync_disks();
        let mut vals = Vec::new();
        for (k, (new, old)) in bytes.iter().zip(old).enumerate() {
            let cleared = old & !new;
            for bit in 0..8 {
                if cleared & (1 << bit) == 0 {
                    continue;
                }
                let c = first_chunk + k as u64 * 8 + bit;
                let lo = (c * chunk) as usize;
                for s in lo..(lo + chunk as usize).min(self.w.sectors) {
                    if let Some((a, b)) = self.could_differ(&disks, s, &mut vals) {
                        return Err(format!(
                            "(i) bitmap page {page} clearing chunk {c} landed on member {member} \
                             while the in-sync members (disks {disks:?}) could come back from a \
                             power cut different at sector {s}: {a:#x} vs {b:#x}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// What assembling the disks in `slots` from the superblocks and bitmaps on them now would
    /// give: the superblocks found and each member's state (`None` if the array would not
    /// start).
    pub(crate) fn dry_assemble(
        &self,
        slots: &[Option<usize>; M],
    ) -> Option<([Option<SuperblockState<M>>; M], [MemberState; M])> {
        let mut found = [None; M];
        for (f, d) in found.iter_mut().zip(slots) {
            if let Some(d) = d {
                *f = self.w.disks[*d].sb;
            }
        }
        let mut bits = vec![0u8; self.w.bm_bytes];
        for d in slots.iter().flatten() {
            for (u, b) in bits.iter_mut().zip(&self.w.disks[*d].bitmap) {
                *u |= *b;
            }
        }
        let mut hot = vec![0u8; self.w.bm_bytes];
        // With the bitmap the freshest superblock announces (it may have been added or dropped
        // while running).
        let fresh = usize::from(Array::<M, R, S>::choose_freshest(&found)?);
        let has_bitmap = found
            .get(fresh)
            .copied()
            .flatten()
            .is_some_and(|s| s.bitmap)
            && self.w.bitmap_chunk > 0;
        let mut cfg = self.w.cfg;
        cfg.bitmap_chunk_sectors = if has_bitmap { self.w.bitmap_chunk } else { 0 };
        cfg.write_behind = found
            .get(fresh)
            .copied()
            .flatten()
            .filter(|_| has_bitmap)
            .map_or(0, |s| s.write_behind);
        // The size the freshest superblock records (a grow may not have landed yet).
        if let Some(size) = found.get(fresh).copied().flatten().map(|s| s.size) {
            cfg.data_sectors = size;
        }
        let storage = has_bitmap.then_some((&mut bits[..], &mut hot[..]));
        let dry =
            Array::<M, R, S>::assemble(cfg, storage, &found, StartPolicy::AllowDegraded).ok()?;
        let mut states = [MemberState::Absent; M];
        for (i, st) in states.iter_mut().enumerate() {
            if let Some(m) = dry.member(MemberId(i as u8)) {
                *st = m.state;
            }
        }
        Some((found, states))
    }

    /// (j): called after a flush (or FUA write) was acknowledged and the shadow updated, and
    /// after a superblock landed; `what`: which of these, in words.
    pub(crate) fn oracle_record_durable(&self, what: &str) -> Res<()> {
        if !self.oracle_on("j") {
            return Ok(());
        }
        let Some((found, states)) = self.dry_assemble(&self.w.slot) else {
            // Nothing would start: nothing could be served wrongly.
            return Ok(());
        };
        let mut vals = Vec::new();
        for (i, state) in states.iter().enumerate() {
            if *state != MemberState::InSync {
                continue;
            }
            let Some(d) = self.w.slot[i] else { continue };
            for s in 0..self.w.sectors {
                if self.behind_excused(&found, &states, i, s) {
                    continue;
                }
                vals.clear();
                self.survivable(d, s, &mut vals);
                if let Some(v) = vals.iter().find(|v| !self.legit_after_crash(d, s, **v)) {
                    return Err(format!(
                        "(j) {what}, a power cut would assemble member \
                         {i} as in sync (superblocks on disk: {found:?}) while it may hold {v:#x} \
                         at sector {s}, durable value(s) {:x?}",
                        self.w.shadow[s].base
                    ));
                }
            }
        }
        Ok(())
    }

    /// Write-behind: member `i` may lack acknowledged writes at sector `s` and that is no loss
    /// when its own superblock says WriteMostly (only those are written behind), the array
    /// would come up dirty with a resync that covers the sector (its bitmap bit set), and
    /// another member that is not WriteMostly would come up in sync (the resync's source, and
    /// the source of reads there until then, as md's resync reads the first in-sync mirror
    /// that is not write-mostly). Not without a bitmap: its header is what tells an assembly
    /// that a member lags, and the engine keeps it until the lag has ended (seed 7006344).
    fn behind_excused(
        &self,
        found: &[Option<SuperblockState<M>>; M],
        states: &[MemberState; M],
        i: usize,
        s: usize,
    ) -> bool {
        let wm = |j: usize| found[j].is_some_and(|sb| sb.write_mostly);
        if !wm(i) {
            return false;
        }
        let Some(fresh) = Array::<M, R, S>::choose_freshest(found) else {
            return false;
        };
        let Some(fresh) = found[usize::from(fresh)] else {
            return false;
        };
        if fresh.resync_offset == MAX_SECTOR {
            return false;
        }
        let chunk = u64::from(self.w.bitmap_chunk);
        let covered = fresh.bitmap && chunk > 0 && {
            let c = s as u64 / chunk;
            let (byte, bitno) = ((c / 8) as usize, c % 8);
            self.w.slot.iter().flatten().any(|&d| {
                self.w.disks[d]
                    .bitmap
                    .get(byte)
                    .is_some_and(|b| b & (1 << bitno) != 0)
            })
        };
        covered && (0..M).any(|j| j != i && states[j] == MemberState::InSync && !wm(j))
    }

    /// (k): called when a clean superblock has landed on member `member`.
    pub(crate) fn oracle_clean_means_flushed(&self, member: usize) -> Res<()> {
        if !self.oracle_on("k") {
            return Ok(());
        }
        let disks = self.in_sync_disks();
        if disks.len() < 2 {
            return Ok(());
        }
        // What the engine lists as bad for a member that the superblocks on disk would not
        // bring back in sync does not matter: every superblock that can still land and make
        // it in sync carries that list (a recovery records a page no member can read before
        // it passes it).
        let assembled = self.dry_assemble(&self.w.slot).map(|(_, st)| st);
        let rebuilt: Vec<(usize, usize)> = (0..M)
            .filter_map(|mi| Some((self.w.slot[mi]?, mi)))
            .filter(|&(d, mi)| {
                disks.contains(&d) && assembled.is_none_or(|st| st[mi] != MemberState::InSync)
            })
            .collect();
        let mut vals = Vec::new();
        let mut at = Vec::with_capacity(disks.len());
        for s in 0..self.w.sectors {
            at.clear();
            at.extend(disks.iter().copied().filter(|&d| {
                !rebuilt
                    .iter()
                    .any(|&(rd, mi)| rd == d && self.lists_bad_in(mi, s as u64, 1))
            }));
            if let Some((a, b)) = self.could_differ(&at, s, &mut vals) {
                return Err(format!(
                    "(k) a clean superblock landed on member {member} while the in-sync members \
                     (disks {disks:?}) could come back from a power cut different at sector {s}: \
                     {a:#x} vs {b:#x}"
                ));
            }
        }
        Ok(())
    }
}

impl Sim<'_> {
    /// Invariant (g): one event count names one array table. Two disks whose superblocks both
    /// claim in sync (own role active, no recovery offset) with the same `events` must carry the
    /// same `raid_disks` and `dev_roles`: otherwise assembly, which ranks members by `events`
    /// alone, may take the one that missed a change as the freshest (the hazard of md's events
    /// roll-back when a real change follows it).
    pub(crate) fn check_count_names_one_table(&self, disk: usize) -> Res<()> {
        let Some(new) = self.w.disks[disk].sb else {
            return Ok(());
        };
        if !new.says_in_sync() {
            return Ok(());
        }
        for (k, d) in self.w.disks.iter().enumerate() {
            let Some(old) = d.sb else { continue };
            if k != disk
                && old.says_in_sync()
                && old.events == new.events
                && (!raid1_core::same_table(&old.roles, &new.roles)
                    || old.raid_disks != new.raid_disks)
            {
                return Err(format!(
                    "(g) disks {k} and {disk} both hold events {} with different tables: {:?}/{} vs {:?}/{}",
                    new.events, old.roles, old.raid_disks, new.roles, new.raid_disks
                ));
            }
        }
        Ok(())
    }

    /// Invariants (a) and (b) at a quiet point: the in-sync members are identical and hold the
    /// shadow's current values, except where silent corruption was planted (unless `strict`,
    /// right after a repair: then the mirrors must be identical everywhere).
    pub(crate) fn compare_in_sync(&mut self, strict: bool) -> Res<()> {
        let in_sync = self.in_sync_members();
        self.log(|| format!("quiet check, in sync {in_sync:?}, slots {:?}", self.w.slot));
        if in_sync.is_empty() {
            return Err("no in-sync member".into());
        }
        let mut held: Vec<(usize, u64)> = Vec::with_capacity(M);
        for s in 0..self.w.sectors {
            // A sector an in-sync member lists as bad is never read there: it may hold
            // anything (md leaves it alone until a write makes it good).
            held.clear();
            for &i in &in_sync {
                let d = self.w.slot[i].ok_or("in-sync member without disk")?;
                if !self.lists_bad_in(i, s as u64, 1) {
                    held.push((i, self.w.disks[d].read(s)));
                }
            }
            let Some(&(first, v)) = held.first() else {
                continue;
            };
            let mut good = None;
            for &(i, w) in &held {
                let planted = !strict && (self.corrupt_allowed(s, w) || self.corrupt_allowed(s, v));
                if w != v && !planted {
                    return Err(format!(
                        "(b) in-sync members {first} and {i} differ at sector {s}: {v:#x} vs {w:#x}"
                    ));
                }
                if !self.w.shadow[s].current.contains(&w) && !self.corrupt_allowed(s, w) {
                    return Err(format!(
                        "(a) sector {s} holds {w:#x} on in-sync member {i}, expected one of {:x?}",
                        self.w.shadow[s].current
                    ));
                }
                if !self.corrupt_allowed(s, w) {
                    good = Some(w);
                }
            }
            if let Some(v) = good {
                self.w.shadow.settled(s, v);
            }
        }
        Ok(())
    }

    /// Whether `v` at sector `s` is a value planted by silent corruption, not yet repaired.
    pub(crate) fn corrupt_allowed(&self, s: usize, v: u64) -> bool {
        self.w.corrupt.get(s).copied().flatten() == Some(v)
    }

    /// Whether disk `d` may hold anything at `s` as far as the oracles on what a power cut
    /// leaves are concerned: `v` is planted corruption, or `s` is in `d`'s bad-block log (which
    /// every assembly lends the engine, so nothing ever reads `s` there; md's resync leaves
    /// it alone too).
    pub(crate) fn excused(&self, d: usize, s: usize, v: u64) -> bool {
        self.corrupt_allowed(s, v)
            || self.w.disks[d].logs_bad(s)
            || self.w.cut_tears.contains(&(d, s, v))
    }

    /// The disk holding a sector a power cut tore inside that no write has replaced yet
    /// (`Swarm::cut_tears`), if any: its member is unhealthy (atlas rule 1), and is no
    /// member's keeper (rule 2), until then.
    pub(crate) fn cut_torn(&self) -> Option<usize> {
        self.pending_tear().map(|t| t.0)
    }

    /// The first cut tear no write has replaced yet: (disk, sector, value).
    pub(crate) fn pending_tear(&self) -> Option<(usize, usize, u64)> {
        let disks = &self.w.disks;
        self.w
            .cut_tears
            .iter()
            .copied()
            .find(|t| still_torn(disks, t))
    }

    /// Forgets the cut tears that writes replaced.
    pub(crate) fn forget_mended_tears(&mut self) {
        let disks = &self.w.disks;
        self.w.cut_tears.retain(|t| still_torn(disks, t));
    }

    /// (c): a member read (request or sync) never touches a sector in that member's bad-block
    /// list (md's read_balance and sync_request never take one as source), and a read for a
    /// logical request goes only to a member whose data is current.
    pub(crate) fn check_member_read(&self, io: &MemberIo, disk: usize) -> Res<()> {
        let mi = io.member.0 as usize;
        let io_sector = u64::from(io.sector);
        let end = io_sector + u64::from(io.sectors);
        // A request read planned before a failing write over the same sectors recorded them
        // (the write is not acknowledged yet, so either value may be read; md's read_balance
        // also decides at submit): (a) still checks what it returns.
        let racing_write = matches!(io.buffer, Buffer::Request { .. })
            && self.w.reqs.values().any(|r| {
                matches!(r.op, RequestOp::Write | RequestOp::Discard)
                    && r.sector < end
                    && io_sector < r.sector + u64::from(r.sectors)
            });
        if let Some(b) = self
            .array
            .bad_blocks(io.member)
            .iter()
            .find(|b| u64::from(b.start) < end && io_sector < u64::from(b.end()))
            .filter(|_| !racing_write)
        {
            return Err(format!(
                "(c) read {}+{} ({:?}) sent to member {mi}, whose bad-block list names {}+{}",
                io.sector, io.sectors, io.buffer, b.start, b.sectors
            ));
        }
        if !matches!(io.buffer, Buffer::Request { .. }) {
            return Ok(());
        }
        let state = self.array.member(io.member).map(|m| m.state);
        let valid = match state {
            Some(MemberState::InSync) => true,
            Some(MemberState::Recovering {
                recovery_offset, ..
            }) => u64::from(recovery_offset) >= end,
            _ => false,
        };
        if !valid {
            return Err(format!(
                "(c) read {}+{} sent to member {mi} in state {state:?}",
                io.sector, io.sectors
            ));
        }
        for s in io_sector..end {
            let v = self.w.disks[disk].read(s as usize);
            if !self.w.shadow.is_current(s as usize, v) && !self.corrupt_allowed(s as usize, v) {
                return Err(format!(
                    "(c) read of sector {s} sent to member {mi} (state {state:?}) which holds \
                     {v:#x}, not current {:x?}",
                    self.w.shadow[s as usize].current
                ));
            }
        }
        Ok(())
    }

    /// (barrier), an environment check (TigerBeetle's habit): two writes in flight over the
    /// same sectors of one member mean the barriers failed to keep sync I/O, read-error
    /// write-backs and normal writes apart.
    pub(crate) fn check_no_overlapping_write(&self, io: &MemberIo, disk: usize) -> Res<()> {
        let io_sector = u64::from(io.sector);
        let end = io_sector + u64::from(io.sectors);
        let clash = self.w.flights.iter().find(|f| {
            f.disk == disk
                && matches!(&f.kind, FlightKind::Data { op: MemberOp::Write | MemberOp::Discard, sector, sectors, .. }
                    if *sector < end && io_sector < sector + u64::from(*sectors))
        });
        if let Some(f) = clash {
            return Err(format!(
                "(barrier) overlapping writes in flight on member {}: {io:?} and {:?}",
                io.member.0, f.kind
            ));
        }
        Ok(())
    }

    /// (d), right after an assembly: every in-sync member holds, per sector, a value that may
    /// legitimately have survived the power cut (the last flushed value or a write that was
    /// unflushed or in flight), or one it is excused for, or the engine lists the sector as bad
    /// for it (never read there, (c)): a recovery the assembly resumes may end at once by
    /// recording the rest as bad, no member being able to give it (soak seed 109035), and the
    /// round that writes that log is still to come.
    pub(crate) fn check_assembled_members(&self) -> Res<()> {
        let in_sync = self.in_sync_members();
        let wm = |i: usize| {
            self.array
                .member(MemberId(i as u8))
                .is_some_and(|m| m.write_mostly)
        };
        // Write-behind: a WriteMostly member may lack acknowledged writes where the resync to
        // come (the array is dirty, the chunk's bit set) copies them from a member that is
        // not WriteMostly.
        let chunk = u64::from(self.w.cfg.bitmap_chunk_sectors);
        let behind = |i: usize, s: usize| {
            self.array.config().write_behind != 0
                && chunk > 0
                && wm(i)
                && self.array.status().resync_offset != MAX_SECTOR
                && self.array.bitmap_bit((s as u64 / chunk) as Sector)
                && in_sync.iter().any(|&j| j != i && !wm(j))
        };
        for &i in &in_sync {
            let d = self.w.slot[i].ok_or("in-sync member without disk")?;
            for s in 0..self.w.sectors {
                let v = self.w.disks[d].read(s);
                if !self.w.shadow[s].base.contains(&v)
                    && !self.excused(d, s, v)
                    && !behind(i, s)
                    && !self.lists_bad_in(i, s as u64, 1)
                {
                    return Err(format!(
                        "(d) after crash, in-sync member {i} holds {v:#x} at sector {s}, durable value(s) {:x?}",
                        self.w.shadow[s].base
                    ));
                }
            }
        }
        Ok(())
    }

    /// (a) for a failed request: acceptable only if every in-sync member returned an error
    /// during the request (the fault atlas normally prevents that; transient errors can still
    /// line up), or, for a read, where a member lists bad blocks in its range (md's read_balance
    /// finds no member with good data there) or may lack acknowledged writes there
    /// ([`World::lagging`]).
    pub(crate) fn failure_excused(&self, r: &LReq) -> bool {
        self.in_sync_members().iter().all(|&i| {
            (r.op == RequestOp::Read
                && (self.lists_bad_in(i, r.sector, r.sectors)
                    || self.may_lag_in(i, r.sector, r.sectors)))
                || self.w.slot[i].is_some_and(|d| {
                    let base = r.errs_at_submit.get(d).copied().unwrap_or(0);
                    let base = match self.w.meta_streak.get(d).copied().flatten() {
                        Some(streak) => base.min(streak),
                        None => base,
                    };
                    self.w.errs.get(d).copied().unwrap_or(0) > base
                })
        })
    }

    /// Whether member `i` may lack acknowledged writes in `[sector, +sectors)`: it came up
    /// lagging ([`World::lagging`]), the resync has not ended, and a chunk of the range is
    /// dirty (or the array has no bitmap).
    fn may_lag_in(&self, i: usize, sector: u64, sectors: u32) -> bool {
        let chunk = u64::from(self.array.config().bitmap_chunk_sectors);
        self.still_lagging() & (1 << i) != 0
            && (chunk == 0
                || (sector / chunk..=(sector + u64::from(sectors.max(1)) - 1) / chunk)
                    .any(|c| self.array.bitmap_bit(c as Sector)))
    }

    /// (a) and (n) for a read `id` that succeeded: each sector returned a value allowed while
    /// the read was in flight, and, with `pinned` (the read is clear of every bad-block list),
    /// the value an earlier read returned while its source holds it unchanged.
    pub(crate) fn check_read_answer(&self, id: u64, r: &LReq, clear_of_bad: bool) -> Res<()> {
        let b = &self.w.bufs[r.handle as usize];
        for (j, (v, allowed)) in b.iter().zip(&r.allowed).enumerate() {
            let s = r.sector as usize + j;
            if !allowed.contains(v) {
                return Err(format!(
                    "(a) read of sector {s} returned {v:#x}, expected one of {allowed:x?} (req {id})"
                ));
            }
            if let Some(p) = r.pins.get(j).copied().flatten().filter(|_| clear_of_bad) {
                if self.pinned(s) == Some(p) && *v != p && self.w.corrupt[s].is_none() {
                    return Err(format!(
                        "(n) read of sector {s} returned {v:#x}, an earlier read returned \
                         {p:#x} and its source holds it unchanged (req {id})"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Whether cut tear `(disk, sector, value)` still holds its value (no write replaced it).
fn still_torn(disks: &[crate::disk::Disk], &(d, s, v): &(usize, usize, u64)) -> bool {
    disks[d].durable[s] == v
}
