//! Members that are NBD exports, as the running array sees them: what a broken link means
//! (the member fails, md's failfast, or I/O waits when no in-sync member would be left), and
//! what its return means (resume, re-add with a bitmap-guided recovery, or refuse it as a
//! split brain). The link itself (threads, sockets, timeouts) is `member_io::remote`.
//!
//! | fault | what the array does |
//! |---|---|
//! | a request unanswered for `--failfast-timeout`, a broken socket, a protocol error | the link is down: with another in-sync member reachable, the member is failed (its unanswered requests fail, the core fails a failfast member at once; the bitmap keeps the bits of every write it missed); with none, `--no-member-policy`: `error` fails the requests (md's last-member rule keeps the member in the array), `suspend` holds them |
//! | the server is back, the member untouched | a member still in the array (held, or the last one) resumes: its held requests are sent again, in order; a failed member is removed and re-added (`--auto-readd`, the default): the recovery copies only the chunks the bitmap marks |
//! | the server is back, but the member's superblock moved on without this array (another assembler ran it: its events are ahead of what this array last wrote there, or its role table marks a member of this array failed), or it is another device | refused as split brain: reported, never re-added or written; reconnection stops (`raid1 re-add` or `add --force` are the explicit verbs) |

use std::time::Duration;

use raid1_core::{MemberId, MemberState};
use raid1_superblock::Superblock;
use serde_json::{Value, json};

use super::MEMBERS;
use super::engine::RaidEngine;
use crate::member_io::remote::Note;
use crate::nbd::client::Connection;

/// What happens to I/O when no in-sync member is reachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NoMemberPolicy {
    /// Requests wait until a member returns (DRBD's `suspend-io`).
    Suspend,
    /// Requests fail with an I/O error (md: the last member is never failed; its errors are
    /// the array's).
    Error,
}

/// The options of `raid1 run` for members that are NBD exports.
#[derive(Clone, Debug, clap::Args)]
pub struct RemoteArgs {
    /// A request to a member that is an NBD export fails after this many milliseconds without
    /// an answer, and the member with it (md's failfast): the array goes on degraded, the
    /// bitmap remembering what the member missed. Also the limit of each connection step.
    #[arg(long, value_name = "MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub failfast_timeout: u64,
    /// When no in-sync member is reachable: `error` fails I/O (md's behaviour), `suspend`
    /// holds it until a member is back.
    #[arg(long, value_enum, value_name = "POLICY", default_value = "error")]
    pub no_member_policy: NoMemberPolicy,
    /// Do not re-add a failed NBD member when its server is back (by default it is re-added
    /// with a bitmap-guided recovery once its superblock shows it untouched).
    #[arg(long)]
    pub no_auto_readd: bool,
}

impl Default for RemoteArgs {
    fn default() -> Self {
        RemoteArgs {
            failfast_timeout: 5000,
            no_member_policy: NoMemberPolicy::Error,
            no_auto_readd: false,
        }
    }
}

impl RemoteArgs {
    /// The failfast timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.failfast_timeout)
    }
}

/// Why a returning member is refused, in words; `None` when it is the member this array last
/// wrote there (resumed or re-added then).
fn split_brain(engine: &RaidEngine, i: usize, sb: &Superblock) -> Option<String> {
    let dev = engine.devs.get(i)?.as_ref()?;
    let ours = &dev.meta.sb;
    if sb.set_uuid != ours.set_uuid {
        return Some("it now holds another array's superblock".into());
    }
    if sb.device_uuid != ours.device_uuid || sb.dev_number != ours.dev_number {
        return Some(format!(
            "it is another member now (member number {}, was {})",
            sb.dev_number, ours.dev_number
        ));
    }
    if sb.events > ours.events {
        return Some(format!(
            "its events moved on without this array ({} there, {} last written here): another \
             assembler ran it",
            sb.events, ours.events
        ));
    }
    // Its role table marks failed a member that is in sync here: it ran without that one.
    for j in 0..MEMBERS {
        if j == i {
            continue;
        }
        let in_sync_here = matches!(
            engine.array.member(MemberId(j as u8)).map(|m| m.state),
            Some(MemberState::InSync)
        );
        let faulty_there = sb.role(j as u32) == Some(raid1_superblock::DevRole::Faulty);
        if in_sync_here && faulty_there && ours.role(j as u32) != sb.role(j as u32) {
            return Some(format!(
                "its superblock marks member {j} failed, which is in sync here: it ran without \
                 this array"
            ));
        }
    }
    None
}

impl RaidEngine {
    /// Handles what the links of remote members reported (after each reap).
    pub(super) fn link_notes(&mut self) {
        // A remote member the core failed (an error reply) while its link is up: the link
        // drops the connection and reconnects, so that the member comes back by re-add.
        if !self.io.has_links() {
            return;
        }
        for i in 0..MEMBERS {
            if let Some(l) = self.io.link(i)
                && l.is_up()
                && matches!(
                    self.array.member(MemberId(i as u8)).map(|m| m.state),
                    Some(MemberState::Faulty)
                )
            {
                l.drop_connection();
            }
        }
        while let Some(n) = self.io.take_link_note() {
            match n {
                Note::Down { member, why } => self.link_down(member, &why),
                Note::Reconnected { member, conn } => self.link_back(member, *conn),
                Note::Done { .. } => {}
            }
        }
    }

    /// At the stop: I/O held for a member's return (`--no-member-policy suspend`) fails
    /// instead, so that the stop ends rather than waiting for the server for ever. Held
    /// requests were never acknowledged: their clients get an I/O error, nothing written is
    /// lost. The member's final superblock cannot be written then, and the stop says so.
    pub(super) fn release_held_io(&mut self) {
        // Nor is I/O held from now on: a link that goes down during the stop fails its
        // requests, whatever the policy was.
        self.remote.no_member_policy = NoMemberPolicy::Error;
        for i in 0..MEMBERS {
            if let Some(l) = self.io.link(i)
                && l.is_held()
            {
                l.fail();
                let name = self.member_name(MemberId(i as u8));
                eprintln!(
                    "raid1: {name}: the array stops while its I/O waits for the server: the \
                     waiting requests fail"
                );
            }
        }
    }

    /// Whether no in-sync member can be written (every one is an NBD export whose link is
    /// down): the stop's metadata cannot settle, and it does not wait for it.
    pub(super) fn none_reachable(&self) -> bool {
        !(0..MEMBERS).any(|j| self.reachable_in_sync(j))
    }

    fn announce_link(&mut self, event: &'static str, i: usize, detail: Value) {
        let device = self
            .devs
            .get(i)
            .and_then(|d| d.as_ref())
            .map(|d| d.meta.path.display().to_string());
        self.link_events.push((event, device, detail));
    }

    /// Whether member `j` is in sync and, if remote, connected.
    fn reachable_in_sync(&self, j: usize) -> bool {
        let in_sync = matches!(
            self.array.member(MemberId(j as u8)).map(|m| m.state),
            Some(MemberState::InSync)
        );
        in_sync && self.io.link(j).is_none_or(|l| l.is_up())
    }

    fn link_down(&mut self, i: usize, why: &str) {
        let name = self.member_name(MemberId(i as u8));
        let others = (0..MEMBERS).any(|j| j != i && self.reachable_in_sync(j));
        let in_array = matches!(
            self.array.member(MemberId(i as u8)).map(|m| m.state),
            Some(MemberState::InSync | MemberState::Recovering { .. })
        );
        let hold = !others && in_array && self.remote.no_member_policy == NoMemberPolicy::Suspend;
        let Some(link) = self.io.link(i) else {
            return;
        };
        if hold {
            link.hold();
            eprintln!(
                "raid1: {name}: {why}; no other in-sync member is reachable: I/O is suspended \
                 until it returns (--no-member-policy suspend)"
            );
        } else {
            link.fail();
            eprintln!("raid1: {name}: {why}; its requests fail and it is failed (failfast)");
        }
        let detail = json!({"reason": why, "suspended": hold});
        self.announce_link("LinkDown", i, detail);
    }

    fn link_back(&mut self, i: usize, mut conn: Connection) {
        let name = self.member_name(MemberId(i as u8));
        let Some(dev) = self.devs.get(i).and_then(|d| d.as_ref()) else {
            conn.disconnect();
            return;
        };
        // The server may have come back otherwise configured: it must still take the member.
        let now = *conn.export();
        let shrank = self
            .io
            .link(i)
            .map(|l| l.export().size)
            .filter(|&before| now.size < before)
            .map(|before| format!("its export shrank from {before} to {} bytes", now.size));
        if let Some(why) = crate::member_io::unfit_export(&now).or(shrank) {
            eprintln!("raid1: {name}: its server is back, but {why}; trying again");
            conn.disconnect();
            if let Some(l) = self.io.link_mut(i) {
                l.retry();
            }
            return;
        }
        let at = dev.meta.sb.super_offset * 512;
        let mut page = vec![0u8; crate::member::strict::SB_PAGE];
        let read = conn.read_exact_at(&mut page, at);
        let sb = match read
            .map_err(|e| e.to_string())
            .and_then(|()| Superblock::parse(&page).map_err(|e| format!("its superblock: {e}")))
        {
            Ok(sb) => sb,
            Err(e) => {
                eprintln!("raid1: {name}: its server is back, but {e}; trying again");
                conn.disconnect();
                if let Some(l) = self.io.link_mut(i) {
                    l.retry();
                }
                return;
            }
        };
        if let Some(why) = split_brain(self, i, &sb) {
            eprintln!(
                "raid1: {name}: refused as split brain: {why}. It is neither re-added nor \
                 written; compare the two and re-add it with `raid1 re-add` (or `add --force`) \
                 once you chose"
            );
            conn.disconnect();
            if let Some(l) = self.io.link(i) {
                l.stop_reconnecting();
                l.fail();
            }
            self.announce_link("SplitBrain", i, json!({"reason": why}));
            return;
        }
        let state = self.array.member(MemberId(i as u8)).map(|m| m.state);
        match state {
            Some(MemberState::InSync | MemberState::Recovering { .. }) => {
                if let Some(l) = self.io.link_mut(i) {
                    l.resume(conn);
                }
                eprintln!("raid1: {name}: its server is back; requests resume");
                self.announce_link("LinkUp", i, Value::Null);
            }
            _ if self.remote.no_auto_readd => {
                conn.disconnect();
                if let Some(l) = self.io.link(i) {
                    l.stop_reconnecting();
                }
                eprintln!(
                    "raid1: {name}: its server is back (--no-auto-readd: re-add it with \
                     `raid1 re-add`)"
                );
                self.announce_link("LinkUp", i, Value::Null);
            }
            _ => {
                eprintln!("raid1: {name}: its server is back; re-adding it");
                self.readds.push((i, Box::new(conn)));
            }
        }
    }
}
