//! `\Recent` (RFC 3501 §2.3.2): a message is recent in the first session
//! that sees it.
//!
//! Per user and folder, [`RecentMarks`] keeps the highest UID a session was
//! told about; what a session holds recent is therefore a few ranges of
//! UIDs ([`Recent`]), not a set of every UID: a first SELECT of a
//! million-message folder makes every message recent, which as a
//! `HashSet` was 32 MB per session, copied by every SEARCH.

use std::collections::HashMap;
use std::sync::Mutex;

use super::shared::Entries;

/// Per user and folder, the highest UID a session was told about. In
/// memory only: after a restart every message is recent once more, as the
/// RFC allows when a server cannot tell.
#[derive(Default)]
pub struct RecentMarks(Mutex<HashMap<String, u32>>);

impl RecentMarks {
    fn key(user: &str, folder: &str) -> String {
        format!("{user}\0{folder}")
    }

    fn last(&self, user: &str, folder: &str) -> u32 {
        self.0.lock().ok().and_then(|m| m.get(&Self::key(user, folder)).copied()).unwrap_or(0)
    }

    /// The UIDs up to `upto` no session of `user` was told about in
    /// `folder`, now told.
    pub fn claim(&self, user: &str, folder: &str, upto: u32) -> Recent {
        let Ok(mut m) = self.0.lock() else { return Recent::default() };
        let last = m.entry(Self::key(user, folder)).or_insert(0);
        let r = Recent::above(*last, upto);
        *last = (*last).max(upto);
        r
    }

    /// The UIDs that are recent, without telling (EXAMINE: a read-only
    /// look leaves them recent, RFC 3501 §6.3.2).
    pub fn peek(&self, user: &str, folder: &str) -> Recent {
        Recent::above(self.last(user, folder), u32::MAX)
    }
}

/// UIDs a session holds recent: ranges `(after, upto]`, ascending and
/// apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recent(Vec<(u32, u32)>);

impl Recent {
    /// The UIDs after `after`, up to `upto`.
    pub fn above(after: u32, upto: u32) -> Recent {
        Recent(if upto > after { vec![(after, upto)] } else { vec![] })
    }

    pub fn contains(&self, uid: u32) -> bool {
        let i = self.0.partition_point(|r| r.1 < uid);
        self.0.get(i).is_some_and(|r| r.0 < uid)
    }

    /// Add `other`'s UIDs.
    pub fn extend(&mut self, other: Recent) {
        for (a, b) in other.0 {
            match self.0.last_mut() {
                Some(l) if a <= l.1 && a >= l.0 => l.1 = l.1.max(b),
                Some(l) if a > l.1 => self.0.push((a, b)),
                None => self.0.push((a, b)),
                Some(_) => {
                    // Below the last range: rare (claims rise); merge in
                    // order.
                    self.0.push((a, b));
                    self.0.sort_unstable();
                    let mut out: Vec<(u32, u32)> = Vec::with_capacity(self.0.len());
                    for r in self.0.drain(..) {
                        match out.last_mut() {
                            Some(l) if r.0 <= l.1 => l.1 = l.1.max(r.1),
                            _ => out.push(r),
                        }
                    }
                    self.0 = out;
                }
            }
        }
    }

    /// How many of `msgs` (in UID order) are recent: two binary searches
    /// per range.
    pub fn count_in(&self, msgs: &Entries) -> usize {
        self.0.iter().filter(|r| r.0 < r.1).map(|&(a, b)| msgs.count_uids(a + 1, b)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(uids: &[u32]) -> Entries {
        let mut sets = super::super::shared::FlagSets::default();
        let e = super::super::shared::Msg::from_meta(&super::super::shared::tests::meta("h", &[]), &mut sets);
        uids.iter().map(|u| (*u, e.clone())).collect()
    }

    #[test]
    fn the_first_session_gets_them_and_ranges_count_what_is_listed() {
        let marks = RecentMarks::default();
        let msgs = list(&[2, 3, 7, 9]);
        let a = marks.claim("mario", "INBOX", 9);
        assert_eq!(a.count_in(&msgs), 4);
        assert!(a.contains(2) && a.contains(9) && !a.contains(10) && !a.contains(0));
        assert!(marks.claim("mario", "INBOX", 9).is_empty(), "a second session: none");
        assert_eq!(marks.claim("anna", "INBOX", 9).count_in(&msgs), 4, "per user");
        assert_eq!(marks.peek("mario", "INBOX").count_in(&list(&[9, 10, 11])), 2, "a look above the mark");
        // Another session took 10..=12; this one then sees up to 15.
        let mut mine = a;
        assert_eq!(marks.claim("other", "x", 0), Recent::default());
        let _ = marks.claim("mario", "INBOX", 12);
        mine.extend(marks.claim("mario", "INBOX", 15));
        let more = list(&[2, 3, 7, 9, 10, 12, 13, 15]);
        assert_eq!(mine.count_in(&more), 6, "2 3 7 9, then 13 15 (not 10 12)");
        assert!(mine.contains(13) && !mine.contains(10) && !mine.contains(12));
        // Ranges that meet are one; one below the others is merged in order.
        let mut r = Recent::above(0, 5);
        r.extend(Recent::above(5, 8));
        assert_eq!(r, Recent::above(0, 8));
        r.extend(Recent::above(20, 30));
        r.extend(Recent::above(10, 12));
        assert_eq!(r.0, vec![(0, 8), (10, 12), (20, 30)]);
        assert!(r.contains(11) && !r.contains(10) && !r.contains(15) && r.contains(30));
    }
}
