//! The core driver of `raid1 run`: raid1-core driven over the io_uring member engine.
//!
//! Every input to the core (a logical request from the adaptor, a member completion, a timer, a
//! control command) is followed by [`RaidEngine::drive`], which drains the core's outputs:
//! member I/O and metadata writes go to [`MemberIo`] (queued while the pool or the ring is
//! full), finished logical requests go to the adaptor, and monitor events are kept for the
//! control socket. The engine's other jobs live beside it: the NBD protocol adaptor
//! (`adaptor.rs`), the metadata writer (`metadata.rs`) and the splitting of trims and
//! write-zeroes (`discard.rs`); the event loop that owns it all is `event_loop.rs`.
//!
//! Pool buffers: a request's buffer is counted (`refs`): the request holds one reference, each
//! member command using it one more; the last one gives it back to the pool.
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use raid1_core::{
    AddMember, Buffer, Event, IoCmd, IoResult, MemberId, MemberOp, MemberState, Role, Tag,
};

use super::{MEMBERS, RaidArray};
use crate::errno::Errno;
use crate::member::Identity;
use crate::member::strict::MemberMeta;
use crate::member_io::{self, BufferId, EngineConfig, IoCommand, IoOp, MemberIo};
use crate::nbd::Completion;

use super::discard::Discards;
use crate::slab::Slab;

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
        if !crate::nbd::client::is_uri(meta.path.as_os_str()) {
            meta.path = std::fs::canonicalize(&meta.path)
                .or_else(|_| std::path::absolute(&meta.path))
                .unwrap_or(meta.path);
        }
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
pub(super) enum Done {
    /// A core command.
    Core(Tag),
    /// One part of a metadata write made of several member commands.
    Part(Tag),
    /// A write of the stop sequence, to this member.
    Stop(u8),
}

/// A request's pool buffer and a byte offset into it: member reads land there and member
/// writes are sent from there, with no copy.
#[derive(Clone, Copy, Debug)]
pub(super) struct InPool {
    buffer: u16,
    at: u32,
}

#[derive(Debug)]
pub(super) enum JobOp {
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

#[derive(Debug)]
pub(super) struct Job {
    pub(super) member: u8,
    pub(super) offset: u64,
    pub(super) op: JobOp,
    pub(super) done: Done,
}

#[derive(Debug)]
pub(super) struct InFlight {
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

/// A logical request of an NBD client, in the table the core's request ids index.
pub(super) struct Logical {
    /// The NBD side's id of the request.
    pub(super) id: u64,
    /// Its pool buffer (`NO_BUFFER`: none).
    pub(super) handle: u32,
    pub(super) read: bool,
    pub(super) length: u32,
}

/// The running array.
pub struct RaidEngine {
    /// The core.
    pub array: Box<RaidArray>,
    /// Member devices by `MemberId`.
    pub devs: Vec<Option<Dev>>,
    pub(super) io: MemberIo,
    pub(super) clock: std::time::Instant,
    /// Member commands in the ring, by tag (the tag is the slot).
    inflight: Slab<InFlight>,
    pub(super) pending: VecDeque<Job>,
    pub(super) parts: HashMap<u64, (u32, bool)>,
    /// References on each pool buffer lent to a request: the request (or the NBD server, while
    /// it fills a write's payload or sends a read's data) holds one, each member command using
    /// it one; the last one gives it back to the pool.
    pub(super) refs: Vec<u16>,
    /// Reads done whose buffer a member command still uses; answered when it is free.
    pub(super) deferred: Vec<(u64, u32, u32)>,
    /// Logical requests in the core, by the core's request id (the id is the slot).
    pub(super) logical: Slab<Logical>,
    pub(super) sync_buffers: HashMap<(u16, u8), Vec<u8>>,
    pub(super) done: Vec<Completion>,
    /// Monitor events not yet taken by the control socket.
    pub events: Vec<Event>,
    /// Writes of the stop sequence still in flight, and the members (a bit each) where one
    /// failed.
    pub(super) stop_writes: (u32, u32),
    /// Size in bytes of the export, shared with the NBD thread (a grown or shrunk array is
    /// announced to the connections made afterwards).
    pub(super) size: Arc<AtomicU64>,
    /// The array is read-only (asked), shared with the NBD thread: a client that connects
    /// while it is is told so (NBD_FLAG_READ_ONLY).
    pub(super) read_only: Arc<AtomicBool>,
    /// Time of the last write, for `Update Time`.
    pub update_time: u64,
    /// Trim and write-zeroes requests, in chunks.
    pub(super) discards: Discards,
    /// Superblock writes held back until the same command's other parts (bitmap header,
    /// bad-block log) completed.
    pub(super) after_bitmap: HashMap<u64, Job>,
    /// The options for members that are NBD exports.
    pub remote: super::remote::RemoteArgs,
    /// Failed remote members whose server is back, untouched: the control socket re-adds them
    /// (with the array quiesced, as any re-add).
    pub readds: Vec<(usize, Box<crate::nbd::client::Connection>)>,
    /// Link events of remote members for the monitors: (event, device, detail).
    pub link_events: Vec<(&'static str, Option<String>, serde_json::Value)>,
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
    pub fn new(
        array: Box<RaidArray>,
        devs: Vec<Option<Dev>>,
        remote: super::remote::RemoteArgs,
    ) -> Result<RaidEngine, String> {
        let engine_config = EngineConfig {
            queue_depth: 256,
            buffer_size: MAX_REQUEST_BYTES as usize,
            buffer_count: 96,
            register_buffers: true,
        };
        let size = array.config().data_sectors * 512;
        let read_only = array.status().read_only_asked;
        let io = MemberIo::with_slots(MEMBERS, engine_config)
            .map_err(|e| format!("member I/O engine (io_uring): {e}"))?;
        let mut e = RaidEngine {
            array,
            devs,
            io,
            clock: std::time::Instant::now(),
            // Tables and queues at their working size from the start: the hot path never grows
            // them (no allocation per request, whatever the timing).
            // The ring's completion queue holds twice its submission queue.
            inflight: Slab::with_capacity(engine_config.queue_depth * 2),
            pending: VecDeque::with_capacity(engine_config.queue_depth as usize),
            parts: HashMap::new(),
            refs: vec![0; usize::from(engine_config.buffer_count)],
            deferred: Vec::with_capacity(super::REQUESTS),
            logical: Slab::with_capacity(super::REQUESTS as u32),
            sync_buffers: HashMap::new(),
            done: Vec::with_capacity(super::REQUESTS),
            events: Vec::new(),
            stop_writes: (0, 0),
            size: Arc::new(AtomicU64::new(size)),
            read_only: Arc::new(AtomicBool::new(read_only)),
            update_time: unix_now(),
            discards: Discards::default(),
            after_bitmap: HashMap::new(),
            remote,
            readds: Vec::new(),
            link_events: Vec::new(),
        };
        for i in 0..e.devs.len() {
            let Some(dev) = e.devs[i].as_ref() else {
                continue;
            };
            let member = open_checked(dev, i, e.remote.timeout())?;
            e.register(i, member)?;
        }
        e.drive();
        Ok(e)
    }

    /// Registers the open device of member `i` with the member engine.
    pub(super) fn register(&mut self, i: usize, member: member_io::Member) -> Result<(), String> {
        if let Err((m, err)) = self.io.attach(i, member) {
            return Err(format!(
                "{} (member {i}): cannot register it with io_uring: {err}",
                m.path().display()
            ));
        }
        if let Some(Some(dev)) = self.devs.get_mut(i) {
            dev.io_index = i;
        }
        // A member across the network fails fast (md's FailFast): a request that times out
        // fails it rather than being retried or recorded as a bad block.
        if self.io.link(i).is_some() {
            let _ = self.array.set_failfast(MemberId(i as u8), true);
        }
        Ok(())
    }

    /// The export's size in bytes, as the NBD thread reads it for each new connection.
    pub fn size_handle(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.size)
    }

    /// Whether the array is read-only, as the NBD thread reads it for each new connection.
    pub fn read_only_handle(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.read_only)
    }

    /// The export's read-only flag follows the array's (after `readonly`, `readwrite`, and
    /// at start for an array assembled read-only).
    pub(super) fn publish_read_only(&self) {
        let ro = self.array.status().read_only_asked;
        self.read_only.store(ro, Ordering::Release);
    }

    /// The export's size follows the array's (after a resize).
    pub(super) fn publish_size(&self) {
        let bytes = self.array.config().data_sectors.saturating_mul(512);
        self.size.store(bytes, Ordering::Release);
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

    pub(super) fn reap(&mut self) {
        self.reap_io();
        // A broken link answers its requests only once the array chose what that means.
        self.link_notes();
        self.reap_io();
    }

    fn reap_io(&mut self) {
        while let Some(c) = self.io.reap() {
            let Some(f) = self.inflight.remove(c.tag) else {
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
    pub(super) fn take_buffer(&mut self) -> Option<u16> {
        let b = self.io.alloc_buffer()?;
        if let Some(r) = self.refs.get_mut(usize::from(b.0)) {
            *r = 1;
        }
        Some(b.0)
    }

    /// One more reference on a request's buffer (a member command uses it).
    pub(super) fn hold(&mut self, buffer: u16) {
        if let Some(r) = self.refs.get_mut(usize::from(buffer)) {
            *r += 1;
        }
    }

    /// Drops a reference on a request's buffer; the last one gives it back to the pool.
    pub(super) fn release(&mut self, buffer: u16) {
        let Some(r) = self.refs.get_mut(usize::from(buffer)) else {
            return;
        };
        *r = r.saturating_sub(1);
        if *r == 0 {
            self.io.free_buffer(BufferId(buffer));
        }
    }

    pub(super) fn finish(&mut self, done: Done, ok: bool) {
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
                // Every other part landed: the superblock page goes now.
                if p.0 == 1 {
                    if let Some(job) = self.after_bitmap.remove(&tag.0) {
                        self.pending.push_back(job);
                        return;
                    }
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
            Done::Stop(member) => {
                self.stop_writes.0 -= 1;
                if !ok {
                    self.stop_writes.1 |= 1 << member;
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

    /// `len` bytes of a buffer the core names, where they are (for compares).
    pub(super) fn bytes(&self, buf: Buffer, len: usize) -> Option<&[u8]> {
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

    pub(super) fn sync_buffer(&mut self, window: u16, member: MemberId) {
        let len = self.array.config().sync_window_sectors as usize * 512;
        self.sync_buffers
            .entry((window, member.0))
            .or_insert_with(|| vec![0u8; len]);
    }

    pub(super) fn command(&mut self, cmd: IoCmd<MEMBERS>) {
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
                // date" (a full resync) at the next start. The bad-block log goes before it too.
                // The superblock page is the first of `writes`; it waits for all the others.
                if writes.len() >= 2 {
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
                    self.parts.insert(tag.0, (writes.len() as u32 + 1, false));
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

    pub(super) fn issue(&mut self) {
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

    pub(super) fn try_issue(&mut self, job: Job) -> Result<(), Job> {
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
                Identity::Block(_) | Identity::Remote(_) => (IoOp::WriteZeroes, None, *len),
            },
        };
        let expect = match op {
            IoOp::Read { .. } | IoOp::Write { .. } => len,
            _ => 0,
        };
        // The command's tag is its slot in the table of commands in flight.
        let Ok(tag) = self.inflight.insert(InFlight {
            member: job.member,
            done: job.done,
            pool,
            held,
            sync_read,
            len: expect,
        }) else {
            if let Some(b) = pool {
                self.io.free_buffer(b);
            }
            return Err(job);
        };
        let tag = u64::from(tag);
        let cmd = IoCommand {
            tag,
            member,
            op,
            offset: job.offset,
            len: if matches!(op, IoOp::Flush) { 0 } else { len },
        };
        let submitted = self.io.submit(cmd);
        if submitted.is_err() {
            self.inflight.remove(tag);
        }
        match submitted {
            Ok(()) => Ok(()),
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
    pub(super) fn drop_job(&mut self, done: Done, held: Option<u16>) {
        if let Some(b) = held {
            self.release(b);
        }
        self.finish(done, false);
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
        // A member with a log gets room in it: write errors are recorded there (md).
        let list = if bad_blocks.is_empty() && !dev.meta.has_log() {
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
        // The core knows the member only now: a remote one becomes FailFast here.
        if self.io.link(i).is_some() {
            let _ = self.array.set_failfast(id, true);
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

/// Opens the device of member `i` for the life of the member (`O_DIRECT`; a block device
/// `O_EXCL`, an image file `flock`ed) and checks that it is the device assembly read: the same
/// identity (`st_dev`/`st_ino`, or `st_rdev`) and the same superblock page, read again through
/// the new handle. A path replaced in between is refused rather than used.
pub fn open_checked(
    dev: &Dev,
    i: usize,
    timeout: std::time::Duration,
) -> Result<member_io::Member, String> {
    use std::os::unix::fs::FileExt;
    let name = format!("{} (member {i})", dev.meta.path.display());
    if crate::nbd::client::is_uri(dev.meta.path.as_os_str()) {
        return open_checked_remote(dev, &name, timeout);
    }
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
    same_superblock(dev, &name, |page, at| f.read_exact_at(page, at))?;
    Ok(member)
}

/// Reads member `dev`'s superblock page again with `read` and checks it is the page assembly
/// read: a device written in between is refused.
fn same_superblock(
    dev: &Dev,
    name: &str,
    read: impl FnOnce(&mut [u8], u64) -> io::Result<()>,
) -> Result<(), String> {
    let at = dev.meta.sb.super_offset * 512;
    let avail =
        (dev.meta.size.saturating_sub(at)).min(crate::member::strict::SB_PAGE as u64) as usize;
    let mut page = vec![0u8; avail];
    read(&mut page, at)
        .map_err(|e| format!("{name}: read its superblock at byte {at} again: {e}"))?;
    if page[..] != dev.meta.sb_page[..avail] {
        return Err(format!(
            "{name}: its superblock changed between reading it and opening the device for the \
             array (another program wrote it)"
        ));
    }
    Ok(())
}

impl RaidEngine {
    /// Submits queued trim / write-zeroes chunks while the core has room; whether any went
    /// (or failed).
    pub(super) fn submit_zero_chunks(&mut self) -> bool {
        let mut any = false;
        while let Some(req) = self.discards.front() {
            let now = self.now();
            match self.array.submit(now, req) {
                Err(raid1_core::SubmitError::Busy) => break,
                Ok(()) => {
                    self.discards.queue.pop_front();
                }
                Err(e) => {
                    self.discards.queue.pop_front();
                    let errno = match e {
                        raid1_core::SubmitError::ReadOnly => libc::EPERM,
                        _ => libc::EIO,
                    };
                    if let Some(c) = self.discards.chunk_done(req.id, errno) {
                        self.done.push(c);
                    }
                }
            }
            any = true;
        }
        any
    }
}

/// [`open_checked`] for an NBD export: a connection of its own (the array's link), the same
/// export as the URI assembly read, and the same superblock page read again through it.
fn open_checked_remote(
    dev: &Dev,
    name: &str,
    timeout: std::time::Duration,
) -> Result<member_io::Member, String> {
    let text = dev.meta.path.to_string_lossy();
    let uri = crate::nbd::client::Uri::parse(&text)?;
    if crate::member::remote_identity(&uri) != dev.meta.id {
        return Err(format!("{name}: not the export assembly read"));
    }
    let mut member = member_io::Member::open_remote(&uri, timeout)?;
    let conn = member
        .connection()
        .ok_or_else(|| format!("{name}: not connected"))?;
    same_superblock(dev, name, |page, at| conn.read_exact_at(page, at))?;
    Ok(member)
}
