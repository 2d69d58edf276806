//! The array engine of `raid1 run`: the sans-IO core driven over the io_uring member engine,
//! exported as an NBD [`Backend`].
//!
//! Every input to the core (an NBD request, a member completion, a timer, a control command)
//! is followed by [`RaidEngine::drive`], which drains the core's outputs: member I/O and
//! metadata writes go to [`MemberIo`] (queued while the pool or the ring is full), finished
//! logical requests become NBD completions, and monitor events are kept for the control socket.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::RawFd;

use raid1_core::{
    AddMember, Buffer, Completion as CoreCompletion, Event, IoCmd, IoResult, MemberId, MemberOp,
    MemberState, Outcome, Request as CoreRequest, RequestOp as CoreOp, Role, SubmitError,
    SuperblockState, Tag, bridge,
};
use raid1_superblock::{BitmapState, BitmapSuperblock, MdTime};

use super::{MEMBERS, RaidArray};
use crate::errno::Errno;
use crate::member::Identity;
use crate::member::strict::MemberMeta;
use crate::member_io::{self, BufferId, EngineConfig, IoCommand, IoOp, MemberIo};
use crate::nbd::{
    Backend, Busy, Capabilities, Completion, LentBuffer, Payload, Request, RequestOp,
};

/// Largest logical request in bytes (the NBD maximum payload and the pool buffer size).
pub const MAX_REQUEST_BYTES: u32 = 1 << 20;

/// One member device of the running array.
#[derive(Debug)]
pub struct Dev {
    /// Its metadata (the superblock template is the last one written; the path is absolute).
    pub meta: MemberMeta,
    /// Index in the member engine.
    pub io_index: usize,
    /// Write errors seen.
    pub errors: u64,
    /// The errno of a member command that failed as on a device that is gone (ENXIO, ENODEV).
    pub gone: Option<i32>,
}

impl Dev {
    /// A member device with metadata `meta`. Its path is made absolute, symlinks resolved, so
    /// that `fail` and `remove` can name it by that path after the path is gone.
    pub fn new(mut meta: MemberMeta) -> Dev {
        meta.path = std::fs::canonicalize(&meta.path)
            .or_else(|_| std::path::absolute(&meta.path))
            .unwrap_or(meta.path);
        Dev {
            meta,
            io_index: usize::MAX,
            errors: 0,
            gone: None,
        }
    }

    /// Why this member counts as detached (mdadm's `detached` keyword: its device is no longer
    /// there), or `None` while it is: the path it was opened from no longer exists or names
    /// another file or device, its block device number is gone from the system, or one of its
    /// commands failed with ENXIO or ENODEV.
    pub fn detached(&self) -> Option<String> {
        if let Some(errno) = self.gone {
            return Some(format!(
                "its I/O failed with {}",
                io::Error::from_raw_os_error(errno)
            ));
        }
        if let Identity::Block(rdev) = self.meta.id {
            let (major, minor) = (libc::major(rdev), libc::minor(rdev));
            if !std::path::Path::new(&format!("/sys/dev/block/{major}:{minor}")).exists() {
                return Some(format!("block device {major}:{minor} no longer exists"));
            }
        }
        match crate::member::identity_of(&self.meta.path) {
            Ok(id) if id == self.meta.id => None,
            Ok(_) => Some(format!(
                "{} now names another file or device",
                self.meta.path.display()
            )),
            Err(e) => Some(format!("{}: {e}", self.meta.path.display())),
        }
    }

    /// Byte offset of data sector `s`.
    fn data_byte(&self, s: u64) -> u64 {
        (self.meta.sb.data_offset + s) * 512
    }
}

/// What finishes when a member command completes.
#[derive(Clone, Copy, Debug)]
enum Done {
    /// A core command.
    Core(Tag),
    /// One part of a metadata write made of several member commands.
    Part(Tag),
    /// A write of the stop sequence.
    Stop,
}

/// A request's pool buffer and a byte offset into it: member reads land there and member
/// writes are sent from there, with no copy.
#[derive(Clone, Copy, Debug)]
struct InPool {
    buffer: u16,
    at: u32,
}

#[derive(Debug)]
enum JobOp {
    /// Read into a request's buffer.
    Read {
        into: InPool,
        len: u32,
    },
    /// Read a sync window's data (through a pool buffer, copied into the window's buffer).
    ReadSync {
        window: u16,
        member: u8,
        len: u32,
    },
    /// Write from a request's buffer.
    Write {
        from: InPool,
        len: u32,
        fua: bool,
    },
    /// Write a sync window's data (copied into a pool buffer).
    WriteSync {
        window: u16,
        member: u8,
        len: u32,
        fua: bool,
    },
    /// Write metadata the engine rendered.
    WriteMeta {
        data: Vec<u8>,
        fua: bool,
    },
    Flush,
    Discard {
        len: u32,
    },
}

/// No pool buffer (flush, trim and write-zeroes requests).
const NO_BUFFER: u32 = u32::MAX;

#[derive(Debug)]
struct Job {
    member: u8,
    offset: u64,
    op: JobOp,
    done: Done,
}

#[derive(Debug)]
struct InFlight {
    member: u8,
    done: Done,
    /// A pool buffer taken for this command alone (sync and metadata I/O), freed at completion.
    pool: Option<BufferId>,
    /// A request's buffer this command holds a reference on.
    held: Option<u16>,
    /// A sync read: the window and member whose buffer receives the data.
    sync_read: Option<(u16, u8)>,
    len: u32,
}

/// A logical request of an NBD client.
#[derive(Debug)]
struct Logical {
    handle: u32,
    read: bool,
    length: u32,
}

/// The running array.
pub struct RaidEngine {
    /// The core.
    pub array: Box<RaidArray>,
    /// Member devices by `MemberId`.
    pub devs: Vec<Option<Dev>>,
    io: MemberIo,
    clock: std::time::Instant,
    next_tag: u64,
    inflight: HashMap<u64, InFlight>,
    pending: VecDeque<Job>,
    parts: HashMap<u64, (u32, bool)>,
    /// References on each pool buffer lent to a request: the request (or the NBD server, while
    /// it fills a write's payload or sends a read's data) holds one, each member command using
    /// it one; the last one gives it back to the pool.
    refs: Vec<u16>,
    /// Reads done whose buffer a member command still uses; answered when it is free.
    deferred: Vec<(u64, u32, u32)>,
    logical: HashMap<u64, Logical>,
    sync_buffers: HashMap<(u16, u8), Vec<u8>>,
    done: Vec<Completion>,
    /// Monitor events not yet taken by the control socket.
    pub events: Vec<Event>,
    /// Writes of the stop sequence still in flight, and errors among them.
    stop_writes: (u32, u32),
    /// Size in bytes of the export.
    size: u64,
    /// Time of the last write, for `Update Time`.
    pub update_time: u64,
    /// Chunks of trim / write-zeroes requests waiting for a slot in the core:
    /// (core id, sector, sectors, flush instead of discard).
    zero_queue: VecDeque<(u64, u64, u32, bool)>,
    /// Core id of a chunk → the NBD request it belongs to.
    zero_chunks: HashMap<u64, u64>,
    /// NBD request → chunks not yet completed, an error seen, FUA asked.
    zero_parents: HashMap<u64, (u32, bool, bool)>,
    next_chunk: u64,
    /// Superblock writes held back until the same command's bitmap header write completed.
    after_bitmap: HashMap<u64, Job>,
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl RaidEngine {
    /// Builds the engine: opens every device with the member engine, each checked to be the
    /// device whose superblock assembly read ([`open_checked`]). These descriptors stay open
    /// until the member is removed or the array stops.
    pub fn new(array: Box<RaidArray>, devs: Vec<Option<Dev>>) -> Result<RaidEngine, String> {
        let engine_config = EngineConfig {
            queue_depth: 256,
            buffer_size: MAX_REQUEST_BYTES as usize,
            buffer_count: 96,
            register_buffers: true,
        };
        let size = array.config().data_sectors * 512;
        let io = MemberIo::with_slots(MEMBERS, engine_config)
            .map_err(|e| format!("member I/O engine (io_uring): {e}"))?;
        let mut e = RaidEngine {
            array,
            devs,
            io,
            clock: std::time::Instant::now(),
            next_tag: 1,
            // Tables and queues at their working size from the start: the hot path never grows
            // them (no allocation per request, whatever the timing).
            inflight: HashMap::with_capacity(engine_config.queue_depth as usize),
            pending: VecDeque::with_capacity(engine_config.queue_depth as usize),
            parts: HashMap::new(),
            refs: vec![0; usize::from(engine_config.buffer_count)],
            deferred: Vec::with_capacity(super::REQUESTS),
            logical: HashMap::with_capacity(super::REQUESTS),
            sync_buffers: HashMap::new(),
            done: Vec::with_capacity(super::REQUESTS),
            events: Vec::new(),
            stop_writes: (0, 0),
            size,
            update_time: unix_now(),
            zero_queue: VecDeque::new(),
            zero_chunks: HashMap::new(),
            zero_parents: HashMap::new(),
            next_chunk: 0,
            after_bitmap: HashMap::new(),
        };
        for i in 0..e.devs.len() {
            let Some(dev) = e.devs[i].as_ref() else {
                continue;
            };
            let member = open_checked(dev, i)?;
            e.register(i, member)?;
        }
        e.drive();
        Ok(e)
    }

    /// Registers the open device of member `i` with the member engine.
    fn register(&mut self, i: usize, member: member_io::Member) -> Result<(), String> {
        if let Err((m, err)) = self.io.attach(i, member) {
            return Err(format!(
                "{} (member {i}): cannot register it with io_uring: {err}",
                m.path().display()
            ));
        }
        if let Some(Some(dev)) = self.devs.get_mut(i) {
            dev.io_index = i;
        }
        Ok(())
    }

    /// Nanoseconds since the engine started (the core's clock).
    pub fn now(&self) -> raid1_core::Instant {
        raid1_core::Instant(self.clock.elapsed().as_nanos() as u64)
    }

    /// The pool's memory: its base, the size of one buffer and their number (for the link to
    /// the NBD thread, which touches only the buffers handed to it).
    pub fn pool_region(&self) -> (std::ptr::NonNull<u8>, usize, usize) {
        self.io.pool_region()
    }

    /// Member commands in flight or waiting.
    pub fn io_busy(&self) -> bool {
        self.io.in_flight() > 0 || !self.pending.is_empty()
    }

    /// The ring's descriptor (readable when completions wait).
    pub fn ring_fd(&self) -> RawFd {
        self.io.ring_fd()
    }

    /// Blocks until at least one member command completes (if any is in flight).
    pub fn wait_io(&mut self) -> io::Result<()> {
        if self.io.in_flight() > 0 {
            self.io.wait(1)?;
        }
        Ok(())
    }

    /// Fires the core's timer if due, reaps member completions and drains the core.
    pub fn service(&mut self) {
        let now = self.now();
        if self.array.poll_timeout().is_some_and(|t| t <= now) {
            self.array.handle_timeout(now);
        }
        self.reap();
        self.drive();
    }

    /// Time until the core's next timer, if any.
    pub fn next_timeout(&self) -> Option<std::time::Duration> {
        let t = self.array.poll_timeout()?;
        let now = self.now();
        Some(std::time::Duration::from_nanos(t.0.saturating_sub(now.0)))
    }

    fn reap(&mut self) {
        while let Some(c) = self.io.reap() {
            let Some(f) = self.inflight.remove(&c.tag) else {
                continue;
            };
            let ok = matches!(c.result, Ok(n) if n == f.len);
            if let Err(Errno(e @ (libc::ENXIO | libc::ENODEV))) = c.result {
                if let Some(Some(dev)) = self.devs.get_mut(usize::from(f.member)) {
                    dev.gone = Some(e);
                }
            }
            if let (true, Some(key), Some(pool)) = (ok, f.sync_read, f.pool) {
                // The one copy of a sync read: the window's buffer is compared and written
                // from later (a sync window is not a request's buffer).
                if let (Some(src), Some(dst)) =
                    (self.io.buffer(pool), self.sync_buffers.get_mut(&key))
                {
                    let n = dst.len().min(f.len as usize);
                    dst[..n].copy_from_slice(&src[..n]);
                }
            }
            if let Some(pool) = f.pool {
                self.io.free_buffer(pool);
            }
            if let Some(b) = f.held {
                self.release(b);
            }
            self.finish(f.done, ok);
        }
    }

    /// A fresh pool buffer for a request, with the request's reference on it.
    fn take_buffer(&mut self) -> Option<u16> {
        let b = self.io.alloc_buffer()?;
        if let Some(r) = self.refs.get_mut(usize::from(b.0)) {
            *r = 1;
        }
        Some(b.0)
    }

    /// One more reference on a request's buffer (a member command uses it).
    fn hold(&mut self, buffer: u16) {
        if let Some(r) = self.refs.get_mut(usize::from(buffer)) {
            *r += 1;
        }
    }

    /// Drops a reference on a request's buffer; the last one gives it back to the pool.
    fn release(&mut self, buffer: u16) {
        let Some(r) = self.refs.get_mut(usize::from(buffer)) else {
            return;
        };
        *r = r.saturating_sub(1);
        if *r == 0 {
            self.io.free_buffer(BufferId(buffer));
        }
    }

    fn finish(&mut self, done: Done, ok: bool) {
        let now = self.now();
        let res = if ok { IoResult::Ok } else { IoResult::Error };
        match done {
            Done::Core(tag) => {
                let _ = self.array.complete(now, tag, res);
            }
            Done::Part(tag) => {
                let Some(p) = self.parts.get_mut(&tag.0) else {
                    return;
                };
                p.0 -= 1;
                p.1 |= !ok;
                if let Some(job) = self.after_bitmap.remove(&tag.0) {
                    self.pending.push_back(job);
                    return;
                }
                if p.0 == 0 {
                    let failed = p.1;
                    self.parts.remove(&tag.0);
                    let res = if failed {
                        IoResult::Error
                    } else {
                        IoResult::Ok
                    };
                    let _ = self.array.complete(now, tag, res);
                }
            }
            Done::Stop => {
                self.stop_writes.0 -= 1;
                if !ok {
                    self.stop_writes.1 += 1;
                }
            }
        }
    }

    /// Drains every output of the core and pushes member commands to the kernel.
    pub fn drive(&mut self) {
        loop {
            let mut progress = false;
            while let Some(cmd) = self.array.poll_io() {
                progress = true;
                self.command(cmd);
            }
            while let Some(c) = self.array.poll_completion() {
                progress = true;
                self.completed(c);
            }
            while let Some(ev) = self.array.poll_event() {
                self.events.push(ev);
            }
            progress |= self.submit_zero_chunks();
            self.issue();
            if !self.deferred.is_empty() {
                self.answer_reads();
            }
            if !progress {
                break;
            }
        }
        let _ = self.io.flush();
    }

    /// Submits queued trim / write-zeroes chunks while the core has room.
    fn submit_zero_chunks(&mut self) -> bool {
        let mut any = false;
        while let Some(&(id, sector, sectors, flush)) = self.zero_queue.front() {
            let req = CoreRequest {
                id,
                op: if flush {
                    CoreOp::Flush
                } else {
                    CoreOp::Discard
                },
                sector,
                sectors,
                buffer: NO_BUFFER,
                fua: false,
            };
            let now = self.now();
            match self.array.submit(now, req) {
                Err(SubmitError::Busy) => break,
                Ok(()) => {}
                Err(_) => {
                    let _ = self.zero_queue.pop_front();
                    self.chunk_done(id, false);
                    any = true;
                    continue;
                }
            }
            let _ = self.zero_queue.pop_front();
            any = true;
        }
        any
    }

    fn chunk_done(&mut self, chunk: u64, ok: bool) {
        let Some(parent) = self.zero_chunks.remove(&chunk) else {
            return;
        };
        let Some(p) = self.zero_parents.get_mut(&parent) else {
            return;
        };
        p.0 -= 1;
        p.1 |= !ok;
        if p.0 > 0 {
            return;
        }
        let (_, failed, fua) = *p;
        if fua && !failed {
            // FUA: everything zeroed is made durable before the reply.
            p.0 = 1;
            p.2 = false;
            let id = self.chunk_id();
            self.zero_chunks.insert(id, parent);
            self.zero_queue.push_back((id, 0, 0, true));
            return;
        }
        self.zero_parents.remove(&parent);
        self.done.push(Completion {
            id: parent,
            result: if failed {
                Err(Errno(libc::EIO))
            } else {
                Ok(Payload::NONE)
            },
        });
    }

    fn chunk_id(&mut self) -> u64 {
        self.next_chunk += 1;
        (1 << 63) | self.next_chunk
    }

    /// Splits a trim or write-zeroes request into core discards (which read back as zeroes).
    fn queue_zeroes(&mut self, request: &Request) {
        let max = self.array.config().max_request_sectors;
        let mut sector = request.offset / 512;
        let end = sector + u64::from(request.length / 512);
        let mut chunks = 0;
        while sector < end {
            let n = (end - sector).min(u64::from(max)) as u32;
            let id = self.chunk_id();
            self.zero_chunks.insert(id, request.id);
            self.zero_queue.push_back((id, sector, n, false));
            sector += u64::from(n);
            chunks += 1;
        }
        if chunks == 0 {
            self.done.push(Completion {
                id: request.id,
                result: Ok(Payload::NONE),
            });
            return;
        }
        self.zero_parents
            .insert(request.id, (chunks, false, request.fua));
    }

    fn completed(&mut self, c: CoreCompletion) {
        if self.zero_chunks.contains_key(&c.id) {
            self.chunk_done(c.id, c.outcome == Outcome::Ok);
            return;
        }
        let Some(l) = self.logical.remove(&c.id) else {
            return;
        };
        if c.outcome == Outcome::Ok && l.read {
            // The data goes to the client from the buffer it was read into, which the server
            // gives back once sent; the request's reference passes to it.
            self.deferred.push((c.id, l.handle, l.length));
            self.answer_reads();
            return;
        }
        if l.handle != NO_BUFFER {
            self.release(l.handle as u16);
        }
        let result = match c.outcome {
            Outcome::Ok => Ok(Payload::NONE),
            Outcome::IoError => Err(Errno(libc::EIO)),
        };
        self.done.push(Completion { id: c.id, result });
    }

    /// Answers the reads done whose buffer no member command uses any more (a read completes
    /// after its member I/O, so this waits only if a frontend bug left one in flight).
    fn answer_reads(&mut self) {
        let mut i = 0;
        while i < self.deferred.len() {
            let (id, buffer, len) = self.deferred[i];
            if self.refs.get(buffer as usize).copied().unwrap_or(0) > 1 {
                i += 1;
                continue;
            }
            self.deferred.swap_remove(i);
            self.done.push(Completion {
                id,
                result: Ok(Payload::Lent(LentBuffer { id: buffer, len })),
            });
        }
    }

    /// `len` bytes of a buffer the core names, where they are (for compares).
    fn bytes(&self, buf: Buffer, len: usize) -> Option<&[u8]> {
        match buf {
            Buffer::Request { handle, offset } => self
                .io
                .buffer(BufferId(u16::try_from(handle).ok()?))?
                .get(offset as usize * 512..)?
                .get(..len),
            Buffer::Sync { window, member } => {
                self.sync_buffers.get(&(window, member.0))?.get(..len)
            }
            Buffer::None => None,
        }
    }

    fn sync_buffer(&mut self, window: u16, member: MemberId) {
        let len = self.array.config().sync_window_sectors as usize * 512;
        self.sync_buffers
            .entry((window, member.0))
            .or_insert_with(|| vec![0u8; len]);
    }

    fn command(&mut self, cmd: IoCmd<MEMBERS>) {
        match cmd {
            IoCmd::Member(m) => {
                let Some(dev) = self
                    .devs
                    .get(usize::from(m.member.0))
                    .and_then(|d| d.as_ref())
                else {
                    let _ = self.array.complete(self.now(), m.tag, IoResult::Error);
                    return;
                };
                let offset = dev.data_byte(m.sector);
                let len = m.sectors * 512;
                let write = m.op == MemberOp::Write;
                let op = match (m.op, m.buffer) {
                    (MemberOp::Read | MemberOp::Write, Buffer::Request { handle, offset }) => {
                        let Ok(buffer) = u16::try_from(handle) else {
                            let _ = self.array.complete(self.now(), m.tag, IoResult::Error);
                            return;
                        };
                        // The command holds the request's buffer until it completes.
                        self.hold(buffer);
                        let at = InPool {
                            buffer,
                            at: offset * 512,
                        };
                        if write {
                            JobOp::Write {
                                from: at,
                                len,
                                fua: m.fua,
                            }
                        } else {
                            JobOp::Read { into: at, len }
                        }
                    }
                    (MemberOp::Read | MemberOp::Write, Buffer::Sync { window, member }) => {
                        self.sync_buffer(window, member);
                        if write {
                            JobOp::WriteSync {
                                window,
                                member: member.0,
                                len,
                                fua: m.fua,
                            }
                        } else {
                            JobOp::ReadSync {
                                window,
                                member: member.0,
                                len,
                            }
                        }
                    }
                    (MemberOp::Read | MemberOp::Write, Buffer::None) => {
                        let _ = self.array.complete(self.now(), m.tag, IoResult::Error);
                        return;
                    }
                    (MemberOp::Flush, _) => JobOp::Flush,
                    (MemberOp::Discard, _) => JobOp::Discard { len },
                };
                if write {
                    self.update_time = unix_now();
                }
                self.pending.push_back(Job {
                    member: m.member.0,
                    offset,
                    op,
                    done: Done::Core(m.tag),
                });
            }
            IoCmd::Superblock { tag, member, state } => {
                let mut writes = self.render_superblock(member, &state);
                // md writes the bitmap header before the superblocks (md_update_sb), so a
                // bitmap's events never fall behind the superblock's: that would mean "out of
                // date" (a full resync) at the next start.
                if writes.len() == 2 {
                    let (offset, data) = writes.remove(0);
                    self.after_bitmap.insert(
                        tag.0,
                        Job {
                            member: member.0,
                            offset,
                            op: JobOp::WriteMeta { data, fua: true },
                            done: Done::Part(tag),
                        },
                    );
                    self.parts.insert(tag.0, (2, false));
                    self.queue_parts_counted(tag, member, writes);
                } else {
                    self.queue_parts(tag, member, writes);
                }
            }
            IoCmd::BitmapPage { tag, member, page } => {
                let writes = self.render_bitmap_page(member, page);
                self.queue_parts(tag, member, writes);
            }
            IoCmd::Compare { tag, a, b, sectors } => {
                let len = sectors as usize * 512;
                let equal = match (self.bytes(a, len), self.bytes(b, len)) {
                    (Some(x), Some(y)) => x == y,
                    // A buffer the engine does not have: as a mismatch, so repair rewrites.
                    _ => false,
                };
                let _ = self.array.complete_compare(self.now(), tag, equal);
            }
        }
    }

    fn queue_parts(&mut self, tag: Tag, member: MemberId, writes: Vec<(u64, Vec<u8>)>) {
        if writes.is_empty() {
            let _ = self.array.complete(self.now(), tag, IoResult::Error);
            return;
        }
        self.parts.insert(tag.0, (writes.len() as u32, false));
        self.queue_parts_counted(tag, member, writes);
    }

    /// Queues `writes` as parts of `tag` (already counted in `parts`).
    fn queue_parts_counted(&mut self, tag: Tag, member: MemberId, writes: Vec<(u64, Vec<u8>)>) {
        for (offset, data) in writes {
            self.pending.push_back(Job {
                member: member.0,
                offset,
                op: JobOp::WriteMeta { data, fua: true },
                done: Done::Part(tag),
            });
        }
    }

    /// The superblock page (and the bitmap's first block, with its header) for `member`.
    fn render_superblock(
        &mut self,
        member: MemberId,
        st: &SuperblockState<MEMBERS>,
    ) -> Vec<(u64, Vec<u8>)> {
        let Some(Some(dev)) = self.devs.get_mut(usize::from(member.0)) else {
            return Vec::new();
        };
        // raid1-core's bridge writes the engine's state (md's super_1_sync, max_dev growth
        // included) into copies of the member's superblock and bitmap header; they replace the
        // originals once the superblock serializes.
        let mut sb = dev.meta.sb.clone();
        let mut header = dev.meta.bitmap.as_ref().map(|(bm, _)| bm.clone());
        if bridge::apply_state(st, &mut sb, header.as_mut()).is_err() {
            return Vec::new();
        }
        sb.utime = MdTime::from_seconds(unix_now());
        let mut page = dev.meta.sb_page.clone();
        if sb.serialize(&mut page).is_err() {
            return Vec::new();
        }
        dev.meta.sb = sb;
        dev.meta.sb_page.clone_from(&page);
        let mut writes = vec![(dev.meta.sb.super_offset * 512, page)];
        if let (true, Some(bs), Some((bm, image)), Some(header)) = (
            st.bitmap,
            dev.meta.sb.bitmap_sector(),
            dev.meta.bitmap.as_mut(),
            header,
        ) {
            *bm = header;
            // The header's block: the header and the bits that share its 4 KiB.
            let n = image.len().min(4096);
            copy_bits(&self.array, image, 0, n);
            if bm.serialize(&mut image[..256]).is_ok() {
                writes.push((bs * 512, image[..n].to_vec()));
            }
        }
        writes
    }

    fn render_bitmap_page(&mut self, member: MemberId, page: u32) -> Vec<(u64, Vec<u8>)> {
        let page_bytes = self.array.config().bitmap_page_bytes as usize;
        let Some(Some(dev)) = self.devs.get_mut(usize::from(member.0)) else {
            return Vec::new();
        };
        let (Some(bs), Some((_, image))) = (dev.meta.sb.bitmap_sector(), dev.meta.bitmap.as_mut())
        else {
            return Vec::new();
        };
        let start = 256 + page as usize * page_bytes;
        let end = (start + page_bytes).min(image.len());
        let first = start / 4096 * 4096;
        let last = end.div_ceil(4096) * 4096;
        let last = last.min(image.len());
        if first >= last {
            return Vec::new();
        }
        // Only the 4 KiB blocks this page's write covers take the core's bits now.
        copy_bits(&self.array, image, first, last);
        vec![(bs * 512 + first as u64, image[first..last].to_vec())]
    }

    fn issue(&mut self) {
        while let Some(job) = self.pending.pop_front() {
            match self.try_issue(job) {
                Ok(()) => {}
                Err(job) => {
                    self.pending.push_front(job);
                    break;
                }
            }
        }
    }

    fn try_issue(&mut self, job: Job) -> Result<(), Job> {
        // The request buffer the job's command uses (the job already holds a reference).
        let held = match job.op {
            JobOp::Read { into, .. } | JobOp::Write { from: into, .. } => Some(into.buffer),
            _ => None,
        };
        let Some(dev) = self
            .devs
            .get(usize::from(job.member))
            .and_then(|d| d.as_ref())
        else {
            self.drop_job(job.done, held);
            return Ok(());
        };
        let member = dev.io_index;
        let tag = self.next_tag;
        let mut sync_read = None;
        let (op, pool, len) = match &job.op {
            JobOp::Read { into, len } => (
                IoOp::Read {
                    buffer: BufferId(into.buffer),
                    buffer_offset: into.at,
                },
                None,
                *len,
            ),
            JobOp::Write { from, len, fua } => (
                IoOp::Write {
                    buffer: BufferId(from.buffer),
                    buffer_offset: from.at,
                    fua: *fua,
                },
                None,
                *len,
            ),
            JobOp::ReadSync {
                window,
                member,
                len,
            } => {
                let Some(b) = self.io.alloc_buffer() else {
                    return Err(job);
                };
                sync_read = Some((*window, *member));
                (
                    IoOp::Read {
                        buffer: b,
                        buffer_offset: 0,
                    },
                    Some(b),
                    *len,
                )
            }
            JobOp::WriteSync {
                window,
                member,
                len,
                fua,
            } => {
                let src = self
                    .sync_buffers
                    .get(&(*window, *member))
                    .map_or(&[][..], |b| &b[..(*len as usize).min(b.len())]);
                let Some(b) = staged(&mut self.io, src) else {
                    return Err(job);
                };
                (
                    IoOp::Write {
                        buffer: b,
                        buffer_offset: 0,
                        fua: *fua,
                    },
                    Some(b),
                    *len,
                )
            }
            JobOp::WriteMeta { data, fua } => {
                let Some(b) = staged(&mut self.io, data) else {
                    return Err(job);
                };
                (
                    IoOp::Write {
                        buffer: b,
                        buffer_offset: 0,
                        fua: *fua,
                    },
                    Some(b),
                    data.len() as u32,
                )
            }
            JobOp::Flush => (IoOp::Flush, None, 0),
            // The core's discard must read back as zeroes: punch a hole in an image file,
            // zero the range of a block device (a device discard may leave old data).
            JobOp::Discard { len } => match dev.meta.id {
                Identity::File(..) => (IoOp::Discard, None, *len),
                Identity::Block(_) => (IoOp::WriteZeroes, None, *len),
            },
        };
        let cmd = IoCommand {
            tag,
            member,
            op,
            offset: job.offset,
            len: if matches!(op, IoOp::Flush) { 0 } else { len },
        };
        match self.io.submit(cmd) {
            Ok(()) => {
                self.next_tag += 1;
                let expect = match op {
                    IoOp::Read { .. } | IoOp::Write { .. } => len,
                    _ => 0,
                };
                self.inflight.insert(
                    tag,
                    InFlight {
                        member: job.member,
                        done: job.done,
                        pool,
                        held,
                        sync_read,
                        len: expect,
                    },
                );
                Ok(())
            }
            Err(member_io::SubmitError::Busy) => {
                if let Some(b) = pool {
                    self.io.free_buffer(b);
                }
                Err(job)
            }
            Err(e) => {
                if let Some(b) = pool {
                    self.io.free_buffer(b);
                }
                eprintln!("raid1: {}: {e}", self.member_name(MemberId(job.member)));
                self.drop_job(job.done, held);
                Ok(())
            }
        }
    }

    /// A job that cannot be issued fails; the request buffer it held is released.
    fn drop_job(&mut self, done: Done, held: Option<u16>) {
        if let Some(b) = held {
            self.release(b);
        }
        self.finish(done, false);
    }

    /// Writes the final superblock (and the whole bitmap area) of every present member, durably,
    /// and waits for them. Returns the number of failed writes.
    pub fn write_final_metadata(&mut self) -> io::Result<u32> {
        // Every bitmap page the core keeps is on disk once nothing is pending: an out-of-date
        // mark (all bits were set at assembly) can go, as md's bitmap_load clears it.
        let settled = !self.array.status().metadata_pending;
        let mut jobs = Vec::new();
        for i in 0..MEMBERS {
            let id = MemberId(i as u8);
            let Some(info) = self.array.member(id) else {
                continue;
            };
            // md writes no superblock to a faulty member.
            if matches!(info.state, MemberState::Absent | MemberState::Faulty)
                || self.devs[i].is_none()
            {
                continue;
            }
            let Some(st) = self.array.superblock_for(id) else {
                continue;
            };
            if let (true, Some(Some(dev))) = (settled, self.devs.get_mut(i)) {
                if let Some((bm, _)) = dev.meta.bitmap.as_mut() {
                    bm.state
                        .remove(BitmapState::STALE | BitmapState::WRITE_ERROR);
                }
            }
            let mut writes = self.render_superblock(id, &st);
            if let Some(Some(dev)) = self.devs.get_mut(i) {
                if let (Some(bs), Some((_, image))) =
                    (dev.meta.sb.bitmap_sector(), dev.meta.bitmap.as_mut())
                {
                    let n = image.len();
                    copy_bits(&self.array, image, 0, n);
                    writes.retain(|(off, _)| *off != bs * 512);
                    // In pieces a pool buffer holds.
                    let piece = MAX_REQUEST_BYTES as usize;
                    for (k, part) in image.chunks(piece).enumerate() {
                        writes.push((bs * 512 + (k * piece) as u64, part.to_vec()));
                    }
                }
            }
            // The superblock page comes first in `writes`: it goes in the second round, after
            // every bitmap (md_update_sb's order).
            for (k, (offset, data)) in writes.into_iter().enumerate() {
                jobs.push((
                    k > 0,
                    Job {
                        member: i as u8,
                        offset,
                        op: JobOp::WriteMeta { data, fua: true },
                        done: Done::Stop,
                    },
                ));
            }
        }
        let (bitmaps, superblocks): (Vec<_>, Vec<_>) = jobs.into_iter().partition(|(b, _)| *b);
        let mut failed = 0;
        for round in [bitmaps, superblocks] {
            self.stop_writes = (round.len() as u32, 0);
            self.pending.extend(round.into_iter().map(|(_, j)| j));
            while self.stop_writes.0 > 0 {
                self.issue();
                self.io.flush()?;
                self.io.wait(1)?;
                self.reap();
            }
            failed += self.stop_writes.1;
        }
        Ok(failed)
    }

    /// `dev`'s bitmap header and area as they belong on disk now: its area image with the core's
    /// current bits (a new or re-added member starts from it).
    pub fn current_bitmap(&self, dev: &Dev) -> Option<(BitmapSuperblock, Vec<u8>)> {
        let (bm, image) = dev.meta.bitmap.as_ref()?;
        let mut image = image.clone();
        let n = image.len();
        copy_bits(&self.array, &mut image, 0, n);
        Some((bm.clone(), image))
    }

    /// Adds a device (already prepared with a superblock, `member` its open handle) at position
    /// `id`, with its bad blocks (data-area relative; empty for a new member). Requires the array
    /// quiesced and no member I/O in flight. No other member's handle is touched.
    pub fn attach(
        &mut self,
        id: MemberId,
        dev: Dev,
        member: member_io::Member,
        how: AddMember,
        bad_blocks: Vec<raid1_core::BadRange>,
    ) -> Result<(), String> {
        let i = usize::from(id.0);
        let list = if bad_blocks.is_empty() {
            raid1_core::BadBlocks::empty()
        } else {
            super::lend_bad_blocks(bad_blocks)
        };
        if let Err(e) = self.array.set_bad_blocks(id, list) {
            let path = format!("{} (member {i})", dev.meta.path.display());
            return Err(super::bad_block_text(&e, &|_| path.clone()));
        }
        if self.devs.len() <= i {
            self.devs.resize_with(i + 1, || None);
        }
        let path = dev.meta.path.clone();
        self.devs[i] = Some(dev);
        if let Err(e) = self.register(i, member) {
            self.devs[i] = None;
            let _ = self
                .array
                .set_bad_blocks(id, raid1_core::BadBlocks::empty());
            return Err(e);
        }
        if let Err(e) = self.array.add_member(id, how) {
            let _ = self
                .array
                .set_bad_blocks(id, raid1_core::BadBlocks::empty());
            self.devs[i] = None;
            drop(self.io.detach(i));
            return Err(format!(
                "{} (member {i}): the array refused it: {e}",
                path.display()
            ));
        }
        Ok(())
    }

    /// Removes the device at `id` from the core and closes its handle (the only one closed).
    /// Requires the array quiesced and no member I/O in flight.
    pub fn detach(&mut self, id: MemberId) -> Result<Dev, String> {
        let i = usize::from(id.0);
        let name = self.member_name(id);
        self.array
            .remove_member(id)
            .map_err(|e| format!("cannot remove {name}: {e}"))?;
        // The position is empty now: whatever comes next brings its own list.
        let _ = self
            .array
            .set_bad_blocks(id, raid1_core::BadBlocks::empty());
        let dev = self.devs[i]
            .take()
            .ok_or_else(|| format!("member {i} has no device"))?;
        drop(self.io.detach(i));
        Ok(dev)
    }

    /// `PATH (member N)`, or `member N` for a position without a device.
    pub fn member_name(&self, id: MemberId) -> String {
        match self.devs.get(usize::from(id.0)).and_then(|d| d.as_ref()) {
            Some(d) => format!("{} (member {})", d.meta.path.display(), id.0),
            None => format!("member {}", id.0),
        }
    }

    /// The member an argument of `fail`/`remove` names: a path to the same file or device as a
    /// member's open handle, else the path a member was opened from (its former path, when the
    /// path was removed or now names something else).
    pub fn find_member(&self, path: &std::path::Path) -> Result<MemberId, String> {
        if let Ok(id) = crate::member::identity_of(path) {
            if let Some(i) = self
                .devs
                .iter()
                .position(|d| d.as_ref().is_some_and(|d| d.meta.id == id))
            {
                return Ok(MemberId(i as u8));
            }
        }
        self.devs
            .iter()
            .position(|d| d.as_ref().is_some_and(|d| d.meta.path == path))
            .map(|i| MemberId(i as u8))
            .ok_or_else(|| {
                format!(
                    "{} is not a member of this array (no member is that file or device, and \
                     none was opened from that path)",
                    path.display()
                )
            })
    }

    /// Whether a member is opened from the same file or device as `path` names now.
    pub fn holds(&self, path: &std::path::Path) -> Option<MemberId> {
        let id = crate::member::identity_of(path).ok()?;
        self.devs
            .iter()
            .position(|d| d.as_ref().is_some_and(|d| d.meta.id == id))
            .map(|i| MemberId(i as u8))
    }

    /// Role of a member as the core sees it.
    pub fn role(&self, id: MemberId) -> Option<(MemberState, Role)> {
        self.array.member(id).map(|m| (m.state, m.role))
    }
}

/// A fresh pool buffer holding a copy of `bytes` (cut to the buffer's size): the one copy of a
/// sync or metadata write. `None` while the pool is empty.
fn staged(io: &mut MemberIo, bytes: &[u8]) -> Option<BufferId> {
    let b = io.alloc_buffer()?;
    if let Some(dst) = io.buffer_mut(b) {
        let n = bytes.len().min(dst.len());
        dst[..n].copy_from_slice(&bytes[..n]);
    }
    Some(b)
}

/// Copies the core's bitmap bits into the bytes `[from, to)` of a member's bitmap area image
/// (the 256-byte header first, then the bits, page after page).
fn copy_bits(array: &RaidArray, image: &mut [u8], from: usize, to: usize) {
    let page_bytes = array.config().bitmap_page_bytes as usize;
    if page_bytes == 0 {
        return;
    }
    let to = to.min(image.len());
    let mut page = from.saturating_sub(256) / page_bytes;
    loop {
        let at = 256 + page * page_bytes;
        let src = array.bitmap_page(page as u32);
        if src.is_empty() || at >= to {
            break;
        }
        let (s, e) = (at.max(from), (at + src.len()).min(to));
        if s < e {
            image[s..e].copy_from_slice(&src[s - at..e - at]);
        }
        page += 1;
    }
}

impl Backend for RaidEngine {
    fn size(&self) -> u64 {
        self.size
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            read_only: false,
            flush: true,
            fua: true,
            trim: true,
            write_zeroes: true,
            multi_conn: true,
            min_block_size: 512,
            preferred_block_size: 4096,
            lends_buffers: true,
        }
    }

    fn submit(&mut self, request: Request) -> Result<(), Busy> {
        let unaligned = !request.offset.is_multiple_of(512) || !request.length.is_multiple_of(512);
        let op = match &request.op {
            RequestOp::Read => CoreOp::Read,
            RequestOp::Write(_) => CoreOp::Write,
            RequestOp::Flush => CoreOp::Flush,
            RequestOp::Trim | RequestOp::WriteZeroes => {
                if unaligned {
                    self.done.push(Completion {
                        id: request.id,
                        result: Err(Errno(libc::EINVAL)),
                    });
                    return Ok(());
                }
                self.queue_zeroes(&request);
                self.drive();
                return Ok(());
            }
        };
        if op != CoreOp::Flush && (unaligned || request.length > MAX_REQUEST_BYTES) {
            if let RequestOp::Write(Payload::Lent(b)) = request.op {
                self.release(b.id as u16);
            }
            self.done.push(Completion {
                id: request.id,
                result: Err(Errno(libc::EINVAL)),
            });
            return Ok(());
        }
        // The request's buffer: a write's payload is already in the buffer the server
        // borrowed; a read gets a fresh one, which its member reads fill in place.
        let (handle, taken) = match &request.op {
            RequestOp::Write(Payload::Lent(b)) => (b.id, false),
            RequestOp::Write(Payload::Owned(data)) => {
                let Some(b) = self.take_buffer() else {
                    return Err(Busy(request));
                };
                if let Some(dst) = self.io.buffer_mut(BufferId(b)) {
                    let n = data.len().min(dst.len());
                    dst[..n].copy_from_slice(&data[..n]);
                }
                (u32::from(b), true)
            }
            RequestOp::Read => {
                let Some(b) = self.take_buffer() else {
                    return Err(Busy(request));
                };
                (u32::from(b), true)
            }
            _ => (NO_BUFFER, false),
        };
        let core = CoreRequest {
            id: request.id,
            op,
            sector: if op == CoreOp::Flush {
                0
            } else {
                request.offset / 512
            },
            sectors: if op == CoreOp::Flush {
                0
            } else {
                request.length / 512
            },
            buffer: handle,
            fua: request.fua,
        };
        let now = self.now();
        match self.array.submit(now, core) {
            Ok(()) => {
                self.logical.insert(
                    request.id,
                    Logical {
                        handle,
                        read: op == CoreOp::Read,
                        length: request.length,
                    },
                );
                self.drive();
                Ok(())
            }
            Err(SubmitError::Busy) => {
                // The request goes back as it came: a lent payload stays the server's.
                if taken {
                    self.release(handle as u16);
                }
                Err(Busy(request))
            }
            Err(e) => {
                if handle != NO_BUFFER {
                    self.release(handle as u16);
                }
                let errno = match e {
                    SubmitError::Broken => libc::EIO,
                    _ => libc::EINVAL,
                };
                self.done.push(Completion {
                    id: request.id,
                    result: Err(Errno(errno)),
                });
                Ok(())
            }
        }
    }

    fn lend(&mut self, len: u32) -> Option<LentBuffer> {
        // A length beyond the pool's buffers still gets one: `lent_mut` then shows no room and
        // the server refuses the write, instead of waiting for a buffer that never comes.
        let id = self.take_buffer()?;
        Some(LentBuffer {
            id: u32::from(id),
            len,
        })
    }

    fn lent(&self, buffer: &LentBuffer) -> &[u8] {
        let Ok(id) = u16::try_from(buffer.id) else {
            return &[];
        };
        self.io
            .buffer(BufferId(id))
            .and_then(|b| b.get(..buffer.len as usize))
            .unwrap_or(&[])
    }

    fn lent_mut(&mut self, buffer: &LentBuffer) -> &mut [u8] {
        let Ok(id) = u16::try_from(buffer.id) else {
            return &mut [];
        };
        match self.io.buffer_mut(BufferId(id)) {
            Some(b) => b.get_mut(..buffer.len as usize).unwrap_or(&mut []),
            None => &mut [],
        }
    }

    fn give_back(&mut self, buffer: LentBuffer) {
        if let Ok(id) = u16::try_from(buffer.id) {
            self.release(id);
        }
    }

    fn push(&mut self) -> io::Result<()> {
        self.issue();
        self.io.flush()
    }

    fn completions(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        self.service();
        out.append(&mut self.done);
        Ok(())
    }

    fn wake_fd(&self) -> Option<RawFd> {
        Some(self.io.ring_fd())
    }
}

/// Opens the device of member `i` for the life of the member (`O_DIRECT`; a block device
/// `O_EXCL`, an image file `flock`ed) and checks that it is the device assembly read: the same
/// identity (`st_dev`/`st_ino`, or `st_rdev`) and the same superblock page, read again through
/// the new handle. A path replaced in between is refused rather than used.
pub fn open_checked(dev: &Dev, i: usize) -> Result<member_io::Member, String> {
    use std::os::unix::fs::FileExt;
    let name = format!("{} (member {i})", dev.meta.path.display());
    let member =
        member_io::Member::open(&dev.meta.path).map_err(|e| format!("{e} (member {i})"))?;
    let meta = member
        .metadata()
        .map_err(|e| format!("{name}: fstat failed: {e}"))?;
    if Identity::of_metadata(&meta) != dev.meta.id {
        return Err(format!(
            "{name}: the path now names another file or device than the one whose superblock \
             was read (it was replaced while the array was being assembled)"
        ));
    }
    let f = member
        .reopen_buffered()
        .map_err(|e| format!("{name}: cannot read its superblock again: {e}"))?;
    let at = dev.meta.sb.super_offset * 512;
    let avail =
        (dev.meta.size.saturating_sub(at)).min(crate::member::strict::SB_PAGE as u64) as usize;
    let mut page = vec![0u8; avail];
    f.read_exact_at(&mut page, at)
        .map_err(|e| format!("{name}: read its superblock at byte {at} again: {e}"))?;
    if page[..] != dev.meta.sb_page[..avail] {
        return Err(format!(
            "{name}: its superblock changed between reading it and opening the device for the \
             array (another program wrote it)"
        ));
    }
    Ok(member)
}
