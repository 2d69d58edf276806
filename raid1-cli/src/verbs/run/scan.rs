//! `raid1 run --scan`: which arrays the configuration file leads to, and their members.
//!
//! As mdadm's `--assemble --scan`: the devices looked at are those of the DEVICE lines and of
//! the ARRAY lines' `devices=` lists; the arrays are those of the ARRAY lines (an ARRAY line
//! matches a member by `UUID=`, by `name=` (the whole name, or the part after the home host) or
//! by its `devices=` list), or every array found when the file has no ARRAY line. `--uuid` and
//! `--name` keep one of them.

use std::path::PathBuf;

use super::RunArgs;
use crate::config::{self, ArrayLine};
use crate::report::examine::Report;
use crate::verbs::examine::examine_device;

/// One array to start.
#[derive(Debug)]
pub struct Found {
    /// Its UUID, as mdadm prints it.
    pub uuid: String,
    /// Its name.
    pub name: String,
    /// Its members, in the order they were found.
    pub members: Vec<PathBuf>,
}

fn name_matches(wanted: &str, r: &Report) -> bool {
    r.name == wanted || r.name.split_once(':').is_some_and(|(_, n)| n == wanted)
}

fn line_matches(line: &ArrayLine, path: &PathBuf, r: &Report) -> bool {
    let uuid_ok = line
        .uuid
        .is_none_or(|u| crate::text::uuid_text(&u) == r.array_uuid);
    let name_ok = line.name.as_deref().is_none_or(|n| name_matches(n, r));
    let devices_ok = line.devices.is_empty() || line.devices.contains(path);
    uuid_ok && name_ok && devices_ok
}

/// The arrays `args` selects, with their members.
pub fn arrays(args: &RunArgs) -> Result<Vec<Found>, String> {
    let (file, cfg) = config::load(args.config.as_deref())?.ok_or_else(|| {
        format!(
            "no configuration file ({}); pass --config FILE",
            config::DEFAULT_FILES.join(", ")
        )
    })?;
    let wanted_uuid = match &args.uuid {
        Some(u) => Some(
            config::parse_uuid(u)
                .map(|u| crate::text::uuid_text(&u))
                .ok_or_else(|| format!("--uuid {u} is not 32 hexadecimal digits"))?,
        ),
        None => None,
    };
    let mut paths = config::candidates(&cfg);
    for line in &cfg.arrays {
        for d in &line.devices {
            if !paths.contains(d) {
                paths.push(d.clone());
            }
        }
    }
    if paths.is_empty() {
        return Err(format!(
            "{}: no device to look at (no DEVICE line matches a device, and no ARRAY line \
             lists devices=)",
            file.display()
        ));
    }
    // Every candidate that holds an md superblock; the others are not members of anything.
    let members: Vec<(PathBuf, Report)> = paths
        .into_iter()
        .filter_map(|p| examine_device(&p, None).ok().map(|r| (p, r)))
        .collect();
    let mut out: Vec<Found> = Vec::new();
    for (path, r) in &members {
        let listed = cfg.arrays.is_empty() || cfg.arrays.iter().any(|l| line_matches(l, path, r));
        let chosen = wanted_uuid.as_ref().is_none_or(|u| *u == r.array_uuid)
            && args
                .start
                .name
                .as_deref()
                .is_none_or(|n| name_matches(n, r));
        if !listed || !chosen {
            continue;
        }
        match out.iter_mut().find(|f| f.uuid == r.array_uuid) {
            Some(f) => f.members.push(path.clone()),
            None => out.push(Found {
                uuid: r.array_uuid.clone(),
                name: r.name.clone(),
                members: vec![path.clone()],
            }),
        }
    }
    Ok(out)
}
