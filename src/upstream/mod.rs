//! Upstream sync: one task per PEC mailbox, moving messages off the provider
//! into the archive.
//!
//! The order of one message's journey is what keeps invariant 1 ("nothing is
//! lost"); each step starts only when the one before it is durable:
//!
//! 1. `UID FETCH … BODY.PEEK[]` (never marks anything read at the provider);
//! 2. the raw bytes are written as a blob and fsynced (`Store::put_blob`);
//! 3. the "archived" journal record is appended and fsynced, and the index
//!    updated (`Store::commit_batch`), then the index is flushed;
//! 4. only then is the message deleted at the provider (`UID STORE
//!    +FLAGS (\Deleted)`, then `UID EXPUNGE`, or, without UIDPLUS, `EXPUNGE`
//!    after checking that every `\Deleted` message in the folder is archived);
//! 5. the deletion is recorded.
//!
//! A crash between 3 and 5 leaves the message archived *and* on the provider:
//! the next pass finds it already archived (by provider UID, or by hash after
//! a UIDVALIDITY change) and deletes it again. A crash before 3 leaves it on
//! the provider only. Never neither.

pub mod client;
pub mod filing;
pub mod frame;
pub mod share;
pub mod status;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::core::Vec1;
use imap_codec::imap_types::extensions::quota::Resource;
use imap_codec::imap_types::fetch::{MessageDataItem, MessageDataItemName};
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::response::{Code, Data};
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::SequenceSet;
use tokio::sync::watch;

use crate::config::{MailboxConfig, Offload};
use crate::store::{Audit, BlobRef, Change, ProviderEntry, ProviderRef, Store, StoreError};
use client::{ClientError, ImapClient};
pub use status::{MailboxStatus, QuotaStatus, StatusBoard};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Imap(#[from] ClientError),
    #[error("archive: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Other(String),
}

impl SyncError {
    /// A short label for metrics and status (`connect`, `login`, …).
    pub fn reason(&self) -> &'static str {
        match self {
            SyncError::Imap(ClientError::Connect { .. }) => "connect",
            SyncError::Imap(ClientError::Tls { .. }) => "tls",
            SyncError::Imap(ClientError::Timeout(_)) => "timeout",
            SyncError::Imap(ClientError::Closed) => "closed",
            SyncError::Imap(ClientError::LoginRefused(_)) => "login",
            SyncError::Imap(ClientError::Refused { .. }) => "refused",
            SyncError::Imap(ClientError::Protocol(_)) => "protocol",
            SyncError::Store(_) => "store",
            SyncError::Other(_) => "other",
        }
    }
}

/// Tunables of the sync loop. Defaults are for real providers; tests shrink
/// the back-off.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Cluster: the poller's lease on its mailbox (see `[upstream] lease`).
    pub lease: Duration,
    /// Longest wait for one response from the provider.
    pub timeout: Duration,
    /// First retry delay after a failure; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// A FETCH window ends at whichever comes first: `window_messages`
    /// messages or `window_bytes` of their RFC822.SIZE (the window's first
    /// message always goes, however large). 8 MiB keeps memory bounded (a
    /// window is held until its batch is committed, and the next one is
    /// fetched meanwhile: two windows, each copied once as it is parsed;
    /// at 32 MiB they were 62 MB of the daemon's heap while a campaign's
    /// receipts came in, at 16 MiB 30 MB), which for 2 MB messages means 4
    /// of them; 256 lets a window of 2 KB messages share
    /// one round trip and one journal fsync among 256 (with 64, the issue 2
    /// mix of mostly small messages took 3.1 s instead of 2.0–2.3 s). It
    /// also bounds the damage of a provider whose RFC822.SIZE understates.
    pub window_messages: usize,
    pub window_bytes: u64,
    /// Longest IDLE before re-checking (RFC 2177: re-issue within 29 min).
    pub max_idle: Duration,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            timeout: Duration::from_secs(120),
            min_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(300),
            window_messages: 256,
            window_bytes: 8 * 1024 * 1024,
            max_idle: Duration::from_secs(25 * 60),
            lease: Duration::from_secs(20),
        }
    }
}

/// Everything one mailbox task needs.
pub struct MailboxTask {
    pub cfg: MailboxConfig,
    pub store: Store,
    pub board: StatusBoard,
    pub tls: Arc<rustls::ClientConfig>,
    pub opts: SyncOptions,
    pub shutdown: watch::Receiver<bool>,
    /// Providers' certificates, to check envelope and receipt signatures.
    pub trust: Option<Arc<crate::pec::signature::TrustStore>>,
    /// Routing rules: which arriving certified messages are tracked for
    /// handling, and assigned to whom.
    pub rules: Arc<crate::handling::rules::Rules>,
    /// The lease on this mailbox's polling while a session runs (cluster:
    /// one node polls a mailbox; every commit is checked against it).
    pub fence: Option<crate::store::cluster::Fence>,
    /// Cluster: how this node's mailboxes are spread over the live nodes
    /// (one per generation of tasks, shared by them).
    pub share: Arc<share::Share>,
    /// Turns true when this node should give the mailbox to another node
    /// (it polls more than its share): the session ends at its next safe
    /// point. Set by `run`.
    pub give_up: Option<watch::Receiver<bool>>,
}

/// Resolves once `give_up` turns true (never without one).
async fn given_up(give_up: &mut Option<watch::Receiver<bool>>) {
    match give_up {
        Some(rx) => {
            if rx.wait_for(|v| *v).await.is_err() {
                // The lease's keeper ended (lease lost): nothing to give.
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending().await,
    }
}

/// One provider message as listed by `UID FETCH 1:* (UID RFC822.SIZE)`.
#[derive(Debug, Clone)]
struct Listed {
    size: u64,
}

impl MailboxTask {
    fn alias(&self) -> &str {
        &self.cfg.alias
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Commit under this mailbox's lease (refused once another node took
    /// the mailbox over).
    async fn commit_batch(&self, batch: Vec<(Audit, Change)>) -> Result<Vec<crate::store::Committed>, StoreError> {
        self.store.commit_batch_fenced(self.fence.as_ref(), batch).await
    }

    async fn commit(&self, audit: Audit, change: Change) -> Result<crate::store::Committed, StoreError> {
        let mut v = self.commit_batch(vec![(audit, change)]).await?;
        v.pop().ok_or(StoreError::Closed)
    }

    /// Wait until this node holds the mailbox's lease (at once on one
    /// machine; in a cluster while another node polls it: "standby", and
    /// while this node polls its share of the mailboxes and another may
    /// take this one, see [`share`]). `None`: shutting down.
    async fn take_lease(&mut self) -> Option<crate::store::cluster::Fence> {
        let name = format!("{}{}", share::PREFIX, self.alias());
        let mut said = false;
        let mut deferred = 0u32;
        let mut settled = false;
        loop {
            if self.stopping() {
                return None;
            }
            let turn = self.share.turn.lock().await;
            let mut take = true;
            match self.store.lease_share(share::PREFIX, self.opts.lease / 2, &name).await {
                Ok(Some((nodes, held, free))) => {
                    if !settled {
                        // Nodes started together: let them all count first.
                        settled = true;
                        let wait = self.share.settle(self.opts.lease);
                        crate::counters::cluster().lease_held.with_label_values(&[self.alias()]).set(0);
                        if !wait.is_zero() {
                            drop(turn);
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                    }
                    if !free {
                        // Another node polls it: only rounds in which it
                        // was free count towards taking it anyway.
                        deferred = 0;
                    } else if self.share.turn(&name, nodes, &held, deferred, self.opts.lease) == share::Turn::Defer {
                        tracing::debug!(mailbox = %self.alias(), nodes, held = held.len(), "leaving the mailbox to a node that polls fewer");
                        deferred += 1;
                        take = false;
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(mailbox = %self.alias(), error = %e, "cannot count the nodes and their mailboxes"),
            }
            let got = if take { self.store.acquire_lease(&name, self.opts.lease).await } else { Ok(None) };
            drop(turn);
            match got {
                Ok(Some(f)) => {
                    if f.epoch > 0 {
                        crate::counters::cluster().lease_held.with_label_values(&[self.alias()]).set(1);
                    }
                    if said || f.epoch > 0 {
                        tracing::info!(mailbox = %self.alias(), epoch = f.epoch, "this node now polls the mailbox");
                    }
                    return Some(f);
                }
                Ok(None) => {
                    crate::counters::cluster().lease_held.with_label_values(&[self.alias()]).set(0);
                    if !said {
                        tracing::info!(mailbox = %self.alias(), "another node polls this mailbox: standing by");
                        said = true;
                    }
                    self.board.update(self.alias(), |s| {
                        s.state = "standby".into();
                        s.connected = false;
                    });
                }
                Err(e) => {
                    tracing::warn!(mailbox = %self.alias(), error = %e, "cannot take the mailbox's lease");
                    self.board.update(self.alias(), |s| {
                        s.state = "error".into();
                        s.last_error = Some(e.to_string());
                    });
                }
            }
            let mut sd = self.shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(self.opts.lease / 3) => {}
                _ = sd.changed() => {}
            }
        }
    }

    /// Renew `fence` every third of the lease until the returned handle is
    /// aborted; a lost lease is logged (the commits under it are refused).
    /// Cluster: when this node polls more than its share and this mailbox
    /// is one of the excess, `give_up` turns true (the session ends at its
    /// next safe point and `run` releases the lease).
    fn keep_lease(&self, fence: crate::store::cluster::Fence, give_up: watch::Sender<bool>) -> tokio::task::JoinHandle<()> {
        let (store, ttl, alias, share) = (self.store.clone(), self.opts.lease, self.alias().to_string(), self.share.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                match store.renew_lease(&fence, ttl).await {
                    Ok(true) => {}
                    Ok(false) => {
                        crate::counters::cluster().lease_held.with_label_values(&[&alias]).set(0);
                        tracing::warn!(mailbox = %alias, epoch = fence.epoch, "lost the mailbox's lease: another node polls it now");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(mailbox = %alias, error = %e, "cannot renew the mailbox's lease");
                        continue;
                    }
                }
                if *give_up.borrow() {
                    continue;
                }
                if let Ok(Some((nodes, held, _))) = store.lease_share(share::PREFIX, ttl / 2, &fence.name).await {
                    if share.give_up(&fence.name, nodes, &held) {
                        tracing::info!(mailbox = %alias, nodes, polled_here = held.len(), "this node polls more than its share of the mailboxes: giving this one to another node");
                        let _ = give_up.send(true);
                    }
                }
            }
        })
    }

    fn giving_up(&self) -> bool {
        self.give_up.as_ref().is_some_and(|g| *g.borrow())
    }

    /// Run until shutdown: sessions with exponential back-off between
    /// failures.
    pub async fn run(mut self) {
        let mut failures: u32 = 0;
        let mut keeper: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            if self.stopping() {
                break;
            }
            // The lease is kept across failed sessions (a provider down);
            // taken again only once lost.
            if keeper.as_ref().is_none_or(|k: &tokio::task::JoinHandle<()>| k.is_finished()) {
                let Some(fence) = self.take_lease().await else { break };
                self.fence = Some(fence.clone());
                // What the mailbox's previous poller (another node)
                // committed must be in this node's index before the
                // provider is listed against it, or its messages would be
                // fetched again.
                if let Err(e) = self.store.sync_shared().await {
                    tracing::warn!(mailbox = %self.alias(), error = %e, "cannot read the shared journal");
                }
                let (give_up, rx) = watch::channel(false);
                self.give_up = Some(rx);
                keeper = Some(self.keep_lease(fence, give_up));
            }
            self.board.update(self.alias(), |s| s.state = "connecting".into());
            let result = self.session().await;
            if self.stopping() {
                if let Some(k) = keeper.take() {
                    k.abort();
                }
                if let Some(f) = &self.fence {
                    self.store.release_lease(f).await;
                }
                break;
            }
            if self.giving_up() {
                // Another node polls fewer mailboxes: let it take this one.
                if let Some(k) = keeper.take() {
                    k.abort();
                }
                if let Some(f) = self.fence.take() {
                    self.store.release_lease(&f).await;
                }
                self.give_up = None;
                crate::counters::cluster().lease_held.with_label_values(&[self.alias()]).set(0);
                self.board.update(self.alias(), |s| {
                    s.state = "standby".into();
                    s.connected = false;
                });
                failures = 0;
                continue;
            }
            let err = match result {
                Ok(()) => break,
                Err(e) => e,
            };
            failures = failures.saturating_add(1);
            let mut delay = self.opts.min_backoff.saturating_mul(1u32 << (failures - 1).min(16));
            if matches!(err, SyncError::Imap(ClientError::LoginRefused(_))) {
                // A provider may lock an account after repeated bad logins:
                // never retry a refused login quickly.
                delay = delay.max(self.opts.min_backoff.saturating_mul(8));
            }
            let delay = jitter(delay.min(self.opts.max_backoff));
            tracing::warn!(
                mailbox = %self.alias(),
                reason = err.reason(),
                error = %err,
                retry_in = ?delay,
                failures,
                "upstream sync failed"
            );
            let msg = err.to_string();
            let reason = err.reason();
            self.board.update(self.alias(), |s| {
                s.state = "error".into();
                s.last_error = Some(msg);
                s.last_error_reason = Some(reason.to_string());
                s.last_error_at = Some(Utc::now());
                s.consecutive_failures = failures;
                s.connected = false;
                *s.errors_by_reason.entry(reason.to_string()).or_default() += 1;
                s.next_retry = chrono::Duration::from_std(delay).ok().map(|d| Utc::now() + d);
            });
            let mut sd = self.shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = sd.changed() => {}
            }
        }
        if let Some(k) = keeper.take() {
            k.abort();
        }
        self.board.update(self.alias(), |s| {
            s.state = "stopped".into();
            s.connected = false;
        });
    }

    async fn session(&mut self) -> Result<(), SyncError> {
        let ep = &self.cfg.imap;
        let mut c = ImapClient::connect(&ep.host, ep.port, ep.tls, self.tls.clone(), self.opts.timeout).await?;
        if c.caps.is_empty() {
            c.capability().await?;
        }
        let password = self
            .cfg
            .read_password()
            .map_err(|e| SyncError::Other(format!("cannot read the provider password: {e}")))?;
        c.login(&self.cfg.username, &password).await?;
        drop(password);
        c.capability().await?;
        let (idle, uidplus, quota) = (c.has("IDLE"), c.has("UIDPLUS"), c.has("QUOTA"));
        tracing::info!(mailbox = %self.alias(), idle, uidplus, quota, "logged in to the provider");
        self.board.update(self.alias(), |s| {
            s.connected = true;
            s.capabilities = status::Caps { idle, uidplus, quota };
        });
        let mut first_failure_cleared = false;
        // A message that arrived after the pass looked at the IDLE folder
        // and before IDLE started is reported by nothing during IDLE: its
        // SELECT's EXISTS shows it. One extra pass then, not two in a row
        // (so a count that never matches cannot make a busy loop).
        let mut rescanned = false;
        loop {
            self.board.update(self.alias(), |s| s.state = "syncing".into());
            let mut on_provider = 0u64;
            let mut left_in_first = 0u64;
            for (i, pfolder) in self.cfg.folders.clone().iter().enumerate() {
                let left = self.sync_folder(&mut c, pfolder).await?;
                if i == 0 {
                    left_in_first = left;
                }
                on_provider += left;
                if self.stopping() || self.giving_up() {
                    c.logout().await;
                    return Ok(());
                }
            }
            if quota {
                let q = self.read_quota(&mut c).await?;
                if let (Offload::Quota { high_water, low_water }, Some(q)) = (&self.cfg.offload, q) {
                    on_provider -= self.quota_offload(&mut c, &q, *high_water, *low_water).await?;
                    let q = self.read_quota(&mut c).await?;
                    self.board.update(self.alias(), |s| s.quota = q);
                }
            }
            let now = Utc::now();
            self.board.update(self.alias(), |s| {
                s.state = "idle".into();
                s.last_success = Some(now);
                s.on_provider = Some(on_provider);
                if !first_failure_cleared {
                    s.consecutive_failures = 0;
                    s.next_retry = None;
                }
            });
            first_failure_cleared = true;
            // Wait for news.
            let mut sd = self.shutdown.clone();
            if idle {
                let mut wait = if self.cfg.folders.len() == 1 && self.cfg.offload == Offload::AfterArchive {
                    self.opts.max_idle
                } else {
                    self.cfg.poll_interval.min(self.opts.max_idle)
                };
                let data = c.run("SELECT", select(&self.cfg.folders[0])?).await?;
                let exists = data.iter().rev().find_map(|d| if let Data::Exists(n) = d { Some(*n) } else { None }).unwrap_or(0);
                if u64::from(exists) > left_in_first {
                    if !rescanned {
                        rescanned = true;
                        continue;
                    }
                    // Still more than the pass left (mail keeps arriving,
                    // a campaign's receipts): IDLE reports none of those
                    // already there, so come back after the poll interval
                    // rather than the long IDLE.
                    wait = wait.min(self.cfg.poll_interval);
                }
                rescanned = false;
                let mut gu = self.give_up.clone();
                c.idle(wait, async move {
                    tokio::select! {
                        _ = sd.changed() => {}
                        _ = given_up(&mut gu) => {}
                    }
                })
                .await?;
            } else {
                let mut gu = self.give_up.clone();
                tokio::select! {
                    _ = tokio::time::sleep(self.cfg.poll_interval) => {}
                    _ = sd.changed() => {}
                    _ = given_up(&mut gu) => {}
                }
                // Keep the connection alive and notice a dead one early.
                if !self.stopping() && !self.giving_up() {
                    c.run("NOOP", CommandBody::Noop).await?;
                }
            }
            if self.stopping() || self.giving_up() {
                c.logout().await;
                return Ok(());
            }
        }
    }

    /// One pass over one provider folder. Returns how many messages remain
    /// there.
    async fn sync_folder(&mut self, c: &mut ImapClient, pfolder: &str) -> Result<u64, SyncError> {
        let alias = self.cfg.alias.clone();
        let (data, codes) = c.run_codes("SELECT", select(pfolder)?).await?;
        let uidvalidity = codes
            .iter()
            .find_map(|c| match c {
                Code::UidValidity(v) => Some(v.get()),
                _ => None,
            })
            .ok_or_else(|| SyncError::Other(format!("provider folder {pfolder}: SELECT gave no UIDVALIDITY")))?;
        let exists = data.iter().rev().find_map(|d| if let Data::Exists(n) = d { Some(*n) } else { None }).unwrap_or(0);

        // A changed UIDVALIDITY: forget the old provider UIDs. The messages
        // are archived; re-scanning recognises them by hash.
        if let Some(known) = self.store.provider_uidvalidity(&alias, pfolder)? {
            if known != uidvalidity {
                tracing::warn!(mailbox = %alias, folder = pfolder, old = known, new = uidvalidity, "provider UIDVALIDITY changed: re-scanning the folder");
                let old: Vec<_> = self
                    .store
                    .provider_entries(&alias, pfolder, known)?
                    .into_iter()
                    .collect();
                let mut batch = vec![(
                    Audit::system("upstream", "provider-uidvalidity-changed").mailbox(&alias),
                    Change::ProviderReset {
                        mailbox: alias.clone(),
                        folder: pfolder.to_string(),
                        old_uidvalidity: known,
                        new_uidvalidity: uidvalidity,
                    },
                )];
                if !old.is_empty() {
                    batch.push((
                        Audit::system("upstream", "provider-forget").mailbox(&alias),
                        Change::ProviderDeleted {
                            mailbox: alias.clone(),
                            folder: pfolder.to_string(),
                            uidvalidity: known,
                            uids: old.iter().map(|(u, _)| *u).collect(),
                            hashes: old.iter().map(|(_, e)| e.hash.clone()).collect(),
                            gone: true,
                        },
                    ));
                }
                self.store.commit_batch_fenced(self.fence.as_ref(), batch).await?;
            }
        }

        let listed = if exists == 0 { BTreeMap::new() } else { self.list(c).await? };
        let mut archived = self.store.provider_entries(&alias, pfolder, uidvalidity)?;

        // Archived entries the provider no longer has (deleted elsewhere, or
        // by us just before a crash): record that they are gone.
        let gone: Vec<u32> = archived.keys().filter(|u| !listed.contains_key(u)).copied().collect();
        if !gone.is_empty() {
            let hashes = gone.iter().filter_map(|u| archived.get(u).map(|e| e.hash.clone())).collect();
            self.commit(
                    Audit::system("upstream", "provider-gone").mailbox(&alias),
                    Change::ProviderDeleted {
                        mailbox: alias.clone(),
                        folder: pfolder.to_string(),
                        uidvalidity,
                        uids: gone.clone(),
                        hashes,
                        gone: true,
                    },
                )
                .await?;
            for u in &gone {
                archived.remove(u);
            }
        }

        // Pull what is not archived yet, a bounded window at a time.
        let todo: Vec<(u32, Listed)> =
            listed.iter().filter(|(u, _)| !archived.contains_key(u)).map(|(u, l)| (*u, l.clone())).collect();
        if !todo.is_empty() {
            tracing::info!(mailbox = %alias, folder = pfolder, new = todo.len(), "pulling new messages");
        }
        // While one window is being written and committed, the next one is
        // fetched: at most two windows in memory.
        let mut in_flight: Option<ArchiveTask> = None;
        let mut i = 0;
        // Giving the mailbox to another node: the windows fetched so far
        // are archived and offloaded, the rest is left to it.
        while i < todo.len() && !self.stopping() && !self.giving_up() {
            let (j, bytes) = window_end(&todo, i, self.opts.window_messages, self.opts.window_bytes);
            let uids: Vec<u32> = todo[i..j].iter().map(|(u, _)| *u).collect();
            let started = std::time::Instant::now();
            let msgs = self.fetch_window(c, &uids).await?;
            let fetched = started.elapsed();
            if let Some(prev) = in_flight.take() {
                archived.extend(prev.await.map_err(|e| SyncError::Other(format!("archive task: {e}")))??);
            }
            tracing::debug!(
                mailbox = %alias,
                messages = uids.len(),
                listed_bytes = bytes,
                fetch_ms = fetched.as_millis() as u64,
                waited_for_archive_ms = (started.elapsed() - fetched).as_millis() as u64,
                "fetched a window"
            );
            in_flight = Some(tokio::spawn(self.archiver(pfolder, uidvalidity).archive(msgs)));
            i = j;
        }
        if let Some(prev) = in_flight.take() {
            archived.extend(prev.await.map_err(|e| SyncError::Other(format!("archive task: {e}")))??);
        }
        if self.stopping() {
            return Ok(listed.len() as u64);
        }

        // Offload.
        let now = Utc::now();
        let deletable: Vec<u32> = match &self.cfg.offload {
            Offload::AfterArchive => archived.keys().copied().collect(),
            Offload::KeepDays { days } => {
                let cutoff = now - chrono::Duration::days(i64::from(*days));
                archived.iter().filter(|(_, e)| e.internal_date < cutoff).map(|(u, _)| *u).collect()
            }
            Offload::Quota { .. } | Offload::Never => Vec::new(),
        };
        let deleted = self.delete(c, pfolder, uidvalidity, &archived, &deletable).await?;
        Ok(listed.len() as u64 - deleted)
    }

    /// Every message in the selected folder: UID, size, internal date.
    async fn list(&self, c: &mut ImapClient) -> Result<BTreeMap<u32, Listed>, SyncError> {
        let items = vec![MessageDataItemName::Uid, MessageDataItemName::Rfc822Size];
        let body = CommandBody::fetch("1:*", items, true).map_err(|e| SyncError::Other(format!("{e:?}")))?;
        let data = c.run("UID FETCH", body).await?;
        let mut out = BTreeMap::new();
        for d in data {
            if let Data::Fetch { items, .. } = d {
                let (mut uid, mut size) = (None, 0u64);
                for it in items.as_ref() {
                    match it {
                        MessageDataItem::Uid(u) => uid = Some(u.get()),
                        MessageDataItem::Rfc822Size(s) => size = u64::from(*s),
                        _ => {}
                    }
                }
                if let Some(uid) = uid {
                    out.insert(uid, Listed { size });
                }
            }
        }
        Ok(out)
    }

    /// Step 1: fetch `uids` (`BODY.PEEK[]`): (UID, internal date, raw bytes).
    async fn fetch_window(&self, c: &mut ImapClient, uids: &[u32]) -> Result<Vec<(u32, DateTime<Utc>, Vec<u8>)>, SyncError> {
        let items = vec![
            MessageDataItemName::Uid,
            MessageDataItemName::InternalDate,
            MessageDataItemName::BodyExt { section: None, partial: None, peek: true },
        ];
        let body = CommandBody::fetch(sequence_set(uids)?, items, true).map_err(|e| SyncError::Other(format!("{e:?}")))?;
        let data = c.run("UID FETCH", body).await?;
        let mut msgs = Vec::new();
        for d in data {
            if let Data::Fetch { seq, items } = d {
                let (mut uid, mut date, mut raw) = (None, None, None);
                for it in items.into_iter() {
                    match it {
                        MessageDataItem::Uid(u) => uid = Some(u.get()),
                        MessageDataItem::InternalDate(d) => date = Some(d.as_ref().with_timezone(&Utc)),
                        MessageDataItem::BodyExt { section: None, origin: None, data } => {
                            // Taken out before decoding (the usual case),
                            // else as decoded.
                            raw = c.take_body(seq.get()).or_else(|| data.0.map(|s| s.into_inner().into_owned()))
                        }
                        _ => {}
                    }
                }
                if let (Some(uid), Some(raw)) = (uid, raw) {
                    if uids.contains(&uid) {
                        msgs.push((uid, date.unwrap_or_else(Utc::now), raw));
                    }
                }
            }
        }
        Ok(msgs)
    }

    fn archiver(&self, pfolder: &str, uidvalidity: u32) -> Archiver {
        Archiver {
            store: self.store.clone(),
            board: self.board.clone(),
            alias: self.cfg.alias.clone(),
            pfolder: pfolder.to_string(),
            uidvalidity,
            from_sent: self.cfg.sent_folder.as_deref() == Some(pfolder),
            trust: self.trust.clone(),
            rules: self.rules.clone(),
            fence: self.fence.clone(),
        }
    }

    /// Delete archived messages from the provider (step 4 and 5). Returns
    /// how many were removed.
    async fn delete(
        &mut self,
        c: &mut ImapClient,
        pfolder: &str,
        uidvalidity: u32,
        archived: &BTreeMap<u32, ProviderEntry>,
        uids: &[u32],
    ) -> Result<u64, SyncError> {
        let uids: Vec<u32> = uids.iter().copied().filter(|u| archived.contains_key(u)).collect();
        if uids.is_empty() {
            return Ok(0);
        }
        let alias = self.cfg.alias.clone();
        // Everything the delete depends on is in the fsynced journal; flush
        // the index too so it agrees without a replay.
        self.store.flush_index().await?;
        let mut done = 0;
        for chunk in uids.chunks(500) {
            let set = sequence_set(chunk)?;
            let store = CommandBody::store(set.clone(), StoreType::Add, StoreResponse::Silent, vec![Flag::Deleted], true)
                .map_err(|e| SyncError::Other(format!("{e:?}")))?;
            c.run("UID STORE", store).await?;
            if c.has("UIDPLUS") {
                c.run("UID EXPUNGE", CommandBody::ExpungeUid { sequence_set: set }).await?;
            } else {
                // Without UIDPLUS, EXPUNGE removes every \Deleted message in
                // the folder, including ones another client flagged: only go
                // ahead when all of them are archived.
                let search = CommandBody::search(None, Vec1::from(SearchKey::Deleted), true);
                let data = c.run("UID SEARCH", search).await?;
                let flagged: BTreeSet<u32> = data
                    .iter()
                    .filter_map(|d| if let Data::Search(v, ..) = d { Some(v) } else { None })
                    .flatten()
                    .map(|u| u.get())
                    .collect();
                let unarchived: Vec<u32> = flagged.iter().filter(|u| !archived.contains_key(u)).copied().collect();
                if !unarchived.is_empty() {
                    tracing::warn!(mailbox = %alias, folder = pfolder, uids = ?unarchived, "messages flagged \\Deleted by someone else are not archived yet: not expunging this pass");
                    return Ok(done);
                }
                c.run("EXPUNGE", CommandBody::Expunge).await?;
            }
            let hashes = chunk.iter().filter_map(|u| archived.get(u).map(|e| e.hash.clone())).collect();
            self.commit(
                    Audit::system("upstream", "provider-delete").mailbox(&alias).folder(pfolder),
                    Change::ProviderDeleted {
                        mailbox: alias.clone(),
                        folder: pfolder.to_string(),
                        uidvalidity,
                        uids: chunk.to_vec(),
                        hashes,
                        gone: false,
                    },
                )
                .await?;
            done += chunk.len() as u64;
            self.board.update(&alias, |s| s.deleted_this_run += chunk.len() as u64);
        }
        tracing::info!(mailbox = %alias, folder = pfolder, deleted = done, "offloaded from the provider");
        Ok(done)
    }

    async fn read_quota(&mut self, c: &mut ImapClient) -> Result<Option<QuotaStatus>, SyncError> {
        let mailbox = imap_codec::imap_types::mailbox::Mailbox::Inbox;
        let data = match c.run("GETQUOTAROOT", CommandBody::GetQuotaRoot { mailbox }).await {
            Ok(d) => d,
            // Some providers advertise QUOTA but have no root for INBOX.
            Err(ClientError::Refused { text, .. }) => {
                tracing::debug!(mailbox = %self.alias(), %text, "GETQUOTAROOT refused");
                Vec::new()
            }
            Err(e) => return Err(e.into()),
        };
        let mut q = QuotaStatus::default();
        let mut any = false;
        for d in data {
            if let Data::Quota { quotas, .. } = d {
                for g in quotas.as_ref() {
                    match g.resource {
                        Resource::Storage => {
                            q.storage_used_bytes = Some(g.usage * 1024);
                            q.storage_limit_bytes = Some(g.limit * 1024);
                            any = true;
                        }
                        Resource::Message => {
                            q.messages_used = Some(g.usage);
                            q.messages_limit = Some(g.limit);
                            any = true;
                        }
                        _ => {}
                    }
                }
            }
        }
        let q = any.then_some(q);
        self.board.update(self.alias(), |s| s.quota = q.clone());
        Ok(q)
    }

    /// The `quota` policy: when use is above `high`, delete archived
    /// messages oldest first until it is below `low`. Returns how many.
    async fn quota_offload(&mut self, c: &mut ImapClient, q: &QuotaStatus, high: f64, low: f64) -> Result<u64, SyncError> {
        let ratio = q.ratio();
        if ratio <= high {
            return Ok(0);
        }
        let alias = self.cfg.alias.clone();
        // Candidates: archived and still on the provider, every folder.
        let mut cands: Vec<(DateTime<Utc>, String, u32, u32, ProviderEntry)> = Vec::new();
        for pfolder in &self.cfg.folders {
            if let Some(v) = self.store.provider_uidvalidity(&alias, pfolder)? {
                for (uid, e) in self.store.provider_entries(&alias, pfolder, v)? {
                    cands.push((e.internal_date, pfolder.clone(), v, uid, e));
                }
            }
        }
        cands.sort_by(|a, b| a.0.cmp(&b.0).then(a.3.cmp(&b.3)));
        let mut used_bytes = q.storage_used_bytes.unwrap_or(0) as f64;
        let mut used_msgs = q.messages_used.unwrap_or(0) as f64;
        let mut chosen: BTreeMap<(String, u32), Vec<u32>> = BTreeMap::new();
        for (_, pfolder, v, uid, e) in cands {
            let r_bytes = q.storage_limit_bytes.filter(|l| *l > 0).map(|l| used_bytes / l as f64).unwrap_or(0.0);
            let r_msgs = q.messages_limit.filter(|l| *l > 0).map(|l| used_msgs / l as f64).unwrap_or(0.0);
            if r_bytes.max(r_msgs) < low {
                break;
            }
            used_bytes -= e.size as f64;
            used_msgs -= 1.0;
            chosen.entry((pfolder, v)).or_default().push(uid);
        }
        tracing::info!(mailbox = %alias, ratio, high, low, messages = chosen.values().map(Vec::len).sum::<usize>(), "quota above high-water mark: offloading oldest archived messages");
        let mut n = 0;
        for ((pfolder, v), uids) in chosen {
            c.run("SELECT", select(&pfolder)?).await?;
            let archived = self.store.provider_entries(&alias, &pfolder, v)?;
            n += self.delete(c, &pfolder, v, &archived, &uids).await?;
        }
        Ok(n)
    }
}

/// Steps 2 and 3 for one fetched window, runnable beside the next fetch.
struct Archiver {
    store: Store,
    board: StatusBoard,
    alias: String,
    pfolder: String,
    uidvalidity: u32,
    from_sent: bool,
    trust: Option<Arc<crate::pec::signature::TrustStore>>,
    rules: Arc<crate::handling::rules::Rules>,
    fence: Option<crate::store::cluster::Fence>,
}

impl Archiver {
    /// Handling of an arriving message: tracked certified messages (and
    /// anomaly envelopes, where configured: those are then filed in INBOX)
    /// get what the routing rules decide, and the rule's keywords.
    fn route(&self, raw: &[u8], filing: &mut filing::Filing) -> (Option<crate::handling::Routing>, Vec<String>) {
        let kind = &filing.meta.classification.kind;
        let inbox_kind = filing.folder == filing::INBOX || *kind == crate::pec::PecKind::Anomalia;
        if self.from_sent || !inbox_kind || !self.rules.tracks(&self.alias, kind) {
            return (None, Vec::new());
        }
        filing.folder = filing::INBOX.to_string();
        let facts = crate::handling::rules::Facts::of(raw);
        let d = self.rules.route(&self.alias, &facts, Utc::now());
        (Some(d.routing), d.keywords)
    }

    /// Write each blob (fsynced, in parallel), then commit the window as one
    /// journal batch (one fsync). Returns the new provider entries.
    async fn archive(self, msgs: Vec<(u32, DateTime<Utc>, Vec<u8>)>) -> Result<Vec<(u32, ProviderEntry)>, SyncError> {
        let started = std::time::Instant::now();
        // Each blob is written as soon as its message is classified, at
        // most BLOB_WRITERS at once whatever the window's size.
        let mut writing = VecDeque::with_capacity(BLOB_WRITERS);
        let mut written = Vec::with_capacity(msgs.len());
        for (uid, date, raw) in msgs {
            let mut filing = filing::file(&raw, self.from_sent, date, self.trust.as_deref());
            let (handling, flags) = self.route(&raw, &mut filing);
            if writing.len() >= BLOB_WRITERS {
                if let Some(w) = writing.pop_front() {
                    written.push(blob_written(w).await?);
                }
            }
            let store = self.store.clone();
            let blob = tokio::spawn(async move { store.put_blob(raw).await });
            writing.push_back((Arriving { uid, date, filing, handling, flags }, blob));
        }
        while let Some(w) = writing.pop_front() {
            written.push(blob_written(w).await?);
        }
        let blobs_done = started.elapsed();
        let mut batch = Vec::with_capacity(written.len());
        let mut entries = Vec::with_capacity(written.len());
        for (Arriving { uid, date, filing, handling, flags }, blob) in written {
            entries.push((uid, ProviderEntry { hash: blob.hash.clone(), size: blob.size, internal_date: date }));
            batch.push((
                Audit::system("upstream", "archive").mailbox(&self.alias).folder(&filing.folder).message_id(filing.message_id),
                Change::Archive {
                    mailbox: self.alias.clone(),
                    folder: filing.folder,
                    blob,
                    internal_date: date,
                    flags,
                    provider: Some(ProviderRef { folder: self.pfolder.clone(), uidvalidity: self.uidvalidity, uid }),
                    pec: Some(filing.meta.into()),
                    handling,
                },
            ));
        }
        let n = batch.len() as u64;
        let bytes: u64 = entries.iter().map(|(_, e)| e.size).sum();
        self.store.commit_batch_fenced(self.fence.as_ref(), batch).await?;
        tracing::debug!(
            mailbox = %self.alias,
            messages = n,
            bytes,
            blobs_ms = blobs_done.as_millis() as u64,
            commit_ms = (started.elapsed() - blobs_done).as_millis() as u64,
            "archived a window"
        );
        self.board.update(&self.alias, |s| {
            s.archived_this_run += n;
            s.archived_bytes_this_run += bytes;
        });
        Ok(entries)
    }
}

/// A window being written and committed: its new provider entries.
type ArchiveTask = tokio::task::JoinHandle<Result<Vec<(u32, ProviderEntry)>, SyncError>>;

/// Where the FETCH window starting at `todo[start]` ends (exclusive), and
/// its listed bytes: at most `max_messages`, and no more than `max_bytes`
/// unless its first message alone is larger.
fn window_end(todo: &[(u32, Listed)], start: usize, max_messages: usize, max_bytes: u64) -> (usize, u64) {
    let mut end = start;
    let mut bytes = 0u64;
    while end < todo.len()
        && end - start < max_messages.max(1)
        && (end == start || bytes.saturating_add(todo[end].1.size) <= max_bytes)
    {
        bytes = bytes.saturating_add(todo[end].1.size);
        end += 1;
    }
    (end, bytes)
}

/// Blob writes in flight per window. HYPOTHESIS: 64 at once (what windows
/// of 64 messages had) let the file system merge their fsyncs without a
/// thread per message of a large window.
const BLOB_WRITERS: usize = 64;

/// A message on its way into the archive: what its journal record needs
/// besides its blob.
struct Arriving {
    uid: u32,
    date: DateTime<Utc>,
    filing: filing::Filing,
    handling: Option<crate::handling::Routing>,
    flags: Vec<String>,
}

/// Wait for a message's blob write.
async fn blob_written(
    (m, blob): (Arriving, tokio::task::JoinHandle<Result<BlobRef, StoreError>>),
) -> Result<(Arriving, BlobRef), SyncError> {
    let blob = blob.await.map_err(|e| SyncError::Other(format!("blob task: {e}")))??;
    Ok((m, blob))
}

fn select(folder: &str) -> Result<CommandBody<'static>, SyncError> {
    CommandBody::select(folder.to_string()).map_err(|e| SyncError::Other(format!("bad folder name {folder:?}: {e:?}")))
}

/// `1:5,7,9:12` from sorted or unsorted UIDs.
pub fn sequence_set(uids: &[u32]) -> Result<SequenceSet, SyncError> {
    let mut v: Vec<u32> = uids.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}:{end}") });
        i += 1;
    }
    SequenceSet::try_from(parts.join(",").as_str()).map_err(|e| SyncError::Other(format!("UID set: {e:?}")))
}

/// ±20 % so that many mailboxes failing together do not retry together.
fn jitter(d: Duration) -> Duration {
    let f = 0.8 + rand::random::<f64>() * 0.4;
    d.mul_f64(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_bounded_by_count_and_bytes() {
        let listed = |sizes: &[u64]| -> Vec<(u32, Listed)> {
            sizes.iter().enumerate().map(|(i, s)| (i as u32 + 1, Listed { size: *s })).collect()
        };
        const MIB: u64 = 1 << 20;
        // 2 MB messages: 16 to a 32 MiB window.
        let big = listed(&[2 * MIB; 40]);
        assert_eq!(window_end(&big, 0, 256, 32 * MIB), (16, 32 * MIB));
        assert_eq!(window_end(&big, 32, 256, 32 * MIB), (40, 16 * MIB));
        // 2 KB messages: the count binds.
        let small = listed(&[2048; 1000]);
        assert_eq!(window_end(&small, 0, 256, 32 * MIB).0, 256);
        assert_eq!(window_end(&small, 768, 256, 32 * MIB).0, 1000);
        // A message over the budget goes alone; a lying size cannot overflow.
        let odd = listed(&[100 * MIB, 1, u64::MAX, 1]);
        assert_eq!(window_end(&odd, 0, 256, 32 * MIB), (1, 100 * MIB));
        assert_eq!(window_end(&odd, 1, 256, 32 * MIB), (2, 1));
        assert_eq!(window_end(&odd, 2, 256, 32 * MIB), (3, u64::MAX));
        // Never an empty window.
        assert_eq!(window_end(&small, 5, 0, 0).0, 6);
    }

    #[test]
    fn sequence_sets_are_compact() {
        let s = sequence_set(&[9, 1, 2, 3, 5, 10, 11, 3]).unwrap();
        let text = format!("{s:?}");
        assert!(text.contains('1'), "{text}");
        let ok = SequenceSet::try_from("1:3,5,9:11").unwrap();
        assert_eq!(s, ok);
    }
}
