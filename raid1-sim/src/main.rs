//! `raid1-sim --seeds N [--seed-start S] [--steps K] [--trace]`: runs seeds S..S+N.
//! The last line is `seeds: N, violations: V`; a violation makes the exit status non-zero.

use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let mut seeds = 100u64;
    let mut start = 0u64;
    let mut steps = raid1_sim::DEFAULT_STEPS;
    let mut opts = raid1_sim::Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> Option<u64> {
            let v = args.next().and_then(|v| v.parse().ok());
            if v.is_none() {
                eprintln!("{name} needs a number");
            }
            v
        };
        match a.as_str() {
            "--seeds" => match num("--seeds") {
                Some(v) => seeds = v,
                None => return ExitCode::from(2),
            },
            "--seed-start" => match num("--seed-start") {
                Some(v) => start = v,
                None => return ExitCode::from(2),
            },
            "--steps" => match num("--steps") {
                Some(v) => steps = v,
                None => return ExitCode::from(2),
            },
            "--trace" => opts.trace = true,
            "--without" => match args.next() {
                Some(o) if raid1_sim::ORACLES.contains(&o.as_str()) => opts.without.push(o),
                _ => {
                    eprintln!("--without needs an oracle label: {:?}", raid1_sim::ORACLES);
                    return ExitCode::from(2);
                }
            },
            other => {
                eprintln!(
                    "unknown argument {other}; usage: raid1-sim --seeds N [--seed-start S] [--steps K] [--trace] [--without LABEL]"
                );
                return ExitCode::from(2);
            }
        }
    }
    let t0 = Instant::now();
    let mut violations = 0u64;
    let mut total = raid1_sim::Stats::default();
    for seed in start..start.saturating_add(seeds) {
        match raid1_sim::run_seed_with(seed, steps, &opts) {
            Ok(s) => {
                total.steps += s.steps;
                total.completed += s.completed;
                total.crashes += s.crashes;
                total.reconfigs += s.reconfigs;
                total.syncs += s.syncs;
                total.failures += s.failures;
                total.stops += s.stops;
                total.media_fixes += s.media_fixes;
                total.corruptions += s.corruptions;
                total.scrubs += s.scrubs;
                total.bad_blocks += s.bad_blocks;
                total.recorded += s.recorded;
                total.replaced += s.replaced;
                total.resizes += s.resizes;
                total.cut_tears += s.cut_tears;
                total.lost += s.lost;
            }
            Err(v) => {
                violations += 1;
                println!("seed {seed}: violation at step {}: {}", v.step, v.what);
                let mut steps_arg = if steps == raid1_sim::DEFAULT_STEPS {
                    String::new()
                } else {
                    format!(" --steps {steps}")
                };
                for w in &opts.without {
                    steps_arg.push_str(&format!(" --without {w}"));
                }
                println!(
                    "  replay: cargo run --release -p raid1-sim -- --seeds 1 --seed-start {seed}{steps_arg} --trace"
                );
            }
        }
    }
    eprintln!(
        "{} steps, {} requests, {} crashes, {} clean stops, {} reconfigurations, {} syncs, {} member failures, {} media errors repaired, {} corruptions planted, {} found and repaired by check/repair, {} bad-block ranges planted, {} ranges recorded as bad blocks (write errors, lost sectors), {} members replaced, {} size changes, {} sectors torn inside by a cut, {} sectors lost with their last copy in {:.1?}",
        total.steps,
        total.completed,
        total.crashes,
        total.stops,
        total.reconfigs,
        total.syncs,
        total.failures,
        total.media_fixes,
        total.corruptions,
        total.scrubs,
        total.bad_blocks,
        total.recorded,
        total.replaced,
        total.resizes,
        total.cut_tears,
        total.lost,
        t0.elapsed()
    );
    println!("seeds: {seeds}, violations: {violations}");
    if violations == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
