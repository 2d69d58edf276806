//! Member commands in flight: the engine's `IoCmd`s handed to the simulated disks with a random
//! latency, and completed (in random order, by the driver) through each disk's fault model.

use raid1_core::MAX_SECTOR;
use raid1_core::{
    BadRange, Buffer, IoCmd, IoResult, MemberId, MemberIo, MemberOp, MemberState, SuperblockState,
    SyncAction, Tag,
};
use raid1_testkit::{Countdown, MemberError};

use crate::driver::{Sim, TEARING_DISK};
use crate::{M, Res};

#[derive(Clone, Debug)]
pub(crate) struct Flight {
    pub(crate) tag: Tag,
    pub(crate) member: usize,
    pub(crate) disk: usize,
    pub(crate) kind: FlightKind,
    pub(crate) ready_at: u64,
    /// A write of a logical write already acknowledged (write-behind): until it lands, its
    /// member lacks that acknowledged write (atlas rule 5).
    pub(crate) behind: bool,
}

#[derive(Clone, Debug)]
pub(crate) enum FlightKind {
    Data {
        op: MemberOp,
        sector: u64,
        sectors: u32,
        buffer: Buffer,
        fua: bool,
        data: Vec<u64>,
        flush_upto: u64,
    },
    /// A superblock and the member's bad-block log (the engine's list when the command was
    /// polled), landing together.
    Sb(SuperblockState<M>, Vec<BadRange>),
    Bitmap {
        page: u32,
        bytes: Vec<u8>,
    },
}

impl Sim<'_> {
    /// A member command's latency (ns), from the seed's latency profile.
    pub(crate) fn latency(&mut self) -> u64 {
        let sw = &self.w.swarm;
        let (latency, slow, slow_ns) = (sw.latency_ns, sw.slow, sw.slow_ns);
        let base = 10_000 + self.w.rng.below(latency);
        if self.w.rng.chance(slow) {
            base + self.w.rng.below(slow_ns)
        } else {
            base
        }
    }

    /// Takes a command from the engine: checks (e), (c), (h) and (barrier) on it and puts it in
    /// flight (a compare is answered at once).
    pub(crate) fn issue(&mut self, cmd: IoCmd<M>) -> Res<()> {
        let ready_at = self.w.now + self.latency();
        let target = match cmd {
            IoCmd::Member(io) => Some(io.member),
            IoCmd::Superblock { member, .. } | IoCmd::BitmapPage { member, .. } => Some(member),
            IoCmd::Compare { .. } => None,
        };
        if let Some(m) = target {
            // Faulty members are never written again; commands withdrawn from them (a member
            // failed while its commands sat unpolled) must not come out later.
            if self
                .array
                .member(m)
                .is_some_and(|i| i.state == MemberState::Faulty)
            {
                return Err(format!("(e) command for faulty member {}: {cmd:?}", m.0));
            }
        }
        // (ro): nothing is written to a member while the array is read-only.
        let writes = match cmd {
            IoCmd::Member(io) => matches!(io.op, MemberOp::Write | MemberOp::Discard),
            IoCmd::Superblock { .. } | IoCmd::BitmapPage { .. } => true,
            IoCmd::Compare { .. } => false,
        };
        if writes && self.array.status().read_only {
            return Err(format!("(ro) written while read-only: {cmd:?}"));
        }
        if matches!(cmd, IoCmd::Superblock { .. } | IoCmd::BitmapPage { .. })
            && !self
                .w
                .flights
                .iter()
                .any(|f| matches!(f.kind, FlightKind::Sb(..) | FlightKind::Bitmap { .. }))
        {
            // The first command of a metadata round.
            self.aim_crash(200);
        }
        match cmd {
            IoCmd::Member(io) => {
                let mi = io.member.0 as usize;
                let Some(disk) = self.w.slot.get(mi).copied().flatten() else {
                    return Err(format!(
                        "(e) I/O issued to member {mi} which has no disk: {io:?}"
                    ));
                };
                let end = u64::from(io.sector) + u64::from(io.sectors);
                if end > self.w.sectors as u64 {
                    return Err(format!("(e) member I/O beyond the data area: {io:?}"));
                }
                let mut data = Vec::new();
                if io.op == MemberOp::Write {
                    let b = self.buffer(io.buffer)?;
                    data = b
                        .get(..io.sectors as usize)
                        .ok_or("(e) buffer too small")?
                        .to_vec();
                }
                if io.op == MemberOp::Read {
                    self.check_member_read(&io, disk)?;
                }
                self.aim_tear(&io, disk);
                // (range) a check or repair reads only inside md's sync_min / sync_max.
                let st = self.array.status();
                if let (Some((SyncAction::Check | SyncAction::Repair, _, _)), Buffer::Sync { .. }) =
                    (st.sync, io.buffer)
                {
                    if u64::from(io.sector) < u64::from(st.sync_min) || end > u64::from(st.sync_max)
                    {
                        return Err(format!(
                            "(range) sync I/O {io:?} outside sync_min {} .. sync_max {}",
                            st.sync_min, st.sync_max
                        ));
                    }
                }
                if matches!(io.op, MemberOp::Write | MemberOp::Discard) {
                    if matches!(io.buffer, Buffer::Sync { .. }) {
                        self.w.sync_writes += 1;
                    }
                    self.oracle_dirty_bit_before_data(&io)?;
                    self.check_no_overlapping_write(&io, disk)?;
                }
                let flush_upto = self.w.disks[disk].wseq;
                self.w.flights.push(Flight {
                    tag: io.tag,
                    member: mi,
                    disk,
                    kind: FlightKind::Data {
                        op: io.op,
                        sector: u64::from(io.sector),
                        sectors: io.sectors,
                        buffer: io.buffer,
                        fua: io.fua,
                        data,
                        flush_upto,
                    },
                    ready_at,
                    behind: false,
                });
            }
            IoCmd::Superblock { tag, member, state } => {
                let mi = member.0 as usize;
                let disk = self.w.slot[mi]
                    .ok_or_else(|| format!("(e) superblock for empty member {mi}"))?;
                self.w.flights.push(Flight {
                    tag,
                    member: mi,
                    disk,
                    kind: FlightKind::Sb(state, self.array.bad_blocks(member).to_vec()),
                    ready_at,
                    behind: false,
                });
            }
            IoCmd::BitmapPage { tag, member, page } => {
                let mi = member.0 as usize;
                let disk = self.w.slot[mi]
                    .ok_or_else(|| format!("(e) bitmap page for empty member {mi}"))?;
                let bytes = self.array.bitmap_page(page).to_vec();
                self.w.flights.push(Flight {
                    tag,
                    member: mi,
                    disk,
                    kind: FlightKind::Bitmap { page, bytes },
                    ready_at,
                    behind: false,
                });
            }
            IoCmd::Compare { tag, a, b, sectors } => {
                let n = sectors as usize;
                let va = self.buffer(a)?.get(..n).map(<[u64]>::to_vec);
                let eq = va.as_deref() == self.buffer(b)?.get(..n);
                self.array
                    .complete_compare(self.t(), tag, eq)
                    .map_err(|e| format!("compare: {e:?}"))?;
            }
        }
        Ok(())
    }

    /// The memory a member command names: a request's buffer from its `offset` on (the engine
    /// splits a read where a member's bad blocks begin or end), or a sync buffer.
    pub(crate) fn buffer(&mut self, b: Buffer) -> Res<&mut [u64]> {
        match b {
            Buffer::Request { handle, offset } => self
                .w
                .bufs
                .get_mut(handle as usize)
                .and_then(|v| v.get_mut(offset as usize..))
                .ok_or_else(|| format!("bad buffer {handle} at offset {offset}")),
            Buffer::Sync { window, member } => self
                .w
                .sync_bufs
                .get_mut(window as usize * M + member.0 as usize)
                .map(|v| &mut v[..])
                .ok_or_else(|| "bad sync buffer".to_string()),
            Buffer::None => Err("no buffer".into()),
        }
    }

    /// Seeds whose disk 0 tears inside the sector at a cut (`Swarm::cut_tears`), so that tears
    /// reach the writes they are for: a request read sent to that disk while another member is
    /// rebuilt fails once now and then (a transient error: the read fix re-reads the piece from
    /// the member rebuilt past it and writes it back, or retries the same disk), and the power
    /// is now and then cut as a sync write or a read fix's write-back goes out to it. Drawn from
    /// the seed's cut-tear stream.
    fn aim_tear(&mut self, io: &MemberIo, disk: usize) {
        if self.w.swarm.cut_tears == 0 || disk != TEARING_DISK || !self.w.sched.stepping {
            return;
        }
        // A member being rebuilt: the read's error is aimed often where that member holds the
        // range in memory but its record on disk says less (the read fix writes back what it
        // re-read there), or where no other member holds the range (the fix retries this
        // disk), now and then elsewhere.
        let end = u64::from(io.sector) + u64::from(io.sectors);
        let mut rebuilt = false;
        let mut others_hold = false;
        let mut aim = false;
        for i in 0..M {
            let Some(m) = self.array.member(MemberId(i as u8)) else {
                continue;
            };
            match m.state {
                MemberState::Recovering {
                    recovery_offset, ..
                } => {
                    rebuilt = true;
                    let recorded = self.w.slot[i]
                        .and_then(|d| self.w.disks[d].sb)
                        .and_then(|sb| sb.recovery_offset)
                        .map_or(0, u64::from);
                    others_hold |= u64::from(recovery_offset) >= end;
                    aim |= u64::from(recovery_offset) >= end && recorded < end;
                }
                MemberState::InSync if self.w.slot[i] != Some(disk) => others_hold = true,
                _ => {}
            }
        }
        let chance = if aim || !others_hold { 700 } else { 100 };
        match io.op {
            // Once per request (not its retry), one read error armed at a time.
            MemberOp::Read
                if rebuilt
                    && matches!(io.buffer, Buffer::Request { handle, .. }
                        if self.w.failed_once != Some(handle))
                    && !self.w.disks[disk].member.fail_read.is_armed()
                    && self.w.tear_side.chance(chance) =>
            {
                self.log(|| format!("a read of disk {disk} set to fail once"));
                self.w.disks[disk].member.fail_read = Countdown::after(0);
                if let Buffer::Request { handle, .. } = io.buffer {
                    self.w.failed_once = Some(handle);
                }
            }
            // Often at a read fix's write-back (rare; always when re-read from a member whose
            // record on disk says less than it holds), now and then at a sync write.
            MemberOp::Write
                if self.w.crashes_left > 0
                    && !self.logical_write(io.op, io.buffer, io.sector.into(), io.sectors)
                    && self.w.tear_side.chance(match io.buffer {
                        Buffer::Request { .. } if aim => 1000,
                        Buffer::Request { .. } => 700,
                        _ => 200,
                    }) =>
            {
                self.log(|| format!("power cut aimed at a write to disk {disk} that may tear"));
                self.w.sched.crash_now = true;
            }
            _ => {}
        }
    }

    /// A member write that failed, not a logical request's (a read fix's write-back, a sync
    /// write), lands in part in seeds with torn failures (`Swarm::torn_fails`): each sector
    /// keeps its value, takes the new one, or holds one no write produced (a write torn inside
    /// the sector, as an SD card may leave one). Whatever brings the member back in sync
    /// later must rewrite those sectors. (The engine once left both unmarked in the bitmap,
    /// and a member re-added with the bitmap came back in sync holding such a sector.)
    ///
    /// Landed once the engine has taken its decision on the error (called after `complete`),
    /// and only where that decision keeps the member's copy out of use: the member failed, or
    /// the range on its bad-block list. A read in flight over a torn sector returns the torn
    /// value: the engine must read it again elsewhere. Not modelled: a tear the engine has not
    /// yet decided on (a sync window waits for its other writes).
    /// Until the decision is on disk, no power is cut (`torn_open`): a cut there brings the
    /// member back in sync over the torn sector, which no mirror without checksums can tell.
    fn land_failed_write(&mut self, f: &Flight) {
        let FlightKind::Data {
            op: MemberOp::Write,
            sector,
            sectors,
            buffer,
            data,
            ..
        } = &f.kind
        else {
            return;
        };
        let chance = self.w.swarm.torn_fails;
        if chance == 0 || self.logical_write(MemberOp::Write, *buffer, *sector, *sectors) {
            return;
        }
        let failed = self
            .array
            .member(raid1_core::MemberId(f.member as u8))
            .is_none_or(|m| m.state == MemberState::Faulty);
        let listed = self.lists_bad_in(f.member, *sector, *sectors);
        if !(failed || listed) || !self.w.torn_side.chance(chance) {
            return;
        }
        let lo = *sector as usize;
        let mut landed = Vec::new();
        for (j, &v) in data.iter().enumerate() {
            let s = lo + j;
            // A read in flight there comes back with what lands (the engine reads it again
            // elsewhere).
            if listed && !self.lists_bad_in(f.member, s as u64, 1) {
                continue;
            }
            let v = match self.w.torn_side.below(3) {
                0 => continue,
                1 => v,
                _ => self.w.torn_side.next_u64() | 1 << 63,
            };
            self.w.disks[f.disk].write(s, v, false);
            landed.push(s);
        }
        if !landed.is_empty() {
            self.log(|| {
                format!(
                    "failed write {sector}+{sectors} to disk {} tore {landed:?}",
                    f.disk
                )
            });
            self.w.torn_open.push((f.disk, f.member, landed));
        }
    }

    /// Whether a superblock write in flight to disk `d` says that its member is in sync.
    pub(crate) fn sb_in_flight_in_sync(&self, d: usize) -> bool {
        self.w
            .flights
            .iter()
            .any(|f| f.disk == d && matches!(&f.kind, FlightKind::Sb(sb, _) if sb.says_in_sync()))
    }

    /// Whether a power cut now could bring a member back in sync over a sector a failed write
    /// tore (see `land_failed_write`), its bad-block log on disk not listing it. Tears are
    /// forgotten once their record is on disk.
    pub(crate) fn torn_open(&mut self) -> bool {
        if self.w.torn_open.is_empty() {
            return false;
        }
        let mut open = std::mem::take(&mut self.w.torn_open);
        open.retain_mut(|(d, mi, sectors)| {
            // A superblock write in flight to the member that still says it is in sync (sent
            // before the failure) may land with the cut (seed 7967: its disk held an older
            // superblock, so that a cut looked safe, and the one in flight landed).
            if !self.in_sync_after_cut(*d, *mi) && !self.sb_in_flight_in_sync(*d) {
                return false;
            }
            let disk = &self.w.disks[*d];
            sectors.retain(|&s| !disk.logs_bad(s));
            !sectors.is_empty()
        });
        self.w.torn_open = open;
        !self.w.torn_open.is_empty()
    }

    /// Completes in-flight member op `k`.
    pub(crate) fn complete_flight(&mut self, k: usize) -> Res<()> {
        let f = self.w.flights.swap_remove(k);
        // The member's fault model answers first (superblock and bitmap writes lie outside the
        // data area, where sector faults are not modelled: a write of no sector).
        let member = &mut self.w.disks[f.disk].member;
        let answer = match &f.kind {
            FlightKind::Data {
                op,
                sector,
                sectors,
                ..
            } => {
                let n = u64::from(*sectors);
                match op {
                    MemberOp::Read => member.read(&mut self.w.rng, *sector, n),
                    MemberOp::Write => member
                        .write(&mut self.w.rng, *sector, n)
                        .map_err(|e| e.error),
                    MemberOp::Discard => member.discard(*sector, n),
                    MemberOp::Flush => member.flush(),
                }
            }
            FlightKind::Sb(..) | FlightKind::Bitmap { .. } => {
                member.write(&mut self.w.rng, 0, 0).map_err(|e| e.error)
            }
        };
        if answer == Err(MemberError::MediaError) {
            self.note_media_error(&f);
        }
        // Seeds with torn failures: after a read error, now and then the next write to that
        // disk fails (most often the read fix's write-back), so that tears only a write-back
        // or a sync write reaches come often enough to be caught (see `land_failed_write`).
        // Not on a member whose failure would lose acknowledged data (atlas rules 2 and 5: the
        // read error aimed at the one member that does not lag, seed 110183).
        if matches!(
            answer,
            Err(MemberError::MediaError | MemberError::ReadFailed)
        ) && self.w.swarm.torn_fails > 0
            && self.w.torn_side.chance(500)
            && self.atlas().may_take(f.member)
        {
            self.w.disks[f.disk].member.fail_write = Countdown::after(0);
        }
        let ok = answer.is_ok();
        let disk = &mut self.w.disks[f.disk];
        if ok {
            match &f.kind {
                FlightKind::Data {
                    op,
                    sector,
                    sectors,
                    buffer,
                    fua,
                    data,
                    flush_upto,
                } => match op {
                    MemberOp::Write => {
                        for (j, v) in data.iter().enumerate() {
                            disk.write(*sector as usize + j, *v, *fua);
                        }
                    }
                    MemberOp::Discard => {
                        for j in 0..*sectors as usize {
                            disk.write(*sector as usize + j, 0, false);
                        }
                    }
                    MemberOp::Flush => disk.flush(*flush_upto),
                    MemberOp::Read => {
                        let vals: Vec<u64> = (0..*sectors as usize)
                            .map(|j| disk.read(*sector as usize + j))
                            .collect();
                        let b = self.buffer(*buffer)?;
                        if b.len() < vals.len() {
                            return Err("(e) read buffer too small".into());
                        }
                        b[..vals.len()].copy_from_slice(&vals);
                        if let Buffer::Request { handle, .. } = *buffer {
                            let h = handle as usize;
                            if self.w.filled_from.len() <= h {
                                self.w.filled_from.resize(h + 1, None);
                            }
                            self.w.filled_from[h] = Some(f.disk);
                        }
                    }
                },
                FlightKind::Sb(st, log) => {
                    let chunk = if st.bitmap { self.w.bitmap_chunk } else { 0 };
                    self.w.disks[f.disk].land_sb(self.w.capacity as u64, chunk, st)?;
                    self.w.disks[f.disk].bblog.clone_from(log);
                    self.check_count_names_one_table(f.disk)?;
                    if st.resync_offset == MAX_SECTOR {
                        self.oracle_clean_means_flushed(f.member)?;
                    }
                    // (j) between the landings of a round, too (a failed write's tear is
                    // excused until its record lands, as for a cut).
                    if !self.torn_open() {
                        let what = format!("as member {}'s superblock landed", f.member);
                        self.oracle_record_durable(&what)?;
                    }
                }
                FlightKind::Bitmap { page, bytes } => {
                    let start = *page as usize * self.w.cfg.bitmap_page_bytes as usize;
                    let old = disk.bitmap.get(start..).unwrap_or(&[]).to_vec();
                    for (j, b) in bytes.iter().enumerate() {
                        if let Some(x) = disk.bitmap.get_mut(start + j) {
                            *x = *b;
                        }
                    }
                    self.oracle_no_clear_under_write(f.member, *page, bytes, &old)?;
                }
            }
        }
        // A failed flush counts too: the one before a superblock write (md's PREFLUSH) fails
        // that round like the write itself.
        let flush = matches!(
            f.kind,
            FlightKind::Data {
                op: MemberOp::Flush,
                ..
            }
        );
        if matches!(f.kind, FlightKind::Sb(..) | FlightKind::Bitmap { .. }) || (flush && !ok) {
            let before = self.w.errs.get(f.disk).copied().unwrap_or(0);
            if let Some(st) = self.w.meta_streak.get_mut(f.disk) {
                *st = if ok { None } else { Some(st.unwrap_or(before)) };
            }
        }
        if !ok {
            if let Some(e) = self.w.errs.get_mut(f.disk) {
                *e += 1;
            }
            if let FlightKind::Data {
                op,
                sector,
                sectors,
                ..
            } = &f.kind
            {
                let range = *sector as usize..(*sector + u64::from(*sectors)) as usize;
                let member = &self.w.disks[f.disk].member;
                let sticky: Vec<usize> = range
                    .clone()
                    .filter(|&s| member.unreadable(s as u64))
                    .collect();
                if *op == MemberOp::Read && !sticky.is_empty() {
                    self.w.fault_pages.extend(sticky.iter().map(|s| s / 8));
                } else {
                    self.w.fault_pages.extend(range.map(|s| s / 8));
                }
            }
        }
        if self.w.trace {
            self.log(|| {
                format!(
                    "member {} {:?} -> {}",
                    f.member,
                    match &f.kind {
                        FlightKind::Data {
                            op,
                            sector,
                            sectors,
                            ..
                        } => format!("{op:?} {sector}+{sectors}"),
                        k => format!("{k:?}"),
                    },
                    if ok { "ok" } else { "ERROR" }
                )
            });
        }
        // (ff) a read error on a FailFast member that is not the last in-sync one fails it at
        // once (the array read-write), unless it is the last in-sync one that does not lag
        // after a crash with write-behind (soak seed 17018438: failed, it left only a lagging
        // member to serve a dirty chunk, which returned what had been overwritten).
        let st = self.array.status();
        let failfast_read = !ok
            && !st.read_only_asked
            && st.in_sync >= 2
            && !self.atlas().last_up_to_date(f.member)
            && matches!(
                f.kind,
                FlightKind::Data {
                    op: MemberOp::Read,
                    buffer: Buffer::Request { .. },
                    ..
                }
            )
            && self
                .array
                .member(raid1_core::MemberId(f.member as u8))
                .is_some_and(|m| m.failfast && m.state == MemberState::InSync);
        let read = matches!(
            f.kind,
            FlightKind::Data {
                op: MemberOp::Read,
                ..
            }
        );
        if !ok
            && !read
            && self.w.slot[f.member] == Some(f.disk)
            && self
                .array
                .member(raid1_core::MemberId(f.member as u8))
                .is_some_and(|m| m.state != MemberState::Faulty)
        {
            self.w.disks[f.disk].unsettled = true;
        }
        self.array
            .complete(
                self.t(),
                f.tag,
                if ok { IoResult::Ok } else { IoResult::Error },
            )
            .map_err(|e| format!("complete refused a valid tag: {e:?}"))?;
        if answer == Err(MemberError::WriteFailed) {
            self.land_failed_write(&f);
        }
        if failfast_read
            && self
                .array
                .member(raid1_core::MemberId(f.member as u8))
                .is_some_and(|m| m.state != MemberState::Faulty)
        {
            return Err(format!(
                "(ff) FailFast member {} kept after a read error (in sync: {})",
                f.member, st.in_sync
            ));
        }
        self.drain_outputs()
    }
}
