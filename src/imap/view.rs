//! The per-user mailbox view: which IMAP folder names a user has, what each
//! one is in the store, and snapshots of their contents. Protocol code asks
//! this module, never sled or the blob files.
//!
//! For each mailbox the user holds `read` on, a subtree named by its alias;
//! `INBOX` is the default mailbox's INBOX. Names of mailboxes the user holds
//! no `read` on never appear and resolve like names that do not exist.

use std::collections::HashSet;
use std::sync::Arc;

use crate::auth::{Right, User};
use crate::store::{MessageMeta, Store, StoreError};

pub const DELIMITER: char = '/';

/// Folders of every mailbox subtree: (IMAP leaf name, store folder, special
/// use). `None` as store folder is a virtual folder (computed, empty for now).
pub const LEAVES: [(&str, Option<&str>, Option<&str>); 5] = [
    ("INBOX", Some("INBOX"), None),
    ("Sent", Some("Sent"), Some("Sent")),
    ("Receipts", Some("Receipts"), None),
    ("Anomalies", Some("Anomalies"), None),
    ("Undelivered", None, None),
];

/// A folder's messages in UID order, and the UIDs this user has seen.
pub type Snapshot = (Vec<(u32, MessageMeta)>, HashSet<u32>);

/// One selectable folder as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folder {
    /// Its IMAP name (`protocollo/Sent`, `INBOX`).
    pub name: String,
    /// The PEC mailbox alias.
    pub mailbox: String,
    /// Store folder, or `None` for a virtual folder.
    pub store_folder: Option<&'static str>,
    pub special_use: Option<&'static str>,
}

/// An entry of LIST: a folder, or a mailbox's non-selectable parent.
#[derive(Debug, Clone)]
pub struct ListEntry {
    pub name: String,
    pub folder: Option<Folder>,
}

/// Counters of a folder as STATUS and SELECT report them.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub exists: u32,
    pub unseen: u32,
    pub highest_modseq: u64,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    /// No such folder, or one the user may not see (same answer).
    #[error("no such folder")]
    NotFound,
    #[error("archive: {0}")]
    Store(#[from] StoreError),
}

/// What one user sees.
#[derive(Clone)]
pub struct View {
    pub user: Arc<User>,
    pub store: Store,
}

impl View {
    pub fn new(user: Arc<User>, store: Store) -> View {
        View { user, store }
    }

    /// The mailbox whose INBOX is `INBOX`: the configured default, else the
    /// first visible one.
    fn default_mailbox(&self) -> Option<String> {
        self.user
            .default_mailbox
            .clone()
            .filter(|m| self.user.may(m, Right::Read))
            .or_else(|| self.user.visible_mailboxes().first().map(|m| m.to_string()))
    }

    /// Every name the user has, in LIST order.
    pub fn tree(&self) -> Vec<ListEntry> {
        let mut out = Vec::new();
        if let Some(m) = self.default_mailbox() {
            out.push(ListEntry {
                name: "INBOX".into(),
                folder: Some(Folder {
                    name: "INBOX".into(),
                    mailbox: m,
                    store_folder: Some("INBOX"),
                    special_use: None,
                }),
            });
        }
        for m in self.user.visible_mailboxes() {
            out.push(ListEntry {
                name: m.to_string(),
                folder: None,
            });
            for (leaf, sf, su) in LEAVES {
                let name = format!("{m}{DELIMITER}{leaf}");
                out.push(ListEntry {
                    name: name.clone(),
                    folder: Some(Folder {
                        name,
                        mailbox: m.to_string(),
                        store_folder: sf,
                        special_use: su,
                    }),
                });
            }
        }
        out
    }

    /// The folder called `name` (INBOX case-insensitively).
    pub fn resolve(&self, name: &str) -> Result<Folder, ViewError> {
        let norm = normalize(name);
        self.tree()
            .into_iter()
            .filter_map(|e| e.folder)
            .find(|f| f.name == norm)
            .ok_or(ViewError::NotFound)
    }

    /// Is `name` a mailbox parent (`protocollo`) the user can see?
    pub fn is_parent(&self, name: &str) -> bool {
        self.user.visible_mailboxes().contains(&name)
    }

    pub fn may(&self, f: &Folder, right: Right) -> bool {
        self.user.may(&f.mailbox, right)
    }

    /// The folder's messages in UID order, and which of them this user has
    /// seen.
    pub fn snapshot(&self, f: &Folder) -> Result<Snapshot, ViewError> {
        let Some(sf) = f.store_folder else {
            return Ok((Vec::new(), HashSet::new()));
        };
        let msgs = self.store.messages(&f.mailbox, sf)?;
        let seen = self.store.seen_uids(&self.user.name, &f.mailbox, sf)?;
        Ok((msgs, seen))
    }

    pub fn counts(&self, f: &Folder) -> Result<Counts, ViewError> {
        let st = match f.store_folder {
            Some(sf) => self.store.folder(&f.mailbox, sf)?,
            None => None,
        };
        let Some(st) = st else {
            // Not created yet (nothing archived there): an empty folder
            // whose UIDVALIDITY changes once, harmlessly, when it is created.
            return Ok(Counts {
                uidvalidity: 1,
                uidnext: 1,
                exists: 0,
                unseen: 0,
                highest_modseq: 1,
            });
        };
        let (msgs, seen) = self.snapshot(f)?;
        let unseen = msgs.iter().filter(|(u, _)| !seen.contains(u)).count();
        Ok(Counts {
            uidvalidity: st.uidvalidity,
            uidnext: st.uidnext.max(1),
            exists: u32::try_from(msgs.len()).unwrap_or(u32::MAX),
            unseen: u32::try_from(unseen).unwrap_or(u32::MAX),
            highest_modseq: st.highest_modseq,
        })
    }
}

/// `inbox` in any case is `INBOX`; so is a mailbox's `alias/inbox`.
pub fn normalize(name: &str) -> String {
    if name.eq_ignore_ascii_case("INBOX") {
        return "INBOX".into();
    }
    match name.rsplit_once(DELIMITER) {
        Some((m, leaf)) if leaf.eq_ignore_ascii_case("INBOX") => format!("{m}{DELIMITER}INBOX"),
        _ => name.to_string(),
    }
}

/// IMAP LIST pattern matching: `*` matches anything, `%` anything but the
/// delimiter. Dynamic programming, so a hostile pattern of many wildcards
/// costs O(pattern × name), not exponential time.
pub fn pattern_matches(pattern: &[u8], name: &[u8]) -> bool {
    // ok[j]: pattern[..i] matches name[..j]
    let mut ok = vec![false; name.len() + 1];
    ok[0] = true;
    for &p in pattern {
        let mut next = vec![false; name.len() + 1];
        match p {
            b'*' | b'%' => {
                let mut reach = false;
                for j in 0..=name.len() {
                    if ok[j] {
                        reach = true;
                    }
                    if p == b'%' && j > 0 && name[j - 1] == DELIMITER as u8 && !ok[j] {
                        reach = false;
                    }
                    next[j] = reach;
                }
            }
            c => {
                for j in 1..=name.len() {
                    next[j] = ok[j - 1] && name[j - 1] == c;
                }
            }
        }
        ok = next;
    }
    ok[name.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(pattern_matches(b"*", b"a/INBOX"));
        assert!(pattern_matches(b"%", b"INBOX"));
        assert!(!pattern_matches(b"%", b"a/INBOX"));
        assert!(pattern_matches(b"a/%", b"a/Sent"));
        assert!(!pattern_matches(b"b/*", b"a/Sent"));
    }
}
