//! raid1-core without its default features, as raid1-embedded builds it
//! (`cargo test -p raid1-core --no-default-features --test reduced_features`): without
//! `write-behind` a write waits for every member even when a limit is configured, and without
//! `bad-block-log` a failed write fails the member. With the default features this file holds
//! no test; write_behind.rs and badblocks.rs test what the features do.
#![cfg(not(any(feature = "write-behind", feature = "bad-block-log")))]

mod common;

use common::*;
use raid1_core::*;

#[test]
fn without_the_feature_a_write_limit_leaves_no_write_behind() {
    // The set-up of write_behind.rs, where this write is acknowledged before member 1 has it.
    let mut c = bitmap_cfg();
    c.write_behind = 4;
    let mut sbs = clean_sbs(2, 10);
    for sb in sbs.iter_mut().flatten() {
        sb.bitmap = true;
        sb.events_cleared = 10;
    }
    sbs[1].as_mut().unwrap().write_mostly = true;
    let mut a = A::assemble(c, bitmap_for(&c), &sbs, StartPolicy::RequireAll).unwrap();
    run_to_idle(&mut a);
    assert!(a.member(MemberId(1)).unwrap().write_mostly);

    a.submit(T0, write(1, 100, 8)).unwrap();
    let ios = settle_metadata(&mut a);
    assert_eq!(ios.len(), 2, "{ios:?}");
    let (fast, slow): (Vec<MemberIo>, Vec<MemberIo>) =
        ios.iter().partition(|io| io.member == MemberId(0));
    complete_ios(&mut a, &fast, IoResult::Ok);
    settle_metadata(&mut a);
    assert_eq!(completions(&mut a), vec![], "acknowledged behind member 1");
    complete_ios(&mut a, &slow, IoResult::Ok);
    run_to_idle(&mut a);
    assert_eq!(completions(&mut a), vec![ok(1)]);
    assert_eq!(a.status().behind_writes, 0);
}

#[test]
fn without_the_feature_a_failed_write_fails_the_member() {
    let mut a = clean_array(2);
    a.submit(T0, write(1, 200, 8)).unwrap();
    run_failing(
        &mut a,
        |c| matches!(c, IoCmd::Member(io) if io.member == MemberId(1) && io.op == MemberOp::Write),
    );
    // Acknowledged from member 0; member 1 failed, nothing recorded.
    assert_eq!(completions(&mut a), vec![ok(1)]);
    assert_eq!(a.member(MemberId(1)).unwrap().state, MemberState::Faulty);
    assert!(a.bad_blocks(MemberId(1)).is_empty());
}
