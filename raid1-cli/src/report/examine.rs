//! The facts `mdadm --examine` prints for a v1 member, computed once and rendered both as
//! mdadm's text and as JSON.
//!
//! Arithmetic follows mdadm's C types on purpose (unsigned wrap-around, signed 32-bit printing of
//! `raid_disks`, unsigned comparison of `level`), so that damaged superblocks print the same
//! numbers as mdadm prints for them.

use serde::Serialize;

use crate::member::lenient::{ExamineError, Loaded};
use crate::member::raw::{MAX_DEVS, feature, role};
use crate::text::{human_size, md_ctime, uuid_text};

/// Longest Array State line rendered (mdadm prints one character per `raid_disks`).
pub const MAX_ARRAY_STATE: u32 = 1 << 24;

/// mdadm's personality names (first name of each level in its table).
pub fn level_name(level: u32) -> Option<&'static str> {
    Some(match level as i32 {
        -1 => "linear",
        0 => "raid0",
        1 => "raid1",
        4 => "raid4",
        5 => "raid5",
        -4 => "multipath",
        6 => "raid6",
        10 => "raid10",
        -5 => "faulty",
        -100 => "container",
        _ => return None,
    })
}

/// Unused space around the data area, as mdadm's getinfo computes it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct UnusedSpace {
    /// Sectors before the data area not used by metadata.
    pub before_sectors: u64,
    /// Sectors after the data area; negative when the device is too small for the data.
    pub after_sectors: i128,
    /// mdadm's raw unsigned value (printed as is, even when it wrapped).
    #[serde(skip)]
    pub after_raw: u64,
}

/// Checksum facts.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Checksum {
    /// `sb_csum` as stored.
    pub stored: u32,
    /// The checksum computed over the superblock as loaded.
    pub expected: u32,
    /// Whether they are equal.
    pub correct: bool,
}

/// The bad-block log reservation.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BadBlockLog {
    /// Entries the log can hold (`bblog_size * 512 / 8`).
    pub entries: i64,
    /// Signed offset from the superblock, sectors.
    pub offset_sectors: i32,
    /// Feature bit 0x8: the log holds entries.
    pub bad_blocks_present: bool,
}

/// Reshape facts (feature 0x4).
#[derive(Debug, Clone, Serialize)]
pub struct Reshape {
    /// `reshape_position / 2` (KiB).
    pub position_kib: u64,
    /// `reshape_position` in sectors.
    #[serde(skip)]
    pub position_sectors: u64,
    /// `delta_disks` when non-zero, with the before/after device counts.
    pub delta_devices: Option<(i32, i32, i32)>,
    /// New level name when it differs from `level`.
    pub new_level: Option<String>,
    /// New layout (RAID5/6/10) when it differs, as printed after "New Layout :".
    pub new_layout: Option<String>,
    /// New chunk size in KiB when it differs.
    pub new_chunksize_kib: Option<i32>,
}

/// This device's role.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DeviceRole {
    /// "active", "replacement", "spare" or "journal".
    pub kind: &'static str,
    /// The slot for active and replacement devices.
    pub slot: Option<u16>,
    /// The raw `dev_roles[dev_number]` value (0xffff when `dev_number >= max_dev`).
    pub raw: u16,
}

/// Everything `mdadm --examine` prints for one v1 member.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The device path as given.
    pub device: String,
    /// `magic`.
    pub magic: u32,
    /// "1.0", "1.1" or "1.2", from `super_offset` as mdadm derives it.
    pub version: &'static str,
    /// `feature_map` as mdadm shows it (bitmap bit dropped when the bitmap is invalid).
    pub feature_map: u32,
    /// `feature_map` as stored on disk.
    pub feature_map_on_disk: u32,
    /// Array UUID.
    pub array_uuid: String,
    /// Array name (`set_name`), lossily decoded.
    pub name: String,
    #[serde(skip)]
    name_bytes: Vec<u8>,
    /// The home host when the name is local to it.
    pub local_to_host: Option<String>,
    #[serde(skip)]
    local_bytes: Option<Vec<u8>>,
    /// Cluster name (clustered bitmaps only).
    pub cluster_name: Option<String>,
    #[serde(skip)]
    cluster_bytes: Option<Vec<u8>>,
    /// Creation time, seconds since the epoch.
    pub creation_time: u64,
    /// Creation time as printed (local time).
    pub creation_time_text: String,
    /// `level` as a signed number.
    pub level: i32,
    /// Level name, `None` for unknown levels ("-unknown-").
    pub raid_level: Option<&'static str>,
    /// `raid_disks`, printed signed like mdadm.
    pub raid_devices: i32,
    /// `data_size`.
    pub avail_dev_size_sectors: u64,
    #[serde(skip)]
    avail_human: String,
    /// Array size in KiB (levels with a known data-disk count).
    pub array_size_kib: Option<u64>,
    #[serde(skip)]
    array_human: String,
    /// `size` when it differs from `data_size`.
    pub used_dev_size_sectors: Option<u64>,
    #[serde(skip)]
    used_human: String,
    /// `data_offset` (printed only when non-zero).
    pub data_offset_sectors: u64,
    /// `data_offset + new_offset` with feature 0x40.
    pub new_offset_sectors: Option<u64>,
    /// `super_offset`.
    pub super_offset_sectors: u64,
    /// `recovery_offset` with feature 0x2.
    pub recovery_offset_sectors: Option<u64>,
    /// Unused space (absent when mdadm omits the line).
    pub unused_space: Option<UnusedSpace>,
    /// "clean" when `resync_offset` is MaxSector, else "active".
    pub state: &'static str,
    /// `resync_offset`.
    pub resync_offset: u64,
    /// The device is smaller than `data_offset + size` (mdadm 4.2 then prints a wrapped
    /// unsigned "after" value; JSON gives the negative number).
    pub truncated_device: bool,
    /// Device UUID.
    pub device_uuid: String,
    /// `bitmap_offset` when an internal bitmap is shown.
    pub internal_bitmap_offset_sectors: Option<i32>,
    /// PPL `(size, offset)` sectors when a PPL feature is set and no bitmap.
    pub ppl_sectors: Option<(u16, i16)>,
    /// Reshape facts.
    pub reshape: Option<Reshape>,
    /// `devflags` raw.
    pub devflags: u8,
    /// Named flags: "write-mostly", "failfast".
    pub flags: Vec<&'static str>,
    /// Update time, seconds since the epoch.
    pub update_time: u64,
    /// Update time as printed.
    pub update_time_text: String,
    /// Bad-block log reservation.
    pub bad_block_log: Option<BadBlockLog>,
    /// Checksum.
    pub checksum: Checksum,
    /// `events`.
    pub events: u64,
    /// Layout name (RAID5/6/10, and RAID0 with the layout feature).
    pub layout: Option<String>,
    #[serde(skip)]
    layout_text: Option<String>,
    /// Chunk size in KiB (levels 0, 4, 5, 6, 10).
    pub chunk_size_kib: Option<i32>,
    /// Rounding in KiB (linear).
    pub rounding_kib: Option<i32>,
    /// `dev_number`.
    pub dev_number: u32,
    /// This device's role.
    pub device_role: DeviceRole,
    /// One character per slot: 'A' active, 'R' replacing, '.' missing, '?' inconsistent.
    pub array_state: String,
    /// `max_dev`.
    pub max_dev: u32,
    /// `dev_roles` (first `max_dev` entries).
    pub dev_roles: Vec<u16>,
    /// mdadm's inconsistency warning: some slot appears more than allowed or is out of range.
    pub inconsistent: bool,
    /// `cnt_corrected_read`.
    pub cnt_corrected_read: u32,
}

fn field_err(l: &Loaded, field: &'static str, value: u64, expected: &'static str) -> ExamineError {
    ExamineError::Field {
        sector: l.sb.super_offset(),
        field,
        value,
        expected,
    }
}

/// mdadm's getinfo computation of (space_before, space_after).
fn space(l: &Loaded) -> Result<(u64, u64), ExamineError> {
    let sb = &l.sb;
    let fm = sb.feature_map();
    let super_offset = sb.super_offset();
    let data_offset = sb.data_offset();
    let bitmap_offset: i64 = if fm & feature::BITMAP_OFFSET != 0 {
        i64::from(sb.bitmap_offset() as i32)
    } else {
        0
    };
    let (ppl_offset, ppl_size): (i64, i64) =
        if fm & feature::BITMAP_OFFSET == 0 && fm & (feature::PPL | feature::MULTIPLE_PPLS) != 0 {
            (i64::from(sb.ppl_offset() as i16), i64::from(sb.ppl_size()))
        } else {
            (0, 0)
        };
    let data_size = if (sb.level() as i32) <= 0 {
        sb.data_size()
    } else {
        sb.size()
    };
    let bblog = sb.bblog_offset() != 0 && sb.bblog_size() != 0;
    let bblog_offset = i64::from(sb.bblog_offset() as i32) as u64;
    let (before, mut after);
    if data_offset < super_offset {
        before = data_offset;
        let mut end = super_offset;
        if bblog {
            let bb = super_offset.wrapping_add(bblog_offset);
            if bb < end {
                end = bb;
            }
        }
        let meta = super_offset
            .wrapping_add(bitmap_offset as u64)
            .wrapping_add(ppl_offset as u64);
        if meta < end {
            end = meta;
        }
        after = if data_offset.wrapping_add(data_size) < end {
            end.wrapping_sub(data_size).wrapping_sub(data_offset)
        } else {
            0
        };
    } else {
        let mut earliest = super_offset.wrapping_add(72);
        if bitmap_offset > 0 {
            let Some(bytes) = l.bitmap.on_disk_bytes(4096) else {
                return Err(field_err(
                    l,
                    "bitmap chunksize",
                    0,
                    "non-zero (mdadm divides by it)",
                ));
            };
            // mdadm compares the bitmap end relative to the superblock with absolute sectors.
            let bm_end = (bitmap_offset as u64).wrapping_add(bytes / 512);
            if bm_end > earliest {
                earliest = bm_end;
            }
        } else if ppl_offset > 0 {
            let ppl_end = (ppl_offset + ppl_size) as u64;
            if ppl_end > earliest {
                earliest = ppl_end;
            }
        }
        if bblog {
            let bb_end = super_offset
                .wrapping_add(bblog_offset)
                .wrapping_add(u64::from(sb.bblog_size()));
            if bb_end > earliest {
                earliest = bb_end;
            }
        }
        before = data_offset.saturating_sub(earliest);
        after = l
            .dev_sectors
            .wrapping_sub(data_size)
            .wrapping_sub(data_offset);
    }
    if before == 0 && after == 0 {
        after = 1;
    }
    if sb.own_role_for_info() == role::JOURNAL {
        after = l.dev_sectors.wrapping_sub(data_offset) % 8;
    }
    Ok((before, after))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Levels whose layout lines need mdadm's RAID5/6/10 name tables, which this tool does not carry.
fn check_renderable(l: &Loaded) -> Result<(), ExamineError> {
    let sb = &l.sb;
    if sb.max_dev() > MAX_DEVS {
        return Err(field_err(
            l,
            "max_dev",
            u64::from(sb.max_dev()),
            "at most 1920",
        ));
    }
    let delta_extra = delta_extra(l);
    let slots = sb.raid_disks().wrapping_add(delta_extra);
    if slots > MAX_ARRAY_STATE {
        return Err(if delta_extra > 0 {
            field_err(
                l,
                "delta_disks",
                u64::from(sb.delta_disks()),
                "raid_disks - delta_disks at most 16777216",
            )
        } else {
            field_err(
                l,
                "raid_disks",
                u64::from(sb.raid_disks()),
                "at most 16777216",
            )
        });
    }
    Ok(())
}

fn delta_extra(l: &Loaded) -> u32 {
    let sb = &l.sb;
    if sb.feature_map() & feature::RESHAPE_ACTIVE != 0 && (sb.delta_disks() as i32) < 0 {
        (sb.delta_disks() as i32).wrapping_neg() as u32
    } else {
        0
    }
}

/// mdadm's RAID5 layout names (first name per value).
fn r5_layout(layout: u32) -> Option<&'static str> {
    Some(match layout {
        0 => "left-asymmetric",
        1 => "right-asymmetric",
        2 => "left-symmetric",
        3 => "right-symmetric",
        4 => "parity-first",
        5 => "parity-last",
        _ => return None,
    })
}

/// mdadm's RAID6 layout names (first name per value).
fn r6_layout(layout: u32) -> Option<&'static str> {
    Some(match layout {
        8 => "ddf-zero-restart",
        9 => "ddf-N-restart",
        10 => "ddf-N-continue",
        16 => "left-asymmetric-6",
        17 => "right-asymmetric-6",
        18 => "left-symmetric-6",
        19 => "right-symmetric-6",
        20 => "parity-first-6",
        other => return r5_layout(other),
    })
}

/// mdadm's RAID0 layout names (with the RAID0_LAYOUT feature).
fn r0_layout(layout: u32) -> Option<&'static str> {
    Some(match layout {
        0 => "dangerous",
        1 => "original",
        2 => "alternate",
        _ => return None,
    })
}

/// mdadm's RAID10 layout description, as printed right after "Layout :" (leading space
/// included, none before "NO REDUNDANCY").
fn r10_layout(layout: u32) -> String {
    let near = layout & 255;
    let far = (layout >> 8) & 255;
    let offset = layout & 0x10000 != 0;
    let mut out = String::new();
    let mut sep = "";
    if near != 1 {
        out.push_str(&format!("{sep} near={near}"));
        sep = ",";
    }
    if far != 1 {
        out.push_str(&format!(
            "{sep} {}={far}",
            if offset { "offset" } else { "far" }
        ));
    }
    if near * far == 1 {
        out.push_str("NO REDUNDANCY");
    }
    out
}

/// The text mdadm prints after "Layout :" for `level`, if it prints a layout line at all.
fn layout_suffix(level: u32, layout: u32, raid0_layout: bool) -> Option<String> {
    let named = |n: Option<&str>| format!(" {}", n.unwrap_or("-unknown-"));
    match level {
        0 if raid0_layout => Some(named(r0_layout(layout))),
        5 => Some(named(r5_layout(layout))),
        6 => Some(named(r6_layout(layout))),
        10 => Some(r10_layout(layout)),
        _ => None,
    }
}

/// Computes the report for a loaded member.
pub fn build(device: &str, l: &Loaded, homehost: Option<&[u8]>) -> Result<Report, ExamineError> {
    check_renderable(l)?;
    let sb = &l.sb;
    let fm = sb.feature_map();
    let level_u = sb.level();
    let super_offset = sb.super_offset();
    let version = if super_offset <= 4 {
        "1.1"
    } else if super_offset <= 8 {
        "1.2"
    } else {
        "1.0"
    };
    let name_bytes = sb.set_name().to_vec();
    let local_bytes = homehost.and_then(|h| {
        let n = h.len();
        let raw = sb.set_name_raw();
        (n > 0 && n < 32 && raw.get(n) == Some(&b':') && raw.get(..n) == Some(h))
            .then(|| h.to_vec())
    });
    let cluster_bytes = (l.bitmap.nodes() > 0 && fm & feature::BITMAP_OFFSET != 0)
        .then(|| l.bitmap.cluster_name().to_vec());

    let data_size = sb.data_size();
    let size = sb.size();
    let (mut array_size_kib, mut array_human) = (None, String::new());
    let (mut used, mut used_human) = (None, String::new());
    if level_u != 0 {
        let raid_disks = sb.raid_disks();
        let (ddsks, denom): (i32, i64) = match level_u {
            1 => (1, 1),
            4 | 5 => (raid_disks.wrapping_sub(1) as i32, 1),
            6 => (raid_disks.wrapping_sub(2) as i32, 1),
            10 => {
                let layout = sb.layout();
                (
                    raid_disks as i32,
                    i64::from(layout & 255) * i64::from((layout >> 8) & 255),
                )
            }
            _ => (0, 1),
        };
        if ddsks != 0 {
            if denom == 0 {
                return Err(field_err(
                    l,
                    "layout",
                    u64::from(sb.layout()),
                    "non-zero copies (mdadm divides by it)",
                ));
            }
            let asize = (size as i64)
                .wrapping_shl(9)
                .wrapping_mul(i64::from(ddsks))
                .wrapping_div(denom);
            array_size_kib = Some((asize >> 10) as u64);
            array_human = human_size(asize);
        }
        if size != data_size {
            used = Some(size);
            used_human = human_size(size.wrapping_shl(9) as i64);
        }
    }

    let new_offset = (sb.new_offset() != 0 && fm & feature::NEW_OFFSET != 0).then(|| {
        sb.data_offset()
            .wrapping_add(i64::from(sb.new_offset() as i32) as u64)
    });
    let recovery = (fm & feature::RECOVERY_OFFSET != 0).then(|| sb.recovery_offset());

    let (before, after) = space(l)?;
    let unused_space = (after != 1 && fm & feature::NEW_OFFSET == 0).then(|| UnusedSpace {
        before_sectors: before,
        after_sectors: if after <= i64::MAX as u64 {
            i128::from(after)
        } else {
            i128::from(after as i64)
        },
        after_raw: after,
    });
    let truncated_device = after > i64::MAX as u64;

    let internal_bitmap = (fm & feature::BITMAP_OFFSET != 0).then(|| sb.bitmap_offset() as i32);
    let ppl = (internal_bitmap.is_none() && fm & (feature::PPL | feature::MULTIPLE_PPLS) != 0)
        .then(|| (sb.ppl_size(), sb.ppl_offset() as i16));

    let reshape = (fm & feature::RESHAPE_ACTIVE != 0).then(|| {
        let delta = sb.delta_disks();
        Reshape {
            position_kib: sb.reshape_position() / 2,
            position_sectors: sb.reshape_position(),
            delta_devices: (delta != 0).then(|| {
                (
                    delta as i32,
                    sb.raid_disks().wrapping_sub(delta) as i32,
                    sb.raid_disks() as i32,
                )
            }),
            new_level: (sb.new_level() != level_u).then(|| {
                level_name(sb.new_level())
                    .unwrap_or("-unknown-")
                    .to_string()
            }),
            new_layout: if sb.new_layout() != sb.layout() && matches!(level_u, 5 | 6 | 10) {
                layout_suffix(level_u, sb.new_layout(), false)
            } else {
                None
            },
            new_chunksize_kib: (sb.new_chunk() != sb.chunksize())
                .then(|| (sb.new_chunk() / 2) as i32),
        }
    });

    let devflags = sb.devflags();
    let mut flags = Vec::new();
    if devflags & 1 != 0 {
        flags.push("write-mostly");
    }
    if devflags & 2 != 0 {
        flags.push("failfast");
    }

    let bad_block_log = (sb.bblog_size() != 0 && sb.bblog_offset() != 0).then(|| BadBlockLog {
        entries: i64::from(sb.bblog_size()) * 512 / 8,
        offset_sectors: sb.bblog_offset() as i32,
        bad_blocks_present: fm & feature::BAD_BLOCKS != 0,
    });
    let Some(expected) = sb.expected_checksum() else {
        return Err(field_err(
            l,
            "max_dev",
            u64::from(sb.max_dev()),
            "at most 1920",
        ));
    };
    let checksum = Checksum {
        stored: sb.sb_csum(),
        expected,
        correct: expected == sb.sb_csum(),
    };

    let (chunk_size_kib, rounding_kib) = match level_u as i32 {
        0 | 4 | 5 | 6 | 10 => (Some((sb.chunksize() / 2) as i32), None),
        -1 => (None, Some((sb.chunksize() / 2) as i32)),
        _ => (None, None),
    };

    let layout_text = layout_suffix(level_u, sb.layout(), fm & feature::RAID0_LAYOUT != 0);
    let own = sb.own_role();
    let device_role = if own >= role::FAULTY {
        DeviceRole {
            kind: "spare",
            slot: None,
            raw: own,
        }
    } else if own == role::JOURNAL {
        DeviceRole {
            kind: "journal",
            slot: None,
            raw: own,
        }
    } else if fm & feature::REPLACEMENT != 0 {
        DeviceRole {
            kind: "replacement",
            slot: Some(own),
            raw: own,
        }
    } else {
        DeviceRole {
            kind: "active",
            slot: Some(own),
            raw: own,
        }
    };

    let dev_roles = sb.dev_roles();
    let mut counts = vec![0u32; 1 << 16];
    for &r in &dev_roles {
        counts[usize::from(r)] += 1;
    }
    let slots = sb.raid_disks().wrapping_add(delta_extra(l));
    let mut inconsistent = false;
    let mut array_state = String::with_capacity(slots as usize);
    for d in 0..slots {
        let cnt = counts.get(d as usize).copied().unwrap_or(0);
        array_state.push(if cnt == 2 && level_u > 0 {
            'R'
        } else if cnt == 1 {
            'A'
        } else if cnt == 0 {
            '.'
        } else {
            inconsistent = true;
            '?'
        });
    }
    if dev_roles
        .iter()
        .any(|&r| r <= role::MAX && u32::from(r) > slots)
    {
        inconsistent = true;
    }

    Ok(Report {
        device: device.to_string(),
        magic: sb.magic(),
        version,
        feature_map: fm,
        feature_map_on_disk: l.feature_map_on_disk,
        array_uuid: uuid_text(&sb.set_uuid()),
        name: lossy(&name_bytes),
        name_bytes,
        local_to_host: local_bytes.as_deref().map(lossy),
        local_bytes,
        cluster_name: cluster_bytes.as_deref().map(lossy),
        cluster_bytes,
        creation_time: sb.ctime() & 0xff_ffff_ffff,
        creation_time_text: md_ctime(sb.ctime()),
        level: level_u as i32,
        raid_level: level_name(level_u),
        raid_devices: sb.raid_disks() as i32,
        avail_dev_size_sectors: data_size,
        avail_human: human_size(data_size.wrapping_shl(9) as i64),
        array_size_kib,
        array_human,
        used_dev_size_sectors: used,
        used_human,
        data_offset_sectors: sb.data_offset(),
        new_offset_sectors: new_offset,
        super_offset_sectors: super_offset,
        recovery_offset_sectors: recovery,
        unused_space,
        state: if sb.resync_offset() == u64::MAX {
            "clean"
        } else {
            "active"
        },
        resync_offset: sb.resync_offset(),
        truncated_device,
        device_uuid: uuid_text(&sb.device_uuid()),
        internal_bitmap_offset_sectors: internal_bitmap,
        ppl_sectors: ppl,
        reshape,
        devflags,
        flags,
        update_time: sb.utime() & 0xff_ffff_ffff,
        update_time_text: md_ctime(sb.utime()),
        bad_block_log,
        checksum,
        events: sb.events(),
        layout: layout_text.as_deref().map(|t| t.trim().to_string()),
        layout_text,
        chunk_size_kib,
        rounding_kib,
        dev_number: sb.dev_number(),
        device_role,
        array_state,
        max_dev: sb.max_dev(),
        dev_roles,
        inconsistent,
        cnt_corrected_read: sb.cnt_corrected_read(),
    })
}

impl Report {
    /// Renders the report exactly as `mdadm --examine` prints it for this device, header line
    /// (`DEVICE:`) included. Bytes of the name are written as stored.
    pub fn to_mdadm_text(&self, device_bytes: &[u8]) -> Vec<u8> {
        let mut o: Vec<u8> = Vec::with_capacity(2048);
        let line = |o: &mut Vec<u8>, s: &str| {
            o.extend_from_slice(s.as_bytes());
            o.push(b'\n');
        };
        o.extend_from_slice(device_bytes);
        o.extend_from_slice(b":\n");
        line(&mut o, &format!("          Magic : {:08x}", self.magic));
        line(&mut o, &format!("        Version : {}", self.version));
        line(
            &mut o,
            &format!("    Feature Map : 0x{:x}", self.feature_map),
        );
        line(&mut o, &format!("     Array UUID : {}", self.array_uuid));
        o.extend_from_slice(b"           Name : ");
        o.extend_from_slice(&self.name_bytes);
        if let Some(h) = &self.local_bytes {
            o.extend_from_slice(b"  (local to host ");
            o.extend_from_slice(h);
            o.push(b')');
        }
        o.push(b'\n');
        if let Some(c) = &self.cluster_bytes {
            o.extend_from_slice(b"   Cluster Name : ");
            o.extend_from_slice(c);
            o.extend(std::iter::repeat_n(b' ', 64usize.saturating_sub(c.len())));
            o.push(b'\n');
        }
        line(
            &mut o,
            &format!("  Creation Time : {}", self.creation_time_text),
        );
        line(
            &mut o,
            &format!(
                "     Raid Level : {}",
                self.raid_level.unwrap_or("-unknown-")
            ),
        );
        line(&mut o, &format!("   Raid Devices : {}", self.raid_devices));
        line(&mut o, "");
        line(
            &mut o,
            &format!(
                " Avail Dev Size : {} sectors{}",
                self.avail_dev_size_sectors, self.avail_human
            ),
        );
        if let Some(kib) = self.array_size_kib {
            line(
                &mut o,
                &format!("     Array Size : {} KiB{}", kib, self.array_human),
            );
        }
        if let Some(u) = self.used_dev_size_sectors {
            line(
                &mut o,
                &format!("  Used Dev Size : {} sectors{}", u, self.used_human),
            );
        }
        if self.data_offset_sectors != 0 {
            line(
                &mut o,
                &format!("    Data Offset : {} sectors", self.data_offset_sectors),
            );
        }
        if let Some(n) = self.new_offset_sectors {
            line(&mut o, &format!("     New Offset : {n} sectors"));
        }
        line(
            &mut o,
            &format!("   Super Offset : {} sectors", self.super_offset_sectors),
        );
        if let Some(r) = self.recovery_offset_sectors {
            line(&mut o, &format!("Recovery Offset : {r} sectors"));
        }
        if let Some(u) = &self.unused_space {
            // mdadm 4.2 prints the unsigned value even when it wrapped (device too small).
            line(
                &mut o,
                &format!(
                    "   Unused Space : before={} sectors, after={} sectors",
                    u.before_sectors, u.after_raw
                ),
            );
        }
        line(&mut o, &format!("          State : {}", self.state));
        line(&mut o, &format!("    Device UUID : {}", self.device_uuid));
        line(&mut o, "");
        if let Some(b) = self.internal_bitmap_offset_sectors {
            line(
                &mut o,
                &format!("Internal Bitmap : {b} sectors from superblock"),
            );
        } else if let Some((size, off)) = self.ppl_sectors {
            line(
                &mut o,
                &format!(
                    "            PPL : {size} sectors at offset {off} sectors from superblock"
                ),
            );
        }
        if let Some(r) = &self.reshape {
            line(
                &mut o,
                &format!(
                    "  Reshape pos'n : {}{}",
                    r.position_kib,
                    human_size(r.position_sectors.wrapping_shl(9) as i64)
                ),
            );
            if let Some((delta, from, to)) = r.delta_devices {
                line(&mut o, &format!("  Delta Devices : {delta} ({from}->{to})"));
            }
            if let Some(n) = &r.new_level {
                line(&mut o, &format!("      New Level : {n}"));
            }
            if let Some(n) = &r.new_layout {
                line(&mut o, &format!("     New Layout :{n}"));
            }
            if let Some(c) = r.new_chunksize_kib {
                line(&mut o, &format!("  New Chunksize : {c}K"));
            }
            line(&mut o, "");
        }
        if self.devflags != 0 {
            let mut s = String::from("          Flags :");
            for f in &self.flags {
                s.push(' ');
                s.push_str(f);
            }
            line(&mut o, &s);
        }
        line(
            &mut o,
            &format!("    Update Time : {}", self.update_time_text),
        );
        if let Some(b) = &self.bad_block_log {
            line(
                &mut o,
                &format!(
                    "  Bad Block Log : {} entries available at offset {} sectors{}",
                    b.entries,
                    b.offset_sectors,
                    if b.bad_blocks_present {
                        " - bad blocks present."
                    } else {
                        ""
                    }
                ),
            );
        }
        if self.checksum.correct {
            line(
                &mut o,
                &format!("       Checksum : {:x} - correct", self.checksum.stored),
            );
        } else {
            line(
                &mut o,
                &format!(
                    "       Checksum : {:x} - expected {:x}",
                    self.checksum.stored, self.checksum.expected
                ),
            );
        }
        line(&mut o, &format!("         Events : {}", self.events));
        line(&mut o, "");
        if let Some(l) = &self.layout_text {
            line(&mut o, &format!("         Layout :{l}"));
        }
        if let Some(c) = self.chunk_size_kib {
            line(&mut o, &format!("     Chunk Size : {c}K"));
        }
        if let Some(r) = self.rounding_kib {
            line(&mut o, &format!("       Rounding : {r}K"));
        }
        line(&mut o, "");
        let role_text = match self.device_role.kind {
            "spare" => "spare".to_string(),
            "journal" => "Journal".to_string(),
            "replacement" => format!("Replacement device {}", self.device_role.raw),
            _ => format!("Active device {}", self.device_role.raw),
        };
        line(&mut o, &format!("   Device Role : {role_text}"));
        line(
            &mut o,
            &format!(
                "   Array State : {} ('A' == active, '.' == missing, 'R' == replacing)",
                self.array_state
            ),
        );
        if self.inconsistent {
            line(
                &mut o,
                "WARNING Array state is inconsistent - each number should appear only once",
            );
            let mut s = String::new();
            for (d, &r) in self.dev_roles.iter().enumerate() {
                if r >= role::FAULTY {
                    s.push_str(&format!(" {d}:-"));
                } else {
                    s.push_str(&format!(" {d}:{r}"));
                }
            }
            line(&mut o, &s);
        }
        o
    }
}

/// mdadm's brief size (`human_size_brief` in JEDEC units: MB, GB, TB with two decimals); empty
/// below 5000 KiB.
fn brief_size(bytes: u64) -> String {
    let (unit, name) = if bytes < 5000 * 1024 {
        return String::new();
    } else if bytes < 2 << 30 {
        (1_000_000u64, "MB")
    } else if bytes < 2 << 40 {
        (1_000_000_000, "GB")
    } else {
        (1_000_000_000_000, "TB")
    };
    let centi = (bytes / (unit / 200)).div_ceil(2);
    format!("{}.{:02}{name}", centi / 100, centi % 100)
}

impl Report {
    /// The `NAME` of `/dev/md/NAME`: the part of the array name after the home host, if any.
    fn md_name(&self) -> Option<&str> {
        if self.name.is_empty() {
            return None;
        }
        Some(self.name.split_once(':').map_or(&self.name[..], |(_, n)| n))
    }

    /// The `ARRAY` line of `mdadm --examine --brief` for this member's array (no newline);
    /// `verbose` adds the level and the number of devices, as `--verbose` does.
    pub fn array_line(&self, verbose: bool) -> String {
        let mut s = String::from("ARRAY ");
        if let Some(n) = self.md_name() {
            s.push_str(&format!("/dev/md/{n} "));
        }
        if verbose {
            if let Some(level) = self.raid_level {
                s.push_str(&format!(" level={level}"));
            }
        }
        s.push_str(&format!(" metadata={} ", self.version));
        if verbose {
            s.push_str(&format!("num-devices={} ", self.raid_devices));
        }
        s.push_str(&format!("UUID={}", self.array_uuid));
        if !self.name.is_empty() {
            s.push_str(&format!(" name={}", self.name));
        }
        s
    }

    /// `mdadm --examine --export`: one `KEY=VALUE` line per fact, for udev rules and scripts.
    pub fn export_text(&self) -> String {
        let mut s = String::new();
        if let Some(level) = self.raid_level {
            s.push_str(&format!("MD_LEVEL={level}\n"));
        }
        s.push_str(&format!("MD_DEVICES={}\n", self.raid_devices));
        let name = self.name.split('\n').next().unwrap_or("");
        if !name.is_empty() {
            s.push_str(&format!("MD_NAME={name}\n"));
        }
        if let Some(kib) = self.array_size_kib.filter(|_| self.level > 0) {
            s.push_str(&format!("MD_ARRAY_SIZE={}\n", brief_size(kib * 1024)));
        }
        s.push_str(&format!("MD_UUID={}\n", self.array_uuid));
        s.push_str(&format!(
            "MD_UPDATE_TIME={}\n",
            self.update_time & 0xFF_FFFF_FFFF
        ));
        s.push_str(&format!("MD_DEV_UUID={}\n", self.device_uuid));
        s.push_str(&format!("MD_EVENTS={}\n", self.events));
        s
    }
}

/// `mdadm --examine --brief` over several members: one `ARRAY` line per array, the array seen
/// last first (mdadm's order); `verbose` adds a `devices=` line listing its members in the order
/// given.
pub fn brief_text(found: &[(&[u8], &Report)], verbose: bool) -> Vec<u8> {
    let mut arrays: Vec<(&str, Vec<&[u8]>, &Report)> = Vec::new();
    for (path, r) in found {
        match arrays.iter_mut().find(|(u, _, _)| *u == r.array_uuid) {
            Some((_, paths, _)) => paths.push(path),
            None => arrays.push((&r.array_uuid, vec![path], r)),
        }
    }
    let mut out = Vec::new();
    for (_, paths, r) in arrays.into_iter().rev() {
        out.extend_from_slice(r.array_line(verbose).as_bytes());
        out.push(b'\n');
        if verbose {
            out.extend_from_slice(b"   devices=");
            out.extend_from_slice(&paths.join(&b","[..]));
            out.push(b'\n');
        }
    }
    out
}
