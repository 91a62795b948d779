//! ESEARCH responses (RFC 4731, ESORT and PARTIAL of RFC 5267 and RFC
//! 9394) and the update contexts of CONTEXT=SEARCH and CONTEXT=SORT (RFC
//! 5267 §4): what a `SEARCH`/`SORT RETURN (UPDATE)` keeps, and the
//! `ADDTO`/`REMOVEFROM` lines a change of its result owes the client.
//!
//! imap-types has no ESEARCH response: the lines are written as text.
//! Pure: the session re-runs the search and hands the results here.

use std::collections::HashSet;
use std::fmt::Write;

use imap_next::imap_types::search::SearchKey;

use super::extended::SearchReturn;
use super::respond::ranges;
use super::sort::Criterion;

/// How many update contexts a session keeps at once; one more is
/// answered `NOUPDATE` (RFC 5267 §4.2 lets a server refuse). HYPOTHESIS:
/// a client keeps one or two (a folder view and a count); each is
/// searched again whenever the folder changes.
pub const MAX_CONTEXTS: usize = 4;

/// The largest folder in which a context whose keys read messages
/// (BODY, TEXT, HEADER of an uncached field) is kept up to date: each
/// change reads every message again, on the session's task.
pub const MAX_READING_CONTEXT: usize = 5_000;

/// `* ESEARCH (TAG "t") [UID] MIN .. MAX .. COUNT .. ALL .. PARTIAL (..)
/// [MODSEQ ..]` for `results` in result order: ascending for SEARCH, the
/// sort order for SORT (MIN and MAX are then the first and the last
/// sorted, RFC 5267 §3.1). Nothing found: MIN, MAX and ALL are left out,
/// COUNT is 0, PARTIAL's set is NIL.
pub fn esearch(tag: &str, uid: bool, r: &SearchReturn, results: &[u32], modseq: Option<u64>) -> String {
    let mut out = format!("* ESEARCH (TAG \"{}\")", quoted(tag));
    if uid {
        out.push_str(" UID");
    }
    if let (true, Some(m)) = (r.min, results.first()) {
        let _ = write!(out, " MIN {m}");
    }
    if let (true, Some(m)) = (r.max, results.last()) {
        let _ = write!(out, " MAX {m}");
    }
    if r.count {
        let _ = write!(out, " COUNT {}", results.len());
    }
    if r.all && !results.is_empty() {
        let _ = write!(out, " ALL {}", ranges(results));
    }
    if let Some(p) = &r.partial {
        let picked = p.pick(results);
        let set = if picked.is_empty() { "NIL".to_string() } else { ranges(picked) };
        let _ = write!(out, " PARTIAL ({} {set})", p.range());
    }
    if let Some(m) = modseq {
        let _ = write!(out, " MODSEQ {m}");
    }
    out.push_str("\r\n");
    out
}

/// A tag inside a quoted string (a tag has no `"` or `\`, but be safe).
fn quoted(tag: &str) -> String {
    tag.replace('\\', "\\\\").replace('"', "\\\"")
}

/// One `RETURN (UPDATE)` kept up to date.
#[derive(Debug, Clone)]
pub struct UpdateContext {
    /// The tag of the command that made it: its `ESEARCH (TAG ...)` and
    /// CANCELUPDATE's handle.
    pub tag: String,
    /// UID SEARCH / UID SORT: results are UIDs, else sequence numbers.
    pub uid: bool,
    pub keys: Vec<SearchKey<'static>>,
    /// SORT's criteria; `None` for SEARCH.
    pub sort: Option<Vec<Criterion>>,
    /// The result as the client knows it, as UIDs in result order.
    pub uids: Vec<u32>,
}

impl UpdateContext {
    /// The lines for messages about to be expunged (`gone`: UID → the
    /// number it has now): REMOVEFROM, sent before the EXPUNGEs so the
    /// numbers are still the client's (RFC 5267 §4.3). They leave the
    /// result.
    pub fn expunged(&mut self, gone: &dyn Fn(u32) -> Option<u32>) -> Option<String> {
        let leaving: Vec<(usize, u32)> = self
            .uids
            .iter()
            .enumerate()
            .filter_map(|(i, u)| gone(*u).map(|seq| (i, if self.uid { *u } else { seq })))
            .collect();
        if leaving.is_empty() {
            return None;
        }
        let line = self.line("REMOVEFROM", &self.removals(&leaving));
        let out: HashSet<usize> = leaving.iter().map(|(i, _)| *i).collect();
        let mut i = 0;
        self.uids.retain(|_| {
            i += 1;
            !out.contains(&(i - 1))
        });
        Some(line)
    }

    /// The lines that take the result from what the client knows to
    /// `now` (UIDs in result order, as searched again after a change;
    /// `number` gives a UID's number now): REMOVEFROM first, then ADDTO.
    pub fn update(&mut self, now: Vec<u32>, number: &dyn Fn(u32) -> u32) -> Vec<String> {
        let mut out = Vec::new();
        let before: HashSet<u32> = self.uids.iter().copied().collect();
        let after: HashSet<u32> = now.iter().copied().collect();
        let shown = |u: u32| if self.uid { u } else { number(u) };
        let leaving: Vec<(usize, u32)> =
            self.uids.iter().enumerate().filter(|(_, u)| !after.contains(u)).map(|(i, u)| (i, shown(*u))).collect();
        if !leaving.is_empty() {
            out.push(self.line("REMOVEFROM", &self.removals(&leaving)));
        }
        let coming: Vec<(usize, u32)> =
            now.iter().enumerate().filter(|(_, u)| !before.contains(u)).map(|(i, u)| (i, shown(*u))).collect();
        if !coming.is_empty() {
            let pairs = match self.sort {
                // Unsorted: position 0, the numbers ascending.
                None => {
                    let mut n: Vec<u32> = coming.iter().map(|c| c.1).collect();
                    n.sort_unstable();
                    format!("0 {}", ranges(&n))
                }
                // Each at its place in the new order, from the first:
                // inserting in that order puts every one where it ends.
                Some(_) => runs(&coming),
            };
            out.push(self.line("ADDTO", &pairs));
        }
        self.uids = now;
        out
    }

    /// REMOVEFROM's pairs for (index in the result, number): for SORT
    /// from the last position back, so each position is still right when
    /// it is applied; for SEARCH position 0 and the numbers ascending.
    fn removals(&self, leaving: &[(usize, u32)]) -> String {
        match self.sort {
            None => {
                let mut n: Vec<u32> = leaving.iter().map(|l| l.1).collect();
                n.sort_unstable();
                format!("0 {}", ranges(&n))
            }
            Some(_) => {
                let mut rev = leaving.to_vec();
                rev.reverse();
                rev.iter().map(|(i, n)| format!("{} {n}", i + 1)).collect::<Vec<_>>().join(" ")
            }
        }
    }

    fn line(&self, what: &str, pairs: &str) -> String {
        let uid = if self.uid { " UID" } else { "" };
        format!("* ESEARCH (TAG \"{}\"){uid} {what} ({pairs})\r\n", quoted(&self.tag))
    }
}

/// ADDTO pairs for sorted additions (index in the new result, number):
/// consecutive positions joined, `3 5:7` or `3 9,4`.
fn runs(coming: &[(usize, u32)]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < coming.len() {
        let mut j = i;
        while j + 1 < coming.len() && coming[j + 1].0 == coming[j].0 + 1 {
            j += 1;
        }
        let nums: Vec<u32> = coming[i..=j].iter().map(|c| c.1).collect();
        out.push(format!("{} {}", coming[i].0 + 1, ranges(&nums)));
        i = j + 1;
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::extended::Partial;

    #[test]
    fn esearch_lines() {
        let r = SearchReturn { min: true, max: true, count: true, all: true, ..Default::default() };
        assert_eq!(
            esearch("A1", true, &r, &[2, 3, 4, 7, 9], None),
            "* ESEARCH (TAG \"A1\") UID MIN 2 MAX 9 COUNT 5 ALL 2:4,7,9\r\n"
        );
        assert_eq!(esearch("A1", false, &r, &[], Some(5)), "* ESEARCH (TAG \"A1\") COUNT 0 MODSEQ 5\r\n");
        let only_min = SearchReturn { min: true, ..Default::default() };
        assert_eq!(esearch("A1", false, &only_min, &[4, 8], None), "* ESEARCH (TAG \"A1\") MIN 4\r\n");
        // ESORT: MIN and MAX are the first and last sorted, ALL keeps the order.
        assert_eq!(
            esearch("s", false, &r, &[5, 3, 4, 2, 1], None),
            "* ESEARCH (TAG \"s\") MIN 5 MAX 1 COUNT 5 ALL 5,3:4,2,1\r\n"
        );
    }

    #[test]
    fn partial_windows() {
        let p =
            |low, high, from_end| SearchReturn { partial: Some(Partial { low, high, from_end }), ..Default::default() };
        let all = [1, 2, 4, 5];
        assert_eq!(esearch("t", false, &p(1, 3, false), &all, None), "* ESEARCH (TAG \"t\") PARTIAL (1:3 1:2,4)\r\n");
        assert_eq!(esearch("t", false, &p(2, 10, false), &all, None), "* ESEARCH (TAG \"t\") PARTIAL (2:10 2,4:5)\r\n");
        assert_eq!(esearch("t", false, &p(5, 6, false), &all, None), "* ESEARCH (TAG \"t\") PARTIAL (5:6 NIL)\r\n");
        // RFC 9394: -1 is the last result.
        assert_eq!(esearch("t", true, &p(1, 2, true), &all, None), "* ESEARCH (TAG \"t\") UID PARTIAL (-1:-2 4:5)\r\n");
        assert_eq!(
            esearch("t", true, &p(2, 9, true), &all, None),
            "* ESEARCH (TAG \"t\") UID PARTIAL (-2:-9 1:2,4)\r\n"
        );
        assert_eq!(esearch("t", true, &p(5, 9, true), &all, None), "* ESEARCH (TAG \"t\") UID PARTIAL (-5:-9 NIL)\r\n");
    }

    fn ctx(sort: bool, uids: &[u32]) -> UpdateContext {
        UpdateContext { tag: "B1".into(), uid: false, keys: vec![], sort: sort.then(Vec::new), uids: uids.to_vec() }
    }

    #[test]
    fn search_updates() {
        // RFC 5267 §4.3's shape: unsorted results use position 0.
        let mut c = ctx(false, &[]);
        let seq = |u: u32| u;
        assert_eq!(c.update(vec![1, 2, 4], &seq), vec!["* ESEARCH (TAG \"B1\") ADDTO (0 1:2,4)\r\n"]);
        assert_eq!(c.update(vec![4], &seq), vec!["* ESEARCH (TAG \"B1\") REMOVEFROM (0 1:2)\r\n"]);
        assert!(c.update(vec![4], &seq).is_empty());
        assert_eq!(c.expunged(&|u| (u == 4).then_some(4)), Some("* ESEARCH (TAG \"B1\") REMOVEFROM (0 4)\r\n".into()));
        assert!(c.uids.is_empty() && c.expunged(&|_| Some(1)).is_none());
        let mut c = UpdateContext { uid: true, ..ctx(false, &[10, 11]) };
        assert_eq!(
            c.update(vec![10, 12, 13], &|_| 99),
            vec!["* ESEARCH (TAG \"B1\") UID REMOVEFROM (0 11)\r\n", "* ESEARCH (TAG \"B1\") UID ADDTO (0 12:13)\r\n"]
        );
    }

    #[test]
    fn sort_updates_keep_positions() {
        // Sorted 5 3 1; 3 leaves, 4 and 2 come in at the second and fourth places of 5 4 1 2.
        let mut c = ctx(true, &[5, 3, 1]);
        assert_eq!(
            c.update(vec![5, 4, 1, 2], &|u| u),
            vec!["* ESEARCH (TAG \"B1\") REMOVEFROM (2 3)\r\n", "* ESEARCH (TAG \"B1\") ADDTO (2 4 4 2)\r\n"]
        );
        assert_eq!(c.update(vec![5, 4, 1, 2, 7, 6], &|u| u), vec!["* ESEARCH (TAG \"B1\") ADDTO (5 7,6)\r\n"]);
        // Removed from the last back.
        assert_eq!(c.update(vec![4, 2, 6], &|u| u), vec!["* ESEARCH (TAG \"B1\") REMOVEFROM (5 7 3 1 1 5)\r\n"]);
    }
}
