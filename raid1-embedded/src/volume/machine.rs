//! The volume's decisions without its I/O, shared by the blocking binding ([`Mirror`]) and the
//! async one ([`AsyncMirror`](super::asynch::AsyncMirror)).
//!
//! Each binding owns its two members and a [`Core`] (the engine and the volume's metadata); the
//! core says which member I/O to do next, the binding does it (blocking or awaited) and reports
//! the result. Three layers:
//! - a [`Job`] carries out one engine command as member reads and writes, one at a time (a
//!   superblock update is two writes, a discard one write per sector);
//! - a [`Task`] is a loop over engine commands: a pump (with a budget, and with the sync pacing
//!   of [`Mirror::step`]), a logical request, a reconfiguration of the quiesced array, a close;
//! - an [`Asker`] ([`Mount`], [`Rejoin`]) asks the members for metadata blocks and sizes before
//!   the engine is set up or a member is added.

use super::*;

/// The engine and what the binding keeps beside it: everything but the members.
pub(super) struct Core<'b> {
    pub(super) array: Array<'b, 2, REQUESTS, 1>,
    /// Sync buffers: member 0's window, then member 1's.
    pub(super) sync: &'b mut [Block],
    pub(super) meta: Meta,
    pub(super) now: Instant,
    next_id: u64,
    pub(super) synced_sectors: u64,
    /// The handle of the request whose buffer the running task lends (see [`Core::next`]):
    /// a command naming another request's buffer is an orphan's (its caller's future was
    /// dropped, and the buffer with it).
    lent: Option<u32>,
    /// A task froze the array and has not unfrozen it yet (a close, or a reconfiguration
    /// whose future was dropped): see [`Core::thaw`].
    frozen: bool,
    /// The mount kept a damaged NOR store as the freshest copy ([`Health::nor_damaged`]).
    pub(super) nor_damaged: bool,
    /// The card's copy of its superblock holds the card's last superblock round, whole (see
    /// [`Core::writes_card_copy`]). False until a round writes it, after a round that did not,
    /// after any failed round, and whenever the card is added.
    card_copy_current: bool,
    /// The flash's superblock was just written with the flash in sync or rebuilt in full: a
    /// damaged NOR store may let go of the record of its damage ([`Core::take_release_nor`]).
    release_nor: bool,
    /// The events the card's superblock and its copy may carry (lowest, highest): those of
    /// the last one it took (read at the mount, written since), widened by each write to it
    /// that failed since (it may have landed) and by a round that did without the copy (the
    /// copy keeps the round before: read when the superblock cannot be). A card inserted
    /// while the volume holds one in place must carry events in this range to be the same
    /// card ([`Core::rejoin`]); no other card can have taken them, the volume having one card
    /// slot (an image of this card can). Empty (`(MAX, 0)`) when the mount read no metadata
    /// from the card.
    card_events: (u64, u64),
    /// The card in the slot is not the one the volume holds in place, and that one held the
    /// only copy in sync: every command to the card fails until the volume's card is put back
    /// ([`Health::wrong_card`](super::Health::wrong_card)).
    pub(super) wrong_card: bool,
    /// A member holds writes the volume never took, and is kept out untouched
    /// ([`Health::split_brain`](super::Health::split_brain)).
    pub(super) split_brain: bool,
    /// A card was inserted and is not known yet for the card in place, nor added: see
    /// [`Core::card_fenced`].
    card_unknown: bool,
    /// Members (bit `1 << id`) a data write failed on in a request not yet over: the engine
    /// fails such a member when the whole request is over, not at once, and until then the
    /// blocks that write tore read as neither version. A request whose caller is gone never
    /// copies from it (see [`Core::serves`]). Cleared when no request is left in the engine
    /// (see `request_next`) and when a member is added (see the plan).
    torn: u8,
}

/// The member beside `id` (of two).
fn other(id: MemberId) -> MemberId {
    MemberId(1 - id.0.min(1))
}

/// The buffer handle of request `id` (the engine gives it back in each member I/O).
fn handle(id: u64) -> u32 {
    id as u32
}

/// Where the bytes of one member I/O are.
#[derive(Clone, Copy)]
pub(super) enum Buf {
    /// The logical request's buffer, from this sector of it on.
    Request(usize),
    /// The sync buffer of this member.
    Sync(usize),
    /// The binding's scratch block (rendered metadata, zeros).
    Scratch,
}

/// One member I/O for the binding to do.
#[derive(Clone, Copy)]
pub(super) struct Io {
    pub(super) member: MemberId,
    pub(super) write: bool,
    pub(super) sector: u64,
    buf: Buf,
    sectors: usize,
}

impl Io {
    /// A write of the scratch block.
    fn scratch(member: MemberId, sector: u64) -> Self {
        Io {
            member,
            write: true,
            sector,
            buf: Buf::Scratch,
            sectors: 1,
        }
    }

    /// The blocks a read fills; `None` when the command names a buffer that is not there.
    pub(super) fn dst<'x>(
        &self,
        sync: &'x mut [Block],
        req: &'x mut ReqBuf<'_>,
        scratch: &'x mut [Block],
    ) -> Option<&'x mut [Block]> {
        let n = self.sectors;
        match (self.buf, req) {
            (Buf::Request(o), ReqBuf::Read(b)) => b.get_mut(o..o + n),
            (Buf::Sync(m), _) => {
                let w = sync.len() / 2;
                sync.get_mut(m * w..m * w + n)
            }
            (Buf::Scratch, _) => scratch.get_mut(..n),
            _ => None,
        }
    }

    /// The blocks a write takes (a read request's buffer too: a read error corrected by
    /// rewriting the block from the other member).
    pub(super) fn src<'x>(
        &self,
        sync: &'x [Block],
        req: &'x ReqBuf<'_>,
        scratch: &'x [Block],
    ) -> Option<&'x [Block]> {
        let n = self.sectors;
        match (self.buf, req) {
            (Buf::Request(o), ReqBuf::Write(b)) => b.get(o..o + n),
            (Buf::Request(o), ReqBuf::Read(b)) => b.get(o..o + n),
            (Buf::Sync(m), _) => {
                let w = sync.len() / 2;
                sync.get(m * w..m * w + n)
            }
            (Buf::Scratch, _) => scratch.get(..n),
            _ => None,
        }
    }
}

/// One engine command being carried out: the member I/O it needs, one at a time, stopping at
/// the first that fails.
#[derive(Clone, Copy)]
pub(super) struct Job {
    cmd: IoCmd<2>,
    stage: u32,
    ok: bool,
}

impl Job {
    fn new(cmd: IoCmd<2>) -> Self {
        Job {
            cmd,
            stage: 0,
            ok: true,
        }
    }

    /// The result of the member I/O that [`Core::job_next`] gave.
    pub(super) fn done(&mut self, ok: bool) {
        self.ok &= ok;
    }

    /// The same command from its first member I/O on: what is left to do when the future that
    /// carried it out was dropped during its member I/O (each member I/O of a command may be
    /// done twice: a write writes the same blocks, a read reads them again).
    pub(super) fn again(&self) -> Self {
        Job::new(self.cmd)
    }
}

/// Issue commands until none is left or `budget` sync commands (at least one) went out. With
/// `pace`, the engine time that the next sync window waits for passes (see [`SYNC_PACE_NS`]).
pub(super) struct Pump {
    budget: u32,
    sync: u32,
    other: u32,
    pace: bool,
}

/// A reconfiguration of the quiesced array, each change's metadata written before the next.
#[derive(Clone, Copy)]
pub(super) struct Plan {
    remove: Option<MemberId>,
    add: [Option<(MemberId, AddMember)>; 2],
}

/// A loop over engine commands (see the module documentation).
pub(super) enum Task {
    Pump(Pump),
    Request {
        id: u64,
        idle: u32,
        /// Not handed to the engine yet: its slots were all taken (see [`Core::submitted`]).
        queued: Option<Request>,
    },
    Close {
        stage: u8,
        idle: u32,
        pump: Option<Pump>,
    },
    /// Freeze, run the plan, unfreeze (also after a failure in the plan), then one pump.
    Setup {
        plan: Plan,
        stage: u8,
        err: Option<VolumeError>,
        pump: Option<Pump>,
        /// Rounds waited, frozen, for the array to drain.
        idle: u32,
    },
}

impl Task {
    /// Metadata and request I/O, and at most one sync command.
    pub(super) fn pump() -> Self {
        Task::Pump(Pump::new(0, false))
    }

    /// [`Mirror::step`]: up to `budget` sync commands, with the pacing timer.
    pub(super) fn step(budget: u32) -> Self {
        Task::Pump(Pump::new(budget.max(1), true))
    }

    pub(super) fn close() -> Self {
        Task::Close {
            stage: 0,
            idle: 0,
            pump: None,
        }
    }

    pub(super) fn setup(plan: Plan) -> Self {
        Task::Setup {
            plan,
            stage: 0,
            err: None,
            pump: None,
            idle: 0,
        }
    }

    /// The binding issued the command [`Core::next`] gave; `sync` when it was sync I/O.
    pub(super) fn issued(&mut self, sync: bool) {
        let pump = match self {
            Task::Pump(p) => p,
            Task::Close { pump: Some(p), .. } | Task::Setup { pump: Some(p), .. } => p,
            _ => return,
        };
        if sync {
            pump.sync += 1;
        } else {
            pump.other += 1;
        }
    }

    /// Sync commands issued, for [`Progress::commands`].
    pub(super) fn commands(&self) -> u32 {
        match self {
            Task::Pump(p) => p.sync,
            _ => 0,
        }
    }
}

impl Pump {
    fn new(budget: u32, pace: bool) -> Self {
        Pump {
            budget,
            sync: 0,
            other: 0,
            pace,
        }
    }
}

#[cfg(feature = "format")]
impl Plan {
    /// Only keep the NOR member write-mostly (a new volume).
    pub(super) const KEEP: Plan = Plan {
        remove: None,
        add: [None, None],
    };
}

impl<'b> Core<'b> {
    /// The running state of a volume whose engine was just created: see [`Core::start`].
    #[cfg(feature = "format")]
    pub(super) fn new(array: Array<'b, 2, REQUESTS, 1>, sync: &'b mut [Block], meta: Meta) -> Self {
        let mut core = Core::unmounted(sync);
        core.array = array;
        core.meta = meta;
        core.start();
        core
    }

    /// A volume's running state before its mount: an empty engine (every request fails),
    /// which the mount assembles in its place.
    pub(super) fn unmounted(sync: &'b mut [Block]) -> Self {
        Core {
            array: Array::empty(),
            sync,
            meta: Meta {
                uuid: Uuid([0; 16]),
                name: SetName([0; 32]),
                ctime: MdTime::from_seconds(0),
                data_sectors: 0,
                chunk_sectors: 0,
                member_sectors: [0, 0],
            },
            now: Instant(1),
            next_id: 1,
            synced_sectors: 0,
            lent: None,
            frozen: false,
            nor_damaged: false,
            card_copy_current: false,
            release_nor: false,
            card_events: (u64::MAX, 0),
            wrong_card: false,
            split_brain: false,
            card_unknown: false,
            torn: 0,
        }
    }

    /// The engine was just created or assembled: the clock and request ids start over,
    /// nothing synced yet, and the sync is paced.
    fn start(&mut self) {
        self.now = Instant(1);
        self.next_id = 1;
        self.synced_sectors = 0;
        let window = u64::from(self.array.config().sync_window_sectors);
        self.array
            .set_sync_rate(Some(window * 1_000_000_000 / SYNC_PACE_NS));
    }
}

impl Core<'_> {
    /// Whether `job` uses the binding's scratch block (the binding then lends one from a
    /// frame of its own, off the stack of data I/O): metadata, zeros, an orphan's reads.
    pub(super) fn needs_scratch(&self, job: &Job) -> bool {
        match job.cmd {
            IoCmd::Member(io) => io.op == MemberOp::Discard || self.orphan(io.buffer),
            IoCmd::Superblock { .. } | IoCmd::BitmapPage { .. } => true,
            IoCmd::Compare { .. } => false,
        }
    }

    /// The next member I/O of `job`; `None` when the job is over (then [`Core::job_finish`]).
    /// Metadata is rendered into `scratch` (one block, see [`Core::needs_scratch`]).
    pub(super) fn job_next(&mut self, job: &mut Job, scratch: &mut [Block]) -> Option<Io> {
        if !job.ok {
            return None;
        }
        let stage = job.stage;
        job.stage += 1;
        // A superblock round to the card may land from its first write on: its events join
        // the card's identity range now, not when it ends (an insertion checked while it is
        // in flight, its async caller gone, must know them; see `card_events`).
        if let IoCmd::Superblock {
            member: SD, state, ..
        } = job.cmd
        {
            if stage == 0 && !self.card_fenced() {
                self.card_may_hold(state.events);
            }
        }
        match self.plan_io(&job.cmd, stage, scratch) {
            Ok(Some(io)) if !(io.member == SD && self.card_fenced()) => Some(io),
            Ok(None) => None,
            // Another card is in the slot than the one in place, or the card the command was
            // for was failed since (a command a dropped async call left, done again after an
            // insertion found another card): the card in the slot is not written or read.
            Ok(Some(_)) | Err(MemberFault) => {
                job.ok = false;
                None
            }
        }
    }

    /// A command names the buffer of a request whose caller is gone (an async future
    /// dropped, its buffer with it): see [`Core::needs_scratch`].
    fn orphan(&self, buffer: Buffer) -> bool {
        matches!(buffer, Buffer::Request { handle, .. } if self.lent != Some(handle))
    }

    /// The card's superblock may carry `events` now: the identity range takes them in.
    fn card_may_hold(&mut self, events: u64) {
        let (low, high) = self.card_events;
        self.card_events = (low.min(events), high.max(events));
    }

    /// No command reaches the card in the slot: it is not the card in place (see
    /// [`Core::wrong_card`]), the card in place was failed, or a card was inserted that is
    /// not known yet for the card in place (its metadata did not read, or it waits for its
    /// re-add): a command a dropped async call left, done again, would write the volume's
    /// metadata to another card, which would then pass for the volume's.
    fn card_fenced(&self) -> bool {
        self.wrong_card || self.card_unknown || self.state(SD) == MemberState::Faulty
    }

    /// The member I/O at `stage` of `cmd`; `Ok(None)` when the command needs no more. Its
    /// own frame keeps the metadata it renders off the stack of the member I/O.
    #[inline(never)]
    fn plan_io(
        &self,
        cmd: &IoCmd<2>,
        stage: u32,
        scratch: &mut [Block],
    ) -> Result<Option<Io>, MemberFault> {
        // Writes of one block rendered (or zeroed) into the scratch block.
        let (member, sector) = match *cmd {
            IoCmd::Member(io) => {
                let at = DATA_OFFSET + u64::from(io.sector);
                let buf = match (io.op, io.buffer) {
                    (MemberOp::Flush, _) => return Ok(None),
                    (MemberOp::Discard, _) if stage < io.sectors => {
                        scratch.first_mut().ok_or(MemberFault)?.contents.fill(0);
                        return Ok(Some(Io::scratch(io.member, at + u64::from(stage))));
                    }
                    (MemberOp::Discard, _) => return Ok(None),
                    // A request whose caller is gone (an async future dropped, its buffer
                    // with it). A read is done all the same, block by block into the scratch
                    // block, so that the engine sees what the member does (the data is not
                    // wanted). A write's blocks are gone: the member is made to hold what the
                    // other member holds there, block by block through the scratch block
                    // (read there, written here), so that the two agree on the old or the
                    // new version, as after a write cut by a power loss; when the other
                    // member cannot serve those blocks, this one keeps what it has.
                    (op, buffer @ Buffer::Request { .. }) if self.orphan(buffer) => {
                        if op == MemberOp::Read {
                            if stage >= io.sectors {
                                return Ok(None);
                            }
                            return Ok(Some(Io {
                                write: false,
                                ..Io::scratch(io.member, at + u64::from(stage))
                            }));
                        }
                        let (k, write) = (stage / 2, stage % 2 == 1);
                        let peer = other(io.member);
                        if k >= io.sectors
                            || !self.serves(peer, io.sector.saturating_add(Sector::from(k)))
                        {
                            return Ok(None);
                        }
                        return Ok(Some(Io {
                            write,
                            ..Io::scratch(if write { io.member } else { peer }, at + u64::from(k))
                        }));
                    }
                    _ if stage > 0 => return Ok(None),
                    (_, Buffer::Request { offset, .. }) => Buf::Request(offset as usize),
                    (_, Buffer::Sync { member, .. }) => Buf::Sync(usize::from(member.0)),
                    (_, Buffer::None) => return Err(MemberFault),
                };
                return Ok(Some(Io {
                    member: io.member,
                    write: io.op == MemberOp::Write,
                    sector: at,
                    buf,
                    sectors: io.sectors as usize,
                }));
            }
            IoCmd::Superblock { member, state, .. } => {
                let copy = u32::from(member == SD && self.writes_card_copy(&state));
                let block = scratch.first_mut().ok_or(MemberFault)?;
                if stage <= copy {
                    render_superblock(&self.meta, member, &state, block)?;
                    let at = if stage < copy {
                        SUPERBLOCK_COPY_SECTOR
                    } else {
                        SUPERBLOCK_SECTOR
                    };
                    (member, at)
                } else if stage == copy + 1 {
                    render_bitmap(&self.meta, self.array.bitmap_page(0), &state, block)?;
                    (member, BITMAP_SECTOR)
                } else {
                    return Ok(None);
                }
            }
            IoCmd::BitmapPage { member, .. } if stage == 0 => {
                // The header shares the sector with the bits: it is rewritten with the
                // state the engine would write to this member now.
                let block = scratch.first_mut().ok_or(MemberFault)?;
                let st = self.array.superblock_for(member).ok_or(MemberFault)?;
                render_bitmap(&self.meta, self.array.bitmap_page(0), &st, block)?;
                (member, BITMAP_SECTOR)
            }
            IoCmd::BitmapPage { .. } | IoCmd::Compare { .. } => return Ok(None),
        };
        Ok(Some(Io::scratch(member, sector)))
    }

    /// Whether the card's superblock round with `state` writes the copy of the superblock
    /// first. The card's superblock, written in place, is torn if the power goes as it is
    /// written, and then the copy must hold a whole superblock of this round or of the one
    /// before (the flash's blocks are never torn: it has none). So a round writes the copy
    /// unless the copy already holds the round before, whole; and a round that marks the
    /// array clean always writes it, so that the round that marks it dirty again, which a
    /// write waits for, can do without: a sparse write costs one more card block, not two.
    fn writes_card_copy(&self, state: &SuperblockState<2>) -> bool {
        !(self.card_copy_current && state.resync_offset == 0)
    }

    /// Whether member `id` holds valid data at array sector `sector` (in sync, or rebuilt
    /// past it), and no data write failed on it (it may have torn the block).
    fn serves(&self, id: MemberId, sector: Sector) -> bool {
        if self.torn & 1 << id.0.min(1) != 0 {
            return false;
        }
        match self.array.member(id).map(|m| m.state) {
            Some(MemberState::InSync) => true,
            Some(MemberState::Recovering {
                recovery_offset, ..
            }) => sector < recovery_offset,
            _ => false,
        }
    }

    /// Whether the NOR member may let go of the record of its damage now
    /// ([`Member::release_damage`]); asked after each [`Core::job_finish`].
    pub(super) fn take_release_nor(&mut self) -> bool {
        core::mem::take(&mut self.release_nor)
    }

    /// Report `job`'s result to the engine. Returns whether it was sync I/O.
    #[inline(never)]
    pub(super) fn job_finish(&mut self, job: Job) -> bool {
        let mut res = if job.ok {
            IoResult::Ok
        } else {
            IoResult::Error
        };
        let (tag, sync) = match job.cmd {
            IoCmd::Member(io) => {
                // An orphan's write whose read of the other member failed (see
                // `Core::plan_io`: reads at even stages): the other member is at fault, not
                // this one, which keeps what it has. The other is failed, so that the two do
                // not stay apart on those blocks (one may hold the new version); when it is
                // the last in sync, this one's write fails instead, as before.
                let orphan = self.orphan(io.buffer);
                if !job.ok && orphan && io.op == MemberOp::Write && job.stage % 2 == 1 {
                    if self.fail(other(io.member)).is_ok() {
                        res = IoResult::Ok;
                    }
                } else if !job.ok && io.op == MemberOp::Write {
                    self.torn |= 1 << io.member.0.min(1);
                }
                let sync = matches!(io.buffer, Buffer::Sync { .. });
                if sync && io.op == MemberOp::Write && job.ok {
                    self.synced_sectors += u64::from(io.sectors);
                }
                (io.tag, sync)
            }
            IoCmd::Superblock {
                tag, member, state, ..
            } => {
                // (Another card in the slot took nothing: the volume's card keeps its last.)
                if member == SD && !self.wrong_card {
                    let copy = self.writes_card_copy(&state);
                    self.card_copy_current = job.ok && copy;
                    // A round that did without the copy leaves it at the last round's events,
                    // which the range holds (a copy is current only after a round wrote it).
                    if job.ok && copy {
                        self.card_events = (state.events, state.events);
                    } else {
                        self.card_may_hold(state.events);
                    }
                }
                // A damaged flash is kept in sync (the card is not as fresh) or rebuilt in
                // full (never from the bitmap): once its own superblock says which, the next
                // mount knows without the store's record of the damage.
                self.release_nor |= member == NOR
                    && job.ok
                    && matches!(
                        self.state(NOR),
                        MemberState::InSync | MemberState::Recovering { bitmap: false, .. }
                    );
                (tag, false)
            }
            IoCmd::BitmapPage { tag, .. } => (tag, false),
            IoCmd::Compare { tag, a, b, sectors } => {
                let w = self.sync.len() / 2;
                let n = (sectors as usize).min(w);
                let equal = match (a, b) {
                    (Buffer::Sync { member: ma, .. }, Buffer::Sync { member: mb, .. }) => {
                        let ia = usize::from(ma.0).min(1) * w;
                        let ib = usize::from(mb.0).min(1) * w;
                        let (x, y) = (&self.sync[ia..ia + n], &self.sync[ib..ib + n]);
                        x.iter().zip(y).all(|(x, y)| x.contents == y.contents)
                    }
                    _ => false,
                };
                let _ = self.array.complete_compare(self.now, tag, equal);
                return true;
            }
        };
        let _ = self.array.complete(self.now, tag, res);
        sync
    }

    /// Submit a logical request of `sectors` sectors; [`Core::next`] on the task it returns
    /// issues it to its end.
    pub(super) fn submit(
        &mut self,
        op: RequestOp,
        sector: u64,
        sectors: usize,
    ) -> Result<Task, VolumeError> {
        let sector = Sector::try_from(sector).map_err(|_| VolumeError::OutOfRange {
            end: sector.saturating_add(sectors as u64),
        })?;
        let id = self.next_id;
        self.next_id += 1;
        self.now = self.now.after(1);
        let req = Request {
            id,
            op,
            sector,
            sectors: sectors as u32,
            buffer: handle(id),
            fua: false,
        };
        let queued = (!self.submitted(req)?).then_some(req);
        Ok(Task::Request {
            id,
            idle: 0,
            queued,
        })
    }

    /// Hand `req` to the engine: `false` when its request slots are all taken. They are
    /// taken by requests whose async caller is gone and whose commands are still to be
    /// carried out (see [`Core::needs_scratch`]): the request waits in its task for them
    /// ([`Core::request_next`]), it is not refused.
    fn submitted(&mut self, req: Request) -> Result<bool, VolumeError> {
        match self.array.submit(self.now, req) {
            Ok(()) => Ok(true),
            Err(SubmitError::Busy) => Ok(false),
            Err(SubmitError::OutOfRange(end)) => Err(VolumeError::OutOfRange {
                end: u64::from(end),
            }),
            Err(_) => Err(VolumeError::Io),
        }
    }

    /// The next engine command `task` needs issued (then [`Task::issued`]), or `None` when the
    /// task is over. Its own frame keeps the task's bookkeeping off the stack of the I/O.
    #[inline(never)]
    pub(super) fn next(&mut self, task: &mut Task) -> Result<Option<Job>, VolumeError> {
        self.lent = match task {
            Task::Request { id, .. } => Some(handle(*id)),
            _ => None,
        };
        Ok(self.next_cmd(task)?.map(Job::new))
    }

    /// No request buffer is lent: for the command a dropped async future was awaiting, done
    /// again (see [`Job::again`]) outside any request's task, a request buffer it names is an
    /// orphan's.
    pub(super) fn lend_none(&mut self) {
        self.lent = None;
    }

    /// Undo the freeze of a task that did not get to undo it: [`Mirror::clean`] keeps the
    /// volume mounted after its close, and an async call whose future was dropped may have
    /// left the array frozen. Without this every later request would wait for good.
    pub(super) fn thaw(&mut self) -> Result<(), VolumeError> {
        if core::mem::take(&mut self.frozen) {
            self.array.unfreeze().map_err(VolumeError::Reconfig)?;
        }
        Ok(())
    }

    fn next_cmd(&mut self, task: &mut Task) -> Result<Option<IoCmd<2>>, VolumeError> {
        match task {
            Task::Pump(p) => self.pump_next(p),
            Task::Request { id, idle, queued } => self.request_next(*id, idle, queued),
            Task::Close { stage, idle, pump } => loop {
                if let Some(p) = pump {
                    if let Some(cmd) = self.pump_next(p)? {
                        return Ok(Some(cmd));
                    }
                }
                match *stage {
                    // Stop the sync at a checkpoint and drain.
                    0 => {
                        self.array.freeze().map_err(VolumeError::Reconfig)?;
                        self.frozen = true;
                    }
                    1 => {
                        self.now = self.now.after(1);
                        self.array.request_clean(self.now);
                    }
                    _ => {
                        let st = self.array.status();
                        if !st.metadata_pending && self.array.is_quiesced() {
                            return Ok(None);
                        }
                        *idle += 1;
                        if *idle > IDLE_ROUNDS {
                            return Err(VolumeError::Stalled);
                        }
                        self.idle_tick();
                    }
                }
                *stage = (*stage + 1).min(2);
                *pump = Some(Pump::new(0, false));
            },
            Task::Setup {
                plan,
                stage,
                err,
                pump,
                idle,
            } => loop {
                if let Some(p) = pump {
                    match self.pump_next(p) {
                        Ok(Some(cmd)) => return Ok(Some(cmd)),
                        Ok(None) => {}
                        // A failure inside the plan: unfreeze all the same.
                        Err(e) if *stage <= UNFREEZE => {
                            *err = Some(e);
                            *stage = UNFREEZE;
                        }
                        Err(e) => return Err(e),
                    }
                    *pump = None;
                }
                let now = *stage;
                *stage += 1;
                let changed = match now {
                    0 => {
                        self.array.freeze().map_err(VolumeError::Reconfig)?;
                        self.frozen = true;
                        Ok(true)
                    }
                    // Drain what is in flight first: a sync window that a failure just
                    // interrupted (a card found swapped during a scrub) takes more than the
                    // one sync command a pump issues.
                    1 if !self.array.is_quiesced() => {
                        *stage = 1;
                        *idle += 1;
                        if *idle > IDLE_ROUNDS {
                            *err = Some(VolumeError::Stalled);
                            *stage = UNFREEZE;
                            continue;
                        }
                        self.idle_tick();
                        Ok(true)
                    }
                    1 => match plan.remove {
                        Some(id) => self.array.remove_member(id).map(|_| true),
                        None => Ok(false),
                    },
                    2 | 3 => match plan.add[usize::from(now - 2)] {
                        Some((id, how)) => {
                            // A card added (another one, maybe) holds no copy of ours yet.
                            self.card_copy_current &= id != SD;
                            self.card_unknown &= id != SD;
                            // Quiesced, every request that tore a member is over: the engine
                            // failed each such member but one kept as the last in sync, whose
                            // blocks the member added now is rebuilt from. Its mark is stale:
                            // kept, it barred every later orphan copy from that member, and a
                            // write dropped after the rebuild left the two apart for good
                            // (the card new, the flash old, both in sync; `volume_async`).
                            self.torn = 0;
                            self.array.add_member(id, how).map(|_| true)
                        }
                        None => Ok(false),
                    },
                    // The NOR member is write-mostly whenever it is present (a member added
                    // as new starts without the flag), the card never (a mount after a crash
                    // brings it up write-mostly, see `Mount::finish`). Not a member that
                    // failed meanwhile (the flash's store refused the writes of the add): the
                    // engine refuses a flag for a faulty member, and that refusal failed the
                    // whole mount, card in sync.
                    4 | 5 => {
                        let (id, on) = if now == 4 { (NOR, true) } else { (SD, false) };
                        match self.array.member(id) {
                            Some(m)
                                if !matches!(
                                    m.state,
                                    MemberState::Absent | MemberState::Faulty
                                ) && m.write_mostly != on =>
                            {
                                self.array.set_write_mostly(id, on).map(|_| true)
                            }
                            _ => Ok(false),
                        }
                    }
                    UNFREEZE => {
                        self.thaw()?;
                        if let Some(e) = err.take() {
                            return Err(e);
                        }
                        Ok(true)
                    }
                    _ => return Ok(None),
                };
                match changed {
                    Ok(true) => *pump = Some(Pump::new(0, false)),
                    Ok(false) => {}
                    Err(e) => {
                        *err = Some(VolumeError::Reconfig(e));
                        *stage = UNFREEZE;
                    }
                }
            },
        }
    }

    fn pump_next(&mut self, p: &mut Pump) -> Result<Option<IoCmd<2>>, VolumeError> {
        loop {
            // Metadata and request I/O are bounded by the engine's tables: this many means a
            // loop in the engine, reported rather than spun forever.
            if p.other > IDLE_ROUNDS {
                return Err(VolumeError::Stalled);
            }
            let room = p.sync < p.budget.max(1);
            if room {
                if let Some(cmd) = self.array.poll_io() {
                    return Ok(Some(cmd));
                }
            }
            self.drain_events();
            if !(room && p.pace && self.pace()) {
                return Ok(None);
            }
        }
    }

    /// The next sync window waits for the pacing timer (see `SYNC_PACE_NS`): let that much
    /// engine time pass, and no more (the clean and bitmap timers follow the caller's clock,
    /// through `tick`). Returns whether it fired.
    fn pace(&mut self) -> bool {
        match self.array.poll_timeout() {
            Some(t) if self.array.status().sync.is_some() && t.0 <= self.now.0 + SYNC_PACE_NS => {
                self.now = Instant(t.0.max(self.now.0));
                self.array.handle_timeout(self.now);
                true
            }
            _ => false,
        }
    }

    fn request_next(
        &mut self,
        id: u64,
        idle: &mut u32,
        queued: &mut Option<Request>,
    ) -> Result<Option<IoCmd<2>>, VolumeError> {
        loop {
            if let Some(req) = *queued {
                if self.submitted(req)? {
                    *queued = None;
                }
            }
            // The completions of requests whose caller is gone are dropped here: each holds
            // its request slot until it is taken.
            while let Some(done) = self.array.poll_completion() {
                // Every request over: a member a failed write tore was failed by the engine,
                // or kept as the last in sync (md fails the request instead), the copy that
                // reads and rebuilds serve from. The mark has done its work; kept, it barred
                // every later orphan copy from that member, and a write dropped once the
                // other was rebuilt left the two apart for good (`volume_async`).
                if self.array.status().requests == 0 {
                    self.torn = 0;
                }
                if done.id == id {
                    self.drain_events();
                    return match done.outcome {
                        Outcome::Ok => Ok(None),
                        // (The binding never makes the array read-only.)
                        Outcome::IoError | Outcome::ReadOnly => Err(VolumeError::Io),
                    };
                }
            }
            // One command at a time, so that a sync running beside the request does not run
            // to its end inside it.
            if let Some(cmd) = self.array.poll_io() {
                *idle = 0;
                return Ok(Some(cmd));
            }
            self.drain_events();
            *idle += 1;
            if *idle > IDLE_ROUNDS {
                return Err(VolumeError::Stalled);
            }
            // Nothing left to issue: let time pass so that waiting timers fire.
            self.idle_tick();
        }
    }

    /// Let 1 ms of engine time pass, so that waiting timers fire.
    pub(super) fn idle_tick(&mut self) {
        self.now = self.now.after(1_000_000);
        self.array.handle_timeout(self.now);
    }

    /// Advance the clock to `now_ns` (never back) and run the timers that are due.
    pub(super) fn tick(&mut self, now_ns: u64) {
        if now_ns > self.now.0 {
            self.now = Instant(now_ns);
        }
        self.array.handle_timeout(self.now);
    }

    /// Fail the SD member now (card-detect says it is gone).
    pub(super) fn sd_removed(&mut self) -> Result<(), VolumeError> {
        self.fail(SD)
    }

    /// Fail member `id` now (refused when it is the last in sync).
    fn fail(&mut self, id: MemberId) -> Result<(), VolumeError> {
        self.card_copy_current &= id != SD;
        match self.array.fail_member(self.now, id) {
            Ok(()) | Err(ReconfigError::WrongState(_)) => Ok(()),
            Err(e) => Err(VolumeError::Reconfig(e)),
        }
    }

    /// Start md's check (or repair) over the whole volume; it runs in the steps that follow.
    pub(super) fn scrub_start(&mut self, repair: bool) -> Result<(), VolumeError> {
        match self.array.start_check(repair) {
            Ok(()) => Ok(()),
            Err(ReconfigError::SyncBusy) => Err(VolumeError::Busy),
            Err(e) => Err(VolumeError::Reconfig(e)),
        }
    }

    /// Sectors the last scrub found different (md's `mismatch_cnt`).
    pub(super) fn mismatches(&self) -> u64 {
        self.array.mismatch_cnt()
    }

    /// Where the long work stands after a step that issued `commands` sync commands.
    pub(super) fn progress(&self, commands: u32) -> Progress {
        let st = self.array.status();
        let (action, done, total) = match st.sync {
            Some((a, pos, end)) => (Some(a), u64::from(pos), u64::from(end)),
            None => (None, 0, 0),
        };
        Progress {
            action,
            done,
            total,
            commands,
            busy: st.sync.is_some() || st.metadata_pending,
        }
    }

    /// The volume's health, with what the NOR member's mount `warning` said.
    pub(super) fn health(&self, warning: Option<crate::nor::NorWarning>) -> Health {
        let status = self.array.status();
        // (No chunks before a mount: a refused one leaves the volume in its place.)
        let chunks = match self.meta.chunk_sectors {
            0 => 0,
            c => self.meta.data_sectors.div_ceil(c),
        };
        let dirty = (0..chunks).filter(|&c| self.array.bitmap_bit(c)).count() as u32;
        let corrected = |id| self.array.member(id).map_or(0, |m| m.corrected_read_errors);
        Health {
            degraded: status.in_sync < status.raid_disks,
            sd: self.state(SD),
            nor: self.state(NOR),
            events: status.events,
            dirty_chunks: dirty,
            synced_sectors: self.synced_sectors,
            mismatches: self.mismatches(),
            corrected: corrected(NOR) + corrected(SD),
            warning,
            nor_damaged: self.nor_damaged,
            wrong_card: self.wrong_card,
            split_brain: self.split_brain,
            card_unchecked: self.card_unknown,
        }
    }

    /// Fewer members in sync than slots.
    pub(super) fn degraded(&self) -> bool {
        let st = self.array.status();
        st.in_sync < st.raid_disks
    }

    pub(super) fn state(&self, id: MemberId) -> MemberState {
        self.array
            .member(id)
            .map_or(MemberState::Absent, |m| m.state)
    }

    /// A rejoin of member `id` (see [`Mirror::rejoin`]), or `None` when it is in sync or
    /// being rebuilt already, unless a card was `inserted`: the card the volume holds in place
    /// may have been swapped for another between two commands (card-detect reported the
    /// insertion alone, or the firmware slept through the removal), and the driver, reset,
    /// would serve the other card's blocks as the volume's. Its metadata is read first (see
    /// [`Core::rejoin_plan`]).
    ///
    /// A member being rebuilt whose recovery stopped (its source failed to read: md stops
    /// there, and the recovery starts again only at the next reconfiguration) is not in place:
    /// it is taken out and joins again.
    ///
    /// A volume whose mount was refused has nothing to bring a member back into: it writes
    /// nothing, md metadata of an empty engine least of all ([`VolumeError::NotMounted`]).
    pub(super) fn rejoin(&self, id: MemberId, join: Join) -> Result<Option<Rejoin>, VolumeError> {
        if self.meta.chunk_sectors == 0 {
            return Err(VolumeError::NotMounted);
        }
        let inserted = join == Join::Inserted;
        let state = self.state(id);
        let placed = match state {
            MemberState::InSync => true,
            MemberState::Recovering { .. } => !self.rebuild_stopped(id),
            _ => false,
        };
        if placed && !(inserted && id == SD) {
            return Ok(None);
        }
        Ok(Some(Rejoin {
            probe: Probe::new(id),
            uuid: self.meta.uuid,
            state,
            how: None,
            sectors: None,
            placed: placed.then_some(self.card_events),
            full: join == Join::Over,
            split: false,
            over: join == Join::Over,
        }))
    }

    /// A card was reported inserted (its driver reset): until it is known for the card in
    /// place, or added, no command reaches it ([`Core::card_fenced`]), also when the call that
    /// reads it is dropped before it decides, and the calls that follow do not.
    pub(super) fn card_inserted(&mut self) {
        self.card_unknown = true;
    }

    /// The member to bring back after a `join` that left its own member in place, if any:
    /// the volume's card back in place starts again a rebuild of the flash that stopped while
    /// it was away (the rebuild's reads of it failed). A flash that cannot join then stays as
    /// it was (see `Health`); its own `rejoin` says why.
    pub(super) fn then_rejoin(&self, join: Join) -> Option<MemberId> {
        (join == Join::Inserted && self.rebuild_stopped(NOR)).then_some(NOR)
    }

    /// Whether member `id` is being rebuilt and its recovery stopped: its source failed to
    /// read (the card pulled, or another card refused in its slot, while the flash was
    /// rebuilt from it).
    pub(super) fn rebuild_stopped(&self, id: MemberId) -> bool {
        matches!(self.state(id), MemberState::Recovering { .. })
            && self.array.status().sync.is_none()
    }

    /// The reconfiguration that `rejoin` asks for once its member answered, if any (see
    /// [`Rejoin::plan`]). A card inserted while the volume holds one in place is that card
    /// when its superblock is this volume's and carries the events of the last one the card
    /// took (or of one that failed to reach it since); then nothing is done (and a card
    /// refused before as another is taken back). Otherwise the card in place is gone: it is
    /// failed and the card in the slot joins as any card put back does (new, rebuilt in full;
    /// an older one of this volume's, by its events and the bitmap), when the flash is in
    /// sync. When the card in place held the only copy in sync, nothing can rebuild the other
    /// card: it is neither read nor written ([`VolumeError::WrongCard`]; [`VolumeError::Probe`]
    /// for a card whose metadata failed to read, which may be the volume's) until the volume's
    /// card is put back and read. (The events are all
    /// md has to tell a card by: an image of the card written back at the same count, which
    /// md's clean and dirty marks take back and forth, is taken for the card.)
    pub(super) fn rejoin_plan(&mut self, mut rejoin: Rejoin) -> Result<Option<Task>, VolumeError> {
        if let Some((low, high)) = rejoin.placed {
            let same = matches!(rejoin.how, Some(Ok(AddMember::ReAdd { events: e, .. }))
                if low <= e && e <= high);
            self.wrong_card = !same && self.state(NOR) != MemberState::InSync;
            if same {
                self.card_unknown = false;
                return Ok(None);
            }
            if self.wrong_card {
                // A card whose metadata did not read whole (nothing read, or its superblock
                // from the copy, which may be a round older than the volume knows) may be the
                // volume's: it is fenced all the same, but the error says what is known.
                return Err(match rejoin.how {
                    Some(Ok(_)) if !rejoin.probe.mended => VolumeError::WrongCard,
                    _ => VolumeError::Probe,
                });
            }
            self.sd_removed()?;
            rejoin.state = self.state(SD);
        }
        // The member ran on without the one in sync now, which it recorded as failed: the
        // two took writes apart (the volume was opened from the other alone, this one being
        // unreadable then). Rebuilding it would destroy the writes only it holds.
        let other = if rejoin.probe.id == SD { NOR } else { SD };
        if rejoin.split && !rejoin.over && self.state(other) == MemberState::InSync {
            self.split_brain = true;
            return Err(VolumeError::SplitBrain);
        }
        let task = rejoin.plan(&mut self.meta)?;
        self.split_brain = false;
        Ok(Some(task))
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.array.poll_event() {
            match event {
                Event::MemberFailed(m) => crate::log::log_warn!("mirror: member {=u8} failed", m.0),
                Event::Degraded {
                    in_sync,
                    raid_disks,
                } => {
                    crate::log::log_warn!(
                        "mirror: degraded, {=u16} of {=u16} in sync",
                        in_sync,
                        raid_disks
                    )
                }
                Event::SpareActive(m) => {
                    crate::log::log_info!("mirror: member {=u8} in sync again", m.0)
                }
                Event::SyncFinished { .. } => crate::log::log_info!("mirror: sync finished"),
                _ => {}
            }
            let _ = event;
        }
    }
}

/// The stage of [`Task::Setup`] that unfreezes.
const UNFREEZE: u8 = 6;

/// A question for a member, answered by the binding with [`Asker::answer`].
#[derive(Clone, Copy)]
pub(super) enum Ask {
    /// Read this sector into the binding's block.
    Read(MemberId, u64),
    /// The member's size in sectors (an error: the member is not there).
    Size(MemberId),
}

impl Ask {
    pub(super) fn member(self) -> MemberId {
        match self {
            Ask::Read(m, _) | Ask::Size(m) => m,
        }
    }
}

/// What needs the members' metadata before the engine is set up or changed.
pub(super) trait Asker {
    /// The next question; `None` when done.
    fn next(&mut self) -> Option<Ask>;
    /// The answer: `Some` on success (the size; for a read any value, the block is in
    /// `block`), `None` when the member failed.
    fn answer(&mut self, got: Option<u64>, block: &Block);
}

/// Reading one member's metadata: its superblock (the card's copy of it when the superblock
/// is torn, [`torn_superblock`], or cannot be read), then its bitmap sector. One block at a
/// time, parsed in place: this runs on the recovery path.
pub(super) struct Probe {
    id: MemberId,
    sb: Option<(SuperblockState<2>, Found)>,
    /// The card's copy is asked for: `Some(uuid)` when the superblock was torn (the copy must
    /// carry its UUID), `None` when it could not be read (the mount and the rejoin check the
    /// copy's UUID against the volume's, as they check a superblock's).
    copy: Option<Option<Uuid>>,
    /// The card's superblock read blank (all zeros or all ones): a power cut that left the
    /// block erased, or a superblock wiped. Its copy is asked for; the mount keeps what it says
    /// only for the volume the flash holds (see [`Mount::choose`]).
    blank: bool,
    /// The metadata was read from the copy, or without its bitmap: it must be written again.
    mended: bool,
}

/// What one member's metadata says: its superblock state (raid1-core's bridge) and the static
/// fields; `None` when it holds no metadata of a volume of this kind; an error when it cannot
/// be read.
type Probed = Result<Option<(SuperblockState<2>, Found)>, MemberFault>;

impl Probe {
    fn new(id: MemberId) -> Self {
        Probe {
            id,
            sb: None,
            copy: None,
            blank: false,
            mended: false,
        }
    }

    fn ask(&self) -> Ask {
        let sector = match (&self.sb, self.copy) {
            (Some(_), _) => BITMAP_SECTOR,
            (None, Some(_)) => SUPERBLOCK_COPY_SECTOR,
            (None, None) => SUPERBLOCK_SECTOR,
        };
        Ask::Read(self.id, sector)
    }

    /// Take a block read; the result when the probe is over.
    fn answer(&mut self, got: Option<u64>, block: &Block) -> Option<Probed> {
        let first = self.sb.is_none() && self.copy.is_none();
        if got.is_none() {
            // The card's superblock unreadable (a torn block that the card reports as an
            // error): its copy may be read. Only the card keeps one: the flash's blocks are
            // never torn. A card that answers nothing fails at the copy too.
            if first && self.id == SD {
                self.copy = Some(None);
                return None;
            }
            // The bitmap sector could not be read (a tear that the card reports as an error,
            // a bit the flash lost): as one that does not read as a bitmap, the superblock
            // stands. Before (2026-12-06) the member was taken for a new one.
            if let Some(mut sb) = self.sb.take() {
                self.mended |= !add_bitmap(&mut sb, None);
                return Some(Ok(Some(sb)));
            }
            return Some(Err(MemberFault));
        }
        match self.sb.take() {
            None => match (parse_superblock(block, self.id), self.copy.take()) {
                (Some(sb), None) => {
                    self.sb = Some(sb);
                    None
                }
                // The copy: of a torn superblock, it must be this volume's (a copy left by
                // another volume that the card held before is not).
                (Some(sb), Some(uuid)) if uuid.is_none_or(|u| u == sb.1.uuid) => {
                    crate::log::log_warn!(
                        "mirror: the card's superblock is damaged: its copy read"
                    );
                    self.mended = true;
                    self.sb = Some(sb);
                    None
                }
                (_, Some(Some(_))) => Some(Ok(None)),
                // No copy behind a superblock that could not be read: as before, unreadable;
                // behind a blank one: a new card.
                (_, Some(None)) => Some(if self.blank {
                    Ok(None)
                } else {
                    Err(MemberFault)
                }),
                (None, None) if self.id == SD => {
                    self.copy = torn_superblock(block, self.id);
                    self.blank = self.copy == Some(None);
                    self.copy.is_none().then_some(Ok(None))
                }
                (None, None) => Some(Ok(None)),
            },
            Some(mut sb) => {
                self.mended |= !add_bitmap(&mut sb, Some(block));
                Some(Ok(Some(sb)))
            }
        }
    }
}

/// Why a member is brought back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Join {
    /// [`Mirror::rejoin`].
    Back,
    /// The card was reported inserted ([`Mirror::sd_inserted`]): the card in place, if any,
    /// is checked first.
    Inserted,
    /// The firmware lets the member's own writes go ([`Mirror::rejoin_over`]): it joins as
    /// new, split brain or not.
    Over,
}

/// Bringing a member back (see [`Mirror::rejoin`]): probe it, ask its size, then
/// [`Rejoin::plan`].
pub(super) struct Rejoin {
    probe: Probe,
    uuid: Uuid,
    state: MemberState,
    how: Option<Result<AddMember, MemberFault>>,
    /// The member's size once asked: `Some(None)` when it gave none.
    sectors: Option<Option<u64>>,
    /// The card inserted is checked against the one the volume holds in place, whose
    /// superblock carries events in this range (see [`Core::rejoin_plan`]).
    placed: Option<(u64, u64)>,
    /// The member joins as new whatever its metadata says ([`Rejoin::in_full`]).
    full: bool,
    /// The member's metadata (this volume's, itself active) records the other member as
    /// failed: it ran on without it (see [`Core::rejoin_plan`]).
    split: bool,
    /// Rewritten from the volume whatever it holds ([`Join::Over`]).
    over: bool,
}

impl Asker for Rejoin {
    fn next(&mut self) -> Option<Ask> {
        match (&self.how, self.sectors) {
            (None, _) => Some(self.probe.ask()),
            (Some(_), None) => Some(Ask::Size(self.probe.id)),
            _ => None,
        }
    }

    fn answer(&mut self, got: Option<u64>, block: &Block) {
        if self.how.is_some() {
            self.sectors = Some(got);
        } else if let Some(probed) = self.probe.answer(got, block) {
            self.split = matches!(&probed, Ok(Some(p)) if ran_without_the_other(p, self.uuid));
            self.how = Some(probed.map(|p| match self.full {
                true => AddMember::New,
                false => rejoin_mode(p, self.uuid),
            }));
        }
    }
}

impl Rejoin {
    /// The member says some of its blocks may be stale, or it mounted again (see
    /// [`Member::refresh`]): it joins as new, every block rewritten. Its metadata is read all
    /// the same: it may say that the member ran on without the volume's (split brain).
    pub(super) fn in_full(&mut self) {
        self.full = true;
    }

    /// The reconfiguration that swaps the member in. A card that could not be read is
    /// refused ([`VolumeError::Probe`]): recovering it in full because its driver was not
    /// ready would hide the fault and cost a whole copy. The flash is soldered to the board:
    /// metadata of its that cannot be read (a bit lost in the superblock's block) is
    /// rewritten with everything else, as the mount does.
    ///
    /// The member's size is recorded in `meta` (its superblocks say how much room it has:
    /// a card put back may be another one); one that gives none is refused as unreadable,
    /// one too small for the volume with [`VolumeError::TooSmall`], before anything is
    /// written to it.
    pub(super) fn plan(self, meta: &mut Meta) -> Result<Task, VolumeError> {
        let how = match self.how {
            Some(Ok(how)) => how,
            // A flash whose metadata does not read is rebuilt (its store never tears: a bit
            // it lost); a card only when told to (`rejoin_over`): it may hold writes only it
            // has.
            Some(Err(MemberFault)) if self.probe.id == NOR || self.over => AddMember::New,
            _ => return Err(VolumeError::Probe),
        };
        let id = self.probe.id;
        let sectors = self.sectors.flatten().ok_or(VolumeError::Probe)?;
        if !fits(sectors, meta) {
            return Err(VolumeError::TooSmall);
        }
        meta.member_sectors[usize::from(id.0)] = sectors;
        Ok(Task::setup(Plan {
            remove: (self.state != MemberState::Absent).then_some(id),
            add: [Some((id, how)), None],
        }))
    }
}

/// Whether a member's metadata (this volume's, itself active) records the other member as
/// failed: it ran on without it. When the other is in sync in the volume, the two took writes
/// apart (split brain: md's assembly does not take such a member in sync either).
fn ran_without_the_other(probed: &(SuperblockState<2>, Found), uuid: Uuid) -> bool {
    let (st, found) = probed;
    let other = usize::from(st.this_member == SD);
    found.uuid == uuid
        && matches!(st.own_role(), Role::Active(_))
        && st.roles.get(other) == Some(&Role::Faulty)
}

/// How a returning member joins: re-added (bitmap-guided recovery when it left in sync)
/// when it carries this volume's metadata, new otherwise.
fn rejoin_mode(probed: Option<(SuperblockState<2>, Found)>, uuid: Uuid) -> AddMember {
    match probed {
        Some((st, found)) if found.uuid == uuid => match st.own_role() {
            Role::Active(slot) => AddMember::ReAdd {
                slot,
                events: st.events,
                write_mostly: st.write_mostly,
                was_in_sync: st.recovery_offset.is_none(),
            },
            _ => AddMember::New,
        },
        _ => AddMember::New,
    }
}

/// Mounting the volume from the members' metadata (see [`Mirror::assemble`]): probe both,
/// choose the freshest, read both sizes (a member that gives none is not there) and OR both
/// bitmaps. Then [`Mount::finish`].
pub(super) struct Mount<'b> {
    bits: &'b mut [u8],
    hot: &'b mut [u8],
    bitmap: usize,
    window: usize,
    opts: Options,
    nor_damaged: bool,
    /// The NOR store was damaged and kept as the freshest copy ([`Mount::choose`]).
    kept_damaged: bool,
    /// The card's metadata was mended as it was read (a torn superblock read from its copy,
    /// a bitmap sector that is not one): the assembly writes it again at once.
    mended: bool,
    /// The card's metadata was read from the copy behind a blank superblock.
    card_blank: bool,
    /// The card answered but its metadata did not read (superblock and copy): unless the
    /// flash records it as failed, it may hold writes only it has, so it is not added as new
    /// (md assembles without a device whose superblock it cannot read); `rejoin` reads it
    /// again, `rejoin_over` rewrites it.
    card_unreadable: bool,
    /// The flash's metadata could not be read (a bit lost in its superblock's block): it may
    /// hold the volume, so it does not say the card's copy names another.
    nor_unreadable: bool,
    /// A member that ran on without the reference, kept out ([`Mount::choose`]).
    split: Option<MemberId>,
    stage: u8,
    probe: Probe,
    probed: [Option<(SuperblockState<2>, Found)>; 2],
    found: [Option<SuperblockState<2>>; 2],
    meta: Option<Meta>,
    need: usize,
    present: [bool; 2],
    error: Option<VolumeError>,
}

// The stages of a mount, in order.
const M_PROBE_SD: u8 = 0;
const M_PROBE_NOR: u8 = 1;
const M_CHOOSE: u8 = 2;
const M_SIZE_SD: u8 = 3;
const M_SIZE_NOR: u8 = 4;
const M_CONFIG: u8 = 5;
const M_BITMAP_SD: u8 = 6;
const M_BITMAP_NOR: u8 = 7;

/// The member a stage with an SD and a NOR variant is about.
fn of(stage: u8, sd_stage: u8) -> MemberId {
    if stage == sd_stage { SD } else { NOR }
}

impl<'b> Mount<'b> {
    /// The mount over a bitmap's `bits` and `hot` map (of equal length), for a volume whose
    /// sync window is `window` sectors.
    pub(super) fn new(
        bits: &'b mut [u8],
        hot: &'b mut [u8],
        window: usize,
        opts: Options,
        nor_damaged: bool,
    ) -> Self {
        Mount {
            bitmap: bits.len().min(hot.len()),
            bits,
            hot,
            window,
            opts,
            nor_damaged,
            kept_damaged: false,
            mended: false,
            card_blank: false,
            card_unreadable: false,
            nor_unreadable: false,
            stage: M_PROBE_SD,
            probe: Probe::new(SD),
            probed: [None, None],
            found: [None, None],
            meta: None,
            need: 0,
            present: [false; 2],
            error: None,
            split: None,
        }
    }

    /// Assemble the engine in `core`'s place (the engine is large: it is built where it
    /// stays, not moved there); with it, the plan that adds the members the assembly left out
    /// and that answered (their size). Its own frame: the assembly's is not under the probes'.
    #[inline(never)]
    pub(super) fn finish(mut self, core: &mut Core<'b>) -> Result<Task, VolumeError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let meta = self.meta.ok_or(VolumeError::NoVolume)?;
        let cfg = config(&meta, self.window, &self.opts);
        // After a crash the flash is the resync's source, and serves what is not resynced
        // yet: its blocks never tear, the card's do. A card write the power cut may leave its
        // block erased or mixed, and a read fix's write-back (the same data again) is such a
        // write: a resync from the card copied that block over the flash, an acknowledged
        // write lost on both members. Nor does the superblock's clean mark say that no card
        // write was cut: md marks the array dirty for host writes only, and a read fix may
        // run on a clean array. So every chunk whose bit is set is resynced, from the flash
        // (a write sets its chunk's bit before it goes out; a close clears them all). The
        // engine ranks the sources of a resync by WriteMostly as the array came up, so the
        // card comes up write-mostly and the flash not; the setup's plan puts the flags back
        // for reads (its stages 4 and 5), and the resync keeps its source to its end.
        if self.bits.iter().any(|&b| b != 0) {
            for (st, wm) in self.found.iter_mut().zip([true, false]) {
                if let Some(st) = st {
                    st.write_mostly = wm;
                    st.resync_offset = 0;
                }
            }
        }
        let bits = Some((self.bits, self.hot));
        core.array
            .reassemble(cfg, bits, &self.found, StartPolicy::AllowDegraded)
            .map_err(VolumeError::Assemble)?;
        core.meta = meta;
        if self.mended {
            // Nothing may have changed, and the assembly writes no superblock then: the torn
            // one would stay until the next change. (The volume is never read-only.)
            let _ = core.array.rewrite_superblocks();
        }
        core.start();
        core.nor_damaged = self.kept_damaged;
        core.card_events = self.probed[0]
            .as_ref()
            .map_or((u64::MAX, 0), |p| (p.0.events, p.0.events));
        core.wrong_card = false;
        // A card whose metadata did not read is added as new only when the flash records
        // that it ran on without it (the card fell behind it): otherwise the card may hold
        // writes the flash never took (the flash failed first), and it stays out untouched.
        let card_behind = self.probed[1]
            .as_ref()
            .is_some_and(|p| p.1.uuid == meta.uuid && !matches!(p.0.roles[0], Role::Active(_)));
        let kept_out = [
            self.split == Some(SD) || (self.card_unreadable && !card_behind),
            self.split == Some(NOR),
        ];
        // A member without this volume's metadata is added as new if it has the room (a
        // card too small for the volume stays out, as mdadm refuses to add one).
        let add = |i: usize, id| {
            let absent = core
                .array
                .member(id)
                .is_none_or(|m| m.state == MemberState::Absent);
            let room = fits(meta.member_sectors[i], &meta);
            (absent && self.present[i] && room && !kept_out[i]).then_some((id, AddMember::New))
        };
        let plan = Plan {
            remove: None,
            add: [add(0, SD), add(1, NOR)],
        };
        core.split_brain = self.split.is_some();
        Ok(Task::setup(plan))
    }

    /// Choose the freshest member's metadata.
    fn choose(&mut self) -> Result<(), VolumeError> {
        let [sd_meta, nor_meta] = &self.probed;
        self.found = [
            sd_meta.as_ref().map(|m| m.0),
            nor_meta.as_ref().map(|m| m.0),
        ];
        // Members must agree on the array: a foreign superblock counts as none. The flash,
        // soldered to the board, holds the device's volume; a card holding another one (moved
        // from another device) is the foreign one, whatever its event count, and is added as
        // new, as a foreign card inserted while running is.
        // A card whose superblock read blank speaks through its copy only for the volume the
        // flash holds (the copy of a torn superblock names its volume; a blank one names
        // none): a power cut that left the block erased must not make the card a new one,
        // rebuilt from a flash that may be stale (it failed while the card went on) or rotten.
        // A card with a blank superblock beside a flash that holds no volume is no volume
        // (zeroed to be used elsewhere); beside a flash whose metadata cannot be read, the
        // copy is all there is.
        match (sd_meta, nor_meta) {
            (Some(a), Some(b)) if a.1.uuid != b.1.uuid => {
                crate::log::log_warn!("mirror: the card holds another volume: added as new");
                self.found[0] = None;
            }
            (Some(_), None) if self.card_blank && !self.nor_unreadable => self.found[0] = None,
            _ => {}
        }
        if self.nor_damaged {
            // A NOR store that found damage it cannot place may serve some block older than
            // acknowledged. With a card the assembly takes as in sync (md's rule, which
            // tolerates one event behind: a power cut between the two superblock writes of a
            // round), the NOR member joins as new: its every block is rewritten from the card.
            // Otherwise (the card is stale, being rebuilt, or absent) the NOR member is the
            // freshest copy there is: rewriting it from the card would lose every write since
            // the card fell behind, so it is kept, and the health says so. (A rule of its own
            // here, demanding as many events, kept the damaged flash beside a card in sync
            // one event behind, found by the `volume_faults` fuzz target.)
            let card_current = Array::<2, REQUESTS, 1>::assembles_in_sync(&self.found, 0);
            if card_current {
                crate::log::log_warn!("mirror: NOR member damaged, recovered in full");
                self.found[1] = None;
            } else {
                crate::log::log_warn!("mirror: NOR member damaged, kept: the card is not as fresh");
                self.kept_damaged = true;
            }
        }
        let fresh =
            Array::<2, REQUESTS, 1>::choose_freshest(&self.found).ok_or(VolumeError::NoVolume)?;
        // The other member ran on without the reference, which it records as failed (split
        // brain: the volume was opened from one while the other could not be read). It holds
        // writes the reference never took: the assembly does not see it (md's would re-add it,
        // and it was rewritten without a word before 2026-12-06), and it stays out, untouched,
        // until the firmware lets them go (`Mirror::rejoin_over`).
        let other = usize::from(fresh == 0);
        let uuid = self.probed[usize::from(fresh)].as_ref().map(|f| f.1.uuid);
        if let (Some(p), Some(uuid)) = (&self.probed[other], uuid)
            && self.found[other].is_some()
            && ran_without_the_other(p, uuid)
        {
            crate::log::log_warn!("mirror: split brain: member {=u8} kept out", other as u8);
            self.found[other] = None;
            self.split = Some(if other == 0 { SD } else { NOR });
        }
        let (_, f) = self.probed[usize::from(fresh)]
            .as_ref()
            .ok_or(VolumeError::NoVolume)?;
        // A bitmap sector that was torn gives no chunk size: the other member's, of the same
        // volume, or the one a format with this storage picks (its bits are gone anyway).
        let other = self.probed[1 - usize::from(fresh).min(1)]
            .as_ref()
            .filter(|o| o.1.uuid == f.uuid && o.1.size == f.size)
            .map_or(0, |o| o.1.chunk_sectors);
        let chunk_sectors = match (f.chunk_sectors, other) {
            (0, 0) => chunk_for(f.size, self.bitmap),
            (0, c) | (c, _) => c,
        };
        self.meta = Some(Meta {
            uuid: f.uuid,
            name: f.name,
            ctime: f.ctime,
            data_sectors: f.size,
            chunk_sectors,
            member_sectors: [0, 0],
        });
        Ok(())
    }

    /// Check the bitmap fits, and clear the bits that the members' bitmaps are ORed into: a
    /// member that missed page writes must not hide a dirty chunk.
    fn configure(&mut self) -> Result<(), VolumeError> {
        let meta = self.meta.as_ref().ok_or(VolumeError::NoVolume)?;
        let cfg = config(meta, self.window, &self.opts);
        self.need = Array::<2, REQUESTS, 1>::bitmap_bytes(&cfg);
        if self.need > self.bitmap.min(BITMAP_BYTES) || meta.chunk_sectors == 0 || self.window == 0
        {
            return Err(VolumeError::NoVolume);
        }
        self.bits.fill(0);
        Ok(())
    }
}

impl Asker for Mount<'_> {
    fn next(&mut self) -> Option<Ask> {
        loop {
            if self.error.is_some() {
                return None;
            }
            let stage = self.stage;
            let done = match stage {
                M_PROBE_SD | M_PROBE_NOR => return Some(self.probe.ask()),
                M_CHOOSE => self.choose(),
                M_SIZE_SD | M_SIZE_NOR => return Some(Ask::Size(of(stage, M_SIZE_SD))),
                M_CONFIG => self.configure(),
                M_BITMAP_SD | M_BITMAP_NOR => {
                    let id = of(stage, M_BITMAP_SD);
                    let i = usize::from(id.0);
                    // A bitmap sector that did not parse (torn) has no bits to give.
                    let bitmap_read = self.probed[i]
                        .as_ref()
                        .is_some_and(|p| p.1.chunk_sectors > 0);
                    if self.found[i].is_some() && bitmap_read {
                        return Some(Ask::Read(id, BITMAP_SECTOR));
                    }
                    Ok(())
                }
                _ => return None,
            };
            self.stage += 1;
            if let Err(e) = done {
                self.error = Some(e);
            }
        }
    }

    fn answer(&mut self, got: Option<u64>, block: &Block) {
        let stage = self.stage;
        match stage {
            M_PROBE_SD | M_PROBE_NOR => {
                let Some(probed) = self.probe.answer(got, block) else {
                    return;
                };
                self.mended |= self.probe.mended;
                self.card_blank |= self.probe.blank;
                self.nor_unreadable = probed.is_err() && stage == M_PROBE_NOR;
                self.card_unreadable |= probed.is_err() && stage == M_PROBE_SD;
                self.probed[usize::from(stage)] = probed.ok().flatten();
                self.probe = Probe::new(NOR);
            }
            M_SIZE_SD | M_SIZE_NOR => {
                let i = usize::from(stage - M_SIZE_SD);
                // A member whose metadata read but that gives no size (a card whose CSD read
                // failed) is taken to have the room the volume uses, which its superblock
                // says it has: written as none, its superblock would be refused at the next
                // mount (and by Linux md). The next mount that reads its size records it.
                let recorded = self.probed[i]
                    .as_ref()
                    .map_or(0, |p| DATA_OFFSET + u64::from(p.1.size));
                if let Some(meta) = &mut self.meta {
                    meta.member_sectors[i] = got.unwrap_or(recorded);
                }
                self.present[i] = got.is_some();
            }
            M_BITMAP_SD | M_BITMAP_NOR => {
                let need = self.need;
                // A bitmap sector that read at the probe and fails now (a bit a flash read
                // flipped for a moment, a card that stopped answering) hides which chunks
                // its member wrote alone: every chunk counts as dirty. Skipped (before
                // 2026-12-06), the other member was re-added from its own bits alone and
                // kept stale blocks as in sync (found by the `volume_zones` fuzz target).
                let bits = &mut self.bits[..need];
                match got {
                    Some(_) => {
                        for (b, &m) in bits.iter_mut().zip(&block.contents[256..256 + need]) {
                            *b |= m;
                        }
                    }
                    None => bits.fill(0xFF),
                }
            }
            _ => {}
        }
        self.stage += 1;
    }
}
