//! What the journal records of a campaign and what the index folds them
//! into: the campaign ([`CampaignRow`]) and one row per notice
//! ([`NoticeRow`]), each moved only by journal records, so a rebuilt index
//! has the same campaigns in the same states. Pure: no I/O.
//!
//! A notice's sending states, durable before and after the provider
//! dialogue (exactly once across crashes):
//!
//! ```text
//! queued ──▶ submitting ──▶ accepted (the provider said 250)
//!   ▲            │  ├──▶ retry (4xx, no connection: nothing reached the provider) ──▶ submitting …
//!   │            │  └──▶ failed (5xx: refused for good)
//!   │            └──▶ ambiguous (the dialogue broke after the message was sent, or a crash:
//!   │                            only the provider's receipts can tell) ──▶ accepted | failed
//!   ├─────────── requeued (an administrator's `campaign resolve --resend`)
//!   └─────────── redelivered (accepted, then the recipient's mailbox was full: once, after
//!                            `campaigns.retry_full_after`, as a new message with its own Message-ID)
//! ```
//!
//! After `accepted`, delivery is the provider's receipts, reconciled like
//! every sent message (`pec::reconcile`): the report joins the two.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A campaign as created: what it sends, from where, by when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignSpec {
    /// Unique, assigned at creation (`YYYYMMDD-HHMMSS-xxxx`).
    pub id: String,
    pub mailbox: String,
    pub name: String,
    /// When every notice must be delivered (the report's fallback list
    /// holds those that are not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// Notices queued (valid rows).
    pub total: u32,
    /// The inputs as uploaded, by blob hash: the recipients' CSV and the
    /// template, the attachments common to every notice (file name, hash).
    pub recipients: String,
    pub template: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<(String, String)>,
    /// The column that identifies a row in the report (a fine's number).
    pub key_column: String,
    /// The column the addresses were read from (to read the list again the
    /// same way: the fallback list). Absent in campaigns created before it
    /// was recorded: the list's default column then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_column: Option<String>,
    /// The gateway user who created it.
    pub created_by: String,
}

/// One notice as queued: rendered, its bytes a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedNotice {
    /// 1-based, in CSV order.
    pub n: u32,
    /// The CSV line of its row.
    pub line: u64,
    pub to: String,
    pub key: String,
    pub message_id: String,
    pub hash: String,
    pub size: u64,
}

/// An administrator's (or the API's) order to a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Control {
    Start,
    Pause,
    Resume,
    Cancel,
}

/// A step of one notice's sending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    /// Durable before the provider dialogue starts.
    Submitting { attempt: u32 },
    /// The provider answered 250 (or, settling an ambiguous notice, its
    /// acceptance receipt says it took it).
    Accepted { reply: String },
    /// Nothing reached the provider, or it answered 4xx: try again then.
    Retry { reason: String, not_before: DateTime<Utc> },
    /// The provider refused the notice for good (5xx), or its
    /// non-acceptance settled an ambiguous one.
    Failed { reason: String },
    /// The dialogue broke after the message was handed over, or the
    /// gateway stopped mid-dialogue, and no receipt settled it in time: not
    /// resent unless an administrator says so.
    Ambiguous { reason: String },
    /// Back in the queue (an administrator's `resolve --resend`).
    Requeued { reason: String },
    /// Back in the queue as a new message (its own Message-ID and bytes,
    /// already a blob): the accepted notice's delivery failed because the
    /// recipient's mailbox was full. Once per notice.
    Redelivered { message_id: String, hash: String, size: u64, reason: String },
}

/// A notice's earlier sending, before it was redelivered: its evidence
/// stays in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Earlier {
    pub message_id: String,
    pub hash: String,
    /// Why it was sent again (the provider's delivery error).
    pub reason: String,
}

/// A campaign's lifecycle, as ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Created, not started: nothing is sent.
    Ready,
    Running,
    Paused,
    Cancelled,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Ready => "ready",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Cancelled => "cancelled",
        }
    }

    /// The status after `c`, or why `c` does not apply now.
    pub fn after(self, c: Control) -> Result<Status, String> {
        match (self, c) {
            (Status::Ready, Control::Start) => Ok(Status::Running),
            (Status::Running, Control::Pause) => Ok(Status::Paused),
            (Status::Paused, Control::Resume) => Ok(Status::Running),
            (Status::Ready | Status::Running | Status::Paused, Control::Cancel) => Ok(Status::Cancelled),
            (s, c) => Err(format!("the campaign is {}: cannot {}", s.name(), c.name())),
        }
    }
}

impl Control {
    pub fn name(self) -> &'static str {
        match self {
            Control::Start => "start",
            Control::Pause => "pause",
            Control::Resume => "resume",
            Control::Cancel => "cancel",
        }
    }

    pub fn parse(s: &str) -> Option<Control> {
        [Control::Start, Control::Pause, Control::Resume, Control::Cancel].into_iter().find(|c| c.name() == s)
    }
}

/// A campaign in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignRow {
    pub spec: CampaignSpec,
    pub status: Status,
    pub created_at: DateTime<Utc>,
    /// Last status change.
    pub changed_at: DateTime<Utc>,
}

/// Where a notice's sending is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SendState {
    Queued,
    Submitting,
    Retry,
    Accepted,
    Failed,
    Ambiguous,
}

impl SendState {
    pub fn name(self) -> &'static str {
        match self {
            SendState::Queued => "queued",
            SendState::Submitting => "submitting",
            SendState::Retry => "retry",
            SendState::Accepted => "accepted",
            SendState::Failed => "failed",
            SendState::Ambiguous => "ambiguous",
        }
    }
}

/// A notice in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeRow {
    pub notice: QueuedNotice,
    pub state: SendState,
    /// Provider dialogues started.
    pub attempts: u32,
    /// The last refusal or error, as the provider (or the network) said it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `retry`: not before then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// The last dialogue's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_at: Option<DateTime<Utc>>,
    /// The provider's 250 reply (its queue id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// Sendings before a redelivery, oldest first (`notice` is the last).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<Earlier>,
}

impl NoticeRow {
    pub fn queued(notice: QueuedNotice) -> NoticeRow {
        NoticeRow {
            notice,
            state: SendState::Queued,
            attempts: 0,
            reason: None,
            not_before: None,
            submitted_at: None,
            accepted_at: None,
            reply: None,
            earlier: Vec::new(),
        }
    }

    /// Fold one step recorded at `time`. A step that does not follow from
    /// the current state (the writer refuses those) changes nothing.
    pub fn apply(&mut self, step: &Step, time: DateTime<Utc>) {
        use SendState::*;
        match (self.state, step) {
            (Queued | Retry, Step::Submitting { attempt }) => {
                self.state = Submitting;
                self.attempts = *attempt;
                self.submitted_at = Some(time);
                self.not_before = None;
            }
            (Submitting | Ambiguous, Step::Accepted { reply }) => {
                self.state = Accepted;
                self.accepted_at = Some(time);
                self.reply = Some(reply.clone());
            }
            (Submitting, Step::Retry { reason, not_before }) => {
                self.state = Retry;
                self.reason = Some(reason.clone());
                self.not_before = Some(*not_before);
            }
            (Submitting | Ambiguous, Step::Failed { reason }) => {
                self.state = Failed;
                self.reason = Some(reason.clone());
            }
            (Submitting, Step::Ambiguous { reason }) => {
                self.state = Ambiguous;
                self.reason = Some(reason.clone());
            }
            (Accepted, Step::Redelivered { message_id, hash, size, reason }) if self.earlier.is_empty() => {
                self.earlier.push(Earlier {
                    message_id: std::mem::replace(&mut self.notice.message_id, message_id.clone()),
                    hash: std::mem::replace(&mut self.notice.hash, hash.clone()),
                    reason: reason.clone(),
                });
                self.notice.size = *size;
                self.state = Queued;
                self.reason = Some(reason.clone());
                self.accepted_at = None;
                self.reply = None;
                self.not_before = None;
            }
            (Ambiguous | Failed | Retry, Step::Requeued { reason }) => {
                self.state = Queued;
                self.reason = Some(reason.clone());
                self.not_before = None;
            }
            _ => {}
        }
    }

    /// Does `step` follow from the current state?
    pub fn allows(&self, step: &Step) -> bool {
        let mut after = self.clone();
        after.apply(step, Utc::now());
        after.state != self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> NoticeRow {
        NoticeRow::queued(QueuedNotice {
            n: 1,
            line: 2,
            to: "a@pec.it".into(),
            key: "V-1".into(),
            message_id: "<n1@gw>".into(),
            hash: "00".into(),
            size: 10,
        })
    }

    #[test]
    fn a_notice_is_accepted_only_after_submitting() {
        let (mut r, t) = (row(), Utc::now());
        assert!(!r.allows(&Step::Accepted { reply: "250".into() }), "never accepted straight from the queue");
        r.apply(&Step::Submitting { attempt: 1 }, t);
        assert_eq!((r.state, r.attempts, r.submitted_at), (SendState::Submitting, 1, Some(t)));
        r.apply(&Step::Retry { reason: "451".into(), not_before: t }, t);
        assert_eq!(r.state, SendState::Retry);
        r.apply(&Step::Submitting { attempt: 2 }, t);
        r.apply(&Step::Accepted { reply: "250 ok".into() }, t);
        assert_eq!((r.state, r.attempts), (SendState::Accepted, 2));
        assert!(!r.allows(&Step::Submitting { attempt: 3 }), "an accepted notice is never sent again");
        assert!(!r.allows(&Step::Requeued { reason: "x".into() }));
    }

    #[test]
    fn an_ambiguous_notice_is_settled_or_requeued_by_hand() {
        let (mut r, t) = (row(), Utc::now());
        r.apply(&Step::Submitting { attempt: 1 }, t);
        r.apply(&Step::Ambiguous { reason: "connection lost after DATA".into() }, t);
        assert!(!r.allows(&Step::Submitting { attempt: 2 }), "not resent by itself");
        let mut settled = r.clone();
        settled.apply(&Step::Accepted { reply: "acceptance receipt".into() }, t);
        assert_eq!(settled.state, SendState::Accepted);
        r.apply(&Step::Requeued { reason: "resolve --resend".into() }, t);
        assert_eq!(r.state, SendState::Queued);
    }

    #[test]
    fn a_notice_to_a_full_mailbox_is_redelivered_once_as_a_new_message() {
        let (mut r, t) = (row(), Utc::now());
        let again =
            Step::Redelivered { message_id: "<n1.r@gw>".into(), hash: "11".into(), size: 12, reason: "5.2.2".into() };
        assert!(!r.allows(&again), "only an accepted notice");
        r.apply(&Step::Submitting { attempt: 1 }, t);
        r.apply(&Step::Accepted { reply: "250".into() }, t);
        r.apply(&again, t);
        assert_eq!(
            (r.state, r.notice.message_id.as_str(), r.notice.hash.as_str(), r.notice.size),
            (SendState::Queued, "<n1.r@gw>", "11", 12)
        );
        assert_eq!(
            r.earlier,
            vec![Earlier { message_id: "<n1@gw>".into(), hash: "00".into(), reason: "5.2.2".into() }]
        );
        r.apply(&Step::Submitting { attempt: 2 }, t);
        r.apply(&Step::Accepted { reply: "250".into() }, t);
        assert!(!r.allows(&again), "once");
    }

    #[test]
    fn campaign_controls_follow_the_lifecycle() {
        assert_eq!(Status::Ready.after(Control::Start), Ok(Status::Running));
        assert_eq!(Status::Running.after(Control::Pause), Ok(Status::Paused));
        assert_eq!(Status::Paused.after(Control::Resume), Ok(Status::Running));
        assert!(Status::Cancelled.after(Control::Resume).is_err());
        assert!(Status::Running.after(Control::Start).unwrap_err().contains("is running"));
        assert_eq!(Control::parse("cancel"), Some(Control::Cancel));
    }
}
