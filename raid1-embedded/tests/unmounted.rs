//! A volume whose mount was refused stays in the caller's place (`Mirror::open_in`), with an
//! empty engine: every request fails and nothing is written. Firmware keeps calling it all the
//! same (a card-detect interrupt, the health report of a failed boot): no call may panic, and
//! none may write md metadata of the empty engine over a member's, which would make the next
//! boot take that member for another volume's and rebuild it, the writes only it held lost.

mod common;

use common::{BLOCKS, Chips, E, SECTORS, pattern};
use embedded_sdmmc::Block;
use raid1_embedded::nor::NorBlockStore;
use raid1_embedded::sim::{NorSim, SdSim};
use raid1_embedded::volume::{
    Mirror, MirrorStorage, NOR, SD, SUPERBLOCK_COPY_SECTOR, SUPERBLOCK_SECTOR, SdMember,
    VolumeError,
};

#[test]
fn calls_on_a_volume_whose_mount_was_refused_neither_panic_nor_write() {
    let calls = [
        "health",
        "sd_inserted",
        "rejoin SD",
        "rejoin_over SD",
        "rejoin NOR",
        "clean",
        "tick",
        "scrub",
        "sd_removed",
        "step",
        "write",
    ];
    for what in calls {
        let mut chips = Chips::formatted();
        let (sd_before, nor_before) = (chips.sd.clone(), chips.nor.clone());
        let result = {
            let (sd, nor) = chips.blocking();
            // Bitmap storage too small for the volume's bitmap: the mount is refused, the
            // members holding the volume.
            let mut storage: MirrorStorage<1> = MirrorStorage::new();
            let mut place = None;
            assert!(Mirror::open_in(&mut place, sd, nor, &mut storage).is_err());
            let vol = place.as_ref().expect("the volume stays in its place");
            let call = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match what {
                "health" => {
                    let h = vol.health();
                    assert_eq!(h.dirty_chunks, 0);
                    Ok(())
                }
                "sd_inserted" => vol.sd_inserted(),
                "rejoin SD" => vol.rejoin(SD),
                "rejoin_over SD" => vol.rejoin_over(SD),
                "rejoin NOR" => vol.rejoin(NOR),
                "clean" => vol.clean(),
                "tick" => vol.tick(10_000_000_000),
                "scrub" => vol.scrub(true).map(|_| ()),
                "sd_removed" => vol.sd_removed(),
                "step" => vol.step(8).map(|_| ()),
                _ => vol.write_sectors(3, &[pattern(3, 9)]),
            }));
            call.unwrap_or_else(|_| panic!("{what} on a refused mount panicked"))
        };
        if what.starts_with("rejoin") || what == "sd_inserted" {
            assert!(
                matches!(result, Err(VolumeError::NotMounted)),
                "{what} on a refused mount: {result:?}"
            );
        }
        let changed = |s: u64| chips.sd[s as usize].contents != sd_before[s as usize].contents;
        assert!(
            !(0..chips.sd.len() as u64).any(changed),
            "{what} on a refused mount wrote the card (superblock {}, copy {})",
            changed(SUPERBLOCK_SECTOR),
            changed(SUPERBLOCK_COPY_SECTOR),
        );
        assert!(
            chips.nor == nor_before,
            "{what} on a refused mount wrote the flash"
        );
    }
}

/// The flash fails and the card alone takes a write; at the next boot neither member answers
/// (the card not yet, the flash does not mount), so the mount is refused; then the card
/// answers and card-detect reports it. The insertion on the unmounted volume used to add the
/// card to the empty engine and write its metadata (UUID zero) over the card's: at the boot
/// after, the card was taken for a new one and rebuilt from the stale flash.
#[test]
fn a_card_reported_inserted_after_a_refused_mount_keeps_the_only_copy() {
    let mut chips = Chips::formatted();
    {
        let (sd, nor) = chips.blocking();
        let mut storage: MirrorStorage = MirrorStorage::new();
        let vol = Mirror::open(sd, nor, &mut storage).unwrap_or_else(|e| panic!("{}", e.error));
        for s in 0..16u64 {
            vol.write_sectors(s, &[pattern(s, 1)]).unwrap();
        }
        vol.with_members(|_, nor| nor.flash_mut().faults.broken = true);
        vol.write_sectors(5, &[pattern(5, 2)])
            .expect("acknowledged");
        assert!(vol.health().degraded);
        assert!(vol.close().is_ok());
    }
    {
        let sim = SdSim::new(&mut chips.sd, 1);
        sim.remove();
        let mut flash = NorSim::<4, E>::new(&mut chips.nor, &mut chips.wear, 2);
        flash.power_off();
        let nor = NorBlockStore::<_, BLOCKS, SECTORS>::unmounted(flash)
            .unwrap_or_else(|_| panic!("an unmounted store"));
        let mut storage: MirrorStorage = MirrorStorage::new();
        let mut place = None;
        assert!(Mirror::open_in(&mut place, SdMember::new(sim), nor, &mut storage).is_err());
        let vol = place.as_ref().expect("the volume stays in its place");
        vol.with_members(|sd, _| sd.dev.insert());
        assert!(matches!(vol.sd_inserted(), Err(VolumeError::NotMounted)));
    }
    let (sd, nor) = chips.blocking();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap_or_else(|e| panic!("{}", e.error));
    let mut b = [Block::new()];
    vol.read_sectors(5, &mut b).expect("read");
    assert!(
        b[0].contents == pattern(5, 2).contents,
        "sector 5 lost its acknowledged version 2"
    );
}
