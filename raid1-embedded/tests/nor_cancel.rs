//! Cancellation of the async NOR store's futures: a `write_block` dropped after each of its
//! polls in turn (the flash waits a poll per read, program and erase, so a drop can land
//! between any two flash operations: between a slot's programs, between the last program and
//! the read-back that acknowledges it, inside a garbage collection that the write started).
//! What the block reads right after the drop (the old or the new version) is what it reads
//! after further writes and after a remount; every other block keeps its data.

use std::pin::pin;
use std::task::{Context, Poll, Waker};

use raid1_embedded::nor::{BLOCK_LEN, NorBlockStore, asynch};
use raid1_embedded::sim::{BusyFlash, NorSim};

const SECTOR: usize = 4096;
const SECTORS: usize = 12;
const BLOCKS: usize = 40; // < (12 - 2) * 7 slots: collections run often

type Sim<'a> = NorSim<'a, 4, SECTOR>;
type Blocking<'a> = NorBlockStore<Sim<'a>, BLOCKS, SECTORS>;
type Async<'a> = asynch::NorBlockStore<BusyFlash<Sim<'a>>, BLOCKS, SECTORS>;

fn block_on<T>(f: impl Future<Output = T>) -> T {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("the store hangs");
}

/// Poll `f` at most `n` times, then drop it; whether it completed.
fn poll_then_drop<T>(f: impl Future<Output = T>, n: u32) -> bool {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    (0..n).any(|_| f.as_mut().poll(&mut cx).is_ready())
}

fn data(block: u32, version: u32) -> [u8; BLOCK_LEN] {
    let mut d = [0u8; BLOCK_LEN];
    for (i, c) in d.chunks_mut(4).enumerate() {
        c.copy_from_slice(&(block << 20 ^ version << 12 ^ i as u32).to_le_bytes());
    }
    d
}

fn version_of(block: u32, d: &[u8; BLOCK_LEN]) -> Option<u32> {
    (0..=200).find(|&v| *d == data(block, v))
}

/// Prefill with `writes` writes (each block, then rewrites), drop a write of block `TARGET`
/// after `n` polls, go on, remount. Whether the write completed within `n` polls.
fn drop_write_at(writes: u32, n: u32) -> bool {
    const TARGET: u32 = 3;
    let ctx = format!("{writes} writes, the write dropped after {n} polls");
    let mut mem = vec![0xFFu8; SECTOR * SECTORS];
    let mut wear = vec![0u32; SECTORS];
    let mut now = [0u32; BLOCKS];
    let flash = BusyFlash::new(NorSim::new(&mut mem, &mut wear, 7), 1).with_read_polls(1);
    let Ok(mut store) = block_on(Async::mount(flash)) else {
        panic!("mount")
    };
    for i in 0..writes {
        let b = (i * 7) % BLOCKS as u32;
        now[b as usize] += 1;
        block_on(store.write_block(b, &data(b, now[b as usize]))).expect("write");
    }
    let new = now[TARGET as usize] + 1;
    let completed = poll_then_drop(store.write_block(TARGET, &data(TARGET, new)), n);
    let mut d = [0u8; BLOCK_LEN];
    block_on(store.read_block(TARGET, &mut d)).expect("read");
    let seen = version_of(TARGET, &d);
    assert!(
        seen == Some(now[TARGET as usize]) || seen == Some(new),
        "{ctx}: block {TARGET} reads {seen:?}"
    );
    now[TARGET as usize] = seen.unwrap_or(0);
    // Further writes of the other blocks (collections move the target's copies around).
    for i in 0..60 {
        let b = (i * 11 + 1) % BLOCKS as u32;
        if b == TARGET {
            continue;
        }
        now[b as usize] += 1;
        block_on(store.write_block(b, &data(b, now[b as usize]))).expect("write");
    }
    let check = |read: &mut dyn FnMut(u32, &mut [u8; BLOCK_LEN]), when: &str| {
        for b in 0..BLOCKS as u32 {
            let mut d = [0u8; BLOCK_LEN];
            read(b, &mut d);
            assert_eq!(
                version_of(b, &d),
                Some(now[b as usize]),
                "{ctx}: block {b} {when}"
            );
        }
    };
    check(
        &mut |b, d| block_on(store.read_block(b, d)).expect("read"),
        "after more writes",
    );
    let _ = store.into_inner();
    let Ok(mut store) = Blocking::mount(NorSim::new(&mut mem, &mut wear, 7)) else {
        panic!("{ctx}: remount")
    };
    check(
        &mut |b, d| store.read_block(b, d).expect("read"),
        "after a remount",
    );
    completed
}

#[test]
fn a_dropped_write_reads_the_same_before_and_after_a_remount() {
    for writes in [40, 95, 100, 104, 109, 113] {
        let mut n = 1;
        while !drop_write_at(writes, n) {
            n += 1;
            assert!(n < 5_000, "the write never completes");
        }
    }
}
