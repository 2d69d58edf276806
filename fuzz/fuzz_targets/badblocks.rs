//! The bad-block log on arbitrary bytes: no panic; a log that validates is rewritten
//! identically (entries, then 0xFF).
#![no_main]

use libfuzzer_sys::fuzz_target;
use raid1_superblock::badblocks::{self, BB_ENTRY_LEN};
use raid1_superblock::*;

fuzz_target!(|data: &[u8]| {
    let raw = BadBlockLog::new_unchecked(data);
    let n = raw.len();
    assert!(n <= raw.capacity());
    let _ = raw.overlaps(1000, 8);
    for bb in raw.iter() {
        let _ = (
            bb.encode(),
            bb.end(),
            bb.start_sector(63),
            bb.len_sectors(200),
        );
    }
    let Ok(log) = BadBlockLog::parse(data) else {
        return;
    };
    let entries: Vec<BadBlock> = log.iter().collect();
    assert!(badblocks::validate(&entries).is_ok());
    let mut out = vec![0u8; data.len()];
    let written = write_bad_blocks(&entries, &mut out).expect("a parsed log fits its own size");
    assert_eq!(written, entries.len() * BB_ENTRY_LEN);
    assert_eq!(&out[..written], &data[..written]);
    assert!(out[written..].iter().all(|b| *b == 0xFF));
    let again: Vec<BadBlock> = BadBlockLog::parse(&out)
        .expect("rewritten log parses")
        .iter()
        .collect();
    assert_eq!(again, entries);
});
