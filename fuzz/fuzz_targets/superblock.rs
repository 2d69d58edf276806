//! Every superblock parser and accessor on arbitrary bytes: no panic, and whatever parses
//! can be inspected and serialised.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raid1_superblock::*;

fn exercise<const R: usize>(data: &[u8], opts: &ParseOptions) {
    match Superblock::<R>::parse_with(data, opts) {
        Ok(sb) => {
            let status = sb
                .checksum_status()
                .expect("max_dev was validated by parse");
            if opts.verify_checksum {
                assert!(status.is_correct());
            }
            let dev = u64::from_le_bytes(
                data.get(..8)
                    .and_then(|b| b.try_into().ok())
                    .unwrap_or([0; 8]),
            );
            let _ = sb.check_placement(dev);
            let _ = sb.check_placement(sb.super_offset.wrapping_add(dev % 100_000));
            let _ = (
                sb.this_role(),
                sb.bitmap_sector(),
                sb.bblog_sector(),
                sb.minor_version(),
                sb.is_clean(),
            );
            let _ = (sb.ppl_offset(), sb.ppl_size(), sb.padded_len());
            let _ = sb.devices_in_slot(0);
            let _ = sb.roles().count();
            let _ = sb.check_pads();
            let _ = sb.check_consistency();
            let _ = format!(
                "{} {} {} {:?}",
                sb.set_uuid,
                sb.set_name,
                sb.this_role(),
                sb.set_name.split()
            );
            let mut out = [0u8; SB_MAX_LEN];
            let n = sb
                .serialize_padded(&mut out)
                .expect("parsed superblocks serialise");
            assert_eq!(n, sb.padded_len());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = superblock::checksum(data);
    for opts in [ParseOptions::STRICT, ParseOptions::EXAMINE] {
        exercise::<MAX_DEV>(data, &opts);
        exercise::<8>(data, &opts);
        exercise::<0>(data, &opts);
    }
});
