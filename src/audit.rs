//! The audit chain: every operation, hash-chained, in the journal.
//!
//! Records are written by the store's journal writer (they are also the
//! write-ahead log of the index); this module checks and reads them.
//! `pecgate audit verify` walks the whole chain and names the first record
//! that was edited, removed, inserted or reordered.

use std::path::Path;

use crate::store::{decode_line, JournalReader, LineError, GENESIS};

/// The outcome of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verification {
    pub records: u64,
    pub segments: u64,
    /// Hash of the last good record (the chain head).
    pub head: String,
    /// The first broken record, if any.
    pub broken: Option<Broken>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Broken {
    pub segment: String,
    pub line: u64,
    /// The sequence number the record should have had.
    pub expected_seq: u64,
    pub reason: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "record {} (journal/{} line {}): {}",
            self.expected_seq, self.segment, self.line, self.reason
        )
    }
}

/// Walk every segment of the journal, checking each line's hash, the link
/// to the previous record and the sequence numbers.
pub fn verify(journal: &JournalReader) -> std::io::Result<Verification> {
    verify_collecting(journal, &mut |_, _| {})
}

/// [`verify`], handing each good record and its hash to `each` (the
/// anchor check collects the hashes it needs in the same walk).
pub fn verify_collecting(
    journal: &JournalReader,
    each: &mut dyn FnMut(&crate::store::Record, &str),
) -> std::io::Result<Verification> {
    let mut prev = GENESIS.to_string();
    let mut expected = 1u64;
    let mut records = 0u64;
    let mut segs = std::collections::BTreeSet::new();
    for line in journal.lines()? {
        let line = line?;
        segs.insert(line.segment.clone());
        let broken = |reason: String| Broken {
            segment: line.segment.clone(),
            line: line.line_no,
            expected_seq: expected,
            reason,
        };
        let fail = match &line.parsed {
            Err(LineError::HashMismatch { .. }) => {
                Some(broken("its content does not match its hash: the record was altered".into()))
            }
            Err(e) => Some(broken(e.to_string())),
            Ok((rec, _)) if rec.prev != prev => Some(broken(format!(
                "it does not chain to the previous record (prev {}…, expected {}…): a record before it was removed, inserted or altered",
                &rec.prev.get(..12).unwrap_or(&rec.prev),
                &prev[..12]
            ))),
            Ok((rec, _)) if rec.seq != expected => {
                Some(broken(format!("sequence number {} where {expected} was expected", rec.seq)))
            }
            Ok(_) => None,
        };
        if let Some(b) = fail {
            return Ok(Verification { records, segments: segs.len() as u64, head: prev, broken: Some(b) });
        }
        if let Ok((rec, hash)) = line.parsed {
            each(&rec, &hash);
            prev = hash;
        }
        expected += 1;
        records += 1;
    }
    Ok(Verification { records, segments: segs.len() as u64, head: prev, broken: None })
}

// ---------------------------------------------------------------------------
// Queries, exports and tailing.
//
// Queries read the journal read-only (`store::JournalReader`, not the
// daemon's store), so an auditor can run them while the daemon is serving:
// the journal is append-only and fsynced line by line, and a line without
// its `\n` is a write in progress that is simply not read yet.

use chrono::{DateTime, NaiveDate, Utc};
use std::io::{BufRead, BufReader, Write};

use crate::store::Record;

/// Why an audit query, export or export check failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("reading the journal: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0:?} is neither an RFC 3339 time nor a YYYY-MM-DD date")]
    BadTime(String),
    #[error("the journal is damaged at {segment} line {line}: {reason} (run `pecgate audit verify`)")]
    Damaged { segment: String, line: u64, reason: String },
    #[error("the export is not valid: {0}")]
    BadExport(String),
}

/// Parse `2024-05-01T10:00:00+02:00` or `2024-05-01` (midnight UTC).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, AuditError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| AuditError::BadTime(s.to_string()))
}

/// Which records a query returns. Every given condition must hold;
/// `since` is inclusive and `until` exclusive, so consecutive ranges
/// (`--since 2024-05-01 --until 2024-06-01`) never overlap.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub user: Option<String>,
    pub mailbox: Option<String>,
    pub op: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl Filter {
    pub fn matches(&self, r: &Record) -> bool {
        self.user.as_ref().is_none_or(|u| &r.actor == u)
            && self.mailbox.as_ref().is_none_or(|m| r.mailbox.as_ref() == Some(m) || r.event.mailbox() == Some(m))
            && self.op.as_ref().is_none_or(|o| &r.op == o)
            && self.in_range(r)
    }

    fn in_range(&self, r: &Record) -> bool {
        self.since.is_none_or(|s| r.time >= s) && self.until.is_none_or(|u| r.time < u)
    }
}

/// One record as read: the record, its hash and its exact line.
#[derive(Debug, Clone)]
pub struct Found {
    pub record: Record,
    pub hash: String,
    pub line: String,
}

/// Every record in journal order, failing on the first damaged one (a query
/// must not silently skip evidence). `progress` is called with the bytes
/// read so far and the total, for a progress bar.
pub fn scan(
    journal: &JournalReader,
    progress: impl FnMut(u64, u64),
    mut each: impl FnMut(Found) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    journal.scan(progress, |line| {
        let (record, hash) = line.parsed.map_err(|e| AuditError::Damaged {
            segment: line.segment,
            line: line.line_no,
            reason: e.to_string(),
        })?;
        each(Found { record, hash, line: line.text })
    })
}

/// The records matching `filter`, in journal order.
pub fn query(journal: &JournalReader, filter: &Filter, progress: impl FnMut(u64, u64)) -> Result<Vec<Found>, AuditError> {
    let mut out = Vec::new();
    scan(journal, progress, |f| {
        if filter.matches(&f.record) {
            out.push(f);
        }
        Ok(())
    })?;
    Ok(out)
}

/// First line of an export file: what it covers and the chain hashes at
/// both ends, so the excerpt can be checked on its own (the records are the
/// journal's lines, verbatim) and against the live chain (`prev_hash` and
/// `last_hash` are hashes of records in the full journal).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExportHeader {
    pub pecgate_audit_export: u32,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Hash of the record before the first exported one (64 zeros if the
    /// excerpt starts at the beginning of the chain).
    pub prev_hash: String,
    /// Hash of the last exported record (`prev_hash` if none).
    pub last_hash: String,
}

/// Write the contiguous run of records with `since <= time < until` to
/// `out`: a header line, then the journal lines verbatim. Records are
/// appended in time order, so the range is contiguous in the chain.
pub fn export(
    journal: &JournalReader,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    out: &mut impl Write,
    progress: impl FnMut(u64, u64),
) -> Result<ExportHeader, AuditError> {
    let range = Filter { since, until, ..Filter::default() };
    let mut prev = GENESIS.to_string();
    let mut lines: Vec<Found> = Vec::new();
    scan(journal, progress, |f| {
        if range.in_range(&f.record) {
            lines.push(f);
        } else if lines.is_empty() {
            prev = f.hash;
        }
        Ok(())
    })?;
    let header = ExportHeader {
        pecgate_audit_export: 1,
        since,
        until,
        records: lines.len() as u64,
        first_seq: lines.first().map(|f| f.record.seq),
        last_seq: lines.last().map(|f| f.record.seq),
        last_hash: lines.last().map(|f| f.hash.clone()).unwrap_or_else(|| prev.clone()),
        prev_hash: prev,
    };
    let head = serde_json::to_string(&header).map_err(|e| AuditError::BadExport(e.to_string()))?;
    writeln!(out, "{head}")?;
    for f in &lines {
        writeln!(out, "{}", f.line)?;
    }
    out.flush()?;
    Ok(header)
}

/// Check an export file: every line's hash, the chain from `prev_hash`
/// through consecutive sequence numbers to `last_hash`, the record count.
/// Returns the header on success.
pub fn verify_export(path: &Path) -> Result<ExportHeader, AuditError> {
    let bad = |s: String| AuditError::BadExport(s);
    let r = BufReader::new(std::fs::File::open(path)?);
    let mut lines = r.lines();
    let head = lines.next().ok_or_else(|| bad("empty file".into()))??;
    let header: ExportHeader = serde_json::from_str(&head).map_err(|e| bad(format!("header: {e}")))?;
    let mut prev = header.prev_hash.clone();
    let mut seq = header.first_seq;
    let mut n = 0u64;
    for (i, line) in lines.enumerate() {
        let line = line?;
        let at = i + 2;
        let (rec, hash) = decode_line(&line).map_err(|e| bad(format!("line {at}: {e}")))?;
        if rec.prev != prev {
            return Err(bad(format!("line {at}: does not chain to the record before it")));
        }
        if Some(rec.seq) != seq {
            return Err(bad(format!("line {at}: sequence {} where {seq:?} was expected", rec.seq)));
        }
        seq = Some(rec.seq + 1);
        prev = hash;
        n += 1;
    }
    if n != header.records {
        return Err(bad(format!("{n} records where the header says {}", header.records)));
    }
    if prev != header.last_hash {
        return Err(bad("the last record's hash is not the header's last_hash: records were removed at the end".into()));
    }
    Ok(header)
}
