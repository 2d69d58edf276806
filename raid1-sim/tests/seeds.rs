//! The simulator as a test: 2,000 seeds in release builds (200 in debug builds, which are ten
//! times slower), zero violations, and bit-for-bit reproducibility of a seed.

use raid1_sim::{DEFAULT_STEPS, run_seed};

/// Seeds that trip an oracle on a known engine bug being fixed on another branch (docs/SIM.md,
/// "Known engine bugs"): (h) a bitmap page round that fails on the last in-sync member counts as
/// done; (k) a read-error write-back is not FUA and the clean mark after a resync has no member
/// flush before it. Tolerated only with this exact invariant label; remove an entry once the fix
/// is merged.
const KNOWN_ENGINE_BUGS: &[(u64, &str)] = &[(386, "(h)"), (1109, "(k)")];

#[test]
fn seeds_run_without_violations() {
    let seeds = if cfg!(debug_assertions) { 200 } else { 2000 };
    let mut failures = Vec::new();
    for seed in 0..seeds {
        if let Err(v) = run_seed(seed, DEFAULT_STEPS, false) {
            let known = KNOWN_ENGINE_BUGS
                .iter()
                .any(|(s, label)| *s == seed && v.what.starts_with(label));
            if known {
                eprintln!("seed {seed}: known engine bug: {}", v.what);
                continue;
            }
            failures.push(format!("seed {seed} step {}: {}", v.step, v.what));
        }
    }
    assert!(
        failures.is_empty(),
        "{} violations:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_seed_replays_bit_for_bit() {
    for seed in [1, 77, 4242] {
        let a = run_seed(seed, 2000, false).expect("no violation");
        let b = run_seed(seed, 2000, false).expect("no violation");
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert!(a.completed > 100, "the workload did something: {a:?}");
    }
}
