//! The hand-driven harness shared by the engine's state-machine tests: every member command is
//! collected and completed explicitly, so each test states exactly which order it checks.
#![allow(dead_code)]

use raid1_core::*;

pub type A = Array<'static, 4, 8, 2>;

pub const T0: Instant = Instant(1_000_000);

pub fn cfg() -> Config {
    let mut c = Config::new(1024);
    c.max_request_sectors = 64;
    c.barrier_unit_shift = 8;
    c.sync_window_sectors = 64;
    c.safe_mode_delay_ns = 1_000_000;
    c.bitmap_daemon_ns = 5_000_000;
    c
}

/// A clean 2- or 3-member array whose initial superblocks are written.
pub fn clean_array(members: u8) -> A {
    let ids: Vec<MemberId> = (0..members).map(MemberId).collect();
    let mut a = A::create(cfg(), None, u16::from(members), &ids, true).expect("create");
    let cmds = drain(&mut a);
    assert!(cmds.iter().all(|c| matches!(c, IoCmd::Superblock { .. })));
    complete_all(&mut a, &cmds, IoResult::Ok);
    a
}

/// Bitmap storage for `c`, leaked for the test's lifetime.
pub fn bitmap_for(c: &Config) -> Option<(&'static mut [u8], &'static mut [u8])> {
    let n = A::bitmap_bytes(c);
    Some((
        Box::leak(vec![0u8; n].into_boxed_slice()),
        Box::leak(vec![0u8; n].into_boxed_slice()),
    ))
}

/// A configuration with a bitmap of 64-sector chunks in 512-byte pages.
pub fn bitmap_cfg() -> Config {
    let mut c = cfg();
    c.bitmap_chunk_sectors = 64;
    c.bitmap_page_bytes = 512;
    c
}

/// A clean `n`-member array assembled with a bitmap ([`bitmap_cfg`]), its start-up
/// metadata written.
pub fn bitmap_array(n: u8) -> A {
    let c = bitmap_cfg();
    let mut a = A::assemble(
        c,
        bitmap_for(&c),
        &clean_sbs(n, 10),
        StartPolicy::RequireAll,
    )
    .expect("assemble");
    run_to_idle(&mut a);
    a
}

pub fn drain(a: &mut A) -> Vec<IoCmd<4>> {
    let mut v = Vec::new();
    while let Some(c) = a.poll_io() {
        v.push(c);
    }
    v
}

pub fn tag_of(c: &IoCmd<4>) -> Tag {
    match c {
        IoCmd::Member(io) => io.tag,
        IoCmd::Superblock { tag, .. }
        | IoCmd::BitmapPage { tag, .. }
        | IoCmd::Compare { tag, .. } => *tag,
    }
}

pub fn complete_all(a: &mut A, cmds: &[IoCmd<4>], r: IoResult) {
    for c in cmds {
        match c {
            IoCmd::Compare { tag, .. } => a.complete_compare(T0, *tag, true).expect("known tag"),
            other => a.complete(T0, tag_of(other), r).expect("known tag"),
        }
    }
}

/// Completes member I/Os (as returned by [`settle_metadata`] or [`member_ios`]).
pub fn complete_ios(a: &mut A, ios: &[MemberIo], r: IoResult) {
    for io in ios {
        a.complete(T0, io.tag, r).expect("known tag");
    }
}

pub fn member_ios(cmds: &[IoCmd<4>]) -> Vec<MemberIo> {
    cmds.iter()
        .filter_map(|c| match c {
            IoCmd::Member(io) => Some(*io),
            _ => None,
        })
        .collect()
}

pub fn data_ios(cmds: &[IoCmd<4>]) -> Vec<MemberIo> {
    member_ios(cmds)
        .into_iter()
        .filter(|io| io.op != MemberOp::Flush)
        .collect()
}

pub fn request(id: u64, op: RequestOp, sector: Sector, sectors: u32) -> Request {
    Request {
        id,
        op,
        sector,
        sectors,
        buffer: id as u32,
        fua: false,
    }
}

pub fn write(id: u64, sector: Sector, sectors: u32) -> Request {
    request(id, RequestOp::Write, sector, sectors)
}

pub fn read(id: u64, sector: Sector, sectors: u32) -> Request {
    request(id, RequestOp::Read, sector, sectors)
}

/// Runs the metadata writes the engine asks for (superblocks, bitmap pages, and the flushes
/// that precede superblocks) until only data I/O is left, which it returns.
pub fn settle_metadata(a: &mut A) -> Vec<MemberIo> {
    let mut data = Vec::new();
    loop {
        let cmds = drain(a);
        if cmds.is_empty() {
            return data;
        }
        for c in &cmds {
            match c {
                IoCmd::Member(io) if io.op != MemberOp::Flush => data.push(*io),
                other => a.complete(T0, tag_of(other), IoResult::Ok).expect("tag"),
            }
        }
    }
}

/// Completes every command (compares as equal) until the engine asks for none; returns them
/// in the order they were polled.
pub fn run_to_idle(a: &mut A) -> Vec<IoCmd<4>> {
    let mut all = Vec::new();
    for _ in 0..1000 {
        let cmds = drain(a);
        if cmds.is_empty() {
            return all;
        }
        complete_all(a, &cmds, IoResult::Ok);
        all.extend(cmds);
    }
    panic!("the engine never went idle");
}

/// As [`run_to_idle`], also collecting the events as they come (the queue holds only a few).
pub fn run_to_idle_with_events(a: &mut A) -> (Vec<IoCmd<4>>, Vec<Event>) {
    let mut all = Vec::new();
    let mut ev = events(a);
    for _ in 0..1000 {
        let cmds = drain(a);
        if cmds.is_empty() {
            return (all, ev);
        }
        complete_all(a, &cmds, IoResult::Ok);
        ev.extend(events(a));
        all.extend(cmds);
    }
    panic!("the engine never went idle");
}

pub fn events(a: &mut A) -> Vec<Event> {
    std::iter::from_fn(|| a.poll_event()).collect()
}

pub fn completions(a: &mut A) -> Vec<Completion> {
    let mut v: Vec<_> = std::iter::from_fn(|| a.poll_completion()).collect();
    v.sort_by_key(|c| c.id);
    v
}

pub fn ok(id: u64) -> Completion {
    Completion {
        id,
        outcome: Outcome::Ok,
    }
}

/// write_behind.rs's array: a configuration with a bitmap and a write-behind `limit`, and
/// superblocks of `n` clean members with a bitmap at events 10, member 1 WriteMostly.
pub fn behind_setup(n: u8, limit: u16) -> (Config, [Option<SuperblockState<4>>; 4]) {
    let mut c = bitmap_cfg();
    c.write_behind = limit;
    let mut sbs = clean_sbs(n, 10);
    for sb in sbs.iter_mut().flatten() {
        sb.bitmap = true;
        sb.events_cleared = 10;
    }
    sbs[1].as_mut().unwrap().write_mostly = true;
    (c, sbs)
}

/// Superblocks of a clean array of `n` active members at `events`.
pub fn clean_sbs(n: u8, events: u64) -> [Option<SuperblockState<4>>; 4] {
    let mut sbs: [Option<SuperblockState<4>>; 4] = [None; 4];
    for i in 0..n {
        let mut sb = SuperblockState::empty(MemberId(i));
        sb.size = cfg().data_sectors;
        sb.events = events;
        sb.raid_disks = u16::from(n);
        for j in 0..n {
            sb.roles[usize::from(j)] = Role::Active(u16::from(j));
        }
        sbs[usize::from(i)] = Some(sb);
    }
    sbs
}

/// `clean_sbs`, as left by a crash: every superblock says a resync is due from sector 0.
pub fn dirty_sbs(n: u8, events: u64) -> [Option<SuperblockState<4>>; 4] {
    let mut sbs = clean_sbs(n, events);
    for sb in sbs.iter_mut().flatten() {
        sb.resync_offset = 0;
    }
    sbs
}

/// Sectors written by sync windows to `member` among `cmds`.
pub fn synced_to(cmds: &[IoCmd<4>], member: MemberId) -> u64 {
    member_ios(cmds)
        .iter()
        .filter(|io| {
            io.member == member
                && io.op == MemberOp::Write
                && matches!(io.buffer, Buffer::Sync { .. })
        })
        .map(|io| u64::from(io.sectors))
        .sum()
}

/// Completes every command until the engine asks for none, failing those `fails` picks;
/// returns how many rounds of commands there were (bounded: the engine must settle).
pub fn run_failing(a: &mut A, mut fails: impl FnMut(&IoCmd<4>) -> bool) -> usize {
    for rounds in 0..20 {
        let cmds = drain(a);
        if cmds.is_empty() {
            return rounds;
        }
        for c in &cmds {
            let r = if fails(c) {
                IoResult::Error
            } else {
                IoResult::Ok
            };
            a.complete(T0, tag_of(c), r).unwrap();
        }
    }
    panic!("the engine keeps asking: it must give up on a write that keeps failing");
}

/// Submits write `id` over `[sector, +sectors)` and completes it everywhere: the array is
/// dirty and every member holds the data unflushed.
pub fn write_done(a: &mut A, id: u64, sector: Sector, sectors: u32) {
    a.submit(T0, write(id, sector, sectors)).unwrap();
    let w = settle_metadata(a);
    complete_ios(a, &w, IoResult::Ok);
}

/// Fires the safe-mode timer (the clean mark's deadline); returns when it was due.
pub fn fire_safe_mode(a: &mut A) -> Instant {
    let t = a.poll_timeout().expect("safe mode timer");
    a.handle_timeout(t);
    t
}

/// Drives the engine until it asks for nothing, every command succeeding and every compare
/// answered "the mirrors differ"; returns the member writes it issued.
pub fn run_with_every_compare_differing(a: &mut A) -> Vec<MemberIo> {
    let mut writes = Vec::new();
    for _ in 0..200 {
        let cmds = drain(a);
        if cmds.is_empty() {
            break;
        }
        for c in cmds {
            match c {
                IoCmd::Compare { tag, .. } => a.complete_compare(T0, tag, false).unwrap(),
                IoCmd::Member(io) => {
                    if io.op == MemberOp::Write {
                        writes.push(io);
                    }
                    a.complete(T0, io.tag, IoResult::Ok).unwrap();
                }
                other => a.complete(T0, tag_of(&other), IoResult::Ok).unwrap(),
            }
        }
    }
    writes
}

/// A clean pair whose members (0 and 1) have room for 8 bad-block entries each: a write error
/// on one is recorded in its log instead of failing it.
#[cfg(feature = "bad-block-log")]
pub fn pair_with_logs() -> A {
    let room = || -> BadBlocks<'static> {
        let zero = BadRange {
            start: 0,
            sectors: 0,
        };
        BadBlocks::new(Box::leak(vec![zero; 8].into_boxed_slice()), 0)
    };
    let mut a = A::assemble_with_bad_blocks(
        cfg(),
        None,
        &clean_sbs(2, 10),
        StartPolicy::RequireAll,
        [room(), room(), BadBlocks::empty(), BadBlocks::empty()],
    )
    .unwrap();
    run_to_idle(&mut a);
    a
}

/// Superblocks of a pair (members 0 and 1) with member 2 rebuilt as member 0's replacement up
/// to `offset` (replace.rs; reduced_features.rs without the `replacement` feature).
pub fn replacing_sbs(offset: Sector) -> [Option<SuperblockState<4>>; 4] {
    let mut sbs = clean_sbs(2, 20);
    let mut table = sbs[0].unwrap().roles;
    table[2] = Role::Active(0);
    for sb in sbs.iter_mut().flatten() {
        sb.roles = table;
    }
    let mut r = sbs[0].unwrap();
    r.this_member = MemberId(2);
    r.recovery_offset = Some(offset);
    r.replacement = true;
    sbs[2] = Some(r);
    sbs
}
