//! The mirrored volume on simulated members: format, mirror, lose the SD card, keep running
//! degraded on flash, reinsert the card and recover only the dirty chunks; md metadata on the
//! card as `mdadm --examine` reads it.

use embedded_sdmmc::{Block, BlockDevice, BlockIdx};
use raid1_embedded::nor::NorBlockStore;
use raid1_embedded::sim::{NorSim, Rng, SdSim};
use raid1_embedded::volume::MemberState;
use raid1_embedded::volume::{
    DATA_OFFSET, Mirror, MirrorStorage, SUPERBLOCK_SECTOR, SdMember, VolumeIdentity,
};

const SECTOR: usize = 4096;
const SECTORS: usize = 40;
const BLOCKS: usize = 256; // < (40 - 2) * 7
const SD_BLOCKS: usize = 512;

type Nor<'a> = NorBlockStore<NorSim<'a, 4, SECTOR>, BLOCKS, SECTORS>;

fn pattern(sector: u64, version: u32) -> Block {
    let mut b = Block::new();
    let mut rng = Rng::new(sector << 32 | u64::from(version));
    for c in b.contents.chunks_mut(8) {
        c.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    b
}

type Vol<'s, 'a> = Mirror<'s, SdMember<SdSim<'a>>, Nor<'a>>;

/// A volume formatted on these chips and opened on `storage`, every sector written (version
/// 1).
fn written<'s, 'a>(
    sd_mem: &'a mut [Block],
    nor_mem: &'a mut [u8],
    wear: &'a mut [u32],
    storage: &'s mut MirrorStorage,
) -> Vol<'s, 'a> {
    let sd = SdMember::new(SdSim::new(sd_mem, 1));
    let nor = Nor::mount(NorSim::new(nor_mem, wear, 2)).unwrap();
    let mut formatting: MirrorStorage = MirrorStorage::new();
    let (sd, nor) = Mirror::format(sd, nor, &mut formatting, ID).unwrap();
    let vol = Mirror::open(sd, nor, storage).unwrap();
    for s in 0..vol.sectors() {
        vol.write(&[pattern(s, 1)], BlockIdx(s as u32)).unwrap();
    }
    vol
}

/// A read-only loop device over an image file, detached on drop.
struct LoopDevice(String);

impl LoopDevice {
    fn attach(image: &std::path::Path) -> Self {
        let out = std::process::Command::new("losetup")
            .args(["--find", "--show", "--read-only"])
            .arg(image)
            .output()
            .expect("losetup runs");
        assert!(
            out.status.success(),
            "losetup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        LoopDevice(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .arg("--detach")
            .arg(&self.0)
            .status();
    }
}

const ID: VolumeIdentity = VolumeIdentity {
    uuid: *b"raid1-embedded!!",
    name: "emb",
    ctime: 1_700_000_000,
};

#[test]
fn mirror_degrade_and_bitmap_recovery() {
    let mut sd_mem = vec![Block::new(); SD_BLOCKS];
    let mut nor_mem = vec![0xFFu8; SECTOR * SECTORS];
    let mut wear = vec![0u32; SECTORS];
    let sd = SdMember::new(SdSim::new(&mut sd_mem, 1));
    let nor = Nor::mount(NorSim::new(&mut nor_mem, &mut wear, 2)).unwrap();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let (sd, nor) = Mirror::format(sd, nor, &mut storage, ID).unwrap();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    let size = vol.sectors();
    assert_eq!(size, BLOCKS as u64 - DATA_OFFSET);
    let h = vol.health();
    assert!(!h.degraded, "{h:?}");

    let mut version = vec![0u32; size as usize];
    for s in 0..size {
        version[s as usize] = 1;
        vol.write(&[pattern(s, 1)], BlockIdx(s as u32)).unwrap();
    }
    // Both members hold the data.
    vol.with_members(|sd, nor| {
        for s in 0..size {
            let mut b = [Block::new()];
            sd.dev
                .read(&mut b, BlockIdx((DATA_OFFSET + s) as u32))
                .unwrap();
            assert!(b[0].contents == pattern(s, 1).contents);
            nor.read_block((DATA_OFFSET + s) as u32, &mut b[0].contents)
                .unwrap();
            assert!(b[0].contents == pattern(s, 1).contents);
        }
    });
    vol.tick(10_000_000_000).unwrap();

    // Pull the card: writes and reads go on, on flash; the volume reports itself degraded.
    vol.with_members(|sd, _| sd.dev.remove());
    let touched = [3u64, 4, 100, 101];
    for &s in &touched {
        version[s as usize] = 2;
        vol.write(&[pattern(s, 2)], BlockIdx(s as u32)).unwrap();
    }
    let h = vol.health();
    assert!(h.degraded, "{h:?}");
    assert_eq!(h.sd, MemberState::Faulty);
    for s in 0..size {
        let mut b = [Block::new()];
        vol.read(&mut b, BlockIdx(s as u32)).unwrap();
        assert!(
            b[0].contents == pattern(s, version[s as usize]).contents,
            "sector {s} while degraded"
        );
    }
    assert!(h.dirty_chunks >= 1 && h.dirty_chunks <= 4, "{h:?}");

    // Reinsert: only the dirty chunks are copied.
    vol.with_members(|sd, _| sd.dev.insert());
    vol.sd_inserted().unwrap();
    let h = vol.health();
    assert!(!h.degraded, "{h:?}");
    assert!(
        h.synced_sectors > 0 && h.synced_sectors <= 4 * 8,
        "copied {} sectors",
        h.synced_sectors
    );
    vol.with_members(|sd, _| {
        for s in 0..size {
            let mut b = [Block::new()];
            sd.dev
                .read(&mut b, BlockIdx((DATA_OFFSET + s) as u32))
                .unwrap();
            assert!(
                b[0].contents == pattern(s, version[s as usize]).contents,
                "sector {s} on the card after recovery"
            );
        }
    });
    println!("after reinsertion: {h:?}");
    // The card as a Linux host sees it.
    let image = std::env::temp_dir().join(format!("raid1-embedded-sd-{}.img", std::process::id()));
    vol.with_members(|sd, _| {
        sd.dev.with_blocks(|blocks| {
            let bytes: Vec<u8> = blocks.iter().flat_map(|b| b.contents).collect();
            std::fs::write(&image, bytes).unwrap();
        })
    });
    let out = std::process::Command::new("mdadm")
        .arg("--examine")
        .arg(&image)
        .output()
        .expect("mdadm runs");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    // mdadm reads the internal bitmap of a block device only: attach the image to a loop device.
    let bitmap_text = {
        let loopdev = LoopDevice::attach(&image);
        let out = std::process::Command::new("mdadm")
            .arg("--examine-bitmap")
            .arg(&loopdev.0)
            .output()
            .expect("mdadm runs");
        assert!(out.status.success(), "mdadm --examine-bitmap failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    println!("{bitmap_text}");
    std::fs::remove_file(&image).unwrap();
    let events = text
        .lines()
        .find(|l| l.trim_start().starts_with("Events :"))
        .unwrap()
        .trim()
        .to_string();
    for want in [
        "Magic : 6d746962",
        "Version : 4",
        "Chunksize : 4 KB",
        "State : OK",
        events.as_str(),
    ] {
        assert!(
            bitmap_text.contains(want),
            "mdadm --examine-bitmap lacks {want:?}"
        );
    }
    assert!(
        out.status.success(),
        "mdadm --examine failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "Version : 1.2",
        "Raid Level : raid1",
        "Raid Devices : 2",
        "Data Offset : 24 sectors",
        "Internal Bitmap : 8 sectors from superblock",
        "Device Role : Active device 0",
        "Array State : AA",
    ] {
        assert!(text.contains(want), "mdadm --examine lacks {want:?}");
    }

    // Remount from the members' metadata: same content.
    let (sd, nor) = vol.into_members();
    let nor = Nor::mount(nor.into_inner()).unwrap();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    assert!(!vol.health().degraded, "{:?}", vol.health());
    for s in 0..size {
        let mut b = [Block::new()];
        vol.read(&mut b, BlockIdx(s as u32)).unwrap();
        assert!(
            b[0].contents == pattern(s, version[s as usize]).contents,
            "sector {s} after remount"
        );
    }
}

#[test]
fn raw_byte_access_through_embedded_io() {
    use embedded_io::{Read, Seek, SeekFrom, Write};
    let mut sd_mem = vec![Block::new(); SD_BLOCKS];
    let mut nor_mem = vec![0xFFu8; SECTOR * SECTORS];
    let mut wear = vec![0u32; SECTORS];
    let sd = SdMember::new(SdSim::new(&mut sd_mem, 1));
    let nor = Nor::mount(NorSim::new(&mut nor_mem, &mut wear, 2)).unwrap();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let (sd, nor) = Mirror::format(sd, nor, &mut storage, ID).unwrap();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let mut vol = Mirror::open(sd, nor, &mut storage).unwrap();
    let size = vol.sectors() * 512;

    // An unaligned write across two block boundaries.
    let data: Vec<u8> = (0..1500u32).map(|i| (i * 7 + 3) as u8).collect();
    assert_eq!(vol.seek(SeekFrom::Start(1000)).unwrap(), 1000);
    vol.write_all(&data).unwrap();
    assert_eq!(vol.seek(SeekFrom::Current(0)).unwrap(), 2500);
    let mut back = vec![0u8; 1600];
    vol.seek(SeekFrom::Start(950)).unwrap();
    vol.read_exact(&mut back).unwrap();
    assert!(
        back[..50].iter().all(|&b| b == 0),
        "bytes before the write untouched"
    );
    assert_eq!(&back[50..1550], &data[..]);
    assert!(
        back[1550..].iter().all(|&b| b == 0),
        "bytes after the write untouched"
    );

    // End of the volume: reads stop, writes beyond it fail.
    assert_eq!(vol.seek(SeekFrom::End(-4)).unwrap(), size - 4);
    let mut tail = [0u8; 16];
    assert_eq!(Read::read(&mut vol, &mut tail).unwrap(), 4);
    assert_eq!(Read::read(&mut vol, &mut tail).unwrap(), 0);
    assert!(Write::write(&mut vol, &[1, 2, 3]).is_err());
    assert!(vol.seek(SeekFrom::Current(-(size as i64) - 1)).is_err());
    // A request beyond the volume, even beyond what 32-bit sectors number, names its end
    // (the same with feature sector32, where the binding refuses it before the engine).
    let mut two = [Block::new(), Block::new()];
    assert_eq!(
        vol.read_sectors(1 << 32, &mut two),
        Err(raid1_embedded::volume::VolumeError::OutOfRange { end: (1 << 32) + 2 })
    );

    // Both members hold the bytes.
    vol.with_members(|sd, nor| {
        let mut a = [Block::new()];
        let mut b = [Block::new()];
        sd.dev
            .read(&mut a, BlockIdx((DATA_OFFSET + 2) as u32))
            .unwrap();
        nor.read_block((DATA_OFFSET + 2) as u32, &mut b[0].contents)
            .unwrap();
        assert!(a[0].contents == b[0].contents);
        assert_eq!(&a[0].contents[..452], &data[24..476]);
    });
}

#[test]
fn nor_member_fails_and_rejoins_from_the_bitmap() {
    use raid1_embedded::volume::NOR;
    let mut sd_mem = vec![Block::new(); SD_BLOCKS];
    let mut nor_mem = vec![0xFFu8; SECTOR * SECTORS];
    let mut wear = vec![0u32; SECTORS];
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = written(&mut sd_mem, &mut nor_mem, &mut wear, &mut storage);
    vol.tick(10_000_000_000).unwrap();
    // The flash stops programming: the engine fails the member and carries on with the card.
    vol.with_members(|_, nor| nor.flash_mut().faults.broken = true);
    let mut failures = 0;
    for s in [10u64, 11, 12, 13, 150] {
        vol.write(&[pattern(s, 2)], BlockIdx(s as u32)).unwrap();
        if vol.health().nor == MemberState::Faulty {
            failures += 1;
        }
    }
    let h = vol.health();
    assert!(
        failures > 0 && h.degraded && h.nor == MemberState::Faulty,
        "{h:?}"
    );
    vol.with_members(|_, nor| nor.flash_mut().faults.broken = false);
    vol.rejoin(NOR).unwrap();
    let h = vol.health();
    assert!(!h.degraded, "{h:?}");
    assert!(
        h.synced_sectors > 0 && h.synced_sectors <= 3 * 8,
        "copied {} sectors",
        h.synced_sectors
    );
    flash_holds(&vol, |s| {
        if [10, 11, 12, 13, 150].contains(&s) {
            2
        } else {
            1
        }
    });
}

/// A flash that fails while the volume opens, after it lost its metadata (the mount adds it
/// as new, and its writes fail): the engine fails it, and setting its WriteMostly flag, which
/// a member added as new lacks, was then refused for the faulty member; that refusal failed
/// the whole mount although the card was in sync (the `volume_faults` fuzz target found it,
/// with a store whose sectors a failing part had used up). The volume must open on the card.
#[test]
fn a_flash_that_fails_while_the_volume_opens_leaves_it_open_on_the_card() {
    let mut sd_mem = vec![Block::new(); SD_BLOCKS];
    let mut nor_mem = vec![0xFFu8; SECTOR * SECTORS];
    let mut wear = vec![0u32; SECTORS];
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = written(&mut sd_mem, &mut nor_mem, &mut wear, &mut storage);
    let size = vol.sectors();
    let (sd, mut nor) = vol.close().unwrap();
    // The flash's md superblock is gone, and then the part stops programming.
    nor.write_block(SUPERBLOCK_SECTOR as u32, &[0; 512])
        .unwrap();
    nor.flash_mut().faults.broken = true;
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    let h = vol.health();
    assert!(
        h.degraded && h.sd == MemberState::InSync && h.nor == MemberState::Faulty,
        "{h:?}"
    );
    for s in 0..size {
        let mut b = [Block::new()];
        vol.read(&mut b, BlockIdx(s as u32)).unwrap();
        assert!(b[0].contents == pattern(s, 1).contents, "sector {s}");
    }
    vol.write(&[pattern(12, 2)], BlockIdx(12)).unwrap();
}

#[test]
fn sd_read_errors_are_served_from_flash() {
    use raid1_embedded::sim::{Countdown, SdFaults};
    let mut sd_mem = vec![Block::new(); SD_BLOCKS];
    let mut nor_mem = vec![0xFFu8; SECTOR * SECTORS];
    let mut wear = vec![0u32; SECTORS];
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = written(&mut sd_mem, &mut nor_mem, &mut wear, &mut storage);
    let size = vol.sectors();
    // Write-mostly: while the card serves, no read touches the flash.
    let nor_reads_before = vol.with_members(|_, nor| nor.flash_mut().stats.reads);
    for s in 0..size {
        let mut b = [Block::new()];
        vol.read(&mut b, BlockIdx(s as u32)).unwrap();
    }
    assert_eq!(
        vol.with_members(|_, nor| nor.flash_mut().stats.reads),
        nor_reads_before,
        "reads went to the flash"
    );
    // Every 5th read command of the card fails: each such read is served by the flash.
    for (i, s) in (0..size).enumerate() {
        if i % 5 == 0 {
            vol.with_members(|sd, _| {
                sd.dev.set_faults(SdFaults {
                    fail_read: Countdown::after(0),
                    ..SdFaults::default()
                })
            });
        }
        let mut b = [Block::new()];
        vol.read(&mut b, BlockIdx(s as u32)).unwrap();
        assert!(b[0].contents == pattern(s, 1).contents, "sector {s}");
    }
    let nor_reads = vol.with_members(|_, nor| nor.flash_mut().stats.reads) - nor_reads_before;
    assert!(nor_reads > 0, "the flash served the failed reads");
    let h = vol.health();
    println!("after read errors: {h:?}, {nor_reads} NOR reads");
    assert_eq!(h.nor, MemberState::InSync);
    // Each failed block was written back to the card from the flash's copy (md's read-error
    // correction), so the card stays in the array.
    assert_eq!(
        h.sd,
        MemberState::InSync,
        "the card was failed, not corrected"
    );
    assert!(h.corrected > 0, "no read error corrected");
}

#[test]
fn errors_read_as_sentences_not_debug_output() {
    use raid1_embedded::volume::VolumeError;
    let out_of_range = VolumeError::OutOfRange { end: 7 }.to_string();
    assert_eq!(
        out_of_range,
        "mirrored volume: request ending at sector 7 is beyond the volume"
    );
    assert_eq!(
        VolumeError::Busy.to_string(),
        "mirrored volume: a recovery, resync or scrub is running"
    );
    assert_eq!(
        VolumeError::NotMounted.to_string(),
        "mirrored volume: the volume is not mounted: its mount failed"
    );
    use raid1_embedded::nor::NorError;
    use raid1_embedded::sim::NorSimError;
    let nor = |e: NorError<NorSimError>| e.to_string();
    assert_eq!(
        nor(NorError::Flash(NorSimError::OutOfBounds)),
        "flash error: Arguments are out of bounds"
    );
    assert_eq!(
        nor(NorError::Geometry {
            what: "erase size",
            value: 3
        }),
        "flash geometry: erase size = 3 does not fit"
    );
    assert_eq!(nor(NorError::Corrupt { block: 5 }), "block 5 fails its CRC");
    assert_eq!(
        nor(NorError::NotMounted),
        "the store is not mounted: its last mount failed"
    );
}

/// Write version 2 of sector 0, 1, ... (wrapping around) until the engine fails the flash;
/// returns how many writes that took.
fn write_until_the_flash_fails(vol: &Vol<'_, '_>) -> u64 {
    let size = vol.sectors();
    let mut writes = 0;
    while vol.health().nor != MemberState::Faulty {
        let s = writes % size;
        vol.write(&[pattern(s, 2)], BlockIdx(s as u32)).unwrap();
        writes += 1;
        assert!(writes < 20 * size, "the flash never failed");
    }
    writes
}

/// The flash's erases fail (`erase_broken`) while version 2 of every sector is written: its
/// store gives sector after sector up until the engine fails the flash, and the card takes
/// the rest alone.
fn erases_fail_until_the_flash_fails(vol: &Vol<'_, '_>) {
    vol.with_members(|_, nor| nor.flash_mut().faults.erase_broken = true);
    let writes = write_until_the_flash_fails(vol);
    assert!(vol.with_members(|_, nor| nor.gave_up_sectors()));
    for s in writes..vol.sectors() {
        vol.write(&[pattern(s, 2)], BlockIdx(s as u32)).unwrap();
    }
}

/// The first fault of a split brain: the card fails a write while the flash alone takes
/// version 2 of sector 5 (the flash's superblock records the card as failed); then a power
/// cut, and at the next boot the flash does not mount. The members for that boot.
fn card_stale_and_flash_down_at_boot<'a>(vol: Vol<'_, 'a>) -> (SdMember<SdSim<'a>>, Nor<'a>) {
    vol.with_members(|sd, _| sd.dev.remove());
    vol.write(&[pattern(5, 2)], BlockIdx(5)).unwrap();
    assert_eq!(vol.health().sd, MemberState::Faulty);
    let (sd, nor) = vol.into_members();
    sd.dev.insert();
    (sd, flash_down_at_boot(nor))
}

/// The flash still holds the write only it took in [`card_stale_and_flash_down_at_boot`].
fn flash_holds_its_write(vol: &Vol<'_, '_>) -> bool {
    vol.with_members(|_, nor| {
        let mut b = Block::new();
        nor.read_block((DATA_OFFSET + 5) as u32, &mut b.contents)
            .unwrap();
        b.contents == pattern(5, 2).contents
    })
}

/// The flash holds version `version(s)` of every sector `s` of the volume (read through its
/// store, not through the volume).
fn flash_holds(vol: &Vol<'_, '_>, version: impl Fn(u64) -> u32) {
    let size = vol.sectors();
    vol.with_members(|_, nor| {
        for s in 0..size {
            let mut b = Block::new();
            nor.read_block((DATA_OFFSET + s) as u32, &mut b.contents)
                .unwrap();
            assert!(
                b.contents == pattern(s, version(s)).contents,
                "sector {s} on the flash"
            );
        }
    });
}

/// The board starts again with the flash's bus down: its store does not mount, and the
/// firmware hands the volume a store that is not mounted.
fn flash_down_at_boot(nor: Nor<'_>) -> Nor<'_> {
    let mut flash = nor.into_inner();
    flash.power_off();
    let flash = match Nor::mount(flash) {
        Ok(_) => panic!("a flash that reads nothing mounted"),
        Err(refused) => refused.driver,
    };
    Nor::unmounted(flash).unwrap_or_else(|r| panic!("{}", r.error))
}

/// A part whose erases failed for a while: every collection gave its victim up (the store
/// leaves a sector whose erase failed out of use until it is mounted again), the free slots
/// ran out and the engine failed the flash. Once the part works again, `rejoin` must bring
/// the flash back: the store mounts again in place, taking those sectors up again, and the
/// mirror rewrites it in full from the card (the mount may decide an undecided write anew).
/// Before, the store kept the sectors out of use, the recovery ran out of space and the
/// flash failed again, until the firmware remounted the store itself or rebooted.
#[test]
fn a_flash_whose_erases_failed_for_a_while_rejoins() {
    use raid1_embedded::volume::NOR;
    let mut sd_mem = vec![Block::new(); SD_BLOCKS];
    let mut nor_mem = vec![0xFFu8; SECTOR * SECTORS];
    let mut wear = vec![0u32; SECTORS];
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = written(&mut sd_mem, &mut nor_mem, &mut wear, &mut storage);
    erases_fail_until_the_flash_fails(&vol);
    vol.with_members(|_, nor| nor.flash_mut().faults.erase_broken = false);
    vol.rejoin(NOR).unwrap();
    let h = vol.health();
    assert!(!h.degraded && h.nor == MemberState::InSync, "{h:?}");
    assert!(!vol.with_members(|_, nor| nor.gave_up_sectors()));
    flash_holds(&vol, |_| 2);
    // And after a remount from the chips.
    let (sd, nor) = vol.close().unwrap();
    let nor = Nor::mount(nor.into_inner()).unwrap();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    assert!(!vol.health().degraded);
    flash_holds(&vol, |_| 2);
}

/// As above, but the bus to the flash is down when the first `rejoin` mounts the store again:
/// that mount fails, and the store serves nothing (`NotMounted`) until a mount succeeds. The
/// next `rejoin`, once the bus is back, must mount it again and rewrite it in full. Before,
/// the store, with no sector given up any more (the failed mount had reset its table), was
/// not mounted again: its probe read nothing and its recovery failed at the first write, and
/// the flash stayed out until a reboot.
#[test]
fn a_flash_whose_mount_failed_at_a_rejoin_rejoins_at_the_next() {
    use raid1_embedded::volume::NOR;
    let mut sd_mem = vec![Block::new(); SD_BLOCKS];
    let mut nor_mem = vec![0xFFu8; SECTOR * SECTORS];
    let mut wear = vec![0u32; SECTORS];
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = written(&mut sd_mem, &mut nor_mem, &mut wear, &mut storage);
    erases_fail_until_the_flash_fails(&vol);
    vol.with_members(|_, nor| {
        nor.flash_mut().faults.erase_broken = false;
        nor.flash_mut().power_off();
    });
    assert_eq!(
        vol.rejoin(NOR),
        Err(raid1_embedded::volume::VolumeError::Probe)
    );
    assert_eq!(vol.health().nor, MemberState::Faulty);
    vol.with_members(|_, nor| nor.flash_mut().power_cycle());
    vol.rejoin(NOR).unwrap();
    let h = vol.health();
    assert!(!h.degraded && h.nor == MemberState::InSync, "{h:?}");
    flash_holds(&vol, |_| 2);
}

/// The flash does not mount at boot (its bus down for a while): the firmware hands the
/// volume a store that is not mounted (`NorBlockStore::unmounted`), the volume opens from the
/// card alone and serves, and once the bus is back `rejoin` mounts the store and rewrites the
/// flash in full. Before, a flash that failed its mount left the firmware no volume at all.
#[test]
fn a_flash_that_does_not_mount_at_boot_leaves_the_volume_on_the_card() {
    use raid1_embedded::volume::NOR;
    let mut sd_mem = vec![Block::new(); SD_BLOCKS];
    let mut nor_mem = vec![0xFFu8; SECTOR * SECTORS];
    let mut wear = vec![0u32; SECTORS];
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = written(&mut sd_mem, &mut nor_mem, &mut wear, &mut storage);
    let size = vol.sectors();
    // A power cut, and the flash's bus down at the next boot.
    let (sd, nor) = vol.into_members();
    let nor = flash_down_at_boot(nor);
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap_or_else(|r| panic!("{}", r.error));
    let h = vol.health();
    assert!(h.degraded && h.sd == MemberState::InSync, "{h:?}");
    for s in 0..size {
        let mut b = [Block::new()];
        vol.read(&mut b, BlockIdx(s as u32)).unwrap();
        assert!(b[0].contents == pattern(s, 1).contents, "sector {s}");
    }
    vol.write(&[pattern(7, 2)], BlockIdx(7)).unwrap();
    // A flash that answers reads but fails every program: it fails again in its rebuild,
    // and the blocking rejoin says so.
    vol.with_members(|_, nor| {
        nor.flash_mut().power_cycle();
        nor.flash_mut().faults.broken = true;
    });
    assert_eq!(
        vol.rejoin(NOR),
        Err(raid1_embedded::volume::VolumeError::NotRebuilt)
    );
    assert_eq!(vol.health().nor, MemberState::Faulty);
    vol.with_members(|_, nor| nor.flash_mut().faults.broken = false);
    vol.rejoin(NOR).unwrap();
    let h = vol.health();
    assert!(!h.degraded && h.nor == MemberState::InSync, "{h:?}");
    flash_holds(&vol, |s| if s == 7 { 2 } else { 1 });
}

/// Two faults in a row: the card failed a write while the flash went on alone (the flash's
/// superblock records the card as failed), and at the next boot the flash does not mount.
/// The volume opens from the card, which is stale: md's choice when it must start from what
/// it has (`mdadm --run`), and the card took writes of its own since. When the flash answers
/// again, its superblock says the card it is asked to be rebuilt from had failed: the two
/// copies went separate ways (split brain). Rebuilding the flash from the card would destroy
/// the writes only the flash holds, for good, without a word; `rejoin` refuses it
/// (`VolumeError::SplitBrain`) and writes nothing to the flash.
#[test]
fn a_flash_back_with_writes_the_card_never_took_is_not_rebuilt_over() {
    use raid1_embedded::volume::{NOR, VolumeError};
    let mut sd_mem = vec![Block::new(); SD_BLOCKS];
    let mut nor_mem = vec![0xFFu8; SECTOR * SECTORS];
    let mut wear = vec![0u32; SECTORS];
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = written(&mut sd_mem, &mut nor_mem, &mut wear, &mut storage);
    let (sd, nor) = card_stale_and_flash_down_at_boot(vol);
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap_or_else(|r| panic!("{}", r.error));
    // The card alone: version 1 of sector 5, and a write of its own.
    vol.write(&[pattern(6, 3)], BlockIdx(6)).unwrap();
    let flash_before = vol.with_members(|_, nor| {
        nor.flash_mut().power_cycle();
        nor.flash_mut().memory().to_vec()
    });
    assert_eq!(vol.rejoin(NOR), Err(VolumeError::SplitBrain));
    let h = vol.health();
    assert!(h.degraded && h.sd == MemberState::InSync, "{h:?}");
    vol.with_members(|_, nor| {
        assert!(
            nor.flash_mut().memory() == &flash_before[..],
            "the flash was written"
        )
    });
    assert!(flash_holds_its_write(&vol), "the flash's own write");
}

/// The split brain of `a_flash_back_with_writes_the_card_never_took_is_not_rebuilt_over`
/// met at a mount instead (the board restarted once the flash answered again): md's assembly
/// takes the copy with more events and leaves the other out, and the volume used to add that
/// one back as new, rewriting it: the writes only it held were gone without a word. The mount
/// now leaves it out, untouched, and says so (`Health::split_brain`); `rejoin` refuses it, and
/// `rejoin_over` rebuilds it from the volume when the firmware chooses to let them go.
#[test]
fn a_split_brain_met_at_a_mount_leaves_the_other_copy_untouched() {
    use raid1_embedded::volume::{NOR, VolumeError};
    let mut sd_mem = vec![Block::new(); SD_BLOCKS];
    let mut nor_mem = vec![0xFFu8; SECTOR * SECTORS];
    let mut wear = vec![0u32; SECTORS];
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = written(&mut sd_mem, &mut nor_mem, &mut wear, &mut storage);
    let (sd, nor) = card_stale_and_flash_down_at_boot(vol);
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap_or_else(|r| panic!("{}", r.error));
    vol.write(&[pattern(6, 3)], BlockIdx(6)).unwrap();
    // The board restarts with the flash answering.
    let (sd, mut nor) = vol.into_members();
    nor.flash_mut().power_cycle();
    let nor = Nor::mount(nor.into_inner()).unwrap_or_else(|r| panic!("{}", r.error));
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap_or_else(|r| panic!("{}", r.error));
    let h = vol.health();
    assert!(h.split_brain && h.degraded, "{h:?}");
    // The card had the more events: it serves, its own write with it; the flash keeps its.
    let mut b = [Block::new()];
    vol.read(&mut b, BlockIdx(6)).unwrap();
    assert!(b[0].contents == pattern(6, 3).contents);
    assert!(
        flash_holds_its_write(&vol),
        "the flash was rewritten at the mount"
    );
    assert_eq!(vol.rejoin(NOR), Err(VolumeError::SplitBrain));
    assert!(
        flash_holds_its_write(&vol),
        "the flash was rewritten at the rejoin"
    );
    // The firmware lets the flash's writes go: rebuilt from the card.
    vol.rejoin_over(NOR).unwrap();
    let h = vol.health();
    assert!(!h.degraded && !h.split_brain, "{h:?}");
    flash_holds(&vol, |s| if s == 6 { 3 } else { 1 });
}

/// The flash failed, and then a bit of its md superblock's block was lost: it reads
/// `Corrupt`. `rejoin` must rewrite the flash in full, as the mount does with such a flash,
/// rather than refuse it as it refuses a card it cannot read (whose driver may not be ready).
#[test]
fn a_flash_whose_superblock_lost_a_bit_rejoins_in_full() {
    use raid1_embedded::volume::NOR;
    let mut sd_mem = vec![Block::new(); SD_BLOCKS];
    let mut nor_mem = vec![0xFFu8; SECTOR * SECTORS];
    let mut wear = vec![0u32; SECTORS];
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = written(&mut sd_mem, &mut nor_mem, &mut wear, &mut storage);
    let size = vol.sectors();
    vol.tick(10_000_000_000).unwrap();
    vol.with_members(|_, nor| nor.flash_mut().faults.broken = true);
    let s = write_until_the_flash_fails(&vol);
    vol.with_members(|_, nor| {
        nor.flash_mut().faults.broken = false;
        // A bit of the data of the superblock's block lost (in every copy of it).
        let mut b = Block::new();
        nor.read_block(SUPERBLOCK_SECTOR as u32, &mut b.contents)
            .unwrap();
        let mem = nor.flash_mut().memory_mut();
        let mut hit = 0;
        for at in (0..mem.len()).step_by(512) {
            if mem[at..at + 512] == b.contents[..] {
                mem[at + 100] ^= 1 << (mem[at + 100].trailing_zeros() & 7);
                hit += 1;
            }
        }
        assert!(hit > 0);
        assert!(matches!(
            nor.read_block(SUPERBLOCK_SECTOR as u32, &mut b.contents),
            Err(raid1_embedded::nor::NorError::Corrupt { .. })
        ));
    });
    vol.rejoin(NOR).unwrap();
    let h = vol.health();
    assert!(!h.degraded && h.nor == MemberState::InSync, "{h:?}");
    assert_eq!(h.synced_sectors, size, "the flash is rewritten in full");
    vol.with_members(|_, nor| {
        for t in 0..size {
            let mut b = Block::new();
            nor.read_block((DATA_OFFSET + t) as u32, &mut b.contents)
                .unwrap();
            let v = if t < s { 2 } else { 1 };
            assert!(
                b.contents == pattern(t, v).contents,
                "sector {t} on the flash"
            );
        }
    });
}

/// The flash's erases fail until its store gives every free sector up and the flash fails;
/// the erases work again, and the firmware closes the volume and opens it again with the same
/// members, without a reboot. The open re-added the flash without mounting its store again:
/// the store, still without a free sector, took the recovery's first blocks and then no more
/// writes, and the flash failed again (with the card pulled then, the volume had nothing).
/// The open mounts the store again first, as a reboot would.
#[test]
fn an_open_without_a_reboot_mounts_again_a_store_that_gave_sectors_up() {
    let mut sd_mem = vec![Block::new(); SD_BLOCKS];
    let mut nor_mem = vec![0xFFu8; SECTOR * SECTORS];
    let mut wear = vec![0u32; SECTORS];
    let (sd, nor) = {
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = written(&mut sd_mem, &mut nor_mem, &mut wear, &mut storage);
        erases_fail_until_the_flash_fails(&vol);
        vol.with_members(|_, nor| nor.flash_mut().faults.erase_broken = false);
        vol.close().unwrap_or_else(|e| panic!("{}", e.error))
    };
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap_or_else(|e| panic!("{}", e.error));
    vol.finish().unwrap();
    for round in 3..6 {
        for s in 0..vol.sectors() {
            vol.write(&[pattern(s, round)], BlockIdx(s as u32)).unwrap();
        }
    }
    let h = vol.health();
    assert!(!h.degraded && h.nor == MemberState::InSync, "{h:?}");
    flash_holds(&vol, |_| 5);
}
