//! The archive: the only code that touches disk.
//!
//! ```text
//! data_dir/
//!   blobs/ab/cd/abcd….eml   raw messages, named by SHA-256 (evidence)
//!   journal/000001.log …    the audit chain, hash-chained records (evidence)
//!   index.redb              the index (redb): derived from the journal, rebuildable
//!   derived.redb            data derived from blobs (search fields): a cache
//!   status.json             the daemon's live status (not evidence)
//! ```
//!
//! Writes go through one writer thread (group commit): callers send a batch
//! of [`Change`]s, the writer turns them into journal records (assigning
//! UIDs), appends and fsyncs them, applies them to the index, and only then
//! answers. So an acknowledged change is durable, and the index is never
//! ahead of the journal. Any write failure latches the store into a failed
//! state (like redb's `CheckedBackend`): everything after it is refused until
//! a restart re-opens from disk.

mod anchor_files;
pub mod blobs;
pub mod bucket;
mod changes;
pub mod cluster;
mod codec;
pub mod fields;
mod index;
mod journal;
pub mod migrate;
pub mod record;
mod subscriptions;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use chrono::{DateTime, SubsecRound, Utc};
use tokio::sync::{broadcast, oneshot, watch};

pub use blobs::{BlobReader, BlobRef};
pub use codec::{BlobHash, Brief, PrefixHasher, PrefixSet};
pub use index::{time_modseq, Dump, FolderState, MessageMeta, ProviderEntry};
pub use journal::{decode_line, encode_line, JournalLine, JournalReader, LineError, GENESIS};
pub use record::{Audit, Event, ExpiredItem, FlagOp, HandledItem, ProviderRef, Record};
pub use crate::pec::meta::{PecMeta, StoredPec};

use blobs::Blobs;
use index::Index;
use journal::Journal;

/// The journal's directory in the data directory.
const JOURNAL_DIR: &str = "journal";
const ANCHOR_DIR: &str = "anchors";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("index: {0}")]
    Index(#[source] IndexError),
    #[error("the data directory {0} is in use by another pecgate process (stop it first, e.g. `systemctl stop pecgate`)")]
    Locked(PathBuf),
    #[error("an earlier write to the archive failed ({0}); nothing more is written until pecgate is restarted")]
    Failed(String),
    #[error("the store is closed")]
    Closed,
    /// The shared archive (PostgreSQL) did not take the write: nothing was
    /// acknowledged, the caller may try again (`NO [UNAVAILABLE]`, `451`).
    #[error("the shared archive is unavailable ({0}); nothing was written, try again")]
    Unavailable(String),
    /// A write under a lease this node no longer holds (cluster): another
    /// node took the job over; nothing was written.
    #[error("lease {0} is no longer held by this node: another node took over; nothing was written")]
    Fenced(String),
    #[error("{0}")]
    Invalid(String),
    /// The request contradicts the current state (a handling transition
    /// somebody else got first): an answer for the user, not a failure.
    #[error("{0}")]
    Refused(crate::handling::Refusal),
    /// A folder change that does not fit the folders as they are now (a
    /// category that exists already, or no longer): an answer for the
    /// user, nothing was written.
    #[error("{0}")]
    Conflict(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A failure of the index's database (its type stays inside the store).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct IndexError(index::Error);

impl From<index::Error> for StoreError {
    fn from(e: index::Error) -> Self {
        StoreError::Index(IndexError(e))
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// A change requested by a caller. The writer turns it into an [`Event`].
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Audit only.
    None,
    /// File a stored blob into `folder` of `mailbox` (created on first use).
    Archive {
        mailbox: String,
        folder: String,
        blob: BlobRef,
        internal_date: DateTime<Utc>,
        flags: Vec<String>,
        provider: Option<ProviderRef>,
        pec: Option<StoredPec>,
        /// Track its handling from now, as the rules decided.
        handling: Option<crate::handling::Routing>,
    },
    ProviderDeleted { mailbox: String, folder: String, uidvalidity: u32, uids: Vec<u32>, hashes: Vec<String>, gone: bool },
    ProviderReset { mailbox: String, folder: String, old_uidvalidity: u32, new_uidvalidity: u32 },
    /// Change shared flags/keywords of messages (a client's STORE); `\Seen`
    /// in `flags` is ignored here (see [`Change::SetSeen`]).
    SetFlags { mailbox: String, folder: String, uids: Vec<u32>, op: FlagOp, flags: Vec<String> },
    /// Mark messages seen or unseen for one user.
    SetSeen { user: String, mailbox: String, folder: String, uids: Vec<u32>, seen: bool },
    /// `user` subscribes (or unsubscribes) the folder name `name` (see
    /// [`Event::SubscriptionChanged`]).
    Subscribe { user: String, name: String, subscribed: bool },
    /// Move every user's subscriptions of `from` and the names under it to
    /// `to`: committed in one batch after the [`Change::RenameCategory`]
    /// it follows (not made if that is refused).
    RenameSubscriptions { from: String, to: String },
    /// Hide messages from a folder (a client's EXPUNGE); UIDs not in the
    /// folder are left out of the record.
    Hide { mailbox: String, folder: String, uids: Vec<u32> },
    /// Audit only, but make sure `folder` of `mailbox` exists first (its
    /// `FolderCreated` record precedes this one): a client selecting a
    /// folder nothing was filed in yet sees the UIDVALIDITY it will keep.
    EnsureFolder { mailbox: String, folder: String },
    /// Bring hidden messages back into `folder` (the one they were hidden
    /// from, by their UIDs there); the writer assigns new UIDs. UIDs not
    /// hidden are left out of the record.
    Unhide { mailbox: String, folder: String, uids: Vec<u32> },
    /// Move messages to another folder of the same mailbox; the writer
    /// assigns their UIDs in `to` (created on first use).
    Move { mailbox: String, from: String, to: String, uids: Vec<u32> },
    /// A handling transition on messages of `mailbox` (by blob hash). The
    /// writer checks it against the current state, so of two people taking
    /// the same message at once the first wins and the second gets
    /// [`StoreError::Refused`]; nothing of a refused request is recorded.
    Handle { mailbox: String, hashes: Vec<String>, transition: crate::handling::Transition },
    /// Create a category (a folder people made) called `name` under
    /// `mailbox`, and any parent it lacks (`A/B` creates `A` too).
    CreateCategory { mailbox: String, name: String },
    /// Rename a category and its inferiors (creating missing parents of
    /// the new name).
    RenameCategory { mailbox: String, from: String, to: String },
    /// Delete a category that has no inferiors: its labels go, and what
    /// it alone files is hidden (the archive keeps every message).
    DeleteCategory { mailbox: String, name: String },
    /// Label messages of `from` into the category (store name) `to` as
    /// well (a COPY): they stay where they are filed.
    Copy { mailbox: String, from: String, to: String, uids: Vec<u32> },
    /// APPEND into a category of bytes the mailbox already holds: a new
    /// message there (its own UID) sharing the archived one.
    Label { mailbox: String, folder: String, hash: String, size: u64, internal_date: DateTime<Utc>, flags: Vec<String> },
    /// Remove labels from a category (an EXPUNGE there). Entries where a
    /// message is filed (moved or appended there) are left out: taking
    /// those away is hiding ([`Change::Hide`], the delete right).
    Unlabel { mailbox: String, folder: String, uids: Vec<u32> },
    /// Delete messages from a user's own folders (`~user`: Drafts,
    /// Templates). Refused anywhere else: PEC is never deleted.
    Purge { mailbox: String, folder: String, uids: Vec<u32> },
    /// Remove messages past retention (see [`Event::Expired`]). Places
    /// that no longer list the message named, and messages under a legal
    /// hold, are left out; a mailbox held as a whole is
    /// [`StoreError::Refused`].
    Expire { mailbox: String, reason: String, items: Vec<ExpiredItem> },
    /// `HoldPlaced`, `HoldReleased`, `Anchored` or `Exported`, recorded as
    /// given once checked (a hold needs a reason; a release names a hold
    /// that stands).
    Conservation(Event),
    /// A campaign event (`CampaignCreated`, `NoticesQueued`,
    /// `CampaignControlled`, `NoticeStepped`), recorded as given once the
    /// writer has checked it against the campaign's current state; one
    /// that does not follow (a notice already accepted sent again, a
    /// cancelled campaign resumed) is [`StoreError::Conflict`].
    Campaign(Event),
}

/// A campaign notice held for one provider dialogue
/// ([`Store::claim_notice`]); [`NoticeClaim::release`] once its outcome is
/// committed.
pub struct NoticeClaim(Option<cluster::Claim>);

impl NoticeClaim {
    pub async fn release(self) {
        if let Some(c) = self.0 {
            c.release().await;
        }
    }
}

/// What a committed change became.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub seq: u64,
    pub event: Event,
}

/// Sent to subscribers after changes are applied (for IDLE and metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub mailbox: String,
    pub folder: String,
}

/// What opening the store repaired.
#[derive(Debug, Default, Clone)]
pub struct OpenReport {
    pub removed_tmp_files: usize,
    pub journal_truncated_bytes: u64,
    pub replayed_records: u64,
    pub rebuilt_index: bool,
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub journal_segment_bytes: u64,
    /// Memory the index may use to cache its pages.
    pub index_cache_bytes: usize,
    /// Several nodes sharing PostgreSQL and a bucket; `None`: the data
    /// directory holds everything (one machine).
    pub cluster: Option<cluster::ClusterOptions>,
    /// cluster: the most this node keeps of blob copies beside its index
    /// (`blob-cache/`; 0: none, every read goes to the bucket).
    pub blob_cache_bytes: u64,
}

/// The default of [`StoreOptions::blob_cache_bytes`]: the messages a
/// node's clients read lately, kept without a round trip to the bucket.
pub const BLOB_CACHE_BYTES: u64 = 1 << 30;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            journal_segment_bytes: 64 * 1024 * 1024,
            index_cache_bytes: index::Cache::default().bytes,
            cluster: None,
            blob_cache_bytes: BLOB_CACHE_BYTES,
        }
    }
}

/// Open the index of the data directory `dir`: [`StoreError::Locked`] if
/// another process has it. An index of an older pecgate (sled, in
/// `index/`) is removed, logged; `true` then: the caller rebuilds it from
/// the journal.
fn open_index(dir: &Path, cache_bytes: usize) -> Result<(Index, bool)> {
    let old = dir.join("index");
    let fresh = !dir.join(index::FILE).exists();
    let index = Index::open(dir, index::Cache { bytes: cache_bytes }).map_err(|e| match e {
        index::Error::Locked => StoreError::Locked(dir.into()),
        e => StoreError::from(e),
    })?;
    // After the open, which holds redb's lock: no other pecgate is using
    // the old files either (it would hold the new one too).
    let mut migrated = false;
    if old.is_dir() {
        tracing::warn!(
            path = %old.display(),
            "found an index written by an older pecgate (sled): removing it; the new index is rebuilt from the journal"
        );
        std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
        migrated = true;
    }
    Ok((index, migrated && fresh))
}

enum Request {
    Commit {
        entries: Vec<(Audit, Change)>,
        /// Written only while this lease is held at this epoch (cluster).
        fence: Option<cluster::Fence>,
        reply: oneshot::Sender<Result<Vec<Committed>>>,
    },
    Flush { reply: oneshot::Sender<Result<()>> },
    /// Take in what other nodes committed (cluster).
    CatchUp,
    /// Take in everything committed so far, then answer (cluster).
    Sync { reply: oneshot::Sender<Result<()>> },
}

struct Inner {
    dir: PathBuf,
    blobs: Blobs,
    index: Arc<Index>,
    tx: Arc<Mutex<Option<mpsc::Sender<Request>>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The cluster's PostgreSQL client runtime (kept for the listener).
    _rt: Option<Arc<cluster::Rt>>,
    /// Leases (cluster).
    leases: Option<cluster::Leases>,
    notify: broadcast::Sender<Notice>,
    /// Bumped when campaign records of other nodes are taken in (see
    /// [`Store::campaign_changes`]).
    campaigns_changed: Arc<watch::Sender<u64>>,
    /// Bumped by the writer after each applied batch (see
    /// [`Store::generation`]).
    generation: Arc<AtomicU64>,
    changes: Arc<changes::ChangeLog>,
    failed: Arc<Mutex<Option<String>>>,
    closed: AtomicBool,
    /// The journal's last durable record: (seq, hash).
    head: Arc<Mutex<(u64, String)>>,
    /// How long durable writes take (`journal`: a group commit, append +
    /// fsync + index apply; `blob`: write + fsync + rename + directory
    /// fsync). Plain data: exported by the metrics module.
    write_latency: prometheus::HistogramVec,
    /// When the last blob was written (see [`Store::last_blob_written`]).
    last_blob: Mutex<Option<std::time::Instant>>,
}

/// A handle on the open archive; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Open (creating) the archive in `dir`, recovering from a crash: remove
    /// temporary blob files, cut a torn journal tail, replay journal records
    /// the index has not applied (or rebuild the index if it is ahead of the
    /// journal, which only a lost power cut can cause).
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<(Store, OpenReport)> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut report = OpenReport::default();
        // redb takes an exclusive lock on its file: opening it first makes
        // sure no other process writes the journal.
        let (index, migrated) = open_index(dir, opts.index_cache_bytes)?;
        let blob_dir = dir.join("blobs");
        let blobs = match &opts.cluster {
            None => {
                let (files, removed) = blobs::FileBlobs::open(&blob_dir).map_err(io_err(&blob_dir))?;
                report.removed_tmp_files = removed;
                Blobs::Files(files)
            }
            Some(c) => Blobs::Bucket(Arc::new(
                bucket::Bucket::open(&c.bucket)
                    .and_then(|b| b.with_cache(&dir.join("blob-cache"), opts.blob_cache_bytes))
                    .map_err(|e| StoreError::Invalid(format!("bucket {} at {}: {e}", c.bucket.bucket, c.bucket.endpoint)))?,
            )),
        };
        let jdir = dir.join(JOURNAL_DIR);
        let (mut journal, rec) = Journal::open(&jdir, opts.journal_segment_bytes).map_err(io_err(&jdir))?;
        report.journal_truncated_bytes = rec.truncated_bytes;

        let applied = index.applied_seq()?;
        if applied > journal.last_seq() {
            tracing::warn!(
                applied,
                journal = journal.last_seq(),
                "index is ahead of the journal (power loss?): rebuilding it from the journal"
            );
            index.clear()?;
            report.rebuilt_index = true;
        } else if migrated {
            report.rebuilt_index = true;
        } else if applied > 0 && index.format()? != index::FORMAT {
            tracing::warn!(
                found = index.format()?,
                current = index::FORMAT,
                "the index was written in an older format: rebuilding it from the journal"
            );
            index.clear()?;
            report.rebuilt_index = true;
        }
        index.set_format()?;
        if report.rebuilt_index {
            tracing::info!("rebuilding the index from the journal");
        }
        report.replayed_records = replay(&JournalReader::at(jdir), &index, &mut |_, _| {})?;
        let mut link = None;
        let rt = match &opts.cluster {
            None => None,
            Some(c) => {
                // Exported from the start (at 0), so a dashboard shows them.
                for system in ["postgres", "bucket"] {
                    crate::counters::cluster().errors.with_label_values(&[system]);
                }
                let rt = cluster::Rt::new("pecgate-postgres").map_err(io_err(dir))?;
                let mut l = cluster::Link::open(rt.clone(), c, GENESIS).map_err(StoreError::Unavailable)?;
                report.replayed_records += catch_up(&mut l, &mut journal, &index)?;
                link = Some(l);
                Some(rt)
            }
        };
        index.flush()?;

        let index = Arc::new(index);
        let (tx, rx) = mpsc::channel();
        let (notify, _) = broadcast::channel(1024);
        let campaigns_changed = Arc::new(watch::Sender::new(0u64));
        let failed = Arc::new(Mutex::new(None));
        let generation = Arc::new(AtomicU64::new(0));
        let changes = Arc::new(changes::ChangeLog::default());
        let write_latency = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(
                "pecgate_store_write_duration_seconds",
                "Durable archive writes: journal group commits and blob writes, each until fsynced.",
            )
            .buckets(prometheus::exponential_buckets(0.0005, 2.0, 14).unwrap_or_default()),
            &["what"],
        )
        .map_err(|e| StoreError::Invalid(format!("latency histogram: {e}")))?;
        let head = Arc::new(Mutex::new((journal.last_seq(), journal.last_hash().to_string())));
        let applied = Arc::new(AtomicU64::new(journal.last_seq()));
        let writer = Writer {
            head: head.clone(),
            write_latency: write_latency.clone(),
            journal,
            index: index.clone(),
            folders: HashMap::new(),
            handling: HashMap::new(),
            vuids: HashMap::new(),
            categories: HashMap::new(),
            gone: HashSet::new(),
            batch_holds: Vec::new(),
            expiring: Vec::new(),
            expired_blobs: HashSet::new(),
            blobs: blobs.clone(),
            notify: notify.clone(),
            campaigns_changed: campaigns_changed.clone(),
            generation: generation.clone(),
            changes: changes.clone(),
            failed: failed.clone(),
            link,
            node: opts.cluster.as_ref().map(|c| c.node.clone()).unwrap_or_default(),
            reported: None,
            applied: applied.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("pecgate-journal".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err(dir))?;
        let tx = Arc::new(Mutex::new(Some(tx)));
        if let (Some(rt), Some(c)) = (&rt, &opts.cluster) {
            // Other nodes' commits: a NOTIFY wakes the writer, which takes
            // them in; once a second anyway. The LISTEN connection goes to
            // `postgres_listen` when set (PgBouncer in transaction mode
            // cannot carry LISTEN).
            let wake = Arc::downgrade(&tx);
            let tls = cluster::tls(c).map_err(StoreError::Unavailable)?;
            cluster::spawn_listener(rt, c.listen_url().to_string(), tls, applied.clone(), move || {
                let Some(tx) = wake.upgrade() else { return false };
                let tx = tx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                tx.as_ref().is_some_and(|t| t.send(Request::CatchUp).is_ok())
            });
        }
        let store = Store {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                blobs,
                index,
                tx,
                writer: Mutex::new(Some(handle)),
                leases: match &opts.cluster {
                    Some(c) => Some(cluster::Leases::new(c).map_err(StoreError::Unavailable)?),
                    None => None,
                },
                _rt: rt,
                notify,
                campaigns_changed,
                generation,
                changes,
                failed,
                closed: AtomicBool::new(false),
                head,
                write_latency,
                last_blob: Mutex::new(None),
            }),
        };
        Ok((store, report))
    }

    /// The journal's last durable record: its seq and hash (the chain
    /// head an anchor time-stamps).
    pub fn chain_head(&self) -> (u64, String) {
        self.inner.head.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The legal holds standing on `mailbox` (every mailbox: `None`).
    pub fn holds(&self, mailbox: Option<&str>) -> Result<Vec<crate::retention::Hold>> {
        Ok(self.inner.index.holds(mailbox)?)
    }

    /// The last record whose chain head was time-stamped (0: none).
    pub fn last_anchor(&self) -> Result<u64> {
        Ok(self.inner.index.last_anchor()?)
    }

    /// The last journal record an export of `mailbox` covered (0: none).
    pub fn last_export(&self, mailbox: &str) -> Result<u64> {
        Ok(self.inner.index.last_export(mailbox)?)
    }

    /// Every place in `mailbox` (folders and Trash) listing a message that
    /// entered the archive before `cutoff`, with its entry.
    pub fn archived_before(
        &self,
        mailbox: &str,
        cutoff: DateTime<Utc>,
        each: impl FnMut(ExpiredItem, &MessageMeta),
    ) -> Result<()> {
        Ok(self.inner.index.archived_before(mailbox, cutoff, each)?)
    }

    /// Keep a time-stamp token beside the journal (`anchors/<seq>.tsr`,
    /// written to a temporary file, fsynced, renamed, directory fsynced);
    /// returns its name for the `Anchored` record.
    pub fn put_anchor_token(&self, seq: u64, der: &[u8]) -> Result<String> {
        // A cluster's other nodes (exports, checks) read it from the
        // bucket, by the SHA-256 the record carries.
        if let Blobs::Bucket(b) = &self.inner.blobs {
            b.put(der).map_err(|e| StoreError::Unavailable(format!("the time-stamp token into the bucket: {e}")))?;
        }
        let dir = self.inner.dir.join(ANCHOR_DIR);
        anchor_files::put(&dir, seq, der).map_err(io_err(&dir))
    }

    /// Why the store refuses writes, if it does.
    pub fn failure(&self) -> Option<String> {
        self.inner.failed.lock().ok().and_then(|f| f.clone())
    }

    /// Store raw bytes durably (fsynced, renamed, directory fsynced).
    pub async fn put_blob(&self, bytes: Vec<u8>) -> Result<BlobRef> {
        if let Some(f) = self.failure() {
            return Err(StoreError::Failed(f));
        }
        let inner = self.inner.clone();
        let root = self.inner.dir.join("blobs");
        let timer = self.inner.write_latency.with_label_values(&["blob"]);
        let r = tokio::task::spawn_blocking(move || {
            let t = std::time::Instant::now();
            let r = inner.blobs.put(&bytes);
            timer.observe(t.elapsed().as_secs_f64());
            if let Ok(mut last) = inner.last_blob.lock() {
                *last = Some(std::time::Instant::now());
            }
            if let Some(b) = r.as_ref().ok().filter(|_| fields::looks_like_message(&bytes)) {
                // SEARCH's header fields, while the bytes are at hand (a
                // header parse, ≈ 20 µs); a failure here only leaves them
                // to be derived at the first search.
                inner.cache_derived(fields::FIELDS_KIND, &b.hash, &fields::SearchFields::of(&bytes));
            }
            r
        })
            .await
            .map_err(|e| StoreError::Invalid(format!("blob writer task: {e}")))?;
        r.map_err(|e| {
            if matches!(self.inner.blobs, Blobs::Bucket(_)) {
                // A bucket that does not answer now may answer later:
                // nothing names the blob yet, the caller tries again.
                tracing::warn!(error = %e, "the bucket did not take a blob");
                return StoreError::Unavailable(format!("writing a blob to the bucket: {e}"));
            }
            self.latch(format!("writing a blob: {e}"));
            StoreError::Io { path: root, source: e }
        })
    }

    /// When this process last wrote a blob: messages arriving (the
    /// provider's pull, APPEND, a campaign's notices). Work that can wait
    /// waits for a pause in them (the full-text indexer).
    pub fn last_blob_written(&self) -> Option<std::time::Instant> {
        self.inner.last_blob.lock().ok().and_then(|l| *l)
    }

    fn latch(&self, why: String) {
        if let Ok(mut f) = self.inner.failed.lock() {
            if f.is_none() {
                tracing::error!(error = %why, "archive write failed: refusing further writes until restart");
                *f = Some(why);
            }
        }
    }

    /// A stored blob's size in bytes.
    pub fn blob_size(&self, hash: &str) -> Result<u64> {
        self.inner.blobs.size(hash).map_err(io_err(&self.inner.blobs.path(hash)))
    }

    pub fn get_blob(&self, hash: &str) -> Result<Vec<u8>> {
        self.inner.blobs.get(hash).map_err(io_err(&self.inner.blobs.path(hash)))
    }

    /// The header fields SEARCH matches, of blob `hash`: from the index's
    /// cache, or derived from the blob (and cached) when missing, as after
    /// a `store rebuild-index`.
    pub fn search_fields(&self, hash: &str) -> Result<fields::SearchFields> {
        self.derived(fields::FIELDS_KIND, hash, fields::SearchFields::of)
    }

    /// A reader of many messages' search fields (one read transaction on
    /// the cache for all of them: SEARCH and SORT over a large folder).
    pub fn fields_reader(&self) -> Result<FieldsReader> {
        Ok(FieldsReader { store: self.clone(), cache: self.inner.index.derived_reader()? })
    }

    /// Data derived from blob `hash`, cached in the index under `kind`:
    /// read from the cache, or computed by `derive` from the blob and
    /// cached. Blobs never change, so a cached value is never stale; change
    /// `kind` when `derive` changes. A cache that cannot be written is only
    /// slower (logged).
    fn derived<T, F>(&self, kind: &str, hash: &str, derive: F) -> Result<T>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
        F: FnOnce(&[u8]) -> T,
    {
        self.derived_from(self.inner.index.derived(kind, hash)?, kind, hash, derive)
    }

    /// [`Store::derived`] with the cache's value (`cached`) already looked
    /// up by the caller (in a [`FieldsReader`]'s transaction).
    fn derived_from<T, F>(&self, cached: Option<Vec<u8>>, kind: &str, hash: &str, derive: F) -> Result<T>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
        F: FnOnce(&[u8]) -> T,
    {
        if let Some(v) = cached {
            if let Ok(t) = postcard::from_bytes(&v) {
                return Ok(t);
            }
        }
        let t = derive(&self.get_blob(hash)?);
        self.inner.cache_derived(kind, hash, &t);
        Ok(t)
    }

    fn send(&self, req: Request) -> Result<()> {
        let tx = self.inner.tx.lock().map_err(|_| StoreError::Closed)?;
        tx.as_ref().ok_or(StoreError::Closed)?.send(req).map_err(|_| StoreError::Closed)
    }

    /// Record `entries` durably (one fsync for the batch) and apply them to
    /// the index. Returns what each became, in order.
    pub async fn commit_batch(&self, entries: Vec<(Audit, Change)>) -> Result<Vec<Committed>> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Commit { entries, fence: None, reply })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// [`Store::commit_batch`] for the holder of a lease (a provider
    /// mailbox's poller): written only if `fence` still holds, checked in
    /// the same transaction (cluster; one machine holds every lease).
    pub async fn commit_batch_fenced(&self, fence: Option<&cluster::Fence>, entries: Vec<(Audit, Change)>) -> Result<Vec<Committed>> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Commit { entries, fence: fence.cloned(), reply })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Cluster: take in every record committed so far by any node before
    /// returning (a new lease holder reads the state its predecessor left).
    /// One machine: nothing to do.
    pub async fn sync_shared(&self) -> Result<()> {
        if self.inner.leases.is_none() {
            return Ok(());
        }
        let (reply, rx) = oneshot::channel();
        self.send(Request::Sync { reply })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Take lease `name` for `ttl` (a job only one node may run: a
    /// provider mailbox's poller). `None`: another node holds it. One
    /// machine: always granted.
    pub async fn acquire_lease(&self, name: &str, ttl: std::time::Duration) -> Result<Option<cluster::Fence>> {
        match &self.inner.leases {
            None => Ok(Some(cluster::Fence { name: name.to_string(), node: String::new(), epoch: 0 })),
            Some(l) => l.acquire(name, ttl).await.map_err(StoreError::Unavailable),
        }
    }

    /// Extend a held lease; `false`: it was lost (taken over after it
    /// expired).
    pub async fn renew_lease(&self, fence: &cluster::Fence, ttl: std::time::Duration) -> Result<bool> {
        match &self.inner.leases {
            None => Ok(true),
            Some(l) => l.renew(fence, ttl).await.map_err(StoreError::Unavailable),
        }
    }

    /// Cluster: the live nodes, the leases named `prefix…` this node holds
    /// and whether lease `name` is free (see [`cluster::Leases::share`]).
    /// One machine: `None`.
    pub async fn lease_share(
        &self,
        prefix: &str,
        live: std::time::Duration,
        name: &str,
    ) -> Result<Option<(u64, Vec<String>, bool)>> {
        match &self.inner.leases {
            None => Ok(None),
            Some(l) => l.share(prefix, live, name).await.map(Some).map_err(StoreError::Unavailable),
        }
    }

    /// Cluster: count one send through provider mailbox `alias` against
    /// every node's (see [`cluster::Leases::count_send`]). One machine:
    /// `None` (the process's own count is the whole count).
    pub async fn count_send<W>(
        &self,
        alias: &str,
        keep: std::time::Duration,
        check: impl FnOnce(&[std::time::Duration]) -> std::result::Result<(), W>,
    ) -> Result<Option<(std::result::Result<(), W>, Vec<std::time::Duration>)>> {
        match &self.inner.leases {
            None => Ok(None),
            Some(l) => l.count_send(alias, keep, check).await.map(Some).map_err(StoreError::Unavailable),
        }
    }

    /// Claim campaign notice `notice` of `campaign` for one provider
    /// dialogue under `fence` (cluster: see [`cluster::Leases::claim`];
    /// one machine, or no fence: granted at once). `None`: another node's
    /// dialogue holds it.
    pub async fn claim_notice(
        &self,
        fence: Option<&cluster::Fence>,
        campaign: &str,
        notice: u32,
        hold: std::time::Duration,
    ) -> Result<Option<NoticeClaim>> {
        match (&self.inner.leases, fence) {
            (Some(l), Some(f)) => l
                .claim(f, campaign, notice, hold)
                .await
                .map(|c| c.map(|c| NoticeClaim(Some(c))))
                .map_err(StoreError::Unavailable),
            _ => Ok(Some(NoticeClaim(None))),
        }
    }

    /// Give a lease up (a clean stop: another node may take it at once).
    pub async fn release_lease(&self, fence: &cluster::Fence) {
        if let Some(l) = &self.inner.leases {
            l.release(fence).await;
        }
    }

    /// Queue `audit`, a record that changes nothing, without waiting for
    /// its fsync: it takes its place in the chain now and is made durable
    /// by the writer's next group commit, before any record queued after
    /// it is answered. For reads that disclose no message content
    /// (opening a folder), so that they do not wait for the disk (an
    /// fsync is 1–4 ms here); a crash can lose only the records of the
    /// last few milliseconds of such reads. Refused while the store
    /// refuses writes.
    pub fn record_soon(&self, audit: Audit) -> Result<()> {
        if let Some(f) = self.failure() {
            return Err(StoreError::Failed(f));
        }
        // Nobody waits for the answer: the writer logs and remembers a
        // failure, which refuses every later write.
        let (reply, _) = oneshot::channel();
        self.send(Request::Commit { entries: vec![(audit, Change::None)], fence: None, reply })
    }

    pub async fn commit(&self, audit: Audit, change: Change) -> Result<Committed> {
        let mut v = self.commit_batch(vec![(audit, change)]).await?;
        v.pop().ok_or(StoreError::Closed)
    }

    /// Make the index durable itself (its own fsync), beyond the
    /// journal. Called before a provider delete.
    pub async fn flush_index(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Flush { reply })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// The write-latency histogram, for the metrics registry.
    pub fn write_latency(&self) -> &prometheus::HistogramVec {
        &self.inner.write_latency
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.inner.notify.subscribe()
    }

    /// Changes each time campaign records committed by other nodes
    /// (cluster: a campaign created, started, resumed, a notice resolved
    /// through another node's API) are taken in: what wakes this node's
    /// campaign sender, which the API of the node that took the order
    /// cannot reach. This node's own commits do not count.
    pub fn campaign_changes(&self) -> watch::Receiver<u64> {
        self.inner.campaigns_changed.subscribe()
    }

    /// A number that changes after every batch of changes (records other
    /// than audit-only ones) is applied to the index, before its writers
    /// are answered and its notices sent.
    /// Something read from the index while the generation stayed the same
    /// is still current: what lets IMAP sessions share a folder's snapshot
    /// instead of each reading it again.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    // ---- reads (the index) ----

    pub fn folder(&self, mailbox: &str, folder: &str) -> Result<Option<FolderState>> {
        Ok(self.inner.index.folder(mailbox, folder)?)
    }

    pub fn folders(&self, mailbox: &str) -> Result<Vec<(String, FolderState)>> {
        Ok(self.inner.index.folders(mailbox)?)
    }

    pub fn messages(&self, mailbox: &str, folder: &str) -> Result<Vec<(u32, MessageMeta)>> {
        Ok(self.inner.index.messages(mailbox, folder, true)?)
    }

    /// [`Store::messages`] without their PEC metadata (quicker: it is the
    /// larger part of an entry).
    pub fn messages_brief(&self, mailbox: &str, folder: &str) -> Result<Vec<(u32, MessageMeta)>> {
        Ok(self.inner.index.messages(mailbox, folder, false)?)
    }

    /// A folder's messages in UID order, each made by `each` from its
    /// [`Brief`], borrowed from the index while `each` looks at it (a
    /// selected folder's listing, built without a decoded [`MessageMeta`]
    /// per message).
    /// `init` makes a state for each thread reading a part of the folder.
    pub fn scan_folder<S, T: Send>(
        &self,
        mailbox: &str,
        folder: &str,
        init: impl Fn() -> S + Sync,
        each: impl Fn(&mut S, Brief<'_>) -> T + Sync,
    ) -> Result<Vec<(u32, T)>> {
        Ok(self.inner.index.scan_folder(mailbox, folder, init, each)?)
    }

    /// Read each folder's path through the index once, and its last
    /// `tail` entries (after a start: see `Index::warm_folders`); the
    /// number of folders.
    pub fn warm_folders(&self, tail: usize) -> Result<usize> {
        Ok(self.inner.index.warm_folders(tail)?)
    }

    /// A folder as it is now, to read from while the reader is held (see
    /// [`FolderReader`]).
    pub fn folder_reader(&self, mailbox: &str, folder: &str) -> Result<FolderReader> {
        Ok(FolderReader(self.inner.index.folder_reader(mailbox, folder)?))
    }

    /// What changed in a folder since generation `after` (a list read
    /// then is brought up to date with it): the folder's state and, for
    /// each UID whose entry was inserted, changed or removed since, its
    /// entry made by `each` or `None` (gone), read together with the
    /// state while no batch is applied. `None` when the writer's log no
    /// longer reaches back to `after` or more than `most` entries changed:
    /// read the folder whole ([`Store::scan_folder`]).
    pub fn folder_changes<T>(
        &self,
        mailbox: &str,
        folder: &str,
        after: u64,
        most: usize,
        each: impl FnMut(Brief<'_>) -> T,
    ) -> Result<Option<index::FolderChanges<T>>> {
        let log = self.inner.changes.lock();
        let Some(uids) = log.since(after, mailbox, folder).filter(|u| u.len() <= most) else { return Ok(None) };
        let r = self.inner.index.briefs(mailbox, folder, &uids, each)?;
        drop(log);
        Ok(Some(r))
    }

    pub fn message(&self, mailbox: &str, folder: &str, uid: u32) -> Result<Option<MessageMeta>> {
        Ok(self.inner.index.message(mailbox, folder, uid)?)
    }

    pub fn sent_state(&self, mailbox: &str, key: &str) -> Result<Option<crate::pec::reconcile::SentMessage>> {
        Ok(self.inner.index.sent_state(mailbox, key)?)
    }

    pub fn sent_states(&self, mailbox: &str) -> Result<Vec<crate::pec::reconcile::SentMessage>> {
        Ok(self.inner.index.sent_states(mailbox)?)
    }

    /// The handling of the message with blob `hash` in `mailbox`.
    pub fn campaign(&self, id: &str) -> Result<Option<crate::campaign::model::CampaignRow>> {
        Ok(self.inner.index.campaign(id)?)
    }

    pub fn campaigns(&self) -> Result<Vec<crate::campaign::model::CampaignRow>> {
        Ok(self.inner.index.campaigns()?)
    }

    pub fn notice(&self, campaign: &str, n: u32) -> Result<Option<crate::campaign::model::NoticeRow>> {
        Ok(self.inner.index.notice(campaign, n)?)
    }

    /// A campaign's notices in order, one at a time.
    pub fn notices(&self, campaign: &str, each: impl FnMut(crate::campaign::model::NoticeRow)) -> Result<()> {
        Ok(self.inner.index.notices(campaign, each)?)
    }

    pub fn handling(&self, mailbox: &str, hash: &str) -> Result<Option<crate::handling::Handling>> {
        Ok(self.inner.index.handling(mailbox, hash)?)
    }

    /// Every tracked message of `mailbox`: (blob hash, handling).
    /// Does `mailbox` track any message's handling (without reading them)?
    pub fn has_handling(&self, mailbox: &str) -> Result<bool> {
        Ok(self.inner.index.has_handling(mailbox)?)
    }

    pub fn handling_all(&self, mailbox: &str) -> Result<Vec<(String, crate::handling::Handling)>> {
        Ok(self.inner.index.handling_all(mailbox)?)
    }

    /// Tracked messages of `mailbox` in one of `states` (an index scan by
    /// state: opening `To handle` does not read the done ones).
    pub fn handling_in(
        &self,
        mailbox: &str,
        states: &[crate::handling::State],
    ) -> Result<Vec<(String, crate::handling::Handling)>> {
        Ok(self.inner.index.handling_in(mailbox, states)?)
    }

    /// The last UID given out in `mailbox`'s handling views (their UIDNEXT
    /// is one more).
    pub fn last_view_uid(&self, mailbox: &str) -> Result<u32> {
        Ok(self.inner.index.last_vuid(mailbox)?)
    }

    pub fn find_hash(&self, mailbox: &str, hash: &str) -> Result<Option<(String, u32)>> {
        Ok(self.inner.index.find_hash(mailbox, hash)?)
    }

    pub fn provider_entries(
        &self,
        mailbox: &str,
        folder: &str,
        uidvalidity: u32,
    ) -> Result<std::collections::BTreeMap<u32, ProviderEntry>> {
        Ok(self.inner.index.provider_entries(mailbox, folder, uidvalidity)?)
    }

    pub fn provider_entries_all(&self, mailbox: &str, folder: &str) -> Result<Vec<((u32, u32), ProviderEntry)>> {
        Ok(self.inner.index.provider_entries_all(mailbox, folder)?)
    }

    pub fn provider_uidvalidity(&self, mailbox: &str, folder: &str) -> Result<Option<u32>> {
        Ok(self.inner.index.provider_uidvalidity(mailbox, folder)?)
    }

    /// Messages and bytes archived in `mailbox` (all folders).
    pub fn mailbox_totals(&self, mailbox: &str) -> Result<(u64, u64)> {
        Ok(self
            .folders(mailbox)?
            .iter()
            .fold((0, 0), |(n, b), (_, st)| (n + st.exists, b + st.size)))
    }

    /// UIDs in `mailbox`/`folder` that `user` has seen (`\Seen` is per user).
    /// The UIDs `user` has seen in `folder`, ascending.
    pub fn seen_uids(&self, user: &str, mailbox: &str, folder: &str) -> Result<Vec<u32>> {
        Ok(self.inner.index.seen_uids(user, mailbox, folder)?)
    }

    /// [`Store::seen_uids`] if there are at most `most` of them (a bounded
    /// read), else `None`.
    pub fn seen_uids_at_most(&self, user: &str, mailbox: &str, folder: &str, most: usize) -> Result<Option<Vec<u32>>> {
        Ok(self.inner.index.seen_uids_at_most(user, mailbox, folder, most)?)
    }

    /// `user`'s subscription choices, by name: (IMAP folder name,
    /// subscribed). Names nobody chose for are not listed.
    pub fn subscriptions(&self, user: &str) -> Result<Vec<(String, bool)>> {
        Ok(self.inner.index.subscriptions(user)?)
    }

    /// A message a client hid from `mailbox`/`folder` (its blob stays).
    pub fn hidden_message(&self, mailbox: &str, folder: &str, uid: u32) -> Result<Option<MessageMeta>> {
        Ok(self.inner.index.hidden_message(mailbox, folder, uid)?)
    }

    /// Every message hidden from `mailbox`: (folder, UID there, meta with
    /// its Trash UID), in Trash order.
    pub fn hidden_messages(&self, mailbox: &str) -> Result<Vec<(String, u32, MessageMeta)>> {
        Ok(self.inner.index.hidden_messages(mailbox)?)
    }

    /// The last UID the virtual Trash of `mailbox` gave out (0: none).
    /// Every message of `mailbox` once, where it is filed: (All UID,
    /// folder, UID there, metadata), by All UID (the virtual `All`).
    pub fn all_messages(&self, mailbox: &str) -> Result<Vec<(u32, String, u32, MessageMeta)>> {
        Ok(self.inner.index.all_messages(mailbox)?)
    }

    /// The last All UID given out in `mailbox` (0: none).
    pub fn last_all_uid(&self, mailbox: &str) -> Result<u32> {
        Ok(self.inner.index.last_all_uid(mailbox)?)
    }

    pub fn last_trash_uid(&self, mailbox: &str) -> Result<u32> {
        Ok(self.inner.index.last_trash_uid(mailbox)?)
    }

    /// Every index entry, for comparing a rebuilt index with a live one.
    pub fn index_dump(&self) -> Result<index::Dump> {
        Ok(self.inner.index.dump()?)
    }

    pub fn applied_seq(&self) -> Result<u64> {
        Ok(self.inner.index.applied_seq()?)
    }

    /// A reader of this archive's journal (the audit chain), for audit
    /// queries and for following it as it grows (metrics).
    pub fn journal(&self) -> JournalReader {
        JournalReader::at(self.inner.dir.join(JOURNAL_DIR))
    }

    /// The index files' size in bytes (`index.redb`, `derived.redb`):
    /// packed when the store closes, larger between restarts.
    pub fn index_bytes(&self) -> u64 {
        index_files_bytes(&self.inner.dir)
    }

    /// Space on the archive's file system: (available to pecgate, total),
    /// each `None` if it cannot be read.
    pub fn disk_space(&self) -> (Option<u64>, Option<u64>) {
        (fs2::available_space(&self.inner.dir).ok(), fs2::total_space(&self.inner.dir).ok())
    }

    // ---- status file (the daemon's live state, read by `pecgate status`) ----

    /// Atomically replace `status.json`.
    pub fn write_status(&self, value: &serde_json::Value) -> Result<()> {
        write_status_file(&self.inner.dir, value)
    }

    /// Integrity check: every indexed message has its blob (and, with
    /// `deep`, the blob's bytes still hash to its name); no temporary files.
    pub fn check(&self, deep: bool) -> Result<CheckReport> {
        let mut rep = CheckReport::default();
        let index = &self.inner.index;
        let mut referenced = HashSet::new();
        for mailbox in index.mailboxes()? {
            for (folder, _) in index.folders(&mailbox)? {
                for (uid, m) in index.messages(&mailbox, &folder, false)? {
                    rep.messages += 1;
                    referenced.insert(m.hash.clone());
                    let path = self.inner.blobs.path(&m.hash);
                    match std::fs::metadata(&path) {
                        Err(_) => rep.problems.push(format!("{mailbox}/{folder} UID {uid}: blob {} is missing", m.hash)),
                        Ok(md) if md.len() != m.size => rep.problems.push(format!(
                            "{mailbox}/{folder} UID {uid}: blob {} has {} bytes, index says {}",
                            m.hash,
                            md.len(),
                            m.size
                        )),
                        Ok(_) if deep => match std::fs::read(&path) {
                            Ok(b) if blobs::sha256_hex(&b) == m.hash => {}
                            Ok(_) => rep.problems.push(format!(
                                "{mailbox}/{folder} UID {uid}: blob {} content does not match its hash",
                                m.hash
                            )),
                            Err(e) => rep.problems.push(format!("{}: {e}", path.display())),
                        },
                        Ok(_) => {}
                    }
                }
            }
        }
        let all = self.inner.blobs.list().map_err(io_err(&self.inner.dir))?;
        rep.blobs = all.len() as u64;
        rep.unreferenced_blobs = all.iter().filter(|h| !referenced.contains(*h)).count() as u64;
        let tmp = self.inner.dir.join("blobs/tmp");
        rep.tmp_files = std::fs::read_dir(&tmp).map(|d| d.count() as u64).unwrap_or(0);
        Ok(rep)
    }

    /// Stop the writer after it has answered everything sent so far, and
    /// flush the index.
    pub fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        if let Ok(mut tx) = self.inner.tx.lock() {
            tx.take();
        }
        if let Some(h) = self.inner.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = h.join();
        }
        self.inner.index.flush()?;
        Ok(())
    }
}

/// One folder read at one moment: its state and its entries from one
/// read transaction, which later changes do not touch. A selected
/// folder's list is read through it a part at a time (the last messages,
/// counts of UID ranges) and whole in the background. Hold it briefly:
/// while it lives, the index cannot reuse the pages it sees.
pub struct FolderReader(index::FolderReader);

impl FolderReader {
    /// The folder's state when the reader was made (`None`: no such folder).
    pub fn state(&self) -> Option<&FolderState> {
        self.0.state()
    }

    /// How many messages have a UID in `from..=to`.
    pub fn count(&self, from: u32, to: u32) -> Result<usize> {
        Ok(self.0.count(from, to)?)
    }

    /// The lowest UID in `from..=to` a message has.
    pub fn first(&self, from: u32, to: u32) -> Result<Option<u32>> {
        Ok(self.0.first(from, to)?)
    }

    /// The last `n` messages, in UID order, each made by `each`.
    pub fn last<T>(&self, n: usize, each: impl FnMut(Brief<'_>) -> T) -> Result<Vec<(u32, T)>> {
        Ok(self.0.last(n, each)?)
    }

    /// Every message, in UID order (see [`Store::scan_folder`]).
    pub fn scan<S, T: Send>(
        &self,
        init: impl Fn() -> S + Sync,
        each: impl Fn(&mut S, Brief<'_>) -> T + Sync,
    ) -> Result<Vec<(u32, T)>> {
        Ok(self.0.scan(init, each)?)
    }
}

/// See [`Store::fields_reader`].
pub struct FieldsReader {
    store: Store,
    cache: index::DerivedReader,
}

impl FieldsReader {
    /// As [`Store::search_fields`].
    pub fn get(&self, hash: &str) -> Result<fields::SearchFields> {
        let cached = self.cache.get(fields::FIELDS_KIND, hash)?;
        self.store.derived_from(cached, fields::FIELDS_KIND, hash, fields::SearchFields::of)
    }

    /// What `each` makes of the cached fields SEARCH matches of the
    /// blobs `want` picks (by hash), read in one pass through the cache in
    /// its own order, on every core (a large folder's SEARCH reads the
    /// cache sequentially instead of looking a million messages up one by
    /// one). Blobs whose fields are not cached (or not readable) are not
    /// visited: [`FieldsReader::get`] derives them.
    pub fn scan<W, R: Send>(
        &self,
        want: impl Fn(&BlobHash) -> Option<W> + Sync,
        each: impl Fn(W, fields::MatchFields<'_>) -> R + Sync,
    ) -> Result<Vec<R>> {
        let parts = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
        let common = self.cache.common();
        let done = self.cache.scan(fields::FIELDS_KIND, parts, Vec::new, |out: &mut Vec<R>, h, v| {
            if let Some(w) = want(&h) {
                if let Some(f) = fields::MatchFields::decode(v, common) {
                    out.push(each(w, f));
                }
            }
        })?;
        Ok(done.into_iter().flatten().collect())
    }
}

impl Inner {
    /// Cache `value`, derived from blob `hash`, under `kind` (see
    /// [`Store::derived`]). A cache that cannot be written is only slower:
    /// logged, not an error.
    fn cache_derived<T: serde::Serialize>(&self, kind: &str, hash: &str, value: &T) {
        match postcard::to_allocvec(value) {
            Ok(v) => {
                if let Err(e) = self.index.put_derived(kind, hash, &v) {
                    tracing::warn!(error = %e, kind, "caching derived data");
                }
            }
            Err(e) => tracing::warn!(error = %e, kind, "serialising derived data"),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Some(h) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = h.join();
        }
        let _ = self.index.flush();
        // The writer is gone, and with it the last other holder. Past
        // PACK_AT_CLOSE_MAX the packing could outlast a service manager's
        // stop timeout: `pecgate store compact` does it then.
        let bytes = index_files_bytes(&self.dir);
        if bytes > PACK_AT_CLOSE_MAX {
            tracing::info!(
                bytes,
                "index files not packed at close (too large to pack within a stop): `pecgate store compact` packs them while the daemon is stopped"
            );
        } else if let Some(index) = Arc::get_mut(&mut self.index) {
            let t0 = std::time::Instant::now();
            match index.compact() {
                Ok(()) if t0.elapsed().as_secs() >= 1 => {
                    tracing::info!(seconds = t0.elapsed().as_secs_f64(), "index files packed at close")
                }
                Ok(()) => {}
                Err(e) => tracing::warn!(error = %e, "packing the index files at close (they stay as they were)"),
            }
        }
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CheckReport {
    pub messages: u64,
    pub blobs: u64,
    pub unreferenced_blobs: u64,
    pub tmp_files: u64,
    pub problems: Vec<String>,
}

fn write_status_file(dir: &Path, value: &serde_json::Value) -> Result<()> {
    // A name of its own per write: several tasks update the status at once,
    // and a shared temporary name would let one rename another's file away.
    let tmp = dir.join(format!(".status.json.{}.tmp", rand::random::<u64>()));
    let dest = dir.join("status.json");
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Invalid(e.to_string()))?;
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &dest).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        StoreError::Io { path: dest.clone(), source: e }
    })
}

/// The daemon's last `status.json`, if any.
pub fn read_status_file(dir: &Path) -> Option<serde_json::Value> {
    let b = std::fs::read(dir.join("status.json")).ok()?;
    serde_json::from_slice(&b).ok()
}

impl JournalReader {
    /// Every record in order, failing at the first line that is not a
    /// valid record (naming it).
    pub fn records(&self) -> Result<impl Iterator<Item = Result<Record>> + '_> {
        let io = |e| StoreError::Io { path: self.dir().to_path_buf(), source: e };
        Ok(self.lines().map_err(io)?.map(move |line| {
            let line = line.map_err(io)?;
            line.parsed.map(|(rec, _)| rec).map_err(|e| {
                StoreError::Invalid(format!(
                    "journal {} line {}: {e}; the journal is damaged, run `pecgate audit verify`",
                    line.segment, line.line_no
                ))
            })
        }))
    }
}

/// Records applied per index transaction when replaying the journal.
const REPLAY_BATCH: usize = 4096;

/// Apply journal records the index has not seen, in large transactions.
/// `progress` gets the journal bytes read so far and its size now and then.
/// Returns how many records were applied.
fn replay(journal: &JournalReader, index: &Index, progress: &mut dyn FnMut(u64, u64)) -> Result<u64> {
    enum Stop {
        Io(std::io::Error),
        Store(StoreError),
    }
    impl From<std::io::Error> for Stop {
        fn from(e: std::io::Error) -> Self {
            Stop::Io(e)
        }
    }
    let applied = index.applied_seq()?;
    let mut n = 0;
    let mut batch: Vec<Record> = Vec::with_capacity(REPLAY_BATCH);
    let apply = |batch: &mut Vec<Record>| -> Result<()> {
        let refs: Vec<_> = batch.iter().map(|r| (r.seq, r.time, &r.event)).collect();
        index.apply_batch(&refs, false)?;
        batch.clear();
        Ok(())
    };
    let r = journal.scan_after(applied, progress, |line| -> Result<(), Stop> {
        let (rec, _) = line.parsed.map_err(|e| {
            Stop::Store(StoreError::Invalid(format!(
                "journal {} line {}: {e}; the journal is damaged, run `pecgate audit verify`",
                line.segment, line.line_no
            )))
        })?;
        if rec.seq > applied {
            batch.push(rec);
            n += 1;
            if batch.len() >= REPLAY_BATCH {
                apply(&mut batch).map_err(Stop::Store)?;
            }
        }
        Ok(())
    });
    match r {
        Ok(()) => {}
        Err(Stop::Io(e)) => return Err(StoreError::Io { path: journal.dir().to_path_buf(), source: e }),
        Err(Stop::Store(e)) => return Err(e),
    }
    apply(&mut batch)?;
    Ok(n)
}

/// The index files' size up to which a closing store packs them: a
/// million messages' (≈ 0.5-0.9 GB) took 2.3 s, so this is a stop of
/// about 10 s at most, well within systemd's `TimeoutStopSec=90`.
const PACK_AT_CLOSE_MAX: u64 = 2 << 30;

/// Bytes of the index's files in `dir`.
fn index_files_bytes(dir: &Path) -> u64 {
    [index::FILE, index::DERIVED_FILE].iter().filter_map(|f| std::fs::metadata(dir.join(f)).ok()).map(|m| m.len()).sum()
}

/// Pack the index's files (the daemon must be stopped): their sizes in
/// bytes before and after.
pub fn compact_index(dir: &Path) -> Result<(u64, u64)> {
    let before = index_files_bytes(dir);
    let (mut index, _) = open_index(dir, StoreOptions::default().index_cache_bytes)?;
    index.compact()?;
    drop(index);
    Ok((before, index_files_bytes(dir)))
}

/// What the index's tables hold and the size of its files (the daemon
/// must be stopped): `pecgate store stats`.
pub fn index_stats(dir: &Path) -> Result<(Vec<index::TableStats>, u64)> {
    let (index, _) = open_index(dir, StoreOptions::default().index_cache_bytes)?;
    let tables = index.stats()?;
    drop(index);
    Ok((tables, index_files_bytes(dir)))
}

/// The index's page cache during `store rebuild-index`.
const REBUILD_CACHE_BYTES: usize = 256 << 20;

/// Throw the index away and rebuild it from the journal alone (the
/// daemon must be stopped). `progress` as for [`replay`].
pub fn rebuild_index(dir: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<u64> {
    // A page cache of its own size: a rebuild writes every table at once,
    // the hash-keyed ones all over their trees, and with the daemon's
    // 32 MiB it ran at 37,000-45,000 records/s instead of 50,000+
    // (BENCHMARKS.md "Ten-year scale"). The daemon is stopped meanwhile.
    let (index, _) = open_index(dir, REBUILD_CACHE_BYTES.max(StoreOptions::default().index_cache_bytes))?;
    index.clear()?;
    index.set_format()?;
    let n = replay(&JournalReader::open_read_only(dir), &index, progress)?;
    index.flush()?;
    // Not packed here (a fifth more time at a million): the store's next
    // close packs it.
    Ok(n)
}

/// The single writer: turns changes into records, appends, applies.
struct Writer {
    journal: Journal,
    index: Arc<Index>,
    /// The shared journal (cluster): what the batch is committed to before
    /// the local mirror and index take it.
    link: Option<cluster::Link>,
    /// This node's name and when it last told PostgreSQL how far its index
    /// is (`cluster status`, at most once a second).
    node: String,
    reported: Option<std::time::Instant>,
    /// The last record applied to the index (the cluster's lag metric).
    applied: Arc<AtomicU64>,
    /// Folder states as the writer knows them, ahead of the index during a
    /// batch (UIDs are assigned before the batch is written).
    folders: HashMap<(String, String), FolderState>,
    /// Handling states changed by the batch being prepared (ahead of the
    /// index, like `folders`), so two transitions in one batch see each
    /// other.
    handling: HashMap<(String, String), crate::handling::Handling>,
    /// Last handling-view UID per mailbox, as the writer knows it.
    vuids: HashMap<String, u32>,
    /// Last category number and UIDVALIDITY per mailbox, as the writer
    /// knows them.
    categories: HashMap<String, (u32, u32)>,
    /// Categories deleted by the batch being prepared (the index still
    /// has them until it is applied).
    gone: HashSet<(String, String)>,
    /// Holds placed by the batch being prepared (mailbox, whole, hashes):
    /// an expiry later in the same batch must see them.
    batch_holds: Vec<(String, bool, HashSet<String>)>,
    /// Blobs of the batch's `Expired` records, deleted once it is applied
    /// if no mailbox holds them any more.
    expiring: Vec<String>,
    /// Blobs the expiry deleted since the store opened: an `Archive` of
    /// one of them checks the file is there again (its `put_blob` may have
    /// found the old file just before it went).
    expired_blobs: HashSet<String>,
    blobs: blobs::Blobs,
    head: Arc<Mutex<(u64, String)>>,
    notify: broadcast::Sender<Notice>,
    campaigns_changed: Arc<watch::Sender<u64>>,
    generation: Arc<AtomicU64>,
    /// What each batch changed among message entries (only this thread
    /// moves the generation, under this log's lock).
    changes: Arc<changes::ChangeLog>,
    failed: Arc<Mutex<Option<String>>>,
    write_latency: prometheus::HistogramVec,
}

/// How many requests one group commit takes at most.
const MAX_BATCH: usize = 256;

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut reqs = vec![first];
            while reqs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => reqs.push(r),
                    Err(_) => break,
                }
            }
            self.handle(reqs);
        }
    }

    fn failure(&self) -> Option<String> {
        self.failed.lock().ok().and_then(|f| f.clone())
    }

    fn latch(&self, why: String) {
        tracing::error!(error = %why, "archive write failed: refusing further writes until restart");
        if let Ok(mut f) = self.failed.lock() {
            f.get_or_insert(why);
        }
    }

    fn handle(&mut self, reqs: Vec<Request>) {
        // Between transactions, at most once a second (the listener wakes
        // the writer every second): how far this node's index is.
        if self.link.is_some() && self.reported.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1)) {
            self.reported = Some(std::time::Instant::now());
            let (node, applied) = (self.node.clone(), self.journal.last_seq());
            if let Some(Err(e)) = self.link.as_mut().map(|l| l.report_applied(&node, applied)) {
                tracing::debug!(error = %e, "cannot report this node's progress");
            }
        }
        let mut syncs = Vec::new();
        let mut rest = Vec::with_capacity(reqs.len());
        for r in reqs {
            match r {
                Request::CatchUp => {}
                Request::Sync { reply } => syncs.push(reply),
                r => rest.push(r),
            }
        }
        let reqs = rest;
        let catch_up_only = reqs.is_empty();
        if let Some(f) = self.failure() {
            for s in syncs {
                let _ = s.send(Err(StoreError::Failed(f.clone())));
            }
            refuse(reqs, || StoreError::Failed(f.clone()));
            return;
        }
        // Cluster: lock the shared chain's head and take in what the other
        // nodes committed first, so this batch's UIDs follow from it.
        if self.link.is_some() {
            if let Err(e) = self.catch_up(catch_up_only, !syncs.is_empty()) {
                let err = || match &e {
                    Caught::Failed(e) => StoreError::Failed(e.clone()),
                    Caught::Unavailable(e) => StoreError::Unavailable(e.clone()),
                };
                for s in syncs {
                    let _ = s.send(Err(err()));
                }
                refuse(reqs, err);
                return;
            }
        }
        for s in syncs {
            let _ = s.send(Ok(()));
        }
        if catch_up_only {
            return;
        }
        let mut records: Vec<Record> = Vec::new();
        // For each commit request: the range of its records that answer it.
        let mut answers: Vec<(oneshot::Sender<Result<Vec<Committed>>>, Vec<usize>)> = Vec::new();
        let mut flushes = Vec::new();
        let mut seen_hashes: HashMap<(String, String), (String, u32)> = HashMap::new();
        let now = Utc::now().trunc_subsecs(6);
        let snapshot = self.folders.clone();
        let vuids_snapshot = self.vuids.clone();
        self.handling.clear();
        self.gone.clear();
        self.batch_holds.clear();
        self.expiring.clear();
        for r in reqs {
            match r {
                Request::Flush { reply } => flushes.push(reply),
                Request::CatchUp | Request::Sync { .. } => {}
                Request::Commit { entries, fence, reply } => {
                    if let (Some(f), Some(link)) = (&fence, self.link.as_mut()) {
                        match link.holds(f) {
                            Ok(true) => {}
                            Ok(false) => {
                                tracing::warn!(lease = %f.name, epoch = f.epoch, "write refused: the lease was taken over");
                                let _ = reply.send(Err(StoreError::Fenced(f.name.clone())));
                                continue;
                            }
                            Err(e) => {
                                let _ = reply.send(Err(StoreError::Unavailable(e)));
                                continue;
                            }
                        }
                    }
                    let mut mine = Vec::new();
                    let mut err = None;
                    for (audit, change) in entries {
                        match self.prepare(audit, change, now, &mut records, &mut seen_hashes) {
                            Ok(i) => mine.push(i),
                            Err(e) => {
                                err = Some(e);
                                break;
                            }
                        }
                    }
                    match err {
                        // A refused request changes nothing of its own; records
                        // prepared before the error stay (e.g. a FolderCreated)
                        // since they are valid by themselves.
                        Some(e) => {
                            let _ = reply.send(Err(e));
                        }
                        None => answers.push((reply, mine)),
                    }
                }
            }
        }
        let started = std::time::Instant::now();
        let lines = self.journal.encode(&mut records);
        if let Some(link) = self.link.as_mut() {
            let shared: Vec<(u64, String)> = lines.iter().map(|(n, l, _)| (*n, l.clone())).collect();
            let head = lines.last().map(|(n, _, h)| (*n, h.clone())).unwrap_or_default();
            if let Err(e) = link.commit(&shared, head) {
                // Not acknowledged; whether it committed or not, the next
                // batch's catch-up reads back what the database has. What
                // the writer assumed of this batch is forgotten.
                tracing::warn!(error = %e, records = lines.len(), "commit to the shared journal failed");
                self.forget();
                let err = || StoreError::Unavailable(e.clone());
                for (reply, _) in answers {
                    let _ = reply.send(Err(err()));
                }
                for reply in flushes {
                    let _ = reply.send(Err(err()));
                }
                return;
            }
        }
        if let Err(e) = self.journal.write(&lines, self.link.is_none()) {
            self.folders = snapshot;
            self.vuids = vuids_snapshot;
            let why = format!("journal append: {e}");
            self.latch(why.clone());
            for (reply, _) in answers {
                let _ = reply.send(Err(StoreError::Failed(why.clone())));
            }
            for reply in flushes {
                let _ = reply.send(Err(StoreError::Failed(why.clone())));
            }
            return;
        }
        let notices = self.publish(&records);
        if !records.is_empty() {
            self.write_latency.with_label_values(&["journal"]).observe(started.elapsed().as_secs_f64());
        }
        for (reply, idx) in answers {
            let out = idx.iter().map(|&i| Committed { seq: records[i].seq, event: records[i].event.clone() }).collect();
            let _ = reply.send(Ok(out));
        }
        if !flushes.is_empty() {
            let r = self.index.flush().map_err(StoreError::from);
            for reply in flushes {
                let _ = reply.send(r.as_ref().map(|_| ()).map_err(|e| StoreError::Invalid(e.to_string())));
            }
        }
        for n in notices {
            let _ = self.notify.send(n);
        }
    }

    /// Apply `records` (just written to the journal) to the index, move
    /// the generation, delete blobs whose retention ended; returns the
    /// notices for subscribers (sent once the writers are answered).
    fn publish(&mut self, records: &[Record]) -> Vec<Notice> {
        if !records.is_empty() {
            *self.head.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                (self.journal.last_seq(), self.journal.last_hash().to_string());
            self.applied.store(self.journal.last_seq(), Ordering::Release);
        }
        let mut notices = Vec::new();
        let batch: Vec<_> = records.iter().map(|r| (r.seq, r.time, &r.event)).collect();
        // Held from the index's apply until the generation moves: a reader
        // holding it sees the index and the change log agree.
        let mut log = self.changes.lock();
        let mut touched = Vec::new();
        let mut applied = false;
        if batch.is_empty() {
        } else if let Err(e) = self.index.apply_batch(&batch, true).map(|t| touched = t) {
            // The journal has them; the next open replays them.
            let why = format!("index apply of records {}..={}: {e}", batch[0].0, batch[batch.len() - 1].0);
            self.latch(why);
        } else {
            for rec in records {
                notices.extend(notices_of(rec));
            }
            applied = true;
        }
        // After the index has the batch, before anyone hears of it; audit-only
        // records (logins, reads) change nothing a reader sees.
        if records.iter().any(|r| !matches!(r.event, Event::None)) {
            let g = self.generation.load(Ordering::Acquire) + 1;
            log.push(g, touched);
            self.generation.store(g, Ordering::Release);
        }
        drop(log);
        if applied {
            self.remove_expired_blobs();
        }
        notices.dedup();
        notices
    }

    /// Take in what other nodes committed: under the chain head's lock
    /// when a batch follows (`!only`), else without (a wake-up); `all`:
    /// until nothing is left, not one read's worth.
    fn catch_up(&mut self, only: bool, all: bool) -> std::result::Result<(), Caught> {
        loop {
            let Some(link) = self.link.as_mut() else { return Ok(()) };
            let after = self.journal.last_seq();
            let theirs = if only { link.read_after(after, REPLAY_BATCH as i64) } else { link.begin(after) };
            let lines = theirs.map_err(|e| {
                tracing::warn!(error = %e, "the shared journal is unavailable");
                Caught::Unavailable(e)
            })?;
            let more = only && all && lines.len() == REPLAY_BATCH;
            if !lines.is_empty() {
                if let Err(e) = self.take_in(lines) {
                    if let Some(l) = self.link.as_mut() {
                        l.rollback();
                    }
                    self.latch(e.clone());
                    return Err(Caught::Failed(e));
                }
            }
            if !more {
                return Ok(());
            }
        }
    }

    /// Records other nodes committed (cluster): checked and copied into the
    /// mirror, applied, announced. What the writer knew of folders is
    /// forgotten: it is read again from the index.
    fn take_in(&mut self, lines: Vec<(u64, String)>) -> std::result::Result<(), String> {
        let records = self.journal.mirror(lines).map_err(|e| format!("taking in the shared journal: {e}"))?;
        self.forget();
        for n in self.publish(&records) {
            let _ = self.notify.send(n);
        }
        let campaign = |e: &Event| {
            matches!(
                e,
                Event::CampaignCreated { .. }
                    | Event::NoticesQueued { .. }
                    | Event::CampaignControlled { .. }
                    | Event::NoticeStepped { .. }
            )
        };
        if records.iter().any(|r| campaign(&r.event)) {
            self.campaigns_changed.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    /// Drop what the writer keeps ahead of the index (folder states, view
    /// UIDs, category numbers): read again from the index when needed.
    fn forget(&mut self) {
        self.folders.clear();
        self.vuids.clear();
        self.categories.clear();
    }

    fn folder_state(&mut self, mailbox: &str, folder: &str) -> Result<Option<FolderState>> {
        let k = (mailbox.to_string(), folder.to_string());
        if self.gone.contains(&k) {
            return Ok(None);
        }
        if let Some(st) = self.folders.get(&k) {
            return Ok(Some(st.clone()));
        }
        let st = self.index.folder(mailbox, folder)?;
        if let Some(st) = &st {
            self.folders.insert(k, st.clone());
        }
        Ok(st)
    }

    /// The places of `items` that still list the message named, leaving out
    /// every message a hold covers (in the index or placed earlier in this
    /// batch): a held message is never removed, whatever the caller planned.
    fn prepare_expire(&mut self, mailbox: String, reason: String, items: Vec<ExpiredItem>) -> Result<Event> {
        let holds = self.index.holds(Some(&mailbox))?;
        let mine = self.batch_holds.iter().filter(|h| h.0 == mailbox);
        if holds.iter().any(|h| h.whole) || mine.clone().any(|h| h.1) {
            return Err(StoreError::Conflict(format!("{mailbox} is under a legal hold as a whole: nothing expires")));
        }
        let held: HashSet<&str> =
            holds.iter().flat_map(|h| h.hashes.iter()).chain(mine.flat_map(|h| h.2.iter())).map(String::as_str).collect();
        let listed = self.index.still_listed(&mailbox, &items)?;
        let mut places = HashSet::new();
        let mut kept = Vec::new();
        for (it, listed) in items.into_iter().zip(listed) {
            if listed && !held.contains(it.hash.as_str()) && places.insert((it.folder.clone(), it.uid, it.hidden)) {
                kept.push(it);
            }
        }
        self.expiring.extend(kept.iter().map(|i| i.hash.clone()));
        Ok(Event::Expired { mailbox, reason, items: kept })
    }

    /// Holds, anchors and exports are recorded as given, once checked.
    fn check_conservation(&mut self, event: Event) -> Result<Event> {
        match &event {
            Event::HoldPlaced { mailbox, whole, hashes, reason, .. } => {
                if reason.trim().is_empty() {
                    return Err(StoreError::Invalid("a legal hold needs a reason".into()));
                }
                if !whole && hashes.is_empty() {
                    return Err(StoreError::Invalid("a legal hold needs messages, or the whole mailbox".into()));
                }
                if let Some(h) = hashes.iter().find(|h| !blobs::valid_hash(h)) {
                    return Err(StoreError::Invalid(format!("not a message hash: {h:?}")));
                }
                self.batch_holds.push((mailbox.clone(), *whole, hashes.iter().cloned().collect()));
            }
            Event::HoldReleased { mailbox, hold, reason } => {
                if reason.trim().is_empty() {
                    return Err(StoreError::Invalid("releasing a legal hold needs a reason".into()));
                }
                if !self.index.holds(Some(mailbox))?.iter().any(|h| h.id == *hold) {
                    return Err(StoreError::Conflict(format!("no legal hold {hold} stands on {mailbox}")));
                }
            }
            Event::Exported { mailbox, first_seq, partial: false, .. } => {
                // A `--since-last` export starts right after the last one
                // (a whole export starts at 1): one that started before
                // another was recorded would export its messages twice.
                let last = self.index.last_export(mailbox)?;
                if *first_seq != 1 && *first_seq != last + 1 {
                    return Err(StoreError::Conflict(format!(
                        "{mailbox} was exported up to record {last} while this export (from record {first_seq}) was written: export again"
                    )));
                }
            }
            Event::Anchored { .. } | Event::Exported { .. } => {}
            other => return Err(StoreError::Invalid(format!("not a conservation event: {other:?}"))),
        }
        Ok(event)
    }

    /// After a batch with `Expired` records is applied: delete each blob
    /// no mailbox holds any more (a message can be in several mailboxes;
    /// the blob is shared). A failure leaves an orphan blob, logged.
    fn remove_expired_blobs(&mut self) {
        if self.expiring.is_empty() {
            return;
        }
        let mailboxes = match self.index.mailboxes() {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "retention: listing mailboxes; expired blobs left on disk");
                return;
            }
        };
        let mut hashes = std::mem::take(&mut self.expiring);
        hashes.sort();
        hashes.dedup();
        match self.index.held_by_any(&mailboxes, &hashes) {
            Ok(held) => {
                let mut held = held.into_iter();
                hashes.retain(|_| !held.next().unwrap_or(true));
            }
            Err(e) => {
                tracing::error!(error = %e, "retention: checking expired blobs; left on disk");
                return;
            }
        }
        let failed = self.blobs.remove_many(&hashes);
        for (h, e) in &failed {
            tracing::error!(blob = %h, error = %e, "retention: removing an expired blob");
        }
        self.expired_blobs.extend(hashes);
    }

    /// Does a campaign event follow from the campaign's state in the index?
    fn check_campaign(&self, event: &Event) -> Result<()> {
        let conflict = |m: String| Err(StoreError::Conflict(m));
        let campaign = |id: &str| -> Result<crate::campaign::model::CampaignRow> {
            self.index.campaign(id)?.ok_or_else(|| StoreError::Invalid(format!("no campaign {id}")))
        };
        match event {
            Event::CampaignCreated { campaign: spec } => {
                if self.index.campaign(&spec.id)?.is_some() {
                    return conflict(format!("campaign {} exists already", spec.id));
                }
                let hashes = [&spec.recipients, &spec.template].into_iter().chain(spec.attachments.iter().map(|a| &a.1));
                if let Some(h) = hashes.into_iter().find(|h| !blobs::valid_hash(h)) {
                    return Err(StoreError::Invalid(format!("not a blob hash: {h:?}")));
                }
            }
            Event::NoticesQueued { campaign: id, notices } => {
                let c = campaign(id)?;
                if c.status != crate::campaign::model::Status::Ready {
                    return conflict(format!("campaign {id} is {}: notices are queued before it starts", c.status.name()));
                }
                for n in notices {
                    if !blobs::valid_hash(&n.hash) {
                        return Err(StoreError::Invalid(format!("not a blob hash: {:?}", n.hash)));
                    }
                    if self.index.notice(id, n.n)?.is_some() {
                        return conflict(format!("campaign {id}: notice {} is queued already", n.n));
                    }
                }
            }
            Event::CampaignControlled { campaign: id, control } => {
                campaign(id)?.status.after(*control).map_err(|m| StoreError::Conflict(format!("campaign {id}: {m}")))?;
            }
            Event::NoticeStepped { campaign: id, n, step } => {
                let row = self.index.notice(id, *n)?.ok_or_else(|| StoreError::Invalid(format!("campaign {id} has no notice {n}")))?;
                if !row.allows(step) {
                    return conflict(format!("campaign {id}: notice {n} is {}: {step:?} does not follow", row.state.name()));
                }
            }
            other => return Err(StoreError::Invalid(format!("not a campaign event: {other:?}"))),
        }
        Ok(())
    }

    /// Turn one change into records appended to `out`; returns the index of
    /// the record that answers it.
    fn prepare(
        &mut self,
        audit: Audit,
        change: Change,
        now: DateTime<Utc>,
        out: &mut Vec<Record>,
        seen: &mut HashMap<(String, String), (String, u32)>,
    ) -> Result<usize> {
        let mk = |a: &Audit, event: Event, folder: Option<String>, uids: Vec<u32>| Record {
            seq: 0,
            time: now,
            actor: a.actor.clone(),
            source: a.source.clone(),
            identity: a.identity.clone(),
            proto: a.proto.clone(),
            op: a.op.clone(),
            mailbox: a.mailbox.clone().or_else(|| event.mailbox().map(str::to_string)),
            folder: folder.or_else(|| a.folder.clone()),
            uids: if uids.is_empty() { a.uids.clone() } else { uids },
            message_id: a.message_id.clone(),
            outcome: a.outcome.clone(),
            event,
            prev: String::new(),
        };
        let event = match change {
            Change::None => {
                out.push(mk(&audit, Event::None, None, vec![]));
                return Ok(out.len() - 1);
            }
            Change::Archive { mailbox, folder, blob, internal_date, flags, provider, pec, handling } => {
                if !blobs::valid_hash(&blob.hash) {
                    return Err(StoreError::Invalid(format!("not a blob hash: {:?}", blob.hash)));
                }
                if self.expired_blobs.contains(&blob.hash) && self.blobs.size(&blob.hash).is_err() {
                    return Err(StoreError::Invalid(format!(
                        "blob {} was removed by the retention expiry while this message was being stored: store it again",
                        blob.hash
                    )));
                }
                let st = match self.folder_state(&mailbox, &folder)? {
                    Some(st) => st,
                    None => {
                        let uidvalidity = new_uidvalidity(now);
                        let ev = Event::FolderCreated { mailbox: mailbox.clone(), folder: folder.clone(), uidvalidity, category: None };
                        let a = Audit::system("store", "folder-create").mailbox(&mailbox);
                        out.push(mk(&a, ev, Some(folder.clone()), vec![]));
                        let st = FolderState { uidvalidity, uidnext: 1, highest_modseq: 1, exists: 0, size: 0, category: None };
                        self.folders.insert((mailbox.clone(), folder.clone()), st.clone());
                        st
                    }
                };
                let hk = (mailbox.clone(), blob.hash.clone());
                let existing = match seen.get(&hk) {
                    Some(loc) => Some(loc.clone()),
                    None => self.index.find_hash(&mailbox, &blob.hash)?,
                };
                match existing {
                    Some((efolder, euid)) => Event::Archived {
                        mailbox,
                        folder: efolder,
                        uid: euid,
                        hash: blob.hash,
                        size: blob.size,
                        internal_date,
                        flags,
                        provider,
                        duplicate: true,
                        pec: None,
                        handling: None,
                        view_uid: None,
                    },
                    None => {
                        let uid = st.uidnext;
                        let mut st = st;
                        st.uidnext += 1;
                        st.highest_modseq += 1;
                        st.exists += 1;
                        st.size += blob.size;
                        self.folders.insert((mailbox.clone(), folder.clone()), st);
                        seen.insert(hk, (folder.clone(), uid));
                        let view_uid = match &handling {
                            Some(r) => {
                                let mut h = crate::handling::Handling::open(r, "system", now);
                                h.vuid = self.next_vuid(&mailbox)?;
                                self.handling.insert((mailbox.clone(), blob.hash.clone()), h.clone());
                                Some(h.vuid)
                            }
                            None => None,
                        };
                        Event::Archived {
                            mailbox,
                            folder,
                            uid,
                            hash: blob.hash,
                            size: blob.size,
                            internal_date,
                            flags,
                            provider,
                            duplicate: false,
                            pec,
                            handling,
                            view_uid,
                        }
                    }
                }
            }
            Change::ProviderDeleted { mailbox, folder, uidvalidity, uids, hashes, gone } => {
                Event::ProviderDeleted { mailbox, folder, uidvalidity, uids, hashes, gone }
            }
            Change::ProviderReset { mailbox, folder, old_uidvalidity, new_uidvalidity } => {
                Event::ProviderReset { mailbox, folder, old_uidvalidity, new_uidvalidity }
            }
            Change::SetFlags { mailbox, folder, uids, op, flags } => {
                Event::FlagsChanged { mailbox, folder, uids, op, flags }
            }
            Change::SetSeen { user, mailbox, folder, uids, seen } => {
                Event::SeenChanged { user, mailbox, folder, uids, seen }
            }
            Change::Subscribe { user, name, subscribed } => Event::SubscriptionChanged { user, name, subscribed },
            Change::RenameSubscriptions { from, to } => Event::SubscriptionsRenamed { from, to },
            Change::Hide { mailbox, folder, uids } => {
                let mut kept = Vec::new();
                let mut hashes = Vec::new();
                for uid in uids {
                    if let Some(m) = self.index.message(&mailbox, &folder, uid)? {
                        kept.push(uid);
                        hashes.push(m.hash);
                    }
                }
                Event::Hidden { mailbox, folder, uids: kept, hashes }
            }
            Change::Campaign(event) => {
                self.check_campaign(&event)?;
                event
            }
            Change::Expire { mailbox, reason, items } => self.prepare_expire(mailbox, reason, items)?,
            Change::Conservation(event) => self.check_conservation(event)?,
            Change::EnsureFolder { mailbox, folder } => {
                self.ensure_folder(&mailbox, &folder, now, out, &mk)?;
                out.push(mk(&audit, Event::None, None, vec![]));
                return Ok(out.len() - 1);
            }
            Change::Unhide { mailbox, folder, uids } => {
                let Some(mut st) = self.folder_state(&mailbox, &folder)? else {
                    return Err(StoreError::Invalid(format!("no folder {mailbox}/{folder}")));
                };
                let mut moves = Vec::new();
                for uid in uids {
                    if self.index.hidden_message(&mailbox, &folder, uid)?.is_some() && !moves.iter().any(|m: &(u32, u32)| m.0 == uid) {
                        moves.push((uid, st.uidnext));
                        st.uidnext += 1;
                    }
                }
                self.folders.insert((mailbox.clone(), folder.clone()), st);
                Event::Unhidden { mailbox, folder, moves }
            }
            Change::Move { mailbox, from, to, uids } => {
                if self.folder_state(&mailbox, &from)?.is_none() {
                    return Err(StoreError::Invalid(format!("no folder {mailbox}/{from}")));
                }
                let mut st = self.ensure_folder(&mailbox, &to, now, out, &mk)?;
                let mut moves = Vec::new();
                for uid in uids {
                    if self.index.message(&mailbox, &from, uid)?.is_some() {
                        moves.push((uid, st.uidnext));
                        st.uidnext += 1;
                    }
                }
                self.folders.insert((mailbox.clone(), to.clone()), st);
                Event::Moved { mailbox, from, to, moves }
            }
            Change::Handle { mailbox, hashes, transition } => {
                use crate::handling::Handling;
                let mut items = Vec::new();
                let mut next = Vec::new();
                for hash in hashes {
                    let k = (mailbox.clone(), hash.clone());
                    let current = match self.handling.get(&k) {
                        Some(h) => Some(h.clone()),
                        None => self.index.handling(&mailbox, &hash)?,
                    };
                    let changes = Handling::check(current.as_ref(), &transition)
                        .map_err(StoreError::Refused)?;
                    if !changes {
                        continue;
                    }
                    let (folder, uid) = self.index.find_hash(&mailbox, &hash)?.unwrap_or_default();
                    let h = Handling::apply(current.as_ref(), &transition, now);
                    items.push(HandledItem { hash: hash.clone(), folder, uid, from: current.map(|c| c.state), to: h.state, vuid: 0 });
                    next.push((k, h));
                }
                // Checked all before changing any: a refused request leaves
                // nothing behind.
                for (item, (k, mut h)) in items.iter_mut().zip(next) {
                    h.vuid = self.next_vuid(&mailbox)?;
                    item.vuid = h.vuid;
                    self.handling.insert(k, h);
                }
                Event::Handled { mailbox, transition, items }
            }
            Change::CreateCategory { mailbox, name } => {
                check_category_name(&name)?;
                let cats = self.categories_of(&mailbox)?;
                if cats.iter().any(|(_, st)| st.category.as_deref() == Some(name.as_str())) {
                    return Err(StoreError::Conflict(format!("{name} exists already")));
                }
                let last = self.create_categories(&mailbox, &name, &cats, now, out, &mk)?;
                let (folder, uidvalidity) = last.expect("a missing name was created");
                // Audited under the name people gave it.
                let ev = Event::FolderCreated { mailbox, folder, uidvalidity, category: Some(name.clone()) };
                out.push(mk(&audit, ev, Some(name), vec![]));
                return Ok(out.len() - 1);
            }
            Change::RenameCategory { mailbox, from, to } => {
                check_category_name(&to)?;
                let cats = self.categories_of(&mailbox)?;
                if !cats.iter().any(|(_, st)| st.category.as_deref() == Some(from.as_str())) {
                    return Err(StoreError::Conflict(format!("no category {from}")));
                }
                if cats.iter().any(|(_, st)| st.category.as_deref() == Some(to.as_str())) {
                    return Err(StoreError::Conflict(format!("{to} exists already")));
                }
                if to.starts_with(&format!("{from}/")) {
                    return Err(StoreError::Conflict(format!("{from} cannot become its own inferior {to}")));
                }
                let mut renames = Vec::new();
                for (folder, st) in &cats {
                    let Some(n) = st.category.as_deref() else { continue };
                    let rest = if n == from { Some("") } else { n.strip_prefix(&format!("{from}/")).map(|_| &n[from.len()..]) };
                    if let Some(rest) = rest {
                        renames.push((folder.clone(), format!("{to}{rest}")));
                    }
                }
                // Parents the new name needs (`X` for `X/Y`).
                if let Some((parent, _)) = to.rsplit_once('/') {
                    if !cats.iter().any(|(_, st)| st.category.as_deref() == Some(parent)) {
                        let created = self.create_categories(&mailbox, parent, &cats, now, out, &mk)?;
                        if let Some((folder, uidvalidity)) = created {
                            let ev = Event::FolderCreated {
                                mailbox: mailbox.clone(),
                                folder: folder.clone(),
                                uidvalidity,
                                category: Some(parent.to_string()),
                            };
                            let a = Audit::system("store", "folder-create").mailbox(&mailbox);
                            out.push(mk(&a, ev, Some(folder), vec![]));
                        }
                    }
                }
                for (folder, name) in &renames {
                    if let Some(st) = self.folders.get_mut(&(mailbox.clone(), folder.clone())) {
                        st.category = Some(name.clone());
                    }
                }
                Event::FolderRenamed { mailbox, renames }
            }
            Change::DeleteCategory { mailbox, name } => {
                let cats = self.categories_of(&mailbox)?;
                let Some((folder, _)) = cats.iter().find(|(_, st)| st.category.as_deref() == Some(name.as_str())).cloned() else {
                    return Err(StoreError::Conflict(format!("no category {name}")));
                };
                let inner = format!("{name}/");
                if cats.iter().any(|(_, st)| st.category.as_deref().is_some_and(|n| n.starts_with(&inner))) {
                    return Err(StoreError::Conflict(format!("{name} has subfolders: delete them first")));
                }
                let (mut labels, mut filed, mut filed_hashes) = (Vec::new(), Vec::new(), Vec::new());
                for (uid, m) in self.index.messages(&mailbox, &folder, false)? {
                    if self.index.find_hash(&mailbox, &m.hash)? == Some((folder.clone(), uid)) {
                        filed.push(uid);
                        filed_hashes.push(m.hash);
                    } else {
                        labels.push(uid);
                    }
                }
                if !labels.is_empty() {
                    let ev = Event::Unlabeled { mailbox: mailbox.clone(), folder: folder.clone(), uids: labels.clone(), hashes: vec![] };
                    out.push(mk(&audit, ev, Some(folder.clone()), labels));
                }
                if !filed.is_empty() {
                    let ev = Event::Hidden { mailbox: mailbox.clone(), folder: folder.clone(), uids: filed.clone(), hashes: filed_hashes };
                    out.push(mk(&audit, ev, Some(folder.clone()), filed));
                }
                self.folders.remove(&(mailbox.clone(), folder.clone()));
                self.gone.insert((mailbox.clone(), folder.clone()));
                Event::FolderDeleted { mailbox, folder }
            }
            Change::Copy { mailbox, from, to, uids } => {
                let Some(mut st) = self.folder_state(&mailbox, &to)?.filter(|st| st.category.is_some()) else {
                    return Err(StoreError::Conflict(format!("no category {mailbox}/{to}")));
                };
                let mut copies = Vec::new();
                for uid in uids {
                    if self.index.message(&mailbox, &from, uid)?.is_some() {
                        copies.push((uid, st.uidnext));
                        st.uidnext += 1;
                    }
                }
                self.folders.insert((mailbox.clone(), to.clone()), st);
                Event::Copied { mailbox, from, to, copies }
            }
            Change::Label { mailbox, folder, hash, size, internal_date, flags } => {
                let Some(mut st) = self.folder_state(&mailbox, &folder)?.filter(|st| st.category.is_some()) else {
                    return Err(StoreError::Conflict(format!("no category {mailbox}/{folder}")));
                };
                let uid = st.uidnext;
                st.uidnext += 1;
                self.folders.insert((mailbox.clone(), folder.clone()), st);
                Event::Labeled { mailbox, folder, uid, hash, size, internal_date, flags }
            }
            Change::Purge { mailbox, folder, uids } => {
                if !mailbox.starts_with('~') {
                    return Err(StoreError::Invalid(format!("{mailbox} is a PEC mailbox: its messages are never deleted")));
                }
                let (mut kept, mut hashes) = (Vec::new(), Vec::new());
                for uid in uids {
                    if let Some(m) = self.index.message(&mailbox, &folder, uid)? {
                        kept.push(uid);
                        hashes.push(m.hash);
                    }
                }
                Event::Purged { mailbox, folder, uids: kept, hashes }
            }
            Change::Unlabel { mailbox, folder, uids } => {
                let (mut kept, mut hashes) = (Vec::new(), Vec::new());
                for uid in uids {
                    if let Some(m) = self.index.message(&mailbox, &folder, uid)? {
                        if self.index.find_hash(&mailbox, &m.hash)? != Some((folder.clone(), uid)) {
                            kept.push(uid);
                            hashes.push(m.hash);
                        }
                    }
                }
                Event::Unlabeled { mailbox, folder, uids: kept, hashes }
            }
        };
        let (folder, uids) = match &event {
            Event::Archived { folder, uid, .. } => (Some(folder.clone()), vec![*uid]),
            Event::ProviderDeleted { folder, uids, .. }
            | Event::FlagsChanged { folder, uids, .. }
            | Event::SeenChanged { folder, uids, .. }
            | Event::Hidden { folder, uids, .. } => (Some(folder.clone()), uids.clone()),
            Event::Moved { from, moves, .. } => (Some(from.clone()), moves.iter().map(|m| m.0).collect()),
            Event::Copied { from, copies, .. } => (Some(from.clone()), copies.iter().map(|m| m.0).collect()),
            Event::Labeled { folder, uid, .. } => (Some(folder.clone()), vec![*uid]),
            Event::Unlabeled { folder, uids, .. } | Event::Purged { folder, uids, .. } => (Some(folder.clone()), uids.clone()),
            Event::FolderDeleted { folder, .. } => (Some(folder.clone()), vec![]),
            Event::Unhidden { folder, moves, .. } => (Some(folder.clone()), moves.iter().map(|m| m.1).collect()),
            Event::Handled { items, .. } => (
                items.first().map(|i| i.folder.clone()).filter(|f| !f.is_empty()),
                items.iter().map(|i| i.uid).collect(),
            ),
            _ => (None, vec![]),
        };
        out.push(mk(&audit, event, folder, uids));
        Ok(out.len() - 1)
    }
}

impl Writer {
    /// The next handling-view UID of `mailbox`.
    fn next_vuid(&mut self, mailbox: &str) -> Result<u32> {
        let last = match self.vuids.get(mailbox) {
            Some(v) => *v,
            None => self.index.last_vuid(mailbox)?,
        };
        let next = last.checked_add(1).ok_or_else(|| StoreError::Invalid(format!("{mailbox}: handling view UIDs exhausted")))?;
        self.vuids.insert(mailbox.to_string(), next);
        Ok(next)
    }
}

impl Writer {
    /// The categories of `mailbox` as the writer knows them: (store name,
    /// state), the batch's changes included.
    fn categories_of(&mut self, mailbox: &str) -> Result<Vec<(String, FolderState)>> {
        let mut by: std::collections::BTreeMap<String, FolderState> =
            self.index.folders(mailbox)?.into_iter().filter(|(_, st)| st.category.is_some()).collect();
        for ((m, f), st) in &self.folders {
            if m == mailbox && st.category.is_some() {
                by.insert(f.clone(), st.clone());
            }
        }
        for (m, f) in &self.gone {
            if m == mailbox {
                by.remove(f);
            }
        }
        Ok(by.into_iter().collect())
    }

    /// Create the missing parents of `name` and, if missing, `name`
    /// itself, except that the last one created is returned (store name,
    /// UIDVALIDITY) for the caller's own record instead of recorded here.
    #[allow(clippy::too_many_arguments)]
    fn create_categories(
        &mut self,
        mailbox: &str,
        name: &str,
        cats: &[(String, FolderState)],
        now: DateTime<Utc>,
        out: &mut Vec<Record>,
        mk: &MakeRecord<'_>,
    ) -> Result<Option<(String, u32)>> {
        let parts: Vec<&str> = name.split('/').collect();
        let mut last: Option<(String, u32, String)> = None;
        for i in 1..=parts.len() {
            let prefix = parts[..i].join("/");
            if cats.iter().any(|(_, st)| st.category.as_deref() == Some(prefix.as_str())) {
                continue;
            }
            if let Some((folder, uidvalidity, pname)) = last.take() {
                let ev = Event::FolderCreated { mailbox: mailbox.to_string(), folder: folder.clone(), uidvalidity, category: Some(pname) };
                let a = Audit::system("store", "folder-create").mailbox(mailbox);
                out.push(mk(&a, ev, Some(folder), vec![]));
            }
            let (n0, uv0) = match self.categories.get(mailbox) {
                Some(v) => *v,
                None => self.index.last_category(mailbox)?,
            };
            let n = n0.checked_add(1).ok_or_else(|| StoreError::Invalid(format!("{mailbox}: category numbers exhausted")))?;
            let uidvalidity = new_uidvalidity(now).max(uv0.saturating_add(1));
            self.categories.insert(mailbox.to_string(), (n, uidvalidity));
            let folder = format!("#{n}");
            let st = FolderState { uidvalidity, uidnext: 1, highest_modseq: 1, exists: 0, size: 0, category: Some(prefix.clone()) };
            self.folders.insert((mailbox.to_string(), folder.clone()), st);
            last = Some((folder, uidvalidity, prefix));
        }
        Ok(last.map(|(f, uv, _)| (f, uv)))
    }
}

/// A category name the store accepts: `/`-separated parts, none empty,
/// no NUL, at most 8 levels and 255 bytes. (What names clients may use
/// beyond that is the IMAP layer's business.)
fn check_category_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 255 || name.contains('\0') || name.split('/').any(str::is_empty) || name.split('/').count() > 8 {
        return Err(StoreError::Conflict(format!("not a valid folder name: {name:?}")));
    }
    Ok(())
}

/// Builds a record from its audit part and event (the writer's `mk`).
type MakeRecord<'a> = dyn Fn(&Audit, Event, Option<String>, Vec<u32>) -> Record + 'a;

impl Writer {
    /// The state of `mailbox`/`folder`, creating the folder (a
    /// `FolderCreated` record in `out`) if it does not exist yet.
    fn ensure_folder(
        &mut self,
        mailbox: &str,
        folder: &str,
        now: DateTime<Utc>,
        out: &mut Vec<Record>,
        mk: &MakeRecord<'_>,
    ) -> Result<FolderState> {
        if let Some(st) = self.folder_state(mailbox, folder)? {
            return Ok(st);
        }
        let uidvalidity = new_uidvalidity(now);
        let ev = Event::FolderCreated { mailbox: mailbox.to_string(), folder: folder.to_string(), uidvalidity, category: None };
        let a = Audit::system("store", "folder-create").mailbox(mailbox);
        out.push(mk(&a, ev, Some(folder.to_string()), vec![]));
        let st = FolderState { uidvalidity, uidnext: 1, highest_modseq: 1, exists: 0, size: 0, category: None };
        self.folders.insert((mailbox.to_string(), folder.to_string()), st.clone());
        Ok(st)
    }
}

/// Why a catch-up failed: the store latched (a journal that does not
/// continue the chain), or the database could not be read.
enum Caught {
    Failed(String),
    Unavailable(String),
}

/// Answer every request in `reqs` with the error `err` makes.
fn refuse(reqs: Vec<Request>, err: impl Fn() -> StoreError) {
    for r in reqs {
        match r {
            Request::Commit { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            Request::Flush { reply } => {
                let _ = reply.send(Err(err()));
            }
            Request::Sync { reply } => {
                let _ = reply.send(Err(err()));
            }
            Request::CatchUp => {}
        }
    }
}

/// The folders a record changes, for IDLE and the other subscribers.
fn notices_of(rec: &Record) -> Vec<Notice> {
    let mut out = Vec::new();
    if let (Some(m), Some(f)) = (rec.event.mailbox(), rec.folder.as_deref()) {
        out.push(Notice { mailbox: m.to_string(), folder: f.to_string() });
    }
    match &rec.event {
        Event::Moved { mailbox, to, .. } => out.push(Notice { mailbox: mailbox.clone(), folder: to.clone() }),
        Event::Handled { mailbox, items, .. } => {
            for i in items.iter().filter(|i| !i.folder.is_empty()) {
                out.push(Notice { mailbox: mailbox.clone(), folder: i.folder.clone() });
            }
        }
        Event::Expired { mailbox, items, .. } => {
            for i in items.iter().filter(|i| !i.hidden) {
                out.push(Notice { mailbox: mailbox.clone(), folder: i.folder.clone() });
            }
        }
        _ => {}
    }
    out
}

/// Take in every record the shared journal has after the mirror's last
/// (a node starting, or one that was away), checking first that the
/// mirror is a prefix of it. Returns how many were applied.
fn catch_up(link: &mut cluster::Link, journal: &mut Journal, index: &Index) -> Result<u64> {
    let unavailable = StoreError::Unavailable;
    let last = journal.last_seq();
    if last > 0 {
        let theirs = link.read_after(last - 1, 1).map_err(unavailable)?;
        let same = theirs.first().and_then(|(_, l)| decode_line(l).ok()).is_some_and(|(_, h)| h == journal.last_hash());
        if !same {
            return Err(StoreError::Invalid(format!(
                "this node's journal mirror ends at record {last}, which the shared journal in PostgreSQL does not hold as it is: \
                 the index directory belongs to another archive, or the database lost records. Move the index directory \
                 away to rebuild it from PostgreSQL"
            )));
        }
    }
    let mut n = 0;
    loop {
        let lines = link.read_after(journal.last_seq(), REPLAY_BATCH as i64).map_err(StoreError::Unavailable)?;
        if lines.is_empty() {
            return Ok(n);
        }
        let records = journal.mirror(lines).map_err(|e| StoreError::Invalid(format!("taking in the shared journal: {e}")))?;
        let refs: Vec<_> = records.iter().map(|r| (r.seq, r.time, &r.event)).collect();
        index.apply_batch(&refs, false)?;
        n += records.len() as u64;
        if n % (REPLAY_BATCH as u64 * 25) == 0 {
            tracing::info!(records = n, "taking in the shared journal");
        }
    }
}

/// UIDVALIDITY for a new folder: the creation time in seconds, as most
/// servers do; a rebuild reads it back from the journal, so it never changes.
fn new_uidvalidity(now: DateTime<Utc>) -> u32 {
    u32::try_from(now.timestamp()).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
mod client_change_tests;
