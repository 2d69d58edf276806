//! Firmware example: a mirrored SD card + SPI NOR flash volume, both simulated in RAM.
//!
//! It formats the mirror, writes, pulls the SD card (the volume keeps running on flash and
//! reports itself degraded), writes more, reinserts the card (only the bitmap-dirty chunks are
//! copied back), cuts the power in the middle of a write and remounts (nothing acknowledged is
//! lost), replaces the card with a new one (full recovery), and verifies the data each time.
//!
//! Exit status: 0 on success; 10 + step number when a step fails; 3 on a HardFault; 101 on a
//! panic.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[macro_use]
mod common;

use common::stack;

use embedded_sdmmc::{Block, BlockDevice, BlockIdx};
use raid1_embedded::nor::NorBlockStore;
use raid1_embedded::sim::{Countdown, NorSim, Rng, SdSim};
use raid1_embedded::volume::{Health, Mirror, MirrorStorage, SdMember, VolumeIdentity};

const SECTOR: usize = 4096;
const NOR_SECTORS: usize = 32;
const NOR_BLOCKS: usize = 200; // < (32 - 2) * 7 slots
const SD_BLOCKS: usize = 256;
const ID: VolumeIdentity = VolumeIdentity {
    uuid: *b"raid1-emb-qemu!!",
    name: "fw",
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

/// Every sector reads back as the version the model holds.
fn verify(vol: &Vol<'_, '_>, versions: &[u32]) -> bool {
    let mut got = [Block::new()];
    let mut want = Block::new();
    for (s, &v) in versions.iter().enumerate() {
        if vol.read(&mut got, BlockIdx(s as u32)).is_err() {
            return false;
        }
        pattern(s as u64, v, &mut want);
        if got[0].contents != want.contents {
            return false;
        }
    }
    true
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

fn show(what: &str, h: &Health) {
    say!(
        "{}: degraded={} events={} dirty_chunks={} synced_sectors={}",
        what,
        h.degraded,
        h.events,
        h.dirty_chunks,
        h.synced_sectors
    );
}

fn run() -> i32 {
    let sd_mem: &mut [Block] = storage!(Block, SD_BLOCKS, const { Block { contents: [0; 512] } });
    let nor_mem: &mut [u8] = storage!(u8, SECTOR * NOR_SECTORS, 0xFF);
    let wear: &mut [u32] = storage!(u32, NOR_SECTORS, 0);
    let stack_base = stack::paint();
    let mut ops_stack = 0;

    // Step 1: format and mount.
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
    show("formatted", &vol.health());
    // From here to the end of step 4, measure the stack the volume's operations use (reads,
    // writes, failure handling, bitmap recovery) below this frame.
    let ops_base = stack::paint();

    // Step 2: mirror a full pass of writes.
    let part = stack::paint();
    for s in 0..sectors {
        if !write(&vol, versions, s, 1) {
            fail!(12, "step 2: write {} failed", s);
        }
    }
    let write_stack = stack::used(part);
    let part = stack::paint();
    if !verify(&vol, versions) || vol.health().degraded {
        fail!(12, "step 2: verify");
    }
    let read_stack = stack::used(part);
    let _ = vol.tick(10_000_000_000);

    // Step 3: pull the card; the volume runs on flash, degraded.
    vol.with_members(|sd, _| sd.dev.remove());
    for s in [5usize, 6, 7, 90, 91] {
        if !write(&vol, versions, s, 2) {
            fail!(13, "step 3: degraded write {} failed", s);
        }
    }
    let h = vol.health();
    show("card pulled", &h);
    if !h.degraded || !verify(&vol, versions) {
        fail!(13, "step 3: not degraded or data wrong");
    }

    // Step 4: reinsert; only dirty chunks are copied.
    vol.with_members(|sd, _| sd.dev.insert());
    let part = stack::paint();
    let recovered = vol.sd_inserted();
    let recovery_stack = stack::used(part);
    if recovered.is_err() {
        fail!(14, "step 4: recovery failed");
    }
    let h = vol.health();
    ops_stack = ops_stack.max(stack::used(ops_base));
    show("card reinserted", &h);
    if h.degraded || h.synced_sectors == 0 || h.synced_sectors > 2 * 8 || !verify(&vol, versions) {
        fail!(14, "step 4: bitmap recovery wrong");
    }

    // Step 5: cut the power (the NOR flash dies in the middle of a program), remount.
    vol.with_members(|_, nor| nor.flash_mut().faults.power_loss = Countdown::after(7));
    let mut version = 3;
    for s in 20..60 {
        if !write(&vol, versions, s, version)
            || !vol.with_members(|_, nor| nor.flash_mut().powered())
        {
            // Not acknowledged (or the power is gone): the write may land or not.
            break;
        }
        version += 1;
    }
    let in_flight = (20..60)
        .find(|&s| versions[s] != version && versions[s] < 3)
        .unwrap_or(usize::MAX);
    let (sd, nor) = vol.into_members();
    let mut flash = nor.into_inner();
    flash.power_cycle();
    let Ok(nor) = Nor::mount(flash) else {
        fail!(15, "step 5: NOR remount")
    };
    let mut storage: MirrorStorage<8> = MirrorStorage::new();
    let Ok(vol) = Mirror::open(sd, nor, &mut storage) else {
        fail!(15, "step 5: volume remount")
    };
    show("after power loss", &vol.health());
    // The write in flight may read old or new; adopt what is there, then check everything.
    if in_flight < sectors {
        let mut b = [Block::new()];
        let mut want = Block::new();
        pattern(in_flight as u64, version, &mut want);
        if vol.read(&mut b, BlockIdx(in_flight as u32)).is_ok() && b[0].contents == want.contents {
            versions[in_flight] = version;
        }
    }
    if !verify(&vol, versions) {
        fail!(15, "step 5: acknowledged data lost");
    }

    // Step 6: a new, blank card replaces the old one: full recovery.
    vol.with_members(|sd, _| sd.dev.replace_with_new_card());
    if vol.sd_removed().is_err() || vol.sd_inserted().is_err() {
        fail!(16, "step 6: replacement failed");
    }
    let h = vol.health();
    show("card replaced", &h);
    if h.degraded || (h.synced_sectors as usize) < sectors || !verify(&vol, versions) {
        fail!(16, "step 6: full recovery wrong");
    }
    let direct_ok = vol.with_members(|sd, _| {
        let mut got = [Block::new()];
        let mut want = Block::new();
        versions.iter().enumerate().all(|(s, &v)| {
            pattern(s as u64, v, &mut want);
            sd.dev
                .read(
                    &mut got,
                    BlockIdx((raid1_embedded::volume::DATA_OFFSET as usize + s) as u32),
                )
                .is_ok()
                && got[0].contents == want.contents
        })
    });
    if !direct_ok {
        fail!(16, "step 6: card content differs");
    }

    let used = stack::used(stack_base);
    say!(
        "sizes: Mirror {} B (NorBlockStore {} B of it), MirrorStorage<8> {} B; stack: whole example {} B, volume operations {} B",
        core::mem::size_of::<Vol<'_, '_>>(),
        core::mem::size_of::<Nor<'_>>(),
        core::mem::size_of::<MirrorStorage<8>>(),
        used,
        ops_stack
    );
    say!(
        "stack by operation: write {} B, read {} B, reinsertion with recovery {} B",
        write_stack,
        read_stack,
        recovery_stack
    );
    say!("mirror_failover: all steps passed");
    0
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
