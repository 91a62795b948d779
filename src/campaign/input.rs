//! The recipients list of a campaign: a CSV file as Italian offices export it.
//!
//! [`read`] takes the file's bytes (reading the file is the caller's job) and
//! returns every row, good or bad, with the physical line it starts on.
//!
//! What is accepted:
//!
//! * **Encoding**: UTF-8, with or without BOM; a file that is not valid UTF-8
//!   is read as Windows-1252 (what Excel "CSV" saves on Italian Windows); a
//!   UTF-16 file with a BOM (Excel "Unicode text") is read as UTF-16.
//!   [`Recipients::encoding`] says which was used.
//! * **Separator**: `;` (Excel in Italian), `,` or tab, chosen from the header
//!   line: the one that splits it into the most columns (quotes respected; on a
//!   tie `;`, then `,`, then tab). Fields may be quoted with `"`, with `""` for a
//!   quote inside and separators or line breaks inside the quotes.
//! * **Header**: the first line with something other than spaces and
//!   separators names the columns (empty spreadsheet rows above it are
//!   skipped). Names are trimmed and matched case-insensitively; an empty or
//!   repeated name is an error.
//! * **Address column**: `--address-column NAME`, else the first of
//!   [`ADDRESS_COLUMN_NAMES`] (in that order of preference) present in the
//!   header. **Key column** (what identifies a recipient in reports):
//!   `--key-column NAME`, else the first column that is not the address (the
//!   address itself when it is the only column). **Attachment column** (only
//!   when chosen with `--attachment-column NAME`): one or more file paths
//!   separated by `|`, e.g. `avviso.pdf|allegato 2.pdf`; spaces around each
//!   path are trimmed, an empty cell means no attachment for that recipient.
//! * **Rows**: lines that are empty, or whose fields are all blank (`;;;` as
//!   Excel writes for formatted empty rows), are skipped. A row is rejected
//!   (with its line number and reason in [`Recipients::errors`]) when it has a
//!   different number of fields than the header, an empty or malformed
//!   address (see [`check_address`]), or an address already used by an
//!   earlier row (compared case-insensitively; the reason names that line).
//!
//! [`rejected_csv`] writes the rejected rows back as a CSV the office can fix
//! in Excel and send again.

use std::borrow::Cow;
use std::collections::HashMap;

/// Header names recognised as the address column, in order of preference
/// (case-insensitive).
pub const ADDRESS_COLUMN_NAMES: &[&str] = &[
    "pec",
    "indirizzo_pec",
    "indirizzo pec",
    "email_pec",
    "pec_address",
    "email",
    "e-mail",
    "mail",
    "indirizzo",
    "address",
];

/// Name of the column [`rejected_csv`] adds with the line of the rejected row.
pub const LINE_COLUMN: &str = "riga";
/// Name of the column [`rejected_csv`] adds with the reason of the rejection.
pub const REASON_COLUMN: &str = "motivo";

/// Which columns to use, as given on the command line (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputOptions {
    /// `--address-column`: the column holding the PEC addresses.
    pub address_column: Option<String>,
    /// `--key-column`: the column identifying each recipient in reports.
    pub key_column: Option<String>,
    /// `--attachment-column`: per-recipient attachment paths, `|`-separated.
    pub attachment_column: Option<String>,
}

/// What the header says: the columns and which is which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Column names from the header, trimmed, in file order.
    pub columns: Vec<String>,
    pub address_column: usize,
    pub key_column: usize,
    pub attachment_column: Option<usize>,
    /// `"UTF-8"`, `"windows-1252"`, `"UTF-16LE"` or `"UTF-16BE"`.
    pub encoding: &'static str,
    /// `b';'`, `b','` or `b'\t'`.
    pub separator: u8,
}

/// The list as read whole ([`read`]): the header, the good rows and the
/// rejected ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipients {
    pub header: Header,
    /// Good rows, in file order.
    pub rows: Vec<Row>,
    /// Rejected rows, in file order.
    pub errors: Vec<RowError>,
}

impl std::ops::Deref for Recipients {
    type Target = Header;
    fn deref(&self) -> &Header {
        &self.header
    }
}

/// The list with its header read, its rows read on demand
/// ([`List::entries`], as many times as wanted): what the daemon reads a
/// list of any length with, holding one row at a time.
pub struct List<'a> {
    header: Header,
    /// The decoded file.
    text: Cow<'a, str>,
    /// Where the header line starts in `text`, and its line number.
    start: usize,
    first_line: u64,
}

impl std::ops::Deref for List<'_> {
    type Target = Header;
    fn deref(&self) -> &Header {
        &self.header
    }
}

/// A row as [`List::entries`] gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Row(Row),
    Rejected(RowError),
}

/// One good recipient row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Physical line (1-based; the header is line 1 in a file without
    /// leading blank lines) where the record starts.
    pub line: u64,
    /// The address, trimmed, as written (case kept).
    pub address: String,
    /// One value per column of [`Recipients::columns`], as written (the
    /// address cell trimmed).
    pub values: Vec<String>,
    /// Attachment paths from the attachment column, if any.
    pub attachments: Vec<String>,
}

/// One rejected row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    /// Why, in one sentence.
    pub reason: String,
    /// The fields as read (possibly not as many as the columns).
    pub values: Vec<String>,
}

/// A problem with the file as a whole: nothing can be sent from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("the recipients file is empty: it needs a header line naming the columns (e.g. `nome;pec`) and one line per recipient")]
    Empty,
    #[error(
        "the recipients file is {0}, not a CSV: save it from the spreadsheet as \"CSV (separato da punto e virgola)\""
    )]
    NotCsv(&'static str),
    #[error(
        "line {line}: the recipients file cannot be read as CSV ({message}); save it again as CSV from the spreadsheet"
    )]
    Csv { line: u64, message: String },
    #[error(
        "line {line}: column {column} of the header has no name; give every column a name (or delete the empty column)"
    )]
    EmptyColumnName { line: u64, column: usize },
    #[error("line {line}: the header names column `{name}` twice (columns {first} and {second}); column names must be unique (case does not count)")]
    DuplicateColumn { line: u64, name: String, first: usize, second: usize },
    #[error("no address column: none of the columns ({}) is named {}; rename the column with the PEC addresses or choose it with --address-column NAME", .columns.join(", "), ADDRESS_COLUMN_NAMES.join(", "))]
    NoAddressColumn { columns: Vec<String> },
    #[error("{option} `{name}`: there is no such column; the columns are: {}", .columns.join(", "))]
    UnknownColumn { option: &'static str, name: String, columns: Vec<String> },
    #[error("--attachment-column `{0}` is the address column; choose the column that holds the attachment file names")]
    AttachmentIsAddress(String),
}

impl Header {
    /// Index of the column named `name` (trimmed, case-insensitive).
    pub fn column(&self, name: &str) -> Option<usize> {
        find_column(&self.columns, name)
    }
}

impl Row {
    /// The value of the key column.
    pub fn key<'a>(&'a self, r: &Header) -> &'a str {
        self.values.get(r.key_column).map(String::as_str).unwrap_or("")
    }

    /// The value of the column named `name` (case-insensitive).
    pub fn get<'a>(&'a self, r: &Header, name: &str) -> Option<&'a str> {
        r.column(name).and_then(|i| self.values.get(i)).map(String::as_str)
    }
}

/// Case-insensitive (Unicode) equality of two names, ignoring surrounding
/// white space.
pub fn same_name(a: &str, b: &str) -> bool {
    a.trim().chars().flat_map(char::to_lowercase).eq(b.trim().chars().flat_map(char::to_lowercase))
}

fn find_column(columns: &[String], name: &str) -> Option<usize> {
    columns.iter().position(|c| same_name(c, name))
}

/// Decodes the file: (text, encoding name).
fn decode(bytes: &[u8]) -> Result<(Cow<'_, str>, &'static str), InputError> {
    if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
        return Ok((encoding_rs::UTF_16LE.decode_without_bom_handling(rest).0, "UTF-16LE"));
    }
    if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        return Ok((encoding_rs::UTF_16BE.decode_without_bom_handling(rest).0, "UTF-16BE"));
    }
    if bytes.starts_with(b"PK\x03\x04") {
        return Err(InputError::NotCsv("an Excel workbook or another ZIP archive"));
    }
    if bytes.starts_with(b"\xD0\xCF\x11\xE0") {
        return Err(InputError::NotCsv("an old Excel (.xls) workbook"));
    }
    if bytes.starts_with(b"%PDF") {
        return Err(InputError::NotCsv("a PDF document"));
    }
    if memchr::memchr(0, bytes).is_some() {
        return Err(InputError::NotCsv("binary (it contains NUL bytes)"));
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok((Cow::Borrowed(text), "UTF-8")),
        Err(_) => Ok((encoding_rs::WINDOWS_1252.decode_without_bom_handling(bytes).0, "windows-1252")),
    }
}

fn reader(text: &str, separator: u8) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new().delimiter(separator).has_headers(false).flexible(true).from_reader(text.as_bytes())
}

/// Byte offset and line number of the first line with something other than
/// spaces and separators.
fn header_start(text: &str) -> (usize, u64) {
    let (mut offset, mut line) = (0, 1);
    for l in text.split_inclusive('\n') {
        if l.chars().any(|c| !c.is_whitespace() && c != ';' && c != ',') {
            break;
        }
        offset += l.len();
        line += 1;
    }
    (offset, line)
}

/// The separator that splits the first record into the most fields.
fn detect_separator(text: &str) -> u8 {
    let mut best = (b';', 0usize);
    for sep in [b';', b',', b'\t'] {
        let mut record = csv::StringRecord::new();
        let n = match reader(text, sep).read_record(&mut record) {
            Ok(true) => record.len(),
            _ => 0,
        };
        if n > best.1 {
            best = (sep, n);
        }
    }
    best.0
}

/// Turns csv's byte offsets of record starts into physical line numbers,
/// counting line feeds incrementally (one pass over the text in total).
struct LineCounter<'a> {
    text: &'a [u8],
    at: usize,
    line: u64,
}

impl LineCounter<'_> {
    fn line_at(&mut self, byte: u64) -> u64 {
        let mut start = usize::try_from(byte).unwrap_or(usize::MAX).min(self.text.len());
        // A record never starts with a line break: skip blank lines csv
        // may count as part of the gap before it.
        while matches!(self.text.get(start), Some(b'\r' | b'\n')) {
            start += 1;
        }
        if start >= self.at {
            // Line breaks as csv reads them: LF, CRLF, or a lone CR.
            let from = self.at;
            let gap = self.text.get(from..start).unwrap_or_default();
            for i in memchr::memchr2_iter(b'\r', b'\n', gap) {
                let lone_cr = gap.get(i) == Some(&b'\r') && self.text.get(from + i + 1) != Some(&b'\n');
                if lone_cr || gap.get(i) == Some(&b'\n') {
                    self.line += 1;
                }
            }
            self.at = start;
        }
        self.line
    }
}

/// Reads the recipients list whole. File-level problems are `Err`;
/// problems with single rows are collected in [`Recipients::errors`].
pub fn read(bytes: &[u8], opts: &InputOptions) -> Result<Recipients, InputError> {
    let list = List::open(bytes, opts)?;
    let (mut rows, mut errors) = (Vec::new(), Vec::new());
    for entry in list.entries() {
        match entry? {
            Entry::Row(r) => rows.push(r),
            Entry::Rejected(e) => errors.push(e),
        }
    }
    Ok(Recipients { header: list.header, rows, errors })
}

/// The records of a list from its header on, with their line numbers;
/// records with nothing but blank fields are passed over.
struct Scan<'t> {
    rdr: csv::Reader<&'t [u8]>,
    lines: LineCounter<'t>,
    record: csv::StringRecord,
}

impl<'t> Scan<'t> {
    fn new(text: &'t str, separator: u8, first_line: u64) -> Scan<'t> {
        Scan {
            rdr: reader(text, separator),
            lines: LineCounter { text: text.as_bytes(), at: 0, line: first_line },
            record: csv::StringRecord::new(),
        }
    }

    /// The next record's line (the record in `self.record`), or `None` at
    /// the end.
    fn next(&mut self) -> Result<Option<u64>, InputError> {
        loop {
            match self.rdr.read_record(&mut self.record) {
                Ok(false) => return Ok(None),
                Ok(true) if self.record.iter().all(|f| f.trim().is_empty()) => continue,
                Ok(true) => return Ok(Some(self.lines.line_at(self.record.position().map(|p| p.byte()).unwrap_or(0)))),
                Err(e) => {
                    return Err(InputError::Csv {
                        line: e.position().map(|p| p.line()).unwrap_or(self.lines.line),
                        message: e.to_string(),
                    })
                }
            }
        }
    }

    /// The header: the first record.
    fn header(&mut self) -> Result<u64, InputError> {
        self.next()?.ok_or(InputError::Empty)
    }
}

impl<'a> List<'a> {
    /// Decodes the file and reads its header. File-level problems are
    /// `Err`; the rows are read by [`List::entries`].
    pub fn open(bytes: &'a [u8], opts: &InputOptions) -> Result<List<'a>, InputError> {
        let (text, encoding) = decode(bytes)?;
        // Lines before the header holding nothing but separators and spaces
        // (`;;;` from a spreadsheet's empty top rows) would fool the
        // separator detection: start at the header line.
        let (start, first_line) = header_start(&text);
        let body = text.get(start..).unwrap_or("");
        let separator = detect_separator(body);
        let mut scan = Scan::new(body, separator, first_line);
        let header_line = scan.header()?;
        let record = &scan.record;
        let mut columns: Vec<String> = Vec::with_capacity(record.len());
        let mut names: HashMap<String, usize> = HashMap::with_capacity(record.len());
        for (i, name) in record.iter().enumerate() {
            let name = name.trim();
            if name.is_empty() {
                return Err(InputError::EmptyColumnName { line: header_line, column: i + 1 });
            }
            if let Some(first) = names.insert(name.to_lowercase(), i) {
                return Err(InputError::DuplicateColumn {
                    line: header_line,
                    name: name.to_string(),
                    first: first + 1,
                    second: i + 1,
                });
            }
            columns.push(name.to_string());
        }

        let chosen = |option: &'static str, name: &Option<String>| -> Result<Option<usize>, InputError> {
            match name {
                None => Ok(None),
                Some(name) => find_column(&columns, name).map(Some).ok_or_else(|| InputError::UnknownColumn {
                    option,
                    name: name.clone(),
                    columns: columns.clone(),
                }),
            }
        };
        let address_column = match chosen("--address-column", &opts.address_column)? {
            Some(i) => i,
            None => ADDRESS_COLUMN_NAMES
                .iter()
                .find_map(|n| find_column(&columns, n))
                .ok_or_else(|| InputError::NoAddressColumn { columns: columns.clone() })?,
        };
        let key_column = match chosen("--key-column", &opts.key_column)? {
            Some(i) => i,
            None => (0..columns.len()).find(|&i| i != address_column).unwrap_or(address_column),
        };
        let attachment_column = chosen("--attachment-column", &opts.attachment_column)?;
        if attachment_column == Some(address_column) {
            return Err(InputError::AttachmentIsAddress(columns.get(address_column).cloned().unwrap_or_default()));
        }
        drop(scan);
        let header = Header { columns, address_column, key_column, attachment_column, encoding, separator };
        Ok(List { header, text, start, first_line })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The rows after the header, good or rejected, in file order (the
    /// same each time). After an `Err` (the file cannot be read on as
    /// CSV) there is nothing more.
    pub fn entries(&self) -> Entries<'_> {
        let body = self.text.get(self.start..).unwrap_or("");
        let mut scan = Scan::new(body, self.separator, self.first_line);
        // `open` read the header from the same text: it is there.
        let failed = scan.header().err();
        Entries { header: &self.header, scan, seen: HashMap::new(), failed, done: false }
    }
}

/// The rows of a [`List`], one at a time; what it keeps is 24 bytes per
/// address seen (to find duplicates).
pub struct Entries<'l> {
    header: &'l Header,
    scan: Scan<'l>,
    /// BLAKE3 of each address seen (lower case) → its line.
    seen: HashMap<u128, u64>,
    failed: Option<InputError>,
    done: bool,
}

impl Iterator for Entries<'_> {
    type Item = Result<Entry, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if let Some(e) = self.failed.take() {
            self.done = true;
            return Some(Err(e));
        }
        let line = match self.scan.next() {
            Ok(Some(line)) => line,
            Ok(None) => {
                self.done = true;
                return None;
            }
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        Some(Ok(self.entry(line)))
    }
}

impl Entries<'_> {
    /// The record just read, checked.
    fn entry(&mut self, line: u64) -> Entry {
        let h = self.header;
        let mut values: Vec<String> = self.scan.record.iter().map(str::to_string).collect();
        let reject = |reason: String, values: Vec<String>| Entry::Rejected(RowError { line, reason, values });
        if values.len() != h.columns.len() {
            let spans = values.iter().any(|v| v.contains('\n'));
            let mut reason = format!(
                "{} fields instead of {} (the header has {} columns separated by `{}`)",
                values.len(),
                h.columns.len(),
                h.columns.len(),
                separator_name(h.separator)
            );
            if spans {
                reason.push_str("; a quote (\") may be left open, joining several lines into one");
            }
            return reject(reason, values);
        }
        let raw = values.get(h.address_column).map(|s| s.trim()).unwrap_or("");
        if raw.is_empty() {
            return reject("the address is empty".to_string(), values);
        }
        if let Err(why) = check_address(raw) {
            let reason = format!("invalid address `{}`: {why}", printable(raw));
            return reject(reason, values);
        }
        let address = raw.to_string();
        let digest = blake3::hash(address.to_lowercase().as_bytes());
        let key = u128::from_le_bytes(digest.as_bytes()[..16].try_into().unwrap_or_default());
        match self.seen.entry(key) {
            std::collections::hash_map::Entry::Occupied(first) => {
                let reason = format!("duplicate of line {} (same address {address})", first.get());
                return reject(reason, values);
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(line);
            }
        }
        if let Some(cell) = values.get_mut(h.address_column) {
            cell.clone_from(&address);
        }
        let attachments = h
            .attachment_column
            .and_then(|i| values.get(i))
            .map(|cell| cell.split('|').map(str::trim).filter(|p| !p.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        Entry::Row(Row { line, address, values, attachments })
    }
}

fn separator_name(sep: u8) -> &'static str {
    match sep {
        b';' => ";",
        b',' => ",",
        _ => "tab",
    }
}

/// `s` with control characters shown as `\u{..}` and cut to 100 characters,
/// for messages.
fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(100).flat_map(char::escape_debug).collect();
    if s.chars().nth(100).is_some() {
        out.push('…');
    }
    out
}

/// Checks the syntax of one PEC address (already trimmed): `local@domain`,
/// ASCII only (PEC providers issue ASCII addresses), no spaces, angle
/// brackets, control characters or quoted local parts; the local part is
/// dot-separated atoms of RFC 5322 `atext`, at most 64 characters; the domain
/// has at least two dot-separated labels of letters, digits and inner
/// hyphens, at most 63 characters each and 253 in all. Returns the reason
/// when it is not acceptable.
pub fn check_address(address: &str) -> Result<(), String> {
    if address.is_empty() {
        return Err("it is empty".into());
    }
    if let Some(c) = address.chars().find(|c| c.is_control()) {
        return Err(format!("it contains the control character {:?}", c));
    }
    if address.chars().any(char::is_whitespace) {
        return Err("it contains a space; write one address per row, nothing else".into());
    }
    if address.contains(['<', '>']) {
        return Err("it contains < or >; write only the address, without a name or angle brackets".into());
    }
    if let Some(c) = address.chars().find(|c| !c.is_ascii()) {
        return Err(format!("it contains `{c}`; PEC addresses use ASCII letters only (no accents)"));
    }
    if address.contains([',', ';']) {
        return Err("it contains , or ;: write one address per row".into());
    }
    let (local, domain) = match address.split_once('@') {
        None => return Err("it has no @".into()),
        Some((_, d)) if d.contains('@') => return Err("it has more than one @; write one address per row".into()),
        Some(parts) => parts,
    };
    if local.is_empty() {
        return Err("nothing before the @".into());
    }
    if local.len() > 64 {
        return Err("the part before the @ is longer than 64 characters".into());
    }
    if local.split('.').any(str::is_empty) {
        return Err("the part before the @ starts or ends with a dot, or has two dots in a row".into());
    }
    if let Some(c) =
        local.chars().find(|&c| !(c.is_ascii_alphanumeric() || c == '.' || "!#$%&'*+/=?^_`{|}~-".contains(c)))
    {
        return Err(format!("`{c}` is not allowed before the @"));
    }
    if domain.is_empty() {
        return Err("nothing after the @".into());
    }
    if domain.len() > 253 {
        return Err("the domain is longer than 253 characters".into());
    }
    if !domain.contains('.') {
        return Err(format!("the domain `{domain}` has no dot (e.g. pec.it)"));
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Err("the domain starts or ends with a dot, or has two dots in a row".into());
        }
        if label.len() > 63 {
            return Err("a part of the domain is longer than 63 characters".into());
        }
        if let Some(c) = label.chars().find(|&c| !(c.is_ascii_alphanumeric() || c == '-')) {
            return Err(format!("`{c}` is not allowed in the domain"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a part of the domain starts or ends with -".into());
        }
    }
    Ok(())
}

/// The rejected rows as a CSV for `--skip-invalid`: UTF-8 with a BOM (so
/// Excel shows accents right), the file's separator, CRLF line ends; the
/// original header plus a `riga` column (line in the original file) and a
/// `motivo` column (reason). When the file already has those columns (it is
/// itself a rejected list, fixed and sent again) they are reused. A row with
/// fewer fields than the header is padded with empty ones; a row with more
/// keeps the extra fields after `motivo`, so `riga` and `motivo` always sit
/// under their header.
pub fn rejected_csv(r: &Header, errors: &[RowError]) -> Vec<u8> {
    let mut header = r.columns.clone();
    let line_col = r.column(LINE_COLUMN).unwrap_or_else(|| {
        header.push(LINE_COLUMN.to_string());
        header.len() - 1
    });
    let reason_col = find_column(&header, REASON_COLUMN).unwrap_or_else(|| {
        header.push(REASON_COLUMN.to_string());
        header.len() - 1
    });
    let mut w = csv::WriterBuilder::new()
        .delimiter(r.separator)
        .terminator(csv::Terminator::CRLF)
        .flexible(true)
        .from_writer(b"\xEF\xBB\xBF".to_vec());
    let _ = w.write_record(&header);
    for e in errors {
        let known = e.values.len().min(r.columns.len());
        let mut out: Vec<&str> = e.values.iter().take(known).map(String::as_str).collect();
        out.resize(header.len(), "");
        let line = e.line.to_string();
        if let Some(cell) = out.get_mut(line_col) {
            *cell = &line;
        }
        if let Some(cell) = out.get_mut(reason_col) {
            *cell = &e.reason;
        }
        out.extend(e.values.iter().skip(known).map(String::as_str));
        let _ = w.write_record(&out);
    }
    w.into_inner().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_ok(bytes: &[u8]) -> Recipients {
        match read(bytes, &InputOptions::default()) {
            Ok(r) => r,
            Err(e) => panic!("unexpected file error: {e}"),
        }
    }

    fn lines_of_errors(r: &Recipients) -> Vec<u64> {
        r.errors.iter().map(|e| e.line).collect()
    }

    #[test]
    fn semicolon_file_with_quoted_separator_and_newline() {
        let csv = "nome;PEC;note\r\n\"Rossi; Mario\";mario.rossi@pec.it;\"prima riga\r\nseconda riga\"\r\nBianchi;bianchi@pec.it;x\r\n";
        let r = read_ok(csv.as_bytes());
        assert_eq!(r.separator, b';');
        assert_eq!(r.encoding, "UTF-8");
        assert_eq!(r.columns, ["nome", "PEC", "note"]);
        assert_eq!(r.address_column, 1);
        assert_eq!(r.key_column, 0);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.rows.len(), 2);
        assert_eq!(r.rows[0].values[0], "Rossi; Mario");
        assert_eq!(r.rows[0].values[2], "prima riga\r\nseconda riga");
        assert_eq!(r.rows[0].key(&r), "Rossi; Mario");
        assert_eq!(r.rows[0].get(&r, "NOTE"), Some("prima riga\r\nseconda riga"));
        // The quoted field spans lines 2-3, so Bianchi is on line 4.
        assert_eq!(r.rows.iter().map(|row| row.line).collect::<Vec<_>>(), [2, 4]);
    }

    #[test]
    fn comma_and_tab_files() {
        let r = read_ok(b"email,nome\nA@pec.it,Anna\nb@pec.it,\"Bruno, detto \"\"Bubi\"\"\"\n");
        assert_eq!(r.separator, b',');
        assert_eq!(r.rows.len(), 2);
        assert_eq!(r.rows[0].address, "A@pec.it");
        assert_eq!(r.rows[1].values[1], "Bruno, detto \"Bubi\"");
        assert_eq!(r.key_column, 1);
        let r = read_ok(b"pec\tnome\na@pec.it\tAnna\n");
        assert_eq!(r.separator, b'\t');
        assert_eq!(r.rows[0].values, ["a@pec.it", "Anna"]);
    }

    #[test]
    fn utf8_with_bom() {
        let r = read_ok("\u{feff}Pec;Città\na@pec.it;Forlì\n".as_bytes());
        assert_eq!(r.encoding, "UTF-8");
        assert_eq!(r.columns, ["Pec", "Città"]);
        assert_eq!(r.address_column, 0);
        assert_eq!(r.rows[0].get(&r, "città"), Some("Forlì"));
    }

    #[test]
    fn windows_1252() {
        let r = read_ok(b"pec;Citt\xe0\na@pec.it;Forl\xec \x80\n");
        assert_eq!(r.encoding, "windows-1252");
        assert_eq!(r.columns, ["pec", "Città"]);
        assert_eq!(r.rows[0].values[1], "Forlì €");
    }

    #[test]
    fn utf16_excel_unicode_text() {
        let text = "pec\tnome\r\na@pec.it\tNicolò\r\n";
        let mut bytes = vec![0xFF, 0xFE];
        bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        let r = read_ok(&bytes);
        assert_eq!(r.encoding, "UTF-16LE");
        assert_eq!(r.rows[0].values[1], "Nicolò");
    }

    #[test]
    fn header_with_comma_in_a_name_is_still_semicolon() {
        let r = read_ok(b"\"Cognome, nome\";pec;comune\nRossi, Mario;m@pec.it;Roma\n");
        assert_eq!(r.separator, b';');
        assert_eq!(r.columns, ["Cognome, nome", "pec", "comune"]);
        assert_eq!(r.rows[0].values[0], "Rossi, Mario");
        assert!(r.errors.is_empty());
    }

    #[test]
    fn rows_with_commas_under_a_semicolon_header_are_rejected_with_lines() {
        let r = read_ok(b"nome;pec;comune\nRossi,m@pec.it,Roma\n\nBianchi;b@pec.it;Milano\nVerdi,v@pec.it,Napoli\n");
        assert_eq!(r.separator, b';');
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.rows[0].line, 4);
        assert_eq!(lines_of_errors(&r), [2, 5]);
        assert!(r.errors[0].reason.contains("1 fields instead of 3"), "{}", r.errors[0].reason);
        assert!(r.errors[0].reason.contains('`') && r.errors[0].reason.contains(';'));
    }

    #[test]
    fn missing_address_column_is_a_file_error() {
        let e = read(b"nome;cognome\nMario;Rossi\n", &InputOptions::default()).unwrap_err();
        assert!(matches!(e, InputError::NoAddressColumn { .. }));
        let msg = e.to_string();
        assert!(msg.contains("--address-column") && msg.contains("indirizzo_pec") && msg.contains("nome, cognome"));
        // Chosen by option, case-insensitively.
        let opts = InputOptions { address_column: Some(" Casella ".into()), ..Default::default() };
        let r = read(b"nome;casella\nMario;m@pec.it\n", &opts).unwrap();
        assert_eq!(r.address_column, 1);
        // An option naming no column says which exist.
        let opts = InputOptions { key_column: Some("codice".into()), ..Default::default() };
        let e = read(b"nome;pec\nMario;m@pec.it\n", &opts).unwrap_err();
        assert!(e.to_string().contains("--key-column `codice`") && e.to_string().contains("nome, pec"), "{e}");
    }

    #[test]
    fn address_column_preference_order_and_key_choice() {
        // `pec` is preferred over `email` even when `email` comes first.
        let r = read_ok(b"email;ragione sociale;pec\nx@gmail.com;ACME;acme@pec.it\n");
        assert_eq!(r.address_column, 2);
        assert_eq!(r.key_column, 0);
        let r = read_ok(b"PEC\na@pec.it\n");
        assert_eq!(r.key_column, 0);
        let opts = InputOptions { key_column: Some("CF".into()), ..Default::default() };
        let r = read(b"nome;cf;pec\nMario;RSSMRA;m@pec.it\n", &opts).unwrap();
        assert_eq!(r.rows[0].key(&r), "RSSMRA");
    }

    #[test]
    fn bad_headers() {
        let e = read(b"pec;;nome\n", &InputOptions::default()).unwrap_err();
        assert_eq!(e, InputError::EmptyColumnName { line: 1, column: 2 });
        let e = read(b"pec;Nome;NOME \n", &InputOptions::default()).unwrap_err();
        assert!(matches!(e, InputError::DuplicateColumn { first: 2, second: 3, .. }), "{e:?}");
        assert_eq!(read(b"", &InputOptions::default()).unwrap_err(), InputError::Empty);
        assert_eq!(read(b"\n\n;;\n", &InputOptions::default()).unwrap_err(), InputError::Empty);
        assert!(matches!(read(b"PK\x03\x04rest", &InputOptions::default()), Err(InputError::NotCsv(_))));
    }

    #[test]
    fn duplicate_address_names_the_first_line() {
        let r = read_ok(b"nome;pec\nA;a@pec.it\nB;b@pec.it\nC; A@PEC.IT \n");
        assert_eq!(r.rows.len(), 2);
        assert_eq!(lines_of_errors(&r), [4]);
        assert!(r.errors[0].reason.contains("duplicate of line 2"), "{}", r.errors[0].reason);
    }

    #[test]
    fn invalid_addresses() {
        let csv = "nome;pec\nA;mario.rossi\nB;a@b\nC;<a@b.it>\nD;a b@c.it\nE;\nF; ok@pec.it \nG;a@b@c.it\nH;è@pec.it\nI;a..b@pec.it\nJ;a@-x.it\nK;a@pec.it;b@pec.it\n";
        let r = read_ok(csv.as_bytes());
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.rows[0].address, "ok@pec.it");
        assert_eq!(r.rows[0].values[1], "ok@pec.it");
        assert_eq!(r.rows[0].line, 7);
        assert_eq!(lines_of_errors(&r), [2, 3, 4, 5, 6, 8, 9, 10, 11, 12]);
        assert!(r.errors[0].reason.contains("no @"), "{}", r.errors[0].reason);
        assert!(r.errors[1].reason.contains("no dot"), "{}", r.errors[1].reason);
        assert!(r.errors[2].reason.contains("angle brackets"), "{}", r.errors[2].reason);
        assert!(r.errors[3].reason.contains("space"), "{}", r.errors[3].reason);
        assert_eq!(r.errors[4].reason, "the address is empty");
        for bad in ["mario.rossi", "a@b", "<a@b.it>", "a b@c.it", "a@b.it.", ".a@b.it", "a@b..it", "a\u{7}@b.it"] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
        for good in ["mario.rossi@pec.it", "M.Rossi+x@Pec.Comune.Roma.IT", "o'neil@a-b.example.it"] {
            assert_eq!(check_address(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn line_numbers_with_multiline_fields_and_empty_lines() {
        let csv = "\n\npec;note\n\na@pec.it;\"uno\ndue\n\ntre\"\n;;\n   \nbad;x\n\"c@pec.it\";\"x\"\"\ny\"\nbad2\n";
        let r = read_ok(csv.as_bytes());
        assert_eq!(r.rows.iter().map(|row| row.line).collect::<Vec<_>>(), [5, 12]);
        assert_eq!(r.rows[0].values[1], "uno\ndue\n\ntre");
        assert_eq!(lines_of_errors(&r), [11, 14]);
    }

    #[test]
    fn blank_spreadsheet_rows_above_the_header() {
        let r = read_ok(b";;;\r\n,,\r\n\r\npec,nome\r\na@pec.it,Anna\r\n;\r\nb@pec.it,Bea\r\n");
        assert_eq!(r.separator, b',');
        assert_eq!(r.columns, ["pec", "nome"]);
        assert_eq!(r.rows.iter().map(|row| row.line).collect::<Vec<_>>(), [5, 7]);
        assert_eq!(lines_of_errors(&r), [6]);
    }

    #[test]
    fn crlf_line_numbers() {
        let r = read_ok(b"pec;n\r\n\r\na@pec.it;1\r\nb@pec.it;\"2\r\n3\"\r\nc@pec.it;4\r\n");
        assert_eq!(r.rows.iter().map(|row| row.line).collect::<Vec<_>>(), [3, 4, 6]);
        // Old Mac line ends (lone CR), as csv reads them.
        let r = read_ok(b"pec;n\r\ra@pec.it;1\rb@pec.it;\"2\r3\"\rc@pec.it;4\r");
        assert_eq!(r.rows.iter().map(|row| row.line).collect::<Vec<_>>(), [3, 4, 6]);
    }

    #[test]
    fn attachments_column() {
        let opts = InputOptions { attachment_column: Some("Allegati".into()), ..Default::default() };
        let r = read(b"pec;allegati\na@pec.it; avviso.pdf | doc 2.pdf|\nb@pec.it;\n", &opts).unwrap();
        assert_eq!(r.attachment_column, Some(1));
        assert_eq!(r.rows[0].attachments, ["avviso.pdf", "doc 2.pdf"]);
        assert!(r.rows[1].attachments.is_empty());
        let opts = InputOptions { attachment_column: Some("pec".into()), ..Default::default() };
        assert!(matches!(read(b"pec;x\n", &opts), Err(InputError::AttachmentIsAddress(_))));
    }

    #[test]
    fn rejected_csv_round_trips() {
        let csv = "Nome;pec;comune\nRossi;m@pec.it;Roma\nBianchi;non-valido;\"Reggio; Emilia\"\nVerdi,v@pec.it,Napoli\nNeri;M@pec.it;Bari\nGialli;g@pec.it;Roma;extra;più\n";
        let r = read_ok(csv.as_bytes());
        assert_eq!(lines_of_errors(&r), [3, 4, 5, 6]);
        let out = rejected_csv(&r, &r.errors);
        assert!(out.starts_with(b"\xEF\xBB\xBFNome;pec;comune;riga;motivo\r\n"), "{}", String::from_utf8_lossy(&out));
        let back = read_ok(&out);
        assert_eq!(back.encoding, "UTF-8");
        assert_eq!(back.separator, b';');
        assert_eq!(back.columns, ["Nome", "pec", "comune", "riga", "motivo"]);
        // The duplicate is fine on its own; the others are still wrong.
        assert_eq!(back.rows.len(), 1);
        assert_eq!(back.rows[0].values[..4], ["Neri", "M@pec.it", "Bari", "5"]);
        assert!(back.rows[0].values[4].contains("duplicate of line 2"));
        assert_eq!(back.errors.len(), 3);
        assert_eq!(back.errors[0].values[..4], ["Bianchi", "non-valido", "Reggio; Emilia", "3"]);
        assert_eq!(back.errors[1].values[..4], ["Verdi,v@pec.it,Napoli", "", "", "4"]);
        assert_eq!(back.errors[2].values, ["Gialli", "g@pec.it", "Roma", "6", &r.errors[3].reason, "extra", "più"]);
        // Rejecting the rejected list again reuses riga/motivo.
        let again = rejected_csv(&back, &back.errors);
        let again = read_ok(&again);
        assert_eq!(again.columns, back.columns);
        assert_eq!(again.errors.len(), 3);
    }

    #[test]
    fn hostile_inputs_do_not_panic() {
        let mut inputs: Vec<Vec<u8>> = vec![
            b"\"".to_vec(),
            b"pec\n\"a@pec.it".to_vec(),
            b"pec;\"".to_vec(),
            b"\xEF\xBB\xBF".to_vec(),
            b"\xFF\xFE".to_vec(),
            b"\xFF\xFEp".to_vec(),
            b"\r\r\r".to_vec(),
            b"pec\r\na@pec.it\ra@pec.it".to_vec(),
            "pec\n\u{1F600}@pec.it\n".as_bytes().to_vec(),
            vec![b'a'; 1 << 20],
            vec![b'\n'; 10_000],
        ];
        let mut wide = (0..10_000).map(|i| format!("c{i}")).collect::<Vec<_>>().join(";");
        wide.push_str(";pec\n");
        wide.push_str(&";".repeat(10_000));
        wide.push_str("a@pec.it\n");
        inputs.push(wide.into_bytes());
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for len in [1usize, 7, 100, 4096, 65_536] {
            let bytes = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed >> 24) as u8
                })
                .collect::<Vec<u8>>();
            inputs.push(bytes.iter().map(|b| if *b == 0 { b';' } else { *b }).collect());
            inputs.push(bytes);
        }
        for input in &inputs {
            let opts = InputOptions { address_column: Some("pec".into()), ..Default::default() };
            for opts in [InputOptions::default(), opts] {
                if let Ok(r) = read(input, &opts) {
                    let _ = rejected_csv(&r, &r.errors);
                }
            }
        }
        let wide = read(inputs.iter().find(|i| i.starts_with(b"c0;")).unwrap(), &InputOptions::default()).unwrap();
        assert_eq!(wide.columns.len(), 10_001);
        assert_eq!(wide.rows.len(), 1);
    }

    #[test]
    fn a_large_list() {
        let mut csv = String::from("codice;ragione sociale;pec\n");
        for i in 0..48_397 {
            csv.push_str(&format!("{i};Ditta {i} s.r.l.;ditta{i}@pec.it\n"));
        }
        let r = read_ok(csv.as_bytes());
        assert_eq!(r.rows.len(), 48_397);
        assert_eq!(r.rows.last().map(|row| row.line), Some(48_398));
    }

    #[test]
    fn entries_read_again_are_the_same_and_hold_no_rows() {
        let csv = "nome;pec\nA;a@pec.it\nB;non un indirizzo\nC;A@PEC.IT\nD;d@pec.it;in più\n;;\nE;e@pec.it\n";
        let list = List::open(csv.as_bytes(), &InputOptions::default()).unwrap();
        let first: Vec<Entry> = list.entries().map(|e| e.unwrap()).collect();
        let second: Vec<Entry> = list.entries().map(|e| e.unwrap()).collect();
        assert_eq!(first, second);
        let lines = |good: bool| -> Vec<u64> {
            first
                .iter()
                .filter_map(|e| match e {
                    Entry::Row(r) if good => Some(r.line),
                    Entry::Rejected(r) if !good => Some(r.line),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(lines(true), [2, 7]);
        assert_eq!(lines(false), [3, 4, 5]);
        // The duplicate is found by the address's digest and still names
        // the first line.
        assert!(matches!(&first[2], Entry::Rejected(e) if e.reason.contains("duplicate of line 2")), "{first:?}");
        // `read` is the same list, whole.
        let whole = read_ok(csv.as_bytes());
        assert_eq!(whole.rows.iter().map(|r| r.line).collect::<Vec<_>>(), lines(true));
        assert_eq!(whole.header, *list.header());
    }
}
