//! `Array::reassemble` builds an array in the place of another: whatever that one held
//! (requests in flight, a sync running, a failed member, a sync rate, events not polled), the
//! array reassembled there behaves exactly as one `Array::assemble` returns from the same
//! superblocks; refused, the place holds an empty array.

mod common;
use common::*;
use raid1_core::*;

/// A busy array: writes in flight, a member failed, a resync paced and frozen, a check asked
/// for, events not polled.
fn busy_array() -> A {
    let c = bitmap_cfg();
    let mut a = A::assemble(c, bitmap_for(&c), &dirty_sbs(3, 7), StartPolicy::RequireAll)
        .expect("assemble");
    a.set_sync_rate(Some(1));
    a.set_sync_rate_min(Some(1));
    a.submit(T0, write(1, 0, 8)).expect("write");
    a.submit(T0, write(2, 512, 8)).expect("write");
    let cmds = drain(&mut a);
    assert!(!cmds.is_empty());
    a.fail_member(T0, MemberId(2)).expect("fail");
    a.set_sync_frozen(true);
    a
}

/// Everything the array shows from the outside, driven the same way: the status, the
/// commands until idle, a write, its completion, the events.
fn behaviour(a: &mut A) -> String {
    let mut out = format!("{:?}\n", a.status());
    out += &format!("{:?}\n", run_to_idle_with_events(a));
    a.submit(T0, write(9, 64, 16)).expect("write after");
    out += &format!("{:?}\n", run_to_idle_with_events(a));
    out += &format!("{:?} {:?}\n", completions(a), a.poll_timeout());
    out += &format!("{:?} {:?}\n", a.status(), a.mismatch_cnt());
    out
}

/// Bitmap storage for `c` whose every chunk is dirty: the resync copies them all.
fn all_dirty(c: &Config) -> Option<(&'static mut [u8], &'static mut [u8])> {
    let (bits, hot) = bitmap_for(c)?;
    bits.fill(0xff);
    Some((bits, hot))
}

#[test]
fn reassembled_in_a_busy_place_is_assembled_afresh() {
    let c = bitmap_cfg();
    let found = dirty_sbs(2, 20);
    let mut fresh =
        A::assemble(c, all_dirty(&c), &found, StartPolicy::AllowDegraded).expect("assemble");
    let mut place = busy_array();
    place
        .reassemble(c, all_dirty(&c), &found, StartPolicy::AllowDegraded)
        .expect("reassemble");
    let want = behaviour(&mut fresh);
    assert!(
        want.contains("Sync {"),
        "the dirty array resyncs every chunk: {want}"
    );
    assert_eq!(behaviour(&mut place), want);
}

#[test]
fn refused_reassembly_leaves_an_empty_array() {
    let c = bitmap_cfg();
    let mut place = busy_array();
    let none: [Option<SuperblockState<4>>; 4] = [None; 4];
    assert_eq!(
        place.reassemble(c, bitmap_for(&c), &none, StartPolicy::AllowDegraded),
        Err(AssembleError::NoActiveMember)
    );
    let mut empty = A::empty();
    assert_eq!(
        format!("{:?}", place.status()),
        format!("{:?}", empty.status())
    );
    assert_eq!(place.status().raid_disks, 0);
    for a in [&mut place, &mut empty] {
        assert!(drain(a).is_empty(), "an empty array writes nothing");
        assert!(
            a.submit(T0, read(1, 0, 8)).is_err(),
            "an empty array serves nothing"
        );
        assert!(a.poll_timeout().is_none());
    }
    // The refused configuration is refused as `assemble` refuses it, and leaves it empty too.
    let mut bad = c;
    bad.max_request_sectors = 0;
    let mut place = busy_array();
    assert_eq!(
        place
            .reassemble(bad, None, &dirty_sbs(2, 20), StartPolicy::AllowDegraded)
            .map_err(|e| format!("{e:?}")),
        A::assemble(bad, None, &dirty_sbs(2, 20), StartPolicy::AllowDegraded)
            .map(drop)
            .map_err(|e| format!("{e:?}"))
    );
    assert_eq!(place.status().raid_disks, 0);
}

/// `Array::assembles_in_sync` says what the assembly does, member by member: a frontend that
/// judges a member before it assembles (raid1-embedded's damaged flash) asks it rather than
/// compare event counts with a rule of its own.
#[test]
fn assembles_in_sync_agrees_with_the_assembly() {
    let cases: Vec<(&str, [Option<SuperblockState<4>>; 4])> = {
        let mut v = Vec::new();
        v.push(("equal", clean_sbs(2, 10)));
        let mut s = clean_sbs(2, 10);
        s[1].as_mut().unwrap().events = 11;
        v.push(("one event behind", s));
        let mut s = clean_sbs(2, 10);
        s[1].as_mut().unwrap().events = 12;
        v.push(("two events behind", s));
        let mut s = clean_sbs(2, 10);
        s[1].as_mut().unwrap().events = 11;
        s[1].as_mut().unwrap().roles[0] = Role::Faulty;
        v.push(("recorded as failed by the fresher member", s));
        let mut s = clean_sbs(2, 10);
        s[0].as_mut().unwrap().recovery_offset = Some(8);
        v.push(("being rebuilt", s));
        let mut s = clean_sbs(2, 10);
        s[0].as_mut().unwrap().events = 11;
        s[0].as_mut().unwrap().roles[1] = Role::Faulty;
        s[1].as_mut().unwrap().events = 11;
        s[1].as_mut().unwrap().roles[0] = Role::Faulty;
        v.push(("split brain", s));
        let mut s = clean_sbs(2, 10);
        s[1] = None;
        v.push(("alone", s));
        v
    };
    let mut saw = [false; 2];
    for (what, sbs) in cases {
        let a = A::assemble(cfg(), None, &sbs, StartPolicy::AllowDegraded);
        for i in 0..2 {
            let placed = a
                .as_ref()
                .ok()
                .and_then(|a| a.member(MemberId(i as u8)))
                .is_some_and(|m| m.state == MemberState::InSync);
            let said = A::assembles_in_sync(&sbs, i);
            assert_eq!(said, placed, "{what}: member {i}");
            saw[usize::from(said)] = true;
        }
    }
    assert_eq!(saw, [true, true], "both answers are tested");
}
