//! Full-text search: a tantivy index of every archived message's text
//! ([`extract`]), analysed for Italian (lower case, accents folded, stop
//! words dropped, Snowball stems: `perché` finds `perche`, `solleciti`
//! finds `sollecito`).
//!
//! The index is derived, never evidence: it follows the journal's
//! `archived` records ([`indexer`]) and remembers the last record it
//! indexed in its commit, so it catches up after a restart, and deleting
//! its directory and running `pecgate search reindex` gives the same
//! results. One document per message per mailbox (the same bytes in two
//! mailboxes are two documents: a search only sees the mailboxes its
//! user may read).
//!
//! Matching, for IMAP `SEARCH BODY`/`TEXT` and `pecgate search`: the
//! query is analysed like the text, and every word must be the start of
//! a word of the message (`sollec` finds `sollecito`), the trade Dovecot's
//! FTS makes; a query of stop words only (`di`, `la`) leaves the answer to
//! the exact substring scan.

pub mod api;
pub mod cli;
pub mod extract;
#[cfg(feature = "fulltext")]
mod index;
pub mod indexer;
#[cfg(feature = "fulltext")]
pub use index::{folded, h64, italian, terms, Analysis, FullText, Prepared};
#[cfg(not(feature = "fulltext"))]
mod disabled;
#[cfg(not(feature = "fulltext"))]
pub use disabled::{Analysis, FullText, Prepared};

use std::path::PathBuf;

use chrono::{DateTime, Utc};

/// The search engine's own errors.
#[cfg(feature = "fulltext")]
pub type EngineError = tantivy::TantivyError;
#[cfg(not(feature = "fulltext"))]
pub type EngineError = std::convert::Infallible;

#[derive(Debug, thiserror::Error)]
pub enum FullTextError {
    #[error("full-text index {dir}: {source}")]
    Index { dir: PathBuf, source: EngineError },
    #[error("full-text index {dir}: another process is writing it (is `pecgate serve` running? stop it first)")]
    Busy { dir: PathBuf },
    #[error("full-text index: {0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, FullTextError>;

/// What one message gives the index.
#[derive(Debug, Clone)]
pub struct Doc {
    pub mailbox: String,
    pub hash: String,
    pub date: DateTime<Utc>,
    /// `certified`, `receipt`, `anomaly`, `plain`.
    pub kind: &'static str,
    pub text: extract::Extracted,
}

/// One search result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Hit {
    pub mailbox: String,
    pub hash: String,
    pub score: f32,
    pub subject: String,
    pub from: String,
    pub date: DateTime<Utc>,
    pub kind: String,
    pub snippet: String,
}

/// Filters beside the words.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub from: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub kind: Option<String>,
}
