//! Firmware example: a card recovery that yields to the main loop, which feeds a watchdog.
//!
//! A full recovery (a new, blank card) copies every sector of the volume. Run inside one call
//! it takes as long as the copy; here the main loop calls `Mirror::step` with a small budget,
//! feeds the watchdog between steps and serves a write now and then, so that no stretch
//! without a feed is longer than one step. On the target the watchdog is the CMSDK APB
//! watchdog of the MPS2 board (its interrupt is the NMI, which ends the run with status 4); its
//! counter also measures, in its 25 MHz clock, how long the longest step took and how long
//! the same recovery takes in one blocking call.
//!
//! Exit status: 0 on success; 10 + step number when a step fails; 4 when the watchdog bit;
//! 3 on a HardFault; 101 on a panic.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[macro_use]
mod common;

use embedded_sdmmc::{Block, BlockDevice, BlockIdx};
use raid1_embedded::nor::NorBlockStore;
use raid1_embedded::sim::{NorSim, Rng, SdSim};
use raid1_embedded::volume::{DATA_OFFSET, Mirror, MirrorStorage, SdMember, VolumeIdentity};

const SECTOR: usize = 4096;
const NOR_SECTORS: usize = 32;
const NOR_BLOCKS: usize = 200; // < (32 - 2) * 7 slots
const SD_BLOCKS: usize = 256;
/// Sync commands per step: each moves one sector (the default sync window).
const BUDGET: u32 = 8;
/// The watchdog's period: 20 ms of its 25 MHz clock.
const WATCHDOG_TICKS: u32 = 500_000;
const ID: VolumeIdentity = VolumeIdentity {
    uuid: *b"raid1-emb-wdog!!",
    name: "wd",
    ctime: 1_763_000_000,
};

type Nor<'a> = NorBlockStore<NorSim<'a, 4, SECTOR>, NOR_BLOCKS, NOR_SECTORS>;
type Vol<'b, 'a> = Mirror<'b, SdMember<SdSim<'a>>, Nor<'a>>;

fn pattern(sector: u64, version: u32, out: &mut Block) {
    let mut rng = Rng::new(sector << 32 | u64::from(version));
    for c in out.contents.chunks_mut(8) {
        c.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
}

fn write(vol: &Vol<'_, '_>, versions: &mut [u32], sector: usize, version: u32) -> bool {
    let mut b = [Block::new()];
    pattern(sector as u64, version, &mut b[0]);
    let ok = vol.write(&b, BlockIdx(sector as u32)).is_ok();
    if ok {
        versions[sector] = version;
    }
    ok
}

/// The volume, and the card itself, hold every sector's version.
fn verify(vol: &Vol<'_, '_>, versions: &[u32]) -> bool {
    let mut got = [Block::new()];
    let mut want = Block::new();
    for (s, &v) in versions.iter().enumerate() {
        pattern(s as u64, v, &mut want);
        if vol.read(&mut got, BlockIdx(s as u32)).is_err() || got[0].contents != want.contents {
            return false;
        }
        let on_card = vol.with_members(|sd, _| {
            sd.dev
                .read(&mut got, BlockIdx((DATA_OFFSET as usize + s) as u32))
                .is_ok()
        });
        if !on_card || got[0].contents != want.contents {
            return false;
        }
    }
    true
}

fn run() -> i32 {
    let sd_mem: &mut [Block] = storage!(Block, SD_BLOCKS, const { Block { contents: [0; 512] } });
    let nor_mem: &mut [u8] = storage!(u8, SECTOR * NOR_SECTORS, 0xFF);
    let wear: &mut [u32] = storage!(u32, NOR_SECTORS, 0);

    // Step 1: format, mount, fill the volume.
    let sd = SdMember::new(SdSim::new(sd_mem, 1));
    let Ok(nor) = Nor::mount(NorSim::new(nor_mem, wear, 2)) else {
        fail!(11, "step 1: NOR mount")
    };
    let mut storage: MirrorStorage<8> = MirrorStorage::new();
    let Ok((sd, nor)) = Mirror::format(sd, nor, &mut storage, ID) else {
        fail!(11, "step 1: format")
    };
    let mut storage: MirrorStorage<8> = MirrorStorage::new();
    let Ok(vol) = Mirror::open(sd, nor, &mut storage) else {
        fail!(11, "step 1: open")
    };
    let sectors = vol.sectors() as usize;
    let mut versions = [0u32; NOR_BLOCKS];
    let versions = &mut versions[..sectors];
    for s in 0..sectors {
        if !write(&vol, versions, s, 1) {
            fail!(11, "step 1: write {}", s);
        }
    }

    // Step 2: the same full recovery in one blocking call, timed (the watchdog counts but
    // does not bite).
    vol.with_members(|sd, _| sd.dev.replace_with_new_card());
    if vol.sd_removed().is_err() {
        fail!(12, "step 2: removal");
    }
    watchdog::start(u32::MAX, false);
    let blocking = vol.sd_inserted();
    let blocking_ticks = watchdog::elapsed(u32::MAX);
    watchdog::stop();
    if blocking.is_err() || vol.health().degraded || !verify(&vol, versions) {
        fail!(12, "step 2: blocking recovery");
    }
    say!(
        "blocking recovery of {} sectors: {} us without a feed",
        sectors,
        blocking_ticks / 25
    );

    // Step 3: a new card again; now the main loop steps the recovery, feeds the watchdog
    // between steps, and writes now and then.
    vol.with_members(|sd, _| sd.dev.replace_with_new_card());
    if vol.sd_removed().is_err() || vol.sd_inserted_begin().is_err() {
        fail!(13, "step 3: start of the recovery");
    }
    watchdog::start(WATCHDOG_TICKS, true);
    let (mut steps, mut longest, mut version) = (0u32, 0u32, 2u32);
    let mut rng = Rng::new(9);
    loop {
        let progress = vol.step(BUDGET);
        longest = longest.max(watchdog::elapsed(WATCHDOG_TICKS));
        watchdog::feed();
        let Ok(p) = progress else {
            fail!(13, "step 3: step {} failed", steps);
        };
        if p.commands > BUDGET {
            fail!(13, "step 3: {} commands in one step", p.commands);
        }
        if !p.busy {
            break;
        }
        steps += 1;
        if steps.is_multiple_of(16) {
            say!("recovery {}/{} sectors", p.done, p.total);
        }
        if steps.is_multiple_of(4) {
            let s = rng.below(sectors as u64) as usize;
            if !write(&vol, versions, s, version) {
                fail!(13, "step 3: write during the recovery");
            }
            version += 1;
            longest = longest.max(watchdog::elapsed(WATCHDOG_TICKS));
            watchdog::feed();
        }
        if steps > 100_000 {
            fail!(13, "step 3: the recovery does not end");
        }
    }
    watchdog::stop();
    let h = vol.health();
    if h.degraded || !verify(&vol, versions) {
        fail!(13, "step 3: data wrong after the stepped recovery");
    }
    say!(
        "stepped recovery: {} steps of at most {} sync commands, longest stretch without a feed {} us, watchdog period {} us",
        steps,
        BUDGET,
        longest / 25,
        WATCHDOG_TICKS / 25
    );
    if longest >= WATCHDOG_TICKS / 2 {
        fail!(13, "step 3: a step took more than half the watchdog period");
    }

    // Step 4: close marks the volume clean; a remount copies nothing.
    let Ok((sd, nor)) = vol.close() else {
        fail!(14, "step 4: close")
    };
    let mut storage: MirrorStorage<8> = MirrorStorage::new();
    let Ok(vol) = Mirror::open(sd, nor, &mut storage) else {
        fail!(14, "step 4: remount")
    };
    if vol.health().synced_sectors != 0 || !verify(&vol, versions) {
        fail!(14, "step 4: not clean after close");
    }
    say!("recovery_watchdog: all steps passed");
    0
}

#[cfg(target_os = "none")]
mod watchdog {
    //! The MPS2 board's CMSDK APB watchdog (at 0x4000_8000, 25 MHz, interrupt on the NMI).
    const BASE: usize = 0x4000_8000;
    const LOAD: usize = BASE;
    const VALUE: usize = BASE + 0x04;
    const CONTROL: usize = BASE + 0x08;
    const INTCLR: usize = BASE + 0x0C;
    const LOCK: usize = BASE + 0xC00;
    const UNLOCK: u32 = 0x1ACC_E551;

    fn write(reg: usize, v: u32) {
        // SAFETY: a register of the watchdog peripheral, which only this module touches.
        unsafe { core::ptr::write_volatile(reg as *mut u32, v) }
    }

    fn read(reg: usize) -> u32 {
        // SAFETY: as above.
        unsafe { core::ptr::read_volatile(reg as *const u32) }
    }

    /// Count down from `ticks`; with `bite`, an expiry raises the NMI.
    pub fn start(ticks: u32, bite: bool) {
        write(LOCK, UNLOCK);
        write(LOAD, ticks);
        write(CONTROL, u32::from(bite));
        write(LOCK, 0);
    }

    /// Ticks since the last start or feed.
    pub fn elapsed(ticks: u32) -> u32 {
        ticks - read(VALUE)
    }

    pub fn feed() {
        write(LOCK, UNLOCK);
        write(INTCLR, 1);
        write(LOCK, 0);
    }

    pub fn stop() {
        write(LOCK, UNLOCK);
        write(CONTROL, 0);
        write(LOCK, 0);
    }

    #[cortex_m_rt::exception]
    unsafe fn NonMaskableInt() {
        defmt::error!("the watchdog bit");
        crate::common::platform::exit(4)
    }
}

#[cfg(not(target_os = "none"))]
mod watchdog {
    //! On the host there is no watchdog: nothing is timed.
    pub fn start(_: u32, _: bool) {}
    pub fn elapsed(_: u32) -> u32 {
        0
    }
    pub fn feed() {}
    pub fn stop() {}
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
