//! Where an incoming message is filed, and the PEC metadata the index keeps
//! for it. Pure: bytes in, values out (the `pec` module does the reading).

use chrono::{DateTime, Utc};
use crate::pec::meta::{PecMeta, SentInfo};
use crate::pec::signature::{self, TrustStore};
use crate::pec::{self, PecFolder};

/// Gateway folder names (the subtree under each mailbox alias).
pub const INBOX: &str = "INBOX";
pub const SENT: &str = "Sent";
pub const RECEIPTS: &str = "Receipts";
pub const ANOMALIES: &str = "Anomalies";

/// A message's filing decision.
#[derive(Debug, Clone)]
pub struct Filing {
    pub folder: String,
    pub message_id: Option<String>,
    pub meta: PecMeta,
}

/// File a message pulled from provider folder `pfolder`. Messages from the
/// provider's sent folder go to `Sent` (and start reconciliation); others go
/// where their PEC kind belongs.
pub fn file(raw: &[u8], from_sent_folder: bool, internal_date: DateTime<Utc>, trust: Option<&TrustStore>) -> Filing {
    let classification = pec::classify(raw);
    let message_id = classification.message_id.clone();
    let signature = match (&classification.kind, trust) {
        (pec::PecKind::Plain, _) | (_, None) => None,
        (_, Some(t)) => Some(signature::verify(raw, t)),
    };
    let (folder, sent) = if from_sent_folder {
        let sent = message_id.clone().map(|key| SentInfo { key, recipients: recipients(raw), at: internal_date });
        (SENT, sent)
    } else {
        let f = match classification.folder() {
            PecFolder::Inbox => INBOX,
            PecFolder::Receipts => RECEIPTS,
            PecFolder::Anomalies => ANOMALIES,
        };
        (f, None)
    };
    Filing { folder: folder.to_string(), message_id, meta: PecMeta { classification, signature, sent } }
}

/// To, Cc and Bcc addresses as written.
pub fn recipients(raw: &[u8]) -> Vec<String> {
    let Some(msg) = mail_parser::MessageParser::default().parse_headers(raw) else { return Vec::new() };
    let mut out = Vec::new();
    for list in [msg.to(), msg.cc(), msg.bcc()].into_iter().flatten() {
        for a in list.iter() {
            if let Some(addr) = a.address() {
                out.push(addr.to_string());
            }
        }
    }
    out
}
