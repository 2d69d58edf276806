//! The mirrored volume with async member I/O, for executors such as Embassy's.
//!
//! [`AsyncMember`] is the async block trait: a member whose reads and writes are futures (an SD
//! card driven by DMA, say). [`AsyncMirror`] drives the same engine as [`Mirror`],
//! through the same decisions (the binding's sans-I/O core), and awaits each member command, so
//! a task that waits for the card lets the executor run other tasks. Long work advances in
//! [`AsyncMirror::step`], which returns after its budget like the blocking binding's.
//! The NOR member is the async NOR store ([`crate::nor::asynch::NorBlockStore`], over
//! `embedded-storage-async`): while a program or an erase is in flight, other tasks run.
//! [`Blocking`] makes any blocking [`Member`] an `AsyncMember` (the blocking NOR store on a
//! bus whose calls are short).
//!
//! What it does not have: `format` (use [`Mirror`] for it).
//!
//! # Cancellation
//!
//! Every future of [`AsyncMirror`] may be dropped before it completes (a `select` that takes
//! another branch, a timeout): the volume stays consistent and usable. What the dropped call
//! was doing is finished by the next call, before its own work:
//! - the member command it was awaiting is done again from its start (each member I/O of a
//!   command may be done twice: a write writes the same blocks, a read reads them again);
//! - a freeze it left (a re-add, a `clean`) is undone;
//! - the rest of its request is carried out by the calls that follow, without its buffer,
//!   which went with the future: a read is done into a scratch block (the data is dropped); a
//!   write makes the member hold what the other member holds for those blocks, block by
//!   block, so the two agree on the old or the new version (as after a write cut by a power
//!   loss); no member is failed for it (one whose read fails in that copy is failed for
//!   the read, unless it is the last in sync);
//! - a request that finds every request slot of the engine held by dropped ones waits for
//!   their commands instead of being refused.
//!
//! A dropped write was not acknowledged: each of its blocks reads as the old or the new
//! version afterwards, and stays so. A dropped read returns nothing; a dropped `step`
//! loses nothing but its progress.

use super::*;

/// A block device the async mirror can use as a member.
///
/// The futures need not be `Send`: the executors this is for run on one core.
#[allow(async_fn_in_trait)]
pub trait AsyncMember {
    /// Read `blocks.len()` sectors starting at `sector`.
    async fn read(&mut self, sector: u64, blocks: &mut [Block]) -> Result<(), MemberFault>;
    /// Write `blocks.len()` sectors starting at `sector`; durable when the future completes.
    async fn write(&mut self, sector: u64, blocks: &[Block]) -> Result<(), MemberFault>;
    /// Size in sectors.
    async fn sectors(&mut self) -> Result<u64, MemberFault>;
    /// The device was (re)inserted: see [`Member::reinit`].
    fn reinit(&mut self) {}
    /// See [`Member::refresh`].
    async fn refresh(&mut self) -> Result<bool, MemberFault> {
        Ok(false)
    }
    /// See [`Member::damaged`].
    fn damaged(&self) -> bool {
        false
    }
    /// See [`Member::release_damage`].
    fn release_damage(&mut self) {}
    /// See [`Member::warning`].
    fn warning(&self) -> Option<crate::nor::NorWarning> {
        None
    }
}

/// A blocking [`Member`] used as an [`AsyncMember`]: each call completes at once.
pub struct Blocking<M>(pub M);

impl<M: Member> AsyncMember for Blocking<M> {
    async fn read(&mut self, sector: u64, blocks: &mut [Block]) -> Result<(), MemberFault> {
        self.0.read(sector, blocks)
    }

    async fn write(&mut self, sector: u64, blocks: &[Block]) -> Result<(), MemberFault> {
        self.0.write(sector, blocks)
    }

    async fn sectors(&mut self) -> Result<u64, MemberFault> {
        self.0.sectors()
    }

    fn reinit(&mut self) {
        self.0.reinit()
    }

    async fn refresh(&mut self) -> Result<bool, MemberFault> {
        self.0.refresh()
    }

    fn damaged(&self) -> bool {
        self.0.damaged()
    }

    fn release_damage(&mut self) {
        self.0.release_damage()
    }

    fn warning(&self) -> Option<crate::nor::NorWarning> {
        self.0.warning()
    }
}

/// Each block of a request at `sector` through `op`, an async NOR store's read or write of
/// one block (blocks are numbered as sectors), until one fails.
async fn by_block<B>(
    sector: u64,
    blocks: impl IntoIterator<Item = B>,
    mut op: impl AsyncFnMut(u32, B) -> bool,
) -> Result<(), MemberFault> {
    for (i, b) in blocks.into_iter().enumerate() {
        let n = u32::try_from(sector + i as u64).map_err(|_| MemberFault)?;
        if !op(n, b).await {
            return Err(MemberFault);
        }
    }
    Ok(())
}

/// The async NOR store as the mirror's NOR member: the same store as the blocking binding's
/// member, whose programs and erases the executor can interleave with other tasks.
impl<F, const BLOCKS: usize, const SECTORS: usize> AsyncMember
    for crate::nor::asynch::NorBlockStore<F, BLOCKS, SECTORS>
where
    F: embedded_storage_async::nor_flash::NorFlash,
{
    async fn read(&mut self, sector: u64, blocks: &mut [Block]) -> Result<(), MemberFault> {
        by_block(sector, blocks.iter_mut(), async |n, b| {
            self.read_block(n, &mut b.contents).await.is_ok()
        })
        .await
    }

    async fn write(&mut self, sector: u64, blocks: &[Block]) -> Result<(), MemberFault> {
        by_block(sector, blocks, async |n, b| {
            self.write_block(n, &b.contents).await.is_ok()
        })
        .await
    }

    async fn sectors(&mut self) -> Result<u64, MemberFault> {
        Ok(BLOCKS as u64)
    }

    async fn refresh(&mut self) -> Result<bool, MemberFault> {
        self.remount_if_needed().await.map_err(|_| MemberFault)
    }

    fn damaged(&self) -> bool {
        crate::nor::asynch::NorBlockStore::damaged(self)
    }

    fn release_damage(&mut self) {
        crate::nor::asynch::NorBlockStore::release_damage(self)
    }

    fn warning(&self) -> Option<crate::nor::NorWarning> {
        crate::nor::asynch::NorBlockStore::warning(self)
    }
}

/// The async zoned NOR store as the mirror's NOR member (see the blocking one's `Member`).
impl<
    F,
    const ZONES: usize,
    const ZONE_BLOCKS: usize,
    const ZONE_SECTORS: usize,
    const CACHED: usize,
> AsyncMember for crate::nor::asynch::ZonedNorStore<F, ZONES, ZONE_BLOCKS, ZONE_SECTORS, CACHED>
where
    F: embedded_storage_async::nor_flash::NorFlash,
{
    async fn read(&mut self, sector: u64, blocks: &mut [Block]) -> Result<(), MemberFault> {
        by_block(sector, blocks.iter_mut(), async |n, b| {
            self.read_block(n, &mut b.contents).await.is_ok()
        })
        .await
    }

    async fn write(&mut self, sector: u64, blocks: &[Block]) -> Result<(), MemberFault> {
        by_block(sector, blocks, async |n, b| {
            self.write_block(n, &b.contents).await.is_ok()
        })
        .await
    }

    async fn sectors(&mut self) -> Result<u64, MemberFault> {
        Ok(u64::from(self.num_blocks()))
    }

    async fn refresh(&mut self) -> Result<bool, MemberFault> {
        self.remount_if_needed().await.map_err(|_| MemberFault)
    }

    fn damaged(&self) -> bool {
        crate::nor::asynch::ZonedNorStore::damaged(self)
    }

    fn release_damage(&mut self) {
        crate::nor::asynch::ZonedNorStore::release_damage(self)
    }

    fn warning(&self) -> Option<crate::nor::NorWarning> {
        crate::nor::asynch::ZonedNorStore::warning(self)
    }
}

/// The mirrored volume over async members `A` (the SD card, member 0) and `B` (the NOR
/// member, write-mostly). Its methods take `&mut self`: one task owns it (share it through
/// the executor's mutex if several must).
pub struct AsyncMirror<'b, A: AsyncMember, B: AsyncMember> {
    core: Core<'b>,
    sd: A,
    nor: B,
    /// The engine command whose member I/O a call was awaiting: set while it awaits, so that
    /// the next call finds it when that call's future was dropped (see "Cancellation").
    in_flight: Option<Job>,
}

/// Answer `q`'s questions from the members until it has none.
async fn answer<A: AsyncMember, B: AsyncMember>(sd: &mut A, nor: &mut B, q: &mut dyn Asker) {
    let mut block = [Block::new()];
    while let Some(ask) = q.next() {
        let got = match (ask, ask.member() == SD) {
            (Ask::Read(_, at), true) => sd.read(at, &mut block).await.map(|()| 0),
            (Ask::Read(_, at), false) => nor.read(at, &mut block).await.map(|()| 0),
            (Ask::Size(_), true) => sd.sectors().await,
            (Ask::Size(_), false) => nor.sectors().await,
        };
        q.answer(got.ok(), &block[0]);
    }
}

impl<'b, A: AsyncMember, B: AsyncMember> AsyncMirror<'b, A, B> {
    /// Mount the volume as [`Mirror::assemble`] does (freshest superblock, bitmaps ORed, a
    /// member without this volume's metadata or a damaged NOR store added as new). The resync
    /// or recovery runs in [`AsyncMirror::step`]. On failure the members come back.
    ///
    /// The future holds the volume while it mounts it, and the volume is then moved to the
    /// caller: where RAM is short, [`AsyncMirror::assemble_in`] builds it in its final place.
    pub async fn assemble<const BM: usize, const W: usize>(
        sd: A,
        nor: B,
        storage: &'b mut MirrorStorage<BM, W>,
        opts: Options,
    ) -> Result<Self, Refused<VolumeError, (A, B)>> {
        let (bits, hot, sync) = storage.split();
        let mut vol = Self::unmounted(sd, nor, sync);
        match vol.mount(bits, hot, opts).await {
            Ok(()) => Ok(vol),
            Err(error) => Err(Refused {
                error,
                driver: vol.into_members(),
            }),
        }
    }

    /// [`AsyncMirror::assemble`] into `place`, which the caller owns (a `static`, or a local
    /// of the task that uses the volume), as [`Mirror::assemble_in`] is [`Mirror::assemble`]:
    /// the volume is built there and never moved, so neither this future nor the caller's
    /// holds a second copy of it (the engine, a few KiB). On failure the place holds the
    /// volume unmounted (every request fails): `place.take()` and
    /// [`AsyncMirror::into_members`] give the members back.
    pub async fn assemble_in<'p, const BM: usize, const W: usize>(
        place: &'p mut Option<Self>,
        sd: A,
        nor: B,
        storage: &'b mut MirrorStorage<BM, W>,
        opts: Options,
    ) -> Result<&'p mut Self, VolumeError> {
        let (bits, hot, sync) = storage.split();
        let vol = place.insert(Self::unmounted(sd, nor, sync));
        vol.mount(bits, hot, opts).await?;
        Ok(vol)
    }

    /// The volume before its mount: an engine without members.
    fn unmounted(sd: A, nor: B, sync: &'b mut [Block]) -> Self {
        AsyncMirror {
            core: Core::unmounted(sync),
            sd,
            nor,
            in_flight: None,
        }
    }

    /// Probe the members, assemble the engine in place and run the setup that follows.
    async fn mount(
        &mut self,
        bits: &'b mut [u8],
        hot: &'b mut [u8],
        opts: Options,
    ) -> Result<(), VolumeError> {
        let window = self.core.sync.len() / 2;
        // A store that gave sectors up in this session mounts again first (see the blocking
        // binding's mount).
        let _ = self.nor.refresh().await;
        let mut setup = {
            let mut mount = Mount::new(bits, hot, window, opts, self.nor.damaged());
            answer(&mut self.sd, &mut self.nor, &mut mount).await;
            mount.finish(&mut self.core)?
        };
        self.run(&mut setup, &mut ReqBuf::None).await
    }

    /// Advance the long work by at most `budget` sync commands (see [`Mirror::step`]).
    pub async fn step(&mut self, budget: u32) -> Result<Progress, VolumeError> {
        self.resume().await?;
        let mut task = Task::step(budget);
        self.run(&mut task, &mut ReqBuf::None).await?;
        Ok(self.core.progress(task.commands()))
    }

    /// Run the timers that are due at `now_ns` (see [`Mirror::tick`]).
    pub async fn tick(&mut self, now_ns: u64) -> Result<(), VolumeError> {
        self.resume().await?;
        self.core.tick(now_ns);
        self.pump().await
    }

    /// The card was pulled out: fail it now (refused when it holds the only copy in sync, see
    /// [`Mirror::sd_removed`]).
    pub async fn sd_removed(&mut self) -> Result<(), VolumeError> {
        self.resume().await?;
        self.core.sd_removed()?;
        self.pump().await
    }

    /// A card was inserted: reset its driver and re-add it; the recovery runs in
    /// [`AsyncMirror::step`]. A card that cannot be read is refused ([`VolumeError::Probe`]),
    /// one smaller than the volume too ([`VolumeError::TooSmall`]).
    ///
    /// A card swapped for another between two commands is checked as
    /// [`Mirror::sd_inserted_begin`] checks it.
    pub async fn sd_inserted_begin(&mut self) -> Result<(), VolumeError> {
        self.sd.reinit();
        self.core.card_inserted();
        self.rejoin(SD, Join::Inserted).await
    }

    /// Bring a failed member back, as [`Mirror::rejoin_begin`] does (re-added and recovered
    /// from the bitmap when it carries this volume's metadata, otherwise added as new); the
    /// recovery runs in [`AsyncMirror::step`]. A member in sync or being rebuilt is left
    /// alone (one whose rebuild stopped joins again).
    pub async fn rejoin_begin(&mut self, id: MemberId) -> Result<(), VolumeError> {
        self.rejoin(id, Join::Back).await
    }

    /// Bring member `id` back rewritten in full from the volume, whatever its metadata says,
    /// as [`Mirror::rejoin_over_begin`] does (a member refused as a split brain, once the
    /// firmware chose to let go of the writes only it holds); the rebuild runs in
    /// [`AsyncMirror::step`].
    pub async fn rejoin_over_begin(&mut self, id: MemberId) -> Result<(), VolumeError> {
        self.rejoin(id, Join::Over).await
    }

    async fn rejoin(&mut self, id: MemberId, join: Join) -> Result<(), VolumeError> {
        // At an insertion the card's identity is read before a command a dropped call left
        // is done again: done first, a superblock write would put the volume's metadata on a
        // card swapped in, which the check would then take for the volume's. Done after, it
        // reaches the card only if the check let the card in (see `Core::job_next`).
        // A freeze a dropped call left is undone first all the same: frozen, a rebuild of
        // the card in place would look stopped, and the card not in place.
        if join != Join::Inserted {
            self.resume().await?;
        }
        self.core.thaw()?;
        let planned = self.rejoin_plan(id, join).await;
        self.resume().await?;
        let mut task = planned?;
        if let (None, Some(next)) = (&task, self.core.then_rejoin(join)) {
            task = self.rejoin_plan(next, Join::Back).await.unwrap_or(None);
        }
        match task {
            Some(mut task) => self.run(&mut task, &mut ReqBuf::None).await,
            None => Ok(()),
        }
    }

    async fn rejoin_plan(&mut self, id: MemberId, join: Join) -> Result<Option<Task>, VolumeError> {
        let Some(mut rejoin) = self.core.rejoin(id, join)? else {
            return Ok(None);
        };
        if id == NOR
            && (self.nor.refresh().await.map_err(|_| VolumeError::Probe)? || self.nor.damaged())
        {
            rejoin.in_full();
        }
        answer(&mut self.sd, &mut self.nor, &mut rejoin).await;
        self.core.rejoin_plan(rejoin)
    }

    /// Start a scrub (md's check, or repair with `repair`) that runs in [`AsyncMirror::step`]
    /// (see [`Mirror::scrub`]); the sectors found different are in
    /// [`AsyncMirror::mismatches`] once it is done.
    pub async fn scrub_begin(&mut self, repair: bool) -> Result<(), VolumeError> {
        self.resume().await?;
        self.core.scrub_start(repair)?;
        self.pump().await
    }

    /// Health of the volume (see [`Mirror::health`]).
    pub fn health(&self) -> Health {
        self.core.health(self.nor.warning())
    }

    /// Sectors the last scrub found different (md's `mismatch_cnt`).
    pub fn mismatches(&self) -> u64 {
        self.core.mismatches()
    }

    /// What the NOR member's mount warned of (see [`Health::warning`]).
    pub fn warning(&self) -> Option<crate::nor::NorWarning> {
        self.nor.warning()
    }

    /// Whether the mount kept a damaged NOR store as the freshest copy (see
    /// [`Health::nor_damaged`]).
    pub fn nor_damaged(&self) -> bool {
        self.core.nor_damaged
    }

    /// Whether the card in the slot was refused as another than the volume's, which held the
    /// only copy in sync (see [`Health::wrong_card`]).
    pub fn wrong_card(&self) -> bool {
        self.core.wrong_card
    }

    /// Whether a member holding writes the volume never took is kept out (see
    /// [`Health::split_brain`]).
    pub fn split_brain(&self) -> bool {
        self.core.split_brain
    }

    /// Read sectors starting at `sector`.
    pub async fn read(&mut self, sector: u64, blocks: &mut [Block]) -> Result<(), VolumeError> {
        self.resume().await?;
        for (at, run) in runs(sector, blocks.len()) {
            let mut task = self.core.submit(RequestOp::Read, at, run.len())?;
            let mut buf = ReqBuf::Read(&mut blocks[run]);
            self.run(&mut task, &mut buf).await?;
        }
        Ok(())
    }

    /// Write sectors starting at `sector`; acknowledged when the future completes `Ok`.
    pub async fn write(&mut self, sector: u64, blocks: &[Block]) -> Result<(), VolumeError> {
        self.resume().await?;
        for (at, run) in runs(sector, blocks.len()) {
            let mut task = self.core.submit(RequestOp::Write, at, run.len())?;
            self.run(&mut task, &mut ReqBuf::Write(&blocks[run]))
                .await?;
        }
        Ok(())
    }

    /// Mark the volume clean and give the members back (see [`Mirror::close`]).
    pub async fn close(mut self) -> Closed<A, B> {
        let closed = self.clean().await;
        give_back(self.into_members(), closed)
    }

    /// Mark the volume clean, as [`AsyncMirror::close`] does, and keep it mounted (see
    /// [`Mirror::clean`]): the next write marks it dirty again.
    pub async fn clean(&mut self) -> Result<(), VolumeError> {
        self.resume().await?;
        let cleaned = self.run(&mut Task::close(), &mut ReqBuf::None).await;
        // The close froze the array; the volume stays mounted.
        cleaned.and(self.core.thaw())
    }

    /// [`AsyncMirror::close`] for the volume in `place` (see [`AsyncMirror::assemble_in`]),
    /// which is empty afterwards; `None` when it was already. The volume is not moved before
    /// it is clean.
    pub async fn close_in(place: &mut Option<Self>) -> Option<Closed<A, B>> {
        let closed = place.as_mut()?.clean().await;
        let driver = place.take()?.into_members();
        Some(give_back(driver, closed))
    }

    /// Give the members back.
    pub fn into_members(self) -> (A, B) {
        (self.sd, self.nor)
    }

    /// Run `f` on the members (fault injection in tests and examples).
    pub fn with_members<R>(&mut self, f: impl FnOnce(&mut A, &mut B) -> R) -> R {
        f(&mut self.sd, &mut self.nor)
    }

    /// Volume size in sectors.
    pub fn sectors(&self) -> u64 {
        u64::from(self.core.meta.data_sectors)
    }

    /// Whether fewer members are in sync than slots.
    pub fn degraded(&self) -> bool {
        self.core.degraded()
    }

    /// Sectors copied by recoveries and resyncs since mount.
    pub fn synced_sectors(&self) -> u64 {
        self.core.synced_sectors
    }

    /// Issue the commands `task` needs until it is over. Each public call does
    /// [`AsyncMirror::resume`] first.
    async fn run(&mut self, task: &mut Task, buf: &mut ReqBuf<'_>) -> Result<(), VolumeError> {
        while let Some(job) = self.core.next(task)? {
            let sync = self.issue(job, buf).await;
            task.issued(sync);
        }
        Ok(())
    }

    /// Finish what a future dropped before it completed left undone: the command whose member
    /// I/O it awaited is done again, and a freeze it left is undone (see "Cancellation" in
    /// the module documentation). The rest of a dropped request's commands are carried out
    /// by the tasks that follow, as orphans (see [`Core::needs_scratch`]). Nothing to do
    /// otherwise.
    async fn resume(&mut self) -> Result<(), VolumeError> {
        if let Some(job) = self.in_flight.take() {
            self.core.lend_none();
            self.issue(job, &mut ReqBuf::None).await;
        }
        self.core.thaw()
    }

    async fn pump(&mut self) -> Result<(), VolumeError> {
        self.run(&mut Task::pump(), &mut ReqBuf::None).await
    }

    /// Carry out one command of the engine and complete it. Returns whether it was sync I/O.
    async fn issue(&mut self, job: Job, buf: &mut ReqBuf<'_>) -> bool {
        let mut job = job;
        let mut scratch = [Block::new()];
        let AsyncMirror {
            core,
            sd,
            nor,
            in_flight,
        } = self;
        while let Some(io) = core.job_next(&mut job, &mut scratch) {
            // Should this future be dropped while the member works, the next call does the
            // command again from its start.
            *in_flight = Some(job.again());
            let ok = match (io.write, io.member == SD) {
                (true, to_sd) => match io.src(core.sync, buf, &scratch) {
                    Some(s) if to_sd => sd.write(io.sector, s).await.is_ok(),
                    Some(s) => nor.write(io.sector, s).await.is_ok(),
                    None => false,
                },
                (false, from_sd) => match io.dst(core.sync, buf, &mut scratch) {
                    Some(d) if from_sd => sd.read(io.sector, d).await.is_ok(),
                    Some(d) => nor.read(io.sector, d).await.is_ok(),
                    None => false,
                },
            };
            *in_flight = None;
            job.done(ok);
        }
        let sync = core.job_finish(job);
        if core.take_release_nor() {
            nor.release_damage();
        }
        sync
    }
}
