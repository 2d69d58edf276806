//! Timers: every deadline the engine keeps, in one table, and the one [`Array::poll_timeout`]
//! that reports the earliest. The frontend owns the clock; the engine only compares instants.
//!
//! | deadline | md | armed by | fires |
//! |---|---|---|---|
//! | `safe_mode` | `safemode_timer` (md_safemode_timeout) | a write ending (`safe_mode_delay_ns` later, md_write_end); `request_clean` (now) | the flush and clean mark in `maybe_start_clean` (array/safe_mode.rs); once due, reported only until a pump has seen it (`safe_mode_unserved`): a due deadline the pump could not act on (writes still out, a flush running) waits for the input that ends that, which pumps again |
//! | `bitmap_daemon` | the bitmap's `daemon_sleep` (md_bitmap_daemon_work) | a write while none is armed (md_bitmap_startwrite), the end of a sync, the daemon itself; brought forward by a shorter period (`set_bitmap_daemon`, md's `bitmap/time_base`) | `bitmap_daemon` (array/bitmap.rs) |
//! | `sync_next` | sync speed throttling in md_do_sync (`speed_min` / `speed_max`) | a sync window started under `set_sync_rate` | the next window in `pump_sync` (array/sync.rs); still reported, as due, after an input that passed it without a pump (`sync_unserved`) |

use super::*;

/// The deadlines.
#[derive(Debug)]
pub(super) struct Timers {
    /// Safe mode: when the array may be marked clean (or a clean stop run).
    pub(super) safe_mode: Option<Instant>,
    /// When the bitmap daemon runs next.
    pub(super) bitmap_daemon: Option<Instant>,
    /// Sync rate pacing: no new sync window before this. Reported only while a sync runs and
    /// while it is in the future, or while `sync_unserved`.
    pub(super) sync_next: Instant,
    /// The clock passed `sync_next` in an input that ended without a pump (a refused request,
    /// an unknown tag): the window it allows is due and not started, so the deadline stays
    /// reported (as due) until a pump runs. Without it no deadline was left to wake the
    /// frontend, and the sync waited for whatever input came next.
    pub(super) sync_unserved: bool,
    /// The clock passed `safe_mode` in an input that ended without a pump: reported (as due)
    /// until a pump runs. Without it a due deadline stayed reported while the pump could not
    /// act on it, and a frontend that sleeps until the next deadline never slept: the array
    /// thread spun while a write was out on a slow member (found by the simulator as a clean
    /// stop that did not settle, the clock creeping forward one step at a time).
    pub(super) safe_mode_unserved: bool,
}

impl Timers {
    /// The state of a new array.
    pub(super) const NEW: Self = Timers {
        safe_mode: None,
        bitmap_daemon: None,
        sync_next: Instant(0),
        sync_unserved: false,
        safe_mode_unserved: false,
    };

    /// The earliest deadline, `now` being the engine's time and `sync_running` whether a sync
    /// job runs.
    pub(super) fn poll_timeout(&self, now: Instant, sync_running: bool) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut take = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        if self
            .safe_mode
            .is_some_and(|t| t > now || self.safe_mode_unserved)
        {
            take(self.safe_mode);
        }
        take(self.bitmap_daemon);
        if sync_running && (self.sync_next > now || self.sync_unserved) {
            take(Some(self.sync_next));
        }
        t
    }

    /// Whether the bitmap daemon is due at `now`; if so the deadline is consumed.
    pub(super) fn take_bitmap_daemon(&mut self, now: Instant) -> bool {
        if self.bitmap_daemon.is_some_and(|t| t <= now) {
            self.bitmap_daemon = None;
            return true;
        }
        false
    }
}

impl<'b, const M: usize, const R: usize, const S: usize> Array<'b, M, R, S> {
    /// Takes the time of an input: the engine's clock never goes backwards.
    pub(super) fn tick(&mut self, now: Instant) {
        if now > self.now {
            if self
                .timers
                .safe_mode
                .is_some_and(|t| self.now < t && t <= now)
            {
                self.timers.safe_mode_unserved = true;
            }
            if self.sync.action.is_some()
                && self.now < self.timers.sync_next
                && self.timers.sync_next <= now
            {
                self.timers.sync_unserved = true;
            }
            self.now = now;
        }
    }

    /// Arms the bitmap daemon one period from now (one copy of the saturating sum for every
    /// place that arms it).
    pub(super) fn arm_bitmap_daemon(&mut self) {
        self.timers.bitmap_daemon = Some(self.now.after(self.cfg.bitmap_daemon_ns));
    }
}
