//! The notice template of a campaign, and rendering one notice per recipient.
//!
//! # Template file format
//!
//! A UTF-8 text file (a BOM is allowed; lines may end in CRLF or LF):
//!
//! ```text
//! Subject: Avviso di pagamento n. {{numero}} - {{ ragione sociale }}
//! Reply-To: tributi@pec.comune.example.it
//!
//! Gentile {{nome}},
//! le notifichiamo l'avviso n. {{numero}} di {{importo}} euro.
//! --- html ---
//! <p>Gentile <b>{{nome}}</b>,</p>
//! <p>le notifichiamo l'avviso n. {{numero}}.</p>
//! ```
//!
//! * **Headers** first, one per line as `Name: value`. `Subject:` is required
//!   (`Oggetto:` is accepted as the same) and must not be empty; `Reply-To:`
//!   is optional (one address). Any other header is an error: From, To, Date
//!   and Message-ID are set by pecgate. A line starting with a space or tab
//!   continues the previous header.
//! * A **blank line** ends the headers; everything after it is the
//!   plain-text body.
//! * Optionally a line consisting exactly of `--- html ---`: what follows it
//!   is an HTML version of the body, sent as a `multipart/alternative` next to
//!   the plain text (which is still required to be meaningful: some PEC
//!   clients show only the text).
//! * **Placeholders** `{{name}}` or `{{ name }}` may appear anywhere in the
//!   header values and both bodies. `name` is a column of the recipients CSV,
//!   matched case-insensitively (spaces inside the name are kept:
//!   `{{ragione sociale}}`). A placeholder must close on the same line and
//!   its name cannot contain `{` or `}`; there is no escape for a literal
//!   `{{`. Values are inserted as they are in the plain text and in headers,
//!   and HTML-escaped in the HTML part. A value inserted into Subject or
//!   Reply-To must not contain a line break.
//!
//! [`parse`] checks the file; [`Template::unknown`] lists placeholders with
//! no matching column; [`Template::render`] builds one complete RFC 5322
//! message (CRLF line ends) with `mail_builder`.

use chrono::{DateTime, FixedOffset};
use mail_send::mail_builder::headers::address::Address;
use mail_send::mail_builder::headers::raw::Raw;
use mail_send::mail_builder::headers::text::Text;
use mail_send::mail_builder::mime::MimePart;
use mail_send::mail_builder::MessageBuilder;

use super::input::{check_address, same_name};

/// The line that separates the plain-text body from the HTML body.
pub const HTML_SEPARATOR: &str = "--- html ---";

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    subject: Vec<Piece>,
    reply_to: Option<Vec<Piece>>,
    text: Vec<Piece>,
    html: Option<Vec<Piece>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Field(String),
}

/// A problem with the template file; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("line {line}: the template is not UTF-8 text; save it as UTF-8")]
    NotUtf8 { line: usize },
    #[error(
        "the template has no `Subject:` line; it must start with `Subject: ...`, then a blank line, then the text"
    )]
    MissingSubject,
    #[error("line {line}: the Subject is empty")]
    EmptySubject { line: usize },
    #[error("line {line}: `{name}` is given twice")]
    DuplicateHeader { line: usize, name: String },
    #[error("line {line}: unknown header `{name}`; only Subject and Reply-To are allowed (From, To, Date, Message-ID are set by pecgate); put a blank line between the headers and the text")]
    UnknownHeader { line: usize, name: String },
    #[error("line {line}: expected a header such as `Subject: ...`; the template starts with its headers, then a blank line, then the text")]
    NotAHeader { line: usize },
    #[error("line {line}: `{{{{` is not closed by `}}}}` on the same line")]
    Unterminated { line: usize },
    #[error("line {line}: `{{{{}}}}` without a column name")]
    EmptyPlaceholder { line: usize },
    #[error("line {line}: placeholder `{{{{{name}}}}}` contains a brace; write `{{{{column name}}}}`")]
    BadPlaceholder { line: usize, name: String },
}

/// A problem rendering one notice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("the template uses `{{{{{0}}}}}` but the recipients list has no such column")]
    UnknownField(String),
    #[error("the value of column `{field}` contains a line break and cannot go into the {header} header")]
    LineBreak { field: String, header: &'static str },
    #[error("{what} address `{address}`: {reason}")]
    BadAddress { what: &'static str, address: String, reason: String },
    #[error("the sender's display name contains a line break")]
    BadDisplayName,
    #[error("Message-ID `{0}` is not of the form <local@domain>")]
    BadMessageId(String),
    #[error("attachment name `{0}` is empty or not a file name")]
    BadAttachmentName(String),
    #[error("building the message failed: {0}")]
    Build(String),
}

/// Everything one notice needs besides the template.
#[derive(Debug, Clone, Copy)]
pub struct NoticeInput<'a> {
    /// Sender address (the campaign's PEC mailbox).
    pub from: &'a str,
    /// Optional display name of the sender.
    pub from_name: Option<&'a str>,
    /// Recipient address.
    pub to: &'a str,
    /// Column names of the recipients list ...
    pub columns: &'a [String],
    /// ... and this recipient's values, aligned with them.
    pub values: &'a [String],
    /// Already formed, with angle brackets: `<id@host>`.
    pub message_id: &'a str,
    pub date: DateTime<FixedOffset>,
    /// (file name, contents). A directory part of the name is dropped.
    pub attachments: &'a [(&'a str, &'a [u8])],
}

/// Parses a template file (see the module documentation for the format).
pub fn parse(bytes: &[u8]) -> Result<Template, TemplateError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| TemplateError::NotUtf8 {
        line: 1 + bytes.get(..e.valid_up_to()).map_or(0, |b| memchr::memchr_iter(b'\n', b).count()),
    })?;
    let text = text.replace("\r\n", "\n");

    let mut subject: Option<(usize, String)> = None;
    let mut reply_to: Option<(usize, String)> = None;
    // Which header a continuation line extends.
    let mut last: Option<bool> = None; // Some(true) = subject, Some(false) = reply-to
    let mut body_start = text.len();
    let mut body_line = 0;
    let mut offset = 0;
    for (i, raw_line) in text.split_inclusive('\n').enumerate() {
        let line_no = i + 1;
        let line = raw_line.trim_end_matches(['\n', '\r']);
        offset += raw_line.len();
        if line.trim().is_empty() {
            body_start = offset;
            body_line = line_no + 1;
            break;
        }
        if line.starts_with([' ', '\t']) {
            let target = match last {
                Some(true) => subject.as_mut(),
                Some(false) => reply_to.as_mut(),
                None => None,
            };
            match target {
                Some((_, value)) => {
                    value.push(' ');
                    value.push_str(line.trim());
                    continue;
                }
                None => return Err(TemplateError::NotAHeader { line: line_no }),
            }
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(TemplateError::NotAHeader { line: line_no });
        };
        let name = name.trim();
        let value = value.trim().to_string();
        let (slot, is_subject) = if same_name(name, "Subject") || same_name(name, "Oggetto") {
            (&mut subject, true)
        } else if same_name(name, "Reply-To") {
            (&mut reply_to, false)
        } else if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(TemplateError::NotAHeader { line: line_no });
        } else {
            return Err(TemplateError::UnknownHeader { line: line_no, name: name.to_string() });
        };
        if slot.is_some() {
            return Err(TemplateError::DuplicateHeader { line: line_no, name: name.to_string() });
        }
        *slot = Some((line_no, value));
        last = Some(is_subject);
    }

    let (subject_line, subject) = subject.ok_or(TemplateError::MissingSubject)?;
    if subject.trim().is_empty() {
        return Err(TemplateError::EmptySubject { line: subject_line });
    }
    let subject = pieces(&subject, subject_line)?;
    let reply_to = match reply_to {
        Some((line, value)) => Some(pieces(&value, line)?),
        None => None,
    };

    let body = text.get(body_start..).unwrap_or("");
    let mut split = None;
    let mut offset = 0;
    for (i, raw_line) in body.split_inclusive('\n').enumerate() {
        if raw_line.trim_end() == HTML_SEPARATOR {
            split = Some((offset, offset + raw_line.len(), body_line + i + 1));
            break;
        }
        offset += raw_line.len();
    }
    let (text_body, html) = match split {
        Some((end, html_start, html_line)) => {
            let html = pieces(body.get(html_start..).unwrap_or(""), html_line)?;
            (body.get(..end).unwrap_or(""), Some(html))
        }
        None => (body, None),
    };
    let text_body = pieces(text_body, body_line)?;
    Ok(Template { subject, reply_to, text: text_body, html })
}

/// Splits `s` (starting on line `line`) into literals and placeholders.
fn pieces(s: &str, line: usize) -> Result<Vec<Piece>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = s;
    let mut consumed = 0;
    let line_of = |at: usize| line + s.get(..at).map_or(0, |p| p.matches('\n').count());
    while let Some(open) = rest.find("{{") {
        let at = consumed + open;
        let after = rest.get(open + 2..).unwrap_or("");
        let this_line = after.split('\n').next().unwrap_or("");
        let Some(close) = this_line.find("}}") else {
            return Err(TemplateError::Unterminated { line: line_of(at) });
        };
        let raw_name = this_line.get(..close).unwrap_or("");
        let name = raw_name.trim();
        if name.is_empty() {
            return Err(TemplateError::EmptyPlaceholder { line: line_of(at) });
        }
        if name.contains(['{', '}']) {
            return Err(TemplateError::BadPlaceholder { line: line_of(at), name: name.to_string() });
        }
        if open > 0 {
            out.push(Piece::Literal(rest.get(..open).unwrap_or("").to_string()));
        }
        out.push(Piece::Field(name.to_string()));
        let skip = open + 2 + close + 2;
        rest = rest.get(skip..).unwrap_or("");
        consumed += skip;
    }
    if !rest.is_empty() {
        out.push(Piece::Literal(rest.to_string()));
    }
    Ok(out)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Header(&'static str),
    Text,
    Html,
}

impl Template {
    /// The placeholder names used, each once (first spelling, in order of
    /// appearance: subject, Reply-To, text, HTML).
    pub fn placeholders(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let all = self
            .subject
            .iter()
            .chain(self.reply_to.iter().flatten())
            .chain(&self.text)
            .chain(self.html.iter().flatten());
        for piece in all {
            if let Piece::Field(name) = piece {
                if !out.iter().any(|n| same_name(n, name)) {
                    out.push(name.clone());
                }
            }
        }
        out
    }

    /// The placeholders that match none of `columns` (empty = all known).
    pub fn unknown(&self, columns: &[String]) -> Vec<String> {
        self.placeholders().into_iter().filter(|p| !columns.iter().any(|c| same_name(c, p))).collect()
    }

    /// Whether the template has an HTML part.
    pub fn has_html(&self) -> bool {
        self.html.is_some()
    }

    /// Renders one notice as a complete RFC 5322 message.
    pub fn render(&self, n: &NoticeInput) -> Result<Vec<u8>, RenderError> {
        let address = |what: &'static str, a: &str| {
            check_address(a).map_err(|reason| RenderError::BadAddress { what, address: a.to_string(), reason })
        };
        address("sender", n.from)?;
        address("recipient", n.to)?;
        if n.from_name.is_some_and(|name| name.contains(['\r', '\n'])) {
            return Err(RenderError::BadDisplayName);
        }
        let id = n
            .message_id
            .strip_prefix('<')
            .and_then(|s| s.strip_suffix('>'))
            .filter(|id| {
                id.split_once('@').is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
                    && !id.chars().any(|c| c.is_whitespace() || c.is_control() || "<>".contains(c) || !c.is_ascii())
            })
            .ok_or_else(|| RenderError::BadMessageId(n.message_id.to_string()))?;

        let subject = substitute(&self.subject, n, Mode::Header("Subject"))?;
        let from = match n.from_name.map(str::trim).filter(|s| !s.is_empty()) {
            Some(name) => Address::new_address(Some(name), n.from),
            None => Address::new_address(None::<&str>, n.from),
        };
        let mut builder = MessageBuilder::new()
            .from(from)
            .to(Address::new_address(None::<&str>, n.to))
            .subject(Text::new(subject))
            .header("Date", Raw::new(n.date.to_rfc2822()))
            .message_id(id);
        if let Some(reply_to) = &self.reply_to {
            let reply_to = substitute(reply_to, n, Mode::Header("Reply-To"))?;
            let reply_to = reply_to.trim().to_string();
            address("Reply-To", &reply_to)?;
            builder = builder.reply_to(Address::new_address(None::<&str>, reply_to));
        }
        builder = builder.text_body(crlf(substitute(&self.text, n, Mode::Text)?));
        if let Some(html) = &self.html {
            builder = builder.html_body(crlf(substitute(html, n, Mode::Html)?));
        }
        for (name, bytes) in n.attachments {
            let file_name = name.rsplit(['/', '\\']).next().unwrap_or("").trim();
            if file_name.is_empty() || file_name == "." || file_name == ".." || file_name.contains(char::is_control) {
                return Err(RenderError::BadAttachmentName(name.to_string()));
            }
            let part = MimePart::new(content_type(file_name), *bytes).attachment(file_name.to_string());
            builder.attachments.get_or_insert_with(Vec::new).push(part);
        }
        builder.write_to_vec().map_err(|e| RenderError::Build(e.to_string()))
    }
}

/// A rendered notice as a new message (a redelivery): the same bytes with
/// its `Message-ID` and `Date` fields replaced (continuation lines
/// included), each line ending kept. `None` when the header section has no
/// `Message-ID`.
pub fn reissue(bytes: &[u8], message_id: &str, date: DateTime<FixedOffset>) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len() + 64);
    let (mut pos, mut replaced, mut skipping) = (0, false, false);
    while pos < bytes.len() {
        let end = bytes[pos..].iter().position(|b| *b == b'\n').map_or(bytes.len(), |i| pos + i + 1);
        let line = &bytes[pos..end];
        let content = line.strip_suffix(b"\n").map(|l| l.strip_suffix(b"\r").unwrap_or(l)).unwrap_or(line);
        if content.is_empty() {
            // The end of the header section: the body as it is.
            out.extend_from_slice(&bytes[pos..]);
            break;
        }
        let continuation = matches!(content[0], b' ' | b'\t');
        if !continuation {
            let name = content.split(|b| *b == b':').next().unwrap_or_default();
            let eol: &[u8] = if line.ends_with(b"\r\n") { b"\r\n" } else { b"\n" };
            skipping = false;
            if name.eq_ignore_ascii_case(b"Message-ID") {
                out.extend_from_slice(format!("Message-ID: {message_id}").as_bytes());
                out.extend_from_slice(eol);
                (skipping, replaced) = (true, true);
            } else if name.eq_ignore_ascii_case(b"Date") {
                out.extend_from_slice(format!("Date: {}", date.to_rfc2822()).as_bytes());
                out.extend_from_slice(eol);
                skipping = true;
            }
        }
        if !skipping {
            out.extend_from_slice(line);
        }
        pos = end;
    }
    replaced.then_some(out)
}

/// Content type of an attachment from its file name's extension.
pub fn content_type(file_name: &str) -> &'static str {
    let ext = file_name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "p7m" => "application/pkcs7-mime",
        "xml" => "application/xml",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}

fn substitute(pieces: &[Piece], n: &NoticeInput, mode: Mode) -> Result<String, RenderError> {
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Literal(s) => out.push_str(s),
            Piece::Field(name) => {
                let value = n
                    .columns
                    .iter()
                    .position(|c| same_name(c, name))
                    .and_then(|i| n.values.get(i))
                    .ok_or_else(|| RenderError::UnknownField(name.clone()))?;
                match mode {
                    Mode::Header(header) if value.contains(['\r', '\n']) => {
                        return Err(RenderError::LineBreak { field: name.clone(), header });
                    }
                    Mode::Html => escape_html(value, &mut out),
                    _ => out.push_str(value),
                }
            }
        }
    }
    Ok(out)
}

fn escape_html(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// Every line break (CRLF, LF or lone CR) as CRLF.
fn crlf(s: String) -> String {
    if !s.contains(['\r', '\n']) {
        return s;
    }
    let mut out = String::with_capacity(s.len() + s.len() / 32);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("\r\n");
            }
            '\n' => out.push_str("\r\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_reissued_notice_has_a_new_message_id_and_date_and_the_same_body() {
        let old = b"From: a@pec.it\r\nMessage-ID:\r\n <old@gw>\r\nDate: Mon, 1 Jun 2026 10:00:00 +0000\r\nSubject: x\r\n\r\nMessage-ID: <in-body@x>\r\n";
        let date = chrono::DateTime::parse_from_rfc3339("2026-06-08T10:00:00+02:00").unwrap();
        let new = super::reissue(old, "<new@gw>", date).unwrap();
        assert_eq!(
            String::from_utf8(new).unwrap(),
            "From: a@pec.it\r\nMessage-ID: <new@gw>\r\nDate: Mon, 8 Jun 2026 10:00:00 +0200\r\nSubject: x\r\n\r\nMessage-ID: <in-body@x>\r\n"
        );
        assert_eq!(super::reissue(b"From: a@pec.it\n\nbody\n", "<n@gw>", date), None, "no Message-ID to replace");
    }

    use super::*;
    use mail_parser::{MessageParser, MimeHeaders};

    const TEMPLATE: &str = "\u{feff}Subject: Avviso n. {{numero}} per {{ Ragione Sociale }} – città {{città}}\r\n\
Reply-To: tributi@pec.comune.example.it\r\n\
\r\n\
Gentile {{ragione sociale}},\r\n\
le notifichiamo l'avviso n. {{NUMERO}}.\r\n\
Note: {{note}}\r\n\
--- html ---\r\n\
<p>Gentile <b>{{ragione sociale}}</b>,</p>\r\n\
<p>Note: {{note}}</p>\r\n";

    fn columns() -> Vec<String> {
        ["numero", "Ragione sociale", "Città", "note", "pec"].map(String::from).to_vec()
    }

    fn values() -> Vec<String> {
        ["42/2024", "Caffè & Co. <s.r.l.>", "Forlì", "riga 1\nriga 2 \"x\"", "caffe@pec.it"].map(String::from).to_vec()
    }

    fn date() -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2024-03-05T10:20:30+01:00").unwrap()
    }

    #[test]
    fn parse_and_placeholders() {
        let t = parse(TEMPLATE.as_bytes()).unwrap();
        assert_eq!(t.placeholders(), ["numero", "Ragione Sociale", "città", "note"]);
        assert!(t.unknown(&columns()).is_empty());
        assert!(t.has_html());
        let cols = ["NUMERO", "ragione sociale"].map(String::from);
        assert_eq!(t.unknown(&cols), ["città", "note"]);
        // LF only, no html, no Reply-To, `Oggetto` as Subject.
        let t = parse(b"oggetto: Ciao {{x}}\n\tcontinua {{z}}\n\nTesto {{y}}\n").unwrap();
        assert_eq!(t.placeholders(), ["x", "z", "y"]);
        assert!(!t.has_html());
    }

    #[test]
    fn parse_errors_with_lines() {
        assert_eq!(parse(b"\nTesto\n"), Err(TemplateError::MissingSubject));
        assert_eq!(parse(b"Reply-To: a@pec.it\n\nTesto\n"), Err(TemplateError::MissingSubject));
        assert_eq!(parse(b"Gentile cliente,\n\nTesto\n"), Err(TemplateError::NotAHeader { line: 1 }));
        assert_eq!(
            parse(b"Subject: x\nFrom: a@b.it\n\nT"),
            Err(TemplateError::UnknownHeader { line: 2, name: "From".into() })
        );
        assert_eq!(
            parse(b"Subject: x\nSubject: y\n\nT"),
            Err(TemplateError::DuplicateHeader { line: 2, name: "Subject".into() })
        );
        assert_eq!(parse(b"Subject: \n\nT"), Err(TemplateError::EmptySubject { line: 1 }));
        assert_eq!(parse(b"Subject: a {{b\n\nT"), Err(TemplateError::Unterminated { line: 1 }));
        assert_eq!(
            parse(b"Subject: a\r\n\r\nuno\r\ndue {{nome\r\n}}\r\n"),
            Err(TemplateError::Unterminated { line: 4 })
        );
        assert_eq!(
            parse(b"Subject: a\n\nuno\n--- html ---\n<p>\n{{ }}</p>\n"),
            Err(TemplateError::EmptyPlaceholder { line: 6 })
        );
        assert!(matches!(parse(b"Subject: a\n\n{{a{b}}\n"), Err(TemplateError::BadPlaceholder { line: 3, .. })));
        assert_eq!(parse(b"Subject: a\n\nok\n\xff\n"), Err(TemplateError::NotUtf8 { line: 4 }));
        // Messages say what to do.
        assert!(TemplateError::MissingSubject.to_string().contains("Subject:"));
        assert!(TemplateError::Unterminated { line: 4 }.to_string().contains("`{{` is not closed by `}}`"));
    }

    fn notice<'a>(
        columns: &'a [String],
        values: &'a [String],
        attachments: &'a [(&'a str, &'a [u8])],
    ) -> NoticeInput<'a> {
        NoticeInput {
            from: "protocollo@pec.comune.example.it",
            from_name: Some("Comune di Forlì"),
            to: "caffe@pec.it",
            columns,
            values,
            message_id: "<camp-1.42@pecgate.example.it>",
            date: date(),
            attachments,
        }
    }

    #[test]
    fn render_parses_back() {
        let t = parse(TEMPLATE.as_bytes()).unwrap();
        let (columns, values) = (columns(), values());
        let pdf: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        let attachments: [(&str, &[u8]); 2] = [("dir/Avviso città.pdf", &pdf), ("nota.txt", b"riga\r\n")];
        let bytes = t.render(&notice(&columns, &values, &attachments)).unwrap();
        assert!(!bytes.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'), "bare LF in output");
        let head =
            String::from_utf8_lossy(&bytes[..bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap()]).to_string();
        assert!(head.contains("Date: Tue, 5 Mar 2024 10:20:30 +0100"), "{head}");
        assert!(head.contains("MIME-Version: 1.0"), "{head}");
        assert!(head.is_ascii(), "{head}");

        let m = MessageParser::default().parse(&bytes).unwrap();
        assert_eq!(m.subject(), Some("Avviso n. 42/2024 per Caffè & Co. <s.r.l.> – città Forlì"));
        assert_eq!(m.to().and_then(|a| a.first()).and_then(|a| a.address()), Some("caffe@pec.it"));
        let from = m.from().and_then(|a| a.first()).unwrap();
        assert_eq!(from.address(), Some("protocollo@pec.comune.example.it"));
        assert_eq!(from.name(), Some("Comune di Forlì"));
        assert_eq!(
            m.reply_to().and_then(|a| a.first()).and_then(|a| a.address()),
            Some("tributi@pec.comune.example.it")
        );
        assert_eq!(m.message_id(), Some("camp-1.42@pecgate.example.it"));
        let text = m.body_text(0).unwrap();
        assert!(text.contains("Gentile Caffè & Co. <s.r.l.>,"), "{text}");
        assert!(text.contains("avviso n. 42/2024."), "{text}");
        assert!(text.contains("Note: riga 1\r\nriga 2 \"x\""), "{text:?}");
        let html = m.body_html(0).unwrap();
        assert!(html.contains("<b>Caffè &amp; Co. &lt;s.r.l.&gt;</b>"), "{html}");
        assert!(html.contains("riga 2 &quot;x&quot;"), "{html}");
        assert!(!html.contains("<s.r.l.>"), "{html}");
        assert_eq!(m.attachment_count(), 2);
        let a = m.attachment(0).unwrap();
        assert_eq!(a.attachment_name(), Some("Avviso città.pdf"));
        assert_eq!(a.content_type().map(|c| (c.ctype(), c.subtype())), Some(("application", Some("pdf"))));
        assert_eq!(a.contents(), &pdf[..]);
        let b = m.attachment(1).unwrap();
        assert_eq!(b.attachment_name(), Some("nota.txt"));
        assert_eq!(b.content_type().map(|c| c.ctype()), Some("text"));
        assert_eq!(b.contents(), b"riga\r\n");
        let root = m.content_type().unwrap();
        assert_eq!((root.ctype(), root.subtype()), ("multipart", Some("mixed")));
    }

    #[test]
    fn plain_text_only() {
        let t = parse("Subject: Avviso {{n}}\n\nGentile {{nome}},\nciao.\n".as_bytes()).unwrap();
        let columns = ["nome", "n"].map(String::from);
        let values = ["Nicolò <x>", "7"].map(String::from);
        let bytes = t.render(&notice(&columns, &values, &[])).unwrap();
        let m = MessageParser::default().parse(&bytes).unwrap();
        assert_eq!(m.subject(), Some("Avviso 7"));
        let root = m.content_type().unwrap();
        assert_eq!((root.ctype(), root.subtype()), ("text", Some("plain")));
        assert_eq!(m.body_text(0).as_deref(), Some("Gentile Nicolò <x>,\r\nciao.\r\n"));
        assert_eq!(m.attachment_count(), 0);
    }

    #[test]
    fn render_errors() {
        let t = parse(TEMPLATE.as_bytes()).unwrap();
        let columns = columns();
        let mut values = values();
        values[1] = "Caffè\r\nBcc: x@y.it".into();
        let e = t.render(&notice(&columns, &values, &[])).unwrap_err();
        assert_eq!(e, RenderError::LineBreak { field: "Ragione Sociale".into(), header: "Subject" });
        assert!(e.to_string().contains("Ragione Sociale"));
        let values = super::tests::values();
        let short = &columns[..2];
        assert_eq!(t.render(&notice(short, &values, &[])).unwrap_err(), RenderError::UnknownField("città".into()));
        let mut n = notice(&columns, &values, &[]);
        n.to = "not an address";
        assert!(matches!(t.render(&n), Err(RenderError::BadAddress { what: "recipient", .. })));
        let mut n = notice(&columns, &values, &[]);
        n.message_id = "no-brackets@x.it";
        assert!(matches!(t.render(&n), Err(RenderError::BadMessageId(_))));
        let mut n = notice(&columns, &values, &[]);
        n.from_name = Some("Comune\r\nBcc: x@y.it");
        assert_eq!(t.render(&n), Err(RenderError::BadDisplayName));
        let att: [(&str, &[u8]); 1] = [("dir/", b"x")];
        assert!(matches!(t.render(&notice(&columns, &values, &att)), Err(RenderError::BadAttachmentName(_))));
        // A Reply-To built from a value must still be one address.
        let t = parse(b"Subject: x\nReply-To: {{pec}}\n\nT\n").unwrap();
        let bad = ["a@b.it, c@d.it".to_string()];
        let e = t.render(&notice(&["pec".to_string()], &bad, &[])).unwrap_err();
        assert!(matches!(e, RenderError::BadAddress { what: "Reply-To", .. }), "{e:?}");
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("a.PDF"), "application/pdf");
        assert_eq!(content_type("a.pdf.p7m"), "application/pkcs7-mime");
        assert_eq!(content_type("fattura.xml"), "application/xml");
        assert_eq!(content_type("leggimi.txt"), "text/plain");
        assert_eq!(content_type("archivio.zip"), "application/octet-stream");
        assert_eq!(content_type("senza_estensione"), "application/octet-stream");
    }

    #[test]
    fn hostile_templates_do_not_panic() {
        let mut inputs: Vec<Vec<u8>> = vec![
            b"{{".to_vec(),
            b"Subject: {{".to_vec(),
            b"Subject: }}{{".to_vec(),
            b"Subject: {{{{}}}}".to_vec(),
            b"Subject: x\n\n{{\xc3".to_vec(),
            "Subject: {{è}}\n\n{{à".as_bytes().to_vec(),
            b"Subject: x\n\n--- html ---".to_vec(),
            b"Subject: x\n\n--- html ---\n--- html ---\n{{a}".to_vec(),
            b" continuation\nSubject: x".to_vec(),
            b"Subject: x\r".to_vec(),
            b"\xEF\xBB\xBF".to_vec(),
        ];
        let mut long = b"Subject: ".to_vec();
        long.extend(std::iter::repeat_n(b"{{a}}x".as_slice(), 100_000).flatten());
        inputs.push(long);
        inputs.push(vec![b'{'; 1 << 20]);
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for len in [1usize, 10, 300, 5000] {
            let mut bytes = b"Subject: x\n\n".to_vec();
            bytes.extend((0..len).map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                b"{} \n\r<>&aZ\xc3\xa8"[(seed % 12) as usize]
            }));
            inputs.push(bytes);
        }
        let columns = ["a".to_string()];
        let values = ["v\u{0}<\r\n".to_string()];
        for input in &inputs {
            if let Ok(t) = parse(input) {
                let _ = t.placeholders();
                let _ = t.unknown(&columns);
                let _ = t.render(&notice(&columns, &values, &[]));
            }
        }
    }
}
