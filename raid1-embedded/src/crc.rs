//! CRC-32C (Castagnoli), nibble-table variant: 64 bytes of table, small enough for the
//! footprint budget, fast enough for 512-byte blocks.

const POLY: u32 = 0x82F6_3B78; // reflected Castagnoli polynomial

const fn make_table() -> [u32; 16] {
    let mut table = [0u32; 16];
    let mut i = 0;
    while i < 16 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 4 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static TABLE: [u32; 16] = make_table();

/// Continue a CRC-32C over `bytes`, starting from the running value `crc`
/// (start with 0; the pre- and post-inversion are handled here).
pub fn crc32c_update(crc: u32, bytes: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in bytes {
        c ^= u32::from(b);
        c = (c >> 4) ^ TABLE[(c & 0xF) as usize];
        c = (c >> 4) ^ TABLE[(c & 0xF) as usize];
    }
    !c
}

/// CRC-32C of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c_update(0, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // The standard check value of CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c_update(crc32c(b"1234"), b"56789"), 0xE306_9283);
    }
}
