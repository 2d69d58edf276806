//! Power cuts, clean stops and the assemblies that follow them, and the storage the seed lends
//! every assembly.
//!
//! A power cut lands every data write in flight sector by sector at random (torn), every
//! superblock or bitmap write in flight whole or not at all, and leaves each disk's cache as
//! [`crate::disk::Disk::crash`] does; every queued request is lost. The disks are then
//! reassembled from what they hold (`choose_freshest`, then `assemble` over the OR of every
//! copy of the bitmap, with `StartPolicy::RequireAll` first in some seeds and `AllowDegraded`
//! when that refuses, as `mdadm --run` insists), maybe with a member left out (a partial
//! assembly). A clean stop is `raid1 run`'s: freeze, request a clean stop, drive every command
//! until quiesced, check what it left on disk (invariant (f)), then power-cycle.
//!
//! The array borrows its bitmap and bad-block storage for its whole life and cannot give it
//! back, so one assembly's life is one [`Sim`]: the power cut ends it (the step loop returns the
//! [`Cut`]), and the next `Sim` lends the same [`Store`] to the new array.

use raid1_core::MAX_SECTOR;
use raid1_core::{
    AssembleError, BadBlocks, BadRange, Buffer, MemberId, MemberOp, MemberState, Role, StartPolicy,
    SuperblockState,
};

use crate::driver::{Sim, TEARING_DISK, World};
use crate::flight::{Flight, FlightKind};
use crate::{Arr, M, Res, bridge};

/// The memory a seed lends the engine, allocated once per seed and lent again at every
/// assembly (the engine borrows it for the life of an array), so that nothing is leaked
/// and nothing is allocated per crash: two bitmap buffer pairs (a start refused by
/// `StartPolicy::RequireAll` and the retry with `AllowDegraded` need one each) and room for
/// the bad-block lists lent during one assembly's life.
pub(crate) struct Store {
    pub(crate) bitmaps: [Buffers; 3],
    pub(crate) lists: Box<[BadRange]>,
}

/// A bitmap's storage in the engine: its bits and its "hot" companion, one byte per 8 chunks.
pub(crate) type Buffers = (Box<[u8]>, Box<[u8]>);

/// [`Buffers`] lent to one array (none without a bitmap).
pub(crate) type Lent<'a> = Option<(&'a mut [u8], &'a mut [u8])>;

/// Entries of room for bad-block lists per assembly: 64 lists of the longest a disk's log gets
/// ([`LIST_SLACK`] + 1 entries, from one planted entry and its splits), each with its slack.
/// One life used 72 at most in the first 2,000 seeds, 270 in 300 seeds of 20,000 steps; a life
/// that uses it all plants no more bad blocks and re-adds no disk with a log until the next
/// assembly.
pub(crate) const LIST_ROOM: usize = 64 * (2 * LIST_SLACK + 1);

/// Spare entries lent with every list, for the splits a write into the middle of an entry needs.
pub(crate) const LIST_SLACK: usize = 8;

impl Store {
    /// The storage for one seed: two bitmap buffer pairs of `bm_bytes`, and the list room.
    pub(crate) fn new(bm_bytes: usize) -> Store {
        let pair = || {
            (
                vec![0u8; bm_bytes].into_boxed_slice(),
                vec![0u8; bm_bytes].into_boxed_slice(),
            )
        };
        Store {
            bitmaps: [pair(), pair(), pair()],
            lists: vec![
                BadRange {
                    start: 0,
                    sectors: 0
                };
                LIST_ROOM
            ]
            .into_boxed_slice(),
        }
    }

    /// Lends everything for one assembly's life.
    pub(crate) fn lend(&mut self) -> Lender<'_> {
        let [(b0, h0), (b1, h1), (b2, h2)] = &mut self.bitmaps;
        Lender {
            bitmaps: [
                Some((&mut b0[..], &mut h0[..])),
                Some((&mut b1[..], &mut h1[..])),
                Some((&mut b2[..], &mut h2[..])),
            ],
            lists: &mut self.lists[..],
        }
    }
}

/// The [`Store`] as one assembly's life may use it: each part is lent to the engine once.
pub(crate) struct Lender<'a> {
    /// Two for an assembly (a start `RequireAll` refuses and the retry), one for a bitmap added
    /// while running.
    pub(crate) bitmaps: [Lent<'a>; 3],
    pub(crate) lists: &'a mut [BadRange],
}

impl<'a> Lender<'a> {
    /// Bitmap storage holding `bits` (zeroes if `None`), or none without a bitmap.
    pub(crate) fn bitmap(&mut self, bits: Option<&[u8]>) -> Res<Lent<'a>> {
        let Some((b, h)) = self.bitmaps.iter_mut().find_map(Option::take) else {
            return Err("simulator: no bitmap storage left to lend".into());
        };
        if b.is_empty() {
            return Ok(None);
        }
        match bits {
            Some(bits) => b.copy_from_slice(bits),
            None => b.fill(0),
        }
        h.fill(0);
        Ok(Some((b, h)))
    }

    /// Whether a list of `len` entries can still be lent in this assembly's life (with
    /// `log`, an empty list too: a log with room to record bad blocks).
    pub(crate) fn room_for(&self, len: usize, log: bool) -> bool {
        (len == 0 && !log) || self.lists.len() >= len + LIST_SLACK
    }

    /// `list` in lent room, with [`LIST_SLACK`] spare entries for splits (callers that can do
    /// without ask [`Self::room_for`] first; an assembly, the first user of a life's room, always
    /// finds it).
    pub(crate) fn list(&mut self, list: &[BadRange], log: bool) -> Res<BadBlocks<'a>> {
        if list.is_empty() && !log {
            return Ok(BadBlocks::empty());
        }
        let need = list.len() + LIST_SLACK;
        if self.lists.len() < need {
            return Err(format!(
                "simulator: out of room for bad-block lists ({LIST_ROOM} entries per assembly)"
            ));
        }
        let (room, rest) = std::mem::take(&mut self.lists).split_at_mut(need);
        self.lists = rest;
        room[..list.len()].copy_from_slice(list);
        Ok(BadBlocks::new(room, list.len()))
    }
}

/// How an assembly's life begins.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Start {
    /// `mdadm --create`.
    Create,
    /// After a power cut: assembly from what the disks hold.
    Restart(Cut),
}

/// How an assembly's life ended: the seed is over, or the power was cut.
pub(crate) enum Life {
    Finished,
    PowerCut(Cut),
}

/// A power cut in the middle of a step, with what is left to do once the array is back.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cut {
    /// After a clean stop of a clean, complete array: the restart must write no superblock.
    pub(crate) quiet_restart: bool,
    pub(crate) then: Then,
}

/// The rest of the step in which the power was cut.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Then {
    /// The check for an aimed crash at the end of the step, then its tail.
    AimedCrashCheck,
    /// Only the tail of the step.
    Tail,
}

impl<'a> Sim<'a> {
    /// A power cut in the middle of a step (`then`: what is left of it).
    pub(crate) fn crash(&mut self, then: Then) -> Res<Cut> {
        self.w.stats.crashes += 1;
        self.log(|| "CRASH".into());
        self.cut_power(true)?;
        Ok(Cut {
            quiet_restart: false,
            then,
        })
    }

    /// Like `raid1 run`'s stop: freeze, request a clean stop, drive every command to completion
    /// (faults keep coming), then check what a clean stop must leave on disk and restart.
    ///
    /// Invariant (f): after a clean stop every present member's disk holds the superblock the
    /// engine would write now (clean, `events_cleared` included), and unless the array is
    /// degraded or a sync is pending every active member's bitmap is all clear. After the
    /// restart, a clean and complete array is assembled without any superblock write.
    pub(crate) fn clean_stop(&mut self) -> Res<Cut> {
        self.w.stats.stops += 1;
        self.log(|| "CLEAN STOP".into());
        self.release_hold()?;
        // A read-only array is made read-write before it is stopped (md writes nothing to a
        // read-only one, so what it learnt meanwhile would not be recorded).
        if self.array.status().read_only_asked {
            self.w.ro_toggles += 1;
            self.array
                .set_read_only(self.t(), false)
                .map_err(|e| format!("read-write at stop: {e:?}"))?;
        }
        self.w.sched.stepping = false;
        self.w.sched.crash_now = false;
        self.array
            .freeze()
            .map_err(|e| format!("freeze at stop: {e:?}"))?;
        let mut settled = false;
        for _ in 0..20_000 {
            // raid1 run asks again while it waits (the request is idempotent).
            self.array.request_clean(self.t());
            self.drain_outputs()?;
            self.complete_some(usize::MAX)?;
            let st = self.array.status();
            // Not while a cut could bring a member back in sync over sectors a failed write
            // tore (`Sim::torn_open`, soak seed 110368): the round recording its failure lands
            // first, as it would within raid1 run's deadline.
            if st.broken && !self.torn_open() {
                // The last in-sync member fails its writes: no clean stop is possible (raid1 run
                // gives up after its deadline). The power goes.
                self.log(|| "array broken: the stop ends as a power cut".into());
                self.cut_power(false)?;
                return Ok(Cut {
                    quiet_restart: false,
                    then: Then::AimedCrashCheck,
                });
            }
            if self.w.flights.is_empty()
                && self.array.is_quiesced()
                && !st.dirty
                && !st.metadata_pending
            {
                settled = true;
                break;
            }
            self.jump_to_next_event()?;
        }
        if !settled {
            return Err(format!(
                "liveness: clean stop did not settle: {:?}, {} flights",
                self.array.status(),
                self.w.flights.len()
            ));
        }
        let st = self.array.status();
        let clear_expected = st.in_sync == st.raid_disks
            && st.sync.is_none()
            && st.resync_offset == MAX_SECTOR
            && self.w.cfg.bitmap_chunk_sectors > 0;
        let mut quiet_restart = st.in_sync == st.raid_disks && st.resync_offset == MAX_SECTOR;
        for i in 0..M {
            let id = MemberId(i as u8);
            let info = self.array.member(id).ok_or("member out of range")?;
            let Some(d) = self.w.slot[i] else { continue };
            match info.state {
                MemberState::InSync | MemberState::Spare => {}
                MemberState::Absent | MemberState::Faulty => {
                    quiet_restart = false;
                    continue;
                }
                MemberState::Recovering { .. } => quiet_restart = false,
            }
            let want = self.array.superblock_for(id);
            // A position that held a spare not assembled this time reads Spare on disk and
            // Faulty in the engine: the same table (md writes nothing for it either), so the
            // roles are compared as assembly compares them.
            let same = match (self.w.disks[d].sb, want) {
                (Some(on_disk), Some(w)) => {
                    raid1_core::same_table(&on_disk.roles, &w.roles)
                        && SuperblockState {
                            roles: w.roles,
                            ..on_disk
                        } == w
                }
                (a, b) => a == b,
            };
            if !same {
                return Err(format!(
                    "(f) after a clean stop member {i} holds {:?}, the engine says {want:?}",
                    self.w.disks[d].sb
                ));
            }
            // The bytes that hold the array's chunks (a shrink or a doubled chunk leaves the
            // rest of the area as it was: no page of the bitmap covers it any more).
            let used = Arr::bitmap_bytes(self.array.config());
            if clear_expected && matches!(info.role, Role::Active(_)) {
                if let Some(k) = self.w.disks[d].bitmap[..used.min(self.w.bm_bytes)]
                    .iter()
                    .position(|b| *b != 0)
                {
                    return Err(format!(
                        "(f) after a clean stop of a clean, complete array member {i} still has \
                         bitmap byte {k} = {:#04x}",
                        self.w.disks[d].bitmap[k]
                    ));
                }
            }
        }
        self.rewrite_bad_block_logs();
        self.cut_power(false)?;
        Ok(Cut {
            quiet_restart,
            then: Then::AimedCrashCheck,
        })
    }

    /// Per mille of each sector that a power cut now tears inside on [`TEARING_DISK`]
    /// (`Swarm::cut_tears`): 0 unless the array has a bitmap (the assembly after the cut
    /// resyncs every chunk whose bit is set, from another member), the seed has no
    /// write-behind, and no other member is unhealthy (atlas rule 1: some other member holds
    /// every sector the tear may hit; the tear makes the disk unhealthy until it is
    /// rewritten).
    fn tear_chance(&self) -> u64 {
        let cfg = self.array.config();
        let attached = self.w.slot.iter().position(|d| *d == Some(TEARING_DISK));
        let others_healthy = self
            .atlas()
            .unhealthy_member()
            .is_none_or(|i| Some(i) == attached);
        if attached.is_some()
            && cfg.bitmap_chunk_sectors > 0
            && cfg.write_behind == 0
            && self.w.swarm.write_behind.is_none()
            && others_healthy
        {
            self.w.swarm.cut_tears
        } else {
            0
        }
    }

    /// Which sectors a member not on [`TEARING_DISK`] holds, as the engine says and the disks
    /// would tell an assembly after a cut now: in sync on its disk too, or being rebuilt past
    /// the sector and holding its own record of that on disk (whatever offset the record
    /// says: a read fix re-reads from a member rebuilt past the piece in memory and writes it
    /// back to the disk that tears, and the engine must have recorded how far first), and
    /// listing the sector as bad neither in the engine nor in its log on disk. Where none
    /// does, the torn sectors' one copy is on a member whose superblock did not land (a
    /// resync's source), that failed while the write was out, or that cannot read it (a page
    /// no member could read in a recovery, recorded bad on the member rebuilt; a later write
    /// made it good on the disk that tears alone, soak seed 1004288): nothing could tell them.
    ///
    /// With no other member in sync (on its disk too), every other attached member must hold
    /// the sectors: one that would be rebuilt (failed, a spare, rebuilt only below them) has
    /// disk 0 as its only source, md's recovery reads in-sync members alone, and it would
    /// copy the torn sector (soak seed 105508, once a recovery no longer stopped at a sync
    /// read error: a failed member re-added at the assembly got the tear from disk 0).
    fn held_elsewhere(&self) -> Vec<bool> {
        let mut held = vec![false; self.w.sectors];
        let Some((found, states)) = self.dry_assemble(&self.w.slot) else {
            return held;
        };
        // (member, disk, how far it holds the data)
        let mut holders = Vec::new();
        for i in 0..M {
            let Some(d) = self.w.slot[i].filter(|&d| d != TEARING_DISK) else {
                continue;
            };
            let Some(m) = self.array.member(MemberId(i as u8)) else {
                continue;
            };
            let own_record = found[i].is_some_and(|sb| sb.recovery_offset.is_some());
            let upto = match (states[i], m.state) {
                (MemberState::InSync, MemberState::InSync) => u64::MAX,
                (
                    MemberState::Recovering { .. },
                    MemberState::Recovering {
                        recovery_offset, ..
                    },
                ) if own_record => u64::from(recovery_offset),
                _ => 0,
            };
            holders.push((i, d, upto));
        }
        let in_sync = holders.iter().any(|h| h.2 == u64::MAX);
        let good = |&(i, d, upto): &(usize, usize, u64), s: usize| {
            (s as u64) < upto && !self.w.disks[d].logs_bad(s) && !self.lists_bad_in(i, s as u64, 1)
        };
        for (s, h) in held.iter_mut().enumerate() {
            *h = if in_sync {
                holders.iter().any(|x| x.2 == u64::MAX && good(x, s))
            } else {
                !holders.is_empty() && holders.iter().all(|x| good(x, s))
            };
        }
        held
    }

    /// Lands a data write in flight at a power cut sector by sector at random; `inside`: a
    /// sector may instead hold a value no write produced (`Swarm::cut_tears`).
    fn land_cut_write(&mut self, f: &Flight, inside: bool) {
        let FlightKind::Data { sector, data, .. } = &f.kind else {
            return;
        };
        let tear = self.w.swarm.cut_tears;
        let disk = &mut self.w.disks[f.disk];
        for (j, v) in data.iter().enumerate() {
            let s = *sector as usize + j;
            if inside && self.w.tear_side.chance(tear) {
                let g = self.w.tear_side.next_u64() | 1 << 63;
                disk.durable[s] = g;
                disk.cache[s].clear();
                self.w.cut_tears.push((f.disk, s, g));
            } else if self.w.rng.chance(self.w.swarm.torn_lands) {
                disk.durable[s] = *v;
                disk.cache[s].clear();
            }
        }
    }

    /// Power cut: in-flight writes land torn or not, caches may be lost, every request is lost;
    /// with `partial`, maybe a member is left out of the assembly that follows (in the next
    /// [`Sim`]).
    pub(crate) fn cut_power(&mut self, partial: bool) -> Res<()> {
        // In-flight writes may be torn; metadata writes land or not.
        let tear = self.tear_chance();
        let tears_before = self.w.cut_tears.len();
        let flights = std::mem::take(&mut self.w.flights);
        // A sync write or a read fix's write-back to the disk that tears inside the sector
        // (`Swarm::cut_tears`) lands last, once the metadata in flight has landed or not: it
        // tears only where another member holds what it writes, as an assembly would see it.
        let mut last = Vec::new();
        for f in flights {
            match &f.kind {
                FlightKind::Data {
                    op: op @ MemberOp::Write,
                    sector,
                    sectors,
                    buffer,
                    ..
                } if tear != 0
                    && f.disk == TEARING_DISK
                    && !self.logical_write(*op, *buffer, *sector, *sectors) =>
                {
                    last.push(f);
                }
                FlightKind::Data {
                    op: MemberOp::Write,
                    ..
                } => self.land_cut_write(&f, false),
                FlightKind::Sb(st, log) if self.w.rng.chance(self.w.swarm.metadata_lands) => {
                    let chunk = if st.bitmap { self.w.bitmap_chunk } else { 0 };
                    self.w.disks[f.disk].land_sb(self.w.capacity as u64, chunk, st)?;
                    self.w.disks[f.disk].bblog.clone_from(log);
                }
                FlightKind::Bitmap { page, bytes }
                    if self.w.rng.chance(self.w.swarm.metadata_lands) =>
                {
                    let start = *page as usize * self.w.cfg.bitmap_page_bytes as usize;
                    let disk = &mut self.w.disks[f.disk];
                    for (j, b) in bytes.iter().enumerate() {
                        if let Some(x) = disk.bitmap.get_mut(start + j) {
                            *x = *b;
                        }
                    }
                }
                _ => {}
            }
        }
        if !last.is_empty() {
            let held = self.held_elsewhere();
            for f in last {
                // A write-back of what the disk itself answered (the read retried on it) may
                // tear whoever holds the piece: the engine has no business writing it.
                let inside = match f.kind {
                    FlightKind::Data {
                        sector,
                        sectors,
                        buffer,
                        ..
                    } => {
                        (sector..sector + u64::from(sectors)).all(|s| held[s as usize])
                            || matches!(buffer, Buffer::Request { handle, .. }
                                if self.w.filled_from.get(handle as usize).copied().flatten()
                                    == Some(TEARING_DISK))
                    }
                    _ => false,
                };
                self.land_cut_write(&f, inside);
            }
        }
        self.w.stats.cut_tears += (self.w.cut_tears.len() - tears_before) as u64;
        if self.w.cut_tears.len() > tears_before {
            self.log(|| {
                format!(
                    "the cut tore inside: {:?}",
                    &self.w.cut_tears[tears_before..]
                )
            });
        }
        for k in 0..self.w.disks.len() {
            self.check_count_names_one_table(k)?;
        }
        for d in self.w.disks.iter_mut() {
            d.crash(&mut self.w.rng);
            d.member.heal();
        }
        self.w.shadow.power_cut();
        for (_, r) in std::mem::take(&mut self.w.reqs) {
            self.w.free_bufs.push(r.handle);
        }
        self.w.pending.clear();
        // The next array starts with its sync actions not frozen.
        self.w.resize_sync_was = None;
        self.w.sched.hold_steps = 0;
        self.w.sched.crash_now = false;
        self.w.pins.iter_mut().for_each(|p| *p = None);
        if let Some(i) = partial.then(|| self.leave_out()).flatten() {
            let d = self.w.slot[i].take().unwrap_or(0);
            self.log(|| format!("member {i} (disk {d}) left out of the assembly"));
            self.w.pool.push(d);
        }
        Ok(())
    }

    /// Assembly after a power cut, from the superblocks the attached disks hold.
    pub(crate) fn assemble_array(w: &mut World, lend: &mut Lender<'a>) -> Res<Arr<'a>> {
        let mut found: [Option<SuperblockState<M>>; M] = [None; M];
        for (f, d) in found.iter_mut().zip(w.slot) {
            if let Some(d) = d {
                // What a frontend reads: the md v1.x bytes on the disk, parsed.
                let disk = &w.disks[d];
                if !disk.sb_bytes.is_empty() {
                    *f = Some(bridge::parse::<M>(&disk.sb_bytes, &disk.bm_header)?);
                }
            }
        }
        for (i, f) in found.iter().enumerate() {
            w.log(|| format!("found member {i}: {f:?}"));
        }
        let fresh = Arr::choose_freshest(&found).ok_or("no freshest member")?;
        // The array's size as the freshest superblock records it (raid1 grow --size may
        // have changed it while running), as `raid1 run` takes it.
        if let Some(size) = found
            .get(usize::from(fresh))
            .copied()
            .flatten()
            .map(|s| s.size)
        {
            if size == 0 || u64::from(size) > w.capacity as u64 {
                return Err(format!("(d) the freshest superblock gives size {size}"));
            }
            w.cfg.data_sectors = size;
            w.sectors = size as usize;
        }
        // The bitmap as the freshest superblock announces it (raid1 grow may have added or
        // dropped it while running).
        let has_bitmap = found
            .get(usize::from(fresh))
            .copied()
            .flatten()
            .is_some_and(|s| s.bitmap)
            && w.bitmap_chunk > 0;
        w.cfg.bitmap_chunk_sectors = if has_bitmap { w.bitmap_chunk } else { 0 };
        // Write-behind as the freshest bitmap header records it (it may have been changed
        // while running), as `raid1 run` takes it.
        w.cfg.write_behind = if has_bitmap {
            found
                .get(usize::from(fresh))
                .copied()
                .flatten()
                .map_or(0, |s| s.write_behind)
        } else {
            0
        };
        // The bitmap handed to assembly is the OR of every member's copy: a member that missed
        // page writes (failed, or the crash cut a round short) must not hide a dirty chunk.
        let mut union = vec![0u8; w.bm_bytes];
        for d in w.slot.iter().flatten() {
            for (u, b) in union.iter_mut().zip(&w.disks[*d].bitmap) {
                *u |= *b;
            }
        }
        // Seeds whose disk 0 tears inside the sector at a cut come up as raid1-embedded mounts
        // its volume (`Mount::finish`): with a bit set, the array is dirty whatever its clean
        // mark says (a read fix's write-back, torn, may run on a clean array), and the disk
        // that tears comes up WriteMostly, the others not, so that the resync copies from a
        // member that does not tear (the engine ranks a resync's sources by WriteMostly as
        // the array came up).
        // (A spare's bitmap is not kept: only the active members' bits count.)
        let used = Arr::bitmap_bytes(&w.cfg).min(w.bm_bytes);
        let active_bit = found.iter().zip(w.slot).any(|(f, d)| {
            let active = f.is_some_and(|st| matches!(st.own_role(), Role::Active(_)));
            d.is_some_and(|d| active && w.disks[d].bitmap[..used].iter().any(|b| *b != 0))
        });
        w.mounted_dirty =
            w.swarm.cut_tears > 0 && has_bitmap && w.cfg.write_behind == 0 && active_bit;
        if w.mounted_dirty {
            for (f, d) in found.iter_mut().zip(w.slot) {
                if let Some(st) = f {
                    st.write_mostly = d == Some(TEARING_DISK);
                    st.resync_offset = 0;
                }
            }
            w.log(|| "bits set: resync every one, disk 0 WriteMostly".into());
        }
        // mdadm --assemble --readonly, now and then: the engine writes nothing (the flight
        // checker holds it to that) until a reconfiguration step makes it writable.
        w.cfg.read_only = w.swarm.assemble_read_only && w.ro_side.chance(500);
        if w.cfg.read_only {
            w.log(|| "assembling read-only".into());
        }
        let policy = if w.rng.chance(w.swarm.require_all) {
            StartPolicy::RequireAll
        } else {
            StartPolicy::AllowDegraded
        };
        let array = match Arr::assemble_with_bad_blocks(
            w.cfg,
            if has_bitmap {
                lend.bitmap(Some(&union))?
            } else {
                None
            },
            &found,
            policy,
            w.lent_logs(lend)?,
        ) {
            Ok(a) => a,
            Err(AssembleError::NotStarted { .. }) if policy == StartPolicy::RequireAll => {
                // mdadm refuses; the operator insists with --run.
                Arr::assemble_with_bad_blocks(
                    w.cfg,
                    if has_bitmap {
                        lend.bitmap(Some(&union))?
                    } else {
                        None
                    },
                    &found,
                    StartPolicy::AllowDegraded,
                    w.lent_logs(lend)?,
                )
                .map_err(|e| format!("(d) assembly failed: {e:?}"))?
            }
            Err(e) => return Err(format!("(d) assembly failed: {e:?} from {found:?}")),
        };
        Ok(array)
    }

    /// Right after an assembly: the frontend's side of it, invariant (d), then what was left
    /// of the step in which the power went.
    pub(crate) fn restarted(&mut self, cut: Cut) -> Res<()> {
        self.array.set_sync_rate(self.w.sync_rate);
        self.array.set_sync_rate_min(self.w.swarm.sync_rate_min);
        // Members the engine did not take are detached.
        for i in 0..M {
            if self.w.slot[i].is_some()
                && self
                    .array
                    .member(MemberId(i as u8))
                    .is_some_and(|m| m.state == MemberState::Absent)
            {
                let d = self.w.slot[i].take().unwrap_or(0);
                self.w.pool.push(d);
            }
        }
        self.log(|| {
            format!(
                "assembled: {:?}",
                (0..M)
                    .map(|i| self.array.member(MemberId(i as u8)).map(|m| m.state))
                    .collect::<Vec<_>>()
            )
        });
        self.check_assembled_members()?;
        self.w.lagging = 0;
        if self.array.config().write_behind != 0 && self.array.status().resync_offset != MAX_SECTOR
        {
            for i in self.in_sync_members() {
                if self
                    .array
                    .member(MemberId(i as u8))
                    .is_some_and(|m| m.write_mostly)
                {
                    self.w.lagging |= 1 << i;
                }
            }
        }
        self.aim_sticky_after_crash();
        // Made WriteMostly for the resync's sake, disk 0 takes reads again at once, as
        // raid1-embedded's setup gives the card its reads back (the resync keeps its source).
        if self.w.mounted_dirty && !self.array.status().read_only_asked {
            if let Some(i) = (0..M).find(|&i| self.w.slot[i] == Some(TEARING_DISK)) {
                let _ = self.array.set_write_mostly(MemberId(i as u8), false);
            }
        }
        self.drain_outputs()?;
        // (Unless the assembly was made dirty on purpose: a seed whose disk tears.)
        if cut.quiet_restart && !self.w.mounted_dirty {
            if let Some(f) = self
                .w
                .flights
                .iter()
                .find(|f| matches!(f.kind, FlightKind::Sb(..)))
            {
                return Err(format!(
                    "(f) a clean, complete array was assembled with a superblock write (member {})",
                    f.member
                ));
            }
        }
        self.w.resume = Some(cut.then);
        Ok(())
    }
}
