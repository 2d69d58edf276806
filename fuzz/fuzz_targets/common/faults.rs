//! `volume_faults`'s run, shared with `volume_zones` (the same operations on a zoned flash):
//! the operations and the model are described in `volume_faults.rs`. The root of the target
//! names the NOR member (`Nor`) and the erase sectors of its flash (`NOR_SECTORS`).

use std::cell::Cell;
use std::sync::OnceLock;

use embedded_sdmmc::{Block, BlockDevice, BlockIdx};
use raid1_embedded::sim::{Countdown, NorSim, Powered, SdFaults, SdSim};
use raid1_embedded::volume::{
    BITMAP_SECTOR, DATA_OFFSET, Member, MemberState, Mirror, MirrorStorage, NOR, SdMember,
    VolumeError, VolumeIdentity,
};

use super::lost_bit::lose_a_bit;
use super::volume::{Model, SIZE, Vol, formatted, pattern};
use super::{NOR_SECTORS, Nor};

const ID: VolumeIdentity = VolumeIdentity {
    uuid: *b"volume-fault-fuz",
    name: "vf",
    ctime: 1_700_000_000,
};

/// The card's faults between operations: none, but multi-block writes acknowledged early, as
/// embedded-sdmmc's `SdCard` does.
const SD_BASE: SdFaults = SdFaults {
    power_loss: Countdown::OFF,
    fail_read: Countdown::OFF,
    fail_write: Countdown::OFF,
    early_multi_block_ack: true,
    reinit_on_insert: false,
};

impl Model {
    /// After a mount: every sector reads what it may (what the write in flight left is what
    /// the sector holds from now on), and two members in sync agree.
    fn check(&mut self, vol: &Vol<'_, '_>) {
        for s in 0..SIZE {
            let mut b = [Block::new()];
            vol.read(&mut b, BlockIdx(s as u32))
                .unwrap_or_else(|e| panic!("read {s} after a mount: {e:?} ({:?})", vol.health()));
            assert!(
                self.allows(s, &b[0]),
                "sector {s} lost its acknowledged content"
            );
            self.cur[s as usize] = b[0].clone();
        }
        self.in_flight = None;
        let h = vol.health();
        if h.sd != MemberState::InSync || h.nor != MemberState::InSync {
            return;
        }
        vol.with_members(|sd, nor| {
            for s in 0..SIZE {
                let mut a = [Block::new()];
                let mut b = [Block::new()];
                sd.inner
                    .dev
                    .read(&mut a, BlockIdx((DATA_OFFSET + s) as u32))
                    .unwrap();
                // A NOR block that lost a bit reads `Corrupt`: the volume reads it from the
                // card; only what it returns is compared.
                if nor.inner.read(DATA_OFFSET + s, &mut b).is_ok() {
                    let version = |blk: &Block| {
                        (0..=4096u32).find(|&v| pattern(s, v).contents == blk.contents)
                    };
                    assert!(
                        a[0].contents == b[0].contents,
                        "members differ at sector {s}: version {:?} on the card, {:?} on the \
                         flash, {:?} read",
                        version(&a[0]),
                        version(&b[0]),
                        version(&self.cur[s as usize])
                    );
                }
            }
        });
    }

    /// Write `len` sectors at `sector` as a new version; the write must succeed unless the
    /// power went. Returns false when it went.
    fn write(
        &mut self,
        vol: &Vol<'_, '_>,
        power: &Cell<bool>,
        version: &mut u32,
        sector: u64,
        len: u64,
    ) -> bool {
        let len = len.min(SIZE - sector);
        *version += 1;
        self.in_flight = Some((sector, len, *version));
        let blocks: Vec<Block> = (0..len).map(|i| pattern(sector + i, *version)).collect();
        let r = vol.write(&blocks, BlockIdx(sector as u32));
        if !power.get() {
            return false;
        }
        r.unwrap_or_else(|e| panic!("write with the power on: {e:?} ({:?})", vol.health()));
        for (i, b) in blocks.into_iter().enumerate() {
            self.cur[sector as usize + i] = b;
        }
        self.in_flight = None;
        true
    }

    /// Read `len` sectors at `sector` and compare them; false when the power went.
    fn read(&self, vol: &Vol<'_, '_>, power: &Cell<bool>, sector: u64, len: u64) -> bool {
        let len = len.min(SIZE - sector);
        let mut b = vec![Block::new(); len as usize];
        let r = vol.read(&mut b, BlockIdx(sector as u32));
        if !power.get() {
            return false;
        }
        r.unwrap_or_else(|e| panic!("read with the power on: {e:?} ({:?})", vol.health()));
        for (i, got) in b.iter().enumerate() {
            let s = sector + i as u64;
            assert!(
                got.contents == self.cur[s as usize].contents,
                "sector {s} reads other than what was acknowledged"
            );
        }
        true
    }

    /// While another card is in the slot in place of the only copy in sync: a read fails or
    /// (from the flash, rebuilt past it) reads what was acknowledged.
    fn refused(&self, vol: &Vol<'_, '_>, sector: u64) {
        let mut b = [Block::new()];
        match vol.read(&mut b, BlockIdx(sector as u32)) {
            Err(VolumeError::Io) => {}
            Ok(()) => assert!(
                b[0].contents == self.cur[sector as usize].contents,
                "sector {sector} read other than what was acknowledged with another card in"
            ),
            Err(e) => panic!("read with another card in: {e:?}"),
        }
    }
}

/// Whether an operation ran with the power on (false: the power went in it, whatever it
/// returned); with the power on it must have succeeded.
fn ran<T, E: std::fmt::Debug>(power: &Cell<bool>, what: &str, r: Result<T, E>) -> bool {
    if !power.get() {
        return false;
    }
    if let Err(e) = r {
        panic!("{what} with the power on: {e:?}");
    }
    true
}

/// After a whole scrub with both members in sync: the flash reads every sector of the volume
/// (a block that lost a bit was read `Corrupt` by the scrub and rewritten from the card).
fn scrubbed(vol: &Vol<'_, '_>) {
    let h = vol.health();
    if h.sd != MemberState::InSync || h.nor != MemberState::InSync {
        return;
    }
    vol.with_members(|_, nor| {
        for s in 0..SIZE {
            let mut b = [Block::new()];
            if let Err(e) = nor.inner.read(DATA_OFFSET + s, &mut b) {
                panic!("sector {s} unreadable on the flash after a scrub: {e:?}");
            }
        }
    });
}

/// Whether to print each operation and the volume's health before it (`VOLUME_FAULTS_TRACE`
/// set), to follow a failing input.
fn trace() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("VOLUME_FAULTS_TRACE").is_some())
}

/// Runs the operations of `data` (see the target's documentation).
pub fn run(data: &[u8]) {
    let (mut sd_mem, mut nor_mem) = formatted(ID).clone();
    let mut wear = vec![0u32; NOR_SECTORS];
    let seed = u64::from(data.first().copied().unwrap_or(0));
    let power = Cell::new(true);
    // A driver that must be told of an insertion (embedded-sdmmc's `SdCard`) in half the
    // inputs.
    let base = SdFaults {
        reinit_on_insert: seed & 8 != 0,
        ..SD_BASE
    };
    let sd_sim = SdSim::new(&mut sd_mem, seed ^ 2);
    sd_sim.set_faults(base);
    let mut sd = Powered {
        inner: SdMember::with_reinit(sd_sim, SdSim::mark_card_uninit),
        power: &power,
    };
    let mut nor_sim = NorSim::new(&mut nor_mem, &mut wear, seed ^ 3);
    nor_sim.faults.unstable_tears = seed & 1 != 0;
    nor_sim.faults.out_of_order_tears = seed & 2 != 0;
    if seed & 4 != 0 {
        nor_sim.faults.flip_period = 29;
    }
    let mut nor = Powered {
        inner: Nor::mount(nor_sim).unwrap(),
        power: &power,
    };
    let mut model = Model::new();
    let mut version = 0u32;
    let mut now = 1_000_000_000u64;
    let mut rotted = false;
    // Whether the card is in its slot: the volume learns that it was pulled only at its next
    // command (or `sd_removed`), so its health may still say in sync.
    let mut card_in = true;
    let mut ops = data.iter().skip(1).copied();
    // One mount after another: each ends at a power cut, a close, or the end of the input.
    // After a cut the board starts again: both chips powered, the NOR store mounted again.
    let mut cut = false;
    loop {
        if cut {
            sd.inner.dev.power_cycle();
            sd.inner.dev.insert();
            // The board starts again: its driver starts with the card in the slot.
            sd.inner.dev.mark_card_uninit();
            card_in = true;
            sd.inner.dev.set_faults(base);
            let mut flash = nor.inner.into_inner();
            flash.power_cycle();
            flash.faults.power_loss = Countdown::OFF;
            nor.inner = Nor::mount(flash).expect("NOR mount after a cut");
            power.set(true);
        }
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = match Mirror::open(sd, nor, &mut storage) {
            Ok(vol) if power.get() => vol,
            // The cut fell in the mount itself (whatever it returned): start again.
            Ok(vol) => {
                (sd, nor) = vol.into_members();
                cut = true;
                continue;
            }
            Err(refused) if !power.get() => {
                (sd, nor) = refused.driver;
                cut = true;
                continue;
            }
            Err(refused) => panic!("mount with the power on: {:?}", refused.error),
        };
        let h = vol.health();
        if trace() {
            eprintln!("mounted: {h:?}");
        }
        assert!(
            h.sd == MemberState::InSync || h.nor == MemberState::InSync,
            "no member in sync after a mount: {h:?}"
        );
        assert!(!h.nor_damaged, "NOR damage kept with a card in sync: {h:?}");
        // Both chips answer at every mount here: neither can have run on without the other.
        assert!(
            !h.split_brain,
            "a split brain without a start from one member: {h:?}"
        );
        model.check(&vol);
        // How this mount ends: None at the end of the input, Some(true) at a power cut,
        // Some(false) at a close.
        let mut end = None;
        while let Some(op) = ops.next() {
            let arg = u64::from(ops.next().unwrap_or(0));
            let h = vol.health();
            let sd_ok = h.sd == MemberState::InSync && card_in;
            let nor_ok = h.nor == MemberState::InSync;
            let nor_rebuilt = matches!(h.nor, MemberState::Recovering { .. });
            let sector = arg % SIZE;
            let len = 1 + u64::from(op % 4);
            // The faults a write or read below carries, disarmed after it.
            let mut nor_fault = false;
            if trace() {
                eprintln!("op {} arg {arg}: {h:?}", op % 32);
            }
            let ok = match op % 32 {
                0..=9 => model.write(&vol, &power, &mut version, sector, len),
                10 | 11 => model.read(&vol, &power, sector, len),
                12 => {
                    now += 100_000_000 * (1 + arg % 8);
                    ran(&power, "tick", vol.tick(now))
                }
                13 if nor_ok && !rotted => {
                    card_in = false;
                    vol.with_members(|sd, _| sd.inner.dev.remove());
                    arg & 1 == 0 || ran(&power, "card removed", vol.sd_removed())
                }
                // Another card put in the slot (the volume's card pulled, with no command in
                // between): with the flash in sync it is rebuilt from the flash in full.
                14 if arg % 8 == 7 && nor_ok && !rotted => {
                    card_in = true;
                    vol.with_members(|sd, _| sd.inner.dev.replace_with_new_card());
                    ran(&power, "another card inserted", vol.sd_inserted_begin())
                }
                // The same with the card holding the only copy in sync: the other card is
                // refused and the volume's card put back. No power cut may fall in between:
                // with the volume's card out of the board, nothing holds the volume.
                14 if arg % 8 == 7 && h.sd == MemberState::InSync && !rotted => {
                    vol.with_members(|sd, nor| {
                        sd.inner.dev.set_faults(base);
                        nor.inner.flash_mut().faults.power_loss = Countdown::OFF;
                    });
                    let card: Vec<Block> =
                        vol.with_members(|sd, _| sd.inner.dev.with_blocks(|b| b.to_vec()));
                    vol.with_members(|sd, _| sd.inner.dev.replace_with_new_card());
                    assert_eq!(vol.sd_inserted_begin(), Err(VolumeError::WrongCard));
                    assert!(vol.health().wrong_card, "{:?}", vol.health());
                    model.refused(&vol, sector);
                    vol.with_members(|sd, _| {
                        sd.inner.dev.with_blocks(|b| b.clone_from_slice(&card));
                        sd.inner.dev.insert();
                    });
                    card_in = true;
                    let r = vol.sd_inserted_begin();
                    let h = vol.health();
                    assert!(!h.wrong_card && h.sd == MemberState::InSync, "{h:?}");
                    ran(&power, "the volume's card put back", r)
                }
                // The card inserted; with `arg % 8 == 6`, its superblock fails its first read (a
                // contact that bounced): its copy, maybe a round older, is read instead. A card
                // not known by its copy (a copy a failed write tore reads blank) is refused
                // with `Probe`, and fenced when it held the only copy: the insertion reported
                // again reads its superblock and must take it back.
                14 => {
                    card_in = true;
                    let glitch = arg % 8 == 6;
                    vol.with_members(|sd, _| {
                        sd.inner.dev.insert();
                        if glitch {
                            sd.inner.dev.set_fail_read(Countdown::after(0));
                        }
                    });
                    let r = vol.sd_inserted_begin();
                    vol.with_members(|sd, _| sd.inner.dev.set_fail_read(Countdown::OFF));
                    match r {
                        Err(VolumeError::Probe) if glitch && power.get() => {
                            if !nor_ok {
                                assert!(vol.health().wrong_card, "{:?}", vol.health());
                                model.refused(&vol, sector);
                            }
                            let r = vol.sd_inserted_begin();
                            let ok = ran(&power, "card inserted again", r);
                            assert!(!ok || !vol.health().wrong_card, "{:?}", vol.health());
                            ok
                        }
                        r => ran(&power, "card inserted", r),
                    }
                }
                15 => ran(&power, "step", vol.step(1 + (arg % 8) as u32)),
                16 => {
                    vol.with_members(|_, nor| {
                        nor.inner.flash_mut().faults.power_loss =
                            Countdown::after((arg % 48) as u32)
                    });
                    true
                }
                17 => {
                    vol.with_members(|sd, _| {
                        sd.inner.dev.set_faults(SdFaults {
                            power_loss: Countdown::after((arg % 12) as u32),
                            ..base
                        })
                    });
                    true
                }
                18 => {
                    // The power goes between two operations.
                    power.set(false);
                    false
                }
                // With `arg & 0x80`, the power also goes at one of the next card block
                // writes: a read fix's write-back of data the flash gave, the same data again,
                // which the cut may leave erased or mixed on the card. Also while the flash is
                // being rebuilt, the card then the one member in sync (a transient error: the
                // read is served by the flash where rebuilt past it, else by the card again).
                19 if (nor_ok || (nor_rebuilt && sd_ok)) && !rotted => {
                    let cut = if arg & 0x80 != 0 {
                        Countdown::after(((arg >> 4) % 4) as u32)
                    } else {
                        Countdown::OFF
                    };
                    vol.with_members(|sd, _| {
                        sd.inner.dev.set_faults(SdFaults {
                            fail_read: Countdown::after((arg % 3) as u32),
                            power_loss: cut,
                            ..base
                        })
                    });
                    model.read(&vol, &power, sector, len)
                }
                20 if nor_ok && !rotted => {
                    vol.with_members(|sd, _| {
                        sd.inner.dev.set_faults(SdFaults {
                            fail_write: Countdown::after((arg % 4) as u32),
                            ..base
                        })
                    });
                    model.write(&vol, &power, &mut version, sector, len)
                }
                21..=23 if sd_ok => {
                    nor_fault = true;
                    let after = Countdown::after((arg % 6) as u32);
                    vol.with_members(|_, nor| {
                        let f = &mut nor.inner.flash_mut().faults;
                        match (op % 32, arg & 1) {
                            (21, _) => f.fail_program = after,
                            (22, 0) => f.fail_erase = after,
                            // Every program and erase fails: the member fails.
                            (22, _) if arg & 2 == 0 => f.broken = true,
                            // Every erase fails: collections give their sectors up.
                            (22, _) => f.erase_broken = true,
                            (_, 0) => f.silent_program = after,
                            _ => f.silent_erase = after,
                        }
                    });
                    model.write(&vol, &power, &mut version, sector, len)
                }
                // A flash that lost a bit in its md metadata is rewritten in full; one whose
                // part gave sectors up mounts again first.
                24 => ran(&power, "NOR rejoin", vol.rejoin_begin(NOR)),
                // The flash's bitmap sector (md metadata) loses a bit, the card in or out: the
                // mount must keep the flash's superblock (it may hold writes the card missed).
                25 if arg & 0x80 != 0 && nor_ok => {
                    vol.with_members(|_, nor| {
                        let mut b = [Block::new()];
                        if nor.inner.read(BITMAP_SECTOR, &mut b).is_err() {
                            return;
                        }
                        // Every copy of it (the store may hold an older one alike), the
                        // same bit.
                        let mem = nor.inner.flash_mut().memory_mut();
                        let mut hit = None;
                        for at in (0..mem.len()).step_by(512) {
                            if mem[at..at + 512] == b[0].contents[..] {
                                hit = lose_a_bit(&mut mem[at..at + 512], usize::from(op), op)
                                    .map(|(a, k)| (at + a, k));
                            }
                        }
                        if trace() {
                            eprintln!("lost a bit of the flash's bitmap sector: {hit:?}");
                        }
                    });
                    true
                }
                25 if sd_ok && nor_ok => {
                    rotted = true;
                    vol.with_members(|_, nor| {
                        let mem = nor.inner.flash_mut().memory_mut();
                        let at = (arg as usize * 7919 + usize::from(op) * 131) % mem.len();
                        let hit = lose_a_bit(mem, at, op);
                        if trace() {
                            eprintln!("lost a bit at or after byte {at}: {hit:?}");
                        }
                    });
                    true
                }
                26 => {
                    let whole = arg & 2 != 0;
                    let r = if whole {
                        vol.scrub(arg & 1 != 0).map(|_| ())
                    } else {
                        vol.scrub_begin(arg & 1 != 0)
                    };
                    match r {
                        _ if !power.get() => false,
                        Ok(()) => {
                            if whole && card_in {
                                scrubbed(&vol);
                            }
                            true
                        }
                        Err(VolumeError::Busy) => true,
                        Err(e) => panic!("scrub: {e:?} ({:?})", vol.health()),
                    }
                }
                27 => ran(&power, "clean", vol.clean()),
                28 => {
                    end = Some(false);
                    break;
                }
                29..=31 => model.write(&vol, &power, &mut version, sector, len),
                // A fault whose condition does not hold: nothing.
                _ => true,
            };
            if nor_fault {
                vol.with_members(|_, nor| {
                    let f = &mut nor.inner.flash_mut().faults;
                    f.fail_program = Countdown::OFF;
                    f.fail_erase = Countdown::OFF;
                    f.silent_program = Countdown::OFF;
                    f.silent_erase = Countdown::OFF;
                    f.broken = false;
                    f.erase_broken = false;
                });
            }
            if matches!(op % 32, 19 | 20) {
                vol.with_members(|sd, _| sd.inner.dev.set_faults(base));
            }
            if !ok {
                end = Some(true);
                break;
            }
        }
        match end {
            Some(false) => match vol.close() {
                Ok(members) => (sd, nor) = members,
                Err(refused) if !power.get() => (sd, nor) = refused.driver,
                Err(refused) => panic!("close with the power on: {:?}", refused.error),
            },
            _ => (sd, nor) = vol.into_members(),
        }
        // A close the power cut (whatever it returned) is a cut.
        cut = end == Some(true) || !power.get();
        if end.is_none() {
            break;
        }
    }
    assert_eq!(nor.inner.flash_mut().stats.unerased_programs, 0);
}
