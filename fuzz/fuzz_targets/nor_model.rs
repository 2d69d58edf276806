//! raid1-embedded's NOR block store under random operations and power cuts, against a model.
//!
//! The input is a list of operations: writes (of a block, with a version the model tracks),
//! remounts, power cuts armed a few flash operations ahead (the cut tears that program or
//! erase as the simulator does, in order or not, and may leave its cells reading unstable),
//! programs or erases that silently do nothing, and read flips.
//! After every cut the chip is powered again and the store mounted again, and every block must
//! read as its last acknowledged version (or, for the write in flight, its new one), and keep
//! reading what it read then. No program may hit a word that is not erased (other than the
//! cells of a torn program that read erased), and nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raid1_embedded::nor::{BLOCK_LEN, NorBlockStore, NorError};
use raid1_embedded::sim::{Countdown, NorSim, Rng};

const E: usize = 4096;
const S: usize = 12;
const B: usize = 40;
type Store<'a> = NorBlockStore<NorSim<'a, 4, E>, B, S>;

fn content(block: u32, version: u32) -> [u8; BLOCK_LEN] {
    let mut out = [0u8; BLOCK_LEN];
    if version == 0 {
        return out;
    }
    let mut rng = Rng::new(u64::from(block) << 32 | u64::from(version));
    for c in out.chunks_mut(8) {
        c.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    out
}

struct Model {
    acked: [u32; B],
    in_flight: Option<(u32, u32)>,
}

impl Model {
    fn check(&mut self, store: &mut Store<'_>) {
        let mut buf = [0u8; BLOCK_LEN];
        for b in 0..B as u32 {
            store.read_block(b, &mut buf).expect("read after mount");
            let acked = self.acked[b as usize];
            if buf == content(b, acked) {
                continue;
            }
            match self.in_flight {
                Some((fb, v)) if fb == b && buf == content(b, v) => self.acked[b as usize] = v,
                _ => panic!("block {b} lost its acknowledged version {acked}"),
            }
        }
        self.in_flight = None;
    }
}

fuzz_target!(|data: &[u8]| {
    let mut mem = vec![0xFFu8; E * S];
    let mut wear = vec![0u32; S];
    let seed = data.first().copied().unwrap_or(0);
    let mut store = Some(Store::mount(NorSim::new(&mut mem, &mut wear, u64::from(seed))).unwrap());
    let mut model = Model {
        acked: [0; B],
        in_flight: None,
    };
    let mut version = 0u32;
    let mut ops = data.iter().skip(1).copied();
    while let Some(op) = ops.next() {
        let arg = u32::from(ops.next().unwrap_or(0));
        let st = store.as_mut().unwrap();
        match op % 16 {
            0..=8 => {
                let block = arg % B as u32;
                version += 1;
                model.in_flight = Some((block, version));
                let written = st.write_block(block, &content(block, version));
                // What the store keeps beside its sector table (free slots, the sector being
                // filled, wear leveling's "nothing to do") matches a count from scratch, after
                // a write that failed too.
                assert!(st.bookkeeping_holds(), "bookkeeping drifted");
                match written {
                    Ok(()) => {
                        model.acked[block as usize] = version;
                        model.in_flight = None;
                    }
                    Err(e) => {
                        let mut flash = store.take().unwrap().into_inner();
                        // With the power on, only the injected faults may make a write fail
                        // (sectors given up for the session leave no room, or every retry
                        // was dropped): not acknowledged, and a remount starts over.
                        assert!(
                            !flash.powered()
                                || matches!(e, NorError::NoSpace | NorError::Unverified),
                            "write failed with the power on: {e:?}"
                        );
                        flash.power_cycle();
                        flash.faults.silent_program = Countdown::OFF;
                        flash.faults.silent_erase = Countdown::OFF;
                        let mut st = Store::mount(flash).expect("mount after a cut");
                        model.check(&mut st);
                        assert!(st.bookkeeping_holds(), "bookkeeping drifted");
                        store = Some(st);
                    }
                }
            }
            9 | 10 => st.flash_mut().faults.power_loss = Countdown::after(arg % 64),
            11 => st.flash_mut().faults.silent_program = Countdown::after(arg % 16),
            12 => st.flash_mut().faults.silent_erase = Countdown::after(arg % 4),
            // A flipped bit every `period` reads, 0 for none. The store reads up to 3 times,
            // so flips on every read or every other one are beyond what it claims to handle.
            13 => st.flash_mut().faults.flip_period = [0, 4, 7, 13][arg as usize % 4],
            // Torn programs that land out of order, and that read unstable afterwards.
            14 => {
                let faults = &mut st.flash_mut().faults;
                faults.out_of_order_tears = arg & 1 != 0;
                faults.unstable_tears = arg & 2 != 0;
            }
            _ => {
                let mut flash = store.take().unwrap().into_inner();
                flash.power_cycle();
                let mut st = Store::mount(flash).expect("remount");
                model.check(&mut st);
                store = Some(st);
            }
        }
    }
    let mut st = store.take().unwrap();
    assert_eq!(st.flash_mut().stats.unerased_programs, 0);
    let mut flash = st.into_inner();
    flash.power_cycle();
    flash.faults.flip_period = 0;
    let mut st = Store::mount(flash).expect("final mount");
    model.check(&mut st);
    assert!(!st.damaged());
});
