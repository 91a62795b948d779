//! The index in redb: derived from the journal, rebuilt from it at will.
//!
//! Tables of `index.redb` (byte keys, parts joined by `\0`; aliases and
//! folder names never contain it):
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `applied_seq` | last journal seq applied (u64 BE) |
//! | `folders` | mailbox, folder | [`FolderState`] (JSON) |
//! | `msgs` | mailbox, folder, uid (u32 BE) | [`MessageMeta`] (binary, see `codec`) |
//! | `hashes` | mailbox, hash (32 raw bytes) | folder, uid (de-duplication) |
//! | `provider` | mailbox, provider folder, uidvalidity, uid | [`ProviderEntry`] (binary): archived, still on the provider |
//! | `sync` | mailbox, provider folder | provider UIDVALIDITY (u32 BE) |
//! | `seen` | user, mailbox, folder, uid | empty: `user` has seen it (`\Seen` is per user) |
//! | `seen_by` | mailbox, folder, uid | users who have seen it (JSON list; so a move carries it in one read) |
//! | `hidden` | mailbox, folder, uid | [`MessageMeta`] of a message a client expunged (the blob stays) |
//! | `sent` | mailbox, Message-ID | reconciliation state of a sent message |
//! | `handling` | mailbox, hash | [`Handling`] of a tracked incoming message |
//! | `hstate` | mailbox, state code, view UID (u32 BE) | hash: the tracked messages by state, in view-UID order (views scan one state) |
//! | `meta` | `vuid`, mailbox | last handling-view UID of the mailbox (u32 BE) |
//! | `subs` | user, IMAP folder name | `1` subscribed, `0` unsubscribed (`subscriptions`) |
//!
//! A folder's messages are one key range in UID order, so SELECT and FETCH
//! read a range, never the whole table.
//!
//! ## Crash model
//!
//! The journal is the truth: the writer fsyncs a batch of records there
//! before it applies them here. Each batch is applied in one redb write
//! transaction together with `applied_seq` (all or nothing). Most commits
//! are made without fsync (`Durability::None`); one at least every second,
//! every [`Index::flush`] (before a provider delete, at close) and the end
//! of a rebuild are durable. redb's copy-on-write commit makes a crash
//! leave the last durable commit intact, whatever was being written; the
//! commits after it are lost together with their `applied_seq`, and the
//! next open replays those records from the journal. A record is never
//! applied twice (records at or below `applied_seq` are skipped), and the
//! index is never ahead of the journal (the writer applies only what the
//! journal has fsynced).

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::codec;
use super::record::Event;
use crate::campaign::model::{CampaignRow, NoticeRow, Status};
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

/// A folder's state and some of its entries by UID (`None`: not there).
pub type FolderChanges<T> = (Option<FolderState>, Vec<(u32, Option<T>)>);

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
    sent: &mut Tbl<'_>,
    mailbox: &str,
    m: &PecMeta,
    hash: &str,
    internal_date: DateTime<Utc>,
    time: DateTime<Utc>,
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
        Some(v) => dec::<SentMessage>(&v)?,
        None => SentMessage::new(&k),
    };
    // An event that does not apply (a receipt without a usable reference)
    // leaves the state as it was; the message itself is archived anyway.
    if state.apply(&ev).is_ok() {
        if let (ReconcileEvent::Receipt(..), Some(id)) = (&ev, m.classification.message_id.as_deref()) {
            state.note_receipt_blob(id, hash);
        }
        // Its sent copy's computed keywords may have changed.
        state.modseq = next_modseq(state.modseq, time);
        sent.insert(tk, enc(&state))?;
    }
    Ok(())
}

impl FolderState {
    /// A change recorded at `time`: the folder's next MODSEQ (see
    /// [`next_modseq`]), now its highest.
    fn bump(&mut self, time: DateTime<Utc>) -> u64 {
        self.highest_modseq = next_modseq(self.highest_modseq, time);
        self.highest_modseq
    }
}

/// The next MODSEQ of a folder whose last one is `prev`, for a change
/// recorded at `time`: the record's time in microseconds, or `prev + 1`
/// when the clock gives no more (RFC 7162 only asks that MODSEQs grow).
/// Tied to the clock so that a keyword computed from time alone
/// (`$PecOverdue`, at a deadline no record marks) can take the deadline
/// as its MODSEQ and still sort after every change recorded before it
/// (see [`time_modseq`]).
pub fn next_modseq(prev: u64, time: DateTime<Utc>) -> u64 {
    prev.saturating_add(1).max(time_modseq(time))
}

/// A moment as a MODSEQ: microseconds since 1970.
pub fn time_modseq(time: DateTime<Utc>) -> u64 {
    u64::try_from(time.timestamp_micros()).unwrap_or(0)
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

/// A derived-cache key: the kind, then the hash's bytes.
fn derived_key(kind: &str, hash: &str) -> Vec<u8> {
    hash_key(kind, hash)
}

/// A derived-cache key's kind and hash bytes (see [`derived_key`]).
fn split_derived_key(k: &[u8]) -> (&[u8], &[u8]) {
    match k.iter().position(|b| *b == 0) {
        Some(cut) => (&k[..cut], &k[cut + 1..]),
        None => (k, &[]),
    }
}

/// A `hashes` key: the mailbox, then the hash's bytes (32 for SHA-256 hex).
fn hash_key(mailbox: &str, hash: &str) -> Vec<u8> {
    let mut k = mailbox.as_bytes().to_vec();
    k.push(0);
    codec::hash_bytes(&mut k, hash);
    k
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

/// How a value is kept in the index: the per-message entries in the
/// compact binary of [`codec`], the rest (a few entries per folder, sent
/// message or tracked message) as JSON.
trait Val: Sized {
    fn enc(&self) -> Vec<u8>;
    fn dec(b: &[u8]) -> Result<Self, Error>;
}

macro_rules! json_val {
    ($($t:ty),*) => {$(
        impl Val for $t {
            fn enc(&self) -> Vec<u8> {
                serde_json::to_vec(self).unwrap_or_else(|e| unreachable!("index values serialise: {e}"))
            }
            fn dec(b: &[u8]) -> Result<Self, Error> {
                serde_json::from_slice(b).map_err(|e| Error::Invalid(format!("corrupt index value: {e}")))
            }
        }
    )*};
}
json_val!(FolderState, SentMessage, Handling, Vec<String>, CampaignRow, NoticeRow, crate::retention::Hold);

impl Val for MessageMeta {
    fn enc(&self) -> Vec<u8> {
        codec::encode_meta(self)
    }
    fn dec(b: &[u8]) -> Result<Self, Error> {
        codec::decode_meta(b).map_err(|e| Error::Invalid(e.to_string()))
    }
}

impl Val for ProviderEntry {
    fn enc(&self) -> Vec<u8> {
        codec::encode_provider(self)
    }
    fn dec(b: &[u8]) -> Result<Self, Error> {
        codec::decode_provider(b).map_err(|e| Error::Invalid(e.to_string()))
    }
}

fn enc<T: Val>(v: &T) -> Vec<u8> {
    v.enc()
}

fn dec<T: Val>(b: &[u8]) -> Result<T, Error> {
    T::dec(b)
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[8 - n..].copy_from_slice(&b[b.len() - n..]);
    u64::from_be_bytes(a)
}

fn be32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    let n = b.len().min(4);
    a[4 - n..].copy_from_slice(&b[b.len() - n..]);
    u32::from_be_bytes(a)
}

fn get_val<T: Val>(t: &Tbl<'_>, k: &[u8]) -> TxResult<Option<T>> {
    match t.get(k)? {
        Some(v) => Ok(Some(dec(&v)?)),
        None => Ok(None),
    }
}

/// Store a message's handling and keep the by-state tree and the
/// mailbox's last view UID in step.
fn set_handling(
    meta: &mut Tbl<'_>,
    handling: &mut Tbl<'_>,
    hstate: &mut Tbl<'_>,
    mailbox: &str,
    hash: &str,
    old: Option<&Handling>,
    h: &Handling,
) -> TxResult<()> {
    if let Some(o) = old {
        hstate.remove(key(&[mailbox.as_bytes(), &[o.state.code()], &o.vuid.to_be_bytes()]))?;
    }
    hstate.insert(key(&[mailbox.as_bytes(), &[h.state.code()], &h.vuid.to_be_bytes()]), hash.as_bytes())?;
    handling.insert(key(&[mailbox.as_bytes(), hash.as_bytes()]), enc(h))?;
    let vk = key(&[b"vuid", mailbox.as_bytes()]);
    let last = meta.get(&vk)?.map(|v| be32(&v)).unwrap_or(0);
    if h.vuid > last {
        meta.insert(vk, h.vuid.to_be_bytes())?;
    }
    Ok(())
}

/// Holds live in `meta`: `hold`, mailbox, the placing record's seq (u64 BE).
fn hold_key(mailbox: &str, id: u64) -> Vec<u8> {
    key(&[b"hold", mailbox.as_bytes(), &id.to_be_bytes()])
}

fn notice_key(campaign: &str, n: u32) -> Vec<u8> {
    key(&[campaign.as_bytes(), &n.to_be_bytes()])
}

fn set_applied(meta: &mut Tbl<'_>, seq: u64) -> TxResult<()> {
    meta.insert("applied_seq", seq.to_be_bytes())?;
    Ok(())
}

/// Provider entries keyed by (UIDVALIDITY, UID).
pub type ProviderEntries = Vec<((u32, u32), ProviderEntry)>;

/// Every index entry as (tree, key, value), for comparing two indexes.
pub type Dump = Vec<(String, Vec<u8>, Vec<u8>)>;

/// A table of the index: byte keys to byte values.
type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

const META: Def = TableDefinition::new("meta");
const FOLDERS: Def = TableDefinition::new("folders");
const MSGS: Def = TableDefinition::new("msgs");
const HASHES: Def = TableDefinition::new("hashes");
const PROVIDER: Def = TableDefinition::new("provider");
const SYNC: Def = TableDefinition::new("sync");
const SEEN: Def = TableDefinition::new("seen");
const SEEN_BY: Def = TableDefinition::new("seen_by");
const HIDDEN: Def = TableDefinition::new("hidden");
/// Reconciliation state per sent message: (mailbox, Message-ID) →
/// `pec::reconcile::SentMessage`, folded from the archived sent copies and
/// receipts.
const SENT: Def = TableDefinition::new("sent");
const HANDLING: Def = TableDefinition::new("handling");
const HSTATE: Def = TableDefinition::new("hstate");
/// Campaigns by id (`campaign::model::CampaignRow`), and their notices by
/// (id, notice number as 4 big-endian bytes) (`NoticeRow`).
const CAMPAIGNS: Def = TableDefinition::new("campaigns");
const NOTICES: Def = TableDefinition::new("notices");
const SUBS: Def = super::subscriptions::TABLE;
/// In `derived.redb`: data derived from blobs (search fields), by (kind,
/// raw hash bytes). Not from the journal: blobs never change, so an entry never goes
/// stale, and a missing one is derived again; a rebuild starts it empty
/// and [`Index::dump`] leaves it out.
const DERIVED: Def = TableDefinition::new("derived");
/// In `derived.redb`: `format`, the [`DERIVED_FORMAT`] its entries have.
const DERIVED_META: Def = TableDefinition::new("derived_meta");
#[cfg(test)]
pub(crate) const DERIVED_FOR_TESTS: Def = DERIVED;
#[cfg(test)]
pub(crate) const DERIVED_META_FOR_TESTS: Def = DERIVED_META;
/// The derived cache's format: 6, header fields in their compact form
/// (`fields::FIELDS_KIND`); a cache of an older format (5, or none: 4
/// and before) has its entries converted at the open.
const DERIVED_FORMAT: u32 = 6;
/// Derived values waiting to be written: written together, one
/// transaction per this many (or per [`DURABLE_EVERY`]), instead of one
/// each. A transaction per value rewrote a page path per message and left
/// the file more than half free pages (BENCHMARKS.md "Ten-year scale").
const PENDING_MAX: usize = 512;

/// Every journal-derived table, in dump order.
const TABLES: [(&str, Def); 15] = [
    ("meta", META),
    ("folders", FOLDERS),
    ("msgs", MSGS),
    ("hashes", HASHES),
    ("provider", PROVIDER),
    ("sync", SYNC),
    ("seen", SEEN),
    ("seen_by", SEEN_BY),
    ("hidden", HIDDEN),
    ("sent", SENT),
    ("handling", HANDLING),
    ("hstate", HSTATE),
    ("campaigns", CAMPAIGNS),
    ("notices", NOTICES),
    ("subs", SUBS),
];

/// One table's size (see [`Index::stats`]): its keys and values, redb's
/// own bookkeeping, and the unused part of its pages.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableStats {
    pub file: &'static str,
    pub table: &'static str,
    pub entries: u64,
    pub stored: u64,
    pub metadata: u64,
    pub fragmented: u64,
}

/// A failure of the index's database, or a value it cannot read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Db(#[from] redb::Error),
    /// Another process has the index open.
    #[error("the index is open in another process")]
    Locked,
    #[error("{0}")]
    Invalid(String),
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                match redb::Error::from(e) {
                    redb::Error::DatabaseAlreadyOpen => Error::Locked,
                    e => Error::Db(e),
                }
            }
        }
    )*};
}
redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// A table inside the write transaction that applies records.
struct Tbl<'t>(redb::Table<'t, &'static [u8], &'static [u8]>);

/// A value of a table, copied out (read or write transaction alike).
fn get_in(t: &impl ReadableTable<&'static [u8], &'static [u8]>, k: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    Ok(t.get(k)?.map(|v| v.value().to_vec()))
}

impl Tbl<'_> {
    fn get(&self, k: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, Error> {
        get_in(&self.0, k.as_ref())
    }

    fn insert(&mut self, k: impl AsRef<[u8]>, v: impl AsRef<[u8]>) -> Result<(), Error> {
        self.0.insert(k.as_ref(), v.as_ref())?;
        Ok(())
    }

    fn remove(&mut self, k: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.0.remove(k.as_ref())?.map(|v| v.value().to_vec()))
    }
}

/// A key and value read from a table.
type Entry = Result<(Vec<u8>, Vec<u8>), Error>;

/// A table in a read transaction (a consistent view of one commit).
struct RTbl(redb::ReadOnlyTable<&'static [u8], &'static [u8]>);

impl RTbl {
    fn get(&self, k: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, Error> {
        get_in(&self.0, k.as_ref())
    }

    /// Entries whose key starts with `p`, in key order.
    fn scan_prefix(&self, p: impl AsRef<[u8]>) -> impl Iterator<Item = Entry> + '_ {
        let p = p.as_ref().to_vec();
        let range = self.0.range(p.as_slice()..).map_err(Error::from);
        let it: Box<dyn Iterator<Item = Entry>> = match range {
            Ok(r) => Box::new(
                r.map(|kv| kv.map(|(k, v)| (k.value().to_vec(), v.value().to_vec())).map_err(Error::from))
                    .take_while(move |kv| kv.as_ref().map_or(true, |(k, _)| k.starts_with(&p))),
            ),
            Err(e) => Box::new(std::iter::once(Err(e))),
        };
        it
    }

    fn iter(&self) -> impl Iterator<Item = Entry> + '_ {
        self.scan_prefix([])
    }
}

/// Lookups in the derived cache as of one moment (see
/// [`Index::derived_reader`]).
pub struct DerivedReader(RTbl, super::fields::CommonValues);

impl DerivedReader {
    /// The value cached under `kind` for blob `hash`; header fields with
    /// their common values written out (`fields::expand`). `None` also
    /// for fields that name a common value not known (damage): they are
    /// derived again.
    pub fn get(&self, kind: &str, hash: &str) -> Result<Option<Vec<u8>>, Error> {
        let v = self.0.get(derived_key(kind, hash))?;
        if kind != super::fields::FIELDS_KIND {
            return Ok(v);
        }
        Ok(v.and_then(|v| super::fields::expand(&v, &self.1)))
    }

    /// The header fields' common values as of this reader, for values
    /// read by [`DerivedReader::scan`] (`fields::MatchFields::decode`).
    pub fn common(&self) -> &[Option<std::sync::Arc<str>>] {
        &self.1
    }

    /// Every value cached under `kind`, read sequentially in `parts`
    /// key ranges at once, one thread each (split by the hash's first
    /// byte: SHA-256s spread evenly): `each` gets its part's state (from
    /// `init`), the blob's hash and the value. The states, in key order.
    pub fn scan<S: Send>(
        &self,
        kind: &str,
        parts: usize,
        init: impl Fn() -> S + Sync,
        each: impl Fn(&mut S, codec::BlobHash, &[u8]) + Sync,
    ) -> Result<Vec<S>, Error> {
        let mut p = kind.as_bytes().to_vec();
        p.push(0);
        let parts = parts.clamp(1, 16);
        // Part i starts at the SHA-256 marker and first byte 256·i/parts;
        // the first part also holds any key before (none are), the last
        // every key after (names that are not a SHA-256).
        let bound = |i: usize| -> Option<Vec<u8>> {
            (i > 0 && i < parts).then(|| {
                let mut b = p.clone();
                b.extend_from_slice(&[32, u8::try_from(256 * i / parts).unwrap_or(u8::MAX)]);
                b
            })
        };
        let part = |i: usize| -> Result<S, Error> {
            let mut s = init();
            let (from, to) = (bound(i).unwrap_or_else(|| p.clone()), bound(i + 1));
            for kv in self.0 .0.range(from.as_slice()..)? {
                let (k, v) = kv?;
                let k = k.value();
                if !k.starts_with(&p) || to.as_deref().is_some_and(|t| k >= t) {
                    break;
                }
                // A key that is not a hash would be damage: not this kind's.
                if let Ok(h) = codec::decode_hash(&k[p.len()..]) {
                    each(&mut s, h, v.value());
                }
            }
            Ok(s)
        };
        std::thread::scope(|sc| {
            let handles: Vec<_> = (1..parts).map(|i| sc.spawn(move || part(i))).collect();
            let mut out = vec![part(0)?];
            for h in handles {
                out.push(h.join().map_err(|_| Error::Invalid("a cache scan thread panicked".into()))??);
            }
            Ok(out)
        })
    }
}

/// The write transaction's tables, opened once per batch.
struct Tables<'t> {
    meta: Tbl<'t>,
    folders: Tbl<'t>,
    msgs: MsgsTbl<'t>,
    hashes: Tbl<'t>,
    provider: Tbl<'t>,
    sync: Tbl<'t>,
    seen: Tbl<'t>,
    seen_by: Tbl<'t>,
    hidden: Tbl<'t>,
    sent: Tbl<'t>,
    handling: Tbl<'t>,
    hstate: Tbl<'t>,
    campaigns: Tbl<'t>,
    notices: Tbl<'t>,
    subs: Tbl<'t>,
}

/// The `msgs` table of a write transaction, noting every key it inserts or
/// removes (what the batch changed among the folders' entries).
struct MsgsTbl<'t> {
    t: Tbl<'t>,
    touched: Vec<Vec<u8>>,
    note: bool,
}

impl MsgsTbl<'_> {
    fn insert(&mut self, k: impl AsRef<[u8]>, v: impl AsRef<[u8]>) -> Result<(), Error> {
        if self.note {
            self.touched.push(k.as_ref().to_vec());
        }
        self.t.insert(k, v)
    }

    fn remove(&mut self, k: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, Error> {
        let v = self.t.remove(k.as_ref())?;
        if v.is_some() && self.note {
            self.touched.push(k.as_ref().to_vec());
        }
        Ok(v)
    }
}

/// A `msgs` key as (mailbox, folder, UID).
fn split_msg_key(k: &[u8]) -> Option<super::changes::Touched> {
    let (rest, uid) = k.split_at_checked(k.len().checked_sub(4)?)?;
    let rest = rest.strip_suffix(&[0])?;
    let at = rest.iter().position(|b| *b == 0)?;
    let (mailbox, folder) = (&rest[..at], &rest[at + 1..]);
    Some((String::from_utf8(mailbox.to_vec()).ok()?, String::from_utf8(folder.to_vec()).ok()?, be32(uid)))
}

impl<'t> Tables<'t> {
    fn open(tx: &'t WriteTransaction) -> Result<Tables<'t>, Error> {
        let t = |d: Def| -> Result<Tbl<'t>, Error> { Ok(Tbl(tx.open_table(d)?)) };
        Ok(Tables {
            meta: t(META)?,
            folders: t(FOLDERS)?,
            msgs: MsgsTbl { t: t(MSGS)?, touched: Vec::new(), note: true },
            hashes: t(HASHES)?,
            provider: t(PROVIDER)?,
            sync: t(SYNC)?,
            seen: t(SEEN)?,
            seen_by: t(SEEN_BY)?,
            hidden: t(HIDDEN)?,
            sent: t(SENT)?,
            handling: t(HANDLING)?,
            hstate: t(HSTATE)?,
            campaigns: t(CAMPAIGNS)?,
            notices: t(NOTICES)?,
            subs: t(SUBS)?,
        })
    }
}

/// A message's key in `msgs`: its folder's prefix, then its UID.
fn uid_key(folder_prefix: &[u8], uid: u32) -> Vec<u8> {
    let mut k = folder_prefix.to_vec();
    k.extend_from_slice(&uid.to_be_bytes());
    k
}

/// One folder read at one moment (see [`Index::folder_reader`]).
pub struct FolderReader {
    msgs: RTbl,
    prefix: Vec<u8>,
    state: Option<FolderState>,
}

impl FolderReader {
    /// The folder's state when the reader was made (`None`: no such folder).
    pub fn state(&self) -> Option<&FolderState> {
        self.state.as_ref()
    }

    fn key(&self, uid: u32) -> Vec<u8> {
        uid_key(&self.prefix, uid)
    }

    /// The UIDs in `from..=to`, in order.
    fn uids(&self, from: u32, to: u32) -> Result<impl Iterator<Item = Result<u32, Error>> + '_, Error> {
        let p = self.prefix.len();
        let range = self.msgs.0.range(self.key(from).as_slice()..=self.key(to).as_slice())?;
        Ok(range.map(move |kv| Ok(be32(&kv?.0.value()[p..]))))
    }

    /// How many messages have a UID in `from..=to`: their keys counted,
    /// no entry decoded.
    pub fn count(&self, from: u32, to: u32) -> Result<usize, Error> {
        if from > to {
            return Ok(0);
        }
        let mut n = 0;
        for u in self.uids(from, to)? {
            u?;
            n += 1;
        }
        Ok(n)
    }

    /// The lowest UID in `from..=to` a message has.
    pub fn first(&self, from: u32, to: u32) -> Result<Option<u32>, Error> {
        if from > to {
            return Ok(None);
        }
        self.uids(from, to)?.next().transpose()
    }

    /// The last `n` messages (fewer in a smaller folder), in UID order,
    /// each made by `each`.
    pub fn last<T>(&self, n: usize, mut each: impl FnMut(codec::Brief<'_>) -> T) -> Result<Vec<(u32, T)>, Error> {
        let p = self.prefix.len();
        let mut out = Vec::with_capacity(n);
        let range = self.msgs.0.range(self.key(0).as_slice()..=self.key(u32::MAX).as_slice())?;
        for kv in range.rev().take(n) {
            let (k, v) = kv?;
            let b = codec::decode_brief(v.value()).map_err(|e| Error::Invalid(e.to_string()))?;
            out.push((be32(&k.value()[p..]), each(b)));
        }
        out.reverse();
        Ok(out)
    }

    /// Every message in UID order, each made by `each` from its
    /// [`codec::Brief`] while the entry is at hand (nothing decoded into
    /// owned values but what `each` makes), with a state per thread from
    /// `init`. A large folder is read in two UID ranges at once, one
    /// thread each (a million entries: half the time on two cores).
    pub fn scan<S, T: Send>(
        &self,
        init: impl Fn() -> S + Sync,
        each: impl Fn(&mut S, codec::Brief<'_>) -> T + Sync,
    ) -> Result<Vec<(u32, T)>, Error> {
        let st = self.state.as_ref();
        let exists = usize::try_from(st.map_or(0, |st| st.exists)).unwrap_or(0).min(1 << 24);
        let p = self.prefix.len();
        // UIDs from `from` up to `to`.
        let part = |from: u32, to: u32, cap: usize| -> Result<Vec<(u32, T)>, Error> {
            let mut s = init();
            let mut out = Vec::with_capacity(cap);
            for kv in self.msgs.0.range(self.key(from).as_slice()..=self.key(to).as_slice())? {
                let (k, v) = kv?;
                let b = codec::decode_brief(v.value()).map_err(|e| Error::Invalid(e.to_string()))?;
                out.push((be32(&k.value()[p..]), each(&mut s, b)));
            }
            Ok(out)
        };
        // UIDs are given in order and mostly kept: the middle UID splits
        // the entries about in half.
        let mid = st.map_or(0, |st| st.uidnext / 2);
        // Smaller in tests, so that they read folders in two parts too.
        const SPLIT_FROM: usize = if cfg!(test) { 1024 } else { 65_536 };
        if exists < SPLIT_FROM || mid == 0 {
            return part(0, u32::MAX, exists);
        }
        let (low, high) = std::thread::scope(|sc| {
            let high = sc.spawn(|| part(mid, u32::MAX, exists / 2 + 1024));
            // The lower part sized for both: the upper is appended without
            // the list being copied again (a million entries: 100 MB).
            (part(0, mid - 1, exists + 1024), high.join())
        });
        let mut out = low?;
        out.extend(high.map_err(|_| Error::Invalid("a folder scan thread panicked".into()))??);
        Ok(out)
    }
}

/// Sizes of the index's two databases (see [`Index::open`]).
#[derive(Debug, Clone, Copy)]
pub struct Cache {
    /// Bytes of memory redb may use to cache `index.redb`'s pages.
    pub bytes: usize,
}

impl Default for Cache {
    fn default() -> Self {
        // A million-message mailbox's index is ≈ 300 MB on disk; its
        // per-folder ranges are read in order, and the kernel's page cache
        // holds the file too, so a cache of a fraction of it serves SELECT
        // and FETCH (BENCHMARKS.md "Ten-year scale"). redb's cache also
        // holds a write transaction's pages: it fills as the archive grows,
        // and at 128 MiB (and a quarter of that for the derived cache) it
        // was most of the daemon's memory after a 48,397-notice campaign
        // (BENCHMARKS.md "Campaigns"); at 48 MiB (+ 12) still a third of
        // it at the campaign's peak.
        Cache { bytes: 32 * 1024 * 1024 }
    }
}

/// A durable commit at least this often while records are applied (the
/// others are commits without fsync: the journal has every record, and a
/// crash only makes the next open replay a little more of it).
const DURABLE_EVERY: Duration = Duration::from_secs(1);

pub struct Index {
    db: Database,
    derived: Database,
    /// When the last durable commit was made.
    durable: Mutex<Instant>,
    /// The same for the derived cache.
    derived_durable: Mutex<Instant>,
    /// Derived values not written yet (see [`PENDING_MAX`]), with when the
    /// first of them came.
    pending: Mutex<(Vec<(Vec<u8>, Vec<u8>)>, Instant)>,
    /// The header fields' common values (`fields::Common`), as written
    /// under [`COMMON_KIND`]. Changed only with `pending` locked, so a
    /// value's number is written before (or with) any entry that holds it.
    common: Mutex<super::fields::Common>,
}

/// The derived-cache kind of the header fields' common values: key the
/// kind, then the number (u32 BE); value the text.
const COMMON_KIND: &[u8] = b"c";

fn common_key(n: u32) -> Vec<u8> {
    [COMMON_KIND, &[0], &n.to_be_bytes()].concat()
}

/// The index format this code writes. 2: hidden messages carry their
/// Trash UID. 3: messages carry their All UID, labels are marked. 4: redb,
/// binary message entries, hashes keyed by their raw bytes.
pub const FORMAT: u32 = 4;

type TxResult<T> = Result<T, Error>;

/// The index's file in the data directory.
pub const FILE: &str = "index.redb";
/// The derived-data cache's file in the data directory.
pub const DERIVED_FILE: &str = "derived.redb";

impl Index {
    /// Open (creating) the index files in `dir`. Fails with
    /// [`Error::Locked`] if another process has them open.
    pub fn open(dir: &Path, cache: Cache) -> Result<Index, Error> {
        let open = |file: &str, bytes: usize| -> Result<Database, Error> {
            Ok(redb::Builder::new().set_cache_size(bytes).create(dir.join(file))?)
        };
        let db = open(FILE, cache.bytes)?;
        let derived = open(DERIVED_FILE, (cache.bytes / 4).max(4 << 20))?;
        let mut index = Index {
            db,
            derived,
            durable: Mutex::new(Instant::now()),
            derived_durable: Mutex::new(Instant::now()),
            pending: Mutex::new((Vec::new(), Instant::now())),
            common: Mutex::new(super::fields::Common::new(Vec::new())),
        };
        // Every table exists from the start, so readers never meet a
        // missing one.
        let tx = index.db.begin_write()?;
        Tables::open(&tx)?;
        tx.commit()?;
        if index.upgrade_derived()? {
            index.compact_derived()?;
        }
        index.load_common()?;
        Ok(index)
    }

    /// Read the common values the derived cache holds.
    fn load_common(&self) -> Result<(), Error> {
        let mut values: Vec<Option<String>> = Vec::new();
        let tx = self.derived.begin_read()?;
        let p = [COMMON_KIND, &[0]].concat();
        for kv in RTbl(tx.open_table(DERIVED)?).scan_prefix(&p) {
            let (k, v) = kv?;
            let Ok(n) = <[u8; 4]>::try_from(&k[p.len()..]).map(u32::from_be_bytes) else {
                continue;
            };
            let n = n as usize;
            if n >= super::fields::COMMON_MAX {
                continue;
            }
            if values.len() <= n {
                values.resize(n + 1, None);
            }
            values[n] = String::from_utf8(v).ok();
        }
        *self.common.lock().unwrap_or_else(PoisonError::into_inner) = super::fields::Common::new(values);
        Ok(())
    }

    /// Bring the derived cache to [`DERIVED_FORMAT`]: the header fields of
    /// an older cache converted in place (a million in a few seconds, once:
    /// emptying it would make the first SEARCH of a large folder read
    /// every message), anything else in it dropped. True if it changed.
    fn upgrade_derived(&self) -> Result<bool, Error> {
        let tx = self.derived.begin_write()?;
        let format = Tbl(tx.open_table(DERIVED_META)?).get("format")?.map(|v| be32(&v));
        if format == Some(DERIVED_FORMAT) {
            return Ok(false);
        }
        let empty = redb::ReadableTableMetadata::is_empty(&tx.open_table(DERIVED)?)?;
        tx.commit()?;
        let mut converted = 0u64;
        if !empty {
            let t0 = Instant::now();
            tracing::info!("the header-field cache (derived.redb) is in an older form: converting it, once");
            let mut after: Vec<u8> = Vec::new();
            loop {
                let tx = self.derived.begin_write()?;
                let mut moved = Vec::new();
                {
                    let mut t = Tbl(tx.open_table(DERIVED)?);
                    let new = super::fields::FIELDS_KIND.as_bytes();
                    for kv in t.0.range(after.as_slice()..)? {
                        let (k, v) = kv?;
                        let k = k.value();
                        let (kind, hash) = split_derived_key(k);
                        if kind != new && kind != COMMON_KIND {
                            // (old key, today's key and value if it converts)
                            let today =
                                super::fields::convert_cached(kind, v.value()).map(|v| ([new, &[0], hash].concat(), v));
                            moved.push((k.to_vec(), today));
                        }
                        if moved.len() >= 4096 {
                            break;
                        }
                    }
                    for (k, today) in &moved {
                        t.0.remove(k.as_slice())?;
                        if let Some((nk, v)) = today {
                            t.0.insert(nk.as_slice(), v.as_slice())?;
                            converted += 1;
                        }
                    }
                }
                let Some((last, _)) = moved.last() else {
                    tx.commit()?;
                    break;
                };
                after = last.clone();
                after.push(0);
                tx.commit()?;
            }
            tracing::info!(converted, seconds = t0.elapsed().as_secs_f64(), "the header-field cache is converted");
        }
        let tx = self.derived.begin_write()?;
        Tbl(tx.open_table(DERIVED_META)?).0.insert("format".as_bytes(), DERIVED_FORMAT.to_be_bytes().as_slice())?;
        tx.commit()?;
        Ok(!empty)
    }

    /// Pack both files' pages (redb's compaction at its most thorough).
    /// Needs the index to itself: run when the store closes. Inserts by blob hash
    /// land all over the tree and leave pages part-filled, and the free
    /// pages of past transactions stay in the file: packed, a million
    /// messages' index and cache take half the space (BENCHMARKS.md
    /// "Ten-year scale").
    pub fn compact(&mut self) -> Result<(), Error> {
        self.write_pending()?;
        self.db.compact(redb::CompactionMode::Maximum).map_err(redb::Error::from)?;
        self.compact_derived()
    }

    /// One `compact` call packs all it can: a second one found nothing
    /// more in the measurements, yet read the whole file again.
    fn compact_derived(&mut self) -> Result<(), Error> {
        self.derived.compact(redb::CompactionMode::Maximum).map_err(redb::Error::from)?;
        Ok(())
    }

    fn r(&self, d: Def) -> Result<RTbl, Error> {
        Ok(RTbl(self.db.begin_read()?.open_table(d)?))
    }

    pub fn applied_seq(&self) -> Result<u64, Error> {
        Ok(self
            .r(META)?
            .get("applied_seq")?
            .map(|v| {
                let mut a = [0u8; 8];
                let n = v.len().min(8);
                a[8 - n..].copy_from_slice(&v[..n]);
                u64::from_be_bytes(a)
            })
            .unwrap_or(0))
    }

    /// Make everything applied so far durable (fsync). Called before
    /// anything irreversible depends on the index, such as a provider
    /// delete, and at close.
    pub fn flush(&self) -> Result<(), Error> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        tx.set_quick_repair(true);
        tx.commit()?;
        *self.durable.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.write_pending()?;
        let mut tx = self.derived.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        tx.commit()?;
        Ok(())
    }

    /// Apply journal records' events in order, in one transaction with
    /// `applied_seq`: all or none. Records at or below `applied_seq` are
    /// skipped (replay is idempotent). The commit is durable at most
    /// [`DURABLE_EVERY`] apart (or at [`Index::flush`]); one that a crash
    /// loses is replayed from the journal at the next open.
    /// Apply a batch of records in one transaction; returns the message
    /// entries it inserted, changed or removed (see `store::changes`) if
    /// `note` (the writer's batches; not a replay or a rebuild, whose
    /// million entries nobody holds a list of yet).
    pub fn apply_batch(
        &self,
        records: &[(u64, DateTime<Utc>, &Event)],
        note: bool,
    ) -> Result<Vec<super::changes::Touched>, Error> {
        for (seq, _, event) in records {
            if let Event::Archived { pec: Some(p), mailbox, folder, uid, .. } = event {
                if let Some(why) = p.unrecognised_because() {
                    tracing::warn!(
                        seq, mailbox = %mailbox, folder = %folder, uid, error = %why,
                        "journal record: PEC metadata not understood; kept as written, the message counts as without"
                    );
                }
            }
        }
        let mut tx = self.db.begin_write()?;
        let durable = {
            let last = self.durable.lock().unwrap_or_else(PoisonError::into_inner);
            last.elapsed() >= DURABLE_EVERY
        };
        if durable {
            tx.set_quick_repair(true);
        } else {
            tx.set_durability(Durability::None)?;
        }
        let touched = {
            let mut t = Tables::open(&tx)?;
            t.msgs.note = note;
            let applied = t
                .meta
                .get("applied_seq")?
                .map(|v| u64::from_be_bytes(v.as_slice().try_into().unwrap_or([0; 8])))
                .unwrap_or(0);
            let mut last = applied;
            for (seq, time, event) in records {
                if *seq <= last {
                    continue;
                }
                apply_one(&mut t, *seq, *time, event)?;
                last = *seq;
            }
            if last > applied {
                set_applied(&mut t.meta, last)?;
            }
            std::mem::take(&mut t.msgs.touched)
        };
        tx.commit()?;
        if durable {
            *self.durable.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        }
        Ok(touched.iter().filter_map(|k| split_msg_key(k)).collect())
    }
}

/// Apply one record's event to the tables of the batch's transaction.
fn apply_one(t: &mut Tables<'_>, seq: u64, time: DateTime<Utc>, event: &Event) -> Result<(), Error> {
    let Tables {
        meta,
        folders,
        msgs,
        hashes,
        provider,
        sync,
        seen,
        seen_by,
        hidden,
        sent,
        handling,
        hstate,
        campaigns,
        notices,
        subs,
    } = t;
    match event {
        Event::None => {}
        Event::SubscriptionChanged { user, name, subscribed } => {
            super::subscriptions::set(&mut subs.0, user, name, *subscribed)?
        }
        Event::SubscriptionsRenamed { from, to } => super::subscriptions::rename(&mut subs.0, from, to)?,
        Event::CampaignCreated { campaign } => {
            let k = campaign.id.as_bytes();
            if campaigns.get(k)?.is_none() {
                let row =
                    CampaignRow { spec: campaign.clone(), status: Status::Ready, created_at: time, changed_at: time };
                campaigns.insert(k, enc(&row))?;
            }
        }
        Event::NoticesQueued { campaign, notices: queued } => {
            for n in queued {
                let k = notice_key(campaign, n.n);
                if notices.get(&k)?.is_none() {
                    notices.insert(k, enc(&NoticeRow::queued(n.clone())))?;
                }
            }
        }
        Event::CampaignControlled { campaign, control } => {
            if let Some(mut row) = get_val::<CampaignRow>(campaigns, campaign.as_bytes())? {
                if let Ok(status) = row.status.after(*control) {
                    row.status = status;
                    row.changed_at = time;
                    campaigns.insert(campaign.as_bytes(), enc(&row))?;
                }
            }
        }
        Event::NoticeStepped { campaign, n, step } => {
            let k = notice_key(campaign, *n);
            if let Some(mut row) = get_val::<NoticeRow>(notices, &k)? {
                row.apply(step, time);
                notices.insert(k, enc(&row))?;
            }
        }
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
                folders.insert(k, enc(&st))?;
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
                if let Some(mut st) = get_val::<FolderState>(folders, &k)? {
                    st.category = Some(name.clone());
                    folders.insert(k, enc(&st))?;
                }
            }
        }
        Event::FolderDeleted { mailbox, folder } => {
            folders.remove(key(&[mailbox.as_bytes(), folder.as_bytes()]))?;
        }
        Event::Copied { mailbox, from, to, copies } => {
            let tk = key(&[mailbox.as_bytes(), to.as_bytes()]);
            let Some(mut ts) = get_val::<FolderState>(folders, &tk)? else {
                return Err(Error::Invalid(format!(
                    "record {seq}: copy into {mailbox}/{to}: the folder does not exist"
                )));
            };
            for (old, new) in copies {
                let o = old.to_be_bytes();
                let Some(mut m) = get_val::<MessageMeta>(&msgs.t, &key(&[mailbox.as_bytes(), from.as_bytes(), &o]))?
                else {
                    continue;
                };
                let n = new.to_be_bytes();
                ts.exists += 1;
                ts.size += m.size;
                ts.bump(time);
                ts.uidnext = ts.uidnext.max(new + 1);
                m.modseq = ts.highest_modseq;
                m.label = true;
                msgs.insert(key(&[mailbox.as_bytes(), to.as_bytes(), &n]), enc(&m))?;
                // Every user's \Seen comes along (a copy keeps its flags).
                if let Some(users) = get_val::<Vec<String>>(seen_by, &key(&[mailbox.as_bytes(), from.as_bytes(), &o]))?
                {
                    for user in &users {
                        seen.insert(key(&[user.as_bytes(), mailbox.as_bytes(), to.as_bytes(), &n]), [])?;
                    }
                    seen_by.insert(key(&[mailbox.as_bytes(), to.as_bytes(), &n]), enc(&users))?;
                }
            }
            folders.insert(tk, enc(&ts))?;
        }
        Event::Labeled { mailbox, folder, uid, hash, size, internal_date, flags } => {
            let fk = key(&[mailbox.as_bytes(), folder.as_bytes()]);
            let Some(mut st) = get_val::<FolderState>(folders, &fk)? else {
                return Err(Error::Invalid(format!(
                    "record {seq}: label in {mailbox}/{folder}: the folder does not exist"
                )));
            };
            // The PEC metadata and archive time are the filed
            // message's (wherever it is, hidden included).
            let home = match hashes.get(hash_key(mailbox, hash))? {
                Some(loc) => {
                    let (f, u) = split_loc(&loc);
                    let k = key(&[mailbox.as_bytes(), f.as_bytes(), &u.to_be_bytes()]);
                    match get_val::<MessageMeta>(&msgs.t, &k)? {
                        Some(m) => Some(m),
                        None => get_val::<MessageMeta>(hidden, &k)?,
                    }
                }
                None => None,
            };
            st.exists += 1;
            st.size += size;
            st.bump(time);
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
            msgs.insert(key(&[mailbox.as_bytes(), folder.as_bytes(), &uid.to_be_bytes()]), enc(&m))?;
            folders.insert(fk, enc(&st))?;
        }
        Event::Unlabeled { mailbox, folder, uids, .. } | Event::Purged { mailbox, folder, uids, .. } => {
            let fk = key(&[mailbox.as_bytes(), folder.as_bytes()]);
            if let Some(mut st) = get_val::<FolderState>(folders, &fk)? {
                for uid in uids {
                    let u = uid.to_be_bytes();
                    let Some(v) = msgs.remove(key(&[mailbox.as_bytes(), folder.as_bytes(), &u]))? else {
                        continue;
                    };
                    let m: MessageMeta = dec(&v)?;
                    st.exists = st.exists.saturating_sub(1);
                    st.size = st.size.saturating_sub(m.size);
                    st.bump(time);
                    // A purge may take the place a message is
                    // filed at: the mailbox no longer holds it.
                    let hk = hash_key(mailbox, &m.hash);
                    if hashes.get(&hk)?.is_some_and(|loc| split_loc(&loc) == (folder.clone(), *uid)) {
                        hashes.remove(hk)?;
                    }
                    let k2 = key(&[mailbox.as_bytes(), folder.as_bytes(), &u]);
                    if let Some(users) = get_val::<Vec<String>>(seen_by, &k2)? {
                        seen_by.remove(k2)?;
                        for user in &users {
                            seen.remove(key(&[user.as_bytes(), mailbox.as_bytes(), folder.as_bytes(), &u]))?;
                        }
                    }
                }
                folders.insert(fk, enc(&st))?;
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
                    reconcile_archived(sent, mailbox, m, hash, *internal_date, time)?;
                }
                let fk = key(&[mailbox.as_bytes(), folder.as_bytes()]);
                let mut st: FolderState = match folders.get(&fk)? {
                    Some(v) => dec(&v)?,
                    None => {
                        return Err(Error::Invalid(format!("record {seq}: folder {mailbox}/{folder} does not exist")))
                    }
                };
                st.bump(time);
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
                        meta.insert(ak, a.to_be_bytes())?;
                        a
                    }),
                    label: false,
                };
                folders.insert(fk, enc(&st))?;
                msgs.insert(key(&[mailbox.as_bytes(), folder.as_bytes(), &uid.to_be_bytes()]), enc(&meta_v))?;
                hashes.insert(hash_key(mailbox, hash), key(&[folder.as_bytes(), &uid.to_be_bytes()]))?;
            }
            if let Some(p) = pref {
                provider.insert(
                    key(&[mailbox.as_bytes(), p.folder.as_bytes(), &p.uidvalidity.to_be_bytes(), &p.uid.to_be_bytes()]),
                    enc(&ProviderEntry { hash: hash.clone(), size: *size, internal_date: *internal_date }),
                )?;
                sync.insert(key(&[mailbox.as_bytes(), p.folder.as_bytes()]), p.uidvalidity.to_be_bytes())?;
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
            sync.insert(key(&[mailbox.as_bytes(), folder.as_bytes()]), new_uidvalidity.to_be_bytes())?;
        }
        Event::FlagsChanged { mailbox, folder, uids, op, flags } => {
            let fk = key(&[mailbox.as_bytes(), folder.as_bytes()]);
            let Some(mut st) = get_val::<FolderState>(folders, &fk)? else {
                return Ok(());
            };
            for uid in uids {
                let mk = key(&[mailbox.as_bytes(), folder.as_bytes(), &uid.to_be_bytes()]);
                let Some(mut m) = get_val::<MessageMeta>(&msgs.t, &mk)? else {
                    continue;
                };
                let new = op.apply(&m.flags, flags);
                if new != m.flags {
                    st.bump(time);
                    m.flags = new;
                    m.modseq = st.highest_modseq;
                    msgs.insert(mk, enc(&m))?;
                }
            }
            folders.insert(fk, enc(&st))?;
        }
        Event::SeenChanged { user, mailbox, folder, uids, seen: on } => {
            // A user's \Seen is part of what their client shows of the
            // message: a new MODSEQ (CONDSTORE clients resynchronise it).
            let fk = key(&[mailbox.as_bytes(), folder.as_bytes()]);
            let mut st = get_val::<FolderState>(folders, &fk)?;
            for uid in uids {
                let u = uid.to_be_bytes();
                if let Some(st) = st.as_mut() {
                    let mk = key(&[mailbox.as_bytes(), folder.as_bytes(), &u]);
                    if let Some(mut m) = get_val::<MessageMeta>(&msgs.t, &mk)? {
                        m.modseq = st.bump(time);
                        msgs.insert(mk, enc(&m))?;
                    }
                }
                let k1 = key(&[user.as_bytes(), mailbox.as_bytes(), folder.as_bytes(), &u]);
                let k2 = key(&[mailbox.as_bytes(), folder.as_bytes(), &u]);
                let mut users: Vec<String> = get_val(seen_by, &k2)?.unwrap_or_default();
                users.retain(|x| x != user);
                if *on {
                    seen.insert(k1, [])?;
                    users.push(user.clone());
                } else {
                    seen.remove(k1)?;
                }
                if users.is_empty() {
                    seen_by.remove(k2)?;
                } else {
                    seen_by.insert(k2, enc(&users))?;
                }
            }
            if let Some(st) = st {
                folders.insert(fk, enc(&st))?;
            }
        }
        Event::Hidden { mailbox, folder, uids, .. } => {
            let fk = key(&[mailbox.as_bytes(), folder.as_bytes()]);
            if let Some(mut st) = get_val::<FolderState>(folders, &fk)? {
                for uid in uids {
                    let mk = key(&[mailbox.as_bytes(), folder.as_bytes(), &uid.to_be_bytes()]);
                    if let Some(v) = msgs.remove(mk.clone())? {
                        let m: MessageMeta = dec(&v)?;
                        st.exists = st.exists.saturating_sub(1);
                        st.size = st.size.saturating_sub(m.size);
                        st.bump(time);
                        // Numbered in the virtual Trash in the
                        // order of hiding: a fold over the
                        // journal, so a rebuild numbers alike.
                        let tk = key(&[b"trash", mailbox.as_bytes()]);
                        let t = meta.get(&tk)?.map(|v| be32(&v)).unwrap_or(0) + 1;
                        meta.insert(tk, t.to_be_bytes())?;
                        let mut m = m;
                        m.trash_uid = Some(t);
                        // The hashes entry stays: the provider copy
                        // (if any) is recognised, not re-filed.
                        hidden.insert(mk, enc(&m))?;
                    }
                }
                folders.insert(fk, enc(&st))?;
            }
        }
        Event::Unhidden { mailbox, folder, moves } => {
            let fk = key(&[mailbox.as_bytes(), folder.as_bytes()]);
            let Some(mut st) = get_val::<FolderState>(folders, &fk)? else {
                return Err(Error::Invalid(format!(
                    "record {seq}: unhide into {mailbox}/{folder}: the folder does not exist"
                )));
            };
            for (old, new) in moves {
                let hk = key(&[mailbox.as_bytes(), folder.as_bytes(), &old.to_be_bytes()]);
                let Some(v) = hidden.remove(hk)? else {
                    continue;
                };
                let mut m: MessageMeta = dec(&v)?;
                m.trash_uid = None;
                st.exists += 1;
                st.size += m.size;
                st.bump(time);
                st.uidnext = st.uidnext.max(new + 1);
                m.modseq = st.highest_modseq;
                msgs.insert(key(&[mailbox.as_bytes(), folder.as_bytes(), &new.to_be_bytes()]), enc(&m))?;
                hashes.insert(hash_key(mailbox, &m.hash), key(&[folder.as_bytes(), &new.to_be_bytes()]))?;
            }
            folders.insert(fk, enc(&st))?;
        }
        Event::Moved { mailbox, from, to, moves } => {
            let fk = key(&[mailbox.as_bytes(), from.as_bytes()]);
            let tk = key(&[mailbox.as_bytes(), to.as_bytes()]);
            let (Some(mut fs), Some(mut ts)) =
                (get_val::<FolderState>(folders, &fk)?, get_val::<FolderState>(folders, &tk)?)
            else {
                return Err(Error::Invalid(format!(
                    "record {seq}: move between {mailbox}/{from} and {mailbox}/{to}: a folder does not exist"
                )));
            };
            let before = (fs.exists, fs.size);
            for (old, new) in moves {
                let ok = key(&[mailbox.as_bytes(), from.as_bytes(), &old.to_be_bytes()]);
                let Some(v) = msgs.remove(ok)? else { continue };
                let mut m: MessageMeta = dec(&v)?;
                fs.exists = fs.exists.saturating_sub(1);
                fs.size = fs.size.saturating_sub(m.size);
                fs.bump(time);
                ts.exists += 1;
                ts.size += m.size;
                ts.bump(time);
                ts.uidnext = ts.uidnext.max(new + 1);
                m.modseq = ts.highest_modseq;
                msgs.insert(key(&[mailbox.as_bytes(), to.as_bytes(), &new.to_be_bytes()]), enc(&m))?;
                // Where the message is filed moves with it; a
                // category's label moving elsewhere leaves it.
                let hk = hash_key(mailbox, &m.hash);
                let filed_here = hashes.get(&hk)?.is_none_or(|loc| split_loc(&loc) == (from.clone(), *old));
                if filed_here {
                    hashes.insert(hk, key(&[to.as_bytes(), &new.to_be_bytes()]))?;
                }
                // Carry every user's \\Seen along.
                let (o, n) = (old.to_be_bytes(), new.to_be_bytes());
                let ok2 = key(&[mailbox.as_bytes(), from.as_bytes(), &o]);
                if let Some(users) = get_val::<Vec<String>>(seen_by, &ok2)? {
                    seen_by.remove(ok2)?;
                    for user in &users {
                        seen.remove(key(&[user.as_bytes(), mailbox.as_bytes(), from.as_bytes(), &o]))?;
                        seen.insert(key(&[user.as_bytes(), mailbox.as_bytes(), to.as_bytes(), &n]), [])?;
                    }
                    seen_by.insert(key(&[mailbox.as_bytes(), to.as_bytes(), &n]), enc(&users))?;
                }
            }
            if from == to {
                // Into the folder itself: new UIDs, the same
                // messages (one state, read twice above).
                (ts.exists, ts.size) = before;
            }
            if from != to {
                folders.insert(fk, enc(&fs))?;
            }
            folders.insert(tk, enc(&ts))?;
        }
        Event::Expired { mailbox, items, .. } => {
            let mut touched: BTreeMap<String, FolderState> = BTreeMap::new();
            for it in items {
                let u = it.uid.to_be_bytes();
                let mk = key(&[mailbox.as_bytes(), it.folder.as_bytes(), &u]);
                if it.hidden {
                    hidden.remove(mk)?;
                } else if let Some(v) = msgs.remove(mk)? {
                    let m: MessageMeta = dec(&v)?;
                    let st = match touched.get_mut(&it.folder) {
                        Some(st) => st,
                        None => {
                            let fk = key(&[mailbox.as_bytes(), it.folder.as_bytes()]);
                            let Some(st) = get_val::<FolderState>(folders, &fk)? else { continue };
                            touched.entry(it.folder.clone()).or_insert(st)
                        }
                    };
                    st.exists = st.exists.saturating_sub(1);
                    st.size = st.size.saturating_sub(m.size);
                    st.bump(time);
                    let k2 = key(&[mailbox.as_bytes(), it.folder.as_bytes(), &u]);
                    if let Some(users) = get_val::<Vec<String>>(seen_by, &k2)? {
                        seen_by.remove(k2)?;
                        for user in &users {
                            seen.remove(key(&[user.as_bytes(), mailbox.as_bytes(), it.folder.as_bytes(), &u]))?;
                        }
                    }
                }
                // The mailbox no longer holds it anywhere: no place to file a
                // provider copy under, no handling to track.
                hashes.remove(hash_key(mailbox, &it.hash))?;
                let hk = key(&[mailbox.as_bytes(), it.hash.as_bytes()]);
                if let Some(h) = get_val::<Handling>(handling, &hk)? {
                    handling.remove(hk)?;
                    hstate.remove(key(&[mailbox.as_bytes(), &[h.state.code()], &h.vuid.to_be_bytes()]))?;
                }
            }
            for (folder, st) in touched {
                folders.insert(key(&[mailbox.as_bytes(), folder.as_bytes()]), enc(&st))?;
            }
        }
        Event::HoldPlaced { mailbox, whole, hashes: held, reason, query } => {
            let h = crate::retention::Hold {
                id: seq,
                mailbox: mailbox.clone(),
                whole: *whole,
                hashes: held.clone(),
                reason: reason.clone(),
                query: query.clone(),
                placed: time,
            };
            meta.insert(hold_key(mailbox, seq), enc(&h))?;
        }
        Event::HoldReleased { mailbox, hold, .. } => {
            meta.remove(hold_key(mailbox, *hold))?;
        }
        Event::Anchored { seq: anchored, .. } => {
            meta.insert(b"anchor".as_slice(), anchored.to_be_bytes())?;
        }
        Event::Exported { mailbox, last_seq, partial, .. } => {
            if !partial {
                meta.insert(key(&[b"export", mailbox.as_bytes()]), last_seq.to_be_bytes())?;
            }
        }
        Event::Handled { mailbox, transition, items } => {
            for i in items {
                let k = key(&[mailbox.as_bytes(), i.hash.as_bytes()]);
                let cur: Option<Handling> = get_val(handling, &k)?;
                let mut h = Handling::apply(cur.as_ref(), transition, time);
                h.vuid = i.vuid;
                set_handling(meta, handling, hstate, mailbox, &i.hash, cur.as_ref(), &h)?;
                // Its computed keywords changed: a new MODSEQ.
                let fk = key(&[mailbox.as_bytes(), i.folder.as_bytes()]);
                let mk = key(&[mailbox.as_bytes(), i.folder.as_bytes(), &i.uid.to_be_bytes()]);
                if let (Some(mut st), Some(mut m)) =
                    (get_val::<FolderState>(folders, &fk)?, get_val::<MessageMeta>(&msgs.t, &mk)?)
                {
                    m.modseq = st.bump(time);
                    folders.insert(fk, enc(&st))?;
                    msgs.insert(mk, enc(&m))?;
                }
            }
        }
    }
    Ok(())
}

impl Index {
    pub fn folder(&self, mailbox: &str, folder: &str) -> Result<Option<FolderState>, Error> {
        match self.r(FOLDERS)?.get(key(&[mailbox.as_bytes(), folder.as_bytes()]))? {
            Some(v) => Ok(Some(dec(&v)?)),
            None => Ok(None),
        }
    }

    /// Every folder of `mailbox` with its state.
    pub fn folders(&self, mailbox: &str) -> Result<Vec<(String, FolderState)>, Error> {
        let mut out = Vec::new();
        for kv in self.r(FOLDERS)?.scan_prefix(prefix(&[mailbox.as_bytes()])) {
            let (k, v) = kv?;
            let name = String::from_utf8_lossy(&k[mailbox.len() + 1..]).into_owned();
            out.push((name, dec(&v)?));
        }
        Ok(out)
    }

    /// Read what a SELECT of each folder reads first (its state, its first
    /// and last entries, the mailbox's handling rows): the index's cache
    /// then holds the pages on those paths, and the first SELECT after a
    /// start does not fetch them one by one. `tail`: how many last
    /// entries a SELECT reads at once. The folders read.
    pub fn warm_folders(&self, tail: usize) -> Result<usize, Error> {
        let tx = self.db.begin_read()?;
        let folders = RTbl(tx.open_table(FOLDERS)?);
        let msgs = RTbl(tx.open_table(MSGS)?);
        let handling = RTbl(tx.open_table(HANDLING)?);
        let mut n = 0;
        let mut last_mailbox = Vec::new();
        for kv in folders.0.iter()? {
            let (k, _) = kv?;
            let k = k.value();
            let mut p = k.to_vec();
            p.push(0);
            let mut range = msgs.0.range(uid_key(&p, 0).as_slice()..=uid_key(&p, u32::MAX).as_slice())?;
            range.next().transpose()?;
            for kv in range.rev().take(tail) {
                kv?;
            }
            let mailbox = k.split(|b| *b == 0).next().unwrap_or_default();
            if mailbox != last_mailbox.as_slice() {
                last_mailbox = mailbox.to_vec();
                handling.scan_prefix(prefix(&[mailbox])).take(1).for_each(drop);
            }
            n += 1;
        }
        Ok(n)
    }

    /// Every mailbox that has folders.
    pub fn mailboxes(&self) -> Result<Vec<String>, Error> {
        let mut out: Vec<String> = Vec::new();
        for kv in self.r(FOLDERS)?.iter() {
            let (k, _) = kv?;
            let m = k.split(|b| *b == 0).next().unwrap_or_default();
            let m = String::from_utf8_lossy(m).into_owned();
            if out.last() != Some(&m) {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// A folder's messages in UID order: one key range, decoded in place.
    /// Without `pec`, their PEC metadata is left out (not even parsed).
    pub fn messages(&self, mailbox: &str, folder: &str, pec: bool) -> Result<Vec<(u32, MessageMeta)>, Error> {
        let p = prefix(&[mailbox.as_bytes(), folder.as_bytes()]);
        let tx = self.db.begin_read()?;
        // Sized once from the folder's count (a million entries grown by
        // doubling were copied twice over).
        let exists = RTbl(tx.open_table(FOLDERS)?)
            .get(key(&[mailbox.as_bytes(), folder.as_bytes()]))?
            .and_then(|v| dec::<FolderState>(&v).ok())
            .map_or(0, |st| st.exists);
        let t = RTbl(tx.open_table(MSGS)?);
        let mut out = Vec::with_capacity(usize::try_from(exists).unwrap_or(0).min(1 << 24));
        for kv in t.0.range(p.as_slice()..)? {
            let (k, v) = kv?;
            let k = k.value();
            if !k.starts_with(&p) {
                break;
            }
            let m = codec::decode_meta_with(v.value(), pec).map_err(|e| Error::Invalid(e.to_string()))?;
            out.push((be32(&k[p.len()..]), m));
        }
        Ok(out)
    }

    /// A folder's messages in UID order, each made by `each` from its
    /// [`codec::Brief`] (see [`FolderReader::scan`]).
    pub fn scan_folder<S, T: Send>(
        &self,
        mailbox: &str,
        folder: &str,
        init: impl Fn() -> S + Sync,
        each: impl Fn(&mut S, codec::Brief<'_>) -> T + Sync,
    ) -> Result<Vec<(u32, T)>, Error> {
        self.folder_reader(mailbox, folder)?.scan(init, each)
    }

    /// A folder as it is now, to read from for as long as the reader is
    /// held: its state and its entries from one read transaction, which
    /// later batches do not change. Hold it briefly: while it lives the
    /// pages it sees cannot be reused.
    pub fn folder_reader(&self, mailbox: &str, folder: &str) -> Result<FolderReader, Error> {
        let tx = self.db.begin_read()?;
        let state = RTbl(tx.open_table(FOLDERS)?)
            .get(key(&[mailbox.as_bytes(), folder.as_bytes()]))?
            .map(|v| dec::<FolderState>(&v))
            .transpose()?;
        let msgs = RTbl(tx.open_table(MSGS)?);
        Ok(FolderReader { msgs, prefix: prefix(&[mailbox.as_bytes(), folder.as_bytes()]), state })
    }

    /// The folder's state and the entries of `uids` (`None`: not there),
    /// each made by `each`, in one read transaction.
    pub fn briefs<T>(
        &self,
        mailbox: &str,
        folder: &str,
        uids: &[u32],
        mut each: impl FnMut(codec::Brief<'_>) -> T,
    ) -> Result<FolderChanges<T>, Error> {
        let tx = self.db.begin_read()?;
        let st = RTbl(tx.open_table(FOLDERS)?).get(key(&[mailbox.as_bytes(), folder.as_bytes()]))?;
        let st = st.map(|v| dec::<FolderState>(&v)).transpose()?;
        let t = tx.open_table(MSGS)?;
        let mut out = Vec::with_capacity(uids.len());
        for &uid in uids {
            let v = t.get(key(&[mailbox.as_bytes(), folder.as_bytes(), &uid.to_be_bytes()]).as_slice())?;
            let m = match v {
                Some(v) => Some(each(codec::decode_brief(v.value()).map_err(|e| Error::Invalid(e.to_string()))?)),
                None => None,
            };
            out.push((uid, m));
        }
        Ok((st, out))
    }

    pub fn message(&self, mailbox: &str, folder: &str, uid: u32) -> Result<Option<MessageMeta>, Error> {
        match self.r(MSGS)?.get(key(&[mailbox.as_bytes(), folder.as_bytes(), &uid.to_be_bytes()]))? {
            Some(v) => Ok(Some(dec(&v)?)),
            None => Ok(None),
        }
    }

    /// Which of `items` still list the message they name (in its folder,
    /// or in Trash when `hidden`): one read transaction for them all.
    pub fn still_listed(&self, mailbox: &str, items: &[super::record::ExpiredItem]) -> Result<Vec<bool>, Error> {
        let (m, h) = (self.r(MSGS)?, self.r(HIDDEN)?);
        items
            .iter()
            .map(|it| {
                let k = key(&[mailbox.as_bytes(), it.folder.as_bytes(), &it.uid.to_be_bytes()]);
                let v = if it.hidden { h.get(&k)? } else { m.get(&k)? };
                // The hash is the entry's first field (see `codec`).
                Ok(match v {
                    Some(v) => dec::<MessageMeta>(&v)?.hash == it.hash,
                    None => false,
                })
            })
            .collect()
    }

    /// Which of `hashes` some mailbox (any of `mailboxes`) still holds.
    pub fn held_by_any(&self, mailboxes: &[String], hashes: &[String]) -> Result<Vec<bool>, Error> {
        let t = self.r(HASHES)?;
        hashes
            .iter()
            .map(|h| {
                for m in mailboxes {
                    if t.get(hash_key(m, h))?.is_some() {
                        return Ok(true);
                    }
                }
                Ok(false)
            })
            .collect()
    }

    /// Where these bytes already are in `mailbox`, if anywhere.
    pub fn find_hash(&self, mailbox: &str, hash: &str) -> Result<Option<(String, u32)>, Error> {
        Ok(self.r(HASHES)?.get(hash_key(mailbox, hash))?.map(|v| split_loc(&v)))
    }

    /// Archived messages still on the provider, by provider UID.
    pub fn provider_entries(
        &self,
        mailbox: &str,
        folder: &str,
        uidvalidity: u32,
    ) -> Result<BTreeMap<u32, ProviderEntry>, Error> {
        let p = prefix(&[mailbox.as_bytes(), folder.as_bytes(), &uidvalidity.to_be_bytes()]);
        let mut out = BTreeMap::new();
        for kv in self.r(PROVIDER)?.scan_prefix(&p) {
            let (k, v) = kv?;
            out.insert(be32(&k[p.len()..]), dec(&v)?);
        }
        Ok(out)
    }

    /// Provider entries of `mailbox`/`folder` under any UIDVALIDITY, keyed
    /// by (uidvalidity, uid).
    pub fn provider_entries_all(&self, mailbox: &str, folder: &str) -> Result<ProviderEntries, Error> {
        let p = prefix(&[mailbox.as_bytes(), folder.as_bytes()]);
        let mut out = Vec::new();
        for kv in self.r(PROVIDER)?.scan_prefix(&p) {
            let (k, v) = kv?;
            let rest = &k[p.len()..];
            if rest.len() == 9 {
                out.push(((be32(&rest[..4]), be32(&rest[5..])), dec(&v)?));
            }
        }
        Ok(out)
    }

    pub fn provider_uidvalidity(&self, mailbox: &str, folder: &str) -> Result<Option<u32>, Error> {
        Ok(self.r(SYNC)?.get(key(&[mailbox.as_bytes(), folder.as_bytes()]))?.map(|v| be32(&v)))
    }

    /// UIDs in `mailbox`/`folder` that `user` has seen.
    /// The UIDs `user` has seen in `folder`, ascending (the keys' order).
    /// Read in place: a user who has seen a million messages has a
    /// million keys here, and copying each (two allocations) was most of
    /// a SELECT.
    pub fn seen_uids(&self, user: &str, mailbox: &str, folder: &str) -> Result<Vec<u32>, Error> {
        Ok(self.seen_uids_at_most(user, mailbox, folder, usize::MAX)?.unwrap_or_default())
    }

    /// [`Index::seen_uids`] if there are at most `most` of them, else
    /// `None` (having read `most` + 1).
    pub fn seen_uids_at_most(
        &self,
        user: &str,
        mailbox: &str,
        folder: &str,
        most: usize,
    ) -> Result<Option<Vec<u32>>, Error> {
        let p = prefix(&[user.as_bytes(), mailbox.as_bytes(), folder.as_bytes()]);
        let t = self.r(SEEN)?;
        let mut out = Vec::new();
        for kv in t.0.range(p.as_slice()..)? {
            let (k, _) = kv?;
            let k = k.value();
            if !k.starts_with(&p) {
                break;
            }
            if out.len() == most {
                return Ok(None);
            }
            out.push(be32(&k[p.len()..]));
        }
        Ok(Some(out))
    }

    /// The legal holds standing on `mailbox` (every mailbox: `None`), in
    /// the order they were placed.
    pub fn holds(&self, mailbox: Option<&str>) -> Result<Vec<crate::retention::Hold>, Error> {
        let p = match mailbox {
            Some(m) => prefix(&[b"hold", m.as_bytes()]),
            None => prefix(&[b"hold"]),
        };
        let mut out: Vec<crate::retention::Hold> = Vec::new();
        for kv in self.r(META)?.scan_prefix(&p) {
            let (_, v) = kv?;
            out.push(dec(&v)?);
        }
        out.sort_by_key(|h| h.id);
        Ok(out)
    }

    /// The last record whose chain head was time-stamped (0: none yet).
    pub fn last_anchor(&self) -> Result<u64, Error> {
        Ok(self.r(META)?.get(b"anchor")?.map(|v| be64(&v)).unwrap_or(0))
    }

    /// The last journal record covered by an export of `mailbox` (0: none).
    pub fn last_export(&self, mailbox: &str) -> Result<u64, Error> {
        Ok(self.r(META)?.get(key(&[b"export", mailbox.as_bytes()]))?.map(|v| be64(&v)).unwrap_or(0))
    }

    /// Every place in `mailbox` (folders and Trash) listing a message that
    /// entered the archive before `cutoff`: one read over the mailbox's
    /// key ranges, for the expiry run.
    pub fn archived_before(
        &self,
        mailbox: &str,
        cutoff: DateTime<Utc>,
        mut each: impl FnMut(super::record::ExpiredItem, &MessageMeta),
    ) -> Result<(), Error> {
        let p = prefix(&[mailbox.as_bytes()]);
        for (table, hidden) in [(MSGS, false), (HIDDEN, true)] {
            for kv in self.r(table)?.scan_prefix(&p) {
                let (k, v) = kv?;
                let m: MessageMeta = dec(&v)?;
                if m.archived >= cutoff {
                    continue;
                }
                let rest = &k[p.len()..];
                let cut = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
                let folder = String::from_utf8_lossy(&rest[..cut]).into_owned();
                let uid = be32(&rest[(cut + 1).min(rest.len())..]);
                each(super::record::ExpiredItem { hash: m.hash.clone(), folder, uid, hidden }, &m);
            }
        }
        Ok(())
    }

    /// A cached value derived from blob `hash` under `kind`.
    /// One read transaction on the derived cache, for many lookups.
    /// It sees every value cached so far: those waiting are written first.
    pub fn derived_reader(&self) -> Result<DerivedReader, Error> {
        self.write_pending()?;
        let tx = self.derived.begin_read()?;
        // The common values after the read began: an entry it sees was
        // written after its numbers were taken (with `pending` locked).
        let common = self.common.lock().unwrap_or_else(PoisonError::into_inner).values();
        Ok(DerivedReader(RTbl(tx.open_table(DERIVED)?), common))
    }

    pub fn derived(&self, kind: &str, hash: &str) -> Result<Option<Vec<u8>>, Error> {
        self.derived_reader()?.get(kind, hash)
    }

    /// Cache a derived value: written with others (see [`PENDING_MAX`]), or
    /// when a reader is made ([`Index::derived_reader`]). Durable at most a second apart: a redb file
    /// whose commits are never durable cannot reuse the pages they free,
    /// and grows.
    pub fn put_derived(&self, kind: &str, hash: &str, v: &[u8]) -> Result<(), Error> {
        let due = {
            let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if p.0.is_empty() {
                p.1 = Instant::now();
            }
            let mut shared = None;
            if kind == super::fields::FIELDS_KIND {
                let mut common = self.common.lock().unwrap_or_else(PoisonError::into_inner);
                shared = super::fields::share(v, |text| {
                    let (n, added) = common.number(text);
                    if let Some((n, text)) = added {
                        p.0.push((common_key(n), text.into_bytes()));
                    }
                    n
                });
            }
            p.0.push((derived_key(kind, hash), shared.unwrap_or_else(|| v.to_vec())));
            p.0.len() >= PENDING_MAX || p.1.elapsed() >= DURABLE_EVERY
        };
        if due {
            self.write_pending()?;
        }
        Ok(())
    }

    /// Write the derived values waiting, in one transaction. The waiting
    /// list stays locked until it is committed, so a reader made meanwhile
    /// sees them all.
    fn write_pending(&self) -> Result<(), Error> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.0.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut pending.0);
        let mut tx = self.derived.begin_write()?;
        let durable = {
            let mut last = self.derived_durable.lock().unwrap_or_else(PoisonError::into_inner);
            let due = last.elapsed() >= DURABLE_EVERY;
            if due {
                *last = Instant::now();
            }
            due
        };
        if !durable {
            tx.set_durability(Durability::None)?;
        }
        {
            let mut t = Tbl(tx.open_table(DERIVED)?);
            for (k, v) in &batch {
                t.0.insert(k.as_slice(), v.as_slice())?;
            }
        }
        tx.commit()?;
        drop(pending);
        Ok(())
    }

    /// A message hidden from `mailbox`/`folder` by a client's EXPUNGE.
    pub fn hidden_message(&self, mailbox: &str, folder: &str, uid: u32) -> Result<Option<MessageMeta>, Error> {
        match self.r(HIDDEN)?.get(key(&[mailbox.as_bytes(), folder.as_bytes(), &uid.to_be_bytes()]))? {
            Some(v) => Ok(Some(dec(&v)?)),
            None => Ok(None),
        }
    }

    /// Every message hidden from `mailbox` (by EXPUNGE or a move into
    /// Trash): (folder, uid there, meta with its `trash_uid`), in Trash
    /// order.
    pub fn hidden_messages(&self, mailbox: &str) -> Result<Vec<(String, u32, MessageMeta)>, Error> {
        let p = prefix(&[mailbox.as_bytes()]);
        let mut out = Vec::new();
        for kv in self.r(HIDDEN)?.scan_prefix(&p) {
            let (k, v) = kv?;
            let rest = &k[p.len()..];
            // folder, 0 separator, 4-byte UID (see `key`)
            if rest.len() < 5 {
                continue;
            }
            let folder = String::from_utf8_lossy(&rest[..rest.len() - 5]).into_owned();
            let uid = be32(&rest[rest.len() - 4..]);
            let m: MessageMeta = dec(&v)?;
            out.push((folder, uid, m));
        }
        out.sort_by_key(|(_, _, m)| m.trash_uid);
        Ok(out)
    }

    /// `user`'s subscription choices: (IMAP folder name, subscribed).
    pub fn subscriptions(&self, user: &str) -> Result<Vec<(String, bool)>, Error> {
        super::subscriptions::of(&self.r(SUBS)?.0, user)
    }

    /// The last category number and UIDVALIDITY given out in `mailbox`
    /// ((0, 0): none).
    pub fn last_category(&self, mailbox: &str) -> Result<(u32, u32), Error> {
        Ok(self.r(META)?.get(key(&[b"category", mailbox.as_bytes()]))?.map(|v| last_category(&v)).unwrap_or((0, 0)))
    }

    /// The last All UID given out in `mailbox` (0: none).
    pub fn last_all_uid(&self, mailbox: &str) -> Result<u32, Error> {
        Ok(self.r(META)?.get(key(&[b"all", mailbox.as_bytes()]))?.map(|v| be32(&v)).unwrap_or(0))
    }

    /// Every message of `mailbox` once, where it is filed (labels left
    /// out, hidden ones too): (All UID, folder, UID there, metadata), by
    /// All UID.
    pub fn all_messages(&self, mailbox: &str) -> Result<Vec<(u32, String, u32, MessageMeta)>, Error> {
        let p = prefix(&[mailbox.as_bytes()]);
        let mut out = Vec::new();
        for kv in self.r(MSGS)?.scan_prefix(&p) {
            let (k, v) = kv?;
            let m: MessageMeta = dec(&v)?;
            let (Some(a), false) = (m.all_uid, m.label) else {
                continue;
            };
            let rest = &k[p.len()..];
            let cut = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            let folder = String::from_utf8_lossy(&rest[..cut]).into_owned();
            out.push((a, folder, be32(&rest[(cut + 1).min(rest.len())..]), m));
        }
        out.sort_by_key(|e| e.0);
        Ok(out)
    }

    /// The last Trash UID given out in `mailbox` (0: none).
    pub fn last_trash_uid(&self, mailbox: &str) -> Result<u32, Error> {
        Ok(self.r(META)?.get(key(&[b"trash", mailbox.as_bytes()]))?.map(|v| be32(&v)).unwrap_or(0))
    }

    /// The index's format: one written by an older pecgate is rebuilt
    /// from the journal when the store opens.
    pub fn format(&self) -> Result<u32, Error> {
        Ok(self.r(META)?.get("format")?.map(|v| be32(&v)).unwrap_or(0))
    }

    pub fn set_format(&self) -> Result<(), Error> {
        let tx = self.db.begin_write()?;
        Tbl(tx.open_table(META)?).insert("format", FORMAT.to_be_bytes())?;
        tx.commit()?;
        Ok(())
    }

    /// Every tree's content, for tests comparing a rebuilt index with the
    /// live one.
    pub fn dump(&self) -> Result<Dump, Error> {
        let mut out = Vec::new();
        let tx = self.db.begin_read()?;
        for (name, d) in TABLES {
            for kv in RTbl(tx.open_table(d)?).iter() {
                let (k, v) = kv?;
                out.push((name.to_string(), k, v));
            }
        }
        Ok(out)
    }

    /// Every table of both files with its entries and bytes, in file
    /// order (`pecgate store stats`: where the index's space goes).
    pub fn stats(&self) -> Result<Vec<TableStats>, Error> {
        use redb::ReadableTableMetadata;
        let mut out = Vec::new();
        let derived: [(&str, Def); 2] = [("derived", DERIVED), ("derived_meta", DERIVED_META)];
        for (file, db, tables) in [(FILE, &self.db, &TABLES[..]), (DERIVED_FILE, &self.derived, &derived[..])] {
            let tx = db.begin_read()?;
            for (name, d) in tables {
                let t = match tx.open_table(*d) {
                    Ok(t) => t,
                    Err(redb::TableError::TableDoesNotExist(_)) => continue,
                    Err(e) => return Err(e.into()),
                };
                let s = t.stats()?;
                out.push(TableStats {
                    file,
                    table: name,
                    entries: t.len()?,
                    stored: s.stored_bytes(),
                    metadata: s.metadata_bytes(),
                    fragmented: s.fragmented_bytes(),
                });
            }
        }
        Ok(out)
    }

    /// Drop every tree (before a rebuild from the journal).
    /// The reconciliation state of the sent message `key` (a normalised
    /// Message-ID) in `mailbox`.
    pub fn sent_state(&self, mailbox: &str, key: &str) -> Result<Option<SentMessage>, Error> {
        match self.r(SENT)?.get(self::key(&[mailbox.as_bytes(), key.as_bytes()]))? {
            Some(v) => Ok(Some(dec(&v)?)),
            None => Ok(None),
        }
    }

    /// Every sent message of `mailbox` with its state (also those known
    /// only from receipts, e.g. sent from the provider's webmail).
    pub fn sent_states(&self, mailbox: &str) -> Result<Vec<SentMessage>, Error> {
        let mut out = Vec::new();
        for kv in self.r(SENT)?.scan_prefix(prefix(&[mailbox.as_bytes()])) {
            out.push(dec(&kv?.1)?);
        }
        Ok(out)
    }

    pub fn campaign(&self, id: &str) -> Result<Option<CampaignRow>, Error> {
        self.r(CAMPAIGNS)?.get(id.as_bytes())?.map(|v| dec(&v)).transpose()
    }

    /// Every campaign, by id (ids begin with their creation time).
    pub fn campaigns(&self) -> Result<Vec<CampaignRow>, Error> {
        self.r(CAMPAIGNS)?.iter().map(|kv| dec(&kv?.1)).collect()
    }

    pub fn notice(&self, campaign: &str, n: u32) -> Result<Option<NoticeRow>, Error> {
        self.r(NOTICES)?.get(notice_key(campaign, n))?.map(|v| dec(&v)).transpose()
    }

    /// A campaign's notices in order, read one at a time by `each`
    /// (a campaign can hold tens of thousands).
    pub fn notices(&self, campaign: &str, mut each: impl FnMut(NoticeRow)) -> Result<(), Error> {
        for kv in self.r(NOTICES)?.scan_prefix(prefix(&[campaign.as_bytes()])) {
            each(dec(&kv?.1)?);
        }
        Ok(())
    }

    pub fn handling(&self, mailbox: &str, hash: &str) -> Result<Option<Handling>, Error> {
        match self.r(HANDLING)?.get(key(&[mailbox.as_bytes(), hash.as_bytes()]))? {
            Some(v) => Ok(Some(dec(&v)?)),
            None => Ok(None),
        }
    }

    pub fn handling_all(&self, mailbox: &str) -> Result<Vec<(String, Handling)>, Error> {
        let p = prefix(&[mailbox.as_bytes()]);
        let mut out = Vec::new();
        for kv in self.r(HANDLING)?.scan_prefix(&p) {
            let (k, v) = kv?;
            out.push((String::from_utf8_lossy(&k[p.len()..]).into_owned(), dec(&v)?));
        }
        Ok(out)
    }

    /// Does `mailbox` track any message's handling?
    pub fn has_handling(&self, mailbox: &str) -> Result<bool, Error> {
        self.r(HANDLING)?.scan_prefix(prefix(&[mailbox.as_bytes()])).next().transpose().map(|e| e.is_some())
    }

    /// Tracked messages in one of `states`, in view-UID order.
    pub fn handling_in(&self, mailbox: &str, states: &[State]) -> Result<Vec<(String, Handling)>, Error> {
        let mut out = Vec::new();
        for s in states {
            let p = prefix(&[mailbox.as_bytes(), &[s.code()]]);
            for kv in self.r(HSTATE)?.scan_prefix(&p) {
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
    pub fn last_vuid(&self, mailbox: &str) -> Result<u32, Error> {
        Ok(self.r(META)?.get(key(&[b"vuid", mailbox.as_bytes()]))?.map(|v| be32(&v)).unwrap_or(0))
    }

    /// Empty every table (before a rebuild from the journal), and the
    /// derived cache with them.
    pub fn clear(&self) -> Result<(), Error> {
        let tx = self.db.begin_write()?;
        for (_, d) in TABLES {
            tx.delete_table(d)?;
        }
        Tables::open(&tx)?;
        tx.commit()?;
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.0.clear();
        *self.common.lock().unwrap_or_else(PoisonError::into_inner) = super::fields::Common::new(Vec::new());
        let tx = self.derived.begin_write()?;
        tx.delete_table(DERIVED)?;
        tx.open_table(DERIVED)?;
        tx.commit()?;
        drop(pending);
        self.flush()
    }
}
