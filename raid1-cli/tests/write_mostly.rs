//! WriteMostly, as mdadm users set it: at create (`-W DEV`), on a member being added
//! (`add --write-mostly`) and on a running member (`write-mostly [--off]`); each lands in the
//! member's superblock where mdadm reads it (`Flags : write-mostly`) and `detail` shows it.
//! (Linux reading a flag raid1 toggled: `tests/interop.rs`, cell `write-mostly-toggled`.)

#[path = "run_common.rs"]
mod common;

use std::path::Path;
use std::process::Command;

use common::{RAID1, ok, raid1_in as raid1, sparse_images, text, tool};

fn flagged(dev: &Path) -> bool {
    let out = ok(Command::new("mdadm").arg("--examine").arg(dev));
    out.lines()
        .any(|l| l.trim_start().starts_with("Flags :") && l.contains("write-mostly"))
}

/// The state words of `dev`'s row in `raid1 detail`.
fn row<'a>(detail: &'a str, dev: &Path) -> &'a str {
    let d = dev.to_str().unwrap();
    detail
        .lines()
        .find(|l| l.ends_with(d))
        .unwrap_or_else(|| panic!("{d} not in:\n{detail}"))
}

#[test]
fn write_mostly_at_create_add_and_on_a_running_member() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let devs = sparse_images(dir.path(), "w", 3, 32 << 20);

    // A device that is not listed: refused by name, nothing written.
    let out = tool(
        Command::new(RAID1)
            .args(["create", "-l1", "-n2", "-N", "wm", "-W"])
            .arg(&devs[2])
            .args(&devs[..2]),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("w2.img") && text(&out.stderr).contains("--write-mostly"));
    assert!(
        !tool(Command::new("mdadm").arg("--examine").arg(&devs[0]))
            .status
            .success()
    );

    ok(Command::new(RAID1)
        .args(["create", "-l1", "-n2", "--assume-clean", "-N", "wm", "-W"])
        .arg(&devs[1])
        .args(&devs[..2]));
    assert!(!flagged(&devs[0]) && flagged(&devs[1]));

    ok(raid1(&run).args(["run", "--daemon"]).args(&devs[..2]));
    let detail = ok(raid1(&run).args(["detail", "wm"]));
    assert!(
        row(&detail, &devs[1]).contains("active sync writemostly"),
        "{detail}"
    );
    assert!(!row(&detail, &devs[0]).contains("writemostly"), "{detail}");

    // Toggled while running: on the first, off the second.
    ok(raid1(&run).args(["write-mostly", "wm"]).arg(&devs[0]));
    ok(raid1(&run)
        .args(["write-mostly", "wm", "--off"])
        .arg(&devs[1]));
    let detail = ok(raid1(&run).args(["detail", "wm"]));
    assert!(row(&detail, &devs[0]).contains("writemostly"), "{detail}");
    assert!(!row(&detail, &devs[1]).contains("writemostly"), "{detail}");
    // A device that is no member: an error naming it.
    let out = tool(raid1(&run).args(["write-mostly", "wm"]).arg(&devs[2]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("w2.img"),
        "{}",
        text(&out.stderr)
    );

    // A member added WriteMostly.
    ok(raid1(&run)
        .args(["add", "wm", "--write-mostly"])
        .arg(&devs[2]));
    let detail = ok(raid1(&run).args(["detail", "wm"]));
    assert!(
        row(&detail, &devs[2]).contains("spare writemostly")
            || row(&detail, &devs[2]).contains("writemostly spare"),
        "{detail}"
    );
    ok(raid1(&run).args(["stop", "wm"]));
    assert!(flagged(&devs[0]), "set while running, kept on disk");
    assert!(!flagged(&devs[1]), "cleared while running, kept on disk");
    assert!(flagged(&devs[2]), "added write-mostly");
}

fn failfast_flag(dev: &Path) -> bool {
    let out = ok(Command::new("mdadm").arg("--examine").arg(dev));
    out.lines()
        .any(|l| l.trim_start().starts_with("Flags :") && l.contains("failfast"))
}

/// FailFast, as mdadm sets it: at create (`--failfast DEV`), on a member being added
/// (`add --failfast`) and on a running member (`failfast [--off]`); mdadm reads it back.
#[test]
fn failfast_at_create_add_and_on_a_running_member() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let devs = sparse_images(dir.path(), "f", 3, 32 << 20);
    let out = tool(
        Command::new(RAID1)
            .args(["create", "-l1", "-n2", "-N", "ff", "--failfast"])
            .arg(&devs[2])
            .args(&devs[..2]),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--failfast"),
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
            "ff",
            "--failfast",
        ])
        .arg(&devs[1])
        .args(&devs[..2]));
    assert!(!failfast_flag(&devs[0]) && failfast_flag(&devs[1]));
    ok(raid1(&run).args(["run", "--daemon"]).args(&devs[..2]));
    let detail = ok(raid1(&run).args(["detail", "ff"]));
    assert!(row(&detail, &devs[1]).contains("failfast"), "{detail}");
    ok(raid1(&run).args(["failfast", "ff"]).arg(&devs[0]));
    ok(raid1(&run).args(["failfast", "ff", "--off"]).arg(&devs[1]));
    ok(raid1(&run).args(["add", "ff", "--failfast"]).arg(&devs[2]));
    let detail = ok(raid1(&run).args(["detail", "ff"]));
    assert!(row(&detail, &devs[0]).contains("failfast"), "{detail}");
    assert!(!row(&detail, &devs[1]).contains("failfast"), "{detail}");
    assert!(row(&detail, &devs[2]).contains("failfast"), "{detail}");
    ok(raid1(&run).args(["stop", "ff"]));
    assert!(failfast_flag(&devs[0]), "set while running, kept on disk");
    assert!(
        !failfast_flag(&devs[1]),
        "cleared while running, kept on disk"
    );
    assert!(failfast_flag(&devs[2]), "added failfast");
    // Assembled again: the flags come back from the superblocks.
    ok(raid1(&run).args(["run", "--daemon"]).args(&devs));
    let detail = ok(raid1(&run).args(["detail", "ff"]));
    assert!(row(&detail, &devs[0]).contains("failfast"), "{detail}");
    assert!(!row(&detail, &devs[1]).contains("failfast"), "{detail}");
    ok(raid1(&run).args(["stop", "ff"]));
}
