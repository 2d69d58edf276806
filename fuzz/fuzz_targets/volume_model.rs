//! raid1-embedded's whole mirrored volume (an SD card and a NOR flash, md metadata, bitmap)
//! under random operations and power cuts, against a model.
//!
//! The input is a list of operations: writes of 1 to 4 sectors (each sector's content names
//! its version, which the model tracks), reads checked against the model, timer ticks (the
//! clean mark, the bitmap daemon), the card pulled and put back (its recovery then runs in
//! budgeted steps), and power cuts armed a few NOR operations or SD block writes ahead. A cut
//! takes the whole board: both chips lose power at once. Then both are powered again, the NOR
//! store and the volume are mounted again, and every sector must read its last acknowledged
//! version (the write in flight: old or new, byte by byte for a torn SD sector), and the two
//! members must agree. Nothing may panic, and no NOR program may hit a word that is not erased.
//! In half the inputs (by the seed byte) torn NOR programs leave cells that read unstable.
#![no_main]

use std::cell::Cell;

use embedded_sdmmc::{Block, BlockDevice, BlockIdx};
use libfuzzer_sys::fuzz_target;
use raid1_embedded::sim::{Countdown, NorSim, Powered, SdFaults, SdSim};
use raid1_embedded::volume::{
    DATA_OFFSET, Member, Mirror, MirrorStorage, SdMember, VolumeIdentity,
};

#[path = "common/volume.rs"]
mod volume;
use volume::{Model, SIZE, Vol, formatted, pattern};

/// The NOR member: one store over 16 sectors of 4 KiB, 90 blocks.
type Nor<'a> = raid1_embedded::nor::NorBlockStore<
    NorSim<'a, 4, { volume::SECTOR }>,
    { volume::NOR_BLOCKS },
    NOR_SECTORS,
>;
const NOR_SECTORS: usize = 16;

const ID: VolumeIdentity = VolumeIdentity {
    uuid: *b"volume-model-fuz",
    name: "vm",
    ctime: 1_700_000_000,
};

impl Model {
    /// After a mount: every sector, and the members agree; what the write in flight left is
    /// what the sector holds from now on.
    fn check(&mut self, vol: &Vol<'_, '_>) {
        for s in 0..SIZE {
            let mut b = [Block::new()];
            vol.read(&mut b, BlockIdx(s as u32))
                .unwrap_or_else(|e| panic!("read {s} after a mount: {e:?}"));
            assert!(
                self.allows(s, &b[0]),
                "sector {s} lost its acknowledged content"
            );
            self.cur[s as usize] = b[0].clone();
        }
        self.in_flight = None;
        vol.with_members(|sd, nor| {
            for s in 0..SIZE {
                let mut a = [Block::new()];
                let mut b = [Block::new()];
                sd.inner
                    .dev
                    .read(&mut a, BlockIdx((DATA_OFFSET + s) as u32))
                    .unwrap();
                nor.inner.read(DATA_OFFSET + s, &mut b).unwrap();
                assert!(
                    a[0].contents == b[0].contents,
                    "members differ at sector {s}"
                );
            }
        });
    }
}

fuzz_target!(|data: &[u8]| {
    let (mut sd_mem, mut nor_mem) = formatted(ID).clone();
    let mut wear = vec![0u32; NOR_SECTORS];
    let seed = u64::from(data.first().copied().unwrap_or(0));
    let power = Cell::new(true);
    let sd_sim = SdSim::new(&mut sd_mem, seed ^ 2);
    // The card acknowledges multi-block writes before their last block is programmed, as
    // embedded-sdmmc's SdCard does: the binding must not rely on them.
    sd_sim.set_faults(SdFaults {
        early_multi_block_ack: true,
        ..SdFaults::default()
    });
    let mut sd = Powered {
        inner: SdMember::new(sd_sim),
        power: &power,
    };
    let mut nor_sim = NorSim::new(&mut nor_mem, &mut wear, seed ^ 3);
    // Half the inputs: a torn NOR program leaves cells that read unstable.
    nor_sim.faults.unstable_tears = seed & 1 != 0;
    let mut nor = Powered {
        inner: Nor::mount(nor_sim).unwrap(),
        power: &power,
    };
    let mut model = Model::new();
    let mut version = 0u32;
    let mut now = 1_000_000_000u64;
    let mut ops = data.iter().skip(1).copied();
    // One mount after another: each ends at a power cut or at the end of the input.
    loop {
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = match Mirror::open(sd, nor, &mut storage) {
            Ok(vol) => vol,
            Err(refused) if !power.get() => {
                // The cut fell in the mount itself: power again and mount again.
                (sd, nor) = refused.driver;
                sd.inner.dev.power_cycle();
                sd.inner.dev.insert();
                nor.inner.flash_mut().power_cycle();
                power.set(true);
                continue;
            }
            Err(refused) => panic!("mount with the power on: {:?}", refused.error),
        };
        assert!(
            !vol.health().degraded,
            "degraded after a mount: {:?}",
            vol.health()
        );
        model.check(&vol);
        let mut cut = false;
        while let Some(op) = ops.next() {
            let arg = u64::from(ops.next().unwrap_or(0));
            match op % 16 {
                0..=7 => {
                    let sector = arg % SIZE;
                    let len = (1 + u64::from(op % 4)).min(SIZE - sector);
                    version += 1;
                    model.in_flight = Some((sector, len, version));
                    let blocks: Vec<Block> =
                        (0..len).map(|i| pattern(sector + i, version)).collect();
                    let r = vol.write(&blocks, BlockIdx(sector as u32));
                    if !power.get() {
                        cut = true;
                        break;
                    }
                    r.unwrap_or_else(|e| panic!("write with the power on: {e:?}"));
                    for (i, b) in blocks.into_iter().enumerate() {
                        model.cur[sector as usize + i] = b;
                    }
                    model.in_flight = None;
                }
                8 => {
                    let s = arg % SIZE;
                    let mut b = [Block::new()];
                    let r = vol.read(&mut b, BlockIdx(s as u32));
                    if !power.get() {
                        cut = true;
                        break;
                    }
                    r.unwrap_or_else(|e| panic!("read with the power on: {e:?}"));
                    assert!(
                        b[0].contents == model.cur[s as usize].contents,
                        "sector {s} reads other than what was acknowledged"
                    );
                }
                9 => {
                    now += 100_000_000 * (1 + arg % 8);
                    let r = vol.tick(now);
                    if !power.get() {
                        cut = true;
                        break;
                    }
                    r.unwrap();
                }
                10 => vol.with_members(|sd, _| sd.inner.dev.remove()),
                11 => {
                    vol.with_members(|sd, _| sd.inner.dev.insert());
                    let r = vol.sd_inserted_begin();
                    if !power.get() {
                        cut = true;
                        break;
                    }
                    r.unwrap();
                }
                12 => {
                    let r = vol.step(1 + (arg % 8) as u32);
                    if !power.get() {
                        cut = true;
                        break;
                    }
                    r.unwrap();
                }
                13 => vol.with_members(|_, nor| {
                    nor.inner.flash_mut().faults.power_loss = Countdown::after((arg % 48) as u32)
                }),
                14 => vol.with_members(|sd, _| {
                    sd.inner.dev.set_faults(SdFaults {
                        power_loss: Countdown::after((arg % 12) as u32),
                        early_multi_block_ack: true,
                        ..SdFaults::default()
                    })
                }),
                _ => {
                    // The power goes between two operations.
                    power.set(false);
                    cut = true;
                    break;
                }
            }
        }
        (sd, nor) = vol.into_members();
        if !cut {
            break;
        }
        sd.inner.dev.power_cycle();
        sd.inner.dev.insert();
        sd.inner.dev.set_faults(SdFaults {
            early_multi_block_ack: true,
            ..SdFaults::default()
        });
        let flash = nor.inner.into_inner();
        let mut flash = flash;
        flash.power_cycle();
        nor.inner = Nor::mount(flash).expect("NOR mount after a cut");
        power.set(true);
    }
    assert_eq!(nor.inner.flash_mut().stats.unerased_programs, 0);
});
