//! The tantivy index behind [`super::FullText`] (the `fulltext` feature).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use chrono::DateTime;
use tantivy::collector::{Collector, SegmentCollector, TopDocs};
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, RegexQuery, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, FAST, INDEXED, STORED, STRING,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RawTokenizer, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter,
    TextAnalyzer, WhitespaceTokenizer,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use super::{Doc, Filter, FullTextError, Hit, Result};
use crate::store::PrefixSet;

/// The index's one tokenizer: the text fields hold terms [`Analysis`]
/// made (stems, or words as written), separated by spaces.
const TERMS: &str = "terms";
/// Bump when the schema or the analysis changes: the index is rebuilt
/// (in a directory of this name; older ones are removed). v3: the other
/// header fields (`headers`), for SEARCH TEXT.
const FORMAT: &str = "fulltext-v3";
const OLDER_FORMATS: [&str; 2] = ["fulltext-v1", "fulltext-v2"];
/// The writer's memory: what a segment may grow to in memory before it is
/// written (larger: fewer segments to merge later). The daemon commits
/// every few seconds ([`super::indexer`]), far below this.
const WRITER_MEMORY: usize = 32 << 20;
/// The writer's threads. Analysis (most of indexing's work) runs on the
/// indexer's own workers; each writer thread only files terms, but has its
/// own segment (a 4 MiB table and an arena) and doubles the segments to
/// merge: one is enough.
const WRITER_THREADS: usize = 1;
/// Words whose stem [`Analysis`] remembers (then it starts again). A
/// mailbox's vocabulary is a few ten thousand words; words with digits
/// (numbers, dates, codes, message ids: most of them seen once) are not
/// remembered, so they do not push the others out.
const STEM_CACHE: usize = 1 << 16;
/// Text kept per document for snippets.
const PREVIEW: usize = 4096;

#[derive(Clone, Copy)]
struct Fields {
    key: Field,
    mailbox: Field,
    hash: Field,
    h64: Field,
    /// Subject and sender as shown (stored, not searched).
    subject_shown: Field,
    from_shown: Field,
    /// Stems, every occurrence (frequencies for ranking).
    subject: Field,
    from: Field,
    to: Field,
    body: Field,
    /// The words as written, each once (for prefixes).
    subject_raw: Field,
    from_raw: Field,
    to_raw: Field,
    body_raw: Field,
    /// The other header fields' values (`Extracted::headers`), each word
    /// as written once: asked by SEARCH TEXT only (not BODY, not the
    /// ranked search), by a word or its start. No stems: header values are
    /// addresses, identifiers and dates far more than prose, and the index
    /// grows by one field, not two.
    headers_raw: Field,
    preview: Field,
    date: Field,
    kind: Field,
}

impl Fields {
    /// Every text field, (stemmed, as written).
    fn all(&self) -> Vec<(Field, Field)> {
        vec![
            (self.body, self.body_raw),
            (self.subject, self.subject_raw),
            (self.from, self.from_raw),
            (self.to, self.to_raw),
        ]
    }

    /// What IMAP's TEXT asks: every text field and the other headers.
    fn header_and_body(&self) -> Vec<(Field, Field)> {
        let mut all = self.all();
        // The word as written stands in for its stem.
        all.push((self.headers_raw, self.headers_raw));
        all
    }
}

pub struct FullText {
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    writer: Mutex<Option<IndexWriter>>,
    f: Fields,
    /// The writer's [`FullText::indexed_seq`]: the last commit's, or past
    /// it over records that had nothing to index ([`FullText::passed`]).
    /// A read-only opener asks the index's files instead.
    passed: Option<AtomicU64>,
    /// A SEARCH waits for what is not indexed yet: the indexer stops
    /// gathering and commits now ([`FullText::hurry`]).
    hurry: tokio::sync::Notify,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = || {
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default().set_tokenizer(TERMS).set_index_option(IndexRecordOption::WithFreqs),
        )
    };
    // Matched by prefix only, never ranked: no frequencies, no lengths.
    let raw = || {
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(TERMS)
                .set_index_option(IndexRecordOption::Basic)
                .set_fieldnorms(false),
        )
    };
    let f = Fields {
        key: b.add_text_field("key", STRING),
        mailbox: b.add_text_field("mailbox", STRING | STORED),
        hash: b.add_text_field("hash", STRING | STORED),
        h64: b.add_u64_field("h64", FAST),
        subject_shown: b.add_text_field("subject_shown", TextOptions::default().set_stored()),
        from_shown: b.add_text_field("from_shown", TextOptions::default().set_stored()),
        subject: b.add_text_field("subject", text()),
        from: b.add_text_field("from", text()),
        to: b.add_text_field("to", text()),
        body: b.add_text_field("body", text()),
        subject_raw: b.add_text_field("subject_raw", raw()),
        from_raw: b.add_text_field("from_raw", raw()),
        to_raw: b.add_text_field("to_raw", raw()),
        body_raw: b.add_text_field("body_raw", raw()),
        headers_raw: b.add_text_field("headers_raw", raw()),
        preview: b.add_text_field("preview", TextOptions::default().set_stored()),
        date: b.add_i64_field("date", INDEXED | FAST | STORED),
        kind: b.add_text_field("kind", STRING | STORED),
    };
    (b.build(), f)
}

fn stop_words() -> StopWordFilter {
    StopWordFilter::new(Language::Italian).unwrap_or_else(|| StopWordFilter::remove(Vec::new()))
}

/// The Italian analysis, for the text and the queries alike: words, lower
/// case, accents folded, stop words dropped, Snowball stems.
pub fn italian() -> TextAnalyzer {
    analyser(true)
}

/// The words as written, for prefixes (`pagam` is a prefix of
/// `pagamento`, not of its stem `pag`): [`italian`] without the stems.
pub fn folded() -> TextAnalyzer {
    analyser(false)
}

fn analyser(stems: bool) -> TextAnalyzer {
    let words = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(60))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(stop_words());
    match stems {
        true => words.filter(Stemmer::new(Language::Italian)).build(),
        false => words.build(),
    }
}

/// The stem of one word [`folded`] gave (already lower case, folded, not a
/// stop word): what [`italian`] makes of it, without building the whole
/// analysis again for each word.
struct Stems(TextAnalyzer);

impl Stems {
    fn new() -> Stems {
        Stems(TextAnalyzer::builder(RawTokenizer::default()).filter(Stemmer::new(Language::Italian)).build())
    }

    fn of(&mut self, word: &str) -> String {
        let mut s = self.0.token_stream(word);
        if s.advance() {
            s.token().text.clone()
        } else {
            word.to_string()
        }
    }
}

/// The analysis of a text to index, in one pass over it: each word kept
/// by [`folded`], then its stem (what [`italian`] gives, remembered per
/// word: a mailbox's vocabulary is small next to its words). One per
/// thread; it keeps its stems between texts.
pub struct Analysis {
    words: TextAnalyzer,
    stems: Stems,
    /// Word → (its stem, the last text it was seen in).
    known: HashMap<String, (String, u64)>,
    text: u64,
}

impl Default for Analysis {
    fn default() -> Analysis {
        Analysis::new()
    }
}

impl Analysis {
    pub fn new() -> Analysis {
        Analysis { words: folded(), stems: Stems::new(), known: HashMap::new(), text: 0 }
    }

    /// `text`'s terms, space-separated: (every word's stem, in order; each
    /// distinct word as written, once).
    fn terms(&mut self, text: &str) -> (String, String) {
        if self.known.len() > STEM_CACHE {
            // A new table: `clear` would keep the old one's size.
            self.known = HashMap::new();
        }
        self.text += 1;
        let Analysis { words, stems, known, text: this } = self;
        // Words with digits seen in this text.
        let mut once: HashSet<String> = HashSet::new();
        let (mut stemmed, mut written) = (String::with_capacity(text.len() / 2), String::new());
        let mut s = words.token_stream(text);
        while s.advance() {
            let w = &s.token().text;
            let first = match known.get_mut(w.as_str()) {
                _ if w.bytes().any(|b| b.is_ascii_digit()) => {
                    stemmed.push_str(&stems.of(w));
                    !once.contains(w.as_str()) && once.insert(w.clone())
                }
                Some((stem, seen)) => {
                    stemmed.push_str(stem);
                    std::mem::replace(seen, *this) != *this
                }
                None => {
                    let stem = stems.of(w);
                    stemmed.push_str(&stem);
                    known.insert(w.clone(), (stem, *this));
                    true
                }
            };
            stemmed.push(' ');
            if first {
                written.push_str(w);
                written.push(' ');
            }
        }
        (stemmed, written)
    }
}

/// A document ready for the writer ([`FullText::prepare`]).
pub struct Prepared {
    key: String,
    doc: TantivyDocument,
}

fn tokens(mut a: TextAnalyzer, text: &str) -> Vec<String> {
    let mut s = a.token_stream(text);
    let mut out = Vec::new();
    while s.advance() {
        out.push(s.token().text.clone());
    }
    out
}

/// The stems `text` analyses to.
pub fn terms(text: &str) -> Vec<String> {
    tokens(italian(), text)
}

/// Each word of `text` kept by the analysis: (as written, folded; its stem).
fn query_words(text: &str) -> Vec<(String, String)> {
    let mut stems = Stems::new();
    tokens(folded(), text)
        .into_iter()
        .map(|w| {
            let stem = stems.of(&w);
            (w, stem)
        })
        .collect()
}

/// The first 64 bits of a hex SHA-256 (its first 8 bytes, little-endian):
/// what IMAP's snapshot entries are matched by.
pub fn h64(hash: &str) -> Option<u64> {
    let mut b = [0u8; 8];
    hex::decode_to_slice(hash.get(..16)?, &mut b).ok()?;
    Some(u64::from_le_bytes(b))
}

impl FullText {
    /// Open (or create) the index under `data_dir`. `write`: hold the
    /// writer (one process at a time: the daemon, or `search reindex`).
    pub fn open(data_dir: &Path, write: bool) -> Result<FullText> {
        let dir = data_dir.join(FORMAT);
        if write {
            for old in OLDER_FORMATS.map(|f| data_dir.join(f)).iter().filter(|d| d.is_dir()) {
                tracing::info!(dir = %old.display(), "full-text: removing an index of an older format (it is rebuilt in {FORMAT})");
                if let Err(e) = std::fs::remove_dir_all(old) {
                    tracing::warn!(dir = %old.display(), error = %e, "full-text: cannot remove the older index");
                }
            }
        }
        std::fs::create_dir_all(&dir).map_err(|e| FullTextError::Other(format!("{}: {e}", dir.display())))?;
        let err = |source| FullTextError::Index { dir: dir.clone(), source };
        let (schema, f) = schema();
        let mmap = tantivy::directory::MmapDirectory::open(&dir).map_err(|e| err(e.into()))?;
        let index = Index::open_or_create(mmap, schema).map_err(err)?;
        index.tokenizers().register(TERMS, TextAnalyzer::from(WhitespaceTokenizer::default()));
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(err)?;
        let writer = match write {
            true => Some(index.writer_with_num_threads(WRITER_THREADS, WRITER_MEMORY).map_err(|e| match e {
                tantivy::TantivyError::LockFailure(..) => FullTextError::Busy { dir: dir.clone() },
                e => err(e),
            })?),
            false => None,
        };
        let passed = writer.as_ref().map(|_| AtomicU64::new(committed_seq(&index)));
        Ok(FullText { dir, index, reader, writer: Mutex::new(writer), f, passed, hurry: tokio::sync::Notify::new() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last journal record indexed (0: none).
    pub fn indexed_seq(&self) -> u64 {
        match &self.passed {
            Some(p) => p.load(Ordering::Acquire),
            None => committed_seq(&self.index),
        }
    }

    /// The records up to `seq` were read and held nothing to index (flag
    /// changes, logins): SEARCH need not wait for them. Not committed: a
    /// commit per flag change cost a tantivy commit (files written,
    /// fsynced, renamed) each; after a restart those records are read
    /// again, and again hold nothing.
    pub fn passed(&self, seq: u64) {
        if let Some(p) = &self.passed {
            p.fetch_max(seq, Ordering::AcqRel);
        }
    }

    /// Documents in the index.
    pub fn documents(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    fn with_writer<T>(&self, f: impl FnOnce(&mut IndexWriter) -> tantivy::Result<T>) -> Result<T> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let w = w.as_mut().ok_or_else(|| FullTextError::Other("opened read-only".into()))?;
        f(w).map_err(|source| FullTextError::Index { dir: self.dir.clone(), source })
    }

    /// Add (or replace) one message's document; visible after [`FullText::commit`].
    pub fn add(&self, d: &Doc) -> Result<()> {
        self.add_prepared(self.prepare(d, &mut Analysis::new()))
    }

    /// The analysis of [`FullText::add`], apart: any thread may prepare
    /// documents (each with its own [`Analysis`]) for one to add.
    pub fn prepare(&self, d: &Doc, a: &mut Analysis) -> Prepared {
        let f = self.f;
        let key = format!("{}\0{}", d.mailbox, d.hash);
        let mut doc = TantivyDocument::default();
        doc.add_text(f.key, &key);
        doc.add_text(f.mailbox, &d.mailbox);
        doc.add_text(f.hash, &d.hash);
        doc.add_u64(f.h64, h64(&d.hash).unwrap_or(0));
        doc.add_text(f.subject_shown, &d.text.subject);
        doc.add_text(f.from_shown, &d.text.from);
        for (text, (stemmed, raw)) in [&d.text.body, &d.text.subject, &d.text.from, &d.text.to].into_iter().zip(f.all())
        {
            let (stems, words) = a.terms(text);
            doc.add_text(stemmed, stems);
            doc.add_text(raw, words);
        }
        doc.add_text(f.headers_raw, a.terms(&d.text.headers).1);
        let mut cut = d.text.body.len().min(PREVIEW);
        while !d.text.body.is_char_boundary(cut) {
            cut -= 1;
        }
        doc.add_text(f.preview, &d.text.body[..cut]);
        doc.add_i64(f.date, d.date.timestamp());
        doc.add_text(f.kind, d.kind);
        Prepared { key, doc }
    }

    /// Add (or replace) a document [`FullText::prepare`]d.
    pub fn add_prepared(&self, p: Prepared) -> Result<()> {
        let Prepared { key, doc } = p;
        let f = self.f;
        self.with_writer(|w| {
            w.delete_term(Term::from_field_text(f.key, &key));
            w.add_document(doc).map(|_| ())
        })
    }

    /// Remove a message's document (its bytes left the mailbox for good).
    pub fn delete(&self, mailbox: &str, hash: &str) -> Result<()> {
        let key = format!("{mailbox}\0{hash}");
        let f = self.f;
        self.with_writer(|w| Ok(w.delete_term(Term::from_field_text(f.key, &key))).map(|_| ()))
    }

    /// Make what was added durable and visible, with the journal record
    /// it reaches.
    pub fn commit(&self, seq: u64) -> Result<()> {
        self.with_writer(|w| {
            let mut c = w.prepare_commit()?;
            c.set_payload(&format!("seq={seq}"));
            c.commit().map(|_| ())
        })?;
        if let Some(p) = &self.passed {
            p.store(seq, Ordering::Release);
        }
        self.reload()
    }

    /// Ask the indexer to index and commit what is waiting now instead of
    /// gathering more (see `indexer::COMMIT_GAP`): somebody is searching.
    pub fn hurry(&self) {
        self.hurry.notify_one();
    }

    /// Until [`FullText::hurry`] is called (or was, since the last time).
    pub async fn hurried(&self) {
        self.hurry.notified().await
    }

    /// See the latest commit (another process's too).
    pub fn reload(&self) -> Result<()> {
        self.reader.reload().map_err(|source| FullTextError::Index { dir: self.dir.clone(), source })
    }

    /// Empty the index (before a reindex).
    pub fn clear(&self) -> Result<()> {
        self.with_writer(|w| w.delete_all_documents().map(|_| ()))?;
        self.commit(0)
    }

    /// Every word of `text` in `fields` (stemmed, raw pairs): its stem, or
    /// the start of a word as written. `None` when `text` has no word the
    /// analysis keeps.
    fn words(&self, text: &str, fields: &[(Field, Field)]) -> Option<Box<dyn Query>> {
        let words = query_words(text);
        if words.is_empty() {
            return None;
        }
        let mut all: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (raw, stem) in words {
            let mut any: Vec<(Occur, Box<dyn Query>)> = Vec::new();
            for (stemmed, as_written) in fields {
                let exact = TermQuery::new(Term::from_field_text(*stemmed, &stem), IndexRecordOption::WithFreqs);
                any.push((Occur::Should, Box::new(BoostQuery::new(Box::new(exact), 2.0))));
                if let Ok(prefix) = RegexQuery::from_pattern(&format!("{}.*", regex_escape(&raw)), *as_written) {
                    any.push((Occur::Should, Box::new(prefix)));
                }
            }
            all.push((Occur::Must, Box::new(BooleanQuery::new(any))));
        }
        Some(Box::new(BooleanQuery::new(all)))
    }

    fn in_mailboxes(&self, mailboxes: &[String]) -> Box<dyn Query> {
        let any = mailboxes
            .iter()
            .map(|m| -> (Occur, Box<dyn Query>) {
                (
                    Occur::Should,
                    Box::new(TermQuery::new(Term::from_field_text(self.f.mailbox, m), IndexRecordOption::Basic)),
                )
            })
            .collect();
        Box::new(BooleanQuery::new(any))
    }

    /// IMAP `SEARCH BODY` (`with_header`: `TEXT`) in `mailbox`: the first
    /// 64 bits of each matching message's hash, or `None` when the words
    /// are all stop words (the caller scans).
    pub fn imap_matches(&self, mailbox: &str, text: &str, with_header: bool) -> Result<Option<PrefixSet>> {
        let f = self.f;
        let fields = if with_header { f.header_and_body() } else { vec![(f.body, f.body_raw)] };
        let Some(words) = self.words(text, &fields) else { return Ok(None) };
        let q = BooleanQuery::new(vec![(Occur::Must, self.in_mailboxes(&[mailbox.to_string()])), (Occur::Must, words)]);
        let searcher = self.reader.searcher();
        let found =
            searcher.search(&q, &H64s).map_err(|source| FullTextError::Index { dir: self.dir.clone(), source })?;
        let mut set = PrefixSet::default();
        set.reserve(found.iter().map(Vec::len).sum());
        set.extend(found.into_iter().flatten());
        Ok(Some(set))
    }

    /// Ranked search over `mailboxes` (those the user may read).
    pub fn search(&self, mailboxes: &[String], text: &str, filter: &Filter, limit: usize) -> Result<Vec<Hit>> {
        let f = self.f;
        if mailboxes.is_empty() {
            return Ok(Vec::new());
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, self.in_mailboxes(mailboxes))];
        match self.words(text, &f.all()) {
            Some(q) => clauses.push((Occur::Must, q)),
            None if text.trim().is_empty() => {}
            None => return Ok(Vec::new()),
        }
        if let Some(from) = &filter.from {
            match self.words(from, &[(f.from, f.from_raw)]) {
                Some(q) => clauses.push((Occur::Must, q)),
                None => return Ok(Vec::new()),
            }
        }
        if let Some(kind) = &filter.kind {
            clauses.push((
                Occur::Must,
                Box::new(TermQuery::new(Term::from_field_text(f.kind, kind), IndexRecordOption::Basic)),
            ));
        }
        if let Some(since) = filter.since {
            let q = tantivy::query::RangeQuery::new(
                std::ops::Bound::Included(Term::from_field_i64(f.date, since.timestamp())),
                std::ops::Bound::Unbounded,
            );
            clauses.push((Occur::Must, Box::new(q)));
        }
        let q = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let err = |source| FullTextError::Index { dir: self.dir.clone(), source };
        let top = searcher.search(&q, &TopDocs::with_limit(limit.max(1)).order_by_score()).map_err(err)?;
        let words = query_words(text);
        let mut out = Vec::new();
        for (score, addr) in top {
            let doc: TantivyDocument = searcher.doc(addr).map_err(err)?;
            let s = |field| doc.get_first(field).and_then(|v| v.as_str()).unwrap_or_default().to_string();
            let date = doc.get_first(f.date).and_then(|v| v.as_i64()).unwrap_or(0);
            out.push(Hit {
                mailbox: s(f.mailbox),
                hash: s(f.hash),
                score,
                subject: s(f.subject_shown).lines().next().unwrap_or_default().to_string(),
                from: s(f.from_shown),
                date: DateTime::from_timestamp(date, 0).unwrap_or_default(),
                kind: s(f.kind),
                snippet: snippet(&s(f.preview), &words),
            });
        }
        Ok(out)
    }
}

/// Collects the matching documents' `h64` straight from each segment's
/// column (a word in every message is a million of them: no set of
/// document addresses in between).
struct H64s;

struct SegmentH64s {
    column: tantivy::columnar::Column<u64>,
    found: Vec<u64>,
}

impl Collector for H64s {
    type Fruit = Vec<Vec<u64>>;
    type Child = SegmentH64s;

    fn for_segment(
        &self,
        _ord: tantivy::SegmentOrdinal,
        segment: &tantivy::SegmentReader,
    ) -> tantivy::Result<SegmentH64s> {
        Ok(SegmentH64s { column: segment.fast_fields().u64("h64")?, found: Vec::new() })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Vec<u64>>) -> tantivy::Result<Vec<Vec<u64>>> {
        Ok(fruits)
    }
}

impl SegmentCollector for SegmentH64s {
    type Fruit = Vec<u64>;

    fn collect(&mut self, doc: tantivy::DocId, _score: tantivy::Score) {
        self.found.extend(self.column.first(doc));
    }

    fn harvest(self) -> Vec<u64> {
        self.found
    }
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if ".+*?()|[]{}^$\\#&-~\"<>@".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Up to 200 characters of `text` around the first word that starts with
/// one of `words` as written, or has its stem, the word in `[…]`.
fn snippet(text: &str, words: &[(String, String)]) -> String {
    let mut a = folded();
    let mut stems = Stems::new();
    let mut s = a.token_stream(text);
    let mut at = None;
    while s.advance() {
        let t = s.token();
        if words.iter().any(|(raw, _)| t.text.starts_with(raw.as_str())) || {
            let stem = stems.of(&t.text);
            words.iter().any(|(_, st)| stem == *st)
        } {
            at = Some((t.offset_from, t.offset_to));
            break;
        }
    }
    let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let Some((from, to)) = at else {
        return flat(&text.chars().take(200).collect::<String>());
    };
    let start = text[..from].char_indices().rev().nth(80).map_or(0, |(i, _)| i);
    let end = text[to..].char_indices().nth(100).map_or(text.len(), |(i, _)| to + i);
    let space = |yes: bool| if yes { " " } else { "" };
    let before = flat(&text[start..from]);
    let after = flat(&text[to..end]);
    format!(
        "{}{before}{}[{}]{}{after}{}",
        if start > 0 { "…" } else { "" },
        space(!before.is_empty() && text[..from].ends_with(char::is_whitespace)),
        &text[from..to],
        space(!after.is_empty() && text[to..].starts_with(char::is_whitespace)),
        if end < text.len() { "…" } else { "" }
    )
}

/// The seq the index's last commit recorded (0: none).
fn committed_seq(index: &Index) -> u64 {
    index
        .load_metas()
        .ok()
        .and_then(|m| m.payload)
        .and_then(|p| p.strip_prefix("seq=").and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fulltext::extract;
    use chrono::Utc;

    #[test]
    fn one_word_stems_are_the_full_analysis() {
        let mut st = Stems::new();
        for w in tokens(folded(), "solleciti perché pagamento raccomandata notificazione comune Comunicazioni") {
            assert_eq!(vec![st.of(&w)], terms(&w), "{w}");
        }
    }

    #[test]
    fn italian_analysis_folds_accents_drops_stop_words_and_stems() {
        assert_eq!(terms("perché"), terms("perche"));
        assert_eq!(terms("solleciti"), terms("sollecito"));
        assert_eq!(terms("il sollecito di pagamento"), terms("Sollecito Pagamento"));
        assert!(terms("di la il").is_empty());
    }

    #[test]
    fn one_pass_gives_every_stem_and_each_word_once() {
        let mut a = Analysis::new();
        let text = "Solleciti di pagamento: il sollecito è del 3 maggio, perché il PAGAMENTO è scaduto";
        let mut once = tokens(folded(), text);
        let mut seen = std::collections::HashSet::new();
        once.retain(|w| seen.insert(w.clone()));
        assert!(once.len() < tokens(folded(), text).len(), "the text repeats words");
        // The second time from the stems remembered.
        for _ in 0..2 {
            let (stems, words) = a.terms(text);
            assert_eq!(stems.split_whitespace().collect::<Vec<_>>(), terms(text));
            assert_eq!(words.split_whitespace().collect::<Vec<_>>(), once);
        }
        assert_eq!(a.terms(""), (String::new(), String::new()));
    }

    #[test]
    fn an_index_of_an_older_format_is_removed_by_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join(OLDER_FORMATS[0]);
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join("meta.json"), "{}").unwrap();
        drop(FullText::open(dir.path(), false).unwrap());
        assert!(old.is_dir(), "a reader leaves it");
        drop(FullText::open(dir.path(), true).unwrap());
        assert!(!old.exists());
        assert!(dir.path().join(FORMAT).is_dir());
    }

    fn doc(mailbox: &str, hash: &str, body: &str) -> Doc {
        Doc {
            mailbox: mailbox.into(),
            hash: hash.into(),
            date: Utc::now(),
            kind: "certified",
            text: extract::Extracted { subject: "Avviso".into(), body: body.into(), ..Default::default() },
        }
    }

    /// TEXT is "the header or body" (RFC 3501 §6.4.4, imaptest
    /// search-body): a word only in a header field of its own
    /// (`X-Header:`) is found by TEXT, never by BODY.
    #[test]
    fn text_finds_words_of_every_header_field_body_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let ft = FullText::open(dir.path(), true).unwrap();
        let h1 = format!("{:064x}", 1);
        let raw = "From: a@example.it\r\nTo: b@example.it\r\nSubject: avviso\r\nX-Header: qwertyuiop\r\n\r\ntesto\r\n";
        let d = Doc {
            mailbox: "prot".into(),
            hash: h1.clone(),
            date: Utc::now(),
            kind: "plain",
            text: extract::extract(raw.as_bytes(), &extract::Limits::default()),
        };
        ft.add(&d).unwrap();
        ft.commit(1).unwrap();
        let text = ft.imap_matches("prot", "qwertyuiop", true).unwrap().unwrap();
        assert_eq!(text.into_iter().collect::<Vec<_>>(), vec![h64(&h1).unwrap()], "TEXT");
        assert_eq!(ft.imap_matches("prot", "qwerty", true).unwrap().unwrap().len(), 1, "TEXT, a word's start");
        assert!(ft.imap_matches("prot", "qwertyuiop", false).unwrap().unwrap().is_empty(), "BODY");
        assert!(ft.search(&["prot".into()], "qwertyuiop", &Filter::default(), 10).unwrap().is_empty(), "ranked search");
    }

    #[test]
    fn words_are_found_by_their_start_and_only_in_the_mailboxes_asked() {
        let dir = tempfile::tempdir().unwrap();
        let ft = FullText::open(dir.path(), true).unwrap();
        let h1 = format!("{:064x}", 1);
        let h2 = format!("{:064x}", 2);
        ft.add(&doc("prot", &h1, "Secondo sollecito di pagamento della fattura perché scaduta")).unwrap();
        ft.add(&doc("legal", &h2, "Ricorso al TAR")).unwrap();
        ft.commit(7).unwrap();
        assert_eq!(ft.indexed_seq(), 7);
        let m = ft.imap_matches("prot", "solleciti", false).unwrap().unwrap();
        assert_eq!(m.into_iter().collect::<Vec<_>>(), vec![h64(&h1).unwrap()]);
        assert_eq!(ft.imap_matches("prot", "sollec pagam", false).unwrap().unwrap().len(), 1, "prefixes");
        assert!(ft.imap_matches("prot", "ricorso", false).unwrap().unwrap().is_empty(), "another mailbox");
        assert_eq!(ft.imap_matches("prot", "di", false).unwrap(), None, "stop words only");
        let hits = ft.search(&["prot".into(), "legal".into()], "perche", &Filter::default(), 10).unwrap();
        assert_eq!(hits.len(), 1);
        assert!(hits[0].snippet.contains("fattura [perché] scaduta"), "{}", hits[0].snippet);
        assert!(ft.search(&["legal".into()], "sollecito", &Filter::default(), 10).unwrap().is_empty());
        // A second writer is refused with a clear error.
        assert!(matches!(FullText::open(dir.path(), true), Err(FullTextError::Busy { .. })));
    }
}
