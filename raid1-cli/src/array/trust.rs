//! How far on-disk metadata is trusted at assembly: as far as Linux md trusts it (issue 9).
//!
//! * The array has one bitmap: the freshest member's (mdadm adds the chosen, freshest device
//!   last, so it heads md's device list, and md reads the bitmap from the first in-sync device
//!   whose read succeeds). If that bitmap cannot be loaded, the array is not started (md's
//!   `md_bitmap_read_sb` fails, `md_run` gives up). Another member's bitmap that cannot be
//!   loaded, or that sits at another `bitmap_offset`, is not read by md at all and is rewritten
//!   from the array's bitmap (md writes the same bitmap pages and header to every active
//!   member): here that member gets the array's header and offset, and its bits do not count.
//! * Every member's bitmap header is the array's, with `sync_size` set to the array size
//!   (`md_bitmap_read_sb` and `md_bitmap_update_sb` rewrite it; the number of bits follows
//!   the array size, never the on-disk `sync_size`).
//! * A bitmap marked stale (`BITMAP_STALE`) or whose `events` are behind the array's is out of
//!   date: every bit is set (`md_bitmap_init_from_disk`'s "doing full recovery"), so an unclean
//!   array resyncs whole and a re-added member recovers whole; a clean array does not resync
//!   (md passes `start` = `recovery_cp`, MaxSector when clean). md clears the flag once the
//!   all-ones pages are written (`md_bitmap_load` then `md_bitmap_update_sb`); here the header
//!   keeps it until the clean stop has written every page, so a crash meanwhile repeats the
//!   full pass.
//! * A member's role table (`dev_roles`, `max_dev` entries) that does not cover another
//!   present member: md takes that member's role from its own superblock when its events equal
//!   the freshest's (`super_1_validate`) and refuses it otherwise; `super_1_sync` grows
//!   `max_dev` when it writes, so the role lands on disk.

use raid1_superblock::{BitmapState, BitmapSuperblock, DevRole, FeatureMap};

use crate::member::strict::{FoundMember, array_bitmap};

/// Whether the array's bitmap is out of date: marked stale, or its events behind the array's.
pub fn bitmap_out_of_date(bm: &BitmapSuperblock, array_events: u64) -> bool {
    bm.state.contains(BitmapState::STALE) || bm.events < array_events
}

/// Marks chunks `0..chunks` dirty in `bits` (the bits past the last chunk stay clear).
pub fn set_all(bits: &mut [u8], chunks: u64) {
    for (i, b) in bits.iter_mut().enumerate() {
        let first = i as u64 * 8;
        *b |= match chunks.saturating_sub(first) {
            0 => 0,
            n if n >= 8 => 0xff,
            n => (1u8 << n) - 1,
        };
    }
}

/// Gives a member's role table an entry for another present member it does not cover (in
/// memory; it lands on disk with the next superblock write) when their events are equal: that
/// member's own role, as md's `super_1_validate` takes it. One with other events stays
/// uncovered, so it is left out as md refuses it ("desc_nr >= freshest max_dev"). A member's
/// own entry is never added: a member whose own `dev_number` is beyond its `max_dev` is a
/// spare, as in md.
pub fn cover_roles(found: &mut [FoundMember]) {
    let claims: Vec<(u32, u64, Option<DevRole>)> = found
        .iter()
        .map(|m| {
            (
                m.meta.sb.dev_number,
                m.meta.sb.events,
                m.meta.sb.role(m.meta.sb.dev_number),
            )
        })
        .collect();
    for m in found.iter_mut() {
        for &(number, events, own) in &claims {
            if number == m.meta.sb.dev_number
                || number < m.meta.sb.max_dev
                || events != m.meta.sb.events
            {
                continue;
            }
            if let Some(role) = own {
                if m.meta.sb.set_max_dev(number + 1).is_ok() {
                    let _ = m.meta.sb.set_role(number, role);
                }
            }
        }
    }
}

/// What [`adopt_array_bitmap`] decided.
#[derive(Debug, Default)]
pub struct BitmapVerdict {
    /// The array's bitmap is out of date: set every bit.
    pub out_of_date: bool,
    /// Members whose own bitmap was not used, with the reason (for a note on stderr).
    pub replaced: Vec<(String, String)>,
}

/// Makes the freshest member's bitmap the array's and gives every member its header (and its
/// `bitmap_offset`); refuses the array if the freshest member's bitmap cannot be loaded. A
/// member whose own bitmap was not loaded, was at another offset or had another chunk size
/// gets a copy of the array's area (its bits then add nothing to the OR of the members').
/// Writes nothing.
pub fn adopt_array_bitmap(
    members: &mut [FoundMember],
    fresh: usize,
) -> Result<BitmapVerdict, String> {
    let fresh = &members[fresh];
    if !fresh
        .meta
        .sb
        .feature_map
        .contains(FeatureMap::BITMAP_OFFSET)
    {
        return Ok(BitmapVerdict::default());
    }
    let Some((fresh_bm, fresh_image)) = fresh.meta.bitmap.as_ref() else {
        return Err(format!(
            "{}: cannot load the array's bitmap (read from this member, the freshest, as Linux \
             does): {}",
            fresh.meta.path.display(),
            fresh
                .bitmap_error
                .as_deref()
                .unwrap_or("no bitmap at bitmap_offset")
        ));
    };
    let header = array_bitmap(fresh_bm, fresh.meta.sb.size);
    let image = fresh_image.clone();
    let offset = fresh.meta.sb.bitmap_offset;
    let mut verdict = BitmapVerdict {
        out_of_date: bitmap_out_of_date(fresh_bm, fresh.meta.sb.events),
        replaced: Vec::new(),
    };
    for m in members.iter_mut() {
        if let Some(why) = adopt(m, &header, &image, offset)? {
            verdict
                .replaced
                .push((m.meta.path.display().to_string(), why));
        }
    }
    Ok(verdict)
}

/// Gives member `m` the array's bitmap `header` (and `offset`); when its own bitmap was not
/// loaded, sits elsewhere or has another chunk size, also a copy of the array's bitmap area
/// `image`, and returns why. Errors if the array's area does not fit the member.
pub fn adopt(
    m: &mut FoundMember,
    header: &BitmapSuperblock,
    image: &[u8],
    offset: i32,
) -> Result<Option<String>, String> {
    let why = if let Some(e) = &m.bitmap_error {
        Some(e.clone())
    } else if !m.meta.sb.feature_map.contains(FeatureMap::BITMAP_OFFSET) {
        Some("no bitmap (feature bit BITMAP_OFFSET clear)".to_string())
    } else if m.meta.sb.bitmap_offset != offset {
        Some(format!(
            "bitmap_offset = {} sectors, the array's is {offset}",
            m.meta.sb.bitmap_offset
        ))
    } else if m
        .meta
        .bitmap
        .as_ref()
        .is_some_and(|(b, _)| b.chunksize != header.chunksize)
    {
        Some(format!(
            "bitmap chunksize = {}, the array's is {}",
            m.meta.bitmap.as_ref().map_or(0, |(b, _)| b.chunksize),
            header.chunksize
        ))
    } else {
        None
    };
    match &why {
        None => {
            if let Some((bm, img)) = m.meta.bitmap.as_mut() {
                *bm = header.clone();
                let _ = bm.serialize(img);
            }
        }
        Some(_) => {
            m.meta.sb.feature_map.insert(FeatureMap::BITMAP_OFFSET);
            m.meta.sb.bitmap_offset = offset;
            check_room(m, image.len())?;
            let mut img = image.to_vec();
            let _ = header.serialize(&mut img);
            m.meta.bitmap = Some((header.clone(), img));
            m.bitmap_error = None;
        }
    }
    Ok(why)
}

/// Refuses a member on which the array's bitmap area (`len` bytes at the array's offset) would
/// overlap its data or leave the device.
fn check_room(m: &FoundMember, len: usize) -> Result<(), String> {
    let p = m.meta.path.display();
    let sectors = m.meta.size / 512;
    let bs = m.meta.sb.bitmap_sector().unwrap_or(u64::MAX);
    let end = bs.saturating_add((len as u64).div_ceil(512));
    let data_end = m.meta.sb.data_offset.saturating_add(m.meta.sb.size);
    if end > sectors || (bs < data_end && m.meta.sb.data_offset < end) {
        return Err(format!(
            "{p}: the array's bitmap (sectors {bs}..{end} on this member, bitmap_offset {}) \
             would overlap its data area (sectors {}..{data_end}) or leave the device",
            m.meta.sb.bitmap_offset, m.meta.sb.data_offset
        ));
    }
    Ok(())
}
