//! Retention and legal holds.
//!
//! A mailbox with `retention = "10y"` keeps each message for that long
//! from the day it entered the archive; the daemon's daily expiry run then
//! removes the messages past it that no legal hold covers: one `expired`
//! journal record per batch (hash, mailbox, folder, reason for every place
//! a message was listed), after which the index no longer lists them and
//! the blob is deleted once no mailbox holds it. Nothing is removed from a
//! mailbox without `retention`.
//!
//! A legal hold (`pecgate hold add`) covers messages by hash, the hits of
//! a search, or a whole mailbox, with a reason; a held message is never
//! removed (the journal writer re-checks the holds when it records an
//! expiry). Placing and releasing holds are journal records.

pub mod api;
pub mod cli;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::Config;
use crate::store::{Audit, Change, ExpiredItem, Store, StoreError};

/// A legal hold as it stands (the index keeps the standing ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The seq of the record that placed it.
    pub id: u64,
    pub mailbox: String,
    /// Every message of the mailbox, present and future.
    #[serde(default)]
    pub whole: bool,
    #[serde(default)]
    pub hashes: Vec<String>,
    pub reason: String,
    #[serde(default)]
    pub query: Option<String>,
    pub placed: DateTime<Utc>,
}

/// Expired places go to the journal this many at a time (one record each).
const RECORD_ITEMS: usize = 5_000;

/// What an expiry run would remove from one mailbox now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub mailbox: String,
    /// The mailbox's retention, as configured ("10years").
    pub retention: String,
    /// Messages that entered the archive before this are past retention.
    pub cutoff: DateTime<Utc>,
    /// Messages (distinct blobs) to remove, and their bytes.
    pub messages: u64,
    pub bytes: u64,
    /// Places listing them (a message filed once and labelled in two
    /// categories has three).
    pub places: u64,
    /// Messages past retention that holds keep.
    pub held: u64,
    /// A hold on the whole mailbox keeps everything: its id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whole_hold: Option<u64>,
    /// The places, oldest first.
    pub items: Vec<PlanItem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanItem {
    pub hash: String,
    pub folder: String,
    pub uid: u32,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
    pub archived: DateTime<Utc>,
    pub size: u64,
}

/// The mailbox's places past `retention` at `now`, holds left out.
pub fn plan(store: &Store, mailbox: &str, retention: Duration, now: DateTime<Utc>) -> Result<Plan, StoreError> {
    let cutoff = now - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let holds = store.holds(Some(mailbox))?;
    let mut p = Plan {
        mailbox: mailbox.to_string(),
        retention: humantime::format_duration(retention).to_string(),
        cutoff,
        whole_hold: holds.iter().find(|h| h.whole).map(|h| h.id),
        ..Plan::default()
    };
    let held: HashSet<&str> = holds.iter().flat_map(|h| h.hashes.iter().map(String::as_str)).collect();
    let mut held_seen = HashSet::new();
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    store.archived_before(mailbox, cutoff, |it, m| {
        if p.whole_hold.is_some() || held.contains(it.hash.as_str()) {
            held_seen.insert(it.hash);
            return;
        }
        sizes.insert(it.hash.clone(), m.size);
        p.items.push(PlanItem {
            hash: it.hash,
            folder: it.folder,
            uid: it.uid,
            hidden: it.hidden,
            archived: m.archived,
            size: m.size,
        });
    })?;
    p.items.sort_by(|a, b| (a.archived, &a.hash, &a.folder, a.uid).cmp(&(b.archived, &b.hash, &b.folder, b.uid)));
    p.places = p.items.len() as u64;
    p.messages = sizes.len() as u64;
    p.bytes = sizes.values().sum();
    p.held = held_seen.len() as u64;
    Ok(p)
}

/// What one run did in one mailbox.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    pub mailbox: String,
    pub messages: u64,
    pub places: u64,
    pub held: u64,
    pub records: u64,
}

/// Remove what [`plan`] finds in every mailbox with a retention.
pub async fn run(store: &Store, cfg: &Config, now: DateTime<Utc>) -> Result<Vec<Outcome>, StoreError> {
    let mut out = Vec::new();
    for m in &cfg.mailboxes {
        let Some(retention) = cfg.retention_of(m) else { continue };
        let st = store.clone();
        let alias = m.alias.clone();
        let p = tokio::task::spawn_blocking(move || plan(&st, &alias, retention, now))
            .await
            .map_err(|e| StoreError::Invalid(format!("expiry plan task: {e}")))??;
        let mut o = Outcome { mailbox: m.alias.clone(), held: p.held, ..Outcome::default() };
        crate::counters::retention().held.with_label_values(&[&m.alias]).set(p.held as i64);
        let reason = format!("retention {} ended (archived before {})", p.retention, p.cutoff.to_rfc3339());
        let mut removed = HashSet::new();
        for chunk in p.items.chunks(RECORD_ITEMS) {
            let items: Vec<ExpiredItem> = chunk
                .iter()
                .map(|i| ExpiredItem { hash: i.hash.clone(), folder: i.folder.clone(), uid: i.uid, hidden: i.hidden })
                .collect();
            let audit = Audit::system("system", "expire").mailbox(&m.alias).outcome("ok");
            let c =
                store.commit(audit, Change::Expire { mailbox: m.alias.clone(), reason: reason.clone(), items }).await;
            match c {
                Ok(c) => {
                    if let crate::store::Event::Expired { items, .. } = &c.event {
                        o.places += items.len() as u64;
                        removed.extend(items.iter().map(|i| i.hash.clone()));
                    }
                    o.records += 1;
                }
                // A hold placed on the whole mailbox since the plan.
                Err(StoreError::Conflict(why)) => {
                    tracing::info!(mailbox = %m.alias, %why, "expiry stopped");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        o.messages = removed.len() as u64;
        crate::counters::retention().expired.with_label_values(&[&m.alias]).inc_by(o.messages);
        out.push(o);
    }
    Ok(out)
}

/// The daemon's expiry task: the first run after `min(every, 1 minute)`,
/// then every `[retention] every`, until `stop`.
pub async fn task(store: Store, cfg: Config, mut stop: watch::Receiver<bool>) {
    if cfg.mailboxes.iter().all(|m| cfg.retention_of(m).is_none()) {
        return;
    }
    let mut wait = cfg.retention.every.min(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        wait = cfg.retention.every;
        let started = std::time::Instant::now();
        match run(&store, &cfg, Utc::now()).await {
            Ok(outcomes) => {
                for o in outcomes {
                    tracing::info!(mailbox = %o.mailbox, removed = o.messages, places = o.places, held = o.held,
                        records = o.records, took_ms = started.elapsed().as_millis() as u64, "retention: expiry run");
                }
                crate::counters::retention().last_run.set(Utc::now().timestamp());
            }
            Err(e) => {
                tracing::error!(error = %e, "retention: expiry run failed; next try in {}", humantime::format_duration(wait))
            }
        }
    }
}
