//! Thin helpers over `mail-parser` shared by classification, unwrapping and
//! signature checking: header lookup by raw bytes, and locating the parts a
//! PEC message is made of.

use std::borrow::Cow;
use std::sync::LazyLock;

use mail_parser::decoders::base64::base64_decode;
use mail_parser::decoders::quoted_printable::quoted_printable_decode;
use mail_parser::{Encoding, HeaderName, Message, MessageParser, MessagePart, MimeHeaders, PartType};

/// One parser for the whole process: building it allocates a header table.
///
/// Only MIME headers (needed to walk the body) and `Subject` (RFC 2047
/// decoding) are parsed; every other header we read from its raw bytes, which
/// is both faster and independent of `mail-parser`'s idea of a valid
/// Message-ID or address.
static PARSER: LazyLock<MessageParser> = LazyLock::new(|| {
    MessageParser::new()
        .with_mime_headers()
        .header_text(HeaderName::Subject)
});

/// Parses a message; `None` when not even a header block is found.
pub(crate) fn parse(raw: &[u8]) -> Option<Message<'_>> {
    PARSER.parse(raw)
}

/// All values of a top-level header, matched case-insensitively, unfolded
/// and trimmed, in the order they appear.
pub(crate) fn header_values(msg: &Message<'_>, name: &str) -> Vec<String> {
    let raw = msg.raw_message();
    msg.headers()
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case(name))
        .filter_map(|h| raw.get(h.offset_start() as usize..h.offset_end() as usize))
        .map(unfold)
        .collect()
}

/// The first value of a top-level header (see [`header_values`]).
pub(crate) fn header_value(msg: &Message<'_>, name: &str) -> Option<String> {
    header_values(msg, name).into_iter().next()
}

/// Undoes RFC 5322 folding (CRLF or bare LF followed by white space) and
/// trims; invalid UTF-8 is replaced rather than rejected, because these
/// values are only compared with ASCII tokens.
pub(crate) fn unfold(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c != '\r' && c != '\n' {
            out.push(c);
        }
    }
    out.trim().to_string()
}

/// The decoded subject (RFC 2047 handled by `mail-parser`).
pub(crate) fn subject(msg: &Message<'_>) -> Option<String> {
    msg.subject().map(|s| s.trim().to_string())
}

/// Where the PEC-specific parts are in a message's own (top-level) parts.
///
/// Parts inside a nested message (the original, `postacert.eml`) are never
/// considered: an original may itself carry a forwarded `daticert.xml`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PecParts {
    pub postacert: Option<usize>,
    pub daticert: Option<usize>,
    pub text: Option<usize>,
    pub html: Option<usize>,
}

/// The attachment name of a part, trimmed of quotes and white space, as
/// providers quote it inconsistently.
pub(crate) fn part_name<'a>(part: &'a MessagePart<'_>) -> Option<&'a str> {
    part.attachment_name()
        .map(|n| n.trim().trim_matches('"').trim())
        .filter(|n| !n.is_empty())
}

fn content_type_is(part: &MessagePart<'_>, ctype: &str, subtypes: &[&str]) -> bool {
    part.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case(ctype)
            && ct
                .subtype()
                .is_some_and(|s| subtypes.iter().any(|want| s.eq_ignore_ascii_case(want)))
    })
}

/// Locates `postacert.eml`, `daticert.xml` and the human text.
///
/// Names are matched case-insensitively first (the spec's rule: content types
/// vary between providers, `daticert.xml` arrives as `application/xml`,
/// `text/xml` or `application/octet-stream`). Only when no part is so named
/// do we fall back on the content: an unnamed `message/rfc822` part is the
/// original, an unnamed XML part whose body has a `<postacert` root is the
/// daticert.
pub(crate) fn find_pec_parts(msg: &Message<'_>) -> PecParts {
    let mut found = PecParts::default();
    let mut fallback_original = None;
    let mut fallback_daticert = None;
    for (idx, part) in msg.parts.iter().enumerate() {
        if matches!(part.body, PartType::Multipart(_)) {
            continue;
        }
        let name = part_name(part);
        if let Some(name) = name {
            if name.eq_ignore_ascii_case("postacert.eml") && found.postacert.is_none() {
                found.postacert = Some(idx);
                continue;
            }
            if name.eq_ignore_ascii_case("daticert.xml") && found.daticert.is_none() {
                found.daticert = Some(idx);
                continue;
            }
        }
        match &part.body {
            PartType::Message(_) if name.is_none() && fallback_original.is_none() => {
                fallback_original = Some(idx);
            }
            PartType::Text(_) if found.text.is_none() && name.is_none() => {
                found.text = Some(idx);
            }
            PartType::Html(_) if found.html.is_none() && name.is_none() => {
                found.html = Some(idx);
            }
            _ => {}
        }
        if fallback_daticert.is_none()
            && (content_type_is(part, "application", &["xml", "octet-stream"])
                || content_type_is(part, "text", &["xml"]))
            && looks_like_daticert(&transfer_decoded(msg, part))
        {
            fallback_daticert = Some(idx);
        }
    }
    found.postacert = found.postacert.or(fallback_original);
    found.daticert = found.daticert.or(fallback_daticert);
    found
}

/// True when the first bytes of `xml` open a `postacert` root element.
fn looks_like_daticert(xml: &[u8]) -> bool {
    let head = &xml[..xml.len().min(512)];
    head.windows(b"<postacert".len())
        .any(|w| w.eq_ignore_ascii_case(b"<postacert"))
}

/// The body of a top-level part after transfer decoding but **before** any
/// charset conversion, i.e. the bytes the sender put there.
///
/// `mail-parser` converts `text/*` bodies to UTF-8, which would break an XML
/// document that declares its own encoding, and would make `postacert.eml`
/// not byte-exact; so we decode the raw slice ourselves.
pub(crate) fn transfer_decoded<'a>(msg: &'a Message<'_>, part: &'a MessagePart<'_>) -> Cow<'a, [u8]> {
    if let PartType::Message(nested) = &part.body {
        return Cow::Borrowed(nested.raw_message());
    }
    let raw = msg.raw_message();
    let body = raw
        .get(part.offset_body as usize..part.offset_end as usize)
        .unwrap_or_default();
    match part.encoding {
        Encoding::None => Cow::Borrowed(body),
        // Strict decoders first; if they give up, `mail-parser`'s lenient
        // result (already computed while parsing) is the best we have.
        Encoding::Base64 => base64_decode(body).map_or(Cow::Borrowed(part.contents()), Cow::Owned),
        Encoding::QuotedPrintable => quoted_printable_decode(body)
            .map_or(Cow::Borrowed(part.contents()), Cow::Owned),
    }
}
