//! SEARCH: evaluating search keys against a folder snapshot.
//!
//! Keys that need the message text (FROM, SUBJECT, BODY, …) load the blob;
//! the rest use the index only. Text matching is ASCII case-insensitive
//! substring matching on the decoded header values and text parts, plus the
//! raw bytes (so encoded words and base64 bodies are found once decoded).

use chrono::{DateTime, NaiveDate, Utc};
use imap_next::imap_types::search::SearchKey;
use imap_next::imap_types::sequence::SequenceSet;

use super::fetch;
use crate::store::MessageMeta;

/// One message as SEARCH sees it.
pub struct Candidate<'a> {
    pub seq: u32,
    pub uid: u32,
    pub meta: &'a MessageMeta,
    pub seen: bool,
    /// Highest sequence number and UID in the folder (for `*`).
    pub max_seq: u32,
    pub max_uid: u32,
}

/// Does any key need the message bytes?
pub fn needs_body(k: &SearchKey<'_>) -> bool {
    match k {
        SearchKey::And(ks) => ks.as_ref().iter().any(needs_body),
        SearchKey::Not(k) => needs_body(k),
        SearchKey::Or(a, b) => needs_body(a) || needs_body(b),
        SearchKey::Bcc(_)
        | SearchKey::Body(_)
        | SearchKey::Cc(_)
        | SearchKey::From(_)
        | SearchKey::Header(..)
        | SearchKey::Subject(_)
        | SearchKey::Text(_)
        | SearchKey::To(_)
        | SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_) => true,
        _ => false,
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

/// Evaluate `key` for one message; `raw` is the message when
/// [`needs_body`] said so.
pub fn matches(
    key: &SearchKey<'_>,
    c: &Candidate<'_>,
    raw: Option<&[u8]>,
    flags_lc: &[String],
) -> bool {
    let has = |f: &str| flags_lc.iter().any(|x| x.eq_ignore_ascii_case(f));
    let header = |name: &str, needle: &[u8]| -> bool {
        let Some(raw) = raw else { return false };
        let Some(m) = fetch::parse(raw) else {
            return false;
        };
        m.headers()
            .iter()
            .filter(|h| h.name.as_str().eq_ignore_ascii_case(name))
            .any(|h| {
                let r = raw
                    .get(h.offset_start as usize..h.offset_end as usize)
                    .unwrap_or_default();
                contains(r, needle)
                    || h.value
                        .as_text()
                        .is_some_and(|t| contains(t.as_bytes(), needle))
                    || addr_contains(&h.value, needle)
            })
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
    let sent = || {
        raw.and_then(fetch::parse)
            .and_then(|m| m.date().map(|d| d.to_timestamp()))
            .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0).map(|d| d.date_naive()))
    };
    match key {
        SearchKey::And(ks) => ks.as_ref().iter().all(|k| matches(k, c, raw, flags_lc)),
        SearchKey::Or(a, b) => matches(a, c, raw, flags_lc) || matches(b, c, raw, flags_lc),
        SearchKey::Not(k) => !matches(k, c, raw, flags_lc),
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
        SearchKey::New => false,
        SearchKey::Old => true,
        SearchKey::Recent => false,
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

fn addr_contains(v: &mail_parser::HeaderValue<'_>, needle: &[u8]) -> bool {
    match v.as_address() {
        Some(a) => a.iter().any(|x| {
            x.name
                .as_deref()
                .is_some_and(|n| contains(n.as_bytes(), needle))
                || x.address
                    .as_deref()
                    .is_some_and(|n| contains(n.as_bytes(), needle))
        }),
        None => false,
    }
}
