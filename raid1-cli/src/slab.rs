//! A table of fixed size with a free list: the engine's per-request bookkeeping without a map
//! on the hot path. A key is a slot number, reused once removed. [`Slab::insert`] never grows the
//! table, so a full table is an `Err` that the caller turns into back-pressure;
//! [`Slab::insert_or_grow`] grows it to its working size once.

/// `T`s in numbered slots.
pub(crate) struct Slab<T> {
    slots: Vec<Option<T>>,
    /// Free slot numbers, the lowest last (so the lowest is reused first).
    free: Vec<u32>,
}

impl<T> Slab<T> {
    /// A table of `capacity` slots, all free (allocated once, here).
    pub(crate) fn with_capacity(capacity: u32) -> Slab<T> {
        Slab {
            slots: (0..capacity).map(|_| None).collect(),
            free: (0..capacity).rev().collect(),
        }
    }

    /// Puts `value` in a free slot and returns its number; `value` back when every slot is
    /// taken.
    pub(crate) fn insert(&mut self, value: T) -> Result<u32, T> {
        let Some(k) = self.free.pop() else {
            return Err(value);
        };
        if let Some(slot) = self.slots.get_mut(k as usize) {
            *slot = Some(value);
        }
        Ok(k)
    }

    /// Puts `value` in a free slot, adding one when every slot is taken (the table then keeps
    /// that size: it grows to its working size once and never shrinks).
    pub(crate) fn insert_or_grow(&mut self, value: T) -> u32 {
        match self.insert(value) {
            Ok(k) => k,
            Err(value) => {
                self.slots.push(Some(value));
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// Slots taken.
    pub(crate) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Takes the value out of slot `k` (`None` if it is free or out of range).
    pub(crate) fn remove(&mut self, k: u64) -> Option<T> {
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
        assert_eq!(s.insert_or_grow('e'), 1);
        assert_eq!(s.insert_or_grow('f'), 2, "a full table grows by one slot");
        assert_eq!(s.len(), 3);
        assert_eq!(s.remove(2), Some('f'));
        assert_eq!(s.insert('g'), Ok(2), "and keeps it");
    }
}
