//! The bitmap superblock and bit array on arbitrary bytes: no panic; header round trip is exact;
//! bit operations agree with the dirty count.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raid1_superblock::bitmap::BITMAP_SB_LEN;
use raid1_superblock::*;

fuzz_target!(|data: &[u8]| {
    let strict = BitmapSuperblock::parse(data);
    let Ok(h) = BitmapSuperblock::parse_for_examine(data) else {
        assert!(strict.is_err());
        return;
    };
    if let Ok(s) = &strict {
        assert_eq!(s, &h);
        assert!(h.validate().is_ok());
    }
    let mut out = [0u8; BITMAP_SB_LEN];
    h.serialize(&mut out).expect("256-byte buffer");
    assert_eq!(&out[..], &data[..BITMAP_SB_LEN]);
    let _ = (
        h.chunks(),
        h.bits_len(),
        h.chunk_sectors(),
        h.chunk_of(u64::MAX),
        h.chunk_of(12345),
    );
    let _ = h.check_uuid(&Uuid([0; 16]));

    let bits = &data[BITMAP_SB_LEN..];
    // Use the header's chunk count, and a count derived from the bytes, so both paths run.
    for chunks in [
        h.chunks(),
        bits.len() as u64 * 8 - (h.events % 8).min(bits.len() as u64 * 8),
    ] {
        let Ok(view) = BitmapBits::new(bits, chunks) else {
            continue;
        };
        let dirty = view.count_dirty();
        assert_eq!(view.dirty().count() as u64, dirty);
        assert!(view.get(chunks).is_err());
        let mut copy = bits.to_vec();
        let mut m = BitmapBitsMut::new(&mut copy, chunks).expect("same length");
        if chunks > 0 {
            let k = h.events_cleared % chunks;
            let was = m.get(k).expect("in range");
            m.set(k).expect("in range");
            assert_eq!(m.count_dirty(), dirty + u64::from(!was));
            m.clear(k).expect("in range");
            assert_eq!(m.count_dirty(), dirty - u64::from(was));
        }
        m.fill(true);
        assert_eq!(m.count_dirty(), chunks);
    }
});
