//! RFC 5256 SORT, pure (no I/O): the base subject (§2.1), the sent date
//! (§2.2), and ordering messages by a list of sort criteria (§3). The
//! caller gives each message's keys from the index (arrival, size) and the
//! header fields the store caches (`store::fields`), so a SORT never reads
//! a message; `imap::thread` uses the same base subject and sent date.
//!
//! Strings compare with the `i;ascii-casemap` collation RFC 5256 asks for
//! (ASCII letters folded to upper case, everything else byte by byte), so
//! `[xyz]` sorts after `C` and before `_`, as in Dovecot.

use chrono::{DateTime, Utc};
use imap_next::imap_types::extensions::sort::{SortCriterion, SortKey};

use crate::store::fields::SearchFields;

/// A subject reduced as RFC 5256 §2.1 says, for SORT (SUBJECT) and
/// threading.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BaseSubject {
    /// What is left once `Re:`, `Fwd:`, `[blob]` leaders, `(fwd)` trailers
    /// and `[fwd: …]` wrappers are gone (case kept; compare with
    /// [`casemap`]).
    pub text: String,
    /// A `Re:`/`Fw:`/`Fwd:` leader, a `(fwd)` trailer or a `[fwd: …]`
    /// wrapper was removed: THREAD=REFERENCES files such a message under
    /// the one without (§4, step 5).
    pub reply_or_fwd: bool,
}

/// The `i;ascii-casemap` form of `s` (what SORT and THREAD compare).
pub fn casemap(s: &str) -> String {
    s.to_ascii_uppercase()
}

/// The base subject of a subject whose encoded words are already decoded
/// (RFC 5256 §2.1, steps 1 to 7).
pub fn base_subject(subject: &str) -> BaseSubject {
    let mut reply_or_fwd = false;
    // (1) Tabs and line breaks become spaces, runs of spaces one space.
    let norm = normalize(subject);
    let mut s: &str = &norm;
    loop {
        // (2) Trailers: `(fwd)` and spaces at the end.
        loop {
            if let Some(r) = s.strip_suffix(' ') {
                s = r;
            } else if s.len() >= 5 && s.as_bytes()[s.len() - 5..].eq_ignore_ascii_case(b"(fwd)") {
                s = &s[..s.len() - 5];
                reply_or_fwd = true;
            } else {
                break;
            }
        }
        // (3)-(5) Leaders (`[blob] Re:`, a space), then a `[blob]` that
        // leaves something, until neither is left.
        loop {
            if let Some(r) = s.strip_prefix(' ') {
                s = r;
            } else if let Some(end) = leader(s) {
                s = &s[end..];
                reply_or_fwd = true;
            } else if let Some(end) = blob(s, 0).filter(|e| *e < s.len()) {
                s = &s[end..];
            } else {
                break;
            }
        }
        // (6) A `[fwd: …]` wrapper: unwrap and start again at (2).
        let b = s.as_bytes();
        if b.len() >= 6 && b[..5].eq_ignore_ascii_case(b"[fwd:") && b[b.len() - 1] == b']' {
            s = &s[5..s.len() - 1];
            reply_or_fwd = true;
            continue;
        }
        break;
    }
    // (7)
    BaseSubject { text: s.to_string(), reply_or_fwd }
}

fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars() {
        let c = if matches!(c, '\t' | '\r' | '\n') { ' ' } else { c };
        if c == ' ' && space {
            continue;
        }
        space = c == ' ';
        out.push(c);
    }
    out
}

/// `subj-blob = "[" *BLOBCHAR "]" *WSP` at byte `i`: where it ends.
/// Every position returned is just after an ASCII byte, so a char
/// boundary.
fn blob(s: &str, i: usize) -> Option<usize> {
    let b = s.as_bytes();
    if b.get(i) != Some(&b'[') {
        return None;
    }
    let mut j = i + 1;
    loop {
        match b.get(j)? {
            b']' => break,
            // BLOBCHAR is any CHAR but `[` and `]` (and NUL).
            b'[' | 0 => return None,
            _ => j += 1,
        }
    }
    j += 1;
    while b.get(j) == Some(&b' ') {
        j += 1;
    }
    Some(j)
}

/// `subj-leader`'s `*subj-blob subj-refwd` at the start of `s`, with
/// `subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"`: where it
/// ends.
fn leader(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(e) = blob(s, i) {
        i = e;
    }
    let word = |w: &[u8], at: usize| b.get(at..at + w.len()).is_some_and(|x| x.eq_ignore_ascii_case(w));
    let mut j = if word(b"re", i) {
        i + 2
    } else if word(b"fwd", i) {
        i + 3
    } else if word(b"fw", i) {
        i + 2
    } else {
        return None;
    };
    while b.get(j) == Some(&b' ') {
        j += 1;
    }
    if let Some(e) = blob(s, j) {
        if b.get(e) == Some(&b':') {
            return Some(e + 1);
        }
    }
    (b.get(j) == Some(&b':')).then_some(j + 1)
}

/// A sort key of RFC 5256 §3, or of RFC 5957 (`SORT=DISPLAY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Arrival,
    Cc,
    Date,
    From,
    Size,
    Subject,
    To,
    DisplayFrom,
    DisplayTo,
}

/// One criterion: a key, ascending or (`REVERSE`) descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Criterion {
    pub key: Key,
    pub reverse: bool,
}

/// The criteria of a SORT command (every key imap-codec reads is offered;
/// the `Result` is for a key it may learn).
pub fn criteria(list: &[SortCriterion]) -> Result<Vec<Criterion>, String> {
    list.iter()
        .map(|c| {
            let key = match c.key {
                SortKey::Arrival => Key::Arrival,
                SortKey::Cc => Key::Cc,
                SortKey::Date => Key::Date,
                SortKey::From => Key::From,
                SortKey::Size => Key::Size,
                SortKey::Subject => Key::Subject,
                SortKey::To => Key::To,
                SortKey::DisplayFrom => Key::DisplayFrom,
                SortKey::DisplayTo => Key::DisplayTo,
            };
            Ok(Criterion { key, reverse: c.reverse })
        })
        .collect()
}

/// Do `criteria` need the cached header fields (not only the index)?
pub fn needs_fields(criteria: &[Criterion]) -> bool {
    criteria.iter().any(|c| !matches!(c.key, Key::Arrival | Key::Size))
}

/// RFC 5256 §2.2: the sent date is the Date header's instant, or the
/// internal date when there is none; in seconds since the epoch (the
/// precision IMAP shows).
pub fn sent_date(fields: Option<&SearchFields>, internal: DateTime<Utc>) -> i64 {
    fields.and_then(|f| f.date).unwrap_or(internal).timestamp()
}

/// RFC 5957 §3's display name of an address header, from the value the
/// field cache keeps (`SearchFields::from`/`to`: the header as written
/// comes first, then its decoded forms, a line each): the decoded
/// display name of the first address, else its `mailbox@host`, a group's
/// name for a group; "" for none.
pub fn display(cached: Option<&str>) -> String {
    let Some(cached) = cached else { return String::new() };
    // The header as written, up to its first line break that is not a fold.
    let b = cached.as_bytes();
    let mut end = b.len();
    for (i, c) in b.iter().enumerate() {
        if *c == b'\n' && !matches!(b.get(i + 1), Some(b' ' | b'\t')) {
            end = i;
            break;
        }
    }
    let head = format!("To: {}\r\n\r\n", cached[..end].trim_end_matches('\r'));
    let Some(m) = mail_parser::MessageParser::default().parse(head.as_bytes()) else { return String::new() };
    let first = |a: &mail_parser::Addr<'_>| -> Option<String> {
        match a.name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
            Some(n) => Some(n.to_string()),
            None => a.address.as_deref().filter(|x| !x.is_empty()).map(str::to_string),
        }
    };
    match m.to() {
        Some(mail_parser::Address::List(list)) => list.iter().find_map(first),
        Some(mail_parser::Address::Group(groups)) => groups.iter().find_map(|g| match g.name.as_deref() {
            Some(name) if !name.trim().is_empty() => Some(name.trim().to_string()),
            _ => g.addresses.iter().find_map(first),
        }),
        None => None,
    }
    .unwrap_or_default()
}

/// One message's keys: only those the criteria use are filled (a SORT by
/// DATE does not reduce subjects).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    pub arrival: i64,
    pub date: i64,
    pub size: u64,
    /// `addr-mailbox` of the first address, case-mapped ("" for none).
    pub from: String,
    pub to: String,
    pub cc: String,
    /// The base subject, case-mapped.
    pub subject: String,
    /// RFC 5957's display form of the first From / To address,
    /// case-mapped.
    pub display_from: String,
    pub display_to: String,
}

impl Keys {
    /// The keys `criteria` need, from the index's `internal` date and
    /// `size` and the message's cached `fields` (`None`: unreadable, or
    /// not needed; every header key is then empty and DATE is ARRIVAL).
    pub fn new(criteria: &[Criterion], internal: DateTime<Utc>, size: u64, fields: Option<&SearchFields>) -> Keys {
        let mut k = Keys { arrival: internal.timestamp(), size, ..Keys::default() };
        let mapped = |v: Option<&Option<String>>| v.and_then(|v| v.as_deref()).map(casemap).unwrap_or_default();
        for c in criteria {
            match c.key {
                Key::Arrival | Key::Size => {}
                Key::Date => k.date = sent_date(fields, internal),
                Key::From => k.from = mapped(fields.map(|f| &f.from_mailbox)),
                Key::To => k.to = mapped(fields.map(|f| &f.to_mailbox)),
                Key::Cc => k.cc = mapped(fields.map(|f| &f.cc_mailbox)),
                Key::Subject => {
                    let s = fields.and_then(|f| f.subject_text.as_deref()).unwrap_or_default();
                    k.subject = casemap(&base_subject(s).text);
                }
                Key::DisplayFrom => k.display_from = casemap(&display(fields.and_then(|f| f.from.as_deref()))),
                Key::DisplayTo => k.display_to = casemap(&display(fields.and_then(|f| f.to.as_deref()))),
            }
        }
        k
    }

    fn cmp_by(&self, other: &Keys, key: Key) -> std::cmp::Ordering {
        match key {
            Key::Arrival => self.arrival.cmp(&other.arrival),
            Key::Date => self.date.cmp(&other.date),
            Key::Size => self.size.cmp(&other.size),
            Key::From => self.from.cmp(&other.from),
            Key::To => self.to.cmp(&other.to),
            Key::Cc => self.cc.cmp(&other.cc),
            Key::Subject => self.subject.cmp(&other.subject),
            Key::DisplayFrom => self.display_from.cmp(&other.display_from),
            Key::DisplayTo => self.display_to.cmp(&other.display_to),
        }
    }
}

/// Order `items` (each message's keys and what to report for it, given in
/// sequence order) by `criteria`. Messages equal by every criterion stay
/// in sequence order: RFC 5256 §3's last, implicit criterion, which
/// `REVERSE` does not turn (a stable sort).
pub fn sort<T>(items: &mut [(Keys, T)], criteria: &[Criterion]) {
    items.sort_by(|(a, _), (b, _)| {
        for c in criteria {
            let o = a.cmp_by(b, c.key);
            let o = if c.reverse { o.reverse() } else { o };
            if o.is_ne() {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(s: &str) -> (String, bool) {
        let b = base_subject(s);
        (b.text, b.reply_or_fwd)
    }

    /// RFC 5256 §2.1 on the subjects Dovecot's test suite sorts (imaptest
    /// `sort-subject`), and the corners of each step.
    #[test]
    fn base_subject_follows_the_rfc_steps() {
        let cases: &[(&str, &str, bool)] = &[
            ("a", "a", false),
            ("Re: [tag] Fwd: subj (fwd)", "subj", true),
            ("[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)", "b", true),
            ("Re: [FWD: c]", "c", true),
            ("re: [fwd: [fwd: re: [fwd: babylon]]]", "babylon", true),
            // A blob that would leave nothing stays.
            ("[xyz]", "[xyz]", false),
            ("[a] [b]", "[b]", false),
            ("[PEC] Avviso di consegna: pratica 42", "Avviso di consegna: pratica 42", false),
            // Only re, fw, fwd are leaders (and not inside a word).
            ("Ad: Re: Ad: Re: Ad: x", "Ad: Re: Ad: Re: Ad: x", false),
            ("Reply: x", "Reply: x", false),
            ("RIF: x", "RIF: x", false),
            ("Re [ticket 7]: x", "x", true),
            ("Re : x", "x", true),
            ("  RE:   RE:  x  ", "x", true),
            ("x (fwd) (FWD)", "x", true),
            ("x(fwd)", "x", true),
            // Whitespace: tabs and folds are spaces, runs one space.
            ("a\t\tb\r\n c", "a b c", false),
            ("", "", false),
            (" ", "", false),
            ("Re:", "", true),
            ("[fwd:]", "", true),
            ("[fwd: x", "[fwd: x", false),
            ("Re: perché è così", "perché è così", true),
            ("[ä] ü", "ü", false),
        ];
        for (s, want, reply) in cases {
            assert_eq!(base(s), (want.to_string(), *reply), "{s:?}");
        }
    }

    #[test]
    fn casemap_is_ascii_upper() {
        assert_eq!(casemap("[xyz] b_è"), "[XYZ] B_è");
        assert!(casemap("C") < casemap("[xyz]") && casemap("[xyz]") < casemap("_"));
    }

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        chrono::NaiveDate::from_ymd_opt(2008, 2, 22)
            .and_then(|d| d.and_hms_opt(h, m, 0))
            .map(|t| t.and_utc())
            .unwrap_or_default()
    }

    fn fields(subject: Option<&str>, from: Option<&str>, date: Option<DateTime<Utc>>) -> SearchFields {
        SearchFields {
            subject_text: subject.map(str::to_string),
            from_mailbox: from.map(str::to_string),
            date,
            ..SearchFields::default()
        }
    }

    fn order(msgs: &[(DateTime<Utc>, u64, SearchFields)], crit: &[Criterion]) -> Vec<u32> {
        let mut items: Vec<(Keys, u32)> = msgs
            .iter()
            .enumerate()
            .map(|(i, (d, size, f))| (Keys::new(crit, *d, *size, Some(f)), i as u32 + 1))
            .collect();
        sort(&mut items, crit);
        items.into_iter().map(|(_, n)| n).collect()
    }

    fn c(key: Key) -> Criterion {
        Criterion { key, reverse: false }
    }

    fn r(key: Key) -> Criterion {
        Criterion { key, reverse: true }
    }

    /// The subjects and answers of imaptest's `sort-subject` (same
    /// arrival, sizes as there): what Dovecot answers.
    #[test]
    fn subject_sort_matches_dovecot() {
        let subjects = [
            Some("a"),
            Some("C"),
            Some("b"),
            Some("_"),
            Some("[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)"),
            Some("b (a)"),
            Some("Re: [FWD: c]"),
            Some("[xyz]"),
            None,
            Some(" "),
            Some("Re: b"),
            Some("RE: C"),
            Some("Re: c"),
            Some("Ad: Re: Ad: Re: Ad: x"),
            Some("re: [fwd: [fwd: re: [fwd: babylon]]]"),
        ];
        let sizes = [74, 74, 74, 74, 112, 80, 91, 81, 60, 95, 164, 233, 359, 90, 112];
        let msgs: Vec<_> =
            subjects.iter().zip(sizes).map(|(s, size)| (at(21, 0), size, fields(*s, None, None))).collect();
        assert_eq!(order(&msgs, &[c(Key::Subject)]), vec![9, 10, 1, 14, 3, 5, 11, 6, 15, 2, 7, 12, 13, 8, 4]);
        assert_eq!(order(&msgs, &[r(Key::Subject)]), vec![4, 8, 2, 7, 12, 13, 15, 6, 3, 5, 11, 14, 1, 9, 10]);
        assert_eq!(
            order(&msgs, &[c(Key::Subject), r(Key::Size)]),
            vec![10, 9, 1, 14, 11, 5, 3, 6, 15, 13, 12, 7, 2, 8, 4]
        );
    }

    /// imaptest's `sort-date`: the Date header in UTC, the internal date
    /// without one, ties in sequence order whichever the direction.
    #[test]
    fn date_sort_uses_the_header_then_the_internal_date() {
        let d = |h| Some(at(h, 0) - chrono::Duration::hours(2));
        let msgs = vec![
            (at(21, 0), 1, fields(None, None, d(0))),
            (at(20, 0), 2, fields(None, None, d(2))),
            (at(19, 0), 3, fields(None, None, d(1))),
            (at(18, 0), 4, fields(None, None, d(2))),
            (at(1, 30) - chrono::Duration::hours(2), 5, fields(Some("foo"), None, None)),
            (at(16, 0), 6, fields(None, None, d(2))),
            (at(1, 0) - chrono::Duration::hours(2), 7, fields(Some("foo bar"), None, None)),
        ];
        assert_eq!(order(&msgs, &[c(Key::Date)]), vec![1, 3, 7, 5, 2, 4, 6]);
        assert_eq!(order(&msgs, &[r(Key::Date)]), vec![2, 4, 6, 5, 3, 7, 1]);
        assert_eq!(order(&msgs, &[c(Key::Date), r(Key::Size)]), vec![1, 7, 3, 5, 6, 4, 2]);
        assert_eq!(order(&msgs, &[c(Key::Arrival)]), vec![7, 5, 6, 4, 3, 2, 1]);
        assert_eq!(order(&msgs, &[r(Key::Size)]), vec![7, 6, 5, 4, 3, 2, 1]);
    }

    /// FROM compares only the mailbox (user2@domain2 ties with
    /// user2@domain1: sequence order), as imaptest's `sort-addresses`.
    #[test]
    fn address_sort_compares_the_mailbox() {
        let msgs = vec![
            (at(0, 6), 1, fields(None, Some("user2"), None)),
            (at(1, 6), 1, fields(None, Some("User2"), None)),
            (at(2, 6), 1, fields(None, Some("user1"), None)),
            (at(3, 6), 1, fields(None, None, None)),
        ];
        assert_eq!(order(&msgs, &[c(Key::From)]), vec![4, 3, 1, 2]);
        assert_eq!(order(&msgs, &[r(Key::From)]), vec![1, 2, 3, 4]);
        assert_eq!(order(&msgs, &[c(Key::From), r(Key::Arrival)]), vec![4, 3, 2, 1]);
        // Keys not asked for are not computed.
        let k = Keys::new(&[c(Key::Size)], at(0, 0), 9, Some(&msgs[0].2));
        assert_eq!((k.from.as_str(), k.size), ("", 9));
    }

    /// imaptest's `sort-display-from` and `sort-display-to` (RFC 5957):
    /// the display name, else the address, a group's name; what Dovecot
    /// answers.
    #[test]
    fn display_sort_matches_dovecot() {
        let from = [
            "foo bar <a@b.c>",
            "b@c.d",
            "d",
            "=?iso-8859-1?q?foo_aar?= <e@f.g>",
            "=?iso-8859-1?q?foo_car?= <f@g.h>",
            "a: xx@xx.org, yy@yy.org;",
            "z: aa@aa.org, bb@bb.org;",
            "empty:;",
        ];
        let msgs: Vec<_> = from
            .iter()
            .map(|f| {
                let v = Some(format!("{f}\nsomething decoded\n"));
                (at(21, 0), 1, SearchFields { from: v.clone(), to: v, ..SearchFields::default() })
            })
            .collect();
        assert_eq!(order(&msgs[..5], &[c(Key::DisplayFrom)]), vec![2, 3, 4, 1, 5]);
        assert_eq!(order(&msgs[..5], &[r(Key::DisplayFrom)]), vec![5, 1, 4, 3, 2]);
        assert_eq!(order(&msgs, &[c(Key::DisplayTo)]), vec![6, 2, 3, 8, 4, 1, 5, 7]);
        assert_eq!(order(&msgs, &[r(Key::DisplayTo)]), vec![7, 5, 1, 4, 8, 3, 2, 6]);
        assert_eq!(display(Some("\"Rossi,\r\n Mario\" <m@x.it>, b@c")), "Rossi, Mario");
        assert_eq!(display(None), "");
    }

    #[test]
    fn criteria_map_every_key() {
        let sc = |key| SortCriterion { reverse: false, key };
        assert_eq!(criteria(&[sc(SortKey::DisplayFrom)]), Ok(vec![c(Key::DisplayFrom)]));
        assert_eq!(criteria(&[sc(SortKey::Cc)]), Ok(vec![c(Key::Cc)]));
        assert!(!needs_fields(&[c(Key::Arrival), r(Key::Size)]));
        assert!(needs_fields(&[c(Key::Arrival), c(Key::Date)]));
    }

    proptest::proptest! {
        /// Any subject: no panic, no space at either end of the base
        /// subject, and reducing it again changes nothing.
        #[test]
        fn base_subject_of_anything(s in "[ \\t\\[\\]:a-zA-Zé()]{0,40}") {
            let b = base_subject(&s);
            proptest::prop_assert!(!b.text.starts_with(' ') && !b.text.ends_with(' '));
            proptest::prop_assert_eq!(base_subject(&b.text).text, b.text.clone(), "idempotent");
        }
    }
}
