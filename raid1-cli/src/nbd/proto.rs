//! NBD wire format: constants, pure parsers over byte slices and encoders.
//!
//! Every parser takes the bytes received so far and answers `Ok(None)` when more bytes are needed, the
//! parsed value when enough are there, or a typed error. None of them panics on any input (they are fuzz
//! targets).

/// `NBDMAGIC`, first word of the server greeting.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`, second word of the greeting and the magic of every client option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of a transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flag: the server speaks fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag: the server can omit the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: the client speaks fixed newstyle.
pub const CLIENT_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: omit the 124 zero bytes.
pub const CLIENT_NO_ZEROES: u32 = 1 << 1;

/// Transmission flags.
pub mod tflags {
    /// Always set.
    pub const HAS_FLAGS: u16 = 1 << 0;
    /// The export is read-only.
    pub const READ_ONLY: u16 = 1 << 1;
    /// `NBD_CMD_FLUSH` is supported.
    pub const SEND_FLUSH: u16 = 1 << 2;
    /// `NBD_CMD_FLAG_FUA` is supported.
    pub const SEND_FUA: u16 = 1 << 3;
    /// `NBD_CMD_TRIM` is supported.
    pub const SEND_TRIM: u16 = 1 << 5;
    /// `NBD_CMD_WRITE_ZEROES` is supported.
    pub const SEND_WRITE_ZEROES: u16 = 1 << 6;
    /// Flush and FUA are visible across all connections.
    pub const CAN_MULTI_CONN: u16 = 1 << 8;
}

/// Option codes.
pub mod opt {
    /// Choose an export and enter transmission (no error reply possible).
    pub const EXPORT_NAME: u32 = 1;
    /// Abort the negotiation.
    pub const ABORT: u32 = 2;
    /// List the exports.
    pub const LIST: u32 = 3;
    /// Upgrade to TLS (unsupported).
    pub const STARTTLS: u32 = 5;
    /// Describe an export.
    pub const INFO: u32 = 6;
    /// Describe an export and enter transmission.
    pub const GO: u32 = 7;
    /// Structured replies (unsupported: simple replies only).
    pub const STRUCTURED_REPLY: u32 = 8;
}

/// Option reply types.
pub mod rep {
    /// Done.
    pub const ACK: u32 = 1;
    /// One export of a list.
    pub const SERVER: u32 = 2;
    /// One piece of export information.
    pub const INFO: u32 = 3;
    /// The option is unknown.
    pub const ERR_UNSUP: u32 = 0x8000_0001;
    /// Refused by the server's policy (here: the server serves its maximum of clients).
    pub const ERR_POLICY: u32 = 0x8000_0002;
    /// The option is malformed.
    pub const ERR_INVALID: u32 = 0x8000_0003;
    /// The export does not exist.
    pub const ERR_UNKNOWN: u32 = 0x8000_0006;
    /// The export needs TLS first.
    pub const ERR_TLS_REQD: u32 = 0x8000_0005;
    /// The server is shutting down.
    pub const ERR_SHUTDOWN: u32 = 0x8000_0007;
    /// The client must ask for block sizes.
    pub const ERR_BLOCK_SIZE_REQD: u32 = 0x8000_0008;
    /// The option data is too large.
    pub const ERR_TOO_BIG: u32 = 0x8000_0009;
}

/// Chunk types of structured replies.
pub mod chunk {
    /// The last chunk of a reply (a flag of the chunk header).
    pub const FLAG_DONE: u16 = 1 << 0;
    /// No payload: the request succeeded.
    pub const NONE: u16 = 0;
    /// Read data at an offset (8-byte offset, then the data).
    pub const OFFSET_DATA: u16 = 1;
    /// A range that reads as zeros (8-byte offset, 4-byte length).
    pub const OFFSET_HOLE: u16 = 2;
    /// An error (4-byte error, 2-byte message length, message).
    pub const ERROR: u16 = 0x8001;
    /// An error at an offset (as `ERROR`, then the 8-byte offset).
    pub const ERROR_OFFSET: u16 = 0x8002;
}

/// Information types of `NBD_OPT_INFO` / `NBD_OPT_GO`.
pub mod info {
    /// Size and transmission flags.
    pub const EXPORT: u16 = 0;
    /// Canonical name.
    pub const NAME: u16 = 1;
    /// Description.
    pub const DESCRIPTION: u16 = 2;
    /// Minimum, preferred and maximum block sizes.
    pub const BLOCK_SIZE: u16 = 3;
}

/// Command types.
pub mod cmd {
    /// Read.
    pub const READ: u16 = 0;
    /// Write (payload follows the header).
    pub const WRITE: u16 = 1;
    /// Disconnect.
    pub const DISC: u16 = 2;
    /// Flush.
    pub const FLUSH: u16 = 3;
    /// Trim.
    pub const TRIM: u16 = 4;
    /// Write zeroes.
    pub const WRITE_ZEROES: u16 = 6;
}

/// Command flags.
pub mod cflags {
    /// Force unit access.
    pub const FUA: u16 = 1 << 0;
    /// Write zeroes must not punch a hole.
    pub const NO_HOLE: u16 = 1 << 1;
}

/// Error values carried in replies.
pub mod err {
    /// Operation not permitted (write to a read-only export).
    pub const EPERM: u32 = 1;
    /// Input/output error.
    pub const EIO: u32 = 5;
    /// Out of memory.
    pub const ENOMEM: u32 = 12;
    /// Invalid request.
    pub const EINVAL: u32 = 22;
    /// Write beyond the end of the export.
    pub const ENOSPC: u32 = 28;
    /// Value too large.
    pub const EOVERFLOW: u32 = 75;
    /// Not supported.
    pub const ENOTSUP: u32 = 95;
    /// Server shutting down.
    pub const ESHUTDOWN: u32 = 108;
}

/// Maps a Linux errno to the value an NBD reply may carry.
pub fn nbd_error_from_errno(errno: i32) -> u32 {
    match errno {
        libc::EPERM | libc::EROFS => err::EPERM,
        libc::ENOMEM => err::ENOMEM,
        libc::EINVAL => err::EINVAL,
        libc::ENOSPC | libc::EDQUOT | libc::EFBIG => err::ENOSPC,
        libc::EOVERFLOW => err::EOVERFLOW,
        libc::EOPNOTSUPP => err::ENOTSUP,
        libc::ESHUTDOWN => err::ESHUTDOWN,
        _ => err::EIO,
    }
}

/// Size of a request header.
pub const REQUEST_HEADER_LEN: usize = 28;
/// Size of an option header.
pub const OPTION_HEADER_LEN: usize = 16;

/// Why client bytes are unacceptable (the connection is closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// The client flags contain bits we did not offer.
    UnknownClientFlags(u32),
    /// An option did not start with `IHAVEOPT`.
    BadOptionMagic(u64),
    /// A request did not start with `NBD_REQUEST_MAGIC`.
    BadRequestMagic(u32),
    /// An option is longer than we accept.
    OptionTooLong(u32),
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtocolError::UnknownClientFlags(v) => write!(f, "unknown client flags {v:#x}"),
            ProtocolError::BadOptionMagic(v) => write!(f, "bad option magic {v:#x}"),
            ProtocolError::BadRequestMagic(v) => write!(f, "bad request magic {v:#x}"),
            ProtocolError::OptionTooLong(v) => write!(f, "option data of {v} bytes is too long"),
        }
    }
}

impl std::error::Error for ProtocolError {}

fn be_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The client's answer to the greeting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientFlags {
    /// The client speaks fixed newstyle.
    pub fixed_newstyle: bool,
    /// The client asked us to omit the 124 zero bytes.
    pub no_zeroes: bool,
}

/// Parses the 4-byte client flags.
pub fn parse_client_flags(buf: &[u8]) -> Result<Option<ClientFlags>, ProtocolError> {
    let Some(flags) = be_u32(buf, 0) else {
        return Ok(None);
    };
    if flags & !(CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES) != 0 {
        return Err(ProtocolError::UnknownClientFlags(flags));
    }
    Ok(Some(ClientFlags {
        fixed_newstyle: flags & CLIENT_FIXED_NEWSTYLE != 0,
        no_zeroes: flags & CLIENT_NO_ZEROES != 0,
    }))
}

/// An option header: the data (`length` bytes) follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionHeader {
    /// The option code.
    pub option: u32,
    /// Length of the option data.
    pub length: u32,
}

/// Parses a 16-byte option header; `max_length` bounds the data we are willing to buffer.
pub fn parse_option_header(
    buf: &[u8],
    max_length: u32,
) -> Result<Option<OptionHeader>, ProtocolError> {
    let (Some(magic), Some(option), Some(length)) =
        (be_u64(buf, 0), be_u32(buf, 8), be_u32(buf, 12))
    else {
        return Ok(None);
    };
    if magic != IHAVEOPT {
        return Err(ProtocolError::BadOptionMagic(magic));
    }
    if length > max_length {
        return Err(ProtocolError::OptionTooLong(length));
    }
    Ok(Some(OptionHeader { option, length }))
}

/// The data of `NBD_OPT_INFO` / `NBD_OPT_GO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoRequest<'a> {
    /// Export name (raw bytes; not necessarily UTF-8).
    pub name: &'a [u8],
    /// Information types the client asks for.
    pub requests: Vec<u16>,
}

/// Parses the data of `NBD_OPT_INFO` / `NBD_OPT_GO`; `None` if it is malformed (reply `ERR_INVALID`).
pub fn parse_info_request(data: &[u8]) -> Option<InfoRequest<'_>> {
    let name_len = usize::try_from(be_u32(data, 0)?).ok()?;
    let name_end = 4usize.checked_add(name_len)?;
    let name = data.get(4..name_end)?;
    let count = usize::from(be_u16(data, name_end)?);
    let list_start = name_end + 2;
    if data.len() != list_start.checked_add(count.checked_mul(2)?)? {
        return None;
    }
    let requests = (0..count)
        .map(|i| be_u16(data, list_start + 2 * i))
        .collect::<Option<Vec<u16>>>()?;
    Some(InfoRequest { name, requests })
}

/// A transmission request header (the payload of a write follows it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    /// Command flags (`cflags`).
    pub flags: u16,
    /// Command type (`cmd`).
    pub kind: u16,
    /// Opaque handle, echoed in the reply.
    pub handle: u64,
    /// Byte offset.
    pub offset: u64,
    /// Byte length.
    pub length: u32,
}

/// Parses a 28-byte request header.
pub fn parse_request_header(buf: &[u8]) -> Result<Option<RequestHeader>, ProtocolError> {
    let (Some(magic), Some(flags), Some(kind), Some(handle), Some(offset), Some(length)) = (
        be_u32(buf, 0),
        be_u16(buf, 4),
        be_u16(buf, 6),
        be_u64(buf, 8),
        be_u64(buf, 16),
        be_u32(buf, 24),
    ) else {
        return Ok(None);
    };
    if magic != REQUEST_MAGIC {
        return Err(ProtocolError::BadRequestMagic(magic));
    }
    Ok(Some(RequestHeader {
        flags,
        kind,
        handle,
        offset,
        length,
    }))
}

/// What the export offers, as the request checker needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportLimits {
    /// Export size in bytes.
    pub size: u64,
    /// Largest read or write payload accepted.
    pub max_payload: u32,
    /// Writes are refused.
    pub read_only: bool,
    /// Transmission flags advertised (`tflags`).
    pub transmission_flags: u16,
}

/// A request that passed the checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Read `length` bytes at `offset`.
    Read {
        /// Byte offset.
        offset: u64,
        /// Byte length.
        length: u32,
    },
    /// Write the `length`-byte payload at `offset`.
    Write {
        /// Byte offset.
        offset: u64,
        /// Byte length (of the payload that follows).
        length: u32,
        /// Force unit access.
        fua: bool,
    },
    /// Flush.
    Flush,
    /// Trim (advisory).
    Trim {
        /// Byte offset.
        offset: u64,
        /// Byte length.
        length: u32,
        /// Force unit access.
        fua: bool,
    },
    /// Write zeroes.
    WriteZeroes {
        /// Byte offset.
        offset: u64,
        /// Byte length.
        length: u32,
        /// Force unit access.
        fua: bool,
    },
    /// Disconnect after the requests in flight.
    Disconnect,
}

/// A refused request: reply `error`; for a write, first skip `discard` payload bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// NBD error value for the reply.
    pub error: u32,
    /// Payload bytes that follow the header and must be read and thrown away.
    pub discard: u32,
}

fn in_range(offset: u64, length: u32, size: u64) -> bool {
    offset
        .checked_add(u64::from(length))
        .is_some_and(|end| end <= size)
}

/// Checks a request header against the export (pure; the error values follow the protocol: `EINVAL` for
/// reads and trims out of range or too large, `ENOSPC` for writes out of range, `EPERM` on a read-only
/// export).
pub fn check_request(h: &RequestHeader, limits: &ExportLimits) -> Result<Command, Refusal> {
    let known_flags = cflags::FUA | cflags::NO_HOLE;
    let fua = h.flags & cflags::FUA != 0;
    let payload = if h.kind == cmd::WRITE { h.length } else { 0 };
    let refuse = |error| {
        Err(Refusal {
            error,
            discard: payload,
        })
    };
    if h.flags & !known_flags != 0 {
        return refuse(err::EINVAL);
    }
    if fua && limits.transmission_flags & tflags::SEND_FUA == 0 {
        return refuse(err::EINVAL);
    }
    match h.kind {
        cmd::READ => {
            if h.length > limits.max_payload || !in_range(h.offset, h.length, limits.size) {
                return refuse(err::EINVAL);
            }
            Ok(Command::Read {
                offset: h.offset,
                length: h.length,
            })
        }
        cmd::WRITE => {
            if limits.read_only {
                return refuse(err::EPERM);
            }
            if h.length > limits.max_payload {
                return refuse(err::EINVAL);
            }
            if !in_range(h.offset, h.length, limits.size) {
                return refuse(err::ENOSPC);
            }
            Ok(Command::Write {
                offset: h.offset,
                length: h.length,
                fua,
            })
        }
        cmd::DISC => Ok(Command::Disconnect),
        cmd::FLUSH if limits.transmission_flags & tflags::SEND_FLUSH != 0 => Ok(Command::Flush),
        cmd::TRIM if limits.transmission_flags & tflags::SEND_TRIM != 0 => {
            if limits.read_only {
                return refuse(err::EPERM);
            }
            if !in_range(h.offset, h.length, limits.size) {
                return refuse(err::EINVAL);
            }
            Ok(Command::Trim {
                offset: h.offset,
                length: h.length,
                fua,
            })
        }
        cmd::WRITE_ZEROES if limits.transmission_flags & tflags::SEND_WRITE_ZEROES != 0 => {
            if limits.read_only {
                return refuse(err::EPERM);
            }
            if !in_range(h.offset, h.length, limits.size) {
                return refuse(err::ENOSPC);
            }
            Ok(Command::WriteZeroes {
                offset: h.offset,
                length: h.length,
                fua,
            })
        }
        _ => refuse(err::EINVAL),
    }
}

/// Appends the server greeting (fixed newstyle, no-zeroes offered).
pub fn encode_greeting(out: &mut Vec<u8>) {
    out.extend_from_slice(&NBDMAGIC.to_be_bytes());
    out.extend_from_slice(&IHAVEOPT.to_be_bytes());
    out.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
}

/// Appends an option reply.
pub fn encode_option_reply(out: &mut Vec<u8>, option: u32, reply_type: u32, data: &[u8]) {
    out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply_type.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

/// Appends the answer to `NBD_OPT_EXPORT_NAME`.
pub fn encode_export_name_reply(
    out: &mut Vec<u8>,
    size: u64,
    transmission_flags: u16,
    no_zeroes: bool,
) {
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&transmission_flags.to_be_bytes());
    if !no_zeroes {
        out.extend_from_slice(&[0u8; 124]);
    }
}

/// Data of `NBD_REP_INFO` / `NBD_INFO_EXPORT`.
pub fn info_export(size: u64, transmission_flags: u16) -> Vec<u8> {
    let mut d = Vec::with_capacity(12);
    d.extend_from_slice(&info::EXPORT.to_be_bytes());
    d.extend_from_slice(&size.to_be_bytes());
    d.extend_from_slice(&transmission_flags.to_be_bytes());
    d
}

/// Data of `NBD_REP_INFO` / `NBD_INFO_BLOCK_SIZE`.
pub fn info_block_size(minimum: u32, preferred: u32, maximum: u32) -> Vec<u8> {
    let mut d = Vec::with_capacity(14);
    d.extend_from_slice(&info::BLOCK_SIZE.to_be_bytes());
    d.extend_from_slice(&minimum.to_be_bytes());
    d.extend_from_slice(&preferred.to_be_bytes());
    d.extend_from_slice(&maximum.to_be_bytes());
    d
}

/// Data of `NBD_REP_INFO` carrying a string (`NBD_INFO_NAME` or `NBD_INFO_DESCRIPTION`).
pub fn info_string(kind: u16, text: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(2 + text.len());
    d.extend_from_slice(&kind.to_be_bytes());
    d.extend_from_slice(text);
    d
}

/// The 28-byte request header of `h` (what a client sends; a write's payload follows it).
pub fn encode_request(h: &RequestHeader) -> [u8; REQUEST_HEADER_LEN] {
    let mut r = [0u8; REQUEST_HEADER_LEN];
    r[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    r[4..6].copy_from_slice(&h.flags.to_be_bytes());
    r[6..8].copy_from_slice(&h.kind.to_be_bytes());
    r[8..16].copy_from_slice(&h.handle.to_be_bytes());
    r[16..24].copy_from_slice(&h.offset.to_be_bytes());
    r[24..28].copy_from_slice(&h.length.to_be_bytes());
    r
}

/// The header of one reply from a server, as a client reads it: after the 4-byte magic,
/// 12 more bytes (simple) or 16 more (a structured chunk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyHeader {
    /// A simple reply: the whole answer (a successful read's data follows).
    Simple {
        /// 0, or an error value (`err`).
        error: u32,
        /// The request's handle.
        handle: u64,
    },
    /// One chunk of a structured reply; `length` bytes of payload follow.
    Chunk {
        /// `chunk::FLAG_DONE` on the last chunk.
        flags: u16,
        /// The chunk type (`chunk`).
        kind: u16,
        /// The request's handle.
        handle: u64,
        /// Payload length.
        length: u32,
    },
}

/// How many bytes follow the 4-byte magic `magic` in a reply header; `None` for a magic that
/// is neither a simple nor a structured reply (the stream is lost).
pub fn reply_header_rest(magic: u32) -> Option<usize> {
    match magic {
        SIMPLE_REPLY_MAGIC => Some(12),
        STRUCTURED_REPLY_MAGIC => Some(16),
        _ => None,
    }
}

/// Parses a reply header: the 4-byte magic and what [`reply_header_rest`] said follows.
pub fn parse_reply_header(buf: &[u8]) -> Option<ReplyHeader> {
    match be_u32(buf, 0)? {
        SIMPLE_REPLY_MAGIC if buf.len() == 16 => Some(ReplyHeader::Simple {
            error: be_u32(buf, 4)?,
            handle: be_u64(buf, 8)?,
        }),
        STRUCTURED_REPLY_MAGIC if buf.len() == 20 => Some(ReplyHeader::Chunk {
            flags: be_u16(buf, 4)?,
            kind: be_u16(buf, 6)?,
            handle: be_u64(buf, 8)?,
            length: be_u32(buf, 16)?,
        }),
        _ => None,
    }
}

/// A 16-byte simple reply header (read data, if any, follows it).
pub fn simple_reply(error: u32, handle: u64) -> [u8; 16] {
    let mut r = [0u8; 16];
    r[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    r[4..8].copy_from_slice(&error.to_be_bytes());
    r[8..].copy_from_slice(&handle.to_be_bytes());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u16, flags: u16, offset: u64, length: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&kind.to_be_bytes());
        b.extend_from_slice(&7u64.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&length.to_be_bytes());
        b
    }

    const LIMITS: ExportLimits = ExportLimits {
        size: 1 << 20,
        max_payload: 65536,
        read_only: false,
        transmission_flags: tflags::HAS_FLAGS
            | tflags::SEND_FLUSH
            | tflags::SEND_FUA
            | tflags::SEND_TRIM,
    };

    #[test]
    fn request_header_needs_28_bytes_and_the_magic() {
        let b = header(cmd::READ, 0, 4096, 512);
        for n in 0..REQUEST_HEADER_LEN {
            assert_eq!(parse_request_header(&b[..n]), Ok(None));
        }
        let h = parse_request_header(&b).unwrap().unwrap();
        assert_eq!(
            (h.kind, h.handle, h.offset, h.length),
            (cmd::READ, 7, 4096, 512)
        );
        let mut bad = b.clone();
        bad[0] ^= 1;
        assert!(matches!(
            parse_request_header(&bad),
            Err(ProtocolError::BadRequestMagic(_))
        ));
    }

    #[test]
    fn out_of_range_and_oversized_requests_get_protocol_errors() {
        let check = |kind, off, len| {
            check_request(
                &parse_request_header(&header(kind, 0, off, len))
                    .unwrap()
                    .unwrap(),
                &LIMITS,
            )
        };
        assert_eq!(
            check(cmd::READ, 0, 4096),
            Ok(Command::Read {
                offset: 0,
                length: 4096
            })
        );
        assert_eq!(
            check(cmd::READ, (1 << 20) - 512, 1024),
            Err(Refusal {
                error: err::EINVAL,
                discard: 0
            })
        );
        assert_eq!(
            check(cmd::READ, u64::MAX, 1),
            Err(Refusal {
                error: err::EINVAL,
                discard: 0
            })
        );
        assert_eq!(
            check(cmd::READ, 0, 65537),
            Err(Refusal {
                error: err::EINVAL,
                discard: 0
            })
        );
        assert_eq!(
            check(cmd::WRITE, 1 << 20, 512),
            Err(Refusal {
                error: err::ENOSPC,
                discard: 512
            })
        );
        assert_eq!(
            check(cmd::WRITE, 0, 1 << 30),
            Err(Refusal {
                error: err::EINVAL,
                discard: 1 << 30
            })
        );
        assert_eq!(
            check(cmd::TRIM, 1 << 20, 512),
            Err(Refusal {
                error: err::EINVAL,
                discard: 0
            })
        );
        // WRITE_ZEROES is not advertised in these limits.
        assert_eq!(
            check(cmd::WRITE_ZEROES, 0, 512),
            Err(Refusal {
                error: err::EINVAL,
                discard: 0
            })
        );
        assert_eq!(
            check(99, 0, 0),
            Err(Refusal {
                error: err::EINVAL,
                discard: 0
            })
        );
    }

    #[test]
    fn info_request_parsing_rejects_inconsistent_lengths() {
        let mut d = Vec::new();
        d.extend_from_slice(&3u32.to_be_bytes());
        d.extend_from_slice(b"abc");
        d.extend_from_slice(&2u16.to_be_bytes());
        d.extend_from_slice(&info::BLOCK_SIZE.to_be_bytes());
        d.extend_from_slice(&info::NAME.to_be_bytes());
        let r = parse_info_request(&d).unwrap();
        assert_eq!(r.name, b"abc");
        assert_eq!(r.requests, vec![info::BLOCK_SIZE, info::NAME]);
        assert!(parse_info_request(&d[..d.len() - 1]).is_none());
        let mut long = d.clone();
        long.push(0);
        assert!(parse_info_request(&long).is_none());
        let mut huge = d.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_info_request(&huge).is_none());
        for n in 0..d.len() {
            assert!(parse_info_request(&d[..n]).is_none());
        }
    }

    #[test]
    fn parsers_never_panic_on_random_bytes() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut buf = Vec::new();
        for round in 0..200_000u32 {
            buf.clear();
            let len = (next() % 64) as usize;
            for _ in 0..len {
                buf.push(next() as u8);
            }
            // Sometimes start with a valid magic so the parsers get past the first check.
            if round % 3 == 0 && buf.len() >= 8 {
                buf[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
            }
            if round % 5 == 0 && buf.len() >= 8 {
                buf[..8].copy_from_slice(&IHAVEOPT.to_be_bytes());
            }
            let _ = parse_client_flags(&buf);
            let _ = parse_option_header(&buf, MAX_TEST_OPTION);
            let _ = parse_info_request(&buf);
            if let Ok(Some(h)) = parse_request_header(&buf) {
                let limits = ExportLimits {
                    size: next() >> (next() % 64),
                    max_payload: next() as u32,
                    ..LIMITS
                };
                let _ = check_request(&h, &limits);
            }
        }
    }

    const MAX_TEST_OPTION: u32 = 4096;

    #[test]
    fn client_flags_and_option_headers() {
        assert_eq!(parse_client_flags(&[0, 0, 0]), Ok(None));
        assert_eq!(
            parse_client_flags(&[0, 0, 0, 3]),
            Ok(Some(ClientFlags {
                fixed_newstyle: true,
                no_zeroes: true
            }))
        );
        assert_eq!(
            parse_client_flags(&[0, 0, 0, 4]),
            Err(ProtocolError::UnknownClientFlags(4))
        );
        let mut o = IHAVEOPT.to_be_bytes().to_vec();
        o.extend_from_slice(&opt::GO.to_be_bytes());
        o.extend_from_slice(&10u32.to_be_bytes());
        assert_eq!(parse_option_header(&o[..15], 100), Ok(None));
        assert_eq!(
            parse_option_header(&o, 100),
            Ok(Some(OptionHeader {
                option: opt::GO,
                length: 10
            }))
        );
        assert_eq!(
            parse_option_header(&o, 5),
            Err(ProtocolError::OptionTooLong(10))
        );
    }
}
