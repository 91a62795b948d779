//! The full-text indexer: follows the journal's `archived` records (the
//! blob is durable before its record, so the bytes are there), extracts
//! each new message's text and adds it to the index, then commits with the
//! last record read. It runs beside archiving in the daemon and never
//! delays it: archiving does not wait for the index. After a restart it
//! goes on from the record its last commit names; `pecgate search
//! reindex` starts from an empty index.
//!
//! Messages are read, extracted and analysed [`BATCH`] at a time on
//! [`Workers`] (a thread per core), then added to the index in journal
//! order; tantivy's own threads write the segments.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::extract::{extract, Limits};
use super::{Analysis, Doc, FullText, Prepared};
use crate::store::{Event, JournalReader, Store, StoreError};

/// Records read per pass (one commit each).
const PASS_RECORDS: usize = 20_000;

/// While messages trickle in (a campaign's receipts, one by one), a commit
/// at most this often: every commit writes a segment (a fresh writer's
/// tables zeroed, a term dictionary built) and tantivy's merges follow,
/// so a commit per message cost more than indexing it. A SEARCH that
/// waits for the index cuts the gap short ([`FullText::hurry`]).
const COMMIT_GAP: Duration = Duration::from_secs(5);

/// While messages arrive (the provider's pull, a campaign's notices), a
/// pass waits until their blobs have stopped coming for this long: on two
/// cores, indexing beside a pull from the provider made the pull a fifth
/// slower, even at the lowest priority (BENCHMARKS.md, "Ingest").
const QUIET: Duration = Duration::from_millis(500);

/// The longest a pass waits for such a pause: under a stream that never
/// pauses (a million-message mailbox pulled for the first time), the index
/// still follows, a pass at a time.
const MAX_DEFER: Duration = Duration::from_secs(10);

/// Messages read, extracted and analysed together, then added in order.
pub const BATCH: usize = 256;

/// Threads that make documents out of messages (extraction and
/// analysis, most of indexing's work), each with its [`Analysis`] (and
/// the stems it remembers) from batch to batch.
pub struct Workers {
    threads: usize,
    /// Made at the first documents (a pass over flag changes needs none).
    analyses: Vec<Analysis>,
}

impl Default for Workers {
    fn default() -> Workers {
        Workers::new()
    }
}

impl Workers {
    /// One per core, up to 4.
    pub fn new() -> Workers {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
        Workers { threads, analyses: Vec::new() }
    }

    /// Each item's document (`make`: `None` when there is none), prepared
    /// for `ft`, in the items' order: the items split between the threads.
    pub fn prepare<T: Sync>(
        &mut self,
        ft: &FullText,
        items: &[T],
        make: &(dyn Fn(&T) -> Option<Doc> + Sync),
    ) -> Vec<Option<Prepared>> {
        if items.is_empty() {
            return Vec::new();
        }
        if self.analyses.is_empty() {
            self.analyses = (0..self.threads).map(|_| Analysis::new()).collect();
        }
        let per = items.len().div_ceil(self.analyses.len()).max(1);
        if items.len() <= 1 || self.analyses.len() == 1 {
            let a = &mut self.analyses[0];
            return items.iter().map(|i| make(i).map(|d| ft.prepare(&d, a))).collect();
        }
        std::thread::scope(|s| {
            let threads: Vec<_> = items
                .chunks(per)
                .zip(self.analyses.iter_mut())
                .map(|(chunk, a)| {
                    s.spawn(move || chunk.iter().map(|i| make(i).map(|d| ft.prepare(&d, a))).collect::<Vec<_>>())
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                .collect()
        })
    }
}

/// An archived message to index.
struct Job {
    mailbox: String,
    folder: String,
    hash: String,
    date: DateTime<Utc>,
}

/// Index `jobs` (emptied): read, extract and analyse them on `workers`,
/// add them in order. Returns the documents added.
fn flush(
    store: &Store,
    ft: &FullText,
    limits: &Limits,
    workers: &mut Workers,
    jobs: &mut Vec<Job>,
) -> Result<usize, String> {
    let make = |j: &Job| match store.get_blob(&j.hash) {
        Ok(raw) => {
            let text = extract(&raw, limits);
            if !text.skipped.is_empty() {
                tracing::info!(mailbox = %j.mailbox, hash = %j.hash, skipped = %text.skipped.join("; "), "full-text: attachments left out of the index");
            }
            Some(Doc {
                mailbox: j.mailbox.clone(),
                hash: j.hash.clone(),
                date: j.date,
                kind: kind_of(&j.folder, &raw),
                text,
            })
        }
        // Removed by retention since (a reindex reads old records).
        Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!(mailbox = %j.mailbox, hash = %j.hash, "full-text: an archived message's blob is gone (expired); not indexed");
            None
        }
        Err(e) => {
            tracing::warn!(mailbox = %j.mailbox, hash = %j.hash, error = %e, "full-text: cannot read an archived message; not indexed");
            None
        }
    };
    let mut added = 0;
    for p in workers.prepare(ft, jobs, &make).into_iter().flatten() {
        ft.add_prepared(p).map_err(|e| e.to_string())?;
        added += 1;
    }
    jobs.clear();
    Ok(added)
}

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
    journal: &mut JournalReader,
    max_records: usize,
    limits: &Limits,
    progress: &mut dyn FnMut(u64, u64),
    stop: &dyn Fn() -> bool,
) -> Result<Pass, String> {
    let after = ft.indexed_seq();
    let mut p = Pass { seq: after, ..Pass::default() };
    let mut failure: Option<String> = None;
    let mut workers = Workers::new();
    let mut jobs = Vec::with_capacity(BATCH);
    let mut deleted = false;
    let r = journal.scan_after_resuming(after, progress, |line| -> Result<(), Stop> {
        let Ok((rec, _)) = line.parsed else {
            // A damaged line: `audit verify` reports it; the index goes on.
            return Ok(());
        };
        if rec.seq <= after {
            return Ok(());
        }
        match &rec.event {
            Event::Archived { mailbox, folder, hash, internal_date, duplicate: false, .. } => {
                jobs.push(Job {
                    mailbox: mailbox.clone(),
                    folder: folder.clone(),
                    hash: hash.clone(),
                    date: *internal_date,
                });
                if jobs.len() >= BATCH {
                    match flush(store, ft, limits, &mut workers, &mut jobs) {
                        Ok(n) => p.documents += n,
                        Err(e) => {
                            failure = Some(e);
                            return Err(Stop::Full);
                        }
                    }
                }
            }
            // Deletions after the additions before them.
            Event::Expired { .. } | Event::Purged { .. } if !jobs.is_empty() => {
                match flush(store, ft, limits, &mut workers, &mut jobs) {
                    Ok(n) => p.documents += n,
                    Err(e) => {
                        failure = Some(e);
                        return Err(Stop::Full);
                    }
                }
            }
            _ => {}
        }
        match &rec.event {
            Event::Expired { mailbox, items, .. } => {
                deleted = true;
                for i in items {
                    if let Err(e) = ft.delete(mailbox, &i.hash) {
                        failure = Some(e.to_string());
                        return Err(Stop::Full);
                    }
                }
            }
            Event::Purged { mailbox, hashes, .. } => {
                deleted = true;
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
        // A stopping daemon ends the pass early (what it did is committed):
        // blobs read from a bucket make a long pass.
        if p.records >= max_records || (p.records.is_multiple_of(256) && stop()) {
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
    p.documents += flush(store, ft, limits, &mut workers, &mut jobs)?;
    if p.documents > 0 || deleted {
        ft.commit(p.seq).map_err(|e| e.to_string())?;
    } else if p.seq > after {
        // Nothing to index (flag changes, logins): no commit for them.
        ft.passed(p.seq);
    }
    Ok(p)
}

/// How much longer to wait for a pause in arriving messages ([`QUIET`]
/// since the last blob written), if they are arriving.
fn arriving(store: &Store) -> Option<Duration> {
    let since = store.last_blob_written()?.elapsed();
    QUIET.checked_sub(since).filter(|w| !w.is_zero())
}

/// Follow the journal until `shutdown`.
pub async fn run(store: Store, ft: Arc<FullText>, mut shutdown: watch::Receiver<bool>) {
    let mut notices = store.subscribe();
    let limits = Limits::default();
    let mut logged_start = false;
    // Kept from pass to pass: each goes on where the last one stopped.
    let mut journal = store.journal();
    let mut committed: Option<std::time::Instant> = None;
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
            // Messages arriving: index in a pause of theirs, unless
            // somebody is searching.
            let mut hurried = false;
            let deferred = std::time::Instant::now();
            while let Some(wait) = arriving(&store).filter(|_| deferred.elapsed() < MAX_DEFER) {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = ft.hurried() => {
                        hurried = true;
                        break;
                    }
                    _ = shutdown.changed() => return,
                }
            }
            // A little to index, and a commit not long ago: gather more.
            let gap = committed.map_or(Duration::ZERO, |t| COMMIT_GAP.saturating_sub(t.elapsed()));
            if !hurried && applied - at < PASS_RECORDS as u64 && !gap.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(gap) => {}
                    _ = ft.hurried() => {}
                    _ = shutdown.changed() => return,
                }
            }
            let (s, f, sd) = (store.clone(), ft.clone(), shutdown.clone());
            let mut j = std::mem::replace(&mut journal, store.journal());
            // At the lowest CPU priority: archiving goes first.
            let r = crate::background::run("fulltext", move || {
                let p = pass(&s, &f, &mut j, PASS_RECORDS, &limits, &mut |_, _| {}, &|| *sd.borrow());
                (p, j)
            })
            .await
            .map(|(p, j)| {
                journal = j;
                p
            });
            match r {
                Ok(Ok(p)) => {
                    tracing::debug!(seq = p.seq, records = p.records, documents = p.documents, "full-text: indexed");
                    if p.documents > 0 {
                        committed = Some(std::time::Instant::now());
                    }
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

#[cfg(all(test, feature = "fulltext"))]
mod tests {
    use super::*;
    use crate::store::{Audit, Change, StoreOptions};

    #[tokio::test]
    async fn a_message_added_and_removed_in_one_batch_stays_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let (mb, folder) = ("~mario", "Drafts");
        let mut archive = Vec::new();
        for text in ["Primo sollecito di pagamento", "Secondo sollecito di pagamento"] {
            let blob = store.put_blob(format!("Subject: bozza\r\n\r\n{text}\r\n").into_bytes()).await.unwrap();
            let change = Change::Archive {
                mailbox: mb.into(),
                folder: folder.into(),
                blob,
                internal_date: Utc::now(),
                flags: vec![],
                provider: None,
                pec: None,
                handling: None,
            };
            archive.push((Audit::system("test", "archive"), change));
        }
        let done = store.commit_batch(archive).await.unwrap();
        let Event::Archived { uid, .. } = &done[0].event else { panic!("{:?}", done[0].event) };
        let purge = Change::Purge { mailbox: mb.into(), folder: folder.into(), uids: vec![*uid] };
        store.commit(Audit::system("test", "purge"), purge).await.unwrap();
        // Both additions and the removal are read in one pass, the
        // additions still waiting for their batch when the removal comes.
        let ft = FullText::open(dir.path(), true).unwrap();
        let p = pass(&store, &ft, &mut store.journal(), 1000, &Limits::default(), &mut |_, _| {}, &|| false).unwrap();
        assert_eq!(p.documents, 2);
        let found = ft.imap_matches(mb, "sollecito", false).unwrap().unwrap();
        assert_eq!(found.len(), 1, "the purged message is not found, the other one is");
    }

    /// While messages arrive, the indexer waits for a pause in their blob
    /// writes; a search does not wait for that pause; once they stop, the
    /// index catches up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn indexing_waits_for_a_pause_in_arriving_messages() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let ft = Arc::new(FullText::open(dir.path(), true).unwrap());
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(run(store.clone(), ft.clone(), rx));
        let archive = |i: usize| {
            let store = store.clone();
            async move {
                let blob =
                    store.put_blob(format!("Subject: n. {i}\r\n\r\nAvviso di pagamento {i}\r\n").into_bytes()).await;
                let change = Change::Archive {
                    mailbox: "prot".into(),
                    folder: "INBOX".into(),
                    blob: blob.unwrap(),
                    internal_date: Utc::now(),
                    flags: vec![],
                    provider: None,
                    pec: None,
                    handling: None,
                };
                store.commit(Audit::system("test", "archive"), change).await.unwrap();
            }
        };
        assert_eq!(arriving(&store), None, "no message arrived yet");
        // A stream of messages for three pauses' worth of time: nothing
        // indexed meanwhile. (A blob write stalled past half a pause would
        // have let the indexer in: then nothing can be said.)
        let (started, mut last, mut longest) = (std::time::Instant::now(), std::time::Instant::now(), Duration::ZERO);
        let mut i = 0;
        while started.elapsed() < QUIET * 3 {
            archive(i).await;
            assert!(arriving(&store).is_some_and(|w| w <= QUIET));
            longest = longest.max(last.elapsed());
            last = std::time::Instant::now();
            i += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if longest < QUIET / 2 {
            assert_eq!(ft.indexed_seq(), 0, "indexed while {i} messages arrived");
        }
        // A search does not wait for the pause.
        ft.hurry();
        let hurried = std::time::Instant::now();
        while ft.indexed_seq() == 0 {
            archive(i).await;
            i += 1;
            assert!(hurried.elapsed() < Duration::from_secs(30), "a search's hurry did not get the index going");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Once they stop, everything is indexed.
        let target = store.applied_seq().unwrap();
        let stopped = std::time::Instant::now();
        while ft.indexed_seq() < target {
            assert!(
                stopped.elapsed() < Duration::from_secs(60),
                "the index did not catch up after the messages stopped"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(ft.documents(), i as u64);
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}
