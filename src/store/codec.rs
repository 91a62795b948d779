//! Compact binary values for the index's per-message tables.
//!
//! A million-message mailbox has a million `msgs` entries: as JSON they took
//! ≈ 400 bytes each before the database's own overhead. Here an entry is a
//! version byte, then fields in a fixed order: the blob hash as 32 raw bytes,
//! integers as LEB128 varints, times as seconds and nanoseconds, optional
//! fields behind a presence bit. The PEC metadata stays JSON (it is the
//! journal's own text, kept byte for byte, and most messages' is small).
//!
//! Values are derived and rebuilt from the journal, so a change of layout
//! bumps `index::FORMAT` (the index is rebuilt at open) rather than keeping
//! old layouts readable.

use chrono::{DateTime, Utc};

use super::index::{MessageMeta, ProviderEntry};
use crate::pec::meta::StoredPec;

const V1: u8 = 1;

// Presence bits of a message entry.
const PEC: u8 = 1;
const TRASH: u8 = 2;
const APPENDED: u8 = 4;
const ALL: u8 = 8;
const LABEL: u8 = 16;

/// Why a stored value could not be read.
#[derive(Debug, thiserror::Error)]
#[error("corrupt index value: {0}")]
pub struct Corrupt(pub String);

pub(crate) fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn time(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    let s = t.timestamp();
    // Zigzag: dates before 1970 stay small too.
    varint(out, ((s << 1) ^ (s >> 63)) as u64);
    varint(out, u64::from(t.timestamp_subsec_nanos()));
}

/// A hasher for keys that are uniform already: the first 64 bits of a
/// SHA-256 (a blob's name) need no hashing again. Sets and maps of a
/// million such keys (SEARCH's full-text answers, its message lookup)
/// build several times faster than with SipHash.
#[derive(Default, Clone, Copy)]
pub struct PrefixHasher(u64);

impl std::hash::Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A set of blob-hash prefixes ([`PrefixHasher`]).
pub type PrefixSet = std::collections::HashSet<u64, std::hash::BuildHasherDefault<PrefixHasher>>;

/// A blob's name held compactly: the 32 bytes of the SHA-256 every blob is
/// named by (in lower-case hex), or the text of any other name as written.
/// What a selected folder keeps per message instead of the 64-character
/// hex string (a million messages: 32 MB instead of 88 MB).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BlobHash {
    Sha256([u8; 32]),
    Other(Box<str>),
}

impl BlobHash {
    pub fn parse(h: &str) -> BlobHash {
        let mut raw = [0u8; 32];
        if h.len() == 64 && hex::decode_to_slice(h, &mut raw).is_ok() && h.bytes().all(|c| !c.is_ascii_uppercase()) {
            BlobHash::Sha256(raw)
        } else {
            BlobHash::Other(h.into())
        }
    }

    /// The name as the store's API takes it.
    pub fn hex(&self) -> String {
        match self {
            BlobHash::Sha256(raw) => {
                // Into a buffer, then one String: `hex::encode`'s char
                // iterator was 18 % of a large SELECT.
                let mut buf = [0u8; 64];
                let _ = hex::encode_to_slice(raw, &mut buf);
                std::str::from_utf8(&buf).unwrap_or_default().to_owned()
            }
            BlobHash::Other(s) => s.to_string(),
        }
    }
}

impl std::fmt::Display for BlobHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

/// A blob hash: 32 bytes for the SHA-256 hex every blob is named by, the
/// text as written (length + 0x80 marker) for anything else.
pub fn hash_bytes(out: &mut Vec<u8>, h: &str) {
    match BlobHash::parse(h) {
        BlobHash::Sha256(raw) => {
            out.push(32);
            out.extend_from_slice(&raw);
        }
        BlobHash::Other(_) => {
            out.push(0x80);
            bytes(out, h.as_bytes());
        }
    }
}

#[derive(Debug, Clone)]
struct Reader<'a> {
    b: &'a [u8],
}

/// A varint at the start of `b`: its value and its length in bytes.
pub(crate) fn read_varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut r = Reader { b };
    let v = r.varint().ok()?;
    Some((v, b.len() - r.b.len()))
}

impl<'a> Reader<'a> {
    fn fail(&self, what: &str) -> Corrupt {
        Corrupt(format!("{what} ({} bytes left)", self.b.len()))
    }

    fn u8(&mut self) -> Result<u8, Corrupt> {
        let (&v, rest) = self.b.split_first().ok_or_else(|| self.fail("truncated"))?;
        self.b = rest;
        Ok(v)
    }

    fn varint(&mut self) -> Result<u64, Corrupt> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.fail("varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Corrupt> {
        if self.b.len() < n {
            return Err(self.fail("truncated"));
        }
        let (a, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(a)
    }

    fn bytes(&mut self) -> Result<&'a [u8], Corrupt> {
        let n = usize::try_from(self.varint()?).map_err(|_| self.fail("length"))?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, Corrupt> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| self.fail("not UTF-8"))
    }

    fn u32(&mut self) -> Result<u32, Corrupt> {
        u32::try_from(self.varint()?).map_err(|_| self.fail("u32 out of range"))
    }

    fn time(&mut self) -> Result<DateTime<Utc>, Corrupt> {
        let z = self.varint()?;
        let s = ((z >> 1) as i64) ^ -((z & 1) as i64);
        let n = u32::try_from(self.varint()?).map_err(|_| self.fail("nanoseconds"))?;
        DateTime::from_timestamp(s, n).ok_or_else(|| self.fail("time out of range"))
    }

    fn hash(&mut self) -> Result<String, Corrupt> {
        Ok(self.blob_hash()?.hex())
    }

    fn blob_hash(&mut self) -> Result<BlobHash, Corrupt> {
        match self.u8()? {
            32 => {
                let mut raw = [0u8; 32];
                raw.copy_from_slice(self.take(32)?);
                Ok(BlobHash::Sha256(raw))
            }
            0x80 => Ok(BlobHash::Other(self.string()?.into())),
            _ => Err(self.fail("hash marker")),
        }
    }

    fn str(&mut self) -> Result<&'a str, Corrupt> {
        let b = self.bytes()?;
        std::str::from_utf8(b).map_err(|_| self.fail("not UTF-8"))
    }

    /// The fields a message entry starts with, up to its flags' count.
    fn head(&mut self) -> Result<Head, Corrupt> {
        if self.u8()? != V1 {
            return Err(Corrupt("unknown message entry version".into()));
        }
        Ok(Head {
            bits: self.u8()?,
            hash: self.blob_hash()?,
            size: self.varint()?,
            internal_date: self.time()?,
            archived: self.time()?,
            modseq: self.varint()?,
            flags: self.varint()?,
        })
    }

    fn end(&self) -> Result<(), Corrupt> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(self.fail("trailing bytes"))
        }
    }
}

/// What every message entry starts with, in this order ([`encode_meta`]).
struct Head {
    bits: u8,
    hash: BlobHash,
    size: u64,
    internal_date: DateTime<Utc>,
    archived: DateTime<Utc>,
    modseq: u64,
    /// How many flags follow.
    flags: u64,
}

pub fn encode_meta(m: &MessageMeta) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(V1);
    let mut bits = 0;
    if m.pec.is_some() {
        bits |= PEC;
    }
    if m.trash_uid.is_some() {
        bits |= TRASH;
    }
    if m.appended {
        bits |= APPENDED;
    }
    if m.all_uid.is_some() {
        bits |= ALL;
    }
    if m.label {
        bits |= LABEL;
    }
    out.push(bits);
    hash_bytes(&mut out, &m.hash);
    varint(&mut out, m.size);
    time(&mut out, &m.internal_date);
    time(&mut out, &m.archived);
    varint(&mut out, m.modseq);
    varint(&mut out, m.flags.len() as u64);
    for f in &m.flags {
        bytes(&mut out, f.as_bytes());
    }
    if let Some(t) = m.trash_uid {
        varint(&mut out, t.into());
    }
    if let Some(a) = m.all_uid {
        varint(&mut out, a.into());
    }
    if let Some(p) = &m.pec {
        let j = serde_json::to_vec(p).unwrap_or_else(|e| unreachable!("PEC metadata serialises: {e}"));
        bytes(&mut out, &j);
    }
    out
}

pub fn decode_meta(b: &[u8]) -> Result<MessageMeta, Corrupt> {
    decode_meta_with(b, true)
}

/// [`decode_meta`], leaving out the PEC metadata (skipped, not parsed)
/// unless `pec`.
pub fn decode_meta_with(b: &[u8], pec: bool) -> Result<MessageMeta, Corrupt> {
    let mut r = Reader { b };
    let Head { bits, hash, size, internal_date, archived, modseq, flags: n } = r.head()?;
    let mut flags = Vec::with_capacity(n.min(64) as usize);
    for _ in 0..n {
        flags.push(r.string()?);
    }
    let trash_uid = if bits & TRASH != 0 { Some(r.u32()?) } else { None };
    let all_uid = if bits & ALL != 0 { Some(r.u32()?) } else { None };
    let pec = match (bits & PEC != 0, pec) {
        (true, true) => {
            let j = r.bytes()?;
            Some(serde_json::from_slice::<StoredPec>(j).map_err(|e| Corrupt(format!("PEC metadata: {e}")))?)
        }
        (true, false) => {
            r.bytes()?;
            None
        }
        (false, _) => None,
    };
    r.end()?;
    Ok(MessageMeta {
        hash: hash.hex(),
        size,
        internal_date,
        flags,
        modseq,
        archived,
        pec,
        source_uid: None,
        trash_uid,
        appended: bits & APPENDED != 0,
        all_uid,
        label: bits & LABEL != 0,
    })
}

/// A hash as [`hash_bytes`] wrote it (the end of a key), the whole of `b`.
pub fn decode_hash(b: &[u8]) -> Result<BlobHash, Corrupt> {
    let mut r = Reader { b };
    let h = r.blob_hash()?;
    r.end()?;
    Ok(h)
}

/// A message entry as a folder's listing needs it (what a selected folder
/// keeps), read in place: no allocation but an unusual hash's text.
#[derive(Debug, Clone)]
pub struct Brief<'a> {
    pub hash: BlobHash,
    pub size: u64,
    pub internal_date: DateTime<Utc>,
    pub modseq: u64,
    pub flags: Flags<'a>,
    pub appended: bool,
}

/// A stored entry's flags, borrowed from it (checked when the entry was
/// read, so iterating cannot fail).
#[derive(Debug, Clone)]
pub struct Flags<'a> {
    r: Reader<'a>,
    left: u64,
}

impl<'a> Flags<'a> {
    pub fn is_empty(&self) -> bool {
        self.left == 0
    }
}

impl<'a> Iterator for Flags<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        self.r.str().ok()
    }
}

/// [`decode_meta`] for a listing: the fields of [`Brief`], the rest
/// checked and skipped.
pub fn decode_brief(b: &[u8]) -> Result<Brief<'_>, Corrupt> {
    let mut r = Reader { b };
    let Head { bits, hash, size, internal_date, modseq, flags: n, .. } = r.head()?;
    let flags = Flags { r: Reader { b: r.b }, left: n };
    for _ in 0..n {
        r.str()?;
    }
    if bits & TRASH != 0 {
        r.u32()?;
    }
    if bits & ALL != 0 {
        r.u32()?;
    }
    if bits & PEC != 0 {
        r.bytes()?;
    }
    r.end()?;
    Ok(Brief { hash, size, internal_date, modseq, flags, appended: bits & APPENDED != 0 })
}

pub fn encode_provider(p: &ProviderEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    out.push(V1);
    hash_bytes(&mut out, &p.hash);
    varint(&mut out, p.size);
    time(&mut out, &p.internal_date);
    out
}

pub fn decode_provider(b: &[u8]) -> Result<ProviderEntry, Corrupt> {
    let mut r = Reader { b };
    if r.u8()? != V1 {
        return Err(Corrupt("unknown provider entry version".into()));
    }
    let hash = r.hash()?;
    let size = r.varint()?;
    let internal_date = r.time()?;
    r.end()?;
    Ok(ProviderEntry { hash, size, internal_date })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pec::meta::PecMeta;

    fn meta() -> MessageMeta {
        MessageMeta {
            hash: "ab".repeat(32),
            size: 123_456,
            internal_date: DateTime::from_timestamp(1_700_000_000, 250_000_000).unwrap(),
            flags: vec!["\\Flagged".into(), "$Label1".into()],
            modseq: 99,
            archived: DateTime::from_timestamp(-5, 7).unwrap(),
            pec: None,
            source_uid: None,
            trash_uid: Some(4),
            appended: true,
            all_uid: Some(1_000_000),
            label: false,
        }
    }

    #[test]
    fn message_entries_round_trip() {
        let mut m = meta();
        assert_eq!(decode_meta(&encode_meta(&m)).unwrap(), m);
        m.hash = "not-a-sha256".into();
        m.trash_uid = None;
        m.label = true;
        m.pec = Some(StoredPec::Unrecognised(serde_json::json!({"kind": "from the future"})));
        assert_eq!(decode_meta(&encode_meta(&m)).unwrap(), m);
        let brief = decode_meta_with(&encode_meta(&m), false).unwrap();
        assert_eq!(brief.pec, None);
        assert_eq!(MessageMeta { pec: m.pec.clone(), ..brief }, m);
        // Upper-case hex is kept as written, not folded.
        m.hash = "AB".repeat(32);
        assert_eq!(decode_meta(&encode_meta(&m)).unwrap().hash, m.hash);
        let _: Option<&PecMeta> = m.pec_meta();
    }

    #[test]
    fn a_brief_reads_the_listing_fields_of_any_entry() {
        let mut m = meta();
        let check = |m: &MessageMeta| {
            let e = encode_meta(m);
            let b = decode_brief(&e).unwrap();
            assert_eq!(b.hash.hex(), m.hash);
            assert_eq!(b.hash, BlobHash::parse(&m.hash));
            assert_eq!(
                (b.size, b.internal_date, b.modseq, b.appended),
                (m.size, m.internal_date, m.modseq, m.appended)
            );
            assert_eq!(b.flags.is_empty(), m.flags.is_empty());
            assert_eq!(b.flags.collect::<Vec<_>>(), m.flags.iter().map(String::as_str).collect::<Vec<_>>());
            for n in 0..e.len() {
                assert!(decode_brief(&e[..n]).is_err(), "truncated at {n}");
            }
        };
        check(&m);
        assert!(matches!(BlobHash::parse(&m.hash), BlobHash::Sha256(_)));
        m.hash = "AB".repeat(32);
        m.flags.clear();
        m.appended = false;
        m.pec = Some(StoredPec::Unrecognised(serde_json::json!({"kind": "x"})));
        check(&m);
        assert!(matches!(BlobHash::parse(&m.hash), BlobHash::Other(_)), "upper-case hex is not a blob name");
        m.hash = "h1".into();
        check(&m);
    }

    #[test]
    fn a_small_message_entry_is_small() {
        let mut m = meta();
        m.flags.clear();
        m.trash_uid = None;
        assert!(encode_meta(&m).len() < 60, "{}", encode_meta(&m).len());
    }

    #[test]
    fn damaged_entries_are_errors_not_panics() {
        let full = encode_meta(&meta());
        for n in 0..full.len() {
            assert!(decode_meta(&full[..n]).is_err(), "truncated at {n}");
        }
        let mut long = full.clone();
        long.push(0);
        assert!(decode_meta(&long).is_err());
        assert!(decode_meta(&[V1, 0, 32]).is_err());
        assert!(decode_meta(&[9; 40]).is_err());
        let p = ProviderEntry { hash: "cd".repeat(32), size: 5, internal_date: Utc::now() };
        assert_eq!(decode_provider(&encode_provider(&p)).unwrap(), p);
        assert!(decode_provider(&encode_provider(&p)[..10]).is_err());
    }
}
