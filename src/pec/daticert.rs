//! Parser for `daticert.xml`, the provider's signed, machine-readable
//! certification data attached to every PEC envelope and receipt.
//!
//! The input is attacker-influenced (anyone can send mail that reaches a PEC
//! box as an anomaly, and the classifier runs before signature checks), so the
//! parser is bounded: at most [`MAX_DATICERT_BYTES`] of input, no DTD or
//! entity declarations (no entity expansion at all beyond XML's five
//! predefined ones), at most [`MAX_DEPTH`] levels of nesting, and only UTF-8
//! or ISO-8859-1 text. It never panics and allocates at most a small multiple
//! of its (bounded) input.
//!
//! Known provider defect handled: some providers write the original
//! Message-ID as `<msgid><id@host></msgid>`, with the angle brackets not
//! escaped, which is not well-formed XML. Rather than dropping the receipt
//! (it is legal evidence), the parser escapes stray markup inside the known
//! text-only elements, parses again, and reports the result with
//! [`Daticert::malformed`] set and a warning saying what was repaired.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, TimeZone};
use quick_xml::escape::resolve_xml_entity;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::{Reader, XmlVersion};
use serde::{Deserialize, Serialize};

use super::classify::{PecKind, ReceiptForm};
use super::normalize_message_id;

/// Largest daticert accepted. Real ones are 1–3 KB even with hundreds of
/// recipients' worth of `destinatari`; 64 KiB (PEC-SPEC.md) leaves ample room
/// while bounding work on hostile input.
pub const MAX_DATICERT_BYTES: usize = 64 * 1024;

/// Deepest element nesting accepted. The real document is 4 levels deep
/// (`postacert/dati/data/giorno`); 16 tolerates provider extensions.
pub const MAX_DEPTH: usize = 16;

/// Longest XML declaration we look into for the `encoding` pseudo-attribute.
const MAX_DECL_BYTES: usize = 256;

/// Why a `daticert.xml` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DaticertError {
    /// Over [`MAX_DATICERT_BYTES`]; no real provider writes that much.
    #[error("daticert.xml is {len} bytes, over the {max}-byte limit: refused as hostile or not a daticert")]
    TooLarge {
        /// Size of the input.
        len: usize,
        /// The limit it exceeded.
        max: usize,
    },
    /// Empty input (e.g. a zero-length attachment).
    #[error("daticert.xml is empty")]
    Empty,
    /// A `<!DOCTYPE` or `<!ENTITY` was present: daticert never needs one, and
    /// entity expansion is the classic XML denial-of-service.
    #[error("daticert.xml contains a DTD or entity declaration, which daticert never needs: refused")]
    Dtd,
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("daticert.xml nests elements deeper than {max} levels: refused")]
    TooDeep {
        /// The limit exceeded.
        max: usize,
    },
    /// A declared (or BOM-signalled) encoding other than UTF-8/ISO-8859-1.
    #[error("daticert.xml is in encoding {0:?}; only UTF-8 and ISO-8859-1 are supported")]
    UnsupportedEncoding(String),
    /// Declared (or defaulted to) UTF-8, but the bytes are not UTF-8.
    #[error("daticert.xml declares UTF-8 but byte {at} is not valid UTF-8 (wrong encoding declaration?)")]
    InvalidUtf8 {
        /// Offset of the first invalid byte.
        at: usize,
    },
    /// The document element is not `<postacert>`.
    #[error("daticert.xml root element is <{found}>, expected <postacert>")]
    WrongRoot {
        /// The root element found (truncated).
        found: String,
    },
    /// `<postacert>` has no `tipo` attribute, so the daticert says nothing
    /// about what kind of message it certifies.
    #[error("daticert.xml <postacert> has no tipo attribute")]
    MissingTipo,
    /// Not well-formed XML, and the known-defect repair did not help.
    #[error("daticert.xml is not well-formed XML near byte {position}: {message}")]
    Xml {
        /// Byte offset reported by the XML reader.
        position: u64,
        /// The reader's description.
        message: String,
    },
}

/// `errore` attribute of `<postacert>`: why a message was not accepted or
/// delivered. Unknown values are kept verbatim rather than rejected.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
#[non_exhaustive]
pub enum Errore {
    /// `nessuno`: no error.
    #[default]
    Nessuno,
    /// `no-dest`: recipient mailbox unknown.
    NoDest,
    /// `no-dominio`: recipient domain is not a PEC domain.
    NoDominio,
    /// `virus`: a virus was detected.
    Virus,
    /// `altro`: any other error (see `errore-esteso`).
    Altro,
    /// A value outside the technical rules, kept as written.
    Other(String),
}

impl Errore {
    /// The daticert spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Errore::Nessuno => "nessuno",
            Errore::NoDest => "no-dest",
            Errore::NoDominio => "no-dominio",
            Errore::Virus => "virus",
            Errore::Altro => "altro",
            Errore::Other(s) => s,
        }
    }
}

impl From<String> for Errore {
    fn from(s: String) -> Self {
        match s.trim().to_ascii_lowercase().as_str() {
            "nessuno" => Errore::Nessuno,
            "no-dest" => Errore::NoDest,
            "no-dominio" => Errore::NoDominio,
            "virus" => Errore::Virus,
            "altro" => Errore::Altro,
            _ => Errore::Other(s),
        }
    }
}

impl From<Errore> for String {
    fn from(e: Errore) -> Self {
        e.as_str().to_string()
    }
}

impl fmt::Display for Errore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `tipo` attribute of `<destinatari>`: whether the recipient is a PEC
/// mailbox (a delivery receipt will follow) or ordinary mail (none will).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
#[non_exhaustive]
pub enum RecipientType {
    /// `certificato`: a PEC mailbox.
    Certificato,
    /// `esterno`: an ordinary (non-certified) address.
    Esterno,
    /// Missing or unknown `tipo`, kept as written.
    Other(String),
}

impl RecipientType {
    /// The daticert spelling.
    pub fn as_str(&self) -> &str {
        match self {
            RecipientType::Certificato => "certificato",
            RecipientType::Esterno => "esterno",
            RecipientType::Other(s) => s,
        }
    }
}

impl From<String> for RecipientType {
    fn from(s: String) -> Self {
        match s.trim().to_ascii_lowercase().as_str() {
            "certificato" => RecipientType::Certificato,
            "esterno" => RecipientType::Esterno,
            _ => RecipientType::Other(s),
        }
    }
}

impl From<RecipientType> for String {
    fn from(t: RecipientType) -> Self {
        t.as_str().to_string()
    }
}

/// One `<destinatari>` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destinatario {
    /// The address as written (trimmed).
    pub address: String,
    /// Certified or external.
    pub tipo: RecipientType,
}

/// The parsed content of a `daticert.xml`.
///
/// Every field except `tipo` is optional because receipts of different kinds
/// carry different subsets (e.g. `consegna` only on per-recipient receipts),
/// and because a recovered malformed document may lack some.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Daticert {
    /// `postacert/@tipo` as written, e.g. `avvenuta-consegna`.
    pub tipo: String,
    /// `postacert/@errore`; `None` when the attribute is absent.
    pub errore: Option<Errore>,
    /// Sender of the original message.
    pub mittente: Option<String>,
    /// All recipients of the original submission with their type.
    pub destinatari: Vec<Destinatario>,
    /// Reply-to address of the original message.
    pub risposte: Option<String>,
    /// Subject of the original message.
    pub oggetto: Option<String>,
    /// Name of the provider that issued this daticert.
    pub gestore_emittente: Option<String>,
    /// Event time from `data` (`giorno` + `ora` in the `zona` offset). `None`
    /// when absent or unparseable (then a warning says why).
    pub data: Option<DateTime<FixedOffset>>,
    /// Provider identifier of the submission (same for all its receipts).
    pub identificativo: Option<String>,
    /// Original Message-ID, normalised (see [`normalize_message_id`]).
    pub msgid: Option<String>,
    /// `ricevuta/@tipo` on delivery receipts.
    pub ricevuta: Option<ReceiptForm>,
    /// The recipient a delivery receipt or error is about.
    pub consegna: Option<String>,
    /// Free-text error detail on errors and non-acceptance.
    pub errore_esteso: Option<String>,
    /// True when the document was not well-formed and was repaired.
    pub malformed: bool,
    /// What was odd or repaired, in words, for the audit trail.
    pub warnings: Vec<String>,
}

impl Daticert {
    /// Parses a `daticert.xml` document (see the module doc for bounds).
    pub fn parse(bytes: &[u8]) -> Result<Daticert, DaticertError> {
        if bytes.len() > MAX_DATICERT_BYTES {
            return Err(DaticertError::TooLarge {
                len: bytes.len(),
                max: MAX_DATICERT_BYTES,
            });
        }
        if has_declaration(bytes) {
            return Err(DaticertError::Dtd);
        }
        let text = decode_text(bytes)?;
        if text.trim().is_empty() {
            return Err(DaticertError::Empty);
        }
        match parse_str(&text) {
            Ok(d) => Ok(d),
            Err(err @ DaticertError::Xml { .. }) => {
                let Some((repaired, fixed)) = repair_text_elements(&text) else {
                    return Err(err);
                };
                let mut d = parse_str(&repaired).map_err(|_| err)?;
                d.malformed = true;
                d.warnings.insert(
                    0,
                    format!(
                        "daticert.xml was not well-formed: escaped stray markup inside <{}> \
                         (known provider defect) and recovered the fields",
                        fixed.join(">, <")
                    ),
                );
                Ok(d)
            }
            Err(other) => Err(other),
        }
    }

    /// The kind this daticert certifies, from `tipo`; `None` for a `tipo`
    /// outside the technical rules.
    pub fn kind(&self) -> Option<PecKind> {
        let kind = PecKind::from_str(self.tipo.trim()).ok()?;
        Some(match kind {
            PecKind::AvvenutaConsegna { .. } => PecKind::AvvenutaConsegna {
                form: self.ricevuta.unwrap_or(ReceiptForm::Unknown),
            },
            other => other,
        })
    }

    /// Recipients with `tipo="certificato"`.
    pub fn certified_recipients(&self) -> impl Iterator<Item = &str> {
        self.destinatari
            .iter()
            .filter(|d| d.tipo == RecipientType::Certificato)
            .map(|d| d.address.as_str())
    }
}

/// True when a `<!DOCTYPE` or `<!ENTITY` appears anywhere (any case).
fn has_declaration(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, &b)| {
        b == b'!' && i > 0 && bytes[i - 1] == b'<' && {
            let rest = &bytes[i + 1..];
            let starts = |word: &[u8]| rest.len() >= word.len() && rest[..word.len()].eq_ignore_ascii_case(word);
            starts(b"DOCTYPE") || starts(b"ENTITY")
        }
    })
}

/// Decodes the document to UTF-8 text according to its BOM and declaration.
///
/// ISO-8859-1 is accepted because Italian providers of the 2000s still emit
/// it; every byte maps to the same code point, so transcoding is exact.
/// Anything else (UTF-16, Windows-1252, …) is refused rather than guessed:
/// a wrong guess would silently change names in legal evidence.
fn decode_text(bytes: &[u8]) -> Result<String, DaticertError> {
    if bytes.starts_with(&[0xFE, 0xFF]) || bytes.starts_with(&[0xFF, 0xFE]) {
        return Err(DaticertError::UnsupportedEncoding("UTF-16 (byte-order mark)".into()));
    }
    let bytes = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes);
    let declared = declared_encoding(bytes);
    let latin1 = match declared.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("utf-8" | "utf8" | "us-ascii" | "ascii") => false,
        Some("iso-8859-1" | "iso8859-1" | "iso_8859-1" | "latin1" | "latin-1" | "l1") => true,
        Some(_) => {
            return Err(DaticertError::UnsupportedEncoding(
                declared.unwrap_or_default().chars().take(40).collect(),
            ))
        }
    };
    if latin1 {
        Ok(bytes.iter().map(|&b| char::from(b)).collect())
    } else {
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(e) => Err(DaticertError::InvalidUtf8 { at: e.valid_up_to() }),
        }
    }
}

/// The `encoding` pseudo-attribute of the XML declaration, if any.
fn declared_encoding(bytes: &[u8]) -> Option<String> {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = bytes.get(start..)?;
    if !rest.starts_with(b"<?xml") {
        return None;
    }
    let head = &rest[..rest.len().min(MAX_DECL_BYTES)];
    let end = head.windows(2).position(|w| w == b"?>")?;
    let decl = std::str::from_utf8(&head[..end]).ok()?;
    let after = &decl[decl.find("encoding")? + "encoding".len()..];
    let after = after.trim_start().strip_prefix('=')?.trim_start();
    let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = &after[1..];
    Some(value[..value.find(quote)?].trim().to_string())
}

/// Which text field a leaf element fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Mittente,
    Destinatari,
    Risposte,
    Oggetto,
    GestoreEmittente,
    Giorno,
    Ora,
    Identificativo,
    Msgid,
    Consegna,
    ErroreEsteso,
}

impl Field {
    fn from_name(name: &str) -> Option<Field> {
        Some(match name {
            "mittente" => Field::Mittente,
            "destinatari" => Field::Destinatari,
            "risposte" => Field::Risposte,
            "oggetto" => Field::Oggetto,
            "gestore-emittente" => Field::GestoreEmittente,
            "giorno" => Field::Giorno,
            "ora" => Field::Ora,
            "identificativo" => Field::Identificativo,
            "msgid" => Field::Msgid,
            "consegna" => Field::Consegna,
            "errore-esteso" => Field::ErroreEsteso,
            _ => return None,
        })
    }
}

/// Elements that hold only text, where stray markup is repaired.
const TEXT_ELEMENTS: &[&str] = &[
    "msgid",
    "oggetto",
    "identificativo",
    "mittente",
    "destinatari",
    "risposte",
    "consegna",
    "errore-esteso",
    "gestore-emittente",
];

/// State while walking the document.
#[derive(Default)]
struct Builder {
    out: Daticert,
    depth: usize,
    root_seen: bool,
    /// The leaf element being read, its pending `destinatari` type, its text.
    field: Option<(Field, Option<String>, String)>,
    zona: Option<String>,
    giorno: Option<String>,
    ora: Option<String>,
}

fn xml_error(reader: &Reader<&[u8]>, err: impl fmt::Display) -> DaticertError {
    DaticertError::Xml {
        position: reader.error_position().max(reader.buffer_position()),
        message: err.to_string().chars().take(200).collect(),
    }
}

fn attribute(reader: &Reader<&[u8]>, e: &BytesStart<'_>, name: &str) -> Result<Option<String>, DaticertError> {
    let Some(attr) = e.try_get_attribute(name).map_err(|err| xml_error(reader, err))? else {
        return Ok(None);
    };
    // Daticert is XML 1.0 (the technical rules' schema); attribute values are
    // normalised as such (references resolved, line breaks to spaces).
    let value = attr
        .normalized_value(XmlVersion::Implicit1_0)
        .map_err(|err| xml_error(reader, err))?;
    Ok(Some(value.trim().to_string()))
}

fn parse_str(text: &str) -> Result<Daticert, DaticertError> {
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(false);
    let mut b = Builder::default();
    loop {
        let event = reader.read_event().map_err(|err| xml_error(&reader, err))?;
        match event {
            Event::DocType(_) => return Err(DaticertError::Dtd),
            Event::Start(e) => {
                b.depth += 1;
                if b.depth > MAX_DEPTH {
                    return Err(DaticertError::TooDeep { max: MAX_DEPTH });
                }
                b.open(&reader, &e, false)?;
            }
            Event::Empty(e) => {
                if b.depth + 1 > MAX_DEPTH {
                    return Err(DaticertError::TooDeep { max: MAX_DEPTH });
                }
                b.open(&reader, &e, true)?;
            }
            Event::End(e) => {
                b.depth = b.depth.saturating_sub(1);
                b.close(e.local_name().as_ref());
            }
            // The reader splits text at references: `a &amp; b` arrives as
            // Text("a "), GeneralRef("amp"), Text(" b").
            Event::Text(t) => {
                if let Some((_, _, buf)) = b.field.as_mut() {
                    buf.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                if let Some((_, _, buf)) = b.field.as_mut() {
                    push_reference(buf, &r).map_err(|err| xml_error(&reader, err))?;
                }
            }
            Event::CData(c) => {
                if let Some((_, _, buf)) = b.field.as_mut() {
                    buf.push_str(&c.xml10_content());
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
        }
    }
    if b.depth != 0 {
        return Err(DaticertError::Xml {
            position: reader.buffer_position(),
            message: format!("document ends inside {} unclosed element(s)", b.depth),
        });
    }
    b.finish()
}

/// Appends what a reference in text stands for: a character reference, or
/// one of XML's five predefined entities. Any other name is an error, as it
/// was when the whole text was unescaped at once (there is no DTD to declare
/// it), so the caller's repair path escapes the stray `&`.
fn push_reference(buf: &mut String, r: &BytesRef<'_>) -> Result<(), String> {
    if let Some(c) = r.resolve_char_ref().map_err(|e| e.to_string())? {
        buf.push(c);
        return Ok(());
    }
    let name: &str = r;
    match resolve_xml_entity(name) {
        Some(text) => {
            buf.push_str(text);
            Ok(())
        }
        None => Err(format!("unknown entity &{};", name.chars().take(64).collect::<String>())),
    }
}

impl Builder {
    fn open(&mut self, reader: &Reader<&[u8]>, e: &BytesStart<'_>, empty: bool) -> Result<(), DaticertError> {
        let local = e.local_name();
        let name: &str = local.as_ref();
        if !self.root_seen {
            self.root_seen = true;
            if name != "postacert" {
                return Err(DaticertError::WrongRoot {
                    found: name.chars().take(64).collect(),
                });
            }
            self.out.tipo = attribute(reader, e, "tipo")?.ok_or(DaticertError::MissingTipo)?;
            self.out.errore = attribute(reader, e, "errore")?.map(Errore::from);
            return Ok(());
        }
        match name {
            "data" => self.zona = attribute(reader, e, "zona")?,
            "ricevuta" => {
                let tipo = attribute(reader, e, "tipo")?;
                if self.out.ricevuta.is_some() {
                    self.warn("more than one <ricevuta>; kept the first");
                } else {
                    self.out.ricevuta = Some(tipo.as_deref().map_or(ReceiptForm::Unknown, ReceiptForm::parse_lenient));
                }
            }
            _ => {
                if let Some(field) = Field::from_name(name) {
                    if self.field.is_some() {
                        self.warn("element nested inside a text element; ignored");
                        return Ok(());
                    }
                    let tipo = if field == Field::Destinatari {
                        attribute(reader, e, "tipo")?
                    } else {
                        None
                    };
                    self.field = Some((field, tipo, String::new()));
                    if empty {
                        self.close(name);
                    }
                }
            }
        }
        Ok(())
    }

    fn close(&mut self, name: &str) {
        let Some((field, tipo, text)) = self.field.take() else {
            return;
        };
        if Field::from_name(name) != Some(field) {
            // The end of an element nested inside the leaf: keep reading it.
            self.field = Some((field, tipo, text));
            return;
        }
        let value = text.trim().to_string();
        if field == Field::Destinatari {
            if value.is_empty() {
                self.warn("empty <destinatari> ignored");
            } else {
                let tipo = RecipientType::from(tipo.unwrap_or_default());
                self.out.destinatari.push(Destinatario { address: value, tipo });
            }
            return;
        }
        let value = if field == Field::Msgid {
            normalize_message_id(&value)
        } else {
            Some(value)
        };
        let slot = match field {
            Field::Msgid => &mut self.out.msgid,
            Field::Mittente => &mut self.out.mittente,
            Field::Risposte => &mut self.out.risposte,
            Field::Oggetto => &mut self.out.oggetto,
            Field::GestoreEmittente => &mut self.out.gestore_emittente,
            Field::Identificativo => &mut self.out.identificativo,
            Field::Consegna => &mut self.out.consegna,
            Field::ErroreEsteso => &mut self.out.errore_esteso,
            Field::Giorno => &mut self.giorno,
            Field::Ora => &mut self.ora,
            Field::Destinatari => return,
        };
        let what = name;
        match (slot.is_none(), value) {
            (true, Some(v)) => *slot = Some(v),
            (_, None) => self.warn(&format!("empty <{what}>")),
            (false, Some(_)) => self.warn(&format!("repeated <{what}>; kept the first")),
        }
    }

    /// Warnings are capped so a hostile document cannot grow them unboundedly.
    fn warn(&mut self, msg: &str) {
        const MAX_WARNINGS: usize = 16;
        if self.out.warnings.len() < MAX_WARNINGS {
            self.out.warnings.push(msg.to_string());
        }
    }

    fn finish(mut self) -> Result<Daticert, DaticertError> {
        if !self.root_seen {
            return Err(DaticertError::WrongRoot { found: String::new() });
        }
        match (&self.giorno, &self.ora) {
            (Some(giorno), Some(ora)) => match parse_data(giorno, ora, self.zona.as_deref()) {
                Ok(dt) => self.out.data = Some(dt),
                Err(why) => {
                    let msg = format!(
                        "unusable <data> (giorno {giorno:?}, ora {ora:?}, zona {:?}): {why}",
                        self.zona
                    );
                    self.warn(&msg);
                }
            },
            (None, None) => {}
            _ => self.warn("<data> lacks <giorno> or <ora>"),
        }
        Ok(self.out)
    }
}

/// Builds the timestamp from `giorno` (dd/mm/yyyy), `ora` (hh:mm:ss) and
/// `zona` (+hhmm; `+hh:mm` and `Z` tolerated).
///
/// A missing `zona` is an error, not a guess: Italian local time switches
/// between +0100 and +0200, and the legal time of delivery must not be off
/// by an hour.
fn parse_data(giorno: &str, ora: &str, zona: Option<&str>) -> Result<DateTime<FixedOffset>, String> {
    let numbers = |s: &str, sep: char, what: &str| -> Result<Vec<u32>, String> {
        let fields: Vec<u32> = s
            .trim()
            .split(sep)
            .map(|f| f.parse::<u32>().map_err(|_| format!("{what} {s:?} is not numeric")))
            .collect::<Result<_, _>>()?;
        if fields.len() == 3 {
            Ok(fields)
        } else {
            Err(format!("{what} {s:?} does not have three fields"))
        }
    };
    let d = numbers(giorno, '/', "giorno")?;
    let t = numbers(ora, ':', "ora")?;
    let year = i32::try_from(d[2]).map_err(|_| format!("giorno {giorno:?}: year out of range"))?;
    let date = NaiveDate::from_ymd_opt(year, d[1], d[0]).ok_or_else(|| format!("giorno {giorno:?} is not a date"))?;
    let time = NaiveTime::from_hms_opt(t[0], t[1], t[2]).ok_or_else(|| format!("ora {ora:?} is not a time"))?;
    let offset = parse_zona(zona.ok_or("no zona attribute, so the UTC offset is unknown")?)?;
    offset
        .from_local_datetime(&date.and_time(time))
        .single()
        .ok_or_else(|| "date out of range".to_string())
}

fn parse_zona(zona: &str) -> Result<FixedOffset, String> {
    let z = zona.trim();
    if z.eq_ignore_ascii_case("z") || z.eq_ignore_ascii_case("utc") || z.eq_ignore_ascii_case("gmt") {
        return FixedOffset::east_opt(0).ok_or_else(|| "offset".to_string());
    }
    let (sign, digits) = match z.as_bytes().first() {
        Some(b'+') => (1, &z[1..]),
        Some(b'-') => (-1, &z[1..]),
        _ => return Err(format!("zona {z:?} is not +hhmm")),
    };
    let digits: String = digits.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("zona {z:?} is not +hhmm"));
    }
    let hours: i32 = digits[..2].parse().map_err(|_| format!("zona {z:?}"))?;
    let minutes: i32 = digits[2..].parse().map_err(|_| format!("zona {z:?}"))?;
    if hours > 14 || minutes > 59 {
        return Err(format!("zona {z:?} out of range"));
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60)).ok_or_else(|| format!("zona {z:?} out of range"))
}

/// Escapes stray `<`, `>` and `&` inside text-only elements (the known
/// unescaped-`msgid` defect, and its cousin the raw `&` in `oggetto`).
/// Returns the repaired text and the elements touched, or `None` when there
/// was nothing to repair (so the original error stands).
fn repair_text_elements(text: &str) -> Option<(String, Vec<&'static str>)> {
    let mut out = text.to_string();
    let mut fixed = Vec::new();
    for name in TEXT_ELEMENTS {
        let open = format!("<{name}");
        let close = format!("</{name}>");
        let mut search_from = 0;
        while let Some(rel) = out.get(search_from..).and_then(|s| s.find(&open)) {
            let tag_start = search_from + rel;
            let after_name = tag_start + open.len();
            // Must be exactly this element (not e.g. <msgidx>).
            match out.as_bytes().get(after_name) {
                Some(b'>' | b' ' | b'\t' | b'\r' | b'\n') => {}
                _ => {
                    search_from = after_name;
                    continue;
                }
            }
            let Some(gt) = out[after_name..].find('>').map(|i| after_name + i) else {
                break;
            };
            if out.as_bytes().get(gt.wrapping_sub(1)) == Some(&b'/') {
                search_from = gt + 1;
                continue;
            }
            let content_start = gt + 1;
            let Some(content_end) = out[content_start..].find(&close).map(|i| content_start + i) else {
                break;
            };
            let inner = &out[content_start..content_end];
            let escaped = escape_stray_markup(inner);
            let next = content_start + escaped.len() + close.len();
            if escaped != inner {
                out.replace_range(content_start..content_end, &escaped);
                if !fixed.contains(name) {
                    fixed.push(*name);
                }
            }
            search_from = next;
        }
    }
    (!fixed.is_empty()).then_some((out, fixed))
}

/// Escapes `<`, `>` and any `&` that does not start a valid reference.
fn escape_stray_markup(inner: &str) -> String {
    let mut out = String::with_capacity(inner.len() + 8);
    for (i, c) in inner.char_indices() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' if !starts_with_reference(&inner[i..]) => out.push_str("&amp;"),
            c => out.push(c),
        }
    }
    out
}

fn starts_with_reference(s: &str) -> bool {
    let Some(end) = s.find(';') else {
        return false;
    };
    let name = &s[1..end];
    matches!(name, "lt" | "gt" | "amp" | "quot" | "apos")
        || name
            .strip_prefix("#x")
            .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
        || name
            .strip_prefix('#')
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zona_forms() {
        assert_eq!(parse_zona("+0100").unwrap().local_minus_utc(), 3600);
        assert_eq!(parse_zona("+02:00").unwrap().local_minus_utc(), 7200);
        assert_eq!(parse_zona("-0530").unwrap().local_minus_utc(), -19800);
        assert_eq!(parse_zona("Z").unwrap().local_minus_utc(), 0);
        assert!(parse_zona("CET").is_err());
        assert!(parse_zona("+9900").is_err());
    }

    #[test]
    fn repair_leaves_valid_references() {
        assert_eq!(escape_stray_markup("a &amp; b & c <d>"), "a &amp; b &amp; c &lt;d&gt;");
        assert_eq!(escape_stray_markup("&#233;&#xE9;"), "&#233;&#xE9;");
    }

    #[test]
    fn references_in_text_and_attributes() {
        let doc = |oggetto: &str| {
            format!(
                "<postacert tipo=\"accettazione\" errore=\"altro &amp; &#x61;\"><intestazione>\
                 <oggetto>{oggetto}</oggetto></intestazione></postacert>"
            )
        };
        let d = Daticert::parse(doc("a &amp; b &lt;&#233;&#xE9;&gt; <![CDATA[&x;]]> c").as_bytes()).unwrap();
        assert_eq!(d.oggetto.as_deref(), Some("a & b <éé> &x; c"));
        assert_eq!(d.errore, Some(Errore::Other("altro & a".into())));
        assert!(!d.malformed);
        // An undeclared entity is not expanded: the repair keeps it literally.
        let d = Daticert::parse(doc("x &nbsp; y").as_bytes()).unwrap();
        assert_eq!(d.oggetto.as_deref(), Some("x &nbsp; y"));
        assert!(d.malformed);
        // Line ends inside text are normalised as XML 1.0 says.
        let d = Daticert::parse(doc("uno\r\ndue").as_bytes()).unwrap();
        assert_eq!(d.oggetto.as_deref(), Some("uno\ndue"));
    }

    #[test]
    fn encoding_declaration() {
        assert_eq!(declared_encoding(b"<?xml version=\"1.0\" encoding='ISO-8859-1'?><a/>").as_deref(), Some("ISO-8859-1"));
        assert_eq!(declared_encoding(b"<?xml version=\"1.0\"?><a/>"), None);
        assert_eq!(declared_encoding(b"<a/>"), None);
    }
}
