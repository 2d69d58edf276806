//! The volume's defenses, one test each (each fails when its defense is removed alone):
//! durable SD writes, card reinsertion, drivers handed back on error, a damaged NOR store
//! recovered in full, scrub, bounded steps, close() marking the array clean, configurable
//! timers, a format that does not stall on a large volume, and the volume built in a place the
//! caller owns.

mod common;

use common::Slot;
use embedded_sdmmc::{Block, BlockDevice, BlockIdx};
use raid1_embedded::nor::{BLOCK_LEN, NorBlockStore, NorWarning, SECTOR_HEADER_LEN, sector_layout};
use raid1_embedded::sim::{NorSim, Rng, SdFaults, SdSim};
use raid1_embedded::volume::{
    BITMAP_SECTOR, DATA_OFFSET, Member, MemberFault, MemberState, Mirror, MirrorStorage, Options,
    SUPERBLOCK_SECTOR, SdMember, VolumeError, VolumeIdentity,
};
use raid1_superblock::Superblock;

const E: usize = 4096;
const SECTORS: usize = 40;
const BLOCKS: usize = 256; // < (40 - 2) * 7
const SD_BLOCKS: usize = 512;
type Nor<'a> = NorBlockStore<NorSim<'a, 4, E>, BLOCKS, SECTORS>;
type Vol<'b, 'a> = Mirror<'b, SdMember<SdSim<'a>>, Nor<'a>>;

const ID: VolumeIdentity = VolumeIdentity {
    uuid: *b"volume-defenses!",
    name: "def",
    ctime: 1_700_000_000,
};

fn pattern(sector: u64, version: u32) -> Block {
    let mut b = Block::new();
    let mut rng = Rng::new(sector << 32 | u64::from(version));
    for c in b.contents.chunks_mut(8) {
        c.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    b
}

struct Chips {
    sd: Vec<Block>,
    nor: Vec<u8>,
    wear: Vec<u32>,
}

impl Chips {
    fn new() -> Self {
        Chips {
            sd: vec![Block::new(); SD_BLOCKS],
            nor: vec![0xFF; E * SECTORS],
            wear: vec![0; SECTORS],
        }
    }

    /// The two members over these chips, formatted once when `format`.
    fn members(&mut self, faults: SdFaults, format: bool) -> (SdMember<SdSim<'_>>, Nor<'_>) {
        let sim = SdSim::new(&mut self.sd, 1);
        sim.set_faults(faults);
        let sd = SdMember::with_reinit(sim, SdSim::mark_card_uninit);
        let nor = Nor::mount(NorSim::new(&mut self.nor, &mut self.wear, 2)).unwrap();
        if !format {
            return (sd, nor);
        }
        let mut storage: MirrorStorage = MirrorStorage::new();
        Mirror::format(sd, nor, &mut storage, ID).unwrap()
    }
}

fn write_all<A: Member, B: Member>(vol: &Mirror<'_, A, B>, versions: &mut [u32], version: u32) {
    for (s, v) in versions.iter_mut().enumerate() {
        vol.write(&[pattern(s as u64, version)], BlockIdx(s as u32))
            .unwrap();
        *v = version;
    }
}

fn verify<A: Member, B: Member>(vol: &Mirror<'_, A, B>, versions: &[u32], what: &str) {
    for (s, &v) in versions.iter().enumerate() {
        let mut b = [Block::new()];
        vol.read(&mut b, BlockIdx(s as u32))
            .unwrap_or_else(|e| panic!("{what}: read {s}: {e:?}"));
        assert!(
            b[0].contents == pattern(s as u64, v).contents,
            "{what}: sector {s} is not version {v}"
        );
    }
}

#[test]
fn sd_writes_are_on_the_card_when_acknowledged() {
    let mut chips = Chips::new();
    let faults = SdFaults {
        early_multi_block_ack: true,
        ..SdFaults::default()
    };
    let (sd, nor) = chips.members(faults, true);
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    // The card model: a multi-block write returns before its last block is programmed.
    {
        let mut mem = vec![Block::new(); 8];
        let card = SdSim::new(&mut mem, 1);
        card.set_faults(faults);
        card.write(&[pattern(0, 1), pattern(1, 1)], BlockIdx(2))
            .unwrap();
        card.power_cycle();
        card.with_blocks(|b| {
            assert!(b[2].contents == pattern(0, 1).contents);
            assert!(
                b[3].contents == Block::new().contents,
                "the model lost nothing"
            );
        });
    }
    // One multi-sector write, acknowledged; then the power goes at once.
    let blocks: Vec<Block> = (0..8).map(|s| pattern(s, 7)).collect();
    vol.write(&blocks, BlockIdx(0)).unwrap();
    vol.with_members(|sd, _| {
        sd.dev.power_cycle();
        for s in 0..8u64 {
            let mut b = [Block::new()];
            sd.dev
                .read(&mut b, BlockIdx((DATA_OFFSET + s) as u32))
                .unwrap();
            assert!(
                b[0].contents == pattern(s, 7).contents,
                "sector {s} acknowledged but not on the card"
            );
        }
    });
}

#[test]
fn a_reinserted_card_is_reinitialised_and_recovered_from_the_bitmap() {
    let mut chips = Chips::new();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = open_reinit(&mut chips, &mut storage);
    let mut versions = vec![0u32; vol.sectors() as usize];
    write_all(&vol, &mut versions, 1);
    vol.tick(10_000_000_000).unwrap();
    vol.with_members(|sd, _| sd.dev.remove());
    for s in [3usize, 4, 100] {
        vol.write(&[pattern(s as u64, 2)], BlockIdx(s as u32))
            .unwrap();
        versions[s] = 2;
    }
    assert!(vol.health().degraded);
    vol.with_members(|sd, _| sd.dev.insert());
    vol.sd_inserted().unwrap();
    let h = vol.health();
    assert!(!h.degraded, "{h:?}");
    assert!(
        h.synced_sectors > 0 && h.synced_sectors <= 3 * 8,
        "copied {} sectors: not a bitmap recovery",
        h.synced_sectors
    );
    verify(&vol, &versions, "after reinsertion");
}

#[test]
fn a_card_that_does_not_answer_is_refused_not_recovered_in_full() {
    let mut chips = Chips::new();
    let faults = SdFaults {
        reinit_on_insert: true,
        ..SdFaults::default()
    };
    let (sd, nor) = chips.members(faults, true);
    // A driver the volume cannot tell about the insertion.
    let sd = SdMember::new(sd.into_inner());
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    let mut versions = vec![0u32; vol.sectors() as usize];
    write_all(&vol, &mut versions, 1);
    vol.with_members(|sd, _| sd.dev.remove());
    vol.write(&[pattern(5, 2)], BlockIdx(5)).unwrap();
    versions[5] = 2;
    vol.with_members(|sd, _| sd.dev.insert());
    assert_eq!(vol.sd_inserted(), Err(VolumeError::Probe));
    let h = vol.health();
    assert!(h.degraded && h.synced_sectors == 0, "{h:?}");
    verify(&vol, &versions, "still serving from flash");
}

#[test]
fn drivers_come_back_on_error() {
    let mut chips = Chips::new();
    let (sd, nor) = chips.members(SdFaults::default(), false);
    let mut storage: MirrorStorage = MirrorStorage::new();
    // Blank members: no volume to open. The drivers come back, and format uses them.
    let refused = Mirror::open(sd, nor, &mut storage)
        .err()
        .expect("no volume");
    assert_eq!(refused.error, VolumeError::NoVolume);
    let (sd, nor) = refused.driver;
    let mut storage: MirrorStorage = MirrorStorage::new();
    let (sd, nor) = Mirror::format(sd, nor, &mut storage, ID).unwrap();
    let mut storage: MirrorStorage = MirrorStorage::new();
    assert!(Mirror::open(sd, nor, &mut storage).is_ok());
}

/// Where the NOR store keeps the data of `content`: the byte offset of its entry.
fn entry_of(nor: &[u8], content: &Block) -> usize {
    let (meta, n) = sector_layout(E);
    for s in 0..SECTORS {
        for i in 0..n {
            let at = s * E + (meta + i) * BLOCK_LEN;
            if nor[at..at + BLOCK_LEN] == content.contents[..] {
                return s * E + SECTOR_HEADER_LEN + i * 32;
            }
        }
    }
    panic!("not on flash");
}

/// A formatted volume on `chips`: every sector written (version 1), sector 9 again (version
/// 2), then `more` with it open; closed, and then three bits of sector 9's newest entry rot on
/// the flash (the store would read version 1). Returns the versions written.
fn damaged_after(chips: &mut Chips, more: impl FnOnce(&Vol<'_, '_>, &mut [u32])) -> Vec<u32> {
    let mut versions;
    {
        let (sd, nor) = chips.members(SdFaults::default(), true);
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = Mirror::open(sd, nor, &mut storage).unwrap();
        versions = vec![0u32; vol.sectors() as usize];
        write_all(&vol, &mut versions, 1);
        vol.write(&[pattern(9, 2)], BlockIdx(9)).unwrap();
        versions[9] = 2;
        more(&vol, &mut versions);
        vol.close().unwrap();
    }
    let at = entry_of(&chips.nor, &pattern(9, 2));
    chips.nor[at] ^= 0x01;
    chips.nor[at + 6] ^= 0x10;
    chips.nor[at + 10] ^= 0x80;
    versions
}

#[test]
fn a_damaged_nor_store_is_recovered_in_full_from_the_card() {
    let mut chips = Chips::new();
    let versions = damaged_after(&mut chips, |_, _| {});
    let (sd, nor) = chips.members(SdFaults::default(), false);
    assert!(nor.damaged());
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    let h = vol.health();
    assert!(!h.degraded && h.synced_sectors >= vol.sectors(), "{h:?}");
    // The flash alone now serves every sector right.
    vol.with_members(|sd, _| sd.dev.remove());
    verify(&vol, &versions, "from flash after the full recovery");
}

/// A damaged NOR store whose card missed only the last superblock write of a round (a power
/// cut between the members' two writes: the flash's superblock one event ahead). The assembly
/// takes such a card as in sync (md tolerates one event behind), so it is as fresh as the
/// flash: the flash is rewritten from it in full. The mount used a rule of its own that
/// demanded as many events, kept the damaged flash beside the card in sync, and some block of
/// the flash went on reading older than the card (the `volume_faults` fuzz target).
#[test]
fn a_damaged_nor_store_is_recovered_from_a_card_one_event_behind() {
    let mut chips = Chips::new();
    let versions = damaged_after(&mut chips, |_, _| {});
    {
        let mut nor = Nor::mount(NorSim::new(&mut chips.nor, &mut chips.wear, 2)).unwrap();
        let mut b = [0u8; BLOCK_LEN];
        nor.read_block(SUPERBLOCK_SECTOR as u32, &mut b).unwrap();
        let mut sb = Superblock::<2>::parse(&b).unwrap();
        sb.events += 1;
        sb.update_checksum().unwrap();
        sb.serialize(&mut b).unwrap();
        nor.write_block(SUPERBLOCK_SECTOR as u32, &b).unwrap();
    }
    let (sd, nor) = chips.members(SdFaults::default(), false);
    assert!(nor.damaged());
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    let h = vol.health();
    assert!(
        !h.nor_damaged && !h.degraded && h.synced_sectors >= vol.sectors(),
        "{h:?}"
    );
    vol.with_members(|sd, _| sd.dev.remove());
    verify(&vol, &versions, "from flash after the full recovery");
}

/// A damaged NOR store whose card fell behind (failed while writes went on to the flash
/// alone), or is gone: the flash holds the only copy of those writes, so it is kept rather
/// than rewritten from the stale card (which lost every one of them: volume_model fuzzing, a
/// power cut that left a false damage alarm, then the card's old data copied over the
/// flash), the card is rebuilt from it, and the health says the flash was kept damaged. With
/// no card at all the volume mounts on the flash (it used to refuse: no volume).
#[test]
fn a_damaged_nor_store_is_kept_when_the_card_is_stale_or_absent() {
    for card_back in [true, false] {
        let mut chips = Chips::new();
        damaged_after(&mut chips, |vol, versions| {
            // The card goes; writes go on to the flash alone.
            vol.with_members(|sd, _| sd.dev.remove());
            for s in [3u64, 4, 5] {
                vol.write(&[pattern(s, 3)], BlockIdx(s as u32)).unwrap();
                versions[s as usize] = 3;
            }
            assert!(vol.health().degraded);
        });
        let (sd, nor) = chips.members(SdFaults::default(), false);
        assert!(nor.damaged());
        if !card_back {
            sd.dev.remove();
        }
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = Mirror::open(sd, nor, &mut storage)
            .unwrap_or_else(|e| panic!("card back {card_back}: {:?}", e.error));
        let h = vol.health();
        assert!(h.nor_damaged, "card back {card_back}: {h:?}");
        assert_eq!(h.degraded, !card_back, "{h:?}");
        // The writes the card never had read back (sector 9 may read older: that is the
        // damage the health reports).
        for s in [3u64, 4, 5] {
            let mut b = [Block::new()];
            vol.read(&mut b, BlockIdx(s as u32)).unwrap();
            assert!(
                b[0].contents == pattern(s, 3).contents,
                "card back {card_back}: sector {s} lost the write the card never had"
            );
        }
        if card_back {
            // The card was rebuilt from the flash: it alone serves the same.
            vol.with_members(|_, nor| nor.flash_mut().faults.broken = true);
            let _ = vol.write(&[pattern(0, 1)], BlockIdx(0));
            let mut b = [Block::new()];
            vol.read(&mut b, BlockIdx(4)).unwrap();
            assert!(b[0].contents == pattern(4, 3).contents);
        }
    }
}

/// A card that holds another volume (moved from another device) at boot, with a higher event
/// count than the flash's own volume: the flash, soldered to the board, is the device's volume
/// and is kept; the card is added as new and rebuilt from it, as a foreign card inserted while
/// running is. The mount used to take whichever member had more events, and rewrote the flash
/// from the foreign card: the device's own data was gone.
#[test]
fn a_card_from_another_volume_does_not_replace_the_flash() {
    let mut ours = Chips::new();
    let mut theirs = Chips::new();
    let mut versions;
    {
        let (sd, nor) = ours.members(SdFaults::default(), true);
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = Mirror::open(sd, nor, &mut storage).unwrap();
        versions = vec![0u32; vol.sectors() as usize];
        write_all(&vol, &mut versions, 1);
        vol.close().unwrap();
    }
    let their_events = {
        let sim = SdSim::new(&mut theirs.sd, 1);
        let sd = SdMember::with_reinit(sim, SdSim::mark_card_uninit);
        let nor = Nor::mount(NorSim::new(&mut theirs.nor, &mut theirs.wear, 2)).unwrap();
        let mut storage: MirrorStorage = MirrorStorage::new();
        let other = VolumeIdentity {
            uuid: *b"another-device!!",
            ..ID
        };
        let (sd, nor) = Mirror::format(sd, nor, &mut storage, other).unwrap();
        let vol = Mirror::open(sd, nor, &mut storage).unwrap();
        // Their card leaves and comes back a few times: their event count climbs.
        for _ in 0..4 {
            vol.with_members(|sd, _| sd.dev.remove());
            vol.write(&[pattern(1, 9)], BlockIdx(1)).unwrap();
            vol.with_members(|sd, _| sd.dev.insert());
            vol.sd_inserted().unwrap();
        }
        let events = vol.health().events;
        vol.close().unwrap();
        events
    };
    let our_events = {
        let (sd, nor) = ours.members(SdFaults::default(), false);
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = Mirror::open(sd, nor, &mut storage).unwrap();
        let e = vol.health().events;
        vol.close().unwrap();
        e
    };
    assert!(their_events > our_events, "{their_events} {our_events}");
    // Their card in our device.
    ours.sd = theirs.sd.clone();
    let (sd, nor) = ours.members(SdFaults::default(), false);
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    assert!(!vol.health().degraded, "{:?}", vol.health());
    verify(&vol, &versions, "our volume with their card in");
    // The card was rebuilt from the flash: it alone serves our data.
    vol.with_members(|_, nor| nor.flash_mut().faults.broken = true);
    let _ = vol.write(&[pattern(0, 1)], BlockIdx(0));
    verify(&vol, &versions, "our volume from the card alone");
}

#[test]
fn scrub_rewrites_what_the_flash_cannot_read_and_repairs_what_differs() {
    let mut chips = Chips::new();
    let (sd, nor) = chips.members(SdFaults::default(), true);
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    let mut versions = vec![0u32; vol.sectors() as usize];
    write_all(&vol, &mut versions, 1);
    assert_eq!(vol.scrub(false).unwrap(), 0);
    // Sector 12's data rots on the flash (CRC fails), and sector 30 on the flash silently
    // differs from the card (written behind the volume's back).
    vol.with_members(|_, nor| {
        let at = entry_of(nor.flash_mut().memory(), &pattern(12, 1));
        let (meta, _) = sector_layout(E);
        let slot = (at % E - SECTOR_HEADER_LEN) / 32;
        let data = at - at % E + (meta + slot) * BLOCK_LEN;
        nor.flash_mut().memory_mut()[data + 77] ^= 0x04;
        nor.write(DATA_OFFSET + 30, &[pattern(30, 99)]).unwrap();
    });
    // A check rewrites the unreadable block from the card and counts it with the difference.
    assert_eq!(vol.scrub(false).unwrap(), 2);
    vol.with_members(|_, nor| {
        let mut b = [0u8; BLOCK_LEN];
        nor.read_block((DATA_OFFSET + 12) as u32, &mut b).unwrap();
        assert!(
            b == pattern(12, 1).contents,
            "the unreadable block was not rewritten"
        );
    });
    assert_eq!(
        vol.scrub(false).unwrap(),
        1,
        "a check must not repair a difference"
    );
    // A repair rewrites the flash from the card; then the members agree.
    assert_eq!(vol.scrub(true).unwrap(), 1);
    assert_eq!(vol.scrub(false).unwrap(), 0);
    vol.with_members(|sd, _| sd.dev.remove());
    verify(&vol, &versions, "from flash after the scrub");
}

#[test]
fn a_recovery_advances_in_bounded_steps_while_writes_go_on() {
    let mut chips = Chips::new();
    let (sd, nor) = chips.members(SdFaults::default(), true);
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    let mut versions = vec![0u32; vol.sectors() as usize];
    write_all(&vol, &mut versions, 1);
    // A new, blank card: full recovery.
    vol.with_members(|sd, _| sd.dev.replace_with_new_card());
    vol.sd_removed().unwrap();
    vol.sd_inserted_begin().unwrap();
    let mut steps = 0;
    let mut last = 0;
    let mut rng = Rng::new(5);
    loop {
        let p = vol.step(2).unwrap();
        assert!(p.commands <= 2, "{p:?}");
        if !p.busy {
            break;
        }
        if p.action.is_some() {
            assert!(p.done >= last && p.done <= p.total, "{p:?}");
            last = p.done;
        }
        steps += 1;
        // The volume serves writes and reads between steps.
        let s = rng.below(versions.len() as u64) as usize;
        versions[s] += 1;
        let before = vol.health().synced_sectors;
        vol.write(&[pattern(s as u64, versions[s])], BlockIdx(s as u32))
            .unwrap();
        // A write does not run the recovery to its end inside it.
        let during = vol.health().synced_sectors - before;
        assert!(
            during <= 2,
            "a write copied {during} sectors of the recovery"
        );

        assert!(steps < 100_000);
    }
    let sectors = vol.sectors() as u32;
    assert!(steps >= sectors / 2, "{steps} steps for {sectors} sectors");
    let h = vol.health();
    assert!(!h.degraded, "{h:?}");
    verify(&vol, &versions, "after the stepped recovery");
    vol.with_members(|sd, _| {
        for (s, &v) in versions.iter().enumerate() {
            let mut b = [Block::new()];
            sd.dev
                .read(&mut b, BlockIdx((DATA_OFFSET as usize + s) as u32))
                .unwrap();
            assert!(
                b[0].contents == pattern(s as u64, v).contents,
                "card sector {s}"
            );
        }
    });
}

#[test]
fn close_marks_the_volume_clean() {
    let mut chips = Chips::new();
    let (sd, nor) = chips.members(SdFaults::default(), true);
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    vol.write(&[pattern(0, 1), pattern(1, 1)], BlockIdx(0))
        .unwrap();
    // Without close: the next mount resyncs the chunk written last.
    let (sd, nor) = vol.into_members();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    assert!(
        vol.health().synced_sectors > 0,
        "an unclean stop must resync"
    );
    vol.write(&[pattern(1, 2)], BlockIdx(1)).unwrap();
    // With close: nothing to resync.
    let (sd, nor) = vol.close().unwrap();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    let h = vol.health();
    assert_eq!(h.synced_sectors, 0, "{h:?}");
    assert_eq!(h.dirty_chunks, 0, "{h:?}");
    verify(&vol, &[1, 2], "after close");
}

/// SD blocks written by `writes` single-sector writes one second apart.
fn metadata_cost(opts: Options) -> u32 {
    let mut chips = Chips::new();
    let (sd, nor) = chips.members(SdFaults::default(), true);
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::assemble(sd, nor, &mut storage, opts).unwrap();
    vol.finish().unwrap();
    let before = vol.with_members(|sd, _| sd.dev.stats().blocks_written);
    let mut now = 1_000_000_000_000u64;
    for i in 0..20u64 {
        vol.tick(now).unwrap();
        vol.write(&[pattern(i, 1)], BlockIdx(i as u32)).unwrap();
        now += 1_000_000_000;
    }
    vol.tick(now).unwrap();
    vol.with_members(|sd, _| sd.dev.stats().blocks_written) - before
}

#[test]
fn timers_are_configuration() {
    let md = metadata_cost(Options::MD);
    let slow = metadata_cost(Options {
        clean_delay_ms: 60_000,
        bitmap_daemon_ms: 60_000,
    });
    println!("SD blocks written for 20 writes 1 s apart: md timers {md}, 60 s timers {slow}");
    assert!(slow * 2 < md, "md timers {md}, 60 s timers {slow}");
}

/// A bitmap daemon period of 0 is refused, as md refuses it (the daemon would be due at every
/// step), in words, with both members handed back and nothing written to the card.
#[test]
fn a_bitmap_daemon_period_of_0_is_refused() {
    let mut chips = Chips::new();
    let (sd, nor) = chips.members(SdFaults::default(), true);
    let written = sd.dev.stats().blocks_written;
    let mut storage: MirrorStorage = MirrorStorage::new();
    let opts = Options {
        bitmap_daemon_ms: 0,
        ..Options::MD
    };
    let Err(refused) = Mirror::assemble(sd, nor, &mut storage, opts) else {
        panic!("a volume assembled with a bitmap daemon period of 0");
    };
    let text = refused.error.to_string();
    assert!(text.contains("a bitmap daemon period of 0"), "{text}");
    let (sd, _nor) = refused.driver;
    assert_eq!(sd.dev.stats().blocks_written, written);
}

#[test]
fn a_large_format_does_not_stall() {
    // More than the 45,000 sectors at which format used to fail with Stalled: a 28 MiB NOR
    // part (7200 erase sectors of 4 KiB) and a card a little larger.
    const NB: usize = 50_000;
    const NS: usize = 7200;
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(|| {
            let mut sd_mem = vec![Block::new(); NB + 100];
            let mut nor_mem = vec![0xFFu8; E * NS];
            let mut wear = vec![0u32; NS];
            let sd = SdMember::new(SdSim::new(&mut sd_mem, 1));
            let nor = Box::new(
                NorBlockStore::<_, NB, NS>::mount(NorSim::<4, E>::new(&mut nor_mem, &mut wear, 2))
                    .unwrap(),
            );
            let mut storage: MirrorStorage = MirrorStorage::new();
            let (sd, nor) = Mirror::format(sd, BoxMember(nor), &mut storage, ID).unwrap();
            let mut storage: MirrorStorage = MirrorStorage::new();
            let vol = Mirror::open(sd, nor, &mut storage).unwrap();
            assert_eq!(vol.sectors(), NB as u64 - DATA_OFFSET);
            assert!(!vol.health().degraded);
        })
        .unwrap()
        .join()
        .unwrap();
}

/// A boxed member (the large store does not fit on a test's stack).
struct BoxMember<M>(Box<M>);

impl<M: Member> Member for BoxMember<M> {
    fn read(
        &mut self,
        sector: u64,
        blocks: &mut [Block],
    ) -> Result<(), raid1_embedded::volume::MemberFault> {
        self.0.read(sector, blocks)
    }
    fn write(
        &mut self,
        sector: u64,
        blocks: &[Block],
    ) -> Result<(), raid1_embedded::volume::MemberFault> {
        self.0.write(sector, blocks)
    }
    fn sectors(&mut self) -> Result<u64, raid1_embedded::volume::MemberFault> {
        self.0.sectors()
    }
}

/// The NOR store's mount warning reaches the volume's health: 256 blocks on 40 sectors of 4 KiB
/// sit at the edge of the capacity rule (a collection may copy 6 blocks to free one slot).
#[test]
fn the_nor_stores_provisioning_warning_is_in_the_volumes_health() {
    let mut chips = Chips::new();
    let (sd, nor) = chips.members(SdFaults::default(), true);
    let expected = nor.warning();
    assert!(
        matches!(expected, Some(NorWarning::TightProvisioning(p)) if p.worst_copies == 6),
        "{expected:?}"
    );
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    assert_eq!(vol.health().warning, expected);
}

// The volume built in a place the caller owns (`Mirror::open_in`, `assemble_in`, `close_in`)
// and `Mirror::clean`: the same volume as the by-value calls give, the members back on every
// path.

/// Mount in place, write, and stop without a close (a power cut): with `clean` called
/// first, the next mount finds the volume clean and copies nothing; without it, the chunks
/// written are resynced.
fn cut_after_writes(clean: bool) -> u64 {
    let mut chips = Chips::new();
    {
        let (sd, nor) = chips.members(SdFaults::default(), true);
        let mut storage: MirrorStorage = MirrorStorage::new();
        let mut place = None;
        let vol = Mirror::open_in(&mut place, sd, nor, &mut storage).expect("open_in");
        for s in 0..16 {
            vol.write_sectors(s, &[pattern(s, 1)]).expect("write");
        }
        if clean {
            vol.clean().expect("clean");
        }
        // The power goes: the volume is dropped where it is, without a close.
    }
    let (sd, nor) = chips.members(SdFaults::default(), false);
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).expect("open after the cut");
    let mut b = [Block::new()];
    for s in 0..16 {
        vol.read_sectors(s, &mut b).expect("read");
        assert_eq!(b[0].contents, pattern(s, 1).contents, "sector {s}");
    }
    assert!(!vol.health().degraded);
    vol.health().synced_sectors
}

#[test]
fn clean_leaves_nothing_to_resync_after_a_cut() {
    assert_eq!(cut_after_writes(true), 0);
    assert!(
        cut_after_writes(false) > 0,
        "without clean the cut leaves dirty chunks"
    );
}

#[test]
fn open_in_and_close_in_round_trip() {
    let mut chips = Chips::new();
    let (sd, nor) = chips.members(SdFaults::default(), true);
    let mut storage: MirrorStorage = MirrorStorage::new();
    let mut place = None;
    let vol = Mirror::open_in(&mut place, sd, nor, &mut storage).expect("open_in");
    let size = vol.sectors();
    vol.write_sectors(3, &[pattern(3, 7)]).expect("write");
    let (sd, nor) = Mirror::close_in(&mut place)
        .expect("a volume in the place")
        .expect("close");
    assert!(place.is_none(), "close_in empties the place");
    assert!(
        Mirror::close_in(&mut place).is_none(),
        "nothing left to close"
    );
    // What open_in built is what open builds: the same volume, clean after close_in.
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).expect("open");
    assert_eq!(vol.sectors(), size);
    let h = vol.health();
    assert!(
        !h.degraded && h.synced_sectors == 0 && h.dirty_chunks == 0,
        "{h:?}"
    );
    let mut b = [Block::new()];
    vol.read_sectors(3, &mut b).expect("read");
    assert_eq!(b[0].contents, pattern(3, 7).contents);
}

#[test]
fn assemble_in_recovers_a_new_flash_in_steps() {
    let mut chips = Chips::new();
    let _formatted = chips.members(SdFaults::default(), true);
    chips.nor.fill(0xFF);
    chips.wear.fill(0);
    let (sd, nor) = chips.members(SdFaults::default(), false);
    let mut storage: MirrorStorage = MirrorStorage::new();
    let mut place = None;
    let vol =
        Mirror::assemble_in(&mut place, sd, nor, &mut storage, Options::MD).expect("assemble_in");
    assert!(vol.health().degraded, "the blank flash is rebuilt");
    let mut steps = 0;
    while vol.step(4).expect("step").busy {
        steps += 1;
        assert!(steps < 10_000, "the recovery does not end");
    }
    assert!(steps > 1, "the recovery ran in bounded steps");
    let h = vol.health();
    assert!(!h.degraded && h.synced_sectors >= vol.sectors(), "{h:?}");
}

#[test]
fn a_refused_mount_leaves_the_members_in_the_place() {
    let mut chips = Chips::new();
    let (sd, nor) = chips.members(SdFaults::default(), false);
    let mut storage: MirrorStorage = MirrorStorage::new();
    let mut place = None;
    let err = Mirror::open_in(&mut place, sd, nor, &mut storage).map(|_| ());
    assert_eq!(err, Err(VolumeError::NoVolume));
    // The unmounted volume serves nothing and writes nothing, without panicking.
    let vol = place.as_ref().expect("the volume stays in the place");
    let mut b = [Block::new()];
    assert!(vol.read_sectors(0, &mut b).is_err());
    assert!(vol.write_sectors(0, &[pattern(0, 1)]).is_err());
    assert!(!vol.step(8).expect("step").busy);
    let (sd, _nor) = place.take().expect("volume").into_members();
    assert!(
        sd.dev.stats().blocks_written == 0,
        "nothing was written to the blank card"
    );
}

#[test]
fn clean_keeps_the_volume_mounted() {
    let mut chips = Chips::new();
    let (sd, nor) = chips.members(SdFaults::default(), true);
    let mut storage: MirrorStorage = MirrorStorage::new();
    let mut place = None;
    let vol = Mirror::open_in(&mut place, sd, nor, &mut storage).expect("open_in");
    vol.write_sectors(1, &[pattern(1, 1)]).expect("write");
    vol.clean().expect("clean");
    // Mounted still: writes and reads go on (the close inside clean froze the array; it must
    // not stay frozen), and the next write marks the volume dirty again.
    vol.write_sectors(2, &[pattern(2, 1)])
        .expect("a write after clean");
    let mut b = [Block::new()];
    vol.read_sectors(2, &mut b).expect("a read after clean");
    assert_eq!(b[0].contents, pattern(2, 1).contents);
    assert!(
        vol.health().dirty_chunks > 0,
        "the write after clean is not marked dirty"
    );
    vol.clean().expect("clean again");
    let (sd, nor) = Mirror::close_in(&mut place)
        .expect("a volume in the place")
        .expect("close");
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).expect("open");
    assert_eq!(vol.health().synced_sectors, 0);
}

/// A volume written once (version 1) and closed clean, on `chips`.
fn written_and_closed(chips: &mut Chips) -> Vec<u32> {
    let (sd, nor) = chips.members(SdFaults::default(), true);
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    let mut versions = vec![0u32; vol.sectors() as usize];
    write_all(&vol, &mut versions, 1);
    vol.close().unwrap();
    versions
}

/// A bit of the block holding `content` lost on the flash, in every copy of it there: the
/// store reads it `Corrupt`, and only the card has it.
fn rot_on_flash(nor: &mut [u8], content: &Block) {
    let mut hit = 0;
    for at in (0..nor.len()).step_by(512) {
        if nor[at..at + 512] == content.contents[..] {
            nor[at + 100] ^= 1 << (nor[at + 100].trailing_zeros() & 7);
            hit += 1;
        }
    }
    assert!(hit > 0, "the block is on the flash");
}

/// The card's superblock as a power cut leaves it when it tears the write of the next
/// round's: the new one's bytes up to the middle of `events`, the old one's after.
fn tear_card_superblock(card: &mut [Block]) {
    let at = SUPERBLOCK_SECTOR as usize;
    let mut sb = Superblock::<2>::parse(&card[at].contents).unwrap();
    sb.events += 0x0101;
    sb.update_checksum().unwrap();
    let mut new = [0u8; 512];
    sb.serialize(&mut new).unwrap();
    card[at].contents[..201].copy_from_slice(&new[..201]);
    assert!(Superblock::<2>::parse(&card[at].contents).is_err());
}

/// The card's copy of its superblock (sector 9) speaks for a superblock torn by a power cut
/// (old and new bytes mixed, or left erased: all zeros, as `mdadm --zero-superblock` leaves it
/// too), and for nothing else. Torn or blank: the card is the volume's, in sync, nothing
/// rebuilt. Its magic wiped (`wipefs`), blank with its copy zeroed too, or torn with a copy of
/// another volume's: the card is a new one, rebuilt in full from the flash, whatever its old
/// data says (a card wiped and used elsewhere must not serve its blocks as the volume's). With
/// no flash beside it, a blank superblock or a copy of another volume is no volume.
#[test]
fn the_cards_superblock_copy_speaks_only_for_a_torn_or_blank_superblock() {
    use raid1_embedded::volume::SUPERBLOCK_COPY_SECTOR;
    for case in [
        "torn",
        "zeroed",
        "zeroed with its copy",
        "magic wiped",
        "copy of another volume",
    ] {
        let mut chips = Chips::new();
        let versions = written_and_closed(&mut chips);
        let copy = SUPERBLOCK_COPY_SECTOR as usize;
        assert!(
            chips.sd[copy].contents == chips.sd[SUPERBLOCK_SECTOR as usize].contents,
            "the copy is written with the superblock"
        );
        match case {
            "torn" => tear_card_superblock(&mut chips.sd),
            "zeroed" => chips.sd[SUPERBLOCK_SECTOR as usize] = Block::new(),
            "zeroed with its copy" => {
                chips.sd[SUPERBLOCK_SECTOR as usize] = Block::new();
                chips.sd[copy] = Block::new();
            }
            "magic wiped" => chips.sd[SUPERBLOCK_SECTOR as usize].contents[..4].fill(0),
            _ => {
                tear_card_superblock(&mut chips.sd);
                let mut sb = Superblock::<2>::parse(&chips.sd[copy].contents).unwrap();
                sb.set_uuid.0[0] ^= 1;
                sb.update_checksum().unwrap();
                sb.serialize(&mut chips.sd[copy].contents).unwrap();
            }
        }
        // The card's data block 5 differs from the flash's: a card kept serves it, a rebuild
        // puts the flash's back.
        chips.sd[DATA_OFFSET as usize + 5] = pattern(5, 77);
        if case == "copy of another volume" || case == "zeroed" {
            // Without the flash to say which volume this is, the copy must not say it either:
            // the card has none (the copy of a superblock that reads blank speaks only for the
            // flash's volume).
            let mut blank = Chips::new();
            blank.sd = chips.sd.clone();
            let (sd, nor) = blank.members(SdFaults::default(), false);
            let mut storage: MirrorStorage = MirrorStorage::new();
            let refused = Mirror::open(sd, nor, &mut storage).err();
            assert!(
                matches!(
                    refused.as_ref().map(|r| &r.error),
                    Some(VolumeError::NoVolume)
                ),
                "{case}: a card alone with another volume's copy is no volume"
            );
        }
        let (sd, nor) = chips.members(SdFaults::default(), false);
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = Mirror::open(sd, nor, &mut storage).unwrap();
        let h = vol.health();
        assert!(!h.degraded, "{case}: {h:?}");
        if case == "torn" || case == "zeroed" {
            assert_eq!(h.synced_sectors, 0, "{case}: the card is kept: {h:?}");
            let mut b = [Block::new()];
            vol.read(&mut b, BlockIdx(5)).unwrap();
            assert!(
                b[0].contents == pattern(5, 77).contents,
                "{case}: the card, in sync, serves its own block"
            );
        } else {
            assert!(
                h.synced_sectors >= vol.sectors(),
                "{case}: the card is rebuilt in full: {h:?}"
            );
            verify(&vol, &versions, case);
        }
        vol.close().unwrap();
        assert!(
            Superblock::<2>::parse(&chips.sd[SUPERBLOCK_SECTOR as usize].contents).is_ok(),
            "{case}: the superblock is written again"
        );
    }
}

/// A cut left the card's superblock erased, and the flash's md superblock lost a bit, so
/// that the flash cannot say which volume it holds: the card's copy is all there is. The
/// volume opens from it, the card kept (it serves its own block), the flash rewritten in full.
/// Before (2026-12-06, found by the `volume_faults` fuzz target) the mount refused with
/// `NoVolume`, as it must for a blank card beside a flash that holds no volume at all.
#[test]
fn a_blank_card_superblock_beside_unreadable_flash_metadata_is_read_from_its_copy() {
    let mut chips = Chips::new();
    let versions = written_and_closed(&mut chips);
    let flash_sb = {
        let mut nor = Nor::mount(NorSim::new(&mut chips.nor, &mut chips.wear, 2)).unwrap();
        let mut b = [Block::new()];
        nor.read(SUPERBLOCK_SECTOR, &mut b).unwrap();
        b[0].clone()
    };
    assert!(Superblock::<2>::parse(&flash_sb.contents).is_ok());
    rot_on_flash(&mut chips.nor, &flash_sb);
    chips.sd[SUPERBLOCK_SECTOR as usize] = Block::new();
    chips.sd[DATA_OFFSET as usize + 5] = pattern(5, 77);
    let (sd, nor) = chips.members(SdFaults::default(), false);
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap_or_else(|e| panic!("open: {:?}", e.error));
    let h = vol.health();
    assert!(!h.degraded, "{h:?}");
    assert!(
        h.synced_sectors >= vol.sectors(),
        "the flash is rewritten: {h:?}"
    );
    let mut b = [Block::new()];
    vol.read(&mut b, BlockIdx(5)).unwrap();
    assert!(
        b[0].contents == pattern(5, 77).contents,
        "the card is the source"
    );
    let mut expect = versions;
    expect[5] = 77;
    verify(&vol, &expect, "blank card, unreadable flash metadata");
    vol.close().unwrap();
}

/// The card was out while writes went to the flash alone; then the flash's bitmap block lost
/// a bit (the store reads it `Corrupt`). The flash is still the freshest member: it is kept
/// and the card rebuilt from it. Before (2026-12-06) the failed read made the flash's metadata
/// count as none: the flash was rewritten in full from the stale card, and the writes it held
/// alone were lost.
#[test]
fn a_flash_whose_bitmap_block_rotted_keeps_the_writes_only_it_holds() {
    let mut chips = Chips::new();
    let mut versions = written_and_closed(&mut chips);
    {
        let (sd, nor) = chips.members(SdFaults::default(), false);
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = Mirror::open(sd, nor, &mut storage).unwrap();
        vol.with_members(|sd, _| sd.dev.remove());
        for s in 0..6u64 {
            vol.write(&[pattern(s, 2)], BlockIdx(s as u32)).unwrap();
            versions[s as usize] = 2;
        }
        assert!(vol.health().degraded);
        let (sd, _) = vol
            .close()
            .unwrap_or_else(|r| panic!("close: {:?}", r.error));
        sd.dev.insert();
    }
    let bitmap = {
        let mut nor = Nor::mount(NorSim::new(&mut chips.nor, &mut chips.wear, 2)).unwrap();
        let mut b = [Block::new()];
        nor.read(BITMAP_SECTOR, &mut b).unwrap();
        b[0].clone()
    };
    rot_on_flash(&mut chips.nor, &bitmap);
    let (sd, nor) = chips.members(SdFaults::default(), false);
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    let h = vol.health();
    assert!(!h.degraded, "{h:?}");
    verify(&vol, &versions, "the flash's bitmap block rotted");
    vol.with_members(|sd, _| {
        for s in 0..6u64 {
            let mut b = [Block::new()];
            sd.read(DATA_OFFSET + s, &mut b).unwrap();
            assert!(
                b[0].contents == pattern(s, 2).contents,
                "the card got sector {s} from the flash"
            );
        }
    });
    vol.close().unwrap();
}

/// A card whose bitmap sector cannot be read as a bitmap (a tear that left garbage, or one
/// that the card reports as a read error) but whose superblock reads well is still the
/// volume's card: it is kept, and serves the block whose flash copy rotted. It was taken for a
/// new card and rebuilt in full from the flash, which lost that block (the same finding as the
/// torn superblock); with the read error, until 2026-12-06, and with the flash behind, that
/// lost every write the flash had missed. Its bits are gone, so a flash that had fallen behind
/// is rebuilt in full from it; with no flash at all the volume opens on the card alone.
#[test]
fn a_card_whose_bitmap_sector_is_garbage_is_kept() {
    for (flash_behind, read_error) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut chips = Chips::new();
        let mut versions = written_and_closed(&mut chips);
        if flash_behind {
            // The flash fails; writes go on to the card alone.
            let (sd, nor) = chips.members(SdFaults::default(), false);
            let mut storage: MirrorStorage = MirrorStorage::new();
            let vol = Mirror::open(sd, nor, &mut storage).unwrap();
            vol.with_members(|_, nor| nor.flash_mut().faults.broken = true);
            let mut s = 0;
            while !vol.health().degraded {
                vol.write(&[pattern(s, 2)], BlockIdx(s as u32)).unwrap();
                versions[s as usize] = 2;
                s += 1;
            }
            vol.with_members(|_, nor| nor.flash_mut().faults.broken = false);
            vol.close().unwrap();
        } else {
            // A bit of sector 9's block rots on the flash: only the card has it now.
            rot_on_flash(&mut chips.nor, &pattern(9, 1));
        }
        if !read_error {
            let mut rng = Rng::new(5);
            for c in chips.sd[BITMAP_SECTOR as usize].contents.chunks_mut(8) {
                c.copy_from_slice(&rng.next_u64().to_le_bytes());
            }
        }
        let (sd, nor) = chips.members(SdFaults::default(), false);
        if read_error {
            assert!(sd.dev.add_read_error(BITMAP_SECTOR as usize));
        }
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = Mirror::open(sd, nor, &mut storage).unwrap();
        let h = vol.health();
        assert!(
            !h.degraded,
            "flash behind {flash_behind}, read error {read_error}: {h:?}"
        );
        if flash_behind {
            assert!(
                h.synced_sectors >= vol.sectors(),
                "the flash rebuilt in full: {h:?}"
            );
        } else {
            assert_eq!(h.synced_sectors, 0, "the card is kept: {h:?}");
        }
        verify(&vol, &versions, "with the card's bitmap sector garbage");
        // The flash holds every version too (the card serves the reads above).
        vol.with_members(|_, nor| {
            for (s, &v) in versions.iter().enumerate() {
                let mut b = [Block::new()];
                if s == 9 && !flash_behind {
                    assert!(
                        nor.read(DATA_OFFSET + 9, &mut b).is_err(),
                        "the rot is there"
                    );
                    continue;
                }
                nor.read(DATA_OFFSET + s as u64, &mut b).unwrap();
                assert!(
                    b[0].contents == pattern(s as u64, v).contents,
                    "flash behind {flash_behind}: sector {s} on the flash is not version {v}"
                );
            }
        });
        vol.close().unwrap();
        assert!(
            raid1_superblock::BitmapSuperblock::parse(&chips.sd[BITMAP_SECTOR as usize].contents)
                .is_ok(),
            "the bitmap sector is written again"
        );
    }
    // No flash at all: the volume opens on the card, whose chunk size is then its own guess.
    let mut chips = Chips::new();
    let versions = written_and_closed(&mut chips);
    chips.sd[BITMAP_SECTOR as usize] = Block::new();
    chips.nor.fill(0xFF);
    let (sd, nor) = chips.members(SdFaults::default(), false);
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    verify(&vol, &versions, "on the card alone");
}

/// A member whose bitmap sector reads at the mount's probe and fails at its next read (a
/// bit the flash's read flipped for a moment, which its CRC catches; a card that stopped
/// answering).
struct SecondBitmapReadFails<M> {
    inner: M,
    reads: u32,
}

impl<M> SecondBitmapReadFails<M> {
    fn new(inner: M) -> Self {
        SecondBitmapReadFails { inner, reads: 0 }
    }
}

impl<M: Member> Member for SecondBitmapReadFails<M> {
    fn read(&mut self, sector: u64, blocks: &mut [Block]) -> Result<(), MemberFault> {
        if sector == BITMAP_SECTOR {
            self.reads += 1;
            if self.reads == 2 {
                return Err(MemberFault);
            }
        }
        self.inner.read(sector, blocks)
    }
    fn write(&mut self, sector: u64, blocks: &[Block]) -> Result<(), MemberFault> {
        self.inner.write(sector, blocks)
    }
    fn sectors(&mut self) -> Result<u64, MemberFault> {
        self.inner.sectors()
    }
    fn damaged(&self) -> bool {
        self.inner.damaged()
    }
}

/// One member went on alone (the card pulled, or the flash failing), so its bitmap alone
/// knows the chunks the other missed; at the next mount its bitmap sector reads at the probe,
/// then fails when the mount reads its bits. Those bits are unknown, so every chunk counts as
/// dirty and the stale member is rebuilt in full. Before (2026-12-06) the failed read was
/// skipped: the stale member was re-added from the other's bits alone, kept its old blocks in
/// the chunks it missed and served them as in sync (found by the `volume_zones` fuzz target,
/// where a read of the flash flipped a bit).
#[test]
fn a_bitmap_sector_that_fails_after_the_probe_leaves_no_chunk_clean() {
    for flash_alone in [true, false] {
        let mut chips = Chips::new();
        let mut versions = written_and_closed(&mut chips);
        {
            let (sd, nor) = chips.members(SdFaults::default(), false);
            let mut storage: MirrorStorage = MirrorStorage::new();
            let vol = Mirror::open(sd, nor, &mut storage).unwrap();
            vol.with_members(|sd, nor| {
                if flash_alone {
                    sd.dev.remove();
                } else {
                    nor.flash_mut().faults.broken = true;
                }
            });
            for s in 100..104u64 {
                vol.write(&[pattern(s, 2)], BlockIdx(s as u32)).unwrap();
                versions[s as usize] = 2;
            }
            assert!(vol.health().degraded);
            let (sd, mut nor) = vol
                .close()
                .unwrap_or_else(|r| panic!("close: {:?}", r.error));
            sd.dev.insert();
            nor.flash_mut().faults.broken = false;
        }
        let what = if flash_alone {
            "the flash went on alone"
        } else {
            "the card went on alone"
        };
        let (sd, nor) = chips.members(SdFaults::default(), false);
        // The member that went on alone holds the bits that matter.
        if flash_alone {
            open_rebuilt(sd, SecondBitmapReadFails::new(nor), &versions, what);
        } else {
            open_rebuilt(SecondBitmapReadFails::new(sd), nor, &versions, what);
        }
    }
}

/// Opens the volume on `sd` and `nor` and checks it: both members in sync and holding every
/// version of `versions`, the stale one rebuilt in full.
fn open_rebuilt<A: Member, B: Member>(sd: A, nor: B, versions: &[u32], what: &str) {
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage)
        .unwrap_or_else(|e| panic!("{what}: open: {:?}", e.error));
    let h = vol.health();
    assert!(!h.degraded, "{what}: {h:?}");
    verify(&vol, versions, what);
    vol.with_members(|sd, nor| {
        for (s, &v) in versions.iter().enumerate() {
            for (name, m) in [("card", sd as &mut dyn Member), ("flash", nor)] {
                let mut b = [Block::new()];
                m.read(DATA_OFFSET + s as u64, &mut b).unwrap();
                assert!(
                    b[0].contents == pattern(s as u64, v).contents,
                    "{what}: sector {s} on the {name} is not version {v}"
                );
            }
        }
    });
    assert!(
        h.synced_sectors >= vol.sectors(),
        "{what}: every chunk counts as dirty: {h:?}"
    );
}

/// A member that answers reads but not its size, `fails` times (a card whose CSD read fails
/// on a noisy bus).
struct SizeFails<M> {
    inner: M,
    fails: u32,
}

impl<M: Member> Member for SizeFails<M> {
    fn read(&mut self, sector: u64, blocks: &mut [Block]) -> Result<(), MemberFault> {
        self.inner.read(sector, blocks)
    }
    fn write(&mut self, sector: u64, blocks: &[Block]) -> Result<(), MemberFault> {
        self.inner.write(sector, blocks)
    }
    fn sectors(&mut self) -> Result<u64, MemberFault> {
        if self.fails > 0 {
            self.fails -= 1;
            return Err(MemberFault);
        }
        self.inner.sectors()
    }
}

/// The card's size query fails at a mount while its metadata reads: the card is the volume's
/// and in sync, and the superblocks written for it record the room the volume uses on it
/// (md's `data_size`), until a mount that reads its size records that. Recorded as none
/// (before 2026-12-06), its superblock could not be written: the first write failed the
/// card, and the volume went on the flash alone.
#[test]
fn a_card_whose_size_query_fails_at_the_mount_keeps_its_superblock() {
    let mut chips = Chips::new();
    let mut versions = written_and_closed(&mut chips);
    {
        let (sd, nor) = chips.members(SdFaults::default(), false);
        let sd = SizeFails {
            inner: sd,
            fails: 1,
        };
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = Mirror::open(sd, nor, &mut storage).unwrap();
        assert!(!vol.health().degraded, "{:?}", vol.health());
        // The flash fails; the card goes on alone.
        vol.with_members(|_, nor| nor.flash_mut().faults.broken = true);
        for s in 0..4u64 {
            vol.write(&[pattern(s, 2)], BlockIdx(s as u32))
                .unwrap_or_else(|e| panic!("write {s}: {e:?} {:?}", vol.health()));
            versions[s as usize] = 2;
        }
        assert!(vol.health().degraded);
        let (_, mut nor) = vol.into_members();
        nor.flash_mut().faults.broken = false;
    }
    let data_size = |chips: &Chips| {
        Superblock::<2>::parse(&chips.sd[SUPERBLOCK_SECTOR as usize].contents)
            .expect("the card's superblock parses")
            .data_size
    };
    assert_eq!(data_size(&chips), versions.len() as u64, "the room in use");
    let (sd, nor) = chips.members(SdFaults::default(), false);
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    assert!(!vol.health().degraded, "{:?}", vol.health());
    verify(&vol, &versions, "after the card's size query failed");
    vol.close()
        .unwrap_or_else(|r| panic!("close: {:?}", r.error));
    assert_eq!(
        data_size(&chips),
        SD_BLOCKS as u64 - DATA_OFFSET,
        "the card's room"
    );
}

/// A card put in place of the volume's records its own room in its superblock (Linux md
/// refuses a member whose `data_size` is beyond its end); one smaller than the volume is
/// refused, nothing written to it, as mdadm refuses to add a device too small. Before
/// (2026-12-06) the old card's size was recorded, and a card too small was recovered until
/// a write fell beyond its end.
#[test]
fn a_card_put_in_place_of_the_volumes_is_sized_on_its_own() {
    let mut chips = Chips::new();
    let versions = written_and_closed(&mut chips);
    let size = versions.len() as u64;
    for blocks in [
        DATA_OFFSET + size - 1,
        DATA_OFFSET + size,
        2 * SD_BLOCKS as u64,
    ] {
        let mut other = vec![Block::new(); blocks as usize];
        let (sd, nor) = chips.members(SdFaults::default(), false);
        let slot = Slot {
            cards: [sd, SdMember::new(SdSim::new(&mut other, 3))],
            other: false,
        };
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = Mirror::open(slot, nor, &mut storage).unwrap();
        vol.with_members(|slot, _| {
            slot.cards[0].dev.remove();
            slot.other = true;
        });
        vol.sd_removed().unwrap();
        let r = vol.sd_inserted();
        let h = vol.health();
        if blocks < DATA_OFFSET + size {
            assert_eq!(r, Err(VolumeError::TooSmall), "{blocks} blocks: {h:?}");
            assert!(h.degraded, "{blocks} blocks: {h:?}");
        } else {
            r.unwrap_or_else(|e| panic!("{blocks} blocks: {e}"));
            assert!(!h.degraded, "{blocks} blocks: {h:?}");
            verify(&vol, &versions, "on a card put in place");
        }
        vol.close()
            .unwrap_or_else(|r| panic!("close: {:?}", r.error));
        if blocks < DATA_OFFSET + size {
            assert!(
                other.iter().all(|b| b.contents == [0; 512]),
                "nothing written to a card too small"
            );
        } else {
            let sb = Superblock::<2>::parse(&other[SUPERBLOCK_SECTOR as usize].contents)
                .expect("the card's superblock");
            assert_eq!(sb.data_size, blocks - DATA_OFFSET, "{blocks} blocks");
        }
    }
    // At a mount too: a blank card too small stays out, nothing written to it.
    let mut other = vec![Block::new(); (DATA_OFFSET + size - 1) as usize];
    let (sd, nor) = chips.members(SdFaults::default(), false);
    let slot = Slot {
        cards: [sd, SdMember::new(SdSim::new(&mut other, 3))],
        other: true,
    };
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(slot, nor, &mut storage).unwrap();
    let h = vol.health();
    assert!(h.degraded && h.sd == MemberState::Absent, "{h:?}");
    verify(&vol, &versions, "the flash alone");
    vol.close()
        .unwrap_or_else(|r| panic!("close: {:?}", r.error));
    assert!(
        other.iter().all(|b| b.contents == [0; 512]),
        "nothing written to a card too small at a mount"
    );
}

/// A card pulled as its superblock was being rewritten (torn) and put back: `sd_inserted`
/// reads the copy, and the card is re-added with a bitmap-guided recovery, not rebuilt in
/// full as a new card.
#[test]
fn a_card_put_back_with_a_torn_superblock_is_re_added_from_its_copy() {
    let mut chips = Chips::new();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = open_reinit(&mut chips, &mut storage);
    let mut versions = vec![0u32; vol.sectors() as usize];
    write_all(&vol, &mut versions, 1);
    vol.tick(10_000_000_000).unwrap();
    vol.with_members(|sd, _| {
        sd.dev.remove();
        sd.dev.with_blocks(tear_card_superblock);
    });
    for s in [3usize, 4] {
        vol.write(&[pattern(s as u64, 2)], BlockIdx(s as u32))
            .unwrap();
        versions[s] = 2;
    }
    vol.with_members(|sd, _| sd.dev.insert());
    vol.sd_inserted().unwrap();
    let h = vol.health();
    assert!(!h.degraded, "{h:?}");
    assert!(
        h.synced_sectors > 0 && h.synced_sectors <= 8,
        "copied {} sectors: not a bitmap recovery",
        h.synced_sectors
    );
    verify(&vol, &versions, "after reinsertion");
    vol.with_members(|sd, _| {
        sd.dev.with_blocks(|b| {
            assert!(Superblock::<2>::parse(&b[SUPERBLOCK_SECTOR as usize].contents).is_ok())
        })
    });
}

/// A card whose superblock's block reads as an error at the mount (a torn block that the
/// card reports as unreadable, or one failed read) is still the volume's card when its copy
/// reads: it is kept, and serves the block whose flash copy rotted. It was added as a new
/// card and rebuilt in full from the flash, which lost that block. A card that answers
/// nothing is not helped by the copy (`a_card_that_does_not_answer_is_refused_not_recovered_in_full`).
#[test]
fn a_card_whose_superblock_read_fails_is_kept_from_its_copy() {
    let mut chips = Chips::new();
    let versions = written_and_closed(&mut chips);
    rot_on_flash(&mut chips.nor, &pattern(9, 1));
    let faults = SdFaults {
        fail_read: raid1_embedded::sim::Countdown::after(0),
        ..SdFaults::default()
    };
    let (sd, nor) = chips.members(faults, false);
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    let h = vol.health();
    assert!(
        !h.degraded && h.synced_sectors == 0,
        "the card is kept: {h:?}"
    );
    verify(
        &vol,
        &versions,
        "with the card's superblock read failing once",
    );
}

/// The NOR member, watched: whether its store held the record of its damage at each write.
struct Watched<'a> {
    nor: Nor<'a>,
    writes: Vec<(u64, bool)>,
}

impl Member for Watched<'_> {
    fn read(&mut self, sector: u64, blocks: &mut [Block]) -> Result<(), MemberFault> {
        self.nor.read(sector, blocks)
    }
    fn write(&mut self, sector: u64, blocks: &[Block]) -> Result<(), MemberFault> {
        self.writes.push((sector, self.nor.holds_damage()));
        self.nor.write(sector, blocks)
    }
    fn sectors(&mut self) -> Result<u64, MemberFault> {
        self.nor.sectors()
    }
    fn damaged(&self) -> bool {
        self.nor.damaged()
    }
    fn release_damage(&mut self) {
        self.nor.release_damage()
    }
}

/// A damaged flash rebuilt from the card: its store holds the record of the damage through
/// its first superblock round, which says it is rebuilt in full (released earlier, a
/// collection made for that write may erase the record, and a power cut then leaves a flash
/// that mounts clean and re-joins from the bitmap), and lets it go then. Kept beside a stale
/// card, it lets go at its first superblock write. Never let go, the held sectors would cost
/// room for good.
#[test]
fn a_damaged_flash_holds_the_record_until_its_rebuild_is_recorded() {
    for card_current in [true, false] {
        let mut chips = Chips::new();
        damaged_after(&mut chips, |vol, _| {
            if !card_current {
                vol.with_members(|sd, _| sd.dev.remove());
                vol.write(&[pattern(3, 3)], BlockIdx(3)).unwrap();
            }
        });
        let (sd, nor) = chips.members(SdFaults::default(), false);
        assert!(nor.damaged() && nor.holds_damage());
        let nor = Watched {
            nor,
            writes: Vec::new(),
        };
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = Mirror::open(sd, nor, &mut storage).unwrap();
        assert_eq!(vol.health().nor_damaged, !card_current);
        let (_, watched) = vol.into_members();
        let what = format!("card current {card_current}: {:?}", &watched.writes[..4]);
        // The first round: the superblock and the bitmap sector, held.
        assert_eq!(watched.writes[0], (SUPERBLOCK_SECTOR, true), "{what}");
        assert_eq!(watched.writes[1], (BITMAP_SECTOR, true), "{what}");
        assert!(watched.writes[2..].iter().all(|&(_, held)| !held), "{what}");
        assert!(!watched.nor.holds_damage());
    }
}

/// A card whose metadata is the flash's (the flash's superblock and bitmap sector written onto
/// it, as a factory or a user copying the wrong image would): md's magic, this volume's UUID
/// and the freshest event count, but member 1's number. It is no superblock of the card's: the
/// card is rebuilt in full from the flash (the assembly would also refuse a second claim on
/// the flash's slot). Beside a blank flash it is no volume: taken at its word, it mounted and
/// served data two versions old as the volume's.
#[test]
fn a_card_carrying_the_flashs_superblock_is_rebuilt_not_trusted() {
    let mut chips = Chips::new();
    let mut versions = vec![0u32; 32];
    let (sd, nor) = chips.members(SdFaults::default(), true);
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    write_all(&vol, &mut versions, 1);
    let _ = vol.close().unwrap();
    let stale = chips.sd.clone();
    let (sd, nor) = chips.members(SdFaults::default(), false);
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    write_all(&vol, &mut versions, 2);
    let mut meta = [[0u8; BLOCK_LEN]; 2];
    {
        let (_, mut nor) = vol.close().unwrap();
        nor.read_block(SUPERBLOCK_SECTOR as u32, &mut meta[0])
            .unwrap();
        nor.read_block(BITMAP_SECTOR as u32, &mut meta[1]).unwrap();
    }
    let sb = Superblock::<2>::parse(&meta[0]).unwrap();
    assert_eq!(sb.dev_number, 1, "not the flash's superblock");
    chips.sd = stale;
    for (sector, block) in [
        (SUPERBLOCK_SECTOR, 0),
        (raid1_embedded::volume::SUPERBLOCK_COPY_SECTOR, 0),
        (BITMAP_SECTOR, 1),
    ] {
        chips.sd[sector as usize].contents = meta[block];
    }
    let (flash, wear) = (chips.nor.clone(), chips.wear.clone());
    chips.nor.fill(0xFF);
    let (sd, nor) = chips.members(SdFaults::default(), false);
    match Mirror::open(sd, nor, &mut storage) {
        Err(refused) => assert!(
            matches!(refused.error, VolumeError::NoVolume),
            "{}",
            refused.error
        ),
        Ok(_) => panic!("mounted from a card whose superblock is the flash's"),
    }
    (chips.nor, chips.wear) = (flash, wear);
    let (sd, nor) = chips.members(SdFaults::default(), false);
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    vol.finish().unwrap();
    let h = vol.health();
    assert!(!h.degraded && h.synced_sectors >= vol.sectors(), "{h:?}");
    verify(&vol, &versions, "after the mount");
    // The card was rewritten: its data area holds every sector's last version.
    vol.with_members(|sd, _| {
        for (s, &v) in versions.iter().enumerate() {
            let mut b = [Block::new()];
            sd.dev
                .read(&mut b, BlockIdx((DATA_OFFSET + s as u64) as u32))
                .unwrap();
            assert!(
                b[0].contents == pattern(s as u64, v).contents,
                "the card's sector {s} is not version {v}"
            );
        }
    });
}

/// A card that checks, at each write of its superblock, how many rounds behind it the copy
/// on the card is then: what a power cut tearing that write leaves to read.
struct CopyWatch<'a> {
    sd: SdMember<SdSim<'a>>,
    /// The most rounds the copy lagged (`u64::MAX`: no superblock of the volume there).
    lag: u64,
    rounds: u32,
}

impl Member for CopyWatch<'_> {
    fn read(&mut self, sector: u64, blocks: &mut [Block]) -> Result<(), MemberFault> {
        self.sd.read(sector, blocks)
    }
    fn write(&mut self, sector: u64, blocks: &[Block]) -> Result<(), MemberFault> {
        for (i, b) in blocks.iter().enumerate() {
            if sector + i as u64 != SUPERBLOCK_SECTOR {
                continue;
            }
            let new = Superblock::<2>::parse(&b.contents)
                .expect("a superblock")
                .events;
            let mut copy = [Block::new()];
            self.sd
                .read(raid1_embedded::volume::SUPERBLOCK_COPY_SECTOR, &mut copy)?;
            let lag = Superblock::<2>::parse(&copy[0].contents)
                .map_or(u64::MAX, |c| new.saturating_sub(c.events));
            self.lag = self.lag.max(lag);
            self.rounds += 1;
        }
        self.sd.write(sector, blocks)
    }
    fn sectors(&mut self) -> Result<u64, MemberFault> {
        self.sd.sectors()
    }
    fn reinit(&mut self) {
        self.sd.reinit()
    }
}

/// The card's superblock copy is never more than one round behind the superblock a round
/// writes over (the copy stands in when a power cut tears that write), also when the card
/// comes back after it was pulled, or after it failed on a write: rounds went by without it,
/// so the first round that reaches it again, dirty or not, writes the copy too. Assumed
/// current from before, the copy stayed at the events of the round before the card left.
#[test]
fn the_cards_superblock_copy_follows_it_after_the_card_comes_back() {
    use raid1_embedded::sim::Countdown;
    use raid1_embedded::volume::SD;
    for pulled in [true, false] {
        let mut chips = Chips::new();
        let mut versions = vec![0u32; 16];
        let (sd, nor) = chips.members(SdFaults::default(), true);
        let sd = CopyWatch {
            sd,
            lag: 0,
            rounds: 0,
        };
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = Mirror::open(sd, nor, &mut storage).unwrap();
        write_all(&vol, &mut versions, 1);
        vol.clean().unwrap();
        if pulled {
            vol.with_members(|sd, _| sd.sd.dev.remove());
            vol.sd_removed().unwrap();
        } else {
            vol.with_members(|sd, _| {
                sd.sd.dev.set_faults(SdFaults {
                    fail_write: Countdown::after(0),
                    ..SdFaults::default()
                })
            });
        }
        write_all(&vol, &mut versions, 2);
        vol.clean().unwrap();
        write_all(&vol, &mut versions, 3);
        assert!(
            vol.health().degraded,
            "pulled {pulled}: the card is still in"
        );
        vol.with_members(|sd, _| {
            sd.sd.dev.set_faults(SdFaults::default());
            sd.sd.dev.insert();
        });
        // Back while the array is dirty: the first round that reaches the card is one that
        // keeps it dirty.
        if pulled {
            vol.sd_inserted().unwrap();
        } else {
            vol.rejoin(SD).unwrap();
        }
        assert!(!vol.health().degraded, "pulled {pulled}: not back");
        write_all(&vol, &mut versions, 4);
        vol.clean().unwrap();
        let (sd, _) = vol.into_members();
        assert!(sd.rounds > 4, "pulled {pulled}: {} rounds", sd.rounds);
        assert!(
            sd.lag <= 1,
            "pulled {pulled}: a round wrote the superblock over a copy {} rounds behind",
            sd.lag
        );
    }
}

/// The formatted volume over a card driver that must be told of each insertion (as
/// embedded-sdmmc's `SdCard`: until then every command fails).
fn open_reinit<'b, 'a>(chips: &'a mut Chips, storage: &'b mut MirrorStorage) -> Vol<'b, 'a> {
    let faults = SdFaults {
        reinit_on_insert: true,
        ..SdFaults::default()
    };
    let (sd, nor) = chips.members(faults, true);
    Mirror::open(sd, nor, storage).unwrap()
}

/// Every sector written twice, the second time with the flash failing: the card holds the
/// only copy in sync, and the flash, whole again, is out. The versions written.
fn card_alone_in_sync(vol: &Vol<'_, '_>) -> Vec<u32> {
    let mut versions = vec![0u32; vol.sectors() as usize];
    write_all(vol, &mut versions, 1);
    vol.with_members(|_, nor| nor.flash_mut().faults.broken = true);
    write_all(vol, &mut versions, 2);
    assert_eq!(vol.health().nor, MemberState::Faulty);
    vol.with_members(|_, nor| nor.flash_mut().faults.broken = false);
    versions
}

#[test]
fn a_card_swapped_while_the_volume_was_idle_is_recovered_in_full() {
    // The card was pulled and a new one put in between two commands (card-detect reports the
    // insertion only, or the firmware slept through the removal): the volume still holds the
    // old card in sync when it hears of the insertion.
    for during_recovery in [false, true] {
        let mut chips = Chips::new();
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = open_reinit(&mut chips, &mut storage);
        let mut versions = vec![0u32; vol.sectors() as usize];
        write_all(&vol, &mut versions, 1);
        if during_recovery {
            vol.with_members(|sd, _| sd.dev.replace_with_new_card());
            vol.sd_removed().unwrap();
            vol.sd_inserted_begin().unwrap();
            vol.step(4).unwrap();
            assert!(vol.health().degraded, "{:?}", vol.health());
        }
        vol.with_members(|sd, _| sd.dev.replace_with_new_card());
        vol.sd_inserted().unwrap();
        let h = vol.health();
        assert!(!h.degraded, "{h:?}");
        // The flash goes: the new card alone must hold the volume.
        vol.with_members(|_, nor| nor.flash_mut().faults.broken = true);
        verify(
            &vol,
            &versions,
            if during_recovery {
                "card swapped during its recovery"
            } else {
                "card swapped while in sync"
            },
        );
    }
}

#[test]
fn the_same_card_reported_inserted_while_in_place_is_left_as_it_is() {
    let mut chips = Chips::new();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = open_reinit(&mut chips, &mut storage);
    // Right after the mount (the card's superblock as the mount read it), then after writes
    // and the clean mark (as the volume last wrote it).
    let mut versions = vec![0u32; vol.sectors() as usize];
    for round in 0..2 {
        let before = vol.health();
        vol.with_members(|sd, _| sd.dev.insert());
        vol.sd_inserted().unwrap();
        let h = vol.health();
        assert!(
            h.sd == MemberState::InSync && h.synced_sectors == before.synced_sectors,
            "round {round}: the card in place was rebuilt: {h:?}"
        );
        assert_eq!(h.events, before.events, "round {round}: {h:?}");
        write_all(&vol, &mut versions, round + 1);
        vol.tick(10_000_000_000).unwrap();
    }
    vol.with_members(|_, nor| nor.flash_mut().faults.broken = true);
    verify(&vol, &versions, "the card in place");
}

#[test]
fn another_card_in_place_of_the_only_copy_is_neither_read_nor_written() {
    let mut chips = Chips::new();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = open_reinit(&mut chips, &mut storage);
    let versions = card_alone_in_sync(&vol);
    let card: Vec<Block> = vol.with_members(|sd, _| sd.dev.with_blocks(|b| b.to_vec()));
    vol.with_members(|sd, _| sd.dev.replace_with_new_card());
    let other: Vec<Block> = vol.with_members(|sd, _| sd.dev.with_blocks(|b| b.to_vec()));
    assert_eq!(vol.sd_inserted(), Err(VolumeError::WrongCard));
    assert!(vol.health().wrong_card);
    let mut b = [Block::new()];
    assert_eq!(vol.read(&mut b, BlockIdx(0)), Err(VolumeError::Io));
    assert_eq!(
        vol.write(&[pattern(0, 3)], BlockIdx(0)),
        Err(VolumeError::Io)
    );
    // Neither a rejoin of the flash nor a tick touches the other card.
    let _ = vol.rejoin(raid1_embedded::volume::NOR);
    let _ = vol.tick(20_000_000_000);
    vol.with_members(|sd, _| {
        sd.dev.with_blocks(|b| {
            assert!(
                b.iter().zip(&other).all(|(x, y)| x.contents == y.contents),
                "the other card was written"
            )
        })
    });
    // The volume's card back: all of it serves again.
    vol.with_members(|sd, _| {
        sd.dev.with_blocks(|b| b.clone_from_slice(&card));
        sd.dev.insert();
    });
    vol.sd_inserted().unwrap();
    let h = vol.health();
    assert!(!h.wrong_card && h.sd == MemberState::InSync, "{h:?}");
    verify(&vol, &versions, "the volume's card put back");
    vol.rejoin(raid1_embedded::volume::NOR).unwrap();
    vol.with_members(|sd, _| sd.dev.remove());
    verify(
        &vol,
        &versions,
        "the flash rebuilt after the card came back",
    );
}

/// The card's insertion reported while it holds the only copy in sync and reads nothing (not
/// seated yet, a contact bouncing): nothing says whether it is the volume's card, so it is
/// neither read nor written, and the error says the card could not be read (not that it is
/// another card). Reported inserted again once it reads, it serves. The same for a card whose
/// superblock is torn and whose copy is older than any count the volume knows the card took.
#[test]
fn a_card_that_cannot_be_read_in_place_of_the_only_copy_is_not_served_until_it_reads() {
    let mut chips = Chips::new();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = open_reinit(&mut chips, &mut storage);
    let mut versions = card_alone_in_sync(&vol);
    vol.with_members(|sd, _| sd.dev.remove());
    assert_eq!(vol.sd_inserted(), Err(VolumeError::Probe));
    assert!(vol.health().wrong_card, "{:?}", vol.health());
    vol.with_members(|sd, _| sd.dev.insert());
    let mut b = [Block::new()];
    assert_eq!(vol.read(&mut b, BlockIdx(0)), Err(VolumeError::Io));
    vol.sd_inserted().unwrap();
    let h = vol.health();
    assert!(!h.wrong_card && h.sd == MemberState::InSync, "{h:?}");
    verify(&vol, &versions, "the card read at its second insertion");
    // Its superblock torn and its copy older than the volume knows the card took (an image):
    // not known, so fenced, but with `Probe`, not `WrongCard`: the superblock did not read.
    let old_copy = vol.with_members(|sd, _| sd.dev.with_blocks(|b| b[9].clone()));
    for round in 0..2u32 {
        vol.tick(10_000_000_000 * u64::from(round + 1)).unwrap();
        vol.write(&[pattern(0, 3 + round)], BlockIdx(0)).unwrap();
        versions[0] = 3 + round;
    }
    vol.with_members(|sd, _| {
        sd.dev.with_blocks(|b| {
            b[9] = old_copy.clone();
            b[8].contents[40] ^= 0x10;
        })
    });
    assert_eq!(vol.sd_inserted(), Err(VolumeError::Probe));
    assert!(vol.health().wrong_card, "{:?}", vol.health());
    vol.with_members(|sd, _| sd.dev.with_blocks(|b| b[8].contents[40] ^= 0x10));
    vol.sd_inserted().unwrap();
    assert!(!vol.health().wrong_card, "{:?}", vol.health());
    verify(&vol, &versions, "the card whose superblock reads again");
}

/// The card holds the only copy in sync and its superblock cannot be read at its insertion
/// (one read error, or a block torn as the card was pulled in the middle of a superblock
/// write): its copy in sector 9 is read instead, and the copy may be a round behind (the
/// round that marks the volume dirty does without it). It is the volume's card all the same.
#[test]
fn the_only_card_back_with_its_superblock_unreadable_is_known_by_its_copy() {
    for torn in [false, true] {
        let mut chips = Chips::new();
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = open_reinit(&mut chips, &mut storage);
        let mut versions = card_alone_in_sync(&vol);
        // Marked clean (the copy written), then dirty again (the copy left a round behind).
        vol.tick(10_000_000_000).unwrap();
        vol.write(&[pattern(5, 3)], BlockIdx(5)).unwrap();
        versions[5] = 3;
        if torn {
            // Pulled as the clean mark is written: the round fails, and the superblock is
            // left torn (its checksum does not match).
            vol.with_members(|sd, _| sd.dev.remove());
            assert!(vol.sd_removed().is_err());
            let _ = vol.tick(20_000_000_000);
            vol.with_members(|sd, _| {
                sd.dev.with_blocks(|b| b[8].contents[40] ^= 0x10);
                sd.dev.insert();
            });
        } else {
            vol.with_members(|sd, _| {
                sd.dev.set_faults(SdFaults {
                    fail_read: raid1_embedded::sim::Countdown::after(0),
                    reinit_on_insert: true,
                    ..SdFaults::default()
                })
            });
        }
        vol.sd_inserted()
            .unwrap_or_else(|e| panic!("torn {torn}: {e}"));
        let h = vol.health();
        assert!(!h.wrong_card && h.sd == MemberState::InSync, "{h:?}");
        verify(&vol, &versions, "the card known by its copy");
    }
}

/// The volume's only card put back after another was refused in its place, and the power
/// cut before the insertion's rounds reach it: the rounds run while the other card was
/// fenced went to the flash alone (a rejoin of the flash, the volume marked clean), so the
/// flash's superblock is newer than the card's by several counts. The next mount must still
/// take the card, the only copy, as in sync (the flash's superblock names it in sync).
#[test]
fn the_only_card_put_back_after_a_refusal_survives_a_power_cut() {
    let mut chips = Chips::new();
    let versions = {
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = open_reinit(&mut chips, &mut storage);
        let versions = card_alone_in_sync(&vol);
        let card: Vec<Block> = vol.with_members(|sd, _| sd.dev.with_blocks(|b| b.to_vec()));
        vol.with_members(|sd, _| sd.dev.replace_with_new_card());
        assert_eq!(vol.sd_inserted(), Err(VolumeError::WrongCard));
        let before = vol.health().events;
        let _ = vol.rejoin(raid1_embedded::volume::NOR);
        let _ = vol.tick(20_000_000_000);
        let _ = vol.tick(40_000_000_000);
        assert!(vol.health().events > before + 2, "{:?}", vol.health());
        vol.with_members(|sd, _| {
            sd.dev.with_blocks(|b| b.clone_from_slice(&card));
            sd.dev.insert();
        });
        // The power goes before the insertion's rounds reach the card.
        vol.sd_inserted_begin().unwrap();
        let _ = vol.into_members();
        versions
    };
    let (sd, nor) = chips.members(SdFaults::default(), false);
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap_or_else(|e| panic!("mount: {e:?}"));
    assert_eq!(vol.health().sd, MemberState::InSync, "{:?}", vol.health());
    verify(&vol, &versions, "after the power cut");
}

/// The card's side of `a_flash_back_with_writes_the_card_never_took_is_not_rebuilt_over`
/// (`mirror.rs`): the flash failed while the card went on alone, and at the next boot the
/// card does not answer, so the volume opens from the stale flash, which takes a write of its
/// own. The card, put back, records the flash as failed: it is refused with
/// `VolumeError::SplitBrain`, nothing written to it, rather than rebuilt over.
#[test]
fn a_card_back_with_writes_the_flash_never_took_is_not_rebuilt_over() {
    let mut chips = Chips::new();
    {
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = open_reinit(&mut chips, &mut storage);
        card_alone_in_sync(&vol);
        let _ = vol.into_members();
    }
    let card: Vec<Block> = chips.sd.clone();
    let (sd, nor) = chips.members(SdFaults::default(), false);
    sd.dev.remove();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap_or_else(|r| panic!("{}", r.error));
    let h = vol.health();
    assert!(h.degraded && h.nor == MemberState::InSync, "{h:?}");
    vol.write(&[pattern(4, 7)], BlockIdx(4)).unwrap();
    vol.with_members(|sd, _| sd.dev.insert());
    assert_eq!(vol.sd_inserted(), Err(VolumeError::SplitBrain));
    assert_ne!(vol.health().sd, MemberState::InSync);
    vol.with_members(|sd, _| {
        sd.dev.with_blocks(|b| {
            assert!(
                b.iter().zip(&card).all(|(x, y)| x.contents == y.contents),
                "the card was written"
            )
        })
    });
}

#[test]
fn a_recovery_stopped_by_its_source_starts_again_at_the_next_rejoin() {
    let mut chips = Chips::new();
    let (sd, nor) = chips.members(SdFaults::default(), true);
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    let mut versions = vec![0u32; vol.sectors() as usize];
    vol.with_members(|_, nor| nor.flash_mut().faults.broken = true);
    write_all(&vol, &mut versions, 1);
    vol.with_members(|_, nor| nor.flash_mut().faults.broken = false);
    // The card fails a read of the recovery: md stops it there (nothing else holds the data).
    vol.with_members(|sd, _| {
        sd.dev.set_faults(SdFaults {
            fail_read: raid1_embedded::sim::Countdown::after(0),
            ..SdFaults::default()
        })
    });
    assert_eq!(
        vol.rejoin(raid1_embedded::volume::NOR),
        Err(VolumeError::NotRebuilt)
    );
    let h = vol.health();
    assert!(
        matches!(h.nor, MemberState::Recovering { .. }),
        "the recovery did not stop: {h:?}"
    );
    vol.with_members(|sd, _| sd.dev.set_faults(SdFaults::default()));
    vol.rejoin(raid1_embedded::volume::NOR).unwrap();
    let h = vol.health();
    assert_eq!(h.nor, MemberState::InSync, "{h:?}");
    vol.with_members(|sd, _| sd.dev.remove());
    verify(&vol, &versions, "the flash rebuilt at the second rejoin");
}

/// The card, the only copy in sync, is pulled while the flash is rebuilt from it, and put
/// back: the rebuild's reads of the card failed, so it stopped (md stops a recovery whose
/// source fails), and the card's insertion is the reconfiguration that starts it again; the
/// flash is not left half rebuilt until someone asks for it.
#[test]
fn the_flashs_rebuild_stopped_by_the_card_pulled_goes_on_when_the_card_is_back() {
    for (swapped, steps) in [(false, 1), (false, 6), (true, 3)] {
        let mut chips = Chips::new();
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = open_reinit(&mut chips, &mut storage);
        let versions = card_alone_in_sync(&vol);
        vol.rejoin_begin(raid1_embedded::volume::NOR).unwrap();
        for _ in 0..steps {
            vol.step(2).unwrap();
        }
        let card: Vec<Block> = vol.with_members(|sd, _| sd.dev.with_blocks(|b| b.to_vec()));
        if swapped {
            // Another card in its place for a while: refused, the rebuild's reads fail.
            vol.with_members(|sd, _| sd.dev.replace_with_new_card());
            assert_eq!(vol.sd_inserted(), Err(VolumeError::WrongCard));
        } else {
            vol.with_members(|sd, _| sd.dev.remove());
            assert!(
                vol.sd_removed().is_err(),
                "the only copy in sync was let go"
            );
        }
        let _ = vol.finish();
        let h = vol.health();
        assert!(
            matches!(h.nor, MemberState::Recovering { .. }),
            "the rebuild did not stop: {h:?}"
        );
        vol.with_members(|sd, _| {
            sd.dev.with_blocks(|b| b.clone_from_slice(&card));
            sd.dev.insert();
        });
        vol.sd_inserted().unwrap();
        let h = vol.health();
        assert!(
            h.nor == MemberState::InSync && h.sd == MemberState::InSync && !h.wrong_card,
            "swapped {swapped}, {steps} steps: the flash was left half rebuilt: {h:?}"
        );
        vol.with_members(|sd, _| sd.dev.remove());
        verify(&vol, &versions, "the flash alone after the card came back");
    }
}

#[test]
fn the_only_card_put_back_after_a_failed_write_serves_again() {
    let mut chips = Chips::new();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = open_reinit(&mut chips, &mut storage);
    let mut versions = vec![0u32; vol.sectors() as usize];
    write_all(&vol, &mut versions, 1);
    vol.with_members(|_, nor| nor.flash_mut().faults.broken = true);
    vol.write(&[pattern(3, 2)], BlockIdx(3)).unwrap();
    versions[3] = 2;
    // Idle long enough to be marked clean: the next write marks it dirty first.
    vol.tick(10_000_000_000).unwrap();
    // The card, the only copy, is pulled: the removal is refused (the last member in sync),
    // and a write fails, its superblock round with it.
    vol.with_members(|sd, _| sd.dev.remove());
    assert!(vol.sd_removed().is_err());
    assert_eq!(
        vol.write(&[pattern(9, 2)], BlockIdx(9)),
        Err(VolumeError::Io)
    );
    vol.with_members(|sd, _| sd.dev.insert());
    vol.sd_inserted().unwrap();
    assert!(!vol.health().wrong_card);
    versions[9] = 1;
    verify(&vol, &versions, "the only card put back");
    vol.write(&[pattern(9, 3)], BlockIdx(9)).unwrap();
    versions[9] = 3;
    verify(&vol, &versions, "written again");
}

/// A card that programs the blocks of one write and then reports an error (armed by
/// `lands_then_fails`), and is pulled out at once: every later command fails until the card
/// is put back (its driver reset).
struct LandsThenPulled<'a> {
    card: SdMember<SdSim<'a>>,
    lands_then_fails: bool,
    out: bool,
}

impl Member for LandsThenPulled<'_> {
    fn read(&mut self, sector: u64, blocks: &mut [Block]) -> Result<(), MemberFault> {
        if self.out {
            return Err(MemberFault);
        }
        self.card.read(sector, blocks)
    }
    fn write(&mut self, sector: u64, blocks: &[Block]) -> Result<(), MemberFault> {
        if self.out {
            return Err(MemberFault);
        }
        self.card.write(sector, blocks)?;
        if core::mem::take(&mut self.lands_then_fails) {
            self.out = true;
            return Err(MemberFault);
        }
        Ok(())
    }
    fn sectors(&mut self) -> Result<u64, MemberFault> {
        if self.out {
            return Err(MemberFault);
        }
        self.card.sectors()
    }
    fn reinit(&mut self) {
        self.out = false;
        self.card.reinit();
    }
}

#[test]
fn the_only_card_put_back_after_a_write_that_failed_but_landed_serves_again() {
    let mut chips = Chips::new();
    let (sd, nor) = chips.members(SdFaults::default(), true);
    let sd = LandsThenPulled {
        card: sd,
        lands_then_fails: false,
        out: false,
    };
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    let mut versions = vec![0u32; vol.sectors() as usize];
    write_all(&vol, &mut versions, 1);
    vol.with_members(|_, nor| nor.flash_mut().faults.broken = true);
    vol.write(&[pattern(3, 2)], BlockIdx(3)).unwrap();
    versions[3] = 2;
    // Marked clean: the next write marks the array dirty first, a superblock round that
    // writes the card's superblock in place.
    vol.tick(10_000_000_000).unwrap();
    let before = vol.health().events;
    // The card, the only copy, takes that superblock, reports an error, and is pulled.
    vol.with_members(|sd, _| sd.lands_then_fails = true);
    assert_eq!(
        vol.write(&[pattern(9, 2)], BlockIdx(9)),
        Err(VolumeError::Io)
    );
    let landed = vol.with_members(|sd, _| {
        sd.card.dev.with_blocks(|b| {
            Superblock::<2>::parse(&b[SUPERBLOCK_SECTOR as usize].contents)
                .unwrap()
                .events
        })
    });
    assert!(
        landed > before,
        "the superblock did not land: {landed} {before}"
    );
    // Put back.
    vol.sd_inserted().unwrap();
    assert!(!vol.health().wrong_card);
    verify(&vol, &versions, "the only card put back");
}

#[test]
fn a_card_swapped_during_a_scrub_is_rebuilt_in_full() {
    // The swap falls at each point of the scrub's first windows: reads, compare, repair.
    for (repair, commands) in [false, true]
        .into_iter()
        .flat_map(|r| (0..12).map(move |c| (r, c)))
    {
        let mut chips = Chips::new();
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = open_reinit(&mut chips, &mut storage);
        let mut versions = vec![0u32; vol.sectors() as usize];
        write_all(&vol, &mut versions, 1);
        // One sector differs, for the repair to write.
        vol.with_members(|_, nor| nor.write(DATA_OFFSET + 1, &[pattern(1, 9)]).unwrap());
        vol.scrub_begin(repair).unwrap();
        for _ in 0..commands {
            vol.step(1).unwrap();
        }
        vol.with_members(|sd, _| sd.dev.replace_with_new_card());
        vol.sd_inserted()
            .unwrap_or_else(|e| panic!("repair {repair}, {commands} commands: {e:?}"));
        assert!(!vol.health().degraded, "{:?}", vol.health());
        vol.with_members(|_, nor| nor.flash_mut().faults.broken = true);
        // The differing sector: repaired before the swap, or copied to the new card as the
        // flash held it.
        let mut b = [Block::new()];
        vol.read(&mut b, BlockIdx(1)).unwrap();
        if b[0].contents == pattern(1, 9).contents {
            versions[1] = 9;
        }
        verify(&vol, &versions, "a card swapped during a scrub");
    }
}

#[test]
fn a_card_pulled_during_a_scrub_comes_back() {
    let mut chips = Chips::new();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = open_reinit(&mut chips, &mut storage);
    let mut versions = vec![0u32; vol.sectors() as usize];
    write_all(&vol, &mut versions, 1);
    vol.scrub_begin(false).unwrap();
    vol.with_members(|sd, _| sd.dev.remove());
    vol.sd_removed().unwrap();
    vol.with_members(|sd, _| sd.dev.insert());
    vol.sd_inserted().unwrap();
    assert!(!vol.health().degraded, "{:?}", vol.health());
    verify(&vol, &versions, "a card pulled during a scrub");
}

#[test]
fn a_card_carrying_the_flashs_superblock_swapped_in_is_not_taken_for_the_card() {
    for put_back in [false, true] {
        let mut chips = Chips::new();
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = open_reinit(&mut chips, &mut storage);
        let mut versions = vec![0u32; vol.sectors() as usize];
        write_all(&vol, &mut versions, 1);
        // Another card whose metadata blocks are the flash's (an image of the flash's
        // metadata), its data random.
        vol.with_members(|sd, nor| {
            let mut meta = [Block::new(), Block::new()];
            nor.read(SUPERBLOCK_SECTOR, &mut meta[..1]).unwrap();
            nor.read(BITMAP_SECTOR, &mut meta[1..]).unwrap();
            if put_back {
                // Pulled (the volume hears of it), then that card put in.
                sd.dev.remove();
            }
            sd.dev.replace_with_new_card();
            sd.dev.with_blocks(|b| {
                b[SUPERBLOCK_SECTOR as usize] = meta[0].clone();
                b[raid1_embedded::volume::SUPERBLOCK_COPY_SECTOR as usize] = meta[0].clone();
                b[BITMAP_SECTOR as usize] = meta[1].clone();
            });
        });
        if put_back {
            vol.sd_removed().unwrap();
        }
        // A card whose superblock names the flash's slot is no card of this volume's: a new
        // one, rebuilt in full.
        vol.sd_inserted().unwrap();
        let h = vol.health();
        assert!(
            !h.degraded && h.synced_sectors >= vol.sectors(),
            "put back {put_back}: {h:?}"
        );
        vol.with_members(|_, nor| nor.flash_mut().faults.broken = true);
        // Whatever became of the card, nothing else is served as the volume's.
        for (s, &v) in versions.iter().enumerate() {
            let mut b = [Block::new()];
            if vol.read(&mut b, BlockIdx(s as u32)).is_ok() {
                assert!(
                    b[0].contents == pattern(s as u64, v).contents,
                    "put back {put_back}: sector {s} is not version {v}"
                );
            }
        }
    }
}

/// The simulator's own promise, which the card swaps above rely on: a new card put in the
/// slot has none of the old card's faults (before, a block the old card tore unreadable read
/// as an error on the new one, and `volume_faults` took it for the volume refusing a card).
#[test]
fn a_new_card_in_the_simulator_keeps_none_of_the_old_cards_faults() {
    let mut blocks = vec![Block::new(); 64];
    let card = SdSim::new(&mut blocks, 3);
    assert!(card.add_read_error(SUPERBLOCK_SECTOR as usize));
    let mut b = [Block::new()];
    assert!(
        card.read(&mut b, BlockIdx(SUPERBLOCK_SECTOR as u32))
            .is_err()
    );
    card.replace_with_new_card();
    card.read(&mut b, BlockIdx(SUPERBLOCK_SECTOR as u32))
        .expect("the new card's block");
}

#[test]
fn the_same_card_reported_inserted_during_its_recovery_goes_on_where_it_was() {
    // A full recovery (a new card) and a bitmap one (the card back after writes without it).
    for bitmap in [false, true] {
        let mut chips = Chips::new();
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = open_reinit(&mut chips, &mut storage);
        let mut versions = vec![0u32; vol.sectors() as usize];
        write_all(&vol, &mut versions, 1);
        vol.tick(10_000_000_000).unwrap();
        if bitmap {
            vol.with_members(|sd, _| sd.dev.remove());
            for (s, v) in versions.iter_mut().enumerate().take(64) {
                vol.write(&[pattern(s as u64, 2)], BlockIdx(s as u32))
                    .unwrap();
                *v = 2;
            }
            vol.with_members(|sd, _| sd.dev.insert());
        } else {
            vol.with_members(|sd, _| sd.dev.replace_with_new_card());
            vol.sd_removed().unwrap();
        }
        vol.sd_inserted_begin().unwrap();
        for _ in 0..6 {
            vol.step(1).unwrap();
        }
        let before = vol.health();
        assert!(
            matches!(before.sd, MemberState::Recovering { recovery_offset, .. } if recovery_offset > 0),
            "{before:?}"
        );
        // A card-detect bounce: the same card, out and in.
        vol.with_members(|sd, _| {
            sd.dev.remove();
            sd.dev.insert();
        });
        vol.sd_inserted_begin().unwrap();
        let after = vol.health();
        assert!(
            after.sd == before.sd && after.synced_sectors == before.synced_sectors,
            "bitmap {bitmap}: the recovery started over: {before:?} then {after:?}"
        );
        vol.finish().unwrap();
        vol.with_members(|_, nor| nor.flash_mut().faults.broken = true);
        verify(&vol, &versions, "the same card during its recovery");
    }
}

/// A card whose metadata sectors (the superblock and its copy) fail to read while the
/// volume opens, the rest of it answering.
struct MetadataUnreadable<'a> {
    card: SdMember<SdSim<'a>>,
    fail: bool,
}

impl Member for MetadataUnreadable<'_> {
    fn read(&mut self, sector: u64, blocks: &mut [Block]) -> Result<(), MemberFault> {
        let metadata =
            sector <= SUPERBLOCK_SECTOR + 1 && sector + blocks.len() as u64 > SUPERBLOCK_SECTOR;
        if self.fail && metadata {
            return Err(MemberFault);
        }
        self.card.read(sector, blocks)
    }
    fn write(&mut self, sector: u64, blocks: &[Block]) -> Result<(), MemberFault> {
        self.card.write(sector, blocks)
    }
    fn sectors(&mut self) -> Result<u64, MemberFault> {
        self.card.sectors()
    }
}

/// The flash fails and the card alone takes a write; at the next boot the card answers but
/// its superblock and its copy fail to read (a contact that bounces as the firmware starts).
/// The mount took such a card for a new one and rebuilt it from the flash, which had missed
/// the write: acknowledged data gone. md assembles without a device whose superblock it cannot
/// read, and so does the volume now: the card is left as it is, out of the volume, and once it
/// reads its rejoin finds what it holds (here: writes the volume running on the flash never
/// took, a split brain, refused). `rejoin_over` may still rewrite it when the firmware says so.
#[test]
fn a_card_whose_metadata_fails_to_read_at_a_mount_is_not_rebuilt_over() {
    let mut chips = Chips::new();
    let mut versions = written_and_closed(&mut chips);
    {
        let (sd, nor) = chips.members(SdFaults::default(), false);
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = Mirror::open(sd, nor, &mut storage).unwrap();
        vol.with_members(|_, nor| nor.flash_mut().faults.broken = true);
        vol.write(&[pattern(5, 2)], BlockIdx(5)).unwrap();
        versions[5] = 2;
        assert_eq!(vol.health().nor, MemberState::Faulty);
        vol.close().unwrap();
    }
    let card_before: Vec<Block> = chips.sd.clone();
    let (sd, nor) = chips.members(SdFaults::default(), false);
    let card = MetadataUnreadable {
        card: sd,
        fail: true,
    };
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(card, nor, &mut storage).unwrap_or_else(|e| panic!("{}", e.error));
    let h = vol.health();
    assert!(h.degraded && h.sd != MemberState::InSync, "{h:?}");
    assert!(!h.split_brain, "{h:?}");
    vol.step(64).unwrap();
    assert_eq!(vol.health().synced_sectors, 0, "the card was rebuilt");
    // Once it reads, its rejoin reads what it holds.
    vol.with_members(|sd, _| sd.fail = false);
    assert_eq!(
        vol.rejoin(raid1_embedded::volume::SD),
        Err(VolumeError::SplitBrain)
    );
    // Not a byte of the card's data area was written: the write only it held is there.
    let data = DATA_OFFSET as usize;
    vol.with_members(|sd, _| {
        sd.card.dev.with_blocks(|card| {
            assert!(
                card[data..]
                    .iter()
                    .zip(&card_before[data..])
                    .all(|(a, b)| a.contents == b.contents),
                "the card's data was written"
            );
            assert!(card[data + 5].contents == pattern(5, versions[5]).contents);
        })
    });
    // The firmware lets go of what only the card holds: rewritten in full, even with its
    // metadata unreadable.
    vol.with_members(|sd, _| sd.fail = true);
    vol.rejoin_over(raid1_embedded::volume::SD).unwrap();
    assert_eq!(vol.health().sd, MemberState::InSync);
}

/// The other case: the card failed and the flash ran on without it, recording it as failed;
/// at the next boot the card's metadata fails to read. The card fell behind the flash, which
/// holds everything the volume took: it is added as new and rebuilt (a card whose superblock
/// a failed write tore into an unreadable block is the common way there).
#[test]
fn a_card_the_flash_records_as_failed_is_rebuilt_when_its_metadata_fails_to_read() {
    let mut chips = Chips::new();
    let mut versions = written_and_closed(&mut chips);
    {
        let (sd, nor) = chips.members(SdFaults::default(), false);
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = Mirror::open(sd, nor, &mut storage).unwrap();
        vol.sd_removed().unwrap();
        vol.write(&[pattern(5, 2)], BlockIdx(5)).unwrap();
        versions[5] = 2;
        vol.close().unwrap();
    }
    let (sd, nor) = chips.members(SdFaults::default(), false);
    let card = MetadataUnreadable {
        card: sd,
        fail: true,
    };
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(card, nor, &mut storage).unwrap_or_else(|e| panic!("{}", e.error));
    vol.with_members(|sd, _| sd.fail = false);
    vol.finish().unwrap();
    let h = vol.health();
    assert!(!h.degraded && h.sd == MemberState::InSync, "{h:?}");
    verify(&vol, &versions, "the card rebuilt");
}

/// Sectors 0..64 written (version 1), then time for the bitmap daemon to clear their bits: no
/// chunk is dirty, so that a re-add guided by the bitmap copies only what a failure marks.
fn written_and_clean<A: Member, B: Member>(vol: &Mirror<'_, A, B>, what: &str) -> Vec<u32> {
    let mut versions = vec![0u32; 64];
    write_all(vol, &mut versions, 1);
    for t in 1..=4u64 {
        vol.tick(t * 10_000_000_000).unwrap();
    }
    assert_eq!(vol.health().dirty_chunks, 0, "{what}");
    versions
}

/// The card and the flash hold the same block at data sector `s`.
fn members_agree_at(vol: &Vol<'_, '_>, s: u64, what: &str) {
    vol.with_members(|sd, nor| {
        let (a, b) = common::member_copies(sd, nor, s);
        assert!(
            a.contents == b.contents,
            "{what}: the members differ at sector {s}"
        );
    });
}

/// A read error on the card, then the write-back of the flash's good copy failing on the card
/// too: the card is failed, and what the failed write left in that block is the card's draw
/// (old, new, a mix, erased: over 8 card seeds). No write had marked that chunk in the bitmap:
/// the card's re-add, guided by the bitmap, skipped it, and the card went back in sync with a
/// block the flash did not hold (found by `volume_async`, input
/// `a-card-failed-by-a-read-fix-write-back-kept-its-torn-block`). The piece's bits are set now.
#[test]
fn a_card_failed_by_a_read_fix_write_back_is_recovered_over_its_torn_block() {
    use raid1_embedded::sim::Countdown;
    // Closed, or dropped at once (a crash: the read was answered only once the bits were on
    // the flash).
    for (seed, crash) in (1..=8u64).flat_map(|s| [(s, false), (s, true)]) {
        let what = format!("card seed {seed}, crash {crash}");
        let mut chips = Chips::new();
        let _formatted = chips.members(SdFaults::default(), true);
        let sd = SdMember::new(SdSim::new(&mut chips.sd, seed));
        let nor = Nor::mount(NorSim::new(&mut chips.nor, &mut chips.wear, 2)).unwrap();
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = Mirror::open(sd, nor, &mut storage).unwrap();
        let versions = written_and_clean(&vol, &what);
        vol.with_members(|sd, _| {
            sd.dev.set_faults(SdFaults {
                fail_read: Countdown::after(0),
                fail_write: Countdown::after(0),
                ..SdFaults::default()
            })
        });
        // The flash is write-mostly: the card serves the read, fails it, and the write-back.
        let mut b = [Block::new()];
        vol.read(&mut b, BlockIdx(37)).unwrap();
        assert!(b[0].contents == pattern(37, 1).contents, "{what}");
        assert_eq!(vol.health().sd, MemberState::Faulty, "{what}");
        vol.with_members(|sd, _| sd.dev.set_faults(SdFaults::default()));
        let (sd, nor) = if crash {
            vol.into_members()
        } else {
            vol.close().unwrap_or_else(|_| panic!("{what}: close"))
        };
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = Mirror::open(sd, nor, &mut storage).unwrap_or_else(|e| panic!("{what}: {e:?}"));
        let h = vol.health();
        assert!(!h.degraded, "{what}: {h:?}");
        verify(&vol, &versions, &what);
        members_agree_at(&vol, 37, &what);
    }
}

/// The same for a repair's write: the members differ at a sector (the flash written behind the
/// volume's back), a repair writes the card's block to the flash, and that write fails: the
/// flash is failed, still holding its own block, in a chunk no write marked. Rejoined, its
/// recovery guided by the bitmap skipped the chunk, and the two stayed apart in sync.
#[test]
fn a_flash_failed_by_a_repair_write_is_recovered_over_that_block() {
    let mut chips = Chips::new();
    let (sd, nor) = chips.members(SdFaults::default(), true);
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    written_and_clean(&vol, "the repair");
    vol.with_members(|_, nor| nor.write(DATA_OFFSET + 30, &[pattern(30, 99)]).unwrap());
    vol.with_members(|_, nor| nor.flash_mut().faults.broken = true);
    // The repair's write to the flash fails: the flash is failed (the scrub may say so).
    let _ = vol.scrub(true);
    assert_eq!(vol.health().nor, MemberState::Faulty);
    vol.with_members(|_, nor| nor.flash_mut().faults.broken = false);
    vol.rejoin(raid1_embedded::volume::NOR).unwrap();
    let h = vol.health();
    assert!(!h.degraded, "{h:?}");
    members_agree_at(&vol, 30, "the repair");
}
