//! No memory is leaked per seed: a process that runs seed after seed (the CLI, the soaks) holds
//! the same heap after each seed as after the first. A counting global allocator measures the
//! bytes allocated and not yet freed; everything a seed allocates (disks, shadow, the engine's
//! bitmap and bad-block storage) must be freed when its run ends, so the count comes back to
//! the same value after every seed, to the byte.
//!
//! Its own test binary without libtest's harness (`harness = false`): one thread, nothing else
//! allocating meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::ExitCode;
use std::sync::atomic::{AtomicIsize, Ordering};

use raid1_sim::{DEFAULT_STEPS, run_seed};

/// Bytes allocated and not yet freed.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: every call is forwarded to the system allocator with the caller's arguments; the
// counter is only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() -> ExitCode {
    // RAID1_SIM_MEMORY_SEEDS overrides the count; debug builds are ten times slower.
    let seeds: u64 = std::env::var("RAID1_SIM_MEMORY_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 100 } else { 1000 });
    let mut grown = Vec::with_capacity(seeds as usize);
    // The first seed pays for what lives as long as the process (stdio buffers and the like).
    let _ = run_seed(0, DEFAULT_STEPS, false);
    let base = LIVE.load(Ordering::Relaxed);
    let mut worst = 0isize;
    for seed in 1..seeds {
        let r = run_seed(seed, DEFAULT_STEPS, false);
        let live = LIVE.load(Ordering::Relaxed);
        if let Err(v) = r {
            eprintln!("seed {seed}: violation at step {}: {}", v.step, v.what);
            return ExitCode::FAILURE;
        }
        if live != base {
            grown.push((seed, live - base));
            worst = worst.max(live - base);
        }
    }
    println!(
        "{seeds} seeds: {} B live after the first, {} seeds left more ({} B more at most)",
        base,
        grown.len(),
        worst
    );
    if grown.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "memory kept after seeds (seed, bytes beyond the first seed's): {:?}",
            &grown[..grown.len().min(10)]
        );
        ExitCode::FAILURE
    }
}
