//! `raid1 run`: assemble an md RAID1 array from its members and serve it over NBD (the running
//! array is [`crate::array`]); with `--daemon`, detach once it serves.

use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, RawFd};

use std::path::PathBuf;

use clap::Args;

use crate::array::{self, StartOptions};

mod scan;

/// Arguments of `raid1 run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// What the array is started with.
    #[command(flatten)]
    pub start: StartOptions,
    /// Detach once the array is serving (the command returns then).
    #[arg(long)]
    pub daemon: bool,
    /// Find the members through the configuration file (mdadm's `--assemble --scan`): its
    /// ARRAY lines name the arrays (all arrays found, if it has none), its DEVICE lines and
    /// ARRAY `devices=` lists the devices to look at. More than one array needs `--daemon`
    /// (one process each) or a choice with `--uuid` or `--name`.
    #[arg(long, conflicts_with = "devices")]
    pub scan: bool,
    /// The configuration file for `--scan` (default: /etc/mdadm/mdadm.conf, then
    /// /etc/mdadm.conf).
    #[arg(long, value_name = "FILE", requires = "scan")]
    pub config: Option<PathBuf>,
    /// With `--scan`: only the array with this UUID. With `--update=uuid`: the new UUID
    /// (as mdadm takes it).
    #[arg(long, value_name = "UUID")]
    pub uuid: Option<String>,
}

/// Reports readiness (or an error) to the parent of a daemon.
struct Ready(Option<std::fs::File>);

impl Ready {
    fn send(&mut self, msg: &str) {
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(msg.as_bytes());
        }
    }
}

/// `raid1 run`. Returns the exit status.
pub fn run_main(args: &RunArgs) -> i32 {
    let new_uuid = args.start.update == Some(crate::array::update::Update::Uuid);
    if args.uuid.is_some() && !args.scan && !new_uuid {
        eprintln!(
            "raid1 run: --uuid selects an array with --scan, or gives the new UUID with \
             --update=uuid"
        );
        return 2;
    }
    if new_uuid && args.scan {
        eprintln!(
            "raid1 run: --update=uuid takes its UUID from --uuid, which --scan uses to choose \
             the array: name the members instead of --scan"
        );
        return 2;
    }
    if args.scan {
        return run_scan(args);
    }
    let mut opts = args.start.clone();
    if new_uuid {
        opts.new_uuid.clone_from(&args.uuid);
    }
    start(args, &opts)
}

/// `--scan`: the arrays the configuration file leads to, each started with its members.
fn run_scan(args: &RunArgs) -> i32 {
    let arrays = match scan::arrays(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("raid1 run: --scan: {e}");
            return 2;
        }
    };
    match arrays.as_slice() {
        [] => {
            eprintln!("raid1 run: --scan: no array found");
            2
        }
        [one] => {
            let mut start_opts = args.start.clone();
            start_opts.devices.clone_from(&one.members);
            start(args, &start_opts)
        }
        several if args.daemon && args.start.nbd.is_none() => {
            // One daemon each: this command again, narrowed to one array by its UUID.
            let mut status = 0;
            for a in several {
                let me = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("raid1"));
                let child = std::process::Command::new(me)
                    .args(std::env::args_os().skip(1))
                    .args(["--uuid", &a.uuid])
                    .status();
                match child {
                    Ok(s) if s.success() => {}
                    Ok(_) => status = 2,
                    Err(e) => {
                        eprintln!("raid1 run: --scan: cannot start array {}: {e}", a.uuid);
                        status = 2;
                    }
                }
            }
            status
        }
        several => {
            let list: Vec<String> = several
                .iter()
                .map(|a| format!("{} ({})", a.uuid, a.name))
                .collect();
            eprintln!(
                "raid1 run: --scan: {} arrays found: {}; choose one with --uuid or --name, or \
                 start each in its own process with --daemon{}",
                several.len(),
                list.join(", "),
                if args.start.nbd.is_some() {
                    " (without --nbd: each array needs its own address)"
                } else {
                    ""
                }
            );
            2
        }
    }
}

fn start(args: &RunArgs, start_opts: &StartOptions) -> i32 {
    let mut ready = Ready(None);
    if args.daemon {
        match daemonize() {
            Ok(Some(status)) => return status,
            Ok(None) => {}
            Err(e) => {
                eprintln!("raid1 run: --daemon: {e}");
                return 2;
            }
        }
        // In the child: the pipe to the parent is fd 3 (see daemonize).
        // SAFETY: daemonize left this descriptor open for us and nothing else owns it.
        ready.0 = Some(unsafe { std::fs::File::from_raw_fd(READY_FD) });
    }
    let daemon = ready.0.is_some();
    let mut serving = |msg: &str| {
        if daemon {
            ready.send(&format!("ok\n{msg}"));
            detach_stdio();
        } else {
            eprint!("{msg}");
        }
    };
    let result = array::run_array(start_opts, &mut serving);
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("raid1 run: {e}");
            ready.send(&format!("error: {e}\n"));
            2
        }
    }
}

const READY_FD: RawFd = 3;

/// Forks; the parent waits for the child's readiness message and returns its exit status,
/// the child (`Ok(None)`) continues in a new session with the pipe's write end at fd 3.
fn daemonize() -> io::Result<Option<i32>> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: single-threaded at this point; the child only continues our own code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid > 0 {
        // SAFETY: we own both ends.
        unsafe { libc::close(fds[1]) };
        // SAFETY: fds[0] is ours.
        let mut r = unsafe { std::fs::File::from_raw_fd(fds[0]) };
        let mut msg = String::new();
        let _ = r.read_to_string(&mut msg);
        if msg.starts_with("ok") {
            out!("{}", msg.trim_start_matches("ok\n"));
            return Ok(Some(0));
        }
        let msg = msg.trim_start_matches("error: ");
        if msg.is_empty() {
            eprintln!("raid1 run: the daemon exited before serving");
        }
        return Ok(Some(2));
    }
    // SAFETY: plain descriptor and session calls in the child.
    unsafe {
        libc::close(fds[0]);
        libc::setsid();
        if fds[1] != READY_FD {
            libc::dup2(fds[1], READY_FD);
            libc::close(fds[1]);
        }
    }
    Ok(None)
}

fn detach_stdio() {
    // SAFETY: opening /dev/null and duplicating it over 0, 1, 2.
    unsafe {
        let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            libc::dup2(fd, 0);
            libc::dup2(fd, 1);
            libc::dup2(fd, 2);
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
}
