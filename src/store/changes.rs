//! What the writer's last batches changed among folders' message entries,
//! so a folder's list held in memory (a selected million-message folder)
//! is brought up to date by re-reading those entries, not the folder.
//!
//! The writer applies a batch to the index and records the entries it
//! inserted or removed under the generation that batch makes, both while
//! holding the log's lock ([`ChangeLog::lock`]); a reader holding the lock
//! sees the index and the log agree. Only the last [`KEEP`] entries are
//! kept: a reader whose list is older reads the folder whole.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Touched entries kept (about 4 MB).
pub const KEEP: usize = 65_536;

/// One message entry inserted, changed or removed: (mailbox, folder, UID).
pub type Touched = (String, String, u32);

#[derive(Default)]
pub struct ChangeLog(Mutex<Log>);

#[derive(Default)]
pub struct Log {
    /// (generation made by the batch, entries it touched), oldest first,
    /// one per generation.
    batches: VecDeque<(u64, Vec<Touched>)>,
    total: usize,
}

impl ChangeLog {
    pub fn lock(&self) -> MutexGuard<'_, Log> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Log {
    /// The batch that makes `generation` touched `touched`.
    pub fn push(&mut self, generation: u64, touched: Vec<Touched>) {
        self.total += touched.len();
        self.batches.push_back((generation, touched));
        while self.total > KEEP && self.batches.len() > 1 {
            if let Some((_, t)) = self.batches.pop_front() {
                self.total -= t.len();
            }
        }
    }

    /// The UIDs of `mailbox`/`folder` touched by the batches after
    /// generation `after`, ascending, each once; `None` if the log no
    /// longer reaches back to `after`.
    pub fn since(&self, after: u64, mailbox: &str, folder: &str) -> Option<Vec<u32>> {
        let newest = self.batches.back().map_or(after, |b| b.0);
        if newest <= after {
            return Some(vec![]);
        }
        if self.batches.front().is_none_or(|b| b.0 > after + 1) {
            return None;
        }
        let mut uids: Vec<u32> = self
            .batches
            .iter()
            .filter(|b| b.0 > after)
            .flat_map(|b| b.1.iter())
            .filter(|t| t.0 == mailbox && t.1 == folder)
            .map(|t| t.2)
            .collect();
        uids.sort_unstable();
        uids.dedup();
        Some(uids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(f: &str, uid: u32) -> Touched {
        ("prot".into(), f.into(), uid)
    }

    #[test]
    fn the_log_answers_while_it_reaches_back() {
        let log = ChangeLog::default();
        let mut l = log.lock();
        assert_eq!(l.since(0, "prot", "INBOX"), Some(vec![]), "nothing applied yet");
        l.push(1, vec![t("INBOX", 5), t("Sent", 1)]);
        l.push(2, vec![t("INBOX", 3), t("INBOX", 5)]);
        l.push(3, vec![]);
        assert_eq!(l.since(0, "prot", "INBOX"), Some(vec![3, 5]));
        assert_eq!(l.since(1, "prot", "INBOX"), Some(vec![3, 5]));
        assert_eq!(l.since(2, "prot", "INBOX"), Some(vec![]));
        assert_eq!(l.since(3, "prot", "INBOX"), Some(vec![]));
        assert_eq!(l.since(0, "prot", "Sent"), Some(vec![1]));
        assert_eq!(l.since(0, "other", "INBOX"), Some(vec![]));
        // Past what is kept: the oldest batches go, and with them the
        // answer for lists older than what is left.
        l.push(4, (0..KEEP as u32).map(|u| t("Receipts", u)).collect());
        assert_eq!(l.since(3, "prot", "INBOX"), Some(vec![]));
        assert_eq!(l.since(2, "prot", "INBOX"), Some(vec![]), "3 and 4 are kept");
        assert_eq!(l.since(1, "prot", "INBOX"), None, "2 is gone");
        assert_eq!(l.since(0, "prot", "INBOX"), None);
        assert_eq!(l.since(3, "prot", "Receipts").map(|u| u.len()), Some(KEEP));
    }
}
