//! `raid1 monitor`: the events of running arrays, as lines on standard output and, like
//! `mdadm --monitor`, as alerts: a program run per event (`--program`), syslog (`--syslog`), a
//! test alert per array (`--test`), and a one-shot check of every array (`--oneshot`: a
//! `DegradedArray` event for each degraded one, then exit).
//!
//! The program is run as mdadm runs it: `PROGRAM EVENT /dev/md/NAME [DEVICE]`, once per event,
//! without waiting for it (finished ones are reaped as events come).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};

use super::ctl::{TimeoutArg, call, io_error, running_arrays, send};
use crate::array::engine::unix_now;
use crate::array::{control_path, run_dir};

/// `raid1 monitor`.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Only this array (default: every running array).
    pub name: Option<String>,
    /// Print JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Run this program for each event: `PROGRAM EVENT /dev/md/NAME [DEVICE]` (mdadm's
    /// `--program` / `--alert`).
    #[arg(long, visible_alias = "alert", value_name = "PROGRAM")]
    pub program: Option<String>,
    /// Send each event to syslog too (facility daemon, as mdadm's `--syslog`).
    #[arg(short = 'y', long)]
    pub syslog: bool,
    /// A `TestMessage` alert for every array at start (mdadm's `--test`).
    #[arg(short = 't', long)]
    pub test: bool,
    /// Check every array once, alert `DegradedArray` for each degraded one, then exit
    /// (mdadm's `--oneshot`).
    #[arg(short = '1', long)]
    pub oneshot: bool,
    /// RebuildNN events every N percent of a running resync or recovery (mdadm's
    /// `--increment`; 1 to 99, default 20).
    #[arg(short = 'r', long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=99))]
    pub increment: u64,
    #[command(flatten)]
    pub timeout: TimeoutArg,
}

/// What `monitor` knows of one array.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Watch {
    /// Subscribed: its events arrive.
    Live,
    /// Its connection ended without `Stopped` (server killed, socket gone): reported as
    /// `DeviceDisappeared`, and looked for again every second.
    Gone,
    /// It stopped cleanly.
    Stopped,
}

/// Subscribes to the events of array `name`: a thread forwards each line (then `None`).
fn subscribe(
    name: &str,
    increment: u64,
    timeout: Duration,
    tx: &std::sync::mpsc::Sender<(String, Option<String>)>,
) -> Result<(), String> {
    let path = control_path(name);
    let deadline = Instant::now() + timeout;
    let s = send(
        &path,
        name,
        &json!({"verb": "monitor", "increment": increment}),
        timeout,
    )?;
    // The server's first line takes the subscription; then events, with no time limit.
    let left = deadline.saturating_duration_since(Instant::now());
    s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .map_err(|e| format!("array {name}: control socket: {e}"))?;
    let mut reader = BufReader::new(s);
    let mut first = String::new();
    match reader.read_line(&mut first) {
        Ok(0) => {
            return Err(format!(
                "array {name}: the server closed the control connection without an answer"
            ));
        }
        Ok(_) => {}
        Err(e) => return Err(io_error(name, &path, timeout, &e)),
    }
    match serde_json::from_str::<Value>(&first) {
        Ok(v) if v["ok"].as_bool() == Some(true) => {}
        Ok(v) => {
            return Err(format!(
                "array {name}: monitor refused: {}",
                v["error"].as_str().unwrap_or("no reason given")
            ));
        }
        Err(e) => return Err(format!("array {name}: the answer is not valid JSON: {e}")),
    }
    reader
        .get_ref()
        .set_read_timeout(None)
        .map_err(|e| format!("array {name}: control socket: {e}"))?;
    let tx = tx.clone();
    let name = name.to_string();
    std::thread::spawn(move || {
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if tx.send((name.clone(), Some(line))).is_err() {
                return;
            }
        }
        let _ = tx.send((name, None));
    });
    Ok(())
}

/// Where events go: standard output, the program, syslog.
struct Alerts<'a> {
    args: &'a MonitorArgs,
    children: Vec<Child>,
}

impl Alerts<'_> {
    /// One event (a JSON line from an array, or made here).
    fn event(&mut self, line: &str) {
        print_event(line, self.args.json);
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return;
        };
        let event = v["event"].as_str().unwrap_or("?");
        let md = format!("/dev/md/{}", v["array"].as_str().unwrap_or("?"));
        let device = v["device"].as_str();
        if self.args.syslog {
            syslog(event, &md, device);
        }
        if let Some(program) = &self.args.program {
            self.children
                .retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
            let mut cmd = Command::new(program);
            cmd.arg(event).arg(&md).args(device);
            match cmd.spawn() {
                Ok(child) => self.children.push(child),
                Err(e) => eprintln!("raid1 monitor: cannot run {program}: {e}"),
            }
        }
    }

    /// An event made here (not sent by an array).
    fn local(&mut self, kind: &str, name: &str) {
        self.event(&json!({"event": kind, "array": name, "time": unix_now()}).to_string());
    }

    /// Waits for the programs still running (before exiting).
    fn finish(&mut self) {
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

/// One syslog message, as mdadm words it.
fn syslog(event: &str, md: &str, device: Option<&str>) {
    let text = match device {
        Some(d) => format!("{event} event detected on md device {md}, component device {d}"),
        None => format!("{event} event detected on md device {md}"),
    };
    let Ok(msg) = std::ffi::CString::new(text) else {
        return;
    };
    // Failures and degradations are warnings, the rest information, as mdadm has them.
    let priority =
        if event.starts_with("Fail") || event == "DegradedArray" || event == "DeviceDisappeared" {
            libc::LOG_CRIT
        } else {
            libc::LOG_INFO
        };
    // SAFETY: static identifier and format, a NUL-terminated message.
    unsafe {
        libc::openlog(c"raid1".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON);
        libc::syslog(priority, c"%s".as_ptr(), msg.as_ptr());
    }
}

/// Prints one event line (JSON, or `EVENT ARRAY [DEVICE] [DETAIL-JSON]`).
fn print_event(line: &str, json_out: bool) {
    let text = if json_out {
        line.to_string()
    } else {
        match serde_json::from_str::<Value>(line) {
            Ok(v) => {
                let mut t = format!(
                    "{} {}",
                    v["event"].as_str().unwrap_or("?"),
                    v["array"].as_str().unwrap_or("?")
                );
                if let Some(d) = v["device"].as_str() {
                    t.push(' ');
                    t.push_str(d);
                }
                if !v["detail"].is_null() {
                    t.push(' ');
                    t.push_str(&v["detail"].to_string());
                }
                t
            }
            Err(_) => line.to_string(),
        }
    };
    let out = std::io::stdout();
    let mut o = out.lock();
    let _ = writeln!(o, "{text}");
    let _ = o.flush();
}

/// `raid1 monitor`: one line per event of every running array (or of one). An array whose
/// server goes away without a clean stop is reported as `DeviceDisappeared` and looked for
/// again every second (`NewArray` when it is back; without NAME, arrays started later are
/// announced the same way). Ends (exit 0) once every watched array has stopped cleanly.
pub fn monitor(a: &MonitorArgs) -> i32 {
    let timeout = a.timeout.duration();
    let names = match &a.name {
        Some(n) => vec![n.clone()],
        None => running_arrays(),
    };
    if names.is_empty() {
        eprintln!("raid1: no running array in {}", run_dir().display());
        return 2;
    }
    let mut alerts = Alerts {
        args: a,
        children: Vec::new(),
    };
    if a.oneshot {
        let status = oneshot(&names, &mut alerts, timeout);
        alerts.finish();
        return status;
    }
    let (tx, rx) = std::sync::mpsc::channel::<(String, Option<String>)>();
    let mut watched: std::collections::BTreeMap<String, Watch> = Default::default();
    for name in names {
        match subscribe(&name, a.increment, timeout, &tx) {
            Ok(()) => {
                watched.insert(name, Watch::Live);
            }
            Err(e) => eprintln!("raid1: {e}"),
        }
    }
    if watched.is_empty() {
        return 2;
    }
    if a.test {
        for name in watched.keys() {
            alerts.local("TestMessage", name);
        }
    }
    let mut last_scan = Instant::now();
    while watched.values().any(|w| *w != Watch::Stopped) {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok((name, Some(line))) => {
                let stopped = serde_json::from_str::<Value>(&line)
                    .is_ok_and(|v| v["event"].as_str() == Some("Stopped"));
                alerts.event(&line);
                if stopped {
                    watched.insert(name, Watch::Stopped);
                }
            }
            Ok((name, None)) => {
                if watched.get(&name) == Some(&Watch::Live) {
                    watched.insert(name.clone(), Watch::Gone);
                    alerts.local("DeviceDisappeared", &name);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if last_scan.elapsed() < Duration::from_secs(1) {
            continue;
        }
        last_scan = Instant::now();
        // Arrays that came back, and (without NAME) arrays started since.
        let mut candidates: Vec<String> = watched
            .iter()
            .filter(|(_, w)| **w == Watch::Gone)
            .map(|(n, _)| n.clone())
            .collect();
        if a.name.is_none() {
            candidates.extend(
                running_arrays()
                    .into_iter()
                    .filter(|n| watched.get(n).is_none_or(|w| *w == Watch::Stopped)),
            );
        }
        for name in candidates {
            // A killed server leaves its socket file; connecting to it is refused at once.
            if subscribe(&name, a.increment, timeout, &tx).is_ok() {
                watched.insert(name.clone(), Watch::Live);
                alerts.local("NewArray", &name);
            }
        }
    }
    alerts.finish();
    0
}

/// `--oneshot`: every array checked once; `DegradedArray` for each degraded one (and
/// `TestMessage` with `--test`). Exit 0, or 2 when an array did not answer.
fn oneshot(names: &[String], alerts: &mut Alerts<'_>, timeout: Duration) -> i32 {
    let mut status = 0;
    for name in names {
        match call(name, &json!({"verb": "detail"}), timeout) {
            Ok(v) if v["ok"].as_bool() == Some(true) => {
                if alerts.args.test {
                    alerts.local("TestMessage", name);
                }
                if v["degraded"].as_bool() == Some(true) {
                    alerts.local("DegradedArray", name);
                }
            }
            Ok(v) => {
                eprintln!(
                    "raid1: array {name}: {}",
                    v["error"].as_str().unwrap_or("no answer")
                );
                status = 2;
            }
            Err(e) => {
                eprintln!("raid1: {e}");
                status = 2;
            }
        }
    }
    status
}
