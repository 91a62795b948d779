//! `pecgate store migrate`: a data directory of one machine into a cluster
//! (PostgreSQL + bucket), or a cluster's archive back into a data
//! directory ([`from_cluster`]). Resumable: what the destination already
//! holds is checked, not copied again.
//!
//! 1. Every blob file is read back against its name (SHA-256) and put in
//!    the bucket (already there: skipped after a HEAD).
//! 2. The journal's records after the shared journal's head are checked
//!    (hash, number, link to the record before) and inserted in their
//!    canonical form, batch by batch, each batch under the chain head's
//!    lock with the head moved to its last record. The shared journal
//!    must be a prefix of the local one (same hash at its head), or
//!    nothing is written.
//!
//! The source must not change meanwhile: stop the daemon that writes it.

use std::path::Path;

use super::blobs::{sha256_hex, BlobReader, FileBlobs};
use super::bucket::Bucket;
use super::cluster::{ClusterOptions, Link, Rt};
use super::journal::{decode_line, Journal, JournalReader, GENESIS};
use super::record::Event;
use super::{anchor_files, ANCHOR_DIR, JOURNAL_DIR};

/// What a migration did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Migrated {
    pub blobs_copied: u64,
    pub blobs_present: u64,
    pub records_copied: u64,
    pub records_present: u64,
}

const BATCH: usize = 2_000;

pub fn to_cluster(
    data_dir: &Path,
    to: &ClusterOptions,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<Migrated, String> {
    let mut out = Migrated::default();
    let rt = Rt::new("pecgate-migrate").map_err(|e| e.to_string())?;
    let mut link = Link::open(rt, to, GENESIS)?;
    let (head, head_hash) = link.head()?;
    let journal = JournalReader::at(data_dir.join(JOURNAL_DIR));
    // Before anything is written: the shared journal must be a prefix of
    // this one.
    let mut n = 0u64;
    for line in journal.lines().map_err(|e| format!("reading the journal: {e}"))? {
        let line = line.map_err(|e| format!("reading the journal: {e}"))?;
        n += 1;
        if n == head {
            let (_, hash) =
                decode_line(&line.text).map_err(|e| format!("journal {} line {}: {e}", line.segment, line.line_no))?;
            if hash != head_hash {
                return Err(format!(
                    "the shared journal's record {head} is not this data directory's: it belongs to another archive; nothing written"
                ));
            }
            break;
        }
    }
    if n < head {
        return Err(format!("the shared journal holds {head} records, this data directory {n}: it belongs to another archive; nothing written"));
    }
    let bucket = Bucket::open(&to.bucket).map_err(|e| format!("bucket: {e}"))?;
    let files = FileBlobs::open(&data_dir.join("blobs")).map_err(|e| format!("{}: {e}", data_dir.display()))?.0;
    let reader = BlobReader::open_read_only(data_dir);
    let hashes = files.list().map_err(|e| format!("listing blobs: {e}"))?;
    let total = hashes.len() as u64;
    for (i, h) in hashes.iter().enumerate() {
        let size = reader.size(h).map_err(|e| format!("blob {h}: {e}"))?;
        match bucket.size(h) {
            Ok(s) if s == size => out.blobs_present += 1,
            Ok(s) => {
                return Err(format!(
                    "blob {h}: the bucket holds {s} bytes, the data directory {size}: refusing to go on"
                ))
            }
            Err(_) => {
                // Read back against its name before it leaves.
                let bytes = reader.get(h).map_err(|e| format!("blob {h}: {e}"))?;
                bucket.put(&bytes).map_err(|e| format!("putting blob {h}: {e}"))?;
                out.blobs_copied += 1;
            }
        }
        progress("blobs", i as u64 + 1, total);
    }

    let mut prev = GENESIS.to_string();
    let mut batch: Vec<(u64, String)> = Vec::with_capacity(BATCH);
    let mut last = 0u64;
    let flush = |link: &mut Link, batch: &mut Vec<(u64, String)>, prev: &str, copied: &mut u64| -> Result<(), String> {
        if batch.is_empty() {
            return Ok(());
        }
        let first = batch[0].0;
        // Under the head's lock: nobody else may write meanwhile.
        let theirs = link.begin(first - 1)?;
        if !theirs.is_empty() {
            link.rollback();
            return Err(format!(
                "the shared journal gained records beyond {} meanwhile: is a node running?",
                first - 1
            ));
        }
        let n = batch.len() as u64;
        let end = batch[batch.len() - 1].0;
        link.commit(batch, (end, prev.to_string()))?;
        *copied += n;
        batch.clear();
        Ok(())
    };
    for line in journal.lines().map_err(|e| format!("reading the journal: {e}"))? {
        let line = line.map_err(|e| format!("reading the journal: {e}"))?;
        let (rec, hash) =
            decode_line(&line.text).map_err(|e| format!("journal {} line {}: {e}", line.segment, line.line_no))?;
        if rec.seq != last + 1 || rec.prev != prev {
            return Err(format!(
                "journal {} line {}: does not continue the chain (run `pecgate audit verify`)",
                line.segment, line.line_no
            ));
        }
        last = rec.seq;
        if rec.seq <= head {
            if rec.seq == head && hash != head_hash {
                return Err(format!(
                    "the shared journal's record {head} is not this data directory's: it belongs to another archive; nothing written"
                ));
            }
            out.records_present += 1;
        } else {
            batch.push((rec.seq, line.text));
        }
        prev = hash;
        if batch.len() >= BATCH {
            flush(&mut link, &mut batch, &prev, &mut out.records_copied)?;
            progress("records", last, 0);
        }
    }
    if last < head {
        return Err(format!(
            "the shared journal holds {head} records, this data directory {last}: it belongs to another archive"
        ));
    }
    flush(&mut link, &mut batch, &prev, &mut out.records_copied)?;
    progress("records", last, last);
    Ok(out)
}

/// A cluster's archive into the data directory `data_dir` (new, or holding
/// an earlier copy of the same archive), for a return to one machine:
///
/// 1. every blob in the bucket, checked against its name, into `blobs/`
///    (fsynced; one already there is kept);
/// 2. the shared journal's records after this directory's last one, each
///    checked (hash, number, link) as a node's copy is, into `journal/`
///    in segments of `segment_bytes`, fsynced at the end; the time-stamp
///    token each `anchor` record names, from the bucket by its SHA-256,
///    into `anchors/` under the name the record gives.
///
/// This directory's journal must be a prefix of the shared one, or nothing
/// is written. The index is built when the archive is next opened. Stop
/// the cluster's nodes first: records committed meanwhile may or may not
/// be copied (running it again copies them).
pub fn from_cluster(
    from: &ClusterOptions,
    data_dir: &Path,
    segment_bytes: u64,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<Migrated, String> {
    let mut out = Migrated::default();
    let rt = Rt::new("pecgate-migrate").map_err(|e| e.to_string())?;
    let mut link = Link::open(rt, from, GENESIS)?;
    let (head, _) = link.head()?;
    let at = |e: std::io::Error| format!("{}: {e}", data_dir.display());
    let (mut journal, _) = Journal::open(&data_dir.join(JOURNAL_DIR), segment_bytes).map_err(at)?;
    let mine = journal.last_seq();
    let another = || {
        format!(
            "{} holds {mine} journal records that are not the cluster's first (the cluster holds {head}): it belongs to another archive; nothing written",
            data_dir.display()
        )
    };
    if mine > head {
        return Err(another());
    }
    if mine > 0 {
        let theirs = link.read_after(mine - 1, 1)?;
        let same = theirs.first().and_then(|(_, l)| decode_line(l).ok()).is_some_and(|(_, h)| h == journal.last_hash());
        if !same {
            return Err(another());
        }
    }
    out.records_present = mine;

    // The blobs first: every record copied below names blobs already here.
    let bucket = Bucket::open(&from.bucket).map_err(|e| format!("bucket: {e}"))?;
    let files = FileBlobs::open(&data_dir.join("blobs")).map_err(at)?.0;
    let hashes = bucket.list().map_err(|e| format!("listing the bucket: {e}"))?;
    let total = hashes.len() as u64;
    for (i, h) in hashes.iter().enumerate() {
        if files.size(h).is_ok() {
            out.blobs_present += 1;
        } else {
            let bytes = bucket.get(h).map_err(|e| format!("blob {h}: {e}"))?;
            if sha256_hex(&bytes) != *h {
                return Err(format!("blob {h}: the bucket's bytes do not hash to its name; refusing to go on"));
            }
            files.put(&bytes).map_err(|e| format!("writing blob {h}: {e}"))?;
            out.blobs_copied += 1;
        }
        progress("blobs", i as u64 + 1, total);
    }

    let anchors = data_dir.join(ANCHOR_DIR);
    loop {
        let lines = link.read_after(journal.last_seq(), BATCH as i64)?;
        if lines.is_empty() {
            break;
        }
        // Tokens before the records naming them: an interrupted run goes on
        // after the last record copied, whose tokens are then here.
        let named: Vec<Event> = lines
            .iter()
            .filter_map(|(_, l)| decode_line(l).ok())
            .map(|(r, _)| r.event)
            .filter(|e| matches!(e, Event::Anchored { .. }))
            .collect();
        for e in &named {
            if let Event::Anchored { seq, token, token_sha256, .. } = e {
                let der = bucket.get(token_sha256).map_err(|e| format!("the time-stamp token {token}: {e}"))?;
                if sha256_hex(&der) != *token_sha256 {
                    return Err(format!("the time-stamp token {token}: the bucket's bytes are not the record's"));
                }
                let name = anchor_files::put(&anchors, *seq, &der).map_err(at)?;
                if name != *token {
                    return Err(format!("the time-stamp token {token} would be named {name} here"));
                }
            }
        }
        let records = journal.mirror(lines).map_err(at)?;
        out.records_copied += records.len() as u64;
        progress("records", journal.last_seq(), head.max(journal.last_seq()));
    }
    journal.sync().map_err(at)?;
    Ok(out)
}
