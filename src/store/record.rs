//! Journal records: the audit chain and the write-ahead log of the index.
//!
//! One record per line. A record says who did what (actor, source, protocol,
//! operation, outcome) and, when the operation changed state, the [`Event`]
//! with everything needed to replay it: the UIDs and UIDVALIDITY it assigns,
//! the blob hash, the provider reference. Replaying the events in order
//! reproduces the index exactly (`pecgate store rebuild-index`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::campaign::model::{CampaignSpec, Control, QueuedNotice, Step};
use crate::pec::meta::StoredPec;

/// Where a message came from at the provider: enough to find it again and to
/// delete it there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderRef {
    pub folder: String,
    pub uidvalidity: u32,
    pub uid: u32,
}

/// A state change, as recorded. Built by the journal writer from a
/// [`Change`](super::Change) request, with UIDs already assigned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    /// Nothing changed (a login, a read): the record is audit only.
    None,
    /// A gateway folder came into existence with this UIDVALIDITY.
    /// `category` is set for a folder people created (a category): its
    /// name as shown under the mailbox (`Contratti 2026`, `Solleciti/
    /// Risposte`), while `folder` is its fixed store name (`#1`), so a
    /// rename changes one name and moves no message.
    FolderCreated {
        mailbox: String,
        folder: String,
        uidvalidity: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        category: Option<String>,
    },
    /// Categories got new names (a RENAME renames the inferiors too):
    /// (store name, new name).
    FolderRenamed { mailbox: String, renames: Vec<(String, String)> },
    /// A category is gone. The records before it removed its labels and
    /// hid what it alone filed; no message is removed by this record.
    FolderDeleted { mailbox: String, folder: String },
    /// Messages of one folder labelled into a category too (a COPY):
    /// `copies` pairs each UID in `from` with the new UID in `to`. The
    /// message keeps its place; the category shows it as well.
    Copied { mailbox: String, from: String, to: String, copies: Vec<(u32, u32)> },
    /// Bytes the mailbox already holds, APPENDed into a category: a label
    /// with its own UID there (RFC 3501: every APPEND makes a message).
    Labeled {
        mailbox: String,
        folder: String,
        uid: u32,
        hash: String,
        size: u64,
        internal_date: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        flags: Vec<String>,
    },
    /// Messages deleted from a user's own Drafts or Templates (not PEC,
    /// not evidence): gone from every folder; the record keeps their
    /// hashes. (Their blobs stay on disk until a blob sweep, which does
    /// not exist yet.)
    Purged {
        mailbox: String,
        folder: String,
        uids: Vec<u32>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        hashes: Vec<String>,
    },
    /// Labels removed from a category (an EXPUNGE there): the messages
    /// stay where they are filed; nothing is hidden.
    Unlabeled {
        mailbox: String,
        folder: String,
        uids: Vec<u32>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        hashes: Vec<String>,
    },
    /// A message was archived: its blob is durable and it is now `uid` in
    /// `folder`. `duplicate` means the same bytes were already in this
    /// mailbox (at `folder`/`uid`): only the provider reference is new.
    Archived {
        mailbox: String,
        folder: String,
        uid: u32,
        hash: String,
        size: u64,
        internal_date: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        flags: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider: Option<ProviderRef>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        duplicate: bool,
        /// PEC classification and metadata (`pec::meta`; kept as written
        /// if this version does not understand it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pec: Option<StoredPec>,
        /// Set when the message's handling is tracked from its arrival: what
        /// the routing rules decided (the `open` transition).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        handling: Option<crate::handling::Routing>,
        /// With `handling`: the message's UID in the handling views.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        view_uid: Option<u32>,
    },
    /// Messages were removed from the provider (`gone` means they were found
    /// missing there rather than deleted by us).
    ProviderDeleted {
        mailbox: String,
        folder: String,
        uidvalidity: u32,
        uids: Vec<u32>,
        hashes: Vec<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        gone: bool,
    },
    /// The provider folder's UIDVALIDITY changed: forget the old provider
    /// references (the messages are archived; the folder is re-scanned and
    /// duplicates are recognised by hash).
    ProviderReset { mailbox: String, folder: String, old_uidvalidity: u32, new_uidvalidity: u32 },
    /// Shared flags or keywords of messages changed (everything but `\Seen`,
    /// which is per user). The record carries the operation, not the result:
    /// applying it in journal order reproduces the result, and each changed
    /// message gets the folder's next MODSEQ.
    FlagsChanged { mailbox: String, folder: String, uids: Vec<u32>, op: FlagOp, flags: Vec<String> },
    /// `user` subscribed (or unsubscribed) the folder called `name` (as IMAP
    /// shows it, `protocollo/Contratti`): which folders the user's client
    /// lists (LSUB, `LIST (SUBSCRIBED)`). The name need not exist (any
    /// more): a subscription outlives its folder.
    SubscriptionChanged { user: String, name: String, subscribed: bool },
    /// A RENAME of `from` to `to`: every user's subscriptions of `from`
    /// and of the names under it (`from/…`) move to the new name.
    SubscriptionsRenamed { from: String, to: String },
    /// `user` marked messages seen (or unseen). `\Seen` is per person: one
    /// colleague opening a certified message does not mean the office read it.
    SeenChanged { user: String, mailbox: String, folder: String, uids: Vec<u32>, seen: bool },
    /// Messages were hidden from a folder (a client's EXPUNGE). The blobs
    /// stay: the archive is evidence and keeps them for their retention.
    Hidden {
        mailbox: String,
        folder: String,
        uids: Vec<u32>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        hashes: Vec<String>,
    },
    /// Hidden messages brought back into the folder they were hidden from
    /// (a move out of Trash): `moves` pairs each UID the message had there
    /// with the new UID the writer assigned (a UID is never reused).
    Unhidden { mailbox: String, folder: String, moves: Vec<(u32, u32)> },
    /// Messages moved between two folders of one mailbox: `moves` pairs each
    /// old UID in `from` with the new UID the writer assigned in `to`, so a
    /// rebuild reproduces them.
    Moved { mailbox: String, from: String, to: String, moves: Vec<(u32, u32)> },
    /// Handling of messages changed (take in charge, assign, done, reopen):
    /// the transition with its actor, and for each message (by blob hash,
    /// which survives moves) where it was and its state before and after.
    Handled { mailbox: String, transition: crate::handling::Transition, items: Vec<HandledItem> },
    /// A campaign was created (its inputs are blobs; its notices follow
    /// in `notices-queued` records).
    CampaignCreated { campaign: CampaignSpec },
    /// Notices of a campaign, rendered, their bytes stored as blobs.
    NoticesQueued { campaign: String, notices: Vec<QueuedNotice> },
    /// Started, paused, resumed, cancelled.
    CampaignControlled { campaign: String, control: Control },
    /// One notice's sending moved on.
    NoticeStepped { campaign: String, n: u32, step: Step },
    /// Messages past their mailbox's retention period and under no legal
    /// hold were removed from the archive: every place each was listed
    /// (its folder, category labels, Trash) is gone from the index, and
    /// its blob is deleted once no mailbox holds it. The record keeps the
    /// hashes, so the chain still accounts for every message it ever had.
    Expired { mailbox: String, reason: String, items: Vec<ExpiredItem> },
    /// A legal hold: the messages (by hash), or with `whole` every message
    /// of the mailbox present and future, are never removed while it
    /// stands. Its id is this record's `seq`. `query` is the search that
    /// chose the messages, if one did.
    HoldPlaced {
        mailbox: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        whole: bool,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        hashes: Vec<String>,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        query: Option<String>,
    },
    /// The hold placed by record `hold` no longer stands.
    HoldReleased { mailbox: String, hold: u64, reason: String },
    /// The chain up to record `seq` (whose hash is `hash`) was time-stamped
    /// by an RFC 3161 authority: the token (the TSA's whole DER reply) is
    /// the file `token` beside the journal (`anchors/…`), with SHA-256
    /// `token_sha256`; `time` is the token's genTime.
    Anchored { seq: u64, hash: String, token: String, token_sha256: String, time: DateTime<Utc> },
    /// A submission package for conservation was written: the messages of
    /// `mailbox` archived by records `first_seq..=last_seq` (the next
    /// `--since-last` export starts after `last_seq`). `package` is the
    /// SHA-256 of the package's index file.
    Exported {
        mailbox: String,
        first_seq: u64,
        last_seq: u64,
        messages: u64,
        package: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Limited by `--from`/`--to`: not every message of the range, so
        /// it does not count for `--since-last`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        partial: bool,
    },
}

/// One place an expired message was listed ([`Event::Expired`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiredItem {
    pub hash: String,
    pub folder: String,
    pub uid: u32,
    /// In the `hidden` tree (the mailbox's Trash), not in the folder.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
}

/// One message of a [`Event::Handled`] record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandledItem {
    pub hash: String,
    pub folder: String,
    pub uid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<crate::handling::State>,
    pub to: crate::handling::State,
    /// Its new UID in the handling views.
    pub vuid: u32,
}

/// How a flag change combines with the flags a message already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlagOp {
    Add,
    Remove,
    Replace,
}

impl FlagOp {
    /// The flags after applying this operation with `flags` to `current`.
    /// `\Seen` never enters the shared set (it is per user).
    pub fn apply(self, current: &[String], flags: &[String]) -> Vec<String> {
        let shared = |f: &&String| !f.eq_ignore_ascii_case("\\Seen");
        let has = |set: &[String], f: &str| set.iter().any(|x| x.eq_ignore_ascii_case(f));
        let mut out: Vec<String> = match self {
            FlagOp::Replace => Vec::new(),
            _ => current.iter().filter(shared).cloned().collect(),
        };
        match self {
            FlagOp::Add | FlagOp::Replace => {
                for f in flags.iter().filter(shared) {
                    if !has(&out, f) {
                        out.push(f.clone());
                    }
                }
            }
            FlagOp::Remove => out.retain(|f| !has(flags, f)),
        }
        out
    }
}

impl Event {
    pub fn mailbox(&self) -> Option<&str> {
        match self {
            Event::None
            | Event::NoticesQueued { .. }
            | Event::CampaignControlled { .. }
            | Event::NoticeStepped { .. }
            | Event::Anchored { .. }
            | Event::SubscriptionChanged { .. }
            | Event::SubscriptionsRenamed { .. } => None,
            Event::CampaignCreated { campaign } => Some(&campaign.mailbox),
            Event::FolderCreated { mailbox, .. }
            | Event::FolderRenamed { mailbox, .. }
            | Event::FolderDeleted { mailbox, .. }
            | Event::Copied { mailbox, .. }
            | Event::Labeled { mailbox, .. }
            | Event::Unlabeled { mailbox, .. }
            | Event::Purged { mailbox, .. }
            | Event::Archived { mailbox, .. }
            | Event::ProviderDeleted { mailbox, .. }
            | Event::ProviderReset { mailbox, .. }
            | Event::FlagsChanged { mailbox, .. }
            | Event::SeenChanged { mailbox, .. }
            | Event::Hidden { mailbox, .. }
            | Event::Unhidden { mailbox, .. }
            | Event::Moved { mailbox, .. }
            | Event::Handled { mailbox, .. }
            | Event::Expired { mailbox, .. }
            | Event::HoldPlaced { mailbox, .. }
            | Event::HoldReleased { mailbox, .. }
            | Event::Exported { mailbox, .. } => Some(mailbox),
        }
    }
}

/// One line of the journal, without its own hash (which is appended when the
/// line is written, see [`super::journal`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// UTC, microseconds.
    pub time: DateTime<Utc>,
    /// A gateway user name, or `system`.
    pub actor: String,
    /// Client address (`ip:port`) for client operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The directory entry (DN) a directory user logged in as (logins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// `upstream`, `imap`, `smtp`, `cli`, `system`.
    pub proto: String,
    /// What was done: `archive`, `provider-delete`, `login`, `select`, …
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uids: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// `ok`, or what went wrong.
    pub outcome: String,
    pub event: Event,
    /// The previous record's hash (64 zeros for the first record).
    pub prev: String,
}

/// The audit part of a record, filled by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Audit {
    pub actor: String,
    pub source: Option<String>,
    /// The directory entry (DN) of a directory user's login.
    pub identity: Option<String>,
    pub proto: String,
    pub op: String,
    pub mailbox: Option<String>,
    pub folder: Option<String>,
    pub uids: Vec<u32>,
    pub message_id: Option<String>,
    pub outcome: String,
}

impl Audit {
    /// An operation by the system itself (upstream sync, retention).
    pub fn system(proto: &str, op: &str) -> Audit {
        Audit {
            actor: "system".into(),
            source: None,
            identity: None,
            proto: proto.into(),
            op: op.into(),
            mailbox: None,
            folder: None,
            uids: Vec::new(),
            message_id: None,
            outcome: "ok".into(),
        }
    }

    pub fn mailbox(mut self, m: &str) -> Self {
        self.mailbox = Some(m.to_string());
        self
    }

    pub fn folder(mut self, f: &str) -> Self {
        self.folder = Some(f.to_string());
        self
    }

    pub fn message_id(mut self, id: Option<String>) -> Self {
        self.message_id = id;
        self
    }

    /// The directory entry a login was checked against, if any.
    pub fn identity(mut self, dn: Option<&str>) -> Self {
        self.identity = dn.map(str::to_string);
        self
    }

    pub fn outcome(mut self, o: impl Into<String>) -> Self {
        self.outcome = o.into();
        self
    }

    /// An operation by a gateway user from a client address (`ip:port`).
    pub fn user(actor: &str, source: Option<String>, proto: &str, op: &str) -> Audit {
        Audit { actor: actor.into(), source, ..Audit::system(proto, op) }
    }

    pub fn uids(mut self, uids: Vec<u32>) -> Self {
        self.uids = uids;
        self
    }
}
