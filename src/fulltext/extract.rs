//! What the full-text index reads of a message: its subject, sender and
//! recipients, its other header fields' values (for IMAP `SEARCH TEXT`,
//! which is "the header or body", RFC 3501 §6.4.4), and the text of
//! everything a person would read in it: text
//! parts (HTML as text), for a certified envelope the original message
//! inside (`postacert.eml`) and its attachments, the `daticert.xml`
//! fields, PDF attachments' text, text attachments, and the document
//! inside a CAdES `.p7m`. Pure: bytes in, text out, no I/O.
//!
//! Hostile attachments are bounded: a PDF larger than [`Limits::pdf_bytes`]
//! is skipped, at most [`Limits::pdf_pages`] pages are read, each page's
//! content may inflate to [`Limits::pdf_page_inflated`] bytes (lopdf also
//! bounds object streams while loading), a PDF gets at most
//! [`Limits::pdf_time`], and the text kept per message is at most
//! [`Limits::text_bytes`]. A parser panic is caught. What was skipped is
//! listed in [`Extracted::skipped`] for the indexer to log.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mail_parser::{HeaderValue, Message, MimeHeaders};

use crate::pec::base64_alphabet;
use crate::pec::Entity;

/// Bounds on the work one message may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub text_bytes: usize,
    /// Of the other header fields' values ([`Extracted::headers`]).
    pub header_bytes: usize,
    pub pdf_bytes: usize,
    pub pdf_pages: usize,
    pub pdf_page_inflated: usize,
    pub pdf_time: Duration,
    /// Messages inside messages (an envelope's `postacert.eml` is one).
    pub depth: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            text_bytes: 1 << 20,
            header_bytes: 64 << 10,
            pdf_bytes: 25 << 20,
            pdf_pages: 200,
            pdf_page_inflated: 4 << 20,
            pdf_time: Duration::from_secs(5),
            depth: 4,
        }
    }
}

/// A message's searchable text.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// Subject (the original's too, for an envelope).
    pub subject: String,
    /// Sender names and addresses.
    pub from: String,
    /// Recipients (To, Cc) names and addresses.
    pub to: String,
    /// Everything else a person reads: text parts, attachments, daticert.
    pub body: String,
    /// The values of the message's other header fields (`X-Ricevuta`,
    /// `Message-ID`, `Reply-To`, `X-Header` …), one a line: see
    /// [`other_headers`].
    pub headers: String,
    /// Attachments left out, each with why (for the log).
    pub skipped: Vec<String>,
}

/// Extract `raw`'s text within `limits`.
///
/// Only the header blocks are parsed; a part's body is decoded only when
/// its text is read (a text part, or an attachment whose kind has text:
/// [`Kind`]). A PDF's text is looked up by its still-encoded bytes
/// ([`PdfTexts`]) before anything is decoded: a delivery receipt carries
/// the whole notice whose copy in Sent was read a moment before, and
/// decoding its base64 again was a quarter of the daemon's CPU while a
/// campaign was sent. Signatures, images and archives are never decoded.
pub fn extract(raw: &[u8], limits: &Limits) -> Extracted {
    let mut out = Extracted::default();
    let Some(m) = mail_parser::MessageParser::default().parse_headers(raw) else {
        out.body = String::from_utf8_lossy(&raw[..raw.len().min(limits.text_bytes)]).into_owned();
        return out;
    };
    out.subject = m.subject().unwrap_or_default().to_string();
    out.from = addresses(m.from());
    out.to = [addresses(m.to()), addresses(m.cc())].join(" ").trim().to_string();
    out.headers = other_headers(&m, raw, limits.header_bytes);
    let mut w = Walk { limits, out: &mut out, started: Instant::now() };
    w.message(raw, 0);
    out
}

/// Header fields with a field of their own in the index, and those that
/// hold encoded bytes nobody searches for (signatures): not in
/// [`other_headers`].
const OWN_OR_OPAQUE: [&str; 7] =
    ["subject", "from", "to", "cc", "dkim-signature", "x-google-dkim-signature", "authentication-results"];

/// The values of `m`'s own header fields but [`OWN_OR_OPAQUE`] and
/// `ARC-*`, one a line, at most `room` bytes: unstructured ones decoded
/// (encoded words), the others as written in `raw`.
fn other_headers(m: &Message<'_>, raw: &[u8], room: usize) -> String {
    let mut out = String::new();
    for h in m.headers() {
        let name = h.name.as_str().to_ascii_lowercase();
        if OWN_OR_OPAQUE.contains(&name.as_str()) || name.starts_with("arc-") {
            continue;
        }
        match &h.value {
            HeaderValue::Text(t) => out.push_str(t),
            HeaderValue::TextList(l) => out.push_str(&l.join(" ")),
            _ => {
                let value = raw.get(h.offset_start as usize..h.offset_end as usize).unwrap_or_default();
                out.push_str(String::from_utf8_lossy(value).trim());
            }
        }
        out.push('\n');
        if out.len() >= room {
            let mut cut = room;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            break;
        }
    }
    out
}

fn addresses(a: Option<&mail_parser::Address<'_>>) -> String {
    let Some(a) = a else { return String::new() };
    a.iter()
        .map(|x| format!("{} {}", x.name().unwrap_or_default(), x.address().unwrap_or_default()).trim().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

struct Walk<'a> {
    limits: &'a Limits,
    out: &'a mut Extracted,
    started: Instant,
}

impl Walk<'_> {
    fn push(&mut self, text: &str) {
        let room = self.limits.text_bytes.saturating_sub(self.out.body.len());
        if room == 0 {
            return;
        }
        let mut cut = text.len().min(room);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        self.out.body.push_str(&text[..cut]);
        self.out.body.push('\n');
    }

    /// The body of the message `raw` (its leaves, in document order).
    fn message(&mut self, raw: &[u8], depth: usize) {
        let top = Entity::parse(raw);
        for leaf in crate::pec::leaves(&top) {
            self.leaf(&leaf, depth);
        }
    }

    fn leaf(&mut self, e: &Entity<'_>, depth: usize) {
        let name = e.name().unwrap_or_default().to_string();
        let (ctype, subtype) = e.mime_type();
        match (ctype.as_str(), subtype.as_str()) {
            // Nested deeper than the MIME walker follows: nothing to read.
            ("multipart", _) => {}
            ("message", "rfc822" | "global") => self.nested(&name, &e.decoded(), depth),
            ("text", "html") if name.is_empty() => self.push(&mail_parser::decoders::html::html_to_text(&text_of(e))),
            ("text", _) if name.is_empty() => self.push(&text_of(e)),
            _ => self.attachment(&name, &format!("{ctype}/{subtype}"), Src::Part(e), depth),
        }
    }

    /// A message inside this one (the original inside an envelope): its
    /// headers are what people remember of it, then its body.
    fn nested(&mut self, name: &str, raw: &[u8], depth: usize) {
        if depth >= self.limits.depth {
            self.out.skipped.push(format!("{name}: nested deeper than {}", self.limits.depth));
            return;
        }
        let Some(inner) = mail_parser::MessageParser::default().parse_headers(raw) else {
            self.out.skipped.push(format!("{name}: not a readable message"));
            return;
        };
        let header =
            format!("{} {} {}", inner.subject().unwrap_or_default(), addresses(inner.from()), addresses(inner.to()));
        self.push(&header);
        if depth == 0 && self.out.subject.len() < 2000 {
            if let Some(s) = inner.subject() {
                self.out.subject.push('\n');
                self.out.subject.push_str(s);
            }
        }
        self.message(raw, depth + 1);
    }

    /// An attachment's text, by its name (what people see) and type.
    fn attachment(&mut self, name: &str, ct: &str, src: Src<'_, '_>, depth: usize) {
        if !name.is_empty() {
            self.push(name);
        }
        let Some(kind) = Kind::of(name, ct) else { return };
        match kind {
            Kind::P7m => match p7m_content(&src.bytes()) {
                Some(inner) => {
                    let inner_name = name.get(..name.len().saturating_sub(4)).unwrap_or_default();
                    self.attachment(inner_name, "", Src::Decoded(&inner), depth)
                }
                None => self.out.skipped.push(format!("{name}: not a readable CAdES/PKCS#7 envelope")),
            },
            Kind::Pdf => match self.pdf(&src) {
                Ok(t) => self.push(&t),
                Err(why) => self.out.skipped.push(format!("{name}: {why}")),
            },
            Kind::Xml => self.push(&xml_text(&String::from_utf8_lossy(&src.bytes()))),
            Kind::Eml => self.nested(name, &src.bytes(), depth),
            Kind::Text => match src {
                Src::Part(e) => self.push(&text_of(e)),
                Src::Decoded(b) => self.push(&String::from_utf8_lossy(b)),
            },
            Kind::Html => self.push(&mail_parser::decoders::html::html_to_text(&String::from_utf8_lossy(&src.bytes()))),
        }
    }

    /// A PDF's text, within the limits; a parser panic is an error. Read
    /// once for identical bytes seen lately ([`PdfTexts`]), which are
    /// compared before they are decoded.
    fn pdf(&self, src: &Src<'_, '_>) -> Result<String, String> {
        // The limits too: what is read of the same bytes depends on them.
        let l = self.limits;
        let mut h = blake3::Hasher::new();
        let joined = src.key(&mut h);
        h.update(format!("{}/{}/{}/{:?}", l.pdf_bytes, l.pdf_pages, l.pdf_page_inflated, l.pdf_time).as_bytes());
        let key: [u8; 32] = h.finalize().into();
        if let Some(r) = PdfTexts::get(&key) {
            return r;
        }
        let bytes = match joined.as_deref().and_then(crate::pec::decode_base64_joined) {
            Some(b) => Cow::Owned(b),
            None => src.bytes(),
        };
        let r = if bytes.len() > l.pdf_bytes {
            Err(format!("PDF of {} bytes, over the {} limit", bytes.len(), l.pdf_bytes))
        } else {
            let limits = *l;
            let started = self.started;
            std::panic::catch_unwind(move || pdf_text(&bytes, &limits, started))
                .unwrap_or_else(|_| Err("the PDF parser failed on it (a panic, caught)".into()))
        };
        PdfTexts::put(key, &r);
        r
    }
}

/// The attachments whose text is read, by name or type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    P7m,
    Pdf,
    Xml,
    Eml,
    Text,
    Html,
}

impl Kind {
    fn of(name: &str, ct: &str) -> Option<Kind> {
        let lower = name.to_ascii_lowercase();
        Some(if lower.ends_with(".p7m") || ct == "application/pkcs7-mime" || ct == "application/x-pkcs7-mime" {
            Kind::P7m
        } else if lower.ends_with(".pdf") || ct == "application/pdf" {
            Kind::Pdf
        } else if lower.ends_with(".xml") || ct.ends_with("/xml") {
            Kind::Xml
        } else if lower.ends_with(".eml") || ct == "message/rfc822" {
            Kind::Eml
        } else if lower.ends_with(".txt") || lower.ends_with(".csv") || ct.starts_with("text/") && ct != "text/html" {
            Kind::Text
        } else if lower.ends_with(".html") || lower.ends_with(".htm") || ct == "text/html" {
            Kind::Html
        } else {
            return None;
        })
    }
}

/// An attachment's bytes: a MIME part, decoded only when read, or bytes
/// already decoded (the document inside a `.p7m`).
enum Src<'e, 'a> {
    Part(&'e Entity<'a>),
    Decoded(&'e [u8]),
}

impl Src<'_, '_> {
    fn bytes(&self) -> Cow<'_, [u8]> {
        match self {
            Src::Part(e) => e.decoded(),
            Src::Decoded(b) => Cow::Borrowed(b),
        }
    }

    /// What identifies the bytes: a part's transfer encoding and encoded
    /// body, so that the same attachment in another message is known
    /// without decoding it.
    ///
    /// Returns a base64 part's joined alphabet, which decodes it (read once
    /// for both).
    fn key(&self, h: &mut blake3::Hasher) -> Option<Vec<u8>> {
        match self {
            Src::Part(e) => {
                let cte = e.headers.content_transfer_encoding().unwrap_or_default().trim().to_ascii_lowercase();
                h.update(b"part\0");
                h.update(cte.as_bytes());
                h.update(b"\0");
                if cte == "base64" {
                    // The same attachment travels with other line ends and
                    // line lengths (a provider's copy of a notice inside its
                    // delivery receipt): the key is the base64 alphabet's
                    // characters alone.
                    let joined = base64_alphabet(e.body);
                    h.update(&joined);
                    return Some(joined);
                }
                h.update(e.body);
                None
            }
            Src::Decoded(b) => {
                h.update(b"decoded\0");
                h.update(b);
                None
            }
        }
    }
}

/// A text part's text: transfer-decoded, then from its charset (as
/// `mail-parser` reads it) or as UTF-8.
fn text_of(e: &Entity<'_>) -> String {
    let bytes = e.decoded();
    match e
        .content_type_param("charset")
        .and_then(|c| mail_parser::decoders::charsets::map::charset_decoder(c.as_bytes()))
    {
        Some(decode) => decode(&bytes),
        None => String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// The text of the PDFs read lately, by the BLAKE3 of their bytes, the
/// newest [`PDF_TEXTS_BYTES`] of it. The same PDF comes back within
/// seconds: a campaign notice's attachment is read from its copy in Sent
/// and again from its delivery receipt, which carries the whole notice;
/// reading it (`lopdf`) was a tenth of the daemon's CPU while sending.
struct PdfTexts {
    map: lru::LruCache<[u8; 32], Result<Arc<str>, Arc<str>>>,
    bytes: usize,
}

/// How much text [`PdfTexts`] keeps, each entry counted with
/// [`PDF_TEXT_ENTRY`] more for its key and bookkeeping.
const PDF_TEXTS_BYTES: usize = 4 << 20;
/// What an entry of [`PdfTexts`] costs beyond its text: a notice's PDF
/// with one line of text is mostly this.
const PDF_TEXT_ENTRY: usize = 128;

static PDF_TEXTS: LazyLock<Mutex<PdfTexts>> =
    LazyLock::new(|| Mutex::new(PdfTexts { map: lru::LruCache::unbounded(), bytes: 0 }));

impl PdfTexts {
    fn get(key: &[u8; 32]) -> Option<Result<String, String>> {
        let mut t = PDF_TEXTS.lock().unwrap_or_else(PoisonError::into_inner);
        t.map.get(key).map(|r| r.as_ref().map(|s| s.to_string()).map_err(|e| e.to_string()))
    }

    fn put(key: [u8; 32], r: &Result<String, String>) {
        let v: Result<Arc<str>, Arc<str>> = match r {
            Ok(t) => Ok(t.as_str().into()),
            Err(e) => Err(e.as_str().into()),
        };
        let len = |v: &Result<Arc<str>, Arc<str>>| match v {
            Ok(s) | Err(s) => s.len() + PDF_TEXT_ENTRY,
        };
        if len(&v) > PDF_TEXTS_BYTES / 4 {
            return;
        }
        let mut t = PDF_TEXTS.lock().unwrap_or_else(PoisonError::into_inner);
        t.bytes += len(&v);
        if let Some(old) = t.map.put(key, v) {
            t.bytes -= len(&old);
        }
        while t.bytes > PDF_TEXTS_BYTES {
            match t.map.pop_lru() {
                Some((_, old)) => t.bytes -= len(&old),
                None => break,
            }
        }
    }
}

#[cfg(not(feature = "fulltext"))]
fn pdf_text(_bytes: &[u8], _limits: &Limits, _started: Instant) -> Result<String, String> {
    Err("this pecgate was built without PDF text (cargo feature `fulltext`)".into())
}

#[cfg(feature = "fulltext")]
fn pdf_text(bytes: &[u8], limits: &Limits, started: Instant) -> Result<String, String> {
    let doc = lopdf::Document::load_mem(bytes).map_err(|e| format!("not a readable PDF: {e}"))?;
    if doc.is_encrypted() {
        return Err("encrypted PDF".into());
    }
    let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
    let mut text = String::new();
    let mut notes = Vec::new();
    if pages.len() > limits.pdf_pages {
        notes.push(format!("{} pages: only the first {} read", pages.len(), limits.pdf_pages));
    }
    for p in pages.iter().take(limits.pdf_pages) {
        if started.elapsed() > limits.pdf_time {
            notes.push(format!("stopped at page {p}: over {:?}", limits.pdf_time));
            break;
        }
        match doc.extract_text_with_limit(&[*p], limits.pdf_page_inflated) {
            Ok(t) => text.push_str(&t),
            Err(e) => notes.push(format!("page {p}: {e}")),
        }
        if text.len() > limits.text_bytes {
            break;
        }
    }
    if text.trim().is_empty() && !notes.is_empty() {
        return Err(notes.join("; "));
    }
    if !notes.is_empty() {
        tracing::info!(notes = %notes.join("; "), "full-text: a PDF read in part");
    }
    Ok(text)
}

/// The content of a CAdES (`.p7m`) signed envelope, DER or base64 of DER,
/// its signature not checked (the text is for finding, not evidence).
pub fn p7m_content(bytes: &[u8]) -> Option<Vec<u8>> {
    use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
    use openssl::stack::Stack;
    use openssl::x509::store::X509StoreBuilder;
    let der = match Pkcs7::from_der(bytes) {
        Ok(p) => Some(p),
        Err(_) => {
            let clean: Vec<u8> = bytes.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
            openssl::base64::decode_block(std::str::from_utf8(&clean).ok()?).ok().and_then(|d| Pkcs7::from_der(&d).ok())
        }
    }?;
    let certs = Stack::new().ok()?;
    let store = X509StoreBuilder::new().ok()?.build();
    let mut out = Vec::new();
    der.verify(&certs, &store, None, Some(&mut out), Pkcs7Flags::NOVERIFY | Pkcs7Flags::NOSIGS).ok()?;
    Some(out)
}

/// The text of an XML document: its element values and attribute values
/// (daticert's addresses, identifier, times), tags dropped.
pub fn xml_text(xml: &str) -> String {
    let mut out = String::with_capacity(xml.len() / 2);
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Text(t)) => {
                out.push_str(t.xml10_content().trim());
                out.push(' ');
            }
            Ok(quick_xml::events::Event::CData(c)) => {
                out.push_str(c.xml10_content().trim());
                out.push(' ');
            }
            Ok(quick_xml::events::Event::Start(e)) | Ok(quick_xml::events::Event::Empty(e)) => {
                for a in e.attributes().flatten() {
                    out.push_str(&a.value);
                    out.push(' ');
                }
            }
            Ok(quick_xml::events::Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_gives_the_original_message_and_its_attachments() {
        let inner = "From: Ditta Rossi <rossi@pec.ditta.it>\r\nTo: protocollo@pec.comune.it\r\nSubject: Contratto di fornitura\r\n\
                     Content-Type: text/plain; charset=utf-8\r\n\r\nAlleghiamo il contratto firmato perché sia protocollato.\r\n";
        let raw = format!(
            "From: posta-certificata@pec.aruba.it\r\nTo: protocollo@pec.comune.it\r\nSubject: POSTA CERTIFICATA: Contratto di fornitura\r\n\
             MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\n\
             Il giorno 01/06/2026 alle ore 10:00 il messaggio e' stato inviato\r\n--b1\r\nContent-Type: application/xml; name=daticert.xml\r\n\
             Content-Disposition: attachment; filename=daticert.xml\r\n\r\n<postacert tipo=\"posta-certificata\"><dati><identificativo>opec-42</identificativo></dati></postacert>\r\n\
             --b1\r\nContent-Type: message/rfc822; name=postacert.eml\r\nContent-Disposition: attachment; filename=postacert.eml\r\n\r\n{inner}\r\n--b1--\r\n"
        );
        let e = extract(raw.as_bytes(), &Limits::default());
        assert!(e.body.contains("perché sia protocollato"), "{e:?}");
        assert!(e.body.contains("opec-42") && e.body.contains("posta-certificata"), "daticert fields: {e:?}");
        assert!(e.subject.contains("Contratto di fornitura") && e.from.contains("posta-certificata@pec.aruba.it"));
        assert!(e.body.contains("rossi@pec.ditta.it"), "the original's sender: {e:?}");
    }

    /// Parts are decoded as they are read: transfer encodings, charsets,
    /// HTML; a named text attachment is read too; an image is not.
    #[test]
    fn each_part_is_read_in_its_encoding_and_charset() {
        let raw = "From: a@example.it\r\nSubject: prova\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
                   --b\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
                   perch=E9 cos=EC\r\n--b\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n\
                   PHA+PGI+cmFjY29tYW5kYXRhPC9iPjwvcD4=\r\n--b\r\nContent-Type: text/csv; name=elenco.csv\r\n\
                   Content-Transfer-Encoding: base64\r\n\r\nbm9tZTtpbXBvcnRv\r\n--b\r\nContent-Type: image/png; name=logo.png\r\n\
                   Content-Transfer-Encoding: base64\r\n\r\n!!! not base64 !!!\r\n--b--\r\n";
        let e = extract(raw.as_bytes(), &Limits::default());
        assert!(e.body.contains("perché così"), "{e:?}");
        assert!(e.body.contains("raccomandata") && !e.body.contains("<b>"), "{e:?}");
        assert!(e.body.contains("elenco.csv") && e.body.contains("nome;importo"), "{e:?}");
        assert!(e.body.contains("logo.png") && e.skipped.is_empty(), "{e:?}");
    }

    #[test]
    fn hostile_attachments_are_skipped_not_fatal() {
        let limits = Limits { pdf_bytes: 100, ..Limits::default() };
        let mut out = Extracted::default();
        let mut w = Walk { limits: &limits, out: &mut out, started: Instant::now() };
        w.attachment("grande.pdf", "application/pdf", Src::Decoded(&[b'x'; 200]), 0);
        w.attachment("rotto.pdf", "application/pdf", Src::Decoded(b"%PDF-1.4 garbage"), 0);
        w.attachment("falso.pdf.p7m", "", Src::Decoded(b"not pkcs7"), 0);
        assert_eq!(out.skipped.len(), 3, "{:?}", out.skipped);
        assert!(out.skipped[0].contains("over the 100 limit"));
    }

    /// SEARCH TEXT is "the header or body" (RFC 3501 §6.4.4): every other
    /// field's value is kept, decoded, apart from the body; the fields the
    /// index holds apart and signatures are not repeated.
    #[test]
    fn the_other_header_fields_are_kept_apart_from_the_body() {
        let raw = "From: a@example.it\r\nTo: b@example.it\r\nCc: c@example.it\r\nSubject: oggetto\r\n\
                   X-Header: qwertyuiop\r\nX-Riferimento-Message-ID: <opec42@pec.example.it>\r\n\
                   Comments: =?utf-8?q?perch=C3=A9_no?=\r\nDKIM-Signature: v=1; b=QUJDREVGRw==\r\n\
                   ARC-Seal: i=1; b=WFla\r\n\r\ntesto\r\n";
        let e = extract(raw.as_bytes(), &Limits::default());
        assert!(e.headers.contains("qwertyuiop") && !e.body.contains("qwertyuiop"), "{e:?}");
        assert!(e.headers.contains("opec42@pec.example.it"), "{e:?}");
        assert!(e.headers.contains("perché no"), "encoded words decoded: {e:?}");
        for own in ["oggetto", "a@example.it", "b@example.it", "c@example.it", "QUJDREVGRw", "WFla"] {
            assert!(!e.headers.contains(own), "{own}: {e:?}");
        }
        let small = Limits { header_bytes: 12, ..Limits::default() };
        assert!(extract(raw.as_bytes(), &small).headers.len() <= 12);
    }

    #[test]
    fn a_base64_body_is_known_whatever_its_line_ends_and_lengths() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
        let b64 = openssl::base64::encode_block(&data);
        let wrap = |n: usize, end: &str| -> Vec<u8> {
            b64.as_bytes().chunks(n).flat_map(|l| [l, end.as_bytes()].concat()).collect()
        };
        let crlf76 = wrap(76, "\r\n");
        assert_eq!(base64_alphabet(&crlf76), b64.as_bytes());
        assert_eq!(base64_alphabet(&wrap(64, "\n")), base64_alphabet(&crlf76));
        assert_eq!(base64_alphabet(&[crlf76.as_slice(), b"\r\n\r\n"].concat()), b64.as_bytes());
        assert_ne!(base64_alphabet(&wrap(76, "\r\n")[1..]), b64.as_bytes());
    }

    #[test]
    fn pdf_texts_are_kept_for_identical_bytes_and_bounded() {
        let k = [7u8; 32];
        PdfTexts::put(k, &Ok("testo del pdf".into()));
        assert_eq!(PdfTexts::get(&k), Some(Ok("testo del pdf".to_string())));
        PdfTexts::put([8u8; 32], &Err("not a readable PDF".into()));
        assert_eq!(PdfTexts::get(&[8u8; 32]), Some(Err("not a readable PDF".to_string())));
        // Filling it past its bound drops the oldest.
        let big = "x".repeat(PDF_TEXTS_BYTES / 8);
        for i in 0..16u8 {
            PdfTexts::put([100 + i; 32], &Ok(big.clone()));
        }
        assert_eq!(PdfTexts::get(&k), None);
        assert!(PDF_TEXTS.lock().unwrap_or_else(PoisonError::into_inner).bytes <= PDF_TEXTS_BYTES);
    }

    #[test]
    fn the_text_kept_is_bounded() {
        let limits = Limits { text_bytes: 10, ..Limits::default() };
        let raw = format!("Subject: x\r\n\r\n{}\r\n", "è".repeat(100));
        let e = extract(raw.as_bytes(), &limits);
        assert!(e.body.len() <= 11, "{}", e.body.len());
    }
}
