//! The zoned NOR store (`ZonedNorStore`): a flash cut into zones whose maps come and go from
//! RAM.
//!
//! - blocks keep their content through zone switches with one and with two zones in RAM, and
//!   through remounts;
//! - a power cut at every program and erase of a workload that switches zones all the time
//!   loses no acknowledged block, and leaves no zone that reads as changed when it is
//!   mounted again (a false alarm would fail the flash member of a healthy volume);
//! - a bit lost on the flash while a zone's map is out of RAM, in the entry of a block's
//!   newest copy, is not served as the older copy: the zone answers `ZoneChanged` until a
//!   remount, which reports the damage; a bit lost in a stale copy's entry, or one flipped bit
//!   in the newest (corrected), changes nothing;
//! - in a volume, such a zone fails the flash member, and `rejoin` rewrites it in full from the
//!   card.

use embedded_sdmmc::{Block, BlockDevice, BlockIdx};
use raid1_embedded::nor::{
    BLOCK_LEN, NorError, SECTOR_HEADER_LEN, ZonedNorStore, asynch, sector_layout,
};
use raid1_embedded::sim::{Countdown, NorSim, NorSimError, Rng, SdSim};
use raid1_embedded::volume::{
    DATA_OFFSET, MemberState, Mirror, MirrorStorage, NOR, SdMember, VolumeIdentity,
};

const E: usize = 4096;
const ZONES: usize = 4;
const ZONE_SECTORS: usize = 6;
const ZONE_BLOCKS: usize = 20; // < (6 - 2) * 7
const BLOCKS: usize = ZONES * ZONE_BLOCKS;
const FLASH: usize = ZONES * ZONE_SECTORS * E;
type Zoned<'a, const CACHED: usize> =
    ZonedNorStore<NorSim<'a, 4, E>, ZONES, ZONE_BLOCKS, ZONE_SECTORS, CACHED>;

/// Version `version` of `block` (0: never written, zeros).
fn content(block: u32, version: u32) -> [u8; BLOCK_LEN] {
    let mut out = [0u8; BLOCK_LEN];
    if version == 0 {
        return out;
    }
    let mut rng = Rng::new(u64::from(block) << 32 | u64::from(version));
    for c in out.chunks_mut(8) {
        c.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    out
}

/// The byte offset of the entry whose slot holds `data`.
fn entry_of(mem: &[u8], data: &[u8; BLOCK_LEN]) -> usize {
    let (meta, n) = sector_layout(E);
    for s in 0..mem.len() / E {
        for i in 0..n {
            let at = s * E + (meta + i) * BLOCK_LEN;
            if mem[at..at + BLOCK_LEN] == data[..] {
                return s * E + SECTOR_HEADER_LEN + i * 32;
            }
        }
    }
    panic!("not on flash");
}

/// What was acknowledged, and the write in flight when the power went.
struct Model {
    acked: Vec<u32>,
    in_flight: Option<(u32, u32)>,
    next: u32,
}

impl Model {
    fn new() -> Self {
        Model {
            acked: vec![0; BLOCKS],
            in_flight: None,
            next: 1,
        }
    }

    /// `writes` writes: most to a hot block of each zone, the rest anywhere, in an order that
    /// moves from zone to zone all the time. Stops at the first failure, left in flight.
    fn run<const C: usize>(
        &mut self,
        store: &mut Zoned<'_, C>,
        rng: &mut Rng,
        writes: u32,
    ) -> Result<(), NorError<NorSimError>> {
        for _ in 0..writes {
            let zone = rng.below(ZONES as u64) as u32;
            let block = if rng.below(3) == 0 {
                rng.below(BLOCKS as u64) as u32
            } else {
                zone * ZONE_BLOCKS as u32 + rng.below(2) as u32
            };
            let version = self.next;
            self.next += 1;
            self.in_flight = Some((block, version));
            let written = store.write_block(block, &content(block, version));
            assert!(store.bookkeeping_holds(), "bookkeeping drifted");
            written?;
            self.acked[block as usize] = version;
            self.in_flight = None;
        }
        Ok(())
    }

    /// Every block reads as acknowledged (or, for the write in flight, as the new version,
    /// which is then taken as acknowledged).
    fn check<const C: usize>(&mut self, store: &mut Zoned<'_, C>, what: &str) {
        let mut buf = [0u8; BLOCK_LEN];
        for block in 0..BLOCKS as u32 {
            store
                .read_block(block, &mut buf)
                .unwrap_or_else(|e| panic!("{what}: read {block}: {e:?}"));
            let acked = self.acked[block as usize];
            if buf == content(block, acked) {
                continue;
            }
            match self.in_flight {
                Some((b, v)) if b == block && buf == content(block, v) => {
                    self.acked[block as usize] = v;
                }
                _ => {
                    let got = (0..self.next).find(|&v| buf == content(block, v));
                    panic!("{what}: block {block} lost version {acked}: reads {got:?}");
                }
            }
        }
        self.in_flight = None;
    }
}

fn zone_switches<const C: usize>() {
    let mut mem = vec![0xFFu8; FLASH];
    let mut wear = vec![0u32; ZONES * ZONE_SECTORS];
    let mut model = Model::new();
    let mut store = Zoned::<C>::mount(NorSim::new(&mut mem, &mut wear, 7)).unwrap();
    assert_eq!(store.num_blocks() as usize, BLOCKS);
    let mut rng = Rng::new(11);
    model.run(&mut store, &mut rng, 600).unwrap();
    model.check(&mut store, "after the writes");
    // Many more zone mounts than zones: the maps came and went.
    assert!(
        store.zone_mounts() > 100,
        "{} zone mounts",
        store.zone_mounts()
    );
    assert!(
        store.stats().erases > 0,
        "the workload must collect garbage"
    );
    assert!(!store.damaged() && !store.zone_changed());
    store.remount().unwrap();
    model.check(&mut store, "after a remount in place");
    let flash = store.into_inner();
    let mut store = Zoned::<C>::mount(flash).unwrap();
    model.check(&mut store, "after a mount");
    assert!(!store.damaged());
}

#[test]
fn blocks_keep_their_content_as_zones_come_and_go_with_one_zone_in_ram() {
    zone_switches::<1>();
}

#[test]
fn blocks_keep_their_content_as_zones_come_and_go_with_two_zones_in_ram() {
    zone_switches::<2>();
}

#[test]
fn the_geometry_is_checked_and_the_driver_handed_back() {
    let mut mem = vec![0xFFu8; FLASH - E];
    let mut wear = vec![0u32; ZONES * ZONE_SECTORS];
    let refused = Zoned::<1>::mount(NorSim::new(&mut mem, &mut wear, 1))
        .err()
        .expect("a flash a sector short is refused");
    assert!(matches!(
        refused.error,
        NorError::Geometry {
            what: "capacity",
            ..
        }
    ));
    let flash = refused.driver;
    // Zones whose blocks do not fit their sectors are refused too.
    let refused = ZonedNorStore::<_, 2, 40, 6, 1>::mount(flash)
        .err()
        .expect("40 blocks in 6 sectors are refused");
    assert!(matches!(
        refused.error,
        NorError::Geometry { what: "BLOCKS", .. }
    ));
    let mut mem = vec![0xFFu8; FLASH];
    let mut store = Zoned::<1>::mount(NorSim::new(&mut mem, &mut wear, 1)).unwrap();
    let mut buf = [0u8; BLOCK_LEN];
    assert!(matches!(
        store.read_block(BLOCKS as u32, &mut buf),
        Err(NorError::OutOfRange { block, blocks }) if block == BLOCKS as u32 && blocks == BLOCKS as u32
    ));
}

/// A power cut at every program and erase of a workload over one zone in RAM; after each,
/// a remount with read flips, every block checked (which mounts every zone again), more
/// writes, and every block checked again. No zone may read as changed.
#[test]
fn a_power_cut_at_every_operation_loses_nothing_and_raises_no_false_alarm() {
    let writes = if cfg!(debug_assertions) { 60 } else { 240 };
    let mut mem = vec![0xFFu8; FLASH];
    let mut wear = vec![0u32; ZONES * ZONE_SECTORS];
    let total = {
        let mut store = Zoned::<1>::mount(NorSim::new(&mut mem, &mut wear, 3)).unwrap();
        Model::new()
            .run(&mut store, &mut Rng::new(5), writes)
            .unwrap();
        let flash = store.into_inner();
        flash.stats.programs + flash.stats.erases
    };
    assert!(total > writes * 3, "the workload must collect garbage");
    let mut unstable = 0;
    for point in 0..total {
        mem.fill(0xFF);
        wear.fill(0);
        let mut flash = NorSim::<4, E>::new(&mut mem, &mut wear, u64::from(point));
        flash.faults.power_loss = Countdown::after(point);
        // Torn programs in order, out of order, or reading unstable afterwards (the case
        // where a zone mounted twice could decide a torn write two ways).
        flash.faults.out_of_order_tears = point % 3 == 1;
        flash.faults.unstable_tears = point % 3 == 2;
        unstable += u32::from(point % 3 == 2);
        let mut store = Zoned::<1>::mount(flash).unwrap();
        let mut model = Model::new();
        let mut rng = Rng::new(5);
        assert!(
            model.run(&mut store, &mut rng, writes).is_err(),
            "point {point}: power loss not hit"
        );
        let mut flash = store.into_inner();
        flash.power_cycle();
        flash.faults.flip_period = 7;
        let mut store = Zoned::<1>::mount(flash)
            .unwrap_or_else(|e| panic!("point {point}: mount: {:?}", e.error));
        assert!(!store.damaged(), "point {point}: false damage");
        let what = format!("point {point}, after the cut");
        model.check(&mut store, &what);
        model
            .run(&mut store, &mut Rng::new(u64::from(point)), 40)
            .unwrap_or_else(|e| panic!("{what}: writes: {e:?}"));
        model.check(&mut store, &format!("point {point}, after more writes"));
        assert!(
            !store.zone_changed(),
            "point {point}: a zone read as changed"
        );
        assert_eq!(store.into_inner().stats.unerased_programs, 0);
    }
    assert!(unstable > 100, "{unstable} points with unstable tears");
}

/// Block 3 (zone 0) written twice and block 30 (zone 1) once, with one zone in RAM; then
/// zone 1 read, so that zone 0's map left RAM.
fn zone_0_out_of_ram(store: &mut Zoned<'_, 1>) {
    store.write_block(3, &content(3, 1)).unwrap();
    store.write_block(3, &content(3, 2)).unwrap();
    store.write_block(30, &content(30, 1)).unwrap();
    let mut buf = [0u8; BLOCK_LEN];
    store.read_block(30, &mut buf).unwrap();
}

#[test]
fn a_bit_lost_while_a_zone_is_out_of_ram_is_not_served_as_an_older_version() {
    let mut mem = vec![0xFFu8; FLASH];
    let mut wear = vec![0u32; ZONES * ZONE_SECTORS];
    let mut store = Zoned::<1>::mount(NorSim::new(&mut mem, &mut wear, 1)).unwrap();
    zone_0_out_of_ram(&mut store);
    // Three bits of the newest entry of block 3 lost: the entry is beyond correction, and a
    // scan of zone 0 maps block 3 to version 1.
    let at = entry_of(store.flash_mut().memory(), &content(3, 2));
    let mem = store.flash_mut().memory_mut();
    mem[at] ^= 0x01;
    mem[at + 6] ^= 0x10;
    mem[at + 10] ^= 0x80;
    let mut buf = [0u8; BLOCK_LEN];
    for block in [3, 0, 19] {
        assert_eq!(
            store.read_block(block, &mut buf),
            Err(NorError::ZoneChanged { zone: 0 }),
            "block {block}"
        );
    }
    assert_eq!(
        store.write_block(5, &content(5, 1)),
        Err(NorError::ZoneChanged { zone: 0 })
    );
    assert!(store.zone_changed() && store.damaged());
    // The other zones are served.
    store.read_block(30, &mut buf).unwrap();
    assert_eq!(buf, content(30, 1));
    // A remount serves the zone again as it finds it, and reports the damage: the caller
    // rewrites every block from the other copy.
    assert!(store.remount_if_needed().unwrap());
    assert!(!store.zone_changed() && store.damaged());
    store.read_block(3, &mut buf).unwrap();
    store.write_block(3, &content(3, 3)).unwrap();
}

/// Every bit of block 3's newest entry lost (it reads blank, which no scan counts as
/// damage): the zone changed all the same, its mount writes nothing, and the remount that
/// serves it again reports the damage the scan cannot see.
#[test]
fn a_change_that_no_scan_sees_as_damage_is_reported_after_the_remount() {
    let mut mem = vec![0xFFu8; FLASH];
    let mut wear = vec![0u32; ZONES * ZONE_SECTORS];
    let mut store = Zoned::<1>::mount(NorSim::new(&mut mem, &mut wear, 1)).unwrap();
    zone_0_out_of_ram(&mut store);
    let at = entry_of(store.flash_mut().memory(), &content(3, 2));
    store.flash_mut().memory_mut()[at..at + 32].fill(0xFF);
    // And a bit of its sector's header: a mount would renew the header (collect the sector).
    store.flash_mut().memory_mut()[at / E * E + 8] ^= 0x04;
    let mut buf = [0u8; BLOCK_LEN];
    let before = store.flash_mut().stats;
    assert_eq!(
        store.read_block(3, &mut buf),
        Err(NorError::ZoneChanged { zone: 0 })
    );
    // The mount of a zone that changed writes nothing: what changed stays as it was.
    let after = store.flash_mut().stats;
    assert_eq!(
        (after.programs, after.erases),
        (before.programs, before.erases)
    );
    assert!(store.remount_if_needed().unwrap());
    assert!(store.damaged() && !store.zone_changed());
    store.read_block(3, &mut buf).unwrap();
    assert_eq!(buf, content(3, 1), "the remount serves what it finds");
    // A fresh mount of the same flash cannot know.
    let flash = store.into_inner();
    assert!(!Zoned::<1>::mount(flash).unwrap().damaged());
}

#[test]
fn a_bit_lost_in_a_stale_copy_or_one_flipped_in_the_newest_changes_nothing() {
    for stale in [true, false] {
        let mut mem = vec![0xFFu8; FLASH];
        let mut wear = vec![0u32; ZONES * ZONE_SECTORS];
        let mut store = Zoned::<1>::mount(NorSim::new(&mut mem, &mut wear, 1)).unwrap();
        zone_0_out_of_ram(&mut store);
        let mem = store.flash_mut().memory_mut();
        if stale {
            let at = entry_of(mem, &content(3, 1));
            mem[at] ^= 0x01;
            mem[at + 6] ^= 0x10;
            mem[at + 10] ^= 0x80;
        } else {
            let at = entry_of(mem, &content(3, 2));
            mem[at + 6] ^= 0x10;
        }
        let mut buf = [0u8; BLOCK_LEN];
        store.read_block(3, &mut buf).unwrap();
        assert_eq!(buf, content(3, 2), "stale {stale}");
        assert!(!store.zone_changed(), "stale {stale}");
    }
}

/// A bit lost for good in a sector header of zone 0 while it is out of RAM: corrected, and
/// the zone's mount collects that sector so that its header is written afresh (which moves
/// blocks). The zone is judged by what its scan found, before that: no alarm.
#[test]
fn a_worn_header_renewed_by_the_zones_mount_is_no_change() {
    let mut mem = vec![0xFFu8; FLASH];
    let mut wear = vec![0u32; ZONES * ZONE_SECTORS];
    let mut store = Zoned::<1>::mount(NorSim::new(&mut mem, &mut wear, 1)).unwrap();
    zone_0_out_of_ram(&mut store);
    let at = entry_of(store.flash_mut().memory(), &content(3, 2));
    store.flash_mut().memory_mut()[at / E * E + 8] ^= 0x04;
    let mut buf = [0u8; BLOCK_LEN];
    store.read_block(3, &mut buf).unwrap();
    assert_eq!(buf, content(3, 2));
    assert!(store.stats().renewed > 0, "{:?}", store.stats());
    assert!(!store.zone_changed());
    store.read_block(30, &mut buf).unwrap();
    store.read_block(3, &mut buf).unwrap();
    assert_eq!(buf, content(3, 2));
}

/// An async write dropped between any two flash operations (the executor cancelled it),
/// then a request to another zone, which takes zone 0's map out of RAM: the write left
/// pending is decided first, so the zone mounts again as it was left; and a zone mount
/// dropped half way leaves the flash driver where the next request finds it.
#[test]
fn a_dropped_async_write_or_zone_mount_leaves_no_false_alarm() {
    let mut landed = 0;
    // A write dropped after `polls` polls; a read of zone 1 dropped so; or the write dropped,
    // and then the read that takes zone 0 out of RAM dropped after `second` polls, while it
    // decides the write left pending.
    let cases = (0..24u32).flat_map(|p| {
        [(p, Some(false), 0), (p, Some(true), 0)]
            .into_iter()
            .chain((1..6).map(move |k| (p, None, k)))
    });
    for (polls, drop_read, second) in cases {
        let mut mem = vec![0xFFu8; FLASH];
        let mut wear = vec![0u32; ZONES * ZONE_SECTORS];
        let flash = NorSim::<4, E>::new(&mut mem, &mut wear, 1);
        let flash = raid1_embedded::sim::BusyFlash::new(flash, 1).with_read_polls(1);
        let mut store = block_on(asynch::ZonedNorStore::<
            _,
            ZONES,
            ZONE_BLOCKS,
            ZONE_SECTORS,
            1,
        >::mount(flash))
        .unwrap();
        block_on(store.write_block(30, &content(30, 1))).unwrap();
        block_on(store.write_block(3, &content(3, 1))).unwrap();
        let mut buf = [0u8; BLOCK_LEN];
        let data = content(3, 2);
        let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
        {
            let mut fut = core::pin::pin!(async {
                if drop_read == Some(true) {
                    store.read_block(30, &mut buf).await.map(|_| ())
                } else {
                    store.write_block(3, &data).await
                }
            });
            for _ in 0..polls {
                if fut.as_mut().poll(&mut cx).is_ready() {
                    break;
                }
            }
        }
        if drop_read.is_none() {
            let mut fut = core::pin::pin!(store.read_block(30, &mut buf));
            for _ in 0..second {
                if fut.as_mut().poll(&mut cx).is_ready() {
                    break;
                }
            }
        }
        let what = format!("dropped after {polls} polls, a read {drop_read:?}, then {second}");
        block_on(store.read_block(30, &mut buf)).unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert_eq!(buf, content(30, 1), "{what}");
        block_on(store.read_block(3, &mut buf)).unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert!(buf == content(3, 1) || buf == content(3, 2), "{what}");
        landed += u32::from(buf == content(3, 2));
        assert!(!store.zone_changed(), "{what}");
    }
    assert!(landed > 0, "no dropped write landed");
}

#[test]
fn the_async_zoned_store_is_the_same_store() {
    let mut mem = vec![0xFFu8; FLASH];
    let mut wear = vec![0u32; ZONES * ZONE_SECTORS];
    let flash = NorSim::<4, E>::new(&mut mem, &mut wear, 1);
    let flash = raid1_embedded::sim::BusyFlash::new(flash, 1);
    let mut store = block_on(asynch::ZonedNorStore::<
        _,
        ZONES,
        ZONE_BLOCKS,
        ZONE_SECTORS,
        1,
    >::mount(flash))
    .unwrap();
    for block in (0..BLOCKS as u32).step_by(7) {
        block_on(store.write_block(block, &content(block, 1))).unwrap();
    }
    let flash = store.into_inner().flash;
    // The blocking store reads what the async one wrote.
    let mut store = Zoned::<2>::mount(flash).unwrap();
    let mut buf = [0u8; BLOCK_LEN];
    for block in 0..BLOCKS as u32 {
        store.read_block(block, &mut buf).unwrap();
        let v = u32::from(block % 7 == 0);
        assert_eq!(buf, content(block, v), "block {block}");
    }
}

/// Poll a future to completion (the simulated flash's waits complete on the next poll).
fn block_on<T>(fut: impl core::future::Future<Output = T>) -> T {
    let mut fut = core::pin::pin!(fut);
    let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
    loop {
        if let core::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

// The volume over a zoned flash: 4 zones of 10 sectors, 50 blocks each, one zone in RAM.
const V_SECTORS: usize = 10;
const V_BLOCKS: usize = 50; // < (10 - 2) * 7
const SD_BLOCKS: usize = 512;
type VNor<'a> = ZonedNorStore<NorSim<'a, 4, E>, ZONES, V_BLOCKS, V_SECTORS, 1>;

fn pattern(sector: u64, version: u32) -> Block {
    let mut b = Block::new();
    b.contents = content(sector as u32 | 1 << 20, version);
    b
}

#[test]
fn a_volume_fails_a_changed_zone_and_rewrites_the_flash_in_full_at_rejoin() {
    let mut sd_mem = vec![Block::new(); SD_BLOCKS];
    let mut nor_mem = vec![0xFFu8; ZONES * V_SECTORS * E];
    let mut wear = vec![0u32; ZONES * V_SECTORS];
    let id = VolumeIdentity {
        uuid: *b"zoned-nor-volume",
        name: "zones",
        ctime: 1,
    };
    let sd = SdMember::new(SdSim::new(&mut sd_mem, 1));
    let nor = VNor::mount(NorSim::new(&mut nor_mem, &mut wear, 2)).unwrap();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let (sd, nor) = Mirror::format(sd, nor, &mut storage, id).unwrap();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage).unwrap();
    let sectors = vol.sectors();
    let mut versions = vec![1u32; sectors as usize];
    for s in 0..sectors {
        vol.write(&[pattern(s, 1)], BlockIdx(s as u32)).unwrap();
    }
    // Sector x lives in zone 2 of the flash; written again, then the zone leaves RAM (the
    // metadata and sector 0 are in zone 0).
    let x = 2 * V_BLOCKS as u64 + 5 - DATA_OFFSET;
    vol.write(&[pattern(x, 2)], BlockIdx(x as u32)).unwrap();
    versions[x as usize] = 2;
    vol.write(&[pattern(0, 2)], BlockIdx(0)).unwrap();
    versions[0] = 2;
    // Three bits of sector x's newest entry are lost on the flash.
    vol.with_members(|_, nor| {
        let at = entry_of(nor.flash_mut().memory(), &pattern(x, 2).contents);
        let mem = nor.flash_mut().memory_mut();
        mem[at] ^= 0x01;
        mem[at + 6] ^= 0x10;
        mem[at + 10] ^= 0x80;
    });
    // A write to zone 2: the flash fails it, the engine fails the flash, the card has it.
    let y = x + 1;
    vol.write(&[pattern(y, 2)], BlockIdx(y as u32)).unwrap();
    versions[y as usize] = 2;
    let h = vol.health();
    assert!(h.degraded && h.nor == MemberState::Faulty, "{h:?}");
    assert!(vol.with_members(|_, nor| nor.zone_changed()));
    // Brought back: mounted again and rewritten in full from the card.
    vol.rejoin(NOR).unwrap();
    let h = vol.health();
    assert!(!h.degraded && h.synced_sectors >= sectors, "{h:?}");
    // The flash alone serves every sector right.
    vol.with_members(|sd, _| sd.dev.remove());
    for s in 0..sectors {
        let mut b = [Block::new()];
        vol.read(&mut b, BlockIdx(s as u32)).unwrap();
        let v = versions[s as usize];
        assert!(
            b[0].contents == pattern(s, v).contents,
            "sector {s} is not version {v}"
        );
    }
}

/// A 16 MiB part (4 096 sectors of 4 KiB) as 32 zones of 128 sectors and 750 blocks, two in
/// RAM: what it costs in RAM, and what a zone mount reads. One store over the whole part
/// would need a 48 000-byte map and a 32 768-byte sector table.
#[test]
fn a_16_mib_part_in_32_zones() {
    const Z: usize = 32;
    const ZS: usize = 128;
    const ZB: usize = 750;
    type Big<'a> = ZonedNorStore<NorSim<'a, 4, E>, Z, ZB, ZS, 2>;
    // Each zone in RAM has a place for the driver (a real one is a few bytes; the simulator
    // is a few hundred on a 64-bit host): counted apart.
    let driver = core::mem::size_of::<Option<NorSim<'_, 4, E>>>();
    let ram = core::mem::size_of::<Big<'_>>() - 2 * driver;
    let single = 2 * Z * ZB + 8 * Z * ZS;
    println!(
        "16 MiB in 32 zones, 2 in RAM: {ram} B of RAM and 2 places for the driver \
         (one store: {single} B of tables)"
    );
    assert!(ram < 6 * 1024, "{ram} B");
    let mut mem = vec![0xFFu8; Z * ZS * E];
    let mut wear = vec![0u32; Z * ZS];
    let mut store = Big::mount(NorSim::new(&mut mem, &mut wear, 1)).unwrap();
    assert!(store.warning().is_none());
    let blocks = store.num_blocks();
    assert_eq!(blocks as usize, Z * ZB);
    // A block in every zone, in an order that mounts a zone for each.
    for round in 1..=2u32 {
        for zone in 0..Z as u32 {
            let block = (zone * 13 % Z as u32) * ZB as u32 + zone;
            store.write_block(block, &content(block, round)).unwrap();
        }
    }
    let mounts = store.zone_mounts();
    let reads = store.flash_mut().stats.reads;
    let mut buf = [0u8; BLOCK_LEN];
    for zone in 0..Z as u32 {
        let block = (zone * 13 % Z as u32) * ZB as u32 + zone;
        store.read_block(block, &mut buf).unwrap();
        assert_eq!(buf, content(block, 2), "block {block}");
    }
    let per_mount = (store.flash_mut().stats.reads - reads) / (store.zone_mounts() - mounts);
    println!(
        "zone mounts: {} for {} writes and {Z} reads; about {per_mount} flash reads per zone mount",
        store.zone_mounts(),
        2 * Z
    );
    assert!(store.zone_mounts() > 2 * Z as u32);
    // A zone with every block written twice: what its mount reads.
    for round in 3..=4 {
        for block in 0..ZB as u32 {
            store.write_block(block, &content(block, round)).unwrap();
        }
    }
    for other in [ZB as u32, 2 * ZB as u32] {
        store.read_block(other, &mut buf).unwrap();
    }
    let reads = store.flash_mut().stats.reads;
    store.read_block(1, &mut buf).unwrap();
    assert_eq!(buf, content(1, 4));
    println!(
        "a full zone's mount and one read: {} flash reads",
        store.flash_mut().stats.reads - reads
    );
    let flash = store.into_inner();
    let mut store = Big::mount(flash).unwrap();
    store.read_block(blocks - 1, &mut buf).unwrap();
    assert_eq!(buf, [0u8; BLOCK_LEN]);
}

/// Damage the mount found in zone 0 (an entry beyond correction) holds the sector that
/// records it whenever zone 0 is in RAM, until `release_damage`; a zone out of RAM at the
/// release lets go when it is mounted again.
#[test]
fn a_zone_holds_the_record_of_its_damage_until_released() {
    let mut mem = vec![0xFFu8; FLASH];
    let mut wear = vec![0u32; ZONES * ZONE_SECTORS];
    let mut store = Zoned::<1>::mount(NorSim::new(&mut mem, &mut wear, 1)).unwrap();
    zone_0_out_of_ram(&mut store);
    let flash = store.into_inner();
    let at = entry_of(flash.memory(), &content(3, 2));
    let mut flash = flash;
    let mem = flash.memory_mut();
    mem[at] ^= 0x01;
    mem[at + 6] ^= 0x10;
    mem[at + 10] ^= 0x80;
    let mut store = Zoned::<1>::mount(flash).unwrap();
    assert!(store.damaged());
    let mut buf = [0u8; BLOCK_LEN];
    store.read_block(0, &mut buf).unwrap();
    assert!(store.holds_damage(), "zone 0 in RAM holds its record");
    store.read_block(30, &mut buf).unwrap();
    assert!(!store.holds_damage(), "zone 1 holds nothing");
    store.release_damage();
    store.read_block(0, &mut buf).unwrap();
    assert!(!store.holds_damage(), "zone 0 let go when mounted again");
    assert!(!store.zone_changed());
}

/// A program that fails part way in zone 0, its cells too weak to read as anything but blank,
/// in every slot of a sector in turn (in the last one, the write is retried in another
/// sector, and the torn slot ends its own); zone 0 then leaves RAM and comes back, and more
/// writes follow. A zone whose programs all completed is mounted again without a guard slot;
/// this one may hold a torn program that reads blank, so its mount must keep the guard, or the
/// next write programs over the torn cells.
#[test]
fn a_zone_with_a_failed_program_is_mounted_again_with_a_guard() {
    let mut weak = 0;
    for (before, k) in (0..8u32).flat_map(|b| (0..3).map(move |k| (b, k))) {
        let mut mem = vec![0xFFu8; FLASH];
        let mut wear = vec![0u32; ZONES * ZONE_SECTORS];
        let mut store = Zoned::<1>::mount(NorSim::new(&mut mem, &mut wear, 3)).unwrap();
        let mut buf = [0u8; BLOCK_LEN];
        for v in 1..=before {
            store.write_block(1, &content(1, v)).unwrap();
        }
        // Fail the k-th program of the next write (its entry, data or commit), with torn
        // cells that read blank; the write goes to the next slot.
        let faults = &mut store.flash_mut().faults;
        faults.unstable_tears = true;
        faults.weak_tears_read_erased = true;
        faults.fail_program = Countdown::after(k);
        store.write_block(1, &content(1, 100)).unwrap();
        store.flash_mut().faults.fail_program = Countdown::OFF;
        // Out of RAM and back, then writes into the slots after the failed one.
        for round in 0..8 {
            store.read_block(30, &mut buf).unwrap();
            store.write_block(2, &content(2, round + 1)).unwrap();
        }
        store.read_block(1, &mut buf).unwrap();
        let what = format!("{before} writes before, program {k} failed");
        assert_eq!(buf, content(1, 100), "{what}");
        let flash = store.into_inner();
        weak += flash.stats.weak_reads;
        assert_eq!(flash.stats.unerased_programs, 0, "{what}");
        assert_eq!(flash.stats.weak_overprograms, 0, "{what}");
    }
    assert!(weak > 0, "no torn program read blank");
}

/// A remount that fails (the bus to the flash down) leaves a store that serves nothing until
/// a mount succeeds: `remount_if_needed`, which the mirror's `rejoin` calls, must then mount
/// it again, though no zone gave sectors up or changed (the failed mount forgot both).
#[test]
fn a_store_whose_remount_failed_is_mounted_again_when_needed() {
    let mut mem = vec![0xFFu8; FLASH];
    let mut wear = vec![0u32; ZONES * ZONE_SECTORS];
    let mut store = Zoned::<1>::mount(NorSim::new(&mut mem, &mut wear, 1)).unwrap();
    for b in 0..store.num_blocks() {
        store.write_block(b, &content(b, 1)).unwrap();
    }
    assert!(!store.remount_if_needed().unwrap(), "nothing to take up");
    store.flash_mut().power_off();
    assert!(store.remount().is_err());
    let mut buf = [0u8; BLOCK_LEN];
    assert_eq!(store.read_block(3, &mut buf), Err(NorError::NotMounted));
    store.flash_mut().power_cycle();
    assert!(store.remount_if_needed().unwrap());
    for b in 0..store.num_blocks() {
        store.read_block(b, &mut buf).unwrap();
        assert_eq!(buf, content(b, 1), "block {b}");
    }
}
