//! The `/proc/mdstat` block of an array, as md's `md_seq_show` prints it, from facts the
//! running array gathers.

use raid1_core::SyncAction;

/// One member as its `/proc/mdstat` entry shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdstatMember {
    /// The device's base name.
    pub name: String,
    /// Its position (`dev_number`).
    pub number: usize,
    /// WriteMostly: `(W)`.
    pub write_mostly: bool,
    /// Faulty: `(F)`.
    pub faulty: bool,
    /// A spare, or a spare being recovered: `(S)`.
    pub spare: bool,
    /// Being rebuilt as a replacement: `(R)`.
    pub replacement: bool,
}

/// Sync progress: the action, position and end (sectors), and the `dt` seconds in which `db`
/// sectors were done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MdstatSync {
    /// What runs.
    pub action: SyncAction,
    /// Sectors done.
    pub pos: u64,
    /// Sectors in all.
    pub end: u64,
    /// Seconds measured over.
    pub dt: u64,
    /// Sectors done in them.
    pub db: u64,
}

/// The bitmap: chunks, chunk size in sectors, and which chunks are dirty.
pub struct MdstatBitmap<'a> {
    /// Chunks covering the array.
    pub chunks: u64,
    /// Sectors per chunk.
    pub chunk_sectors: u64,
    /// Whether chunk `c` is dirty.
    pub dirty: &'a dyn Fn(u64) -> bool,
}

/// What one array's block shows.
pub struct Mdstat<'a> {
    /// The array's name.
    pub name: &'a str,
    /// Members in the order md prints them (highest position first).
    pub members: Vec<MdstatMember>,
    /// Mirror slots, each true when an in-sync member serves it.
    pub slots_up: Vec<bool>,
    /// In-sync mirrors.
    pub in_sync: u16,
    /// Metadata version text (`1.0`, `1.1`, `1.2`).
    pub version: &'a str,
    /// Array size in KiB.
    pub blocks_kib: u64,
    /// Sync progress, while a sync runs.
    pub sync: Option<MdstatSync>,
    /// The bitmap, when the array has one.
    pub bitmap: Option<MdstatBitmap<'a>>,
    /// Read-only: `active (read-only) raid1`, as the kernel prints it.
    pub read_only: bool,
}

/// The block: the member line, then `blocks super V [n/m] [UU]`, then on a new line indented
/// by six spaces the sync progress (if any, then another new indented line) and the bitmap
/// line (if any, ending the line), then the line ends.
pub fn render(m: &Mdstat<'_>) -> String {
    let devs: Vec<String> = m
        .members
        .iter()
        .map(|d| {
            let wm = if d.write_mostly { "(W)" } else { "" };
            let suffix = if d.faulty {
                "(F)"
            } else if d.spare {
                "(S)"
            } else {
                ""
            };
            let r = if d.replacement && !d.faulty {
                "(R)"
            } else {
                ""
            };
            format!("{}[{}]{wm}{suffix}{r}", d.name, d.number)
        })
        .collect();
    let slots: String = m
        .slots_up
        .iter()
        .map(|up| if *up { 'U' } else { '_' })
        .collect();
    let mut out = format!(
        "{} : active {}raid1 {}\n      {} blocks super {} [{}/{}] [{slots}]\n      ",
        m.name,
        if m.read_only { "(read-only) " } else { "" },
        devs.join(" "),
        m.blocks_kib,
        m.version,
        m.slots_up.len(),
        m.in_sync
    );
    if let Some(s) = m.sync {
        out.push_str(&progress_line(s.action, s.pos, s.end, s.dt, s.db));
        out.push_str("\n      ");
    }
    if let Some(b) = &m.bitmap {
        out.push_str(&bitmap_line(b.chunks, b.chunk_sectors, b.dirty));
    }
    out.push('\n');
    out
}

/// md's in-memory bitmap counters per 4 KiB page (`PAGE_COUNTER_RATIO`: 16-bit counters).
const BITMAP_CHUNKS_PER_PAGE: u64 = 4096 * 8 / 16;

/// The bitmap line of `/proc/mdstat` (md_bitmap_status): counter pages in use (here: those
/// covering a dirty chunk) of all, their KiB, and the chunk size.
fn bitmap_line(chunks: u64, chunk_sectors: u64, dirty: &dyn Fn(u64) -> bool) -> String {
    let pages = chunks.div_ceil(BITMAP_CHUNKS_PER_PAGE);
    let used = (0..pages)
        .filter(|p| {
            let first = p * BITMAP_CHUNKS_PER_PAGE;
            (first..(first + BITMAP_CHUNKS_PER_PAGE).min(chunks)).any(dirty)
        })
        .count() as u64;
    let chunk_kb = chunk_sectors / 2;
    let chunk = if chunk_kb > 0 {
        format!("{chunk_kb}KB")
    } else {
        format!("{}B", chunk_sectors * 512)
    };
    format!(
        "bitmap: {used}/{pages} pages [{}KB], {chunk} chunk\n",
        used * 4
    )
}

/// The progress line of `/proc/mdstat` as md's `status_resync` prints it: a 20-step bar, the
/// action (`repair` shows as `resync`, as md sets the sync bit for it), per mille of `end`
/// (md's arithmetic: both scaled down by 2^10, `end` plus one), position and end in KiB, the
/// time left and the speed over the `dt` seconds in which `db` sectors were done.
fn progress_line(action: SyncAction, pos: u64, end: u64, dt: u64, db: u64) -> String {
    let pos = pos.min(end);
    let per_milli = ((pos >> 10) * 1000) / ((end >> 10) + 1);
    let x = (per_milli / 50) as usize;
    let bar = format!("[{}>{}]", "=".repeat(x), ".".repeat(20 - x.min(20)));
    let word = match action {
        SyncAction::Check => "check",
        SyncAction::Resync | SyncAction::Repair => "resync",
        SyncAction::Recovery => "recovery",
    };
    let dt = dt.max(1);
    let rt = ((end - pos) / (db / 32 + 1) * dt) >> 5;
    format!(
        "{bar}  {word} ={:>3}.{}% ({}/{}) finish={}.{}min speed={}K/sec",
        per_milli / 10,
        per_milli % 10,
        pos / 2,
        end / 2,
        rt / 60,
        (rt % 60) / 6,
        db / 2 / dt
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_and_bitmap_lines_use_mds_arithmetic_and_padding() {
        // 4.2 %: no '=' yet (42 / 50 = 0), the percentage right-aligned in three places;
        // 978 s left: (2007024 / (20480 / 32 + 1)) * 10 >> 5, shown as minutes and tenths.
        let end = 1 << 21;
        let pos = end * 42 / 1000 + 2048;
        let line = progress_line(SyncAction::Recovery, pos, end, 10, 20480);
        assert_eq!(
            line,
            "[>....................]  recovery =  4.2% (45064/1048576) finish=16.3min \
             speed=1024K/sec"
        );
        assert_eq!(
            &progress_line(SyncAction::Repair, end / 2, end, 0, 0)[..36],
            "[=========>...........]  resync = 49"
        );
        assert!(progress_line(SyncAction::Check, end, end, 1, 0).contains("check = 99.9%"));
        // 65536 chunks: 32 counter pages; chunks 0 and 40000 dirty: pages 0 and 19.
        let line = bitmap_line(65536, 128, &|c| c == 0 || c == 40000);
        assert_eq!(line, "bitmap: 2/32 pages [8KB], 64KB chunk\n");
    }
}
