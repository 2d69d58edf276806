//! raid1-embedded's async volume (`AsyncMirror`) with its futures dropped at random polls,
//! among card pulls, insertions and swaps, transient card errors, a failing flash, scrubs,
//! steps, cleans and restarts, against a model.
//!
//! Both members answer `Pending` for a few polls per command (the card 1 to 3 per command, the
//! flash 1 per program and erase), so a future dropped after `n` polls stops anywhere: inside
//! a member command, between two commands of a request, inside a recovery window, a
//! reconfiguration or a superblock round. What the dropped call left is finished by the next
//! call (see the async binding's "Cancellation").
//!
//! The model: a write acknowledged (its future completed `Ok`) makes its version the only one
//! each of its sectors may read; a write dropped adds its version to what they may read, until
//! a read pins one of them (a dropped write's sectors read old or new, and stay so), which
//! holds until a member leaves (a member's failure may take an unacknowledged version with it,
//! as in md). Faults fall on one member at a time while the other is in sync, so every call
//! with the power on must succeed, and every read must return an allowed version. A restart
//! drops the volume (after a close, or none: a crash that keeps what reached the chips) and
//! mounts it again; after a close and the sync, two members in sync must agree sector by
//! sector. Nothing may hang (a poll budget per call) or panic.
#![no_main]

use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};

use embedded_sdmmc::{Block, BlockDevice, BlockIdx};
use libfuzzer_sys::fuzz_target;
use raid1_embedded::nor::asynch;
use raid1_embedded::sim::{BusyFlash, Countdown, NorSim, SdFaults, SdSim, Wait};
use raid1_embedded::volume::asynch::{AsyncMember, AsyncMirror};
use raid1_embedded::volume::{
    DATA_OFFSET, Member, MemberFault, MemberState, MirrorStorage, NOR, Options, SdMember,
    VolumeError, VolumeIdentity,
};

#[path = "common/volume.rs"]
#[allow(dead_code)]
mod volume;
use volume::{NOR_BLOCKS, SECTOR, SIZE, formatted, pattern};

/// The NOR member the images are formatted with (the blocking store, `volume::formatted`).
type Nor<'a> = raid1_embedded::nor::NorBlockStore<NorSim<'a, 4, SECTOR>, NOR_BLOCKS, NOR_SECTORS>;
const NOR_SECTORS: usize = 16;
/// The async NOR store over a flash whose programs and erases wait a poll.
type AsyncNor<'a> =
    asynch::NorBlockStore<BusyFlash<NorSim<'a, 4, SECTOR>>, NOR_BLOCKS, NOR_SECTORS>;
type Vol<'b, 'a> = AsyncMirror<'b, SlowCard<'a>, AsyncNor<'a>>;

const ID: VolumeIdentity = VolumeIdentity {
    uuid: *b"volume-async-fuz",
    name: "va",
    ctime: 1_700_000_000,
};

/// Polls a call may take before it counts as hung.
const POLL_BUDGET: u32 = 2_000_000;

/// A card whose every command waits `polls` polls before it is done.
struct SlowCard<'a> {
    card: SdMember<SdSim<'a>>,
    polls: u32,
}

impl AsyncMember for SlowCard<'_> {
    async fn read(&mut self, sector: u64, blocks: &mut [Block]) -> Result<(), MemberFault> {
        Wait(self.polls).await;
        let r = self.card.read(sector, blocks);
        if trace() {
            eprintln!(
                "  card read {sector}+{}: {r:?} {}",
                blocks.len(),
                what_is(&blocks[0])
            );
        }
        r
    }
    async fn write(&mut self, sector: u64, blocks: &[Block]) -> Result<(), MemberFault> {
        Wait(self.polls).await;
        let r = self.card.write(sector, blocks);
        if trace() {
            eprintln!(
                "  card write {sector}+{}: {r:?} {}",
                blocks.len(),
                what_is(&blocks[0])
            );
        }
        r
    }
    async fn sectors(&mut self) -> Result<u64, MemberFault> {
        self.card.sectors()
    }
    fn reinit(&mut self) {
        self.card.reinit();
    }
}

/// Poll `f` to its end, or drop it after `drop_after` polls (`None` then).
fn drive<T>(what: &str, f: impl Future<Output = T>, drop_after: Option<u32>) -> Option<T> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut f = pin!(f);
    for polls in 0..POLL_BUDGET {
        if drop_after == Some(polls) {
            return None;
        }
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return Some(v);
        }
    }
    panic!("{what} did not complete in {POLL_BUDGET} polls: the volume hangs");
}

/// Poll `f` to its end.
fn done<T>(what: &str, f: impl Future<Output = T>) -> T {
    drive(what, f, None).expect("polled to its end")
}

/// What each sector may read.
struct Model {
    /// The acknowledged version, then the versions of writes dropped since.
    allowed: Vec<Vec<u32>>,
    /// The version a read returned, which the sector keeps while both members stay.
    pinned: Vec<Option<u32>>,
}

impl Model {
    fn new() -> Self {
        Model {
            allowed: vec![vec![0]; SIZE as usize],
            pinned: vec![None; SIZE as usize],
        }
    }

    fn version(&self, s: u64, b: &Block) -> Option<u32> {
        self.allowed[s as usize]
            .iter()
            .copied()
            .find(|&v| pattern(s, v).contents == b.contents)
    }

    /// `b` as read from sector `s`.
    fn read(&mut self, s: u64, b: &Block, ctx: &str) {
        let v = self.version(s, b);
        let i = s as usize;
        assert!(
            v.is_some() && (self.pinned[i].is_none() || self.pinned[i] == v),
            "{ctx}: sector {s} reads {v:?}, allowed {:?}, pinned {:?}; it holds {}",
            self.allowed[i],
            self.pinned[i],
            what_is(b)
        );
        self.pinned[i] = v;
    }

    fn acknowledged(&mut self, s: u64, v: u32) {
        self.allowed[s as usize] = vec![v];
        self.pinned[s as usize] = Some(v);
    }

    /// A write of version `v` dropped: the sector reads old or new from now on.
    fn dropped(&mut self, s: u64, v: u32) {
        self.allowed[s as usize].push(v);
        self.pinned[s as usize] = None;
    }

    /// A member left: what it held alone of a dropped write may be gone with it.
    fn unpin(&mut self) {
        self.pinned.fill(None);
    }
}

/// Whether to print each operation and the volume's health before it (`VOLUME_ASYNC_TRACE`
/// set), to follow a failing input.
/// Whether nothing on the card names the volume: its superblock (sector 8) reads as an error
/// (a failed write tore it so) and its copy (sector 9) does not read as a superblock either. Such
/// a card is refused at its insertion as one that answers nothing (docs/EMBEDDED.md,
/// "Failures"), and stays out.
fn card_unknowable(dev: &SdSim) -> bool {
    dev.unreadable(8)
        && (dev.unreadable(9)
            || dev
                .with_blocks(|b| raid1_superblock::Superblock::<2>::parse(&b[9].contents).is_err()))
}

fn trace() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("VOLUME_ASYNC_TRACE").is_some())
}

/// Which sector's version `b` holds, if any (for a failure's message).
fn what_is(b: &Block) -> String {
    for s in 0..SIZE {
        for v in 0..4096 {
            if pattern(s, v).contents == b.contents {
                return format!("version {v} of sector {s}");
            }
        }
    }
    "no version of any sector".into()
}

/// Every sector of the volume, read and checked.
fn check_all(vol: &mut Vol<'_, '_>, model: &mut Model, ctx: &str) {
    for s in 0..SIZE {
        let mut b = [Block::new()];
        done("a read", vol.read(s, &mut b))
            .unwrap_or_else(|e| panic!("{ctx}: read {s}: {e} ({:?})", vol.health()));
        model.read(s, &b[0], ctx);
    }
}

/// Read `len` sectors at `sector`, to the end or dropped after `drop_after` polls, and check
/// what a completed read returns; it must succeed unless `may_fail`.
fn read(
    vol: &mut Vol<'_, '_>,
    model: &mut Model,
    sector: u64,
    len: u64,
    drop_after: Option<u32>,
    may_fail: bool,
    ctx: &str,
) {
    let mut b = vec![Block::new(); len as usize];
    match drive("a read", vol.read(sector, &mut b), drop_after) {
        Some(Ok(())) => {
            for (i, b) in b.iter().enumerate() {
                model.read(sector + i as u64, b, ctx);
            }
        }
        Some(Err(e)) => assert!(may_fail, "{ctx}: read: {e} ({:?})", vol.health()),
        None => {}
    }
}

/// Steps until the long work is over.
fn finish(vol: &mut Vol<'_, '_>, ctx: &str) {
    for _ in 0..10_000 {
        let p = done("a step", vol.step(8))
            .unwrap_or_else(|e| panic!("{ctx}: step: {e} ({:?})", vol.health()));
        if !p.busy {
            return;
        }
    }
    panic!("{ctx}: the sync does not end");
}

/// Two members in sync hold the same blocks.
fn members_agree(vol: &mut Vol<'_, '_>, ctx: &str) {
    let h = vol.health();
    if h.sd != MemberState::InSync || h.nor != MemberState::InSync {
        return;
    }
    vol.with_members(|sd, nor| {
        for s in 0..SIZE {
            let mut a = [Block::new()];
            sd.card
                .dev
                .read(&mut a, BlockIdx((DATA_OFFSET + s) as u32))
                .unwrap();
            let mut b = [0u8; 512];
            let n = u32::try_from(DATA_OFFSET + s).unwrap();
            done("a flash read", nor.read_block(n, &mut b)).unwrap();
            assert!(
                a[0].contents == b,
                "{ctx}: members differ at sector {s}: the card holds {}, the flash {}",
                what_is(&a[0]),
                what_is(&Block { contents: b })
            );
        }
    });
}

fuzz_target!(|data: &[u8]| {
    let (mut sd_mem, mut nor_mem) = formatted(ID).clone();
    let mut wear = vec![0u32; NOR_SECTORS];
    let seed = u64::from(data.first().copied().unwrap_or(0));
    let base = SdFaults {
        early_multi_block_ack: true,
        // A driver that must be told of an insertion (embedded-sdmmc's `SdCard`) in half
        // the inputs.
        reinit_on_insert: seed & 1 != 0,
        ..SdFaults::default()
    };
    let sim = SdSim::new(&mut sd_mem, seed ^ 2);
    sim.set_faults(base);
    let mut sd = SlowCard {
        card: SdMember::with_reinit(sim, SdSim::mark_card_uninit),
        polls: 1 + (seed >> 1) as u32 % 3,
    };
    let flash = BusyFlash::new(NorSim::new(&mut nor_mem, &mut wear, seed ^ 3), 1);
    let mut nor = match done("the NOR mount", AsyncNor::mount(flash)) {
        Ok(n) => n,
        Err(_) => panic!("the NOR mount"),
    };
    let mut model = Model::new();
    let mut version = 0u32;
    let mut now = 1_000_000_000u64;
    // Whether the card is in its slot (the volume learns it was pulled at its next command).
    let mut card_in = true;
    let mut ops = data.iter().skip(1).copied();
    let mut closed = false;
    let mut mounts = 0u32;
    loop {
        mounts += 1;
        let mut storage: MirrorStorage = MirrorStorage::new();
        let mut place = None;
        let vol = match done(
            "the mount",
            AsyncMirror::assemble_in(&mut place, sd, nor, &mut storage, Options::MD),
        ) {
            Ok(vol) => vol,
            Err(e) => panic!("mount {mounts}: {e}"),
        };
        let ctx = format!("mount {mounts}");
        let h = vol.health();
        if trace() {
            eprintln!("{ctx}: {h:?}");
        }
        assert!(
            h.sd == MemberState::InSync || h.nor == MemberState::InSync,
            "{ctx}: no member in sync: {h:?}"
        );
        assert!(!h.split_brain, "{ctx}: a split brain: {h:?}");
        check_all(vol, &mut model, &ctx);
        if closed {
            finish(vol, &ctx);
            members_agree(vol, &ctx);
        }
        let mut restart = None;
        while let Some(op) = ops.next() {
            let arg = ops.next().unwrap_or(0);
            let h = vol.health();
            let sd_ok =
                h.sd == MemberState::InSync && card_in && !h.wrong_card && !h.card_unchecked;
            let nor_ok = h.nor == MemberState::InSync;
            // The card, holding the only copy, reported inserted by a call dropped before it
            // read the card: no command reaches it until the insertion is reported again, so
            // a call may fail (a write then was not acknowledged).
            let may_fail = h.card_unchecked && !nor_ok;
            // Dropped after 1 to 64 polls, or run to its end.
            let drop_after = (arg & 0x80 != 0).then_some(1 + u32::from(arg & 0x3f));
            let sector = u64::from(arg) * 7 % SIZE;
            let len = (1 + u64::from(op % 4)).min(SIZE - sector);
            let ctx = format!("mount {mounts}, op {} arg {arg}", op % 24);
            if trace() {
                eprintln!("{ctx}: {h:?}");
            }
            match op % 24 {
                0..=7 | 23 => {
                    version += 1;
                    let blocks: Vec<Block> =
                        (0..len).map(|i| pattern(sector + i, version)).collect();
                    match drive("a write", vol.write(sector, &blocks), drop_after) {
                        Some(Ok(())) => {
                            (0..len).for_each(|i| model.acknowledged(sector + i, version))
                        }
                        Some(Err(e)) if !may_fail => panic!("{ctx}: write: {e} ({h:?})"),
                        Some(Err(_)) | None => {
                            (0..len).for_each(|i| model.dropped(sector + i, version))
                        }
                    }
                }
                8 | 9 => {
                    read(vol, &mut model, sector, len, drop_after, may_fail, &ctx);
                }
                10 => {
                    let budget = 1 + u32::from(arg % 8);
                    if let Some(Err(e)) = drive("a step", vol.step(budget), drop_after) {
                        assert!(may_fail, "{ctx}: step: {e} ({h:?})");
                    }
                }
                11 => {
                    now += 100_000_000 * (1 + u64::from(arg % 8));
                    if let Some(Err(e)) = drive("a tick", vol.tick(now), drop_after) {
                        assert!(may_fail, "{ctx}: tick: {e} ({h:?})");
                    }
                }
                12 => {
                    if let Some(Err(e)) = drive("a clean", vol.clean(), drop_after) {
                        assert!(may_fail, "{ctx}: clean: {e} ({h:?})");
                    }
                }
                // The card pulled; card-detect reports it, or not (the next command finds out).
                13 if nor_ok && card_in => {
                    card_in = false;
                    model.unpin();
                    vol.with_members(|sd, _| sd.card.dev.remove());
                    if arg & 1 == 0 {
                        if let Some(Err(e)) = drive("sd_removed", vol.sd_removed(), drop_after) {
                            panic!("{ctx}: sd_removed: {e} ({h:?})");
                        }
                    }
                }
                // A card inserted and reported: the volume's card put back, or (with the flash
                // in sync) another card, which is rebuilt in full.
                // With `arg & 0x40`, the card's first read fails (a contact that bounced): the
                // insertion may be refused (`Probe`), and is reported again.
                14 => {
                    let other = arg % 4 == 3 && nor_ok;
                    let card: Vec<Block> =
                        vol.with_members(|sd, _| sd.card.dev.with_blocks(|b| b.to_vec()));
                    if !card_in || other {
                        model.unpin();
                        vol.with_members(|sd, _| {
                            if other {
                                sd.card.dev.replace_with_new_card();
                                sd.card.dev.set_faults(base);
                            } else {
                                sd.card.dev.insert();
                            }
                        });
                        card_in = true;
                    }
                    let glitch = arg & 0x40 != 0;
                    if glitch {
                        vol.with_members(|sd, _| sd.card.dev.set_fail_read(Countdown::after(0)));
                    }
                    let r = drive("sd_inserted_begin", vol.sd_inserted_begin(), drop_after);
                    vol.with_members(|sd, _| sd.card.dev.set_fail_read(Countdown::OFF));
                    if trace() {
                        eprintln!("  inserted (another card: {other}, glitch: {glitch}): {r:?}");
                    }
                    match r {
                        Some(Ok(())) | None => {}
                        Some(Err(VolumeError::Probe)) if glitch => {
                            match done("sd_inserted_begin", vol.sd_inserted_begin()) {
                                Ok(()) => {}
                                Err(VolumeError::Probe)
                                    if vol.with_members(|sd, _| card_unknowable(&sd.card.dev)) => {}
                                Err(e) => panic!("{ctx}: inserted again: {e}"),
                            }
                        }
                        // The flash failed in the insertion (a command a dropped write left,
                        // done again, failed on it): the card held the only copy, and the
                        // other card is refused. The volume's card is put back.
                        Some(Err(VolumeError::WrongCard)) if other => {
                            assert!(vol.health().wrong_card, "{ctx}: {:?}", vol.health());
                            vol.with_members(|sd, _| {
                                sd.card.dev.with_blocks(|b| b.clone_from_slice(&card));
                                sd.card.dev.insert();
                            });
                            done("sd_inserted_begin", vol.sd_inserted_begin())
                                .unwrap_or_else(|e| panic!("{ctx}: the card put back: {e}"));
                            assert!(!vol.health().wrong_card, "{ctx}: {:?}", vol.health());
                        }
                        Some(Err(VolumeError::Probe))
                            if vol.with_members(|sd, _| card_unknowable(&sd.card.dev)) => {}
                        Some(Err(e)) => panic!("{ctx}: sd_inserted_begin: {e} ({h:?})"),
                    }
                }
                // One transient card read error (a bus CRC), then a read or a write.
                15 | 16 if nor_ok && card_in => {
                    model.unpin();
                    vol.with_members(|sd, _| {
                        sd.card
                            .dev
                            .set_fail_read(Countdown::after(u32::from(arg % 3)))
                    });
                    if op % 24 == 15 {
                        read(vol, &mut model, sector, len, drop_after, may_fail, &ctx);
                    } else if let Some(Err(e)) = drive("a step", vol.step(4), drop_after) {
                        assert!(may_fail, "{ctx}: step: {e} ({h:?})");
                    }
                    vol.with_members(|sd, _| sd.card.dev.set_fail_read(Countdown::OFF));
                }
                // A card write fails (the card is failed), or the flash fails for good until
                // its rejoin, under a write.
                17 | 18 if (op % 24 == 17 && nor_ok && card_in) || (op % 24 == 18 && sd_ok) => {
                    model.unpin();
                    vol.with_members(|sd, nor| {
                        if op % 24 == 17 {
                            sd.card.dev.set_faults(SdFaults {
                                fail_write: Countdown::after(u32::from(arg % 3)),
                                ..base
                            });
                        } else {
                            nor.flash_mut().flash.faults.broken = true;
                        }
                    });
                    version += 1;
                    let blocks: Vec<Block> =
                        (0..len).map(|i| pattern(sector + i, version)).collect();
                    let r = drive("a write", vol.write(sector, &blocks), drop_after);
                    if trace() {
                        eprintln!(
                            "  write {sector}+{len} v{version} under a fault: {r:?}, then {:?}",
                            vol.health()
                        );
                    }
                    match r {
                        Some(Ok(())) => {
                            (0..len).for_each(|i| model.acknowledged(sector + i, version))
                        }
                        Some(Err(e)) => panic!("{ctx}: write under a fault: {e} ({h:?})"),
                        None => (0..len).for_each(|i| model.dropped(sector + i, version)),
                    }
                    vol.with_members(|sd, nor| {
                        sd.card.dev.set_faults(base);
                        nor.flash_mut().flash.faults.broken = false;
                    });
                    // The firmware's main loop steps the volume: what the write dropped left
                    // is done, and a member its fault failed is known as failed before the
                    // next operation chooses what it may do.
                    done("a step", vol.step(1))
                        .unwrap_or_else(|e| panic!("{ctx}: step after a fault: {e}"));
                }
                19 => match drive("rejoin_begin", vol.rejoin_begin(NOR), drop_after) {
                    Some(Ok(())) | None => {}
                    Some(Err(e)) => assert!(may_fail, "{ctx}: rejoin of the flash: {e} ({h:?})"),
                },
                20 => match drive("scrub_begin", vol.scrub_begin(arg & 1 != 0), drop_after) {
                    Some(Ok(())) | Some(Err(VolumeError::Busy)) | None => {}
                    Some(Err(e)) => assert!(may_fail, "{ctx}: scrub_begin: {e} ({h:?})"),
                },
                21 if !may_fail => finish(vol, &ctx),
                22 => {
                    restart = Some(arg & 1 != 0);
                    break;
                }
                // A fault whose condition does not hold: nothing.
                _ => {}
            }
            let h = vol.health();
            assert!(
                h.sd == MemberState::InSync || h.nor == MemberState::InSync,
                "{ctx}: no member in sync: {h:?}"
            );
        }
        let ctx = format!("mount {mounts}, at its end");
        // Before a restart, or at the end of the input: the card back in its slot (a board
        // starts with its card in), the volume closed or dropped.
        let close = restart.unwrap_or(true);
        let h = place.as_ref().expect("the volume").health();
        let may_fail = h.card_unchecked && h.nor != MemberState::InSync;
        if close {
            match done("close_in", AsyncMirror::close_in(&mut place)) {
                Some(Ok(members)) => (sd, nor) = members,
                Some(Err(refused)) if may_fail => (sd, nor) = refused.driver,
                Some(Err(refused)) => panic!("{ctx}: close: {}", refused.error),
                None => unreachable!("the place holds the volume"),
            }
        } else {
            (sd, nor) = place.take().expect("the volume").into_members();
        }
        closed = close;
        model.unpin();
        if !card_in {
            sd.card.dev.insert();
            card_in = true;
        }
        // The board starts again: its driver starts with the card in the slot.
        sd.card.dev.mark_card_uninit();
        if restart.is_none() {
            break;
        }
    }
    // The last mount: everything acknowledged is there, and the members agree.
    let mut storage: MirrorStorage = MirrorStorage::new();
    let mut place = None;
    let vol = match done(
        "the last mount",
        AsyncMirror::assemble_in(&mut place, sd, nor, &mut storage, Options::MD),
    ) {
        Ok(vol) => vol,
        Err(e) => panic!("the last mount: {e}"),
    };
    if trace() {
        eprintln!("the last mount: {:?}", vol.health());
    }
    check_all(vol, &mut model, "the last mount");
    finish(vol, "the last mount");
    members_agree(vol, "the last mount");
});
