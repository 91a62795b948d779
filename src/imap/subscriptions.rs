//! Subscriptions as a user's client sees them: SUBSCRIBE, UNSUBSCRIBE,
//! LSUB (RFC 3501 §6.3.6–6.3.9) and the extended LIST's `SUBSCRIBED`,
//! `RECURSIVEMATCH` and `CHILDINFO` (RFC 5258 §3–4).
//!
//! The store keeps each user's explicit choices by folder name
//! (`store::subscriptions`); this module adds the defaults and answers
//! which names a listing shows. By default the gateway's own folders of
//! every mailbox the user may read (INBOX, Sent, Receipts, the views,
//! Trash …) and the user's Drafts and Templates are subscribed, until the
//! user unsubscribes one: a client that shows only subscribed folders
//! (Thunderbird) shows every certified folder without being told.
//! Categories (folders people create) are subscribed only when a user
//! subscribes them; CREATE does not (RFC 3501 §6.3.3), and a deleted
//! folder's subscription stays (RFC 3501 §6.3.6; `\NonExistent` in
//! `LIST (SUBSCRIBED)`).
//!
//! Pure: no I/O.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::view::{ListEntry, DELIMITER};

/// Is `e` subscribed when its user never chose: a gateway folder, or the
/// user's own Drafts and Templates; not a category, not a mailbox's
/// non-selectable parent.
pub fn by_default(e: &ListEntry) -> bool {
    e.folder.as_ref().is_some_and(|f| !f.category || f.private)
}

/// One user's subscriptions: the choices the store holds over the
/// defaults of the folders the user has now.
#[derive(Debug, Clone, Default)]
pub struct Subscriptions {
    choices: HashMap<String, bool>,
    defaults: HashSet<String>,
}

impl Subscriptions {
    /// `tree`: the user's folders ([`super::view::View::tree`]); `choices`:
    /// (name, subscribed) as the store holds them.
    pub fn new(tree: &[ListEntry], choices: Vec<(String, bool)>) -> Subscriptions {
        let defaults = tree.iter().filter(|e| by_default(e)).map(|e| e.name.clone()).collect();
        Subscriptions { choices: choices.into_iter().collect(), defaults }
    }

    pub fn is_subscribed(&self, name: &str) -> bool {
        self.choices.get(name).copied().unwrap_or_else(|| self.defaults.contains(name))
    }

    /// Every subscribed name, existing or not, by name.
    pub fn names(&self) -> BTreeSet<&str> {
        let chosen = self.choices.iter().filter(|(_, on)| **on).map(|(n, _)| n.as_str());
        let defaults = self.defaults.iter().filter(|n| self.choices.get(*n) != Some(&false)).map(String::as_str);
        chosen.chain(defaults).collect()
    }
}

/// A name a subscription listing shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub name: String,
    /// The name itself is subscribed (else it is listed for a subscribed
    /// inferior the patterns do not reach).
    pub subscribed: bool,
    /// A subscribed inferior the patterns do not match: `\Noselect` in
    /// LSUB when not subscribed itself (RFC 3501 §6.3.9), `CHILDINFO
    /// ("SUBSCRIBED")` with RECURSIVEMATCH (RFC 5258 §3.5).
    pub childinfo: bool,
}

/// The names LSUB or `LIST (SUBSCRIBED)` shows for the patterns
/// `matches` stands for: each subscribed name it matches, and with
/// `recursive` each name it matches that has a subscribed inferior it does
/// not match. In `tree` order, then the names no folder has, by name.
pub fn lines(tree: &[ListEntry], subs: &Subscriptions, matches: &dyn Fn(&str) -> bool, recursive: bool) -> Vec<Line> {
    let mut found: HashMap<&str, Line> = HashMap::new();
    for name in subs.names() {
        if matches(name) {
            found.entry(name).or_insert_with(|| line(name)).subscribed = true;
        } else if recursive {
            for (i, _) in name.match_indices(DELIMITER) {
                let parent = &name[..i];
                if !parent.is_empty() && matches(parent) {
                    found.entry(parent).or_insert_with(|| line(parent)).childinfo = true;
                }
            }
        }
    }
    let mut out = Vec::with_capacity(found.len());
    for e in tree {
        if let Some(l) = found.remove(e.name.as_str()) {
            out.push(l);
        }
    }
    let mut rest: Vec<Line> = found.into_values().collect();
    rest.sort_by(|a, b| a.name.cmp(&b.name));
    out.extend(rest);
    out
}

fn line(name: &str) -> Line {
    Line { name: name.to_string(), subscribed: false, childinfo: false }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::view::{pattern_matches, Folder};

    fn folder(name: &str, category: bool) -> ListEntry {
        ListEntry { name: name.into(), folder: Some(Folder { name: name.into(), category, ..Folder::default() }) }
    }

    fn tree() -> Vec<ListEntry> {
        vec![
            folder("INBOX", false),
            ListEntry { name: "prot".into(), folder: None },
            folder("prot/INBOX", false),
            folder("prot/Receipts", false),
            folder("prot/A", true),
            folder("prot/A/B", true),
            folder("prot/C", true),
            folder("prot/C/D", true),
            folder("prot/C/D/E", true),
        ]
    }

    fn names(ls: &[Line]) -> Vec<(&str, bool, bool)> {
        ls.iter().map(|l| (l.name.as_str(), l.subscribed, l.childinfo)).collect()
    }

    #[test]
    fn gateway_folders_are_subscribed_until_unsubscribed_categories_when_subscribed() {
        let t = tree();
        let s = Subscriptions::new(&t, vec![]);
        assert!(s.is_subscribed("INBOX") && s.is_subscribed("prot/Receipts"));
        assert!(!s.is_subscribed("prot") && !s.is_subscribed("prot/A"));
        let s = Subscriptions::new(
            &t,
            vec![("prot/Receipts".into(), false), ("prot/A/B".into(), true), ("prot/Gone".into(), true)],
        );
        assert!(!s.is_subscribed("prot/Receipts"));
        assert_eq!(s.names().into_iter().collect::<Vec<_>>(), vec!["INBOX", "prot/A/B", "prot/Gone", "prot/INBOX"]);
    }

    /// RFC 3501 §6.3.9: `LSUB "" "news/%"` with `news/comp/mail/misc`
    /// subscribed lists `news/comp` as `\Noselect`.
    #[test]
    fn an_unsubscribed_parent_is_listed_for_its_subscribed_inferior() {
        let t = tree();
        let s = Subscriptions::new(&t, vec![("prot/C/D/E".into(), true), ("prot/A".into(), true)]);
        let pat = |p: &'static str| move |n: &str| pattern_matches(p.as_bytes(), n.as_bytes());
        assert_eq!(
            names(&lines(&t, &s, &pat("prot/%"), true)),
            vec![
                ("prot/INBOX", true, false),
                ("prot/Receipts", true, false),
                ("prot/A", true, false),
                ("prot/C", false, true)
            ]
        );
        // `*` reaches the inferior itself: no parent for it.
        assert_eq!(names(&lines(&t, &s, &pat("prot/C*"), true)), vec![("prot/C/D/E", true, false)]);
        assert_eq!(names(&lines(&t, &s, &pat("prot/%"), false)).len(), 3, "without the rule");
        // A subscribed parent says both.
        let s = Subscriptions::new(&t, vec![("prot/C/D/E".into(), true), ("prot/C".into(), true)]);
        assert_eq!(names(&lines(&t, &s, &pat("prot/C"), true)), vec![("prot/C", true, true)]);
    }

    #[test]
    fn a_subscription_without_a_folder_is_listed_after_the_tree() {
        let t = tree();
        let s = Subscriptions::new(&t, vec![("prot/Gone".into(), true), ("prot/A".into(), true), ("Zed".into(), true)]);
        let all = |_: &str| true;
        let ls = lines(&t, &s, &all, true);
        assert_eq!(
            ls.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
            vec!["INBOX", "prot/INBOX", "prot/Receipts", "prot/A", "Zed", "prot/Gone"]
        );
    }
}
