//! The threads of `raid1 run`: the array loop on the calling thread, the NBD server on a thread
//! of its own, joined by the link (`link.rs`).
//!
//! The array loop owns the engine (protocol adaptor, core driver, metadata writer, discard
//! splitting), the member ring and the control socket. Each turn it takes the requests the NBD
//! thread handed over, reaps member completions and fires the core's timer, answers the control
//! socket, drains the core, and hands completions and empty buffers back; then it sleeps in
//! `epoll` until the ring, the control socket or the link has something, or the core's next
//! timer. The NBD thread runs the server's own `poll(2)` loop over the client sockets.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::control::ControlServer;
use super::engine::RaidEngine;
use super::link::{self, ArrayLink, LinkBackend};
use crate::nbd::{ListenAddress, NbdServer, ServerConfig};

/// The NBD side, listening, before its thread starts.
pub struct Frontend {
    server: NbdServer<LinkBackend>,
    link: ArrayLink,
    /// Where it listens (the port the kernel chose for `tcp:...:0`).
    pub bound: ListenAddress,
    /// The block device served beside NBD (`--ublk`), its queues on threads of their own.
    pub ublk: Option<crate::ublk::Ublk>,
    /// The array thread's ends of the ublk queues' links.
    pub ublk_links: Vec<ArrayLink>,
}

impl Frontend {
    /// Makes the link to `engine` and the NBD server on its far end, listening on `address`.
    pub fn listen(
        engine: &RaidEngine,
        config: ServerConfig,
        address: &ListenAddress,
    ) -> Result<Frontend, String> {
        let (link, backend) = link::link(engine).map_err(|e| format!("eventfd: {e}"))?;
        let mut server = NbdServer::new(backend, config);
        let bound = server
            .listen(address)
            .map_err(|e| format!("NBD listen on {address}: {e}"))?;
        Ok(Frontend {
            server,
            link,
            bound,
            ublk: None,
            ublk_links: Vec::new(),
        })
    }
}

/// Runs the array until `stop` is set or the control socket asks for a stop; the NBD thread is
/// stopped and joined before it returns, and every buffer it held is back in the engine.
/// `on_nbd_thread` runs first thing on the NBD thread (the allocation test counts there).
pub fn run(
    engine: &mut RaidEngine,
    frontend: Frontend,
    control: &mut ControlServer,
    stop: &AtomicBool,
    on_nbd_thread: fn(),
) -> Result<(), String> {
    run_ready(engine, frontend, control, stop, on_nbd_thread, &mut || {})
}

/// [`run`], calling `ready` once every frontend serves: at once for NBD (it listens already),
/// after the kernel has added `/dev/ublkbN` (or ended its recovery) for ublk.
pub fn run_ready(
    engine: &mut RaidEngine,
    frontend: Frontend,
    control: &mut ControlServer,
    stop: &AtomicBool,
    on_nbd_thread: fn(),
    ready: &mut dyn FnMut(),
) -> Result<(), String> {
    let Frontend {
        mut server,
        link,
        mut ublk,
        ublk_links,
        ..
    } = frontend;
    let mut links = vec![link];
    links.extend(ublk_links);
    for (i, l) in links.iter_mut().enumerate() {
        l.set_frontend(i);
        control.watch(l.wake_fd());
    }
    one_arena();
    let nbd_stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let nbd = std::thread::Builder::new()
            .name("raid1-nbd".into())
            .spawn_scoped(scope, || {
                on_nbd_thread();
                while !nbd_stop.load(Ordering::Acquire) {
                    server.run_once(Some(Duration::from_secs(1)))?;
                }
                drop(server);
                Ok::<(), std::io::Error>(())
            })
            .map_err(|e| format!("cannot start the NBD thread: {e}"))?;
        let started = match ublk.as_mut() {
            Some(u) => u.start().and_then(|()| {
                // The kernel reads the new device (its partition table) before it completes
                // the start: the array serves meanwhile.
                while !u.start_done() && !stop.load(Ordering::SeqCst) && !u.queue_ended() {
                    turn(engine, &mut links, control);
                }
                u.start_result()
            }),
            None => Ok(()),
        };
        let mut result = match started {
            Ok(()) => {
                ready();
                array_loop(engine, &mut links, control, stop, &nbd, ublk.as_mut())
            }
            Err(e) => Err(e),
        };
        if let Some(u) = ublk.as_mut() {
            // The kernel drains the device before its queues end: the array keeps serving.
            u.begin_stop();
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while !u.stopped() && std::time::Instant::now() < deadline {
                turn(engine, &mut links, control);
            }
        }
        nbd_stop.store(true, Ordering::Release);
        links[0].wake_nbd();
        let joined = nbd.join();
        if let Some(u) = ublk.take()
            && let Err(e) = u.finish()
            && result.is_ok()
        {
            result = Err(e);
        }
        for l in links.iter_mut() {
            l.close(engine);
        }
        result?;
        match joined {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("NBD server: {e}")),
            Err(_) => Err("the NBD thread panicked".into()),
        }
    })
}

/// One malloc arena for the whole process: glibc would give the NBD thread an arena of its own,
/// whose freed memory (the read data of clients that left) `malloc_trim` does not always give
/// back (run_hostile saw 20–30 MiB stay). Nothing allocates per request, so sharing the arena
/// costs nothing on the data path.
fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator setting; called before the NBD thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn array_loop<T>(
    engine: &mut RaidEngine,
    links: &mut [ArrayLink],
    control: &mut ControlServer,
    stop: &AtomicBool,
    nbd: &std::thread::ScopedJoinHandle<'_, T>,
    ublk: Option<&mut crate::ublk::Ublk>,
) -> Result<(), String> {
    let ublk = ublk.as_deref();
    loop {
        if stop.load(Ordering::SeqCst) || control.stop_requested {
            return Ok(());
        }
        if nbd.is_finished() {
            return Err("the NBD thread ended".into());
        }
        if ublk.is_some_and(|u| u.queue_ended()) {
            return Err("a ublk queue thread ended".into());
        }
        turn(engine, links, control);
    }
}

/// One turn of the array loop: what the frontends handed over, member completions, the
/// control socket, the core; completions back; then a sleep until something is ready.
fn turn(engine: &mut RaidEngine, links: &mut [ArrayLink], control: &mut ControlServer) {
    control.register_ring(engine);
    for l in links.iter_mut() {
        l.take_in(engine);
    }
    engine.service();
    control.turn(engine);
    engine.drive();
    link::give_out(links, engine);
    let timeout = engine
        .next_timeout()
        .unwrap_or(Duration::from_secs(1))
        .min(Duration::from_secs(1));
    control.wait(timeout);
}
