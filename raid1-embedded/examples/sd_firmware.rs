//! Firmware example: a product's firmware over a volume made at the factory, with embedded-sdmmc's
//! real SPI `SdCard` driver.
//!
//! The volume is not formatted here: the firmware builds without the `format` feature. The
//! host side of this example is the factory: `sd_firmware factory SD_IMAGE NOR_IMAGE` formats
//! the volume with `Mirror::format` (through the same card driver and emulated card), writes a
//! first version of every sector, closes it and saves the card's and the NOR flash's content.
//! run-qemu-examples.sh loads both images into the board's PSRAM (QEMU's generic loader), where
//! the emulated card ([`spi_sd`], an SD card in SPI mode at the wire level, standing in for the
//! hardware) and the simulated NOR flash find them. Run on the host without arguments, the
//! example makes the images in memory and then runs the firmware's scenario.
//!
//! The firmware opens the volume through `SdMember::sd_card(SdCard::new(spi, delay))`, checks
//! the factory's data, writes and reads back, lets the array go clean (`tick`), has the card
//! pulled (`sd_removed`) and written degraded, has it reinserted and recovered in bounded
//! steps (`sd_inserted_begin` + `step`) while a write is served, closes the volume, opens it
//! again and checks everything. It prints the RAM it needs: the size of the volume and its
//! storage and the stack high-water mark of each operation.
//!
//! Exit status: 0 on success; 10 + step number when a step fails; 3 on a HardFault; 101 on a
//! panic; 2 when the host factory cannot run.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[macro_use]
mod common;

use common::stack;
mod spi_sd;

use embedded_sdmmc::{Block, SdCard};
use raid1_embedded::nor::NorBlockStore;
use raid1_embedded::sim::NorSim;
use raid1_embedded::volume::{DATA_OFFSET, Health, Mirror, MirrorStorage, SdMember};
use spi_sd::{BLOCK, Delay, SpiCard, SpiSd};

/// Blocks of the emulated card (512 KiB, the smallest a version 2.0 CSD describes).
pub const CARD_BLOCKS: usize = 1024;
const SECTOR: usize = 4096;
const NOR_SECTORS: usize = 32;
const NOR_BLOCKS: usize = 200; // < (32 - 2) * 7 slots
/// Where run-qemu-examples.sh loads the card's image and the NOR flash's (the board's 16 MiB
/// PSRAM at 0x2100_0000, outside memory.x).
#[cfg(target_os = "none")]
const SD_IMAGE: usize = 0x2100_0000;
#[cfg(target_os = "none")]
const NOR_IMAGE: usize = 0x2108_0000;
/// The engine's clock at the first tick (any monotonic value).
const START_NS: u64 = 10_000_000_000;
/// Sync commands per recovery step.
const BUDGET: u32 = 4;

type Card<'c, 'm> = SdCard<SpiSd<'c, 'm>, Delay>;
type Nor<'a> = NorBlockStore<NorSim<'a, 4, SECTOR>, NOR_BLOCKS, NOR_SECTORS>;
type Vol<'b, 'c, 'm, 'a> = Mirror<'b, SdMember<Card<'c, 'm>>, Nor<'a>>;

/// The content of `sector` in its `version`.
fn pattern(sector: usize, version: u32, out: &mut Block) {
    let mut x = (sector as u32).wrapping_mul(0x9E37_79B9) ^ version.wrapping_mul(0x85EB_CA6B) | 1;
    for c in out.contents.chunks_mut(4) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        c.copy_from_slice(&x.to_le_bytes());
    }
}

/// Every sector reads back as the version the model holds, one sector at a time.
fn verify(vol: &Vol<'_, '_, '_, '_>, versions: &[u32]) -> bool {
    let mut got = [Block::new()];
    let mut want = Block::new();
    versions.iter().enumerate().all(|(s, &v)| {
        pattern(s, v, &mut want);
        vol.read_sectors(s as u64, &mut got).is_ok() && got[0].contents == want.contents
    })
}

/// The same, eight sectors per read (multi-block reads of the card).
fn verify_runs(vol: &Vol<'_, '_, '_, '_>, versions: &[u32]) -> bool {
    let mut got = [const {
        Block {
            contents: [0; BLOCK],
        }
    }; 8];
    let mut want = Block::new();
    versions.chunks(8).enumerate().all(|(run, vs)| {
        let at = run * 8;
        vol.read_sectors(at as u64, &mut got[..vs.len()]).is_ok()
            && vs.iter().zip(&got).enumerate().all(|(i, (&v, g))| {
                pattern(at + i, v, &mut want);
                g.contents == want.contents
            })
    })
}

fn write(vol: &Vol<'_, '_, '_, '_>, versions: &mut [u32], sector: usize, version: u32) -> bool {
    let mut b = [Block::new()];
    pattern(sector, version, &mut b[0]);
    let ok = vol.write_sectors(sector as u64, &b).is_ok();
    if ok {
        versions[sector] = version;
    }
    ok
}

/// The card's own content (read from its memory, not through the driver) holds the model's
/// data.
fn card_holds(vol: &Vol<'_, '_, '_, '_>, versions: &[u32]) -> bool {
    let mut want = Block::new();
    vol.with_members(|sd, _| {
        sd.dev.spi(|spi| {
            let mem = spi.0.memory();
            versions.iter().enumerate().all(|(s, &v)| {
                pattern(s, v, &mut want);
                mem[(DATA_OFFSET as usize + s) * BLOCK..][..BLOCK] == want.contents
            })
        })
    })
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

fn card_member<'c, 'm>(card: &'c mut SpiCard<'m>) -> SdMember<Card<'c, 'm>> {
    SdMember::sd_card(SdCard::new(SpiSd(card), Delay))
}

/// The firmware: the card and the NOR flash hold the factory's volume.
fn run(card: &mut SpiCard<'_>, nor_mem: &mut [u8], wear: &mut [u32]) -> i32 {
    let stack_base = stack::paint();

    // Step 1: open the factory's volume; every sector holds version 1.
    let Ok(nor) = Nor::mount(NorSim::new(nor_mem, wear, 2)) else {
        fail!(11, "step 1: NOR mount")
    };
    let mut storage: MirrorStorage<8> = MirrorStorage::new();
    // The volume's place: the mount builds the volume here, in this long-lived frame.
    let mut place = None;
    let part = stack::paint();
    let Ok(vol) = Mirror::open_in(&mut place, card_member(card), nor, &mut storage) else {
        fail!(11, "step 1: open")
    };
    let open_stack = stack::used(part);
    let sectors = vol.sectors() as usize;
    let mut versions = [1u32; NOR_BLOCKS];
    let versions = &mut versions[..sectors];
    show("opened", &vol.health());
    if sectors == 0 || vol.health().degraded || !verify_runs(vol, versions) {
        fail!(11, "step 1: the factory's volume is not there");
    }

    // Step 2: write every sector, read it back.
    let part = stack::paint();
    for s in 0..sectors {
        if !write(vol, versions, s, 2) {
            fail!(12, "step 2: write {} failed", s);
        }
    }
    let write_stack = stack::used(part);
    let part = stack::paint();
    if !verify(vol, versions) || vol.health().degraded {
        fail!(12, "step 2: verify");
    }
    let read_stack = stack::used(part);

    // Step 3: the array goes clean once idle.
    let mut now = START_NS;
    let part = stack::paint();
    if vol.tick(now).is_err() {
        fail!(13, "step 3: tick");
    }
    let tick_stack = stack::used(part);
    if !card_holds(vol, versions) {
        fail!(13, "step 3: the card does not hold the data");
    }

    // Step 4: the card is pulled; the volume runs on flash, degraded.
    vol.with_members(|sd, _| sd.dev.spi(|spi| spi.0.remove()));
    let part = stack::paint();
    if vol.sd_removed().is_err() {
        fail!(14, "step 4: sd_removed");
    }
    let removal_stack = stack::used(part);
    for s in [5usize, 6, 7, 90, 91] {
        if !write(vol, versions, s, 3) {
            fail!(14, "step 4: degraded write {} failed", s);
        }
    }
    let h = vol.health();
    show("card pulled", &h);
    if !h.degraded || !verify(vol, versions) {
        fail!(14, "step 4: not degraded or data wrong");
    }

    // Step 5: the card is reinserted; its dirty chunks are copied back in bounded steps, and a
    // write is served in between.
    vol.with_members(|sd, _| sd.dev.spi(|spi| spi.0.insert()));
    let part = stack::paint();
    if vol.sd_inserted_begin().is_err() {
        fail!(15, "step 5: sd_inserted_begin");
    }
    let mut steps = 0u32;
    loop {
        let Ok(p) = vol.step(BUDGET) else {
            fail!(15, "step 5: step {} failed", steps)
        };
        steps += 1;
        if !p.busy {
            break;
        }
        if steps == 2 && !write(vol, versions, 6, 4) {
            fail!(15, "step 5: write during the recovery failed");
        }
        if p.commands == 0 {
            now += 1_000_000;
            if vol.tick(now).is_err() {
                fail!(15, "step 5: tick");
            }
        }
        if steps > 10_000 {
            fail!(15, "step 5: the recovery does not end");
        }
    }
    let recovery_stack = stack::used(part);
    let h = vol.health();
    show("card reinserted", &h);
    if h.degraded || h.synced_sectors == 0 || h.synced_sectors > 2 * 8 {
        fail!(15, "step 5: bitmap recovery wrong");
    }
    if !verify(vol, versions) || !card_holds(vol, versions) {
        fail!(15, "step 5: data wrong after the recovery");
    }

    // Step 6: close (the superblocks say clean), open again, check everything.
    let part = stack::paint();
    let Some(Ok((sd, nor))) = Mirror::close_in(&mut place) else {
        fail!(16, "step 6: close")
    };
    let close_stack = stack::used(part);
    let mut storage: MirrorStorage<8> = MirrorStorage::new();
    let Ok(vol) = Mirror::open_in(&mut place, sd, nor, &mut storage) else {
        fail!(16, "step 6: open after close")
    };
    let h = vol.health();
    show("reopened", &h);
    if h.degraded || h.synced_sectors != 0 || !verify_runs(vol, versions) {
        fail!(16, "step 6: data or state wrong after close and open");
    }
    let (commands, read, written) = vol.with_members(|sd, _| {
        sd.dev
            .spi(|spi| (spi.0.commands, spi.0.blocks_read, spi.0.blocks_written))
    });
    if !matches!(Mirror::close_in(&mut place), Some(Ok(_))) {
        fail!(16, "step 6: second close");
    }

    let whole = stack::used(stack_base);
    say!(
        "card: {} commands, {} blocks read, {} blocks written",
        commands,
        read,
        written
    );
    say!(
        "sizes: Mirror {} B (NorBlockStore {} B, SdCard driver {} B of it), MirrorStorage<8> {} B",
        core::mem::size_of::<Vol<'_, '_, '_, '_>>(),
        core::mem::size_of::<Nor<'_>>(),
        core::mem::size_of::<Card<'_, '_>>(),
        core::mem::size_of::<MirrorStorage<8>>()
    );
    say!(
        "stack by operation: open {} B, write {} B, read {} B, tick {} B, removal {} B, reinsertion with stepped recovery {} B, close {} B; whole firmware {} B",
        open_stack,
        write_stack,
        read_stack,
        tick_stack,
        removal_stack,
        recovery_stack,
        close_stack,
        whole
    );
    say!("sd_firmware: all steps passed");
    0
}

#[cfg(target_os = "none")]
#[cortex_m_rt::entry]
fn main() -> ! {
    const CARD_BYTES: usize = CARD_BLOCKS * BLOCK;
    // SAFETY: the PSRAM regions at SD_IMAGE and NOR_IMAGE lie outside memory.x, so nothing
    // else uses them; this is their only borrow.
    let (sd_mem, nor_mem) = unsafe {
        (
            core::slice::from_raw_parts_mut(SD_IMAGE as *mut u8, CARD_BYTES),
            core::slice::from_raw_parts_mut(NOR_IMAGE as *mut u8, SECTOR * NOR_SECTORS),
        )
    };
    let wear: &mut [u32] = storage!(u32, NOR_SECTORS, 0);
    let card =
        cortex_m::singleton!(: SpiCard<'static> = SpiCard::new(sd_mem)).expect("card taken once");
    common::platform::exit(run(card, nor_mem, wear))
}

/// The factory: a new volume on a blank card and a blank NOR flash, every sector written in
/// version 1, closed clean.
#[cfg(all(not(target_os = "none"), feature = "format"))]
fn factory(sd_mem: &mut [u8], nor_mem: &mut [u8]) -> Result<(), &'static str> {
    use raid1_embedded::volume::VolumeIdentity;
    const ID: VolumeIdentity = VolumeIdentity {
        uuid: *b"raid1-sd-factory",
        name: "fw",
        ctime: 1_764_800_000,
    };
    let mut wear = [0u32; NOR_SECTORS];
    let mut card = SpiCard::new(sd_mem);
    let nor = Nor::mount(NorSim::new(nor_mem, &mut wear, 1)).map_err(|_| "NOR mount")?;
    let mut storage: MirrorStorage<8> = MirrorStorage::new();
    let (sd, nor) =
        Mirror::format(card_member(&mut card), nor, &mut storage, ID).map_err(|_| "format")?;
    let mut storage: MirrorStorage<8> = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).map_err(|_| "open")?;
    let mut versions = vec![0; vol.sectors() as usize];
    for s in 0..versions.len() {
        if !write(&vol, &mut versions, s, 1) {
            return Err("write");
        }
    }
    vol.close().map(drop).map_err(|_| "close")
}

#[cfg(all(not(target_os = "none"), not(feature = "format")))]
fn main() {
    let _ = (run, SpiCard::new);
    eprintln!("sd_firmware: the host side is the factory, which needs the format feature");
    std::process::exit(2);
}

#[cfg(all(not(target_os = "none"), feature = "format"))]
fn main() {
    let mut sd_mem = vec![0u8; CARD_BLOCKS * BLOCK];
    let mut nor_mem = vec![0xFFu8; SECTOR * NOR_SECTORS];
    if let Err(e) = factory(&mut sd_mem, &mut nor_mem) {
        eprintln!("factory: {e}");
        std::process::exit(2);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => {
            let mut wear = [0u32; NOR_SECTORS];
            let mut card = SpiCard::new(&mut sd_mem);
            std::process::exit(run(&mut card, &mut nor_mem, &mut wear))
        }
        [cmd, sd, nor] if cmd == "factory" => {
            if let Err(e) = std::fs::write(sd, &sd_mem).and_then(|()| std::fs::write(nor, &nor_mem))
            {
                eprintln!("factory: {e}");
                std::process::exit(2);
            }
        }
        _ => {
            eprintln!("usage: sd_firmware [factory SD_IMAGE NOR_IMAGE]");
            std::process::exit(2);
        }
    }
}
