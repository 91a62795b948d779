//! Header fields of a message, derived from its blob and cached in the
//! index for SEARCH, SORT and THREAD.

use chrono::Datelike;

/// The header fields the common SEARCH keys match, derived once per
/// message and cached in the index (`Store::search_fields`; filled as
/// each blob is written), so FROM or SUBJECT on a large folder reads the
/// index, not every message. Each field is what a search string is matched
/// against: the raw value (encoded words and all), its decoded text, and
/// its addresses' names and addresses; `None` when the header is absent.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "Stored<Part, Id, Hay<String>>", into = "Stored<Part, Id, Hay<String>>")]
pub struct SearchFields {
    pub from: Option<String>,
    pub to: Option<String>,
    pub cc: Option<String>,
    pub bcc: Option<String>,
    pub subject: Option<String>,
    /// The Date header's calendar date as written, in the sender's own
    /// time zone: what SENTON/SENTBEFORE/SENTSINCE compare (RFC 3501
    /// §6.4.4 disregards time and time zone; `Date: Sun, 25 Mar 2007
    /// 00:30:00 +0200` is sent on 25 March, though it is 24 March in UTC).
    pub sent: Option<chrono::NaiveDate>,
    /// The Date header as an instant: RFC 5256 §2.2's sent date, which
    /// SORT (DATE) and THREAD compare with the time zone taken into
    /// account. `None` when missing or not a valid date (SORT then uses
    /// the internal date).
    pub date: Option<chrono::DateTime<chrono::Utc>>,
    /// The Subject with encoded words decoded: SORT (SUBJECT) and THREAD
    /// take its base subject (RFC 5256 §2.1, `imap::sort`).
    pub subject_text: Option<String>,
    /// The mailbox (local part) of the first address of From, To and Cc,
    /// as ENVELOPE shows it (a group's first address is its name): what
    /// SORT (FROM), (TO) and (CC) compare (RFC 5256 §3, `addr-mailbox`).
    pub from_mailbox: Option<String>,
    pub to_mailbox: Option<String>,
    pub cc_mailbox: Option<String>,
    /// Message-ID, In-Reply-To and References as written (unfolded), for
    /// THREAD=REFERENCES (`imap::thread` reads the message IDs in them).
    /// References keeps only its last [`MAX_REFERENCES`] bytes.
    pub message_id: Option<String>,
    pub in_reply_to: Option<String>,
    pub references: Option<String>,
}

/// The first fields of a cached value, borrowed, in [`Stored`]'s order
/// (postcard reads them and leaves the rest).
#[derive(serde::Deserialize)]
struct MatchStored<'a> {
    #[serde(borrow)]
    from: Hay<&'a str>,
    #[serde(borrow)]
    to: Hay<&'a str>,
    #[serde(borrow)]
    cc: Hay<&'a str>,
    bcc: Option<&'a str>,
    subject: Option<&'a str>,
    sent: Option<i32>,
}

/// The fields SEARCH matches, borrowed from a cached [`SearchFields`]
/// (and the index's common values), with no string copied.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MatchFields<'a> {
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub cc: Option<&'a str>,
    pub bcc: Option<&'a str>,
    pub subject: Option<&'a str>,
    /// The sent date as days from the common era (see [`Stored::sent`]).
    sent_days: Option<i32>,
}

impl<'a> MatchFields<'a> {
    /// The Date header's calendar date (see [`SearchFields::sent`]).
    pub fn sent(&self) -> Option<chrono::NaiveDate> {
        self.sent_days.and_then(chrono::NaiveDate::from_num_days_from_ce_opt)
    }

    /// From a cached value (postcard), its common values read from
    /// `common`; `None` if it is not one or names a value not there.
    pub fn decode(v: &'a [u8], common: &'a [Option<std::sync::Arc<str>>]) -> Option<MatchFields<'a>> {
        let m: MatchStored<'a> = postcard::from_bytes(v).ok()?;
        let hay = |h: Hay<&'a str>| -> Option<Option<&'a str>> {
            match h {
                Hay::Absent => Some(None),
                Hay::Own(s) => Some(Some(s)),
                Hay::Common(n) => Some(Some(common.get(n as usize)?.as_deref()?)),
            }
        };
        Some(MatchFields {
            from: hay(m.from)?,
            to: hay(m.to)?,
            cc: hay(m.cc)?,
            bcc: m.bcc,
            subject: m.subject,
            sent_days: m.sent,
        })
    }

    /// The value of cached header `name`: `None` if it is not a cached
    /// field, `Some(None)` if the message has no such header.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        Some(if is("subject") {
            self.subject
        } else if is("from") {
            self.from
        } else if is("to") {
            self.to
        } else if is("cc") {
            self.cc
        } else if is("bcc") {
            self.bcc
        } else {
            return None;
        })
    }
}

/// The cache key of [`SearchFields`]; change it when [`SearchFields::of`]
/// changes (entries under an older key are never read again: each message
/// is derived anew, once, at its first SEARCH, SORT or THREAD).
/// 3: the sort and thread fields. 4: postcard instead of JSON. 5 (named
/// `f5`, short: the kind starts every key): dates as numbers, the decoded
/// Subject only where it differs ([`Stored`]). 6: the first mailboxes as
/// places in their fields ([`Part`]), the IDs' domain as a place in From
/// ([`Id`]), From, To and Cc as the index's common values ([`Hay`]).
pub const FIELDS_KIND: &str = "f6";

/// How much of a References header is kept (its end: the nearest
/// ancestors come last). HYPOTHESIS: 8 KiB is a hundred or more message
/// IDs, more than any real conversation's; RFC 5256 expects truncated
/// References, and a hostile header does not grow every index entry.
pub const MAX_REFERENCES: usize = 8 * 1024;

const FIELD_NAMES: [&str; 5] = ["From", "To", "Cc", "Bcc", "Subject"];

impl SearchFields {
    /// Is `name` one of the cached header fields?
    pub fn cached(name: &str) -> bool {
        FIELD_NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    /// The fields of a message (only its header is parsed).
    pub fn of(raw: &[u8]) -> SearchFields {
        let head = &raw[..header_end(raw)];
        let Some(m) = mail_parser::MessageParser::default().parse(head) else {
            return SearchFields::default();
        };
        let field = |name: &str| haystack(head, &m, name);
        SearchFields {
            from: field("From"),
            to: field("To"),
            cc: field("Cc"),
            bcc: field("Bcc"),
            subject: field("Subject"),
            sent: m.date().and_then(|d| chrono::NaiveDate::from_ymd_opt(d.year.into(), d.month.into(), d.day.into())),
            date: m.date().filter(|d| d.is_valid()).and_then(|d| chrono::DateTime::from_timestamp(d.to_timestamp(), 0)),
            subject_text: m.subject().map(str::to_string),
            from_mailbox: first_mailbox(m.from()),
            to_mailbox: first_mailbox(m.to()),
            cc_mailbox: first_mailbox(m.cc()),
            message_id: raw_value(head, &m, "Message-ID"),
            in_reply_to: raw_value(head, &m, "In-Reply-To"),
            references: raw_value(head, &m, "References").map(|r| tail(r, MAX_REFERENCES)),
        }
    }

    /// What a search string is matched against for any header `name` of
    /// the message `raw` (HEADER with a field that is not cached); `None`
    /// when the message has no such header.
    pub fn header_of(raw: &[u8], name: &str) -> Option<String> {
        let head = &raw[..header_end(raw)];
        let m = mail_parser::MessageParser::default().parse(head)?;
        haystack(head, &m, name)
    }

    /// The cached value of header `name`: `None` if it is not a cached
    /// field, `Some(None)` if the message has no such header.
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.matching().get(name)
    }

    /// What SEARCH matches, borrowed.
    pub fn matching(&self) -> MatchFields<'_> {
        MatchFields {
            from: self.from.as_deref(),
            to: self.to.as_deref(),
            cc: self.cc.as_deref(),
            bcc: self.bcc.as_deref(),
            subject: self.subject.as_deref(),
            sent_days: self.sent.map(|d| d.num_days_from_ce()),
        }
    }
}

/// [`SearchFields`] as the cache keeps it (postcard), a million times
/// over: what SEARCH matches first, in [`MatchFields`]' order; dates as
/// numbers (chrono's text forms were 32 bytes a message); the decoded
/// Subject left out where it is the raw one, as it is for most subjects
/// (60 bytes a message); since 6, the first mailboxes as where they are in
/// their field's value ([`Part`]: 25 bytes a message) and Message-ID and
/// In-Reply-To with their domain as a place in From ([`Id`]: 25 more).
/// `M` and `I` are how the mailboxes and the IDs are kept: [`Part`] and
/// [`Id`] today, `Option<String>` in 5; `H` how From, To and Cc are:
/// [`Hay`] today (the index's common values by number, see [`Common`]),
/// `Option<String>` in 5.
/// BENCHMARKS.md "Ten-year scale".
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored<M, I, H> {
    from: H,
    to: H,
    cc: H,
    bcc: Option<String>,
    subject: Option<String>,
    /// [`SearchFields::sent`] as days from the common era.
    sent: Option<i32>,
    /// [`SearchFields::date`] as seconds from the epoch.
    date: Option<i64>,
    subject_text: Text,
    from_mailbox: M,
    to_mailbox: M,
    cc_mailbox: M,
    message_id: I,
    in_reply_to: I,
    references: Option<String>,
}

/// [`SearchFields`] as kind `search-fields-4` cached it (postcard, which
/// is positional: its fields in order, chrono's dates as text), read once
/// to convert a cache written before 5.
pub(crate) type StoredV4 = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<chrono::NaiveDate>,
    Option<chrono::DateTime<chrono::Utc>>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// A value cached under an older `kind`, in today's form ([`FIELDS_KIND`]),
/// or `None` where there is no conversion (it is derived again when
/// needed).
pub fn convert_cached(kind: &[u8], v: &[u8]) -> Option<Vec<u8>> {
    let f = match kind {
        b"f5" => {
            postcard::from_bytes::<Stored<Option<String>, Option<String>, Option<String>>>(v).ok()?.into_fields(Some)?
        }
        b"search-fields-4" => {
            // Positional, as postcard wrote it.
            let t: StoredV4 = postcard::from_bytes(v).ok()?;
            SearchFields {
                from: t.0,
                to: t.1,
                cc: t.2,
                bcc: t.3,
                subject: t.4,
                sent: t.5,
                date: t.6,
                subject_text: t.7,
                from_mailbox: t.8,
                to_mailbox: t.9,
                cc_mailbox: t.10,
                message_id: t.11,
                in_reply_to: t.12,
                references: t.13,
            }
        }
        _ => return None,
    };
    postcard::to_allocvec(&f).ok()
}

/// A value of today's kind (its common values in `common`) in format 5's
/// form, as a cache written before 6 held it: mailboxes and IDs written
/// out, no common values. For the scale bench's upgrade measurement
/// (`SCALE_CONVERT`) and the conversion's test.
#[doc(hidden)]
pub fn as_format_5(v: &[u8], common: &[Option<std::sync::Arc<str>>]) -> Option<Vec<u8>> {
    let f: SearchFields = postcard::from_bytes(&expand(v, common)?).ok()?;
    let text = Stored::<Part, Id, Hay<String>>::from(f.clone()).subject_text;
    let v5 = Stored::<Option<String>, Option<String>, Option<String>> {
        from: f.from,
        to: f.to,
        cc: f.cc,
        bcc: f.bcc,
        subject: f.subject,
        sent: f.sent.map(|d| d.num_days_from_ce()),
        date: f.date.map(|d| d.timestamp()),
        subject_text: text,
        from_mailbox: f.from_mailbox,
        to_mailbox: f.to_mailbox,
        cc_mailbox: f.cc_mailbox,
        message_id: f.message_id,
        in_reply_to: f.in_reply_to,
        references: f.references,
    };
    postcard::to_allocvec(&v5).ok()
}

/// The decoded Subject, kept only when it is not the raw value.
#[derive(serde::Serialize, serde::Deserialize)]
enum Text {
    Absent,
    /// The first line of the cached `subject` (its raw form).
    Raw,
    Own(String),
}

/// A first mailbox (`SearchFields::from_mailbox` and the others), kept
/// where it can be as its place in its field's cached value: the local
/// part of an address is written there (`mario.rossi` in `Mario Rossi
/// <mario.rossi@example.it>`), so three small numbers stand for it.
#[derive(serde::Serialize, serde::Deserialize)]
enum Part {
    Absent,
    /// Bytes `start..start + len` of the field's value.
    In(u32, u32),
    Own(String),
}

impl Part {
    fn of(field: Option<&str>, mailbox: Option<String>) -> Part {
        let Some(m) = mailbox else {
            return Part::Absent;
        };
        match field.and_then(|f| f.find(m.as_str())) {
            Some(at) => Part::In(at as u32, m.len() as u32),
            None => Part::Own(m),
        }
    }

    /// The mailbox again; a place outside the value (a damaged entry)
    /// gives none.
    fn get(field: Option<&str>, p: Part) -> Option<String> {
        match p {
            Part::Absent => None,
            Part::Own(m) => Some(m),
            Part::In(at, len) => {
                let (at, len) = (at as usize, len as usize);
                field.and_then(|f| f.get(at..at.checked_add(len)?)).map(str::to_string)
            }
        }
    }
}

/// A Message-ID or In-Reply-To as the cache keeps it: most name their
/// sender's domain, which From holds (`<opec.123@pec.example.it>` from
/// `posta-certificata@pec.example.it`), so the domain is kept as its place
/// in From: what comes before it, the place, what comes after.
#[derive(serde::Serialize, serde::Deserialize)]
enum Id {
    Absent,
    Own(String),
    Around(String, u32, u32, String),
}

/// Shorter than this, a domain is written out rather than pointed at.
const ID_DOMAIN_MIN: usize = 4;

impl Id {
    fn of(from: Option<&str>, id: Option<String>) -> Id {
        let Some(id) = id else {
            return Id::Absent;
        };
        // The domain: after the last `@`, up to the `>` that closes it.
        let place = id.rfind('@').and_then(|at| {
            let end = id[at..].find('>').map_or(id.len(), |e| at + e);
            let domain = &id[at..end];
            if domain.len() < ID_DOMAIN_MIN {
                return None;
            }
            Some((at, end, from?.find(domain)?))
        });
        match place {
            Some((at, end, start)) => {
                Id::Around(id[..at].to_string(), start as u32, (end - at) as u32, id[end..].to_string())
            }
            None => Id::Own(id),
        }
    }

    /// The ID again; a place outside From (a damaged entry) gives none.
    fn get(from: Option<&str>, i: Id) -> Option<String> {
        match i {
            Id::Absent => None,
            Id::Own(id) => Some(id),
            Id::Around(head, at, len, tail) => {
                let domain = Part::get(from, Part::In(at, len))?;
                Some(head + &domain + &tail)
            }
        }
    }
}

/// From, To or Cc as the cache keeps it: written out, or one of the
/// index's common values by number ([`Common`]: the mailbox's own address
/// in the To of every message it receives, a provider's
/// `posta-certificata@` in the From of every receipt).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum Hay<S> {
    Absent,
    Own(S),
    Common(u32),
}

impl From<Option<String>> for Hay<String> {
    fn from(v: Option<String>) -> Hay<String> {
        v.map_or(Hay::Absent, Hay::Own)
    }
}

/// The common values by number, as readers see them: a number without a
/// value (damage) reads as no value, and the entry is derived again.
pub type CommonValues = std::sync::Arc<Vec<Option<std::sync::Arc<str>>>>;

/// The index's common values of From, To and Cc: a value seen
/// [`COMMON_AFTER`] times becomes one, up to [`COMMON_MAX`]; a cached
/// entry then holds its number (two bytes) instead of the value. Numbers
/// are never reused or changed (the index writes a value's number before
/// any entry that holds it), so an entry reads the same for as long as the
/// cache lives. No I/O here: the index persists what [`Common::number`]
/// adds.
pub struct Common {
    values: CommonValues,
    numbers: std::collections::HashMap<std::sync::Arc<str>, u32>,
    /// How often each value not common yet was seen lately, by a hash of
    /// it; forgotten past [`CANDIDATES_MAX`].
    seen: std::collections::HashMap<u64, u32>,
}

/// Seen this many times, a value becomes common.
pub const COMMON_AFTER: u32 = 8;
/// At most this many common values: 16,384 take ≈ 2 MB of memory, and
/// a reader's copy of the list is one reference count each.
pub const COMMON_MAX: usize = 16_384;
/// Values shorter than this stay written out (a number takes two bytes).
const COMMON_MIN_LEN: usize = 8;
/// How many values not common yet are counted at once.
const CANDIDATES_MAX: usize = 200_000;

impl Common {
    /// From the values the index holds, by number.
    pub fn new(values: Vec<Option<String>>) -> Common {
        let values: Vec<Option<std::sync::Arc<str>>> = values.into_iter().map(|v| v.map(Into::into)).collect();
        let numbers = values.iter().enumerate().filter_map(|(n, v)| Some((v.clone()?, n as u32))).collect();
        Common { values: std::sync::Arc::new(values), numbers, seen: std::collections::HashMap::new() }
    }

    /// The values by number, for readers.
    pub fn values(&self) -> CommonValues {
        self.values.clone()
    }

    /// `v`'s number if it is common, made common if this sighting makes
    /// it so: then also (number, value) to write before any entry that
    /// holds the number.
    pub fn number(&mut self, v: &str) -> (Option<u32>, Option<(u32, String)>) {
        if let Some(n) = self.numbers.get(v) {
            return (Some(*n), None);
        }
        if v.len() < COMMON_MIN_LEN || self.values.len() >= COMMON_MAX {
            return (None, None);
        }
        let h = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            v.hash(&mut h);
            h.finish()
        };
        if self.seen.len() >= CANDIDATES_MAX && !self.seen.contains_key(&h) {
            self.seen.clear();
        }
        let count = self.seen.entry(h).or_insert(0);
        *count += 1;
        if *count < COMMON_AFTER {
            return (None, None);
        }
        self.seen.remove(&h);
        let n = self.values.len() as u32;
        let a: std::sync::Arc<str> = v.into();
        std::sync::Arc::make_mut(&mut self.values).push(Some(a.clone()));
        self.numbers.insert(a, n);
        (Some(n), Some((n, v.to_string())))
    }
}

/// A cached value (today's kind) with From, To and Cc that are common
/// values held by number; `add` gives a value's number, if it has one.
/// `None`: not a value of this kind.
pub fn share(v: &[u8], mut add: impl FnMut(&str) -> Option<u32>) -> Option<Vec<u8>> {
    let mut s: Stored<Part, Id, Hay<String>> = postcard::from_bytes(v).ok()?;
    for h in [&mut s.from, &mut s.to, &mut s.cc] {
        if let Hay::Own(v) = h {
            if let Some(n) = add(v) {
                *h = Hay::Common(n);
            }
        }
    }
    postcard::to_allocvec(&s).ok()
}

/// A cached value with its common values written out again, as
/// `SearchFields` reads it; `None` if one is not known (or the value does
/// not start as this kind's do). From, To and Cc come first ([`Stored`]),
/// so the rest is copied as it is: SORT looks up a million values one by
/// one, and decoding each whole to write it again doubled its work.
pub fn expand(v: &[u8], common: &[Option<std::sync::Arc<str>>]) -> Option<Vec<u8>> {
    // postcard's integers, lengths and enum tags are the index's varints.
    use super::codec::{bytes, read_varint as varint};
    let mut out = Vec::with_capacity(v.len() + 64);
    let mut at = 0;
    for _ in 0..3 {
        let (tag, n) = varint(&v[at..])?;
        at += n;
        match tag {
            // Hay::Absent
            0 => out.push(0),
            // Hay::Own: its length and bytes, as they are.
            1 => {
                let (len, n) = varint(&v[at..])?;
                let end = at.checked_add(n)?.checked_add(usize::try_from(len).ok()?)?;
                out.push(1);
                out.extend_from_slice(v.get(at..end)?);
                at = end;
            }
            // Hay::Common: written out as Hay::Own.
            2 => {
                let (k, n) = varint(&v[at..])?;
                at += n;
                let text = common.get(usize::try_from(k).ok()?)?.as_deref()?;
                out.push(1);
                bytes(&mut out, text.as_bytes());
            }
            _ => return None,
        }
    }
    out.extend_from_slice(&v[at..]);
    Some(out)
}

/// The raw form a header's cached value starts with (see [`haystack`]).
fn first_form(hay: Option<&str>) -> Option<&str> {
    hay.and_then(|h| h.split('\n').next())
}

impl From<SearchFields> for Stored<Part, Id, Hay<String>> {
    fn from(f: SearchFields) -> Stored<Part, Id, Hay<String>> {
        let subject_text = match f.subject_text {
            None => Text::Absent,
            Some(t) if first_form(f.subject.as_deref()) == Some(t.as_str()) => Text::Raw,
            Some(t) => Text::Own(t),
        };
        Stored {
            from_mailbox: Part::of(f.from.as_deref(), f.from_mailbox),
            to_mailbox: Part::of(f.to.as_deref(), f.to_mailbox),
            cc_mailbox: Part::of(f.cc.as_deref(), f.cc_mailbox),
            message_id: Id::of(f.from.as_deref(), f.message_id),
            in_reply_to: Id::of(f.from.as_deref(), f.in_reply_to),
            from: Hay::from(f.from),
            to: Hay::from(f.to),
            cc: Hay::from(f.cc),
            bcc: f.bcc,
            subject: f.subject,
            sent: f.sent.map(|d| d.num_days_from_ce()),
            date: f.date.map(|d| d.timestamp()),
            subject_text,
            references: f.references,
        }
    }
}

impl TryFrom<Stored<Part, Id, Hay<String>>> for SearchFields {
    type Error = &'static str;

    /// A value with common values in it is read through [`expand`] first.
    fn try_from(s: Stored<Part, Id, Hay<String>>) -> Result<SearchFields, &'static str> {
        s.into_fields(|h| match h {
            Hay::Absent => Some(None),
            Hay::Own(v) => Some(Some(v)),
            Hay::Common(_) => None,
        })
        .ok_or("a common value not expanded")
    }
}

/// How [`Stored`] keeps its parts, read back (given From for the parts
/// that are places in it).
trait Keep {
    fn back(self, field: Option<&str>) -> Option<String>;
}

impl Keep for Part {
    fn back(self, field: Option<&str>) -> Option<String> {
        Part::get(field, self)
    }
}

impl Keep for Id {
    fn back(self, from: Option<&str>) -> Option<String> {
        Id::get(from, self)
    }
}

impl Keep for Option<String> {
    fn back(self, _: Option<&str>) -> Option<String> {
        self
    }
}

impl<M: Keep, I: Keep, H> Stored<M, I, H> {
    /// The fields, From, To and Cc as `hay` reads them (`None`: it
    /// cannot).
    fn into_fields(self, hay: impl Fn(H) -> Option<Option<String>>) -> Option<SearchFields> {
        let (from, to, cc) = (hay(self.from)?, hay(self.to)?, hay(self.cc)?);
        let subject_text = match self.subject_text {
            Text::Absent => None,
            Text::Raw => first_form(self.subject.as_deref()).map(str::to_string),
            Text::Own(t) => Some(t),
        };
        Some(SearchFields {
            from_mailbox: self.from_mailbox.back(from.as_deref()),
            to_mailbox: self.to_mailbox.back(to.as_deref()),
            cc_mailbox: self.cc_mailbox.back(cc.as_deref()),
            message_id: self.message_id.back(from.as_deref()),
            in_reply_to: self.in_reply_to.back(from.as_deref()),
            from,
            to,
            cc,
            bcc: self.bcc,
            subject: self.subject,
            sent: self.sent.and_then(chrono::NaiveDate::from_num_days_from_ce_opt),
            date: self.date.and_then(|t| chrono::DateTime::from_timestamp(t, 0)),
            subject_text,
            references: self.references,
        })
    }
}

/// Every occurrence of header `name` as one string, a line per form: the
/// raw value (encoded words and all), its decoded text, and its addresses'
/// names and addresses — each form only if the string does not hold it
/// already (a plain Subject's decoded text is its raw value, a plain
/// From's name and address are in it): a search string found in a form
/// left out is found in the form that holds it, and a million messages'
/// cache is a third smaller.
fn haystack(head: &[u8], m: &mail_parser::Message<'_>, name: &str) -> Option<String> {
    let mut out: Option<String> = None;
    let add = |hay: &mut String, form: &str| {
        if !hay.contains(form) {
            hay.push_str(form);
            hay.push('\n');
        }
    };
    for h in m.headers().iter().filter(|h| h.name.as_str().eq_ignore_ascii_case(name)) {
        let hay = out.get_or_insert_with(String::new);
        let r = head.get(h.offset_start as usize..h.offset_end as usize).unwrap_or_default();
        add(hay, &String::from_utf8_lossy(r.trim_ascii()));
        if let Some(t) = h.value.as_text() {
            add(hay, t);
        }
        if let Some(a) = h.value.as_address() {
            for x in a.iter() {
                for part in [x.name.as_deref(), x.address.as_deref()].into_iter().flatten() {
                    add(hay, part);
                }
            }
        }
    }
    out
}

/// The first header `name` as written, unfolded and trimmed.
fn raw_value(head: &[u8], m: &mail_parser::Message<'_>, name: &str) -> Option<String> {
    let h = m.headers().iter().find(|h| h.name.as_str().eq_ignore_ascii_case(name))?;
    let r = head.get(h.offset_start as usize..h.offset_end as usize).unwrap_or_default();
    let s = String::from_utf8_lossy(r);
    Some(s.split(['\r', '\n']).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ").trim().to_string())
}

/// The last `max` bytes of `s`, cut at a character boundary.
fn tail(s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut cut = s.len() - max;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    s[cut..].to_string()
}

/// The mailbox (local part) of the first address, as ENVELOPE gives it:
/// a named group's first address is the group's start marker, whose
/// mailbox is the group's name; an address without `@` is all mailbox.
/// `None` for no address at all.
fn first_mailbox(a: Option<&mail_parser::Address<'_>>) -> Option<String> {
    let local = |x: &mail_parser::Addr<'_>| -> Option<String> {
        let full = x.address.as_deref()?;
        // A source route (`@route:user@domain`) is not the mailbox.
        let spec = match full.strip_prefix('@').and_then(|_| full.split_once(':')) {
            Some((_, rest)) => rest,
            None => full,
        };
        Some(spec.rsplit_once('@').map_or(spec, |(l, _)| l).to_string())
    };
    match a? {
        mail_parser::Address::List(list) => list.iter().find_map(local),
        mail_parser::Address::Group(groups) => groups.iter().find_map(|g| match g.name.as_deref() {
            Some(name) => Some(name.to_string()),
            None => g.addresses.iter().find_map(local),
        }),
    }
}

/// Where the header ends (after the blank line), or the whole message.
pub fn header_end(raw: &[u8]) -> usize {
    if let Some(p) = memchr::memmem::find(raw, b"\r\n\r\n") {
        return p + 4;
    }
    if let Some(p) = memchr::memmem::find(raw, b"\n\n") {
        return p + 2;
    }
    raw.len()
}

/// Does `raw` look like a message: a header block that ends (a blank
/// line) within its first 64 KiB? An uploaded PDF or CSV (a campaign's
/// inputs) does not, and parsing 200 KB of it as a header only to cache
/// nothing cost more than storing it.
pub fn looks_like_message(raw: &[u8]) -> bool {
    let head = &raw[..raw.len().min(64 << 10)];
    memchr::memmem::find(head, b"\r\n\r\n").is_some() || memchr::memmem::find(head, b"\n\n").is_some()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A header with encoded words, a folded address list and a Date; a
    /// body that mentions a header.
    pub(crate) const MSG: &[u8] = b"From: =?UTF-8?Q?Ufficio_Tributi_Citt=C3=A0?= <tributi@comune.example.it>\r\n\
To: a@example.it,\r\n b@example.it\r\n\
Subject: =?UTF-8?B?UHJhdGljYSBuLiA0Mg==?=\r\n\
Date: Thu, 26 Nov 2026 10:00:00 +0100\r\n\
\r\n\
body with From: nobody@else.example\r\n";

    /// The cache's form gives back every field, for a plain Subject (kept
    /// once), an encoded one (both forms), none at all; and SEARCH's
    /// borrowed reading of it agrees.
    #[test]
    fn the_cached_form_round_trips_and_keeps_a_plain_subject_once() {
        let plain = b"From: Mario Rossi <mario@example.it>\r\nSubject: Pratica n. 42/2026 - tributi\r\nDate: Sun, 25 Mar 2007 00:30:00 +0200\r\nMessage-ID: <a@b>\r\n\r\nx\r\n";
        let folded = b"Subject: Pratica n. 42\r\n  seconda riga\r\n\r\nx\r\n";
        for raw in [MSG, &plain[..], &folded[..], b"X-Other: 1\r\n\r\nx\r\n", b"garbage"] {
            let f = SearchFields::of(raw);
            let v = postcard::to_allocvec(&f).unwrap();
            let back: SearchFields = postcard::from_bytes(&v).unwrap();
            assert_eq!(back, f, "{}", String::from_utf8_lossy(raw));
            let m = MatchFields::decode(&v, &[]).unwrap();
            assert_eq!((m.from, m.subject, m.sent()), (f.from.as_deref(), f.subject.as_deref(), f.sent));
        }
        let f = SearchFields::of(plain);
        assert_eq!(f.subject_text.as_deref(), Some("Pratica n. 42/2026 - tributi"));
        let v = postcard::to_allocvec(&f).unwrap();
        let once = memchr::memmem::find_iter(&v, b"Pratica n. 42/2026").count();
        assert_eq!(once, 1, "a plain Subject is stored once");
        assert!(v.len() < 110, "{} bytes", v.len());
    }

    /// Format 5's values (mailboxes written out) convert to today's, whose
    /// mailboxes are places in their fields, and give the same fields;
    /// a damaged place gives no mailbox rather than a wrong one.
    #[test]
    fn a_format_5_value_converts_and_mailboxes_are_places_in_their_fields() {
        let raw = b"From: Mario Rossi <mario.rossi12@pec.example.it>\r\nTo: protocollo@pec.comune.example.it\r\n\
Cc: uffici: x@y.it;\r\nSubject: Richiesta n. 7\r\nDate: Sun, 25 Mar 2007 00:30:00 +0200\r\n\
Message-ID: <opec.20070325.1@pec.example.it>\r\nIn-Reply-To: <a@pec.example.it> (nota)\r\n\r\nx\r\n";
        let odd = b"From: a@b.it\r\nMessage-ID: <x@b.it\r\nIn-Reply-To: @pec.example.it\r\n\r\nx";
        for raw in [&raw[..], MSG, b"To: <@route:capo@y.it>\r\n\r\nx", b"garbage", &odd[..]] {
            let f = SearchFields::of(raw);
            let old = as_format_5(&postcard::to_allocvec(&f).unwrap(), &[]).expect("a value");
            let today = convert_cached(b"f5", &old).expect("converts");
            assert_eq!(today, postcard::to_allocvec(&f).unwrap());
            let back: SearchFields = postcard::from_bytes(&today).unwrap();
            assert_eq!(back, f, "{}", String::from_utf8_lossy(raw));
        }
        let f = SearchFields::of(raw);
        let v5 = as_format_5(&postcard::to_allocvec(&f).unwrap(), &[]).unwrap();
        assert_eq!(memchr::memmem::find_iter(&v5, b"mario.rossi12").count(), 2, "5 wrote the mailbox out");
        assert_eq!(memchr::memmem::find_iter(&v5, b"pec.example.it").count(), 3, "and the IDs' domain");
        assert_eq!(
            (f.from_mailbox.as_deref(), f.to_mailbox.as_deref(), f.cc_mailbox.as_deref()),
            (Some("mario.rossi12"), Some("protocollo"), Some("uffici"))
        );
        let v = postcard::to_allocvec(&f).unwrap();
        assert_eq!(memchr::memmem::find_iter(&v, b"mario.rossi12").count(), 1, "the mailbox is not written again");
        assert_eq!(memchr::memmem::find_iter(&v, b"protocollo").count(), 1);
        assert_eq!(memchr::memmem::find_iter(&v, b"pec.example.it").count(), 1, "the IDs' domain is From's");
        assert_eq!(f.in_reply_to.as_deref(), Some("<a@pec.example.it> (nota)"));
        assert_eq!(Id::get(Some("a@b"), Id::Around("<x".into(), 1, 9, ">".into())), None, "past From's end");
        assert_eq!(Part::get(Some("abc"), Part::In(2, 5)), None, "past the end");
        assert_eq!(Part::get(Some("città"), Part::In(4, 1)), None, "inside a character");
        assert_eq!(Part::get(None, Part::In(0, 1)), None);
        assert_eq!(convert_cached(b"f5", &[0xff; 3]), None, "not a value");
        assert_eq!(convert_cached(b"len-9", b"x"), None, "another kind");
    }

    /// A value becomes common at its COMMON_AFTER-th sighting, is numbered
    /// once and for good; short values never are; entries hold its number
    /// and read back whole, and a number not known is no reading at all.
    #[test]
    fn common_values_are_numbered_once_and_read_back() {
        // As the field holds it (see `haystack`).
        let to = "protocollo@pec.comune.example.it\n";
        let mut c = Common::new(vec![Some("posta-certificata@pec.example.it".into()), None]);
        assert_eq!(c.number("posta-certificata@pec.example.it"), (Some(0), None), "loaded");
        for _ in 1..COMMON_AFTER {
            assert_eq!(c.number(to), (None, None));
        }
        assert_eq!(c.number(to), (Some(2), Some((2, to.to_string()))), "numbered after the gap, never in it");
        assert_eq!(c.number(to), (Some(2), None), "added once");
        for _ in 0..2 * COMMON_AFTER {
            assert_eq!(c.number("a@b.it"), (None, None), "too short to be worth a number");
        }
        let raw = format!("From: Anna <anna@example.it>\r\nTo: {to}Cc: {to}Subject: s\r\n\r\nx");
        let f = SearchFields::of(raw.as_bytes());
        let v = postcard::to_allocvec(&f).unwrap();
        let shared = share(&v, |t| c.number(t).0).unwrap();
        assert!(shared.len() + 2 * to.len() <= v.len() + 4, "{} -> {}", v.len(), shared.len());
        assert!(postcard::from_bytes::<SearchFields>(&shared).is_err(), "not read without its common values");
        let values = c.values();
        assert_eq!(expand(&shared, &values), Some(v.clone()));
        let m = MatchFields::decode(&shared, &values).unwrap();
        assert_eq!((m.to, m.cc, m.from), (f.to.as_deref(), f.cc.as_deref(), f.from.as_deref()));
        assert_eq!(expand(&shared, &values[..2]), None, "a number not known");
        assert_eq!(MatchFields::decode(&shared, &values[..2]), None);
        assert_eq!(expand(&shared, &[None, None, None]), None, "a gap");
        let mut full = Common::new(vec![Some("x".repeat(10)); COMMON_MAX]);
        for _ in 0..2 * COMMON_AFTER {
            assert_eq!(full.number(to), (None, None), "no more than COMMON_MAX");
        }
    }

    #[test]
    fn fields_hold_raw_decoded_and_address_forms() {
        let f = SearchFields::of(MSG);
        let from = f.from.as_deref().unwrap_or_default();
        assert!(from.contains("=?UTF-8?Q?Ufficio_Tributi"), "raw form: {from}");
        assert!(from.contains("Ufficio Tributi Città"), "decoded name: {from}");
        assert!(from.contains("tributi@comune.example.it"));
        let to = f.to.as_deref().unwrap_or_default();
        assert!(to.contains("a@example.it") && to.contains("b@example.it"), "folded To: {to}");
        assert!(f.subject.as_deref().unwrap_or_default().contains("Pratica n. 42"));
        assert_eq!(f.cc, None, "absent header");
        assert_eq!(f.sent, chrono::NaiveDate::from_ymd_opt(2026, 11, 26));
        // Issue 22 item 3: the date as written, not as UTC has it.
        let late = SearchFields::of(b"Date: Sun, 25 Mar 2007 00:30:00 +0200\r\n\r\nx\r\n");
        assert_eq!(late.sent, chrono::NaiveDate::from_ymd_opt(2007, 3, 25));
        // The body is not a header.
        assert!(!from.contains("nobody@else"));
        // Any header, uncached, the same way.
        assert_eq!(SearchFields::header_of(MSG, "from"), f.from);
        assert_eq!(SearchFields::header_of(MSG, "X-Missing"), None);
        // A form the string holds already is not added again.
        let plain = SearchFields::of(b"From: Mario Rossi <mario@example.it>\r\nSubject: Pratica 42\r\n\r\nx\r\n");
        assert_eq!(plain.subject.as_deref(), Some("Pratica 42\n"));
        assert_eq!(plain.from.as_deref(), Some("Mario Rossi <mario@example.it>\n"));
    }

    /// A cached value read in place gives SEARCH what the whole value
    /// gives (the prefix of the same layout), for every field's presence.
    #[test]
    fn match_fields_read_a_cached_value_in_place() {
        for raw in [MSG, b"Date: Sun, 25 Mar 2007 00:30:00 +0200\r\n\r\nx\r\n", b"\r\nno header\r\n"] {
            let f = SearchFields::of(raw);
            let v = postcard::to_allocvec(&f).unwrap_or_default();
            let m = MatchFields::decode(&v, &[]).unwrap_or_default();
            assert_eq!(
                (m.from, m.to, m.cc, m.bcc, m.subject),
                (f.from.as_deref(), f.to.as_deref(), f.cc.as_deref(), f.bcc.as_deref(), f.subject.as_deref())
            );
            assert_eq!(m.sent(), f.sent);
            assert_eq!(f.matching().sent(), f.sent);
            for name in FIELD_NAMES {
                assert_eq!(MatchFields::decode(&v, &[]).and_then(|m| m.get(name)), f.get(name));
            }
        }
        assert_eq!(MatchFields::decode(&[0xff, 0xff], &[]), None);
        let far = SearchFields { sent: chrono::NaiveDate::from_ymd_opt(12_000, 1, 2), ..SearchFields::default() };
        let v = postcard::to_allocvec(&far).unwrap_or_default();
        assert_eq!(MatchFields::decode(&v, &[]).and_then(|m| m.sent()), far.sent, "a year past 9999 too");
    }

    /// The sort and thread fields: the Date as an instant, the decoded
    /// Subject, the first mailbox of each address list (a group's name
    /// first, as ENVELOPE), the message-ID headers unfolded.
    #[test]
    fn uploads_that_are_not_messages_are_told_apart() {
        assert!(looks_like_message(b"From: a@b.it\r\nSubject: x\r\n\r\nbody"));
        assert!(looks_like_message(b"Subject: x\n\nbody"));
        let mut pdf = b"%PDF-1.7\r\n%\xe2\xe3\xcf\xd3\r\n".to_vec();
        pdf.extend(std::iter::repeat_n(b'A', 100_000));
        assert!(!looks_like_message(&pdf), "no blank line in the first 64 KiB");
        assert_eq!(header_end(b"Subject: x\r\n\r\nbody"), 14);
        assert_eq!(header_end(b"Subject: x\n\nbody"), 12);
        assert_eq!(header_end(b"Subject: x"), 10);
    }

    #[test]
    fn sort_and_thread_fields() {
        let f = SearchFields::of(MSG);
        assert_eq!(f.date, chrono::DateTime::from_timestamp(1_795_683_600, 0), "10:00 +0100 is 09:00 UTC");
        assert_eq!(f.subject_text.as_deref(), Some("Pratica n. 42"));
        assert_eq!(f.from_mailbox.as_deref(), Some("tributi"));
        assert_eq!(f.to_mailbox.as_deref(), Some("a"));
        assert_eq!(f.cc_mailbox, None);
        let raw = b"Date: not a date\r\nCc: uffici: x@y.it, z@y.it;\r\nTo: <@route:capo@y.it>\r\nMessage-ID:\r\n  <id@x>\r\nReferences: <a@x>\r\n\t<b@x>\r\nIn-Reply-To: <b@x> (nota)\r\n\r\nbody\r\n";
        let f = SearchFields::of(raw);
        assert_eq!(f.date, None, "an unparsable Date is no date");
        assert_eq!(f.cc_mailbox.as_deref(), Some("uffici"));
        assert_eq!(f.to_mailbox.as_deref(), Some("capo"));
        assert_eq!(f.message_id.as_deref(), Some("<id@x>"));
        assert_eq!(
            f.references.as_deref().map(|r| r.split_whitespace().collect::<Vec<_>>()),
            Some(vec!["<a@x>", "<b@x>"])
        );
        assert_eq!(f.in_reply_to.as_deref(), Some("<b@x> (nota)"));
        assert_eq!((f.subject_text, f.from_mailbox), (None, None));
        // A huge References keeps its end.
        let mut big = b"References:".to_vec();
        for i in 0..2000 {
            big.extend_from_slice(format!(" <ref{i}@example.it>").as_bytes());
        }
        big.extend_from_slice(b"\r\n\r\nx\r\n");
        let r = SearchFields::of(&big).references.unwrap_or_default();
        assert!(r.len() <= MAX_REFERENCES && r.ends_with("<ref1999@example.it>"), "{}", r.len());
    }

    proptest::proptest! {
        /// Any bytes as a cached value (a damaged `derived.redb`): read,
        /// shared and expanded without a panic, and SEARCH's reading
        /// agrees with the whole one wherever both read it.
        #[test]
        fn any_cached_bytes_are_read_without_a_panic(v in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let common: Vec<Option<std::sync::Arc<str>>> = vec![Some("protocollo@pec.example.it\n".into()), None];
            let m = MatchFields::decode(&v, &common);
            let _ = share(&v, |_| Some(0));
            if let Some(e) = expand(&v, &common) {
                if let (Ok(f), Some(m)) = (postcard::from_bytes::<SearchFields>(&e), m) {
                    proptest::prop_assert_eq!((m.from, m.to, m.subject), (f.from.as_deref(), f.to.as_deref(), f.subject.as_deref()));
                }
            }
            let _ = convert_cached(b"f5", &v);
            let _ = convert_cached(b"search-fields-4", &v);
        }

        /// Any bytes (a blob is whatever the provider delivered): fields
        /// without a panic, and they survive the index's encoding.
        #[test]
        fn any_message_gives_fields_that_round_trip(
            head in proptest::collection::vec(proptest::prop_oneof![
                proptest::strategy::Just(b"From: ".to_vec()),
                proptest::strategy::Just(b"Subject: =?UTF-8?B?".to_vec()),
                proptest::strategy::Just(b"\r\n".to_vec()),
                proptest::strategy::Just(b"\r\n ".to_vec()),
                proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            ], 0..30),
        ) {
            let raw = head.concat();
            let f = SearchFields::of(&raw);
            let _ = SearchFields::header_of(&raw, "From");
            let v = serde_json::to_vec(&f).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let back: SearchFields = serde_json::from_slice(&v).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            proptest::prop_assert_eq!(back, f);
        }
    }
}
