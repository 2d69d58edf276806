//! Member I/O on Linux: O_DIRECT files and block devices driven by io_uring.
//!
//! A [`Member`] is one leg of an array: a block device (opened `O_DIRECT | O_EXCL`, so a device that is
//! mounted or held by another array is refused) or an image file (opened `O_DIRECT` and locked with
//! `flock(LOCK_EX | LOCK_NB)`, so two `raid1` processes cannot use the same image).
//!
//! [`MemberIo`] owns one io_uring, the members (registered as fixed files) and a pool of 4 KiB-aligned
//! buffers (registered as fixed buffers when the kernel accepts them). An event loop drives it without
//! blocking:
//!
//! 1. [`MemberIo::submit`] queues an [`IoCommand`] `{tag, member, op, offset, len}`; reads and writes
//!    name a pool buffer ([`BufferId`]). A full engine answers [`SubmitError::Busy`] and keeps nothing.
//! 2. [`MemberIo::flush`] hands the queued commands to the kernel (`io_uring_enter` without waiting).
//! 3. The loop waits where it wants: [`MemberIo::wait`] blocks until completions arrive, or the loop polls
//!    [`MemberIo::ring_fd`] (readable when completions are ready) together with its sockets.
//! 4. [`MemberIo::reap`] yields each [`IoCompletion`] `{tag, result}`, in completion order.
//!
//! Nothing in here blocks except [`MemberIo::wait`] (and dropping the engine, which waits for the I/O
//! still in flight, because the kernel may still write into the pool).

pub mod export;
pub mod remote;

use crate::slab::Slab;
use std::alloc::{self, Layout};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use crate::nbd::{self, client::Connection};
use remote::{Note, Notes, RemoteOp};

/// The `user_data` of the ring's read of the remote members' `eventfd` (slots are `u32`).
const NOTES_TAG: u64 = u64::MAX;

/// `_IOR(0x12, 114, size_t)`: size of a block device in bytes.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
/// `_IO(0x12, 0)`: the io_uring block command that discards a byte range (Linux 6.12 and later).
const BLOCK_URING_CMD_DISCARD: u32 = 0x1200;
/// Alignment of every pool buffer, whatever the members ask for.
pub const BUFFER_ALIGN: usize = 4096;

/// What a member is backed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberKind {
    /// A block device (`/dev/loop0`, `/dev/sdb1`, ...).
    BlockDevice,
    /// A regular image file.
    File,
    /// An NBD export (`nbd://...`, `nbd+unix://...`), driven by a [`remote::Link`].
    Remote,
}

/// Why a member could not be opened. The message names the path.
#[derive(Debug)]
pub struct OpenError {
    /// The path that was given.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: OpenFailure,
}

/// The reason inside an [`OpenError`].
#[derive(Debug)]
pub enum OpenFailure {
    /// The device is opened exclusively elsewhere (mounted, in an md array, held by another program), or the
    /// image file is locked by another `raid1`.
    InUse,
    /// The path is neither a block device nor a regular file.
    UnsupportedType,
    /// The member is empty.
    Empty,
    /// The member takes no request below this many bytes (its logical block size, or an
    /// image file's O_DIRECT alignment), and the array's sectors are 512 bytes.
    SectorSize(u32),
    /// A system call failed.
    Io {
        /// The call that failed (`open`, `BLKGETSIZE64`, `statx`, ...).
        call: &'static str,
        /// The error it returned.
        error: io::Error,
    },
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match &self.reason {
            OpenFailure::InUse => write!(
                f,
                "member {path} is in use elsewhere (a block device opened exclusively: mounted, part of an \
                 array or held by another program; or an image file locked by another raid1)"
            ),
            OpenFailure::UnsupportedType => write!(
                f,
                "member {path} is neither a block device nor a regular file"
            ),
            OpenFailure::Empty => write!(f, "member {path} has size 0"),
            OpenFailure::SectorSize(n) => write!(f, "member {path}: {}", sector_size_refusal(*n)),
            OpenFailure::Io { call, error } => write!(f, "member {path}: {call} failed: {error}"),
        }
    }
}

impl std::error::Error for OpenError {}

/// Why an NBD export cannot be a member, in words: read-only, empty, or taking no request as
/// small as a sector. Asked when it is opened and again when its server comes back.
pub fn unfit_export(e: &nbd::client::Export) -> Option<String> {
    if e.read_only() {
        Some("the server exports it read-only, and a member must be writable".into())
    } else if e.size == 0 {
        Some("it has size 0".into())
    } else if e.min_block > 512 {
        Some(format!(
            "its server's minimum block is {} bytes: {}",
            e.min_block,
            sector_size_refusal(e.min_block)
        ))
    } else {
        None
    }
}

/// Why a member that takes no request below `n` bytes is refused, in words.
pub fn sector_size_refusal(n: u32) -> String {
    format!(
        "it takes no request smaller than {n} bytes, and the array's sectors are 512 bytes \
         (raid1 does not change an array's sector size to fit one member: file systems on it \
         would break)"
    )
}

/// One opened member: a block device or an image file, opened `O_DIRECT`.
#[derive(Debug)]
pub struct Member {
    path: PathBuf,
    file: Option<File>,
    remote: Remote,
    kind: MemberKind,
    size: u64,
    logical_block_size: u32,
    physical_block_size: u32,
    offset_align: u32,
    memory_align: u32,
    discard: bool,
}

fn io_failure(path: &Path, call: &'static str, error: io::Error) -> OpenError {
    OpenError {
        path: path.to_path_buf(),
        reason: OpenFailure::Io { call, error },
    }
}

impl Member {
    /// Opens `path` read-write with `O_DIRECT`, exclusively, and discovers its size and block sizes.
    /// A block device that the kernel still reports claimed is tried again for about a second
    /// ([`open_exclusive_block`](crate::member::open_exclusive_block)): an array starting right
    /// after another stopped must not find its members busy.
    pub fn open(path: &Path) -> Result<Member, OpenError> {
        Member::open_waiting(path, true)
    }

    /// [`Member::open`] without waiting on a claimed block device: for a running array, whose
    /// event loop must not stall a second on a device that is in use.
    pub fn open_no_wait(path: &Path) -> Result<Member, OpenError> {
        Member::open_waiting(path, false)
    }

    fn open_waiting(path: &Path, wait: bool) -> Result<Member, OpenError> {
        let meta = std::fs::metadata(path).map_err(|e| io_failure(path, "stat", e))?;
        let ft = meta.file_type();
        let kind = if ft.is_block_device() {
            MemberKind::BlockDevice
        } else if ft.is_file() {
            MemberKind::File
        } else {
            return Err(OpenError {
                path: path.to_path_buf(),
                reason: OpenFailure::UnsupportedType,
            });
        };
        // Claimed as every member is: O_EXCL on a block device, a lock on an image file (one
        // raid1 per image).
        let is_block = kind == MemberKind::BlockDevice;
        let flags = libc::O_DIRECT | libc::O_CLOEXEC;
        let file =
            crate::member::open_claimed(path, is_block, wait, flags).map_err(|e| match e {
                crate::member::ClaimError::InUse => OpenError {
                    path: path.to_path_buf(),
                    reason: OpenFailure::InUse,
                },
                crate::member::ClaimError::Failed(call, e) => io_failure(path, call, e),
            })?;
        let fd = file.as_raw_fd();
        let mut member = Member {
            path: path.to_path_buf(),
            file: Some(file),
            remote: Remote::None,
            kind,
            size: 0,
            logical_block_size: 512,
            physical_block_size: 512,
            offset_align: 512,
            memory_align: 512,
            discard: false,
        };
        match kind {
            MemberKind::BlockDevice => {
                let mut size: u64 = 0;
                // SAFETY: BLKGETSIZE64 writes one u64 through the pointer.
                if unsafe { libc::ioctl(fd, BLKGETSIZE64, &mut size as *mut u64) } != 0 {
                    return Err(io_failure(
                        path,
                        "ioctl BLKGETSIZE64",
                        io::Error::last_os_error(),
                    ));
                }
                let mut lbs: libc::c_int = 0;
                // SAFETY: BLKSSZGET writes one int through the pointer.
                if unsafe { libc::ioctl(fd, libc::BLKSSZGET, &mut lbs as *mut libc::c_int) } != 0 {
                    return Err(io_failure(
                        path,
                        "ioctl BLKSSZGET",
                        io::Error::last_os_error(),
                    ));
                }
                let mut pbs: libc::c_uint = 0;
                // SAFETY: BLKPBSZGET writes one unsigned int through the pointer.
                if unsafe { libc::ioctl(fd, libc::BLKPBSZGET, &mut pbs as *mut libc::c_uint) } != 0
                {
                    return Err(io_failure(
                        path,
                        "ioctl BLKPBSZGET",
                        io::Error::last_os_error(),
                    ));
                }
                member.size = size;
                member.logical_block_size = u32::try_from(lbs).unwrap_or(512).max(512);
                member.physical_block_size = pbs.max(member.logical_block_size);
                member.offset_align = member.logical_block_size;
                member.memory_align = member.logical_block_size;
                member.discard = block_discard_max_bytes(&meta) > 0;
            }
            MemberKind::File => {
                member.size = meta.len();
                let (mem, off) = dio_alignment(fd).unwrap_or((512, 512));
                member.offset_align = off.max(512);
                member.memory_align = mem.max(1);
                member.logical_block_size = member.offset_align;
                member.physical_block_size =
                    u32::try_from(std::os::unix::fs::MetadataExt::blksize(&meta))
                        .unwrap_or(4096)
                        .max(member.logical_block_size);
                member.discard = true;
            }
            MemberKind::Remote => unreachable!("a path is a block device or a file"),
        }
        if member.size == 0 {
            return Err(OpenError {
                path: path.to_path_buf(),
                reason: OpenFailure::Empty,
            });
        }
        if member.offset_align > 512 {
            return Err(OpenError {
                path: path.to_path_buf(),
                reason: OpenFailure::SectorSize(member.offset_align),
            });
        }
        Ok(member)
    }

    /// The path the member was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Block device or image file.
    pub fn kind(&self) -> MemberKind {
        self.kind
    }

    /// Size in bytes (`BLKGETSIZE64`, or the file length).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Logical block size (`BLKSSZGET`; for files the O_DIRECT offset alignment).
    pub fn logical_block_size(&self) -> u32 {
        self.logical_block_size
    }

    /// Physical block size (`BLKPBSZGET`; for files the filesystem block size).
    pub fn physical_block_size(&self) -> u32 {
        self.physical_block_size
    }

    /// Alignment that O_DIRECT requires of offsets and lengths on this member.
    pub fn offset_align(&self) -> u32 {
        self.offset_align
    }

    /// Whether discard is expected to work (block devices: the queue's `discard_max_bytes` is not 0).
    pub fn supports_discard(&self) -> bool {
        self.discard
    }

    /// The raw descriptor (for diagnostics; the engine uses it as a registered file); -1 for
    /// a remote member.
    pub fn as_raw_fd(&self) -> RawFd {
        self.file.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    fn local(&self) -> io::Result<&File> {
        self.file.as_ref().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "a remote member has no local descriptor",
            )
        })
    }

    /// `fstat` of the open descriptor: the identity of what was opened, whatever its path names
    /// now.
    pub fn metadata(&self) -> io::Result<std::fs::Metadata> {
        self.local()?.metadata()
    }

    /// Opens a member that is an NBD export: connects and negotiates now (each step gives up
    /// after `timeout`, which is also the failfast timeout of its requests once it runs). Its
    /// link starts when the member is handed to a [`MemberIo`].
    pub fn open_remote(uri: &nbd::client::Uri, timeout: Duration) -> Result<Member, String> {
        let conn = Connection::connect(uri, timeout)?;
        Member::from_connection(conn, timeout)
    }

    /// A member over an open NBD connection (see [`Member::open_remote`]).
    pub fn from_connection(conn: Connection, timeout: Duration) -> Result<Member, String> {
        let e = *conn.export();
        let u = conn.uri().text.clone();
        if let Some(why) = unfit_export(&e) {
            return Err(format!("member {u}: {why}"));
        }
        let align = e.min_block.max(512);
        Ok(Member {
            path: PathBuf::from(&u),
            file: None,
            remote: Remote::Connected(Box::new(conn), timeout),
            kind: MemberKind::Remote,
            size: e.size,
            logical_block_size: align,
            physical_block_size: e.preferred_block.max(align),
            offset_align: align,
            memory_align: 1,
            discard: e.can_trim(),
        })
    }

    /// The NBD connection of a remote member not yet handed to a [`MemberIo`] (for the
    /// metadata reads that come before).
    pub fn connection(&mut self) -> Option<&mut Connection> {
        match &mut self.remote {
            Remote::Connected(c, _) => Some(c),
            _ => None,
        }
    }

    /// The link of a remote member that runs.
    pub fn link(&self) -> Option<&remote::Link> {
        match &self.remote {
            Remote::Running(l) => Some(l),
            _ => None,
        }
    }

    /// A second, buffered (not `O_DIRECT`) read-write descriptor of the same open file or device,
    /// through `/proc/self/fd` rather than the path, so it reaches what this member opened even if
    /// the path was since removed or now names something else. For metadata reads and writes that
    /// need no aligned buffers.
    pub fn reopen_buffered(&self) -> io::Result<File> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(format!("/proc/self/fd/{}", self.local()?.as_raw_fd()))?;
        use std::os::unix::fs::MetadataExt;
        let (a, b) = (self.local()?.metadata()?, f.metadata()?);
        if (a.dev(), a.ino(), a.rdev()) != (b.dev(), b.ino(), b.rdev()) {
            return Err(io::Error::other(
                "the second descriptor names another file than the member's",
            ));
        }
        Ok(f)
    }
}

/// The remote side of a [`Member`].
#[derive(Debug)]
enum Remote {
    /// A local file or device.
    None,
    /// Connected, not yet driven (the failfast timeout it will run with).
    Connected(Box<Connection>, Duration),
    /// Driven by its link.
    Running(Box<remote::Link>),
}

/// Reads `/sys/dev/block/MAJ:MIN/queue/discard_max_bytes` (0 when unknown).
fn block_discard_max_bytes(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let rdev = meta.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let path = format!("/sys/dev/block/{major}:{minor}/queue/discard_max_bytes");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// `statx(STATX_DIOALIGN)`: (memory alignment, offset alignment) for O_DIRECT, when the filesystem tells.
fn dio_alignment(fd: RawFd) -> Option<(u32, u32)> {
    // SAFETY: statx fills the zeroed struct; an empty path with AT_EMPTY_PATH names the fd itself.
    unsafe {
        let mut stx: libc::statx = std::mem::zeroed();
        let rc = libc::statx(
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        );
        if rc != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 || stx.stx_dio_offset_align == 0 {
            return None;
        }
        Some((stx.stx_dio_mem_align, stx.stx_dio_offset_align))
    }
}

/// Index of a buffer in the engine's pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BufferId(pub u16);

/// What a command does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoOp {
    /// Read `len` bytes into `buffer` starting `buffer_offset` bytes in.
    Read {
        /// The pool buffer that receives the data.
        buffer: BufferId,
        /// Where in the buffer the data starts.
        buffer_offset: u32,
    },
    /// Write `len` bytes from `buffer` starting `buffer_offset` bytes in.
    Write {
        /// The pool buffer that holds the data.
        buffer: BufferId,
        /// Where in the buffer the data starts.
        buffer_offset: u32,
        /// Force unit access: complete only once the data is durable (`RWF_DSYNC`).
        fua: bool,
    },
    /// Make every completed write durable (`fdatasync`). `offset` and `len` are ignored.
    Flush,
    /// Discard the range: `fallocate(PUNCH_HOLE)` on files, `BLOCK_URING_CMD_DISCARD` on block devices.
    Discard,
    /// Zero the range without transferring data: `fallocate(ZERO_RANGE)`.
    WriteZeroes,
}

/// One I/O command for the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoCommand {
    /// Returned unchanged in the completion. Tags of commands in flight at the same time must differ.
    pub tag: u64,
    /// Index of the member in the list given to [`MemberIo::new`].
    pub member: usize,
    /// The operation.
    pub op: IoOp,
    /// Byte offset on the member.
    pub offset: u64,
    /// Length in bytes.
    pub len: u32,
}

pub use crate::errno::Errno;

/// The outcome of one command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoCompletion {
    /// The command's tag.
    pub tag: u64,
    /// Bytes transferred (0 for flush/discard/zeroes), or the errno. A read or write may transfer fewer
    /// bytes than asked; the caller decides what that means.
    pub result: Result<u32, Errno>,
}

/// Why [`MemberIo::submit`] refused a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// The engine has as many commands in flight as its completion queue holds: reap, then retry.
    Busy,
    /// The command is malformed; `field` names what is wrong and `value` is what was given.
    Invalid {
        /// `member`, `buffer`, `buffer_offset`, `offset`, `len`.
        field: &'static str,
        /// The value given.
        value: u64,
    },
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Busy => write!(f, "member I/O engine busy"),
            SubmitError::Invalid { field, value } => {
                write!(f, "invalid I/O command: {field} = {value}")
            }
        }
    }
}

impl std::error::Error for SubmitError {}

/// Sizes of the engine.
#[derive(Clone, Copy, Debug)]
pub struct EngineConfig {
    /// Submission queue entries (the completion queue gets twice as many).
    pub queue_depth: u32,
    /// Bytes per pool buffer (a multiple of 4096).
    pub buffer_size: usize,
    /// Number of pool buffers.
    pub buffer_count: u16,
    /// Register the pool with the kernel (fixed buffers) when it accepts them.
    pub register_buffers: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            queue_depth: 256,
            buffer_size: 128 * 1024,
            buffer_count: 512,
            register_buffers: true,
        }
    }
}

/// One allocation holding every pool buffer, 4 KiB-aligned.
struct Pool {
    base: NonNull<u8>,
    layout: Layout,
    buffer_size: usize,
    count: usize,
}

impl Pool {
    fn new(buffer_size: usize, count: usize) -> io::Result<Pool> {
        let total = buffer_size
            .checked_mul(count)
            .filter(|t| *t > 0)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "buffer pool size is 0 or overflows",
                )
            })?;
        let layout = Layout::from_size_align(total, BUFFER_ALIGN)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let base = NonNull::new(ptr).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(Pool {
            base,
            layout,
            buffer_size,
            count,
        })
    }

    fn ptr(&self, id: usize) -> *mut u8 {
        debug_assert!(id < self.count);
        // SAFETY: id < count, so the offset stays inside the allocation.
        unsafe { self.base.as_ptr().add(id * self.buffer_size) }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: allocated in Pool::new with this layout.
        unsafe { alloc::dealloc(self.base.as_ptr(), self.layout) }
    }
}

/// The io_uring engine for an array's members. See the module documentation for the driving protocol.
pub struct MemberIo {
    ring: IoUring<squeue::Entry, cqueue::Entry>,
    /// The registered file table, by index: a member stays registered (and open) from
    /// [`MemberIo::new`] or [`MemberIo::attach`] until [`MemberIo::detach`] or the drop.
    members: Vec<Option<Member>>,
    /// Whether a file table is registered with the ring.
    registered: bool,
    pool: Pool,
    fixed_buffers: bool,
    free: Vec<u16>,
    allocated: Vec<bool>,
    /// Number of commands in flight per buffer (a buffer may back several reads or writes at distinct
    /// offsets; the caller's [`MemberIo::buffer_mut`] is refused while any is in flight).
    buffer_users: Vec<u32>,
    /// Every command in flight: the caller's tag and the pool buffer it uses. The slot number
    /// is the command's `user_data` in the ring (a table, not a map, on the hot path).
    inflight: Slab<(u64, Option<u16>)>,
    in_flight: usize,
    max_in_flight: usize,
    /// The remote members' mailbox, once one is attached, and whether the ring reads its
    /// `eventfd` now (into `notes_word`).
    notes: Option<Arc<Notes>>,
    notes_armed: bool,
    notes_word: Box<u64>,
    /// Remote completions taken from the mailbox, not yet reaped: (slot, result).
    remote_done: VecDeque<(u64, i32)>,
    /// Link events taken from the mailbox, for [`MemberIo::take_link_note`].
    link_notes: VecDeque<Note>,
    scratch: VecDeque<Note>,
}

impl fmt::Debug for MemberIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemberIo")
            .field("members", &self.members)
            .field("buffers", &self.pool.count)
            .field("buffer_size", &self.pool.buffer_size)
            .field("fixed_buffers", &self.fixed_buffers)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl MemberIo {
    /// Builds the ring, registers the members as fixed files and the pool as fixed buffers.
    pub fn new(members: Vec<Member>, config: EngineConfig) -> io::Result<MemberIo> {
        if config.buffer_size == 0 || !config.buffer_size.is_multiple_of(BUFFER_ALIGN) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "buffer_size {} is not a non-zero multiple of {BUFFER_ALIGN}",
                    config.buffer_size
                ),
            ));
        }
        let depth = config.queue_depth.clamp(8, 4096);
        let ring = IoUring::<squeue::Entry, cqueue::Entry>::builder()
            .setup_cqsize(depth * 2)
            .build(depth)?;
        let count = usize::from(config.buffer_count);
        let pool = Pool::new(config.buffer_size, count)?;
        let fds: Vec<RawFd> = members.iter().map(Member::as_raw_fd).collect();
        if !fds.is_empty() {
            ring.submitter().register_files(&fds)?;
        }
        let registered = !fds.is_empty();
        let members = members.into_iter().map(Some).collect();
        let mut fixed_buffers = false;
        if config.register_buffers && count <= 16384 && config.buffer_size <= 1 << 30 {
            let iovecs: Vec<libc::iovec> = (0..count)
                .map(|i| libc::iovec {
                    iov_base: pool.ptr(i).cast(),
                    iov_len: config.buffer_size,
                })
                .collect();
            // SAFETY: the iovecs describe the pool, which outlives the ring's registration: the ring is
            // declared before the pool in MemberIo, and Drop waits for in-flight I/O first.
            fixed_buffers = unsafe { ring.submitter().register_buffers(&iovecs) }.is_ok();
        }
        let max_in_flight = ring.params().cq_entries() as usize;
        Ok(MemberIo {
            ring,
            members,
            registered,
            pool,
            fixed_buffers,
            free: (0..config.buffer_count).rev().collect(),
            allocated: vec![false; count],
            buffer_users: vec![0; count],
            inflight: Slab::with_capacity(max_in_flight as u32),
            in_flight: 0,
            max_in_flight,
            notes: None,
            notes_armed: false,
            notes_word: Box::new(0),
            remote_done: VecDeque::new(),
            link_notes: VecDeque::new(),
            scratch: VecDeque::new(),
        }
        .with_links())
    }

    /// Starts the links of the remote members given to [`MemberIo::new`].
    fn with_links(mut self) -> MemberIo {
        for i in 0..self.members.len() {
            let _ = self.start_link(i);
        }
        self
    }

    /// Starts the link of the remote member at `index` (nothing for a local one).
    fn start_link(&mut self, index: usize) -> io::Result<()> {
        let Some(m) = self.members.get_mut(index).and_then(Option::as_mut) else {
            return Ok(());
        };
        if !matches!(m.remote, Remote::Connected(..)) {
            return Ok(());
        }
        let notes = match &self.notes {
            Some(n) => Arc::clone(n),
            None => {
                let n = Notes::new()?;
                self.notes = Some(Arc::clone(&n));
                n
            }
        };
        if let Remote::Connected(conn, timeout) = std::mem::replace(&mut m.remote, Remote::None) {
            m.remote = Remote::Running(Box::new(remote::Link::start(*conn, index, timeout, notes)));
        }
        self.arm_notes();
        Ok(())
    }

    /// Puts the read of the mailbox's `eventfd` in the ring (once).
    fn arm_notes(&mut self) {
        let Some(n) = &self.notes else { return };
        if self.notes_armed {
            return;
        }
        let ptr: *mut u64 = &mut *self.notes_word;
        let e = opcode::Read::new(types::Fd(n.fd()), ptr.cast(), 8)
            .build()
            .user_data(NOTES_TAG);
        // SAFETY: the word is boxed in `self` and lives until the ring is gone.
        if unsafe { self.ring.submission().push(&e) }.is_ok() {
            self.notes_armed = true;
        }
    }

    /// Takes everything the links posted: completions for [`MemberIo::reap`], events for
    /// [`MemberIo::take_link_note`].
    fn drain_notes(&mut self) {
        let Some(n) = &self.notes else { return };
        n.drain(&mut self.scratch);
        for note in self.scratch.drain(..) {
            match note {
                Note::Done { slot, res } => self.remote_done.push_back((slot, res)),
                other => self.link_notes.push_back(other),
            }
        }
    }

    /// The next event of a remote member's link ([`Note::Down`] or [`Note::Reconnected`]),
    /// in the order they happened. The array handles them after each reap.
    pub fn take_link_note(&mut self) -> Option<Note> {
        self.link_notes.pop_front()
    }

    /// Whether a remote member was ever attached (local-only arrays skip the links' work).
    pub fn has_links(&self) -> bool {
        self.notes.is_some()
    }

    /// The link of the remote member at `index`.
    pub fn link(&self, index: usize) -> Option<&remote::Link> {
        self.member(index).and_then(Member::link)
    }

    /// The link of the remote member at `index`, to resume or retry it.
    pub fn link_mut(&mut self, index: usize) -> Option<&mut remote::Link> {
        match self.members.get_mut(index).and_then(Option::as_mut) {
            Some(Member {
                remote: Remote::Running(l),
                ..
            }) => Some(l),
            _ => None,
        }
    }

    /// Closes the link of a remote member for good; its unanswered commands complete with
    /// `ECANCELED`.
    fn close_link(&mut self, index: usize) {
        if let Some(l) = self.link_mut(index) {
            let slots = l.close();
            self.remote_done
                .extend(slots.into_iter().map(|s| (s, -libc::ECANCELED)));
        }
    }

    /// An engine with `slots` empty member positions (a sparse file table), filled and emptied
    /// one at a time with [`MemberIo::attach`] and [`MemberIo::detach`]: changing one member never
    /// closes, reopens or re-registers another.
    pub fn with_slots(slots: usize, config: EngineConfig) -> io::Result<MemberIo> {
        let mut io = MemberIo::new(Vec::new(), config)?;
        let n = u32::try_from(slots.max(1))
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many member slots"))?;
        io.ring.submitter().register_files_sparse(n)?;
        io.registered = true;
        io.members = (0..n).map(|_| None).collect();
        Ok(io)
    }

    /// Registers `member` at the empty position `index` (its descriptor becomes fixed file
    /// `index`). On error the member is handed back, still open.
    pub fn attach(&mut self, index: usize, member: Member) -> Result<(), (Member, io::Error)> {
        if self.members.get(index).is_none_or(Option::is_some) {
            let e = io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("member position {index} is taken or beyond the file table"),
            );
            return Err((member, e));
        }
        let fd = member.as_raw_fd();
        if fd >= 0
            && let Err(e) = self
                .ring
                .submitter()
                .register_files_update(index as u32, &[fd])
        {
            return Err((member, e));
        }
        self.members[index] = Some(member);
        if let Err(e) = self.start_link(index) {
            let member = self.members[index].take();
            return Err((member.expect("just placed"), e));
        }
        Ok(())
    }

    /// Unregisters the member at `index` and hands it back (dropping it closes the device). I/O
    /// of that member still in flight keeps the kernel's reference until it completes.
    pub fn detach(&mut self, index: usize) -> Option<Member> {
        self.close_link(index);
        let member = self.members.get_mut(index)?.take()?;
        // -1 empties the position; the kernel drops its reference to the file.
        let _ = self
            .ring
            .submitter()
            .register_files_update(index as u32, &[-1]);
        Some(member)
    }

    /// Takes the new size in bytes of the member at `index` (its file or device grew or shrank
    /// while open, and the array's size follows it): commands are checked against it from now
    /// on. False without a member there.
    pub fn set_member_size(&mut self, index: usize, size: u64) -> bool {
        match self.members.get_mut(index).and_then(Option::as_mut) {
            Some(m) => {
                m.size = size;
                true
            }
            None => false,
        }
    }

    /// The member at `index`, if one is registered there.
    pub fn member(&self, index: usize) -> Option<&Member> {
        self.members.get(index).and_then(Option::as_ref)
    }

    /// Bytes per pool buffer.
    pub fn buffer_size(&self) -> usize {
        self.pool.buffer_size
    }

    /// The pool's memory: its base, the size of one buffer and their number. Whoever touches
    /// a buffer through it must own that buffer (allocated to it, and no command in flight on
    /// it); see raid1-cli's `array/link.rs`.
    pub fn pool_region(&self) -> (NonNull<u8>, usize, usize) {
        (self.pool.base, self.pool.buffer_size, self.pool.count)
    }

    /// Number of pool buffers not allocated.
    pub fn free_buffers(&self) -> usize {
        self.free.len()
    }

    /// Whether the pool is registered with the kernel (reads/writes use `ReadFixed`/`WriteFixed`).
    pub fn uses_fixed_buffers(&self) -> bool {
        self.fixed_buffers
    }

    /// Commands submitted and not yet reaped.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// How many more commands can be submitted before [`SubmitError::Busy`].
    pub fn free_slots(&self) -> usize {
        self.max_in_flight.saturating_sub(self.in_flight)
    }

    /// The ring's descriptor: `poll(2)` reports it readable when completions are waiting.
    pub fn ring_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    /// Restricts the kernel's io-wq worker threads of this ring (which run the I/O that cannot be issued
    /// without blocking, e.g. every O_DIRECT read on tmpfs) to `cpus`. Putting them on the event loop's CPU
    /// avoids a cross-CPU wakeup per I/O, which is expensive in a VM (see docs/NBD.md).
    pub fn pin_workers(&self, cpus: &[usize]) -> io::Result<()> {
        // SAFETY: cpu_set_t is plain data, valid when zeroed.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &cpu in cpus {
            if cpu >= libc::CPU_SETSIZE as usize {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cpu {cpu} out of range"),
                ));
            }
            // SAFETY: cpu < CPU_SETSIZE was checked above.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        self.ring.submitter().register_iowq_aff(&set)
    }

    /// Takes a buffer from the pool, or `None` when all are allocated.
    pub fn alloc_buffer(&mut self) -> Option<BufferId> {
        let id = self.free.pop()?;
        self.allocated[usize::from(id)] = true;
        Some(BufferId(id))
    }

    /// Returns a buffer to the pool. Refused (returns false) for an unknown, free or in-flight buffer.
    pub fn free_buffer(&mut self, id: BufferId) -> bool {
        let i = usize::from(id.0);
        if i >= self.allocated.len() || !self.allocated[i] || self.buffer_users[i] != 0 {
            return false;
        }
        self.allocated[i] = false;
        self.free.push(id.0);
        true
    }

    /// The contents of an allocated buffer that no command in flight uses.
    pub fn buffer(&self, id: BufferId) -> Option<&[u8]> {
        let i = usize::from(id.0);
        if i >= self.allocated.len() || !self.allocated[i] || self.buffer_users[i] != 0 {
            return None;
        }
        // SAFETY: the buffer is inside the pool and no kernel operation uses it (users == 0).
        Some(unsafe { std::slice::from_raw_parts(self.pool.ptr(i), self.pool.buffer_size) })
    }

    /// Mutable contents of an allocated buffer that no command in flight uses.
    pub fn buffer_mut(&mut self, id: BufferId) -> Option<&mut [u8]> {
        let i = usize::from(id.0);
        if i >= self.allocated.len() || !self.allocated[i] || self.buffer_users[i] != 0 {
            return None;
        }
        // SAFETY: as in `buffer`, and &mut self makes the borrow unique.
        Some(unsafe { std::slice::from_raw_parts_mut(self.pool.ptr(i), self.pool.buffer_size) })
    }

    fn check_range(&self, cmd: &IoCommand) -> Result<&Member, SubmitError> {
        let member = self
            .members
            .get(cmd.member)
            .and_then(Option::as_ref)
            .ok_or(SubmitError::Invalid {
                field: "member",
                value: cmd.member as u64,
            })?;
        if matches!(cmd.op, IoOp::Flush) {
            return Ok(member);
        }
        let align = u64::from(member.offset_align);
        if !cmd.offset.is_multiple_of(align) {
            return Err(SubmitError::Invalid {
                field: "offset",
                value: cmd.offset,
            });
        }
        if cmd.len == 0 || !u64::from(cmd.len).is_multiple_of(align) {
            return Err(SubmitError::Invalid {
                field: "len",
                value: u64::from(cmd.len),
            });
        }
        match cmd.offset.checked_add(u64::from(cmd.len)) {
            Some(end) if end <= member.size => Ok(member),
            _ => Err(SubmitError::Invalid {
                field: "offset",
                value: cmd.offset,
            }),
        }
    }

    fn check_buffer(
        &self,
        member: &Member,
        cmd: &IoCommand,
        id: BufferId,
        off: u32,
    ) -> Result<*mut u8, SubmitError> {
        let i = usize::from(id.0);
        if i >= self.allocated.len() || !self.allocated[i] {
            return Err(SubmitError::Invalid {
                field: "buffer",
                value: u64::from(id.0),
            });
        }
        if !off.is_multiple_of(member.memory_align) {
            return Err(SubmitError::Invalid {
                field: "buffer_offset",
                value: u64::from(off),
            });
        }
        let end = u64::from(off) + u64::from(cmd.len);
        if end > self.pool.buffer_size as u64 {
            return Err(SubmitError::Invalid {
                field: "len",
                value: u64::from(cmd.len),
            });
        }
        // SAFETY: off + len <= buffer_size, so the pointer stays inside this buffer.
        Ok(unsafe { self.pool.ptr(i).add(off as usize) })
    }

    /// Queues one command. Nothing reaches the kernel until [`MemberIo::flush`] or [`MemberIo::wait`]
    /// (or until the submission queue fills, when queued commands are pushed to make room).
    pub fn submit(&mut self, cmd: IoCommand) -> Result<(), SubmitError> {
        if self.in_flight >= self.max_in_flight {
            return Err(SubmitError::Busy);
        }
        let member = self.check_range(&cmd)?;
        if member.kind == MemberKind::Remote {
            return self.submit_remote(cmd);
        }
        let fd = types::Fixed(cmd.member as u32);
        let (entry, buffer) = match cmd.op {
            IoOp::Read {
                buffer,
                buffer_offset,
            } => {
                let ptr = self.check_buffer(member, &cmd, buffer, buffer_offset)?;
                let e = if self.fixed_buffers {
                    opcode::ReadFixed::new(fd, ptr, cmd.len, buffer.0)
                        .offset(cmd.offset)
                        .build()
                } else {
                    opcode::Read::new(fd, ptr, cmd.len)
                        .offset(cmd.offset)
                        .build()
                };
                (e, Some(buffer.0))
            }
            IoOp::Write {
                buffer,
                buffer_offset,
                fua,
            } => {
                let ptr = self.check_buffer(member, &cmd, buffer, buffer_offset)?;
                let flags = if fua { libc::RWF_DSYNC } else { 0 };
                let e = if self.fixed_buffers {
                    opcode::WriteFixed::new(fd, ptr, cmd.len, buffer.0)
                        .offset(cmd.offset)
                        .rw_flags(flags)
                        .build()
                } else {
                    opcode::Write::new(fd, ptr, cmd.len)
                        .offset(cmd.offset)
                        .rw_flags(flags)
                        .build()
                };
                (e, Some(buffer.0))
            }
            IoOp::Flush => (
                opcode::Fsync::new(fd)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build(),
                None,
            ),
            IoOp::Discard => {
                let e = match member.kind {
                    MemberKind::File | MemberKind::Remote => {
                        opcode::Fallocate::new(fd, u64::from(cmd.len))
                            .offset(cmd.offset)
                            .mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
                            .build()
                    }
                    MemberKind::BlockDevice => {
                        // addr = start, addr3 (the first 8 bytes of the command area) = length.
                        let mut area = [0u8; 16];
                        area[..8].copy_from_slice(&u64::from(cmd.len).to_ne_bytes());
                        opcode::UringCmd16::new(fd, BLOCK_URING_CMD_DISCARD)
                            .addr(Some(cmd.offset))
                            .cmd(area)
                            .build()
                    }
                };
                (e, None)
            }
            IoOp::WriteZeroes => (
                opcode::Fallocate::new(fd, u64::from(cmd.len))
                    .offset(cmd.offset)
                    .mode(libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE)
                    .build(),
                None,
            ),
        };
        let Ok(slot) = self.inflight.insert((cmd.tag, buffer)) else {
            return Err(SubmitError::Busy);
        };
        if let Some(b) = buffer {
            self.buffer_users[usize::from(b)] += 1;
        }
        let entry = entry.user_data(u64::from(slot));
        // SAFETY: the entry points into the pool, which lives until every in-flight command completes.
        if unsafe { self.ring.submission().push(&entry) }.is_err() {
            // The submission queue is full: hand it to the kernel (no waiting) and retry once.
            let pushed = self.ring.submit().is_ok()
                // SAFETY: as above.
                && unsafe { self.ring.submission().push(&entry) }.is_ok();
            if !pushed {
                if let Some(b) = buffer {
                    self.buffer_users[usize::from(b)] -= 1;
                }
                self.inflight.remove(u64::from(slot));
                return Err(SubmitError::Busy);
            }
        }
        self.in_flight += 1;
        Ok(())
    }

    /// [`MemberIo::submit`] for a remote member: the command goes to its link.
    fn submit_remote(&mut self, cmd: IoCommand) -> Result<(), SubmitError> {
        let member = self.check_range(&cmd)?;
        let piece = member.link().map_or(0, |l| l.piece_len());
        let (op, buffer) = match cmd.op {
            IoOp::Read {
                buffer,
                buffer_offset,
            } => (
                RemoteOp::Read(self.check_buffer(member, &cmd, buffer, buffer_offset)?),
                Some(buffer.0),
            ),
            IoOp::Write {
                buffer,
                buffer_offset,
                fua,
            } => (
                RemoteOp::Write(self.check_buffer(member, &cmd, buffer, buffer_offset)?, fua),
                Some(buffer.0),
            ),
            IoOp::Flush => (RemoteOp::Flush, None),
            IoOp::Discard => (RemoteOp::Trim, None),
            IoOp::WriteZeroes => (RemoteOp::Zeroes, None),
        };
        // Longer ones go in pieces (see `Link::submit`); a server that takes no piece a
        // sector long cannot serve as a member.
        if buffer.is_some() && piece == 0 {
            return Err(SubmitError::Invalid {
                field: "len",
                value: u64::from(cmd.len),
            });
        }
        let Ok(slot) = self.inflight.insert((cmd.tag, buffer)) else {
            return Err(SubmitError::Busy);
        };
        if let Some(b) = buffer {
            self.buffer_users[usize::from(b)] += 1;
        }
        self.in_flight += 1;
        if let Some(l) = self.link(cmd.member) {
            l.submit(u64::from(slot), op, cmd.offset, cmd.len);
        }
        Ok(())
    }

    /// Hands queued commands to the kernel without waiting for any completion.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.ring.submission().is_empty() {
            return Ok(());
        }
        loop {
            match self.ring.submit() {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // EBUSY/EAGAIN: the kernel is short of room; completions must be reaped first.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EAGAIN)) => {
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Submits queued commands and blocks until at least `min` completions are ready (fewer if fewer are
    /// in flight). This is the only call of the engine that blocks.
    pub fn wait(&mut self, min: usize) -> io::Result<()> {
        if !self.remote_done.is_empty() || !self.link_notes.is_empty() {
            return Ok(());
        }
        let mut want = min.min(self.in_flight);
        if self.notes.is_some() {
            // Remote completions arrive together as one read of the eventfd.
            want = want.min(1);
        }
        loop {
            match self.ring.submit_and_wait(want) {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes the next completion, if one is ready. Never blocks.
    pub fn reap(&mut self) -> Option<IoCompletion> {
        let (slot, res) = loop {
            if let Some(done) = self.remote_done.pop_front() {
                break done;
            }
            let cqe = self.ring.completion().next()?;
            if cqe.user_data() == NOTES_TAG {
                self.notes_armed = false;
                self.drain_notes();
                self.arm_notes();
                continue;
            }
            break (cqe.user_data(), cqe.result());
        };
        self.in_flight = self.in_flight.saturating_sub(1);
        // Every command in the ring or a link came from `submit`, which gave it its slot.
        let (tag, buffer) = self.inflight.remove(slot).unwrap_or((u64::MAX, None));
        if let Some(b) = buffer {
            let users = &mut self.buffer_users[usize::from(b)];
            *users = users.saturating_sub(1);
        }
        let result = if res < 0 {
            Err(Errno(-res))
        } else {
            Ok(res as u32)
        };
        Some(IoCompletion { tag, result })
    }

    /// Appends every ready completion to `out`; returns how many were added. Never blocks.
    pub fn reap_into(&mut self, out: &mut Vec<IoCompletion>) -> usize {
        let before = out.len();
        while let Some(c) = self.reap() {
            out.push(c);
        }
        out.len() - before
    }
}

impl Drop for MemberIo {
    fn drop(&mut self) {
        // Remote members first: their threads stop, and what they held completes.
        for i in 0..self.members.len() {
            self.close_link(i);
        }
        // The kernel may still write into the pool: wait for every command in flight before freeing it.
        while self.in_flight > 0 {
            if !self.remote_done.is_empty() {
                while self.reap().is_some() {}
                continue;
            }
            if self.wait(1).is_err() {
                break;
            }
            while self.reap().is_some() {}
        }
        // The ring is torn down asynchronously by the kernel, and with it the last reference to registered
        // files: unregister them now so that a block device's exclusive claim ends when the engine does.
        if self.registered {
            let _ = self.ring.submitter().unregister_files();
        }
    }
}
