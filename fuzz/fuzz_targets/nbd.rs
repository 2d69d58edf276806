//! The NBD server's parsers of client bytes, fed a whole client session: the handshake flags,
//! options (with NBD_OPT_INFO / NBD_OPT_GO data), then transmission request headers checked
//! against an export whose limits come from the input too. No panic, and every accepted request
//! lies inside the export and within the payload limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raid1_cli::nbd::proto::*;

const MAX_OPTION: u32 = 4096;

fuzz_target!(|data: &[u8]| {
    // Export limits from the first 12 bytes: size, max payload, read-only and FUA bits.
    let Some((head, mut rest)) = data.split_at_checked(12) else {
        return;
    };
    let size = u64::from_le_bytes(head[..8].try_into().unwrap()) >> (head[11] % 64);
    let max_payload = u32::from_le_bytes(head[8..12].try_into().unwrap()) >> 8;
    let limits = ExportLimits {
        size,
        max_payload,
        read_only: head[11] & 1 != 0,
        transmission_flags: u16::from(head[10]) << 8 | u16::from(head[11]),
    };

    match parse_client_flags(rest) {
        Ok(Some(_)) => rest = &rest[4..],
        Ok(None) | Err(_) => return,
    }
    // Options until one is malformed or the input says "transmission" (option 1 = EXPORT_NAME).
    loop {
        match parse_option_header(rest, MAX_OPTION) {
            Ok(Some(h)) => {
                assert!(h.length <= MAX_OPTION);
                let end = (OPTION_HEADER_LEN + h.length as usize).min(rest.len());
                let payload = &rest[OPTION_HEADER_LEN..end];
                if let Some(info) = parse_info_request(payload) {
                    assert!(info.name.len() + 6 + 2 * info.requests.len() == payload.len());
                }
                rest = &rest[end..];
                if h.option == 1 {
                    break;
                }
            }
            Ok(None) => return,
            Err(_) => break,
        }
    }
    while let Ok(Some(h)) = parse_request_header(rest) {
        rest = &rest[REQUEST_HEADER_LEN..];
        match check_request(&h, &limits) {
            Ok(Command::Read { offset, length }) => {
                assert!(length <= limits.max_payload);
                assert!(
                    offset
                        .checked_add(u64::from(length))
                        .is_some_and(|e| e <= limits.size)
                );
            }
            Ok(Command::Write { offset, length, .. }) => {
                assert!(!limits.read_only);
                assert!(length <= limits.max_payload);
                assert!(
                    offset
                        .checked_add(u64::from(length))
                        .is_some_and(|e| e <= limits.size)
                );
                rest = &rest[(length as usize).min(rest.len())..];
            }
            Ok(
                Command::Trim { offset, length, .. } | Command::WriteZeroes { offset, length, .. },
            ) => {
                assert!(
                    offset
                        .checked_add(u64::from(length))
                        .is_some_and(|e| e <= limits.size)
                );
            }
            Ok(Command::Flush | Command::Disconnect) => {}
            Err(refusal) => {
                rest = &rest[(refusal.discard as usize).min(rest.len())..];
            }
        }
    }
});
