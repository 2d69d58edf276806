//! The fault model of one member device (a simulated disk, an SD card), stated once.
//!
//! [`FaultyMember`] holds no data: the caller keeps the member's content and consults the
//! member before it carries out each command on a range of units (sectors or blocks). The
//! member answers whether the command succeeds and, for a write that fails part-way, how far it
//! got. It draws its random choices from the caller's [`Rng`], so the caller's seed decides
//! them.
//!
//! # The fault model
//!
//! Every command is checked in this order; the first fault that applies answers it.
//!
//! 1. **Dead** ([`Health::Dead`]: a disk that died, a card pulled out): every command fails with
//!    [`MemberError::Dead`], until the caller makes the member healthy again (a new or re-added
//!    disk, a card put back).
//! 2. **Power lost** (the power-loss countdown fired): every command fails with
//!    [`MemberError::PowerLost`] until [`FaultyMember::power_cycle`].
//! 3. **Reads**: an armed `fail_read` countdown that fires on this command, then
//!    [`Health::FlakyReads`] (one draw per command): [`MemberError::ReadFailed`], transient.
//!    Then a unit of the range with a **sticky read error** (a media error): every read over it
//!    fails with [`MemberError::MediaError`] until the unit is written or discarded (the drive
//!    remaps it).
//! 4. **Writes**: unit by unit, the power-loss countdown and then the `fail_write` countdown
//!    are ticked; the unit on which one fires is **torn** (the caller decides how: old content,
//!    new content or a mix), the units before it landed and none after it did:
//!    [`MemberError::PowerLost`] (the power stays off) or [`MemberError::WriteFailed`].
//!    Then [`Health::FlakyWrites`] (one draw per command) and **sticky write errors** (a unit
//!    of the range that cannot be written, remapped or not): [`MemberError::WriteFailed`] with
//!    nothing landed. A write that succeeds clears the sticky read errors of its units.
//!    A write of no unit (the caller's metadata outside the range it models) is subject to
//!    the same faults except the per-unit ones.
//! 5. **Discards and flushes** fail only when dead or without power; a discard clears the
//!    sticky read errors of its units like a write.
//!
//! Flaky probabilities are per mille of commands. Per-unit faults (sticky read and write
//! errors) live in caller-provided storage `S`, one byte per unit: any `[u8; N]`, `&mut [u8]`
//! or boxed slice; units beyond the storage carry none (`[u8; 0]`: no per-unit faults).

use crate::{Countdown, Rng};

/// How a member behaves as a whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Health {
    /// No fault of its own (countdowns and per-unit faults still apply).
    #[default]
    Healthy,
    /// Each read command fails with this probability (per mille).
    FlakyReads(u16),
    /// Each write command fails with this probability (per mille); discards and flushes do not.
    FlakyWrites(u16),
    /// Every command fails.
    Dead,
}

/// Why a member refused a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberError {
    /// The member is dead (or not there).
    Dead,
    /// The power was lost; nothing works until a power cycle.
    PowerLost,
    /// A transient read failure.
    ReadFailed,
    /// A sticky read error on a unit of the range (until the unit is written).
    MediaError,
    /// A write failure.
    WriteFailed,
}

/// A write that failed: `landed` units at the front of the range were written, and the next
/// one is `torn` when the failure came part-way (a countdown fired on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteFailure {
    /// Why.
    pub error: MemberError,
    /// Units written, from the start of the range.
    pub landed: u64,
    /// Whether unit `landed` is torn (the caller leaves it old, new or mixed).
    pub torn: bool,
}

impl WriteFailure {
    const fn whole(error: MemberError) -> Self {
        WriteFailure {
            error,
            landed: 0,
            torn: false,
        }
    }
}

/// Per-unit fault bits in the caller's storage.
const READ_ERROR: u8 = 1;
const WRITE_ERROR: u8 = 2;

/// The faults of one member: see the module documentation for the model.
#[derive(Debug, Clone)]
pub struct FaultyMember<S = [u8; 0]> {
    /// How it behaves as a whole.
    pub health: Health,
    /// Power loss: counts written units; the one it fires on is torn.
    pub power_loss: Countdown,
    /// A read command that fails (transient).
    pub fail_read: Countdown,
    /// A written unit that fails (torn like a power loss, but the power stays on).
    pub fail_write: Countdown,
    powered: bool,
    units: S,
    read_errors: usize,
    write_errors: usize,
}

impl Default for FaultyMember {
    fn default() -> Self {
        FaultyMember::new([])
    }
}

impl<S: AsRef<[u8]> + AsMut<[u8]>> FaultyMember<S> {
    /// A healthy, powered member; `units` holds its per-unit faults (cleared here).
    pub fn new(mut units: S) -> Self {
        units.as_mut().fill(0);
        FaultyMember {
            health: Health::Healthy,
            power_loss: Countdown::OFF,
            fail_read: Countdown::OFF,
            fail_write: Countdown::OFF,
            powered: true,
            units,
            read_errors: 0,
            write_errors: 0,
        }
    }

    /// Whether the member answers at all (neither dead nor without power).
    pub fn available(&self) -> Result<(), MemberError> {
        if self.health == Health::Dead {
            Err(MemberError::Dead)
        } else if !self.powered {
            Err(MemberError::PowerLost)
        } else {
            Ok(())
        }
    }

    /// A read of `count` units from `start`.
    pub fn read(&mut self, rng: &mut Rng, start: u64, count: u64) -> Result<(), MemberError> {
        self.available()?;
        if self.fail_read.tick() {
            return Err(MemberError::ReadFailed);
        }
        if let Health::FlakyReads(p) = self.health {
            if rng.chance(u64::from(p)) {
                return Err(MemberError::ReadFailed);
            }
        }
        if self.read_errors > 0 && self.any(start, count, READ_ERROR) {
            return Err(MemberError::MediaError);
        }
        Ok(())
    }

    /// A write of `count` units from `start`. On success every unit lands (and its sticky read
    /// error is gone); on failure see [`WriteFailure`].
    pub fn write(&mut self, rng: &mut Rng, start: u64, count: u64) -> Result<(), WriteFailure> {
        self.available().map_err(WriteFailure::whole)?;
        if self.power_loss.is_armed() || self.fail_write.is_armed() {
            for landed in 0..count {
                if self.power_loss.tick() {
                    self.powered = false;
                    return Err(WriteFailure {
                        error: MemberError::PowerLost,
                        landed,
                        torn: true,
                    });
                }
                if self.fail_write.tick() {
                    return Err(WriteFailure {
                        error: MemberError::WriteFailed,
                        landed,
                        torn: true,
                    });
                }
            }
        }
        if let Health::FlakyWrites(p) = self.health {
            if rng.chance(u64::from(p)) {
                return Err(WriteFailure::whole(MemberError::WriteFailed));
            }
        }
        if self.write_errors > 0 && self.any(start, count, WRITE_ERROR) {
            return Err(WriteFailure::whole(MemberError::WriteFailed));
        }
        self.remap(start, count);
        Ok(())
    }

    /// A discard of `count` units from `start` (it remaps them like a write).
    pub fn discard(&mut self, start: u64, count: u64) -> Result<(), MemberError> {
        self.available()?;
        self.remap(start, count);
        Ok(())
    }

    /// A cache flush.
    pub fn flush(&self) -> Result<(), MemberError> {
        self.available()
    }

    /// The power comes back (the power-loss countdown is disarmed).
    pub fn power_cycle(&mut self) {
        self.powered = true;
        self.power_loss = Countdown::OFF;
    }

    /// Whether the power is on.
    pub fn powered(&self) -> bool {
        self.powered
    }

    /// A flaky member becomes healthy; a dead one stays dead.
    pub fn heal(&mut self) {
        if matches!(self.health, Health::FlakyReads(_) | Health::FlakyWrites(_)) {
            self.health = Health::Healthy;
        }
    }

    /// Sticky read errors on `count` units from `start` (those within the storage); returns
    /// how many units newly got one.
    pub fn add_read_errors(&mut self, start: u64, count: u64) -> u64 {
        let n = self.mark(start, count, READ_ERROR);
        self.read_errors += n as usize;
        n
    }

    /// Sticky write errors on `count` units from `start` (those within the storage); returns
    /// how many units newly got one.
    pub fn add_write_errors(&mut self, start: u64, count: u64) -> u64 {
        let n = self.mark(start, count, WRITE_ERROR);
        self.write_errors += n as usize;
        n
    }

    /// Forgets every per-unit fault (the drive remapped them on its own).
    pub fn forget_unit_faults(&mut self) {
        if self.read_errors + self.write_errors > 0 {
            self.units.as_mut().fill(0);
        }
        self.read_errors = 0;
        self.write_errors = 0;
    }

    /// Units with a sticky read error.
    pub fn read_errors(&self) -> usize {
        self.read_errors
    }

    /// Units with a sticky write error.
    pub fn write_errors(&self) -> usize {
        self.write_errors
    }

    /// Whether `unit` has a sticky read error.
    pub fn unreadable(&self, unit: u64) -> bool {
        self.bits(unit) & READ_ERROR != 0
    }

    /// Whether the member misbehaves in any way it was told to (its health or a per-unit
    /// fault; armed countdowns and a lost power are not counted).
    pub fn misbehaves(&self) -> bool {
        self.health != Health::Healthy || self.read_errors + self.write_errors > 0
    }

    fn bits(&self, unit: u64) -> u8 {
        usize::try_from(unit)
            .ok()
            .and_then(|u| self.units.as_ref().get(u))
            .copied()
            .unwrap_or(0)
    }

    /// The storage's units in `[start, start + count)`.
    fn span(&mut self, start: u64, count: u64) -> &mut [u8] {
        let units = self.units.as_mut();
        let len = units.len() as u64;
        let lo = start.min(len) as usize;
        let hi = start.saturating_add(count).min(len) as usize;
        units.get_mut(lo..hi).unwrap_or(&mut [])
    }

    fn any(&mut self, start: u64, count: u64, bit: u8) -> bool {
        self.span(start, count).iter().any(|u| u & bit != 0)
    }

    fn mark(&mut self, start: u64, count: u64, bit: u8) -> u64 {
        let mut n = 0;
        for u in self.span(start, count) {
            if *u & bit == 0 {
                *u |= bit;
                n += 1;
            }
        }
        n
    }

    /// A write or discard landed: its units' sticky read errors are gone.
    fn remap(&mut self, start: u64, count: u64) {
        if self.read_errors == 0 {
            return;
        }
        let mut n = 0;
        for u in self.span(start, count) {
            if *u & READ_ERROR != 0 {
                *u &= !READ_ERROR;
                n += 1;
            }
        }
        self.read_errors -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sticky_read_error_lasts_until_the_unit_is_written() {
        let mut rng = Rng::new(1);
        let mut m = FaultyMember::new([0u8; 16]);
        assert_eq!(m.add_read_errors(4, 3), 3);
        assert_eq!(m.add_read_errors(5, 1), 0);
        assert!(m.misbehaves());
        assert_eq!(m.read(&mut rng, 0, 4), Ok(()));
        assert_eq!(m.read(&mut rng, 2, 4), Err(MemberError::MediaError));
        assert_eq!(m.read(&mut rng, 2, 4), Err(MemberError::MediaError));
        assert_eq!(m.write(&mut rng, 3, 2), Ok(()));
        assert!(!m.unreadable(4) && m.unreadable(5) && m.unreadable(6));
        assert_eq!(m.discard(6, 1), Ok(()));
        assert_eq!(m.read_errors(), 1);
        assert_eq!(m.read(&mut rng, 5, 1), Err(MemberError::MediaError));
        m.forget_unit_faults();
        assert_eq!(m.read(&mut rng, 0, 16), Ok(()));
        assert!(!m.misbehaves());
    }

    #[test]
    fn a_sticky_write_error_fails_every_write_over_it() {
        let mut rng = Rng::new(1);
        let mut m = FaultyMember::new([0u8; 8]);
        m.add_write_errors(2, 1);
        let fail = m.write(&mut rng, 0, 4).unwrap_err();
        assert_eq!(fail, WriteFailure::whole(MemberError::WriteFailed));
        assert_eq!(m.write(&mut rng, 3, 4), Ok(()));
        assert_eq!(m.read(&mut rng, 0, 8), Ok(()));
        // Units beyond the storage carry no fault.
        assert_eq!(m.add_read_errors(7, 10), 1);
        assert_eq!(m.write(&mut rng, 8, 100), Ok(()));
    }

    #[test]
    fn power_loss_tears_one_unit_and_holds_until_a_power_cycle() {
        let mut rng = Rng::new(1);
        let mut m = FaultyMember {
            power_loss: Countdown::after(5),
            ..FaultyMember::default()
        };
        assert_eq!(m.write(&mut rng, 0, 3), Ok(()));
        let fail = m.write(&mut rng, 10, 4).unwrap_err();
        assert_eq!(
            fail,
            WriteFailure {
                error: MemberError::PowerLost,
                landed: 2,
                torn: true
            }
        );
        assert!(!m.powered());
        assert_eq!(m.read(&mut rng, 0, 1), Err(MemberError::PowerLost));
        assert_eq!(m.flush(), Err(MemberError::PowerLost));
        m.power_cycle();
        assert_eq!(m.read(&mut rng, 0, 1), Ok(()));
        assert!(!m.power_loss.is_armed());
    }

    #[test]
    fn countdowns_fail_one_command_and_the_power_stays() {
        let mut rng = Rng::new(1);
        let mut m = FaultyMember {
            fail_read: Countdown::after(1),
            fail_write: Countdown::after(0),
            ..FaultyMember::default()
        };
        assert_eq!(m.read(&mut rng, 0, 1), Ok(()));
        assert_eq!(m.read(&mut rng, 0, 1), Err(MemberError::ReadFailed));
        assert_eq!(m.read(&mut rng, 0, 1), Ok(()));
        let fail = m.write(&mut rng, 0, 2).unwrap_err();
        assert_eq!((fail.landed, fail.torn), (0, true));
        assert!(m.powered());
        assert_eq!(m.write(&mut rng, 0, 2), Ok(()));
    }

    #[test]
    fn health_flaky_heals_dead_stays() {
        let mut rng = Rng::new(7);
        let mut m = FaultyMember {
            health: Health::FlakyReads(1000),
            ..FaultyMember::default()
        };
        assert_eq!(m.read(&mut rng, 0, 1), Err(MemberError::ReadFailed));
        assert_eq!(m.write(&mut rng, 0, 1), Ok(()));
        m.health = Health::FlakyWrites(1000);
        assert_eq!(m.read(&mut rng, 0, 1), Ok(()));
        assert!(m.write(&mut rng, 0, 1).is_err());
        assert_eq!(m.discard(0, 1), Ok(()));
        assert_eq!(m.flush(), Ok(()));
        m.heal();
        assert_eq!(m.health, Health::Healthy);
        m.health = Health::Dead;
        m.heal();
        assert_eq!(m.flush(), Err(MemberError::Dead));
        assert_eq!(m.discard(0, 1), Err(MemberError::Dead));
        assert_eq!(m.available(), Err(MemberError::Dead));
    }
}
