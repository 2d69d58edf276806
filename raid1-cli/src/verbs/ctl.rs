//! Client verbs that act on a running array through its control socket
//! (`$RAID1_RUN_DIR/NAME.sock`, line-delimited JSON; see `docs/CLI.md`).
//!
//! Exit status: 0 ok, 1 the array is degraded (`detail`), 2 error (including an array that does
//! not answer within the timeout). No verb prompts and none waits forever on a stopped server.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};

use crate::report::detail::detail_text;

/// Exit status of `raid1 run` and of the control verbs (for `--help`).
pub const EXIT_CODES: &str = "\
Exit status:
  0  done
  1  the array is degraded (detail --test; also 2 unusable, 4 no answer)
  2  error: the array is not running or did not answer within the timeout (--timeout, default
     10 s), the request was refused, or the command line is invalid";

/// Seconds a verb waits for an array's answer unless `--timeout` says otherwise.
pub const DEFAULT_TIMEOUT_SECS: f64 = 10.0;

/// `--timeout SECONDS`, common to every verb.
#[derive(Debug, Args, Clone, Copy)]
pub struct TimeoutArg {
    /// Seconds to wait for the array's answer (for `wait` and `monitor`: for it to take the
    /// request and, while waiting, to answer a progress query); exit status 2 past it.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_TIMEOUT_SECS, value_parser = crate::nbd::args::positive_seconds)]
    pub timeout: f64,
}

impl TimeoutArg {
    /// The timeout as a duration.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.timeout)
    }
}

use crate::array::{control_path, run_dir};

/// `raid1 detail NAME`.
#[derive(Debug, Args)]
pub struct DetailArgs {
    /// Array name.
    pub name: String,
    /// Print JSON.
    #[arg(long, conflicts_with_all = ["brief", "export"])]
    pub json: bool,
    /// The array's `ARRAY` line, as mdadm.conf takes it (`mdadm --detail --brief`).
    #[arg(short, long, conflicts_with = "export")]
    pub brief: bool,
    /// `KEY=VALUE` lines (`MD_LEVEL`, `MD_UUID`, `MD_DEVICE_..._ROLE`, ...), as
    /// `mdadm --detail --export` prints them for udev rules.
    #[arg(long)]
    pub export: bool,
    /// Exit status as `mdadm --detail --test`: 0 the array is fine, 1 degraded (a mirror is
    /// missing or failed), 2 unusable (no working mirror), 4 the information could not be had.
    #[arg(long)]
    pub test: bool,
    #[command(flatten)]
    pub timeout: TimeoutArg,
}

/// `raid1 status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub timeout: TimeoutArg,
}

/// Verbs that only name the array (`stop`, `check`, `repair`, `wait`).
#[derive(Debug, Args)]
pub struct NameArgs {
    /// Array name.
    pub name: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub timeout: TimeoutArg,
}

/// `raid1 sync-action NAME ACTION`.
#[derive(Debug, Args)]
pub struct SyncActionArgs {
    /// Array name.
    pub name: String,
    /// `frozen`: stop the running resync, recovery or check at its checkpoint and start none;
    /// `idle`: clear `frozen` and stop the running action (a resync or recovery starts again
    /// from its checkpoint, a check ends); `check`, `repair`: start one (md's `sync_action`).
    #[arg(value_parser = ["idle", "frozen", "check", "repair"])]
    pub action: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub timeout: TimeoutArg,
}

/// `raid1 sync-action`.
pub fn sync_action(a: &SyncActionArgs) -> i32 {
    finish(
        call(
            &a.name,
            &json!({"verb": "sync-action", "action": a.action}),
            a.timeout.duration(),
        ),
        a.json,
    )
}

/// `raid1 sync-speed NAME [--min K] [--max K]`.
#[derive(Debug, Args)]
pub struct SyncSpeedArgs {
    /// Array name.
    pub name: String,
    /// md's sync_speed_min in KiB/s: the speed a sync slows down to while requests are in
    /// flight (0: it does not slow down).
    #[arg(long, value_name = "KIB_PER_SEC")]
    pub min: Option<u64>,
    /// md's sync_speed_max in KiB/s (0: unlimited).
    #[arg(long, value_name = "KIB_PER_SEC")]
    pub max: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub timeout: TimeoutArg,
}

/// `raid1 sync-speed`.
pub fn sync_speed(a: &SyncSpeedArgs) -> i32 {
    finish(
        call(
            &a.name,
            &json!({"verb": "sync-speed", "speed_min": a.min, "speed_max": a.max}),
            a.timeout.duration(),
        ),
        a.json,
    )
}

/// `raid1 sync-range NAME [--min S] [--max E]`.
#[derive(Debug, Args)]
pub struct SyncRangeArgs {
    /// Array name.
    pub name: String,
    /// First sector the next check or repair covers (md's `sync_min`; default 0).
    #[arg(long, value_name = "SECTOR", default_value_t = 0)]
    pub min: u64,
    /// Sector where it ends (md's `sync_max`; a number, or `max`: the end of the array).
    #[arg(long, value_name = "SECTOR", default_value = "max")]
    pub max: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub timeout: TimeoutArg,
}

/// `raid1 sync-range`.
pub fn sync_range(a: &SyncRangeArgs) -> i32 {
    let max = if a.max == "max" {
        None
    } else {
        match a.max.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                eprintln!("raid1: --max {}: a sector number or \"max\"", a.max);
                return 2;
            }
        }
    };
    finish(
        call(
            &a.name,
            &json!({"verb": "sync-range", "min": a.min, "max": max}),
            a.timeout.duration(),
        ),
        a.json,
    )
}

/// Verbs on one member (`fail`, `remove`, `add`, `re-add`).
#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// Array name.
    pub name: String,
    /// Member device or image file: any path to the same file or device, or the path the member
    /// was opened from (after it was removed or replaced); for fail and remove also a member
    /// number as `detail` lists it (`Number`), or mdadm's keywords `failed` (every faulty
    /// member) and `detached` (every member whose device is gone).
    pub device: PathBuf,
    /// add: write over another array's md superblock or a file system signature.
    #[arg(long)]
    pub force: bool,
    /// add, re-add: make the new member WriteMostly (read only when no other mirror can).
    #[arg(long, short = 'W')]
    pub write_mostly: bool,
    /// add, re-add: make the new member FailFast (an I/O error fails it at once).
    #[arg(long)]
    pub failfast: bool,
    /// `re-add NAME missing`: the configuration file whose DEVICE lines name the devices to
    /// look at (default: /etc/mdadm/mdadm.conf, then /etc/mdadm.conf; none: /proc/partitions).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub timeout: TimeoutArg,
}

/// `raid1 grow NAME --raid-devices N | --bitmap internal|none | --size SIZE|max`.
#[derive(Debug, Args)]
pub struct GrowArgs {
    /// Array name.
    pub name: String,
    /// New number of mirrors.
    #[arg(long, short = 'n', required_unless_present_any = ["bitmap", "size", "write_behind", "delay"])]
    pub raid_devices: Option<u16>,
    /// Add an internal write-intent bitmap to the running array, or drop it (mdadm's
    /// `--grow --bitmap=internal|none`).
    #[arg(long, short = 'b', value_parser = ["internal", "none"], conflicts_with = "raid_devices")]
    pub bitmap: Option<String>,
    /// With --bitmap internal: bytes of the array per bit (mdadm's `--bitmap-chunk`): a number
    /// with K, M, G or T (KiB without a suffix; `s` for sectors), a power of two, whose bits
    /// fit the room the members have for the bitmap. Default 64 MiB, more if it must.
    #[arg(long, value_name = "SIZE", requires = "bitmap", value_parser = crate::text::parse_bitmap_chunk)]
    pub bitmap_chunk: Option<u32>,
    /// New size of every member's data area, which is the array's size (mdadm's
    /// `--grow --size`): KiB, or with a unit K, M, G, T or s (sectors); `max`: the most every
    /// member holds now. Growing resyncs the new region; shrinking needs --force.
    #[arg(long, short = 'z', value_name = "SIZE|max", value_parser = size_arg, conflicts_with_all = ["raid_devices", "bitmap"])]
    pub size: Option<SizeValue>,
    /// md's write-behind limit on the running array (mdadm's `--grow --write-behind=N`): up to
    /// N writes acknowledged before the WriteMostly members have them; 0 turns it off. Needs
    /// the bitmap; recorded in every member's bitmap header.
    #[arg(long, value_name = "N", conflicts_with_all = ["raid_devices", "bitmap", "size"])]
    pub write_behind: Option<u16>,
    /// The bitmap daemon's period, in seconds (mdadm's `--delay` with --bitmap internal; alone,
    /// md's `bitmap/time_base` on the running array): a chunk's bit is cleared one to two
    /// periods after its last write. Fractions are taken (`0.25`); the bitmap headers record
    /// whole seconds, at least 1, with the next superblock round. Needs the bitmap.
    #[arg(long, value_name = "SECONDS", value_parser = delay_arg, conflicts_with_all = ["raid_devices", "size", "write_behind"])]
    pub delay: Option<u64>,
    /// With --size: take the grown region as in sync (no resync; the mirrors must agree there).
    #[arg(long, requires = "size")]
    pub assume_clean: bool,
    /// With --size: allow shrinking (the data beyond the new end is lost to the array).
    #[arg(long, requires = "size")]
    pub force: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub timeout: TimeoutArg,
}

/// `--delay SECONDS`, in nanoseconds.
fn delay_arg(text: &str) -> Result<u64, String> {
    crate::text::parse_seconds(text, "delay")
}

/// Sends one request to array `name` and returns its answer, within `timeout`.
pub fn call(name: &str, req: &Value, timeout: Duration) -> Result<Value, String> {
    crate::array::assemble::check_socket_name(name)?;
    let path = control_path(name);
    let deadline = Instant::now() + timeout;
    let s = send(&path, name, req, timeout)?;
    let left = deadline.saturating_duration_since(Instant::now());
    s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .map_err(|e| format!("array {name}: control socket: {e}"))?;
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .map_err(|e| io_error(name, &path, timeout, &e))?;
    if line.is_empty() {
        return Err(format!(
            "array {name}: the server closed the control connection without an answer"
        ));
    }
    serde_json::from_str(&line)
        .map_err(|e| format!("array {name}: the answer is not valid JSON: {e}"))
}

/// The message for an array that did not answer in time.
fn no_answer(name: &str, path: &Path, timeout: Duration) -> String {
    format!(
        "array {name} did not answer within {} s (control socket {}): its server is stopped, \
         hung or overloaded",
        timeout.as_secs_f64(),
        path.display()
    )
}

pub(super) fn io_error(name: &str, path: &Path, timeout: Duration, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            no_answer(name, path, timeout)
        }
        _ => format!("array {name}: control socket {}: {e}", path.display()),
    }
}

/// Connects to the control socket at `path` and sends `req`, within `timeout`. (A stopped
/// server's listen queue fills up and `connect` then blocks, so it runs in a thread of its own.)
pub(super) fn send(
    path: &Path,
    name: &str,
    req: &Value,
    timeout: Duration,
) -> Result<UnixStream, String> {
    crate::array::assemble::check_socket_name(name)?;
    let deadline = Instant::now() + timeout;
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let path = path.to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(UnixStream::connect(&path));
        });
    }
    let mut s = match rx.recv_timeout(timeout) {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(format!(
                "array {name} is not running (control socket {}: {e})",
                path.display()
            ));
        }
        Err(_) => return Err(no_answer(name, path, timeout)),
    };
    let left = deadline.saturating_duration_since(Instant::now());
    s.set_write_timeout(Some(left.max(Duration::from_millis(1))))
        .map_err(|e| format!("array {name}: control socket: {e}"))?;
    s.write_all(format!("{req}\n").as_bytes())
        .map_err(|e| io_error(name, path, timeout, &e))?;
    Ok(s)
}

fn finish(v: Result<Value, String>, json_out: bool) -> i32 {
    match v {
        Ok(v) if v["ok"].as_bool() == Some(true) => {
            if json_out {
                outln!("{v}");
            }
            0
        }
        Ok(v) => {
            if json_out {
                outln!("{v}");
            }
            eprintln!("raid1: {}", v["error"].as_str().unwrap_or("failed"));
            2
        }
        Err(e) => {
            if json_out {
                outln!("{}", json!({"ok": false, "error": e}));
            }
            eprintln!("raid1: {e}");
            2
        }
    }
}

/// `raid1 detail`: exit 0, or 1 when degraded; an error is 2, or 4 with `--test` (and an
/// unusable array is 2 with `--test`), as `mdadm --detail --test`.
pub fn detail(a: &DetailArgs) -> i32 {
    match call(&a.name, &json!({"verb": "detail"}), a.timeout.duration()) {
        Ok(v) if v["ok"].as_bool() == Some(true) => {
            if a.json {
                outln!("{v}");
            } else if a.brief {
                out!("{}", crate::report::detail::brief_text(&v));
            } else if a.export {
                out!("{}", crate::report::detail::export_text(&v));
            } else {
                out!("{}", detail_text(&v));
            }
            // As mdadm: the array's health is the exit status only with --test.
            if !a.test {
                0
            } else if v["unusable"].as_bool() == Some(true) {
                2
            } else if v["degraded"].as_bool() == Some(true) {
                1
            } else {
                0
            }
        }
        other => {
            let status = finish(other, a.json);
            if a.test { 4 } else { status }
        }
    }
}

/// Names of the arrays with a control socket in the run directory.
pub fn running_arrays() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(run_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_suffix(".sock").map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

/// `raid1 status`: every running array in `/proc/mdstat` format. An array that does not answer
/// within the timeout is skipped (named on stderr, and under `skipped` in JSON); the others are
/// printed and the exit status is 2.
pub fn status(a: &StatusArgs) -> i32 {
    let mut blocks = Vec::new();
    let mut skipped = Vec::new();
    let mut status = 0;
    for name in running_arrays() {
        match call(&name, &json!({"verb": "status"}), a.timeout.duration()) {
            Ok(v) => blocks.push((
                name,
                v["mdstat"].as_str().unwrap_or("").to_string(),
                v["ublk"].as_str().unwrap_or("").to_string(),
            )),
            Err(e) => {
                if Path::new(&control_path(&name)).exists() {
                    eprintln!("raid1: {e}; skipped");
                    skipped.push(json!({"array": name, "error": e}));
                    status = 2;
                }
            }
        }
    }
    if a.json {
        let arrays: Vec<Value> = blocks
            .iter()
            .map(|(n, b, u)| json!({"array": n, "mdstat": b, "ublk": u}))
            .collect();
        outln!(
            "{}",
            json!({"ok": status == 0, "arrays": arrays, "skipped": skipped})
        );
    } else {
        outln!("Personalities : [raid1] ");
        // Each block ends as /proc/mdstat's does (md_seq_show's last newline).
        for (_, b, u) in &blocks {
            // The block device (`run --ublk`), as one more indented line of the array's
            // block, before the empty line that ends it.
            match b.strip_suffix("\n\n") {
                Some(head) if !u.is_empty() => out!("{head}\n      block device: {u}\n\n"),
                _ => out!("{b}"),
            }
        }
        outln!("unused devices: <none>");
    }
    status
}

/// `p` made absolute as the server stores member paths: symlinks resolved; for a path that no
/// longer exists, its directory resolved (the member's former path); else only made absolute.
fn abs(p: &Path) -> PathBuf {
    if crate::nbd::client::is_uri(p.as_os_str()) {
        return p.to_path_buf();
    }
    if let Ok(c) = std::fs::canonicalize(p) {
        return c;
    }
    let lexical = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    match (lexical.parent(), lexical.file_name()) {
        (Some(dir), Some(file)) => std::fs::canonicalize(dir)
            .map(|d| d.join(file))
            .unwrap_or(lexical),
        _ => lexical,
    }
}

/// `raid1 stop|check|repair|wait NAME`.
pub fn simple(verb: &str, a: &NameArgs) -> i32 {
    if verb == "wait" {
        return wait_with_progress(&a.name, a.timeout.duration(), a.json);
    }
    finish(
        call(&a.name, &json!({"verb": verb}), a.timeout.duration()),
        a.json,
    )
}

/// A running resync, recovery or check as `detail` reports it: (action, position, end) in
/// sectors; `Ok(None)` when none runs; `Err` when the array does not answer.
fn sync_of(name: &str, timeout: Duration) -> Result<Option<(String, u64, u64)>, String> {
    let v = call(name, &json!({"verb": "detail"}), timeout)?;
    Ok((|| {
        Some((
            v["sync_action"].as_str()?.to_string(),
            v["sync_position_sectors"].as_u64()?,
            v["sync_end_sectors"].as_u64()?,
        ))
    })())
}

/// Plain progress lines (stdout is not a terminal): one per 10 % step or every 5 seconds,
/// with the speed since the previous line and the time left at that speed.
struct ProgressLines {
    action: String,
    step: u64,
    at: std::time::Instant,
    pos: u64,
}

impl ProgressLines {
    fn update(&mut self, name: &str, action: &str, pos: u64, end: u64) {
        let pct = (pos * 100).checked_div(end).unwrap_or(100);
        let now = std::time::Instant::now();
        if action != self.action {
            *self = ProgressLines {
                action: action.to_string(),
                step: pct / 10,
                at: now,
                pos,
            };
            outln!("{name}: {action} {pct}% ({}/{} KiB)", pos / 2, end / 2);
            return;
        }
        let secs = now.duration_since(self.at).as_secs_f64();
        if pct / 10 == self.step && secs < 5.0 {
            return;
        }
        let rate = pos.saturating_sub(self.pos) as f64 * 512.0 / secs.max(0.001);
        let eta = if rate > 0.0 {
            format!(
                ", {}s left",
                ((end - pos.min(end)) as f64 * 512.0 / rate).round()
            )
        } else {
            String::new()
        };
        outln!(
            "{name}: {action} {pct}% ({}/{} KiB), {:.1} MiB/s{eta}",
            pos / 2,
            end / 2,
            rate / 1048576.0
        );
        self.step = pct / 10;
        self.at = now;
        self.pos = pos;
    }
}

/// `raid1 wait NAME`: waits as the bare request does and meanwhile asks for the running
/// resync/recovery/check every second (an array that does not answer that within `timeout` ends
/// the wait with exit status 2). Without `--json` it shows the progress, as a progress bar
/// (percent, speed, time left) when stdout is a terminal, as plain lines otherwise.
fn wait_with_progress(name: &str, timeout: Duration, json_out: bool) -> i32 {
    use indicatif::{ProgressBar, ProgressStyle};
    use std::io::IsTerminal;

    let path = control_path(name);
    let stream = match send(&path, name, &json!({"verb": "wait"}), timeout) {
        Ok(s) => s,
        Err(e) => return finish(Err(e), json_out),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let name = name.to_string();
        std::thread::spawn(move || {
            let mut line = String::new();
            let answer = match BufReader::new(&stream).read_line(&mut line) {
                Ok(0) => Err(format!(
                    "array {name}: the server closed the control connection without an answer"
                )),
                Ok(_) => serde_json::from_str(&line)
                    .map_err(|e| format!("array {name}: the answer is not valid JSON: {e}")),
                Err(e) => Err(format!("array {name}: control socket: {e}")),
            };
            let _ = tx.send(answer);
        });
    }
    let tty = !json_out && std::io::stdout().is_terminal();
    let poll = Duration::from_millis(if tty { 250 } else { 1000 });
    let mut bar: Option<(String, ProgressBar)> = None;
    let mut since = (std::time::Instant::now(), 0u64);
    let mut lines = ProgressLines {
        action: String::new(),
        step: 0,
        at: std::time::Instant::now(),
        pos: 0,
    };
    let answer = loop {
        match rx.recv_timeout(poll) {
            Ok(answer) => break answer,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                break Err(format!("array {name}: wait failed"));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        let (action, pos, end) = match sync_of(name, timeout) {
            Ok(Some(sync)) => sync,
            Ok(None) => continue,
            Err(e) => break Err(e),
        };
        if json_out {
            continue;
        }
        if !tty {
            lines.update(name, &action, pos, end);
            continue;
        }
        if bar.as_ref().is_none_or(|(a, _)| *a != action) {
            if let Some((_, b)) = bar.take() {
                b.finish_and_clear();
            }
            let b = ProgressBar::new(end * 512);
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix} [{bar:32}] {percent:>3}% {bytes}/{total_bytes} {msg}",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_prefix(format!("{name}: {action}"));
            b.set_position(pos * 512);
            bar = Some((action, b));
            // Speed and ETA count from here, not from 0 (a sync may be well under way).
            since = (std::time::Instant::now(), pos);
        }
        if let Some((_, b)) = &bar {
            b.set_length(end * 512);
            b.set_position(pos * 512);
            let secs = since.0.elapsed().as_secs_f64();
            if secs >= 1.0 {
                let rate = pos.saturating_sub(since.1) as f64 * 512.0 / secs;
                let left = (end - pos.min(end)) as f64 * 512.0 / rate.max(1.0);
                b.set_message(format!(
                    "{:.1} MiB/s ETA {}",
                    rate / 1048576.0,
                    indicatif::HumanDuration(Duration::from_secs_f64(left.min(1e7)))
                ));
            }
        }
    };
    if let Some((_, b)) = bar {
        b.finish_and_clear();
    }
    finish(answer, json_out)
}

/// The request of `raid1 fail|remove|add|re-add NAME DEV`: for fail and remove, `failed` and
/// `detached` are keywords (as in mdadm; a file of that name is given as `./failed`), and a
/// number that names no file is a member number.
pub fn device_request(verb: &str, a: &DeviceArgs) -> Value {
    let mut req = json!({"verb": verb});
    let arg = a.device.as_os_str();
    let member_verb = matches!(verb, "fail" | "remove");
    if member_verb && (arg == "failed" || arg == "detached") {
        req["keyword"] = json!(arg.to_string_lossy());
    } else if let Some(n) = arg
        .to_str()
        .filter(|t| member_verb && !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .filter(|_| !a.device.exists())
        .and_then(|t| t.parse::<u32>().ok())
    {
        req["member"] = json!(n);
    } else {
        req["device"] = crate::array::control::path_json(&abs(&a.device));
    }
    if a.force {
        req["force"] = json!(true);
    }
    if a.write_mostly {
        req["write_mostly"] = json!(true);
    }
    if a.failfast {
        req["failfast"] = json!(true);
    }
    req
}

/// `raid1 replace NAME DEV [--with SPARE]`.
#[derive(Debug, Args)]
pub struct ReplaceArgs {
    /// The member to replace, named as for `fail`.
    #[command(flatten)]
    pub member: DeviceArgs,
    /// The spare (already in the array) to rebuild onto; default: the first spare there is,
    /// now or when one is added.
    #[arg(long, value_name = "SPARE")]
    pub with: Option<PathBuf>,
}

/// `raid1 replace`: mdadm's `--replace DEV [--with SPARE]`. A spare is rebuilt beside the
/// member, which stays in service and is marked faulty when the rebuild ends.
pub fn replace(a: &ReplaceArgs) -> i32 {
    let mut req = device_request("fail", &a.member);
    req["verb"] = json!("replace");
    if let Some(w) = &a.with {
        req["with"] = crate::array::control::path_json(&abs(w));
    }
    member_verb(&a.member, &req)
}

/// `raid1 write-mostly NAME DEV [--off]`.
#[derive(Debug, Args)]
pub struct WriteMostlyArgs {
    /// The member, named as for `fail`.
    #[command(flatten)]
    pub member: DeviceArgs,
    /// Clear the flag instead (mdadm's `-writemostly` through sysfs).
    #[arg(long)]
    pub off: bool,
}

/// `raid1 write-mostly`: sets or clears a running member's WriteMostly flag; the superblocks
/// record it.
pub fn write_mostly(a: &WriteMostlyArgs) -> i32 {
    flag("write-mostly", a)
}

/// `raid1 failfast`: sets or clears a running member's FailFast flag; the superblocks record
/// it.
pub fn failfast(a: &WriteMostlyArgs) -> i32 {
    flag("failfast", a)
}

/// Sets (or with `--off` clears) member flag `verb` (`write-mostly` or `failfast`).
fn flag(verb: &str, a: &WriteMostlyArgs) -> i32 {
    let mut req = device_request("fail", &a.member);
    req["verb"] = json!(verb);
    req[verb.replace('-', "_")] = json!(!a.off);
    member_verb(&a.member, &req)
}

/// `raid1 fail|remove|add|re-add NAME DEV`.
pub fn device(verb: &str, a: &DeviceArgs) -> i32 {
    if verb == "re-add" && a.device.as_os_str() == "missing" {
        return re_add_missing(a);
    }
    member_verb(a, &device_request(verb, a))
}

/// `raid1 re-add NAME missing` (mdadm's `--re-add missing`): every device the configuration
/// file's DEVICE lines lead to (or /proc/partitions) that is not a member now is offered for
/// re-add; those that are not former members of this array are passed over without a word, as
/// mdadm does.
fn re_add_missing(a: &DeviceArgs) -> i32 {
    let cfg = match crate::config::load(a.config.as_deref()) {
        Ok(Some((_, cfg))) => cfg,
        Ok(None) => crate::config::Config::default_partitions(),
        Err(e) => {
            eprintln!("raid1: {e}");
            return 2;
        }
    };
    let members: Vec<PathBuf> =
        match call(&a.name, &json!({"verb": "detail"}), a.timeout.duration()) {
            Ok(v) => v["members"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["device"].as_str().map(PathBuf::from))
                .collect(),
            Err(e) => {
                eprintln!("raid1: {e}");
                return 2;
            }
        };
    let same = |x: &PathBuf| {
        let c = std::fs::canonicalize(x).unwrap_or_else(|_| x.clone());
        members
            .iter()
            .any(|m| std::fs::canonicalize(m).unwrap_or_else(|_| m.clone()) == c)
    };
    let mut done = Vec::new();
    for path in crate::config::candidates(&cfg) {
        if same(&path) {
            continue;
        }
        let mut req = json!({"verb": "re-add", "device": crate::array::control::path_json(&path)});
        if a.failfast {
            req["failfast"] = json!(true);
        }
        if a.write_mostly {
            req["write_mostly"] = json!(true);
        }
        if let Ok(v) = call(&a.name, &req, a.timeout.duration()) {
            if v["ok"].as_bool() == Some(true) {
                for line in v["done"].as_array().into_iter().flatten() {
                    if let Some(t) = line.as_str() {
                        done.push(t.to_string());
                    }
                }
            }
        }
    }
    if a.json {
        outln!("{}", json!({"ok": true, "done": done}));
    } else if done.is_empty() {
        eprintln!("raid1: {}: no missing member found to re-add", a.name);
    } else {
        for t in &done {
            eprintln!("raid1: {}: {t}", a.name);
        }
    }
    0
}

/// Sends a request about members of `a.name`; says what was done (on stderr) unless JSON.
fn member_verb(a: &DeviceArgs, req: &Value) -> i32 {
    said_done(&a.name, req, a.timeout.duration(), a.json)
}

/// Sends `req` to array `name`; says what was done (the answer's `done` lines, on stderr)
/// unless JSON is asked for; returns the exit status.
fn said_done(name: &str, req: &Value, timeout: Duration, json_out: bool) -> i32 {
    let answer = call(name, req, timeout);
    if let (Ok(v), false) = (&answer, json_out) {
        for line in v["done"].as_array().into_iter().flatten() {
            if let Some(t) = line.as_str() {
                eprintln!("raid1: {name}: {t}");
            }
        }
    }
    finish(answer, json_out)
}

/// `--size`: a size in sectors, or `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeValue {
    /// The most every member holds.
    Max,
    /// Sectors.
    Sectors(u64),
}

/// Parses `--size` as mdadm does (`parse_size`, and `max`).
pub(crate) fn size_arg(text: &str) -> Result<SizeValue, String> {
    if text == "max" {
        return Ok(SizeValue::Max);
    }
    crate::text::parse_size(text).map(SizeValue::Sectors)
}

/// `raid1 grow NAME --raid-devices N | --bitmap internal|none | --size SIZE|max`.
pub fn grow(a: &GrowArgs) -> i32 {
    if let Some(n) = a.write_behind {
        let req = json!({"verb": "grow", "write_behind": n});
        return said_done(&a.name, &req, a.timeout.duration(), a.json);
    }
    let req = match (&a.bitmap, a.size, a.raid_devices) {
        (Some(b), _, _) => {
            let mut req = json!({"verb": "grow", "bitmap": b});
            if let Some(c) = a.bitmap_chunk {
                req["bitmap_chunk"] = json!(c);
            }
            if let Some(ns) = a.delay {
                req["delay_ns"] = json!(ns);
            }
            req
        }
        (None, None, None) if a.delay.is_some() => {
            json!({"verb": "grow", "delay_ns": a.delay})
        }
        (None, Some(size), _) => {
            let size = match size {
                SizeValue::Max => json!("max"),
                SizeValue::Sectors(n) => json!(n),
            };
            json!({"verb": "grow", "size": size, "assume_clean": a.assume_clean, "force": a.force})
        }
        (None, None, n) => json!({"verb": "grow", "raid_devices": n}),
    };
    said_done(&a.name, &req, a.timeout.duration(), a.json)
}
