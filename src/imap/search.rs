//! SEARCH: evaluating search keys against a folder snapshot.
//!
//! FROM, TO, CC, BCC, SUBJECT and SENT* use header fields cached in the
//! store per message (`store::fields`); BODY and TEXT ask the full-text
//! index (`crate::fulltext`: every word as the start of a word, Italian
//! analysis) and load the blob only when it cannot answer (a string of
//! stop words, no index) or the folder is small enough to match
//! substrings too ([`SUBSTRINGS_UP_TO`]); other HEADER fields load the blob; the rest use
//! the snapshot only. Text matching is ASCII
//! case-insensitive substring matching on the decoded header values and
//! text parts, plus the raw bytes (so encoded words and base64 bodies are
//! found once decoded).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use chrono::{DateTime, NaiveDate, Utc};
use imap_next::imap_types::search::SearchKey;
use imap_next::imap_types::sequence::SequenceSet;

use super::fetch;
use super::recent::Recent;
use super::shared::{Entries, Msg};
use super::uidset::UidSet;
use crate::store::fields::MatchFields;
use crate::store::fields::SearchFields as Fields;
use crate::store::{BlobHash, FieldsReader, PrefixHasher, PrefixSet, Store};

/// One message as SEARCH sees it.
pub struct Candidate<'a> {
    pub seq: u32,
    pub uid: u32,
    pub meta: &'a Msg,
    pub seen: bool,
    /// This session is the first to see it (`\\Recent`).
    pub recent: bool,
    /// Highest sequence number and UID in the folder (for `*`).
    pub max_seq: u32,
    pub max_uid: u32,
}

impl<'a> Candidate<'a> {
    /// Message `i` of `msgs`.
    pub fn at(msgs: &'a Entries, i: usize, seen: &UidSet, recent: &Recent) -> Candidate<'a> {
        let (uid, meta) = &msgs[i];
        Candidate {
            seq: u32::try_from(i + 1).unwrap_or(u32::MAX),
            uid: *uid,
            meta,
            seen: seen.contains(*uid),
            recent: recent.contains(*uid),
            max_seq: u32::try_from(msgs.len()).unwrap_or(u32::MAX),
            max_uid: msgs.last().map_or(0, |m| m.0),
        }
    }
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
    need_with(k, &FullTextHits::default())
}

/// [`need`], with BODY and TEXT keys the full-text index answered
/// needing nothing more than the snapshot.
pub fn need_with(k: &SearchKey<'_>, ft: &FullTextHits) -> Need {
    match k {
        SearchKey::And(ks) => ks.as_ref().iter().map(|k| need_with(k, ft)).max().unwrap_or(Need::Index),
        SearchKey::Not(k) => need_with(k, ft),
        SearchKey::Or(a, b) => need_with(a, ft).max(need_with(b, ft)),
        SearchKey::Body(s) if !ft.substrings && ft.answers(s.as_ref(), false).is_some() => Need::Index,
        SearchKey::Text(s) if !ft.substrings && ft.answers(s.as_ref(), true).is_some() => Need::Index,
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
/// some key needs [`Need::Blob`]), and the BODY/TEXT answers of the
/// full-text index.
#[derive(Default, Clone, Copy)]
pub struct Source<'a> {
    pub fields: Option<MatchFields<'a>>,
    pub raw: Option<&'a [u8]>,
    pub fulltext: Option<&'a FullTextHits>,
}

/// BODY and TEXT keys answered by the full-text index (word-start
/// matching with Italian analysis, see `crate::fulltext`): for each key's
/// string, the matching messages' hashes (first 64 bits). A key the index
/// cannot answer (only stop words, or the index failed) is not here and
/// is evaluated by reading the messages (substring matching).
#[derive(Default, Debug)]
pub struct FullTextHits {
    /// By search string and whether TEXT (header included) asked: a
    /// handful at most, looked up for every message of the folder, so a
    /// list compared in place (a map's key allocated and SipHashed per
    /// message was a third of a million-message SEARCH BODY).
    hits: Vec<((Vec<u8>, bool), PrefixSet)>,
    /// The folder is small enough to also match substrings by reading
    /// its messages (see [`SUBSTRINGS_UP_TO`]).
    substrings: bool,
}

/// Folders of up to this many messages get RFC 3501's substring matching
/// for BODY and TEXT besides the index's words (`sdfghjk` finds
/// `asdfghjkl`; `solleciti` still finds `sollecito`): reading a thousand
/// messages takes tens of milliseconds. Larger folders are answered by the
/// index alone, by whole words and word starts (README, "Searching").
pub const SUBSTRINGS_UP_TO: usize = 1_000;

/// How far behind the archive (journal records) the full-text index may
/// be for a SEARCH to wait for it: what was just archived. Further
/// behind, the indexer is catching up (after a restart, a new index
/// format, a reindex: thousands of messages a second, committed every
/// 20,000 records), 2 s would not bring it to the archive, and SEARCH
/// answers at once from what is indexed.
const WAIT_FOR_INDEX: u64 = 2_000;

impl FullTextHits {
    /// Ask `ft` about every BODY and TEXT key of `keys`, in `mailbox`,
    /// once it has indexed what the archive held when asked (waiting up
    /// to 2 s for the indexer when it is at most [`WAIT_FOR_INDEX`]
    /// records behind; past that it answers from what it has).
    pub fn prepare(
        store: &Store,
        ft: Option<&crate::fulltext::FullText>,
        mailbox: &str,
        keys: &[SearchKey<'_>],
        messages: usize,
    ) -> FullTextHits {
        let mut out = FullTextHits { substrings: messages <= SUBSTRINGS_UP_TO, ..FullTextHits::default() };
        let Some(ft) = ft else { return out };
        if keys.iter().all(|k| need(k) < Need::Blob) {
            return out;
        }
        let target = store.applied_seq().unwrap_or(0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        if ft.indexed_seq() < target {
            ft.hurry();
        }
        let close = target.saturating_sub(ft.indexed_seq()) <= WAIT_FOR_INDEX;
        while close && ft.indexed_seq() < target && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        fn walk(k: &SearchKey<'_>, each: &mut dyn FnMut(&[u8], bool)) {
            match k {
                SearchKey::And(ks) => ks.as_ref().iter().for_each(|k| walk(k, each)),
                SearchKey::Or(a, b) => {
                    walk(a, each);
                    walk(b, each)
                }
                SearchKey::Not(k) => walk(k, each),
                SearchKey::Body(s) => each(s.as_ref(), false),
                SearchKey::Text(s) => each(s.as_ref(), true),
                _ => {}
            }
        }
        for k in keys {
            walk(k, &mut |needle, with_header| {
                if out.answers(needle, with_header).is_some() {
                    return;
                }
                match ft.imap_matches(mailbox, &String::from_utf8_lossy(needle), with_header) {
                    Ok(Some(set)) => {
                        out.hits.push(((needle.to_vec(), with_header), set));
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "SEARCH: the full-text index failed; reading the messages"),
                }
            });
        }
        out
    }

    fn answers(&self, needle: &[u8], with_header: bool) -> Option<&PrefixSet> {
        self.hits.iter().find(|((n, h), _)| *h == with_header && n.as_slice() == needle).map(|(_, set)| set)
    }
}

/// From this many messages on, a SEARCH on cached header fields reads the
/// fields cache in one pass in its own order instead of looking each
/// message up (a million lookups in a cache larger than memory were
/// 6–8 s; one pass, under a second).
const SCAN_FROM: usize = 4096;

/// Evaluate `keys` (all must match) over a folder's messages in sequence
/// order; returns the matching UIDs (`by_uid`) or sequence numbers. Reads
/// the fields cache or the blobs only when a key needs them; a message
/// whose data cannot be read matches no key that needs it (logged).
pub fn run(
    store: &Store,
    msgs: &Entries,
    seen: &UidSet,
    recent: &Recent,
    keys: &[SearchKey<'_>],
    by_uid: bool,
    ft: &FullTextHits,
) -> Vec<u32> {
    let number = |i: usize| if by_uid { msgs[i].0 } else { u32::try_from(i + 1).unwrap_or(u32::MAX) };
    let need = keys.iter().map(|k| need_with(k, ft)).max().unwrap_or(Need::Index);
    if need == Need::Fields && msgs.len() >= SCAN_FROM {
        if let Ok(reader) = store.fields_reader() {
            let mut hits = scanned(store, &reader, msgs, seen, recent, keys, ft);
            hits.sort_unstable();
            return hits.into_iter().map(number).collect();
        }
    }
    let mut hits = Vec::new();
    each_match(store, msgs, seen, recent, keys, ft, |i, _| hits.push(number(i)));
    hits
}

/// [`run`] through one pass over the fields cache: the indexes (in
/// `msgs`) of the matches, in no order. Messages the pass does not reach
/// (fields not cached yet, a blob twice in the folder) are looked up one
/// by one, as [`each_match`] does.
fn scanned(
    store: &Store,
    reader: &FieldsReader,
    msgs: &Entries,
    seen: &UidSet,
    recent: &Recent,
    keys: &[SearchKey<'_>],
    ft: &FullTextHits,
) -> Vec<usize> {
    // By the hash's first 64 bits (a SHA-256's, uniform already: not
    // hashed again); a second message under the same bits (the same blob
    // twice) is left to the lookups.
    let mut at: HashMap<u64, usize, BuildHasherDefault<PrefixHasher>> = HashMap::default();
    at.reserve(msgs.len());
    let mut done = vec![false; msgs.len()];
    for (i, (_, m)) in msgs.iter().enumerate() {
        if let Some(k) = bits(&m.hash) {
            at.entry(k).or_insert(i);
        }
    }
    let mut hits = Vec::new();
    let walked = reader.scan(
        |h| at.get(&bits(h)?).copied().filter(|&i| msgs[i].1.hash == *h),
        |i, f| {
            let c = Candidate::at(msgs, i, seen, recent);
            let src = Source { fields: Some(f), raw: None, fulltext: Some(ft) };
            (i, keys.iter().all(|k| matches(k, &c, src, &msgs[i].1.flags)))
        },
    );
    match walked {
        Ok(seen_there) => {
            for (i, hit) in seen_there {
                done[i] = true;
                if hit {
                    hits.push(i);
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "SEARCH cannot read the fields cache through: looking messages up one by one")
        }
    }
    for i in (0..msgs.len()).filter(|&i| !done[i]) {
        if evaluate(store, Some(reader), msgs, i, seen, recent, keys, Need::Fields, ft).0 {
            hits.push(i);
        }
    }
    hits
}

/// A SHA-256 blob hash's first 64 bits.
fn bits(h: &BlobHash) -> Option<u64> {
    match h {
        BlobHash::Sha256(raw) => {
            Some(u64::from_le_bytes([raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7]]))
        }
        BlobHash::Other(_) => None,
    }
}

/// Call `hit` with the index (in `msgs`) of each message that `keys`
/// match, in sequence order, and its header fields when evaluating the
/// keys read them (SORT and THREAD then need not read them again).
pub fn each_match(
    store: &Store,
    msgs: &Entries,
    seen: &UidSet,
    recent: &Recent,
    keys: &[SearchKey<'_>],
    ft: &FullTextHits,
    mut hit: impl FnMut(usize, Option<Fields>),
) {
    let need = keys.iter().map(|k| need_with(k, ft)).max().unwrap_or(Need::Index);
    // One read of the fields cache for every message.
    let reader = if need == Need::Fields { store.fields_reader().ok() } else { None };
    for i in 0..msgs.len() {
        if let (true, fields) = evaluate(store, reader.as_ref(), msgs, i, seen, recent, keys, need, ft) {
            hit(i, fields);
        }
    }
}

/// Do `keys` match message `i` of `msgs`? Reads what `need` says, and
/// returns the fields it read.
#[allow(clippy::too_many_arguments)]
fn evaluate(
    store: &Store,
    reader: Option<&FieldsReader>,
    msgs: &Entries,
    i: usize,
    seen: &UidSet,
    recent: &Recent,
    keys: &[SearchKey<'_>],
    need: Need,
    ft: &FullTextHits,
) -> (bool, Option<Fields>) {
    let meta = &msgs[i].1;
    let hash = if need >= Need::Fields { meta.hash.hex() } else { String::new() };
    let raw = if need == Need::Blob {
        store
            .get_blob(&hash)
            .map_err(|e| tracing::warn!(error = %e, hash = %meta.hash, "SEARCH cannot read a message"))
            .ok()
    } else {
        None
    };
    let fields = match (&raw, need) {
        (Some(r), _) => Some(Fields::of(r)),
        (None, Need::Fields) => match reader {
            Some(r) => r.get(&hash),
            None => store.search_fields(&hash),
        }
        .map_err(|e| tracing::warn!(error = %e, hash = %meta.hash, "SEARCH cannot read a message"))
        .ok(),
        _ => None,
    };
    let src = Source { fields: fields.as_ref().map(Fields::matching), raw: raw.as_deref(), fulltext: Some(ft) };
    let c = Candidate::at(msgs, i, seen, recent);
    (keys.iter().all(|k| matches(k, &c, src, &meta.flags)), fields)
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

/// The largest number `set` names (`*` being `max`).
pub fn set_max(set: &SequenceSet, max: u32) -> u32 {
    set_ends(set, max).1
}

/// The lowest number `set` names (`*` being `max`).
pub fn set_min(set: &SequenceSet, max: u32) -> u32 {
    set_ends(set, max).0
}

/// The lowest and the largest number `set` names (`*` being `max`).
fn set_ends(set: &SequenceSet, max: u32) -> (u32, u32) {
    use imap_next::imap_types::sequence::Sequence;
    set.0
        .as_ref()
        .iter()
        .map(|s| match s {
            Sequence::Single(v) => (resolve(v, max), resolve(v, max)),
            Sequence::Range(a, b) => {
                let (a, b) = (resolve(a, max), resolve(b, max));
                (a.min(b), a.max(b))
            }
        })
        .reduce(|x, y| (x.0.min(y.0), x.1.max(y.1)))
        .unwrap_or((0, 0))
}

fn resolve(v: &imap_next::imap_types::sequence::SeqOrUid, max: u32) -> u32 {
    use imap_next::imap_types::sequence::SeqOrUid;
    match v {
        SeqOrUid::Value(n) => n.get(),
        SeqOrUid::Asterisk => max,
    }
}

/// Is `needle` in `hay`, ASCII case-insensitively? Jumps between
/// occurrences of the needle's first byte (either case) with memchr; no
/// allocation (SEARCH calls it for every message of the folder).
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else { return true };
    let Some(last_start) = hay.len().checked_sub(needle.len()) else { return false };
    let (lo, up) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
    let mut from = 0;
    while from <= last_start {
        let Some(p) = memchr::memchr2(lo, up, &hay[from..=last_start]) else { return false };
        let at = from + p;
        if hay[at + 1..at + needle.len()].eq_ignore_ascii_case(rest) {
            return true;
        }
        from = at + 1;
    }
    false
}

fn date_of(d: &DateTime<Utc>) -> NaiveDate {
    d.date_naive()
}

/// Evaluate `key` for one message; `src` has what [`need`] asked for.
pub fn matches(key: &SearchKey<'_>, c: &Candidate<'_>, src: Source<'_>, flags_lc: &[String]) -> bool {
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
        (0..m.text_body_count()).any(|i| m.body_text(i).is_some_and(|t| contains(t.as_bytes(), needle)))
            || (with_header && m.subject().is_some_and(|s| contains(s.as_bytes(), needle)))
    };
    let sent = || src.fields.and_then(|f| f.sent());
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
        SearchKey::Body(s) | SearchKey::Text(s) => {
            let with_header = matches!(key, SearchKey::Text(_));
            match src.fulltext.and_then(|f| f.answers(s.as_ref(), with_header).map(|set| (set, f.substrings))) {
                Some((set, substrings)) => {
                    bits(&c.meta.hash).is_some_and(|b| set.contains(&b))
                        || (substrings && body(s.as_ref(), with_header))
                }
                None => body(s.as_ref(), with_header),
            }
        }
        SearchKey::ModSequence { modseq, .. } => c.meta.modseq >= *modseq,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::fields::tests::MSG;

    #[test]
    fn a_sets_ends() {
        let set = |s: &str| SequenceSet::try_from(s).unwrap_or_else(|e| panic!("{s}: {e:?}"));
        assert_eq!((set_min(&set("7,3:5,*"), 20), set_max(&set("7,3:5,*"), 20)), (3, 20));
        assert_eq!((set_min(&set("9:2"), 20), set_max(&set("9:2"), 20)), (2, 9));
        assert_eq!((set_min(&set("*:18"), 20), set_max(&set("*:18"), 20)), (18, 20));
        assert_eq!((set_min(&set("*"), 0), set_max(&set("*"), 0)), (0, 0));
    }

    /// A large folder's SEARCH on header fields reads the cache in one
    /// pass; it finds what looking each message up finds, in the same
    /// order, for every kind of header key and with other keys beside.
    #[tokio::test]
    async fn one_pass_over_the_cache_finds_what_lookups_find() {
        use crate::store::{Audit, Change, StoreOptions};
        use imap_next::imap_types::core::AString;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        let n = SCAN_FROM + 300;
        let mut batch = Vec::new();
        for i in 0..n {
            let raw = format!(
                "From: mittente{}@pec.example.it\r\nTo: a{}@example.it\r\nSubject: Pratica {i}\r\nDate: Thu, {} Nov 2026 10:00:00 +0100\r\n\r\nx\r\n",
                i % 7,
                i % 3,
                1 + i % 28
            );
            let blob = store.put_blob(raw.into_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
            let flags = if i % 5 == 0 { vec!["\\Flagged".to_string()] } else { vec![] };
            let ch = Change::Archive {
                mailbox: "prot".into(),
                folder: "INBOX".into(),
                blob,
                internal_date: chrono::Utc::now(),
                flags,
                provider: None,
                pec: None,
                handling: None,
            };
            batch.push((Audit::system("test", "archive"), ch));
        }
        store.commit_batch(batch).await.unwrap_or_else(|e| panic!("{e}"));
        let mut sets = crate::imap::shared::FlagSets::default();
        let msgs: Entries = store
            .messages("prot", "INBOX")
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|(u, m)| (u, Msg::from_meta(&m, &mut sets)))
            .collect();
        assert_eq!(msgs.len(), n);
        // The listing a SELECT reads (in two parts, from 1,024 entries in
        // tests) is the same.
        let listed = store
            .scan_folder("prot", "INBOX", crate::imap::shared::FlagSets::default, |s, b| {
                Msg::from_brief(b, s, |_| true)
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(listed, *msgs);
        let seen: UidSet = msgs.iter().map(|m| m.0).filter(|u| u % 2 == 0).collect();
        let s = |v: &str| AString::try_from(v.to_string()).unwrap_or_else(|_| unreachable!());
        let d = |day| {
            imap_next::imap_types::datetime::NaiveDate::try_from(
                chrono::NaiveDate::from_ymd_opt(2026, 11, day).unwrap_or_default(),
            )
            .unwrap_or_else(|_| unreachable!())
        };
        let cases: Vec<Vec<SearchKey<'_>>> = vec![
            vec![SearchKey::Subject(s("Pratica 4100"))],
            vec![SearchKey::From(s("mittente3"))],
            vec![SearchKey::To(s("a2@")), SearchKey::Flagged],
            vec![SearchKey::Not(Box::new(SearchKey::Subject(s("pratica 1"))))],
            vec![SearchKey::Or(Box::new(SearchKey::Cc(s("x"))), Box::new(SearchKey::SentOn(d(3)))), SearchKey::Unseen],
            vec![SearchKey::Header(s("subject"), s("PRATICA 42"))],
        ];
        for keys in &cases {
            assert_eq!(keys.iter().map(need).max(), Some(Need::Fields));
            for by_uid in [true, false] {
                let scanned = run(&store, &msgs, &seen, &Recent::default(), keys, by_uid, &FullTextHits::default());
                let mut looked_up = Vec::new();
                each_match(&store, &msgs, &seen, &Recent::default(), keys, &FullTextHits::default(), |i, _| {
                    looked_up.push(if by_uid { msgs[i].0 } else { i as u32 + 1 })
                });
                assert!(!looked_up.is_empty(), "{keys:?} finds something");
                assert_eq!(scanned, looked_up, "{keys:?}");
            }
        }
        // A message the cache does not hold (its blob is not a SHA-256
        // name here) is still looked at, as when looked up: its fields
        // cannot be read, so SUBJECT does not match it and NOT SUBJECT
        // does.
        let mut odd = msgs.clone();
        odd.push((u32::MAX, Msg { hash: BlobHash::parse("not-cached"), ..msgs[0].1.clone() }));
        let hits = run(
            &store,
            &odd,
            &seen,
            &Recent::default(),
            &[SearchKey::Subject(s("Pratica"))],
            true,
            &FullTextHits::default(),
        );
        assert_eq!(hits.len(), n, "every cached one, not the unreadable one");
        let keys = [SearchKey::Not(Box::new(SearchKey::Subject(s("Pratica"))))];
        assert_eq!(run(&store, &odd, &seen, &Recent::default(), &keys, true, &FullTextHits::default()), vec![u32::MAX]);
    }

    #[test]
    fn substrings_are_found_in_either_case() {
        assert!(contains(b"Oggetto: Sollecito", b"SOLLECITO"));
        assert!(contains(b"abc", b""));
        assert!(!contains(b"ab", b"abc"));
        assert!(contains(b"aab", b"ab"), "after a false start");
        assert!(contains(b"xx.it", b".IT"), "a first byte without case");
        assert!(contains(b"citt\xc3\xa0", b"CITT\xc3\xa0"));
        assert!(!contains(b"ornitorinco", b"ornitorinchi"));
        assert!(contains(b"ORNITORINCO", b"o"));
        assert!(!contains(b"", b"o"));
    }

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
        let meta = Msg {
            hash: crate::store::BlobHash::parse(""),
            size: raw.len() as u64,
            internal_date: Utc::now(),
            modseq: 1,
            flags: std::sync::Arc::from(Vec::new()),
            source_uid: None,
            appended: false,
        };
        let c = Candidate { seq: 1, uid: 1, meta: &meta, seen: false, recent: false, max_seq: 1, max_uid: 1 };
        let f = Fields::of(raw);
        matches(key, &c, Source { fields: Some(f.matching()), raw: None, fulltext: None }, &[])
    }

    #[test]
    fn header_keys_match_cached_fields() {
        use imap_next::imap_types::core::AString;
        let s = |v: &str| AString::try_from(v.to_string()).unwrap_or_else(|_| unreachable!());
        assert!(
            matches_fields(&SearchKey::From(s("città")), MSG)
                || matches_fields(&SearchKey::From(s("Tributi Citt")), MSG)
        );
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
