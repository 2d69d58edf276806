//! Reading and validating member superblocks, and choosing the members of an array as Linux
//! does (md-format.md §1.7): every device is read and checked before anything is written.

use std::path::PathBuf;

use raid1_core::{Role, SuperblockState};
use raid1_superblock::Superblock;

use super::{MEMBERS, RaidArray};
use crate::member::strict::{FoundMember, read_member};
use crate::text::uuid_text;

/// Longest array name in bytes: md's `set_name` field of the v1 superblock is 32 bytes.
pub const NAME_MAX: usize = 32;

/// Checks an array name given on the command line (`run --name`) by mdadm's rules for a new
/// name: 1 to 32 bytes of the POSIX portable file name characters (letters, digits, `.`, `_`,
/// `-`), not starting with `.` (no hidden names, no `.` or `..`) or `-` (no option look-alike).
pub fn check_name(name: &str) -> Result<(), String> {
    let shown = name.escape_default();
    let rule = "an array name is 1 to 32 bytes of letters, digits, '.', '_' and '-', not \
                starting with '.' or '-'";
    let why = if name.is_empty() {
        Some("it is empty".to_string())
    } else if name.len() > NAME_MAX {
        Some(format!(
            "it is {} bytes long, more than the {NAME_MAX} of md's name field",
            name.len()
        ))
    } else if name.contains('/') {
        Some("it contains '/'".to_string())
    } else if let Some(c) = name.chars().find(|c| c.is_control()) {
        Some(format!(
            "it contains the control character {}",
            c.escape_default()
        ))
    } else if name.starts_with('.') {
        Some("it starts with '.'".to_string())
    } else if name.starts_with('-') {
        Some("it starts with '-'".to_string())
    } else {
        name.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c)))
            .map(|c| format!("it contains '{}'", c.escape_default()))
    };
    match why {
        Some(why) => Err(format!("array name \"{shown}\": {why} ({rule})")),
        None => Ok(()),
    }
}

/// Checks a name a control verb uses to find an array's socket: whatever `run` may have chosen
/// (a name by [`check_name`], an on-disk name [`array_name`] accepted, or a UUID), and nothing
/// that leaves the run directory.
pub fn check_socket_name(name: &str) -> Result<(), String> {
    let shown = name.escape_default();
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.chars().any(char::is_control)
    {
        return Err(format!(
            "array name \"{shown}\": not a name an array can have (empty, '.', '..', or \
             containing '/' or a control character)"
        ));
    }
    Ok(())
}

/// The name of an array: `--name` (checked by [`check_name`] before this), else the name part of
/// the set name, else the UUID. An on-disk name that cannot name a socket in the run directory
/// (not UTF-8, '/', a control character, a leading '.' or '-'; mdadm assembles arrays whatever
/// their stored name) is not used: the array is named by its UUID and the note says why.
pub fn array_name(sb: &Superblock, given: Option<&str>) -> (String, Option<String>) {
    if let Some(n) = given {
        return (n.to_string(), None);
    }
    let raw = sb.set_name.name();
    let uuid = uuid_text(&sb.set_uuid.0);
    if raw.is_empty() {
        return (uuid, None);
    }
    let problem = match std::str::from_utf8(raw) {
        Err(_) => Some("it is not UTF-8".to_string()),
        Ok(s) if s.contains('/') => Some("it contains '/'".to_string()),
        Ok(s) if s.chars().any(char::is_control) => {
            Some("it contains a control character".to_string())
        }
        Ok(s) if s.starts_with('.') || s.starts_with('-') => {
            Some("it starts with '.' or '-'".to_string())
        }
        Ok(_) => None,
    };
    match problem {
        None => (String::from_utf8_lossy(raw).into_owned(), None),
        Some(why) => {
            let shown: String = raw.escape_ascii().to_string();
            (
                uuid.clone(),
                Some(format!(
                    "the name in the superblock, \"{shown}\", is not used ({why}): the array \
                     is named {uuid}; give --name to choose another"
                )),
            )
        }
    }
}

/// The members chosen for the array, in `dev_number` positions, and the devices left out.
pub struct Selection {
    /// Members passed to the core, by `dev_number`.
    pub members: Vec<FoundMember>,
    /// Devices refused, with the reason.
    pub refused: Vec<(PathBuf, String)>,
    /// Index in `members` of the freshest one (the template).
    pub fresh: usize,
    /// Out-of-date members taken back because of `--force` (rebuilt by the engine), with
    /// what made them out of date.
    pub forced: Vec<(PathBuf, String)>,
}

/// Reads every device, groups them by array UUID and keeps the fresh ones (stale active
/// members are refused as mdadm refuses "non-fresh" devices). With `force` (mdadm's
/// `--assemble --force`) the stale ones are kept too: the engine re-adds them, rebuilt from
/// the fresh members (in full when one ran without the fresh member, a split brain), and
/// never trusts one as in sync.
pub fn select(paths: &[PathBuf], force: bool) -> Result<Selection, String> {
    if paths.is_empty() {
        return Err("no member device given".into());
    }
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        match read_member::<MEMBERS>(p) {
            Ok(m) => found.push(m),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    for (i, a) in found.iter().enumerate() {
        for b in &found[..i] {
            if a.meta.id == b.meta.id {
                return Err(format!(
                    "{} and {} are the same device",
                    b.meta.path.display(),
                    a.meta.path.display()
                ));
            }
        }
    }
    let uuid = found[0].meta.sb.set_uuid;
    if let Some(other) = found.iter().find(|m| m.meta.sb.set_uuid != uuid) {
        return Err(format!(
            "the devices belong to different arrays: {} has set_uuid {}, {} has set_uuid {}; give the members of one array",
            found[0].meta.path.display(),
            uuid_text(&uuid.0),
            other.meta.path.display(),
            uuid_text(&other.meta.sb.set_uuid.0)
        ));
    }
    for (i, a) in found.iter().enumerate() {
        for b in &found[..i] {
            if a.meta.sb.dev_number == b.meta.sb.dev_number {
                return Err(format!(
                    "{} and {} both have dev_number = {}",
                    b.meta.path.display(),
                    a.meta.path.display(),
                    a.meta.sb.dev_number
                ));
            }
        }
    }
    super::trust::cover_roles(&mut found);
    let mut table: [Option<SuperblockState<MEMBERS>>; MEMBERS] = [None; MEMBERS];
    for m in &found {
        table[m.meta.sb.dev_number as usize] = Some(m.state::<MEMBERS>()?);
    }
    let Some(fresh_dev) = RaidArray::choose_freshest(&table) else {
        return Err(format!(
            "no device is an active in-sync member of array {}",
            uuid_text(&uuid.0)
        ));
    };
    let fresh_state = table[usize::from(fresh_dev)].expect("freshest exists");
    let mut members = Vec::new();
    let mut refused = Vec::new();
    let mut forced = Vec::new();
    for m in found {
        let st = m.state::<MEMBERS>()?;
        let i = usize::from(st.this_member.0);
        let listed = fresh_state.roles[i];
        let keep = match st.own_role() {
            Role::Active(_) if i == usize::from(fresh_dev) => Ok(()),
            Role::Active(slot) => {
                let ran_alone = st.roles[usize::from(fresh_dev)] == Role::Faulty;
                if listed != Role::Active(slot) && ran_alone {
                    Err(format!(
                        "split brain: it ran without the freshest member (its superblock, events \
                         {}, records that one as failed) and the array (events {}) lists it as \
                         {}; its own writes since then are not in the array",
                        st.events,
                        fresh_state.events,
                        role_text(listed)
                    ))
                } else if listed != Role::Active(slot) {
                    Err(format!(
                        "stale: its superblock says active {slot}, the array (events {}) lists it as {}",
                        fresh_state.events,
                        role_text(listed)
                    ))
                } else if st.events.saturating_add(1) < fresh_state.events {
                    Err(format!(
                        "stale: events = {}, the array is at {}",
                        st.events, fresh_state.events
                    ))
                } else {
                    Ok(())
                }
            }
            Role::Spare => Ok(()),
            Role::Faulty => Err("its own superblock says faulty".to_string()),
        };
        match keep {
            Ok(()) => members.push(m),
            // Only an active member is taken back (one whose own superblock says faulty
            // holds nothing the array can use).
            Err(why) if force && matches!(st.own_role(), Role::Active(_)) => {
                forced.push((m.meta.path.clone(), why));
                members.push(m);
            }
            Err(why) => refused.push((m.meta.path.clone(), why)),
        }
    }
    let fresh = members
        .iter()
        .position(|m| m.meta.sb.dev_number == u32::from(fresh_dev))
        .expect("fresh kept");
    Ok(Selection {
        members,
        refused,
        fresh,
        forced,
    })
}

/// A role as mdadm prints it in words.
pub fn role_text(r: Role) -> String {
    match r {
        Role::Active(n) => format!("active {n}"),
        Role::Spare => "spare".into(),
        Role::Faulty => "faulty/removed".into(),
    }
}
