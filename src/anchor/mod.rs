//! Anchoring the audit chain: an RFC 3161 time-stamping authority (TSA)
//! certifies, every `every_records` records or `every` (whichever comes
//! first, and only when something was recorded since), that the chain's
//! head existed then. The chain alone proves no record was edited; the
//! tokens also prove none was cut off the end: a journal that ends before
//! an anchored record, or whose record there has another hash, fails
//! `pecgate audit verify`, which names that record.
//!
//! A token is the TSA's whole DER reply, kept beside the journal
//! (`anchors/<seq>.tsr`) and named by an `anchored` record with its
//! SHA-256, so removing or replacing a token file is detected too.

pub mod client;
pub mod tsp;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::config::AnchorConfig;
use crate::store::{Audit, Change, Event, JournalReader, Store};

/// Time-stamp the chain head now: request, verify the reply, keep the
/// token, record it. Returns the anchored record's seq.
pub async fn anchor_once(store: &Store, cfg: &AnchorConfig, ca_pem: &[u8]) -> anyhow::Result<u64> {
    let (seq, hash) = store.chain_head();
    anyhow::ensure!(seq > 0, "the journal is empty");
    let digest = hex::decode(&hash)?;
    let nonce = rand::random::<u64>() >> 1;
    let query = tsp::request(&digest, nonce, cfg.policy.as_deref())?;
    let reply = client::post(cfg, query).await?;
    let stamp = tsp::verify(&reply, ca_pem, &digest, Some(nonce))?;
    let token = store.put_anchor_token(seq, &reply)?;
    let event =
        Event::Anchored { seq, hash, token, token_sha256: hex::encode(Sha256::digest(&reply)), time: stamp.gen_time };
    store.commit(Audit::system("system", "anchor"), Change::Conservation(event)).await?;
    Ok(seq)
}

/// The daemon's anchoring task, until `stop`.
pub async fn run(store: Store, cfg: AnchorConfig, mut stop: watch::Receiver<bool>) {
    let metrics = crate::counters::anchor();
    let mut last_ok = Instant::now();
    let mut failures = 0u32;
    let mut retry_at = Instant::now();
    // Our own `anchored` records are not news.
    let mut own = 0u64;
    loop {
        let (head, _) = store.chain_head();
        let last = store.last_anchor().unwrap_or(0);
        metrics.unanchored.set(head.saturating_sub(last.max(own)) as i64);
        let news = head > last.max(own);
        let due = news && (head - last >= cfg.every_records || last_ok.elapsed() >= cfg.every || last == 0);
        if due && Instant::now() >= retry_at {
            let ca = std::fs::read(&cfg.ca_file);
            let r = match ca {
                Ok(ca) => anchor_once(&store, &cfg, &ca).await,
                Err(e) => Err(anyhow::anyhow!("anchor.ca_file {}: {e}", cfg.ca_file.display())),
            };
            match r {
                Ok(seq) => {
                    tracing::info!(record = seq, url = %cfg.url, "audit chain anchored by the time-stamping authority");
                    metrics.last_success.set(Utc::now().timestamp());
                    metrics.anchored.set(seq as i64);
                    own = store.chain_head().0;
                    last_ok = Instant::now();
                    failures = 0;
                }
                Err(e) => {
                    failures += 1;
                    metrics.failures.inc();
                    let wait = client::backoff(failures);
                    tracing::error!(error = %format!("{e:#}"), url = %cfg.url, failures, retry_in = %humantime::format_duration(wait),
                        "anchoring the audit chain failed");
                    retry_at = Instant::now() + wait;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// What `audit verify` found about the anchors.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AnchorReport {
    /// Token files checked.
    pub tokens: u64,
    /// The newest anchored record and when the TSA stamped it.
    pub newest_record: Option<u64>,
    pub newest_time: Option<DateTime<Utc>>,
    /// Records after the newest anchor (not yet provably complete).
    pub unanchored_records: u64,
    /// Set when the signatures were not checked (no CA given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unchecked: Option<String>,
    /// The first problem, naming the record: verification fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken: Option<String>,
}

/// The bytes of the time-stamp token an `anchored` record names (`name`,
/// `sha256`): kept beside the journal of the node that anchored; in a
/// cluster, every other node reads it from the bucket (`bucket`) by its
/// SHA-256.
pub fn token_bytes(
    journal: &JournalReader,
    bucket: Option<&crate::store::BlobReader>,
    name: &str,
    sha256: &str,
) -> std::io::Result<Vec<u8>> {
    match (journal.anchor_token(name), bucket) {
        (Err(e), Some(b)) if e.kind() == std::io::ErrorKind::NotFound => b.get(sha256),
        (r, _) => r,
    }
}

/// Collects, during the chain walk, what the anchor check needs.
#[derive(Default)]
pub struct Collector {
    /// seq → the walked hash of the records token files here anchor.
    wanted: BTreeMap<u64, Option<String>>,
    /// `anchored` records: (its seq, the event).
    records: Vec<(u64, Event)>,
}

impl Collector {
    pub fn new(journal: &JournalReader) -> std::io::Result<(Collector, Vec<(u64, String)>)> {
        let files = journal.anchor_tokens()?;
        let wanted = files.iter().map(|(s, _)| (*s, None)).collect();
        Ok((Collector { wanted, ..Collector::default() }, files))
    }

    pub fn see(&mut self, rec: &crate::store::Record, hash: &str) {
        if let Some(slot) = self.wanted.get_mut(&rec.seq) {
            *slot = Some(hash.to_string());
        }
        if let Event::Anchored { .. } = &rec.event {
            self.records.push((rec.seq, rec.event.clone()));
        }
    }

    /// Check every token against the walked chain (`records` good records,
    /// `broken_at` the first bad one if the chain is broken): the token
    /// files here, and on a cluster node that did not anchor, the tokens
    /// the `anchored` records name, from the bucket. With no CA, only
    /// hashes are checked.
    pub fn check(
        mut self,
        journal: &JournalReader,
        bucket: Option<&crate::store::BlobReader>,
        files: &[(u64, String)],
        records: u64,
        ca_pem: Option<&[u8]>,
    ) -> AnchorReport {
        let mut rep = AnchorReport::default();
        if ca_pem.is_none() {
            rep.unchecked = Some("no [anchor] ca_file in the configuration: token signatures not checked".into());
        }
        let here: std::collections::HashSet<&str> = files.iter().map(|(_, n)| n.as_str()).collect();
        // Records that name a token: each must be there, unaltered. One
        // not kept here (another node anchored it) is then checked as a
        // file here is, once the hash of the record it is about is read
        // again (`later`: the walk did not know it would be wanted).
        let mut later = Vec::new();
        for (at, ev) in &self.records {
            let Event::Anchored { seq, token, token_sha256, .. } = ev else { continue };
            match token_bytes(journal, bucket, token, token_sha256) {
                Ok(b) if hex::encode(Sha256::digest(&b)) == *token_sha256 => {}
                Ok(_) => {
                    rep.broken = Some(format!(
                        "record {at} names the token {token} for record {seq}, and that file was altered (its SHA-256 differs)"
                    ));
                    return rep;
                }
                Err(e) => {
                    rep.broken = Some(format!("record {at} names the token {token} for record {seq}: {e}"));
                    return rep;
                }
            }
            if !here.contains(token.as_str()) {
                later.push((*seq, token.clone(), token_sha256.clone()));
            }
        }
        for (seq, name) in files {
            let der = match journal.anchor_token(name) {
                Ok(b) => b,
                Err(e) => {
                    rep.broken = Some(format!("{name}: {e}"));
                    return rep;
                }
            };
            let hash = self.wanted.remove(seq).flatten();
            if let Err(b) = verify_token(&mut rep, ca_pem, *seq, name, &der, hash.as_deref(), records) {
                rep.broken = Some(b);
                return rep;
            }
        }
        if !later.is_empty() {
            let seqs = later.iter().map(|(s, ..)| *s).filter(|s| *s <= records).collect();
            let mut again = match walked_hashes(journal, &seqs) {
                Ok(h) => h,
                Err(e) => {
                    rep.broken = Some(format!("reading the journal again for the anchored records: {e}"));
                    return rep;
                }
            };
            for (seq, name, sha256) in later {
                let checked =
                    token_bytes(journal, bucket, &name, &sha256).map_err(|e| format!("{name}: {e}")).and_then(|der| {
                        verify_token(&mut rep, ca_pem, seq, &name, &der, again.remove(&seq).as_deref(), records)
                    });
                if let Err(b) = checked {
                    rep.broken = Some(b);
                    return rep;
                }
            }
        }
        rep.unanchored_records = records.saturating_sub(rep.newest_record.unwrap_or(0));
        rep
    }
}

/// One token (`name`, `der`) about record `seq`, whose walked hash is
/// `hash` (none: the walk did not reach it): its imprint is that hash,
/// and with a CA its signature holds. Counted in `rep`; the reason it
/// fails otherwise.
fn verify_token(
    rep: &mut AnchorReport,
    ca_pem: Option<&[u8]>,
    seq: u64,
    name: &str,
    der: &[u8],
    hash: Option<&str>,
    records: u64,
) -> Result<(), String> {
    rep.tokens += 1;
    let Some(hash) = hash.filter(|_| seq <= records) else {
        return Err(format!(
            "record {seq} was anchored ({name}) but the journal ends at record {records}: records from {} on were cut off",
            records + 1
        ));
    };
    let digest = hex::decode(hash).unwrap_or_default();
    let r = match ca_pem {
        Some(ca) => tsp::verify(der, ca, &digest, None).map(|s| s.gen_time),
        None => tsp::unverified(der).and_then(|(d, t)| match d == digest {
            true => Ok(t),
            false => Err(tsp::TspError::WrongImprint { expected: hash.to_string(), found: hex::encode(d) }),
        }),
    };
    match r {
        Ok(t) => {
            if rep.newest_record.is_none_or(|n| seq >= n) {
                rep.newest_record = Some(seq);
                rep.newest_time = Some(t);
            }
            Ok(())
        }
        Err(tsp::TspError::WrongImprint { .. }) => Err(format!(
            "record {seq} is not the record that was anchored ({name} time-stamps another hash): the journal was rewritten there"
        )),
        Err(e) => Err(format!("the token {name} for record {seq} does not verify: {e}")),
    }
}

/// The hashes of the records `seqs`, read from the journal.
fn walked_hashes(
    journal: &JournalReader,
    seqs: &std::collections::BTreeSet<u64>,
) -> std::io::Result<BTreeMap<u64, String>> {
    let mut out = BTreeMap::new();
    let Some(&last) = seqs.last() else { return Ok(out) };
    for line in journal.lines()? {
        if let Ok((rec, hash)) = line?.parsed {
            if seqs.contains(&rec.seq) {
                out.insert(rec.seq, hash);
            }
            if rec.seq >= last {
                break;
            }
        }
    }
    Ok(out)
}
