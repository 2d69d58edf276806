//! Sets of request slots, so that the hot path visits the requests that can move instead of
//! scanning the whole table (md keeps no such table: a bio carries its r1bio, and raid1d walks
//! lists of the r1bios that need it; these sets are that list, as bits).
//!
//! Iteration is in slot order, the order a full scan visits them, so using a set instead of a
//! scan changes which slots are visited, never the order in which they move.

/// The most request slots an array can have (`R`); [`Array::blank`](super::Array) refuses more.
pub(super) const MAX_SLOTS: usize = 256;

/// The machine's word: 64-bit words cost twice the code of 32-bit ones on a microcontroller.
type Word = usize;

/// Bits in a [`Word`].
const BITS: usize = Word::BITS as usize;

const WORDS: usize = MAX_SLOTS / BITS;

/// A set of slot indices below [`MAX_SLOTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SlotSet([Word; WORDS]);

impl SlotSet {
    pub(super) const EMPTY: SlotSet = SlotSet([0; WORDS]);

    pub(super) fn insert(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / BITS) {
            *w |= 1 << (i % BITS);
        }
    }

    pub(super) fn remove(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / BITS) {
            *w &= !(1 << (i % BITS));
        }
    }

    pub(super) fn contains(&self, i: usize) -> bool {
        self.0
            .get(i / BITS)
            .is_some_and(|w| w & (1 << (i % BITS)) != 0)
    }

    /// The smallest member at or above `from`.
    pub(super) fn next_from(&self, from: usize) -> Option<usize> {
        let mut wi = from / BITS;
        let mut word = self.0.get(wi)? & (Word::MAX << (from % BITS));
        loop {
            if word != 0 {
                return Some(wi * BITS + word.trailing_zeros() as usize);
            }
            wi += 1;
            word = *self.0.get(wi)?;
        }
    }

    /// The smallest index below `limit` that is not a member.
    pub(super) fn first_absent(&self, limit: usize) -> Option<usize> {
        for (wi, w) in self.0.iter().enumerate() {
            if *w != Word::MAX {
                let i = wi * BITS + w.trailing_ones() as usize;
                return (i < limit).then_some(i);
            }
        }
        None
    }

    pub(super) fn len(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterates_in_slot_order_across_words() {
        let mut s = SlotSet::EMPTY;
        for i in [200, 3, 64, 63, 255, 0] {
            s.insert(i);
        }
        let mut seen = [0usize; 8];
        let mut n = 0;
        let mut at = 0;
        while let Some(i) = s.next_from(at) {
            seen[n] = i;
            n += 1;
            at = i + 1;
        }
        assert_eq!(&seen[..n], &[0, 3, 63, 64, 200, 255]);
        assert_eq!(s.len(), 6);
        s.remove(63);
        assert!(!s.contains(63) && s.contains(64));
        assert_eq!(s.next_from(4), Some(64));
        assert_eq!(s.next_from(256), None);
        s.insert(MAX_SLOTS); // out of range: ignored
        assert_eq!(s.len(), 5);
    }

    #[test]
    fn first_absent_respects_the_limit() {
        let mut s = SlotSet::EMPTY;
        assert_eq!(s.first_absent(8), Some(0));
        for i in 0..8 {
            s.insert(i);
        }
        assert_eq!(s.first_absent(8), None);
        assert_eq!(s.first_absent(9), Some(8));
        for i in 0..MAX_SLOTS {
            s.insert(i);
        }
        assert_eq!(s.first_absent(MAX_SLOTS), None);
    }
}
