//! Message metadata shared between sessions.
//!
//! A session keeps the metadata of its selected folder's messages (UIDs,
//! flags, sizes, dates) to number messages and to tell the client what
//! changed. Ten thousand sessions on the same 200-message folder would hold
//! two million copies of the same entries. Instead each snapshot is interned
//! here, twice over: an entry equal to one another session holds becomes
//! the same `Arc`, and a whole list equal to the one another session holds
//! for the same folder becomes the same `Arc` too, so sessions on an
//! unchanged folder share everything. Equality decides, not a version
//! stamp, so sharing can never show a session stale data; at worst (two
//! versions alive at once) it shares less.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::store::MessageMeta;

/// Entries by blob hash. Dead entries (no session holds them any more)
/// are swept when the table has grown well past its live size.
#[derive(Default)]
pub struct SharedMetas {
    inner: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    /// By [`entry_key`] of the blob hash: a number, not a copy of the
    /// hash (a million-message folder's table held 88 MB of key strings).
    map: HashMap<u64, Weak<MessageMeta>>,
    /// Whole snapshots by folder key (see [`SharedMetas::intern_folder`]),
    /// with the newest stamp they are known to be current at.
    lists: HashMap<String, (Stamp, Weak<Entries>)>,
    /// Entries left after the last sweep.
    live: usize,
}

/// When a list was read: the store's generation (read before the index)
/// and the second (computed keywords depend on the time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp {
    pub generation: u64,
    pub second: i64,
}

/// A folder's messages in UID order: (UID, shared entry).
pub type Entries = Vec<(u32, Arc<MessageMeta>)>;

/// Do two lists hold the same UIDs and the very same entries?
pub fn same(a: &Entries, b: &Entries) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.0 == y.0 && Arc::ptr_eq(&x.1, &y.1))
}

/// The table's key for a blob hash: its first 64 bits (a SHA-256 in hex,
/// so already uniform), or a hash of the text for anything else. Two
/// entries under one key are told apart by comparing them: a collision
/// only shares less.
fn entry_key(hash: &str) -> u64 {
    match hash.get(..16).map(|h| u64::from_str_radix(h, 16)) {
        Some(Ok(k)) => k,
        _ => {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            hash.hash(&mut h);
            h.finish()
        }
    }
}

/// Sweep when the table holds this many entries more than twice its live
/// size at the last sweep (amortised: each sweep is paid for by as many
/// insertions).
const SWEEP_SLACK: usize = 4096;

impl SharedMetas {
    /// The list last interned under `key`, if it was read at `stamp`
    /// (same store generation, same second) and a session still holds it.
    pub fn cached(&self, key: &str, stamp: Stamp) -> Option<Arc<Entries>> {
        let t = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        t.lists.get(key).filter(|(st, _)| *st == stamp).and_then(|(_, w)| w.upgrade())
    }

    /// `msgs` (read at `stamp`) as a list shared with any session holding
    /// an equal one under `key` (a folder as seen by a user: equal keys
    /// usually mean equal lists), its entries shared with equal ones.
    pub fn intern_folder(&self, key: &str, msgs: Vec<(u32, MessageMeta)>, stamp: Stamp) -> Arc<Entries> {
        let v = self.intern(msgs);
        let mut t = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((st, w)) = t.lists.get_mut(key) {
            if let Some(a) = w.upgrade() {
                if same(&a, &v) {
                    // Still current at the newer of the two stamps.
                    *st = (*st).max(stamp);
                    return a;
                }
                if *st > stamp {
                    // A newer list is there already: this one is older
                    // (its reader was slower), not to be cached.
                    return Arc::new(v);
                }
            }
        }
        let a = Arc::new(v);
        t.lists.insert(key.to_string(), (stamp, Arc::downgrade(&a)));
        if t.lists.len() > SWEEP_SLACK {
            t.lists.retain(|_, (_, w)| w.strong_count() > 0);
        }
        a
    }

    /// `msgs` with every entry replaced by a shared equal one where one
    /// exists.
    pub fn intern(&self, msgs: Vec<(u32, MessageMeta)>) -> Entries {
        let mut t = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        // A fresh vector, not `into_iter().map().collect()`: that reuses
        // the input's allocation in place, and a session would keep the
        // whole-size buffer (≈ 170 bytes per message) for its 16-byte
        // entries — measured: 35 KiB per session on a 200-message folder.
        let mut out = Vec::with_capacity(msgs.len());
        for (uid, m) in msgs {
            let k = entry_key(&m.hash);
            if let Some(a) = t.map.get(&k).and_then(Weak::upgrade) {
                if *a == m {
                    out.push((uid, a));
                    continue;
                }
            }
            let a = Arc::new(m);
            t.map.insert(k, Arc::downgrade(&a));
            out.push((uid, a));
        }
        if t.map.len() > 2 * t.live + SWEEP_SLACK {
            t.map.retain(|_, w| w.strong_count() > 0);
            t.map.shrink_to_fit();
            t.live = t.map.len();
        }
        out
    }

    /// Entries in the table (live or not yet swept).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(hash: &str, flags: &[&str]) -> MessageMeta {
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

    #[test]
    fn equal_entries_are_shared_and_different_ones_are_not() {
        let s = SharedMetas::default();
        let a = s.intern(vec![(1, meta("aa", &[])), (2, meta("bb", &["\\Seen"]))]);
        let b = s.intern(vec![(1, meta("aa", &[])), (2, meta("bb", &["\\Flagged"]))]);
        assert!(Arc::ptr_eq(&a[0].1, &b[0].1), "equal entries share one allocation");
        assert!(!Arc::ptr_eq(&a[1].1, &b[1].1), "a changed entry is not the old one");
        assert_eq!(b[1].1.flags, vec!["\\Flagged".to_string()]);
        // The older version is still whole for the session that holds it.
        assert_eq!(a[1].1.flags, vec!["\\Seen".to_string()]);
        // The same UID in a different order keeps the caller's UIDs.
        let c = s.intern(vec![(7, meta("aa", &[]))]);
        assert_eq!(c[0].0, 7);
        assert!(Arc::ptr_eq(&a[0].1, &c[0].1));
        // The session's vector is sized for its entries, not the input's.
        let big: Vec<_> = (0..200).map(|i| (i, meta(&format!("h{i}"), &[]))).collect();
        let v = s.intern(big);
        assert!(v.capacity() * std::mem::size_of::<(u32, Arc<MessageMeta>)>() <= 200 * 16, "capacity {}", v.capacity());
    }

    #[test]
    fn hashes_alike_in_their_first_bits_are_not_confused() {
        let s = SharedMetas::default();
        let (h1, h2) = (format!("{}{}", "ab".repeat(8), "11".repeat(24)), format!("{}{}", "ab".repeat(8), "22".repeat(24)));
        assert_eq!(entry_key(&h1), entry_key(&h2));
        let a = s.intern(vec![(1, meta(&h1, &[])), (2, meta(&h2, &[]))]);
        assert_eq!((a[0].1.hash.as_str(), a[1].1.hash.as_str()), (h1.as_str(), h2.as_str()));
        let b = s.intern(vec![(2, meta(&h2, &[]))]);
        assert!(Arc::ptr_eq(&a[1].1, &b[0].1), "the last one under the key is shared");
        let c = s.intern(vec![(1, meta(&h1, &[]))]);
        assert_eq!(c[0].1.hash, h1, "the other is never taken for it");
    }

    #[test]
    fn equal_folders_share_one_list() {
        let s = SharedMetas::default();
        let a = s.intern_folder("prot/INBOX", vec![(1, meta("aa", &[])), (2, meta("bb", &[]))], Stamp::default());
        let b = s.intern_folder("prot/INBOX", vec![(1, meta("aa", &[])), (2, meta("bb", &[]))], Stamp::default());
        assert!(Arc::ptr_eq(&a, &b), "an unchanged folder is one list");
        let c = s.intern_folder("prot/INBOX", vec![(1, meta("aa", &[])), (2, meta("bb", &["\\Flagged"]))], Stamp::default());
        assert!(!Arc::ptr_eq(&a, &c), "a changed folder is a new list");
        assert!(Arc::ptr_eq(&a[0].1, &c[0].1), "sharing its unchanged entries");
        let d = s.intern_folder("other/INBOX", vec![(1, meta("aa", &[])), (2, meta("bb", &["\\Flagged"]))], Stamp::default());
        assert!(same(&c, &d) && !Arc::ptr_eq(&c, &d), "another key is another list, of the same entries");
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn lists_are_cached_for_their_stamp_only() {
        let s = SharedMetas::default();
        let at = |generation, second| Stamp { generation, second };
        let a = s.intern_folder("k", vec![(1, meta("aa", &[]))], at(1, 100));
        assert!(Arc::ptr_eq(&s.cached("k", at(1, 100)).unwrap_or_default(), &a));
        assert!(s.cached("k", at(2, 100)).is_none(), "the store changed since");
        assert!(s.cached("k", at(1, 101)).is_none(), "a second later: keywords may differ");
        assert!(s.cached("other", at(1, 100)).is_none());
        // Read again at a newer stamp and found equal: current there too.
        let b = s.intern_folder("k", vec![(1, meta("aa", &[]))], at(2, 100));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(s.cached("k", at(2, 100)).is_some());
        // A slow reader's older, different list does not replace it.
        let old = s.intern_folder("k", vec![(1, meta("aa", &["\\Seen"]))], at(1, 100));
        assert!(!Arc::ptr_eq(&old, &a));
        assert!(Arc::ptr_eq(&s.cached("k", at(2, 100)).unwrap_or_default(), &a));
        // Nobody holds it any more: not cached.
        drop((a, b));
        assert!(s.cached("k", at(2, 100)).is_none());
    }

    #[test]
    fn dead_entries_are_swept() {
        let s = SharedMetas::default();
        for round in 0..3 {
            let v: Vec<_> = (0..SWEEP_SLACK as u32 + 10)
                .map(|i| (i, meta(&format!("{round}-{i}"), &[])))
                .collect();
            drop(s.intern(v));
        }
        assert!(s.len() <= 2 * (SWEEP_SLACK + 10), "table kept {} dead entries", s.len());
        let kept = s.intern(vec![(1, meta("keep", &[]))]);
        assert_eq!(kept.len(), 1);
    }
}
