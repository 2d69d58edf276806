//! `raid1 zero-superblock`: removes md superblocks from members, as `mdadm --zero-superblock`.
//!
//! mdadm 4.2 overwrites the superblock it finds with zeros: for metadata 1.x the first 512
//! bytes at the superblock location (the bitmap and the bad-block log stay as they were), for
//! 0.90 the 4 KiB superblock. This verb does the same for every md superblock on the device
//! (1.0, 1.1, 1.2 and 0.90 — a device can hold several; mdadm removes the newest per call).
//!
//! A superblock counts as present when its block has the md magic, major version 1 and a
//! `super_offset` naming its own location (mdadm's rule; the checksum is not required). Without
//! `--force`, a device with no superblock is an error naming it. With `--force`, such a device
//! gets the three 1.x locations zeroed anyway (512 bytes at sector 0, sector 8 and the 1.0
//! location near the end), which also clears a damaged superblock mdadm would not recognise.
//!
//! Block devices are opened `O_EXCL` (refused while in use, e.g. by a running array) and image
//! files are locked. Every device is checked before any is written.

use std::path::PathBuf;

use crate::member::signatures::{self, Signature};
use crate::member::{self, Access, Device};

/// Arguments of `raid1 zero-superblock`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = ZERO_HELP)]
pub struct ZeroArgs {
    /// Zero the 1.x superblock locations even on a device where no superblock is recognised.
    #[arg(short, long)]
    pub force: bool,
    /// Member devices or image files.
    #[arg(required = true, value_name = "DEV")]
    pub devices: Vec<PathBuf>,
}

const ZERO_HELP: &str = "\
Overwrites md superblocks (1.0, 1.1, 1.2, 0.90) with zeros, as mdadm --zero-superblock: the
512-byte 1.x superblock (bitmap and bad-block log are left as they are) or the 4 KiB 0.90 one.
All devices are checked first; if one is refused, nothing is written.

Exit status:
  0  every device's superblocks were zeroed (and synced)
  2  error: a device has no md superblock (without --force), is in use, or cannot be
     read or written; each is named on standard error";

/// What will be zeroed on one device: (byte offset, length, description).
type Zeroing = Vec<(u64, u64, String)>;

fn plan(dev: &Device, force: bool) -> Result<Zeroing, String> {
    let found = signatures::md_superblocks(dev).map_err(|e| format!("cannot read: {e}"))?;
    let mut out: Zeroing = found
        .iter()
        .map(|f| match &f.signature {
            Signature::Md090 => (f.offset, 4096, "md 0.90 superblock".to_string()),
            other => (
                f.offset,
                512,
                format!("{other} at sector {}", f.offset / 512),
            ),
        })
        .collect();
    if out.is_empty() {
        let Some(v10) = member::md1_sector(0, dev.sectors()) else {
            return Err(format!(
                "too small for md metadata ({} sectors; md needs at least {})",
                dev.sectors(),
                raid1_superblock::geometry::MIN_DEVICE_SECTORS
            ));
        };
        if !force {
            return Err(format!(
                "no md superblock found (looked for 1.0 at sector {v10}, 1.1 at sector 0, 1.2 \
                 at sector 8, and 0.90); use --force to zero the 1.x locations anyway"
            ));
        }
        let mut sectors = vec![0, 8, v10];
        sectors.dedup();
        for s in sectors {
            out.push((
                s * 512,
                512,
                format!("1.x superblock location at sector {s}"),
            ));
        }
    }
    Ok(out)
}

/// Runs `raid1 zero-superblock`; returns the exit status (0 or 2).
pub fn run_zero_superblock(args: &ZeroArgs) -> i32 {
    let mut ready = Vec::new();
    let mut failed = false;
    for path in &args.devices {
        let dev = match Device::open(path, Access::Exclusive) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("raid1: {}: cannot open: {e}", path.display());
                failed = true;
                continue;
            }
        };
        match plan(&dev, args.force) {
            Ok(z) => ready.push((dev, z)),
            Err(msg) => {
                eprintln!("raid1: {}: {msg}", path.display());
                failed = true;
            }
        }
    }
    if failed {
        eprintln!("raid1: zero-superblock aborted: nothing was written");
        return crate::verbs::create::EXIT_ERROR;
    }
    let mut status = crate::verbs::create::EXIT_OK;
    for (dev, zeroing) in &ready {
        let result = zeroing
            .iter()
            .try_for_each(|(offset, len, _)| dev.write_all_at(*offset, &vec![0u8; *len as usize]))
            .and_then(|()| dev.sync());
        match result {
            Ok(()) => {
                for (_, _, what) in zeroing {
                    outln!("raid1: {}: zeroed {what}", dev.path().display());
                }
            }
            Err(e) => {
                eprintln!("raid1: {}: writing zeros failed: {e}", dev.path().display());
                status = crate::verbs::create::EXIT_ERROR;
            }
        }
    }
    status
}
