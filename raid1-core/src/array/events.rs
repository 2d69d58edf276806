//! Monitor events: what md reports through md_new_event / sysfs_notify and `mdadm --monitor`
//! shows (Fail, DegradedArray, SpareActive, RebuildStarted / RebuildNN / RebuildFinished, ...).
//!
//! A ring of [`EVENT_QUEUE`] entries; when it is full the oldest is dropped and counted in
//! [`ArrayStatus::events_lost`].

use super::*;

/// The event ring.
#[derive(Debug)]
pub(super) struct EventQueue {
    q: [Option<Event>; EVENT_QUEUE],
    head: usize,
    len: usize,
    /// Events dropped because the ring was full.
    pub(super) lost: u64,
}

impl EventQueue {
    /// The state of a new array.
    pub(super) const NEW: Self = EventQueue {
        q: [None; EVENT_QUEUE],
        head: 0,
        len: 0,
        lost: 0,
    };

    /// Queues `ev`, dropping the oldest event if the ring is full.
    fn push(&mut self, ev: Event) {
        if self.len == EVENT_QUEUE {
            self.head = (self.head + 1) % EVENT_QUEUE;
            self.len -= 1;
            self.lost += 1;
        }
        let slot = (self.head + self.len) % EVENT_QUEUE;
        if let Some(s) = self.q.get_mut(slot) {
            *s = Some(ev);
        }
        self.len += 1;
    }

    /// The oldest event.
    pub(super) fn pop(&mut self) -> Option<Event> {
        if self.len == 0 {
            return None;
        }
        let ev = self.q.get_mut(self.head).and_then(|e| e.take());
        self.head = (self.head + 1) % EVENT_QUEUE;
        self.len -= 1;
        ev
    }
}

impl<'b, const M: usize, const R: usize, const S: usize> Array<'b, M, R, S> {
    /// Reports `ev` to the monitor (md_new_event).
    pub(super) fn emit(&mut self, ev: Event) {
        self.event_q.push(ev);
    }
}
