//! Read-only arrays, as mdadm's `--readonly` / `--readwrite` and `--assemble --readonly` make
//! them: writes fail (EPERM), reads are served, and nothing at all is written to the members
//! (their files stay byte for byte the same, timers and stop included) until read-write.

#[path = "run_common.rs"]
mod common;

use std::process::Command;
use std::time::Duration;

use common::{RAID1, Server, create_mirror, examine, hashes, ok, sparse_images, text, tool};

fn qemu_io(s: &Server, cmd: &str) -> std::process::Output {
    tool(
        Command::new("qemu-io")
            .args(["-f", "raw", "-c", cmd])
            .arg(s.uri()),
    )
}

fn refused(s: &Server, cmd: &str) {
    let out = qemu_io(s, cmd);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        all.contains("Operation not permitted"),
        "{cmd} on a read-only array: {all}"
    );
}

fn reads(s: &Server, cmd: &str) {
    let out = qemu_io(s, cmd);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success() && !all.contains("fail") && !all.contains("not permitted"),
        "{cmd}: {all}"
    );
}

#[test]
fn readonly_and_readwrite_on_a_running_array() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = sparse_images(dir.path(), "ro", 2, 32 << 20);
    create_mirror("ro", &imgs, &[]);
    let s = Server::start(dir.path(), "ro", &[], &imgs);
    reads(&s, "write -P 0x11 0 3M");
    s.ctl_ok(&["readonly", "ro"]);
    assert_eq!(s.detail()["read_only"], true);
    let status = s.ctl_ok(&["status"]);
    assert!(status.contains("ro : active (read-only) raid1"), "{status}");
    // Marked clean before it became read-only.
    for p in &imgs {
        assert_eq!(examine(p)["State"], "clean");
    }
    let before = hashes(&imgs);
    refused(&s, "write -P 0x22 0 4k");
    refused(&s, "discard 0 1M");
    reads(&s, "read -P 0x11 0 3M");
    // The safe-mode and bitmap timers come and go: still nothing written.
    std::thread::sleep(Duration::from_millis(1200));
    reads(&s, "read -P 0x11 1M 64k");
    assert_eq!(
        hashes(&imgs),
        before,
        "a member was written while read-only"
    );
    // Asking again is fine.
    s.ctl_ok(&["readonly", "ro"]);
    s.ctl_ok(&["readwrite", "ro"]);
    assert_eq!(s.detail()["read_only"], false);
    reads(&s, "write -P 0x33 0 4k");
    reads(&s, "read -P 0x33 0 4k");
    s.stop();
    assert_eq!(examine(&imgs[0])["State"], "clean");
}

#[test]
fn assembled_read_only_a_dirty_array_is_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = sparse_images(dir.path(), "dr", 2, 32 << 20);
    create_mirror("dr", &imgs, &[]);
    let s = Server::start(dir.path(), "dr", &[], &imgs);
    // Killed while dirty (a write, then SIGKILL before the safe-mode delay).
    reads(&s, "write -P 0x44 0 1M");
    let mut dirty = false;
    for _ in 0..5 {
        reads(&s, "write -P 0x44 0 64k");
        s.child
            .as_ref()
            .map(|c| unsafe { libc::kill(c.id() as i32, libc::SIGKILL) });
        std::thread::sleep(Duration::from_millis(200));
        if examine(&imgs[0])["State"] == "active" {
            dirty = true;
            break;
        }
    }
    assert!(dirty, "never killed while dirty");
    drop(s);
    let before = hashes(&imgs);
    let s = Server::start(dir.path(), "dr", &["--readonly"], &imgs);
    assert_eq!(s.detail()["read_only"], true);
    assert!(
        s.detail()["sync_action"].is_null(),
        "no resync while read-only"
    );
    reads(&s, "read -P 0x44 0 1M");
    refused(&s, "write -P 0x55 0 4k");
    s.stop();
    assert_eq!(
        hashes(&imgs),
        before,
        "assembled read-only, a member was written (superblock, bitmap or resync)"
    );
    assert_eq!(examine(&imgs[0])["State"], "active");
    // Started normally, it resyncs and is clean after the stop.
    let s = Server::start(dir.path(), "dr", &[], &imgs);
    ok(Command::new(RAID1)
        .env("RAID1_RUN_DIR", &s.run_dir)
        .args(["wait", "dr"]));
    reads(&s, "read -P 0x44 0 1M");
    s.stop();
    assert_eq!(examine(&imgs[0])["State"], "clean");
}
