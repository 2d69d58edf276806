//! The NOR block layer under failed programs, failed erases, worn-out sectors, read bit flips,
//! and geometry it must refuse.

use raid1_embedded::nor::{BLOCK_LEN, NorBlockStore, NorError, sector_layout};
use raid1_embedded::sim::{Countdown, NorSim, NorSimError, Rng};

const E: usize = 4096;
const S: usize = 12;
const B: usize = 40;

fn content(block: u32, version: u32) -> [u8; BLOCK_LEN] {
    let mut out = [0u8; BLOCK_LEN];
    let mut rng = Rng::new(u64::from(block) << 32 | u64::from(version));
    for c in out.chunks_mut(8) {
        c.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    out
}

fn check(store: &mut NorBlockStore<NorSim<'_, 4, E>, B, S>, model: &[u32; B]) {
    let mut buf = [0u8; BLOCK_LEN];
    for b in 0..B as u32 {
        store.read_block(b, &mut buf).unwrap();
        let want = if model[b as usize] == 0 {
            [0u8; BLOCK_LEN]
        } else {
            content(b, model[b as usize])
        };
        assert!(buf == want, "block {b}");
    }
}

#[test]
fn failed_programs_and_erases_are_retried_elsewhere() {
    let mut mem = vec![0xFFu8; E * S];
    let mut wear = vec![0u32; S];
    let mut store =
        NorBlockStore::<_, B, S>::mount(NorSim::<4, E>::new(&mut mem, &mut wear, 9)).unwrap();
    let mut model = [0u32; B];
    let mut rng = Rng::new(3);
    for v in 1..=600u32 {
        if v % 37 == 0 {
            store.flash_mut().faults.fail_program = Countdown::after(rng.below(3) as u32);
        }
        if v % 53 == 0 {
            store.flash_mut().faults.fail_erase = Countdown::after(0);
        }
        let b = rng.below(B as u64) as u32;
        store
            .write_block(b, &content(b, v))
            .unwrap_or_else(|e| panic!("write {v}: {e:?}"));
        model[b as usize] = v;
        // Sectors given up for the session leave the free count, the sector being filled and
        // wear leveling's "nothing to do" as a count from scratch has them.
        assert!(
            store.bookkeeping_holds(),
            "bookkeeping drifted at write {v}"
        );
    }
    let stats = store.stats();
    assert!(stats.failed_ops > 10, "{stats:?}");
    check(&mut store, &model);
    // A remount sees the same, with failed sectors erased again on demand.
    let flash = store.into_inner();
    let mut store = NorBlockStore::<_, B, S>::mount(flash).unwrap();
    check(&mut store, &model);
    assert_eq!(store.flash_mut().stats.unerased_programs, 0);
}

#[test]
fn bit_flips_on_read_are_reread() {
    let mut mem = vec![0xFFu8; E * S];
    let mut wear = vec![0u32; S];
    let mut store =
        NorBlockStore::<_, B, S>::mount(NorSim::<4, E>::new(&mut mem, &mut wear, 1)).unwrap();
    let mut model = [0u32; B];
    store.flash_mut().faults.flip_period = 3;
    for v in 1..=300u32 {
        let b = v * 7 % B as u32;
        store.write_block(b, &content(b, v)).unwrap();
        model[b as usize] = v;
    }
    check(&mut store, &model);
    assert!(store.stats().reread > 0);
    let flash = store.into_inner();
    let mut store = NorBlockStore::<_, B, S>::mount(flash).unwrap();
    check(&mut store, &model);
}

#[test]
fn persistent_corruption_is_an_error_not_zeros() {
    let mut mem = vec![0xFFu8; E * S];
    let mut wear = vec![0u32; S];
    let mut store =
        NorBlockStore::<_, B, S>::mount(NorSim::<4, E>::new(&mut mem, &mut wear, 1)).unwrap();
    store.write_block(5, &content(5, 1)).unwrap();
    let _ = store.into_inner();
    // Flip a data bit for good: the first data slot of the first erased sector.
    let (meta, _) = sector_layout(E);
    let at = (0..S)
        .map(|s| s * E + meta * BLOCK_LEN)
        .find(|&a| mem[a..a + BLOCK_LEN] == content(5, 1))
        .unwrap();
    mem[at + 100] ^= 0x10;
    let mut store =
        NorBlockStore::<_, B, S>::mount(NorSim::<4, E>::new(&mut mem, &mut wear, 1)).unwrap();
    let mut buf = [0u8; BLOCK_LEN];
    assert_eq!(
        store.read_block(5, &mut buf),
        Err(NorError::Corrupt { block: 5 })
    );
    // Rewriting the block (the mirror does, from the other member) heals it.
    store.write_block(5, &content(5, 2)).unwrap();
    store.read_block(5, &mut buf).unwrap();
    assert!(buf == content(5, 2));
}

#[test]
fn worn_out_flash_fails_writes_but_keeps_data_readable() {
    let mut mem = vec![0xFFu8; E * S];
    let mut wear = vec![0u32; S];
    let mut flash = NorSim::<4, E>::new(&mut mem, &mut wear, 4);
    flash.faults.endurance = 6;
    let mut store = NorBlockStore::<_, B, S>::mount(flash).unwrap();
    let mut model = [0u32; B];
    let mut v = 0;
    let err = loop {
        v += 1;
        let b = v % 5;
        match store.write_block(b, &content(b, v)) {
            Ok(()) => model[b as usize] = v,
            Err(e) => break e,
        }
        assert!(v < 100_000, "never wore out");
    };
    assert!(
        matches!(
            err,
            NorError::NoSpace | NorError::Flash(NorSimError::EraseFailed)
        ),
        "{err:?}"
    );
    check(&mut store, &model);
}

#[test]
fn geometry_is_checked() {
    let mut mem = vec![0xFFu8; E * S];
    let mut wear = vec![0u32; S];
    // Too many blocks for the slots (needs < (S - 2) * 7).
    // The driver comes back with the error.
    let r = NorBlockStore::<_, 70, S>::mount(NorSim::<4, E>::new(&mut mem, &mut wear, 1));
    let refused = r.err().expect("refused");
    assert!(matches!(
        refused.error,
        NorError::Geometry {
            what: "BLOCKS",
            value: 70
        }
    ));
    assert_eq!(refused.driver.memory().len(), E * S);
    // More sectors than the chip has.
    let r = NorBlockStore::<_, 10, 13>::mount(NorSim::<4, E>::new(&mut mem, &mut wear, 1));
    assert!(matches!(
        r.err().map(|r| r.error),
        Some(NorError::Geometry {
            what: "capacity",
            ..
        })
    ));
    // Out-of-range block.
    let mut store =
        NorBlockStore::<_, 10, S>::mount(NorSim::<4, E>::new(&mut mem, &mut wear, 1)).unwrap();
    let mut buf = [0u8; BLOCK_LEN];
    assert_eq!(
        store.read_block(10, &mut buf),
        Err(NorError::OutOfRange {
            block: 10,
            blocks: 10
        })
    );
    assert_eq!(sector_layout(4096), (1, 7));
    assert_eq!(sector_layout(8192), (2, 14));
    assert_eq!(sector_layout(65536), (8, 120));
}

/// A part whose erases fail for a while: each collection gives its victim up for the session,
/// until no slot is left. `remount` takes those sectors up again, as a reboot would, and
/// keeps every block. A remount that fails (here the power is gone) leaves a store that
/// refuses every read and write, never serving from a half-built map, until one succeeds.
#[test]
fn remount_takes_up_given_up_sectors_and_a_failed_one_serves_nothing() {
    let mut mem = vec![0xFFu8; E * S];
    let mut wear = vec![0u32; S];
    let mut store =
        NorBlockStore::<_, B, S>::mount(NorSim::<4, E>::new(&mut mem, &mut wear, 5)).unwrap();
    let mut model = [0u32; B];
    for b in 0..B as u32 {
        store.write_block(b, &content(b, 1)).unwrap();
        model[b as usize] = 1;
    }
    store.flash_mut().faults.erase_broken = true;
    let mut version = 1;
    'fill: loop {
        version += 1;
        for b in 0..B as u32 {
            if store.write_block(b, &content(b, version)).is_err() {
                break 'fill;
            }
            model[b as usize] = version;
        }
        assert!(version < 100, "the store never ran out of slots");
    }
    assert!(store.gave_up_sectors());
    store.flash_mut().faults.erase_broken = false;
    store.flash_mut().power_off();
    assert!(store.remount().is_err());
    let mut buf = [0u8; BLOCK_LEN];
    assert!(matches!(
        store.read_block(3, &mut buf),
        Err(NorError::NotMounted)
    ));
    assert!(matches!(
        store.write_block(3, &content(3, 99)),
        Err(NorError::NotMounted)
    ));
    store.flash_mut().power_cycle();
    store.remount().unwrap();
    assert!(!store.gave_up_sectors());
    check(&mut store, &model);
    for round in 0..3 {
        for b in 0..B as u32 {
            store.write_block(b, &content(b, 200 + round)).unwrap();
            model[b as usize] = 200 + round;
        }
    }
    check(&mut store, &model);
    assert!(store.bookkeeping_holds());
}
