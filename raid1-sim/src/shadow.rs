//! The shadow oracle: what the array may legitimately return, sector by sector, and what a power
//! cut may legitimately leave on a member assembled in sync.
//!
//! The shadow follows the logical requests only, never the member I/O. Per sector it keeps the
//! possible durable values (one, except after a power cut until the resync settles the sector),
//! the possible current values, the writes since the durable point with the order in which they
//! were acknowledged, and the write in flight (the workload never overlaps two writes). A flush
//! makes durable exactly the writes acknowledged before it was submitted; a FUA write is durable
//! when acknowledged; a power cut makes the durable value, any write since and the one in flight
//! all possible again.

use std::ops::Index;

/// Shadow state of one sector.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sector {
    /// Possible durable values (one, except after a crash before the resync settled them).
    pub(crate) base: Vec<u64>,
    /// Possible current values.
    pub(crate) current: Vec<u64>,
    /// Writes since the durable point: (value, ack sequence when acknowledged).
    pub(crate) since: Vec<(u64, Option<u64>)>,
    /// Value of the write in flight.
    pub(crate) inflight: Option<u64>,
}

/// The shadow of the whole array.
#[derive(Clone, Debug)]
pub(crate) struct Shadow {
    sectors: Vec<Sector>,
    /// Acknowledged writes so far (the order a flush is measured against).
    ack_seq: u64,
}

impl Index<usize> for Shadow {
    type Output = Sector;

    fn index(&self, s: usize) -> &Sector {
        &self.sectors[s]
    }
}

/// Sorts `v` and drops repeated values.
pub(crate) fn dedup(v: &mut Vec<u64>) {
    v.sort_unstable();
    v.dedup();
}

impl Shadow {
    /// A new array whose sector `s` may hold any of `initial(s)`.
    pub(crate) fn new(sectors: usize, mut initial: impl FnMut(usize) -> Vec<u64>) -> Shadow {
        let sectors = (0..sectors)
            .map(|s| {
                let mut base = initial(s);
                dedup(&mut base);
                Sector {
                    current: base.clone(),
                    base,
                    ..Sector::default()
                }
            })
            .collect();
        Shadow {
            sectors,
            ack_seq: 0,
        }
    }

    /// Sector `s` joins the array (a grow) holding any of `values`: what the members hold
    /// there, until the resync settles it. Nothing written before counts any more.
    pub(crate) fn reset(&mut self, s: usize, mut values: Vec<u64>) {
        dedup(&mut values);
        self.sectors[s] = Sector {
            current: values.clone(),
            base: values,
            ..Sector::default()
        };
    }

    /// The acknowledgement sequence now (a flush submitted now makes durable what was
    /// acknowledged up to here).
    pub(crate) fn ack_seq(&self) -> u64 {
        self.ack_seq
    }

    /// Whether a write is in flight over any of `sectors`.
    pub(crate) fn writing(&self, mut sectors: impl Iterator<Item = u64>) -> bool {
        sectors.any(|s| self.sectors[s as usize].inflight.is_some())
    }

    /// What a read of `s` submitted now may return: a current value or the one in flight.
    pub(crate) fn readable(&self, s: usize) -> Vec<u64> {
        let sh = &self.sectors[s];
        let mut a = sh.current.clone();
        a.extend(sh.inflight);
        a
    }

    /// Whether `v` is what `s` holds now (a current value, or the write in flight).
    pub(crate) fn is_current(&self, s: usize, v: u64) -> bool {
        let sh = &self.sectors[s];
        sh.current.contains(&v) || sh.inflight == Some(v)
    }

    /// Whether a power cut now may leave `v` at `s` on a member assembled in sync.
    pub(crate) fn may_survive(&self, s: usize, v: u64) -> bool {
        let sh = &self.sectors[s];
        sh.base.contains(&v)
            || sh.current.contains(&v)
            || sh.inflight == Some(v)
            || sh.since.iter().any(|e| e.0 == v)
    }

    /// A write of `v` to `s` was submitted.
    pub(crate) fn write_submitted(&mut self, s: usize, v: u64) {
        let sh = &mut self.sectors[s];
        sh.inflight = Some(v);
        sh.since.push((v, None));
    }

    /// The write over `s` failed: its value may or may not be there.
    pub(crate) fn write_failed(&mut self, s: usize) {
        let sh = &mut self.sectors[s];
        if let Some(v) = sh.inflight.take() {
            sh.current.push(v);
        }
    }

    /// A write or discard is acknowledged (call once, before its sectors' [`Self::written`]).
    pub(crate) fn acknowledged(&mut self) {
        self.ack_seq += 1;
    }

    /// The acknowledged write put `v` at `s` (durably with `fua`).
    pub(crate) fn written(&mut self, s: usize, v: u64, fua: bool) {
        let ack = self.ack_seq;
        let sh = &mut self.sectors[s];
        sh.inflight = None;
        sh.current = vec![v];
        if fua {
            sh.base = vec![v];
            sh.since.clear();
        } else if let Some(e) = sh.since.iter_mut().rev().find(|e| e.0 == v) {
            e.1 = Some(ack);
        }
    }

    /// A flush submitted at acknowledgement sequence `flush_seq` is acknowledged.
    pub(crate) fn flushed(&mut self, flush_seq: u64) {
        for sh in self.sectors.iter_mut() {
            if let Some(k) = sh
                .since
                .iter()
                .rposition(|e| e.1.is_some_and(|a| a <= flush_seq))
            {
                sh.base = vec![sh.since[k].0];
                sh.since.drain(..=k);
            }
        }
    }

    /// A power cut: anything written since the last flush may or may not have survived.
    pub(crate) fn power_cut(&mut self) {
        for sh in self.sectors.iter_mut() {
            let mut b = std::mem::take(&mut sh.base);
            b.extend(sh.since.drain(..).map(|e| e.0));
            b.extend(sh.inflight.take());
            b.extend(sh.current.iter().copied());
            dedup(&mut b);
            sh.base = b.clone();
            sh.current = b;
        }
    }

    /// The in-sync mirrors agree on `v` at `s` at a quiet point: if `s` was ambiguous, the
    /// resync settled it. Reads must now return `v`; after a power cut any of the old
    /// candidates may come back (a read-error write-back is not durable until a flush).
    pub(crate) fn settled(&mut self, s: usize, v: u64) {
        let sh = &mut self.sectors[s];
        if sh.current.len() > 1 {
            sh.current = vec![v];
            if sh.since.is_empty() && !sh.base.contains(&v) {
                sh.base.push(v);
            }
        }
    }
}
