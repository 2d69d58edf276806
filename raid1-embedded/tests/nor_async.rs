//! The async NOR store (`nor::asynch`) is the blocking store's source with its `async` and
//! `.await` kept. Driven through the same operations on the same simulated flash (same seed,
//! same faults: power cuts, failed and silent programs and erases, read bit flips, torn
//! programs that land out of order and read unstable), the two must return the same results,
//! leave the same bytes on the flash and count the same work, at every step. A difference is
//! a path the async variant takes differently from the one the sweeps prove.

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

/// Poll `f` to its end (the simulated flash wakes its own waker when it waits).
fn block_on<T>(f: impl Future<Output = T>) -> T {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
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
