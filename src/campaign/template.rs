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
