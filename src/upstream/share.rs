//! Several nodes: the provider mailboxes' polling spread over the live
//! nodes, so that three nodes configured with six mailboxes poll two each
//! rather than one node polling all six while the others stand by.
//!
//! A node takes a free mailbox at once while it polls fewer than its fair
//! share (the mailboxes it is configured with, divided by the live nodes,
//! rounded up). At or over its share it lets a few rounds pass first, so a
//! node under its share takes it; then takes it anyway (a mailbox is never
//! left unpolled because the other nodes are not configured for it). A node
//! over its share (it started first, or a node joined) gives up the
//! mailboxes beyond its share when their pollers reach a safe point (between
//! passes), and releases their leases so another node takes them within a
//! third of the lease. A mailbox given up and taken back by the same node
//! (nobody else took it) is not given up again for a while, so nothing
//! flaps. Nodes started together wait an eighth of the lease (at most
//! 2 s) before taking anything, so that they count each other first.
//!
//! A node that stops renewing drops out of the count within half a lease,
//! before its leases expire: the survivors' shares grow and they take its
//! mailboxes at once, as before.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The prefix of the mailbox pollers' lease names.
pub const PREFIX: &str = "mailbox:";

/// How many rounds (a third of the lease each) in which a mailbox was
/// free a node at its share lets pass before taking it (rounds in which
/// another node held it do not count).
const PATIENCE: u32 = 3;

/// After giving a mailbox up, it is not given up again for this long.
const QUIET: Duration = Duration::from_secs(600);

/// What one node's mailbox tasks share.
pub struct Share {
    /// Mailboxes this node is configured to poll.
    configured: usize,
    /// One task at a time counts and takes (else every task of a node that
    /// polls nothing yet would see it under its share at once).
    pub turn: tokio::sync::Mutex<()>,
    /// When each mailbox was last given up by this node.
    yielded: Mutex<HashMap<String, Instant>>,
}

/// When this process's first mailbox tasks began (a configuration reload
/// makes new tasks, not a new start: no second wait).
fn process_start() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// What a task waiting for its mailbox's lease should do this round.
#[derive(Debug, PartialEq, Eq)]
pub enum Turn {
    Take,
    /// Let another node take it this round.
    Defer,
}

/// The number of mailboxes a node should poll.
pub fn fair(configured: usize, nodes: u64) -> usize {
    configured.div_ceil(usize::try_from(nodes.max(1)).unwrap_or(usize::MAX)).max(1)
}

impl Share {
    pub fn new(configured: usize) -> Share {
        process_start();
        Share { configured, turn: tokio::sync::Mutex::new(()), yielded: Mutex::new(HashMap::new()) }
    }

    /// How long a task of a node just started waits before taking any
    /// mailbox: long enough for nodes started together to see each other
    /// (each reports itself within a second of its start), short enough
    /// that a lone node starts polling at once for practical purposes. A
    /// node that starts later than the others is rebalanced to anyway.
    pub fn settle(&self, lease: Duration) -> Duration {
        (lease / 8).min(Duration::from_secs(2)).saturating_sub(process_start().elapsed())
    }

    /// Whether to take `name` now, with `held` of this node's leases among
    /// `nodes` live nodes, after `deferred` rounds deferred already.
    pub fn turn(&self, name: &str, nodes: u64, held: &[String], deferred: u32, lease: Duration) -> Turn {
        if deferred >= PATIENCE {
            return Turn::Take;
        }
        let given_up_lately = self.lock().get(name).is_some_and(|t| t.elapsed() < lease);
        if given_up_lately || held.len() >= fair(self.configured, nodes) {
            Turn::Defer
        } else {
            Turn::Take
        }
    }

    /// Whether the holder of `name` should give it up to another node: this
    /// node holds more than its share and `name` is one of the excess (the
    /// last in name order), and it was not given up lately. Notes the
    /// moment when it says yes.
    pub fn give_up(&self, name: &str, nodes: u64, held: &[String]) -> bool {
        let fair = fair(self.configured, nodes);
        let excess = held.len() > fair && held.iter().position(|h| h == name).is_some_and(|i| i >= fair);
        if !excess {
            return false;
        }
        let mut y = self.lock();
        if y.get(name).is_some_and(|t| t.elapsed() < QUIET) {
            return false;
        }
        y.insert(name.to_string(), Instant::now());
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.yielded.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fair_share_rounds_up_and_never_zero() {
        assert_eq!(fair(6, 3), 2);
        assert_eq!(fair(6, 4), 2);
        assert_eq!(fair(7, 3), 3);
        assert_eq!(fair(1, 3), 1);
        assert_eq!(fair(6, 0), 6);
        assert_eq!(fair(0, 2), 1);
    }

    #[test]
    fn a_node_at_its_share_defers_then_takes() {
        let s = Share::new(6);
        let lease = Duration::from_secs(20);
        let two = names(&["mailbox:a", "mailbox:b"]);
        assert_eq!(s.turn("mailbox:c", 3, &two, 0, lease), Turn::Defer);
        assert_eq!(s.turn("mailbox:c", 3, &two, 1, lease), Turn::Defer);
        assert_eq!(s.turn("mailbox:c", 3, &two, PATIENCE, lease), Turn::Take);
        assert_eq!(s.turn("mailbox:c", 3, &two[..1], 0, lease), Turn::Take);
        // Alone, its share is everything.
        assert_eq!(s.turn("mailbox:c", 1, &two, 0, lease), Turn::Take);
    }

    #[test]
    fn the_excess_is_given_up_once_then_kept() {
        let s = Share::new(6);
        let all = names(&["mailbox:a", "mailbox:b", "mailbox:c", "mailbox:d", "mailbox:e", "mailbox:f"]);
        let given: Vec<_> = all.iter().filter(|n| s.give_up(n, 3, &all)).cloned().collect();
        assert_eq!(given, names(&["mailbox:c", "mailbox:d", "mailbox:e", "mailbox:f"]));
        // Not taken back at once...
        assert_eq!(s.turn("mailbox:c", 3, &all[..2], 0, Duration::from_secs(20)), Turn::Defer);
        // ...and, taken back because nobody else took it, kept.
        assert!(!s.give_up("mailbox:c", 3, &all));
        // Within its share nothing is given up.
        assert!(!s.give_up("mailbox:b", 3, &all[..2]));
        assert!(!s.give_up("mailbox:a", 1, &all));
    }
}
