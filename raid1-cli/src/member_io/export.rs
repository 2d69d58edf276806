//! A [`Backend`] that exports one member through the io_uring engine.
//!
//! Reads and writes are split into pool-buffer-sized chunks, one engine command each, all in flight at
//! once; the request completes when its last chunk does. Write payloads are copied into pool buffers and
//! read data out of them (one copy each way).

use std::io;
use std::os::fd::RawFd;

use crate::errno::Errno;
use crate::member_io::{
    BufferId, EngineConfig, IoCommand, IoCompletion, IoOp, Member, MemberIo, SubmitError,
};
use crate::nbd::{Backend, Busy, Capabilities, Completion, Payload, Request, RequestOp};

/// Bits of an engine tag that hold the chunk index; the rest hold the request slot.
const CHUNK_BITS: u32 = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Other,
}

struct Pending {
    id: u64,
    kind: Kind,
    length: u32,
    remaining: u32,
    error: Option<Errno>,
    data: Vec<u8>,
    buffers: Vec<BufferId>,
    /// Trim or write-zeroes with FUA: flush once the range operation is done.
    then_flush: bool,
}

/// Exports member 0 of a [`MemberIo`] engine.
pub struct MemberBackend {
    io: MemberIo,
    size: u64,
    align: u32,
    discard: bool,
    slots: Vec<Option<Pending>>,
    free_slots: Vec<usize>,
    done: Vec<Completion>,
    reaped: Vec<IoCompletion>,
}

impl std::fmt::Debug for MemberBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberBackend")
            .field("io", &self.io)
            .field("size", &self.size)
            .finish()
    }
}

/// The largest read or write the backend takes: the pool must hold one such request.
pub const MAX_REQUEST: usize = 32 << 20;

impl MemberBackend {
    /// Wraps `member` in an engine built with `config`, whose pool must hold at least [`MAX_REQUEST`] bytes.
    pub fn new(member: Member, config: EngineConfig) -> io::Result<MemberBackend> {
        let pool = config
            .buffer_size
            .saturating_mul(usize::from(config.buffer_count));
        if pool < MAX_REQUEST {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "buffer pool of {pool} bytes is smaller than the largest request ({MAX_REQUEST})"
                ),
            ));
        }
        let size = member.size();
        let align = member.offset_align();
        let discard = member.supports_discard();
        let io = MemberIo::new(vec![member], config)?;
        Ok(MemberBackend {
            io,
            size,
            align,
            discard,
            slots: Vec::new(),
            free_slots: Vec::new(),
            done: Vec::new(),
            reaped: Vec::new(),
        })
    }

    /// The engine (for inspection).
    pub fn engine(&self) -> &MemberIo {
        &self.io
    }

    fn finish(&mut self, id: u64, result: Result<Vec<u8>, Errno>) {
        self.done.push(Completion {
            id,
            result: result.map(Payload::Owned),
        });
    }

    fn new_slot(&mut self, p: Pending) -> usize {
        if let Some(i) = self.free_slots.pop() {
            self.slots[i] = Some(p);
            i
        } else {
            self.slots.push(Some(p));
            self.slots.len() - 1
        }
    }

    fn command(
        &mut self,
        slot: usize,
        chunk: u32,
        op: IoOp,
        offset: u64,
        len: u32,
    ) -> Result<(), SubmitError> {
        let tag = ((slot as u64) << CHUNK_BITS) | u64::from(chunk);
        self.io.submit(IoCommand {
            tag,
            member: 0,
            op,
            offset,
            len,
        })
    }

    fn chunk_size(&self) -> u32 {
        self.io.buffer_size() as u32
    }

    fn handle(&mut self, c: IoCompletion) {
        let slot = (c.tag >> CHUNK_BITS) as usize;
        let chunk = (c.tag & ((1 << CHUNK_BITS) - 1)) as u32;
        let chunk_size = self.chunk_size();
        let Some(Some(p)) = self.slots.get_mut(slot) else {
            return;
        };
        let start = chunk.saturating_mul(chunk_size);
        let want = p.length.saturating_sub(start).min(chunk_size);
        match c.result {
            Ok(n) if p.kind != Kind::Other && n != want => {
                p.error = p.error.or(Some(Errno(libc::EIO)))
            }
            Ok(_) => {}
            Err(e) => p.error = p.error.or(Some(e)),
        }
        if p.kind != Kind::Other {
            let buffer = p.buffers[chunk as usize];
            if p.kind == Kind::Read && p.error.is_none() {
                if let Some(src) = self.io.buffer(buffer) {
                    let (s, w) = (start as usize, want as usize);
                    if p.buffers.len() == 1 {
                        // One chunk: copy straight out, without zeroing a buffer first.
                        p.data = src[..w].to_vec();
                    } else {
                        p.data[s..s + w].copy_from_slice(&src[..w]);
                    }
                }
            }
            self.io.free_buffer(buffer);
        }
        p.remaining -= 1;
        if p.remaining > 0 {
            return;
        }
        if p.then_flush && p.error.is_none() {
            p.then_flush = false;
            p.remaining = 1;
            if self.command(slot, 0, IoOp::Flush, 0, 0).is_ok() {
                return;
            }
            // A completion was just reaped, so the engine has room; this is not expected.
            if let Some(Some(p)) = self.slots.get_mut(slot) {
                p.error = Some(Errno(libc::EIO));
            }
        }
        let Some(p) = self.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free_slots.push(slot);
        let result = match p.error {
            Some(e) => Err(e),
            None if p.kind == Kind::Read => Ok(p.data),
            None => Ok(Vec::new()),
        };
        self.finish(p.id, result);
    }

    fn submit_transfer(&mut self, req: Request) -> Result<(), Busy> {
        let chunk_size = self.chunk_size();
        let chunks = req.length.div_ceil(chunk_size);
        if self.io.free_buffers() < chunks as usize || self.io.free_slots() < chunks as usize {
            return Err(Busy(req));
        }
        let (kind, payload) = match req.op {
            RequestOp::Read => (Kind::Read, None),
            // This backend lends no buffers: a write's payload is owned.
            RequestOp::Write(Payload::Owned(ref data)) => (Kind::Write, Some(data)),
            RequestOp::Write(Payload::Lent(_)) => {
                self.finish(req.id, Err(Errno(libc::EINVAL)));
                return Ok(());
            }
            _ => unreachable!("submit_transfer is only called for reads and writes"),
        };
        let mut buffers = Vec::with_capacity(chunks as usize);
        for i in 0..chunks {
            let Some(b) = self.io.alloc_buffer() else {
                unreachable!("free buffers were counted")
            };
            if let Some(data) = payload {
                let start = (i * chunk_size) as usize;
                let end = (start + chunk_size as usize).min(data.len());
                if let Some(dst) = self.io.buffer_mut(b) {
                    dst[..end - start].copy_from_slice(&data[start..end]);
                }
            }
            buffers.push(b);
        }
        let data = if kind == Kind::Read && chunks > 1 {
            vec![0u8; req.length as usize]
        } else {
            Vec::new()
        };
        let slot = self.new_slot(Pending {
            id: req.id,
            kind,
            length: req.length,
            remaining: chunks,
            error: None,
            data,
            buffers: buffers.clone(),
            then_flush: false,
        });
        for (i, b) in buffers.into_iter().enumerate() {
            let i = i as u32;
            let start = i * chunk_size;
            let len = (req.length - start).min(chunk_size);
            let op = match kind {
                Kind::Read => IoOp::Read {
                    buffer: b,
                    buffer_offset: 0,
                },
                _ => IoOp::Write {
                    buffer: b,
                    buffer_offset: 0,
                    fua: req.fua,
                },
            };
            if let Err(e) = self.command(slot, i, op, req.offset + u64::from(start), len) {
                // Capacity was checked, so only a malformed command gets here; account the chunks not sent.
                let errno = match e {
                    SubmitError::Busy => libc::EAGAIN,
                    _ => libc::EINVAL,
                };
                let unsent = chunks - i;
                for j in i..chunks {
                    self.handle(IoCompletion {
                        tag: ((slot as u64) << CHUNK_BITS) | u64::from(j),
                        result: Err(Errno(errno)),
                    });
                }
                debug_assert!(unsent > 0);
                break;
            }
        }
        Ok(())
    }
}

impl Backend for MemberBackend {
    fn size(&self) -> u64 {
        self.size
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            read_only: false,
            flush: true,
            fua: true,
            trim: self.discard,
            write_zeroes: true,
            // No cache of our own: O_DIRECT, and fdatasync covers writes completed on any connection.
            multi_conn: true,
            min_block_size: self.align,
            lends_buffers: false,
            preferred_block_size: 4096,
        }
    }

    fn submit(&mut self, req: Request) -> Result<(), Busy> {
        let align = u64::from(self.align);
        let unaligned =
            !req.offset.is_multiple_of(align) || !u64::from(req.length).is_multiple_of(align);
        match req.op {
            RequestOp::Read | RequestOp::Write(_) | RequestOp::WriteZeroes if unaligned => {
                self.finish(req.id, Err(Errno(libc::EINVAL)));
                Ok(())
            }
            RequestOp::Read | RequestOp::Write(_) => self.submit_transfer(req),
            RequestOp::Flush | RequestOp::Trim | RequestOp::WriteZeroes => {
                if self.io.free_slots() == 0 {
                    return Err(Busy(req));
                }
                let (op, offset, len) = match req.op {
                    RequestOp::Flush => (IoOp::Flush, 0, 0),
                    RequestOp::WriteZeroes => (IoOp::WriteZeroes, req.offset, req.length),
                    _ => {
                        // Trim is advisory: shrink the range to whole blocks.
                        let start = req.offset.div_ceil(align) * align;
                        let end = (req.offset + u64::from(req.length)) / align * align;
                        if end <= start {
                            self.finish(req.id, Ok(Vec::new()));
                            return Ok(());
                        }
                        (IoOp::Discard, start, (end - start) as u32)
                    }
                };
                let slot = self.new_slot(Pending {
                    id: req.id,
                    kind: Kind::Other,
                    length: 0,
                    remaining: 1,
                    error: None,
                    data: Vec::new(),
                    buffers: Vec::new(),
                    then_flush: req.fua && !matches!(op, IoOp::Flush),
                });
                if self.command(slot, 0, op, offset, len).is_err() {
                    self.handle(IoCompletion {
                        tag: (slot as u64) << CHUNK_BITS,
                        result: Err(Errno(libc::EINVAL)),
                    });
                }
                Ok(())
            }
        }
    }

    fn push(&mut self) -> io::Result<()> {
        self.io.flush()
    }

    fn completions(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        let mut reaped = std::mem::take(&mut self.reaped);
        self.io.reap_into(&mut reaped);
        for c in reaped.drain(..) {
            self.handle(c);
        }
        self.reaped = reaped;
        out.append(&mut self.done);
        Ok(())
    }

    fn wake_fd(&self) -> Option<RawFd> {
        Some(self.io.ring_fd())
    }
}
