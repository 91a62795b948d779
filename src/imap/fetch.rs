//! FETCH data from a stored message: sections, ENVELOPE, BODYSTRUCTURE.
//!
//! Bytes are served exactly as archived (BODY[] is the blob); mail-parser
//! only finds the offsets of headers and parts. A message mail-parser cannot
//! parse is still served whole, with a minimal structure.

use std::borrow::Cow;
use std::num::NonZeroU32;

use imap_next::imap_types::body::{BasicFields, Body, BodyStructure, SpecificFields};
use imap_next::imap_types::core::{AString, IString, Literal, LiteralMode, NString, NString8, Quoted, Vec1};
use imap_next::imap_types::envelope::{Address, Envelope};
use imap_next::imap_types::extensions::binary::Literal8;
use imap_next::imap_types::fetch::Section;
use mail_parser::{Message, MessagePart, MimeHeaders, PartType};

use super::anatomy::{self, Anatomy, Found, Located, PartKind};

/// A parsed message, or `None` if mail-parser gave up (dropped without
/// recursion however deep its `message/rfc822` parts nest).
pub fn parse(raw: &[u8]) -> Option<crate::pec::Parsed<'_>> {
    crate::pec::parse_full(raw)
}

/// An IMAP string for arbitrary bytes: quoted when possible, else a literal.
pub fn istr(bytes: &[u8]) -> IString<'static> {
    match Quoted::try_from(bytes.to_vec()) {
        Ok(q) => IString::Quoted(q),
        Err(_) => IString::Literal(Literal::unvalidated(bytes.to_vec())),
    }
}

pub fn nstr(bytes: Option<&[u8]>) -> NString<'static> {
    NString(bytes.map(istr))
}

/// Header block of `raw` including the blank line (or all of it).
pub use crate::store::fields::header_end;

/// HEADER, TEXT or HEADER.FIELDS of the message (or encapsulated message)
/// `r`.
fn whole(r: &[u8], s: &Section<'_>) -> Vec<u8> {
    let h = header_end(r);
    match s {
        Section::Header(_) => r[..h].to_vec(),
        Section::Text(_) => r[h..].to_vec(),
        Section::HeaderFields(_, names) => header_fields(&r[..h], names.as_ref(), true),
        Section::HeaderFieldsNot(_, names) => header_fields(&r[..h], names.as_ref(), false),
        Section::Part(_) | Section::Mime(_) => Vec::new(),
    }
}

/// The bytes of BODY[section] of the message `raw`, its parts found by a
/// parse (see [`section_with`] for a message whose anatomy is known).
pub fn section(raw: &[u8], section: Option<&Section<'_>>) -> Vec<u8> {
    section_by(raw, section, |numbers| parsed_part(raw, numbers))
}

/// [`section`] with the parts found in `anatomy` instead of by a parse.
pub fn section_with(raw: &[u8], anatomy: &Anatomy, section: Option<&Section<'_>>) -> Vec<u8> {
    section_by(raw, section, |numbers| in_anatomy(raw, anatomy, numbers))
}

/// The part `numbers` of `raw` by a parse: mail-parser gives every
/// offset, also those of parts inside an encapsulated message/rfc822,
/// relative to the outermost message.
fn parsed_part(raw: &[u8], numbers: &[u32]) -> Option<Located> {
    let msg = parse(raw)?;
    find_part(raw, &msg, numbers).map(|p| anatomy::locate(raw, p))
}

/// The part `numbers` of `raw` from its anatomy (parsed again if it lies
/// deeper than the anatomy's spans go).
fn in_anatomy(raw: &[u8], anatomy: &Anatomy, numbers: &[u32]) -> Option<Located> {
    match anatomy.part(numbers) {
        Found::Part(at) => Some(at),
        Found::TooDeep => parsed_part(raw, numbers),
        Found::Missing => None,
    }
}

/// BODY[section] of `raw`, the part a section names found by `find`.
fn section_by(raw: &[u8], section: Option<&Section<'_>>, find: impl FnOnce(&[u32]) -> Option<Located>) -> Vec<u8> {
    let Some(section) = section else {
        return raw.to_vec();
    };
    let part = match section {
        Section::Part(p) | Section::Mime(p) => Some(p),
        Section::Header(p) | Section::Text(p) | Section::HeaderFields(p, _) | Section::HeaderFieldsNot(p, _) => {
            p.as_ref()
        }
    };
    let Some(part) = part else {
        return whole(raw, section);
    };
    let numbers: Vec<u32> = part.0.as_ref().iter().map(|n| n.get()).collect();
    let Some(Located { header, body, end, kind }) = find(&numbers) else {
        return Vec::new();
    };
    // Slice `raw`, never an inner message's own buffer.
    let slice = |a: usize, b: usize| raw.get(a..b).map(<[u8]>::to_vec).unwrap_or_default();
    match (section, kind) {
        (Section::Part(_), _) => slice(body, end),
        (Section::Mime(_), _) => slice(header, body),
        // HEADER/TEXT of a part apply to an encapsulated message/rfc822:
        // its header, and everything after it to the part's end (epilogue
        // included).
        (_, PartKind::Message { inner_body: Some(inner) }) => {
            let whole_part = slice(body, end);
            let h = inner.saturating_sub(body).min(whole_part.len());
            match section {
                Section::Text(_) => whole_part[h..].to_vec(),
                _ => whole(&whole_part[..h], section),
            }
        }
        _ => Vec::new(),
    }
}

/// [`binary`] with the part found in `anatomy` instead of by a parse.
pub fn binary_with(raw: &[u8], anatomy: &Anatomy, numbers: &[u32]) -> Result<Vec<u8>, UnknownCte> {
    binary_by(raw, numbers, |numbers| in_anatomy(raw, anatomy, numbers))
}

/// BINARY[part] (RFC 3516) asked for a part whose Content-Transfer-Encoding
/// pecgate cannot undo: the FETCH answers `NO [UNKNOWN-CTE]`.
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownCte;

/// The bytes of BINARY[numbers] of the message `raw` (RFC 3516): the
/// part's content with its Content-Transfer-Encoding (base64,
/// quoted-printable) undone; the whole message for no numbers; a multipart
/// or message/rfc822 part as it is (they carry no encoding of their own);
/// nothing for a part the message does not have (as BODY[]).
pub fn binary(raw: &[u8], numbers: &[u32]) -> Result<Vec<u8>, UnknownCte> {
    binary_by(raw, numbers, |numbers| parsed_part(raw, numbers))
}

/// BINARY[numbers] of `raw`, the part found by `find`.
fn binary_by(raw: &[u8], numbers: &[u32], find: impl FnOnce(&[u32]) -> Option<Located>) -> Result<Vec<u8>, UnknownCte> {
    if numbers.is_empty() {
        return Ok(raw.to_vec());
    }
    let Some(Located { body, end, kind, .. }) = find(numbers) else { return Ok(Vec::new()) };
    let body = raw.get(body..end).unwrap_or_default();
    let cte = match &kind {
        PartKind::Multipart | PartKind::Message { .. } => return Ok(body.to_vec()),
        PartKind::Leaf { cte } => cte.as_deref(),
    };
    match cte {
        None | Some("7bit" | "8bit" | "binary") => Ok(body.to_vec()),
        Some("base64") => Ok(base64(body)),
        Some("quoted-printable") => Ok(quoted_printable(body)),
        Some(_) => Err(UnknownCte),
    }
}

/// Base64 with line breaks and other whitespace skipped; a part that is
/// not valid base64 decodes as far as its valid characters go.
fn base64(body: &[u8]) -> Vec<u8> {
    let clean: Vec<u8> =
        body.iter().copied().filter(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=')).collect();
    let upto = clean.iter().position(|c| *c == b'=').unwrap_or(clean.len());
    mail_parser::decoders::base64::base64_decode(&clean)
        .or_else(|| mail_parser::decoders::base64::base64_decode(&clean[..upto - upto % 4]))
        .unwrap_or_default()
}

/// Quoted-printable (RFC 2045 §6.7) with the line breaks kept as they are
/// (CRLF stays CRLF): `=XX` is a byte, `=` at a line's end a soft break,
/// whitespace at a line's end is dropped; anything else is itself.
fn quoted_printable(b: &[u8]) -> Vec<u8> {
    let hex = |c: Option<&u8>| c.and_then(|c| (*c as char).to_digit(16)).map(|d| d as u8);
    let blank = |c: u8| c == b' ' || c == b'\t';
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'=' => {
                let mut j = i + 1;
                while j < b.len() && blank(b[j]) {
                    j += 1;
                }
                match (b.get(j), b.get(j + 1)) {
                    (None, _) => i = j,
                    (Some(b'\r'), Some(b'\n')) => i = j + 2,
                    (Some(b'\n'), _) => i = j + 1,
                    _ => match (hex(b.get(i + 1)), hex(b.get(i + 2))) {
                        (Some(h), Some(l)) => {
                            out.push(h << 4 | l);
                            i += 3;
                        }
                        _ => {
                            out.push(b'=');
                            i += 1;
                        }
                    },
                }
            }
            c if blank(c) => {
                let mut j = i;
                while j < b.len() && blank(b[j]) {
                    j += 1;
                }
                if j < b.len() && b[j] != b'\r' && b[j] != b'\n' {
                    out.extend_from_slice(&b[i..j]);
                }
                i = j;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// A message as APPEND stores it: a plain literal cannot carry NUL (RFC
/// 3501 §9, `CHAR8`; only RFC 3516's literal8, answering BINARY, may), so
/// a part APPENDed in binary (a literal8) whose content holds NUL is stored
/// in base64, as Dovecot does: BODY[] stays a valid literal and BINARY[]
/// gives the bytes back. Anything else is kept byte for byte.
pub fn nul_free(raw: Vec<u8>) -> Vec<u8> {
    if !raw.contains(&0) {
        return raw;
    }
    let Some(msg) = parse(&raw) else { return raw };
    let mut edits: Vec<(usize, usize, usize)> = msg
        .parts
        .iter()
        .filter(|p| !matches!(p.body, PartType::Multipart(_) | PartType::Message(_)))
        .map(|p| (p.offset_header as usize, p.offset_body as usize, p.offset_end as usize))
        .filter(|&(h, b, e)| h <= b && b <= e && e <= raw.len() && raw[b..e].contains(&0))
        .collect();
    drop(msg);
    edits.sort_unstable();
    edits.dedup();
    let mut out = raw.clone();
    for &(h, b, e) in edits.iter().rev() {
        let mut part = base64_header(&raw[h..b]);
        part.extend_from_slice(&base64_lines(&raw[b..e]));
        out.splice(h..e, part);
    }
    out
}

/// A part's header block (ending in its blank line) with its
/// Content-Transfer-Encoding (and the field's folded lines) replaced by
/// `base64`.
fn base64_header(header: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len() + 40);
    let mut skipping = false;
    let lines: Vec<&[u8]> = header.split_inclusive(|b| *b == b'\n').collect();
    let blank = lines.iter().rposition(|l| l.iter().all(|b| matches!(b, b'\r' | b'\n'))).unwrap_or(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if i == blank {
            out.extend_from_slice(b"Content-Transfer-Encoding: base64\r\n");
        }
        let folded = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !folded {
            skipping = line.len() >= 26 && line[..26].eq_ignore_ascii_case(b"content-transfer-encoding:");
        }
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    if blank == lines.len() {
        out.extend_from_slice(b"Content-Transfer-Encoding: base64\r\n\r\n");
    }
    out
}

/// Base64 in lines of 76 characters joined by CRLF (RFC 2045 §6.8).
fn base64_lines(bytes: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    text.as_bytes().chunks(76).collect::<Vec<_>>().join(&b"\r\n"[..])
}

/// A literal8 (`~{n}`, RFC 3516) for bytes holding NUL, else a literal.
pub fn literal8(bytes: Vec<u8>) -> NString8<'static> {
    match bytes.contains(&0) {
        true => NString8::Literal8(Literal8 { data: Cow::Owned(bytes), mode: LiteralMode::Sync }),
        false => NString8::NString(literal(bytes)),
    }
}

/// Part `numbers` (1-based, IMAP numbering) of `msg`. Its offsets refer to
/// the outermost message's bytes.
fn find_part<'a, 'x>(raw: &[u8], msg: &'a Message<'x>, numbers: &[u32]) -> Option<&'a MessagePart<'x>> {
    let (first, rest) = numbers.split_first()?;
    let root = msg.parts.first()?;
    let part = match &root.body {
        PartType::Multipart(children) => msg.parts.get(*children.get(first.checked_sub(1)? as usize)? as usize)?,
        _ if *first == 1 => root,
        _ => return None,
    };
    descend(raw, msg, part, rest)
}

/// Is `inner` parsed from `raw` itself (a message/rfc822 part sent as it
/// is, as RFC 2046 requires), not from a decoded copy whose offsets would
/// not be `raw`'s?
pub(super) fn in_place(raw: &[u8], inner: &Message<'_>) -> bool {
    let r = inner.raw_message();
    let (start, base) = (r.as_ptr() as usize, raw.as_ptr() as usize);
    start >= base && start + r.len() <= base + raw.len()
}

fn descend<'a, 'x>(
    raw: &[u8],
    msg: &'a Message<'x>,
    part: &'a MessagePart<'x>,
    rest: &[u32],
) -> Option<&'a MessagePart<'x>> {
    let Some((n, more)) = rest.split_first() else {
        return Some(part);
    };
    match &part.body {
        PartType::Multipart(children) => {
            let child = msg.parts.get(*children.get(n.checked_sub(1)? as usize)? as usize)?;
            descend(raw, msg, child, more)
        }
        PartType::Message(inner) if in_place(raw, inner) => find_part(raw, inner, rest),
        _ => None,
    }
}

fn header_fields(header: &[u8], names: &[AString<'_>], keep: bool) -> Vec<u8> {
    let wanted: Vec<Vec<u8>> = names.iter().map(|n| n.as_ref().to_ascii_lowercase()).collect();
    let mut out = Vec::new();
    let mut take = false;
    for line in header.split_inclusive(|b| *b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !matches!(line.first(), Some(b' ') | Some(b'\t')) {
            let name = line.split(|b| *b == b':').next().unwrap_or_default().trim_ascii().to_ascii_lowercase();
            take = wanted.contains(&name) == keep;
        }
        if take {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn address(addr: &mail_parser::Addr<'_>) -> Address<'static> {
    let full = addr.address.as_deref();
    // A source route, `<@route1,@route2:user@domain>`: RFC 3501's adl.
    let (adl, spec) = match full {
        Some(x) if x.starts_with('@') => match x.split_once(':') {
            Some((route, rest)) => (Some(route), Some(rest)),
            None => (None, Some(x)),
        },
        other => (None, other),
    };
    let (local, host) = match spec.and_then(|x| x.rsplit_once('@')) {
        Some((l, h)) => (Some(l), Some(h)),
        None => (spec, None),
    };
    Address {
        name: nstr(addr.name.as_deref().map(str::as_bytes)),
        adl: nstr(adl.map(str::as_bytes)),
        mailbox: nstr(local.map(str::as_bytes)),
        host: nstr(host.map(str::as_bytes)),
    }
}

/// An ENVELOPE address list. A group (`team: a@x, b@y;`) is written as
/// RFC 3501 §7.4.2 says: a start marker `(NIL NIL "team" NIL)`, its
/// members, an end marker `(NIL NIL NIL NIL)`.
fn addresses(a: Option<&mail_parser::Address<'_>>) -> Vec<Address<'static>> {
    let nil = || NString(None);
    match a {
        None => Vec::new(),
        Some(mail_parser::Address::List(list)) => list.iter().map(address).collect(),
        Some(mail_parser::Address::Group(groups)) => {
            let mut out = Vec::new();
            for g in groups {
                // A comment inside a group (`g: (foo) ;`) is no member.
                let members = g.addresses.iter().filter(|a| a.address.is_some()).map(address);
                let Some(name) = g.name.as_deref() else {
                    out.extend(members);
                    continue;
                };
                out.push(Address { name: nil(), adl: nil(), mailbox: nstr(Some(name.as_bytes())), host: nil() });
                out.extend(members);
                out.push(Address { name: nil(), adl: nil(), mailbox: nil(), host: nil() });
            }
            out
        }
    }
}

pub fn envelope(msg: Option<&Message<'_>>) -> Envelope<'static> {
    let Some(m) = msg else {
        return Envelope {
            date: NString(None),
            subject: NString(None),
            from: vec![],
            sender: vec![],
            reply_to: vec![],
            to: vec![],
            cc: vec![],
            bcc: vec![],
            in_reply_to: NString(None),
            message_id: NString(None),
        };
    };
    let raw = |h: &str| m.header_raw(h).map(|v| v.trim().as_bytes().to_vec());
    let from = addresses(m.from());
    let sender = match m.sender() {
        Some(s) => addresses(Some(s)),
        None => from.clone(),
    };
    let reply_to = match m.reply_to() {
        Some(s) => addresses(Some(s)),
        None => from.clone(),
    };
    Envelope {
        date: nstr(raw("Date").as_deref()),
        subject: nstr(raw("Subject").as_deref()),
        from,
        sender,
        reply_to,
        to: addresses(m.to()),
        cc: addresses(m.cc()),
        bcc: addresses(m.bcc()),
        in_reply_to: nstr(raw("In-Reply-To").as_deref()),
        message_id: nstr(raw("Message-ID").as_deref()),
    }
}

fn count_lines(b: &[u8]) -> u32 {
    u32::try_from(b.iter().filter(|c| **c == b'\n').count()).unwrap_or(u32::MAX)
}

fn part_structure(raw: &[u8], msg: &Message<'_>, part: &MessagePart<'_>, depth: usize) -> BodyStructure<'static> {
    let body_bytes = raw.get(part.offset_body as usize..part.offset_end as usize).unwrap_or_default();
    if let (PartType::Multipart(children), true) = (&part.body, depth < 16) {
        let bodies: Vec<BodyStructure<'static>> = children
            .iter()
            .filter_map(|c| msg.parts.get(*c as usize))
            .map(|c| part_structure(raw, msg, c, depth + 1))
            .collect();
        let subtype = part.content_type().and_then(|c| c.subtype()).unwrap_or("mixed").to_string();
        if let Ok(bodies) = Vec1::try_from(bodies) {
            return BodyStructure::Multi { bodies, subtype: istr(subtype.as_bytes()), extension_data: None };
        }
    }
    let (ctype, csub, params) = match part.content_type() {
        Some(ct) => (
            ct.ctype().to_string(),
            ct.subtype().unwrap_or("plain").to_string(),
            ct.attributes()
                .unwrap_or_default()
                .iter()
                .map(|a| (istr(a.name.as_bytes()), istr(a.value.as_bytes())))
                .collect(),
        ),
        None => ("text".to_string(), "plain".to_string(), vec![(istr(b"charset"), istr(b"us-ascii"))]),
    };
    let basic = BasicFields {
        parameter_list: params,
        id: nstr(part.content_id().map(str::as_bytes)),
        description: nstr(part.content_description().map(str::as_bytes)),
        content_transfer_encoding: istr(part.content_transfer_encoding().unwrap_or("7bit").as_bytes()),
        size: u32::try_from(body_bytes.len()).unwrap_or(u32::MAX),
    };
    let specific = match (&part.body, depth < 16) {
        (PartType::Message(inner), true) => SpecificFields::Message {
            envelope: Box::new(envelope(Some(inner))),
            body_structure: Box::new(if in_place(raw, inner) {
                structure_of(raw, inner, depth + 1)
            } else {
                fallback_structure(inner.raw_message())
            }),
            number_of_lines: count_lines(body_bytes),
        },
        _ if ctype.eq_ignore_ascii_case("text") => {
            SpecificFields::Text { subtype: istr(csub.as_bytes()), number_of_lines: count_lines(body_bytes) }
        }
        _ => SpecificFields::Basic { r#type: istr(ctype.as_bytes()), subtype: istr(csub.as_bytes()) },
    };
    BodyStructure::Single { body: Body { basic, specific }, extension_data: None }
}

/// `raw`: the outermost message, to which every part's offsets refer.
fn structure_of(raw: &[u8], msg: &Message<'_>, depth: usize) -> BodyStructure<'static> {
    match msg.parts.first() {
        Some(root) => part_structure(raw, msg, root, depth),
        None => fallback_structure(msg.raw_message()),
    }
}

fn fallback_structure(raw: &[u8]) -> BodyStructure<'static> {
    let body = &raw[header_end(raw)..];
    BodyStructure::Single {
        body: Body {
            basic: BasicFields {
                parameter_list: vec![(istr(b"charset"), istr(b"us-ascii"))],
                id: NString(None),
                description: NString(None),
                content_transfer_encoding: istr(b"7bit"),
                size: u32::try_from(body.len()).unwrap_or(u32::MAX),
            },
            specific: SpecificFields::Text { subtype: istr(b"plain"), number_of_lines: count_lines(body) },
        },
        extension_data: None,
    }
}

pub fn body_structure(raw: &[u8], msg: Option<&Message<'_>>) -> BodyStructure<'static> {
    match msg {
        Some(m) => structure_of(raw, m, 0),
        None => fallback_structure(raw),
    }
}

/// `<origin>` partial fetch.
pub fn partial(bytes: Vec<u8>, partial: Option<(u32, NonZeroU32)>) -> Vec<u8> {
    match partial {
        None => bytes,
        Some((start, len)) => {
            let s = (start as usize).min(bytes.len());
            let e = s.saturating_add(len.get() as usize).min(bytes.len());
            bytes[s..e].to_vec()
        }
    }
}

/// A body as an NString literal (exact bytes).
pub fn literal(bytes: Vec<u8>) -> NString<'static> {
    NString(Some(IString::Literal(Literal::unvalidated(Cow::Owned(bytes)))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_next::imap_types::fetch::{Part, Section};

    const MIXED: &[u8] = b"From: A <a@x.it>\r\nSubject: hi\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\none\r\n--b\r\nContent-Type: application/xml\r\n\r\n<x/>\r\n--b--\r\n";

    #[test]
    fn parts_with_nul_are_stored_in_base64() {
        let plain = b"Subject: x\r\n\r\nno nul here\r\n".to_vec();
        assert_eq!(nul_free(plain.clone()), plain);
        let msg = b"Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\ntesto\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00\x01\xff\r\n\x00\r\n--b--\r\n";
        let stored = nul_free(msg.to_vec());
        assert!(!stored.contains(&0), "{}", String::from_utf8_lossy(&stored));
        assert_eq!(binary(&stored, &[1]).unwrap(), b"testo");
        assert_eq!(binary(&stored, &[2]).unwrap(), b"\x00\x01\xff\r\n\x00");
        assert!(String::from_utf8_lossy(&stored).contains("Content-Transfer-Encoding: base64\r\n\r\nAAH/DQoA\r\n--b--"));
        let single = b"Subject: y\r\nContent-Transfer-Encoding:\r\n binary\r\n\r\nab\x00cd".to_vec();
        let stored = nul_free(single);
        assert!(!stored.contains(&0));
        assert_eq!(binary(&stored, &[1]).unwrap(), b"ab\x00cd");
        let _ = nul_free(b"\x00\x00\r\n\r\n\x00".to_vec());
    }

    #[test]
    fn binary_undoes_the_transfer_encoding() {
        let msg = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nperch=C3=A9 =\r\nsoft  \r\nhard\r\n--b\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\nAw==\r\n--b\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nxx\r\n--b--\r\n";
        assert_eq!(binary(msg, &[1]).unwrap(), "perché soft\r\nhard".as_bytes());
        assert_eq!(binary(msg, &[2]).unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(binary(msg, &[3]), Err(UnknownCte));
        assert_eq!(binary(msg, &[9]).unwrap(), Vec::<u8>::new());
        assert_eq!(binary(msg, &[]).unwrap(), msg.to_vec());
        assert!(matches!(literal8(vec![0, 1]), NString8::Literal8(_)));
        assert!(matches!(literal8(b"ab".to_vec()), NString8::NString(_)));
        for junk in [&b"=\r"[..], b"=", b"=Z", b"= ", b"=4", b"\t"] {
            let _ = quoted_printable(junk);
        }
        assert_eq!(base64(b"AAE*C"), vec![0, 1, 2]);
    }

    #[test]
    fn sections() {
        assert_eq!(section(MIXED, None), MIXED);
        let h = section(MIXED, Some(&Section::Header(None)));
        assert!(h.ends_with(b"boundary=b\r\n\r\n"));
        let p1 = Part(Vec1::from(NonZeroU32::new(1).unwrap()));
        assert_eq!(section(MIXED, Some(&Section::Part(p1))), b"one");
        let p2 = Part(Vec1::from(NonZeroU32::new(2).unwrap()));
        assert_eq!(section(MIXED, Some(&Section::Part(p2))), b"<x/>");
        let p9 = Part(Vec1::from(NonZeroU32::new(9).unwrap()));
        assert!(section(MIXED, Some(&Section::Part(p9))).is_empty());
        let f = section(MIXED, Some(&Section::HeaderFields(None, Vec1::from(AString::try_from("subject").unwrap()))));
        assert_eq!(f, b"Subject: hi\r\n\r\n");
    }

    const NESTED: &[u8] = b"From: a@x.it\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: text/plain\r\n\r\nouter text\r\n--o\r\nContent-Type: message/rfc822\r\n\r\nFrom: b@y.it\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\npre\r\n--i\r\nContent-Type: text/plain\r\n\r\ninner one\r\n--i\r\nContent-Type: text/html\r\n\r\n<p>two</p>\r\n--i--\r\nepilogue\r\n\r\n--o--\r\n";

    fn part(nums: &[u32]) -> Part {
        let v: Vec<NonZeroU32> = nums.iter().map(|n| NonZeroU32::new(*n).unwrap()).collect();
        Part(Vec1::try_from(v).unwrap())
    }

    /// Issue 22 item 1: every section inside a message/rfc822 part came
    /// back empty (the certified message inside postacert.eml looked empty
    /// to clients reading it part by part).
    #[test]
    fn sections_inside_an_encapsulated_message() {
        assert_eq!(section(NESTED, Some(&Section::Part(part(&[2, 1])))), b"inner one");
        assert_eq!(section(NESTED, Some(&Section::Part(part(&[2, 2])))), b"<p>two</p>");
        assert_eq!(section(NESTED, Some(&Section::Mime(part(&[2, 1])))), b"Content-Type: text/plain\r\n\r\n");
        let text = section(NESTED, Some(&Section::Text(Some(part(&[2])))));
        assert!(
            text.starts_with(b"pre\r\n--i") && text.ends_with(b"epilogue\r\n"),
            "{}",
            String::from_utf8_lossy(&text)
        );
        let head = section(NESTED, Some(&Section::Header(Some(part(&[2])))));
        assert!(
            head.starts_with(b"From: b@y.it") && head.ends_with(b"boundary=i\r\n\r\n"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        let whole = section(NESTED, Some(&Section::Part(part(&[2]))));
        assert!(whole.starts_with(b"From: b@y.it") && whole.ends_with(b"epilogue\r\n"));
    }

    #[test]
    fn structure_inside_an_encapsulated_message_has_sizes() {
        let m = parse(NESTED).unwrap();
        let BodyStructure::Multi { bodies, .. } = body_structure(NESTED, Some(&m)) else { panic!("not multi") };
        let BodyStructure::Single { body, .. } = &bodies.as_ref()[1] else { panic!("not single") };
        let SpecificFields::Message { body_structure, number_of_lines, .. } = &body.specific else {
            panic!("not message")
        };
        assert!(*number_of_lines > 0);
        let BodyStructure::Multi { bodies: inner, .. } = &**body_structure else { panic!("inner not multi") };
        let BodyStructure::Single { body: first, .. } = &inner.as_ref()[0] else { panic!() };
        assert_eq!(first.basic.size, 9, "inner one");
    }

    fn mailbox_of(a: &Address<'_>) -> Option<Vec<u8>> {
        a.mailbox.0.as_ref().map(|s| s.as_ref().to_vec())
    }

    /// Issue 22 item 2: groups lost their markers, routes were read as
    /// part of the mailbox.
    #[test]
    fn envelope_groups_and_routes() {
        let raw = b"From: <@route:user@domain.it>\r\nCc: group:;, group2: (foo) ;\r\nTo: team: a@x.it, b@y.it;\r\n\r\nbody\r\n";
        let m = parse(raw).unwrap();
        let e = envelope(Some(&m));
        let from = &e.from[0];
        assert_eq!(from.adl.0.as_ref().map(|s| s.as_ref().to_vec()), Some(b"@route".to_vec()));
        assert_eq!(mailbox_of(from), Some(b"user".to_vec()));
        let to: Vec<Option<Vec<u8>>> = e.to.iter().map(mailbox_of).collect();
        assert_eq!(to, vec![Some(b"team".to_vec()), Some(b"a".to_vec()), Some(b"b".to_vec()), None], "{:?}", e.to);
        assert!(e.to[0].host.0.is_none() && e.to[3].host.0.is_none());
        let cc: Vec<Option<Vec<u8>>> = e.cc.iter().map(mailbox_of).collect();
        assert_eq!(cc, vec![Some(b"group".to_vec()), None, Some(b"group2".to_vec()), None], "{:?}", e.cc);
    }

    #[test]
    fn garbage_does_not_panic() {
        for raw in [&b""[..], b"\r\n", b"Content-Type: multipart/mixed\r\n\r\n--", b"\xff\xfe\x00"] {
            let m = parse(raw);
            let _ = body_structure(raw, m.as_deref());
            let _ = envelope(m.as_deref());
            let _ = section(raw, Some(&Section::Text(None)));
        }
    }
}
