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
