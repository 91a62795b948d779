//! What FETCH needs of a message besides its bytes, worked out once per
//! blob and kept: ENVELOPE, BODYSTRUCTURE and where each MIME part starts
//! and ends.
//!
//! Working them out means a full parse, and mail-parser decodes every part
//! as it parses (a 40 KB base64 attachment is decoded to be thrown away):
//! under imaptest's stress mix that decoding was the daemon's largest
//! single cost (BENCHMARKS.md). Dovecot keeps the same facts in its
//! `dovecot.index.cache`. Blobs never change (a blob is named by its
//! SHA-256), so an entry is never stale: the cache only has to stay within
//! its memory budget, least recently used out first. It is shared by every
//! session: ten clients reading the same folder parse each message once.

use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use imap_next::imap_types::body::BodyStructure;
use imap_next::imap_types::envelope::Envelope;
use mail_parser::{Message, MessagePart, MimeHeaders, PartType};

use super::fetch;
use crate::store::BlobHash;

/// How much memory the cache may hold (an estimate: see
/// [`Anatomy::weight`]): a few thousand messages, the working set of
/// a few clients syncing, for 16 MiB of the daemon's memory (its targets:
/// 10,000 idle sessions in 300 MiB, a million-message folder selected in
/// 400 MiB).
const BUDGET: usize = 16 << 20;

/// Nesting (multipart in multipart, message in message) beyond which parts
/// get no span: such a part is found by parsing the message again.
const MAX_DEPTH: usize = 32;

/// The largest header block kept (a header is typically 1–3 KB).
const MAX_HEADER: usize = 16 * 1024;

/// A message's structure as FETCH answers it.
pub struct Anatomy {
    pub envelope: Envelope<'static>,
    pub structure: BodyStructure<'static>,
    /// The message's header block, blank line included (`None` past
    /// [`MAX_HEADER`]): HEADER, HEADER.FIELDS and RFC822.HEADER of a
    /// message whose anatomy is cached read no blob.
    pub header: Option<Box<[u8]>>,
    /// Every part reachable by an IMAP part number, depth first.
    spans: Vec<Span>,
    /// Some parts lie deeper than [`MAX_DEPTH`] and have no span.
    deep: bool,
}

/// A part: its IMAP number and where it lies.
struct Span {
    number: Box<[u32]>,
    at: Located,
}

/// Where a part lies in the outermost message (byte offsets), and what
/// kind it is: what `fetch::section` and `fetch::binary` slice. Worked out
/// from a parse by [`locate`], for the anatomy's spans and for parts found
/// by parsing again.
#[derive(Clone)]
pub struct Located {
    pub header: usize,
    pub body: usize,
    pub end: usize,
    pub kind: PartKind,
}

#[derive(Clone)]
pub enum PartKind {
    Multipart,
    /// A message/rfc822 part; where its own body starts, if it was parsed
    /// in place (its offsets are the outer message's).
    Message {
        inner_body: Option<usize>,
    },
    /// Its Content-Transfer-Encoding, trimmed and in lower case.
    Leaf {
        cte: Option<Box<str>>,
    },
}

/// A part found by its number.
pub enum Found {
    Part(Located),
    /// Not among the spans, but deeper than they go: parse to find it.
    TooDeep,
    Missing,
}

/// Where `part` of the message `raw` lies, and its kind.
pub fn locate(raw: &[u8], part: &MessagePart<'_>) -> Located {
    let kind = match &part.body {
        PartType::Multipart(_) => PartKind::Multipart,
        PartType::Message(inner) => PartKind::Message {
            inner_body: inner.parts.first().filter(|_| fetch::in_place(raw, inner)).map(|r| r.offset_body as usize),
        },
        _ => PartKind::Leaf { cte: part.content_transfer_encoding().map(|c| c.trim().to_ascii_lowercase().into()) },
    };
    Located {
        header: part.offset_header as usize,
        body: part.offset_body as usize,
        end: part.offset_end as usize,
        kind,
    }
}

impl Anatomy {
    /// One parse of `raw`.
    pub fn of(raw: &[u8]) -> Anatomy {
        let parsed = fetch::parse(raw);
        let msg = parsed.as_deref();
        let (mut spans, mut deep) = (Vec::new(), false);
        if let Some(m) = msg {
            number_parts(raw, m, &mut Vec::new(), &mut spans, 0, &mut deep);
        }
        let h = fetch::header_end(raw);
        let header = (h <= MAX_HEADER).then(|| raw[..h].into());
        Anatomy { envelope: fetch::envelope(msg), structure: fetch::body_structure(raw, msg), header, spans, deep }
    }

    /// The part `numbers` (IMAP numbering, 1-based).
    pub fn part(&self, numbers: &[u32]) -> Found {
        match self.spans.iter().find(|s| &*s.number == numbers) {
            Some(s) => Found::Part(s.at.clone()),
            None if self.deep => Found::TooDeep,
            None => Found::Missing,
        }
    }

    /// Bytes held, roughly: the structure of a part costs a few hundred
    /// bytes (its fields as owned strings), its span a few dozen.
    fn weight(&self) -> usize {
        1024 + self.spans.len() * 512 + self.header.as_ref().map_or(0, |h| h.len())
    }
}

/// Number the parts of `msg` as IMAP does (RFC 3501 §6.4.5): the children
/// of a multipart root are 1, 2, …; a root that is not multipart is 1.
fn number_parts(
    raw: &[u8],
    msg: &Message<'_>,
    prefix: &mut Vec<u32>,
    out: &mut Vec<Span>,
    depth: usize,
    deep: &mut bool,
) {
    let Some(root) = msg.parts.first() else { return };
    match &root.body {
        PartType::Multipart(children) => children_of(raw, msg, children, prefix, out, depth, deep),
        _ => {
            prefix.push(1);
            visit(raw, msg, root, prefix, out, depth, deep);
            prefix.pop();
        }
    }
}

fn children_of(
    raw: &[u8],
    msg: &Message<'_>,
    children: &[u32],
    prefix: &mut Vec<u32>,
    out: &mut Vec<Span>,
    depth: usize,
    deep: &mut bool,
) {
    for (i, c) in children.iter().enumerate() {
        let Some(child) = msg.parts.get(*c as usize) else { continue };
        prefix.push(u32::try_from(i + 1).unwrap_or(u32::MAX));
        visit(raw, msg, child, prefix, out, depth, deep);
        prefix.pop();
    }
}

fn visit(
    raw: &[u8],
    msg: &Message<'_>,
    part: &MessagePart<'_>,
    prefix: &mut Vec<u32>,
    out: &mut Vec<Span>,
    depth: usize,
    deep: &mut bool,
) {
    out.push(Span { number: prefix.as_slice().into(), at: locate(raw, part) });
    if depth >= MAX_DEPTH {
        *deep |= matches!(&part.body, PartType::Multipart(_) | PartType::Message(_));
        return;
    }
    match &part.body {
        PartType::Multipart(children) => children_of(raw, msg, children, prefix, out, depth + 1, deep),
        PartType::Message(inner) if fetch::in_place(raw, inner) => {
            number_parts(raw, inner, prefix, out, depth + 1, deep)
        }
        _ => {}
    }
}

struct Cache {
    map: lru::LruCache<BlobHash, Arc<Anatomy>>,
    bytes: usize,
}

static CACHE: LazyLock<Mutex<Cache>> =
    LazyLock::new(|| Mutex::new(Cache { map: lru::LruCache::unbounded(), bytes: 0 }));

/// The anatomy of the blob `hash`, if it is in the cache.
pub fn cached(hash: &BlobHash) -> Option<Arc<Anatomy>> {
    CACHE.lock().unwrap_or_else(PoisonError::into_inner).map.get(hash).cloned()
}

/// The anatomy of the blob `hash` whose bytes are `raw`: from the cache, or
/// worked out (outside the lock) and kept.
pub fn of(hash: &BlobHash, raw: &[u8]) -> Arc<Anatomy> {
    if let Some(a) = cached(hash) {
        return a;
    }
    let a = Arc::new(Anatomy::of(raw));
    let w = a.weight();
    if w <= BUDGET / 64 {
        let mut c = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = c.map.put(hash.clone(), a.clone()) {
            c.bytes -= old.weight();
        }
        c.bytes += w;
        while c.bytes > BUDGET {
            match c.map.pop_lru() {
                Some((_, old)) => c.bytes -= old.weight(),
                None => break,
            }
        }
    }
    a
}

/// For tests: how many anatomies the cache holds.
#[cfg(test)]
fn len() -> usize {
    CACHE.lock().unwrap_or_else(PoisonError::into_inner).map.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NESTED: &[u8] = b"From: a@b\r\nContent-Type: multipart/mixed; boundary=\"x\"\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nhello\r\n--x\r\nContent-Type: message/rfc822\r\n\r\nFrom: c@d\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=\"y\"\r\n\r\n--y\r\nContent-Type: text/plain\r\n\r\ninner text\r\n--y\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\nPGI+aGk8L2I+\r\n--y--\r\n\r\n--x--\r\n";

    #[test]
    fn parts_are_numbered_as_imap_does() {
        let a = Anatomy::of(NESTED);
        let numbers: Vec<Vec<u32>> = a.spans.iter().map(|s| s.number.to_vec()).collect();
        assert_eq!(numbers, vec![vec![1], vec![2], vec![2, 1], vec![2, 2]]);
        let Found::Part(Located { body, end, kind: PartKind::Leaf { cte }, .. }) = a.part(&[2, 2]) else {
            panic!("2.2")
        };
        assert_eq!((&NESTED[body..end], cte.as_deref()), (&b"PGI+aGk8L2I+"[..], Some("base64")));
        assert!(matches!(a.part(&[2]), Found::Part(Located { kind: PartKind::Message { inner_body: Some(_) }, .. })));
        assert!(matches!(a.part(&[3]), Found::Missing));
    }

    #[test]
    fn sections_from_the_anatomy_equal_those_of_a_parse() {
        use imap_next::imap_types::fetch::{Part, Section};
        let part = |n: &[u32]| {
            Part(n.iter().map(|n| std::num::NonZeroU32::new(*n).unwrap()).collect::<Vec<_>>().try_into().unwrap())
        };
        let a = Anatomy::of(NESTED);
        for n in [&[1u32][..], &[2], &[2, 1], &[2, 2], &[3], &[2, 3], &[1, 1]] {
            for s in [
                Section::Part(part(n)),
                Section::Mime(part(n)),
                Section::Header(Some(part(n))),
                Section::Text(Some(part(n))),
            ] {
                assert_eq!(fetch::section_with(NESTED, &a, Some(&s)), fetch::section(NESTED, Some(&s)), "{n:?} {s:?}");
            }
            assert_eq!(fetch::binary_with(NESTED, &a, n), fetch::binary(NESTED, n), "{n:?}");
        }
    }

    #[test]
    fn the_header_is_kept_unless_huge() {
        let a = Anatomy::of(NESTED);
        let h = a.header.as_deref().expect("kept");
        assert!(h.ends_with(b"\r\n\r\n") && NESTED.starts_with(h));
        assert_eq!(fetch::header_end(h), h.len(), "HEADER of the kept block is the whole block");
        let mut huge = Vec::new();
        for i in 0..2000 {
            huge.extend_from_slice(format!("X-Field-{i}: some value\r\n").as_bytes());
        }
        huge.extend_from_slice(b"\r\nbody\r\n");
        assert!(Anatomy::of(&huge).header.is_none());
    }

    #[test]
    fn deep_nesting_falls_back_to_a_parse() {
        let mut m = b"Subject: leaf\r\n\r\nbody\r\n".to_vec();
        for _ in 0..MAX_DEPTH + 4 {
            let mut outer = b"Subject: wrap\r\nContent-Type: message/rfc822\r\n\r\n".to_vec();
            outer.extend_from_slice(&m);
            m = outer;
        }
        let a = Anatomy::of(&m);
        let deepest = vec![1u32; MAX_DEPTH + 5];
        assert!(matches!(a.part(&deepest), Found::TooDeep));
        assert_eq!(fetch::binary_with(&m, &a, &deepest), fetch::binary(&m, &deepest));
    }

    #[test]
    fn the_cache_keeps_what_it_worked_out() {
        let h = BlobHash::parse("anatomy-test-blob");
        let first = of(&h, NESTED);
        assert!(Arc::ptr_eq(&first, &cached(&h).expect("kept")));
        assert!(len() >= 1);
    }
}
