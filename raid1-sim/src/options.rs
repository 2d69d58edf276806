//! How a seed runs: the caller's [`Options`], and the seed's own choices, drawn from its random
//! stream before anything else happens: the array's [`Shape`] and the [`Swarm`].
//!
//! **Swarm testing** (Groce, Zhang, Eide, Chen and Regehr, "Swarm testing", ISSTA 2012): rather
//! than run every fault kind and schedule in every seed at one fixed rate, each seed draws which
//! of them are on and how often each one strikes. A seed with many kinds off goes deeper into
//! those left on (a recovery no power cut interrupts, a long run without member failures that
//! lets the bitmap daemon clear bits under load), one with a kind at a high rate stresses it,
//! and across seeds the kinds meet in every combination. Each kind is on in most seeds, so that
//! a bug only one kind reaches is still reached by most seeds. The choices are logged at the
//! start of a seed's trace.

use raid1_core::Config;
use raid1_core::Sector;
use raid1_testkit::Rng;

/// How to run a seed.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Log every event, member I/O and decision to stderr.
    pub trace: bool,
    /// Oracles switched off (labels from [`crate::ORACLES`]), to measure what each one catches.
    pub without: Vec<String>,
}

/// The array a seed creates (`mdadm --create`), and the frontend's fixed settings.
#[derive(Clone, Debug)]
pub(crate) struct Shape {
    /// Geometry, timers and bitmap.
    pub(crate) cfg: Config,
    /// Sectors of the data area.
    pub(crate) sectors: usize,
    /// Slots (2 or 3) and members (one more for a spare, half the time).
    pub(crate) raid_disks: u16,
    pub(crate) members: usize,
    /// Created clean (`--assume-clean` over identical disks) rather than resynced.
    pub(crate) assume_clean: bool,
    /// The frontend's sync rate limit (sectors/s), if any.
    pub(crate) sync_rate: Option<u64>,
}

impl Shape {
    /// Draws a seed's shape.
    pub(crate) fn draw(rng: &mut Rng) -> Shape {
        let mut sectors = 256 + 64 * rng.below(8) as usize;
        let uneven = rng.chance(300);
        if uneven {
            // Sizes, windows and barrier units that do not divide each other.
            sectors += 1 + rng.below(63) as usize;
        }
        let mut cfg = Config::new(sectors as Sector);
        cfg.max_request_sectors = 16;
        cfg.barrier_unit_shift = 6;
        cfg.sync_window_sectors = [8, 16, 32][rng.index(3)];
        if uneven {
            cfg.barrier_unit_shift = [5, 6, 7][rng.index(3)];
            cfg.sync_window_sectors =
                [8, 12, 24, 40][rng.index(4)].min(1 << cfg.barrier_unit_shift);
        }
        // Timers: from "clean/dirty flips all the time" to "rarely".
        cfg.safe_mode_delay_ns = 200_000 + rng.below(6_000_000);
        cfg.bitmap_daemon_ns = 1_000_000 + rng.below(20_000_000);
        cfg.sync_checkpoint_sectors = 64;
        if rng.chance(850) {
            cfg.bitmap_chunk_sectors = [8, 16, 32][rng.index(3)];
            cfg.bitmap_page_bytes = [1, 2, 4096][rng.index(3)];
        }
        let raid_disks = 2 + rng.below(2) as u16;
        let members = raid_disks as usize + rng.index(2);
        Shape {
            cfg,
            sectors,
            raid_disks,
            members,
            assume_clean: rng.chance(300),
            sync_rate: rng.chance(300).then(|| rng.range(2_000, 52_000)),
        }
    }
}

/// What one step of the random walk does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Submit a logical request.
    Submit,
    /// Complete up to four member commands that are due.
    Complete,
    /// Advance the clock and fire the engine's timers.
    Advance,
    /// Inject a member fault (the atlas permitting).
    Fault,
    /// Heal flaky disks, forget media errors now and then.
    Heal,
    /// Plan a reconfiguration, fail a member by hand or toggle WriteMostly.
    Reconfig,
    /// Cut the power (while the seed has crashes left).
    Crash,
    /// Start a check or repair pass.
    Check,
    /// Settle and check at a quiet point (and plant contents faults, scrub).
    Quiet,
    /// Stop cleanly as `raid1 run` does, and restart.
    Stop,
    /// Nothing.
    Idle,
}

/// The seed's swarm: which fault kinds and schedules are on, and their rates. Rates are per
/// mille unless named otherwise; an `Option` or a 0 is a kind switched off.
#[derive(Clone, Debug)]
pub(crate) struct Swarm {
    /// Weight of each kind of step.
    pub(crate) steps: Vec<(Step, u64)>,
    /// Weights of reads, writes, flushes and discards among submitted requests.
    pub(crate) ops: [u64; 4],
    /// Writes that are FUA.
    pub(crate) fua: u64,
    /// Requests aimed at the 64-sector hot spot.
    pub(crate) hot: u64,
    /// Member command latency: up to this many ns, and with `slow` per mille up to `slow_ns` more.
    pub(crate) latency_ns: u64,
    pub(crate) slow: u64,
    pub(crate) slow_ns: u64,
    /// Member faults: reads that fail on a read-flaky disk, writes on a write-flaky one,
    /// whether disks die.
    pub(crate) flaky_reads: Option<u16>,
    pub(crate) flaky_writes: Option<u16>,
    pub(crate) dead: bool,
    /// Injected faults that are sticky media errors; of those, the ones that cannot be
    /// remapped (every write over them fails too).
    pub(crate) media_errors: u64,
    pub(crate) unremappable: u64,
    /// Chance, at each heal step, that a disk forgets its media errors.
    pub(crate) forget: u64,
    /// A sticky media error aimed at the resync source right after a power cut.
    pub(crate) aimed_media_error: u64,
    /// Quiet points that plant silent corruption, and that scrub what was planted.
    pub(crate) corruption: u64,
    pub(crate) scrub: u64,
    /// Quiet points that plant bad blocks; whether the array starts with a bad-block log.
    pub(crate) bad_blocks: u64,
    pub(crate) bad_blocks_at_start: bool,
    /// Every member keeps a bad-block log with room: a write error records the range there
    /// instead of failing the member (md's narrow_write_error).
    pub(crate) bblog: bool,
    /// The array is switched read-only and back (md's `--readonly` / `--readwrite`).
    pub(crate) read_only: bool,
    /// Members are given md's FailFast flag and have it taken away at random.
    pub(crate) failfast: bool,
    /// md's sync_speed_min: the sync slows to it while requests are in flight (sectors/s).
    pub(crate) sync_rate_min: Option<u64>,
    /// The bitmap is dropped and added again while running (raid1 grow --bitmap).
    pub(crate) grow_bitmap: bool,
    /// In-sync members are replaced (mdadm --replace [--with]) with I/O in flight.
    pub(crate) replace: bool,
    /// md's write-behind (with a bitmap): up to this many writes acknowledged before their
    /// WriteMostly members have them.
    pub(crate) write_behind: Option<u16>,
    /// The array's size is grown and shrunk while running (raid1 grow --size). Drawn from the
    /// seed's side stream (`World::new`), so that seeds without it run as before it existed.
    pub(crate) grow_size: bool,
    /// Assemblies after a crash or a stop are sometimes read-only (mdadm `--assemble
    /// --readonly`): nothing is written, a dirty array is not resynced, until the array is made
    /// writable. Drawn from the seed's read-only stream (`World::new`), so that seeds without
    /// it run as before it existed.
    pub(crate) assemble_read_only: bool,
    /// The bitmap daemon's period changes while the array runs (md's `bitmap/time_base`,
    /// `raid1 grow --delay`). Drawn from the seed's period stream (`World::new`), so that seeds
    /// without it run as before it existed.
    pub(crate) time_base: bool,
    /// Superblock rounds asked for though nothing changed (`Array::rewrite_superblocks`, what
    /// raid1-embedded asks for after it read a torn superblock's copy), with I/O in flight.
    /// Drawn from the seed's rewrite stream (`World::new`), so that seeds without it run as
    /// before it existed.
    pub(crate) rewrite: bool,
    /// Failed member writes that are not a logical request's (a read fix's write-back, a sync
    /// write) and land in part, per mille: each sector keeps its old value, takes the new one
    /// or is left holding a value no write produced (a write torn inside the sector). Drawn
    /// from the seed's torn stream (`World::new`), so that seeds without it run as before it
    /// existed.
    pub(crate) torn_fails: u64,
    /// A power cut tears inside the sector, per mille of each sector of a write in flight to
    /// disk 0 that is not a logical request's (a read fix's write-back, a sync write): the
    /// sector holds a value no write produced, as an SD card may leave one. Only with a
    /// bitmap and no write-behind; each assembly after a cut then comes up as raid1-embedded
    /// mounts its volume (`Sim::assemble_array`). Drawn from the seed's cut-tear stream
    /// (`World::new`), so that seeds without it run as before it existed.
    pub(crate) cut_tears: u64,
    /// Per mille of the steps of a recovery with one in-sync member, its source, at which the
    /// source's disk loses 1-4 sectors the recovery has not reached yet to a sticky media error
    /// (the unreadable sector in a rebuild): their data is gone. md records such a page as bad
    /// on every member and goes on; oracle (p) checks that no other range ends up bad on every
    /// in-sync member. Drawn from the seed's lost stream (`World::new`), so that seeds without
    /// it run as before it existed.
    pub(crate) lost_media: u64,
    /// Reconfigurations: administrative fails, WriteMostly toggles, growing and shrinking.
    pub(crate) admin_fail: bool,
    pub(crate) write_mostly: bool,
    pub(crate) resize: bool,
    /// `sync_action` frozen / idle set by hand while syncs run.
    pub(crate) sync_action: bool,
    /// Power cuts in the seed; the ones that come right after a clean stop request; the
    /// sectors of a write in flight that land; the metadata writes in flight that land; the
    /// assemblies tried with `StartPolicy::RequireAll` first.
    pub(crate) crashes: u32,
    pub(crate) crash_in_stop: u64,
    pub(crate) torn_lands: u64,
    pub(crate) metadata_lands: u64,
    pub(crate) require_all: u64,
    /// Schedules (`schedules.rs`): steps that start holding `poll_io`; aimed crashes; partial
    /// assemblies.
    pub(crate) hold: u64,
    pub(crate) aim_crashes: bool,
    pub(crate) partial_assembly: bool,
}

/// `Some(one of values)` with probability `on` per mille, else `None`.
fn maybe<T: Copy>(rng: &mut Rng, on: u64, values: &[T]) -> Option<T> {
    let on = rng.chance(on);
    let v = *rng.pick(values)?;
    on.then_some(v)
}

/// One of `values` with probability `on` per mille, else 0.
pub(crate) fn rate(rng: &mut Rng, on: u64, values: &[u64]) -> u64 {
    maybe(rng, on, values).unwrap_or(0)
}

impl Swarm {
    /// Draws a seed's swarm.
    pub(crate) fn draw(rng: &mut Rng) -> Swarm {
        let flaky_reads = maybe(rng, 700, &[50, 150, 300, 600]);
        let flaky_writes = maybe(rng, 800, &[50, 150, 300, 600]);
        let dead = rng.chance(850);
        let media_errors = rate(rng, 800, &[150, 250, 400]);
        let member_faults =
            flaky_reads.is_some() || flaky_writes.is_some() || dead || media_errors > 0;
        let crashes = *rng.pick(&[0, 1, 2, 3, 4, 6]).unwrap_or(&3);
        let steps = vec![
            (Step::Submit, rng.range(200, 400)),
            (Step::Complete, rng.range(250, 450)),
            (Step::Advance, rng.range(150, 350)),
            (
                Step::Fault,
                if member_faults {
                    *rng.pick(&[10, 20, 50]).unwrap_or(&20)
                } else {
                    0
                },
            ),
            (Step::Heal, *rng.pick(&[5, 20, 50]).unwrap_or(&20)),
            (Step::Reconfig, *rng.pick(&[20, 40, 60]).unwrap_or(&40)),
            (Step::Crash, *rng.pick(&[2, 5, 10]).unwrap_or(&5)),
            (Step::Check, rate(rng, 700, &[1, 3, 6])),
            (Step::Quiet, *rng.pick(&[4, 6, 10]).unwrap_or(&6)),
            (Step::Stop, rate(rng, 800, &[1, 2, 4])),
            (Step::Idle, 13),
        ];
        let ops = [
            rng.range(5, 12),
            rng.range(5, 12),
            rng.range(1, 3),
            rng.range(0, 2),
        ];
        Swarm {
            steps,
            ops,
            fua: *rng.pick(&[100, 200, 300]).unwrap_or(&100),
            hot: *rng.pick(&[100, 300, 600]).unwrap_or(&300),
            latency_ns: *rng.pick(&[100_000, 300_000, 1_000_000]).unwrap_or(&300_000),
            slow: *rng.pick(&[20, 50, 200]).unwrap_or(&50),
            slow_ns: 3_000_000,
            flaky_reads,
            flaky_writes,
            dead,
            media_errors,
            unremappable: rate(rng, 500, &[250, 1000]),
            forget: *rng.pick(&[100, 300, 600]).unwrap_or(&300),
            aimed_media_error: rate(rng, 700, &[300, 600]),
            corruption: rate(rng, 700, &[100, 200, 400]),
            scrub: *rng.pick(&[300, 500, 800]).unwrap_or(&500),
            bad_blocks: rate(rng, 900, &[200, 300, 500]),
            bad_blocks_at_start: rng.chance(600),
            admin_fail: rng.chance(900),
            write_mostly: rng.chance(500),
            resize: rng.chance(800),
            sync_action: rng.chance(400),
            crashes,
            crash_in_stop: *rng.pick(&[0, 300, 600]).unwrap_or(&300),
            torn_lands: *rng.pick(&[200, 500, 800]).unwrap_or(&500),
            metadata_lands: *rng.pick(&[250, 500, 750]).unwrap_or(&500),
            require_all: *rng.pick(&[0, 500, 1000]).unwrap_or(&500),
            hold: rate(rng, 400, &[10, 30, 60]),
            aim_crashes: rng.chance(400),
            partial_assembly: rng.chance(400),
            bblog: rng.chance(500),
            read_only: rng.chance(400),
            failfast: rng.chance(400),
            sync_rate_min: rng.chance(300).then(|| rng.range(1_000, 20_000)),
            grow_bitmap: rng.chance(400),
            replace: rng.chance(500),
            write_behind: rng.chance(400).then(|| rng.range(1, 9) as u16),
            grow_size: false,
            assemble_read_only: false,
            time_base: false,
            rewrite: false,
            torn_fails: 0,
            cut_tears: 0,
            lost_media: 0,
        }
    }

    /// The kind of the next step, drawn by weight.
    pub(crate) fn step(&self, rng: &mut Rng) -> Step {
        let total: u64 = self.steps.iter().map(|s| s.1).sum();
        let mut roll = rng.below(total);
        for &(step, weight) in &self.steps {
            if roll < weight {
                return step;
            }
            roll -= weight;
        }
        Step::Idle
    }

    /// The operation of the next logical request, drawn by weight.
    pub(crate) fn op(&self, rng: &mut Rng) -> usize {
        let total: u64 = self.ops.iter().sum();
        let mut roll = rng.below(total);
        for (k, &w) in self.ops.iter().enumerate() {
            if roll < w {
                return k;
            }
            roll -= w;
        }
        0
    }
}
