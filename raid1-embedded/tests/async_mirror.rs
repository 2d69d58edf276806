//! The async binding on simulated members: a card whose commands wait (return `Pending`)
//! before they complete, the NOR store through `Blocking`. Mount, write, pull the card, write
//! degraded, reinsert, recover in steps, and check the volume and both members.

mod common;

use common::{Chips, Nor, Slot, SlowCard, pattern};
use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll};
use embedded_sdmmc::{Block, BlockDevice, BlockIdx};
use raid1_embedded::volume::asynch::{AsyncMirror, Blocking};
use raid1_embedded::volume::{DATA_OFFSET, Member, Mirror, MirrorStorage, Options, VolumeError};

/// Counts the polls it took: a card that is not instant must make the binding yield.
fn block_on<T>(f: impl Future<Output = T>) -> (T, u32) {
    let mut cx = Context::from_waker(core::task::Waker::noop());
    let mut f = pin!(f);
    let mut polls = 0;
    loop {
        polls += 1;
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return (v, polls);
        }
    }
}

#[test]
fn async_binding_mirrors_degrades_recovers_and_scrubs_in_steps() {
    let mut chips = Chips::formatted();
    let (sd, nor) = chips.slow_card();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let (vol, _) = block_on(AsyncMirror::assemble(sd, nor, &mut storage, Options::MD));
    let mut vol = vol.unwrap();
    let size = vol.sectors() as usize;
    let mut versions = vec![1u32; size];
    for s in 0..size {
        let (r, polls) = block_on(vol.write(s as u64, &[pattern(s as u64, 1)]));
        r.unwrap();
        assert!(polls > 1, "a write to a slow card did not yield");
    }
    // The bitmap daemon clears the bits of the chunks written so far.
    block_on(vol.tick(10_000_000_000)).0.unwrap();
    block_on(vol.tick(20_000_000_000)).0.unwrap();
    // Pull the card, write degraded, put it back: bitmap-guided recovery in steps.
    vol.with_members(|sd, _| sd.0.dev.remove());
    for s in [7usize, 8, 150] {
        versions[s] = 2;
        block_on(vol.write(s as u64, &[pattern(s as u64, 2)]))
            .0
            .unwrap();
    }
    assert!(vol.degraded());
    vol.with_members(|sd, _| sd.0.dev.insert());
    block_on(vol.sd_inserted_begin()).0.unwrap();
    let mut steps = 0;
    loop {
        let p = block_on(vol.step(2)).0.unwrap();
        assert!(p.commands <= 2);
        if !p.busy {
            break;
        }
        steps += 1;
        assert!(steps < 10_000);
    }
    assert!(!vol.degraded());
    let synced = vol.synced_sectors();
    assert!(synced > 0 && synced <= 3 * 8, "copied {synced} sectors");
    for (s, &v) in versions.iter().enumerate() {
        let mut b = [Block::new()];
        block_on(vol.read(s as u64, &mut b)).0.unwrap();
        assert!(
            b[0].contents == pattern(s as u64, v).contents,
            "volume sector {s}"
        );
    }
    // A scrub in steps: a flash sector written behind the volume's back is found by a check,
    // left as it is, then rewritten from the card by a repair.
    let scrub = |vol: &mut Vol<'_, '_>, repair: bool| {
        block_on(vol.scrub_begin(repair)).0.unwrap();
        let mut steps = 0;
        while block_on(vol.step(4)).0.unwrap().busy {
            steps += 1;
            assert!(steps < 10_000);
        }
        vol.mismatches()
    };
    assert_eq!(scrub(&mut vol, false), 0);
    vol.with_members(|_, nor| nor.0.write(DATA_OFFSET + 30, &[pattern(30, 99)]).unwrap());
    assert_eq!(scrub(&mut vol, false), 1);
    assert_eq!(scrub(&mut vol, false), 1, "a check must not repair");
    assert_eq!(scrub(&mut vol, true), 1);
    assert_eq!(scrub(&mut vol, false), 0, "the repair did not take");
    let (sd, nor) = block_on(vol.close()).0.unwrap();
    let (sd, mut nor) = (sd.0, nor.0);
    for (s, &v) in versions.iter().enumerate() {
        let mut b = [Block::new()];
        sd.dev
            .read(&mut b, BlockIdx((DATA_OFFSET as usize + s) as u32))
            .unwrap();
        assert!(
            b[0].contents == pattern(s as u64, v).contents,
            "card sector {s}"
        );
        nor.read(DATA_OFFSET + s as u64, &mut b).unwrap();
        assert!(
            b[0].contents == pattern(s as u64, v).contents,
            "flash sector {s}"
        );
    }
    // Closed clean: the blocking binding mounts it without a resync.
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    assert_eq!(vol.health().synced_sectors, 0);
}

// The async volume built in a place the caller owns (`AsyncMirror::assemble_in`, `close_in`)
// and `AsyncMirror::clean`: the volume the by-value calls give, the members back on every path.

type Vol<'b, 'a> = AsyncMirror<'b, SlowCard<'a>, Blocking<Nor<'a>>>;
type Place<'b, 'a> = Option<Vol<'b, 'a>>;

/// [`AsyncMirror::assemble_in`], run to its end.
fn assemble_in<'p, 'b, 'a>(
    place: &'p mut Place<'b, 'a>,
    (sd, nor): (SlowCard<'a>, Blocking<Nor<'a>>),
    storage: &'b mut MirrorStorage,
) -> Result<&'p mut Vol<'b, 'a>, VolumeError> {
    block_on(AsyncMirror::assemble_in(
        place,
        sd,
        nor,
        storage,
        Options::MD,
    ))
    .0
}

/// Mount with the blocking binding: how many sectors it resynced, after checking that
/// sectors `0..16` hold `version`.
fn resynced_at_next_mount(chips: &mut Chips, version: u32) -> u64 {
    let (sd, nor) = chips.blocking();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).expect("open");
    let mut b = [Block::new()];
    for s in 0..16 {
        vol.read_sectors(s, &mut b).expect("read");
        assert!(b[0].contents == pattern(s, version).contents, "sector {s}");
    }
    assert!(!vol.health().degraded);
    vol.health().synced_sectors
}

/// Mount in place, write sectors `0..16`, and stop without a close (a power cut), after
/// `clean` or not.
fn cut_after_writes(clean: bool) -> u64 {
    let mut chips = Chips::formatted();
    {
        let mut storage: MirrorStorage = MirrorStorage::new();
        let mut place: Place = None;
        let vol = assemble_in(&mut place, chips.slow_card(), &mut storage);
        let vol = vol.expect("assemble_in");
        for s in 0..16 {
            block_on(vol.write(s, &[pattern(s, 1)])).0.expect("write");
        }
        if clean {
            block_on(vol.clean()).0.expect("clean");
        }
    }
    resynced_at_next_mount(&mut chips, 1)
}

#[test]
fn async_clean_leaves_nothing_to_resync_after_a_cut() {
    assert_eq!(cut_after_writes(true), 0);
    assert!(
        cut_after_writes(false) > 0,
        "without clean the cut leaves dirty chunks"
    );
}

#[test]
fn async_assemble_in_and_close_in_round_trip() {
    let mut chips = Chips::formatted();
    {
        let mut storage: MirrorStorage = MirrorStorage::new();
        let mut place: Place = None;
        let vol = assemble_in(&mut place, chips.slow_card(), &mut storage);
        let vol = vol.expect("assemble_in");
        assert!(!vol.degraded());
        for s in 0..16 {
            block_on(vol.write(s, &[pattern(s, 2)])).0.expect("write");
        }
        let (closed, _) = block_on(AsyncMirror::close_in(&mut place));
        closed.expect("a volume in the place").expect("close");
        assert!(place.is_none(), "close_in empties the place");
        assert!(
            block_on(AsyncMirror::close_in(&mut place)).0.is_none(),
            "nothing left to close"
        );
    }
    // Closed clean: what assemble_in built is the volume assemble builds.
    assert_eq!(resynced_at_next_mount(&mut chips, 2), 0);
}

#[test]
fn async_refused_mount_leaves_the_members_in_the_place() {
    let mut chips = Chips::blank();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let mut place: Place = None;
    let err = assemble_in(&mut place, chips.slow_card(), &mut storage);
    assert_eq!(err.map(|_| ()), Err(VolumeError::NoVolume));
    // The unmounted volume serves nothing and writes nothing, without panicking.
    let vol = place.as_mut().expect("the volume stays in the place");
    let mut b = [Block::new()];
    assert!(block_on(vol.read(0, &mut b)).0.is_err());
    assert!(block_on(vol.write(0, &[pattern(0, 1)])).0.is_err());
    assert!(!block_on(vol.step(8)).0.expect("step").busy);
    let (sd, _nor) = place.take().expect("volume").into_members();
    assert_eq!(
        sd.0.dev.stats().blocks_written,
        0,
        "the blank card was written"
    );
}

/// The async binding over the async NOR store: a part whose erases failed for a while gave its
/// sectors up and the flash failed; once the part works again, `rejoin_begin` mounts the store
/// again in place and the flash is rewritten in full from the card (see the blocking test
/// `a_flash_whose_erases_failed_for_a_while_rejoins` in `mirror.rs`).
#[test]
fn async_rejoin_takes_up_the_sectors_a_failing_part_gave_up() {
    use raid1_embedded::volume::NOR;
    let mut chips = Chips::formatted();
    let (sd, flash) = chips.slow_both();
    let nor = block_on(common::AsyncNor::mount(flash)).0.unwrap();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let mut vol = block_on(AsyncMirror::assemble(sd, nor, &mut storage, Options::MD))
        .0
        .unwrap();
    let size = vol.sectors();
    vol.with_members(|_, nor| nor.flash_mut().flash.faults.erase_broken = true);
    let mut writes = 0;
    while !vol.degraded() {
        let s = writes % size;
        block_on(vol.write(s, &[pattern(s, 2)])).0.unwrap();
        writes += 1;
        assert!(writes < 20 * size, "the flash never failed");
    }
    assert!(vol.with_members(|_, nor| nor.gave_up_sectors()));
    for s in writes.min(size)..size {
        block_on(vol.write(s, &[pattern(s, 2)])).0.unwrap();
    }
    vol.with_members(|_, nor| nor.flash_mut().flash.faults.erase_broken = false);
    block_on(vol.rejoin_begin(NOR)).0.unwrap();
    while block_on(vol.step(8)).0.unwrap().busy {}
    assert!(!vol.degraded());
    assert_eq!(vol.synced_sectors(), size, "the flash is rewritten in full");
    assert!(!vol.with_members(|_, nor| nor.gave_up_sectors()));
    let (_, mut nor) = block_on(vol.close()).0.unwrap();
    for s in 0..size {
        let mut b = [0u8; 512];
        block_on(nor.read_block((DATA_OFFSET + s) as u32, &mut b))
            .0
            .unwrap();
        assert!(b == pattern(s, 2).contents, "flash sector {s}");
    }
}

/// The async binding over an async NOR store that did not mount at boot (the part reads
/// nothing): the volume opens from the card alone, and `rejoin_begin` mounts the store once
/// the part answers and rewrites it in full (see the blocking test
/// `a_flash_that_does_not_mount_at_boot_leaves_the_volume_on_the_card` in `mirror.rs`).
#[test]
fn async_a_flash_that_does_not_mount_at_boot_leaves_the_volume_on_the_card() {
    use raid1_embedded::volume::NOR;
    let mut chips = Chips::formatted();
    let (sd, mut flash) = chips.slow_both();
    flash.flash.power_off();
    let flash = match block_on(common::AsyncNor::mount(flash)).0 {
        Ok(_) => panic!("a flash that reads nothing mounted"),
        Err(refused) => refused.driver,
    };
    let nor = common::AsyncNor::unmounted(flash).unwrap_or_else(|r| panic!("{}", r.error));
    let mut storage: MirrorStorage = MirrorStorage::new();
    let mut vol = block_on(AsyncMirror::assemble(sd, nor, &mut storage, Options::MD))
        .0
        .unwrap_or_else(|r| panic!("{}", r.error));
    assert!(vol.degraded());
    let size = vol.sectors();
    for s in 0..size {
        block_on(vol.write(s, &[pattern(s, 3)])).0.unwrap();
    }
    vol.with_members(|_, nor| nor.flash_mut().flash.power_cycle());
    block_on(vol.rejoin_begin(NOR)).0.unwrap();
    while block_on(vol.step(8)).0.unwrap().busy {}
    assert!(!vol.degraded());
    let (_, mut nor) = block_on(vol.close()).0.unwrap();
    for s in 0..size {
        let mut b = [0u8; 512];
        block_on(nor.read_block((DATA_OFFSET + s) as u32, &mut b))
            .0
            .unwrap();
        assert!(b == pattern(s, 3).contents, "flash sector {s}");
    }
}

/// The async binding lets a damaged flash go of the record of its damage once the flash's
/// superblock says it is rebuilt in full (see the blocking test
/// `a_damaged_flash_holds_the_record_until_its_rebuild_is_recorded` in `volume_defenses.rs`).
#[test]
fn async_damaged_flash_releases_the_record_once_its_rebuild_is_recorded() {
    use raid1_embedded::nor::{BLOCK_LEN, SECTOR_HEADER_LEN, sector_layout};
    let mut chips = Chips::formatted();
    {
        let (sd, nor) = chips.blocking();
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = Mirror::open(sd, nor, &mut storage).unwrap();
        for s in 0..vol.sectors() {
            vol.write(&[pattern(s, 1)], BlockIdx(s as u32)).unwrap();
        }
        vol.close().unwrap();
    }
    // Three bits of sector 5's entry lost: beyond correction.
    let (meta, n) = sector_layout(common::E);
    let data = pattern(5, 1);
    let at = (0..common::SECTORS)
        .flat_map(|s| (0..n).map(move |i| (s, i)))
        .find(|&(s, i)| {
            let at = s * common::E + (meta + i) * BLOCK_LEN;
            chips.nor[at..at + BLOCK_LEN] == data.contents[..]
        })
        .map(|(s, i)| s * common::E + SECTOR_HEADER_LEN + i * 32)
        .expect("on flash");
    chips.nor[at] ^= 0x01;
    chips.nor[at + 6] ^= 0x10;
    chips.nor[at + 10] ^= 0x80;
    let (sd, flash) = chips.slow_both();
    let nor = block_on(common::AsyncNor::mount(flash)).0.unwrap();
    assert!(nor.damaged() && nor.holds_damage());
    let mut storage: MirrorStorage = MirrorStorage::new();
    let mut vol = block_on(AsyncMirror::assemble(sd, nor, &mut storage, Options::MD))
        .0
        .unwrap();
    while block_on(vol.step(8)).0.unwrap().busy {}
    assert!(!vol.degraded());
    assert_eq!(vol.synced_sectors(), vol.sectors(), "rebuilt in full");
    assert!(!vol.with_members(|_, nor| nor.holds_damage()));
}

/// The async binding sizes a card put in place of the volume's as the blocking one does (see
/// `a_card_put_in_place_of_the_volumes_is_sized_on_its_own` in `volume_defenses.rs`): one too
/// small is refused with nothing written to it, a larger one records its own room.
#[test]
fn async_a_card_put_in_place_is_sized_on_its_own() {
    use raid1_embedded::sim::SdSim;
    use raid1_embedded::volume::{SUPERBLOCK_SECTOR, SdMember};
    let mut chips = Chips::formatted();
    let size = {
        let (sd, nor) = chips.blocking();
        let mut storage: MirrorStorage = MirrorStorage::new();
        Mirror::open(sd, nor, &mut storage).unwrap().sectors()
    };
    for blocks in [DATA_OFFSET + size - 1, 1024] {
        let mut other = vec![Block::new(); blocks as usize];
        let (sd, nor) = chips.blocking();
        let slot = Blocking(Slot {
            cards: [sd, SdMember::new(SdSim::new(&mut other, 3))],
            other: false,
        });
        let mut storage: MirrorStorage = MirrorStorage::new();
        let mut vol = block_on(AsyncMirror::assemble(
            slot,
            Blocking(nor),
            &mut storage,
            Options::MD,
        ))
        .0
        .unwrap();
        vol.with_members(|slot, _| {
            slot.0.cards[0].dev.remove();
            slot.0.other = true;
        });
        block_on(vol.sd_removed()).0.unwrap();
        let r = block_on(vol.sd_inserted_begin()).0;
        if blocks < DATA_OFFSET + size {
            assert_eq!(r, Err(VolumeError::TooSmall));
        } else {
            r.unwrap();
            while block_on(vol.step(8)).0.unwrap().busy {}
            assert!(!vol.degraded());
        }
        block_on(vol.close())
            .0
            .unwrap_or_else(|r| panic!("close: {:?}", r.error));
        if blocks < DATA_OFFSET + size {
            assert!(
                other.iter().all(|b| b.contents == [0; 512]),
                "nothing written"
            );
        } else {
            let sb = raid1_superblock::Superblock::<2>::parse(
                &other[SUPERBLOCK_SECTOR as usize].contents,
            )
            .expect("the card's superblock");
            assert_eq!(sb.data_size, blocks - DATA_OFFSET);
        }
    }
}

/// A card swapped for another while the async volume was idle, its insertion then reported
/// (as `a_card_swapped_while_the_volume_was_idle_is_recovered_in_full` and
/// `another_card_in_place_of_the_only_copy_is_neither_read_nor_written` in
/// `volume_defenses.rs`): rebuilt in full beside a flash in sync, refused beside a flash that
/// failed.
#[test]
fn async_a_card_swapped_while_idle_is_checked_before_it_serves() {
    let mut chips = Chips::formatted();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let mut vol = assemble_slow(&mut chips, &mut storage);
    let size = vol.sectors();
    for s in 0..size {
        block_on(vol.write(s, &[pattern(s, 1)])).0.unwrap();
    }
    vol.with_members(|sd, _| sd.0.dev.replace_with_new_card());
    block_on(vol.sd_inserted_begin()).0.unwrap();
    while block_on(vol.step(8)).0.unwrap().busy {}
    assert!(!vol.degraded());
    assert!(vol.synced_sectors() >= size, "not rebuilt in full");
    // The flash fails: the rebuilt card alone serves the volume.
    vol.with_members(|_, nor| nor.0.flash_mut().faults.broken = true);
    for s in 0..size {
        let mut b = [Block::new()];
        block_on(vol.read(s, &mut b)).0.unwrap();
        assert!(b[0].contents == pattern(s, 1).contents, "sector {s}");
    }
    block_on(vol.write(0, &[pattern(0, 2)])).0.unwrap();
    // Now the card holds the only copy: another card in its place is refused.
    vol.with_members(|sd, _| sd.0.dev.replace_with_new_card());
    assert_eq!(
        block_on(vol.sd_inserted_begin()).0,
        Err(VolumeError::WrongCard)
    );
    assert!(vol.wrong_card());
    let mut b = [Block::new()];
    assert_eq!(block_on(vol.read(0, &mut b)).0, Err(VolumeError::Io));
}

/// The card pulled while the flash is rebuilt from it, and put back: the async binding starts
/// the stopped rebuild again at the insertion, as the blocking one does (see
/// `volume_defenses.rs`).
#[test]
fn async_the_flashs_rebuild_stopped_by_the_card_pulled_goes_on_when_it_is_back() {
    use raid1_embedded::volume::NOR;
    let mut chips = Chips::formatted();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let mut vol = assemble_slow(&mut chips, &mut storage);
    let size = vol.sectors();
    vol.with_members(|_, nor| nor.0.flash_mut().faults.broken = true);
    for s in 0..size {
        block_on(vol.write(s, &[pattern(s, 1)])).0.unwrap();
    }
    vol.with_members(|_, nor| nor.0.flash_mut().faults.broken = false);
    block_on(vol.rejoin_begin(NOR)).0.unwrap();
    block_on(vol.step(2)).0.unwrap();
    vol.with_members(|sd, _| sd.0.dev.remove());
    assert!(block_on(vol.sd_removed()).0.is_err());
    while let Ok(p) = block_on(vol.step(8)).0 {
        if !p.busy {
            break;
        }
    }
    assert!(
        vol.degraded() && vol.synced_sectors() < size,
        "the rebuild did not stop"
    );
    vol.with_members(|sd, _| sd.0.dev.insert());
    block_on(vol.sd_inserted_begin()).0.unwrap();
    while block_on(vol.step(8)).0.unwrap().busy {}
    assert!(!vol.degraded(), "the flash was left half rebuilt");
    vol.with_members(|sd, _| sd.0.dev.remove());
    for s in 0..size {
        let mut b = [Block::new()];
        block_on(vol.read(s, &mut b)).0.unwrap();
        assert!(b[0].contents == pattern(s, 1).contents, "sector {s}");
    }
}

/// The volume over the slow card and the blocking NOR store, both in sync.
fn assemble_slow<'b, 'a>(
    chips: &'a mut Chips,
    storage: &'b mut MirrorStorage,
) -> AsyncMirror<'b, SlowCard<'a>, Blocking<Nor<'a>>> {
    let (sd, nor) = chips.slow_card();
    block_on(AsyncMirror::assemble(sd, nor, storage, Options::MD))
        .0
        .unwrap()
}

/// The async binding over a split brain (see the blocking
/// `a_flash_back_with_writes_the_card_never_took_is_not_rebuilt_over` in `mirror.rs`): the
/// flash, back with a write the card never took, is refused and untouched; `rejoin_over_begin`
/// rewrites it once the firmware lets that write go.
#[test]
fn async_a_flash_back_with_writes_the_card_never_took_is_refused_until_let_go() {
    use raid1_embedded::volume::NOR;
    let mut chips = Chips::formatted();
    let size;
    {
        let mut storage: MirrorStorage = MirrorStorage::new();
        let mut vol = assemble_slow(&mut chips, &mut storage);
        size = vol.sectors();
        for s in 0..size {
            block_on(vol.write(s, &[pattern(s, 1)])).0.unwrap();
        }
        // The card fails: the flash alone takes version 2 of sector 5.
        vol.with_members(|sd, _| sd.0.dev.remove());
        block_on(vol.write(5, &[pattern(5, 2)])).0.unwrap();
        assert!(vol.degraded());
        let _ = vol.into_members();
    }
    // The next boot: the flash does not mount, the volume opens from the stale card.
    let (sd, nor) = chips.slow_card();
    sd.0.dev.insert();
    let mut flash = nor.0.into_inner();
    flash.power_off();
    let nor = match Nor::mount(flash) {
        Ok(_) => panic!("a flash that reads nothing mounted"),
        Err(refused) => Nor::unmounted(refused.driver).unwrap_or_else(|r| panic!("{}", r.error)),
    };
    let mut storage: MirrorStorage = MirrorStorage::new();
    let mut vol = block_on(AsyncMirror::assemble(
        sd,
        Blocking(nor),
        &mut storage,
        Options::MD,
    ))
    .0
    .unwrap_or_else(|r| panic!("{}", r.error));
    block_on(vol.write(6, &[pattern(6, 3)])).0.unwrap();
    vol.with_members(|_, nor| nor.0.flash_mut().power_cycle());
    assert_eq!(
        block_on(vol.rejoin_begin(NOR)).0,
        Err(VolumeError::SplitBrain)
    );
    assert!(vol.split_brain());
    let mut b = [0u8; 512];
    vol.with_members(|_, nor| nor.0.read_block((DATA_OFFSET + 5) as u32, &mut b).unwrap());
    assert!(
        b == pattern(5, 2).contents,
        "the flash's own write was rewritten"
    );
    block_on(vol.rejoin_over_begin(NOR)).0.unwrap();
    while block_on(vol.step(8)).0.unwrap().busy {}
    assert!(!vol.degraded() && !vol.split_brain());
    let (_, mut nor) = block_on(vol.close()).0.unwrap();
    for s in 0..size {
        nor.0.read_block((DATA_OFFSET + s) as u32, &mut b).unwrap();
        let v = if s == 6 { 3 } else { 1 };
        assert!(b == pattern(s, v).contents, "flash sector {s}");
    }
}
