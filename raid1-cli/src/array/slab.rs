//! A table of fixed size with a free list: the engine's per-request bookkeeping without a map
//! on the hot path. A key is a slot number, reused once removed; the table never grows, so a
//! full table is a `None` from [`Slab::insert`] that the caller turns into back-pressure.

/// `T`s in numbered slots.
pub(super) struct Slab<T> {
    slots: Vec<Option<T>>,
    /// Free slot numbers, the lowest last (so the lowest is reused first).
    free: Vec<u32>,
}

impl<T> Slab<T> {
    /// A table of `capacity` slots, all free (allocated once, here).
    pub(super) fn with_capacity(capacity: u32) -> Slab<T> {
        Slab {
            slots: (0..capacity).map(|_| None).collect(),
            free: (0..capacity).rev().collect(),
        }
    }

    /// Puts `value` in a free slot and returns its number; `None` (and `value` dropped) when
    /// every slot is taken.
    pub(super) fn insert(&mut self, value: T) -> Result<u32, T> {
        let Some(k) = self.free.pop() else {
            return Err(value);
        };
        if let Some(slot) = self.slots.get_mut(k as usize) {
            *slot = Some(value);
        }
        Ok(k)
    }

    /// Takes the value out of slot `k` (`None` if it is free or out of range).
    pub(super) fn remove(&mut self, k: u64) -> Option<T> {
        let value = self.slots.get_mut(usize::try_from(k).ok()?)?.take()?;
        self.free.push(k as u32);
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::Slab;

    #[test]
    fn slots_are_reused_and_a_full_table_refuses() {
        let mut s = Slab::with_capacity(2);
        assert_eq!(s.insert('a'), Ok(0));
        assert_eq!(s.insert('b'), Ok(1));
        assert_eq!(s.insert('c'), Err('c'));
        assert_eq!(s.remove(0), Some('a'));
        assert_eq!(s.remove(0), None, "a slot is emptied once");
        assert_eq!(s.remove(7), None);
        assert_eq!(s.insert('d'), Ok(0));
        assert_eq!(s.remove(1), Some('b'));
    }
}
