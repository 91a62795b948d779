//! Creating a campaign: validate everything, then render and queue every
//! notice, or queue nothing.
//!
//! The inputs arrive as blobs already in the archive (uploaded through the
//! API: the recipients' CSV, the template, attachments), so the campaign's
//! record names exactly what it was made from. Validation covers every row
//! before anything is queued: the list's own checks ([`input::List`]), the
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
///
/// The list is read twice, a row at a time ([`input::List::entries`]):
/// once to validate every row, once to render and queue the good ones;
/// what is held meanwhile is the file, a digest per address, and the
/// rejected rows.
pub async fn create(store: &Store, mb: &MailboxConfig, req: Request) -> Result<Created, CreateError> {
    let recipients_error = |e: input::InputError| CreateError::Input(format!("recipients: {e}"));
    let csv = blob(store, "recipients", &req.recipients)?;
    let list = input::List::open(&csv, &req.options).map_err(recipients_error)?;
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
    let mut errors = Vec::new();
    let mut total = 0usize;
    for entry in list.entries() {
        let row = match entry.map_err(recipients_error)? {
            input::Entry::Rejected(e) => {
                errors.push(e);
                continue;
            }
            input::Entry::Row(row) => row,
        };
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
        match problem {
            Some(reason) => errors.push(RowError { line: row.line, reason, values: row.values }),
            None => total += 1,
        }
    }
    if !errors.is_empty() && !req.skip_invalid {
        return Err(CreateError::Rows(errors));
    }
    if total == 0 {
        return Err(CreateError::Input("recipients: no row to send".into()));
    }
    let key_column = list.columns.get(list.key_column).cloned().unwrap_or_default();
    let spec = CampaignSpec {
        id: id.clone(),
        mailbox: mb.alias.clone(),
        name: req.name.clone(),
        deadline: req.deadline,
        total: total as u32,
        recipients: req.recipients.clone(),
        template: req.template.clone(),
        attachments: req.attachments.clone(),
        key_column,
        address_column: list.columns.get(list.address_column).cloned(),
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
    {
        let r = Rendering {
            store,
            mb,
            files: &req.files,
            tpl: &tpl,
            common: &common,
            list: list.header(),
            msgid: &msgid,
            now,
        };
        // The good rows again, in the same order.
        let mut rows = list.entries();
        let mut passed = 0;
        // Each notice is rendered here and written by `put_blob` on the
        // blocking threads, RENDERING of them at once so that one's fsync
        // does not hold the next (the disk answers several at a time);
        // queued in order all the same.
        let mut pending = futures::stream::FuturesOrdered::new();
        let mut next = 0u32;
        loop {
            while pending.len() < RENDERING && (next as usize) < total {
                let row = next_good(&mut rows, &errors, &mut passed)
                    .ok_or_else(|| CreateError::Input("recipients: the list changed".into()))?;
                next += 1;
                pending.push_back(r.notice(next, row.map_err(recipients_error)?));
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
    let rejected_csv = (!errors.is_empty()).then(|| input::rejected_csv(&list, &errors));
    Ok(Created {
        id,
        queued: total as u32,
        rejected: errors,
        rejected_csv,
        encoding: list.encoding,
        separator: list.separator as char,
    })
}

/// The next good row of `rows`: one neither the list nor the validation
/// rejected. `rejected` is in line order, as the rows come; `passed`
/// counts those of them already gone by.
fn next_good(
    rows: &mut input::Entries<'_>,
    rejected: &[RowError],
    passed: &mut usize,
) -> Option<Result<input::Row, input::InputError>> {
    loop {
        let row = match rows.next()? {
            Ok(input::Entry::Row(row)) => row,
            Ok(input::Entry::Rejected(_)) => continue,
            Err(e) => return Some(Err(e)),
        };
        while rejected.get(*passed).is_some_and(|e| e.line < row.line) {
            *passed += 1;
        }
        if rejected.get(*passed).is_some_and(|e| e.line == row.line) {
            *passed += 1;
            continue;
        }
        return Some(Ok(row));
    }
}

/// What rendering a campaign's notices reads.
struct Rendering<'a, F: Fn(u32) -> String> {
    store: &'a Store,
    mb: &'a MailboxConfig,
    files: &'a HashMap<String, String>,
    tpl: &'a template::Template,
    common: &'a [(String, Vec<u8>)],
    list: &'a input::Header,
    msgid: &'a F,
    now: DateTime<Utc>,
}

impl<F: Fn(u32) -> String> Rendering<'_, F> {
    /// Notice `n` (1-based), of `row`, rendered and stored as a blob.
    async fn notice(&self, n: u32, row: input::Row) -> Result<QueuedNotice, CreateError> {
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
            key: row.key(self.list).to_string(),
            to: row.address,
            message_id,
            hash: b.hash,
            size,
        })
    }
}
