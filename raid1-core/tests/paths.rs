//! Engine paths that no other test pinned (issue 9): each test names the md rule it holds the
//! engine to, and fails if that rule is broken.

mod common;

use common::*;
use raid1_core::*;

/// Member 1 of a clean 2-member array is failed, removed and replaced by a new device, which
/// is being recovered; the recovery's first windows are returned, not completed.
fn recovering_second_member() -> (A, Vec<IoCmd<4>>) {
    let mut a = clean_array(2);
    a.fail_member(T0, MemberId(1)).unwrap();
    settle_metadata(&mut a);
    a.freeze().unwrap();
    a.remove_member(MemberId(1)).unwrap();
    a.add_member(MemberId(1), AddMember::New).unwrap();
    a.unfreeze().unwrap();
    let windows = settle_metadata(&mut a);
    assert!(matches!(
        a.member(MemberId(1)).unwrap().state,
        MemberState::Recovering { .. }
    ));
    (a, windows.into_iter().map(IoCmd::Member).collect())
}

#[test]
fn writes_reach_recovering_members_above_and_below_the_recovery_offset() {
    let (mut a, windows) = recovering_second_member();
    a.submit(T0, write(1, 900, 8)).unwrap();
    let ios: Vec<_> = settle_metadata(&mut a)
        .into_iter()
        .filter(|io| !matches!(io.buffer, Buffer::Sync { .. }))
        .collect();
    let to: Vec<_> = ios
        .iter()
        .filter(|io| io.sector == 900)
        .map(|io| io.member)
        .collect();
    assert_eq!(
        to,
        vec![MemberId(0), MemberId(1)],
        "md writes to a recovering member too"
    );
    complete_ios(&mut a, &ios, IoResult::Ok);
    complete_all(&mut a, &windows, IoResult::Ok);
    run_to_idle(&mut a);
    assert_eq!(completions(&mut a), vec![ok(1)]);
    assert_eq!(a.member(MemberId(1)).unwrap().state, MemberState::InSync);
}

#[test]
fn write_waits_for_its_bitmap_page_even_when_the_superblock_lands_first() {
    let c = bitmap_cfg();
    let mut a = A::create(c, bitmap_for(&c), 2, &[MemberId(0), MemberId(1)], true).unwrap();
    run_to_idle(&mut a);
    a.submit(T0, write(1, 130, 4)).unwrap();
    let meta = drain(&mut a);
    let (sbs, pages): (Vec<_>, Vec<_>) = meta
        .iter()
        .partition(|c| matches!(c, IoCmd::Superblock { .. }));
    assert_eq!(sbs.len(), 2);
    assert_eq!(pages.len(), 2);
    complete_all(&mut a, &sbs, IoResult::Ok);
    assert!(
        data_ios(&drain(&mut a)).is_empty(),
        "no data before the chunk's bit is on disk"
    );
    complete_all(&mut a, &pages[..1], IoResult::Ok);
    assert!(data_ios(&drain(&mut a)).is_empty(), "on every member");
    complete_all(&mut a, &pages[1..], IoResult::Ok);
    assert_eq!(data_ios(&drain(&mut a)).len(), 2);
}

#[test]
fn reads_straddling_the_recovery_offset_go_to_an_in_sync_member() {
    let mut sbs = clean_sbs(2, 10);
    if let Some(sb) = sbs[1].as_mut() {
        sb.recovery_offset = Some(256);
    }
    let mut a = A::assemble(cfg(), None, &sbs, StartPolicy::AllowDegraded).unwrap();
    // Member 0 write-mostly: reads prefer member 1 wherever it holds valid data.
    a.set_write_mostly(MemberId(0), true).unwrap();
    settle_metadata(&mut a);
    for (id, sector) in [(1, 100), (2, 252), (3, 600)] {
        a.submit(T0, read(id, sector, 8)).unwrap();
    }
    let ios = data_ios(&drain(&mut a));
    let who = |s: u64| ios.iter().find(|io| io.sector == s).map(|io| io.member);
    assert_eq!(
        who(100),
        Some(MemberId(1)),
        "below the offset the rebuilt part serves"
    );
    assert_eq!(
        who(252),
        Some(MemberId(0)),
        "a read across the offset needs an in-sync member"
    );
    assert_eq!(who(600), Some(MemberId(0)));
}

#[test]
fn removal_waits_for_an_internal_flush_in_flight() {
    let mut a = clean_array(2);
    write_done(&mut a, 1, 0, 8);
    fire_safe_mode(&mut a);
    let flushes = member_ios(&drain(&mut a));
    assert_eq!(flushes.len(), 2);
    assert!(flushes.iter().all(|io| io.op == MemberOp::Flush));
    a.fail_member(T0, MemberId(1)).unwrap();
    a.freeze().unwrap();
    let to_0 = flushes.iter().find(|io| io.member == MemberId(0)).unwrap();
    let to_1 = flushes.iter().find(|io| io.member == MemberId(1)).unwrap();
    a.complete(T0, to_0.tag, IoResult::Ok).unwrap();
    run_to_idle(&mut a);
    assert!(!a.is_quiesced(), "a flush to member 1 is in flight");
    assert!(a.remove_member(MemberId(1)).is_err());
    a.complete(T0, to_1.tag, IoResult::Ok).unwrap();
    run_to_idle(&mut a);
    assert!(a.is_quiesced());
    a.remove_member(MemberId(1)).unwrap();
}

#[test]
fn writes_that_never_touched_a_failed_member_wait_for_its_failure_record() {
    let mut a = clean_array(2);
    a.submit(T0, write(1, 0, 8)).unwrap();
    a.submit(T0, write(2, 100, 8)).unwrap();
    let ios = settle_metadata(&mut a);
    assert_eq!(ios.len(), 4);
    let of = |id_sector: u64, m: u8| {
        *ios.iter()
            .find(|io| io.sector == id_sector && io.member == MemberId(m))
            .unwrap()
    };
    a.complete(T0, of(0, 1).tag, IoResult::Error).unwrap();
    a.complete(T0, of(0, 0).tag, IoResult::Ok).unwrap();
    // Write 2 reached both members before the failure; write 3 comes after it.
    a.complete(T0, of(100, 0).tag, IoResult::Ok).unwrap();
    a.complete(T0, of(100, 1).tag, IoResult::Ok).unwrap();
    a.submit(T0, write(3, 200, 8)).unwrap();
    let mut record = Vec::new();
    for _ in 0..10 {
        let cmds = drain(&mut a);
        if cmds.is_empty() {
            break;
        }
        for c in cmds {
            match c {
                IoCmd::Superblock { .. } => record.push(c),
                other => {
                    if let IoCmd::Member(io) = other {
                        assert_ne!(
                            io.member,
                            MemberId(1),
                            "nothing more goes to a failed member"
                        );
                    }
                    complete_all(&mut a, &[other], IoResult::Ok);
                }
            }
        }
        assert_eq!(
            completions(&mut a),
            vec![],
            "no write before the failure is on disk"
        );
    }
    assert_eq!(record.len(), 1);
    complete_all(&mut a, &record, IoResult::Ok);
    run_to_idle(&mut a);
    assert_eq!(completions(&mut a), vec![ok(1), ok(2), ok(3)]);
}

/// Member 1 left a bitmap array at `events` 15..; member 0 (events 30, events_cleared 20)
/// has chunk 2 dirty. Re-adds member 1 with `events` and returns the sectors rebuilt.
fn re_add_rebuilds(events: u64) -> u64 {
    let c = bitmap_cfg();
    let mut sbs = clean_sbs(1, 30);
    if let Some(sb) = sbs[0].as_mut() {
        sb.raid_disks = 2;
        sb.roles[1] = Role::Faulty;
        sb.bitmap = true;
        sb.events_cleared = 20;
    }
    let bm = bitmap_for(&c);
    let bm = bm.map(|(bits, hot)| {
        bits[0] = 0b100;
        (bits, hot)
    });
    let mut a = A::assemble(c, bm, &sbs, StartPolicy::AllowDegraded).unwrap();
    run_to_idle(&mut a);
    a.freeze().unwrap();
    a.add_member(
        MemberId(1),
        AddMember::ReAdd {
            slot: 1,
            events,
            write_mostly: false,
            was_in_sync: true,
        },
    )
    .unwrap();
    a.unfreeze().unwrap();
    let cmds = run_to_idle(&mut a);
    assert_eq!(a.member(MemberId(1)).unwrap().state, MemberState::InSync);
    synced_to(&cmds, MemberId(1))
}

#[test]
fn re_add_below_events_cleared_is_a_full_rebuild() {
    assert_eq!(
        re_add_rebuilds(25),
        64,
        "bitmap-guided: only the dirty chunk"
    );
    assert_eq!(
        re_add_rebuilds(20),
        64,
        "events == events_cleared still trusts the bitmap"
    );
    assert_eq!(
        re_add_rebuilds(19),
        1024,
        "bits it may need were cleared after it left: everything"
    );
}

#[test]
fn a_crash_during_a_rebuild_keeps_the_resync() {
    // Dirty (crashed) with member 1 rebuilt up to 512.
    let mut sbs = dirty_sbs(2, 10);
    if let Some(sb) = sbs[1].as_mut() {
        sb.recovery_offset = Some(512);
    }
    let mut a = A::assemble(cfg(), None, &sbs, StartPolicy::AllowDegraded).unwrap();
    let (cmds, ev) = run_to_idle_with_events(&mut a);
    let pos = |e: Event| ev.iter().position(|x| *x == e);
    let recovered = pos(Event::SyncFinished {
        action: SyncAction::Recovery,
        mismatches: 0,
    })
    .expect("the recovery finishes");
    let resynced = pos(Event::SyncFinished {
        action: SyncAction::Resync,
        mismatches: 0,
    })
    .expect("the resync still runs");
    assert!(recovered < resynced, "md recovers first, then resyncs");
    assert!(synced_to(&cmds, MemberId(1)) >= 512 + 1024);
    assert_eq!(a.status().resync_offset, MAX_SECTOR);
    assert_eq!(a.member(MemberId(1)).unwrap().state, MemberState::InSync);
}

#[test]
fn an_interrupted_sync_does_not_finish_and_resumes_over_what_is_left() {
    let sbs = dirty_sbs(3, 10);
    let mut a = A::assemble(cfg(), None, &sbs, StartPolicy::RequireAll).unwrap();
    let mut covered = [false; 1024];
    let mark = |covered: &mut [bool; 1024], cmds: &[IoCmd<4>]| {
        for io in member_ios(cmds) {
            if io.member == MemberId(1) && io.op == MemberOp::Write {
                for s in io.sector..io.sector + u64::from(io.sectors) {
                    covered[s as usize] = true;
                }
            }
        }
    };
    // The first windows are out when member 2 fails: the resync is interrupted.
    let first = drain(&mut a);
    assert!(!first.is_empty());
    a.fail_member(T0, MemberId(2)).unwrap();
    complete_all(&mut a, &first, IoResult::Ok);
    mark(&mut covered, &first);
    assert_ne!(a.status().resync_offset, MAX_SECTOR, "not finished");
    let (rest, ev) = run_to_idle_with_events(&mut a);
    mark(&mut covered, &rest);
    let at = |e: Event| ev.iter().position(|x| *x == e);
    let interrupted = at(Event::SyncInterrupted(SyncAction::Resync)).expect("interrupted");
    let finished = at(Event::SyncFinished {
        action: SyncAction::Resync,
        mismatches: 0,
    })
    .expect("a new resync finishes");
    assert!(interrupted < finished);
    assert_eq!(a.status().resync_offset, MAX_SECTOR);
    let missed = covered.iter().position(|c| !c);
    assert_eq!(
        missed, None,
        "the resumed resync covers everything not yet copied"
    );
}

#[test]
fn check_never_writes_and_counts_every_mismatch() {
    let mut a = clean_array(2);
    a.start_check(false).unwrap();
    let writes = run_with_every_compare_differing(&mut a).len();
    assert_eq!(writes, 0, "check only reads");
    assert_eq!(a.mismatch_cnt(), 1024);
    assert!(events(&mut a).contains(&Event::SyncFinished {
        action: SyncAction::Check,
        mismatches: 1024
    }));
}

#[test]
fn raid_disks_shrink_packs_the_in_sync_members_and_refuses_to_drop_one() {
    let mut a = clean_array(3);
    a.fail_member(T0, MemberId(0)).unwrap();
    settle_metadata(&mut a);
    a.freeze().unwrap();
    assert_eq!(
        a.set_raid_disks(1),
        Err(ReconfigError::RaidDisks(1)),
        "3 active members"
    );
    a.remove_member(MemberId(0)).unwrap();
    assert_eq!(a.set_raid_disks(0), Err(ReconfigError::RaidDisks(0)));
    assert_eq!(a.set_raid_disks(5), Err(ReconfigError::RaidDisks(5)));
    assert_eq!(
        a.set_raid_disks(1),
        Err(ReconfigError::RaidDisks(1)),
        "2 active members"
    );
    a.set_raid_disks(2).unwrap();
    a.unfreeze().unwrap();
    let cmds = run_to_idle(&mut a);
    assert_eq!(a.member(MemberId(1)).unwrap().role, Role::Active(0));
    assert_eq!(a.member(MemberId(2)).unwrap().role, Role::Active(1));
    let st = a.status();
    assert_eq!((st.raid_disks, st.in_sync), (2, 2));
    let last = cmds
        .iter()
        .rev()
        .find_map(|c| match c {
            IoCmd::Superblock { state, .. } => Some(*state),
            _ => None,
        })
        .expect("the new table is written");
    assert_eq!(last.raid_disks, 2);
    assert_eq!(&last.roles[1..3], &[Role::Active(0), Role::Active(1)]);
}

#[test]
fn a_fresher_spare_superblock_overrules_members_that_missed_their_own_failure() {
    // Members 2 and 3 (slots 2 and 0) were failed; only member 0 (slot 1) and the spare,
    // member 1, recorded it (events 32). Member 0 is not given: 2 and 3 still claim to be in
    // sync at events 30, but the spare's fresher table says they failed (simulator seed 13881).
    let roles_then = [
        Role::Active(1),
        Role::Spare,
        Role::Active(2),
        Role::Active(0),
    ];
    let roles_now = [Role::Active(1), Role::Spare, Role::Faulty, Role::Faulty];
    let sb = |i: u8, events: u64, roles: [Role; 4]| {
        let mut s = SuperblockState::empty(MemberId(i));
        s.size = cfg().data_sectors;
        s.events = events;
        s.raid_disks = 3;
        s.roles = roles;
        Some(s)
    };
    let found = [
        None,
        sb(1, 32, roles_now),
        sb(2, 30, roles_then),
        sb(3, 30, roles_then),
    ];
    assert_eq!(
        A::assemble(cfg(), None, &found, StartPolicy::AllowDegraded).err(),
        Some(AssembleError::NoInSyncMember)
    );
    // With member 0 given, it alone is in sync; 2 and 3 are not taken as mirrors.
    let found = [
        sb(0, 32, roles_now),
        sb(1, 32, roles_now),
        sb(2, 30, roles_then),
        sb(3, 30, roles_then),
    ];
    let a = A::assemble(cfg(), None, &found, StartPolicy::AllowDegraded).unwrap();
    assert_eq!(a.status().in_sync, 1);
    assert_eq!(a.member(MemberId(0)).unwrap().state, MemberState::InSync);
    // A spare one event ahead with the same table (a dirty mark it got and they did not)
    // overrules nothing.
    let found = [
        None,
        sb(1, 31, roles_then),
        sb(2, 30, roles_then),
        sb(3, 30, roles_then),
    ];
    let a = A::assemble(cfg(), None, &found, StartPolicy::AllowDegraded).unwrap();
    assert_eq!(a.status().in_sync, 2);
}

#[test]
fn events_go_on_from_the_freshest_superblock_and_an_empty_position_is_no_change() {
    // A spare that got one more round than the mirrors before a crash: the count goes on from
    // it, so no later round reuses a number it holds with another table.
    let mut sbs = clean_sbs(2, 10);
    let mut spare = SuperblockState::empty(MemberId(2));
    spare.size = cfg().data_sectors;
    spare.events = 12;
    spare.raid_disks = 2;
    spare.roles = [Role::Active(0), Role::Active(1), Role::Spare, Role::Faulty];
    sbs[2] = Some(spare);
    let a = A::assemble(cfg(), None, &sbs, StartPolicy::AllowDegraded).unwrap();
    assert!(a.status().events >= 12);

    // A clean bitmap array whose spare (member 2) is missing, with a dirty bit left: the
    // bits-cleared round of a clean stop writes the spare's position as empty (0xfffe where
    // the disk says 0xffff). Both mean "no slot": the same table, so no new count (md and
    // mdadm fill empty positions differently; neither is a change to record).
    let c = bitmap_cfg();
    let mut sbs = clean_sbs(2, 10);
    for sb in sbs.iter_mut().flatten() {
        sb.bitmap = true;
        sb.roles[2] = Role::Spare;
    }
    let bm = bitmap_for(&c).map(|(bits, hot)| {
        bits[0] = 0b10;
        (bits, hot)
    });
    let mut a = A::assemble(c, bm, &sbs, StartPolicy::AllowDegraded).unwrap();
    let mut seen = Vec::new();
    a.freeze().unwrap();
    a.request_clean(T0);
    for _ in 0..10 {
        let cmds = drain(&mut a);
        for c in &cmds {
            if let IoCmd::Superblock { state, .. } = c {
                seen.push((state.events, state.roles[2]));
            }
        }
        complete_all(&mut a, &cmds, IoResult::Ok);
    }
    assert!(!seen.is_empty(), "the bits-cleared round");
    assert!(seen.iter().all(|(events, _)| *events == 10), "{seen:?}");
    assert!(!a.bitmap_bit(1));
    assert!(same_table(
        &[Role::Active(0), Role::Spare, Role::Faulty],
        &[Role::Active(0), Role::Faulty, Role::Spare]
    ));
    assert!(!same_table(
        &[Role::Active(0), Role::Active(1)],
        &[Role::Active(1), Role::Active(0)]
    ));
}

#[test]
fn a_member_rounds_behind_one_being_rebuilt_from_an_absent_member_is_not_in_sync() {
    // Simulator seed 400106: member 0 ran alone (events 14), the others failed; an assembly
    // re-added members 1 and 2, and the power went once member 1's first superblock (being
    // rebuilt from offset 0, events 16) had landed but not member 2's (in sync at 11 on its
    // disk). Assembled without member 0, member 2 was taken in sync with none of the writes
    // only member 0 holds, and member 1 was rebuilt from it. Member 1's superblock lists
    // member 0 as active, and member 2 is more than one round behind it: not in sync.
    let mut sbs = clean_sbs(3, 11);
    sbs[0] = None;
    if let Some(sb) = sbs[1].as_mut() {
        sb.events = 16;
        sb.recovery_offset = Some(0);
    }
    assert!(!A::assembles_in_sync(&sbs, 2));
    assert!(A::assemble(cfg(), None, &sbs, StartPolicy::AllowDegraded).is_err());
    // One round behind it (a round adds at most 2): in sync, as before.
    if let Some(sb) = sbs[1].as_mut() {
        sb.events = 13;
    }
    assert!(A::assembles_in_sync(&sbs, 2));
    // With every member that superblock lists as active found, the member in sync stays the
    // reference however far the one being rebuilt ran ahead (simulator finding 1).
    let mut sbs = clean_sbs(2, 11);
    if let Some(sb) = sbs[1].as_mut() {
        sb.events = 16;
        sb.recovery_offset = Some(0);
    }
    assert!(A::assembles_in_sync(&sbs, 0));
}
