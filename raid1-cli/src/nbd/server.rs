//! The NBD server: listeners, connections, the handshake and the transmission phase, over a [`Backend`].
//!
//! Single-threaded and nonblocking. Sockets are nonblocking and watched with `poll(2)`, together with the
//! backend's wake descriptor (for the io_uring backends: the ring's fd, readable when completions wait).
//! One call of [`NbdServer::run_once`] is one turn of the event loop: push queued backend I/O to the kernel,
//! poll, accept, reap backend completions into replies, read and parse client bytes into backend requests,
//! write replies. Requests are submitted as they arrive and answered by handle in completion order.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::proto::{self, Command, ExportLimits, ProtocolError, RequestHeader, opt, rep, tflags};
use crate::errno::Errno;
use crate::slab::Slab;

/// What a backend can do; turned into the transmission flags and the block size information.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Writes, trims and zeroing are refused.
    pub read_only: bool,
    /// Flush is meaningful (advertise `NBD_FLAG_SEND_FLUSH`).
    pub flush: bool,
    /// Force unit access is honoured (advertise `NBD_FLAG_SEND_FUA`).
    pub fua: bool,
    /// Trim is supported (advertise `NBD_FLAG_SEND_TRIM`).
    pub trim: bool,
    /// Write zeroes is supported (advertise `NBD_FLAG_SEND_WRITE_ZEROES`).
    pub write_zeroes: bool,
    /// Flush and FUA on one connection cover writes completed on every connection (no per-connection cache).
    pub multi_conn: bool,
    /// Smallest request granularity (offsets and lengths should be multiples of it).
    pub min_block_size: u32,
    /// Preferred request granularity.
    pub preferred_block_size: u32,
    /// The backend lends the buffers of write payloads and read data ([`Backend::lend`]): the
    /// server copies a write's payload once, from its receive buffer into the lent buffer, and
    /// sends a read's data from the lent buffer without copying it.
    pub lends_buffers: bool,
}

/// A buffer the backend lent (see [`Backend::lend`]), `len` bytes long. Not `Clone`: each is
/// given back once.
#[derive(Debug, PartialEq, Eq)]
pub struct LentBuffer {
    /// The backend's name for it.
    pub id: u32,
    /// Bytes of payload in it.
    pub len: u32,
}

/// A payload: bytes the server owns, or a buffer the backend lent.
#[derive(Debug, PartialEq, Eq)]
pub enum Payload {
    /// Owned bytes (empty: no payload).
    Owned(Vec<u8>),
    /// A lent buffer.
    Lent(LentBuffer),
}

impl Payload {
    /// No payload.
    pub const NONE: Payload = Payload::Owned(Vec::new());

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Payload::Owned(v) => v.len(),
            Payload::Lent(b) => b.len as usize,
        }
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The operation of a [`Request`].
#[derive(Debug, PartialEq, Eq)]
pub enum RequestOp {
    /// Read `length` bytes; the completion carries them.
    Read,
    /// Write the payload (its length is the request's `length`). A lent payload belongs to
    /// the backend from here on (it gives it back to itself when the write is done).
    Write(Payload),
    /// Make completed writes durable.
    Flush,
    /// Discard the range (advisory).
    Trim,
    /// Zero the range.
    WriteZeroes,
}

/// One request for the backend. `id` is unique among the requests in flight.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// Identifies the request in its [`Completion`].
    pub id: u64,
    /// What to do.
    pub op: RequestOp,
    /// Byte offset (checked: the range lies inside the export).
    pub offset: u64,
    /// Byte length (checked: at most the maximum payload for reads and writes).
    pub length: u32,
    /// Force unit access.
    pub fua: bool,
}

/// The backend has no room for the request now; it is handed back untouched. Retry after completions.
#[derive(Debug, PartialEq, Eq)]
pub struct Busy(pub Request);

/// The outcome of a request.
#[derive(Debug, PartialEq, Eq)]
pub struct Completion {
    /// The request's id.
    pub id: u64,
    /// For a read, exactly `length` bytes (a lent buffer goes back with
    /// [`Backend::give_back`] once sent); empty for the other operations; or the errno.
    pub result: Result<Payload, Errno>,
}

/// A block device the server exports. The running array implements it
/// (`crate::array::engine::RaidEngine`); so does `crate::member_io::export::MemberBackend`
/// for a single member.
///
/// The contract is asynchronous: [`Backend::submit`] never blocks and never completes a request inline
/// with I/O; completions come back through [`Backend::completions`], in any order.
pub trait Backend {
    /// Export size in bytes.
    fn size(&self) -> u64;
    /// What the backend supports.
    fn capabilities(&self) -> Capabilities;
    /// Queues a request, or hands it back if the backend is full.
    fn submit(&mut self, request: Request) -> Result<(), Busy>;
    /// Hands queued I/O to the kernel without waiting.
    fn push(&mut self) -> io::Result<()>;
    /// Appends every finished request to `out`, without blocking.
    fn completions(&mut self, out: &mut Vec<Completion>) -> io::Result<()>;
    /// A descriptor that `poll(2)` reports readable when completions may be ready (`None`: completions
    /// only ever appear during `submit`/`push`).
    fn wake_fd(&self) -> Option<RawFd>;
    /// Lends a buffer for a write payload of `len` bytes (at most the server's `max_payload`),
    /// or `None` while every buffer is in use (the server waits for completions, as after
    /// [`Busy`]). Only called when [`Capabilities::lends_buffers`].
    fn lend(&mut self, _len: u32) -> Option<LentBuffer> {
        None
    }
    /// The `len` bytes of a lent buffer.
    fn lent(&self, _buffer: &LentBuffer) -> &[u8] {
        &[]
    }
    /// The `len` bytes of a lent buffer, to fill.
    fn lent_mut(&mut self, _buffer: &LentBuffer) -> &mut [u8] {
        &mut []
    }
    /// Takes a lent buffer back (sent, or its client left).
    fn give_back(&mut self, _buffer: LentBuffer) {}
}

/// Where the server listens: `unix:PATH` or `tcp:IP:PORT` (loopback addresses only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddress {
    /// A unix stream socket at this path.
    Unix(PathBuf),
    /// A TCP socket on a loopback address.
    Tcp(SocketAddr),
}

impl std::str::FromStr for ListenAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path".into());
            }
            return Ok(ListenAddress::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tcp:") {
            let addr: SocketAddr = addr
                .parse()
                .map_err(|e| format!("listen address \"{}\": {e}", addr.escape_default()))?;
            if !addr.ip().is_loopback() {
                return Err(format!(
                    "listen address {addr}: only loopback addresses are allowed (no TLS, no auth)"
                ));
            }
            return Ok(ListenAddress::Tcp(addr));
        }
        Err(format!(
            "listen address \"{}\": expected unix:PATH or tcp:127.0.0.1:PORT",
            s.escape_default()
        ))
    }
}

impl std::fmt::Display for ListenAddress {
    /// As given on the command line: `unix:PATH` or `tcp:IP:PORT`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddress::Unix(p) => write!(f, "unix:{}", p.display()),
            ListenAddress::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// Server settings. Together they bound the memory the server holds for its clients; see
/// [`ServerConfig::memory_bound`].
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Name of the single export (the empty name, the default export, is accepted too).
    pub export_name: String,
    /// Free text sent for `NBD_INFO_DESCRIPTION`.
    pub description: String,
    /// Largest read or write payload (advertised as the maximum block size).
    pub max_payload: u32,
    /// Requests in flight per client before the server stops reading from it.
    pub max_in_flight_per_client: usize,
    /// Bytes one client may hold in the server: payloads of its requests in flight plus its
    /// unsent replies. The server stops reading from a client at this figure (backpressure); a
    /// single request larger than it is still served when the client holds nothing else.
    pub max_bytes_per_client: usize,
    /// Clients in the transmission phase at once; one more is refused at `NBD_OPT_GO`
    /// (`NBD_REP_ERR_POLICY`, then closed) or at `NBD_OPT_EXPORT_NAME` (closed).
    pub max_clients: usize,
    /// Connections still in the handshake at once. When full, a new connection replaces the
    /// oldest one if that one has been handshaking for 2 s or more; else it waits in the
    /// listen queue.
    pub max_handshakes: usize,
    /// A connection that has not finished its handshake (`NBD_OPT_GO`/`EXPORT_NAME`) in this time
    /// is closed.
    pub handshake_timeout: Duration,
    /// Prefix of the lines logged on stderr for refused and dropped clients (empty: no log).
    pub log_prefix: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            export_name: String::new(),
            description: String::from("raid1"),
            max_payload: 32 << 20,
            max_in_flight_per_client: 128,
            max_bytes_per_client: 8 << 20,
            max_clients: 64,
            max_handshakes: 32,
            handshake_timeout: Duration::from_secs(10),
            log_prefix: String::from("nbd"),
        }
    }
}

impl ServerConfig {
    /// The most bytes of buffers the server holds for its connections, whatever the clients do:
    /// per client in transmission its budget (or one maximal request) plus a receive buffer
    /// sized for one maximal write; per handshaking connection a receive buffer, one option's
    /// data and its budget of unsent option replies. The backend's own memory comes on top.
    pub fn memory_bound(&self) -> usize {
        let payload = self.max_payload as usize + proto::REQUEST_HEADER_LEN;
        let per_client = self.max_bytes_per_client.max(payload + 16) + payload + READ_CHUNK;
        // Receive buffer, one option's data, and unsent replies: the budget plus the replies to
        // one option (a few small ones).
        let per_handshake = READ_CHUNK + MAX_OPTION_DATA as usize + 2 * HANDSHAKE_BYTES;
        self.max_clients * per_client + self.max_handshakes * per_handshake
    }
}

/// Largest option data we buffer (strings are at most 4096 bytes by the protocol).
const MAX_OPTION_DATA: u32 = 64 * 1024;
/// Bytes asked of each `read(2)` on a client socket.
const READ_CHUNK: usize = 256 * 1024;
/// An empty receive buffer larger than this (after a very large write) is released.
const SHRINK_RX_ABOVE: usize = 8 << 20;
/// Unsent option replies at which the server stops reading a handshaking connection's options.
const HANDSHAKE_BYTES: usize = 64 * 1024;
/// When the handshake slots are full, a new connection may replace one handshaking this long.
const EVICT_AFTER: Duration = Duration::from_secs(2);
/// Lines logged about clients per second at most (the rest are counted and summarised).
const LOG_LINES_PER_SECOND: u32 = 20;
/// Bytes held for all clients from which the allocator maps every large buffer on its own
/// (see [`set_mmap_threshold`]), and below which it goes back to the heap.
const PRESSURE_ON: usize = 64 << 20;
const PRESSURE_OFF: usize = 16 << 20;
/// Released memory is handed back to the system at most this often.
const TRIM_EVERY: Duration = Duration::from_secs(1);
/// Small replies are coalesced into one chunk up to this size.
const COALESCE: usize = 64 * 1024;
/// Most chunks one `writev` sends.
const MAX_IOV: usize = 64;
/// Sent reply chunks a connection keeps for reuse (a read reply is a header chunk and a lent
/// buffer, so up to one header chunk per request in flight is live at once).
const SPARE_CHUNKS: usize = 32;

enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

impl Listener {
    fn fd(&self) -> RawFd {
        match self {
            Listener::Unix(l, _) => l.as_raw_fd(),
            Listener::Tcp(l) => l.as_raw_fd(),
        }
    }

    /// Accepts one connection; returns it with a description of the peer for the log.
    fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            Listener::Unix(l, _) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(true)?;
                let peer = unix_peer(&s);
                Ok((Stream::Unix(s), peer))
            }
            Listener::Tcp(l) => {
                let (s, addr) = l.accept()?;
                s.set_nonblocking(true)?;
                s.set_nodelay(true)?;
                Ok((Stream::Tcp(s), format!("tcp:{addr}")))
            }
        }
    }
}

/// A unix socket peer as `unix pid P uid U` (`SO_PEERCRED`).
fn unix_peer(s: &UnixStream) -> String {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len describe a valid ucred buffer.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r == 0 {
        format!("unix pid {} uid {}", cred.pid, cred.uid)
    } else {
        String::from("unix peer")
    }
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn fd(&self) -> RawFd {
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tcp(s) => s.as_raw_fd(),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write_vectored(bufs),
            Stream::Tcp(s) => s.write_vectored(bufs),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    ClientFlags,
    Options,
    Transmission,
}

struct Connection {
    stream: Stream,
    /// Who the peer is (for the log).
    peer: String,
    /// When the connection was accepted (the handshake deadline counts from here).
    since: Instant,
    /// Receive buffer; `rx[rx_start..rx_end]` holds bytes not yet parsed, the rest is free room.
    rx: Vec<u8>,
    rx_start: usize,
    rx_end: usize,
    /// Bytes the message being received needs in all (a write's header and payload).
    rx_want: usize,
    /// Queued output: bytes the server owns (replies, owned read data) and read data in
    /// buffers the backend lent.
    tx: VecDeque<Payload>,
    tx_pos: usize,
    /// Sent small chunks kept for the next replies (no allocation per reply).
    spare: Vec<Vec<u8>>,
    /// Bytes queued in `tx` and not yet sent.
    tx_queued: usize,
    phase: Phase,
    fixed_newstyle: bool,
    no_zeroes: bool,
    /// Payload bytes of a refused write still to be read and dropped.
    discard: u64,
    in_flight: usize,
    /// Bytes charged for the requests in flight (payload plus reply header); with `tx_queued`
    /// what the client holds in the server.
    in_flight_bytes: usize,
    /// The charge of the request whose header waits at the front of the receive buffer for room
    /// in the budget (0: none).
    need: usize,
    /// A request the backend refused as busy; nothing more is parsed until it is accepted.
    stalled: Option<Request>,
    /// The backend had no buffer to lend for the write at the front of the receive buffer;
    /// nothing more is read or parsed until the next turn retries.
    wait_buffer: bool,
    /// The client asked to finish (`NBD_CMD_DISC` or `NBD_OPT_ABORT`): no more reading; close once the
    /// requests in flight are answered and the replies sent.
    finishing: bool,
    /// Close now (I/O error, end of stream or a protocol violation).
    dead: bool,
    /// The export size this client was told when it entered the transmission phase: its
    /// requests are checked against it. NBD has no way to tell a connected client that the
    /// size changed, so a client keeps the size it was given; a new connection gets the
    /// backend's size then.
    size: u64,
    /// The transmission flags this client was told when it entered the transmission phase
    /// (the export may have been made read-only, or writable again, since another client
    /// connected): its requests are checked against them.
    flags: u16,
}

impl Connection {
    fn new(stream: Stream, peer: String) -> Connection {
        let mut greeting = Vec::with_capacity(18);
        proto::encode_greeting(&mut greeting);
        Connection {
            stream,
            peer,
            since: Instant::now(),
            rx: Vec::new(),
            rx_start: 0,
            rx_end: 0,
            rx_want: 0,
            tx: VecDeque::from([Payload::Owned(greeting)]),
            tx_pos: 0,
            spare: Vec::new(),
            tx_queued: 18,
            phase: Phase::ClientFlags,
            fixed_newstyle: false,
            no_zeroes: false,
            discard: 0,
            in_flight: 0,
            in_flight_bytes: 0,
            need: 0,
            stalled: None,
            wait_buffer: false,
            finishing: false,
            dead: false,
            size: 0,
            flags: 0,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.rx[self.rx_start..self.rx_end]
    }

    fn consume(&mut self, n: usize) {
        self.rx_start += n;
        if self.rx_start == self.rx_end {
            self.rx_start = 0;
            self.rx_end = 0;
            if self.rx.len() > SHRINK_RX_ABOVE {
                // Give back the room a large write needed.
                self.rx = Vec::new();
            }
        }
    }

    /// Makes at least READ_CHUNK bytes (or what the message being received still needs) of free room
    /// after `rx_end`, moving unparsed bytes to the front first.
    fn make_rx_room(&mut self) {
        let want = READ_CHUNK.max(self.rx_want.saturating_sub(self.rx_end - self.rx_start));
        if self.rx.len() - self.rx_end < want && self.rx_start > 0 {
            self.rx.copy_within(self.rx_start..self.rx_end, 0);
            self.rx_end -= self.rx_start;
            self.rx_start = 0;
        }
        if self.rx.len() - self.rx_end < want {
            // What is needed, not the default doubling (a client's receive buffer is part of
            // the server's memory bound): the message being received and one read's room, so
            // that the sizes of a client's writes set the buffer's size, not the timing of its
            // bytes (a buffer grown once stays: no allocation per request).
            let len = (self.rx_end + want).max(self.rx_want + READ_CHUNK);
            self.rx.reserve_exact(len - self.rx.len());
            self.rx.resize(len, 0);
        }
    }

    /// Queues bytes to send, coalescing small pieces.
    fn send_small(&mut self, bytes: &[u8]) {
        self.tx_queued += bytes.len();
        match self.tx.back_mut() {
            Some(Payload::Owned(last))
                if last.len() + bytes.len() <= COALESCE && last.capacity() < 4 * COALESCE =>
            {
                last.extend_from_slice(bytes)
            }
            _ => {
                // Small to start with: a non-reading client's many small replies must not cost
                // much more than the bytes counted against its budget. A sent chunk is reused.
                let mut v = self
                    .spare
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(bytes.len().max(256)));
                v.extend_from_slice(bytes);
                self.tx.push_back(Payload::Owned(v));
            }
        }
    }

    fn send_owned(&mut self, bytes: Vec<u8>) {
        if bytes.len() <= 4096 {
            self.send_small(&bytes);
        } else {
            self.tx_queued += bytes.len();
            self.tx.push_back(Payload::Owned(bytes));
        }
    }

    /// Queues a payload to send: owned bytes, or a lent buffer sent from where it is.
    fn send_payload(&mut self, payload: Payload) {
        match payload {
            Payload::Owned(v) if v.is_empty() => {}
            Payload::Owned(v) => self.send_owned(v),
            Payload::Lent(b) => {
                self.tx_queued += b.len as usize;
                self.tx.push_back(Payload::Lent(b));
            }
        }
    }

    /// Gives every lent buffer the connection holds back to the backend (it is closing).
    fn give_back_all<B: Backend>(&mut self, backend: &mut B) {
        for chunk in self.tx.drain(..) {
            if let Payload::Lent(b) = chunk {
                backend.give_back(b);
            }
        }
        if let Some(Request {
            op: RequestOp::Write(Payload::Lent(b)),
            ..
        }) = self.stalled.take()
        {
            backend.give_back(b);
        }
    }

    fn option_reply(&mut self, option: u32, reply_type: u32, data: &[u8]) {
        let mut v = Vec::with_capacity(20 + data.len());
        proto::encode_option_reply(&mut v, option, reply_type, data);
        self.send_owned(v);
    }

    /// Bytes the client holds in the server: requests in flight and unsent replies.
    fn held(&self) -> usize {
        self.in_flight_bytes + self.tx_queued
    }

    /// Whether a request charged `cost` bytes fits in the client's budget now: it does when
    /// the client holds nothing (so one request larger than the budget still goes through).
    fn fits(&self, cost: usize, budget: usize) -> bool {
        let held = self.held();
        held == 0 || held + cost <= budget
    }

    fn wants_read(&self, limits: &Limits) -> bool {
        // During the handshake only option replies are held: a small budget is plenty.
        let budget = if self.phase == Phase::Transmission {
            limits.max_bytes
        } else {
            HANDSHAKE_BYTES
        };
        !self.dead
            && !self.finishing
            && self.stalled.is_none()
            && !self.wait_buffer
            && self.in_flight < limits.max_in_flight
            && self.held() < budget
            && (self.need == 0 || self.fits(self.need, budget))
    }

    fn finished(&self) -> bool {
        self.dead
            || (self.finishing
                && self.in_flight == 0
                && self.tx.is_empty()
                && self.stalled.is_none())
    }

    /// Writes as much queued output as the socket takes; lent buffers that are sent go back to
    /// `backend`.
    fn write_out<B: Backend>(&mut self, backend: &mut B) {
        while !self.tx.is_empty() && !self.dead {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let mut count = 0;
            for (i, chunk) in self.tx.iter().take(MAX_IOV).enumerate() {
                let from = if i == 0 { self.tx_pos } else { 0 };
                let bytes = match chunk {
                    Payload::Owned(v) => &v[..],
                    Payload::Lent(b) => backend.lent(b),
                };
                slices[count] = IoSlice::new(bytes.get(from..).unwrap_or(&[]));
                count += 1;
            }
            match self.stream.write_vectored(&slices[..count]) {
                Ok(0) => self.dead = true,
                Ok(mut n) => {
                    self.tx_queued = self.tx_queued.saturating_sub(n);
                    while n > 0 {
                        let Some(front) = self.tx.front() else { break };
                        let left = front.len() - self.tx_pos;
                        if n >= left {
                            n -= left;
                            self.tx_pos = 0;
                            match self.tx.pop_front() {
                                Some(Payload::Lent(b)) => backend.give_back(b),
                                Some(Payload::Owned(mut v))
                                    if v.capacity() <= 4 * COALESCE
                                        && self.spare.len() < SPARE_CHUNKS =>
                                {
                                    v.clear();
                                    self.spare.push(v);
                                }
                                _ => {}
                            }
                        } else {
                            self.tx_pos += n;
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.dead = true,
            }
        }
    }

    /// Read data still queued (the socket was full: a client slow to read, or one that does
    /// not read) is copied out of its lent buffer, which goes back to the backend. Done when
    /// the backend runs out of buffers, so that a client that does not read never keeps
    /// others waiting for one.
    fn release_lent<B: Backend>(&mut self, backend: &mut B) {
        for (i, chunk) in self.tx.iter_mut().enumerate() {
            let Payload::Lent(b) = chunk else {
                continue;
            };
            let from = if i == 0 { self.tx_pos } else { 0 };
            let rest = backend.lent(b).get(from..).unwrap_or(&[]).to_vec();
            if i == 0 {
                self.tx_pos = 0;
            }
            if let Payload::Lent(b) = std::mem::replace(chunk, Payload::Owned(rest)) {
                backend.give_back(b);
            }
        }
    }
}

/// The per-client flow-control limits.
#[derive(Clone, Copy)]
struct Limits {
    max_in_flight: usize,
    max_bytes: usize,
}

/// Lines on stderr about refused and dropped clients, at most [`LOG_LINES_PER_SECOND`] a second.
struct ClientLog {
    prefix: String,
    window: Instant,
    lines: u32,
    suppressed: u64,
}

impl ClientLog {
    fn tick(&mut self, now: Instant) {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            if self.suppressed > 0 {
                eprintln!(
                    "{}: {} more lines about NBD clients suppressed",
                    self.prefix, self.suppressed
                );
            }
            self.window = now;
            self.lines = 0;
            self.suppressed = 0;
        }
    }

    fn line(&mut self, peer: &str, what: std::fmt::Arguments<'_>) {
        if self.prefix.is_empty() {
            return;
        }
        self.tick(Instant::now());
        if self.lines < LOG_LINES_PER_SECOND {
            self.lines += 1;
            eprintln!("{}: NBD client {peer} {what}", self.prefix);
        } else {
            self.suppressed += 1;
        }
    }
}

/// What a connection needs to know about the export during the handshake.
struct ExportInfo {
    name: String,
    description: String,
    limits: ExportLimits,
    min_block: u32,
    preferred_block: u32,
    /// The backend lends payload buffers.
    lends: bool,
}

impl ExportInfo {
    fn name_matches(&self, name: &[u8]) -> bool {
        name.is_empty() || name == self.name.as_bytes()
    }
}

/// Where a request in flight came from.
struct InFlight {
    connection: u64,
    handle: u64,
    /// What the request is charged to its client's budget.
    cost: usize,
}

/// The NBD server over one backend. See the module documentation for the event loop.
pub struct NbdServer<B: Backend> {
    backend: B,
    config: ServerConfig,
    export: ExportInfo,
    listeners: Vec<Listener>,
    connections: HashMap<u64, Connection>,
    next_connection: u64,
    /// Requests handed to the backend (or stalled), by id: the id is the slot.
    in_flight: Slab<InFlight>,
    completions: Vec<Completion>,
    /// Connections to serve in this turn (kept: no allocation per turn).
    ready: Vec<u64>,
    /// Connection ids for [`NbdServer::retry_stalled`] (kept likewise).
    scratch: Vec<u64>,
    pollfds: Vec<libc::pollfd>,
    poll_owners: Vec<u64>,
    accepted: u64,
    limits: Limits,
    log: ClientLog,
    /// Memory was released (a client left): hand it back to the system at the next chance.
    trim_due: bool,
    last_trim: Instant,
    /// Clients hold more than PRESSURE_ON: large buffers are mapped one by one.
    pressure: bool,
    refused: u64,
    dropped: u64,
}

impl<B: Backend> NbdServer<B> {
    /// A server exporting `backend`; call [`NbdServer::listen`] before running it.
    ///
    /// The server sets glibc's mmap threshold, process-wide: see [`NbdServer::run_once`].
    pub fn new(backend: B, config: ServerConfig) -> NbdServer<B> {
        set_mmap_threshold(false);
        let caps = backend.capabilities();
        let flags = transmission_flags(&caps);
        let min_block = caps.min_block_size.clamp(1, 65536).next_power_of_two();
        let max_payload = config.max_payload.max(min_block) / min_block * min_block;
        let export = ExportInfo {
            name: config.export_name.clone(),
            description: config.description.clone(),
            limits: ExportLimits {
                size: backend.size(),
                max_payload,
                read_only: caps.read_only,
                transmission_flags: flags,
            },
            min_block,
            preferred_block: caps
                .preferred_block_size
                .max(min_block)
                .next_power_of_two()
                .min(max_payload),
            lends: caps.lends_buffers,
        };
        NbdServer {
            backend,
            export,
            listeners: Vec::new(),
            connections: HashMap::new(),
            next_connection: 1,
            // Sized for one client's requests in flight from the start (more clients grow it).
            in_flight: Slab::with_capacity(config.max_in_flight_per_client as u32),
            completions: Vec::with_capacity(config.max_in_flight_per_client),
            ready: Vec::new(),
            scratch: Vec::new(),
            pollfds: Vec::new(),
            poll_owners: Vec::new(),
            accepted: 0,
            limits: Limits {
                max_in_flight: config.max_in_flight_per_client.max(1),
                max_bytes: config.max_bytes_per_client.max(1),
            },
            log: ClientLog {
                prefix: config.log_prefix.clone(),
                window: Instant::now(),
                lines: 0,
                suppressed: 0,
            },
            trim_due: false,
            last_trim: Instant::now(),
            pressure: false,
            refused: 0,
            dropped: 0,
            config,
        }
    }

    /// Starts listening on `address`. Returns the bound address (useful with TCP port 0).
    pub fn listen(&mut self, address: &ListenAddress) -> io::Result<ListenAddress> {
        match address {
            ListenAddress::Unix(path) => {
                let l = UnixListener::bind(path)?;
                l.set_nonblocking(true)?;
                self.listeners.push(Listener::Unix(l, path.clone()));
                Ok(address.clone())
            }
            ListenAddress::Tcp(addr) => {
                if !addr.ip().is_loopback() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "only loopback addresses are allowed",
                    ));
                }
                let l = TcpListener::bind(addr)?;
                l.set_nonblocking(true)?;
                let bound = l.local_addr()?;
                self.listeners.push(Listener::Tcp(l));
                Ok(ListenAddress::Tcp(bound))
            }
        }
    }

    /// The exported backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The exported backend, mutably.
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The transmission flags sent to clients.
    pub fn transmission_flags(&self) -> u16 {
        self.export.limits.transmission_flags
    }

    /// Clients connected now.
    pub fn client_count(&self) -> usize {
        self.connections.len()
    }

    /// Connections accepted since the start.
    pub fn accepted_count(&self) -> u64 {
        self.accepted
    }

    /// Connections refused (past the maximum of clients) since the start.
    pub fn refused_count(&self) -> u64 {
        self.refused
    }

    /// Connections dropped by the server's limits (handshake deadline, replaced) since the start.
    pub fn dropped_count(&self) -> u64 {
        self.dropped
    }

    /// Requests submitted to the backend and not yet completed (including those of closed clients).
    pub fn requests_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Serves until `stop` is set (checked at least every 100 ms).
    pub fn run(&mut self, stop: &AtomicBool) -> io::Result<()> {
        while !stop.load(Ordering::Relaxed) {
            self.run_once(Some(Duration::from_millis(100)))?;
        }
        Ok(())
    }

    /// One turn of the event loop; blocks in `poll(2)` for at most `timeout` (`None`: until something
    /// happens).
    pub fn run_once(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.backend.push()?;
        self.build_pollfds();
        let timeout = match (timeout, self.next_deadline()) {
            (Some(t), Some(d)) => Some(t.min(d)),
            (t, d) => t.or(d),
        };
        let timeout_ms = timeout.map_or(-1, |t| {
            // Round up, so that a deadline a fraction of a millisecond away is not spun on.
            (t.as_micros().div_ceil(1000)).min(i32::MAX as u128) as i32
        });
        // SAFETY: pollfds is a valid array of pollfd for its length.
        let n = unsafe {
            libc::poll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                timeout_ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let now = Instant::now();
        self.log.tick(now);
        self.expire_handshakes(now);
        self.accept_all();
        self.reap()?;
        self.retry_stalled();
        // Connections with socket events, and those with complete messages left in their receive buffer
        // (parsing stops while a client has too many requests or bytes in flight or one is stalled).
        let limits = self.limits;
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        ready.extend(
            self.pollfds
                .iter()
                .zip(&self.poll_owners)
                .filter(|(p, owner)| {
                    **owner != 0 && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
                })
                .map(|(_, owner)| *owner),
        );
        let polled = ready.len();
        for (id, c) in &self.connections {
            if !c.pending().is_empty() && c.wants_read(&limits) && !ready[..polled].contains(id) {
                ready.push(*id);
            }
        }
        for &id in &ready {
            self.serve_input(id);
        }
        self.ready = ready;
        // Replies for requests that completed during the reads above.
        self.reap()?;
        for c in self.connections.values_mut() {
            c.write_out(&mut self.backend);
        }
        if self
            .connections
            .values()
            .any(|c| c.wait_buffer || c.stalled.is_some())
        {
            for c in self.connections.values_mut() {
                c.release_lent(&mut self.backend);
            }
        }
        let in_flight = &mut self.in_flight;
        let backend = &mut self.backend;
        let before = self.connections.len();
        self.connections.retain(|_, c| {
            if !c.finished() {
                return true;
            }
            if let Some(req) = &c.stalled {
                in_flight.remove(req.id);
            }
            c.give_back_all(backend);
            false
        });
        if self.connections.len() < before {
            self.trim_due = true;
        }
        self.watch_pressure();
        self.trim_memory(now);
        self.backend.push()
    }

    /// Time until the next handshake deadline or memory trim, if any.
    fn next_deadline(&self) -> Option<Duration> {
        let now = Instant::now();
        let handshake = self
            .connections
            .values()
            .filter(|c| c.phase != Phase::Transmission && !c.dead)
            .map(|c| (c.since + self.config.handshake_timeout).saturating_duration_since(now))
            .min();
        let trim = self
            .trim_due
            .then(|| (self.last_trim + TRIM_EVERY).saturating_duration_since(now));
        // Once the oldest handshake may be replaced, the listener's POLLIN is what matters.
        let slot = self.slot_wait().filter(|w| !w.is_zero());
        [handshake, trim, slot].into_iter().flatten().min()
    }

    /// Closes the connections whose handshake is not finished by the deadline.
    fn expire_handshakes(&mut self, now: Instant) {
        let limit = self.config.handshake_timeout;
        for c in self.connections.values_mut() {
            if c.phase != Phase::Transmission && !c.dead && now.duration_since(c.since) >= limit {
                c.dead = true;
                self.dropped += 1;
                self.log.line(
                    &c.peer,
                    format_args!(
                        "dropped: handshake not finished within {} s",
                        limit.as_secs_f64()
                    ),
                );
            }
        }
    }

    /// Heap buffers are fast (reused without page faults) but fragment: under a flood of
    /// clients that hold their full budgets the heap grew 130 MiB past what they held. So
    /// while clients hold more than [`PRESSURE_ON`] in all, every buffer of 128 KiB or more
    /// is mapped and unmapped on its own and resident memory follows what clients hold
    /// exactly; below [`PRESSURE_OFF`] buffers come from the heap again.
    fn watch_pressure(&mut self) {
        let held: usize = self.connections.values().map(Connection::held).sum();
        if !self.pressure && held >= PRESSURE_ON {
            self.pressure = true;
            set_mmap_threshold(true);
            trim_heap();
        } else if self.pressure && held < PRESSURE_OFF {
            self.pressure = false;
            set_mmap_threshold(false);
            self.trim_due = true;
        }
    }

    /// Hands memory freed by departed clients back to the system (glibc keeps freed heap memory
    /// otherwise), at most once per [`TRIM_EVERY`].
    fn trim_memory(&mut self, now: Instant) {
        if !self.trim_due || now.duration_since(self.last_trim) < TRIM_EVERY {
            return;
        }
        self.trim_due = false;
        self.last_trim = now;
        trim_heap();
    }

    fn build_pollfds(&mut self) {
        self.pollfds.clear();
        self.poll_owners.clear();
        // While the handshake slots are full, new connections stay in the listen queue.
        let accepting = self.slot_wait().is_none_or(|w| w.is_zero());
        for l in &self.listeners {
            self.pollfds.push(libc::pollfd {
                fd: l.fd(),
                events: if accepting { libc::POLLIN } else { 0 },
                revents: 0,
            });
            self.poll_owners.push(0);
        }
        if let Some(fd) = self.backend.wake_fd() {
            self.pollfds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
            self.poll_owners.push(0);
        }
        for (id, c) in &self.connections {
            let mut events = 0;
            if c.wants_read(&self.limits) {
                events |= libc::POLLIN;
            }
            if !c.tx.is_empty() {
                events |= libc::POLLOUT;
            }
            self.pollfds.push(libc::pollfd {
                fd: c.stream.fd(),
                events,
                revents: 0,
            });
            self.poll_owners.push(*id);
        }
    }

    fn accept_all(&mut self) {
        for li in 0..self.listeners.len() {
            // With every handshake slot taken by a connection younger than EVICT_AFTER, new
            // connections wait in the listen queue (first come, first served).
            while self.handshake_slot() {
                match self.listeners[li].accept() {
                    Ok((stream, peer)) => {
                        self.accepted += 1;
                        let mut c = Connection::new(stream, peer);
                        c.write_out(&mut self.backend);
                        self.connections.insert(self.next_connection, c);
                        self.next_connection += 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break, // WouldBlock, or a transient accept error (EMFILE...)
                }
            }
        }
    }

    /// Connections in the handshake, and the oldest of them.
    fn handshakes(&self) -> (usize, Option<(u64, Instant)>) {
        let mut count = 0;
        let mut oldest: Option<(u64, Instant)> = None;
        for (id, c) in &self.connections {
            if c.phase != Phase::Transmission && !c.dead {
                count += 1;
                if oldest.is_none_or(|(_, t)| c.since < t) {
                    oldest = Some((*id, c.since));
                }
            }
        }
        (count, oldest)
    }

    /// When every handshake slot is taken: how long until the oldest may be replaced.
    fn slot_wait(&self) -> Option<Duration> {
        let (count, oldest) = self.handshakes();
        if count < self.config.max_handshakes {
            return None;
        }
        oldest.map(|(_, since)| (since + EVICT_AFTER).saturating_duration_since(Instant::now()))
    }

    /// Whether a new connection may start its handshake now: there is a free handshake slot, or
    /// the oldest handshaking connection has had [`EVICT_AFTER`] and is dropped for it.
    fn handshake_slot(&mut self) -> bool {
        let (count, oldest) = self.handshakes();
        if count < self.config.max_handshakes {
            return true;
        }
        let Some((id, since)) = oldest else {
            return false;
        };
        if since.elapsed() < EVICT_AFTER {
            return false;
        }
        if let Some(old) = self.connections.remove(&id) {
            self.dropped += 1;
            self.trim_due = true;
            self.log.line(
                &old.peer,
                format_args!(
                    "dropped: handshake unfinished after {:.1} s while all {} handshake slots are taken and another connection waits",
                    since.elapsed().as_secs_f64(),
                    self.config.max_handshakes
                ),
            );
        }
        true
    }

    fn reap(&mut self) -> io::Result<()> {
        self.completions.clear();
        self.backend.completions(&mut self.completions)?;
        for done in self.completions.drain(..) {
            let Some(origin) = self.in_flight.remove(done.id) else {
                continue;
            };
            let Some(c) = self.connections.get_mut(&origin.connection) else {
                // The client left: its reply is dropped, a lent buffer goes back.
                if let Ok(Payload::Lent(b)) = done.result {
                    self.backend.give_back(b);
                }
                self.trim_due = true;
                continue;
            };
            c.in_flight = c.in_flight.saturating_sub(1);
            c.in_flight_bytes = c.in_flight_bytes.saturating_sub(origin.cost);
            match done.result {
                Ok(data) => {
                    c.send_small(&proto::simple_reply(0, origin.handle));
                    c.send_payload(data);
                }
                Err(errno) => c.send_small(&proto::simple_reply(
                    proto::nbd_error_from_errno(errno.0),
                    origin.handle,
                )),
            }
        }
        Ok(())
    }

    fn retry_stalled(&mut self) {
        let mut stalled = std::mem::take(&mut self.scratch);
        stalled.clear();
        stalled.extend(
            self.connections
                .iter()
                .filter(|(_, c)| c.stalled.is_some())
                .map(|(id, _)| *id),
        );
        for c in self.connections.values_mut() {
            c.wait_buffer = false;
        }
        for &id in &stalled {
            let Some(c) = self.connections.get_mut(&id) else {
                continue;
            };
            let Some(req) = c.stalled.take() else {
                continue;
            };
            match self.backend.submit(req) {
                Ok(()) => {
                    c.in_flight += 1;
                    self.serve_input(id);
                }
                Err(Busy(req)) => c.stalled = Some(req),
            }
        }
        self.scratch = stalled;
    }

    /// Clients in the transmission phase.
    fn serving(&self) -> usize {
        self.connections
            .values()
            .filter(|c| c.phase == Phase::Transmission && !c.dead)
            .count()
    }

    /// Reads what the client sent and acts on every complete message.
    fn serve_input(&mut self, id: u64) {
        let room = self.serving() < self.config.max_clients;
        let Some(c) = self.connections.get_mut(&id) else {
            return;
        };
        let limits = self.limits;
        let mut ctx = Ctx {
            conn_id: id,
            export: &self.export,
            backend: &mut self.backend,
            in_flight: &mut self.in_flight,
            limits,
            room,
            max_clients: self.config.max_clients,
            log: &mut self.log,
            refused: &mut self.refused,
        };
        let mut drained = false;
        loop {
            parse_messages(c, &mut ctx);
            if !c.wants_read(&limits) {
                break;
            }
            // Read once more into the free room of the receive buffer.
            if drained {
                // The last read did not fill the room: the socket is empty, and poll(2) (level
                // triggered) reports it again when more arrives. Saves a read(2) that fails with EAGAIN.
                break;
            }
            c.make_rx_room();
            let room = c.rx.len() - c.rx_end;
            match c.stream.read(&mut c.rx[c.rx_end..]) {
                Ok(0) => c.dead = true,
                Ok(n) => {
                    c.rx_end += n;
                    drained = n < room;
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => {}
                    _ => c.dead = true,
                },
            }
            if c.dead {
                break;
            }
        }
        c.write_out(&mut self.backend);
    }
}

/// What parsing one connection's messages needs from the server.
struct Ctx<'a, B: Backend> {
    conn_id: u64,
    export: &'a ExportInfo,
    backend: &'a mut B,
    in_flight: &'a mut Slab<InFlight>,
    limits: Limits,
    /// Another client may enter the transmission phase.
    room: bool,
    max_clients: usize,
    log: &'a mut ClientLog,
    refused: &'a mut u64,
}

impl<B: Backend> Drop for NbdServer<B> {
    fn drop(&mut self) {
        for l in &self.listeners {
            if let Listener::Unix(_, path) = l {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// glibc's mmap threshold: 128 KiB under memory pressure (large buffers mapped one by one,
/// unmapped when freed), else 32 MiB (request buffers from the heap, reused: mapping each one
/// halved the throughput of 1 MiB writes). Setting it also stops glibc's own adjustment.
fn set_mmap_threshold(pressure: bool) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator setting.
    unsafe {
        libc::mallopt(
            libc::M_MMAP_THRESHOLD,
            if pressure { 128 << 10 } else { 32 << 20 },
        );
        // Fixing the mmap threshold leaves the trim threshold at 128 KiB, and the heap's top
        // would then be given back and faulted in again on every request: keep it high
        // (departed clients' memory goes back through malloc_trim).
        libc::mallopt(
            libc::M_TRIM_THRESHOLD,
            if pressure { 1 << 20 } else { 64 << 20 },
        );
    }
    let _ = pressure;
}

/// Returns the heap's free pages to the system.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Acts on every complete message in the connection's receive buffer.
fn parse_messages<B: Backend>(c: &mut Connection, ctx: &mut Ctx<'_, B>) {
    while c.wants_read(&ctx.limits) {
        if c.discard > 0 {
            let n = (c.pending().len() as u64).min(c.discard) as usize;
            if n == 0 {
                return;
            }
            c.consume(n);
            c.discard -= n as u64;
            continue;
        }
        match c.phase {
            Phase::ClientFlags => match proto::parse_client_flags(c.pending()) {
                Ok(None) => return,
                Ok(Some(f)) => {
                    c.consume(4);
                    c.fixed_newstyle = f.fixed_newstyle;
                    c.no_zeroes = f.no_zeroes;
                    c.phase = Phase::Options;
                }
                Err(_) => c.dead = true,
            },
            Phase::Options => match proto::parse_option_header(c.pending(), MAX_OPTION_DATA) {
                Ok(None) => return,
                Err(_) => c.dead = true,
                Ok(Some(h)) => {
                    let total = proto::OPTION_HEADER_LEN + h.length as usize;
                    if c.pending().len() < total {
                        return;
                    }
                    let data = c.pending()[proto::OPTION_HEADER_LEN..total].to_vec();
                    c.consume(total);
                    handle_option(c, ctx, h.option, &data);
                }
            },
            Phase::Transmission => match proto::parse_request_header(c.pending()) {
                Ok(None) => return,
                Err(ProtocolError::BadRequestMagic(_)) | Err(_) => c.dead = true,
                Ok(Some(h)) => {
                    if !handle_request(c, ctx, &h) {
                        return;
                    }
                }
            },
        }
    }
}

/// Handles one request whose header is at the start of the receive buffer. Returns false if more bytes
/// (the write payload) are needed first.
fn handle_request<B: Backend>(c: &mut Connection, ctx: &mut Ctx<'_, B>, h: &RequestHeader) -> bool {
    let limits = ExportLimits {
        size: c.size,
        read_only: c.flags & tflags::READ_ONLY != 0,
        transmission_flags: c.flags,
        ..ctx.export.limits
    };
    let command = match proto::check_request(h, &limits) {
        Ok(cmd) => cmd,
        Err(refusal) => {
            c.consume(proto::REQUEST_HEADER_LEN);
            c.discard = u64::from(refusal.discard);
            c.send_small(&proto::simple_reply(refusal.error, h.handle));
            return true;
        }
    };
    // What the request will hold in the server: its payload (a write's, or a read's reply data)
    // and its reply header. It waits, unread, until the client's budget has room.
    let cost = match command {
        Command::Read { length, .. } | Command::Write { length, .. } => length as usize + 16,
        _ => 16,
    };
    if !c.fits(cost, ctx.limits.max_bytes) {
        c.need = cost;
        return false;
    }
    c.need = 0;
    let (op, offset, length, fua) = match command {
        Command::Disconnect => {
            c.consume(proto::REQUEST_HEADER_LEN);
            c.finishing = true;
            return true;
        }
        Command::Read { offset, length } => (RequestOp::Read, offset, length, false),
        Command::Write {
            offset,
            length,
            fua,
        } => {
            let total = proto::REQUEST_HEADER_LEN + length as usize;
            if c.pending().len() < total {
                c.rx_want = total;
                return false;
            }
            let bytes = &c.pending()[proto::REQUEST_HEADER_LEN..total];
            // The one copy of a write's payload: from the receive buffer into a buffer the
            // backend lent (its member writes all use that buffer), or into an owned one.
            let payload = if ctx.export.lends {
                let Some(b) = ctx.backend.lend(length) else {
                    // Every buffer is in use: wait for completions to give one back.
                    c.wait_buffer = true;
                    return false;
                };
                let dst = ctx.backend.lent_mut(&b);
                if dst.len() < bytes.len() {
                    ctx.backend.give_back(b);
                    c.consume(total);
                    c.rx_want = 0;
                    c.send_small(&proto::simple_reply(
                        proto::nbd_error_from_errno(libc::ENOMEM),
                        h.handle,
                    ));
                    return true;
                }
                dst[..bytes.len()].copy_from_slice(bytes);
                Payload::Lent(b)
            } else {
                Payload::Owned(bytes.to_vec())
            };
            // The header is consumed below with the other commands.
            c.consume(length as usize);
            c.rx_want = 0;
            (RequestOp::Write(payload), offset, length, fua)
        }
        Command::Flush => (RequestOp::Flush, 0, 0, false),
        Command::Trim {
            offset,
            length,
            fua,
        } => (RequestOp::Trim, offset, length, fua),
        Command::WriteZeroes {
            offset,
            length,
            fua,
        } => (RequestOp::WriteZeroes, offset, length, fua),
    };
    c.consume(proto::REQUEST_HEADER_LEN);
    if length == 0 && !matches!(op, RequestOp::Flush) {
        // Nothing to do: succeed at once.
        c.send_small(&proto::simple_reply(0, h.handle));
        return true;
    }
    let id = u64::from(ctx.in_flight.insert_or_grow(InFlight {
        connection: ctx.conn_id,
        handle: h.handle,
        cost,
    }));
    c.in_flight_bytes += cost;
    match ctx.backend.submit(Request {
        id,
        op,
        offset,
        length,
        fua,
    }) {
        Ok(()) => c.in_flight += 1,
        Err(Busy(req)) => c.stalled = Some(req),
    }
    true
}

/// The transmission flags that announce `caps` to a client.
fn transmission_flags(caps: &Capabilities) -> u16 {
    let mut flags = tflags::HAS_FLAGS;
    if caps.read_only {
        flags |= tflags::READ_ONLY;
    }
    if caps.flush {
        flags |= tflags::SEND_FLUSH;
    }
    if caps.fua {
        flags |= tflags::SEND_FUA;
    }
    if caps.trim && !caps.read_only {
        flags |= tflags::SEND_TRIM;
    }
    if caps.write_zeroes && !caps.read_only {
        flags |= tflags::SEND_WRITE_ZEROES;
    }
    if caps.multi_conn {
        flags |= tflags::CAN_MULTI_CONN;
    }
    flags
}

/// Answers one option of the handshake.
fn handle_option<B: Backend>(c: &mut Connection, ctx: &mut Ctx<'_, B>, option: u32, data: &[u8]) {
    let export = ctx.export;
    if !c.fixed_newstyle && option != opt::EXPORT_NAME {
        // Plain newstyle clients may only send NBD_OPT_EXPORT_NAME.
        c.dead = true;
        return;
    }
    let limits = &export.limits;
    // The size now (the array may have been resized since the server started), and whether
    // it is read-only now (it may have been made so, or writable again).
    let size = ctx.backend.size();
    let caps = ctx.backend.capabilities();
    let flags = transmission_flags(&caps);
    match option {
        opt::EXPORT_NAME => {
            if !export.name_matches(data) {
                c.dead = true; // no error reply exists for this option
                return;
            }
            if !ctx.room {
                // No error reply exists for this option either: close.
                refuse_client(c, ctx);
                c.dead = true;
                return;
            }
            let mut v = Vec::with_capacity(134);
            proto::encode_export_name_reply(&mut v, size, flags, c.no_zeroes);
            c.send_owned(v);
            c.size = size;
            c.flags = flags;
            c.phase = Phase::Transmission;
        }
        opt::ABORT => {
            c.option_reply(option, rep::ACK, &[]);
            c.finishing = true;
        }
        opt::LIST => {
            if !data.is_empty() {
                c.option_reply(option, rep::ERR_INVALID, b"NBD_OPT_LIST takes no data");
                return;
            }
            let mut d = Vec::with_capacity(4 + export.name.len());
            d.extend_from_slice(&(export.name.len() as u32).to_be_bytes());
            d.extend_from_slice(export.name.as_bytes());
            c.option_reply(option, rep::SERVER, &d);
            c.option_reply(option, rep::ACK, &[]);
        }
        opt::INFO | opt::GO => {
            let Some(req) = proto::parse_info_request(data) else {
                c.option_reply(option, rep::ERR_INVALID, b"malformed info request");
                return;
            };
            if !export.name_matches(req.name) {
                c.option_reply(option, rep::ERR_UNKNOWN, b"no such export");
                return;
            }
            if option == opt::GO && !ctx.room {
                let msg = format!(
                    "the server serves its maximum of {} clients",
                    ctx.max_clients
                );
                c.option_reply(option, rep::ERR_POLICY, msg.as_bytes());
                refuse_client(c, ctx);
                c.finishing = true;
                return;
            }
            c.option_reply(option, rep::INFO, &proto::info_export(size, flags));
            for kind in req.requests {
                match kind {
                    proto::info::NAME => c.option_reply(
                        option,
                        rep::INFO,
                        &proto::info_string(kind, export.name.as_bytes()),
                    ),
                    proto::info::DESCRIPTION if !export.description.is_empty() => c.option_reply(
                        option,
                        rep::INFO,
                        &proto::info_string(kind, export.description.as_bytes()),
                    ),
                    proto::info::BLOCK_SIZE => c.option_reply(
                        option,
                        rep::INFO,
                        &proto::info_block_size(
                            export.min_block,
                            export.preferred_block,
                            limits.max_payload,
                        ),
                    ),
                    _ => {}
                }
            }
            c.option_reply(option, rep::ACK, &[]);
            if option == opt::GO {
                c.size = size;
                c.flags = flags;
                c.phase = Phase::Transmission;
            }
        }
        _ => c.option_reply(option, rep::ERR_UNSUP, &[]),
    }
}

/// Logs and counts a client refused because the server serves its maximum of clients.
fn refuse_client<B: Backend>(c: &Connection, ctx: &mut Ctx<'_, B>) {
    *ctx.refused += 1;
    ctx.log.line(
        &c.peer,
        format_args!(
            "refused: the server serves its maximum of {} clients",
            ctx.max_clients
        ),
    );
}
