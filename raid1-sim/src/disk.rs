//! The simulated member disk, and its fault model.
//!
//! A disk holds one `u64` per sector of the data area (the engine never looks at data, so a
//! stamp per sector naming the write it came from tells every write apart), in two layers: a
//! durable image and, per sector, the writes completed but not yet flushed (a volatile write
//! cache), oldest first. A read sees the newest value; a member flush makes durable every write
//! that completed before the flush was issued; a FUA write is durable when it completes. Next
//! to the data: the md metadata (the superblock as md v1.x bytes, rendered through raid1-core's
//! bridge and parsed back, the bitmap header and bits) and md's bad-block log.
//!
//! # Fault model
//!
//! * **Member faults** (raid1-testkit's [`FaultyMember`], whose documentation states the order
//!   in which they answer a command): a disk can be **dead** (every command fails until the disk
//!   is re-added), **flaky on reads** or **flaky on writes** (each read, or each data, superblock
//!   or bitmap write, fails with the seed's probability; discards and flushes do not), and have
//!   **sticky media errors**: sectors that fail every read until a write or discard remaps them,
//!   durably at once. Superblock and bitmap writes lie outside the data area: they are writes of
//!   no sector, which only a dead or write-flaky disk fails. Flaky disks heal at random and at
//!   every quiet point and power cut; media errors are forgotten now and then (a drive
//!   remapping in the background). Which of these a seed uses, and how often, is its swarm
//!   (`options.rs`); where they may strike is the fault atlas's (`atlas.rs`).
//! * **Power cut** ([`Disk::crash`]): each sector with cached writes keeps one of them, or none
//!   (its durable value). Before that, the simulator lands every write in flight sector by
//!   sector at random (torn) and every superblock or bitmap write in flight whole or not at all
//!   (`crash.rs`).
//! * **Contents faults** planted by the simulator (`faults.rs`): silent corruption (values no
//!   write produces on a mirror) and bad blocks over such values (listed in the disk's bad-block
//!   log). They change what the disk holds, not whether it answers.
//!
//! Not modelled: torn or corrupt metadata, misdirected or lost writes, errors under the
//! superblock or bitmap, disks of different sizes (a seed that resizes the array gives every
//! disk the same room, its `capacity`).

use raid1_core::{BadRange, Sector, SuperblockState};
use raid1_testkit::{FaultyMember, Rng};

use crate::{M, Res, bridge};

#[derive(Clone, Debug)]
pub(crate) struct Disk {
    pub(crate) durable: Vec<u64>,
    /// Per sector: writes completed but not yet flushed, oldest first, with their write sequence.
    pub(crate) cache: Vec<Vec<(u64, u64)>>,
    pub(crate) wseq: u64,
    /// The superblock as parsed back from `sb_bytes` (kept in step with them).
    pub(crate) sb: Option<SuperblockState<M>>,
    /// The md v1.x superblock bytes on the disk and its bitmap header (empty without a bitmap).
    pub(crate) sb_bytes: Vec<u8>,
    pub(crate) bm_header: Vec<u8>,
    pub(crate) bitmap: Vec<u8>,
    /// Its faults (raid1-testkit's member fault model): flaky or dead, and sticky media errors,
    /// sectors that fail every read until they are written.
    pub(crate) member: FaultyMember<Box<[u8]>>,
    /// Its bad-block log on disk (md's per-device log, data-area relative): what a frontend
    /// lends the engine when it assembles or re-adds this disk. Rewritten from the engine's
    /// list at a clean stop (everything written is flushed by then).
    pub(crate) bblog: Vec<BadRange>,
    /// An error of a write, discard, flush or metadata write was answered to the engine for
    /// the member on this disk, and the engine has not yet decided on it (failed the member,
    /// recorded the range as bad, or kept it as the last member): the member is already lost
    /// in all but name (atlas rule 1). Soak seed 71004455: a flaky disk healed between its
    /// write error and the failure that error led to, a media error struck the other in-sync
    /// member meanwhile, and its read fix could then neither be written back nor recorded.
    pub(crate) unsettled: bool,
}

impl Disk {
    /// Whether its bad-block log on disk lists sector `s`.
    pub(crate) fn logs_bad(&self, s: usize) -> bool {
        self.bblog
            .iter()
            .any(|b| u64::from(b.start) <= s as u64 && (s as u64) < u64::from(b.end()))
    }

    /// A new disk: random contents (values no write produces: the top bit set), no metadata.
    pub(crate) fn new(rng: &mut Rng, sectors: usize, bm_bytes: usize) -> Disk {
        Disk {
            durable: (0..sectors).map(|_| rng.next_u64() | 1 << 63).collect(),
            cache: vec![Vec::new(); sectors],
            wseq: 0,
            sb: None,
            sb_bytes: Vec::new(),
            bm_header: Vec::new(),
            bitmap: vec![0; bm_bytes],
            member: FaultyMember::new(vec![0; sectors].into_boxed_slice()),
            bblog: Vec::new(),
            unsettled: false,
        }
    }

    /// Room beyond the array's first size, up to `capacity` sectors, for a seed that grows
    /// the array: random values (from the seed's side stream) no write produces, different
    /// on every disk, as a device grown under a running array holds whatever was there.
    pub(crate) fn extend(&mut self, side: &mut Rng, capacity: usize) {
        let from = self.durable.len();
        if capacity <= from {
            return;
        }
        self.durable
            .extend((from..capacity).map(|_| side.next_u64() | 1 << 63));
        self.cache.resize(capacity, Vec::new());
        self.member = FaultyMember::new(vec![0; capacity].into_boxed_slice());
    }

    /// What a read of sector `s` sees: the newest cached write, or the durable value.
    pub(crate) fn read(&self, s: usize) -> u64 {
        self.cache[s].last().map_or(self.durable[s], |e| e.0)
    }

    /// Stores `v` at `s` (the member, consulted first, remapped a media error there).
    pub(crate) fn write(&mut self, s: usize, v: u64, fua: bool) {
        if fua {
            self.cache[s].clear();
            self.durable[s] = v;
        } else {
            self.wseq += 1;
            self.cache[s].push((v, self.wseq));
        }
    }

    /// A member flush issued when the write sequence was `upto`: every write cached by then
    /// becomes durable.
    pub(crate) fn flush(&mut self, upto: u64) {
        for s in 0..self.durable.len() {
            let c = &mut self.cache[s];
            if let Some(k) = c.iter().rposition(|e| e.1 <= upto) {
                self.durable[s] = c[k].0;
                c.drain(..=k);
            }
        }
    }

    /// Power loss: each cached sector persists one of its cached values, or none.
    pub(crate) fn crash(&mut self, rng: &mut Rng) {
        self.unsettled = false;
        // A read error aimed at a request's read (`Sim::aim_tear`) goes with the request the
        // cut lost: left armed, it struck a check's read long after (soak seed 110880), and a
        // check that rewrites what it failed to read broke (m).
        self.member.fail_read = raid1_testkit::Countdown::OFF;
        for s in 0..self.durable.len() {
            let c = std::mem::take(&mut self.cache[s]);
            if !c.is_empty() {
                let k = rng.below(c.len() as u64 + 1) as usize;
                if k < c.len() {
                    self.durable[s] = c[k].0;
                }
            }
        }
    }

    /// A superblock write of `st` lands: rendered into md v1.x bytes through the bridge, and
    /// what the disk now says is those bytes parsed back, which must be `st`.
    pub(crate) fn land_sb(
        &mut self,
        data_sectors: u64,
        chunk: Sector,
        st: &SuperblockState<M>,
    ) -> Res<()> {
        let (bytes, header) = bridge::render::<M>(data_sectors, u64::from(chunk), st)?;
        let back = bridge::parse::<M>(&bytes, &header)?;
        if back != *st {
            return Err(format!(
                "(bytes) the superblock read back differs from the one written: {back:?} vs {st:?}"
            ));
        }
        self.sb_bytes = bytes;
        self.bm_header = header;
        self.sb = Some(back);
        Ok(())
    }
}
