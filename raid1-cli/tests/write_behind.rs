//! Write-behind (mdadm's `--write-behind=N` with `--write-mostly`): the WriteMostly member is
//! slowed down by nbdkit's delay filter (attached as a file through nbdfuse); a write to a chunk
//! whose bitmap bit is already set is acknowledged while that member still writes it
//! (`detail --json` counts it in `behind_writes`); a flush waits for it; both members then hold
//! the data.
//! The setting is md's: the bitmap header carries it (`mdadm --examine-bitmap`: "Allow write
//! behind, max N"), and it is refused without a bitmap or a write-mostly device.

#[path = "run_common.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    CMD_FLUSH, CMD_WRITE, FuseMember, NbdClient, RAID1, Server, data_areas_equal, ok,
    sparse_images, text, tool,
};

#[test]
fn a_write_is_acknowledged_while_the_write_mostly_member_is_still_writing() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = sparse_images(dir.path(), "b", 2, 32 << 20);
    // Refusals first: nothing is written.
    let out = tool(
        Command::new(RAID1)
            .args(["create", "-l1", "-n2", "-N", "wb", "--write-behind", "8"])
            .args(&imgs),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--write-mostly"),
        "{}",
        text(&out.stderr)
    );
    let out = tool(
        Command::new(RAID1)
            .args(["create", "-l1", "-n2", "-N", "wb", "--bitmap", "none"])
            .args(["--write-behind", "8", "-W"])
            .arg(&imgs[1])
            .args(&imgs),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("internal bitmap"),
        "{}",
        text(&out.stderr)
    );

    ok(Command::new(RAID1)
        .args([
            "create",
            "-l1",
            "-n2",
            "--assume-clean",
            "-N",
            "wb",
            "--write-behind",
            "8",
            "-W",
        ])
        .arg(&imgs[1])
        .args(&imgs));
    assert_eq!(write_mode(&imgs[1]), "Allow write behind, max 8");

    let slow = FuseMember::start(
        &imgs[1],
        dir.path(),
        "slow.sock",
        "delay",
        &["wdelay=2".to_string()],
    );
    let devs = vec![imgs[0].clone(), slow.disk()];
    let s = Server::start(dir.path(), "wb", &[], &devs);
    assert_eq!(s.detail()["write_behind"], 8);
    // A client that does not flush (a flush waits for the behind writes: it makes every
    // acknowledged write durable on every member).
    let mut c = NbdClient::connect(&s.socket).unwrap();
    // The first write sets its chunk's bit on both members (the slow one too); the second, in
    // the same chunk, only writes data.
    c.request(CMD_WRITE, 0, 1 << 20, 65536, &[0x61; 65536])
        .unwrap();
    let t0 = Instant::now();
    while s.detail()["behind_writes"] != 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the behind write never ended"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    c.request(CMD_WRITE, 0, 1 << 20, 65536, &[0x62; 65536])
        .unwrap();
    let d = s.detail();
    assert_eq!(d["behind_writes"], 1, "{d}");
    assert_eq!(d["degraded"], false, "{d}");
    // A flush waits for it: nothing behind any more once it is answered.
    c.request(CMD_FLUSH, 0, 0, 0, &[]).unwrap();
    assert_eq!(s.detail()["behind_writes"], 0);
    drop(c);
    s.stop();
    drop(slow);
    assert!(data_areas_equal(&imgs[0], &imgs[1], 30 << 20));
}

/// `mdadm --write-behind` of `examine-bitmap` on image `img` (through a loop device).
fn write_mode(img: &std::path::Path) -> String {
    let lo = ok(Command::new("losetup").args(["-f", "--show"]).arg(img));
    let lo = lo.trim().to_string();
    let bm = tool(Command::new("mdadm").args(["--examine-bitmap", &lo]));
    ok(Command::new("losetup").args(["-d", &lo]));
    text(&bm.stdout)
        .lines()
        .find_map(|l| {
            l.split_once(" : ")
                .filter(|(k, _)| k.trim() == "Write Mode")
        })
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

/// `raid1 grow NAME --write-behind N` (mdadm's `--grow --write-behind=N`) on a running array:
/// every member's bitmap header records it, a restart keeps it, 0 turns it off; refused
/// without a bitmap.
#[test]
fn write_behind_is_changed_on_the_running_array() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = sparse_images(dir.path(), "g", 4, 32 << 20);
    ok(Command::new(RAID1)
        .args(["create", "-l1", "-n2", "--assume-clean", "-N", "gw", "-W"])
        .arg(&imgs[1])
        .args(&imgs[..2]));
    let s = Server::start(dir.path(), "gw", &[], &imgs[..2]);
    assert_eq!(s.detail()["write_behind"], 0);
    let said = s.ctl_ok(&["grow", "gw", "--write-behind", "4"]);
    assert!(said.is_empty() || said.contains("write-behind"), "{said}");
    assert_eq!(s.detail()["write_behind"], 4);
    s.stop();
    for img in &imgs[..2] {
        assert_eq!(write_mode(img), "Allow write behind, max 4");
    }
    let s = Server::start(dir.path(), "gw", &[], &imgs[..2]);
    assert_eq!(s.detail()["write_behind"], 4);
    s.ctl_ok(&["grow", "gw", "--write-behind", "0"]);
    assert_eq!(s.detail()["write_behind"], 0);
    s.stop();
    assert_eq!(write_mode(&imgs[0]), "Normal");
    // No bitmap: refused, in words.
    ok(Command::new(RAID1)
        .args([
            "create",
            "-l1",
            "-n2",
            "--assume-clean",
            "-N",
            "nb",
            "--bitmap",
            "none",
        ])
        .args(&imgs[2..]));
    let s = Server::start(dir.path(), "nb", &[], &imgs[2..]);
    let out = s.ctl(&["grow", "nb", "--write-behind", "4"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("needs the bitmap"),
        "{}",
        text(&out.stderr)
    );
    s.stop();
}
