//! Campaigns over the HTTP API (what `pecgate campaign …` and a billing or
//! fines application call): upload inputs, create, list, status, start,
//! pause, resume, cancel, resolve, report. Every operation needs `send` on
//! the campaign's mailbox and is an audit record. The routes are in
//! `http.rs`; here each answers with a status and a body.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::create::{self, CreateError};
use super::input::InputOptions;
use super::model::{CampaignRow, Control, SendState, Step};
use super::report;
use crate::auth::{Right, User};
use crate::config::{MailboxConfig, SendingLimits};
use crate::sending::Limiter;
use crate::store::{Audit, Change, Event, Store, StoreError};

/// What the campaign endpoints need.
pub struct Api {
    pub store: Store,
    pub mailboxes: HashMap<String, MailboxConfig>,
    pub limiter: Arc<Limiter>,
    /// Wakes the senders (a campaign started, resumed, resolved).
    pub wake: Arc<Notify>,
    pub overdue_after: Option<std::time::Duration>,
}

/// An answer: HTTP status, content type, body.
pub type Answer = (u16, &'static str, Vec<u8>);

fn json_answer(status: u16, v: Value) -> Answer {
    (status, "application/json", v.to_string().into_bytes())
}

fn err(status: u16, msg: impl std::fmt::Display) -> Answer {
    json_answer(status, json!({ "error": msg.to_string() }))
}

fn store_err(e: StoreError) -> Answer {
    match e {
        StoreError::Conflict(m) => err(409, m),
        StoreError::Invalid(m) => err(400, m),
        other => err(500, other),
    }
}

/// The body of `POST /api/campaigns`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    pub mailbox: String,
    pub name: String,
    /// SHA-256 of the uploaded recipients' CSV and template.
    pub recipients: String,
    pub template: String,
    #[serde(default)]
    pub attachments: Vec<(String, String)>,
    /// Per-recipient files: the path as written in the CSV → SHA-256.
    #[serde(default)]
    pub files: HashMap<String, String>,
    #[serde(default)]
    pub address_column: Option<String>,
    #[serde(default)]
    pub key_column: Option<String>,
    #[serde(default)]
    pub attachment_column: Option<String>,
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
    #[serde(default)]
    pub skip_invalid: bool,
    /// Start sending at once.
    #[serde(default)]
    pub start: bool,
}

impl Api {
    fn may_send(&self, user: &User, mailbox: &str) -> Result<&MailboxConfig, Answer> {
        let Some(mb) = self.mailboxes.get(mailbox) else { return Err(err(404, format!("no mailbox {mailbox}"))) };
        if !user.may(mailbox, Right::Send) {
            return Err(err(403, format!("user {} may not send from {mailbox}", user.name)));
        }
        if mb.smtp.is_none() {
            return Err(err(400, format!("mailbox {mailbox} has no provider SMTP endpoint: it cannot send")));
        }
        Ok(mb)
    }

    fn campaign_for(&self, user: &User, id: &str) -> Result<CampaignRow, Answer> {
        let c = self.store.campaign(id).map_err(store_err)?.ok_or_else(|| err(404, format!("no campaign {id}")))?;
        self.may_send(user, &c.spec.mailbox)?;
        Ok(c)
    }

    /// `POST /api/uploads`: a file for a campaign, kept as a blob.
    pub async fn upload(&self, user: &User, bytes: Vec<u8>) -> Answer {
        if !self.mailboxes.keys().any(|m| user.may(m, Right::Send)) {
            return err(403, format!("user {} may not send from any mailbox", user.name));
        }
        match self.store.put_blob(bytes).await {
            Ok(b) => json_answer(201, json!({ "sha256": b.hash, "size": b.size })),
            Err(e) => store_err(e),
        }
    }

    /// `POST /api/campaigns`.
    pub async fn create(&self, user: &User, source: &str, body: &[u8]) -> Answer {
        let b: CreateBody = match serde_json::from_slice(body) {
            Ok(b) => b,
            Err(e) => return err(400, format!("the request body: {e}")),
        };
        let mb = match self.may_send(user, &b.mailbox) {
            Ok(m) => m.clone(),
            Err(a) => return a,
        };
        if b.name.trim().is_empty() {
            return err(400, "name: give the campaign a name");
        }
        let req = create::Request {
            name: b.name.clone(),
            user: user.name.clone(),
            recipients: b.recipients,
            template: b.template,
            attachments: b.attachments,
            files: b.files,
            options: InputOptions {
                address_column: b.address_column,
                key_column: b.key_column,
                attachment_column: b.attachment_column,
            },
            deadline: b.deadline,
            skip_invalid: b.skip_invalid,
        };
        match create::create(&self.store, &mb, req).await {
            Ok(c) => {
                tracing::info!(campaign = %c.id, mailbox = %mb.alias, user = %user.name, queued = c.queued, rejected = c.rejected.len(), "campaign created");
                if b.start {
                    if let Err(a) = self.control(user, source, &c.id, Control::Start).await {
                        return a;
                    }
                }
                json_answer(
                    201,
                    json!({
                        "id": c.id,
                        "queued": c.queued,
                        "encoding": c.encoding,
                        "separator": c.separator.to_string(),
                        "rejected": c.rejected.iter().map(|r| json!({"line": r.line, "reason": r.reason})).collect::<Vec<_>>(),
                        "rejected_csv": c.rejected_csv.map(|b| String::from_utf8_lossy(&b).into_owned()),
                        "started": b.start,
                    }),
                )
            }
            Err(CreateError::Rows(rows)) => {
                let audit = Audit::user(&user.name, Some(source.to_string()), "api", "campaign-create")
                    .mailbox(&mb.alias)
                    .outcome(format!("refused: {} bad row(s) in {}", rows.len(), b.name));
                let _ = self.store.commit(audit, Change::None).await;
                json_answer(
                    422,
                    json!({
                        "error": format!("{} row(s) cannot be sent; nothing was queued (fix them, or use skip_invalid)", rows.len()),
                        "rows": rows.iter().map(|r| json!({"line": r.line, "reason": r.reason})).collect::<Vec<_>>(),
                    }),
                )
            }
            Err(CreateError::Input(m)) => err(422, m),
            Err(CreateError::Store(e)) => store_err(e),
        }
    }

    /// Start, pause, resume or cancel: recorded, then the senders woken.
    pub async fn control(&self, user: &User, source: &str, id: &str, c: Control) -> Result<Value, Answer> {
        let row = self.campaign_for(user, id)?;
        let audit = Audit::user(&user.name, Some(source.to_string()), "api", &format!("campaign-{}", c.name()))
            .mailbox(&row.spec.mailbox)
            .outcome(format!("ok: campaign {id} ({})", row.spec.name));
        let event = Event::CampaignControlled { campaign: id.to_string(), control: c };
        self.store.commit(audit, Change::Campaign(event)).await.map_err(store_err)?;
        self.wake.notify_waiters();
        tracing::info!(campaign = %id, user = %user.name, order = c.name(), "campaign order");
        let row = self.campaign_for(user, id)?;
        Ok(json!({ "id": id, "status": row.status.name() }))
    }

    /// `POST /api/campaigns/{id}/resolve` `{"notice": N, "action": "resend"|"sent"}`:
    /// an administrator's decision on an ambiguous notice.
    pub async fn resolve(&self, user: &User, source: &str, id: &str, body: &[u8]) -> Answer {
        #[derive(Deserialize)]
        struct Body {
            notice: u32,
            action: String,
        }
        let b: Body = match serde_json::from_slice(body) {
            Ok(b) => b,
            Err(e) => return err(400, format!("the request body: {e}")),
        };
        let row = match self.campaign_for(user, id) {
            Ok(r) => r,
            Err(a) => return a,
        };
        let Ok(Some(n)) = self.store.notice(id, b.notice) else { return err(404, format!("no notice {}", b.notice)) };
        if n.state != SendState::Ambiguous {
            return err(409, format!("notice {} is {}, not ambiguous", b.notice, n.state.name()));
        }
        let why = format!("resolved by {}", user.name);
        let step = match b.action.as_str() {
            "resend" => Step::Requeued { reason: why },
            "sent" => Step::Accepted { reply: why },
            other => return err(400, format!("action {other:?}: use \"resend\" or \"sent\"")),
        };
        let audit = Audit::user(&user.name, Some(source.to_string()), "api", "campaign-resolve")
            .mailbox(&row.spec.mailbox)
            .message_id(Some(n.notice.message_id.clone()))
            .outcome(format!("ok: notice {} of campaign {id}: {}", b.notice, b.action));
        let event = Event::NoticeStepped { campaign: id.to_string(), n: b.notice, step };
        if let Err(e) = self.store.commit(audit, Change::Campaign(event)).await {
            return store_err(e);
        }
        self.wake.notify_waiters();
        json_answer(200, json!({ "id": id, "notice": b.notice, "action": b.action }))
    }

    /// `GET /api/campaigns`: the campaigns of mailboxes the user may send from.
    pub fn list(&self, user: &User) -> Answer {
        match self.store.campaigns() {
            Ok(all) => {
                let list: Vec<Value> = all
                    .iter()
                    .filter(|c| user.may(&c.spec.mailbox, Right::Send))
                    .map(|c| {
                        json!({
                            "id": c.spec.id, "name": c.spec.name, "mailbox": c.spec.mailbox,
                            "status": c.status.name(), "notices": c.spec.total,
                            "created_at": c.created_at, "created_by": c.spec.created_by, "deadline": c.spec.deadline,
                        })
                    })
                    .collect();
                json_answer(200, json!({ "campaigns": list }))
            }
            Err(e) => store_err(e),
        }
    }

    /// `GET /api/campaigns/{id}`: counts by state, rate and ETA.
    pub fn status(&self, user: &User, id: &str) -> Answer {
        let c = match self.campaign_for(user, id) {
            Ok(c) => c,
            Err(a) => return a,
        };
        let now = Utc::now();
        let tally = match report::Tally::of(&self.store, &c, self.overdue_after, now) {
            Ok(t) => t,
            Err(e) => return store_err(e),
        };
        let counts = &tally.counts;
        let limits = self.mailboxes.get(&c.spec.mailbox).map(|m| m.sending).unwrap_or_default();
        let alias = c.spec.mailbox.clone();
        let schedule = |n| self.limiter.time_for(&alias, &limits, n, std::time::Instant::now());
        let p = report::progress_of(&tally, rate_per_minute(&limits), schedule, now);
        json_answer(
            200,
            json!({
                "id": c.spec.id, "name": c.spec.name, "mailbox": c.spec.mailbox, "status": c.status.name(),
                "notices": c.spec.total, "states": counts, "waiting": p.waiting,
                "rate_per_minute": p.per_minute, "observed_per_minute": p.observed_per_minute,
                "eta": p.eta, "deadline": c.spec.deadline,
                "deadline_at_risk": matches!((p.eta, c.spec.deadline), (Some(e), Some(d)) if e > d),
            }),
        )
    }

    /// `GET /api/campaigns/{id}/report?format=csv|jsonl|html[&fallback=1][&deadline=RFC3339]`:
    /// what is asked, checked (the campaign, the caller's right, the
    /// format) before anything is written.
    pub fn report(&self, user: &User, id: &str, params: &HashMap<String, String>) -> Result<Report, Answer> {
        let c = self.campaign_for(user, id)?;
        let deadline = match params.get("deadline").map(|d| parse_deadline(d)) {
            Some(Ok(d)) => Some(d),
            Some(Err(e)) => return Err(err(400, e)),
            None => None,
        };
        let fallback = params.get("fallback").is_some_and(|v| v == "1" || v == "true");
        let format = match (fallback, params.get("format").map(String::as_str).unwrap_or("csv")) {
            (true, _) => report::Format::Fallback { deadline },
            (false, "csv") => report::Format::Csv,
            (false, "jsonl") => report::Format::Jsonl,
            (false, "html") => report::Format::Html,
            (false, other) => return Err(err(400, format!("format {other:?}: use csv, jsonl or html"))),
        };
        Ok(Report { store: self.store.clone(), campaign: c, overdue_after: self.overdue_after, format })
    }
}

/// A report to write (see [`Api::report`]).
pub struct Report {
    store: Store,
    campaign: CampaignRow,
    overdue_after: Option<std::time::Duration>,
    pub format: report::Format,
}

impl Report {
    /// Write it to `out` as the rows are read (blocking: the store is read).
    pub fn write(&self, out: &mut impl std::io::Write) -> Result<(), report::Failure> {
        report::write(&self.store, &self.campaign, self.overdue_after, self.format, out)
    }
}

impl Api {
    /// `GET /api/campaigns/{id}/evidence?recipient=ADDR`: the notice as sent
    /// and the provider's signed receipts about it, each with its SHA-256
    /// (`eml` in base64).
    pub fn evidence(&self, user: &User, id: &str, params: &HashMap<String, String>) -> Answer {
        let c = match self.campaign_for(user, id) {
            Ok(c) => c,
            Err(a) => return a,
        };
        let Some(want) = params.get("recipient").map(|r| crate::pec::normalize_address(r)) else {
            return err(400, "recipient= is required");
        };
        let mut found = None;
        if let Err(e) = self.store.notices(id, |n| {
            if found.is_none() && crate::pec::normalize_address(&n.notice.to) == want {
                found = Some(n);
            }
        }) {
            return store_err(e);
        }
        let Some(n) = found else { return err(404, format!("campaign {id} has no notice to {want}")) };
        // Each sending: the notice and its receipts (a redelivered notice's
        // earlier sendings first, their files numbered).
        let mut sendings: Vec<(String, &str, &str)> = n
            .earlier
            .iter()
            .enumerate()
            .map(|(i, e)| (format!("invio-{}-", i + 1), e.message_id.as_str(), e.hash.as_str()))
            .collect();
        sendings.push((String::new(), n.notice.message_id.as_str(), n.notice.hash.as_str()));
        let mut files = Vec::new();
        for (prefix, message_id, hash) in sendings {
            files.push((format!("{prefix}notice.eml"), hash.to_string()));
            match self.store.sent_state(&c.spec.mailbox, message_id) {
                Ok(Some(s)) => {
                    let found = super::report::receipts(&s, &want);
                    files.extend(found.into_iter().map(|(name, h)| (format!("{prefix}{name}.eml"), h)));
                }
                Ok(None) => {}
                Err(e) => return store_err(e),
            }
        }
        let mut out = Vec::new();
        for (name, hash) in files {
            match self.store.get_blob(&hash) {
                Ok(b) => out.push(json!({ "name": name, "sha256": hash, "eml": openssl::base64::encode_block(&b) })),
                Err(e) => return store_err(e),
            }
        }
        json_answer(
            200,
            json!({ "campaign": id, "recipient": want, "notice": n.notice.n, "message_id": n.notice.message_id, "files": out }),
        )
    }
}

/// The fastest sustained rate the limits allow, per minute (None: no limit).
pub fn rate_per_minute(l: &SendingLimits) -> Option<f64> {
    [l.per_minute.map(f64::from), l.per_hour.map(|h| f64::from(h) / 60.0), l.per_day.map(|d| f64::from(d) / 1440.0)]
        .into_iter()
        .flatten()
        .reduce(f64::min)
}

/// A deadline as RFC 3339 or a date (`2027-01-31`, end of that day, UTC).
pub fn parse_deadline(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(23, 59, 59))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("deadline {s:?}: use a date (2027-01-31) or an RFC 3339 time"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_follows_the_slowest_limit() {
        let now = Utc::now();
        let l = SendingLimits { per_minute: Some(6), per_hour: Some(300), ..Default::default() };
        assert_eq!(rate_per_minute(&l), Some(5.0));
        assert_eq!(rate_per_minute(&SendingLimits::default()), None);
        let _ = now;
        assert!(parse_deadline("2027-01-31").unwrap().to_rfc3339().starts_with("2027-01-31T23:59:59"));
        assert!(parse_deadline("31/01/2027").is_err());
    }
}
