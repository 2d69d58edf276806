//! The protocol adaptor: NBD requests become the core's logical requests, the core's
//! completions become NBD completions, and the NBD side borrows pool buffers for payloads.
//!
//! A request's payload lives in one pool buffer from the NBD side to the members and back
//! (engine.rs counts its users); the core knows a request by its slot in the table of logical
//! requests, a fixed-size table.

use raid1_core::{
    Completion as CoreCompletion, Outcome, Request as CoreRequest, RequestOp as CoreOp, SubmitError,
};
use std::io;
use std::os::fd::RawFd;

use super::discard::Discards;
use super::discard::NO_BUFFER;
use super::engine::{Logical, MAX_REQUEST_BYTES, RaidEngine};
use crate::errno::Errno;
use crate::member_io::BufferId;
use crate::nbd::{
    Backend, Busy, Capabilities, Completion, LentBuffer, Payload, Request, RequestOp,
};

impl RaidEngine {
    pub(super) fn completed(&mut self, c: CoreCompletion) {
        if Discards::owns(c.id) {
            let errno = match c.outcome {
                Outcome::Ok => 0,
                Outcome::IoError => libc::EIO,
                Outcome::ReadOnly => libc::EPERM,
            };
            if let Some(done) = self.discards.chunk_done(c.id, errno) {
                self.done.push(done);
            }
            return;
        }
        let Some(l) = self.logical.remove(c.id) else {
            return;
        };
        if c.outcome == Outcome::Ok && l.read {
            // The data goes to the client from the buffer it was read into, which the server
            // gives back once sent; the request's reference passes to it.
            self.deferred.push((l.id, l.handle, l.length));
            self.answer_reads();
            return;
        }
        if l.handle != NO_BUFFER {
            self.release(l.handle as u16);
        }
        let result = match c.outcome {
            Outcome::Ok => Ok(Payload::NONE),
            Outcome::IoError => Err(Errno(libc::EIO)),
            Outcome::ReadOnly => Err(Errno(libc::EPERM)),
        };
        self.done.push(Completion { id: l.id, result });
    }

    /// Answers the reads done whose buffer no member command uses any more (a read completes
    /// after its member I/O, so this waits only if a frontend bug left one in flight).
    pub(super) fn answer_reads(&mut self) {
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
}

impl Backend for RaidEngine {
    fn size(&self) -> u64 {
        self.size.load(std::sync::atomic::Ordering::Acquire)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // A client that connects to a read-only array is told so (NBD_FLAG_READ_ONLY);
            // one connected before keeps its flags and gets EPERM from the engine.
            read_only: self.read_only.load(std::sync::atomic::Ordering::Acquire),
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
                let max = self.array.config().max_request_sectors;
                if let Some(c) = self.discards.split(&request, max) {
                    self.done.push(c);
                }
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
        // The core knows the request by its slot in the table of logical requests.
        let logical = Logical {
            id: request.id,
            handle,
            read: op == CoreOp::Read,
            length: request.length,
        };
        let slot = match self.logical.insert(logical) {
            Ok(slot) => u64::from(slot),
            Err(_) => {
                if taken {
                    self.release(handle as u16);
                }
                return Err(Busy(request));
            }
        };
        let core = CoreRequest {
            id: slot,
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
                self.drive();
                Ok(())
            }
            Err(SubmitError::Busy) => {
                self.logical.remove(slot);
                // The request goes back as it came: a lent payload stays the server's.
                if taken {
                    self.release(handle as u16);
                }
                Err(Busy(request))
            }
            Err(e) => {
                self.logical.remove(slot);
                if handle != NO_BUFFER {
                    self.release(handle as u16);
                }
                let errno = match e {
                    SubmitError::Broken => libc::EIO,
                    SubmitError::ReadOnly => libc::EPERM,
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
