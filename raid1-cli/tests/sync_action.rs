//! `raid1 sync-action` (md's `sync_action`): `frozen` stops a running resync at its checkpoint
//! and keeps it stopped, `idle` lets it start again from there, `check` starts a check that
//! `idle` ends. Checked on a running array through `detail --json`.

#[path = "run_common.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{RAID1, ok, raid1_in as raid1, sparse_images, text, tool};

fn detail(run: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(raid1(run).args(["detail", "--json", "sa"]))).unwrap()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn frozen_holds_a_resync_and_idle_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let devs = sparse_images(dir.path(), "sa", 2, 64 << 20);
    // Not --assume-clean: a resync runs from the start, slowly (2 MiB/s).
    ok(Command::new(RAID1)
        .args(["create", "-l1", "-n2", "-N", "sa"])
        .args(&devs));
    ok(raid1(&run)
        .args(["run", "--daemon", "--sync-speed-max", "2048"])
        .args(&devs));
    wait_for("the resync to start", || {
        detail(&run)["sync_action"] == "resync"
    });

    ok(raid1(&run).args(["sync-action", "sa", "frozen"]));
    wait_for("the resync to stop", || {
        detail(&run)["sync_action"].is_null()
    });
    let d = detail(&run);
    assert_eq!(d["sync_frozen"], true, "{d}");
    assert!(
        d["state"].as_str().unwrap().contains("active")
            || d["state"].as_str().unwrap().contains("clean"),
        "{d}"
    );
    // It stays stopped.
    std::thread::sleep(Duration::from_millis(600));
    assert!(detail(&run)["sync_action"].is_null());
    let status = ok(raid1(&run).arg("status"));
    assert!(!status.contains("resync ="), "{status}");

    // A check cannot start while a resync is pending; idle resumes the resync.
    ok(raid1(&run).args(["sync-action", "sa", "idle"]));
    wait_for("the resync to resume", || {
        detail(&run)["sync_action"] == "resync"
    });
    assert_eq!(detail(&run)["sync_frozen"], false);
    let out = tool(raid1(&run).args(["sync-action", "sa", "check"]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));

    // Let the resync end, then a check that idle ends.
    ok(raid1(&run).args(["sync-action", "sa", "frozen"]));
    ok(raid1(&run).args(["stop", "sa"]));
    ok(raid1(&run)
        .args(["run", "--daemon", "--sync-speed-max", "0"])
        .args(&devs));
    ok(raid1(&run).args(["wait", "sa"]));
    ok(raid1(&run).args(["stop", "sa"]));
    ok(raid1(&run)
        .args(["run", "--daemon", "--sync-speed-max", "2048"])
        .args(&devs));
    ok(raid1(&run).args(["sync-action", "sa", "check"]));
    wait_for("the check to start", || {
        detail(&run)["sync_action"] == "check"
    });
    ok(raid1(&run).args(["sync-action", "sa", "idle"]));
    wait_for("the check to end", || detail(&run)["sync_action"].is_null());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        detail(&run)["sync_action"].is_null(),
        "a check does not start again"
    );
    let out = tool(raid1(&run).args(["sync-action", "sa", "resync"]));
    assert_eq!(out.status.code(), Some(2));
    ok(raid1(&run).args(["stop", "sa"]));
}

/// md's `sync_min` / `sync_max`: a check over part of the array counts only the mismatches in
/// it, and the range is forgotten once the check ends.
#[test]
fn a_check_over_a_range_counts_only_its_mismatches() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let devs = sparse_images(dir.path(), "sr", 2, 32 << 20);
    common::create_mirror("sa", &devs, &[]);
    // Two 4 KiB differences on the second member: array sectors 2048 and 20480.
    let off = common::data_offset(&devs[1]);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&devs[1])
        .unwrap();
    for sector in [2048u64, 20480] {
        f.write_all_at(&[0x5a; 4096], off + sector * 512).unwrap();
    }
    drop(f);
    ok(raid1(&run).args(["run", "--daemon"]).args(&devs));
    let out = ok(raid1(&run).args([
        "sync-range",
        "sa",
        "--min",
        "1024",
        "--max",
        "8192",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["sync_min"].as_u64(), v["sync_max"].as_u64()),
        (Some(1024), Some(8192))
    );
    assert_eq!(detail(&run)["sync_max"], 8192);
    ok(raid1(&run).args(["sync-action", "sa", "check"]));
    ok(raid1(&run).args(["wait", "sa"]));
    // md counts a mismatch as the whole sync window it was found in.
    let d = detail(&run);
    let one = d["mismatch_cnt"].as_u64().unwrap();
    assert!(one >= 8, "{d}");
    // Forgotten once the check ended: the next one covers everything.
    assert_eq!(
        (d["sync_min"].as_u64(), d["sync_max"].as_str()),
        (Some(0), Some("max"))
    );
    ok(raid1(&run).args(["sync-action", "sa", "check"]));
    ok(raid1(&run).args(["wait", "sa"]));
    assert_eq!(detail(&run)["mismatch_cnt"].as_u64(), Some(2 * one));
    // Backwards: refused by name.
    let out = tool(raid1(&run).args(["sync-range", "sa", "--min", "9", "--max", "3"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("sync_min 9 is beyond sync_max 3"),
        "{}",
        text(&out.stderr)
    );
    ok(raid1(&run).args(["stop", "sa"]));
}

/// `raid1 sync-speed` changes a running sync's limits (md's sync_speed_min / sync_speed_max):
/// a resync held to 256 KiB/s finishes once the limit is lifted.
#[test]
fn sync_speed_lifts_the_limit_of_a_running_resync() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let devs = sparse_images(dir.path(), "sp", 2, 32 << 20);
    ok(Command::new(RAID1)
        .args(["create", "-l1", "-n2", "--bitmap", "none", "-N", "sa"])
        .args(&devs));
    ok(raid1(&run)
        .args([
            "run",
            "--daemon",
            "--sync-speed-max",
            "256",
            "--sync-speed-min",
            "128",
        ])
        .args(&devs));
    std::thread::sleep(Duration::from_millis(500));
    let d = detail(&run);
    assert_eq!(d["sync_action"], "resync", "{d}");
    let pos = d["sync_position_sectors"].as_u64().unwrap();
    // 256 KiB/s is 512 sectors a second: far from the end of 63,488.
    assert!(pos < 16384, "{d}");
    ok(raid1(&run).args(["sync-speed", "sa", "--max", "0", "--min", "0"]));
    let t0 = Instant::now();
    ok(raid1(&run).args(["wait", "sa"]));
    assert!(t0.elapsed() < Duration::from_secs(30));
    assert!(detail(&run)["sync_action"].is_null());
    ok(raid1(&run).args(["stop", "sa"]));
}
