//! Cancellation of the async binding's futures: an executor drops a future before it
//! completes when a `select` or a timeout picks another branch. Every call of `AsyncMirror`,
//! dropped after each of its polls in turn, with the card and the flash both answering
//! `Pending` (the card for 2 polls per command, the flash for 1 per program and erase); then
//! the volume goes on. Checked: no later call hangs (each completes within a poll budget); no
//! sector ever reads what was not written to it (a cancelled write's sectors read as the old
//! or the new version, and stay so); after a close and a remount the members hold the same
//! data for every sector.

mod common;

use common::{AsyncNor, Chips, SlowCard, member_copies, pattern};
use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll};
use embedded_sdmmc::Block;
use raid1_embedded::sim::{BusyFlash, Countdown, NorSim, SdFaults, SdSim};
use raid1_embedded::volume::asynch::AsyncMirror;
use raid1_embedded::volume::{MemberState, Mirror, MirrorStorage, NOR, Options, SdMember};

/// Sectors the checks cover (the volume is larger; these are the ones written).
const SPAN: u64 = 24;
/// Polls a call may take before it counts as hung.
const POLL_BUDGET: u32 = 200_000;
/// Time each test may take before the volume counts as hung (each takes about a second in a
/// debug build).
const TIME_BUDGET: std::time::Duration = std::time::Duration::from_secs(60);

type Vol<'b, 'a> = AsyncMirror<'b, SlowCard<'a>, AsyncNor<'a>>;
type Place<'b, 'a> = Option<Vol<'b, 'a>>;

/// Run `f` to its end; a call that needs more than [`POLL_BUDGET`] polls is a hang.
fn run<T>(what: &str, f: impl Future<Output = T>) -> T {
    let mut cx = Context::from_waker(core::task::Waker::noop());
    let mut f = pin!(f);
    for _ in 0..POLL_BUDGET {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("{what} did not complete in {POLL_BUDGET} polls: the volume hangs");
}

/// The value of `r`, whose error (holding the members) need not print.
fn ok<T, E>(what: &str, r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(_) => panic!("{what} failed"),
    }
}

/// Poll `f` at most `n` times, then drop it. What it returned, if it completed.
fn poll_then_drop<T>(f: impl Future<Output = T>, n: u32) -> Option<T> {
    let mut cx = Context::from_waker(core::task::Waker::noop());
    let mut f = pin!(f);
    (0..n).find_map(|_| match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    })
}

/// The version `b` holds for `sector`, if any.
fn version_of(sector: u64, b: &Block) -> Option<u32> {
    (0..=4).find(|&v| b.contents == pattern(sector, v).contents)
}

/// What each sector may read: exactly one version, or (a cancelled write) either of two.
#[derive(Clone, Copy)]
struct Expect {
    versions: [u32; 2],
}

impl Expect {
    fn allows(&self, v: u32) -> bool {
        self.versions.contains(&v)
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    /// A write of sectors 4..12 (version 2), in two runs.
    Write,
    /// The same write while the card is being recovered (pulled, written around, put back):
    /// a write whose caller is gone makes each member hold what the other holds, and the card
    /// holds nothing to copy yet.
    WriteRecovering,
    /// A read of sectors 0..12.
    Read,
    /// A recovery step, after the card was pulled, written around and put back.
    Step,
    /// The re-add of the card put back.
    Insert,
    /// `clean`.
    Clean,
    /// `tick` with the bitmap daemon due.
    Tick,
    /// A repair scrub's step.
    Scrub,
}

/// Mount the volume of `chips` in `place` through the async NOR store, let its first sync end,
/// and write version 1 of every sector checked.
fn mount_in<'p, 'b, 'a>(
    place: &'p mut Place<'b, 'a>,
    chips: &'a mut Chips,
    storage: &'b mut MirrorStorage,
    exp: &mut [Expect],
) -> &'p mut Vol<'b, 'a> {
    let (sd, flash) = chips.slow_both();
    let nor = ok(
        "the NOR mount",
        run("the NOR mount", AsyncNor::mount(flash)),
    );
    let vol = run(
        "assemble_in",
        AsyncMirror::assemble_in(place, sd, nor, storage, Options::MD),
    )
    .expect("assemble_in");
    finish(vol, "the first sync");
    write_all(vol, exp, 0..SPAN, 1);
    vol
}

/// Write `version` to `sectors` and record it.
fn write_all(
    vol: &mut Vol<'_, '_>,
    exp: &mut [Expect],
    sectors: core::ops::Range<u64>,
    version: u32,
) {
    for s in sectors {
        run("a write", vol.write(s, &[pattern(s, version)])).expect("write");
        exp[s as usize] = Expect {
            versions: [version; 2],
        };
    }
}

/// Every sector reads a version it may, the same twice; a sector a cancelled write may have
/// reached is pinned to what it read.
fn check_volume(vol: &mut Vol<'_, '_>, exp: &mut [Expect], ctx: &str) {
    for s in 0..SPAN {
        let mut b = [Block::new()];
        run("a read", vol.read(s, &mut b)).unwrap_or_else(|e| panic!("{ctx}: read {s}: {e}"));
        let v = version_of(s, &b[0]);
        let e = &mut exp[s as usize];
        assert!(
            v.is_some_and(|v| e.allows(v)),
            "{ctx}: sector {s} reads version {v:?}, expected one of {:?}",
            e.versions
        );
        let v = v.unwrap_or(0);
        e.versions = [v; 2];
    }
}

fn finish(vol: &mut Vol<'_, '_>, ctx: &str) {
    for _ in 0..10_000 {
        let p = run("a step", vol.step(8)).unwrap_or_else(|e| panic!("{ctx}: step: {e}"));
        if !p.busy {
            return;
        }
    }
    panic!("{ctx}: the sync does not end");
}

/// The card pulled, sectors 2..10 written around it (version 3), the card put back; with
/// `recover`, its re-add begun (the recovery runs in the steps that follow).
fn card_out_and_back(vol: &mut Vol<'_, '_>, exp: &mut [Expect], recover: bool) {
    vol.with_members(|sd, _| sd.0.dev.remove());
    run("sd_removed", vol.sd_removed()).expect("sd_removed");
    write_all(vol, exp, 2..10, 3);
    vol.with_members(|sd, _| sd.0.dev.insert());
    if recover {
        run("sd_inserted_begin", vol.sd_inserted_begin()).expect("insert");
    }
}

/// One run: set up, start `op`, drop it after `n` polls, go on, check. Whether `op`
/// completed within the `n` polls.
fn cancel_at(op: Op, n: u32) -> bool {
    let ctx = format!("{op:?} dropped after {n} polls");
    let mut chips = Chips::formatted();
    let mut exp = vec![Expect { versions: [0; 2] }; SPAN as usize];
    let completed;
    {
        let mut storage: MirrorStorage = MirrorStorage::new();
        let mut place = None;
        let vol = mount_in(&mut place, &mut chips, &mut storage, &mut exp);
        match op {
            Op::Step | Op::Insert | Op::WriteRecovering => {
                card_out_and_back(vol, &mut exp, !matches!(op, Op::Insert));
            }
            Op::Scrub => {
                run("scrub_begin", vol.scrub_begin(true)).expect("scrub");
                // Under way: the step dropped is one in the middle of it.
                assert!(run("a step", vol.step(1)).expect("step").busy);
            }
            _ => {}
        }
        let blocks: Vec<Block> = (4..12).map(|s| pattern(s, 2)).collect();
        let mut sink = vec![Block::new(); 12];
        let result = match op {
            Op::Write | Op::WriteRecovering => poll_then_drop(vol.write(4, &blocks), n),
            Op::Read => poll_then_drop(vol.read(0, &mut sink), n),
            Op::Step | Op::Scrub => poll_then_drop(vol.step(2), n).map(|r| r.map(|_| ())),
            Op::Insert => poll_then_drop(vol.sd_inserted_begin(), n),
            Op::Clean => poll_then_drop(vol.clean(), n),
            Op::Tick => poll_then_drop(vol.tick(30_000_000_000), n),
        };
        if let Some(Err(e)) = result {
            panic!("{ctx}: the call failed before it was dropped: {e}");
        }
        completed = result.is_some();
        if matches!(op, Op::Write | Op::WriteRecovering) {
            for s in 4..12 {
                let e = &mut exp[s as usize];
                e.versions = [e.versions[0], 2];
            }
        }
        // The volume goes on: a write of other sectors, as long as the cancelled one (a
        // leftover command of that one must not take this one's blocks), reads, the members
        // brought back in sync.
        let later: Vec<Block> = (14..22).map(|s| pattern(s, 4)).collect();
        run("a write", vol.write(14, &later)).expect("write");
        for e in &mut exp[14..22] {
            *e = Expect { versions: [4; 2] };
        }
        check_volume(vol, &mut exp, &ctx);
        if matches!(op, Op::Insert) {
            // The firmware asks again; a re-add that went through is left alone.
            run("sd_inserted_begin", vol.sd_inserted_begin()).expect("insert");
        }
        // No member was failed for a cancellation: the recovery under way, if any, ends
        // with both in sync.
        finish(vol, &ctx);
        assert!(!vol.degraded(), "{ctx}: a member was failed");
        write_all(vol, &mut exp, 22..24, 4);
        check_volume(vol, &mut exp, &ctx);
        ok(
            "close_in",
            run("close_in", AsyncMirror::close_in(&mut place)).expect("a volume"),
        );
    }
    members_agree(&mut chips, &exp, &ctx);
    completed
}

/// After a close: the volume remounts clean, and both members hold the same version of every
/// sector checked, one it may hold.
fn members_agree(chips: &mut Chips, exp: &[Expect], ctx: &str) {
    let (sd, nor) = chips.blocking();
    let mut storage: MirrorStorage = MirrorStorage::new();
    let vol = Mirror::open(sd, nor, &mut storage)
        .unwrap_or_else(|e| panic!("{ctx}: reopen: {}", e.error));
    assert_eq!(
        vol.health().synced_sectors,
        0,
        "{ctx}: not clean after close"
    );
    let (sd, mut nor) = ok("close", vol.close());
    for s in 0..SPAN {
        let (a, b) = member_copies(&sd, &mut nor, s);
        let (va, vb) = (version_of(s, &a), version_of(s, &b));
        assert!(
            va == vb && va.is_some_and(|v| exp[s as usize].allows(v)),
            "{ctx}: sector {s}: card {va:?}, flash {vb:?}, expected {:?}",
            exp[s as usize].versions
        );
    }
}

/// Run `f` on a thread of its own and fail if it takes longer than [`TIME_BUDGET`]: a volume
/// that hangs may spin inside one poll, where no poll budget sees it.
fn within_time_budget(f: impl FnOnce() + Send + 'static) {
    let (done, wait) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        f();
        let _ = done.send(());
    });
    match wait.recv_timeout(TIME_BUDGET) {
        Ok(()) => worker.join().expect("worker"),
        // The worker panicked: its panic is the failure.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(worker.join().expect_err("the worker failed"))
        }
        Err(_) => panic!("did not finish in {TIME_BUDGET:?}: the volume hangs"),
    }
}

#[test]
fn every_call_dropped_after_each_of_its_polls_leaves_a_working_consistent_volume() {
    within_time_budget(every_call_dropped);
}

#[test]
fn a_storm_of_dropped_calls_exhausts_nothing() {
    within_time_budget(storm);
}

fn every_call_dropped() {
    for op in [
        Op::Write,
        Op::WriteRecovering,
        Op::Read,
        Op::Step,
        Op::Insert,
        Op::Clean,
        Op::Tick,
        Op::Scrub,
    ] {
        let mut n = 1;
        while !cancel_at(op, n) {
            n += 1;
            assert!(n < 2_000, "{op:?} never completes");
        }
        assert!(
            n > 1,
            "{op:?} completed at its first poll: nothing was cancelled"
        );
    }
}

/// Calls dropped one after the other, each after one to six polls, before anything is let
/// to finish: the orphans pile up in the engine (their requests, their completions) and must
/// not exhaust it.
fn storm() {
    let mut chips = Chips::formatted();
    let mut exp = vec![Expect { versions: [0; 2] }; SPAN as usize];
    let mut storage: MirrorStorage = MirrorStorage::new();
    let mut place = None;
    let vol = mount_in(&mut place, &mut chips, &mut storage, &mut exp);
    let mut sink = vec![Block::new(); 4];
    for i in 0..200u32 {
        let s = u64::from(i % 20);
        let n = 1 + i % 6;
        assert!(!vol.degraded(), "storm: call {i}: a member was failed");
        if i % 3 == 0 {
            let blocks: Vec<Block> = (s..s + 4).map(|s| pattern(s, 2)).collect();
            match poll_then_drop(vol.write(s, &blocks), n) {
                Some(Ok(())) => {
                    for t in s..s + 4 {
                        exp[t as usize] = Expect { versions: [2; 2] };
                    }
                }
                Some(Err(e)) => panic!("storm: call {i}: write failed: {e}"),
                None => {
                    for t in s..s + 4 {
                        let e = &mut exp[t as usize];
                        e.versions = [e.versions[0], 2];
                    }
                }
            }
        } else if let Some(Err(e)) = poll_then_drop(vol.read(s, &mut sink), n) {
            panic!("storm: call {i}: read failed: {e}");
        }
    }
    check_volume(vol, &mut exp, "storm");
    finish(vol, "storm");
    assert!(!vol.degraded(), "storm: a member was failed");
    write_all(vol, &mut exp, 0..4, 3);
    check_volume(vol, &mut exp, "storm, healed");
    ok(
        "close_in",
        run("close_in", AsyncMirror::close_in(&mut place)).expect("a volume"),
    );
}

/// A mount dropped after each of its polls: the members come back out of the place
/// (`take` + `into_members`), and a second mount gives the volume with its data; a `close_in`
/// dropped after each of its polls leaves the volume in the place, and the next `close_in`
/// closes it clean.
#[test]
fn a_dropped_mount_or_close_loses_nothing() {
    within_time_budget(|| {
        for n in 1.. {
            let mut chips = Chips::formatted();
            let mounted = {
                let (sd, flash) = chips.slow_both();
                let nor = ok(
                    "the NOR mount",
                    run("the NOR mount", AsyncNor::mount(flash)),
                );
                let mut storage: MirrorStorage = MirrorStorage::new();
                let mut place: Place = None;
                let mounted = poll_then_drop(
                    AsyncMirror::assemble_in(&mut place, sd, nor, &mut storage, Options::MD),
                    n,
                )
                .is_some();
                let (sd, nor) = place
                    .take()
                    .expect("the volume in its place")
                    .into_members();
                let mut storage: MirrorStorage = MirrorStorage::new();
                let vol = run(
                    "assemble_in",
                    AsyncMirror::assemble_in(&mut place, sd, nor, &mut storage, Options::MD),
                )
                .unwrap_or_else(|e| panic!("mount dropped after {n} polls: remount: {e}"));
                finish(vol, "remount");
                run("a write", vol.write(0, &[pattern(0, 1)])).expect("write");
                // A close dropped after as many polls, then a close to its end.
                let closed = poll_then_drop(AsyncMirror::close_in(&mut place), n);
                if closed.is_none() {
                    let vol = place.as_mut().expect("a dropped close leaves the volume");
                    let mut b = [Block::new()];
                    run("a read", vol.read(0, &mut b)).expect("read after a dropped close");
                    assert!(b[0].contents == pattern(0, 1).contents);
                    ok(
                        "close_in",
                        run("close_in", AsyncMirror::close_in(&mut place)).expect("a volume"),
                    );
                }
                mounted
            };
            // What the drops left is clean and whole.
            let (sd, nor) = chips.blocking();
            let mut storage: MirrorStorage = MirrorStorage::new();
            let Ok(vol) = Mirror::open(sd, nor, &mut storage) else {
                panic!("mount dropped after {n} polls: reopen")
            };
            assert_eq!(
                vol.health().synced_sectors,
                0,
                "{n} polls: not clean after close"
            );
            let mut b = [Block::new()];
            vol.read_sectors(0, &mut b).expect("read");
            assert!(
                b[0].contents == pattern(0, 1).contents,
                "{n} polls: sector 0"
            );
            if mounted {
                // The mount completed within `n` polls: every drop point was tried.
                assert!(
                    n > 1,
                    "the mount completed at its first poll: nothing was dropped"
                );
                return;
            }
        }
    });
}

/// A write dropped while the card is being recovered, whose card write fails: the card is
/// failed and the flash's write of the request is left without its blocks. The flash keeps
/// what it holds (the old or the new version): the card, failed and holding a version two
/// writes old there (it was out while the flash took the middle one), is no source to copy
/// from. Copied from it, the sector went back to that version, which no read had served for
/// two writes.
#[test]
fn a_dropped_write_whose_card_write_failed_keeps_the_flash_copy() {
    within_time_budget(|| {
        let mut n = 1;
        loop {
            let mut chips = Chips::formatted();
            let mut exp = vec![Expect { versions: [0; 2] }; SPAN as usize];
            let mut storage: MirrorStorage = MirrorStorage::new();
            let mut place = None;
            let vol = mount_in(&mut place, &mut chips, &mut storage, &mut exp);
            card_out_and_back(vol, &mut exp, true);
            vol.with_members(|sd, _| {
                sd.0.dev.set_faults(SdFaults {
                    fail_write: Countdown::after(0),
                    ..SdFaults::default()
                })
            });
            let blocks: Vec<Block> = (4..8).map(|s| pattern(s, 2)).collect();
            let ctx = format!("the write dropped after {n} polls");
            let completed = match poll_then_drop(vol.write(4, &blocks), n) {
                Some(r) => {
                    r.unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    true
                }
                None => false,
            };
            for e in &mut exp[4..8] {
                e.versions = [e.versions[0], 2];
            }
            check_volume(vol, &mut exp, &ctx);
            assert!(vol.degraded(), "{ctx}: the card's write did not fail");
            if completed {
                assert!(n > 1, "the write completed at its first poll");
                return;
            }
            n += 1;
            assert!(n < 2_000, "the write never completes");
        }
    });
}

/// A write dropped while a member's command of it is in flight; then one read of the card
/// fails (a transient error, or the card pulled). The flash's command, done again without its
/// blocks, copies the card's: that read failing is the card's fault, not the flash's write.
/// It failed the flash: with the card pulled, the card was then the last member in sync
/// (`sd_removed` refused, every read an error though the flash held every block). Now the
/// card is failed and the volume goes on from the flash, losing nothing written.
#[test]
fn a_dropped_write_then_a_card_read_failure_fails_the_card_not_the_flash() {
    within_time_budget(|| {
        for pulled in [false, true] {
            let mut n = 1;
            loop {
                let ctx = format!("the write dropped after {n} polls, card pulled: {pulled}");
                let mut chips = Chips::formatted();
                let mut exp = vec![Expect { versions: [0; 2] }; SPAN as usize];
                let mut storage: MirrorStorage = MirrorStorage::new();
                let mut place = None;
                let vol = mount_in(&mut place, &mut chips, &mut storage, &mut exp);
                let blocks = [pattern(5, 2), pattern(6, 2)];
                let completed = poll_then_drop(vol.write(5, &blocks), n).is_some();
                for e in &mut exp[5..7] {
                    e.versions = [e.versions[0], 2];
                }
                if pulled {
                    vol.with_members(|sd, _| sd.0.dev.remove());
                    run("sd_removed", vol.sd_removed())
                        .unwrap_or_else(|e| panic!("{ctx}: sd_removed: {e}"));
                } else {
                    vol.with_members(|sd, _| sd.0.dev.set_fail_read(Countdown::after(0)));
                    run("a step", vol.step(8)).unwrap_or_else(|e| panic!("{ctx}: step: {e}"));
                    vol.with_members(|sd, _| sd.0.dev.remove());
                    run("sd_removed", vol.sd_removed())
                        .unwrap_or_else(|e| panic!("{ctx}: sd_removed: {e}"));
                }
                // The flash alone serves every sector.
                check_volume(vol, &mut exp, &ctx);
                if completed {
                    assert!(n > 1, "the write completed at its first poll");
                    break;
                }
                n += 1;
                assert!(n < 2_000, "the write never completes");
            }
        }
    });
}

/// Two writes dropped one after the other, then the firmware's main loop steps the volume:
/// the steps finish both orphans, whose completions no request's task takes. A finished
/// request holds its engine slot until its completion is taken, and the volume has two: every
/// request after was refused (`Io`) for good, both members healthy. The steps now drop those
/// completions, and a request that finds every slot taken waits in its task for the orphans'
/// commands instead of being refused.
#[test]
fn dropped_writes_finished_by_steps_leave_their_request_slots() {
    within_time_budget(|| {
        for steps in [0u32, 4] {
            for p1 in 1..10u32 {
                for p2 in 1..14u32 {
                    let ctx = format!("writes dropped after {p1} and {p2} polls, {steps} steps");
                    let mut chips = Chips::formatted();
                    let mut exp = vec![Expect { versions: [0; 2] }; SPAN as usize];
                    let mut storage: MirrorStorage = MirrorStorage::new();
                    let mut place = None;
                    let vol = mount_in(&mut place, &mut chips, &mut storage, &mut exp);
                    for (s, polls) in [(2, p1), (9, p2)] {
                        let blocks = [pattern(s, 2)];
                        if poll_then_drop(vol.write(s, &blocks), polls).is_none() {
                            exp[s as usize].versions[1] = 2;
                        } else {
                            exp[s as usize].versions = [2; 2];
                        }
                    }
                    for _ in 0..steps {
                        run("a step", vol.step(8)).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    }
                    write_all(vol, &mut exp, 13..14, 3);
                    check_volume(vol, &mut exp, &ctx);
                    assert!(!vol.degraded(), "{ctx}: a member was failed");
                }
            }
        }
    });
}

/// A `clean`, or a write, dropped while one of its card commands is in flight (a superblock
/// round, a data block); another card is put in the slot and card-detect reports the insertion
/// alone. The insertion reset the card's driver and then did the dropped command again, on the
/// new card: the volume's superblock written to it, the identity check that followed took it
/// for the volume's card, and its blocks were served as the volume's. The card's identity is
/// now read first; the dropped command reaches the card only if the check let it in (the card
/// in place, failed for another card, is not written). With a driver that must be told of a
/// card change (embedded-sdmmc's `SdCard`) and with one that needs no reset, whose commands
/// would reach the new card.
#[test]
fn a_dropped_card_command_is_not_redone_on_a_card_swapped_in() {
    within_time_budget(|| {
        for reset in [true, false] {
            for dropped in [Op::Clean, Op::Write, Op::Scrub] {
                for glitch in [false, true] {
                    swapped_after_a_drop(reset, dropped, glitch);
                }
            }
        }
    });
}

/// With `glitch`, the new card's first read fails: the insertion is refused (`Probe`), the
/// card in place failed, and the insertion reported again reads the card: what a dropped
/// command wrote to it in between would make it pass for the volume's card, behind by the
/// bitmap only.
fn swapped_after_a_drop(reset: bool, dropped: Op, glitch: bool) {
    {
        let mut n = 1;
        loop {
            let ctx = format!(
                "driver reset {reset}, glitch {glitch}, {dropped:?} dropped after {n} polls"
            );
            let mut chips = Chips::formatted();
            let mut exp = vec![Expect { versions: [0; 2] }; SPAN as usize];
            let mut storage: MirrorStorage = MirrorStorage::new();
            let mut place = None;
            let sim = SdSim::new(&mut chips.sd, 1);
            sim.set_faults(SdFaults {
                reinit_on_insert: reset,
                ..SdFaults::default()
            });
            let sd = SlowCard(SdMember::with_reinit(sim, SdSim::mark_card_uninit));
            let flash = BusyFlash::new(NorSim::new(&mut chips.nor, &mut chips.wear, 2), 1);
            let nor = ok(
                "the NOR mount",
                run("the NOR mount", AsyncNor::mount(flash)),
            );
            let vol = run(
                "assemble_in",
                AsyncMirror::assemble_in(&mut place, sd, nor, &mut storage, Options::MD),
            )
            .expect("assemble_in");
            finish(vol, "the first sync");
            write_all(vol, &mut exp, 0..SPAN, 1);
            let completed = match dropped {
                Op::Write => {
                    let blocks: Vec<Block> = (4..8).map(|s| pattern(s, 2)).collect();
                    for e in &mut exp[4..8] {
                        e.versions = [e.versions[0], 2];
                    }
                    poll_then_drop(vol.write(4, &blocks), n).is_some()
                }
                // A step of a repair, whose reference is the card (md's lowest slot).
                // (The step dropped is the first that takes more than n polls.)
                Op::Scrub => {
                    run("scrub_begin", vol.scrub_begin(true)).expect("scrub");
                    loop {
                        match poll_then_drop(vol.step(2), n) {
                            Some(p) if p.expect("step").busy => {}
                            Some(_) => break true,
                            None => break false,
                        }
                    }
                }
                _ => poll_then_drop(vol.clean(), n).is_some(),
            };
            vol.with_members(|sd, _| sd.0.dev.replace_with_new_card());
            if glitch {
                vol.with_members(|sd, _| sd.0.dev.set_fail_read(Countdown::after(0)));
                let r = run("sd_inserted_begin", vol.sd_inserted_begin());
                assert!(
                    matches!(r, Err(raid1_embedded::volume::VolumeError::Probe)),
                    "{ctx}: {r:?}"
                );
                vol.with_members(|sd, _| sd.0.dev.set_fail_read(Countdown::OFF));
            }
            run("sd_inserted_begin", vol.sd_inserted_begin())
                .unwrap_or_else(|e| panic!("{ctx}: {e}"));
            finish(vol, &ctx);
            check_volume(vol, &mut exp, &ctx);
            assert!(!vol.degraded(), "{ctx}: the new card was not rebuilt");
            if completed {
                assert!(n > 1, "{ctx}: completed at its first poll");
                return;
            }
            n += 1;
            assert!(n < 2_000, "{ctx}: never completes");
        }
    }
}

/// A write dropped, then the card fails a write of it (a block torn: it reads as neither
/// version) while the flash's command of it is still to come. The engine fails the card when
/// the whole request is over, so the flash's command, copying what the card holds, read the
/// torn block and wrote it to the flash: the only member in sync then served a block that no
/// write ever held. A member a data write failed on is no source for such a copy.
#[test]
fn a_dropped_write_does_not_copy_a_block_a_failed_card_write_tore() {
    within_time_budget(|| {
        // The card's k-th write after the drop fails (metadata first, then the data); what a
        // failed write leaves (old, new, a mix, erased) is the card's draw, by its seed.
        for seed in 1..=6 {
            for k in 0..4 {
                torn_under_a_dropped_write(seed, k);
            }
        }
    });
}

fn torn_under_a_dropped_write(seed: u64, k: u32) {
    let mut n = 1;
    loop {
        let ctx =
            format!("card seed {seed}, the write dropped after {n} polls, card write {k} fails");
        let mut chips = Chips::formatted();
        let mut exp = vec![Expect { versions: [0; 2] }; SPAN as usize];
        let mut storage: MirrorStorage = MirrorStorage::new();
        let mut place = None;
        let sd = SlowCard(SdMember::new(SdSim::new(&mut chips.sd, seed)));
        let flash = BusyFlash::new(NorSim::new(&mut chips.nor, &mut chips.wear, 2), 1);
        let nor = ok(
            "the NOR mount",
            run("the NOR mount", AsyncNor::mount(flash)),
        );
        let vol = run(
            "assemble_in",
            AsyncMirror::assemble_in(&mut place, sd, nor, &mut storage, Options::MD),
        )
        .expect("assemble_in");
        finish(vol, "the first sync");
        write_all(vol, &mut exp, 0..SPAN, 1);
        let blocks: Vec<Block> = (4..8).map(|s| pattern(s, 2)).collect();
        let completed = poll_then_drop(vol.write(4, &blocks), n).is_some();
        for e in &mut exp[4..8] {
            e.versions = [e.versions[0], 2];
        }
        vol.with_members(|sd, _| {
            sd.0.dev.set_faults(SdFaults {
                fail_write: Countdown::after(k),
                ..SdFaults::default()
            })
        });
        write_all(vol, &mut exp, 20..21, 3);
        vol.with_members(|sd, _| sd.0.dev.set_faults(SdFaults::default()));
        check_volume(vol, &mut exp, &ctx);
        if completed {
            assert!(n > 1, "the write completed at its first poll");
            return;
        }
        n += 1;
        assert!(n < 2_000, "the write never completes");
    }
}

/// Another card put in the slot, and its insertion reported, but that call dropped before it
/// read the card: the volume went on writing to the card in the slot as its own (the driver,
/// reset by the dropped call, reached the new card), and served it. A card reported inserted
/// gets no command until it is known for the card in place or added; the insertion reported
/// again rebuilds it in full.
#[test]
fn an_insertion_dropped_before_the_card_is_read_serves_nothing_from_it() {
    within_time_budget(|| {
        let mut n = 1;
        loop {
            let ctx = format!("the insertion dropped after {n} polls");
            let mut chips = Chips::formatted();
            let mut exp = vec![Expect { versions: [0; 2] }; SPAN as usize];
            let mut storage: MirrorStorage = MirrorStorage::new();
            let mut place = None;
            let vol = mount_in(&mut place, &mut chips, &mut storage, &mut exp);
            vol.with_members(|sd, _| sd.0.dev.replace_with_new_card());
            let completed = poll_then_drop(vol.sd_inserted_begin(), n).is_some();
            // Dropped before the card was known or added: the health says it is unchecked.
            let h = vol.health();
            assert!(
                completed || h.card_unchecked || h.sd != MemberState::InSync,
                "{ctx}: {h:?}"
            );
            write_all(vol, &mut exp, 2..6, 2);
            check_volume(vol, &mut exp, &ctx);
            run("sd_inserted_begin", vol.sd_inserted_begin())
                .unwrap_or_else(|e| panic!("{ctx}: inserted again: {e}"));
            finish(vol, &ctx);
            assert!(!vol.degraded(), "{ctx}: the new card was not rebuilt");
            check_volume(vol, &mut exp, &ctx);
            if completed {
                assert!(n > 1, "the insertion completed at its first poll");
                return;
            }
            n += 1;
            assert!(n < 2_000, "the insertion never completes");
        }
    });
}

/// The flash failed, then a write failed on the card, the last member in sync (md keeps the
/// last member and fails the request), then the flash rejoined and was rebuilt from the card.
/// The mark that the card's write left (a member a data write tore is no source for a dropped
/// write's copy until the engine fails it) outlived the rebuild: a write dropped with the
/// flash's command in flight then left the card new and the flash old, both in sync, apart
/// for good (found by `volume_async`).
#[test]
fn a_write_dropped_after_a_rebuild_from_the_last_member_leaves_the_members_agreeing() {
    within_time_budget(|| mark_through_a_rebuild(CardWrite::FailsFirst));
}

/// The flash was being rebuilt from the card when a write failed on the card, the last member
/// in sync, or was refused at the card: a card insertion was reported and that call dropped
/// before it read the card, so no command reached it (the insertion reported again found the
/// card in place, and no re-add followed). The mark the failure left outlived the request, the
/// card kept, and the rebuild, with the same end (the refused write found by `volume_async`).
#[test]
fn a_card_write_failed_in_a_rebuild_leaves_no_mark_that_outlives_it() {
    within_time_budget(|| mark_through_a_rebuild(CardWrite::Fails));
}

#[test]
fn a_write_refused_at_a_fenced_card_leaves_no_mark_that_outlives_the_rebuild() {
    within_time_budget(|| mark_through_a_rebuild(CardWrite::Refused));
}

/// How a write fails on the card, the last member in sync, in [`mark_through_a_rebuild`]:
/// before the flash rejoins, or while it is rebuilt.
#[derive(Clone, Copy, Debug, PartialEq)]
enum CardWrite {
    /// The card fails it, the flash failed, before the flash rejoins.
    FailsFirst,
    /// The card fails it while the flash is being rebuilt.
    Fails,
    /// It is refused at the card (its insertion reported by a call dropped before it read
    /// the card) while the flash is being rebuilt.
    Refused,
}

/// A write to the card fails (`how`), the flash is rebuilt, then a write is dropped after each
/// of its polls in turn: the members agree after the close.
fn mark_through_a_rebuild(how: CardWrite) {
    let mut n = 1;
    loop {
        let ctx = format!("{how:?}, the write dropped after {n} polls");
        let mut chips = Chips::formatted();
        let mut exp = vec![Expect { versions: [0; 2] }; SPAN as usize];
        {
            let mut storage: MirrorStorage = MirrorStorage::new();
            let mut place = None;
            let vol = mount_in(&mut place, &mut chips, &mut storage, &mut exp);
            vol.with_members(|_, nor| nor.flash_mut().flash.faults.broken = true);
            write_all(vol, &mut exp, 0..2, 2);
            assert_eq!(vol.health().nor, MemberState::Faulty, "{ctx}");
            if how != CardWrite::FailsFirst {
                vol.with_members(|_, nor| nor.flash_mut().flash.faults.broken = false);
                run("rejoin_begin", vol.rejoin_begin(NOR)).expect("rejoin");
                assert!(
                    matches!(vol.health().nor, MemberState::Recovering { .. }),
                    "{ctx}: {:?}",
                    vol.health()
                );
            }
            // Beyond the sectors checked: what the failed write leaves is the members'.
            // Written once first, so that the failing write needs no bitmap write.
            let far = [pattern(SPAN + 4, 1)];
            run("a write", vol.write(SPAN + 4, &far)).expect("write");
            if how == CardWrite::Refused {
                assert!(
                    poll_then_drop(vol.sd_inserted_begin(), 1).is_none(),
                    "{ctx}: the insertion completed at its first poll"
                );
                assert!(vol.health().card_unchecked, "{ctx}: {:?}", vol.health());
            } else {
                vol.with_members(|sd, _| {
                    sd.0.dev.set_faults(SdFaults {
                        fail_write: Countdown::after(0),
                        ..SdFaults::default()
                    })
                });
            }
            let refused = run("a write", vol.write(SPAN + 4, &[pattern(SPAN + 4, 3)]));
            assert!(refused.is_err(), "{ctx}: the card's write did not fail");
            if how == CardWrite::Refused {
                run("sd_inserted_begin", vol.sd_inserted_begin())
                    .unwrap_or_else(|e| panic!("{ctx}: inserted again: {e}"));
            }
            vol.with_members(|sd, nor| {
                sd.0.dev.set_faults(SdFaults::default());
                nor.flash_mut().flash.faults.broken = false;
            });
            assert_eq!(vol.health().sd, MemberState::InSync, "{ctx}");
            if how == CardWrite::FailsFirst {
                run("rejoin_begin", vol.rejoin_begin(NOR)).expect("rejoin");
            }
            finish(vol, &ctx);
            assert!(!vol.degraded(), "{ctx}: the flash was not rebuilt");
            let blocks: Vec<Block> = (4..8).map(|s| pattern(s, 4)).collect();
            let completed = poll_then_drop(vol.write(4, &blocks), n).is_some();
            for e in &mut exp[4..8] {
                e.versions = [e.versions[0], 4];
            }
            check_volume(vol, &mut exp, &ctx);
            finish(vol, &ctx);
            ok(
                "close_in",
                run("close_in", AsyncMirror::close_in(&mut place)).expect("a volume"),
            );
            if completed {
                assert!(n > 1, "the write completed at its first poll");
                members_agree(&mut chips, &exp, &ctx);
                return;
            }
        }
        members_agree(&mut chips, &exp, &ctx);
        n += 1;
        assert!(n < 2_000, "the write never completes");
    }
}
