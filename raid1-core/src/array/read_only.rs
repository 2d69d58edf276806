//! Read-only: md's `ro` state (`mdadm --readonly` / `--readwrite`, md_set_readonly and the
//! `ro` checks of md.c and raid1.c).
//!
//! Asking for read-only refuses every later write and discard at once
//! ([`SubmitError::ReadOnly`]; one already waiting for the freeze ends with
//! [`Outcome::ReadOnly`]), stops a running sync at its checkpoint and starts no other,
//! and marks the array clean as a clean stop does (flush, then the clean superblock round and
//! the bits of idle chunks). Once that is on disk the array *is* read-only: no superblock,
//! bitmap, sync or data write goes to any member, a read error is served from another mirror
//! without writing the good data back (md's `IO_BLOCKED` instead of fix_read_error), and what
//! is asked for meanwhile (a failure record, say) waits until read-write. Members cannot be
//! added or removed and `raid_disks` cannot change ([`ReconfigError::ReadOnly`]): the change
//! would reach no superblock. No bitmap bit is cleared either (`events_cleared` could not move
//! with it, and a member re-added later would skip what it missed). An array assembled
//! with `Config::read_only` is read-only from the start and writes nothing at all.
//!
//! Without the `read-only` feature there is no [`Array::set_read_only`] and a configuration
//! asking for a read-only start is refused ([`crate::ConfigError::ReadOnly`]): the array is
//! always read-write.

use super::*;

/// Read-only asked for, and in effect.
#[derive(Clone, Copy, Debug)]
pub(super) struct ReadOnly {
    /// Writes and discards are refused; no sync starts.
    pub(super) asked: bool,
    /// Clean on disk and nothing is written to any member.
    pub(super) on: bool,
}

impl ReadOnly {
    /// Read-only asked for (never without the `read-only` feature).
    pub(super) fn asked(&self) -> bool {
        cfg!(feature = "read-only") && self.asked
    }

    /// Read-only in effect (never without the `read-only` feature).
    pub(super) fn on(&self) -> bool {
        cfg!(feature = "read-only") && self.on
    }
}

impl<'b, const M: usize, const R: usize, const S: usize> Array<'b, M, R, S> {
    /// md's `--readonly` (`on`) and `--readwrite`. Read-only needs the array quiesced (freeze
    /// and drain first: no write may be in flight, as md refuses while the device is open for
    /// writing); it is in effect once [`ArrayStatus::read_only`] says so (the clean mark is on
    /// disk), and the array may be unfrozen at once (reads flow, writes are refused).
    /// Read-write is at once: what waited (superblock rounds, a pending resync) resumes.
    #[cfg(feature = "read-only")]
    pub fn set_read_only(&mut self, now: Instant, on: bool) -> Result<(), ReconfigError> {
        self.tick(now);
        if on {
            if self.ro.asked {
                return Ok(());
            }
            if !self.is_quiesced() {
                return Err(ReconfigError::NotQuiesced);
            }
            self.ro.asked = true;
            // Writes that wait for the freeze to end never start.
            let mut at = 0;
            while let Some(ri) = self.live.next_from(at) {
                at = ri + 1;
                if self
                    .reqs
                    .get(ri)
                    .is_some_and(|r| r.phase == Phase::Wait && r.is_write())
                {
                    self.finish(ri, Outcome::ReadOnly);
                }
            }
            self.interrupt_sync();
            // Marked clean as at a clean stop (md's __md_stop_writes).
            self.request_clean(now);
        } else {
            self.ro = ReadOnly {
                asked: false,
                on: false,
            };
            self.pump();
        }
        Ok(())
    }

    /// Read-only asked for and everything it waits for done: it takes effect.
    pub(super) fn settle_read_only(&mut self) {
        if self.ro.asked()
            && !self.ro.on()
            && !self.dirty
            && self.sync.action.is_none()
            && !self.metadata_pending()
        {
            self.ro.on = true;
        }
    }
}
