//! Selected folders' message lists, compact and shared between sessions.
//!
//! A session keeps its selected folder's messages (UIDs, flags, sizes,
//! dates, blob hashes) to number them and to tell the client what changed.
//! An entry is a [`Msg`]: the hash as 32 raw bytes, the flags as one of the
//! few distinct flag sets of the listing ([`FlagSets`]), ≈ 100 bytes in
//! all, held in place in the list (a million-message folder: ≈ 100 MB, not
//! the 350 MB of decoded `MessageMeta`s behind one `Arc` each). Sessions
//! share whole lists: a list equal to the one another session holds for
//! the same folder is the same `Arc`, so ten thousand sessions on an
//! unchanged folder hold one list. Equality decides, not a version stamp,
//! so sharing can never show a session stale data; at worst (two versions
//! alive at once) it shares less.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use chrono::{DateTime, Utc};

use super::uidset::UidSet;
use crate::store::{BlobHash, Brief, FolderReader, MessageMeta, StoreError};

/// A set of flags and keywords, shared by every message that has it.
pub type FlagSet = Arc<[String]>;

/// A message as a selected folder's list holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub hash: BlobHash,
    pub size: u64,
    pub internal_date: DateTime<Utc>,
    pub modseq: u64,
    pub flags: FlagSet,
    /// In a virtual folder that numbers messages its own way (handling
    /// views, Trash, All), the message's UID in the folder that holds it.
    pub source_uid: Option<u32>,
    /// Archived by a client's APPEND into a category (see `MessageMeta`).
    pub appended: bool,
}

impl Msg {
    /// From a stored entry, its flags those `keep` keeps, as a set of `sets`.
    pub fn from_brief(b: Brief<'_>, sets: &mut FlagSets, keep: impl Fn(&str) -> bool) -> Msg {
        Msg {
            flags: sets.get(b.flags.clone().filter(|f| keep(f))),
            hash: b.hash,
            size: b.size,
            internal_date: b.internal_date,
            modseq: b.modseq,
            source_uid: None,
            appended: b.appended,
        }
    }

    /// From a decoded entry (the virtual folders, gathered from several).
    pub fn from_meta(m: &MessageMeta, sets: &mut FlagSets) -> Msg {
        Msg {
            hash: BlobHash::parse(&m.hash),
            size: m.size,
            internal_date: m.internal_date,
            modseq: m.modseq,
            flags: sets.get(m.flags.iter().map(String::as_str)),
            source_uid: m.source_uid,
            appended: m.appended,
        }
    }
}

/// The distinct flag sets of a listing, each allocated once: a million
/// messages have a handful of sets between them, most of them none.
pub struct FlagSets {
    by_hash: HashMap<u64, Vec<FlagSet>>,
    empty: FlagSet,
}

impl Default for FlagSets {
    fn default() -> FlagSets {
        FlagSets { by_hash: HashMap::new(), empty: Arc::from(Vec::new()) }
    }
}

impl FlagSets {
    /// The shared set of these flags, in this order.
    pub fn get<'a>(&mut self, flags: impl Iterator<Item = &'a str> + Clone) -> FlagSet {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let mut n = 0usize;
        for f in flags.clone() {
            f.hash(&mut h);
            n += 1;
        }
        if n == 0 {
            return self.empty.clone();
        }
        let bucket = self.by_hash.entry(h.finish()).or_default();
        if let Some(s) = bucket.iter().find(|s| s.len() == n && s.iter().map(String::as_str).eq(flags.clone())) {
            return s.clone();
        }
        let s: FlagSet = flags.map(str::to_string).collect::<Vec<_>>().into();
        bucket.push(s.clone());
        s
    }
}

/// `old` with `changes` (UID, new entry or `None`: gone), both in UID
/// order, in one pass.
pub fn merge(old: &Entries, changes: Vec<(u32, Option<Msg>)>) -> Entries {
    let mut out = Vec::with_capacity(old.len() + changes.len());
    let mut ch = changes.into_iter().peekable();
    for e in old.iter() {
        while let Some((u, m)) = ch.next_if(|c| c.0 < e.0) {
            out.extend(m.map(|m| (u, m)));
        }
        match ch.next_if(|c| c.0 == e.0) {
            Some((u, m)) => out.extend(m.map(|m| (u, m))),
            None => out.push(e.clone()),
        }
    }
    out.extend(ch.filter_map(|(u, m)| Some((u, m?))));
    out.into()
}

/// Lists by folder key.
#[derive(Default)]
pub struct SharedMetas {
    inner: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    /// Whole snapshots by folder key (see [`SharedMetas::intern_folder`]),
    /// with the newest stamp they are known to be current at.
    lists: HashMap<String, Listed>,
    /// The UIDs a user has seen, by user and folder key, with the stamp
    /// they were read at (see [`SharedMetas::seen`]).
    seen: HashMap<String, (Stamp, Weak<UidSet>)>,
    /// What SELECT tells of a list and a seen set (see
    /// [`SharedMetas::facts`]), the newest last.
    facts: Vec<(Weak<Entries>, Weak<UidSet>, Facts)>,
}

impl Table {
    /// Hold `l` as the list under `key`, sweeping dead lists now and then.
    fn keep(&mut self, key: &str, l: Listed) {
        self.lists.insert(key.to_string(), l);
        if self.lists.len() > SWEEP_SLACK {
            self.lists.retain(|_, l| l.list.strong_count() > 0);
        }
    }
}

/// What a SELECT tells of a folder's list besides its length: worked out
/// once per list and seen set, since walking a million entries takes
/// milliseconds and a warm SELECT of an unchanged folder should not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The newest MODSEQ of the messages (0: none).
    pub newest: u64,
    /// The keywords the messages carry (not the `\` flags), each once
    /// (ASCII case ignored), in the order they first appear.
    pub keywords: Arc<[String]>,
    /// How many messages are not in the seen set.
    pub unseen: usize,
    /// The position (from 0) of the first of them.
    pub first_unseen: Option<usize>,
    /// Worked out before the list was whole: `keywords` are those of its
    /// last messages only, and `newest` theirs (the folder's state has
    /// the newest MODSEQ of a store folder).
    pub partial: bool,
}

impl Facts {
    /// One walk of `list`.
    pub fn of(list: &[(u32, Msg)], seen: &UidSet) -> Facts {
        let (mut newest, mut unseen, mut first_unseen) = (0u64, 0usize, None);
        let mut sets: Vec<&FlagSet> = Vec::new();
        for (i, (uid, m)) in list.iter().enumerate() {
            newest = newest.max(m.modseq);
            if !seen.contains(*uid) {
                unseen += 1;
                first_unseen.get_or_insert(i);
            }
            // Neighbours mostly share one set: each set once in a row.
            if !sets.last().is_some_and(|l| Arc::ptr_eq(l, &m.flags)) {
                sets.push(&m.flags);
            }
        }
        let keywords = new_keywords(&[], sets.iter().flat_map(|s| s.iter())).into();
        Facts { newest, keywords, unseen, first_unseen, partial: false }
    }

    /// Of a list not yet whole: the unseen counted range by range between
    /// the seen UIDs in the snapshot the list is read from (a user who
    /// has seen nothing, or all but the newest: a few ranges), the rest
    /// from the last messages. Waits for the whole list only when the
    /// seen UIDs leave more than [`MAX_GAPS`] gaps.
    pub fn of_partial(list: &Entries, seen: &UidSet) -> Facts {
        let (Some(first), Some(last)) = (list.first_uid(), list.last().map(|m| m.0)) else {
            return Facts::of(list, seen);
        };
        // The UID ranges between seen UIDs, within first..=last.
        let mut gaps = Vec::new();
        let mut next = u64::from(first);
        for s in seen.iter().map(u64::from) {
            if s > u64::from(last) || gaps.len() > MAX_GAPS {
                break;
            }
            if s > next {
                gaps.push((next as u32, (s - 1) as u32));
            }
            next = next.max(s + 1);
        }
        if gaps.len() > MAX_GAPS {
            return Facts::of(list, seen);
        }
        if next <= u64::from(last) {
            gaps.push((next as u32, last));
        }
        let (mut unseen, mut first_uid) = (0usize, None);
        for (a, b) in gaps {
            let n = list.count_uids(a, b);
            if n > 0 && first_uid.is_none() {
                first_uid = list.first_in(a, b);
            }
            unseen += n;
        }
        // Its position: the messages before it.
        let first_unseen = first_uid.map(|u| if u == first { 0 } else { list.count_uids(first, u - 1) });
        // The newest MODSEQ and the keywords: of the entries read.
        let read = Facts::of(list.known().1, seen);
        Facts { unseen, first_unseen, partial: true, ..read }
    }
}

/// The keywords among `flags` (not the `\\` flags) that are not in
/// `defined`, each once (ASCII case ignored), in the order they come.
pub fn new_keywords<'a>(defined: &[String], flags: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in flags {
        let known = |l: &[String]| l.iter().any(|d| d.eq_ignore_ascii_case(f));
        if !f.starts_with('\\') && !known(defined) && !known(&out) {
            out.push(f.clone());
        }
    }
    out
}

/// How many lists' facts are remembered.
const FACTS_KEPT: usize = 64;

struct Listed {
    stamp: Stamp,
    /// The folder's version read before the list (see [`Version`]).
    version: Option<Version>,
    list: Weak<Entries>,
}

/// A store folder's state that changes whenever any of its entries does
/// (every insertion, removal or flag change bumps its highest modseq):
/// (UIDVALIDITY, UIDNEXT, messages, highest modseq); `None` inside for a
/// folder that does not exist. A list whose folder is at the version it
/// was read at is current, whatever else the store applied meanwhile.
pub type Version = Option<(u32, u32, u64, u64)>;

/// When a list was read: the store's generation (read before the index)
/// and the second (computed keywords depend on the time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp {
    pub generation: u64,
    pub second: i64,
}

/// A folder's messages in UID order: (UID, entry).
///
/// Whole, or being read: a large store folder's list just selected is
/// read in the background ([`Entries::read_in_background`]) while the
/// SELECT is answered from what is known at once (the count, the last
/// messages, counts of UID ranges read from the index snapshot the list
/// is read from: see [`Entries::lazy`]). Dereferencing it as a `Vec`
/// waits for the whole list; [`Entries::len`], [`Entries::get`],
/// [`Entries::last`] and [`Entries::count_uids`] do not when the answer
/// is known without it.
pub struct Entries {
    full: OnceLock<Vec<(u32, Msg)>>,
    lazy: Option<Box<Lazy>>,
}

/// What a list being read knows before it is whole.
struct Lazy {
    len: usize,
    /// The first message's UID.
    first: Option<u32>,
    /// The last [`TAIL`] messages.
    tail: Vec<(u32, Msg)>,
    /// What the list is read from, until it is.
    source: Mutex<Option<Arc<FolderReader>>>,
    /// A thread reads it.
    reading: std::sync::atomic::AtomicBool,
}

/// Messages of a list being read that are read at once, from the end
/// (what a client fetches first after SELECT: the newest).
pub const TAIL: usize = if cfg!(test) { 4 } else { 64 };

/// More gaps than this between a user's seen UIDs: the unseen are
/// counted in the whole list, not range by range in the index.
const MAX_GAPS: usize = 1024;

impl Entries {
    /// A store folder's list, its entries' stored flags but the computed
    /// `$Pec*` keywords, read from `reader` in the background: the last
    /// messages are read now, the rest when asked for or by
    /// [`Entries::read_in_background`].
    pub fn lazy(reader: FolderReader) -> Result<Entries, StoreError> {
        let len = usize::try_from(reader.state().map_or(0, |st| st.exists)).unwrap_or(usize::MAX);
        let mut sets = FlagSets::default();
        let tail = reader.last(TAIL, |b| Msg::from_brief(b, &mut sets, keep_stored))?;
        let first = reader.first(0, u32::MAX)?;
        if tail.len() == len {
            // Small enough to be whole already.
            return Ok(Entries::from(tail));
        }
        let source = Mutex::new(Some(Arc::new(reader)));
        Ok(Entries {
            full: OnceLock::new(),
            lazy: Some(Box::new(Lazy { len, first, tail, source, reading: Default::default() })),
        })
    }

    /// Is every entry read?
    pub fn is_whole(&self) -> bool {
        self.full.get().is_some()
    }

    /// The whole list, read now if it is not yet (waits for a read in
    /// progress).
    pub fn whole(&self) -> &Vec<(u32, Msg)> {
        self.full.get_or_init(|| self.read_rest())
    }

    fn read_rest(&self) -> Vec<(u32, Msg)> {
        let Some(l) = &self.lazy else { return Vec::new() };
        let source = l.source.lock().unwrap_or_else(PoisonError::into_inner).clone();
        // Taken only once the list is read (below), and read once.
        let Some(r) = source else { unreachable!("a folder's list read twice") };
        let started = std::time::Instant::now();
        let read = r.scan(FlagSets::default, |sets, b| Msg::from_brief(b, sets, keep_stored));
        drop(r);
        match read {
            Ok(v) => {
                // Read: the snapshot it pinned is let go.
                l.source.lock().unwrap_or_else(PoisonError::into_inner).take();
                if v.len() != l.len {
                    tracing::error!(read = v.len(), counted = l.len, "a folder's entries differ from its count");
                }
                tracing::debug!(entries = v.len(), ms = started.elapsed().as_millis() as u64, "folder list read");
                v
            }
            // The index could not be read back within the snapshot it
            // was counted from: nothing to show that would not be wrong.
            Err(e) => panic!("reading a selected folder's entries from the index: {e}"),
        }
    }

    /// Read the rest on a thread of its own, if anything is left, and
    /// then call `then` with the whole list.
    pub fn read_in_background(self: &Arc<Self>, then: impl FnOnce(&Arc<Entries>) + Send + 'static) {
        match &self.lazy {
            // One thread per list, whoever asks first.
            Some(l) if !self.is_whole() && !l.reading.swap(true, std::sync::atomic::Ordering::Relaxed) => {}
            _ => return,
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new().name("folder-list".into()).spawn(move || {
            // Below the sessions' work (a million entries: both cores for
            // a fifth of a second); a session that needs the list waits
            // for it either way.
            crate::background::lower_this_thread();
            me.whole();
            then(&me);
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no thread to read a folder's list: it is read when first needed");
        }
    }

    pub fn len(&self) -> usize {
        match (self.full.get(), &self.lazy) {
            (Some(v), _) => v.len(),
            (None, Some(l)) => l.len,
            (None, None) => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What is read without waiting: (position of the first, entries).
    pub fn known(&self) -> (usize, &[(u32, Msg)]) {
        match (self.full.get(), &self.lazy) {
            (Some(v), _) => (0, v),
            (None, Some(l)) => (l.len - l.tail.len(), &l.tail),
            (None, None) => (0, &[]),
        }
    }

    /// The entry at `i` (from 0), waiting for the list only when it is
    /// not among the entries already read.
    pub fn get(&self, i: usize) -> Option<&(u32, Msg)> {
        let (at, part) = self.known();
        match i.checked_sub(at) {
            Some(j) if j < part.len() => part.get(j),
            _ if i >= self.len() => None,
            _ => self.whole().get(i),
        }
    }

    pub fn last(&self) -> Option<&(u32, Msg)> {
        self.known().1.last()
    }

    pub fn first_uid(&self) -> Option<u32> {
        match (self.full.get(), &self.lazy) {
            (Some(v), _) => v.first().map(|m| m.0),
            (None, Some(l)) => l.first,
            (None, None) => None,
        }
    }

    /// The reader of a list not yet whole.
    fn source(&self) -> Option<Arc<FolderReader>> {
        match (self.full.get(), &self.lazy) {
            (None, Some(l)) => l.source.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            _ => None,
        }
    }

    /// How many messages have a UID in `from..=to`.
    pub fn count_uids(&self, from: u32, to: u32) -> usize {
        let in_slice = |v: &[(u32, Msg)]| v.partition_point(|m| m.0 <= to) - v.partition_point(|m| m.0 < from);
        let (Some(first), Some(last)) = (self.first_uid(), self.last().map(|m| m.0)) else { return 0 };
        let (a, b) = (from.max(first), to.min(last));
        if a > b {
            return 0;
        }
        if (a, b) == (first, last) {
            return self.len();
        }
        let (_, part) = self.known();
        if part.first().is_some_and(|m| m.0 <= a) {
            return in_slice(part);
        }
        let Some(r) = self.source() else { return in_slice(self.whole()) };
        let counted = match part.first().map(|m| m.0) {
            // Partly among the last messages: the rest before them.
            Some(t) if t <= b => r.count(a, t - 1).map(|n| n + in_slice(part)),
            // Most of the span: what is outside it is fewer keys to count.
            _ if u64::from(b - a) > u64::from(last - first) / 2 => {
                r.count(first, a.saturating_sub(1)).and_then(|below| {
                    r.count(b.saturating_add(1), last).map(|above| self.len().saturating_sub(below + above))
                })
            }
            _ => r.count(a, b),
        };
        counted.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "counting in a folder's snapshot; reading it whole");
            in_slice(self.whole())
        })
    }

    /// The lowest UID in `from..=to` a message has.
    pub fn first_in(&self, from: u32, to: u32) -> Option<u32> {
        let in_slice = |v: &[(u32, Msg)]| v.get(v.partition_point(|m| m.0 < from)).map(|m| m.0).filter(|u| *u <= to);
        let (_, part) = self.known();
        if part.first().is_some_and(|m| m.0 <= from) {
            return in_slice(part);
        }
        let Some(r) = self.source() else { return in_slice(self.whole()) };
        r.first(from, to).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading a folder's snapshot; reading it whole");
            in_slice(self.whole())
        })
    }
}

/// A stored flag a store folder's list shows (the `$Pec*` keywords are
/// computed, never stored ones).
fn keep_stored(flag: &str) -> bool {
    !crate::pec::is_pec_keyword(flag)
}

impl std::ops::Deref for Entries {
    type Target = Vec<(u32, Msg)>;

    fn deref(&self) -> &Vec<(u32, Msg)> {
        self.whole()
    }
}

impl std::ops::DerefMut for Entries {
    fn deref_mut(&mut self) -> &mut Vec<(u32, Msg)> {
        self.whole();
        self.lazy = None;
        self.full.get_mut().expect("read just above")
    }
}

impl From<Vec<(u32, Msg)>> for Entries {
    fn from(v: Vec<(u32, Msg)>) -> Entries {
        Entries { full: OnceLock::from(v), lazy: None }
    }
}

impl FromIterator<(u32, Msg)> for Entries {
    fn from_iter<I: IntoIterator<Item = (u32, Msg)>>(it: I) -> Entries {
        Entries::from(it.into_iter().collect::<Vec<_>>())
    }
}

impl Default for Entries {
    fn default() -> Entries {
        Entries::from(Vec::new())
    }
}

impl Clone for Entries {
    fn clone(&self) -> Entries {
        Entries::from(self.whole().clone())
    }
}

impl PartialEq for Entries {
    fn eq(&self, other: &Entries) -> bool {
        self.len() == other.len() && self.whole() == other.whole()
    }
}

impl Eq for Entries {}

impl std::fmt::Debug for Entries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.full.get() {
            Some(v) => v.fmt(f),
            None => write!(f, "Entries({} being read)", self.len()),
        }
    }
}

/// Sweep dead lists when the table holds this many.
const SWEEP_SLACK: usize = 4096;

impl SharedMetas {
    /// The list last interned under `key`, if it was read at `stamp`
    /// (same store generation, same second) and a session still holds it.
    /// Or, for a list that depends only on its folder's entries
    /// (`version` given), if the folder is still at the version the list
    /// was read at: then it is current at `stamp` too.
    pub fn cached(&self, key: &str, stamp: Stamp, version: Option<Version>) -> Option<Arc<Entries>> {
        let mut t = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let l = t.lists.get_mut(key)?;
        if l.stamp == stamp {
            return l.list.upgrade();
        }
        if version.is_some() && l.version == version && l.stamp < stamp {
            let a = l.list.upgrade()?;
            l.stamp = stamp;
            return Some(a);
        }
        None
    }

    /// The seen set under `key` read at `stamp`, or the one `read` gives,
    /// shared with every session that reads an equal one: a user's
    /// sessions on one folder hold one set, read once per store
    /// generation.
    pub fn seen<E>(&self, key: &str, stamp: Stamp, read: impl FnOnce() -> Result<UidSet, E>) -> Result<Arc<UidSet>, E> {
        let held = {
            let t = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            t.seen.get(key).and_then(|(st, w)| Some((*st, w.upgrade()?)))
        };
        if let Some((st, s)) = &held {
            if *st == stamp {
                return Ok(s.clone());
            }
        }
        let fresh = read()?;
        let mut t = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((st, s)) = held {
            if *s == fresh {
                if stamp > st {
                    t.seen.insert(key.to_string(), (stamp, Arc::downgrade(&s)));
                }
                return Ok(s);
            }
            if st > stamp {
                return Ok(Arc::new(fresh));
            }
        }
        let a = Arc::new(fresh);
        t.seen.insert(key.to_string(), (stamp, Arc::downgrade(&a)));
        if t.seen.len() > SWEEP_SLACK {
            t.seen.retain(|_, (_, w)| w.strong_count() > 0);
        }
        Ok(a)
    }

    /// The [`Facts`] of `list` with `seen`, worked out once for as long
    /// as both are held (sessions that select an unchanged folder share
    /// both).
    pub fn facts(&self, list: &Arc<Entries>, seen: &Arc<UidSet>) -> Facts {
        if !list.is_whole() {
            // Quick, and not to be remembered: the whole list's are.
            return Facts::of_partial(list, seen);
        }
        let same = |e: &(Weak<Entries>, Weak<UidSet>, Facts)| {
            std::ptr::eq(e.0.as_ptr(), Arc::as_ptr(list)) && std::ptr::eq(e.1.as_ptr(), Arc::as_ptr(seen))
        };
        {
            let t = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            // A live weak pointer at the same address is the same list
            // (an address is reused only after the list is freed).
            if let Some(e) = t.facts.iter().rev().find(|e| same(e) && e.0.strong_count() > 0 && e.1.strong_count() > 0)
            {
                return e.2.clone();
            }
        }
        // Walked outside the lock.
        let facts = Facts::of(list, seen);
        let mut t = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        t.facts.retain(|e| e.0.strong_count() > 0 && e.1.strong_count() > 0 && !same(e));
        if t.facts.len() >= FACTS_KEPT {
            t.facts.remove(0);
        }
        t.facts.push((Arc::downgrade(list), Arc::downgrade(seen), facts.clone()));
        facts
    }

    /// The list last interned under `key`, whatever it was read at, if a
    /// session still holds it.
    pub fn latest(&self, key: &str) -> Option<(Stamp, Arc<Entries>)> {
        let t = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        t.lists.get(key).and_then(|l| Some((l.stamp, l.list.upgrade()?)))
    }

    /// A list being read ([`Entries::lazy`], at `stamp`, its folder at
    /// `version`) shared from now on, unless a newer one is held: not
    /// compared with the one held, which would read it whole.
    pub fn intern_lazy(&self, key: &str, msgs: Entries, stamp: Stamp, version: Option<Version>) -> Arc<Entries> {
        let a = Arc::new(msgs);
        let mut t = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if t.lists.get(key).is_some_and(|l| l.stamp > stamp && l.list.strong_count() > 0) {
            return a;
        }
        t.keep(key, Listed { stamp, version, list: Arc::downgrade(&a) });
        a
    }

    /// `msgs` (read at `stamp`) as a list shared with any session holding
    /// an equal one under `key` (a folder as seen by a user: equal keys
    /// usually mean equal lists).
    pub fn intern_folder(&self, key: &str, msgs: Entries, stamp: Stamp, version: Option<Version>) -> Arc<Entries> {
        let held = {
            let t = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            t.lists.get(key).and_then(|l| Some((l.stamp, l.list.upgrade()?)))
        };
        // Compared outside the lock: a million entries take milliseconds.
        if let Some((st, a)) = held {
            if *a == msgs {
                let mut t = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(l) = t.lists.get_mut(key) {
                    if l.list.ptr_eq(&Arc::downgrade(&a)) && stamp > l.stamp {
                        // Still current at the newer of the two stamps.
                        l.stamp = stamp;
                        l.version = version;
                    }
                }
                return a;
            }
            if st > stamp {
                // A newer list is there already: this one is older (its
                // reader was slower), not to be cached.
                return Arc::new(msgs);
            }
        }
        let mut msgs = msgs;
        msgs.shrink_to_fit();
        let a = Arc::new(msgs);
        let mut t = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        t.keep(key, Listed { stamp, version, list: Arc::downgrade(&a) });
        a
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A stored entry with these flags (the other fields fixed), for the
    /// tests of what the lists hold.
    pub(crate) fn meta(hash: &str, flags: &[&str]) -> MessageMeta {
        MessageMeta {
            hash: hash.into(),
            size: 10,
            internal_date: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            modseq: 1,
            archived: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
            pec: None,
            source_uid: None,
            trash_uid: None,
            appended: false,
            all_uid: None,
            label: false,
        }
    }

    fn list(items: &[(u32, &str, &[&str])]) -> Entries {
        let mut sets = FlagSets::default();
        items.iter().map(|(u, h, f)| (*u, Msg::from_meta(&meta(h, f), &mut sets))).collect()
    }

    #[test]
    fn an_entry_is_compact_and_its_flag_sets_are_shared() {
        assert!(std::mem::size_of::<(u32, Msg)>() <= 112, "{} bytes", std::mem::size_of::<(u32, Msg)>());
        let mut sets = FlagSets::default();
        let h = "ab".repeat(32);
        let a = Msg::from_meta(&meta(&h, &["\\Flagged", "$x"]), &mut sets);
        let b = Msg::from_meta(&meta(&h, &["\\Flagged", "$x"]), &mut sets);
        let c = Msg::from_meta(&meta(&h, &["$x", "\\Flagged"]), &mut sets);
        assert!(Arc::ptr_eq(&a.flags, &b.flags), "equal sets are one allocation");
        assert!(!Arc::ptr_eq(&a.flags, &c.flags), "another order is another set");
        assert_eq!(a.hash.hex(), h);
        assert!(matches!(a.hash, BlobHash::Sha256(_)));
        let e1 = Msg::from_meta(&meta("h1", &[]), &mut sets);
        let e2 = Msg::from_meta(&meta("h2", &[]), &mut sets);
        assert!(Arc::ptr_eq(&e1.flags, &e2.flags) && e1.flags.is_empty());
        assert_eq!(e1.hash.hex(), "h1", "a name that is not a SHA-256 is kept as written");
    }

    #[test]
    fn equal_folders_share_one_list() {
        let s = SharedMetas::default();
        let a = s.intern_folder("prot/INBOX", list(&[(1, "aa", &[]), (2, "bb", &[])]), Stamp::default(), None);
        let b = s.intern_folder("prot/INBOX", list(&[(1, "aa", &[]), (2, "bb", &[])]), Stamp::default(), None);
        assert!(Arc::ptr_eq(&a, &b), "an unchanged folder is one list");
        let c =
            s.intern_folder("prot/INBOX", list(&[(1, "aa", &[]), (2, "bb", &["\\Flagged"])]), Stamp::default(), None);
        assert!(!Arc::ptr_eq(&a, &c), "a changed folder is a new list");
        assert_eq!(&*c[1].1.flags, &["\\Flagged".to_string()]);
        assert!(a[1].1.flags.is_empty(), "the older version is still whole for the session that holds it");
        let d =
            s.intern_folder("other/INBOX", list(&[(1, "aa", &[]), (2, "bb", &["\\Flagged"])]), Stamp::default(), None);
        assert!(*c == *d && !Arc::ptr_eq(&c, &d), "another key is another list, of the same entries");
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn lists_are_cached_for_their_stamp_only() {
        let s = SharedMetas::default();
        let at = |generation, second| Stamp { generation, second };
        let a = s.intern_folder("k", list(&[(1, "aa", &[])]), at(1, 100), None);
        assert!(Arc::ptr_eq(&s.cached("k", at(1, 100), None).unwrap_or_default(), &a));
        assert!(s.cached("k", at(2, 100), None).is_none(), "the store changed since");
        assert!(s.cached("k", at(1, 101), None).is_none(), "a second later: keywords may differ");
        assert!(s.cached("other", at(1, 100), None).is_none());
        // Read again at a newer stamp and found equal: current there too.
        let b = s.intern_folder("k", list(&[(1, "aa", &[])]), at(2, 100), None);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(s.cached("k", at(2, 100), None).is_some());
        // A slow reader's older, different list does not replace it.
        let old = s.intern_folder("k", list(&[(1, "aa", &["\\Seen"])]), at(1, 100), None);
        assert!(!Arc::ptr_eq(&old, &a));
        assert!(Arc::ptr_eq(&s.cached("k", at(2, 100), None).unwrap_or_default(), &a));
        // Nobody holds it any more: not cached.
        drop((a, b));
        assert!(s.cached("k", at(2, 100), None).is_none());
    }

    #[test]
    fn a_list_stays_current_while_its_folder_is_at_its_version() {
        let s = SharedMetas::default();
        let at = |generation| Stamp { generation, second: 0 };
        let v1 = Some(Some((7, 3, 2, 10)));
        let a = s.intern_folder("k", list(&[(1, "aa", &[]), (2, "bb", &[])]), at(1), v1);
        // Other folders changed (the generation moved), this one did not.
        assert!(Arc::ptr_eq(&s.cached("k", at(5), v1).unwrap_or_default(), &a));
        assert!(Arc::ptr_eq(&s.cached("k", at(5), None).unwrap_or_default(), &a), "and now at that stamp");
        // It changed: not current.
        assert!(s.cached("k", at(6), Some(Some((7, 3, 2, 11)))).is_none());
        assert!(s.cached("k", at(6), Some(None)).is_none(), "deleted");
        assert!(s.cached("k", at(6), None).is_none(), "a list that depends on more than its folder");
    }

    #[test]
    fn changes_merge_into_a_list_in_uid_order() {
        let old = list(&[(2, "b", &[]), (4, "d", &[]), (6, "f", &[])]);
        let new = list(&[(1, "a", &[]), (4, "d", &["\\Seen"]), (5, "e", &[]), (9, "i", &[])]);
        let changes = vec![
            (1, Some(new[0].1.clone())),
            (2, None),
            (4, Some(new[1].1.clone())),
            (5, Some(new[2].1.clone())),
            (7, None),
            (9, Some(new[3].1.clone())),
        ];
        let m = merge(&old, changes);
        assert_eq!(m.iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 4, 5, 6, 9]);
        assert_eq!(m[1].1, new[1].1, "changed");
        assert_eq!(m[3].1, old[2].1, "untouched");
        assert_eq!(merge(&old, vec![]), old);
    }

    #[test]
    fn a_users_seen_set_is_read_once_a_generation_and_shared() {
        let s = SharedMetas::default();
        let at = |generation| Stamp { generation, second: 0 };
        let read = |uids: Vec<u32>| move || -> Result<UidSet, ()> { Ok(UidSet::from_sorted(uids)) };
        let a = s.seen("mario\0k", at(1), read(vec![1, 2])).unwrap_or_default();
        let b = s.seen("mario\0k", at(1), || -> Result<UidSet, ()> { panic!("read again at the same stamp") });
        assert!(Arc::ptr_eq(&a, &b.unwrap_or_default()));
        let c = s.seen("mario\0k", at(2), read(vec![1, 2])).unwrap_or_default();
        assert!(Arc::ptr_eq(&a, &c), "read again, equal: the same set");
        let d = s.seen("mario\0k", at(3), read(vec![1, 2, 3])).unwrap_or_default();
        assert!(!Arc::ptr_eq(&a, &d) && d.contains(3));
        let e = s.seen("anna\0k", at(3), read(vec![1, 2, 3])).unwrap_or_default();
        assert!(!Arc::ptr_eq(&d, &e), "another user's is their own");
        assert_eq!(s.seen("mario\0k", at(4), || Err("index")), Err("index"));
    }

    #[test]
    fn facts_are_worked_out_once_per_list_and_seen_set() {
        let s = SharedMetas::default();
        let l =
            Arc::new(list(&[(1, "aa", &["$a", "\\Flagged"]), (2, "bb", &["$A"]), (3, "cc", &[]), (5, "dd", &["$b"])]));
        let seen = Arc::new(UidSet::from_sorted(vec![1, 2]));
        let f = s.facts(&l, &seen);
        assert_eq!(&*f.keywords, &["$a".to_string(), "$b".to_string()], "once each, case ignored, no \\ flags");
        assert_eq!((f.unseen, f.first_unseen, f.newest), (2, Some(2), 1));
        assert_eq!(f, Facts::of(&l, &seen));
        let all = Arc::new(UidSet::from_sorted(vec![1, 2, 3, 5]));
        let g = s.facts(&l, &all);
        assert_eq!((g.unseen, g.first_unseen), (0, None), "another seen set, other facts");
        assert_eq!(s.facts(&l, &seen), f, "still remembered");
        let n = s.inner.lock().unwrap_or_else(PoisonError::into_inner).facts.len();
        assert_eq!(n, 2);
        drop(l);
        let l2 = Arc::new(list(&[(9, "zz", &[])]));
        let h = s.facts(&l2, &seen);
        assert_eq!((h.unseen, h.first_unseen, h.keywords.len()), (1, Some(0), 0));
        let n = s.inner.lock().unwrap_or_else(PoisonError::into_inner).facts.len();
        assert_eq!(n, 1, "a freed list's facts are dropped");
    }

    /// Issue 14: a list being read answers from the index snapshot what
    /// the whole list would: counts of UID ranges, the first UID of a
    /// range, the unseen and the first of them for various seen sets, the
    /// newest entries by position; and, read whole, it is the list a
    /// plain read gives.
    #[tokio::test]
    async fn a_list_being_read_answers_as_the_whole_list_does() {
        use crate::store::{Audit, Change, FlagOp, Store, StoreOptions};
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        let mut batch = Vec::new();
        for i in 1..=40u32 {
            let blob = store.put_blob(format!("Subject: {i}\r\n\r\n{i}\r\n").into_bytes()).await;
            let ch = Change::Archive {
                mailbox: "prot".into(),
                folder: "Receipts".into(),
                blob: blob.unwrap_or_else(|e| panic!("{e}")),
                internal_date: chrono::Utc::now(),
                flags: if i % 7 == 0 { vec![format!("$K{i}")] } else { vec![] },
                provider: None,
                pec: None,
                handling: None,
            };
            batch.push((Audit::system("test", "archive"), ch));
        }
        let gone = vec![1, 2, 10, 11, 12, 13, 14, 37, 40];
        let hide = Change::Hide { mailbox: "prot".into(), folder: "Receipts".into(), uids: gone.clone() };
        store.commit_batch(std::mem::take(&mut batch)).await.unwrap_or_else(|e| panic!("{e}"));
        batch.push((Audit::system("test", "hide"), hide));
        let flag = |uids: Vec<u32>| Change::SetFlags {
            mailbox: "prot".into(),
            folder: "Receipts".into(),
            uids,
            op: FlagOp::Add,
            flags: vec!["$Dopo".into()],
        };
        batch.push((Audit::system("test", "flag"), flag(vec![5])));
        store.commit_batch(batch).await.unwrap_or_else(|e| panic!("{e}"));
        // What `serve` does at start: read each folder's path once.
        assert_eq!(store.warm_folders(TAIL).unwrap_or_else(|e| panic!("{e}")), 1);
        let reader = || store.folder_reader("prot", "Receipts").unwrap_or_else(|e| panic!("{e}"));
        let whole: Entries = reader()
            .scan(FlagSets::default, |sets, b| Msg::from_brief(b, sets, keep_stored))
            .unwrap_or_else(|e| panic!("{e}"))
            .into();
        assert_eq!(whole.len(), 31);
        let all: Vec<u32> = (1..=40).collect();
        let seen_sets: Vec<Vec<u32>> = vec![
            vec![],
            all.clone(),
            vec![3, 5],
            (1..=20).collect(),
            (21..=40).collect(),
            vec![15, 36, 38, 39],
            all.iter().copied().filter(|u| u % 3 == 0).collect(),
            vec![3],
            vec![39],
        ];
        for seen in seen_sets {
            let seen = UidSet::from_sorted(seen);
            let lazy = Entries::lazy(reader()).unwrap_or_else(|e| panic!("{e}"));
            assert!(!lazy.is_whole(), "read in the background");
            assert_eq!(lazy.len(), 31);
            let (p, w) = (Facts::of_partial(&lazy, &seen), Facts::of(&whole, &seen));
            assert!(p.partial && !lazy.is_whole());
            assert_eq!((p.unseen, p.first_unseen), (w.unseen, w.first_unseen), "seen {seen:?}");
            assert!(p.keywords.iter().all(|k| w.keywords.contains(k)));
            for (a, b) in
                [(0, u32::MAX), (1, 40), (3, 3), (2, 2), (4, 9), (10, 14), (5, 36), (15, 39), (38, 40), (39, 1)]
            {
                assert_eq!(lazy.count_uids(a, b), whole.count_uids(a, b), "{a}..={b}");
                assert_eq!(lazy.first_in(a, b), whole.first_in(a, b), "{a}..={b}");
            }
            assert!(!lazy.is_whole(), "counted without reading it whole");
            assert_eq!(lazy.last(), whole.last());
            assert_eq!(lazy.get(30), whole.get(30));
            assert_eq!(lazy.get(27), whole.get(27));
            assert_eq!(lazy.get(31), None);
            assert!(!lazy.is_whole(), "the newest entries are read at once");
            assert_eq!(lazy.get(0), whole.get(0));
            assert!(lazy.is_whole());
            assert_eq!(lazy, whole);
            assert_eq!(Facts::of_partial(&lazy, &seen), Facts { partial: true, ..w.clone() });
        }
        // Read in the background while the index changes: the snapshot's.
        let lazy = Arc::new(Entries::lazy(reader()).unwrap_or_else(|e| panic!("{e}")));
        store.commit(Audit::system("test", "flag"), flag((1..=40).collect())).await.unwrap_or_else(|e| panic!("{e}"));
        lazy.read_in_background(|_| ());
        assert_eq!(*lazy.whole(), *whole, "as it was when selected");
        assert_eq!(lazy.count_uids(0, u32::MAX), 31);
    }

    #[test]
    fn dead_lists_are_swept() {
        let s = SharedMetas::default();
        for i in 0..SWEEP_SLACK + 10 {
            drop(s.intern_folder(&format!("k{i}"), list(&[(1, "aa", &[])]), Stamp::default(), None));
        }
        let n = s.inner.lock().unwrap_or_else(PoisonError::into_inner).lists.len();
        assert!(n <= SWEEP_SLACK + 1, "table kept {n} dead lists");
    }
}
