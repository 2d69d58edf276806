//! Planted bugs: deliberately broken engine behaviour that proves the simulator and the tests
//! catch it (`raid1-sim/tests/bites.rs`, `raid1-sim/catch-rates.sh`). Never in production.
//!
//! Each bug is switched on in one of two ways:
//!
//! - its own cargo feature, `planted-bug-NAME`, for a build that carries that one bug;
//! - the feature `planted-bugs` and the environment variable `RAID1_PLANTED_BUG=NAME` at run
//!   time: one build that can carry any of them, so that a sweep over every bug builds the
//!   engine once instead of once per bug.
//!
//! Without either feature [`on`] is a constant `false` at every call site and no code remains.

/// Declares the bugs: variant, name, the feature that plants it alone.
macro_rules! bugs {
    ($($bug:ident $name:literal $feature:tt,)*) => {
        /// A planted bug, named as in its feature `planted-bug-NAME`.
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        pub(crate) enum Bug {
            $($bug,)*
        }

        impl Bug {
            /// Whether the build carries this bug by its own feature.
            #[inline(always)]
            const fn built_in(self) -> bool {
                match self {
                    $(Bug::$bug => cfg!(feature = $feature),)*
                }
            }
        }

        /// Every bug with its name, as `RAID1_PLANTED_BUG` gives it.
        #[cfg(feature = "planted-bugs")]
        const NAMES: &[(Bug, &str)] = &[$((Bug::$bug, $name),)*];
    };
}

bugs! {
    EarlyAck "early-ack" "planted-bug-early-ack",
    FreezeNoDrain "freeze-no-drain" "planted-bug-freeze-no-drain",
    IgnoreBadBlocks "ignore-bad-blocks" "planted-bug-ignore-bad-blocks",
    AckBeforeBitmap "ack-before-bitmap" "planted-bug-ack-before-bitmap",
    ClearBitInFlight "clear-bit-in-flight" "planted-bug-clear-bit-in-flight",
    SkipFailureRecord "skip-failure-record" "planted-bug-skip-failure-record",
    LogBeforeMadeGoodFlush "log-before-made-good-flush" "planted-bug-log-before-made-good-flush",
    WriteWhileReadOnly "write-while-read-only" "planted-bug-write-while-read-only",
    FailfastIgnored "failfast-ignored" "planted-bug-failfast-ignored",
    WriteBeforeBitmapDropped "write-before-bitmap-dropped" "planted-bug-write-before-bitmap-dropped",
    ReplaceUnrecorded "replace-unrecorded" "planted-bug-replace-unrecorded",
    BehindSource "behind-source" "planted-bug-behind-source",
    TrustLagging "trust-lagging" "planted-bug-trust-lagging",
    FailfastOverLag "failfast-over-lag" "planted-bug-failfast-over-lag",
    WmMovesSource "wm-moves-source" "planted-bug-wm-moves-source",
    BehindReadElsewhere "behind-read-elsewhere" "planted-bug-behind-read-elsewhere",
    RecoveredStillLags "recovered-still-lags" "planted-bug-recovered-still-lags",
    BehindOverStaleLog "behind-over-stale-log" "planted-bug-behind-over-stale-log",
    DropBitmapWhileLagging "drop-bitmap-while-lagging" "planted-bug-drop-bitmap-while-lagging",
    ResizeNoResync "resize-no-resync" "planted-bug-resize-no-resync",
    BehindSbFirst "behind-sb-first" "planted-bug-behind-sb-first",
    BarrierAtPiece "barrier-at-piece" "planted-bug-barrier-at-piece",
    ReadDuringFix "read-during-fix" "planted-bug-read-during-fix",
    WriteBeforeSyncBits "write-before-sync-bits" "planted-bug-write-before-sync-bits",
    ReadFromFailed "read-from-failed" "planted-bug-read-from-failed",
    WriteBackUnrecorded "write-back-unrecorded" "planted-bug-write-back-unrecorded",
    FirstSkipsRebuilt "first-skips-rebuilt" "planted-bug-first-skips-rebuilt",
    FixOwnSource "fix-own-source" "planted-bug-fix-own-source",
    LostUnrecorded "lost-unrecorded" "planted-bug-lost-unrecorded",
    LostWide "lost-wide" "planted-bug-lost-wide",
    RebuiltSbLast "rebuilt-sb-last" "planted-bug-rebuilt-sb-last",
}

/// Whether `bug` is planted in this build or run.
#[inline(always)]
pub(crate) fn on(bug: Bug) -> bool {
    bug.built_in() || chosen(bug)
}

#[cfg(not(feature = "planted-bugs"))]
#[inline(always)]
fn chosen(_: Bug) -> bool {
    false
}

/// The bug `RAID1_PLANTED_BUG` names, read once. A name that is no bug's stops the run: a
/// misspelt name would otherwise plant nothing, and a sweep would report every bug caught by
/// nothing as missed, or, worse, a test that must fail as passing.
#[cfg(feature = "planted-bugs")]
fn chosen(bug: Bug) -> bool {
    extern crate std;
    use std::sync::OnceLock;
    use std::vec::Vec;
    static CHOSEN: OnceLock<Option<Bug>> = OnceLock::new();
    let chosen = *CHOSEN.get_or_init(|| {
        let name = std::env::var("RAID1_PLANTED_BUG").ok()?;
        let found = NAMES.iter().find(|(_, n)| *n == name).map(|&(b, _)| b);
        if found.is_none() {
            let all: Vec<&str> = NAMES.iter().map(|&(_, n)| n).collect();
            panic!(
                "RAID1_PLANTED_BUG={name}: no such planted bug (one of: {})",
                all.join(", ")
            );
        }
        found
    });
    chosen == Some(bug)
}
