//! Superblock updates at assembly: mdadm's `--assemble --update=` (super1.c's update_super1),
//! applied to every member chosen for the array. The change is made in memory first, the
//! array is assembled from the changed superblocks (so the engine sees, for example, the
//! resync that `resync` asks for), and only once assembly has accepted them is each member's
//! superblock (and bitmap header) written, before the array starts. One aspect per run, as
//! mdadm allows.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use raid1_superblock::geometry::bitmap_region_bytes;
use raid1_superblock::{FeatureMap, SetName, Uuid};

use crate::config::parse_uuid;
use crate::member::strict::FoundMember;
use crate::text::{random_uuid, uuid_text};

/// What `--update` changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Update {
    /// The name in the superblock becomes `--name` (with the home host in front, as mdadm).
    Name,
    /// The home host part of the name becomes `--homehost` (default: this host's name).
    Homehost,
    /// A new array UUID: `--uuid`, else a random one (also in the bitmap header).
    Uuid,
    /// Mark the array dirty from the start, so that it is resynced.
    Resync,
    /// Use the whole device: `data_size` becomes the device size less `data_offset` (1.1
    /// and 1.2; 1.0 is left as it is, as mdadm does).
    Devicesize,
    /// Stop using the internal bitmap.
    NoBitmap,
    /// Reserve a bad-block log where mdadm would (if there is room).
    Bbl,
    /// Drop an empty bad-block log's reservation (refused while it lists entries).
    NoBbl,
    /// Drop the bad-block log even though it lists entries: its sectors may then be read.
    ForceNoBbl,
}

impl Update {
    /// mdadm's word for it.
    pub fn word(self) -> &'static str {
        match self {
            Update::Name => "name",
            Update::Homehost => "homehost",
            Update::Uuid => "uuid",
            Update::Resync => "resync",
            Update::Devicesize => "devicesize",
            Update::NoBitmap => "no-bitmap",
            Update::Bbl => "bbl",
            Update::NoBbl => "no-bbl",
            Update::ForceNoBbl => "force-no-bbl",
        }
    }
}

/// What the update needs besides the members: `--name`, `--homehost`, `--uuid`.
pub struct UpdateArgs<'a> {
    pub what: Update,
    pub name: Option<&'a str>,
    pub homehost: Option<&'a str>,
    pub uuid: Option<&'a str>,
}

/// Applies the update to every member's superblock in memory. Nothing is written; an error
/// names the device and the field and leaves the caller free to stop before writing.
pub fn apply(args: &UpdateArgs, members: &mut [FoundMember]) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    let flag = |f: &str| format!("--update={} needs {f}", args.what.word());
    // One new UUID for every member.
    let uuid: Option<Uuid> = match (args.what, args.uuid) {
        (Update::Uuid, Some(u)) => {
            Some(Uuid(parse_uuid(u).ok_or_else(|| {
                format!("--uuid {u} is not 32 hexadecimal digits")
            })?))
        }
        (Update::Uuid, None) => {
            Some(random_uuid().map_err(|e| format!("--update=uuid: a random UUID: {e}"))?)
        }
        _ => None,
    };
    let homehost = |given: Option<&str>| -> Option<Vec<u8>> {
        match given {
            Some(h) if h.eq_ignore_ascii_case("<none>") || h.is_empty() => None,
            other => crate::report::host::homehost(other, None),
        }
    };
    for m in members.iter_mut() {
        let p = m.meta.path.display().to_string();
        let sb = &mut m.meta.sb;
        match args.what {
            Update::Name => {
                let name = args.name.ok_or_else(|| flag("--name NAME"))?;
                super::assemble::check_name(name).map_err(|e| format!("--name: {e}"))?;
                sb.set_name = SetName::build(homehost(args.homehost).as_deref(), name.as_bytes());
            }
            Update::Homehost => {
                let name = sb.set_name.name().to_vec();
                sb.set_name = SetName::build(homehost(args.homehost).as_deref(), &name);
            }
            Update::Uuid => {
                if let Some(u) = uuid {
                    sb.set_uuid = u;
                    if let Some((bm, _)) = m.meta.bitmap.as_mut() {
                        bm.uuid = u;
                    }
                }
            }
            Update::Resync => sb.resync_offset = 0,
            Update::Devicesize => {
                if sb.super_offset < sb.data_offset {
                    let dev = m.meta.size / 512;
                    let size = dev.checked_sub(sb.data_offset).ok_or_else(|| {
                        format!(
                            "{p}: the device ({dev} sectors) ends before data_offset = {}",
                            sb.data_offset
                        )
                    })?;
                    if size < sb.size {
                        return Err(format!(
                            "{p}: --update=devicesize: the device holds {size} sectors after \
                             data_offset, fewer than the array's {} (size)",
                            sb.size
                        ));
                    }
                    if size != sb.data_size {
                        notes.push(format!("{p}: data_size {} -> {size} sectors", sb.data_size));
                    }
                    sb.data_size = size;
                } else {
                    notes.push(format!(
                        "{p}: metadata 1.0 keeps its data_size (the superblock sits at the end)"
                    ));
                }
            }
            Update::NoBitmap => {
                sb.feature_map.remove(FeatureMap::BITMAP_OFFSET);
                m.meta.bitmap = None;
            }
            Update::Bbl => {
                if sb.bblog_offset == 0 || sb.bblog_size == 0 {
                    reserve_log(&mut m.meta).map_err(|e| format!("{p}: --update=bbl: {e}"))?;
                }
            }
            Update::NoBbl => {
                if sb.feature_map.contains(FeatureMap::BAD_BLOCKS) {
                    return Err(format!(
                        "{p}: --update=no-bbl: its bad-block log lists entries (feature \
                         BAD_BLOCKS); dropping it would let reads use those sectors \
                         (--update=force-no-bbl does it anyway); nothing was written"
                    ));
                }
                sb.bblog_offset = 0;
                sb.bblog_size = 0;
                sb.bblog_shift = 0;
            }
            Update::ForceNoBbl => {
                if sb.feature_map.contains(FeatureMap::BAD_BLOCKS) {
                    notes.push(format!(
                        "{p}: its bad-block log listed {} range(s): dropped, those sectors \
                         may now be read",
                        m.meta.bad_blocks.len()
                    ));
                }
                sb.feature_map.remove(FeatureMap::BAD_BLOCKS);
                sb.bblog_offset = 0;
                sb.bblog_size = 0;
                sb.bblog_shift = 0;
                m.meta.bad_blocks.clear();
            }
        }
    }
    if let Some(u) = uuid {
        notes.push(format!("array UUID -> {}", uuid_text(&u.0)));
    }
    Ok(notes)
}

/// Reserves an 8-sector log where mdadm's `--update=bbl` puts it. On 1.1/1.2 its arithmetic
/// is kept exactly, including that it starts from `super_offset + 8` (an absolute sector)
/// without a bitmap and from the end of the bitmap (relative to the superblock) with one,
/// steps by 8 while below `super_offset + 8 + 64` and 16 sectors fit before the data, and
/// stores the result as the offset from the superblock; on 1.0 the log goes just below the
/// superblock when 8 sectors are free there.
fn reserve_log(meta: &mut crate::member::strict::MemberMeta) -> Result<(), String> {
    let sb = &mut meta.sb;
    let (bitmap_offset, bm_sectors) = match (
        &meta.bitmap,
        sb.feature_map.contains(FeatureMap::BITMAP_OFFSET),
    ) {
        (Some((bm, _)), true) => {
            // mdadm's calc_bitmap_size(bms, 4096).
            let bytes = bitmap_region_bytes(bm.chunks(), 4096);
            (i64::from(sb.bitmap_offset), (bytes / 512) as i64)
        }
        _ => (0, 0),
    };
    let so = sb.super_offset as i64;
    let dof = sb.data_offset as i64;
    if so < dof {
        let mut bb = so + 8;
        if bm_sectors > 0 && bitmap_offset > 0 {
            bb = bitmap_offset + bm_sectors;
        }
        while bb < so + 8 + 64 && bb + 16 <= dof {
            bb += 8;
        }
        if bb + 8 > dof {
            return Err(format!(
                "no room for 8 sectors before the data (data_offset = {})",
                sb.data_offset
            ));
        }
        sb.bblog_size = 8;
        sb.bblog_offset = i32::try_from(bb).map_err(|_| "the log's offset does not fit")?;
    } else {
        let space = if bm_sectors > 0 && bitmap_offset < 0 {
            -bitmap_offset - bm_sectors
        } else {
            so - dof - sb.data_size as i64
        };
        if space < 8 {
            return Err(format!(
                "no room for 8 sectors between the data and the superblock ({space} sectors)"
            ));
        }
        sb.bblog_size = 8;
        sb.bblog_offset = -8;
    }
    sb.bblog_shift = 0;
    Ok(())
}

/// Writes each member's updated superblock page (and bitmap header) and syncs it; the
/// members' templates (`sb_page`, the bitmap image) take the written bytes.
pub fn write(members: &mut [FoundMember]) -> Result<(), String> {
    for m in members.iter_mut() {
        let p = m.meta.path.display().to_string();
        let f = OpenOptions::new()
            .write(true)
            .open(&m.meta.path)
            .map_err(|e| format!("{p}: open to write the updated superblock: {e}"))?;
        let mut page = m.meta.sb_page.clone();
        m.meta
            .sb
            .serialize(&mut page)
            .map_err(|e| format!("{p}: the updated superblock: {e}"))?;
        f.write_all_at(&page, m.meta.sb.super_offset * 512)
            .map_err(|e| format!("{p}: write the updated superblock: {e}"))?;
        m.meta.sb_page = page;
        if let (Some(bs), Some((bm, image))) = (m.meta.sb.bitmap_sector(), m.meta.bitmap.as_mut()) {
            bm.serialize(&mut image[..256])
                .map_err(|e| format!("{p}: the bitmap header: {e}"))?;
            let head = &image[..image.len().min(4096)];
            f.write_all_at(head, bs * 512)
                .map_err(|e| format!("{p}: write the bitmap header: {e}"))?;
        }
        f.sync_all()
            .map_err(|e| format!("{p}: fsync the updated superblock: {e}"))?;
    }
    Ok(())
}
