//! Helpers shared by the `run_*` test files (included with `#[path]`; as a test target of
//! its own it has no tests).
#![allow(dead_code)]

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const RAID1: &str = env!("CARGO_BIN_EXE_raid1");

pub fn tool(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is it installed?)"))
}

pub fn ok(cmd: &mut Command) -> String {
    let out = tool(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running `raid1 run`; killed on drop if still running.
pub struct Server {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub run_dir: PathBuf,
    pub name: String,
}

impl Server {
    pub fn start(dir: &Path, name: &str, extra: &[&str], devs: &[PathBuf]) -> Server {
        let socket = dir.join(format!("{name}.nbd.sock"));
        let run_dir = dir.join("rd");
        let child = Command::new(RAID1)
            .env("RAID1_RUN_DIR", &run_dir)
            .arg("run")
            .arg("--nbd")
            .arg(format!("unix:{}", socket.display()))
            .args(["--name", name])
            .args(extra)
            .args(devs)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn raid1 run");
        let mut s = Server {
            child: Some(child),
            socket,
            run_dir,
            name: name.to_string(),
        };
        let t0 = Instant::now();
        let live = |p: &Path| UnixStream::connect(p).is_ok();
        while !live(&s.socket) || !live(&s.run_dir.join(format!("{name}.sock"))) {
            if let Some(st) = s.child.as_mut().unwrap().try_wait().unwrap() {
                let out = s.child.take().unwrap().wait_with_output().unwrap();
                panic!(
                    "raid1 run exited early ({st}): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "server not ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    pub fn uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.socket.display())
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        tool(
            Command::new(RAID1)
                .env("RAID1_RUN_DIR", &self.run_dir)
                .args(args),
        )
    }

    pub fn ctl_ok(&self, args: &[&str]) -> String {
        ok(Command::new(RAID1)
            .env("RAID1_RUN_DIR", &self.run_dir)
            .args(args))
    }

    /// `raid1 detail --json` (exit 0, or 1 when degraded).
    pub fn detail(&self) -> serde_json::Value {
        let out = self.ctl(&["detail", &self.name, "--json"]);
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "raid1 detail: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn stop(mut self) {
        let child = self.child.take().unwrap();
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "raid1 run exit {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn examine_state(dev: &Path) -> String {
    ok(Command::new("mdadm").arg("--examine").arg(dev))
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(" : ")?;
            (k.trim() == "State").then(|| v.trim().to_string())
        })
        .unwrap()
}

/// Data offset of member `dev` in bytes (from `mdadm --examine`).
pub fn data_offset(dev: &Path) -> u64 {
    let ex = ok(Command::new("mdadm").arg("--examine").arg(dev));
    let sectors: u64 = ex
        .lines()
        .find_map(|l| l.trim().strip_prefix("Data Offset : "))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    sectors * 512
}

/// Whether the data areas (`bytes` long) of two members are identical, compared piecewise.
pub fn data_areas_equal(a: &Path, b: &Path, bytes: u64) -> bool {
    use std::os::unix::fs::FileExt;
    let (fa, fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (oa, ob) = (data_offset(a), data_offset(b));
    let mut x = vec![0u8; 4 << 20];
    let mut y = vec![0u8; 4 << 20];
    let mut at = 0;
    while at < bytes {
        let n = (bytes - at).min(x.len() as u64) as usize;
        fa.read_exact_at(&mut x[..n], oa + at).unwrap();
        fb.read_exact_at(&mut y[..n], ob + at).unwrap();
        if x[..n] != y[..n] {
            return false;
        }
        at += n as u64;
    }
    true
}
