//! [`FullText`] in a pecgate built without the `fulltext` feature (the
//! fuzz targets' build): it never opens, so the daemon runs without it
//! (SEARCH BODY/TEXT read the messages, `/api/search` answers 404).

use std::convert::Infallible;
use std::path::Path;

use super::{Doc, Filter, FullTextError, Hit, Result};

pub struct FullText(Infallible);

/// Nothing to analyse without the index.
#[derive(Default)]
pub struct Analysis;

impl Analysis {
    pub fn new() -> Analysis {
        Analysis
    }
}

pub struct Prepared(Infallible);

impl FullText {
    pub fn open(_data_dir: &Path, _write: bool) -> Result<FullText> {
        Err(FullTextError::Other("this pecgate was built without full-text search (cargo feature `fulltext`)".into()))
    }
    pub fn dir(&self) -> &Path {
        match self.0 {}
    }
    pub fn indexed_seq(&self) -> u64 {
        match self.0 {}
    }
    pub fn hurry(&self) {
        match self.0 {}
    }
    pub async fn hurried(&self) {
        match self.0 {}
    }
    pub fn documents(&self) -> u64 {
        match self.0 {}
    }
    pub fn add(&self, _d: &Doc) -> Result<()> {
        match self.0 {}
    }
    pub fn prepare(&self, _d: &Doc, _a: &mut Analysis) -> Prepared {
        match self.0 {}
    }
    pub fn add_prepared(&self, p: Prepared) -> Result<()> {
        match p.0 {}
    }
    pub fn delete(&self, _mailbox: &str, _hash: &str) -> Result<()> {
        match self.0 {}
    }
    pub fn commit(&self, _seq: u64) -> Result<()> {
        match self.0 {}
    }
    pub fn passed(&self, _seq: u64) {
        match self.0 {}
    }
    pub fn clear(&self) -> Result<()> {
        match self.0 {}
    }
    pub fn imap_matches(
        &self,
        _mailbox: &str,
        _text: &str,
        _with_header: bool,
    ) -> Result<Option<crate::store::PrefixSet>> {
        match self.0 {}
    }
    pub fn search(&self, _mailboxes: &[String], _text: &str, _filter: &Filter, _limit: usize) -> Result<Vec<Hit>> {
        match self.0 {}
    }
}
