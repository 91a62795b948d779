//! SEARCH: evaluating search keys against a folder snapshot.
//!
//! FROM, TO, CC, BCC, SUBJECT and SENT* use header fields cached in the
//! store per message (`store::fields`); BODY, TEXT and other HEADER fields
//! load the blob; the rest use the snapshot only. Text matching is ASCII
//! case-insensitive substring matching on the decoded header values and
//! text parts, plus the raw bytes (so encoded words and base64 bodies are
//! found once decoded).

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, Utc};
use imap_next::imap_types::search::SearchKey;
use imap_next::imap_types::sequence::SequenceSet;

use super::fetch;
use crate::store::fields::SearchFields as Fields;
use crate::store::{MessageMeta, Store};

/// One message as SEARCH sees it.
pub struct Candidate<'a> {
    pub seq: u32,
    pub uid: u32,
    pub meta: &'a MessageMeta,
    pub seen: bool,
    /// This session is the first to see it (`\\Recent`).
    pub recent: bool,
    /// Highest sequence number and UID in the folder (for `*`).
    pub max_seq: u32,
    pub max_uid: u32,
}

/// What evaluating a key needs beyond the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// Flags, UIDs, sizes, dates: the snapshot has them.
    Index,
    /// The header fields the store caches per message (`store::fields`).
    Fields,
    /// The message itself (BODY, TEXT, HEADER of another field).
    Blob,
}

/// The most any of `k`'s keys needs.
pub fn need(k: &SearchKey<'_>) -> Need {
    match k {
        SearchKey::And(ks) => ks.as_ref().iter().map(need).max().unwrap_or(Need::Index),
        SearchKey::Not(k) => need(k),
        SearchKey::Or(a, b) => need(a).max(need(b)),
        SearchKey::Bcc(_)
        | SearchKey::Cc(_)
        | SearchKey::From(_)
        | SearchKey::Subject(_)
        | SearchKey::To(_)
        | SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_) => Need::Fields,
        SearchKey::Header(name, _) => {
            let name = String::from_utf8_lossy(name.as_ref());
            if Fields::cached(&name) {
                Need::Fields
            } else {
                Need::Blob
            }
        }
        SearchKey::Body(_) | SearchKey::Text(_) => Need::Blob,
        _ => Need::Index,
    }
}

/// What a message offers the keys beyond its snapshot entry: its fields
/// (when some key needs [`Need::Fields`] or more) and its bytes (when
/// some key needs [`Need::Blob`]).
#[derive(Default, Clone, Copy)]
pub struct Source<'a> {
    pub fields: Option<&'a Fields>,
    pub raw: Option<&'a [u8]>,
}

/// Evaluate `keys` (all must match) over a folder's messages in sequence
/// order; returns the matching UIDs (`by_uid`) or sequence numbers. Reads
/// the fields cache or the blobs only when a key needs them; a message
/// whose data cannot be read matches no key that needs it (logged).
pub fn run(
    store: &Store,
    msgs: &[(u32, std::sync::Arc<MessageMeta>)],
    seen: &HashSet<u32>,
    recent: &HashSet<u32>,
    keys: &[SearchKey<'_>],
    by_uid: bool,
) -> Vec<u32> {
    let mut hits = Vec::new();
    each_match(store, msgs, seen, recent, keys, |i, _| {
        let seq = u32::try_from(i + 1).unwrap_or(u32::MAX);
        hits.push(if by_uid { msgs[i].0 } else { seq });
    });
    hits
}

/// Call `hit` with the index (in `msgs`) of each message that `keys`
/// match, in sequence order, and its header fields when evaluating the
/// keys read them (SORT and THREAD then need not read them again).
pub fn each_match(
    store: &Store,
    msgs: &[(u32, std::sync::Arc<MessageMeta>)],
    seen: &HashSet<u32>,
    recent: &HashSet<u32>,
    keys: &[SearchKey<'_>],
    mut hit: impl FnMut(usize, Option<Fields>),
) {
    let need = keys.iter().map(need).max().unwrap_or(Need::Index);
    let max_seq = u32::try_from(msgs.len()).unwrap_or(u32::MAX);
    let max_uid = msgs.last().map(|m| m.0).unwrap_or(0);
    // One read of the fields cache for every message.
    let reader = if need == Need::Fields { store.fields_reader().ok() } else { None };
    for (i, (u, meta)) in msgs.iter().enumerate() {
        let seq = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let raw = if need == Need::Blob {
            store
                .get_blob(&meta.hash)
                .map_err(|e| tracing::warn!(error = %e, hash = %meta.hash, "SEARCH cannot read a message"))
                .ok()
        } else {
            None
        };
        let fields = match (&raw, need) {
            (Some(r), _) => Some(Fields::of(r)),
            (None, Need::Fields) => match &reader {
                Some(r) => r.get(&meta.hash),
                None => store.search_fields(&meta.hash),
            }
                .map_err(|e| tracing::warn!(error = %e, hash = %meta.hash, "SEARCH cannot read a message"))
                .ok(),
            _ => None,
        };
        let src = Source {
            fields: fields.as_ref(),
            raw: raw.as_deref(),
        };
        let c = Candidate {
            seq,
            uid: *u,
            meta,
            seen: seen.contains(u),
            recent: recent.contains(u),
            max_seq,
            max_uid,
        };
        if keys.iter().all(|k| matches(k, &c, src, &meta.flags)) {
            hit(i, fields);
        }
    }
}

pub fn in_set(set: &SequenceSet, n: u32, max: u32) -> bool {
    use imap_next::imap_types::sequence::Sequence;
    set.0.as_ref().iter().any(|s| match s {
        Sequence::Single(v) => resolve(v, max) == n,
        Sequence::Range(a, b) => {
            let (a, b) = (resolve(a, max), resolve(b, max));
            (a.min(b)..=a.max(b)).contains(&n)
        }
    })
}

fn resolve(v: &imap_next::imap_types::sequence::SeqOrUid, max: u32) -> u32 {
    use imap_next::imap_types::sequence::SeqOrUid;
    match v {
        SeqOrUid::Value(n) => n.get(),
        SeqOrUid::Asterisk => max,
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    let n = needle.to_ascii_lowercase();
    hay.windows(n.len()).any(|w| w.eq_ignore_ascii_case(&n))
}

fn date_of(d: &DateTime<Utc>) -> NaiveDate {
    d.date_naive()
}

/// Evaluate `key` for one message; `src` has what [`need`] asked for.
pub fn matches(
    key: &SearchKey<'_>,
    c: &Candidate<'_>,
    src: Source<'_>,
    flags_lc: &[String],
) -> bool {
    let raw = src.raw;
    let has = |f: &str| flags_lc.iter().any(|x| x.eq_ignore_ascii_case(f));
    let header = |name: &str, needle: &[u8]| -> bool {
        if let Some(v) = src.fields.and_then(|f| f.get(name)) {
            return v.is_some_and(|h| contains(h.as_bytes(), needle));
        }
        raw.and_then(|r| Fields::header_of(r, name)).is_some_and(|h| contains(h.as_bytes(), needle))
    };
    let body = |needle: &[u8], with_header: bool| -> bool {
        let Some(raw) = raw else { return false };
        let h = fetch::header_end(raw);
        let scope = if with_header { raw } else { &raw[h..] };
        if contains(scope, needle) {
            return true;
        }
        let Some(m) = fetch::parse(raw) else {
            return false;
        };
        (0..m.text_body_count()).any(|i| {
            m.body_text(i)
                .is_some_and(|t| contains(t.as_bytes(), needle))
        }) || (with_header && m.subject().is_some_and(|s| contains(s.as_bytes(), needle)))
    };
    let sent = || src.fields.and_then(|f| f.sent);
    match key {
        SearchKey::And(ks) => ks.as_ref().iter().all(|k| matches(k, c, src, flags_lc)),
        SearchKey::Or(a, b) => matches(a, c, src, flags_lc) || matches(b, c, src, flags_lc),
        SearchKey::Not(k) => !matches(k, c, src, flags_lc),
        SearchKey::SequenceSet(s) => in_set(s, c.seq, c.max_seq),
        SearchKey::Uid(s) => in_set(s, c.uid, c.max_uid),
        SearchKey::All => true,
        SearchKey::Answered => has("\\Answered"),
        SearchKey::Unanswered => !has("\\Answered"),
        SearchKey::Deleted => has("\\Deleted"),
        SearchKey::Undeleted => !has("\\Deleted"),
        SearchKey::Draft => has("\\Draft"),
        SearchKey::Undraft => !has("\\Draft"),
        SearchKey::Flagged => has("\\Flagged"),
        SearchKey::Unflagged => !has("\\Flagged"),
        SearchKey::Seen => c.seen,
        SearchKey::Unseen => !c.seen,
        SearchKey::New => c.recent && !c.seen,
        SearchKey::Old => !c.recent,
        SearchKey::Recent => c.recent,
        SearchKey::Keyword(k) => has(k.as_ref()),
        SearchKey::Unkeyword(k) => !has(k.as_ref()),
        SearchKey::Larger(n) => c.meta.size > u64::from(*n),
        SearchKey::Smaller(n) => c.meta.size < u64::from(*n),
        SearchKey::Before(d) => date_of(&c.meta.internal_date) < *d.as_ref(),
        SearchKey::On(d) => date_of(&c.meta.internal_date) == *d.as_ref(),
        SearchKey::Since(d) => date_of(&c.meta.internal_date) >= *d.as_ref(),
        SearchKey::SentBefore(d) => sent().is_some_and(|s| s < *d.as_ref()),
        SearchKey::SentOn(d) => sent().is_some_and(|s| s == *d.as_ref()),
        SearchKey::SentSince(d) => sent().is_some_and(|s| s >= *d.as_ref()),
        SearchKey::From(s) => header("From", s.as_ref()),
        SearchKey::To(s) => header("To", s.as_ref()),
        SearchKey::Cc(s) => header("Cc", s.as_ref()),
        SearchKey::Bcc(s) => header("Bcc", s.as_ref()),
        SearchKey::Subject(s) => header("Subject", s.as_ref()),
        SearchKey::Header(name, v) => header(&String::from_utf8_lossy(name.as_ref()), v.as_ref()),
        SearchKey::Body(s) => body(s.as_ref(), false),
        SearchKey::Text(s) => body(s.as_ref(), true),
        SearchKey::ModSequence { modseq, .. } => c.meta.modseq >= *modseq,
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::fields::tests::MSG;

    #[test]
    fn keys_ask_for_what_they_need() {
        use imap_next::imap_types::core::AString;
        let s = |v: &str| AString::try_from(v.to_string()).unwrap_or_else(|_| unreachable!());
        assert_eq!(need(&SearchKey::Subject(s("x"))), Need::Fields);
        assert_eq!(need(&SearchKey::Header(s("from"), s("x"))), Need::Fields);
        assert_eq!(need(&SearchKey::Header(s("X-Ricevuta"), s("x"))), Need::Blob);
        assert_eq!(need(&SearchKey::Body(s("x"))), Need::Blob);
        assert_eq!(need(&SearchKey::Seen), Need::Index);
        let or = SearchKey::Or(Box::new(SearchKey::Seen), Box::new(SearchKey::Text(s("x"))));
        assert_eq!(need(&or), Need::Blob);
    }

    fn matches_fields(key: &SearchKey<'_>, raw: &[u8]) -> bool {
        let meta = MessageMeta {
            hash: String::new(),
            size: raw.len() as u64,
            internal_date: Utc::now(),
            flags: vec![],
            modseq: 1,
            archived: Utc::now(),
            pec: None,
            source_uid: None,
            trash_uid: None,
            appended: false,
            all_uid: None,
            label: false,
        };
        let c = Candidate { seq: 1, uid: 1, meta: &meta, seen: false, recent: false, max_seq: 1, max_uid: 1 };
        let f = Fields::of(raw);
        matches(key, &c, Source { fields: Some(&f), raw: None }, &[])
    }

    #[test]
    fn header_keys_match_cached_fields() {
        use imap_next::imap_types::core::AString;
        let s = |v: &str| AString::try_from(v.to_string()).unwrap_or_else(|_| unreachable!());
        assert!(matches_fields(&SearchKey::From(s("città")), MSG) || matches_fields(&SearchKey::From(s("Tributi Citt")), MSG));
        assert!(matches_fields(&SearchKey::From(s("COMUNE.EXAMPLE")), MSG), "case-insensitive");
        assert!(matches_fields(&SearchKey::Subject(s("pratica n. 42")), MSG));
        assert!(matches_fields(&SearchKey::To(s("b@example")), MSG));
        assert!(!matches_fields(&SearchKey::From(s("nobody@else")), MSG), "body text is not From");
        assert!(!matches_fields(&SearchKey::Cc(s("")), MSG), "HEADER with an empty string needs the header");
        assert!(matches_fields(&SearchKey::Header(s("subject"), s("")), MSG));
        let on = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap_or_default();
        let d = imap_next::imap_types::datetime::NaiveDate::try_from(on).unwrap_or_else(|_| unreachable!());
        assert!(matches_fields(&SearchKey::SentOn(d), MSG));
    }
}
