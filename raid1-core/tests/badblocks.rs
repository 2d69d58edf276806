//! Bad blocks: reads and sync never take a member's listed sectors as their source (md's
//! read_balance / sync_request). Every test runs the engine against a small data model (one
//! byte per sector and member; a member's bad sectors hold a value of its own, never the good
//! one), so a read served from a bad block shows up as wrong bytes, and every member read is
//! also checked against the member's list.

mod common;

use std::collections::HashMap;

use raid1_core::*;

type A = Array<'static, 4, 8, 2>;

const T0: Instant = Instant(1_000_000);
const SECTORS: u64 = 1024;

fn cfg() -> Config {
    let mut c = Config::new(SECTORS);
    c.max_request_sectors = 64;
    c.barrier_unit_shift = 8;
    c.sync_window_sectors = 64;
    c.safe_mode_delay_ns = 1_000_000;
    c.bitmap_daemon_ns = 5_000_000;
    c
}

fn good(sector: u64) -> u8 {
    (sector % 251) as u8 + 1
}

fn garbage(member: usize) -> u8 {
    0xE0 + member as u8
}

fn leak(list: &[(u64, u32)]) -> &'static [BadRange] {
    let v: Vec<BadRange> = list
        .iter()
        .map(|&(start, sectors)| BadRange { start, sectors })
        .collect();
    Box::leak(v.into_boxed_slice())
}

/// `list` in lent storage with `room` spare entries.
fn lend(list: &[(u64, u32)], room: usize) -> BadBlocks<'static> {
    let mut v: Vec<BadRange> = list
        .iter()
        .map(|&(start, sectors)| BadRange { start, sectors })
        .collect();
    v.resize(
        list.len() + room,
        BadRange {
            start: 0,
            sectors: 0,
        },
    );
    BadBlocks::new(Box::leak(v.into_boxed_slice()), list.len())
}

/// Members' data, request and sync buffers, and the lists, as a frontend would hold them.
struct Model {
    a: A,
    data: Vec<Vec<u8>>,
    bad: Vec<&'static [BadRange]>,
    bufs: HashMap<u32, Vec<u8>>,
    sync: HashMap<(u16, u8), Vec<u8>>,
    done: HashMap<u64, Outcome>,
    /// Member reads issued: (member, sector, sectors).
    reads: Vec<(usize, u64, u32)>,
    /// Member reads to fail once each: (member, sector).
    fail_reads: Vec<(usize, u64)>,
    /// Sectors no read of the member can return until a write reaches them (a media error):
    /// (member, sector).
    unreadable: Vec<(usize, u64)>,
    /// Member writes to fail once each: (member, sector).
    fail_writes: Vec<(usize, u64)>,
    events: Vec<Event>,
}

fn is_bad(list: &[BadRange], s: u64) -> bool {
    list.iter().any(|b| b.start <= s && s < b.end())
}

impl Model {
    /// A clean (or, `dirty`, not yet resynced) `n`-member array whose member `i` lists `bad[i]`;
    /// the listed sectors hold that member's garbage.
    fn new(n: usize, bad: &[&[(u64, u32)]], dirty: bool) -> Model {
        Model::with_room(n, bad, dirty, 8)
    }

    /// As `new`, with `room` spare entries in each member's lent storage.
    fn with_room(n: usize, bad: &[&[(u64, u32)]], dirty: bool, room: usize) -> Model {
        let mut m = Model::built(n, bad, dirty, room);
        m.run();
        m
    }

    /// An `n`-member array without bad blocks whose members cannot read `unreadable` (member,
    /// sector) from the start.
    fn with_unreadable(n: usize, dirty: bool, unreadable: &[(usize, u64)]) -> Model {
        let mut m = Model::built(n, &[], dirty, 8);
        m.unreadable = unreadable.to_vec();
        m.run();
        m
    }

    /// As `with_room`, before the engine ran.
    fn built(n: usize, bad: &[&[(u64, u32)]], dirty: bool, room: usize) -> Model {
        let lists: Vec<&'static [BadRange]> = (0..4)
            .map(|i| leak(bad.get(i).copied().unwrap_or(&[])))
            .collect();
        let lent = |i: usize| lend(bad.get(i).copied().unwrap_or(&[]), room);
        let mut sbs: [Option<SuperblockState<4>>; 4] = [None; 4];
        for (i, slot) in sbs.iter_mut().enumerate().take(n) {
            let mut sb = SuperblockState::empty(MemberId(i as u8));
            sb.size = cfg().data_sectors;
            sb.events = 10;
            sb.raid_disks = n as u16;
            sb.resync_offset = if dirty { 0 } else { MAX_SECTOR };
            for (j, r) in sb.roles.iter_mut().enumerate().take(n) {
                *r = Role::Active(j as u16);
            }
            *slot = Some(sb);
        }
        let a = A::assemble_with_bad_blocks(
            cfg(),
            None,
            &sbs,
            StartPolicy::RequireAll,
            [lent(0), lent(1), lent(2), lent(3)],
        )
        .expect("assemble");
        let data = (0..4)
            .map(|m| {
                (0..SECTORS)
                    .map(|s| {
                        if is_bad(lists[m], s) {
                            garbage(m)
                        } else {
                            good(s)
                        }
                    })
                    .collect()
            })
            .collect();
        Model {
            a,
            data,
            bad: lists,
            bufs: HashMap::new(),
            sync: HashMap::new(),
            done: HashMap::new(),
            reads: Vec::new(),
            fail_reads: Vec::new(),
            unreadable: Vec::new(),
            fail_writes: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Issues and completes everything the engine asks for until it is idle.
    fn run(&mut self) {
        for _ in 0..100_000 {
            let mut any = false;
            while let Some(cmd) = self.a.poll_io() {
                any = true;
                self.exec(cmd);
            }
            while let Some(c) = self.a.poll_completion() {
                self.done.insert(c.id, c.outcome);
            }
            while let Some(e) = self.a.poll_event() {
                self.events.push(e);
            }
            if !any {
                if let Some(t) = self.a.poll_timeout() {
                    self.a.handle_timeout(t);
                    if self.a.poll_timeout() == Some(t) {
                        return;
                    }
                    continue;
                }
                return;
            }
        }
        panic!("engine never went idle");
    }

    fn exec(&mut self, cmd: IoCmd<4>) {
        let t = match cmd {
            IoCmd::Member(io) => {
                let m = usize::from(io.member.0);
                let (s, n) = (io.sector as usize, io.sectors as usize);
                let mut res = IoResult::Ok;
                match io.op {
                    MemberOp::Read => {
                        for x in io.sector..io.sector + u64::from(io.sectors) {
                            assert!(
                                !is_bad(self.a.bad_blocks(io.member), x),
                                "member {m} read at its bad sector {x} ({io:?})"
                            );
                        }
                        self.reads.push((m, io.sector, io.sectors));
                        let end = io.sector + u64::from(io.sectors);
                        if let Some(k) = self
                            .fail_reads
                            .iter()
                            .position(|&(fm, fs)| fm == m && fs == io.sector)
                        {
                            self.fail_reads.remove(k);
                            res = IoResult::Error;
                        } else if self
                            .unreadable
                            .iter()
                            .any(|&(um, us)| um == m && (io.sector..end).contains(&us))
                        {
                            res = IoResult::Error;
                        } else {
                            let src = self.data[m][s..s + n].to_vec();
                            match io.buffer {
                                Buffer::Request { handle, offset } => {
                                    let b = self.bufs.entry(handle).or_default();
                                    let o = offset as usize;
                                    if b.len() < o + n {
                                        b.resize(o + n, 0);
                                    }
                                    b[o..o + n].copy_from_slice(&src);
                                }
                                Buffer::Sync { window, member } => {
                                    self.sync.insert((window, member.0), src);
                                }
                                Buffer::None => panic!("read without a buffer"),
                            }
                        }
                    }
                    MemberOp::Write => {
                        let src: Vec<u8> = match io.buffer {
                            Buffer::Request { handle, offset } => {
                                let b = &self.bufs[&handle];
                                b[offset as usize..offset as usize + n].to_vec()
                            }
                            Buffer::Sync { window, member } => {
                                self.sync[&(window, member.0)][..n].to_vec()
                            }
                            Buffer::None => panic!("write without a buffer"),
                        };
                        if let Some(k) = self
                            .fail_writes
                            .iter()
                            .position(|&(fm, fs)| fm == m && fs == io.sector)
                        {
                            self.fail_writes.remove(k);
                            res = IoResult::Error;
                        } else {
                            self.data[m][s..s + n].copy_from_slice(&src);
                            let end = io.sector + u64::from(io.sectors);
                            self.unreadable
                                .retain(|&(um, us)| um != m || !(io.sector..end).contains(&us));
                        }
                    }
                    MemberOp::Flush | MemberOp::Discard => {}
                }
                self.a.complete(T0, io.tag, res).unwrap();
                return;
            }
            IoCmd::Compare { tag, a, b, sectors } => {
                let key = |x: Buffer| match x {
                    Buffer::Sync { window, member } => (window, member.0),
                    other => panic!("compare of {other:?}"),
                };
                let n = sectors as usize;
                let equal = self.sync[&key(a)][..n] == self.sync[&key(b)][..n];
                self.a.complete_compare(T0, tag, equal).unwrap();
                return;
            }
            IoCmd::Superblock { tag, .. } | IoCmd::BitmapPage { tag, .. } => tag,
        };
        self.a.complete(T0, t, IoResult::Ok).unwrap();
    }

    /// Reads `[sector, +sectors)` and returns the outcome and the bytes.
    fn read(&mut self, id: u64, sector: u64, sectors: u32) -> (Outcome, Vec<u8>) {
        self.bufs.insert(id as u32, vec![0; sectors as usize]);
        self.a
            .submit(
                T0,
                Request {
                    id,
                    op: RequestOp::Read,
                    sector,
                    sectors,
                    buffer: id as u32,
                    fua: false,
                },
            )
            .unwrap();
        self.run();
        let outcome = self.done.remove(&id).expect("read finished");
        (outcome, self.bufs.remove(&(id as u32)).unwrap())
    }

    fn expect_good(&mut self, id: u64, sector: u64, sectors: u32) {
        let (o, bytes) = self.read(id, sector, sectors);
        assert_eq!(o, Outcome::Ok, "read {sector}+{sectors}");
        let want: Vec<u8> = (sector..sector + u64::from(sectors)).map(good).collect();
        assert_eq!(bytes, want, "read {sector}+{sectors}");
    }

    /// Writes the good bytes to `[sector, +sectors)`; returns the outcome.
    fn write(&mut self, id: u64, sector: u64, sectors: u32) -> Outcome {
        let bytes: Vec<u8> = (sector..sector + u64::from(sectors)).map(good).collect();
        self.bufs.insert(id as u32, bytes);
        self.a
            .submit(
                T0,
                Request {
                    id,
                    op: RequestOp::Write,
                    sector,
                    sectors,
                    buffer: id as u32,
                    fua: false,
                },
            )
            .unwrap();
        self.run();
        self.bufs.remove(&(id as u32));
        self.done.remove(&id).expect("write finished")
    }

    fn list(&self, i: u8) -> Vec<(u64, u32)> {
        self.a
            .bad_blocks(MemberId(i))
            .iter()
            .map(|b| (b.start, b.sectors))
            .collect()
    }

    /// No member read since `reads` was cleared touched `[start, end)` on member `mi`.
    fn assert_no_read_of(&self, mi: usize, start: u64, end: u64) {
        assert!(
            self.reads
                .iter()
                .all(|r| r.0 != mi || r.1 >= end || r.1 + u64::from(r.2) <= start),
            "{:?}",
            self.reads
        );
    }

    /// Makes member `p` the one read balancing prefers: every other member write-mostly.
    fn prefer(&mut self, p: usize, n: usize) {
        for i in 0..n {
            self.a.set_write_mostly(MemberId(i as u8), i != p).unwrap();
        }
        self.run();
    }
}

#[test]
fn a_read_over_a_bad_block_goes_to_the_other_member_whatever_the_preference() {
    // Member 0 lists 100+8, member 1 lists 300+16: each range must come from the other one.
    for p in 0..2 {
        let mut m = Model::new(2, &[&[(100, 8)], &[(300, 16)]], false);
        m.prefer(p, 2);
        m.reads.clear();
        m.expect_good(1, 100, 8);
        assert_eq!(m.reads, vec![(1, 100, 8)], "preferred {p}");
        m.reads.clear();
        m.expect_good(2, 300, 16);
        assert_eq!(m.reads, vec![(0, 300, 16)], "preferred {p}");
        // A read around them, and the whole array in several request sizes.
        m.expect_good(3, 96, 16);
        m.expect_good(4, 290, 40);
        let mut id = 10;
        for len in [64u32, 7, 13, 1] {
            let mut s = 0;
            while s < SECTORS {
                let n = len.min((SECTORS - s) as u32);
                m.expect_good(id, s, n);
                id += 1;
                s += u64::from(n);
            }
        }
    }
}

#[test]
fn a_read_straddling_bad_blocks_on_every_member_is_served_in_pieces() {
    // Member 0 is bad at 100..108, member 1 at 108..116: no member serves 96..120 alone.
    for p in 0..2 {
        let mut m = Model::new(2, &[&[(100, 8)], &[(108, 8)]], false);
        m.prefer(p, 2);
        m.reads.clear();
        m.expect_good(1, 96, 24);
        assert!(m.reads.len() >= 2, "pieces: {:?}", m.reads);
        let total: u32 = m.reads.iter().map(|r| r.2).sum();
        assert_eq!(total, 24, "every sector read once: {:?}", m.reads);
    }
}

#[test]
fn a_read_only_bad_blocks_could_serve_fails() {
    let mut m = Model::new(2, &[&[(500, 4)], &[(498, 4)]], false);
    // 500..502 is bad on both members.
    assert_eq!(m.read(1, 500, 2).0, Outcome::IoError);
    assert_eq!(m.read(2, 490, 20).0, Outcome::IoError);
    assert_eq!(m.read(3, 501, 1).0, Outcome::IoError);
    // Around it everything is served, from good blocks only.
    m.expect_good(4, 490, 10);
    m.expect_good(5, 502, 10);
    m.expect_good(6, 498, 2);
    m.expect_good(7, 504, 8);
    assert!(!m.a.status().broken, "a bad block is not a member failure");
    assert_eq!(m.a.status().in_sync, 2);
}

#[test]
fn read_error_retry_never_uses_bad_blocks() {
    // Three members: member 1 lists 200+8; member 0 fails the read there; member 2 serves it.
    let mut m = Model::new(3, &[&[], &[(200, 8)], &[]], false);
    m.prefer(0, 3);
    m.fail_reads.push((0, 200));
    m.reads.clear();
    m.expect_good(1, 200, 8);
    assert_eq!(
        m.reads[1].0, 2,
        "retry from the member without bad blocks: {:?}",
        m.reads
    );
    assert_eq!(m.a.member(MemberId(0)).unwrap().corrected_read_errors, 1);
    // Two members: the only other copy is a bad block: the read fails, no garbage.
    let mut m = Model::new(2, &[&[], &[(200, 8)]], false);
    m.prefer(0, 2);
    m.fail_reads.push((0, 200));
    m.fail_reads.push((0, 200));
    let (o, _) = m.read(1, 200, 8);
    assert_eq!(o, Outcome::IoError);
}

/// The resync `Model::new(.., true)` ran to its end finished, found nothing to count, and left
/// the array clean.
fn assert_resynced(m: &Model) {
    assert!(
        m.events.contains(&Event::SyncFinished {
            action: SyncAction::Resync,
            mismatches: 0
        }),
        "{:?}",
        m.events
    );
    assert_eq!(m.a.status().resync_offset, MAX_SECTOR);
}

#[test]
fn resync_and_check_never_read_bad_blocks() {
    // Not yet resynced: the first mirror is the source, except where it lists bad blocks.
    let m = Model::new(2, &[&[(100, 8), (700, 100)], &[(300, 4)]], true);
    assert_resynced(&m);
    // As md, the resync wrote no in-sync member's bad blocks: the lists and the junk stay.
    assert_eq!(m.list(0), vec![(100, 8), (700, 100)]);
    assert_eq!(m.list(1), vec![(300, 4)]);
    assert_eq!(m.data[0][100], garbage(0));
    assert_eq!(m.data[1][300], garbage(1));
    for s in 0..SECTORS {
        for (i, d) in m.data.iter().take(2).enumerate() {
            if !is_bad(m.bad[i], s) {
                assert_eq!(d[s as usize], good(s), "member {i} sector {s}");
            }
        }
    }
    // A check compares only good blocks: the garbage in the listed sectors is no mismatch.
    let mut m = Model::new(2, &[&[(100, 8)], &[(300, 4), (301 + 64, 1)]], false);
    m.a.start_check(false).unwrap();
    m.run();
    assert_eq!(m.a.mismatch_cnt(), 0, "{:?}", m.events);
    // A real difference outside bad blocks is still found.
    m.data[1][600] = 0;
    m.a.start_check(false).unwrap();
    m.run();
    assert!(m.a.mismatch_cnt() > 0);
}

/// Member 1 failed, removed and added back new with room for `room` entries in its log: its
/// recovery from member 0 runs to the end or stops.
fn rebuild_member_1(m: &mut Model, room: usize) {
    m.a.fail_member(T0, MemberId(1)).unwrap();
    m.run();
    m.a.freeze().unwrap();
    m.run();
    m.a.remove_member(MemberId(1)).unwrap();
    m.a.set_bad_blocks(MemberId(1), lend(&[], room)).unwrap();
    m.a.add_member(MemberId(1), AddMember::New).unwrap();
    m.a.unfreeze().unwrap();
    m.events.clear();
    m.run();
}

#[test]
fn recovery_records_what_no_in_sync_member_has_good_and_goes_on() {
    // md's raid1_sync_request: sectors bad on every in-sync member are recorded as bad on the
    // member being rebuilt, and the recovery goes past them.
    let mut m = Model::new(2, &[&[(400, 8)], &[]], false);
    rebuild_member_1(&mut m, 8);
    assert!(
        m.events.contains(&Event::SpareActive(MemberId(1))),
        "{:?}",
        m.events
    );
    assert_eq!(m.a.member(MemberId(1)).unwrap().state, MemberState::InSync);
    assert_eq!(
        m.list(1),
        vec![(400, 8)],
        "the rebuilt member lists the hole"
    );
    assert_eq!(m.list(0), vec![(400, 8)]);
    // Nobody had the data: reads there fail, on either member's preference; around it, every
    // sector came across.
    for p in 0..2 {
        m.prefer(p, 2);
        assert_eq!(m.read(10 + p as u64, 400, 8).0, Outcome::IoError);
        assert_eq!(m.read(20 + p as u64, 396, 8).0, Outcome::IoError);
        m.expect_good(30 + p as u64, 336, 64);
        m.expect_good(40 + p as u64, 408, 64);
    }
    for s in (0..SECTORS).filter(|s| !(400..408).contains(s)) {
        assert_eq!(m.data[1][s as usize], good(s), "sector {s} rebuilt");
    }
    // A write makes the sectors good everywhere again.
    assert_eq!(m.write(50, 400, 8), Outcome::Ok);
    assert!(m.list(0).is_empty() && m.list(1).is_empty());
    m.prefer(1, 2);
    m.expect_good(51, 390, 30);
}

#[test]
fn recovery_stops_where_what_no_member_has_cannot_be_recorded() {
    // No room in the rebuilt member's log: md's recovery_disabled. The member never counts as
    // in sync with sectors nobody could give it, and reads stay on member 0's good blocks.
    let mut m = Model::new(2, &[&[(400, 8)], &[]], false);
    rebuild_member_1(&mut m, 0);
    assert!(
        m.events
            .contains(&Event::SyncInterrupted(SyncAction::Recovery)),
        "{:?}",
        m.events
    );
    assert!(matches!(
        m.a.member(MemberId(1)).unwrap().state,
        MemberState::Recovering { recovery_offset, .. } if recovery_offset <= 400
    ));
    assert_eq!(m.read(1, 400, 8).0, Outcome::IoError);
    m.expect_good(2, 300, 64);
}

#[test]
fn a_sector_the_only_source_cannot_read_is_lost_alone_and_the_recovery_ends() {
    // md's fix_sync_read_error: the failed read is retried page by page; a page no member can
    // read is recorded as bad on every member, and the recovery goes on. Sector 403 cannot be
    // read on member 0 (a media error): only the page holding it, 400..408, is lost.
    for bad in [403u64, 0, 1023, 64, 63] {
        let mut m = Model::new(2, &[&[], &[]], false);
        m.unreadable.push((0, bad));
        rebuild_member_1(&mut m, 8);
        let page = bad / 8 * 8;
        assert_eq!(
            m.a.member(MemberId(1)).unwrap().state,
            MemberState::InSync,
            "{bad}: {:?}",
            m.events
        );
        assert_eq!(m.list(0), vec![(page, 8)], "{bad}");
        assert_eq!(m.list(1), vec![(page, 8)], "{bad}");
        for i in 0..2u8 {
            assert!(
                m.events.contains(&Event::BadBlocksRecorded {
                    member: MemberId(i),
                    sector: page,
                    sectors: 8
                }),
                "{bad}: {:?}",
                m.events
            );
        }
        assert_eq!(m.read(1, page, 8).0, Outcome::IoError, "{bad}");
        assert_eq!(m.read(2, bad, 1).0, Outcome::IoError, "{bad}");
        for s in (0..SECTORS).filter(|s| s / 8 != bad / 8) {
            assert_eq!(m.data[1][s as usize], good(s), "{bad}: sector {s} rebuilt");
        }
        for p in 0..2 {
            m.prefer(p, 2);
            if page >= 8 {
                m.expect_good(3, page - 8, 8);
            }
            if page + 16 <= SECTORS {
                m.expect_good(4, page + 8, 8);
            }
        }
        // Nothing was ever read from a sector either member lists.
        m.reads.clear();
        assert_eq!(m.write(5, page, 8), Outcome::Ok);
        assert!(m.list(0).is_empty() && m.list(1).is_empty(), "{bad}");
        m.expect_good(6, page, 8);
    }
}

#[test]
fn a_sector_one_source_cannot_read_comes_from_the_other_and_nothing_is_lost() {
    // Three members, member 1 rebuilt: member 0 cannot read 403, member 2 can. Nothing is
    // recorded; member 0 gets the sector written back.
    let mut m = Model::new(3, &[&[], &[], &[]], false);
    m.unreadable.push((0, 403));
    rebuild_member_1(&mut m, 8);
    assert_eq!(m.a.member(MemberId(1)).unwrap().state, MemberState::InSync);
    assert!(m.list(0).is_empty() && m.list(1).is_empty() && m.list(2).is_empty());
    assert!(m.unreadable.is_empty(), "written back: {:?}", m.unreadable);
    for s in 0..SECTORS {
        assert_eq!(m.data[1][s as usize], good(s), "sector {s}");
    }
}

#[test]
fn a_resync_no_member_can_read_a_page_of_records_it_on_each() {
    // Not yet resynced, and sector 700 unreadable on both members from the start: the page is
    // recorded on both, the resync ends, every other sector is resynced.
    let mut m = Model::with_unreadable(2, true, &[(0, 700), (1, 700)]);
    assert_eq!(m.a.status().resync_offset, MAX_SECTOR, "{:?}", m.events);
    assert_eq!(m.list(0), vec![(696, 8)]);
    assert_eq!(m.list(1), vec![(696, 8)]);
    assert_eq!(m.read(1, 700, 1).0, Outcome::IoError);
    m.expect_good(2, 632, 64);
    m.expect_good(3, 704, 64);
}

#[test]
fn hostile_lists_are_refused_with_typed_errors() {
    let sbs = {
        let mut sbs: [Option<SuperblockState<4>>; 4] = [None; 4];
        for (i, slot) in sbs.iter_mut().enumerate().take(2) {
            let mut sb = SuperblockState::empty(MemberId(i as u8));
            sb.size = cfg().data_sectors;
            sb.events = 10;
            sb.raid_disks = 2;
            sb.roles[0] = Role::Active(0);
            sb.roles[1] = Role::Active(1);
            *slot = Some(sb);
        }
        sbs
    };
    let try_list = |list: &'static [BadRange]| {
        let storage: &'static mut [BadRange] = Box::leak(list.to_vec().into_boxed_slice());
        A::assemble_with_bad_blocks(
            cfg(),
            None,
            &sbs,
            StartPolicy::RequireAll,
            [
                BadBlocks::empty(),
                BadBlocks::new(storage, list.len()),
                BadBlocks::empty(),
                BadBlocks::empty(),
            ],
        )
        .err()
    };
    let m1 = MemberId(1);
    assert_eq!(
        try_list(leak(&[(10, 0)])),
        Some(AssembleError::BadBlocks(BadBlockError::ZeroLength {
            member: m1,
            index: 0
        }))
    );
    assert_eq!(
        try_list(leak(&[(10, 8), (12, 8)])),
        Some(AssembleError::BadBlocks(BadBlockError::Unsorted {
            member: m1,
            index: 1
        }))
    );
    assert_eq!(
        try_list(leak(&[(100, 8), (10, 8)])),
        Some(AssembleError::BadBlocks(BadBlockError::Unsorted {
            member: m1,
            index: 1
        }))
    );
    assert_eq!(
        try_list(leak(&[(1020, 8)])),
        Some(AssembleError::BadBlocks(BadBlockError::OutOfRange {
            member: m1,
            index: 0,
            end: 1028
        }))
    );
    assert_eq!(
        try_list(leak(&[(u64::MAX - 1, u32::MAX)])),
        Some(AssembleError::BadBlocks(BadBlockError::OutOfRange {
            member: m1,
            index: 0,
            end: u64::MAX
        }))
    );
    let many: Vec<(u64, u32)> = (0..=MAX_BAD_BLOCKS as u64).map(|i| (i * 2, 1)).collect();
    assert_eq!(
        try_list(leak(&many)),
        Some(AssembleError::BadBlocks(BadBlockError::TooMany {
            member: m1,
            entries: MAX_BAD_BLOCKS + 1
        }))
    );
    // Exactly the capacity, adjacent entries: accepted.
    let full: Vec<(u64, u32)> = (0..MAX_BAD_BLOCKS as u64).map(|i| (i, 1)).collect();
    assert_eq!(try_list(leak(&full)), None);

    // set_bad_blocks: only while the member cannot be read, or quiesced.
    let mut a = A::assemble(cfg(), None, &sbs, StartPolicy::RequireAll).unwrap();
    assert_eq!(
        a.set_bad_blocks(m1, lend(&[(1, 1)], 0)),
        Err(BadBlockError::NotQuiesced(m1))
    );
    assert_eq!(
        a.set_bad_blocks(MemberId(9), BadBlocks::empty()),
        Err(BadBlockError::NoSuchMember(MemberId(9)))
    );
    assert_eq!(
        a.set_bad_blocks(MemberId(3), lend(&[(5, 0)], 0)),
        Err(BadBlockError::ZeroLength {
            member: MemberId(3),
            index: 0
        })
    );
    assert_eq!(a.set_bad_blocks(MemberId(3), lend(&[(5, 2)], 0)), Ok(()));
    a.freeze().unwrap();
    while a.poll_io().is_some() {}
    assert!(a.is_quiesced());
    assert_eq!(a.set_bad_blocks(m1, lend(&[(1, 1)], 0)), Ok(()));
    assert_eq!(
        a.bad_blocks(m1),
        &[BadRange {
            start: 1,
            sectors: 1
        }]
    );
}

/// Random lists (valid or not) and random reads and read errors: never a panic, never a read
/// of a listed sector, always the good bytes or an I/O error exactly where every member is bad.
#[test]
fn random_lists_and_reads() {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n.max(1)
    };
    for _ in 0..60 {
        let n = 2 + rnd(2) as usize;
        let mut lists: Vec<Vec<(u64, u32)>> = Vec::new();
        for _ in 0..n {
            let mut v = Vec::new();
            let mut s = rnd(64);
            for _ in 0..rnd(12) {
                let len = 1 + rnd(40) as u32;
                if s + u64::from(len) > SECTORS {
                    break;
                }
                v.push((s, len));
                s += u64::from(len) + rnd(120);
            }
            lists.push(v);
        }
        let refs: Vec<&[(u64, u32)]> = lists.iter().map(|v| v.as_slice()).collect();
        let mut m = Model::new(n, &refs, false);
        if rnd(2) == 0 {
            m.prefer(rnd(n as u64) as usize, n);
        }
        for id in 0..40 {
            let sector = rnd(SECTORS);
            let sectors = 1 + rnd(64.min(SECTORS - sector)) as u32;
            if rnd(4) == 0 {
                let who = rnd(n as u64) as usize;
                m.fail_reads.push((who, sector));
            }
            let (o, bytes) = m.read(id, sector, sectors);
            let hole =
                (sector..sector + u64::from(sectors)).any(|s| (0..n).all(|i| is_bad(m.bad[i], s)));
            if hole {
                assert_eq!(o, Outcome::IoError, "{lists:?} {sector}+{sectors}");
            } else if o == Outcome::Ok {
                let want: Vec<u8> = (sector..sector + u64::from(sectors)).map(good).collect();
                assert_eq!(bytes, want, "{lists:?} {sector}+{sectors}");
            }
            m.fail_reads.clear();
        }
    }
}

#[test]
fn a_successful_write_clears_what_it_wrote() {
    // 500..504 is bad on both members: unreadable until written (md clears the range on the
    // write's success, rdev_clear_badblocks).
    let mut m = Model::new(2, &[&[(500, 4)], &[(500, 4)]], false);
    assert_eq!(m.read(1, 500, 4).0, Outcome::IoError);
    assert_eq!(m.write(2, 500, 4), Outcome::Ok);
    assert!(m.list(0).is_empty() && m.list(1).is_empty());
    m.expect_good(3, 496, 12);
    // A write into the middle of an entry splits it when the storage has room ...
    let mut m = Model::new(2, &[&[(100, 16)], &[]], false);
    assert_eq!(m.write(1, 104, 4), Outcome::Ok);
    assert_eq!(m.list(0), vec![(100, 4), (108, 8)]);
    // ... trims an end ...
    assert_eq!(m.write(2, 98, 4), Outcome::Ok);
    assert_eq!(m.list(0), vec![(102, 2), (108, 8)]);
    assert_eq!(m.write(5, 96, 12), Outcome::Ok);
    assert_eq!(m.list(0), vec![(108, 8)]);
    assert_eq!(m.write(3, 114, 10), Outcome::Ok);
    assert_eq!(m.list(0), vec![(108, 6)]);
    m.prefer(0, 2);
    m.expect_good(4, 90, 40);
    // ... and keeps the entry whole without room (still never read: conservative).
    let mut m = Model::with_room(2, &[&[(100, 16)], &[]], false, 0);
    assert_eq!(m.write(1, 104, 4), Outcome::Ok);
    assert_eq!(m.list(0), vec![(100, 16)]);
    m.prefer(0, 2);
    m.expect_good(2, 96, 24);
}

#[test]
fn recovery_writes_clear_the_rebuilt_members_bad_blocks() {
    let mut m = Model::new(2, &[&[], &[]], false);
    m.a.fail_member(T0, MemberId(1)).unwrap();
    m.run();
    m.a.freeze().unwrap();
    m.run();
    m.a.remove_member(MemberId(1)).unwrap();
    // The device that comes back lists 200+8 (its junk there).
    m.a.set_bad_blocks(MemberId(1), lend(&[(200, 8)], 4))
        .unwrap();
    for s in 200..208 {
        m.data[1][s] = garbage(1);
    }
    m.a.add_member(MemberId(1), AddMember::New).unwrap();
    m.a.unfreeze().unwrap();
    m.run();
    assert_eq!(m.a.member(MemberId(1)).unwrap().state, MemberState::InSync);
    assert!(m.list(1).is_empty(), "{:?}", m.list(1));
    m.prefer(1, 2);
    m.expect_good(1, 190, 30);
}

#[test]
fn a_removed_members_list_leaves_with_it() {
    // Member 1 lists 300+8; it fails and is removed. Another device is added at position 1
    // without a list of its own: it must not inherit the leaver's (its sectors are good and are
    // rebuilt; reads may use them once it is in sync).
    let mut m = Model::new(2, &[&[], &[(300, 8)]], false);
    assert_eq!(m.list(1), vec![(300, 8)]);
    m.a.fail_member(T0, MemberId(1)).unwrap();
    m.run();
    m.a.freeze().unwrap();
    m.run();
    m.a.remove_member(MemberId(1)).unwrap();
    assert!(m.list(1).is_empty(), "{:?}", m.list(1));
    m.a.add_member(MemberId(1), AddMember::New).unwrap();
    m.a.unfreeze().unwrap();
    m.run();
    assert_eq!(m.a.member(MemberId(1)).unwrap().state, MemberState::InSync);
    assert!(m.list(1).is_empty(), "{:?}", m.list(1));
}

#[test]
fn a_repair_cut_at_a_bad_block_covers_the_rest_of_its_window() {
    // Member 0 lists 100..104, inside the window 64..128; member 1 differs over 104..128. The
    // window is worked in pieces at the bad-block edges; the piece after the bad range must
    // still be compared and repaired to its end.
    let mut m = Model::new(2, &[&[(100, 4)], &[]], false);
    for s in 104..128 {
        m.data[1][s] = 0x77;
    }
    m.a.start_check(true).unwrap();
    m.run();
    assert!(m.a.mismatch_cnt() >= 24, "{}", m.a.mismatch_cnt());
    for s in 104..128u64 {
        assert_eq!(m.data[1][s as usize], good(s), "member 1 sector {s}");
    }
    assert_eq!(m.list(0), vec![(100, 4)]);
    // And in one piece: the rest of the window is one read per member, not one per sector.
    let after: Vec<_> = m.reads.iter().filter(|r| r.1 >= 104 && r.1 < 128).collect();
    assert_eq!(after, vec![&(0, 104, 24), &(1, 104, 24)], "{:?}", m.reads);
}

#[test]
fn a_failed_write_on_the_last_member_keeps_its_bad_blocks() {
    // Member 1 is gone; member 0, the last in-sync one, lists 500..504. A write there fails on
    // it: the sectors were not made good, so they stay listed, and a read of them fails rather
    // than return what the member holds.
    let mut m = Model::new(2, &[&[(500, 4)], &[]], false);
    m.a.fail_member(T0, MemberId(1)).unwrap();
    m.run();
    m.fail_writes.push((0, 500));
    assert_eq!(m.write(1, 500, 4), Outcome::IoError);
    assert_eq!(m.list(0), vec![(500, 4)]);
    assert_eq!(m.read(2, 500, 4).0, Outcome::IoError);
}

#[test]
fn a_repair_rewrites_a_window_a_member_could_not_read() {
    // Member 1's read of the first window fails (and it holds junk there): the repair counts
    // the window as mismatched and writes the good data over it, as md's fix_sync_read_error.
    let mut m = Model::new(2, &[&[], &[]], false);
    for s in 0..64 {
        m.data[1][s] = 0x55;
    }
    m.fail_reads.push((1, 0));
    m.a.start_check(true).unwrap();
    m.run();
    assert!(m.fail_reads.is_empty(), "the read error was not met");
    assert!(m.a.mismatch_cnt() >= 64, "{}", m.a.mismatch_cnt());
    for s in 0..64u64 {
        assert_eq!(m.data[1][s as usize], good(s), "member 1 sector {s}");
    }
    assert_eq!(m.a.member(MemberId(1)).unwrap().state, MemberState::InSync);
}

#[test]
fn a_resync_moves_on_over_sectors_bad_on_every_member() {
    // 300..304 is bad on both members: nothing can be read there; the resync skips it (md
    // records it bad on the targets) and finishes, rather than stopping.
    let m = Model::new(2, &[&[(300, 4)], &[(300, 4)]], true);
    assert_resynced(&m);
}

#[test]
fn splitting_an_entry_keeps_the_entries_after_it() {
    // A write into the middle of the first of three entries: the split makes room by moving
    // the later entries up by one, intact.
    let mut m = Model::new(2, &[&[(100, 16), (200, 4), (300, 8)], &[]], false);
    assert_eq!(m.write(1, 104, 4), Outcome::Ok);
    assert_eq!(m.list(0), vec![(100, 4), (108, 8), (200, 4), (300, 8)]);
    // And of the second of them.
    assert_eq!(m.write(2, 201, 2), Outcome::Ok);
    assert_eq!(
        m.list(0),
        vec![(100, 4), (108, 8), (200, 1), (203, 1), (300, 8)]
    );
    m.prefer(0, 2);
    m.expect_good(3, 96, 40);
    m.expect_good(4, 190, 20);
    m.expect_good(5, 290, 30);
}

#[test]
fn a_read_nobody_else_can_serve_names_the_member_that_failed_it() {
    // Member 0 lists 100..108; member 1 fails the read there: no source is left. The read
    // fails, and the error names member 1, the last in-sync member that failed it.
    let mut m = Model::new(2, &[&[(100, 8)], &[]], false);
    for _ in 0..4 {
        m.fail_reads.push((1, 100));
    }
    assert_eq!(m.read(1, 100, 8).0, Outcome::IoError);
    assert!(
        m.events.contains(&Event::LastMemberError(MemberId(1))),
        "{:?}",
        m.events
    );
    assert!(!m.events.contains(&Event::LastMemberError(MemberId(0))));
}

#[test]
fn with_bad_blocks_on_every_mirror_the_longest_good_prefix_is_read_first() {
    // md's choose_bb_rdev: no member can serve 100+16 whole; member 0 is good for 10 sectors,
    // member 1 for 4. The read starts on member 0, and is served whole in pieces.
    let mut m = Model::new(2, &[&[(110, 2)], &[(104, 2)]], false);
    m.reads.clear();
    m.expect_good(1, 100, 16);
    assert_eq!(m.reads.first(), Some(&(0, 100, 10)), "{:?}", m.reads);
    // Member 0 write-mostly: the longest prefix among the others comes first (member 1's 4),
    // write-mostly members only as a last resort.
    m.a.set_write_mostly(MemberId(0), true).unwrap();
    m.run();
    m.reads.clear();
    m.expect_good(2, 100, 16);
    assert_eq!(m.reads.first(), Some(&(1, 100, 4)), "{:?}", m.reads);
}

/// Every command the engine hands out now (nothing completed).
fn take(a: &mut A) -> Vec<IoCmd<4>> {
    let mut v = Vec::new();
    while let Some(c) = a.poll_io() {
        v.push(c);
    }
    v
}

fn tag(c: &IoCmd<4>) -> Tag {
    match c {
        IoCmd::Member(io) => io.tag,
        IoCmd::Superblock { tag, .. }
        | IoCmd::BitmapPage { tag, .. }
        | IoCmd::Compare { tag, .. } => *tag,
    }
}

fn submit_write(a: &mut A, id: u64, sector: u64, sectors: u32, fua: bool) {
    a.submit(
        T0,
        Request {
            id,
            op: RequestOp::Write,
            sector,
            sectors,
            buffer: id as u32,
            fua,
        },
    )
    .unwrap();
}

fn is_data_write(c: &IoCmd<4>, member: u8) -> bool {
    matches!(c, IoCmd::Member(io) if io.member == MemberId(member) && io.op == MemberOp::Write)
}

/// Completes every command the engine hands out (`answer` says how) until it hands out none,
/// except those `hold` picks, which are returned unanswered.
fn pump(
    a: &mut A,
    answer: impl Fn(&IoCmd<4>) -> IoResult,
    hold: impl Fn(&IoCmd<4>) -> bool,
    mut seen: impl FnMut(&mut A, &IoCmd<4>),
) -> Vec<IoCmd<4>> {
    let mut held = Vec::new();
    for _ in 0..100 {
        let cmds = take(a);
        if cmds.is_empty() {
            return held;
        }
        for c in cmds {
            seen(a, &c);
            if hold(&c) {
                held.push(c);
            } else {
                a.complete(T0, tag(&c), answer(&c)).unwrap();
            }
        }
    }
    panic!("the engine never went idle");
}

#[test]
fn a_failed_write_is_recorded_and_acknowledged_only_once_the_log_is_on_disk() {
    // md's narrow_write_error: member 1 has a log with room, so a write error there records the
    // range and keeps the member; the write succeeds (member 0 wrote it) but only after the
    // superblock round that carries member 1's log has landed.
    let mut m = Model::new(2, &[&[], &[]], false);
    m.bufs.insert(1, vec![0; 8]);
    submit_write(&mut m.a, 1, 200, 8, false);
    // Superblocks polled, and the list each member's carried.
    let mut after_error: Vec<MemberId> = Vec::new();
    let mut landed = false;
    let list_at_poll = std::cell::RefCell::new(Vec::new());
    let errored = std::cell::Cell::new(false);
    let held = pump(
        &mut m.a,
        |c| {
            if is_data_write(c, 1) {
                errored.set(true);
                IoResult::Error
            } else {
                IoResult::Ok
            }
        },
        |c| {
            errored.get() && matches!(c, IoCmd::Superblock { member, .. } if *member == MemberId(1))
        },
        |a, c| {
            if let IoCmd::Superblock { member, .. } = c {
                after_error.push(*member);
                list_at_poll
                    .borrow_mut()
                    .push(a.bad_blocks(*member).to_vec());
            }
        },
    );
    // Member 1's superblock writes are held: nothing may be acknowledged yet.
    assert!(!held.is_empty());
    if let Some(c) = m.a.poll_completion() {
        panic!("acknowledged before member 1's log landed: {c:?}");
    }
    assert_eq!(m.list(1), vec![(200, 8)]);
    assert_eq!(m.a.member(MemberId(1)).unwrap().state, MemberState::InSync);
    for c in &held {
        m.a.complete(T0, tag(c), IoResult::Ok).unwrap();
        landed = true;
    }
    pump(&mut m.a, |_| IoResult::Ok, |_| false, |_, _| {});
    assert!(landed);
    // The last superblock of member 1 carried the range.
    let lists = list_at_poll.into_inner();
    assert!(
        lists.iter().any(|l| l
            == &[BadRange {
                start: 200,
                sectors: 8
            }]),
        "{lists:?} {after_error:?}"
    );
    assert_eq!(
        m.a.poll_completion().map(|c| c.outcome),
        Some(Outcome::Ok),
        "acknowledged once the round landed"
    );
    let recorded: Vec<_> = std::iter::from_fn(|| m.a.poll_event())
        .filter(|e| matches!(e, Event::BadBlocksRecorded { .. }))
        .collect();
    assert_eq!(
        recorded,
        vec![Event::BadBlocksRecorded {
            member: MemberId(1),
            sector: 200,
            sectors: 8
        }]
    );
    assert!(!m.a.status().broken);
    assert_eq!(m.a.status().in_sync, 2);
    // Reads avoid the recorded range on member 1 whatever the preference ...
    m.data[1][200..208].fill(garbage(1));
    m.prefer(1, 2);
    m.reads.clear();
    m.expect_good(2, 196, 16);
    m.assert_no_read_of(1, 200, 208);
    // ... until a write there succeeds on it.
    assert_eq!(m.write(3, 200, 8), Outcome::Ok);
    assert!(m.list(1).is_empty());
    m.reads.clear();
    m.expect_good(4, 200, 8);
    assert_eq!(m.reads, vec![(1, 200, 8)]);
}

#[test]
fn a_failed_read_error_write_back_is_recorded_and_keeps_the_member() {
    // md's fix_read_error writes the good data back with r1_sync_page_io, which records a
    // failed write in the member's bad-block log (rdev_set_badblocks) and fails the member
    // only when the log cannot take it.
    let mut m = Model::new(2, &[&[], &[]], false);
    m.prefer(1, 2);
    m.fail_reads.push((1, 200));
    m.fail_writes.push((1, 200));
    m.reads.clear();
    m.expect_good(1, 200, 8);
    assert_eq!(
        m.reads,
        vec![(1, 200, 8), (0, 200, 8)],
        "re-read from member 0"
    );
    assert_eq!(m.a.member(MemberId(1)).unwrap().state, MemberState::InSync);
    assert_eq!(m.list(1), vec![(200, 8)]);
    assert_eq!(m.a.status().in_sync, 2);
    // Member 1 still serves what is good on it, and the recorded range comes from member 0 ...
    m.reads.clear();
    m.expect_good(2, 192, 24);
    m.assert_no_read_of(1, 200, 208);
    assert!(m.reads.iter().any(|r| r.0 == 1), "{:?}", m.reads);
    // ... until a write there succeeds on it.
    assert_eq!(m.write(3, 200, 8), Outcome::Ok);
    assert!(m.list(1).is_empty());
    // Without room in its log the member fails, as before.
    let mut m = Model::with_room(2, &[&[], &[]], false, 0);
    m.prefer(1, 2);
    m.fail_reads.push((1, 200));
    m.fail_writes.push((1, 200));
    m.expect_good(1, 200, 8);
    assert_eq!(m.a.member(MemberId(1)).unwrap().state, MemberState::Faulty);
}

#[test]
fn a_flush_after_a_write_back_recorded_as_bad_waits_for_the_record() {
    // The failed write-back may have torn the block on member 1: until the superblock that
    // lists it is on disk, a power cut brings member 1 back in sync over it. A flush answered
    // meanwhile promised what the next assembly would not keep (the simulator's torn
    // failures, oracle (j)).
    let mut m = Model::new(2, &[&[], &[]], false);
    m.prefer(1, 2);
    let errored = std::cell::Cell::new(false);
    let answer = |c: &IoCmd<4>| match c {
        IoCmd::Member(io) if io.member == MemberId(1) && io.sector == 200 => {
            if io.op == MemberOp::Write {
                errored.set(true);
            }
            IoResult::Error
        }
        _ => IoResult::Ok,
    };
    let hold = |c: &IoCmd<4>| {
        errored.get() && matches!(c, IoCmd::Superblock { member, .. } if *member == MemberId(1))
    };
    m.a.submit(T0, common::request(1, RequestOp::Read, 200, 8))
        .unwrap();
    let mut held = pump(&mut m.a, answer, hold, |_, _| {});
    assert!(errored.get(), "the write-back was tried and failed");
    assert_eq!(m.list(1), vec![(200, 8)]);
    assert!(!held.is_empty(), "the round carrying the record is out");
    m.a.submit(T0, common::request(2, RequestOp::Flush, 0, 0))
        .unwrap();
    held.extend(pump(&mut m.a, answer, hold, |_, _| {}));
    if let Some(c) = m.a.poll_completion() {
        panic!("answered before member 1's record landed: {c:?}");
    }
    for c in &held {
        m.a.complete(T0, tag(c), IoResult::Ok).unwrap();
    }
    pump(&mut m.a, |_| IoResult::Ok, |_| false, |_, _| {});
    let mut done: Vec<_> = std::iter::from_fn(|| m.a.poll_completion())
        .map(|c| (c.id, c.outcome))
        .collect();
    done.sort_by_key(|d| d.0);
    assert_eq!(done, vec![(1, Outcome::Ok), (2, Outcome::Ok)]);
}

#[test]
fn a_member_whose_log_cannot_take_the_range_fails() {
    // No log (no storage lent): the member fails, as before and as md does without a log.
    let mut m = Model::with_room(2, &[&[], &[]], false, 0);
    m.fail_writes.push((1, 200));
    assert_eq!(m.write(1, 200, 8), Outcome::Ok);
    assert_eq!(m.a.member(MemberId(1)).unwrap().state, MemberState::Faulty);
    // A full log: one spare entry takes the first error, the second fails the member.
    let mut m = Model::with_room(2, &[&[], &[]], false, 1);
    m.fail_writes.push((1, 200));
    assert_eq!(m.write(1, 200, 8), Outcome::Ok);
    assert_eq!(m.a.member(MemberId(1)).unwrap().state, MemberState::InSync);
    assert_eq!(m.list(1), vec![(200, 8)]);
    // Next to the entry: merged, no new entry needed.
    m.fail_writes.push((1, 208));
    assert_eq!(m.write(2, 208, 8), Outcome::Ok);
    assert_eq!(m.list(1), vec![(200, 16)]);
    assert_eq!(m.a.member(MemberId(1)).unwrap().state, MemberState::InSync);
    m.fail_writes.push((1, 600));
    assert_eq!(m.write(3, 600, 8), Outcome::Ok);
    assert_eq!(m.a.member(MemberId(1)).unwrap().state, MemberState::Faulty);
    m.expect_good(4, 600, 8);
}

#[test]
fn a_failed_write_on_the_last_member_is_recorded_and_fails_the_request() {
    let mut m = Model::new(2, &[&[], &[]], false);
    m.a.fail_member(T0, MemberId(1)).unwrap();
    m.run();
    m.fail_writes.push((0, 300));
    assert_eq!(m.write(1, 300, 4), Outcome::IoError);
    assert_eq!(m.list(0), vec![(300, 4)]);
    assert!(
        !m.a.status().broken,
        "recorded, not a failure of the last member"
    );
    assert_eq!(m.read(2, 300, 4).0, Outcome::IoError);
    m.expect_good(3, 304, 4);
}

#[test]
fn a_log_that_drops_made_good_sectors_lands_only_after_their_write_is_flushed() {
    // Member 0 lists 100+16. A round starts while a non-FUA write over 100+16 is in flight: its
    // preflush goes out before the write completes, so it does not cover it. The write then
    // completes and takes the entry off the list; the superblock that carries the shorter log
    // must wait for another flush of member 0, or a power cut could leave the old data there
    // with no entry to keep reads away.
    let mut m = Model::new(2, &[&[(100, 16)], &[]], false);
    let at_100 = |c: &IoCmd<4>| matches!(c, IoCmd::Member(io) if io.sector == 100);
    m.bufs.insert(2, vec![0; 16]);
    submit_write(&mut m.a, 2, 100, 16, false);
    let writes = pump(&mut m.a, |_| IoResult::Ok, at_100, |_, _| {});
    assert_eq!(writes.len(), 2, "{writes:?}");
    // Another write completes: both members have unflushed data, so the next round starts
    // with preflushes.
    m.bufs.insert(3, vec![0; 8]);
    submit_write(&mut m.a, 3, 0, 8, false);
    pump(&mut m.a, |_| IoResult::Ok, |_| false, |_, _| {});
    m.a.set_write_mostly(MemberId(1), true).unwrap();
    let is_flush0 = |c: &IoCmd<4>| matches!(c, IoCmd::Member(io) if io.member == MemberId(0) && io.op == MemberOp::Flush);
    let preflushes = take(&mut m.a);
    assert!(preflushes.iter().any(is_flush0), "{preflushes:?}");
    for c in &writes {
        m.a.complete(T0, tag(c), IoResult::Ok).unwrap();
    }
    assert!(m.list(0).is_empty(), "the write made 100+16 good");
    for c in &preflushes {
        m.a.complete(T0, tag(c), IoResult::Ok).unwrap();
    }
    let flushed_after = std::cell::Cell::new(false);
    let sb0 = std::cell::Cell::new(false);
    pump(
        &mut m.a,
        |_| IoResult::Ok,
        |_| false,
        |_, c| match c {
            c if is_flush0(c) => flushed_after.set(true),
            IoCmd::Superblock { member, .. } if *member == MemberId(0) => {
                sb0.set(true);
                assert!(
                    flushed_after.get(),
                    "member 0's superblock (and its shorter log) before a flush of the write \
                     that made the sectors good"
                );
            }
            _ => {}
        },
    );
    assert!(sb0.get() && flushed_after.get());
}

#[test]
fn a_read_that_arrives_during_a_read_fix_waits_for_it() {
    // Found by the simulator (seed 53008984): a read of a range whose read fix was writing the
    // good data back to member 1 was sent to member 1 at once; the write-back then failed and
    // recorded the range as bad there, with the read still on its way to it. md's
    // handle_read_error freezes the array for fix_read_error: a new request waits until the
    // fix is over, and then reads around the recorded range.
    let mut m = Model::new(2, &[&[], &[]], false);
    m.prefer(1, 2);
    let read = |a: &mut A, id: u64| {
        a.submit(
            T0,
            Request {
                id,
                op: RequestOp::Read,
                sector: 200,
                sectors: 8,
                buffer: id as u32,
                fua: false,
            },
        )
        .unwrap();
    };
    let on = |c: &IoCmd<4>, member: u8, op: MemberOp| {
        matches!(c, IoCmd::Member(io) if io.member == MemberId(member) && io.op == op
            && io.sector < 208 && io.sector + u64::from(io.sectors) > 200)
    };
    read(&mut m.a, 1);
    // Member 1 fails the read, member 0 serves the re-read; the write-back to member 1 is held.
    let held = pump(
        &mut m.a,
        |c| {
            if on(c, 1, MemberOp::Read) {
                IoResult::Error
            } else {
                IoResult::Ok
            }
        },
        |c| on(c, 1, MemberOp::Write),
        |_, _| {},
    );
    assert_eq!(held.len(), 1, "the write-back to member 1: {held:?}");
    // A second read of the range while the write-back is out: nothing for it yet.
    read(&mut m.a, 2);
    let early = take(&mut m.a);
    assert!(
        !early.iter().any(|c| on(c, 1, MemberOp::Read)),
        "read sent to member 1 while its range was being written back: {early:?}"
    );
    for c in &early {
        m.a.complete(T0, tag(c), IoResult::Ok).unwrap();
    }
    // The write-back fails: the range is recorded as bad on member 1, which stays in sync.
    m.a.complete(T0, tag(&held[0]), IoResult::Error).unwrap();
    let mut late = Vec::new();
    pump(&mut m.a, |_| IoResult::Ok, |_| false, |_, c| late.push(*c));
    assert_eq!(m.list(1), vec![(200, 8)]);
    assert!(
        !late.iter().any(|c| on(c, 1, MemberOp::Read)),
        "read sent to member 1's recorded range: {late:?}"
    );
    assert!(late.iter().any(|c| on(c, 0, MemberOp::Read)), "{late:?}");
    let done: Vec<_> = std::iter::from_fn(|| m.a.poll_completion()).collect();
    assert_eq!(done.len(), 2, "{done:?}");
    assert!(done.iter().all(|c| c.outcome == Outcome::Ok), "{done:?}");
}

#[test]
fn a_read_answered_where_a_write_error_listed_the_range_meanwhile_is_read_again_elsewhere() {
    // A read of 200+8 is out on one member when a write over the same sectors fails there and
    // is recorded in that member's log (the member stays): what the read brings back may be
    // what the failed write left. It is read again from the other member (md returns it).
    let mut a = common::pair_with_logs();
    a.submit(common::T0, common::read(1, 200, 8)).unwrap();
    let ios = common::member_ios(&common::drain(&mut a));
    assert_eq!(ios.len(), 1);
    let first = ios[0];
    a.submit(common::T0, common::write(2, 200, 8)).unwrap();
    common::run_failing(
        &mut a,
        |c| matches!(c, IoCmd::Member(io) if io.member == first.member && io.op == MemberOp::Write),
    );
    assert!(
        !a.bad_blocks(first.member).is_empty(),
        "the write error is recorded, the member kept"
    );
    assert_eq!(a.member(first.member).unwrap().state, MemberState::InSync);
    a.complete(common::T0, first.tag, IoResult::Ok).unwrap();
    let again = common::member_ios(&common::run_to_idle(&mut a));
    assert!(
        again
            .iter()
            .any(|io| io.member != first.member && io.op == MemberOp::Read && io.sector == 200),
        "the piece is read again from the other member: {again:?}"
    );
    assert!(common::completions(&mut a).contains(&common::ok(1)));
}
