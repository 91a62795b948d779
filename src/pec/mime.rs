//! A small MIME walker shared by classification, unwrapping and signature
//! checking, built on `mail-parser`'s header parser.
//!
//! Why not `mail-parser`'s full message parse: it decodes every body, and in
//! a PEC message most bytes are the base64 signature and the original's
//! attachments, which classification never looks at (profiling showed base64
//! decoding as the largest cost). This walker splits multiparts on raw
//! bytes, parses only part headers, never descends into the original message
//! (`message/rfc822`), and decodes only the parts asked for. One walker for
//! all three uses also means they cannot disagree on where a part starts or
//! ends: the signed bytes, the daticert the classifier read and the
//! `postacert.eml` the user gets are cut by the same code.

use std::borrow::Cow;
use std::sync::LazyLock;

use mail_parser::decoders::base64::base64_decode;
use mail_parser::decoders::quoted_printable::quoted_printable_decode;
use mail_parser::{HeaderName, Message, MessageParser, MessagePart, MimeHeaders};

/// One parser for the whole process: building it allocates a header table.
///
/// Only MIME headers (needed to walk the body) and `Subject` (RFC 2047
/// decoding) are parsed; every other header we read from its raw bytes, which
/// is both faster and independent of `mail-parser`'s idea of a valid
/// Message-ID or address.
static PARSER: LazyLock<MessageParser> =
    LazyLock::new(|| MessageParser::new().with_mime_headers().header_text(HeaderName::Subject));

/// Deepest multipart nesting followed. PEC messages nest 3 levels
/// (signed / mixed / alternative); deeper structure is not PEC's.
const MAX_DEPTH: usize = 8;

/// Most parts examined in one message. A PEC message has fewer than ten;
/// the bound keeps a message of 100k empty parts from costing 100k header
/// parses.
const MAX_PARTS: usize = 256;

/// Parses a whole message with `mail-parser` (bodies decoded): used only
/// where the decoded content is wanted (human text, original's attachments).
pub(crate) fn parse(raw: &[u8]) -> Option<Parsed<'_>> {
    PARSER.parse(raw).map(Parsed)
}

/// A message parsed whole (bodies decoded), with mail-parser's defaults.
/// Every full parse of bytes from outside goes through this or
/// [`parse`]: see [`Parsed`].
pub fn parse_full(raw: &[u8]) -> Option<Parsed<'_>> {
    MessageParser::default().parse(raw).map(Parsed)
}

/// A parsed message that is dropped without recursion. mail-parser nests a
/// `message/rfc822` part's message inside its part, and dropping that
/// recurses once per level: 20,000 nested messages (a few hundred KB of
/// headers) overflow a thread's stack and abort the whole process.
pub struct Parsed<'a>(Message<'a>);

impl<'a> std::ops::Deref for Parsed<'a> {
    type Target = Message<'a>;

    fn deref(&self) -> &Message<'a> {
        &self.0
    }
}

impl Drop for Parsed<'_> {
    fn drop(&mut self) {
        let mut stack = vec![std::mem::take(&mut self.0)];
        while let Some(mut m) = stack.pop() {
            for p in m.parts.iter_mut() {
                if let mail_parser::PartType::Message(inner) = &mut p.body {
                    stack.push(std::mem::take(inner));
                }
            }
            // `m` now holds no nested message: its drop is shallow.
        }
    }
}

/// A MIME entity: its parsed headers and its raw (transfer-encoded) body.
pub(crate) struct Entity<'a> {
    /// The header block as parsed by `mail-parser` (body parsing skipped);
    /// a default (empty) part for an entity without headers.
    pub headers: MessagePart<'a>,
    /// The bytes the header offsets refer to (the entity itself).
    pub raw: &'a [u8],
    /// The body, from after the blank line to the end of the entity.
    pub body: &'a [u8],
}

impl<'a> Entity<'a> {
    /// Parses the headers of `raw` and locates its body. An entity without
    /// headers is all body (RFC 2045 defaults apply).
    pub fn parse(raw: &'a [u8]) -> Entity<'a> {
        let headers = PARSER.parse_headers(raw).and_then(|m| m.parts.into_iter().next()).unwrap_or_default();
        let body = raw.get(body_offset(raw)..).unwrap_or_default();
        Entity { headers, raw, body }
    }

    /// True when not even one header was found (not an email at all).
    pub fn has_headers(&self) -> bool {
        !self.headers.headers.is_empty()
    }

    /// All values of a header, matched case-insensitively, unfolded and
    /// trimmed, in order of appearance.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .headers
            .iter()
            .filter(|h| h.name().eq_ignore_ascii_case(name))
            .filter_map(|h| self.raw.get(h.offset_start() as usize..h.offset_end() as usize))
            .map(unfold)
            .collect()
    }

    /// The first value of a header (see [`Entity::header_values`]).
    pub fn header_value(&self, name: &str) -> Option<String> {
        self.header_values(name).into_iter().next()
    }

    /// The decoded subject (RFC 2047 handled by `mail-parser`).
    pub fn subject(&self) -> Option<String> {
        self.headers
            .headers
            .iter()
            .find(|h| h.name == HeaderName::Subject)
            .and_then(|h| h.value().as_text())
            .map(|s| s.trim().to_string())
    }

    /// Lower-case `type/subtype`, `text/plain` when absent (RFC 2045 §5.2).
    pub fn mime_type(&self) -> (String, String) {
        match self.headers.content_type() {
            Some(ct) => (ct.ctype().to_ascii_lowercase(), ct.subtype().unwrap_or_default().to_ascii_lowercase()),
            None => ("text".into(), "plain".into()),
        }
    }

    /// A `Content-Type` parameter.
    pub fn content_type_param(&self, name: &str) -> Option<&str> {
        self.headers.content_type().and_then(|ct| ct.attribute(name))
    }

    /// The attachment name (`Content-Disposition` filename or `Content-Type`
    /// name), trimmed of quotes and white space, as providers quote it
    /// inconsistently.
    pub fn name(&self) -> Option<&str> {
        self.headers.attachment_name().map(|n| n.trim().trim_matches('"').trim()).filter(|n| !n.is_empty())
    }

    /// The body after transfer decoding, before any charset conversion: the
    /// bytes the sender put there (byte-exact for `postacert.eml`, and an
    /// XML document keeps the encoding its declaration names).
    pub fn decoded(&self) -> Cow<'a, [u8]> {
        let cte = self.headers.content_transfer_encoding().map(|c| c.trim().to_ascii_lowercase());
        match cte.as_deref() {
            Some("base64") => Cow::Owned(decode_base64_body(self.body)),
            Some("quoted-printable") => quoted_printable_decode(self.body).map_or(Cow::Borrowed(self.body), Cow::Owned),
            _ => Cow::Borrowed(self.body),
        }
    }
}

/// A base64 body decoded: its lines joined ([`base64_alphabet`]) and
/// decoded at once when that is well-formed base64 (nearly always: a
/// notice's 200 KB PDF decodes several times faster so), else byte by
/// byte as `mail-parser` reads it, else leniently.
pub(crate) fn decode_base64_body(body: &[u8]) -> Vec<u8> {
    decode_base64_joined(&base64_alphabet(body))
        .or_else(|| base64_decode(body))
        .unwrap_or_else(|| lenient_base64(body))
}

/// [`base64_alphabet`]'s output decoded, if it is well-formed base64
/// (padding optional).
pub(crate) fn decode_base64_joined(joined: &[u8]) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::Engine;
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    ENGINE.decode(joined).ok()
}

/// A base64 body without its line ends and the spaces around its lines,
/// in one buffer.
pub(crate) fn base64_alphabet(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', body).chain([body.len()]) {
        out.extend_from_slice(body.get(start..end).unwrap_or_default().trim_ascii());
        start = end + 1;
    }
    out
}

/// Base64 with every byte outside the alphabet dropped: what MUAs do with
/// stray characters, and better than losing the part.
fn lenient_base64(body: &[u8]) -> Vec<u8> {
    let clean: Vec<u8> =
        body.iter().copied().filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')).collect();
    base64_decode(&clean).unwrap_or_default()
}

/// Position of the first `\n` in `hay`.
///
/// Splitting on line ends is the classifier's hottest loop (most bytes of a
/// PEC message are base64 lines that are skipped), so this tests eight bytes
/// at a time ("has a zero byte" bit trick on `chunk ^ b'\n' * 0x01…01`)
/// before looking at single bytes.
pub(crate) fn find_newline(hay: &[u8]) -> Option<usize> {
    const LO: u64 = u64::from_ne_bytes([0x01; 8]);
    const HI: u64 = u64::from_ne_bytes([0x80; 8]);
    const NL: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut i = 0;
    while let Some(chunk) = hay.get(i..i + 8).and_then(|c| <[u8; 8]>::try_from(c).ok()) {
        let x = u64::from_ne_bytes(chunk) ^ NL;
        if x.wrapping_sub(LO) & !x & HI != 0 {
            break;
        }
        i += 8;
    }
    hay.get(i..)?.iter().position(|&b| b == b'\n').map(|p| i + p)
}

/// End of the line starting at `pos` (index of its `\n`, or `len`).
fn line_end(hay: &[u8], pos: usize) -> usize {
    hay.get(pos..).and_then(find_newline).map_or(hay.len(), |i| pos + i)
}

/// Offset of the body: after the first empty (or white-space-only) line.
/// A message with no empty line is all headers.
fn body_offset(raw: &[u8]) -> usize {
    let mut pos = 0;
    while pos < raw.len() {
        let end = line_end(raw, pos);
        if raw[pos..end].iter().all(|b| b.is_ascii_whitespace()) {
            return (end + 1).min(raw.len());
        }
        pos = end + 1;
    }
    raw.len()
}

/// Undoes RFC 5322 folding (CRLF or bare LF followed by white space) and
/// trims; invalid UTF-8 is replaced rather than rejected, because these
/// values are only compared with ASCII tokens.
pub(crate) fn unfold(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let out: String = text.chars().filter(|&c| c != '\r' && c != '\n').collect();
    out.trim().to_string()
}

/// Splits a multipart body into its parts' raw bytes (RFC 2046 §5.1.1): a
/// part runs from after its delimiter line to the line break before the next
/// delimiter, which belongs to the delimiter. The preamble and epilogue are
/// dropped. A missing close delimiter ends the last part at the end of input.
pub(crate) fn split_multipart<'a>(body: &'a [u8], boundary: &str) -> Vec<&'a [u8]> {
    let delimiter = format!("--{boundary}");
    // Most of a PEC message is base64 lines between delimiters: look for the
    // delimiter itself rather than at every line (a quarter of the cost of
    // indexing a receipt that carries a 200 KB attachment was this loop).
    let finder = memchr::memmem::Finder::new(delimiter.as_bytes());
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    let mut from = 0;
    while parts.len() < MAX_PARTS {
        let Some(found) = body.get(from..).and_then(|rest| finder.find(rest)) else { break };
        let pos = from + found;
        let line_end = line_end(body, pos);
        from = line_end + 1;
        // A delimiter starts a line.
        if pos > 0 && body[pos - 1] != b'\n' {
            continue;
        }
        let rest = &body[pos + delimiter.len()..line_end];
        let (closing, rest) = match rest.strip_prefix(b"--") {
            Some(rest) => (true, rest),
            None => (false, rest),
        };
        if !rest.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        if let Some(s) = start {
            let mut end = pos;
            if end > s && body[end - 1] == b'\n' {
                end -= 1;
                if end > s && body[end - 1] == b'\r' {
                    end -= 1;
                }
            }
            parts.push(&body[s..end.max(s)]);
        }
        if closing {
            return parts;
        }
        start = Some((line_end + 1).min(body.len()));
    }
    if let Some(s) = start {
        if parts.len() < MAX_PARTS && s < body.len() {
            parts.push(&body[s..]);
        }
    }
    parts
}

/// The leaf entities of a message (multiparts flattened, in document
/// order), not descending into `message/*` parts: an original may itself
/// carry a forwarded `daticert.xml`, which is not ours.
pub(crate) fn leaves<'a>(top: &Entity<'a>) -> Vec<Entity<'a>> {
    let mut out = Vec::new();
    let mut seen = 0;
    // Entities still to visit, reversed so that popping keeps document order.
    let mut stack: Vec<(Entity<'a>, usize)> =
        vec![(Entity { headers: top.headers.clone(), raw: top.raw, body: top.body }, 0)];
    while let Some((e, depth)) = stack.pop() {
        let boundary = match e.mime_type().0.as_str() {
            "multipart" if depth < MAX_DEPTH => e.content_type_param("boundary").map(str::to_string),
            _ => None,
        };
        let Some(boundary) = boundary else {
            out.push(e);
            continue;
        };
        let children: Vec<Entity<'a>> = split_multipart(e.body, &boundary)
            .into_iter()
            .take(MAX_PARTS.saturating_sub(seen))
            .map(Entity::parse)
            .collect();
        seen += children.len();
        stack.extend(children.into_iter().rev().map(|c| (c, depth + 1)));
    }
    out
}

/// Where the PEC-specific parts are among a message's leaves.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PecParts {
    pub postacert: Option<usize>,
    pub daticert: Option<usize>,
    pub text: Option<usize>,
    pub html: Option<usize>,
}

/// Locates `postacert.eml`, `daticert.xml` and the human text among leaves.
///
/// Names are matched case-insensitively first (the spec's rule: content types
/// vary between providers, `daticert.xml` arrives as `application/xml`,
/// `text/xml` or `application/octet-stream`). Only when no part is so named
/// do we fall back on the content: an unnamed `message/rfc822` part is the
/// original, an unnamed XML part whose body has a `<postacert` root is the
/// daticert.
pub(crate) fn find_pec_parts(leaves: &[Entity<'_>]) -> PecParts {
    let mut found = PecParts::default();
    let mut fallback_original = None;
    let mut fallback_daticert = None;
    for (idx, part) in leaves.iter().enumerate() {
        let name = part.name();
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
        let (ctype, subtype) = part.mime_type();
        match (ctype.as_str(), subtype.as_str()) {
            ("message", "rfc822") if name.is_none() && fallback_original.is_none() => {
                fallback_original = Some(idx);
            }
            ("text", "plain") if name.is_none() && found.text.is_none() => found.text = Some(idx),
            ("text", "html") if name.is_none() && found.html.is_none() => found.html = Some(idx),
            ("application", "xml" | "octet-stream") | ("text", "xml")
                if fallback_daticert.is_none() && looks_like_daticert(&part.decoded()) =>
            {
                fallback_daticert = Some(idx);
            }
            _ => {}
        }
    }
    found.postacert = found.postacert.or(fallback_original);
    found.daticert = found.daticert.or(fallback_daticert);
    found
}

/// True when the first bytes of `xml` open a `postacert` root element.
fn looks_like_daticert(xml: &[u8]) -> bool {
    let head = &xml[..xml.len().min(512)];
    head.windows(b"<postacert".len()).any(|w| w.eq_ignore_ascii_case(b"<postacert"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_bodies_decode_as_mail_parser_reads_them() {
        use base64::Engine;
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for len in [0usize, 1, 2, 3, 57, 58, 1000, 200_003] {
            let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
            for (width, eol) in [(76, "\r\n"), (64, "\n"), (72, " \r\n")] {
                let mut body = Vec::new();
                for line in b64.as_bytes().chunks(width) {
                    body.extend_from_slice(line);
                    body.extend_from_slice(eol.as_bytes());
                }
                assert_eq!(decode_base64_body(&body), data, "{len} bytes, {width} {eol:?}");
                assert_eq!(base64_decode(&body).as_deref(), Some(data.as_slice()), "mail-parser agrees");
            }
            let unpadded = b64.trim_end_matches('=');
            assert_eq!(decode_base64_body(unpadded.as_bytes()), data, "padding is optional");
        }
        // Not well-formed: read as before (mail-parser, then leniently),
        // never an error.
        for odd in [&b"QUJD\r\n=\r\nREVG"[..], b"QU JD", b"QUJD*REVG", b"====", b"Q"] {
            let want = base64_decode(odd).unwrap_or_else(|| lenient_base64(odd));
            assert_eq!(decode_base64_body(odd), want, "{:?}", String::from_utf8_lossy(odd));
        }
    }

    #[test]
    fn split_parts() {
        let body = b"pre\r\n--b\r\nX: 1\r\n\r\nbody\r\n--b \r\n\r\nsecond\n--b--\r\nepilogue";
        assert_eq!(split_multipart(body, "b"), vec![&b"X: 1\r\n\r\nbody"[..], &b"\r\nsecond"[..]]);
        assert!(split_multipart(body, "c").is_empty());
        // Unterminated: the last part runs to the end.
        assert_eq!(split_multipart(b"--b\nA\n--b\nB", "b"), vec![&b"A"[..], &b"B"[..]]);
        // A delimiter-like line with more text is content.
        assert_eq!(split_multipart(b"--b\n--bx\n--b--", "b"), vec![&b"--bx"[..]]);
    }

    /// The delimiter search gives what a line-by-line reading of RFC 2046
    /// gives, on inputs made of delimiters, near-delimiters and text.
    #[test]
    fn split_matches_a_line_by_line_reading() {
        fn by_lines<'a>(body: &'a [u8], boundary: &str) -> Vec<&'a [u8]> {
            let delimiter = format!("--{boundary}");
            let (mut parts, mut start, mut pos) = (Vec::new(), None, 0);
            while pos < body.len() {
                let end = line_end(body, pos);
                let line = &body[pos..end];
                let closing = line.strip_prefix(delimiter.as_bytes()).and_then(|rest| {
                    let (c, rest) = rest.strip_prefix(b"--").map_or((false, rest), |r| (true, r));
                    rest.iter().all(|b| b.is_ascii_whitespace()).then_some(c)
                });
                if let Some(closing) = closing {
                    if let Some(s) = start {
                        let mut e = pos;
                        if e > s && body[e - 1] == b'\n' {
                            e -= 1;
                            if e > s && body[e - 1] == b'\r' {
                                e -= 1;
                            }
                        }
                        parts.push(&body[s..e.max(s)]);
                    }
                    if closing {
                        return parts;
                    }
                    start = Some((end + 1).min(body.len()));
                }
                pos = end + 1;
            }
            if let Some(s) = start.filter(|&s| s < body.len()) {
                parts.push(&body[s..]);
            }
            parts
        }
        let pieces: [&[u8]; 10] =
            [b"--b", b"--b--", b"x--b", b"--bx", b"\r\n", b"\n", b" ", b"testo", b"--b \t", b"\r"];
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            let mut body = Vec::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut y = x;
            for _ in 0..(x % 12) {
                body.extend_from_slice(pieces[(y % 10) as usize]);
                y /= 10;
            }
            assert_eq!(split_multipart(&body, "b"), by_lines(&body, "b"), "{:?}", String::from_utf8_lossy(&body));
        }
    }

    #[test]
    fn body_after_blank_line() {
        assert_eq!(body_offset(b"A: 1\r\nB: 2\r\n\r\nbody"), 14);
        assert_eq!(body_offset(b"A: 1\n\nbody"), 6);
        assert_eq!(body_offset(b"\r\nbody"), 2);
        assert_eq!(body_offset(b"A: 1"), 4);
    }

    #[test]
    fn newline_search_matches_naive() {
        let text = b"0123456789abcdef\nxyz\n0123456789abcdefghij";
        for start in 0..text.len() {
            let hay = &text[start..];
            assert_eq!(find_newline(hay), hay.iter().position(|&b| b == b'\n'), "{start}");
        }
        assert_eq!(find_newline(&[0xFF; 40]), None);
        assert_eq!(find_newline(&[0x8A; 17]), None);
    }
}
