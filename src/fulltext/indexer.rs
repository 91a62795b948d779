//! The full-text indexer: follows the journal's `archived` records (the
//! blob is durable before its record, so the bytes are there), extracts
//! each new message's text and adds it to the index, then commits with the
//! last record read. It runs beside archiving in the daemon and never
//! delays it: archiving does not wait for the index. After a restart it
//! goes on from the record its last commit names; `pecgate search
//! reindex` starts from an empty index.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::extract::{extract, Limits};
use super::{Doc, FullText};
use crate::store::{Event, Store, StoreError};

/// Records read per pass (one commit each).
const PASS_RECORDS: usize = 20_000;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Pass {
    /// The last journal record read (and committed).
    pub seq: u64,
    pub records: usize,
    pub documents: usize,
}

enum Stop {
    Full,
    Store(StoreError),
}

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Stop {
        Stop::Store(StoreError::Invalid(format!("reading the journal: {e}")))
    }
}

/// The kind `pecgate search --kind` filters on.
fn kind_of(folder: &str, raw: &[u8]) -> &'static str {
    if folder == "Sent" {
        return "sent";
    }
    let c = crate::pec::classify(raw);
    match c.folder() {
        crate::pec::PecFolder::Receipts => "receipt",
        crate::pec::PecFolder::Anomalies => "anomaly",
        crate::pec::PecFolder::Inbox if c.kind == crate::pec::PecKind::PostaCertificata => "certified",
        crate::pec::PecFolder::Inbox => "plain",
    }
}

/// Index the records after the index's last, at most `max_records` of
/// them; `progress` gets journal bytes read and the total.
pub fn pass(
    store: &Store,
    ft: &FullText,
    max_records: usize,
    limits: &Limits,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Pass, String> {
    let after = ft.indexed_seq();
    let mut p = Pass { seq: after, ..Pass::default() };
    let mut failure: Option<String> = None;
    let r = store.journal().scan_after(after, progress, |line| -> Result<(), Stop> {
        let Ok((rec, _)) = line.parsed else {
            // A damaged line: `audit verify` reports it; the index goes on.
            return Ok(());
        };
        if rec.seq <= after {
            return Ok(());
        }
        match &rec.event {
            Event::Archived { mailbox, folder, hash, internal_date, duplicate: false, .. } => match store.get_blob(hash) {
                Ok(raw) => {
                    let text = extract(&raw, limits);
                    if !text.skipped.is_empty() {
                        tracing::info!(%mailbox, %hash, skipped = %text.skipped.join("; "), "full-text: attachments left out of the index");
                    }
                    let doc = Doc { mailbox: mailbox.clone(), hash: hash.clone(), date: *internal_date, kind: kind_of(folder, &raw), text };
                    if let Err(e) = ft.add(&doc) {
                        failure = Some(e.to_string());
                        return Err(Stop::Full);
                    }
                    p.documents += 1;
                }
                // Removed by retention since (a reindex reads old records).
                Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    tracing::debug!(%mailbox, %hash, "full-text: an archived message's blob is gone (expired); not indexed")
                }
                Err(e) => tracing::warn!(%mailbox, %hash, error = %e, "full-text: cannot read an archived message; not indexed"),
            },
            Event::Expired { mailbox, items, .. } => {
                for i in items {
                    if let Err(e) = ft.delete(mailbox, &i.hash) {
                        failure = Some(e.to_string());
                        return Err(Stop::Full);
                    }
                }
            }
            Event::Purged { mailbox, hashes, .. } => {
                for h in hashes {
                    if let Err(e) = ft.delete(mailbox, h) {
                        failure = Some(e.to_string());
                        return Err(Stop::Full);
                    }
                }
            }
            _ => {}
        }
        p.seq = rec.seq;
        p.records += 1;
        if p.records >= max_records {
            return Err(Stop::Full);
        }
        Ok(())
    });
    match r {
        Ok(()) | Err(Stop::Full) => {}
        Err(Stop::Store(e)) => return Err(e.to_string()),
    }
    if let Some(f) = failure {
        return Err(f);
    }
    if p.seq > after {
        ft.commit(p.seq).map_err(|e| e.to_string())?;
    }
    Ok(p)
}

/// Follow the journal until `shutdown`.
pub async fn run(store: Store, ft: Arc<FullText>, mut shutdown: watch::Receiver<bool>) {
    let mut notices = store.subscribe();
    let limits = Limits::default();
    let mut logged_start = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let applied = store.applied_seq().unwrap_or(0);
        let at = ft.indexed_seq();
        crate::counters::fulltext_backlog().set(applied.saturating_sub(at) as i64);
        crate::counters::fulltext_documents().set(ft.documents() as i64);
        if applied > at {
            if !logged_start && applied - at > PASS_RECORDS as u64 {
                tracing::info!(indexed = at, journal = applied, "full-text: catching up with the archive");
            }
            logged_start = true;
            let (s, f) = (store.clone(), ft.clone());
            let r = tokio::task::spawn_blocking(move || pass(&s, &f, PASS_RECORDS, &limits, &mut |_, _| {})).await;
            match r {
                Ok(Ok(p)) => {
                    tracing::debug!(seq = p.seq, records = p.records, documents = p.documents, "full-text: indexed");
                    if p.records > 0 {
                        continue;
                    }
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "full-text: indexing failed; retrying in 10 s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                        _ = shutdown.changed() => return,
                    }
                    continue;
                }
                Err(e) => tracing::error!(error = %e, "full-text: the indexing task failed"),
            }
        }
        tokio::select! {
            _ = notices.recv() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
