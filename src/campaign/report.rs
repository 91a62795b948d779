//! A campaign's report: one row per recipient, its sending state joined
//! with what the provider's receipts say (reconciliation of the notice's
//! sent copy), and the fallback list of those who need registered mail.

use std::io::{self, Write};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::input::{self, InputOptions};
use super::model::{CampaignRow, NoticeRow, SendState, Status};
use crate::pec::reconcile::{RecipientStatus, SentMessage};
use crate::store::{Store, StoreError};

/// One recipient's line.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub n: u32,
    /// The CSV line of the recipient's row.
    pub line: u64,
    pub address: String,
    pub key: String,
    /// queued, submitting, retrying, ambiguous, cancelled, accepted,
    /// acceptance-receipt, delivered, failed, not-accepted, warned,
    /// overdue, not-certified.
    pub state: &'static str,
    pub provider_id: Option<String>,
    pub accepted_at: Option<DateTime<Utc>>,
    /// The delivery receipt's certified time (its daticert `data`, else
    /// when it arrived): the legal notification.
    pub delivered_at: Option<DateTime<Utc>>,
    /// As the provider (or the network) wrote it.
    pub failure: Option<String>,
    pub attempts: u32,
    /// The last provider dialogue's start.
    pub submitted_at: Option<DateTime<Utc>>,
    pub message_id: String,
    /// SHA-256 of the notice as sent.
    pub notice_sha256: String,
    /// The notice's size in bytes.
    #[serde(skip)]
    pub size: u64,
    /// SHA-256 of the receipts as archived (acceptance or non-acceptance,
    /// then delivery, failure or warning).
    pub receipts: Vec<String>,
}

/// A report state as IMAP keywords (a campaign's folder): the sent
/// messages' `$Pec*` where they mean the same (`$PecAccepted` is the
/// acceptance receipt), and one for each sending state before it.
pub fn keywords(state: &str) -> &'static [&'static str] {
    match state {
        "queued" => &["$PecQueued"],
        "submitting" => &["$PecSubmitting"],
        "retrying" => &["$PecRetrying"],
        "ambiguous" => &["$PecAmbiguous"],
        "cancelled" => &["$PecCancelled"],
        "accepted" => &["$PecSent"],
        "acceptance-receipt" => &["$PecSent", "$PecAccepted"],
        "delivered" => &["$PecSent", "$PecAccepted", "$PecDelivered"],
        "failed" => &["$PecFailed"],
        "not-accepted" => &["$PecNotAccepted", "$PecFailed"],
        "warned" => &["$PecSent", "$PecAccepted", "$PecWarned"],
        "overdue" => &["$PecSent", "$PecAccepted", "$PecOverdue"],
        "not-certified" => &["$PecSent", "$PecNotCertified"],
        _ => &[],
    }
}

/// Is this row one for registered mail? Failed for good, or not delivered
/// by `deadline` (when there is one and it has passed, or the delivery came
/// after it).
pub fn needs_fallback(r: &Row, deadline: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    if matches!(r.state, "failed" | "not-accepted" | "not-certified" | "cancelled") {
        return true;
    }
    match (deadline, r.delivered_at) {
        (Some(d), Some(at)) => at > d,
        (Some(d), None) => now >= d,
        (None, _) => false,
    }
}

fn row(c: &CampaignRow, n: NoticeRow, sent: Option<SentMessage>, now: DateTime<Utc>) -> Row {
    let mut r = Row {
        n: n.notice.n,
        line: n.notice.line,
        address: n.notice.to.clone(),
        key: n.notice.key.clone(),
        state: "queued",
        provider_id: None,
        accepted_at: n.accepted_at,
        delivered_at: None,
        failure: n.reason.clone(),
        attempts: n.attempts,
        submitted_at: n.submitted_at,
        message_id: n.notice.message_id.clone(),
        notice_sha256: n.notice.hash.clone(),
        size: n.notice.size,
        receipts: Vec::new(),
    };
    let cancelled = c.status == Status::Cancelled;
    r.state = match n.state {
        SendState::Queued | SendState::Retry if cancelled => "cancelled",
        SendState::Queued => "queued",
        SendState::Retry => "retrying",
        SendState::Submitting => "submitting",
        SendState::Ambiguous => "ambiguous",
        SendState::Failed => "failed",
        SendState::Accepted => "accepted",
    };
    let Some(s) = sent else { return r };
    r.provider_id = s.identificativo().map(str::to_string);
    if let Some(e) = &s.accepted {
        r.receipts.extend(e.hash.clone());
        if n.state == SendState::Accepted {
            r.state = "acceptance-receipt";
        }
    }
    if let Some(e) = &s.not_accepted {
        r.receipts.extend(e.hash.clone());
        r.failure = e.detail.clone().or(r.failure);
        r.state = "not-accepted";
        return r;
    }
    let key = crate::pec::normalize_address(&n.notice.to);
    let Some(rec) = s.recipients.get(&key) else { return r };
    let for_recipient = receipts(&s, &n.notice.to).into_iter().filter(|(name, _)| name.contains("consegna"));
    r.receipts.extend(for_recipient.map(|(_, h)| h));
    if n.state != SendState::Accepted {
        return r;
    }
    match s.recipient_status(rec, now) {
        RecipientStatus::Delivered => {
            r.state = "delivered";
            r.delivered_at = rec.delivered.as_ref().map(|e| e.certified_at.unwrap_or(e.at));
        }
        RecipientStatus::DeliveryFailed => {
            r.state = "failed";
            r.failure = rec.failed.as_ref().and_then(|e| e.detail.clone()).or(r.failure);
        }
        RecipientStatus::Warned => {
            r.state = "warned";
            r.failure = rec.warned.as_ref().and_then(|e| e.detail.clone()).or(r.failure);
        }
        RecipientStatus::Overdue => r.state = "overdue",
        RecipientStatus::SentToNonCertified => r.state = "not-certified",
        RecipientStatus::NotSent => r.state = "not-accepted",
        RecipientStatus::Pending => {}
    }
    r
}

/// The receipts archived for a sending to `to`, as (name, SHA-256): the
/// acceptance or non-acceptance, then the delivery, delivery error or
/// warning; named as the evidence files are.
pub fn receipts(s: &SentMessage, to: &str) -> Vec<(&'static str, String)> {
    let rec = s.recipients.get(&crate::pec::normalize_address(to));
    [
        ("accettazione", s.accepted.as_ref()),
        ("non-accettazione", s.not_accepted.as_ref()),
        ("consegna", rec.and_then(|r| r.delivered.as_ref())),
        ("errore-consegna", rec.and_then(|r| r.failed.as_ref())),
        ("preavviso-errore-consegna", rec.and_then(|r| r.warned.as_ref())),
    ]
    .into_iter()
    .filter_map(|(name, e)| Some((name, e?.hash.clone()?)))
    .collect()
}

/// Every recipient's row, in CSV order, handed to `f` one at a time: what
/// status, metrics and the report read of a campaign of 48,397 notices
/// without holding all its rows (tens of MB) at once.
pub fn each_row(
    store: &Store,
    c: &CampaignRow,
    overdue_after: Option<std::time::Duration>,
    mut f: impl FnMut(Row),
) -> Result<(), StoreError> {
    try_each_row(store, c, overdue_after, |r| {
        f(r);
        Ok::<(), StoreError>(())
    })
}

/// [`each_row`] for a consumer that can fail (a report written to a
/// client that went away): the first error stops the reading.
pub fn try_each_row<E: From<StoreError>>(
    store: &Store,
    c: &CampaignRow,
    overdue_after: Option<std::time::Duration>,
    mut f: impl FnMut(Row) -> Result<(), E>,
) -> Result<(), E> {
    let now = Utc::now();
    let mut failed = None;
    let mut one = |n: NoticeRow| -> Result<(), E> {
        let sent = store.sent_state(&c.spec.mailbox, &n.notice.message_id)?;
        let sent = match overdue_after {
            Some(d) => sent.map(|s| s.with_overdue_after(d)),
            None => sent,
        };
        // A redelivered notice: the earlier sendings' receipts first.
        let mut before = Vec::new();
        for e in &n.earlier {
            if let Some(s) = store.sent_state(&c.spec.mailbox, &e.message_id)? {
                before.extend(receipts(&s, &n.notice.to).into_iter().map(|(_, h)| h));
            }
        }
        let mut r = row(c, n, sent, now);
        if !before.is_empty() {
            before.append(&mut r.receipts);
            r.receipts = before;
        }
        f(r)
    };
    store.notices(&c.spec.id, |n| {
        if failed.is_none() {
            if let Err(e) = one(n) {
                failed = Some(e);
            }
        }
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What status and metrics need of a campaign's rows, counted as they go
/// by ([`each_row`]).
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub counts: std::collections::BTreeMap<&'static str, u64>,
    /// Queued, retrying or mid-dialogue.
    waiting: u64,
    /// Queued or retrying (mid-dialogue ones have their send counted).
    to_send: u64,
    /// Dialogues started since `since`.
    recent: u64,
    since: DateTime<Utc>,
    /// Provider dialogues started, all rows.
    pub attempts: u64,
}

impl Tally {
    pub fn new(now: DateTime<Utc>) -> Tally {
        Tally { since: now - chrono::Duration::minutes(RATE_WINDOW_MINUTES), ..Tally::default() }
    }

    pub fn add(&mut self, r: &Row) {
        *self.counts.entry(r.state).or_insert(0) += 1;
        self.waiting += u64::from(matches!(r.state, "queued" | "retrying" | "submitting"));
        self.to_send += u64::from(matches!(r.state, "queued" | "retrying"));
        self.recent += u64::from(r.submitted_at.is_some_and(|t| t > self.since));
        self.attempts += u64::from(r.attempts);
    }

    /// A campaign's tally, its rows read once and let go.
    pub fn of(
        store: &Store,
        c: &CampaignRow,
        overdue_after: Option<std::time::Duration>,
        now: DateTime<Utc>,
    ) -> Result<Tally, StoreError> {
        let mut t = Tally::new(now);
        each_row(store, c, overdue_after, |r| t.add(&r))?;
        Ok(t)
    }
}

/// Where a campaign is: what is left to send, how fast it goes, when it
/// will be done.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    /// Queued, retrying or mid-dialogue.
    pub waiting: u64,
    /// Dialogues started in the last 15 minutes, per minute.
    pub observed_per_minute: f64,
    /// The rate the ETA assumes: the mailbox's sending limit when it has
    /// one (the sender keeps to it), else the observed rate.
    pub per_minute: Option<f64>,
    /// When the last waiting notice will have been sent (now when none
    /// waits; unknown when nothing is being sent and there is no limit).
    pub eta: Option<DateTime<Utc>>,
}

const RATE_WINDOW_MINUTES: i64 = 15;

/// `limit_per_minute`: the mailbox's sending limit as a rate (see
/// `api::rate_per_minute`); `schedule(n)`: how long until `n` more sends
/// have gone out at the mailbox's limits, as the sender will send them
/// (`Limiter::time_for`; `None` without limits).
pub fn progress(
    rows: &[Row],
    limit_per_minute: Option<f64>,
    schedule: impl Fn(u64) -> Option<std::time::Duration>,
    now: DateTime<Utc>,
) -> Progress {
    let mut t = Tally::new(now);
    rows.iter().for_each(|r| t.add(r));
    progress_of(&t, limit_per_minute, schedule, now)
}

/// [`progress`] from a [`Tally`] taken at `now`.
pub fn progress_of(
    t: &Tally,
    limit_per_minute: Option<f64>,
    schedule: impl Fn(u64) -> Option<std::time::Duration>,
    now: DateTime<Utc>,
) -> Progress {
    let (waiting, to_send) = (t.waiting, t.to_send);
    let observed = t.recent as f64 / RATE_WINDOW_MINUTES as f64;
    let per_minute = limit_per_minute.or((observed > 0.0).then_some(observed));
    let eta = match (waiting, schedule(to_send), per_minute) {
        (0, _, _) => Some(now),
        (_, Some(d), _) => chrono::Duration::from_std(d).ok().map(|d| now + d),
        (w, None, Some(r)) if r > 0.0 => Some(now + chrono::Duration::milliseconds((w as f64 / r * 60_000.0) as i64)),
        _ => None,
    };
    Progress { waiting, observed_per_minute: observed, per_minute, eta }
}

const CSV_HEADER: [&str; 14] = [
    "n",
    "line",
    "address",
    "key",
    "state",
    "provider_id",
    "accepted_at",
    "delivered_at",
    "failure",
    "attempts",
    "submitted_at",
    "message_id",
    "notice_sha256",
    "receipts_sha256",
];

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default()
}

/// Why a report could not be written whole: the store, the recipients'
/// list, or the writer (a client that went away).
pub type Failure = Box<dyn std::error::Error + Send + Sync>;

/// The report as CSV (UTF-8, `,`), written a row at a time (see
/// [`each_row`]).
pub struct CsvReport<W: Write>(csv::Writer<W>);

impl<W: Write> CsvReport<W> {
    pub fn new(out: W) -> io::Result<CsvReport<W>> {
        let mut w = csv::Writer::from_writer(out);
        w.write_record(CSV_HEADER)?;
        Ok(CsvReport(w))
    }

    pub fn push(&mut self, r: &Row) -> io::Result<()> {
        self.0.write_record([
            r.n.to_string().as_str(),
            r.line.to_string().as_str(),
            &r.address,
            &r.key,
            r.state,
            r.provider_id.as_deref().unwrap_or_default(),
            &time(r.accepted_at),
            &time(r.delivered_at),
            r.failure.as_deref().unwrap_or_default(),
            r.attempts.to_string().as_str(),
            &time(r.submitted_at),
            &r.message_id,
            &r.notice_sha256,
            &r.receipts.join(" "),
        ])?;
        Ok(())
    }

    pub fn finish(self) -> io::Result<W> {
        self.0.into_inner().map_err(|e| e.into_error())
    }
}

/// One row of the JSON-lines report, written to `out`.
pub fn jsonl_push(out: &mut impl Write, r: &Row) -> io::Result<()> {
    serde_json::to_writer(&mut *out, r)?;
    out.write_all(b"\n")
}

/// The report in `format` (`csv`, `jsonl`, `html`), or the fallback list,
/// written to `out` as the rows are read: a campaign's rows are never all
/// held at once, nor is the answer.
pub fn write(
    store: &Store,
    c: &CampaignRow,
    overdue_after: Option<std::time::Duration>,
    format: Format,
    out: &mut impl Write,
) -> Result<(), Failure> {
    match format {
        Format::Csv => {
            let mut w = CsvReport::new(&mut *out)?;
            try_each_row(store, c, overdue_after, |r| w.push(&r).map_err(Failure::from))?;
            w.finish()?;
        }
        Format::Jsonl => try_each_row(store, c, overdue_after, |r| jsonl_push(out, &r).map_err(Failure::from))?,
        Format::Html => to_html(store, c, overdue_after, out)?,
        Format::Fallback { deadline } => fallback_csv(store, c, overdue_after, deadline, out)?,
    }
    out.flush()?;
    Ok(())
}

/// What [`write`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
    Html,
    /// The fallback list, with the recipients delivered after `deadline`
    /// (else the campaign's own) among those who need registered mail.
    Fallback {
        deadline: Option<DateTime<Utc>>,
    },
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv | Format::Fallback { .. } => "text/csv; charset=utf-8",
            Format::Jsonl => "application/x-ndjson",
            Format::Html => "text/html; charset=utf-8",
        }
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The report as one HTML page (no scripts, no external resources): the
/// campaign, counts by state, then one table row per recipient; for
/// printing or attaching to a file. The rows are read twice (counts, then
/// the table), one at a time.
pub fn to_html(
    store: &Store,
    c: &CampaignRow,
    overdue_after: Option<std::time::Duration>,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let mut counts = std::collections::BTreeMap::new();
    each_row(store, c, overdue_after, |r| *counts.entry(r.state).or_insert(0u64) += 1)?;
    let mut h = String::from("<!DOCTYPE html>\n<html lang=\"it\"><head><meta charset=\"utf-8\">");
    h += &format!("<title>Campagna {}</title>", html_escape(&c.spec.name));
    h += "<style>body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 6px;text-align:left}th{background:#eee}.failed,.not-accepted,.not-certified,.ambiguous{background:#fdd}.delivered{background:#dfd}</style></head><body>\n";
    h += &format!(
        "<h1>{}</h1>\n<p>Campaign {} from mailbox {}, created {} by {}; {} notices; status {}{}.</p>\n",
        html_escape(&c.spec.name),
        html_escape(&c.spec.id),
        html_escape(&c.spec.mailbox),
        time(Some(c.created_at)),
        html_escape(&c.spec.created_by),
        c.spec.total,
        c.status.name(),
        c.spec.deadline.map(|d| format!("; deadline {}", time(Some(d)))).unwrap_or_default()
    );
    h += "<table><tr><th>state</th><th>notices</th></tr>\n";
    for (state, n) in counts {
        h += &format!("<tr class=\"{state}\"><td>{state}</td><td>{n}</td></tr>\n");
    }
    h += "</table>\n<h2>Recipients</h2>\n<table>\n<tr>";
    for col in [
        "n",
        "line",
        "address",
        "key",
        "state",
        "provider id",
        "accepted at",
        "delivered at",
        "failure",
        "attempts",
        "notice SHA-256",
    ] {
        h += &format!("<th>{col}</th>");
    }
    h += "</tr>\n";
    out.write_all(h.as_bytes())?;
    try_each_row(store, c, overdue_after, |r| {
        writeln!(
            out,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            r.state,
            r.n,
            r.line,
            html_escape(&r.address),
            html_escape(&r.key),
            r.state,
            html_escape(r.provider_id.as_deref().unwrap_or("")),
            time(r.accepted_at),
            time(r.delivered_at),
            html_escape(r.failure.as_deref().unwrap_or("")),
            r.attempts,
            r.notice_sha256
        )
        .map_err(Failure::from)
    })?;
    out.write_all(b"</table>\n</body></html>\n")?;
    Ok(())
}

/// The fallback list, ready for a mail merge: the recipients' own rows as
/// they were uploaded (same columns, same separator) plus `stato` and
/// `motivo`, for those who need registered mail. The campaign's rows and
/// the list's are both in line order: read side by side, one at a time.
pub fn fallback_csv(
    store: &Store,
    c: &CampaignRow,
    overdue_after: Option<std::time::Duration>,
    deadline: Option<DateTime<Utc>>,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let now = Utc::now();
    let deadline = deadline.or(c.spec.deadline);
    let csv = store.get_blob(&c.spec.recipients)?;
    let opts = InputOptions { address_column: c.spec.address_column.clone(), ..InputOptions::default() };
    let list = input::List::open(&csv, &opts).map_err(|e| format!("the recipients' list: {e}"))?;
    let mut listed = list.entries().filter_map(|e| match e {
        Ok(input::Entry::Row(r)) => Some(r),
        _ => None,
    });
    let mut pending: Option<input::Row> = None;
    let mut w = csv::WriterBuilder::new().delimiter(list.separator).from_writer(out);
    let mut header = list.columns.clone();
    header.extend(["stato".to_string(), "motivo".to_string()]);
    w.write_record(&header)?;
    try_each_row(store, c, overdue_after, |r| {
        if !needs_fallback(&r, deadline, now) {
            return Ok(());
        }
        // The list's row on the same line, if it is there.
        while pending.as_ref().is_none_or(|p| p.line < r.line) {
            match listed.next() {
                Some(p) => pending = Some(p),
                None => break,
            }
        }
        let mut rec: Vec<String> = match pending.take_if(|p| p.line == r.line) {
            Some(p) => p.values,
            None => {
                let mut v = vec![String::new(); list.columns.len()];
                if let Some(a) = v.get_mut(list.address_column) {
                    *a = r.address.clone();
                }
                v
            }
        };
        let why = match (r.state, &r.failure) {
            (_, Some(f)) => f.clone(),
            ("delivered", None) => format!("delivered after the deadline ({})", time(r.delivered_at)),
            (s, None) => format!("not delivered ({s})"),
        };
        rec.extend([r.state.to_string(), why]);
        w.write_record(&rec).map_err(Failure::from)
    })?;
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: &'static str, submitted: Option<DateTime<Utc>>) -> Row {
        Row {
            n: 1,
            line: 2,
            address: "a@b.it".into(),
            key: "k".into(),
            state,
            provider_id: None,
            accepted_at: None,
            delivered_at: None,
            failure: None,
            attempts: 0,
            submitted_at: submitted,
            message_id: "<m@b.it>".into(),
            notice_sha256: String::new(),
            size: 0,
            receipts: Vec::new(),
        }
    }

    #[test]
    fn the_eta_follows_the_limit_else_the_rate_of_the_last_15_minutes() {
        let now = Utc::now();
        let mut rows: Vec<Row> = (0..60).map(|_| row("queued", None)).collect();
        rows.extend((0..30).map(|i| row("delivered", Some(now - chrono::Duration::seconds(i * 20)))));
        rows.push(row("delivered", Some(now - chrono::Duration::hours(2))));
        let p = progress(&rows, Some(6.0), |n| Some(std::time::Duration::from_secs(n)), now);
        assert_eq!((p.waiting, p.per_minute), (60, Some(6.0)));
        assert_eq!(p.eta, Some(now + chrono::Duration::seconds(60)), "as the limiter schedules 60 sends");
        let p = progress(&rows, None, |_| None, now);
        assert_eq!(p.observed_per_minute, 2.0, "30 in the last 15 minutes");
        assert_eq!(p.eta, Some(now + chrono::Duration::minutes(30)));
        let idle: Vec<Row> = (0..3).map(|_| row("queued", None)).collect();
        assert_eq!(progress(&idle, None, |_| None, now).eta, None, "nothing sent, no limit: unknown");
        assert_eq!(progress(&[], None, |_| None, now).eta, Some(now));
    }

    #[test]
    fn the_fallback_is_the_failed_and_the_late() {
        let now = Utc::now();
        let d = now - chrono::Duration::days(1);
        let mut late = row("delivered", None);
        late.delivered_at = Some(d + chrono::Duration::hours(1));
        let mut on_time = row("delivered", None);
        on_time.delivered_at = Some(d - chrono::Duration::hours(1));
        assert!(needs_fallback(&late, Some(d), now) && !needs_fallback(&on_time, Some(d), now));
        assert!(!needs_fallback(&late, None, now), "no deadline: delivered is delivered");
        assert!(
            needs_fallback(&row("failed", None), None, now) && needs_fallback(&row("not-certified", None), None, now)
        );
        assert!(needs_fallback(&row("queued", None), Some(d), now) && !needs_fallback(&row("queued", None), None, now));
    }
}
