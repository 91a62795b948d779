//! The audit chain: every operation, hash-chained, in the journal.
//!
//! Records are written by the store's journal writer (they are also the
//! write-ahead log of the index); this module checks and reads them.
//! `pecgate audit verify` walks the whole chain and names the first record
//! that was edited, removed, inserted or reordered.

use std::path::Path;

use crate::store::journal::{self, LineError, GENESIS};

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

/// Walk every segment of the journal in `journal_dir`, checking each line's
/// hash, the link to the previous record and the sequence numbers.
pub fn verify(journal_dir: &Path) -> std::io::Result<Verification> {
    let mut prev = GENESIS.to_string();
    let mut expected = 1u64;
    let mut records = 0u64;
    let mut segs = std::collections::BTreeSet::new();
    for line in journal::read_all(journal_dir)? {
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
        if let Ok((_, hash)) = line.parsed {
            prev = hash;
        }
        expected += 1;
        records += 1;
    }
    Ok(Verification { records, segments: segs.len() as u64, head: prev, broken: None })
}
