//! Reconciliation of receipts with sent messages: a pure, order-independent
//! state machine.
//!
//! Receipts arrive in any order, days late, twice, before our copy of the
//! sent message, or for messages sent from the provider's webmail whose copy
//! never reaches us. The index replays them from its journal, so the state
//! must be a function of the *set* of events seen, not of their order.
//!
//! The design that guarantees this: [`SentMessage`] stores **evidence**, not
//! a status. Each piece of evidence is merged with an operation that is
//! commutative, associative and idempotent (set union, or the earliest of two
//! timestamps with a total tie-break), and every status or keyword is derived
//! from the evidence when asked, given a `now` supplied by the caller (this
//! module never reads the clock). Replaying events in any order, with
//! duplicates, therefore yields an identical (`==`, and identically
//! serialised) state.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::classify::{Classification, PecKind};
use super::daticert::RecipientType;
use super::{normalize_address, normalize_message_id};

/// Default time after which a certified recipient without a delivery
/// receipt or error is overdue: the technical rules give the recipient's
/// provider 24 hours before the sender's provider must send a definitive
/// non-delivery notice, so by then something should have arrived.
pub const DEFAULT_OVERDUE_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Something that happened to a sent message.
///
/// Events are built one at a time and applied at once, never stored in bulk,
/// so the size of the `Receipt` variant does not matter and boxing it would
/// only complicate every caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum Event {
    /// Our own copy of the sent message was seen (Sent folder or SMTP
    /// submission). May arrive after the receipts, or never.
    Submitted {
        /// Recipient addresses (To, Cc, Bcc) as written.
        recipients: Vec<String>,
        /// When it was submitted.
        at: DateTime<Utc>,
    },
    /// A provider receipt about the message, with the time it was received.
    Receipt(Classification, DateTime<Utc>),
}

/// Why an event could not be applied (the state is then unchanged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// The receipt refers to another message: route by
    /// [`Classification::original_message_id`] before applying.
    #[error("receipt refers to {got}, not to {expected}: route receipts by their original Message-ID")]
    OtherMessage {
        /// This state's key.
        expected: String,
        /// The receipt's reference.
        got: String,
    },
    /// The receipt carries no original Message-ID (no daticert `msgid`, no
    /// `X-Riferimento-Message-ID`), so it cannot be attributed.
    #[error("receipt has no original Message-ID (neither daticert msgid nor X-Riferimento-Message-ID): cannot be reconciled")]
    NoReference,
    /// The message is not a receipt (envelope, anomaly, plain mail).
    #[error("a {0} message is not a receipt and does not change delivery state")]
    NotAReceipt(&'static str),
}

/// One timestamped piece of evidence. The derived total order (time, then
/// receipt id, then detail) is what makes "keep the earliest" deterministic
/// even between two receipts with the same time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Evidence {
    /// When the receipt was received (as passed with the event).
    pub at: DateTime<Utc>,
    /// The receipt's own Message-ID, to find it in the archive.
    pub receipt_id: Option<String>,
    /// Error text (`errore-esteso`, else `errore`), for failures.
    pub detail: Option<String>,
    /// The event's time as the provider certified it (daticert `data`):
    /// for a delivery receipt, the legal notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certified_at: Option<DateTime<Utc>>,
    /// SHA-256 of the receipt as archived (set by the archive, see
    /// [`SentMessage::note_receipt_blob`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// Keeps the earliest evidence: commutative, associative, idempotent.
fn merge(slot: &mut Option<Evidence>, new: Evidence) {
    match slot {
        Some(old) if *old <= new => {}
        _ => *slot = Some(new),
    }
}

fn merge_time(slot: &mut Option<DateTime<Utc>>, new: DateTime<Utc>) {
    *slot = Some(slot.map_or(new, |old| old.min(new)));
}

/// What is known about one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RecipientRecord {
    /// Listed in our own submission.
    pub in_submission: bool,
    /// A daticert listed it as `certificato`.
    pub declared_certified: bool,
    /// A daticert listed it as `esterno`.
    pub declared_external: bool,
    /// Earliest delivery receipt (`avvenuta-consegna`).
    pub delivered: Option<Evidence>,
    /// Earliest definitive failure (`errore-consegna`, virus).
    pub failed: Option<Evidence>,
    /// Earliest warning (`preavviso-errore-consegna`).
    pub warned: Option<Evidence>,
}

impl RecipientRecord {
    /// External (ordinary mail) recipient: no receipt will ever come.
    /// A recipient declared both ways is treated as certified, so that a
    /// missing receipt is noticed rather than assumed unnecessary.
    pub fn is_external(&self) -> bool {
        self.declared_external && !self.declared_certified
    }
}

/// Overall state of a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overall {
    /// Sent, no acceptance yet.
    Submitted,
    /// Accepted by the sender's provider (explicitly, or implied by later
    /// receipts, which the provider only sends for accepted messages).
    Accepted,
    /// Refused by the sender's provider (final).
    NotAccepted,
}

/// State of one recipient at a given `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecipientStatus {
    /// Waiting for a receipt, within the deadline.
    Pending,
    /// Delivery receipt received (final; wins over any other evidence).
    Delivered,
    /// Non-delivery notice received (final).
    DeliveryFailed,
    /// Non-delivery warning received; a delivery receipt may still follow.
    Warned,
    /// No final receipt within `overdue_after` of submission.
    Overdue,
    /// Sent to a non-certified address: accepted, no receipt expected.
    SentToNonCertified,
    /// The submission was not accepted, so nothing was sent to anyone.
    NotSent,
}

/// The reconciliation state of one sent message, keyed by its normalised
/// original Message-ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentMessage {
    /// The key: original Message-ID, normalised.
    pub original_message_id: String,
    /// Provider identificativi seen (normally exactly one per submission).
    pub identificativi: BTreeSet<String>,
    /// Earliest submission time from our own copy.
    pub submitted_at: Option<DateTime<Utc>>,
    /// Acceptance receipt.
    pub accepted: Option<Evidence>,
    /// Non-acceptance notice.
    pub not_accepted: Option<Evidence>,
    /// Taking-charge receipt (between providers).
    pub taken_in_charge: Option<Evidence>,
    /// Per recipient, keyed by normalised address.
    pub recipients: BTreeMap<String, RecipientRecord>,
    /// Receipts that name no recipient (`consegna` missing), by kind.
    pub unattributed: BTreeMap<String, Evidence>,
    /// Earliest time of any receipt: the clock start when we never saw the
    /// submission (webmail) nor an acceptance.
    pub first_receipt_at: Option<DateTime<Utc>>,
    /// How long after submission a missing final receipt is overdue.
    pub overdue_after: Duration,
    /// The MODSEQ of the last change to this state (given by the index
    /// from the record that made it; 0 before any): the sent copy's
    /// computed keywords are as new as this.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub modseq: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Does a delivery error say the recipient's mailbox was full? RFC 3463's
/// "mailbox full" (5.2.2, or 4.2.2) or the words providers write.
pub fn is_mailbox_full(detail: &str) -> bool {
    let d = detail.to_lowercase();
    ["5.2.2", "4.2.2", "casella piena", "mailbox full", "mailbox is full", "quota", "spazio esaurito"]
        .iter()
        .any(|w| d.contains(w))
}

/// The normalised key a receipt is filed under, if it has one.
pub fn key_of(c: &Classification) -> Option<&str> {
    c.original_message_id.as_deref()
}

impl SentMessage {
    /// A new, empty state for the message with this Message-ID (normalised
    /// here; a value that normalises to nothing is kept verbatim).
    pub fn new(original_message_id: &str) -> SentMessage {
        SentMessage {
            original_message_id: normalize_message_id(original_message_id)
                .unwrap_or_else(|| original_message_id.to_string()),
            identificativi: BTreeSet::new(),
            submitted_at: None,
            accepted: None,
            not_accepted: None,
            taken_in_charge: None,
            recipients: BTreeMap::new(),
            unattributed: BTreeMap::new(),
            first_receipt_at: None,
            overdue_after: DEFAULT_OVERDUE_AFTER,
            modseq: 0,
        }
    }

    /// Same, with a non-default overdue delay.
    pub fn with_overdue_after(mut self, overdue_after: Duration) -> SentMessage {
        self.overdue_after = overdue_after;
        self
    }

    /// The (first) provider identificativo, if any was seen.
    pub fn identificativo(&self) -> Option<&str> {
        self.identificativi.iter().next().map(String::as_str)
    }

    /// Folds one event into the state. Deterministic and idempotent; the
    /// final state does not depend on the order of events. On error the
    /// state is unchanged.
    pub fn apply(&mut self, event: &Event) -> Result<(), ReconcileError> {
        match event {
            Event::Submitted { recipients, at } => {
                merge_time(&mut self.submitted_at, *at);
                for r in recipients {
                    let address = normalize_address(r);
                    if !address.is_empty() {
                        self.recipients.entry(address).or_default().in_submission = true;
                    }
                }
                Ok(())
            }
            Event::Receipt(c, at) => self.apply_receipt(c, *at),
        }
    }

    fn apply_receipt(&mut self, c: &Classification, at: DateTime<Utc>) -> Result<(), ReconcileError> {
        if !c.kind.is_receipt() {
            return Err(ReconcileError::NotAReceipt(c.kind.as_str()));
        }
        let got = key_of(c).ok_or(ReconcileError::NoReference)?;
        if got != self.original_message_id {
            return Err(ReconcileError::OtherMessage {
                expected: self.original_message_id.clone(),
                got: got.to_string(),
            });
        }
        merge_time(&mut self.first_receipt_at, at);
        if let Some(id) = &c.identificativo {
            self.identificativi.insert(id.clone());
        }
        let daticert = c.daticert.as_ref();
        for d in daticert.map(|d| d.destinatari.as_slice()).unwrap_or_default() {
            let address = normalize_address(&d.address);
            if address.is_empty() {
                continue;
            }
            let record = self.recipients.entry(address).or_default();
            match d.tipo {
                RecipientType::Certificato => record.declared_certified = true,
                RecipientType::Esterno => record.declared_external = true,
                _ => {}
            }
        }
        let detail = daticert.and_then(|d| {
            d.errore_esteso
                .clone()
                .or_else(|| d.errore.as_ref().filter(|e| e.as_str() != "nessuno").map(|e| e.to_string()))
        });
        let evidence = Evidence {
            at,
            receipt_id: c.message_id.clone(),
            detail,
            certified_at: daticert.and_then(|d| d.data).map(|t| t.with_timezone(&Utc)),
            hash: None,
        };
        let recipient = c.consegna().map(normalize_address).filter(|a| !a.is_empty());
        let slot: fn(&mut RecipientRecord) -> &mut Option<Evidence> = match c.kind {
            PecKind::Accettazione => {
                merge(&mut self.accepted, evidence);
                return Ok(());
            }
            PecKind::NonAccettazione => {
                merge(&mut self.not_accepted, evidence);
                return Ok(());
            }
            PecKind::PresaInCarico => {
                merge(&mut self.taken_in_charge, evidence);
                return Ok(());
            }
            PecKind::AvvenutaConsegna { .. } => |r| &mut r.delivered,
            PecKind::PreavvisoErroreConsegna => |r| &mut r.warned,
            _ => |r| &mut r.failed,
        };
        match recipient {
            Some(address) => merge(slot(self.recipients.entry(address).or_default()), evidence),
            None => {
                let mut entry = self.unattributed.remove(c.kind.as_str());
                merge(&mut entry, evidence);
                if let Some(e) = entry {
                    self.unattributed.insert(c.kind.as_str().to_string(), e);
                }
            }
        }
        Ok(())
    }

    /// The receipt with Message-ID `receipt_id` is archived as blob `hash`:
    /// note it on its evidence (deterministic: the same receipt is the same
    /// blob).
    pub fn note_receipt_blob(&mut self, receipt_id: &str, hash: &str) {
        let note = |e: &mut Evidence| {
            if e.receipt_id.as_deref() == Some(receipt_id) && e.hash.is_none() {
                e.hash = Some(hash.to_string());
            }
        };
        [&mut self.accepted, &mut self.not_accepted, &mut self.taken_in_charge]
            .into_iter()
            .chain(self.recipients.values_mut().flat_map(|r| [&mut r.delivered, &mut r.failed, &mut r.warned]))
            .flatten()
            .for_each(note);
        self.unattributed.values_mut().for_each(note);
    }

    /// Overall state (does not depend on time).
    pub fn overall(&self) -> Overall {
        if self.not_accepted.is_some() {
            Overall::NotAccepted
        } else if self.accepted.is_some()
            || self.taken_in_charge.is_some()
            || !self.unattributed.is_empty()
            || self.recipients.values().any(|r| r.delivered.is_some() || r.failed.is_some() || r.warned.is_some())
        {
            Overall::Accepted
        } else {
            Overall::Submitted
        }
    }

    /// When the overdue clock starts: the submission or acceptance,
    /// whichever is earlier, else the first receipt.
    pub fn clock_start(&self) -> Option<DateTime<Utc>> {
        let explicit = [self.submitted_at, self.accepted.as_ref().map(|e| e.at)].into_iter().flatten().min();
        explicit.or(self.first_receipt_at)
    }

    fn is_past_deadline(&self, now: DateTime<Utc>) -> bool {
        self.deadline().is_some_and(|deadline| now >= deadline)
    }

    /// When a recipient without a final receipt becomes overdue.
    pub fn deadline(&self) -> Option<DateTime<Utc>> {
        let delay = chrono::Duration::from_std(self.overdue_after).ok()?;
        self.clock_start()?.checked_add_signed(delay)
    }

    /// Status of one recipient record at `now`.
    pub fn recipient_status(&self, record: &RecipientRecord, now: DateTime<Utc>) -> RecipientStatus {
        if record.delivered.is_some() {
            RecipientStatus::Delivered
        } else if record.failed.is_some() {
            RecipientStatus::DeliveryFailed
        } else if self.not_accepted.is_some() {
            RecipientStatus::NotSent
        } else if record.is_external() {
            RecipientStatus::SentToNonCertified
        } else if self.is_past_deadline(now) {
            RecipientStatus::Overdue
        } else if record.warned.is_some() {
            RecipientStatus::Warned
        } else {
            RecipientStatus::Pending
        }
    }

    /// Every recipient's status at `now`, by normalised address.
    pub fn statuses(&self, now: DateTime<Utc>) -> BTreeMap<&str, RecipientStatus> {
        self.recipients.iter().map(|(addr, r)| (addr.as_str(), self.recipient_status(r, now))).collect()
    }

    /// IMAP keywords describing the state at `now`, in a fixed order.
    ///
    /// `$PecDelivered` needs every certified recipient delivered;
    /// `$PecPartiallyDelivered` some but not all; `$PecFailed` any failure or
    /// non-acceptance; `$PecWarned` a warning without a final receipt yet.
    pub fn keywords(&self, now: DateTime<Utc>) -> Vec<&'static str> {
        let statuses = self.statuses(now);
        let certified: Vec<RecipientStatus> =
            statuses.values().copied().filter(|s| *s != RecipientStatus::SentToNonCertified).collect();
        let delivered = certified.iter().filter(|s| **s == RecipientStatus::Delivered).count();
        let mut out = Vec::new();
        match self.overall() {
            Overall::Accepted => out.push("$PecAccepted"),
            Overall::NotAccepted => out.push("$PecNotAccepted"),
            Overall::Submitted => {}
        }
        if delivered > 0 && delivered == certified.len() {
            out.push("$PecDelivered");
        } else if delivered > 0 {
            out.push("$PecPartiallyDelivered");
        }
        if self.overall() == Overall::NotAccepted
            || certified.contains(&RecipientStatus::DeliveryFailed)
            || self.unattributed.contains_key(PecKind::ErroreConsegna.as_str())
            || self.unattributed.contains_key(PecKind::RilevazioneVirus.as_str())
        {
            out.push("$PecFailed");
        }
        if certified.contains(&RecipientStatus::Overdue) {
            out.push("$PecOverdue");
        }
        let warned =
            self.recipients.values().any(|r| r.warned.is_some() && r.delivered.is_none() && r.failed.is_none())
                || self.unattributed.contains_key(PecKind::PreavvisoErroreConsegna.as_str());
        if warned {
            out.push("$PecWarned");
        }
        out
    }

    /// True when the message needs a human: not accepted, a recipient's
    /// delivery failed, or a certified recipient is overdue at `now`.
    /// A recipient merely pending within the deadline is not undelivered.
    pub fn is_undelivered(&self, now: DateTime<Utc>) -> bool {
        let kw = self.keywords(now);
        kw.contains(&"$PecFailed") || kw.contains(&"$PecOverdue")
    }

    /// Contradictory evidence, in words (e.g. delivered and failed for one
    /// recipient), for the audit trail. Derived, hence order-independent.
    pub fn conflicts(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.accepted.is_some() && self.not_accepted.is_some() {
            out.push("both an acceptance and a non-acceptance receipt".to_string());
        }
        if self.identificativi.len() > 1 {
            out.push(format!(
                "several identificativi: {}",
                self.identificativi.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        for (addr, r) in &self.recipients {
            if r.delivered.is_some() && r.failed.is_some() {
                out.push(format!("{addr}: both a delivery receipt and a non-delivery notice"));
            }
            if r.declared_certified && r.declared_external {
                out.push(format!("{addr}: declared both certificato and esterno"));
            }
        }
        out
    }
}
