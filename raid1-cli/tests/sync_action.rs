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
