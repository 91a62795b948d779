//! What an export holds, read from the journal alone (beside a running
//! daemon): the mailbox's messages archived in the range, receipts placed
//! with the sent message they are about, the records that concern them
//! and the newest anchor.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::audit::AuditError;
use crate::pec::meta::PecMeta;
use crate::store::{Event, JournalReader};

/// Which messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// Everything archived after the last export that was not partial.
    SinceLast,
    /// Every message of the mailbox.
    All,
    /// Archived in `since <= time < until` (partial: not for `--since-last`).
    Dates { since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>> },
}

/// One archived message to export.
#[derive(Debug, Clone)]
pub struct Item {
    /// The `archived` record.
    pub seq: u64,
    pub hash: String,
    pub size: u64,
    pub folder: String,
    pub internal_date: DateTime<Utc>,
    /// When it was archived (the record's time).
    pub archived: DateTime<Utc>,
    pub pec: Option<PecMeta>,
}

impl Item {
    pub fn is_receipt(&self) -> bool {
        self.pec.as_ref().is_some_and(|p| p.classification.is_receipt() && p.sent.is_none())
    }

    /// The sent message's key a receipt refers to.
    pub fn receipt_key(&self) -> Option<&str> {
        self.pec.as_ref().filter(|_| self.is_receipt()).and_then(|p| crate::pec::reconcile::key_of(&p.classification))
    }

    pub fn sent_key(&self) -> Option<&str> {
        self.pec.as_ref().and_then(|p| p.sent.as_ref()).map(|s| s.key.as_str())
    }
}

/// A document of the package: a message and the receipts about it.
#[derive(Debug, Clone)]
pub struct Document {
    pub item: Item,
    pub receipts: Vec<Item>,
    /// For a receipt exported on its own: the sent message it is about,
    /// archived earlier (its hash).
    pub linked: Option<String>,
}

/// The newest anchor: the token and the two records (the anchored one,
/// whose hash the token stamps, and the `anchored` record naming it).
#[derive(Debug, Clone)]
pub struct Anchor {
    pub seq: u64,
    pub hash: String,
    pub token_name: String,
    /// The token's SHA-256 as the `anchored` record gives it: on a cluster
    /// node that did not anchor, the token is read from the bucket by it.
    pub token_sha256: String,
    pub lines: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub mailbox: String,
    /// The last record of the previous (non-partial) export, 0 if none.
    pub after: u64,
    /// The journal's last record when the export read it.
    pub head: u64,
    pub documents: Vec<Document>,
    /// Journal lines (verbatim) of the records about these messages.
    pub records: Vec<String>,
    pub anchor: Option<Anchor>,
}

impl Plan {
    pub fn messages(&self) -> u64 {
        self.documents.iter().map(|d| 1 + d.receipts.len() as u64).sum()
    }

    pub fn bytes(&self) -> u64 {
        self.documents.iter().map(|d| d.item.size + d.receipts.iter().map(|r| r.size).sum::<u64>()).sum()
    }

    /// The first record the export covers.
    pub fn first_seq(&self) -> u64 {
        self.after + 1
    }
}

/// The message hashes a record of `mailbox` mentions.
fn hashes_of<'a>(ev: &'a Event, mailbox: &str) -> Vec<&'a str> {
    if ev.mailbox() != Some(mailbox) {
        return Vec::new();
    }
    match ev {
        Event::Archived { hash, .. } | Event::Labeled { hash, .. } => vec![hash.as_str()],
        Event::Purged { hashes, .. }
        | Event::Unlabeled { hashes, .. }
        | Event::Hidden { hashes, .. }
        | Event::ProviderDeleted { hashes, .. }
        | Event::HoldPlaced { hashes, .. } => hashes.iter().map(String::as_str).collect(),
        Event::Handled { items, .. } => items.iter().map(|i| i.hash.as_str()).collect(),
        Event::Expired { items, .. } => items.iter().map(|i| i.hash.as_str()).collect(),
        _ => Vec::new(),
    }
}

/// Read the journal once and decide what the export holds.
pub fn plan(
    journal: &JournalReader,
    mailbox: &str,
    range: Range,
    progress: impl FnMut(u64, u64),
) -> Result<Plan, AuditError> {
    let mut after = 0u64;
    let mut head = 0u64;
    let mut items: Vec<Item> = Vec::new();
    let mut by_hash: HashMap<String, usize> = HashMap::new();
    let mut gone: HashSet<usize> = HashSet::new();
    // (seq, line, the candidate indexes it concerns)
    let mut lines: Vec<(u64, String, Vec<usize>)> = Vec::new();
    // Every sent message of the mailbox (key → hash), for receipts whose
    // sent message was exported before.
    let mut sent: HashMap<String, String> = HashMap::new();
    let mut anchor: Option<(u64, String, String, String, String)> = None; // (anchored seq, hash, token, its SHA-256, line)
    crate::audit::scan(journal, progress, |f| {
        let rec = &f.record;
        head = rec.seq;
        match &rec.event {
            Event::Exported { mailbox: m, last_seq, partial: false, .. }
                if m == mailbox && range == Range::SinceLast =>
            {
                // Everything up to it was exported: forget it.
                after = after.max(*last_seq);
                let keep = items.iter().position(|i| i.seq > after).unwrap_or(items.len());
                // Indexes shift: rebuild from what is kept.
                items.drain(..keep);
                by_hash = items.iter().enumerate().map(|(i, it)| (it.hash.clone(), i)).collect();
                gone = gone.iter().filter(|&&g| g >= keep).map(|g| g - keep).collect();
                lines.retain(|(s, ..)| *s > after);
                for l in &mut lines {
                    l.2 = l.2.iter().filter(|&&i| i >= keep).map(|i| i - keep).collect();
                }
            }
            Event::Anchored { seq, hash, token, token_sha256, .. } => {
                anchor = Some((*seq, hash.clone(), token.clone(), token_sha256.clone(), f.line.clone()));
            }
            _ => {}
        }
        if let Event::Archived { mailbox: m, folder, hash, size, internal_date, duplicate, pec, .. } = &rec.event {
            if m == mailbox {
                let meta = pec.as_ref().and_then(|p| p.meta()).cloned();
                if let Some(k) = meta.as_ref().and_then(|p| p.sent.as_ref()) {
                    sent.insert(k.key.clone(), hash.clone());
                }
                let in_range = match range {
                    Range::Dates { since, until } => {
                        since.is_none_or(|s| rec.time >= s) && until.is_none_or(|u| rec.time < u)
                    }
                    _ => true,
                };
                let known = by_hash.get(hash).is_some_and(|i| !gone.contains(i));
                if !duplicate && in_range && !known {
                    by_hash.insert(hash.clone(), items.len());
                    items.push(Item {
                        seq: rec.seq,
                        hash: hash.clone(),
                        size: *size,
                        folder: folder.clone(),
                        internal_date: *internal_date,
                        archived: rec.time,
                        pec: meta,
                    });
                }
            }
        }
        let about: Vec<usize> =
            hashes_of(&rec.event, mailbox).into_iter().filter_map(|h| by_hash.get(h).copied()).collect();
        if let Event::Expired { .. } = &rec.event {
            // Their blobs may be gone: such messages are not exported.
            gone.extend(about.iter().copied());
        } else if !about.is_empty() {
            lines.push((rec.seq, f.line, about));
        }
        Ok(())
    })?;
    let kept: Vec<Option<Item>> =
        items.into_iter().enumerate().map(|(i, it)| if gone.contains(&i) { None } else { Some(it) }).collect();
    let records: Vec<String> =
        lines.into_iter().filter(|(_, _, about)| about.iter().any(|i| kept[*i].is_some())).map(|(_, l, _)| l).collect();
    let items: Vec<Item> = kept.into_iter().flatten().collect();
    let documents = correlate(items, &sent);
    let anchor = match anchor {
        Some((seq, hash, token, token_sha256, line)) => {
            let anchored = record_line(journal, seq)?;
            Some(Anchor { seq, hash, token_name: token, token_sha256, lines: vec![anchored, line] })
        }
        None => None,
    };
    Ok(Plan { mailbox: mailbox.to_string(), after, head, documents, records, anchor })
}

/// Receipts go with the sent message they are about when it is in the
/// export; otherwise they are documents of their own (linked to the sent
/// message when it was archived before). Order: by archive record.
fn correlate(items: Vec<Item>, sent: &HashMap<String, String>) -> Vec<Document> {
    let local: HashMap<String, usize> = {
        let mut m = HashMap::new();
        let mut n = 0;
        for it in &items {
            if !it.is_receipt() {
                if let Some(k) = it.sent_key() {
                    m.entry(k.to_string()).or_insert(n);
                }
                n += 1;
            }
        }
        m
    };
    let mut docs: Vec<Document> = Vec::new();
    let mut loose: Vec<Item> = Vec::new();
    for it in items {
        if !it.is_receipt() {
            docs.push(Document { item: it, receipts: Vec::new(), linked: None });
        } else {
            loose.push(it);
        }
    }
    let mut alone = Vec::new();
    for r in loose {
        match r.receipt_key().and_then(|k| local.get(k)) {
            Some(&i) => docs[i].receipts.push(r),
            None => {
                let linked = r.receipt_key().and_then(|k| sent.get(k)).cloned();
                alone.push(Document { item: r, receipts: Vec::new(), linked });
            }
        }
    }
    docs.extend(alone);
    docs.sort_by_key(|d| d.item.seq);
    docs
}

/// The line of record `seq`.
fn record_line(journal: &JournalReader, seq: u64) -> Result<String, AuditError> {
    enum Stop {
        Io(std::io::Error),
        Found(String),
    }
    impl From<std::io::Error> for Stop {
        fn from(e: std::io::Error) -> Self {
            Stop::Io(e)
        }
    }
    match journal.scan_after(
        seq.saturating_sub(1),
        |_, _| {},
        |l| {
            if l.parsed.as_ref().is_ok_and(|(r, _)| r.seq == seq) {
                return Err(Stop::Found(l.text));
            }
            Ok(())
        },
    ) {
        Err(Stop::Found(l)) => Ok(l),
        Err(Stop::Io(e)) => Err(e.into()),
        Ok(()) => Err(AuditError::BadExport(format!("the journal has no record {seq}, which an anchor names"))),
    }
}
