//! md's `sync_min` / `sync_max`: a check or repair over a range, stopped and resumed where it
//! got to, and forgotten once a pass ends.

mod common;

use common::*;
use raid1_core::*;

/// The sectors the sync read from members among `cmds`: (first, end) of each read.
fn sync_reads(cmds: &[IoCmd<4>]) -> Vec<(u64, u64)> {
    member_ios(cmds)
        .iter()
        .filter(|io| io.op == MemberOp::Read && matches!(io.buffer, Buffer::Sync { .. }))
        .map(|io| (io.sector, io.sector + u64::from(io.sectors)))
        .collect()
}

#[test]
fn a_check_covers_only_its_range_then_the_range_is_forgotten() {
    let mut a = clean_array(2);
    a.set_sync_range(128, 512).unwrap();
    a.start_check(false).unwrap();
    let (cmds, ev) = run_to_idle_with_events(&mut a);
    let reads = sync_reads(&cmds);
    assert!(!reads.is_empty());
    assert!(
        reads.iter().all(|&(s, e)| s >= 128 && e <= 512),
        "{reads:?}"
    );
    // Every sector of the range was read, from both members.
    let covered: u64 = reads.iter().map(|&(s, e)| e - s).sum();
    assert_eq!(covered, 2 * (512 - 128));
    assert!(ev.contains(&Event::SyncFinished {
        action: SyncAction::Check,
        mismatches: 0
    }));
    let st = a.status();
    assert_eq!((st.sync_min, st.sync_max), (0, MAX_SECTOR));
    // The next check covers the whole array.
    a.start_check(false).unwrap();
    let cmds = run_to_idle(&mut a);
    let covered: u64 = sync_reads(&cmds).iter().map(|&(s, e)| e - s).sum();
    assert_eq!(covered, 2 * 1024);
}

#[test]
fn an_interrupted_check_resumes_where_it_got_to() {
    let mut a = clean_array(2);
    a.set_sync_rate(None);
    a.start_check(false).unwrap();
    // Two rounds of windows, then idle (md: echo idle > sync_action).
    let mut done_reads = Vec::new();
    for _ in 0..2 {
        let cmds = drain(&mut a);
        done_reads.extend(sync_reads(&cmds));
        complete_all(&mut a, &cmds, IoResult::Ok);
    }
    a.set_sync_frozen(true);
    let (cmds, ev) = run_to_idle_with_events(&mut a);
    done_reads.extend(sync_reads(&cmds));
    assert!(
        ev.contains(&Event::SyncInterrupted(SyncAction::Check)),
        "{ev:?}"
    );
    let st = a.status();
    assert!(
        st.sync_min > 0 && st.sync_min < 1024,
        "resumes from {} (max {})",
        st.sync_min,
        st.sync_max
    );
    let resume = st.sync_min;
    // Everything below the resume point was read.
    let mut below = vec![false; resume as usize];
    for &(s, e) in &done_reads {
        for x in s..e.min(resume) {
            below[x as usize] = true;
        }
    }
    assert!(
        below.iter().all(|b| *b),
        "a hole below {resume}: {done_reads:?}"
    );
    a.set_sync_frozen(false);
    a.start_check(false).unwrap();
    let (cmds, ev) = run_to_idle_with_events(&mut a);
    let reads = sync_reads(&cmds);
    assert!(reads.iter().all(|&(s, _)| s >= resume), "{reads:?}");
    assert_eq!(reads.iter().map(|&(s, _)| s).min(), Some(resume));
    assert!(ev.iter().any(|e| matches!(e, Event::SyncFinished { .. })));
    assert_eq!(a.status().sync_min, 0);
}

#[test]
fn the_range_is_refused_while_checking_or_backwards() {
    let mut a = clean_array(2);
    assert_eq!(
        a.set_sync_range(600, 100),
        Err(ReconfigError::SyncRange { min: 600, max: 100 })
    );
    a.start_check(true).unwrap();
    assert_eq!(a.set_sync_range(0, 64), Err(ReconfigError::SyncBusy));
    run_to_idle(&mut a);
    a.set_sync_range(0, 64).unwrap();
    // A range past the end covers nothing and ends at once.
    a.set_sync_range(5000, MAX_SECTOR).unwrap();
    a.start_check(false).unwrap();
    let (cmds, ev) = run_to_idle_with_events(&mut a);
    assert!(sync_reads(&cmds).is_empty());
    assert!(ev.iter().any(|e| matches!(e, Event::SyncFinished { .. })));
}

/// Windows a sync starts now (before any timer): the distinct sync read offsets.
fn windows_started(cmds: &[IoCmd<4>]) -> usize {
    let mut starts: Vec<u64> = sync_reads(cmds).iter().map(|&(s, _)| s).collect();
    starts.sort_unstable();
    starts.dedup();
    starts.len()
}

#[test]
fn the_sync_slows_to_its_minimum_while_requests_are_in_the_table() {
    // md's sync_speed_min: with requests in flight the sync yields (one window per 64 ms at
    // 1,000 sectors/s); idle, it runs at its maximum (unlimited here: both windows at once).
    let mut a = clean_array(2);
    a.set_sync_rate_min(Some(1000));
    a.start_check(false).unwrap();
    let idle = drain(&mut a);
    assert_eq!(windows_started(&idle), 2, "{idle:?}");
    complete_all(&mut a, &idle, IoResult::Ok);
    run_to_idle(&mut a);
    let mut b = clean_array(2);
    b.set_sync_rate_min(Some(1000));
    b.submit(T0, read(1, 900, 8)).unwrap();
    b.start_check(false).unwrap();
    let busy = drain(&mut b);
    assert_eq!(windows_started(&busy), 1, "{busy:?}");
    let next = b
        .poll_timeout()
        .expect("the next window waits for its time");
    assert!(next.0 >= T0.0 + 64_000_000, "{next:?}");
    // Without a minimum the same load does not slow it.
    let mut c = clean_array(2);
    c.submit(T0, read(1, 900, 8)).unwrap();
    c.start_check(false).unwrap();
    assert_eq!(windows_started(&drain(&mut c)), 2);
}
