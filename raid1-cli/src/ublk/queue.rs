//! One ublk queue: its thread, its ring, its tags.
//!
//! Each tag is one request slot of the kernel's queue. The thread hands the kernel a
//! `FETCH_REQ` per tag with that tag's buffer; when the kernel completes it, the io descriptor
//! of the tag (mapped read-only from `/dev/ublkcN`) says what to do. The request goes to the
//! array thread over the link as an NBD server's would; its completion goes back to the kernel
//! with `COMMIT_AND_FETCH_REQ`, which also waits for the tag's next request.
//!
//! Copies: the kernel copies a write's data into the tag's buffer and a read's data out of it;
//! the thread copies a write's data once, from the tag's buffer into a pool buffer lent by the
//! array thread, and a read's data once, from the pool buffer the engine read into (a backend
//! that lends no buffers gets the write's data in a `Vec` instead: only tests would). Nothing is
//! allocated per request: the tag buffers, the descriptors and the queues of waiting requests
//! are made when the thread starts.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;

use io_uring::{IoUring, opcode, types};

use super::QueueBackend;
use super::sys::{self, IoDesc};
use crate::nbd::{Busy, Completion, Payload, Request, RequestOp};

/// The user data of the poll on the link's wake-up descriptor.
const WAKE: u64 = u64::MAX;

/// What one queue thread serves.
pub struct QueueSpec {
    pub q_id: u16,
    pub depth: u16,
    /// Bytes of each tag's buffer (the device's largest request).
    pub buf_bytes: usize,
}

/// An anonymous or device mapping, unmapped when dropped.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(len: usize, prot: i32, flags: i32, fd: i32, offset: i64) -> io::Result<Mapping> {
        // SAFETY: a new mapping; the kernel checks the descriptor and offset.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, offset) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap gave null"))?,
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

fn page_size() -> usize {
    // SAFETY: plain query.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).unwrap_or(4096)
}

/// Serves queue `spec.q_id` of the device whose `/dev/ublkcN` is `cdev` until the kernel aborts
/// every tag (the device is stopped, or this process is dying).
pub fn serve(spec: &QueueSpec, cdev: Arc<OwnedFd>, mut backend: QueueBackend) -> io::Result<()> {
    let depth = usize::from(spec.depth);
    let page = page_size();
    let desc_len = (depth * sys::IO_DESC_LEN).div_ceil(page) * page;
    let stride = (sys::MAX_QUEUE_DEPTH * sys::IO_DESC_LEN).div_ceil(page) * page;
    let descs = Mapping::new(
        desc_len,
        libc::PROT_READ,
        libc::MAP_SHARED | libc::MAP_POPULATE,
        cdev.as_raw_fd(),
        (usize::from(spec.q_id) * stride) as i64,
    )?;
    let buffers = Mapping::new(
        depth * spec.buf_bytes,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
        0,
    )?;
    let mut q = Queue {
        ring: IoUring::new((depth as u32 + 2).next_power_of_two())?,
        cdev,
        q_id: spec.q_id,
        buf_bytes: spec.buf_bytes,
        descs,
        buffers,
        waiting: VecDeque::with_capacity(depth),
        done: Vec::with_capacity(depth),
        live: 0,
    };
    for tag in 0..spec.depth {
        q.queue_cmd(sys::IO_FETCH_REQ, tag, 0)?;
    }
    q.live = depth;
    let wake = backend.wake_fd();
    if let Some(fd) = wake {
        q.poll_wake(fd)?;
    }
    while q.live > 0 {
        match q.ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
        let mut woken = false;
        // Tags the kernel handed over: turned into requests.
        let mut news = [(0u64, 0i32); 64];
        loop {
            let mut n = 0;
            for cqe in q.ring.completion().take(news.len()) {
                news[n] = (cqe.user_data(), cqe.result());
                n += 1;
            }
            if n == 0 {
                break;
            }
            for &(data, res) in &news[..n] {
                if data == WAKE {
                    woken = true;
                    continue;
                }
                let tag = data as u16;
                if res == sys::IO_RES_OK {
                    q.start(tag, &mut backend);
                } else {
                    // Aborted (the device stops, or the kernel refused the command): this
                    // tag is done for good.
                    q.live -= 1;
                    if res != sys::IO_RES_ABORT {
                        eprintln!(
                            "raid1 run: ublk queue {}: tag {tag}: the kernel refused the \
                             command: {}",
                            q.q_id,
                            io::Error::from_raw_os_error(-res)
                        );
                    }
                }
            }
        }
        // Completions from the array: answered to the kernel.
        backend.completions(&mut q.done)?;
        let mut done = std::mem::take(&mut q.done);
        for c in done.drain(..) {
            q.finish(c, &mut backend)?;
        }
        q.done = done;
        // Requests refused before: tried again.
        while let Some(req) = q.waiting.pop_front() {
            let req = match req.op {
                RequestOp::Write(Payload::Owned(ref v)) if v.is_empty() && req.length > 0 => {
                    match q.fill(req.id as u16, req.length, &mut backend) {
                        Some(op) => Request { op, ..req },
                        None => {
                            q.waiting.push_front(req);
                            break;
                        }
                    }
                }
                _ => req,
            };
            if let Err(Busy(req)) = backend.submit(req) {
                q.waiting.push_front(req);
                break;
            }
        }
        backend.push()?;
        if woken && let Some(fd) = wake {
            q.poll_wake(fd)?;
        }
    }
    Ok(())
}

struct Queue {
    ring: IoUring,
    cdev: Arc<OwnedFd>,
    q_id: u16,
    buf_bytes: usize,
    descs: Mapping,
    buffers: Mapping,
    /// Requests the array had no room for, oldest first.
    waiting: VecDeque<Request>,
    done: Vec<Completion>,
    /// Tags with a command at the kernel.
    live: usize,
}

impl Queue {
    fn tag_buffer(&self, tag: u16) -> *mut u8 {
        // SAFETY: tag < depth, so the offset lies inside the buffers' mapping.
        unsafe {
            self.buffers
                .ptr
                .as_ptr()
                .add(usize::from(tag) * self.buf_bytes)
        }
    }

    fn desc(&self, tag: u16) -> IoDesc {
        let base = self.descs.ptr.as_ptr();
        let at = usize::from(tag) * sys::IO_DESC_LEN;
        // SAFETY: tag < depth, inside the mapping; the kernel wrote the descriptor before it
        // completed the tag's command, and does not touch it until we commit.
        unsafe {
            let op_flags = std::ptr::read_volatile(base.add(at).cast::<u32>());
            let nr_sectors = std::ptr::read_volatile(base.add(at + 4).cast::<u32>());
            let start_sector = std::ptr::read_volatile(base.add(at + 8).cast::<u64>());
            IoDesc {
                op_flags,
                nr_sectors,
                start_sector,
            }
        }
    }

    fn queue_cmd(&mut self, op: u32, tag: u16, result: i32) -> io::Result<()> {
        let cmd = sys::io_cmd(self.q_id, tag, result, self.tag_buffer(tag) as u64);
        let sqe = opcode::UringCmd16::new(types::Fd(self.cdev.as_raw_fd()), op)
            .cmd(cmd)
            .build()
            .user_data(u64::from(tag));
        self.push(&sqe)
    }

    fn poll_wake(&mut self, fd: i32) -> io::Result<()> {
        let sqe = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .build()
            .user_data(WAKE);
        self.push(&sqe)
    }

    fn push(&mut self, sqe: &io_uring::squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the tag buffers and the descriptor the entries name live as long as the
            // ring (the queue is dropped after its last completion was reaped, or with the
            // process).
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    /// The kernel handed over `tag`: its request goes to the array.
    fn start(&mut self, tag: u16, backend: &mut QueueBackend) {
        let d = self.desc(tag);
        let offset = d.start_sector << 9;
        let length = d.nr_sectors << 9;
        let fua = d.op_flags & sys::IO_F_FUA != 0;
        let op = match d.op() {
            sys::OP_READ => RequestOp::Read,
            sys::OP_FLUSH => RequestOp::Flush,
            sys::OP_DISCARD => RequestOp::Trim,
            sys::OP_WRITE_ZEROES => RequestOp::WriteZeroes,
            sys::OP_WRITE => {
                let filled = if self.waiting.is_empty() {
                    self.fill(tag, length, backend)
                } else {
                    None
                };
                let Some(op) = filled else {
                    // No pool buffer on this side now: the tag waits with its data in place
                    // and is started again once the array has given buffers.
                    self.waiting.push_back(Request {
                        id: u64::from(tag),
                        op: RequestOp::Write(Payload::NONE),
                        offset,
                        length,
                        fua,
                    });
                    return;
                };
                op
            }
            _ => {
                let _ = self.queue_cmd(sys::IO_COMMIT_AND_FETCH_REQ, tag, -libc::EOPNOTSUPP);
                return;
            }
        };
        let req = Request {
            id: u64::from(tag),
            op,
            offset,
            length,
            fua,
        };
        if !self.waiting.is_empty() {
            self.waiting.push_back(req);
        } else if let Err(Busy(req)) = backend.submit(req) {
            self.waiting.push_back(req);
        }
    }

    /// A write's data, copied from the tag's buffer into a pool buffer lent by the array
    /// (`None` while none is lent).
    fn fill(&mut self, tag: u16, length: u32, backend: &mut QueueBackend) -> Option<RequestOp> {
        // SAFETY: the tag buffer holds the write's `length` bytes (at most buf_bytes).
        let data = unsafe {
            std::slice::from_raw_parts(self.tag_buffer(tag), (length as usize).min(self.buf_bytes))
        };
        if !backend.capabilities().lends_buffers {
            return Some(RequestOp::Write(Payload::Owned(data.to_vec())));
        }
        let b = backend.lend(length)?;
        let dst = backend.lent_mut(&b);
        let n = dst.len().min(data.len());
        dst[..n].copy_from_slice(&data[..n]);
        Some(RequestOp::Write(Payload::Lent(b)))
    }

    /// The array answered the request of a tag: its result (and a read's data) go to the
    /// kernel.
    fn finish(&mut self, c: Completion, backend: &mut QueueBackend) -> io::Result<()> {
        let tag = c.id as u16;
        let result = match c.result {
            Err(e) => -e.0,
            Ok(payload) => {
                let d = self.desc(tag);
                let bytes = (d.nr_sectors << 9) as usize;
                let n = match &payload {
                    Payload::Lent(b) => {
                        let src = backend.lent(b);
                        let n = src.len().min(bytes).min(self.buf_bytes);
                        // SAFETY: the tag's buffer has room for buf_bytes.
                        let dst =
                            unsafe { std::slice::from_raw_parts_mut(self.tag_buffer(tag), n) };
                        dst.copy_from_slice(&src[..n]);
                        n
                    }
                    Payload::Owned(v) => {
                        let n = v.len().min(bytes).min(self.buf_bytes);
                        // SAFETY: as above.
                        let dst =
                            unsafe { std::slice::from_raw_parts_mut(self.tag_buffer(tag), n) };
                        dst.copy_from_slice(&v[..n]);
                        n
                    }
                };
                if let Payload::Lent(b) = payload {
                    backend.give_back(b);
                }
                match d.op() {
                    sys::OP_READ => n as i32,
                    sys::OP_WRITE => bytes as i32,
                    _ => 0,
                }
            }
        };
        self.queue_cmd(sys::IO_COMMIT_AND_FETCH_REQ, tag, result)
    }
}
