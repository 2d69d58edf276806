//! Firmware example: the NOR member's power-loss sweep, on the target.
//!
//! For every program and erase of a seeded workload on a simulated 48 KiB NOR flash, cut the
//! power there, remount, and check that every acknowledged block is intact. Exit status 0:
//! no loss; 1: a loss; 2: a setup error.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[macro_use]
mod common;

use raid1_embedded::nor::{BLOCK_LEN, NorBlockStore};
use raid1_embedded::sim::{Countdown, NorSim, Rng};

const SECTOR: usize = 4096;
const SECTORS: usize = 12;
const BLOCKS: usize = 40;
const WRITES: u32 = 150;

type Store<'a> = NorBlockStore<NorSim<'a, 4, SECTOR>, BLOCKS, SECTORS>;

fn fill(block: u32, version: u32, out: &mut [u8; BLOCK_LEN]) {
    out.fill(0);
    if version == 0 {
        return;
    }
    let mut rng = Rng::new(u64::from(block) << 32 | u64::from(version));
    for chunk in out.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
}

/// Write until `WRITES` are done or one fails; returns (acked versions, in-flight write).
fn workload(store: &mut Store<'_>, acked: &mut [u32; BLOCKS]) -> Option<(u32, u32)> {
    let mut rng = Rng::new(7);
    let mut buf = [0u8; BLOCK_LEN];
    for version in 1..=WRITES {
        let block = if rng.below(3) == 0 {
            rng.below(BLOCKS as u64)
        } else {
            rng.below(3)
        } as u32;
        fill(block, version, &mut buf);
        if store.write_block(block, &buf).is_err() {
            return Some((block, version));
        }
        acked[block as usize] = version;
    }
    None
}

fn verify(store: &mut Store<'_>, acked: &[u32; BLOCKS], in_flight: Option<(u32, u32)>) -> bool {
    let mut buf = [0u8; BLOCK_LEN];
    let mut want = [0u8; BLOCK_LEN];
    for block in 0..BLOCKS as u32 {
        if store.read_block(block, &mut buf).is_err() {
            return false;
        }
        fill(block, acked[block as usize], &mut want);
        if buf == want {
            continue;
        }
        match in_flight {
            Some((b, v)) if b == block => {
                fill(block, v, &mut want);
                if buf != want {
                    return false;
                }
            }
            _ => return false,
        }
    }
    true
}

fn run() -> i32 {
    let mem: &mut [u8] = storage!(u8, SECTOR * SECTORS, 0xFF);
    let wear: &mut [u32] = storage!(u32, SECTORS, 0);
    let mut points = 0u32;
    let mut point = 0u32;
    loop {
        mem.fill(0xFF);
        wear.fill(0);
        let mut flash = NorSim::<4, SECTOR>::new(mem, wear, u64::from(point));
        flash.faults.power_loss = Countdown::after(point);
        let Ok(mut store) = Store::mount(flash) else {
            fail!(2, "mount of a blank flash failed");
        };
        let mut acked = [0u32; BLOCKS];
        let in_flight = workload(&mut store, &mut acked);
        if in_flight.is_none() {
            // The workload finished before the cut: every point has been swept.
            if !verify(&mut store, &acked, None) {
                fail!(1, "clean run lost data");
            }
            break;
        }
        let mut flash = store.into_inner();
        flash.power_cycle();
        flash.faults.flip_period = 5;
        let Ok(mut store) = Store::mount(flash) else {
            fail!(1, "remount failed at point {}", point);
        };
        if !verify(&mut store, &acked, in_flight) {
            fail!(1, "acknowledged data lost at power-loss point {}", point);
        }
        points += 1;
        point += 1;
        let _ = store.into_inner();
    }
    say!("nor power-loss sweep: {} points, 0 losses", points);
    0
}

#[cfg(target_os = "none")]
#[cortex_m_rt::entry]
fn main() -> ! {
    common::platform::exit(run())
}

#[cfg(not(target_os = "none"))]
fn main() {
    std::process::exit(run())
}
