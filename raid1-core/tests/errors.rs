//! Every error reads as words for a person: the field or rule and the value, never a Rust
//! Debug form.

use raid1_core::*;

fn words(e: impl core::fmt::Display) -> String {
    let s = e.to_string();
    assert!(!s.is_empty());
    for debug in ["MemberId(", "Some(", "{ ", "Config(", "BadBlocks("] {
        assert!(!s.contains(debug), "{s:?} reads as Rust Debug output");
    }
    s
}

#[test]
fn errors_name_the_member_and_the_rule_in_words() {
    let m = MemberId(1);
    assert_eq!(
        words(ReconfigError::LastInSync(m)),
        "member 1 is the last in-sync member: failing it would lose the array"
    );
    assert!(
        words(AssembleError::Config(ConfigError::DataSectors(0))).contains("data area is empty")
    );
    assert!(
        words(AssembleError::NotStarted {
            found: 1,
            expected: 2
        })
        .contains("only 1 of the 2")
    );
    assert!(words(SubmitError::OutOfRange(4096)).contains("4096"));
    assert!(words(TagError::Unknown(0x1f)).contains("0x1f"));
    assert!(
        words(AssembleError::BadBlocks(BadBlockError::OutOfRange {
            member: m,
            index: 3,
            end: 99
        }))
        .contains("member 1: bad-block entry 3 ends at sector 99")
    );
    for e in [
        ReconfigError::NotQuiesced,
        ReconfigError::NoSuchMember(m),
        ReconfigError::Occupied(m),
        ReconfigError::MemberBusy(m),
        ReconfigError::WrongState(m),
        ReconfigError::RaidDisks(9),
        ReconfigError::NotFrozen,
        ReconfigError::FreezeOverflow,
        ReconfigError::SyncBusy,
        ReconfigError::Replacing(m),
        ReconfigError::NotSpare(m),
    ] {
        words(e);
    }
    for e in [
        ConfigError::Members(0),
        ConfigError::Inflight(0),
        ConfigError::SyncWindows(0),
        ConfigError::BarrierUnitShift(41),
        ConfigError::MaxRequestSectors(0),
        ConfigError::SyncWindowSectors(0),
        ConfigError::BitmapChunkSectors(3),
        ConfigError::BitmapPageBytes(0),
        ConfigError::BitmapDaemon,
        ConfigError::BitmapStorageTooSmall(10),
        ConfigError::BitmapTooManyPages(65),
        ConfigError::BitmapStorageMismatch,
        ConfigError::MemberList(5),
        ConfigError::RaidDisks(0),
    ] {
        words(e);
    }
    for e in [
        BadBlockError::NoSuchMember(m),
        BadBlockError::TooMany {
            member: m,
            entries: 513,
        },
        BadBlockError::ZeroLength {
            member: m,
            index: 0,
        },
        BadBlockError::Unsorted {
            member: m,
            index: 1,
        },
        BadBlockError::Storage {
            member: m,
            len: 3,
            capacity: 2,
        },
        BadBlockError::NotQuiesced(m),
    ] {
        words(e);
    }
    for e in [
        SubmitError::Busy,
        SubmitError::BadLength(0),
        SubmitError::Broken,
    ] {
        words(e);
    }
    words(AssembleError::NoActiveMember);
    words(AssembleError::NoInSyncMember);
    words(AssembleError::RaidDisks(0));
}
