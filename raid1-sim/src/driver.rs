//! The driver: a seed's world, one assembly's life of the array over it, and the step loop.

use raid1_core::{Config, Event, Instant, MemberId, MemberState, RequestOp};
use raid1_core::{MAX_SECTOR, Sector};
use raid1_testkit::Rng;

use crate::crash::{Cut, Lender, Life, Start, Store, Then};
use crate::disk::Disk;
use crate::flight::{Flight, FlightKind};
use crate::options::{Options, Shape, Step, Swarm, rate};
use crate::reconf::Reconf;
use crate::shadow::Shadow;
use crate::workload::LReq;
use crate::{Arr, M, Res, S, Stats, schedules};

/// The members the engine holds in sync.
pub(crate) fn in_sync(array: &Arr) -> Vec<usize> {
    (0..M)
        .filter(|&i| {
            array
                .member(MemberId(i as u8))
                .is_some_and(|m| m.state == MemberState::InSync)
        })
        .collect()
}

/// Mixed into every seed before it seeds the [`Rng`], so that the simulator's runs do not share
/// their random streams with other users of the same small seeds.
pub(crate) const SEED_SALT: u64 = 0x005E_ED0F_4A1D_0001;

/// Mixed into the seed for its side stream: the choices added with `raid1 grow --size`
/// (whether the seed resizes, and what the disks hold beyond the array's first size), kept
/// apart so that a seed that does not resize draws exactly what it drew before.
pub(crate) const SIDE_SALT: u64 = 0x51DE_5EED_6A0F_0002;

/// Mixed into the seed for its read-only stream: the choices added with read-only assemblies
/// (whether the seed has them, and which assemblies are read-only), kept apart from the main
/// and side streams so that a seed without them draws exactly what it drew before.
pub(crate) const RO_SALT: u64 = 0x7EAD_0A1F_5EED_0003;

/// Mixed into the seed for its lag stream: the choices added for write-behind's lag (a power
/// cut while writes are behind, then a media error aimed where a member that came up lagging
/// lacks acknowledged writes, an attempt to fail the member that has them), drawn only while
/// writes are behind or members lag, so that every other seed draws exactly what it drew
/// before.
pub(crate) const LAG_SALT: u64 = 0x1A66_1A66_5EED_0004;

/// Mixed into the seed for its period stream: the changes of the bitmap daemon's period on the
/// running array (whether the seed has them, when, and to what), kept apart so that a seed
/// without them draws exactly what it drew before.
pub(crate) const PERIOD_SALT: u64 = 0x0DAE_3014_5EED_0005;

/// Mixed into the seed for its rewrite stream: superblock rounds asked for though nothing
/// changed (whether the seed has them, and when), kept apart so that a seed without them draws
/// exactly what it drew before.
pub(crate) const REWRITE_SALT: u64 = 0x5B5B_0B17_5EED_0006;

/// Mixed into the seed for its torn stream: failed member writes that land in part (whether
/// the seed has them, and what each sector keeps), drawn only when a read fix's write-back or
/// a sync write fails, so that every other seed draws exactly what it drew before.
pub(crate) const TORN_SALT: u64 = 0x7021_F417_5EED_0007;

/// Mixed into the seed for its cut-tear stream: whether a power cut tears disk 0's sync
/// writes and read-fix write-backs inside the sector ([`Swarm::cut_tears`]), and the values
/// they leave, so that every other seed draws exactly what it drew before.
pub(crate) const CUT_TEAR_SALT: u64 = 0xC07_7EA2_5EED_0008;

/// Mixed into the seed for its lost stream: whether the source of a recovery loses sectors it
/// alone holds ([`Swarm::lost_media`]), when and where, so that every other seed draws exactly
/// what it drew before.
pub(crate) const LOST_SALT: u64 = 0x1057_DA7A_5EED_0009;

/// The disk whose writes a power cut may tear inside the sector (an SD card's place).
pub(crate) const TEARING_DISK: usize = 0;

/// Everything a seed keeps from one assembly of the array to the next: the disks, what is in
/// flight, the shadow, the random stream. The array itself lives in [`Sim`], one per assembly.
pub(crate) struct World {
    /// The seed's one random stream: every choice of the run is drawn from it, in order.
    pub(crate) rng: Rng,
    /// The seed's swarm: which fault kinds and schedules are on, and how often.
    pub(crate) swarm: Swarm,
    /// The array's geometry (from the seed's shape), its data sectors and bitmap bytes.
    /// `sectors` is the array's size now (`raid1 grow --size` changes it); every disk has
    /// room for `capacity` sectors, and the bitmap storage is `bm_bytes` whatever the size
    /// (its chunk doubles when the bits would not fit, as md_bitmap_resize does).
    pub(crate) cfg: Config,
    pub(crate) sectors: usize,
    pub(crate) capacity: usize,
    pub(crate) bm_bytes: usize,
    /// The seed's side stream (see [`SIDE_SALT`]).
    pub(crate) side: Rng,
    /// The seed's read-only stream (see [`RO_SALT`]).
    pub(crate) ro_side: Rng,
    /// The seed's lag stream (see [`LAG_SALT`]).
    pub(crate) lag_side: Rng,
    /// The seed's period stream (see [`PERIOD_SALT`]).
    pub(crate) period_side: Rng,
    /// The seed's rewrite stream (see [`REWRITE_SALT`]).
    pub(crate) rewrite_side: Rng,
    /// The seed's torn stream (see [`TORN_SALT`]).
    pub(crate) torn_side: Rng,
    /// Sectors a failed write tore whose member's failure or bad-block record may not be on
    /// disk yet: (disk, member, sectors). No power is cut while a cut could bring the member
    /// back in sync over them (`Sim::torn_open`).
    pub(crate) torn_open: Vec<(usize, usize, Vec<usize>)>,
    /// The seed's cut-tear stream (see [`CUT_TEAR_SALT`]).
    pub(crate) tear_side: Rng,
    /// Sectors a power cut tore inside the sector on [`TEARING_DISK`], with the value left
    /// there, until a write replaces it (`Sim::cut_torn`): (disk, sector, value).
    pub(crate) cut_tears: Vec<(usize, usize, u64)>,
    /// The seed's lost stream (see [`LOST_SALT`]).
    pub(crate) lost_side: Rng,
    /// Pages (8 sectors, md's unit of a sync read retry) a fault touched: a member read or
    /// write that failed there (the sectors of a sticky media error in a failed read, else
    /// the whole command), planted bad blocks, a last copy lost (`Swarm::lost_media`). The
    /// only pages allowed to end up bad on every in-sync member (oracle (p)).
    pub(crate) fault_pages: std::collections::BTreeSet<usize>,
    /// The last assembly came up dirty, disk 0 WriteMostly, because a bit was set (seeds
    /// whose disk 0 tears: `Sim::assemble_array`).
    pub(crate) mounted_dirty: bool,
    /// The request buffer whose read was last set to fail once (`Sim::aim_tear`).
    pub(crate) failed_once: Option<u32>,
    /// A resize froze the sync actions to stop a running sync (mdadm freezes `sync_action`):
    /// whether they were frozen before, to put back once it is applied.
    pub(crate) resize_sync_was: Option<bool>,
    /// The seed's bitmap chunk (0 without a bitmap); `cfg.bitmap_chunk_sectors` follows the
    /// array, which may drop and add its bitmap while running.
    pub(crate) bitmap_chunk: Sector,
    /// The simulated clock (ns) and the step being run.
    pub(crate) now: u64,
    pub(crate) step: u64,
    /// Every disk the seed has made, attached or not (new disks are added, none dropped).
    pub(crate) disks: Vec<Disk>,
    /// Disk attached at each member position.
    pub(crate) slot: [Option<usize>; M],
    /// Disks detached (available for re-add).
    pub(crate) pool: Vec<usize>,
    /// The array as `mdadm --create` makes it: slots, members and whether it is clean.
    pub(crate) raid_disks: u16,
    pub(crate) members: usize,
    pub(crate) assume_clean: bool,
    /// Member commands in flight.
    pub(crate) flights: Vec<Flight>,
    /// Request buffers (by handle, reused through `free_bufs`) and sync buffers (by window
    /// and member).
    pub(crate) bufs: Vec<Vec<u64>>,
    /// Per request buffer: the disk whose read filled it last (what a read fix writes back
    /// came from there).
    pub(crate) filled_from: Vec<Option<usize>>,
    pub(crate) free_bufs: Vec<u32>,
    pub(crate) sync_bufs: Vec<Vec<u64>>,
    /// Logical requests in flight, by id (a `BTreeMap`: iteration order is part of the run).
    pub(crate) reqs: std::collections::BTreeMap<u64, LReq>,
    pub(crate) next_id: u64,
    pub(crate) shadow: Shadow,
    /// Reconfigurations planned (each holding a freeze), applied once quiesced.
    pub(crate) pending: Vec<Reconf>,
    pub(crate) stats: Stats,
    /// Power cuts the seed may still take.
    pub(crate) crashes_left: u32,
    /// Sync rate limit (sectors/s) the frontend imposes, if any.
    pub(crate) sync_rate: Option<u64>,
    pub(crate) trace: bool,
    pub(crate) opts: Options,
    /// Member I/O errors each disk returned so far.
    pub(crate) errs: Vec<u64>,
    /// Per disk, while its superblock / bitmap writes keep failing: its error count before the
    /// first failure of that run. The engine fails the requests that wait for such a record
    /// once it gives up rewriting it, even requests submitted after the errors began.
    pub(crate) meta_streak: Vec<Option<u64>>,
    /// Per sector: a value planted by silent corruption that may legitimately be found there
    /// until it is repaired or overwritten everywhere.
    pub(crate) corrupt: Vec<Option<u64>>,
    /// The disk silent corruption was planted on (the fault atlas counts it as unhealthy).
    pub(crate) corrupt_disk: Option<usize>,
    /// Sync writes issued so far (a check pass must issue none).
    pub(crate) sync_writes: u64,
    /// Read-only / read-write switches so far.
    pub(crate) ro_toggles: u64,
    /// Write-behind: members the last assembly took as WriteMostly while a resync was due,
    /// which may lack acknowledged writes in its dirty chunks until that resync ends (the
    /// engine then serves no read there from them while another member is in sync).
    pub(crate) lagging: u32,
    /// The last sync action that finished or was interrupted.
    pub(crate) sync_end: Option<Event>,
    /// The schedules' switches and state (`schedules.rs`).
    pub(crate) sched: schedules::Schedules,
    /// Per sector: a read's answer pinned to the disk it came from (invariant (n)).
    pub(crate) pins: Vec<Option<(u64, usize)>>,
    /// The step being run, and the next one.
    pub(crate) next_step: u64,
    /// What is left of the step in which the power was cut, to run once the array is back.
    pub(crate) resume: Option<Then>,
}

/// One assembly of the array, from its creation or a restart to the next power cut: the engine,
/// the storage it borrows for that long, and the seed's [`World`].
pub(crate) struct Sim<'a> {
    pub(crate) w: &'a mut World,
    pub(crate) array: Arr<'a>,
    pub(crate) lend: Lender<'a>,
}

impl World {
    /// The seed's world before `mdadm --create`: its shape and swarm drawn first, then new
    /// disks (random contents, identical ones for `--assume-clean`).
    pub(crate) fn new(seed: u64, opts: &Options) -> World {
        let trace = opts.trace;
        let mut rng = Rng::new(seed ^ SEED_SALT);
        let shape = Shape::draw(&mut rng);
        let mut swarm = Swarm::draw(&mut rng);
        let mut side = Rng::new(seed ^ SIDE_SALT);
        swarm.grow_size = side.chance(400);
        let mut ro_side = Rng::new(seed ^ RO_SALT);
        swarm.assemble_read_only = ro_side.chance(300);
        let mut period_side = Rng::new(seed ^ PERIOD_SALT);
        swarm.time_base = period_side.chance(400);
        let mut rewrite_side = Rng::new(seed ^ REWRITE_SALT);
        swarm.rewrite = rewrite_side.chance(300);
        let mut torn_side = Rng::new(seed ^ TORN_SALT);
        swarm.torn_fails = rate(&mut torn_side, 500, &[300, 1000]);
        let mut tear_side = Rng::new(seed ^ CUT_TEAR_SALT);
        swarm.cut_tears = rate(&mut tear_side, 300, &[300, 1000]);
        let mut lost_side = Rng::new(seed ^ LOST_SALT);
        // Not with cut tears: those model raid1-embedded's card, and a recovery stopped for
        // good on a lost sector (no bad-block log there) leaves a torn sector unrepaired.
        let lost_media = rate(&mut lost_side, 300, &[5, 20]);
        swarm.lost_media = if swarm.cut_tears == 0 { lost_media } else { 0 };
        let Shape {
            mut cfg,
            sectors,
            raid_disks,
            members: n,
            assume_clean,
            sync_rate,
        } = shape;
        if cfg.bitmap_chunk_sectors > 0 {
            cfg.write_behind = swarm.write_behind.unwrap_or(0);
        }
        let bm_bytes = Arr::bitmap_bytes(&cfg);
        let mut disks: Vec<Disk> = (0..n)
            .map(|_| Disk::new(&mut rng, sectors, bm_bytes))
            .collect();
        if assume_clean {
            // mdadm --assume-clean is only honest when the members are identical.
            let first = disks[0].durable.clone();
            for d in disks.iter_mut() {
                d.durable.clone_from(&first);
            }
        }
        // Room to grow into (up to twice the size), different on every disk.
        let capacity = if swarm.grow_size {
            sectors + sectors / 2 + side.below(sectors as u64 / 2 + 1) as usize
        } else {
            sectors
        };
        for d in disks.iter_mut() {
            d.extend(&mut side, capacity);
        }
        let mut slot = [None; M];
        for (i, s) in slot.iter_mut().enumerate().take(n) {
            *s = Some(i);
        }
        let shadow = Shadow::new(capacity, |s| {
            disks
                .iter()
                .take(raid_disks as usize)
                .map(|d| d.durable[s])
                .collect()
        });
        let sync_bufs = vec![vec![0; 128]; S * M];
        let sched = schedules::Schedules {
            hold_permille: swarm.hold,
            aim_crashes: swarm.aim_crashes,
            partial_assembly: swarm.partial_assembly,
            ..Default::default()
        };
        if trace {
            eprintln!("seed {seed}: {shape:?}\n{swarm:?}");
        }
        World {
            rng,
            cfg,
            sectors,
            capacity,
            bm_bytes,
            side,
            ro_side,
            lag_side: Rng::new(seed ^ LAG_SALT),
            period_side,
            rewrite_side,
            torn_side,
            torn_open: Vec::new(),
            tear_side,
            cut_tears: Vec::new(),
            lost_side,
            fault_pages: Default::default(),
            mounted_dirty: false,
            failed_once: None,
            resize_sync_was: None,
            bitmap_chunk: cfg.bitmap_chunk_sectors,
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
            filled_from: Vec::new(),
            sync_bufs,
            reqs: Default::default(),
            next_id: 1,
            shadow,
            pending: Vec::new(),
            stats: Stats::default(),
            crashes_left: swarm.crashes,
            swarm,
            sync_rate,
            trace,
            opts: opts.clone(),
            errs: vec![0; 64],
            meta_streak: vec![None; 64],
            corrupt: vec![None; capacity],
            corrupt_disk: None,
            sync_writes: 0,
            ro_toggles: 0,
            lagging: 0,
            sync_end: None,
            sched,
            pins: vec![None; capacity],
            next_step: 0,
            resume: None,
        }
    }

    /// A trace line (with `--trace`), stamped with the step and the clock.
    pub(crate) fn log(&self, s: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("[{} t={}] {}", self.step, self.now, s());
        }
    }
}

impl<'a> Sim<'a> {
    /// Creates or reassembles the array over `w`'s disks, with storage lent from `store`.
    pub(crate) fn start(w: &'a mut World, store: &'a mut Store, how: Start) -> Res<Sim<'a>> {
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
                array.set_sync_rate_min(w.swarm.sync_rate_min);
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

    /// The clock, as the engine takes it.
    pub(crate) fn t(&self) -> Instant {
        Instant(self.w.now)
    }

    /// A trace line (with `--trace`).
    pub(crate) fn log(&self, s: impl FnOnce() -> String) {
        self.w.log(s);
    }

    /// The members that came up lagging ([`World::lagging`]) and may still lack acknowledged
    /// writes: until the resync after that crash ends.
    pub(crate) fn still_lagging(&self) -> u32 {
        if self.array.status().resync_offset != MAX_SECTOR {
            self.w.lagging
        } else {
            0
        }
    }

    /// The members the engine holds in sync.
    pub(crate) fn in_sync_members(&self) -> Vec<usize> {
        in_sync(&self.array)
    }

    /// The disks (simulated devices) of the in-sync members.
    pub(crate) fn in_sync_disks(&self) -> Vec<usize> {
        self.in_sync_members()
            .into_iter()
            .filter_map(|i| self.w.slot[i])
            .collect()
    }

    /// Takes every output of the engine: commands (unless `poll_io` is held), completions of
    /// logical requests, events.
    pub(crate) fn drain_outputs(&mut self) -> Res<()> {
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
                Event::MemberFailed(m) => {
                    self.w.stats.failures += 1;
                    self.settled(m);
                }
                Event::Replaced { .. } => self.w.stats.replaced += 1,
                Event::BadBlocksRecorded { member, .. } => {
                    self.w.stats.recorded += 1;
                    self.settled(member);
                    self.aim_crash_lost(member);
                }
                Event::LastMemberError(m) => self.settled(m),
                _ => {}
            }
        }
        Ok(())
    }

    /// The engine decided on the errors member `m` answered (see `Disk::unsettled`).
    fn settled(&mut self, m: MemberId) {
        if let Some(d) = self.w.slot.get(usize::from(m.0)).copied().flatten() {
            self.w.disks[d].unsettled = false;
        }
    }

    /// Fires the engine's timer if it is due.
    pub(crate) fn timers(&mut self) -> Res<()> {
        if let Some(t) = self.array.poll_timeout() {
            if t.0 <= self.w.now {
                self.array.handle_timeout(self.t());
                self.drain_outputs()?;
            }
        }
        Ok(())
    }

    /// Completes up to `max` member commands that are due, picked at random (reordering).
    pub(crate) fn complete_some(&mut self, max: usize) -> Res<()> {
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
            let torn = !self.w.torn_open.is_empty();
            let sb_disk = matches!(self.w.flights[k].kind, FlightKind::Sb(..))
                .then_some(self.w.flights[k].disk);
            self.complete_flight(k)?;
            // The record of a torn failed write just landed: now and then cut the power at
            // once, before what the engine has in flight with it lands (the chunk's bitmap
            // bits, once set only when the failure was known, and sent with its record).
            // Always when it landed on a spare first: the record then lives on a member the
            // assembly does not take its reference from, and the member rebuilt from it
            // still says in sync on its own disk (simulator bug 32, soak seed 206857).
            if torn && self.w.sched.stepping && !self.torn_open() {
                let on_spare = sb_disk.is_some_and(|d| {
                    self.w.disks[d]
                        .sb
                        .is_some_and(|sb| matches!(sb.own_role(), raid1_core::Role::Spare))
                });
                if self.w.torn_side.chance(if on_spare { 1000 } else { 500 }) {
                    self.log(|| "power cut aimed as a torn write's record lands".into());
                    self.w.sched.crash_now = true;
                }
            }
        }
        Ok(())
    }

    /// Drives the array to a quiet point: all I/O drained, pending reconfigurations applied, no
    /// sync running (no aimed crash meanwhile).
    pub(crate) fn settle(&mut self) -> Res<()> {
        self.release_hold()?;
        let stepping = std::mem::replace(&mut self.w.sched.stepping, false);
        self.w.sched.crash_now = false;
        let r = self.settle_inner();
        self.w.sched.stepping = stepping;
        r
    }

    /// Moves the clock to the next thing that can happen, a member completion or an engine
    /// timer (at least 1 µs on, 50 µs when nothing is due), and fires the timers due.
    pub(crate) fn jump_to_next_event(&mut self) -> Res<()> {
        let next_io = self.w.flights.iter().map(|f| f.ready_at).min();
        let next_timer = self.array.poll_timeout().map(|t| t.0);
        let next = next_io
            .into_iter()
            .chain(next_timer)
            .min()
            .unwrap_or(self.w.now + 50_000);
        self.w.now = next.max(self.w.now + 1_000);
        self.timers()
    }

    /// [`Self::settle`]'s loop: jump from one completion or timer to the next until quiet.
    pub(crate) fn settle_inner(&mut self) -> Res<()> {
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
            self.jump_to_next_event()?;
        }
        self.log(|| format!("{:?}", self.array));
        Err(format!(
            "liveness: array did not settle: {:?}, {} flights, {} requests",
            self.array.status(),
            self.w.flights.len(),
            self.w.reqs.len()
        ))
    }

    /// A quiet point: heal, settle, then (a) and (b), and maybe plant corruption or bad blocks, or
    /// scrub what was planted.
    pub(crate) fn check_quiet(&mut self) -> Res<()> {
        self.forget_mended_tears();
        self.heal();
        self.settle()?;
        let st = self.array.status();
        if st.resync_offset != MAX_SECTOR {
            return Ok(());
        }
        self.compare_in_sync(false)?;
        // Silent corruption: scrub what was planted (check, then repair), or plant some.
        if self.w.corrupt_disk.is_some() {
            if self.w.rng.chance(self.w.swarm.scrub) {
                self.scrub()?;
            }
        } else if self.w.rng.chance(self.w.swarm.corruption) {
            self.plant_corruption();
        } else if self.w.rng.chance(self.w.swarm.bad_blocks) {
            self.plant_bad_blocks()?;
        }
        Ok(())
    }

    /// Right after `mdadm --create`: the superblocks are written before anyone uses the array,
    /// and some arrays come with a bad-block log already.
    pub(crate) fn created(&mut self) -> Res<()> {
        self.drain_outputs()?;
        while self
            .w
            .flights
            .iter()
            .any(|f| matches!(f.kind, FlightKind::Sb(..) | FlightKind::Bitmap { .. }))
        {
            self.w.now += 50_000;
            self.complete_some(usize::MAX)?;
        }
        if self.w.swarm.bad_blocks_at_start {
            // An array whose member comes with a bad-block log already (made by Linux, say).
            self.plant_bad_blocks()?;
        }
        Ok(())
    }

    /// Runs steps until the seed's last one (then a last quiet point) or a power cut.
    pub(crate) fn run(&mut self, steps: u64) -> Res<Life> {
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
    pub(crate) fn step(&mut self) -> Res<Option<Cut>> {
        self.schedule_hold()?;
        self.maybe_lose();
        self.w.sched.stepping = true;
        match self.w.swarm.step(&mut self.w.rng) {
            Step::Submit => {
                let op = [
                    RequestOp::Read,
                    RequestOp::Write,
                    RequestOp::Flush,
                    RequestOp::Discard,
                ][self.w.swarm.op(&mut self.w.rng)];
                self.submit(op)?;
            }
            Step::Complete => {
                let n = 1 + self.w.rng.below(4) as usize;
                self.complete_some(n)?;
            }
            Step::Advance => {
                self.w.now += self.w.rng.below(400_000);
                self.timers()?;
            }
            Step::Fault => self.inject_fault(),
            Step::Heal => self.heal(),
            // No reconfiguration while a cut tear waits for its resync (dropping the bitmap
            // would leave the next assembly nothing to find it by).
            Step::Reconfig if self.cut_torn().is_none() => self.plan_reconfig()?,
            Step::Crash if self.w.crashes_left > 0 && self.may_cut() => {
                if self.w.rng.chance(self.w.swarm.crash_in_stop) {
                    // A clean stop request just before the power cut.
                    self.array.request_clean(self.t());
                    self.drain_outputs()?;
                    let n = self.w.rng.below(8) as usize;
                    self.complete_some(n)?;
                }
                // Not while a sector a failed write just tore could come back in sync.
                if self.may_cut() {
                    self.w.crashes_left -= 1;
                    return self.crash(Then::AimedCrashCheck).map(Some);
                }
            }
            Step::Check if self.array.status().sync.is_none() => {
                if self.w.swarm.sync_action && self.w.rng.chance(300) {
                    // md's sync_min / sync_max: a check or repair over part of the array.
                    let n = self.w.sectors as u64;
                    let lo = self.w.rng.below(n);
                    let hi = lo + self.w.rng.below(n - lo + 1);
                    self.log(|| format!("sync range {lo}..{hi}"));
                    let _ = self.array.set_sync_range(lo as Sector, hi as Sector);
                }
                let _ = self.array.start_check(self.w.rng.chance(500));
                self.drain_outputs()?;
            }
            Step::Quiet => self.check_quiet()?,
            // A broken array's stop ends as a power cut (`Sim::clean_stop`): not while a sector
            // a cut tore waits for its resync (the second cut is not modelled; seed 4518 once
            // the engine's rounds were ordered: its rebuilt member, one round behind, lost its
            // record and was rebuilt from the torn disk).
            Step::Stop if !(self.array.status().broken && self.cut_torn().is_some()) => {
                return self.clean_stop().map(Some);
            }
            Step::Crash | Step::Check | Step::Reconfig | Step::Stop | Step::Idle => {}
        }
        self.end_step()
    }

    /// Whether the power may be cut now: not while a cut could bring a member back in sync
    /// over a sector a failed write tore (`Sim::torn_open`), nor while a sector an earlier
    /// cut tore inside waits for its resync (`Sim::cut_torn`). Not modelled, that second cut:
    /// the superblock round the assembly writes may land on the disk that tore and not on
    /// the member holding the only good copy, which then comes back stale and is rebuilt
    /// from the torn one (the members that tear would need their superblocks last, as
    /// members that lag after a crash with write-behind get theirs).
    fn may_cut(&mut self) -> bool {
        !self.torn_open() && self.cut_torn().is_none()
    }

    /// The end of a step: an aimed crash if one is due, then the step's tail.
    pub(crate) fn end_step(&mut self) -> Res<Option<Cut>> {
        if self.w.sched.crash_now && self.w.crashes_left > 0 && self.may_cut() {
            self.log(|| "aimed crash".into());
            self.w.crashes_left -= 1;
            return self.crash(Then::Tail).map(Some);
        }
        self.step_tail()?;
        Ok(None)
    }

    /// The tail of every step: apply pending reconfigurations once quiesced, count the step.
    pub(crate) fn step_tail(&mut self) -> Res<()> {
        self.w.sched.crash_now = false;
        self.w.sched.stepping = false;
        self.apply_pending()?;
        self.check_fixed_point()?;
        self.check_holes()?;
        self.w.stats.steps += 1;
        Ok(())
    }
}
