//! Reading and validating member superblocks, and choosing the members of an array as Linux
//! does (md-format.md §1.7): every device is read and checked before anything is written.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use raid1_core::{BadRange, Role, SuperblockState, bridge};
use raid1_superblock::{BadBlockLog, BitmapSuperblock, FeatureMap, Superblock, Uuid};

use super::{MEMBERS, RaidArray};

/// Bytes read and rewritten around a superblock (the superblock page).
pub const SB_PAGE: usize = 4096;

/// Identity of a file or block device: two paths name the same member when these agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileId {
    /// A block device, by device number.
    Block(u64),
    /// A regular file, by filesystem and inode.
    File {
        /// `st_dev`.
        dev: u64,
        /// `st_ino`.
        ino: u64,
    },
}

impl FileId {
    /// Identity of `path` (follows symlinks).
    pub fn of(path: &Path) -> io::Result<FileId> {
        Ok(FileId::of_metadata(&std::fs::metadata(path)?))
    }

    /// Identity from `stat` / `fstat` results.
    pub fn of_metadata(m: &std::fs::Metadata) -> FileId {
        if m.file_type().is_block_device() {
            FileId::Block(m.rdev())
        } else {
            FileId::File {
                dev: m.dev(),
                ino: m.ino(),
            }
        }
    }
}

/// What one device holds, read before the array is started.
#[derive(Debug)]
pub struct FoundMember {
    /// The path given.
    pub path: PathBuf,
    /// Its identity.
    pub id: FileId,
    /// Size in bytes.
    pub size: u64,
    /// The parsed superblock (the template for every later write to this member).
    pub sb: Box<Superblock>,
    /// The 4 KiB page at `super_offset` as read (rewritten with the new superblock in front).
    pub sb_page: Vec<u8>,
    /// The bitmap header and the on-disk bitmap area (4 KiB multiple), when the member has one.
    pub bitmap: Option<(BitmapSuperblock, Vec<u8>)>,
    /// The bad-block log as device-absolute `(first sector, sectors)` runs, sorted and merged
    /// (empty unless the superblock has the BAD_BLOCKS feature).
    pub bad_blocks: Vec<(u64, u64)>,
    /// Why the bitmap its superblock announces could not be loaded (see `trust`).
    pub bitmap_error: Option<String>,
}

impl FoundMember {
    /// The bad blocks as the core takes them: relative to this member's data area, clipped to
    /// the array's `data_sectors` (md's log holds device-absolute sectors; what lies outside the
    /// data area is never read as data).
    pub fn bad_ranges(&self, data_sectors: u64) -> Vec<BadRange> {
        data_relative(&self.bad_blocks, self.sb.data_offset, data_sectors)
    }

    /// The superblock state the core needs from this member (raid1-core's bridge; a member
    /// that [`read_member_from`] accepted always converts).
    pub fn state(&self) -> Result<SuperblockState<MEMBERS>, String> {
        bridge::read_state(&self.sb, self.bitmap.as_ref().map(|(b, _)| b))
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

/// Device-absolute runs `(start, sectors)` (sorted, merged) to the core's data-relative ranges
/// inside `[data_offset, data_offset + data_sectors)`. A run longer than `u32::MAX` sectors (a
/// huge `bblog_shift`) becomes several ranges.
pub fn data_relative(runs: &[(u64, u64)], data_offset: u64, data_sectors: u64) -> Vec<BadRange> {
    let data_end = data_offset.saturating_add(data_sectors);
    let mut out = Vec::new();
    for &(start, len) in runs {
        let s = start.max(data_offset);
        let e = start.saturating_add(len).min(data_end);
        let mut at = s;
        while at < e {
            let n = (e - at).min(u64::from(u32::MAX));
            out.push(BadRange {
                start: at - data_offset,
                sectors: n as u32,
            });
            at += n;
        }
    }
    out
}

/// Reads the bad-block log of `sb` (only when the BAD_BLOCKS feature says the log holds
/// entries: a never-written log is zeros) as device-absolute runs, sorted and merged as the
/// kernel's badblocks_set does with the entries it loads; empty entries are skipped.
fn read_bad_blocks(f: &File, sb: &Superblock, p: &str) -> Result<Vec<(u64, u64)>, String> {
    if !sb.feature_map.contains(FeatureMap::BAD_BLOCKS) {
        return Ok(Vec::new());
    }
    if sb.bblog_offset == 0 || sb.bblog_size == 0 || sb.bblog_size > 8 {
        return Err(format!(
            "{p}: the BAD_BLOCKS feature is set but the bad-block log is not where md keeps it \
             (bblog_offset = {}, bblog_size = {} sectors; md's log is 1 to 8 sectors)",
            sb.bblog_offset, sb.bblog_size
        ));
    }
    let at = sb
        .super_offset
        .checked_add_signed(i64::from(sb.bblog_offset))
        .ok_or_else(|| {
            format!(
                "{p}: bblog_offset = {} points before the start of the device",
                sb.bblog_offset
            )
        })?;
    let mut bytes = vec![0u8; usize::from(sb.bblog_size) * 512];
    read_exact_at(f, &mut bytes, at.saturating_mul(512))
        .map_err(|e| format!("{p}: read the bad-block log at sector {at}: {e}"))?;
    let shift = sb.bblog_shift;
    let runs: Vec<(u64, u64)> = BadBlockLog::new_unchecked(&bytes)
        .iter()
        .map(|b| (b.start_sector(shift), b.len_sectors(shift)))
        .collect();
    Ok(merge_runs(runs))
}

/// `(start, sectors)` runs sorted, empty ones dropped, overlapping or adjacent ones merged.
fn merge_runs(mut runs: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    runs.retain(|r| r.1 != 0);
    runs.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(runs.len());
    for (s, n) in runs {
        match merged.last_mut() {
            Some((ps, pn)) if s <= ps.saturating_add(*pn) => {
                *pn = (*pn).max(s.saturating_add(n) - *ps);
            }
            _ => merged.push((s, n)),
        }
    }
    merged
}

fn read_exact_at(f: &File, buf: &mut [u8], at: u64) -> io::Result<()> {
    f.read_exact_at(buf, at)
}

/// Superblock sector of metadata 1.`minor` on a device of `sectors` sectors.
fn sb_sector(minor: u8, sectors: u64) -> u64 {
    match minor {
        0 => sectors.saturating_sub(16) & !7,
        1 => 0,
        _ => 8,
    }
}

/// Reads and validates the md v1 superblock (and bitmap) of `path`. Errors name the device and
/// the field.
pub fn read_member(path: &Path) -> Result<FoundMember, String> {
    let p = path.display();
    let f = File::open(path).map_err(|e| format!("{p}: open failed: {e}"))?;
    read_member_from(&f, path)
}

/// [`read_member`] on an open descriptor (`path` names it in messages and is kept as the
/// member's path).
pub fn read_member_from(f: &File, path: &Path) -> Result<FoundMember, String> {
    let p = path.display();
    let meta = f.metadata().map_err(|e| format!("{p}: stat failed: {e}"))?;
    let ft = meta.file_type();
    if !ft.is_block_device() && !ft.is_file() {
        return Err(format!(
            "{p}: not a block device or a regular file (an md member must be one of them)"
        ));
    }
    let id = FileId::of_metadata(&meta);
    let size = match id {
        FileId::Block(_) => {
            use std::io::{Seek, SeekFrom};
            let mut g = f;
            g.seek(SeekFrom::End(0))
                .map_err(|e| format!("{p}: size: {e}"))?
        }
        FileId::File { .. } => meta.len(),
    };
    let sectors = size / 512;
    if size == 0 {
        return Err(format!(
            "{p}: size 0: an empty file or device holds no md member"
        ));
    }
    if sectors < 24 {
        return Err(format!(
            "{p}: {size} bytes is too small for md metadata (at least 12 KiB)"
        ));
    }
    let mut misses = Vec::new();
    for minor in [2u8, 1, 0] {
        let at = sb_sector(minor, sectors);
        let mut page = vec![0u8; SB_PAGE];
        let avail = (size - at * 512).min(SB_PAGE as u64) as usize;
        read_exact_at(f, &mut page[..avail], at * 512)
            .map_err(|e| format!("{p}: read at sector {at}: {e}"))?;
        let sb: Box<Superblock> = match Superblock::parse(&page) {
            Ok(sb) => Box::new(sb),
            Err(e) => {
                if e.field != "magic" {
                    misses.push(format!("1.{minor} at sector {at}: {e}"));
                }
                continue;
            }
        };
        if sb.super_offset != at {
            misses.push(format!(
                "1.{minor} at sector {at}: super_offset = {} does not name this sector",
                sb.super_offset
            ));
            continue;
        }
        sb.check_placement(sectors)
            .map_err(|e| format!("{p}: superblock 1.{minor}: {e}"))?;
        if sb.level != 1 {
            return Err(format!(
                "{p}: level = {} (raid1 only handles level 1)",
                sb.level
            ));
        }
        let end = sb.data_offset.saturating_add(sb.size);
        if end > sectors {
            return Err(format!(
                "{p}: data_offset + size = {end} sectors is beyond the device ({sectors} sectors)"
            ));
        }
        // What the engine cannot hold (a dev_number beyond this build's member positions, a
        // raid_disks beyond 65535) is refused here, before anything else reads the member.
        bridge::read_state::<MEMBERS, { raid1_superblock::MAX_DEV }>(&sb, None)
            .map_err(|e| format!("{p}: {e}"))?;
        let (bitmap, bitmap_error) = match super::trust::read_bitmap(f, &sb, size) {
            Ok(b) => (b, None),
            Err(e) => (None, Some(e)),
        };
        let bad_blocks = read_bad_blocks(f, &sb, &p.to_string())?;
        return Ok(FoundMember {
            path: path.to_path_buf(),
            id,
            size,
            sb,
            sb_page: page,
            bitmap,
            bad_blocks,
            bitmap_error,
        });
    }
    if let Some(at) = md090_at(f, size) {
        return Err(format!(
            "{p}: metadata 0.90 is not supported (an md 0.90 superblock at byte {at}); \
             raid1 handles metadata 1.0, 1.1 and 1.2 (mdadm can convert a stopped 0.90 array: \
             mdadm --assemble --update=metadata)"
        ));
    }
    if misses.is_empty() {
        Err(format!(
            "{p}: no md v1.x superblock (magic = a92b4efc not found at sectors 8, 0 or {})",
            sb_sector(0, sectors)
        ))
    } else {
        Err(format!("{p}: no valid superblock: {}", misses.join("; ")))
    }
}

/// Byte offset of an md 0.90 superblock on the open device, if there is one (magic with
/// major version 0, in either byte order: 0.90 is written in host order).
fn md090_at(f: &File, size: u64) -> Option<u64> {
    let at = crate::probe::md090_offset(size)?;
    let mut b = [0u8; 8];
    read_exact_at(f, &mut b, at).ok()?;
    let word = |i: usize, be: bool| {
        let w = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if be {
            u32::from_be_bytes(w)
        } else {
            u32::from_le_bytes(w)
        }
    };
    [false, true]
        .into_iter()
        .any(|be| word(0, be) == crate::probe::MD_MAGIC && word(4, be) == 0)
        .then_some(at)
}

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
    let uuid = uuid_text(&sb.set_uuid);
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

/// mdadm's UUID text (`xxxxxxxx:xxxxxxxx:xxxxxxxx:xxxxxxxx`).
pub fn uuid_text(u: &Uuid) -> String {
    let h: String = u.0.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}:{}:{}:{}", &h[0..8], &h[8..16], &h[16..24], &h[24..32])
}

/// The members chosen for the array, in `dev_number` positions, and the devices left out.
pub struct Selection {
    /// Members passed to the core, by `dev_number`.
    pub members: Vec<FoundMember>,
    /// Devices refused, with the reason.
    pub refused: Vec<(PathBuf, String)>,
    /// Index in `members` of the freshest one (the template).
    pub fresh: usize,
}

/// Reads every device, groups them by array UUID and keeps the fresh ones (stale active
/// members are refused as mdadm refuses "non-fresh" devices).
pub fn select(paths: &[PathBuf]) -> Result<Selection, String> {
    if paths.is_empty() {
        return Err("no member device given".into());
    }
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        match read_member(p) {
            Ok(m) => found.push(m),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    for (i, a) in found.iter().enumerate() {
        for b in &found[..i] {
            if a.id == b.id {
                return Err(format!(
                    "{} and {} are the same device",
                    b.path.display(),
                    a.path.display()
                ));
            }
        }
    }
    let uuid = found[0].sb.set_uuid;
    if let Some(other) = found.iter().find(|m| m.sb.set_uuid != uuid) {
        return Err(format!(
            "the devices belong to different arrays: {} has set_uuid {}, {} has set_uuid {}; give the members of one array",
            found[0].path.display(),
            uuid_text(&uuid),
            other.path.display(),
            uuid_text(&other.sb.set_uuid)
        ));
    }
    for (i, a) in found.iter().enumerate() {
        for b in &found[..i] {
            if a.sb.dev_number == b.sb.dev_number {
                return Err(format!(
                    "{} and {} both have dev_number = {}",
                    b.path.display(),
                    a.path.display(),
                    a.sb.dev_number
                ));
            }
        }
    }
    super::trust::cover_roles(&mut found);
    let mut table: [Option<SuperblockState<MEMBERS>>; MEMBERS] = [None; MEMBERS];
    for m in &found {
        table[m.sb.dev_number as usize] = Some(m.state()?);
    }
    let Some(fresh_dev) = RaidArray::choose_freshest(&table) else {
        return Err(format!(
            "no device is an active in-sync member of array {}",
            uuid_text(&uuid)
        ));
    };
    let fresh_state = table[usize::from(fresh_dev)].expect("freshest exists");
    let mut members = Vec::new();
    let mut refused = Vec::new();
    for m in found {
        let st = m.state()?;
        let i = usize::from(st.this_member.0);
        let listed = fresh_state.roles[i];
        let keep = match st.own_role() {
            Role::Active(_) if i == usize::from(fresh_dev) => Ok(()),
            Role::Active(slot) => {
                if listed != Role::Active(slot) {
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
            Err(why) => refused.push((m.path.clone(), why)),
        }
    }
    let fresh = members
        .iter()
        .position(|m| m.sb.dev_number == u32::from(fresh_dev))
        .expect("fresh kept");
    Ok(Selection {
        members,
        refused,
        fresh,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_runs_are_merged_and_made_data_relative() {
        // Unsorted, overlapping, adjacent and empty entries, as a hostile log may hold them.
        let runs = merge_runs(vec![
            (300, 8),
            (100, 8),
            (104, 8),
            (112, 4),
            (50, 0),
            (200, 1),
        ]);
        assert_eq!(runs, vec![(100, 16), (200, 1), (300, 8)]);
        // Data area 110..310 (data_offset 110, 200 sectors): clipped at both ends.
        let rel = data_relative(&runs, 110, 200);
        let rel: Vec<(u64, u32)> = rel.iter().map(|b| (b.start, b.sectors)).collect();
        assert_eq!(rel, vec![(0, 6), (90, 1), (190, 8)]);
        // Entirely outside: nothing; a run beyond u32::MAX sectors: split.
        assert!(data_relative(&[(0, 100)], 110, 200).is_empty());
        let area = 3 * u64::from(u32::MAX) + 5;
        let big = data_relative(&[(0, u64::MAX)], 0, area);
        let big: Vec<(u64, u32)> = big.iter().map(|b| (b.start, b.sectors)).collect();
        let m = u64::from(u32::MAX);
        assert_eq!(
            big,
            vec![(0, u32::MAX), (m, u32::MAX), (2 * m, u32::MAX), (3 * m, 5)]
        );
    }
}
