//! Building responses: tagged and untagged statuses with their codes, the
//! names and flags as imap-types wants them. Pure helpers, no I/O.

use std::num::{NonZeroU32, NonZeroU64};

use imap_next::imap_types::body::BodyStructure;
use imap_next::imap_types::core::{AString, Atom, IString, Tag, Text, Vec1};
use imap_next::imap_types::extensions::uidplus::{UidElement, UidSet};
use imap_next::imap_types::fetch::{MessageDataItem, MessageDataItemName, Section};
use imap_next::imap_types::flag::{Flag, FlagFetch, FlagNameAttribute};
use imap_next::imap_types::mailbox::Mailbox;
use imap_next::imap_types::response::{Bye, Capability, Code, CodeOther, Data, Status, StatusBody, StatusKind, Tagged};
use imap_next::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use super::anatomy::{self, Anatomy};
use super::fetch;
use super::io::Io;
use super::shared::Msg;

pub fn text(s: impl Into<String>) -> Text<'static> {
    let s: String = s.into();
    Text::try_from(s).unwrap_or_else(|_| Text::unvalidated("error"))
}

pub fn tagged(tag: Tag<'static>, kind: StatusKind, code: Option<Code<'static>>, t: &str) -> Status<'static> {
    Status::Tagged(Tagged { tag, body: StatusBody { kind, code, text: text(t) } })
}

pub fn ok(tag: Tag<'static>, t: &str) -> Status<'static> {
    tagged(tag, StatusKind::Ok, None, t)
}

pub fn no(tag: Tag<'static>, t: &str) -> Status<'static> {
    tagged(tag, StatusKind::No, None, t)
}

pub fn bad(tag: Tag<'static>, t: &str) -> Status<'static> {
    tagged(tag, StatusKind::Bad, None, t)
}

pub fn other_code(c: &'static str) -> Code<'static> {
    Code::Other(CodeOther::unvalidated(c.as_bytes()))
}

pub fn noperm(tag: Tag<'static>, t: &str) -> Status<'static> {
    tagged(tag, StatusKind::No, Some(other_code("NOPERM")), t)
}

pub fn serverbug(tag: Tag<'static>, e: &dyn Failure) -> Status<'static> {
    if e.unavailable() {
        // Not a bug: the archive could not record it now (a cluster's
        // database away, a failed disk); nothing was acknowledged.
        tracing::warn!(error = %e, "IMAP command refused: the archive is unavailable");
        return no_code(tag, "UNAVAILABLE", &e.to_string());
    }
    tracing::error!(error = %e, "IMAP command failed on the server side");
    tagged(tag, StatusKind::No, Some(other_code("SERVERBUG")), "internal error; the administrator can see the log")
}

pub fn untagged(kind: StatusKind, code: Option<Code<'static>>, t: &str) -> Status<'static> {
    Status::Untagged(StatusBody { kind, code, text: text(t) })
}

pub fn bye(t: &str) -> Status<'static> {
    Status::Bye(Bye { code: None, text: text(t) })
}

pub fn cap(s: &'static str) -> Capability<'static> {
    match Atom::try_from(s) {
        Ok(a) => Capability::from(a),
        Err(_) => Capability::Imap4Rev1,
    }
}

pub fn mailbox_name(m: &Mailbox<'_>) -> String {
    match m {
        Mailbox::Inbox => "INBOX".into(),
        Mailbox::Other(o) => String::from_utf8_lossy(o.as_ref()).into_owned(),
    }
}

pub fn flag_string(f: &Flag<'_>) -> String {
    f.to_string()
}

pub fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// A capability that is not one of imap-types' named ones (`APPENDLIMIT=n`).
pub fn cap_owned(s: String) -> Option<Capability<'static>> {
    Atom::try_from(s).ok().map(Capability::from)
}

/// `NO [code] text`.
pub fn no_code(tag: Tag<'static>, code: &'static str, t: &str) -> Status<'static> {
    tagged(tag, StatusKind::No, Some(other_code(code)), t)
}

/// What a command's failure is: shown in the log, and whether it is the
/// archive refusing writes for now (`NO [UNAVAILABLE]`) rather than a bug.
pub trait Failure: std::fmt::Display {
    fn unavailable(&self) -> bool {
        false
    }
}

impl Failure for crate::store::StoreError {
    fn unavailable(&self) -> bool {
        use crate::store::StoreError as E;
        matches!(self, E::Unavailable(_) | E::Failed(_) | E::Fenced(_) | E::Closed)
    }
}

impl Failure for super::view::ViewError {
    fn unavailable(&self) -> bool {
        matches!(self, super::view::ViewError::Store(e) if e.unavailable())
    }
}

impl Failure for tokio::task::JoinError {}
impl Failure for String {}
impl Failure for &str {}
impl Failure for std::io::Error {}

/// `NO [UNAVAILABLE]`: the archive refused to record something it must.
pub fn unavailable(tag: Tag<'static>) -> Status<'static> {
    no_code(tag, "UNAVAILABLE", "the archive refuses writes")
}

pub fn nz64(n: u64) -> NonZeroU64 {
    NonZeroU64::new(n).unwrap_or(NonZeroU64::MIN)
}

/// Ascending numbers as a sequence set of ranges (`1:3,7`), or `None`
/// for none.
pub fn sequence_set(sorted: impl Iterator<Item = u32>) -> Option<SequenceSet> {
    let mut out: Vec<Sequence> = Vec::new();
    let mut run: Option<(u32, u32)> = None;
    let push = |out: &mut Vec<Sequence>, (a, b): (u32, u32)| {
        out.push(match a == b {
            true => Sequence::Single(SeqOrUid::Value(nz(a))),
            false => Sequence::Range(SeqOrUid::Value(nz(a)), SeqOrUid::Value(nz(b))),
        })
    };
    for n in sorted.filter(|n| *n > 0) {
        run = match run {
            Some((a, b)) if n == b || n == b.saturating_add(1) => Some((a, n)),
            Some(r) => {
                push(&mut out, r);
                Some((n, n))
            }
            None => Some((n, n)),
        };
    }
    if let Some(r) = run {
        push(&mut out, r);
    }
    Vec1::try_from(out).ok().map(SequenceSet)
}

/// Numbers as IMAP ranges in the order given: `1:3,7` (runs of
/// consecutive numbers joined).
pub fn ranges(nums: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < nums.len() {
        let mut j = i;
        while j + 1 < nums.len() && nums[j + 1] == nums[j].wrapping_add(1) {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&match i == j {
            true => nums[i].to_string(),
            false => format!("{}:{}", nums[i], nums[j]),
        });
        i = j + 1;
    }
    out
}

pub fn uid_set(uids: impl Iterator<Item = u32>) -> Option<UidSet> {
    let v: Vec<UidElement> = uids.filter_map(NonZeroU32::new).map(UidElement::Single).collect();
    Vec1::try_from(v).ok().map(UidSet)
}

/// A quota root name as an astring (mailbox aliases are plain words).
pub fn istr_a(s: &str) -> AString<'static> {
    AString::try_from(s.to_string()).unwrap_or_else(|_| AString::String(istr(s)))
}

pub fn istr(s: &str) -> IString<'static> {
    fetch::istr(s.as_bytes())
}

pub fn mbox(name: &str) -> Mailbox<'static> {
    if name.eq_ignore_ascii_case("INBOX") {
        return Mailbox::Inbox;
    }
    match AString::try_from(name.to_string()) {
        Ok(a) => Mailbox::from(a),
        Err(_) => Mailbox::Inbox,
    }
}

pub fn attr(name: &str) -> Option<FlagNameAttribute<'static>> {
    Atom::try_from(name.to_string()).ok().map(FlagNameAttribute::from)
}

/// An unsolicited FETCH of a message's flags (with its MODSEQ for a
/// CONDSTORE client).
pub fn flags_update(io: &mut Io, i: usize, uid: u32, meta: &Msg, seen: bool, recent: bool, modseq: Option<u64>) {
    let mut items = vec![MessageDataItem::Uid(nz(uid)), MessageDataItem::Flags(flags_of(meta, seen, recent))];
    items.extend(modseq.map(|m| MessageDataItem::ModSeq(nz64(m))));
    if let Ok(items) = Vec1::try_from(items) {
        io.data(Data::Fetch { seq: nz(u32::try_from(i + 1).unwrap_or(u32::MAX)), items });
    }
}

pub fn flags_of(meta: &Msg, seen: bool, recent: bool) -> Vec<FlagFetch<'static>> {
    let mut out: Vec<FlagFetch<'static>> = meta
        .flags
        .iter()
        .filter_map(|f| {
            Flag::try_from(f.as_str()).ok().map(|f| FlagFetch::Flag(imap_next::imap_types::ToStatic::to_static(&f)))
        })
        .collect();
    if seen {
        out.push(FlagFetch::Flag(Flag::Seen));
    }
    if recent {
        out.push(FlagFetch::Recent);
    }
    out
}

/// `INTERNALDATE` as IMAP can write it (imap-types' `DateTime::validate`):
/// whole seconds — an APPEND without a date and the SMTP relay's sent
/// copies are stamped with the clock's nanoseconds — and a year from 0000
/// to 9999, in UTC — an APPEND date at either end can be another year in
/// UTC ("31-Dec-9999 23:59:59 -1200"); such a date shows as the nearest
/// one IMAP can write. (`unvalidated` with nanoseconds panicked in debug
/// builds and, like a 5-digit year, wrote an invalid date-time otherwise.)
pub fn internal_date(d: chrono::DateTime<chrono::Utc>) -> imap_next::imap_types::datetime::DateTime {
    use chrono::{NaiveDate, SubsecRound};
    let bound =
        |y, m, d, h, mi, s| NaiveDate::from_ymd_opt(y, m, d).and_then(|d| d.and_hms_opt(h, mi, s)).map(|t| t.and_utc());
    let (Some(first), Some(last)) = (bound(0, 1, 1, 0, 0, 0), bound(9999, 12, 31, 23, 59, 59)) else {
        unreachable!("both are valid dates")
    };
    imap_next::imap_types::datetime::DateTime::unvalidated(d.trunc_subsecs(0).clamp(first, last).fixed_offset())
}

/// What FETCH has of a message besides its index entry.
#[derive(Clone, Copy, Default)]
pub struct Content<'a> {
    /// Its bytes, if read.
    pub raw: Option<&'a [u8]>,
    /// Its anatomy, when the bytes were not read because the cached
    /// anatomy answers every item.
    pub kept: Option<&'a Anatomy>,
}

/// The items FETCH asked for, of one message; `Err` for a BINARY of a
/// part whose transfer encoding cannot be undone (RFC 3516 UNKNOWN-CTE).
pub fn message_items(
    names: &[MessageDataItemName<'static>],
    uid: u32,
    meta: &Msg,
    seen: bool,
    recent: bool,
    newly_seen: bool,
    content: Content<'_>,
) -> Result<Vec<MessageDataItem<'static>>, fetch::UnknownCte> {
    let Content { raw, kept } = content;
    // The structure (ENVELOPE, BODY, BODYSTRUCTURE, where a part is) only
    // for the items that need it, from the shared cache or by one parse:
    // BODY[] or RFC822.SIZE need none of it.
    let anatomy_cell = std::cell::OnceCell::new();
    let anatomy = || {
        kept.or_else(|| {
            anatomy_cell
                .get_or_init(|| anatomy::cached(&meta.hash).or_else(|| raw.map(|r| anatomy::of(&meta.hash, r))))
                .as_deref()
        })
    };
    // The header block: from the bytes, or without them from the anatomy
    // (see `from_anatomy`).
    let header = || match raw {
        Some(r) => &r[..fetch::header_end(r)],
        None => anatomy().and_then(|a| a.header.as_deref()).unwrap_or_default(),
    };
    let mut out = Vec::new();
    let mut flags_sent = false;
    for n in names {
        let item = match n {
            MessageDataItemName::Uid => MessageDataItem::Uid(nz(uid)),
            MessageDataItemName::Flags => {
                flags_sent = true;
                MessageDataItem::Flags(flags_of(meta, seen, recent))
            }
            MessageDataItemName::InternalDate => MessageDataItem::InternalDate(internal_date(meta.internal_date)),
            MessageDataItemName::Rfc822Size => {
                MessageDataItem::Rfc822Size(u32::try_from(meta.size).unwrap_or(u32::MAX))
            }
            MessageDataItemName::ModSeq => MessageDataItem::ModSeq(nz64(meta.modseq)),
            MessageDataItemName::Envelope => MessageDataItem::Envelope(match anatomy() {
                Some(a) => a.envelope.clone(),
                None => fetch::envelope(None),
            }),
            MessageDataItemName::Body => MessageDataItem::Body(structure(anatomy())),
            MessageDataItemName::BodyStructure => MessageDataItem::BodyStructure(structure(anatomy())),
            MessageDataItemName::Rfc822 => MessageDataItem::Rfc822(fetch::literal(raw.unwrap_or_default().to_vec())),
            MessageDataItemName::Rfc822Header => MessageDataItem::Rfc822Header(fetch::literal(header().to_vec())),
            MessageDataItemName::Rfc822Text => {
                let r = raw.unwrap_or_default();
                MessageDataItem::Rfc822Text(fetch::literal(r[fetch::header_end(r)..].to_vec()))
            }
            MessageDataItemName::BodyExt { section, partial, .. } => {
                let r = raw.unwrap_or_default();
                let bytes = match anatomy() {
                    Some(a) if section_needs_parts(section.as_ref()) => fetch::section_with(r, a, section.as_ref()),
                    _ if raw.is_none() && of_header(section.as_ref()) => fetch::section(header(), section.as_ref()),
                    _ => fetch::section(r, section.as_ref()),
                };
                let bytes = fetch::partial(bytes, *partial);
                MessageDataItem::BodyExt {
                    section: section.clone(),
                    origin: partial.map(|p| p.0),
                    data: fetch::literal(bytes),
                }
            }
            MessageDataItemName::Binary { section, partial, .. } => {
                let numbers: Vec<u32> = section.iter().map(|n| n.get()).collect();
                match binary(raw.unwrap_or_default(), &numbers, anatomy()) {
                    Ok(bytes) => MessageDataItem::Binary {
                        section: section.clone(),
                        value: fetch::literal8(fetch::partial(bytes, *partial)),
                    },
                    Err(fetch::UnknownCte) => return Err(fetch::UnknownCte),
                }
            }
            MessageDataItemName::BinarySize { section } => {
                let numbers: Vec<u32> = section.iter().map(|n| n.get()).collect();
                match binary(raw.unwrap_or_default(), &numbers, anatomy()) {
                    Ok(bytes) => MessageDataItem::BinarySize {
                        section: section.clone(),
                        size: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
                    },
                    Err(fetch::UnknownCte) => return Err(fetch::UnknownCte),
                }
            }
        };
        out.push(item);
    }
    if newly_seen && !flags_sent {
        out.push(MessageDataItem::Flags(flags_of(meta, true, recent)));
    }
    Ok(out)
}

fn structure(anatomy: Option<&Anatomy>) -> BodyStructure<'static> {
    match anatomy {
        Some(a) => a.structure.clone(),
        None => fetch::body_structure(&[], None),
    }
}

fn binary(raw: &[u8], numbers: &[u32], anatomy: Option<&Anatomy>) -> Result<Vec<u8>, fetch::UnknownCte> {
    match anatomy {
        Some(a) if !numbers.is_empty() => fetch::binary_with(raw, a, numbers),
        _ => fetch::binary(raw, numbers),
    }
}

/// Does BODY[section] name a part (found in the structure), not the whole
/// message's header or text?
fn section_needs_parts(section: Option<&Section<'_>>) -> bool {
    match section {
        None => false,
        Some(Section::Part(_) | Section::Mime(_)) => true,
        Some(Section::Header(p) | Section::Text(p) | Section::HeaderFields(p, _) | Section::HeaderFieldsNot(p, _)) => {
            p.is_some()
        }
    }
}

/// Does BODY[section] take only the message's own header (HEADER,
/// HEADER.FIELDS, HEADER.FIELDS.NOT of no part)?
fn of_header(section: Option<&Section<'_>>) -> bool {
    matches!(section, Some(Section::Header(None) | Section::HeaderFields(None, _) | Section::HeaderFieldsNot(None, _)))
}

/// What FETCH of `names` needs of a message whose anatomy is cached:
/// `None` if it needs the message's bytes anyway, else whether it needs
/// the anatomy's header block (which a very large header lacks).
pub fn from_anatomy(names: &[MessageDataItemName<'_>]) -> Option<bool> {
    let mut header = false;
    for n in names {
        match n {
            MessageDataItemName::Uid
            | MessageDataItemName::Flags
            | MessageDataItemName::InternalDate
            | MessageDataItemName::Rfc822Size
            | MessageDataItemName::ModSeq
            | MessageDataItemName::Envelope
            | MessageDataItemName::Body
            | MessageDataItemName::BodyStructure => {}
            MessageDataItemName::Rfc822Header => header = true,
            MessageDataItemName::BodyExt { section, .. } if of_header(section.as_ref()) => header = true,
            _ => return None,
        }
    }
    Some(header)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sequence_sets_are_runs() {
        let s = |v: &[u32]| super::sequence_set(v.iter().copied()).map(|s| format!("{s:?}"));
        assert_eq!(s(&[]), None);
        let set = super::sequence_set([1, 2, 3, 5, 7, 8].into_iter()).expect("set");
        assert_eq!(set.0.as_ref().len(), 3);
        let one = super::sequence_set([4].into_iter()).expect("set");
        assert_eq!(one.0.as_ref().len(), 1);
        assert!(s(&[0]).is_none());
    }

    use chrono::{DateTime, FixedOffset, NaiveDate};
    use imap_next::imap_types::datetime::DateTime as ImapDateTime;

    /// Found by fuzzing (imap_session): APPEND without a date, then FETCH
    /// INTERNALDATE, panicked the session in a debug build.
    #[test]
    fn internal_dates_are_valid_imap_date_times() {
        let at = |y, mo, d, h, nanos| {
            NaiveDate::from_ymd_opt(y, mo, d)
                .and_then(|d| d.and_hms_nano_opt(h, 14, 55, nanos))
                .expect("date")
                .and_utc()
        };
        for (stored, shown) in [
            (at(2026, 11, 25, 10, 592_847_131), "2026-11-25T10:14:55+00:00"),
            (at(2026, 11, 25, 10, 0), "2026-11-25T10:14:55+00:00"),
            // "31-Dec-9999 23:14:55 -1200" and "01-Jan-0000 00:14:55 +1400" in UTC
            (at(10000, 1, 1, 11, 0), "9999-12-31T23:59:59+00:00"),
            (at(-1, 12, 31, 10, 0), "0000-01-01T00:00:00+00:00"),
        ] {
            let d = super::internal_date(stored);
            let inner: &DateTime<FixedOffset> = d.as_ref();
            assert!(ImapDateTime::validate(inner).is_ok(), "{stored}: {inner}");
            assert_eq!(inner.to_rfc3339(), shown, "{stored}");
        }
    }
}
