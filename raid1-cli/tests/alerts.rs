//! `raid1 monitor`'s alerts, as mdadm's `--monitor` gives them: a program run per event with
//! `EVENT /dev/md/NAME [DEVICE]`, `--test`'s `TestMessage`, `--oneshot`'s `DegradedArray`, and
//! syslog messages (read from a `/dev/log` socket this test binds when the machine has none).

#[path = "run_common.rs"]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{RAID1, ok, raid1_in as raid1, sparse_images, text, tool};

/// A program that appends its arguments, one call per line, to `log`.
fn recorder(dir: &Path, log: &Path) -> PathBuf {
    let p = dir.join("alert.sh");
    std::fs::write(&p, format!("#!/bin/sh\necho \"$@\" >> {}\n", log.display())).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn calls(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn monitor_runs_the_program_for_each_event_and_oneshot_reports_degraded_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let devs = sparse_images(dir.path(), "m", 2, 32 << 20);
    ok(Command::new(RAID1)
        .args(["create", "-l1", "-n2", "--assume-clean", "-N", "web"])
        .args(&devs));
    ok(raid1(&run).args(["run", "--daemon"]).args(&devs));
    let log = dir.path().join("calls");
    let program = recorder(dir.path(), &log);
    let prog = program.to_str().unwrap();

    // --test --oneshot on a healthy array: one TestMessage, nothing else, exit 0.
    let out = ok(raid1(&run).args(["monitor", "web", "--test", "--oneshot", "--program", prog]));
    assert_eq!(out.trim(), "TestMessage web");
    assert_eq!(calls(&log), ["TestMessage /dev/md/web"]);

    // A live monitor: each event line on stdout is one program call with the same event,
    // the md device and the member.
    let live = raid1(&run)
        .args(["monitor", "web", "--program", prog])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    std::fs::remove_file(&log).unwrap();
    let member = devs[1].to_str().unwrap();
    ok(raid1(&run).args(["fail", "web", member]));
    ok(raid1(&run).args(["remove", "web", member]));
    wait_for("the program's calls", Duration::from_secs(20), || {
        calls(&log).iter().any(|c| c.starts_with("Fail "))
    });

    // --oneshot on the degraded array: DegradedArray, through the program too.
    let out = ok(raid1(&run).args(["monitor", "--oneshot", "--program", prog]));
    assert_eq!(out.trim(), "DegradedArray web");
    wait_for("DegradedArray", Duration::from_secs(10), || {
        calls(&log).contains(&"DegradedArray /dev/md/web".to_string())
    });

    ok(raid1(&run).args(["stop", "web"]));
    let out = live.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines = text(&out.stdout);
    // The program's calls: the live monitor's, and the one-shot's DegradedArray.
    let mut got = calls(&log);
    let oneshot = got
        .iter()
        .rposition(|c| c == "DegradedArray /dev/md/web")
        .unwrap();
    got.remove(oneshot);
    let expected: Vec<String> = lines
        .lines()
        .map(|l| {
            let mut w = l.split(' ');
            let (event, array) = (w.next().unwrap(), w.next().unwrap());
            match w.next().filter(|d| d.starts_with('/')) {
                Some(d) => format!("{event} /dev/md/{array} {d}"),
                None => format!("{event} /dev/md/{array}"),
            }
        })
        .collect();
    assert!(
        expected
            .iter()
            .any(|e| e.starts_with(&format!("Fail /dev/md/web {member}"))),
        "{lines}"
    );
    // The programs run side by side, so their lines may land in any order.
    let mut expected = expected;
    got.sort();
    expected.sort();
    assert_eq!(
        got, expected,
        "program calls against the events printed:\n{lines}"
    );
}

#[test]
fn syslog_gets_the_alerts() {
    let dev_log = Path::new("/dev/log");
    if dev_log.exists() && UnixDatagram::unbound().unwrap().connect(dev_log).is_err() {
        // Left by an earlier run of this test that did not finish: nobody listens.
        std::fs::remove_file(dev_log).unwrap();
    }
    if dev_log.exists() {
        // A syslog daemon owns it: nothing to read the messages from here.
        eprintln!("/dev/log exists (a syslog daemon runs): only the exit status is checked");
    }
    let listener = (!dev_log.exists()).then(|| UnixDatagram::bind(dev_log).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let devs = sparse_images(dir.path(), "s", 2, 32 << 20);
    ok(Command::new(RAID1)
        .args(["create", "-l1", "-n2", "--assume-clean", "-N", "logged"])
        .args(&devs));
    ok(raid1(&run).args(["run", "--daemon"]).args(&devs));
    ok(raid1(&run).args(["fail", "logged", devs[0].to_str().unwrap()]));
    let out = tool(raid1(&run).args(["monitor", "logged", "--oneshot", "--syslog", "--test"]));
    ok(raid1(&run).args(["stop", "logged"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    if let Some(l) = listener {
        l.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = l.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            if got.len() == 2 {
                break;
            }
        }
        let _ = std::fs::remove_file(dev_log);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got[0].contains("raid1")
                && got[0].contains("TestMessage event detected on md device /dev/md/logged"),
            "{got:?}"
        );
        assert!(
            got[1].contains("DegradedArray event detected on md device /dev/md/logged"),
            "{got:?}"
        );
        // LOG_DAEMON | LOG_INFO = 30, LOG_DAEMON | LOG_CRIT = 26.
        assert!(
            got[0].starts_with("<30>") && got[1].starts_with("<26>"),
            "{got:?}"
        );
    }
}

/// The RebuildNN events of a running resync: every `--increment` percent (mdadm's), 20 by
/// default, each monitor with its own step.
#[test]
fn rebuild_events_come_every_increment() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let devs = sparse_images(dir.path(), "r", 2, 32 << 20);
    // No --assume-clean: the first start resyncs the whole array.
    ok(Command::new(RAID1)
        .args(["create", "-l1", "-n2", "--bitmap", "none", "-N", "slow"])
        .args(&devs));
    ok(raid1(&run)
        .args(["run", "--daemon", "--sync-speed-max", "4096"])
        .args(&devs));
    ok(raid1(&run).args(["sync-action", "slow", "frozen"]));
    let watch = |inc: Option<&str>| {
        let mut c = raid1(&run);
        c.args(["monitor", "slow"]);
        if let Some(i) = inc {
            c.args(["--increment", i]);
        }
        c.stdout(Stdio::piped()).spawn().unwrap()
    };
    let fine = watch(Some("10"));
    let default = watch(None);
    std::thread::sleep(Duration::from_millis(500));
    ok(raid1(&run).args(["sync-action", "slow", "idle"]));
    ok(raid1(&run).args(["wait", "slow"]));
    ok(raid1(&run).args(["stop", "slow"]));
    let steps = |child: std::process::Child| -> Vec<String> {
        let out = child.wait_with_output().unwrap();
        text(&out.stdout)
            .lines()
            .filter_map(|l| l.split(' ').next())
            .filter(|e| e.starts_with("Rebuild") && e[7..].chars().all(|c| c.is_ascii_digit()))
            .map(str::to_string)
            .collect()
    };
    let fine = steps(fine);
    let default = steps(default);
    // The resync was frozen at 0 % while both subscribed: every step comes, in order.
    let want = |inc: usize| -> Vec<String> {
        (1..100 / inc)
            .map(|k| format!("Rebuild{:02}", k * inc))
            .collect()
    };
    assert_eq!(fine, want(10));
    assert_eq!(default, want(20));
    // Out of range: refused by name.
    let out = tool(raid1(&run).args(["monitor", "--increment", "0"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("increment"),
        "{}",
        text(&out.stderr)
    );
}
