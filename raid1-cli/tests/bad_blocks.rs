//! The bad-block log at run time, as md keeps it: a write error on a member with a log records
//! the range there instead of failing the member, the log reaches the disk with the superblock
//! before the write is acknowledged, reads avoid the range, `raid1 examine --badblocks` and
//! `mdadm --examine-badblocks` list it, and a later successful write removes it again. A
//! rebuild whose only source cannot read a sector records that sector's page on both members
//! and runs to its end.
//!
//! The failing member is a real file behind nbdkit's `eval` plugin, presented again as a file by
//! nbdfuse: its writes (or reads) fail with EIO while a range is armed, and everything else goes
//! to the image. Needs root and /dev/fuse. (What Linux makes of the recorded log: `tests/interop.rs`,
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

/// `qemu-io CMD`, which must fail with an I/O error (a read no member can serve).
fn qemu_io_fails(s: &Server, cmd: &str) {
    let out = common::tool(
        Command::new("qemu-io")
            .args(["-f", "raw", "-c", cmd])
            .arg(s.uri()),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Input/output error"), "{cmd}: {text}");
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

/// Each member's `bad_block_sectors` in `raid1 detail --json`.
fn bad_sectors(d: &serde_json::Value) -> Vec<u64> {
    d["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["bad_block_sectors"].as_u64().unwrap())
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
    assert_eq!(bad_sectors(&d), vec![0, 128], "{d}");
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

#[test]
fn a_sector_the_only_source_cannot_read_is_recorded_and_the_rebuild_ends() {
    assert!(Path::new("/dev/fuse").exists(), "needs /dev/fuse");
    let dir = tempfile::tempdir().unwrap();
    let imgs = sparse_images(dir.path(), "lr", 2, 32 * MIB);
    common::create_mirror("lr", &imgs, &[]);
    let s = Server::start(dir.path(), "lr", &[], &imgs);
    qemu_io(&s, "write -P 0x11 0 8M");
    s.stop();

    // Member 0's sector 4099 of the data area (in the page 4096..4104) cannot be read, and
    // member 1 is rebuilt from it in full.
    let off = data_offset(&imgs[0]);
    let fuse = ArmedMember::start(&imgs[0], dir.path());
    fuse.arm_reads(off + 4099 * 512, off + 4100 * 512);
    let devs = vec![fuse.disk(), imgs[1].clone()];
    let s = Server::start(dir.path(), "lr", &[], &devs);
    let member = imgs[1].to_str().unwrap();
    s.ctl_ok(&["fail", "lr", member]);
    s.ctl_ok(&["remove", "lr", member]);
    s.ctl_ok(&["add-spare", "lr", member]);
    s.ctl_ok(&["wait", "lr"]);

    // md's fix_sync_read_error: the page no member could read is recorded on both, the rebuilt
    // member is in sync, and the array is whole again.
    let d = s.detail();
    assert_eq!(d["degraded"], false, "{d}");
    let states = member_states(&s);
    assert!(
        states.len() == 2 && states.iter().all(|st| st.contains("active sync")),
        "{d}"
    );
    assert_eq!(bad_sectors(&d), vec![8, 8], "{d}");
    // No read returns what nobody could read; everything else came across.
    qemu_io_fails(&s, "read 2M 4K");
    qemu_io_fails(&s, "read 2051K 512");
    reads_back(&s, 0x11, 0, 2 * MIB);
    reads_back(&s, 0x11, 2 * MIB + 4096, 6 * MIB - 4096);
    s.stop();
    drop(fuse);
    let page = |img: &Path| ((data_offset(img) / 512) + 4096, 8);
    for img in &imgs {
        assert_eq!(listed(img), vec![page(img)], "{}", img.display());
        assert_eq!(listed_by_mdadm(img), vec![page(img)], "{}", img.display());
        let ex = ok(Command::new("mdadm").arg("--examine").arg(img));
        assert!(ex.contains("bad blocks present"), "{ex}");
    }
    // The rebuilt member holds the source's data everywhere but in that page.
    let (a, b) = (File::open(&imgs[0]).unwrap(), File::open(&imgs[1]).unwrap());
    let (oa, ob) = (data_offset(&imgs[0]), data_offset(&imgs[1]));
    let mut x = vec![0u8; MIB as usize];
    let mut y = vec![0u8; MIB as usize];
    for m in 0..8 {
        a.read_exact_at(&mut x, oa + m * MIB).unwrap();
        b.read_exact_at(&mut y, ob + m * MIB).unwrap();
        if m == 2 {
            assert_eq!(x[4096..], y[4096..], "MiB 2 past the page");
        } else {
            assert_eq!(x, y, "MiB {m}");
        }
    }

    // Restarted on the plain files (the media error gone): the log is honoured, and a write
    // over the page makes it good on both.
    let s = Server::start(dir.path(), "lr", &[], &imgs);
    qemu_io_fails(&s, "read 2M 4K");
    qemu_io(&s, "write -P 0x33 2M 4K");
    reads_back(&s, 0x33, 2 * MIB, 4096);
    s.stop();
    for img in &imgs {
        assert!(listed(img).is_empty(), "{}", img.display());
    }
}
