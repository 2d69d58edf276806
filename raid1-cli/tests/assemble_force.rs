//! `raid1 run --force` (mdadm's `--assemble --force`): members left out as out of date (events
//! behind, listed as failed, or run without the others: a split brain) are taken back and
//! rebuilt from the array, never trusted as in sync. Without `--force` they are left out,
//! untouched, and the message says why.

#[path = "run_common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{data_areas_equal, ok, raid1_in as raid1, sha256_file, sparse_images, text, tool};
use serde_json::Value;

fn detail(run: &Path, name: &str) -> Value {
    let out = tool(raid1(run).args(["detail", "--json", name]));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn write(run: &Path, name: &str, cmd: &str) {
    let uri = format!(
        "nbd+unix:///?socket={}",
        run.join(format!("{name}.nbd")).display()
    );
    let w = ok(Command::new("qemu-io").args(["-f", "raw", &uri, "-c", cmd]));
    assert!(!w.contains("failed"), "{w}");
}

/// A mirror `name` whose halves each ran alone after a clean start together (so only later
/// writes have bitmap bits): the second half (`devs[second]`) wrote 0x22 at 20 MiB, the other
/// one 0x11 at 1 MiB. With `leave_running`, the first half's array is still running.
fn split_brain(
    dir: &Path,
    run: &Path,
    name: &str,
    first: usize,
    leave_running: bool,
) -> Vec<PathBuf> {
    let devs = sparse_images(dir, name, 2, 32 << 20);
    common::create_mirror(name, &devs, &[]);
    ok(raid1(run).args(["run", "--daemon"]).args(&devs));
    ok(raid1(run).args(["stop", name]));
    let second = 1 - first;
    for (i, pattern) in [
        (second, "write -P 0x22 20M 1M"),
        (first, "write -P 0x11 1M 1M"),
    ] {
        ok(raid1(run)
            .args(["run", "--daemon", "--degraded-ok"])
            .arg(&devs[i]));
        write(run, name, pattern);
        if i == second || !leave_running {
            ok(raid1(run).args(["stop", name]));
        }
    }
    devs
}

/// `devs[1]` is left out of array `name` without `--force` (untouched, the message holding
/// `why` and the hint), then taken back with it and rebuilt: the mirrors end equal.
fn left_out_then_taken_back(run: &Path, name: &str, devs: &[PathBuf], why: &str) {
    let before = sha256_file(&devs[1]);
    let out = tool(
        raid1(run)
            .args(["run", "--daemon", "--degraded-ok"])
            .args(devs),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains(why) && err.contains("--force"), "{err}");
    assert_eq!(detail(run, name)["members"].as_array().unwrap().len(), 1);
    ok(raid1(run).args(["stop", name]));
    assert_eq!(
        sha256_file(&devs[1]),
        before,
        "a member left out is untouched"
    );

    let out = tool(raid1(run).args(["run", "--daemon", "--force"]).args(devs));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("taken back with --force"),
        "{}",
        text(&out.stderr)
    );
    ok(raid1(run).args(["wait", name]));
    let d = detail(run, name);
    assert_eq!(d["degraded"], false, "{d}");
    ok(raid1(run).args(["stop", name]));
    assert!(
        data_areas_equal(&devs[0], &devs[1], 30 << 20),
        "the taken-back member still holds its own writes"
    );
}

#[test]
fn force_takes_back_a_member_that_missed_writes() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let devs = sparse_images(dir.path(), "f", 2, 32 << 20);
    common::create_mirror("fo", &devs, &[]);
    ok(raid1(&run).args(["run", "--daemon"]).args(&devs));
    ok(raid1(&run).args(["fail", "fo"]).arg(&devs[1]));
    ok(raid1(&run).args(["remove", "fo"]).arg(&devs[1]));
    write(&run, "fo", "write -P 0x42 4M 4M");
    ok(raid1(&run).args(["stop", "fo"]));

    // Without --force: left out, untouched, and the message says how to take it back.
    left_out_then_taken_back(&run, "fo", &devs, "f1.img not included");
}

/// Each half of a mirror ran alone and took writes the other does not have. Neither is
/// trusted with the other's data: without `--force` the second is left out; with it, it is
/// rebuilt in full from the first (a bitmap-guided rebuild would keep its own writes where the
/// first's bitmap has no bit, and the mirrors would differ).
#[test]
fn force_rebuilds_a_split_brain_member_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let devs = split_brain(dir.path(), &run, "sb", 0, false);
    left_out_then_taken_back(&run, "sb", &devs, "split brain");
}

/// The same split brain, the second half re-added to the running first one: rebuilt in full
/// too, so the mirrors agree.
#[test]
fn a_split_brain_member_re_added_at_run_time_is_rebuilt_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let devs = split_brain(dir.path(), &run, "ra", 0, true);
    ok(raid1(&run).args(["re-add", "ra"]).arg(&devs[1]));
    ok(raid1(&run).args(["wait", "ra"]));
    ok(raid1(&run).args(["stop", "ra"]));
    assert!(
        data_areas_equal(&devs[0], &devs[1], 30 << 20),
        "the re-added member still holds its own writes"
    );
}
