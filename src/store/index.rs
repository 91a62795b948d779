//! The index in sled: derived from the journal, rebuilt from it at will.
//!
//! Trees (keys use `\0` between parts; aliases and folder names never
//! contain it):
//!
//! | tree | key | value |
//! |---|---|---|
//! | `meta` | `applied_seq` | last journal seq applied (u64 BE) |
//! | `folders` | mailbox, folder | [`FolderState`] |
//! | `msgs` | mailbox, folder, uid (u32 BE) | [`MessageMeta`] |
//! | `hashes` | mailbox, hash | folder, uid (de-duplication) |
//! | `provider` | mailbox, provider folder, uidvalidity, uid | [`ProviderEntry`]: archived, still on the provider |
//! | `sync` | mailbox, provider folder | provider UIDVALIDITY (u32 BE) |
//! | `seen` | user, mailbox, folder, uid | empty: `user` has seen it (`\Seen` is per user) |
//! | `seen_by` | mailbox, folder, uid | users who have seen it (JSON list; so a move carries it in one read) |
//! | `hidden` | mailbox, folder, uid | [`MessageMeta`] of a message a client expunged (the blob stays) |
//! | `sent` | mailbox, Message-ID | reconciliation state of a sent message |
//! | `handling` | mailbox, hash | [`Handling`] of a tracked incoming message |
//! | `hstate` | mailbox, state code, view UID (u32 BE) | hash: the tracked messages by state, in view-UID order (views scan one state) |
//! | `meta` | `vuid`, mailbox | last handling-view UID of the mailbox (u32 BE) |
//!
//! Each journal record is applied in one sled transaction together with
//! `applied_seq`, so a replay after a crash never applies a record twice.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::record::Event;
use crate::handling::{Handling, State};
use crate::pec::meta::{PecMeta, StoredPec};
use crate::pec::reconcile::{key_of, Event as ReconcileEvent, SentMessage};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderState {
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highest_modseq: u64,
    /// Messages in the folder.
    pub exists: u64,
    /// Their total size in bytes.
    pub size: u64,
    /// A category's name under its mailbox (see `Event::FolderCreated`);
    /// `None` for the gateway's own folders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageMeta {
    pub hash: String,
    pub size: u64,
    pub internal_date: DateTime<Utc>,
    #[serde(default)]
    pub flags: Vec<String>,
    pub modseq: u64,
    /// When it entered the archive (retention counts from here).
    pub archived: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pec: Option<StoredPec>,
    /// Not stored: in a virtual folder that numbers messages its own way
    /// (the handling views), the message's UID in the folder that holds it.
    #[serde(skip)]
    pub source_uid: Option<u32>,
    /// Only in the `hidden` tree: the message's UID in the mailbox's
    /// virtual `Trash` (given in the order messages were hidden).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trash_uid: Option<u32>,
    /// Archived by a client's APPEND into a category: not a message the
    /// provider delivered nor one pecgate sent, so whoever may file may
    /// also take it away (hide it) without the delete right.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub appended: bool,
    /// Its UID in the mailbox's virtual `All` (given in the order
    /// messages entered the archive; kept through moves and hiding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_uid: Option<u32>,
    /// A category's label of a message filed elsewhere (a COPY, or an
    /// APPEND of bytes already held): `All` shows the message once, where
    /// it is filed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub label: bool,
}

impl MessageMeta {
    /// Its PEC metadata, if it has metadata this version understands.
    pub fn pec_meta(&self) -> Option<&PecMeta> {
        self.pec.as_ref().and_then(StoredPec::meta)
    }
}

/// A provider message that is archived and (as far as we know) still on the
/// provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderEntry {
    pub hash: String,
    pub size: u64,
    pub internal_date: DateTime<Utc>,
}

/// Fold an archived message into the reconciliation state: our sent copy
/// starts (or completes) its entry, a receipt updates the entry it refers
/// to. Receipts may come first, twice, or for a message never seen sent:
/// `SentMessage::apply` is order-independent and idempotent.
fn reconcile_archived(
    sent: &sled::transaction::TransactionalTree,
    mailbox: &str,
    m: &PecMeta,
    internal_date: DateTime<Utc>,
) -> TxResult<()> {
    let (k, ev) = match (&m.sent, key_of(&m.classification)) {
        (Some(s), _) => (s.key.clone(), ReconcileEvent::Submitted { recipients: s.recipients.clone(), at: s.at }),
        (None, Some(k)) if m.classification.is_receipt() => {
            (k.to_string(), ReconcileEvent::Receipt(m.classification.clone(), internal_date))
        }
        _ => return Ok(()),
    };
    let tk = key(&[mailbox.as_bytes(), k.as_bytes()]);
    let mut state = match sent.get(&tk)? {
        Some(v) => unjson::<SentMessage>(&v).map_err(ConflictableTransactionError::Abort)?,
        None => SentMessage::new(&k),
    };
    // An event that does not apply (a receipt without a usable reference)
    // leaves the state as it was; the message itself is archived anyway.
    if state.apply(&ev).is_ok() {
        sent.insert(tk, json(&state))?;
    }
    Ok(())
}

/// The `category` meta value: (last number, last UIDVALIDITY).
fn last_category(v: &[u8]) -> (u32, u32) {
    (be32(&v[..v.len().min(4)]), if v.len() >= 8 { be32(&v[4..8]) } else { 0 })
}

/// A `hashes` value: (folder, UID).
fn split_loc(v: &[u8]) -> (String, u32) {
    let cut = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    (String::from_utf8_lossy(&v[..cut]).into_owned(), be32(&v[(cut + 1).min(v.len())..]))
}

pub fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

fn prefix(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = key(parts);
    k.push(0);
    k
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_else(|e| unreachable!("index values serialise: {e}"))
}

fn unjson<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, sled::Error> {
    serde_json::from_slice(b).map_err(|e| sled::Error::Unsupported(format!("corrupt index value: {e}")))
}

fn be32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    let n = b.len().min(4);
    a[4 - n..].copy_from_slice(&b[b.len() - n..]);
    u32::from_be_bytes(a)
}

fn get_json<T: for<'de> Deserialize<'de>>(
    t: &sled::transaction::TransactionalTree,
    k: &[u8],
) -> TxResult<Option<T>> {
    match t.get(k)? {
        Some(v) => Ok(Some(unjson(&v).map_err(ConflictableTransactionError::Abort)?)),
        None => Ok(None),
    }
}

/// Store a message's handling and keep the by-state tree and the
/// mailbox's last view UID in step.
fn set_handling(
    meta: &sled::transaction::TransactionalTree,
    handling: &sled::transaction::TransactionalTree,
    hstate: &sled::transaction::TransactionalTree,
    mailbox: &str,
    hash: &str,
    old: Option<&Handling>,
    h: &Handling,
) -> TxResult<()> {
    if let Some(o) = old {
        hstate.remove(key(&[mailbox.as_bytes(), &[o.state.code()], &o.vuid.to_be_bytes()]))?;
    }
    hstate.insert(key(&[mailbox.as_bytes(), &[h.state.code()], &h.vuid.to_be_bytes()]), hash.as_bytes())?;
    handling.insert(key(&[mailbox.as_bytes(), hash.as_bytes()]), json(h))?;
    let vk = key(&[b"vuid", mailbox.as_bytes()]);
    let last = meta.get(&vk)?.map(|v| be32(&v)).unwrap_or(0);
    if h.vuid > last {
        meta.insert(vk, &h.vuid.to_be_bytes())?;
    }
    Ok(())
}

fn set_applied(meta: &sled::transaction::TransactionalTree, seq: u64) -> TxResult<()> {
    meta.insert("applied_seq", &seq.to_be_bytes())?;
    Ok(())
}

/// Every index entry as (tree, key, value), for comparing two indexes.
pub type Dump = Vec<(String, Vec<u8>, Vec<u8>)>;

pub struct Index {
    db: sled::Db,
    meta: sled::Tree,
    folders: sled::Tree,
    msgs: sled::Tree,
    hashes: sled::Tree,
    provider: sled::Tree,
    sync: sled::Tree,
    seen: sled::Tree,
    seen_by: sled::Tree,
    hidden: sled::Tree,
    /// Reconciliation state per sent message: (mailbox, Message-ID) →
    /// `pec::reconcile::SentMessage`, folded from the archived sent copies
    /// and receipts.
    sent: sled::Tree,
    handling: sled::Tree,
    hstate: sled::Tree,
    /// Data derived from blobs (search fields), by (kind, hash). Not from
    /// the journal: blobs never change, so an entry never goes stale, and
    /// a missing one is derived again; a rebuild starts it empty and
    /// [`Index::dump`] leaves it out.
    derived: sled::Tree,
}

/// The index format this code writes. 2: hidden messages carry their
/// Trash UID. 3: messages carry their All UID, labels are marked.
pub const FORMAT: u32 = 3;

type TxResult<T> = Result<T, ConflictableTransactionError<sled::Error>>;

impl Index {
    pub fn open(path: &Path) -> Result<Index, sled::Error> {
        let db = sled::Config::new().path(path).open()?;
        Ok(Index {
            meta: db.open_tree("meta")?,
            folders: db.open_tree("folders")?,
            msgs: db.open_tree("msgs")?,
            hashes: db.open_tree("hashes")?,
            provider: db.open_tree("provider")?,
            sync: db.open_tree("sync")?,
            seen: db.open_tree("seen")?,
            seen_by: db.open_tree("seen_by")?,
            hidden: db.open_tree("hidden")?,
            sent: db.open_tree("sent")?,
            handling: db.open_tree("handling")?,
            hstate: db.open_tree("hstate")?,
            derived: db.open_tree("derived")?,
            db,
        })
    }

    pub fn applied_seq(&self) -> Result<u64, sled::Error> {
        Ok(self
            .meta
            .get("applied_seq")?
            .map(|v| {
                let mut a = [0u8; 8];
                let n = v.len().min(8);
                a[8 - n..].copy_from_slice(&v[..n]);
                u64::from_be_bytes(a)
            })
            .unwrap_or(0))
    }

    /// Make everything applied so far durable (sled's own fsync). Called
    /// before anything irreversible depends on the index, such as a provider
    /// delete.
    pub fn flush(&self) -> Result<(), sled::Error> {
        self.db.flush().map(|_| ())
    }

    /// Apply one journal record's event, atomically with `applied_seq`.
    /// Records at or below `applied_seq` are skipped (replay is idempotent).
    pub fn apply(&self, seq: u64, time: DateTime<Utc>, event: &Event) -> Result<(), sled::Error> {
        if let Event::Archived { pec: Some(p), mailbox, folder, uid, .. } = event {
            if let Some(why) = p.unrecognised_because() {
                tracing::warn!(
                    seq, mailbox = %mailbox, folder = %folder, uid, error = %why,
                    "journal record: PEC metadata not understood; kept as written, the message counts as without"
                );
            }
        }
        let trees = (
            &self.meta,
            &self.folders,
            &self.msgs,
            &self.hashes,
            &self.provider,
            &self.sync,
            &self.seen,
            &self.seen_by,
            &self.hidden,
            &self.sent,
            &self.handling,
            &self.hstate,
        );
        let r: Result<(), TransactionError<sled::Error>> = trees.transaction(
            |(meta, folders, msgs, hashes, provider, sync, seen, seen_by, hidden, sent, handling, hstate)| -> TxResult<()> {
                let applied = meta
                    .get("applied_seq")?
                    .map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])))
                    .unwrap_or(0);
                if seq <= applied {
                    return Ok(());
                }
                match event {
                    Event::None => {}
                    Event::FolderCreated { mailbox, folder, uidvalidity, category } => {
                        let k = key(&[mailbox.as_bytes(), folder.as_bytes()]);
                        if folders.get(&k)?.is_none() {
                            let st = FolderState {
                                uidvalidity: *uidvalidity,
                                uidnext: 1,
                                highest_modseq: 1,
                                exists: 0,
                                size: 0,
                                category: category.clone(),
                            };
                            folders.insert(k, json(&st))?;
                        }
                        if category.is_some() {
                            // Category store names and UIDVALIDITYs are
                            // never given out twice, deleted ones included.
                            let ck = key(&[b"category", mailbox.as_bytes()]);
                            let (n0, uv0) = meta.get(&ck)?.map(|v| last_category(&v)).unwrap_or((0, 0));
                            let n = folder.strip_prefix('#').and_then(|n| n.parse::<u32>().ok()).unwrap_or(0);
                            let mut v = n0.max(n).to_be_bytes().to_vec();
                            v.extend_from_slice(&uv0.max(*uidvalidity).to_be_bytes());
                            meta.insert(ck, v)?;
                        }
                    }
                    Event::FolderRenamed { mailbox, renames } => {
                        for (folder, name) in renames {
                            let k = key(&[mailbox.as_bytes(), folder.as_bytes()]);
                            if let Some(mut st) = get_json::<FolderState>(folders, &k)? {
                                st.category = Some(name.clone());
                                folders.insert(k, json(&st))?;
                            }
                        }
                    }
                    Event::FolderDeleted { mailbox, folder } => {
                        folders.remove(key(&[mailbox.as_bytes(), folder.as_bytes()]))?;
                    }
                    Event::Copied { mailbox, from, to, copies } => {
                        let tk = key(&[mailbox.as_bytes(), to.as_bytes()]);
                        let Some(mut ts) = get_json::<FolderState>(folders, &tk)? else {
                            return Err(ConflictableTransactionError::Abort(sled::Error::Unsupported(format!(
                                "record {seq}: copy into {mailbox}/{to}: the folder does not exist"
                            ))));
                        };
                        for (old, new) in copies {
                            let o = old.to_be_bytes();
                            let Some(mut m) = get_json::<MessageMeta>(msgs, &key(&[mailbox.as_bytes(), from.as_bytes(), &o]))? else {
                                continue;
                            };
                            let n = new.to_be_bytes();
                            ts.exists += 1;
                            ts.size += m.size;
                            ts.highest_modseq += 1;
                            ts.uidnext = ts.uidnext.max(new + 1);
                            m.modseq = ts.highest_modseq;
                            m.label = true;
                            msgs.insert(key(&[mailbox.as_bytes(), to.as_bytes(), &n]), json(&m))?;
                            // Every user's \Seen comes along (a copy keeps its flags).
                            if let Some(users) = get_json::<Vec<String>>(seen_by, &key(&[mailbox.as_bytes(), from.as_bytes(), &o]))? {
                                for user in &users {
                                    seen.insert(key(&[user.as_bytes(), mailbox.as_bytes(), to.as_bytes(), &n]), &[])?;
                                }
                                seen_by.insert(key(&[mailbox.as_bytes(), to.as_bytes(), &n]), json(&users))?;
                            }
                        }
                        folders.insert(tk, json(&ts))?;
                    }
                    Event::Labeled { mailbox, folder, uid, hash, size, internal_date, flags } => {
                        let fk = key(&[mailbox.as_bytes(), folder.as_bytes()]);
                        let Some(mut st) = get_json::<FolderState>(folders, &fk)? else {
                            return Err(ConflictableTransactionError::Abort(sled::Error::Unsupported(format!(
                                "record {seq}: label in {mailbox}/{folder}: the folder does not exist"
                            ))));
                        };
                        // The PEC metadata and archive time are the filed
                        // message's (wherever it is, hidden included).
                        let home = match hashes.get(key(&[mailbox.as_bytes(), hash.as_bytes()]))? {
                            Some(loc) => {
                                let (f, u) = split_loc(&loc);
                                let k = key(&[mailbox.as_bytes(), f.as_bytes(), &u.to_be_bytes()]);
                                match get_json::<MessageMeta>(msgs, &k)? {
                                    Some(m) => Some(m),
                                    None => get_json::<MessageMeta>(hidden, &k)?,
                                }
                            }
                            None => None,
                        };
                        st.exists += 1;
                        st.size += size;
                        st.highest_modseq += 1;
                        st.uidnext = st.uidnext.max(uid + 1);
                        let m = MessageMeta {
                            hash: hash.clone(),
                            size: *size,
                            internal_date: *internal_date,
                            flags: flags.clone(),
                            modseq: st.highest_modseq,
                            archived: home.as_ref().map(|h| h.archived).unwrap_or(time),
                            appended: home.as_ref().is_none_or(|h| h.appended),
                            all_uid: home.as_ref().and_then(|h| h.all_uid),
                            label: true,
                            pec: home.and_then(|h| h.pec),
                            source_uid: None,
                            trash_uid: None,
                        };
                        msgs.insert(key(&[mailbox.as_bytes(), folder.as_bytes(), &uid.to_be_bytes()]), json(&m))?;
                        folders.insert(fk, json(&st))?;
                    }
                    Event::Unlabeled { mailbox, folder, uids, .. } | Event::Purged { mailbox, folder, uids, .. } => {
                        let fk = key(&[mailbox.as_bytes(), folder.as_bytes()]);
                        if let Some(mut st) = get_json::<FolderState>(folders, &fk)? {
                            for uid in uids {
                                let u = uid.to_be_bytes();
                                let Some(v) = msgs.remove(key(&[mailbox.as_bytes(), folder.as_bytes(), &u]))? else { continue };
                                let m: MessageMeta = unjson(&v).map_err(ConflictableTransactionError::Abort)?;
                                st.exists = st.exists.saturating_sub(1);
                                st.size = st.size.saturating_sub(m.size);
                                st.highest_modseq += 1;
                                // A purge may take the place a message is
                                // filed at: the mailbox no longer holds it.
                                let hk = key(&[mailbox.as_bytes(), m.hash.as_bytes()]);
                                if hashes.get(&hk)?.is_some_and(|loc| split_loc(&loc) == (folder.clone(), *uid)) {
                                    hashes.remove(hk)?;
                                }
                                let k2 = key(&[mailbox.as_bytes(), folder.as_bytes(), &u]);
                                if let Some(users) = get_json::<Vec<String>>(seen_by, &k2)? {
                                    seen_by.remove(k2)?;
                                    for user in &users {
                                        seen.remove(key(&[user.as_bytes(), mailbox.as_bytes(), folder.as_bytes(), &u]))?;
                                    }
                                }
                            }
                            folders.insert(fk, json(&st))?;
                        }
                    }
                    Event::Archived {
                        mailbox,
                        folder,
                        uid,
                        hash,
                        size,
                        internal_date,
                        flags,
                        provider: pref,
                        duplicate,
                        pec,
                        handling: routing,
                        view_uid,
                    } => {
                        if let (false, Some(r)) = (duplicate, routing) {
                            let mut h = Handling::open(r, "system", time);
                            h.vuid = view_uid.unwrap_or(0);
                            set_handling(meta, handling, hstate, mailbox, hash, None, &h)?;
                        }
                        if !duplicate {
                            if let Some(m) = pec.as_ref().and_then(StoredPec::meta) {
                                reconcile_archived(sent, mailbox, m, *internal_date)?;
                            }
                            let fk = key(&[mailbox.as_bytes(), folder.as_bytes()]);
                            let mut st: FolderState = match folders.get(&fk)? {
                                Some(v) => unjson(&v).map_err(ConflictableTransactionError::Abort)?,
                                None => {
                                    return Err(ConflictableTransactionError::Abort(sled::Error::Unsupported(
                                        format!("record {seq}: folder {mailbox}/{folder} does not exist"),
                                    )))
                                }
                            };
                            st.highest_modseq += 1;
                            st.uidnext = st.uidnext.max(uid + 1);
                            st.exists += 1;
                            st.size += size;
                            let meta_v = MessageMeta {
                                hash: hash.clone(),
                                size: *size,
                                internal_date: *internal_date,
                                flags: flags.clone(),
                                modseq: st.highest_modseq,
                                archived: time,
                                pec: pec.clone(),
                                source_uid: None,
                                trash_uid: None,
                                appended: st.category.is_some(),
                                all_uid: Some({
                                    // Numbered in the virtual All in the
                                    // order of archiving (a fold over the
                                    // journal, like Trash).
                                    let ak = key(&[b"all", mailbox.as_bytes()]);
                                    let a = meta.get(&ak)?.map(|v| be32(&v)).unwrap_or(0) + 1;
                                    meta.insert(ak, &a.to_be_bytes())?;
                                    a
                                }),
                                label: false,
                            };
                            folders.insert(fk, json(&st))?;
                            msgs.insert(
                                key(&[mailbox.as_bytes(), folder.as_bytes(), &uid.to_be_bytes()]),
                                json(&meta_v),
                            )?;
                            hashes.insert(
                                key(&[mailbox.as_bytes(), hash.as_bytes()]),
                                key(&[folder.as_bytes(), &uid.to_be_bytes()]),
                            )?;
                        }
                        if let Some(p) = pref {
                            provider.insert(
                                key(&[
                                    mailbox.as_bytes(),
                                    p.folder.as_bytes(),
                                    &p.uidvalidity.to_be_bytes(),
                                    &p.uid.to_be_bytes(),
                                ]),
                                json(&ProviderEntry { hash: hash.clone(), size: *size, internal_date: *internal_date }),
                            )?;
                            sync.insert(key(&[mailbox.as_bytes(), p.folder.as_bytes()]), &p.uidvalidity.to_be_bytes())?;
                        }
                    }
                    Event::ProviderDeleted { mailbox, folder, uidvalidity, uids, .. } => {
                        for uid in uids {
                            provider.remove(key(&[
                                mailbox.as_bytes(),
                                folder.as_bytes(),
                                &uidvalidity.to_be_bytes(),
                                &uid.to_be_bytes(),
                            ]))?;
                        }
                    }
                    Event::ProviderReset { mailbox, folder, new_uidvalidity, .. } => {
                        // Provider entries under the old UIDVALIDITY are
                        // removed by the caller's scan (they are keyed by
                        // UIDVALIDITY, so they no longer match anything).
                        sync.insert(key(&[mailbox.as_bytes(), folder.as_bytes()]), &new_uidvalidity.to_be_bytes())?;
                    }
                    Event::FlagsChanged { mailbox, folder, uids, op, flags } => {
                        let fk = key(&[mailbox.as_bytes(), folder.as_bytes()]);
                        let Some(mut st) = get_json::<FolderState>(folders, &fk)? else {
                            return set_applied(meta, seq);
                        };
                        for uid in uids {
                            let mk = key(&[mailbox.as_bytes(), folder.as_bytes(), &uid.to_be_bytes()]);
                            let Some(mut m) = get_json::<MessageMeta>(msgs, &mk)? else { continue };
                            let new = op.apply(&m.flags, flags);
                            if new != m.flags {
                                st.highest_modseq += 1;
                                m.flags = new;
                                m.modseq = st.highest_modseq;
                                msgs.insert(mk, json(&m))?;
                            }
                        }
                        folders.insert(fk, json(&st))?;
                    }
                    Event::SeenChanged { user, mailbox, folder, uids, seen: on } => {
                        for uid in uids {
                            let u = uid.to_be_bytes();
                            let k1 = key(&[user.as_bytes(), mailbox.as_bytes(), folder.as_bytes(), &u]);
                            let k2 = key(&[mailbox.as_bytes(), folder.as_bytes(), &u]);
                            let mut users: Vec<String> = get_json(seen_by, &k2)?.unwrap_or_default();
                            users.retain(|x| x != user);
                            if *on {
                                seen.insert(k1, &[])?;
                                users.push(user.clone());
                            } else {
                                seen.remove(k1)?;
                            }
                            if users.is_empty() {
                                seen_by.remove(k2)?;
                            } else {
                                seen_by.insert(k2, json(&users))?;
                            }
                        }
                    }
                    Event::Hidden { mailbox, folder, uids, .. } => {
                        let fk = key(&[mailbox.as_bytes(), folder.as_bytes()]);
                        if let Some(mut st) = get_json::<FolderState>(folders, &fk)? {
                            for uid in uids {
                                let mk = key(&[mailbox.as_bytes(), folder.as_bytes(), &uid.to_be_bytes()]);
                                if let Some(v) = msgs.remove(mk.clone())? {
                                    let m: MessageMeta = unjson(&v).map_err(ConflictableTransactionError::Abort)?;
                                    st.exists = st.exists.saturating_sub(1);
                                    st.size = st.size.saturating_sub(m.size);
                                    st.highest_modseq += 1;
                                    // Numbered in the virtual Trash in the
                                    // order of hiding: a fold over the
                                    // journal, so a rebuild numbers alike.
                                    let tk = key(&[b"trash", mailbox.as_bytes()]);
                                    let t = meta.get(&tk)?.map(|v| be32(&v)).unwrap_or(0) + 1;
                                    meta.insert(tk, &t.to_be_bytes())?;
                                    let mut m = m;
                                    m.trash_uid = Some(t);
                                    // The hashes entry stays: the provider copy
                                    // (if any) is recognised, not re-filed.
                                    hidden.insert(mk, json(&m))?;
                                }
                            }
                            folders.insert(fk, json(&st))?;
                        }
                    }
                    Event::Unhidden { mailbox, folder, moves } => {
                        let fk = key(&[mailbox.as_bytes(), folder.as_bytes()]);
                        let Some(mut st) = get_json::<FolderState>(folders, &fk)? else {
                            return Err(ConflictableTransactionError::Abort(sled::Error::Unsupported(format!(
                                "record {seq}: unhide into {mailbox}/{folder}: the folder does not exist"
                            ))));
                        };
                        for (old, new) in moves {
                            let hk = key(&[mailbox.as_bytes(), folder.as_bytes(), &old.to_be_bytes()]);
                            let Some(v) = hidden.remove(hk)? else { continue };
                            let mut m: MessageMeta = unjson(&v).map_err(ConflictableTransactionError::Abort)?;
                            m.trash_uid = None;
                            st.exists += 1;
                            st.size += m.size;
                            st.highest_modseq += 1;
                            st.uidnext = st.uidnext.max(new + 1);
                            m.modseq = st.highest_modseq;
                            msgs.insert(key(&[mailbox.as_bytes(), folder.as_bytes(), &new.to_be_bytes()]), json(&m))?;
                            hashes.insert(
                                key(&[mailbox.as_bytes(), m.hash.as_bytes()]),
                                key(&[folder.as_bytes(), &new.to_be_bytes()]),
                            )?;
                        }
                        folders.insert(fk, json(&st))?;
                    }
                    Event::Moved { mailbox, from, to, moves } => {
                        let fk = key(&[mailbox.as_bytes(), from.as_bytes()]);
                        let tk = key(&[mailbox.as_bytes(), to.as_bytes()]);
                        let (Some(mut fs), Some(mut ts)) =
                            (get_json::<FolderState>(folders, &fk)?, get_json::<FolderState>(folders, &tk)?)
                        else {
                            return Err(ConflictableTransactionError::Abort(sled::Error::Unsupported(format!(
                                "record {seq}: move between {mailbox}/{from} and {mailbox}/{to}: a folder does not exist"
                            ))));
                        };
                        let before = (fs.exists, fs.size);
                        for (old, new) in moves {
                            let ok = key(&[mailbox.as_bytes(), from.as_bytes(), &old.to_be_bytes()]);
                            let Some(v) = msgs.remove(ok)? else { continue };
                            let mut m: MessageMeta = unjson(&v).map_err(ConflictableTransactionError::Abort)?;
                            fs.exists = fs.exists.saturating_sub(1);
                            fs.size = fs.size.saturating_sub(m.size);
                            fs.highest_modseq += 1;
                            ts.exists += 1;
                            ts.size += m.size;
                            ts.highest_modseq += 1;
                            ts.uidnext = ts.uidnext.max(new + 1);
                            m.modseq = ts.highest_modseq;
                            msgs.insert(key(&[mailbox.as_bytes(), to.as_bytes(), &new.to_be_bytes()]), json(&m))?;
                            // Where the message is filed moves with it; a
                            // category's label moving elsewhere leaves it.
                            let hk = key(&[mailbox.as_bytes(), m.hash.as_bytes()]);
                            let filed_here = hashes.get(&hk)?.is_none_or(|loc| split_loc(&loc) == (from.clone(), *old));
                            if filed_here {
                                hashes.insert(hk, key(&[to.as_bytes(), &new.to_be_bytes()]))?;
                            }
                            // Carry every user's \\Seen along.
                            let (o, n) = (old.to_be_bytes(), new.to_be_bytes());
                            let ok2 = key(&[mailbox.as_bytes(), from.as_bytes(), &o]);
                            if let Some(users) = get_json::<Vec<String>>(seen_by, &ok2)? {
                                seen_by.remove(ok2)?;
                                for user in &users {
                                    seen.remove(key(&[user.as_bytes(), mailbox.as_bytes(), from.as_bytes(), &o]))?;
                                    seen.insert(key(&[user.as_bytes(), mailbox.as_bytes(), to.as_bytes(), &n]), &[])?;
                                }
                                seen_by.insert(key(&[mailbox.as_bytes(), to.as_bytes(), &n]), json(&users))?;
                            }
                        }
                        if from == to {
                            // Into the folder itself: new UIDs, the same
                            // messages (one state, read twice above).
                            (ts.exists, ts.size) = before;
                        }
                        if from != to {
                            folders.insert(fk, json(&fs))?;
                        }
                        folders.insert(tk, json(&ts))?;
                    }
                    Event::Handled { mailbox, transition, items } => {
                        for i in items {
                            let k = key(&[mailbox.as_bytes(), i.hash.as_bytes()]);
                            let cur: Option<Handling> = get_json(handling, &k)?;
                            let mut h = Handling::apply(cur.as_ref(), transition, time);
                            h.vuid = i.vuid;
                            set_handling(meta, handling, hstate, mailbox, &i.hash, cur.as_ref(), &h)?;
                            // Its computed keywords changed: a new MODSEQ.
                            let fk = key(&[mailbox.as_bytes(), i.folder.as_bytes()]);
                            let mk = key(&[mailbox.as_bytes(), i.folder.as_bytes(), &i.uid.to_be_bytes()]);
                            if let (Some(mut st), Some(mut m)) =
                                (get_json::<FolderState>(folders, &fk)?, get_json::<MessageMeta>(msgs, &mk)?)
                            {
                                st.highest_modseq += 1;
                                m.modseq = st.highest_modseq;
                                folders.insert(fk, json(&st))?;
                                msgs.insert(mk, json(&m))?;
                            }
                        }
                    }
                }
                set_applied(meta, seq)?;
                Ok(())
            },
        );
        r.map_err(|e| match e {
            TransactionError::Abort(e) | TransactionError::Storage(e) => e,
        })
    }

    pub fn folder(&self, mailbox: &str, folder: &str) -> Result<Option<FolderState>, sled::Error> {
        match self.folders.get(key(&[mailbox.as_bytes(), folder.as_bytes()]))? {
            Some(v) => Ok(Some(unjson(&v)?)),
            None => Ok(None),
        }
    }

    /// Every folder of `mailbox` with its state.
    pub fn folders(&self, mailbox: &str) -> Result<Vec<(String, FolderState)>, sled::Error> {
        let mut out = Vec::new();
        for kv in self.folders.scan_prefix(prefix(&[mailbox.as_bytes()])) {
            let (k, v) = kv?;
            let name = String::from_utf8_lossy(&k[mailbox.len() + 1..]).into_owned();
            out.push((name, unjson(&v)?));
        }
        Ok(out)
    }

    /// Every mailbox that has folders.
    pub fn mailboxes(&self) -> Result<Vec<String>, sled::Error> {
        let mut out: Vec<String> = Vec::new();
        for kv in self.folders.iter() {
            let (k, _) = kv?;
            let m = k.split(|b| *b == 0).next().unwrap_or_default();
            let m = String::from_utf8_lossy(m).into_owned();
            if out.last() != Some(&m) {
                out.push(m);
            }
        }
        Ok(out)
    }

    pub fn messages(&self, mailbox: &str, folder: &str) -> Result<Vec<(u32, MessageMeta)>, sled::Error> {
        let p = prefix(&[mailbox.as_bytes(), folder.as_bytes()]);
        let mut out = Vec::new();
        for kv in self.msgs.scan_prefix(&p) {
            let (k, v) = kv?;
            out.push((be32(&k[p.len()..]), unjson(&v)?));
        }
        Ok(out)
    }

    pub fn message(&self, mailbox: &str, folder: &str, uid: u32) -> Result<Option<MessageMeta>, sled::Error> {
        match self.msgs.get(key(&[mailbox.as_bytes(), folder.as_bytes(), &uid.to_be_bytes()]))? {
            Some(v) => Ok(Some(unjson(&v)?)),
            None => Ok(None),
        }
    }

    /// Where these bytes already are in `mailbox`, if anywhere.
    pub fn find_hash(&self, mailbox: &str, hash: &str) -> Result<Option<(String, u32)>, sled::Error> {
        Ok(self.hashes.get(key(&[mailbox.as_bytes(), hash.as_bytes()]))?.map(|v| split_loc(&v)))
    }

    /// Archived messages still on the provider, by provider UID.
    pub fn provider_entries(
        &self,
        mailbox: &str,
        folder: &str,
        uidvalidity: u32,
    ) -> Result<BTreeMap<u32, ProviderEntry>, sled::Error> {
        let p = prefix(&[mailbox.as_bytes(), folder.as_bytes(), &uidvalidity.to_be_bytes()]);
        let mut out = BTreeMap::new();
        for kv in self.provider.scan_prefix(&p) {
            let (k, v) = kv?;
            out.insert(be32(&k[p.len()..]), unjson(&v)?);
        }
        Ok(out)
    }

    /// Provider entries of `mailbox`/`folder` under any UIDVALIDITY, keyed
    /// by (uidvalidity, uid).
    pub fn provider_entries_all(
        &self,
        mailbox: &str,
        folder: &str,
    ) -> Result<Vec<((u32, u32), ProviderEntry)>, sled::Error> {
        let p = prefix(&[mailbox.as_bytes(), folder.as_bytes()]);
        let mut out = Vec::new();
        for kv in self.provider.scan_prefix(&p) {
            let (k, v) = kv?;
            let rest = &k[p.len()..];
            if rest.len() == 9 {
                out.push(((be32(&rest[..4]), be32(&rest[5..])), unjson(&v)?));
            }
        }
        Ok(out)
    }

    pub fn provider_uidvalidity(&self, mailbox: &str, folder: &str) -> Result<Option<u32>, sled::Error> {
        Ok(self.sync.get(key(&[mailbox.as_bytes(), folder.as_bytes()]))?.map(|v| be32(&v)))
    }

    /// UIDs in `mailbox`/`folder` that `user` has seen.
    pub fn seen_uids(&self, user: &str, mailbox: &str, folder: &str) -> Result<std::collections::HashSet<u32>, sled::Error> {
        let p = prefix(&[user.as_bytes(), mailbox.as_bytes(), folder.as_bytes()]);
        let mut out = std::collections::HashSet::new();
        for kv in self.seen.scan_prefix(&p) {
            let (k, _) = kv?;
            out.insert(be32(&k[p.len()..]));
        }
        Ok(out)
    }

    /// A cached value derived from blob `hash` under `kind`.
    pub fn derived(&self, kind: &str, hash: &str) -> Result<Option<sled::IVec>, sled::Error> {
        self.derived.get(key(&[kind.as_bytes(), hash.as_bytes()]))
    }

    pub fn put_derived(&self, kind: &str, hash: &str, v: &[u8]) -> Result<(), sled::Error> {
        self.derived.insert(key(&[kind.as_bytes(), hash.as_bytes()]), v).map(|_| ())
    }

    /// A message hidden from `mailbox`/`folder` by a client's EXPUNGE.
    pub fn hidden_message(&self, mailbox: &str, folder: &str, uid: u32) -> Result<Option<MessageMeta>, sled::Error> {
        match self.hidden.get(key(&[mailbox.as_bytes(), folder.as_bytes(), &uid.to_be_bytes()]))? {
            Some(v) => Ok(Some(unjson(&v)?)),
            None => Ok(None),
        }
    }

    /// Every message hidden from `mailbox` (by EXPUNGE or a move into
    /// Trash): (folder, uid there, meta with its `trash_uid`), in Trash
    /// order.
    pub fn hidden_messages(&self, mailbox: &str) -> Result<Vec<(String, u32, MessageMeta)>, sled::Error> {
        let p = prefix(&[mailbox.as_bytes()]);
        let mut out = Vec::new();
        for kv in self.hidden.scan_prefix(&p) {
            let (k, v) = kv?;
            let rest = &k[p.len()..];
            // folder, 0 separator, 4-byte UID (see `key`)
            if rest.len() < 5 {
                continue;
            }
            let folder = String::from_utf8_lossy(&rest[..rest.len() - 5]).into_owned();
            let uid = be32(&rest[rest.len() - 4..]);
            let m: MessageMeta = unjson(&v)?;
            out.push((folder, uid, m));
        }
        out.sort_by_key(|(_, _, m)| m.trash_uid);
        Ok(out)
    }

    /// The last category number and UIDVALIDITY given out in `mailbox`
    /// ((0, 0): none).
    pub fn last_category(&self, mailbox: &str) -> Result<(u32, u32), sled::Error> {
        Ok(self.meta.get(key(&[b"category", mailbox.as_bytes()]))?.map(|v| last_category(&v)).unwrap_or((0, 0)))
    }

    /// The last All UID given out in `mailbox` (0: none).
    pub fn last_all_uid(&self, mailbox: &str) -> Result<u32, sled::Error> {
        Ok(self.meta.get(key(&[b"all", mailbox.as_bytes()]))?.map(|v| be32(&v)).unwrap_or(0))
    }

    /// Every message of `mailbox` once, where it is filed (labels left
    /// out, hidden ones too): (All UID, folder, UID there, metadata), by
    /// All UID.
    pub fn all_messages(&self, mailbox: &str) -> Result<Vec<(u32, String, u32, MessageMeta)>, sled::Error> {
        let p = prefix(&[mailbox.as_bytes()]);
        let mut out = Vec::new();
        for kv in self.msgs.scan_prefix(&p) {
            let (k, v) = kv?;
            let m: MessageMeta = unjson(&v)?;
            let (Some(a), false) = (m.all_uid, m.label) else { continue };
            let rest = &k[p.len()..];
            let cut = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            let folder = String::from_utf8_lossy(&rest[..cut]).into_owned();
            out.push((a, folder, be32(&rest[(cut + 1).min(rest.len())..]), m));
        }
        out.sort_by_key(|e| e.0);
        Ok(out)
    }

    /// The last Trash UID given out in `mailbox` (0: none).
    pub fn last_trash_uid(&self, mailbox: &str) -> Result<u32, sled::Error> {
        Ok(self.meta.get(key(&[b"trash", mailbox.as_bytes()]))?.map(|v| be32(&v)).unwrap_or(0))
    }

    /// The index's format: one written by an older pecgate is rebuilt
    /// from the journal when the store opens.
    pub fn format(&self) -> Result<u32, sled::Error> {
        Ok(self.meta.get("format")?.map(|v| be32(&v)).unwrap_or(0))
    }

    pub fn set_format(&self) -> Result<(), sled::Error> {
        self.meta.insert("format", &FORMAT.to_be_bytes()).map(|_| ())
    }

    /// Every tree's content, for tests comparing a rebuilt index with the
    /// live one.
    pub fn dump(&self) -> Result<Dump, sled::Error> {
        let mut out = Vec::new();
        for (name, t) in [
            ("meta", &self.meta),
            ("folders", &self.folders),
            ("msgs", &self.msgs),
            ("hashes", &self.hashes),
            ("provider", &self.provider),
            ("sync", &self.sync),
            ("seen", &self.seen),
            ("seen_by", &self.seen_by),
            ("hidden", &self.hidden),
            ("sent", &self.sent),
            ("handling", &self.handling),
            ("hstate", &self.hstate),
        ] {
            for kv in t.iter() {
                let (k, v) = kv?;
                out.push((name.to_string(), k.to_vec(), v.to_vec()));
            }
        }
        Ok(out)
    }

    /// Drop every tree (before a rebuild from the journal).
    /// The reconciliation state of the sent message `key` (a normalised
    /// Message-ID) in `mailbox`.
    pub fn sent_state(&self, mailbox: &str, key: &str) -> Result<Option<SentMessage>, sled::Error> {
        match self.sent.get(self::key(&[mailbox.as_bytes(), key.as_bytes()]))? {
            Some(v) => Ok(Some(unjson(&v)?)),
            None => Ok(None),
        }
    }

    /// Every sent message of `mailbox` with its state (also those known
    /// only from receipts, e.g. sent from the provider's webmail).
    pub fn sent_states(&self, mailbox: &str) -> Result<Vec<SentMessage>, sled::Error> {
        let mut out = Vec::new();
        for kv in self.sent.scan_prefix(prefix(&[mailbox.as_bytes()])) {
            out.push(unjson(&kv?.1)?);
        }
        Ok(out)
    }

    pub fn handling(&self, mailbox: &str, hash: &str) -> Result<Option<Handling>, sled::Error> {
        match self.handling.get(key(&[mailbox.as_bytes(), hash.as_bytes()]))? {
            Some(v) => Ok(Some(unjson(&v)?)),
            None => Ok(None),
        }
    }

    pub fn handling_all(&self, mailbox: &str) -> Result<Vec<(String, Handling)>, sled::Error> {
        let p = prefix(&[mailbox.as_bytes()]);
        let mut out = Vec::new();
        for kv in self.handling.scan_prefix(&p) {
            let (k, v) = kv?;
            out.push((String::from_utf8_lossy(&k[p.len()..]).into_owned(), unjson(&v)?));
        }
        Ok(out)
    }

    /// Tracked messages in one of `states`, in view-UID order.
    pub fn handling_in(&self, mailbox: &str, states: &[State]) -> Result<Vec<(String, Handling)>, sled::Error> {
        let mut out = Vec::new();
        for s in states {
            let p = prefix(&[mailbox.as_bytes(), &[s.code()]]);
            for kv in self.hstate.scan_prefix(&p) {
                let (_, v) = kv?;
                let hash = String::from_utf8_lossy(&v).into_owned();
                if let Some(h) = self.handling(mailbox, &hash)? {
                    out.push((hash, h));
                }
            }
        }
        if states.len() > 1 {
            out.sort_by_key(|(_, h)| h.vuid);
        }
        Ok(out)
    }

    /// The last handling-view UID given out in `mailbox` (0: none).
    pub fn last_vuid(&self, mailbox: &str) -> Result<u32, sled::Error> {
        Ok(self.meta.get(key(&[b"vuid", mailbox.as_bytes()]))?.map(|v| be32(&v)).unwrap_or(0))
    }

    pub fn clear(&self) -> Result<(), sled::Error> {
        for t in [
            &self.meta,
            &self.folders,
            &self.msgs,
            &self.hashes,
            &self.provider,
            &self.sync,
            &self.seen,
            &self.seen_by,
            &self.hidden,
            &self.sent,
            &self.handling,
            &self.hstate,
        ] {
            t.clear()?;
        }
        self.flush()
    }
}
