//! Reconfiguration with I/O in flight: each change takes its own `freeze()` when planned and is
//! applied once the array is quiesced (several may be pending at once); administrative `fail`
//! WriteMostly toggles and md's `sync_action` frozen / idle go in directly.

use raid1_core::Sector;
use raid1_core::{AddMember, BadBlocks, MemberId, MemberState, ReconfigError, Role};
use raid1_testkit::{Countdown, Health};

use crate::disk::Disk;
use crate::driver::Sim;
use crate::{M, Res};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reconf {
    Remove(usize),
    AddNew(usize),
    ReAdd(usize, usize),
    Grow,
    Shrink,
    /// md's `--readonly` (it needs the array quiesced).
    ReadOnly,
    /// `raid1 grow --bitmap none`, or `internal` when the array has none.
    Bitmap,
    /// `raid1 grow --size`: a new size (grown into the disks' room, or shrunk) with I/O in
    /// flight; a running sync is stopped first, as mdadm freezes `sync_action`.
    Resize,
}

impl Sim<'_> {
    /// A reconfiguration step: plan a change (it takes a freeze), fail an in-sync member by
    /// hand, or toggle WriteMostly, among the kinds the seed's swarm has on.
    pub(crate) fn plan_reconfig(&mut self) -> Res<()> {
        let st = self.array.status();
        let choice = self.w.rng.below(8);
        let op = match choice {
            // Decided on the side stream: seeds without it draw what they drew before.
            5 if self.w.swarm.grow_size && self.w.pending.is_empty() && self.w.side.chance(250) => {
                if st.sync.is_some() && self.w.resize_sync_was.is_none() {
                    self.w.resize_sync_was = Some(st.sync_frozen);
                    self.array.set_sync_frozen(true);
                }
                Reconf::Resize
            }
            0 => {
                // Remove a faulty or spare member.
                let c: Vec<usize> = (0..M)
                    .filter(|&i| {
                        self.w.slot[i].is_some()
                            && !self
                                .w
                                .pending
                                .iter()
                                .any(|p| matches!(p, Reconf::Remove(x) if *x == i))
                            && matches!(
                                self.array.member(MemberId(i as u8)).map(|m| m.state),
                                Some(MemberState::Faulty | MemberState::Spare)
                            )
                    })
                    .collect();
                if c.is_empty() {
                    return Ok(());
                }
                Reconf::Remove(c[self.w.rng.below(c.len() as u64) as usize])
            }
            1 | 2 => {
                let free: Vec<usize> = (0..M)
                    .filter(|&i| self.w.slot[i].is_none() && !self.pending_uses(i))
                    .collect();
                if free.is_empty() {
                    return Ok(());
                }
                let at = free[self.w.rng.below(free.len() as u64) as usize];
                if choice == 2 && !self.w.pool.is_empty() {
                    let k = self.w.rng.below(self.w.pool.len() as u64) as usize;
                    let d = self.w.pool[k];
                    // A device comes back at the position its superblock names (mdadm's
                    // --re-add passes the dev_number it holds; the kernel keeps it), as every
                    // frontend does: placed elsewhere, a crash before its first superblock
                    // round left a member whose superblock names another position, which no
                    // assembly sees. That position taken: not now.
                    let at = match self.w.disks[d].sb.map(|sb| usize::from(sb.this_member.0)) {
                        Some(own) if free.contains(&own) => own,
                        Some(_) => return Ok(()),
                        None => at,
                    };
                    self.w.pool.remove(k);
                    self.w.disks[d].member.health = Health::Healthy;
                    self.w.disks[d].member.fail_write = Countdown::OFF;
                    Reconf::ReAdd(at, d)
                } else {
                    Reconf::AddNew(at)
                }
            }
            3 => {
                // Fail an in-sync member (administrative), with I/O in flight, as the atlas
                // allows (rules 2 and 3).
                let in_sync = self.in_sync_members();
                if self.w.swarm.admin_fail && self.atlas().may_fail_by_hand() {
                    let mut mi = in_sync[self.w.rng.below(in_sync.len() as u64) as usize];
                    // While members lag, now and then the one member that has every
                    // acknowledged write (the engine must refuse it): from the lag stream.
                    let up_to_date: Vec<usize> = in_sync
                        .iter()
                        .copied()
                        .filter(|&i| self.w.lagging & (1 << i) == 0)
                        .collect();
                    if self.w.lagging != 0 && up_to_date.len() == 1 && self.w.lag_side.chance(300) {
                        mi = up_to_date[0];
                    }
                    if !self.atlas().may_take(mi) {
                        return Ok(());
                    }
                    self.log(|| format!("fail member {mi}"));
                    match self.array.fail_member(self.t(), MemberId(mi as u8)) {
                        Ok(()) => {}
                        // The engine keeps the one member with every acknowledged write
                        // while the others may lack some (World::lagging): only then.
                        Err(ReconfigError::LastUpToDate(_))
                            if self.array.status().resync_offset != raid1_core::MAX_SECTOR
                                && up_to_date == [mi] =>
                        {
                            self.log(|| format!("fail of member {mi} refused: the others lag"));
                            return Ok(());
                        }
                        Err(e) => return Err(format!("fail refused: {e:?}")),
                    }
                    self.drain_outputs()?;
                }
                return Ok(());
            }
            4 if self.w.swarm.failfast && self.w.rng.chance(300) => {
                // Toggle FailFast: an error on it then fails it at once (not the last one).
                let mi = self.w.rng.below(M as u64) as u8;
                let on = self.w.rng.chance(500);
                self.log(|| format!("failfast {on} on member {mi}"));
                let _ = self.array.set_failfast(MemberId(mi), on);
                return self.drain_outputs();
            }
            4 if self.w.swarm.write_mostly && self.w.rng.chance(300) => {
                // Toggle WriteMostly on a member: reads avoid it while another can serve them.
                let mi = self.w.rng.below(M as u64) as u8;
                let on = self.w.rng.chance(500);
                // Rule 5 from the other side: with write-behind, not when the fast mirrors
                // left would all be unhealthy (soak seed 109356: the one left was flaky, failed
                // with writes behind on this one, which then held the only copy without them;
                // md loses them too).
                let unhealthy = self.atlas().unhealthy_member();
                let fast_left: Vec<usize> = self
                    .in_sync_members()
                    .into_iter()
                    .filter(|&j| j != usize::from(mi))
                    .filter(|&j| {
                        self.array
                            .member(MemberId(j as u8))
                            .is_some_and(|m| !m.write_mostly)
                    })
                    .collect();
                if on
                    && self.array.config().write_behind != 0
                    && !fast_left.is_empty()
                    && fast_left.iter().all(|&j| unhealthy == Some(j))
                {
                    self.log(|| {
                        format!("write-mostly on member {mi} refused: the rest is unhealthy")
                    });
                    return Ok(());
                }
                self.log(|| format!("write-mostly {on} on member {mi}"));
                let _ = self.array.set_write_mostly(MemberId(mi), on);
                return self.drain_outputs();
            }
            5 if self.w.swarm.sync_action && self.w.rng.chance(300) => {
                // md's sync_action by hand: frozen (the running sync stops at its
                // checkpoint, none starts), back to idle, or idle during a sync (it stops; a
                // resync or recovery starts again from its checkpoint).
                let frozen = self.array.status().sync_frozen;
                let roll = self.w.rng.below(3);
                self.log(|| format!("sync_action: frozen {frozen}, roll {roll}"));
                match (frozen, roll) {
                    (true, _) => self.array.set_sync_frozen(false),
                    (false, 0) => self.array.set_sync_frozen(true),
                    (false, _) => self.array.stop_sync(),
                }
                return self.drain_outputs();
            }
            6 if (self.w.swarm.read_only || self.w.swarm.assemble_read_only)
                && st.read_only_asked =>
            {
                // md's --readwrite: at once.
                self.log(|| "read-write".into());
                self.w.ro_toggles += 1;
                self.array
                    .set_read_only(self.t(), false)
                    .map_err(|e| format!("read-write refused: {e:?}"))?;
                return self.drain_outputs();
            }
            6 if self.w.swarm.read_only && self.w.pending.is_empty() => Reconf::ReadOnly,
            7 if self.w.swarm.replace && self.w.rng.chance(400) => {
                // mdadm --replace, sometimes --with a named spare: no freeze (md only sets
                // WantReplacement); the engine attaches a spare when no sync runs.
                let in_sync = self.in_sync_members();
                let Some(&mi) = self.w.rng.pick(&in_sync) else {
                    return Ok(());
                };
                let spares: Vec<usize> = (0..M)
                    .filter(|&i| {
                        self.array
                            .member(MemberId(i as u8))
                            .is_some_and(|m| m.state == MemberState::Spare)
                    })
                    .collect();
                let with = if self.w.rng.chance(500) {
                    self.w.rng.pick(&spares).map(|&s| MemberId(s as u8))
                } else {
                    None
                };
                self.log(|| format!("replace member {mi} with {with:?}"));
                if let Err(e) = self.array.replace(MemberId(mi as u8), with) {
                    self.log(|| format!("replace refused: {e:?}"));
                }
                return self.drain_outputs();
            }
            6 if self.w.swarm.write_behind.is_some() && self.w.rng.chance(200) => {
                // md's --grow --write-behind: on, off or a new limit, with I/O in flight.
                let n = if self.w.rng.chance(300) {
                    0
                } else {
                    self.w.rng.range(1, 8) as u16
                };
                self.log(|| format!("write-behind {n}"));
                if let Err(e) = self.array.set_write_behind(n) {
                    self.log(|| format!("write-behind refused: {e:?}"));
                }
                return self.drain_outputs();
            }
            7 if self.w.swarm.rewrite && self.w.rewrite_side.chance(100) => {
                // A frontend that read a torn superblock's copy asks for every superblock to
                // be written again, with I/O in flight; refused only while read-only.
                self.log(|| "rewrite superblocks".into());
                match self.array.rewrite_superblocks() {
                    Err(ReconfigError::ReadOnly) if st.read_only_asked => {}
                    r => r.map_err(|e| format!("rewrite refused: {e:?}"))?,
                }
                return self.drain_outputs();
            }
            7 if self.w.swarm.time_base && self.w.period_side.chance(150) => {
                // md's bitmap/time_base (raid1 grow --delay): a new daemon period with I/O in
                // flight; it holds across restarts, as md records it in the bitmap's header.
                let ns = 500_000 + self.w.period_side.below(25_000_000);
                self.log(|| format!("bitmap daemon period {ns} ns"));
                self.array
                    .set_bitmap_daemon(ns)
                    .map_err(|e| format!("bitmap daemon period {ns} refused: {e:?}"))?;
                self.w.cfg.bitmap_daemon_ns = ns;
                return self.drain_outputs();
            }
            7 if self.w.swarm.grow_bitmap
                && self.w.bitmap_chunk > 0
                && self.w.pending.is_empty() =>
            {
                Reconf::Bitmap
            }
            4 if self.w.swarm.resize && st.raid_disks < 3 => Reconf::Grow,
            5 if self.w.swarm.resize && st.raid_disks > 2 => Reconf::Shrink,
            _ => return Ok(()),
        };
        self.log(|| format!("freeze for {op:?} (pending {:?})", self.w.pending));
        self.array.freeze().map_err(|e| format!("freeze: {e:?}"))?;
        self.w.pending.push(op);
        self.drain_outputs()
    }

    /// Whether a pending change will put a disk at position `i`.
    pub(crate) fn pending_uses(&self, i: usize) -> bool {
        self.w
            .pending
            .iter()
            .any(|p| matches!(p, Reconf::AddNew(x) | Reconf::ReAdd(x, _) if *x == i))
    }

    /// Applies the pending reconfigurations once the array is quiesced (each one held a freeze).
    pub(crate) fn apply_pending(&mut self) -> Res<()> {
        if self.w.pending.is_empty() || !self.array.is_quiesced() {
            return Ok(());
        }
        // Concurrent freezes: apply them one at a time, unfreezing as we go; the array stays
        // frozen until the last one is undone.
        let n = if self.w.rng.chance(500) {
            self.w.pending.len()
        } else {
            1
        };
        for _ in 0..n {
            if self.w.pending.is_empty() || !self.array.is_quiesced() {
                break;
            }
            if self.w.pending[0] == Reconf::Resize && !self.resize_ready() {
                // md refuses while a sync runs or the superblocks are being written: wait.
                break;
            }
            let op = self.w.pending.remove(0);
            self.apply(op)?;
            self.array
                .unfreeze()
                .map_err(|e| format!("unfreeze: {e:?}"))?;
            self.drain_outputs()?;
        }
        Ok(())
    }

    /// Applies one planned change (the array is quiesced).
    pub(crate) fn apply(&mut self, op: Reconf) -> Res<()> {
        self.log(|| format!("apply {op:?}"));
        self.w.stats.reconfigs += 1;
        match op {
            Reconf::Bitmap if self.array.config().bitmap_chunk_sectors > 0 => {
                match self.array.remove_bitmap() {
                    Ok(()) => self.w.cfg.bitmap_chunk_sectors = 0,
                    Err(e) => self.log(|| format!("bitmap not dropped: {e:?}")),
                }
            }
            Reconf::Bitmap => {
                // The frontend's part first: every attached disk gets an all-set bitmap area
                // (durable) before the engine takes the bitmap.
                let storage = match self.lend.bitmap(None) {
                    Ok(Some(s)) => s,
                    _ => {
                        self.log(|| "bitmap not added: no storage left in this life".into());
                        return Ok(());
                    }
                };
                for d in self.w.slot.iter().flatten() {
                    self.w.disks[*d].bitmap.fill(0xff);
                }
                let (bits, hot) = storage;
                match self.array.add_bitmap(bits, hot, self.w.bitmap_chunk) {
                    Ok(()) => self.w.cfg.bitmap_chunk_sectors = self.w.bitmap_chunk,
                    Err(e) => self.log(|| format!("bitmap not added: {e:?}")),
                }
            }
            Reconf::ReadOnly => {
                self.w.ro_toggles += 1;
                self.array
                    .set_read_only(self.t(), true)
                    .map_err(|e| format!("read-only refused while quiesced: {e:?}"))?;
            }
            Reconf::Remove(i) => {
                let id = MemberId(i as u8);
                match self.array.remove_member(id) {
                    Ok(()) => {
                        if let Some(f) = self.w.flights.iter().find(|f| f.member == i) {
                            return Err(format!(
                                "(e) member {i} removed while its I/O is in flight: {:?}",
                                f.kind
                            ));
                        }
                        let d = self.w.slot[i].take().ok_or("remove of empty slot")?;
                        self.w.pool.push(d);
                    }
                    Err(e) => self.log(|| format!("remove refused: {e:?}")),
                }
            }
            Reconf::AddNew(i) => {
                let mut d = Disk::new(&mut self.w.rng, self.w.sectors, self.w.bm_bytes);
                d.extend(&mut self.w.side, self.w.capacity);
                self.w
                    .errs
                    .resize(self.w.errs.len().max(self.w.disks.len() + 1), 0);
                self.w
                    .meta_streak
                    .resize(self.w.meta_streak.len().max(self.w.disks.len() + 1), None);
                self.w.disks.push(d);
                let di = self.w.disks.len() - 1;
                match self.array.add_member(MemberId(i as u8), AddMember::New) {
                    Ok(()) => {
                        self.w.slot[i] = Some(di);
                        self.w.disks[di].unsettled = false;
                    }
                    Err(e) => self.log(|| format!("add refused: {e:?}")),
                }
            }
            Reconf::ReAdd(i, d) => {
                let how = match self.w.disks[d].sb {
                    Some(sb) => match sb.own_role() {
                        Role::Active(slot) => AddMember::ReAdd {
                            slot,
                            events: sb.events,
                            write_mostly: sb.write_mostly,
                            was_in_sync: sb.recovery_offset.is_none(),
                        },
                        _ => AddMember::New,
                    },
                    None => AddMember::New,
                };
                if !self
                    .lend
                    .room_for(self.w.disks[d].bblog.len(), self.w.swarm.bblog)
                {
                    // No room left in this life to lend the disk's log: not re-added now.
                    self.w.pool.push(d);
                    self.log(|| "re-add refused: no room to lend its bad-block log".into());
                    return Ok(());
                }
                self.lend_log_for_add(i, d)?;
                match self.array.add_member(MemberId(i as u8), how) {
                    Ok(()) => {
                        self.w.slot[i] = Some(d);
                        self.w.disks[d].unsettled = false;
                    }
                    Err(e) => {
                        let _ = self
                            .array
                            .set_bad_blocks(MemberId(i as u8), BadBlocks::empty());
                        self.w.pool.push(d);
                        self.log(|| format!("re-add refused: {e:?}"))
                    }
                }
            }
            Reconf::Grow => {
                let n = self.array.status().raid_disks + 1;
                if let Err(e) = self.array.set_raid_disks(n) {
                    self.log(|| format!("grow refused: {e:?}"));
                }
            }
            Reconf::Shrink => {
                let n = self.array.status().raid_disks - 1;
                if let Err(e) = self.array.set_raid_disks(n) {
                    self.log(|| format!("shrink refused: {e:?}"));
                }
            }
            Reconf::Resize => {
                let r = self.resize();
                if let Some(was) = self.w.resize_sync_was.take() {
                    self.array.set_sync_frozen(was);
                }
                r?;
            }
        }
        Ok(())
    }

    /// Whether a resize can be applied now: no sync job, no metadata round under way (or
    /// read-only, which refuses it at once).
    fn resize_ready(&self) -> bool {
        let st = self.array.status();
        st.read_only_asked || (st.sync.is_none() && !st.metadata_pending)
    }

    /// `raid1 grow --size`, the array quiesced: grows into the disks' room (mostly) or shrinks
    /// by up to a quarter, never below 128 sectors nor below a request waiting in the table.
    /// When the bitmap's chunk must double, every disk first gets an all-set bitmap (the
    /// frontend's part, as for an added bitmap). The new region of a grow may hold anything
    /// the members hold there until the resync settles it (the shadow is reset there).
    fn resize(&mut self) -> Res<()> {
        let cur = self.w.sectors as u64;
        let cap = self.w.capacity as u64;
        let chunk_now = self.array.config().bitmap_chunk_sectors;
        if self.array.status().read_only_asked {
            let e = self.array.resize(cur as Sector + 1, 0, None, false);
            if e != Err(ReconfigError::ReadOnly) {
                return Err(format!("resize of a read-only array: {e:?}"));
            }
            self.log(|| "resize refused: read-only".into());
            return Ok(());
        }
        if chunk_now != self.w.bitmap_chunk {
            // The bitmap is dropped for now: its chunk for a later add stays the one on disk.
            self.log(|| "resize skipped while the bitmap is dropped".into());
            return Ok(());
        }
        let floor = self
            .w
            .reqs
            .values()
            .map(|r| r.sector + u64::from(r.sectors))
            .max()
            .unwrap_or(0)
            .max(128);
        let grow = cur < cap && (cur <= floor || self.w.rng.chance(700));
        let target = if grow {
            cur + 1 + self.w.rng.below(cap - cur)
        } else {
            cur.saturating_sub(1 + self.w.rng.below(cur / 4)).max(floor)
        };
        if target == cur {
            return Ok(());
        }
        let room = self.w.bm_bytes as u64;
        let chunk = self
            .array
            .resize_bitmap_chunk(target as Sector, room)
            .map_err(|e| format!("resize: no bitmap chunk: {e:?}"))?;
        if chunk != chunk_now {
            for d in self.w.disks.iter_mut() {
                d.bitmap.fill(0xff);
            }
            self.w.bitmap_chunk = chunk;
        }
        self.log(|| format!("resize {cur} -> {target} (bitmap chunk {chunk_now} -> {chunk})"));
        if let Err(e) = self.array.resize(target as Sector, room, None, false) {
            return Err(format!(
                "resize {cur} -> {target} refused while quiesced: {e:?}"
            ));
        }
        self.w.stats.resizes += 1;
        self.w.cfg.data_sectors = target as Sector;
        self.w.cfg.bitmap_chunk_sectors = chunk;
        self.w.sectors = target as usize;
        for s in cur as usize..target as usize {
            let mut values = Vec::new();
            for d in self.w.slot.iter().flatten() {
                let disk = &self.w.disks[*d];
                values.push(disk.durable[s]);
                values.extend(disk.cache[s].iter().map(|e| e.0));
            }
            self.w.shadow.reset(s, values);
            self.w.pins[s] = None;
            self.w.corrupt[s] = None;
        }
        Ok(())
    }
}
