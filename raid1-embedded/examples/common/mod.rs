//! Glue shared by the firmware examples. On the target (thumbv7em under QEMU mps2-an386):
//! defmt over semihosting, the exit status through semihosting, a HardFault handler and a
//! panic handler that exit non-zero. On the host the same scenario runs as a normal program.

/// Print a line: defmt on the target, stdout on the host. Use `{}` placeholders only.
#[allow(unused_macros)]
macro_rules! say {
    ($($t:tt)*) => {{
        #[cfg(target_os = "none")]
        defmt::info!($($t)*);
        #[cfg(not(target_os = "none"))]
        println!($($t)*);
    }};
}

/// Report a failure and return from the scenario with `code`.
#[allow(unused_macros)]
macro_rules! fail {
    ($code:expr, $($t:tt)*) => {{
        #[cfg(target_os = "none")]
        defmt::error!($($t)*);
        #[cfg(not(target_os = "none"))]
        eprintln!($($t)*);
        return $code;
    }};
}

#[cfg(target_os = "none")]
pub mod platform {
    use cortex_m as _; // links the critical-section implementation defmt-semihosting needs
    use cortex_m_rt::{ExceptionFrame, exception};
    use defmt_semihosting as _;

    /// End the QEMU run with `code` as its exit status.
    pub fn exit(code: i32) -> ! {
        semihosting::process::exit(code)
    }

    #[exception]
    unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
        defmt::error!("HardFault at pc {=u32:#x}", frame.pc());
        exit(3)
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo) -> ! {
        defmt::error!("panic: {}", defmt::Display2Format(info));
        exit(101)
    }

    #[defmt::panic_handler]
    fn defmt_panic() -> ! {
        exit(101)
    }

    /// Static byte storage of `N` bytes filled with `fill` (a simulated chip's memory).
    #[macro_export]
    macro_rules! storage {
        ($t:ty, $n:expr, $fill:expr) => {
            cortex_m::singleton!(: [$t; $n] = [$fill; $n]).expect("storage taken once")
        };
    }
}

#[cfg(not(target_os = "none"))]
pub mod platform {
    /// End the program with `code` as its exit status.
    #[allow(dead_code)]
    pub fn exit(code: i32) -> ! {
        std::process::exit(code)
    }

    /// Heap storage on the host.
    #[macro_export]
    macro_rules! storage {
        ($t:ty, $n:expr, $fill:expr) => {
            Box::leak(vec![$fill; $n].into_boxed_slice())
        };
    }
}

/// Stack high-water marks on the target: paint the stack below the current frame, then count
/// how far down the paint was overwritten. On the host both return 0.
#[allow(dead_code)]
pub mod stack {
    #[cfg(target_os = "none")]
    const DEPTH: usize = 64 * 1024;
    #[cfg(target_os = "none")]
    const PAINT: u32 = 0x5AFE_C0DE;

    /// Paint the 64 KiB below the current frame; returns the stack pointer to give `used`.
    #[cfg(target_os = "none")]
    pub fn paint() -> usize {
        let sp = cortex_m::register::msp::read() as usize;
        let mut p = sp - DEPTH;
        // Stop 256 bytes below the current frame, which is live.
        while p < sp - 256 {
            // SAFETY: the 64 KiB below the stack pointer are unused stack (RAM is 4 MiB, the
            // statics sit at its bottom); nothing lives there yet.
            unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
            p += 4;
        }
        sp
    }

    /// Bytes of stack used below `sp` since `paint`.
    #[cfg(target_os = "none")]
    pub fn used(sp: usize) -> usize {
        let mut p = sp - DEPTH;
        // SAFETY: reads of the painted region, which is RAM.
        while p < sp && unsafe { core::ptr::read_volatile(p as *const u32) } == PAINT {
            p += 4;
        }
        sp - p
    }

    #[cfg(not(target_os = "none"))]
    pub fn paint() -> usize {
        0
    }

    #[cfg(not(target_os = "none"))]
    pub fn used(_: usize) -> usize {
        0
    }
}
