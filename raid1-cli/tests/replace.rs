//! `raid1 replace NAME DEV [--with SPARE]` (mdadm's `--replace`): a spare is rebuilt beside
//! the member, which stays in service; when the rebuild ends the spare holds the member's slot
//! and the member is faulty. Mid-way, the spare's superblock says what mdadm reads as
//! "Replacement device N", and a stop and a restart resume the rebuild where it was.
//! (Linux finishing a replacement raid1 started: `tests/interop.rs`, cell `replace`.)

#[path = "run_common.rs"]
mod common;

use std::path::Path;
use std::process::Command;

use common::{data_areas_equal, examine, ok, raid1_in as raid1, sparse_images, text, tool};
use serde_json::Value;

fn detail(run: &Path, name: &str) -> Value {
    let out = tool(raid1(run).args(["detail", "--json", name]));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `detail --json` row of `dev`.
fn row(d: &Value, dev: &Path) -> Value {
    d["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["device"].as_str() == dev.to_str())
        .cloned()
        .unwrap_or_else(|| panic!("{} not in {d}", dev.display()))
}

/// `raid1 replace rp ARGS...` must fail with exit 2 and a message holding every `want`.
fn refused(run: &Path, args: &[&Path], want: &[&str]) {
    let mut cmd = raid1(run);
    cmd.args(["replace", "rp"]).args(args);
    let out = tool(&mut cmd);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(want.iter().all(|w| err.contains(w)), "{err}");
}

#[test]
fn replace_rebuilds_a_spare_beside_the_member_then_fails_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let devs = sparse_images(dir.path(), "r", 4, 32 << 20);
    common::create_mirror("rp", &devs[..2], &[]);
    // Slow enough to look at it mid-way.
    ok(raid1(&run)
        .args(["run", "--daemon", "--sync-speed-max", "2048"])
        .args(&devs[..2]));
    let uri = format!("nbd+unix:///?socket={}", run.join("rp.nbd").display());
    let w = ok(Command::new("qemu-io").args(["-f", "raw", &uri, "-c", "write -P 0x3c 1M 20M"]));
    assert!(!w.contains("failed"), "{w}");

    // Refusals, each naming what is wrong; nothing changes.
    let with = Path::new("--with");
    refused(
        &run,
        &[&devs[0], with, &devs[2]],
        &["r2.img", "add it as a spare"],
    );
    refused(&run, &[&devs[0], with, &devs[1]], &["not a spare"]);
    ok(raid1(&run).args(["add", "rp"]).arg(&devs[2]));
    ok(raid1(&run).args(["add", "rp"]).arg(&devs[3]));
    refused(&run, &[&devs[2]], &["only an in-sync member"]);

    // --with names the second spare: that one is rebuilt, the first stays a spare.
    let out = tool(
        raid1(&run)
            .args(["replace", "rp"])
            .arg(&devs[0])
            .arg("--with")
            .arg(&devs[3]),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stderr);
    assert!(
        said.contains("for replacement") && said.contains("r3.img"),
        "{said}"
    );
    let d = detail(&run, "rp");
    let r3 = row(&d, &devs[3]);
    assert_eq!(r3["replacement"], true, "{d}");
    assert_eq!(r3["raid_device"], 0, "{d}");
    assert_eq!(r3["state"], "spare rebuilding", "{d}");
    assert_eq!(row(&d, &devs[0])["want_replacement"], true, "{d}");
    assert_eq!(row(&d, &devs[0])["state"], "active sync", "{d}");
    assert_eq!(row(&d, &devs[2])["state"], "spare", "{d}");
    assert_eq!(d["degraded"], false, "{d}");
    let text_detail = ok(raid1(&run).args(["detail", "rp"]));
    assert!(text_detail.contains("replacement"), "{text_detail}");
    let status = ok(raid1(&run).arg("status"));
    assert!(status.contains("r3.img[3](R)"), "{status}");
    // A second replace of the same member is refused while one is rebuilt.
    let out = tool(raid1(&run).args(["replace", "rp"]).arg(&devs[0]));
    assert!(
        text(&out.stderr).contains("already being rebuilt"),
        "{}",
        text(&out.stderr)
    );

    // Stopped mid-way: the spare's superblock says what it is and how far it got.
    ok(raid1(&run).args(["stop", "rp"]));
    let ex = examine(&devs[3]);
    assert_eq!(ex["Device Role"], "Replacement device 0", "{ex:?}");
    assert!(ex.contains_key("Recovery Offset"), "{ex:?}");
    assert_eq!(examine(&devs[0])["Device Role"], "Active device 0");
    let array_state = ex["Array State"].clone();
    assert!(
        array_state.starts_with("RA") || array_state.starts_with("AA"),
        "{array_state}"
    );

    // Restarted: the rebuild resumes as a replacement and ends with the hand-over.
    ok(raid1(&run).args(["run", "--daemon"]).args(&devs));
    let d = detail(&run, "rp");
    assert_eq!(row(&d, &devs[3])["replacement"], true, "{d}");
    ok(raid1(&run).args(["wait", "rp"]));
    let d = detail(&run, "rp");
    let r3 = row(&d, &devs[3]);
    assert_eq!(
        (r3["state"].as_str(), r3["raid_device"].as_u64()),
        (Some("active sync"), Some(0)),
        "{d}"
    );
    assert_eq!(r3["replacement"], false, "{d}");
    assert_eq!(row(&d, &devs[0])["state"], "faulty", "{d}");
    assert_eq!(row(&d, &devs[2])["state"], "spare", "{d}");
    assert_eq!(d["degraded"], false, "{d}");
    // Written after the hand-over: the replaced member no longer gets it.
    let w = ok(Command::new("qemu-io").args(["-f", "raw", &uri, "-c", "write -P 0x77 2M 1M"]));
    assert!(!w.contains("failed"), "{w}");
    ok(raid1(&run).args(["remove", "rp"]).arg(&devs[0]));
    ok(raid1(&run).args(["stop", "rp"]));
    assert!(data_areas_equal(&devs[1], &devs[3], 30 << 20));
    assert!(!data_areas_equal(&devs[0], &devs[3], 30 << 20));
    assert_eq!(examine(&devs[3])["Device Role"], "Active device 0");
    // The old member still says it was in sync (md does not write a faulty member), but the
    // others list it as gone: an assembly of all four leaves it out.
    ok(raid1(&run).args(["run", "--daemon"]).args(&devs));
    let d = detail(&run, "rp");
    assert!(
        d["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["device"].as_str() != devs[0].to_str()),
        "{d}"
    );
    assert_eq!(d["degraded"], false, "{d}");
    ok(raid1(&run).args(["stop", "rp"]));
}
