//! `raid1 create`: writes md RAID1 metadata (1.0, 1.1 or 1.2) on member devices or image files,
//! offline, the way `mdadm --create` (4.2) lays it out, so that mdadm and the Linux kernel
//! assemble the result.
//!
//! What it writes on each listed device (position `i` in the list = `dev_number` `i`; the first
//! `--raid-devices` positions are slots 0.., the rest spares; `missing` leaves a slot empty):
//!
//! * the superblock: a random array UUID and device UUIDs, `set_name` `homehost:name`,
//!   `ctime` = `utime` = now, level 1, events 0, `resync_offset` 0 (the kernel resyncs the array
//!   when it first runs it) or MaxSector with `--assume-clean`, `max_dev` 128 (for up to 128
//!   devices), devflags 0 (WriteMostly with `--write-mostly`); geometry as mdadm computes it ([`layout`]): data offset from the first
//!   device, array size = the smallest member's usable space rounded down to 64 KiB, a bad-block
//!   log of 8 sectors (512 entries);
//! * the internal bitmap (default; `--bitmap none` for none): header with events 0 and all bits
//!   set, as mdadm writes it, so the first run syncs every chunk unless the array is clean;
//! * zeros over the rest of the metadata area (1.1/1.2: every sector before the data, including
//!   the first 4 KiB of a 1.2 member; 1.0: everything after the data), so the bad-block log is
//!   empty and no stale signature survives there. mdadm leaves those sectors as they were; on a
//!   fresh device the result is the same.
//!
//! Before the first byte is written, every device is opened exclusively and checked; any
//! problem on any device aborts with nothing written: a device in use, listed twice, holding
//! an md superblock or a file system / swap / LUKS / LVM2 / partition-table signature (unless
//! `--force`), too small, or (unless `--force`) members whose usable sizes differ by more than
//! 1 %. With `--force`, stale md superblocks elsewhere on a device are zeroed too (mdadm does the
//! same).
//!
//! The array name (`--name`, default `0`, what `mdadm --create /dev/md0` writes) is what mdadm's
//! auto-assembly and `raid1 run` call the array.

pub mod build;
pub mod layout;

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use raid1_superblock::{DevRole, MinorVersion, SetName};
use serde::Serialize;

use crate::member::{self, Access, Device, signatures};
use crate::text::random_uuid;

use self::build::ArrayIdentity;
use self::layout::{ArrayLayout, MemberLayout};

/// Exit status on success.
pub const EXIT_OK: i32 = 0;
/// Exit status on any error (nothing was written unless the error happened while writing).
pub const EXIT_ERROR: i32 = 2;

/// Default array name: what `mdadm --create /dev/md0` stores.
pub const DEFAULT_NAME: &str = "0";

/// `--bitmap` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BitmapChoice {
    /// An internal write-intent bitmap (default chunk 64 MiB, larger on big arrays).
    Internal,
    /// No bitmap: after a crash the whole array is resynced.
    None,
}

/// Arguments of `raid1 create`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = CREATE_HELP)]
pub struct CreateArgs {
    /// RAID level: only 1 (also `raid1`, `mirror`).
    #[arg(short, long, value_name = "LEVEL", value_parser = parse_level)]
    pub level: u32,
    /// Number of mirrors (slots); the first N devices fill them.
    #[arg(short = 'n', long, value_name = "N")]
    pub raid_devices: u32,
    /// Number of spares; the devices after the first N.
    #[arg(short = 'x', long, value_name = "K", default_value_t = 0)]
    pub spare_devices: u32,
    /// Metadata format: 1.0 (at the end), 1.1 (at the start), 1.2 (4 KiB from the start).
    #[arg(short = 'e', long, value_name = "VERSION", default_value = "1.2", value_parser = parse_metadata)]
    pub metadata: MinorVersion,
    /// Write-intent bitmap. Unlike mdadm (which adds one only above 100 GiB), the default is
    /// an internal bitmap for every size.
    #[arg(short, long, value_enum, default_value_t = BitmapChoice::Internal)]
    pub bitmap: BitmapChoice,
    /// Array name, stored as `HOMEHOST:NAME` (at most 31 bytes, no '/').
    #[arg(short = 'N', long, value_name = "NAME", default_value = DEFAULT_NAME)]
    pub name: String,
    /// Home host stored before the name. Default: HOMEHOST from mdadm.conf, else the host
    /// name; `<none>` stores the name alone.
    #[arg(long, value_name = "HOST")]
    pub homehost: Option<String>,
    /// Mark the array in sync: no initial resync (only if the members' data areas are already
    /// identical, e.g. all zeros).
    #[arg(long)]
    pub assume_clean: bool,
    /// Write over devices that hold md superblocks or other signatures, devices of different
    /// sizes, and allow a single-slot array.
    #[arg(short, long)]
    pub force: bool,
    /// Print the result as one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Member devices or image files, in slot order; `missing` for an empty slot.
    #[arg(required = true, value_name = "DEV")]
    pub devices: Vec<PathBuf>,
    /// Mark this device (one of DEV) WriteMostly: read only when no other mirror can serve
    /// (mdadm's `--write-mostly` before a device). May be repeated.
    #[arg(short = 'W', long, value_name = "DEV")]
    pub write_mostly: Vec<PathBuf>,
    /// Mark this device (one of DEV) FailFast: an I/O error fails it at once unless it is the
    /// last working mirror (mdadm's `--failfast` before a device). May be repeated.
    #[arg(long, value_name = "DEV")]
    pub failfast: Vec<PathBuf>,
    /// md's write-behind (mdadm's `--write-behind=N`, 256 when given without N): up to N
    /// writes at once are acknowledged before the WriteMostly members have them; the bitmap
    /// covers what those may lack. Needs the internal bitmap and a `--write-mostly` device.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "256")]
    pub write_behind: Option<u32>,
    /// Seconds between the bitmap daemon's sweeps, which clear the bits of chunks no longer
    /// written (md's `daemon_sleep`, mdadm's `--delay`; default 5). Needs the internal bitmap.
    #[arg(short = 'd', long, value_name = "SECONDS")]
    pub delay: Option<u32>,
    /// Bytes of the array per bitmap bit (mdadm's `--bitmap-chunk`): a number with K, M, G or
    /// T (KiB without a suffix; `s` for sectors), a power of two. Smaller chunks resync less
    /// after a crash or re-add, at the cost of more bitmap writes; the bits must fit the space
    /// the metadata keeps for the bitmap (4 KiB at least). Default 64 MiB, more on big arrays.
    #[arg(long, value_name = "SIZE", value_parser = crate::text::parse_bitmap_chunk)]
    pub bitmap_chunk: Option<u32>,
    /// Space used on each member, which is the array's size (mdadm's `--size`): KiB, or with
    /// a unit K, M, G, T or s (sectors); `max` (the default): the smallest member's usable
    /// space, rounded down to 64 KiB. Every member must have it after the metadata; one with
    /// more than 1 % left over needs --force.
    #[arg(short = 'z', long, value_name = "SIZE|max", value_parser = crate::verbs::ctl::size_arg)]
    pub size: Option<crate::verbs::ctl::SizeValue>,
    /// The array's UUID (mdadm's `--uuid`): 32 hex digits, with `:`, `-`, `.` or spaces
    /// anywhere; random without it. Each member's own device UUID stays random.
    #[arg(short = 'u', long, value_name = "UUID", value_parser = uuid_arg)]
    pub uuid: Option<raid1_superblock::Uuid>,
    /// Where the data starts on each member (mdadm's `--data-offset`), metadata 1.1 and 1.2:
    /// KiB, or with a unit K, M, G, T or s (sectors). Default: about 0.1 % of the first
    /// device for reshape headroom (at most 128 MiB) plus the metadata, rounded up to 1 MiB.
    /// Must leave room for the superblock and the bitmap.
    #[arg(long, value_name = "SIZE", value_parser = crate::text::parse_size)]
    pub data_offset: Option<u64>,
}

/// `--uuid` as mdadm reads it.
fn uuid_arg(text: &str) -> Result<raid1_superblock::Uuid, String> {
    crate::config::parse_uuid(text)
        .map(raid1_superblock::Uuid)
        .ok_or_else(|| {
            format!(
                "\"{}\": not a UUID (32 hex digits, with ':', '-', '.' or spaces anywhere)",
                text.escape_default()
            )
        })
}

const CREATE_HELP: &str = "\
Writes mdadm 4.2's metadata layout offline; assemble the result with `mdadm --assemble` or
`raid1 run`. Everything is checked on all devices before anything is written; a refusal writes
nothing. Refused without --force: an md superblock (1.x or 0.90), a file system (ext2/3/4, XFS,
btrfs, FAT, exFAT, NTFS, ISO 9660), swap, LUKS, LVM2, a GPT or an MBR with partitions; members
whose usable sizes differ by more than 1% (the array takes the smallest). Always refused: a
block device in use (it is opened O_EXCL), a locked image file, a device listed twice, a device
too small for the metadata plus 64 KiB of data.

Default name: 0 (as `mdadm --create /dev/md0`), stored as HOMEHOST:0.

Exit status:
  0  the metadata was written and synced on every device
  2  error: nothing was written (or, on a write error, the devices named are incomplete)";

fn parse_level(s: &str) -> Result<u32, String> {
    match s {
        "1" | "raid1" | "mirror" => Ok(1),
        other => Err(format!("only RAID1 is supported, not level {other}")),
    }
}

fn parse_metadata(s: &str) -> Result<MinorVersion, String> {
    MinorVersion::parse(s).map_err(|_| format!("unsupported metadata {s} (1.0, 1.1 or 1.2)"))
}

/// A problem found while checking, naming the device when there is one.
#[derive(Debug)]
struct Problem {
    device: Option<PathBuf>,
    message: String,
}

fn is_missing(p: &Path) -> bool {
    p.as_os_str().eq_ignore_ascii_case("missing")
}

/// One member in the JSON document and the summary.
#[derive(Debug, Serialize)]
pub struct MemberReport {
    /// Path, or `null` for `missing`.
    pub device: Option<String>,
    /// Position in the list = `dev_number`.
    pub dev_number: u32,
    /// `"active"` (with `slot`), `"spare"` or `"missing"`.
    pub role: &'static str,
    /// Slot for an active member or a missing one.
    pub slot: Option<u32>,
    /// Device UUID (present members).
    pub device_uuid: Option<String>,
    /// Device size in sectors.
    pub dev_sectors: Option<u64>,
    /// Superblock sector.
    pub super_offset: Option<u64>,
    /// First data sector.
    pub data_offset: Option<u64>,
    /// Sectors available for data.
    pub data_size: Option<u64>,
    /// Bad-block log offset from the superblock (sectors).
    pub bblog_offset: Option<i32>,
    /// Bad-block log size (sectors).
    pub bblog_size: Option<u16>,
    /// Signatures that `--force` wrote over and that are now erased (they lay in the metadata
    /// area, or were stale md superblocks).
    pub erased: Vec<String>,
    /// Signatures that `--force` accepted but that lie in the data area and stay there (e.g. a
    /// file system at the start of a 1.0 member: it becomes the array's content).
    pub kept_in_data_area: Vec<String>,
}

/// Bitmap facts in the JSON document.
#[derive(Debug, Serialize)]
pub struct BitmapReport {
    /// Offset of the bitmap from the superblock, sectors (signed).
    pub offset: i32,
    /// Bytes of data per bit.
    pub chunk_bytes: u32,
    /// Number of bits.
    pub chunks: u64,
    /// Sectors the bitmap region occupies.
    pub sectors: u64,
}

/// The JSON document of `raid1 create --json`.
#[derive(Debug, Serialize)]
pub struct CreateReport {
    /// `"create"`.
    pub verb: &'static str,
    /// `"1.0"`, `"1.1"` or `"1.2"`.
    pub metadata: String,
    /// Always 1.
    pub level: u32,
    /// Slots.
    pub raid_devices: u32,
    /// Spare positions.
    pub spare_devices: u32,
    /// Array UUID (mdadm notation).
    pub array_uuid: String,
    /// `set_name` as stored.
    pub name: String,
    /// Creation time, seconds since the epoch.
    pub ctime: u64,
    /// Used sectors per member = array size in sectors.
    pub size_sectors: u64,
    /// Array size in bytes.
    pub array_bytes: u64,
    /// Whether the array was written clean (`--assume-clean`).
    pub assume_clean: bool,
    /// The internal bitmap, or null.
    pub bitmap: Option<BitmapReport>,
    /// One entry per listed device.
    pub members: Vec<MemberReport>,
}

/// Runs `raid1 create`; returns the exit status.
pub fn run_create(args: &CreateArgs) -> i32 {
    match create(args) {
        Ok(report) => {
            print_report(args, &report);
            EXIT_OK
        }
        Err(problems) => {
            for p in &problems {
                match &p.device {
                    Some(d) => eprintln!("raid1: {}: {}", d.display(), p.message),
                    None => eprintln!("raid1: {}", p.message),
                }
            }
            EXIT_ERROR
        }
    }
}

fn problem(device: Option<&Path>, message: impl Into<String>) -> Problem {
    Problem {
        device: device.map(Path::to_path_buf),
        message: message.into(),
    }
}

/// A device that passed the checks, ready to be written.
struct Prepared {
    dev: Device,
    /// Signatures found (written over with --force).
    found: Vec<signatures::Found>,
}

fn check_arguments(args: &CreateArgs) -> Vec<Problem> {
    let mut out = Vec::new();
    if args.level != 1 {
        out.push(problem(None, "only RAID1 (--level 1) is supported"));
    }
    if args.raid_devices == 0 {
        out.push(problem(None, "--raid-devices must be at least 1"));
    }
    if args.raid_devices == 1 && !args.force {
        out.push(problem(
            None,
            "a RAID1 with one slot mirrors nothing: use --force to create it anyway",
        ));
    }
    let want = args.raid_devices as usize + args.spare_devices as usize;
    if args.devices.len() != want {
        out.push(problem(
            None,
            format!(
                "{} devices listed, but --raid-devices {} and --spare-devices {} need {want}",
                args.devices.len(),
                args.raid_devices,
                args.spare_devices
            ),
        ));
    }
    if want > raid1_superblock::MAX_DEV {
        out.push(problem(
            None,
            format!(
                "at most {} devices fit in a superblock",
                raid1_superblock::MAX_DEV
            ),
        ));
    }
    for (i, d) in args.devices.iter().enumerate() {
        if is_missing(d) && i >= args.raid_devices as usize {
            out.push(problem(
                None,
                format!("position {i} is a spare: `missing` is only meaningful for a slot"),
            ));
        }
    }
    if args.devices.iter().all(|d| is_missing(d)) {
        out.push(problem(None, "every device is `missing`"));
    }
    for (list, flag) in [
        (&args.write_mostly, "--write-mostly"),
        (&args.failfast, "--failfast"),
    ] {
        for w in list {
            if is_missing(w) || !args.devices.contains(w) {
                out.push(problem(
                    Some(w),
                    format!("{flag} names a device that is not among the devices listed"),
                ));
            }
        }
    }
    if args.bitmap_chunk.is_some() && args.bitmap != BitmapChoice::Internal {
        out.push(problem(
            None,
            "--bitmap-chunk needs the internal bitmap (it is the data each of its bits covers)",
        ));
    }
    if let Some(d) = args.delay {
        if args.bitmap != BitmapChoice::Internal {
            out.push(problem(
                None,
                "--delay needs the internal bitmap (it is the bitmap daemon's period)",
            ));
        }
        if d < 1 {
            out.push(problem(
                None,
                "--delay 0: the bitmap daemon's period is at least 1 second (md refuses a \
                 bitmap whose daemon_sleep is 0)",
            ));
        }
    }
    if let Some(n) = args.write_behind {
        if args.bitmap != BitmapChoice::Internal {
            out.push(problem(
                None,
                "--write-behind needs the internal bitmap (its bits cover what a write-mostly \
                 member has not got yet)",
            ));
        }
        if args.write_mostly.is_empty() {
            out.push(problem(
                None,
                "--write-behind needs a --write-mostly device (only those are written behind)",
            ));
        }
        if n > raid1_superblock::bitmap::MAX_WRITE_BEHIND {
            out.push(problem(
                None,
                format!(
                    "--write-behind {n}: at most {} writes (md's limit)",
                    raid1_superblock::bitmap::MAX_WRITE_BEHIND
                ),
            ));
        }
    }
    let name = args.name.as_bytes();
    if name.is_empty() || name.len() > 31 || name.contains(&0) || name.contains(&b'/') {
        out.push(problem(
            None,
            format!(
                "invalid --name \"{}\": 1 to 31 bytes, no '/' or NUL",
                args.name.escape_default()
            ),
        ));
    }
    out
}

fn set_name(args: &CreateArgs) -> SetName {
    let homehost = match args.homehost.as_deref() {
        Some(h) if h.eq_ignore_ascii_case("<none>") || h.is_empty() => None,
        other => crate::report::host::homehost(other, None),
    };
    SetName::build(homehost.as_deref(), args.name.as_bytes())
}

fn create(args: &CreateArgs) -> Result<CreateReport, Vec<Problem>> {
    let mut problems = check_arguments(args);
    if !problems.is_empty() {
        return Err(problems);
    }

    // Open and inspect every device.
    let mut prepared: Vec<Option<Prepared>> = Vec::new();
    let mut seen: HashMap<member::Identity, PathBuf> = HashMap::new();
    let mut unopened = false;
    for path in &args.devices {
        if is_missing(path) {
            prepared.push(None);
            continue;
        }
        if let Ok(id) = member::identity_of(path) {
            if let Some(first) = seen.get(&id) {
                problems.push(problem(
                    Some(path),
                    format!("is the same device as {}", first.display()),
                ));
                prepared.push(None);
                continue;
            }
            seen.insert(id, path.clone());
        }
        let dev = match Device::open(path, Access::Exclusive) {
            Ok(d) => d,
            Err(e) => {
                problems.push(problem(Some(path), format!("cannot open: {e}")));
                prepared.push(None);
                unopened = true;
                continue;
            }
        };
        // A device with larger sectors makes an array that Linux md runs (at its sector size)
        // and `raid1 run` refuses: said, not refused. An NBD export that takes nothing below
        // its minimum block cannot even be read here in sectors.
        let lbs = dev.logical_block_size();
        if lbs > 512 && dev.is_remote() {
            problems.push(problem(
                Some(path),
                crate::member_io::sector_size_refusal(lbs),
            ));
            prepared.push(None);
            unopened = true;
            continue;
        } else if lbs > 512 {
            eprintln!(
                "raid1: {}: its sectors are {lbs} bytes: Linux md can run this array, `raid1 run` \
                 will refuse it (it serves 512-byte sectors)",
                path.display()
            );
        }
        let found = match signatures::scan(&dev) {
            Ok(f) => f,
            Err(e) => {
                problems.push(problem(Some(path), format!("cannot read: {e}")));
                Vec::new()
            }
        };
        if !found.is_empty() && !args.force {
            let list: Vec<String> = found.iter().map(ToString::to_string).collect();
            problems.push(problem(
                Some(path),
                format!("holds {}; use --force to write over it", list.join(", ")),
            ));
        }
        prepared.push(Some(Prepared { dev, found }));
    }
    let sizes: Vec<Option<u64>> = prepared
        .iter()
        .map(|p| p.as_ref().map(|p| p.dev.sectors()))
        .collect();
    // Without every device's size the geometry would be a guess: skip it.
    // A size asked for (`max` is the default).
    let asked_size = match args.size {
        Some(crate::verbs::ctl::SizeValue::Sectors(s)) => Some(s),
        _ => None,
    };
    let layout = if unopened {
        None
    } else {
        match layout::plan(
            args.metadata,
            args.bitmap == BitmapChoice::Internal,
            args.bitmap_chunk,
            asked_size,
            args.data_offset,
            &sizes,
        ) {
            Ok(l) => Some(l),
            Err(errors) => {
                for e in errors {
                    let device = match e {
                        layout::LayoutError::TooSmall { index, .. }
                        | layout::LayoutError::SmallerThanSize { index, .. } => {
                            args.devices.get(index).map(PathBuf::as_path)
                        }
                        layout::LayoutError::NoDevice
                        | layout::LayoutError::SizeTooSmall(_)
                        | layout::LayoutError::DataOffsetWith1_0
                        | layout::LayoutError::DataOffsetTooSmall { .. }
                        | layout::LayoutError::BitmapChunkTooSmall { .. } => None,
                    };
                    problems.push(problem(device, e.to_string()));
                }
                None
            }
        }
    };
    if let Some(l) = &layout {
        if asked_size.is_some() && l.size_leaves_room() && !args.force {
            let (_, max) = l.usable_range();
            problems.push(problem(
                None,
                format!(
                    "the largest member has {} KiB usable, more than 1% over --size {} KiB: \
                     use --force to leave the rest unused",
                    max / 2,
                    l.size / 2
                ),
            ));
        } else if asked_size.is_none() && l.sizes_differ() && !args.force {
            let (min, max) = l.usable_range();
            problems.push(problem(
                None,
                format!(
                    "member sizes differ by more than 1% (usable space {} KiB to {} KiB; the \
                     array would use {} KiB of each): use --force to accept",
                    min / 2,
                    max / 2,
                    l.size / 2
                ),
            ));
        }
    }
    let Some(layout) = layout.filter(|_| problems.is_empty()) else {
        problems.push(problem(None, "create aborted: nothing was written"));
        return Err(problems);
    };

    // Everything checked: choose identities and write.
    let err = |e: std::io::Error| vec![problem(None, format!("cannot get random bytes: {e}"))];
    let array = ArrayIdentity {
        uuid: match args.uuid {
            Some(u) => u,
            None => random_uuid().map_err(err)?,
        },
        name: set_name(args),
        ctime: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        raid_disks: args.raid_devices,
        assume_clean: args.assume_clean,
    };
    let roles: Vec<Option<DevRole>> = prepared
        .iter()
        .enumerate()
        .map(|(i, p)| {
            p.as_ref().map(|_| {
                if i < args.raid_devices as usize {
                    DevRole::Active(i as u16)
                } else {
                    DevRole::Spare
                }
            })
        })
        .collect();
    let mut plans = Vec::new();
    for (i, p) in prepared.iter().enumerate() {
        let (Some(p), Some(m)) = (p, layout.members[i]) else {
            plans.push(None);
            continue;
        };
        let device_uuid = random_uuid().map_err(err)?;
        let flags = build::Flags {
            write_mostly: args.write_mostly.contains(&args.devices[i]),
            failfast: args.failfast.contains(&args.devices[i]),
        };
        let sb = build::superblock(&array, &layout, &m, (i as u32, flags), &roles, device_uuid)
            .map_err(|e| vec![problem(Some(p.dev.path()), format!("superblock: {e}"))])?;
        plans.push(Some((m, sb)));
    }
    let bitmap = build::bitmap_region(
        &array,
        &layout,
        args.write_behind.unwrap_or(0),
        args.delay
            .unwrap_or(raid1_superblock::bitmap::MDADM_DEFAULT_DELAY),
    );
    if layout.bitmap.is_some() && bitmap.is_none() {
        return Err(vec![problem(None, "cannot build the bitmap header")]);
    }

    write_all(args, &prepared, &plans, &layout, bitmap.as_deref())?;

    let report = report(args, &array, &layout, &prepared, &plans);
    // A partition table that --force wrote over: let the kernel forget its partitions (mdadm
    // removes them too). Best effort, after our exclusive handles are closed.
    let tables: Vec<PathBuf> = prepared
        .iter()
        .flatten()
        .filter(|p| p.dev.is_block_device())
        .filter(|p| {
            p.found.iter().any(|f| {
                matches!(
                    f.signature,
                    signatures::Signature::Gpt | signatures::Signature::Mbr { .. }
                )
            })
        })
        .map(|p| p.dev.path().to_path_buf())
        .collect();
    drop(prepared);
    for path in tables {
        if let Err(e) = member::reread_partitions(&path) {
            eprintln!(
                "raid1: {}: the kernel could not re-read the partition table ({e}); its old \
                 partitions stay visible until the next re-read",
                path.display()
            );
        }
    }
    Ok(report)
}

type Plan = Option<(MemberLayout, Box<raid1_superblock::Superblock>)>;

/// Byte ranges (offset, length) create zeroes on one member.
fn zero_ranges(p: &Prepared, m: &MemberLayout, layout: &ArrayLayout) -> Vec<(u64, u64)> {
    let (start, end) = m.metadata_area(layout.bitmap.as_ref());
    let mut ranges = vec![(start * 512, (end - start) * 512)];
    // Stale md superblocks outside that area (--force): zero their 4 KiB as mdadm does.
    for f in p.found.iter().filter(|f| f.signature.is_md()) {
        let inside = f.offset >= start * 512 && f.offset < end * 512;
        if !inside {
            let len = 4096.min(p.dev.size() - f.offset);
            ranges.push((f.offset, len));
        }
    }
    ranges
}

fn write_all(
    args: &CreateArgs,
    prepared: &[Option<Prepared>],
    plans: &[Plan],
    layout: &ArrayLayout,
    bitmap: Option<&[u8]>,
) -> Result<(), Vec<Problem>> {
    let total: u64 = prepared
        .iter()
        .zip(plans)
        .filter_map(|(p, plan)| Some(zero_ranges(p.as_ref()?, &plan.as_ref()?.0, layout)))
        .flatten()
        .map(|(_, len)| len)
        .sum();
    let bar = if std::io::stdout().is_terminal() {
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template(
            "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Some(bar)
    } else {
        None
    };
    for (p, plan) in prepared.iter().zip(plans) {
        let (Some(p), Some((m, sb))) = (p, plan) else {
            continue;
        };
        let path = p.dev.path();
        if let Some(bar) = &bar {
            bar.set_message(path.display().to_string());
        }
        let fail = |what: &str, e: std::io::Error| {
            vec![problem(
                Some(path),
                format!("{what} failed: {e}; this device's metadata is incomplete"),
            )]
        };
        for (offset, len) in zero_ranges(p, m, layout) {
            p.dev
                .zero_range(offset, len, |n| {
                    if let Some(bar) = &bar {
                        bar.inc(n)
                    }
                })
                .map_err(|e| fail("clearing the metadata area", e))?;
        }
        if let (Some(region), Some(g)) = (bitmap, &layout.bitmap) {
            let at = (m.super_offset as i64 + g.offset as i64) as u64 * 512;
            p.dev
                .write_all_at(at, region)
                .map_err(|e| fail("writing the bitmap", e))?;
        }
        p.dev.sync().map_err(|e| fail("fsync", e))?;
        let mut sector = vec![0u8; sb.padded_len()];
        sb.serialize_padded(&mut sector)
            .map_err(|e| vec![problem(Some(path), format!("superblock: {e}"))])?;
        p.dev
            .write_all_at(m.super_offset * 512, &sector)
            .map_err(|e| fail("writing the superblock", e))?;
        p.dev.sync().map_err(|e| fail("fsync", e))?;
        if bar.is_none() && !args.json {
            outln!(
                "raid1: {}: wrote superblock at sector {}, {}bad-block log, synced",
                path.display(),
                m.super_offset,
                if layout.bitmap.is_some() {
                    "bitmap, "
                } else {
                    ""
                }
            );
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(())
}

/// Whether create's writes covered the start of signature `f` on this member.
fn erased(f: &signatures::Found, p: &Prepared, m: &MemberLayout, layout: &ArrayLayout) -> bool {
    zero_ranges(p, m, layout)
        .iter()
        .any(|&(start, len)| f.offset >= start && f.offset < start + len)
}

fn report(
    args: &CreateArgs,
    array: &ArrayIdentity,
    layout: &ArrayLayout,
    prepared: &[Option<Prepared>],
    plans: &[Plan],
) -> CreateReport {
    let members = args
        .devices
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let active = i < args.raid_devices as usize;
            match (&prepared[i], &plans[i]) {
                (Some(p), Some((m, sb))) => MemberReport {
                    device: Some(path.display().to_string()),
                    dev_number: i as u32,
                    role: if active { "active" } else { "spare" },
                    slot: active.then_some(i as u32),
                    device_uuid: Some(sb.device_uuid.to_string()),
                    dev_sectors: Some(m.dev_sectors),
                    super_offset: Some(m.super_offset),
                    data_offset: Some(m.data_offset),
                    data_size: Some(m.data_size),
                    bblog_offset: Some(m.bblog_offset),
                    bblog_size: Some(m.bblog_size),
                    erased: p
                        .found
                        .iter()
                        .filter(|f| erased(f, p, m, layout))
                        .map(ToString::to_string)
                        .collect(),
                    kept_in_data_area: p
                        .found
                        .iter()
                        .filter(|f| !erased(f, p, m, layout))
                        .map(ToString::to_string)
                        .collect(),
                },
                _ => MemberReport {
                    device: None,
                    dev_number: i as u32,
                    role: "missing",
                    slot: Some(i as u32),
                    device_uuid: None,
                    dev_sectors: None,
                    super_offset: None,
                    data_offset: None,
                    data_size: None,
                    bblog_offset: None,
                    bblog_size: None,
                    erased: Vec::new(),
                    kept_in_data_area: Vec::new(),
                },
            }
        })
        .collect();
    CreateReport {
        verb: "create",
        metadata: layout.minor.to_string(),
        level: 1,
        raid_devices: args.raid_devices,
        spare_devices: args.spare_devices,
        array_uuid: array.uuid.to_string(),
        name: array.name.to_string(),
        ctime: array.ctime,
        size_sectors: layout.size,
        array_bytes: layout.size * 512,
        assume_clean: array.assume_clean,
        bitmap: layout.bitmap.map(|b| BitmapReport {
            offset: b.offset,
            chunk_bytes: b.chunk_bytes,
            chunks: b.chunks,
            sectors: b.sectors,
        }),
        members,
    }
}

fn print_report(args: &CreateArgs, r: &CreateReport) {
    let mut out = std::io::stdout().lock();
    if args.json {
        let _ = serde_json::to_writer_pretty(&mut out, r);
        let _ = writeln!(out);
        return;
    }
    let _ = writeln!(
        out,
        "raid1: created RAID1 \"{}\" ({} slot{}{}), metadata {}, array UUID {}",
        r.name,
        r.raid_devices,
        if r.raid_devices == 1 { "" } else { "s" },
        if r.spare_devices > 0 {
            format!(" + {} spare", r.spare_devices)
        } else {
            String::new()
        },
        r.metadata,
        r.array_uuid
    );
    let _ = writeln!(
        out,
        "  size: {} sectors ({} KiB) per member = array size",
        r.size_sectors,
        r.size_sectors / 2
    );
    match &r.bitmap {
        Some(b) => {
            let _ = writeln!(
                out,
                "  bitmap: internal at {:+} sectors, chunk {} KiB, {} bit{}",
                b.offset,
                b.chunk_bytes / 1024,
                b.chunks,
                if b.chunks == 1 { "" } else { "s" }
            );
        }
        None => {
            let _ = writeln!(out, "  bitmap: none");
        }
    }
    let _ = writeln!(
        out,
        "  state: {}",
        if r.assume_clean {
            "clean (--assume-clean: no initial resync)"
        } else {
            "needs a resync (slot 0 is copied to the others when the array first runs)"
        }
    );
    for m in &r.members {
        match (&m.device, m.role) {
            (Some(d), role) => {
                let _ = writeln!(
                    out,
                    "  {}: {d}, data at sector {}, {} sectors available, device UUID {}",
                    match m.slot {
                        Some(s) if role == "active" => format!("slot {s}"),
                        _ => "spare".to_string(),
                    },
                    m.data_offset.unwrap_or(0),
                    m.data_size.unwrap_or(0),
                    m.device_uuid.as_deref().unwrap_or("")
                );
                for o in &m.erased {
                    let _ = writeln!(out, "    (--force: erased {o})");
                }
                for o in &m.kept_in_data_area {
                    let _ = writeln!(
                        out,
                        "    (--force: {o} lies in the data area and stays there)"
                    );
                }
            }
            (None, _) => {
                let _ = writeln!(out, "  slot {}: missing", m.slot.unwrap_or(0));
            }
        }
    }
}
