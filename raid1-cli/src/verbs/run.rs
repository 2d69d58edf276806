//! `raid1 run`: assemble an md RAID1 array from its members and serve it over NBD (the running
//! array is [`crate::array`]); with `--daemon`, detach once it serves.

use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, RawFd};

use clap::Args;

use crate::array::{self, StartOptions};

/// Arguments of `raid1 run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// What the array is started with.
    #[command(flatten)]
    pub start: StartOptions,
    /// Detach once the array is serving (the command returns then).
    #[arg(long)]
    pub daemon: bool,
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
    let result = array::run_array(&args.start, &mut serving);
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
            print!("{}", msg.trim_start_matches("ok\n"));
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
