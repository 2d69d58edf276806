//! The configuration-file round trip of mdadm users: `raid1 examine --brief --scan` prints the
//! ARRAY lines mdadm prints (byte for byte, with mdadm as the oracle), `--export` the KEY=VALUE
//! lines, and `raid1 run --scan` assembles the arrays those lines name from the devices the
//! DEVICE lines name.

#[path = "run_common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{RAID1, ok, raid1_in as raid1, sparse_images, text, tool};

/// Three arrays (one named for another home host), their members given out of order.
fn three_arrays(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for (name, size) in [
        ("web", 64u64 << 20),
        ("other:big", 3 << 30),
        ("third", 100 << 20),
    ] {
        let prefix = name.replace(':', "-");
        let devs = sparse_images(dir, &prefix, 2, size);
        ok(Command::new(RAID1)
            .args(["create", "-l1", "-n2", "--assume-clean", "-N", name])
            .args(&devs));
        all.extend(devs);
    }
    all
}

fn same_as_mdadm(args: &[&str], devs: &[PathBuf]) {
    let ours = tool(Command::new(RAID1).arg("examine").args(args).args(devs));
    let theirs = tool(Command::new("mdadm").arg("--examine").args(args).args(devs));
    assert_eq!(
        text(&ours.stdout),
        text(&theirs.stdout),
        "raid1 examine {args:?} differs from mdadm"
    );
    assert!(ours.status.success(), "{}", text(&ours.stderr));
}

#[test]
fn brief_scan_and_export_print_what_mdadm_prints() {
    let dir = tempfile::tempdir().unwrap();
    let devs = three_arrays(dir.path());
    let mixed = [&devs[2], &devs[0], &devs[4], &devs[1], &devs[5], &devs[3]].map(|p| p.clone());
    same_as_mdadm(&["--brief"], &devs[..2]);
    same_as_mdadm(&["--brief"], &mixed);
    same_as_mdadm(&["--brief", "--verbose"], &mixed);
    same_as_mdadm(&["--scan"], &mixed);
    for d in [&devs[0], &devs[2], &devs[4]] {
        same_as_mdadm(&["--export"], std::slice::from_ref(d));
    }
    // From the DEVICE lines of a configuration file (mdadm walks them from the end).
    let conf = dir.path().join("dev.conf");
    std::fs::write(
        &conf,
        format!(
            "DEVICE {}/*.img\nDEVICE /nonexistent/*\n",
            dir.path().display()
        ),
    )
    .unwrap();
    for v in [&["--scan"][..], &["--scan", "--verbose"]] {
        let ours = ok(Command::new(RAID1)
            .arg("examine")
            .args(v)
            .arg("--config")
            .arg(&conf));
        let theirs = ok(Command::new("mdadm")
            .arg("--examine")
            .args(v)
            .arg("--config")
            .arg(&conf));
        assert_eq!(ours, theirs, "examine {v:?} --config");
        assert_eq!(ours.matches("ARRAY ").count(), 3);
    }
    // A device that is no member, named on the command line: an error naming it, exit 2,
    // the others still listed.
    let stranger = sparse_images(dir.path(), "stranger", 1, 8 << 20);
    let out = tool(
        Command::new(RAID1)
            .args(["examine", "--brief"])
            .arg(&devs[0])
            .arg(&stranger[0]),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("stranger0.img"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout).matches("ARRAY ").count(), 1);
}

fn run_dir(dir: &Path) -> PathBuf {
    let d = dir.join("run");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Names of the running arrays, from `raid1 status`.
fn running(run: &Path) -> Vec<String> {
    let out = text(&tool(raid1(run).arg("status")).stdout);
    let mut names: Vec<String> = out
        .lines()
        .filter(|l| l.contains(" : active "))
        .map(|l| l.split(" : ").next().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn run_scan_starts_the_arrays_the_configuration_names() {
    let dir = tempfile::tempdir().unwrap();
    let devs = three_arrays(dir.path());
    let run = run_dir(dir.path());
    // The configuration an mdadm user writes: DEVICE lines, then examine --brief --scan's
    // output pasted in. mdadm reads the same file.
    let dev_line = format!("DEVICE {}/*.img\n", dir.path().display());
    let dev_conf = dir.path().join("dev.conf");
    std::fs::write(&dev_conf, &dev_line).unwrap();
    let arrays = ok(Command::new(RAID1)
        .args(["examine", "--brief", "--scan", "--config"])
        .arg(&dev_conf));
    let conf = dir.path().join("mdadm.conf");
    // Only two of the three arrays.
    let two: String = arrays
        .lines()
        .filter(|l| !l.contains("third"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&conf, format!("{dev_line}{two}")).unwrap();
    ok(Command::new("mdadm")
        .args(["--examine", "--scan", "--config"])
        .arg(&conf));

    // Two arrays match: not in one foreground process.
    let out = tool(raid1(&run).args(["run", "--scan", "--config"]).arg(&conf));
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("2 arrays found") && err.contains("--uuid"),
        "{err}"
    );
    assert!(running(&run).is_empty());

    // --daemon: one process each, exactly the ARRAY lines' arrays.
    ok(raid1(&run)
        .args(["run", "--scan", "--daemon", "--config"])
        .arg(&conf));
    assert_eq!(running(&run), ["big", "web"]);
    for n in ["big", "web"] {
        ok(raid1(&run).args(["stop", n]));
    }

    // --uuid picks one; its members are the ones the DEVICE line leads to.
    let uuid = arrays
        .lines()
        .find(|l| l.starts_with("ARRAY /dev/md/web "))
        .and_then(|l| l.split("UUID=").nth(1))
        .map(|u| u.split_whitespace().next().unwrap().to_string())
        .unwrap();
    ok(raid1(&run)
        .args(["run", "--scan", "--daemon", "--uuid", &uuid, "--config"])
        .arg(&conf));
    assert_eq!(running(&run), ["web"]);
    let detail = ok(raid1(&run).args(["detail", "web"]));
    for d in &devs[..2] {
        assert!(detail.contains(&*d.to_string_lossy()), "{detail}");
    }
    // detail --export: udev's KEY=VALUE lines, a role per member.
    let export = ok(raid1(&run).args(["detail", "--export", "web"]));
    assert!(export.contains(&format!("MD_UUID={uuid}\n")), "{export}");
    assert!(
        export.contains("MD_LEVEL=raid1\nMD_DEVICES=2\nMD_METADATA=1.2\n"),
        "{export}"
    );
    for (i, d) in devs[..2].iter().enumerate() {
        let key: String = d
            .to_string_lossy()
            .trim_start_matches('/')
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        assert!(
            export.contains(&format!("MD_DEVICE_{key}_ROLE={i}\n")),
            "{export}"
        );
        assert!(
            export.contains(&format!("MD_DEVICE_{key}_DEV={}\n", d.display())),
            "{export}"
        );
    }
    // detail --brief: a line a configuration file takes (and mdadm reads).
    let brief = ok(raid1(&run).args(["detail", "--brief", "web"]));
    assert!(
        brief.starts_with("ARRAY /dev/md/web metadata=1.2 name=") && brief.contains(&uuid),
        "{brief}"
    );
    ok(raid1(&run).args(["stop", "web"]));
    let from_detail = dir.path().join("detail.conf");
    std::fs::write(&from_detail, format!("{dev_line}{brief}")).unwrap();
    ok(Command::new("mdadm")
        .args(["--examine", "--scan", "--config"])
        .arg(&from_detail));
    ok(raid1(&run)
        .args(["run", "--scan", "--daemon", "--config"])
        .arg(&from_detail));
    assert_eq!(running(&run), ["web"]);
    ok(raid1(&run).args(["stop", "web"]));

    // --name picks by name, the part after the home host too.
    ok(raid1(&run)
        .args(["run", "--scan", "--daemon", "--name", "big", "--config"])
        .arg(&conf));
    assert_eq!(running(&run), ["big"]);
    ok(raid1(&run).args(["stop", "big"]));

    // Errors name the file and the line; nothing starts.
    let bad = dir.path().join("bad.conf");
    std::fs::write(&bad, format!("{dev_line}\nARRAY /dev/md/x UUID=123\n")).unwrap();
    let out = tool(raid1(&run).args(["run", "--scan", "--config"]).arg(&bad));
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("bad.conf") && err.contains("line 3"), "{err}");
    let out = tool(
        raid1(&run)
            .args(["run", "--scan", "--config"])
            .arg(dir.path().join("missing.conf")),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing.conf"));
    let out = tool(
        raid1(&run)
            .args(["run", "--scan", "--uuid", "not-a-uuid", "--config"])
            .arg(&conf),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--uuid not-a-uuid"));
    assert!(running(&run).is_empty());
}
