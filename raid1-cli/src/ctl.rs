//! Client verbs that act on a running array through its control socket
//! (`$RAID1_RUN_DIR/NAME.sock`, line-delimited JSON; see `docs/CLI.md`).
//!
//! Exit status: 0 ok, 1 the array is degraded (`detail`), 2 error. No verb prompts.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{Value, json};

use crate::run::control::detail_text;

/// Exit status of `raid1 run` and of the control verbs (for `--help`).
pub const EXIT_CODES: &str = "\
Exit status:
  0  done
  1  the array is degraded (detail)
  2  error: the array is not running, the request was refused, or the command line is invalid";
use crate::run::{control_path, run_dir};

/// `raid1 detail NAME`.
#[derive(Debug, Args)]
pub struct DetailArgs {
    /// Array name.
    pub name: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `raid1 status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Verbs that only name the array (`stop`, `check`, `repair`, `wait`).
#[derive(Debug, Args)]
pub struct NameArgs {
    /// Array name.
    pub name: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Verbs on one member (`fail`, `remove`, `add`, `re-add`).
#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// Array name.
    pub name: String,
    /// Member device or image file (any path to the same file or device).
    pub device: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `raid1 grow NAME --raid-devices N`.
#[derive(Debug, Args)]
pub struct GrowArgs {
    /// Array name.
    pub name: String,
    /// New number of mirrors.
    #[arg(long, short = 'n')]
    pub raid_devices: u16,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `raid1 monitor`.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Only this array (default: every running array).
    pub name: Option<String>,
    /// Print JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// Sends one request to array `name` and returns its answer.
pub fn call(name: &str, req: &Value) -> Result<Value, String> {
    call_path(&control_path(name), name, req)
}

fn call_path(path: &Path, name: &str, req: &Value) -> Result<Value, String> {
    let mut s = UnixStream::connect(path)
        .map_err(|e| format!("array {name} is not running ({}: {e})", path.display()))?;
    s.write_all(format!("{req}\n").as_bytes())
        .map_err(|e| format!("array {name}: {e}"))?;
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .map_err(|e| format!("array {name}: {e}"))?;
    if line.is_empty() {
        return Err(format!("array {name}: the server closed the connection"));
    }
    serde_json::from_str(&line).map_err(|e| format!("array {name}: bad answer: {e}"))
}

fn finish(v: Result<Value, String>, json_out: bool) -> i32 {
    match v {
        Ok(v) if v["ok"].as_bool() == Some(true) => {
            if json_out {
                println!("{v}");
            }
            0
        }
        Ok(v) => {
            if json_out {
                println!("{v}");
            }
            eprintln!("raid1: {}", v["error"].as_str().unwrap_or("failed"));
            2
        }
        Err(e) => {
            if json_out {
                println!("{}", json!({"ok": false, "error": e}));
            }
            eprintln!("raid1: {e}");
            2
        }
    }
}

/// `raid1 detail`.
pub fn detail(a: &DetailArgs) -> i32 {
    match call(&a.name, &json!({"verb": "detail"})) {
        Ok(v) if v["ok"].as_bool() == Some(true) => {
            if a.json {
                println!("{v}");
            } else {
                print!("{}", detail_text(&v));
            }
            if v["degraded"].as_bool() == Some(true) {
                1
            } else {
                0
            }
        }
        other => finish(other, a.json),
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

/// `raid1 status`: every running array in `/proc/mdstat` format.
pub fn status(a: &StatusArgs) -> i32 {
    let mut blocks = Vec::new();
    let mut status = 0;
    for name in running_arrays() {
        match call(&name, &json!({"verb": "status"})) {
            Ok(v) => blocks.push((name, v["mdstat"].as_str().unwrap_or("").to_string())),
            Err(e) => {
                if Path::new(&control_path(&name)).exists() {
                    eprintln!("raid1: {e}");
                    status = 2;
                }
            }
        }
    }
    if a.json {
        let arrays: Vec<Value> = blocks
            .iter()
            .map(|(n, b)| json!({"array": n, "mdstat": b}))
            .collect();
        println!("{}", json!({"ok": status == 0, "arrays": arrays}));
    } else {
        println!("Personalities : [raid1] ");
        for (_, b) in &blocks {
            print!("{b}");
            println!("      ");
        }
        println!("unused devices: <none>");
    }
    status
}

fn abs(p: &Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// `raid1 stop|check|repair|wait NAME`.
pub fn simple(verb: &str, a: &NameArgs) -> i32 {
    if verb == "wait" && !a.json {
        return wait_with_progress(&a.name);
    }
    finish(call(&a.name, &json!({"verb": verb})), a.json)
}

/// A running resync, recovery or check as `detail` reports it: (action, position, end) in
/// sectors.
fn sync_of(name: &str) -> Option<(String, u64, u64)> {
    let v = call(name, &json!({"verb": "detail"})).ok()?;
    Some((
        v["sync_action"].as_str()?.to_string(),
        v["sync_position_sectors"].as_u64()?,
        v["sync_end_sectors"].as_u64()?,
    ))
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
            println!("{name}: {action} {pct}% ({}/{} KiB)", pos / 2, end / 2);
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
        println!(
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

/// `raid1 wait NAME` without `--json`: waits as the bare verb does and meanwhile shows the
/// running resync/recovery/check, as a progress bar (percent, speed, time left) when stdout
/// is a terminal, as plain lines otherwise.
fn wait_with_progress(name: &str) -> i32 {
    use indicatif::{ProgressBar, ProgressStyle};
    use std::io::IsTerminal;
    use std::time::Duration;

    let (tx, rx) = std::sync::mpsc::channel();
    {
        let name = name.to_string();
        std::thread::spawn(move || {
            let _ = tx.send(call(&name, &json!({"verb": "wait"})));
        });
    }
    let tty = std::io::stdout().is_terminal();
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
        let Some((action, pos, end)) = sync_of(name) else {
            continue;
        };
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
    finish(answer, false)
}

/// `raid1 fail|remove|add|re-add NAME DEV`.
pub fn device(verb: &str, a: &DeviceArgs) -> i32 {
    finish(
        call(&a.name, &json!({"verb": verb, "device": abs(&a.device)})),
        a.json,
    )
}

/// `raid1 grow NAME --raid-devices N`.
pub fn grow(a: &GrowArgs) -> i32 {
    finish(
        call(
            &a.name,
            &json!({"verb": "grow", "raid_devices": a.raid_devices}),
        ),
        a.json,
    )
}

/// `raid1 monitor`: one line per event of every running array (or of one), until they stop.
pub fn monitor(a: &MonitorArgs) -> i32 {
    let names = match &a.name {
        Some(n) => vec![n.clone()],
        None => running_arrays(),
    };
    if names.is_empty() {
        eprintln!("raid1: no running array in {}", run_dir().display());
        return 2;
    }
    let (tx, rx) = std::sync::mpsc::channel::<Option<String>>();
    let mut streams = 0;
    for name in names {
        let mut s = match UnixStream::connect(control_path(&name)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("raid1: array {name} is not running: {e}");
                continue;
            }
        };
        if s.write_all(format!("{}\n", json!({"verb": "monitor"})).as_bytes())
            .is_err()
        {
            continue;
        }
        streams += 1;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(s).lines() {
                let Ok(line) = line else { break };
                if tx.send(Some(line)).is_err() {
                    return;
                }
            }
            let _ = tx.send(None);
        });
    }
    if streams == 0 {
        return 2;
    }
    let mut open = streams;
    let out = std::io::stdout();
    while open > 0 {
        match rx.recv() {
            Ok(Some(line)) => {
                let text = if a.json {
                    line
                } else {
                    match serde_json::from_str::<Value>(&line) {
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
                        Err(_) => line,
                    }
                };
                let mut o = out.lock();
                let _ = writeln!(o, "{text}");
                let _ = o.flush();
            }
            Ok(None) => open -= 1,
            Err(_) => break,
        }
    }
    0
}
