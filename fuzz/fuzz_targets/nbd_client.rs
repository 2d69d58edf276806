//! The NBD client's parsers of server bytes (a member's server is untrusted input): replies,
//! simple and structured, read into a read's destination whose offset and length come from the
//! input, and NBD URIs. No panic; a chunk never fills more than the request's range.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raid1_cli::nbd::client::{Target, Uri, receive_chunk};

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_at_checked(12) else {
        return;
    };
    if head[0] & 0x80 != 0 {
        if let Ok(s) = std::str::from_utf8(rest) {
            let _ = Uri::parse(s);
        }
        return;
    }
    let structured = head[0] & 1 != 0;
    let offset = u64::from_le_bytes(head[1..9].try_into().unwrap()) >> (head[9] % 64);
    let len = usize::from(u16::from_le_bytes([head[10], head[11]]));
    let mut buf = vec![0u8; len];
    let mut r = rest;
    for _ in 0..64 {
        let c = receive_chunk(&mut r, structured, |h| {
            (h % 3 != 2).then(|| {
                (h % 3 == 0).then(|| Target {
                    offset,
                    buf: &mut buf,
                })
            })
        });
        match c {
            Ok(c) => assert!(c.covered <= len as u64),
            Err(_) => break,
        }
    }
});
