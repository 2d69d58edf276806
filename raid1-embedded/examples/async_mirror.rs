//! Firmware example on Embassy: the mirror as one async task, a heartbeat as another, both
//! spawned on embassy-executor's thread-mode executor (its Cortex-M flavour on the target, its
//! std flavour on the host).
//!
//! The SD card is an async member whose every command waits (returns `Pending`) a few polls,
//! as a DMA transfer would; the NOR member is the async NOR store over embedded-storage-async,
//! on a simulated flash whose every program and erase waits a few polls, as a driver that
//! awaits the chip's busy flag. While the mirror task waits for the card or the flash, and
//! between the bounded steps of a full recovery, the heartbeat task runs. The example checks
//! that it ran through every wait of the flash during a single write and throughout the
//! recovery, and that the data is right on the volume and on the card.
//!
//! Exit status: 0 on success; 10 + step number when a step fails; 3 on a HardFault; 101 on a
//! panic.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[macro_use]
mod common;

use core::sync::atomic::{AtomicU32, Ordering};
use embedded_sdmmc::{Block, BlockDevice, BlockIdx};
use raid1_embedded::nor::{NorBlockStore, asynch};
use raid1_embedded::sim::{BusyFlash, NorSim, Rng, SdSim, Wait};
use raid1_embedded::volume::asynch::{AsyncMember, AsyncMirror};
use raid1_embedded::volume::{
    DATA_OFFSET, Member, MemberFault, Mirror, MirrorStorage, Options, SdMember, VolumeIdentity,
};

const SECTOR: usize = 4096;
const NOR_SECTORS: usize = 32;
const NOR_BLOCKS: usize = 200; // < (32 - 2) * 7 slots
const SD_BLOCKS: usize = 256;
/// Polls each card command waits, like a transfer in flight.
const CARD_WAIT: u32 = 3;
/// Polls each program and erase of the flash waits, like a chip that is busy.
const NOR_BUSY: u32 = 2;
const ID: VolumeIdentity = VolumeIdentity {
    uuid: *b"raid1-emb-async!",
    name: "as",
    ctime: 1_763_000_000,
};

type Nor<'a> = NorBlockStore<NorSim<'a, 4, SECTOR>, NOR_BLOCKS, NOR_SECTORS>;
/// The same store over the async flash traits.
type AsyncNor<'a> =
    asynch::NorBlockStore<BusyFlash<NorSim<'a, 4, SECTOR>>, NOR_BLOCKS, NOR_SECTORS>;

/// Give the other tasks a turn.
fn yield_now() -> Wait {
    Wait(1)
}

/// The simulated card behind an async interface: every command waits `CARD_WAIT` polls.
struct AsyncCard<'a>(SdMember<SdSim<'a>>);

impl AsyncMember for AsyncCard<'_> {
    async fn read(&mut self, sector: u64, blocks: &mut [Block]) -> Result<(), MemberFault> {
        Wait(CARD_WAIT).await;
        self.0.read(sector, blocks)
    }

    async fn write(&mut self, sector: u64, blocks: &[Block]) -> Result<(), MemberFault> {
        Wait(CARD_WAIT).await;
        self.0.write(sector, blocks)
    }

    async fn sectors(&mut self) -> Result<u64, MemberFault> {
        self.0.sectors()
    }
}

/// Times the heartbeat task has run.
static BEATS: AtomicU32 = AtomicU32::new(0);

fn beats() -> u32 {
    BEATS.load(Ordering::Relaxed)
}

fn pattern(sector: u64, version: u32, out: &mut Block) {
    let mut rng = Rng::new(sector << 32 | u64::from(version));
    for c in out.contents.chunks_mut(8) {
        c.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
}

type Vol<'b, 'a> = AsyncMirror<'b, AsyncCard<'a>, AsyncNor<'a>>;

async fn verify(vol: &mut Vol<'_, '_>, versions: &[u32]) -> bool {
    let mut got = [Block::new()];
    let mut want = Block::new();
    for (s, &v) in versions.iter().enumerate() {
        pattern(s as u64, v, &mut want);
        if vol.read(s as u64, &mut got).await.is_err() || got[0].contents != want.contents {
            return false;
        }
        let card = vol.with_members(|sd, _| {
            sd.0.dev
                .read(&mut got, BlockIdx((DATA_OFFSET as usize + s) as u32))
                .is_ok()
        });
        if !card || got[0].contents != want.contents {
            return false;
        }
    }
    true
}

/// The mirror's task: runs the scenario, then ends the program with its exit status.
#[embassy_executor::task]
async fn mirror_task(sd: SdMember<SdSim<'static>>, nor: Nor<'static>) {
    let work = mirror_work(sd, nor);
    // The task's RAM: its future holds the volume, its storage and every await's state.
    say!(
        "async_mirror: the mirror task's future is {} B",
        core::mem::size_of_val(&work)
    );
    let code = work.await;
    common::platform::exit(code)
}

async fn mirror_work<'a>(sd: SdMember<SdSim<'a>>, nor: Nor<'a>) -> i32 {
    // Step 1: format (blocking, as at the factory), then mount the flash through the async
    // NOR store and the volume through the async binding.
    let mut storage: MirrorStorage<8> = MirrorStorage::new();
    let Ok((sd, nor)) = Mirror::format(sd, nor, &mut storage, ID) else {
        fail!(11, "step 1: format")
    };
    let Ok(nor) = AsyncNor::mount(BusyFlash::new(nor.into_inner(), NOR_BUSY)).await else {
        fail!(11, "step 1: async NOR mount")
    };
    // The volume is built where it stays (`assemble_in`): no second copy of it in the
    // mount's future or in this one.
    let mut storage: MirrorStorage<8> = MirrorStorage::new();
    let mut place = None;
    let vol = AsyncMirror::assemble_in(&mut place, AsyncCard(sd), nor, &mut storage, Options::MD);
    let Ok(vol) = vol.await else {
        fail!(11, "step 1: assemble")
    };
    if vol.step(u32::MAX).await.is_err() {
        fail!(11, "step 1: resync");
    }
    let sectors = vol.sectors() as usize;
    let mut versions = [0u32; NOR_BLOCKS];
    let versions = &mut versions[..sectors];

    // Step 2: one write lets the heartbeat run while the card and the flash work: once for
    // every poll the flash is busy, at least.
    let before = beats();
    let nor_waits = |vol: &mut Vol<'_, '_>| vol.with_members(|_, nor| nor.flash_mut().waits);
    let waits_before = nor_waits(vol);
    let mut b = [Block::new()];
    pattern(0, 1, &mut b[0]);
    if vol.write(0, &b).await.is_err() {
        fail!(12, "step 2: write");
    }
    versions[0] = 1;
    let during_write = beats() - before;
    let flash_busy = nor_waits(vol) - waits_before;
    if flash_busy == 0 || during_write < flash_busy {
        fail!(
            12,
            "step 2: the heartbeat ran {} times during a write whose flash was busy {} polls",
            during_write,
            flash_busy
        );
    }
    for (s, v) in versions.iter_mut().enumerate().skip(1) {
        pattern(s as u64, 1, &mut b[0]);
        if vol.write(s as u64, &b).await.is_err() {
            fail!(12, "step 2: write {}", s);
        }
        *v = 1;
    }

    // Step 3: a new card; the recovery runs in steps, with a yield between them.
    vol.with_members(|sd, _| sd.0.dev.replace_with_new_card());
    if vol.sd_removed().await.is_err() || vol.sd_inserted_begin().await.is_err() {
        fail!(13, "step 3: start of the recovery");
    }
    let before = beats();
    let mut steps = 0u32;
    loop {
        let Ok(p) = vol.step(8).await else {
            fail!(13, "step 3: step failed")
        };
        if !p.busy {
            break;
        }
        steps += 1;
        yield_now().await;
        if steps > 100_000 {
            fail!(13, "step 3: the recovery does not end");
        }
    }
    let during_recovery = beats() - before;
    if vol.degraded() || during_recovery < steps || !verify(vol, versions).await {
        fail!(13, "step 3: recovery wrong");
    }
    say!(
        "async recovery: {} sectors in {} steps; the heartbeat ran {} times meanwhile ({} during one write, whose flash was busy {} polls)",
        vol.synced_sectors(),
        steps,
        during_recovery,
        during_write,
        flash_busy
    );

    // Step 4: close.
    if !matches!(AsyncMirror::close_in(&mut place).await, Some(Ok(_))) {
        fail!(14, "step 4: close");
    }
    say!("async_mirror: all steps passed");
    0
}

/// Another task of the firmware: counts its turns.
#[embassy_executor::task]
async fn heartbeat() {
    loop {
        BEATS.fetch_add(1, Ordering::Relaxed);
        yield_now().await;
    }
}

fn run() -> ! {
    let sd_mem: &mut [Block] = storage!(Block, SD_BLOCKS, const { Block { contents: [0; 512] } });
    let nor_mem: &mut [u8] = storage!(u8, SECTOR * NOR_SECTORS, 0xFF);
    let wear: &mut [u32] = storage!(u32, NOR_SECTORS, 0);
    let sd = SdMember::new(SdSim::new(sd_mem, 1));
    let Ok(nor) = Nor::mount(NorSim::new(nor_mem, wear, 2)) else {
        common::platform::exit(11)
    };
    #[cfg(target_os = "none")]
    let executor =
        cortex_m::singleton!(: embassy_executor::Executor = embassy_executor::Executor::new())
            .expect("one executor");
    #[cfg(not(target_os = "none"))]
    let executor = Box::leak(Box::new(embassy_executor::Executor::new()));
    executor.run(|spawner| {
        if spawner.spawn(mirror_task(sd, nor)).is_err() || spawner.spawn(heartbeat()).is_err() {
            common::platform::exit(10)
        }
    })
}

#[cfg(target_os = "none")]
#[cortex_m_rt::entry]
fn main() -> ! {
    run()
}

#[cfg(not(target_os = "none"))]
fn main() {
    run()
}
