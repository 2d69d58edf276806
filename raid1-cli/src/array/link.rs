//! The hand-off between the NBD thread and the array thread of `raid1 run`.
//!
//! The NBD thread owns the client sockets: it reads and parses requests, receives write
//! payloads and sends replies. The array thread owns the engine and the member ring. Between
//! them run three bounded rings of fixed-size descriptors (std's bounded channels, which
//! allocate their slots once, when made):
//!
//! ```text
//!   NBD thread ── Submit(request) / GiveBack(buffer) ──▶ array thread
//!   NBD thread ◀── Completion ─────────────────────────── array thread
//!   NBD thread ◀── a stock of empty pool buffers ──────── array thread
//! ```
//!
//! Each side sleeps in its own poll (the NBD thread in `poll(2)` over its sockets, the array
//! thread in `epoll` over the ring and the control socket) and an `eventfd` per side wakes it,
//! once per batch of descriptors, not once per descriptor.
//!
//! **Buffers.** A pool buffer is owned by one thread at a time, and only its owner reads or
//! writes it. The array thread owns every buffer but those it handed over: a stocked buffer
//! (lent for a write's payload, [`LinkBackend::lend`]) or a read's data in a completion. The NBD
//! thread hands a buffer back inside the write request it filled, or with `GiveBack` once a
//! read's data is sent (or a client left). The engine's reference count on a buffer counts the
//! NBD thread's ownership as one reference, exactly as when the server and the engine shared a
//! thread, so the rules of `engine.rs` are unchanged.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};

use super::engine::RaidEngine;
use crate::nbd::{
    Backend, Busy, Capabilities, Completion, LentBuffer, Payload, Request, RequestOp,
};

/// Requests the NBD thread may have handed over and not yet seen completed: the engine's
/// request table and the discard chunks' queue take them, and what they do not take waits in
/// the array thread's stalled queue.
pub const MAX_IN_FLIGHT: usize = 512;
/// Empty buffers kept on the NBD thread's side for write payloads.
const STOCK: usize = 32;
/// Several frontends (the NBD thread, each ublk queue) have a link each; the array thread
/// marks a request's id with its link's index in the bits from here up, so that each
/// completion goes back over the link its request came by.
const FRONTEND_SHIFT: u32 = 48;

/// An `eventfd` that wakes one side's poll.
struct Wake(OwnedFd);

impl Wake {
    fn new() -> io::Result<Wake> {
        // SAFETY: plain syscall; a non-negative result is a new descriptor we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor nobody else owns.
        Ok(Wake(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the descriptor readable.
    fn signal(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer. A full counter (EAGAIN) is already
        // readable, which is all a wake-up needs.
        unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    /// Makes the descriptor unreadable again (before looking at the rings).
    fn clear(&self) {
        let mut v = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer; EAGAIN when already clear.
        unsafe { libc::read(self.0.as_raw_fd(), v.as_mut_ptr().cast(), v.len()) };
    }
}

/// A descriptor from the NBD thread.
enum ToArray {
    Submit(Request),
    GiveBack(u32),
}

/// The pool's memory as the NBD thread sees it: the buffers it owns at the moment.
#[derive(Clone, Copy)]
struct PoolView {
    base: NonNull<u8>,
    buffer_size: usize,
    count: usize,
}

// SAFETY: the view is only a base address and sizes. Which buffer a thread may touch is decided
// by the ownership protocol of this module (one owner at a time, handed over through the
// channels, whose send/receive order the accesses); the memory outlives both threads (the
// engine that owns it is dropped after the NBD thread is joined, see `event_loop.rs`).
unsafe impl Send for PoolView {}

impl PoolView {
    /// `len` bytes of buffer `id` (fewer if the buffer is smaller; none if no such buffer).
    fn range(&self, id: u32, len: u32) -> Option<(*mut u8, usize)> {
        let i = usize::try_from(id).ok().filter(|i| *i < self.count)?;
        let len = (len as usize).min(self.buffer_size);
        // SAFETY: i < count, so the offset stays inside the pool's allocation.
        Some((unsafe { self.base.as_ptr().add(i * self.buffer_size) }, len))
    }
}

/// The NBD thread's view of the array: an [`nbd::Backend`](crate::nbd::Backend) that hands
/// requests to the array thread.
pub struct LinkBackend {
    to_array: SyncSender<ToArray>,
    done: Receiver<Completion>,
    stock: Receiver<u16>,
    stocked: Arc<AtomicUsize>,
    starved: Arc<AtomicBool>,
    array_wake: Arc<Wake>,
    nbd_wake: Arc<Wake>,
    pool: PoolView,
    /// The array's size in bytes (the array thread changes it when the array is resized).
    size: Arc<AtomicU64>,
    /// The array is read-only (the array thread changes it on `readonly` / `readwrite`).
    read_only: Arc<AtomicBool>,
    capabilities: Capabilities,
    in_flight: usize,
    /// Buffers to give back that did not fit in the ring (never happens with the ring's
    /// capacity; kept rather than lost).
    unsent: VecDeque<u32>,
    /// Something was handed over since the array thread was last woken.
    sent: bool,
}

/// The array thread's end of the link.
pub struct ArrayLink {
    from_nbd: Receiver<ToArray>,
    done: SyncSender<Completion>,
    stock: SyncSender<u16>,
    stocked: Arc<AtomicUsize>,
    /// Set while requests wait in `stalled`: the NBD thread then refuses new ones (`Busy`),
    /// which makes its server copy queued read data out of the buffers that slow clients hold
    /// (as it does when the engine itself is busy) instead of waiting behind them.
    starved: Arc<AtomicBool>,
    array_wake: Arc<Wake>,
    nbd_wake: Arc<Wake>,
    /// Requests the engine had no room for, oldest first; new requests queue behind them.
    stalled: VecDeque<Request>,
    /// Completions taken from the engine.
    out: Vec<Completion>,
    /// Completions to hand over, oldest first (they always fit in the ring: at most
    /// `MAX_IN_FLIGHT`; kept here otherwise rather than lost).
    unsent: VecDeque<Completion>,
    /// Empty buffers to keep on the far side.
    stock_target: usize,
    /// This link's index among the array thread's links, in the id bits of `FRONTEND_SHIFT`.
    frontend: u64,
}

/// Makes both ends of the link for `engine`'s pool.
pub fn link(engine: &RaidEngine) -> io::Result<(ArrayLink, LinkBackend)> {
    link_with_stock(engine, STOCK)
}

/// Makes both ends of a link whose far side keeps `stock` empty buffers.
pub fn link_with_stock(engine: &RaidEngine, stock: usize) -> io::Result<(ArrayLink, LinkBackend)> {
    let (base, buffer_size, count) = engine.pool_region();
    let (to_array, from_nbd) = sync_channel(MAX_IN_FLIGHT + count + stock);
    let (done_tx, done_rx) = sync_channel(MAX_IN_FLIGHT);
    let (stock_tx, stock_rx) = sync_channel(stock.max(1));
    let stocked = Arc::new(AtomicUsize::new(0));
    let starved = Arc::new(AtomicBool::new(false));
    let array_wake = Arc::new(Wake::new()?);
    let nbd_wake = Arc::new(Wake::new()?);
    Ok((
        ArrayLink {
            from_nbd,
            done: done_tx,
            stock: stock_tx,
            stocked: stocked.clone(),
            starved: starved.clone(),
            array_wake: array_wake.clone(),
            nbd_wake: nbd_wake.clone(),
            stalled: VecDeque::with_capacity(MAX_IN_FLIGHT),
            out: Vec::with_capacity(MAX_IN_FLIGHT),
            unsent: VecDeque::with_capacity(MAX_IN_FLIGHT),
            stock_target: stock,
            frontend: 0,
        },
        LinkBackend {
            to_array,
            done: done_rx,
            stock: stock_rx,
            stocked,
            starved,
            array_wake,
            nbd_wake,
            pool: PoolView {
                base,
                buffer_size,
                count,
            },
            size: engine.size_handle(),
            read_only: engine.read_only_handle(),
            capabilities: engine.capabilities(),
            in_flight: 0,
            unsent: VecDeque::new(),
            sent: false,
        },
    ))
}

impl ArrayLink {
    /// The descriptor the array thread's epoll watches for descriptors from the NBD thread.
    pub fn wake_fd(&self) -> RawFd {
        self.array_wake.0.as_raw_fd()
    }

    /// Sets this link's index among the array thread's links (see [`give_out`]).
    pub fn set_frontend(&mut self, index: usize) {
        self.frontend = (index as u64) << FRONTEND_SHIFT;
    }

    /// Wakes the NBD thread (to see that it must stop).
    pub fn wake_nbd(&self) {
        self.nbd_wake.signal();
    }

    /// Takes what the NBD thread handed over into the engine: stalled requests first, in
    /// order, then the new ones, while the engine has room.
    pub fn take_in(&mut self, engine: &mut RaidEngine) {
        self.array_wake.clear();
        self.retry_stalled(engine);
        loop {
            match self.from_nbd.try_recv() {
                Ok(ToArray::GiveBack(id)) => engine.give_back(LentBuffer { id, len: 0 }),
                Ok(ToArray::Submit(mut req)) if !self.stalled.is_empty() => {
                    req.id |= self.frontend;
                    self.stalled.push_back(req);
                }
                Ok(ToArray::Submit(mut req)) => {
                    req.id |= self.frontend;
                    if let Err(Busy(req)) = engine.submit(req) {
                        self.stalled.push_back(req);
                    }
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        // Buffers given back above go to the requests that waited for them first.
        self.retry_stalled(engine);
        let starved = !self.stalled.is_empty();
        if self.starved.swap(starved, Ordering::AcqRel) && !starved {
            // The NBD thread may hold requests it was refused: let it retry them.
            self.nbd_wake.signal();
        }
    }

    fn retry_stalled(&mut self, engine: &mut RaidEngine) {
        while let Some(req) = self.stalled.pop_front() {
            if let Err(Busy(req)) = engine.submit(req) {
                self.stalled.push_front(req);
                break;
            }
        }
    }

    /// Hands this link's completions to its far side and tops up its stock of buffers;
    /// wakes it if anything went over.
    fn send(&mut self, engine: &mut RaidEngine) {
        let mut sent = false;
        while let Some(c) = self.unsent.pop_front() {
            if let Err(TrySendError::Full(c) | TrySendError::Disconnected(c)) =
                self.done.try_send(c)
            {
                self.unsent.push_front(c);
                break;
            }
            sent = true;
        }
        // No stock while requests wait for room: a buffer given back goes to them.
        while self.stalled.is_empty() && self.stocked.load(Ordering::Acquire) < self.stock_target {
            let Some(b) = engine.lend(0) else {
                break;
            };
            match self.stock.try_send(b.id as u16) {
                Ok(()) => {
                    self.stocked.fetch_add(1, Ordering::AcqRel);
                    sent = true;
                }
                Err(_) => {
                    engine.give_back(b);
                    break;
                }
            }
        }
        if sent {
            self.nbd_wake.signal();
        }
    }

    /// After the far side ended: every buffer it held comes back (its stock, and what its
    /// server gave back when it was dropped); requests never taken are dropped.
    pub fn close(&mut self, engine: &mut RaidEngine) {
        while let Ok(msg) = self.from_nbd.try_recv() {
            match msg {
                ToArray::GiveBack(id) => engine.give_back(LentBuffer { id, len: 0 }),
                ToArray::Submit(Request {
                    op: RequestOp::Write(Payload::Lent(b)),
                    ..
                }) => engine.give_back(b),
                ToArray::Submit(_) => {}
            }
        }
        self.stalled.clear();
    }

    /// Requests waiting for room in the engine.
    pub fn stalled(&self) -> usize {
        self.stalled.len()
    }
}

/// Takes the engine's completions, each to the link its request came by (the first link's
/// when one is marked with no link), hands them over and tops up every link's stock.
pub fn give_out(links: &mut [ArrayLink], engine: &mut RaidEngine) {
    let Some(first) = links.first_mut() else {
        return;
    };
    let mut out = std::mem::take(&mut first.out);
    let _ = engine.completions(&mut out);
    let last = links.len() - 1;
    for mut c in out.drain(..) {
        let i = ((c.id >> FRONTEND_SHIFT) as usize).min(last);
        c.id &= (1 << FRONTEND_SHIFT) - 1;
        links[i].unsent.push_back(c);
    }
    links[0].out = out;
    for l in links.iter_mut() {
        l.send(engine);
    }
}

impl LinkBackend {
    /// Gives back what the stock still holds (the NBD thread is ending).
    fn return_stock(&mut self) {
        while let Ok(id) = self.stock.try_recv() {
            self.stocked.fetch_sub(1, Ordering::AcqRel);
            self.give_back(LentBuffer {
                id: u32::from(id),
                len: 0,
            });
        }
    }
}

impl Drop for LinkBackend {
    fn drop(&mut self) {
        self.return_stock();
        let _ = self.push();
    }
}

impl Backend for LinkBackend {
    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            read_only: self.read_only.load(Ordering::Acquire),
            ..self.capabilities
        }
    }

    fn submit(&mut self, request: Request) -> Result<(), Busy> {
        if self.in_flight >= MAX_IN_FLIGHT || self.starved.load(Ordering::Acquire) {
            return Err(Busy(request));
        }
        match self.to_array.try_send(ToArray::Submit(request)) {
            Ok(()) => {
                self.in_flight += 1;
                self.sent = true;
                Ok(())
            }
            Err(TrySendError::Full(ToArray::Submit(r)))
            | Err(TrySendError::Disconnected(ToArray::Submit(r))) => Err(Busy(r)),
            Err(_) => Ok(()),
        }
    }

    fn push(&mut self) -> io::Result<()> {
        while let Some(id) = self.unsent.pop_front() {
            if self.to_array.try_send(ToArray::GiveBack(id)).is_err() {
                self.unsent.push_front(id);
                break;
            }
            self.sent = true;
        }
        if self.sent {
            self.sent = false;
            self.array_wake.signal();
        }
        Ok(())
    }

    fn completions(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        self.nbd_wake.clear();
        while let Ok(c) = self.done.try_recv() {
            self.in_flight = self.in_flight.saturating_sub(1);
            out.push(c);
        }
        Ok(())
    }

    fn wake_fd(&self) -> Option<RawFd> {
        Some(self.nbd_wake.0.as_raw_fd())
    }

    fn lend(&mut self, len: u32) -> Option<LentBuffer> {
        let id = self.stock.try_recv().ok()?;
        self.stocked.fetch_sub(1, Ordering::AcqRel);
        Some(LentBuffer {
            id: u32::from(id),
            len,
        })
    }

    fn lent(&self, buffer: &LentBuffer) -> &[u8] {
        match self.pool.range(buffer.id, buffer.len) {
            // SAFETY: this thread owns the buffer while it holds the `LentBuffer` (module
            // documentation); the range lies inside the pool, which outlives this thread.
            Some((p, len)) => unsafe { std::slice::from_raw_parts(p, len) },
            None => &[],
        }
    }

    fn lent_mut(&mut self, buffer: &LentBuffer) -> &mut [u8] {
        match self.pool.range(buffer.id, buffer.len) {
            // SAFETY: as in `lent`; `&mut self` keeps the borrow unique on this thread.
            Some((p, len)) => unsafe { std::slice::from_raw_parts_mut(p, len) },
            None => &mut [],
        }
    }

    fn give_back(&mut self, buffer: LentBuffer) {
        if let Err(TrySendError::Full(ToArray::GiveBack(id)))
        | Err(TrySendError::Disconnected(ToArray::GiveBack(id))) =
            self.to_array.try_send(ToArray::GiveBack(buffer.id))
        {
            self.unsent.push_back(id);
        }
        self.sent = true;
    }
}
