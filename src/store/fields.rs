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
#[serde(from = "Stored", into = "Stored")]
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

/// The fields SEARCH matches, borrowed from a cached [`SearchFields`]:
/// its first fields, in its order (postcard reads them and leaves the
/// rest), with no string copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Deserialize)]
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

    /// From a cached value (postcard); `None` if it is not one.
    pub fn decode(v: &'a [u8]) -> Option<MatchFields<'a>> {
        postcard::from_bytes(v).ok()
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
/// Subject only where it differs ([`Stored`]).
pub const FIELDS_KIND: &str = "f5";

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
/// (60 bytes a message). BENCHMARKS.md "Ten-year scale".
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    from: Option<String>,
    to: Option<String>,
    cc: Option<String>,
    bcc: Option<String>,
    subject: Option<String>,
    /// [`SearchFields::sent`] as days from the common era.
    sent: Option<i32>,
    /// [`SearchFields::date`] as seconds from the epoch.
    date: Option<i64>,
    subject_text: Text,
    from_mailbox: Option<String>,
    to_mailbox: Option<String>,
    cc_mailbox: Option<String>,
    message_id: Option<String>,
    in_reply_to: Option<String>,
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
    if kind != b"search-fields-4" {
        return None;
    }
    let (
        from,
        to,
        cc,
        bcc,
        subject,
        sent,
        date,
        subject_text,
        from_mailbox,
        to_mailbox,
        cc_mailbox,
        message_id,
        in_reply_to,
        references,
    ): StoredV4 = postcard::from_bytes(v).ok()?;
    let f = SearchFields {
        from,
        to,
        cc,
        bcc,
        subject,
        sent,
        date,
        subject_text,
        from_mailbox,
        to_mailbox,
        cc_mailbox,
        message_id,
        in_reply_to,
        references,
    };
    postcard::to_allocvec(&f).ok()
}

/// The decoded Subject, kept only when it is not the raw value.
#[derive(serde::Serialize, serde::Deserialize)]
enum Text {
    Absent,
    /// The first line of the cached `subject` (its raw form).
    Raw,
    Own(String),
}

/// The raw form a header's cached value starts with (see [`haystack`]).
fn first_form(hay: Option<&str>) -> Option<&str> {
    hay.and_then(|h| h.split('\n').next())
}

impl From<SearchFields> for Stored {
    fn from(f: SearchFields) -> Stored {
        let subject_text = match f.subject_text {
            None => Text::Absent,
            Some(t) if first_form(f.subject.as_deref()) == Some(t.as_str()) => Text::Raw,
            Some(t) => Text::Own(t),
        };
        Stored {
            from: f.from,
            to: f.to,
            cc: f.cc,
            bcc: f.bcc,
            subject: f.subject,
            sent: f.sent.map(|d| d.num_days_from_ce()),
            date: f.date.map(|d| d.timestamp()),
            subject_text,
            from_mailbox: f.from_mailbox,
            to_mailbox: f.to_mailbox,
            cc_mailbox: f.cc_mailbox,
            message_id: f.message_id,
            in_reply_to: f.in_reply_to,
            references: f.references,
        }
    }
}

impl From<Stored> for SearchFields {
    fn from(s: Stored) -> SearchFields {
        let subject_text = match s.subject_text {
            Text::Absent => None,
            Text::Raw => first_form(s.subject.as_deref()).map(str::to_string),
            Text::Own(t) => Some(t),
        };
        SearchFields {
            from: s.from,
            to: s.to,
            cc: s.cc,
            bcc: s.bcc,
            subject: s.subject,
            sent: s.sent.and_then(chrono::NaiveDate::from_num_days_from_ce_opt),
            date: s.date.and_then(|t| chrono::DateTime::from_timestamp(t, 0)),
            subject_text,
            from_mailbox: s.from_mailbox,
            to_mailbox: s.to_mailbox,
            cc_mailbox: s.cc_mailbox,
            message_id: s.message_id,
            in_reply_to: s.in_reply_to,
            references: s.references,
        }
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
            let m = MatchFields::decode(&v).unwrap();
            assert_eq!((m.from, m.subject, m.sent()), (f.from.as_deref(), f.subject.as_deref(), f.sent));
        }
        let f = SearchFields::of(plain);
        assert_eq!(f.subject_text.as_deref(), Some("Pratica n. 42/2026 - tributi"));
        let v = postcard::to_allocvec(&f).unwrap();
        let once = memchr::memmem::find_iter(&v, b"Pratica n. 42/2026").count();
        assert_eq!(once, 1, "a plain Subject is stored once");
        assert!(v.len() < 110, "{} bytes", v.len());
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
            let m = MatchFields::decode(&v).unwrap_or_default();
            assert_eq!(
                (m.from, m.to, m.cc, m.bcc, m.subject),
                (f.from.as_deref(), f.to.as_deref(), f.cc.as_deref(), f.bcc.as_deref(), f.subject.as_deref())
            );
            assert_eq!(m.sent(), f.sent);
            assert_eq!(f.matching().sent(), f.sent);
            for name in FIELD_NAMES {
                assert_eq!(MatchFields::decode(&v).and_then(|m| m.get(name)), f.get(name));
            }
        }
        assert_eq!(MatchFields::decode(&[0xff, 0xff]), None);
        let far = SearchFields { sent: chrono::NaiveDate::from_ymd_opt(12_000, 1, 2), ..SearchFields::default() };
        let v = postcard::to_allocvec(&far).unwrap_or_default();
        assert_eq!(MatchFields::decode(&v).and_then(|m| m.sent()), far.sent, "a year past 9999 too");
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
