//! Power-loss sweep of the whole mirrored volume: the power goes at every NOR program or
//! erase, and at every SD block write, of a seeded write workload. The power loss hits both
//! members at once (after the cut, neither member completes anything). Then both are power
//! cycled, the NOR store and the volume are mounted again (md assembly, bitmap resync), and
//! every acknowledged write must read back; the write in flight may read old or new.

use std::cell::Cell;

use embedded_sdmmc::{Block, BlockDevice, BlockIdx};
use raid1_embedded::nor::NorBlockStore;
use raid1_embedded::sim::{Countdown, NorSim, Rng, SdFaults, SdSim};
use raid1_embedded::volume::{
    Member, MemberFault, Mirror, MirrorStorage, SdMember, VolumeIdentity,
};

const SECTOR: usize = 4096;
const NOR_SECTORS: usize = 16;
const NOR_BLOCKS: usize = 90; // < (16 - 2) * 7
const SD_BLOCKS: usize = 128;
const ID: VolumeIdentity = VolumeIdentity {
    uuid: *b"power-loss-sweep",
    name: "pl",
    ctime: 1_700_000_000,
};

type Nor<'a> = NorBlockStore<NorSim<'a, 4, SECTOR>, NOR_BLOCKS, NOR_SECTORS>;

/// A member that stops working for good once the shared power flag drops, and drops it when
/// its own simulated chip loses power.
struct Powered<'p, M> {
    inner: M,
    power: &'p Cell<bool>,
}

trait Chip {
    fn chip_powered(&mut self) -> bool;
}

impl Chip for SdMember<SdSim<'_>> {
    fn chip_powered(&mut self) -> bool {
        self.dev.powered()
    }
}

impl Chip for Nor<'_> {
    fn chip_powered(&mut self) -> bool {
        self.flash_mut().powered()
    }
}

impl<M: Member + Chip> Powered<'_, M> {
    fn run<T>(
        &mut self,
        op: impl FnOnce(&mut M) -> Result<T, MemberFault>,
    ) -> Result<T, MemberFault> {
        if !self.power.get() {
            return Err(MemberFault);
        }
        let r = op(&mut self.inner);
        if !self.inner.chip_powered() {
            self.power.set(false);
            return Err(MemberFault);
        }
        r
    }
}

impl<M: Member + Chip> Member for Powered<'_, M> {
    fn read(&mut self, sector: u64, blocks: &mut [Block]) -> Result<(), MemberFault> {
        self.run(|m| m.read(sector, blocks))
    }

    fn write(&mut self, sector: u64, blocks: &[Block]) -> Result<(), MemberFault> {
        self.run(|m| m.write(sector, blocks))
    }

    fn sectors(&mut self) -> Result<u64, MemberFault> {
        self.run(|m| m.sectors())
    }
}

fn pattern(sector: u64, version: u32) -> Block {
    let mut b = Block::new();
    if version == 0 {
        return b;
    }
    let mut rng = Rng::new(sector << 32 | u64::from(version));
    for c in b.contents.chunks_mut(8) {
        c.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    b
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cut {
    None,
    Nor(u32),
    Sd(u32),
}

struct Outcome {
    nor_ops: u32,
    sd_writes: u32,
}

/// Format once; returns the formatted images.
fn formatted() -> (Vec<Block>, Vec<u8>) {
    let mut sd_mem = vec![Block::new(); SD_BLOCKS];
    let mut nor_mem = vec![0xFFu8; SECTOR * NOR_SECTORS];
    let mut wear = vec![0u32; NOR_SECTORS];
    {
        let sd = SdMember::new(SdSim::new(&mut sd_mem, 1));
        let nor = Nor::mount(NorSim::new(&mut nor_mem, &mut wear, 2)).unwrap();
        let mut storage: MirrorStorage = MirrorStorage::new();
        Mirror::format(sd, nor, &mut storage, ID).unwrap();
    }
    (sd_mem, nor_mem)
}

/// Run the workload on copies of the images with a power cut, remount, check.
fn one(images: &(Vec<Block>, Vec<u8>), cut: Cut, writes: u32, seed: u64) -> Outcome {
    let mut sd_mem = images.0.clone();
    let mut nor_mem = images.1.clone();
    let mut wear = vec![0u32; NOR_SECTORS];
    let power = Cell::new(true);
    let sd_sim = SdSim::new(&mut sd_mem, seed);
    if let Cut::Sd(n) = cut {
        sd_sim.set_faults(SdFaults {
            power_loss: Countdown::after(n),
            ..SdFaults::default()
        });
    }
    let mut flash = NorSim::new(&mut nor_mem, &mut wear, seed ^ 0xABCD);
    if let Cut::Nor(n) = cut {
        flash.faults.power_loss = Countdown::after(n);
    }
    let sd = Powered {
        inner: SdMember::new(sd_sim),
        power: &power,
    };
    let nor = Powered {
        inner: Nor::mount(flash).unwrap(),
        power: &power,
    };
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    let size = vol.sectors();
    let (sd0, nor0) = vol.with_members(|sd, nor| {
        (
            sd.inner.dev.stats().blocks_written,
            nor.inner.flash_mut().stats,
        )
    });
    let mut acked = vec![0u32; size as usize];
    let mut in_flight = None;
    let mut rng = Rng::new(seed);
    for version in 1..=writes {
        let sector = if rng.below(3) == 0 {
            rng.below(size)
        } else {
            rng.below(6) * 9
        };
        in_flight = Some((sector, version));
        if vol
            .write(&[pattern(sector, version)], BlockIdx(sector as u32))
            .is_err()
        {
            break;
        }
        acked[sector as usize] = version;
        in_flight = None;
        if !power.get() {
            break;
        }
    }
    let (sd1, nor1) = vol.with_members(|sd, nor| {
        (
            sd.inner.dev.stats().blocks_written,
            nor.inner.flash_mut().stats,
        )
    });
    let outcome = Outcome {
        nor_ops: nor1.programs + nor1.erases - nor0.programs - nor0.erases,
        sd_writes: sd1 - sd0,
    };
    if cut == Cut::None {
        assert!(
            power.get() && in_flight.is_none(),
            "the clean run must finish"
        );
    } else {
        assert!(!power.get(), "{cut:?}: the power cut was not reached");
    }

    // Power comes back: remount everything from what the chips hold.
    let (sd, nor) = vol.into_members();
    let sd_sim = sd.inner.dev;
    sd_sim.power_cycle();
    let mut flash = nor.inner.into_inner();
    flash.power_cycle();
    let power = Cell::new(true);
    let sd = Powered {
        inner: SdMember::new(sd_sim),
        power: &power,
    };
    let nor = Powered {
        inner: Nor::mount(flash).unwrap(),
        power: &power,
    };
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol =
        Mirror::open(sd, nor, &mut storage).unwrap_or_else(|e| panic!("{cut:?}: remount: {e:?}"));
    let health = vol.health();
    assert!(
        !health.degraded,
        "{cut:?}: degraded after remount: {health:?}"
    );
    let check = |vol: &Mirror<'_, _, _>,
                 acked: &[u32],
                 in_flight: Option<(u64, u32)>,
                 what: &str| {
        for s in 0..size {
            let mut b = [Block::new()];
            vol.read(&mut b, BlockIdx(s as u32))
                .unwrap_or_else(|e| panic!("{cut:?} {what}: read {s}: {e:?}"));
            let old = pattern(s, acked[s as usize]).contents;
            // The sector in flight may read old or new, or (an SD card tears a sector when the
            // power goes mid-write) each byte old or new: it was never acknowledged.
            let ok = b[0].contents == old
                || matches!(in_flight, Some((fs, v)) if fs == s && {
                    let new = pattern(s, v).contents;
                    b[0].contents.iter().zip(old.iter().zip(new.iter())).all(|(&g, (&o, &n))| g == o || g == n)
                });
            assert!(
                ok,
                "{cut:?} {what}: sector {s} lost acknowledged version {}",
                acked[s as usize]
            );
        }
    };
    check(&vol, &acked, in_flight, "after remount");
    // The members agree: read each one directly.
    vol.with_members(|sd, nor| {
        for s in 0..size {
            let mut a = [Block::new()];
            let mut b = [Block::new()];
            sd.inner
                .dev
                .read(
                    &mut a,
                    BlockIdx((raid1_embedded::volume::DATA_OFFSET + s) as u32),
                )
                .unwrap();
            nor.inner
                .read(raid1_embedded::volume::DATA_OFFSET + s, &mut b)
                .unwrap();
            assert!(
                a[0].contents == b[0].contents,
                "{cut:?}: members differ at sector {s} after remount"
            );
        }
    });
    // Keep going after the remount.
    for version in writes + 1..writes + 6 {
        let sector = rng.below(size);
        vol.write(&[pattern(sector, version)], BlockIdx(sector as u32))
            .unwrap();
        acked[sector as usize] = version;
        if matches!(in_flight, Some((s, _)) if s == sector) {
            in_flight = None;
        }
    }
    check(&vol, &acked, in_flight, "after more writes");
    outcome
}

#[test]
fn volume_power_loss_sweep() {
    let writes = if cfg!(debug_assertions) { 40 } else { 400 };
    let images = formatted();
    let clean = one(&images, Cut::None, writes, 5);
    assert!(clean.nor_ops > writes && clean.sd_writes >= writes);
    for n in 0..clean.nor_ops {
        one(&images, Cut::Nor(n), writes, 5);
    }
    for n in 0..clean.sd_writes {
        one(&images, Cut::Sd(n), writes, 5);
    }
    println!(
        "volume power-loss sweep: {} NOR program/erase points + {} SD block-write points, 0 losses",
        clean.nor_ops, clean.sd_writes
    );
}
