//! The per-user mailbox view: which IMAP folder names a user has, what each
//! one is in the store, and snapshots of their contents. Protocol code asks
//! this module, never the index database or the blob files.
//!
//! For each mailbox the user holds `read` on, a subtree named by its alias;
//! `INBOX` is the default mailbox's INBOX. Names of mailboxes the user holds
//! no `read` on never appear and resolve like names that do not exist.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::recent::Recent;
use super::shared::{Entries, FlagSets, Msg, SharedMetas, Stamp, Version};
use super::uidset::UidSet;
use crate::auth::{Right, User};
use crate::handling::rules::LiveRules;
use crate::handling::ViewKind;
use crate::pec::reconcile::SentMessage;
use crate::store::{time_modseq, BlobHash, FolderState, MessageMeta, Store, StoreError};

pub const DELIMITER: char = '/';

/// Folders of every mailbox subtree: (IMAP leaf name, store folder, special
/// use). `None` as store folder is a virtual folder (computed: only
/// `Undelivered` exists, see [`View::snapshot`]).
/// Each user's own folders, top level: (name, special use). Clients save
/// unfinished messages there; they are not PEC and not evidence.
pub const PRIVATE: [(&str, Option<&str>); 2] = [("Drafts", Some("Drafts")), ("Templates", None)];

pub const LEAVES: [(&str, Option<&str>, Option<&str>); 5] = [
    ("INBOX", Some("INBOX"), None),
    ("Sent", Some("Sent"), Some("Sent")),
    ("Receipts", Some("Receipts"), None),
    ("Anomalies", Some("Anomalies"), None),
    ("Undelivered", None, None),
];

/// The store folder a virtual `Undelivered` folder shows messages of.
pub const SENT: &str = "Sent";
/// The store folder the handling views show messages of.
pub const INBOX: &str = "INBOX";
/// Parent of the per-office handling views.
pub const OFFICES: &str = "Offices";
/// The virtual folder's leaf name.
pub const UNDELIVERED: &str = "Undelivered";
/// The virtual folder of every message of a mailbox once.
pub const ALL: &str = "All";
/// The virtual folder of hidden messages (users with `delete` only).
pub const TRASH: &str = "Trash";
/// Parent of the campaigns' folders.
pub const CAMPAIGNS: &str = "Campaigns";

/// The gateway's computed `$Pec*` keywords live in `pec`; re-exported for
/// the session code.
pub use crate::pec::{is_pec_keyword, PEC_KEYWORDS};

/// A store folder with this many messages or more is read in the
/// background when selected (see [`View::lazy_list`]); a smaller one at
/// once.
const LAZY_FROM: u64 = if cfg!(test) { 8 } else { 16_384 };

/// A folder's messages in UID order (flags include the computed `$Pec*`
/// keywords), shared with other sessions (see [`super::shared`]), and the
/// UIDs this user has seen.
pub type Snapshot = (Arc<Entries>, Arc<UidSet>);

/// One selectable folder as the user sees it. `Default` is a plain
/// folder of nothing: each kind states only what makes it one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Folder {
    /// Its IMAP name (`protocollo/Sent`, `INBOX`).
    pub name: String,
    /// The PEC mailbox alias.
    pub mailbox: String,
    /// Store folder, or `None` for a virtual folder.
    pub store_folder: Option<String>,
    /// A category (a folder people created, see [`View::categories`]):
    /// `store_folder` is its store name (`#3`).
    pub category: bool,
    pub special_use: Option<&'static str>,
    /// A handling view (`To handle`, `Mine`, `Offices/<name>`, `Done`):
    /// virtual, over INBOX, numbered by handling-view UIDs.
    pub handling: Option<ViewKind>,
    /// The mailbox's `Trash` (virtual, `\\Trash`): what was hidden from its
    /// folders, numbered by Trash UIDs; only for users holding `delete`.
    pub trash: bool,
    /// One of the user's own `Drafts` and `Templates` (a category of their
    /// private store): not PEC, not evidence; EXPUNGE there deletes.
    pub private: bool,
    /// The mailbox's `All` (virtual, `\\All`, read-only): every message
    /// once, wherever it is filed, numbered by All UIDs.
    pub all: bool,
    /// A campaign's folder (`Campaigns/<name>`, virtual, read-only): its
    /// notices by number, each with its state as `$Pec*` keywords; the
    /// campaign's id.
    pub campaign: Option<String>,
}

impl Folder {
    /// The store folder whose messages (and per-user `\Seen`) this folder
    /// shows: itself, `Sent` for `Undelivered`, `INBOX` for the handling
    /// views.
    pub fn source(&self) -> &str {
        match (&self.store_folder, &self.handling) {
            (Some(f), _) => f,
            (None, Some(_)) => INBOX,
            (None, None) => SENT,
        }
    }

    /// Where flag changes and moves of the folder's messages go: the store
    /// folder, or INBOX for a handling view (`None`: Undelivered, which is
    /// read-only).
    pub fn writable_source(&self) -> Option<&str> {
        self.store_folder.as_deref().or(self.handling.as_ref().map(|_| INBOX))
    }

    /// Does this folder show sent messages (and so their PEC keywords)?
    pub fn shows_sent(&self) -> bool {
        self.source() == SENT
    }

    /// The folder named in audit records.
    pub fn audit_name(&self) -> &str {
        match &self.store_folder {
            Some(f) if !self.category => f,
            _ => self.name.split_once(DELIMITER).map(|(_, leaf)| leaf).unwrap_or(&self.name),
        }
    }
}

/// An entry of LIST: a folder, or a mailbox's non-selectable parent.
#[derive(Debug, Clone)]
pub struct ListEntry {
    pub name: String,
    pub folder: Option<Folder>,
}

/// Counters of a folder as STATUS and SELECT report them.
/// `Counts::highest_modseq` of a folder without MODSEQs of its own (the
/// virtual ones: All, Trash, the handling views, Undelivered, campaigns):
/// RFC 7162's NOMODSEQ, and STATUS HIGHESTMODSEQ 0.
pub const NOMODSEQ: u64 = 0;

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
    /// `pec.overdue_after`, if configured (else reconcile's default).
    pub overdue_after: Option<Duration>,
    /// Offices (for the handling views).
    pub rules: LiveRules,
    /// Where snapshots share their entries with other sessions'.
    pub metas: Arc<SharedMetas>,
    /// Which messages some session was told about (`\\Recent`).
    pub recent: Option<Arc<super::RecentMarks>>,
}

impl View {
    pub fn new(user: Arc<User>, store: Store) -> View {
        View { user, store, overdue_after: None, rules: LiveRules::default(), metas: Arc::default(), recent: None }
    }

    /// Share snapshot entries through `metas` (one table per server).
    pub fn with_recent(mut self, recent: Arc<super::RecentMarks>) -> View {
        self.recent = Some(recent);
        self
    }

    pub fn with_shared(mut self, metas: Arc<SharedMetas>) -> View {
        self.metas = metas;
        self
    }

    pub fn with_rules(mut self, rules: LiveRules) -> View {
        self.rules = rules;
        self
    }

    /// The offices whose view folders `user` sees under `mailbox`: those
    /// they belong to, or all of them with `triage` on the mailbox.
    fn office_views(&self, mailbox: &str) -> Vec<String> {
        if self.user.may(mailbox, Right::Triage) {
            self.rules.current().offices.keys().cloned().collect()
        } else {
            self.rules.current().offices_of(&self.user.name)
        }
    }

    pub fn with_overdue_after(mut self, d: Option<Duration>) -> View {
        self.overdue_after = d;
        self
    }

    /// Reconciliation states of `mailbox`'s sent messages, by key, with the
    /// configured overdue delay.
    fn sent_states(&self, mailbox: &str) -> Result<HashMap<String, SentMessage>, ViewError> {
        Ok(self
            .store
            .sent_states(mailbox)?
            .into_iter()
            .map(|s| {
                let s = match self.overdue_after {
                    Some(d) => s.with_overdue_after(d),
                    None => s,
                };
                (s.original_message_id.clone(), s)
            })
            .collect())
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

    /// INBOX: the default mailbox's, the first entry of the tree.
    fn inbox(&self) -> Option<Folder> {
        let m = self.default_mailbox()?;
        Some(Folder { name: INBOX.into(), mailbox: m, store_folder: Some(INBOX.into()), ..Default::default() })
    }

    /// Every name the user has, in LIST order.
    pub fn tree(&self) -> Vec<ListEntry> {
        let mut out = Vec::new();
        if let Some(f) = self.inbox() {
            out.push(ListEntry { name: f.name.clone(), folder: Some(f) });
        }
        // The user's own Drafts and Templates (made at login, see
        // [`PRIVATE`]), top level like INBOX.
        let own = self.user.private_mailbox();
        for (store_name, shown) in self.categories(&own) {
            let Some(su) = PRIVATE.iter().find(|(n, _)| *n == shown).map(|(_, su)| *su) else { continue };
            out.push(ListEntry {
                name: shown.clone(),
                folder: Some(Folder {
                    name: shown,
                    mailbox: own.clone(),
                    store_folder: Some(store_name),
                    category: true,
                    special_use: su,
                    private: true,
                    ..Default::default()
                }),
            });
        }
        for m in self.user.visible_mailboxes() {
            out.push(ListEntry { name: m.to_string(), folder: None });
            for (leaf, sf, su) in LEAVES {
                let name = format!("{m}{DELIMITER}{leaf}");
                out.push(ListEntry {
                    name: name.clone(),
                    folder: Some(Folder {
                        name,
                        mailbox: m.to_string(),
                        store_folder: sf.map(str::to_string),
                        special_use: su,
                        ..Default::default()
                    }),
                });
            }
            let name = format!("{m}{DELIMITER}{ALL}");
            out.push(ListEntry {
                name: name.clone(),
                folder: Some(Folder {
                    name,
                    mailbox: m.to_string(),
                    special_use: Some("All"),
                    all: true,
                    ..Default::default()
                }),
            });
            if self.user.may(m, Right::Delete) {
                let name = format!("{m}{DELIMITER}{TRASH}");
                out.push(ListEntry {
                    name: name.clone(),
                    folder: Some(Folder {
                        name,
                        mailbox: m.to_string(),
                        special_use: Some("Trash"),
                        trash: true,
                        ..Default::default()
                    }),
                });
            }
            let offices = self.office_views(m);
            let mut kinds = vec![ViewKind::ToHandle, ViewKind::Mine];
            kinds.extend(offices.iter().map(|o| ViewKind::Office(o.clone())));
            kinds.push(ViewKind::Done);
            for kind in kinds {
                if matches!(kind, ViewKind::Office(_))
                    && !out.iter().any(|e| e.name == format!("{m}{DELIMITER}{OFFICES}"))
                {
                    out.push(ListEntry { name: format!("{m}{DELIMITER}{OFFICES}"), folder: None });
                }
                let name = format!("{m}{DELIMITER}{}", kind.leaf());
                out.push(ListEntry {
                    name: name.clone(),
                    folder: Some(Folder { name, mailbox: m.to_string(), handling: Some(kind), ..Default::default() }),
                });
            }
            self.campaign_folders(m, &mut out);
            for (store_name, shown) in self.categories(m) {
                let name = format!("{m}{DELIMITER}{shown}");
                out.push(ListEntry {
                    name: name.clone(),
                    folder: Some(Folder {
                        name,
                        mailbox: m.to_string(),
                        store_folder: Some(store_name),
                        category: true,
                        ..Default::default()
                    }),
                });
            }
        }
        out
    }

    /// `mailbox`'s campaigns, each a folder under `Campaigns` named as the
    /// campaign is (a `/` in it shown as `-`; a second campaign of the same
    /// name gets its id added), oldest first.
    fn campaign_folders(&self, mailbox: &str, out: &mut Vec<ListEntry>) {
        let mut campaigns = match self.store.campaigns() {
            Ok(c) => c.into_iter().filter(|c| c.spec.mailbox == mailbox).collect::<Vec<_>>(),
            Err(e) => {
                tracing::warn!(mailbox, error = %e, "cannot list the campaigns");
                return;
            }
        };
        if campaigns.is_empty() {
            return;
        }
        campaigns.sort_by(|a, b| (a.created_at, &a.spec.id).cmp(&(b.created_at, &b.spec.id)));
        out.push(ListEntry { name: format!("{mailbox}{DELIMITER}{CAMPAIGNS}"), folder: None });
        let mut taken = HashSet::new();
        for c in campaigns {
            let mut leaf = campaign_leaf(&c.spec.name);
            if !taken.insert(leaf.to_lowercase()) {
                leaf = format!("{leaf} ({})", c.spec.id);
                taken.insert(leaf.to_lowercase());
            }
            let name = format!("{mailbox}{DELIMITER}{CAMPAIGNS}{DELIMITER}{leaf}");
            out.push(ListEntry {
                name: name.clone(),
                folder: Some(Folder {
                    name,
                    mailbox: mailbox.to_string(),
                    campaign: Some(c.spec.id),
                    ..Default::default()
                }),
            });
        }
    }

    /// A campaign's folder: notice `n` as UID `n`, its rendered bytes (what
    /// was or will be sent), its state as keywords (see
    /// [`crate::campaign::report::keywords`]), `\Seen` for everybody (a
    /// report to look at, not mail to read). The list is held per store
    /// generation: a notice that becomes overdue with no change recorded
    /// shows so at the next change.
    fn campaign_snapshot(&self, f: &Folder, id: &str) -> Result<Snapshot, ViewError> {
        let key = format!("{}\0campaign\0{id}", f.mailbox);
        let stamp = Stamp { generation: self.store.generation(), second: 0 };
        let msgs = match self.metas.cached(&key, stamp, None) {
            Some(m) => m,
            None => {
                let Some(c) = self.store.campaign(id)? else { return Err(ViewError::NotFound) };
                let mut sets = FlagSets::default();
                let mut out = Vec::with_capacity(c.spec.total as usize);
                crate::campaign::report::each_row(&self.store, &c, self.overdue_after, |r| {
                    let m = Msg {
                        hash: BlobHash::parse(&r.notice_sha256),
                        size: r.size,
                        internal_date: c.created_at,
                        modseq: 1,
                        flags: sets.get(crate::campaign::report::keywords(r.state).iter().copied()),
                        source_uid: None,
                        appended: false,
                    };
                    out.push((r.n, m));
                })?;
                self.metas.intern_folder(&key, out.into(), stamp, None)
            }
        };
        let seen = Arc::new(msgs.iter().map(|(u, _)| *u).collect());
        Ok((msgs, seen))
    }

    /// The categories of `mailbox` (folders people created), as (store
    /// name, name under the mailbox), by name.
    pub fn categories(&self, mailbox: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = match self.store.folders(mailbox) {
            Ok(f) => f.into_iter().filter_map(|(sf, st)| st.category.map(|c| (sf, c))).collect(),
            Err(e) => {
                tracing::warn!(mailbox, error = %e, "cannot list the categories");
                Vec::new()
            }
        };
        out.sort_by(|a, b| a.1.cmp(&b.1));
        out
    }

    /// The folder called `name` (INBOX case-insensitively).
    pub fn resolve(&self, name: &str) -> Result<Folder, ViewError> {
        let norm = normalize(name);
        // The folder selected most, found without building the tree (which
        // reads the categories of every mailbox): the tree's first entry.
        if norm == INBOX {
            if let Some(f) = self.inbox() {
                return Ok(f);
            }
        }
        self.tree().into_iter().filter_map(|e| e.folder).find(|f| f.name == norm).ok_or(ViewError::NotFound)
    }

    /// The PEC mailbox a folder name lies under (`prot` for `prot/A/B`),
    /// if the user can see that mailbox.
    pub fn mailbox_of(&self, name: &str) -> Option<String> {
        let (mb, _) = name.split_once(DELIMITER)?;
        self.user.may(mb, Right::Read).then(|| mb.to_string())
    }

    /// Is `name` a mailbox parent (`protocollo`) the user can see?
    pub fn is_parent(&self, name: &str) -> bool {
        self.tree().iter().any(|e| e.folder.is_none() && e.name == name)
    }

    pub fn may(&self, f: &Folder, right: Right) -> bool {
        self.user.may(&f.mailbox, right)
    }

    /// The folder's messages in UID order, and which of them this user has
    /// seen, at the current time.
    pub fn snapshot(&self, f: &Folder) -> Result<Snapshot, ViewError> {
        self.snapshot_at(f, crate::handling::now())
    }

    /// The folder's messages as of `now` (the time decides `$PecOverdue`).
    ///
    /// Stored flags never carry `$Pec*` keywords (STORE refuses them; any
    /// that came in otherwise are dropped here): in `Sent` they are computed
    /// from the message's reconciliation state. The virtual `Undelivered`
    /// folder is the subset of `Sent` whose state `is_undelivered(now)`,
    /// with the same UIDs and the same per-user `\Seen`.
    ///
    /// Known limit of reusing Sent's UIDs: a message that becomes overdue
    /// after a higher-UID one entered Undelivered appears below the
    /// client's UIDNEXT; a session sees it at its next SELECT, and a client
    /// that only fetches UIDs above its last UIDNEXT (mbsync) misses it
    /// until it resyncs. Sent itself, where the state matters, is exact.
    pub fn snapshot_at(&self, f: &Folder, now: DateTime<Utc>) -> Result<Snapshot, ViewError> {
        if f.trash {
            return self.trash_snapshot(f);
        }
        if f.all {
            return self.all_snapshot(f);
        }
        if let Some(id) = &f.campaign {
            return self.campaign_snapshot(f, id);
        }
        let key = self.list_key(f);
        // Read before the index: a change applied meanwhile makes the
        // stamp older than the list, never the other way round. Within one
        // second and one store generation every session gets the same
        // list without reading the index (ten thousand IDLE sessions
        // woken by one new message read it once); the computed keywords
        // may lag the clock by under a second.
        // A folder whose list does not change with the clock is current
        // for as long as the generation is.
        let timely = self.changes_with_time(f);
        let second = if timely { now.timestamp() } else { 0 };
        let stamp = Stamp { generation: self.store.generation(), second };
        // A list of a store folder's own entries (no keyword computed
        // from other records) stays current while the folder's version
        // does: a message archived into another folder or mailbox does
        // not make a million-message folder be read again. Read after the
        // generation and before the list, like the stamp.
        let msgs = match self.metas.cached(&key, stamp, None) {
            // Read at this very stamp (ten thousand sessions woken by one
            // change): no version to read.
            Some(m) => m,
            None => {
                let version = match timely || f.handling.is_some() || f.shows_sent() {
                    true => None,
                    false => Some(
                        self.store
                            .folder(&f.mailbox, f.source())?
                            .map(|st| (st.uidvalidity, st.uidnext, st.exists, st.highest_modseq)),
                    ),
                };
                match self.metas.cached(&key, stamp, version) {
                    Some(m) => m,
                    None => match version.map(|_| self.patched(f, &key)).transpose()?.flatten() {
                        Some((m, v)) => self.metas.intern_folder(&key, m, stamp, Some(v)),
                        None => match version.map(|_| self.lazy_list(f)).transpose()?.flatten() {
                            Some((m, v)) => self.metas.intern_lazy(&key, m, stamp, Some(v)),
                            None => {
                                let m = match &f.handling {
                                    Some(kind) => self.handling_messages(f, kind, now)?,
                                    None => self.folder_messages(f, now)?,
                                };
                                self.metas.intern_folder(&key, m, stamp, version)
                            }
                        },
                    },
                }
            }
        };
        let seen_key = format!("{}\0{key}", self.user.name);
        let seen = self.metas.seen(&seen_key, stamp, || -> Result<UidSet, ViewError> {
            Ok(match &f.handling {
                // `\Seen` is the user's on the INBOX message.
                Some(_) => {
                    let inbox = UidSet::from_sorted(self.store.seen_uids(&self.user.name, &f.mailbox, INBOX)?);
                    msgs.iter()
                        .filter(|(_, m)| m.source_uid.is_some_and(|u| inbox.contains(u)))
                        .map(|(v, _)| *v)
                        .collect()
                }
                None => UidSet::from_sorted(self.store.seen_uids(&self.user.name, &f.mailbox, f.source())?),
            })
        })?;
        Ok((msgs, seen))
    }

    /// Trash: the mailbox's hidden messages by Trash UID (`source_uid`:
    /// the UID each had in the folder it was hidden from), with this
    /// user's `\\Seen` from there.
    fn trash_snapshot(&self, f: &Folder) -> Result<Snapshot, ViewError> {
        let hidden = self.store.hidden_messages(&f.mailbox)?;
        self.gathered(f, hidden.into_iter().filter_map(|(folder, uid, m)| Some((m.trash_uid?, folder, uid, m))))
    }

    /// A virtual folder's snapshot from messages gathered out of other
    /// folders: (its UID here, folder, UID there, metadata), with this
    /// user's `\\Seen` from each message's folder and `source_uid` its UID
    /// there; computed keywords and PEC metadata left out.
    fn gathered(
        &self,
        f: &Folder,
        items: impl Iterator<Item = (u32, String, u32, MessageMeta)>,
    ) -> Result<Snapshot, ViewError> {
        let mut msgs = Vec::new();
        let mut seen = Vec::new();
        let mut seen_in: HashMap<String, UidSet> = HashMap::new();
        let mut sets = FlagSets::default();
        for (shown, folder, uid, mut m) in items {
            let s = match seen_in.get(&folder) {
                Some(s) => s,
                None => {
                    let s = UidSet::from_sorted(self.store.seen_uids(&self.user.name, &f.mailbox, &folder)?);
                    seen_in.entry(folder.clone()).or_insert(s)
                }
            };
            if s.contains(uid) {
                seen.push(shown);
            }
            m.flags.retain(|fl| !is_pec_keyword(fl));
            m.source_uid = Some(uid);
            msgs.push((shown, Msg::from_meta(&m, &mut sets)));
        }
        Ok((Arc::new(msgs.into()), Arc::new(seen.into_iter().collect())))
    }

    /// All: every message of the mailbox once, where it is filed, by All
    /// UID (`source_uid`: its UID in that folder), with this user's
    /// `\\Seen` from there. Keywords are the stored ones (the computed
    /// `$Pec*` show in the message's own folder).
    fn all_snapshot(&self, f: &Folder) -> Result<Snapshot, ViewError> {
        self.gathered(f, self.store.all_messages(&f.mailbox)?.into_iter())
    }

    /// The sent copy, in one of the user's mailboxes, of a message with
    /// these bytes (`hash`) or this (normalised) Message-ID: (mailbox,
    /// Sent's UIDVALIDITY, UID).
    pub fn sent_copy(&self, hash: &str, message_id: Option<&str>) -> Result<Option<(String, u32, u32)>, ViewError> {
        let mailboxes = self.user.visible_mailboxes();
        let found = |mb: &str, uid: u32| -> Result<Option<(String, u32, u32)>, ViewError> {
            let uv = self.store.folder(mb, SENT)?.map(|st| st.uidvalidity).unwrap_or(1);
            Ok(Some((mb.to_string(), uv, uid)))
        };
        for mb in &mailboxes {
            if let Some((folder, uid)) = self.store.find_hash(mb, hash)? {
                if folder == SENT && self.store.message(mb, SENT, uid)?.is_some() {
                    return found(mb, uid);
                }
            }
        }
        let Some(mid) = message_id else { return Ok(None) };
        for mb in &mailboxes {
            for (uid, m) in self.store.messages(mb, SENT)? {
                let key = m.pec_meta().and_then(|p| p.sent.as_ref()).map(|s| s.key.as_str());
                if key == Some(mid) {
                    return found(mb, uid);
                }
            }
        }
        Ok(None)
    }

    /// The UIDs of `f` up to `upto` no session of this user was told
    /// about yet, now told (`\\Recent`).
    pub fn recent_claim(&self, f: &Folder, upto: u32) -> Recent {
        match &self.recent {
            Some(r) => r.claim(&self.user.name, &recent_key(f), upto),
            None => Recent::default(),
        }
    }

    /// The UIDs of `f` that are recent, without telling.
    pub fn recent_peek(&self, f: &Folder) -> Recent {
        match &self.recent {
            Some(r) => r.peek(&self.user.name, &recent_key(f)),
            None => Recent::default(),
        }
    }

    /// Where each Trash UID came from: (folder, UID there).
    pub fn trash_sources(&self, mailbox: &str, trash_uids: &[u32]) -> Result<Vec<(String, u32)>, ViewError> {
        let want: HashSet<u32> = trash_uids.iter().copied().collect();
        Ok(self
            .store
            .hidden_messages(mailbox)?
            .into_iter()
            .filter(|(_, _, m)| m.trash_uid.is_some_and(|t| want.contains(&t)))
            .map(|(folder, uid, _)| (folder, uid))
            .collect())
    }

    /// A store folder's messages (or Undelivered's, from Sent), with the
    /// computed keywords. Stored `$Pec*` keywords are dropped (see
    /// [`View::snapshot_at`]).
    fn folder_messages(&self, f: &Folder, now: DateTime<Utc>) -> Result<Entries, ViewError> {
        let sf = f.source();
        let mut sets = FlagSets::default();
        if f.shows_sent() {
            // Only Sent's keywords need the PEC metadata (its
            // reconciliation key); Sent holds what was sent, not the
            // million receipts.
            let states = self.sent_states(&f.mailbox)?;
            let mut out = Vec::new();
            for (uid, mut m) in self.store.messages(&f.mailbox, sf)? {
                m.flags.retain(|fl| !is_pec_keyword(fl));
                let state = m.pec_meta().and_then(|p| p.sent.as_ref()).and_then(|s| states.get(&s.key));
                if f.store_folder.is_none() && !state.is_some_and(|s| s.is_undelivered(now)) {
                    continue;
                }
                if let Some(s) = state {
                    m.flags.extend(s.keywords(now).into_iter().map(str::to_string));
                    // As new as the last receipt, or the deadline once
                    // it passed (RFC 7162: what changes gets a MODSEQ).
                    let due = s.deadline().filter(|d| *d <= now).map_or(0, time_modseq);
                    m.modseq = m.modseq.max(s.modseq).max(due);
                }
                out.push((uid, Msg::from_meta(&m, &mut sets)));
            }
            return Ok(out.into());
        }
        // Any other folder: read in place from the index, each entry
        // straight into its compact form.
        let mut msgs = self.store.scan_folder(&f.mailbox, sf, FlagSets::default, |sets, b| {
            Msg::from_brief(b, sets, |fl| !is_pec_keyword(fl))
        })?;
        if sf == INBOX {
            let states: HashMap<BlobHash, crate::handling::Handling> =
                self.store.handling_all(&f.mailbox)?.into_iter().map(|(h, s)| (BlobHash::parse(&h), s)).collect();
            if !states.is_empty() {
                for (_, m) in msgs.iter_mut() {
                    if let Some(h) = states.get(&m.hash) {
                        let kw = h.keywords(now);
                        m.flags = sets.get(m.flags.iter().map(String::as_str).chain(kw.iter().copied()));
                        if h.is_overdue(now) {
                            m.modseq = m.modseq.max(h.due.map_or(0, time_modseq));
                        }
                    }
                }
            }
        }
        Ok(msgs.into())
    }

    /// A large store folder's list of its own entries, read in the
    /// background from the index as it is now (see [`Entries::lazy`]),
    /// and the folder version it is at; `None` for a folder whose list
    /// needs more than its entries (Sent's and INBOX's computed keywords)
    /// or that is small enough to read at once.
    fn lazy_list(&self, f: &Folder) -> Result<Option<(Entries, Version)>, ViewError> {
        if !lazy_kind(f) {
            return Ok(None);
        }
        let reader = self.store.folder_reader(&f.mailbox, f.source())?;
        let Some(st) = reader.state() else { return Ok(None) };
        if !self.lazy_size(f, st)? {
            return Ok(None);
        }
        let version = Some((st.uidvalidity, st.uidnext, st.exists, st.highest_modseq));
        Ok(Some((Entries::lazy(reader)?, version)))
    }

    /// Whether a folder of a [`lazy_kind`] is large enough for its list to
    /// be read lazily. INBOX's keywords are computed from its handling
    /// where the mailbox has any.
    fn lazy_size(&self, f: &Folder, st: &FolderState) -> Result<bool, ViewError> {
        Ok(st.exists >= LAZY_FROM && !(f.source() == INBOX && self.store.has_handling(&f.mailbox)?))
    }

    /// Whether opening `f` now reads only its last entries and a few seen
    /// UIDs: a large folder of its own entries, of which no session holds
    /// a list (see [`View::lazy_list`]), and at most [`INLINE_SEEN`] of
    /// them seen by this user. That takes a tenth of a millisecond at any
    /// size, little enough to do in place on the runtime; a list held may
    /// need patching, and a user who has seen a million messages has a
    /// million keys to read (tens of milliseconds), which other sessions
    /// should not wait for.
    pub fn opens_lazily(&self, f: &Folder) -> Result<bool, ViewError> {
        if !lazy_kind(f) || self.metas.latest(&self.list_key(f)).is_some() {
            return Ok(false);
        }
        let Some(st) = self.store.folder(&f.mailbox, f.source())? else { return Ok(false) };
        Ok(self.lazy_size(f, &st)?
            && self.store.seen_uids_at_most(&self.user.name, &f.mailbox, f.source(), INLINE_SEEN)?.is_some())
    }

    /// The key of the list held for `f`: lists are shared by folder; a
    /// handling view's also depends on who looks (Mine, office
    /// membership).
    fn list_key(&self, f: &Folder) -> String {
        match &f.handling {
            Some(kind) => format!("{}\0{kind:?}\0{}", f.mailbox, self.user.name),
            None => format!("{}\0{:?}", f.mailbox, f.store_folder.as_deref()),
        }
    }

    /// A handling view: the INBOX messages whose handling puts them there
    /// for this user, numbered by their view UIDs, with the handling
    /// keywords. Only the states the view can show are read from the index.
    fn handling_messages(&self, f: &Folder, kind: &ViewKind, now: DateTime<Utc>) -> Result<Entries, ViewError> {
        let offices = self.rules.current().offices_of(&self.user.name);
        let offices: Vec<&str> = offices.iter().map(String::as_str).collect();
        let mut msgs = Vec::new();
        let mut sets = FlagSets::default();
        for (hash, h) in self.store.handling_in(&f.mailbox, kind.states())? {
            if !kind.shows(&h, &self.user.name, &offices) {
                continue;
            }
            let Some((folder, uid)) = self.store.find_hash(&f.mailbox, &hash)? else { continue };
            if folder != INBOX {
                continue;
            }
            // Hidden (expunged) from INBOX: gone from the views too.
            let Some(mut m) = self.store.message(&f.mailbox, INBOX, uid)? else { continue };
            m.flags.retain(|fl| !is_pec_keyword(fl));
            m.flags.extend(h.keywords(now).into_iter().map(str::to_string));
            m.source_uid = Some(uid);
            msgs.push((h.vuid, Msg::from_meta(&m, &mut sets)));
        }
        Ok(msgs.into())
    }

    /// The list held for folder `f` (under `key`) brought up to date from
    /// the entries the writer changed since it was read, when the store
    /// still knows which and they are fewer than a quarter of the list
    /// (one new message in a million-message folder: one entry read, not
    /// a million): the list and the folder version it is at.
    fn patched(&self, f: &Folder, key: &str) -> Result<Option<(Entries, Version)>, ViewError> {
        let Some((stamp, old)) = self.metas.latest(key) else { return Ok(None) };
        let mut sets = FlagSets::default();
        let most = old.len() / 4;
        let keep = |fl: &str| !is_pec_keyword(fl);
        let changed = self
            .store
            .folder_changes(&f.mailbox, f.source(), stamp.generation, most, |b| Msg::from_brief(b, &mut sets, keep))?;
        Ok(changed.map(|(st, changes)| {
            let version = st.map(|st| (st.uidvalidity, st.uidnext, st.exists, st.highest_modseq));
            (super::shared::merge(&old, changes), version)
        }))
    }

    /// Whether the folder's list can change with the clock alone (no
    /// change applied): Sent's and Undelivered's `$Pec*` keywords (a
    /// message becomes overdue), the handling views and INBOX's handling
    /// keywords once the mailbox tracks messages.
    pub fn changes_with_time(&self, f: &Folder) -> bool {
        if f.trash || f.all || f.campaign.is_some() {
            return false;
        }
        f.shows_sent()
            || f.handling.is_some()
            || (f.source() == INBOX && self.store.last_view_uid(&f.mailbox).map_or(true, |v| v > 0))
    }

    /// The folder's counters (STATUS).
    pub fn counts(&self, f: &Folder) -> Result<Counts, ViewError> {
        Ok(self.open(f)?.0)
    }

    /// The folder's counters and its snapshot, read once (SELECT).
    /// What SELECT tells of a snapshot (keywords, unseen, newest MODSEQ),
    /// shared by the sessions that hold the same one.
    pub fn facts(&self, snap: &Snapshot) -> super::shared::Facts {
        self.metas.facts(&snap.0, &snap.1)
    }

    pub fn open(&self, f: &Folder) -> Result<(Counts, Snapshot), ViewError> {
        self.open_with_facts(f).map(|(c, s, _)| (c, s))
    }

    /// [`View::open`], and the snapshot's [`View::facts`] it worked out.
    pub fn open_with_facts(&self, f: &Folder) -> Result<(Counts, Snapshot, super::shared::Facts), ViewError> {
        let snap = self.snapshot(f)?;
        let exists = u32::try_from(snap.0.len()).unwrap_or(u32::MAX);
        // The unseen, and the newest MODSEQ, which may be newer than the
        // folder's last record (a receipt, a deadline passed: see
        // `folder_messages`): one walk per list and seen set.
        let facts = self.facts(&snap);
        let (unseen, newest) = (u32::try_from(facts.unseen).unwrap_or(u32::MAX), facts.newest);
        if f.trash {
            // A UIDVALIDITY of its own derived from INBOX's (like the
            // handling views'); UIDs from the fold's Trash counter.
            let uv = self.store.folder(&f.mailbox, INBOX)?.map(|st| st.uidvalidity).unwrap_or(1);
            let counts = Counts {
                uidvalidity: (!uv).wrapping_sub(7).max(1),
                uidnext: self.store.last_trash_uid(&f.mailbox)?.saturating_add(1),
                exists,
                unseen,
                highest_modseq: NOMODSEQ,
            };
            return Ok((counts, snap, facts));
        }
        if f.all {
            let uv = self.store.folder(&f.mailbox, INBOX)?.map(|st| st.uidvalidity).unwrap_or(1);
            let counts = Counts {
                uidvalidity: (!uv).wrapping_sub(11).max(1),
                uidnext: self.store.last_all_uid(&f.mailbox)?.saturating_add(1),
                exists,
                unseen,
                highest_modseq: NOMODSEQ,
            };
            return Ok((counts, snap, facts));
        }
        if let Some(id) = &f.campaign {
            // Notices are numbered once, at creation: the UIDs never
            // change, and the UIDVALIDITY is the campaign id's.
            let uidvalidity =
                id.bytes().fold(2_166_136_261u32, |h, b| (h ^ u32::from(b)).wrapping_mul(16_777_619)) | 1 << 31;
            let total = self.store.campaign(id)?.map_or(0, |c| c.spec.total);
            let counts =
                Counts { uidvalidity, uidnext: total.saturating_add(1), exists, unseen, highest_modseq: NOMODSEQ };
            return Ok((counts, snap, facts));
        }
        if let Some(kind) = &f.handling {
            // Numbered by the mailbox's handling-view UIDs, under a
            // UIDVALIDITY of their own derived from INBOX's.
            let uv = self.store.folder(&f.mailbox, INBOX)?.map(|st| st.uidvalidity).unwrap_or(1);
            let counts = Counts {
                uidvalidity: view_uidvalidity(uv, kind),
                uidnext: self.store.last_view_uid(&f.mailbox)?.saturating_add(1),
                exists,
                unseen,
                highest_modseq: NOMODSEQ,
            };
            return Ok((counts, snap, facts));
        }
        let st = self.store.folder(&f.mailbox, f.source())?.map(|mut st| {
            if f.store_folder.is_none() {
                // Undelivered shows Sent's UIDs under its own UIDVALIDITY:
                // the bitwise complement of Sent's. Sent's is a creation
                // time in seconds (< 2^31 until 2038), so the complement is
                // >= 2^31 and never equals a real folder's UIDVALIDITY.
                st.uidvalidity = (!st.uidvalidity).max(1);
            }
            st
        });
        let counts = match st {
            // Undelivered is a view: messages leave it without a record
            // of its own, which no MODSEQ would tell (RFC 7162 NOMODSEQ).
            Some(st) if f.store_folder.is_none() => Counts {
                uidvalidity: st.uidvalidity,
                uidnext: st.uidnext.max(1),
                exists,
                unseen,
                highest_modseq: NOMODSEQ,
            },
            Some(st) => Counts {
                uidvalidity: st.uidvalidity,
                uidnext: st.uidnext.max(1),
                exists,
                unseen,
                highest_modseq: st.highest_modseq.max(newest),
            },
            // Not created yet (nothing archived there): an empty folder
            // whose UIDVALIDITY changes once, harmlessly, when it is created.
            None => Counts { uidvalidity: 1, uidnext: 1, exists: 0, unseen: 0, highest_modseq: 1 },
        };
        Ok((counts, snap, facts))
    }
}

/// A handling view's UIDVALIDITY: INBOX's complemented (>= 2^31 until
/// 2038, like Undelivered's), less a number per view, so no two folders
/// share one.
fn view_uidvalidity(inbox: u32, kind: &ViewKind) -> u32 {
    let salt = match kind {
        ViewKind::ToHandle => 1,
        ViewKind::Mine => 2,
        ViewKind::Done => 3,
        ViewKind::Office(o) => 16 + o.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b.into())) % 65_536,
    };
    (!inbox).wrapping_sub(salt).max(1)
}

/// Whose UIDs a `\\Recent` mark counts: a category by its store name
/// (never given out twice: one deleted and created again under the same
/// name starts from UID 1 and its messages are recent again).
fn recent_key(f: &Folder) -> String {
    match (&f.store_folder, f.category) {
        (Some(sf), true) => format!("{}\0{sf}", f.mailbox),
        _ => format!("{}\0{}", f.mailbox, f.name),
    }
}

/// Names under a mailbox that are the gateway's own: a category may not
/// be called so, nor live under one (compared without case: `inbox`,
/// `sent`).
pub const RESERVED: [&str; 14] = [
    "INBOX",
    "Sent",
    "Receipts",
    "Anomalies",
    "Undelivered",
    "Trash",
    "To handle",
    "Mine",
    "Offices",
    "Done",
    "All",
    "Drafts",
    "Templates",
    "Campaigns",
];

/// A campaign's folder name under `Campaigns`: its name, with what a
/// folder name cannot hold (the delimiter, `*`, `%`, control characters)
/// as `-`, trimmed, at most 100 characters.
fn campaign_leaf(name: &str) -> String {
    let leaf: String = name
        .chars()
        .map(|c| if c == DELIMITER || c == '*' || c == '%' || c.is_control() { '-' } else { c })
        .take(100)
        .collect();
    match leaf.trim() {
        "" => "-".into(),
        t => t.to_string(),
    }
}

/// Why `name` (under a mailbox) cannot be a category, if it cannot.
pub fn category_name_problem(name: &str) -> Option<String> {
    let first = name.split(DELIMITER).next().unwrap_or("");
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(first)) {
        return Some(format!("{first} is one of the gateway's own folders"));
    }
    if name.is_empty() || name.split(DELIMITER).any(|p| p.is_empty() || p.trim() != p) {
        return Some("empty or space-padded folder name parts are not allowed".into());
    }
    if name.chars().any(|c| c.is_control() || c == '*' || c == '%') {
        return Some("folder names may not contain control characters, * or %".into());
    }
    if name.len() > 200 || name.split(DELIMITER).count() > 8 {
        return Some("folder names are at most 200 bytes and 8 levels deep".into());
    }
    None
}

/// The most seen UIDs a SELECT reads in place on the runtime (see
/// [`View::opens_lazily`]).
const INLINE_SEEN: usize = if cfg!(test) { 4 } else { 1024 };

/// Whether a folder's list is made of its own entries alone (no keyword
/// computed from other records, not gathered from other folders), so that
/// it can be read lazily ([`View::lazy_list`]).
fn lazy_kind(f: &Folder) -> bool {
    f.store_folder.is_some() && f.handling.is_none() && !f.shows_sent() && !f.trash && !f.all && f.campaign.is_none()
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
