//! md's `--grow --bitmap=internal` and `--grow --bitmap=none` on a running array.

mod common;

use common::*;
use raid1_core::*;

fn storage(chunk: u64) -> (&'static mut [u8], &'static mut [u8]) {
    let mut c = cfg();
    c.bitmap_chunk_sectors = chunk;
    let n = A::bitmap_bytes(&c);
    (
        Box::leak(vec![0u8; n].into_boxed_slice()),
        Box::leak(vec![0u8; n].into_boxed_slice()),
    )
}

fn quiesce(a: &mut A) {
    a.freeze().unwrap();
    run_to_idle(a);
    assert!(a.is_quiesced());
}

#[test]
fn a_bitmap_added_while_running_starts_all_set_and_is_announced() {
    let mut a = clean_array(2);
    write_done(&mut a, 1, 0, 8);
    run_to_idle(&mut a);
    // Not quiesced: refused.
    let (b, h) = storage(64);
    a.submit(T0, write(2, 64, 8)).unwrap();
    assert_eq!(a.add_bitmap(b, h, 64), Err(ReconfigError::NotQuiesced));
    let w = settle_metadata(&mut a);
    complete_ios(&mut a, &w, IoResult::Ok);
    quiesce(&mut a);
    let (b, h) = storage(48);
    assert!(matches!(
        a.add_bitmap(b, h, 48),
        Err(ReconfigError::BitmapConfig(
            ConfigError::BitmapChunkSectors(48)
        ))
    ));
    let (b, h) = storage(64);
    a.add_bitmap(b, h, 64).unwrap();
    assert_eq!(a.config().bitmap_chunk_sectors, 64);
    assert!((0..16).all(|k| a.bitmap_bit(k)), "every chunk starts dirty");
    let cmds = run_to_idle(&mut a);
    assert!(
        cmds.iter()
            .any(|c| matches!(c, IoCmd::Superblock { state, .. } if state.bitmap)),
        "{cmds:?}"
    );
    assert!(cmds.iter().any(|c| matches!(c, IoCmd::BitmapPage { .. })));
    let (b, h) = storage(64);
    assert_eq!(
        a.add_bitmap(b, h, 64),
        Err(ReconfigError::Bitmap { present: true })
    );
    a.unfreeze().unwrap();
    // The daemon clears the bits of a clean, complete array.
    for _ in 0..10 {
        if let Some(t) = a.poll_timeout() {
            a.handle_timeout(t);
        }
        run_to_idle(&mut a);
    }
    assert!((0..16).all(|k| !a.bitmap_bit(k)), "cleared by the daemon");
    // A write now sets its bit again.
    a.submit(T0, write(3, 128, 8)).unwrap();
    let w = settle_metadata(&mut a);
    assert!(a.bitmap_bit(2));
    complete_ios(&mut a, &w, IoResult::Ok);
}

#[test]
fn a_removed_bitmap_is_no_longer_written_or_announced() {
    let mut a = bitmap_array(2);
    quiesce(&mut a);
    a.remove_bitmap().unwrap();
    assert_eq!(
        a.remove_bitmap(),
        Err(ReconfigError::Bitmap { present: false })
    );
    let cmds = run_to_idle(&mut a);
    assert!(
        cmds.iter()
            .any(|c| matches!(c, IoCmd::Superblock { state, .. } if !state.bitmap)),
        "{cmds:?}"
    );
    a.unfreeze().unwrap();
    a.submit(T0, write(1, 0, 8)).unwrap();
    let cmds = run_to_idle(&mut a);
    assert!(
        cmds.iter().all(|c| !matches!(c, IoCmd::BitmapPage { .. })),
        "{cmds:?}"
    );
    assert_eq!(completions(&mut a), vec![ok(1)]);
    assert!(!a.superblock_for(MemberId(0)).unwrap().bitmap);
}

#[test]
fn writes_after_a_dropped_bitmap_wait_for_the_superblocks_that_say_so() {
    // Without the wait, a write could reach a member whose superblock still announces the old
    // bitmap, which holds no bit for it: a crash then assembles with that bitmap and the resync
    // skips the write's chunk (simulator seed 3816, 4 seeds of 6,000).
    let mut a = bitmap_array(2);
    // Dirty already, so that the next write needs no dirty mark of its own.
    write_done(&mut a, 9, 512, 8);
    quiesce(&mut a);
    assert!(a.status().dirty);
    a.remove_bitmap().unwrap();
    a.unfreeze().unwrap();
    a.submit(T0, write(1, 0, 8)).unwrap();
    let mut held = Vec::new();
    for _ in 0..10 {
        let cmds = drain(&mut a);
        if cmds.is_empty() {
            break;
        }
        for c in cmds {
            match c {
                IoCmd::Superblock { state, .. } if !state.bitmap => held.push(c),
                IoCmd::Member(io) if io.op == MemberOp::Write => {
                    panic!("a write went out before the superblocks dropped the bitmap: {io:?}")
                }
                other => a.complete(T0, tag_of(&other), IoResult::Ok).unwrap(),
            }
        }
    }
    assert!(!held.is_empty());
    complete_all(&mut a, &held, IoResult::Ok);
    let cmds = run_to_idle(&mut a);
    assert!(member_ios(&cmds).iter().any(|io| io.op == MemberOp::Write));
    assert!(completions(&mut a).contains(&ok(1)));
}
