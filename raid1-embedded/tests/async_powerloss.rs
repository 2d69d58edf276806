//! The async binding under power cuts: `AsyncMirror` over a card whose commands wait and the
//! async NOR store over a flash whose programs and erases wait (other tasks could run in
//! between), both on one supply. The power goes at every SD block write, then at every NOR
//! program or erase, of a seeded workload: the mount, single and multi-sector writes, ticks of
//! the timers, the card pulled, written degraded, put back and recovered in budgeted steps, and
//! the close. The chips are then powered again and mounted by the blocking binding, which must
//! find every acknowledged write (the one in flight may read old, new, or as the card tore it),
//! the volume in sync, and both members holding the same data.
//!
//! The blocking binding's sweeps (`volume_powerloss.rs`) check the shared decisions; this one
//! checks the async driver that carries them out: the order in which it issues and awaits
//! member commands, and when it acknowledges.

mod common;

use std::cell::Cell;

use common::{BLOCKS, Chips, E, Nor, SECTORS, pattern};
use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll};
use embedded_sdmmc::{Block, BlockDevice, BlockIdx};
use raid1_embedded::nor::asynch;
use raid1_embedded::sim::{BusyFlash, Countdown, NorSim, Rng, SdFaults, SdSim, Wait};
use raid1_embedded::volume::asynch::{AsyncMember, AsyncMirror};
use raid1_embedded::volume::{
    DATA_OFFSET, Member, MemberFault, Mirror, MirrorStorage, Options, SdMember,
};

type Store<'a> = asynch::NorBlockStore<BusyFlash<NorSim<'a, 4, E>>, BLOCKS, SECTORS>;

fn block_on<T>(f: impl Future<Output = T>) -> T {
    let mut cx = Context::from_waker(core::task::Waker::noop());
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// A member on a board whose power goes for every chip at once: it fails for good once the
/// shared flag drops, and drops it when its own chip loses power (what `sim::Powered` is for
/// the blocking binding).
struct Board<'p, M> {
    inner: M,
    power: &'p Cell<bool>,
}

impl<M> Board<'_, M> {
    fn after<T>(&self, powered: bool, r: Result<T, MemberFault>) -> Result<T, MemberFault> {
        if !powered {
            self.power.set(false);
        }
        if self.power.get() {
            r
        } else {
            Err(MemberFault)
        }
    }
}

impl AsyncMember for Board<'_, SdMember<SdSim<'_>>> {
    async fn read(&mut self, sector: u64, blocks: &mut [Block]) -> Result<(), MemberFault> {
        if !self.power.get() {
            return Err(MemberFault);
        }
        Wait(2).await;
        let r = self.inner.read(sector, blocks);
        self.after(self.inner.dev.powered(), r)
    }
    async fn write(&mut self, sector: u64, blocks: &[Block]) -> Result<(), MemberFault> {
        if !self.power.get() {
            return Err(MemberFault);
        }
        Wait(2).await;
        let r = self.inner.write(sector, blocks);
        self.after(self.inner.dev.powered(), r)
    }
    async fn sectors(&mut self) -> Result<u64, MemberFault> {
        self.inner.sectors()
    }
    fn reinit(&mut self) {
        self.inner.reinit();
    }
}

impl AsyncMember for Board<'_, Store<'_>> {
    async fn read(&mut self, sector: u64, blocks: &mut [Block]) -> Result<(), MemberFault> {
        if !self.power.get() {
            return Err(MemberFault);
        }
        let r = AsyncMember::read(&mut self.inner, sector, blocks).await;
        let powered = self.inner.flash_mut().flash.powered();
        self.after(powered, r)
    }
    async fn write(&mut self, sector: u64, blocks: &[Block]) -> Result<(), MemberFault> {
        if !self.power.get() {
            return Err(MemberFault);
        }
        let r = AsyncMember::write(&mut self.inner, sector, blocks).await;
        let powered = self.inner.flash_mut().flash.powered();
        self.after(powered, r)
    }
    async fn sectors(&mut self) -> Result<u64, MemberFault> {
        AsyncMember::sectors(&mut self.inner).await
    }
    async fn refresh(&mut self) -> Result<bool, MemberFault> {
        if !self.power.get() {
            return Err(MemberFault);
        }
        let r = AsyncMember::refresh(&mut self.inner).await;
        let powered = self.inner.flash_mut().flash.powered();
        self.after(powered, r)
    }
    fn damaged(&self) -> bool {
        AsyncMember::damaged(&self.inner)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Sd(u32),
    Nor(u32),
}

/// What the workload had acknowledged when the power went, and the write in flight.
struct Acked {
    versions: Vec<u32>,
    in_flight: Option<(u64, u64, u32)>,
}

/// The workload on the async volume until the power goes (or to its end, closed).
fn workload(
    vol: &mut AsyncMirror<'_, Board<'_, SdMember<SdSim<'_>>>, Board<'_, Store<'_>>>,
    power: &Cell<bool>,
    seed: u64,
    acked: &mut Acked,
) {
    const WRITES: u32 = 24;
    let size = vol.sectors();
    let mut rng = Rng::new(seed);
    let mut now = 1_000_000_000u64;
    for version in 2..2 + WRITES {
        let sector = if rng.below(3) == 0 {
            rng.below(size)
        } else {
            rng.below(6) * 9
        };
        let len = if rng.below(4) == 0 {
            1 + rng.below(4)
        } else {
            1
        }
        .min(size - sector);
        acked.in_flight = Some((sector, len, version));
        let blocks: Vec<Block> = (0..len).map(|i| pattern(sector + i, version)).collect();
        let r = block_on(vol.write(sector, &blocks));
        if !power.get() {
            return;
        }
        r.unwrap_or_else(|e| panic!("write with the power on: {e:?}"));
        for s in sector..sector + len {
            acked.versions[s as usize] = version;
        }
        acked.in_flight = None;
        let step = version - 2;
        if step % 6 == 5 {
            now += 300_000_000;
            if block_on(vol.tick(now)).is_err() || !power.get() {
                return;
            }
        }
        if step == WRITES / 2 {
            vol.with_members(|sd, _| sd.inner.dev.remove());
        }
        if step == WRITES / 2 + 3 {
            vol.with_members(|sd, _| sd.inner.dev.insert());
            if block_on(vol.sd_inserted_begin()).is_err() || !power.get() {
                return;
            }
        }
        if step > WRITES / 2 + 3 && (block_on(vol.step(3)).is_err() || !power.get()) {
            return;
        }
    }
    loop {
        match block_on(vol.step(8)) {
            Ok(p) if p.busy && power.get() => {}
            _ => break,
        }
    }
    if power.get() {
        block_on(vol.clean()).unwrap_or_else(|e| panic!("clean with the power on: {e:?}"));
    }
}

/// One run: a copy of `chips`, the cut armed, the workload, the power back, the blocking
/// mount and the checks. Whether the cut was reached.
fn one(chips: &Chips, cut: Cut, seed: u64) -> bool {
    let mut chips = Chips {
        sd: chips.sd.clone(),
        nor: chips.nor.clone(),
        wear: chips.wear.clone(),
    };
    let power = Cell::new(true);
    let sd_sim = SdSim::new(&mut chips.sd, seed);
    sd_sim.set_faults(SdFaults {
        power_loss: match cut {
            Cut::Sd(n) => Countdown::after(n),
            Cut::Nor(_) => Countdown::OFF,
        },
        early_multi_block_ack: true,
        ..SdFaults::default()
    });
    let mut flash = NorSim::new(&mut chips.nor, &mut chips.wear, seed ^ 0x5A);
    if let Cut::Nor(n) = cut {
        flash.faults.power_loss = Countdown::after(n);
    }
    let store = block_on(Store::mount(BusyFlash::new(flash, 1)))
        .unwrap_or_else(|_| panic!("the flash mounts"));
    let sd = Board {
        inner: SdMember::new(sd_sim),
        power: &power,
    };
    let nor = Board {
        inner: store,
        power: &power,
    };
    let mut storage: MirrorStorage = MirrorStorage::new();
    let mut acked = Acked {
        versions: vec![1; 256],
        in_flight: None,
    };
    let (sd, nor) = match block_on(AsyncMirror::assemble(sd, nor, &mut storage, Options::MD)) {
        Ok(mut vol) => {
            acked.versions.truncate(vol.sectors() as usize);
            workload(&mut vol, &power, seed, &mut acked);
            vol.into_members()
        }
        Err(refused) => {
            assert!(
                !power.get(),
                "{cut:?}: mount with the power on: {:?}",
                refused.error
            );
            refused.driver
        }
    };
    if power.get() {
        return false;
    }

    // The power comes back: both chips, the card in its slot, the blocking binding.
    let sd_sim = sd.inner.dev;
    sd_sim.power_cycle();
    sd_sim.insert();
    let mut flash = nor.inner.into_inner().flash;
    flash.power_cycle();
    let nor = Nor::mount(flash).unwrap_or_else(|_| panic!("{cut:?} seed {seed}: NOR remount"));
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(SdMember::new(sd_sim), nor, &mut storage)
        .unwrap_or_else(|e| panic!("{cut:?} seed {seed}: remount: {:?}", e.error));
    let h = vol.health();
    assert!(
        !h.degraded,
        "{cut:?} seed {seed}: degraded after remount: {h:?}"
    );
    let size = vol.sectors();
    if acked.versions.len() < size as usize {
        // The cut fell in the first mount, before the workload knew the size.
        acked.versions.resize(size as usize, 1);
    }
    for s in 0..size {
        let mut b = [Block::new()];
        vol.read(&mut b, BlockIdx(s as u32))
            .unwrap_or_else(|e| panic!("{cut:?} seed {seed}: read {s}: {e:?}"));
        let old = pattern(s, acked.versions[s as usize]);
        let ok = b[0].contents == old.contents
            || matches!(acked.in_flight, Some((fs, len, v)) if (fs..fs + len).contains(&s)
                && SdSim::torn_may_read(&b[0], &old, &pattern(s, v)));
        assert!(
            ok,
            "{cut:?} seed {seed}: sector {s} lost acknowledged version {}",
            acked.versions[s as usize]
        );
    }
    vol.with_members(|sd, nor| {
        for s in 0..size {
            let mut a = [Block::new()];
            let mut b = [Block::new()];
            sd.read(DATA_OFFSET + s, &mut a).unwrap();
            nor.read(DATA_OFFSET + s, &mut b).unwrap();
            assert!(
                a[0].contents == b[0].contents,
                "{cut:?} seed {seed}: the members differ at sector {s}"
            );
        }
    });
    true
}

#[test]
fn async_volume_power_loss_sweep() {
    let chips = Chips::formatted();
    // Every sector at version 1 first, through the blocking binding, closed clean.
    let mut chips = chips;
    {
        let (sd, nor) = chips.blocking();
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = Mirror::open(sd, nor, &mut storage).unwrap();
        for s in 0..vol.sectors() {
            vol.write(&[pattern(s, 1)], BlockIdx(s as u32)).unwrap();
        }
        vol.close().unwrap();
    }
    let seeds = if cfg!(debug_assertions) { 1 } else { 4 };
    let (mut sd_points, mut nor_points) = (0, 0);
    for seed in 0..seeds {
        for n in 0.. {
            if !one(&chips, Cut::Sd(n), seed) {
                break;
            }
            sd_points += 1;
        }
        for n in 0.. {
            if !one(&chips, Cut::Nor(n), seed) {
                break;
            }
            nor_points += 1;
        }
    }
    println!("async binding: {sd_points} SD cut points, {nor_points} NOR cut points, 0 losses");
    assert!(
        sd_points > 50 && nor_points > 50,
        "{sd_points} / {nor_points}"
    );
}
