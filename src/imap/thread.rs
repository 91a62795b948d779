//! RFC 5256 THREAD, pure (no I/O): ORDEREDSUBJECT and REFERENCES (§4)
//! over the messages a search selected, each given with its sent date,
//! base subject and message IDs (from `store::fields`, never the message).
//!
//! Threads are built in an arena of nodes linked by index, and every walk
//! over them is iterative: a hostile folder (a chain of 100,000 replies,
//! References that loop) cannot overflow the stack. Only the answer,
//! imap-types' nested [`Thread`], recurses; it nests only where a message
//! has two replies or more, and [`MAX_NESTING`] bounds that.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::num::NonZeroU32;

use chrono::{DateTime, Utc};
use imap_next::imap_types::core::{Vec1, Vec2};
use imap_next::imap_types::extensions::thread::Thread;

use super::sort::{base_subject, casemap, sent_date};
use crate::store::fields::SearchFields;

/// How deep the answer nests (a level per message with two replies or
/// more on the way down). HYPOTHESIS: no real conversation branches 256
/// times along one line of replies; below that depth, a subtree is listed
/// as one line in the order it was sorted (every message is still named).
/// The bound keeps the recursive [`Thread`] (its drop, its clones) well
/// within a thread's stack.
pub const MAX_NESTING: usize = 256;

/// One message as threading sees it.
#[derive(Debug, Clone, Default)]
pub struct Msg {
    /// What the answer calls it: sequence number or UID.
    pub n: u32,
    /// RFC 5256 §2.2's sent date, in seconds.
    pub date: i64,
    /// Its base subject, case-mapped.
    pub subject: String,
    /// Its subject said it is a reply or forward (`Re:`, `(fwd)`, …).
    pub reply_or_fwd: bool,
    /// Its Message-ID, if it has a valid one (without `<>`).
    pub message_id: Option<String>,
    /// The message IDs of References, oldest first, or else the first of
    /// In-Reply-To: its ancestors (§4, step 1).
    pub references: Vec<String>,
}

impl Msg {
    /// Message `n` with internal date `internal` and cached `fields`
    /// (`None` when they cannot be read: no subject, no IDs).
    pub fn new(n: u32, internal: DateTime<Utc>, fields: Option<&SearchFields>) -> Msg {
        let base = base_subject(fields.and_then(|f| f.subject_text.as_deref()).unwrap_or_default());
        let ids = |v: Option<&Option<String>>| message_ids(v.and_then(|v| v.as_deref()).unwrap_or_default());
        let mut references = ids(fields.map(|f| &f.references));
        if references.is_empty() {
            references = ids(fields.map(|f| &f.in_reply_to)).into_iter().take(1).collect();
        }
        Msg {
            n,
            date: sent_date(fields, internal),
            subject: casemap(&base.text),
            reply_or_fwd: base.reply_or_fwd,
            message_id: ids(fields.map(|f| &f.message_id)).into_iter().next(),
            references,
        }
    }
}

/// The message IDs in a header value, in order, without `<>`: each
/// `<…>` holding `left@right` once spaces are dropped; comments and text
/// outside angle brackets are skipped, an ID that is not one is ignored.
pub fn message_ids(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = v;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else { break };
        let inner = &after[..close];
        // `<a <b@c>`: the ID starts at the last `<`.
        let inner = inner.rsplit('<').next().unwrap_or(inner);
        let id: String = inner.chars().filter(|c| !c.is_whitespace()).collect();
        if id.split_once('@').is_some_and(|(l, r)| !l.is_empty() && !r.is_empty()) {
            out.push(id);
        }
        rest = &after[close + 1..];
    }
    out
}

/// A node: a message (by index into the messages) or a dummy, a message
/// referred to that is not among them.
#[derive(Debug, Default, Clone)]
struct Node {
    msg: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

struct Forest<'a> {
    msgs: &'a [Msg],
    nodes: Vec<Node>,
}

impl<'a> Forest<'a> {
    fn new(msgs: &'a [Msg]) -> Forest<'a> {
        Forest { msgs, nodes: Vec::with_capacity(msgs.len()) }
    }

    fn add(&mut self, msg: Option<usize>) -> usize {
        self.nodes.push(Node { msg, ..Node::default() });
        self.nodes.len() - 1
    }

    fn is_dummy(&self, n: usize) -> bool {
        self.nodes[n].msg.is_none()
    }

    /// Would making `parent` the parent of `child` close a loop (is
    /// `child` the node `parent` or one of its ancestors)? A node without
    /// children (the usual case: a message seen before any reply) cannot
    /// be an ancestor, which spares the walk up. The walk is bounded by
    /// the node count, whatever state the links are in.
    fn would_loop(&self, parent: usize, child: usize) -> bool {
        if parent == child {
            return true;
        }
        if self.nodes[child].children.is_empty() {
            return false;
        }
        let (a, mut cur) = (child, Some(parent));
        for _ in 0..=self.nodes.len() {
            match cur {
                Some(c) if c == a => return true,
                Some(c) => cur = self.nodes[c].parent,
                None => return false,
            }
        }
        true
    }

    fn link(&mut self, parent: usize, child: usize) {
        self.nodes[child].parent = Some(parent);
        self.nodes[parent].children.push(child);
    }

    fn unlink(&mut self, child: usize) {
        if let Some(p) = self.nodes[child].parent.take() {
            self.nodes[p].children.retain(|c| *c != child);
        }
    }

    /// Every node under `roots`, parents before children (iterative).
    fn preorder(&self, roots: &[usize]) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut stack: Vec<usize> = roots.iter().rev().copied().collect();
        while let Some(n) = stack.pop() {
            out.push(n);
            stack.extend(self.nodes[n].children.iter().rev());
        }
        out
    }

    /// Sort every set of siblings, and `roots`, by sent date (§2.2; equal
    /// dates in sequence order), the deepest first, so that a dummy sorts
    /// by its first child once that is known (§4 steps 4 and 6). A
    /// node's key is its message's sent date and sequence order.
    fn sort(&mut self, roots: &mut [usize]) {
        let mut keys = vec![(i64::MAX, usize::MAX); self.nodes.len()];
        for n in self.preorder(roots).into_iter().rev() {
            let mut children = std::mem::take(&mut self.nodes[n].children);
            children.sort_by_key(|c| keys[*c]);
            keys[n] = match self.nodes[n].msg {
                Some(i) => (self.msgs[i].date, i),
                None => children.first().map(|c| keys[*c]).unwrap_or((i64::MAX, usize::MAX)),
            };
            self.nodes[n].children = children;
        }
        roots.sort_by_key(|r| keys[*r]);
    }

    /// The answer for `roots`.
    fn threads(&self, roots: &[usize]) -> Vec<Thread> {
        roots.iter().filter_map(|r| self.thread(*r, 0)).collect()
    }

    fn num(&self, n: usize) -> Option<NonZeroU32> {
        self.nodes[n].msg.and_then(|i| NonZeroU32::new(self.msgs[i].n))
    }

    /// Node `n` and what is under it as imap-types' [`Thread`]: a line of
    /// single replies is one prefix; a message with two replies or more,
    /// or a dummy, nests them.
    fn thread(&self, n: usize, depth: usize) -> Option<Thread> {
        if depth >= MAX_NESTING {
            return self.flat(n);
        }
        let answers = |children: &[usize]| -> Vec<Thread> {
            children.iter().filter_map(|c| self.thread(*c, depth + 1)).collect()
        };
        let Some(first) = self.num(n) else {
            // A dummy (left only at the top, with two children or more).
            let mut answers = answers(&self.nodes[n].children);
            return match answers.len() {
                0 => None,
                1 => answers.pop(),
                _ => Vec2::try_from(answers).ok().map(|answers| Thread::Nested { answers }),
            };
        };
        let mut prefix = vec![first];
        let mut cur = n;
        while let [only] = self.nodes[cur].children[..] {
            let Some(k) = self.num(only) else { break };
            prefix.push(k);
            cur = only;
        }
        let rest = answers(&self.nodes[cur].children);
        let prefix = Vec1::try_from(prefix).ok()?;
        let mut rest = rest;
        let answers = match (rest.len(), rest.pop()) {
            (_, None) => None,
            // One thread below, which only a dummy left under a message
            // can give: its replies are this message's (§4 step 3).
            (1, Some(Thread::Nested { answers })) => Some(answers),
            (1, Some(Thread::Members { prefix: more, answers })) => {
                let mut p = prefix.into_inner();
                p.extend(more.into_inner());
                return Vec1::try_from(p).ok().map(|prefix| Thread::Members { prefix, answers });
            }
            (_, Some(last)) => {
                rest.push(last);
                Vec2::try_from(rest).ok()
            }
        };
        Some(Thread::Members { prefix, answers })
    }

    /// Past [`MAX_NESTING`]: the messages under `n` (and `n`) in one line,
    /// in the order they were sorted.
    fn flat(&self, n: usize) -> Option<Thread> {
        let nums: Vec<NonZeroU32> = self.preorder(&[n]).into_iter().filter_map(|k| self.num(k)).collect();
        Vec1::try_from(nums).ok().map(|prefix| Thread::Members { prefix, answers: None })
    }
}

/// THREAD=ORDEREDSUBJECT (RFC 5256 §4): messages with the same base
/// subject form a thread, sorted by sent date; its first message heads it
/// and the others are its children; threads are in the order of their
/// first message's sent date. Messages without a subject are one thread.
pub fn ordered_subject(msgs: &[Msg]) -> Vec<Thread> {
    let mut order: Vec<usize> = (0..msgs.len()).collect();
    order.sort_by(|a, b| {
        let (x, y) = (&msgs[*a], &msgs[*b]);
        x.subject.cmp(&y.subject).then(x.date.cmp(&y.date)).then(a.cmp(b))
    });
    let mut f = Forest::new(msgs);
    let mut roots = Vec::new();
    let mut head: Option<usize> = None;
    for i in order {
        let n = f.add(Some(i));
        match head {
            Some(h) if f.nodes[h].msg.is_some_and(|m| msgs[m].subject == msgs[i].subject) => f.link(h, n),
            _ => {
                roots.push(n);
                head = Some(n);
            }
        }
    }
    // Children are in date order already (the sort above); only the
    // threads are ordered again, by their first message.
    roots.sort_by_key(|r| f.nodes[*r].msg.map(|i| (msgs[i].date, i)));
    f.threads(&roots)
}

/// THREAD=REFERENCES (RFC 5256 §4, its six steps): threads from the
/// Message-ID, References and In-Reply-To headers, dummies for messages
/// referred to but not here, then threads with the same base subject
/// gathered, everything sorted by sent date.
pub fn references(msgs: &[Msg]) -> Vec<Thread> {
    let mut f = Forest::new(msgs);
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    // (1) Link each message to its references.
    for (i, m) in msgs.iter().enumerate() {
        // Its node: the dummy an earlier reference made for its ID, or a
        // new one; a second message with the same ID gets its own, as a
        // message without ID does (the ID is kept by the first).
        let cur = match m.message_id.as_deref() {
            Some(id) => match by_id.get(id) {
                Some(&n) if f.is_dummy(n) => {
                    f.nodes[n].msg = Some(i);
                    n
                }
                Some(_) => f.add(Some(i)),
                None => {
                    let n = f.add(Some(i));
                    by_id.insert(id, n);
                    n
                }
            },
            None => f.add(Some(i)),
        };
        // (A) Each reference is the parent of the next, unless the next
        // has a parent already or the link would make a loop.
        let refs = &m.references;
        for w in refs.windows(2) {
            let (p, c) = (node_for(&mut f, &mut by_id, &w[0]), node_for(&mut f, &mut by_id, &w[1]));
            if f.nodes[c].parent.is_none() && !f.would_loop(p, c) {
                f.link(p, c);
            }
        }
        // (B) The last reference is this message's parent, replacing the
        // parent a truncated References elsewhere gave it; no loops.
        f.unlink(cur);
        if let Some(last) = refs.last() {
            let p = node_for(&mut f, &mut by_id, last);
            if !f.would_loop(p, cur) {
                f.link(p, cur);
            }
        }
    }
    // (2) The nodes without parent are the first messages of threads.
    let roots: Vec<usize> = (0..f.nodes.len()).filter(|n| f.nodes[*n].parent.is_none()).collect();
    // (3) Prune dummies.
    let mut roots = prune(&mut f, roots);
    // (4) Sort by sent date.
    f.sort(&mut roots);
    // (5) Gather threads with the same base subject.
    let mut roots = gather_by_subject(&mut f, roots);
    // (6) Sort every set of siblings.
    f.sort(&mut roots);
    f.threads(&roots)
}

/// The node of message ID `id`: the message's, or a dummy made now.
fn node_for<'a>(f: &mut Forest<'_>, by_id: &mut HashMap<&'a str, usize>, id: &'a str) -> usize {
    *by_id.entry(id).or_insert_with(|| f.add(None))
}

/// Step 3: a dummy without children goes; a dummy with children gives
/// way to them, except at the top, where it stays when it has two or
/// more (they share a parent that is not here). Bottom-up, iteratively.
fn prune(f: &mut Forest<'_>, roots: Vec<usize>) -> Vec<usize> {
    for n in f.preorder(&roots).into_iter().rev() {
        let children = std::mem::take(&mut f.nodes[n].children);
        let mut kept = Vec::with_capacity(children.len());
        for c in children {
            if f.is_dummy(c) {
                // Its own children were pruned already (deeper first).
                let grand = std::mem::take(&mut f.nodes[c].children);
                for g in &grand {
                    f.nodes[*g].parent = Some(n);
                }
                kept.extend(grand);
            } else {
                kept.push(c);
            }
        }
        f.nodes[n].children = kept;
    }
    let mut out = Vec::with_capacity(roots.len());
    for r in roots {
        if !f.is_dummy(r) || f.nodes[r].children.len() > 1 {
            out.push(r);
        } else if let Some(only) = f.nodes[r].children.pop() {
            f.nodes[only].parent = None;
            out.push(only);
        }
    }
    out
}

/// Step 5: threads whose subjects are the same base subject are
/// gathered (a reply under the original, two originals under a dummy).
/// Threads without a subject are left alone.
fn gather_by_subject(f: &mut Forest<'_>, roots: Vec<usize>) -> Vec<usize> {
    let msgs = f.msgs;
    // The message whose subject is the thread's: the root, or a dummy's
    // first child.
    let subject_of = |f: &Forest<'_>, n: usize| -> Option<usize> {
        let m = match f.nodes[n].msg {
            Some(m) => m,
            None => f.nodes[*f.nodes[n].children.first()?].msg?,
        };
        (!msgs[m].subject.is_empty()).then_some(m)
    };
    let subjects: Vec<Option<usize>> = roots.iter().map(|r| subject_of(f, *r)).collect();
    let reply = |f: &Forest<'_>, n: usize| f.nodes[n].msg.is_some_and(|m| msgs[m].reply_or_fwd);
    // (A), (B) The subject table: a dummy, else an original, else the
    // first reply.
    let mut table: HashMap<&str, usize> = HashMap::new();
    for (r, s) in roots.iter().zip(&subjects) {
        let Some(s) = s else { continue };
        match table.entry(msgs[*s].subject.as_str()) {
            Entry::Vacant(e) => {
                e.insert(*r);
            }
            Entry::Occupied(mut e) => {
                let t = *e.get();
                if !f.is_dummy(t) && (f.is_dummy(*r) || (reply(f, t) && !reply(f, *r))) {
                    e.insert(*r);
                }
            }
        }
    }
    // (C) Merge each thread into the table's one.
    let mut made = Vec::new();
    let mut gone = vec![false; f.nodes.len()];
    for (r, s) in roots.iter().zip(&subjects) {
        let (r, Some(s)) = (*r, s) else { continue };
        if f.nodes[r].parent.is_some() {
            continue;
        }
        let key = msgs[*s].subject.as_str();
        let Some(&t) = table.get(key) else { continue };
        if t == r {
            continue;
        }
        match (f.is_dummy(t), f.is_dummy(r)) {
            (true, true) => {
                for c in std::mem::take(&mut f.nodes[r].children) {
                    f.link(t, c);
                }
                gone[r] = true;
            }
            (true, false) => f.link(t, r),
            _ if reply(f, r) && !reply(f, t) => f.link(t, r),
            _ => {
                let d = f.add(None);
                f.link(d, t);
                f.link(d, r);
                table.insert(key, d);
                made.push(d);
            }
        }
    }
    roots
        .into_iter()
        .chain(made)
        .filter(|n| f.nodes[*n].parent.is_none() && !gone.get(*n).copied().unwrap_or(false))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer as the wire shows it (`(3 2)(1)`).
    fn wire(t: &[Thread]) -> String {
        t.iter().map(|t| t.to_string()).collect()
    }

    /// A message: sent at minute `date`, with subject, Message-ID
    /// (without `<>`) and References as written.
    fn msg(n: u32, date: i64, subject: &str, id: Option<&str>, refs: &str) -> Msg {
        let f = SearchFields {
            subject_text: Some(subject.to_string()),
            message_id: id.map(|i| format!("<{i}>")),
            references: Some(refs.to_string()),
            ..SearchFields::default()
        };
        Msg::new(n, DateTime::from_timestamp(date * 60, 0).unwrap_or_default(), Some(&f))
    }

    #[test]
    fn message_ids_are_read_leniently() {
        assert_eq!(message_ids("<a@b> <c@d>"), vec!["a@b", "c@d"]);
        assert_eq!(message_ids(" (comment) <a@b>\t(x) <\r\n c @ d >"), vec!["a@b", "c@d"]);
        assert_eq!(message_ids("<nope> <@x> <y@> a@b <a <b@c>"), vec!["b@c"]);
        assert_eq!(message_ids("<a@b"), Vec::<String>::new());
        assert_eq!(message_ids(""), Vec::<String>::new());
        let f = SearchFields {
            in_reply_to: Some("<x@y> <z@y>".into()),
            references: Some("garbage".into()),
            ..SearchFields::default()
        };
        assert_eq!(Msg::new(1, DateTime::default(), Some(&f)).references, vec!["x@y"], "In-Reply-To's first");
        let f = SearchFields { in_reply_to: Some("<x@y>".into()), references: Some("<r@y>".into()), ..SearchFields::default() };
        assert_eq!(Msg::new(1, DateTime::default(), Some(&f)).references, vec!["r@y"], "References first");
    }

    /// imaptest's `thread-orderedsubject` (Dovecot's answer): base
    /// subjects group, messages without a subject are one thread.
    #[test]
    fn ordered_subject_groups_base_subjects() {
        let subjects = [
            "a",
            "C",
            "b",
            "_",
            "[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)",
            "b (a)",
            "Re: [FWD: c]",
            "[xyz]",
            "",
            " ",
            "Re: b",
            "RE: C",
            "Re: c",
            "Ad: Re: Ad: Re: Ad: x",
            "re: [fwd: [fwd: re: [fwd: babylon]]]",
        ];
        let msgs: Vec<Msg> = subjects.iter().enumerate().map(|(i, s)| msg(i as u32 + 1, 0, s, None, "")).collect();
        assert_eq!(wire(&ordered_subject(&msgs)), "(1)(2 (7)(12)(13))(3 (5)(11))(4)(6)(8)(9 10)(14)(15)");
    }

    /// imaptest's `thread-orderedsubject2`: children by sent date, threads
    /// by their first message's.
    #[test]
    fn ordered_subject_sorts_by_sent_date() {
        let dates = [10, 9, 8, 7, 30, 29, 28, 27];
        let msgs: Vec<Msg> =
            dates.iter().enumerate().map(|(i, d)| msg(i as u32 + 1, *d, if i % 2 == 0 { "a" } else { "b" }, None, "")).collect();
        assert_eq!(wire(&ordered_subject(&msgs)), "(4 (2)(8)(6))(3 (1)(7)(5))");
        assert_eq!(wire(&ordered_subject(&msgs[..2])), "(2)(1)");
        assert_eq!(wire(&ordered_subject(&[msgs[0].clone(), msgs[2].clone()])), "(3 1)");
        assert_eq!(wire(&ordered_subject(&[])), "");
    }

    /// Step 1: References link parent to child; a message whose parent
    /// is missing hangs from a dummy; a dummy with two children stays at
    /// the top, with one it gives way.
    #[test]
    fn references_link_and_dummies() {
        // 2 and 3 answer 1; 4 answers 2 through a message not here (x).
        let msgs = vec![
            msg(1, 0, "a", Some("1@x"), ""),
            msg(2, 1, "re: a", Some("2@x"), "<1@x>"),
            msg(3, 2, "re: a", Some("3@x"), "<1@x>"),
            msg(4, 3, "re: a", Some("4@x"), "<1@x> <2@x> <gone@x>"),
        ];
        assert_eq!(wire(&references(&msgs)), "(1 (2 4)(3))");
        // Two answers to a message not here: a dummy at the top.
        let msgs = vec![msg(1, 0, "", None, "<a@b>"), msg(2, 1, "", None, "<a@b>")];
        assert_eq!(wire(&references(&msgs)), "((1)(2))");
        // One answer to a message not here: no dummy.
        let msgs = vec![msg(1, 0, "", None, "<a@b>"), msg(2, 1, "", Some("c@d"), "<e@f>")];
        assert_eq!(wire(&references(&msgs)), "(1)(2)");
        // Dummies in the middle give way to their children.
        let msgs = vec![msg(1, 0, "x", Some("1@x"), ""), msg(2, 1, "y", Some("2@x"), "<1@x> <m1@x> <m2@x>")];
        assert_eq!(wire(&references(&msgs)), "(1 2)");
    }

    /// The RFC's rules for a References that disagrees: a reference's
    /// existing parent is kept; this message's own last reference wins
    /// over a parent given before; links that would loop are not made
    /// (imaptest `thread`: Dovecot answers `(3 2)(1)`).
    #[test]
    fn references_loops_and_conflicts() {
        let msgs = vec![
            msg(1, 120, "", Some("a@b"), ""),
            msg(2, 0, "", Some("b@b"), "<a@b> <c@b>"),
            msg(3, 61, "", Some("c@b"), "<b@b>"),
        ];
        assert_eq!(wire(&references(&msgs)), "(3 2)(1)");
        // A message that refers to itself, and two that refer to each other.
        let msgs = vec![
            msg(1, 0, "", Some("a@b"), "<a@b>"),
            msg(2, 1, "", Some("b@b"), "<c@b>"),
            msg(3, 2, "", Some("c@b"), "<b@b>"),
        ];
        assert_eq!(wire(&references(&msgs)), "(1)(3 2)");
        // A loop inside References.
        let msgs = vec![msg(1, 0, "", Some("a@b"), "<x@b> <y@b> <x@b> <y@b>"), msg(2, 1, "", Some("x@b"), "")];
        assert_eq!(wire(&references(&msgs)), "(2 1)");
    }

    /// Duplicate Message-IDs: the first keeps it (imaptest `thread2`,
    /// `thread3`, `thread7`).
    #[test]
    fn duplicate_message_ids() {
        let msgs = vec![msg(1, 0, "", Some("a@b"), ""), msg(2, 0, "", Some("a@b"), "")];
        assert_eq!(wire(&references(&msgs)), "(1)(2)");
        let msgs = vec![msg(1, 0, "foo", Some("a@b"), ""), msg(2, 1, "Re: foo", Some("a@b"), "")];
        assert_eq!(wire(&references(&msgs)), "(1 2)");
        let msgs = vec![
            msg(1, 0, "", Some("a@b"), ""),
            msg(2, 0, "", Some("b@b"), "<a@b>"),
            msg(3, 0, "", Some("c@b"), "<b@b>"),
            msg(4, 0, "", Some("b@b"), "<a@b>"),
        ];
        assert_eq!(wire(&references(&msgs)), "(1 (2 3)(4))");
        // Without the first <b@b>, the duplicate is <b@b>.
        let msgs = vec![msgs[0].clone(), Msg { n: 2, ..msgs[2].clone() }, Msg { n: 3, ..msgs[3].clone() }];
        assert_eq!(wire(&references(&msgs)), "(1 3 2)");
    }

    /// Step 5: threads with the same base subject: a reply goes under the
    /// original, two originals (or two replies) under a new dummy, a
    /// dummy's children join the other dummy's; empty subjects stay apart.
    #[test]
    fn subjects_gather_threads() {
        // imaptest `thread4`: a reply whose parent is missing goes under
        // the original by subject.
        let msgs = vec![msg(1, 0, "foo", Some("a@b"), ""), msg(2, 1, "Re: foo", Some("b@b"), "<c@b>")];
        assert_eq!(wire(&references(&msgs)), "(1 2)");
        // The reply first: still under the original.
        let msgs = vec![msg(1, 0, "Re: foo", None, ""), msg(2, 1, "foo", None, "")];
        assert_eq!(wire(&references(&msgs)), "(2 1)");
        // Two originals: a dummy holds both.
        let msgs = vec![msg(1, 0, "Foo", None, ""), msg(2, 1, "foo", None, ""), msg(3, 2, "re: FOO", None, "")];
        assert_eq!(wire(&references(&msgs)), "((1)(2)(3))");
        // Two dummies with the same subject: one dummy.
        let msgs = vec![
            msg(1, 0, "x", None, "<d1@b>"),
            msg(2, 1, "x", None, "<d1@b>"),
            msg(3, 2, "x", None, "<d2@b>"),
            msg(4, 3, "x", None, "<d2@b>"),
        ];
        assert_eq!(wire(&references(&msgs)), "((1)(2)(3)(4))");
        // An original joins a dummy.
        let msgs = vec![msg(1, 0, "x", None, "<d1@b>"), msg(2, 1, "x", None, "<d1@b>"), msg(3, 2, "x", None, "")];
        assert_eq!(wire(&references(&msgs)), "((1)(2)(3))");
        // No subject: nothing gathered.
        let msgs = vec![msg(1, 0, "", None, ""), msg(2, 1, "Re:", None, "")];
        assert_eq!(wire(&references(&msgs)), "(1)(2)");
    }

    /// Step 6: siblings by sent date, equal dates in sequence order; a
    /// dummy by its first child (imaptest `thread5`).
    #[test]
    fn siblings_sort_by_date() {
        let msgs = vec![
            msg(1, 120, "", Some("1@b"), ""),
            msg(2, 0, "", Some("2@b"), "<1@b>"),
            msg(3, 0, "", Some("3@b"), "<1@b>"),
            msg(4, 0, "", Some("4@b"), "<2@b>"),
        ];
        assert_eq!(wire(&references(&msgs)), "(1 (2 4)(3))");
        let later = vec![
            msg(1, 0, "", Some("3@b"), "<1@b>"),
            msg(2, 0, "", Some("4@b"), "<2@b>"),
            msg(3, 0, "", Some("5@b"), "<2@b>"),
        ];
        assert_eq!(wire(&references(&later)), "(1)((2)(3))");
        // Replies out of order of arrival come out by date.
        let msgs = vec![
            msg(1, 0, "", Some("1@b"), ""),
            msg(2, 9, "", Some("2@b"), "<1@b>"),
            msg(3, 5, "", Some("3@b"), "<1@b>"),
            msg(4, 7, "", Some("4@b"), "<1@b>"),
            msg(5, -1, "", Some("5@b"), ""),
        ];
        assert_eq!(wire(&references(&msgs)), "(5)(1 (3)(4)(2))");
    }

    /// A long chain and a deep branching do not overflow the stack; past
    /// MAX_NESTING the rest is listed in line, every message named once.
    #[test]
    fn deep_threads_are_safe() {
        let n = 20_000u32;
        let chain: Vec<Msg> = (1..=n)
            .map(|i| msg(i, i64::from(i), "", Some(&format!("{i}@x")), &if i > 1 { format!("<{}@x>", i - 1) } else { String::new() }))
            .collect();
        let t = references(&chain);
        assert_eq!(t.len(), 1);
        assert_eq!(wire(&t).matches(' ').count() as u32, n - 1);
        // Every message has two replies: one ends there, one goes on.
        let mut branchy = Vec::new();
        for i in 1..=2000u32 {
            let parent = if i > 1 { format!("<{}@x>", i - 1) } else { String::new() };
            branchy.push(msg(2 * i - 1, i64::from(i), "", Some(&format!("{i}@x")), &parent));
            branchy.push(msg(2 * i, i64::from(i) + 1, "", Some(&format!("leaf{i}@x")), &format!("<{i}@x>")));
        }
        let t = references(&branchy);
        let w = wire(&t);
        let mut nums: Vec<u32> = w.split(|c: char| !c.is_ascii_digit()).filter_map(|s| s.parse().ok()).collect();
        nums.sort_unstable();
        assert_eq!(nums, (1..=4000).collect::<Vec<u32>>());
        let deepest = w.chars().scan(0i32, |d, c| {
            *d += match c { '(' => 1, ')' => -1, _ => 0 };
            Some(*d)
        });
        assert_eq!(deepest.max(), Some(MAX_NESTING as i32 + 1), "{}", &w[..200]);
        assert_eq!(wire(&ordered_subject(&chain)).matches('(').count() as u32, n, "(1 (2)(3)…)");
    }

    proptest::proptest! {
        /// Any links (loops, self references, duplicates, missing IDs):
        /// no panic, and every message is named exactly once.
        #[test]
        fn any_references_name_each_message_once(
            spec in proptest::collection::vec((0i64..5, proptest::option::of(0u8..8), proptest::collection::vec(0u8..8, 0..4), 0u8..3), 0..24),
        ) {
            let subjects = ["", "s", "Re: s"];
            let msgs: Vec<Msg> = spec
                .iter()
                .enumerate()
                .map(|(i, (d, id, refs, s))| {
                    let refs: String = refs.iter().map(|r| format!("<{r}@x> ")).collect();
                    msg(i as u32 + 1, *d, subjects[*s as usize], id.map(|x| format!("{x}@x")).as_deref(), &refs)
                })
                .collect();
            for t in [references(&msgs), ordered_subject(&msgs)] {
                let w = wire(&t);
                let mut nums: Vec<u32> = w.split(|c: char| !c.is_ascii_digit()).filter_map(|s| s.parse().ok()).collect();
                nums.sort_unstable();
                proptest::prop_assert_eq!(nums, (1..=msgs.len() as u32).collect::<Vec<u32>>(), "{}", w);
            }
        }
    }
}
