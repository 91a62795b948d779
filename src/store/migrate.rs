//! `pecgate store migrate`: a data directory of one machine into a cluster
//! (PostgreSQL + bucket). Resumable: what the cluster already holds is
//! checked, not copied again.
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

use super::blobs::{BlobReader, FileBlobs};
use super::bucket::Bucket;
use super::cluster::{ClusterOptions, Link, Rt};
use super::journal::{decode_line, JournalReader, GENESIS};
use super::JOURNAL_DIR;

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
