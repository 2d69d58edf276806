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
//! Modules, one job each:
//!
//! * `options`: how a seed is run;
//! * `disk`: the simulated member disk, with its fault model at the top;
//! * `atlas`: the fault atlas, where a fault may strike;
//! * `faults`: injecting faults (member faults, sticky media errors, silent corruption, bad
//!   blocks) and the check/repair scrub;
//! * `schedules`: held `poll_io`, aimed crashes, partial assembly, pinned reads;
//! * `workload`: logical requests submitted and completed;
//! * `flight`: member commands in flight between the engine and the disks;
//! * `reconf`: reconfiguration with I/O in flight;
//! * `shadow`: the shadow oracle, what each sector may hold;
//! * `checkers`: the invariants and ordering oracles;
//! * `crash`: power cuts, clean stops, reassembly and the storage lent to the engine;
//! * `driver`: a seed's world and the step loop;
//! * [`bridge`]: superblock states to md v1.x bytes and back.
//!
//! With feature `sector32` the engine runs with 32-bit sectors, as firmware builds it; the
//! simulator keeps its own sectors in 64 bits and converts at the engine's interface.

// The engine's `Sector` is `u64` or (feature `sector32`) `u32`: each conversion at its
// interface is to the same type at one of the widths.
#![allow(clippy::useless_conversion, clippy::unnecessary_cast)]

mod atlas;
pub mod bridge;
mod checkers;
mod crash;
mod disk;
mod driver;
mod faults;
mod flight;
mod options;
mod reconf;
mod schedules;
mod shadow;
mod workload;

pub use checkers::ORACLES;
pub use options::Options;
pub use raid1_testkit::Rng;

use raid1_core::Array;

/// Member positions.
pub const M: usize = 4;

/// Logical requests in flight.
pub const R: usize = 16;

/// Sync windows.
pub const S: usize = 2;

pub(crate) type Arr<'a> = Array<'a, M, R, S>;

pub(crate) type Res<T> = Result<T, String>;

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
    /// Ranges recorded in a member's bad-block log: write errors (instead of failing the
    /// member) and sync pieces no member could read.
    pub recorded: u64,
    /// Members replaced (a replacement rebuilt and handed the slot).
    pub replaced: u64,
    /// Size changes applied (raid1 grow --size).
    pub resizes: u64,
    /// Sectors a power cut tore inside (`Swarm::cut_tears`).
    pub cut_tears: u64,
    /// Sectors whose last copy became unreadable while a recovery ran (`Swarm::lost_media`).
    pub lost: u64,
}

/// A broken invariant.
#[derive(Clone, Debug)]
pub struct Violation {
    /// Which invariant and what was seen.
    pub what: String,
    /// Step at which it was seen.
    pub step: u64,
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
    let mut world = driver::World::new(seed, opts);
    // Allocated once for the seed, lent to every assembly, freed with the seed.
    let mut store = crash::Store::new(world.bm_bytes);
    let mut start = crash::Start::Create;
    loop {
        let life =
            driver::Sim::start(&mut world, &mut store, start).and_then(|mut sim| sim.run(steps));
        match life {
            Ok(crash::Life::Finished) => return Ok(world.stats),
            Ok(crash::Life::PowerCut(cut)) => start = crash::Start::Restart(cut),
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
