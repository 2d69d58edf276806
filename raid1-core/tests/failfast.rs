//! md's FailFast: an I/O error on a FailFast member fails it at once (no read fix, no bad-block
//! record) unless it is the last in-sync member, which is treated as any other.

mod common;

use common::*;
use raid1_core::*;

fn failfast_pair() -> A {
    let mut a = clean_array(2);
    a.set_failfast(MemberId(1), true).unwrap();
    run_to_idle(&mut a);
    assert!(a.member(MemberId(1)).unwrap().failfast);
    a
}

#[test]
fn a_read_error_fails_a_failfast_member_and_is_served_elsewhere() {
    let mut a = failfast_pair();
    // Member 0 write-mostly: reads go to the FailFast member first.
    a.set_write_mostly(MemberId(0), true).unwrap();
    run_to_idle(&mut a);
    a.submit(T0, read(1, 100, 8)).unwrap();
    let ios = member_ios(&drain(&mut a));
    assert_eq!(ios.len(), 1);
    assert_eq!(ios[0].member, MemberId(1));
    complete_ios(&mut a, &ios, IoResult::Error);
    let rest = run_to_idle(&mut a);
    // No write-back to it: it failed.
    assert!(
        member_ios(&rest).iter().all(|io| io.op != MemberOp::Write),
        "{rest:?}"
    );
    assert_eq!(a.member(MemberId(1)).unwrap().state, MemberState::Faulty);
    assert_eq!(completions(&mut a), vec![ok(1)]);
}

/// A clean pair whose members have room for 8 bad-block entries each, FailFast on member 1
/// if `failfast`; a write to 200+8 that fails on member 1 is driven to its end.
fn write_failing_on_member_1(failfast: bool) -> A {
    let mut a = pair_with_logs();
    a.set_failfast(MemberId(1), failfast).unwrap();
    run_to_idle(&mut a);
    a.submit(T0, write(1, 200, 8)).unwrap();
    run_failing(
        &mut a,
        |c| matches!(c, IoCmd::Member(io) if io.member == MemberId(1) && io.op == MemberOp::Write),
    );
    assert_eq!(completions(&mut a), vec![ok(1)]);
    a
}

#[test]
fn a_write_error_fails_a_failfast_member_instead_of_recording_a_bad_block() {
    let a = write_failing_on_member_1(true);
    assert_eq!(a.member(MemberId(1)).unwrap().state, MemberState::Faulty);
    assert!(a.bad_blocks(MemberId(1)).is_empty());
    // Without FailFast the same error is recorded and the member stays.
    let b = write_failing_on_member_1(false);
    assert_eq!(b.member(MemberId(1)).unwrap().state, MemberState::InSync);
    assert_eq!(b.bad_blocks(MemberId(1)).len(), 1);
}

#[test]
fn the_last_in_sync_member_is_not_failed_for_failfast() {
    let mut a = failfast_pair();
    a.fail_member(T0, MemberId(0)).unwrap();
    run_to_idle(&mut a);
    a.submit(T0, read(1, 100, 8)).unwrap();
    let ios = member_ios(&drain(&mut a));
    assert_eq!(ios[0].member, MemberId(1));
    complete_ios(&mut a, &ios, IoResult::Error);
    run_to_idle(&mut a);
    // Retried on it (md clears FailFast for the last device's retry) and it stays.
    assert_ne!(a.member(MemberId(1)).unwrap().state, MemberState::Faulty);
    assert_eq!(completions(&mut a).len(), 1);
}

#[test]
fn failfast_reaches_the_superblock_and_comes_back_at_assembly() {
    let mut a = failfast_pair();
    let st = a.superblock_for(MemberId(1)).unwrap();
    assert!(st.failfast);
    assert!(!a.superblock_for(MemberId(0)).unwrap().failfast);
    let mut sbs = clean_sbs(2, 10);
    if let Some(s) = sbs[1].as_mut() {
        s.failfast = true;
    }
    let b = A::assemble(cfg(), None, &sbs, StartPolicy::RequireAll).unwrap();
    assert!(b.member(MemberId(1)).unwrap().failfast);
    assert!(!b.member(MemberId(0)).unwrap().failfast);
    assert_eq!(
        a.set_failfast(MemberId(3), true),
        Err(ReconfigError::WrongState(MemberId(3)))
    );
}
