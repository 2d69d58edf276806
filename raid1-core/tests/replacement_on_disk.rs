//! A member that md marked on disk as a replacement, assembled without the member it was
//! replacing: it resumes as an ordinary rebuild of that slot. The same with and without the
//! `replacement` feature (`scripts/test.sh` runs this file both ways).

mod common;

use common::*;
use raid1_core::*;

#[test]
fn assembly_without_the_replaced_member_makes_the_replacement_an_ordinary_rebuild() {
    let mut sbs = replacing_sbs(256);
    sbs[0] = None;
    let mut a = A::assemble(cfg(), None, &sbs, StartPolicy::AllowDegraded).unwrap();
    let m2 = a.member(MemberId(2)).unwrap();
    assert!(!m2.replacement);
    assert_eq!(m2.role, Role::Active(0));
    let (cmds, ev) = run_to_idle_with_events(&mut a);
    assert_eq!(synced_to(&cmds, MemberId(2)), 1024 - 256);
    assert!(!ev.iter().any(|e| matches!(e, Event::Replaced { .. })));
    assert_eq!(a.status().in_sync, 2);
}
