//! `raid1 add-spare` (mdadm's `--add-spare`): a former member that `add` would re-add is
//! added as a new spare instead: a fresh superblock (new device UUID, a spare's role) and a
//! full recovery, after which its data area equals the other mirror's.

#[path = "run_common.rs"]
mod common;

use std::process::Command;

use common::{RAID1, data_areas_equal, examine, ok, raid1_in as raid1, sparse_images, text, tool};

#[test]
fn add_spare_makes_a_former_member_a_new_spare() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let devs = sparse_images(dir.path(), "s", 2, 32 << 20);
    ok(Command::new(RAID1)
        .args(["create", "-l1", "-n2", "--assume-clean", "-N", "sp"])
        .args(&devs));
    let before = examine(&devs[1])["Device UUID"].clone();
    ok(raid1(&run).args(["run", "--daemon"]).args(&devs));
    let member = devs[1].to_str().unwrap();
    ok(raid1(&run).args(["fail", "sp", member]));
    ok(raid1(&run).args(["remove", "sp", member]));
    // Written while the member is out: only a full recovery brings it to the new member.
    let uri = format!("nbd+unix:///?socket={}", run.join("sp.nbd").display());
    let w = ok(Command::new("qemu-io").args(["-f", "raw", &uri, "-c", "write -P 0x5a 1M 8M"]));
    assert!(!w.contains("failed"), "{w}");
    let out = tool(raid1(&run).args(["add-spare", "sp", member]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("re-added"),
        "{}",
        text(&out.stderr)
    );
    ok(raid1(&run).args(["wait", "sp"]));
    let detail = ok(raid1(&run).args(["detail", "sp"]));
    assert!(detail.contains("active sync"), "{detail}");
    ok(raid1(&run).args(["stop", "sp"]));
    let after = examine(&devs[1]);
    assert_ne!(
        after["Device UUID"], before,
        "a fresh superblock, not the old one"
    );
    assert!(data_areas_equal(&devs[0], &devs[1], 30 << 20));
    // add-spare of a device that holds another array's superblock still needs --force.
    let other = sparse_images(dir.path(), "o", 2, 32 << 20);
    ok(Command::new(RAID1)
        .args(["create", "-l1", "-n2", "--assume-clean", "-N", "other"])
        .args(&other));
    ok(raid1(&run).args(["run", "--daemon"]).args(&devs));
    let out = tool(raid1(&run).args(["add-spare", "sp"]).arg(&other[0]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--force"),
        "{}",
        text(&out.stderr)
    );
    ok(raid1(&run).args(["stop", "sp"]));
}
