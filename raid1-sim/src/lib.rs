//! Deterministic fault simulator for raid1-core.
//!
//! A std frontend of its own: it binds the engine to simulated member disks (a durable image plus
//! a volatile write cache per disk), drives it from one `u64` seed with random workloads,
//! latencies, completion reordering, member errors, crashes and reconfigurations, and checks the
//! invariants after every step. See `docs/SIM.md`.
//!
//! Data is modelled one `u64` per sector: the engine never looks at data, so a stamp per sector
//! (write id and sector) is enough to tell every write apart.
//!
//! Modules: `oracles` (ordering checks at the instant metadata and data reach the disks),
//! `faults` (sticky media errors, silent corruption, check/repair scrubs), `schedules` (held
//! `poll_io`, aimed crashes, partial assembly, pinned reads) and [`bridge`] (superblock states to
//! md v1.x bytes and back).

pub mod bridge;
mod faults;
mod oracles;
mod schedules;

pub use oracles::ORACLES;
pub use raid1_testkit::Rng;
use raid1_testkit::{FaultyMember, Health, MemberError};

use raid1_core::{
    AddMember, Array, AssembleError, BadBlocks, BadRange, Buffer, Config, Event, Instant, IoCmd,
    IoResult, MemberId, MemberOp, MemberState, Outcome, Request, RequestOp, Role, StartPolicy,
    SubmitError, SuperblockState, SyncAction, Tag,
};

/// Member positions.
pub const M: usize = 4;
/// Logical requests in flight.
pub const R: usize = 16;
/// Sync windows.
pub const S: usize = 2;

type Arr<'a> = Array<'a, M, R, S>;

/// Mixed into every seed before it seeds the [`Rng`], so that the simulator's runs do not share
/// their random streams with other users of the same small seeds.
const SEED_SALT: u64 = 0x005E_ED0F_4A1D_0001;

#[derive(Clone, Debug)]
struct Disk {
    durable: Vec<u64>,
    /// Per sector: writes completed but not yet flushed, oldest first, with their write sequence.
    cache: Vec<Vec<(u64, u64)>>,
    wseq: u64,
    /// The superblock as parsed back from `sb_bytes` (kept in step with them).
    sb: Option<SuperblockState<M>>,
    /// The md v1.x superblock bytes on the disk and its bitmap header (empty without a bitmap).
    sb_bytes: Vec<u8>,
    bm_header: Vec<u8>,
    bitmap: Vec<u8>,
    /// Its faults (raid1-testkit's member fault model): flaky or dead, and sticky media errors,
    /// sectors that fail every read until they are written.
    member: FaultyMember<Box<[u8]>>,
    /// Its bad-block log on disk (md's per-device log, data-area relative): what a frontend
    /// lends the engine when it assembles or re-adds this disk. Rewritten from the engine's
    /// list at a clean stop (everything written is flushed by then).
    bblog: Vec<BadRange>,
}

impl Disk {
    fn new(rng: &mut Rng, sectors: usize, bm_bytes: usize) -> Disk {
        Disk {
            durable: (0..sectors).map(|_| rng.next_u64() | 1 << 63).collect(),
            cache: vec![Vec::new(); sectors],
            wseq: 0,
            sb: None,
            sb_bytes: Vec::new(),
            bm_header: Vec::new(),
            bitmap: vec![0; bm_bytes],
            member: FaultyMember::new(vec![0; sectors].into_boxed_slice()),
            bblog: Vec::new(),
        }
    }
    fn read(&self, s: usize) -> u64 {
        self.cache[s].last().map_or(self.durable[s], |e| e.0)
    }
    /// Stores `v` at `s` (the member, consulted first, remapped a media error there).
    fn write(&mut self, s: usize, v: u64, fua: bool) {
        if fua {
            self.cache[s].clear();
            self.durable[s] = v;
        } else {
            self.wseq += 1;
            self.cache[s].push((v, self.wseq));
        }
    }
    fn flush(&mut self, upto: u64) {
        for s in 0..self.durable.len() {
            let c = &mut self.cache[s];
            if let Some(k) = c.iter().rposition(|e| e.1 <= upto) {
                self.durable[s] = c[k].0;
                c.drain(..=k);
            }
        }
    }
    /// Power loss: each cached sector persists one of its cached values, or none.
    fn crash(&mut self, rng: &mut Rng) {
        for s in 0..self.durable.len() {
            let c = std::mem::take(&mut self.cache[s]);
            if !c.is_empty() {
                let k = rng.below(c.len() as u64 + 1) as usize;
                if k < c.len() {
                    self.durable[s] = c[k].0;
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
struct Flight {
    tag: Tag,
    member: usize,
    disk: usize,
    kind: FlightKind,
    ready_at: u64,
}

#[derive(Clone, Debug)]
enum FlightKind {
    Data {
        op: MemberOp,
        sector: u64,
        sectors: u32,
        buffer: Buffer,
        fua: bool,
        data: Vec<u64>,
        flush_upto: u64,
    },
    Sb(SuperblockState<M>),
    Bitmap {
        page: u32,
        bytes: Vec<u8>,
    },
}

/// Shadow state of one sector.
#[derive(Clone, Debug, Default)]
struct Shadow {
    /// Possible durable values (one, except after a crash before the resync settled them).
    base: Vec<u64>,
    /// Possible current values.
    current: Vec<u64>,
    /// Writes since the durable point: (value, ack sequence when acknowledged).
    since: Vec<(u64, Option<u64>)>,
    /// Value of the write in flight (the workload never overlaps two writes).
    inflight: Option<u64>,
}

#[derive(Clone, Debug)]
struct LReq {
    op: RequestOp,
    sector: u64,
    sectors: u32,
    handle: u32,
    fua: bool,
    /// Reads: allowed values per sector.
    allowed: Vec<Vec<u64>>,
    /// Flush: ack sequence at submit.
    flush_seq: u64,
    /// Errors per disk when it was submitted.
    errs_at_submit: Vec<u64>,
    /// Reads: (member, disk) pairs that failed this request on a sticky media error.
    sticky_hits: Vec<(usize, usize)>,
    /// Reads: per sector, the pinned answer at submit (invariant (n)).
    pins: Vec<Option<u64>>,
    /// Reads: whether an in-sync member listed a bad block in the range at submit (a write
    /// may clear the list before the read completes; the source was chosen before that).
    bad_at_submit: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reconf {
    Remove(usize),
    AddNew(usize),
    ReAdd(usize, usize),
    Grow,
    Shrink,
}

/// Per-seed statistics.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Steps run.
    pub steps: u64,
    /// Logical requests completed.
    pub completed: u64,
    /// Crashes simulated.
    pub crashes: u64,
    /// Reconfigurations applied.
    pub reconfigs: u64,
    /// Sync actions finished.
    pub syncs: u64,
    /// Member failures.
    pub failures: u64,
    /// Clean stops (and restarts).
    pub stops: u64,
    /// Reads that hit a sticky media error and were served after a write-back.
    pub media_fixes: u64,
    /// Silent corruptions planted.
    pub corruptions: u64,
    /// Check passes that found the planted corruption, each followed by a repair.
    pub scrubs: u64,
    /// Bad-block entries planted over differing data.
    pub bad_blocks: u64,
}

/// How to run a seed.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Log every event, member I/O and decision to stderr.
    pub trace: bool,
    /// Oracles switched off (labels from [`ORACLES`]), to measure what each one catches.
    pub without: Vec<String>,
}

/// A broken invariant.
#[derive(Clone, Debug)]
pub struct Violation {
    /// Which invariant and what was seen.
    pub what: String,
    /// Step at which it was seen.
    pub step: u64,
}

/// Everything a seed keeps from one assembly of the array to the next: the disks, what is in
/// flight, the shadow, the random stream. The array itself lives in [`Sim`], one per assembly.
struct World {
    rng: Rng,
    cfg: Config,
    sectors: usize,
    bm_bytes: usize,
    now: u64,
    step: u64,
    disks: Vec<Disk>,
    /// Disk attached at each member position.
    slot: [Option<usize>; M],
    /// Disks detached (available for re-add).
    pool: Vec<usize>,
    /// The array as `mdadm --create` makes it: slots, members and whether it is clean.
    raid_disks: u16,
    members: usize,
    assume_clean: bool,
    flights: Vec<Flight>,
    bufs: Vec<Vec<u64>>,
    free_bufs: Vec<u32>,
    sync_bufs: Vec<Vec<u64>>,
    reqs: std::collections::BTreeMap<u64, LReq>,
    next_id: u64,
    ack_seq: u64,
    shadow: Vec<Shadow>,
    pending: Vec<Reconf>,
    stats: Stats,
    crashes_left: u32,
    /// Sync rate limit (sectors/s) the frontend imposes, if any.
    sync_rate: Option<u64>,
    trace: bool,
    opts: Options,
    /// Member I/O errors each disk returned so far.
    errs: Vec<u64>,
    /// Per disk, while its superblock / bitmap writes keep failing: its error count before the
    /// first failure of that run. The engine fails the requests that wait for such a record
    /// once it gives up rewriting it, even requests submitted after the errors began.
    meta_streak: Vec<Option<u64>>,
    /// Per sector: a value planted by silent corruption that may legitimately be found there
    /// until it is repaired or overwritten everywhere.
    corrupt: Vec<Option<u64>>,
    /// The disk silent corruption was planted on (the fault atlas counts it as unhealthy).
    corrupt_disk: Option<usize>,
    /// Sync writes issued so far (a check pass must issue none).
    sync_writes: u64,
    /// The last sync action that finished or was interrupted.
    sync_end: Option<Event>,
    sched: schedules::Schedules,
    /// Per sector: a read's answer pinned to the disk it came from (invariant (n)).
    pins: Vec<Option<(u64, usize)>>,
    /// The step being run, and the next one.
    next_step: u64,
    /// What is left of the step in which the power was cut, to run once the array is back.
    resume: Option<Then>,
}

/// One assembly of the array, from its creation or a restart to the next power cut: the engine,
/// the storage it borrows for that long, and the seed's [`World`].
struct Sim<'a> {
    w: &'a mut World,
    array: Arr<'a>,
    lend: Lender<'a>,
}

/// The memory a seed lends the engine, allocated once per seed and lent again at every
/// assembly (the engine borrows it for the life of an [`Array`]), so that nothing is leaked
/// and nothing is allocated per crash: two bitmap buffer pairs (a start refused by
/// `StartPolicy::RequireAll` and the retry with `AllowDegraded` need one each) and room for
/// the bad-block lists lent during one assembly's life.
struct Store {
    bitmaps: [Buffers; 2],
    lists: Box<[BadRange]>,
}

/// A bitmap's storage in the engine: its bits and its "hot" companion, one byte per 8 chunks.
type Buffers = (Box<[u8]>, Box<[u8]>);

/// [`Buffers`] lent to one [`Array`] (none without a bitmap).
type Lent<'a> = Option<(&'a mut [u8], &'a mut [u8])>;

/// Entries of room for bad-block lists per assembly: 64 lists of the longest a disk's log gets
/// ([`LIST_SLACK`] + 1 entries, from one planted entry and its splits), each with its slack.
const LIST_ROOM: usize = 64 * (2 * LIST_SLACK + 1);

/// Spare entries lent with every list, for the splits a write into the middle of an entry needs.
const LIST_SLACK: usize = 8;

impl Store {
    fn new(bm_bytes: usize) -> Store {
        let pair = || {
            (
                vec![0u8; bm_bytes].into_boxed_slice(),
                vec![0u8; bm_bytes].into_boxed_slice(),
            )
        };
        Store {
            bitmaps: [pair(), pair()],
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
    fn lend(&mut self) -> Lender<'_> {
        let [(b0, h0), (b1, h1)] = &mut self.bitmaps;
        Lender {
            bitmaps: [
                Some((&mut b0[..], &mut h0[..])),
                Some((&mut b1[..], &mut h1[..])),
            ],
            lists: &mut self.lists[..],
        }
    }
}

/// The [`Store`] as one assembly's life may use it: each part is lent to the engine once.
struct Lender<'a> {
    bitmaps: [Lent<'a>; 2],
    lists: &'a mut [BadRange],
}

impl<'a> Lender<'a> {
    /// Bitmap storage holding `bits` (zeroes if `None`), or none without a bitmap.
    fn bitmap(&mut self, bits: Option<&[u8]>) -> Res<Lent<'a>> {
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

    /// `list` in lent room, with [`LIST_SLACK`] spare entries for splits.
    fn list(&mut self, list: &[BadRange]) -> Res<BadBlocks<'a>> {
        if list.is_empty() {
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
enum Start {
    /// `mdadm --create`.
    Create,
    /// After a power cut: assembly from what the disks hold.
    Restart(Cut),
}

/// How an assembly's life ended: the seed is over, or the power was cut.
enum Life {
    Finished,
    PowerCut(Cut),
}

/// A power cut in the middle of a step, with what is left to do once the array is back.
#[derive(Clone, Copy, Debug)]
struct Cut {
    /// After a clean stop of a clean, complete array: the restart must write no superblock.
    quiet_restart: bool,
    then: Then,
}

/// The rest of the step in which the power was cut.
#[derive(Clone, Copy, Debug)]
enum Then {
    /// The check for an aimed crash at the end of the step, then its tail.
    AimedCrashCheck,
    /// Only the tail of the step.
    Tail,
}

fn dedup(v: &mut Vec<u64>) {
    v.sort_unstable();
    v.dedup();
}

type Res<T> = Result<T, String>;

impl World {
    fn new(seed: u64, opts: &Options) -> World {
        let trace = opts.trace;
        let mut rng = Rng::new(seed ^ SEED_SALT);
        let mut sectors = 256 + 64 * rng.below(8) as usize;
        let uneven = rng.chance(300);
        if uneven {
            // Sizes, windows and barrier units that do not divide each other.
            sectors += 1 + rng.below(63) as usize;
        }
        let mut cfg = Config::new(sectors as u64);
        cfg.max_request_sectors = 16;
        cfg.barrier_unit_shift = 6;
        cfg.sync_window_sectors = [8, 16, 32][rng.below(3) as usize];
        if uneven {
            cfg.barrier_unit_shift = [5, 6, 7][rng.below(3) as usize];
            cfg.sync_window_sectors =
                [8, 12, 24, 40][rng.below(4) as usize].min(1 << cfg.barrier_unit_shift);
        }
        // Per-seed timer profile: from "clean/dirty flips all the time" to "rarely".
        cfg.safe_mode_delay_ns = 200_000 + rng.below(6_000_000);
        cfg.bitmap_daemon_ns = 1_000_000 + rng.below(20_000_000);
        cfg.sync_checkpoint_sectors = 64;
        if rng.chance(850) {
            cfg.bitmap_chunk_sectors = [8, 16, 32][rng.below(3) as usize];
            cfg.bitmap_page_bytes = [1, 2, 4096][rng.below(3) as usize];
        }
        let bm_bytes = Arr::bitmap_bytes(&cfg);
        let raid_disks = 2 + rng.below(2) as u16;
        let n = raid_disks as usize + rng.below(2) as usize;
        let disks: Vec<Disk> = (0..n)
            .map(|_| Disk::new(&mut rng, sectors, bm_bytes))
            .collect();
        let assume_clean = rng.chance(300);
        let mut disks = disks;
        if assume_clean {
            // mdadm --assume-clean is only honest when the members are identical.
            let first = disks[0].durable.clone();
            for d in disks.iter_mut() {
                d.durable.clone_from(&first);
            }
        }
        let sync_rate = rng.chance(300).then(|| 2_000 + rng.below(50_000));
        let mut slot = [None; M];
        for (i, s) in slot.iter_mut().enumerate().take(n) {
            *s = Some(i);
        }
        let mut shadow = vec![Shadow::default(); sectors];
        for (s, sh) in shadow.iter_mut().enumerate() {
            sh.base = disks
                .iter()
                .take(raid_disks as usize)
                .map(|d| d.durable[s])
                .collect();
            dedup(&mut sh.base);
            sh.current = sh.base.clone();
        }
        let sync_bufs = vec![vec![0; 128]; S * M];
        let rng_crashes = rng.below(6) as u32;
        let sched = schedules::Schedules {
            hold_permille: if rng.chance(300) { 30 } else { 0 },
            aim_crashes: rng.chance(300),
            partial_assembly: rng.chance(300),
            ..Default::default()
        };
        World {
            rng,
            cfg,
            sectors,
            bm_bytes,
            now: 1_000_000,
            step: 0,
            disks,
            slot,
            pool: Vec::new(),
            raid_disks,
            members: n,
            assume_clean,
            flights: Vec::new(),
            bufs: Vec::new(),
            free_bufs: Vec::new(),
            sync_bufs,
            reqs: Default::default(),
            next_id: 1,
            ack_seq: 0,
            shadow,
            pending: Vec::new(),
            stats: Stats::default(),
            crashes_left: 1 + rng_crashes,
            sync_rate,
            trace,
            opts: opts.clone(),
            errs: vec![0; 64],
            meta_streak: vec![None; 64],
            corrupt: vec![None; sectors],
            corrupt_disk: None,
            sync_writes: 0,
            sync_end: None,
            sched,
            pins: vec![None; sectors],
            next_step: 0,
            resume: None,
        }
    }
}

impl World {
    fn log(&self, s: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("[{} t={}] {}", self.step, self.now, s());
        }
    }
}

impl<'a> Sim<'a> {
    /// Creates or reassembles the array over `w`'s disks, with storage lent from `store`.
    fn start(w: &'a mut World, store: &'a mut Store, how: Start) -> Res<Sim<'a>> {
        let mut lend = store.lend();
        let array = match how {
            Start::Create => {
                let ids: Vec<MemberId> = (0..w.members).map(|i| MemberId(i as u8)).collect();
                let mut array = Arr::create(
                    w.cfg,
                    lend.bitmap(None)?,
                    w.raid_disks,
                    &ids,
                    w.assume_clean,
                )
                .map_err(|e| format!("create: {e:?}"))?;
                array.set_sync_rate(w.sync_rate);
                array
            }
            Start::Restart(_) => Self::assemble_array(w, &mut lend)?,
        };
        let mut sim = Sim { w, array, lend };
        match how {
            Start::Create => sim.created()?,
            Start::Restart(cut) => sim.restarted(cut)?,
        }
        Ok(sim)
    }

    fn t(&self) -> Instant {
        Instant(self.w.now)
    }

    fn log(&self, s: impl FnOnce() -> String) {
        self.w.log(s);
    }

    fn in_sync_members(&self) -> Vec<usize> {
        (0..M)
            .filter(|&i| {
                self.array
                    .member(MemberId(i as u8))
                    .is_some_and(|m| m.state == MemberState::InSync)
            })
            .collect()
    }

    // ----------------------------------------------------------------------------------------
    // Driving the engine.

    fn drain_outputs(&mut self) -> Res<()> {
        while self.w.sched.hold_steps == 0 {
            let Some(cmd) = self.array.poll_io() else {
                break;
            };
            self.issue(cmd)?;
        }
        while let Some(c) = self.array.poll_completion() {
            self.logical_done(c.id, c.outcome)?;
        }
        while let Some(ev) = self.array.poll_event() {
            self.log(|| format!("event {ev:?}"));
            match ev {
                Event::SyncFinished { .. } => {
                    self.w.stats.syncs += 1;
                    self.w.sync_end = Some(ev);
                }
                Event::SyncInterrupted(_) => self.w.sync_end = Some(ev),
                Event::MemberFailed(_) => self.w.stats.failures += 1,
                _ => {}
            }
        }
        Ok(())
    }

    fn latency(&mut self) -> u64 {
        let base = 10_000 + self.w.rng.below(300_000);
        if self.w.rng.chance(50) {
            base + self.w.rng.below(3_000_000)
        } else {
            base
        }
    }

    fn issue(&mut self, cmd: IoCmd<M>) -> Res<()> {
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
        if matches!(cmd, IoCmd::Superblock { .. } | IoCmd::BitmapPage { .. })
            && !self
                .w
                .flights
                .iter()
                .any(|f| matches!(f.kind, FlightKind::Sb(_) | FlightKind::Bitmap { .. }))
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
                let end = io.sector + u64::from(io.sectors);
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
                // Invariant (c): no member read (request or sync) from a sector in that member's
                // bad-block list (md's read_balance and sync_request never take one as source).
                if io.op == MemberOp::Read {
                    if let Some(b) = self
                        .array
                        .bad_blocks(io.member)
                        .iter()
                        .find(|b| b.start < end && io.sector < b.end())
                    {
                        return Err(format!(
                            "(c) read {}+{} ({:?}) sent to member {mi}, whose bad-block list \
                             names {}+{}",
                            io.sector, io.sectors, io.buffer, b.start, b.sectors
                        ));
                    }
                }
                // Invariant (c): a read for a logical request only from a member whose data is current.
                if io.op == MemberOp::Read {
                    if let Buffer::Request { .. } = io.buffer {
                        let state = self.array.member(io.member).map(|m| m.state);
                        let valid = match state {
                            Some(MemberState::InSync) => true,
                            Some(MemberState::Recovering {
                                recovery_offset, ..
                            }) => recovery_offset >= end,
                            _ => false,
                        };
                        if !valid {
                            return Err(format!(
                                "(c) read {}+{} sent to member {mi} in state {state:?}",
                                io.sector, io.sectors
                            ));
                        }
                        for s in io.sector..end {
                            let sh = &self.w.shadow[s as usize];
                            let v = self.w.disks[disk].read(s as usize);
                            if !sh.current.contains(&v)
                                && sh.inflight != Some(v)
                                && !self.corrupt_allowed(s as usize, v)
                            {
                                return Err(format!(
                                    "(c) read of sector {s} sent to member {mi} (state {:?}) which holds {v:#x}, not current {:x?}",
                                    self.array.member(io.member).map(|m| m.state),
                                    sh.current
                                ));
                            }
                        }
                    }
                }
                // Environment check (TigerBeetle-style): two writes in flight over the same
                // sectors of one member mean the barriers failed to order sync and normal I/O.
                if matches!(io.op, MemberOp::Write | MemberOp::Discard) {
                    if matches!(io.buffer, Buffer::Sync { .. }) {
                        self.w.sync_writes += 1;
                    }
                    self.oracle_dirty_bit_before_data(&io)?;
                    let clash = self.w.flights.iter().find(|f| {
                        f.disk == disk
                            && matches!(&f.kind, FlightKind::Data { op: MemberOp::Write | MemberOp::Discard, sector, sectors, .. }
                                if *sector < end && io.sector < sector + u64::from(*sectors))
                    });
                    if let Some(f) = clash {
                        return Err(format!(
                            "(barrier) overlapping writes in flight on member {mi}: {io:?} and {:?}",
                            f.kind
                        ));
                    }
                }
                let flush_upto = self.w.disks[disk].wseq;
                self.w.flights.push(Flight {
                    tag: io.tag,
                    member: mi,
                    disk,
                    kind: FlightKind::Data {
                        op: io.op,
                        sector: io.sector,
                        sectors: io.sectors,
                        buffer: io.buffer,
                        fua: io.fua,
                        data,
                        flush_upto,
                    },
                    ready_at,
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
                    kind: FlightKind::Sb(state),
                    ready_at,
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
    fn buffer(&mut self, b: Buffer) -> Res<&mut [u64]> {
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

    /// Completes in-flight member op `k`.
    fn complete_flight(&mut self, k: usize) -> Res<()> {
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
            FlightKind::Sb(_) | FlightKind::Bitmap { .. } => {
                member.write(&mut self.w.rng, 0, 0).map_err(|e| e.error)
            }
        };
        if answer == Err(MemberError::MediaError) {
            self.note_media_error(&f);
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
                    }
                },
                FlightKind::Sb(st) => {
                    self.land_sb(f.disk, st)?;
                    self.check_count_names_one_table(f.disk)?;
                    if st.resync_offset == u64::MAX {
                        self.oracle_clean_means_flushed(f.member)?;
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
        if matches!(f.kind, FlightKind::Sb(_) | FlightKind::Bitmap { .. }) || (flush && !ok) {
            let before = self.w.errs.get(f.disk).copied().unwrap_or(0);
            if let Some(st) = self.w.meta_streak.get_mut(f.disk) {
                *st = if ok { None } else { Some(st.unwrap_or(before)) };
            }
        }
        if !ok {
            if let Some(e) = self.w.errs.get_mut(f.disk) {
                *e += 1;
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
        self.array
            .complete(
                self.t(),
                f.tag,
                if ok { IoResult::Ok } else { IoResult::Error },
            )
            .map_err(|e| format!("complete refused a valid tag: {e:?}"))?;
        self.drain_outputs()
    }

    fn logical_done(&mut self, id: u64, outcome: Outcome) -> Res<()> {
        let r = self
            .w
            .reqs
            .remove(&id)
            .ok_or_else(|| format!("completion for unknown request {id}"))?;
        self.w.stats.completed += 1;
        if outcome != Outcome::Ok {
            // Acceptable only if every in-sync member returned an error during the request (the
            // fault atlas normally prevents that; transient errors can still line up).
            // A read may also fail where a member lists bad blocks in its range (md's
            // read_balance finds no member with good data there).
            let all_failed = self.in_sync_members().iter().all(|&i| {
                (r.op == RequestOp::Read && self.lists_bad_in(i, r.sector, r.sectors))
                    || self.w.slot[i].is_some_and(|d| {
                        let base = r.errs_at_submit.get(d).copied().unwrap_or(0);
                        let base = match self.w.meta_streak.get(d).copied().flatten() {
                            Some(streak) => base.min(streak),
                            None => base,
                        };
                        self.w.errs.get(d).copied().unwrap_or(0) > base
                    })
            });
            if all_failed {
                self.log(|| {
                    format!(
                        "{:?} {}+{} failed: every in-sync member erred",
                        r.op, r.sector, r.sectors
                    )
                });
                if matches!(r.op, RequestOp::Write | RequestOp::Discard) {
                    for j in 0..r.sectors as usize {
                        let s = r.sector as usize + j;
                        let sh = &mut self.w.shadow[s];
                        if let Some(v) = sh.inflight.take() {
                            sh.current.push(v);
                        }
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
                self.check_read_error_repaired(&r)?;
                // Where a member lists bad blocks in the range, md's source for each sector
                // depends on where the read starts (choose_first_rdev passes over a member whose
                // first sector is bad): (n) pins only reads clear of every list.
                let clear_of_bad = !r.bad_at_submit
                    && !self
                        .in_sync_members()
                        .iter()
                        .any(|&i| self.lists_bad_in(i, r.sector, r.sectors));
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
                let vals: Vec<u64> = self.w.bufs[r.handle as usize][..r.sectors as usize].to_vec();
                for (j, v) in vals.into_iter().enumerate().filter(|_| clear_of_bad) {
                    self.pin_read(r.sector as usize + j, v);
                }
            }
            RequestOp::Write | RequestOp::Discard => {
                self.w.ack_seq += 1;
                for j in 0..r.sectors as usize {
                    let s = r.sector as usize + j;
                    let v = if r.op == RequestOp::Discard {
                        0
                    } else {
                        self.w.bufs[r.handle as usize][j]
                    };
                    let sh = &mut self.w.shadow[s];
                    sh.inflight = None;
                    sh.current = vec![v];
                    if r.fua {
                        sh.base = vec![v];
                        sh.since.clear();
                    } else if let Some(e) = sh.since.iter_mut().rev().find(|e| e.0 == v) {
                        e.1 = Some(self.w.ack_seq);
                    }
                }
            }
            RequestOp::Flush => {
                for sh in self.w.shadow.iter_mut() {
                    if let Some(k) = sh
                        .since
                        .iter()
                        .rposition(|e| e.1.is_some_and(|a| a <= r.flush_seq))
                    {
                        sh.base = vec![sh.since[k].0];
                        sh.since.drain(..=k);
                    }
                }
            }
        }
        if matches!(r.op, RequestOp::Write | RequestOp::Flush) {
            self.aim_crash(30);
        }
        match r.op {
            RequestOp::Flush => self.oracle_record_durable_at_ack(&format!("flush {id}"))?,
            RequestOp::Write if r.fua => {
                self.oracle_record_durable_at_ack(&format!("FUA write {id}"))?
            }
            _ => {}
        }
        self.w.free_bufs.push(r.handle);
        Ok(())
    }

    fn alloc_buf(&mut self) -> u32 {
        if let Some(h) = self.w.free_bufs.pop() {
            return h;
        }
        self.w.bufs.push(vec![0; 16]);
        (self.w.bufs.len() - 1) as u32
    }

    fn submit(&mut self, op: RequestOp) -> Res<()> {
        let sectors = 1 + self.w.rng.below(16) as u32;
        let mut sector = self.w.rng.below(self.w.sectors as u64 - sectors as u64 + 1);
        if self.w.rng.chance(300) {
            // Sequential or hot-spot traffic.
            sector = (sector % 64) & !7;
        }
        if matches!(op, RequestOp::Write | RequestOp::Discard) {
            // Concurrent overlapping writes are undefined (as on any block device): avoid them.
            if (sector..sector + u64::from(sectors))
                .any(|s| self.w.shadow[s as usize].inflight.is_some())
            {
                return Ok(());
            }
        }
        let id = self.w.next_id;
        let handle = self.alloc_buf();
        let fua = op == RequestOp::Write && self.w.rng.chance(100);
        let req = Request {
            id,
            op,
            sector,
            sectors: if op == RequestOp::Flush { 0 } else { sectors },
            buffer: handle,
            fua,
        };
        let in_table = self.w.reqs.len();
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
            flush_seq: self.w.ack_seq,
            errs_at_submit: self.w.errs.clone(),
            sticky_hits: Vec::new(),
            pins: Vec::new(),
            bad_at_submit: op == RequestOp::Read
                && self
                    .in_sync_members()
                    .iter()
                    .any(|&i| self.lists_bad_in(i, sector, sectors)),
        };
        match op {
            RequestOp::Read => {
                for s in sector..sector + u64::from(sectors) {
                    let sh = &self.w.shadow[s as usize];
                    let mut a = sh.current.clone();
                    a.extend(sh.inflight);
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
                    self.w.shadow[s].inflight = Some(v);
                    self.w.shadow[s].since.push((v, None));
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

    fn timers(&mut self) -> Res<()> {
        if let Some(t) = self.array.poll_timeout() {
            if t.0 <= self.w.now {
                self.array.handle_timeout(self.t());
                self.drain_outputs()?;
            }
        }
        Ok(())
    }

    fn complete_some(&mut self, max: usize) -> Res<()> {
        for _ in 0..max {
            if self.w.sched.crash_now {
                break;
            }
            let ready: Vec<usize> = (0..self.w.flights.len())
                .filter(|&k| self.w.flights[k].ready_at <= self.w.now)
                .collect();
            if ready.is_empty() {
                break;
            }
            let k = ready[self.w.rng.below(ready.len() as u64) as usize];
            self.complete_flight(k)?;
        }
        Ok(())
    }

    // ----------------------------------------------------------------------------------------
    // Faults and reconfiguration.

    fn inject_fault(&mut self) {
        // Fault atlas: at most one unhealthy disk at a time, and only while another in-sync member
        // stays healthy, so no acknowledged data can be lost on every mirror.
        if self.unhealthy_member().is_some() {
            return;
        }
        let in_sync = self.in_sync_members();
        if in_sync.len() < 2 {
            return;
        }
        let attached: Vec<usize> = (0..M).filter(|&i| self.w.slot[i].is_some()).collect();
        let mi = attached[self.w.rng.below(attached.len() as u64) as usize];
        let d = self.w.slot[mi].unwrap_or(0);
        if !self.another_in_sync_on_disk(mi) {
            return;
        }
        if self.w.rng.chance(250) {
            self.inject_sticky(mi, d);
            return;
        }
        let fault = [
            Health::FlakyReads(300),
            Health::FlakyWrites(300),
            Health::Dead,
        ][self.w.rng.below(3) as usize];
        self.log(|| format!("fault {fault:?} on member {mi} (disk {d})"));
        self.w.disks[d].member.health = fault;
    }

    /// Whether an in-sync member other than `mi` is in sync on its disk too (own role active,
    /// no recovery offset): right after a recovery the rebuilt member is in sync in memory while
    /// its superblock still says recovering until the next round lands, and a power cut then
    /// leaves only what the disks say (md has the same window; soak seed 149880). The atlas
    /// never takes away the last member that is in sync on disk.
    fn another_in_sync_on_disk(&self, mi: usize) -> bool {
        self.in_sync_members().iter().any(|&j| {
            j != mi
                && self.w.slot[j]
                    .and_then(|d| self.w.disks[d].sb)
                    .is_some_and(|sb| {
                        matches!(sb.own_role(), Role::Active(_)) && sb.recovery_offset.is_none()
                    })
        })
    }

    /// An attached, not yet failed member whose disk misbehaves.
    fn unhealthy_member(&self) -> Option<usize> {
        (0..M).find(|&i| {
            self.w.slot[i].is_some_and(|d| {
                self.w.disks[d].member.misbehaves()
                    || self.w.corrupt_disk == Some(d)
                    || self.lists_bad_blocks(i, d)
            }) && self
                .array
                .member(MemberId(i as u8))
                .is_some_and(|m| m.state != MemberState::Faulty)
        })
    }

    fn heal(&mut self) {
        for d in self.w.disks.iter_mut() {
            d.member.heal();
        }
        self.forget_sticky();
    }

    fn plan_reconfig(&mut self) -> Res<()> {
        let st = self.array.status();
        let choice = self.w.rng.below(6);
        let op = match choice {
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
                    let d = self.w.pool.remove(k);
                    self.w.disks[d].member.health = Health::Healthy;
                    Reconf::ReAdd(at, d)
                } else {
                    Reconf::AddNew(at)
                }
            }
            3 => {
                // Fail an in-sync member (administrative), with I/O in flight.
                // Atlas: never fail the last healthy in-sync member by hand.
                let in_sync = self.in_sync_members();
                let sick = self.unhealthy_member();
                if in_sync.len() >= 2 && !(sick.is_some() && in_sync.len() == 2) {
                    let mi = in_sync[self.w.rng.below(in_sync.len() as u64) as usize];
                    // Nor the last member that is in sync on disk: right after a recovery the
                    // rebuilt member is in sync in memory, but its superblock still says
                    // recovering until the next round lands; a power cut before that leaves no
                    // member to start from (md has the same window; soak seed 149880).
                    if !self.another_in_sync_on_disk(mi) {
                        return Ok(());
                    }
                    self.log(|| format!("fail member {mi}"));
                    self.array
                        .fail_member(self.t(), MemberId(mi as u8))
                        .map_err(|e| format!("fail refused: {e:?}"))?;
                    self.drain_outputs()?;
                }
                return Ok(());
            }
            4 if self.w.rng.chance(300) => {
                // Toggle WriteMostly on a member: reads avoid it while another can serve them.
                let mi = self.w.rng.below(M as u64) as u8;
                let on = self.w.rng.chance(500);
                let _ = self.array.set_write_mostly(MemberId(mi), on);
                return self.drain_outputs();
            }
            4 if st.raid_disks < 3 => Reconf::Grow,
            5 if st.raid_disks > 2 => Reconf::Shrink,
            _ => return Ok(()),
        };
        self.log(|| format!("freeze for {op:?} (pending {:?})", self.w.pending));
        self.array.freeze().map_err(|e| format!("freeze: {e:?}"))?;
        self.w.pending.push(op);
        self.drain_outputs()
    }

    fn pending_uses(&self, i: usize) -> bool {
        self.w
            .pending
            .iter()
            .any(|p| matches!(p, Reconf::AddNew(x) | Reconf::ReAdd(x, _) if *x == i))
    }

    /// Applies the pending reconfigurations once the array is quiesced (each one held a freeze).
    fn apply_pending(&mut self) -> Res<()> {
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
            let op = self.w.pending.remove(0);
            self.apply(op)?;
            self.array
                .unfreeze()
                .map_err(|e| format!("unfreeze: {e:?}"))?;
            self.drain_outputs()?;
        }
        Ok(())
    }

    fn apply(&mut self, op: Reconf) -> Res<()> {
        self.log(|| format!("apply {op:?}"));
        self.w.stats.reconfigs += 1;
        match op {
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
                let d = Disk::new(&mut self.w.rng, self.w.sectors, self.w.bm_bytes);
                self.w
                    .errs
                    .resize(self.w.errs.len().max(self.w.disks.len() + 1), 0);
                self.w
                    .meta_streak
                    .resize(self.w.meta_streak.len().max(self.w.disks.len() + 1), None);
                self.w.disks.push(d);
                let di = self.w.disks.len() - 1;
                match self.array.add_member(MemberId(i as u8), AddMember::New) {
                    Ok(()) => self.w.slot[i] = Some(di),
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
                self.lend_log_for_add(i, d)?;
                match self.array.add_member(MemberId(i as u8), how) {
                    Ok(()) => self.w.slot[i] = Some(d),
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
        }
        Ok(())
    }

    // ----------------------------------------------------------------------------------------
    // Crash and assembly.

    /// A power cut in the middle of a step (`then`: what is left of it).
    fn crash(&mut self, then: Then) -> Res<Cut> {
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
    fn clean_stop(&mut self) -> Res<Cut> {
        self.w.stats.stops += 1;
        self.log(|| "CLEAN STOP".into());
        self.release_hold()?;
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
            if st.broken {
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
            let next_io = self.w.flights.iter().map(|f| f.ready_at).min();
            let next_timer = self.array.poll_timeout().map(|t| t.0);
            let next = next_io
                .into_iter()
                .chain(next_timer)
                .min()
                .unwrap_or(self.w.now + 50_000);
            self.w.now = next.max(self.w.now + 1_000);
            self.timers()?;
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
            && st.resync_offset == u64::MAX
            && self.w.bm_bytes > 0;
        let mut quiet_restart = st.in_sync == st.raid_disks && st.resync_offset == u64::MAX;
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
            if clear_expected && matches!(info.role, Role::Active(_)) {
                if let Some(k) = self.w.disks[d].bitmap.iter().position(|b| *b != 0) {
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

    /// Invariant (g): one event count names one array table. Two disks whose superblocks both
    /// claim in sync (own role active, no recovery offset) with the same `events` must carry the
    /// same `raid_disks` and `dev_roles`: otherwise assembly, which ranks members by `events`
    /// alone, may take the one that missed a change as the freshest (the hazard of md's events
    /// roll-back when a real change follows it).
    fn check_count_names_one_table(&self, disk: usize) -> Res<()> {
        let Some(new) = self.w.disks[disk].sb else {
            return Ok(());
        };
        let claims_in_sync = |sb: &SuperblockState<M>| {
            matches!(sb.own_role(), Role::Active(_)) && sb.recovery_offset.is_none()
        };
        if !claims_in_sync(&new) {
            return Ok(());
        }
        for (k, d) in self.w.disks.iter().enumerate() {
            let Some(old) = d.sb else { continue };
            if k != disk
                && claims_in_sync(&old)
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

    /// Power cut: in-flight writes land torn or not, caches may be lost, every request is lost;
    /// with `partial`, maybe a member is left out of the assembly that follows (in the next
    /// [`Sim`]).
    fn cut_power(&mut self, partial: bool) -> Res<()> {
        // In-flight writes may be torn; metadata writes land or not.
        let flights = std::mem::take(&mut self.w.flights);
        for f in flights {
            let disk = &mut self.w.disks[f.disk];
            match f.kind {
                FlightKind::Data {
                    op: MemberOp::Write,
                    sector,
                    data,
                    ..
                } => {
                    for (j, v) in data.iter().enumerate() {
                        if self.w.rng.chance(500) {
                            disk.durable[sector as usize + j] = *v;
                            disk.cache[sector as usize + j].clear();
                        }
                    }
                }
                FlightKind::Sb(st) if self.w.rng.chance(500) => self.land_sb(f.disk, &st)?,
                FlightKind::Bitmap { page, bytes } if self.w.rng.chance(500) => {
                    let start = page as usize * self.w.cfg.bitmap_page_bytes as usize;
                    for (j, b) in bytes.iter().enumerate() {
                        if let Some(x) = disk.bitmap.get_mut(start + j) {
                            *x = *b;
                        }
                    }
                }
                _ => {}
            }
        }
        for k in 0..self.w.disks.len() {
            self.check_count_names_one_table(k)?;
        }
        for d in self.w.disks.iter_mut() {
            d.crash(&mut self.w.rng);
            d.member.heal();
        }
        // Shadow: anything written since the last flush may or may not have survived.
        for sh in self.w.shadow.iter_mut() {
            let mut b = std::mem::take(&mut sh.base);
            b.extend(sh.since.drain(..).map(|e| e.0));
            b.extend(sh.inflight.take());
            b.extend(sh.current.iter().copied());
            dedup(&mut b);
            sh.base = b.clone();
            sh.current = b;
        }
        for (_, r) in std::mem::take(&mut self.w.reqs) {
            self.w.free_bufs.push(r.handle);
        }
        self.w.pending.clear();
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
    fn assemble_array(w: &mut World, lend: &mut Lender<'a>) -> Res<Arr<'a>> {
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
        Arr::choose_freshest(&found).ok_or("no freshest member")?;
        // The bitmap handed to assembly is the OR of every member's copy: a member that missed
        // page writes (failed, or the crash cut a round short) must not hide a dirty chunk.
        let mut union = vec![0u8; w.bm_bytes];
        for d in w.slot.iter().flatten() {
            for (u, b) in union.iter_mut().zip(&w.disks[*d].bitmap) {
                *u |= *b;
            }
        }
        let policy = if w.rng.chance(500) {
            StartPolicy::RequireAll
        } else {
            StartPolicy::AllowDegraded
        };
        let array = match Arr::assemble_with_bad_blocks(
            w.cfg,
            lend.bitmap(Some(&union))?,
            &found,
            policy,
            w.lent_logs(lend)?,
        ) {
            Ok(a) => a,
            Err(AssembleError::NotStarted { .. }) if policy == StartPolicy::RequireAll => {
                // mdadm refuses; the operator insists with --run.
                Arr::assemble_with_bad_blocks(
                    w.cfg,
                    lend.bitmap(Some(&union))?,
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
    fn restarted(&mut self, cut: Cut) -> Res<()> {
        self.array.set_sync_rate(self.w.sync_rate);
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
        // Invariant (d): every in-sync member holds a possible value of every sector, and every
        // flushed write.
        for i in self.in_sync_members() {
            let d = self.w.slot[i].ok_or("in-sync member without disk")?;
            for s in 0..self.w.sectors {
                let v = self.w.disks[d].read(s);
                if !self.w.shadow[s].base.contains(&v) && !self.excused(d, s, v) {
                    return Err(format!(
                        "(d) after crash, in-sync member {i} holds {v:#x} at sector {s}, durable value(s) {:x?}",
                        self.w.shadow[s].base
                    ));
                }
            }
        }
        self.aim_sticky_after_crash();
        self.drain_outputs()?;
        if cut.quiet_restart {
            if let Some(f) = self
                .w
                .flights
                .iter()
                .find(|f| matches!(f.kind, FlightKind::Sb(_)))
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

    // ----------------------------------------------------------------------------------------
    // Quiet points.

    fn settle(&mut self) -> Res<()> {
        self.release_hold()?;
        let stepping = std::mem::replace(&mut self.w.sched.stepping, false);
        self.w.sched.crash_now = false;
        let r = self.settle_inner();
        self.w.sched.stepping = stepping;
        r
    }

    fn settle_inner(&mut self) -> Res<()> {
        for _ in 0..20_000 {
            self.apply_pending()?;
            self.complete_some(usize::MAX)?;
            let st = self.array.status();
            if self.w.flights.is_empty()
                && self.w.reqs.is_empty()
                && self.w.pending.is_empty()
                && st.sync.is_none()
            {
                return Ok(());
            }
            // Jump to the next thing that can happen: a completion or an engine timer.
            let next_io = self.w.flights.iter().map(|f| f.ready_at).min();
            let next_timer = self.array.poll_timeout().map(|t| t.0);
            let next = next_io
                .into_iter()
                .chain(next_timer)
                .min()
                .unwrap_or(self.w.now + 50_000);
            self.w.now = next.max(self.w.now + 1_000);
            self.timers()?;
        }
        self.log(|| format!("{:?}", self.array));
        Err(format!(
            "liveness: array did not settle: {:?}, {} flights, {} requests",
            self.array.status(),
            self.w.flights.len(),
            self.w.reqs.len()
        ))
    }

    fn check_quiet(&mut self) -> Res<()> {
        self.heal_dead_if_failed();
        self.settle()?;
        let st = self.array.status();
        if st.resync_offset != u64::MAX {
            return Ok(());
        }
        self.compare_in_sync(false)?;
        // Silent corruption: scrub what was planted (check, then repair), or plant some.
        if self.w.corrupt_disk.is_some() {
            if self.w.rng.chance(500) {
                self.scrub()?;
            }
        } else if self.w.rng.chance(200) {
            self.plant_corruption();
        } else if self.w.rng.chance(300) {
            self.plant_bad_blocks()?;
        }
        Ok(())
    }

    /// Invariants (a) and (b) at a quiet point: the in-sync members are identical and hold the
    /// shadow's current values, except where silent corruption was planted (unless `strict`,
    /// right after a repair: then the mirrors must be identical everywhere).
    fn compare_in_sync(&mut self, strict: bool) -> Res<()> {
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
            let sh = &mut self.w.shadow[s];
            if let Some(v) = good.filter(|_| sh.current.len() > 1) {
                // The resync settled an ambiguous sector.
                // Reads must now return v; after a crash any of the old candidates may come
                // back (a read-error write-back is not durable until a flush).
                sh.current = vec![v];
                if sh.since.is_empty() && !sh.base.contains(&v) {
                    sh.base.push(v);
                }
            }
        }
        Ok(())
    }

    /// A superblock write of `st` lands on `disk`: rendered into md v1.x bytes through the
    /// bridge, and what the disk now says is those bytes parsed back, which must be `st`.
    fn land_sb(&mut self, disk: usize, st: &SuperblockState<M>) -> Res<()> {
        let (bytes, header) =
            bridge::render::<M>(self.w.cfg.data_sectors, self.w.cfg.bitmap_chunk_sectors, st)?;
        let back = bridge::parse::<M>(&bytes, &header)?;
        if back != *st {
            return Err(format!(
                "(bytes) the superblock read back differs from the one written: {back:?} vs {st:?}"
            ));
        }
        let d = &mut self.w.disks[disk];
        d.sb_bytes = bytes;
        d.bm_header = header;
        d.sb = Some(back);
        Ok(())
    }

    /// Whether `v` at sector `s` is a value planted by silent corruption, not yet repaired.
    fn corrupt_allowed(&self, s: usize, v: u64) -> bool {
        self.w.corrupt.get(s).copied().flatten() == Some(v)
    }

    /// Whether disk `d` may hold anything at `s` as far as the oracles on what a power cut
    /// leaves are concerned: `v` is planted corruption, or `s` is in `d`'s bad-block log (which
    /// every assembly lends the engine, so nothing ever reads `s` there; md's resync leaves
    /// it alone too).
    fn excused(&self, d: usize, s: usize, v: u64) -> bool {
        self.corrupt_allowed(s, v)
            || self.w.disks[d]
                .bblog
                .iter()
                .any(|b| b.start <= s as u64 && (s as u64) < b.end())
    }

    fn heal_dead_if_failed(&mut self) {
        self.heal();
    }

    // ----------------------------------------------------------------------------------------

    /// Right after `mdadm --create`: the superblocks are written before anyone uses the array,
    /// and some arrays come with a bad-block log already.
    fn created(&mut self) -> Res<()> {
        self.drain_outputs()?;
        while self
            .w
            .flights
            .iter()
            .any(|f| matches!(f.kind, FlightKind::Sb(_) | FlightKind::Bitmap { .. }))
        {
            self.w.now += 50_000;
            self.complete_some(usize::MAX)?;
        }
        if self.w.rng.chance(300) {
            // An array whose member comes with a bad-block log already (made by Linux, say).
            self.plant_bad_blocks()?;
        }
        Ok(())
    }

    /// Runs steps until the seed's last one (then a last quiet point) or a power cut.
    fn run(&mut self, steps: u64) -> Res<Life> {
        match self.w.resume.take() {
            Some(Then::AimedCrashCheck) => {
                if let Some(cut) = self.end_step()? {
                    return Ok(Life::PowerCut(cut));
                }
            }
            Some(Then::Tail) => self.step_tail()?,
            None => {}
        }
        while self.w.next_step < steps {
            self.w.step = self.w.next_step;
            self.w.next_step += 1;
            if let Some(cut) = self.step()? {
                return Ok(Life::PowerCut(cut));
            }
        }
        self.release_hold()?;
        self.check_quiet()?;
        Ok(Life::Finished)
    }

    /// One step of the random walk; a power cut ends it early (the rest of it runs after the
    /// restart, in the next [`Sim`]).
    fn step(&mut self) -> Res<Option<Cut>> {
        self.schedule_hold()?;
        self.w.sched.stepping = true;
        let roll = self.w.rng.below(1000);
        match roll {
            0..=299 => {
                let op = match self.w.rng.below(20) {
                    0..=8 => RequestOp::Read,
                    9..=17 => RequestOp::Write,
                    18 => RequestOp::Flush,
                    _ => RequestOp::Discard,
                };
                self.submit(op)?;
            }
            300..=649 => {
                let n = 1 + self.w.rng.below(4) as usize;
                self.complete_some(n)?;
            }
            650..=899 => {
                self.w.now += self.w.rng.below(400_000);
                self.timers()?;
            }
            900..=919 => self.inject_fault(),
            920..=939 => self.heal(),
            940..=969 => self.plan_reconfig()?,
            970..=974 if self.w.crashes_left > 0 => {
                if self.w.rng.chance(300) {
                    // A clean stop request just before the power cut.
                    self.array.request_clean(self.t());
                    self.drain_outputs()?;
                    let n = self.w.rng.below(8) as usize;
                    self.complete_some(n)?;
                }
                self.w.crashes_left -= 1;
                return self.crash(Then::AimedCrashCheck).map(Some);
            }
            975..=979 if self.array.status().sync.is_none() && self.w.rng.chance(300) => {
                let _ = self.array.start_check(self.w.rng.chance(500));
                self.drain_outputs()?;
            }
            980..=984 => self.check_quiet()?,
            985..=986 => return self.clean_stop().map(Some),
            _ => {}
        }
        self.end_step()
    }

    /// The end of a step: an aimed crash if one is due, then the step's tail.
    fn end_step(&mut self) -> Res<Option<Cut>> {
        if self.w.sched.crash_now && self.w.crashes_left > 0 {
            self.log(|| "aimed crash".into());
            self.w.crashes_left -= 1;
            return self.crash(Then::Tail).map(Some);
        }
        self.step_tail()?;
        Ok(None)
    }

    fn step_tail(&mut self) -> Res<()> {
        self.w.sched.crash_now = false;
        self.w.sched.stepping = false;
        self.apply_pending()?;
        self.w.stats.steps += 1;
        Ok(())
    }
}

/// Runs one seed for `steps` steps. Deterministic: the same seed gives the same run.
pub fn run_seed(seed: u64, steps: u64, trace: bool) -> Result<Stats, Violation> {
    run_seed_with(
        seed,
        steps,
        &Options {
            trace,
            ..Options::default()
        },
    )
}

/// Runs one seed with options (oracles switched off, trace).
pub fn run_seed_with(seed: u64, steps: u64, opts: &Options) -> Result<Stats, Violation> {
    let mut world = World::new(seed, opts);
    // Allocated once for the seed, lent to every assembly, freed with the seed.
    let mut store = Store::new(world.bm_bytes);
    let mut start = Start::Create;
    loop {
        let life = Sim::start(&mut world, &mut store, start).and_then(|mut sim| sim.run(steps));
        match life {
            Ok(Life::Finished) => return Ok(world.stats),
            Ok(Life::PowerCut(cut)) => start = Start::Restart(cut),
            Err(what) => {
                return Err(Violation {
                    what,
                    step: world.step,
                });
            }
        }
    }
}

/// Default steps per seed.
pub const DEFAULT_STEPS: u64 = 3000;

#[doc(hidden)]
pub fn _unused(_: SyncAction) {}
