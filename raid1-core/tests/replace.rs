//! md's replacement (mdadm --replace): a spare is rebuilt beside the member it replaces, which
//! stays in service until the rebuild ends and is then marked faulty.

mod common;

use common::*;
use raid1_core::*;

/// A clean pair with spares at positions 2.. (`spares` of them).
fn pair_with_spares(spares: u8) -> A {
    let mut a = clean_array(2);
    a.freeze().unwrap();
    for s in 0..spares {
        a.add_member(MemberId(2 + s), AddMember::New).unwrap();
    }
    a.unfreeze().unwrap();
    run_to_idle(&mut a);
    for s in 0..spares {
        assert_eq!(a.member(MemberId(2 + s)).unwrap().state, MemberState::Spare);
    }
    a
}

fn state(a: &A, i: u8) -> MemberState {
    a.member(MemberId(i)).unwrap().state
}

#[test]
fn a_spare_is_rebuilt_beside_the_member_it_replaces_which_then_fails() {
    let mut a = pair_with_spares(1);
    a.replace(MemberId(0), None).unwrap();
    let m2 = a.member(MemberId(2)).unwrap();
    assert!(m2.replacement);
    assert_eq!(m2.role, Role::Active(0));
    assert!(matches!(m2.state, MemberState::Recovering { .. }));
    // The member being replaced stays in service.
    assert_eq!(state(&a, 0), MemberState::InSync);
    assert!(a.member(MemberId(0)).unwrap().want_replacement);
    // Its superblock says so: the same slot as member 0, feature REPLACEMENT.
    let sb = a.superblock_for(MemberId(2)).unwrap();
    assert!(sb.replacement);
    assert_eq!(sb.roles[0], Role::Active(0));
    assert_eq!(sb.roles[2], Role::Active(0));
    assert!(sb.recovery_offset.is_some());
    assert!(a.status().sync.is_some());
    // A write goes to all three.
    a.submit(T0, write(1, 700, 8)).unwrap();
    let ios = settle_metadata(&mut a);
    let written: Vec<u8> = ios
        .iter()
        .filter(|io| io.op == MemberOp::Write && matches!(io.buffer, Buffer::Request { .. }))
        .map(|io| io.member.0)
        .collect();
    assert_eq!(written.len(), 3, "{ios:?}");
    complete_ios(&mut a, &ios, IoResult::Ok);
    let (cmds, ev) = run_to_idle_with_events(&mut a);
    assert_eq!(synced_to(&cmds, MemberId(2)), 1024);
    assert_eq!(synced_to(&cmds, MemberId(1)), 0);
    assert!(ev.contains(&Event::SpareActive(MemberId(2))), "{ev:?}");
    assert!(
        ev.contains(&Event::Replaced {
            old: MemberId(0),
            new: MemberId(2)
        }),
        "{ev:?}"
    );
    assert!(!ev.iter().any(|e| matches!(e, Event::Degraded { .. })));
    let m2 = a.member(MemberId(2)).unwrap();
    assert_eq!(
        (m2.state, m2.role, m2.replacement),
        (MemberState::InSync, Role::Active(0), false)
    );
    assert_eq!(state(&a, 0), MemberState::Faulty);
    assert_eq!(a.status().in_sync, 2);
    let sb = a.superblock_for(MemberId(2)).unwrap();
    assert!(!sb.replacement && sb.recovery_offset.is_none());
    assert_eq!(sb.roles[0], Role::Faulty);
    // The old member can now be removed.
    a.freeze().unwrap();
    a.remove_member(MemberId(0)).unwrap();
    a.unfreeze().unwrap();
}

#[test]
fn without_a_spare_the_wish_waits_for_one() {
    let mut a = clean_array(2);
    a.replace(MemberId(1), None).unwrap();
    run_to_idle(&mut a);
    let m1 = a.member(MemberId(1)).unwrap();
    assert!(m1.want_replacement);
    assert_eq!(m1.state, MemberState::InSync);
    assert!(a.status().sync.is_none());
    // A spare arrives: it becomes the replacement.
    a.freeze().unwrap();
    a.add_member(MemberId(3), AddMember::New).unwrap();
    a.unfreeze().unwrap();
    let (_, ev) = run_to_idle_with_events(&mut a);
    assert!(ev.contains(&Event::Replaced {
        old: MemberId(1),
        new: MemberId(3)
    }));
    assert_eq!(a.member(MemberId(3)).unwrap().role, Role::Active(1));
}

#[test]
fn with_names_the_spare_used() {
    let mut a = pair_with_spares(2);
    a.replace(MemberId(0), Some(MemberId(3))).unwrap();
    assert!(a.member(MemberId(3)).unwrap().replacement);
    assert_eq!(state(&a, 2), MemberState::Spare);
    // Refusals: a member that is not a spare, a slot already being replaced, a member not in
    // sync.
    assert_eq!(
        a.replace(MemberId(1), Some(MemberId(0))),
        Err(ReconfigError::NotSpare(MemberId(0)))
    );
    assert_eq!(
        a.replace(MemberId(0), None),
        Err(ReconfigError::Replacing(MemberId(0)))
    );
    assert_eq!(
        a.replace(MemberId(3), None),
        Err(ReconfigError::WrongState(MemberId(3)))
    );
    assert_eq!(
        a.replace(MemberId(2), None),
        Err(ReconfigError::WrongState(MemberId(2)))
    );
    // The slots cannot be packed while two members share one.
    a.freeze().unwrap();
    while !a.is_quiesced() {
        let c = drain(&mut a);
        complete_all(&mut a, &c, IoResult::Ok);
    }
    assert_eq!(
        a.set_raid_disks(3),
        Err(ReconfigError::Replacing(MemberId(3)))
    );
    a.unfreeze().unwrap();
    run_to_idle(&mut a);
    assert_eq!(state(&a, 3), MemberState::InSync);
    assert_eq!(state(&a, 2), MemberState::Spare);
}

#[test]
fn when_the_replaced_member_fails_first_its_replacement_takes_the_slot() {
    let mut a = pair_with_spares(1);
    a.replace(MemberId(0), None).unwrap();
    // Part of the rebuild.
    let cmds = drain(&mut a);
    complete_all(&mut a, &cmds, IoResult::Ok);
    a.fail_member(T0, MemberId(0)).unwrap();
    let m2 = a.member(MemberId(2)).unwrap();
    assert!(!m2.replacement, "promoted to the slot's recovering member");
    assert_eq!(m2.role, Role::Active(0));
    let (_, ev) = run_to_idle_with_events(&mut a);
    assert!(
        !ev.iter().any(|e| matches!(e, Event::Replaced { .. })),
        "{ev:?}"
    );
    assert_eq!(state(&a, 2), MemberState::InSync);
    assert_eq!(a.status().in_sync, 2);
    assert_eq!(
        a.superblock_for(MemberId(1)).unwrap().roles[2],
        Role::Active(0)
    );
}

#[test]
fn a_failed_replacement_leaves_the_wish_for_the_next_spare() {
    let mut a = pair_with_spares(2);
    a.replace(MemberId(1), Some(MemberId(2))).unwrap();
    let cmds = drain(&mut a);
    complete_all(&mut a, &cmds, IoResult::Ok);
    a.fail_member(T0, MemberId(2)).unwrap();
    assert_eq!(state(&a, 1), MemberState::InSync);
    let (_, ev) = run_to_idle_with_events(&mut a);
    assert!(
        ev.contains(&Event::Replaced {
            old: MemberId(1),
            new: MemberId(3)
        }),
        "{ev:?}"
    );
}

/// Drives the replacement rebuild to its end, completing every superblock write until the
/// hand-over; returns the superblock writes held from then on.
fn rebuild_holding_superblocks_after_hand_over(a: &mut A) -> Vec<IoCmd<4>> {
    let mut held = Vec::new();
    let mut handed_over = false;
    for _ in 0..1000 {
        let cmds = drain(a);
        if cmds.is_empty() {
            break;
        }
        for c in cmds {
            if handed_over && matches!(c, IoCmd::Superblock { .. }) {
                held.push(c);
            } else {
                a.complete(T0, tag_of(&c), IoResult::Ok).unwrap();
            }
            if !handed_over {
                handed_over = events(a)
                    .iter()
                    .any(|e| matches!(e, Event::Replaced { .. }));
            }
        }
    }
    assert!(handed_over);
    held
}

#[test]
fn writes_after_the_hand_over_wait_for_the_superblocks_that_record_it() {
    let mut a = pair_with_spares(1);
    a.replace(MemberId(0), None).unwrap();
    // The array is dirty (a write done during the rebuild): the next write needs no clean ->
    // dirty round of its own.
    a.submit(T0, write(1, 900, 8)).unwrap();
    let held = rebuild_holding_superblocks_after_hand_over(&mut a);
    assert_eq!(completions(&mut a), vec![ok(1)]);
    assert!(a.status().dirty);
    assert!(
        !held.is_empty(),
        "the hand-over is recorded in a superblock round"
    );
    // Member 0 no longer receives writes; until the disks say so, an assembly would trust
    // it, so no write may be acknowledged.
    a.submit(T0, write(7, 40, 8)).unwrap();
    let ios = data_ios(&drain(&mut a));
    assert!(ios.iter().all(|io| io.member != MemberId(0)), "{ios:?}");
    complete_ios(&mut a, &ios, IoResult::Ok);
    let more = drain(&mut a);
    assert!(
        more.iter().all(|c| matches!(
            c,
            IoCmd::Superblock { .. }
                | IoCmd::Member(MemberIo {
                    op: MemberOp::Flush,
                    ..
                })
        )),
        "{more:?}"
    );
    assert_eq!(
        completions(&mut a),
        vec![],
        "acknowledged before the hand-over is on disk"
    );
    complete_all(&mut a, &held, IoResult::Ok);
    complete_all(&mut a, &more, IoResult::Ok);
    run_to_idle(&mut a);
    assert_eq!(completions(&mut a), vec![ok(7)]);
}

#[test]
fn assembly_resumes_a_replacement_where_it_stopped() {
    let mut a = A::assemble(cfg(), None, &replacing_sbs(512), StartPolicy::RequireAll).unwrap();
    let m2 = a.member(MemberId(2)).unwrap();
    assert!(m2.replacement);
    assert_eq!(
        m2.state,
        MemberState::Recovering {
            recovery_offset: 512,
            bitmap: false
        }
    );
    assert!(a.member(MemberId(0)).unwrap().want_replacement);
    assert_eq!(state(&a, 0), MemberState::InSync);
    let (cmds, ev) = run_to_idle_with_events(&mut a);
    assert_eq!(synced_to(&cmds, MemberId(2)), 512);
    assert!(ev.contains(&Event::Replaced {
        old: MemberId(0),
        new: MemberId(2)
    }));
}

#[test]
fn a_write_error_recorded_in_the_log_asks_for_a_replacement_that_a_spare_answers() {
    let mut a = pair_with_logs();
    a.submit(T0, write(1, 200, 8)).unwrap();
    run_failing(
        &mut a,
        |c| matches!(c, IoCmd::Member(io) if io.member == MemberId(1) && io.op == MemberOp::Write),
    );
    assert_eq!(completions(&mut a), vec![ok(1)]);
    let m1 = a.member(MemberId(1)).unwrap();
    assert_eq!(m1.state, MemberState::InSync);
    assert!(m1.want_replacement);
    a.freeze().unwrap();
    a.add_member(MemberId(2), AddMember::New).unwrap();
    a.unfreeze().unwrap();
    let (_, ev) = run_to_idle_with_events(&mut a);
    assert!(ev.contains(&Event::Replaced {
        old: MemberId(1),
        new: MemberId(2)
    }));
}

#[test]
fn read_only_refuses_a_replacement() {
    let mut a = pair_with_spares(1);
    a.freeze().unwrap();
    a.set_read_only(T0, true).unwrap();
    assert_eq!(a.replace(MemberId(0), None), Err(ReconfigError::ReadOnly));
}
