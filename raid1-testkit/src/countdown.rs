//! A countdown of operations, for faults armed "on the n-th operation from now": a power loss,
//! one failed read, one failed program.

/// Counts down operations and says when the armed one comes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Countdown(Option<u32>);

impl Countdown {
    /// Never fires.
    pub const OFF: Countdown = Countdown(None);

    /// Fires on the operation after `ops` more operations (0: the very next one).
    pub const fn after(ops: u32) -> Self {
        Countdown(Some(ops))
    }

    /// Whether it will fire (it disarms itself when it does).
    pub const fn is_armed(&self) -> bool {
        self.0.is_some()
    }

    /// Count one operation: true when this is the one that fires.
    pub fn tick(&mut self) -> bool {
        match self.0 {
            Some(0) => {
                self.0 = None;
                true
            }
            Some(n) => {
                self.0 = Some(n - 1);
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Countdown;

    #[test]
    fn fires_once_on_the_armed_operation() {
        let mut c = Countdown::after(2);
        assert!(c.is_armed());
        assert!(!c.tick());
        assert!(!c.tick());
        assert!(c.tick());
        assert!(!c.is_armed());
        assert!(!c.tick());
        let mut off = Countdown::OFF;
        assert!(!off.tick());
        assert_eq!(Countdown::default(), Countdown::OFF);
    }
}
