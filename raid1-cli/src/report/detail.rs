//! `mdadm --detail`'s text, rendered from the facts a running array answers `detail` with
//! (the JSON document of `raid1 detail --json`).

use serde_json::Value;

use crate::text::{human_size, md_ctime};

/// Renders `detail` JSON as `mdadm --detail` text.
pub fn detail_text(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let mut out = String::new();
    out.push_str(&format!("{}:\n", s("array")));
    let line = |out: &mut String, k: &str, val: String| {
        out.push_str(&format!("{k:>18} : {val}\n"));
    };
    line(&mut out, "Version", s("version"));
    line(&mut out, "Creation Time", md_ctime(n("creation_time")));
    line(&mut out, "Raid Level", s("raid_level"));
    line(&mut out, "Array Size", size_text(n("array_size_kib")));
    line(&mut out, "Used Dev Size", size_text(n("used_dev_size_kib")));
    line(&mut out, "Raid Devices", n("raid_devices").to_string());
    line(&mut out, "Total Devices", n("total_devices").to_string());
    line(&mut out, "Persistence", "Superblock is persistent".into());
    out.push('\n');
    line(&mut out, "Update Time", md_ctime(n("update_time")));
    line(&mut out, "State", format!("{} ", s("state")));
    line(&mut out, "Active Devices", n("active_devices").to_string());
    line(
        &mut out,
        "Working Devices",
        n("working_devices").to_string(),
    );
    line(&mut out, "Failed Devices", n("failed_devices").to_string());
    line(&mut out, "Spare Devices", n("spare_devices").to_string());
    out.push('\n');
    line(&mut out, "Consistency Policy", s("consistency_policy"));
    out.push('\n');
    if let Some(p) = v["rebuild_percent"].as_u64() {
        let label = match v["sync_action"].as_str() {
            Some("check") | Some("repair") => "Check Status",
            Some("resync") => "Resync Status",
            _ => "Rebuild Status",
        };
        line(&mut out, label, format!("{p}% complete"));
        out.push('\n');
    }
    line(&mut out, "Name", s("name"));
    line(&mut out, "UUID", s("uuid"));
    line(&mut out, "Events", n("events").to_string());
    if !s("ublk").is_empty() {
        line(&mut out, "Block Device", s("ublk"));
    }
    out.push('\n');
    out.push_str("    Number   Major   Minor   RaidDevice State\n");
    let empty = Vec::new();
    let members = v["members"].as_array().unwrap_or(&empty);
    let mut rows: Vec<(u64, String)> = Vec::new();
    for m in members {
        let slot = m["raid_device"].as_u64();
        let rd = slot.map_or("-".to_string(), |x| x.to_string());
        let key = slot.unwrap_or(1000 + m["number"].as_u64().unwrap_or(0));
        rows.push((
            key,
            format!(
                "{:>8} {:>7} {:>7} {:>8}      {}   {}\n",
                m["number"].as_u64().unwrap_or(0),
                m["major"].as_u64().unwrap_or(0),
                m["minor"].as_u64().unwrap_or(0),
                rd,
                member_state_words(m),
                m["device"].as_str().unwrap_or("")
            ),
        ));
    }
    for r in v["removed_slots"].as_array().unwrap_or(&empty) {
        let slot = r.as_u64().unwrap_or(0);
        rows.push((
            slot,
            format!("{:>8} {:>7} {:>7} {:>8}      removed\n", "-", 0, 0, slot),
        ));
    }
    rows.sort_by_key(|(k, _)| *k);
    for (_, r) in rows {
        out.push_str(&r);
    }
    out
}

/// The state column of one member row as `mdadm --detail` prints it: the role words, with
/// the device flags `writemostly` and `failfast` after an active or faulty role and before
/// `spare` (mdadm prints `spare` last, when no role word applies).
fn member_state_words(m: &Value) -> String {
    let role = m["state"].as_str().unwrap_or("");
    let mut flags = Vec::new();
    if m["write_mostly"].as_bool() == Some(true) {
        flags.push("writemostly");
    }
    if m["failfast"].as_bool() == Some(true) {
        flags.push("failfast");
    }
    // md's device state words for a replacement and a member that wants one.
    if m["replacement"].as_bool() == Some(true) {
        flags.push("replacement");
    }
    if m["want_replacement"].as_bool() == Some(true) {
        flags.push("want_replacement");
    }
    let mut words: Vec<&str> = Vec::new();
    if role.starts_with("spare") {
        words.extend(&flags);
        words.push(role);
    } else {
        words.push(role);
        words.extend(&flags);
    }
    words.join(" ")
}

/// `mdadm --detail`'s sizes: KiB, then mdadm's `human_size` of the bytes.
fn size_text(kib: u64) -> String {
    format!("{kib}{}", human_size(kib.saturating_mul(1024) as i64))
}

/// `mdadm --detail --brief`: the array's `ARRAY` line, as mdadm.conf takes it.
pub fn brief_text(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let mut line = format!("ARRAY /dev/md/{} metadata={}", s("array"), s("version"));
    if !s("name").is_empty() {
        line.push_str(&format!(" name={}", s("name")));
    }
    line.push_str(&format!(" UUID={}\n", s("uuid")));
    line
}

/// The key `mdadm --detail --export` gives a member: its path with every character that is
/// not a letter or a digit made `_` (`/dev/sda1` → `dev_sda1`).
fn export_key(path: &str) -> String {
    path.trim_start_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// `mdadm --detail --export`: `KEY=VALUE` lines for udev rules and monitoring, each member's
/// role (its slot, `spare` or `faulty`) and path.
pub fn export_text(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let mut out = String::new();
    out.push_str(&format!("MD_LEVEL={}\n", s("raid_level")));
    out.push_str(&format!(
        "MD_DEVICES={}\n",
        v["raid_devices"].as_u64().unwrap_or(0)
    ));
    out.push_str(&format!("MD_METADATA={}\n", s("version")));
    out.push_str(&format!("MD_UUID={}\n", s("uuid")));
    out.push_str(&format!("MD_DEVNAME={}\n", s("array")));
    if !s("name").is_empty() {
        out.push_str(&format!("MD_NAME={}\n", s("name")));
    }
    for m in v["members"].as_array().into_iter().flatten() {
        let Some(path) = m["device"].as_str() else {
            continue;
        };
        let key = export_key(path);
        let state = m["state"].as_str().unwrap_or("");
        let role = if state.contains("faulty") {
            "faulty".to_string()
        } else {
            match m["raid_device"].as_i64() {
                Some(r) if r >= 0 => r.to_string(),
                _ => "spare".to_string(),
            }
        };
        out.push_str(&format!("MD_DEVICE_{key}_ROLE={role}\n"));
        out.push_str(&format!("MD_DEVICE_{key}_DEV={path}\n"));
    }
    out
}

#[cfg(test)]
mod export_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn brief_and_export_lines() {
        let v = json!({
            "array": "web", "version": "1.2", "name": "vm:web", "raid_level": "raid1",
            "raid_devices": 2, "uuid": "4f0f1cd5:c5f0c82a:874b7daa:14fa0738",
            "members": [
                {"device": "/dev/sda1", "raid_device": 0, "state": "active sync"},
                {"device": "/srv/img-2.raw", "raid_device": -1, "state": "spare"},
                {"device": "/dev/sdc", "raid_device": 1, "state": "faulty"},
            ],
        });
        assert_eq!(
            brief_text(&v),
            "ARRAY /dev/md/web metadata=1.2 name=vm:web UUID=4f0f1cd5:c5f0c82a:874b7daa:14fa0738\n"
        );
        assert_eq!(
            export_text(&v),
            "MD_LEVEL=raid1\nMD_DEVICES=2\nMD_METADATA=1.2\n\
             MD_UUID=4f0f1cd5:c5f0c82a:874b7daa:14fa0738\nMD_DEVNAME=web\nMD_NAME=vm:web\n\
             MD_DEVICE_dev_sda1_ROLE=0\nMD_DEVICE_dev_sda1_DEV=/dev/sda1\n\
             MD_DEVICE_srv_img_2_raw_ROLE=spare\nMD_DEVICE_srv_img_2_raw_DEV=/srv/img-2.raw\n\
             MD_DEVICE_dev_sdc_ROLE=faulty\nMD_DEVICE_dev_sdc_DEV=/dev/sdc\n"
        );
    }
}
