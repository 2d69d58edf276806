//! The bad-block log at run time, as md keeps it: a write error on a member with a log records
//! the range there instead of failing the member, the log reaches the disk with the superblock
//! before the write is acknowledged, reads avoid the range, `raid1 examine --badblocks` and
//! `mdadm --examine-badblocks` list it, and a later successful write removes it again.
//!
//! The failing member is a real file behind nbdkit's `eval` plugin, presented again as a file by
//! nbdfuse: its writes fail with EIO while a range is armed, and everything else goes to the
//! image. Needs root and /dev/fuse. (What Linux makes of the recorded log: `tests/interop.rs`,
//! cell `bad-block-recorded`.)

#[path = "run_common.rs"]
mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ArmedMember, RAID1, Server, data_offset, ok, sparse_images};

const MIB: u64 = 1 << 20;

fn qemu_io(s: &Server, cmd: &str) -> String {
    ok(Command::new("qemu-io")
        .args(["-f", "raw", "-c", cmd])
        .arg(s.uri()))
}

/// Whether the array's bytes `[at, at + len)` all hold `pattern` (read through NBD).
fn reads_back(s: &Server, pattern: u8, at: u64, len: u64) {
    let out = qemu_io(s, &format!("read -P {pattern:#x} {at} {len}"));
    assert!(!out.contains("fail") && !out.contains("error"), "{out}");
}

/// `raid1 examine --badblocks DEV`'s entries as `(sector, sectors)`.
fn listed(dev: &Path) -> Vec<(u64, u64)> {
    let out = ok(Command::new(RAID1)
        .args(["examine", "--badblocks"])
        .arg(dev));
    entries(&out)
}

/// `mdadm --examine-badblocks DEV`'s entries.
fn listed_by_mdadm(dev: &Path) -> Vec<(u64, u64)> {
    let out = ok(Command::new("mdadm").arg("--examine-badblocks").arg(dev));
    entries(&out)
}

/// The "<sector> for <n> sectors" lines.
fn entries(text: &str) -> Vec<(u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let (s, rest) = l.trim().split_once(" for ")?;
            let n = rest.strip_suffix(" sectors")?;
            Some((s.parse().ok()?, n.parse().ok()?))
        })
        .collect()
}

fn member_states(s: &Server) -> Vec<String> {
    s.detail()["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["state"].to_string())
        .collect()
}

#[test]
fn a_write_error_is_recorded_in_the_log_and_the_member_stays() {
    assert!(Path::new("/dev/fuse").exists(), "needs /dev/fuse");
    let dir = tempfile::tempdir().unwrap();
    let imgs = sparse_images(dir.path(), "bb", 2, 32 * MIB);
    common::create_mirror("bb", &imgs, &[]);
    // mdadm's layout reserves a log: 512 entries.
    let ex = ok(Command::new("mdadm").arg("--examine").arg(&imgs[1]));
    assert!(ex.contains("Bad Block Log : 512 entries available"), "{ex}");
    let off = data_offset(&imgs[1]);
    let fuse = ArmedMember::start(&imgs[1], dir.path());
    let devs = vec![imgs[0].clone(), fuse.disk()];
    let s = Server::start(dir.path(), "bb", &[], &devs);
    qemu_io(&s, "write -P 0x11 0 4M");

    // 64 KiB at 1 MiB of the array cannot be written on member 1.
    fuse.arm(off + MIB, off + MIB + 65536);
    let out = qemu_io(&s, "write -P 0x22 1M 64K");
    assert!(
        !out.contains("fail"),
        "the write succeeds on member 0: {out}"
    );
    fuse.disarm();
    // Acknowledged only after the log was written: it is on the image now.
    let range = ((off + MIB) / 512, 128);
    assert_eq!(listed(&imgs[1]), vec![range]);
    assert_eq!(listed_by_mdadm(&imgs[1]), vec![range]);
    assert!(listed(&imgs[0]).is_empty());
    let ex = ok(Command::new("mdadm").arg("--examine").arg(&imgs[1]));
    assert!(ex.contains("bad blocks present"), "{ex}");
    // The member stays, in sync.
    let d = s.detail();
    assert_eq!(d["degraded"], false, "{d}");
    let states = member_states(&s);
    assert_eq!(states.len(), 2, "{d}");
    assert!(
        states
            .iter()
            .all(|st| st.contains("active sync") && !st.contains("faulty")),
        "{d}"
    );
    let bad: Vec<u64> = d["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["bad_block_sectors"].as_u64().unwrap())
        .collect();
    assert_eq!(bad, vec![0, 128], "{d}");
    // Member 1 still holds the old bytes there, and no read may return them.
    let mut old = vec![0u8; 65536];
    File::open(&imgs[1])
        .unwrap()
        .read_exact_at(&mut old, off + MIB)
        .unwrap();
    assert!(old.iter().all(|&b| b == 0x11));
    for _ in 0..4 {
        reads_back(&s, 0x22, MIB, 65536);
    }
    reads_back(&s, 0x11, 0, MIB);
    reads_back(&s, 0x11, MIB + 65536, 3 * MIB - 65536);
    s.stop();
    assert_eq!(listed(&imgs[1]), vec![range], "a clean stop keeps the log");

    // Restarted on the plain files: the log is read back and honoured.
    let s = Server::start(dir.path(), "bb", &[], &imgs);
    reads_back(&s, 0x22, MIB, 65536);
    // A write that succeeds there makes the sectors good: the entry goes, on disk too.
    qemu_io(&s, "write -P 0x33 1M 64K");
    let t0 = Instant::now();
    while !listed(&imgs[1]).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the entry stays in the log: {:?}",
            listed(&imgs[1])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    s.stop();
    assert!(listed_by_mdadm(&imgs[1]).is_empty());
    let ex = ok(Command::new("mdadm").arg("--examine").arg(&imgs[1]));
    assert!(!ex.contains("bad blocks present"), "{ex}");
    let mut now = vec![0u8; 65536];
    File::open(&imgs[1])
        .unwrap()
        .read_exact_at(&mut now, off + MIB)
        .unwrap();
    assert!(now.iter().all(|&b| b == 0x33));
}
