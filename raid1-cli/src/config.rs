//! mdadm's configuration file (`mdadm.conf`): the `DEVICE`, `ARRAY` and `HOMEHOST` lines that
//! `raid1 examine --scan` and `raid1 run --scan` read, with mdadm's syntax: `#` starts a
//! comment, a line that starts with white space continues the one before, a keyword may be
//! abbreviated to its first three letters or more, in any case.
//!
//! `DEVICE` words are shell patterns (`/dev/sd*`, `/srv/images/*.img`) or `partitions` (every
//! device of `/proc/partitions`); `containers` is accepted and names nothing here. An `ARRAY`
//! line names an array by `UUID=`, `name=` or both, and may list its members with `devices=`.

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Configuration files mdadm (Debian build) reads, in order; the first that exists is used.
pub const DEFAULT_FILES: [&str; 2] = ["/etc/mdadm/mdadm.conf", "/etc/mdadm.conf"];

/// One `ARRAY` line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArrayLine {
    /// The device name (`/dev/md/NAME`, `/dev/md0`), if the line has one.
    pub device: Option<String>,
    /// `UUID=`.
    pub uuid: Option<[u8; 16]>,
    /// `name=` (as stored in the superblock, `host:name` or `name`).
    pub name: Option<String>,
    /// `devices=`: the members, comma-separated.
    pub devices: Vec<PathBuf>,
    /// The 1-based line number, for messages.
    pub line: usize,
}

/// The facts of one configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Every word of every `DEVICE` line.
    pub device_patterns: Vec<String>,
    /// Every `ARRAY` line.
    pub arrays: Vec<ArrayLine>,
    /// The last `HOMEHOST` value.
    pub homehost: Option<Vec<u8>>,
}

/// A UUID as mdadm writes it: 32 hex digits, with `:`, `-`, `.` or spaces anywhere.
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(|b| !matches!(b, b':' | b'-' | b'.' | b' '))
        .collect();
    if digits.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in digits.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Whether `word` is `keyword` or an abbreviation of it of at least three letters.
fn is_keyword(word: &str, keyword: &str) -> bool {
    word.len() >= 3 && keyword.starts_with(&word.to_ascii_lowercase())
}

/// Parses the text of a configuration file. Errors name the line and what is wrong.
pub fn parse(text: &[u8]) -> Result<Config, String> {
    let mut cfg = Config::default();
    // Logical lines: continuation lines (starting with white space) join the one before.
    let mut lines: Vec<(usize, String)> = Vec::new();
    for (n, raw) in text.split(|&b| b == b'\n').enumerate() {
        let raw = String::from_utf8_lossy(raw);
        let body = raw.split('#').next().unwrap_or("");
        if body.trim().is_empty() {
            continue;
        }
        let continues = body.starts_with([' ', '\t']);
        match lines.last_mut() {
            Some((_, last)) if continues => {
                last.push(' ');
                last.push_str(body.trim());
            }
            _ => lines.push((n + 1, body.trim().to_string())),
        }
    }
    for (n, line) in lines {
        let mut words = line.split_whitespace();
        let Some(keyword) = words.next() else {
            continue;
        };
        if is_keyword(keyword, "device") {
            cfg.device_patterns.extend(words.map(str::to_string));
        } else if is_keyword(keyword, "homehost") {
            if let Some(h) = words.next() {
                cfg.homehost = Some(h.as_bytes().to_vec());
            }
        } else if is_keyword(keyword, "array") {
            let mut a = ArrayLine {
                line: n,
                ..ArrayLine::default()
            };
            for word in words {
                match word.split_once('=') {
                    None if a.device.is_none() && word != "<ignore>" => {
                        a.device = Some(word.to_string())
                    }
                    None => {}
                    Some((key, value)) => match key.to_ascii_lowercase().as_str() {
                        "uuid" => {
                            a.uuid = Some(parse_uuid(value).ok_or_else(|| {
                                format!("line {n}: UUID={value} is not 32 hexadecimal digits")
                            })?)
                        }
                        "name" => a.name = Some(value.to_string()),
                        "devices" => {
                            a.devices = value
                                .split(',')
                                .filter(|d| !d.is_empty())
                                .map(PathBuf::from)
                                .collect()
                        }
                        // metadata=, level=, num-devices=, spares=, auto=, ...: facts the
                        // superblocks carry; not used to select.
                        _ => {}
                    },
                }
            }
            if a.uuid.is_none() && a.name.is_none() && a.devices.is_empty() {
                return Err(format!(
                    "line {n}: an ARRAY line needs UUID=, name= or devices= to name its array"
                ));
            }
            cfg.arrays.push(a);
        }
        // Other keywords (MAILADDR, PROGRAM, CREATE, AUTO, POLICY, ...) configure mdadm's other
        // verbs.
    }
    Ok(cfg)
}

/// Reads `path`, or the first of [`DEFAULT_FILES`] that exists; `Ok(None)` when none does.
pub fn load(path: Option<&Path>) -> Result<Option<(PathBuf, Config)>, String> {
    let files: Vec<PathBuf> = match path {
        Some(p) => vec![p.to_path_buf()],
        None => DEFAULT_FILES.iter().map(PathBuf::from).collect(),
    };
    for f in files {
        match std::fs::read(&f) {
            Ok(text) => {
                let cfg = parse(&text).map_err(|e| format!("{}: {e}", f.display()))?;
                return Ok(Some((f, cfg)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && path.is_none() => continue,
            Err(e) => return Err(format!("{}: {e}", f.display())),
        }
    }
    Ok(None)
}

impl Config {
    /// What mdadm assumes without a configuration file: `DEVICE partitions`.
    pub fn default_partitions() -> Config {
        Config {
            device_patterns: vec!["partitions".to_string()],
            ..Config::default()
        }
    }
}

/// The paths `DEVICE` lines name, in order, each once: shell patterns expanded (a pattern that
/// matches nothing names nothing), `partitions` as every device in `/proc/partitions`.
pub fn candidates(cfg: &Config) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for pattern in &cfg.device_patterns {
        let found = match pattern.as_str() {
            "partitions" => proc_partitions(),
            "containers" => Vec::new(),
            p => glob(p),
        };
        for f in found {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    out
}

fn proc_partitions() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/partitions").unwrap_or_default();
    text.lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().nth(3))
        .map(|name| PathBuf::from(format!("/dev/{name}")))
        .collect()
}

/// Expands a shell pattern with glob(3).
fn glob(pattern: &str) -> Vec<PathBuf> {
    let Ok(c) = CString::new(pattern) else {
        return Vec::new();
    };
    // SAFETY: glob_t is plain data; glob(3) fills it and globfree releases what it allocated.
    unsafe {
        let mut g: libc::glob_t = std::mem::zeroed();
        let rc = libc::glob(c.as_ptr(), 0, None, &mut g);
        let mut out = Vec::new();
        if rc == 0 {
            for i in 0..g.gl_pathc {
                let p = *g.gl_pathv.add(i);
                if !p.is_null() {
                    let bytes = CStr::from_ptr(p).to_bytes();
                    out.push(PathBuf::from(std::ffi::OsStr::from_bytes(bytes)));
                }
            }
        }
        libc::globfree(&mut g);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mdadm_syntax() {
        let text = b"# comment\nDEV /srv/a.img /srv/b*.img  # trailing\nhomehost vm\n\
ARRAY /dev/md/web  metadata=1.2 UUID=4f0f1cd5:c5f0c82a:874b7daa:14fa0738\n   name=vm:web devices=/a,/b\n\
arr <ignore> name=other\n";
        let cfg = parse(text).unwrap();
        assert_eq!(cfg.device_patterns, ["/srv/a.img", "/srv/b*.img"]);
        assert_eq!(cfg.homehost.as_deref(), Some(&b"vm"[..]));
        assert_eq!(cfg.arrays.len(), 2);
        let a = &cfg.arrays[0];
        assert_eq!(a.device.as_deref(), Some("/dev/md/web"));
        assert_eq!(a.uuid.unwrap()[..2], [0x4f, 0x0f]);
        assert_eq!(
            a.name.as_deref(),
            Some("vm:web"),
            "continuation line joined"
        );
        assert_eq!(a.devices, [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(a.line, 4);
        assert_eq!(cfg.arrays[1].device, None);
        assert_eq!(cfg.arrays[1].name.as_deref(), Some("other"));
    }

    #[test]
    fn refuses_what_names_no_array_and_bad_uuids() {
        let e = parse(b"ARRAY /dev/md0 metadata=1.2\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("UUID="), "{e}");
        let e = parse(b"\nARRAY /dev/md0 UUID=12345\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("32 hexadecimal"), "{e}");
        assert_eq!(
            parse_uuid("4f0f1cd5-c5f0-c82a-874b-7daa14fa0738").unwrap()[15],
            0x38
        );
        assert!(parse_uuid("zz0f1cd5:c5f0c82a:874b7daa:14fa0738").is_none());
    }
}
