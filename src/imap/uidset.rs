//! A set of UIDs as a bitmap: what a session keeps of the messages its
//! user has seen (`\Seen` is per user).
//!
//! UIDs are given out in order from 1 (folders, handling views, Trash and
//! All alike), so a folder's UIDs are dense: a million seen messages take
//! 125 KB as bits, against 10 MB as a `HashSet<u32>` — per session, since
//! each selected session holds its user's set. A set whose UIDs are
//! sparse (fewer than one in 64 of their span) is kept as a sorted list.

/// UIDs, as bits from `base` or as a sorted list.
#[derive(Debug, Clone)]
pub enum UidSet {
    Bits { base: u32, words: Vec<u64>, len: usize },
    Sorted(Vec<u32>),
}

impl Default for UidSet {
    fn default() -> UidSet {
        UidSet::Sorted(Vec::new())
    }
}

impl UidSet {
    /// From UIDs in ascending order (a scan of the index by key).
    pub fn from_sorted(uids: Vec<u32>) -> UidSet {
        let (Some(&first), Some(&last)) = (uids.first(), uids.last()) else { return UidSet::default() };
        let span = u64::from(last - first) + 1;
        if span > 64 * uids.len() as u64 + 4096 {
            let mut uids = uids;
            uids.dedup();
            return UidSet::Sorted(uids);
        }
        let base = first & !63;
        let mut words = vec![0u64; (((last - base) / 64) + 1) as usize];
        let mut len = 0;
        for u in uids {
            let (w, b) = (((u - base) / 64) as usize, (u - base) % 64);
            len += usize::from(words[w] & (1 << b) == 0);
            words[w] |= 1 << b;
        }
        UidSet::Bits { base, words, len }
    }

    pub fn contains(&self, uid: u32) -> bool {
        match self {
            UidSet::Bits { base, words, .. } => {
                uid >= *base && words.get(((uid - base) / 64) as usize).is_some_and(|w| w & (1 << ((uid - base) % 64)) != 0)
            }
            UidSet::Sorted(v) => v.binary_search(&uid).is_ok(),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            UidSet::Bits { len, .. } => *len,
            UidSet::Sorted(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The UIDs, ascending.
    pub fn iter(&self) -> Box<dyn Iterator<Item = u32> + '_> {
        match self {
            UidSet::Bits { base, words, .. } => Box::new(words.iter().enumerate().flat_map(move |(i, &w)| {
                (0..64u32).filter(move |b| w & (1 << b) != 0).map(move |b| base + i as u32 * 64 + b)
            })),
            UidSet::Sorted(v) => Box::new(v.iter().copied()),
        }
    }
}

impl PartialEq for UidSet {
    fn eq(&self, other: &UidSet) -> bool {
        self.len() == other.len() && self.iter().all(|u| other.contains(u))
    }
}

impl Eq for UidSet {}

impl Extend<u32> for UidSet {
    fn extend<I: IntoIterator<Item = u32>>(&mut self, more: I) {
        let mut all: Vec<u32> = self.iter().collect();
        let before = all.len();
        all.extend(more);
        if all.len() == before {
            return;
        }
        all.sort_unstable();
        all.dedup();
        *self = UidSet::from_sorted(all);
    }
}

impl FromIterator<u32> for UidSet {
    fn from_iter<I: IntoIterator<Item = u32>>(it: I) -> UidSet {
        let mut v: Vec<u32> = it.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        UidSet::from_sorted(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_and_sparse_sets_answer_alike() {
        let dense: Vec<u32> = (1..=100_000).filter(|u| u % 3 != 0).collect();
        let d = UidSet::from_sorted(dense.clone());
        assert!(matches!(d, UidSet::Bits { .. }));
        assert_eq!(d.len(), dense.len());
        assert!(d.contains(1) && d.contains(2) && !d.contains(3) && !d.contains(0) && !d.contains(100_001));
        assert_eq!(d.iter().collect::<Vec<_>>(), dense);
        if let UidSet::Bits { words, .. } = &d {
            assert!(words.len() * 8 <= 100_000 / 8 + 64, "bits, not a word per UID");
        }
        let sparse = vec![5, 1_000_000, 4_000_000_000];
        let s = UidSet::from_sorted(sparse.clone());
        assert!(matches!(s, UidSet::Sorted(_)));
        assert!(s.contains(1_000_000) && !s.contains(6) && s.contains(4_000_000_000));
        assert_eq!(s.iter().collect::<Vec<_>>(), sparse);
        // Equality is by members, whatever the form.
        let a: UidSet = [3, 1, 2, 2].into_iter().collect();
        assert_eq!(a, UidSet::Sorted(vec![1, 2, 3]));
        assert_eq!(a.len(), 3);
        assert_ne!(a, UidSet::from_sorted(vec![1, 2]));
        let mut b = UidSet::from_sorted(vec![10, 11]);
        b.extend([12, 10, 700]);
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![10, 11, 12, 700]);
        assert!(UidSet::default().is_empty() && !UidSet::default().contains(0));
        // A base that is not a multiple of 64, and UIDs at a word's edges.
        let e = UidSet::from_sorted(vec![63, 64, 127, 128]);
        assert_eq!(e.iter().collect::<Vec<_>>(), vec![63, 64, 127, 128]);
        assert!(!e.contains(65) && !e.contains(u32::MAX));
    }
}
