//! Members that are NBD exports, driven beside the ring.
//!
//! A remote member's commands do not go to io_uring: [`Link::submit`] queues them for the
//! link's sender thread, which writes each request (and a write's payload, straight from the
//! pool buffer) to the socket; the link's receiver thread reads the replies (a read's data
//! straight into the pool buffer) and posts each completion to the [`Notes`] that the
//! [`super::MemberIo`] shares among its remote members. Posting writes an `eventfd` whose read
//! sits in the ring, so the array loop wakes on the ring as for any completion, and
//! [`super::MemberIo::reap`] hands remote completions out like the ring's.
//!
//! Failure is the receiver's to declare, once the sender has stopped touching pool buffers:
//! a broken socket, a reply the protocol does not allow, or a request older than the
//! failfast timeout (md's failfast: a member that does not answer in time is failed rather
//! than waited for). The link then goes [`Mode::Down`]: it keeps every unanswered command
//! and posts [`Note::Down`]; the array decides ([`Link::hold`]: keep them for the server's
//! return, the `suspend` policy when no other in-sync member is left; [`Link::fail`]: answer
//! them with errors, so the engine fails the member). Meanwhile the receiver reconnects
//! with back-off and posts [`Note::Reconnected`] with a fresh connection; the array checks
//! the member's superblock on it before taking it back ([`Link::resume`]) or re-adding it.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::nbd::client::{self, Connection, Export, Stream, Target, Uri};
use crate::nbd::proto::{self, RequestHeader, cflags, cmd};

/// What the links tell the array loop, in the order it happened.
#[derive(Debug)]
pub enum Note {
    /// Command `slot` finished with `res` (bytes, or a negated errno).
    Done {
        /// The command's slot in the engine's table.
        slot: u64,
        /// Bytes transferred or `-errno`.
        res: i32,
    },
    /// The link of member `member` broke; its unanswered commands wait for a verdict.
    Down {
        /// The member position.
        member: usize,
        /// What happened, in words.
        why: String,
    },
    /// The link of member `member` has a new connection, not yet in use.
    Reconnected {
        /// The member position.
        member: usize,
        /// The connection (handshake done).
        conn: Box<Connection>,
    },
}

/// The mailbox the links post to, and the `eventfd` that wakes the array loop.
#[derive(Debug)]
pub struct Notes {
    queue: Mutex<VecDeque<Note>>,
    efd: OwnedFd,
}

impl Notes {
    /// A mailbox with its `eventfd`.
    pub fn new() -> io::Result<Arc<Notes>> {
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Arc::new(Notes {
            queue: Mutex::new(VecDeque::with_capacity(256)),
            // SAFETY: fd is a fresh descriptor this struct now owns.
            efd: unsafe { OwnedFd::from_raw_fd(fd) },
        }))
    }

    /// The `eventfd` (readable once something was posted).
    pub fn fd(&self) -> RawFd {
        self.efd.as_raw_fd()
    }

    fn post(&self, n: Note) {
        lock(&self.queue).push_back(n);
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live array to our eventfd.
        unsafe { libc::write(self.efd.as_raw_fd(), one.as_ptr().cast(), 8) };
    }

    /// Everything posted so far.
    pub fn drain(&self, out: &mut VecDeque<Note>) {
        out.append(&mut lock(&self.queue));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a link stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Connected: commands are sent.
    Up,
    /// Broken, waiting for the array's verdict: commands are kept.
    Down,
    /// Broken, and the array holds I/O for the server's return: commands are kept.
    Held,
    /// Broken, and the member is failed: commands are answered with `EIO`.
    Failed,
    /// Closed for good.
    Closed,
}

/// One command of a remote member.
#[derive(Clone, Copy, Debug)]
struct Req {
    /// The engine's command it is (or is a piece of).
    slot: u64,
    /// Its NBD handle: `slot`, or for a piece of a command split at the server's maximum
    /// block, `slot` with the piece's number above [`PIECE_SHIFT`].
    handle: u64,
    kind: u16,
    flags: u16,
    offset: u64,
    len: u32,
    /// The pool memory of a read or write (as an address: the pool outlives the command).
    ptr: usize,
    /// A write without FUA support that must be followed by a flush before it completes.
    then_flush: bool,
    sent: Option<Instant>,
    error: Option<u32>,
}

/// Where a piece's number sits in its handle (the engine's slots are far below 2^40).
const PIECE_SHIFT: u32 = 40;

/// A read or write longer than the server's maximum block, sent as pieces: what is left of it.
#[derive(Clone, Copy, Debug)]
struct Split {
    /// Pieces not answered yet.
    left: u32,
    /// The first error a piece was answered with.
    error: Option<u32>,
    /// The whole command's length.
    len: u32,
    /// A flush must follow once every piece is written (FUA without server support).
    then_flush: bool,
    /// The number of its last piece (numbers are never reused: a piece cut again for a
    /// server back with a smaller maximum block takes new ones).
    next: u32,
}

#[derive(Debug)]
struct State {
    mode: Mode,
    /// Bumped at each new connection: threads of an older one stop.
    generation: u64,
    member: usize,
    to_send: VecDeque<Req>,
    /// Sent and unanswered, by handle.
    in_flight: HashMap<u64, Req>,
    /// The commands sent as pieces, by slot.
    split: HashMap<u64, Split>,
    stream: Option<Stream>,
    /// Waiting between reconnection attempts; set false to stop trying.
    reconnect: bool,
    /// The generation whose connection ended (its sender stops at once).
    ended: Option<u64>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    notes: Arc<Notes>,
    uri: Uri,
    timeout: Duration,
}

/// The link of one remote member.
#[derive(Debug)]
pub struct Link {
    shared: Arc<Shared>,
    export: Export,
    receiver: Option<JoinHandle<()>>,
}

/// How a command arrives from the engine.
#[derive(Clone, Copy, Debug)]
pub enum RemoteOp {
    /// Read into `ptr`.
    Read(*mut u8),
    /// Write from `ptr`, with FUA.
    Write(*const u8, bool),
    /// Flush.
    Flush,
    /// Trim.
    Trim,
    /// Write zeroes.
    Zeroes,
}

impl Link {
    /// Takes over `conn` for member position `member`; `timeout` is the failfast timeout.
    pub fn start(conn: Connection, member: usize, timeout: Duration, notes: Arc<Notes>) -> Link {
        let uri = conn.uri().clone();
        let (stream, export) = conn.into_stream();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mode: Mode::Up,
                generation: 0,
                member,
                to_send: VecDeque::with_capacity(256),
                in_flight: HashMap::with_capacity(256),
                split: HashMap::with_capacity(64),
                stream: None,
                reconnect: true,
                ended: None,
            }),
            wake: Condvar::new(),
            notes,
            uri,
            timeout,
        });
        let receiver = spawn_connection(&shared, stream, export, 0);
        Link {
            shared,
            export,
            receiver: Some(receiver),
        }
    }

    /// The export's description (from the first connection).
    pub fn export(&self) -> &Export {
        &self.export
    }

    /// The URI.
    pub fn uri(&self) -> &Uri {
        &self.shared.uri
    }

    /// The longest piece a read or write is sent in: the server's maximum block, in whole
    /// sectors and whole minimum blocks (0: the server takes no sector-sized command).
    pub fn piece_len(&self) -> u32 {
        piece_len(&self.export)
    }

    /// The failfast timeout.
    pub fn timeout(&self) -> Duration {
        self.shared.timeout
    }

    /// Whether the link is connected (no allocation: asked on every reap).
    pub fn is_up(&self) -> bool {
        lock(&self.shared.state).mode == Mode::Up
    }

    /// Whether the link is broken and keeps its commands (waiting for the array's verdict, or
    /// held for the server's return).
    pub fn is_held(&self) -> bool {
        matches!(lock(&self.shared.state).mode, Mode::Down | Mode::Held)
    }

    /// The member position it reports as.
    pub fn set_member(&self, member: usize) {
        lock(&self.shared.state).member = member;
    }

    /// Queues one command (its completion is posted as [`Note::Done`] with `slot`). A read or
    /// write longer than [`Link::piece_len`] goes as several commands, answered as one.
    pub fn submit(&self, slot: u64, op: RemoteOp, offset: u64, len: u32) {
        let e = &self.export;
        let (kind, flags, ptr, then_flush) = match op {
            RemoteOp::Read(p) => (cmd::READ, 0, p as usize, false),
            RemoteOp::Write(p, fua) => {
                let f = if fua && e.can_fua() { cflags::FUA } else { 0 };
                (
                    cmd::WRITE,
                    f,
                    p as usize,
                    fua && !e.can_fua() && e.can_flush(),
                )
            }
            RemoteOp::Flush if !e.can_flush() => return self.answer(slot, 0),
            RemoteOp::Flush => (cmd::FLUSH, 0, 0, false),
            // A discard is advice: a server without trim keeps the data, which is allowed.
            RemoteOp::Trim if !e.can_trim() => return self.answer(slot, 0),
            RemoteOp::Trim => (cmd::TRIM, 0, 0, false),
            RemoteOp::Zeroes if !e.can_write_zeroes() => {
                return self.answer(slot, -libc::EOPNOTSUPP);
            }
            RemoteOp::Zeroes => (cmd::WRITE_ZEROES, 0, 0, false),
        };
        // A flush covers the whole export: NBD wants offset and length 0.
        let (offset, len) = if kind == cmd::FLUSH {
            (0, 0)
        } else {
            (offset, len)
        };
        let req = Req {
            slot,
            handle: slot,
            kind,
            flags,
            offset,
            len,
            ptr,
            then_flush,
            sent: None,
            error: None,
        };
        let piece = self.piece_len();
        let mut st = lock(&self.shared.state);
        match st.mode {
            Mode::Up | Mode::Down | Mode::Held => {
                debug_assert!(slot < 1 << PIECE_SHIFT);
                queue_cut(&mut st, req, piece);
                self.shared.wake.notify_all();
            }
            Mode::Failed | Mode::Closed => {
                drop(st);
                self.answer(slot, -libc::EIO);
            }
        }
    }

    fn answer(&self, slot: u64, res: i32) {
        self.shared.notes.post(Note::Done { slot, res });
    }

    /// The array's verdict after [`Note::Down`]: keep the commands until the server is back.
    pub fn hold(&self) {
        let mut st = lock(&self.shared.state);
        if matches!(st.mode, Mode::Down) {
            st.mode = Mode::Held;
        }
    }

    /// The array's verdict after [`Note::Down`]: answer every kept command (and every later
    /// one) with `EIO`; the engine then fails the member. Reconnection goes on, for a re-add.
    pub fn fail(&self) {
        let mut st = lock(&self.shared.state);
        if !matches!(st.mode, Mode::Down | Mode::Held) {
            return;
        }
        st.mode = Mode::Failed;
        // The connection's threads are gone (Down is posted after they stop): nothing else
        // touches these commands' buffers.
        let slots = take_slots(&mut st);
        drop(st);
        for s in slots {
            self.answer(s, -libc::EIO);
        }
    }

    /// Takes `conn` (from [`Note::Reconnected`]) into use: the kept commands are sent again, in
    /// their order, and the link is up. What the server said in this handshake (structured
    /// replies, block sizes) is what the link goes by from now on: a server restarted
    /// otherwise is read as it now speaks.
    pub fn resume(&mut self, conn: Connection) {
        let (stream, export) = conn.into_stream();
        self.export = export;
        let generation = {
            let mut st = lock(&self.shared.state);
            st.generation += 1;
            st.mode = Mode::Up;
            st.generation
        };
        if let Some(old) = self.receiver.take() {
            let _ = old.join();
        }
        self.receiver = Some(spawn_connection(
            &self.shared,
            stream,
            self.export,
            generation,
        ));
    }

    /// Goes on trying to connect (a connection from [`Note::Reconnected`] that the array could
    /// not take yet was dropped).
    pub fn retry(&mut self) {
        let generation = lock(&self.shared.state).generation;
        if let Some(old) = self.receiver.take() {
            let _ = old.join();
        }
        let shared = Arc::clone(&self.shared);
        self.receiver = std::thread::Builder::new()
            .name("raid1-nbd-member".into())
            .spawn(move || reconnect(&shared, generation))
            .ok();
    }

    /// Drops the connection while it is up (the member failed through an error reply): the
    /// link goes down as for a broken socket, and reconnects.
    pub fn drop_connection(&self) {
        let st = lock(&self.shared.state);
        if st.mode == Mode::Up
            && let Some(s) = &st.stream
        {
            s.shutdown();
        }
    }

    /// Stops reconnecting (a member refused on its return, e.g. as a split brain).
    pub fn stop_reconnecting(&self) {
        lock(&self.shared.state).reconnect = false;
        self.shared.wake.notify_all();
    }

    /// Closes the link for good and returns the slots of every command it still held (the
    /// caller completes them).
    pub fn close(&mut self) -> Vec<u64> {
        {
            let mut st = lock(&self.shared.state);
            st.mode = Mode::Closed;
            st.reconnect = false;
            if let Some(s) = &st.stream {
                s.shutdown();
            }
            self.shared.wake.notify_all();
        }
        if let Some(r) = self.receiver.take() {
            let _ = r.join();
        }
        take_slots(&mut lock(&self.shared.state))
    }
}

/// The longest piece a read or write to `export` is sent in (see [`Link::piece_len`]).
fn piece_len(export: &Export) -> u32 {
    let unit = export.min_block.max(512);
    export.max_block / unit * unit
}

/// Queues `r` to be sent: as it is, or, longer than `piece` (when that is not 0), as pieces
/// of at most `piece` bytes, each its own command, answered as one. A whole command becomes a
/// split one; a piece of one (cut again for a server back with a smaller maximum block) is
/// replaced by its pieces, numbered after every piece its command had.
fn queue_cut(st: &mut State, r: Req, piece: u32) {
    if piece == 0 || r.len <= piece {
        st.to_send.push_back(r);
        return;
    }
    let pieces = r.len.div_ceil(piece);
    let whole = st.split.entry(r.slot).or_insert(Split {
        left: 1,
        error: None,
        len: r.len,
        then_flush: r.then_flush,
        next: 0,
    });
    whole.left += pieces - 1;
    for i in 0..pieces {
        let at = i * piece;
        whole.next += 1;
        st.to_send.push_back(Req {
            handle: r.slot | u64::from(whole.next) << PIECE_SHIFT,
            offset: r.offset + u64::from(at),
            len: piece.min(r.len - at),
            ptr: r.ptr + at as usize,
            then_flush: false,
            ..r
        });
    }
}

/// Cuts every kept read or write longer than `piece` (a server back with a smaller maximum
/// block than the one they were cut for) into pieces it takes (see [`queue_cut`]).
fn recut(st: &mut State, piece: u32) {
    for r in std::mem::take(&mut st.to_send) {
        queue_cut(st, r, piece);
    }
}

/// Every command the link still holds, taken out: each slot once (the pieces of a split
/// command share theirs).
fn take_slots(st: &mut State) -> Vec<u64> {
    let mut slots: Vec<u64> = st.to_send.drain(..).map(|r| r.slot).collect();
    slots.extend(st.in_flight.drain().map(|(_, r)| r.slot));
    st.split.clear();
    slots.sort_unstable();
    slots.dedup();
    slots
}

impl Drop for Link {
    fn drop(&mut self) {
        for s in self.close() {
            self.answer(s, -libc::ECANCELED);
        }
    }
}

/// Starts the receiver of a connection (it starts its sender); both stop when the
/// generation moves on or the socket breaks.
fn spawn_connection(
    shared: &Arc<Shared>,
    stream: Stream,
    export: Export,
    generation: u64,
) -> JoinHandle<()> {
    let shared = Arc::clone(shared);
    std::thread::Builder::new()
        .name("raid1-nbd-member".into())
        .spawn(move || receiver(shared, stream, export, generation))
        .unwrap_or_else(|e| panic!("cannot start a thread for a remote member: {e}"))
}

fn receiver(shared: Arc<Shared>, mut stream: Stream, export: Export, generation: u64) {
    let tick = (shared.timeout / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
    let _ = stream.set_read_timeout(Some(shared.timeout));
    let _ = stream.set_write_timeout(Some(shared.timeout));
    let sender = match stream.try_clone() {
        Ok(s) => {
            if let Ok(keep) = stream.try_clone() {
                let mut st = lock(&shared.state);
                // Requests sent on an earlier connection go out again, first, in their order.
                let mut again: Vec<Req> = st.in_flight.drain().map(|(_, r)| r).collect();
                again.sort_by_key(|r| r.sent);
                for r in again.into_iter().rev() {
                    st.to_send.push_front(Req { sent: None, ..r });
                }
                // Cut for this server's maximum block, which may be smaller than before.
                recut(&mut st, piece_len(&export));
                st.stream = Some(keep);
            }
            let sh = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("raid1-nbd-send".into())
                .spawn(move || sender(sh, s, generation))
                .ok()
        }
        Err(_) => None,
    };
    let why = if sender.is_none() {
        "cannot start the sending thread".to_string()
    } else {
        receive_loop(&shared, &mut stream, &export, generation, tick)
    };
    // Stop the sender before anyone may answer (and so free) a buffer it reads.
    stream.shutdown();
    {
        let mut st = lock(&shared.state);
        st.ended = Some(generation);
        if st.generation == generation {
            st.stream = None;
        }
    }
    shared.wake.notify_all();
    if let Some(s) = sender {
        let _ = s.join();
    }
    let member = {
        let mut st = lock(&shared.state);
        if st.generation != generation || st.mode == Mode::Closed {
            return;
        }
        st.mode = Mode::Down;
        st.member
    };
    shared.notes.post(Note::Down { member, why });
    reconnect(&shared, generation);
}

/// Reads replies until the connection fails; returns why, in words.
fn receive_loop(
    shared: &Shared,
    stream: &mut Stream,
    export: &Export,
    generation: u64,
    tick: Duration,
) -> String {
    let fd = match stream {
        Stream::Tcp(s) => s.as_raw_fd(),
        Stream::Unix(s) => s.as_raw_fd(),
    };
    loop {
        {
            let st = lock(&shared.state);
            if st.generation != generation || st.mode == Mode::Closed {
                return "closed".into();
            }
            if let Some(oldest) = st.in_flight.values().filter_map(|r| r.sent).min()
                && oldest.elapsed() > shared.timeout
            {
                return format!(
                    "no answer from the server within the failfast timeout ({} ms)",
                    shared.timeout.as_millis()
                );
            }
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, tick.as_millis() as i32) };
        if n <= 0 {
            continue;
        }
        let found = |h: u64| {
            let st = lock(&shared.state);
            let r = st.in_flight.get(&h)?;
            Some((r.kind == cmd::READ).then(|| Target {
                offset: r.offset,
                // SAFETY: the pool buffer of a read in flight belongs to this command until
                // it is answered, which only this thread does while the link is up.
                buf: unsafe { std::slice::from_raw_parts_mut(r.ptr as *mut u8, r.len as usize) },
            }))
        };
        let c = match client::receive_chunk(stream, export.structured, found) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return "the server closed the connection".into();
            }
            Err(e) => return format!("the connection failed: {e}"),
        };
        if c.error == Some(proto::err::ESHUTDOWN) {
            // The server is going away: the connection is, too (the request stays unanswered
            // until the array's verdict).
            return "the server is shutting down".into();
        }
        let mut st = lock(&shared.state);
        let Some(r) = st.in_flight.get_mut(&c.handle) else {
            continue;
        };
        if let Some(e) = c.error {
            r.error.get_or_insert(e);
        }
        if !c.done {
            continue;
        }
        let Some(mut r) = st.in_flight.remove(&c.handle) else {
            continue;
        };
        if r.handle != r.slot {
            // A piece: the command is answered with its last piece, as one.
            let Some(whole) = st.split.get_mut(&r.slot) else {
                continue;
            };
            if let Some(e) = r.error {
                whole.error.get_or_insert(e);
            }
            whole.left -= 1;
            if whole.left > 0 {
                continue;
            }
            let whole = *whole;
            st.split.remove(&r.slot);
            r = Req {
                handle: r.slot,
                len: whole.len,
                then_flush: whole.then_flush,
                error: whole.error,
                ..r
            };
        }
        if r.then_flush && r.error.is_none() {
            // A write with FUA on a server without it: durable once a flush follows.
            st.to_send.push_front(Req {
                kind: cmd::FLUSH,
                flags: 0,
                offset: 0,
                len: 0,
                ptr: 0,
                then_flush: false,
                sent: None,
                ..r
            });
            shared.wake.notify_all();
            continue;
        }
        drop(st);
        let res = match r.error {
            Some(e) => -client::errno_of_nbd(e),
            None if r.kind == cmd::READ || r.kind == cmd::WRITE => r.len as i32,
            None => 0,
        };
        shared.notes.post(Note::Done { slot: r.slot, res });
    }
}

fn sender(shared: Arc<Shared>, mut stream: Stream, generation: u64) {
    loop {
        let req = {
            let mut st = lock(&shared.state);
            loop {
                if st.generation != generation
                    || st.mode != Mode::Up
                    || st.ended == Some(generation)
                {
                    return;
                }
                if let Some(mut r) = st.to_send.pop_front() {
                    r.sent = Some(Instant::now());
                    st.in_flight.insert(r.handle, r);
                    break r;
                }
                st = shared
                    .wake
                    .wait_timeout(st, Duration::from_millis(500))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
        };
        let head = proto::encode_request(&RequestHeader {
            flags: req.flags,
            kind: req.kind,
            handle: req.handle,
            offset: req.offset,
            length: req.len,
        });
        let sent = stream.write_all(&head).and_then(|()| {
            if req.kind == cmd::WRITE {
                // SAFETY: the pool buffer of a write in flight is not written by anyone until
                // the write is answered, which waits for this thread to stop.
                let data =
                    unsafe { std::slice::from_raw_parts(req.ptr as *const u8, req.len as usize) };
                stream.write_all(data)
            } else {
                Ok(())
            }
        });
        if sent.is_err() {
            stream.shutdown();
            return;
        }
    }
}

/// Tries to connect again, with back-off (100 ms doubling to 5 s), until it succeeds, the link
/// is closed or told to stop; posts [`Note::Reconnected`] on success.
fn reconnect(shared: &Shared, generation: u64) {
    let mut wait = Duration::from_millis(100);
    loop {
        {
            let st = lock(&shared.state);
            let st = shared
                .wake
                .wait_timeout_while(st, wait, |s| {
                    s.reconnect && s.mode != Mode::Closed && s.generation == generation
                })
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
            if !st.reconnect || st.mode == Mode::Closed || st.generation != generation {
                return;
            }
        }
        match Connection::connect(&shared.uri, shared.timeout) {
            Ok(conn) => {
                let member = lock(&shared.state).member;
                shared.notes.post(Note::Reconnected {
                    member,
                    conn: Box::new(conn),
                });
                return;
            }
            Err(_) => wait = (wait * 2).min(Duration::from_secs(5)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            mode: Mode::Held,
            generation: 0,
            member: 0,
            to_send: VecDeque::new(),
            in_flight: HashMap::new(),
            split: HashMap::new(),
            stream: None,
            reconnect: true,
            ended: None,
        }
    }

    fn req(slot: u64, kind: u16, offset: u64, len: u32) -> Req {
        Req {
            slot,
            handle: slot,
            kind,
            flags: 0,
            offset,
            len,
            ptr: 0x10_0000 + offset as usize,
            then_flush: kind == cmd::WRITE,
            sent: None,
            error: None,
        }
    }

    /// Kept commands cut for a server back with a smaller maximum block: a whole write, a
    /// piece of a command already split, a short read and a flush. Every piece fits, the
    /// pieces of one command tile it with handles never used before, and each command is still
    /// answered once (`left`), with its flush-after-FUA kept for the whole.
    #[test]
    fn kept_commands_are_cut_again_for_a_smaller_maximum_block() {
        let mut st = state();
        st.to_send.push_back(req(1, cmd::WRITE, 0, 40 << 10));
        // Slot 2 was sent as two 64 KiB pieces; piece 1 was answered, piece 2 is kept.
        st.split.insert(
            2,
            Split {
                left: 1,
                error: None,
                len: 128 << 10,
                then_flush: false,
                next: 2,
            },
        );
        let mut p = req(2, cmd::READ, (1 << 20) + (64 << 10), 64 << 10);
        p.handle = 2 | 2 << PIECE_SHIFT;
        st.to_send.push_back(p);
        st.to_send.push_back(req(3, cmd::READ, 2 << 20, 4096));
        st.to_send.push_back(req(4, cmd::FLUSH, 0, 0));
        recut(&mut st, 16 << 10);
        let mut handles: Vec<u64> = st.to_send.iter().map(|r| r.handle).collect();
        handles.sort_unstable();
        handles.dedup();
        assert_eq!(handles.len(), st.to_send.len(), "a handle used twice");
        for (slot, offset, len) in [(1, 0, 40 << 10), (2, (1 << 20) + (64 << 10), 64 << 10)] {
            let pieces: Vec<&Req> = st.to_send.iter().filter(|r| r.slot == slot).collect();
            let mut at = offset;
            for r in &pieces {
                assert!(r.len <= 16 << 10 && r.handle != slot && !r.then_flush);
                assert_eq!((r.offset, r.ptr), (at, 0x10_0000 + at as usize));
                at += u64::from(r.len);
            }
            assert_eq!(at, offset + u64::from(len as u32));
            assert_eq!(st.split[&slot].left as usize, pieces.len());
        }
        assert_eq!(st.split[&1].len, 40 << 10);
        assert!(st.split[&1].then_flush);
        assert_eq!(st.split[&2].len, 128 << 10);
        assert!(st.to_send.iter().any(|r| r.handle == 2 | 3 << PIECE_SHIFT));
        assert!(!st.to_send.iter().any(|r| r.handle == 2 | 2 << PIECE_SHIFT));
        // The short read and the flush go as they were, in their order.
        let rest: Vec<(u64, u64)> = st
            .to_send
            .iter()
            .filter(|r| r.slot >= 3)
            .map(|r| (r.slot, r.handle))
            .collect();
        assert_eq!(rest, vec![(3, 3), (4, 4)]);
    }
}
