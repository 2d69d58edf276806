//! md's `--grow --size` (update_size, raid1_resize, md_bitmap_resize): the size changes only
//! while the array is quiet, a grown region is resynced (or not, with `assume_clean`), the
//! bitmap follows, and the new size reaches every member in one superblock round.

mod common;

use common::*;
use raid1_core::*;

fn quiesce(a: &mut A) {
    a.freeze().unwrap();
    run_to_idle(a);
    assert!(a.is_quiesced());
}

/// Leaked bitmap storage of `bytes` bytes (each of bits and hot).
fn storage(bytes: usize) -> Option<(&'static mut [u8], &'static mut [u8])> {
    Some((
        Box::leak(vec![0u8; bytes].into_boxed_slice()),
        Box::leak(vec![0u8; bytes].into_boxed_slice()),
    ))
}

/// The superblocks among `cmds`.
fn superblocks(cmds: &[IoCmd<4>]) -> Vec<SuperblockState<4>> {
    cmds.iter()
        .filter_map(|c| match c {
            IoCmd::Superblock { state, .. } => Some(*state),
            _ => None,
        })
        .collect()
}

/// Sync writes among `cmds` (member, first sector, sectors).
fn sync_writes(cmds: &[IoCmd<4>]) -> Vec<(u8, u64, u32)> {
    member_ios(cmds)
        .iter()
        .filter(|io| io.op == MemberOp::Write && matches!(io.buffer, Buffer::Sync { .. }))
        .map(|io| (io.member.0, io.sector, io.sectors))
        .collect()
}

#[test]
fn growing_records_the_size_in_one_round_and_resyncs_only_the_new_region() {
    let mut a = clean_array(2);
    let events = a.status().events;
    assert_eq!(
        a.submit(T0, read(1, 1500, 8)),
        Err(SubmitError::OutOfRange(1508))
    );
    quiesce(&mut a);
    a.resize(2048, 0, None, false).unwrap();
    assert_eq!(a.config().data_sectors, 2048);
    assert_eq!(a.status().resync_offset, 1024, "md: recovery_cp = old size");
    let cmds = run_to_idle(&mut a);
    let sbs = superblocks(&cmds);
    assert_eq!(sbs.len(), 2, "{cmds:?}");
    assert!(sbs.iter().all(|s| s.size == 2048 && s.events > events));
    assert!(sbs.iter().all(|s| s.resync_offset == 1024));
    assert!(sync_writes(&cmds).is_empty(), "no sync while frozen");
    a.unfreeze().unwrap();
    let cmds = run_to_idle(&mut a);
    let w = sync_writes(&cmds);
    assert!(w.iter().all(|&(m, s, _)| m == 1 && s >= 1024), "{w:?}");
    assert_eq!(w.iter().map(|w| u64::from(w.2)).sum::<u64>(), 1024);
    assert_eq!(a.status().resync_offset, MAX_SECTOR);
    assert_eq!(a.superblock_for(MemberId(0)).unwrap().size, 2048);
    // The new region is the array's now.
    a.submit(T0, read(2, 1500, 8)).unwrap();
    run_to_idle(&mut a);
    assert_eq!(completions(&mut a), vec![ok(2)]);
}

#[test]
fn assume_clean_grows_without_marking_anything() {
    let mut a = clean_array(2);
    quiesce(&mut a);
    a.resize(2048, 0, None, true).unwrap();
    assert_eq!(a.status().resync_offset, MAX_SECTOR);
    a.unfreeze().unwrap();
    let cmds = run_to_idle(&mut a);
    assert!(sync_writes(&cmds).is_empty(), "{cmds:?}");
    assert!(superblocks(&cmds).iter().all(|s| s.size == 2048));
}

#[test]
fn a_running_sync_must_stop_first_and_a_pending_resync_below_the_old_end_stays() {
    let mut a = A::assemble(cfg(), None, &dirty_sbs(2, 10), StartPolicy::RequireAll).unwrap();
    // Let the resync get under way, then freeze: the job is still there.
    let cmds = drain(&mut a);
    complete_all(&mut a, &cmds, IoResult::Ok);
    a.freeze().unwrap();
    run_to_idle(&mut a);
    assert!(a.is_quiesced());
    assert!(a.status().sync.is_some());
    let events = a.status().events;
    assert_eq!(a.resize(2048, 0, None, false), Err(ReconfigError::SyncBusy));
    assert_eq!(a.config().data_sectors, 1024);
    assert_eq!(a.status().events, events);
    // mdadm freezes sync_action first: the resync stops at its checkpoint.
    a.set_sync_frozen(true);
    run_to_idle(&mut a);
    assert!(a.status().sync.is_none());
    let cp = a.status().resync_offset;
    assert!(cp < 1024, "{cp}");
    a.resize(2048, 0, None, false).unwrap();
    assert_eq!(a.status().resync_offset, cp, "md keeps a lower recovery_cp");
    a.set_sync_frozen(false);
    a.unfreeze().unwrap();
    let cmds = run_to_idle(&mut a);
    let end = sync_writes(&cmds)
        .iter()
        .map(|w| w.1 + u64::from(w.2))
        .max();
    assert_eq!(end, Some(2048), "the resync runs to the new end");
    assert_eq!(a.status().resync_offset, MAX_SECTOR);
}

#[test]
fn a_grown_bitmap_keeps_its_chunk_and_its_new_bits_land_before_the_new_size() {
    let mut a = bitmap_array(2);
    // 16 chunks of 64 sectors: two bytes of bits. A write leaves chunk 3 dirty.
    write_done(&mut a, 1, 192, 8);
    run_to_idle(&mut a);
    assert!(a.bitmap_bit(3));
    quiesce(&mut a);
    assert_eq!(a.resize_bitmap_chunk(2048, 512), Ok(64));
    // Two bytes of storage cannot hold 32 chunks.
    assert_eq!(
        a.resize(2048, 512, None, false),
        Err(ReconfigError::BitmapConfig(
            ConfigError::BitmapStorageTooSmall(4)
        ))
    );
    a.resize(2048, 512, storage(4), false).unwrap();
    assert_eq!(a.config().bitmap_chunk_sectors, 64);
    let dirty: Vec<u64> = (0..32).filter(|&c| a.bitmap_bit(c)).collect();
    assert_eq!(dirty, [3].into_iter().chain(16..32).collect::<Vec<_>>());
    // The pages first; no superblock with the new size before they are on disk.
    let first = drain(&mut a);
    assert!(!first.is_empty());
    assert!(
        first.iter().all(|c| matches!(c, IoCmd::BitmapPage { .. })),
        "{first:?}"
    );
    assert!(
        drain(&mut a).is_empty(),
        "the size round waits for the pages"
    );
    complete_all(&mut a, &first, IoResult::Ok);
    let cmds = run_to_idle(&mut a);
    assert!(superblocks(&cmds).iter().all(|s| s.size == 2048));
    assert!(!superblocks(&cmds).is_empty());
    // The bitmap-guided resync visits the dirty chunks: chunk 3 and the new region.
    a.unfreeze().unwrap();
    let cmds = run_to_idle(&mut a);
    let w = sync_writes(&cmds);
    assert_eq!(
        w.iter().map(|w| u64::from(w.2)).sum::<u64>(),
        64 + 1024,
        "{w:?}"
    );
    assert!(
        w.iter()
            .all(|&(_, s, _)| (192..256).contains(&s) || s >= 1024)
    );
}

#[test]
fn a_bitmap_that_outgrows_its_room_doubles_its_chunk_and_folds_the_bits() {
    let mut a = bitmap_array(2);
    write_done(&mut a, 1, 192, 8); // chunk 3 of 64 sectors
    run_to_idle(&mut a);
    quiesce(&mut a);
    // Room for two bytes: 32 chunks of 64 do not fit, 16 of 128 do (md_bitmap_resize).
    assert_eq!(a.resize_bitmap_chunk(2048, 2), Ok(128));
    // Room for one byte: 8 chunks of 256.
    assert_eq!(a.resize_bitmap_chunk(2048, 1), Ok(256));
    a.resize(2048, 2, None, false).unwrap();
    assert_eq!(a.config().bitmap_chunk_sectors, 128);
    let dirty: Vec<u64> = (0..16).filter(|&c| a.bitmap_bit(c)).collect();
    // Old chunk 3 is in new chunk 1; the new region is chunks 8..16.
    assert_eq!(dirty, [1].into_iter().chain(8..16).collect::<Vec<_>>());
    assert!(!a.bitmap_bit(16));
    a.unfreeze().unwrap();
    let cmds = run_to_idle(&mut a);
    assert!(superblocks(&cmds).iter().all(|s| s.size == 2048));
    let w = sync_writes(&cmds);
    assert_eq!(w.iter().map(|w| u64::from(w.2)).sum::<u64>(), 128 + 1024);
}

#[test]
fn shrinking_cuts_the_bitmap_and_the_bad_blocks_and_the_superblock_goes_first() {
    let c = bitmap_cfg();
    let lists: [BadBlocks<'static>; 4] = std::array::from_fn(|i| {
        if i == 1 {
            let room: &'static mut [BadRange] = Box::leak(
                vec![
                    BadRange {
                        start: 500,
                        sectors: 20,
                    },
                    BadRange {
                        start: 700,
                        sectors: 4,
                    },
                    BadRange {
                        start: 0,
                        sectors: 0,
                    },
                ]
                .into_boxed_slice(),
            );
            BadBlocks::new(room, 2)
        } else {
            BadBlocks::empty()
        }
    });
    let mut a = A::assemble_with_bad_blocks(
        c,
        bitmap_for(&c),
        &clean_sbs(2, 10),
        StartPolicy::RequireAll,
        lists,
    )
    .unwrap();
    run_to_idle(&mut a);
    write_done(&mut a, 1, 900, 8); // chunk 14
    run_to_idle(&mut a);
    assert!(a.bitmap_bit(14));
    quiesce(&mut a);
    a.resize(512, 4096, None, false).unwrap();
    assert_eq!(a.config().data_sectors, 512);
    assert_eq!(
        a.config().bitmap_chunk_sectors,
        64,
        "a shrink keeps the chunk"
    );
    assert!(!a.bitmap_bit(14), "bits beyond the end are gone");
    assert_eq!(
        a.bad_blocks(MemberId(1)),
        &[BadRange {
            start: 500,
            sectors: 12
        }]
    );
    // The superblocks first; the pages once they landed.
    let first = drain(&mut a);
    assert!(
        first.iter().all(
            |c| matches!(c, IoCmd::Superblock { state, .. } if state.size == 512)
                || matches!(c, IoCmd::Member(io) if io.op == MemberOp::Flush)
        ),
        "{first:?}"
    );
    complete_all(&mut a, &first, IoResult::Ok);
    let rest = run_to_idle(&mut a);
    assert!(rest.iter().any(|c| matches!(c, IoCmd::BitmapPage { .. })));
    a.unfreeze().unwrap();
    assert_eq!(
        a.submit(T0, read(2, 508, 8)),
        Err(SubmitError::OutOfRange(516))
    );
}

#[test]
fn a_shrink_is_refused_while_a_request_waits_beyond_the_new_end() {
    let mut a = clean_array(2);
    quiesce(&mut a);
    // Submitted while frozen: it waits for the unfreeze.
    a.submit(T0, read(1, 900, 8)).unwrap();
    assert!(a.is_quiesced());
    let events = a.status().events;
    assert_eq!(
        a.resize(512, 0, None, false),
        Err(ReconfigError::ShrinkBusy {
            sectors: 512,
            sector: 900
        })
    );
    assert_eq!(
        a.resize(904, 0, None, false),
        Err(ReconfigError::ShrinkBusy {
            sectors: 904,
            sector: 904
        })
    );
    assert_eq!(a.status().events, events);
    assert_eq!(a.config().data_sectors, 1024);
    // A new end past the request is fine.
    a.resize(908, 0, None, false).unwrap();
    a.unfreeze().unwrap();
    run_to_idle(&mut a);
    assert_eq!(completions(&mut a), vec![ok(1)]);
}

#[test]
fn hostile_sizes_and_states_are_refused_with_nothing_changed() {
    let mut a = bitmap_array(2);
    // Not quiesced.
    assert_eq!(
        a.resize(2048, 0, None, false),
        Err(ReconfigError::NotQuiesced)
    );
    quiesce(&mut a);
    let before = (*a.config(), a.status());
    assert_eq!(a.resize(0, 0, None, false), Err(ReconfigError::Size(0)));
    assert_eq!(
        a.resize(MAX_ARRAY_SECTORS + 1, 0, None, false),
        Err(ReconfigError::Size(MAX_ARRAY_SECTORS + 1))
    );
    assert_eq!(
        a.resize(u64::MAX, 0, None, false),
        Err(ReconfigError::Size(u64::MAX))
    );
    // The largest size with one byte of room: no chunk up to 2 GiB fits.
    assert_eq!(
        a.resize(MAX_ARRAY_SECTORS, 1, None, false),
        Err(ReconfigError::BitmapRoom { room: 1 })
    );
    // Room 0: only what the bits take now (two bytes), so the chunk doubles.
    assert_eq!(a.resize_bitmap_chunk(2048, 0), Ok(128));
    assert_eq!((*a.config(), a.status()), before);
    // Read-only.
    a.set_read_only(T0, true).unwrap();
    run_to_idle(&mut a);
    assert_eq!(a.resize(2048, 0, None, false), Err(ReconfigError::ReadOnly));
    a.set_read_only(T0, false).unwrap();
    run_to_idle(&mut a);
    // Storage lent to an array without a bitmap.
    let mut b = clean_array(2);
    quiesce(&mut b);
    assert_eq!(
        b.resize(2048, 0, storage(8), false),
        Err(ReconfigError::BitmapConfig(
            ConfigError::BitmapStorageMismatch
        ))
    );
    assert_eq!(b.config().data_sectors, 1024);
    // Odd sizes are md's business as much as ours: any sector count is a size.
    b.resize(1031, 0, None, false).unwrap();
    run_to_idle(&mut b);
    assert_eq!(b.superblock_for(MemberId(1)).unwrap().size, 1031);
    // Not while a superblock round is under way.
    b.resize(1100, 0, None, true).unwrap();
    let cmds = drain(&mut b);
    assert!(!cmds.is_empty());
    let held: Vec<_> = cmds
        .iter()
        .filter(|c| matches!(c, IoCmd::Superblock { .. }))
        .collect();
    assert!(!held.is_empty());
    // The superblock writes are in flight: not quiesced; after they land it is fine again.
    assert_eq!(
        b.resize(1200, 0, None, true),
        Err(ReconfigError::NotQuiesced)
    );
    complete_all(&mut b, &cmds, IoResult::Ok);
    run_to_idle(&mut b);
    b.resize(1200, 0, None, true).unwrap();
}

#[test]
fn the_size_survives_a_restart_and_a_member_one_round_behind_is_rewritten() {
    // A power cut between the two members' superblock writes of the size round: member 0 has
    // the new size at events E+1, member 1 the old one at E.
    let mut a = clean_array(2);
    quiesce(&mut a);
    a.resize(2048, 0, None, false).unwrap();
    let cmds = drain(&mut a);
    let sbs = superblocks(&cmds);
    let mut found = clean_sbs(2, 0);
    let new0 = sbs
        .iter()
        .find(|s| s.this_member == MemberId(0))
        .copied()
        .unwrap();
    let mut old1 = a.superblock_for(MemberId(1)).unwrap();
    old1.size = 1024;
    old1.events = new0.events - 1;
    old1.resync_offset = MAX_SECTOR;
    found[0] = Some(new0);
    found[1] = Some(old1);
    // The frontend takes the size from the freshest superblock, as `raid1 run` does.
    let mut c = cfg();
    c.data_sectors = new0.size;
    let mut b = A::assemble(c, None, &found, StartPolicy::RequireAll).unwrap();
    assert_eq!(b.status().in_sync, 2);
    assert_eq!(b.status().resync_offset, 1024);
    let cmds = run_to_idle(&mut b);
    assert!(superblocks(&cmds).iter().all(|s| s.size == 2048));
    let w = sync_writes(&cmds);
    assert_eq!(w.iter().map(|w| u64::from(w.2)).sum::<u64>(), 1024);
    assert_eq!(b.status().resync_offset, MAX_SECTOR);
}

#[test]
fn writes_after_a_grow_wait_for_the_superblocks_that_give_the_size() {
    // Dirty already, so that a write needs no dirty mark of its own.
    let mut a = clean_array(2);
    write_done(&mut a, 1, 0, 8);
    quiesce(&mut a);
    assert!(a.status().dirty);
    a.resize(2048, 0, None, false).unwrap();
    a.unfreeze().unwrap();
    a.submit(T0, write(2, 1500, 8)).unwrap();
    let mut held = Vec::new();
    for _ in 0..10 {
        let cmds = drain(&mut a);
        if cmds.is_empty() {
            break;
        }
        for c in cmds {
            match c {
                IoCmd::Superblock { state, .. } if state.size == 2048 => held.push(c),
                IoCmd::Member(io) if io.op == MemberOp::Write && io.sector == 1500 => {
                    panic!("a write went out before the superblocks gave the new size: {io:?}")
                }
                other => a.complete(T0, tag_of(&other), IoResult::Ok).unwrap(),
            }
        }
    }
    assert!(!held.is_empty());
    complete_all(&mut a, &held, IoResult::Ok);
    let w = settle_metadata(&mut a);
    assert!(
        w.iter()
            .any(|io| io.sector == 1500 && io.op == MemberOp::Write)
    );
    complete_ios(&mut a, &w, IoResult::Ok);
    run_to_idle(&mut a);
    assert!(completions(&mut a).contains(&ok(2)));
}

#[test]
fn lent_storage_longer_than_the_bitmap_is_never_cleared_or_written_past_its_pages() {
    // After a shrink or a doubled chunk the storage holds more than the bitmap; what lies
    // past the last chunk (stale bits, as an OR of older on-disk copies may bring) belongs to
    // no page: clearing it once marked a page past the bitmap dirty, a round that never ended.
    let c = bitmap_cfg(); // 16 chunks: 2 bytes, in pages of 512 bytes
    let (bits, hot) = storage(1024).unwrap();
    bits[0] = 0x01; // a dirty chunk the daemon clears
    bits[600] = 0xff;
    let mut a = A::assemble(
        c,
        Some((bits, hot)),
        &clean_sbs(2, 10),
        StartPolicy::RequireAll,
    )
    .unwrap();
    run_to_idle(&mut a);
    // A write arms the bitmap daemon.
    write_done(&mut a, 1, 320, 8);
    for _ in 0..10 {
        if let Some(t) = a.poll_timeout() {
            a.handle_timeout(t);
        }
        let cmds = run_to_idle(&mut a);
        assert!(
            cmds.iter()
                .all(|c| !matches!(c, IoCmd::BitmapPage { page, .. } if *page > 0)),
            "{cmds:?}"
        );
    }
    assert!(!a.status().metadata_pending, "{:?}", a.status());
    assert!(!a.bitmap_bit(0), "cleared by the daemon");
    assert_eq!(a.bitmap_page(0).len(), 2);
}
