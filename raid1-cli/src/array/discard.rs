//! Trim and write-zeroes requests: split into the core's discards (which read back as zeroes)
//! of at most the core's request size, fed to the core as it has room; a FUA request ends with a
//! flush, so that everything zeroed is durable before the reply.

use std::collections::{HashMap, VecDeque};

use raid1_core::{Request as CoreRequest, RequestOp as CoreOp};

use crate::errno::Errno;
use crate::nbd::{Completion, Payload, Request};

/// No pool buffer (flush, trim and write-zeroes requests).
pub(super) const NO_BUFFER: u32 = u32::MAX;

/// Core ids of chunks have the top bit set; the adaptor's own ids (slot numbers) never do.
const CHUNK_BIT: u64 = 1 << 63;

/// The chunks of trim and write-zeroes requests.
#[derive(Default)]
pub(super) struct Discards {
    /// Chunks waiting for a slot in the core: (core id, sector, sectors, flush instead of
    /// discard).
    pub(super) queue: VecDeque<(u64, u64, u32, bool)>,
    /// Core id of a chunk → the NBD request it belongs to.
    chunks: HashMap<u64, u64>,
    /// NBD request → chunks not yet completed, the first error seen (0: none), FUA asked.
    parents: HashMap<u64, (u32, i32, bool)>,
    next: u64,
}

impl Discards {
    /// Whether core id `id` is a chunk's.
    pub(super) fn owns(id: u64) -> bool {
        id & CHUNK_BIT != 0
    }

    fn chunk_id(&mut self) -> u64 {
        self.next += 1;
        CHUNK_BIT | self.next
    }

    /// Splits `request` into chunks of at most `max_sectors`; its completion at once when
    /// there is nothing to do.
    pub(super) fn split(&mut self, request: &Request, max_sectors: u32) -> Option<Completion> {
        let mut sector = request.offset / 512;
        let end = sector + u64::from(request.length / 512);
        let mut chunks = 0;
        while sector < end {
            let n = (end - sector).min(u64::from(max_sectors)) as u32;
            let id = self.chunk_id();
            self.chunks.insert(id, request.id);
            self.queue.push_back((id, sector, n, false));
            sector += u64::from(n);
            chunks += 1;
        }
        if chunks == 0 {
            return Some(Completion {
                id: request.id,
                result: Ok(Payload::NONE),
            });
        }
        self.parents.insert(request.id, (chunks, 0, request.fua));
        None
    }

    /// The next chunk for the core, if any waits.
    pub(super) fn front(&self) -> Option<CoreRequest> {
        let &(id, sector, sectors, flush) = self.queue.front()?;
        Some(CoreRequest {
            id,
            op: if flush {
                CoreOp::Flush
            } else {
                CoreOp::Discard
            },
            sector,
            sectors,
            buffer: NO_BUFFER,
            fua: false,
        })
    }

    /// Chunk `chunk` ended; the completion of its request when it was the last one.
    /// A chunk ended: `errno` 0 for success, else the error it failed with (the request
    /// answers the first one).
    pub(super) fn chunk_done(&mut self, chunk: u64, errno: i32) -> Option<Completion> {
        let parent = self.chunks.remove(&chunk)?;
        let p = self.parents.get_mut(&parent)?;
        p.0 -= 1;
        if p.1 == 0 {
            p.1 = errno;
        }
        if p.0 > 0 {
            return None;
        }
        let (_, failed, fua) = *p;
        if fua && failed == 0 {
            // FUA: everything zeroed is made durable before the reply.
            p.0 = 1;
            p.2 = false;
            let id = self.chunk_id();
            self.chunks.insert(id, parent);
            self.queue.push_back((id, 0, 0, true));
            return None;
        }
        self.parents.remove(&parent);
        Some(Completion {
            id: parent,
            result: if failed != 0 {
                Err(Errno(failed))
            } else {
                Ok(Payload::NONE)
            },
        })
    }
}
