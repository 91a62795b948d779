//! The daemon's campaign sender: one task per mailbox that can send, which
//! sends its running campaigns' notices at the mailbox's rate, one provider
//! dialogue at a time, through the same relay and the same sending limits
//! as the clients' submissions.
//!
//! Exactly once across crashes: `submitting` is durable before the
//! dialogue starts and `accepted` (with the sent copy filed in `Sent`, where
//! the receipts reconcile) after the provider's 250. A notice left
//! `submitting` (pecgate stopped mid-dialogue, or the dialogue broke after
//! it started) is settled by the provider's receipts: its acceptance (or any
//! receipt naming its Message-ID) makes it accepted, a non-acceptance
//! failed; with neither within `settle_after` it becomes ambiguous and is
//! resent only by policy or by an administrator.
//!
//! A notice whose delivery failed because the recipient's mailbox was full
//! is sent once more, as a new message, `retry_full_after` after the
//! failure (see [`Step::Redelivered`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{watch, Notify};

use super::model::{CampaignRow, NoticeRow, SendState, Status, Step};
use crate::config::{CampaignsConfig, MailboxConfig};
use crate::pec::reconcile::{is_mailbox_full, RecipientStatus};
use crate::sending::Limiter;
use crate::smtp::relay::{self, Sent};
use crate::store::{Audit, Change, Event, Store, StoreError};

/// What every mailbox's sender shares.
#[derive(Clone)]
pub struct Sender {
    pub store: Store,
    pub limiter: Arc<Limiter>,
    pub cfg: CampaignsConfig,
    /// Longest wait for the provider.
    pub timeout: Duration,
    /// Poked when a campaign is started, resumed or resolved.
    pub wake: Arc<Notify>,
    /// The lease on this mailbox's sending (several nodes: one sends);
    /// every step is committed under it, so a node that lost it cannot
    /// mark a notice "submitting" and send it again.
    pub fence: Option<crate::store::cluster::Fence>,
}

/// The work found in one pass over a mailbox's campaigns.
#[derive(Default)]
struct Plan {
    /// (campaign, notice) to send now, in campaign then notice order.
    due: Vec<(String, u32)>,
    /// Notices left mid-dialogue, to settle.
    unsettled: Vec<(CampaignRow, NoticeRow)>,
    /// The earliest retry not yet due.
    next_retry: Option<DateTime<Utc>>,
    /// When notices of this mailbox started a dialogue in the last day
    /// (to count against the sending limits after a restart).
    recent: Vec<DateTime<Utc>>,
    /// Accepted notices whose recipient's mailbox was full, due to be
    /// sent again: with the provider's words.
    redeliver: Vec<(CampaignRow, NoticeRow, String)>,
}

/// Accepted notices whose delivery is settled for good (delivered, failed
/// otherwise than full, not certified, redelivered already): not looked up
/// again by this sender.
type Settled = HashSet<(String, u32)>;

fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(60u64.saturating_mul(1 << attempt.saturating_sub(1).min(6)).min(3600))
}

impl Sender {
    /// Send `mb`'s campaigns until `shutdown`.
    pub async fn run(self, mb: MailboxConfig, mut shutdown: watch::Receiver<bool>) {
        if mb.smtp.is_none() {
            return;
        }
        let mut seeded = false;
        let mut settled = Settled::new();
        // Orders taken by other nodes (cluster): their API wakes their own
        // sender, not this one.
        let mut theirs = self.store.campaign_changes();
        loop {
            if *shutdown.borrow() {
                return;
            }
            theirs.borrow_and_update();
            let plan = match self.plan(&mb.alias, &mut settled) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(mailbox = %mb.alias, error = %e, "campaigns: cannot read the queue");
                    Plan::default()
                }
            };
            if !seeded {
                let now = Utc::now();
                let ago = plan.recent.iter().filter_map(|t| (now - *t).to_std().ok());
                self.limiter.seed(&mb.alias, ago, Instant::now());
                seeded = true;
            }
            for (c, n) in &plan.unsettled {
                if let Err(e) = self.settle(&mb, c, n).await {
                    tracing::error!(campaign = %c.spec.id, notice = n.notice.n, error = %e, "campaigns: cannot settle a notice");
                }
            }
            let mut sent_any = false;
            for (c, n, reason) in &plan.redeliver {
                match self.redeliver(c, n, reason).await {
                    Ok(()) => sent_any = true,
                    Err(e) => {
                        tracing::error!(campaign = %c.spec.id, notice = n.notice.n, error = %e, "campaigns: cannot queue a redelivery")
                    }
                }
            }
            for (id, n) in &plan.due {
                if *shutdown.borrow() {
                    return;
                }
                tokio::select! {
                    _ = self.limiter.acquire_shared(&self.store, &mb.alias, &mb.sending) => {}
                    _ = shutdown.changed() => return,
                }
                match self.send_one(&mb, id, *n).await {
                    Ok(sent) => sent_any |= sent,
                    Err(e) => {
                        tracing::error!(campaign = %id, notice = n, error = %e, "campaigns: cannot record a step; pausing the sender");
                        break;
                    }
                }
            }
            if sent_any {
                continue;
            }
            // Nothing due: wait for an order, the next retry, or a while
            // (unsettled notices' receipts arrive by themselves).
            let mut wait = Duration::from_secs(if plan.unsettled.is_empty() { 30 } else { 5 });
            if let Some(at) = plan.next_retry {
                wait = wait.min((at - Utc::now()).to_std().unwrap_or_default().max(Duration::from_millis(100)));
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                Ok(()) = theirs.changed() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    fn plan(&self, alias: &str, settled: &mut Settled) -> Result<Plan, StoreError> {
        let (mut plan, now) = (Plan::default(), Utc::now());
        let full_after = chrono::Duration::from_std(self.cfg.retry_full_after).unwrap_or(chrono::Duration::MAX);
        for c in self.store.campaigns()? {
            if c.spec.mailbox != alias {
                continue;
            }
            let running = c.status == Status::Running;
            // Accepted long enough ago that a full mailbox may be due again.
            let mut delivered = Vec::new();
            self.store.notices(&c.spec.id, |n| {
                if let Some(t) = n.submitted_at.filter(|t| now - *t < chrono::Duration::days(1)) {
                    plan.recent.push(t);
                }
                match n.state {
                    SendState::Submitting | SendState::Ambiguous => plan.unsettled.push((c.clone(), n)),
                    SendState::Queued if running => plan.due.push((c.spec.id.clone(), n.notice.n)),
                    SendState::Retry if running => match n.not_before {
                        Some(t) if t > now => plan.next_retry = Some(plan.next_retry.map_or(t, |o| o.min(t))),
                        _ => plan.due.push((c.spec.id.clone(), n.notice.n)),
                    },
                    // Accepted, sent once, retries of full mailboxes on: due
                    // to be looked at once its wait is over, else look
                    // again when it may be.
                    SendState::Accepted if running && !self.cfg.retry_full_after.is_zero() && n.earlier.is_empty() => {
                        match n.accepted_at.map(|t| t + full_after) {
                            Some(t) if t > now => plan.next_retry = Some(plan.next_retry.map_or(t, |o| o.min(t))),
                            Some(_) if !settled.contains(&(c.spec.id.clone(), n.notice.n)) => delivered.push(n),
                            _ => {}
                        }
                    }
                    _ => {}
                }
            })?;
            for n in delivered {
                let Some(s) = self.store.sent_state(alias, &n.notice.message_id)? else { continue };
                let s = s.with_overdue_after(Duration::MAX);
                let rec = s.recipients.get(&crate::pec::normalize_address(&n.notice.to));
                let failed = match rec.map(|r| s.recipient_status(r, now)) {
                    Some(RecipientStatus::DeliveryFailed) => rec.and_then(|r| r.failed.as_ref()),
                    // Not settled yet: looked at again next time.
                    Some(RecipientStatus::Pending | RecipientStatus::Warned | RecipientStatus::Overdue) => continue,
                    None if s.not_accepted.is_none() => continue,
                    _ => None,
                };
                let full = failed.and_then(|e| e.detail.clone()).filter(|d| is_mailbox_full(d));
                let (Some(e), Some(reason)) = (failed, full) else {
                    settled.insert((c.spec.id.clone(), n.notice.n));
                    continue;
                };
                let due = e.certified_at.unwrap_or(e.at) + full_after;
                if due <= now {
                    settled.insert((c.spec.id.clone(), n.notice.n));
                    plan.redeliver.push((c.clone(), n, reason));
                } else {
                    plan.next_retry = Some(plan.next_retry.map_or(due, |o| o.min(due)));
                }
            }
        }
        Ok(plan)
    }

    /// Queue `n` again as a new message (its Message-ID and Date
    /// replaced): its recipient's mailbox was full (`reason`).
    async fn redeliver(&self, c: &CampaignRow, n: &NoticeRow, reason: &str) -> Result<(), StoreError> {
        let old = &n.notice.message_id;
        let inner = old.trim_start_matches('<').trim_end_matches('>');
        let message_id = match inner.rsplit_once('@') {
            Some((local, domain)) => format!("<{local}.r{}@{domain}>", n.earlier.len() + 1),
            None => format!("<{inner}.r{}>", n.earlier.len() + 1),
        };
        let bytes = crate::campaign::template::reissue(
            &self.store.get_blob(&n.notice.hash)?,
            &message_id,
            Utc::now().fixed_offset(),
        )
        .ok_or_else(|| StoreError::Invalid(format!("notice {} has no Message-ID to replace", n.notice.n)))?;
        let size = bytes.len() as u64;
        let blob = self.store.put_blob(bytes).await?;
        let reason = format!("mailbox full, sent again as {message_id}: {reason}");
        tracing::info!(campaign = %c.spec.id, notice = n.notice.n, to = %n.notice.to, %message_id, "campaign notice: the recipient's mailbox was full; sending it again");
        let step = Step::Redelivered { message_id, hash: blob.hash, size, reason: reason.clone() };
        self.step(c, n, "notice-redelivered", reason, step).await
    }

    fn audit(&self, c: &CampaignRow, n: &NoticeRow, op: &str, outcome: String) -> Audit {
        Audit::system("campaign", op)
            .mailbox(&c.spec.mailbox)
            .message_id(Some(n.notice.message_id.clone()))
            .outcome(format!("campaign {} notice {} to <{}>: {outcome}", c.spec.id, n.notice.n, n.notice.to))
    }

    async fn step(
        &self,
        c: &CampaignRow,
        n: &NoticeRow,
        op: &str,
        outcome: String,
        step: Step,
    ) -> Result<(), StoreError> {
        let event = Event::NoticeStepped { campaign: c.spec.id.clone(), n: n.notice.n, step };
        self.store
            .commit_batch_fenced(self.fence.as_ref(), vec![(self.audit(c, n, op, outcome), Change::Campaign(event))])
            .await
            .map(|_| ())
    }

    /// Accepted: the step and the sent copy in `Sent` (`sent`: the notice's
    /// blob and its bytes, as sent), in one batch.
    async fn accepted(
        &self,
        c: &CampaignRow,
        n: &NoticeRow,
        reply: String,
        sent: (&str, &[u8]),
    ) -> Result<(), StoreError> {
        let (hash, data) = sent;
        let blob = crate::store::BlobRef { hash: hash.to_string(), size: data.len() as u64 };
        let copy =
            relay::sent_copy(&c.spec.mailbox, blob, data, &n.notice.message_id, std::slice::from_ref(&n.notice.to));
        let event = Event::NoticeStepped {
            campaign: c.spec.id.clone(),
            n: n.notice.n,
            step: Step::Accepted { reply: reply.clone() },
        };
        self.store
            .commit_batch_fenced(
                self.fence.as_ref(),
                vec![
                    (self.audit(c, n, "notice-accepted", format!("accepted: {reply}")), Change::Campaign(event)),
                    (self.audit(c, n, "archive-sent", "ok".into()).folder("Sent"), copy),
                ],
            )
            .await
            .map(|_| ())
    }

    /// One dialogue for notice `n`, if it is still due. True if one took place.
    async fn send_one(&self, mb: &MailboxConfig, id: &str, n: u32) -> Result<bool, StoreError> {
        let (Some(c), Some(row)) = (self.store.campaign(id)?, self.store.notice(id, n)?) else { return Ok(false) };
        if c.status != Status::Running || !matches!(row.state, SendState::Queued | SendState::Retry) {
            return Ok(false);
        }
        let Some(claim) = self.claim(id, n).await? else { return Ok(false) };
        let attempt = row.attempts + 1;
        self.step(&c, &row, "notice-submitting", format!("attempt {attempt}"), Step::Submitting { attempt }).await?;
        let (sent_hash, data) = (row.notice.hash.clone(), self.store.get_blob(&row.notice.hash)?);
        let result = relay::send(mb, &mb.address, std::slice::from_ref(&row.notice.to), &data, self.timeout).await;
        tracing::info!(campaign = %id, notice = n, to = %row.notice.to, attempt, result = ?result, "campaign notice");
        let Some(row) = self.store.notice(id, n)? else { return Ok(true) };
        match result {
            Sent::Accepted(reply) => self.accepted(&c, &row, reply, (&sent_hash, &data)).await?,
            Sent::Refused { code, text } => {
                let reason = format!("{code} {text}");
                self.step(&c, &row, "notice-failed", format!("refused: {reason}"), Step::Failed { reason }).await?
            }
            Sent::NotSent(reason) if attempt >= self.cfg.max_attempts => {
                let reason = format!("gave up after {attempt} attempts: {reason}");
                self.step(&c, &row, "notice-failed", reason.clone(), Step::Failed { reason }).await?
            }
            Sent::NotSent(reason) => {
                let not_before = Utc::now() + chrono::Duration::from_std(backoff(attempt)).unwrap_or_default();
                let outcome = format!("not sent, retry after {}: {reason}", not_before.format("%H:%M:%S"));
                self.step(&c, &row, "notice-retry", outcome, Step::Retry { reason, not_before }).await?
            }
            // Left submitting: the receipts will settle it.
            Sent::Uncertain(reason) => {
                tracing::warn!(campaign = %id, notice = n, %reason, "campaign notice: the dialogue broke after it started; waiting for the provider's receipts");
            }
        }
        claim.release().await;
        Ok(true)
    }

    /// Hold notice `n` for a dialogue or a settlement (several nodes: see
    /// [`Store::claim_notice`]); `None`: another node's dialogue holds it
    /// (a node frozen mid-dialogue past its lease), so it is left alone.
    async fn claim(&self, id: &str, n: u32) -> Result<Option<crate::store::NoticeClaim>, StoreError> {
        // Longer than any dialogue (each step waits at most `timeout`).
        let hold = self.timeout.saturating_mul(3).max(Duration::from_secs(60));
        let claim = self.store.claim_notice(self.fence.as_ref(), id, n, hold).await?;
        if claim.is_none() {
            tracing::info!(campaign = %id, notice = n, "campaign notice: another node's dialogue holds it; left alone");
        }
        Ok(claim)
    }

    /// A notice left mid-dialogue (or ambiguous): do the provider's
    /// receipts say what became of it?
    async fn settle(&self, mb: &MailboxConfig, c: &CampaignRow, n: &NoticeRow) -> Result<(), StoreError> {
        let Some(claim) = self.claim(&c.spec.id, n.notice.n).await? else { return Ok(()) };
        let r = self.settle_claimed(mb, c, n).await;
        claim.release().await;
        r
    }

    async fn settle_claimed(&self, mb: &MailboxConfig, c: &CampaignRow, n: &NoticeRow) -> Result<(), StoreError> {
        let state = self.store.sent_state(&mb.alias, &n.notice.message_id)?;
        if let Some(s) = &state {
            if let Some(e) = &s.not_accepted {
                let reason = format!("non-acceptance: {}", e.detail.clone().unwrap_or_default());
                return self
                    .step(c, n, "notice-failed", format!("settled by the provider: {reason}"), Step::Failed { reason })
                    .await;
            }
            if s.accepted.is_some() || !s.identificativi.is_empty() || !s.recipients.is_empty() {
                let data = self.store.get_blob(&n.notice.hash)?;
                return self.accepted(c, n, "settled by the provider's receipts".into(), (&n.notice.hash, &data)).await;
            }
        }
        if n.state == SendState::Submitting {
            let since = n.submitted_at.unwrap_or(c.created_at);
            let waited = (Utc::now() - since).to_std().unwrap_or_default();
            if waited >= self.cfg.settle_after {
                let reason = format!(
                    "no receipt from the provider {} after the dialogue started",
                    humantime::format_duration(self.cfg.settle_after)
                );
                self.step(c, n, "notice-ambiguous", reason.clone(), Step::Ambiguous { reason }).await?;
                if self.cfg.resend_ambiguous {
                    let Some(n) = self.store.notice(&c.spec.id, n.notice.n)? else { return Ok(()) };
                    let reason = "resent by policy (campaigns.resend_ambiguous)".to_string();
                    self.step(c, &n, "notice-requeued", reason.clone(), Step::Requeued { reason }).await?;
                }
            }
        }
        Ok(())
    }
}

/// Start one sender per mailbox that can send.
pub fn start(
    sender: &Sender,
    mailboxes: &[MailboxConfig],
    shutdown: &watch::Receiver<bool>,
) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut seen = HashMap::new();
    for mb in mailboxes.iter().filter(|m| m.smtp.is_some()) {
        if seen.insert(mb.alias.clone(), ()).is_none() {
            tasks.spawn(sender.clone().run(mb.clone(), shutdown.clone()));
        }
    }
    tasks
}
