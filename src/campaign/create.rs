//! Creating a campaign: validate everything, then render and queue every
//! notice, or queue nothing.
//!
//! The inputs arrive as blobs already in the archive (uploaded through the
//! API: the recipients' CSV, the template, attachments), so the campaign's
//! record names exactly what it was made from. Validation covers every row
//! before anything is queued: the list's own checks ([`input::read`]), the
//! template's placeholders, rendering (a value that cannot go in a header),
//! each per-recipient attachment, and the message's size against the
//! mailbox's sending limits. With a bad row nothing is queued, unless
//! `skip_invalid`: then the bad rows come back as a CSV to fix and send
//! again. Each notice is then rendered, stored as a blob (its bytes are the
//! evidence) and queued in records of [`CHUNK`] notices.

use std::collections::HashMap;

use futures::StreamExt;

use chrono::{DateTime, Utc};

use super::input::{self, InputOptions, RowError};
use super::model::{CampaignSpec, QueuedNotice};
use super::template::{self, NoticeInput};
use crate::config::MailboxConfig;
use crate::store::{Audit, Change, Event, Store, StoreError};

/// Notices per `notices-queued` record.
pub const CHUNK: usize = 256;

/// How many notices are rendered and written at once.
const RENDERING: usize = 8;

/// What the API or the command line asks for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub name: String,
    /// The gateway user creating it (checked for `send` by the caller).
    pub user: String,
    /// Blob hashes of the uploaded inputs.
    pub recipients: String,
    pub template: String,
    /// Attachments for every notice: (file name, blob hash).
    pub attachments: Vec<(String, String)>,
    /// Per-recipient attachments: the path as written in the CSV's
    /// attachment column → blob hash.
    pub files: HashMap<String, String>,
    pub options: InputOptions,
    pub deadline: Option<DateTime<Utc>>,
    pub skip_invalid: bool,
}

/// A created campaign.
#[derive(Debug, Clone)]
pub struct Created {
    pub id: String,
    pub queued: u32,
    /// Rows left out (`skip_invalid`), and the same as a CSV.
    pub rejected: Vec<RowError>,
    pub rejected_csv: Option<Vec<u8>>,
    pub encoding: &'static str,
    pub separator: char,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The inputs as a whole (not CSV, no address column, a bad template).
    #[error("{0}")]
    Input(String),
    /// Rows that cannot be sent; nothing was queued.
    #[error("{} row(s) cannot be sent; nothing was queued", .0.len())]
    Rows(Vec<RowError>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The bytes of an uploaded blob, or an input error naming it.
fn blob(store: &Store, what: &str, hash: &str) -> Result<Vec<u8>, CreateError> {
    store.get_blob(hash).map_err(|e| CreateError::Input(format!("{what}: upload {hash} is not in the archive ({e})")))
}

fn new_id(now: DateTime<Utc>) -> String {
    format!("{}-{:04x}", now.format("%Y%m%d-%H%M%S"), rand::random::<u16>())
}

/// Base64 with line breaks, as an attachment travels.
fn encoded_len(n: usize) -> usize {
    n.div_ceil(57) * 78 + 300
}

/// Validate, render, store and queue. Returns once every notice is queued
/// (the campaign is `ready`: nothing is sent before it is started).
pub async fn create(store: &Store, mb: &MailboxConfig, req: Request) -> Result<Created, CreateError> {
    let csv = blob(store, "recipients", &req.recipients)?;
    let mut list = input::read(&csv, &req.options).map_err(|e| CreateError::Input(format!("recipients: {e}")))?;
    drop(csv);
    let tpl = template::parse(&blob(store, "template", &req.template)?)
        .map_err(|e| CreateError::Input(format!("template: {e}")))?;
    let unknown = tpl.unknown(&list.columns);
    if !unknown.is_empty() {
        return Err(CreateError::Input(format!(
            "template: placeholder(s) with no column in the recipients' list: {}; the columns are: {}",
            unknown.iter().map(|u| format!("{{{{{u}}}}}")).collect::<Vec<_>>().join(", "),
            list.columns.join(", ")
        )));
    }
    let mut common = Vec::new();
    for (name, hash) in &req.attachments {
        common.push((name.clone(), blob(store, &format!("attachment {name}"), hash)?));
    }
    let common_size: usize = common.iter().map(|(_, b)| encoded_len(b.len())).sum();
    let now = Utc::now();
    let id = new_id(now);
    let domain = mb.address.rsplit_once('@').map(|(_, d)| d).unwrap_or("pecgate").to_string();
    let msgid = |n: u32| format!("<{id}.{n}@{domain}>");
    // Validation: render each row without attachments (cheap), add their
    // encoded sizes, check each per-recipient file is there.
    let mut bad = Vec::new();
    for row in &list.rows {
        let files: Result<Vec<usize>, String> = row
            .attachments
            .iter()
            .map(|p| {
                let h = req
                    .files
                    .get(p)
                    .ok_or_else(|| format!("attachment {p:?} was not uploaded (missing or unreadable)"))?;
                store.blob_size(h).map(|s| s as usize).map_err(|e| format!("attachment {p:?}: {e}"))
            })
            .collect();
        let input = NoticeInput {
            from: &mb.address,
            from_name: None,
            to: &row.address,
            columns: &list.columns,
            values: &row.values,
            message_id: &msgid(0),
            date: now.fixed_offset(),
            attachments: &[],
        };
        let problem = match (files, tpl.render(&input)) {
            (Err(e), _) => Some(e),
            (_, Err(e)) => Some(e.to_string()),
            (Ok(sizes), Ok(text)) => {
                let size = text.len() + common_size + sizes.into_iter().map(encoded_len).sum::<usize>();
                crate::sending::check_message(&mb.alias, &mb.sending, size, 1)
                    .err()
                    .map(|r| r.trim_end().splitn(3, ' ').nth(2).unwrap_or(&r).to_string())
            }
        };
        if let Some(reason) = problem {
            bad.push(RowError { line: row.line, reason, values: row.values.clone() });
        }
    }
    if !bad.is_empty() {
        let lines: std::collections::HashSet<u64> = bad.iter().map(|b| b.line).collect();
        list.rows.retain(|r| !lines.contains(&r.line));
        list.errors.extend(bad);
        list.errors.sort_by_key(|e| e.line);
    }
    if !list.errors.is_empty() && !req.skip_invalid {
        return Err(CreateError::Rows(list.errors));
    }
    if list.rows.is_empty() {
        return Err(CreateError::Input("recipients: no row to send".into()));
    }
    let key_column = list.columns.get(list.key_column).cloned().unwrap_or_default();
    let spec = CampaignSpec {
        id: id.clone(),
        mailbox: mb.alias.clone(),
        name: req.name.clone(),
        deadline: req.deadline,
        total: list.rows.len() as u32,
        recipients: req.recipients.clone(),
        template: req.template.clone(),
        attachments: req.attachments.clone(),
        key_column,
        created_by: req.user.clone(),
    };
    let audit = |op: &str| Audit::user(&req.user, None, "api", op).mailbox(&mb.alias);
    store
        .commit(
            audit("campaign-create").outcome(format!("ok: {} ({} notices)", req.name, spec.total)),
            Change::Campaign(Event::CampaignCreated { campaign: spec }),
        )
        .await?;
    let mut chunk = Vec::with_capacity(CHUNK);
    let total = list.rows.len();
    {
        let r = Rendering { store, mb, files: &req.files, tpl: &tpl, common: &common, list: &list, msgid: &msgid, now };
        // Each notice is rendered here and written by `put_blob` on the
        // blocking threads, RENDERING of them at once so that one's fsync
        // does not hold the next (the disk answers several at a time);
        // queued in order all the same.
        let mut pending = futures::stream::FuturesOrdered::new();
        let mut next = 0;
        loop {
            while pending.len() < RENDERING && next < total {
                pending.push_back(r.notice(next));
                next += 1;
            }
            let Some(q) = pending.next().await else { break };
            let q = q?;
            let n = q.n;
            chunk.push(q);
            if chunk.len() == CHUNK || n as usize == total {
                let notices = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                store
                    .commit(
                        audit("campaign-queue").outcome(format!("ok: notices {}..={n}", notices[0].n)),
                        Change::Campaign(Event::NoticesQueued { campaign: id.clone(), notices }),
                    )
                    .await?;
            }
        }
    }
    let rejected_csv = (!list.errors.is_empty()).then(|| input::rejected_csv(&list));
    Ok(Created {
        id,
        queued: total as u32,
        rejected: list.errors,
        rejected_csv,
        encoding: list.encoding,
        separator: list.separator as char,
    })
}

/// What rendering a campaign's notices reads.
struct Rendering<'a, F: Fn(u32) -> String> {
    store: &'a Store,
    mb: &'a MailboxConfig,
    files: &'a HashMap<String, String>,
    tpl: &'a template::Template,
    common: &'a [(String, Vec<u8>)],
    list: &'a input::Recipients,
    msgid: &'a F,
    now: DateTime<Utc>,
}

impl<F: Fn(u32) -> String> Rendering<'_, F> {
    /// Row `i`'s notice, rendered and stored as a blob.
    async fn notice(&self, i: usize) -> Result<QueuedNotice, CreateError> {
        let row = &self.list.rows[i];
        let n = i as u32 + 1;
        let mut own = Vec::new();
        for p in &row.attachments {
            let name = p.rsplit(['/', '\\']).next().unwrap_or(p).to_string();
            // Validation left out every row whose files were not uploaded.
            let hash = self
                .files
                .get(p)
                .ok_or_else(|| CreateError::Input(format!("line {}: attachment {p:?} was not uploaded", row.line)))?;
            own.push((name, blob(self.store, "attachment", hash)?));
        }
        let attachments: Vec<(&str, &[u8])> =
            self.common.iter().chain(own.iter()).map(|(n, b)| (n.as_str(), b.as_slice())).collect();
        let message_id = (self.msgid)(n);
        let bytes = self
            .tpl
            .render(&NoticeInput {
                from: &self.mb.address,
                from_name: None,
                to: &row.address,
                columns: &self.list.columns,
                values: &row.values,
                message_id: &message_id,
                date: self.now.fixed_offset(),
                attachments: &attachments,
            })
            .map_err(|e| CreateError::Input(format!("line {}: {e}", row.line)))?;
        drop(attachments);
        drop(own);
        let size = bytes.len() as u64;
        let b = self.store.put_blob(bytes).await?;
        Ok(QueuedNotice {
            n,
            line: row.line,
            to: row.address.clone(),
            key: row.key(self.list).to_string(),
            message_id,
            hash: b.hash,
            size,
        })
    }
}
