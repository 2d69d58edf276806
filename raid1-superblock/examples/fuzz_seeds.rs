//! Writes seed inputs for the fuzz targets, built with this crate's own serialisers:
//! `cargo run -p raid1-superblock --example fuzz_seeds -- CORPUS_ROOT` fills
//! `CORPUS_ROOT/{superblock,roundtrip,bitmap,badblocks}/seed-*`.

use std::path::Path;

use raid1_superblock::bitmap::BITMAP_SB_LEN;
use raid1_superblock::*;

fn save(root: &Path, targets: &[&str], name: &str, bytes: &[u8]) {
    for t in targets {
        let dir = root.join(t);
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
    }
}

fn main() {
    let root = std::env::args()
        .nth(1)
        .expect("usage: fuzz_seeds CORPUS_ROOT");
    let root = Path::new(&root);
    let sb_targets = ["superblock", "roundtrip"];

    for minor in MinorVersion::ALL {
        for (dev, bitmap) in [
            (131_072u64, false),
            (131_072, true),
            (2_097_152, true),
            (1 << 31, false),
        ] {
            let mut sb: Superblock = Superblock::new();
            CreateGeometry::mdadm_default(minor, dev, bitmap)
                .expect("geometry")
                .apply_to(&mut sb);
            sb.set_uuid = Uuid([0x5a; 16]);
            sb.set_name = SetName::build(Some(b"seedhost"), b"0");
            sb.raid_disks = 2;
            sb.events = dev;
            sb.set_max_dev(128).expect("max_dev");
            sb.set_role(0, DevRole::Active(0)).expect("role");
            sb.set_role(1, DevRole::Active(1)).expect("role");
            let mut out = vec![0xFFu8; SB_MAX_LEN];
            sb.serialize(&mut out).expect("serialize");
            save(
                root,
                &sb_targets,
                &format!("sb-{minor}-{dev}-{bitmap}"),
                &out,
            );
        }
    }
    // Odd max_dev, every role kind, flags, recovery, bad blocks.
    let mut sb: Superblock = Superblock::new();
    CreateGeometry::mdadm_default(MinorVersion::V1_2, 131_072, false)
        .expect("geometry")
        .apply_to(&mut sb);
    sb.feature_map = FeatureMap::RECOVERY_OFFSET
        | FeatureMap::REPLACEMENT
        | FeatureMap::BAD_BLOCKS
        | FeatureMap::RECOVERY_BITMAP;
    sb.recovery_offset = 4096;
    sb.devflags = DevFlags::WRITE_MOSTLY | DevFlags::FAILFAST;
    sb.resync_offset = 0;
    sb.set_max_dev(7).expect("max_dev");
    for (i, r) in [
        DevRole::Active(0),
        DevRole::Faulty,
        DevRole::Spare,
        DevRole::Journal,
        DevRole::Active(1),
        DevRole::Active(1),
        DevRole::Reserved(0xFF01),
    ]
    .into_iter()
    .enumerate()
    {
        sb.set_role(i as u32, r).expect("role");
    }
    let mut out = vec![0u8; 512];
    let n = sb.serialize(&mut out).expect("serialize");
    save(root, &sb_targets, "sb-odd-roles", &out[..n]);

    // Bitmaps: mdadm's all-dirty initial map and a sparse one.
    for (chunk, sync, pattern) in [
        (64u32 << 20, 129_024u64, 0xFFu8),
        (1 << 20, 129_024, 0x21),
        (4096, 8184, 0x80),
    ] {
        let mut h = BitmapSuperblock::new(Uuid([0x5a; 16]), sync);
        h.chunksize = chunk;
        let mut region = vec![pattern; BITMAP_SB_LEN + h.bits_len() as usize];
        h.serialize(&mut region).expect("serialize");
        save(
            root,
            &["bitmap"],
            &format!("bitmap-{chunk}-{sync}"),
            &region,
        );
    }
    // Bad-block logs: empty, a few entries, full.
    let mut log = vec![0u8; 4096];
    write_bad_blocks(&[], &mut log).expect("empty");
    save(root, &["badblocks"], "bbl-empty", &log);
    write_bad_blocks(
        &[
            BadBlock {
                start: 1000,
                len: 8,
            },
            BadBlock {
                start: 123_456,
                len: 512,
            },
        ],
        &mut log,
    )
    .expect("two");
    save(root, &["badblocks"], "bbl-two", &log);
    let full: Vec<BadBlock> = (0..512)
        .map(|i| BadBlock {
            start: i * 1000,
            len: 1 + (i % 512) as u16,
        })
        .collect();
    write_bad_blocks(&full, &mut log).expect("full");
    save(root, &["badblocks"], "bbl-full", &log);
}
