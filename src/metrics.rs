//! Prometheus metrics, computed when scraped.
//!
//! Why at scrape time: the values already exist elsewhere — the live
//! [`StatusBoard`] (connection, quota, per-run counters), the [`Store`]
//! (archive totals, sent-message reconciliation) and the journal (every
//! login and every archived message's PEC kind is an audit record). Reading
//! them when Prometheus asks keeps the other modules free of metric calls;
//! what only protocol code sees (open sessions, commands, submissions,
//! throttled logins) it counts in [`crate::counters`], which every scrape
//! includes.
//!
//! Naming follows Prometheus conventions: `pecgate_` prefix, base units
//! (`_bytes`, `_seconds`), `_total` for counters. Counters taken from the
//! board restart at zero with the process (or a SIGHUP), which `rate()` and
//! `increase()` handle; counters taken from the journal count the whole
//! archive's history.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use chrono::Utc;
use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::counters;
use crate::pec::reconcile::{Overall, RecipientStatus};
use crate::store::{Event, JournalReader, Record, Store, StoredPec};
use crate::upstream::StatusBoard;

/// Why metrics could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("building metrics: {0}")]
    Prometheus(#[from] prometheus::Error),
    #[error("encoding metrics: {0}")]
    Encode(String),
}

/// Protocols whose logins are counted (series exist at zero from the start,
/// so alerts and dashboards see them before the first login).
const LOGIN_PROTOCOLS: [&str; 2] = ["imap", "smtp"];
/// Signature outcomes counted as failures.
const SIGNATURE_FAILURES: [&str; 2] = ["invalid", "unknown-signer"];

/// Counts of journal events, accumulated by following the journal.
#[derive(Debug)]
struct EventCounts {
    journal: JournalReader,
    /// (protocol, `ok`|`failed`) → logins.
    logins: BTreeMap<(String, String), u64>,
    /// (mailbox, kind) → archived messages (duplicates excluded).
    kinds: BTreeMap<(String, String), u64>,
    /// (mailbox, status) → messages whose signature did not verify.
    signature_failures: BTreeMap<(String, String), u64>,
    /// mailbox → the latest journal sequence that may have changed its
    /// sent messages' reconciliation state (an archived message carrying
    /// PEC metadata: a sent copy or a receipt).
    sent_changed: BTreeMap<String, u64>,
}

impl EventCounts {
    fn new(journal: JournalReader) -> EventCounts {
        EventCounts {
            journal,
            logins: BTreeMap::new(),
            kinds: BTreeMap::new(),
            signature_failures: BTreeMap::new(),
            sent_changed: BTreeMap::new(),
        }
    }

    fn add(&mut self, r: &Record) {
        if r.op == "login" {
            let outcome = if r.outcome == "ok" { "ok" } else { "failed" };
            *self
                .logins
                .entry((r.proto.clone(), outcome.into()))
                .or_default() += 1;
        }
        if let Event::Archived {
            mailbox,
            duplicate: false,
            pec,
            ..
        } = &r.event
        {
            // Metadata this version does not understand counts as none.
            let meta = pec.as_ref().and_then(StoredPec::meta);
            if meta.is_some() {
                let seq = self.sent_changed.entry(mailbox.clone()).or_default();
                *seq = (*seq).max(r.seq);
            }
            let kind = meta.map(|m| m.classification.kind.as_str()).unwrap_or("unclassified");
            *self.kinds.entry((mailbox.clone(), kind.to_string())).or_default() += 1;
            if let Some(status) = meta.and_then(|m| m.signature.as_ref()).map(|s| s.as_str()) {
                if SIGNATURE_FAILURES.contains(&status) {
                    *self
                        .signature_failures
                        .entry((mailbox.clone(), status.into()))
                        .or_default() += 1;
                }
            }
        }
    }
}

/// One mailbox's sent messages, split by whether their contribution to the
/// metrics can still change with time alone.
///
/// A recipient's status depends on `now` only while it has no final
/// receipt (pending or warned can turn overdue), and the ages of the oldest
/// awaiting messages grow; every other status (delivered, delivery failed,
/// not sent, sent to a non-certified address) is fixed until a new receipt
/// arrives, which is a journal record. So a scrape adds the settled counts
/// and re-evaluates only the open messages: its cost follows the messages
/// still awaiting something, not the whole sent history.
#[derive(Debug, Default)]
struct SentCache {
    /// The index's applied sequence read before the scan: every record up
    /// to it is reflected here.
    seq: u64,
    settled_by_status: BTreeMap<&'static str, u64>,
    settled_failed: u64,
    /// Messages awaiting acceptance or a final receipt from someone.
    open: Vec<crate::pec::reconcile::SentMessage>,
}

impl SentCache {
    fn build(seq: u64, all: Vec<crate::pec::reconcile::SentMessage>, now: chrono::DateTime<Utc>) -> SentCache {
        let mut c = SentCache { seq, ..SentCache::default() };
        for sent in all {
            let statuses = sent.statuses(now);
            let open = sent.overall() == Overall::Submitted
                || statuses.values().any(|s| {
                    matches!(s, RecipientStatus::Pending | RecipientStatus::Warned | RecipientStatus::Overdue)
                });
            if open {
                drop(statuses);
                c.open.push(sent);
                continue;
            }
            for s in statuses.values() {
                if *s == RecipientStatus::DeliveryFailed {
                    c.settled_failed += 1;
                }
                *c.settled_by_status.entry(status_label(*s)).or_default() += 1;
            }
        }
        c
    }
}

/// The metrics of one daemon: where to read from, plus the event counts.
pub struct Metrics {
    board: RwLock<StatusBoard>,
    store: Store,
    started: f64,
    events: Mutex<EventCounts>,
    /// mailbox → its sent messages as of some index sequence.
    sent: Mutex<BTreeMap<String, SentCache>>,
    /// The mailboxes' sending limits, by alias.
    sending: RwLock<(BTreeMap<String, crate::config::SendingLimits>, Arc<crate::sending::Limiter>)>,
}

impl Metrics {
    pub fn new(board: StatusBoard, store: Store) -> Metrics {
        Metrics {
            board: RwLock::new(board),
            events: Mutex::new(EventCounts::new(store.journal())),
            store,
            started: Utc::now().timestamp_micros() as f64 / 1e6,
            sent: Mutex::new(BTreeMap::new()),
            sending: RwLock::new(Default::default()),
        }
    }

    /// After a SIGHUP the daemon starts a new board; scrape that one.
    pub fn set_board(&self, board: StatusBoard) {
        if let Ok(mut b) = self.board.write() {
            *b = board;
        }
    }

    pub fn board(&self) -> Option<StatusBoard> {
        self.board.read().ok().map(|b| b.clone())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// [`counters::commands`], for the IMAP session code that still
    /// counts through here.
    pub fn commands() -> &'static IntCounterVec {
        counters::commands()
    }

    /// The text exposition format (what `/metrics` serves). Blocking: reads
    /// the index and the journal; call from a blocking thread.
    pub fn render(&self) -> Result<String, MetricsError> {
        let reg = self.collect()?;
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&reg.gather(), &mut out)
            .map_err(|e| MetricsError::Encode(e.to_string()))?;
        String::from_utf8(out).map_err(|e| MetricsError::Encode(e.to_string()))
    }

    fn collect(&self) -> Result<Registry, MetricsError> {
        let reg = Registry::new();
        let r = Reg(&reg);
        let now = Utc::now();

        let build = r.gauge_vec(
            "pecgate_build_info",
            "Build: version and git commit (value 1).",
            &["version", "commit"],
        )?;
        build
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                // Set by build.rs (from git, or from PECGATE_GIT_COMMIT at build
                // time). Not itself named PECGATE_GIT_COMMIT: `cargo run` and
                // `cargo test` export build-script variables to the process,
                // and a PECGATE_* variable there is read as a configuration
                // override.
                option_env!("BUILD_GIT_COMMIT").unwrap_or("unknown"),
            ])
            .set(1.0);
        r.gauge(
            "pecgate_process_start_time_seconds",
            "Start time of the process, unix seconds.",
        )?
        .set(self.started);
        if let Some((in_use, free)) = crate::heap::usage() {
            let heap = r.int_gauge_vec(
                "pecgate_heap_bytes",
                "The allocator's heap: bytes in use, and bytes free but still held by the process.",
                &["state"],
            )?;
            heap.with_label_values(&["in_use"]).set(in_use as i64);
            heap.with_label_values(&["free"]).set(free as i64);
        }
        r.add(counters::imap_sessions_open().clone())?;
        r.add(counters::smtp_sessions_open().clone())?;
        r.add(counters::fulltext_backlog().clone())?;
        r.add(counters::fulltext_documents().clone())?;
        let c = counters::cluster();
        r.add(c.lag_records.clone())?;
        r.add(c.lag_seconds.clone())?;
        r.add(c.errors.clone())?;
        r.add(c.lease_held.clone())?;
        r.add(c.blob_cache.clone())?;
        let a = counters::anchor();
        r.add(a.failures.clone())?;
        r.add(a.last_success.clone())?;
        r.add(a.anchored.clone())?;
        r.add(a.unanchored.clone())?;
        let t = counters::retention();
        r.add(t.expired.clone())?;
        r.add(t.last_run.clone())?;
        r.add(t.held.clone())?;
        let d = counters::directory();
        if d.configured.load(std::sync::atomic::Ordering::Relaxed) {
            r.add(d.up.clone())?;
            r.add(d.logins.clone())?;
            r.add(d.errors.clone())?;
        }
        r.add(counters::smtp_submissions().clone())?;
        r.add(self.store.write_latency().clone())?;
        r.add(counters::commands().clone())?;
        r.add(counters::throttled_logins().clone())?;

        // The store.
        let failed = r.int_gauge("pecgate_store_failed", "1 if the archive latched into failure (nothing is written or offloaded until a restart).")?;
        failed.set(i64::from(self.store.failure().is_some()));
        let (free, total) = self.store.disk_space();
        if let Some(free) = free {
            r.gauge(
                "pecgate_store_free_bytes",
                "Space available to pecgate on the archive's file system.",
            )?
            .set(free as f64);
        }
        if let Some(total) = total {
            r.gauge(
                "pecgate_store_size_bytes",
                "Size of the archive's file system.",
            )?
            .set(total as f64);
        }

        r.gauge(
            "pecgate_index_bytes",
            "Size of the index files (index.redb, derived.redb): derived data, packed when the daemon stops, \
             about twice that after a large intake while it runs.",
        )?
        .set(self.store.index_bytes() as f64);

        // Mailboxes, from the status board.
        let l = &["mailbox"];
        let up = r.int_gauge_vec(
            "pecgate_provider_up",
            "1 if the mailbox's provider connection is up.",
            l,
        )?;
        let q_used = r.gauge_vec(
            "pecgate_provider_quota_used_bytes",
            "Provider quota: storage used.",
            l,
        )?;
        let q_limit = r.gauge_vec(
            "pecgate_provider_quota_limit_bytes",
            "Provider quota: storage limit.",
            l,
        )?;
        let q_mused = r.gauge_vec(
            "pecgate_provider_quota_used_messages",
            "Provider quota: messages used.",
            l,
        )?;
        let q_mlimit = r.gauge_vec(
            "pecgate_provider_quota_limit_messages",
            "Provider quota: message limit.",
            l,
        )?;
        let on_provider = r.gauge_vec(
            "pecgate_provider_messages",
            "Messages still on the provider after the last pass.",
            l,
        )?;
        let last_ok = r.gauge_vec(
            "pecgate_last_successful_sync_timestamp_seconds",
            "End of the last successful sync pass, unix seconds (0: never since start).",
            l,
        )?;
        let errors = r.counter_vec(
            "pecgate_sync_errors_total",
            "Failed sync passes, by reason.",
            &["mailbox", "reason"],
        )?;
        let archived = r.counter_vec(
            "pecgate_archived_messages_total",
            "Messages archived from the provider.",
            l,
        )?;
        let archived_b = r.counter_vec(
            "pecgate_archived_bytes_total",
            "Bytes archived from the provider.",
            l,
        )?;
        let deleted = r.counter_vec(
            "pecgate_provider_deleted_messages_total",
            "Messages deleted from the provider after archiving.",
            l,
        )?;
        let stored = r.gauge_vec(
            "pecgate_archive_messages",
            "Messages held in the archive (all folders).",
            l,
        )?;
        let stored_b = r.gauge_vec(
            "pecgate_archive_bytes",
            "Bytes held in the archive (all folders).",
            l,
        )?;
        let board = self.board();
        let statuses = board.map(|b| b.snapshot()).unwrap_or_default();
        for s in &statuses {
            let m = &[s.alias.as_str()];
            up.with_label_values(m).set(i64::from(s.connected));
            if let Some(q) = &s.quota {
                let set = |g: &GaugeVec, v: Option<u64>| {
                    if let Some(v) = v {
                        g.with_label_values(m).set(v as f64);
                    }
                };
                set(&q_used, q.storage_used_bytes);
                set(&q_limit, q.storage_limit_bytes);
                set(&q_mused, q.messages_used);
                set(&q_mlimit, q.messages_limit);
            }
            if let Some(n) = s.on_provider {
                on_provider.with_label_values(m).set(n as f64);
            }
            last_ok.with_label_values(m).set(
                s.last_success
                    .map(|t| t.timestamp_micros() as f64 / 1e6)
                    .unwrap_or(0.0),
            );
            for (reason, n) in &s.errors_by_reason {
                errors
                    .with_label_values(&[s.alias.as_str(), reason.as_str()])
                    .inc_by(*n);
            }
            archived.with_label_values(m).inc_by(s.archived_this_run);
            archived_b
                .with_label_values(m)
                .inc_by(s.archived_bytes_this_run);
            deleted.with_label_values(m).inc_by(s.deleted_this_run);
            stored.with_label_values(m).set(s.archived_total as f64);
            stored_b
                .with_label_values(m)
                .set(s.archived_total_bytes as f64);
        }

        // Events first: reading the journal tail tells which mailboxes'
        // sent messages changed since the last scrape.
        self.collect_events(
            &r,
            &statuses.iter().map(|s| s.alias.clone()).collect::<Vec<_>>(),
        )?;
        self.collect_sent(
            &r,
            &statuses.iter().map(|s| s.alias.clone()).collect::<Vec<_>>(),
            now,
        )?;
        self.collect_handling(
            &r,
            &statuses.iter().map(|s| s.alias.clone()).collect::<Vec<_>>(),
        )?;
        self.collect_campaigns(&r, now)?;
        Ok(reg)
    }

    /// The mailboxes' sending limits and sends (what a campaign's ETA
    /// follows).
    pub fn set_sending(&self, limits: BTreeMap<String, crate::config::SendingLimits>, limiter: Arc<crate::sending::Limiter>) {
        if let Ok(mut s) = self.sending.write() {
            *s = (limits, limiter);
        }
    }

    /// Campaigns created in the last 30 days, or still sending: notices by
    /// state, dialogues, rate, ETA, deadline.
    fn collect_campaigns(&self, r: &Reg<'_>, now: chrono::DateTime<Utc>) -> Result<(), MetricsError> {
        use crate::campaign::{api, model::Status, report};
        let notices = r.int_gauge_vec(
            "pecgate_campaign_notices",
            "Notices of a campaign by state (queued, submitting, retrying, ambiguous, accepted, acceptance-receipt, delivered, failed, not-accepted, warned, overdue, not-certified, cancelled).",
            &["campaign", "mailbox", "state"],
        )?;
        let info = r.int_gauge_vec(
            "pecgate_campaign_info",
            "A campaign (value 1): its name, mailbox and status (ready, running, paused, cancelled).",
            &["campaign", "name", "mailbox", "status"],
        )?;
        let running = r.int_gauge_vec("pecgate_campaign_running", "1 while a campaign is running.", &["campaign"])?;
        let dialogues = r.counter_vec(
            "pecgate_campaign_dialogues_total",
            "Provider dialogues started for a campaign's notices (its send rate is the rate of this).",
            &["campaign"],
        )?;
        let waiting = r.int_gauge_vec("pecgate_campaign_waiting", "Notices still to send (queued, retrying, mid-dialogue).", &["campaign"])?;
        let eta = r.gauge_vec(
            "pecgate_campaign_eta_timestamp_seconds",
            "When the last waiting notice will have been sent at the mailbox's limit (or, without one, the rate of the last 15 minutes), unix seconds.",
            &["campaign"],
        )?;
        let deadline = r.gauge_vec(
            "pecgate_campaign_deadline_timestamp_seconds",
            "The campaign's delivery deadline, unix seconds.",
            &["campaign"],
        )?;
        let Ok(all) = self.store.campaigns() else { return Ok(()) };
        let (limits, limiter) = self.sending.read().map(|s| s.clone()).unwrap_or_default();
        for c in all {
            let id = c.spec.id.as_str();
            let Ok(tally) = report::Tally::of(&self.store, &c, None, now) else { continue };
            let l = limits.get(&c.spec.mailbox).copied().unwrap_or_default();
            let schedule = |n| limiter.time_for(&c.spec.mailbox, &l, n, std::time::Instant::now());
            let p = report::progress_of(&tally, api::rate_per_minute(&l), schedule, now);
            if now - c.created_at > chrono::Duration::days(30) && (p.waiting == 0 || c.status == Status::Cancelled) {
                continue;
            }
            for (state, n) in &tally.counts {
                notices.with_label_values(&[id, &c.spec.mailbox, state]).set(*n as i64);
            }
            info.with_label_values(&[id, &c.spec.name, &c.spec.mailbox, c.status.name()]).set(1);
            running.with_label_values(&[id]).set(i64::from(c.status == Status::Running));
            dialogues.with_label_values(&[id]).inc_by(tally.attempts);
            waiting.with_label_values(&[id]).set(p.waiting as i64);
            if let Some(t) = p.eta.filter(|_| c.status == Status::Running || p.waiting == 0) {
                eta.with_label_values(&[id]).set(t.timestamp() as f64);
            }
            if let Some(d) = c.spec.deadline {
                deadline.with_label_values(&[id]).set(d.timestamp() as f64);
            }
        }
        Ok(())
    }

    /// Sent messages and their receipts, from the reconciliation state.
    fn collect_sent(
        &self,
        r: &Reg,
        mailboxes: &[String],
        now: chrono::DateTime<Utc>,
    ) -> Result<(), MetricsError> {
        let l = &["mailbox"];
        let awaiting_acc = r.gauge_vec(
            "pecgate_pec_sent_awaiting_acceptance",
            "Sent messages without an acceptance receipt yet.",
            l,
        )?;
        let oldest_acc = r.gauge_vec(
            "pecgate_pec_oldest_awaiting_acceptance_seconds",
            "Age of the oldest sent message still without acceptance (0 if none).",
            l,
        )?;
        let awaiting_del = r.gauge_vec(
            "pecgate_pec_sent_awaiting_delivery",
            "Accepted sent messages with at least one certified recipient still without a final receipt.",
            l,
        )?;
        let oldest_del = r.gauge_vec(
            "pecgate_pec_oldest_awaiting_delivery_seconds",
            "Age of the oldest sent message still awaiting a delivery receipt (0 if none).",
            l,
        )?;
        let failures = r.counter_vec(
            "pecgate_pec_delivery_failures_total",
            "Recipients of sent messages for whom a non-delivery notice arrived.",
            l,
        )?;
        let recipients = r.gauge_vec(
            "pecgate_pec_sent_recipients",
            "Recipients of sent messages, by delivery status.",
            &["mailbox", "status"],
        )?;
        let changed = self
            .events
            .lock()
            .map(|ev| ev.sent_changed.clone())
            .unwrap_or_default();
        let Ok(mut caches) = self.sent.lock() else {
            return Ok(());
        };
        for alias in mailboxes {
            let m = &[alias.as_str()];
            let stale = match caches.get(alias) {
                None => true,
                Some(c) => changed.get(alias).is_some_and(|need| *need > c.seq),
            };
            if stale {
                // Read the applied sequence before the scan, so the cache
                // never claims more than it saw.
                let fresh = self.store.applied_seq().and_then(|seq| {
                    self.store.sent_states(alias).map(|all| SentCache::build(seq, all, now))
                });
                match fresh {
                    Ok(c) => {
                        caches.insert(alias.clone(), c);
                    }
                    Err(e) => {
                        tracing::warn!(mailbox = %alias, error = %e, "metrics: reading sent messages");
                        caches.remove(alias);
                    }
                }
            }
            let empty = SentCache::default();
            let cache = caches.get(alias).unwrap_or(&empty);
            let (mut n_acc, mut n_del, mut failed) = (0u64, 0u64, cache.settled_failed);
            let (mut age_acc, mut age_del) = (0f64, 0f64);
            let mut by_status: BTreeMap<&'static str, u64> = cache.settled_by_status.clone();
            for sent in &cache.open {
                let age = sent
                    .clock_start()
                    .map(|t| (now - t).num_milliseconds().max(0) as f64 / 1e3)
                    .unwrap_or(0.0);
                match sent.overall() {
                    Overall::Submitted => {
                        n_acc += 1;
                        age_acc = age_acc.max(age);
                    }
                    Overall::NotAccepted => {}
                    Overall::Accepted => {
                        let st = sent.statuses(now);
                        let waiting = st.values().any(|s| {
                            matches!(
                                s,
                                RecipientStatus::Pending
                                    | RecipientStatus::Warned
                                    | RecipientStatus::Overdue
                            )
                        });
                        if waiting {
                            n_del += 1;
                            age_del = age_del.max(age);
                        }
                    }
                }
                for s in sent.statuses(now).values() {
                    if *s == RecipientStatus::DeliveryFailed {
                        failed += 1;
                    }
                    *by_status.entry(status_label(*s)).or_default() += 1;
                }
            }
            awaiting_acc.with_label_values(m).set(n_acc as f64);
            oldest_acc.with_label_values(m).set(age_acc);
            awaiting_del.with_label_values(m).set(n_del as f64);
            oldest_del.with_label_values(m).set(age_del);
            failures.with_label_values(m).inc_by(failed);
            for s in ALL_STATUSES {
                let label = status_label(s);
                recipients
                    .with_label_values(&[alias.as_str(), label])
                    .set(*by_status.get(label).unwrap_or(&0) as f64);
            }
        }
        Ok(())
    }

    /// Handling of incoming certified messages, by mailbox and office.
    fn collect_handling(&self, r: &Reg, mailboxes: &[String]) -> Result<(), MetricsError> {
        let l = &["mailbox", "office"];
        let messages = r.gauge_vec(
            "pecgate_handling_messages",
            "Tracked incoming certified messages by handling state (office \"none\": not assigned to an office).",
            &["mailbox", "office", "state"],
        )?;
        let oldest = r.gauge_vec(
            "pecgate_handling_oldest_waiting_seconds",
            "Age of the oldest message not taken in charge yet (0 if none waits).",
            l,
        )?;
        let overdue = r.gauge_vec(
            "pecgate_handling_overdue_messages",
            "Messages past their deadline and not done.",
            l,
        )?;
        let buckets = vec![
            3600.0, 14400.0, 28800.0, 86400.0, 172800.0, 259200.0, 604800.0, 1209600.0, 2592000.0, 5184000.0,
            7776000.0,
        ];
        let to_take = r.add(prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(
                "pecgate_handling_time_to_take_seconds",
                "From arrival to taken in charge, every message taken so far.",
            )
            .buckets(buckets.clone()),
            l,
        )?)?;
        let to_done = r.add(prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(
                "pecgate_handling_time_to_done_seconds",
                "From arrival to done, every message done so far.",
            )
            .buckets(buckets),
            l,
        )?)?;
        let now = crate::handling::now();
        for alias in mailboxes {
            let all = self.store.handling_all(alias).unwrap_or_default();
            let mut by_office = crate::handling::stats(all.iter().map(|(_, h)| h), now);
            // Always a series per mailbox, so dashboards and alerts see 0
            // rather than nothing before the first tracked message.
            by_office.entry("none".into()).or_default();
            for (office, s) in by_office {
                let lv = &[alias.as_str(), office.as_str()];
                for (i, st) in crate::handling::State::ALL.iter().enumerate() {
                    messages
                        .with_label_values(&[alias.as_str(), office.as_str(), st.as_str()])
                        .set(s.by_state[i] as f64);
                }
                oldest.with_label_values(lv).set(s.oldest_waiting);
                overdue.with_label_values(lv).set(s.overdue as f64);
                let h = to_take.with_label_values(lv);
                s.to_take.iter().for_each(|v| h.observe(*v));
                let h = to_done.with_label_values(lv);
                s.to_done.iter().for_each(|v| h.observe(*v));
            }
        }
        Ok(())
    }

    /// Counts read from the journal since the last scrape, added up.
    fn collect_events(&self, r: &Reg, mailboxes: &[String]) -> Result<(), MetricsError> {
        let logins = r.counter_vec(
            "pecgate_logins_total",
            "Client logins, by protocol and outcome (ok, failed).",
            &["protocol", "outcome"],
        )?;
        let kinds = r.counter_vec(
            "pecgate_pec_messages_total",
            "Messages archived, by PEC kind.",
            &["mailbox", "kind"],
        )?;
        let sig = r.counter_vec(
            "pecgate_pec_signature_failures_total",
            "Archived PEC messages whose provider signature did not verify.",
            &["mailbox", "status"],
        )?;
        for p in LOGIN_PROTOCOLS {
            for o in ["ok", "failed"] {
                logins.with_label_values(&[p, o]);
            }
        }
        for m in mailboxes {
            for s in SIGNATURE_FAILURES {
                sig.with_label_values(&[m.as_str(), s]);
            }
        }
        let Ok(mut ev) = self.events.lock() else {
            return Ok(());
        };
        let ev = &mut *ev;
        let mut journal = ev.journal.clone();
        if let Err(e) = journal.read_new(|rec, _| ev.add(rec)) {
            tracing::warn!(error = %e, "metrics: reading the journal");
        }
        ev.journal = journal;
        for ((p, o), n) in &ev.logins {
            logins
                .with_label_values(&[p.as_str(), o.as_str()])
                .inc_by(*n);
        }
        for ((m, k), n) in &ev.kinds {
            kinds
                .with_label_values(&[m.as_str(), k.as_str()])
                .inc_by(*n);
        }
        for ((m, s), n) in &ev.signature_failures {
            sig.with_label_values(&[m.as_str(), s.as_str()]).inc_by(*n);
        }
        Ok(())
    }
}

const ALL_STATUSES: [RecipientStatus; 7] = [
    RecipientStatus::Pending,
    RecipientStatus::Delivered,
    RecipientStatus::DeliveryFailed,
    RecipientStatus::Warned,
    RecipientStatus::Overdue,
    RecipientStatus::SentToNonCertified,
    RecipientStatus::NotSent,
];

fn status_label(s: RecipientStatus) -> &'static str {
    match s {
        RecipientStatus::Pending => "pending",
        RecipientStatus::Delivered => "delivered",
        RecipientStatus::DeliveryFailed => "delivery-failed",
        RecipientStatus::Warned => "warned",
        RecipientStatus::Overdue => "overdue",
        RecipientStatus::SentToNonCertified => "sent-to-non-certified",
        RecipientStatus::NotSent => "not-sent",
    }
}

/// Registers metrics into a per-scrape registry.
struct Reg<'a>(&'a Registry);

impl Reg<'_> {
    fn add<C: Collector + Clone + 'static>(&self, c: C) -> Result<C, MetricsError> {
        self.0.register(Box::new(c.clone()))?;
        Ok(c)
    }
    fn gauge(&self, name: &str, help: &str) -> Result<prometheus::Gauge, MetricsError> {
        self.add(prometheus::Gauge::new(name, help)?)
    }
    fn int_gauge(&self, name: &str, help: &str) -> Result<IntGauge, MetricsError> {
        self.add(IntGauge::new(name, help)?)
    }
    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> Result<GaugeVec, MetricsError> {
        self.add(GaugeVec::new(Opts::new(name, help), labels)?)
    }
    fn int_gauge_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, MetricsError> {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels)?)
    }
    fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, MetricsError> {
        self.add(IntCounterVec::new(Opts::new(name, help), labels)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counting events over the journal written by earlier code
    /// (tests/data/journal-v1), from its typed PEC metadata.
    #[test]
    fn events_counted_from_an_old_journal() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/journal-v1");
        let mut ev = EventCounts::new(JournalReader::open_read_only(&dir));
        let mut journal = ev.journal.clone();
        journal.read_new(|rec, _| ev.add(rec)).unwrap();
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(ev.logins, BTreeMap::from([(s("imap", "failed"), 1), (s("imap", "ok"), 1)]));
        let kinds: Vec<_> = ev.kinds.iter().map(|((m, k), n)| (m.as_str(), k.as_str(), *n)).collect();
        assert_eq!(
            kinds,
            [
                ("protocollo", "accettazione", 1),
                ("protocollo", "anomalia", 1),
                ("protocollo", "avvenuta-consegna", 1),
                ("protocollo", "errore-consegna", 1),
                ("protocollo", "plain", 1),
                ("protocollo", "posta-certificata", 1),
                ("protocollo", "preavviso-errore-consegna", 1),
                // The two records whose metadata is not understood.
                ("protocollo", "unclassified", 2),
            ]
        );
        assert_eq!(ev.signature_failures, BTreeMap::from([(s("protocollo", "invalid"), 1)]));
        // The last archived message with metadata: the anomaly, record 13.
        assert_eq!(ev.sent_changed.get("protocollo"), Some(&13));
        // Nothing new: nothing counted twice.
        journal.read_new(|rec, _| ev.add(rec)).unwrap();
        assert_eq!(ev.kinds.values().sum::<u64>(), 9);
    }
}
