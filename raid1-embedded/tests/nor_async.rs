//! The async NOR store (`nor::asynch`) is the blocking store's source with its `async` and
//! `.await` kept. Driven through the same operations on the same simulated flash (same seed,
//! same faults: power cuts, failed and silent programs and erases, read bit flips, torn
//! programs that land out of order and read unstable), the two must return the same results,
//! leave the same bytes on the flash and count the same work, at every step. A difference is
//! a path the async variant takes differently from the one the sweeps prove. Below, the async
//! store's futures dropped half-way.

use std::pin::pin;
use std::task::{Context, Poll, Waker};

use raid1_embedded::nor::{BLOCK_LEN, NorBlockStore, asynch};
use raid1_embedded::sim::{BusyFlash, Countdown, NorFaults, NorSim, Rng};

const SECTOR: usize = 4096;
const SECTORS: usize = 12;
const BLOCKS: usize = 40; // < (12 - 2) * 7 slots: collections run often

type Sim<'a> = NorSim<'a, 4, SECTOR>;
type Blocking<'a> = NorBlockStore<Sim<'a>, BLOCKS, SECTORS>;
type Async<'a> = asynch::NorBlockStore<BusyFlash<Sim<'a>>, BLOCKS, SECTORS>;

/// Poll `f` to its end (the simulated flash wakes its own waker when it waits); a call that
/// needs a million polls hangs.
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

fn faults(rng: &mut Rng) -> NorFaults {
    let maybe = |rng: &mut Rng, n: u64| {
        if rng.below(2) == 0 {
            Countdown::after(1 + rng.below(n) as u32)
        } else {
            Countdown::OFF
        }
    };
    NorFaults {
        power_loss: maybe(rng, 400),
        fail_program: maybe(rng, 300),
        fail_erase: maybe(rng, 60),
        flip_period: if rng.below(2) == 0 { 37 } else { 0 },
        silent_program: maybe(rng, 300),
        silent_erase: maybe(rng, 60),
        out_of_order_tears: rng.below(2) == 0,
        unstable_tears: rng.below(2) == 0,
        ..NorFaults::default()
    }
}

/// Mount both, each from its flash after a power cycle; both must agree.
fn mount_both<'a>(mut a: Sim<'a>, b: BusyFlash<Sim<'a>>, what: &str) -> (Blocking<'a>, Async<'a>) {
    let mut b = b;
    for attempt in 0..4 {
        a.power_cycle();
        b.flash.power_cycle();
        let ra = Blocking::mount(a);
        let rb = block_on(Async::mount(b));
        match (ra, rb) {
            (Ok(sa), Ok(sb)) => return (sa, sb),
            (Err(ea), Err(eb)) => {
                assert_eq!(
                    ea.error, eb.error,
                    "{what}: mount {attempt} failed differently"
                );
                (a, b) = (ea.driver, eb.driver);
            }
            (ra, rb) => panic!(
                "{what}: mount {attempt}: blocking {:?}, async {:?}",
                ra.err().map(|e| e.error),
                rb.err().map(|e| e.error)
            ),
        }
    }
    panic!("{what}: no mount in 4 attempts");
}

fn same(a: &mut Blocking<'_>, b: &mut Async<'_>, what: &str) {
    assert_eq!(a.stats(), b.stats(), "{what}: store counters");
    let (fa, fb) = (a.flash_mut(), &mut b.flash_mut().flash);
    assert_eq!(fa.stats, fb.stats, "{what}: flash counters");
    assert!(fa.memory() == fb.memory(), "{what}: flash contents differ");
}

#[test]
fn the_async_store_does_what_the_blocking_store_does_under_every_fault() {
    for seed in 0..60u64 {
        let mut rng = Rng::new(seed);
        let (mut mem_a, mut mem_b) = (vec![0xFF; SECTOR * SECTORS], vec![0xFF; SECTOR * SECTORS]);
        let (mut wear_a, mut wear_b) = (vec![0u32; SECTORS], vec![0u32; SECTORS]);
        let mut sim_a = Sim::new(&mut mem_a, &mut wear_a, seed);
        let mut sim_b = Sim::new(&mut mem_b, &mut wear_b, seed);
        let f = faults(&mut rng);
        sim_a.faults = f;
        sim_b.faults = f;
        let what = format!("seed {seed}");
        let (mut a, mut b) = mount_both(sim_a, BusyFlash::new(sim_b, 1 + seed as u32 % 3), &what);
        let mut data = [0u8; BLOCK_LEN];
        let (mut got_a, mut got_b) = ([0u8; BLOCK_LEN], [0u8; BLOCK_LEN]);
        for op in 0..600 {
            let what = format!("seed {seed} op {op}");
            let block = rng.below(BLOCKS as u64) as u32;
            let (ra, rb) = if rng.below(3) == 0 {
                let ra = a.read_block(block, &mut got_a);
                let rb = block_on(b.read_block(block, &mut got_b));
                if ra.is_ok() {
                    assert_eq!(got_a, got_b, "{what}: read {block}");
                }
                (ra, rb)
            } else {
                data.iter_mut().for_each(|x| *x = rng.below(256) as u8);
                (
                    a.write_block(block, &data),
                    block_on(b.write_block(block, &data)),
                )
            };
            assert_eq!(ra, rb, "{what}");
            same(&mut a, &mut b, &what);
            if ra.is_err() && !a.flash_mut().powered() {
                (a, b) = mount_both(a.into_inner(), b.into_inner(), &what);
                same(&mut a, &mut b, &format!("{what}, remounted"));
            }
        }
    }
}

// Cancellation of the async store's futures: a `write_block` dropped after each of its polls
// in turn (the flash waits a poll per read, program and erase, so a drop can land between any
// two flash operations: between a slot's programs, between the last program and the
// read-back that acknowledges it, inside a garbage collection that the write started). What
// the block reads right after the drop (the old or the new version) is what it reads after
// further writes and after a remount; every other block keeps its data.

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
/// after `n` polls, and with `second` > 0 the read after it (which decides the write left
/// pending) after `second` polls, go on, remount. Whether the write completed within `n`
/// polls.
fn drop_write_at(writes: u32, n: u32, second: u32) -> bool {
    const TARGET: u32 = 3;
    let ctx =
        format!("{writes} writes, the write dropped after {n} polls, the read after {second}");
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
    if second > 0 {
        poll_then_drop(store.read_block(TARGET, &mut d), second);
    }
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
        while !drop_write_at(writes, n, 0) {
            n += 1;
            assert!(n < 5_000, "the write never completes");
        }
    }
}

/// The same, with the read that decides the dropped write dropped too, after each of its
/// first polls: the write stays pending for the next call. (The store took it off before it
/// read the slot's entry, so that such a drop lost it: the block read as the old version until
/// the next mount, and as the new one after it.)
#[test]
fn a_dropped_write_stays_pending_when_the_read_that_decides_it_is_dropped() {
    for writes in [40, 100] {
        let mut n = 1;
        loop {
            let done = (1..4).all(|second| drop_write_at(writes, n, second));
            if done {
                break;
            }
            n += 1;
            assert!(n < 5_000, "the write never completes");
        }
    }
}

/// Writes of one block dropped one after another, each after `n` polls, with no completed
/// write in between (a caller whose every write times out while the part is slow): every
/// write after them must still find room. A dropped erase marked its sector bad for the
/// session, and the collections these drops cut short ran the store out of room (`NoSpace`
/// until a remount; found by the `volume_async` fuzz target).
#[test]
fn writes_dropped_one_after_another_leave_room() {
    for (n, read_polls) in (1..40).flat_map(|n| [(n, 0), (n, 1)]) {
        let mut mem = vec![0xFFu8; SECTOR * SECTORS];
        let mut wear = vec![0u32; SECTORS];
        let flash =
            BusyFlash::new(NorSim::new(&mut mem, &mut wear, 7), 1).with_read_polls(read_polls);
        let Ok(mut store) = block_on(Async::mount(flash)) else {
            panic!("mount")
        };
        for b in 0..BLOCKS as u32 {
            block_on(store.write_block(b, &data(b, 1))).expect("write");
        }
        for i in 0..400u32 {
            let b = [3, 3, 8, 16][i as usize % 4];
            poll_then_drop(store.write_block(b, &data(b, 2 + i % 100)), n);
        }
        for b in 0..BLOCKS as u32 {
            block_on(store.write_block(b, &data(b, 150)))
                .unwrap_or_else(|e| panic!("drops after {n} polls: write {b}: {e:?}"));
        }
        assert!(store.bookkeeping_holds(), "drops after {n} polls");
    }
}

/// The same at the capacity edge (90 blocks in 16 sectors of 7 slots, as the volume's fuzz
/// targets provision their flash), every block written first: a collection copies up to 6
/// blocks, more polls than a caller that times out after a few gives it.
///
/// OPEN (found 2026-12-06 by `volume_async`): it fails. Each collection cut short wastes the
/// slot it was programming, and its victim stays; enough of them spread the waste over every
/// sector until none has as few live blocks as there are free slots, and the store answers
/// `NoSpace` for good, a remount included (1 free slot). The reserve assumes a collection
/// ends. See docs/EMBEDDED.md, "What is left".
#[test]
#[ignore = "open finding: collections cut short by dropped writes can use the reserve up for good"]
fn writes_dropped_one_after_another_leave_room_at_the_capacity_edge() {
    type Edge<'a> = asynch::NorBlockStore<BusyFlash<Sim<'a>>, 90, 16>;
    for n in 1..30 {
        let mut mem = vec![0xFFu8; SECTOR * 16];
        let mut wear = vec![0u32; 16];
        let flash = BusyFlash::new(NorSim::new(&mut mem, &mut wear, 7), 1);
        let Ok(mut store) = block_on(Edge::mount(flash)) else {
            panic!("mount")
        };
        for b in 0..90u32 {
            block_on(store.write_block(b, &data(b, 1))).expect("write");
        }
        for i in 0..600u32 {
            let b = (i * 7) % 90;
            poll_then_drop(store.write_block(b, &data(b, 2 + i % 100)), n);
        }
        for b in 0..90u32 {
            if let Err(e) = block_on(store.write_block(b, &data(b, 150))) {
                let free = store.free_slots();
                let remount = block_on(store.remount());
                panic!(
                    "drops after {n} polls: write {b}: {e:?} with {free} free slots \
                     ({} after a remount, {remount:?})",
                    store.free_slots()
                );
            }
        }
        assert!(store.bookkeeping_holds(), "drops after {n} polls");
    }
}
