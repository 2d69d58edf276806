//! `raid1 examine`: the same report as `mdadm --examine`, as text or JSON.
//!
//! The text output is byte-for-byte what mdadm 4.2 prints for metadata 1.x members (labels,
//! values, order, blank lines, `DEVICE:` header), so scripts written against mdadm keep working;
//! `--json` prints the same facts as one JSON document. `examine-bitmap` mirrors
//! `mdadm --examine-bitmap` (`-X`) and `examine --badblocks` mirrors `mdadm --examine-badblocks`.
//!
//! The JSON document is `{"verb": ..., "devices": [{"device": PATH, "ok": BOOL, "report": {...},
//! "error": {"kind", "field", "message"}}]}`: one entry per device in command-line order, `report`
//! on success (the fields of [`report::Report`], [`badblocks::BadBlocks`] or
//! [`bitmap::BitmapReport`], snake_case, numbers as numbers), `error` otherwise.
//!
//! A superblock whose checksum does not match is still shown (as mdadm does, exit status 0), with
//! a warning line on standard error. A device that cannot be examined gives one line on standard
//! error,
//! `raid1: DEVICE: what is wrong (field value ...)`, and the command exits with status 2 after
//! examining the remaining devices. Nothing here panics on any device content.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::member::lenient::{self, ExamineError};
use crate::member::{Access, Device};
use crate::report::{badblocks, bitmap, examine as report, host};

/// Exit status when every device was examined.
pub const EXIT_OK: i32 = 0;
/// Exit status when at least one device could not be examined (or on a usage error).
pub const EXIT_ERROR: i32 = 2;

/// Arguments of `raid1 examine`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExamineArgs {
    /// Member devices or image files to examine (with `--scan`: default, every device the
    /// configuration file's DEVICE lines name).
    #[arg(required_unless_present = "scan", value_name = "DEV")]
    pub devices: Vec<PathBuf>,
    /// One `ARRAY` line per array, as mdadm.conf takes it (`mdadm --examine --brief`).
    #[arg(short, long, conflicts_with_all = ["json", "badblocks", "export"])]
    pub brief: bool,
    /// `--brief` for the devices given, or for every device the configuration file's DEVICE
    /// lines name (members of no array are skipped silently, as mdadm does).
    #[arg(short, long, conflicts_with_all = ["json", "badblocks", "export"])]
    pub scan: bool,
    /// With `--brief`: the level, the number of devices and a `devices=` line.
    #[arg(short, long)]
    pub verbose: bool,
    /// `KEY=VALUE` lines (`MD_LEVEL`, `MD_UUID`, ...), as `mdadm --examine --export`.
    #[arg(long, conflicts_with_all = ["json", "badblocks"])]
    pub export: bool,
    /// Print one JSON document instead of mdadm's text.
    #[arg(long)]
    pub json: bool,
    /// List the bad-block log (like `mdadm --examine-badblocks`) instead of the superblock.
    #[arg(long)]
    pub badblocks: bool,
    /// Home host for the "(local to host X)" note. Default: HOMEHOST from the mdadm
    /// configuration file, else the system host name; `<none>` disables the note.
    #[arg(long, value_name = "NAME")]
    pub homehost: Option<String>,
    /// mdadm configuration file to read HOMEHOST from. Default: /etc/mdadm/mdadm.conf, then
    /// /etc/mdadm.conf.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Arguments of `raid1 examine-bitmap`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExamineBitmapArgs {
    /// Member devices or image files (or external bitmap files) whose bitmap to report. Member
    /// image files are read directly (mdadm 4.2 needs a loop device for them).
    #[arg(required = true, value_name = "DEV")]
    pub devices: Vec<PathBuf>,
    /// Print one JSON document instead of mdadm's text.
    #[arg(long)]
    pub json: bool,
}

/// Error facts of one device in the JSON document.
#[derive(Debug, Serialize)]
pub struct JsonError {
    /// Stable error kind (snake_case).
    pub kind: &'static str,
    /// The field at fault, when one is.
    pub field: Option<&'static str>,
    /// The one-line message printed in text mode (without the `raid1: DEVICE: ` prefix).
    pub message: String,
}

impl From<&ExamineError> for JsonError {
    fn from(e: &ExamineError) -> Self {
        JsonError {
            kind: e.kind(),
            field: e.field(),
            message: e.to_string(),
        }
    }
}

/// One device in the JSON document.
#[derive(Debug, Serialize)]
pub struct JsonDevice<T: Serialize> {
    /// The device path as given.
    pub device: String,
    /// Whether the device was examined.
    pub ok: bool,
    /// The facts (absent on error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<T>,
    /// The error (absent on success).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JsonError>,
}

/// The whole JSON document.
#[derive(Debug, Serialize)]
pub struct JsonDocument<T: Serialize> {
    /// "examine", "examine-badblocks" or "examine-bitmap".
    pub verb: &'static str,
    /// One entry per device, in command-line order.
    pub devices: Vec<JsonDevice<T>>,
}

fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

fn path_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn report_error(path: &Path, e: &ExamineError) {
    let mut err = std::io::stderr().lock();
    let mut line = b"raid1: ".to_vec();
    line.extend_from_slice(path_bytes(path));
    line.extend_from_slice(format!(": {e}\n").as_bytes());
    let _ = err.write_all(&line);
}

fn write_out(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

fn open(path: &Path) -> Result<Device, ExamineError> {
    Device::open(path, Access::Read).map_err(ExamineError::Open)
}

/// Examines one device: the report as mdadm's examine computes it.
pub fn examine_device(
    path: &Path,
    homehost: Option<&[u8]>,
) -> Result<report::Report, ExamineError> {
    let dev = open(path)?;
    let loaded = lenient::load(&dev)?;
    report::build(&path_text(path), &loaded, homehost)
}

/// Reads one device's bad-block log.
pub fn badblocks_device(path: &Path) -> Result<badblocks::BadBlocks, ExamineError> {
    let dev = open(path)?;
    let loaded = lenient::load(&dev)?;
    badblocks::read(&dev, &loaded)
}

/// Reports one device's bitmap.
pub fn bitmap_device(path: &Path) -> Result<bitmap::BitmapReport, ExamineError> {
    let dev = open(path)?;
    bitmap::examine_bitmap(path_bytes(path), &dev)
}

fn run_each<T: Serialize>(
    verb: &'static str,
    devices: &[PathBuf],
    json: bool,
    one: impl Fn(&Path) -> Result<T, ExamineError>,
    text: impl Fn(&Path, &T) -> Vec<u8>,
) -> i32 {
    let mut status = EXIT_OK;
    let mut doc = JsonDocument {
        verb,
        devices: Vec::new(),
    };
    for path in devices {
        let result = one(path);
        if result.is_err() {
            status = EXIT_ERROR;
        }
        if json {
            let (report, error) = match result {
                Ok(r) => (Some(r), None),
                Err(e) => (None, Some(JsonError::from(&e))),
            };
            doc.devices.push(JsonDevice {
                device: path_text(path),
                ok: error.is_none(),
                report,
                error,
            });
        } else {
            match result {
                Ok(r) => write_out(&text(path, &r)),
                Err(e) => {
                    write_out(e.printed());
                    report_error(path, &e)
                }
            }
        }
    }
    if json {
        match serde_json::to_string_pretty(&doc) {
            Ok(s) => write_out(format!("{s}\n").as_bytes()),
            Err(e) => {
                eprintln!("raid1: cannot encode JSON: {e}");
                status = EXIT_ERROR;
            }
        }
    }
    status
}

/// Runs `raid1 examine`; returns the exit status.
pub fn run_examine(args: &ExamineArgs) -> i32 {
    if args.badblocks {
        return run_each(
            "examine-badblocks",
            &args.devices,
            args.json,
            badblocks_device,
            |p, b| badblocks::to_mdadm_text(path_bytes(p), b),
        );
    }
    let homehost = host::homehost(args.homehost.as_deref(), args.config.as_deref());
    if args.brief || args.scan {
        return run_brief(args, homehost.as_deref());
    }
    if args.export {
        return run_each(
            "examine",
            &args.devices,
            false,
            |p| examine_device(p, homehost.as_deref()),
            |_, r| r.export_text().into_bytes(),
        );
    }
    run_each(
        "examine",
        &args.devices,
        args.json,
        |p| examine_device(p, homehost.as_deref()),
        |p, r| {
            if !r.checksum.correct {
                // mdadm shows the mismatch in the report and exits 0; say it plainly as well.
                warn(
                    p,
                    &format!(
                        "sb_csum 0x{:08x} differs from the computed 0x{:08x} (the kernel refuses this member)",
                        r.checksum.stored, r.checksum.expected
                    ),
                );
            }
            r.to_mdadm_text(path_bytes(p))
        },
    )
}

/// `--brief` / `--scan`: the `ARRAY` lines of the arrays the devices belong to.
fn run_brief(args: &ExamineArgs, homehost: Option<&[u8]>) -> i32 {
    // Devices named on the command line must be members; devices a DEVICE line names may be
    // anything (they are skipped quietly when they are not).
    let (devices, quiet) = if args.devices.is_empty() {
        match crate::config::load(args.config.as_deref()) {
            Ok(Some((_, cfg))) => {
                // mdadm walks the devices of its DEVICE lines from the last one: so does this,
                // for the same order of lines.
                let mut found = crate::config::candidates(&cfg);
                found.reverse();
                (found, true)
            }
            Ok(None) => {
                eprintln!(
                    "raid1: --scan without devices reads DEVICE lines from the configuration                      file, and there is none ({}); name the devices or pass --config",
                    crate::config::DEFAULT_FILES.join(", ")
                );
                return EXIT_ERROR;
            }
            Err(e) => {
                eprintln!("raid1: {e}");
                return EXIT_ERROR;
            }
        }
    } else {
        (args.devices.clone(), false)
    };
    let mut status = EXIT_OK;
    let mut found = Vec::new();
    for path in &devices {
        match examine_device(path, homehost) {
            Ok(r) => found.push((path, r)),
            Err(_) if quiet => {}
            Err(e) => {
                report_error(path, &e);
                status = EXIT_ERROR;
            }
        }
    }
    let pairs: Vec<(&[u8], &report::Report)> =
        found.iter().map(|(p, r)| (path_bytes(p), r)).collect();
    write_out(&report::brief_text(&pairs, args.verbose));
    status
}

/// One warning line on standard error; the exit status is not affected.
fn warn(path: &Path, what: &str) {
    let mut line = b"raid1: ".to_vec();
    line.extend_from_slice(path_bytes(path));
    line.extend_from_slice(format!(": warning: {what}\n").as_bytes());
    let _ = std::io::stderr().lock().write_all(&line);
}

/// Runs `raid1 examine-bitmap`; returns the exit status.
pub fn run_examine_bitmap(args: &ExamineBitmapArgs) -> i32 {
    run_each(
        "examine-bitmap",
        &args.devices,
        args.json,
        bitmap_device,
        |p, r| {
            if r.truncated {
                // mdadm warns too, and reports the bits it could read.
                warn(
                    p,
                    &format!(
                        "the device ends inside the bitmap (sync_size {} sectors); counted the {} bits present",
                        r.sync_size_sectors, r.total_bits
                    ),
                );
            }
            r.to_mdadm_text(path_bytes(p))
        },
    )
}
