//! The NOR store's fuzz run, shared by `nor_model` (no bit lost), `nor_rot` (up to four) and
//! `nor_zones` (the zoned store, up to four): operations decoded from the input against a
//! model of the acknowledged versions. Operation 8 loses a programmed bit while the input may
//! still lose one, and is a write otherwise.

use raid1_embedded::nor::{BLOCK_LEN, NorBlockStore, NorError, SECTOR_HEADER_LEN, ZonedNorStore};
use raid1_embedded::sim::{Countdown, NorSim, NorSimError, Rng};

#[path = "lost_bit.rs"]
mod lost_bit;
use lost_bit::lose_a_bit;

const E: usize = 4096;
const S: usize = 12;
const B: usize = 40;
type Flash<'a> = NorSim<'a, 4, E>;
type Res = Result<(), NorError<NorSimError>>;

/// The store under test: one store over the flash, or the same flash and blocks as two zones
/// of 6 sectors with one zone's map in RAM (so that most writes mount a zone).
enum Store<'a> {
    One(NorBlockStore<Flash<'a>, B, S>),
    Zoned(ZonedNorStore<Flash<'a>, 2, { B / 2 }, { S / 2 }, 1>),
}

impl<'a> Store<'a> {
    fn mount(flash: Flash<'a>, zoned: bool) -> Result<Self, NorError<NorSimError>> {
        Ok(if zoned {
            Store::Zoned(ZonedNorStore::mount(flash).map_err(|r| r.error)?)
        } else {
            Store::One(NorBlockStore::mount(flash).map_err(|r| r.error)?)
        })
    }

    fn zoned(&self) -> bool {
        matches!(self, Store::Zoned(_))
    }

    fn read_block(&mut self, block: u32, buf: &mut [u8; BLOCK_LEN]) -> Res {
        match self {
            Store::One(s) => s.read_block(block, buf),
            Store::Zoned(s) => s.read_block(block, buf),
        }
    }

    fn write_block(&mut self, block: u32, data: &[u8; BLOCK_LEN]) -> Res {
        match self {
            Store::One(s) => s.write_block(block, data),
            Store::Zoned(s) => s.write_block(block, data),
        }
    }

    fn damaged(&self) -> bool {
        match self {
            Store::One(s) => s.damaged(),
            Store::Zoned(s) => s.damaged(),
        }
    }

    fn bookkeeping_holds(&self) -> bool {
        match self {
            Store::One(s) => s.bookkeeping_holds(),
            Store::Zoned(s) => s.bookkeeping_holds(),
        }
    }

    fn flash_mut(&mut self) -> &mut Flash<'a> {
        match self {
            Store::One(s) => s.flash_mut(),
            Store::Zoned(s) => s.flash_mut(),
        }
    }

    fn into_inner(self) -> Flash<'a> {
        match self {
            Store::One(s) => s.into_inner(),
            Store::Zoned(s) => s.into_inner(),
        }
    }
}

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

/// Bytes of a sector's metadata page in use: its header area and its entries.
const META_USED: usize = SECTOR_HEADER_LEN + (E / BLOCK_LEN - 1) * 32;

struct Model {
    acked: [u32; B],
    in_flight: Option<(u32, u32)>,
    /// Bits lost so far.
    lost: u32,
}

impl Model {
    /// Every block after a mount. Returns false when the store reported damage: it then makes
    /// no promise about which version a block reads, and the run ends.
    fn check(&mut self, store: &mut Store<'_>) -> bool {
        if store.damaged() {
            assert!(self.lost > 0, "damage reported with no bit lost");
            return false;
        }
        assert!(
            self.read_all(store, "after a mount"),
            "the power went during reads"
        );
        true
    }

    /// Every block read: its acknowledged version, or (for the write in flight) the new one;
    /// with a bit lost, `Corrupt`, or, for a zoned store, `ZoneChanged` (a zone that lost a
    /// bit while its map was out of RAM is not served). False when the power went: a zone's
    /// mount writes down what it decides, and a cut armed for a program may hit that.
    fn read_all(&mut self, store: &mut Store<'_>, when: &str) -> bool {
        let mut buf = [0u8; BLOCK_LEN];
        for b in 0..B as u32 {
            match store.read_block(b, &mut buf) {
                Ok(()) => {}
                Err(NorError::Flash(_)) if !store.flash_mut().powered() => return false,
                Err(NorError::Corrupt { .. }) if self.lost > 0 => continue,
                Err(NorError::ZoneChanged { .. }) if self.lost > 0 && store.zoned() => continue,
                Err(e) => panic!("read of block {b} {when}: {e:?}"),
            }
            let acked = self.acked[b as usize];
            if buf == content(b, acked) {
                continue;
            }
            match self.in_flight {
                Some((fb, v)) if fb == b && buf == content(b, v) => self.acked[b as usize] = v,
                _ => {
                    let older = (0..acked).find(|&v| buf == content(b, v));
                    panic!(
                        "block {b} lost its acknowledged version {acked} (reads version \
                         {older:?}) {when}, with {} bit(s) lost and no damage reported",
                        self.lost
                    )
                }
            }
        }
        self.in_flight = None;
        true
    }
}

/// Runs the operations of `data`, with at most `lost_bits` programmed bits lost (0: operation
/// 8 is a write, as in `nor_model`), on the zoned store when `zoned`. The zoned store also
/// reads every block without a remount (operation 15 with the argument's top bit set), so that
/// zones are mounted again over bits lost since they left RAM.
pub fn run(data: &[u8], lost_bits: u32, zoned: bool) {
    let mut mem = vec![0xFFu8; E * S];
    let mut wear = vec![0u32; S];
    let seed = data.first().copied().unwrap_or(0);
    let flash = NorSim::new(&mut mem, &mut wear, u64::from(seed));
    let mut store = Some(Store::mount(flash, zoned).unwrap());
    let mut model = Model {
        acked: [0; B],
        in_flight: None,
        lost: 0,
    };
    let mut version = 0u32;
    let mut ops = data.iter().skip(1).copied();
    while let Some(op) = ops.next() {
        let arg = u32::from(ops.next().unwrap_or(0));
        let st = store.as_mut().unwrap();
        match op % 16 {
            // A programmed bit lost for good, anywhere: data, entries, headers.
            8 if model.lost < lost_bits => {
                let mem = st.flash_mut().memory_mut();
                // Half the time in a sector's metadata (header, units, entries), which is a
                // sixteenth of the flash but where a lost bit takes the most judging.
                let at = if op & 16 != 0 {
                    (arg as usize % S) * E + (arg as usize * 31 + usize::from(op)) % META_USED
                } else {
                    (arg as usize * 7919 + usize::from(op) * 131) % mem.len()
                };
                if lose_a_bit(mem, at, op).is_some() {
                    model.lost += 1;
                }
            }
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
                        // A zone that lost a bit while out of RAM refuses writes too.
                        assert!(
                            !flash.powered()
                                || matches!(e, NorError::NoSpace | NorError::Unverified)
                                || matches!(e, NorError::ZoneChanged { .. })
                                    && zoned
                                    && model.lost > 0,
                            "write failed with the power on: {e:?}"
                        );
                        flash.power_cycle();
                        flash.faults.silent_program = Countdown::OFF;
                        flash.faults.silent_erase = Countdown::OFF;
                        let mut st = Store::mount(flash, zoned).expect("mount after a cut");
                        if !model.check(&mut st) {
                            return;
                        }
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
            15 if zoned && arg & 0x80 != 0 => {
                // Reads with the power on: a failed read-back (the power went) is for the next
                // write to find; here every block is read as the store stands.
                if st.flash_mut().powered() && !model.read_all(st, "while running") {
                    let mut flash = store.take().unwrap().into_inner();
                    flash.power_cycle();
                    let mut st = Store::mount(flash, zoned).expect("mount after a cut");
                    if !model.check(&mut st) {
                        return;
                    }
                    store = Some(st);
                }
            }
            _ => {
                let mut flash = store.take().unwrap().into_inner();
                flash.power_cycle();
                let mut st = Store::mount(flash, zoned).expect("remount");
                if !model.check(&mut st) {
                    return;
                }
                store = Some(st);
            }
        }
    }
    let mut st = store.take().unwrap();
    assert_eq!(st.flash_mut().stats.unerased_programs, 0);
    let mut flash = st.into_inner();
    flash.power_cycle();
    flash.faults.flip_period = 0;
    let mut st = Store::mount(flash, zoned).expect("final mount");
    model.check(&mut st);
}
