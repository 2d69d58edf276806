//! The mirrored volume with async member I/O, for executors such as Embassy's.
//!
//! [`AsyncMember`] is the async block trait: a member whose reads and writes are futures (an SD
//! card driven by DMA, say). [`AsyncMirror`] drives the same engine as [`Mirror`](super::Mirror)
//! and awaits each member command, so a task that waits for the card lets the executor run other
//! tasks. Long work advances in [`AsyncMirror::step`], which returns after its budget like the
//! blocking binding's. [`Blocking`] makes any blocking [`Member`] an `AsyncMember` (the NOR store
//! on a blocking SPI bus: its calls are short).
//!
//! What it does not have: `format` and `scrub` (use [`Mirror`](super::Mirror) for them), and a
//! NOR store over `embedded-storage-async` (the NOR store is blocking).

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
    /// See [`Member::damaged`].
    fn damaged(&self) -> bool {
        false
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

    fn damaged(&self) -> bool {
        self.0.damaged()
    }
}

/// The mirrored volume over async members `A` (the SD card, member 0) and `B` (the NOR
/// member, write-mostly). Its methods take `&mut self`: one task owns it (share it through
/// the executor's mutex if several must).
pub struct AsyncMirror<'b, A: AsyncMember, B: AsyncMember> {
    array: Array<'b, 2, REQUESTS, 1>,
    sd: A,
    nor: B,
    sync: &'b mut [Block],
    meta: Meta,
    now: Instant,
    next_id: u64,
    synced_sectors: u64,
}

async fn probe_async<M: AsyncMember>(
    m: &mut M,
    id: MemberId,
) -> Result<Option<(SuperblockState<2>, Found)>, MemberFault> {
    let mut block = [Block::new()];
    m.read(SUPERBLOCK_SECTOR, &mut block).await?;
    let Some(sb) = parse_superblock(&block[0], id) else {
        return Ok(None);
    };
    m.read(BITMAP_SECTOR, &mut block).await?;
    Ok(parse_found(&sb, &block[0]))
}

impl<'b, A: AsyncMember, B: AsyncMember> AsyncMirror<'b, A, B> {
    /// Mount the volume as [`Mirror::assemble`] does (freshest superblock, bitmaps ORed, a
    /// member without this volume's metadata or a damaged NOR store added as new). The resync
    /// or recovery runs in [`AsyncMirror::step`]. On failure the members come back.
    pub async fn assemble<const BM: usize, const W: usize>(
        sd: A,
        nor: B,
        storage: &'b mut MirrorStorage<BM, W>,
        opts: Options,
    ) -> Result<Self, Refused<VolumeError, (A, B)>> {
        let (mut sd, mut nor) = (sd, nor);
        let sd_meta = probe_async(&mut sd, SD).await.ok().flatten();
        let nor_meta = if nor.damaged() {
            None
        } else {
            probe_async(&mut nor, NOR).await.ok().flatten()
        };
        let mut found = [
            sd_meta.as_ref().map(|m| m.0),
            nor_meta.as_ref().map(|m| m.0),
        ];
        if let (Some(a), Some(b)) = (&sd_meta, &nor_meta) {
            if a.1.uuid != b.1.uuid {
                let older = if a.0.events >= b.0.events { 1 } else { 0 };
                found[older] = None;
            }
        }
        let Some(fresh) = Array::<2, REQUESTS, 1>::choose_freshest(&found) else {
            return Err(refused(VolumeError::NoVolume, sd, nor));
        };
        let Some((_, fresh_meta)) = (if fresh == 0 { sd_meta } else { nor_meta }) else {
            return Err(refused(VolumeError::NoVolume, sd, nor));
        };
        let sizes = [
            sd.sectors().await.unwrap_or(0),
            nor.sectors().await.unwrap_or(0),
        ];
        let meta = Meta {
            uuid: fresh_meta.uuid,
            name: fresh_meta.name,
            ctime: fresh_meta.ctime,
            data_sectors: fresh_meta.size,
            chunk_sectors: fresh_meta.chunk_sectors,
            member_sectors: sizes,
        };
        let MirrorStorage { bits, hot, sync } = storage;
        let cfg = config(&meta, W, &opts);
        let need = Array::<2, REQUESTS, 1>::bitmap_bytes(&cfg);
        if need > BM.min(BITMAP_BYTES) || meta.chunk_sectors == 0 || W == 0 {
            return Err(refused(VolumeError::NoVolume, sd, nor));
        }
        bits.fill(0);
        let mut block = [Block::new()];
        for (i, found_here) in found.iter().enumerate() {
            if found_here.is_none() {
                continue;
            }
            let read = if i == 0 {
                sd.read(BITMAP_SECTOR, &mut block).await
            } else {
                nor.read(BITMAP_SECTOR, &mut block).await
            };
            if read.is_ok() {
                for (b, &m) in bits[..need]
                    .iter_mut()
                    .zip(&block[0].contents[256..256 + need])
                {
                    *b |= m;
                }
            }
        }
        let mut array = match Array::assemble(
            cfg,
            Some((&mut bits[..], &mut hot[..])),
            &found,
            StartPolicy::AllowDegraded,
        ) {
            Ok(a) => a,
            Err(e) => return Err(refused(VolumeError::Assemble(e), sd, nor)),
        };
        let window = u64::from(array.config().sync_window_sectors);
        array.set_sync_rate(Some(window * 1_000_000_000 / SYNC_PACE_NS));
        let mut vol = AsyncMirror {
            array,
            sd,
            nor,
            sync: sync.as_flattened_mut(),
            meta,
            now: Instant(1),
            next_id: 1,
            synced_sectors: 0,
        };
        match vol.add_missing().await {
            Ok(()) => Ok(vol),
            Err(error) => Err(Refused {
                error,
                driver: vol.into_members(),
            }),
        }
    }

    async fn add_missing(&mut self) -> Result<(), VolumeError> {
        self.array.freeze().map_err(VolumeError::Reconfig)?;
        self.pump(&mut ReqBuf::None, 0).await?;
        let mut result = Ok(());
        for id in [SD, NOR] {
            let absent = self
                .array
                .member(id)
                .is_some_and(|m| m.state == MemberState::Absent);
            let present = if id == SD {
                self.sd.sectors().await.is_ok()
            } else {
                self.nor.sectors().await.is_ok()
            };
            if absent && present {
                result = self
                    .array
                    .add_member(id, AddMember::New)
                    .map_err(VolumeError::Reconfig);
                if result.is_err() {
                    break;
                }
                self.pump(&mut ReqBuf::None, 0).await?;
            }
        }
        if result.is_ok() {
            result = self.keep_nor_write_mostly().await;
        }
        self.array.unfreeze().map_err(VolumeError::Reconfig)?;
        result?;
        self.pump(&mut ReqBuf::None, 0).await.map(|_| ())
    }

    async fn keep_nor_write_mostly(&mut self) -> Result<(), VolumeError> {
        let info = self.array.member(NOR);
        if info.is_some_and(|m| m.state != MemberState::Absent && !m.write_mostly) {
            self.array
                .set_write_mostly(NOR, true)
                .map_err(VolumeError::Reconfig)?;
            self.pump(&mut ReqBuf::None, 0).await?;
        }
        Ok(())
    }

    /// Advance the long work by at most `budget` sync commands (see [`Mirror::step`]).
    pub async fn step(&mut self, budget: u32) -> Result<Progress, VolumeError> {
        let budget = budget.max(1);
        let mut commands = 0;
        loop {
            commands += self.pump(&mut ReqBuf::None, budget - commands).await?;
            if commands >= budget {
                break;
            }
            match self.array.poll_timeout() {
                Some(t)
                    if self.array.status().sync.is_some() && t.0 <= self.now.0 + SYNC_PACE_NS =>
                {
                    self.now = Instant(t.0.max(self.now.0));
                    self.array.handle_timeout(self.now);
                }
                _ => break,
            }
        }
        let st = self.array.status();
        let (action, done, total) = match st.sync {
            Some((a, pos, end)) => (Some(a), pos, end),
            None => (None, 0, 0),
        };
        Ok(Progress {
            action,
            done,
            total,
            commands,
            busy: st.sync.is_some() || st.metadata_pending,
        })
    }

    /// Run the timers that are due at `now_ns` (see [`Mirror::tick`]).
    pub async fn tick(&mut self, now_ns: u64) -> Result<(), VolumeError> {
        if now_ns > self.now.0 {
            self.now = Instant(now_ns);
        }
        self.array.handle_timeout(self.now);
        self.pump(&mut ReqBuf::None, 0).await.map(|_| ())
    }

    /// The card was pulled out: fail it now.
    pub async fn sd_removed(&mut self) -> Result<(), VolumeError> {
        match self.array.fail_member(self.now, SD) {
            Ok(()) | Err(ReconfigError::WrongState(_)) => {}
            Err(e) => return Err(VolumeError::Reconfig(e)),
        }
        self.pump(&mut ReqBuf::None, 0).await.map(|_| ())
    }

    /// A card was inserted: reset its driver and re-add it; the recovery runs in
    /// [`AsyncMirror::step`]. A card that cannot be read is refused ([`VolumeError::Probe`]).
    pub async fn sd_inserted_begin(&mut self) -> Result<(), VolumeError> {
        self.sd.reinit();
        let state = self
            .array
            .member(SD)
            .map_or(MemberState::Absent, |m| m.state);
        if matches!(state, MemberState::InSync | MemberState::Recovering { .. }) {
            return Ok(());
        }
        let how = match probe_async(&mut self.sd, SD).await {
            Err(_) => return Err(VolumeError::Probe),
            Ok(Some((st, found))) if found.uuid == self.meta.uuid => match st.own_role() {
                Role::Active(slot) => AddMember::ReAdd {
                    slot,
                    events: st.events,
                    write_mostly: st.write_mostly,
                    was_in_sync: st.recovery_offset.is_none(),
                },
                _ => AddMember::New,
            },
            Ok(_) => AddMember::New,
        };
        self.array.freeze().map_err(VolumeError::Reconfig)?;
        let mut result = self.pump(&mut ReqBuf::None, 0).await.map(|_| ());
        if result.is_ok() && state != MemberState::Absent {
            result = self.array.remove_member(SD).map_err(VolumeError::Reconfig);
            if result.is_ok() {
                result = self.pump(&mut ReqBuf::None, 0).await.map(|_| ());
            }
        }
        if result.is_ok() {
            result = self
                .array
                .add_member(SD, how)
                .map_err(VolumeError::Reconfig);
            if result.is_ok() {
                result = self.pump(&mut ReqBuf::None, 0).await.map(|_| ());
            }
        }
        self.array.unfreeze().map_err(VolumeError::Reconfig)?;
        result?;
        self.pump(&mut ReqBuf::None, 0).await.map(|_| ())
    }

    /// Read sectors starting at `sector`.
    pub async fn read(&mut self, sector: u64, blocks: &mut [Block]) -> Result<(), VolumeError> {
        let mut done = 0;
        while done < blocks.len() {
            let n = (blocks.len() - done).min(MAX_REQUEST_SECTORS as usize);
            let at = sector + done as u64;
            self.request(
                RequestOp::Read,
                at,
                ReqBuf::Read(&mut blocks[done..done + n]),
            )
            .await?;
            done += n;
        }
        Ok(())
    }

    /// Write sectors starting at `sector`; acknowledged when the future completes `Ok`.
    pub async fn write(&mut self, sector: u64, blocks: &[Block]) -> Result<(), VolumeError> {
        let mut done = 0;
        while done < blocks.len() {
            let n = (blocks.len() - done).min(MAX_REQUEST_SECTORS as usize);
            let at = sector + done as u64;
            self.request(RequestOp::Write, at, ReqBuf::Write(&blocks[done..done + n]))
                .await?;
            done += n;
        }
        Ok(())
    }

    /// Mark the volume clean and give the members back (see [`Mirror::close`]).
    pub async fn close(mut self) -> Result<(A, B), Refused<VolumeError, (A, B)>> {
        match self.close_inner().await {
            Ok(()) => Ok(self.into_members()),
            Err(error) => Err(Refused {
                error,
                driver: self.into_members(),
            }),
        }
    }

    async fn close_inner(&mut self) -> Result<(), VolumeError> {
        self.array.freeze().map_err(VolumeError::Reconfig)?;
        self.pump(&mut ReqBuf::None, 0).await?;
        self.now = self.now.after(1);
        self.array.request_clean(self.now);
        for _ in 0..IDLE_ROUNDS {
            self.pump(&mut ReqBuf::None, 0).await?;
            if !self.array.status().metadata_pending && self.array.is_quiesced() {
                return Ok(());
            }
            self.now = self.now.after(1_000_000);
            self.array.handle_timeout(self.now);
        }
        Err(VolumeError::Stalled)
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
        self.meta.data_sectors
    }

    /// Whether fewer members are in sync than slots, and the sectors synced since mount.
    pub fn degraded(&self) -> bool {
        let st = self.array.status();
        st.in_sync < st.raid_disks
    }

    /// Sectors copied by recoveries and resyncs since mount.
    pub fn synced_sectors(&self) -> u64 {
        self.synced_sectors
    }

    async fn request(
        &mut self,
        op: RequestOp,
        sector: u64,
        mut buf: ReqBuf<'_>,
    ) -> Result<(), VolumeError> {
        let sectors = match &buf {
            ReqBuf::Read(b) => b.len(),
            ReqBuf::Write(b) => b.len(),
            ReqBuf::None => 0,
        } as u32;
        let id = self.next_id;
        self.next_id += 1;
        self.now = self.now.after(1);
        let req = Request {
            id,
            op,
            sector,
            sectors,
            buffer: 0,
            fua: false,
        };
        match self.array.submit(self.now, req) {
            Ok(()) => {}
            Err(SubmitError::OutOfRange(end)) => return Err(VolumeError::OutOfRange { end }),
            Err(_) => return Err(VolumeError::Io),
        }
        let mut idle = 0;
        loop {
            while let Some(done) = self.array.poll_completion() {
                if done.id == id {
                    while self.array.poll_event().is_some() {}
                    return match done.outcome {
                        Outcome::Ok => Ok(()),
                        Outcome::IoError => Err(VolumeError::Io),
                    };
                }
            }
            if let Some(cmd) = self.array.poll_io() {
                self.issue(cmd, &mut buf).await;
                idle = 0;
                continue;
            }
            while self.array.poll_event().is_some() {}
            idle += 1;
            if idle > IDLE_ROUNDS {
                return Err(VolumeError::Stalled);
            }
            self.now = self.now.after(1_000_000);
            self.array.handle_timeout(self.now);
        }
    }

    async fn pump(&mut self, buf: &mut ReqBuf<'_>, budget: u32) -> Result<u32, VolumeError> {
        let mut sync = 0u32;
        let mut other = 0u32;
        while let Some(cmd) = self.array.poll_io() {
            if self.issue(cmd, buf).await {
                sync += 1;
                if sync >= budget.max(1) {
                    break;
                }
            } else {
                other += 1;
                if other > IDLE_ROUNDS {
                    return Err(VolumeError::Stalled);
                }
            }
        }
        while self.array.poll_event().is_some() {}
        Ok(sync)
    }

    async fn issue(&mut self, cmd: IoCmd<2>, buf: &mut ReqBuf<'_>) -> bool {
        match cmd {
            IoCmd::Member(io) => {
                let sync = matches!(io.buffer, Buffer::Sync { .. });
                let ok = self
                    .member_io(io.member, io.op, io.sector, io.sectors, io.buffer, buf)
                    .await;
                if sync && io.op == MemberOp::Write && ok {
                    self.synced_sectors += u64::from(io.sectors);
                }
                let res = if ok { IoResult::Ok } else { IoResult::Error };
                let _ = self.array.complete(self.now, io.tag, res);
                sync
            }
            IoCmd::Superblock { tag, member, state } => {
                let mut block = [Block::new()];
                let mut ok = render_superblock(&self.meta, member, &state, &mut block[0]).is_ok()
                    && self.write_to(member, SUPERBLOCK_SECTOR, &block).await;
                ok = ok
                    && render_bitmap(&self.meta, self.array.bitmap_page(0), &state, &mut block[0])
                        .is_ok()
                    && self.write_to(member, BITMAP_SECTOR, &block).await;
                let res = if ok { IoResult::Ok } else { IoResult::Error };
                let _ = self.array.complete(self.now, tag, res);
                false
            }
            IoCmd::BitmapPage { tag, member, .. } => {
                let mut block = [Block::new()];
                let ok = match self.array.superblock_for(member) {
                    Some(st) => {
                        render_bitmap(&self.meta, self.array.bitmap_page(0), &st, &mut block[0])
                            .is_ok()
                            && self.write_to(member, BITMAP_SECTOR, &block).await
                    }
                    None => false,
                };
                let res = if ok { IoResult::Ok } else { IoResult::Error };
                let _ = self.array.complete(self.now, tag, res);
                false
            }
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
                true
            }
        }
    }

    async fn write_to(&mut self, member: MemberId, sector: u64, blocks: &[Block]) -> bool {
        if member == SD {
            self.sd.write(sector, blocks).await.is_ok()
        } else {
            self.nor.write(sector, blocks).await.is_ok()
        }
    }

    async fn member_io(
        &mut self,
        member: MemberId,
        op: MemberOp,
        sector: u64,
        sectors: u32,
        buffer: Buffer,
        req: &mut ReqBuf<'_>,
    ) -> bool {
        let at = DATA_OFFSET + sector;
        let n = sectors as usize;
        let w = self.sync.len() / 2;
        let AsyncMirror { sd, nor, sync, .. } = self;
        match op {
            MemberOp::Flush => true,
            MemberOp::Discard => {
                let zero = [Block::new()];
                for i in 0..u64::from(sectors) {
                    let ok = if member == SD {
                        sd.write(at + i, &zero).await.is_ok()
                    } else {
                        nor.write(at + i, &zero).await.is_ok()
                    };
                    if !ok {
                        return false;
                    }
                }
                true
            }
            MemberOp::Read => {
                let dst: Option<&mut [Block]> = match (buffer, req) {
                    (Buffer::Request { offset, .. }, ReqBuf::Read(b)) => {
                        b.get_mut(offset as usize..offset as usize + n)
                    }
                    (Buffer::Sync { member: m, .. }, _) => {
                        sync.get_mut(usize::from(m.0) * w..usize::from(m.0) * w + n)
                    }
                    _ => None,
                };
                let Some(d) = dst else { return false };
                if member == SD {
                    sd.read(at, d).await.is_ok()
                } else {
                    nor.read(at, d).await.is_ok()
                }
            }
            MemberOp::Write => {
                let src: Option<&[Block]> = match (buffer, req) {
                    (Buffer::Request { offset, .. }, ReqBuf::Write(b)) => {
                        b.get(offset as usize..offset as usize + n)
                    }
                    (Buffer::Request { offset, .. }, ReqBuf::Read(b)) => {
                        b.get(offset as usize..offset as usize + n)
                    }
                    (Buffer::Sync { member: m, .. }, _) => {
                        sync.get(usize::from(m.0) * w..usize::from(m.0) * w + n)
                    }
                    _ => None,
                };
                let Some(s) = src else { return false };
                if member == SD {
                    sd.write(at, s).await.is_ok()
                } else {
                    nor.write(at, s).await.is_ok()
                }
            }
        }
    }
}
