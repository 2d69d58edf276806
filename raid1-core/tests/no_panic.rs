//! "No panics on any sequence of API calls": random calls with random (often invalid) arguments,
//! random completions (including stale, duplicated and made-up tags), random time. Also run with
//! 32-bit sectors (feature `sector32`), where the same hostile values are truncated to them.
// `as Sector` and `u64::from` of a `Sector` are conversions to the same type at one width.
#![allow(clippy::unnecessary_cast, clippy::useless_conversion)]

use raid1_core::*;

struct Rng(u64);
impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

fn tag_of(c: &IoCmd<3>) -> Tag {
    match c {
        IoCmd::Member(io) => io.tag,
        IoCmd::Superblock { tag, .. }
        | IoCmd::BitmapPage { tag, .. }
        | IoCmd::Compare { tag, .. } => *tag,
    }
}

#[test]
fn random_api_calls_never_panic() {
    let mut completions = 0u64;
    let mut arrays = 0u64;
    let mut lists_taken = 0u64;
    let mut resized = 0u64;
    let mut reassembled = 0u64;
    for seed in 0..300u64 {
        let mut rng = Rng(seed);
        let mut cfg = Config::new(64 + rng.below(512) as Sector);
        cfg.max_request_sectors = 1 + rng.below(64) as u32;
        cfg.barrier_unit_shift = 6 + rng.below(3) as u8;
        cfg.sync_window_sectors = 1 + rng.below(32) as u32;
        if rng.below(2) == 0 {
            cfg.bitmap_chunk_sectors = 1 << rng.below(5);
            // Tiny pages, and now and then huge ones (a page index computed in sectors
            // would overflow 32 bits).
            cfg.bitmap_page_bytes = if rng.below(8) == 0 {
                u32::MAX - rng.below(4) as u32
            } else {
                1 + rng.below(8) as u32
            };
        }
        let n = Array::<3, 4, 2>::bitmap_bytes(&cfg);
        let storage = (n > 0).then(|| {
            (
                Box::leak(vec![0u8; n].into_boxed_slice()) as &mut [u8],
                Box::leak(vec![0u8; n].into_boxed_slice()) as &mut [u8],
            )
        });
        let ids = [MemberId(0), MemberId(1), MemberId(2)];
        let Ok(mut a) = Array::<'static, 3, 4, 2>::create(cfg, storage, 2, &ids, rng.below(2) == 0)
        else {
            continue;
        };
        arrays += 1;
        let mut pending: Vec<IoCmd<3>> = Vec::new();
        let mut now = 0u64;
        for _ in 0..3000 {
            now += rng.below(3_000_000);
            let t = Instant(now);
            match rng.below(19) {
                0..=3 => {
                    let op = [
                        RequestOp::Read,
                        RequestOp::Write,
                        RequestOp::Flush,
                        RequestOp::Discard,
                    ][rng.below(4) as usize];
                    let _ = a.submit(
                        t,
                        Request {
                            id: rng.next_u64(),
                            op,
                            sector: rng.below(700) as Sector,
                            sectors: rng.below(80) as u32,
                            buffer: 0,
                            fua: rng.below(2) == 0,
                        },
                    );
                }
                4..=8 if !pending.is_empty() => {
                    let k = rng.below(pending.len() as u64) as usize;
                    let c = pending.swap_remove(k);
                    let res = if rng.below(8) == 0 {
                        IoResult::Error
                    } else {
                        IoResult::Ok
                    };
                    match c {
                        IoCmd::Compare { tag, .. } => {
                            let _ = a.complete_compare(t, tag, rng.below(2) == 0);
                        }
                        c => {
                            let _ = a.complete(t, tag_of(&c), res);
                            if rng.below(20) == 0 {
                                let _ = a.complete(t, tag_of(&c), res); // duplicate
                            }
                        }
                    }
                }
                9 => {
                    let _ = a.complete(t, Tag(rng.next_u64()), IoResult::Ok);
                    let _ = a.complete_compare(t, Tag(rng.next_u64()), true);
                }
                10 => a.handle_timeout(t),
                11 => {
                    let _ = if rng.below(2) == 0 {
                        a.freeze()
                    } else {
                        a.unfreeze()
                    };
                }
                12 => {
                    let id = MemberId(rng.below(5) as u8);
                    let _ = match rng.below(5) {
                        0 => a.fail_member(t, id),
                        1 => a.remove_member(id),
                        2 => a.add_member(id, AddMember::New),
                        3 => a.add_member(
                            id,
                            AddMember::ReAdd {
                                slot: rng.below(4) as u16,
                                events: rng.below(50),
                                write_mostly: false,
                                was_in_sync: true,
                            },
                        ),
                        _ => a.set_raid_disks(rng.below(5) as u16),
                    };
                }
                13 => {
                    let _ = a.start_check(rng.below(2) == 0);
                    a.set_sync_rate(Some(rng.below(100_000)));
                }
                14 => {
                    if rng.below(4) == 0 {
                        let _ = a.rewrite_superblocks();
                    } else {
                        a.request_clean(t);
                    }
                }
                15 => {
                    // A bad-block list, often hostile (empty, unsorted, overlapping, beyond the
                    // data area, huge, longer than its storage), with random spare room; the
                    // valid ones are taken while the member is not readable or quiesced.
                    let id = MemberId(rng.below(4) as u8);
                    let mut list: Vec<BadRange> = (0..rng.below(6))
                        .map(|_| BadRange {
                            start: if rng.below(8) == 0 {
                                rng.next_u64() as Sector
                            } else {
                                rng.below(u64::from(cfg.data_sectors) + 8) as Sector
                            },
                            sectors: if rng.below(8) == 0 {
                                rng.next_u64() as u32
                            } else {
                                rng.below(12) as u32
                            },
                        })
                        .collect();
                    if rng.below(2) == 0 {
                        list.sort_by_key(|b| b.start);
                    }
                    let len = list.len() + rng.below(3) as usize;
                    list.resize(
                        list.len() + rng.below(3) as usize,
                        BadRange {
                            start: 0,
                            sectors: 0,
                        },
                    );
                    let storage: &'static mut [BadRange] = Box::leak(list.into_boxed_slice());
                    if a.set_bad_blocks(id, BadBlocks::new(storage, len)).is_ok() {
                        lists_taken += 1;
                    }
                    let _ = a.bad_blocks(id);
                }
                16 => {
                    // A new size, often hostile (0, huge, u64::MAX), with random room for the
                    // bitmap and sometimes new storage (often too small); the sync is frozen
                    // now and then so that a resize can find no sync job.
                    if rng.below(3) == 0 {
                        a.set_sync_frozen(rng.below(2) == 0);
                    }
                    let sectors = match rng.below(6) {
                        0 => 0,
                        1 => rng.next_u64() as Sector,
                        2 => Sector::MAX,
                        3 => MAX_ARRAY_SECTORS - rng.below(2) as Sector,
                        _ => 1 + rng.below(1200) as Sector,
                    };
                    let room = [0, 1, rng.below(64), rng.next_u64()][rng.below(4) as usize];
                    let storage = (rng.below(3) == 0).then(|| {
                        let n = rng.below(80) as usize;
                        (
                            Box::leak(vec![0u8; n].into_boxed_slice()) as &mut [u8],
                            Box::leak(vec![0u8; n].into_boxed_slice()) as &mut [u8],
                        )
                    });
                    let _ = a.resize_bitmap_chunk(sectors, room);
                    if a.resize(sectors, room, storage, rng.below(2) == 0).is_ok() {
                        resized += 1;
                    }
                }
                17 if rng.below(8) == 0 => {
                    // Assembled again in its place, from what the members would hold now
                    // (some missing, some with hostile counts and roles), with I/O of the
                    // array it replaces still pending (their tags are stale now).
                    let held = [0u8, 1, 2].map(|i| a.superblock_for(MemberId(i)));
                    let mut found = held.map(|sb| sb.filter(|_| rng.below(4) != 0));
                    for sb in found.iter_mut().flatten() {
                        match rng.below(4) {
                            0 => sb.events = rng.next_u64(),
                            1 => sb.roles[rng.below(3) as usize] = Role::Faulty,
                            2 => sb.raid_disks = rng.below(5) as u16,
                            _ => {}
                        }
                    }
                    let base = *a.config();
                    let mut c = base;
                    if rng.below(4) == 0 {
                        c.sync_window_sectors = rng.below(40) as u32;
                    }
                    let n = Array::<3, 4, 2>::bitmap_bytes(&c).min(rng.below(600) as usize);
                    let storage = (rng.below(4) != 0).then(|| {
                        (
                            Box::leak(vec![0u8; n].into_boxed_slice()) as &mut [u8],
                            Box::leak(vec![0u8; n].into_boxed_slice()) as &mut [u8],
                        )
                    });
                    let policy = [StartPolicy::AllowDegraded, StartPolicy::RequireAll]
                        [rng.below(2) as usize];
                    if a.reassemble(c, storage, &found, policy).is_ok() {
                        reassembled += 1;
                    } else {
                        // Refused, the place holds an empty array: assembled from what the
                        // members hold, it goes on serving (when that is an array at all).
                        let c = base;
                        let n = Array::<3, 4, 2>::bitmap_bytes(&c);
                        let storage = (n > 0).then(|| {
                            (
                                Box::leak(vec![0u8; n].into_boxed_slice()) as &mut [u8],
                                Box::leak(vec![0u8; n].into_boxed_slice()) as &mut [u8],
                            )
                        });
                        let _ = a.reassemble(c, storage, &held, StartPolicy::AllowDegraded);
                    }
                }
                _ => {}
            }
            while let Some(c) = a.poll_io() {
                if let IoCmd::BitmapPage { page, .. } = c {
                    let _ = a.bitmap_page(page);
                }
                pending.push(c);
            }
            while a.poll_completion().is_some() {
                completions += 1;
            }
            while a.poll_event().is_some() {}
            let _ = (
                a.status(),
                a.poll_timeout(),
                a.superblock_for(MemberId(rng.below(4) as u8)),
            );
        }
    }
    assert!(
        arrays > 200
            && completions > 10_000
            && lists_taken > 100
            && resized > 100
            && reassembled > 100,
        "{arrays} arrays, {completions} completions, {lists_taken} bad-block lists taken, \
         {resized} resizes, {reassembled} reassemblies"
    );
    eprintln!(
        "{arrays} arrays, {completions} completions, {lists_taken} bad-block lists taken, \
         {resized} resizes, {reassembled} reassemblies"
    );
}
