//! raid1-core without its default features, as raid1-embedded builds it
//! (`cargo test -p raid1-core --no-default-features --test reduced_features`): without
//! `write-behind` a write waits for every member even when a limit is configured; without
//! `bad-block-log` a failed write fails the member; without `replacement` a member rebuilt as a
//! replacement is assembled as an ordinary member being rebuilt; without `read-only` a
//! read-only start is refused. With the default features this file holds no test;
//! write_behind.rs, badblocks.rs, replace.rs and read_only.rs test what the features do.
#![cfg(not(any(
    feature = "write-behind",
    feature = "bad-block-log",
    feature = "replacement",
    feature = "read-only"
)))]

mod common;

use common::*;
use raid1_core::*;

#[test]
fn without_the_feature_a_write_limit_leaves_no_write_behind() {
    // The set-up of write_behind.rs, where this write is acknowledged before member 1 has it.
    let (c, sbs) = behind_setup(2, 4);
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

#[test]
fn without_the_feature_a_replacement_on_disk_beside_its_member_becomes_a_spare() {
    let mut a = A::assemble(cfg(), None, &replacing_sbs(512), StartPolicy::RequireAll).unwrap();
    let m2 = a.member(MemberId(2)).unwrap();
    assert!(!m2.replacement);
    assert_eq!(m2.state, MemberState::Spare);
    assert!(!a.member(MemberId(0)).unwrap().want_replacement);
    let (cmds, ev) = run_to_idle_with_events(&mut a);
    assert_eq!(synced_to(&cmds, MemberId(2)), 0);
    assert!(!ev.iter().any(|e| matches!(e, Event::Replaced { .. })));
    assert_eq!(a.member(MemberId(0)).unwrap().state, MemberState::InSync);
    assert!(!a.superblock_for(MemberId(2)).unwrap().replacement);
}

#[test]
fn without_the_feature_a_read_only_start_is_refused() {
    let mut c = cfg();
    c.read_only = true;
    let err = A::assemble(c, None, &clean_sbs(2, 10), StartPolicy::RequireAll).unwrap_err();
    assert_eq!(err, AssembleError::Config(ConfigError::ReadOnly));
    let err = A::create(c, None, 2, &[MemberId(0), MemberId(1)], true).unwrap_err();
    assert_eq!(err, ConfigError::ReadOnly);
    // Read-write, it starts.
    c.read_only = false;
    let a = A::assemble(c, None, &clean_sbs(2, 10), StartPolicy::RequireAll).unwrap();
    assert!(!a.status().read_only_asked && !a.status().read_only);
}
