//! The NBD client side: a member that is an NBD export, named by the standard NBD URI.
//!
//! * [`Uri`]: `nbd://HOST[:PORT][/EXPORT]` (TCP, port 10809 by default) and
//!   `nbd+unix:///EXPORT?socket=PATH` (a Unix socket). `nbds://` (TLS) is refused in words.
//! * [`Connection::connect`]: the fixed-newstyle handshake. `NBD_OPT_STRUCTURED_REPLY` is asked
//!   for (used where the server agrees), then `NBD_OPT_GO` with `NBD_INFO_BLOCK_SIZE` (falling
//!   back to `NBD_OPT_EXPORT_NAME` for a server without `GO`); the [`Export`] records the size,
//!   the transmission flags and the block-size constraints.
//! * The connection's blocking calls ([`Connection::read_exact_at`], `write_all_at`, `flush`,
//!   `write_zeroes`) serve the verbs that read or write metadata (`create`, `examine`,
//!   assembly); the running array drives the same stream asynchronously
//!   (`crate::member_io::remote`), with [`receive_chunk`] reading replies for both.
//!
//! Every error names the URI and, for a refusal by the server, what it refused in words.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use super::proto::{
    self, CLIENT_FIXED_NEWSTYLE, CLIENT_NO_ZEROES, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, IHAVEOPT,
    NBDMAGIC, OPTION_REPLY_MAGIC, ReplyHeader, RequestHeader, chunk, cmd, info, opt, rep, tflags,
};

/// The default NBD port.
pub const DEFAULT_PORT: u16 = 10809;

/// Where an NBD server listens.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// A TCP host (name, IPv4, or IPv6 without brackets) and port.
    Tcp(String, u16),
    /// A Unix socket.
    Unix(PathBuf),
}

/// A parsed NBD URI.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Uri {
    /// The URI as given (what messages and the array's member list show).
    pub text: String,
    /// Where the server is.
    pub address: Address,
    /// The export name (percent-decoded; empty for the server's default export).
    pub export: String,
}

/// Whether `s` is meant as an NBD URI (the caller then parses it, and a malformed one is an
/// error rather than a file name).
pub fn is_uri(s: &std::ffi::OsStr) -> bool {
    let b = s.as_encoded_bytes();
    ["nbd:", "nbds:", "nbd+unix:", "nbds+unix:", "nbd+vsock:"]
        .iter()
        .any(|p| b.len() >= p.len() && b[..p.len()].eq_ignore_ascii_case(p.as_bytes()))
}

fn percent_decode(s: &str, what: &str, text: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("{text}: {what}: a '%' not followed by two hex digits"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text}: {what} is not UTF-8 once decoded"))
}

impl Uri {
    /// Parses an NBD URI; the error names the URI and the part that is wrong.
    pub fn parse(text: &str) -> Result<Uri, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("{text}: an NBD URI starts with nbd:// or nbd+unix://"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme.starts_with("nbds") {
            return Err(format!(
                "{text}: TLS (nbds) is not supported: serve the export without TLS inside a \
                 trusted network, or through a TLS tunnel to a local socket"
            ));
        }
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let export = percent_decode(path, "the export name", text)?;
        match scheme.as_str() {
            "nbd" => {
                if let Some(q) = query {
                    return Err(format!(
                        "{text}: the query \"{q}\" means nothing to nbd:// (socket= belongs to \
                         nbd+unix://)"
                    ));
                }
                let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
                    let (h, after) = v6.split_once(']').ok_or_else(|| {
                        format!("{text}: the host: an IPv6 address in [ ] lacks its ']'")
                    })?;
                    (h.to_string(), after.strip_prefix(':'))
                } else {
                    match authority.rsplit_once(':') {
                        Some((h, p)) => (h.to_string(), Some(p)),
                        None => (authority.to_string(), None),
                    }
                };
                if host.is_empty() {
                    return Err(format!(
                        "{text}: the host is missing (nbd://HOST[:PORT]/EXPORT)"
                    ));
                }
                let port = match port {
                    None | Some("") => DEFAULT_PORT,
                    Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                        format!("{text}: the port \"{p}\" is not a number from 1 to 65535")
                    })?,
                };
                Ok(Uri {
                    text: text.to_string(),
                    address: Address::Tcp(host, port),
                    export,
                })
            }
            "nbd+unix" => {
                if !authority.is_empty() {
                    return Err(format!(
                        "{text}: nbd+unix:// takes no host (nbd+unix:///EXPORT?socket=PATH)"
                    ));
                }
                let mut socket = None;
                for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
                    match pair.split_once('=') {
                        Some(("socket", v)) => {
                            socket = Some(percent_decode(v, "the socket path", text)?)
                        }
                        _ => {
                            return Err(format!(
                                "{text}: the query part \"{pair}\" is not understood (only \
                                 socket=PATH)"
                            ));
                        }
                    }
                }
                let socket = socket.filter(|s| !s.is_empty()).ok_or_else(|| {
                    format!("{text}: the socket is missing (nbd+unix:///EXPORT?socket=PATH)")
                })?;
                Ok(Uri {
                    text: text.to_string(),
                    address: Address::Unix(PathBuf::from(socket)),
                    export,
                })
            }
            other => Err(format!(
                "{text}: the scheme \"{other}\" is not supported (nbd:// or nbd+unix://)"
            )),
        }
    }
}

impl std::fmt::Display for Uri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A connected socket to an NBD server.
#[derive(Debug)]
pub enum Stream {
    /// TCP (with `TCP_NODELAY`).
    Tcp(TcpStream),
    /// A Unix socket.
    Unix(UnixStream),
}

impl Stream {
    /// Connects to `address`, giving up after `timeout`.
    pub fn connect(address: &Address, timeout: Duration) -> io::Result<Stream> {
        match address {
            Address::Tcp(host, port) => {
                let mut last = None;
                for a in (host.as_str(), *port).to_socket_addrs()? {
                    match TcpStream::connect_timeout(&a, timeout) {
                        Ok(s) => {
                            s.set_nodelay(true)?;
                            return Ok(Stream::Tcp(s));
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| io::Error::other("the host has no address")))
            }
            Address::Unix(path) => UnixStream::connect(path).map(Stream::Unix),
        }
    }

    /// A second handle on the same socket (one thread sends, another receives).
    pub fn try_clone(&self) -> io::Result<Stream> {
        match self {
            Stream::Tcp(s) => s.try_clone().map(Stream::Tcp),
            Stream::Unix(s) => s.try_clone().map(Stream::Unix),
        }
    }

    /// Timeout of each blocking read (`None`: wait for ever).
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        }
    }

    /// Timeout of each blocking write.
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(t),
            Stream::Unix(s) => s.set_write_timeout(t),
        }
    }

    /// Shuts both directions: blocked reads and writes on every handle return at once.
    pub fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the server said about its export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Export {
    /// Size in bytes.
    pub size: u64,
    /// Transmission flags (`tflags`).
    pub flags: u16,
    /// Smallest block the server accepts (offsets and lengths are multiples of it).
    pub min_block: u32,
    /// The block size the server prefers.
    pub preferred_block: u32,
    /// Largest read or write payload.
    pub max_block: u32,
    /// Replies come as structured chunks.
    pub structured: bool,
}

impl Export {
    /// Writes are refused.
    pub fn read_only(&self) -> bool {
        self.flags & tflags::READ_ONLY != 0
    }
    /// `NBD_CMD_FLUSH` is offered.
    pub fn can_flush(&self) -> bool {
        self.flags & tflags::SEND_FLUSH != 0
    }
    /// `NBD_CMD_FLAG_FUA` is offered.
    pub fn can_fua(&self) -> bool {
        self.flags & tflags::SEND_FUA != 0
    }
    /// `NBD_CMD_TRIM` is offered.
    pub fn can_trim(&self) -> bool {
        self.flags & tflags::SEND_TRIM != 0
    }
    /// `NBD_CMD_WRITE_ZEROES` is offered.
    pub fn can_write_zeroes(&self) -> bool {
        self.flags & tflags::SEND_WRITE_ZEROES != 0
    }
}

fn rep_name(t: u32) -> String {
    match t {
        rep::ERR_UNSUP => "not supported".into(),
        rep::ERR_POLICY => "refused by the server's policy".into(),
        rep::ERR_INVALID => "invalid".into(),
        rep::ERR_TLS_REQD => "TLS required (raid1 does not speak TLS)".into(),
        rep::ERR_UNKNOWN => "no such export".into(),
        rep::ERR_SHUTDOWN => "the server is shutting down".into(),
        rep::ERR_BLOCK_SIZE_REQD => "block sizes required".into(),
        rep::ERR_TOO_BIG => "too big".into(),
        t if t & 0x8000_0000 != 0 => format!("error {:#x}", t & 0x7fff_ffff),
        t => format!("reply type {t}"),
    }
}

fn send_option(s: &mut Stream, option: u32, data: &[u8]) -> io::Result<()> {
    let mut b = Vec::with_capacity(16 + data.len());
    b.extend_from_slice(&IHAVEOPT.to_be_bytes());
    b.extend_from_slice(&option.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    s.write_all(&b)
}

/// One option reply: (type, data). Data over 64 KiB is a protocol error.
fn read_option_reply(s: &mut Stream, option: u32) -> Result<(u32, Vec<u8>), String> {
    let mut h = [0u8; 20];
    s.read_exact(&mut h)
        .map_err(|e| format!("reading the server's answer: {e}"))?;
    let magic = u64::from_be_bytes(h[..8].try_into().unwrap_or_default());
    let got = u32::from_be_bytes(h[8..12].try_into().unwrap_or_default());
    let kind = u32::from_be_bytes(h[12..16].try_into().unwrap_or_default());
    let len = u32::from_be_bytes(h[16..20].try_into().unwrap_or_default());
    if magic != OPTION_REPLY_MAGIC || got != option {
        return Err(format!(
            "the server's option reply is malformed (magic {magic:#x}, option {got}, expected \
             option {option})"
        ));
    }
    if len > 65536 {
        return Err(format!("the server's option reply is {len} bytes long"));
    }
    let mut data = vec![0u8; len as usize];
    s.read_exact(&mut data)
        .map_err(|e| format!("reading the server's answer: {e}"))?;
    Ok((kind, data))
}

/// A connection in the transmission phase.
#[derive(Debug)]
pub struct Connection {
    stream: Stream,
    export: Export,
    uri: Uri,
    next_handle: u64,
}

impl Connection {
    /// Connects to `uri` and negotiates the export; each step gives up after `timeout`.
    pub fn connect(uri: &Uri, timeout: Duration) -> Result<Connection, String> {
        let u = &uri.text;
        let mut s = Stream::connect(&uri.address, timeout)
            .map_err(|e| format!("{u}: cannot connect: {e}"))?;
        s.set_read_timeout(Some(timeout))
            .and_then(|()| s.set_write_timeout(Some(timeout)))
            .map_err(|e| format!("{u}: {e}"))?;
        let export = handshake(&mut s, &uri.export).map_err(|e| format!("{u}: {e}"))?;
        Ok(Connection {
            stream: s,
            export,
            uri: uri.clone(),
            next_handle: 1,
        })
    }

    /// What the server said about the export.
    pub fn export(&self) -> &Export {
        &self.export
    }

    /// The URI it was opened by.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// Hands over the socket for asynchronous use (the handshake is done).
    pub fn into_stream(self) -> (Stream, Export) {
        (self.stream, self.export)
    }

    /// Timeout of each blocking call from now on.
    pub fn set_timeout(&self, t: Duration) -> io::Result<()> {
        self.stream.set_read_timeout(Some(t))?;
        self.stream.set_write_timeout(Some(t))
    }

    /// One request, waited for: `payload` is a write's data, `into` a read's destination.
    fn call(
        &mut self,
        kind: u16,
        flags: u16,
        offset: u64,
        length: u32,
        payload: Option<&[u8]>,
        mut into: Option<&mut [u8]>,
    ) -> io::Result<()> {
        let handle = self.next_handle;
        self.next_handle += 1;
        let head = proto::encode_request(&RequestHeader {
            flags,
            kind,
            handle,
            offset,
            length,
        });
        self.stream.write_all(&head)?;
        if let Some(p) = payload {
            self.stream.write_all(p)?;
        }
        let mut error = None;
        let mut covered = 0u64;
        loop {
            let target = into.as_deref_mut().map(|b| Target { offset, buf: b });
            let c = receive_chunk(&mut self.stream, self.export.structured, |h| {
                if h == handle { Some(target) } else { None }
            })?;
            covered += c.covered;
            if let Some(e) = c.error {
                error.get_or_insert(e);
            }
            if c.done {
                break;
            }
        }
        if let Some(e) = error {
            return Err(io::Error::from_raw_os_error(errno_of_nbd(e)));
        }
        if kind == cmd::READ && covered != u64::from(length) {
            return Err(io::Error::other(format!(
                "the server answered a read of {length} bytes with {covered}"
            )));
        }
        Ok(())
    }

    fn pieces(&self, len: usize) -> usize {
        (self.export.max_block as usize)
            .clamp(4096, 1 << 22)
            .min(len.max(1))
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let step = self.pieces(buf.len());
        for (i, piece) in buf.chunks_mut(step).enumerate() {
            let at = offset + (i * step) as u64;
            let n = piece.len() as u32;
            self.call(cmd::READ, 0, at, n, None, Some(piece))?;
        }
        Ok(())
    }

    /// Writes all of `buf` at `offset`.
    pub fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.export.read_only() {
            return Err(io::Error::from_raw_os_error(libc::EROFS));
        }
        let step = self.pieces(buf.len());
        for (i, piece) in buf.chunks(step).enumerate() {
            let at = offset + (i * step) as u64;
            let n = piece.len() as u32;
            self.call(cmd::WRITE, 0, at, n, Some(piece), None)?;
        }
        Ok(())
    }

    /// Zeros `len` bytes at `offset` (`NBD_CMD_WRITE_ZEROES` where offered, else written zeros).
    pub fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let mut done = 0u64;
        if self.export.can_write_zeroes() {
            while done < len {
                let n = (1u64 << 30).min(len - done);
                self.call(cmd::WRITE_ZEROES, 0, offset + done, n as u32, None, None)?;
                done += n;
            }
            return Ok(());
        }
        let zeros = vec![0u8; self.pieces(len as usize)];
        while done < len {
            let n = (zeros.len() as u64).min(len - done);
            self.write_all_at(&zeros[..n as usize], offset + done)?;
            done += n;
        }
        Ok(())
    }

    /// Makes every completed write durable (`NBD_CMD_FLUSH`, where the server offers it; a
    /// server without it writes through).
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.export.can_flush() {
            return Ok(());
        }
        self.call(cmd::FLUSH, 0, 0, 0, None, None)
    }

    /// Ends the session politely (`NBD_CMD_DISC`).
    pub fn disconnect(mut self) {
        let h = proto::encode_request(&RequestHeader {
            flags: 0,
            kind: cmd::DISC,
            handle: 0,
            offset: 0,
            length: 0,
        });
        let _ = self.stream.write_all(&h);
        self.stream.shutdown();
    }
}

/// The handshake on a fresh socket; errors are in words (the caller adds the URI).
fn handshake(s: &mut Stream, export: &str) -> Result<Export, String> {
    let mut greet = [0u8; 18];
    s.read_exact(&mut greet).map_err(|e| {
        format!("no NBD greeting from the server ({e}); is an NBD server listening there?")
    })?;
    let magic = u64::from_be_bytes(greet[..8].try_into().unwrap_or_default());
    let second = u64::from_be_bytes(greet[8..16].try_into().unwrap_or_default());
    if magic != NBDMAGIC {
        return Err("the server did not greet with NBDMAGIC: not an NBD server".into());
    }
    if second != IHAVEOPT {
        return Err(
            "the server speaks the old NBD handshake (oldstyle), which raid1 does not: \
             serve the export with the newstyle handshake"
                .into(),
        );
    }
    let hflags = u16::from_be_bytes([greet[16], greet[17]]);
    if hflags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err("the server does not speak fixed newstyle NBD".into());
    }
    let no_zeroes = hflags & FLAG_NO_ZEROES != 0;
    let cflags = CLIENT_FIXED_NEWSTYLE | if no_zeroes { CLIENT_NO_ZEROES } else { 0 };
    let io = |e: io::Error| format!("handshake: {e}");
    s.write_all(&cflags.to_be_bytes()).map_err(io)?;
    // Structured replies where the server has them (holes come back without data).
    send_option(s, opt::STRUCTURED_REPLY, &[]).map_err(io)?;
    let (kind, _) = read_option_reply(s, opt::STRUCTURED_REPLY)?;
    let structured = kind == rep::ACK;
    // NBD_OPT_GO with the block sizes asked for.
    let mut go = Vec::with_capacity(8 + export.len());
    go.extend_from_slice(&(export.len() as u32).to_be_bytes());
    go.extend_from_slice(export.as_bytes());
    go.extend_from_slice(&1u16.to_be_bytes());
    go.extend_from_slice(&info::BLOCK_SIZE.to_be_bytes());
    send_option(s, opt::GO, &go).map_err(io)?;
    let mut size_flags = None;
    let (mut min_block, mut preferred_block, mut max_block) = (1u32, 4096u32, 32u32 << 20);
    loop {
        let (kind, data) = read_option_reply(s, opt::GO)?;
        match kind {
            rep::INFO => {
                let t = data.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
                match t {
                    Some(info::EXPORT) if data.len() == 12 => {
                        let size = u64::from_be_bytes(data[2..10].try_into().unwrap_or_default());
                        let flags = u16::from_be_bytes([data[10], data[11]]);
                        size_flags = Some((size, flags));
                    }
                    Some(info::BLOCK_SIZE) if data.len() == 14 => {
                        let w = |i: usize| {
                            u32::from_be_bytes(data[i..i + 4].try_into().unwrap_or_default())
                        };
                        (min_block, preferred_block, max_block) = (w(2), w(6), w(10));
                    }
                    _ => {}
                }
            }
            rep::ACK => break,
            rep::ERR_UNSUP => {
                // An old server: NBD_OPT_EXPORT_NAME answers with the size and flags.
                send_option(s, opt::EXPORT_NAME, export.as_bytes()).map_err(io)?;
                let mut b = [0u8; 10];
                s.read_exact(&mut b).map_err(|e| {
                    format!(
                        "the server closed the connection at the export name ({e}): no such export?"
                    )
                })?;
                if !no_zeroes {
                    let mut z = [0u8; 124];
                    s.read_exact(&mut z).map_err(io)?;
                }
                let size = u64::from_be_bytes(b[..8].try_into().unwrap_or_default());
                size_flags = Some((size, u16::from_be_bytes([b[8], b[9]])));
                break;
            }
            err => {
                let msg = String::from_utf8_lossy(&data).into_owned();
                let name = if export.is_empty() {
                    "the default export".to_string()
                } else {
                    format!("export \"{export}\"")
                };
                return Err(format!(
                    "the server refused {name}: {}{}",
                    rep_name(err),
                    if msg.is_empty() {
                        String::new()
                    } else {
                        format!(" ({msg})")
                    }
                ));
            }
        }
    }
    let (size, flags) = size_flags
        .ok_or("the server accepted the export but never said its size (NBD_INFO_EXPORT)")?;
    if !min_block.is_power_of_two() || min_block > 65536 || max_block < min_block {
        return Err(format!(
            "the server's block sizes are inconsistent (minimum {min_block}, preferred \
             {preferred_block}, maximum {max_block})"
        ));
    }
    Ok(Export {
        size,
        flags,
        min_block,
        preferred_block,
        max_block,
        structured,
    })
}

/// Where a read's data goes: the request's offset and its destination.
pub struct Target<'a> {
    /// The request's byte offset on the export.
    pub offset: u64,
    /// The destination, as long as the request.
    pub buf: &'a mut [u8],
}

/// One reply, or one chunk of a structured reply, as read by [`receive_chunk`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The request's handle.
    pub handle: u64,
    /// The error the server reported (an NBD error value), if any.
    pub error: Option<u32>,
    /// Bytes of the read's range this chunk filled (data or hole).
    pub covered: u64,
    /// The reply is complete (a simple reply, or a chunk with `FLAG_DONE`).
    pub done: bool,
}

fn protocol(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Reads one reply (or chunk) from `s`. `find(handle)` says what the handle is: `None` for an
/// unknown handle (a protocol error), `Some(None)` for a request without data to receive,
/// `Some(Some(target))` for a read. The data lands straight in the target; holes are zeroed.
/// Any inconsistency is an `InvalidData` error: the stream cannot be trusted after it.
pub fn receive_chunk<'a, R: Read>(
    s: &mut R,
    structured: bool,
    find: impl FnOnce(u64) -> Option<Option<Target<'a>>>,
) -> io::Result<Chunk> {
    let mut head = [0u8; 20];
    s.read_exact(&mut head[..4])?;
    let magic = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let rest = proto::reply_header_rest(magic)
        .ok_or_else(|| protocol(format!("reply magic {magic:#x} is not NBD's")))?;
    s.read_exact(&mut head[4..4 + rest])?;
    let parsed = proto::parse_reply_header(&head[..4 + rest])
        .ok_or_else(|| protocol("malformed reply header".into()))?;
    match parsed {
        ReplyHeader::Simple { error, handle } => {
            let target = find(handle)
                .ok_or_else(|| protocol(format!("reply for unknown handle {handle}")))?;
            let mut covered = 0;
            if error == 0
                && let Some(t) = target
            {
                if structured {
                    return Err(protocol(
                        "a simple reply with data after structured replies were agreed".into(),
                    ));
                }
                s.read_exact(t.buf)?;
                covered = t.buf.len() as u64;
            }
            Ok(Chunk {
                handle,
                error: (error != 0).then_some(error),
                covered,
                done: true,
            })
        }
        ReplyHeader::Chunk {
            flags,
            kind,
            handle,
            length,
        } => {
            if !structured {
                return Err(protocol("a structured reply that was not agreed".into()));
            }
            let target = find(handle)
                .ok_or_else(|| protocol(format!("reply chunk for unknown handle {handle}")))?;
            let done = flags & chunk::FLAG_DONE != 0;
            let mut c = Chunk {
                handle,
                error: None,
                covered: 0,
                done,
            };
            let len = u64::from(length);
            match kind {
                chunk::NONE if length == 0 => {}
                chunk::OFFSET_DATA | chunk::OFFSET_HOLE => {
                    let t = target.ok_or_else(|| {
                        protocol(format!("read data for handle {handle}, which is no read"))
                    })?;
                    let mut at = [0u8; 8];
                    s.read_exact(&mut at)?;
                    let off = u64::from_be_bytes(at);
                    let n = if kind == chunk::OFFSET_DATA {
                        len.checked_sub(8)
                            .ok_or_else(|| protocol("short data chunk".into()))?
                    } else {
                        if length != 12 {
                            return Err(protocol("malformed hole chunk".into()));
                        }
                        let mut b = [0u8; 4];
                        s.read_exact(&mut b)?;
                        u64::from(u32::from_be_bytes(b))
                    };
                    let start = off
                        .checked_sub(t.offset)
                        .filter(|st| st.saturating_add(n) <= t.buf.len() as u64 && n > 0)
                        .ok_or_else(|| {
                            protocol(format!(
                                "a chunk of {n} bytes at {off} is outside the read of {} bytes \
                                 at {}",
                                t.buf.len(),
                                t.offset
                            ))
                        })? as usize;
                    let dst = &mut t.buf[start..start + n as usize];
                    if kind == chunk::OFFSET_DATA {
                        s.read_exact(dst)?;
                    } else {
                        dst.fill(0);
                    }
                    c.covered = n;
                }
                chunk::ERROR | chunk::ERROR_OFFSET => {
                    if !(6..=65536).contains(&length) {
                        return Err(protocol("malformed error chunk".into()));
                    }
                    let mut b = vec![0u8; length as usize];
                    s.read_exact(&mut b)?;
                    let e = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                    c.error = Some(if e == 0 { proto::err::EIO } else { e });
                }
                other if length <= 65536 => {
                    // An informational chunk this client did not ask for: skipped.
                    let mut b = vec![0u8; length as usize];
                    s.read_exact(&mut b)?;
                    if other & 0x8000 != 0 {
                        c.error = Some(proto::err::EIO);
                    }
                }
                _ => return Err(protocol(format!("chunk of {length} bytes"))),
            }
            Ok(c)
        }
    }
}

/// The errno for an NBD error value.
pub fn errno_of_nbd(e: u32) -> i32 {
    match e {
        proto::err::EPERM => libc::EPERM,
        proto::err::ENOMEM => libc::ENOMEM,
        proto::err::EINVAL => libc::EINVAL,
        proto::err::ENOSPC => libc::ENOSPC,
        proto::err::EOVERFLOW => libc::EOVERFLOW,
        proto::err::ENOTSUP => libc::EOPNOTSUPP,
        proto::err::ESHUTDOWN => libc::ESHUTDOWN,
        _ => libc::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        let u = Uri::parse("nbd://10.0.0.2:10810/disk%20a").unwrap();
        assert_eq!(u.address, Address::Tcp("10.0.0.2".into(), 10810));
        assert_eq!(u.export, "disk a");
        let u = Uri::parse("nbd://host").unwrap();
        assert_eq!(u.address, Address::Tcp("host".into(), DEFAULT_PORT));
        assert_eq!(u.export, "");
        let u = Uri::parse("nbd://[::1]:99/x").unwrap();
        assert_eq!(u.address, Address::Tcp("::1".into(), 99));
        let u = Uri::parse("nbd+unix:///e?socket=/run/s.sock").unwrap();
        assert_eq!(u.address, Address::Unix("/run/s.sock".into()));
        assert_eq!(u.export, "e");
        for (bad, word) in [
            ("nbd://h:0/x", "port"),
            ("nbd://h:99999/x", "port"),
            ("nbd:///x", "host"),
            ("nbd+unix:///x", "socket"),
            ("nbd+unix://h/x?socket=/s", "no host"),
            ("nbds://h/x", "TLS"),
            ("nbd://h/x%zz", "hex"),
            ("nbd://h/x?socket=/s", "query"),
            ("nbd+unix:///x?sock=/s", "query"),
        ] {
            let e = Uri::parse(bad).unwrap_err();
            assert!(e.contains(word) && e.contains(bad), "{bad}: {e}");
        }
        assert!(is_uri("NBD://h".as_ref()) && is_uri("nbd+unix:///".as_ref()));
        assert!(!is_uri("/dev/nbd0".as_ref()) && !is_uri("nbdimage".as_ref()));
    }

    fn chunk_bytes(flags: u16, kind: u16, handle: u64, payload: &[u8]) -> Vec<u8> {
        let mut b = proto::STRUCTURED_REPLY_MAGIC.to_be_bytes().to_vec();
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&kind.to_be_bytes());
        b.extend_from_slice(&handle.to_be_bytes());
        b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn structured_chunks_land_in_place_and_are_bounded() {
        let mut data = 4096u64.to_be_bytes().to_vec();
        data.extend_from_slice(&[7u8; 512]);
        let mut hole = 4608u64.to_be_bytes().to_vec();
        hole.extend_from_slice(&512u32.to_be_bytes());
        let mut wire = chunk_bytes(0, chunk::OFFSET_DATA, 9, &data);
        wire.extend(chunk_bytes(chunk::FLAG_DONE, chunk::OFFSET_HOLE, 9, &hole));
        let mut buf = [1u8; 1024];
        let mut r = &wire[..];
        let a = receive_chunk(&mut r, true, |h| {
            (h == 9).then_some(Some(Target {
                offset: 4096,
                buf: &mut buf,
            }))
        })
        .unwrap();
        assert!(!a.done && a.covered == 512);
        let mut buf2 = buf;
        let b = receive_chunk(&mut r, true, |_| {
            Some(Some(Target {
                offset: 4096,
                buf: &mut buf2,
            }))
        })
        .unwrap();
        assert!(b.done && b.covered == 512);
        assert!(buf[..512].iter().all(|x| *x == 7) && buf2[512..].iter().all(|x| *x == 0));
        // Data outside the request, an unknown handle, a bad magic: errors, never a panic.
        let mut out = 8192u64.to_be_bytes().to_vec();
        out.extend_from_slice(&[0u8; 16]);
        let wire = chunk_bytes(chunk::FLAG_DONE, chunk::OFFSET_DATA, 9, &out);
        let mut small = [0u8; 16];
        let e = receive_chunk(&mut &wire[..], true, |_| {
            Some(Some(Target {
                offset: 0,
                buf: &mut small,
            }))
        });
        assert!(e.is_err());
        let e = receive_chunk(&mut &wire[..], true, |_| None);
        assert!(e.is_err());
        let e = receive_chunk(&mut &[0u8; 20][..], true, |_| Some(None));
        assert!(e.is_err());
        // An error chunk carries its value.
        let mut err = 28u32.to_be_bytes().to_vec();
        err.extend_from_slice(&0u16.to_be_bytes());
        let wire = chunk_bytes(chunk::FLAG_DONE, chunk::ERROR, 3, &err);
        let c = receive_chunk(&mut &wire[..], true, |_| Some(None)).unwrap();
        assert_eq!(c.error, Some(28));
        assert_eq!(errno_of_nbd(28), libc::ENOSPC);
    }
}
