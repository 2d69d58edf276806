//! A programmed bit of a flash lost for good (a cell that lost its charge), for the targets that
//! inject it (`nor_rot`, `volume_faults`).

/// Clear one programmed bit of `mem` at or after byte `at` (wrapping), the `pick`-th of that
/// byte's zero bits (modulo their count). Returns the byte's address and the bit; None when
/// the whole flash is erased.
pub fn lose_a_bit(mem: &mut [u8], at: usize, pick: u8) -> Option<(usize, u8)> {
    let n = mem.len();
    for i in 0..n {
        let addr = (at + i) % n;
        let b = &mut mem[addr];
        if *b != 0xFF {
            let zeros: Vec<u8> = (0..8).filter(|k| *b & (1 << k) == 0).collect();
            let k = zeros[usize::from(pick) % zeros.len()];
            *b |= 1 << k;
            return Some((addr, k));
        }
    }
    None
}
