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

/// `raid1 re-add NAME missing` (mdadm's `--re-add missing`): the devices the configuration
/// file's DEVICE lines name that are former members are re-added; other devices there (another
/// array's member, a blank file) are passed over without a word.
#[test]
fn re_add_missing_finds_the_former_members_through_device_lines() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let devs = sparse_images(dir.path(), "m", 4, 32 << 20);
    common::create_mirror("rm", &devs[..2], &[]);
    // A member of another array, and a blank image, in the same DEVICE pattern.
    ok(Command::new(RAID1)
        .args([
            "create",
            "-l1",
            "-n1",
            "--force",
            "--assume-clean",
            "-N",
            "other",
        ])
        .arg(&devs[2]));
    let conf = dir.path().join("mdadm.conf");
    std::fs::write(&conf, format!("DEVICE {}/m*.img\n", dir.path().display())).unwrap();
    ok(raid1(&run).args(["run", "--daemon"]).args(&devs[..2]));
    let member = devs[1].to_str().unwrap();
    ok(raid1(&run).args(["fail", "rm", member]));
    ok(raid1(&run).args(["remove", "rm", member]));
    let other_before = common::sha256_file(&devs[2]);
    let blank_before = common::sha256_file(&devs[3]);
    let out = tool(
        raid1(&run)
            .args(["re-add", "rm", "missing", "--config"])
            .arg(&conf),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("re-added") && err.contains("m1.img"), "{err}");
    assert!(!err.contains("m2.img") && !err.contains("m3.img"), "{err}");
    ok(raid1(&run).args(["wait", "rm"]));
    let d: serde_json::Value =
        serde_json::from_str(&ok(raid1(&run).args(["detail", "--json", "rm"]))).unwrap();
    assert_eq!(d["degraded"], false, "{d}");
    assert_eq!(common::sha256_file(&devs[2]), other_before);
    assert_eq!(common::sha256_file(&devs[3]), blank_before);
    // Nothing missing any more: said so, exit 0.
    let out = tool(
        raid1(&run)
            .args(["re-add", "rm", "missing", "--config"])
            .arg(&conf),
    );
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("no missing member"),
        "{}",
        text(&out.stderr)
    );
    ok(raid1(&run).args(["stop", "rm"]));
}
