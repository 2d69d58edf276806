//! Read-only (md's `ro`: `mdadm --readonly` / `--readwrite`, and `--assemble --readonly`): writes
//! and discards are refused, the array is marked clean before it is read-only, and while it is
//! read-only nothing at all is written to a member: no superblock, bitmap page, sync or data
//! write, not even the write-back of a read error.

mod common;

use common::*;
use raid1_core::*;

/// Whether `c` writes to a member.
fn writes(c: &IoCmd<4>) -> bool {
    match c {
        IoCmd::Member(io) => matches!(io.op, MemberOp::Write | MemberOp::Discard),
        IoCmd::Superblock { .. } | IoCmd::BitmapPage { .. } => true,
        IoCmd::Compare { .. } => false,
    }
}

#[test]
fn assembled_read_only_a_dirty_array_writes_nothing_until_read_write() {
    let mut c = bitmap_cfg();
    c.read_only = true;
    let mut a = A::assemble(
        c,
        bitmap_for(&c),
        &dirty_sbs(2, 10),
        StartPolicy::RequireAll,
    )
    .expect("assemble");
    assert!(a.status().read_only && a.status().read_only_asked);
    // No superblock, bitmap or resync I/O at all.
    assert!(drain(&mut a).is_empty());
    assert_eq!(a.status().sync, None);
    assert_eq!(a.submit(T0, write(1, 0, 8)), Err(SubmitError::ReadOnly));
    assert_eq!(
        a.submit(T0, request(2, RequestOp::Discard, 0, 8)),
        Err(SubmitError::ReadOnly)
    );
    // Reads are served (from the first in-sync member: the region is not resynced yet).
    a.submit(T0, read(3, 0, 8)).unwrap();
    let cmds = drain(&mut a);
    assert!(cmds.iter().all(|c| !writes(c)), "{cmds:?}");
    let ios = member_ios(&cmds);
    assert_eq!(ios.len(), 1);
    assert_eq!(ios[0].member, MemberId(0));
    complete_all(&mut a, &cmds, IoResult::Ok);
    assert_eq!(completions(&mut a), vec![ok(3)]);
    // A flush is answered, writing nothing.
    a.submit(T0, request(4, RequestOp::Flush, 0, 0)).unwrap();
    let cmds = run_to_idle(&mut a);
    assert!(cmds.iter().all(|c| !writes(c)), "{cmds:?}");
    assert_eq!(completions(&mut a), vec![ok(4)]);
    // Read-write: the rounds assembly wanted and the resync start.
    a.set_read_only(T0, false).unwrap();
    assert!(!a.status().read_only);
    let (cmds, ev) = run_to_idle_with_events(&mut a);
    assert!(cmds.iter().any(|c| matches!(c, IoCmd::Superblock { .. })));
    assert!(
        ev.contains(&Event::SyncStarted(SyncAction::Resync)),
        "{ev:?}"
    );
    a.submit(T0, write(5, 0, 8)).unwrap();
}

#[test]
fn a_running_array_goes_read_only_once_the_clean_mark_is_on_disk() {
    let mut a = clean_array(2);
    write_done(&mut a, 1, 0, 8);
    assert!(a.status().dirty);
    // Not quiesced: refused.
    a.submit(T0, write(2, 64, 8)).unwrap();
    assert_eq!(a.set_read_only(T0, true), Err(ReconfigError::NotQuiesced));
    let w = settle_metadata(&mut a);
    complete_ios(&mut a, &w, IoResult::Ok);
    a.freeze().unwrap();
    run_to_idle(&mut a);
    assert!(a.is_quiesced());
    a.set_read_only(T0, true).unwrap();
    let st = a.status();
    assert!(
        st.read_only_asked && !st.read_only,
        "clean mark not yet on disk"
    );
    assert_eq!(a.submit(T0, write(3, 0, 8)), Err(SubmitError::ReadOnly));
    // The clean mark: a flush, then the clean superblock round.
    let cmds = run_to_idle(&mut a);
    assert!(
        cmds.iter().any(
            |c| matches!(c, IoCmd::Superblock { state, .. } if state.resync_offset == MAX_SECTOR)
        ),
        "{cmds:?}"
    );
    let st = a.status();
    assert!(st.read_only && !st.dirty && !st.metadata_pending, "{st:?}");
    a.unfreeze().unwrap();
    // Reads flow; nothing is written, timers or not.
    for id in 10..16u64 {
        a.submit(T0, read(id, id * 8, 8)).unwrap();
    }
    let cmds = run_to_idle(&mut a);
    assert!(cmds.iter().all(|c| !writes(c)), "{cmds:?}");
    while let Some(t) = a.poll_timeout() {
        a.handle_timeout(t);
        let cmds = run_to_idle(&mut a);
        assert!(cmds.iter().all(|c| !writes(c)), "{cmds:?}");
        if a.poll_timeout() == Some(t) {
            break;
        }
    }
    let done = completions(&mut a);
    assert!((10..16).all(|id| done.contains(&ok(id))), "{done:?}");
    // Read-write again: writes are accepted and dirty the array.
    a.set_read_only(T0, false).unwrap();
    write_done(&mut a, 30, 0, 8);
    assert!(a.status().dirty);
}

#[test]
fn a_read_error_while_read_only_is_served_elsewhere_and_not_written_back() {
    let mut a = clean_array(2);
    a.freeze().unwrap();
    run_to_idle(&mut a);
    a.set_read_only(T0, true).unwrap();
    run_to_idle(&mut a);
    assert!(a.status().read_only);
    a.unfreeze().unwrap();
    a.set_write_mostly(MemberId(1), true).unwrap();
    a.submit(T0, read(1, 100, 8)).unwrap();
    let first = drain(&mut a);
    let ios = member_ios(&first);
    assert_eq!(ios.len(), 1);
    assert_eq!(ios[0].member, MemberId(0));
    complete_ios(&mut a, &ios, IoResult::Error);
    let rest = run_to_idle(&mut a);
    assert!(
        rest.iter().all(|c| !writes(c)),
        "written while read-only: {rest:?}"
    );
    assert!(
        member_ios(&rest)
            .iter()
            .any(|io| io.member == MemberId(1) && io.op == MemberOp::Read)
    );
    assert_eq!(completions(&mut a), vec![ok(1)]);
    // The member that failed the read is kept (md blocks it for this request only).
    assert_eq!(a.member(MemberId(0)).unwrap().state, MemberState::InSync);
}

#[test]
fn members_cannot_come_or_go_while_read_only() {
    let mut a = clean_array(3);
    a.fail_member(T0, MemberId(2)).unwrap();
    run_to_idle(&mut a);
    a.freeze().unwrap();
    run_to_idle(&mut a);
    a.set_read_only(T0, true).unwrap();
    run_to_idle(&mut a);
    assert!(a.status().read_only);
    assert_eq!(a.remove_member(MemberId(2)), Err(ReconfigError::ReadOnly));
    assert_eq!(a.set_raid_disks(2), Err(ReconfigError::ReadOnly));
    assert_eq!(
        a.add_member(MemberId(3), AddMember::New),
        Err(ReconfigError::ReadOnly)
    );
    a.set_read_only(T0, false).unwrap();
    a.remove_member(MemberId(2)).unwrap();
}

#[test]
fn a_degraded_arrays_bits_stay_through_read_only() {
    // Degraded writes set bits a re-add needs; going read-only (which marks the array clean)
    // and the timers while read-only keep them (simulator seed 7805 of its 2,000-12,000 soak
    // lost them when a shrink made the array complete while read-only).
    let mut a = bitmap_array(3);
    a.fail_member(T0, MemberId(2)).unwrap();
    run_to_idle(&mut a);
    write_done(&mut a, 1, 0, 8);
    run_to_idle(&mut a);
    assert!(a.bitmap_bit(0));
    a.freeze().unwrap();
    run_to_idle(&mut a);
    a.set_read_only(T0, true).unwrap();
    run_to_idle(&mut a);
    assert!(a.status().read_only);
    a.unfreeze().unwrap();
    for _ in 0..20 {
        if let Some(t) = a.poll_timeout() {
            a.handle_timeout(t);
        }
        let cmds = run_to_idle(&mut a);
        assert!(cmds.is_empty(), "{cmds:?}");
    }
    assert!(a.bitmap_bit(0), "a bit cleared while read-only");
    a.set_read_only(T0, false).unwrap();
    run_to_idle(&mut a);
    assert!(a.bitmap_bit(0), "cleared while degraded");
}
